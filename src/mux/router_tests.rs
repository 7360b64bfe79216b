//! Router unit tests: a harness on a fake clock drives the state machine message by message,
//! one test (at least) per row of PROTOCOL.md.

use super::*;
use crate::config::Era;
use serde_json::{json, Value};
use std::path::PathBuf;

fn cfg() -> ServerConfig {
    ServerConfig {
        name: "srv".into(),
        socket: PathBuf::from("/tmp/srv.sock"),
        cmd: "srv".into(),
        args: vec![],
        env: Default::default(),
        cwd: None,
        enabled: true,
        lazy_start: false,
        max_active_clients: 4,
        max_request_bytes: 1024,
        max_response_bytes: 1 << 20,
        request_timeout: Duration::from_millis(1000),
        restart_backoff: Duration::from_millis(100),
        restart_backoff_max: Duration::from_millis(1000),
        max_restarts: 3,
        shutdown_grace: Duration::from_millis(100),
        capabilities: Capabilities {
            sampling: true,
            elicitation: true,
            roots: false,
        },
        era: crate::config::Era::Handshake,
        roots: None,
        server_request_policy: ServerRequestPolicy::MostRecent,
        status_file: None,
        share: crate::config::Share::Global,
        idle_stop: None,
        max_instances: 16,
    }
}

const INIT_RESULT: &str = r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"}}"#;

struct H {
    r: Router,
    now: Instant,
}

fn v(line: &Line) -> Value {
    let b = line.to_bytes();
    serde_json::from_slice(&b).unwrap_or_else(|e| panic!("not JSON: {e}: {:?}", b))
}

/// Whether the line's longest piece is a slice of `of` (shared, not copied).
fn shares(line: &Line, of: &Bytes) -> bool {
    let longest = line.parts().iter().max_by_key(|p| p.len()).unwrap();
    let (base, at) = (of.as_ptr() as usize, longest.as_ptr() as usize);
    longest.len() > of.len() / 2 && at >= base && at + longest.len() <= base + of.len()
}

impl H {
    fn new(cfg: ServerConfig) -> H {
        H {
            r: Router::new(cfg),
            now: Instant::now(),
        }
    }

    /// A server whose child is up and initialized.
    fn running() -> H {
        Self::running_with(cfg())
    }

    fn running_with(cfg: ServerConfig) -> H {
        let mut h = H::new(cfg);
        assert_eq!(h.drain(), vec![Action::Spawn]);
        h.spawned_and_init(INIT_RESULT);
        h
    }

    fn spawned_and_init(&mut self, result: &str) -> Vec<Action> {
        self.r.handle(self.now, Input::ChildSpawned { pid: 42 });
        let out = self.drain();
        let init = child_msgs(&out);
        assert_eq!(init.len(), 1, "{out:?}");
        assert_eq!(init[0]["method"], "initialize");
        assert_eq!(
            init[0]["params"]["protocolVersion"],
            UPSTREAM_PROTOCOL_VERSION
        );
        let id = init[0]["id"].clone();
        self.child(&json!({"jsonrpc":"2.0","id":id,"result":serde_json::from_str::<Value>(result).unwrap()}))
    }

    fn drain(&mut self) -> Vec<Action> {
        let mut out = vec![];
        while let Some(a) = self.r.poll_action() {
            out.push(a);
        }
        out
    }

    fn connect(&mut self, c: u64) -> Vec<Action> {
        self.r.handle(self.now, Input::ClientConnected(ClientId(c)));
        self.drain()
    }

    fn client(&mut self, c: u64, msg: &Value) -> Vec<Action> {
        self.client_raw(c, &msg.to_string())
    }

    fn client_raw(&mut self, c: u64, line: &str) -> Vec<Action> {
        self.r.handle(
            self.now,
            Input::ClientLine(ClientId(c), Bytes::from(line.to_owned())),
        );
        self.drain()
    }

    fn child(&mut self, msg: &Value) -> Vec<Action> {
        self.child_raw(&msg.to_string())
    }

    fn child_raw(&mut self, line: &str) -> Vec<Action> {
        self.r
            .handle(self.now, Input::ChildLine(Bytes::from(line.to_owned())));
        self.drain()
    }

    fn advance(&mut self, ms: u64) -> Vec<Action> {
        self.now += Duration::from_millis(ms);
        self.r.handle_timeout(self.now);
        self.drain()
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        self.r.handle(self.now, input);
        self.drain()
    }

    /// Connects and completes a client handshake with the given capabilities.
    fn ready(&mut self, c: u64, caps: Value) {
        self.connect(c);
        let out = self.client(
            c,
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":caps,"clientInfo":{"name":"t","version":"1"}}}),
        );
        assert_eq!(client_msgs(&out, c).len(), 1, "{out:?}");
        let out = self.client(
            c,
            &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        );
        assert!(out.is_empty(), "initialized must be swallowed: {out:?}");
    }

    /// Connects client `c` and sends its `initialize`, which waits for the child.
    fn ready_later(&mut self, c: u64) {
        self.connect(c);
        let out = self.client(
            c,
            &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
        );
        assert!(out.is_empty(), "{out:?}");
    }

    /// Sends a request from client `c` and returns the upstream id it got.
    fn request(&mut self, c: u64, id: Value, method: &str, params: Value) -> Value {
        let out = self.client(
            c,
            &json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}),
        );
        let sent = child_msgs(&out);
        assert_eq!(sent.len(), 1, "expected one forwarded message: {out:?}");
        assert_eq!(sent[0]["method"], method);
        sent[0]["id"].clone()
    }
}

fn child_msgs(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToChild(b) => Some(v(b)),
            _ => None,
        })
        .collect()
}

fn client_msgs(actions: &[Action], c: u64) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToClient(id, b) if *id == ClientId(c) => Some(v(b)),
            _ => None,
        })
        .collect()
}

fn any_client_msgs(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::ToClient(..)))
        .count()
}

// ----- requests and responses -----

#[test]
fn ids_are_rewritten_and_restored_with_their_json_type() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    let up1 = h.request(1, json!(1), "tools/list", json!({}));
    let up2 = h.request(2, json!("1"), "tools/list", json!({}));
    assert_ne!(up1, up2, "upstream ids must be unique per server");
    // Out of order: the second answer first.
    let out = h.child(&json!({"jsonrpc":"2.0","id":up2,"result":{"who":2}}));
    let got = client_msgs(&out, 2);
    assert_eq!(
        got,
        vec![json!({"jsonrpc":"2.0","id":"1","result":{"who":2}})]
    );
    assert!(client_msgs(&out, 1).is_empty());
    let out = h.child(&json!({"jsonrpc":"2.0","id":up1,"result":{"who":1}}));
    assert_eq!(
        client_msgs(&out, 1),
        vec![json!({"jsonrpc":"2.0","id":1,"result":{"who":1}})]
    );
}

#[test]
fn large_lines_are_rewritten_in_place_not_copied() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let pad = "x".repeat(1 << 20);
    let request = Bytes::from(
        json!({"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"echo","arguments":{"text":pad},"_meta":{"progressToken":"tok"}}})
            .to_string(),
    );
    h.r.handle(h.now, Input::ClientLine(ClientId(1), request.clone()));
    let out = h.drain();
    let [Action::ToChild(up_line)] = &out[..] else {
        panic!("one forwarded request: {out:?}");
    };
    assert!(
        shares(up_line, &request),
        "the request's payload was copied"
    );
    let sent = v(up_line);
    let up = sent["id"].clone();
    assert!(up.is_u64());
    assert_eq!(sent["params"]["_meta"]["progressToken"], up);
    assert_eq!(sent["params"]["arguments"]["text"], pad.as_str());

    let result = Bytes::from(
        json!({"jsonrpc":"2.0","id":up,"result":{"content":[{"type":"text","text":pad}]}})
            .to_string(),
    );
    h.r.handle(h.now, Input::ChildLine(result.clone()));
    let out = h.drain();
    let [Action::ToClient(ClientId(1), line)] = &out[..] else {
        panic!("one answer for client 1: {out:?}");
    };
    assert!(shares(line, &result), "the result's payload was copied");
    let got = v(line);
    assert_eq!(got["id"], "big");
    assert_eq!(got["result"]["content"][0]["text"], pad.as_str());
}

// ----- long answers passed on as they arrive -----

fn begins(h: &mut H, up: &Value) -> Vec<Action> {
    h.input(Input::ChildAnswerBegins(up.as_u64().unwrap()))
}

/// A long answer to an ordinary request may be passed on while it arrives: the router names
/// the client and its id, forgets the request (a cancel or timeout now has nothing to act
/// on), and once the whole line has come, says it was whole and sends nothing else.
#[test]
fn a_long_answer_is_streamed_to_its_client_and_checked_when_whole() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    let up = h.request(1, json!("a"), "tools/call", json!({"name":"echo"}));
    h.request(2, json!("b"), "tools/call", json!({"name":"echo"}));
    assert!(!h.r.is_streaming());
    let out = begins(&mut h, &up);
    assert_eq!(
        out,
        vec![Action::StreamAnswer(
            ClientId(1),
            Bytes::from_static(b"\"a\"")
        )]
    );
    assert!(h.r.is_streaming());
    assert_eq!(
        h.r.status().pending,
        1,
        "only client 2's request is pending"
    );
    let out = h.advance(5000);
    assert!(
        client_msgs(&out, 1).is_empty(),
        "no timeout for an answer that is on its way: {out:?}"
    );
    let out = h.child(&json!({"id":up,"jsonrpc":"2.0","result":{"content":[]}}));
    assert_eq!(out, vec![Action::StreamEnd { whole: true }]);
    assert!(!h.r.is_streaming());
}

/// An answer that turns out cut off (the child exits, the line is too long) or not valid
/// JSON-RPC ends the line where it was cut, and the client gets an error for its request.
#[test]
fn a_broken_streamed_answer_ends_with_an_error_for_its_request() {
    for ending in ["garbage", "other id", "too long", "exit"] {
        let mut h = H::running();
        h.ready(1, json!({}));
        let up = h.request(1, json!(7), "tools/call", json!({"name":"echo"}));
        assert_eq!(begins(&mut h, &up).len(), 1);
        let out = match ending {
            "garbage" => h.child_raw(&format!(r#"{{"id":{up},"jsonrpc":"2.0","result":{{"cut"#)),
            "other id" => {
                h.child(&json!({"id":up.as_u64().unwrap() + 1,"jsonrpc":"2.0","result":{}}))
            }
            "too long" => h.input(Input::ChildTooLong),
            _ => h.input(Input::ChildExited("killed".into())),
        };
        assert_eq!(
            out[0],
            Action::StreamEnd { whole: false },
            "{ending}: {out:?}"
        );
        let got = client_msgs(&out, 1);
        assert_eq!(got.len(), 1, "{ending}: {out:?}");
        assert_eq!(got[0]["id"], 7);
        assert_eq!(got[0]["error"]["code"], codes::INTERNAL_ERROR);
        assert_eq!(got[0]["error"]["data"]["reason"], reasons::BROKEN_ANSWER);
        assert!(!h.r.is_streaming());
        if ending != "exit" {
            // The next answer is routed as usual again.
            let up = h.request(1, json!(8), "tools/list", json!({}));
            let out = h.child(&json!({"id":up,"jsonrpc":"2.0","result":{}}));
            assert_eq!(client_msgs(&out, 1)[0]["id"], 8, "{ending}");
        }
    }
}

/// What the mux itself must read whole is never streamed: its own requests, a batch's
/// answers, a task's, an id nobody waits for. The line is then routed as usual.
#[test]
fn answers_the_router_must_read_whole_are_not_streamed() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let out = h.input(Input::ChildAnswerBegins(999));
    assert!(out.is_empty() && !h.r.is_streaming(), "{out:?}");
    let up = h.request(
        1,
        json!(1),
        "tools/call",
        json!({"name":"t","task":{"ttl":1}}),
    );
    assert!(begins(&mut h, &up).is_empty());
    let out = h.child(&json!({"id":up,"jsonrpc":"2.0","result":{"task":{"taskId":"T"}}}));
    assert_eq!(client_msgs(&out, 1)[0]["id"], 1);
    let up = h.request(1, json!(2), "tasks/list", json!({}));
    assert!(begins(&mut h, &up).is_empty());
    let out = h.client(
        1,
        &json!([{"jsonrpc":"2.0","id":3,"method":"tools/list"},{"jsonrpc":"2.0","id":4,"method":"tools/list"}]),
    );
    let ups: Vec<Value> = child_msgs(&out).iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ups.len(), 2);
    assert!(begins(&mut h, &ups[0]).is_empty(), "a batch's answer");
    assert!(!h.r.is_streaming());
}

/// A client whose input closed is not closed while an answer to it is still being passed on.
#[test]
fn a_closing_client_waits_for_the_answer_being_streamed() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let up = h.request(1, json!(1), "tools/call", json!({"name":"echo"}));
    begins(&mut h, &up);
    let out = h.input(Input::ClientInputClosed(ClientId(1)));
    assert!(!out.contains(&Action::CloseClient(ClientId(1))), "{out:?}");
    let out = h.child(&json!({"id":up,"jsonrpc":"2.0","result":{}}));
    assert_eq!(
        out,
        vec![
            Action::StreamEnd { whole: true },
            Action::CloseClient(ClientId(1))
        ]
    );
}

#[test]
fn unknown_response_ids_are_dropped() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let out = h.child(&json!({"jsonrpc":"2.0","id":999,"result":{}}));
    assert!(out.is_empty());
    let out = h.child(&json!({"jsonrpc":"2.0","id":"x","result":{}}));
    assert!(out.is_empty());
}

#[test]
fn error_responses_are_routed_like_results() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let up = h.request(1, json!(7), "tools/call", json!({"name":"x"}));
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"error":{"code":-32601,"message":"nope"}}));
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], 7);
    assert_eq!(got[0]["error"]["code"], -32601);
}

