//! What the CLI's `rewire` and the menu-bar app's "Connect to rmcp-mux" share: which way a host
//! reaches the mux ([`via_for`]), the rewire itself with the mux config loaded ([`connect`]),
//! and, for the menu, each host's state on this machine ([`states`]). One implementation: the
//! menu's dry run, its confirmed run and `rmcp-mux rewire [--dry-run]` are all [`connect`].

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::config::Config;

use super::rewire::{self, Report, Via};
use super::{Entry, Host, Launch, Paths};

/// Which way to point a host at the mux.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// As a command: `rmcp-mux-proxy` (`rewire --via proxy`).
    Proxy,
    /// By URL, through the daemon's HTTP front (`rewire --via http`).
    Http,
    /// By URL where the daemon has an HTTP front (`[daemon] http`) and the host takes URLs (no
    /// process per host), else as a command: what the menu does.
    Auto,
}

/// The way `host` reaches the mux of `cfg`.
///
/// # Errors
/// `Want::Http` without `[daemon] http`, the front's token not readable or writable, or no
/// `rmcp-mux-proxy` to point at.
pub fn via_for(cfg: &Config, host: Host, want: Want) -> anyhow::Result<Via> {
    if !by_url(cfg, host, want) {
        return Ok(Via::Proxy(rewire::proxy_path()?));
    }
    let Some(addr) = cfg.daemon.http else {
        bail!(
            "{} has no HTTP front; add `http = \"127.0.0.1:PORT\"` under [daemon] first",
            cfg.path.display()
        );
    };
    Ok(Via::Http {
        base: format!("http://{addr}"),
        token: crate::http::token::load_or_create(&crate::http::token::path()?)?,
    })
}

/// Whether `want` means a URL for `host` with `cfg` (pure): [`Want::Auto`] picks one only
/// where both the daemon (`[daemon] http`) and the host (`rewire::url_form`) have it.
pub fn by_url(cfg: &Config, host: Host, want: Want) -> bool {
    match want {
        Want::Proxy => false,
        Want::Http => true,
        Want::Auto => cfg.daemon.http.is_some() && rewire::url_form(host).is_some(),
    }
}

/// What [`connect`] did (or, as a dry run, would do).
#[derive(Debug)]
pub struct Connected {
    /// The rewire's report: one line per entry, the entries changed, diffs of a dry run.
    pub report: Report,
    /// The mux config the entries were matched against.
    pub cfg: Config,
    /// Whether the entries reach the mux by URL (else through the proxy).
    pub by_url: bool,
}

/// Points `host`'s entries that the mux runs at the mux of the config at `config_path`.
///
/// # Errors
/// No config there or one that does not load, no way to reach the mux ([`via_for`]), or a host
/// file that cannot be read, parsed or written (the message names the file and line).
pub fn connect(
    host: Host,
    paths: &Paths,
    config_path: &Path,
    want: Want,
    state_dir: &Path,
    dry_run: bool,
) -> anyhow::Result<Connected> {
    if !config_path.exists() {
        bail!(
            "no mux config at {}; run `rmcp-mux import --host {host}` first",
            config_path.display()
        );
    }
    let cfg = Config::load(config_path)?;
    let via = via_for(&cfg, host, want)?;
    let report = rewire::rewire_via(host, paths, &cfg, &via, state_dir, dry_run)?;
    Ok(Connected {
        report,
        by_url: matches!(via, Via::Http { .. }),
        cfg,
    })
}

/// One host found on this machine, as the menu lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostState {
    /// The host.
    pub host: Host,
    /// Its user config file ("Open its config file").
    pub file: PathBuf,
    /// Its server entries.
    pub total: usize,
    /// How many of them reach the mux (the proxy, or a URL of the mux's HTTP front).
    pub through: usize,
    /// Why its file cannot be read ("FILE:LINE:COL: …"); the counts are zero then.
    pub error: Option<String>,
}

/// Whether an entry reaches the mux: it runs the proxy, or names a URL under `mux_base`
/// (`http://127.0.0.1:PORT`, the daemon's HTTP front).
pub fn through_mux(e: &Entry, mux_base: Option<&str>) -> bool {
    match &e.launch {
        Launch::Stdio(s) => s.is_proxy(),
        Launch::Remote { url } => {
            mux_base.is_some_and(|b| url.starts_with(&format!("{}/", b.trim_end_matches('/'))))
        }
        Launch::Unsupported { .. } => false,
    }
}

/// The state of one host from its user files' entries (pure).
pub fn state_of(host: Host, file: PathBuf, entries: &[Entry], mux_base: Option<&str>) -> HostState {
    HostState {
        host,
        file,
        total: entries.len(),
        through: entries.iter().filter(|e| through_mux(e, mux_base)).count(),
        error: None,
    }
}

