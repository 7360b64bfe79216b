//! The live terminal dashboard (`rmcp-mux dashboard` and `rmcp-mux --tui`): the event loop
//! that owns the terminal, polls the daemon's control socket, reads keys and tails the log.
//!
//! It talks to the daemon only through [`control::request`], never through in-process state,
//! so the same loop serves a daemon in another process and one in this process (`--tui`). What
//! to show and what a key means live in the pure [`model`]; drawing lives in [`ui`]. The
//! terminal is restored on every way out: return, error, panic, and the `shutdown` future
//! (SIGTERM/SIGINT) the caller passes in.

pub mod model;
pub mod ui;

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures_util::StreamExt;

use crate::config::{Config, ServerConfig};
use crate::daemon::control::{self, Request};
use crate::daemon::lifecycle::Paths;
use crate::daemon::Daemon;
use model::{action_for, Effect, Key, LogSource, Model};

/// How often the status is asked for (and the log re-read) without a key press.
pub const REFRESH: Duration = Duration::from_millis(500);

/// How long one control request may take before the daemon counts as not reachable; short,
/// so a hung daemon does not freeze the screen.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How much of the end of the log file is read for the log view.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// The most log lines kept for the log view (more than any terminal is high).
const LOG_LINES: usize = 500;

/// What the dashboard talks to.
#[derive(Debug, Clone)]
pub struct Options {
    /// The daemon's control socket.
    pub control_socket: PathBuf,
}

/// Where `--tui` writes the daemon's log while the dashboard owns the terminal: the config's
/// log file, the one a detached daemon writes and `rmcp-mux logs` reads.
///
/// # Errors
/// No log folder can be found for this user.
pub fn tui_log_file(config: &Path) -> anyhow::Result<PathBuf> {
    Ok(Paths::for_config(config)?.log_file)
}

/// Restores the terminal when dropped, whichever way the dashboard ends.
struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        let _ = ratatui::try_restore();
        let _ = crossterm::execute!(std::io::stdout(), crossterm::cursor::Show);
    }
}

/// When dropped, checks that the terminal is still there; if it is gone (its window closed,
/// the SSH session dropped: SIGHUP, then EIO on every call), points stdin, stdout and stderr at
/// `/dev/null`. Without that, the terminal's teardown reports its failed writes with
/// `eprintln!`, which panics on a dead stderr, and the panic hook's second attempt aborts the
/// process before `--tui` has stopped its servers. Declared after the terminal, so it runs first.
struct DeadTerminalGuard;

impl Drop for DeadTerminalGuard {
    fn drop(&mut self) {
        // A hung-up tty answers every ioctl with EIO, so isatty says no. (crossterm's `size`
        // would fall back to running `tput` and "succeed".)
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            return;
        }
        let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        else {
            return;
        };
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
        tracing::info!("the terminal is gone; output goes to /dev/null from here on");
    }
}

/// Runs the dashboard until the user quits or `shutdown` completes.
///
/// # Errors
/// The terminal cannot be set up, drawn on or read. A daemon that does not answer is not an
/// error: the dashboard says so and keeps asking.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    need_terminal()?;
    let _restore = RestoreTerminal;
    // Also installs a panic hook that restores the terminal before the panic is printed.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let _dead = DeadTerminalGuard;
    let mut model = Model::default();
    let mut log: Vec<String> = Vec::new();
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        terminal
            .draw(|f| ui::draw(f, &model, &log))
            .context("cannot draw on the terminal")?;
        tokio::select! {
            // Cancel safe: a tick lost when another arm wins is simply the next one.
            _ = tick.tick() => {
                refresh(&mut model, &options.control_socket).await;
                if model.view() == model::View::Log {
                    log = read_log(&model);
                }
            }
            // Cancel safe: EventStream keeps events it has not handed out.
            event = events.next() => {
                let key = match event {
                    None => break,
                    Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                    Some(Ok(Event::Key(k))) => translate(k),
                    Some(Ok(_)) => None, // resize and the like: drawn again at the top
                };
                let Some(action) = key.and_then(|k| action_for(k, model.view())) else {
                    continue;
                };
                match model.apply(action) {
                    Effect::Redraw => {}
                    Effect::Quit => break,
                    Effect::ShowLog => log = read_log(&model),
                    Effect::Send(req) => {
                        let outcome = ask(&options.control_socket, &req)
                            .await
                            .map(|_| done(&req))
                            .map_err(|e| format!("{e:#}"));
                        model.action_done(outcome);
                        refresh(&mut model, &options.control_socket).await;
                        tick.reset();
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    Ok(())
}

/// Runs every server of `servers` in this process and the dashboard against its own control
/// socket (`rmcp-mux --tui`). Quitting the dashboard, or `shutdown`, stops the daemon the same
/// way SIGTERM stops a foreground one.
///
/// # Errors
/// As [`Daemon::start`] and [`run`]; the daemon is shut down in either case.
pub async fn run_with_daemon(
    config: &Config,
    servers: Vec<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Before anything starts: a daemon with no screen to show it would just be in the way.
    need_terminal()?;
    let daemon = Daemon::start(config, servers).await?;
    let options = Options {
        control_socket: config.daemon.control_socket.clone(),
    };
    let result = run(options, shutdown).await;
    daemon.shutdown().await;
    result
}

/// The dashboard draws on stdout and reads keys from stdin: both must be a terminal.
fn need_terminal() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "the dashboard needs a terminal (stdin and stdout); use `rmcp-mux status` in scripts"
        );
    }
    Ok(())
}

