//! The instances of a server shared per project or per client (`share = "project"` or
//! `"client"`): one dispatcher owns the server's socket, learns each connection's project from
//! the proxy's first line ([`super::project`]), and hands the connection to that project's (or
//! that client's) own actor, starting one when there is none. Each instance is an ordinary
//! actor with its own router and child; it ends by itself once it has had clients and none is
//! left for its idle time (at once for a client's instance), stopping its child as any actor
//! does (SIGTERM to the group, `shutdown_grace_ms`, SIGKILL).
//!
//! To the daemon the dispatcher looks like one server: one [`ServerHandle`] whose commands go
//! to every instance and whose status sums theirs. It makes no routing decision and reads no
//! message beyond the project line.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use super::actor::{self, Control, InstanceStatus, Order, ServerHandle, ServerStatus};
use super::listener::{self, BoundSocket};
use super::project::{self, First};
use crate::config::{ServerConfig, Share};
use crate::jsonrpc::framing::{Frame, LineCodec};
use crate::jsonrpc::{codes, reasons};
use crate::status::{Command, ServerState};

/// How long a connection may take to send its first line before it counts as a client with no
/// project (MCP clients speak first, so a real one sends `initialize` at once).
const FIRST_LINE_WAIT: Duration = Duration::from_secs(5);

/// One running instance, as status and commands see it.
#[derive(Clone)]
pub struct Instance {
    /// Its project folder, `no project`, or `client N`.
    pub key: String,
    /// The project folder it runs for.
    pub project: Option<PathBuf>,
    /// Its actor.
    pub handle: ServerHandle,
}

/// The instances of one server, shared by its dispatcher (which changes the list) and its
/// handle (which reads it for status and commands; never on the hot path).
pub type Live = Arc<Mutex<Vec<Instance>>>;

