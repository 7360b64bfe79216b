//! The menu-bar app's menu as data: a pure function of one [`DaemonStatus`] snapshot (plus the
//! launch-at-login state) to the items, labels, enabled flags, icon state and tooltip the app
//! renders, and the fixed menu ids its clicks come back with.
//!
//! It owns every word the menu shows and every "does this action make sense now" decision, so
//! they are unit-tested without a display. It must not touch the GUI crates, read clocks, start
//! processes or do I/O (clippy enforces the last three).

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::config::Share;
use crate::daemon::{DaemonStatus, ServerReport};
use crate::status::table::human_bytes;
use crate::status::{Command, ServerState};

/// The aggregate state the tray icon shows; one icon per variant in `public/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IconState {
    /// Every server runs (or waits for its first client, or was stopped on purpose).
    Running,
    /// Something is starting or waiting to restart after a crash.
    Busy,
    /// Some server gave up after its restart limit and needs the user.
    Failed,
    /// Every server is stopped (or there are none).
    Stopped,
}

impl IconState {
    /// The stem of the icon files in `public/` (`tray-running.png`, `tray-running@2x.png`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            IconState::Running => "running",
            IconState::Busy => "busy",
            IconState::Failed => "failed",
            IconState::Stopped => "stopped",
        }
    }
}

/// Whether launch at login is on, as read from disk, or unavailable on this system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The LaunchAgent / autostart entry exists.
    On,
    /// It does not.
    Off,
    /// It cannot be read or written here; the item is shown disabled.
    Unavailable,
}

/// One menu action with whether it makes sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The fixed menu id the click comes back with (see [`Action::parse`]).
    pub id: String,
    /// What the item says.
    pub label: String,
    /// Whether it can be clicked.
    pub enabled: bool,
}

/// One server's entry: a submenu with a status line and Restart / Stop / Start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// The server's name.
    pub name: String,
    /// The submenu id (`server:NAME`).
    pub id: String,
    /// The live label, "memory — running (2 clients)".
    pub label: String,
    /// A label that changes only when the server fails or recovers ("memory", "memory — failed"),
    /// for tray hosts that cannot relabel a submenu in place (see `app.rs`).
    pub steady_label: String,
    /// The first, disabled item inside the submenu: the state in words, with the last exit
    /// reason of a server that crashed ("failed · last exit: exited with status 1").
    pub status: Item,
    /// Its memory, disabled: "Memory: 48 MB" (all its instances' together).
    pub memory: Item,
    /// Its sharing scope in words, disabled: "Shared: one process for all clients".
    pub sharing: Item,
    /// Who uses it, disabled: "Clients: Cursor, Claude Code" by the names the clients gave.
    pub users: Item,
    /// Restart (also clears a failed state).
    pub restart: Item,
    /// Stop.
    pub stop: Item,
    /// Start.
    pub start: Item,
    /// Put the JSON entry a host needs to reach it (through `rmcp-mux-proxy`) on the clipboard,
    /// for hosts `rewire` does not know.
    pub copy_entry: Item,
    /// The instances of a server shared per project or per client, each a submenu.
    pub instances: Vec<InstanceEntry>,
    /// Removed from the config, listed only while clients keep it: the app shows its status
    /// lines and no actions (its ids parse to none, so they never collide with a new server
    /// of the same name).
    pub removed: bool,
}

/// One instance of a server shared per project or per client: a submenu with its state and
/// Restart / Stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEntry {
    /// Its key: the project folder, `no project`, or `client N`.
    pub key: String,
    /// The submenu id (`instance:NAME:KEY`).
    pub id: String,
    /// The submenu's label: the key alone, which never changes (tray hosts that cannot
    /// relabel a submenu show it right); the state is the first item inside.
    pub label: String,
    /// Its state in words, a disabled item.
    pub status: Item,
    /// Restart this instance.
    pub restart: Item,
    /// Stop this instance.
    pub stop: Item,
}

/// One host in the Hosts submenu: a submenu with Connect, Restore and Open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The host's command-line name.
    pub name: String,
    /// The submenu id (`host:NAME`).
    pub id: String,
    /// "Cursor — 4 of 5 servers through rmcp-mux", or "Cursor — cannot read its config".
    pub label: String,
    /// Point its entries at the mux (as `rmcp-mux rewire`), after a confirmation.
    pub connect: Item,
    /// Put back what Connect changed (as `rmcp-mux unwire`).
    pub restore: Item,
    /// Open its config file.
    pub open: Item,
}

/// What the menu shows about the hosts, read from their files by the app (`tray::hosts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsView {
    /// Whether to offer "Set up from your apps…".
    pub setup: bool,
    /// The hosts found, in [`crate::hosts::Host::ALL`]'s order.
    pub hosts: Vec<crate::hosts::connect::HostState>,
}

/// Everything the tray shows for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayModel {
    /// Which icon to show.
    pub icon: IconState,
    /// "rmcp-mux: 2 of 3 servers running".
    pub tooltip: String,
    /// The same count as a disabled first item, for tray hosts that show no tooltip.
    pub summary: Item,
    /// Why the last config reload was refused, shown as a disabled item at the top.
    pub config_error: Option<Item>,
    /// "Set up from your apps…", first in the menu while the config is the untouched template
    /// and some host has servers to import.
    pub setup: Option<Item>,
    /// One entry per server, in config order.
    pub servers: Vec<ServerEntry>,
    /// The Hosts submenu: one entry per host found on this machine.
    pub hosts: Vec<HostEntry>,
    /// The Hosts submenu's only item when no host was found, disabled.
    pub no_hosts: Option<Item>,
    /// Restart every server that is not stopped.
    pub restart_all: Item,
    /// Open the config file in the user's editor.
    pub open_config: Item,
    /// Open the daemon's log file (enabled when it logs to one).
    pub open_logs: Item,
    /// The launch-at-login check item.
    pub login: Item,
    /// Whether the login item is checked.
    pub login_checked: bool,
    /// Stop every server and exit.
    pub quit: Item,
}

