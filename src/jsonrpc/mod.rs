//! The JSON-RPC envelope: classify a line, find its id, method and the few fields the router
//! rewrites, and splice new values into the original bytes.
//!
//! Only the envelope is parsed: payloads stay borrowed [`Raw`] slices of the line they came in,
//! and a rewrite copies a small line once with the new id or token spliced in, while a large
//! one keeps sharing the original's buffer around the edits ([`Line`]). This module does no
//! I/O and never re-serializes a payload it did not have to look into.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod era;
pub mod framing;
mod line;
mod scan;

pub use line::Line;

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// JSON-RPC error codes the mux itself answers with, kept in one place so tests and clients agree.
pub mod codes {
    /// The line was not JSON at all.
    pub const PARSE_ERROR: i64 = -32700;
    /// Valid JSON that is not a JSON-RPC message, or a line over the size bound.
    pub const INVALID_REQUEST: i64 = -32600;
    /// A method the mux will not forward (for example `ping` in a 2026-07-28 request).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Parameters that name something the client may not touch (another client's task).
    pub const INVALID_PARAMS: i64 = -32602;
    /// The mux could not get an answer from the server (exit, timeout, unavailable, limits).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A modern request names a protocol version the mux does not serve (2026-07-28 era;
    /// `data: {supported, requested}`).
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// The handshake era's "resource not found", which the modern era folds into
    /// [`INVALID_PARAMS`]: rewritten on the way to a modern client.
    pub const RESOURCE_NOT_FOUND_HANDSHAKE: i64 = -32002;
}

/// `data.reason` strings of the mux's own errors, so tools can react without parsing messages.
pub mod reasons {
    /// The child exited while the request was in flight.
    pub const UPSTREAM_EXITED: &str = "upstream_exited";
    /// The request ran past `request_timeout_ms`.
    pub const UPSTREAM_TIMEOUT: &str = "upstream_timeout";
    /// The server is stopped or failed (restart limit reached).
    pub const SERVER_UNAVAILABLE: &str = "server_unavailable";
    /// The socket already has `max_active_clients` connections.
    pub const TOO_MANY_CLIENTS: &str = "too_many_clients";
    /// A server shared per project or per client runs `max_instances` children already.
    pub const TOO_MANY_INSTANCES: &str = "too_many_instances";
    /// A server→client request found no connected client that declared the capability.
    pub const NO_CAPABLE_CLIENT: &str = "no_capable_client";
    /// The client that was asked disconnected before it answered.
    pub const CLIENT_GONE: &str = "client_gone";
    /// The line was longer than the configured bound.
    pub const TOO_LARGE: &str = "message_too_large";
    /// The server's answer, passed on while it arrived, turned out cut off or not valid
    /// JSON-RPC (the client got the part before the cut, as its own line).
    pub const BROKEN_ANSWER: &str = "upstream_answer_broken";
    /// A modern client's retry carried a `requestState` the mux did not mint for it, or one
    /// that ended (answered, timed out, or the child restarted).
    pub const UNKNOWN_REQUEST_STATE: &str = "unknown_request_state";
    /// A modern client retried without answering the request it was asked.
    pub const NO_INPUT_RESPONSE: &str = "no_input_response";
    /// A server asked a handshake-era client's request for input more often than the mux
    /// drives (or where it cannot).
    pub const INPUT_ROUNDS: &str = "too_many_input_rounds";
    /// The server's protocol era was still being found out and too many lines already
    /// waited for it ([`crate::mux::router::MAX_AWAITING_ERA_LINES`]).
    pub const ERA_QUEUE_FULL: &str = "era_queue_full";
}

/// What kind of JSON-RPC message a line holds; decides which routing rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id: expects exactly one response.
    Request,
    /// Has a method and no id: no response.
    Notification,
    /// Has an id and `result`.
    Response,
    /// Has an id (possibly null) and `error`.
    Error,
}

/// Why a line could not be taken as a JSON-RPC message; decides between -32700 and -32600.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not JSON at all (or truncated).
    Parse,
    /// JSON, but not a JSON-RPC 2.0 message.
    Invalid,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// One JSON value exactly as written, borrowed from its line (valid JSON, no surrounding