/// Every host with a user config file on this machine, in [`Host::ALL`]'s order. A file that
/// cannot be read or parsed is listed with its error, never left out.
pub fn states(paths: &Paths, mux_base: Option<&str>) -> Vec<HostState> {
    let mut out = Vec::new();
    for host in Host::ALL {
        let files: Vec<_> = host
            .files(paths)
            .into_iter()
            .filter(|f| f.scope == super::Scope::User && f.path.exists())
            .collect();
        let Some(first) = files.first() else {
            continue;
        };
        let mut entries = Vec::new();
        let mut error = None;
        for f in &files {
            match super::scan_file(f) {
                Ok(e) => entries.extend(e),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let mut state = state_of(host, first.path.clone(), &entries, mux_base);
        if error.is_some() {
            state.total = 0;
            state.through = 0;
            state.error = error;
        }
        out.push(state);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::{Scope, Stdio};
    use std::collections::BTreeMap;

    fn entry(launch: Launch) -> Entry {
        Entry {
            host: Host::Cursor,
            file: "/h/.cursor/mcp.json".into(),
            scope: Scope::User,
            project: None,
            key_path: vec![],
            name: "x".into(),
            launch,
        }
    }

    fn stdio(cmd: &str) -> Launch {
        Launch::Stdio(Stdio {
            command: cmd.into(),
            args: vec![],
            env: BTreeMap::new(),
            cwd: None,
        })
    }

    #[test]
    fn counts_proxies_and_urls_of_the_mux_front_as_through_the_mux() {
        let entries = [
            entry(stdio("npx")),
            entry(stdio(
                "/Applications/rmcp-mux.app/Contents/MacOS/rmcp-mux-proxy",
            )),
            entry(Launch::Remote {
                url: "http://127.0.0.1:7300/memory/mcp".into(),
            }),
            entry(Launch::Remote {
                url: "https://example.com/mcp".into(),
            }),
            entry(Launch::Unsupported { why: "x".into() }),
        ];
        let s = state_of(
            Host::Cursor,
            "/f".into(),
            &entries,
            Some("http://127.0.0.1:7300"),
        );
        assert_eq!((s.through, s.total), (2, 5));
        let s = state_of(Host::Cursor, "/f".into(), &entries, None);
        assert_eq!(
            (s.through, s.total),
            (1, 5),
            "no front: a URL is not the mux's"
        );
        // Another port on the same host is not the mux.
        let s = state_of(
            Host::Cursor,
            "/f".into(),
            &entries,
            Some("http://127.0.0.1:73"),
        );
        assert_eq!(s.through, 1);
    }

    #[test]
    fn auto_takes_a_url_only_where_the_daemon_and_the_host_have_one() {
        let path = Path::new("/c/mux.toml");
        let plain = Config::from_toml("[servers.a]\ncmd = \"x\"\n", path).unwrap();
        let front = Config::from_toml(
            "[daemon]\nhttp = \"127.0.0.1:7300\"\n[servers.a]\ncmd = \"x\"\n",
            path,
        )
        .unwrap();
        assert!(by_url(&front, Host::Cursor, Want::Auto));
        assert!(
            !by_url(&front, Host::ClaudeDesktop, Want::Auto),
            "commands only"
        );
        assert!(!by_url(&front, Host::Zed, Want::Auto), "commands only");
        assert!(!by_url(&plain, Host::Cursor, Want::Auto), "no HTTP front");
        assert!(!by_url(&front, Host::Cursor, Want::Proxy));
        assert!(
            by_url(&plain, Host::Cursor, Want::Http),
            "the CLI's --via http asks anyway"
        );
    }

    #[test]
    fn lists_the_hosts_whose_files_exist_and_a_broken_one_with_its_line() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().to_owned();
        std::fs::create_dir_all(home.join(".cursor")).unwrap();
        std::fs::write(
            home.join(".cursor/mcp.json"),
            r#"{"mcpServers": {"a": {"command": "npx"}, "b": {"command": "rmcp-mux-proxy"}}}"#,
        )
        .unwrap();
        std::fs::write(home.join(".claude.json"), "{\n  \"mcpServers\": {,\n}").unwrap();
        let paths = Paths {
            config: home.join(".config"),
            codex_home: home.join(".codex"),
            home: home.clone(),
            project: None,
        };
        let s = states(&paths, None);
        let hosts: Vec<Host> = s.iter().map(|h| h.host).collect();
        assert_eq!(hosts, [Host::ClaudeCode, Host::Cursor]);
        let err = s[0]
            .error
            .as_deref()
            .expect("a broken file is listed with its error");
        assert!(
            err.starts_with(&format!("{}:2:", home.join(".claude.json").display())),
            "{err}"
        );
        assert_eq!((s[1].through, s[1].total), (1, 2));
        assert_eq!(s[1].file, home.join(".cursor/mcp.json"));
    }
}
