//! The router fed arbitrary sequences of events, in the orders its actor can produce them
//! (clients connect, send lines, close their input and leave; the child is spawned, writes
//! lines, starts long answers, exits; commands, timers, shutdown), checking after every step:
//! - no client gets an answer to an id it never asked (nor a second answer to one it asked
//!   once), counting batch replies, answers passed on as they arrive and hand-off requests;
//! - progress reaches only the client that gave its token, and a request from the server only
//!   a client that declared some capability to answer it;
//! - the router never starts a second child while one is alive;
//! - an answer the child gives to an id it was sent by a child that has since exited (a crash,
//!   a restart, a reload) reaches no client: what the old child owed was answered when it went;
//! - a reload (`Input::Reconfigure`, with configs that differ in era, capabilities, lazy start,
//!   timeouts, restarts and client limits) closes no client, and every request its clients
//!   were owed then is answered in the end (by the old child, with an error when it exits, or
//!   by the new child), checked once the case is over by letting the child start and answer;
//! - once every client has left, nothing is pending.
#![no_main]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rmcp_mux::config::{Capabilities, Era, ServerConfig, ServerRequestPolicy, Share};
use rmcp_mux::jsonrpc::{self, Kind, Parsed};
use rmcp_mux::mux::router::{Action, ClientId, Input, Router};
use rmcp_mux::status::Command;

