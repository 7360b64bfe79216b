//! The envelope scanner: on any line it agrees with serde_json (the reference it falls back
//! to), batches and request metadata never panic, an answer head found in the start of a line
//! names the id of the whole answer, the params' request metadata read in the parse is what
//! [`jsonrpc::request_meta`] reads, and splicing a new id in keeps the rest of the line. The
//! 2026-07-28 envelope in `params._meta` is read and stripped as serde_json reads and rebuilds
//! it, a field of any object is the one serde_json finds, and a result with the modern members
//! spliced in is still one JSON object.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rmcp_mux::jsonrpc::{self, era, Kind, Line, Parsed, Raw};

fuzz_target!(|data: &[u8]| {
    let fast = jsonrpc::parse_one(data);
    let slow = jsonrpc::parse_one_serde(data);
    assert_eq!(fast, slow, "scanner and serde_json disagree");
    if let (Ok(f), Ok(s)) = (&fast, &slow) {
        let meta = jsonrpc::request_meta(f.params);
        assert_eq!(f.meta, meta, "the params' meta read in the parse differs");
        assert_eq!(
            meta,
            jsonrpc::request_meta_serde(s.params),
            "request metadata differs"
        );
        if let Some(m) = meta.meta {
            envelope_meta(m);
            // What the router reads and strips from the one scan of the params.
            assert_eq!(era::check(meta.envelope), era::read(m), "envelope members differ");
            if !meta.foreign {
                let token = meta.progress_token.map(|_| &b"12"[..]);
                assert_eq!(
                    &era::token_only(token).expect("an id fits")[..],
                    &era::strip_serde(m, token)[..],
                    "a _meta of only the envelope and a token"
                );
            }
        }
        for object in [f.params, f.result, f.error].into_iter().flatten() {
            for name in ["_meta", "resultType", "code", "x", r"\u0078"] {
                assert_eq!(
                    jsonrpc::field(Some(object), name),
                    jsonrpc::field_serde(Some(object), name),
                    "field {name} differs"
                );
            }
        }
        if let Some(result) = f.result {
            result_head(data, result);
        }
    }
    if let Ok(Parsed::Batch(items)) = jsonrpc::parse(data) {
        for item in items {
            let _ = jsonrpc::parse_one(item.get().as_bytes());
        }
    }

    // An answer head seen in any prefix of the line is the id of the whole line's answer.
    for cut in [data.len(), data.len() / 2, data.len().min(64)] {
        let Some((n, span)) = jsonrpc::answer_head(&data[..cut]) else {
            continue;
        };
        let mut digits = [0u8; 20];
        assert_eq!(&data[span.clone()], jsonrpc::decimal(n, &mut digits));
        if let Ok(env) = &fast {
            if matches!(env.kind, Kind::Response | Kind::Error) {
                let id = env.id.expect("an answer with a head has an id");
                assert_eq!(id.get().as_bytes(), &data[span.clone()]);
            }
        }
        // The id replaced by another: the same line around it, shared or copied alike.
        let line = Bytes::copy_from_slice(data);
        let new = b"\"x\"";
        let shared = Line::splice(&line, &mut [(span.clone(), &new[..])]).to_bytes();
        let copied = jsonrpc::splice(&line, &mut [(span.clone(), &new[..])]);
        assert_eq!(shared, copied);
        assert_eq!(&shared[..span.start], &data[..span.start]);
        assert_eq!(&shared[span.start + new.len()..], &data[span.end..]);
    }

    // A request's id, spliced by the router's own helpers, parses back to the new id.
    if let Ok(env) = &fast {
        if let Some(id) = env.id {
            let span = jsonrpc::span_in(data, id.get());
            let line = Bytes::copy_from_slice(data);
            let out = jsonrpc::splice(&line, &mut [(span, &b"12345"[..])]);
            let again = jsonrpc::parse_one(&out).expect("a new id keeps the line valid");
            assert_eq!(again.kind, env.kind);
            assert_eq!(again.id.map(|r| r.get()), Some("12345"));
        }
    }
});

/// A request's `_meta`: the scanner reads the envelope as serde_json does, and the stripped
/// `_meta` is JSON with the same members as serde_json's rebuild of it.
fn envelope_meta(meta: Raw<'_>) {
    assert_eq!(era::read(meta), era::read_serde(meta), "envelope differs");
    for token in [None, Some(&b"12"[..])] {
        let fast: serde_json::Value = serde_json::from_slice(&era::strip(meta, token))
            .expect("the stripped _meta is JSON");
        let slow: serde_json::Value = serde_json::from_slice(&era::strip_serde(meta, token))
            .expect("serde_json's stripped _meta is JSON");
        assert_eq!(fast, slow, "stripped _meta differs");
        let fast = fast.as_object().expect("the stripped _meta is an object");
        assert!(fast.keys().all(|k| !k.starts_with(era::PREFIX)));
    }
}

/// The modern members spliced in after a result's opening brace leave one JSON object that
/// has them, and the rest of the line as it was.
fn result_head(line: &[u8], result: Raw<'_>) {
    for cacheable in [false, true] {
        let Some(head) = era::result_head(result, cacheable) else {
            assert!(!result.get().starts_with('{'));
            continue;
        };
        let at = jsonrpc::span_in(line, result.get()).start + 1;
        let out = jsonrpc::splice(line, &mut [(at..at, &head[..])]);
        let again = jsonrpc::parse_one(&out).expect("the line stays a message");
        let r: serde_json::Value =
            serde_json::from_str(again.result.expect("still a result").get()).unwrap();
        assert!(r.get("resultType").is_some());
        if cacheable {
            assert!(r.get("ttlMs").is_some() && r.get("cacheScope").is_some());
        }
    }
}