/// The instances as of now (a copy).
pub fn list(live: &Live) -> Vec<Instance> {
    live.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// A server's status summed over its instances: clients, pending requests and restarts add
/// up; it is `running` when one instance runs, `lazy` when none is there.
pub(crate) fn summed(base: &ServerStatus, live: &Live) -> ServerStatus {
    let instances: Vec<InstanceStatus> = list(live)
        .into_iter()
        .map(|i| InstanceStatus {
            key: i.key,
            project: i.project,
            status: i.handle.status(),
        })
        .collect();
    let states: Vec<ServerState> = instances.iter().map(|i| i.status.state).collect();
    let state = [
        ServerState::Running,
        ServerState::Starting,
        ServerState::Backoff,
        ServerState::Failed,
        ServerState::Stopped,
    ]
    .into_iter()
    .find(|s| states.contains(s))
    .unwrap_or(ServerState::Lazy);
    ServerStatus {
        state,
        pid: None,
        clients: instances.iter().map(|i| i.status.clients).sum(),
        pending: instances.iter().map(|i| i.status.pending).sum(),
        restarts: instances.iter().map(|i| i.status.restarts).sum(),
        cache_hits: instances.iter().map(|i| i.status.cache_hits).sum(),
        running_since: instances
            .iter()
            .filter_map(|i| i.status.running_since)
            .min(),
        // How an instance's child last ended (the tray's crash notice says it).
        last_exit: instances
            .iter()
            .find_map(|i| i.status.last_exit.clone())
            .or_else(|| base.last_exit.clone()),
        restart_at: instances.iter().filter_map(|i| i.status.restart_at).min(),
        client_names: distinct(instances.iter().flat_map(|i| &i.status.client_names)),
        instances,
        ..base.clone()
    }
}

/// Each name once, in the order first seen.
fn distinct<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

/// Starts the dispatcher of a `project` or `client` server on its bound socket. It stops when
/// `shutdown` is cancelled: it unlinks the socket, stops every instance and returns once they
/// are gone.
pub fn spawn(
    cfg: ServerConfig,
    socket: BoundSocket,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> ServerHandle {
    let base = ServerStatus {
        name: cfg.name.clone(),
        state: ServerState::Lazy,
        socket: cfg.socket.clone(),
        pid: None,
        clients: 0,
        max_clients: cfg.max_active_clients,
        pending: 0,
        restarts: 0,
        running_since: None,
        last_exit: None,
        restart_at: None,
        max_restarts: cfg.max_restarts,
        share: cfg.share,
        instances: Vec::new(),
        hint: None,
        era: None,
        protocol_version: None,
        client_names: Vec::new(),
        cache_hits: 0,
        // Only a `global` server is retired; this one is stopped when removed.
        retired: false,
    };
    let (status_tx, status_rx) = watch::channel(base);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let live: Live = Arc::default();
    let span = info_span!("server", name = %cfg.name);
    let dispatcher = Dispatcher {
        home: crate::config::expand_home(Path::new("~")),
        cfg: cfg.clone(),
        socket: Some(socket),
        slots: Vec::new(),
        live: live.clone(),
        status: status_tx,
        next_client: 1,
        stopped: false,
        tracker: tracker.clone(),
        shutdown,
    };
    tracker.spawn(dispatcher.run(cmd_rx).instrument(span));
    ServerHandle::of_instances(cfg.name, cmd_tx, status_rx, live)
}

/// An instance as the dispatcher keeps it: how to hand it a connection.
struct Slot {
    key: String,
    /// The project it runs for (its config is the server's for this project).
    dir: Option<PathBuf>,
    handle: ServerHandle,
    to: mpsc::UnboundedSender<UnixStream>,
}

/// What the instances' watchers report.
enum Note {
    /// An instance's status changed.
    Changed,
    /// An instance's actor ended.
    Ended(ServerHandle),
}

struct Dispatcher {
    cfg: ServerConfig,
    /// Where `${project}` points for a client that gave no project.
    home: PathBuf,
    socket: Option<BoundSocket>,
    slots: Vec<Slot>,
    live: Live,
    status: watch::Sender<ServerStatus>,
    next_client: u64,
    /// Stopped by `rmcp-mux stop NAME`: a new client gets `server_unavailable`, as a stopped
    /// global server's clients do, until `start` or `restart`.
    stopped: bool,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Dispatcher {
    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Control>) {
        let (conn_tx, mut conn_rx) = mpsc::channel::<(UnixStream, Option<PathBuf>)>(64);
        let (note_tx, mut note_rx) = mpsc::unbounded_channel::<Note>();
        let shutdown = self.shutdown.clone();
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        let mut stopping = false;
        loop {
            tokio::select! {
                // Cancel safe: UnixListener::accept loses nothing when dropped.
                accepted = accept(self.socket.as_ref()) => {
                    let Some(stream) = accepted else { continue };
                    self.take(stream, &conn_tx, &note_tx);
                }
                // Cancel safe: mpsc receivers.
                Some((stream, dir)) = conn_rx.recv(), if !stopping => self.hand(stream, dir, &note_tx),
                Some(note) = note_rx.recv() => {
                    if let Note::Ended(handle) = note {
                        self.slots.retain(|s| !s.handle.same(&handle));
                        self.publish_list();
                    }
                    self.publish();
                    if stopping && self.slots.is_empty() {
                        break;
                    }
                }
                Some(ctl) = cmd_rx.recv(), if !stopping => match ctl.order {
                    Order::Command(cmd) => {
                        info!(command = ?cmd, "control command for every instance");
                        self.stopped = cmd == Command::Stop;
                        let handles: Vec<ServerHandle> =
                            self.slots.iter().map(|s| s.handle.clone()).collect();
                        // Not awaited here: an instance busy stopping must not hold up the others.
                        self.tracker.spawn(async move {
                            for h in handles {
                                let _ = h.command(cmd).await;
                            }
                            let _ = ctl.done.send(());
                        });
                    }
                    Order::Reconfigure(cfg, socket) => {
                        self.reconfigure(*cfg, socket, ctl.done, &conn_tx, &note_tx);
                    }
                    // Not asked of a dispatcher (each instance has clients of its own): it
                    // stops as on shutdown.
                    Order::Retire => {
                        self.shutdown.cancel();
                        let _ = ctl.done.send(());
                    }
                },
                () = &mut stop, if !stopping => {
                    stopping = true;
                    if let Some(socket) = self.socket.take() {
                        socket.unlink();
                    }
                    // The instances' tokens are children of this one: they are stopping too.
                    if self.slots.is_empty() {
                        break;
                    }
                }
            }
        }
        self.publish();
        info!("server stopped");
    }

    /// Takes a new connection: hands it to its instance (for a `project` server once its first
    /// line named the project, read apart from the loop).
    fn take(
        &mut self,
        stream: UnixStream,
        conn_tx: &mpsc::Sender<(UnixStream, Option<PathBuf>)>,
        note_tx: &mpsc::UnboundedSender<Note>,
    ) {
        if !listener::peer_is_owner(&stream) {
            warn!("refused a connection from another user");
            return;
        }
        if self.cfg.share == Share::Project {
            // Read apart from this loop: a slow first line holds up no one else.
            let (tx, home) = (conn_tx.clone(), self.home.clone());
            let token = self.shutdown.clone();
            self.tracker.spawn(async move {
                let dir = tokio::select! {
                    // Cancel safe: the stream is only peeked at and read here.
                    dir = read_project(&stream, &home) => dir,
                    () = token.cancelled() => return,
                };
                // `None`: it closed before its first line; nothing to serve.
                if let Some(dir) = dir {
                    let _ = tx.send((stream, dir)).await;
                }
            });
        } else {
            self.hand(stream, None, note_tx);
        }
    }

    /// Gives a connection to its instance, starting one if needed (or refuses it past
    /// `max_instances`).
    fn hand(
        &mut self,
        stream: UnixStream,
        dir: Option<PathBuf>,
        notes: &mpsc::UnboundedSender<Note>,
    ) {
        let key = match self.cfg.share {
            Share::Client => {
                let n = self.next_client;
                self.next_client += 1;
                format!("client {n}")
            }
            _ => dir
                .as_ref()
                .map_or_else(|| "no project".to_owned(), |d| d.display().to_string()),
        };
        let mut stream = stream;
        if let Some(i) = self.slots.iter().position(|s| s.key == key) {
            match self.slots[i].to.send(stream) {
                Ok(()) => return,
                // It is ending (idle): a new instance takes the connection.
                Err(back) => {
                    stream = back.0;
                    self.slots.remove(i);
                }
            }
        }
        let refusal = if self.stopped {
            info!(key = %key, "refused a client: the server is stopped");
            Some((
                format!("server {} is stopped", self.cfg.name),
                format!(
                    r#"{{"reason":"{}","state":"stopped"}}"#,
                    reasons::SERVER_UNAVAILABLE
                ),
            ))
        } else if self.slots.len() >= self.cfg.max_instances {
            warn!(key = %key, max = self.cfg.max_instances, "refused a client over max_instances");
            let max = self.cfg.max_instances;
            Some((
                format!(
                    "server {} runs its limit of {max} instances (max_instances)",
                    self.cfg.name
                ),
                format!(
                    r#"{{"reason":"{}","max":{max}}}"#,
                    reasons::TOO_MANY_INSTANCES
                ),
            ))
        } else {
            None
        };
        if let Some((msg, data)) = refusal {
            let token = self.shutdown.clone();
            self.tracker.spawn(async move {
                tokio::select! {
                    () = refuse(stream, msg, data) => {}
                    // Cancel safe: dropping it closes the connection, which is all that is left.
                    () = token.cancelled() => {}
                }
            });
            return;
        }
        let mut cfg = self.cfg.for_project(dir.as_deref(), &self.home);
        // Started when its client first needs it, as a lazy server is.
        cfg.lazy_start = true;
        let idle = match self.cfg.share {
            Share::Client => Duration::ZERO,
            _ => self
                .cfg
                .idle_stop_after()
                .unwrap_or(crate::config::PROJECT_IDLE_STOP),
        };
        let (to, incoming) = mpsc::unbounded_channel();
        let span = info_span!("instance", key = %key);
        let handle = {
            let _entered = span.enter();
            actor::spawn_instance(
                cfg,
                incoming,
                idle,
                self.shutdown.child_token(),
                &self.tracker,
            )
        };
        info!(key = %key, "instance started");
        // Never fails: the receiver was just made and the actor has not run yet.
        let _ = to.send(stream);
        let mut watch = handle.watch();
        let (notes, ended) = (notes.clone(), handle.clone());
        self.tracker.spawn(async move {
            while watch.changed().await.is_ok() {
                if notes.send(Note::Changed).is_err() {
                    return;
                }
            }
            let _ = notes.send(Note::Ended(ended));
        });
        self.slots.push(Slot {
            key: key.clone(),
            dir: dir.clone(),
            handle: handle.clone(),
            to,
        });
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Instance {
                key,
                project: dir,
                handle,
            });
        self.publish();
    }

    /// Takes a changed config (see [`ServerHandle::reconfigure`]): new connections get it, and
    /// every instance is handed its project's version of it (apart from this loop: an
    /// instance busy stopping must not hold up the others), and `done` is told once they all
    /// took it. A moved socket is served from now on; the connections already waiting on the
    /// old one are handed on like any other.
    fn reconfigure(
        &mut self,
        cfg: ServerConfig,
        socket: Option<BoundSocket>,
        done: tokio::sync::oneshot::Sender<()>,
        conn_tx: &mpsc::Sender<(UnixStream, Option<PathBuf>)>,
        note_tx: &mpsc::UnboundedSender<Note>,
    ) {
        info!("config changed; every instance restarts its child with it, clients kept");
        self.cfg = cfg;
        if let Some(socket) = socket {
            if let Some(old) = self.socket.replace(socket) {
                old.unlink();
                while let Some(Ok((stream, _))) = old.listener.accept().now_or_never() {
                    self.take(stream, conn_tx, note_tx);
                }
            }
        }
        let orders: Vec<(ServerHandle, ServerConfig)> = self
            .slots
            .iter()
            .map(|slot| {
                let mut cfg = self.cfg.for_project(slot.dir.as_deref(), &self.home);
                cfg.lazy_start = true;
                (slot.handle.clone(), cfg)
            })
            .collect();
        self.tracker.spawn(async move {
            let taken = orders
                .into_iter()
                .map(|(handle, cfg)| async move { handle.reconfigure(cfg, None).await });
            // An instance that ended meanwhile needs nothing: its next client starts a new one.
            let _ = futures_util::future::join_all(taken).await;
            let _ = done.send(());
        });
        let mut status = self.status.borrow().clone();
        status.socket = self.cfg.socket.clone();
        status.max_clients = self.cfg.max_active_clients;
        status.max_restarts = self.cfg.max_restarts;
        self.status.send_replace(status);
    }

    /// The shared list follows the slots (an instance gone is dropped from it).
    fn publish_list(&self) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|i| self.slots.iter().any(|s| s.handle.same(&i.handle)));
    }

    /// Tells the status watchers (tray, status files) that something changed.
    fn publish(&self) {
        let now = summed(&self.status.borrow(), &self.live);
        self.status.send_if_modified(|s| {
            let key = |s: &ServerStatus| ServerStatus {
                pending: 0,
                cache_hits: 0,
                instances: s
                    .instances
                    .iter()
                    .map(|i| InstanceStatus {
                        status: ServerStatus {
                            pending: 0,
                            cache_hits: 0,
                            ..i.status.clone()
                        },
                        ..i.clone()
                    })
                    .collect(),
                ..s.clone()
            };
            let changed = key(s) != key(&now);
            if changed {
                *s = now;
            }
            changed
        });
    }
}