/// Menu ids of the fixed items.
pub mod ids {
    /// Restart every running server.
    pub const RESTART_ALL: &str = "restart-all";
    /// Open the config file.
    pub const OPEN_CONFIG: &str = "open-config";
    /// Open the log file.
    pub const OPEN_LOGS: &str = "open-logs";
    /// The launch-at-login check item.
    pub const LOGIN: &str = "login";
    /// Quit.
    pub const QUIT: &str = "quit";
    /// The config-error line.
    pub const CONFIG_ERROR: &str = "config-error";
    /// The summary line.
    pub const SUMMARY: &str = "summary";
    /// "Set up from your apps…".
    pub const SETUP: &str = "setup";
    /// The Hosts submenu.
    pub const HOSTS: &str = "hosts";
    /// The Hosts submenu's line when no host was found.
    pub const NO_HOSTS: &str = "hosts-none";
}

/// What a click on a menu id asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A command for one server.
    Server(String, Command),
    /// A command for one instance (server name, instance key) of a shared server.
    Instance(String, String, Command),
    /// Restart every server that is not stopped.
    RestartAll,
    /// Open the config file in the user's editor.
    OpenConfig,
    /// Open the log file.
    OpenLogs,
    /// Turn launch at login on or off.
    ToggleLogin,
    /// Put this server's host entry on the clipboard.
    CopyEntry(String),
    /// Import every host's servers into the new config and start them.
    Setup,
    /// Point a host (by its command-line name) at the mux, after a confirmation.
    HostConnect(String),
    /// Put back what Connect changed in a host's files.
    HostRestore(String),
    /// Open a host's config file.
    HostOpen(String),
    /// Stop everything and exit.
    Quit,
}

impl Action {
    /// The action of a menu id, or `None` for ids that do nothing (labels, submenus).
    pub fn parse(id: &str) -> Option<Action> {
        let server = |prefix: &str, cmd| {
            id.strip_prefix(prefix)
                .filter(|n| !n.is_empty())
                .map(|n| Action::Server(n.to_owned(), cmd))
        };
        let instance = |prefix: &str, cmd| {
            let (name, key) = id.strip_prefix(prefix)?.split_once(':')?;
            (!name.is_empty() && !key.is_empty())
                .then(|| Action::Instance(name.to_owned(), key.to_owned(), cmd))
        };
        if let Some(a) = instance("instance-restart:", Command::Restart)
            .or_else(|| instance("instance-stop:", Command::Stop))
        {
            return Some(a);
        }
        match id {
            ids::RESTART_ALL => Some(Action::RestartAll),
            ids::OPEN_CONFIG => Some(Action::OpenConfig),
            ids::OPEN_LOGS => Some(Action::OpenLogs),
            ids::LOGIN => Some(Action::ToggleLogin),
            ids::QUIT => Some(Action::Quit),
            ids::SETUP => Some(Action::Setup),
            _ if id.starts_with("host-") => {
                let host = |prefix: &str| {
                    id.strip_prefix(prefix)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                };
                host("host-connect:")
                    .map(Action::HostConnect)
                    .or_else(|| host("host-restore:").map(Action::HostRestore))
                    .or_else(|| host("host-open:").map(Action::HostOpen))
            }
            _ => server("restart:", Command::Restart)
                .or_else(|| server("stop:", Command::Stop))
                .or_else(|| server("start:", Command::Start))
                .or_else(|| {
                    id.strip_prefix("copy-entry:")
                        .filter(|n| !n.is_empty())
                        .map(|n| Action::CopyEntry(n.to_owned()))
                }),
        }
    }
}

/// The word a user reads for a state.
pub fn state_word(state: ServerState) -> &'static str {
    match state {
        ServerState::Lazy => "idle",
        ServerState::Starting => "starting",
        ServerState::Running => "running",
        ServerState::Backoff => "restarting",
        ServerState::Stopped => "stopped",
        ServerState::Failed => "failed",
    }
}

fn clients(n: usize) -> String {
    if n == 1 {
        "1 client".into()
    } else {
        format!("{n} clients")
    }
}

/// Whether the server's last child ended in a crash the user should see the reason of.
fn crashed(s: &ServerReport) -> bool {
    match s.state {
        ServerState::Backoff | ServerState::Failed => true,
        ServerState::Starting => s.restarts > 0,
        _ => false,
    }
}