#[derive(Arbitrary, Debug)]
struct Case {
    lazy: bool,
    max_restarts: u8,
    timeout_ms: u16,
    sampling: bool,
    roots_cfg: bool,
    in_flight_only: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Id {
    Num(u8),
    Str(u8),
    Big,
}

impl Id {
    fn json(self) -> String {
        match self {
            Id::Num(n) => (n % 4).to_string(),
            Id::Str(n) => format!("\"r{}\"", n % 4),
            Id::Big => "18446744073709551615".to_owned(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Msg {
    Init(Id, bool),
    Initialized,
    Call {
        id: Id,
        slow: bool,
        token: Option<Id>,
        task: bool,
    },
    Cancel(Id),
    Ping(Id),
    Subscribe(Id, u8, bool),
    SetLevel(Id, u8),
    TaskGet(Id, u8),
    TaskList(Id),
    Discover(Id),
    RootsChanged,
    Attach(Id),
    Batch(Vec<Msg2>),
    AnswerServer(u8, bool),
    Raw(Vec<u8>),
}

/// A batch element (no nested batches, no answers to the server).
#[derive(Arbitrary, Debug)]
enum Msg2 {
    Call(Id),
    Ping(Id),
    Cancel(Id),
    Initialized,
    Raw(u8),
}

#[derive(Arbitrary, Debug)]
enum ChildMsg {
    Answer {
        pick: u8,
        error: bool,
        task: Option<u8>,
    },
    Progress(u8),
    Request {
        kind: u8,
        id: u8,
    },
    ListChanged,
    Updated(u8),
    Message(u8),
    Cancelled(u8),
    TaskStatus(u8),
    ElicitComplete,
    Raw(Vec<u8>),
}

/// A reload's new config: what the router reads of it.
#[derive(Arbitrary, Debug)]
struct Reconf {
    lazy: bool,
    max_restarts: u8,
    timeout_ms: u16,
    sampling: bool,
    elicitation: bool,
    roots_cfg: bool,
    in_flight_only: bool,
    era: u8,
    max_clients: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect,
    Client(u8, Msg),
    TooLong(u8),
    Gone(u8),
    InputClosed(u8),
    Spawned,
    SpawnFailed,
    Exit,
    Child(ChildMsg),
    LongAnswer {
        pick: u8,
        end: u8,
    },
    ChildTooLong,
    Command(u8),
    Advance(u16),
    Shutdown,
    /// Last, so that the seeds written before it keep their meaning.
    Reconfigure(Reconf),
}

#[derive(PartialEq)]
enum ChildState {
    None,
    Spawning,
    Up,
}

struct World {
    r: Router,
    now: Instant,
    next_client: u64,
    /// Connected and not closed by the router; the bool: its input is closed.
    clients: Vec<(ClientId, bool)>,
    gone: BTreeSet<ClientId>,
    /// (client, raw id) -> requests asked and not yet answered.
    asks: HashMap<(ClientId, Vec<u8>), u32>,
    /// Progress tokens each client gave (raw).
    tokens: HashMap<ClientId, BTreeSet<Vec<u8>>>,
    /// Clients that declared client capabilities in an `initialize`.
    capable: BTreeSet<ClientId>,
    /// Requests written to the child: raw upstream id and method.
    upstream: Vec<(Vec<u8>, String)>,
    /// Requests the router sent to each client (raw ids), for the client to answer.
    server_asks: HashMap<ClientId, Vec<Vec<u8>>>,
    child: ChildState,
    stream: Option<(ClientId, Vec<u8>)>,
    shutdown: bool,
    /// Upstream ids written to a child that has exited since (and not written again).
    dead: BTreeSet<Vec<u8>>,
    /// The line being handled answers a dead id: no client may get an answer from it.
    answering_dead: bool,
    /// A reload is being handled: no client may be closed.
    reloading: bool,
    /// The router asked for the child to be killed (cleared when it exits).
    killed: bool,
    /// (client, raw id) asked before a reload and not answered then: each must be answered.
    owed: BTreeSet<(ClientId, Vec<u8>)>,
    /// (client, raw id) the client cancelled: an answer may never come.
    cancelled: BTreeSet<(ClientId, Vec<u8>)>,
}

const INIT_RESULT: &str = r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{},"resources":{"subscribe":true},"logging":{}},"serverInfo":{"name":"s","version":"1"}}"#;
const DISCOVER_RESULT: &str = r#"{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{"listChanged":true},"resources":{"subscribe":true},"logging":{}},"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"s","version":"1"}}}"#;

impl World {
    fn ask(&mut self, c: ClientId, line: &[u8]) {
        let note = |w: &mut World, env: Result<jsonrpc::Envelope<'_>, jsonrpc::Malformed>| {
            if let Ok(env) = env {
                if env.kind == Kind::Notification
                    && env.method.as_deref() == Some("notifications/cancelled")
                {
                    if let Some(id) = jsonrpc::field(env.params, "requestId") {
                        w.cancelled.insert((c, id.get().as_bytes().to_vec()));
                    }
                }
                if env.kind == Kind::Request {
                    if let Some(t) = jsonrpc::request_meta(env.params).progress_token {
                        w.tokens
                            .entry(c)
                            .or_default()
                            .insert(t.get().as_bytes().to_vec());
                    }
                    if env.method.as_deref() == Some("initialize")
                        && jsonrpc::field(env.params, "capabilities")
                            .is_some_and(|c| c.get() != "{}")
                    {
                        w.capable.insert(c);
                    }
                    if let Some(id) = env.id {
                        *w.asks.entry((c, id.get().as_bytes().to_vec())).or_default() += 1;
                    }
                }
            }
        };
        match jsonrpc::parse(line) {
            Ok(Parsed::Single(env)) => note(self, Ok(env)),
            Ok(Parsed::Batch(items)) => {
                for item in items {
                    note(self, jsonrpc::parse_one(item.get().as_bytes()));
                }
            }
            Err(_) => {}
        }
    }

    fn answered(&mut self, c: ClientId, id: &[u8], line: &[u8]) {
        assert!(
            !self.answering_dead,
            "an answer to an id of a child that has exited reached client {}: {}",
            c.0,
            String::from_utf8_lossy(line)
        );
        self.owed.remove(&(c, id.to_vec()));
        let n = self.asks.get_mut(&(c, id.to_vec()));
        match n {
            Some(n) if *n > 0 => *n -= 1,
            _ => panic!(
                "client {} got an answer to id {} it did not ask (or asked once and got twice): {}",
                c.0,
                String::from_utf8_lossy(id),
                String::from_utf8_lossy(line)
            ),
        }
    }

    fn to_client(&mut self, c: ClientId, line: &[u8]) {
        let one = |w: &mut World, item: &[u8]| {
            let env = jsonrpc::parse_one(item).unwrap_or_else(|e| {
                panic!(
                    "the router sent a client {e:?}: {}",
                    String::from_utf8_lossy(item)
                )
            });
            match env.kind {
                Kind::Response | Kind::Error => {
                    if let Some(id) = env.id {
                        w.answered(c, id.get().as_bytes(), item);
                    }
                }
                Kind::Request => {
                    let method = env.method.as_deref().unwrap_or("");
                    if method != "ping" {
                        assert!(
                            w.capable.contains(&c),
                            "{method} sent to a client that declared no capability"
                        );
                    }
                    let id = env
                        .id
                        .expect("a request has an id")
                        .get()
                        .as_bytes()
                        .to_vec();
                    w.server_asks.entry(c).or_default().push(id);
                }
                Kind::Notification => {
                    if env.method.as_deref() == Some("notifications/progress") {
                        let token = jsonrpc::field(env.params, "progressToken")
                            .expect("progress has a token");
                        assert!(
                            w.tokens
                                .get(&c)
                                .is_some_and(|t| t.contains(token.get().as_bytes())),
                            "progress with token {} reached client {}, which never gave it",
                            token.get(),
                            c.0
                        );
                    }
                }
            }
        };
        match jsonrpc::parse(line) {
            Ok(Parsed::Batch(items)) => {
                assert!(!items.is_empty(), "an empty batch reply");
                for item in items {
                    one(self, item.get().as_bytes());
                }
            }
            _ => one(self, line),
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.r.poll_action() {
            match a {
                Action::ToClient(c, line) => {
                    assert!(line.ends_line(), "a piece outside a streamed answer");
                    let b = line.to_bytes();
                    self.to_client(c, &b);
                }
                Action::ToChild(line) => {
                    let b = line.to_bytes();
                    let env = jsonrpc::parse_one(&b).unwrap_or_else(|e| {
                        panic!(
                            "the router sent the child {e:?}: {}",
                            String::from_utf8_lossy(&b)
                        )
                    });
                    if env.kind == Kind::Request {
                        let id = env
                            .id
                            .expect("a request has an id")
                            .get()
                            .as_bytes()
                            .to_vec();
                        let method = env.method.as_deref().unwrap_or("").to_owned();
                        self.dead.remove(&id);
                        self.upstream.push((id, method));
                    }
                }
                Action::CloseClient(c) => {
                    assert!(!self.reloading, "a reload closed client {}", c.0);
                    self.clients.retain(|(id, _)| *id != c);
                    self.gone.insert(c);
                }
                Action::Attach(c, id) => self.answered(c, &id, b"(hand-off request)"),
                Action::StreamAnswer(c, id) => {
                    assert!(
                        !self.answering_dead,
                        "an answer of a child that has exited streams to client {}",
                        c.0
                    );
                    assert!(self.stream.is_none(), "two answers streamed at once");
                    self.stream = Some((c, id.to_vec()));
                }
                Action::StreamEnd { whole } => {
                    let (c, id) = self.stream.take().expect("a stream ended that never began");
                    if whole {
                        self.answered(c, &id, b"(streamed answer)");
                    }
                }
                Action::Spawn => {
                    assert!(self.child == ChildState::None, "a second child was started");
                    self.child = ChildState::Spawning;
                    self.killed = false;
                }
                Action::Kill => self.killed = true,
            }
        }
    }

    fn handle(&mut self, input: Input) {
        self.r.handle(self.now, input);
        self.drain();
    }

    /// The child exited: what it was sent is dead from now on.
    fn exited(&mut self, reason: &str) {
        self.child = ChildState::None;
        self.killed = false;
        let ids: Vec<Vec<u8>> = self.upstream.iter().map(|(id, _)| id.clone()).collect();
        self.dead.extend(ids);
        self.handle(Input::ChildExited(reason.into()));
    }

    /// A line of the child's that answers upstream id `id`: checked against dead ids.
    fn child_answer(&mut self, id: &[u8], line: Bytes) {
        self.answering_dead = self.dead.contains(id);
        self.handle(Input::ChildLine(line));
        self.answering_dead = false;
    }

    /// After the case: the child starts, answers everything it was asked and exits when
    /// killed, while the clock runs past every deadline; whatever a reload left owed must be
    /// answered by then.
    fn settle(&mut self) {
        let mut answered_up: BTreeSet<Vec<u8>> = BTreeSet::new();
        for _ in 0..8 {
            match self.child {
                ChildState::Spawning => {
                    self.child = ChildState::Up;
                    self.handle(Input::ChildSpawned { pid: 4243 });
                }
                ChildState::Up if self.killed => self.exited("killed by signal 15"),
                _ => {}
            }
            if self.child == ChildState::Up && !self.killed {
                let todo: Vec<(Vec<u8>, String)> = self
                    .upstream
                    .iter()
                    .filter(|(id, _)| !self.dead.contains(id) && !answered_up.contains(id))
                    .cloned()
                    .collect();
                for (id, method) in todo {
                    let line = answer_line(&String::from_utf8_lossy(&id), &method, None);
                    answered_up.insert(id.clone());
                    self.child_answer(&id, Bytes::from(line.into_bytes()));
                }
            }
            self.advance(70_000);
        }
        let open: BTreeSet<ClientId> = self.clients.iter().map(|(c, _)| *c).collect();
        let owed: Vec<String> = self
            .owed
            .iter()
            .filter(|k| open.contains(&k.0) && !self.cancelled.contains(k))
            .map(|(c, id)| format!("client {} id {}", c.0, String::from_utf8_lossy(id)))
            .collect();
        assert!(
            owed.is_empty(),
            "requests owed when the server was reloaded never got an answer: {owed:?}"
        );
    }

    fn client(&self, pick: u8, writing: bool) -> Option<ClientId> {
        let open: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, closed)| !(writing && *closed))
            .map(|(c, _)| *c)
            .collect();
        if open.is_empty() {
            None
        } else {
            Some(open[usize::from(pick) % open.len()])
        }
    }

