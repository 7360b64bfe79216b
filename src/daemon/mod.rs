//! All servers of a config in one process: bind every socket, start one actor per server,
//! serve the control socket, apply config reloads (start added servers, stop removed ones,
//! restart changed ones) and stop everything in order on shutdown.
//!
//! It owns no routing state (each actor owns its own) and reaches into no actor: it holds
//! their handles, reads their status snapshots and sends them commands. The list of handles
//! sits behind a `std::sync::RwLock` that only control, status and reload touch, never the
//! hot path inside an actor.
//!
//! The daemon's process-level parts live beside it:
//! - [`control`]: the control socket and the client the CLI uses;
//! - `config_watch` (private): reloads the daemon when its config file changes;
//! - [`reload`]: the pure diff of running servers against a new config, and the reload report;
//! - [`status_file`]: the JSON snapshots `status_file` asks for, rewritten atomically;
//! - [`lifecycle`]: one daemon per config (PID file + flock), detached start, stop, autostart;
//! - [`logfile`]: the size-capped rotating log file and `rmcp-mux logs`;
//! - [`procmem`]: the resident memory of the daemon and of each child's process group;
//! - [`login_path`]: the login shell's PATH for servers of a daemon started outside a shell.

mod config_watch;
pub mod control;
pub mod lifecycle;
pub mod logfile;
pub mod login_path;
pub mod procmem;
pub mod reload;
pub mod status_file;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, DaemonConfig, Selection, ServerConfig, Share};
use crate::mux::actor::{ServerHandle, ServerStatus};
use crate::mux::listener;
use crate::status::{Command, ServerState};
use reload::{ReloadError, ReloadReport, StartFailure};

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
    /// The PATH servers are started with (the login shell's when the daemon resolved it, see
    /// [`crate::daemon::login_path`]); a server's own `env` PATH overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_path: Option<String>,
    /// One entry per server, in config order.
    pub servers: Vec<ServerReport>,
    /// The daemon's own resident memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// The daemon and every child's process group together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_rss_bytes: Option<u64>,
    /// What sharing saves: for each shared child (a global server's, or a project's),
    /// (clients − 1) × its resident memory, the copies each client would otherwise start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_bytes: Option<u64>,
    /// The HTTP front, when `[daemon] http` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpReport>,
}

/// Where hosts reach the servers by URL: `URL/NAME/mcp`, with the token in `token_file` as
/// `Authorization: Bearer`. Never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpReport {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The file holding the bearer token.
    pub token_file: PathBuf,
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
    /// `global` (one child for everyone), `project` or `client`.
    #[serde(default)]
    pub share: Share,
    /// Resident memory of its child's whole process group (of all its instances' together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// A `global` server whose tools look per-session (browser tabs, pages): the share to
    /// consider. The daemon never switches by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The children of a `project` or `client` server; the fields above sum them up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceReport>,
    /// The protocol era the current child speaks, `handshake` or `modern`, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub era: Option<String>,
    /// The protocol version negotiated with the current child, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The names its connected clients gave in `clientInfo` ("Cursor", "Claude Code"), each
    /// once: who uses it, for the menu and `status --json`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_names: Vec<String>,
    /// Requests of 2026-07-28 clients answered from the shared cache of a modern child's
    /// public results: child round trips saved.
    #[serde(default)]
    pub cache_hits: u64,
    /// Removed from the config by a reload, but still connected clients (or a child still
    /// stopping) keep it: it answers them `server_unavailable` until the last one leaves, and
    /// then it is gone from the status. Listed so that those clients and that child are seen
    /// somewhere; commands for it are refused. Absent (false) for the servers of the config.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// One child of a server shared per project or per client, in [`ServerReport::instances`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceReport {
    /// Its project folder, `no project`, or `client N`.
    pub key: String,
    /// The project folder it runs for.
    pub project: Option<PathBuf>,
    /// Its child's pid while it runs.
    pub pid: Option<u32>,
    /// Its state, as a server's.
    pub state: ServerState,
    /// Its connected clients.
    pub clients: usize,
    /// Requests waiting for its child.
    pub pending: usize,
    /// Its restarts after crashes.
    pub restarts: u32,
    /// How long its child has been running.
    pub uptime_ms: Option<u64>,
    /// Resident memory of its child's whole process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
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
            hint: s.hint.clone(),
            share: s.share,
            instances: s
                .instances
                .iter()
                .map(|i| InstanceReport {
                    key: i.key.clone(),
                    project: i.project.clone(),
                    pid: i.status.pid,
                    state: i.status.state,
                    clients: i.status.clients,
                    pending: i.status.pending,
                    restarts: i.status.restarts,
                    uptime_ms: i
                        .status
                        .running_since
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    rss_bytes: None,
                })
                .collect(),
            rss_bytes: None,
            era: s.era.map(str::to_owned),
            protocol_version: s.protocol_version.clone(),
            client_names: s.client_names.clone(),
            cache_hits: s.cache_hits,
            removed: s.retired,
        }
    }

    /// Fills in the resident memory of its children from `mem`.
    fn measure(&mut self, mem: &procmem::Sample) {
        for i in &mut self.instances {
            i.rss_bytes = i.pid.and_then(|p| mem.group(p));
        }
        self.rss_bytes = if self.instances.is_empty() {
            self.pid.and_then(|p| mem.group(p))
        } else {
            let each: Vec<u64> = self.instances.iter().filter_map(|i| i.rss_bytes).collect();
            (!each.is_empty()).then(|| each.iter().sum())
        };
    }

    /// What this server's sharing saves: each shared child counted once for every client
    /// beyond the first (a client's own child saves nothing, and neither does the child of a
    /// removed server, which is stopping and serves no one).
    fn saved(&self) -> u64 {
        if self.removed {
            return 0;
        }
        let shared = |clients: usize, rss: Option<u64>| {
            (clients.saturating_sub(1) as u64).saturating_mul(rss.unwrap_or(0))
        };
        match self.share {
            Share::Global => shared(self.clients, self.rss_bytes),
            Share::Project => self
                .instances
                .iter()
                .map(|i| shared(i.clients, i.rss_bytes))
                .sum(),
            Share::Client => 0,
        }
    }
}