/// whitespace). Like serde_json's `RawValue`, but it can be made by the fast scanner too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// The JSON text.
    pub fn get(self) -> &'a str {
        self.0
    }
}

impl<'a> From<&'a RawValue> for Raw<'a> {
    fn from(v: &'a RawValue) -> Self {
        Raw(v.get())
    }
}

/// A parsed envelope borrowing from its line; everything else stays unparsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The kind of message.
    pub kind: Kind,
    /// The id exactly as written (`1` and `"1"` differ); `None` for notifications and null ids.
    pub id: Option<Raw<'a>>,
    /// The method of a request or notification.
    pub method: Option<Cow<'a, str>>,
    /// The params, unparsed.
    pub params: Option<Raw<'a>>,
    /// The result of a response, unparsed.
    pub result: Option<Raw<'a>>,
    /// The error of an error response, unparsed.
    pub error: Option<Raw<'a>>,
    /// [`request_meta`] of the params, found while they were parsed: a request's params are
    /// scanned once, not once to validate and again to read.
    pub meta: RequestMeta<'a>,
}

/// A line is either one message or a batch (an array, 2025-03-26 only).
pub enum Parsed<'a> {
    /// One message.
    Single(Envelope<'a>),
    /// The elements of a batch, each still raw.
    Batch(Vec<Raw<'a>>),
}

/// Classifies and parses one line (without its newline).
///
/// # Errors
/// [`Malformed::Parse`] when the line is not JSON, [`Malformed::Invalid`] when it is JSON but not
/// a JSON-RPC 2.0 message.
pub fn parse(line: &[u8]) -> Result<Parsed<'_>, Malformed> {
    let first = line.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return match serde_json::from_slice::<Vec<&RawValue>>(line) {
            Ok(items) => Ok(Parsed::Batch(items.into_iter().map(Raw::from).collect())),
            Err(e) => Err(classify(&e, line)),
        };
    }
    parse_one(line).map(Parsed::Single)
}

/// Parses one message (not a batch).
///
/// Plainly well-formed lines (the common case) take the one-pass scanner of `scan.rs`, which
/// skips string bodies with memchr; everything else goes through serde_json, which decides
/// between [`Malformed::Parse`] and [`Malformed::Invalid`] exactly as before.
///
/// # Errors
/// As [`parse`].
pub fn parse_one(line: &[u8]) -> Result<Envelope<'_>, Malformed> {
    match scan::envelope(line) {
        Some(f) => envelope(
            f.jsonrpc,
            f.id.map(Raw),
            f.method.map(Cow::Borrowed),
            f.params.map(Raw),
            f.result.map(Raw),
            f.error.map(Raw),
            f.params_meta
                .map_or_else(|| request_meta(f.params.map(Raw)), meta_of),
        ),
        None => parse_one_serde(line),
    }
}

/// [`parse_one`] through serde_json alone: the fallback, and the reference the scanner is
/// tested against.
///
/// # Errors
/// As [`parse`].
pub fn parse_one_serde(line: &[u8]) -> Result<Envelope<'_>, Malformed> {
    let raw: RawEnvelope<'_> = serde_json::from_slice(line).map_err(|e| classify(&e, line))?;
    envelope(
        raw.jsonrpc.as_deref(),
        raw.id.map(Raw::from),
        raw.method,
        raw.params.map(Raw::from),
        raw.result.map(Raw::from),
        raw.error.map(Raw::from),
        request_meta_serde(raw.params.map(Raw::from)),
    )
}

/// The JSON-RPC rules on top of the members found (by either parser).
fn envelope<'a>(
    jsonrpc: Option<&str>,
    id: Option<Raw<'a>>,
    method: Option<Cow<'a, str>>,
    params: Option<Raw<'a>>,
    result: Option<Raw<'a>>,
    error: Option<Raw<'a>>,
    meta: RequestMeta<'a>,
) -> Result<Envelope<'a>, Malformed> {
    if jsonrpc != Some("2.0") {
        return Err(Malformed::Invalid);
    }
    let id = id.filter(|v| v.get() != "null");
    if let Some(id) = id {
        let b = id.get().as_bytes()[0];
        if !(b == b'"' || b == b'-' || b.is_ascii_digit()) {
            return Err(Malformed::Invalid);
        }
    }
    let kind = match (&method, id, result, error) {
        (Some(_), Some(_), None, None) => Kind::Request,
        (Some(_), None, None, None) => Kind::Notification,
        (None, Some(_), Some(_), None) => Kind::Response,
        (None, _, None, Some(_)) => Kind::Error,
        _ => return Err(Malformed::Invalid),
    };
    Ok(Envelope {
        kind,
        id,
        method,
        params,
        result,
        error,
        meta,
    })
}

