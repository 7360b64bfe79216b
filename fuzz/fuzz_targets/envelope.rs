//! The envelope scanner: on any line it agrees with serde_json (the reference it falls back
//! to), batches and request metadata never panic, an answer head found in the start of a line
//! names the id of the whole answer, and splicing a new id in keeps the rest of the line.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rmcp_mux::jsonrpc::{self, Kind, Line, Parsed};

fuzz_target!(|data: &[u8]| {
    let fast = jsonrpc::parse_one(data);
    let slow = jsonrpc::parse_one_serde(data);
    assert_eq!(fast, slow, "scanner and serde_json disagree");
    if let (Ok(f), Ok(s)) = (&fast, &slow) {
        assert_eq!(
            jsonrpc::request_meta(f.params),
            jsonrpc::request_meta_serde(s.params),
            "request metadata differs"
        );
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
