//! The front's 2026-07-28 form: no session, one POST per request.
//!
//! A POST whose `MCP-Protocol-Version` names a 2026-07-28-era version is served on a connection
//! of its own to the server's socket: to the router it is a short-lived client whose first
//! message is an enveloped request, so every rule for modern clients applies (envelope checks,
//! `server/discover` answered by the mux, sampling, elicitation and roots turned into input
//! requests, `subscriptions/listen` emulated, logs only to the request that asked). The answer
//! is one JSON object when it comes before anything else does (so an error gets the HTTP
//! status the spec gives its code), otherwise an SSE stream of the request's notifications
//! ending with the answer. Closing that stream cancels the request: the connection closes and
//! the router forgets what the client had in flight.
//!
//! An `input_required` answer keeps its connection: the router holds the child's request for
//! that client, so the retry must come back on the same connection. The front parks it under
//! a random key, given to the client as the `requestState`, and a retry carrying that key is
//! sent on the parked connection with the original `requestState` restored.
//!
//! The headers that mirror the body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) must
//! agree with it, or the answer is 400 with `HeaderMismatch` (-32020).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};
use tracing::{debug, warn};

use super::{
    json, plain, read_body, rpc_error, rpc_error_with, sse, token, Body, Front, Msg, Target,
    STREAM_QUEUE,
};
use crate::jsonrpc::{codes, era};

/// The `HeaderMismatch` code of the 2026-07-28 Streamable HTTP transport: a header that
/// mirrors the body is missing, malformed or says something else.
pub const HEADER_MISMATCH: i64 = -32020;
/// A missing required client capability (2026-07-28): answered 400 like the other request
/// errors.
const MISSING_CAPABILITY: i64 = -32021;

/// How long an answer may take before the front commits to an SSE stream (whose keep-alive
/// comments then hold the connection open behind proxies with idle timeouts).
pub const COMMIT: Duration = Duration::from_secs(15);
/// How long a connection waits for the retry of its `input_required` answer.
pub const PARKED_FOR: Duration = Duration::from_secs(10 * 60);
/// How many connections may wait for a retry at once; past that the oldest is closed.
const PARKED_MAX: usize = 256;

/// The methods whose `params.name` or `params.uri` the `Mcp-Name` header mirrors.
const NAME_BEARING: &[(&str, &str)] = &[
    ("tools/call", "name"),
    ("prompts/get", "name"),
    ("resources/read", "uri"),
];

/// Whether an `MCP-Protocol-Version` header selects this form.
pub fn is_modern(version: &str) -> bool {
    era::SUPPORTED.contains(&version)
}

/// The HTTP status of an answer sent as one JSON object, from its error code (the table of
/// the 2026-07-28 transport: request errors 400, an unknown method 404, the rest 200).
pub fn status_of(code: Option<i64>) -> StatusCode {
    match code {
        Some(
            codes::PARSE_ERROR
            | codes::INVALID_REQUEST
            | codes::INVALID_PARAMS
            | HEADER_MISMATCH
            | MISSING_CAPABILITY
            | codes::UNSUPPORTED_PROTOCOL_VERSION,
        ) => StatusCode::BAD_REQUEST,
        Some(codes::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// The parts of a request's `params` the headers mirror, and the retry's `requestState`.
#[derive(Deserialize, Default)]
pub struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    uri: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "requestState")]
    pub request_state: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "_meta")]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(borrow, default, rename = "io.modelcontextprotocol/protocolVersion")]
    version: Option<&'a RawValue>,
}

impl<'a> Params<'a> {
    /// Reads `params` (absent or not an object: nothing in it).
    pub fn read(params: Option<&'a str>) -> Params<'a> {
        params
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default()
    }

    /// The body's protocol version, when it is a string.
    pub fn version(&self) -> Option<String> {
        string(self.meta.as_ref()?.version?)
    }
}

fn string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

/// Checks the headers that mirror the body; the `HeaderMismatch` message when they do not
/// agree with it.
pub fn check_headers(h: &HeaderMap, method: &str, params: &Params<'_>) -> Result<(), String> {
    for name in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
        if h.get_all(name).iter().count() > 1 {
            return Err(format!("{name} header appears more than once"));
        }
    }
    let text = |name: &str| -> Result<Option<&str>, String> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .map_err(|_| format!("{name} header has invalid characters")),
        }
    };
    let version = text("mcp-protocol-version")?;
    if version.is_none() || version.map(str::to_owned) != params.version() {
        return Err(
            "MCP-Protocol-Version header does not match the request's protocol version".into(),
        );
    }
    if text("mcp-method")? != Some(method) {
        return Err(format!(
            "Mcp-Method header does not match the request's method {method}"
        ));
    }
    if let Some((_, key)) = NAME_BEARING.iter().find(|(m, _)| *m == method) {
        let body = if *key == "name" {
            params.name
        } else {
            params.uri
        };
        if let Some(body) = body.filter(|b| b.get() != "null") {
            let header = text("mcp-name")?.map(decode_header_value);
            let matches = match (header, string(body)) {
                (Some(Some(h)), Some(b)) => h == b,
                _ => false,
            };
            if !matches {
                return Err(format!(
                    "Mcp-Name header does not match the request's {key}"
                ));
            }
        }
    }
    Ok(())
}

