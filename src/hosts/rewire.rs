//! `rewire` and `unwire`: point a host's entries at `rmcp-mux-proxy` for the servers the mux
//! runs, and put them back.
//!
//! Owns the file side: atomic writes (temp file in the same folder, fsync, rename, the file's
//! permissions kept), timestamped backups that are never overwritten, and the 0600 undo record
//! under the state folder that lets `unwire` restore exactly the entries it changed, even after
//! the user edited other parts of the file. The text edits themselves are done by the pure
//! [`super::json`] and [`super::codex`] modules. It must not touch entries the mux does not run.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ServerConfig};

use super::import::{host_key, server_key};
use super::{codex, json, Format, Host, HostError, HostFile, Launch, Paths};

/// The folder of the undo records: `<state dir>/rewire`.
pub fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("rewire")
}

/// `rmcp-mux-proxy` next to the running program (hosts such as Claude Desktop do not get the
/// user's PATH, so the absolute path is what works), else the first one on PATH.
///
/// # Errors
/// [`HostError::NoProxy`] when there is neither.
pub fn proxy_path() -> Result<PathBuf, HostError> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("rmcp-mux"));
    // The path as started first (a package manager's stable bin/ link), then the real one.
    let real = std::fs::canonicalize(&exe).unwrap_or_else(|_| exe.clone());
    for e in [&exe, &real] {
        if let Some(p) = e.parent().map(|d| d.join("rmcp-mux-proxy")) {
            if e.is_absolute() && p.is_file() {
                return Ok(p);
            }
        }
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("rmcp-mux-proxy"))
        .find(|p| p.is_file())
        .ok_or(HostError::NoProxy { exe })
}

/// One entry changed by rewire: enough to put it back and to see whether the user changed it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// The keys leading to the entry, e.g. `["mcpServers", "memory"]`.
    pub entry: Vec<String>,
    /// The server the entry now reaches.
    pub server: String,
    /// Byte offset where the change starts (TOML: where the lines were).
    pub start: usize,
    /// The text before (JSON: the entry's value; TOML: the whole lines that changed).
    pub original: String,
    /// The text rewire wrote in its place.
    pub written: String,
    /// When (UTC, `YYYYMMDDTHHMMSSZ`).
    pub at: String,
}

/// The undo record of one host file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Format version of the record.
    pub version: u32,
    /// The host's name.
    pub host: String,
    /// The host's file.
    pub file: PathBuf,
    /// Every backup taken before a rewire of this file.
    pub backups: Vec<PathBuf>,
    /// The changes, oldest first.
    pub changes: Vec<Change>,
}

/// The record's file for a host file: named by the host and a hash of the file's path.
pub fn record_path(state_dir: &Path, host: Host, file: &Path) -> PathBuf {
    // FNV-1a: stable across runs and builds (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in file.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    records_dir(state_dir).join(format!("{}-{h:016x}.json", host.name()))
}

fn read_record(path: &Path) -> Result<Option<Record>, HostError> {
    let Some(text) = super::read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| HostError::Record {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

fn write_record(path: &Path, record: &Record) -> Result<(), HostError> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let text = serde_json::to_string_pretty(record).map_err(|e| HostError::Record {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    write_atomic(path, text.as_bytes(), Some(0o600))
}

/// Creates a folder (and its parents) 0700 if it does not exist.
///
/// # Errors
/// [`HostError::Write`].
pub fn create_private_dir(dir: &Path) -> Result<(), HostError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| HostError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Writes a file atomically: a temp file in the same folder, fsync, rename over the target,
/// fsync the folder. The target's permissions are kept; `mode` forces them (e.g. 0600). A
/// symlink (dotfile managers use them) is followed, so the link stays a link.
///
/// # Errors
/// [`HostError::Write`]; the target is untouched then.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), HostError> {
    let err = |source| HostError::Write {
        path: path.to_owned(),
        source,
    };
    let real;
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            real = std::fs::canonicalize(path).map_err(err)?;
            real.as_path()
        }
        _ => path,
    };
    let perms = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => 0o644,
    };
    crate::io::atomic_file::replace(path, bytes, mode.unwrap_or(perms)).map_err(err)
}

