//! rmcp-mux: run each MCP server once and share it between every MCP host on the machine.
//!
//! # Layout
//! From the pure bottom to the front-ends; each module's own doc lists its parts.
//! - [`config`]: `mux.toml` types, defaults, validation and path expansion (pure).
//! - [`jsonrpc`]: the message envelope, bounded line framing, id/token rewriting on raw bytes
//!   (pure).
//! - [`status`]: the words every part shares: a server's state and the commands that change it,
//!   and the human status table (pure).
//! - [`mux`]: one actor per server: the pure [`mux::router`] (the routing table of
//!   PROTOCOL.md), the child process, the server's socket.
//! - [`io`]: socket and pipe plumbing shared by the daemon and the proxy: one-way socket
//!   registration, the hand-off of the host's stdio, writing lines, atomic files.
//! - [`daemon`]: all servers of a config, status snapshots, reload, shutdown, and its
//!   process-level parts: control socket, config watching, status files, PID/lock lifecycle, log
//!   file.
//! - [`http`]: the Streamable HTTP front, hosts' way in by URL: each HTTP session (or, in the
//!   2026-07-28 form, each request) is one client of a server's socket.
//! - [`proxy`]: the stdio <-> socket bridge hosts run as their server command.
//! - [`hosts`]: MCP hosts' config files: scan, import into `mux.toml`, rewire and unwire.
//! - Front-ends over status snapshots and commands: [`cli`] (the `rmcp-mux` and
//!   `rmcp-mux-proxy` commands; `src/bin/` only calls it), [`dashboard`] (the terminal
//!   dashboard; its [`dashboard::model`] is pure) and [`tray`] (the menu-bar app; its menu model
//!   and notification rules are pure and always built).
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod hosts;
pub mod http;
pub mod io;
pub mod jsonrpc;
pub mod mux;
pub mod proxy;
pub mod status;
pub mod tray;