/// One running server: its config, its handle, and the token that stops it alone.
struct Entry {
    cfg: ServerConfig,
    handle: ServerHandle,
    token: CancellationToken,
}

/// What a reload changes, behind one lock.
struct Live {
    /// The running servers, in config order.
    entries: Vec<Entry>,
    /// `global` servers removed by a reload whose clients are still connected: answered until
    /// they leave (see [`ServerHandle::retire`]), and put back in service if added back.
    retired: Vec<Entry>,
    /// The `[daemon]` keys in effect; `control_socket` stays the one bound at start.
    daemon: DaemonConfig,
    /// Why the last reload was refused.
    config_error: Option<String>,
}

impl Live {
    /// The retired servers whose actor still runs (one that has ended stays in the list until
    /// the next reload), each once: while a reload retires a server it is briefly in both
    /// lists, and the config's list has it then.
    fn lingering(&self) -> impl Iterator<Item = &Entry> {
        self.retired
            .iter()
            .filter(|e| !e.handle.ended() && !self.entries.iter().any(|l| l.handle.same(&e.handle)))
    }

    /// Why a command for `name` is refused when no server of the config has that name but a
    /// removed one still lingers; `None` when there is no such server either.
    fn removed(&self, name: &str) -> Option<String> {
        let e = self.lingering().find(|e| e.handle.name() == name)?;
        let report = ServerReport::from_status(&e.handle.status(), Instant::now());
        Some(format!(
            "server `{name}` was removed from the config and is out of service ({}); add it \
             back to the config to run it again",
            crate::status::table::removed_note(&report)
        ))
    }

    /// The error for a command naming no server of the config: removed, or unknown (with the
    /// closest name suggested).
    fn not_found(&self, name: &str) -> String {
        self.removed(name).unwrap_or_else(|| {
            let names: Vec<&str> = self.entries.iter().map(|e| e.handle.name()).collect();
            unknown_server(name, &names)
        })
    }
}

/// What the control socket and the tray share: the running servers, the config they came
/// from, and the means to reload it.
pub struct Shared {
    live: RwLock<Live>,
    started: Instant,
    config: PathBuf,
    /// Held for a whole reload, so that the watcher, SIGHUP and `rmcp-mux reload` never run
    /// two at once; it keeps the `--only`/`--except` selection of the command line.
    reloading: tokio::sync::Mutex<Selection>,
    token: CancellationToken,
    tracker: TaskTracker,
    /// The HTTP front, when it runs (fixed at start).
    http: Option<HttpReport>,
    /// Woken when the server set, the `[daemon]` keys or the config error change (and, for
    /// servers with a status file, when their status does): the status-file writer waits on it.
    pub(crate) changed: Arc<Notify>,
}

impl Shared {
    /// Reloads the config on every SIGHUP until the daemon shuts down, as the foreground
    /// daemon does. For hosts of an in-process daemon that handle their own stop signals (the
    /// menu-bar app): without a handler, SIGHUP's default action would end the process without
    /// stopping the servers.
    pub async fn reload_on_sighup(self: Arc<Self>) {
        let Some(mut hup) = sighup() else {
            return;
        };
        loop {
            tokio::select! {
                // Cancel safe: a token and Signal::recv (which loses no signal when dropped).
                () = self.token.cancelled() => break,
                Some(()) = hup.recv() => {
                    info!("SIGHUP received; reloading the config");
                    // The outcome is logged (and shown in status) by reload itself.
                    let _ = self.reload().await;
                }
            }
        }
    }

