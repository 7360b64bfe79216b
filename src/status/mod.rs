//! The words the router, the daemon and every front-end (CLI, dashboard, menu-bar app) share:
//! a server's lifecycle state and the commands that change it. Kept apart from the router so
//! that the front-ends speak of servers without depending on how messages are routed.
//!
//! - [`table`]: the human form of `rmcp-mux status`, also the dashboard's rows.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod table;

/// Runtime control of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start a stopped or failed server.
    Start,
    /// Stop the child and refuse requests until started again.
    Stop,
    /// Stop and start again, forgetting the restart count.
    Restart,
}

/// The lifecycle state shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// Waiting for the first client request before starting the child.
    Lazy,
    /// The child is being started or is doing its handshake.
    Starting,
    /// The child is up and initialized.
    Running,
    /// The child exited; it will be restarted after a delay.
    Backoff,
    /// Stopped on request.
    Stopped,
    /// Gave up after `max_restarts` failed restarts; needs `rmcp-mux restart NAME`.
    Failed,
}

impl ServerState {
    /// The lowercase name used in status output and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Lazy => "lazy",
            ServerState::Starting => "starting",
            ServerState::Running => "running",
            ServerState::Backoff => "backoff",
            ServerState::Stopped => "stopped",
            ServerState::Failed => "failed",
        }
    }
}