fn classify(e: &serde_json::Error, line: &[u8]) -> Malformed {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => Malformed::Parse,
        // A type mismatch can still hide a syntax error later in the line: only call it
        // "not JSON-RPC" when the whole line is valid JSON.
        Category::Data => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
                Malformed::Invalid
            } else {
                Malformed::Parse
            }
        }
    }
}

/// The byte range of `inner` (a sub-slice borrowed from `line`) within `line`.
///
/// # Panics
/// Panics when `inner` does not point into `line`: a programming error, never input-driven.
pub fn span_in(line: &[u8], inner: &str) -> Range<usize> {
    let start = (inner.as_ptr() as usize)
        .checked_sub(line.as_ptr() as usize)
        .expect("span_in: value does not borrow from the line");
    assert!(
        start + inner.len() <= line.len(),
        "span_in: value outside the line"
    );
    start..start + inner.len()
}

/// Builds a new line from `line` with each range replaced; ranges must not overlap.
/// One allocation, one copy of the untouched bytes.
pub fn splice(line: &[u8], edits: &mut [(Range<usize>, &[u8])]) -> Bytes {
    edits.sort_by_key(|(r, _)| r.start);
    let added: usize = edits.iter().map(|(_, b)| b.len()).sum();
    let removed: usize = edits.iter().map(|(r, _)| r.len()).sum();
    let mut out = Vec::with_capacity(line.len() + added - removed.min(line.len() + added));
    let mut at = 0;
    for (range, bytes) in edits.iter() {
        out.extend_from_slice(&line[at..range.start]);
        out.extend_from_slice(bytes);
        at = range.end;
    }
    out.extend_from_slice(&line[at..]);
    Bytes::from(out)
}

/// The mux's id of a long answer that is still arriving, and where it is in `head` (the line
/// so far), when the id comes before the payload: the daemon can then pass the answer on as
/// it arrives instead of holding all of it (`crate::mux::actor`). `None` for any other shape.
pub fn answer_head(head: &[u8]) -> Option<(u64, Range<usize>)> {
    scan::answer_head(head)
}

/// `n` in decimal, written into `buf`: the router splices an upstream id into every request,
/// and `to_string` allocated for each one.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Reads an id or token the mux issued (a plain non-negative JSON integer).
pub fn as_u64(raw: Raw<'_>) -> Option<u64> {
    let s = raw.get();
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

#[derive(Deserialize)]
struct ParamsMeta<'a> {
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<Meta<'a>>,
    #[serde(borrow, default)]
    task: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "progressToken", borrow, default)]
    progress_token: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ParamsMetaRaw<'a> {
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<&'a RawValue>,
}

/// What the router needs from a client request's params: its progress token and whether it
/// asks for a task (2025-11-25 task-augmented requests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestMeta<'a> {
    /// `params._meta.progressToken`, raw.
    pub progress_token: Option<Raw<'a>>,
    /// Whether `params.task` is present.
    pub task: bool,
    /// `params._meta` when it is an object, raw: where a 2026-07-28 request carries its
    /// envelope (see [`era`]).
    pub meta: Option<Raw<'a>>,
    /// The envelope's members in `_meta`, found by the same scan (none unless `_meta` has the
    /// protocol version's key, as written): every modern request's `_meta` is read once.
    pub envelope: era::Members<'a>,
    /// Whether `_meta` has a member a handshake-era child gets besides a progress token (one
    /// not named `io.modelcontextprotocol/*`, or a `null` token): without one, the envelope
    /// is stripped without another scan ([`era::strip`]).
    pub foreign: bool,
}

