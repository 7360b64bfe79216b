//! The task that owns one server: its [`Router`], its child's pipes and one write queue per
//! client. It moves bytes and timers in and out of the router and nothing else.
//!
//! It must not make routing decisions (those live in the router) and must never block on a
//! slow peer: client writers are fed with `try_send`, and a client whose queue is full is
//! disconnected rather than stalling everyone else.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use super::child::{self, ChildSpec};
use super::child_in::ChildIn;
use super::child_out::ChildOut;
use super::listener::{self, BoundSocket};
use super::router::{Action, ClientId, Input, Router, RouterStatus};
use crate::config::{ServerConfig, Share};
use crate::io::handoff;
use crate::io::lines::{LineWriter, Sink, WriteError};
use crate::jsonrpc::framing::{Frame, LineCodec};
use crate::jsonrpc::Line;
use crate::status::{Command, ServerState};

/// How many lines may wait for one client before it counts as stuck and is disconnected.
const CLIENT_QUEUE: usize = 8192;
/// A client's first read buffer. tokio-util's default (8 KiB) was most of the daemon's memory
/// per client; requests are mostly well under 1 KiB, and a client that sends more gets room
/// as it needs it (the codec keeps room for the longest line it has sent).
const CLIENT_READ_BUF: usize = 1024;
/// How many more waiting events the actor takes after one before carrying out the actions.
const BURST: usize = 64;
/// How long a child may keep stdout open after its process exited (a grandchild holding it).
const STDOUT_DRAIN: Duration = Duration::from_millis(200);

/// A point-in-time view of one server, published when anything but the pending count changes
/// (the count changes with every message; [`ServerHandle::status`] reads it live).
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
    /// Who shares a child: for `project` and `client` servers the fields above sum up
    /// [`ServerStatus::instances`].
    pub share: Share,
    /// The children of a `project` or `client` server (empty for a `global` one).
    pub instances: Vec<InstanceStatus>,
    /// A `global` server whose tools look per-session: what to consider instead.
    pub hint: Option<String>,
    /// The protocol era of the current child, once known.
    pub era: Option<&'static str>,
    /// The protocol version negotiated with the current child, once known.
    pub protocol_version: Option<String>,
    /// The `clientInfo` names of its connected clients, each once ("Cursor", "Claude Code").
    pub client_names: Vec<String>,
    /// Child round trips saved by the shared cache of public results (a modern child's).
    pub cache_hits: u64,
    /// Removed from the config by a reload and out of service (see [`ServerHandle::retire`]):
    /// it lives on only for the clients still connected, so status must show it as removed
    /// rather than as a server of the config.
    pub retired: bool,
}

/// One child of a server shared per project or per client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Names the instance: its project folder, `no project`, or `client N`.
    pub key: String,
    /// The project folder it runs for (`None` for a client's and the "no project" one).
    pub project: Option<PathBuf>,
    /// Its own status (its `instances` empty).
    pub status: ServerStatus,
}

/// An order with a way to say it was taken.
pub(crate) struct Control {
    pub(crate) order: Order,
    pub(crate) done: oneshot::Sender<()>,
}

/// What a server is told to do.
pub(crate) enum Order {
    /// Start, stop or restart (CLI, tray).
    Command(Command),
    /// Run with a changed config, keeping the clients (see [`ServerHandle::reconfigure`]);
    /// with the socket bound at the new path when it moved.
    Reconfigure(Box<ServerConfig>, Option<BoundSocket>),
    /// Removed from the config: see [`ServerHandle::retire`].
    Retire,
}

/// The only way into a running server: commands in, status snapshots out.
#[derive(Clone)]
pub struct ServerHandle {
    name: String,
    cmd: mpsc::Sender<Control>,
    status: watch::Receiver<ServerStatus>,
    pending: Arc<AtomicUsize>,
    /// Round trips saved by the shared cache, live like `pending` (a change of it alone does
    /// not wake the watchers).
    cache_hits: Arc<AtomicU64>,
    /// The instances of a `project` or `client` server, read live by [`ServerHandle::status`].
    instances: Option<super::instances::Live>,
}

impl ServerHandle {
    /// A handle over a dispatcher of instances: commands go to it, its status sums theirs.
    pub(crate) fn of_instances(
        name: String,
        cmd: mpsc::Sender<Control>,
        status: watch::Receiver<ServerStatus>,
        instances: super::instances::Live,
    ) -> ServerHandle {
        ServerHandle {
            name,
            cmd,
            status,
            pending: Arc::new(AtomicUsize::new(0)),
            cache_hits: Arc::new(AtomicU64::new(0)),
            instances: Some(instances),
        }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its connected clients and its limit, without copying the whole status: the HTTP
    /// front asks on every request.
    pub fn clients(&self) -> (usize, usize) {
        if self.instances.is_some() {
            let s = self.status();
            return (s.clients, s.max_clients);
        }
        let s = self.status.borrow();
        (s.clients, s.max_clients)
    }

    /// The latest status snapshot, with the pending count as of now.
    pub fn status(&self) -> ServerStatus {
        if let Some(live) = &self.instances {
            return super::instances::summed(&self.status.borrow(), live);
        }
        let mut s = self.status.borrow().clone();
        s.pending = self.pending.load(Ordering::Relaxed);
        s.cache_hits = self.cache_hits.load(Ordering::Relaxed);
        s
    }

    /// Sends a command to the instance of `project` (a `project` server's handle only).
    ///
    /// # Errors
    /// Not a server with instances, or no instance runs for that project.
    pub async fn command_project(
        &self,
        project: &std::path::Path,
        cmd: Command,
    ) -> anyhow::Result<()> {
        match &self.instances {
            Some(live) => super::instances::command_one(live, project, cmd).await,
            None => anyhow::bail!("server {} has no instances", self.name),
        }
    }

    /// Sends a command to the instance with `key` (a `project` or `client` server's handle).
    ///
    /// # Errors
    /// Not a server with instances, or no instance has that key.
    pub async fn command_key(&self, key: &str, cmd: Command) -> anyhow::Result<()> {
        match &self.instances {
            Some(live) => super::instances::command_key(live, key, cmd).await,
            None => anyhow::bail!("server {} has no instances", self.name),
        }
    }

    /// Whether both handles lead to the same actor (a restarted server is a new actor).
    pub fn same(&self, other: &ServerHandle) -> bool {
        self.status.same_channel(&other.status)
    }

    /// Whether the actor has ended (its last status is kept): a retired server is gone once
    /// this holds.
    pub fn ended(&self) -> bool {
        self.status.has_changed().is_err()
    }

    /// A receiver that wakes on every status change (for the tray and status files). Its
    /// `pending` is the count when the snapshot was taken; a change of the count alone does
    /// not wake it (that would be once per message), [`ServerHandle::status`] has it live.
    pub fn watch(&self) -> watch::Receiver<ServerStatus> {
        self.status.clone()
    }

    /// Sends a start/stop/restart and waits until the server has taken it.
    ///
    /// # Errors
    /// Fails when the server's task has already ended (daemon shutting down).
    pub async fn command(&self, cmd: Command) -> anyhow::Result<()> {
        self.order(Order::Command(cmd)).await
    }

    /// Hands a changed config to the running server, so that a reload keeps its clients: its
    /// child is restarted with the new config as after a crash (the requests it was sent are
    /// answered `upstream_exited`, the others go to the new child), and when the socket moved
    /// (`socket`, bound by the caller at the new path) the old path is unlinked and the new
    /// one served, connected clients kept. For a `project` or `client` server every instance
    /// gets the config for its project. The sharing scope (`share`) must be the same.
    ///
    /// # Errors
    /// Fails when the server's task has already ended (it is stopping).
    pub async fn reconfigure(
        &self,
        cfg: ServerConfig,
        socket: Option<BoundSocket>,
    ) -> anyhow::Result<()> {
        self.order(Order::Reconfigure(Box::new(cfg), socket)).await
    }

    /// Takes a `global` server out of service without cutting off its clients (it was removed
    /// from the config): its socket is unlinked at once and its child stopped, and every
    /// request its connected clients had in flight or send from then on is answered
    /// `server_unavailable` (state `stopped`), exactly as after `rmcp-mux stop`; the actor ends
    /// once its last client has gone. A later [`ServerHandle::reconfigure`] with a socket puts
    /// it back in service, clients and all (the server was added back).
    ///
    /// # Errors
    /// Fails when the server's task has already ended.
    pub async fn retire(&self) -> anyhow::Result<()> {
        self.order(Order::Retire).await
    }

    async fn order(&self, order: Order) -> anyhow::Result<()> {
        let (done, rx) = oneshot::channel();
        self.cmd
            .send(Control { order, done })
            .await
            .map_err(|_| anyhow::anyhow!("server {} is shutting down", self.name))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("server {} is shutting down", self.name))
    }
}