#[test]
fn many_requests_with_the_same_ids_from_two_clients_each_get_their_own() {
    let mut h = H::running_with(ServerConfig {
        request_timeout: Duration::from_secs(60),
        ..cfg()
    });
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    let mut ups = vec![];
    for i in 0..300 {
        for c in [1u64, 2] {
            let up = h.request(
                c,
                json!(i),
                "tools/call",
                json!({"_meta":{"progressToken":i}}),
            );
            ups.push((c, i, up));
        }
    }
    // Progress for every request, then answers, in reverse order.
    for (c, i, up) in ups.iter().rev() {
        let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":up,"progress":1}}));
        let got = client_msgs(&out, *c);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["params"]["progressToken"], json!(i));
        assert_eq!(any_client_msgs(&out), 1);
        let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{"c":c,"i":i}}));
        let got = client_msgs(&out, *c);
        assert_eq!(
            got,
            vec![json!({"jsonrpc":"2.0","id":i,"result":{"c":c,"i":i}})]
        );
        assert_eq!(any_client_msgs(&out), 1);
    }
    assert_eq!(h.r.status().pending, 0);
}

// ----- progress -----

#[test]
fn progress_tokens_are_made_unique_and_restored() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    // Both clients use token 0 (the SDKs reuse the request id, rmcp counts from 0).
    let out1 = h.client(1, &json!({"jsonrpc":"2.0","id":0,"method":"tools/call","params":{"name":"a","_meta":{"progressToken":0}}}));
    let out2 = h.client(2, &json!({"jsonrpc":"2.0","id":0,"method":"tools/call","params":{"name":"a","_meta":{"progressToken":0}}}));
    let t1 = child_msgs(&out1)[0]["params"]["_meta"]["progressToken"].clone();
    let t2 = child_msgs(&out2)[0]["params"]["_meta"]["progressToken"].clone();
    assert_ne!(t1, t2);
    assert_eq!(
        child_msgs(&out1)[0]["params"]["name"],
        "a",
        "payload untouched"
    );
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":t2,"progress":5,"total":10}}));
    let got = client_msgs(&out, 2);
    assert_eq!(
        got[0]["params"],
        json!({"progressToken":0,"progress":5,"total":10})
    );
    assert!(client_msgs(&out, 1).is_empty());
}

#[test]
fn progress_after_the_response_or_a_cancel_is_dropped() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"_meta":{"progressToken":"tok"}}}));
    let up = child_msgs(&out)[0]["id"].clone();
    h.client(
        1,
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}}),
    );
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":up,"progress":1}}));
    assert!(out.is_empty(), "progress after cancel leaked: {out:?}");

    let out = h.client(1, &json!({"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"_meta":{"progressToken":"tok"}}}));
    let up = child_msgs(&out)[0]["id"].clone();
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":{}}));
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":up,"progress":1}}));
    assert!(out.is_empty());
}

// ----- cancellation, disconnects, timeouts -----

#[test]
fn client_cancel_is_rewritten_and_forgets_the_request() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let up = h.request(1, json!("r1"), "tools/call", json!({}));
    let out = h.client(1, &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r1","reason":"user"}}));
    let sent = child_msgs(&out);
    assert_eq!(sent[0]["method"], "notifications/cancelled");
    assert_eq!(sent[0]["params"]["requestId"], up);
    assert_eq!(sent[0]["params"]["reason"], "user");
    assert_eq!(h.r.status().pending, 0);
    // A late answer reaches nobody.
    assert!(h
        .child(&json!({"jsonrpc":"2.0","id":up,"result":{}}))
        .is_empty());
    // Cancelling something unknown forwards nothing.
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"zzz"}}),
    );
    assert!(out.is_empty());
}

#[test]
fn a_client_cannot_cancel_another_clients_request() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    h.request(1, json!(5), "tools/call", json!({}));
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}),
    );
    assert!(out.is_empty());
    assert_eq!(h.r.status().pending, 1);
}

#[test]
fn a_cancel_finds_its_own_clients_request_among_equal_ids() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    let first = h.request(1, json!(5), "tools/call", json!({}));
    let second = h.request(2, json!(5), "tools/call", json!({}));
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}),
    );
    assert_eq!(child_msgs(&out)[0]["params"]["requestId"], second);
    assert_eq!(h.r.status().pending, 1);
    // Client 1's request is still routed to it.
    let out = h.child(&json!({"jsonrpc":"2.0","id":first,"result":{"ok":1}}));
    assert_eq!(client_msgs(&out, 1)[0]["id"], 5);
    assert_eq!(client_msgs(&out, 1)[0]["result"]["ok"], 1);
}

#[test]
fn disconnect_cancels_in_flight_and_fails_server_requests_to_it() {
    let mut h = H::running();
    h.ready(1, json!({"sampling":{}}));
    h.ready(2, json!({}));
    let up_a = h.request(1, json!(1), "tools/call", json!({}));
    let up_b = h.request(1, json!(2), "tools/call", json!({}));
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}));
    assert_eq!(client_msgs(&out, 1).len(), 1);
    let out = h.input(Input::ClientGone(ClientId(1)));
    let sent = child_msgs(&out);
    let cancelled: Vec<Value> = sent
        .iter()
        .filter(|m| m["method"] == "notifications/cancelled")
        .map(|m| m["params"]["requestId"].clone())
        .collect();
    assert_eq!(cancelled.len(), 2);
    assert!(cancelled.contains(&up_a) && cancelled.contains(&up_b));
    let err = sent
        .iter()
        .find(|m| m["id"] == "s1")
        .expect("server request answered");
    assert_eq!(err["error"]["data"]["reason"], reasons::CLIENT_GONE);
    // Nothing of its reaches anyone afterwards.
    let out = h.child(&json!({"jsonrpc":"2.0","id":up_a,"result":{}}));
    assert_eq!(any_client_msgs(&out), 0);
    assert_eq!(h.r.status().clients, 1);
}

#[test]
fn timeout_cancels_upstream_and_tells_the_client() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let up = h.request(1, json!(9), "tools/call", json!({}));
    assert_eq!(
        h.r.poll_timeout(),
        Some(h.now + Duration::from_millis(1000))
    );
    assert!(h.advance(999).is_empty());
    let out = h.advance(1);
    let sent = child_msgs(&out);
    assert_eq!(sent[0]["method"], "notifications/cancelled");
    assert_eq!(sent[0]["params"]["requestId"], up);
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], 9);
    assert_eq!(got[0]["error"]["code"], codes::INTERNAL_ERROR);
    assert_eq!(
        got[0]["error"]["data"],
        json!({"reason":"upstream_timeout","timeout_ms":1000})
    );
}

/// The deadline ahead is always the earliest request still unanswered, whatever order the
/// answers come in, and one that arrives with an earlier clock (not in the daemon, whose clock
/// only goes forward, but the router does not count on it) still times out first.
#[test]
fn the_next_deadline_is_the_earliest_unanswered_request() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let t0 = h.now;
    let ms = Duration::from_millis;
    let up_a = h.request(1, json!("a"), "tools/call", json!({}));
    h.now = t0 + ms(10);
    let up_b = h.request(1, json!("b"), "tools/call", json!({}));
    h.now = t0 + ms(20);
    let up_c = h.request(1, json!("c"), "tools/call", json!({}));
    // The middle one answered first: the first still decides.
    h.child(&json!({"jsonrpc":"2.0","id":up_b,"result":{}}));
    assert_eq!(h.r.poll_timeout(), Some(t0 + ms(1000)));
    h.child(&json!({"jsonrpc":"2.0","id":up_a,"result":{}}));
    assert_eq!(h.r.poll_timeout(), Some(t0 + ms(1020)));
    // A request stamped before the others goes ahead of them.
    h.now = t0 + ms(5);
    h.request(1, json!("d"), "tools/call", json!({}));
    assert_eq!(h.r.poll_timeout(), Some(t0 + ms(1005)));
    h.now = t0 + ms(1005);
    h.r.handle_timeout(h.now);
    let timed_out = client_msgs(&h.drain(), 1);
    assert_eq!(timed_out.len(), 1, "{timed_out:?}");
    assert_eq!(timed_out[0]["id"], "d");
    assert_eq!(h.r.poll_timeout(), Some(t0 + ms(1020)));
    h.child(&json!({"jsonrpc":"2.0","id":up_c,"result":{}}));
    assert_eq!(h.r.poll_timeout(), None);
}

/// Answers that overtake an old request do not pile up behind it: the queue of deadlines is
/// swept once most of it is answered, and the old request still times out on time.
#[test]
fn answered_deadlines_behind_a_slow_request_are_swept() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let start = h.now;
    h.request(1, json!("slow"), "tools/call", json!({}));
    for i in 0..10_000u64 {
        let up = h.request(1, json!(i), "tools/call", json!({}));
        h.child(&json!({"jsonrpc":"2.0","id":up,"result":{}}));
        assert!(
            h.r.deadlines.len() <= 2 * h.r.pending.len() + 65,
            "{} deadlines for {} pending",
            h.r.deadlines.len(),
            h.r.pending.len()
        );
    }
    assert_eq!(
        h.r.poll_timeout(),
        Some(start + Duration::from_millis(1000))
    );
    h.now = start + Duration::from_millis(1000);
    h.r.handle_timeout(h.now);
    let got = client_msgs(&h.drain(), 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], "slow");
    assert_eq!(h.r.poll_timeout(), None);
    assert!(h.r.deadlines.is_empty());
}

// ----- initialize -----

#[test]
fn initialize_is_answered_from_the_cache_and_never_forwarded() {
    let mut h = H::running();
    h.connect(1);
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":"2026-07-28","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}));
    assert!(child_msgs(&out).is_empty());
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], "init-1");
    // The upstream's negotiated version, not the client's.
    assert_eq!(got[0]["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(got[0]["result"]["serverInfo"]["name"], "s");
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    );
    assert!(out.is_empty());
}

#[test]
fn concurrent_first_initializes_make_one_upstream_handshake() {
    let mut h = H::new(ServerConfig {
        lazy_start: true,
        ..cfg()
    });
    assert!(h.drain().is_empty(), "lazy: no child at start");
    assert_eq!(h.r.status().state, ServerState::Lazy);
    h.connect(1);
    h.connect(2);
    let init =
        |id| json!({"jsonrpc":"2.0","id":id,"method":"initialize","params":{"capabilities":{}}});
    let out = h.client(1, &init(1));
    assert_eq!(out, vec![Action::Spawn]);
    let out = h.client(2, &init(1));
    assert!(out.is_empty());
    let out = h.spawned_and_init(INIT_RESULT);
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["method"], "notifications/initialized");
    assert_eq!(client_msgs(&out, 1)[0]["result"]["serverInfo"]["name"], "s");
    assert_eq!(client_msgs(&out, 2)[0]["id"], 1);
}

#[test]
fn only_one_initialized_notification_per_child() {
    let mut h = H::running();
    for c in 1..=3 {
        h.ready(c, json!({}));
    }
    // `ready` asserts each client's initialized is swallowed; the child saw exactly one.
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    );
    assert!(out.is_empty());
}

#[test]
fn upstream_declares_configured_capabilities_not_the_clients() {
    let mut h = H::new(ServerConfig {
        capabilities: Capabilities {
            sampling: false,
            elicitation: true,
            roots: true,
        },
        ..cfg()
    });
    h.drain();
    h.r.handle(h.now, Input::ChildSpawned { pid: 1 });
    let out = h.drain();
    let caps = &child_msgs(&out)[0]["params"]["capabilities"];
    assert!(caps.get("sampling").is_none());
    assert!(caps.get("elicitation").is_some());
    assert_eq!(caps["roots"]["listChanged"], true);
}

// ----- ping -----

#[test]
fn ping_is_answered_locally_in_both_directions() {
    let mut h = H::running();
    h.connect(1);
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":3,"method":"ping"}));
    assert!(child_msgs(&out).is_empty());
    assert_eq!(
        client_msgs(&out, 1),
        vec![json!({"jsonrpc":"2.0","id":3,"result":{}})]
    );
    let out = h.child(&json!({"jsonrpc":"2.0","id":"p","method":"ping"}));
    assert_eq!(
        child_msgs(&out),
        vec![json!({"jsonrpc":"2.0","id":"p","result":{}})]
    );
    assert_eq!(any_client_msgs(&out), 0);
}

// ----- notifications from the server -----

#[test]
fn list_changed_goes_to_ready_clients_only() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.connect(2); // still in its handshake
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}));
    assert_eq!(client_msgs(&out, 1).len(), 1);
    assert!(client_msgs(&out, 2).is_empty());
}

#[test]
fn subscriptions_are_reference_counted() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    let sub = |id| json!({"jsonrpc":"2.0","id":id,"method":"resources/subscribe","params":{"uri":"file:///a"}});
    let unsub = |id| json!({"jsonrpc":"2.0","id":id,"method":"resources/unsubscribe","params":{"uri":"file:///a"}});
    let out = h.client(1, &sub(1));
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "0->1 is forwarded");
    h.child(&json!({"jsonrpc":"2.0","id":sent[0]["id"],"result":{}}));
    let out = h.client(2, &sub(1));
    assert!(child_msgs(&out).is_empty(), "1->2 is answered locally");
    assert_eq!(client_msgs(&out, 2)[0]["result"], json!({}));
    // Updates go to both subscribers, and to subscribers of a parent URI.
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a"}}));
    assert_eq!(any_client_msgs(&out), 2);
    let out = h.client(1, &unsub(2));
    assert!(child_msgs(&out).is_empty(), "2->1 is answered locally");
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a/b"}}));
    assert_eq!(client_msgs(&out, 2).len(), 1);
    assert!(client_msgs(&out, 1).is_empty());
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///ab"}}));
    assert!(out.is_empty(), "a sibling URI is not under file:///a");
    // The last subscriber leaving sends the unsubscribe upstream.
    let out = h.input(Input::ClientGone(ClientId(2)));
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["method"], "resources/unsubscribe");
    assert_eq!(sent[0]["params"]["uri"], "file:///a");
}

