//! The task that owns one server: its [`Router`], its child's pipes and one write queue per
//! client. It moves bytes and timers in and out of the router and nothing else.
//!
//! It must not make routing decisions (those live in the router) and must never block on a
//! slow peer: client writers are fed with `try_send`, and a client whose queue is full is
//! disconnected rather than stalling everyone else.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use super::child::{self, ChildSpec};
use super::listener::{self, BoundSocket};
use super::router::{Action, ClientId, Command, Input, Router, ServerState};
use crate::config::ServerConfig;
use crate::jsonrpc::framing::{Frame, LineCodec};

/// How many lines may wait for one client before it counts as stuck and is disconnected.
const CLIENT_QUEUE: usize = 8192;
/// How long a child may keep stdout open after its process exited (a grandchild holding it).
const STDOUT_DRAIN: Duration = Duration::from_millis(200);

/// A point-in-time view of one server, published on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// The server's name from the config.
    pub name: String,
    /// Lifecycle state.
    pub state: ServerState,
    /// The socket clients connect to.
    pub socket: PathBuf,
    /// The child's pid while one runs.
    pub pid: Option<u32>,
    /// Connected clients.
    pub clients: usize,
    /// The client limit.
    pub max_clients: usize,
    /// Requests waiting for the child.
    pub pending: usize,
    /// Restarts after crashes.
    pub restarts: u32,
    /// Since when the current child has been running.
    pub running_since: Option<Instant>,
    /// How the last child ended.
    pub last_exit: Option<String>,
    /// When the next restart after a crash is due.
    pub restart_at: Option<Instant>,
    /// `max_restarts` from the config.
    pub max_restarts: u32,
}

/// A command with a way to say it was taken.
struct Control {
    cmd: Command,
    done: oneshot::Sender<()>,
}

/// The only way into a running server: commands in, status snapshots out.
#[derive(Clone)]
pub struct ServerHandle {
    name: String,
    cmd: mpsc::Sender<Control>,
    status: watch::Receiver<ServerStatus>,
}

impl ServerHandle {
    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The latest status snapshot.
    pub fn status(&self) -> ServerStatus {
        self.status.borrow().clone()
    }

    /// Whether both handles lead to the same actor (a restarted server is a new actor).
    pub fn same(&self, other: &ServerHandle) -> bool {
        self.status.same_channel(&other.status)
    }

    /// A receiver that wakes on every status change (for the tray and status files).
    pub fn watch(&self) -> watch::Receiver<ServerStatus> {
        self.status.clone()
    }

    /// Sends a start/stop/restart and waits until the server has taken it.
    ///
    /// # Errors
    /// Fails when the server's task has already ended (daemon shutting down).
    pub async fn command(&self, cmd: Command) -> anyhow::Result<()> {
        let (done, rx) = oneshot::channel();
        self.cmd
            .send(Control { cmd, done })
            .await
            .map_err(|_| anyhow::anyhow!("server {} is shutting down", self.name))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("server {} is shutting down", self.name))
    }
}

enum Event {
    Accepted(UnixStream),
    Client(ClientId, ClientEvent),
    Child(u64, ChildEvent),
    Control(Control),
    Timer,
    Shutdown,
}

enum ClientEvent {
    Line(Bytes),
    TooLong,
    Gone,
}

enum ChildEvent {
    Line(Bytes),
    TooLong,
    Exited(String),
}

struct ChildLink {
    generation: u64,
    stdin: Option<mpsc::UnboundedSender<Bytes>>,
    kill: Option<oneshot::Sender<()>>,
}