fn translate(k: KeyEvent) -> Option<Key> {
    if k.kind == KeyEventKind::Release {
        return None;
    }
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        return (k.code == KeyCode::Char('c')).then_some(Key::CtrlC);
    }
    match k.code {
        KeyCode::Char(c) => Some(Key::Char(c)),
        KeyCode::Up => Some(Key::Up),
        KeyCode::Down => Some(Key::Down),
        KeyCode::Esc => Some(Key::Esc),
        _ => None,
    }
}

async fn ask(socket: &Path, req: &Request) -> anyhow::Result<control::Response> {
    tokio::time::timeout(REQUEST_TIMEOUT, control::request(socket, req))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the daemon did not answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            )
        })?
}

async fn refresh(model: &mut Model, socket: &Path) {
    match ask(socket, &Request::Status).await {
        Ok(control::Response {
            status: Some(status),
            ..
        }) => model.update(status),
        Ok(_) => model.unreachable("the daemon answered without a status".into()),
        Err(e) => model.unreachable(format!("{e:#}")),
    }
}

fn done(req: &Request) -> String {
    match req {
        Request::Restart { server } => format!("restarting {server}"),
        Request::Stop { server } => format!("stopping {server}"),
        Request::Start { server } => format!("starting {server}"),
        Request::Reload => "reloading the config".to_owned(),
        Request::Instance {
            server, project, ..
        } => format!("{server} in {}", project.display()),
        Request::Status => String::new(),
    }
}

/// The selected server's last log lines, or one line saying why there are none.
fn read_log(model: &Model) -> Vec<String> {
    let LogSource::File { path, server } = model.log_source() else {
        return Vec::new();
    };
    match tail(&path, LOG_TAIL_BYTES) {
        Ok(text) => model::server_lines(&text, &server, LOG_LINES),
        Err(e) => vec![format!("cannot read {}: {e}", path.display())],
    }
}

/// The last `max` bytes of a file, from the first whole line on.
fn tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(max).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(match (start > 0, text.find('\n')) {
        (true, Some(i)) => text[i + 1..].to_owned(),
        _ => text.into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_starts_at_a_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "first line\nsecond line\nthird\n").unwrap();
        assert_eq!(
            tail(&path, 1000).unwrap(),
            "first line\nsecond line\nthird\n"
        );
        assert_eq!(tail(&path, 15).unwrap(), "third\n");
        assert!(tail(&dir.path().join("missing"), 10).is_err());
    }

    #[test]
    fn keys_translate_with_case_and_ctrl_c() {
        let k = |code, m| translate(KeyEvent::new(code, m));
        assert_eq!(
            k(KeyCode::Char('S'), KeyModifiers::SHIFT),
            Some(Key::Char('S'))
        );
        assert_eq!(
            k(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::CtrlC)
        );
        assert_eq!(k(KeyCode::Char('r'), KeyModifiers::CONTROL), None);
        assert_eq!(k(KeyCode::Up, KeyModifiers::NONE), Some(Key::Up));
        assert_eq!(k(KeyCode::Enter, KeyModifiers::NONE), None);
    }
}
