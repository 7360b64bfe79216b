//! The cache a modern child's results share between the mux's modern clients: a result the
//! child marked `cacheScope: "public"` (with a `ttlMs` above 0) answers every modern client's
//! same request until its time is up, or until the child says it changed (a list-changed
//! notification, `notifications/resources/updated` for its URI) or the child restarts. Each
//! answer served from it is a round trip the child was spared; the count is in the status.
//!
//! Pure, like the router that owns it: time comes in as `now`, results as raw JSON, and the
//! cached bytes go out again with only `ttlMs` rewritten to the time that is left. It never
//! holds `input_required` results or the answers to multi round-trip retries, and
//! `cacheScope: "private"` results never enter it.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::jsonrpc::{self, era::ListKind, Raw};

/// Fast fixed-seed maps, as in the router (keys come from the user's own processes).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// The most results held at once; past it the one that expires soonest makes room.
pub const MAX_ENTRIES: usize = 256;
/// The most bytes of results held at once; a result over a quarter of it is never held.
pub const MAX_BYTES: usize = 16 << 20;

/// The methods whose public results are shared (`server/discover` is the mux's own to answer).
const SHARED: &[&str] = &[
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// What a cached result answers: the method and the params that change the answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    method: &'static str,
    /// `uri` (of `resources/read`), decoded when it is a string, else as written.
    uri: Option<String>,
    /// `cursor` (of a list's later page), likewise.
    cursor: Option<String>,
}

impl Key {
    /// The key of a request whose answer may be shared: one of the list methods or
    /// `resources/read`, and not a retry carrying `inputResponses` or a `requestState`.
    pub fn of(method: &str, params: Option<Raw<'_>>) -> Option<Key> {
        let method = *SHARED.iter().find(|m| **m == method)?;
        if jsonrpc::era::maybe_retry(params)
            || params.is_some_and(|p| {
                memchr::memmem::find(p.get().as_bytes(), b"\"inputResponses\"").is_some()
            })
        {
            return None;
        }
        let text = |name: &str| {
            jsonrpc::field(params, name).map(|raw| {
                serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned())
            })
        };
        Some(Key {
            method,
            uri: text("uri"),
            cursor: text("cursor"),
        })
    }

    fn listed_by(&self, kind: ListKind) -> bool {
        match kind {
            ListKind::Tools => self.method == "tools/list",
            ListKind::Prompts => self.method == "prompts/list",
            ListKind::Resources => {
                matches!(self.method, "resources/list" | "resources/templates/list")
            }
        }
    }
}

struct Entry {
    /// The result object, as the child wrote it.
    result: Bytes,
    /// Where its `ttlMs` value is in `result`.
    ttl: Range<usize>,
    expires: Instant,
}

/// The shared cache of one server's modern child. See the module docs.
#[derive(Default)]
pub struct SharedCache {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    /// Requests sent to the child whose answers may be kept, by upstream id. Anything that
    /// makes a held answer stale makes these stale too: they are dropped with it.
    waiting: HashMap<u64, Key>,
    hits: u64,
}

impl SharedCache {
    /// Child round trips saved: the requests answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// The cached result for `key` at `now`, its `ttlMs` set to the whole milliseconds left;
    /// counted as a round trip saved.
    pub fn lookup(&mut self, now: Instant, key: &Key) -> Option<Bytes> {
        let entry = self.entries.get(key)?;
        let left = entry.expires.saturating_duration_since(now).as_millis();
        if left == 0 {
            self.remove(key);
            return None;
        }
        let left = left.to_string();
        let out = jsonrpc::splice(&entry.result, &mut [(entry.ttl.clone(), left.as_bytes())]);
        self.hits += 1;
        Some(out)
    }

    /// Notes that the request sent as `up` asked for `key`: its answer may be kept.
    pub fn expect(&mut self, up: u64, key: Key) {
        self.waiting.insert(up, key);
    }