fn entry(s: &ServerReport) -> ServerEntry {
    let word = if s.removed {
        "removed"
    } else {
        state_word(s.state)
    };
    let n = &s.name;
    let mut status = match s.state {
        _ if s.removed => {
            let mut words = "removed from the config".to_owned();
            if let Some(pid) = s.pid {
                words += &format!(" · stopping · pid {pid}");
            }
            match s.clients {
                0 => words,
                1 => words + " · kept until its 1 client disconnects",
                k => words + &format!(" · kept until its {k} clients disconnect"),
            }
        }
        _ if s.share != crate::config::Share::Global => {
            format!(
                "{} · {}",
                crate::status::table::state_cell(s),
                clients(s.clients)
            )
        }
        ServerState::Running => match s.pid {
            Some(pid) => format!("running · pid {pid} · {}", clients(s.clients)),
            None => format!("running · {}", clients(s.clients)),
        },
        ServerState::Lazy => "idle · starts on the first request".into(),
        ServerState::Failed => "failed · gave up restarting; Restart to try again".into(),
        _ => word.to_owned(),
    };
    if crashed(s) && !s.removed {
        if let Some(exit) = &s.last_exit {
            status = format!("{status} · last exit: {exit}");
        }
    }
    // Nothing to do to a removed server: it lingers for its clients, out of service.
    let restart = !s.removed
        && matches!(
            s.state,
            ServerState::Running
                | ServerState::Starting
                | ServerState::Backoff
                | ServerState::Failed
        );
    let stop = !s.removed
        && matches!(
            s.state,
            ServerState::Lazy | ServerState::Starting | ServerState::Running | ServerState::Backoff
        );
    let start = !s.removed
        && matches!(
            s.state,
            ServerState::Lazy | ServerState::Stopped | ServerState::Failed
        );
    // A removed server's ids parse to no action and differ from a new one's of its name.
    let id = |what: &str| {
        if s.removed {
            format!("removed-{what}:{n}")
        } else {
            format!("{what}:{n}")
        }
    };
    let item = |id: String, label: &str, enabled| Item {
        id,
        label: label.to_owned(),
        enabled,
    };
    let memory = match (s.rss_bytes, s.instances.len()) {
        (Some(rss), 0 | 1) => format!("Memory: {}", human_bytes(rss)),
        (Some(rss), k) => format!("Memory: {} in {k} instances", human_bytes(rss)),
        (None, _) => "Memory: not running".to_owned(),
    };
    let sharing = match s.share {
        Share::Global => "Shared: one process for all clients",
        Share::Project => "Shared: one process per project",
        Share::Client => "Shared: not shared, one process per client",
    };
    let users = match (s.client_names.as_slice(), s.clients) {
        ([], 0) => "Clients: none".to_owned(),
        ([], k) => format!("Clients: {k}, none named"),
        (names, _) => format!("Clients: {}", names.join(", ")),
    };
    ServerEntry {
        name: n.clone(),
        id: id("server"),
        label: format!("{n} — {word} ({})", clients(s.clients)),
        steady_label: if s.removed {
            format!("{n} — removed")
        } else if s.state == ServerState::Failed {
            format!("{n} — failed")
        } else {
            n.clone()
        },
        status: item(id("status"), &status, false),
        memory: item(id("memory"), &memory, false),
        sharing: item(id("sharing"), sharing, false),
        users: item(id("users"), &users, false),
        restart: item(id("restart"), "Restart", restart),
        stop: item(id("stop"), "Stop", stop),
        start: item(id("start"), "Start", start),
        // Its socket is gone: there is nothing for a host to reach.
        copy_entry: item(id("copy-entry"), "Copy host entry", !s.removed),
        removed: s.removed,
        instances: s
            .instances
            .iter()
            .map(|i| {
                let k = &i.key;
                let mut words = state_word(i.state).to_owned();
                if let Some(pid) = i.pid {
                    words += &format!(" · pid {pid}");
                }
                words += &format!(" · {}", clients(i.clients));
                if let Some(rss) = i.rss_bytes {
                    words += &format!(" · {}", human_bytes(rss));
                }
                let alive = !matches!(i.state, ServerState::Stopped);
                InstanceEntry {
                    key: k.clone(),
                    id: format!("instance:{n}:{k}"),
                    label: k.clone(),
                    status: item(format!("instance-status:{n}:{k}"), &words, false),
                    restart: item(format!("instance-restart:{n}:{k}"), "Restart", true),
                    stop: item(format!("instance-stop:{n}:{k}"), "Stop", alive),
                }
            })
            .collect(),
    }
}

/// The aggregate icon state of a set of servers: those of the config (a removed one
/// lingering for its clients is out of service, which is no news).
pub fn icon_state(servers: &[ServerReport]) -> IconState {
    let config = || servers.iter().filter(|s| !s.removed);
    let any = |f: fn(ServerState) -> bool| config().any(|s| f(s.state));
    if any(|s| s == ServerState::Failed) {
        IconState::Failed
    } else if any(|s| matches!(s, ServerState::Starting | ServerState::Backoff)) {
        IconState::Busy
    } else if config().all(|s| s.state == ServerState::Stopped) {
        IconState::Stopped
    } else {
        IconState::Running
    }
}

/// Builds the whole menu for one snapshot, with no hosts.
pub fn build(status: &DaemonStatus, login: Login) -> TrayModel {
    build_with(status, login, &HostsView::default())
}

/// "4 of 5 servers" with the noun agreeing with the total.
fn of_servers(through: usize, total: usize) -> String {
    format!(
        "{through} of {total} server{}",
        if total == 1 { "" } else { "s" }
    )
}

/// One host's submenu.
pub fn host_entry(h: &crate::hosts::connect::HostState) -> HostEntry {
    let n = h.host.name();
    let label = match &h.error {
        Some(_) => format!("{} — cannot read its config", h.host.label()),
        None => format!(
            "{} — {} through rmcp-mux",
            h.host.label(),
            of_servers(h.through, h.total)
        ),
    };
    let item = |prefix: &str, label: &str, enabled| Item {
        id: format!("{prefix}:{n}"),
        label: label.to_owned(),
        enabled,
    };
    HostEntry {
        name: n.to_owned(),
        id: format!("host:{n}"),
        label,
        // A broken file still offers Connect: the click shows the error with its line.
        connect: item(
            "host-connect",
            "Connect to rmcp-mux",
            h.error.is_some() || h.through < h.total,
        ),
        restore: item("host-restore", "Restore original", h.through > 0),
        open: item("host-open", "Open its config file", true),
    }
}

