//! The router fed arbitrary sequences of events, in the orders its actor can produce them
//! (clients connect, send lines, close their input and leave; the child is spawned, writes
//! lines, starts long answers, exits; commands, timers, shutdown), checking after every step:
//! - no client gets an answer to an id it never asked (nor a second answer to one it asked
//!   once), counting batch replies, answers passed on as they arrive and hand-off requests;
//! - progress reaches only the client that gave its token, and a request from the server only
//!   a client that declared some capability to answer it;
//! - the router never starts a second child while one is alive;
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
    LongAnswer { pick: u8, end: u8 },
    ChildTooLong,
    Command(u8),
    Advance(u16),
    Shutdown,
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
}

const INIT_RESULT: &str = r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{},"resources":{"subscribe":true},"logging":{}},"serverInfo":{"name":"s","version":"1"}}"#;

impl World {
    fn ask(&mut self, c: ClientId, line: &[u8]) {
        let note = |w: &mut World, env: Result<jsonrpc::Envelope<'_>, jsonrpc::Malformed>| {
            if let Ok(env) = env {
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
                        self.upstream.push((id, method));
                    }
                }
                Action::CloseClient(c) => {
                    self.clients.retain(|(id, _)| *id != c);
                    self.gone.insert(c);
                }
                Action::Attach(c, id) => self.answered(c, &id, b"(hand-off request)"),
                Action::StreamAnswer(c, id) => {
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
                }
                Action::Kill => {}
            }
        }
    }

    fn handle(&mut self, input: Input) {
        self.r.handle(self.now, input);
        self.drain();
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
            } else if method == "initialize" {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{INIT_RESULT}}}"#)
            } else if let Some(t) = task {
                format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"task":{{"taskId":"t{}","status":"working"}}}}}}"#,
                    t % 3
                )
            } else {
                format!(r#"{{"id":{id},"jsonrpc":"2.0","result":{{"content":[]}}}}"#)
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

fuzz_target!(|case: Case| {
    let cfg = ServerConfig {
        name: "fuzz".into(),
        socket: PathBuf::from("/tmp/fuzz.sock"),
        cmd: "fuzz".into(),
        args: vec![],
        env: Default::default(),
        cwd: None,
        enabled: true,
        lazy_start: case.lazy,
        max_active_clients: 3,
        max_request_bytes: 4096,
        max_response_bytes: 1 << 16,
        request_timeout: Duration::from_millis(u64::from(case.timeout_ms) + 1),
        restart_backoff: Duration::from_millis(10),
        restart_backoff_max: Duration::from_millis(100),
        max_restarts: u32::from(case.max_restarts % 4),
        shutdown_grace: Duration::from_millis(10),
        capabilities: Capabilities {
            sampling: case.sampling,
            elicitation: true,
            roots: case.roots_cfg,
        },
        roots: case.roots_cfg.then(|| vec!["file:///r".to_owned()]),
        server_request_policy: if case.in_flight_only {
            ServerRequestPolicy::InFlightOnly
        } else {
            ServerRequestPolicy::MostRecent
        },
        status_file: None,
        era: Era::Handshake,
        share: Share::Global,
        idle_stop: None,
        max_instances: 16,
    };
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
    };
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
            Op::Exit if w.child == ChildState::Up => {
                w.child = ChildState::None;
                w.stream = None;
                w.handle(Input::ChildExited("exit status: 1".into()));
            }
            Op::Child(msg) if w.child == ChildState::Up => {
                if let Some(line) = child_line(&w, msg) {
                    w.handle(Input::ChildLine(Bytes::from(line)));
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
                w.handle(Input::ChildAnswerBegins(up));
                match end % 3 {
                    0 => {
                        let line =
                            format!(r#"{{"id":{up},"jsonrpc":"2.0","result":{{"content":[]}}}}"#);
                        w.handle(Input::ChildLine(Bytes::from(line)));
                    }
                    1 => w.handle(Input::ChildTooLong),
                    _ => {
                        w.child = ChildState::None;
                        w.handle(Input::ChildExited("killed by signal 9".into()));
                    }
                }
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
            _ => {}
        }
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
