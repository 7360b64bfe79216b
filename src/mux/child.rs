//! Starting and stopping a server's child process: executed directly (never through a shell),
//! in a process group of its own so that stopping it reaches `npx`'s grandchildren too, with
//! stderr forwarded to the log under the server's name. Each child is recorded in the state
//! folder while it runs (`super::orphans`), and on Linux the kernel kills it when the daemon
//! dies, so that a daemon killed outright leaves nothing running for good.
//!
//! It knows nothing of MCP; the actor decides when to start and stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncBufReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin};

/// What is needed to start a child, taken from the server's config.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The server's name, for logs and errors.
    pub server: String,
    /// The program (looked up on PATH when it has no slash).
    pub cmd: String,
    /// Its arguments, passed as they are.
    pub args: Vec<String>,
    /// Added to the daemon's environment. Values are secrets: never logged.
    pub env: BTreeMap<String, String>,
    /// The working directory, when set.
    pub cwd: Option<PathBuf>,
}

/// Why a child could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    /// The working folder is missing or not a folder. Checked before the spawn, because the
    /// OS reports it as "No such file or directory", which reads as if the program were missing.
    #[error("server {server}: working folder {} (`cwd`) does not exist or is not a folder", cwd.display())]
    Cwd {
        /// The server's name.
        server: String,
        /// The configured folder.
        cwd: PathBuf,
    },
    /// The program could not be executed (not found, not executable).
    #[error("failed to start `{cmd}` for server {server}: {source}")]
    Spawn {
        /// The server's name.
        server: String,
        /// The program.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A started child with its pipes taken out.
pub struct SpawnedChild {
    /// The process, for waiting and reaping.
    pub child: Child,
    /// Its pid, which is also its process group id.
    pub pid: u32,
    /// Where MCP messages go in.
    pub stdin: ChildStdin,
    /// Where MCP messages come out: a pipe the daemon can also peek into and move bytes out
    /// of without copying them (`tee`, `splice`), which a `ChildStdout` does not allow.
    pub stdout: pipe::Receiver,
}

/// Longest stderr line forwarded to the log; the rest of such a line is cut.
const STDERR_LINE_MAX: usize = 64 * 1024;

/// Starts the child in its own process group with stdin/stdout piped and stderr logged.
///
/// # Errors
/// [`ChildError::Cwd`] when the working folder is missing, [`ChildError::Spawn`] when the
/// program cannot be executed.
pub fn spawn(spec: &ChildSpec) -> Result<SpawnedChild, ChildError> {
    if let Some(cwd) = &spec.cwd {
        if !cwd.is_dir() {
            return Err(ChildError::Cwd {
                server: spec.server.clone(),
                cwd: cwd.clone(),
            });
        }
    }
    let mut cmd = tokio::process::Command::new(&spec.cmd);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    die_with_the_daemon(&mut cmd);
    // The login shell's PATH when the daemon did not inherit the user's (crate::daemon::login_path);
    // a server's own `env` PATH wins. It is also where `cmd` itself is looked up.
    if let Some(path) = crate::daemon::login_path::override_path() {
        if !spec.env.contains_key("PATH") {
            cmd.env("PATH", path);
        }
    }
    let err = |source| ChildError::Spawn {
        server: spec.server.clone(),
        cmd: spec.cmd.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(err)?;
    let pid = child.id().unwrap_or_default();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(err(std::io::Error::other("child pipes missing")));
    };
    // On failure `child` is dropped, which kills it (`kill_on_drop`).
    let stdout = stdout
        .into_owned_fd()
        .and_then(pipe::Receiver::from_owned_fd)
        .map_err(err)?;
    let server = spec.server.clone();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match read_capped(&mut reader, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let text = text.trim_end();
                    if !text.is_empty() {
                        tracing::info!(target: "child_stderr", server = %server, pid, "{text}");
                    }
                }
            }
        }
    });
    super::orphans::started(pid);
    Ok(SpawnedChild {
        child,
        pid,
        stdin,
        stdout,
    })
}

/// Linux: the kernel sends the child SIGKILL when the daemon dies, however it dies (the
/// records in the state folder cover its grandchildren, and other systems). The signal comes
/// when the thread that started the child ends: children are started by the runtime's
/// threads, which live as long as the daemon.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn die_with_the_daemon(cmd: &mut tokio::process::Command) {
    let daemon = nix::unistd::getpid().as_raw();
    // SAFETY: the closure runs in the child between fork and exec; it calls only prctl and
    // getppid, which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The daemon died before the call: nobody is left to send the signal.
            if nix::libc::getppid() != daemon {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn die_with_the_daemon(_cmd: &mut tokio::process::Command) {}

/// The child's process group has been ended: it is no longer recorded.
pub fn forget(pid: u32) {
    super::orphans::ended(pid);
}

/// Reads one line, keeping at most [`STDERR_LINE_MAX`] bytes of it; returns bytes consumed.
async fn read_capped<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = STDERR_LINE_MAX.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take);
        total += take;
        if done {
            return Ok(total);
        }
    }
}