enum Event {
    Accepted(UnixStream),
    /// No client for the instance's idle time.
    Idle,
    Client(ClientId, ClientEvent),
    /// A child of this generation exited (how, in words).
    ChildExited(u64, String),
    /// What the current child's stdout gave (read by the actor, so always the current child).
    ChildOut(Option<std::io::Result<Frame>>),
    Control(Control),
    Timer,
    Shutdown,
}

enum ClientEvent {
    Line(Bytes),
    /// Lines that came in one read, in order.
    Lines(Vec<Bytes>),
    TooLong,
    Gone,
    /// Descriptors came on the socket: the host's stdout, and the ways to tell the reader to
    /// read the host's stdin (which it keeps) once the attach is answered, and to stop.
    Offer(Box<Offer>),
    /// The proxy has written everything it got before the attach answer: write to stdout.
    Go,
    /// The attached host closed stdin.
    InputClosed,
    /// The reader stopped reading the attached host's stdin as told; these bytes it had read
    /// and not passed on go back to the proxy.
    InputStopped(Bytes),
    /// The client shut down its writing side but still reads: it is owed its answers.
    HalfClosed,
    /// The reader stopped reading the socket as told (see [`Conn::stop_read`]); every line it
    /// read was sent before this.
    ReadStopped,
}

/// What a client's reader offers when descriptors came with an attach.
struct Offer {
    /// The host's stdout and its kind.
    stdout: (OwnedFd, handoff::Kind),
    /// Tells the reader to read the host's stdin (once the answer is on its way).
    go: oneshot::Sender<()>,
    /// Tells the reader to stop reading it again (see [`Closing`]).
    stop: oneshot::Sender<()>,
}

/// One client: its socket, and once it attached, its host's stdout.
struct Conn {
    /// The client's socket: all its lines, or only the mux's own once attached (the link).
    link: LineWriter<Sink>,
    /// The host's stdout offered with descriptors, and the reader's go-ahead to read stdin.
    offer: Option<Box<Offer>>,
    /// Where its lines go.
    host: Host,
    /// While its reader reads the host's stdin: the way to stop it.
    stop_input: Option<oneshot::Sender<()>>,
    /// While its reader reads the socket: the way to stop it. A server that is stopping
    /// closes its clients this way: the reader stops first and passes on what it had read,
    /// which the router answers (with an error), and only then is the connection closed, so
    /// that no request read goes unanswered.
    stop_read: Option<oneshot::Sender<()>>,
    /// How far its closing has come.
    closing: Closing,
    /// Cancelled once everything written to the host's stdout is out: the link is closed
    /// only then, since the proxy writes to the host's stdout again once the link ends.
    stdout_done: Option<CancellationToken>,
}

/// Closing an attached client whose host lives on (the router closes it on a reload or a
/// stop) hands the host's stdio back to the proxy without losing a line: its reader stops
/// reading the host's stdin first, and what it read goes to the router (answered, if only
/// with an error) or back to the proxy (what it had not passed on yet). Only then is the
/// client closed, and its link after everything for the host's stdout is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Open.
    No,
    /// Its reader was told to stop (the host's stdin, or a plain client's socket when the
    /// server stops); the router hears the input is closed once it has.
    Stopping,
    /// Closed by the router while lines for the host wait for the proxy's go: closed after it.
    AfterGo,
}

/// How long a closed attached client's link stays open for its host's stdout to be written.
const LINK_LINGER: Duration = Duration::from_secs(5);

/// How long a stopping server waits for its attached clients to be handed back (their
/// readers stopped, the answers written) once its child is gone.
const HAND_BACK_LIMIT: Duration = Duration::from_secs(2);

impl Conn {
    /// The writer its lines go to now: its socket, or its host's stdout once switched over;
    /// none while they are held for the proxy's go.
    fn writer(&mut self) -> Option<&mut LineWriter<Sink>> {
        match &mut self.host {
            Host::Socket => Some(&mut self.link),
            Host::Stdout(w) => Some(w),
            Host::Held(_) => None,
        }
    }
}

/// Where a client's lines go. (Boxed: most clients never attach, and the map of clients is
/// most of the daemon's memory per client.)
enum Host {
    /// Its socket.
    Socket,
    /// Attached, until the proxy says go: the host's stdout, and the lines waiting for it.
    Held(Box<(OwnedFd, handoff::Kind, Vec<Line>)>),
    /// The host's stdout.
    Stdout(Box<LineWriter<Sink>>),
}

struct ChildLink {
    generation: u64,
    stdin: Option<LineWriter<ChildIn>>,
    /// Read by the actor itself, in its `select!`: a reader task of its own cost a task
    /// wake-up and a channel hop per answer.
    stdout: Option<FramedRead<ChildOut, LineCodec>>,
    /// Tells the child's watcher that stdout closed (or that the actor stopped reading it).
    stdout_closed: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
}

/// The next frame of the current child's stdout (never ready while there is none).
async fn child_frame(child: &mut Option<ChildLink>) -> Option<std::io::Result<Frame>> {
    match child.as_mut().and_then(|c| c.stdout.as_mut()) {
        Some(stdout) => stdout.next().await,
        None => std::future::pending().await,
    }
}

/// How many lines may wait for the child's stdin (it is the one peer every client shares, so
/// this is generous; a child that stops reading for this long is stuck anyway).
const CHILD_QUEUE: usize = 1 << 20;

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
    start(cfg, Some(socket), None, shutdown, tracker)
}