#[test]
fn log_level_is_the_most_verbose_upstream_and_filtered_per_client() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    h.ready(3, json!({}));
    let set = |level| json!({"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":level}});
    let out = h.client(1, &set("error"));
    assert_eq!(child_msgs(&out)[0]["params"]["level"], "error");
    assert_eq!(client_msgs(&out, 1)[0]["result"], json!({}));
    let out = h.client(2, &set("info"));
    assert_eq!(child_msgs(&out)[0]["params"]["level"], "info");
    let out = h.client(1, &set("warning"));
    assert!(
        child_msgs(&out).is_empty(),
        "info is still the most verbose"
    );
    let msg = |level| json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":level,"data":"x"}});
    let out = h.child(&msg("info"));
    assert!(client_msgs(&out, 1).is_empty());
    assert_eq!(client_msgs(&out, 2).len(), 1);
    assert_eq!(
        client_msgs(&out, 3).len(),
        1,
        "a client that set no level gets everything"
    );
    let out = h.child(&msg("error"));
    assert_eq!(any_client_msgs(&out), 3);
    let out = h.client(1, &set("loud"));
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["code"],
        codes::INVALID_PARAMS
    );
}

// ----- server -> client requests -----

#[test]
fn sampling_goes_to_the_capable_client_with_a_request_in_flight() {
    let mut h = H::running();
    h.ready(1, json!({"sampling":{}}));
    h.ready(2, json!({"sampling":{}}));
    h.ready(3, json!({})); // not capable, most recent request
    h.request(2, json!(1), "tools/call", json!({"name":"sample"}));
    h.request(3, json!(1), "tools/call", json!({}));
    let out = h.child(&json!({"jsonrpc":"2.0","id":77,"method":"sampling/createMessage","params":{"maxTokens":1}}));
    let got = client_msgs(&out, 2);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(any_client_msgs(&out), 1);
    let mux_id = got[0]["id"].clone();
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","id":mux_id,"result":{"role":"assistant"}}),
    );
    assert_eq!(
        child_msgs(&out),
        vec![json!({"jsonrpc":"2.0","id":77,"result":{"role":"assistant"}})]
    );
    // The same reply again is not forwarded twice.
    let out = h.client(2, &json!({"jsonrpc":"2.0","id":mux_id,"result":{}}));
    assert!(out.is_empty());
}

#[test]
fn server_requests_never_reach_a_client_without_the_capability() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.request(1, json!(1), "tools/call", json!({}));
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":"e1","method":"elicitation/create","params":{}}));
    assert_eq!(any_client_msgs(&out), 0);
    let sent = child_msgs(&out);
    assert_eq!(sent[0]["id"], "e1");
    assert_eq!(
        sent[0]["error"]["data"]["reason"],
        reasons::NO_CAPABLE_CLIENT
    );
}

#[test]
fn in_flight_only_policy_refuses_idle_clients() {
    let mut h = H::running_with(ServerConfig {
        server_request_policy: ServerRequestPolicy::InFlightOnly,
        ..cfg()
    });
    h.ready(1, json!({"sampling":{}}));
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}));
    assert_eq!(any_client_msgs(&out), 0);
    let mut h = H::running();
    h.ready(1, json!({"sampling":{}}));
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}));
    assert_eq!(
        client_msgs(&out, 1).len(),
        1,
        "default policy falls back to a capable client"
    );
}

#[test]
fn roots_list_is_answered_from_config() {
    let mut h = H::running_with(ServerConfig {
        roots: Some(vec!["file:///p".into()]),
        ..cfg()
    });
    h.ready(1, json!({"roots":{}}));
    let out = h.child(&json!({"jsonrpc":"2.0","id":4,"method":"roots/list"}));
    assert_eq!(any_client_msgs(&out), 0);
    assert_eq!(
        child_msgs(&out)[0]["result"],
        json!({"roots":[{"uri":"file:///p"}]})
    );
}

#[test]
fn elicitation_complete_goes_to_the_asked_client_and_server_cancel_is_rewritten() {
    let mut h = H::running();
    h.ready(1, json!({"elicitation":{}}));
    h.ready(2, json!({"elicitation":{}}));
    h.request(2, json!(1), "tools/call", json!({}));
    let out = h.child(&json!({"jsonrpc":"2.0","id":5,"method":"elicitation/create","params":{"mode":"url","elicitationId":"el-1"}}));
    let mux_id = client_msgs(&out, 2)[0]["id"].clone();
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/elicitation/complete","params":{"elicitationId":"el-1"}}));
    assert_eq!(client_msgs(&out, 2).len(), 1);
    assert_eq!(any_client_msgs(&out), 1);
    let out = h.child(
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}),
    );
    let got = client_msgs(&out, 2);
    assert_eq!(got[0]["params"]["requestId"], mux_id);
    assert_eq!(any_client_msgs(&out), 1);
}

#[test]
fn roots_list_changed_is_forwarded_only_when_declared_and_debounced() {
    let mut h = H::running();
    h.ready(1, json!({"roots":{}}));
    let note = json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"});
    assert!(h.client(1, &note).is_empty(), "roots not declared upstream");
    let mut h = H::running_with(ServerConfig {
        capabilities: Capabilities {
            sampling: true,
            elicitation: true,
            roots: true,
        },
        ..cfg()
    });
    h.ready(1, json!({"roots":{}}));
    assert_eq!(child_msgs(&h.client(1, &note)).len(), 1);
    assert!(h.client(1, &note).is_empty());
    assert!(h.client(1, &note).is_empty());
    let out = h.advance(ROOTS_DEBOUNCE.as_millis() as u64);
    assert_eq!(
        child_msgs(&out).len(),
        1,
        "the burst collapses into one more"
    );
    assert!(h.advance(1000).is_empty());
}

// ----- tasks -----

#[test]
fn tasks_belong_to_the_client_that_created_them() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    let up = h.request(
        1,
        json!(1),
        "tools/call",
        json!({"name":"t","task":{"ttl":1000},"_meta":{"progressToken":"p"}}),
    );
    let out = h.child(
        &json!({"jsonrpc":"2.0","id":up,"result":{"task":{"taskId":"T1","status":"working"}}}),
    );
    assert_eq!(client_msgs(&out, 1)[0]["result"]["task"]["taskId"], "T1");
    // Progress stays routed for the task's life.
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":up,"progress":1}}));
    assert_eq!(client_msgs(&out, 1)[0]["params"]["progressToken"], "p");
    // Another client may not touch it.
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","id":8,"method":"tasks/get","params":{"taskId":"T1"}}),
    );
    assert!(child_msgs(&out).is_empty());
    assert_eq!(
        client_msgs(&out, 2)[0]["error"]["code"],
        codes::INVALID_PARAMS
    );
    h.request(1, json!(2), "tasks/get", json!({"taskId":"T1"}));
    // tasks/list is filtered per client.
    let up = h.request(2, json!(3), "tasks/list", json!({}));
    let out = h.child(
        &json!({"jsonrpc":"2.0","id":up,"result":{"tasks":[{"taskId":"T1"},{"taskId":"T9"}]}}),
    );
    assert_eq!(
        client_msgs(&out, 2)[0],
        json!({"jsonrpc":"2.0","id":3,"result":{"tasks":[]}})
    );
    // Status goes to the owner only; a terminal status ends the progress route.
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"T1","status":"completed"}}));
    assert_eq!(client_msgs(&out, 1).len(), 1);
    assert_eq!(any_client_msgs(&out), 1);
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":up,"progress":2}}));
    assert!(out.is_empty());
}

// ----- malformed input -----

#[test]
fn malformed_lines_get_parse_error_or_invalid_request_and_keep_the_connection() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let out = h.client_raw(1, "{not json");
    assert_eq!(
        client_msgs(&out, 1),
        vec![json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}})]
    );
    let out = h.client_raw(1, r#"{"hello":"world"}"#);
    assert_eq!(client_msgs(&out, 1)[0]["error"]["code"], -32600);
    assert!(!out.iter().any(|a| matches!(a, Action::CloseClient(_))));
    h.request(1, json!(1), "tools/list", json!({}));
}

#[test]
fn oversized_lines_are_refused_with_the_bound() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let out = h.input(Input::ClientTooLong(ClientId(1)));
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["error"]["code"], -32600);
    assert!(got[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1024 bytes"));
    assert_eq!(got[0]["error"]["data"]["limit"], 1024);
}

#[test]
fn garbage_from_the_child_is_skipped() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let up = h.request(1, json!(1), "tools/list", json!({}));
    assert!(h.child_raw("Server started on stdio!").is_empty());
    assert!(h.child_raw(r#"{"jsonrpc":"2.0""#).is_empty());
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{}}));
    assert_eq!(client_msgs(&out, 1).len(), 1);
}

#[test]
fn batches_are_split_and_answered_as_one_array() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let out = h.client_raw(1, r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":2,"method":"ping"},42]"#);
    let sent = child_msgs(&out);
    assert_eq!(
        sent.len(),
        2,
        "each element forwarded alone, never as a batch: {sent:?}"
    );
    assert!(sent.iter().all(|m| m.is_object()));
    assert!(
        client_msgs(&out, 1).is_empty(),
        "the array waits for every answer"
    );
    let up = sent.iter().find(|m| m["method"] == "tools/list").unwrap()["id"].clone();
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{"tools":[]}}));
    let got = client_msgs(&out, 1);
    let arr = got[0].as_array().expect("an array");
    assert_eq!(arr.len(), 3);
    assert!(arr.iter().any(|r| r["id"] == 2 && r["result"] == json!({})));
    assert!(arr
        .iter()
        .any(|r| r["id"] == 1 && r["result"]["tools"] == json!([])));
    assert!(arr.iter().any(|r| r["error"]["code"] == -32600));
    let out = h.client_raw(1, "[]");
    assert_eq!(client_msgs(&out, 1)[0]["error"]["code"], -32600);
}

#[test]
fn a_batch_with_a_cancelled_request_is_answered_without_it() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let out = h.client_raw(1, r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}},{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{}}]"#);
    let sent = child_msgs(&out);
    let second = sent.iter().rfind(|m| m["method"] == "tools/call").unwrap()["id"].clone();
    assert!(client_msgs(&out, 1).is_empty(), "{out:?}");
    let out = h.child(&json!({"jsonrpc":"2.0","id":second,"result":{"content":[]}}));
    let got = client_msgs(&out, 1);
    assert_eq!(
        got.len(),
        1,
        "the array goes out without the cancelled request: {out:?}"
    );
    let arr = got[0].as_array().expect("an array");
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["id"], 2);
    // A batch whose only request is cancelled is answered with nothing at all.
    let out = h.client_raw(1, r#"[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}},{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}]"#);
    assert!(client_msgs(&out, 1).is_empty(), "{out:?}");
    assert_eq!(h.r.status().pending, 0);
}

// ----- lifecycle -----

#[test]
fn crash_fails_in_flight_restarts_with_backoff_and_clients_stay() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.request(1, json!(1), "tools/call", json!({}));
    let out = h.input(Input::ChildExited("exited with status 1".into()));
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], 1);
    assert_eq!(
        got[0]["error"]["data"],
        json!({"reason":"upstream_exited","server":"srv"})
    );
    assert_eq!(h.r.status().state, ServerState::Backoff);
    assert_eq!(
        h.r.status().last_exit.as_deref(),
        Some("exited with status 1")
    );
    // A request during backoff is held and sent after the new handshake.
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    assert!(out.is_empty());
    assert!(h.advance(99).is_empty());
    assert_eq!(h.advance(1), vec![Action::Spawn]);
    let out = h.spawned_and_init(INIT_RESULT);
    let sent = child_msgs(&out);
    assert_eq!(sent[0]["method"], "notifications/initialized");
    assert_eq!(sent[1]["method"], "tools/list");
    assert_eq!(h.r.status().restarts, 1);
    // Same server identity: no list_changed.
    assert_eq!(any_client_msgs(&out), 0);
    let out = h.child(&json!({"jsonrpc":"2.0","id":sent[1]["id"],"result":{}}));
    assert_eq!(client_msgs(&out, 1)[0]["id"], 2);
}

#[test]
fn backoff_doubles_up_to_the_max_then_fails() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let mut delays = vec![];
    for _ in 0..3 {
        h.input(Input::ChildExited("boom".into()));
        let start = h.now;
        let deadline = h.r.poll_timeout().unwrap();
        delays.push((deadline - start).as_millis());
        h.now = deadline;
        h.r.handle_timeout(h.now);
        assert_eq!(h.drain(), vec![Action::Spawn]);
        h.input(Input::ChildSpawnFailed("no such file".into()));
        assert_ne!(h.r.status().state, ServerState::Running);
        // Spawn failure counts as a crash; take the next deadline from there.
        let d = h.r.poll_timeout();
        if h.r.status().state == ServerState::Failed {
            break;
        }
        let deadline = d.unwrap();
        delays.push((deadline - h.now).as_millis());
        h.now = deadline;
        h.r.handle_timeout(h.now);
        assert_eq!(h.drain(), vec![Action::Spawn]);
        h.spawned_and_init(INIT_RESULT);
    }
    assert_eq!(&delays[..3], &[100, 200, 400]);
    assert_eq!(h.r.status().state, ServerState::Failed);
    // Failed: requests get server_unavailable until a restart.
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":5,"method":"tools/list"}));
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["data"],
        json!({"reason":"server_unavailable","state":"failed"})
    );
    assert_eq!(
        h.input(Input::Command(Command::Restart)),
        vec![Action::Spawn]
    );
    h.spawned_and_init(INIT_RESULT);
    assert_eq!(h.r.status().state, ServerState::Running);
}

#[test]
fn restart_with_changed_identity_announces_list_changed_and_replays_state() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.client(
        1,
        &json!({"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"debug"}}),
    );
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"u://x"}}),
    );
    h.child(&json!({"jsonrpc":"2.0","id":child_msgs(&out)[0]["id"],"result":{}}));
    h.input(Input::ChildExited("boom".into()));
    h.advance(100);
    let out = h.spawned_and_init(
        r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"2"}}"#,
    );
    let sent = child_msgs(&out);
    let methods: Vec<&str> = sent.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        methods,
        vec![
            "notifications/initialized",
            "resources/subscribe",
            "logging/setLevel"
        ]
    );
    assert_eq!(sent[1]["params"]["uri"], "u://x");
    assert_eq!(sent[2]["params"]["level"], "debug");
    let got: Vec<String> = client_msgs(&out, 1)
        .iter()
        .map(|m| m["method"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got,
        vec![
            "notifications/tools/list_changed",
            "notifications/prompts/list_changed",
            "notifications/resources/list_changed"
        ]
    );
    // Replayed requests' answers reach no client.
    let out = h.child(&json!({"jsonrpc":"2.0","id":sent[1]["id"],"result":{}}));
    assert!(out.is_empty());
}