    fn upstream(&self, pick: u8) -> Option<(Vec<u8>, String)> {
        if self.upstream.is_empty() {
            return None;
        }
        Some(self.upstream[usize::from(pick) % self.upstream.len()].clone())
    }

    fn advance(&mut self, ms: u64) {
        let target = self.now + Duration::from_millis(ms);
        while let Some(at) = self.r.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.r.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
    }
}

fn client_line(w: &World, c: ClientId, msg: &Msg) -> Vec<u8> {
    let req = |id: Id, method: &str, params: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"{method}","params":{params}}}"#,
            id.json()
        )
    };
    let call = |id: Id, slow: bool, token: Option<Id>, task: bool| {
        let meta = token.map_or(String::new(), |t| {
            format!(r#""_meta":{{"progressToken":{}}},"#, t.json())
        });
        let task = if task { r#""task":{"ttl":1000},"# } else { "" };
        let tool = if slow { "slow" } else { "echo" };
        req(
            id,
            "tools/call",
            &format!(r#"{{{meta}{task}"name":"{tool}","arguments":{{}}}}"#),
        )
    };
    let cancel = |id: Id| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{}}}}}"#,
            id.json()
        )
    };
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned();
    let text = match msg {
        Msg::Init(id, caps) => {
            let caps = if *caps {
                r#"{"sampling":{},"elicitation":{},"roots":{"listChanged":true}}"#
            } else {
                "{}"
            };
            req(
                *id,
                "initialize",
                &format!(
                    r#"{{"protocolVersion":"2025-06-18","capabilities":{caps},"clientInfo":{{"name":"f","version":"1"}}}}"#
                ),
            )
        }
        Msg::Initialized => initialized,
        Msg::Call {
            id,
            slow,
            token,
            task,
        } => call(*id, *slow, *token, *task),
        Msg::Cancel(id) => cancel(*id),
        Msg::Ping(id) => req(*id, "ping", "{}"),
        Msg::Subscribe(id, uri, on) => req(
            *id,
            if *on {
                "resources/subscribe"
            } else {
                "resources/unsubscribe"
            },
            &format!(r#"{{"uri":"file:///u{}"}}"#, uri % 3),
        ),
        Msg::SetLevel(id, l) => {
            let level = ["debug", "info", "warning", "error", "bogus"][usize::from(*l) % 5];
            req(
                *id,
                "logging/setLevel",
                &format!(r#"{{"level":"{level}"}}"#),
            )
        }
        Msg::TaskGet(id, t) => req(*id, "tasks/get", &format!(r#"{{"taskId":"t{}"}}"#, t % 3)),
        Msg::TaskList(id) => req(*id, "tasks/list", "{}"),
        Msg::Discover(id) => req(*id, "server/discover", "{}"),
        Msg::RootsChanged => {
            r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#.to_owned()
        }
        Msg::Attach(id) => req(*id, "rmcp-mux/attach", "{}"),
        Msg::Batch(items) => {
            let parts: Vec<String> = items
                .iter()
                .take(6)
                .map(|m| match m {
                    Msg2::Call(id) => call(*id, false, None, false),
                    Msg2::Ping(id) => req(*id, "ping", "{}"),
                    Msg2::Cancel(id) => cancel(*id),
                    Msg2::Initialized => initialized.clone(),
                    Msg2::Raw(n) => {
                        ["1", "{}", "null", r#"{"jsonrpc":"2.0"}"#][usize::from(*n) % 4].to_owned()
                    }
                })
                .collect();
            format!("[{}]", parts.join(","))
        }
        Msg::AnswerServer(pick, error) => {
            let asked = w.server_asks.get(&c).filter(|v| !v.is_empty());
            let id = match asked {
                Some(v) => String::from_utf8_lossy(&v[usize::from(*pick) % v.len()]).into_owned(),
                None => pick.to_string(),
            };
            if *error {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-1,"message":"no"}}}}"#)
            } else {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"roots":[]}}}}"#)
            }
        }
        Msg::Raw(b) => {
            let mut b = b.clone();
            b.retain(|x| *x != b'\n');
            return b;
        }
    };
    text.into_bytes()
}

