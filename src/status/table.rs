//! The human form of `rmcp-mux status`: an aligned table like the one users know from the
//! single-daemon proposal. Pure formatting; no I/O.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::config::Share;
use crate::daemon::{DaemonStatus, InstanceReport, ServerReport};
use crate::status::ServerState;

/// "4h 23m", "12m 5s", "45s".
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// "1.9 GB", "312 MB", "48 KB": decimal units, as the menu and the README show them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if v < 10.0 && unit > 0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// The column titles of the server table, shared by `status` and the dashboard so both read
/// the same.
pub const COLUMNS: [&str; 9] = [
    "Server",
    "Status",
    "Clients",
    "Pending",
    "Restarts",
    "Uptime",
    "PID",
    "Protocol",
    "Last exit",
];

/// One server's cells in [`COLUMNS`] order ("-" for what it does not have).
pub fn cells(s: &ServerReport) -> [String; 9] {
    [
        s.name.clone(),
        state_cell(s),
        format!("{}/{}", s.clients, s.max_clients),
        s.pending.to_string(),
        s.restarts.to_string(),
        s.uptime_ms.map_or_else(|| "-".into(), human_duration),
        s.pid.map_or_else(|| "-".into(), |p| p.to_string()),
        match (&s.era, &s.protocol_version) {
            (Some(era), Some(v)) => format!("{era} {v}"),
            (Some(era), None) => era.clone(),
            _ => "-".into(),
        },
        s.last_exit.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// A server's state; for one shared per project or per client, how many children run
/// ("per client · 3 running"); for one removed from the config, that it was ("removed", and
/// "removed · stopping" while its child is still on its way out).
pub fn state_cell(s: &ServerReport) -> String {
    if s.removed {
        return if s.pid.is_some() {
            "removed · stopping".to_owned()
        } else {
            "removed".to_owned()
        };
    }
    let scope = match s.share {
        Share::Global => return s.state.as_str().to_owned(),
        Share::Project => "per project",
        Share::Client => "per client",
    };
    let running = s
        .instances
        .iter()
        .filter(|i| i.state == ServerState::Running)
        .count();
    if running == 0 && s.instances.is_empty() {
        format!("{scope} · none running")
    } else {
        format!("{scope} · {running} running")
    }
}

/// Why a server removed from the config is still there ("its 1 client gets
/// `server_unavailable` until it disconnects"), for the line under the table and the error a
/// command for it gets.
pub fn removed_note(s: &ServerReport) -> String {
    match s.clients {
        0 => "it goes once its child has stopped".to_owned(),
        1 => "its 1 client gets `server_unavailable` until it disconnects".to_owned(),
        n => format!("its {n} clients get `server_unavailable` until they disconnect"),
    }
}

/// One instance's cells in [`COLUMNS`] order, under its server's row.
pub fn instance_cells(i: &InstanceReport) -> [String; 9] {
    [
        format!("  └ {}", i.key),
        i.state.as_str().to_owned(),
        i.clients.to_string(),
        i.pending.to_string(),
        i.restarts.to_string(),
        i.uptime_ms.map_or_else(|| "-".into(), human_duration),
        i.pid.map_or_else(|| "-".into(), |p| p.to_string()),
        String::new(),
        String::new(),
    ]
}

/// Renders the status as a box-drawn table followed by one summary line.
pub fn render_table(status: &DaemonStatus) -> String {
    render_table_with(status, false)
}

/// As [`render_table`]; `verbose` adds a row per instance under its server.
pub fn render_table_with(status: &DaemonStatus, verbose: bool) -> String {
    let header = COLUMNS;
    let mut rows: Vec<[String; 9]> = Vec::new();
    for s in &status.servers {
        rows.push(cells(s));
        if verbose {
            rows.extend(s.instances.iter().map(instance_cells));
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule = |l: &str, m: &str, r: &str| {
        let parts: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{l}{}{r}\n", parts.join(m))
    };
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:<w$} "))
            .collect();
        format!("│{}│\n", parts.join("│"))
    };
    let mut out = rule("┌", "┬", "┐");
    out += &line(header.to_vec());
    out += &rule("├", "┼", "┤");
    for row in &rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out += &rule("└", "┴", "┘");
    // Memory when it was measured: the daemon with every child, and what sharing saves.
    let memory = match (status.total_rss_bytes, status.saved_bytes) {
        (Some(total), Some(saved)) if saved > 0 => format!(
            " · {} in all · ≈ {} saved",
            human_bytes(total),
            human_bytes(saved)
        ),
        (Some(total), _) => format!(" · {} in all", human_bytes(total)),
        _ => String::new(),
    };
    out += &format!(
        "rmcp-mux {} · pid {} · up {}{memory} · {}\n",
        status.version,
        status.pid,
        human_duration(status.uptime_ms),
        status.config.display()
    );
    for s in status.servers.iter() {
        if s.removed {
            out += &format!(
                "removed: {}: no longer in the config; {}\n",
                s.name,
                removed_note(s)
            );
        } else if let Some(hint) = &s.hint {
            out += &format!("hint: {}: {hint}\n", s.name);
        }
    }
    if let Some(path) = &status.child_path {
        out += &format!("servers' PATH: {path}\n");
    }
    if let Some(http) = &status.http {
        out += &format!(
            "by URL: {}/NAME/mcp · token in {}\n",
            http.url,
            http.token_file.display()
        );
    }
    // Last, where it is seen first.
    if let Some(err) = &status.config_error {
        out += &format!("config error (still running the previous configuration): {err}\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;
    use crate::daemon::ServerReport;
    use crate::status::ServerState;

    #[test]
    fn sizes_read_in_decimal_units() {
        assert_eq!(human_bytes(48_000), "48 KB");
        assert_eq!(human_bytes(312_400_000), "312 MB");
        assert_eq!(human_bytes(1_940_000_000), "1.9 GB");
    }

    #[test]
    fn durations_read_like_the_proposal() {
        assert_eq!(human_duration(45_000), "45s");
        assert_eq!(human_duration(12 * 60_000 + 5_000), "12m 5s");
        assert_eq!(human_duration((4 * 60 + 23) * 60_000), "4h 23m");
        assert_eq!(human_duration(3 * 86_400_000), "3d 0h");
    }

    #[test]
    fn shared_servers_show_their_scope_and_instances_and_the_memory_line() {
        use crate::daemon::InstanceReport;
        let instance = |key: &str, state, pid| InstanceReport {
            key: key.into(),
            project: None,
            pid,
            state,
            clients: 1,
            pending: 0,
            restarts: 0,
            uptime_ms: pid.map(|_| 5_000),
            rss_bytes: pid.map(|_| 50_000_000),
        };
        let browser = ServerReport {
            share: Share::Client,
            state: ServerState::Running,
            clients: 3,
            instances: vec![
                instance("client 1", ServerState::Running, Some(11)),
                instance("client 2", ServerState::Running, Some(12)),
                instance("client 3", ServerState::Lazy, None),
            ],
            ..crate::daemon::fixtures::report("browser", ServerState::Running)
        };
        let git = ServerReport {
            share: Share::Project,
            ..crate::daemon::fixtures::report("git", ServerState::Lazy)
        };
        let mut status = crate::daemon::fixtures::status(vec![browser, git]);
        status.total_rss_bytes = Some(160_000_000);
        status.saved_bytes = Some(1_900_000_000);
        let table = render_table(&status);
        assert!(table.contains("per client · 2 running"), "{table}");
        assert!(table.contains("per project · none running"), "{table}");
        assert!(
            !table.contains("client 1"),
            "instances only with --verbose: {table}"
        );
        assert!(
            table.contains("· 160 MB in all · ≈ 1.9 GB saved ·"),
            "{table}"
        );
        let verbose = render_table_with(&status, true);
        let rows: Vec<&str> = verbose.lines().filter(|l| l.contains("  └ ")).collect();
        assert_eq!(rows.len(), 3, "{verbose}");
        assert!(
            rows[0].contains("client 1") && rows[0].contains("11"),
            "{verbose}"
        );
        assert!(rows[2].contains("lazy"), "{verbose}");
    }

    #[test]
    fn a_removed_server_is_marked_with_its_clients_and_a_line_under_the_table() {
        let kept = ServerReport {
            clients: 2,
            max_clients: 64,
            removed: true,
            ..crate::daemon::fixtures::report("old", ServerState::Stopped)
        };
        let stopping = ServerReport {
            pid: Some(99),
            clients: 0,
            removed: true,
            ..crate::daemon::fixtures::report("gone", ServerState::Stopped)
        };
        let live = crate::daemon::fixtures::report("live", ServerState::Running);
        let table = render_table(&crate::daemon::fixtures::status(vec![
            live,
            kept.clone(),
            stopping,
        ]));
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("│ {name} ")))
                .unwrap_or_else(|| panic!("no row {name}: {table}"))
                .to_owned()
        };
        assert!(
            row("old").contains("│ removed ") && row("old").contains("│ 2/64 "),
            "{table}"
        );
        assert!(row("gone").contains("│ removed · stopping "), "{table}");
        assert!(row("live").contains("│ running "), "{table}");
        assert!(
            table.contains(
                "removed: old: no longer in the config; its 2 clients get `server_unavailable` \
                 until they disconnect\n"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "removed: gone: no longer in the config; it goes once its child has stopped\n"
            ),
            "{table}"
        );
        let one = ServerReport { clients: 1, ..kept };
        assert_eq!(
            removed_note(&one),
            "its 1 client gets `server_unavailable` until it disconnects"
        );
    }

    #[test]
    fn table_is_aligned_and_complete() {
        let status = crate::daemon::fixtures::status(vec![
            ServerReport {
                name: "memory".into(),
                state: ServerState::Running,
                socket: "/s/memory.sock".into(),
                pid: Some(1234),
                clients: 2,
                max_clients: 64,
                pending: 1,
                restarts: 0,
                uptime_ms: Some(61_000),
                last_exit: None,
                restart_in_ms: None,
                max_restarts: 5,
                era: Some("modern".into()),
                protocol_version: Some("2026-07-28".into()),
                ..crate::daemon::fixtures::report("", crate::status::ServerState::Lazy)
            },
            ServerReport {
                name: "sequential-thinking".into(),
                state: ServerState::Failed,
                socket: "/s/st.sock".into(),
                pid: None,
                clients: 0,
                max_clients: 5,
                pending: 0,
                restarts: 5,
                uptime_ms: None,
                last_exit: Some("exited with status 1".into()),
                restart_in_ms: None,
                max_restarts: 5,
                ..crate::daemon::fixtures::report("", crate::status::ServerState::Lazy)
            },
        ]);
        let table = render_table(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 7);
        let width = lines[0].chars().count();
        assert!(
            lines[..6].iter().all(|l| l.chars().count() == width),
            "{table}"
        );
        assert!(
            lines[3].contains("│ memory ")
                && lines[3].contains("2/64")
                && lines[3].contains("1m 1s")
                && lines[3].contains("│ modern 2026-07-28 ")
        );
        assert!(lines[1].contains("│ Protocol "));
        assert!(lines[4].contains("failed") && lines[4].contains("exited with status 1"));
        assert!(lines[6].contains("pid 7"));
        let broken = DaemonStatus {
            config_error: Some("/c/mux.toml:3:1: unknown key `cmdd`".into()),
            ..status
        };
        let table = render_table(&broken);
        assert_eq!(
            table.lines().nth(7),
            Some("config error (still running the previous configuration): /c/mux.toml:3:1: unknown key `cmdd`")
        );
        assert_eq!(table.lines().nth(8), None);
        let with_path = DaemonStatus {
            child_path: Some("/opt/homebrew/bin:/usr/bin".into()),
            ..broken.clone()
        };
        let table = render_table(&with_path);
        assert_eq!(
            table.lines().nth(7),
            Some("servers' PATH: /opt/homebrew/bin:/usr/bin")
        );
        assert!(table.lines().nth(8).unwrap().starts_with("config error"));
        let by_url = DaemonStatus {
            http: Some(crate::daemon::HttpReport {
                url: "http://127.0.0.1:7311".into(),
                token_file: "/st/http-token".into(),
            }),
            ..broken
        };
        let table = render_table(&by_url);
        assert_eq!(
            table.lines().nth(7),
            Some("by URL: http://127.0.0.1:7311/NAME/mcp · token in /st/http-token")
        );
    }
}
