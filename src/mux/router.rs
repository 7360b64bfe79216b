//! The routing table of PROTOCOL.md as a pure, synchronous state machine: one `Router` per server
//! owns every piece of routing state (pending requests, progress tokens, subscriptions, log levels,
//! server→client requests, tasks, the child's lifecycle) and turns inputs into actions.
//!
//! It must not do I/O, read clocks, spawn processes or touch tokio: time comes in as `now`, lines
//! come in as bytes, and everything it wants done goes out through [`Router::poll_action`]. That is
//! what lets the tests drive it message by message on a fake clock.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use super::cache::{self, SharedCache};
use crate::config::{Capabilities, Era, ServerConfig, ServerRequestPolicy, Share};
use crate::jsonrpc::{self, codes, era, reasons, Kind, Line, Malformed, Parsed};
use crate::status::{Command, ServerState};

/// The router's maps, looked up on every message: a fast, fixed-seed hasher (the keys are ids
/// from the user's own processes, so hash flooding is not a concern, and a fixed seed keeps the
/// state machine reproducible).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// One client connection, numbered by the actor; never reused within a router's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// The protocol version the mux asks for upstream.
pub const UPSTREAM_PROTOCOL_VERSION: &str = "2025-11-25";

/// A child that ran this long before exiting counts as healthy: its exit starts the restart
/// count afresh.
pub const HEALTHY_STRETCH: Duration = Duration::from_secs(60);

/// After a client's input closed, how long it is kept for the answers it is still owed (the
/// proxy's own drain after stdin EOF is as long).
pub const INPUT_CLOSED_DRAIN: Duration = Duration::from_secs(60);

/// The most client lines that wait while an `era = "auto"` child is asked its era (all
/// clients together); a request past it is answered `era_queue_full`, anything else dropped.
pub const MAX_AWAITING_ERA_LINES: usize = 256;

/// The most bytes of client lines waiting for the era, unless one line of
/// `max_request_bytes` is more: that many always fit.
pub const MAX_AWAITING_ERA_BYTES: usize = 4 << 20;

/// Window in which repeated `notifications/roots/list_changed` from clients collapse into one.
pub const ROOTS_DEBOUNCE: Duration = Duration::from_millis(250);

/// Everything that can happen to a server, fed in by the actor.
#[derive(Debug)]
pub enum Input {
    /// A client connected to the socket.
    ClientConnected(ClientId),
    /// A client sent a line (without its newline).
    ClientLine(ClientId, Bytes),
    /// A client sent a line longer than `max_request_bytes`; it was discarded.
    ClientTooLong(ClientId),
    /// A client's connection ended.
    ClientGone(ClientId),
    /// A client will send nothing more (an attached host closed stdin, or a socket client shut
    /// down its writing side) but still reads: it is closed once every answer it is owed has
    /// been sent, or after [`INPUT_CLOSED_DRAIN`].
    ClientInputClosed(ClientId),
    /// The child process started.
    ChildSpawned {
        /// Its process id (the leader of its process group).
        pid: u32,
    },
    /// The child could not be started at all.
    ChildSpawnFailed(String),
    /// The child wrote a line on stdout.
    ChildLine(Bytes),
    /// The child has started a long answer to this upstream id, with the id before the
    /// payload, and is still writing it: the router may let it be passed on as it arrives
    /// ([`Action::StreamAnswer`]); the whole line still comes as [`Input::ChildLine`].
    ChildAnswerBegins(u64),
    /// The child wrote a line longer than `max_response_bytes`; it was discarded.
    ChildTooLong,
    /// The child exited (stdout closed and the process was reaped).
    ChildExited(String),
    /// A control command (CLI, tray).
    Command(Command),
    /// A reload changed the server's config: run with this one from now on. Its clients stay;
    /// a child that runs (or is starting) is restarted with the new config as after a crash
    /// (requests it was sent are answered `upstream_exited`, the rest wait for the new child,
    /// which gets the handshake replayed; `list_changed` follows if its lists differ). A
    /// server that was idle, stopped, failed or in backoff starts as a new one would (at once,
    /// or at its first request with `lazy_start`). The child's era is kept unless the new
    /// config names one.
    Reconfigure(Box<ServerConfig>),
    /// The daemon is shutting down: answer what is owed and stop the child.
    Shutdown,
}

/// What the router wants the actor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this line (no newline) to one client.
    ToClient(ClientId, Line),
    /// Write this line (no newline) to the child's stdin.
    ToChild(Line),
    /// Flush what was queued for this client and close its connection.
    CloseClient(ClientId),
    /// The client asked to hand over its host's stdin and stdout (`rmcp-mux/attach`, see
    /// `crate::io::handoff`), under this id (raw JSON): the actor answers it, since only the actor
    /// knows whether descriptors came with it.
    Attach(ClientId, Bytes),
    /// Pass the child's answer that is still arriving on to this client as it comes, with
    /// this id (raw JSON) in place of the mux's; lines for the client wait until it ends.
    StreamAnswer(ClientId, Bytes),
    /// The answer being passed on has ended: whole (write the rest of it and its newline), or
    /// not (cut off or not valid JSON-RPC: end the line there; an error for it follows).
    StreamEnd {
        /// Whether the line was a valid answer.
        whole: bool,
    },
    /// Start the child process.
    Spawn,
    /// Stop the child: close stdin, SIGTERM its group, SIGKILL after the grace period; report
    /// [`Input::ChildExited`] when it is gone.
    Kill,
}

/// The part of a server's status the router knows; the actor adds the socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterStatus {
    /// Lifecycle state.
    pub state: ServerState,
    /// The child's pid while one runs.
    pub pid: Option<u32>,
    /// Connected clients.
    pub clients: usize,
    /// Requests waiting for an answer from the child.
    pub pending: usize,
    /// Restarts after crashes since the daemon started.
    pub restarts: u32,
    /// When the current child finished its handshake.
    pub running_since: Option<Instant>,
    /// How the last child ended.
    pub last_exit: Option<String>,
    /// When the next restart after a crash is due (in backoff).
    pub restart_at: Option<Instant>,
    /// A `global` server whose tools look per-session: what to consider instead.
    pub hint: Option<String>,
    /// The protocol era the current child speaks ("handshake" or "modern"), once known.
    pub era: Option<&'static str>,
    /// The protocol version negotiated with the current child, once known.
    pub protocol_version: Option<String>,
    /// The names connected clients gave in `initialize`'s `clientInfo` ("Cursor"), each once,
    /// in the order they connected: the menu says who uses a server.
    pub client_names: Vec<String>,
    /// Child round trips saved by the shared cache of public results (modern children).
    pub cache_hits: u64,
}

/// The protocol era one child process speaks (each speaks one; see [`Era`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildEra {
    Handshake,
    Modern,
}

impl ChildEra {
    fn as_str(self) -> &'static str {
        match self {
            ChildEra::Handshake => "handshake",
            ChildEra::Modern => "modern",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Idle,
    Spawning,
    Initializing { init_id: u64 },
    Running,
    Stopping { then: AfterStop },
    Backoff { until: Instant },
    Stopped,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Start,
    Stay,
    Crash,
    /// Stopped for want of clients (`idle_stop_ms`): back to lazy.
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connected,
    Initialized,
    Ready,
}

const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

fn level_index(name: &str) -> Option<u8> {
    LEVELS.iter().position(|l| *l == name).map(|i| i as u8)
}

struct Client {
    phase: Phase,
    /// The capabilities object of its `initialize`, raw: stamped on its requests for a modern
    /// child.
    init_caps: Option<Bytes>,
    /// The clientInfo of its `initialize`, raw.
    info: Option<Bytes>,
    /// It has sent a request in the 2026-07-28 envelope (other than `server/discover`): it gets
    /// no unsolicited notifications and no server→client requests.
    modern: bool,
    caps: Capabilities,
    level: Option<u8>,
    subscriptions: HashSet<String>,
    /// Its open `subscriptions/listen` streams (2026-07-28), emulated by the mux.
    listens: Vec<Listen>,
    in_flight: usize,
    last_request: u64,
    /// Once its input closed: when to close it even if answers are still owed.
    input_closed: Option<Instant>,
    /// The name it gave in `initialize`'s `clientInfo`, for the status.
    name: Option<String>,
}

/// One `subscriptions/listen` stream of a modern client, served from the handshake-era child's
/// list-changed notifications and a `resources/subscribe` counted with the handshake clients'.
struct Listen {
    /// The listen request's id, raw JSON: every frame carries it as the subscription id.
    id: ReqId,
    /// What the mux honours of what it asked for.
    filter: era::Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// An ordinary forwarded request.
    Forward,
    /// A client's `initialize`, answered from the cache once the upstream handshake is done.
    ClientInit,
    /// A forwarded `tasks/list`, filtered per client on the way back.
    TasksList,
    /// A request that asked for a task; its result may carry a task id to record.
    TaskAugmented,
    /// Passed to `forward` only: `TaskAugmented` when the params ask for a task, else
    /// `Forward` (decided there, from the one scan of the params that finds the progress token).
    MaybeTask,
    /// The mux's own upstream `initialize`.
    UpstreamInit,
    /// A client's `tools/list` to a `global` server, whose tool names are looked at once.
    ToolsList,
    /// Any other request of the mux's own (subscribe replay, setLevel); its answer is dropped.
    Internal,
    /// A client's `server/discover`, answered from the cached `initialize` result once the
    /// upstream handshake is done.
    Discover,
    /// The mux's `server/discover` to a child of `era = "auto"` whose era is not known yet.
    UpstreamProbe,
    /// The mux's `server/discover` to a modern child, in place of `initialize`.
    UpstreamDiscover,
    /// A modern client's `subscriptions/listen` passed through to a modern child: pending
    /// until either side ends it, never timed out.
    Listen,
}

impl Purpose {
    /// Waits for the upstream handshake rather than for an answer of the child's own.
    fn waits_for_init(self) -> bool {
        matches!(self, Purpose::ClientInit | Purpose::Discover)
    }
}

/// How a request in the 2026-07-28 envelope is answered: the marks its result needs and the
/// log level it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModernReq {
    /// Its method is one whose result carries `ttlMs` and `cacheScope`.
    cacheable: bool,
    /// The least severe log level it asked to be told about, if any.
    level: Option<u8>,
    /// What the client declared it can answer, for this request.
    caps: Capabilities,
    /// Its method may be answered `input_required` (`tools/call`, `prompts/get`,
    /// `resources/read`): the child's requests while it runs can be bridged to it.
    interactive: bool,
    /// Its place in the order of all client requests (as `Client::last_request`).
    seq: u64,
    /// Written with its envelope to a modern child: its answer goes back as the child wrote
    /// it (only the id, and a subscription id, restored).
    passthrough: bool,
}

/// A child's server→client request held for a modern client, which was answered
/// `input_required` with it and is expected to retry its request with the answer.
struct Mrtr {
    client: ClientId,
    /// The child's id for its request, raw.
    server_id: Bytes,
    /// The key of the request in `inputRequests`.
    key: String,
    /// The `requestState` the retry must carry, exactly.
    state: String,
    /// The child's answer to the client's request, when it came before the retry.
    answer: Option<Bytes>,
}

/// A client's request id, raw JSON, held while the request is pending (in [`Pending`] and
/// as the key the client's cancellations look it up by). Ids up to 22 bytes (nearly all:
/// numbers, UUIDs are 38 with quotes) are kept inline: a shared `Bytes` cost two allocations
/// per request, one to copy it and one to share it between the two maps.
#[derive(Clone)]
enum ReqId {
    Inline { len: u8, bytes: [u8; 22] },
    Shared(Bytes),
}

impl ReqId {
    fn new(raw: &[u8]) -> Self {
        let mut bytes = [0u8; 22];
        match bytes.get_mut(..raw.len()) {
            Some(head) => {
                head.copy_from_slice(raw);
                ReqId::Inline {
                    // Fits: at most 22.
                    len: raw.len() as u8,
                    bytes,
                }
            }
            None => ReqId::Shared(Bytes::copy_from_slice(raw)),
        }
    }
}

impl std::ops::Deref for ReqId {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReqId::Inline { len, bytes } => &bytes[..usize::from(*len)],
            ReqId::Shared(b) => b,
        }
    }
}

impl PartialEq for ReqId {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for ReqId {}

impl std::hash::Hash for ReqId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl std::fmt::Debug for ReqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self))
    }
}

struct Pending {
    client: Option<ClientId>,
    /// The client's id, raw JSON.
    orig_id: ReqId,
    purpose: Purpose,
    deadline: Instant,
    /// Whether it has been written to the current child.
    sent: bool,
    /// The client's raw progress token; the upstream token is the upstream id.
    progress: Option<Bytes>,
    batch: Option<u64>,
    /// Set when the request came in the 2026-07-28 envelope: its answer is marked for it.
    modern: Option<ModernReq>,
}

struct ServerRequest {
    client: ClientId,
    server_id: Bytes,
    elicitation: Option<String>,
    /// Asked on a modern child's behalf (an `inputRequests` entry): the drive and the key
    /// its answer goes under, instead of a child's id.
    drive: Option<(u64, String)>,
}

/// The most rounds of `input_required` the mux drives for one handshake-era request.
pub const MAX_INPUT_ROUNDS: u8 = 10;

/// A handshake-era client's request that a modern child answered `input_required`: the mux
/// asks the client each input request as a real request, then retries the child.
struct Drive {
    /// The pending request (its client id, deadline) it belongs to.
    up: u64,
    client: ClientId,
    /// The client's request as it sent it, retried with the answers added.
    line: Bytes,
    /// Answers so far, and how many are still awaited.
    answers: serde_json::Map<String, serde_json::Value>,
    missing: usize,
    /// The child's `requestState`, passed back exactly.
    state: Option<serde_json::Value>,
    /// Rounds driven so far, this one included.
    rounds: u8,
    seq: u64,
}

struct Batch {
    client: ClientId,
    expected: usize,
    replies: Vec<Line>,
}

struct Task {
    client: ClientId,
    /// Upstream progress token kept alive for the task's lifetime.
    progress: Option<u64>,
}

