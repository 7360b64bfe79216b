//! The Streamable HTTP front: hosts that connect to MCP servers by URL reach each server at
//! `http://127.0.0.1:PORT/NAME/mcp` with no process of their own (the proxy is for hosts that
//! only speak stdio).
//!
//! Each HTTP session (`Mcp-Session-Id`) is one connection to the server's Unix socket, made by
//! the daemon itself: to the actor and its router it is a client like any other, so every
//! routing rule (ids, progress, cancellation, server→client requests routed back to their
//! session, subscriptions, log level, `max_active_clients`) applies unchanged, and status
//! counts sessions as clients. This module only translates: a POSTed message becomes a line on
//! the socket; a line from the socket goes to the SSE stream of the POST it belongs to, or to
//! the session's GET stream.
//!
//! Where a line from the server goes:
//! - an answer: to the stream of the POST that asked (which then ends; kept for a resume while
//!   its client is away); an answer to a cancelled request goes nowhere: answers never go on
//!   the GET stream;
//! - `notifications/progress`: to the stream of the request that carried its token;
//! - any other request or notification: to the only POST stream still open when there is one
//!   (it is about that request), otherwise to the GET stream, otherwise to the newest POST
//!   stream; with no stream at all it waits (bounded) for the next GET stream.
//!
//! Security: the front listens on loopback only (the config refuses anything else), every
//! request must carry `Authorization: Bearer TOKEN` (the token lives in a 0600 file in the
//! user's state folder, see [`token`]), and `Host` and `Origin` must be local, so a web page on
//! another origin (DNS rebinding) gets 403. Bodies are bounded by the server's
//! `max_request_bytes`; sessions end after [`IDLE`] without use.
//!
//! Streams are resumable: each event has the id `STREAM-SEQ`, every stream starts with a
//! priming event, and a GET with `Last-Event-ID` replays what the stream sent after it.
//!
//! A request whose `MCP-Protocol-Version` names a 2026-07-28-era version takes the other form
//! of the transport, with no session: see `modern.rs`.

mod modern;
pub mod token;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    AsHeaderName, HeaderMap, HeaderName, HeaderValue, ACCEPT, ALLOW, AUTHORIZATION, CACHE_CONTROL,
    CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::daemon::Shared;

/// A session nothing has used for this long (no request in flight, no GET stream open) ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// How often idle sessions are looked for.
const SWEEP: Duration = Duration::from_secs(60);
/// How many messages may wait for one HTTP stream (or, with no stream open, for the next GET)
/// before the session counts as stuck and is ended, as the actor does with a socket client.
const STREAM_QUEUE: usize = 8192;
/// The protocol versions whose `MCP-Protocol-Version` header the front accepts.
const VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// How long an SSE stream may stay silent before it gets a comment line.
const KEEPALIVE: Duration = Duration::from_secs(25);
/// How long an HTTP client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The transport's own headers, named once: a lookup by a `&str` parses the name each time.
const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// What the front needs to know of one server to open a session on it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's socket.
    pub socket: PathBuf,
    /// Its `max_request_bytes`: the bound on a POST body.
    pub max_request_bytes: usize,
    /// Its `max_response_bytes`: the bound on a line read from its socket.
    pub max_response_bytes: usize,
    /// Whether it has `max_active_clients` clients already. The router refuses one more
    /// anyway, but closing the socket then can lose its error to a reset; this says it first.
    pub full: bool,
    /// Its `max_active_clients`.
    pub max_clients: usize,
}

/// Where the front finds the servers by name: the daemon's live set, which reloads change.
pub trait Servers: Send + Sync + 'static {
    /// The server called `name`, if it runs.
    fn target(&self, name: &str) -> Option<Target>;
}