/// A header value as sent: plain, or `=?base64?…?=` (the sentinel form for values that are not
/// plain ASCII). `None` for a sentinel whose content is not base64 of UTF-8.
pub fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(b64) => String::from_utf8(base64(b64)?).ok(),
        None => Some(value.to_owned()),
    }
}

/// Standard base64 with padding (what the sentinel form uses).
fn base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for c in &chunk[..4 - pad] {
            n = (n << 6) | value(*c)?;
        }
        n <<= 6 * pad as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Some(out)
}

/// A connection to a server's socket, read line by line.
pub struct Conn {
    pub lines: FramedRead<OwnedReadHalf, LinesCodec>,
    pub write: OwnedWriteHalf,
}

/// A connection waiting for the retry of the request it answered `input_required`.
struct Parked {
    conn: Conn,
    server: String,
    /// The `requestState` the router (or the child) gave, restored in the retry.
    state: Box<RawValue>,
    since: Instant,
}

/// The parked connections, by the key their client was given as `requestState`.
#[derive(Default)]
pub struct ParkedConns {
    by_key: HashMap<String, Parked>,
}

impl ParkedConns {
    /// Parks `conn` of server `server`, whose answer gave `state`; the key the client gets.
    pub fn park(&mut self, key: String, server: &str, state: Box<RawValue>, conn: Conn) {
        if self.by_key.len() >= PARKED_MAX {
            if let Some(oldest) = self
                .by_key
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(k, _)| k.clone())
            {
                self.by_key.remove(&oldest);
            }
        }
        self.by_key.insert(
            key,
            Parked {
                conn,
                server: server.to_owned(),
                state,
                since: Instant::now(),
            },
        );
    }

    /// The connection parked under `key` for server `server`, with the original
    /// `requestState`.
    pub fn take(&mut self, key: &str, server: &str) -> Option<(Conn, Box<RawValue>)> {
        if self.by_key.get(key)?.server != server {
            return None;
        }
        self.by_key.remove(key).map(|p| (p.conn, p.state))
    }

    /// Closes the connections that waited longer than [`PARKED_FOR`] (their router client
    /// leaves, and the child's held request gets an error).
    pub fn expire(&mut self) {
        self.by_key.retain(|_, p| p.since.elapsed() < PARKED_FOR);
    }

    /// Closes them all.
    pub fn clear(&mut self) {
        self.by_key.clear();
    }
}

/// An answer line that asks for input: its `requestState` (raw), when it has one.
pub fn input_required_state(line: &[u8]) -> Option<Box<RawValue>> {
    // Most answers are not: without the word, and without an escape that could spell it,
    // there is nothing to parse.
    if memchr::memchr(b'\\', line).is_none()
        && memchr::memmem::find(line, b"input_required").is_none()
    {
        return None;
    }
    #[derive(Deserialize)]
    struct Answer {
        result: Option<Result_>,
    }
    #[derive(Deserialize)]
    struct Result_ {
        #[serde(rename = "resultType")]
        kind: Option<String>,
        #[serde(rename = "requestState")]
        state: Option<Box<RawValue>>,
    }
    let a: Answer = serde_json::from_slice(line).ok()?;
    let r = a.result?;
    if r.kind.as_deref() != Some("input_required") {
        return None;
    }
    r.state
}

/// `line` (a JSON object) with `path`'s last member set to `value`; `None` when `line` is not
/// an object with that path.
pub fn replace_member(line: &[u8], path: &[&str], value: serde_json::Value) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let (last, parents) = path.split_last()?;
    let mut at = &mut v;
    for p in parents {
        at = at.get_mut(*p)?;
    }
    at.as_object_mut()?.insert((*last).to_owned(), value);
    serde_json::to_vec(&v).ok()
}

/// One SSE event of the 2026-07-28 form: no id (its streams are not resumable).
pub fn event(msg: &[u8]) -> Bytes {
    let mut e = Vec::with_capacity(msg.len() + 24);
    e.extend_from_slice(b"event: message\ndata: ");
    e.extend_from_slice(msg);
    e.extend_from_slice(b"\n\n");
    Bytes::from(e)
}

/// A line to the socket: one message per line (a newline in valid JSON is whitespace).
fn to_line(body: &[u8]) -> Vec<u8> {
    let mut line: Vec<u8> = body
        .iter()
        .map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b })
        .collect();
    line.push(b'\n');
    line
}