/// The routing state machine of one server. See the module docs.
///
/// Call order: feed an input with [`Router::handle`] (or [`Router::handle_timeout`] when the
/// deadline from [`Router::poll_timeout`] passes), then drain [`Router::poll_action`] until it
/// returns `None` and carry out every action in order, then ask [`Router::poll_timeout`] for
/// the next deadline.
pub struct Router {
    name: String,
    cfg: ServerConfig,
    life: Life,
    pid: Option<u32>,
    clients: HashMap<ClientId, Client>,
    next_upstream: u64,
    pending: HashMap<u64, Pending>,
    /// Client requests waiting for the child (what status calls `pending`).
    client_pending: usize,
    /// `(deadline, upstream id)` of every pending request, earliest first (see
    /// [`Router::insert_pending`]); entries of answered requests linger until they reach the
    /// front, or until [`Router::remove_pending`] sweeps them out once they are most of it.
    deadlines: VecDeque<(Instant, u64)>,
    /// Requests accepted while the child is not running, written once it is.
    held: VecDeque<(u64, Line)>,
    progress_routes: HashMap<u64, (ClientId, Bytes)>,
    next_server_req: u64,
    server_reqs: HashMap<u64, ServerRequest>,
    server_req_ids: HashMap<Bytes, u64>,
    elicitations: HashMap<String, ClientId>,
    tasks: HashMap<String, Task>,
    subscriptions: HashMap<String, usize>,
    /// Held child requests bridged to modern clients, by the upstream id of the client request
    /// they belong to.
    mrtr: HashMap<u64, Mrtr>,
    next_mrtr: u64,
    upstream_level: Option<u8>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    init_result: Option<Bytes>,
    /// The `initialize` params of this instance's own client (a `project` or `client` server),
    /// sent upstream instead of the mux's: such a child sees its host as it would directly.
    client_init: Option<Bytes>,
    /// Since when no client has been connected while the child runs (for `idle_stop_ms`).
    idle_since: Option<Instant>,
    /// Tools of a `global` server that look per-session (warned about once).
    session_tools: Option<Vec<String>>,
    /// A modern child's `server/discover` result, as it wrote it.
    discover: Option<Bytes>,
    /// The era `era = "auto"` found (kept for the server's later processes); for
    /// "handshake" and "modern", the configured one.
    verdict: Option<ChildEra>,
    /// The era and protocol version of the current child, once its first answer came.
    child_era: Option<(ChildEra, String)>,
    /// The current child is being asked its era (`era = "auto"`).
    probing: bool,
    /// The mux's own listen on a modern child, for the handshake-era clients: its upstream
    /// id, and the URIs it subscribes to (JSON).
    upstream_listen: Option<u64>,
    upstream_listen_uris: String,
    /// Handshake-era clients' requests to a modern child that may be answered
    /// `input_required`: by upstream id, the client's line and the rounds driven before.
    drive_lines: HashMap<u64, (Bytes, u8)>,
    drives: HashMap<u64, Drive>,
    next_drive: u64,
    /// Client lines that came while the child's era was being found out, replayed in order
    /// once it is known.
    awaiting_era: VecDeque<(ClientId, Bytes)>,
    /// The bytes of the lines in `awaiting_era`.
    awaiting_bytes: usize,
    /// A modern child's `cacheScope: "public"` results, shared by the modern clients.
    cache: SharedCache,
    running_since: Option<Instant>,
    started_at: Option<Instant>,
    consecutive_failures: u32,
    restarts: u32,
    last_exit: Option<String>,
    request_seq: u64,
    roots_changed: Option<Instant>,
    roots_pending: bool,
    /// Clients whose input closed, waiting for their last answers.
    closing: usize,
    /// The answer being passed on while the child writes it (`Input::ChildAnswerBegins`).
    streaming: Option<Streaming>,
    actions: VecDeque<Action>,
}

/// An answer passed on before it was complete; its request is no longer pending.
struct Streaming {
    up: u64,
    client: ClientId,
    orig_id: ReqId,
}

impl Router {
    /// A router for one server; the child starts at once unless `lazy_start` or disabled.
    pub fn new(cfg: ServerConfig) -> Router {
        let verdict = match cfg.era {
            Era::Handshake => Some(ChildEra::Handshake),
            Era::Modern => Some(ChildEra::Modern),
            Era::Auto => None,
        };
        let mut router = Router {
            name: cfg.name.clone(),
            life: Life::Idle,
            cfg,
            pid: None,
            clients: HashMap::default(),
            next_upstream: 1,
            pending: HashMap::default(),
            client_pending: 0,
            deadlines: VecDeque::new(),
            held: VecDeque::new(),
            progress_routes: HashMap::default(),
            next_server_req: 1,
            server_reqs: HashMap::default(),
            server_req_ids: HashMap::default(),
            elicitations: HashMap::default(),
            tasks: HashMap::default(),
            subscriptions: HashMap::default(),
            mrtr: HashMap::default(),
            next_mrtr: 1,
            upstream_level: None,
            batches: HashMap::default(),
            next_batch: 1,
            init_result: None,
            client_init: None,
            idle_since: None,
            session_tools: None,
            discover: None,
            verdict,
            child_era: None,
            probing: false,
            upstream_listen: None,
            upstream_listen_uris: String::new(),
            drive_lines: HashMap::default(),
            drives: HashMap::default(),
            next_drive: 1,
            awaiting_era: VecDeque::new(),
            awaiting_bytes: 0,
            cache: SharedCache::default(),
            running_since: None,
            started_at: None,
            consecutive_failures: 0,
            restarts: 0,
            last_exit: None,
            request_seq: 0,
            roots_changed: None,
            roots_pending: false,
            closing: 0,
            streaming: None,
            actions: VecDeque::new(),
        };
        if !router.cfg.enabled {
            router.life = Life::Stopped;
        } else if !router.cfg.lazy_start {
            router.spawn();
        }
        router
    }

    // ----- getters -----

    /// The server's name, for logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The status as users see it.
    pub fn status(&self) -> RouterStatus {
        let state = match self.life {
            Life::Idle => ServerState::Lazy,
            Life::Spawning | Life::Initializing { .. } => ServerState::Starting,
            Life::Running => ServerState::Running,
            Life::Stopping {
                then: AfterStop::Stay,
            } => ServerState::Stopped,
            Life::Stopping {
                then: AfterStop::Idle,
            } => ServerState::Lazy,
            Life::Stopping { .. } => ServerState::Starting,
            Life::Backoff { .. } => ServerState::Backoff,
            Life::Stopped => ServerState::Stopped,
            Life::Failed => ServerState::Failed,
        };
        RouterStatus {
            state,
            pid: self.pid,
            clients: self.clients.len(),
            pending: self.client_pending,
            restarts: self.restarts,
            running_since: self.running_since,
            last_exit: self.last_exit.clone(),
            restart_at: match self.life {
                Life::Backoff { until } => Some(until),
                _ => None,
            },
            hint: self.session_tools.as_ref().map(|tools| {
                format!(
                    "its tools ({}) look per-session; consider share = \"client\"",
                    tools.join(", ")
                )
            }),
            era: self.child_era.as_ref().map(|(e, _)| e.as_str()),
            protocol_version: self.child_era.as_ref().map(|(_, v)| v.clone()),
            client_names: self.client_names(),
            cache_hits: self.cache.hits(),
        }
    }

    /// The distinct `clientInfo` names of the connected clients, oldest connection first.
    fn client_names(&self) -> Vec<String> {
        let mut named: Vec<(ClientId, &str)> = self
            .clients
            .iter()
            .filter_map(|(id, c)| Some((*id, c.name.as_deref()?)))
            .collect();
        named.sort_unstable_by_key(|(id, _)| id.0);
        let mut names: Vec<String> = Vec::new();
        for (_, n) in named {
            if !names.iter().any(|seen| seen == n) {
                names.push(n.to_owned());
            }
        }
        names
    }

    /// Whether the child process is alive (or being started or stopped).
    pub fn child_alive(&self) -> bool {
        matches!(
            self.life,
            Life::Spawning | Life::Initializing { .. } | Life::Running | Life::Stopping { .. }
        )
    }

    // ----- outputs -----

    /// The next action to carry out, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether an answer is being passed on as it arrives (after [`Input::ChildAnswerBegins`]
    /// was granted, until its [`Action::StreamEnd`]).
    pub fn is_streaming(&self) -> bool {
        self.streaming.is_some()
    }

