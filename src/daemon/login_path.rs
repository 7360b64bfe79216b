//! The PATH the servers get when the daemon did not inherit the user's own.
//!
//! Started from Finder, at login or by launchd, a process gets launchd's PATH
//! (`/usr/bin:/bin:/usr/sbin:/sbin`): `cmd = "npx"` (what every imported npm server uses) fails
//! with ENOENT. So the menu-bar app, and any daemon that finds exactly that PATH, asks the
//! user's login shell once at start (`$SHELL -l -i -c 'printf …"$PATH"'`, run directly, in a
//! session of its own, killed after a timeout) and gives that PATH to every child; when the shell
//! does not answer in time, a fallback that includes Homebrew's folders is used instead.
//! A daemon started from a terminal keeps the PATH it inherited: that already is the user's.
//!
//! [`child_path`] is what `status` shows as the servers' PATH.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// launchd's PATH for processes it starts (and what a GUI app inherits).
pub const LAUNCHD_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";

/// Used when the login shell cannot be asked: Homebrew on Apple silicon and on Intel, then the
/// system's folders.
pub const FALLBACK_PATH: &str = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/// How long the login shell may take to print its PATH (a heavy shell setup takes seconds).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Printed around the PATH, so that whatever the shell's startup files print is ignored.
const MARK: &str = "__RMCP_MUX_PATH__";

/// Where a resolved PATH came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The user's login shell printed it.
    LoginShell,
    /// The shell failed, printed nothing usable or timed out: [`FALLBACK_PATH`].
    Fallback,
}

/// The PATH set for the servers, when one was resolved.
static CHILD_PATH: OnceLock<OsString> = OnceLock::new();

/// Whether the daemon should resolve the login shell's PATH: always under `--tray` (the app is
/// started from Finder, a bundle or at login, never with a shell's environment), and otherwise
/// only when the inherited PATH is launchd's bare one or missing (a daemon a GUI host's proxy
/// started): a daemon started from a terminal already has the user's PATH.
pub fn wanted(tray: bool, inherited: Option<&OsStr>) -> bool {
    tray || inherited.is_none_or(|p| p.is_empty() || p == LAUNCHD_PATH)
}

/// Resolves the login shell's PATH (see the module doc) and sets it for every server started
/// from now on. Call once, before the daemon starts; later calls change nothing.
pub fn adopt(shell: Option<&Path>) -> (OsString, Source) {
    let (path, source) = match shell {
        Some(shell) => resolve(shell, TIMEOUT),
        None => (OsString::from(FALLBACK_PATH), Source::Fallback),
    };
    match source {
        Source::LoginShell => {
            tracing::info!(path = %path.to_string_lossy(), "PATH for servers from the login shell")
        }
        Source::Fallback => {
            tracing::warn!(path = %path.to_string_lossy(), "the login shell gave no PATH; servers get a default one")
        }
    }
    let _ = CHILD_PATH.set(path.clone());
    (path, source)
}

/// The user's login shell: `$SHELL`, when it is an absolute path.
pub fn login_shell() -> Option<std::path::PathBuf> {
    std::env::var_os("SHELL")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// The PATH set by [`adopt`], if any (servers whose own `env` sets PATH keep theirs).
pub fn override_path() -> Option<&'static OsStr> {
    CHILD_PATH.get().map(OsString::as_os_str)
}

/// The PATH the servers get: the one set by [`adopt`], else the daemon's own.
pub fn child_path() -> Option<String> {
    override_path()
        .map(OsStr::to_owned)
        .or_else(|| std::env::var_os("PATH"))
        .map(|p| p.to_string_lossy().into_owned())
}

