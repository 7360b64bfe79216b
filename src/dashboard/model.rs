//! The dashboard's view model: the last status snapshot and the selection in, rows, labels,
//! enabled actions and the meaning of each key out.
//!
//! It is pure: no I/O, no clocks, no terminal. The event loop ([`super`]) feeds it snapshots
//! and keys and carries out the [`Effect`]s it returns; the renderer ([`super::ui`]) only
//! draws what it says. That is what lets every state be unit-tested without a terminal.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::PathBuf;

use crate::daemon::control::Request;
use crate::daemon::logfile;
use crate::daemon::{DaemonStatus, ServerReport};
use crate::status::table::human_duration;
use crate::status::ServerState;

/// The column titles of the server table, in order (the same as `rmcp-mux status`).
pub use crate::status::table::COLUMNS;

/// What the log view says when the daemon has no log file to tail.
pub const NO_LOG_FILE: &str =
    "this daemon logs to its terminal; run it with `rmcp-mux daemon start` to get a log file";

/// What the header and footer say while the control socket does not answer.
pub const UNREACHABLE: &str = "daemon not reachable";

/// A key press, reduced to what the dashboard distinguishes (the loop translates terminal
/// events into these, so the model needs no terminal crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character, case kept (`s` stops, `S` starts).
    Char(char),
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
    /// Escape.
    Esc,
    /// Ctrl-C: raw mode turns it into a key, so it must quit like `q`.
    CtrlC,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Select the previous server.
    Up,
    /// Select the next server.
    Down,
    /// Restart the selected server.
    Restart,
    /// Stop the selected server.
    Stop,
    /// Start the selected server.
    Start,
    /// Tail the selected server's log.
    OpenLog,
    /// Back from the log to the table.
    CloseLog,
    /// Leave the dashboard.
    Quit,
}

/// Which screen is showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The server table.
    Table,
    /// The selected server's log lines.
    Log,
}

/// Maps a key to its action in `view`; `None` for keys that mean nothing there.
pub fn action_for(key: Key, view: View) -> Option<Action> {
    match (view, key) {
        (_, Key::CtrlC | Key::Char('q')) => Some(Action::Quit),
        (_, Key::Char('j') | Key::Down) => Some(Action::Down),
        (_, Key::Char('k') | Key::Up) => Some(Action::Up),
        (View::Table, Key::Esc) => Some(Action::Quit),
        (View::Table, Key::Char('r')) => Some(Action::Restart),
        (View::Table, Key::Char('s')) => Some(Action::Stop),
        (View::Table, Key::Char('S')) => Some(Action::Start),
        (View::Table, Key::Char('l')) => Some(Action::OpenLog),
        (View::Log, Key::Esc | Key::Char('l')) => Some(Action::CloseLog),
        _ => None,
    }
}

/// Which of restart, stop and start make sense for a server in a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enabled {
    /// Restart: always (it also clears `failed` and starts a stopped server).
    pub restart: bool,
    /// Stop: while a child runs or is about to.
    pub stop: bool,
    /// Start: while no child runs and none is being started.
    pub start: bool,
}

/// The actions that do something for a server in `state` (the router ignores the others).
pub fn enabled(state: ServerState) -> Enabled {
    use ServerState::*;
    Enabled {
        restart: true,
        stop: matches!(state, Lazy | Starting | Running | Backoff),
        start: matches!(state, Lazy | Backoff | Stopped | Failed),
    }
}

/// The actions that do something for `server`: those of its state, and none for a server
/// removed from the config (it only lingers for its clients; the daemon refuses them).
pub fn enabled_for(server: &ServerReport) -> Enabled {
    if server.removed {
        return Enabled {
            restart: false,
            stop: false,
            start: false,
        };
    }
    enabled(server.state)
}

/// What the loop must do after [`Model::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing but drawing again.
    Redraw,
    /// Send this request, report its outcome with [`Model::action_done`], then refresh.
    Send(Request),
    /// Read the log (see [`Model::log_source`]) and draw it.
    ShowLog,
    /// Leave the dashboard.
    Quit,
}

/// Whether the control socket answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No answer yet.
    Connecting,
    /// The last request was answered.
    Up,
    /// The last request failed with this error; the loop keeps retrying.
    Down(String),
}

/// A one-line note in the footer: the outcome of the last key action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The text.
    pub text: String,
    /// Whether it reports a failure (drawn in red).
    pub error: bool,
}