/// Extracts [`RequestMeta`] from raw params; absent or odd params yield the default.
/// Plain params take the scanner's fast path; the rest goes through serde_json.
pub fn request_meta(params: Option<Raw<'_>>) -> RequestMeta<'_> {
    let Some(params) = params else {
        return RequestMeta::default();
    };
    if !params.get().starts_with('{') {
        return RequestMeta::default();
    }
    // Most requests carry neither member: without the two names right after a quote (and
    // without escapes, which could spell them otherwise) there is nothing to find. Hopping
    // from quote to quote through short params is cheaper than a scan of them; long params
    // are scanned at once (one pass: three searches through a 1 MiB argument for a backslash
    // and the two names were a quarter of the daemon's time on a 1 MiB request).
    let bytes = params.get().as_bytes();
    let maybe = bytes.len() > 256 || {
        let mut at = 0;
        loop {
            match scan::quote_or_escape(bytes, at) {
                None => break false,
                Some(i) if bytes[i] == b'\\' => break true,
                Some(i) => {
                    let rest = &bytes[i + 1..];
                    if rest.starts_with(b"_meta\"") || rest.starts_with(b"task\"") {
                        break true;
                    }
                    at = i + 1;
                }
            }
        }
    };
    if !maybe {
        return RequestMeta::default();
    }
    match scan::request_meta(params.get()) {
        Some(m) => meta_of(m),
        None => request_meta_serde(Some(params)),
    }
}

/// The [`RequestMeta`] of what the scanner found.
fn meta_of(m: scan::Meta<'_>) -> RequestMeta<'_> {
    // Members without a version are no envelope: none of them is kept.
    let envelope = if m.envelope[0].is_some() {
        m.envelope
    } else {
        [None; 3]
    };
    let [version, capabilities, log_level] = envelope.map(|v| v.map(Raw));
    RequestMeta {
        progress_token: m.token.map(Raw),
        task: m.task,
        meta: m.meta.map(Raw),
        envelope: era::Members {
            version,
            capabilities,
            log_level,
        },
        foreign: m.foreign,
    }
}

/// [`request_meta`] through serde_json alone: the fallback, and the scanner's reference.
pub fn request_meta_serde(params: Option<Raw<'_>>) -> RequestMeta<'_> {
    let Some(params) = params else {
        return RequestMeta::default();
    };
    if !params.get().starts_with('{') {
        return RequestMeta::default();
    }
    let meta = serde_json::from_str::<ParamsMetaRaw<'_>>(params.get())
        .ok()
        .and_then(|p| p.meta)
        .filter(|m| m.get().starts_with('{'))
        .map(Raw::from);
    match serde_json::from_str::<ParamsMeta<'_>>(params.get()) {
        Ok(p) => {
            let progress_token = p
                .meta
                .and_then(|m| m.progress_token)
                .filter(|t| t.get() != "null")
                .map(Raw::from);
            let (envelope, foreign) = meta.map(era::members_serde).unwrap_or_default();
            RequestMeta {
                progress_token,
                task: p.task.is_some(),
                meta,
                envelope,
                foreign,
            }
        }
        Err(_) => RequestMeta::default(),
    }
}

/// Reads one raw field of a JSON object (borrowed), or `None`; of a name written twice, the
/// last, as serde_json reads it. One scan of the object without building a map (each modern
/// request's capabilities are read this way); escaped names go to [`field_serde`].
pub fn field<'a>(object: Option<Raw<'a>>, name: &str) -> Option<Raw<'a>> {
    let text = object?.get();
    if !text.starts_with('{') {
        return None;
    }
    let mut found = None;
    match scan::each_member(text, |key, _, value| {
        if key == name {
            found = Some(value);
        }
        Some(())
    }) {
        Some(()) => found.map(|v| Raw(&text[v])),
        None => field_serde(object, name),
    }
}

/// [`field`] through serde_json alone: the fallback, and the scanner's reference.
pub fn field_serde<'a>(object: Option<Raw<'a>>, name: &str) -> Option<Raw<'a>> {
    let object = object?;
    if !object.get().starts_with('{') {
        return None;
    }
    let map: std::collections::HashMap<Cow<'a, str>, &'a RawValue> =
        serde_json::from_str(object.get()).ok()?;
    map.get(name).copied().map(Raw::from)
}