/// Runs `shell -l -i -c 'printf MARK%sMARK "$PATH"'` (as a login and interactive shell, so that
/// both `.zprofile`, where Homebrew puts itself, and `.zshrc`, where version managers do, are
/// read), directly and not through another shell, with stdin closed, in a session of its own,
/// and returns what it printed between the marks. After `timeout` the whole group is killed and
/// [`FALLBACK_PATH`] returned; so it is when the shell fails or prints no usable PATH.
pub fn resolve(shell: &Path, timeout: Duration) -> (OsString, Source) {
    let fallback = || (OsString::from(FALLBACK_PATH), Source::Fallback);
    let script = format!("printf '{MARK}%s{MARK}' \"$PATH\"");
    let mut cmd = Command::new(shell);
    cmd.args(["-l", "-i", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe. A session of its own, without a controlling
    // terminal: an interactive shell started from a terminal would otherwise wait, stopped,
    // to get the terminal; and the session's process group can be killed as a whole.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(shell = %shell.display(), error = %e, "cannot run the login shell");
            return fallback();
        }
    };
    let pgid = child.id() as i32;
    let Some(mut out) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return fallback();
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads until the shell (and whatever it started that kept stdout) closes the pipe.
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.by_ref().take(1 << 20).read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    let printed = rx.recv_timeout(timeout);
    // The whole group: a shell's startup files may have started something that outlives it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    let Ok(printed) = printed else {
        tracing::warn!(shell = %shell.display(), timeout_ms = timeout.as_millis() as u64, "the login shell did not print its PATH in time");
        return fallback();
    };
    match parse(&String::from_utf8_lossy(&printed)) {
        Some(path) => (OsString::from(path), Source::LoginShell),
        None => fallback(),
    }
}

/// The PATH between the marks, when it is a usable one (some absolute folder in it).
fn parse(printed: &str) -> Option<String> {
    let start = printed.find(MARK)? + MARK.len();
    let len = printed[start..].find(MARK)?;
    let path = printed[start..start + len].trim();
    path.split(':')
        .any(|dir| dir.starts_with('/'))
        .then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    fn fake_shell(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("fake-shell");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_login_shells_path_is_read_between_the_marks() {
        let dir = tempfile::tempdir().unwrap();
        // A shell whose startup files talk, then run the command with their own PATH.
        let shell = fake_shell(
            dir.path(),
            "echo 'Last login: today'\n\
             [ \"$1 $2 $3\" = '-l -i -c' ] || exit 9\n\
             PATH=/opt/homebrew/bin:/home/me/.nvm/bin:/usr/bin:/bin\n\
             export PATH\n\
             eval \"$4\"\n\
             echo 'bye'",
        );
        let (path, source) = resolve(&shell, Duration::from_secs(10));
        assert_eq!(source, Source::LoginShell);
        assert_eq!(path, "/opt/homebrew/bin:/home/me/.nvm/bin:/usr/bin:/bin");
    }

    #[test]
    fn a_shell_that_hangs_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("sleeper.pid");
        // Starts a sleeper in its group (as a startup file might), then hangs itself.
        let shell = fake_shell(
            dir.path(),
            &format!("sleep 60 &\necho $! > '{}'\nsleep 60", pid_file.display()),
        );
        let t0 = Instant::now();
        let (path, source) = resolve(&shell, Duration::from_millis(300));
        let took = t0.elapsed();
        assert_eq!(source, Source::Fallback);
        assert_eq!(path, FALLBACK_PATH);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let sleeper: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed with its group. It is no child of ours, so there is no exit to wait for: its
        // state is polled, within a bound (a zombie until its new parent reaps it is gone).
        let gone = || {
            let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
            matches!(
                stat.rsplit(") ").next().and_then(|s| s.chars().next()),
                None | Some('Z')
            )
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "the shell's child {sleeper} survived the timeout");
    }

    #[test]
    fn a_shell_that_fails_or_prints_nothing_usable_gives_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let shell = fake_shell(dir.path(), "exit 1");
        assert_eq!(
            resolve(&shell, Duration::from_secs(10)),
            (OsString::from(FALLBACK_PATH), Source::Fallback)
        );
        let shell = fake_shell(dir.path(), "PATH=relative/only; eval \"$4\"");
        assert_eq!(resolve(&shell, Duration::from_secs(10)).1, Source::Fallback);
        let missing = dir.path().join("no-such-shell");
        assert_eq!(
            resolve(&missing, Duration::from_secs(10)).1,
            Source::Fallback
        );
        assert!(FALLBACK_PATH.starts_with("/opt/homebrew/bin:/usr/local/bin:"));
    }

    #[test]
    fn only_the_app_and_a_daemon_with_launchds_path_ask_the_shell() {
        assert!(wanted(true, Some(OsStr::new("/home/me/bin:/usr/bin"))));
        assert!(wanted(false, Some(OsStr::new(LAUNCHD_PATH))));
        assert!(wanted(false, None));
        assert!(wanted(false, Some(OsStr::new(""))));
        assert!(!wanted(false, Some(OsStr::new("/home/me/bin:/usr/bin"))));
    }
}
