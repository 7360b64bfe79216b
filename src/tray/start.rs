//! What the menu-bar app does before its event loop, where a plain daemon would exit on an
//! error: a missing config is created from [`CONFIG_TEMPLATE`], and a config that does not load
//! is replaced by a stand-in with no servers, so that the app starts anyway and shows
//! "Config not applied: FILE:LINE: …" with Open config at hand. The file is watched as usual:
//! once the user fixes it, the next reload starts its servers.
//!
//! It also knows the bundle: run as `rmcp-mux.app/Contents/MacOS/rmcp-mux` with no arguments
//! (LaunchServices may add a `-psn_…` one), the program is the app ([`bundle_args`]).
//!
//! File I/O only; no GUI, so it is always compiled and tested.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{
    default_state_dir, find_control_socket, Config, DaemonConfig, Env, Selection, ServerConfig,
};

/// What Open config and a first launch write when the file is missing: every key commented
/// out (it loads as "no servers defined", which the menu shows with the file's path).
pub const CONFIG_TEMPLATE: &str = "# rmcp-mux config: one [servers.NAME] table per MCP server.\n\
# See the README's configuration reference; the daemon applies changes on reload or restart.\n\
#\n\
# [daemon]\n\
# notifications = true        # desktop notifications of the menu-bar app\n\
#\n\
# [servers.memory]\n\
# cmd = \"npx\"\n\
# args = [\"-y\", \"@modelcontextprotocol/server-memory\"]\n";

/// The bundle id of rmcp-mux.app (bundle/Info.plist); also the id notifications are sent under
/// and the one the launch-at-login entry is attributed to.
pub const BUNDLE_ID: &str = "dev.rmcp-mux.tray";