/// Starts the actor of one server on an already bound socket.
///
/// The actor stops when `shutdown` is cancelled: it unlinks its socket, answers what is owed,
/// stops the child (SIGTERM, then SIGKILL after `shutdown_grace`) and returns.
pub fn spawn(
    cfg: ServerConfig,
    socket: BoundSocket,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> ServerHandle {
    let router = Router::new(cfg.clone());
    let status = snapshot(&router, &cfg);
    let (status_tx, status_rx) = watch::channel(status);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let name = cfg.name.clone();
    let span = info_span!("server", name = %cfg.name);
    let actor = Actor {
        router,
        cfg,
        socket: Some(socket),
        clients: HashMap::new(),
        next_client: 1,
        child: None,
        next_generation: 1,
        status: status_tx,
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    };
    tracker.spawn(actor.run(cmd_rx).instrument(span));
    ServerHandle {
        name,
        cmd: cmd_tx,
        status: status_rx,
    }
}

fn snapshot(router: &Router, cfg: &ServerConfig) -> ServerStatus {
    let s = router.status();
    ServerStatus {
        name: cfg.name.clone(),
        state: s.state,
        socket: cfg.socket.clone(),
        pid: s.pid,
        clients: s.clients,
        max_clients: cfg.max_active_clients,
        pending: s.pending,
        restarts: s.restarts,
        running_since: s.running_since,
        last_exit: s.last_exit,
        restart_at: s.restart_at,
        max_restarts: cfg.max_restarts,
    }
}

struct Actor {
    router: Router,
    cfg: ServerConfig,
    socket: Option<BoundSocket>,
    clients: HashMap<ClientId, mpsc::Sender<Bytes>>,
    next_client: u64,
    child: Option<ChildLink>,
    next_generation: u64,
    status: watch::Sender<ServerStatus>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Actor {
    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Control>) {
        let (client_tx, mut client_rx) = mpsc::channel::<(ClientId, ClientEvent)>(1024);
        let (child_tx, mut child_rx) = mpsc::channel::<(u64, ChildEvent)>(1024);
        let mut shutting_down = false;
        self.drive(&client_tx, &child_tx);
        loop {
            let deadline = self.router.poll_timeout();
            let event = tokio::select! {
                // Cancel safe: UnixListener::accept loses nothing when dropped.
                accepted = accept(self.socket.as_ref()) => match accepted {
                    Some(stream) => Event::Accepted(stream),
                    None => continue,
                },
                // Cancel safe: mpsc::Receiver::recv.
                Some((id, ev)) = client_rx.recv() => Event::Client(id, ev),
                Some((generation, ev)) = child_rx.recv() => Event::Child(generation, ev),
                Some(ctl) = cmd_rx.recv(), if !shutting_down => Event::Control(ctl),
                // Cancel safe: a sleep is recreated every turn from the router's deadline.
                () = crate::io::sleep_until(deadline.map(tokio::time::Instant::from_std)) => Event::Timer,
                () = self.shutdown.cancelled(), if !shutting_down => Event::Shutdown,
            };
            let now = Instant::now();
            match event {
                Event::Accepted(stream) => self.accept_client(now, stream, &client_tx),
                Event::Client(id, ClientEvent::Line(line)) => {
                    self.router.handle(now, Input::ClientLine(id, line))
                }
                Event::Client(id, ClientEvent::TooLong) => {
                    self.router.handle(now, Input::ClientTooLong(id))
                }
                Event::Client(id, ClientEvent::Gone) => {
                    if self.clients.remove(&id).is_some() {
                        debug!(client = id.0, "client disconnected");
                        self.router.handle(now, Input::ClientGone(id));
                    }
                }
                Event::Child(generation, ev) => {
                    if self.child.as_ref().map(|c| c.generation) != Some(generation) {
                        continue;
                    }
                    match ev {
                        ChildEvent::Line(line) => self.router.handle(now, Input::ChildLine(line)),
                        ChildEvent::TooLong => self.router.handle(now, Input::ChildTooLong),
                        ChildEvent::Exited(reason) => {
                            self.child = None;
                            self.router.handle(now, Input::ChildExited(reason));
                        }
                    }
                }
                Event::Control(ctl) => {
                    info!(command = ?ctl.cmd, "control command");
                    self.router.handle(now, Input::Command(ctl.cmd));
                    let _ = ctl.done.send(());
                }
                Event::Timer => self.router.handle_timeout(now),
                Event::Shutdown => {
                    shutting_down = true;
                    // Stop accepting first: the socket file goes before anything else.
                    if let Some(socket) = self.socket.take() {
                        socket.unlink();
                    }
                    self.router.handle(now, Input::Shutdown);
                }
            }
            self.drive(&client_tx, &child_tx);
            if shutting_down && self.child.is_none() {
                break;
            }
        }
        self.clients.clear();
        let _ = self.status.send(snapshot(&self.router, &self.cfg));
        info!("server stopped");
    }

    /// Carries out every action the router queued, then publishes the status if it changed.
    fn drive(
        &mut self,
        client_tx: &mpsc::Sender<(ClientId, ClientEvent)>,
        child_tx: &mpsc::Sender<(u64, ChildEvent)>,
    ) {
        let _ = client_tx;
        while let Some(action) = self.router.poll_action() {
            match action {
                Action::ToClient(id, line) => {
                    let Some(tx) = self.clients.get(&id) else {
                        continue;
                    };
                    if let Err(e) = tx.try_send(line) {
                        if let mpsc::error::TrySendError::Full(_) = e {
                            warn!(
                                client = id.0,
                                queue = CLIENT_QUEUE,
                                "client is not reading; disconnecting it"
                            );
                        }
                        self.clients.remove(&id);
                        self.router.handle(Instant::now(), Input::ClientGone(id));
                    }
                }
                Action::ToChild(line) => {
                    if let Some(tx) = self.child.as_ref().and_then(|c| c.stdin.as_ref()) {
                        let _ = tx.send(line);
                    }
                }
                Action::CloseClient(id) => {
                    // Dropping the sender lets the writer flush what is queued, then close.
                    self.clients.remove(&id);
                }
                Action::Spawn => self.spawn_child(child_tx),
                Action::Kill => {
                    if let Some(link) = self.child.as_mut() {
                        link.stdin = None;
                        if let Some(kill) = link.kill.take() {
                            let _ = kill.send(());
                        }
                    }
                }
            }
        }
        let status = snapshot(&self.router, &self.cfg);
        self.status.send_if_modified(|old| {
            if *old != status {
                *old = status;
                true
            } else {
                false
            }
        });
    }

    fn spawn_child(&mut self, child_tx: &mpsc::Sender<(u64, ChildEvent)>) {
        let spec = ChildSpec {
            server: self.cfg.name.clone(),
            cmd: self.cfg.cmd.clone(),
            args: self.cfg.args.clone(),
            env: self.cfg.env.clone(),
            cwd: self.cfg.cwd.clone(),
        };
        let now = Instant::now();
        match child::spawn(&spec) {
            Err(e) => {
                self.router
                    .handle(now, Input::ChildSpawnFailed(e.to_string()));
            }
            Ok(spawned) => {
                let generation = self.next_generation;
                self.next_generation += 1;
                let pid = spawned.pid;
                info!(pid, cmd = %self.cfg.cmd, "child started");
                let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
                let (kill_tx, kill_rx) = oneshot::channel();
                let span = info_span!("child", pid);
                self.tracker
                    .spawn(write_stdin(spawned.stdin, stdin_rx).instrument(span.clone()));
                self.tracker.spawn(
                    watch_child(
                        generation,
                        spawned.child,
                        pid,
                        spawned.stdout,
                        self.cfg.max_response_bytes,
                        self.cfg.shutdown_grace,
                        child_tx.clone(),
                        kill_rx,
                    )
                    .instrument(span),
                );
                self.child = Some(ChildLink {
                    generation,
                    stdin: Some(stdin_tx),
                    kill: Some(kill_tx),
                });
                self.router.handle(now, Input::ChildSpawned { pid });
            }
        }
    }

    fn accept_client(
        &mut self,
        now: Instant,
        stream: UnixStream,
        client_tx: &mpsc::Sender<(ClientId, ClientEvent)>,
    ) {
        if !listener::peer_is_owner(&stream) {
            warn!("refused a connection from another user");
            return;
        }
        let id = ClientId(self.next_client);
        self.next_client += 1;
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let token = self.shutdown.child_token();
        let span = info_span!("client", id = id.0);
        self.tracker
            .spawn(write_client(write, rx, token.clone()).instrument(span.clone()));
        self.tracker.spawn(
            read_client(
                id,
                read,
                self.cfg.max_request_bytes,
                client_tx.clone(),
                token,
            )
            .instrument(span),
        );
        self.clients.insert(id, tx);
        debug!(client = id.0, "client connected");
        self.router.handle(now, Input::ClientConnected(id));
    }
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

async fn read_client(
    id: ClientId,
    read: tokio::net::unix::OwnedReadHalf,
    max: usize,
    tx: mpsc::Sender<(ClientId, ClientEvent)>,
    token: CancellationToken,
) {
    let mut frames = FramedRead::new(read, LineCodec::new(max));
    loop {
        let frame = tokio::select! {
            // Cancel safe: FramedRead keeps partial lines in its buffer.
            f = frames.next() => f,
            () = token.cancelled() => break,
        };
        let ev = match frame {
            Some(Ok(Frame::Line(line))) => ClientEvent::Line(line),
            Some(Ok(Frame::TooLong { .. })) => ClientEvent::TooLong,
            Some(Err(e)) => {
                debug!(error = %e, "client read failed");
                break;
            }
            None => break,
        };
        if tx.send((id, ev)).await.is_err() {
            return;
        }
    }
    let _ = tx.send((id, ClientEvent::Gone)).await;
}

async fn write_client(
    write: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    token: CancellationToken,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, write);
    while let Some(line) = rx.recv().await {
        if crate::io::write_line(&mut out, &line).await.is_err() {
            break;
        }
        // Batch whatever else is ready before one flush.
        while let Ok(line) = rx.try_recv() {
            if crate::io::write_line(&mut out, &line).await.is_err() {
                token.cancel();
                return;
            }
        }
        if out.flush().await.is_err() {
            break;
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
    // The router closed us (or we failed): stop the reader too.
    token.cancel();
}

async fn write_stdin(stdin: tokio::process::ChildStdin, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut out = BufWriter::with_capacity(64 * 1024, stdin);
    while let Some(line) = rx.recv().await {
        if crate::io::write_line(&mut out, &line).await.is_err() {
            return;
        }
        while let Ok(line) = rx.try_recv() {
            if crate::io::write_line(&mut out, &line).await.is_err() {
                return;
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
    // The sender was dropped: closing stdin is the first step of stopping the child.
    let _ = out.shutdown().await;
}

#[allow(clippy::too_many_arguments)]
async fn watch_child(
    generation: u64,
    mut child: tokio::process::Child,
    pid: u32,
    stdout: tokio::process::ChildStdout,
    max_line: usize,
    grace: Duration,
    tx: mpsc::Sender<(u64, ChildEvent)>,
    mut kill: oneshot::Receiver<()>,
) {
    let mut frames = FramedRead::new(stdout, LineCodec::new(max_line));
    let mut status = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut kill_armed = true;
    loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(Frame::Line(line))) => {
                    if tx.send((generation, ChildEvent::Line(line))).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Frame::TooLong { .. })) => {
                    let _ = tx.send((generation, ChildEvent::TooLong)).await;
                }
                Some(Err(_)) | None => break,
            },
            exit = child.wait(), if status.is_none() => {
                status = exit.ok();
                drain_until = Some(tokio::time::Instant::now() + STDOUT_DRAIN);
            }
            () = crate::io::sleep_until(drain_until) => break,
            res = &mut kill, if kill_armed => {
                kill_armed = false;
                if res.is_ok() {
                    // stdin was closed by the actor before this signal.
                    status = child::terminate(&mut child, pid, grace).await.ok();
                    break;
                }
            }
        }
    }
    let status = match status {
        Some(s) => Some(s),
        None => {
            // stdout closed but the process lives on: give it the grace period, then stop it.
            tokio::select! {
                s = child.wait() => s.ok(),
                () = tokio::time::sleep(grace) => child::terminate(&mut child, pid, grace).await.ok(),
            }
        }
    };
    // Whatever the leader left behind in its group goes with it: no orphans.
    let _ = child::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
    let reason = status.map_or_else(
        || "exited (status unknown)".to_owned(),
        child::describe_exit,
    );
    let _ = tx.send((generation, ChildEvent::Exited(reason))).await;
}