#[test]
fn stop_and_start_commands() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.request(1, json!(1), "tools/call", json!({}));
    let out = h.input(Input::Command(Command::Stop));
    assert!(out.contains(&Action::Kill));
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["data"],
        json!({"reason":"server_unavailable","state":"stopped"})
    );
    assert_eq!(h.r.status().state, ServerState::Stopped);
    let out = h.input(Input::ChildExited("killed by signal 15".into()));
    assert!(out.is_empty());
    assert_eq!(h.r.status().state, ServerState::Stopped);
    assert_eq!(h.r.status().restarts, 0, "a requested stop is not a crash");
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    assert_eq!(client_msgs(&out, 1)[0]["error"]["data"]["state"], "stopped");
    assert_eq!(h.input(Input::Command(Command::Start)), vec![Action::Spawn]);
    h.spawned_and_init(INIT_RESULT);
    h.request(1, json!(3), "tools/list", json!({}));
}

#[test]
fn restart_command_kills_then_spawns() {
    let mut h = H::running();
    assert_eq!(
        h.input(Input::Command(Command::Restart)),
        vec![Action::Kill]
    );
    assert_eq!(h.r.status().state, ServerState::Starting);
    assert_eq!(
        h.input(Input::ChildExited("killed".into())),
        vec![Action::Spawn]
    );
    h.spawned_and_init(INIT_RESULT);
    assert_eq!(h.r.status().restarts, 0);
}

#[test]
fn a_new_config_restarts_the_child_and_keeps_the_clients() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.request(1, json!(1), "tools/call", json!({}));
    let mut changed = cfg();
    changed.env.insert("K".into(), "v2".into());
    changed.request_timeout = Duration::from_millis(5000);
    let out = h.input(Input::Reconfigure(Box::new(changed)));
    assert_eq!(out, vec![Action::Kill], "no client is closed");
    // A request that comes while the old child stops waits for the new one.
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{}}),
    );
    assert!(child_msgs(&out).is_empty(), "{out:?}");
    let out = h.input(Input::ChildExited("killed by signal 15".into()));
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["data"]["reason"],
        "upstream_exited",
        "what the old child was sent is answered"
    );
    assert!(out.contains(&Action::Spawn), "{out:?}");
    assert!(!out.iter().any(|a| matches!(a, Action::CloseClient(_))));
    let out = h.spawned_and_init(INIT_RESULT);
    let sent = child_msgs(&out);
    assert_eq!(sent.last().unwrap()["method"], "tools/call", "{out:?}");
    // The new config is in effect: the held request's deadline is the new timeout.
    assert!(h.advance(1500).is_empty());
    let out = h.advance(4000);
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["data"]["reason"],
        "upstream_timeout"
    );
    assert_eq!(h.r.status().clients, 1);
    assert_eq!(h.r.status().restarts, 0, "a reload is not a crash");
}

#[test]
fn a_new_config_of_an_idle_lazy_server_starts_nothing() {
    let mut lazy = cfg();
    lazy.lazy_start = true;
    let mut h = H::new(lazy.clone());
    assert!(h.drain().is_empty());
    lazy.env.insert("K".into(), "v2".into());
    assert!(h
        .input(Input::Reconfigure(Box::new(lazy.clone())))
        .is_empty());
    assert_eq!(h.r.status().state, ServerState::Lazy);
    // Made eager, it starts at once, as a new server would.
    lazy.lazy_start = false;
    assert_eq!(
        h.input(Input::Reconfigure(Box::new(lazy))),
        vec![Action::Spawn]
    );
}

#[test]
fn initialize_timeout_restarts_the_child() {
    let mut h = H::new(cfg());
    h.drain();
    h.r.handle(h.now, Input::ChildSpawned { pid: 1 });
    h.drain();
    let out = h.advance(1000);
    assert_eq!(out, vec![Action::Kill]);
    let out = h.input(Input::ChildExited("killed by signal 15".into()));
    assert!(out.is_empty());
    assert_eq!(h.r.status().state, ServerState::Backoff);
    assert_eq!(
        h.r.status().last_exit.as_deref(),
        Some("killed by signal 15")
    );
}

#[test]
fn too_many_clients_get_an_error_and_are_closed() {
    let mut h = H::running();
    for c in 1..=4 {
        assert!(h.connect(c).is_empty());
    }
    let out = h.connect(5);
    assert_eq!(
        client_msgs(&out, 5)[0]["error"]["data"],
        json!({"reason":"too_many_clients","max":4})
    );
    assert_eq!(out.last(), Some(&Action::CloseClient(ClientId(5))));
    assert_eq!(h.r.status().clients, 4);
}

#[test]
fn lazy_start_spawns_on_the_first_request() {
    let mut h = H::new(ServerConfig {
        lazy_start: true,
        ..cfg()
    });
    assert!(h.drain().is_empty());
    h.connect(1);
    assert!(
        h.client(1, &json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
            .len()
            == 1
    );
    assert_eq!(h.r.status().state, ServerState::Lazy, "ping needs no child");
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    assert_eq!(out, vec![Action::Spawn]);
    let out = h.spawned_and_init(INIT_RESULT);
    assert_eq!(child_msgs(&out)[1]["method"], "tools/list");
}

#[test]
fn disabled_servers_start_stopped() {
    let mut h = H::new(ServerConfig {
        enabled: false,
        ..cfg()
    });
    assert!(h.drain().is_empty());
    assert_eq!(h.r.status().state, ServerState::Stopped);
}

#[test]
fn shutdown_answers_everything_and_kills_the_child() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let up = h.request(1, json!(1), "tools/call", json!({}));
    let out = h.input(Input::Shutdown);
    let cancel = &child_msgs(&out)[0];
    assert_eq!(cancel["params"]["requestId"], up);
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["data"]["reason"],
        "server_unavailable"
    );
    assert!(out.contains(&Action::Kill));
    assert!(out.contains(&Action::CloseClient(ClientId(1))));
}

#[test]
fn healthy_stretch_resets_the_failure_count() {
    let mut h = H::running();
    for _ in 0..5 {
        h.now += HEALTHY_STRETCH;
        h.input(Input::ChildExited("boom".into()));
        assert_eq!(h.r.status().state, ServerState::Backoff);
        assert_eq!(h.r.poll_timeout(), Some(h.now + Duration::from_millis(100)));
        h.advance(100);
        h.spawned_and_init(INIT_RESULT);
    }
    assert_eq!(h.r.status().restarts, 5);
}

#[test]
fn upstream_ids_are_written_in_decimal() {
    let mut buf = [0u8; 20];
    for n in [0, 7, 10, 99, 12345, u64::MAX] {
        assert_eq!(jsonrpc::decimal(n, &mut buf), n.to_string().as_bytes());
    }
}

#[test]
fn ids_short_and_long_are_restored_and_cancelled_alike() {
    // 22 bytes of raw JSON are kept inline, longer ones on the heap: both must behave the same.
    for id in [
        json!(7),
        json!("a".repeat(20)),
        json!("b".repeat(21)),
        json!(format!("{}", "c".repeat(60))),
    ] {
        let mut h = H::running();
        h.ready(1, json!({}));
        let up = h.request(1, id.clone(), "tools/call", json!({}));
        let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{"ok":1}}));
        let got = client_msgs(&out, 1);
        assert_eq!(got[0]["id"], id, "answer for {id}");
        let up = h.request(1, id.clone(), "tools/call", json!({}));
        let out = h.client(
            1,
            &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":id}}),
        );
        assert_eq!(
            child_msgs(&out)[0]["params"]["requestId"],
            up,
            "cancel of {id}"
        );
        assert_eq!(h.r.status().pending, 0);
    }
}

// ----- attached clients (the proxy handed the host's stdio to the daemon) -----

#[test]
fn attach_is_handed_to_the_actor_and_refused_in_a_batch() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":"a-1","method":"rmcp-mux/attach","params":{}}),
    );
    assert_eq!(
        out,
        vec![Action::Attach(ClientId(1), Bytes::from_static(b"\"a-1\""))]
    );
    let out = h.client_raw(
        1,
        r#"[{"jsonrpc":"2.0","id":5,"method":"rmcp-mux/attach"}]"#,
    );
    assert!(child_msgs(&out).is_empty(), "{out:?}");
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0][0]["id"], 5);
    assert_eq!(got[0][0]["error"]["code"], codes::INVALID_REQUEST);
}

#[test]
fn a_client_whose_input_closed_is_closed_once_its_answers_are_sent() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    let up = h.request(1, json!(7), "tools/call", json!({"name":"slow"}));
    let out = h.input(Input::ClientInputClosed(ClientId(1)));
    assert!(out.is_empty(), "an answer is still owed: {out:?}");
    assert_eq!(h.r.status().clients, 2);
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{"ok":true}}));
    assert_eq!(client_msgs(&out, 1)[0]["id"], 7);
    assert_eq!(
        out.last(),
        Some(&Action::CloseClient(ClientId(1))),
        "{out:?}"
    );
    assert_eq!(h.r.status().clients, 1);
    // Owed nothing: closed at once.
    let out = h.input(Input::ClientInputClosed(ClientId(2)));
    assert_eq!(out, vec![Action::CloseClient(ClientId(2))]);
    assert_eq!(h.r.status().clients, 0);
}

#[test]
fn a_client_whose_input_closed_is_closed_after_the_drain_time() {
    let mut cfg = cfg();
    cfg.request_timeout = Duration::from_secs(600);
    let mut h = H::running_with(cfg);
    h.ready(1, json!({}));
    let up = h.request(1, json!(7), "tools/call", json!({"name":"slow"}));
    h.input(Input::ClientInputClosed(ClientId(1)));
    assert_eq!(
        h.r.poll_timeout(),
        Some(h.now + INPUT_CLOSED_DRAIN),
        "the drain is the next deadline"
    );
    let out = h.advance(INPUT_CLOSED_DRAIN.as_millis() as u64 - 1);
    assert!(out.is_empty(), "{out:?}");
    let out = h.advance(1);
    assert!(out.contains(&Action::CloseClient(ClientId(1))), "{out:?}");
    // The request given up on is cancelled upstream.
    let cancel = child_msgs(&out);
    assert_eq!(cancel[0]["method"], "notifications/cancelled");
    assert_eq!(cancel[0]["params"]["requestId"], up);
    assert_eq!(h.r.status().clients, 0);
    assert_eq!(h.r.poll_timeout(), None);
}

// ----- instances of servers shared per project or per client -----

/// The child of a `client` (or `project`) server gets its own client's `initialize`, not the
/// mux's; a restart after a crash sends the same again; a `global` server keeps the mux's.
#[test]
fn an_instance_child_gets_its_clients_own_initialize() {
    let mut h = H::new(ServerConfig {
        share: crate::config::Share::Client,
        lazy_start: true,
        ..cfg()
    });
    assert!(
        h.drain().is_empty(),
        "lazy: nothing starts before a request"
    );
    h.connect(1);
    let params = json!({"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true}},"clientInfo":{"name":"Cursor","version":"9"}});
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":params}),
    );
    assert!(out.contains(&Action::Spawn), "{out:?}");
    h.r.handle(h.now, Input::ChildSpawned { pid: 7 });
    let init = child_msgs(&h.drain());
    assert_eq!(init.len(), 1);
    assert_eq!(
        init[0]["params"], params,
        "the client's own params upstream"
    );
    let id = init[0]["id"].clone();
    let out = h.child(
        &json!({"jsonrpc":"2.0","id":id,"result":serde_json::from_str::<Value>(INIT_RESULT).unwrap()}),
    );
    assert_eq!(client_msgs(&out, 1)[0]["result"]["serverInfo"]["name"], "s");
    h.input(Input::ChildExited("crashed".into()));
    h.advance(60_000);
    h.r.handle(h.now, Input::ChildSpawned { pid: 8 });
    let again = child_msgs(&h.drain());
    assert_eq!(again[0]["params"], params, "the same after a restart");

    let mut g = H::new(ServerConfig {
        lazy_start: true,
        ..cfg()
    });
    g.connect(1);
    g.client(
        1,
        &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":params}),
    );
    g.r.handle(g.now, Input::ChildSpawned { pid: 7 });
    let init = child_msgs(&g.drain());
    assert_eq!(init[0]["params"]["clientInfo"]["name"], "rmcp-mux");
}

/// The proxy's project line never reaches the child.
#[test]
fn the_project_line_is_swallowed() {
    let mut h = H::running();
    h.ready(1, json!({}));
    let line =
        String::from_utf8(crate::mux::project::line(std::path::Path::new("/src/a"))).unwrap();
    let out = h.client_raw(1, &line);
    assert!(out.is_empty(), "{out:?}");
}

/// `idle_stop_ms` on a `global` server: with no client for that long the child is stopped and
/// the server is lazy again; the next request starts it; while a client is there, it stays.
#[test]
fn a_global_server_with_no_client_for_idle_stop_goes_back_to_lazy() {
    let mut h = H::running_with(ServerConfig {
        idle_stop: Some(Duration::from_millis(500)),
        ..cfg()
    });
    h.ready(1, json!({}));
    assert!(h.advance(10_000).is_empty(), "a client is connected");
    h.input(Input::ClientGone(ClientId(1)));
    assert!(h.advance(400).is_empty());
    assert_eq!(h.advance(100), vec![Action::Kill]);
    assert_eq!(h.r.status().state, ServerState::Lazy);
    h.input(Input::ChildExited("terminated".into()));
    assert_eq!(h.r.status().state, ServerState::Lazy);
    assert_eq!(h.r.status().restarts, 0, "not a crash");
    h.connect(2);
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
    );
    assert_eq!(
        out,
        vec![Action::Spawn],
        "started again on the next request"
    );

    let mut never = H::running();
    never.ready(1, json!({}));
    never.input(Input::ClientGone(ClientId(1)));
    assert!(
        never.advance(3_600_000).is_empty(),
        "without idle_stop_ms it runs on"
    );
}