/// Sends a signal to the child's whole process group. A group already gone is not an error.
///
/// Pid 0 (no child yet) is a no-op. Pid 1 and pids beyond `i32::MAX` are refused: `killpg`
/// on them would reach init's group or, wrapped negative, a meaning nobody intended.
///
/// # Errors
/// A refused pid, or any failure other than "no such process".
pub fn signal_group(pid: u32, sig: Signal) -> std::io::Result<()> {
    if pid == 0 {
        return Ok(());
    }
    let group = match i32::try_from(pid) {
        Ok(g) if g > 1 => g,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("refusing to signal process group {pid}"),
            ))
        }
    };
    match nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// The stop sequence: SIGTERM the group, wait up to `grace`, then SIGKILL the group and reap.
/// The caller closes stdin first (many servers exit on their own at EOF). The group is
/// SIGKILLed at the end in every case, so grandchildren never outlive the leader.
///
/// # Errors
/// Only when waiting for the child fails.
///
/// # Cancel safety
/// Not cancel safe: dropping it mid-way leaves the signals sent so far; `kill_on_drop` then
/// takes the leader down with its `Child`.
pub async fn terminate(
    child: &mut Child,
    pid: u32,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    let _ = signal_group(pid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(
                pid,
                grace_ms = grace.as_millis() as u64,
                "child ignored SIGTERM; killing it"
            );
            let _ = signal_group(pid, Signal::SIGKILL);
            child.wait().await
        }
    };
    let _ = signal_group(pid, Signal::SIGKILL);
    status
}

/// Human text of an exit, for status and logs.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        None => "exited".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::AsyncReadExt;

    fn sh(script: &str) -> ChildSpec {
        // Tests may use a shell to build odd children; the product never does.
        ChildSpec {
            server: "t".into(),
            cmd: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::new(),
            cwd: None,
        }
    }

    async fn output(mut c: SpawnedChild) -> String {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(10), c.stdout.read_to_string(&mut s))
            .await
            .unwrap()
            .unwrap();
        s
    }

    #[tokio::test]
    async fn env_and_cwd_are_passed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sh("echo \"$FOO\"; pwd");
        spec.env.insert("FOO".into(), "bar baz".into());
        spec.cwd = Some(dir.path().to_owned());
        let out = output(spawn(&spec).unwrap()).await;
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(out, format!("bar baz\n{}\n", real.display()));
    }

    #[tokio::test]
    async fn lots_of_stderr_does_not_stall_the_child() {
        let c = spawn(&sh("i=0; while [ $i -lt 20000 ]; do echo 'noise noise noise noise' >&2; i=$((i+1)); done; echo done")).unwrap();
        assert_eq!(output(c).await, "done\n");
    }

    #[tokio::test]
    async fn spawn_failure_names_the_command_and_server() {
        let mut spec = sh("");
        spec.cmd = "/nonexistent/mcp-server".into();
        let Err(e) = spawn(&spec) else {
            panic!("spawned")
        };
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/mcp-server") && msg.contains("server t"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn terminate_kills_a_child_that_ignores_sigterm_and_its_grandchildren() {
        let mut c = spawn(&sh("trap '' TERM; sleep 100 & echo $!; wait")).unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            tokio::time::timeout(Duration::from_secs(10), c.stdout.read_exact(&mut byte))
                .await
                .unwrap()
                .unwrap();
            line.push(byte[0]);
        }
        let grandchild: i32 = String::from_utf8(line).unwrap().trim().parse().unwrap();
        let start = Instant::now();
        let grace = Duration::from_millis(300);
        let status = terminate(&mut c.child, c.pid, grace).await.unwrap();
        assert!(start.elapsed() >= grace && start.elapsed() < grace + Duration::from_secs(1));
        assert_eq!(describe_exit(status), "killed by signal 9 (SIGKILL)");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(grandchild), None)
                .is_err()
                || std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true);
            if gone {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn exits_are_described() {
        let mut c = spawn(&sh("exit 3")).unwrap();
        let status = c.child.wait().await.unwrap();
        assert_eq!(describe_exit(status), "exited with status 3");
    }

    fn in_dir(cwd: Option<PathBuf>) -> ChildSpec {
        ChildSpec {
            server: "memory".into(),
            cmd: "true".into(),
            args: vec![],
            env: BTreeMap::new(),
            cwd,
        }
    }

    #[tokio::test]
    async fn a_missing_working_folder_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let err = spawn(&in_dir(Some(missing.clone()))).err().unwrap();
        assert!(matches!(&err, ChildError::Cwd { cwd, .. } if *cwd == missing));
        let text = err.to_string();
        assert!(
            text.contains("working folder") && text.contains("`cwd`"),
            "{text}"
        );
        // An existing folder starts the program as usual.
        let mut ok = spawn(&in_dir(Some(dir.path().to_path_buf()))).unwrap();
        assert!(ok.child.wait().await.unwrap().success());
    }

    #[test]
    fn init_and_wrapped_pids_are_never_signalled() {
        // SIGCONT is harmless even if the guard ever failed.
        for pid in [1, u32::MAX, i32::MAX as u32 + 1] {
            let err = signal_group(pid, Signal::SIGCONT).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "pid {pid}");
        }
        assert!(signal_group(0, Signal::SIGCONT).is_ok());
    }
}