impl Servers for Shared {
    fn target(&self, name: &str) -> Option<Target> {
        self.http_target(name)
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The front: its sessions, its token and the servers it serves.
struct Front {
    servers: Arc<dyn Servers>,
    token: String,
    port: u16,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Connections of the 2026-07-28 form waiting for the retry of an `input_required` answer.
    parked: Mutex<modern::ParkedConns>,
}

/// One HTTP session: one client of one server's router.
struct Session {
    id: String,
    server: String,
    /// The socket's writing half; `None` once the session ended.
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    routes: Mutex<Routes>,
    /// Cancelled when the session ends (DELETE, idle, the server closed it).
    ended: CancellationToken,
}

/// Where the server's lines for this session go.
struct Routes {
    /// Request id (its JSON text) → the stream of the POST that sent it.
    pending: HashMap<String, u64>,
    /// Progress token (its JSON text) → the stream of the request that carried it.
    progress: HashMap<String, u64>,
    /// Open streams (POSTs not yet answered, the GET stream), oldest first.
    streams: BTreeMap<u64, Stream>,
    next_stream: u64,
    /// The GET stream's number, while one is open.
    get: Option<u64>,
    /// Streams that ended, newest last, with what they sent: a client that lost the
    /// connection just before the end can still have the rest (`Last-Event-ID`).
    finished: VecDeque<(u64, VecDeque<(u64, Bytes)>)>,
    /// Resumed streams that ended with nothing more to send, held open (see `resume`).
    parked: VecDeque<mpsc::Sender<Bytes>>,
    /// Requests and notifications that came while no stream was open.
    backlog: VecDeque<Bytes>,
    last_active: Instant,
}

/// How many events of one stream are kept for a client that resumes it.
const REPLAY: usize = 1024;
/// How many ended streams of a session are kept for resuming.
const FINISHED_KEPT: usize = 16;
/// What the priming event asks a client to wait before it reconnects a broken stream.
const RETRY_MS: u64 = 500;

struct Stream {
    /// Where its events go; `None` once its HTTP client went away (they are still kept for
    /// a resume).
    tx: Option<mpsc::Sender<Bytes>>,
    /// A POST's stream or the GET stream.
    kind: Kind,
    /// The number of the last event sent.
    seq: u64,
    /// The events sent, for a client that resumes the stream (SSE streams only).
    replay: VecDeque<(u64, Bytes)>,
}

enum Kind {
    /// A POSTed request's: answered as SSE (`sse`) or as one JSON object (`initialize`).
    Post {
        id: String,
        token: Option<String>,
        sse: bool,
    },
    Get,
}

impl Stream {
    fn sse(&self) -> bool {
        !matches!(self.kind, Kind::Post { sse: false, .. })
    }

    /// Whether a reader is there now.
    fn live(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| !t.is_closed())
    }
}

/// What a delivery found.
#[derive(Debug, PartialEq, Eq)]
enum Delivered {
    Yes,
    /// The stream's reader is gone (the HTTP client went away): kept for a resume.
    Closed,
    /// The stream's queue is full: the session is stuck.
    Full,
}

/// One SSE event: `id` is `STREAM-SEQ`, so a resume names the stream and the place in it.
/// Written piece by piece (two requests' `format!` were 2% of an HTTP request's instructions).
fn event(n: u64, seq: u64, msg: &[u8]) -> Bytes {
    let mut e = Vec::with_capacity(msg.len() + 64);
    event_id_line(&mut e, n, seq);
    e.extend_from_slice(b"event: message\ndata: ");
    e.extend_from_slice(msg);
    e.extend_from_slice(b"\n\n");
    Bytes::from(e)
}

/// `id: N-SEQ` and its newline.
fn event_id_line(e: &mut Vec<u8>, n: u64, seq: u64) {
    let mut digits = [0u8; 20];
    e.extend_from_slice(b"id: ");
    e.extend_from_slice(crate::jsonrpc::decimal(n, &mut digits));
    e.push(b'-');
    e.extend_from_slice(crate::jsonrpc::decimal(seq, &mut digits));
    e.push(b'\n');
}

/// The first event of a stream: its id and an empty `data`, so that a client whose
/// connection breaks before anything else came can still resume it.
fn priming(n: u64) -> Bytes {
    let mut e = Vec::with_capacity(64);
    event_id_line(&mut e, n, 0);
    e.extend_from_slice(b"retry: ");
    e.extend_from_slice(crate::jsonrpc::decimal(RETRY_MS, &mut [0u8; 20]));
    e.extend_from_slice(b"\ndata: \n\n");
    Bytes::from(e)
}

/// Parses a `Last-Event-ID`.
fn event_id(text: &str) -> Option<(u64, u64)> {
    let (n, seq) = text.trim().split_once('-')?;
    Some((n.parse().ok()?, seq.parse().ok()?))
}

impl Routes {
    fn new() -> Routes {
        Routes {
            pending: HashMap::new(),
            progress: HashMap::new(),
            streams: BTreeMap::new(),
            next_stream: 1,
            get: None,
            finished: VecDeque::new(),
            parked: VecDeque::new(),
            backlog: VecDeque::new(),
            last_active: Instant::now(),
        }
    }

    fn add(&mut self, kind: Kind) -> (u64, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let n = self.next_stream;
        self.next_stream += 1;
        let stream = Stream {
            tx: Some(tx),
            kind,
            seq: 0,
            replay: VecDeque::new(),
        };
        if stream.sse() {
            if let Some(tx) = &stream.tx {
                // A fresh queue has room.
                let _ = tx.try_send(priming(n));
            }
        }
        self.streams.insert(n, stream);
        self.last_active = Instant::now();
        (n, rx)
    }

    /// Opens the stream of a POSTed request.
    fn open(&mut self, id: String, token: Option<String>, sse: bool) -> mpsc::Receiver<Bytes> {
        let (n, rx) = self.add(Kind::Post {
            id: id.clone(),
            token: token.clone(),
            sse,
        });
        self.pending.insert(id, n);
        if let Some(t) = token {
            self.progress.insert(t, n);
        }
        rx
    }

    /// Opens a GET stream (ending the one before, whose client reconnected or left) and
    /// gives it what waited for one.
    fn open_get(&mut self) -> Result<mpsc::Receiver<Bytes>, Delivered> {
        if let Some(old) = self.get.take() {
            self.close(old);
        }
        let (n, rx) = self.add(Kind::Get);
        self.get = Some(n);
        while let Some(msg) = self.backlog.pop_front() {
            if self.send(n, &msg) == Delivered::Full {
                return Err(Delivered::Full);
            }
        }
        Ok(rx)
    }

