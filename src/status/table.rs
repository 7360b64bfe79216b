//! The human form of `rmcp-mux status`: an aligned table like the one users know from the
//! single-daemon proposal. Pure formatting; no I/O.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::daemon::{DaemonStatus, ServerReport};

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
        s.state.as_str().to_owned(),
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

/// Renders the status as a box-drawn table followed by one summary line.
pub fn render_table(status: &DaemonStatus) -> String {
    let header = COLUMNS;
    let rows: Vec<[String; 9]> = status.servers.iter().map(cells).collect();
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
    out += &format!(
        "rmcp-mux {} · pid {} · up {} · {}\n",
        status.version,
        status.pid,
        human_duration(status.uptime_ms),
        status.config.display()
    );
    if let Some(path) = &status.child_path {
        out += &format!("servers' PATH: {path}\n");
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
    fn durations_read_like_the_proposal() {
        assert_eq!(human_duration(45_000), "45s");
        assert_eq!(human_duration(12 * 60_000 + 5_000), "12m 5s");
        assert_eq!(human_duration((4 * 60 + 23) * 60_000), "4h 23m");
        assert_eq!(human_duration(3 * 86_400_000), "3d 0h");
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
                era: None,
                protocol_version: None,
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
            ..broken
        };
        let table = render_table(&with_path);
        assert_eq!(
            table.lines().nth(7),
            Some("servers' PATH: /opt/homebrew/bin:/usr/bin")
        );
        assert!(table.lines().nth(8).unwrap().starts_with("config error"));
    }
}
