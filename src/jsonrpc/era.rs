//! The words of the 2026-07-28 protocol era ("modern": no handshake, every request carries its
//! own envelope in `params._meta`) that the router needs to serve a modern client from a
//! handshake-era child: reading and checking a request's envelope, stripping it before the
//! request goes upstream, marking a result the way a modern client expects, the answer to
//! `server/discover`, and the filter and frames of a `subscriptions/listen` stream.
//!
//! Like the rest of `jsonrpc`, it edits bytes rather than re-serializing payloads: only a
//! request's `_meta` object is rebuilt, and a result gets its new members spliced in after its
//! opening brace. No I/O here.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem::Finder;
use serde_json::value::RawValue;

use super::Raw;

/// The prefix of every key the specification reserves in `_meta`.
pub const PREFIX: &str = "io.modelcontextprotocol/";
/// The envelope key naming the request's protocol version; its presence makes a request modern.
pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The envelope key with the capabilities the client declares for this request (required).
pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The envelope key with the log level the request asks for (optional).
pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// The key under a discover result's `_meta` naming the server.
pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The envelope key naming the client (optional).
pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// The key tagging every frame of a subscription stream with the listen request's id.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The modern protocol versions the mux serves to clients, newest first.
pub const SUPPORTED: &[&str] = &["2026-07-28"];

/// The methods whose results carry `ttlMs` and `cacheScope` in the modern era.
pub const CACHEABLE: &[&str] = &[
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// The methods a server may answer `input_required` (multi round-trip requests).
pub const INTERACTIVE: &[&str] = &["tools/call", "prompts/get", "resources/read"];

/// A byte searcher made once: `memmem::find` builds one per call, which cost more than the
/// search itself through a request's or a result's few hundred bytes.
type Search = LazyLock<Finder<'static>>;

static REQUEST_STATE: Search = LazyLock::new(|| Finder::new(b"\"requestState\""));
static RESULT_TYPE: Search = LazyLock::new(|| Finder::new(b"resultType"));
static TTL_MS: Search = LazyLock::new(|| Finder::new(b"ttlMs"));
static CACHE_SCOPE: Search = LazyLock::new(|| Finder::new(b"cacheScope"));
static INPUT_REQUIRED: Search = LazyLock::new(|| Finder::new(b"input_required"));
static ENVELOPED: Search = LazyLock::new(|| Finder::new(PROTOCOL_VERSION.as_bytes()));

fn found(search: &Search, text: &str) -> bool {
    search.find(text.as_bytes()).is_some()
}

/// Whether a request's params may carry a `requestState` (a cheap byte search before they
/// are parsed).
pub fn maybe_retry(params: Option<Raw<'_>>) -> bool {
    params.is_some_and(|p| found(&REQUEST_STATE, p.get()))
}

/// The list-changed notifications a listen can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `notifications/tools/list_changed`.
    Tools,
    /// `notifications/prompts/list_changed`.
    Prompts,
    /// `notifications/resources/list_changed`.
    Resources,
}

impl ListKind {
    /// The kind a list-changed notification's method names.
    pub fn of(method: &str) -> Option<ListKind> {
        match method {
            "notifications/tools/list_changed" => Some(ListKind::Tools),
            "notifications/prompts/list_changed" => Some(ListKind::Prompts),
            "notifications/resources/list_changed" => Some(ListKind::Resources),
            _ => None,
        }
    }

    fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
        }
    }
}