/// A `global` server whose tools look per-session gets a hint in its status (the answer
/// passes unchanged); the share is never switched.
#[test]
fn a_global_server_with_browser_tools_gets_a_hint() {
    let mut h = H::running();
    h.ready(1, json!({}));
    assert_eq!(h.r.status().hint, None);
    let up = h.request(1, json!(5), "tools/list", json!({}));
    let tools = json!({"tools":[{"name":"browser_navigate"},{"name":"echo"},{"name":"tab_list"}]});
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":tools}));
    assert_eq!(
        client_msgs(&out, 1)[0]["result"],
        tools,
        "passed on as it came"
    );
    let hint = h.r.status().hint.expect("a hint");
    assert!(
        hint.contains("browser_navigate, tab_list") && hint.contains("share = \"client\""),
        "{hint}"
    );

    let mut plain = H::running();
    plain.ready(1, json!({}));
    let up = plain.request(1, json!(5), "tools/list", json!({}));
    plain.child(&json!({"jsonrpc":"2.0","id":up,"result":{"tools":[{"name":"echo"}]}}));
    assert_eq!(plain.r.status().hint, None);
}

// ----- the 2026-07-28 era: modern clients in front of a handshake-era child -----

/// The envelope a modern client puts in every request's `_meta`, plus `extra` members.
fn envelope(extra: Value) -> Value {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "m", "version": "1"},
    });
    for (k, v) in extra.as_object().unwrap() {
        meta[k] = v.clone();
    }
    meta
}

/// A modern request: `params` with the envelope (and `meta_extra`) in `_meta`.
fn modern(id: Value, method: &str, mut params: Value, meta_extra: Value) -> Value {
    params["_meta"] = envelope(meta_extra);
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
}

#[test]
fn a_modern_request_is_accepted_first_and_forwarded_without_its_envelope() {
    let mut h = H::running();
    h.connect(1);
    // No initialize: the envelope is the whole of the modern era's handshake.
    let out = h.client(
        1,
        &modern(
            json!("a"),
            "tools/call",
            json!({"name":"echo","arguments":{"m":"hi"}}),
            json!({"progressToken": "p1", "x-trace": {"k": 1}}),
        ),
    );
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    let up = sent[0]["id"].clone();
    assert!(up.is_u64());
    assert_eq!(
        sent[0]["params"],
        json!({"name":"echo","arguments":{"m":"hi"},"_meta":{"progressToken":up,"x-trace":{"k":1}}}),
        "the io.modelcontextprotocol keys are the mux's; the rest goes on, the token rewritten"
    );
    let out = h.child(
        &json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":up,"progress":1}}),
    );
    assert_eq!(client_msgs(&out, 1)[0]["params"]["progressToken"], "p1");
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{"content":[]}}));
    assert_eq!(
        client_msgs(&out, 1),
        vec![json!({"jsonrpc":"2.0","id":"a","result":{"resultType":"complete","content":[]}})]
    );
}

#[test]
fn a_meta_of_only_the_envelope_reaches_the_child_empty_or_with_the_token_alone() {
    let mut h = H::running();
    h.connect(1);
    let sent_meta = |h: &mut H, id: &str, extra: Value| {
        let params = json!({"name":"echo","arguments":{}});
        let out = h.client(1, &modern(json!(id), "tools/call", params, extra));
        let sent = child_msgs(&out);
        assert_eq!(sent.len(), 1, "{out:?}");
        (sent[0]["id"].clone(), sent[0]["params"]["_meta"].clone())
    };
    let (_, meta) = sent_meta(&mut h, "a", json!({}));
    assert_eq!(meta, json!({}));
    let (up, meta) = sent_meta(&mut h, "b", json!({"progressToken": "p"}));
    assert_eq!(meta, json!({"progressToken": up}));
    // A null token is no token: it stays as it was.
    let (_, meta) = sent_meta(&mut h, "c", json!({"progressToken": null}));
    assert_eq!(meta, json!({"progressToken": null}));
}

#[test]
fn a_modern_envelope_with_an_unknown_version_or_missing_keys_is_refused() {
    let mut h = H::running();
    h.connect(1);
    let mut msg = modern(json!(1), "tools/list", json!({}), json!({}));
    msg["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let out = h.client(1, &msg);
    assert!(child_msgs(&out).is_empty());
    let err = &client_msgs(&out, 1)[0]["error"];
    assert_eq!(err["code"], codes::UNSUPPORTED_PROTOCOL_VERSION);
    assert_eq!(
        err["data"],
        json!({"supported":["2026-07-28"],"requested":"2099-01-01"})
    );
    let mut msg = modern(json!(2), "tools/list", json!({}), json!({}));
    msg["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let out = h.client(1, &msg);
    assert!(child_msgs(&out).is_empty());
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["code"],
        codes::INVALID_PARAMS
    );
    // The era has no batches: a modern request in one is refused, its neighbour served.
    let batch = json!([
        modern(json!(3), "tools/list", json!({}), json!({})),
        {"jsonrpc":"2.0","id":4,"method":"ping"},
    ]);
    let out = h.client(1, &batch);
    assert!(child_msgs(&out).is_empty());
    let got = client_msgs(&out, 1);
    assert_eq!(got[0][0]["error"]["code"], codes::INVALID_REQUEST);
    assert_eq!(got[0][1]["result"], json!({}));
}

#[test]
fn server_discover_is_answered_from_the_initialize_result_and_does_not_pin_the_client() {
    let mut h = H::new(ServerConfig {
        lazy_start: true,
        ..cfg()
    });
    h.connect(1);
    // Before the child runs: it is started, and the discover waits for its handshake.
    let out = h.client(
        1,
        &modern(json!(7), "server/discover", json!({}), json!({})),
    );
    assert_eq!(out, vec![Action::Spawn]);
    let out = h.spawned_and_init(
        r#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true},"tasks":{}},"serverInfo":{"name":"s","version":"1"},"instructions":"use it"}"#,
    );
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0]["id"], 7);
    assert_eq!(
        got[0]["result"],
        json!({
            "resultType": "complete",
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {"listChanged": true}},
            "instructions": "use it",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "s", "version": "1"}},
            "ttlMs": 0,
            "cacheScope": "private",
        })
    );
    assert!(child_msgs(&out)
        .iter()
        .all(|m| m["method"] != "server/discover"));
    // A probing client that then speaks the handshake era still can: the discover pinned nothing.
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":8,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
    );
    assert_eq!(client_msgs(&out, 1)[0]["result"]["serverInfo"]["name"], "s");
    h.client(
        1,
        &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    );
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}));
    assert_eq!(
        client_msgs(&out, 1).len(),
        1,
        "it is a handshake client now"
    );
    // A discover without the envelope (an older probe) is answered the same way.
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":9,"method":"server/discover"}),
    );
    assert!(child_msgs(&out).is_empty());
    assert_eq!(
        client_msgs(&out, 1)[0]["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );
}

#[test]
fn methods_the_modern_era_removed_are_method_not_found_for_a_modern_request() {
    let mut h = H::running();
    h.connect(1);
    for (i, (method, params)) in [
        ("ping", json!({})),
        ("logging/setLevel", json!({"level":"debug"})),
        ("resources/subscribe", json!({"uri":"file:///a"})),
        ("resources/unsubscribe", json!({"uri":"file:///a"})),
    ]
    .into_iter()
    .enumerate()
    {
        let out = h.client(1, &modern(json!(i), method, params, json!({})));
        assert!(child_msgs(&out).is_empty(), "{method}: {out:?}");
        assert_eq!(
            client_msgs(&out, 1)[0]["error"]["code"],
            codes::METHOD_NOT_FOUND,
            "{method}"
        );
    }
    // The same methods without the envelope keep their handshake-era meaning.
    h.ready(2, json!({}));
    let out = h.client(2, &json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    assert_eq!(client_msgs(&out, 2)[0]["result"], json!({}));
}

#[test]
fn modern_results_are_marked_per_method_and_not_found_becomes_invalid_params() {
    let mut h = H::running();
    h.connect(1);
    let ask = |h: &mut H, id: u64, method: &str, params: Value| {
        let out = h.client(1, &modern(json!(id), method, params, json!({})));
        child_msgs(&out)[0]["id"].clone()
    };
    for (i, method) in [
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    ]
    .into_iter()
    .enumerate()
    {
        let up = ask(&mut h, i as u64, method, json!({}));
        let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{"items":[1]}}));
        assert_eq!(
            client_msgs(&out, 1)[0]["result"],
            json!({"resultType":"complete","ttlMs":0,"cacheScope":"private","items":[1]}),
            "{method}"
        );
    }
    let up = ask(&mut h, 10, "resources/read", json!({"uri":"file:///a"}));
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{}}));
    assert_eq!(
        client_msgs(&out, 1)[0]["result"],
        json!({"resultType":"complete","ttlMs":0,"cacheScope":"private"})
    );
    let up = ask(&mut h, 11, "resources/read", json!({"uri":"file:///gone"}));
    let out = h.child(
        &json!({"jsonrpc":"2.0","id":up,"error":{"code":-32002,"message":"Resource not found","data":{"uri":"file:///gone"}}}),
    );
    assert_eq!(
        client_msgs(&out, 1)[0],
        json!({"jsonrpc":"2.0","id":11,"error":{"code":codes::INVALID_PARAMS,"message":"Resource not found","data":{"uri":"file:///gone"}}})
    );
    let up = ask(&mut h, 12, "tools/call", json!({"name":"x"}));
    let out = h.child_raw(&format!(
        r#"{{"jsonrpc":"2.0","id":{up},"result":{{"resultType":"complete","content":[]}}}}"#
    ));
    assert_eq!(
        client_msgs(&out, 1)[0]["result"],
        json!({"resultType":"complete","content":[]}),
        "a result that has its type keeps it, once"
    );
}

#[test]
fn modern_clients_get_no_unsolicited_notifications_or_server_requests() {
    let mut h = H::running();
    h.ready(1, json!({"sampling":{}}));
    h.connect(2);
    // It declares sampling, on a request no answer of which can carry an input request (a
    // `tools/call` would get it bridged, see the MRTR tests).
    let mut list = modern(json!(1), "tools/list", json!({}), json!({}));
    list["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({"sampling":{}});
    let out = h.client(2, &list);
    assert_eq!(child_msgs(&out).len(), 1);
    for kind in ["tools", "prompts", "resources"] {
        let out = h
            .child(&json!({"jsonrpc":"2.0","method":format!("notifications/{kind}/list_changed")}));
        assert_eq!(client_msgs(&out, 1).len(), 1);
        assert!(client_msgs(&out, 2).is_empty(), "{kind}: {out:?}");
    }
    // The modern client has the newest request in flight, yet a JSON-RPC request goes only to
    // the handshake client.
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}));
    assert_eq!(client_msgs(&out, 1).len(), 1, "{out:?}");
    assert!(client_msgs(&out, 2).is_empty());
    h.input(Input::ClientGone(ClientId(1)));
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":"s2","method":"sampling/createMessage","params":{}}));
    assert!(client_msgs(&out, 2).is_empty());
    assert_eq!(
        child_msgs(&out)[0]["error"]["data"]["reason"],
        reasons::NO_CAPABLE_CLIENT
    );
}

#[test]
fn log_messages_reach_a_modern_client_only_while_a_request_that_asked_is_in_flight() {
    let mut h = H::running();
    h.connect(1);
    let out = h.client(
        1,
        &modern(
            json!(1),
            "tools/call",
            json!({"name":"x"}),
            json!({"io.modelcontextprotocol/logLevel": "warning"}),
        ),
    );
    let sent = child_msgs(&out);
    // The handshake-era child logs only at the level set for its session.
    let set = sent
        .iter()
        .find(|m| m["method"] == "logging/setLevel")
        .expect("the level is set upstream");
    assert_eq!(set["params"]["level"], "warning");
    let up = sent.iter().find(|m| m["method"] == "tools/call").unwrap()["id"].clone();
    let log = |level: &str| json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":level,"data":"d"}});
    assert!(client_msgs(&h.child(&log("info")), 1).is_empty());
    assert_eq!(client_msgs(&h.child(&log("error")), 1).len(), 1);
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":{}}));
    assert!(
        client_msgs(&h.child(&log("error")), 1).is_empty(),
        "nothing of its in flight"
    );
    // A request that asked for no level gets no log messages.
    h.client(
        1,
        &modern(json!(2), "tools/call", json!({"name":"x"}), json!({})),
    );
    assert!(client_msgs(&h.child(&log("emergency")), 1).is_empty());
}

#[test]
fn handshake_and_modern_clients_on_one_child_each_see_their_own_era() {
    let mut h = H::running();
    h.ready(1, json!({}));
    h.connect(2);
    let up1 = h.request(1, json!(1), "tools/list", json!({}));
    let out = h.client(2, &modern(json!(1), "tools/list", json!({}), json!({})));
    let up2 = child_msgs(&out)[0]["id"].clone();
    assert_ne!(up1, up2);
    let out = h.child(&json!({"jsonrpc":"2.0","id":up2,"result":{"tools":[]}}));
    assert!(client_msgs(&out, 1).is_empty());
    assert_eq!(
        client_msgs(&out, 2)[0]["result"],
        json!({"resultType":"complete","ttlMs":0,"cacheScope":"private","tools":[]})
    );
    let out = h.child(&json!({"jsonrpc":"2.0","id":up1,"result":{"tools":[]}}));
    assert!(client_msgs(&out, 2).is_empty());
    assert_eq!(
        client_msgs(&out, 1),
        vec![json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}})]
    );
}

