//! The daemon's life outside its own process: one instance per config (a PID file plus an
//! exclusive `flock` the daemon holds for its whole life), starting it detached (re-exec in a
//! new session, stdio released, a pipe that reports "ready" once every socket is bound),
//! stopping it (SIGTERM, then SIGKILL), finding its files, and the proxy's `--autostart`.
//!
//! The lock is the truth: the PID file only says which process holds it, and is touched only
//! by a process that holds the lock. This module never forks a running tokio process and
//! never reaches into a daemon; it talks to one through signals, files and the control socket.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::Config;

/// How long `daemon start` waits for the detached daemon to bind its sockets.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `daemon stop` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the proxy's `--autostart` waits for the socket.
pub const AUTOSTART_TIMEOUT: Duration = Duration::from_secs(20);

/// Inherited fds below this are not passed on to the detached daemon (all but the ready pipe).
const MAX_INHERITED_FD: i32 = 1024;

/// The environment variable that hands the detached daemon its "ready" pipe.
const READY_ENV: &str = "RMCP_MUX_READY_FD";

/// The outcomes of the lifecycle commands the binary maps to its own messages and exit codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// Another daemon holds this config's lock.
    #[error("already running (PID {})", pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    AlreadyRunning {
        /// The holder's PID, when its PID file could be read.
        pid: Option<u32>,
    },
    /// No daemon holds this config's lock.
    #[error("not running (config {})", config.display())]
    NotRunning {
        /// The config file asked about.
        config: PathBuf,
    },
    /// The detached daemon reported an error before it was ready.
    #[error("the daemon did not start: {message}")]
    ChildFailed {
        /// Its exit code (2 for a config error, as everywhere).
        code: u8,
        /// What it said.
        message: String,
    },
    /// No home folder to put the state folder in.
    #[error("cannot find your home folder (is $HOME set?)")]
    NoHome,
}

/// Where one config's PID, lock and log files live. Named per config (the file's stem plus a
/// short stable hash of its canonical path), so two configs can run side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The config file, canonical when it exists.
    pub config: PathBuf,
    /// The PID file: the daemon's PID and its `--only` / `--except`, while it runs.
    pub pid_file: PathBuf,
    /// The lock file, flocked by the running daemon; never removed (see the module doc).
    pub lock_file: PathBuf,
    /// The log file of the detached daemon (or of `--log-file` without a path).
    pub log_file: PathBuf,
    /// The folder recording the running daemon's children, so that the next daemon can end
    /// what one that died abruptly left running (`crate::mux::orphans`).
    pub children: PathBuf,
}

impl Paths {
    /// The files of the daemon running `config`. Creates nothing.
    ///
    /// # Errors
    /// [`LifecycleError::NoHome`].
    pub fn for_config(config: &Path) -> anyhow::Result<Paths> {
        let config = std::fs::canonicalize(config)
            .or_else(|_| std::path::absolute(config))
            .unwrap_or_else(|_| config.to_owned());
        let stem: String = config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let hash = fnv1a(config.as_os_str().as_encoded_bytes());
        let name = format!("{stem}-{:012x}", hash & 0xffff_ffff_ffff);
        let state = state_dir()?;
        Ok(Paths {
            pid_file: state.join(format!("{name}.pid")),
            lock_file: state.join(format!("{name}.lock")),
            log_file: log_dir()?.join(format!("{name}.log")),
            children: state.join(format!("{name}.children")),
            config,
        })
    }
}

/// FNV-1a: tiny and stable across Rust releases (std's hasher is not promised to be).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The per-user state folder: `$XDG_STATE_HOME/rmcp-mux` or `~/.local/state/rmcp-mux` on
/// Linux, `~/Library/Application Support/rmcp-mux` on macOS. Never a shared `/tmp`.
///
/// # Errors
/// [`LifecycleError::NoHome`].
pub fn state_dir() -> anyhow::Result<PathBuf> {
    let base = directories::BaseDirs::new().ok_or(LifecycleError::NoHome)?;
    let dir = if cfg!(target_os = "macos") {
        base.data_dir().to_owned()
    } else {
        base.state_dir()
            .map(Path::to_owned)
            .unwrap_or_else(|| base.home_dir().join(".local/state"))
    };
    Ok(dir.join("rmcp-mux"))
}