    /// The next instant at which [`Router::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.deadlines.front().map(|(t, _)| *t);
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        if let Life::Backoff { until } = self.life {
            consider(until);
        }
        if let Some(at) = self.idle_due() {
            consider(at);
        }
        if self.closing > 0 {
            for c in self.clients.values() {
                if let Some(at) = c.input_closed {
                    consider(at);
                }
            }
        }
        if self.roots_pending {
            if let Some(at) = self.roots_changed {
                consider(at + ROOTS_DEBOUNCE);
            }
        }
        next
    }

    // ----- inputs -----

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.handle_input(now, input);
        if self.closing > 0 {
            self.close_drained(now);
        }
    }

    fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::ClientConnected(id) => self.client_connected(id),
            Input::ClientLine(id, line) => {
                if !self.clients.contains_key(&id) {
                    return;
                }
                if self.verdict.is_none()
                    && matches!(
                        self.life,
                        Life::Idle | Life::Spawning | Life::Initializing { .. }
                    )
                {
                    // Whether requests go with or without an envelope, and how answers come
                    // back, depends on the era the probe finds.
                    if self.life == Life::Idle {
                        self.spawn();
                    }
                    return self.await_era(id, line);
                }
                self.client_line(now, id, &line, None);
            }
            Input::ClientTooLong(id) => {
                let msg = format!(
                    "request exceeds max_request_bytes ({} bytes)",
                    self.cfg.max_request_bytes
                );
                let data = format!(
                    r#"{{"reason":"{}","limit":{}}}"#,
                    reasons::TOO_LARGE,
                    self.cfg.max_request_bytes
                );
                self.send_client(
                    id,
                    jsonrpc::error(b"null", codes::INVALID_REQUEST, &msg, Some(&data)),
                );
            }
            Input::ClientGone(id) => self.client_gone(now, id),
            Input::ClientInputClosed(id) => {
                if let Some(c) = self.clients.get_mut(&id) {
                    if c.input_closed.is_none() {
                        c.input_closed = Some(now + INPUT_CLOSED_DRAIN);
                        self.closing += 1;
                    }
                }
            }
            Input::ChildSpawned { pid } => self.child_spawned(now, pid),
            Input::ChildSpawnFailed(reason) => {
                warn!(server = %self.name, %reason, "child could not be started");
                self.child_exited(now, reason)
            }
            Input::ChildLine(line) => self.child_line(now, line),
            Input::ChildAnswerBegins(up) => self.child_answer_begins(up),
            Input::ChildTooLong => {
                warn!(server = %self.name, limit = self.cfg.max_response_bytes,
                    "child wrote a line over max_response_bytes; dropped");
                self.stream_broken();
            }
            Input::ChildExited(reason) => self.child_exited(now, reason),
            Input::Command(cmd) => self.command(now, cmd),
            Input::Reconfigure(cfg) => self.reconfigure(now, *cfg),
            Input::Shutdown => self.shutdown(),
        }
    }

    /// Expires whatever is due at `now`: request timeouts, restart backoff, roots debounce.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, up)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            self.expire(now, up);
        }
        if let Life::Backoff { until } = self.life {
            if until <= now {
                self.spawn();
            }
        }
        if self.idle_due().is_some_and(|at| at <= now) {
            debug!(server = %self.name, "no client for idle_stop_ms; stopping the child until the next request");
            self.idle_since = None;
            self.stop_child(AfterStop::Idle);
        }
        if self.roots_pending
            && self
                .roots_changed
                .is_some_and(|t| t + ROOTS_DEBOUNCE <= now)
        {
            self.roots_pending = false;
            self.roots_changed = Some(now);
            if self.life == Life::Running {
                self.send_child(jsonrpc::notification(
                    "notifications/roots/list_changed",
                    "{}",
                ));
            }
        }
        if self.closing > 0 {
            self.close_drained(now);
        }
    }

    /// Closes the clients whose input closed and that are owed nothing more (no request in
    /// flight, no batch waiting for replies), or whose drain time is up.
    fn close_drained(&mut self, now: Instant) {
        let done: Vec<ClientId> = self
            .clients
            .iter()
            .filter_map(|(id, c)| {
                let at = c.input_closed?;
                // An open listen is owed nothing until it ends: it does not hold the client.
                let owed = self
                    .pending
                    .values()
                    .any(|p| p.client == Some(*id) && p.purpose != Purpose::Listen)
                    || self.awaiting_era.iter().any(|(c, _)| c == id)
                    || self.batches.values().any(|b| b.client == *id)
                    || self.streaming.as_ref().is_some_and(|s| s.client == *id);
                (!owed || at <= now).then_some(*id)
            })
            .collect();
        for id in done {
            debug!(server = %self.name, client = id.0, "client input closed and nothing owed; closing it");
            self.client_gone(now, id);
            self.push(Action::CloseClient(id));
        }
    }

    // ----- lifecycle -----

    /// When a `global` server with `idle_stop_ms` stops its child for want of clients: the
    /// child runs, no client is connected and nothing is owed.
    fn idle_due(&self) -> Option<Instant> {
        let after = self
            .cfg
            .idle_stop
            .filter(|_| self.cfg.share == Share::Global)?;
        let since = self.idle_since?;
        (self.life == Life::Running && self.clients.is_empty() && self.pending.is_empty())
            .then_some(since + after)
    }

    fn spawn(&mut self) {
        self.life = Life::Spawning;
        self.pid = None;
        self.push(Action::Spawn);
    }

    fn child_spawned(&mut self, now: Instant, pid: u32) {
        if self.life != Life::Spawning {
            return;
        }
        self.pid = Some(pid);
        self.started_at = Some(now);
        self.child_era = None;
        if let (Some(params), Some(ChildEra::Handshake)) = (self.client_init.clone(), self.verdict)
        {
            // An instance's own client's `initialize`: the child sees its host as directly.
            let init_id = self.alloc_upstream();
            self.upstream_initialize(now, init_id, &String::from_utf8_lossy(&params));
            return;
        }
        match self.verdict {
            Some(ChildEra::Handshake) => self.send_initialize(now),
            Some(ChildEra::Modern) => self.send_discover(now, Purpose::UpstreamDiscover),
            None => {
                self.probing = true;
                self.send_discover(now, Purpose::UpstreamProbe);
            }
        }
    }

    /// The capabilities the mux declares upstream, as the members of a JSON object.
    fn declared_upstream(&self) -> String {
        let caps = &self.cfg.capabilities;
        let mut declared = Vec::new();
        if caps.sampling {
            declared.push(r#""sampling":{}"#);
        }
        if caps.elicitation {
            declared.push(r#""elicitation":{"form":{},"url":{}}"#);
        }
        if caps.roots {
            declared.push(r#""roots":{"listChanged":true}"#);
        }
        declared.join(",")
    }

    /// Asks the child `server/discover`: the first words to a modern child, or the probe of
    /// one whose era is not known.
    fn send_discover(&mut self, now: Instant, purpose: Purpose) {
        let id = self.alloc_upstream();
        let caps = format!("{{{}}}", self.declared_upstream());
        let params = era::discover_params(&caps, era::SUPPORTED[0]);
        self.insert_pending(
            id,
            Pending {
                client: None,
                orig_id: ReqId::new(b""),
                purpose,
                deadline: now + self.cfg.request_timeout,
                sent: true,
                progress: None,
                batch: None,
                modern: None,
            },
        );
        self.life = Life::Initializing { init_id: id };
        self.send_child(jsonrpc::request(id, "server/discover", &params));
    }

    /// Records the era found for this server's processes and replays the client lines that
    /// waited for it.
    fn set_verdict(&mut self, now: Instant, era: ChildEra) {
        self.probing = false;
        if self.verdict.is_none() {
            tracing::info!(server = %self.name, era = era.as_str(), "protocol era found");
        }
        self.verdict = Some(era);
        self.awaiting_bytes = 0;
        for (client, line) in std::mem::take(&mut self.awaiting_era) {
            if self.clients.contains_key(&client) {
                self.client_line(now, client, &line, None);
            }
        }
    }

    /// Holds a client line until the child's era is known, within the bounds
    /// ([`MAX_AWAITING_ERA_LINES`], [`MAX_AWAITING_ERA_BYTES`]): past them a request is
    /// answered with an error at once and anything else is dropped.
    fn await_era(&mut self, client: ClientId, line: Bytes) {
        let max_bytes = MAX_AWAITING_ERA_BYTES.max(self.cfg.max_request_bytes);
        if self.awaiting_era.len() < MAX_AWAITING_ERA_LINES
            && self.awaiting_bytes + line.len() <= max_bytes
        {
            self.awaiting_bytes += line.len();
            return self.awaiting_era.push_back((client, line));
        }
        warn!(server = %self.name, limit = MAX_AWAITING_ERA_LINES,
            "too many lines wait for the server's protocol era; refused");
        let Ok(env) = jsonrpc::parse_one(&line) else {
            return;
        };
        if let (Kind::Request, Some(id)) = (env.kind, env.id) {
            let msg = format!(
                "server {} is still being started and {} lines already wait for it",
                self.name,
                self.awaiting_era.len()
            );
            let data = format!(
                r#"{{"reason":"{}","limit":{}}}"#,
                reasons::ERA_QUEUE_FULL,
                MAX_AWAITING_ERA_LINES
            );
            let err = jsonrpc::error(
                id.get().as_bytes(),
                codes::INTERNAL_ERROR,
                &msg,
                Some(&data),
            );
            self.send_client(client, err);
        }
    }

    /// The current child (or the next) speaks 2026-07-28.
    fn child_modern(&self) -> bool {
        self.verdict == Some(ChildEra::Modern)
    }

    /// A modern child answered `server/discover`: it is running.
    fn upstream_discovered(&mut self, now: Instant, result: jsonrpc::Raw<'_>, version: &str) {
        self.discover = Some(Bytes::copy_from_slice(result.get().as_bytes()));
        let init = era::init_from_discover(result.get().as_bytes(), UPSTREAM_PROTOCOL_VERSION);
        self.child_era = Some((ChildEra::Modern, version.to_owned()));
        self.upstream_ready(now, init);
    }

    fn send_initialize(&mut self, now: Instant) {
        let init_id = self.alloc_upstream();
        let params = format!(
            r#"{{"protocolVersion":"{}","capabilities":{{{}}},"clientInfo":{{"name":"rmcp-mux","version":"{}"}}}}"#,
            UPSTREAM_PROTOCOL_VERSION,
            self.declared_upstream(),
            env!("CARGO_PKG_VERSION")
        );
        self.upstream_initialize(now, init_id, &params);
    }

    /// Sends the upstream `initialize` with these params and waits for its answer.
    fn upstream_initialize(&mut self, now: Instant, init_id: u64, params: &str) {
        self.insert_pending(
            init_id,
            Pending {
                client: None,
                orig_id: ReqId::new(b""),
                purpose: Purpose::UpstreamInit,
                deadline: now + self.cfg.request_timeout,
                sent: true,
                progress: None,
                batch: None,
                modern: None,
            },
        );
        self.life = Life::Initializing { init_id };
        self.send_child(jsonrpc::request(init_id, "initialize", params));
    }

    fn upstream_initialized(&mut self, now: Instant, result: jsonrpc::Raw<'_>) {
        let new = Bytes::copy_from_slice(result.get().as_bytes());
        let version = jsonrpc::str_field(Some(result), "protocolVersion").unwrap_or_default();
        self.child_era = Some((ChildEra::Handshake, version));
        self.upstream_ready(now, new);
    }

    /// The child is ready (its handshake or discover done): answer who waited for it, send
    /// what was held, and tell clients to re-list when a restarted child differs.
    fn upstream_ready(&mut self, now: Instant, new: Bytes) {
        let handshake = !self.child_modern();
        let changed = match &self.init_result {
            Some(old) => identity(old) != identity(&new),
            None => false,
        };
        let restart = self.init_result.is_some();
        self.init_result = Some(new);
        self.life = Life::Running;
        self.running_since = Some(now);
        if self.clients.is_empty() {
            self.idle_since = Some(now);
        }
        if handshake {
            self.send_child(jsonrpc::notification("notifications/initialized", "{}"));
            // Subscriptions and the log level are per upstream session: replay them.
            let uris: Vec<String> = self.subscriptions.keys().cloned().collect();
            for uri in uris {
                let params = format!(r#"{{"uri":{}}}"#, serde_json::Value::from(uri));
                self.internal_request(now, "resources/subscribe", &params);
            }
            if let Some(level) = self.upstream_level {
                let params = format!(r#"{{"level":"{}"}}"#, LEVELS[level as usize]);
                self.internal_request(now, "logging/setLevel", &params);
            }
        }
        // Answer the clients that were waiting for the handshake, and send what was held.
        let waiting: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.purpose.waits_for_init())
            .map(|(id, _)| *id)
            .collect();
        for up in waiting {
            if let Some(p) = self.remove_pending(up) {
                match (p.client, p.purpose) {
                    (Some(client), Purpose::Discover) => self.answer_discover(client, &p.orig_id),
                    (Some(client), _) => self.answer_init(client, &p.orig_id, p.batch),
                    (None, _) => {}
                }
            }
        }
        while let Some((up, line)) = self.held.pop_front() {
            if let Some(p) = self.pending.get_mut(&up) {
                p.sent = true;
                self.actions.push_back(Action::ToChild(line));
            }
        }
        self.sync_upstream_listen(now);
        if restart && changed {
            for kind in ["tools", "prompts", "resources"] {
                let note =
                    jsonrpc::notification(&format!("notifications/{kind}/list_changed"), "{}");
                self.broadcast_ready(&note);
            }
        }
    }

    fn child_exited(&mut self, now: Instant, reason: String) {
        let was = self.life;
        self.pid = None;
        self.last_exit = Some(reason.clone());
        self.running_since = None;
        self.stream_broken();
        // What was written to the dead child will never be answered.
        let data = self.reason_data(reasons::UPSTREAM_EXITED);
        let msg = format!("server {} exited: {}", self.name, reason);
        // A client answered `input_required` is owed nothing under that id; its retry will
        // find the requestState gone with the child.
        let bridged: Vec<u64> = self.mrtr.drain().map(|(up, _)| up).collect();
        for up in bridged {
            self.remove_pending(up);
        }
        self.fail_pending(|p| p.sent, &msg, &data);
        self.end_listens(&msg, &data);
        self.server_reqs.clear();
        self.server_req_ids.clear();
        self.elicitations.clear();
        for task in std::mem::take(&mut self.tasks).into_values() {
            if let Some(tok) = task.progress {
                self.progress_routes.remove(&tok);
            }
        }
        self.child_era = None;
        self.upstream_listen = None;
        // What the old child said may not hold for the next.
        self.cache.clear();
        // A restarted child knows no requestState of the old one.
        self.drive_lines.clear();
        self.drives.clear();
        if self.probing && matches!(was, Life::Initializing { .. }) {
            // It died of the probe: a handshake-era server that cannot take an unknown
            // method. Start it again without the probe.
            warn!(server = %self.name, "child exited on the server/discover probe; starting it again with initialize");
            self.set_verdict(now, ChildEra::Handshake);
            self.spawn();
            return;
        }
        self.probing = false;
        match was {
            Life::Stopping {
                then: AfterStop::Start,
            } => {
                self.consecutive_failures = 0;
                self.spawn();
            }
            Life::Stopping {
                then: AfterStop::Idle,
            } => {
                // A request that came while it stopped starts it again at once.
                if self.pending.values().any(|p| p.client.is_some()) || !self.held.is_empty() {
                    self.spawn();
                } else {
                    self.life = Life::Idle;
                }
            }
            Life::Stopping {
                then: AfterStop::Stay,
            }
            | Life::Stopped => {
                self.life = Life::Stopped;
                self.fail_all("stopped");
            }
            Life::Failed => {}
            _ => {
                warn!(server = %self.name, %reason, "child exited");
                let healthy = self
                    .started_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= HEALTHY_STRETCH);
                if healthy {
                    self.consecutive_failures = 0;
                }
                self.consecutive_failures += 1;
                if self.cfg.max_restarts != 0 && self.consecutive_failures > self.cfg.max_restarts {
                    tracing::error!(server = %self.name, restarts = self.cfg.max_restarts,
                        "giving up after the restart limit; run `rmcp-mux restart {}`", self.name);
                    self.life = Life::Failed;
                    self.fail_all("failed");
                } else {
                    self.restarts += 1;
                    let delay = self.backoff(self.consecutive_failures);
                    self.life = Life::Backoff { until: now + delay };
                }
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let base = self.cfg.restart_backoff;
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        base.saturating_mul(factor)
            .min(self.cfg.restart_backoff_max)
    }

    /// Answers every request still owed with `server_unavailable` (server stopped or failed).
    fn fail_all(&mut self, state: &str) {
        self.held.clear();
        let data = format!(
            r#"{{"reason":"{}","state":"{}"}}"#,
            reasons::SERVER_UNAVAILABLE,
            state
        );
        let msg = format!("server {} is {}", self.name, state);
        self.awaiting_bytes = 0;
        for (client, line) in std::mem::take(&mut self.awaiting_era) {
            if let Ok(env) = jsonrpc::parse_one(&line) {
                if let (Kind::Request, Some(id)) = (env.kind, env.id) {
                    let err = jsonrpc::error(
                        id.get().as_bytes(),
                        codes::INTERNAL_ERROR,
                        &msg,
                        Some(&data),
                    );
                    self.send_client(client, err);
                }
            }
        }
        self.fail_pending(|_| true, &msg, &data);
    }

    /// Removes the pending requests `which` selects and answers their clients with an error.
    fn fail_pending(&mut self, which: impl Fn(&Pending) -> bool, msg: &str, data: &str) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| which(p))
            .map(|(id, _)| *id)
            .collect();
        for up in ids {
            if let Some(p) = self.remove_pending(up) {
                if let Some(client) = p.client {
                    let line = jsonrpc::error(&p.orig_id, codes::INTERNAL_ERROR, msg, Some(data));
                    self.reply(client, p.batch, line);
                }
            }
        }
    }

    fn command(&mut self, _now: Instant, cmd: Command) {
        match cmd {
            Command::Start => match self.life {
                Life::Stopped | Life::Failed | Life::Idle | Life::Backoff { .. } => {
                    self.consecutive_failures = 0;
                    self.spawn();
                }
                Life::Stopping { .. } => {
                    self.life = Life::Stopping {
                        then: AfterStop::Start,
                    }
                }
                _ => {}
            },
            Command::Restart => {
                self.consecutive_failures = 0;
                if self.child_alive() {
                    self.stop_child(AfterStop::Start);
                } else {
                    self.spawn();
                }
            }
            Command::Stop => {
                if self.child_alive() {
                    self.stop_child(AfterStop::Stay);
                } else {
                    self.life = Life::Stopped;
                }
                self.fail_all("stopped");
            }
        }
    }

    /// Takes a changed config (see [`Input::Reconfigure`]).
    fn reconfigure(&mut self, now: Instant, cfg: ServerConfig) {
        let era = match cfg.era {
            Era::Handshake => Some(ChildEra::Handshake),
            Era::Modern => Some(ChildEra::Modern),
            Era::Auto => None,
        };
        self.cfg = cfg;
        self.consecutive_failures = 0;
        if let Some(era) = era.filter(|e| self.verdict != Some(*e)) {
            self.set_verdict(now, era);
        }
        if self.child_alive() {
            self.stop_child(AfterStop::Start);
        } else if !self.cfg.lazy_start
            || !self.held.is_empty()
            || self.pending.values().any(|p| p.client.is_some())
        {
            self.spawn();
        } else {
            self.life = Life::Idle;
        }
    }

    /// Kills the child (once, even when asked again while it is stopping) and records what
    /// happens when it is gone.
    fn stop_child(&mut self, then: AfterStop) {
        if !matches!(self.life, Life::Stopping { .. }) {
            self.push(Action::Kill);
        }
        self.life = Life::Stopping { then };
    }

    fn shutdown(&mut self) {
        let alive = self.child_alive() && !matches!(self.life, Life::Stopping { .. });
        self.life = if self.child_alive() {
            Life::Stopping {
                then: AfterStop::Stay,
            }
        } else {
            Life::Stopped
        };
        // Requests written to the child are cancelled upstream so it can stop promptly.
        let sent: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.sent && p.client.is_some())
            .map(|(id, _)| *id)
            .collect();
        for up in sent {
            self.cancel_upstream(up, "rmcp-mux is shutting down");
        }
        self.fail_all("stopped");
        if alive {
            self.push(Action::Kill);
        }
        let clients: Vec<ClientId> = self.clients.keys().copied().collect();
        for c in clients {
            self.push(Action::CloseClient(c));
        }
    }

    // ----- clients -----

    fn client_connected(&mut self, id: ClientId) {
        if self.clients.len() >= self.cfg.max_active_clients {
            let max = self.cfg.max_active_clients;
            let data = format!(
                r#"{{"reason":"{}","max":{max}}}"#,
                reasons::TOO_MANY_CLIENTS
            );
            let msg = format!("too many clients: server {} allows {max}", self.name);
            warn!(server = %self.name, max, "refused a client over max_active_clients");
            self.send_client(
                id,
                jsonrpc::error(b"null", codes::INTERNAL_ERROR, &msg, Some(&data)),
            );
            self.push(Action::CloseClient(id));
            return;
        }
        self.clients.insert(
            id,
            Client {
                phase: Phase::Connected,
                caps: Capabilities {
                    sampling: false,
                    elicitation: false,
                    roots: false,
                },
                init_caps: None,
                info: None,
                modern: false,
                level: None,
                subscriptions: HashSet::new(),
                listens: Vec::new(),
                in_flight: 0,
                last_request: 0,
                input_closed: None,
                name: None,
            },
        );
    }

    fn client_gone(&mut self, now: Instant, id: ClientId) {
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        if self.clients.is_empty() {
            self.idle_since = Some(now);
        }
        if client.input_closed.is_some() {
            self.closing -= 1;
        }
        // Its requests in flight are cancelled upstream; nothing of its reaches anyone.
        let mine: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.client == Some(id))
            .map(|(up, _)| *up)
            .collect();
        for up in mine {
            self.drop_mrtr(
                up,
                "the client handling this request disconnected",
                reasons::CLIENT_GONE,
            );
            self.cancel_upstream(up, "client disconnected");
            self.remove_pending(up);
            self.forget_drive(up);
        }
        // The server's requests to it are answered with an error.
        let asked: Vec<u64> = self
            .server_reqs
            .iter()
            .filter(|(_, r)| r.client == id)
            .map(|(k, _)| *k)
            .collect();
        for k in asked {
            if let Some(r) = self.server_reqs.remove(&k) {
                if r.drive.is_some() {
                    // Asked for a modern child's request of this client, already forgotten.
                    continue;
                }
                self.server_req_ids.remove(&r.server_id);
                let data = format!(r#"{{"reason":"{}"}}"#, reasons::CLIENT_GONE);
                self.send_child(jsonrpc::error(
                    &r.server_id,
                    codes::INTERNAL_ERROR,
                    "the client handling this request disconnected",
                    Some(&data),
                ));
            }
        }
        if !client.subscriptions.is_empty() || !client.listens.is_empty() {
            self.sync_subscriptions(now);
        }
        self.tasks.retain(|_, t| t.client != id);
        self.elicitations.retain(|_, c| *c != id);
        self.batches.retain(|_, b| b.client != id);
        self.progress_routes.retain(|_, (c, _)| *c != id);
        if client.level.is_some() {
            self.update_upstream_level(now);
        }
    }

    fn client_line(&mut self, now: Instant, client: ClientId, line: &Bytes, batch: Option<u64>) {
        let parsed = if batch.is_some() {
            jsonrpc::parse_one(line).map(Parsed::Single)
        } else {
            jsonrpc::parse(line)
        };
        let env = match parsed {
            Ok(Parsed::Single(env)) => env,
            Ok(Parsed::Batch(items)) => return self.client_batch(now, client, line, items),
            Err(Malformed::Parse) => {
                return self.reply(
                    client,
                    batch,
                    jsonrpc::error(b"null", codes::PARSE_ERROR, "Parse error", None),
                )
            }
            Err(Malformed::Invalid) => {
                return self.reply(
                    client,
                    batch,
                    jsonrpc::error(b"null", codes::INVALID_REQUEST, "Invalid Request", None),
                )
            }
        };
        let method = env.method.as_deref().unwrap_or("");
        match env.kind {
            Kind::Request => {
                let id = env.id.map(|v| v.get()).unwrap_or("null");
                let id_bytes = ReqId::new(id.as_bytes());
                self.client_request(now, client, line, &env, method, id_bytes, batch);
            }
            Kind::Notification => self.client_notification(now, client, line, &env, method),
            Kind::Response | Kind::Error => self.client_response(now, client, line, &env),
        }
    }

    fn client_batch(
        &mut self,
        now: Instant,
        client: ClientId,
        line: &Bytes,
        items: Vec<jsonrpc::Raw<'_>>,
    ) {
        if items.is_empty() {
            return self.send_client(
                client,
                jsonrpc::error(b"null", codes::INVALID_REQUEST, "Invalid Request", None),
            );
        }
        // Each element expects a reply unless it is a well-formed notification or response.
        let expected = items
            .iter()
            .filter(|raw| {
                !matches!(
                    jsonrpc::parse_one(raw.get().as_bytes()).map(|e| e.kind),
                    Ok(Kind::Notification | Kind::Response | Kind::Error)
                )
            })
            .count();
        let b = self.next_batch;
        self.next_batch += 1;
        if expected > 0 {
            self.batches.insert(
                b,
                Batch {
                    client,
                    expected,
                    replies: Vec::with_capacity(expected),
                },
            );
        }
        for raw in items {
            let span = jsonrpc::span_in(line, raw.get());
            self.client_line(now, client, &line.slice(span), Some(b));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn client_request(
        &mut self,
        now: Instant,
        client: ClientId,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        method: &str,
        id: ReqId,
        batch: Option<u64>,
    ) {
        self.request_seq += 1;
        let seq = self.request_seq;
        let meta = env.meta;
        // The envelope's members were found in the one scan of the params, by `parse_one`.
        let modern = match era::check(meta.envelope) {
            Ok(None) => None,
            Ok(Some(envelope)) => Some(envelope),
            Err(era::EnvelopeError::Invalid(msg)) => {
                return self.reply(
                    client,
                    batch,
                    jsonrpc::error(&id, codes::INVALID_PARAMS, msg, None),
                )
            }
            Err(era::EnvelopeError::Unsupported(version)) => {
                let data = era::unsupported_data(&version);
                return self.reply(
                    client,
                    batch,
                    jsonrpc::error(
                        &id,
                        codes::UNSUPPORTED_PROTOCOL_VERSION,
                        "Unsupported protocol version",
                        Some(&data),
                    ),
                );
            }
        };
        if let Some(c) = self.clients.get_mut(&client) {
            if method != "initialize" && c.phase == Phase::Initialized {
                c.phase = Phase::Ready;
            }
        }
        if modern.is_some() && batch.is_some() {
            // The 2026-07-28 era has no batches.
            return self.reply(
                client,
                batch,
                jsonrpc::error(
                    &id,
                    codes::INVALID_REQUEST,
                    "a 2026-07-28 request cannot be part of a batch",
                    None,
                ),
            );
        }
        if let Some(envelope) = modern {
            return self
                .client_modern_request(now, client, line, env, method, id, meta, envelope, seq);
        }
        match method {
            "initialize" => self.client_initialize(now, client, env, id, batch),
            jsonrpc::mux_methods::ATTACH => match batch {
                None => self.push(Action::Attach(client, Bytes::copy_from_slice(&id))),
                Some(_) => self.reply(
                    client,
                    batch,
                    jsonrpc::error(
                        &id,
                        codes::INVALID_REQUEST,
                        "rmcp-mux/attach cannot be part of a batch",
                        None,
                    ),
                ),
            },
            "ping" => self.reply(client, batch, jsonrpc::response(&id, b"{}")),
            "server/discover" if batch.is_none() => self.client_discover(now, client, id),
            "server/discover" => self.reply(
                client,
                batch,
                jsonrpc::error(&id, codes::METHOD_NOT_FOUND, "Method not found", None),
            ),
            "logging/setLevel" => {
                let level = jsonrpc::str_field(env.params, "level");
                match level.as_deref().and_then(level_index) {
                    Some(level) => {
                        if let Some(c) = self.clients.get_mut(&client) {
                            c.level = Some(level);
                        }
                        self.update_upstream_level(now);
                        self.reply(client, batch, jsonrpc::response(&id, b"{}"));
                    }
                    None => self.reply(
                        client,
                        batch,
                        jsonrpc::error(&id, codes::INVALID_PARAMS, "unknown log level", None),
                    ),
                }
            }
            "resources/subscribe" | "resources/unsubscribe" => {
                let Some(uri) = jsonrpc::str_field(env.params, "uri") else {
                    return self.reply(
                        client,
                        batch,
                        jsonrpc::error(&id, codes::INVALID_PARAMS, "missing uri", None),
                    );
                };
                let subscribe = method == "resources/subscribe";
                let Some(c) = self.clients.get_mut(&client) else {
                    return;
                };
                // Counted once per client; only 0->1 and 1->0 reach the server.
                let changed = if subscribe {
                    c.subscriptions.insert(uri.clone())
                } else {
                    c.subscriptions.remove(&uri)
                };
                let before = self.subscriptions.get(&uri).copied().unwrap_or(0);
                self.recount_subscriptions();
                let after = self.subscriptions.get(&uri).copied().unwrap_or(0);
                let edge = changed && ((before == 0 && after == 1) || (before == 1 && after == 0));
                if self.child_modern() {
                    // A modern child has no subscribe: the mux's own listen carries the URIs.
                    self.sync_upstream_listen(now);
                    self.reply(client, batch, jsonrpc::response(&id, b"{}"));
                } else if edge && self.life == Life::Running {
                    self.forward(
                        now,
                        client,
                        line,
                        env,
                        id,
                        Purpose::Forward,
                        batch,
                        seq,
                        meta,
                    );
                } else {
                    self.reply(client, batch, jsonrpc::response(&id, b"{}"));
                }
            }
            "tasks/get" | "tasks/result" | "tasks/cancel" => {
                let task = jsonrpc::str_field(env.params, "taskId");
                let foreign = task
                    .as_ref()
                    .and_then(|t| self.tasks.get(t))
                    .is_some_and(|t| t.client != client);
                if foreign {
                    return self.reply(
                        client,
                        batch,
                        jsonrpc::error(&id, codes::INVALID_PARAMS, "unknown task id", None),
                    );
                }
                self.forward(
                    now,
                    client,
                    line,
                    env,
                    id,
                    Purpose::Forward,
                    batch,
                    seq,
                    meta,
                );
            }
            "tasks/list" => self.forward(
                now,
                client,
                line,
                env,
                id,
                Purpose::TasksList,
                batch,
                seq,
                meta,
            ),
            "tools/list" if self.cfg.share == Share::Global && self.session_tools.is_none() => self
                .forward(
                    now,
                    client,
                    line,
                    env,
                    id,
                    Purpose::ToolsList,
                    batch,
                    seq,
                    meta,
                ),
            _ => self.forward(
                now,
                client,
                line,
                env,
                id,
                Purpose::MaybeTask,
                batch,
                seq,
                meta,
            ),
        }
    }

    /// A request in the 2026-07-28 envelope (already checked): answered here when the era has
    /// no such method or the mux knows the answer, else forwarded with its envelope stripped
    /// and marked so that its answer is marked for it.
    #[allow(clippy::too_many_arguments)]
    fn client_modern_request(
        &mut self,
        now: Instant,
        client: ClientId,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        method: &str,
        id: ReqId,
        meta: jsonrpc::RequestMeta<'_>,
        envelope: era::Envelope<'_>,
        seq: u64,
    ) {
        let passthrough = self.child_modern();
        match method {
            "server/discover" => return self.client_discover(now, client, id),
            "subscriptions/listen" if passthrough => {
                if let Some(c) = self.clients.get_mut(&client) {
                    c.modern = true;
                }
                let modern = ModernReq {
                    cacheable: false,
                    level: None,
                    caps: declared_capabilities(Some(envelope.capabilities)),
                    interactive: false,
                    seq,
                    passthrough,
                };
                return self.forward_with(
                    now,
                    client,
                    line,
                    env,
                    id,
                    Purpose::Listen,
                    None,
                    seq,
                    meta,
                    Some(modern),
                );
            }
            "subscriptions/listen" => {
                if let Some(c) = self.clients.get_mut(&client) {
                    c.modern = true;
                }
                return self.client_listen(now, client, env, id);
            }
            // Gone from the modern era: a modern client never gets them answered.
            "initialize"
            | "ping"
            | "logging/setLevel"
            | "resources/subscribe"
            | "resources/unsubscribe" => {
                let msg = format!("{method} is not a method of protocol {}", envelope.version);
                return self.send_client(
                    client,
                    jsonrpc::error(&id, codes::METHOD_NOT_FOUND, &msg, None),
                );
            }
            _ => {}
        }
        let level = envelope.log_level.as_deref().and_then(level_index);
        if let Some(c) = self.clients.get_mut(&client) {
            c.modern = true;
            if let Some(l) = level {
                c.level = Some(c.level.map_or(l, |old| old.min(l)));
            }
        }
        if level.is_some() {
            self.update_upstream_level(now);
        }
        let interactive = era::INTERACTIVE.contains(&method);
        // A modern child's own `requestState` is the child's to read.
        if interactive && !passthrough && era::maybe_retry(env.params) {
            if let Some(state) = jsonrpc::str_field(env.params, "requestState") {
                return self.client_retry(now, client, env, id, meta, &state);
            }
        }
        let shared = passthrough
            .then(|| cache::Key::of(method, env.params))
            .flatten();
        if let Some(key) = &shared {
            if let Some(result) = self.cache.lookup(now, key) {
                return self.send_client(client, jsonrpc::response(&id, &result));
            }
        }
        let modern = ModernReq {
            cacheable: era::CACHEABLE.contains(&method),
            level,
            caps: declared_capabilities(Some(envelope.capabilities)),
            interactive: interactive && !passthrough,
            seq,
            passthrough,
        };
        if let Some(key) = shared {
            // The id `forward_with` is about to take.
            self.cache.expect(self.next_upstream, key);
        }
        self.forward_with(
            now,
            client,
            line,
            env,
            id,
            Purpose::MaybeTask,
            None,
            seq,
            meta,
            Some(modern),
        );
    }

    /// A modern client's retry of a request the mux answered `input_required`: the child's
    /// held request gets the client's answer from `inputResponses`, and the child's answer to
    /// the original request goes to the retry's id (now, if it already came).
    #[allow(clippy::too_many_arguments)]
    fn client_retry(
        &mut self,
        now: Instant,
        client: ClientId,
        env: &jsonrpc::Envelope<'_>,
        id: ReqId,
        meta: jsonrpc::RequestMeta<'_>,
        state: &str,
    ) {
        let up = self
            .mrtr
            .iter()
            .find(|(_, m)| m.client == client && m.state == state)
            .map(|(up, _)| *up);
        let Some((up, m)) = up.and_then(|up| self.mrtr.remove(&up).map(|m| (up, m))) else {
            let data = format!(r#"{{"reason":"{}"}}"#, reasons::UNKNOWN_REQUEST_STATE);
            return self.send_client(
                client,
                jsonrpc::error(
                    &id,
                    codes::INVALID_PARAMS,
                    "unknown or expired requestState",
                    Some(&data),
                ),
            );
        };
        let responses = jsonrpc::field(env.params, "inputResponses");
        match jsonrpc::field(responses, &m.key) {
            Some(answer) => {
                self.send_child(jsonrpc::response(&m.server_id, answer.get().as_bytes()))
            }
            None => {
                let data = format!(r#"{{"reason":"{}"}}"#, reasons::NO_INPUT_RESPONSE);
                self.send_child(jsonrpc::error(
                    &m.server_id,
                    codes::INTERNAL_ERROR,
                    "the client retried without answering this request",
                    Some(&data),
                ));
            }
        }
        if let Some(p) = self.pending.get_mut(&up) {
            p.orig_id = id;
        }
        if let Some(token) = meta.progress_token {
            if let Some(route) = self.progress_routes.get_mut(&up) {
                route.1 = Bytes::copy_from_slice(token.get().as_bytes());
            }
        }
        if let Some(answer) = m.answer {
            self.child_line(now, answer);
        }
    }

    /// The in-flight interactive request of a modern client that a child's request for
    /// `needs` is bridged to: the newest one whose declared capabilities allow it, unless a
    /// handshake client that can answer has a newer request in flight.
    fn pick_modern(&self, needs: impl Fn(&Capabilities) -> bool) -> Option<u64> {
        let (up, seq) = self
            .pending
            .iter()
            .filter(|(up, p)| {
                p.modern.is_some_and(|m| m.interactive && needs(&m.caps))
                    && !self.mrtr.contains_key(up)
                    && p.client.is_some_and(|c| {
                        self.clients
                            .get(&c)
                            .is_some_and(|c| c.input_closed.is_none())
                    })
            })
            .filter_map(|(up, p)| Some((*up, p.modern?.seq)))
            .max_by_key(|(_, seq)| *seq)?;
        let newer_handshake = self.clients.values().any(|c| {
            c.phase != Phase::Connected
                && !c.modern
                && c.in_flight > 0
                && c.input_closed.is_none()
                && needs(&c.caps)
                && c.last_request > seq
        });
        (!newer_handshake).then_some(up)
    }

    /// Bridges the child's request to the modern client whose request `up` it belongs to:
    /// that request is answered `input_required` with it, and the child's request is held
    /// until the client retries.
    fn ask_modern(&mut self, up: u64, env: &jsonrpc::Envelope<'_>, method: &str, server_id: Bytes) {
        let Some((client, orig_id)) = self
            .pending
            .get(&up)
            .and_then(|p| Some((p.client?, p.orig_id.clone())))
        else {
            return;
        };
        let n = self.next_mrtr;
        self.next_mrtr += 1;
        let key = format!("rmcp-mux-{n}");
        let state = format!("rmcp-mux-state-{up}-{n}");
        let params = env.params.map_or("{}", |p| p.get());
        let result = format!(
            r#"{{"resultType":"input_required","inputRequests":{{"{key}":{{"method":{},"params":{params}}}}},"requestState":"{state}"}}"#,
            serde_json::Value::from(method)
        );
        self.send_client(client, jsonrpc::response(&orig_id, result.as_bytes()));
        self.mrtr.insert(
            up,
            Mrtr {
                client,
                server_id,
                key,
                state,
                answer: None,
            },
        );
    }

    /// Drops the bridged request held for `up`, answering the child's request with an error.
    fn drop_mrtr(&mut self, up: u64, msg: &str, reason: &str) {
        if let Some(m) = self.mrtr.remove(&up) {
            let data = format!(r#"{{"reason":"{reason}"}}"#);
            if self.life == Life::Running {
                self.send_child(jsonrpc::error(
                    &m.server_id,
                    codes::INTERNAL_ERROR,
                    msg,
                    Some(&data),
                ));
            }
        }
    }

    /// `server/discover`, answered from the child's `initialize` result (once there is one).
    /// It does not make the client modern: a client probing the era may still `initialize`.
    fn client_discover(&mut self, now: Instant, client: ClientId, id: ReqId) {
        match self.life {
            Life::Running if self.init_result.is_some() => self.answer_discover(client, &id),
            Life::Stopped | Life::Failed => self.unavailable(client, &id, None),
            _ => self.wait_for_handshake(now, client, id, Purpose::Discover, None),
        }
    }

    /// Holds a client's `initialize` or `server/discover` until the child's own handshake is
    /// done (starting an idle child); answered with the other waiters in `upstream_ready`.
    fn wait_for_handshake(
        &mut self,
        now: Instant,
        client: ClientId,
        id: ReqId,
        purpose: Purpose,
        batch: Option<u64>,
    ) {
        if self.life == Life::Idle {
            self.spawn();
        }
        let up = self.alloc_upstream();
        self.insert_pending(
            up,
            Pending {
                client: Some(client),
                orig_id: id,
                purpose,
                deadline: now + self.cfg.request_timeout,
                sent: false,
                progress: None,
                batch,
                modern: None,
            },
        );
    }

    fn answer_discover(&mut self, client: ClientId, id: &[u8]) {
        let result = match (&self.discover, &self.init_result) {
            // A modern child's own answer, as it gave it.
            (Some(d), _) if self.child_modern() => d.clone(),
            (_, Some(init)) => era::discover_result(init),
            _ => return,
        };
        self.send_client(client, jsonrpc::response(id, &result));
    }

    /// Subscription counts are the number of clients holding each URI (by a handshake-era
    /// subscribe or in a listen).
    fn recount_subscriptions(&mut self) {
        let mut counts: HashMap<String, usize> = HashMap::default();
        for c in self.clients.values() {
            let mut held: HashSet<&String> = c.subscriptions.iter().collect();
            for l in &c.listens {
                held.extend(l.filter.resource_subscriptions.iter());
            }
            for uri in held {
                *counts.entry(uri.clone()).or_insert(0) += 1;
            }
        }
        self.subscriptions = counts;
    }

    /// Recounts the subscriptions and tells the child of each URI nobody held before
    /// (`resources/subscribe`) or nobody holds now (`resources/unsubscribe`), in URI order.
    fn sync_subscriptions(&mut self, now: Instant) {
        let before = std::mem::take(&mut self.subscriptions);
        self.recount_subscriptions();
        if self.child_modern() {
            return self.sync_upstream_listen(now);
        }
        if self.life != Life::Running {
            return;
        }
        let mut edges: Vec<(&'static str, String)> = before
            .keys()
            .filter(|u| !self.subscriptions.contains_key(*u))
            .map(|u| ("resources/unsubscribe", u.clone()))
            .chain(
                self.subscriptions
                    .keys()
                    .filter(|u| !before.contains_key(*u))
                    .map(|u| ("resources/subscribe", u.clone())),
            )
            .collect();
        edges.sort_by(|a, b| a.1.cmp(&b.1));
        for (method, uri) in edges {
            let params = format!(r#"{{"uri":{}}}"#, serde_json::Value::from(uri));
            self.internal_request(now, method, &params);
        }
    }

    /// Opens an emulated `subscriptions/listen` stream: acknowledges what the child can
    /// deliver (its capabilities say which list changes it announces and whether it takes
    /// subscriptions), then sends frames as the child's notifications come.
    fn client_listen(
        &mut self,
        now: Instant,
        client: ClientId,
        env: &jsonrpc::Envelope<'_>,
        id: ReqId,
    ) {
        if matches!(self.life, Life::Stopped | Life::Failed) {
            return self.unavailable(client, &id, None);
        }
        if self.life == Life::Idle {
            self.spawn();
        }
        let Some(asked) = era::Filter::read(jsonrpc::field(env.params, "notifications")) else {
            return self.send_client(
                client,
                jsonrpc::error(
                    &id,
                    codes::INVALID_PARAMS,
                    "missing notifications filter",
                    None,
                ),
            );
        };
        let filter = asked.honoured(self.init_result.as_deref());
        let ack = era::acknowledged(&filter, &id);
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.listens.retain(|l| l.id != id);
        c.listens.push(Listen { id, filter });
        self.send_client(client, ack);
        self.sync_subscriptions(now);
    }

    /// Ends every listen: they do not survive the child they were served from. Each gets an
    /// error under its id, which the client reads as a subscription lost.
    fn end_listens(&mut self, msg: &str, data: &str) {
        let mut ended = Vec::new();
        for (id, c) in self.clients.iter_mut() {
            for l in c.listens.drain(..) {
                ended.push((*id, l.id));
            }
        }
        ended.sort_by_key(|(c, _)| *c);
        for (client, id) in ended {
            self.send_client(
                client,
                jsonrpc::error(&id, codes::INTERNAL_ERROR, msg, Some(data)),
            );
        }
        self.recount_subscriptions();
    }

    /// Sends a frame made by `frame` (from the listen's id) to every listen `wants` selects.
    fn send_to_listens(
        &mut self,
        wants: impl Fn(&era::Filter) -> bool,
        frame: impl Fn(&[u8]) -> Bytes,
    ) {
        let mut out = Vec::new();
        for (id, c) in &self.clients {
            for l in c.listens.iter().filter(|l| wants(&l.filter)) {
                out.push((*id, frame(&l.id)));
            }
        }
        out.sort_by_key(|(c, _)| *c);
        for (client, line) in out {
            self.send_client(client, line);
        }
    }

    fn client_initialize(
        &mut self,
        now: Instant,
        client: ClientId,
        env: &jsonrpc::Envelope<'_>,
        id: ReqId,
        batch: Option<u64>,
    ) {
        let raw_caps = jsonrpc::field(env.params, "capabilities");
        let declared = declared_capabilities(raw_caps);
        let info = jsonrpc::field(env.params, "clientInfo");
        let name = jsonrpc::str_field(info, "name")
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        if let Some(c) = self.clients.get_mut(&client) {
            c.caps = declared;
            c.init_caps = raw_caps.map(|r| Bytes::copy_from_slice(r.get().as_bytes()));
            c.info = info.map(|r| Bytes::copy_from_slice(r.get().as_bytes()));
            c.name = name;
        }
        if self.cfg.share != Share::Global && self.client_init.is_none() {
            if let Some(params) = env.params.filter(|p| p.get().starts_with('{')) {
                self.client_init = Some(Bytes::copy_from_slice(params.get().as_bytes()));
            }
        }
        match self.life {
            Life::Running if self.init_result.is_some() => self.answer_init(client, &id, batch),
            Life::Stopped | Life::Failed => self.unavailable(client, &id, batch),
            _ => self.wait_for_handshake(now, client, id, Purpose::ClientInit, batch),
        }
    }

    fn answer_init(&mut self, client: ClientId, id: &[u8], batch: Option<u64>) {
        let Some(result) = self.init_result.clone() else {
            return;
        };
        if let Some(c) = self.clients.get_mut(&client) {
            if c.phase == Phase::Connected {
                c.phase = Phase::Initialized;
            }
        }
        self.reply(client, batch, jsonrpc::response(id, &result));
    }

    fn unavailable(&mut self, client: ClientId, id: &[u8], batch: Option<u64>) {
        let state = self.status().state.as_str();
        let data = format!(
            r#"{{"reason":"{}","state":"{}"}}"#,
            reasons::SERVER_UNAVAILABLE,
            state
        );
        let msg = format!("server {} is {}", self.name, state);
        self.reply(
            client,
            batch,
            jsonrpc::error(id, codes::INTERNAL_ERROR, &msg, Some(&data)),
        );
    }

    /// Forwards a client's request under a fresh upstream id (and progress token).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Instant,
        client: ClientId,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        id: ReqId,
        purpose: Purpose,
        batch: Option<u64>,
        seq: u64,
        meta: jsonrpc::RequestMeta<'_>,
    ) {
        self.forward_with(now, client, line, env, id, purpose, batch, seq, meta, None);
    }

    /// [`Router::forward`], for a modern request too (`modern`): that one goes without its
    /// envelope, and its answer is marked for it.
    #[allow(clippy::too_many_arguments)]
    fn forward_with(
        &mut self,
        now: Instant,
        client: ClientId,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        id: ReqId,
        purpose: Purpose,
        batch: Option<u64>,
        seq: u64,
        meta: jsonrpc::RequestMeta<'_>,
        modern: Option<ModernReq>,
    ) {
        match self.life {
            Life::Stopped
            | Life::Failed
            | Life::Stopping {
                then: AfterStop::Stay,
            } => return self.unavailable(client, &id, batch),
            Life::Idle => self.spawn(),
            _ => {}
        }
        let up = self.alloc_upstream();
        let mut digits = [0u8; 20];
        let up_text = jsonrpc::decimal(up, &mut digits);
        let id_span = jsonrpc::span_in(line, env.id.map(|v| v.get()).unwrap_or_default());
        let purpose = match purpose {
            Purpose::MaybeTask if meta.task => Purpose::TaskAugmented,
            Purpose::MaybeTask => Purpose::Forward,
            other => other,
        };
        // On the stack: one allocation fewer per request.
        let mut edits = [(id_span.clone(), up_text), (id_span, up_text)];
        let mut n_edits = 1;
        let mut progress = None;
        let (stripped, token_only);
        if let Some(token) = meta.progress_token {
            edits[1] = (jsonrpc::span_in(line, token.get()), up_text);
            n_edits = 2;
            progress = Some(Bytes::copy_from_slice(token.get().as_bytes()));
            self.progress_routes
                .insert(up, (client, Bytes::copy_from_slice(token.get().as_bytes())));
        }
        if let (
            Some(ModernReq {
                passthrough: false, ..
            }),
            Some(m),
        ) = (modern, meta.meta)
        {
            // The envelope is the mux's to read, not the handshake-era child's: `_meta` goes
            // without it (the progress token, inside, rewritten on the way). Nearly always
            // nothing else is in it, and what is left is known without another scan.
            let token = progress.is_some().then_some(up_text);
            let meta_span = jsonrpc::span_in(line, m.get());
            token_only = era::token_only(token).filter(|_| !meta.foreign);
            edits[1] = match &token_only {
                Some(t) => (meta_span, &t[..]),
                None => {
                    stripped = era::strip(m, token);
                    (meta_span, &stripped[..])
                }
            };
            n_edits = 2;
        }
        let stamp = (modern.is_none() && self.child_modern())
            .then(|| self.stamp(line, env, meta.meta, client))
            .flatten();
        let out = match &stamp {
            Some((at, members)) => {
                let mut all = [edits[0].clone(), edits[1].clone(), (*at..*at, &members[..])];
                all[n_edits] = (*at..*at, &members[..]);
                Line::splice(line, &mut all[..=n_edits])
            }
            None => Line::splice(line, &mut edits[..n_edits]),
        };
        if stamp.is_some()
            && env
                .method
                .as_deref()
                .is_some_and(|m| era::INTERACTIVE.contains(&m))
        {
            self.drive_lines.insert(up, (line.clone(), 0));
        }
        let running = self.life == Life::Running;
        if let Some(c) = self.clients.get_mut(&client) {
            c.in_flight += 1;
            c.last_request = seq;
        }
        self.insert_pending(
            up,
            Pending {
                client: Some(client),
                orig_id: id,
                purpose,
                deadline: now + self.cfg.request_timeout,
                sent: running,
                progress,
                batch,
                modern,
            },
        );
        if running {
            self.send_child(out);
        } else {
            self.held.push_back((up, out));
        }
    }

    /// Where and what to insert in a handshake-era client's request so that a modern child
    /// reads it: the envelope with that client's own capabilities, clientInfo and log level.
    fn stamp(
        &self,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        meta: Option<jsonrpc::Raw<'_>>,
        client: ClientId,
    ) -> Option<(usize, Vec<u8>)> {
        let c = self.clients.get(&client)?;
        let members = era::stamp_members(
            era::SUPPORTED[0],
            c.init_caps.as_deref().unwrap_or(b"{}"),
            c.info.as_deref(),
            c.level.map(|l| LEVELS[l as usize]),
        );
        let empty = |raw: &str| raw[1..].trim_start().starts_with('}');
        if let Some(m) = meta {
            let at = jsonrpc::span_in(line, m.get()).start + 1;
            let mut out = members;
            if !empty(m.get()) {
                out.push(b',');
            }
            return Some((at, out));
        }
        if let Some(p) = env.params.filter(|p| p.get().starts_with('{')) {
            let at = jsonrpc::span_in(line, p.get()).start + 1;
            let mut out = b"\"_meta\":{".to_vec();
            out.extend_from_slice(&members);
            out.push(b'}');
            if !empty(p.get()) {
                out.push(b',');
            }
            return Some((at, out));
        }
        if env.params.is_some() {
            return None;
        }
        let at = line.iter().position(|b| *b == b'{')? + 1;
        let mut out = b"\"params\":{\"_meta\":{".to_vec();
        out.extend_from_slice(&members);
        out.extend_from_slice(b"}},");
        Some((at, out))
    }

    fn client_notification(
        &mut self,
        now: Instant,
        client: ClientId,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        method: &str,
    ) {
        match method {
            "notifications/initialized" => {
                if let Some(c) = self.clients.get_mut(&client) {
                    c.phase = Phase::Ready;
                }
            }
            "notifications/cancelled" => {
                let Some(req) = jsonrpc::field(env.params, "requestId") else {
                    return;
                };
                let ended = self.clients.get_mut(&client).is_some_and(|c| {
                    let before = c.listens.len();
                    c.listens.retain(|l| l.id[..] != *req.get().as_bytes());
                    c.listens.len() != before
                });
                if ended {
                    return self.sync_subscriptions(now);
                }
                let Some(up) = self.pending_of(client, req.get().as_bytes()) else {
                    debug!(server = %self.name, "cancel for an unknown request; dropped");
                    return;
                };
                let sent = self.pending.get(&up).is_some_and(|p| p.sent);
                if sent {
                    let span = jsonrpc::span_in(line, req.get());
                    let up_text = up.to_string();
                    self.send_child(jsonrpc::splice(line, &mut [(span, up_text.as_bytes())]));
                }
                self.drop_mrtr(up, "the client cancelled the request", reasons::CLIENT_GONE);
                // The reference server sends no response after a cancel: forget it now, and
                // answer the batch it came in without it.
                if let Some(b) = self.remove_pending(up).and_then(|p| p.batch) {
                    self.batch_without(b);
                }
                self.forget_drive(up);
                self.held.retain(|(id, _)| *id != up);
            }
            // The proxy's word on its project: the daemon reads it before the router does (for
            // a server shared per project); here it is only dropped.
            super::project::PROJECT => {}
            "notifications/roots/list_changed" => {
                // A modern child asks for roots per request: nothing to tell it.
                if !self.cfg.capabilities.roots || self.cfg.roots.is_some() || self.child_modern() {
                    return;
                }
                match self.roots_changed {
                    Some(at) if now < at + ROOTS_DEBOUNCE => self.roots_pending = true,
                    _ => {
                        self.roots_changed = Some(now);
                        if self.life == Life::Running {
                            self.send_child(Line::share(line));
                        }
                    }
                }
            }
            _ => {
                if self.life == Life::Running {
                    self.send_child(Line::share(line));
                }
            }
        }
    }

    /// A client's reply to a server→client request.
    fn client_response(
        &mut self,
        now: Instant,
        client: ClientId,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
    ) {
        let Some(mux_id) = env.id.and_then(jsonrpc::as_u64) else {
            debug!(server = %self.name, "client response with an id the mux never issued; dropped");
            return;
        };
        match self.server_reqs.get(&mux_id) {
            Some(r) if r.client == client => {}
            _ => {
                debug!(server = %self.name, "client response to an unknown server request; dropped");
                return;
            }
        }
        let Some(r) = self.server_reqs.remove(&mux_id) else {
            return;
        };
        if let Some((d, key)) = r.drive {
            return self.drive_answer(now, d, key, env);
        }
        self.server_req_ids.remove(&r.server_id);
        if self.life != Life::Running {
            return;
        }
        let span = jsonrpc::span_in(line, env.id.map(|v| v.get()).unwrap_or_default());
        let _ = r.elicitation;
        self.send_child(Line::splice(line, &mut [(span, &r.server_id[..])]));
    }

    /// A modern child answered a handshake-era client's request `input_required`: ask the
    /// client each input request as a real request of its own era; the answers go into the
    /// retry ([`Router::drive_answer`]). The request stays pending under `up` meanwhile, so
    /// its deadline, a cancel and a child restart end the drive too.
    fn drive_input(
        &mut self,
        now: Instant,
        up: u64,
        p: Pending,
        env: &jsonrpc::Envelope<'_>,
        drive: Option<(Bytes, u8)>,
    ) {
        let Some(client) = p.client else { return };
        let fail = |this: &mut Self, p: &Pending, msg: &str| {
            let data = this.reason_data(reasons::INPUT_ROUNDS);
            this.reply(
                client,
                p.batch,
                jsonrpc::error(&p.orig_id, codes::INTERNAL_ERROR, msg, Some(&data)),
            );
        };
        let Some((line, rounds)) = drive else {
            return fail(
                self,
                &p,
                "the server asked for input on a request that cannot take it",
            );
        };
        if rounds >= MAX_INPUT_ROUNDS {
            return fail(self, &p, "the server asked for input more than 10 times");
        }
        let result: serde_json::Value = env
            .result
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default();
        let Some(asks) = result.get("inputRequests").and_then(|a| a.as_object()) else {
            return fail(self, &p, "input_required without inputRequests");
        };
        let d = self.next_drive;
        self.next_drive += 1;
        let seq = self.clients.get(&client).map_or(0, |c| c.last_request);
        let mut out = Vec::new();
        let mut answers = serde_json::Map::new();
        for (key, ask) in asks {
            let method = ask.get("method").and_then(|m| m.as_str()).unwrap_or("");
            if let Some(roots) = (method == "roots/list")
                .then(|| self.config_roots())
                .flatten()
            {
                // Configured roots answer for every client, as they do a handshake child.
                answers.insert(key.clone(), roots);
                continue;
            }
            let params = ask
                .get("params")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            let mux_id = self.next_server_req;
            self.next_server_req += 1;
            self.server_reqs.insert(
                mux_id,
                ServerRequest {
                    client,
                    server_id: Bytes::new(),
                    elicitation: None,
                    drive: Some((d, key.clone())),
                },
            );
            let req =
                serde_json::json!({"jsonrpc":"2.0","id":mux_id,"method":method,"params":params});
            out.push(Bytes::from(req.to_string()));
        }
        self.drives.insert(
            d,
            Drive {
                up,
                client,
                line,
                answers,
                missing: out.len(),
                state: result.get("requestState").cloned(),
                rounds: rounds + 1,
                seq,
            },
        );
        self.insert_pending(up, p);
        if let Some(c) = self.clients.get_mut(&client) {
            c.in_flight += 1;
        }
        if out.is_empty() {
            // Nothing to ask the client: retry at once.
            return self.drive_retry(now, d);
        }
        for req in out {
            self.send_client(client, req);
        }
    }

    /// The roots of the config (`roots = [...]`) as a `roots/list` result, if set.
    fn config_roots(&self) -> Option<serde_json::Value> {
        let roots = self.cfg.roots.as_ref()?;
        let list: Vec<serde_json::Value> = roots
            .iter()
            .map(|r| serde_json::json!({ "uri": r }))
            .collect();
        Some(serde_json::json!({ "roots": list }))
    }

    /// Forgets what was kept to drive the request `up` (cancelled, timed out, its client
    /// gone); its input requests still out are then answered into nothing.
    fn forget_drive(&mut self, up: u64) {
        if !self.drive_lines.is_empty() {
            self.drive_lines.remove(&up);
        }
        if !self.drives.is_empty() {
            self.drives.retain(|_, d| d.up != up);
        }
    }

    /// A client's answer to an input request of a drive: once all are in, the child gets the
    /// client's request again under a new id, with `inputResponses` and the exact
    /// `requestState`.
    fn drive_answer(&mut self, now: Instant, d: u64, key: String, env: &jsonrpc::Envelope<'_>) {
        let Some(drive) = self.drives.get_mut(&d) else {
            return;
        };
        if let Some(err) = env.error {
            // The client refused: the request fails with its answer.
            let Some(drive) = self.drives.remove(&d) else {
                return;
            };
            if let Some(p) = self.remove_pending(drive.up) {
                let mut e = b"{\"jsonrpc\":\"2.0\",\"id\":".to_vec();
                e.extend_from_slice(&p.orig_id);
                e.extend_from_slice(b",\"error\":");
                e.extend_from_slice(err.get().as_bytes());
                e.push(b'}');
                self.reply(drive.client, p.batch, Bytes::from(e));
            }
            return;
        }
        let answer = env
            .result
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default();
        drive.answers.insert(key, answer);
        drive.missing = drive.missing.saturating_sub(1);
        if drive.missing > 0 {
            return;
        }
        self.drive_retry(now, d);
    }

    /// Every input request of the drive `d` is answered: the child gets the client's request
    /// again under a new id, with `inputResponses` and the exact `requestState`.
    fn drive_retry(&mut self, now: Instant, d: u64) {
        let Some(drive) = self.drives.remove(&d) else {
            return;
        };
        // Gone when the call was cancelled, timed out or its child restarted.
        let Some(p) = self.remove_pending(drive.up) else {
            return;
        };
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&drive.line) else {
            return;
        };
        if let Some(params) = v.get_mut("params").and_then(|p| p.as_object_mut()) {
            params.insert(
                "inputResponses".into(),
                serde_json::Value::Object(drive.answers),
            );
            match drive.state {
                Some(state) => params.insert("requestState".into(), state),
                None => params.remove("requestState"),
            };
        }
        let line = Bytes::from(v.to_string());
        let Ok(env) = jsonrpc::parse_one(&line) else {
            return;
        };
        let meta = env.meta;
        self.progress_routes.remove(&drive.up);
        let up = self.next_upstream;
        self.forward_with(
            now,
            drive.client,
            &line,
            &env,
            p.orig_id,
            Purpose::Forward,
            p.batch,
            drive.seq,
            meta,
            None,
        );
        if let Some(entry) = self.drive_lines.get_mut(&up) {
            *entry = (drive.line, drive.rounds);
        }
    }

    // ----- the child's lines -----

    /// Lets a long answer be passed on as it arrives when it is an ordinary one (not a
    /// batch's, a task's or the mux's own, which are read whole) for a connected client.
    fn child_answer_begins(&mut self, up: u64) {
        let eligible = self.streaming.is_none()
            && self.pending.get(&up).is_some_and(|p| {
                p.purpose == Purpose::Forward
                    && p.batch.is_none()
                    && p.modern.is_none()
                    && p.client.is_some_and(|c| self.clients.contains_key(&c))
            });
        if !eligible {
            return;
        }
        let Some(p) = self.remove_pending(up) else {
            return;
        };
        let Some(client) = p.client else { return };
        self.progress_routes.remove(&up);
        self.push(Action::StreamAnswer(
            client,
            Bytes::copy_from_slice(&p.orig_id[..]),
        ));
        self.streaming = Some(Streaming {
            up,
            client,
            orig_id: p.orig_id,
        });
    }

    /// The answer being passed on ended in the middle or is not an answer after all: its
    /// client gets an error for the request (after the cut line).
    fn stream_broken(&mut self) {
        let Some(s) = self.streaming.take() else {
            return;
        };
        warn!(server = %self.name, id = s.up,
            "the child's answer was cut off or is not valid JSON-RPC after part of it was passed on");
        self.push(Action::StreamEnd { whole: false });
        let data = self.reason_data(reasons::BROKEN_ANSWER);
        let msg = format!(
            "server {} sent an answer that is cut off or not valid JSON-RPC",
            self.name
        );
        let line = jsonrpc::error(&s.orig_id, codes::INTERNAL_ERROR, &msg, Some(&data));
        self.send_client(s.client, line);
    }

    fn child_line(&mut self, now: Instant, line: Bytes) {
        if let Some(s) = &self.streaming {
            // The rest of the answer being passed on: it must be the whole answer it began as.
            let whole = jsonrpc::parse_one(&line).is_ok_and(|env| {
                matches!(env.kind, Kind::Response | Kind::Error)
                    && env.id.and_then(jsonrpc::as_u64) == Some(s.up)
            });
            if whole {
                self.streaming = None;
                self.push(Action::StreamEnd { whole: true });
            } else {
                self.stream_broken();
            }
            return;
        }
        let env = match jsonrpc::parse_one(&line) {
            Ok(env) => env,
            Err(_) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
                warn!(server = %self.name, line = %shown, "child wrote a line that is not JSON-RPC; skipped");
                return;
            }
        };
        let method = env.method.as_deref().unwrap_or("");
        match env.kind {
            Kind::Response | Kind::Error => self.child_response(now, &line, &env),
            Kind::Request => self.child_request(now, &line, &env, method),
            Kind::Notification => self.child_notification(now, &line, &env, method),
        }
    }

    fn child_response(&mut self, now: Instant, line: &Bytes, env: &jsonrpc::Envelope<'_>) {
        let Some(up) = env.id.and_then(jsonrpc::as_u64) else {
            warn!(server = %self.name, "child answered an id the mux never sent; dropped");
            return;
        };
        if let Some(m) = self.mrtr.get_mut(&up) {
            // The client has been answered `input_required` for this request: its answer
            // goes to the retry's id, once the retry comes.
            m.answer = Some(line.clone());
            return;
        }
        let route = self.progress_routes.get(&up).cloned();
        // Whether its answer may be kept for the other modern clients.
        let shared = self.cache.take(up);
        let Some(p) = self.remove_pending(up) else {
            debug!(server = %self.name, id = up, "response to a request no longer pending; dropped");
            return;
        };
        match p.purpose {
            Purpose::UpstreamInit => {
                match env.result {
                    Some(result) => self.upstream_initialized(now, result),
                    None => {
                        let err = env.error.map(|e| e.get().to_owned()).unwrap_or_default();
                        warn!(server = %self.name, error = %err, "child refused initialize");
                        self.last_exit = Some(format!("initialize failed: {err}"));
                        self.push(Action::Kill);
                        self.life = Life::Stopping {
                            then: AfterStop::Crash,
                        };
                    }
                }
                return;
            }
            Purpose::UpstreamProbe => {
                match (env.result, era::names_modern(env.error)) {
                    (Some(result), _) => {
                        self.set_verdict(now, ChildEra::Modern);
                        self.upstream_discovered(now, result, era::SUPPORTED[0]);
                    }
                    (None, Some(_)) => {
                        self.set_verdict(now, ChildEra::Modern);
                        self.send_discover(now, Purpose::UpstreamDiscover);
                    }
                    (None, None) => {
                        debug!(server = %self.name, "child does not speak 2026-07-28; initialize");
                        self.set_verdict(now, ChildEra::Handshake);
                        self.send_initialize(now);
                    }
                }
                return;
            }
            Purpose::UpstreamDiscover => {
                match env.result {
                    Some(result) => self.upstream_discovered(now, result, era::SUPPORTED[0]),
                    None => {
                        let err = env.error.map(|e| e.get().to_owned()).unwrap_or_default();
                        warn!(server = %self.name, error = %err, "child refused server/discover");
                        self.last_exit = Some(format!("server/discover failed: {err}"));
                        self.push(Action::Kill);
                        self.life = Life::Stopping {
                            then: AfterStop::Crash,
                        };
                    }
                }
                return;
            }
            Purpose::Listen if p.client.is_none() => {
                // The child ended the mux's own listen: the handshake clients still need one.
                if self.upstream_listen == Some(up) {
                    self.upstream_listen = None;
                    self.sync_upstream_listen(now);
                }
                return;
            }
            Purpose::Internal | Purpose::ClientInit | Purpose::Discover => return,
            _ => {}
        }
        let Some(client) = p.client else { return };
        let drive = self.drive_lines.remove(&up);
        if p.modern.is_none() && self.child_modern() && era::input_required(env.result) {
            return self.drive_input(now, up, p, env, drive);
        }
        if p.modern.is_none() && self.child_modern() && env.error.is_some() {
            if let Some(out) = not_found_for_handshake(line, env, drive.as_ref(), &p.orig_id) {
                return self.reply(client, p.batch, out);
            }
        }
        let mut keep_progress = false;
        let mut body: Option<Bytes> = None;
        if p.purpose == Purpose::TaskAugmented {
            let task = jsonrpc::field(env.result, "task");
            if let Some(task_id) = jsonrpc::str_field(task, "taskId") {
                keep_progress = p.progress.is_some();
                self.tasks.insert(
                    task_id,
                    Task {
                        client,
                        progress: keep_progress.then_some(up),
                    },
                );
            }
        }
        if p.purpose == Purpose::TasksList {
            body = self.filter_tasks_list(client, &p.orig_id, env);
        }
        if p.purpose == Purpose::ToolsList {
            let tools = env
                .result
                .map(|r| per_session_tools(r.get()))
                .unwrap_or_default();
            if !tools.is_empty() {
                warn!(server = %self.name, ?tools,
                    "tools look per-session (a browser's tabs or pages) but share = \"global\" gives every host the same session; consider share = \"client\"");
                self.session_tools = Some(tools);
            }
        }
        match route {
            // A task keeps its progress token alive until the task ends.
            Some(route) if keep_progress => {
                self.progress_routes.insert(up, route);
            }
            _ => {
                self.progress_routes.remove(&up);
            }
        }
        let span = jsonrpc::span_in(line, env.id.map(|v| v.get()).unwrap_or_default());
        let out = match (body, p.modern) {
            (Some(b), _) => Line::from(b),
            (None, Some(modern)) if modern.passthrough => {
                if let (Some(key), Some(result)) = (shared, env.result) {
                    self.cache.store(now, key, result);
                }
                passthrough_answer(line, env, span, &p.orig_id)
            }
            (None, Some(modern)) => modern_answer(line, env, span, &p.orig_id, modern),
            (None, None) => Line::splice(line, &mut [(span, &p.orig_id[..])]),
        };
        self.reply(client, p.batch, out);
    }

    fn filter_tasks_list(
        &self,
        client: ClientId,
        orig_id: &[u8],
        env: &jsonrpc::Envelope<'_>,
    ) -> Option<Bytes> {
        let result = env.result?;
        let mut value: serde_json::Value = serde_json::from_str(result.get()).ok()?;
        let tasks = value.get_mut("tasks")?.as_array_mut()?;
        tasks.retain(|t| {
            t.get("taskId")
                .and_then(|v| v.as_str())
                .and_then(|id| self.tasks.get(id))
                .is_some_and(|t| t.client == client)
        });
        Some(jsonrpc::response(orig_id, value.to_string().as_bytes()))
    }

    fn child_request(
        &mut self,
        now: Instant,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        method: &str,
    ) {
        let server_id =
            Bytes::copy_from_slice(env.id.map(|v| v.get()).unwrap_or("null").as_bytes());
        if method == "ping" {
            return self.send_child(jsonrpc::response(&server_id, b"{}"));
        }
        if method == "roots/list" {
            if let Some(roots) = self.config_roots() {
                let result = roots.to_string();
                return self.send_child(jsonrpc::response(&server_id, result.as_bytes()));
            }
        }
        let needs = |c: &Capabilities| match method {
            "sampling/createMessage" => c.sampling,
            "elicitation/create" => c.elicitation,
            "roots/list" => c.roots,
            _ => true,
        };
        let bridged = matches!(
            method,
            "sampling/createMessage" | "elicitation/create" | "roots/list"
        );
        if bridged {
            if let Some(up) = self.pick_modern(needs) {
                return self.ask_modern(up, env, method, server_id);
            }
        }
        let Some(target) = self.pick_client(needs) else {
            let data = format!(r#"{{"reason":"{}"}}"#, reasons::NO_CAPABLE_CLIENT);
            let msg = format!("no connected client can handle {method}");
            warn!(server = %self.name, method, "server request with no capable client; refused");
            return self.send_child(jsonrpc::error(
                &server_id,
                codes::INTERNAL_ERROR,
                &msg,
                Some(&data),
            ));
        };
        let mux_id = self.next_server_req;
        self.next_server_req += 1;
        let elicitation = if method == "elicitation/create" {
            jsonrpc::str_field(env.params, "elicitationId")
        } else {
            None
        };
        if let Some(e) = &elicitation {
            self.elicitations.insert(e.clone(), target);
        }
        self.server_req_ids.insert(server_id.clone(), mux_id);
        self.server_reqs.insert(
            mux_id,
            ServerRequest {
                client: target,
                server_id,
                elicitation,
                drive: None,
            },
        );
        let _ = now;
        let span = jsonrpc::span_in(line, env.id.map(|v| v.get()).unwrap_or_default());
        let text = mux_id.to_string();
        self.send_client(target, Line::splice(line, &mut [(span, text.as_bytes())]));
    }

    /// Chooses the client for a server→client request: only clients that declared the
    /// capability, preferring the one with the most recent request in flight.
    fn pick_client(&self, needs: impl Fn(&Capabilities) -> bool) -> Option<ClientId> {
        let capable = || {
            self.clients
                .iter()
                // A client whose input closed could never answer.
                .filter(|(_, c)| {
                    c.phase != Phase::Connected
                        && !c.modern
                        && c.input_closed.is_none()
                        && needs(&c.caps)
                })
        };
        let in_flight = capable()
            .filter(|(_, c)| c.in_flight > 0)
            .max_by_key(|(_, c)| c.last_request)
            .map(|(id, _)| *id);
        match (in_flight, self.cfg.server_request_policy) {
            (Some(id), _) => Some(id),
            (None, ServerRequestPolicy::InFlightOnly) => None,
            (None, ServerRequestPolicy::MostRecent) => capable()
                .max_by_key(|(id, c)| (c.last_request, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id),
        }
    }

    fn child_notification(
        &mut self,
        now: Instant,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        method: &str,
    ) {
        if method == "notifications/cancelled" && self.child_modern() {
            let req = jsonrpc::field(env.params, "requestId");
            let up = req.and_then(jsonrpc::as_u64);
            if up.is_some_and(|up| {
                self.pending
                    .get(&up)
                    .is_some_and(|p| p.purpose == Purpose::Listen)
            }) {
                return self.child_ended_listen(now, line, env, up.unwrap_or_default());
            }
        }
        let sub = jsonrpc::field(jsonrpc::field(env.params, "_meta"), era::SUBSCRIPTION_ID);
        if let Some(sub) = sub {
            return self.child_frame(now, line, env, method, sub);
        }
        match method {
            "notifications/progress" => {
                let Some(token) = jsonrpc::field(env.params, "progressToken") else {
                    return;
                };
                let Some((client, orig)) = jsonrpc::as_u64(token)
                    .and_then(|t| self.progress_routes.get(&t))
                    .cloned()
                else {
                    debug!(server = %self.name, "progress for no live request; dropped");
                    return;
                };
                let span = jsonrpc::span_in(line, token.get());
                self.send_client(client, Line::splice(line, &mut [(span, &orig[..])]));
            }
            "notifications/cancelled" => {
                let Some(req) = jsonrpc::field(env.params, "requestId") else {
                    return;
                };
                let key = Bytes::copy_from_slice(req.get().as_bytes());
                let Some(mux_id) = self.server_req_ids.remove(&key) else {
                    return;
                };
                let Some(r) = self.server_reqs.remove(&mux_id) else {
                    return;
                };
                let span = jsonrpc::span_in(line, req.get());
                let text = mux_id.to_string();
                self.send_client(r.client, Line::splice(line, &mut [(span, text.as_bytes())]));
            }
            "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed" => {
                self.cache_changed(method, env.params);
                self.broadcast_ready(line);
                let kind = era::ListKind::of(method);
                self.send_to_listens(
                    |f| kind.is_some_and(|k| f.wants(k)),
                    |id| era::frame(method, "", id),
                );
            }
            "notifications/resources/updated" => {
                let Some(uri) = jsonrpc::str_field(env.params, "uri") else {
                    return;
                };
                self.cache.resource_updated(&uri);
                self.send_to_matching(line, |c| c.subscriptions.iter().any(|s| uri_under(&uri, s)));
                let params = format!(r#""uri":{}"#, serde_json::Value::from(uri.as_str()));
                self.send_to_listens(
                    |f| f.resource_subscriptions.iter().any(|s| uri_under(&uri, s)),
                    |id| era::frame(method, &params, id),
                );
            }
            "notifications/message" => {
                let level = jsonrpc::str_field(env.params, "level")
                    .as_deref()
                    .and_then(level_index)
                    .unwrap_or(0);
                self.send_to_matching(line, |c| {
                    c.phase == Phase::Ready && !c.modern && c.level.is_none_or(|l| level >= l)
                });
                // A modern client is told only while a request of its that asked for this
                // level is in flight.
                let mut modern: Vec<ClientId> = self
                    .pending
                    .values()
                    .filter(|p| p.modern.and_then(|m| m.level).is_some_and(|l| level >= l))
                    .filter_map(|p| p.client)
                    .collect();
                modern.sort_unstable();
                modern.dedup();
                for client in modern {
                    if self.clients.get(&client).is_some_and(|c| c.modern) {
                        self.send_client(client, line.clone());
                    }
                }
            }
            "notifications/elicitation/complete" => {
                let Some(id) = jsonrpc::str_field(env.params, "elicitationId") else {
                    return;
                };
                if let Some(client) = self.elicitations.remove(&id) {
                    self.send_client(client, line.clone());
                }
            }
            "notifications/tasks/status" => {
                let Some(task_id) = jsonrpc::str_field(env.params, "taskId") else {
                    return;
                };
                let Some(task) = self.tasks.get(&task_id) else {
                    return;
                };
                let client = task.client;
                let status = jsonrpc::str_field(env.params, "status");
                if matches!(
                    status.as_deref(),
                    Some("completed" | "failed" | "cancelled")
                ) {
                    if let Some(tok) = task.progress {
                        self.progress_routes.remove(&tok);
                    }
                    if let Some(t) = self.tasks.get_mut(&task_id) {
                        t.progress = None;
                    }
                }
                self.send_client(client, line.clone());
            }
            _ => self.broadcast_ready(line),
        }
    }

    /// A frame of a listen on a modern child: of a modern client's listen, passed on to that
    /// client under its own listen id; of the mux's own listen (for the handshake clients),
    /// passed on without the subscription id as the handshake era's notification.
    fn child_frame(
        &mut self,
        now: Instant,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        method: &str,
        sub: jsonrpc::Raw<'_>,
    ) {
        let Some(up) = jsonrpc::as_u64(sub) else {
            debug!(server = %self.name, "frame of a subscription the mux never opened; dropped");
            return;
        };
        if Some(up) == self.upstream_listen {
            if method == "notifications/subscriptions/acknowledged" {
                return;
            }
            let bare = era::without_subscription_id(env.params);
            let out = jsonrpc::notification(method, &bare);
            let Ok(plain) = jsonrpc::parse_one(&out) else {
                return;
            };
            return self.child_notification(now, &out, &plain, method);
        }
        let Some((client, orig)) = self
            .pending
            .get(&up)
            .filter(|p| p.purpose == Purpose::Listen)
            .and_then(|p| Some((p.client?, p.orig_id.clone())))
        else {
            debug!(server = %self.name, id = up, "frame of a listen no longer open; dropped");
            return;
        };
        self.cache_changed(method, env.params);
        let span = jsonrpc::span_in(line, sub.get());
        self.send_client(client, Line::splice(line, &mut [(span, &orig[..])]));
    }

    /// A modern child ended a listen with a cancel of its own: a client's hears it under its
    /// own listen id (the request and the subscription id); the mux's own is opened again.
    fn child_ended_listen(
        &mut self,
        now: Instant,
        line: &Bytes,
        env: &jsonrpc::Envelope<'_>,
        up: u64,
    ) {
        let Some(p) = self.remove_pending(up) else {
            return;
        };
        let Some(client) = p.client else {
            if self.upstream_listen == Some(up) {
                self.upstream_listen = None;
                self.sync_upstream_listen(now);
            }
            return;
        };
        let mut edits = Vec::with_capacity(2);
        if let Some(req) = jsonrpc::field(env.params, "requestId") {
            edits.push((jsonrpc::span_in(line, req.get()), &p.orig_id[..]));
        }
        let sub = jsonrpc::field(jsonrpc::field(env.params, "_meta"), era::SUBSCRIPTION_ID);
        if let Some(sub) = sub {
            edits.push((jsonrpc::span_in(line, sub.get()), &p.orig_id[..]));
        }
        self.send_client(client, Line::splice(line, &mut edits));
    }

    /// Drops the shared results a change the child announced makes stale: a list's pages on
    /// its list-changed notification, a resource's reads on its update.
    fn cache_changed(&mut self, method: &str, params: Option<jsonrpc::Raw<'_>>) {
        if let Some(kind) = era::ListKind::of(method) {
            self.cache.list_changed(kind);
        } else if method == "notifications/resources/updated" {
            if let Some(uri) = jsonrpc::str_field(params, "uri") {
                self.cache.resource_updated(&uri);
            }
        }
    }

    /// Keeps the mux's own listen on a modern child in step with what the handshake-era
    /// clients need: every list change, and updates of the URIs they subscribed to. A
    /// changed set of URIs replaces the listen (cancel, then a new one).
    fn sync_upstream_listen(&mut self, now: Instant) {
        if !self.child_modern() || self.life != Life::Running {
            return;
        }
        let mut uris: Vec<&String> = self.subscriptions.keys().collect();
        uris.sort();
        let uris = serde_json::to_string(&uris).unwrap_or_else(|_| "[]".into());
        if self.upstream_listen.is_some() && self.upstream_listen_uris == uris {
            return;
        }
        if let Some(old) = self.upstream_listen.take() {
            self.remove_pending(old);
            self.send_child(jsonrpc::notification(
                "notifications/cancelled",
                &format!(r#"{{"requestId":{old}}}"#),
            ));
        }
        let up = self.alloc_upstream();
        let caps = format!("{{{}}}", self.declared_upstream());
        let envelope = era::discover_params(&caps, era::SUPPORTED[0]);
        let params = format!(
            r#"{{"notifications":{{"toolsListChanged":true,"promptsListChanged":true,"resourcesListChanged":true,"resourceSubscriptions":{uris}}},{}"#,
            &envelope[1..]
        );
        self.insert_pending(
            up,
            Pending {
                client: None,
                orig_id: ReqId::new(b""),
                purpose: Purpose::Listen,
                deadline: now + self.cfg.request_timeout,
                sent: true,
                progress: None,
                batch: None,
                modern: None,
            },
        );
        self.upstream_listen = Some(up);
        self.upstream_listen_uris = uris;
        self.send_child(jsonrpc::request(up, "subscriptions/listen", &params));
    }

    // ----- helpers -----

    fn alloc_upstream(&mut self) -> u64 {
        let id = self.next_upstream;
        self.next_upstream += 1;
        id
    }

    /// Every deadline is its request's arrival plus the one configured timeout, so they come
    /// in order and nearly always go at the back (a B-tree of them was a tenth of the router's
    /// time per request); one that does not is put in its place.
    fn insert_pending(&mut self, up: u64, p: Pending) {
        let entry = (p.deadline, up);
        if self.deadlines.back().is_none_or(|last| *last < entry) {
            self.deadlines.push_back(entry);
        } else {
            let at = self.deadlines.partition_point(|e| *e < entry);
            self.deadlines.insert(at, entry);
        }
        if p.client.is_some() && !p.purpose.waits_for_init() {
            self.client_pending += 1;
        }
        self.pending.insert(up, p);
    }

    /// The upstream id of `client`'s pending request `id` (the newest, should a client reuse
    /// an id). A search rather than a second map: only a cancel asks, over the requests in
    /// flight, while a map from the clients' ids was written and erased on every request (2 %
    /// of the daemon's instructions per request, callgrind).
    fn pending_of(&self, client: ClientId, id: &[u8]) -> Option<u64> {
        self.pending
            .iter()
            .filter(|(_, p)| {
                p.client == Some(client) && !p.purpose.waits_for_init() && p.orig_id[..] == *id
            })
            .map(|(&up, _)| up)
            .max()
    }

    fn remove_pending(&mut self, up: u64) -> Option<Pending> {
        let p = self.pending.remove(&up)?;
        // Unanswered (cancelled, timed out, its client gone): nothing to keep of it.
        self.cache.forget(up);
        // The front is always a pending request (`poll_timeout` reads it): what is answered
        // there goes now, the rest when it gets there or when it is most of the queue (each
        // id is pending once, so an entry whose id is not pending is done with).
        while let Some((_, first)) = self.deadlines.front() {
            if self.pending.contains_key(first) {
                break;
            }
            self.deadlines.pop_front();
        }
        if self.deadlines.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.deadlines.retain(|(_, id)| pending.contains_key(id));
        }
        if let Some(client) = p.client {
            if !p.purpose.waits_for_init() {
                self.client_pending -= 1;
                if let Some(c) = self.clients.get_mut(&client) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                }
            }
            if p.progress.is_some() && !self.tasks.values().any(|t| t.progress == Some(up)) {
                self.progress_routes.remove(&up);
            }
        }
        Some(p)
    }

    fn cancel_upstream(&mut self, up: u64, reason: &str) {
        if self.pending.get(&up).is_some_and(|p| p.sent) && self.life != Life::Failed {
            let params = format!(
                r#"{{"requestId":{up},"reason":{}}}"#,
                serde_json::Value::from(reason)
            );
            self.send_child(jsonrpc::notification("notifications/cancelled", &params));
        }
    }

    fn expire(&mut self, now: Instant, up: u64) {
        let Some(p) = self.pending.get(&up) else {
            return;
        };
        match p.purpose {
            Purpose::UpstreamInit => {
                warn!(server = %self.name, "child did not answer initialize in time; restarting it");
                self.remove_pending(up);
                self.last_exit = Some("initialize timed out".into());
                self.push(Action::Kill);
                self.life = Life::Stopping {
                    then: AfterStop::Crash,
                };
            }
            Purpose::UpstreamProbe => {
                debug!(server = %self.name, "no answer to the server/discover probe in time; initialize");
                self.remove_pending(up);
                self.set_verdict(now, ChildEra::Handshake);
                self.send_initialize(now);
            }
            Purpose::UpstreamDiscover => {
                warn!(server = %self.name, "child did not answer server/discover in time; restarting it");
                self.remove_pending(up);
                self.last_exit = Some("server/discover timed out".into());
                self.push(Action::Kill);
                self.life = Life::Stopping {
                    then: AfterStop::Crash,
                };
            }
            // A listen is open until one side ends it.
            Purpose::Listen => {}
            Purpose::Internal => {
                self.remove_pending(up);
            }
            _ if self.mrtr.contains_key(&up) => {
                // Its client was answered `input_required` and did not retry in time.
                self.drop_mrtr(
                    up,
                    "the client did not answer in time",
                    reasons::UPSTREAM_TIMEOUT,
                );
                self.cancel_upstream(up, "request timed out");
                self.remove_pending(up);
            }
            _ => {
                self.cancel_upstream(up, "request timed out");
                self.held.retain(|(id, _)| *id != up);
                self.forget_drive(up);
                let Some(p) = self.remove_pending(up) else {
                    return;
                };
                let ms = self.cfg.request_timeout.as_millis();
                let data = format!(
                    r#"{{"reason":"{}","timeout_ms":{ms}}}"#,
                    reasons::UPSTREAM_TIMEOUT
                );
                let msg = format!("request timed out after {ms} ms");
                if let Some(client) = p.client {
                    self.reply(
                        client,
                        p.batch,
                        jsonrpc::error(&p.orig_id, codes::INTERNAL_ERROR, &msg, Some(&data)),
                    );
                }
            }
        }
    }

    fn internal_request(&mut self, now: Instant, method: &str, params: &str) {
        let up = self.alloc_upstream();
        self.insert_pending(
            up,
            Pending {
                client: None,
                orig_id: ReqId::new(b""),
                purpose: Purpose::Internal,
                deadline: now + self.cfg.request_timeout,
                sent: true,
                progress: None,
                batch: None,
                modern: None,
            },
        );
        self.send_child(jsonrpc::request(up, method, params));
    }

    /// The most verbose level any client asked for is the one the upstream session gets.
    fn update_upstream_level(&mut self, now: Instant) {
        if self.child_modern() {
            // A modern child takes the level per request, in each client's envelope.
            return;
        }
        let wanted = self.clients.values().filter_map(|c| c.level).min();
        if wanted.is_some() && wanted != self.upstream_level {
            self.upstream_level = wanted;
            if self.life == Life::Running {
                if let Some(level) = wanted {
                    let params = format!(r#"{{"level":"{}"}}"#, LEVELS[level as usize]);
                    self.internal_request(now, "logging/setLevel", &params);
                }
            }
        }
    }

    /// Sends a notification to every handshake-era client past its handshake: a modern
    /// client gets nothing it did not ask for on a request of its own.
    fn broadcast_ready(&mut self, line: &Bytes) {
        self.send_to_matching(line, |c| c.phase == Phase::Ready && !c.modern);
    }

    /// Sends one line (shared, not copied) to every client `wants` selects.
    fn send_to_matching(&mut self, line: &Bytes, wants: impl Fn(&Client) -> bool) {
        let targets: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| wants(c))
            .map(|(id, _)| *id)
            .collect();
        for t in targets {
            self.send_client(t, line.clone());
        }
    }

    fn reply(&mut self, client: ClientId, batch: Option<u64>, line: impl Into<Line>) {
        let line = line.into();
        let Some(b) = batch else {
            return self.send_client(client, line);
        };
        let Some(entry) = self.batches.get_mut(&b) else {
            return;
        };
        entry.replies.push(line);
        self.batch_done(b);
    }

    /// One element of batch `b` gets no reply (a cancelled request): the batch's array goes
    /// out once the others are answered, and nothing at all when none was left to answer.
    fn batch_without(&mut self, b: u64) {
        let Some(entry) = self.batches.get_mut(&b) else {
            return;
        };
        entry.expected = entry.expected.saturating_sub(1);
        if entry.expected == 0 && entry.replies.is_empty() {
            self.batches.remove(&b);
        } else {
            self.batch_done(b);
        }
    }

    /// Sends batch `b`'s array once every element that expects a reply has one.
    fn batch_done(&mut self, b: u64) {
        if self
            .batches
            .get(&b)
            .is_some_and(|e| e.replies.len() >= e.expected)
        {
            if let Some(entry) = self.batches.remove(&b) {
                let total: usize = entry.replies.iter().map(|r| r.len() + 1).sum();
                let mut out = Vec::with_capacity(total + 2);
                out.push(b'[');
                for (i, r) in entry.replies.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    for part in r.parts() {
                        out.extend_from_slice(part);
                    }
                }
                out.push(b']');
                self.send_client(entry.client, Bytes::from(out));
            }
        }
    }

    /// The `data` of an error about this server: `{"reason": REASON, "server": NAME}`.
    fn reason_data(&self, reason: &str) -> String {
        format!(
            r#"{{"reason":"{reason}","server":{}}}"#,
            serde_json::Value::from(self.name.as_str())
        )
    }

    fn send_client(&mut self, client: ClientId, line: impl Into<Line>) {
        self.push(Action::ToClient(client, line.into()));
    }

    fn send_child(&mut self, line: impl Into<Line>) {
        self.push(Action::ToChild(line.into()));
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }
}

/// The child's answer to a modern client's request, under the client's id: a result gets
/// the members the modern era requires (`resultType`, and `ttlMs`/`cacheScope` where the
/// method is cacheable) spliced in after its brace, and the handshake era's resource-not-found
/// error becomes the modern era's invalid-params.
fn modern_answer(
    line: &Bytes,
    env: &jsonrpc::Envelope<'_>,
    id_span: std::ops::Range<usize>,
    orig_id: &[u8],
    modern: ModernReq,
) -> Line {
    if let Some(result) = env.result {
        if let Some(head) = era::result_head(result, modern.cacheable) {
            let at = jsonrpc::span_in(line, result.get()).start + 1;
            return Line::splice(line, &mut [(id_span, orig_id), (at..at, &head[..])]);
        }
    }
    if let Some(code) = jsonrpc::field(env.error, "code") {
        if code.get() == codes::RESOURCE_NOT_FOUND_HANDSHAKE.to_string() {
            let code_span = jsonrpc::span_in(line, code.get());
            let invalid = codes::INVALID_PARAMS.to_string();
            return Line::splice(
                line,
                &mut [(id_span, orig_id), (code_span, invalid.as_bytes())],
            );
        }
    }
    Line::splice(line, &mut [(id_span, orig_id)])
}

/// A modern child's -32602 to a handshake-era client's `resources/read` (`drive`, the
/// client's request as it sent it): the handshake era's resource-not-found (-32002), under the
/// client's id. `None` for any other answer.
fn not_found_for_handshake(
    line: &Bytes,
    env: &jsonrpc::Envelope<'_>,
    drive: Option<&(Bytes, u8)>,
    orig_id: &[u8],
) -> Option<Line> {
    let code = jsonrpc::field(env.error, "code")?;
    if code.get() != codes::INVALID_PARAMS.to_string() {
        return None;
    }
    let (request, _) = drive?;
    let method = jsonrpc::parse_one(request).ok()?.method?;
    if method != "resources/read" {
        return None;
    }
    let id_span = jsonrpc::span_in(line, env.id.map(|v| v.get()).unwrap_or_default());
    let code_span = jsonrpc::span_in(line, code.get());
    let not_found = codes::RESOURCE_NOT_FOUND_HANDSHAKE.to_string();
    Some(Line::splice(
        line,
        &mut [(id_span, orig_id), (code_span, not_found.as_bytes())],
    ))
}

/// A modern child's answer to a modern client, under the client's id: as the child wrote it,
/// but for a listen's final result, whose subscription id is the client's id too.
fn passthrough_answer(
    line: &Bytes,
    env: &jsonrpc::Envelope<'_>,
    id_span: std::ops::Range<usize>,
    orig_id: &[u8],
) -> Line {
    let sub = jsonrpc::field(jsonrpc::field(env.result, "_meta"), era::SUBSCRIPTION_ID);
    match sub {
        Some(sub) => {
            let sub_span = jsonrpc::span_in(line, sub.get());
            Line::splice(line, &mut [(id_span, orig_id), (sub_span, orig_id)])
        }
        None => Line::splice(line, &mut [(id_span, orig_id)]),
    }
}

/// What a client's capabilities object (an `initialize`'s or an envelope's) declares it can
/// answer: each member present and not `null`.
fn declared_capabilities(caps: Option<jsonrpc::Raw<'_>>) -> Capabilities {
    let declared = |name: &str| jsonrpc::field(caps, name).is_some_and(|v| v.get() != "null");
    Capabilities {
        sampling: declared("sampling"),
        elicitation: declared("elicitation"),
        roots: declared("roots"),
    }
}

/// Whether an updated resource concerns a subscription: the same URI or one below it.
fn uri_under(uri: &str, subscribed: &str) -> bool {
    uri == subscribed
        || (uri.starts_with(subscribed)
            && (subscribed.ends_with('/') || uri.as_bytes().get(subscribed.len()) == Some(&b'/')))
}

/// Tool-name prefixes that suggest a server keeps state per session (a browser's tabs and
/// pages).
const SESSION_TOOLS: &[&str] = &["browser_", "tab_", "page_"];

/// The tools of a `tools/list` result whose names look per-session (at most five named).
fn per_session_tools(result: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Tool {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct List {
        tools: Vec<Tool>,
    }
    serde_json::from_str::<List>(result)
        .map(|l| {
            l.tools
                .into_iter()
                .map(|t| t.name)
                .filter(|n| SESSION_TOOLS.iter().any(|p| n.starts_with(p)))
                .take(5)
                .collect()
        })
        .unwrap_or_default()
}

/// The parts of an initialize result whose change after a restart means clients must re-list.
fn identity(result: &[u8]) -> Option<(serde_json::Value, serde_json::Value, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_slice(result).ok()?;
    Some((
        v.get("protocolVersion").cloned().unwrap_or_default(),
        v.get("capabilities").cloned().unwrap_or_default(),
        v.get("serverInfo").cloned().unwrap_or_default(),
    ))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
#[path = "router_tests.rs"]
mod tests;