/// Starts the actor of one instance of a `project` or `client` server: its connections come
/// from the dispatcher on `incoming`, and once it has had clients and none is left for
/// `idle_exit`, it closes `incoming`, stops its child and ends (see
/// [`super::instances`]).
pub(crate) fn spawn_instance(
    cfg: ServerConfig,
    incoming: mpsc::UnboundedReceiver<UnixStream>,
    idle_exit: Duration,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> ServerHandle {
    start(cfg, None, Some((incoming, idle_exit)), shutdown, tracker)
}

fn start(
    cfg: ServerConfig,
    socket: Option<BoundSocket>,
    instance: Option<(mpsc::UnboundedReceiver<UnixStream>, Duration)>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> ServerHandle {
    let (incoming, idle_exit) = match instance {
        Some((rx, idle)) => (Some(rx), Some(idle)),
        None => (None, None),
    };
    let router = Router::new(cfg.clone());
    let published = router.status();
    let status = snapshot(&published, &cfg, false);
    let (status_tx, status_rx) = watch::channel(status);
    let pending = Arc::new(AtomicUsize::new(published.pending));
    let cache_hits = Arc::new(AtomicU64::new(0));
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let name = cfg.name.clone();
    let span = info_span!("server", name = %cfg.name);
    let actor = Actor {
        router,
        cfg,
        socket,
        incoming,
        idle_exit,
        idle_at: None,
        served: false,
        retired: false,
        stopping: false,
        clients: HashMap::new(),
        next_client: 1,
        child: None,
        next_generation: 1,
        status: status_tx,
        published,
        pending: pending.clone(),
        cache_hits: cache_hits.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        to_clients: Vec::new(),
        to_child: Vec::new(),
        probe: None,
        stream: None,
        drive_now: false,
    };
    tracker.spawn(actor.run(cmd_rx).instrument(span));
    ServerHandle {
        name,
        cmd: cmd_tx,
        status: status_rx,
        pending,
        cache_hits,
        instances: None,
    }
}

fn snapshot(s: &RouterStatus, cfg: &ServerConfig, retired: bool) -> ServerStatus {
    let s = s.clone();
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
        share: cfg.share,
        instances: Vec::new(),
        hint: s.hint,
        era: s.era,
        protocol_version: s.protocol_version,
        client_names: s.client_names,
        cache_hits: s.cache_hits,
        retired,
    }
}

struct Actor {
    router: Router,
    cfg: ServerConfig,
    socket: Option<BoundSocket>,
    /// An instance's connections, handed over by its dispatcher (instead of a socket).
    incoming: Option<mpsc::UnboundedReceiver<UnixStream>>,
    /// An instance ends after this long without a client, once it has had one.
    idle_exit: Option<Duration>,
    /// When it ends if no client comes.
    idle_at: Option<Instant>,
    /// Whether a client has connected yet.
    served: bool,
    /// Out of service (see [`ServerHandle::retire`]): it ends once no client is left.
    retired: bool,
    /// Shutting down: the router closes every client, each after its reader has stopped
    /// (see [`Conn::stop_read`]).
    stopping: bool,
    clients: HashMap<ClientId, Conn>,
    next_client: u64,
    child: Option<ChildLink>,
    next_generation: u64,
    status: watch::Sender<ServerStatus>,
    /// The router status last published (its pending count aside).
    published: RouterStatus,
    pending: Arc<AtomicUsize>,
    cache_hits: Arc<AtomicU64>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Lines for clients gathered while draining the router's actions, written at the end
    /// of the drain (one write per client per turn).
    to_clients: Vec<(ClientId, Line)>,
    to_child: Vec<Line>,
    /// Where the id is in the long answer the router was just asked to pass on as it arrives.
    probe: Option<std::ops::Range<usize>>,
    /// The answer being passed on while the child writes it.
    stream: Option<Stream>,
    /// Carry out the router's actions before reading anything more (it granted a stream,
    /// which must start while the line so far is still in the read buffer).
    drive_now: bool,
}

/// A long answer passed on to its client while the child is still writing it, so that the
/// daemon does not hold a whole 1 MiB line before writing any of it: its bytes go out as they
/// are read (the id rewritten in the first piece), its last piece and newline as soon as the
/// line is complete, and the router checks it then. Until it has, the client's other lines
/// wait here.
struct Stream {
    client: ClientId,
    /// The client's id for the request.
    id: Bytes,
    /// Where the mux's id is in the line.
    span: std::ops::Range<usize>,
    /// How much of the line has been written (0 while not `live`).
    forwarded: usize,
    /// Written as it arrives; otherwise (a host not yet switched over, or a failed write)
    /// the whole line is sent the usual way at the end.
    live: bool,
    /// Lines for the client that came meanwhile.
    held: Vec<Line>,
    /// An attach the client asked for meanwhile.
    attach: Option<Bytes>,
    /// The whole line, once it is complete. When it is live, its last piece and newline are
    /// written then, before the router has checked it: a line found broken is followed by an
    /// error, which is all a check first could do, most of it having gone out already.
    line: Option<Bytes>,
}

/// A partial line from the child this long is passed on as it arrives when it is an answer
/// whose id comes first; shorter lines are read whole (holding them costs little).
const STREAM_AT: usize = 64 * 1024;

impl Actor {
    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Control>) {
        let (client_tx, mut client_rx) = mpsc::channel::<(ClientId, ClientEvent)>(1024);
        let (child_tx, mut child_rx) = mpsc::channel::<(u64, String)>(1024);
        let mut shutting_down = false;
        // Once stopped: until when attached clients may take to be handed back.
        let mut hand_back_until: Option<tokio::time::Instant> = None;
        self.drive(&client_tx, &child_tx);
        // One timer for the router's deadlines, moved only when a deadline comes earlier than
        // the one it is set for. Setting a fresh timer for every request (each request has a
        // deadline) cost a wake-up of the runtime's driver per request; a timer that fires
        // early just finds nothing due and is set again.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        // Made once, like the timer: a fresh `cancelled()` in every `select!` registered and
        // unregistered a waiter under a lock on every wake-up.
        let shutdown = self.shutdown.clone();
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        loop {
            if let Some(due) = self.router.poll_timeout() {
                if armed.is_none_or(|at| due < at) {
                    timer.as_mut().reset(tokio::time::Instant::from_std(due));
                    armed = Some(due);
                }
            }
            let hand_back = hand_back_until.filter(|at| *at > tokio::time::Instant::now());
            let event = tokio::select! {
                // Cancel safe: UnixListener::accept loses nothing when dropped.
                accepted = accept(self.socket.as_ref()) => match accepted {
                    Some(stream) => Event::Accepted(stream),
                    None => continue,
                },
                // Cancel safe: mpsc::UnboundedReceiver::recv.
                Some(stream) = handed(&mut self.incoming) => Event::Accepted(stream),
                () = crate::io::lines::sleep_until(self.idle_at.map(tokio::time::Instant::from_std)), if self.idle_at.is_some() && !shutting_down => Event::Idle,
                // Cancel safe: mpsc::Receiver::recv.
                Some((id, ev)) = client_rx.recv() => Event::Client(id, ev),
                Some((generation, reason)) = child_rx.recv() => Event::ChildExited(generation, reason),
                // Cancel safe: FramedRead keeps partial lines in its buffer.
                frame = child_frame(&mut self.child) => Event::ChildOut(frame),
                Some(ctl) = cmd_rx.recv(), if !shutting_down => Event::Control(ctl),
                // Cancel safe: the timer is only polled; it is re-armed above when it fired.
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    Event::Timer
                }
                () = &mut stop, if !shutting_down => Event::Shutdown,
                // Wakes the loop to give up on a hand-back (nothing to do for the router).
                () = crate::io::lines::sleep_until(hand_back), if hand_back.is_some() => Event::Timer,
            };
            // Whether the child's stdout may hold more lines: it just gave one (a read that
            // finds nothing costs a syscall, so it is not tried after other events).
            let mut child_ready = matches!(event, Event::ChildOut(Some(Ok(_))));
            // One reading of the clock for the whole burst (it takes microseconds).
            let now = Instant::now();
            self.handle_event(now, event, &client_tx, &mut shutting_down);
            // Take whatever else is already waiting before carrying out the actions, so that
            // a burst costs one write per peer instead of one per line.
            for _ in 0..BURST {
                if self.drive_now {
                    break;
                }
                // Lines already read from the child's stdout first. Polled without a waker
                // here; the `select!` above polls it again, with one, before the actor sleeps.
                let frame = if child_ready {
                    child_frame(&mut self.child).now_or_never()
                } else {
                    None
                };
                let event = match frame {
                    Some(frame) => Event::ChildOut(frame),
                    None => {
                        child_ready = false;
                        match child_rx.try_recv() {
                            Ok((generation, reason)) => Event::ChildExited(generation, reason),
                            Err(_) => match client_rx.try_recv() {
                                Ok((id, ev)) => Event::Client(id, ev),
                                Err(_) => break,
                            },
                        }
                    }
                };
                self.handle_event(now, event, &client_tx, &mut shutting_down);
            }
            self.drive_now = false;
            self.drive(&client_tx, &child_tx);
            if let Some(idle) = self.idle_exit.filter(|_| !shutting_down) {
                if !self.served || !self.clients.is_empty() {
                    self.idle_at = None;
                } else if self.idle_at.is_none() {
                    self.idle_at = Some(now + idle);
                }
            }
            if shutting_down && self.child.is_none() {
                let until = *hand_back_until
                    .get_or_insert_with(|| tokio::time::Instant::now() + HAND_BACK_LIMIT);
                if !self.handing_back() || until <= tokio::time::Instant::now() {
                    break;
                }
            }
            if self.retired && self.clients.is_empty() && self.child.is_none() {
                info!("out of service and no client left");
                break;
            }
        }
        self.clients.clear();
        let _ = self
            .status
            .send(snapshot(&self.router.status(), &self.cfg, self.retired));
        info!("server stopped");
    }

    /// Feeds one event to the router (its actions are carried out later, by `drive`).
    fn handle_event(
        &mut self,
        now: Instant,
        event: Event,
        client_tx: &mpsc::Sender<(ClientId, ClientEvent)>,
        shutting_down: &mut bool,
    ) {
        match event {
            Event::Accepted(stream) => self.accept_client(now, stream, client_tx),
            Event::Idle => {
                self.idle_at = None;
                if !self.clients.is_empty() {
                    return;
                }
                // A connection handed over meanwhile is served; otherwise no more can come
                // (the dispatcher starts a new instance for the next one) and this one ends.
                if let Some(rx) = self.incoming.as_mut() {
                    let mut next = rx.try_recv();
                    if next.is_err() {
                        rx.close();
                        next = rx.try_recv();
                    }
                    if let Ok(stream) = next {
                        self.accept_client(now, stream, client_tx);
                        return;
                    }
                }
                info!("no client left; stopping this instance");
                self.handle_event(now, Event::Shutdown, client_tx, shutting_down);
            }
            Event::Client(id, ClientEvent::Line(line)) => {
                crate::io::trim::note_line(line.len());
                self.router.handle(now, Input::ClientLine(id, line))
            }
            Event::Client(id, ClientEvent::Lines(lines)) => {
                for line in lines {
                    crate::io::trim::note_line(line.len());
                    self.router.handle(now, Input::ClientLine(id, line));
                }
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
            Event::Client(id, ClientEvent::Offer(offer)) => {
                if let Some(conn) = self.clients.get_mut(&id) {
                    conn.offer = Some(offer);
                }
            }
            Event::Client(id, ClientEvent::Go) => self.go(now, id),
            Event::Client(id, ClientEvent::InputClosed) => {
                debug!(client = id.0, "attached host closed stdin");
                if let Some(conn) = self.clients.get_mut(&id) {
                    // Its reader reads no more: nothing to stop when it is closed.
                    conn.stop_input = None;
                    // Tells the proxy to exit once the link closes instead of reconnecting.
                    let _ = conn
                        .link
                        .send(&mut vec![Line::from(handoff::input_closed_line())]);
                }
                self.router.handle(now, Input::ClientInputClosed(id));
            }
            Event::Client(id, ClientEvent::InputStopped(unread)) => {
                debug!(
                    client = id.0,
                    unread = unread.len(),
                    "stopped reading the attached host's stdin"
                );
                if let Some(conn) = self.clients.get_mut(&id) {
                    if !unread.is_empty() {
                        // Read again by the proxy when it takes the host's stdin back.
                        let _ = conn
                            .link
                            .send(&mut vec![Line::from(handoff::unread_line(&unread))]);
                    }
                }
                // Everything it read before is with the router: it closes the client once
                // that is answered.
                self.router.handle(now, Input::ClientInputClosed(id));
            }
            Event::Client(id, ClientEvent::ReadStopped) => {
                debug!(client = id.0, "stopped reading the client's socket");
                // Everything it read is with the router: it closes the client once that is
                // answered.
                self.router.handle(now, Input::ClientInputClosed(id));
            }
            Event::Client(id, ClientEvent::HalfClosed) => {
                debug!(client = id.0, "client shut down its writing side");
                self.router.handle(now, Input::ClientInputClosed(id));
            }
            Event::ChildOut(frame) => match frame {
                Some(Ok(Frame::Line(line))) => {
                    crate::io::trim::note_line(line.len());
                    // An answer: the child read the request, which may have been lent.
                    if let Some(stdin) = self.child.as_ref().and_then(|c| c.stdin.as_ref()) {
                        stdin.peer().release();
                    }
                    if self.stream.as_ref().is_some_and(|s| s.line.is_none()) {
                        self.stream_tail(&line);
                        // Its end is carried out before the next line is read.
                        self.drive_now = true;
                    }
                    self.router.handle(now, Input::ChildLine(line))
                }
                Some(Ok(Frame::Partial)) => self.child_partial(now),
                Some(Ok(Frame::TooLong { .. })) => self.router.handle(now, Input::ChildTooLong),
                Some(Err(_)) | None => {
                    if let Some(link) = self.child.as_mut() {
                        link.stdout = None;
                        if let Some(closed) = link.stdout_closed.take() {
                            let _ = closed.send(());
                        }
                    }
                }
            },
            Event::ChildExited(generation, reason) => {
                if self.child.as_ref().map(|c| c.generation) != Some(generation) {
                    return;
                }
                self.child = None;
                self.router.handle(now, Input::ChildExited(reason));
            }
            Event::Control(ctl) => {
                match ctl.order {
                    // Out of service it has no socket: a start would run a child nobody new can
                    // reach. The daemon refuses these with an error before they get here.
                    Order::Command(cmd) if self.retired => {
                        warn!(command = ?cmd, "control command ignored: removed from the config");
                    }
                    Order::Command(cmd) => {
                        info!(command = ?cmd, "control command");
                        self.router.handle(now, Input::Command(cmd));
                    }
                    Order::Reconfigure(cfg, socket) => {
                        self.reconfigure(now, *cfg, socket, client_tx);
                    }
                    Order::Retire => {
                        info!("removed from service: socket unlinked, child stopping; clients are answered until they leave");
                        if let Some(socket) = self.socket.take() {
                            socket.unlink();
                        }
                        self.retired = true;
                        self.router.handle(now, Input::Command(Command::Stop));
                        // Shown as removed at once, whether or not the stop changed anything.
                        let snapshot = snapshot(&self.published, &self.cfg, true);
                        self.status.send_replace(snapshot);
                    }
                }
                let _ = ctl.done.send(());
            }
            Event::Timer => self.router.handle_timeout(now),
            Event::Shutdown => {
                *shutting_down = true;
                self.stopping = true;
                // Stop accepting first: the socket file goes before anything else.
                if let Some(socket) = self.socket.take() {
                    socket.unlink();
                }
                self.incoming = None;
                self.router.handle(now, Input::Shutdown);
            }
        }
    }

    /// Takes a changed config (see [`ServerHandle::reconfigure`]): the router restarts the
    /// child with it; a moved socket is served from now on, the old path unlinked first and
    /// the connections already waiting on the old one taken (their clients connected before
    /// the move, and are served like the others).
    fn reconfigure(
        &mut self,
        now: Instant,
        cfg: ServerConfig,
        socket: Option<BoundSocket>,
        client_tx: &mpsc::Sender<(ClientId, ClientEvent)>,
    ) {
        info!("config changed; restarting the child with it, clients kept");
        if socket.is_some() {
            // Put back in service (see `ServerHandle::retire`).
            self.retired = false;
        }
        if let Some(socket) = socket {
            if let Some(old) = self.socket.replace(socket) {
                old.unlink();
                while let Some(Ok((stream, _))) = old.listener.accept().now_or_never() {
                    self.accept_client(now, stream, client_tx);
                }
            }
        }
        self.cfg = cfg.clone();
        self.router.handle(now, Input::Reconfigure(Box::new(cfg)));
        // The socket path is in the status, which the router does not know.
        let snapshot = snapshot(&self.published, &self.cfg, self.retired);
        self.status.send_replace(snapshot);
    }

    /// Carries out every action the router queued, then publishes the status if it changed.
    fn drive(
        &mut self,
        client_tx: &mpsc::Sender<(ClientId, ClientEvent)>,
        child_tx: &mpsc::Sender<(u64, String)>,
    ) {
        let _ = client_tx;
        loop {
            while let Some(action) = self.router.poll_action() {
                match action {
                    Action::ToClient(id, line) => self.to_clients.push((id, line)),
                    Action::ToChild(line) => self.to_child.push(line),
                    Action::CloseClient(id) => {
                        self.flush_clients();
                        self.close_client(id);
                    }
                    Action::Attach(id, req) => match self.stream.as_mut() {
                        // Its socket is busy with the answer: after it.
                        Some(stream) if stream.client == id => stream.attach = Some(req),
                        _ => {
                            // Everything before the answer goes out the old way first.
                            self.flush_clients();
                            self.attach(id, &req);
                        }
                    },
                    Action::StreamAnswer(id, orig) => self.stream_start(id, orig),
                    Action::StreamEnd { whole } => self.stream_end(whole),
                    Action::Spawn => {
                        self.flush_child();
                        self.spawn_child(child_tx);
                    }
                    Action::Kill => {
                        self.flush_child();
                        if let Some(link) = self.child.as_mut() {
                            link.stdin = None;
                            if let Some(kill) = link.kill.take() {
                                let _ = kill.send(());
                            }
                        }
                    }
                }
            }
            self.flush_child();
            // A client found gone while writing feeds the router again: drain once more.
            if !self.flush_clients() {
                break;
            }
        }
        let status = self.router.status();
        self.pending.store(status.pending, Ordering::Relaxed);
        self.cache_hits.store(status.cache_hits, Ordering::Relaxed);
        let changed = RouterStatus {
            pending: self.published.pending,
            cache_hits: self.published.cache_hits,
            ..status.clone()
        } != self.published;
        if changed {
            self.published = status;
            let snapshot = snapshot(&self.published, &self.cfg, self.retired);
            self.status.send_replace(snapshot);
        }
    }

    /// Writes the gathered lines to the child's stdin (in place when it has room).
    fn flush_child(&mut self) {
        if self.to_child.is_empty() {
            return;
        }
        if let Some(stdin) = self.child.as_mut().and_then(|c| c.stdin.as_mut()) {
            if let Err(e) = stdin.send(&mut self.to_child) {
                // The child is going away; its exit is reported by its watcher.
                debug!(error = ?e, "child stdin is closed; dropped lines");
            }
        }
        self.to_child.clear();
    }

    /// Writes the gathered client lines, one batch per client in order; returns whether a
    /// client had to be dropped (the router has new actions then).
    fn flush_clients(&mut self) -> bool {
        if self.to_clients.is_empty() {
            return false;
        }
        let mut out = std::mem::take(&mut self.to_clients);
        let mut dropped = false;
        let mut batch = Vec::new();
        let mut i = 0;
        while i < out.len() {
            let id = out[i].0;
            // Lines for one client are usually adjacent; gather the run.
            let mut j = i;
            while j < out.len() && out[j].0 == id {
                batch.push(std::mem::take(&mut out[j].1));
                j += 1;
            }
            i = j;
            if let Some(stream) = self.stream.as_mut().filter(|s| s.client == id) {
                stream.held.append(&mut batch);
                continue;
            }
            dropped |= self.send_lines(id, &mut batch);
            batch.clear();
        }
        out.clear();
        self.to_clients = out;
        dropped
    }

    /// Writes `batch` to one client; drops a client that is gone or not reading (and tells
    /// the router, whose new actions are then waiting), which is what it returns.
    fn send_lines(&mut self, id: ClientId, batch: &mut Vec<Line>) -> bool {
        let Some(conn) = self.clients.get_mut(&id) else {
            return false;
        };
        let sent = match &mut conn.host {
            Host::Held(held) if held.2.len() + batch.len() > CLIENT_QUEUE => Err(WriteError::Full),
            Host::Held(held) => {
                held.2.append(batch);
                Ok(())
            }
            _ => conn
                .writer()
                .map_or(Err(WriteError::Closed), |w| w.send(batch)),
        };
        let Err(e) = sent else { return false };
        if e == WriteError::Full {
            warn!(
                client = id.0,
                queue = CLIENT_QUEUE,
                "client is not reading; disconnecting it"
            );
        }
        self.drop_client(Instant::now(), id);
        true
    }

    /// Closes a client as the router asked: an attached one whose reader still reads the host's
    /// stdin is stopped first, one whose lines wait for the proxy's go is closed after it
    /// (see [`Closing`]); any other is forgotten at once.
    fn close_client(&mut self, id: ClientId) {
        let Some(conn) = self.clients.get_mut(&id) else {
            return;
        };
        if let Some(stop) = conn.stop_input.take() {
            if stop.send(()).is_ok() {
                conn.closing = Closing::Stopping;
                return;
            }
        }
        if matches!(conn.host, Host::Held(_)) {
            conn.closing = Closing::AfterGo;
            return;
        }
        if self.stopping && matches!(conn.host, Host::Socket) {
            if let Some(stop) = conn.stop_read.take() {
                if stop.send(()).is_ok() {
                    conn.closing = Closing::Stopping;
                    return;
                }
            }
        }
        self.forget(id);
    }

    /// Drops a client's writers, which write what is queued, then close; an attached client's
    /// link is closed after its host's stdout is written (or after [`LINK_LINGER`]).
    fn forget(&mut self, id: ClientId) {
        let Some(conn) = self.clients.remove(&id) else {
            return;
        };
        let Conn {
            link,
            host,
            stdout_done,
            ..
        } = conn;
        drop(host);
        if let Some(done) = stdout_done {
            self.tracker.spawn(async move {
                let _ = tokio::time::timeout(LINK_LINGER, done.cancelled()).await;
                drop(link);
            });
        }
    }

    /// Whether a client is still being handed back to its proxy (see [`Closing`]).
    fn handing_back(&self) -> bool {
        self.clients.values().any(|c| c.closing != Closing::No)
    }

    /// Forgets a client whose connection failed and tells the router it is gone.
    fn drop_client(&mut self, now: Instant, id: ClientId) {
        self.clients.remove(&id);
        self.router.handle(now, Input::ClientGone(id));
    }

    /// More of a long line came from the child: passed on when it is the answer being
    /// streamed; otherwise, if it is an answer with its id first, the router is asked whether
    /// it may be streamed, and the codec told to stop reporting this line when not.
    fn child_partial(&mut self, now: Instant) {
        let Some(stdout) = self.child.as_mut().and_then(|c| c.stdout.as_mut()) else {
            return;
        };
        if let Some(stream) = self.stream.as_mut() {
            if stream.line.is_some() {
                // The next line already: the streamed one ends first (and this one is
                // reported again when more of it arrives).
                self.drive_now = true;
                return;
            }
            let conn = if stream.live {
                self.clients.get_mut(&stream.client)
            } else {
                None
            };
            let Some(conn) = conn else {
                stream.live = false;
                stdout.get_mut().set_peeking(false);
                return;
            };
            let buf = stdout.read_buffer();
            let piece = &buf[stream.forwarded..];
            // What the last read peeked at is this piece, still in the child's pipe: moved
            // on to the client's pipe or socket as far as it has room, and the rest copied.
            let out = stdout.get_ref();
            let mut moved = 0;
            let mut written = match conn.writer() {
                Some(w) if out.owed() == piece.len() => w.splice_piece(out.fd(), piece.len()),
                _ => Ok(0),
            }
            .map(|n| moved = n);
            if written.is_ok() && moved < piece.len() {
                written = write_piece(conn, &[&piece[moved..]]);
            }
            stream.forwarded = buf.len();
            stdout.get_mut().moved(moved);
            if written.is_err() {
                stream.live = false;
                stdout.get_mut().set_peeking(false);
                let id = stream.client;
                self.drop_client(now, id);
            }
            return;
        }
        if self.probe.is_some() {
            return; // asked already; the answer is carried out before the next read
        }
        if let Some((up, span)) = crate::jsonrpc::answer_head(stdout.read_buffer()) {
            self.probe = Some(span);
            self.router.handle(now, Input::ChildAnswerBegins(up));
            if self.router.is_streaming() {
                self.drive_now = true;
                return;
            }
            self.probe = None;
        }
        if let Some(stdout) = self.child.as_mut().and_then(|c| c.stdout.as_mut()) {
            stdout.decoder_mut().quiet();
        }
    }

    /// Starts passing on the answer the router granted: what came before goes out first,
    /// then the line so far with the client's id in place of the mux's.
    fn stream_start(&mut self, client: ClientId, id: Bytes) {
        self.flush_clients();
        let span = self.probe.take().unwrap_or(0..0);
        let mut stream = Stream {
            client,
            id,
            span,
            forwarded: 0,
            live: false,
            held: Vec::new(),
            attach: None,
            line: None,
        };
        let buf = self
            .child
            .as_ref()
            .and_then(|c| c.stdout.as_ref())
            .map(|s| s.read_buffer());
        let mut failed = false;
        if let (Some(conn), Some(buf)) = (self.clients.get_mut(&client), buf) {
            if conn.writer().is_some() && !stream.span.is_empty() && buf.len() >= stream.span.end {
                let span = &stream.span;
                let head = [&buf[..span.start], &stream.id[..], &buf[span.end..]];
                failed = write_piece(conn, &head).is_err();
                stream.live = !failed;
                stream.forwarded = buf.len();
            }
        }
        debug!(
            client = client.0,
            live = stream.live,
            "passing a long answer on as it arrives"
        );
        if failed {
            self.drop_client(Instant::now(), client);
        }
        // The rest of the line is peeked at as it comes, to be moved on rather than copied,
        // when the client's writer takes bytes from a pipe (Linux: its pipe or socket).
        let moves = self
            .clients
            .get_mut(&client)
            .and_then(Conn::writer)
            .is_some_and(|w| w.takes_splice());
        self.peek_child(stream.live && moves);
        self.stream = Some(stream);
    }

    /// Peek into the child's stdout from the next read on, or read it plainly again.
    fn peek_child(&mut self, on: bool) {
        if let Some(stdout) = self.child.as_mut().and_then(|c| c.stdout.as_mut()) {
            stdout.get_mut().set_peeking(on);
        }
    }

    /// The line being passed on is complete: its last piece and newline go out at once when
    /// it is live (the router checks it next); otherwise it is kept for [`Actor::stream_end`].
    fn stream_tail(&mut self, line: &Bytes) {
        self.peek_child(false);
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        stream.line = Some(line.clone());
        if !stream.live {
            return;
        }
        let (id, rest) = (
            stream.client,
            line.slice(stream.forwarded.min(line.len())..),
        );
        self.send_lines(id, &mut vec![Line::from(rest)]);
    }

    /// Ends the answer being passed on: the whole line the usual way when it was not live and
    /// is whole, the cut line's newline when it is live and ended early; then the client's
    /// lines and attach that waited for it.
    fn stream_end(&mut self, whole: bool) {
        // Others' lines go out; the client's own join those waiting.
        self.flush_clients();
        self.peek_child(false);
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        let mut lines = Vec::with_capacity(stream.held.len() + 1);
        match (&stream.line, stream.live) {
            (Some(line), false) if whole && line.len() >= stream.span.end => {
                lines.push(Line::splice(
                    line,
                    &mut [(stream.span.clone(), &stream.id[..])],
                ));
            }
            // Cut before its end: its newline, so that what follows is a line of its own.
            (None, true) => lines.push(Line::default()),
            _ => {}
        }
        lines.append(&mut stream.held);
        self.send_lines(stream.client, &mut lines);
        if let Some(req) = stream.attach {
            if self.clients.contains_key(&stream.client) {
                self.attach(stream.client, &req);
            }
        }
    }

    fn spawn_child(&mut self, child_tx: &mpsc::Sender<(u64, String)>) {
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
                let (kill_tx, kill_rx) = oneshot::channel();
                let (closed_tx, closed_rx) = oneshot::channel();
                let span = info_span!("child", pid);
                // A pipe sender can be written in place by the actor (no task hop per line);
                // its writer task only runs when the pipe is full.
                grow_pipe(&spawned.stdout);
                let stdin = spawned
                    .stdin
                    .into_owned_fd()
                    .and_then(pipe::Sender::from_owned_fd);
                if let Ok(stdin) = &stdin {
                    grow_pipe(stdin);
                }
                let stdin = match stdin {
                    Ok(stdin) => Some(LineWriter::new(
                        ChildIn::new(stdin),
                        CHILD_QUEUE,
                        &self.tracker,
                        span.clone(),
                        None,
                    )),
                    Err(e) => {
                        // Nothing can be sent to this child; it is stopped like any other.
                        warn!(error = %e, "cannot use the child's stdin");
                        None
                    }
                };
                self.tracker.spawn(
                    watch_child(
                        generation,
                        spawned.child,
                        pid,
                        self.cfg.shutdown_grace,
                        child_tx.clone(),
                        kill_rx,
                        closed_rx,
                    )
                    .instrument(span),
                );
                self.child = Some(ChildLink {
                    generation,
                    stdin,
                    stdout: Some(FramedRead::new(
                        ChildOut::new(spawned.stdout),
                        LineCodec::reporting(self.cfg.max_response_bytes, STREAM_AT),
                    )),
                    stdout_closed: Some(closed_tx),
                    kill: Some(kill_tx),
                });
                self.router.handle(now, Input::ChildSpawned { pid });
            }
        }
    }

    /// Answers a client's `rmcp-mux/attach`: with descriptors offered, the answer goes on its
    /// socket after everything before it, the reader starts on the host's stdin, and lines for
    /// the client wait until the proxy says go; without, an error says what was missing.
    fn attach(&mut self, id: ClientId, req: &Bytes) {
        let Some(conn) = self.clients.get_mut(&id) else {
            return;
        };
        let offer = match conn.host {
            Host::Socket => conn.offer.take(),
            Host::Held(..) | Host::Stdout(_) => None,
        };
        let Some(offer) = offer else {
            let line = crate::jsonrpc::error(
                req,
                crate::jsonrpc::codes::INVALID_REQUEST,
                "rmcp-mux/attach needs the host's stdin and stdout passed with it (SCM_RIGHTS), \
                 each a pipe or a socket, on a client that is not attached yet",
                None,
            );
            self.to_clients.push((id, Line::from(line)));
            return;
        };
        let Offer {
            stdout: (fd, kind),
            go,
            stop,
        } = *offer;
        // The reader switches before the answer leaves: whatever it reads on the socket after
        // that (the proxy's go) belongs to the link, never to the router.
        let mut ack = vec![Line::from(crate::jsonrpc::response(req, b"{}"))];
        if go.send(()).is_err() || conn.link.send(&mut ack).is_err() {
            // The client is gone; its reader reports it.
            return;
        }
        conn.host = Host::Held(Box::new((fd, kind, Vec::new())));
        conn.stop_input = Some(stop);
        debug!(
            client = id.0,
            "client attached: the host's stdin and stdout are read here"
        );
    }

    /// The proxy's go: what waited for the host is written to its stdout, and all that follows.
    fn go(&mut self, now: Instant, id: ClientId) {
        let Some(conn) = self.clients.get_mut(&id) else {
            return;
        };
        let (fd, kind, mut held) = match std::mem::replace(&mut conn.host, Host::Socket) {
            Host::Held(held) => *held,
            other => {
                conn.host = other;
                debug!(client = id.0, "go without an attach; ignored");
                return;
            }
        };
        let sink = match kind {
            handoff::Kind::Pipe => pipe::Sender::from_owned_fd(fd).map(|p| {
                let room = crate::io::lines::PipeRoom::of(&p);
                Sink::Pipe(p, room)
            }),
            handoff::Kind::Socket => {
                crate::io::socket::SocketWriter::new(std::os::unix::net::UnixStream::from(fd))
                    .map(Sink::Socket)
            }
        };
        let done = CancellationToken::new();
        let sent = sink.map_err(|e| e.to_string()).and_then(|sink| {
            let span = info_span!("client", id = id.0);
            let mut writer =
                LineWriter::new(sink, CLIENT_QUEUE, &self.tracker, span, Some(done.clone()));
            writer
                .send(&mut held)
                .map(|()| writer)
                .map_err(|e| format!("{e:?}"))
        });
        match sent {
            Ok(writer) => {
                conn.host = Host::Stdout(Box::new(writer));
                conn.stdout_done = Some(done);
                if conn.closing == Closing::AfterGo {
                    self.forget(id);
                }
            }
            Err(e) => {
                warn!(client = id.0, error = %e, "cannot write to the attached host's stdout; disconnecting it");
                self.drop_client(now, id);
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
        grow_send_buffer(&stream);
        let (read, write) = match crate::io::socket::split_tokio(stream) {
            Ok(halves) => halves,
            Err(e) => {
                warn!(error = %e, "could not take a connection");
                return;
            }
        };
        let id = ClientId(self.next_client);
        self.next_client += 1;
        self.served = true;
        // Not a child of the shutdown token: on shutdown the router answers what each client
        // is owed and then closes it, and an attached client only hears those answers if its
        // reader (which would report it gone) is still there to hear them.
        let token = CancellationToken::new();
        let span = info_span!("client", id = id.0);
        // When the router closes the client (or the peer is gone) and what was queued is
        // written, the writer cancels the token: the reader stops too.
        let writer = LineWriter::new(
            Sink::Socket(write),
            CLIENT_QUEUE,
            &self.tracker,
            span.clone(),
            Some(token.clone()),
        );
        // Not instrumented with the span: entering it on every poll (once per read) was
        // ≈ 2 % of the daemon's time under load; the reader's few events name it as parent.
        let (stop_read, stop_rx) = oneshot::channel();
        self.tracker.spawn(read_client(
            id,
            read,
            self.cfg.max_request_bytes,
            client_tx.clone(),
            (token, stop_rx),
            span.clone(),
        ));
        self.clients.insert(
            id,
            Conn {
                link: writer,
                offer: None,
                host: Host::Socket,
                stop_input: None,
                stop_read: Some(stop_read),
                closing: Closing::No,
                stdout_done: None,
            },
        );
        debug!(client = id.0, "client connected");
        self.router.handle(now, Input::ClientConnected(id));
    }
}

/// Pipe capacity asked for the child's stdin and stdout: a 1 MiB line then crosses in one
/// write and one read instead of sixteen 64 KiB rounds, each a wake-up of both sides.
#[cfg(target_os = "linux")]
const PIPE_SIZE: i32 = 1 << 20;

/// Writes part of a line still arriving to a client whose lines are written now.
fn write_piece(conn: &mut Conn, pieces: &[&[u8]]) -> Result<(), WriteError> {
    conn.writer()
        .map_or(Err(WriteError::Closed), |w| w.send_piece(pieces))
}

/// Grows a pipe's kernel buffer (Linux); a refusal (over `fs.pipe-max-size`) keeps the default.
fn grow_pipe(fd: &impl std::os::fd::AsFd) {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Send buffer asked for each client socket (the kernel doubles it, within
/// `net.core.wmem_max`). With the default (≈ 208 KiB) a 1 MiB line leaves in five writes, each
/// a wait for the client to read and a wake-up; with this it leaves in one. The kernel only
/// holds memory for what is queued, so an idle client costs nothing more.
const CLIENT_SNDBUF: usize = 1 << 20;

/// Grows a client socket's send buffer; a refusal keeps the default.
fn grow_send_buffer(stream: &UnixStream) {
    let _ = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::SndBuf, &CLIENT_SNDBUF);
}

/// The next connection a dispatcher hands over (never ready without one).
async fn handed(incoming: &mut Option<mpsc::UnboundedReceiver<UnixStream>>) -> Option<UnixStream> {
    match incoming.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
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

/// Stops reading a client's socket as the actor asked: the lines already there are read and
/// passed on first (they were sent before the client could know), then the actor is told.
async fn stop_reading(
    id: ClientId,
    link: &mut FramedRead<crate::io::socket::SocketReader, LineCodec>,
    tx: &mpsc::Sender<(ClientId, ClientEvent)>,
) {
    while let Some(Some(Ok(frame))) = link.next().now_or_never() {
        let ev = match frame {
            Frame::Line(line) => ClientEvent::Line(line),
            Frame::TooLong { .. } => ClientEvent::TooLong,
            Frame::Partial => continue,
        };
        if tx.send((id, ev)).await.is_err() {
            return;
        }
    }
    let _ = tx.send((id, ClientEvent::ReadStopped)).await;
}

/// How many lines a reader takes in a row before it looks at its cancellation again (it
/// only looks when the socket has nothing more, otherwise; see [`read_socket`]).
const LINES_BETWEEN_CANCEL_CHECKS: u32 = 64;

/// Reads one client: its socket, and once it attached, its host's stdin (the socket then
/// carries only the proxy's `go`, and its end says the proxy is gone).
async fn read_client(
    id: ClientId,
    mut read: crate::io::socket::SocketReader,
    max: usize,
    tx: mpsc::Sender<(ClientId, ClientEvent)>,
    (token, stop): (CancellationToken, oneshot::Receiver<()>),
    span: tracing::Span,
) {
    read.accept_fds();
    let mut link = FramedRead::with_capacity(read, LineCodec::new(max), CLIENT_READ_BUF);
    if let Some(taken) = read_socket(id, &mut link, &tx, (&token, stop), &span).await {
        read_attached(id, taken, &mut link, max, &tx, &token, &span).await;
    }
    let _ = tx.send((id, ClientEvent::Gone)).await;
}

/// What the socket gave after the hand-off was taken, before the reader knew: a link line.
type LinkFrame = Option<Result<Frame, std::io::Error>>;

/// The host's stdin, once the actor took the hand-off: what the reader reads from then on.
struct Taken {
    /// The host's stdin and its kind.
    stdin: (OwnedFd, handoff::Kind),
    /// The actor's word to stop reading it (the client is being closed while the host lives).
    stop: oneshot::Receiver<()>,
    /// A line read on the socket meanwhile, which belongs to the link.
    first: Option<LinkFrame>,
}

/// The host's stdin offered with an attach, until the actor takes it.
struct Offered {
    stdin: (OwnedFd, handoff::Kind),
    go: oneshot::Receiver<()>,
    stop: oneshot::Receiver<()>,
}

impl Offered {
    fn taken(self, first: Option<LinkFrame>) -> Taken {
        Taken {
            stdin: self.stdin,
            stop: self.stop,
            first,
        }
    }
}

/// The socket carries the client's lines, until the actor takes the host's stdin that came
/// with an attach (returned, with a line read meanwhile, which belongs to the link) or the
/// client is gone (`None`).
async fn read_socket(
    id: ClientId,
    link: &mut FramedRead<crate::io::socket::SocketReader, LineCodec>,
    tx: &mpsc::Sender<(ClientId, ClientEvent)>,
    (token, stop): (&CancellationToken, oneshot::Receiver<()>),
    span: &tracing::Span,
) -> Option<Taken> {
    let mut offered: Option<Offered> = None;
    let mut stop = Some(stop);
    // Made once: a fresh `cancelled()` per line registered and unregistered a waiter under a
    // lock each time, which was ≈ 4 % of the daemon's instructions per request.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    let mut since_check = 0u32;
    loop {
        // Lines come before the cancellation in the `select!` below; looking at it every few
        // dozen lines too means a client that floods cannot keep it out.
        since_check += 1;
        if since_check == LINES_BETWEEN_CANCEL_CHECKS {
            since_check = 0;
            if token.is_cancelled() {
                return None;
            }
        }
        let frame = tokio::select! {
            // The hand-off first: once taken, the socket is the link.
            biased;
            // Cancel safe: a oneshot receiver polled by reference.
            taken = async {
                match offered.as_mut() {
                    Some(o) => (&mut o.go).await,
                    None => std::future::pending().await,
                }
            } => {
                match (taken, offered.take()) {
                    (Ok(()), Some(o)) => return Some(o.taken(None)),
                    // The offer was dropped (replaced, or the client closed): keep reading.
                    _ => continue,
                }
            }
            // Cancel safe: a oneshot receiver polled by reference.
            told = async {
                match stop.as_mut() {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            } => {
                stop = None;
                if told.is_ok() {
                    stop_reading(id, link, tx).await;
                    cancelled.await;
                    return None;
                }
                continue;
            }
            // Cancel safe: FramedRead keeps partial lines in its buffer.
            f = link.next() => f,
            () = &mut cancelled => return None,
        };
        // The actor took the offer while this was read: the line came after the answer.
        if let Some(o) = offered.as_mut() {
            if o.go.try_recv().is_ok() {
                return Some(offered.take()?.taken(Some(frame)));
            }
        }
        // Descriptors come with the bytes of the line that asks to attach (and maybe lines
        // before it): offered before any of those lines reaches the actor.
        let fds = link.get_mut().take_fds();
        if !fds.is_empty() {
            match handoff::HostFds::from_vec(fds) {
                Some(host) => {
                    let (go_tx, go_rx) = oneshot::channel();
                    let (stop_tx, stop_rx) = oneshot::channel();
                    let offer = Box::new(Offer {
                        stdout: host.stdout,
                        go: go_tx,
                        stop: stop_tx,
                    });
                    if tx.send((id, ClientEvent::Offer(offer))).await.is_err() {
                        return None;
                    }
                    offered = Some(Offered {
                        stdin: host.stdin,
                        go: go_rx,
                        stop: stop_rx,
                    });
                }
                None => debug!(
                    parent: span,
                    client = id.0,
                    "descriptors passed that are not a stdin and a stdout pipe or socket; closed them"
                ),
            }
        }
        let (ev, after) = match frame {
            // Not while an attach waits: the lines after it may belong to the host's stdin.
            Some(Ok(Frame::Line(line))) if offered.is_none() => buffered_lines(link, line),
            Some(Ok(Frame::Line(line))) => (ClientEvent::Line(line), None),
            Some(Ok(Frame::TooLong { .. })) => (ClientEvent::TooLong, None),
            // Not a reporting codec: never given.
            Some(Ok(Frame::Partial)) => continue,
            Some(Err(e)) => {
                debug!(parent: span, error = %e, "client read failed");
                return None;
            }
            // Half-closed, as the proxy treats stdin EOF: the answers it is owed are written,
            // then the router closes it (which ends this reader through the token).
            None if offered.is_none() && !link.get_ref().peer_closed() => {
                if tx.send((id, ClientEvent::HalfClosed)).await.is_err() {
                    return None;
                }
                cancelled.await;
                return None;
            }
            None => return None,
        };
        for ev in std::iter::once(ev).chain(after) {
            if tx.send((id, ev)).await.is_err() {
                return None;
            }
        }
    }
}

/// At most this many lines go to the actor as one event.
const LINES_PER_EVENT: usize = 64;

/// `first` and the whole lines already read after it, taken from the buffer without reading
/// more: a client that sent several lines at once costs the actor one hand-over instead of one
/// per line. A frame that is not a line ends them and comes second.
fn buffered_lines<R>(
    link: &mut FramedRead<R, LineCodec>,
    first: Bytes,
) -> (ClientEvent, Option<ClientEvent>) {
    // The codec and the buffer are borrowed together: the codec is taken out meanwhile.
    let mut codec = std::mem::replace(link.decoder_mut(), LineCodec::new(0));
    let buf = link.read_buffer_mut();
    let mut first = Some(first);
    let mut lines = Vec::new();
    let mut after = None;
    while !buf.is_empty() && lines.len() < LINES_PER_EVENT {
        match codec.decode(buf) {
            Ok(Some(Frame::Line(line))) => {
                if let Some(first) = first.take() {
                    lines.reserve(8);
                    lines.push(first);
                }
                lines.push(line);
            }
            Ok(Some(Frame::TooLong { .. })) => {
                after = Some(ClientEvent::TooLong);
                break;
            }
            Ok(Some(Frame::Partial) | None) | Err(_) => break,
        }
    }
    *link.decoder_mut() = codec;
    let ev = match first {
        Some(first) => ClientEvent::Line(first),
        None => ClientEvent::Lines(lines),
    };
    (ev, after)
}

/// Attached: the host's stdin carries the client's lines (same framing and limit as the
/// socket); the socket (the link) the proxy's go, and its end means the proxy is gone.
///
/// Told to stop (the actor closes the client while the host lives on: a reload, a stop), it
/// reads no more of the host's stdin and hands the actor what it read and did not pass on
/// (whole lines and a partial one), to go back to the proxy, which reads the host's stdin
/// again from there.
async fn read_attached(
    id: ClientId,
    taken: Taken,
    link: &mut FramedRead<crate::io::socket::SocketReader, LineCodec>,
    max: usize,
    tx: &mpsc::Sender<(ClientId, ClientEvent)>,
    token: &CancellationToken,
    span: &tracing::Span,
) {
    let Taken {
        stdin: (fd, kind),
        mut stop,
        mut first,
    } = taken;
    let mut stop_armed = true;
    let mut input = match handoff::reader(fd, kind) {
        Ok(r) => Some(FramedRead::with_capacity(
            r,
            LineCodec::new(max),
            CLIENT_READ_BUF,
        )),
        Err(e) => {
            warn!(parent: span, client = id.0, error = %e, "cannot read the attached host's stdin");
            if tx.send((id, ClientEvent::InputClosed)).await.is_err() {
                return;
            }
            None
        }
    };
    // Made once, as in `read_socket`.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            // Cancel safe: FramedRead keeps partial lines in its buffer.
            f = async {
                match input.as_mut() {
                    Some(i) => i.next().await,
                    None => std::future::pending().await,
                }
            } => {
                let (ev, after) = match (f, input.as_mut()) {
                    (Some(Ok(Frame::Line(line))), Some(i)) => buffered_lines(i, line),
                    (Some(Ok(Frame::TooLong { .. })), _) => (ClientEvent::TooLong, None),
                    // Not a reporting codec: never given.
                    (Some(Ok(Frame::Partial)), _) => continue,
                    _ => {
                        // Dropping it closes this copy of the host's stdin.
                        input = None;
                        (ClientEvent::InputClosed, None)
                    }
                };
                for ev in std::iter::once(ev).chain(after) {
                    if tx.send((id, ev)).await.is_err() {
                        return;
                    }
                }
            }
            f = async {
                match first.take() {
                    Some(f) => f,
                    None => link.next().await,
                }
            } => match f {
                Some(Ok(Frame::Line(line))) if handoff::is_notice(&line, handoff::GO) => {
                    if tx.send((id, ClientEvent::Go)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => debug!(
                    parent: span,
                    client = id.0,
                    "ignored a line on an attached client's link"
                ),
                Some(Err(_)) | None => return,
            },
            // Cancel safe: a oneshot receiver polled by reference.
            told = &mut stop, if stop_armed => {
                stop_armed = false;
                if told.is_err() {
                    continue; // the actor forgot the client: the token ends this reader
                }
                let unread = input.take().map(unread).unwrap_or_default();
                if tx.send((id, ClientEvent::InputStopped(unread))).await.is_err() {
                    return;
                }
            }
            () = &mut cancelled => return,
        }
    }
}

/// What a reader read from the host's stdin and has not passed on: the bytes of its buffer,
/// less the rest of a line over the bound it was skipping (that line was answered already).
fn unread<R>(mut input: FramedRead<R, LineCodec>) -> Bytes {
    let skipping = input.decoder().is_discarding();
    let buf = input.read_buffer_mut();
    if skipping {
        match memchr::memchr(b'\n', buf) {
            Some(at) => bytes::Buf::advance(buf, at + 1),
            None => buf.clear(),
        }
    }
    buf.split().freeze()
}

/// Watches one child: its exit, the end of its stdout (which the actor reads) and the actor's
/// order to stop it; reports `Exited` once the child is gone.
async fn watch_child(
    generation: u64,
    mut child: tokio::process::Child,
    pid: u32,
    grace: Duration,
    tx: mpsc::Sender<(u64, String)>,
    mut kill: oneshot::Receiver<()>,
    mut stdout_closed: oneshot::Receiver<()>,
) {
    let mut status = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut kill_armed = true;
    loop {
        tokio::select! {
            // Closed, or the actor stopped reading (the sender dropped): either way no more
            // lines come from this child.
            _ = &mut stdout_closed => {
                if status.is_none() {
                    // stdout closed but the process lives on: give it the grace period, then
                    // stop it.
                    status = tokio::select! {
                        s = child.wait() => s.ok(),
                        () = tokio::time::sleep(grace) => child::terminate(&mut child, pid, grace).await.ok(),
                    };
                }
                break;
            }
            exit = child.wait(), if status.is_none() => {
                status = exit.ok();
                // What the child wrote before it exited may still be on its way (and a
                // grandchild may hold stdout open: the drain is bounded).
                drain_until = Some(tokio::time::Instant::now() + STDOUT_DRAIN);
            }
            () = crate::io::lines::sleep_until(drain_until) => break,
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
    // Whatever the leader left behind in its group goes with it: no orphans.
    let _ = child::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
    child::forget(pid);
    let reason = status.map_or_else(
        || "exited (status unknown)".to_owned(),
        child::describe_exit,
    );
    let _ = tx.send((generation, reason)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines that came in one read go to the actor as one event, in order; a line over the
    /// bound ends them and follows as its own event; a line alone goes as itself, and a line
    /// not yet complete stays for the next read.
    #[tokio::test]
    async fn lines_read_together_are_handed_over_together_in_order() {
        let data = b"one\ntwo\n\nthree\nthis line is over the bound\nfour\nfive";
        let mut link = FramedRead::new(&data[..], LineCodec::new(16));
        let texts = |lines: &[Bytes]| -> Vec<String> {
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect()
        };
        let Some(Ok(Frame::Line(first))) = link.next().await else {
            panic!("no first line");
        };
        match buffered_lines(&mut link, first) {
            (ClientEvent::Lines(lines), Some(ClientEvent::TooLong)) => {
                assert_eq!(texts(&lines), ["one", "two", "three"]);
            }
            _ => panic!("expected three lines, then the long one"),
        }
        let Some(Ok(Frame::Line(four))) = link.next().await else {
            panic!("no fourth line");
        };
        match buffered_lines(&mut link, four) {
            (ClientEvent::Line(line), None) => assert_eq!(&line[..], b"four"),
            _ => panic!("expected the fourth line alone"),
        }
        match link.next().await {
            Some(Ok(Frame::Line(line))) => assert_eq!(&line[..], b"five"),
            other => panic!("expected the last line at the end, got {other:?}"),
        }
    }
}