/// Reads a string field of a JSON object.
pub fn str_field(object: Option<Raw<'_>>, name: &str) -> Option<String> {
    serde_json::from_str::<String>(field(object, name)?.get()).ok()
}

/// A response line `{"jsonrpc":"2.0","id":ID,"result":RESULT}` from raw JSON pieces.
pub fn response(id: &[u8], result: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(40 + id.len() + result.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id);
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result);
    out.push(b'}');
    Bytes::from(out)
}

/// An error line; `id` is raw JSON (`null` when the request's id is unknown), `data` raw JSON.
pub fn error(id: &[u8], code: i64, message: &str, data: Option<&str>) -> Bytes {
    let mut out = Vec::with_capacity(96 + id.len() + message.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id);
    out.extend_from_slice(b",\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    out.extend_from_slice(serde_json::Value::from(message).to_string().as_bytes());
    if let Some(data) = data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data.as_bytes());
    }
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

/// A request line with a numeric id and raw params.
pub fn request(id: u64, method: &str, params: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{method}\",\"params\":{params}}}"
    ))
}

/// A notification line with raw params.
pub fn notification(method: &str, params: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\",\"params\":{params}}}"
    ))
}

/// The mux's own methods on a server socket, between the proxy and the daemon (the hand-off of
/// the host's stdio, `crate::io::handoff`). Named here, with the other words of the wire, so
/// that the router can recognise them without depending on the I/O that carries them.
pub mod mux_methods {
    /// The request that hands stdin and stdout over.
    pub const ATTACH: &str = "rmcp-mux/attach";
    /// The proxy's word that the daemon may now write to the host's stdout.
    pub const GO: &str = "rmcp-mux/go";
    /// The daemon's word that the host closed stdin.
    pub const INPUT_CLOSED: &str = "rmcp-mux/input-closed";
    /// The daemon's bytes read from the host's stdin and handed back.
    pub const UNREAD: &str = "rmcp-mux/unread";
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind() {
        let k = |s: &str| parse_one(s.as_bytes()).map(|e| e.kind);
        assert_eq!(
            k(r#"{"jsonrpc":"2.0","id":1,"method":"x"}"#),
            Ok(Kind::Request)
        );
        assert_eq!(
            k(r#"{"jsonrpc":"2.0","method":"x"}"#),
            Ok(Kind::Notification)
        );
        assert_eq!(
            k(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Kind::Response)
        );
        assert_eq!(
            k(r#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#),
            Ok(Kind::Error)
        );
        assert_eq!(k(r#"{"jsonrpc":"2.0","id":1}"#), Err(Malformed::Invalid));
        assert_eq!(
            k(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#),
            Err(Malformed::Invalid)
        );
        assert_eq!(k(r#"{"id":1,"method":"x"}"#), Err(Malformed::Invalid));
        assert_eq!(
            k(r#"{"jsonrpc":"2.0","id":true,"method":"x"}"#),
            Err(Malformed::Invalid)
        );
        assert_eq!(k(r#"{"jsonrpc":"2.0","id":1,"#), Err(Malformed::Parse));
        assert_eq!(k("hello"), Err(Malformed::Parse));
        assert_eq!(k("42"), Err(Malformed::Invalid));
        assert_eq!(
            k(r#"{"jsonrpc":2,"id":1,"method":"x"} junk"#),
            Err(Malformed::Parse)
        );
    }

    #[test]
    fn ids_keep_their_json_type() {
        let a = parse_one(br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#).unwrap();
        let b = parse_one(br#"{"jsonrpc":"2.0","id":"1","method":"x"}"#).unwrap();
        assert_eq!(a.id.unwrap().get(), "1");
        assert_eq!(b.id.unwrap().get(), "\"1\"");
        assert_eq!(as_u64(a.id.unwrap()), Some(1));
        assert_eq!(as_u64(b.id.unwrap()), None);
    }

    #[test]
    fn request_meta_finds_the_members_in_short_and_long_params() {
        for pad in [0, 300] {
            let fill = "x".repeat(pad);
            let found = |params: &str| {
                let m = request_meta(Some(Raw(params)));
                (m.progress_token.map(|t| t.get().to_owned()), m.task)
            };
            let p = format!(r#"{{"a":"{fill}","_meta":{{"progressToken":"t"}}}}"#);
            assert_eq!(found(&p), (Some(r#""t""#.to_owned()), false), "{pad}");
            let p = format!(r#"{{"a":"{fill}","task":{{}}}}"#);
            assert_eq!(found(&p), (None, true), "{pad}");
            // Spelled with an escape: found through the full scan.
            let p = format!(r#"{{"a":"{fill}","\u005fmeta":{{"progressToken":1}}}}"#);
            assert_eq!(found(&p), (Some("1".to_owned()), false), "{pad}");
            // The names inside values or nested deeper are not the members.
            let p = format!(r#"{{"a":"{fill} _meta task","b":{{"_meta":{{"progressToken":2}}}}}}"#);
            assert_eq!(found(&p), (None, false), "{pad}");
        }
    }

    #[test]
    fn parse_one_reads_the_params_meta_in_its_scan() {
        let modern = r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"progressToken":"t"},"task":{}}"#;
        for params in [
            modern,
            // Escaped names and duplicates: the scan gives up and serde_json decides.
            r#"{"\u005fmeta":{"progressToken":1}}"#,
            r#"{"_meta":{"\u0070rogressToken":1}}"#,
            r#"{"_meta":{},"_meta":{"progressToken":1}}"#,
            r#"{"task":1,"task":null}"#,
            r#"{"_meta":null,"task":null}"#,
            r#"{"_meta":5}"#,
            r#"[1,2]"#,
            r#"{}"#,
        ] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{params}}}"#);
            let env = parse_one(line.as_bytes()).unwrap();
            assert_eq!(env.meta, request_meta_serde(env.params), "{params}");
        }
        let line = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{modern}}}"#);
        let meta = parse_one(line.as_bytes()).unwrap().meta;
        assert_eq!(meta.progress_token.map(Raw::get), Some(r#""t""#));
        assert!(meta.task);
        assert_eq!(meta.envelope.version.map(Raw::get), Some(r#""2026-07-28""#));
        // Params that are not JSON still fail the line, as before.
        assert_eq!(
            parse_one(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":}}"#).err(),
            Some(Malformed::Parse)
        );
    }

    #[test]
    fn splices_id_and_token_without_touching_payload() {
        let line = br#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"_meta":{"progressToken":7},"x":"id"}}"#;
        let env = parse_one(line).unwrap();
        let meta = request_meta(env.params);
        let id = span_in(line, env.id.unwrap().get());
        let tok = span_in(line, meta.progress_token.unwrap().get());
        let out = splice(line, &mut [(tok, b"99"), (id, b"12")]);
        assert_eq!(
            &out[..],
            br#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"_meta":{"progressToken":99},"x":"id"}}"#
        );
    }

    #[test]
    fn batch_is_split() {
        let Ok(Parsed::Batch(items)) = parse(br#" [{"jsonrpc":"2.0","id":1,"method":"a"}, 5]"#)
        else {
            panic!("not a batch")
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].get(), "5");
    }

    #[test]
    fn builders_produce_valid_json() {
        let e = error(
            b"\"x\"",
            codes::INTERNAL_ERROR,
            "a \"quoted\" thing",
            Some(r#"{"reason":"r"}"#),
        );
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["message"], "a \"quoted\" thing");
        assert_eq!(v["error"]["data"]["reason"], "r");
        let r: serde_json::Value = serde_json::from_slice(&response(b"3", b"{}")).unwrap();
        assert_eq!(r["id"], 3);
    }

    #[test]
    fn field_reads_nested_values() {
        let line =
            br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t-1","status":"working"}}}"#;
        let env = parse_one(line).unwrap();
        let task = field(env.result, "task");
        assert_eq!(str_field(task, "taskId").as_deref(), Some("t-1"));
        assert_eq!(str_field(task, "missing"), None);
    }

    #[test]
    fn field_reads_a_member_as_serde_json_does() {
        let obj = Some(Raw(
            r#"{ "a" : "x\"y" , "n":{"a":1}, "\u0062":2, "d":1, "d":[ 2 ] }"#,
        ));
        assert_eq!(field(obj, "a").map(Raw::get), Some(r#""x\"y""#));
        // An escaped name is the name it spells; of a name written twice, the last.
        assert_eq!(field(obj, "b").map(Raw::get), Some("2"));
        assert_eq!(field(obj, "d").map(Raw::get), Some("[ 2 ]"));
        // Nested members are not the object's own.
        assert_eq!(field(Some(Raw(r#"{"n":{"z":1}}"#)), "z"), None);
        assert_eq!(field(Some(Raw("[1]")), "a"), None);
        for name in ["a", "b", "d", "n", "z"] {
            assert_eq!(field(obj, name), field_serde(obj, name), "{name}");
        }
    }

    mod scanner_agrees_with_serde {
        use super::*;
        use proptest::prelude::*;

        fn json_string() -> impl Strategy<Value = String> {
            // Quotes, backslashes, control characters and non-ASCII all need escaping or
            // leave the plain fast path.
            "[a-z0-9 /\"\\\u{1}\t\u{e9}\u{1f600}]{0,10}"
                .prop_map(|s| serde_json::to_string(&s).unwrap())
        }

        fn scalar() -> impl Strategy<Value = String> {
            prop_oneof![
                (0u64..2_000_000).prop_map(|n| n.to_string()),
                (-1000i64..0).prop_map(|n| n.to_string()),
                Just("1.5e3".to_owned()),
                Just("-0".to_owned()),
                Just("true".to_owned()),
                Just("null".to_owned()),
                json_string(),
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            scalar().prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4)
                        .prop_map(|v| format!("[{}]", v.join(","))),
                    prop::collection::vec((json_string(), inner), 0..4).prop_map(|v| {
                        let m: Vec<String> = v.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                        format!("{{{}}}", m.join(","))
                    }),
                ]
            })
        }

        fn params() -> impl Strategy<Value = String> {
            let token = prop_oneof![
                Just(None),
                scalar().prop_map(Some),
                Just(Some("{}".to_owned())),
            ];
            // A 2026-07-28 envelope beside the token: plain, with an escaped name, a key
            // written twice, or a mistyped version.
            let envelope = prop_oneof![
                Just(""),
                Just(
                    r#","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"x":null}"#
                ),
                Just(
                    r#","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol\u002fclientCapabilities":{}"#
                ),
                Just(
                    r#","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/protocolVersion":1"#
                ),
            ];
            (
                token,
                any::<bool>(),
                prop::option::of(value()),
                prop_oneof![Just("_meta"), Just("task"), Just("x"), Just("_m\\u0065ta")],
                envelope,
            )
                .prop_map(|(token, task, extra, extra_key, envelope)| {
                    let mut m = vec![];
                    if let Some(t) = token {
                        m.push(format!(
                            r#""_meta":{{"a":[1,{{}}],"progressToken":{t}{envelope}}}"#
                        ));
                    }
                    if task {
                        m.push(r#""task":{"ttl":1}"#.to_owned());
                    }
                    if let Some(v) = extra {
                        m.push(format!(r#""{extra_key}":{v}"#));
                    }
                    format!("{{{}}}", m.join(","))
                })
        }

        /// A message of any kind (or an invalid mix), members in any order, with and without
        /// whitespace.
        fn envelope_line() -> impl Strategy<Value = String> {
            let member = |key: &'static str, v: BoxedStrategy<String>| {
                prop::option::of(v.prop_map(move |v| format!(r#""{key}":{v}"#)))
            };
            (
                member(
                    "jsonrpc",
                    prop_oneof![
                        Just("\"2.0\"".to_owned()),
                        Just("\"1.0\"".to_owned()),
                        Just("2".to_owned()),
                        Just("\"2\\u002e0\"".to_owned())
                    ]
                    .boxed(),
                ),
                member("id", scalar().boxed()),
                member(
                    "method",
                    prop_oneof![
                        json_string(),
                        Just("\"tools/call\"".to_owned()),
                        Just("7".to_owned())
                    ]
                    .boxed(),
                ),
                member("params", prop_oneof![params(), value()].boxed()),
                member("result", value().boxed()),
                member("error", value().boxed()),
                member("extra", value().boxed()),
                prop_oneof![Just(""), Just(" ")],
            )
                .prop_flat_map(|(a, b, c, d, e, f, g, ws)| {
                    let members: Vec<String> =
                        [a, b, c, d, e, f, g].into_iter().flatten().collect();
                    (Just(members).prop_shuffle(), Just(ws))
                })
                .prop_map(|(members, ws)| {
                    let sep = format!("{ws},{ws}");
                    format!("{ws}{{{ws}{}{ws}}}{ws}", members.join(&sep))
                })
        }

        fn request_like() -> impl Strategy<Value = String> {
            (scalar(), params(), prop_oneof![Just(""), Just(" ")]).prop_map(|(id, params, ws)| {
                format!(r#"{{"jsonrpc":{ws}"2.0","id":{id},"method":"tools/call",{ws}"params":{params}}}"#)
            })
        }

        fn same(line: &[u8]) -> Result<(), TestCaseError> {
            let fast = parse_one(line);
            let slow = parse_one_serde(line);
            prop_assert_eq!(&fast, &slow, "line: {}", String::from_utf8_lossy(line));
            if let (Ok(f), Ok(s)) = (&fast, &slow) {
                let meta = request_meta(f.params);
                prop_assert_eq!(meta, request_meta_serde(s.params));
                for object in [f.params, f.result, f.error, meta.meta] {
                    for name in ["_meta", "task", "x", "progressToken", "a"] {
                        prop_assert_eq!(field(object, name), field_serde(object, name));
                    }
                }
                if let Some(m) = meta.meta {
                    prop_assert_eq!(era::read(m), era::read_serde(m));
                    prop_assert_eq!(era::check(meta.envelope), era::read(m));
                    if !meta.foreign {
                        let token = meta.progress_token.map(|_| &b"5"[..]);
                        prop_assert_eq!(
                            &era::token_only(token).unwrap()[..],
                            &era::strip_serde(m, token)[..]
                        );
                    }
                    let strip = |s: Vec<u8>| serde_json::from_slice::<serde_json::Value>(&s).ok();
                    prop_assert_eq!(
                        strip(era::strip(m, Some(b"5"))),
                        strip(era::strip_serde(m, Some(b"5")))
                    );
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn on_generated_envelopes(line in prop_oneof![envelope_line(), request_like()]) {
                same(line.as_bytes())?;
            }

            #[test]
            fn on_broken_envelopes(
                line in prop_oneof![envelope_line(), request_like()],
                at in any::<prop::sample::Index>(),
                byte in prop::sample::select(&b"{}[]\",:\\ x0e-.\x01\t\xff\xc3"[..]),
                how in 0..3u8,
            ) {
                let mut b = line.into_bytes();
                let i = at.index(b.len() + 1);
                match how {
                    0 => b.truncate(i),
                    1 => b.insert(i, byte),
                    _ => {
                        if i < b.len() {
                            b.remove(i);
                        }
                    }
                }
                same(&b)?;
            }
        }

        #[test]
        fn malformed_lines_keep_their_codes() {
            for (line, want) in [
                (&b"hello"[..], Malformed::Parse),
                (b"", Malformed::Parse),
                (br#"{"jsonrpc":"2.0","id":1,"method":"x""#, Malformed::Parse),
                (
                    br#"{"jsonrpc":"2.0","id":01,"method":"x"}"#,
                    Malformed::Parse,
                ),
                (
                    b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\x01\"}",
                    Malformed::Parse,
                ),
                (br#"42"#, Malformed::Invalid),
                (
                    br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}"#,
                    Malformed::Invalid,
                ),
                (
                    br#"{"jsonrpc":"2.0","id":1,"method":7}"#,
                    Malformed::Invalid,
                ),
                (
                    br#"{"jsonrpc":"2.0","id":1,"result":null}"#,
                    Malformed::Invalid,
                ),
                (
                    br#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#,
                    Malformed::Invalid,
                ),
            ] {
                assert_eq!(
                    parse_one(line).err(),
                    Some(want),
                    "{}",
                    String::from_utf8_lossy(line)
                );
                assert_eq!(parse_one_serde(line).err(), Some(want));
            }
        }
    }
}