const LISTEN_INIT: &str = r#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true},"prompts":{},"resources":{"subscribe":true,"listChanged":true}},"serverInfo":{"name":"s","version":"1"}}"#;

fn listening() -> H {
    let mut h = H::new(cfg());
    h.drain();
    h.spawned_and_init(LISTEN_INIT);
    h
}

fn listen(id: Value, filter: Value) -> Value {
    modern(
        id,
        "subscriptions/listen",
        json!({ "notifications": filter }),
        json!({}),
    )
}

fn sub_id(msg: &Value) -> &Value {
    &msg["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"]
}

#[test]
fn a_listen_is_acknowledged_with_what_the_child_delivers_and_frames_carry_its_id() {
    let mut h = listening();
    h.ready(2, json!({}));
    h.connect(1);
    let out = h.client(
        1,
        &listen(
            json!("L"),
            json!({"toolsListChanged":true,"promptsListChanged":true,"resourceSubscriptions":["file:///a"]}),
        ),
    );
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0]["method"], "notifications/subscriptions/acknowledged");
    assert!(got[0].get("id").is_none());
    assert_eq!(sub_id(&got[0]), "L");
    // The child announces no prompt list changes: that part is not honoured.
    assert_eq!(
        got[0]["params"]["notifications"],
        json!({"toolsListChanged":true,"resourceSubscriptions":["file:///a"]})
    );
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["method"], "resources/subscribe");
    assert_eq!(sent[0]["params"], json!({"uri":"file:///a"}));
    h.child(&json!({"jsonrpc":"2.0","id":sent[0]["id"],"result":{}}));

    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}));
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["method"], "notifications/tools/list_changed");
    assert_eq!(sub_id(&got[0]), "L");
    assert_eq!(
        client_msgs(&out, 2),
        vec![json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"})],
        "the handshake client gets the child's own line"
    );
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}));
    assert!(client_msgs(&out, 1).is_empty());
    let out = h.child(
        &json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a/b"}}),
    );
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["params"]["uri"], "file:///a/b");
    assert_eq!(sub_id(&got[0]), "L");
    let out = h.child(
        &json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///ab"}}),
    );
    assert!(client_msgs(&out, 1).is_empty());

    // The client ends it with a cancel: the mux's subscription goes, nothing more arrives.
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"L"}}),
    );
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0]["method"], "resources/unsubscribe");
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}));
    assert!(client_msgs(&out, 1).is_empty());
}

#[test]
fn listen_subscriptions_are_counted_with_the_handshake_clients() {
    let mut h = listening();
    h.ready(2, json!({}));
    h.connect(1);
    let up = h.request(
        2,
        json!(1),
        "resources/subscribe",
        json!({"uri":"file:///a"}),
    );
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":{}}));
    let out = h.client(
        1,
        &listen(json!(5), json!({"resourceSubscriptions":["file:///a"]})),
    );
    assert!(child_msgs(&out).is_empty(), "already subscribed: {out:?}");
    let out = h.child(
        &json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a"}}),
    );
    assert_eq!(client_msgs(&out, 2).len(), 1);
    assert_eq!(sub_id(&client_msgs(&out, 1)[0]), 5);
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","id":2,"method":"resources/unsubscribe","params":{"uri":"file:///a"}}),
    );
    assert!(child_msgs(&out).is_empty(), "the listen still holds it");
    assert_eq!(client_msgs(&out, 2)[0]["result"], json!({}));
    // A disconnect drops the listen, and with it the last hold.
    let out = h.input(Input::ClientGone(ClientId(1)));
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["method"], "resources/unsubscribe");
}

#[test]
fn a_child_restart_ends_every_listen() {
    let mut h = listening();
    h.connect(1);
    h.client(1, &listen(json!("L"), json!({"toolsListChanged":true})));
    let out = h.input(Input::ChildExited("killed".into()));
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0]["id"], "L");
    assert_eq!(got[0]["error"]["data"]["reason"], reasons::UPSTREAM_EXITED);
    h.advance(100);
    h.spawned_and_init(LISTEN_INIT);
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}));
    assert!(client_msgs(&out, 1).is_empty(), "listens do not survive");
}

/// A modern `tools/call` from client `c` declaring `caps`; returns its upstream id.
fn modern_call(h: &mut H, c: u64, id: Value, caps: Value) -> Value {
    let mut msg = modern(
        id,
        "tools/call",
        json!({"name":"ask","arguments":{}}),
        json!({}),
    );
    msg["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = caps;
    let out = h.client(c, &msg);
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    sent[0]["id"].clone()
}

/// The retry of a bridged `tools/call`: a new id, the same params plus the answers and state.
fn retry(id: Value, answers: Value, state: &Value) -> Value {
    let mut msg = modern(
        id,
        "tools/call",
        json!({"name":"ask","arguments":{}}),
        json!({}),
    );
    msg["params"]["inputResponses"] = answers;
    msg["params"]["requestState"] = state.clone();
    msg
}

#[test]
fn a_childs_sampling_request_is_bridged_to_the_modern_call_it_belongs_to() {
    let mut h = H::running();
    h.connect(1);
    let up = modern_call(&mut h, 1, json!("c1"), json!({"sampling":{}}));
    let params =
        json!({"messages":[{"role":"user","content":{"type":"text","text":"q"}}],"maxTokens":5});
    let out = h.child(
        &json!({"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":params}),
    );
    assert!(child_msgs(&out).is_empty(), "{out:?}");
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], "c1");
    let result = &got[0]["result"];
    assert_eq!(result["resultType"], "input_required");
    let requests = result["inputRequests"].as_object().unwrap();
    assert_eq!(requests.len(), 1);
    let (key, request) = requests.iter().next().unwrap();
    assert_eq!(
        request,
        &json!({"method":"sampling/createMessage","params":params})
    );
    let state = result["requestState"].clone();
    assert!(state.is_string());

    let answer = json!({"role":"assistant","content":{"type":"text","text":"a"},"model":"m"});
    let out = h.client(1, &retry(json!("c2"), json!({ key: answer }), &state));
    assert_eq!(
        child_msgs(&out),
        vec![json!({"jsonrpc":"2.0","id":"s1","result":answer})],
        "the retry is not forwarded: it answers the held request"
    );
    assert!(client_msgs(&out, 1).is_empty());
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{"content":[]}}));
    assert_eq!(
        client_msgs(&out, 1),
        vec![json!({"jsonrpc":"2.0","id":"c2","result":{"resultType":"complete","content":[]}})]
    );
}

#[test]
fn an_answer_before_the_retry_waits_for_it_and_a_foreign_state_is_refused() {
    let mut h = H::running();
    h.connect(1);
    h.connect(2);
    let up = modern_call(&mut h, 1, json!(1), json!({"elicitation":{}}));
    let out = h.child(
        &json!({"jsonrpc":"2.0","id":9,"method":"elicitation/create","params":{"message":"name?"}}),
    );
    let result = client_msgs(&out, 1)[0]["result"].clone();
    let key = result["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let state = result["requestState"].clone();
    // The child gave up waiting and answered anyway: held for the retry's id.
    let out = h.child(
        &json!({"jsonrpc":"2.0","id":up,"result":{"content":[{"type":"text","text":"late"}]}}),
    );
    assert!(client_msgs(&out, 1).is_empty(), "{out:?}");
    // Another client cannot use that state.
    let out = h.client(2, &retry(json!(5), json!({}), &state));
    assert_eq!(
        client_msgs(&out, 2)[0]["error"]["data"]["reason"],
        reasons::UNKNOWN_REQUEST_STATE
    );
    assert!(child_msgs(&out).is_empty());
    let out = h.client(
        1,
        &retry(
            json!(2),
            json!({ key: {"action":"accept","content":{"name":"n"}} }),
            &state,
        ),
    );
    assert_eq!(child_msgs(&out)[0]["id"], 9);
    assert_eq!(child_msgs(&out)[0]["result"]["action"], "accept");
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], 2);
    assert_eq!(got[0]["result"]["content"][0]["text"], "late");
    // The state was used up.
    let out = h.client(1, &retry(json!(3), json!({}), &state));
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["code"],
        codes::INVALID_PARAMS
    );
}

#[test]
fn a_bridged_request_without_capability_retry_or_client_gets_an_error_to_the_child() {
    let mut h = H::running();
    h.connect(1);
    // No sampling declared for this call: nobody can answer.
    modern_call(&mut h, 1, json!(1), json!({"elicitation":{}}));
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":"s","method":"sampling/createMessage","params":{}}));
    assert!(client_msgs(&out, 1).is_empty());
    assert_eq!(
        child_msgs(&out)[0]["error"]["data"]["reason"],
        reasons::NO_CAPABLE_CLIENT
    );
    // Asked, but never retried: the child's request fails when the call times out.
    let up = modern_call(&mut h, 1, json!(2), json!({"sampling":{}}));
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":"s2","method":"sampling/createMessage","params":{}}));
    assert_eq!(client_msgs(&out, 1)[0]["id"], 2);
    let out = h.advance(1000);
    let sent = child_msgs(&out);
    let err = sent
        .iter()
        .find(|m| m["id"] == "s2")
        .expect("error to the child");
    assert_eq!(err["error"]["data"]["reason"], reasons::UPSTREAM_TIMEOUT);
    assert!(sent
        .iter()
        .any(|m| m["method"] == "notifications/cancelled" && m["params"]["requestId"] == up));
    assert!(
        client_msgs(&out, 1).iter().all(|m| m["id"] != 2),
        "its id was answered already: {out:?}"
    );
    // Asked, then gone.
    modern_call(&mut h, 1, json!(3), json!({"roots":{}}));
    h.child(&json!({"jsonrpc":"2.0","id":"r","method":"roots/list"}));
    let out = h.input(Input::ClientGone(ClientId(1)));
    let err = child_msgs(&out)
        .into_iter()
        .find(|m| m["id"] == "r")
        .expect("error to the child");
    assert_eq!(err["error"]["data"]["reason"], reasons::CLIENT_GONE);
}

// ----- children of the 2026-07-28 era -----

const DISCOVER_RESULT: &str = r#"{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{"listChanged":true},"resources":{"subscribe":true}},"instructions":"be kind","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"m","version":"2"}},"ttlMs":5000,"cacheScope":"public"}"#;

fn with_era(era: Era) -> ServerConfig {
    ServerConfig { era, ..cfg() }
}

/// The child has just been spawned: what the mux wrote to it first.
fn first_words(h: &mut H) -> Vec<Value> {
    let out = h.input(Input::ChildSpawned { pid: 42 });
    child_msgs(&out)
}

/// A server of `era = "modern"` whose child answered `server/discover`.
fn modern_child() -> H {
    modern_child_with(with_era(Era::Modern))
}

/// A server of this config (`era = "modern"`) whose child answered `server/discover`.
fn modern_child_with(cfg: ServerConfig) -> H {
    let mut h = H::new(cfg);
    assert_eq!(h.drain(), vec![Action::Spawn]);
    let sent = first_words(&mut h);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["method"], "server/discover");
    let id = sent[0]["id"].clone();
    let out = h.child(&json!({"jsonrpc":"2.0","id":id,"result":serde_json::from_str::<Value>(DISCOVER_RESULT).unwrap()}));
    // The mux opens its own listen for the handshake-era clients.
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0]["method"], "subscriptions/listen");
    h
}

fn up_listen_id(h: &H) -> Value {
    json!(h.r.upstream_listen.expect("the mux's own listen"))
}

#[test]
fn a_modern_child_gets_server_discover_and_never_initialize() {
    let mut h = modern_child();
    assert_eq!(h.r.status().state, ServerState::Running);
    assert_eq!(h.r.status().era, Some("modern"));
    assert_eq!(h.r.status().protocol_version.as_deref(), Some("2026-07-28"));
    h.connect(1);
    let out = h.client(
        1,
        &modern(json!(1), "server/discover", json!({}), json!({})),
    );
    assert!(child_msgs(&out).is_empty(), "answered by the mux: {out:?}");
    let got = client_msgs(&out, 1);
    let want: Value = serde_json::from_str(DISCOVER_RESULT).unwrap();
    assert_eq!(got[0]["result"], want, "the child's own discover result");
    let h2 = H::running();
    assert_eq!(h2.r.status().era, Some("handshake"));
    assert_eq!(
        h2.r.status().protocol_version.as_deref(),
        Some("2025-06-18")
    );
}

#[test]
fn auto_probes_with_discover_and_falls_back_to_initialize_on_the_same_process() {
    // A handshake-only child: -32601 to the probe, then initialize on the same process.
    let mut h = H::new(with_era(Era::Auto));
    h.drain();
    let sent = first_words(&mut h);
    assert_eq!(sent[0]["method"], "server/discover");
    let meta = &sent[0]["params"]["_meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert!(meta["io.modelcontextprotocol/clientCapabilities"].is_object());
    // A client that comes meanwhile waits for the verdict.
    h.ready_later(1);
    let out = h.child(&json!({"jsonrpc":"2.0","id":sent[0]["id"],"error":{"code":-32601,"message":"Method not found"}}));
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0]["method"], "initialize");
    assert!(matches!(out.first(), Some(Action::ToChild(_))));
    let out = h.child(&json!({"jsonrpc":"2.0","id":sent[0]["id"],"result":serde_json::from_str::<Value>(INIT_RESULT).unwrap()}));
    assert_eq!(client_msgs(&out, 1)[0]["result"]["serverInfo"]["name"], "s");
    assert_eq!(h.r.status().era, Some("handshake"));
    // The verdict holds for the server's next process: no probe after a crash.
    h.input(Input::ChildExited("exited with status 1".into()));
    h.advance(100);
    let sent = first_words(&mut h);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["method"], "initialize");

    // A modern child: the probe's result makes it modern, final for this process.
    let mut h = H::new(with_era(Era::Auto));
    h.drain();
    let sent = first_words(&mut h);
    let out = h.child(&json!({"jsonrpc":"2.0","id":sent[0]["id"],"result":serde_json::from_str::<Value>(DISCOVER_RESULT).unwrap()}));
    assert!(
        child_msgs(&out).iter().all(|m| m["method"] != "initialize"),
        "{out:?}"
    );
    assert_eq!(h.r.status().era, Some("modern"));
    h.input(Input::ChildExited("exited with status 1".into()));
    h.advance(100);
    let sent = first_words(&mut h);
    assert_eq!(sent[0]["method"], "server/discover");
    assert!(h.r.verdict == Some(ChildEra::Modern) && !h.r.probing);

    // -32022 naming 2026-07-28 is modern too.
    let mut h = H::new(with_era(Era::Auto));
    h.drain();
    let sent = first_words(&mut h);
    let out = h.child(&json!({"jsonrpc":"2.0","id":sent[0]["id"],"error":{"code":-32022,"message":"Unsupported protocol version","data":{"supported":["2026-07-28"],"requested":"x"}}}));
    assert_eq!(child_msgs(&out)[0]["method"], "server/discover");
    assert_eq!(h.r.verdict, Some(ChildEra::Modern));
}