/// Whether a line from the socket is an answer (no method), and whether its id is null (the
/// router refusing the connection).
fn answer_kind(line: &[u8]) -> Option<bool> {
    let env = Msg::parse(line)?;
    env.method
        .is_none()
        .then(|| env.id.is_none_or(|i| i == "null"))
}

/// The error code of an answer line, if it is an error.
fn error_code(line: &[u8]) -> Option<i64> {
    if crate::jsonrpc::parse_one(line).is_ok_and(|e| e.error.is_none()) {
        // Most answers are results: nothing more to read.
        return None;
    }
    #[derive(Deserialize)]
    struct Answer {
        error: Option<Code>,
    }
    #[derive(Deserialize)]
    struct Code {
        code: i64,
    }
    serde_json::from_slice::<Answer>(line)
        .ok()?
        .error
        .map(|e| e.code)
}

impl Front {
    /// A POST of the 2026-07-28 form: checked, written on a connection of its own (or the one
    /// parked for the retry it is), answered as JSON or as an SSE stream.
    pub(super) async fn post_modern(
        self: Arc<Self>,
        req: Request<Incoming>,
        name: String,
        target: Target,
    ) -> Response<Body> {
        let (head, body) = req.into_parts();
        let h = head.headers;
        let body = match read_body(&h, body, &target).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(env) = Msg::parse(&body) else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                codes::PARSE_ERROR,
                "not a JSON-RPC message",
            );
        };
        let Some(method) = env.method.as_deref().map(str::to_owned) else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                codes::INVALID_REQUEST,
                "send a request or a notification",
            );
        };
        let Some(id) = env.id.map(str::to_owned) else {
            // This form has no client notification: cancelling is closing the request's
            // stream. One sent anyway is accepted and dropped (it could otherwise name
            // another client's request).
            return plain(StatusCode::ACCEPTED, "");
        };
        let params = Params::read(env.params);
        if let Err(msg) = check_headers(&h, &method, &params) {
            debug!(server = %name, %method, msg, "2026-07-28 request: header mismatch");
            return rpc_error_with(StatusCode::BAD_REQUEST, &id, HEADER_MISMATCH, &msg, None);
        }
        let key = params.request_state.and_then(string);
        drop(env);
        let retry = key.and_then(|k| {
            self.parked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(&k, &name)
        });
        let (conn, line) = match retry {
            Some((conn, state)) => {
                let state = serde_json::from_str(state.get()).unwrap_or_default();
                let body = replace_member(&body, &["params", "requestState"], state)
                    .unwrap_or_else(|| body.to_vec());
                (Some(conn), to_line(&body))
            }
            None => (None, to_line(&body)),
        };
        let mut conn = match conn {
            Some(c) => c,
            // A retry's connection is a client already; a new one may be one too many.
            None if target.full => {
                let max = target.max_clients;
                return rpc_error_with(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &id,
                    codes::INTERNAL_ERROR,
                    &format!("too many clients: server {name} allows {max}"),
                    None,
                );
            }
            None => match connect(&target).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(server = %name, error = %e, "cannot reach a server for an HTTP request");
                    return rpc_error_with(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &id,
                        codes::INTERNAL_ERROR,
                        &format!("server {name} is not reachable"),
                        None,
                    );
                }
            },
        };
        let unreachable = || {
            rpc_error_with(
                StatusCode::SERVICE_UNAVAILABLE,
                &id,
                codes::INTERNAL_ERROR,
                &format!("server {name} closed the connection"),
                None,
            )
        };
        if conn.write.write_all(&line).await.is_err() {
            return unreachable();
        }
        // JSON when the answer comes first (its status then follows its error code), an
        // SSE stream as soon as anything else comes or the answer takes long.
        let first = tokio::select! {
            l = conn.lines.next() => Some(l),
            () = tokio::time::sleep(COMMIT) => None,
            () = self.shutdown.cancelled() => return unreachable(),
        };
        let first = match first {
            Some(Some(Ok(line))) => Some(line),
            Some(_) => return unreachable(),
            None => None,
        };
        if let Some(line) = &first {
            match answer_kind(line.as_bytes()) {
                Some(true) => {
                    // The router refused the connection (too many clients, stopped).
                    return json(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(line.clone()));
                }
                Some(false) => {
                    let status = status_of(error_code(line.as_bytes()));
                    let out = self.finish(line.as_bytes(), &name, conn);
                    return json(status, Bytes::from(out));
                }
                None => {}
            }
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        if let Some(line) = first {
            // A fresh queue has room.
            let _ = tx.try_send(event(line.as_bytes()));
        }
        let front = self.clone();
        self.tracker.spawn(async move {
            loop {
                let line = tokio::select! {
                    // The client closed the stream: the request is cancelled (the connection
                    // closes, and the router forgets what its client had in flight).
                    () = tx.closed() => return,
                    () = front.shutdown.cancelled() => return,
                    l = conn.lines.next() => l,
                };
                let Some(Ok(line)) = line else { return };
                if answer_kind(line.as_bytes()).is_some() {
                    let out = front.finish(line.as_bytes(), &name, conn);
                    let _ = tx.send(event(&out)).await;
                    return;
                }
                if tx.send(event(line.as_bytes())).await.is_err() {
                    return;
                }
            }
        });
        let mut r = sse(rx);
        r.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    }

    /// The answer as the client gets it. An `input_required` answer parks its connection for
    /// the retry and carries the key to it as its `requestState`; any other closes it.
    fn finish(&self, line: &[u8], name: &str, conn: Conn) -> Vec<u8> {
        let Some(state) = input_required_state(line) else {
            return line.to_vec();
        };
        let Ok(key) = token::random_hex(16) else {
            return line.to_vec();
        };
        let Some(out) = replace_member(line, &["result", "requestState"], key.clone().into())
        else {
            return line.to_vec();
        };
        self.parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .park(key, name, state, conn);
        out
    }
}