    /// Ends a stream: its sender is dropped, so its body ends after what it holds; what it
    /// sent is kept a while for a resume.
    fn close(&mut self, n: u64) {
        if let Some(s) = self.streams.remove(&n) {
            if let Kind::Post { id, token, .. } = s.kind {
                self.pending.remove(&id);
                if let Some(t) = token {
                    self.progress.remove(&t);
                }
            }
            if self.get == Some(n) {
                self.get = None;
            }
            if !s.replay.is_empty() {
                self.finished.push_back((n, s.replay));
                if self.finished.len() > FINISHED_KEPT {
                    self.finished.pop_front();
                }
            }
        }
        self.last_active = Instant::now();
    }

    /// Sends one message on stream `n` (kept for a resume when it is an SSE stream).
    fn send(&mut self, n: u64, msg: &[u8]) -> Delivered {
        let Some(s) = self.streams.get_mut(&n) else {
            return Delivered::Closed;
        };
        let frame = if s.sse() {
            s.seq += 1;
            let e = event(n, s.seq, msg);
            s.replay.push_back((s.seq, e.clone()));
            if s.replay.len() > REPLAY {
                s.replay.pop_front();
            }
            e
        } else {
            Bytes::copy_from_slice(msg)
        };
        let Some(tx) = &s.tx else {
            return Delivered::Closed;
        };
        match tx.try_send(frame) {
            Ok(()) => Delivered::Yes,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                s.tx = None;
                Delivered::Closed
            }
            Err(mpsc::error::TrySendError::Full(_)) => Delivered::Full,
        }
    }

    /// A resume (`Last-Event-ID: N-SEQ`): the events of stream N after SEQ, then the
    /// stream goes on where it is still open. `None` for a stream it does not know.
    fn resume(&mut self, n: u64, after: u64) -> Option<mpsc::Receiver<Bytes>> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE.max(REPLAY + 2));
        // Something at once: the answer's headers leave with its first bytes, and a client
        // waits for them.
        let _ = tx.try_send(Bytes::from_static(b": resumed\n\n"));
        if let Some(s) = self.streams.get_mut(&n) {
            for (_, e) in s.replay.iter().filter(|(seq, _)| *seq > after) {
                // The queue holds the whole replay.
                let _ = tx.try_send(e.clone());
            }
            s.tx = Some(tx);
            self.last_active = Instant::now();
            return Some(rx);
        }
        let (_, replay) = self.finished.iter().find(|(f, _)| *f == n)?;
        let mut any = false;
        for (_, e) in replay.iter().filter(|(seq, _)| *seq > after) {
            let _ = tx.try_send(e.clone());
            any = true;
        }
        if !any {
            // Nothing more will come on it (its request was cancelled, or the client had
            // it all). Ending it at once would only have the client reconnect again and
            // again: it stays open, empty, until the client or the session ends it.
            self.parked.push_back(tx);
            if self.parked.len() > FINISHED_KEPT {
                self.parked.pop_front();
            }
        }
        Some(rx)
    }

    /// Routes one line from the server. `false` when the session is stuck.
    fn route(&mut self, line: Bytes) -> bool {
        let Some(env) = Msg::parse(&line) else {
            warn!("the server sent a line that is not a JSON-RPC message; dropped");
            return true;
        };
        if env.method.is_none() {
            // An answer: to the stream of its request, which then ends.
            let key = env.id.unwrap_or("null");
            if let Some(n) = self.pending.get(key).copied() {
                let ok = self.send(n, &line);
                self.close(n);
                return ok != Delivered::Full;
            }
            // Its request was cancelled (or is unknown). Answers never go on the GET stream.
            debug!(id = key, "answer for no open stream; dropped");
            return true;
        }
        if env.method.as_deref() == Some("notifications/progress") {
            if let Some(n) = progress_token(env.params).and_then(|t| self.progress.get(&t)) {
                // To its request's stream even while that client is away: kept for a resume.
                return self.send(*n, &line) != Delivered::Full;
            }
        }
        self.unrelated(line)
    }

    /// A request or notification of the server's own.
    fn unrelated(&mut self, line: Bytes) -> bool {
        loop {
            let posts: Vec<u64> = self
                .streams
                .iter()
                .filter(|(_, s)| matches!(s.kind, Kind::Post { sse: true, .. }) && s.live())
                .map(|(n, _)| *n)
                .collect();
            let get = self
                .get
                .filter(|g| self.streams.get(g).is_some_and(Stream::live));
            let target = if posts.len() == 1 {
                Some(posts[0])
            } else {
                get.or(posts.last().copied())
            };
            let Some(n) = target else {
                if self.backlog.len() >= STREAM_QUEUE {
                    return false;
                }
                self.backlog.push_back(line);
                return true;
            };
            match self.send(n, &line) {
                Delivered::Yes => return true,
                Delivered::Full => return false,
                // Its client left just now. Sent on one stream only: take it back from
                // that stream's replay and look again (the stream is no longer live).
                Delivered::Closed => {
                    if let Some(s) = self.streams.get_mut(&n) {
                        s.replay.pop_back();
                    }
                }
            }
        }
    }

    /// Whether the session is in use: a request in flight or a GET stream open.
    fn busy(&self) -> bool {
        self.streams
            .values()
            .any(|s| matches!(s.kind, Kind::Post { .. }) || s.live())
    }
}

/// The parts of a message the front routes by, as serde_json reads them.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// The parts of a message the front routes by, borrowed from it: ids and params as JSON text.
pub(super) struct Msg<'a> {
    id: Option<&'a str>,
    method: Option<Cow<'a, str>>,
    params: Option<&'a str>,
}