/// One server's line in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The cells, in [`COLUMNS`] order.
    pub cells: [String; 9],
    /// The state, for colouring.
    pub state: ServerState,
    /// A server removed from the config that lingers for its clients (drawn dimmed).
    pub removed: bool,
    /// Whether this is the selected server.
    pub selected: bool,
}

/// One entry of the key help in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHint {
    /// The key(s), as typed.
    pub key: &'static str,
    /// What it does.
    pub label: &'static str,
    /// Whether it does anything for the selected server now (disabled ones are dimmed).
    pub enabled: bool,
}

/// Where the log view reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// Tail this file, keeping the lines of this server.
    File {
        /// The daemon's log file.
        path: PathBuf,
        /// The selected server.
        server: String,
    },
    /// The daemon has no log file: show [`NO_LOG_FILE`].
    None,
    /// No server to show a log for.
    NoServer,
}

/// Everything the dashboard shows, minus the log text itself.
#[derive(Debug, Clone)]
pub struct Model {
    status: Option<DaemonStatus>,
    connection: Connection,
    /// The selected server by name and whether it is a removed one (a removed server and a
    /// new one of the same name can both be listed).
    selected: Option<(String, bool)>,
    view: View,
    note: Option<Note>,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    /// A model with no status yet.
    pub fn new() -> Model {
        Model {
            status: None,
            connection: Connection::Connecting,
            selected: None,
            view: View::Table,
            note: None,
        }
    }

    /// Takes a fresh snapshot. The selection stays on the same server by name; when that
    /// server is gone (a reload removed it) it moves to the one now at its place.
    pub fn update(&mut self, status: DaemonStatus) {
        let old_index = self.selected_index().unwrap_or(0);
        let keep = self
            .selected
            .as_ref()
            .is_some_and(|key| status.servers.iter().any(|s| is(s, key)));
        if !keep {
            self.selected = status
                .servers
                .get(old_index.min(status.servers.len().saturating_sub(1)))
                .map(key);
        }
        self.status = Some(status);
        self.connection = Connection::Up;
    }

    /// Records that the control socket did not answer; the last snapshot stays, marked stale.
    pub fn unreachable(&mut self, error: String) {
        self.connection = Connection::Down(error);
    }

    /// The outcome of a request sent for [`Effect::Send`]: `Ok` with what was done, or the
    /// daemon's error.
    pub fn action_done(&mut self, outcome: Result<String, String>) {
        self.note = Some(match outcome {
            Ok(text) => Note { text, error: false },
            Err(text) => Note { text, error: true },
        });
    }

    /// Carries out `action` on the model and says what the loop must do.
    pub fn apply(&mut self, action: Action) -> Effect {
        match action {
            Action::Quit => Effect::Quit,
            Action::Up | Action::Down => {
                self.step(if action == Action::Up { -1 } else { 1 });
                if self.view == View::Log {
                    Effect::ShowLog
                } else {
                    Effect::Redraw
                }
            }
            Action::OpenLog => {
                self.view = View::Log;
                Effect::ShowLog
            }
            Action::CloseLog => {
                self.view = View::Table;
                Effect::Redraw
            }
            Action::Restart | Action::Stop | Action::Start => self.control(action),
        }
    }

    fn control(&mut self, action: Action) -> Effect {
        if self.connection != Connection::Up {
            self.note = Some(Note {
                text: format!("{UNREACHABLE}: nothing was sent"),
                error: true,
            });
            return Effect::Redraw;
        }
        let Some(server) = self.selected_server() else {
            self.note = Some(Note {
                text: "no server selected".into(),
                error: true,
            });
            return Effect::Redraw;
        };
        let name = server.name.clone();
        let can = enabled_for(server);
        let state = if server.removed {
            "removed from the config"
        } else {
            server.state.as_str()
        };
        let (ok, request) = match action {
            Action::Restart => (
                can.restart,
                Request::Restart {
                    server: name.clone(),
                },
            ),
            Action::Stop => (
                can.stop,
                Request::Stop {
                    server: name.clone(),
                },
            ),
            _ => (
                can.start,
                Request::Start {
                    server: name.clone(),
                },
            ),
        };
        if !ok {
            self.note = Some(Note {
                text: format!("{name} is {state}: nothing to {}", verb(action)),
                error: true,
            });
            return Effect::Redraw;
        }
        self.note = Some(Note {
            text: format!("{} {name}…", progressive(action)),
            error: false,
        });
        Effect::Send(request)
    }