/// Now, in UTC, as `YYYYMMDDTHHMMSSZ`.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Seconds since the epoch as `YYYYMMDDTHHMMSSZ` (the civil-from-days algorithm).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Copies the file to `FILE.rmcp-mux-backup-STAMP` (with `-2`, `-3`… if that exists: a
/// backup is never overwritten), with the file's permissions.
///
/// # Errors
/// [`HostError::Write`].
pub fn backup(path: &Path, bytes: &[u8], stamp: &str) -> Result<PathBuf, HostError> {
    let perms = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    for n in 1.. {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".rmcp-mux-backup-{stamp}{suffix}"));
        let b = PathBuf::from(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perms)
            .open(&b)
        {
            Ok(mut f) => {
                return f
                    .write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map(|()| b.clone())
                    .map_err(|source| HostError::Write { path: b, source });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(HostError::Write { path: b, source }),
        }
    }
    unreachable!("1.. does not end")
}

/// What rewire or unwire did (or, with `--dry-run`, would do), for the user.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per entry: rewired, already rewired, left alone and why, restored, …
    pub lines: Vec<String>,
    /// Unified diffs, one per file (`--dry-run` only).
    pub diffs: Vec<String>,
    /// How many entries were (or would be) changed.
    pub changed: usize,
    /// The entries changed (or that would be), for a confirmation that lists them.
    pub entries: Vec<Planned>,
}

/// One entry a rewire changes (or would change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// The server's name in the host.
    pub name: String,
    /// The host file it is in.
    pub file: PathBuf,
    /// The mux server it will reach.
    pub server: String,
}

/// Which mux server an entry reaches, and how it was matched.
fn match_server<'a>(
    cfg: &'a Config,
    name: &str,
    s: &super::Stdio,
    home: &Path,
) -> Option<(&'a ServerConfig, bool)> {
    let key = host_key(s, home);
    // A server shared per project runs in each host's project: the folder an entry was found
    // in is not part of it.
    let unrooted = (key.0.clone(), key.1.clone(), key.2.clone(), None);
    let same = |srv: &ServerConfig| {
        let k = server_key(srv);
        k == key || (srv.share == crate::config::Share::Project && k == unrooted)
    };
    if let Some(srv) = cfg.servers.iter().find(|srv| same(srv)) {
        return Some((srv, true));
    }
    cfg.servers
        .iter()
        .find(|srv| srv.name == name)
        .map(|srv| (srv, false))
}

/// The proxy's arguments for one server. `--autostart` with the absolute config path lets a
/// host that starts before the daemon (login items race, a reboot) bring the daemon up itself
/// instead of failing; hosts start commands without a shell, so nothing relative or `~` here.
pub fn proxy_args(socket: &Path, mux_config: &Path) -> Vec<String> {
    vec![
        "--socket".to_owned(),
        socket.to_string_lossy().into_owned(),
        "--autostart".to_owned(),
        "--config".to_owned(),
        mux_config.to_string_lossy().into_owned(),
    ]
}

/// The entry a host needs to reach one server through the proxy, as pretty JSON:
/// `{"command": PROXY, "args": ["--socket", SOCKET, …]}` with [`proxy_args`], the same command
/// `rewire` writes. The menu's "Copy host entry" puts it on the clipboard for hosts `rewire`
/// does not know.
pub fn host_entry(proxy: &Path, socket: &Path, mux_config: &Path) -> String {
    // Written by hand: the command first, as hosts' files have it (a JSON map sorts its keys).
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let args: Vec<String> = proxy_args(socket, mux_config)
        .iter()
        .map(|a| format!("    {}", quote(a)))
        .collect();
    format!(
        "{{\n  \"command\": {},\n  \"args\": [\n{}\n  ]\n}}",
        quote(&proxy.to_string_lossy()),
        args.join(",\n")
    )
}