impl Msg<'_> {
    /// Reads a message as [`Envelope`] does (`None` where that fails), taking the router's
    /// one-pass scanner first: a derived serde reader was a tenth of an HTTP request's
    /// instructions. What the scanner takes, serde_json reads the same way; the rest (and
    /// whatever is not JSON-RPC 2.0 to the router) still goes through [`Envelope`].
    pub(super) fn parse(line: &[u8]) -> Option<Msg<'_>> {
        if let Ok(e) = crate::jsonrpc::parse_one(line) {
            return Some(Msg {
                id: e.id.map(crate::jsonrpc::Raw::get),
                method: e.method,
                params: e.params.map(crate::jsonrpc::Raw::get),
            });
        }
        let e = serde_json::from_slice::<Envelope>(line).ok()?;
        Some(Msg {
            id: e.id.map(RawValue::get),
            method: e.method.map(Cow::Owned),
            params: e.params.map(RawValue::get),
        })
    }
}

/// `params._meta.progressToken` (in a request) or `params.progressToken` (in a progress
/// notification), as JSON text.
fn progress_token(params: Option<&str>) -> Option<String> {
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow, default, rename = "progressToken")]
        token: Option<&'a RawValue>,
        #[serde(borrow, default, rename = "_meta")]
        meta: Option<Meta<'a>>,
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow, default, rename = "progressToken")]
        token: Option<&'a RawValue>,
    }
    let params = params?;
    // Most requests have no token: without its name, and without an escape that could spell
    // it, there is nothing to parse.
    let bytes = params.as_bytes();
    if memchr::memchr(b'\\', bytes).is_none()
        && memchr::memmem::find(bytes, b"progressToken").is_none()
    {
        return None;
    }
    let p: Params = serde_json::from_str(params).ok()?;
    p.token
        .or(p.meta.and_then(|m| m.token))
        .map(|t| t.get().to_owned())
}

/// `params.requestId` of a `notifications/cancelled`, as JSON text.
fn cancelled_id(params: Option<&str>) -> Option<String> {
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow, rename = "requestId")]
        id: &'a RawValue,
    }
    let p: Params = serde_json::from_str(params?).ok()?;
    Some(p.id.get().to_owned())
}

/// A bound front, ready to serve.
pub struct Listener {
    listener: TcpListener,
    token: String,
}

impl Listener {
    /// Binds `addr` and reads (or creates) the token, so that a daemon that cannot serve HTTP
    /// fails at start, before anything runs.
    ///
    /// # Errors
    /// The address is taken, or the token file cannot be read or created.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Listener> {
        use anyhow::Context;
        let token = token::load_or_create(&token::path()?)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("daemon.http: cannot listen on {addr}"))?;
        Ok(Listener { listener, token })
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Serves HTTP on `listener` until `shutdown` is cancelled; every task it starts runs on
/// `tracker`.
pub async fn serve(
    listener: Listener,
    servers: Arc<dyn Servers>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let front = Arc::new(Front {
        servers,
        token: listener.token,
        port,
        sessions: Mutex::new(HashMap::new()),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        parked: Mutex::new(modern::ParkedConns::default()),
    });
    info!(port, "HTTP front listening");
    tracker.spawn(sweep(front.clone()));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            // Cancel safe: TcpListener::accept loses nothing when dropped.
            a = listener.listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // An answer goes out in several small writes (head, priming event, the message, the
        // last chunk): with Nagle's algorithm each waited for the host's delayed ACK, ≈ 40 ms
        // per request on Linux.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY on an HTTP connection");
        }
        let front = front.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let front = front.clone();
                async move { Ok::<_, Infallible>(front.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r { debug!(error = %e, "HTTP connection ended") },
                // Dropping the connection closes it (open streams included).
                () = token.cancelled() => {}
            }
        });
    }
    let sessions: Vec<Arc<Session>> = front
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .map(|(_, s)| s)
        .collect();
    for s in sessions {
        s.ended.cancel();
    }
    front
        .parked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

/// A POST's body, after the checks both forms share: what it accepts, its type, its size, no
/// batch. The answer to send instead when a check fails.
async fn read_body(
    h: &HeaderMap,
    body: Incoming,
    target: &Target,
) -> Result<Bytes, Response<Body>> {
    if accepted(h) != (true, true) {
        return Err(plain(
            StatusCode::NOT_ACCEPTABLE,
            "accept both application/json and text/event-stream",
        ));
    }
    if !header(h, CONTENT_TYPE).is_some_and(|c| c.starts_with("application/json")) {
        return Err(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json",
        ));
    }
    let body = match Limited::new(body, target.max_request_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                -32600,
                &format!(
                    "request over max_request_bytes ({})",
                    target.max_request_bytes
                ),
            ))
        }
        Err(_) => return Err(plain(StatusCode::BAD_REQUEST, "body cut short")),
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "send one JSON-RPC message per request (no batches)",
        ));
    }
    Ok(body)
}

/// Ends the sessions nobody used for [`IDLE`].
async fn sweep(front: Arc<Front>) {
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            () = front.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let idle: Vec<Arc<Session>> = {
            let sessions = front
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            sessions
                .values()
                .filter(|s| {
                    let r = s.routes.lock().unwrap_or_else(PoisonError::into_inner);
                    !r.busy() && r.last_active.elapsed() >= IDLE
                })
                .cloned()
                .collect()
        };
        for s in idle {
            info!(session = %s.id, server = %s.server, "HTTP session idle; ended");
            front.end(&s.id);
        }
        front
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expire();
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A JSON-RPC error as an HTTP answer (id null: it answers no request the server saw).
fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    rpc_error_with(status, "null", code, message, None)
}

