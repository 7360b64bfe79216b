//! What the menu-bar app reads about the MCP hosts for its menu ([`view`]): the hosts found on
//! this machine with their counts ([`crate::hosts::connect::states`]), and whether to offer
//! "Set up from your apps…" (the config is missing or still the untouched template, and some
//! host has a config). File I/O only; no GUI, so it is always compiled and tested. The actions
//! themselves are the CLI's own functions (`hosts::connect`, `hosts::import`,
//! `hosts::rewire::unwire`), called by `app`.

use std::path::Path;

use super::model::HostsView;
use super::start::CONFIG_TEMPLATE;
use crate::hosts::{connect, Paths};

/// Whether the config at `path` is what a first launch wrote: missing or the template as
/// written (nothing of the user's would be lost or mixed in by an import).
pub fn is_first_run(path: &Path) -> bool {
    #[allow(clippy::disallowed_methods)] // one small file, read when the menu is refreshed
    match std::fs::read_to_string(path) {
        Ok(text) => text == CONFIG_TEMPLATE,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The hosts part of the menu for the config at `config_path`.
pub fn view(config_path: &Path, paths: &Paths) -> HostsView {
    // The HTTP front's base, for counting entries that reach the mux by URL.
    let base = crate::config::Config::load(config_path)
        .ok()
        .and_then(|c| c.daemon.http)
        .map(|a| format!("http://{a}"));
    let hosts = connect::states(paths, base.as_deref());
    HostsView {
        setup: !hosts.is_empty() && is_first_run(config_path),
        hosts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_is_offered_only_over_the_template_with_a_host_found() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        let paths = Paths {
            config: home.join(".config"),
            codex_home: home.join(".codex"),
            home: home.clone(),
            project: None,
        };
        let cfg = d.path().join("mux.toml");
        assert!(is_first_run(&cfg), "a missing config is a first run");
        assert_eq!(
            view(&cfg, &paths),
            HostsView::default(),
            "no host, no setup"
        );
        std::fs::create_dir_all(home.join(".cursor")).unwrap();
        std::fs::write(
            home.join(".cursor/mcp.json"),
            r#"{"mcpServers": {"a": {"command": "npx"}}}"#,
        )
        .unwrap();
        std::fs::write(&cfg, CONFIG_TEMPLATE).unwrap();
        let v = view(&cfg, &paths);
        assert!(v.setup);
        assert_eq!(v.hosts.len(), 1);
        std::fs::write(
            &cfg,
            format!("{CONFIG_TEMPLATE}[servers.a]\ncmd = \"npx\"\n"),
        )
        .unwrap();
        assert!(
            !view(&cfg, &paths).setup,
            "a config of the user's is never set up over"
        );
    }
}