/// How a rewired entry reaches the mux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// As a command: `rmcp-mux-proxy` at this path, bridging the host's stdio to the socket.
    Proxy(PathBuf),
    /// By URL: the HTTP front at `base` (`http://127.0.0.1:PORT`, each server at
    /// `base/NAME/mcp`), with `token` sent as `Authorization: Bearer`. No process per host.
    Http {
        /// `http://127.0.0.1:PORT`.
        base: String,
        /// The front's bearer token (written into the host's file: hosts send what it says).
        token: String,
    },
}

/// A host's URL form: the `type` it wants (if any) and the key the URL goes under. `None`
/// for hosts that only start commands.
pub fn url_form(host: Host) -> Option<(Option<&'static str>, &'static str)> {
    match host {
        Host::ClaudeCode | Host::Cursor | Host::Vscode => Some((Some("http"), "url")),
        Host::Windsurf => Some((None, "serverUrl")),
        Host::Gemini => Some((None, "httpUrl")),
        Host::Codex => Some((None, "url")),
        Host::ClaudeDesktop | Host::Zed => None,
    }
}

/// What one entry is rewired to.
enum Job {
    /// The proxy's arguments.
    Proxy(Vec<String>),
    /// The server's URL.
    Http(String),
}

/// Points every entry of `host` that the mux runs at the proxy.
///
/// # Errors
/// A host file that cannot be read, parsed or written, or the record not written.
pub fn rewire(
    host: Host,
    paths: &Paths,
    cfg: &Config,
    proxy: &Path,
    state_dir: &Path,
    dry_run: bool,
) -> Result<Report, HostError> {
    rewire_via(
        host,
        paths,
        cfg,
        &Via::Proxy(proxy.to_owned()),
        state_dir,
        dry_run,
    )
}