/// The per-user log folder: the state folder's `logs` on Linux, `~/Library/Logs/rmcp-mux` on
/// macOS (where Console.app looks).
///
/// # Errors
/// [`LifecycleError::NoHome`].
pub fn log_dir() -> anyhow::Result<PathBuf> {
    if cfg!(target_os = "macos") {
        let base = directories::BaseDirs::new().ok_or(LifecycleError::NoHome)?;
        Ok(base.home_dir().join("Library/Logs/rmcp-mux"))
    } else {
        Ok(state_dir()?.join("logs"))
    }
}

/// Creates `dir` (and its parents) and makes `dir` itself 0700.
///
/// # Errors
/// The folder cannot be created or its mode set.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))
}

/// What the PID file says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PidInfo {
    /// The daemon's PID.
    pub pid: u32,
    /// Its `--only`, so `daemon restart` starts the same selection.
    pub only: Vec<String>,
    /// Its `--except`.
    pub except: Vec<String>,
}

impl PidInfo {
    fn render(&self) -> String {
        format!(
            "{}\nonly={}\nexcept={}\n",
            self.pid,
            self.only.join(","),
            self.except.join(",")
        )
    }

    fn parse(text: &str) -> Option<PidInfo> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let mut info = PidInfo {
            pid,
            ..PidInfo::default()
        };
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        for line in lines {
            if let Some(v) = line.strip_prefix("only=") {
                info.only = list(v);
            } else if let Some(v) = line.strip_prefix("except=") {
                info.except = list(v);
            }
        }
        Some(info)
    }
}

fn read_pid_file(path: &Path) -> Option<PidInfo> {
    PidInfo::parse(&std::fs::read_to_string(path).ok()?)
}

fn open_lock(paths: &Paths) -> anyhow::Result<File> {
    if let Some(dir) = paths.lock_file.parent() {
        private_dir(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&paths.lock_file)
        .with_context(|| format!("cannot open {}", paths.lock_file.display()))
}

fn try_lock(paths: &Paths) -> anyhow::Result<Option<Flock<File>>> {
    match Flock::lock(open_lock(paths)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", paths.lock_file.display())),
    }
}

/// Whether a daemon runs for a config, by its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The lock is held; the PID file (if already written) says by whom.
    Running(Option<PidInfo>),
    /// The lock is free. A PID file left behind was stale and has been removed; its PID is
    /// here so the caller can say so.
    NotRunning {
        /// The PID of the stale file.
        stale: Option<u32>,
    },
}