    /// The request `up` will not be answered (cancelled, timed out, gone with its client).
    pub fn forget(&mut self, up: u64) {
        let _ = self.take(up);
    }

    /// Takes what the request sent as `up` asked for, if its answer may still be kept (nothing
    /// made it stale on the way).
    pub fn take(&mut self, up: u64) -> Option<Key> {
        if self.waiting.is_empty() {
            return None;
        }
        self.waiting.remove(&up)
    }

    /// The child's answer to a request for `key`: kept when it is complete, is marked public
    /// and may live a while (`ttlMs` above 0).
    pub fn store(&mut self, now: Instant, key: Key, result: Raw<'_>) {
        let text = result.get();
        if text.len() > MAX_BYTES / 4 {
            return;
        }
        let obj = Some(result);
        if jsonrpc::str_field(obj, "resultType").as_deref() != Some("complete")
            || jsonrpc::str_field(obj, "cacheScope").as_deref() != Some("public")
        {
            return;
        }
        let Some(ttl_raw) = jsonrpc::field(obj, "ttlMs") else {
            return;
        };
        let Some(ms) = jsonrpc::as_u64(ttl_raw).filter(|ms| *ms > 0) else {
            return;
        };
        let Some(expires) = now.checked_add(Duration::from_millis(ms)) else {
            return;
        };
        let ttl = jsonrpc::span_in(text.as_bytes(), ttl_raw.get());
        self.remove(&key);
        self.make_room(now, text.len());
        self.bytes += text.len();
        self.entries.insert(
            key,
            Entry {
                result: Bytes::copy_from_slice(text.as_bytes()),
                ttl,
                expires,
            },
        );
    }

    /// The child's list of this kind changed: its pages are dropped.
    pub fn list_changed(&mut self, kind: ListKind) {
        self.drop_where(|k| k.listed_by(kind));
    }

    /// The resource at `uri` changed: its cached reads are dropped.
    pub fn resource_updated(&mut self, uri: &str) {
        self.drop_where(|k| k.method == "resources/read" && k.uri.as_deref() == Some(uri));
    }

