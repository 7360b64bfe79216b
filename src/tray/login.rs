//! Launch at login for the menu-bar app: a LaunchAgent plist in ~/Library/LaunchAgents on
//! macOS, an XDG autostart entry in ~/.config/autostart on Linux, both written by `auto-launch`.
//! The entry starts this executable as `rmcp-mux --tray --config FILE`.
//!
//! The menu's check item always shows what is on disk ([`LoginItem::state`]), never what was
//! last clicked. It must not touch the GUI.

use std::path::Path;

use anyhow::Context;
use auto_launch::{AutoLaunch, AutoLaunchBuilder};

use super::model::Login;

/// The name of the LaunchAgent / autostart entry (`rmcp-mux.desktop`, `rmcp-mux.plist`).
const ENTRY_NAME: &str = "rmcp-mux";

/// The login entry for this executable and config.
pub struct LoginItem {
    auto: Option<AutoLaunch>,
}

impl LoginItem {
    /// Describes the entry that would start this executable with `config`. When the executable's
    /// path cannot be found the item is [`Login::Unavailable`].
    pub fn new(config: &Path) -> LoginItem {
        let auto = std::env::current_exe().ok().and_then(|exe| {
            let args = ["--tray".to_owned(), "--config".to_owned(), quote(config)];
            AutoLaunchBuilder::new()
                .set_app_name(ENTRY_NAME)
                .set_app_path(&exe.to_string_lossy())
                .set_args(&args)
                .build()
                .ok()
        });
        LoginItem { auto }
    }

    /// What is on disk now.
    pub fn state(&self) -> Login {
        match self.auto.as_ref().map(AutoLaunch::is_enabled) {
            Some(Ok(true)) => Login::On,
            Some(Ok(false)) => Login::Off,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the launch-at-login entry");
                Login::Unavailable
            }
            None => Login::Unavailable,
        }
    }

    /// Writes (`on`) or removes the entry.
    ///
    /// # Errors
    /// The entry's folder cannot be written, or the executable's path is unknown.
    pub fn set(&self, on: bool) -> anyhow::Result<()> {
        let auto = self
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

/// The config path as one argument: the XDG `Exec=` line is split on spaces, so a path with
/// spaces is double-quoted there; a LaunchAgent keeps each argument in its own `<string>`.
fn quote(path: &Path) -> String {
    let s = path.to_string_lossy().into_owned();
    if cfg!(target_os = "macos") || !s.contains([' ', '"', '\\']) {
        s
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}