/// A new connection to a server's socket.
async fn connect(target: &Target) -> std::io::Result<Conn> {
    let (read, write) = UnixStream::connect(&target.socket).await?.into_split();
    // Lines up to the server's answer bound, plus room for the envelope.
    let lines = FramedRead::new(
        read,
        LinesCodec::new_with_max_length(target.max_response_bytes.saturating_add(4096)),
    );
    Ok(Conn { lines, write })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const CALL: &str = r#"{"name":"get_weather","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}"#;

    fn params(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn headers_must_mirror_the_body() {
        let p = params(CALL);
        let p = Params::read(Some(p.get()));
        let good = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "get_weather"),
        ];
        assert_eq!(check_headers(&headers(&good), "tools/call", &p), Ok(()));
        let b64 = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Z2V0X3dlYXRoZXI=?="),
        ];
        assert_eq!(check_headers(&headers(&b64), "tools/call", &p), Ok(()));
        for (bad, why) in [
            (&good[1..], "version missing"),
            (&[good[0], good[2]][..], "method missing"),
            (&good[..2], "name missing"),
            (
                &[good[0], ("mcp-method", "tools/list"), good[2]][..],
                "method differs",
            ),
            (
                &[("mcp-protocol-version", "2025-11-25"), good[1], good[2]][..],
                "version differs",
            ),
            (&[good[0], good[1], ("mcp-name", "foo")][..], "name differs"),
            (
                &[good[0], good[1], good[2], ("mcp-method", "tools/call")][..],
                "method twice",
            ),
            (
                &[good[0], good[1], ("mcp-name", "=?base64?!!?=")][..],
                "bad base64",
            ),
        ] {
            assert!(
                check_headers(&headers(bad), "tools/call", &p).is_err(),
                "{why}"
            );
        }
        // A body without the envelope's version never matches a header.
        let bare = params(r#"{"name":"x"}"#);
        assert!(check_headers(
            &headers(&good),
            "tools/call",
            &Params::read(Some(bare.get()))
        )
        .is_err());
        // Methods that name nothing need no Mcp-Name.
        let list = params(r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#);
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ]);
        assert_eq!(
            check_headers(&h, "tools/list", &Params::read(Some(list.get()))),
            Ok(())
        );
    }

    #[test]
    fn base64_sentinels_decode() {
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            decode_header_value("=?base64?IHBhZGRlZCA=?=").as_deref(),
            Some(" padded ")
        );
        assert_eq!(decode_header_value("us-west1").as_deref(), Some("us-west1"));
        assert_eq!(decode_header_value("=?base64?abc?="), None);
        assert_eq!(decode_header_value("=?base64?YQ==YQ==?="), None);
    }

    #[test]
    fn statuses_follow_the_error_code() {
        assert_eq!(status_of(None), StatusCode::OK);
        assert_eq!(status_of(Some(-32601)), StatusCode::NOT_FOUND);
        assert_eq!(status_of(Some(-32022)), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(Some(HEADER_MISMATCH)), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(Some(-32603)), StatusCode::OK);
    }

    #[test]
    fn input_required_answers_give_their_state() {
        let line = br#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required","inputRequests":{},"requestState":"s-1"}}"#;
        assert_eq!(input_required_state(line).unwrap().get(), r#""s-1""#);
        let done =
            br#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"complete","requestState":"s-1"}}"#;
        assert!(input_required_state(done).is_none());
        let out = replace_member(line, &["result", "requestState"], "k".into()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["requestState"], "k");
        assert_eq!(v["id"], 3);
    }
}
