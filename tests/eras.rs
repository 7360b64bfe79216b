//! Servers of the 2026-07-28 era behind the real daemon: `era = "modern"` and `era = "auto"`
//! against `mcp-fake-server --era modern|dual` (a modern-only server and one pinned by its first
//! request, on cue) with raw clients of both eras. The real dual-era server (mcp-server-time)
//! is in `real_peers.rs`.

mod support;

use serde_json::{json, Value};
use support::*;

fn server(name: &str, era: &str, fake_args: &str) -> String {
    format!(
        "[servers.{name}]\ncmd = \"{{fake}}\"\nargs = [{fake_args}]\nera = \"{era}\"\nrestart_backoff_ms = 50\n"
    )
}

/// A request in the 2026-07-28 envelope, declaring `caps` and naming the client `name`.
fn modern(id: Value, method: &str, mut params: Value, name: &str, caps: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": name, "version": "1"},
    });
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
}

/// The fake's own counters, asked with this client's era.
fn stats(c: &mut Client, id: Value, modern_client: bool) -> Value {
    let r = if modern_client {
        c.send(&modern(
            id.clone(),
            "tools/call",
            json!({"name":"stats","arguments":{}}),
            "stats",
            json!({}),
        ));
        c.response(&id)
    } else {
        c.call(id, "stats", json!({}))
    };
    r["result"]["structuredContent"].clone()
}