/// A JSON-RPC error to the request whose id is `id` (raw JSON), with `data` when given.
fn rpc_error_with(
    status: StatusCode,
    id: &str,
    code: i64,
    message: &str,
    data: Option<serde_json::Value>,
) -> Response<Body> {
    let id: serde_json::Value = serde_json::from_str(id).unwrap_or_default();
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error});
    json(status, Bytes::from(body.to_string()))
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An SSE answer carrying the events of `rx` (already formatted), ending with it.
fn sse(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    sse_every(rx, KEEPALIVE)
}

/// [`sse`] with a comment after `keepalive` of silence.
fn sse_every(mut rx: mpsc::Receiver<Bytes>, keepalive: Duration) -> Response<Body> {
    // A comment after `keepalive` of silence: a client that went away without closing is found
    // by the write failing, and its stream (and, once idle, its session) ends. One timer for
    // the stream, made when it first waits and moved only when it fires early, rather than
    // one per event (most streams end before it would fire).
    let mut last = Instant::now();
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let events = futures_util::stream::poll_fn(move |cx| {
        let frame = match rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => frame,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                let due = last + keepalive;
                let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due.into())));
                if t.deadline() != due.into() {
                    // Events came since it was set.
                    t.as_mut().reset(due.into());
                }
                ready!(t.as_mut().poll(cx));
                Bytes::from_static(b": keepalive\n\n")
            }
        };
        last = Instant::now();
        Poll::Ready(Some(Ok::<_, Infallible>(Frame::data(frame))))
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(events)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn header<K: AsHeaderName>(h: &HeaderMap, name: K) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Splits `host[:port]` (`[v6]:port` for IPv6); `None` for a malformed one.
fn split_host(host: &str) -> Option<(&str, Option<&str>)> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        let port = &host[end + 1..];
        if port.is_empty() {
            return Some((host, None));
        }
        return Some((&host[..=end], Some(port.strip_prefix(':')?)));
    }
    Some(match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    })
}