    fn live(&self) -> RwLockReadGuard<'_, Live> {
        // Code holding the lock only moves values in and out; even an update cut short leaves
        // a usable `Live`, so a poisoned lock is still good to read.
        self.live.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn live_mut(&self) -> RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The whole daemon's status now.
    pub fn status(&self) -> DaemonStatus {
        let now = Instant::now();
        let live = self.live();
        let mut servers: Vec<ServerReport> = live
            .entries
            .iter()
            .map(|e| ServerReport::from_status(&e.handle.status(), now))
            .collect();
        // After the config's servers: removed ones still kept by their clients, or by a child
        // that is still stopping (each marked `removed` by its own status, being retired).
        servers.extend(
            live.lingering()
                .map(|e| ServerReport::from_status(&e.handle.status(), now))
                .filter(|s| s.clients > 0 || s.pid.is_some()),
        );
        let leaders: Vec<u32> = servers
            .iter()
            .flat_map(|s| {
                s.pid
                    .into_iter()
                    .chain(s.instances.iter().filter_map(|i| i.pid))
            })
            .collect();
        let mem = procmem::sample(&leaders);
        for s in &mut servers {
            s.measure(&mem);
        }
        let children: u64 = servers.iter().filter_map(|s| s.rss_bytes).sum();
        DaemonStatus {
            rss_bytes: mem.own,
            total_rss_bytes: mem.own.map(|own| own + children),
            saved_bytes: Some(servers.iter().map(ServerReport::saved).sum()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            config: self.config.clone(),
            log_file: crate::daemon::logfile::active(),
            config_error: live.config_error.clone(),
            child_path: crate::daemon::login_path::child_path(),
            servers,
            http: self.http.clone(),
        }
    }

    /// The handles of every running server, in config order (a copy: reloads change the set).
    pub fn servers(&self) -> Vec<ServerHandle> {
        self.live()
            .entries
            .iter()
            .map(|e| e.handle.clone())
            .collect()
    }

    /// What the HTTP front needs of the server called `name` to open a session on it.
    pub(crate) fn http_target(&self, name: &str) -> Option<crate::http::Target> {
        let live = self.live();
        let e = live.entries.iter().find(|e| e.cfg.name == name)?;
        let (clients, max_clients) = e.handle.clients();
        Some(crate::http::Target {
            full: clients >= max_clients,
            max_clients,
            socket: e.cfg.socket.clone(),
            max_request_bytes: e.cfg.max_request_bytes,
            max_response_bytes: e.cfg.max_response_bytes,
        })
    }

    /// The config file this daemon runs and reloads.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Why the last reload was refused, until a good config is loaded.
    pub fn config_error(&self) -> Option<String> {
        self.live().config_error.clone()
    }

    /// The status files to write: the daemon's, and each server's with its handle.
    pub(crate) fn status_files(&self) -> (Option<PathBuf>, Vec<(ServerHandle, Option<PathBuf>)>) {
        let live = self.live();
        let mut servers: Vec<(ServerHandle, Option<PathBuf>)> = live
            .entries
            .iter()
            .map(|e| (e.handle.clone(), e.cfg.status_file.clone()))
            .collect();
        // A removed server's file follows it while it lingers (then keeps its final state),
        // unless a server of the config writes that file now.
        for e in live.lingering() {
            let taken = |p: &PathBuf| {
                live.entries
                    .iter()
                    .any(|l| l.cfg.status_file.as_ref() == Some(p))
            };
            let file = e.cfg.status_file.clone().filter(|p| !taken(p));
            servers.push((e.handle.clone(), file));
        }
        (live.daemon.status_file.clone(), servers)
    }

    /// Sends a command to one server by name.
    ///
    /// # Errors
    /// An unknown name (with the closest known one suggested), or a server shutting down.
    pub async fn command(&self, name: &str, cmd: Command) -> anyhow::Result<()> {
        let found = {
            let live = self.live();
            match live.entries.iter().find(|e| e.handle.name() == name) {
                Some(e) => Ok(e.handle.clone()),
                None => Err(live.not_found(name)),
            }
        };
        match found {
            Ok(h) => h.command(cmd).await,
            Err(msg) => anyhow::bail!("{msg}"),
        }
    }

    /// Sends a command to one instance (by its key) of a server shared per project or per
    /// client: the menu's Restart and Stop of an instance.
    ///
    /// # Errors
    /// An unknown server, or no instance with that key.
    pub async fn command_instance_key(
        &self,
        name: &str,
        key: &str,
        cmd: Command,
    ) -> anyhow::Result<()> {
        let found = self
            .live()
            .entries
            .iter()
            .find(|e| e.handle.name() == name)
            .map(|e| e.handle.clone());
        match found {
            Some(h) => h.command_key(key, cmd).await,
            None => match self.live().removed(name) {
                Some(why) => anyhow::bail!("{why}"),
                None => anyhow::bail!("unknown server `{name}`"),
            },
        }
    }

    /// Sends a command to the instance of one project of a `share = "project"` server.
    ///
    /// # Errors
    /// An unknown server, one not shared per project, or no instance for that project.
    pub async fn command_instance(
        &self,
        name: &str,
        project: &Path,
        cmd: Command,
    ) -> anyhow::Result<()> {
        let found = {
            let live = self.live();
            match live.entries.iter().find(|e| e.handle.name() == name) {
                Some(e) => Ok((e.handle.clone(), e.cfg.share)),
                None => Err(live.not_found(name)),
            }
        };
        let (handle, share) = found.map_err(|m| anyhow::anyhow!("{m}"))?;
        if share != Share::Project {
            anyhow::bail!(
                "server `{name}` is shared {}; --project applies to servers with share = \"project\"",
                match share {
                    Share::Client => "per client",
                    _ => "by everyone",
                }
            );
        }
        handle.command_project(project, cmd).await
    }

    /// Reads the config file again and applies it: servers added are bound and started,
    /// removed ones stopped; changed ones are handed their new config and restart their child
    /// with it, keeping their clients (a moved socket is bound at its new path first), except
    /// that one whose `share` changed is stopped and started anew; unchanged ones (and their
    /// clients) are not touched.
    ///
    /// It returns once the children of removed servers have exited (within twice the longest
    /// grace period). A removed `global` server whose clients are still connected stays in
    /// [`Shared::status`], marked [`ServerReport::removed`], until the last one leaves.
    ///
    /// A server that cannot be bound is reported in [`ReloadReport::failed`] and tried again
    /// by the next reload; the others are applied anyway.
    ///
    /// # Errors
    /// An invalid, unreadable or deleted config (the running configuration stays, and the
    /// error shows in [`DaemonStatus::config_error`] until a good config is loaded), or a
    /// daemon that is shutting down.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let selection = self.reloading.lock().await;
        if self.token.is_cancelled() {
            return Err(ReloadError::ShuttingDown);
        }
        let loaded = Config::load(&self.config).and_then(|cfg| {
            let wanted = cfg.select_by(&selection)?;
            Ok((cfg, wanted))
        });
        let (cfg, wanted) = match loaded {
            Ok(ok) => ok,
            Err(e) => {
                error!(error = %e, "config reload refused; still running the previous configuration");
                self.live_mut().config_error = Some(e.to_string());
                self.changed.notify_one();
                return Err(e.into());
            }
        };
        let (running, old_daemon) = {
            let live = self.live();
            let running: Vec<ServerConfig> = live.entries.iter().map(|e| e.cfg.clone()).collect();
            (running, live.daemon.clone())
        };
        let diff = reload::diff(&running, &wanted);
        let mut report = ReloadReport {
            config: self.config.clone(),
            added: diff.added.iter().map(|s| s.name.clone()).collect(),
            removed: diff.removed.clone(),
            restarted: diff.changed.iter().map(|s| s.name.clone()).collect(),
            unchanged: diff.unchanged.iter().map(|s| s.name.clone()).collect(),
            ..ReloadReport::default()
        };
        let mut daemon = cfg.daemon.clone();
        if daemon.control_socket != old_daemon.control_socket {
            let note = format!(
                "control_socket changed to {}: needs a daemon restart (still listening on {})",
                daemon.control_socket.display(),
                old_daemon.control_socket.display()
            );
            warn!("{note}");
            report.notes.push(note);
            daemon.control_socket = old_daemon.control_socket.clone();
        }
        if daemon.http != old_daemon.http {
            let note = "http changed: needs a daemon restart (the HTTP front keeps its address)";
            warn!("{note}");
            report.notes.push(note.to_owned());
            daemon.http = old_daemon.http;
        }

        // A changed server keeps its actor and its clients: it is handed the new config and
        // restarts its child with it. Only a change of sharing scope (`share`), which changes
        // which child a client belongs to, stops the old server and starts a new one.
        let replaced: Vec<&ServerConfig> = {
            let live = self.live();
            diff.changed
                .iter()
                .filter(|c| {
                    live.entries
                        .iter()
                        .find(|e| e.cfg.name == c.name)
                        .is_none_or(|e| e.cfg.share != c.share)
                })
                .collect()
        };
        // Out of service first: a removed server may free a path an added or moved one wants.
        // A removed `global` one is retired: its socket goes at once, its clients stay and are
        // answered until they leave (or it is added back). A removed `project` or `client`
        // server, and one whose `share` changed, is stopped: its clients are closed (a proxy
        // reconnects to the new server).
        let (retiring, stopping): (Vec<Entry>, Vec<ServerHandle>) = {
            let mut live = self.live_mut();
            live.retired.retain(|e| !e.handle.ended());
            let mut retiring = Vec::new();
            let mut stopping = Vec::new();
            for e in &live.entries {
                let removed = diff.removed.contains(&e.cfg.name);
                if !removed && !replaced.iter().any(|c| c.name == e.cfg.name) {
                    continue;
                }
                if removed && e.cfg.share == Share::Global {
                    info!(server = %e.cfg.name, "taking out of service for reload");
                    retiring.push(Entry {
                        cfg: e.cfg.clone(),
                        handle: e.handle.clone(),
                        token: e.token.clone(),
                    });
                } else {
                    info!(server = %e.cfg.name, "stopping for reload");
                    e.token.cancel();
                    stopping.push(e.handle.clone());
                }
            }
            (retiring, stopping)
        };
        let mut retired: Vec<ServerHandle> = Vec::with_capacity(retiring.len());
        for e in retiring {
            match e.handle.retire().await {
                Ok(()) => {
                    retired.push(e.handle.clone());
                    self.live_mut().retired.push(e);
                }
                // It ended meanwhile: nothing is left of it.
                Err(_) => e.token.cancel(),
            }
        }
        let limit = running
            .iter()
            .map(|s| s.shutdown_grace)
            .max()
            .unwrap_or_default()
            * 2
            + STOP_MARGIN;
        tokio::join!(
            stopped_all(&stopping, limit),
            children_stopped(&retired, limit)
        );

        // Changed servers handed their new config, by name; those that could not take it
        // (their socket could not move) keep running as they were.
        let mut reconfigured: Vec<String> = Vec::new();
        let mut kept_old: Vec<String> = Vec::new();
        let mut to_start: Vec<ServerConfig> = diff.added.clone();
        for c in &diff.changed {
            if self.token.is_cancelled() {
                // Shutting down: it stays in the list, to be stopped with the others.
                kept_old.push(c.name.clone());
                continue;
            }
            if replaced.iter().any(|r| r.name == c.name) {
                to_start.push(c.clone());
                continue;
            }
            let (handle, old_socket) = {
                let live = self.live();
                match live.entries.iter().find(|e| e.cfg.name == c.name) {
                    Some(e) => (e.handle.clone(), e.cfg.socket.clone()),
                    None => continue,
                }
            };
            let socket = if old_socket == c.socket {
                None
            } else {
                match listener::bind(&c.socket) {
                    Ok(sock) => {
                        info!(server = %c.name, socket = %c.socket.display(), "listening (moved)");
                        Some(sock)
                    }
                    Err(e) => {
                        let error = format!("server {}: cannot listen: {e}", c.name);
                        error!(server = %c.name, error = %error, "cannot move the server's socket; it runs as it was");
                        report.failed.push(StartFailure {
                            server: c.name.clone(),
                            error,
                        });
                        kept_old.push(c.name.clone());
                        continue;
                    }
                }
            };
            info!(server = %c.name, "handing the server its new config");
            match handle.reconfigure(c.clone(), socket).await {
                Ok(()) => reconfigured.push(c.name.clone()),
                // It ended meanwhile (stopping): started afresh like an added one.
                Err(_) => to_start.push(c.clone()),
            }
        }

        let mut started: Vec<Entry> = Vec::new();
        for s in &to_start {
            if self.token.is_cancelled() {
                break;
            }
            if let Some(entry) = self.revive(s).await {
                started.push(entry);
                continue;
            }
            match self.start_server(s.clone()) {
                Ok(entry) => started.push(entry),
                Err(e) => {
                    let error = format!("{e:#}");
                    error!(server = %s.name, error = %error, "cannot start server from the new config");
                    report.failed.push(StartFailure {
                        server: s.name.clone(),
                        error,
                    });
                }
            }
        }
        report
            .added
            .retain(|n| !report.failed.iter().any(|f| &f.server == n));
        report
            .restarted
            .retain(|n| !report.failed.iter().any(|f| &f.server == n));
        {
            let mut live = self.live_mut();
            let mut old: Vec<Entry> = std::mem::take(&mut live.entries);
            let mut entries = Vec::with_capacity(wanted.len());
            for want in &wanted {
                if let Some(i) = started.iter().position(|e| e.cfg.name == want.name) {
                    entries.push(started.swap_remove(i));
                } else if let Some(i) = diff.unchanged.iter().position(|u| u.name == want.name) {
                    if let Some(j) = old.iter().position(|e| e.cfg.name == want.name) {
                        let mut entry = old.swap_remove(j);
                        entry.cfg = diff.unchanged[i].clone();
                        entries.push(entry);
                    }
                } else if reconfigured.contains(&want.name) || kept_old.contains(&want.name) {
                    if let Some(j) = old.iter().position(|e| e.cfg.name == want.name) {
                        let mut entry = old.swap_remove(j);
                        if reconfigured.contains(&want.name) {
                            entry.cfg = want.clone();
                        }
                        entries.push(entry);
                    }
                }
            }
            live.entries = entries;
            live.daemon = daemon;
            // The error already names the server ("server x: cannot listen: ...").
            live.config_error = report.failed.first().map(|f| f.error.clone());
        }
        self.changed.notify_one();
        info!(
            added = ?report.added,
            removed = ?report.removed,
            restarted = ?report.restarted,
            unchanged = report.unchanged.len(),
            "config reloaded"
        );
        Ok(report)
    }