/// Builds the whole menu for one snapshot and the hosts found.
pub fn build_with(status: &DaemonStatus, login: Login, view: &HostsView) -> TrayModel {
    let servers: Vec<ServerEntry> = status.servers.iter().map(entry).collect();
    // The counts are of the config's servers: a removed one lingering for its clients is
    // listed in the menu but neither runs nor counts.
    let config = || status.servers.iter().filter(|s| !s.removed);
    let running = config().filter(|s| s.state == ServerState::Running).count();
    let total = config().count();
    let plural = if total == 1 { "" } else { "s" };
    let mut tooltip = if running == total && total > 0 {
        format!("rmcp-mux: {total} server{plural}")
    } else {
        format!("rmcp-mux: {running} of {total} server{plural} running")
    };
    let failed = config().filter(|s| s.state == ServerState::Failed).count();
    if failed > 0 {
        tooltip += &format!(", {failed} failed");
    }
    // What it all takes, and what sharing saves, once measured.
    if let Some(total) = status.total_rss_bytes {
        tooltip += &format!(" · {}", human_bytes(total));
    }
    if let Some(saved) = status.saved_bytes.filter(|b| *b > 0) {
        tooltip += &format!(" · ≈ {} saved", human_bytes(saved));
    }
    let fixed = |id: &str, label: &str, enabled| Item {
        id: id.to_owned(),
        label: label.to_owned(),
        enabled,
    };
    TrayModel {
        icon: icon_state(&status.servers),
        summary: fixed(
            ids::SUMMARY,
            tooltip.trim_start_matches("rmcp-mux: "),
            false,
        ),
        tooltip,
        config_error: status.config_error.as_ref().map(|e| Item {
            id: ids::CONFIG_ERROR.to_owned(),
            label: format!("Config not applied: {e}"),
            enabled: false,
        }),
        setup: view
            .setup
            .then(|| fixed(ids::SETUP, "Set up from your apps…", true)),
        hosts: view.hosts.iter().map(host_entry).collect(),
        no_hosts: view
            .hosts
            .is_empty()
            .then(|| fixed(ids::NO_HOSTS, "No MCP apps found", false)),
        restart_all: fixed(
            ids::RESTART_ALL,
            "Restart all",
            servers.iter().any(|s| s.restart.enabled),
        ),
        servers,
        open_config: fixed(ids::OPEN_CONFIG, "Open config", true),
        open_logs: fixed(ids::OPEN_LOGS, "Open logs", status.log_file.is_some()),
        login: fixed(ids::LOGIN, "Launch at login", login != Login::Unavailable),
        login_checked: login == Login::On,
        quit: fixed(ids::QUIT, "Quit rmcp-mux", true),
    }
}

impl TrayModel {
    /// What decides whether the rendered menu must be rebuilt rather than updated in place:
    /// the server set, whether a config error line is shown, and — for hosts that cannot
    /// relabel submenus (`live_submenu_labels` false) — the steady labels.
    pub fn shape(&self, live_submenu_labels: bool) -> Vec<String> {
        let mut shape: Vec<String> = self
            .servers
            .iter()
            .map(|s| {
                let name = if live_submenu_labels {
                    s.name.clone()
                } else {
                    s.steady_label.clone()
                };
                // Instances come and go: a new set is a new menu; so is a removal, which
                // takes the actions away.
                let keys: Vec<&str> = s.instances.iter().map(|i| i.key.as_str()).collect();
                format!("{name}\t{}\t{}", s.removed, keys.join("\t"))
            })
            .collect();
        shape.push(self.config_error.is_some().to_string());
        shape.push(self.setup.is_some().to_string());
        // Host lines are submenus too: a new count is a new menu where labels cannot change.
        shape.extend(self.hosts.iter().map(|h| {
            if live_submenu_labels {
                h.name.clone()
            } else {
                h.label.clone()
            }
        }));
        shape
    }

    /// The servers the "Restart all" item restarts.
    pub fn restart_all_targets(&self) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| s.restart.enabled)
            .map(|s| s.name.clone())
            .collect()
    }
}

/// "a", "a and b", "a, b and c".
fn and_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The confirmation Connect shows: a title and the entries that will change, file by file
/// (`entries` from a dry run of the same rewire).
pub fn connect_question(
    host: crate::hosts::Host,
    entries: &[crate::hosts::rewire::Planned],
    by_url: bool,
) -> (String, String) {
    use std::fmt::Write;
    let how = if by_url {
        "by URL, through its HTTP front"
    } else {
        "through rmcp-mux-proxy"
    };
    let mut text = format!(
        "{} {} of {}'s config will reach rmcp-mux {how}:\n",
        entries.len(),
        if entries.len() == 1 {
            "entry"
        } else {
            "entries"
        },
        host.label()
    );
    let mut last: Option<&std::path::Path> = None;
    for e in entries {
        if last != Some(e.file.as_path()) {
            let _ = write!(text, "\n{}\n", e.file.display());
            last = Some(e.file.as_path());
        }
        if e.name == e.server {
            let _ = writeln!(text, "  • {}", e.name);
        } else {
            let _ = writeln!(text, "  • {} → the mux's {}", e.name, e.server);
        }
    }
    let _ = write!(
        text,
        "\nA backup of each file is kept; Restore original puts the entries back."
    );
    (format!("Connect {} to rmcp-mux?", host.label()), text)
}

/// The notification after Connect changed `changed` entries.
pub fn connected_notice(host: crate::hosts::Host, changed: usize) -> (String, String) {
    let what = if changed == 1 {
        "1 server now runs".to_owned()
    } else {
        format!("{changed} servers now run")
    };
    (
        format!("Connected {} to rmcp-mux", host.label()),
        format!("{what} through rmcp-mux; {}.", host.restart_hint()),
    )
}

/// The notification after Restore original put back `restored` entries; `lines` say what was
/// left and why.
pub fn restored_notice(
    host: crate::hosts::Host,
    restored: usize,
    lines: &[String],
) -> (String, String) {
    let summary = format!("Restored {}'s config", host.label());
    if restored == 0 {
        return (summary, lines.join("\n"));
    }
    let what = if restored == 1 {
        "1 entry put back".to_owned()
    } else {
        format!("{restored} entries put back")
    };
    let left: Vec<&String> = lines.iter().filter(|l| l.starts_with("left ")).collect();
    let mut body = format!("{what}; {}.", host.restart_hint());
    for l in left {
        body.push('\n');
        body.push_str(l);
    }
    (summary, body)
}