/// Sends one command to the instance of `project` (for `restart NAME --project DIR`).
///
/// # Errors
/// No instance runs for that project.
pub async fn command_one(live: &Live, project: &Path, cmd: Command) -> anyhow::Result<()> {
    let found = list(live)
        .into_iter()
        .find(|i| i.project.as_deref() == Some(project));
    match found {
        Some(i) => i.handle.command(cmd).await,
        None => anyhow::bail!("no instance runs for project {}", project.display()),
    }
}

/// Sends one command to the instance with `key` (the menu's Restart and Stop of one instance).
///
/// # Errors
/// No instance has that key (it ended meanwhile).
pub async fn command_key(live: &Live, key: &str, cmd: Command) -> anyhow::Result<()> {
    let found = list(live).into_iter().find(|i| i.key == key);
    match found {
        Some(i) => i.handle.command(cmd).await,
        None => anyhow::bail!("no instance `{key}` runs"),
    }
}

/// The project a connection names in its first line, consumed if it is the proxy's project
/// line and left in place otherwise (a plain client's first line stays for its actor):
/// `Some(None)` for no project, `None` for a connection that closed first.
async fn read_project(stream: &UnixStream, home: &Path) -> Option<Option<PathBuf>> {
    let read = async {
        let mut buf = vec![0u8; project::MAX_LINE];
        let fd = stream.as_raw_fd();
        let peek = |buf: &mut [u8]| {
            nix::sys::socket::recv(fd, buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)
                .map_err(std::io::Error::from)
        };
        let mut seen = 0;
        loop {
            let n = match peek(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    stream.readable().await.ok()?;
                    // What is there now (a wake-up without data is cleared below).
                    match stream.try_io(Interest::READABLE, || peek(&mut buf)) {
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                        Err(_) => return None,
                    }
                }
                Err(_) => return None,
            };
            if n == 0 {
                return None; // closed before a line
            }
            match project::first(&buf[..n], home) {
                First::NotProject => return Some(None),
                First::Project { len, dir } => {
                    let mut taken = 0;
                    while taken < len {
                        match nix::sys::socket::recv(
                            fd,
                            &mut buf[..len - taken],
                            MsgFlags::MSG_DONTWAIT,
                        ) {
                            Ok(0) => return None,
                            Ok(k) => taken += k,
                            // The bytes were peeked: they are there.
                            Err(_) => return None,
                        }
                    }
                    return Some(dir);
                }
                First::NeedMore if n == seen => {
                    // Nothing new since the last look: wait for more. The readiness is
                    // cleared first, then looked at once more, so bytes that came in between
                    // are not waited for.
                    let _ = stream.try_io(Interest::READABLE, || {
                        Err::<(), _>(std::io::Error::from(ErrorKind::WouldBlock))
                    });
                    if peek(&mut buf).is_ok_and(|k| k > n) {
                        continue;
                    }
                    stream.readable().await.ok()?;
                }
                First::NeedMore => seen = n,
            }
        }
    };
    // A client that says nothing in time still gets served, as one with no project.
    tokio::time::timeout(FIRST_LINE_WAIT, read)
        .await
        .unwrap_or(Some(None))
}

/// Serves a connection refused (the server is stopped, or at `max_instances`): every request is
/// answered with the error `msg` and `data` until the client goes.
async fn refuse(stream: UnixStream, msg: String, data: String) {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LineCodec::new(1 << 20));
    while let Some(Ok(frame)) = lines.next().await {
        let Frame::Line(line) = frame else { continue };
        let Ok(crate::jsonrpc::Parsed::Single(env)) = crate::jsonrpc::parse(&line) else {
            continue;
        };
        let (Some(id), Some(_)) = (env.id, env.method.as_ref()) else {
            continue;
        };
        let mut out = crate::jsonrpc::error(
            id.get().as_bytes(),
            codes::INTERNAL_ERROR,
            &msg,
            Some(&data),
        )
        .to_vec();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            break;
        }
    }
    debug!("refused client gone");
}

async fn accept(socket: Option<&BoundSocket>) -> Option<UnixStream> {
    let Some(socket) = socket else {
        return std::future::pending().await;
    };
    match socket.listener.accept().await {
        Ok((stream, _)) => Some(stream),
        Err(e) => {
            warn!(error = %e, "accept failed");
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}