/// Checks the lock of `paths` (and cleans a stale PID file while holding it).
///
/// # Errors
/// The state folder or lock file cannot be opened.
pub fn probe(paths: &Paths) -> anyhow::Result<Probe> {
    match try_lock(paths)? {
        Some(lock) => {
            let stale = remove_stale(paths);
            drop(lock);
            Ok(Probe::NotRunning { stale })
        }
        None => {
            // A daemon writes its PID right after taking the lock: give it a moment.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let info = read_pid_file(&paths.pid_file);
                if info.is_some() || Instant::now() >= deadline {
                    return Ok(Probe::Running(info));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Removes the PID file; only call while holding the lock.
fn remove_stale(paths: &Paths) -> Option<u32> {
    if !paths.pid_file.exists() {
        return None;
    }
    let pid = read_pid_file(&paths.pid_file).map_or(0, |i| i.pid);
    let _ = std::fs::remove_file(&paths.pid_file);
    Some(pid)
}

/// The running daemon's claim on its config: the held lock and the PID file. Dropping it
/// removes the PID file, then releases the lock.
pub struct Instance {
    pid_file: PathBuf,
    children: PathBuf,
    _lock: Flock<File>,
}

impl Instance {
    /// Takes the config's lock and writes the PID file (0600). Called by every daemon, in the
    /// foreground too, so a service manager's daemon and a detached one exclude each other.
    ///
    /// # Errors
    /// [`LifecycleError::AlreadyRunning`], or the files cannot be written.
    pub fn acquire(paths: &Paths, only: &[String], except: &[String]) -> anyhow::Result<Instance> {
        let Some(lock) = try_lock(paths)? else {
            let pid = match probe(paths)? {
                Probe::Running(info) => info.map(|i| i.pid),
                Probe::NotRunning { .. } => None,
            };
            return Err(LifecycleError::AlreadyRunning { pid }.into());
        };
        if let Some(stale) = remove_stale(paths) {
            let note = format!(
                "removed a stale PID file ({}: PID {stale} held no lock)",
                paths.pid_file.display()
            );
            tracing::info!("{note}");
            notify_note(&note);
        }
        let info = PidInfo {
            pid: std::process::id(),
            only: only.to_vec(),
            except: except.to_vec(),
        };
        crate::io::atomic_file::replace(&paths.pid_file, info.render().as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", paths.pid_file.display()))?;
        sweep_orphans(paths);
        crate::mux::orphans::record_in(paths.children.clone())
            .with_context(|| format!("cannot create {}", paths.children.display()))?;
        Ok(Instance {
            pid_file: paths.pid_file.clone(),
            children: paths.children.clone(),
            _lock: lock,
        })
    }
}

/// Ends what a daemon of this config that died abruptly left running (its children and their
/// groups, as recorded); the caller holds the config's lock.
fn sweep_orphans(paths: &Paths) {
    let ended = crate::mux::orphans::sweep(&paths.children);
    if !ended.is_empty() {
        let note = format!(
            "ended {} process(es) left running by a daemon that did not stop normally",
            ended.len()
        );
        tracing::info!(pids = ?ended, "{note}");
        notify_note(&note);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A child that outlived its stop (a loaded machine, a group member ignoring SIGTERM past
        // the daemon's patience) is ended now, while the lock is still held, and no record of a
        // child is left behind a clean exit.
        let ended = crate::mux::orphans::sweep(&self.children);
        if !ended.is_empty() {
            tracing::warn!(pids = ?ended, "ended processes that had not stopped in time");
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

// ---- the "ready" pipe between `daemon start` and the detached daemon ----

static READY: Mutex<Option<File>> = Mutex::new(None);

/// Takes the ready pipe handed over by `daemon start`, if any. Call first thing in `main`,
/// while the process has one thread: it removes the variable (so servers do not inherit it)
/// and marks the fd close-on-exec (so children do not keep the pipe open).
pub fn take_ready_fd() {
    let Some(value) = std::env::var_os(READY_ENV) else {
        return;
    };
    std::env::remove_var(READY_ENV);
    let Some(fd) = value.to_str().and_then(|v| v.parse::<i32>().ok()) else {
        return;
    };
    // SAFETY: only checks that `fd` is open; the borrow ends before anything else runs.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if fcntl(borrowed, FcntlArg::F_GETFD).is_err() {
        return;
    }
    let _ = fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    // SAFETY: our parent opened this fd for us alone and it is open (checked above); nothing
    // else in this process knows its number, so the File becomes its only owner.
    let file = unsafe { File::from_raw_fd(fd) };
    if let Ok(mut slot) = READY.lock() {
        *slot = Some(file);
    }
}

fn send_ready_line(line: &str, close: bool) {
    if let Ok(mut slot) = READY.lock() {
        if let Some(f) = slot.as_mut() {
            let _ = f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes());
        }
        if close {
            *slot = None;
        }
    }
}

/// Passes a note to the `daemon start` that is waiting (printed by it on stderr).
pub fn notify_note(note: &str) {
    send_ready_line(&format!("note {note}"), false);
}

/// Tells a waiting `daemon start` that every socket is bound; closes the pipe.
pub fn notify_ready() {
    send_ready_line("ready", true);
}

/// Tells a waiting `daemon start` why this daemon cannot start, and its exit code.
pub fn notify_failed(code: u8, message: &str) {
    send_ready_line(&format!("error {code} {message}"), true);
}

/// What `daemon start` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The detached daemon's PID.
    pub pid: u32,
    /// Things worth telling the user (a stale PID file removed).
    pub notes: Vec<String>,
}

/// Starts the daemon for `config` detached: re-executes this program in the foreground
/// daemon mode in a new session with stdio on /dev/null and logs in [`Paths::log_file`],
/// and returns once it reported that every socket is bound.
///
/// # Errors
/// A config error (checked here first, so it exits 2), [`LifecycleError::AlreadyRunning`],
/// [`LifecycleError::ChildFailed`] with the daemon's own error, or no answer within
/// [`READY_TIMEOUT`] (the daemon is then stopped).
pub fn start_detached(
    config: &Path,
    only: &[String],
    except: &[String],
) -> anyhow::Result<Started> {
    let paths = Paths::for_config(config)?;
    let cfg = Config::load(&paths.config)?;
    cfg.select(only, except)?;
    let mut notes = Vec::new();
    match probe(&paths)? {
        Probe::Running(info) => {
            return Err(LifecycleError::AlreadyRunning {
                pid: info.map(|i| i.pid),
            }
            .into())
        }
        Probe::NotRunning { stale: Some(pid) } => notes.push(format!(
            "removed a stale PID file ({}: PID {pid} held no lock)",
            paths.pid_file.display()
        )),
        Probe::NotRunning { stale: None } => {}
    }
    if let Some(dir) = paths.log_file.parent() {
        private_dir(dir)?;
    }
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    // pipe2 does not exist on macOS: pipe, then close-on-exec on both ends (this process
    // starts nothing else meanwhile), so only the daemon, on purpose, inherits the write end.
    let (read, write) = nix::unistd::pipe().context("cannot create a pipe")?;
    for end in [&read, &write] {
        fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("cannot set up the pipe")?;
    }
    let write_fd = write.as_raw_fd();
    let mut cmd = Command::new(&exe);
    cmd.arg("--config").arg(&paths.config);
    if !only.is_empty() {
        cmd.arg("--only").arg(only.join(","));
    }
    if !except.is_empty() {
        cmd.arg("--except").arg(except.join(","));
    }
    cmd.arg("--log-file")
        .arg(&paths.log_file)
        .env(READY_ENV, write_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(home) = directories::BaseDirs::new() {
        cmd.current_dir(home.home_dir());
    }
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, fcntl); the borrowed
    // fds are only used for the duration of one fcntl each.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            // The pipe's write end is the one fd the daemon inherits on purpose.
            fcntl(
                BorrowedFd::borrow_raw(write_fd),
                FcntlArg::F_SETFD(FdFlag::empty()),
            )?;
            // Nothing else: fds our own caller leaked to us (a host's pipes, a jobserver)
            // must not be held open for months by the daemon. Marked close-on-exec rather
            // than closed, so std's own exec-error pipe keeps working.
            for fd in (3..MAX_INHERITED_FD).filter(|&fd| fd != write_fd) {
                let _ = fcntl(
                    BorrowedFd::borrow_raw(fd),
                    FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC),
                );
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    drop(write);
    let pid = child.id();
    let answer = read_ready(read, READY_TIMEOUT);
    match answer {
        ReadyAnswer::Ready(more) => {
            notes.extend(more);
            Ok(Started { pid, notes })
        }
        ReadyAnswer::Failed(code, message) => {
            let _ = child.wait();
            Err(LifecycleError::ChildFailed { code, message }.into())
        }
        ReadyAnswer::Closed => {
            let status = child.wait().ok();
            Err(LifecycleError::ChildFailed {
                code: 1,
                message: format!(
                    "it exited before it was ready ({}); see {}",
                    status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string()),
                    paths.log_file.display()
                ),
            }
            .into())
        }
        ReadyAnswer::TimedOut => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            Err(LifecycleError::ChildFailed {
                code: 1,
                message: format!(
                    "it was not ready within {} s and was stopped; see {}",
                    READY_TIMEOUT.as_secs(),
                    paths.log_file.display()
                ),
            }
            .into())
        }
    }
}

enum ReadyAnswer {
    Ready(Vec<String>),
    Failed(u8, String),
    Closed,
    TimedOut,
}

fn read_ready(read: OwnedFd, timeout: Duration) -> ReadyAnswer {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut notes = Vec::new();
        for line in BufReader::new(File::from(read)).lines() {
            let Ok(line) = line else { break };
            if line == "ready" {
                let _ = tx.send(ReadyAnswer::Ready(notes));
                return;
            }
            if let Some(note) = line.strip_prefix("note ") {
                notes.push(note.to_owned());
            } else if let Some(rest) = line.strip_prefix("error ") {
                let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
                let _ = tx.send(ReadyAnswer::Failed(
                    code.parse().unwrap_or(1),
                    message.to_owned(),
                ));
                return;
            }
        }
        let _ = tx.send(ReadyAnswer::Closed);
    });
    rx.recv_timeout(timeout).unwrap_or(ReadyAnswer::TimedOut)
}

/// Stops the daemon of `config`: SIGTERM, up to [`STOP_TIMEOUT`] for it to release its lock,
/// then SIGKILL (of the daemon only; it stops its own children). Returns its PID.
///
/// # Errors
/// [`LifecycleError::NotRunning`], or a daemon that survived SIGKILL.
pub fn stop(config: &Path) -> anyhow::Result<(u32, Vec<String>)> {
    let paths = Paths::for_config(config)?;
    let info = match probe(&paths)? {
        Probe::Running(Some(info)) => info,
        Probe::Running(None) => anyhow::bail!(
            "a daemon holds {} but wrote no PID file; cannot stop it",
            paths.lock_file.display()
        ),
        Probe::NotRunning { stale } => {
            let mut err = anyhow::Error::new(LifecycleError::NotRunning {
                config: paths.config.clone(),
            });
            if let Some(pid) = stale {
                err = err.context(format!("removed a stale PID file (PID {pid} held no lock)"));
            }
            // A daemon that died abruptly: what it left running is ended here too.
            if let Ok(Some(_lock)) = try_lock(&paths) {
                let ended = crate::mux::orphans::sweep(&paths.children);
                if !ended.is_empty() {
                    err = err.context(format!(
                        "ended {} process(es) left running by a daemon that did not stop normally",
                        ended.len()
                    ));
                }
            }
            return Err(err);
        }
    };
    let pid = Pid::from_raw(info.pid as i32);
    let mut notes = Vec::new();
    let _ = kill(pid, Signal::SIGTERM);
    let mut lock = wait_for_lock(&paths, STOP_TIMEOUT)?;
    if lock.is_none() {
        notes.push(format!(
            "PID {} did not stop within {} s; killed it",
            info.pid,
            STOP_TIMEOUT.as_secs()
        ));
        let _ = kill(pid, Signal::SIGKILL);
        lock = wait_for_lock(&paths, Duration::from_secs(5))?;
    }
    let Some(lock) = lock else {
        anyhow::bail!("PID {} is still running after SIGKILL", info.pid);
    };
    remove_stale(&paths);
    drop(lock);
    Ok((info.pid, notes))
}

fn wait_for_lock(paths: &Paths, limit: Duration) -> anyhow::Result<Option<Flock<File>>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(lock) = try_lock(paths)? {
            return Ok(Some(lock));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The `rmcp-mux` program next to this one (the proxy's sibling), else `rmcp-mux` on PATH.
pub fn mux_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("rmcp-mux"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("rmcp-mux"))
}

fn nothing_listens(socket: &Path) -> bool {
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ),
    }
}

/// What the proxy's `--autostart` runs to start the daemon for `config`, given the proxy's
/// own path: `rmcp-mux daemon start` next to it, except inside rmcp-mux.app, where the app
/// itself is opened (a new instance, in the background, `--tray --config FILE`) so that the
/// menu-bar app, not a headless daemon whose lock would keep the app out, serves the host.
pub fn autostart_command(proxy_exe: Option<&Path>, config: &Path) -> (PathBuf, Vec<PathBuf>) {
    let config = config.to_owned();
    match proxy_exe.and_then(crate::tray::start::bundle_of) {
        Some(app) => (
            PathBuf::from("/usr/bin/open"),
            vec![
                "-n".into(),
                "-g".into(),
                "-a".into(),
                app,
                "--args".into(),
                "--tray".into(),
                "--config".into(),
                config,
            ],
        ),
        None => (
            mux_program(),
            vec!["daemon".into(), "start".into(), "--config".into(), config],
        ),
    }
}

/// The proxy's `--autostart`: when nothing listens on `socket`, starts the daemon for `config`
/// ([`autostart_command`]; its output kept away from the proxy's stdout) and waits up to
/// `wait` for the socket. Racing proxies are fine: the lock lets one daemon start and the
/// others wait.
///
/// # Errors
/// The socket is still not served after `wait` (with what `daemon start` said).
pub fn autostart(socket: &Path, config: &Path, wait: Duration) -> anyhow::Result<()> {
    if !nothing_listens(socket) {
        return Ok(());
    }
    let exe = std::env::current_exe().ok();
    let (program, args) = autostart_command(exe.as_deref(), config);
    tracing::info!(socket = %socket.display(), config = %config.display(), program = %program.display(), "nothing listens; starting the daemon");
    let out = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let lost_race = said.contains("already running");
    if !out.status.success() && !lost_race {
        // Not a lost race (those wait below): a config error, a busy socket. Say it now.
        anyhow::bail!(
            "cannot start the daemon for {}: {}",
            config.display(),
            said.trim_start_matches("rmcp-mux: ")
        );
    }
    let deadline = Instant::now() + wait;
    while nothing_listens(socket) {
        if Instant::now() >= deadline {
            anyhow::bail!(
                "nothing listens on {} {} s after starting the daemon for {}{}",
                socket.display(),
                wait.as_secs(),
                config.display(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(" (daemon start said: {said})")
                }
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_round_trips() {
        let info = PidInfo {
            pid: 42,
            only: vec!["a".into(), "b".into()],
            except: vec![],
        };
        assert_eq!(PidInfo::parse(&info.render()), Some(info));
        assert_eq!(PidInfo::parse("garbage"), None);
        assert_eq!(PidInfo::parse("7\n").map(|i| i.pid), Some(7));
    }

    #[test]
    fn a_proxy_inside_the_app_opens_the_app() {
        let config = Path::new("/Users/me/.rmcp-mux/mux.toml");
        let proxy = Path::new("/Applications/rmcp-mux.app/Contents/MacOS/rmcp-mux-proxy");
        let (program, args) = autostart_command(Some(proxy), config);
        assert_eq!(program, Path::new("/usr/bin/open"));
        let args: Vec<String> = args.iter().map(|a| a.display().to_string()).collect();
        assert_eq!(
            args,
            [
                "-n",
                "-g",
                "-a",
                "/Applications/rmcp-mux.app",
                "--args",
                "--tray",
                "--config",
                "/Users/me/.rmcp-mux/mux.toml"
            ]
        );
        let (_, args) = autostart_command(Some(Path::new("/usr/local/bin/rmcp-mux-proxy")), config);
        assert_eq!(args[..2], [PathBuf::from("daemon"), PathBuf::from("start")]);
    }

    #[test]
    fn the_hash_is_stable() {
        // FNV-1a test vectors: the names must not change between releases.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
