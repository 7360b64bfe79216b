//! All servers of a config in one process: bind every socket, start one actor per server,
//! serve the control socket, and stop everything in order on shutdown.
//!
//! It owns no routing state (each actor owns its own) and reaches into no actor: it holds
//! their handles, reads their status snapshots and sends them commands.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, ServerConfig};
use crate::control;
use crate::mux::actor::{self, ServerHandle, ServerStatus};
use crate::mux::listener;
use crate::mux::router::{Command, ServerState};

/// What `rmcp-mux status --json` prints; also the control socket's answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonStatus {
    /// The daemon's version, to spot a stale daemon after an upgrade.
    pub version: String,
    /// The daemon's pid: one process for every server.
    pub pid: u32,
    /// How long the daemon has been up.
    pub uptime_ms: u64,
    /// The config file it runs.
    pub config: PathBuf,
    /// The daemon's log file, when it logs to one (detached or under a service manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Why the last config reload was refused; cleared by the next good one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// One entry per server, in config order.
    pub servers: Vec<ServerReport>,
}

/// One server in [`DaemonStatus`]. Never includes env values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerReport {
    /// The server's name.
    pub name: String,
    /// `lazy`, `starting`, `running`, `backoff`, `stopped` or `failed`.
    pub state: ServerState,
    /// The socket hosts connect to (through `rmcp-mux-proxy`).
    pub socket: PathBuf,
    /// The child's pid while it runs.
    pub pid: Option<u32>,
    /// Connected clients.
    pub clients: usize,
    /// `max_active_clients`.
    pub max_clients: usize,
    /// Requests waiting for the child.
    pub pending: usize,
    /// Restarts after crashes.
    pub restarts: u32,
    /// How long the current child has been running.
    pub uptime_ms: Option<u64>,
    /// How the last child ended.
    pub last_exit: Option<String>,
    /// While waiting to restart after a crash: how long until the next start (the tray's
    /// "restarting in 2 s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_in_ms: Option<u64>,
    /// `max_restarts`: consecutive crashes before the server is `failed` (0 = never).
    #[serde(default)]
    pub max_restarts: u32,
}

impl ServerReport {
    /// Turns a live snapshot into its reported form at `now`.
    pub fn from_status(s: &ServerStatus, now: Instant) -> ServerReport {
        ServerReport {
            name: s.name.clone(),
            state: s.state,
            socket: s.socket.clone(),
            pid: s.pid,
            clients: s.clients,
            max_clients: s.max_clients,
            pending: s.pending,
            restarts: s.restarts,
            uptime_ms: s
                .running_since
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            last_exit: s.last_exit.clone(),
            restart_in_ms: s
                .restart_at
                .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            max_restarts: s.max_restarts,
        }
    }
}

/// What the control socket and the tray share: the handles and when the daemon started.
pub struct Shared {
    handles: Vec<ServerHandle>,
    started: Instant,
    config: PathBuf,
}

impl Shared {
    /// The whole daemon's status now.
    pub fn status(&self) -> DaemonStatus {
        let now = Instant::now();
        DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            config: self.config.clone(),
            log_file: crate::logfile::active(),
            config_error: None,
            servers: self
                .handles
                .iter()
                .map(|h| ServerReport::from_status(&h.status(), now))
                .collect(),
        }
    }

    /// The handles of every server, in config order.
    pub fn servers(&self) -> &[ServerHandle] {
        &self.handles
    }

    /// Sends a command to one server by name.
    ///
    /// # Errors
    /// An unknown name (with the closest known one suggested), or a server shutting down.
    pub async fn command(&self, name: &str, cmd: Command) -> anyhow::Result<()> {
        match self.handles.iter().find(|h| h.name() == name) {
            Some(h) => h.command(cmd).await,
            None => {
                let names: Vec<&str> = self.handles.iter().map(|h| h.name()).collect();
                anyhow::bail!("{}", unknown_server(name, &names))
            }
        }
    }
}

/// "unknown server `x`; did you mean `y`?" or the list of servers.
pub fn unknown_server(name: &str, names: &[&str]) -> String {
    let best = names
        .iter()
        .map(|n| (strsim::jaro_winkler(name, n), *n))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, n)) => format!("unknown server `{name}`; did you mean `{n}`?"),
        None => format!(
            "unknown server `{name}`; this daemon runs: {}",
            names.join(", ")
        ),
    }
}

/// A started daemon: every socket bound, every actor running.
pub struct Daemon {
    shared: Arc<Shared>,
    token: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

impl Daemon {
    /// Binds every socket (all or nothing) and starts every server of `servers`.
    ///
    /// # Errors
    /// A socket that cannot be bound or is served by another live daemon; nothing is left
    /// behind when this fails.
    pub async fn start(config: &Config, servers: Vec<ServerConfig>) -> anyhow::Result<Daemon> {
        let started = Instant::now();
        let control_socket = listener::bind(&config.daemon.control_socket).with_context(|| {
            "another rmcp-mux may be running for this config (see `rmcp-mux status`)".to_owned()
        })?;
        let mut bound = Vec::with_capacity(servers.len());
        for s in &servers {
            let sock = listener::bind(&s.socket)
                .with_context(|| format!("server {}: cannot listen", s.name))?;
            bound.push(sock);
        }
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let grace = servers
            .iter()
            .map(|s| s.shutdown_grace)
            .max()
            .unwrap_or_default();
        let handles: Vec<ServerHandle> = servers
            .into_iter()
            .zip(bound)
            .map(|(cfg, sock)| {
                info!(server = %cfg.name, socket = %cfg.socket.display(), "listening");
                actor::spawn(cfg, sock, token.child_token(), &tracker)
            })
            .collect();
        let shared = Arc::new(Shared {
            handles,
            started,
            config: config.path.clone(),
        });
        tracker.spawn(control::serve(
            control_socket,
            shared.clone(),
            token.child_token(),
        ));
        info!(
            servers = shared.handles.len(),
            control = %config.daemon.control_socket.display(),
            "rmcp-mux ready"
        );
        // A `daemon start` waiting for this process returns now (no-op in the foreground).
        crate::lifecycle::notify_ready();
        Ok(Daemon {
            shared,
            token,
            tracker,
            grace,
        })
    }

    /// What the control socket serves, for in-process users such as the tray.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Stops every server in order and waits, within a bound, until they are gone.
    pub async fn shutdown(self) {
        info!("shutting down");
        self.token.cancel();
        self.tracker.close();
        // Children get their grace period; writers a moment to flush after that.
        let limit = self.grace + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not stop in time");
        }
    }
}

/// Runs every server of `servers` until `shutdown` completes, then stops them all.
///
/// # Errors
/// As [`Daemon::start`].
pub async fn run(
    config: &Config,
    servers: Vec<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let daemon = Daemon::start(config, servers).await?;
    shutdown.await;
    daemon.shutdown().await;
    Ok(())
}