/// A handshake-era client against a server that speaks only 2026-07-28: the mux answers its
/// `initialize` from the server's discover result, stamps its own envelope on each request,
/// drives the server's input requests as real sampling requests, and carries its
/// subscriptions on a listen of its own.
#[test]
fn a_handshake_client_uses_a_modern_only_server() {
    let mux = Mux::start(&server("m", "modern", "\"--era\", \"modern\""));
    let st = mux.wait_status("m", |s| s["state"] == "running");
    assert_eq!(st["era"], "modern", "{st}");
    assert_eq!(st["protocol_version"], "2026-07-28", "{st}");
    let mut c = mux.connect("m");
    let init = c.initialize(json!({"sampling":{}}));
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-fake-server");
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(init["result"]["instructions"], "a fake server for tests");
    let ping = c.request(json!("p"), "ping", json!({}));
    assert_eq!(ping["result"], json!({}));
    let tools = c.request(json!(1), "tools/list", json!({}));
    assert!(
        tools["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo"),
        "{tools}"
    );
    let echo = c.call(json!(2), "echo", json!({"text":"hello"}));
    assert_eq!(text(&echo), "hello");

    // Sampling through MRTR: the client gets a real sampling request and the call's result.
    c.send(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sample","arguments":{"text":"hi"}}}));
    let ask = c.recv().unwrap();
    assert_eq!(ask["method"], "sampling/createMessage", "{ask}");
    assert_eq!(ask["params"]["messages"][0]["content"]["text"], "hi");
    c.send(&json!({"jsonrpc":"2.0","id":ask["id"],"result":{"role":"assistant","content":{"type":"text","text":"sampled-here"}}}));
    let done = c.response(&json!(3));
    assert!(text(&done).contains("sampled-here"), "{done}");

    // Subscribe, an update arrives without the listen's id; unsubscribe, none does.
    let sub = c.request(
        json!(4),
        "resources/subscribe",
        json!({"uri":"file:///watched"}),
    );
    assert_eq!(sub["result"], json!({}));
    // The listen with the URI replaces the mux's first one: wait until the fake holds it.
    let deadline = std::time::Instant::now() + WAIT;
    let mut n = 100;
    loop {
        c.call(
            json!(n),
            "notify",
            json!({"kind":"updated","uri":"file:///watched"}),
        );
        n += 1;
        if let Some(note) = c
            .notes
            .iter()
            .find(|m| m["method"] == "notifications/resources/updated")
        {
            assert_eq!(note["params"], json!({"uri":"file:///watched"}));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no update arrived: {:?}",
            c.notes
        );
    }
    let unsub = c.request(
        json!(5),
        "resources/unsubscribe",
        json!({"uri":"file:///watched"}),
    );
    assert_eq!(unsub["result"], json!({}));
    c.notes.clear();
    let s = stats(&mut c, json!(6), false);
    assert_eq!(s["initialize"], 0, "never an initialize: {s}");
    c.call(
        json!(7),
        "notify",
        json!({"kind":"updated","uri":"file:///watched"}),
    );
    c.call(json!(8), "notify", json!({"kind":"tools_changed"}));
    // The list change (on the same listen, after the update) arrived; the update did not.
    let deadline = std::time::Instant::now() + WAIT;
    let mut n = 200;
    while !c
        .notes
        .iter()
        .any(|m| m["method"] == "notifications/tools/list_changed")
    {
        assert!(std::time::Instant::now() < deadline, "{:?}", c.notes);
        c.call(json!(n), "echo", json!({"text":"x"}));
        n += 1;
    }
    assert!(
        !c.notes
            .iter()
            .any(|m| m["method"] == "notifications/resources/updated"),
        "{:?}",
        c.notes
    );
    // Each request carried this client's own envelope.
    let last = s["metas"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["io.modelcontextprotocol/clientInfo"]["name"], "test");
    assert_eq!(
        last["io.modelcontextprotocol/clientCapabilities"],
        json!({"sampling":{}})
    );
    assert_eq!(mux.server_status("m")["restarts"], 0);
}

/// Two handshake-era clients with different capabilities on one modern child: each request
/// carries its own client's, never a mix.
#[test]
fn each_handshake_client_is_stamped_with_its_own_envelope() {
    let mux = Mux::start(&server("m", "modern", "\"--era\", \"modern\""));
    let mut a = mux.connect("m");
    a.initialize(json!({"sampling":{}}));
    let mut b = mux.connect("m");
    b.request(
        json!("init"),
        "initialize",
        json!({"protocolVersion":"2025-11-25","capabilities":{"roots":{}},"clientInfo":{"name":"bravo","version":"2"}}),
    );
    let sa = stats(&mut a, json!(1), false);
    let last = sa["metas"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["io.modelcontextprotocol/clientInfo"]["name"], "test");
    let sb = stats(&mut b, json!(1), false);
    let last = sb["metas"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["io.modelcontextprotocol/clientInfo"]["name"], "bravo");
    assert_eq!(
        last["io.modelcontextprotocol/clientCapabilities"],
        json!({"roots":{}})
    );
    // Without sampling, the server's input request is refused by the server itself.
    let r = b.call(json!(2), "sample", json!({"text":"x"}));
    assert_eq!(r["error"]["code"], -32021, "{r}");
}

/// `era = "auto"` in front of a server pinned by its first request: the probe makes it modern,
/// a modern client's envelope passes through, and a handshake client is served too.
#[test]
fn auto_finds_a_dual_era_server_modern_and_both_eras_use_it() {
    let mux = Mux::start(&server("d", "auto", "\"--era\", \"dual\""));
    let st = mux.wait_status("d", |s| s["state"] == "running");
    assert_eq!(st["era"], "modern", "{st}");
    assert_eq!(st["protocol_version"], "2026-07-28");
    let mut m = mux.connect("d");
    m.send(&modern(
        json!("L"),
        "tools/list",
        json!({}),
        "modern-one",
        json!({"sampling":{}}),
    ));
    let list = m.response(&json!("L"));
    assert_eq!(list["result"]["resultType"], "complete");
    assert_eq!(
        list["result"]["cacheScope"], "public",
        "the child's own marks"
    );
    // MRTR between a modern client and a modern child: the client drives it.
    m.send(&modern(
        json!(1),
        "tools/call",
        json!({"name":"sample","arguments":{"text":"q"}}),
        "modern-one",
        json!({"sampling":{}}),
    ));
    let ask = m.response(&json!(1));
    assert_eq!(ask["result"]["resultType"], "input_required", "{ask}");
    let (key, _) = ask["result"]["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let mut retry = modern(
        json!(2),
        "tools/call",
        json!({"name":"sample","arguments":{"text":"q"}}),
        "modern-one",
        json!({"sampling":{}}),
    );
    retry["params"]["inputResponses"] =
        json!({ key: {"role":"assistant","content":{"type":"text","text":"fine"}} });
    retry["params"]["requestState"] = ask["result"]["requestState"].clone();
    m.send(&retry);
    let done = m.response(&json!(2));
    assert!(text(&done).contains("fine"), "{done}");
    // A subscription stream through the mux: ack and frames under the client's own id.
    m.send(&modern(
        json!("sub-1"),
        "subscriptions/listen",
        json!({"notifications":{"toolsListChanged":true}}),
        "modern-one",
        json!({}),
    ));
    let ack = m.recv().unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub-1"
    );
    let mut h = mux.connect("d");
    h.initialize(json!({}));
    h.call(json!(1), "notify", json!({"kind":"tools_changed"}));
    let frame = m.recv().unwrap();
    assert_eq!(frame["method"], "notifications/tools/list_changed");
    assert_eq!(
        frame["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub-1"
    );
    let s = stats(&mut m, json!(3), true);
    assert_eq!(s["initialize"], 0, "{s}");
    let metas = s["metas"].as_array().unwrap();
    assert!(
        metas
            .iter()
            .any(|x| x["io.modelcontextprotocol/clientInfo"]["name"] == "modern-one"),
        "the modern client's envelope reached the child: {s}"
    );
    assert!(
        metas
            .iter()
            .any(|x| x["io.modelcontextprotocol/clientInfo"]["name"] == "test"),
        "the handshake client's stamped one too: {s}"
    );
}

/// `era = "auto"` in front of a handshake-only server: the probe's -32601 leads to
/// `initialize` on the same process, and a restarted child is not probed again.
#[test]
fn auto_falls_back_to_initialize_and_keeps_the_verdict_across_restarts() {
    let mux = Mux::start(&server("h", "auto", ""));
    let st = mux.wait_status("h", |s| s["state"] == "running");
    assert_eq!(st["era"], "handshake", "{st}");
    assert_eq!(st["protocol_version"], "2025-11-25");
    let mut c = mux.connect("h");
    c.initialize(json!({}));
    // The probe, initialize and this call: one process.
    let s = stats(&mut c, json!(1), false);
    assert_eq!(
        (s["initialize"].clone(), s["requests"].clone()),
        (json!(1), json!(3)),
        "{s}"
    );
    let pid = s["pid"].clone();
    c.send(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"crash","arguments":{}}}));
    c.response(&json!(2));
    mux.wait_status("h", |s| s["state"] == "running" && s["restarts"] == 1);
    let s = stats(&mut c, json!(3), false);
    assert_ne!(s["pid"], pid);
    assert_eq!(s["requests"], 2, "initialize and this call, no probe: {s}");
}