/// A `subscriptions/listen` filter (`params.notifications`): what a client asks for, or the
/// part of it the mux honours.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Tools list changes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tools_list_changed: bool,
    /// Prompts list changes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prompts_list_changed: bool,
    /// Resources list changes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub resources_list_changed: bool,
    /// Updates of these resources (and those below them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_subscriptions: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Filter {
    /// Reads a listen request's `notifications`; `None` when it is missing or malformed.
    pub fn read(raw: Option<Raw<'_>>) -> Option<Filter> {
        let raw = raw?;
        let v: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
        if !v.is_object() {
            return None;
        }
        let flag = |k: &str| v.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
        Some(Filter {
            tools_list_changed: flag("toolsListChanged"),
            prompts_list_changed: flag("promptsListChanged"),
            resources_list_changed: flag("resourcesListChanged"),
            resource_subscriptions: v
                .get("resourceSubscriptions")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The part of this filter a handshake-era child can deliver, by the capabilities of its
    /// `initialize` result (`listChanged` per list, `resources.subscribe`); everything asked
    /// while the child has not answered yet.
    pub fn honoured(&self, init: Option<&[u8]>) -> Filter {
        let Some(init) = init else {
            return self.clone();
        };
        let init: serde_json::Value = serde_json::from_slice(init).unwrap_or_default();
        let caps = &init["capabilities"];
        let lists = |k: ListKind| caps[k.capability()]["listChanged"] == true;
        Filter {
            tools_list_changed: self.tools_list_changed && lists(ListKind::Tools),
            prompts_list_changed: self.prompts_list_changed && lists(ListKind::Prompts),
            resources_list_changed: self.resources_list_changed && lists(ListKind::Resources),
            resource_subscriptions: if caps["resources"]["subscribe"] == true {
                self.resource_subscriptions.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// Whether it asks for this list's changes.
    pub fn wants(&self, kind: ListKind) -> bool {
        match kind {
            ListKind::Tools => self.tools_list_changed,
            ListKind::Prompts => self.prompts_list_changed,
            ListKind::Resources => self.resources_list_changed,
        }
    }
}

/// A notification on a listen stream: `members` (the params' members, without braces; may be
/// empty) plus `_meta` naming the subscription (`id`, the listen request's raw id).
pub fn frame(method: &str, members: &str, id: &[u8]) -> Bytes {
    let sep = if members.is_empty() { "" } else { "," };
    let id = String::from_utf8_lossy(id);
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","method":"{method}","params":{{{members}{sep}"_meta":{{"{SUBSCRIPTION_ID}":{id}}}}}}}"#
    ))
}

/// The first frame of a listen stream: what the mux honours of the filter asked for.
pub fn acknowledged(honoured: &Filter, id: &[u8]) -> Bytes {
    let filter = serde_json::to_string(honoured).unwrap_or_else(|_| "{}".into());
    frame(
        "notifications/subscriptions/acknowledged",
        &format!(r#""notifications":{filter}"#),
        id,
    )
}

/// What a modern request's envelope says, as far as the mux acts on it: borrowed from the
/// request's line unless a string had to be unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The protocol version the request is written in.
    pub version: Cow<'a, str>,
    /// The capabilities the client declared for this request, raw.
    pub capabilities: Raw<'a>,
    /// The log level it asks for, if any.
    pub log_level: Option<Cow<'a, str>>,
}

/// Why a request's envelope is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// A required key is missing or of the wrong type (answered -32602).
    Invalid(&'static str),
    /// The protocol version is not one the mux serves (answered -32022, with what it serves).
    Unsupported(String),
}

/// Whether `_meta` names a protocol version: a cheap byte search that every enveloped request
/// passes and nearly every handshake-era one fails, before anything is parsed.
pub fn maybe_enveloped(meta: Raw<'_>) -> bool {
    found(&ENVELOPED, meta.get())
}

fn members<'a>(meta: Raw<'a>) -> Option<BTreeMap<Cow<'a, str>, &'a RawValue>> {
    serde_json::from_str(meta.get()).ok()
}

/// The envelope's members in a request's `_meta`, raw and unchecked ([`check`] reads them):
/// what [`super::request_meta`] finds in the scan it makes of `_meta` anyway.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Members<'a> {
    /// `io.modelcontextprotocol/protocolVersion`; its presence makes a request modern.
    pub version: Option<Raw<'a>>,
    /// `io.modelcontextprotocol/clientCapabilities`.
    pub capabilities: Option<Raw<'a>>,
    /// `io.modelcontextprotocol/logLevel`.
    pub log_level: Option<Raw<'a>>,
}

/// Reads a request's envelope from its `_meta`: `Ok(None)` when it has none (a handshake-era
/// request), an error when it has one that the mux must refuse. The router reads the members
/// [`super::request_meta`] found instead ([`check`]); this is the same on `_meta` alone.
///
/// `_meta` is scanned in place (one pass, no map, no allocation); only names with escapes go
/// to [`read_serde`], which reads the same.
///
/// # Errors
/// [`EnvelopeError::Invalid`] for a missing or mistyped required key,
/// [`EnvelopeError::Unsupported`] for a version the mux does not serve.
pub fn read(meta: Raw<'_>) -> Result<Option<Envelope<'_>>, EnvelopeError> {
    let text = meta.get();
    // A long `_meta` is searched for the version's key first (most handshake-era ones are a
    // progress token, which the scan reads sooner than a searcher starts).
    if text.len() > 256 && !maybe_enveloped(meta) {
        return Ok(None);
    }
    // Of a key written twice the last, as serde_json reads it.
    let mut found = Members::default();
    let scanned = super::scan::each_member(text, |key, _, value| {
        let slot = match key {
            PROTOCOL_VERSION => &mut found.version,
            CLIENT_CAPABILITIES => &mut found.capabilities,
            LOG_LEVEL => &mut found.log_level,
            _ => return Some(()),
        };
        *slot = Some(Raw(&text[value]));
        Some(())
    });
    match scanned {
        Some(()) => check(found),
        None => read_serde(meta),
    }
}

/// [`read`] through serde_json alone: the fallback for escaped names, and the scanner's
/// reference.
///
/// # Errors
/// As [`read`].
pub fn read_serde(meta: Raw<'_>) -> Result<Option<Envelope<'_>>, EnvelopeError> {
    check(members_serde(meta).0)
}

/// The envelope's members of `_meta` through serde_json (none unless `_meta` has the version's
/// key, and names it as written, as [`maybe_enveloped`] checks), and whether it has a member
/// other than them and a non-null progress token: [`super::request_meta_serde`]'s part.
pub fn members_serde(meta: Raw<'_>) -> (Members<'_>, bool) {
    let Some(map) = members(meta) else {
        return (Members::default(), false);
    };
    let foreign = map
        .iter()
        .any(|(k, v)| !k.starts_with(PREFIX) && (k != "progressToken" || v.get() == "null"));
    if !maybe_enveloped(meta) {
        return (Members::default(), foreign);
    }
    let get = |key: &str| map.get(key).map(|v| Raw(v.get()));
    let found = match get(PROTOCOL_VERSION) {
        None => Members::default(),
        version => Members {
            version,
            capabilities: get(CLIENT_CAPABILITIES),
            log_level: get(LOG_LEVEL),
        },
    };
    (found, foreign)
}

/// Checks the envelope's members found in a request's `_meta`: `Ok(None)` without a protocol
/// version (a handshake-era request).
///
/// # Errors
/// As [`read`].
pub fn check(found: Members<'_>) -> Result<Option<Envelope<'_>>, EnvelopeError> {
    let Some(version) = found.version.map(Raw::get) else {
        return Ok(None);
    };
    let caps = found.capabilities.map(Raw::get);
    let level = found.log_level.map(Raw::get);
    let version =
        string(version).ok_or(EnvelopeError::Invalid("protocolVersion must be a string"))?;
    let capabilities =
        caps.filter(|c| c.starts_with('{'))
            .map(Raw)
            .ok_or(EnvelopeError::Invalid(
                "missing io.modelcontextprotocol/clientCapabilities",
            ))?;
    let log_level = match level {
        None => None,
        Some(l) => Some(string(l).ok_or(EnvelopeError::Invalid("logLevel must be a string"))?),
    };
    if !SUPPORTED.contains(&&*version) {
        return Err(EnvelopeError::Unsupported(version.into_owned()));
    }
    Ok(Some(Envelope {
        version,
        capabilities,
        log_level,
    }))
}

/// A raw JSON string's value: borrowed when it has no escapes, else decoded; `None` for any
/// other value.
fn string(raw: &str) -> Option<Cow<'_, str>> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Some(Cow::Borrowed(inner)),
        _ => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
    }
}

/// The data of the -32022 answer to an unsupported version: `{supported, requested}`.
pub fn unsupported_data(requested: &str) -> String {
    serde_json::json!({ "supported": SUPPORTED, "requested": requested }).to_string()
}

/// `_meta` for a handshake-era child: the `io.modelcontextprotocol/*` keys left out,
/// `progressToken`'s value replaced by `token` (raw JSON) when given, every other member as it
/// was written, in its place.
///
/// The members kept are copied as they are (one scan, one buffer); only names with escapes,
/// which might spell a reserved key, go to [`strip_serde`].
pub fn strip(meta: Raw<'_>, token: Option<&[u8]>) -> Vec<u8> {
    let text = meta.get();
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(text.len() + token.map_or(0, <[u8]>::len));
    out.push(b'{');
    let scanned = super::scan::each_member(text, |key, at, value| {
        if key.starts_with(PREFIX) {
            return Some(());
        }
        if out.len() > 1 {
            out.push(b',');
        }
        match token {
            Some(t) if key == "progressToken" => {
                out.extend_from_slice(&bytes[at..value.start]);
                out.extend_from_slice(t);
            }
            _ => out.extend_from_slice(&bytes[at..value.end]),
        }
        Some(())
    });
    if scanned.is_none() {
        return strip_serde(meta, token);
    }
    out.push(b'}');
    out
}

/// [`strip`] through serde_json: the fallback for escaped names, and the scanner's reference
/// (the same members, rebuilt in name order, each name once).
pub fn strip_serde(meta: Raw<'_>, token: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(meta.get().len());
    out.push(b'{');
    if let Some(map) = members(meta) {
        for (key, value) in map.iter().filter(|(k, _)| !k.starts_with(PREFIX)) {
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(serde_json::Value::from(key.as_ref()).to_string().as_bytes());
            out.push(b':');
            match token {
                Some(t) if key == "progressToken" => out.extend_from_slice(t),
                _ => out.extend_from_slice(value.get().as_bytes()),
            }
        }
    }
    out.push(b'}');
    out
}

/// A few bytes the router splices into a line, on the stack: the members [`result_head`]
/// puts at the front of a result (the longest under 64 bytes), the `_meta` [`token_only`]
/// leaves. Every modern request and answer gets one, and an allocation each cost more.
#[derive(Clone, Copy)]
pub struct Inline {
    buf: [u8; 64],
    len: usize,
}

impl Inline {
    const fn new() -> Inline {
        Inline {
            buf: [0; 64],
            len: 0,
        }
    }

    /// Appends `bytes`; `None` when they do not fit.
    fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len + bytes.len();
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }
}

impl std::ops::Deref for Inline {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self))
    }
}

