//! The menu-bar app: [`model`] turns a status snapshot into a menu (pure), [`notify`] decides
//! which desktop notifications a change deserves (pure) and shows them, [`start`] gets a config
//! to start with whatever state the file is in, [`hosts`] reads the hosts' files for the Hosts
//! submenu and the first-run entry, `dialog` asks and tells in native dialogs, `login` reads
//! and writes the launch-at-login entry ([`launch_agent`] renders macOS's), and `app` renders
//! it all with tao, tray-icon and muda.
//!
//! The GUI half (`app`, `dialog`, `login`, the sending half of `notify`) is compiled on macOS always and on
//! other systems with the cargo feature `tray`; the pure half is always compiled and tested.

#[cfg(any(feature = "tray", target_os = "macos"))]
pub mod app;
#[cfg(any(feature = "tray", target_os = "macos"))]
pub mod dialog;
pub mod hosts;
pub mod launch_agent;
#[cfg(any(feature = "tray", target_os = "macos"))]
pub mod login;
pub mod model;
pub mod notify;
pub mod start;