    /// Puts a retired server of this name back in service with `cfg` (its clients are served
    /// again), if there is one of the same `share` whose actor still runs; `None` otherwise.
    async fn revive(&self, cfg: &ServerConfig) -> Option<Entry> {
        let entry = {
            let mut live = self.live_mut();
            let i = live
                .retired
                .iter()
                .position(|e| e.cfg.name == cfg.name && e.cfg.share == cfg.share)?;
            live.retired.swap_remove(i)
        };
        // Unbound, it is left to `start_server`, which reports why.
        let sock = match listener::bind(&cfg.socket) {
            Ok(sock) => sock,
            Err(_) => {
                self.live_mut().retired.push(entry);
                return None;
            }
        };
        info!(server = %cfg.name, socket = %cfg.socket.display(), "listening; back in service, its clients kept");
        match entry.handle.reconfigure(cfg.clone(), Some(sock)).await {
            Ok(()) => Some(Entry {
                cfg: cfg.clone(),
                handle: entry.handle,
                token: entry.token,
            }),
            Err(_) => {
                entry.token.cancel();
                None
            }
        }
    }

    /// Binds one server's socket and starts its actor under its own token.
    fn start_server(&self, cfg: ServerConfig) -> anyhow::Result<Entry> {
        let sock = listener::bind(&cfg.socket)
            .with_context(|| format!("server {}: cannot listen", cfg.name))?;
        info!(server = %cfg.name, socket = %cfg.socket.display(), "listening");
        let token = self.token.child_token();
        let handle = crate::mux::spawn_server(cfg.clone(), sock, token.clone(), &self.tracker);
        Ok(Entry { cfg, handle, token })
    }
}