/// A server that dies of the probe is started again without it.
#[test]
fn auto_respawns_without_the_probe_a_server_that_dies_of_it() {
    let mux = Mux::start(&server("x", "auto", "\"--exit-on-discover\""));
    let st = mux.wait_status("x", |s| s["state"] == "running");
    assert_eq!(st["era"], "handshake", "{st}");
    assert_eq!(st["restarts"], 0, "not counted as a crash: {st}");
    mux.log
        .wait_for(&["child exited on the server/discover probe"]);
    let mut c = mux.connect("x");
    c.initialize(json!({}));
    assert_eq!(text(&c.call(json!(1), "echo", json!({"text":"ok"}))), "ok");
}

/// `status` shows the era and protocol version in its table.
#[test]
fn status_shows_each_childs_era_and_version() {
    let mux = Mux::start(&format!(
        "{}{}",
        server("m", "modern", "\"--era\", \"modern\""),
        server("h", "handshake", "")
    ));
    mux.wait_status("m", |s| s["state"] == "running");
    mux.wait_status("h", |s| s["state"] == "running");
    let (code, out, err) = mux.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Protocol"), "{out}");
    assert!(out.contains("modern 2026-07-28"), "{out}");
    assert!(out.contains("handshake 2025-11-25"), "{out}");
}

/// Results a modern-only server marks `cacheScope: "public"` are shared by the mux's modern
/// clients: the second client's list comes from the mux, not the server, until the server
/// says the list changed; the status counts the round trips saved.
#[test]
fn public_lists_of_a_modern_server_are_shared_between_modern_clients() {
    let mux = Mux::start(&server("m", "modern", "\"--era\", \"modern\""));
    mux.wait_status("m", |s| s["state"] == "running");
    let mut a = mux.connect("m");
    let mut b = mux.connect("m");
    let list = |c: &mut Client, id: Value| {
        c.send(&modern(
            id.clone(),
            "tools/list",
            json!({}),
            "lister",
            json!({}),
        ));
        let r = c.response(&id);
        assert!(
            r["result"]["tools"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["name"] == "echo")),
            "{r}"
        );
        r
    };
    let first = list(&mut a, json!(1));
    assert_eq!(first["result"]["cacheScope"], "public");
    let second = list(&mut b, json!("b1"));
    let ttl = second["result"]["ttlMs"].as_u64().unwrap();
    assert!(ttl > 0 && ttl <= 60000, "{second}");
    let s = stats(&mut b, json!("s1"), true);
    assert_eq!(s["tools_list"], 1, "one list reached the server: {s}");
    assert_eq!(mux.server_status("m")["cache_hits"], 1);

    // The server's list changes: the next list goes to it again.
    b.send(&modern(
        json!("n"),
        "tools/call",
        json!({"name":"notify","arguments":{"kind":"tools_changed"}}),
        "lister",
        json!({}),
    ));
    b.response(&json!("n"));
    list(&mut a, json!(2));
    list(&mut b, json!("b2"));
    let s = stats(&mut a, json!(3), true);
    assert_eq!(s["tools_list"], 2, "{s}");
    assert_eq!(mux.server_status("m")["cache_hits"], 2);
}
