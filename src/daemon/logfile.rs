//! The daemon's log file: a size-capped writer that rotates `F` to `F.1` … `F.K` (so a crash
//! loop cannot fill the disk), the record of which file this process logs to (for
//! `DaemonStatus.log_file`), and the reading side of `rmcp-mux logs` (tail, follow, filter by
//! server name).
//!
//! It formats nothing (tracing-subscriber does) and knows nothing of configs or daemons: the
//! caller passes the path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Rotate when the current file would grow past this (5 MiB: days of normal logging).
pub const DEFAULT_MAX_BYTES: u64 = 5 << 20;
/// Rotated files kept next to the current one (so at most 6 × 5 MiB on disk).
pub const DEFAULT_KEEP: usize = 5;

/// A file that starts over as `path` once it reaches `max_bytes`, keeping the `keep` previous
/// ones as `path.1` (newest) … `path.keep` (oldest). Files are created 0600.
///
/// Rotation happens between lines, never inside one, so every event stays whole in one file.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
    pending: Vec<u8>,
}

impl RotatingFile {
    /// Opens (appending) or creates `path`.
    ///
    /// # Errors
    /// The file cannot be opened or created.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<RotatingFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            max_bytes,
            keep,
            file,
            size,
            pending: Vec::new(),
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(numbered(&self.path, self.keep));
        for n in (1..self.keep).rev() {
            let from = numbered(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl RotatingFile {
    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + chunk.len() as u64 > self.max_bytes {
            // A failed rotation keeps logging into the current file rather than losing lines.
            let _ = self.rotate();
        }
        self.file.write_all(chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }
}

impl Write for RotatingFile {
    /// Whole lines go to the file at once (so rotation never splits one); the rest of a line
    /// waits for its newline or a flush.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(last) = self.pending.iter().rposition(|&b| b == b'\n') {
            let lines: Vec<u8> = self.pending.drain(..=last).collect();
            self.write_chunk(&lines)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.write_chunk(&rest)?;
        }
        self.file.flush()
    }
}

impl Drop for RotatingFile {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// `path.n`: the n-th rotated file.
pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

static ACTIVE: OnceLock<PathBuf> = OnceLock::new();

/// Records that this process logs to `path` (once; later calls are ignored).
pub fn set_active(path: PathBuf) {
    let _ = ACTIVE.set(path);
}

/// The file this process logs to, if it logs to one (stderr otherwise).
pub fn active() -> Option<PathBuf> {
    ACTIVE.get().cloned()
}

/// Whether a log line belongs to server `name`: inside its `server{name=…}` span, or carrying a
/// `server=…` field (the daemon's own lines about a server, and the child's stderr).
pub fn line_is_for(line: &str, name: &str) -> bool {
    ["server{name=", "server="].iter().any(|prefix| {
        let needle = format!("{prefix}{name}");
        line.match_indices(&needle).any(|(at, _)| {
            let before_ok = at == 0 || !is_name_char(line.as_bytes()[at - 1]);
            let after = line.as_bytes().get(at + needle.len()).copied();
            before_ok && after.is_none_or(|c| !is_name_char(c))
        })
    })
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.'
}

/// The last `n` lines of the log (rotated files included, oldest first), only those of
/// `server` when given.
///
/// # Errors
/// No log file at `path` (with where it was looked for).
pub fn tail(path: &Path, server: Option<&str>, n: usize) -> io::Result<Vec<String>> {
    tail_at(path, server, n).map(|(lines, _)| lines)
}

/// Where [`tail`] stopped reading, so [`follow`] shows what comes after it and nothing twice.
#[derive(Debug)]
pub struct Position {
    file: File,
    offset: u64,
}

/// [`tail`], plus the open current file and how far it was read.
///
/// # Errors
/// As [`tail`].
pub fn tail_at(path: &Path, server: Option<&str>, n: usize) -> io::Result<(Vec<String>, Position)> {
    if !path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no log file at {}", path.display()),
        ));
    }
    let mut files: Vec<PathBuf> = (1..=64)
        .map(|k| numbered(path, k))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    // The current file is opened first and read through this handle only up to the length it
    // had then, so what is appended meanwhile is left for `follow`.
    let mut current = File::open(path)?;
    let offset = current.metadata()?.len();
    let mut kept = std::collections::VecDeque::with_capacity(n.min(4096));
    let mut keep = |line: &[u8]| {
        let line = String::from_utf8_lossy(line).into_owned();
        if n > 0 && server.is_none_or(|s| line_is_for(&line, s)) {
            if kept.len() == n {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    };
    for f in files {
        let Ok(file) = File::open(&f) else { continue };
        for line in BufReader::new(file).split(b'\n') {
            keep(&line?);
        }
    }
    for line in BufReader::new((&mut current).take(offset)).split(b'\n') {
        keep(&line?);
    }
    current.seek(SeekFrom::Start(offset))?;
    Ok((
        kept.into(),
        Position {
            file: current,
            offset,
        },
    ))
}

/// Prints lines appended to `path` after `from` (or after it was opened), following rotation,
/// until `out` fails or `until` passes (`None`: forever). Polls: the file is written by
/// another process.
///
/// # Errors
/// The file cannot be opened.
pub fn follow(
    path: &Path,
    from: Option<Position>,
    server: Option<&str>,
    out: &mut dyn Write,
    until: Option<Instant>,
) -> io::Result<()> {
    let mut file = match from {
        Some(p) => {
            let mut f = p.file;
            f.seek(SeekFrom::Start(p.offset))?;
            f
        }
        None => {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::End(0))?;
            f
        }
    };
    let mut ino = file.metadata()?.ino();
    let mut partial = Vec::new();
    loop {
        if !drain(&mut file, &mut partial, server, out)? {
            return Ok(());
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            return Ok(());
        }
        // Rotated: the name now points at a new file. What reached the old one after the
        // last read is read first, then the new one from its start.
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.ino() != ino {
                if let Ok(f) = File::open(path) {
                    if !drain(&mut file, &mut partial, server, out)? {
                        return Ok(());
                    }
                    file = f;
                    ino = meta.ino();
                    partial.clear();
                    continue;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads `file` to its current end and prints its complete lines; `false` when `out` failed.
fn drain(
    file: &mut File,
    partial: &mut Vec<u8>,
    server: Option<&str>,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        partial.extend_from_slice(&buf[..n]);
        while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            if server.is_none_or(|s| line_is_for(&text, s))
                && writeln!(out, "{text}").and_then(|()| out.flush()).is_err()
            {
                return Ok(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_writer_fed_past_the_cap_rotates_and_keeps_at_most_k_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let mut w = RotatingFile::open(&path, 100, 3).unwrap();
        for i in 0..100 {
            writeln!(w, "line {i:03} {}", "x".repeat(20)).unwrap();
        }
        w.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["d.log", "d.log.1", "d.log.2", "d.log.3"]);
        for name in &names {
            let p = dir.path().join(name);
            assert!(
                std::fs::metadata(&p).unwrap().len() <= 100,
                "{name} too big"
            );
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        // Newest in the current file, older ones in .1, .2, .3, with no line split or lost
        // between them.
        let all = tail(&path, None, 1000).unwrap();
        assert_eq!(all.last().unwrap(), &format!("line 099 {}", "x".repeat(20)));
        let nums: Vec<u32> = all.iter().map(|l| l[5..8].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert!(nums.len() < 100, "the oldest lines were dropped");
    }

    #[test]
    fn reopening_appends_and_counts_the_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        std::fs::write(&path, "x".repeat(90)).unwrap();
        let mut w = RotatingFile::open(&path, 100, 1).unwrap();
        w.write_all(format!("{}\n", "y".repeat(19)).as_bytes())
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).unwrap().len(),
            90
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", "y".repeat(19))
        );
        // A partial line waits for its newline, or a flush.
        w.write_all(b"part").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 20);
        w.flush().unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("part"));
    }

    #[test]
    fn lines_are_matched_by_whole_server_name() {
        let span =
            "2026-01-01T00:00:00Z  INFO server{name=mem}: rmcp_mux::mux::actor: child started";
        let field = "2026-01-01T00:00:00Z  INFO child_stderr: hello server=mem pid=4";
        assert!(line_is_for(span, "mem"));
        assert!(line_is_for(field, "mem"));
        assert!(!line_is_for(span, "me"));
        assert!(!line_is_for(span, "memory"));
        assert!(!line_is_for("INFO server{name=memory}: x", "mem"));
        assert!(!line_is_for("INFO rmcp-mux ready servers=2", "mem"));
    }

    #[test]
    fn tail_filters_then_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        std::fs::write(
            &path,
            "a server=x 1\nb server=y 2\nc server=x 3\nd server=x 4\n",
        )
        .unwrap();
        assert_eq!(
            tail(&path, Some("x"), 2).unwrap(),
            ["c server=x 3", "d server=x 4"]
        );
        assert_eq!(tail(&path, None, 1).unwrap(), ["d server=x 4"]);
        assert!(tail(&dir.path().join("none.log"), None, 5).is_err());
    }

    #[test]
    fn follow_sees_lines_written_after_it_started_and_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        std::fs::write(&path, "old server=x\n").unwrap();
        let p = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut w = RotatingFile::open(&p, 30, 2).unwrap();
            w.write_all(b"new server=x one\n").unwrap();
            w.write_all(b"other server=y\n").unwrap();
            w.write_all(b"new server=x two\n").unwrap();
        });
        let mut out = Vec::new();
        follow(
            &path,
            None,
            Some("x"),
            &mut out,
            Some(Instant::now() + Duration::from_secs(3)),
        )
        .unwrap();
        writer.join().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("old"), "{text}");
        assert!(text.contains("new server=x one"), "{text}");
        assert!(!text.contains("server=y"), "{text}");
        assert!(text.contains("new server=x two"), "{text}");
    }
}