/// What [`strip`] makes of a `_meta` that held only the envelope and a progress token
/// ([`super::RequestMeta::foreign`] false), without scanning it again: `{}`, or the token
/// alone with `token` (raw JSON, the mux's own id) as its value. `None` when `token` is too
/// long to be one of the mux's ids.
pub fn token_only(token: Option<&[u8]>) -> Option<Inline> {
    let mut out = Inline::new();
    match token {
        None => out.push(b"{}")?,
        Some(t) => {
            out.push(br#"{"progressToken":"#)?;
            out.push(t)?;
            out.push(b"}")?;
        }
    }
    Some(out)
}

/// The members a modern client expects at the front of a result (`result` is the raw object):
/// `resultType`, plus `ttlMs` and `cacheScope` for the cacheable methods, each unless the
/// result has it already. Ends with a comma unless the result is empty. `None` when the result
/// is not an object (nothing can be added).
pub fn result_head(result: Raw<'_>, cacheable: bool) -> Option<Inline> {
    let text = result.get();
    if !text.starts_with('{') {
        return None;
    }
    // Most results have none of these: only a result that mentions one is scanned for it.
    let has = |search: &Search, key: &str| {
        found(search, text) && super::field(Some(result), key).is_some()
    };
    let mut out = Inline::new();
    // At most 56 bytes in all: every push fits.
    let mut add = |member: &[u8]| {
        if out.len > 0 {
            out.push(b",");
        }
        out.push(member);
    };
    if !has(&RESULT_TYPE, "resultType") {
        add(br#""resultType":"complete""#);
    }
    if cacheable {
        if !has(&TTL_MS, "ttlMs") {
            add(br#""ttlMs":0"#);
        }
        if !has(&CACHE_SCOPE, "cacheScope") {
            add(br#""cacheScope":"private""#);
        }
    }
    let empty = text[1..].trim_start().starts_with('}');
    if out.len > 0 && !empty {
        out.push(b",")?;
    }
    Some(out)
}

/// The answer to `server/discover`, made from the child's `initialize` result: its
/// capabilities (without the handshake era's `tasks`), instructions and serverInfo, the
/// versions the mux serves, not cached (`ttlMs` 0, `cacheScope` private).
pub fn discover_result(init: &[u8]) -> Bytes {
    let init: serde_json::Value = serde_json::from_slice(init).unwrap_or_default();
    let mut caps = init
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(c) = caps.as_object_mut() {
        c.remove("tasks");
    }
    let mut out = serde_json::json!({
        "resultType": "complete",
        "supportedVersions": SUPPORTED,
        "capabilities": caps,
        "ttlMs": 0,
        "cacheScope": "private",
    });
    if let Some(i) = init.get("instructions").filter(|i| i.is_string()) {
        out["instructions"] = i.clone();
    }
    if let Some(info) = init.get("serverInfo") {
        out["_meta"] = serde_json::json!({ SERVER_INFO: info });
    }
    Bytes::from(out.to_string())
}

/// The params of a `server/discover` the mux sends a modern child: only the envelope, with
/// the capabilities it declares upstream (`caps`, a JSON object) and the mux's name.
pub fn discover_params(caps: &str, version: &str) -> String {
    format!(
        r#"{{"_meta":{{"{PROTOCOL_VERSION}":"{version}","{CLIENT_CAPABILITIES}":{caps},"{CLIENT_INFO}":{{"name":"rmcp-mux","version":"{}"}}}}}}"#,
        env!("CARGO_PKG_VERSION")
    )
}

/// Whether an error answering the mux's `server/discover` probe says the child speaks a
/// modern version the mux serves (-32022 listing it in `data.supported`).
pub fn names_modern(error: Option<Raw<'_>>) -> Option<&'static str> {
    let code = super::field(error, "code")?;
    if code.get() != "-32022" {
        return None;
    }
    let supported = super::field(super::field(error, "data"), "supported")?;
    let list: Vec<String> = serde_json::from_str(supported.get()).ok()?;
    SUPPORTED
        .iter()
        .find(|v| list.iter().any(|l| l == *v))
        .copied()
}

/// An `initialize` result for handshake-era clients made from a modern child's discover
/// result: its capabilities, instructions and serverInfo, under the handshake `version`.
pub fn init_from_discover(discover: &[u8], version: &str) -> Bytes {
    let d: serde_json::Value = serde_json::from_slice(discover).unwrap_or_default();
    let mut out = serde_json::json!({
        "protocolVersion": version,
        "capabilities": d.get("capabilities").cloned().unwrap_or_else(|| serde_json::json!({})),
        "serverInfo": d
            .get("_meta")
            .and_then(|m| m.get(SERVER_INFO))
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"name": "unknown", "version": "0"})),
    });
    if let Some(i) = d.get("instructions").filter(|i| i.is_string()) {
        out["instructions"] = i.clone();
    }
    Bytes::from(out.to_string())
}

/// The envelope members stamped on a handshake-era client's request for a modern child:
/// that client's own capabilities and clientInfo (raw JSON) and log level, never another's.
pub fn stamp_members(
    version: &str,
    caps: &[u8],
    info: Option<&[u8]>,
    level: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + caps.len());
    out.extend_from_slice(
        format!(r#""{PROTOCOL_VERSION}":"{version}","{CLIENT_CAPABILITIES}":"#).as_bytes(),
    );
    out.extend_from_slice(caps);
    if let Some(info) = info {
        out.extend_from_slice(format!(r#","{CLIENT_INFO}":"#).as_bytes());
        out.extend_from_slice(info);
    }
    if let Some(level) = level {
        out.extend_from_slice(format!(r#","{LOG_LEVEL}":"{level}""#).as_bytes());
    }
    out
}

/// Whether a result is `input_required` (a cheap byte search first).
pub fn input_required(result: Option<Raw<'_>>) -> bool {
    result.is_some_and(|r| {
        found(&INPUT_REQUIRED, r.get())
            && super::str_field(Some(r), "resultType").as_deref() == Some("input_required")
    })
}

/// A frame's params without the subscription id (and without a `_meta` left empty), for a
/// handshake-era client that never opened the listen.
pub fn without_subscription_id(params: Option<Raw<'_>>) -> String {
    let mut v: serde_json::Value = params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(o) = v.as_object_mut() {
        let empty = o.get_mut("_meta").and_then(|m| m.as_object_mut()).map(|m| {
            m.remove(SUBSCRIPTION_ID);
            m.is_empty()
        });
        if empty == Some(true) {
            o.remove("_meta");
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Raw<'_> {
        Raw(s)
    }

    #[test]
    fn an_envelope_is_read_and_checked() {
        let meta = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"io.modelcontextprotocol/logLevel":"info"}"#;
        let env = read(raw(meta)).unwrap().unwrap();
        assert_eq!(env.version, "2026-07-28");
        assert_eq!(env.capabilities.get(), r#"{"sampling":{}}"#);
        assert_eq!(env.log_level.as_deref(), Some("info"));
        assert_eq!(read(raw(r#"{"progressToken":1}"#)), Ok(None));
        assert!(matches!(
            read(raw(
                r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#
            )),
            Err(EnvelopeError::Invalid(_))
        ));
        assert_eq!(
            read(raw(
                r#"{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}"#
            )),
            Err(EnvelopeError::Unsupported("2099-01-01".into()))
        );
    }

    #[test]
    fn strip_keeps_foreign_keys_and_rewrites_the_token() {
        let meta = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":"t","x":{"a":1}}"#;
        let out = String::from_utf8(strip(raw(meta), Some(b"12"))).unwrap();
        assert_eq!(out, r#"{"progressToken":12,"x":{"a":1}}"#);
        let out = String::from_utf8(strip(raw(meta), None)).unwrap();
        assert_eq!(out, r#"{"progressToken":"t","x":{"a":1}}"#);
    }

    /// `_meta` objects the scanner must read as serde_json does: escaped quotes, nested
    /// `_meta`, whitespace, unicode escapes in names and values, names written twice.
    const NASTY: &[&str] = &[
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"io.modelcontextprotocol/logLevel":"info"}"#,
        r#"{"x":"a\"b\\","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"y":"\"io.modelcontextprotocol/logLevel\":1"}"#,
        r#"{"x":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}},"progressToken":7}"#,
        r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"},"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"roots":{"_meta":{}}}}"#,
        " { \"io.modelcontextprotocol/protocolVersion\" :\t\"2026-07-28\" ,\n \"progressToken\" : \"t\" , \"io.modelcontextprotocol/clientCapabilities\" : { } , \"z\" : [ 1 , 2 ] } ",
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol\u002fclientCapabilities":{},"\u0078":1}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026\u002d07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/logLevel":"d\u0065bug"}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/protocolVersion":"2026-07-28","x":1,"x":2}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientCapabilities":[]}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/logLevel":null}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":7,"io.modelcontextprotocol/clientCapabilities":{}}"#,
        r#"{"io.modelcontextprotocol/protocolVersionX":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#,
        r#"{"é":"ü","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"n"}}"#,
        r#"{}"#,
        r#"{"progressToken":"a","progressToken":"b"}"#,
    ];

    #[test]
    fn the_envelope_scanner_reads_as_serde_json_does() {
        for meta in NASTY {
            let meta = raw(meta.trim());
            assert_eq!(read(meta), read_serde(meta), "{}", meta.get());
            for token in [None, Some(&b"12"[..])] {
                let fast: serde_json::Value = serde_json::from_slice(&strip(meta, token)).unwrap();
                let slow: serde_json::Value =
                    serde_json::from_slice(&strip_serde(meta, token)).unwrap();
                assert_eq!(fast, slow, "{}", meta.get());
            }
        }
    }

    #[test]
    fn the_scan_of_params_finds_what_read_and_strip_find() {
        for meta in NASTY {
            let params = format!(r#"{{"name":"x","_meta":{}}}"#, meta.trim());
            let found = crate::jsonrpc::request_meta(Some(raw(&params)));
            let Some(meta) = found.meta else {
                // serde_json refuses params whose token is written twice: no `_meta` at all.
                assert_eq!(found, crate::jsonrpc::RequestMeta::default());
                continue;
            };
            assert_eq!(check(found.envelope), read(meta), "{}", meta.get());
            assert_eq!(
                found,
                crate::jsonrpc::request_meta_serde(Some(raw(&params))),
                "{}",
                meta.get()
            );
            let token = found.progress_token.map(|_| &b"12"[..]);
            if !found.foreign {
                assert_eq!(
                    &*token_only(token).unwrap(),
                    &strip_serde(meta, token)[..],
                    "{}",
                    meta.get()
                );
            }
        }
        assert!(token_only(Some(&[b'1'; 64])).is_none());
    }

    #[test]
    fn nasty_envelopes_are_read_right() {
        let get = |i: usize| read(raw(NASTY[i].trim()));
        // Text that only looks like a key, in a string or a nested `_meta`, is not one.
        assert_eq!(get(1).unwrap().unwrap().log_level, None);
        assert_eq!(get(2), Ok(None));
        assert_eq!(
            get(3).unwrap().unwrap().capabilities.get(),
            r#"{"roots":{"_meta":{}}}"#
        );
        assert_eq!(get(4).unwrap().unwrap().version, "2026-07-28");
        // An escaped name is the name it spells; an escaped value the value.
        assert_eq!(get(5).unwrap().unwrap().capabilities.get(), "{}");
        let env = get(6).unwrap().unwrap();
        assert_eq!(
            (&*env.version, env.log_level.as_deref()),
            ("2026-07-28", Some("debug"))
        );
        // Of a key written twice, the last counts.
        assert!(get(7).unwrap().is_some());
        assert!(matches!(get(8), Err(EnvelopeError::Invalid(_))));
        assert!(matches!(get(9), Err(EnvelopeError::Invalid(_))));
        assert!(matches!(get(10), Err(EnvelopeError::Invalid(_))));
        assert_eq!(get(11), Ok(None));
        assert!(get(12).unwrap().is_some());
    }

    #[test]
    fn strip_splices_the_reserved_keys_out_and_keeps_the_rest_as_written() {
        let strip = |i: usize, token: Option<&[u8]>| {
            String::from_utf8(strip(raw(NASTY[i].trim()), token)).unwrap()
        };
        assert_eq!(strip(0, None), "{}");
        assert_eq!(
            strip(1, None),
            r#"{"x":"a\"b\\","y":"\"io.modelcontextprotocol/logLevel\":1"}"#
        );
        // A nested `_meta` is a foreign key's value: left as it is.
        assert_eq!(
            strip(2, Some(b"12")),
            r#"{"x":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}},"progressToken":12}"#
        );
        assert_eq!(
            strip(4, Some(b"99")),
            r#"{"progressToken" : 99,"z" : [ 1 , 2 ]}"#
        );
        // Escaped names go through serde_json, which decodes them.
        assert_eq!(strip(5, None), r#"{"x":1}"#);
        assert_eq!(
            strip(12, None),
            r#"{"é":"ü"}"#,
            "non-ASCII names stay as written"
        );
        // Names written twice reach the child as written, each token rewritten.
        assert_eq!(strip(7, None), r#"{"x":1,"x":2}"#);
        assert_eq!(
            strip(14, Some(b"3")),
            r#"{"progressToken":3,"progressToken":3}"#
        );
    }

    #[test]
    fn result_head_adds_only_what_is_missing() {
        assert_eq!(
            &*result_head(raw(r#"{"tools":[]}"#), true).unwrap(),
            br#""resultType":"complete","ttlMs":0,"cacheScope":"private","#
        );
        assert_eq!(
            &*result_head(raw("{ }"), false).unwrap(),
            br#""resultType":"complete""#
        );
        assert_eq!(
            &*result_head(raw(r#"{"resultType":"complete","a":1}"#), false).unwrap(),
            b""
        );
        // A member's text naming the key is not the key.
        assert_eq!(
            &*result_head(raw(r#"{"text":"resultType"}"#), false).unwrap(),
            br#""resultType":"complete","#
        );
        assert!(result_head(raw("[]"), false).is_none());
    }

    #[test]
    fn a_listen_filter_is_honoured_by_the_childs_capabilities() {
        let asked = Filter::read(Some(raw(
            r#"{"toolsListChanged":true,"promptsListChanged":true,"resourceSubscriptions":["a://x"]}"#,
        )))
        .unwrap();
        let init = br#"{"capabilities":{"tools":{"listChanged":true},"prompts":{},"resources":{"subscribe":true}}}"#;
        let honoured = asked.honoured(Some(init));
        assert_eq!(
            serde_json::to_value(&honoured).unwrap(),
            serde_json::json!({"toolsListChanged":true,"resourceSubscriptions":["a://x"]})
        );
        let ack: serde_json::Value =
            serde_json::from_slice(&acknowledged(&honoured, br#""l-1""#)).unwrap();
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], "l-1");
        assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true);
        assert_eq!(Filter::read(Some(raw("5"))), None);
        assert_eq!(Filter::read(Some(raw("{}"))), Some(Filter::default()));
    }

    #[test]
    fn discover_is_made_from_the_initialize_result() {
        let init = br#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"tasks":{}},"serverInfo":{"name":"s","version":"1"},"instructions":"hi"}"#;
        let v: serde_json::Value = serde_json::from_slice(&discover_result(init)).unwrap();
        assert_eq!(v["resultType"], "complete");
        assert_eq!(v["supportedVersions"], serde_json::json!(["2026-07-28"]));
        assert_eq!(v["capabilities"], serde_json::json!({"tools": {}}));
        assert_eq!(v["instructions"], "hi");
        assert_eq!(v["_meta"][SERVER_INFO]["name"], "s");
        assert_eq!(v["ttlMs"], 0);
        assert_eq!(v["cacheScope"], "private");
    }
}