    fn step(&mut self, by: isize) {
        let Some(status) = &self.status else { return };
        if status.servers.is_empty() {
            return;
        }
        let last = status.servers.len() - 1;
        let i = self.selected_index().unwrap_or(0);
        let next = if by < 0 {
            i.saturating_sub(1)
        } else {
            (i + 1).min(last)
        };
        self.selected = Some(key(&status.servers[next]));
    }

    /// The screen showing.
    pub fn view(&self) -> View {
        self.view
    }

    /// The control socket's state.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The last snapshot, if any.
    pub fn status(&self) -> Option<&DaemonStatus> {
        self.status.as_ref()
    }

    /// The selected row's index.
    pub fn selected_index(&self) -> Option<usize> {
        let (status, selected) = (self.status.as_ref()?, self.selected.as_ref()?);
        status.servers.iter().position(|s| is(s, selected))
    }

    /// The selected server's report.
    pub fn selected_server(&self) -> Option<&ServerReport> {
        let i = self.selected_index()?;
        self.status.as_ref()?.servers.get(i)
    }

    /// Whether the rows come from an older snapshot than the daemon's current state.
    pub fn stale(&self) -> bool {
        matches!(self.connection, Connection::Down(_))
    }

    /// The table's rows, in config order; a server shared per project or per client is
    /// followed by a row per instance (never selected: commands act on the server).
    pub fn rows(&self) -> Vec<Row> {
        let Some(status) = &self.status else {
            return vec![];
        };
        let selected = self.selected_index();
        let mut rows = Vec::with_capacity(status.servers.len());
        for (i, s) in status.servers.iter().enumerate() {
            rows.push(Row {
                cells: crate::status::table::cells(s),
                state: s.state,
                removed: s.removed,
                selected: selected == Some(i),
            });
            rows.extend(s.instances.iter().map(|inst| Row {
                cells: crate::status::table::instance_cells(inst),
                state: inst.state,
                removed: false,
                selected: false,
            }));
        }
        rows
    }

    /// The header line: who the daemon is, or that it does not answer.
    pub fn header(&self) -> String {
        let daemon = self.status.as_ref().map(|s| {
            format!(
                "rmcp-mux {} · pid {} · up {} · {}",
                s.version,
                s.pid,
                human_duration(s.uptime_ms),
                s.config.display()
            )
        });
        match (&self.connection, daemon) {
            (Connection::Up, Some(d)) => d,
            (Connection::Down(_), Some(d)) => format!("{UNREACHABLE} (retrying) · last seen: {d}"),
            (Connection::Down(_), None) => format!("{UNREACHABLE} (retrying)"),
            (_, _) => "connecting to the daemon…".into(),
        }
    }

    /// The config error the daemon reports (a refused reload), to show prominently.
    pub fn config_error(&self) -> Option<&str> {
        self.status.as_ref()?.config_error.as_deref()
    }

    /// The footer's message line: the connection error first, else the last action's note.
    pub fn message(&self) -> Option<Note> {
        if let Connection::Down(e) = &self.connection {
            return Some(Note {
                text: format!("{UNREACHABLE}: {e}"),
                error: true,
            });
        }
        self.note.clone()
    }

    /// The key help for the current view; actions that do nothing for the selected server
    /// are marked disabled.
    pub fn keys(&self) -> Vec<KeyHint> {
        let hint = |key, label, enabled| KeyHint {
            key,
            label,
            enabled,
        };
        match self.view {
            View::Log => vec![
                hint("j/k ↑/↓", "server", true),
                hint("l/Esc", "back", true),
                hint("q", "quit", true),
            ],
            View::Table => {
                let reachable = self.connection == Connection::Up;
                let can = self
                    .selected_server()
                    .filter(|_| reachable)
                    .map(enabled_for);
                vec![
                    hint("j/k ↑/↓", "move", true),
                    hint("r", "restart", can.is_some_and(|c| c.restart)),
                    hint("s", "stop", can.is_some_and(|c| c.stop)),
                    hint("S", "start", can.is_some_and(|c| c.start)),
                    hint("l", "log", self.selected_server().is_some()),
                    hint("q/Esc", "quit", true),
                ]
            }
        }
    }

