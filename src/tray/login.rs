//! Launch at login for the menu-bar app: a LaunchAgent plist in ~/Library/LaunchAgents on
//! macOS (rendered by [`super::launch_agent`], with PATH, working folder and bundle id), an
//! XDG autostart entry in ~/.config/autostart on Linux (written by `auto-launch`). The entry
//! starts this executable as `rmcp-mux --tray --config FILE`.
//!
//! The menu's check item always shows what is on disk ([`LoginItem::state`]), never what was
//! last clicked. An entry for this config that starts another executable (a cargo build, an
//! app since moved) starts nothing useful: [`LoginItem::refresh`] rewrites it at start. It must
//! not touch the GUI.

use std::path::Path;
#[cfg(target_os = "macos")]
use std::path::PathBuf;

use anyhow::Context;

use super::model::Login;

/// The name of the LaunchAgent / autostart entry (`rmcp-mux.plist`, `rmcp-mux.desktop`).
const ENTRY_NAME: &str = "rmcp-mux";

/// The login entry for this executable and config.
pub struct LoginItem {
    #[cfg(target_os = "macos")]
    agent: Option<(PathBuf, super::launch_agent::Agent)>,
    #[cfg(not(target_os = "macos"))]
    auto: Option<(auto_launch::AutoLaunch, std::path::PathBuf)>,
    config: std::path::PathBuf,
}

impl LoginItem {
    /// Describes the entry that would start this executable with `config`, giving it `path`
    /// as PATH (macOS). When the executable's path (or the home folder) cannot be found the
    /// item is [`Login::Unavailable`].
    #[cfg(target_os = "macos")]
    pub fn new(config: &Path, path: &str) -> LoginItem {
        let agent = std::env::current_exe().ok().and_then(|exe| {
            let home = directories::BaseDirs::new()?.home_dir().to_owned();
            let file = home
                .join("Library/LaunchAgents")
                .join(format!("{ENTRY_NAME}.plist"));
            let agent = super::launch_agent::Agent {
                label: ENTRY_NAME.to_owned(),
                program: exe,
                args: vec![
                    "--tray".to_owned(),
                    "--config".to_owned(),
                    config.to_string_lossy().into_owned(),
                ],
                path: path.to_owned(),
                working_dir: home,
                bundle_id: super::start::BUNDLE_ID.to_owned(),
            };
            Some((file, agent))
        });
        LoginItem {
            agent,
            config: config.to_owned(),
        }
    }

    /// Describes the entry that would start this executable with `config` (the autostart
    /// entry inherits the session's environment, so `path` is not written).
    #[cfg(not(target_os = "macos"))]
    pub fn new(config: &Path, _path: &str) -> LoginItem {
        let auto = std::env::current_exe().ok().and_then(|exe| {
            let args = ["--tray".to_owned(), "--config".to_owned(), quote(config)];
            auto_launch::AutoLaunchBuilder::new()
                .set_app_name(ENTRY_NAME)
                .set_app_path(&exe.to_string_lossy())
                .set_args(&args)
                .build()
                .ok()
                .map(|a| (a, exe))
        });
        LoginItem {
            auto,
            config: config.to_owned(),
        }
    }

    /// What is on disk now.
    pub fn state(&self) -> Login {
        match self.is_enabled() {
            Some(Ok(true)) => Login::On,
            Some(Ok(false)) => Login::Off,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the launch-at-login entry");
                Login::Unavailable
            }
            None => Login::Unavailable,
        }
    }

    #[cfg(target_os = "macos")]
    fn is_enabled(&self) -> Option<anyhow::Result<bool>> {
        let (file, _) = self.agent.as_ref()?;
        Some(Ok(file.is_file()))
    }

    #[cfg(not(target_os = "macos"))]
    fn is_enabled(&self) -> Option<anyhow::Result<bool>> {
        let (auto, _) = self.auto.as_ref()?;
        Some(auto.is_enabled().map_err(anyhow::Error::from))
    }

    /// Writes (`on`) or removes the entry.
    ///
    /// # Errors
    /// The entry's folder cannot be written, a path a plist cannot hold, or the executable's
    /// path is unknown.
    pub fn set(&self, on: bool) -> anyhow::Result<()> {
        #[cfg(target_os = "macos")]
        {
            let (file, agent) = self
                .agent
                .as_ref()
                .context("the path of this executable is unknown")?;
            if on {
                let text = agent.render()?;
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                crate::io::atomic_file::replace(file, text.as_bytes(), 0o644)
                    .with_context(|| format!("cannot write {}", file.display()))
            } else {
                match std::fs::remove_file(file) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(e).with_context(|| format!("cannot remove {}", file.display()))
                    }
                    _ => Ok(()),
                }
            }
        }
        #[cfg(not(target_os = "macos"))]
        {
            let (auto, _) = self
                .auto
                .as_ref()
                .context("the path of this executable is unknown")?;
            if on {
                auto.enable()
                    .context("cannot write the launch-at-login entry")
            } else {
                auto.disable()
                    .context("cannot remove the launch-at-login entry")
            }
        }
    }

    /// Rewrites an existing entry for this config that differs from what this executable would
    /// write (another executable's path, an old PATH). Returns whether it did.
    ///
    /// # Errors
    /// As [`LoginItem::set`].
    pub fn refresh(&self) -> anyhow::Result<bool> {
        if self.state() != Login::On {
            return Ok(false);
        }
        #[cfg(target_os = "macos")]
        let stale = {
            let Some((file, agent)) = self.agent.as_ref() else {
                return Ok(false);
            };
            let existing = std::fs::read_to_string(file).unwrap_or_default();
            super::launch_agent::runs_config(&existing, &self.config)
                && existing != agent.render()?
        };
        #[cfg(not(target_os = "macos"))]
        let stale = {
            let Some((_, exe)) = self.auto.as_ref() else {
                return Ok(false);
            };
            let file = directories::BaseDirs::new().map(|d| {
                d.config_dir()
                    .join("autostart")
                    .join(format!("{ENTRY_NAME}.desktop"))
            });
            let existing = file
                .and_then(|f| std::fs::read_to_string(f).ok())
                .unwrap_or_default();
            existing.contains(&quote(&self.config))
                && !existing.contains(&format!("Exec={} ", exe.display()))
        };
        if stale {
            self.set(true)?;
        }
        Ok(stale)
    }
}

/// The config path as one argument: the XDG `Exec=` line is split on spaces, so a path with
/// spaces is double-quoted there.
#[cfg(not(target_os = "macos"))]
fn quote(path: &Path) -> String {
    let s = path.to_string_lossy().into_owned();
    if !s.contains([' ', '"', '\\']) {
        s
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}