#[test]
fn auto_falls_back_on_a_probe_timeout_and_respawns_without_the_probe_when_it_kills_the_child() {
    let mut h = H::new(with_era(Era::Auto));
    h.drain();
    first_words(&mut h);
    let out = h.advance(1000);
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0]["method"], "initialize");

    let mut h = H::new(with_era(Era::Auto));
    h.drain();
    first_words(&mut h);
    h.ready_later(1);
    let out = h.input(Input::ChildExited("exited with status 1".into()));
    assert_eq!(
        out,
        vec![Action::Spawn],
        "respawned at once, not in backoff"
    );
    assert_eq!(h.r.status().restarts, 0);
    let sent = first_words(&mut h);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["method"], "initialize");
    let out = h.child(&json!({"jsonrpc":"2.0","id":sent[0]["id"],"result":serde_json::from_str::<Value>(INIT_RESULT).unwrap()}));
    assert_eq!(
        client_msgs(&out, 1).len(),
        1,
        "the waiting client is answered: {out:?}"
    );
}

#[test]
fn a_modern_clients_envelope_passes_through_to_a_modern_child_with_ids_and_tokens_rewritten() {
    let mut h = modern_child();
    h.connect(1);
    h.connect(2);
    let req = modern(
        json!("a"),
        "tools/call",
        json!({"name":"slow","arguments":{}}),
        json!({"progressToken":"tok","io.modelcontextprotocol/logLevel":"info"}),
    );
    let out = h.client(1, &req);
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    let up = sent[0]["id"].clone();
    assert!(up.is_u64());
    let mut meta = req["params"]["_meta"].clone();
    meta["progressToken"] = up.clone();
    assert_eq!(
        sent[0]["params"]["_meta"], meta,
        "the envelope as the client wrote it"
    );
    let out = h.client(
        2,
        &modern(json!(7), "tools/call", json!({"name":"x"}), json!({})),
    );
    let up2 = child_msgs(&out)[0]["id"].clone();
    assert_ne!(up, up2);
    assert!(child_msgs(&out)
        .iter()
        .all(|m| m["method"] != "logging/setLevel"));
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":up,"progress":1}}));
    assert_eq!(client_msgs(&out, 1)[0]["params"]["progressToken"], "tok");
    // The answer as the child wrote it: nothing added or taken away.
    let out = h.child_raw(&format!(
        r#"{{"jsonrpc":"2.0","id":{up},"result":{{"resultType":"complete","content":[],"x":1}}}}"#
    ));
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], "a");
    assert_eq!(
        got[0]["result"],
        json!({"resultType":"complete","content":[],"x":1})
    );
    // A cancel's requestId is rewritten too.
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}),
    );
    assert_eq!(child_msgs(&out)[0]["params"]["requestId"], up2);
    // A child's input_required goes to a modern client as it is: the client drives it.
    let out = h.client(
        1,
        &modern(json!(8), "tools/call", json!({"name":"sample"}), json!({})),
    );
    let up3 = child_msgs(&out)[0]["id"].clone();
    let ask = json!({"resultType":"input_required","inputRequests":{"k":{"method":"roots/list","params":{}}},"requestState":"s1"});
    let out = h.child(&json!({"jsonrpc":"2.0","id":up3,"result":ask}));
    assert_eq!(client_msgs(&out, 1)[0]["result"], ask);
    let mut again = modern(json!(9), "tools/call", json!({"name":"sample"}), json!({}));
    again["params"]["inputResponses"] = json!({"k":{"roots":[]}});
    again["params"]["requestState"] = json!("s1");
    let out = h.client(1, &again);
    let sent = child_msgs(&out);
    assert_eq!(
        sent[0]["params"]["requestState"], "s1",
        "the child's state, passed on"
    );
}

#[test]
fn a_listen_on_a_modern_child_is_passed_through_with_its_subscription_id_rewritten() {
    let mut h = modern_child();
    h.connect(1);
    let out = h.client(1, &listen(json!("L"), json!({"toolsListChanged": true})));
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    let up = sent[0]["id"].clone();
    let frame = |method: &str| json!({"jsonrpc":"2.0","method":method,"params":{"_meta":{"io.modelcontextprotocol/subscriptionId":up}}});
    let out = h.child(&frame("notifications/subscriptions/acknowledged"));
    assert_eq!(sub_id(&client_msgs(&out, 1)[0]), "L");
    // Still open after the request timeout.
    h.advance(5000);
    let out = h.child(&frame("notifications/tools/list_changed"));
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(sub_id(&got[0]), "L");
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":{"resultType":"complete","_meta":{"io.modelcontextprotocol/subscriptionId":up}}}));
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], "L");
    assert_eq!(
        got[0]["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "L"
    );
    // A frame for a listen that ended goes nowhere.
    assert_eq!(
        any_client_msgs(&h.child(&frame("notifications/tools/list_changed"))),
        0
    );
    // A child restart ends a listen with an error.
    let out = h.client(1, &listen(json!(5), json!({"toolsListChanged": true})));
    assert_eq!(child_msgs(&out).len(), 1);
    let out = h.input(Input::ChildExited("exited with status 1".into()));
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], 5);
    assert!(got[0]["error"].is_object());
}

#[test]
fn a_handshake_client_of_a_modern_child_is_answered_initialize_and_its_requests_are_stamped() {
    let mut h = modern_child();
    h.connect(1);
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{}},"clientInfo":{"name":"one","version":"1"}}}),
    );
    assert!(child_msgs(&out).is_empty(), "{out:?}");
    let init = &client_msgs(&out, 1)[0]["result"];
    assert_eq!(init["protocolVersion"], UPSTREAM_PROTOCOL_VERSION);
    assert_eq!(init["serverInfo"], json!({"name":"m","version":"2"}));
    assert_eq!(init["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(init["instructions"], "be kind");
    let quiet = [
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"}),
        json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
        json!({"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"warning"}}),
    ];
    for msg in quiet {
        let out = h.client(1, &msg);
        assert!(child_msgs(&out).is_empty(), "{msg} is local: {out:?}");
    }
    h.ready(2, json!({"roots":{}}));
    // Each request carries its own client's envelope: params with and without _meta, none.
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":9}}}));
    let a = &child_msgs(&out)[0]["params"];
    assert_eq!(a["name"], "x");
    assert_eq!(
        a["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert_eq!(
        a["_meta"]["io.modelcontextprotocol/clientCapabilities"],
        json!({"sampling":{}})
    );
    assert_eq!(
        a["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
        "one"
    );
    assert_eq!(a["_meta"]["io.modelcontextprotocol/logLevel"], "warning");
    assert!(a["_meta"]["progressToken"].is_u64());
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}),
    );
    let b = &child_msgs(&out)[0]["params"]["_meta"];
    assert_eq!(
        b["io.modelcontextprotocol/clientCapabilities"],
        json!({"roots":{}})
    );
    assert_eq!(b["io.modelcontextprotocol/clientInfo"]["name"], "t");
    assert!(
        b.get("io.modelcontextprotocol/logLevel").is_none(),
        "never another client's level"
    );
    let out = h.client(2, &json!({"jsonrpc":"2.0","id":4,"method":"prompts/list"}));
    let c = &child_msgs(&out)[0];
    assert_eq!(
        c["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
        "t"
    );
}

#[test]
fn a_modern_childs_input_required_is_driven_for_a_handshake_client() {
    let mut h = modern_child();
    h.ready(1, json!({"sampling":{}}));
    let call = json!({"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"sample","arguments":{"text":"hi"}}});
    let out = h.client(1, &call);
    let up = child_msgs(&out)[0]["id"].clone();
    let mut up_ids = vec![up.clone()];
    let mut up_now = up;
    for round in 0..2 {
        let ask = json!({"resultType":"input_required","inputRequests":{"s":{"method":"sampling/createMessage","params":{"maxTokens":5}}},"requestState":format!("state-{round}")});
        let out = h.child(&json!({"jsonrpc":"2.0","id":up_now,"result":ask}));
        let got = client_msgs(&out, 1);
        assert_eq!(got.len(), 1, "{out:?}");
        assert_eq!(got[0]["method"], "sampling/createMessage");
        assert_eq!(got[0]["params"]["maxTokens"], 5);
        let out = h.client(
            1,
            &json!({"jsonrpc":"2.0","id":got[0]["id"],"result":{"role":"assistant","content":{"type":"text","text":format!("r{round}")}}}),
        );
        let sent = child_msgs(&out);
        assert_eq!(sent.len(), 1, "{out:?}");
        assert!(!up_ids.contains(&sent[0]["id"]), "a new id each round");
        up_now = sent[0]["id"].clone();
        up_ids.push(up_now.clone());
        let p = &sent[0]["params"];
        assert_eq!(p["name"], "sample");
        assert_eq!(p["arguments"], json!({"text":"hi"}));
        assert_eq!(p["requestState"], format!("state-{round}"));
        assert_eq!(
            p["inputResponses"]["s"]["content"]["text"],
            format!("r{round}")
        );
        assert_eq!(
            p["_meta"]["io.modelcontextprotocol/clientCapabilities"],
            json!({"sampling":{}})
        );
    }
    let out = h.child(&json!({"jsonrpc":"2.0","id":up_now,"result":{"resultType":"complete","content":[{"type":"text","text":"done"}]}}));
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], "c");
    assert_eq!(got[0]["result"]["content"][0]["text"], "done");
    assert_eq!(h.r.status().pending, 0);
}

#[test]
fn input_rounds_are_bounded_and_a_refusal_fails_the_call() {
    let mut h = modern_child();
    h.ready(1, json!({"sampling":{}}));
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sample"}});
    let mut up = child_msgs(&h.client(1, &call))[0]["id"].clone();
    let ask = json!({"resultType":"input_required","inputRequests":{"s":{"method":"sampling/createMessage","params":{}}},"requestState":"x"});
    for _ in 0..MAX_INPUT_ROUNDS {
        let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":ask}));
        let q = client_msgs(&out, 1);
        let out = h.client(1, &json!({"jsonrpc":"2.0","id":q[0]["id"],"result":{}}));
        up = child_msgs(&out)[0]["id"].clone();
    }
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":ask}));
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0]["id"], 1);
    assert_eq!(got[0]["error"]["data"]["reason"], "too_many_input_rounds");
    // The client refuses: its error is the call's.
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sample"}});
    let up = child_msgs(&h.client(1, &call))[0]["id"].clone();
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":ask}));
    let q = client_msgs(&out, 1);
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":q[0]["id"],"error":{"code":-1,"message":"no"}}),
    );
    assert!(child_msgs(&out).is_empty());
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], 2);
    assert_eq!(got[0]["error"]["message"], "no");
    // The client goes while asked: the child hears only the call's cancel.
    let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sample"}});
    let up = child_msgs(&h.client(1, &call))[0]["id"].clone();
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":ask}));
    let out = h.input(Input::ClientGone(ClientId(1)));
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0]["method"], "notifications/cancelled");
    assert_eq!(sent[0]["params"]["requestId"], up);
    assert!(h.r.drives.is_empty() && h.r.drive_lines.is_empty());
}

#[test]
fn handshake_subscriptions_on_a_modern_child_ride_the_muxs_own_listen() {
    let mut h = modern_child();
    h.ready(1, json!({}));
    h.ready(2, json!({}));
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///a"}}));
    assert_eq!(client_msgs(&out, 1)[0]["result"], json!({}));
    let sent = child_msgs(&out);
    assert_eq!(sent[0]["method"], "notifications/cancelled", "{sent:?}");
    assert_eq!(sent[1]["method"], "subscriptions/listen");
    assert_eq!(
        sent[1]["params"]["notifications"]["resourceSubscriptions"],
        json!(["file:///a"])
    );
    assert_eq!(
        sent[1]["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    let sub = up_listen_id(&h);
    assert_eq!(sent[1]["id"], sub);
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":sub}}}));
    assert_eq!(any_client_msgs(&out), 0, "the mux's own ack");
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a","_meta":{"io.modelcontextprotocol/subscriptionId":sub}}}));
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(
        got[0]["params"],
        json!({"uri":"file:///a"}),
        "no subscription id"
    );
    assert!(client_msgs(&out, 2).is_empty());
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":sub}}}));
    assert_eq!(client_msgs(&out, 1).len() + client_msgs(&out, 2).len(), 2);
    let out = h.client(1, &json!({"jsonrpc":"2.0","id":2,"method":"resources/unsubscribe","params":{"uri":"file:///a"}}));
    let sent = child_msgs(&out);
    assert_eq!(sent[0]["params"]["requestId"], sub);
    assert_eq!(
        sent[1]["params"]["notifications"]["resourceSubscriptions"],
        json!([])
    );
}

#[test]
fn an_open_listen_on_a_modern_child_does_not_hold_a_client_whose_input_closed() {
    let mut h = modern_child();
    h.connect(1);
    let out = h.client(1, &listen(json!("L"), json!({"toolsListChanged": true})));
    assert_eq!(child_msgs(&out).len(), 1);
    let out = h.input(Input::ClientInputClosed(ClientId(1)));
    assert!(out.contains(&Action::CloseClient(ClientId(1))), "{out:?}");
    let sent = child_msgs(&out);
    assert_eq!(
        sent[0]["method"], "notifications/cancelled",
        "the listen ended upstream: {out:?}"
    );
}

#[test]
fn a_modern_childs_cancel_of_a_listen_reaches_its_client_and_the_muxs_own_is_reopened() {
    let mut h = modern_child();
    h.connect(1);
    let out = h.client(1, &listen(json!("L"), json!({"toolsListChanged": true})));
    let up = child_msgs(&out)[0]["id"].clone();
    let out = h.child(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":up,"reason":"shutting down","_meta":{"io.modelcontextprotocol/subscriptionId":up}}}));
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0]["params"]["requestId"], "L");
    assert_eq!(sub_id(&got[0]), "L");
    assert_eq!(h.r.status().pending, 0);
    let own = up_listen_id(&h);
    let out = h.child(
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":own}}),
    );
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0]["method"], "subscriptions/listen");
    assert_ne!(up_listen_id(&h), own);
    assert_eq!(any_client_msgs(&out), 0);
    // Ended with a final result instead: opened again too.
    let own = up_listen_id(&h);
    let out = h.child(&json!({"jsonrpc":"2.0","id":own,"result":{"resultType":"complete","_meta":{"io.modelcontextprotocol/subscriptionId":own}}}));
    assert_eq!(
        child_msgs(&out)[0]["method"],
        "subscriptions/listen",
        "{out:?}"
    );
    assert_ne!(up_listen_id(&h), own);
}