fn loopback_name(name: &str) -> bool {
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// Whether a `Host` header names this machine and the front's port.
fn local_host(host: &str, port: u16) -> bool {
    split_host(host).is_some_and(|(name, p)| {
        loopback_name(name) && p.is_none_or(|p| p.parse::<u16>().ok() == Some(port))
    })
}

/// Whether an `Origin` is a page served from this machine (any port: a local tool's page is
/// not a DNS-rebinding attack, and it still needs the token).
fn local_origin(origin: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .and_then(split_host)
        .is_some_and(|(name, port)| {
            loopback_name(name) && port.is_none_or(|p| p.parse::<u16>().is_ok())
        })
}

/// Compares without stopping at the first difference, so timing says nothing of the token.
fn same_token(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// Whether `Accept` takes `application/json`, and whether it takes `text/event-stream` (`*/*`
/// takes both), in one pass over its values.
fn accepted(h: &HeaderMap) -> (bool, bool) {
    let (mut json, mut sse) = (false, false);
    for v in &h.get_all(ACCEPT) {
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',') {
            match t.split(';').next().unwrap_or("").trim() {
                "*/*" => return (true, true),
                "application/json" => json = true,
                "text/event-stream" => sse = true,
                _ => {}
            }
        }
    }
    (json, sse)
}

impl Front {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let h = req.headers();
        // DNS rebinding: a page on another origin reaching 127.0.0.1 through a name of its own.
        if let Some(origin) = header(h, ORIGIN) {
            if !local_origin(origin) {
                warn!(origin, "HTTP request from a foreign origin refused");
                return plain(StatusCode::FORBIDDEN, "foreign Origin");
            }
        }
        if !header(h, HOST).is_some_and(|host| local_host(host, self.port)) {
            warn!(host = ?header(h, HOST), "HTTP request for a foreign Host refused");
            return plain(StatusCode::FORBIDDEN, "foreign Host");
        }
        let authorized = header(h, AUTHORIZATION)
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| same_token(t.trim().as_bytes(), self.token.as_bytes()));
        if !authorized {
            let mut r = plain(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (see `rmcp-mux status --json`, http.token_file)",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let version = header(h, MCP_PROTOCOL_VERSION);
        let modern_form = version.is_some_and(modern::is_modern);
        if let Some(v) = version.filter(|v| !modern_form && !VERSIONS.contains(v)) {
            let mut supported: Vec<&str> = VERSIONS.to_vec();
            supported.extend_from_slice(crate::jsonrpc::era::SUPPORTED);
            let data = serde_json::json!({"supported": supported, "requested": v});
            return rpc_error_with(
                StatusCode::BAD_REQUEST,
                "null",
                crate::jsonrpc::codes::UNSUPPORTED_PROTOCOL_VERSION,
                &format!("unsupported MCP-Protocol-Version {v}"),
                Some(data),
            );
        }
        let path = req.uri().path();
        let name = match path
            .strip_prefix('/')
            .and_then(|p| p.strip_suffix("/mcp"))
            .filter(|n| !n.is_empty() && !n.contains('/'))
        {
            Some(n) => n.to_owned(),
            None => return plain(StatusCode::NOT_FOUND, "not found; servers are at /NAME/mcp"),
        };
        let Some(target) = self.servers.target(&name) else {
            return plain(StatusCode::NOT_FOUND, &format!("no server `{name}`"));
        };
        if modern_form {
            // No sessions in this form: an Mcp-Session-Id is ignored, GET and DELETE have
            // nothing to act on.
            if *req.method() == Method::POST {
                return self.post_modern(req, name, target).await;
            }
            let mut r = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "the 2026-07-28 form takes POST only",
            );
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let session = match header(req.headers(), MCP_SESSION_ID) {
            Some(id) => match self.session(id, &name) {
                Some(s) => Some(s),
                None => return plain(StatusCode::NOT_FOUND, "no such session; initialize again"),
            },
            None => None,
        };
        match *req.method() {
            Method::POST => self.post(req, name, target, session).await,
            Method::GET => self.get(req.headers(), session),
            Method::DELETE => match session {
                Some(s) => {
                    debug!(session = %s.id, server = %name, "HTTP session deleted");
                    self.end(&s.id);
                    plain(StatusCode::OK, "")
                }
                None => plain(StatusCode::BAD_REQUEST, "Mcp-Session-Id required"),
            },
            _ => {
                let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE");
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                r
            }
        }
    }

    fn session(&self, id: &str, server: &str) -> Option<Arc<Session>> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.get(id).filter(|s| s.server == server).cloned()
    }

    /// Ends a session: its socket closes, so its router client is gone and what it was owed
    /// is forgotten (cancelled upstream) by the router's rules for a client that left.
    fn end(&self, id: &str) {
        let s = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(s) = s {
            s.ended.cancel();
        }
    }

    fn get(&self, h: &HeaderMap, session: Option<Arc<Session>>) -> Response<Body> {
        if !accepted(h).1 {
            return plain(StatusCode::NOT_ACCEPTABLE, "accept text/event-stream");
        }
        let Some(s) = session else {
            return plain(StatusCode::BAD_REQUEST, "Mcp-Session-Id required");
        };
        let rx = {
            let mut r = s.routes.lock().unwrap_or_else(PoisonError::into_inner);
            match header(h, LAST_EVENT_ID) {
                Some(last) => match event_id(last).and_then(|(n, seq)| r.resume(n, seq)) {
                    Some(rx) => {
                        debug!(session = %s.id, last, "HTTP stream resumed");
                        rx
                    }
                    None => {
                        debug!(session = %s.id, last, "HTTP stream not resumable");
                        return plain(
                            StatusCode::BAD_REQUEST,
                            "nothing to resume after that event",
                        );
                    }
                },
                None => match r.open_get() {
                    Ok(rx) => rx,
                    Err(_) => {
                        drop(r);
                        self.end(&s.id);
                        return plain(StatusCode::NOT_FOUND, "session ended");
                    }
                },
            }
        };
        let mut resp = sse(rx);
        set_session(&mut resp, &s.id);
        resp
    }

    async fn post(
        self: Arc<Self>,
        req: Request<Incoming>,
        name: String,
        target: Target,
        session: Option<Arc<Session>>,
    ) -> Response<Body> {
        let (head, body) = req.into_parts();
        let body = match read_body(&head.headers, body, &target).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(env) = Msg::parse(&body) else {
            return rpc_error(StatusCode::BAD_REQUEST, -32700, "not a JSON-RPC message");
        };
        // The socket carries one message per line; a newline in valid JSON is whitespace.
        let mut line = body.to_vec();
        for b in &mut line {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        line.push(b'\n');
        let is_request = env.method.is_some() && env.id.is_some();
        let initialize = env.method.as_deref() == Some("initialize");
        let session = match (session, initialize) {
            (Some(_), true) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    -32600,
                    "session already initialized",
                )
            }
            (Some(s), false) => s,
            (None, true) if is_request && target.full => {
                let max = target.max_clients;
                return rpc_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    -32603,
                    &format!("too many clients: server {name} allows {max}"),
                );
            }
            (None, true) if is_request => match self.open(&name, &target).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(server = %name, error = %e, "cannot open an HTTP session");
                    return rpc_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        -32603,
                        &format!("server {name} is not reachable"),
                    );
                }
            },
            (None, _) if modern::Params::read(env.params).version().is_some() => {
                // A 2026-07-28 request must say so in its headers.
                return rpc_error_with(
                    StatusCode::BAD_REQUEST,
                    env.id.unwrap_or("null"),
                    modern::HEADER_MISMATCH,
                    "MCP-Protocol-Version header missing",
                    None,
                );
            }
            (None, _) => {
                return rpc_error(StatusCode::BAD_REQUEST, -32600, "Mcp-Session-Id required")
            }
        };
        if !is_request {
            if env.method.as_deref() == Some("notifications/cancelled") {
                // The router answers nothing for a cancelled request: its stream ends here.
                if let Some(id) = cancelled_id(env.params) {
                    let mut r = session
                        .routes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(n) = r.pending.get(&id).copied() {
                        r.close(n);
                    }
                }
            }
            session
                .routes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last_active = Instant::now();
            if !session.write(&line).await {
                self.end(&session.id);
                return plain(StatusCode::NOT_FOUND, "session ended");
            }
            let mut r = plain(StatusCode::ACCEPTED, "");
            set_session(&mut r, &session.id);
            return r;
        }
        let id = env.id.unwrap_or("null").to_owned();
        let token = progress_token(env.params);
        let mut rx = {
            let mut r = session
                .routes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if r.pending.contains_key(&id) {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    -32600,
                    &format!("request id {id} is already in use"),
                );
            }
            if initialize {
                // The router refuses a client over max_active_clients with an error of id null.
                let rx = r.open(id.clone(), token, false);
                if let Some(n) = r.pending.get(&id).copied() {
                    r.pending.insert("null".into(), n);
                }
                rx
            } else {
                r.open(id, token, true)
            }
        };
        if !session.write(&line).await {
            self.end(&session.id);
            return plain(StatusCode::NOT_FOUND, "session ended");
        }
        if initialize {
            // Answered as JSON, so that a refusal is an HTTP error the host can show.
            let answer = tokio::select! {
                a = rx.recv() => a,
                () = session.ended.cancelled() => None,
            };
            session
                .routes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pending
                .remove("null");
            let refused = answer
                .as_ref()
                .is_none_or(|a| Msg::parse(a).and_then(|e| e.id).is_none_or(|i| i == "null"));
            if refused {
                self.end(&session.id);
                return match answer {
                    Some(a) => json(StatusCode::SERVICE_UNAVAILABLE, a),
                    None => rpc_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        -32603,
                        &format!("server {name} closed the session"),
                    ),
                };
            }
            info!(session = %session.id, server = %name, "HTTP session opened");
            let mut r = json(StatusCode::OK, answer.unwrap_or_default());
            set_session(&mut r, &session.id);
            return r;
        }
        let mut r = sse(rx);
        set_session(&mut r, &session.id);
        r
    }

    /// Opens a session: a connection to the server's socket, read by a task of its own.
    async fn open(self: &Arc<Self>, name: &str, target: &Target) -> std::io::Result<Arc<Session>> {
        let stream = UnixStream::connect(&target.socket).await?;
        let (read, write) = stream.into_split();
        let session = Arc::new(Session {
            id: token::random_hex(16)?,
            server: name.to_owned(),
            writer: tokio::sync::Mutex::new(Some(write)),
            routes: Mutex::new(Routes::new()),
            ended: self.shutdown.child_token(),
        });
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session.id.clone(), session.clone());
        // Lines up to the server's answer bound, plus room for the envelope.
        let lines = FramedRead::new(
            read,
            LinesCodec::new_with_max_length(target.max_response_bytes.saturating_add(4096)),
        );
        let s = session.clone();
        // Weak: a session's reader must not keep the front alive.
        let front = Arc::downgrade(self);
        self.tracker.spawn(async move {
            read_session(&s, lines).await;
            s.ended.cancel();
            if let Some(front) = front.upgrade() {
                let mut map = front
                    .sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if map.get(&s.id).is_some_and(|m| Arc::ptr_eq(m, &s)) {
                    map.remove(&s.id);
                }
            }
            // Dropping the writer closes the socket.
            s.writer.lock().await.take();
            let mut r = s.routes.lock().unwrap_or_else(PoisonError::into_inner);
            r.streams.clear();
            r.finished.clear();
            r.parked.clear();
            r.get = None;
            debug!(session = %s.id, "HTTP session closed");
        });
        Ok(session)
    }
}

