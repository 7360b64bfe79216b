//! rmcp-mux: run each MCP server once and share it between every MCP host on the machine.
//!
//! # Layout
//! - [`config`]: `mux.toml` types, defaults, validation and path expansion.
//! - [`jsonrpc`]: the message envelope, bounded line framing, id/token rewriting on raw bytes.
//! - [`mux`]: one actor per server: the pure [`mux::router`], the child process, the socket.
//! - [`daemon`]: all servers of a config, status snapshots, reload, shutdown; `config_watch`
//!   (private) reloads it when the config file changes.
//! - [`reload`]: the pure diff of running servers against a new config, and the reload report.
//! - [`status_file`]: the JSON snapshots `status_file` asks for, rewritten atomically.
//! - [`control`]: the control socket and the client the CLI uses.
//! - [`dashboard`]: the live terminal dashboard, a control-socket client; its pure
//!   [`dashboard::model`] says what to show.
//! - [`proxy`]: the stdio <-> socket bridge hosts run as their server command; [`attach`]: the
//!   hand-off of the host's stdin and stdout to the daemon after the handshake.
//! - [`lifecycle`]: one daemon per config (PID file + flock), detached start, stop, autostart.
//! - [`logfile`]: the size-capped rotating log file and `rmcp-mux logs`; [`login_path`]: the
//!   login shell's PATH for servers of a daemon started outside a shell.
//! - [`health`]: an end-to-end MCP check of one socket; [`status`]: the human status table.
//! - [`hosts`]: MCP hosts' config files: scan, import into `mux.toml`, rewire and unwire.
//! - [`tray`]: the menu-bar app (its menu model and notification rules are pure and always built).
#![warn(missing_docs)]

pub mod attach;
pub mod config;
mod config_watch;
pub mod control;
pub mod daemon;
pub mod dashboard;
mod files;
pub mod health;
pub mod hosts;
mod io;
pub mod jsonrpc;
pub mod lifecycle;
pub mod logfile;
pub mod login_path;
pub mod mux;
pub mod proxy;
pub mod reload;
pub mod sockio;
pub mod status;
pub mod status_file;
pub mod tray;
mod trim;