    /// The child is gone (a restart, a stop): nothing it said holds any more.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.waiting.clear();
        self.bytes = 0;
    }

    /// How many results are held (for tests and the status).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn drop_where(&mut self, stale: impl Fn(&Key) -> bool) {
        self.waiting.retain(|_, k| !stale(k));
        let gone: Vec<Key> = self.entries.keys().filter(|k| stale(k)).cloned().collect();
        for k in gone {
            self.remove(&k);
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.result.len();
        }
    }

    /// Drops what has expired, then what expires soonest, until `more` bytes and one more
    /// entry fit.
    fn make_room(&mut self, now: Instant, more: usize) {
        if self.entries.len() < MAX_ENTRIES && self.bytes + more <= MAX_BYTES {
            return;
        }
        let expired: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k);
        }
        while self.entries.len() >= MAX_ENTRIES || self.bytes + more > MAX_BYTES {
            let Some(soonest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&soonest);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // A test's clock starts somewhere.
mod tests {
    use super::*;

    fn result(s: &'static str) -> Raw<'static> {
        jsonrpc::parse_one(
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":{s}}}"#)
                .leak()
                .as_bytes(),
        )
        .unwrap()
        .result
        .unwrap()
    }

    const PUBLIC: &str =
        r#"{"resultType":"complete","tools":[{"name":"a"}],"ttlMs":5000,"cacheScope":"public"}"#;

    #[test]
    fn a_public_result_is_served_with_the_time_left_until_it_expires() {
        let t0 = Instant::now();
        let mut c = SharedCache::default();
        let key = Key::of("tools/list", None).unwrap();
        assert!(c.lookup(t0, &key).is_none());
        c.expect(1, key.clone());
        let key1 = c.take(1).unwrap();
        c.store(t0, key1, result(PUBLIC));
        let got = c.lookup(t0 + Duration::from_millis(1500), &key).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(v["ttlMs"], 3500);
        assert_eq!(v["tools"][0]["name"], "a");
        assert_eq!(c.hits(), 1);
        assert!(c.lookup(t0 + Duration::from_millis(5000), &key).is_none());
        assert_eq!(c.hits(), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn private_incomplete_unexpected_and_zero_ttl_results_are_not_kept() {
        let t0 = Instant::now();
        let mut c = SharedCache::default();
        let key = Key::of("tools/list", None).unwrap();
        for (up, r) in [
            (
                1,
                r#"{"resultType":"complete","tools":[],"ttlMs":5000,"cacheScope":"private"}"#,
            ),
            (
                2,
                r#"{"resultType":"complete","tools":[],"ttlMs":0,"cacheScope":"public"}"#,
            ),
            (
                3,
                r#"{"resultType":"input_required","inputRequests":{},"ttlMs":5000,"cacheScope":"public"}"#,
            ),
            (4, r#"{"tools":[],"ttlMs":5000,"cacheScope":"public"}"#),
        ] {
            c.expect(up, key.clone());
            let key = c.take(up).unwrap();
            c.store(t0, key, result(r));
        }
        assert!(c.take(9).is_none(), "never expected");
        assert!(c.is_empty());
        // A retry's answer is never asked to be kept.
        assert!(Key::of(
            "resources/read",
            Some(result(r#"{"uri":"a://x","requestState":"s"}"#))
        )
        .is_none());
        assert!(Key::of(
            "resources/read",
            Some(result(r#"{"uri":"a://x","inputResponses":{}}"#))
        )
        .is_none());
        assert!(Key::of("tools/call", None).is_none());
        assert!(Key::of("server/discover", None).is_none());
    }

    #[test]
    fn keys_tell_uris_and_cursors_apart_and_changes_drop_what_they_concern() {
        let t0 = Instant::now();
        let mut c = SharedCache::default();
        let read = |uri: &'static str| Key::of("resources/read", Some(result(uri))).unwrap();
        let x = read(r#"{"uri":"a://x"}"#);
        let y = read(r#"{"uri":"a://y"}"#);
        let page2 = Key::of("tools/list", Some(result(r#"{"cursor":"2"}"#))).unwrap();
        let tools = Key::of("tools/list", Some(result("{}"))).unwrap();
        let prompts = Key::of("prompts/list", None).unwrap();
        assert_ne!(x, y);
        assert_ne!(page2, tools);
        for (up, k) in [(1, &x), (2, &y), (3, &page2), (4, &tools), (5, &prompts)] {
            c.expect(up, k.clone());
            let k = c.take(up).unwrap();
            c.store(t0, k, result(PUBLIC));
        }
        assert_eq!(c.len(), 5);
        c.resource_updated("a://x");
        assert!(c.lookup(t0, &x).is_none());
        assert!(c.lookup(t0, &y).is_some());
        c.list_changed(ListKind::Tools);
        assert!(c.lookup(t0, &tools).is_none() && c.lookup(t0, &page2).is_none());
        assert!(c.lookup(t0, &prompts).is_some());
        // An answer on its way when the list changed may be stale: it is not kept.
        c.expect(6, prompts.clone());
        c.list_changed(ListKind::Prompts);
        assert!(c.take(6).is_none());
        assert!(c.lookup(t0, &prompts).is_none());
        c.clear();
        assert!(c.lookup(t0, &y).is_none());
    }

    #[test]
    fn the_soonest_to_expire_makes_room() {
        let t0 = Instant::now();
        let mut c = SharedCache::default();
        for i in 0..=MAX_ENTRIES as u64 {
            let k = Key {
                method: "resources/read",
                uri: Some(format!("a://{i}")),
                cursor: None,
            };
            c.store(t0 + Duration::from_millis(i), k, result(PUBLIC));
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        let first = Key {
            method: "resources/read",
            uri: Some("a://0".into()),
            cursor: None,
        };
        assert!(c.lookup(t0, &first).is_none(), "the oldest went");
    }
}