/// Reads a session's socket until it closes, the session ends or it is stuck.
async fn read_session(
    s: &Session,
    mut lines: FramedRead<tokio::net::unix::OwnedReadHalf, LinesCodec>,
) {
    // One wait for the end, not one made (and registered) again for every line.
    let ended = s.ended.cancelled();
    tokio::pin!(ended);
    loop {
        let line = tokio::select! {
            () = &mut ended => return,
            l = lines.next() => l,
        };
        match line {
            Some(Ok(line)) => {
                let mut r = s.routes.lock().unwrap_or_else(PoisonError::into_inner);
                if !r.route(Bytes::from(line)) {
                    warn!(session = %s.id, server = %s.server, "HTTP session not reading its streams; ended");
                    return;
                }
            }
            Some(Err(e)) => {
                warn!(session = %s.id, error = %e, "HTTP session: bad line from the server; ended");
                return;
            }
            None => return,
        }
    }
}

impl Session {
    /// Writes one line to the server; `false` when the session has ended.
    async fn write(&self, line: &[u8]) -> bool {
        let mut w = self.writer.lock().await;
        match w.as_mut() {
            Some(w) => w.write_all(line).await.is_ok(),
            None => false,
        }
    }
}

fn set_session(r: &mut Response<Body>, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(MCP_SESSION_ID, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_hosts_and_origins_pass() {
        assert!(local_host("127.0.0.1:7311", 7311));
        assert!(local_host("localhost:7311", 7311));
        assert!(local_host("[::1]:7311", 7311));
        assert!(local_host("localhost", 7311));
        assert!(local_host("[::1]", 7311));
        assert!(!local_host("[::2]:7311", 7311));
        assert!(!local_host("[::1", 7311));
        assert!(!local_host("127.0.0.1:7312", 7311));
        assert!(!local_host("evil.example:7311", 7311));
        assert!(!local_host("127.0.0.1.evil.example", 7311));
        assert!(local_origin("http://localhost:3000"));
        assert!(local_origin("http://127.0.0.1"));
        assert!(local_origin("http://[::1]:8080"));
        assert!(!local_origin("http://evil.example"));
        assert!(!local_origin("http://localhost.evil.example:80"));
        assert!(!local_origin("null"));
        assert!(!local_origin("http://localhost:x@evil.example"));
    }

    /// The `data` of the next event on `rx` (priming events and comments skipped).
    fn data(rx: &mut mpsc::Receiver<Bytes>) -> Option<String> {
        loop {
            let e = String::from_utf8(rx.try_recv().ok()?.to_vec()).unwrap();
            if let Some(d) = e.lines().find_map(|l| l.strip_prefix("data: ")) {
                if !d.is_empty() {
                    return Some(d.to_owned());
                }
            }
        }
    }

    #[test]
    fn answers_go_to_their_stream_and_progress_to_its_request() {
        let mut r = Routes::new();
        let mut a = r.open("1".into(), Some("\"t1\"".into()), true);
        let mut b = r.open("2".into(), None, true);
        assert!(r.route(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t1","progress":1}}"#
        )));
        assert!(r.route(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":2,"result":{}}"#
        )));
        assert!(data(&mut a).unwrap().contains("notifications/progress"));
        assert!(data(&mut b).unwrap().ends_with("\"result\":{}}"));
        // b's stream ended with its answer; a server request now goes to the one still open.
        assert!(data(&mut b).is_none());
        assert!(r.route(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":0,"method":"sampling/createMessage","params":{}}"#
        )));
        assert!(data(&mut a).unwrap().ends_with("\"params\":{}}"));
        assert!(r.route(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#
        )));
        assert!(data(&mut a).is_some());
        // An answer whose request is gone goes nowhere, not to the GET stream.
        let mut get = r.open_get().unwrap();
        assert!(r.route(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#
        )));
        assert!(data(&mut get).is_none());
        drop(get);
        // No stream open: kept for the next GET, which gets it first.
        assert!(r.route(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#
        )));
        assert_eq!(r.backlog.len(), 1);
        assert!(!r.busy());
        let mut get = r.open_get().unwrap();
        assert!(data(&mut get).unwrap().contains("notifications/message"));
        assert!(r.busy());
    }

    #[tokio::test]
    async fn a_silent_stream_gets_a_keepalive_a_period_after_its_last_event() {
        let period = Duration::from_millis(100);
        let (tx, rx) = mpsc::channel(4);
        let mut body = sse_every(rx, period).into_body();
        let mut next = async || {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("a frame within 10 s");
            frame.map(|f| f.unwrap().into_data().unwrap())
        };
        let keepalive = Bytes::from_static(b": keepalive\n\n");
        let t0 = Instant::now();
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert_eq!(next().await.unwrap(), Bytes::from_static(b"a"));
        assert_eq!(next().await.unwrap(), keepalive);
        assert!(t0.elapsed() >= period, "not before a period of silence");
        // The stream waits (its timer set) while an event comes: the next comment is a
        // period after that event, not after the one before.
        assert!(
            tokio::time::timeout(period / 2, next()).await.is_err(),
            "nothing within half a period"
        );
        let t1 = Instant::now();
        tx.send(Bytes::from_static(b"b")).await.unwrap();
        assert_eq!(next().await.unwrap(), Bytes::from_static(b"b"));
        assert_eq!(next().await.unwrap(), keepalive);
        assert!(t1.elapsed() >= period, "a period after the last event");
        drop(tx);
        assert_eq!(next().await, None, "the stream ends with its queue");
    }

    #[test]
    fn events_name_their_stream_and_place() {
        assert_eq!(
            event(12, 345, b"{}"),
            Bytes::from_static(b"id: 12-345\nevent: message\ndata: {}\n\n")
        );
        assert_eq!(
            priming(u64::MAX),
            Bytes::from(format!("id: {}-0\nretry: {RETRY_MS}\ndata: \n\n", u64::MAX))
        );
        assert_eq!(event_id("12-345"), Some((12, 345)));
    }

    #[test]
    fn a_broken_stream_resumes_after_its_last_event() {
        let mut r = Routes::new();
        let a = r.open("7".into(), Some("7".into()), true);
        assert_eq!(event_id("1-0"), Some((1, 0)));
        let progress = |p: u32| {
            Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":7,"progress":{p}}}}}"#
            ))
        };
        assert!(r.route(progress(1)));
        // The client's connection breaks; what comes meanwhile is kept for it.
        drop(a);
        assert!(r.route(progress(2)));
        assert!(r.route(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":7,"result":{}}"#
        )));
        let mut again = r.resume(1, 1).expect("resumable");
        assert!(data(&mut again).unwrap().contains(r#""progress":2"#));
        assert!(data(&mut again).unwrap().contains(r#""id":7,"result""#));
        assert!(data(&mut again).is_none());
        // Nothing after the answer: the resumed stream stays open and empty (a client told
        // it ended would reconnect at once, again and again).
        let mut idle = r.resume(1, 3).expect("resumable");
        assert_eq!(
            idle.try_recv().unwrap(),
            Bytes::from_static(b": resumed\n\n")
        );
        assert_eq!(
            idle.try_recv(),
            Err(mpsc::error::TryRecvError::Empty),
            "open, nothing in it"
        );
        assert!(r.resume(9, 0).is_none());
    }
}