/// The status names the connected clients by their `clientInfo`, each once, oldest first; a
/// client gone takes its name with it.
#[test]
fn the_status_names_the_clients_by_their_client_info() {
    let mut h = H::running_with(ServerConfig {
        max_active_clients: 8,
        ..cfg()
    });
    let init = |name: Value| json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":name,"version":"1"}}});
    for (c, name) in [
        (3, json!("Cursor")),
        (4, json!("Claude Code")),
        (5, json!("Cursor")),
        (6, json!("  ")),
        (7, json!(42)),
    ] {
        h.connect(c);
        h.client(c, &init(name));
    }
    h.connect(8);
    assert_eq!(h.r.status().clients, 6);
    assert_eq!(h.r.status().client_names, ["Cursor", "Claude Code"]);
    h.input(Input::ClientGone(ClientId(3)));
    assert_eq!(
        h.r.status().client_names,
        ["Claude Code", "Cursor"],
        "another Cursor is still there, connected after Claude Code"
    );
    h.input(Input::ClientGone(ClientId(5)));
    assert_eq!(h.r.status().client_names, ["Claude Code"]);
}

/// A modern client's request for a modern child: returns the upstream id it was sent under,
/// or `None` with the answer when the mux answered it itself.
fn modern_ask(h: &mut H, c: u64, id: Value, method: &str, params: Value) -> Result<Value, Value> {
    let out = h.client(c, &modern(id, method, params, json!({})));
    match child_msgs(&out).as_slice() {
        [sent] => {
            assert_eq!(sent["method"], method);
            Ok(sent["id"].clone())
        }
        [] => Err(client_msgs(&out, c)
            .pop()
            .unwrap_or_else(|| panic!("{out:?}"))),
        more => panic!("{more:?}"),
    }
}

fn public(extra: Value, ttl: u64, scope: &str) -> Value {
    let mut r = json!({"resultType":"complete","ttlMs":ttl,"cacheScope":scope});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

#[test]
fn public_results_of_a_modern_child_are_shared_until_a_change_or_their_time_is_up() {
    let mut h = modern_child();
    for c in 1..=3 {
        h.connect(c);
    }
    let tools = json!({"tools":[{"name":"echo"}]});
    let up = modern_ask(&mut h, 1, json!(1), "tools/list", json!({})).unwrap();
    let out =
        h.child(&json!({"jsonrpc":"2.0","id":up,"result":public(tools.clone(), 5000, "public")}));
    assert_eq!(client_msgs(&out, 1)[0]["result"]["tools"], tools["tools"]);
    // Another client's same request: from the cache, under its own id, with the time left.
    h.now += Duration::from_millis(2000);
    let got = modern_ask(&mut h, 2, json!("b"), "tools/list", json!({})).unwrap_err();
    assert_eq!(got["id"], "b");
    assert_eq!(got["result"]["tools"], tools["tools"]);
    assert_eq!(got["result"]["ttlMs"], 3000);
    assert_eq!(got["result"]["cacheScope"], "public");
    assert_eq!(h.r.status().cache_hits, 1);
    // Another page is another key.
    modern_ask(&mut h, 2, json!(3), "tools/list", json!({"cursor":"2"})).unwrap();
    // The tools changed (a frame of the mux's own listen): asked again.
    let sub = up_listen_id(&h);
    h.child(&json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":sub}}}));
    let up = modern_ask(&mut h, 3, json!(4), "tools/list", json!({})).unwrap();
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":public(tools.clone(), 1000, "public")}));
    modern_ask(&mut h, 1, json!(5), "tools/list", json!({})).unwrap_err();
    assert_eq!(h.r.status().cache_hits, 2);
    // Its time is up: asked again.
    h.now += Duration::from_millis(1000);
    modern_ask(&mut h, 1, json!(6), "tools/list", json!({})).unwrap();

    // A read is keyed by its URI and dropped when that resource is updated.
    let read = |uri: &str| json!({"uri": uri});
    let contents = json!({"contents":[{"uri":"a://x","text":"x"}]});
    let up = modern_ask(&mut h, 1, json!(7), "resources/read", read("a://x")).unwrap();
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":public(contents.clone(), 60000, "public")}));
    modern_ask(&mut h, 2, json!(8), "resources/read", read("a://x")).unwrap_err();
    modern_ask(&mut h, 2, json!(9), "resources/read", read("a://y")).unwrap();
    h.child(&json!({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"a://x","_meta":{"io.modelcontextprotocol/subscriptionId":sub}}}));
    modern_ask(&mut h, 2, json!(10), "resources/read", read("a://x")).unwrap();
    assert_eq!(h.r.status().cache_hits, 3);
}

#[test]
fn private_input_required_and_retried_results_are_never_shared() {
    let mut h = modern_child();
    h.connect(1);
    h.connect(2);
    let prompts = json!({"prompts":[]});
    let up = modern_ask(&mut h, 1, json!(1), "prompts/list", json!({})).unwrap();
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":public(prompts.clone(), 5000, "private")}));
    modern_ask(&mut h, 2, json!(2), "prompts/list", json!({})).unwrap();
    // A read that asks for input, then its retry: neither answer is kept.
    let read = json!({"uri":"a://x"});
    let up = modern_ask(&mut h, 1, json!(3), "resources/read", read.clone()).unwrap();
    let ask = json!({"resultType":"input_required","inputRequests":{"k":{"method":"roots/list","params":{}}},"requestState":"s","ttlMs":5000,"cacheScope":"public"});
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":ask}));
    let retry = json!({"uri":"a://x","inputResponses":{"k":{"roots":[]}},"requestState":"s"});
    let up = modern_ask(&mut h, 1, json!(4), "resources/read", retry.clone()).unwrap();
    let contents = json!({"contents":[]});
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":public(contents.clone(), 5000, "public")}));
    modern_ask(&mut h, 2, json!(5), "resources/read", read.clone()).unwrap();
    modern_ask(&mut h, 2, json!(6), "resources/read", retry).unwrap();
    // A list answered while the list changed may be stale: not kept either.
    let up = modern_ask(&mut h, 1, json!(7), "tools/list", json!({})).unwrap();
    let sub = up_listen_id(&h);
    h.child(&json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":sub}}}));
    h.child(&json!({"jsonrpc":"2.0","id":up,"result":public(json!({"tools":[]}), 5000, "public")}));
    modern_ask(&mut h, 2, json!(8), "tools/list", json!({})).unwrap();
    assert_eq!(h.r.status().cache_hits, 0);
}

#[test]
fn a_child_restart_empties_the_shared_cache_and_handshake_clients_never_use_it() {
    let mut h = modern_child();
    h.connect(1);
    h.ready(2, json!({}));
    let up = modern_ask(&mut h, 1, json!(1), "tools/list", json!({})).unwrap();
    h.child(
        &json!({"jsonrpc":"2.0","id":up,"result":public(json!({"tools":[]}), 60000, "public")}),
    );
    // A handshake-era client's own list goes to the child, stamped with its envelope.
    let up = h.request(2, json!(2), "tools/list", json!({}));
    assert!(up.is_u64());
    h.input(Input::ChildExited("killed".into()));
    h.advance(100);
    let sent = first_words(&mut h);
    h.child(&json!({"jsonrpc":"2.0","id":sent[0]["id"],"result":serde_json::from_str::<Value>(DISCOVER_RESULT).unwrap()}));
    modern_ask(&mut h, 1, json!(3), "tools/list", json!({})).unwrap();
    assert_eq!(h.r.status().cache_hits, 0);
}

#[test]
fn configured_roots_answer_a_modern_childs_roots_input_request_without_the_client() {
    let mut h = modern_child_with(ServerConfig {
        roots: Some(vec!["file:///p".into()]),
        ..with_era(Era::Modern)
    });
    h.ready(1, json!({"sampling":{}}));
    let call = json!({"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"roots","arguments":{}}});
    let up = child_msgs(&h.client(1, &call))[0]["id"].clone();
    let roots = json!({"roots":[{"uri":"file:///p"}]});
    // Only roots asked: retried at once, the client asked nothing.
    let ask = json!({"resultType":"input_required","inputRequests":{"r":{"method":"roots/list","params":{}}},"requestState":"s1"});
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":ask}));
    assert_eq!(any_client_msgs(&out), 0, "{out:?}");
    let sent = child_msgs(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_ne!(sent[0]["id"], up);
    assert_eq!(sent[0]["params"]["inputResponses"]["r"], roots);
    assert_eq!(sent[0]["params"]["requestState"], "s1");
    // Roots and sampling: the client is asked only the sampling; the retry carries both.
    let up = sent[0]["id"].clone();
    let ask = json!({"resultType":"input_required","inputRequests":{"r":{"method":"roots/list","params":{}},"s":{"method":"sampling/createMessage","params":{}}},"requestState":"s2"});
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"result":ask}));
    let got = client_msgs(&out, 1);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0]["method"], "sampling/createMessage");
    assert!(child_msgs(&out).is_empty());
    let out = h.client(
        1,
        &json!({"jsonrpc":"2.0","id":got[0]["id"],"result":{"role":"assistant","content":{"type":"text","text":"x"}}}),
    );
    let p = &child_msgs(&out)[0]["params"];
    assert_eq!(p["inputResponses"]["r"], roots);
    assert_eq!(p["inputResponses"]["s"]["content"]["text"], "x");
    assert_eq!(p["requestState"], "s2");
}

#[test]
fn a_modern_childs_invalid_params_to_a_read_is_resource_not_found_for_a_handshake_client() {
    let mut h = modern_child();
    h.ready(1, json!({}));
    let up = h.request(1, json!(1), "resources/read", json!({"uri":"a://gone"}));
    let out = h.child(&json!({"jsonrpc":"2.0","id":up,"error":{"code":-32602,"message":"Resource not found","data":{"uri":"a://gone"}}}));
    let got = client_msgs(&out, 1);
    assert_eq!(got[0]["id"], 1);
    assert_eq!(got[0]["error"]["code"], codes::RESOURCE_NOT_FOUND_HANDSHAKE);
    assert_eq!(got[0]["error"]["data"]["uri"], "a://gone");
    // Another method's invalid params stay what they are.
    let up = h.request(1, json!(2), "tools/call", json!({"name":"echo"}));
    let out = h
        .child(&json!({"jsonrpc":"2.0","id":up,"error":{"code":-32602,"message":"bad arguments"}}));
    assert_eq!(
        client_msgs(&out, 1)[0]["error"]["code"],
        codes::INVALID_PARAMS
    );
}

#[test]
fn lines_waiting_for_the_era_are_bounded_in_number_and_bytes() {
    let mut h = H::new(with_era(Era::Auto));
    h.drain();
    let probe = first_words(&mut h);
    h.connect(1);
    h.connect(2);
    for i in 0..MAX_AWAITING_ERA_LINES {
        let out = h.client(1, &json!({"jsonrpc":"2.0","id":i,"method":"tools/list"}));
        assert!(out.is_empty(), "{out:?}");
    }
    let out = h.client(
        2,
        &json!({"jsonrpc":"2.0","id":"over","method":"tools/list"}),
    );
    let got = client_msgs(&out, 2);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0]["id"], "over");
    assert_eq!(got[0]["error"]["data"]["reason"], reasons::ERA_QUEUE_FULL);
    assert!(h
        .client(2, &json!({"jsonrpc":"2.0","method":"notifications/x"}))
        .is_empty());
    // The verdict comes: every line that waited goes on, in order.
    let out = h.child(
        &json!({"jsonrpc":"2.0","id":probe[0]["id"],"error":{"code":-32601,"message":"no"}}),
    );
    assert_eq!(child_msgs(&out)[0]["method"], "initialize");
    let out = h.child(&json!({"jsonrpc":"2.0","id":child_msgs(&out)[0]["id"],"result":serde_json::from_str::<Value>(INIT_RESULT).unwrap()}));
    let lists = child_msgs(&out)
        .iter()
        .filter(|m| m["method"] == "tools/list")
        .count();
    assert_eq!(lists, MAX_AWAITING_ERA_LINES);

    // Bytes: long lines fill the queue before the count does.
    let mut h = H::new(with_era(Era::Auto));
    h.drain();
    first_words(&mut h);
    h.connect(1);
    let pad = "x".repeat(100_000);
    let fit = MAX_AWAITING_ERA_BYTES / (pad.len() + 60);
    let mut refused = 0;
    for i in 0..=fit {
        let out = h.client(1, &json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"echo","arguments":{"text":pad}}}));
        refused += client_msgs(&out, 1).len();
    }
    assert_eq!(refused, 1, "only the line past the bytes is refused");
    assert!(h.r.awaiting_bytes <= MAX_AWAITING_ERA_BYTES);
}
