//! What a config reload changes: the pure comparison of the servers a daemon runs with the ones
//! the new file selects, and the report the daemon answers `rmcp-mux reload` with.
//!
//! It decides nothing about *how* servers are stopped or started (the daemon does that) and
//! does no I/O: no files, no clocks, no processes.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ServerConfig};

/// How the running servers and a new config differ, by server name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// In the new config only: bind and start them (new config order).
    pub added: Vec<ServerConfig>,
    /// In the running set only: stop them (running order).
    pub removed: Vec<String>,
    /// In both with a different config: the running server is handed this one and restarts
    /// its child with it, keeping its clients; one whose `share` changed is stopped and
    /// started anew (new config order).
    pub changed: Vec<ServerConfig>,
    /// In both with the same config: leave the actor, its child and its clients alone. The
    /// new config is kept here because its `status_file` may differ (which needs no restart).
    pub unchanged: Vec<ServerConfig>,
}

impl ConfigDiff {
    /// Whether nothing needs to be stopped or started.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Whether `a` running could go on serving `b` untouched: every key but `status_file` (the
/// actor never reads that one; the status writer picks the new path up by itself).
pub fn runs_the_same(a: &ServerConfig, b: &ServerConfig) -> bool {
    let strip = |s: &ServerConfig| ServerConfig {
        status_file: None,
        ..s.clone()
    };
    strip(a) == strip(b)
}

/// Compares the configs of the running servers (`old`) with those the new file selects
/// (`new`), matching them by name.
///
/// A server whose socket moved (a changed `socket` or `socket_dir`) counts as changed, since
/// its config differs.
pub fn diff(old: &[ServerConfig], new: &[ServerConfig]) -> ConfigDiff {
    let by_name: HashMap<&str, &ServerConfig> = old.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out = ConfigDiff::default();
    for n in new {
        match by_name.get(n.name.as_str()) {
            None => out.added.push(n.clone()),
            Some(o) if runs_the_same(o, n) => out.unchanged.push(n.clone()),
            Some(_) => out.changed.push(n.clone()),
        }
    }
    out.removed = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.name == o.name))
        .map(|o| o.name.clone())
        .collect();
    out
}

/// A server of the new config that could not be started (its socket could not be bound).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartFailure {
    /// The server's name.
    pub server: String,
    /// Why, for the user.
    pub error: String,
}