/// Creates the config from [`CONFIG_TEMPLATE`] when it is missing (0600: it may hold secrets).
/// Returns whether it was created.
///
/// # Errors
/// The folder or the file cannot be created.
pub fn ensure_config(path: &Path) -> anyhow::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(CONFIG_TEMPLATE.as_bytes())
                .with_context(|| format!("{}", path.display()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

/// The config the app starts with.
#[derive(Debug)]
pub struct Prepared {
    /// The config, or a stand-in with no servers when it does not load.
    pub config: Config,
    /// The servers to start.
    pub servers: Vec<ServerConfig>,
    /// The command line's `--only`/`--except`, which every reload applies to the file again.
    pub selection: Selection,
    /// Why the file did not load ("FILE:LINE:COL: …"), when the stand-in is used.
    pub error: Option<String>,
    /// Whether the file was created from the template just now.
    pub created: bool,
}

/// Creates a missing config, loads it, and stands in for one that does not load.
///
/// # Errors
/// The config cannot be created (its folder is not writable).
pub fn prepare(path: &Path, selection: Selection) -> anyhow::Result<Prepared> {
    let created = ensure_config(path)?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let loaded = Config::load(&path).and_then(|cfg| {
        let servers = cfg.select_by(&selection)?;
        Ok((cfg, servers))
    });
    Ok(match loaded {
        Ok((config, servers)) => Prepared {
            config,
            servers,
            selection,
            error: None,
            created,
        },
        Err(e) => Prepared {
            config: stand_in(&path),
            servers: Vec::new(),
            selection,
            error: Some(e.to_string()),
            created,
        },
    })
}

/// A config with no servers for a file that does not load: its control socket is found as
/// leniently as the CLI finds it (so `rmcp-mux status` reaches this daemon), the rest default.
fn stand_in(path: &Path) -> Config {
    #[allow(clippy::disallowed_methods)] // the file may be unreadable: then it is empty
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let state = default_state_dir();
    Config {
        path: path.to_owned(),
        daemon: DaemonConfig {
            control_socket: find_control_socket(&text, path, &Env::from_process()),
            socket_dir: state.join("sockets"),
            status_file: None,
            notifications: true,
            http: None,
        },
        servers: Vec::new(),
    }
}

/// Whether `exe` is the main executable of an application bundle
/// (`NAME.app/Contents/MacOS/FILE`).
pub fn bundle_of(exe: &Path) -> Option<PathBuf> {
    let macos = exe.parent()?;
    let contents = macos.parent()?;
    let app = contents.parent()?;
    (macos.file_name()? == "MacOS"
        && contents.file_name()? == "Contents"
        && app.extension()? == "app")
        .then(|| app.to_owned())
}

/// The command line as the CLI should read it. Inside a bundle, LaunchServices may add a
/// `-psn_0_12345` argument (first launch after quarantine), which is dropped; and with no
/// other argument the program was opened as the app, so `--tray` is added. Anywhere else, and
/// with arguments (the CLI run from a terminal as `…/Contents/MacOS/rmcp-mux status`), the
/// arguments are left alone.
pub fn bundle_args(args: Vec<OsString>, exe: Option<&Path>) -> Vec<OsString> {
    if exe.and_then(bundle_of).is_none() {
        return args;
    }
    let mut args: Vec<OsString> = args
        .into_iter()
        .enumerate()
        .filter(|(i, a)| *i == 0 || !a.to_string_lossy().starts_with("-psn_"))
        .map(|(_, a)| a)
        .collect();
    if args.len() <= 1 {
        args.push("--tray".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_missing_config_is_created_and_shown_as_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mux.toml");
        let p = prepare(&path, Selection::default()).unwrap();
        assert!(p.created);
        #[allow(clippy::disallowed_methods)]
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, CONFIG_TEMPLATE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(p.servers.is_empty());
        let err = p.error.expect("the template has no servers");
        assert!(
            err.contains("mux.toml:1: servers: no servers defined"),
            "{err}"
        );
        // A second start finds it and does not touch it.
        assert!(!prepare(&path, Selection::default()).unwrap().created);
    }

    #[test]
    fn a_broken_config_stands_in_with_its_control_socket_and_no_servers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mux.toml");
        let sock = dir.path().join("ctl.sock");
        std::fs::write(
            &path,
            format!(
                "[daemon]\ncontrol_socket = \"{}\"\n[servers.a]\ncmdd = \"x\"\n",
                sock.display()
            ),
        )
        .unwrap();
        let p = prepare(&path, Selection::default()).unwrap();
        assert!(!p.created);
        assert!(p.servers.is_empty());
        assert_eq!(p.config.daemon.control_socket, sock);
        assert!(p.config.servers.is_empty());
        let err = p.error.unwrap();
        let real = std::fs::canonicalize(&path).unwrap();
        assert!(
            err.starts_with(&format!("{}:4:", real.display())),
            "FILE:LINE first: {err}"
        );
    }

    #[test]
    fn a_good_config_loads_with_its_selection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mux.toml");
        std::fs::write(
            &path,
            "[servers.a]\ncmd = \"x\"\n[servers.b]\ncmd = \"y\"\n",
        )
        .unwrap();
        let selection = Selection {
            only: vec!["b".into()],
            except: vec![],
        };
        let p = prepare(&path, selection).unwrap();
        assert_eq!(p.error, None);
        let names: Vec<_> = p.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b"]);
    }

    #[test]
    fn the_bundles_executable_is_the_app() {
        let exe = Path::new("/Applications/rmcp-mux.app/Contents/MacOS/rmcp-mux");
        assert_eq!(
            bundle_of(exe),
            Some(PathBuf::from("/Applications/rmcp-mux.app"))
        );
        assert_eq!(bundle_of(Path::new("/usr/local/bin/rmcp-mux")), None);
        assert_eq!(bundle_of(Path::new("/x/Contents/MacOS/rmcp-mux")), None);
        // Opened from Finder, maybe with a process serial number.
        assert_eq!(
            bundle_args(os(&["rmcp-mux"]), Some(exe)),
            os(&["rmcp-mux", "--tray"])
        );
        assert_eq!(
            bundle_args(os(&["rmcp-mux", "-psn_0_1234"]), Some(exe)),
            os(&["rmcp-mux", "--tray"])
        );
        // The login entry and the CLI run from a terminal pass their own arguments.
        assert_eq!(
            bundle_args(os(&["rmcp-mux", "--tray", "--config", "/c"]), Some(exe)),
            os(&["rmcp-mux", "--tray", "--config", "/c"])
        );
        assert_eq!(
            bundle_args(os(&["rmcp-mux", "status"]), Some(exe)),
            os(&["rmcp-mux", "status"])
        );
        // Outside a bundle nothing changes, not even a stray -psn_ argument.
        let plain = Path::new("/usr/local/bin/rmcp-mux");
        assert_eq!(
            bundle_args(os(&["rmcp-mux"]), Some(plain)),
            os(&["rmcp-mux"])
        );
        assert_eq!(
            bundle_args(os(&["rmcp-mux", "-psn_0_1"]), None),
            os(&["rmcp-mux", "-psn_0_1"])
        );
    }
}