/// The notification after "Set up from your apps…" imported `added` servers from `from`:
/// "12 servers from Claude Code, Cursor and Claude Desktop".
pub fn setup_notice(added: usize, from: &[crate::hosts::Host]) -> (String, String) {
    let labels: Vec<&str> = from.iter().map(|h| h.label()).collect();
    let body = match added {
        0 => "No servers to add: your apps' servers are already in the config.".to_owned(),
        1 => format!("1 server from {}", and_list(&labels)),
        n => format!("{n} servers from {}", and_list(&labels)),
    };
    ("rmcp-mux is set up".to_owned(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::daemon::fixtures::status;

    fn server(name: &str, state: ServerState) -> ServerReport {
        ServerReport {
            pid: (state == ServerState::Running).then_some(4242),
            ..crate::daemon::fixtures::report(name, state)
        }
    }

    fn one(s: ServerReport) -> ServerEntry {
        build(&status(vec![s]), Login::Off).servers.remove(0)
    }

    fn flags(e: &ServerEntry) -> (bool, bool, bool) {
        (e.restart.enabled, e.stop.enabled, e.start.enabled)
    }

    #[test]
    fn every_state_has_its_label_and_enabled_actions() {
        use ServerState::*;
        // (state, label word, restart, stop, start)
        let table = [
            (Lazy, "idle", false, true, true),
            (Starting, "starting", true, true, false),
            (Running, "running", true, true, false),
            (Backoff, "restarting", true, true, false),
            (Stopped, "stopped", false, false, true),
            (Failed, "failed", true, false, true),
        ];
        for (state, word, restart, stop, start) in table {
            let e = one(server("memory", state));
            assert_eq!(e.label, format!("memory — {word} (0 clients)"), "{state:?}");
            assert_eq!(flags(&e), (restart, stop, start), "{state:?}");
            assert!(!e.status.enabled, "the status line is never clickable");
            assert_eq!(e.status.id, "status:memory");
        }
    }

    #[test]
    fn client_counts_read_naturally() {
        let mut s = server("memory", ServerState::Running);
        s.clients = 1;
        assert_eq!(one(s.clone()).label, "memory — running (1 client)");
        s.clients = 2;
        let e = one(s);
        assert_eq!(e.label, "memory — running (2 clients)");
        assert_eq!(e.status.label, "running · pid 4242 · 2 clients");
    }

    #[test]
    fn a_crashed_server_shows_its_last_exit() {
        let mut s = server("memory", ServerState::Backoff);
        s.last_exit = Some("exited with status 1".into());
        s.restarts = 1;
        assert_eq!(
            one(s.clone()).status.label,
            "restarting · last exit: exited with status 1"
        );
        s.state = ServerState::Failed;
        let e = one(s.clone());
        assert_eq!(
            e.status.label,
            "failed · gave up restarting; Restart to try again · last exit: exited with status 1"
        );
        assert_eq!(e.steady_label, "memory — failed");
        // Starting again after a crash still says why it went down.
        s.state = ServerState::Starting;
        assert_eq!(
            one(s.clone()).status.label,
            "starting · last exit: exited with status 1"
        );
        // A server stopped on request has a last exit too, but it was no crash.
        s.state = ServerState::Stopped;
        s.last_exit = Some("killed by signal 15 (SIGTERM)".into());
        assert_eq!(one(s).status.label, "stopped");
    }

    #[test]
    fn the_steady_label_changes_only_on_failure() {
        for state in [
            ServerState::Lazy,
            ServerState::Starting,
            ServerState::Running,
            ServerState::Backoff,
            ServerState::Stopped,
        ] {
            assert_eq!(one(server("time", state)).steady_label, "time");
        }
        assert_eq!(
            one(server("time", ServerState::Failed)).steady_label,
            "time — failed"
        );
    }

    #[test]
    fn ids_round_trip_through_parse() {
        let e = one(server("my.server-1", ServerState::Running));
        assert_eq!(
            Action::parse(&e.restart.id),
            Some(Action::Server("my.server-1".into(), Command::Restart))
        );
        assert_eq!(
            Action::parse(&e.stop.id),
            Some(Action::Server("my.server-1".into(), Command::Stop))
        );
        assert_eq!(
            Action::parse(&e.start.id),
            Some(Action::Server("my.server-1".into(), Command::Start))
        );
        assert_eq!(
            Action::parse(&e.copy_entry.id),
            Some(Action::CopyEntry("my.server-1".into()))
        );
        assert_eq!(e.copy_entry.label, "Copy host entry");
        assert!(e.copy_entry.enabled);
        assert_eq!(Action::parse("copy-entry:"), None);
        assert_eq!(Action::parse(&e.status.id), None);
        assert_eq!(Action::parse(&e.id), None);
        assert_eq!(Action::parse("restart:"), None);
        assert_eq!(Action::parse("quit"), Some(Action::Quit));
        assert_eq!(Action::parse("restart-all"), Some(Action::RestartAll));
        assert_eq!(Action::parse("open-config"), Some(Action::OpenConfig));
        assert_eq!(Action::parse("open-logs"), Some(Action::OpenLogs));
        assert_eq!(Action::parse("login"), Some(Action::ToggleLogin));
        assert_eq!(Action::parse("bogus"), None);
    }

    #[test]
    fn icon_follows_the_worst_server() {
        use ServerState::*;
        let icon = |states: &[ServerState]| {
            let servers = states
                .iter()
                .enumerate()
                .map(|(i, s)| server(&format!("s{i}"), *s))
                .collect::<Vec<_>>();
            build(&status(servers), Login::Off).icon
        };
        assert_eq!(icon(&[Running, Running]), IconState::Running);
        assert_eq!(icon(&[Running, Lazy, Stopped]), IconState::Running);
        assert_eq!(icon(&[Running, Starting]), IconState::Busy);
        assert_eq!(icon(&[Running, Backoff]), IconState::Busy);
        assert_eq!(icon(&[Backoff, Failed]), IconState::Failed);
        assert_eq!(icon(&[Stopped, Stopped]), IconState::Stopped);
        assert_eq!(icon(&[]), IconState::Stopped);
        assert_eq!(IconState::Busy.as_str(), "busy");
    }

    #[test]
    fn tooltip_counts_running_and_failed() {
        use ServerState::*;
        let m = build(
            &status(vec![
                server("a", Running),
                server("b", Failed),
                server("c", Running),
            ]),
            Login::Off,
        );
        assert_eq!(m.tooltip, "rmcp-mux: 2 of 3 servers running, 1 failed");
        assert_eq!(m.summary.label, "2 of 3 servers running, 1 failed");
        assert!(!m.summary.enabled);
        let m = build(&status(vec![server("a", Stopped)]), Login::Off);
        assert_eq!(m.tooltip, "rmcp-mux: 0 of 1 server running");
    }

    #[test]
    fn fixed_items_follow_the_snapshot() {
        use ServerState::*;
        let mut st = status(vec![server("a", Stopped), server("b", Stopped)]);
        let m = build(&st, Login::Unavailable);
        assert!(!m.restart_all.enabled, "nothing to restart");
        assert!(m.restart_all_targets().is_empty());
        assert!(!m.open_logs.enabled, "no log file");
        assert!(!m.login.enabled && !m.login_checked);
        assert!(m.open_config.enabled && m.quit.enabled);
        assert_eq!(m.config_error, None);

        st.servers[1].state = Failed;
        st.log_file = Some("/l/rmcp-mux.log".into());
        st.config_error = Some("mux.toml line 3: unknown key `cmdd`".into());
        let m = build(&st, Login::On);
        assert!(m.restart_all.enabled);
        assert_eq!(m.restart_all_targets(), vec!["b".to_owned()]);
        assert!(m.open_logs.enabled);
        assert!(m.login.enabled && m.login_checked);
        assert_eq!(
            m.config_error.map(|i| (i.label, i.enabled)),
            Some((
                "Config not applied: mux.toml line 3: unknown key `cmdd`".to_owned(),
                false
            ))
        );
        assert!(!build(&st, Login::Off).login_checked);
    }

    #[test]
    fn a_shared_server_lists_its_instances_with_restart_and_stop() {
        use ServerState::*;
        let inst = |key: &str, state, pid| crate::daemon::InstanceReport {
            key: key.into(),
            project: Some(key.into()),
            pid,
            state,
            clients: 2,
            pending: 0,
            restarts: 0,
            uptime_ms: None,
            rss_bytes: None,
        };
        let git = ServerReport {
            share: crate::config::Share::Project,
            clients: 2,
            instances: vec![inst("/src/a:b", Running, Some(31))],
            ..server("git", Running)
        };
        let m = build(&status(vec![git.clone()]), Login::Off);
        let e = &m.servers[0];
        assert_eq!(e.status.label, "per project · 1 running · 2 clients");
        assert_eq!(e.instances.len(), 1);
        let i = &e.instances[0];
        assert_eq!(
            (i.label.as_str(), i.id.as_str()),
            ("/src/a:b", "instance:git:/src/a:b")
        );
        assert_eq!(i.status.label, "running · pid 31 · 2 clients");
        assert!(!i.status.enabled && i.restart.enabled && i.stop.enabled);
        assert_eq!(
            Action::parse(&i.restart.id),
            Some(Action::Instance(
                "git".into(),
                "/src/a:b".into(),
                Command::Restart
            )),
            "a key with ':' in it survives"
        );
        assert_eq!(
            Action::parse(&i.stop.id),
            Some(Action::Instance(
                "git".into(),
                "/src/a:b".into(),
                Command::Stop
            ))
        );
        assert_eq!(Action::parse(&i.status.id), None);
        // A new instance is a new menu; a new state of the same ones is not.
        let mut more = git.clone();
        more.instances.push(inst("/src/c", Lazy, None));
        let m2 = build(&status(vec![more]), Login::Off);
        assert_ne!(m.shape(false), m2.shape(false));
        let mut calmer = git;
        calmer.instances[0].pid = Some(32);
        let m3 = build(&status(vec![calmer]), Login::Off);
        assert_eq!(m.shape(false), m3.shape(false));
        assert_ne!(
            m.servers[0].instances[0].status,
            m3.servers[0].instances[0].status
        );
    }

    #[test]
    fn shape_changes_only_when_the_menu_must_be_rebuilt() {
        use ServerState::*;
        let mut st = status(vec![server("a", Running), server("b", Running)]);
        let before = build(&st, Login::Off);
        st.servers[0].clients = 3;
        st.servers[1].state = Backoff;
        let after = build(&st, Login::Off);
        assert_ne!(before, after);
        assert_eq!(before.shape(false), after.shape(false));
        assert_eq!(before.shape(true), after.shape(true));
        // Failing relabels the submenu on hosts that cannot do it in place.
        st.servers[1].state = Failed;
        let failed = build(&st, Login::Off);
        assert_ne!(after.shape(false), failed.shape(false));
        assert_eq!(after.shape(true), failed.shape(true));
        // A new server set or a config error always rebuilds.
        st.config_error = Some("bad".into());
        assert_ne!(failed.shape(true), build(&st, Login::Off).shape(true));
        st.servers.pop();
        assert_ne!(failed.shape(true), build(&st, Login::Off).shape(true));
    }

    #[test]
    fn a_removed_server_is_listed_without_actions_and_not_counted() {
        use ServerState::*;
        let old = ServerReport {
            removed: true,
            clients: 2,
            ..server("memory", Stopped)
        };
        let st = status(vec![
            server("memory", Running),
            server("time", Running),
            old,
        ]);
        let m = build(&st, Login::Off);
        assert_eq!(m.servers.len(), 3, "listed beside a new server of its name");
        let e = &m.servers[2];
        assert!(e.removed && !m.servers[0].removed);
        assert_eq!(e.label, "memory — removed (2 clients)");
        assert_eq!(e.steady_label, "memory — removed");
        assert_eq!(
            e.status.label,
            "removed from the config · kept until its 2 clients disconnect"
        );
        assert_eq!(e.users.label, "Clients: 2, none named");
        assert_eq!(
            (
                e.restart.enabled,
                e.stop.enabled,
                e.start.enabled,
                e.copy_entry.enabled
            ),
            (false, false, false, false)
        );
        for i in [&e.restart, &e.stop, &e.start, &e.copy_entry, &e.status] {
            assert_eq!(Action::parse(&i.id), None, "{}", i.id);
            assert!(
                m.servers[0..2].iter().all(|live| live.restart.id != i.id
                    && live.status.id != i.id
                    && live.copy_entry.id != i.id),
                "{} is its own id",
                i.id
            );
        }
        assert_ne!(e.id, m.servers[0].id);
        assert_eq!(
            m.tooltip, "rmcp-mux: 2 servers",
            "the removed one is not counted"
        );
        assert_eq!(m.icon, IconState::Running);
        assert_eq!(m.restart_all_targets(), ["memory", "time"]);
        // Going and coming back are new menus; its clients leaving one by one is not.
        let without = build(
            &status(vec![server("memory", Running), server("time", Running)]),
            Login::Off,
        );
        assert_ne!(m.shape(true), without.shape(true));
        let mut fewer = st.clone();
        fewer.servers[2].clients = 1;
        let fewer = build(&fewer, Login::Off);
        assert_eq!(m.shape(false), fewer.shape(false));
        assert_eq!(
            fewer.servers[2].status.label,
            "removed from the config · kept until its 1 client disconnects"
        );
        // While its child is still stopping, and with nothing else left but it.
        let stopping = ServerReport {
            pid: Some(4243),
            clients: 0,
            ..st.servers[2].clone()
        };
        let alone = build(&status(vec![stopping]), Login::Off);
        assert_eq!(
            alone.servers[0].status.label,
            "removed from the config · stopping · pid 4243"
        );
        assert_eq!(alone.tooltip, "rmcp-mux: 0 of 0 servers running");
        assert_eq!(alone.icon, IconState::Stopped);
        assert!(!alone.restart_all.enabled);
    }

    #[test]
    fn the_summary_and_tooltip_say_what_it_takes_and_saves() {
        use ServerState::*;
        let mut st = status(vec![server("a", Running), server("b", Running)]);
        let m = build(&st, Login::Off);
        assert_eq!(m.tooltip, "rmcp-mux: 2 servers", "not measured: no memory");
        st.total_rss_bytes = Some(410_000_000);
        st.saved_bytes = Some(0);
        assert_eq!(build(&st, Login::Off).summary.label, "2 servers · 410 MB");
        st.saved_bytes = Some(1_640_000_000);
        let m = build(&st, Login::Off);
        assert_eq!(m.summary.label, "2 servers · 410 MB · ≈ 1.6 GB saved");
        assert_eq!(m.tooltip, "rmcp-mux: 2 servers · 410 MB · ≈ 1.6 GB saved");
        st.servers[1].state = Failed;
        assert_eq!(
            build(&st, Login::Off).summary.label,
            "1 of 2 servers running, 1 failed · 410 MB · ≈ 1.6 GB saved"
        );
    }

    #[test]
    fn a_server_shows_its_memory_scope_and_clients_by_name() {
        let mut s = server("memory", ServerState::Running);
        let e = one(s.clone());
        assert_eq!(e.memory.label, "Memory: not running");
        assert_eq!(e.sharing.label, "Shared: one process for all clients");
        assert_eq!(e.users.label, "Clients: none");
        assert!(!e.memory.enabled && !e.sharing.enabled && !e.users.enabled);
        s.rss_bytes = Some(48_200_000);
        s.clients = 3;
        assert_eq!(one(s.clone()).memory.label, "Memory: 48 MB");
        assert_eq!(one(s.clone()).users.label, "Clients: 3, none named");
        s.client_names = vec!["Cursor".into(), "Claude Code".into()];
        let e = one(s.clone());
        assert_eq!(e.users.label, "Clients: Cursor, Claude Code");
        // Memory and clients change in place: no rebuild.
        let bare = build(
            &status(vec![server("memory", ServerState::Running)]),
            Login::Off,
        );
        let busy = build(&status(vec![s.clone()]), Login::Off);
        assert_eq!(bare.shape(false), busy.shape(false));

        let inst = |key: &str, rss| crate::daemon::InstanceReport {
            key: key.into(),
            project: Some(key.into()),
            pid: Some(7),
            state: ServerState::Running,
            clients: 1,
            pending: 0,
            restarts: 0,
            uptime_ms: None,
            rss_bytes: rss,
        };
        let shared = ServerReport {
            share: Share::Project,
            rss_bytes: Some(96_000_000),
            instances: vec![inst("/a", Some(48_000_000)), inst("/b", None)],
            ..s
        };
        let e = one(shared.clone());
        assert_eq!(e.memory.label, "Memory: 96 MB in 2 instances");
        assert_eq!(e.sharing.label, "Shared: one process per project");
        assert_eq!(
            e.instances[0].status.label,
            "running · pid 7 · 1 client · 48 MB"
        );
        assert_eq!(e.instances[1].status.label, "running · pid 7 · 1 client");
        let per_client = one(ServerReport {
            share: Share::Client,
            ..shared
        });
        assert_eq!(
            per_client.sharing.label,
            "Shared: not shared, one process per client"
        );
    }

    fn host_state(
        host: crate::hosts::Host,
        through: usize,
        total: usize,
    ) -> crate::hosts::connect::HostState {
        crate::hosts::connect::HostState {
            host,
            file: "/h/.cursor/mcp.json".into(),
            total,
            through,
            error: None,
        }
    }

    #[test]
    fn hosts_are_listed_with_their_counts_and_the_actions_that_make_sense() {
        use crate::hosts::Host;
        let view = HostsView {
            setup: false,
            hosts: vec![
                host_state(Host::ClaudeCode, 0, 1),
                host_state(Host::Cursor, 4, 5),
                host_state(Host::Zed, 2, 2),
                crate::hosts::connect::HostState {
                    error: Some("/h/.codeium/windsurf/mcp_config.json:3:1: expected `}`".into()),
                    ..host_state(Host::Windsurf, 0, 0)
                },
            ],
        };
        let m = build_with(&status(vec![]), Login::Off, &view);
        let labels: Vec<&str> = m.hosts.iter().map(|h| h.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Claude Code — 0 of 1 server through rmcp-mux",
                "Cursor — 4 of 5 servers through rmcp-mux",
                "Zed — 2 of 2 servers through rmcp-mux",
                "Windsurf — cannot read its config",
            ]
        );
        let flags: Vec<(bool, bool)> = m
            .hosts
            .iter()
            .map(|h| (h.connect.enabled, h.restore.enabled))
            .collect();
        assert_eq!(
            flags,
            [(true, false), (true, true), (false, true), (true, false)],
            "Connect while something is left, Restore once something goes through the mux, \
             Connect on a broken file to show its error"
        );
        assert_eq!(m.no_hosts, None);
        assert_eq!(m.setup, None);
        assert_eq!(
            Action::parse(&m.hosts[1].connect.id),
            Some(Action::HostConnect("cursor".into()))
        );
        assert_eq!(
            Action::parse(&m.hosts[1].restore.id),
            Some(Action::HostRestore("cursor".into()))
        );
        assert_eq!(
            Action::parse(&m.hosts[3].open.id),
            Some(Action::HostOpen("windsurf".into()))
        );
        assert_eq!(
            Action::parse(&m.hosts[1].id),
            None,
            "the submenu itself does nothing"
        );
        assert_eq!(Action::parse("host-connect:"), None);

        let none = build_with(&status(vec![]), Login::Off, &HostsView::default());
        assert!(none.hosts.is_empty());
        assert_eq!(
            none.no_hosts.map(|i| (i.label, i.enabled)),
            Some(("No MCP apps found".into(), false))
        );
    }

    #[test]
    fn the_first_run_entry_and_host_counts_change_the_menu_shape() {
        use crate::hosts::Host;
        let st = status(vec![]);
        let before = HostsView {
            setup: true,
            hosts: vec![host_state(Host::Cursor, 0, 2)],
        };
        let m = build_with(&st, Login::Off, &before);
        let setup = m.setup.clone().expect("offered");
        assert_eq!(
            (setup.label.as_str(), setup.enabled),
            ("Set up from your apps…", true)
        );
        assert_eq!(Action::parse(&setup.id), Some(Action::Setup));
        let after = HostsView {
            setup: false,
            hosts: vec![host_state(Host::Cursor, 2, 2)],
        };
        let n = build_with(&st, Login::Off, &after);
        assert_ne!(m.shape(true), n.shape(true), "the setup entry went");
        let same_setup = HostsView {
            setup: true,
            ..after
        };
        let n = build_with(&st, Login::Off, &same_setup);
        assert_eq!(
            m.shape(true),
            n.shape(true),
            "macOS relabels the host in place"
        );
        assert_ne!(
            m.shape(false),
            n.shape(false),
            "Linux rebuilds for a new count"
        );
    }

    #[test]
    fn the_connect_question_lists_each_entry_under_its_file() {
        use crate::hosts::rewire::Planned;
        use crate::hosts::Host;
        let p = |name: &str, file: &str, server: &str| Planned {
            name: name.into(),
            file: file.into(),
            server: server.into(),
        };
        let (title, text) = connect_question(
            Host::Cursor,
            &[
                p("memory", "/h/.cursor/mcp.json", "memory"),
                p("fs", "/h/.cursor/mcp.json", "filesystem"),
            ],
            false,
        );
        assert_eq!(title, "Connect Cursor to rmcp-mux?");
        assert_eq!(
            text,
            "2 entries of Cursor's config will reach rmcp-mux through rmcp-mux-proxy:\n\
             \n/h/.cursor/mcp.json\n  • memory\n  • fs → the mux's filesystem\n\
             \nA backup of each file is kept; Restore original puts the entries back."
        );
        let (_, text) = connect_question(Host::ClaudeCode, &[p("a", "/h/.claude.json", "a")], true);
        assert!(
            text.starts_with("1 entry of Claude Code's config will reach rmcp-mux by URL"),
            "{text}"
        );
    }

    #[test]
    fn notifications_say_what_was_done_and_how_the_host_picks_it_up() {
        use crate::hosts::Host;
        assert_eq!(
            connected_notice(Host::Cursor, 2),
            (
                "Connected Cursor to rmcp-mux".into(),
                "2 servers now run through rmcp-mux; restart Cursor to pick it up.".into()
            )
        );
        assert_eq!(
            connected_notice(Host::ClaudeCode, 1).1,
            "1 server now runs through rmcp-mux; start a new Claude Code session to pick it up."
        );
        let (summary, body) = restored_notice(
            Host::Cursor,
            1,
            &[
                "restored memory in /f".into(),
                "left fs in /f: changed since rewire".into(),
            ],
        );
        assert_eq!(summary, "Restored Cursor's config");
        assert_eq!(
            body,
            "1 entry put back; restart Cursor to pick it up.\nleft fs in /f: changed since rewire"
        );
        assert_eq!(
            setup_notice(12, &[Host::ClaudeCode, Host::Cursor, Host::ClaudeDesktop]).1,
            "12 servers from Claude Code, Cursor and Claude Desktop"
        );
        assert_eq!(setup_notice(1, &[Host::Cursor]).1, "1 server from Cursor");
        assert_eq!(
            setup_notice(3, &[Host::Zed, Host::Cursor]).1,
            "3 servers from Zed and Cursor"
        );
    }
}