/// What a reload did; the control socket's answer to `reload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// The config file that was read.
    pub config: PathBuf,
    /// Servers bound and started.
    pub added: Vec<String>,
    /// Servers stopped (socket unlinked, child stopped, clients closed).
    pub removed: Vec<String>,
    /// Servers whose child was restarted with their new config (clients kept, unless their
    /// `share` changed: then the server was stopped and started anew).
    pub restarted: Vec<String>,
    /// Servers left running as they were.
    pub unchanged: Vec<String>,
    /// Servers of the new config that could not start; the next reload tries them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<StartFailure>,
    /// Changes that were not applied, such as a new `control_socket` (needs a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ReloadReport {
    /// The report as `rmcp-mux reload` prints it: one line per kind of change.
    pub fn render(&self) -> String {
        let mut out = format!("reloaded {}\n", self.config.display());
        let rows = [
            ("added", &self.added),
            ("removed", &self.removed),
            ("restarted", &self.restarted),
            ("unchanged", &self.unchanged),
        ];
        if self.added.is_empty() && self.removed.is_empty() && self.restarted.is_empty() {
            out += "  no server changed\n";
        }
        for (label, names) in rows {
            if !names.is_empty() {
                out += &format!("  {:<10} {}\n", format!("{label}:"), names.join(", "));
            }
        }
        for f in &self.failed {
            out += &format!("  failed:    {}: {}\n", f.server, f.error);
        }
        for n in &self.notes {
            out += &format!("  note:      {n}\n");
        }
        out
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new config is invalid (or gone); the running configuration stays.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon is stopping; it starts nothing new.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn servers(body: &str) -> Vec<ServerConfig> {
        let text = format!("[daemon]\nsocket_dir = \"/run/m\"\n{body}");
        Config::from_toml(&text, Path::new("/etc/mux.toml"))
            .unwrap()
            .servers
    }

    fn names(v: &[ServerConfig]) -> Vec<&str> {
        v.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn same_config_changes_nothing() {
        let a = servers("[servers.a]\ncmd = \"x\"\n[servers.b]\ncmd = \"y\"\n");
        let d = diff(&a, &a);
        assert!(d.is_empty());
        assert_eq!(names(&d.unchanged), ["a", "b"]);
    }

    #[test]
    fn added_removed_changed_unchanged_by_name() {
        let old = servers(
            "[servers.a]\ncmd = \"x\"\n[servers.b]\ncmd = \"y\"\n[servers.gone]\ncmd = \"z\"\n",
        );
        let new = servers(
            "[servers.c]\ncmd = \"new\"\n[servers.b]\ncmd = \"y\"\nargs = [\"--v2\"]\n[servers.a]\ncmd = \"x\"\n",
        );
        let d = diff(&old, &new);
        assert_eq!(names(&d.added), ["c"]);
        assert_eq!(d.removed, ["gone"]);
        assert_eq!(names(&d.changed), ["b"]);
        assert_eq!(
            d.changed[0].args,
            ["--v2"],
            "the new config is the one kept"
        );
        assert_eq!(names(&d.unchanged), ["a"]);
        assert!(!d.is_empty());
    }

    #[test]
    fn every_running_key_counts_env_included() {
        let base = "[servers.a]\ncmd = \"x\"\n";
        let old = servers(base);
        for extra in [
            "env = { K = \"v2\" }",
            "cwd = \"/tmp\"",
            "max_active_clients = 2",
            "request_timeout_ms = 5",
            "lazy_start = true",
            "capabilities = { roots = true }",
            "socket = \"/run/other.sock\"",
        ] {
            let new = servers(&format!("{base}{extra}\n"));
            assert_eq!(names(&diff(&old, &new).changed), ["a"], "{extra}");
        }
        let with_env = servers(&format!("{base}env = {{ K = \"v1\" }}\n"));
        let other_env = servers(&format!("{base}env = {{ K = \"v2\" }}\n"));
        assert_eq!(names(&diff(&with_env, &other_env).changed), ["a"]);
        assert!(diff(&with_env, &with_env).is_empty());
    }

    #[test]
    fn a_new_socket_dir_moves_default_sockets_only() {
        let old =
            servers("[servers.a]\ncmd = \"x\"\n[servers.b]\ncmd = \"y\"\nsocket = \"/s/b.sock\"\n");
        let text = "[daemon]\nsocket_dir = \"/run/elsewhere\"\n[servers.a]\ncmd = \"x\"\n[servers.b]\ncmd = \"y\"\nsocket = \"/s/b.sock\"\n";
        let new = Config::from_toml(text, Path::new("/etc/mux.toml"))
            .unwrap()
            .servers;
        let d = diff(&old, &new);
        assert_eq!(names(&d.changed), ["a"]);
        assert_eq!(names(&d.unchanged), ["b"]);
    }

    #[test]
    fn a_new_status_file_needs_no_restart() {
        let old = servers("[servers.a]\ncmd = \"x\"\n");
        let new = servers("[servers.a]\ncmd = \"x\"\nstatus_file = \"/tmp/a.json\"\n");
        let d = diff(&old, &new);
        assert!(d.is_empty());
        assert_eq!(
            d.unchanged[0].status_file.as_deref(),
            Some(Path::new("/tmp/a.json"))
        );
    }

    #[test]
    fn report_renders_each_kind_and_says_when_nothing_changed() {
        let r = ReloadReport {
            config: "/c/mux.toml".into(),
            added: vec!["c".into()],
            removed: vec!["a".into()],
            restarted: vec!["b".into(), "d".into()],
            unchanged: vec!["e".into()],
            failed: vec![StartFailure {
                server: "f".into(),
                error: "cannot listen".into(),
            }],
            notes: vec!["control_socket changed".into()],
        };
        assert_eq!(
            r.render(),
            "reloaded /c/mux.toml\n  added:     c\n  removed:   a\n  restarted: b, d\n  unchanged: e\n  failed:    f: cannot listen\n  note:      control_socket changed\n"
        );
        let quiet = ReloadReport {
            config: "/c/mux.toml".into(),
            unchanged: vec!["e".into()],
            ..ReloadReport::default()
        };
        assert_eq!(
            quiet.render(),
            "reloaded /c/mux.toml\n  no server changed\n  unchanged: e\n"
        );
    }
}