    /// Where the log view reads the selected server's lines from.
    pub fn log_source(&self) -> LogSource {
        let Some(server) = self.selected_server() else {
            return LogSource::NoServer;
        };
        match self.status.as_ref().and_then(|s| s.log_file.clone()) {
            Some(path) => LogSource::File {
                path,
                server: server.name.clone(),
            },
            None => LogSource::None,
        }
    }
}

/// What the selection remembers of a server.
fn key(s: &ServerReport) -> (String, bool) {
    (s.name.clone(), s.removed)
}

/// Whether `s` is the server the selection remembers.
fn is(s: &ServerReport, key: &(String, bool)) -> bool {
    s.name == key.0 && s.removed == key.1
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Restart => "restart",
        Action::Stop => "stop",
        _ => "start",
    }
}

fn progressive(action: Action) -> &'static str {
    match action {
        Action::Restart => "restarting",
        Action::Stop => "stopping",
        _ => "starting",
    }
}

/// `line` without terminal colour codes (`ESC [ … letter`): a log written for a terminal
/// has them inside the span names, and they would garble the screen.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The last `max` lines of `text` that belong to `server`, oldest first, without colour
/// codes. A first line cut in half by the tail read is dropped by the caller, not here.
pub fn server_lines(text: &str, server: &str, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .rev()
        .map(strip_ansi)
        .filter(|l| logfile::line_is_for(l, server))
        .take(max)
        .collect();
    lines.reverse();
    lines
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;

    fn report(name: &str, state: ServerState) -> ServerReport {
        let running = state == ServerState::Running;
        ServerReport {
            pid: running.then_some(4242),
            clients: 1,
            pending: 2,
            restarts: 3,
            uptime_ms: running.then_some(61_000),
            last_exit: (!running).then(|| "exited with status 1".into()),
            ..crate::daemon::fixtures::report(name, state)
        }
    }

    fn status(servers: Vec<ServerReport>) -> DaemonStatus {
        DaemonStatus {
            uptime_ms: 3_600_000,
            ..crate::daemon::fixtures::status(servers)
        }
    }

    fn two() -> Model {
        let mut m = Model::new();
        m.update(status(vec![
            report("memory", ServerState::Running),
            report("time", ServerState::Stopped),
        ]));
        m
    }

    const ALL: [ServerState; 6] = [
        ServerState::Lazy,
        ServerState::Starting,
        ServerState::Running,
        ServerState::Backoff,
        ServerState::Stopped,
        ServerState::Failed,
    ];

    #[test]
    fn keys_map_to_actions_in_the_table() {
        let t = View::Table;
        assert_eq!(action_for(Key::Char('j'), t), Some(Action::Down));
        assert_eq!(action_for(Key::Down, t), Some(Action::Down));
        assert_eq!(action_for(Key::Char('k'), t), Some(Action::Up));
        assert_eq!(action_for(Key::Up, t), Some(Action::Up));
        assert_eq!(action_for(Key::Char('r'), t), Some(Action::Restart));
        assert_eq!(action_for(Key::Char('s'), t), Some(Action::Stop));
        assert_eq!(action_for(Key::Char('S'), t), Some(Action::Start));
        assert_eq!(action_for(Key::Char('l'), t), Some(Action::OpenLog));
        assert_eq!(action_for(Key::Char('q'), t), Some(Action::Quit));
        assert_eq!(action_for(Key::Esc, t), Some(Action::Quit));
        assert_eq!(action_for(Key::CtrlC, t), Some(Action::Quit));
        assert_eq!(action_for(Key::Char('x'), t), None);
        assert_eq!(action_for(Key::Char('R'), t), None);
    }

    #[test]
    fn esc_closes_the_log_instead_of_quitting() {
        let l = View::Log;
        assert_eq!(action_for(Key::Esc, l), Some(Action::CloseLog));
        assert_eq!(action_for(Key::Char('l'), l), Some(Action::CloseLog));
        assert_eq!(action_for(Key::Char('q'), l), Some(Action::Quit));
        assert_eq!(action_for(Key::Char('j'), l), Some(Action::Down));
        // No control actions from the log view: the table shows their outcome.
        assert_eq!(action_for(Key::Char('r'), l), None);
        assert_eq!(action_for(Key::Char('s'), l), None);
    }

    #[test]
    fn enabled_actions_for_every_state() {
        let expect = |state, stop, start| {
            assert_eq!(
                enabled(state),
                Enabled {
                    restart: true,
                    stop,
                    start
                },
                "{state:?}"
            );
        };
        expect(ServerState::Lazy, true, true);
        expect(ServerState::Starting, true, false);
        expect(ServerState::Running, true, false);
        expect(ServerState::Backoff, true, true);
        expect(ServerState::Stopped, false, true);
        expect(ServerState::Failed, false, true);
    }

    #[test]
    fn key_hints_follow_the_selected_state() {
        for state in ALL {
            let mut m = Model::new();
            m.update(status(vec![report("a", state)]));
            let keys = m.keys();
            let on = |label: &str| keys.iter().find(|k| k.label == label).unwrap().enabled;
            let e = enabled(state);
            assert_eq!(
                (on("restart"), on("stop"), on("start")),
                (e.restart, e.stop, e.start),
                "{state:?}"
            );
            assert!(on("move") && on("quit") && on("log"));
        }
    }

    #[test]
    fn nothing_is_enabled_while_the_daemon_is_unreachable() {
        let mut m = two();
        m.unreachable("connection refused".into());
        let keys = m.keys();
        assert!(keys
            .iter()
            .filter(|k| ["restart", "stop", "start"].contains(&k.label))
            .all(|k| !k.enabled));
        // And the keys do nothing: the snapshot they would act on is stale.
        assert_eq!(m.apply(Action::Restart), Effect::Redraw);
        m.update(status(vec![report("memory", ServerState::Running)]));
        assert_eq!(
            m.message().unwrap().text,
            "daemon not reachable: nothing was sent"
        );
    }

    #[test]
    fn instances_follow_their_server_and_are_never_selected() {
        let mut m = Model::new();
        let browser = ServerReport {
            share: crate::config::Share::Client,
            instances: vec![crate::daemon::InstanceReport {
                key: "client 1".into(),
                project: None,
                pid: Some(77),
                state: ServerState::Running,
                clients: 1,
                pending: 0,
                restarts: 0,
                uptime_ms: Some(1_000),
                rss_bytes: None,
            }],
            ..report("browser", ServerState::Running)
        };
        m.update(status(vec![browser, report("time", ServerState::Running)]));
        let rows = m.rows();
        let names: Vec<&str> = rows.iter().map(|r| r.cells[0].as_str()).collect();
        assert_eq!(names, ["browser", "  └ client 1", "time"]);
        assert_eq!(rows[0].cells[1], "per client · 1 running");
        assert_eq!(rows[1].cells[6], "77");
        m.apply(Action::Down);
        let selected: Vec<bool> = m.rows().iter().map(|r| r.selected).collect();
        assert_eq!(
            selected,
            [false, false, true],
            "down skips the instance row"
        );
    }

    #[test]
    fn rows_carry_every_column_and_the_selection() {
        let m = two();
        let rows = m.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].cells,
            ["memory", "running", "1/64", "2", "3", "1m 1s", "4242", "-", "-"].map(String::from)
        );
        assert_eq!(rows[1].cells[1], "stopped");
        assert_eq!(rows[1].cells[5], "-");
        assert_eq!(rows[1].cells[6], "-");
        assert_eq!(rows[1].cells[8], "exited with status 1");
        assert!(rows[0].selected && !rows[1].selected);
    }

    #[test]
    fn moving_stays_within_the_list() {
        let mut m = two();
        assert_eq!(m.apply(Action::Up), Effect::Redraw);
        assert_eq!(m.selected_index(), Some(0));
        m.apply(Action::Down);
        assert_eq!(m.selected_index(), Some(1));
        m.apply(Action::Down);
        assert_eq!(m.selected_index(), Some(1));
        m.apply(Action::Up);
        assert_eq!(m.selected_index(), Some(0));
    }

    #[test]
    fn selection_follows_the_name_across_snapshots() {
        let mut m = two();
        m.apply(Action::Down);
        // A reload put a new server first: still on `time`.
        m.update(status(vec![
            report("new", ServerState::Lazy),
            report("memory", ServerState::Running),
            report("time", ServerState::Stopped),
        ]));
        assert_eq!(m.selected_server().unwrap().name, "time");
        // `time` removed: the selection falls on what is now at its place, or the last.
        m.update(status(vec![
            report("new", ServerState::Lazy),
            report("memory", ServerState::Running),
        ]));
        assert_eq!(m.selected_server().unwrap().name, "memory");
        m.update(status(vec![]));
        assert_eq!(m.selected_server(), None);
        assert_eq!(m.apply(Action::Down), Effect::Redraw);
        m.update(status(vec![report("x", ServerState::Lazy)]));
        assert_eq!(m.selected_server().unwrap().name, "x");
    }

    #[test]
    fn control_keys_send_requests_for_the_selected_server() {
        let mut m = two();
        assert_eq!(
            m.apply(Action::Restart),
            Effect::Send(Request::Restart {
                server: "memory".into()
            })
        );
        assert_eq!(m.message().unwrap().text, "restarting memory…");
        assert_eq!(
            m.apply(Action::Stop),
            Effect::Send(Request::Stop {
                server: "memory".into()
            })
        );
        m.apply(Action::Down);
        assert_eq!(
            m.apply(Action::Start),
            Effect::Send(Request::Start {
                server: "time".into()
            })
        );
    }

    #[test]
    fn disabled_actions_send_nothing_and_say_why() {
        let mut m = two();
        assert_eq!(m.apply(Action::Start), Effect::Redraw);
        let note = m.message().unwrap();
        assert!(note.error);
        assert_eq!(note.text, "memory is running: nothing to start");
        m.apply(Action::Down);
        assert_eq!(m.apply(Action::Stop), Effect::Redraw);
        assert_eq!(
            m.message().unwrap().text,
            "time is stopped: nothing to stop"
        );
    }

    #[test]
    fn a_removed_server_is_listed_dimmed_and_offers_no_action() {
        let mut m = Model::new();
        let old = ServerReport {
            removed: true,
            pid: None,
            uptime_ms: None,
            ..report("memory", ServerState::Stopped)
        };
        // A new server of the same name may run beside it (a share change, say).
        m.update(status(vec![
            report("memory", ServerState::Running),
            old.clone(),
        ]));
        let rows = m.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].cells[0], "memory");
        assert_eq!(rows[1].cells[1], "removed");
        assert_eq!(rows[1].cells[2], "1/64", "its clients are counted");
        assert!(rows[1].removed && !rows[0].removed);
        m.apply(Action::Down);
        assert_eq!(
            m.selected_index(),
            Some(1),
            "the removed row can be selected"
        );
        assert!(m.selected_server().unwrap().removed);
        let keys = m.keys();
        let on = |label: &str| keys.iter().find(|k| k.label == label).unwrap().enabled;
        assert!(!on("restart") && !on("stop") && !on("start"));
        assert!(on("log"), "its log still reads");
        for action in [Action::Restart, Action::Stop, Action::Start] {
            assert_eq!(m.apply(action), Effect::Redraw, "{action:?}: nothing sent");
            let note = m.message().unwrap();
            assert!(note.error, "{note:?}");
        }
        assert_eq!(
            m.message().unwrap().text,
            "memory is removed from the config: nothing to start"
        );
        // The selection stays on the removed one across snapshots, then moves when it goes.
        m.update(status(vec![report("memory", ServerState::Running), old]));
        assert!(m.selected_server().unwrap().removed);
        m.update(status(vec![report("memory", ServerState::Running)]));
        assert_eq!(m.selected_index(), Some(0));
        assert!(!m.selected_server().unwrap().removed);
        assert_eq!(
            m.apply(Action::Restart),
            Effect::Send(Request::Restart {
                server: "memory".into()
            })
        );
    }

    #[test]
    fn actions_without_a_server_say_so() {
        let mut m = Model::new();
        m.update(status(vec![]));
        assert_eq!(m.apply(Action::Restart), Effect::Redraw);
        assert_eq!(m.message().unwrap().text, "no server selected");
        assert_eq!(m.apply(Action::Quit), Effect::Quit);
    }

    #[test]
    fn action_outcomes_show_in_the_footer() {
        let mut m = two();
        m.action_done(Err("unknown server `x`".into()));
        assert_eq!(
            m.message(),
            Some(Note {
                text: "unknown server `x`".into(),
                error: true
            })
        );
        m.action_done(Ok("restarting memory".into()));
        assert!(!m.message().unwrap().error);
    }

    #[test]
    fn header_names_the_daemon_or_says_it_is_gone() {
        let mut m = Model::new();
        assert_eq!(m.header(), "connecting to the daemon…");
        m.unreachable("no daemon".into());
        assert_eq!(m.header(), "daemon not reachable (retrying)");
        assert_eq!(m.message().unwrap().text, "daemon not reachable: no daemon");
        let mut m = two();
        assert_eq!(
            m.header(),
            "rmcp-mux 0.4.0 · pid 7 · up 1h 0m · /c/mux.toml"
        );
        assert!(!m.stale());
        m.unreachable("refused".into());
        assert!(m.stale());
        assert!(m
            .header()
            .starts_with("daemon not reachable (retrying) · last seen: rmcp-mux"));
        // The rows stay (dimmed by the renderer) so the user still sees the last state.
        assert_eq!(m.rows().len(), 2);
        m.update(status(vec![]));
        assert!(!m.stale());
    }

    #[test]
    fn config_error_comes_from_the_status() {
        let mut m = two();
        assert_eq!(m.config_error(), None);
        let mut s = status(vec![]);
        s.config_error = Some("mux.toml line 3: unknown key `cmdd`".into());
        m.update(s);
        assert_eq!(
            m.config_error(),
            Some("mux.toml line 3: unknown key `cmdd`")
        );
    }

    #[test]
    fn log_view_opens_and_closes_and_follows_the_selection() {
        let mut m = two();
        assert_eq!(m.apply(Action::OpenLog), Effect::ShowLog);
        assert_eq!(m.view(), View::Log);
        assert_eq!(m.keys()[1].label, "back");
        assert_eq!(m.apply(Action::Down), Effect::ShowLog);
        assert_eq!(m.apply(Action::CloseLog), Effect::Redraw);
        assert_eq!(m.view(), View::Table);
    }

    #[test]
    fn log_source_is_the_daemons_file() {
        let mut m = two();
        assert_eq!(m.log_source(), LogSource::None);
        assert_eq!(Model::new().log_source(), LogSource::NoServer);
        let mut s = status(vec![report("memory", ServerState::Running)]);
        s.log_file = Some("/d/rmcp-mux.log".into());
        m.update(s);
        assert_eq!(
            m.log_source(),
            LogSource::File {
                path: "/d/rmcp-mux.log".into(),
                server: "memory".into()
            }
        );
    }

    #[test]
    fn log_lines_are_picked_by_server_name() {
        let text = "\
2026-01-01T00:00:00Z  INFO rmcp_mux::daemon: listening server=memory socket=/s/memory.sock
2026-01-01T00:00:00Z  INFO rmcp_mux::daemon: listening server=memory-2 socket=/s/m2.sock
2026-01-01T00:00:01Z  INFO server{name=memory}: rmcp_mux::mux::actor: child started pid=1
2026-01-01T00:00:01Z  INFO server{name=memory-2}: rmcp_mux::mux::actor: child started pid=2
2026-01-01T00:00:02Z  WARN server{name=memory}:child{pid=1}: child_stderr: boom
2026-01-01T00:00:03Z  INFO server{name=time}:client{id=1}: rmcp_mux::mux::actor: connected
2026-01-01T00:00:03Z  INFO rmcp_mux::daemon: rmcp-mux ready servers=2";
        let memory = server_lines(text, "memory", 10);
        assert_eq!(memory.len(), 3, "{memory:#?}");
        assert!(memory[0].contains("listening server=memory "));
        assert!(memory[2].ends_with("boom"));
        assert_eq!(server_lines(text, "memory", 1), vec![memory[2].clone()]);
        assert_eq!(server_lines(text, "memory-2", 10).len(), 2);
        assert_eq!(server_lines(text, "time", 10).len(), 1);
        assert!(server_lines(text, "mem", 10).is_empty());
    }

    #[test]
    fn colour_codes_are_stripped_before_matching() {
        let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[1mserver\u{1b}[0m{\u{1b}[3mname\u{1b}[0m\u{1b}[2m=\u{1b}[0mmemory}\u{1b}[2m:\u{1b}[0m started";
        assert_eq!(strip_ansi(coloured), " INFO server{name=memory}: started");
        assert_eq!(
            server_lines(coloured, "memory", 5),
            vec![" INFO server{name=memory}: started".to_owned()]
        );
        assert_eq!(strip_ansi("plain \u{1b}"), "plain ");
    }
}