/// Points every entry of `host` that the mux runs at the mux, through the proxy or by URL.
///
/// # Errors
/// A host file that cannot be read, parsed or written, or the record not written;
/// [`HostError::NoUrlForm`] for `Via::Http` and a host that only starts commands.
pub fn rewire_via(
    host: Host,
    paths: &Paths,
    cfg: &Config,
    via: &Via,
    state_dir: &Path,
    dry_run: bool,
) -> Result<Report, HostError> {
    let mut report = Report::default();
    let proxy_s = match via {
        Via::Proxy(p) => p.to_string_lossy().into_owned(),
        Via::Http { .. } => {
            if url_form(host).is_none() {
                return Err(HostError::NoUrlForm { host });
            }
            String::new()
        }
    };
    let mux_config = std::fs::canonicalize(&cfg.path).unwrap_or_else(|_| cfg.path.clone());
    for file in host.files(paths) {
        let Some(text) = super::read_optional(&file.path)? else {
            continue;
        };
        let entries = super::scan_file(&file)?;
        let mut jobs: Vec<(Vec<String>, String, Job)> = Vec::new();
        for e in &entries {
            let at = format!("{} in {}", e.name, file.path.display());
            match &e.launch {
                Launch::Remote { url } if matches!(via, Via::Http { base, .. } if url.starts_with(&format!("{base}/"))) => {
                    report.lines.push(format!("{at}: already rewired"))
                }
                Launch::Remote { .. } => report.lines.push(format!("left {at} alone: remote server")),
                Launch::Unsupported { why } => report.lines.push(format!("left {at} alone: {why}")),
                Launch::Stdio(s) if s.is_proxy() => report.lines.push(format!("{at}: already rewired")),
                Launch::Stdio(_) => match e
                    .effective()
                    .and_then(|s| match_server(cfg, &e.name, &s, &paths.home))
                {
                    None => report.lines.push(format!(
                        "left {at} alone: not run by the mux (add it with `rmcp-mux import --host {host}`)"
                    )),
                    Some((srv, by_content)) => {
                        let how = if by_content { String::new() } else { " (matched by name)".into() };
                        report.lines.push(format!(
                            "{} {at} -> {}{how}",
                            if dry_run { "would rewire" } else { "rewired" },
                            srv.name
                        ));
                        let job = match via {
                            Via::Proxy(_) => Job::Proxy(proxy_args(&srv.socket, &mux_config)),
                            Via::Http { base, .. } => Job::Http(format!("{base}/{}/mcp", srv.name)),
                        };
                        jobs.push((e.key_path.clone(), srv.name.clone(), job));
                    }
                },
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let stamp = timestamp();
        let headers = match via {
            Via::Http { token, .. } => {
                vec![("Authorization".to_owned(), format!("Bearer {token}"))]
            }
            Via::Proxy(_) => vec![],
        };
        let (new_text, changes) = edit(&file, &text, &jobs, &proxy_s, &headers, &stamp)?;
        if new_text == text {
            continue;
        }
        report.changed += changes.len();
        report.entries.extend(changes.iter().map(|c| Planned {
            name: c.entry.last().cloned().unwrap_or_default(),
            file: file.path.clone(),
            server: c.server.clone(),
        }));
        if dry_run {
            let name = file.path.display().to_string();
            let diff = similar::udiff::unified_diff(
                similar::Algorithm::Myers,
                &text,
                &new_text,
                3,
                Some((&name, &format!("{name} (rewired)"))),
            );
            let secrets = if file.format == Format::Codex {
                codex::secret_values(&text)
            } else {
                json::secret_values(&text)
            }
            .map_err(|e| e.in_file(&file.path))?;
            let mut secrets = secrets;
            if let Via::Http { token, .. } = via {
                secrets.push(format!("Bearer {token}"));
            }
            let mut diff = mask(&diff, &secrets);
            for e in &entries {
                if let Launch::Remote { url } = &e.launch {
                    diff = diff.replace(url.as_str(), &super::display_url(url));
                }
            }
            report.diffs.push(diff);
            continue;
        }
        let backup = backup(&file.path, text.as_bytes(), &stamp)?;
        let rec_path = record_path(state_dir, host, &file.path);
        let mut record = read_record(&rec_path)?.unwrap_or(Record {
            version: 1,
            host: host.name().to_owned(),
            file: file.path.clone(),
            backups: vec![],
            changes: vec![],
        });
        let before = record.clone();
        record.backups.push(backup.clone());
        record.changes.extend(changes);
        // The record first: a host file rewired without its record could not be unwired.
        write_record(&rec_path, &record)?;
        if let Err(e) = write_atomic(&file.path, new_text.as_bytes(), None) {
            let _ = if before.changes.is_empty() {
                std::fs::remove_file(&rec_path).map_err(|_| ())
            } else {
                write_record(&rec_path, &before).map_err(|_| ())
            };
            return Err(e);
        }
        report.lines.push(format!("backup: {}", backup.display()));
    }
    Ok(report)
}

/// `text` with every quoted occurrence of the `secrets` replaced by the mask.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let masked = format!("\"{}\"", super::MASK);
    let mut out = text.to_owned();
    for v in secrets.iter().filter(|v| !v.is_empty()) {
        let json = serde_json::to_string(v).unwrap_or_default();
        for quoted in [json, format!("'{v}'"), format!("\"{v}\"")] {
            out = out.replace(&quoted, &masked);
        }
    }
    out
}

/// The file's new text and the changes, for the entries in `jobs` (key path, server, what
/// to point it at); `headers` go with URLs.
fn edit(
    file: &HostFile,
    text: &str,
    jobs: &[(Vec<String>, String, Job)],
    proxy: &str,
    headers: &[(String, String)],
    stamp: &str,
) -> Result<(String, Vec<Change>), HostError> {
    let mut changes = Vec::new();
    if file.format == Format::Codex {
        let mut cur = text.to_owned();
        for (path, server, job) in jobs {
            let name = path.last().map(String::as_str).unwrap_or_default();
            let f = match job {
                Job::Proxy(args) => codex::rewire(&cur, name, proxy, args),
                Job::Http(url) => codex::rewire_http(&cur, name, url, headers),
            }
            .map_err(|e| e.in_file(&file.path))?;
            let Some(f) = f else { continue };
            cur.replace_range(f.start..f.start + f.original.len(), &f.written);
            changes.push(Change {
                entry: path.clone(),
                server: server.clone(),
                start: f.start,
                original: f.original,
                written: f.written,
                at: stamp.to_owned(),
            });
        }
        return Ok((cur, changes));
    }
    let mut splices = Vec::new();
    let (kind, url_key) = url_form(file.host).unwrap_or((None, "url"));
    for (path, server, job) in jobs {
        let s = match job {
            Job::Proxy(args) => json::rewire_splice(text, file.format, path, proxy, args),
            Job::Http(url) => json::http_splice(text, path, kind, url_key, url, headers),
        }
        .map_err(|e| e.in_file(&file.path))?;
        let Some(s) = s else { continue };
        changes.push(Change {
            entry: path.clone(),
            server: server.clone(),
            start: s.start,
            original: s.original.clone(),
            written: s.written.clone(),
            at: stamp.to_owned(),
        });
        splices.push(s);
    }
    Ok((json::apply(text, &splices), changes))
}

/// Every record of `host`; with `files`, only the records of those files.
fn records_of(state_dir: &Path, host: Host) -> Result<Vec<(PathBuf, Record)>, HostError> {
    let dir = records_dir(state_dir);
    let mut out = Vec::new();
    let list = match std::fs::read_dir(&dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(HostError::Read { path: dir, source }),
    };
    let prefix = format!("{}-", host.name());
    let mut paths: Vec<PathBuf> = list
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    paths.sort();
    for p in paths {
        if let Some(r) = read_record(&p)? {
            if r.host == host.name() {
                out.push((p, r));
            }
        }
    }
    Ok(out)
}

/// Puts back what rewire changed in `host`'s files. With a project in `paths`, only that
/// project's files and the user's; without, every file rewire recorded for the host.
///
/// # Errors
/// A record that cannot be read, a host file that cannot be read, parsed or written.
pub fn unwire(host: Host, paths: &Paths, state_dir: &Path) -> Result<Report, HostError> {
    let mut report = Report::default();
    let wanted: Option<Vec<PathBuf>> = paths
        .project
        .as_ref()
        .map(|_| host.files(paths).into_iter().map(|f| f.path).collect());
    let formats: BTreeMap<PathBuf, Format> = host
        .files(paths)
        .into_iter()
        .map(|f| (f.path, f.format))
        .collect();
    for (rec_path, record) in records_of(state_dir, host)? {
        if wanted.as_ref().is_some_and(|w| !w.contains(&record.file)) {
            continue;
        }
        let file = &record.file;
        let Some(text) = super::read_optional(file)? else {
            report.lines.push(format!(
                "{} is gone; nothing to put back (record kept: {})",
                file.display(),
                rec_path.display()
            ));
            continue;
        };
        let format = formats.get(file).copied().unwrap_or(
            if file.extension().is_some_and(|x| x == "toml") {
                Format::Codex
            } else {
                Format::McpServers
            },
        );
        let backups = record
            .backups
            .first()
            .map(|b| format!(" (the backup {} has the original)", b.display()))
            .unwrap_or_default();
        let mut cur = text.clone();
        for c in record.changes.iter().rev() {
            let name = c.entry.last().map(String::as_str).unwrap_or_default();
            let at = format!("{name} in {}", file.display());
            let restored = if format == Format::Codex {
                codex::restore(
                    &cur,
                    &codex::Fragment {
                        start: c.start,
                        original: c.original.clone(),
                        written: c.written.clone(),
                    },
                )
                .ok_or(json::Unrestorable::Changed)
            } else {
                json::restore(&cur, &c.entry, &c.original, &c.written)
                    .map_err(|e| e.in_file(file))?
            };
            match restored {
                Ok(t) => {
                    cur = t;
                    report.changed += 1;
                    report.lines.push(format!("restored {at}"));
                }
                Err(json::Unrestorable::Gone) => report
                    .lines
                    .push(format!("left {at}: removed since rewire{backups}")),
                Err(json::Unrestorable::Changed) => report
                    .lines
                    .push(format!("left {at}: changed since rewire{backups}")),
            }
        }
        if cur != text {
            write_atomic(file, cur.as_bytes(), None)?;
        }
        std::fs::remove_file(&rec_path).map_err(|source| HostError::Write {
            path: rec_path.clone(),
            source,
        })?;
    }
    if report.lines.is_empty() {
        report
            .lines
            .push(format!("nothing to unwire for {host}: no rewire record"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_entry_is_the_proxy_command_rewire_writes() {
        use std::path::Path;
        let text = super::host_entry(
            Path::new("/Applications/rmcp-mux.app/Contents/MacOS/rmcp-mux-proxy"),
            Path::new("/Users/me/.rmcp-mux/run/sockets/a \"b\".sock"),
            Path::new("/Users/me/.rmcp-mux/mux.toml"),
        );
        assert!(text.starts_with("{\n  \"command\": "), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            v["command"],
            "/Applications/rmcp-mux.app/Contents/MacOS/rmcp-mux-proxy"
        );
        assert_eq!(
            v["args"],
            serde_json::json!([
                "--socket",
                "/Users/me/.rmcp-mux/run/sockets/a \"b\".sock",
                "--autostart",
                "--config",
                "/Users/me/.rmcp-mux/mux.toml"
            ])
        );
    }

    use super::*;

    #[test]
    fn a_dry_run_lists_the_entries_it_would_change_and_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join(".cursor")).unwrap();
        let file = home.join(".cursor/mcp.json");
        let text = r#"{"mcpServers": {
  "mem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]},
  "other": {"command": "uvx", "args": ["not-in-the-mux"]},
  "web": {"url": "https://example.com/mcp"}
}}"#;
        std::fs::write(&file, text).unwrap();
        let cfg = Config::from_toml(
            "[servers.memory]\ncmd = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-memory\"]\n",
            &d.path().join("mux.toml"),
        )
        .unwrap();
        let paths = Paths {
            config: home.join(".config"),
            codex_home: home.join(".codex"),
            home: home.clone(),
            project: None,
        };
        let state = d.path().join("state");
        let via = Via::Proxy("/opt/rmcp-mux-proxy".into());
        let r = rewire_via(Host::Cursor, &paths, &cfg, &via, &state, true).unwrap();
        assert_eq!(
            r.entries,
            [Planned {
                name: "mem".into(),
                file: file.clone(),
                server: "memory".into()
            }]
        );
        assert_eq!(r.changed, 1);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "a dry run writes nothing"
        );
        assert!(!state.exists(), "and records nothing");
        let r = rewire_via(Host::Cursor, &paths, &cfg, &via, &state, false).unwrap();
        assert_eq!(r.entries.len(), 1, "the real run reports the same entries");
        assert_ne!(std::fs::read_to_string(&file).unwrap(), text);
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(format_utc(0), "19700101T000000Z");
        assert_eq!(format_utc(951_782_400 + 3661), "20000229T010101Z");
        assert_eq!(format_utc(1_798_761_599), "20261231T235959Z");
    }

    #[test]
    fn backups_are_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.json");
        std::fs::write(&f, "1").unwrap();
        let b1 = backup(&f, b"1", "S").unwrap();
        let b2 = backup(&f, b"2", "S").unwrap();
        assert_ne!(b1, b2);
        assert_eq!(std::fs::read_to_string(&b1).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(&b2).unwrap(), "2");
    }

    #[test]
    fn atomic_writes_keep_permissions() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.json");
        std::fs::write(&f, "1").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&f, b"2", None).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o640
        );
        write_atomic(&f, b"3", Some(0o600)).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