/// The child's answer to upstream `id`, a request of `method`.
fn answer_line(id: &str, method: &str, task: Option<u8>) -> String {
    if method == "initialize" {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{INIT_RESULT}}}"#)
    } else if method == "server/discover" {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{DISCOVER_RESULT}}}"#)
    } else if let Some(t) = task {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"task":{{"taskId":"t{}","status":"working"}}}}}}"#,
            t % 3
        )
    } else {
        format!(r#"{{"id":{id},"jsonrpc":"2.0","result":{{"content":[]}}}}"#)
    }
}

fn child_line(w: &World, msg: &ChildMsg) -> Option<Vec<u8>> {
    let up = |pick: u8| {
        w.upstream(pick)
            .map(|(id, m)| (String::from_utf8_lossy(&id).into_owned(), m))
    };
    let note = |method: &str, params: String| {
        format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params}}}"#)
    };
    let text = match msg {
        ChildMsg::Answer { pick, error, task } => {
            let (id, method) = up(*pick)?;
            if *error {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32000,"message":"x"}}}}"#)
            } else {
                answer_line(&id, &method, *task)
            }
        }
        ChildMsg::Progress(pick) => {
            let (id, _) = up(*pick)?;
            note(
                "notifications/progress",
                format!(r#"{{"progressToken":{id},"progress":1}}"#),
            )
        }
        ChildMsg::Request { kind, id } => {
            let (method, params) = [
                ("sampling/createMessage", r#"{"messages":[],"maxTokens":1}"#),
                (
                    "elicitation/create",
                    r#"{"message":"m","elicitationId":"e1","mode":"url","url":"x"}"#,
                ),
                ("roots/list", "{}"),
                ("ping", "{}"),
            ][usize::from(*kind) % 4];
            format!(
                r#"{{"jsonrpc":"2.0","id":"s{}","method":"{method}","params":{params}}}"#,
                id % 4
            )
        }
        ChildMsg::ListChanged => note("notifications/tools/list_changed", "{}".into()),
        ChildMsg::Updated(u) => note(
            "notifications/resources/updated",
            format!(r#"{{"uri":"file:///u{}"}}"#, u % 3),
        ),
        ChildMsg::Message(l) => {
            let level = ["debug", "info", "warning", "error"][usize::from(*l) % 4];
            note(
                "notifications/message",
                format!(r#"{{"level":"{level}","data":"d"}}"#),
            )
        }
        ChildMsg::Cancelled(pick) => {
            let (id, _) = up(*pick)?;
            note(
                "notifications/cancelled",
                format!(r#"{{"requestId":{id}}}"#),
            )
        }
        ChildMsg::TaskStatus(t) => note(
            "notifications/tasks/status",
            format!(r#"{{"taskId":"t{}","status":"completed"}}"#, t % 3),
        ),
        ChildMsg::ElicitComplete => note(
            "notifications/elicitation/complete",
            r#"{"elicitationId":"e1"}"#.into(),
        ),
        ChildMsg::Raw(b) => {
            let mut b = b.clone();
            b.retain(|x| *x != b'\n');
            return Some(b);
        }
    };
    Some(text.into_bytes())
}

/// The server's config; `era` and `max_clients` 0 are the first config's (handshake, 3).
fn config(c: &Reconf) -> ServerConfig {
    ServerConfig {
        name: "fuzz".into(),
        socket: PathBuf::from("/tmp/fuzz.sock"),
        cmd: "fuzz".into(),
        args: vec![],
        env: Default::default(),
        cwd: None,
        enabled: true,
        lazy_start: c.lazy,
        max_active_clients: 3 - usize::from(c.max_clients % 3),
        max_request_bytes: 4096,
        max_response_bytes: 1 << 16,
        request_timeout: Duration::from_millis(u64::from(c.timeout_ms) + 1),
        restart_backoff: Duration::from_millis(10),
        restart_backoff_max: Duration::from_millis(100),
        max_restarts: u32::from(c.max_restarts % 4),
        shutdown_grace: Duration::from_millis(10),
        capabilities: Capabilities {
            sampling: c.sampling,
            elicitation: c.elicitation,
            roots: c.roots_cfg,
        },
        roots: c.roots_cfg.then(|| vec!["file:///r".to_owned()]),
        server_request_policy: if c.in_flight_only {
            ServerRequestPolicy::InFlightOnly
        } else {
            ServerRequestPolicy::MostRecent
        },
        status_file: None,
        era: [Era::Handshake, Era::Modern, Era::Auto][usize::from(c.era % 3)],
        share: Share::Global,
        idle_stop: None,
        max_instances: 16,
    }
}

fuzz_target!(|case: Case| {
    let cfg = config(&Reconf {
        lazy: case.lazy,
        max_restarts: case.max_restarts,
        timeout_ms: case.timeout_ms,
        sampling: case.sampling,
        elicitation: true,
        roots_cfg: case.roots_cfg,
        in_flight_only: case.in_flight_only,
        era: 0,
        max_clients: 0,
    });
    let mut w = World {
        r: Router::new(cfg),
        now: Instant::now(),
        next_client: 1,
        clients: vec![],
        gone: BTreeSet::new(),
        asks: HashMap::new(),
        tokens: HashMap::new(),
        capable: BTreeSet::new(),
        upstream: vec![],
        server_asks: HashMap::new(),
        child: ChildState::None,
        stream: None,
        shutdown: false,
        dead: BTreeSet::new(),
        answering_dead: false,
        reloading: false,
        killed: false,
        owed: BTreeSet::new(),
        cancelled: BTreeSet::new(),
    };
    let mut reloaded = false;
    w.drain();
    for op in case.ops.iter().take(200) {
        match op {
            Op::Connect if !w.shutdown => {
                let c = ClientId(w.next_client);
                w.next_client += 1;
                w.clients.push((c, false));
                w.handle(Input::ClientConnected(c));
            }
            Op::Client(pick, msg) => {
                if let Some(c) = w.client(*pick, true) {
                    let line = client_line(&w, c, msg);
                    w.ask(c, &line);
                    w.handle(Input::ClientLine(c, Bytes::from(line)));
                }
            }
            Op::TooLong(pick) => {
                if let Some(c) = w.client(*pick, true) {
                    w.handle(Input::ClientTooLong(c));
                }
            }
            Op::Gone(pick) => {
                if let Some(c) = w.client(*pick, false) {
                    w.clients.retain(|(id, _)| *id != c);
                    w.gone.insert(c);
                    w.handle(Input::ClientGone(c));
                }
            }
            Op::InputClosed(pick) => {
                if let Some(c) = w.client(*pick, true) {
                    for e in w.clients.iter_mut().filter(|(id, _)| *id == c) {
                        e.1 = true;
                    }
                    w.handle(Input::ClientInputClosed(c));
                }
            }
            Op::Spawned if w.child == ChildState::Spawning => {
                w.child = ChildState::Up;
                w.handle(Input::ChildSpawned { pid: 4242 });
            }
            Op::SpawnFailed if w.child == ChildState::Spawning => {
                w.child = ChildState::None;
                w.handle(Input::ChildSpawnFailed("no such file".into()));
            }
            Op::Exit if w.child == ChildState::Up => w.exited("exit status: 1"),
            Op::Child(msg) if w.child == ChildState::Up => {
                if let Some(line) = child_line(&w, msg) {
                    let answers = match msg {
                        ChildMsg::Answer { pick, .. } => w.upstream(*pick).map(|(id, _)| id),
                        _ => None,
                    };
                    match answers {
                        Some(id) => w.child_answer(&id, Bytes::from(line)),
                        None => w.handle(Input::ChildLine(Bytes::from(line))),
                    }
                }
            }
            Op::LongAnswer { pick, end } if w.child == ChildState::Up => {
                let Some((id, _)) = w.upstream(*pick) else {
                    continue;
                };
                let Some(up) = std::str::from_utf8(&id)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                w.answering_dead = w.dead.contains(&id);
                w.handle(Input::ChildAnswerBegins(up));
                match end % 3 {
                    0 => {
                        let line =
                            format!(r#"{{"id":{up},"jsonrpc":"2.0","result":{{"content":[]}}}}"#);
                        w.handle(Input::ChildLine(Bytes::from(line)));
                    }
                    1 => w.handle(Input::ChildTooLong),
                    _ => {
                        w.answering_dead = false;
                        w.exited("killed by signal 9");
                    }
                }
                w.answering_dead = false;
                assert!(w.stream.is_none(), "a streamed answer never ended");
            }
            Op::ChildTooLong if w.child == ChildState::Up => w.handle(Input::ChildTooLong),
            Op::Command(n) => {
                let cmd = [Command::Start, Command::Stop, Command::Restart][usize::from(*n) % 3];
                w.handle(Input::Command(cmd));
            }
            Op::Advance(ms) => w.advance(u64::from(*ms)),
            Op::Shutdown if !w.shutdown => {
                w.shutdown = true;
                w.handle(Input::Shutdown);
            }
            // The actor takes no reload once it is shutting down.
            Op::Reconfigure(rc) if !w.shutdown => {
                reloaded = true;
                let open: BTreeSet<ClientId> = w.clients.iter().map(|(c, _)| *c).collect();
                let owed: Vec<(ClientId, Vec<u8>)> = w
                    .asks
                    .iter()
                    .filter(|(k, n)| **n > 0 && open.contains(&k.0))
                    .map(|(k, _)| k.clone())
                    .collect();
                w.owed.extend(owed);
                let before = w.r.status().clients;
                w.reloading = true;
                w.handle(Input::Reconfigure(Box::new(config(rc))));
                w.reloading = false;
                assert_eq!(w.r.status().clients, before, "a reload changed the clients");
            }
            _ => {}
        }
    }
    if reloaded && !w.shutdown {
        w.settle();
    }
    // Every client leaves: nothing may stay pending.
    for (c, _) in std::mem::take(&mut w.clients) {
        w.gone.insert(c);
        w.handle(Input::ClientGone(c));
    }
    let status = w.r.status();
    if !w.shutdown {
        // (After a shutdown the router closes every client and is dropped with them.)
        assert_eq!(
            status.clients, 0,
            "clients left but the router still counts some"
        );
    }
    assert_eq!(
        status.pending, 0,
        "requests pending after every client left"
    );
});