/// Added to the grace periods when waiting for servers to stop (writers flushing, a loaded
/// machine).
const STOP_MARGIN: Duration = Duration::from_secs(1);

/// Waits until every one of these actors has ended (its child gone, its socket unlinked),
/// within `limit` overall.
async fn stopped_all(handles: &[ServerHandle], limit: Duration) {
    let wait = async {
        for h in handles {
            let mut rx = h.watch();
            // `changed` fails once the actor has dropped its sender, i.e. it has returned.
            while rx.changed().await.is_ok() {}
        }
    };
    if tokio::time::timeout(limit, wait).await.is_err() {
        warn!("some servers did not stop in time");
    }
}

/// Waits until the children of these retired servers have exited (their clients may stay),
/// within `limit` overall: a reload is done once what it removed has stopped, and from then on
/// a removed server is in the status only while clients keep it.
async fn children_stopped(handles: &[ServerHandle], limit: Duration) {
    let wait = async {
        for h in handles {
            let mut rx = h.watch();
            // Fails once the actor has ended, which it does after its child.
            let _ = rx.wait_for(|s| s.pid.is_none()).await;
        }
    };
    if tokio::time::timeout(limit, wait).await.is_err() {
        warn!("some removed servers' children did not stop in time");
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

/// A started daemon: every socket bound, every actor running, the config watched.
pub struct Daemon {
    shared: Arc<Shared>,
    token: CancellationToken,
    /// Stops the status-file writer, after the servers (it writes their final state).
    writer_token: CancellationToken,
    tracker: TaskTracker,
}

impl Daemon {
    /// Binds every socket (all or nothing) and starts every server of `servers`.
    ///
    /// Reloads keep the selection that picked `servers`: when they are the config's enabled
    /// servers, a reload runs the new file's enabled servers; otherwise exactly these names
    /// (as `--only` would). [`Daemon::start_selected`] takes the selection explicitly.
    ///
    /// The config file is watched and reloaded on change; SIGHUP is left to the caller
    /// ([`run`] and [`run_selected`] listen for it), since signals belong to the process.
    ///
    /// # Errors
    /// A socket that cannot be bound or is served by another live daemon; nothing is left
    /// behind when this fails.
    pub async fn start(config: &Config, servers: Vec<ServerConfig>) -> anyhow::Result<Daemon> {
        let enabled: Vec<&str> = config
            .servers
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.name.as_str())
            .collect();
        let picked: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        let selection = if picked == enabled {
            Selection::default()
        } else {
            Selection {
                only: picked.iter().map(|s| (*s).to_owned()).collect(),
                except: vec![],
            }
        };
        Self::start_selected(config, servers, selection).await
    }

    /// As [`Daemon::start`], with the `--only`/`--except` selection that picked `servers`,
    /// which reloads apply to the new file.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub async fn start_selected(
        config: &Config,
        servers: Vec<ServerConfig>,
        selection: Selection,
    ) -> anyhow::Result<Daemon> {
        let started = Instant::now();
        let control_socket = listener::bind(&config.daemon.control_socket).with_context(|| {
            "another rmcp-mux may be running for this config (see `rmcp-mux status`)".to_owned()
        })?;
        let http = match config.daemon.http {
            Some(addr) => Some(crate::http::Listener::bind(addr).await?),
            None => None,
        };
        let http_report = match &http {
            Some(l) => Some(HttpReport {
                url: format!("http://{}", l.local_addr()?),
                token_file: crate::http::token::path()?,
            }),
            None => None,
        };
        let mut bound = Vec::with_capacity(servers.len());
        for s in &servers {
            let sock = listener::bind(&s.socket)
                .with_context(|| format!("server {}: cannot listen", s.name))?;
            bound.push(sock);
        }
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let entries: Vec<Entry> = servers
            .into_iter()
            .zip(bound)
            .map(|(cfg, sock)| {
                info!(server = %cfg.name, socket = %cfg.socket.display(), "listening");
                let server_token = token.child_token();
                let handle =
                    crate::mux::spawn_server(cfg.clone(), sock, server_token.clone(), &tracker);
                Entry {
                    cfg,
                    handle,
                    token: server_token,
                }
            })
            .collect();
        let count = entries.len();
        let shared = Arc::new(Shared {
            live: RwLock::new(Live {
                entries,
                daemon: config.daemon.clone(),
                config_error: None,
                retired: Vec::new(),
            }),
            started,
            config: config.path.clone(),
            reloading: tokio::sync::Mutex::new(selection),
            token: token.clone(),
            tracker: tracker.clone(),
            http: http_report,
            changed: Arc::new(Notify::new()),
        });
        if let Some(listener) = http {
            tracker.spawn(crate::http::serve(
                listener,
                shared.clone(),
                token.child_token(),
                tracker.clone(),
            ));
        }
        tracker.spawn(control::serve(
            control_socket,
            shared.clone(),
            token.child_token(),
        ));
        crate::daemon::config_watch::spawn(shared.clone(), token.child_token(), &tracker);
        crate::io::trim::spawn(token.child_token(), &tracker);
        let writer_token = CancellationToken::new();
        crate::daemon::status_file::spawn(shared.clone(), writer_token.clone(), &tracker);
        info!(
            servers = count,
            control = %config.daemon.control_socket.display(),
            "rmcp-mux ready"
        );
        // A `daemon start` waiting for this process returns now (no-op in the foreground).
        crate::daemon::lifecycle::notify_ready();
        Ok(Daemon {
            shared,
            token,
            writer_token,
            tracker,
        })
    }

    /// What the control socket serves, for in-process users such as the tray.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Reads the config again and applies it; see [`Shared::reload`].
    ///
    /// # Errors
    /// As [`Shared::reload`].
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.shared.reload().await
    }

    /// Stops every server in order and waits, within a bound, until they are gone; then
    /// writes the status files one last time.
    pub async fn shutdown(self) {
        info!("shutting down");
        self.token.cancel();
        // A reload in progress starts nothing more once the token is cancelled; waiting for it
        // to end makes the list below complete.
        let _no_more_reloads = self.shared.reloading.lock().await;
        let (handles, grace): (Vec<ServerHandle>, Duration) = {
            let live = self.shared.live();
            (
                live.entries
                    .iter()
                    .chain(&live.retired)
                    .map(|e| e.handle.clone())
                    .collect(),
                live.entries
                    .iter()
                    .map(|e| e.cfg.shutdown_grace)
                    .max()
                    .unwrap_or_default(),
            )
        };
        // Children get their grace period; writers a moment to flush after that.
        stopped_all(&handles, grace + STOP_MARGIN).await;
        self.writer_token.cancel();
        self.tracker.close();
        if tokio::time::timeout(STOP_MARGIN, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not stop in time");
        }
    }

    /// Serves until `shutdown` completes, reloading on every signal of `hup`, then stops
    /// everything. `--tray`, which owns its stop signals itself, uses
    /// [`Shared::reload_on_sighup`] for the same reloads.
    async fn serve_until(
        self,
        shutdown: impl Future<Output = ()>,
        mut hup: Option<tokio::signal::unix::Signal>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Cancel safe: Signal::recv loses no signal when dropped.
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    info!("SIGHUP received; reloading the config");
                    // The outcome is logged (and shown in status) by reload itself.
                    let _ = self.reload().await;
                }
            }
        }
        self.shutdown().await;
    }
}

/// Runs every server of `servers` until `shutdown` completes, then stops them all. SIGHUP
/// reloads the config; the file is also watched. Reloads keep the selection as described at
/// [`Daemon::start`].
///
/// # Errors
/// As [`Daemon::start`].
pub async fn run(
    config: &Config,
    servers: Vec<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Listen before the sockets are up: a SIGHUP sent once `ready` is logged must reload, not
    // kill (its default action).
    let hup = sighup();
    let daemon = Daemon::start(config, servers).await?;
    daemon.serve_until(shutdown, hup).await;
    Ok(())
}

/// As [`run`], for the servers `selection` picks from `config` (the command line's
/// `--only`/`--except`), which every reload applies again to the new file.
///
/// # Errors
/// A selection naming unknown servers or picking none, and as [`Daemon::start`].
pub async fn run_selected(
    config: &Config,
    selection: Selection,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let servers = config.select_by(&selection)?;
    let hup = sighup();
    let daemon = Daemon::start_selected(config, servers, selection).await?;
    daemon.serve_until(shutdown, hup).await;
    Ok(())
}

/// The SIGHUP stream, or `None` (logged) when it cannot be had.
fn sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; reload with `rmcp-mux reload`");
            None
        }
    }
}

/// Status snapshots for the unit tests of the modules that draw them (status table, dashboard,
/// tray): one place to extend when a field is added.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{DaemonStatus, ServerReport};
    use crate::status::ServerState;

    /// A server with nothing going on: no pid, no clients, no history.
    pub(crate) fn report(name: &str, state: ServerState) -> ServerReport {
        ServerReport {
            name: name.into(),
            state,
            socket: format!("/s/{name}.sock").into(),
            pid: None,
            clients: 0,
            max_clients: 64,
            pending: 0,
            restarts: 0,
            uptime_ms: None,
            last_exit: None,
            restart_in_ms: None,
            max_restarts: 5,
            share: crate::config::Share::Global,
            rss_bytes: None,
            hint: None,
            instances: Vec::new(),
            era: None,
            protocol_version: None,
            client_names: Vec::new(),
            cache_hits: 0,
            removed: false,
        }
    }

    /// A daemon running `servers`, with neither a log file nor a config error.
    pub(crate) fn status(servers: Vec<ServerReport>) -> DaemonStatus {
        DaemonStatus {
            version: "0.4.0".into(),
            pid: 7,
            uptime_ms: 1000,
            config: "/c/mux.toml".into(),
            log_file: None,
            config_error: None,
            child_path: None,
            servers,
            rss_bytes: None,
            total_rss_bytes: None,
            saved_bytes: None,
            http: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::report;
    use super::ServerReport;
    use crate::status::ServerState;

    #[test]
    fn removed_is_in_the_json_only_when_true_and_optional_when_read() {
        let live = report("a", ServerState::Running);
        let json = serde_json::to_value(&live).unwrap();
        assert!(json.get("removed").is_none(), "{json}");
        let old = ServerReport {
            removed: true,
            ..live.clone()
        };
        let json = serde_json::to_value(&old).unwrap();
        assert_eq!(json["removed"], true, "{json}");
        assert_eq!(serde_json::from_value::<ServerReport>(json).unwrap(), old);
        // What a daemon without the field writes reads as a server of the config.
        let mut without = serde_json::to_value(&live).unwrap();
        without.as_object_mut().unwrap().remove("removed");
        assert!(
            !serde_json::from_value::<ServerReport>(without)
                .unwrap()
                .removed
        );
    }

    #[test]
    fn a_removed_server_saves_nothing() {
        let shared = ServerReport {
            clients: 3,
            rss_bytes: Some(10),
            ..report("a", ServerState::Running)
        };
        assert_eq!(shared.saved(), 20);
        let removed = ServerReport {
            removed: true,
            ..shared
        };
        assert_eq!(
            removed.saved(),
            0,
            "its child is stopping and serves no one"
        );
    }
}
