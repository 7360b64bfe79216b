//! The Streamable HTTP front: hosts reach each server at `http://127.0.0.1:PORT/NAME/mcp` with
//! a bearer token, no proxy process. The official Python SDK's HTTP client drives
//! server-everything through it; raw requests check the guards (token, Origin, Host).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::*;

/// A port nothing listens on now (the daemon binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(servers: &str) -> (Mux, u16) {
    let port = free_port();
    let mux = Mux::start_full(
        tempfile::tempdir().unwrap(),
        &format!("http = \"127.0.0.1:{port}\""),
        servers,
        &[],
        &[],
    );
    mux.log.wait_for(&["HTTP front listening"]);
    (mux, port)
}

fn everything(peers: &std::path::Path) -> String {
    format!(
        "[servers.everything]\ncmd = \"node\"\nargs = [\"{}\", \"stdio\"]\n",
        peers
            .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
            .display()
    )
}

/// `status --json`'s `http` entry: the URL and the token file, never the token.
fn http_status(mux: &Mux) -> (String, std::path::PathBuf, String) {
    let (code, out, err) = mux.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let url = v["http"]["url"].as_str().unwrap().to_owned();
    let file = std::path::PathBuf::from(v["http"]["token_file"].as_str().unwrap());
    (url, file, out)
}

/// A Python SDK session (`script` in tests/peers) against the front, its stdout and stderr piped.
fn py_session(
    peers: &std::path::Path,
    script: &str,
    url: &str,
    token: &std::path::Path,
    flags: &[&str],
) -> std::process::Child {
    Command::new(peers.join(".venv/bin/python"))
        .arg(peers.join(script))
        .args(flags)
        .args(["--url", url, "--token-file"])
        .arg(token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn python_sdk_sessions_over_http_get_only_their_own_answers() {
    let Some(peers) = peers() else { return };
    let (mux, port) = start(&everything(&peers));
    let (url, token_file, status) = http_status(&mux);
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(!status.contains(token.trim()), "status shows the token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let endpoint = format!("{url}/everything/mcp");
    // Both at once, with the same request ids and progress tokens (the SDK numbers from 0 in
    // each); only alpha declares sampling, so the sampling request must reach alpha's session.
    let a = py_session(
        &peers,
        "everything_session.py",
        &endpoint,
        &token_file,
        &["--tag", "alpha", "--cancel"],
    );
    let b = py_session(
        &peers,
        "everything_session.py",
        &endpoint,
        &token_file,
        &["--tag", "bravo", "--no-sampling"],
    );
    let (a, b) = (finish(a), finish(b));
    for s in [&a, &b] {
        assert_eq!(s["server_name"], "mcp-servers/everything");
        assert_eq!(s["echo_ok"], true);
        assert_eq!(s["progress"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
    }
    assert_eq!(a["sampling_ok"], true);
    assert_eq!(a["sampling_requests"], 1);
    assert_eq!(b["sampling_requests"], 0);
    assert_eq!(a["cancel_ok"], true);
    // The SDK ends its sessions with DELETE: no client is left.
    mux.wait_status("everything", |s| s["clients"] == 0);
    let log = mux.log.text();
    assert_eq!(log.matches("HTTP session opened").count(), 2, "{log}");
}

/// One HTTP/1.1 request to `/fake/mcp` on a fresh connection; the status code and the whole
/// answer.
fn request(port: u16, method: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    request_to(port, "/fake/mcp", method, headers, body)
}

/// One HTTP/1.1 request to `path` on a fresh connection; the status code and the whole answer.
fn request_to(
    port: u16,
    path: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    (code, out)
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

#[test]
fn the_front_wants_the_token_a_local_origin_and_bounded_bodies() {
    let (mux, port) = start(
        "[servers.fake]\ncmd = \"{fake}\"\nmax_request_bytes = 4096\nmax_active_clients = 1\n",
    );
    let (_, token_file, _) = http_status(&mux);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let json = ("Content-Type", "application/json");
    let accept = ("Accept", "application/json, text/event-stream");
    let auth = ("Authorization", bearer.as_str());

    let (code, out) = request(port, "POST", &[json, accept], INIT);
    assert_eq!(code, 401, "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{out}"
    );
    let (code, _) = request(
        port,
        "POST",
        &[json, accept, ("Authorization", "Bearer nope")],
        INIT,
    );
    assert_eq!(code, 401);
    // DNS rebinding: a page elsewhere, even with the token, and a foreign Host.
    let (code, _) = request(
        port,
        "POST",
        &[json, accept, auth, ("Origin", "http://evil.example")],
        INIT,
    );
    assert_eq!(code, 403);
    let (code, _) = request(
        port,
        "POST",
        &[json, accept, auth, ("Host", "evil.example")],
        INIT,
    );
    assert_eq!(code, 403);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"p":"{}"}}}}"#,
        "a".repeat(5000)
    );
    let (code, _) = request(port, "POST", &[json, accept, auth], &big);
    assert_eq!(code, 413);
    let (code, _) = request(
        port,
        "POST",
        &[json, accept, auth, ("Mcp-Session-Id", "nosuch")],
        INIT,
    );
    assert_eq!(code, 404);
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (code, _) = request(port, "POST", &[json, accept, auth], list);
    assert_eq!(code, 400, "a request outside a session");

    // A local page with the token gets in; the session counts as the server's client.
    let (code, out) = request(
        port,
        "POST",
        &[json, accept, auth, ("Origin", "http://localhost:3000")],
        INIT,
    );
    assert_eq!(code, 200, "{out}");
    let session = session_id(&out);
    mux.wait_status("fake", |s| s["clients"] == 1);
    // Over max_active_clients: refused as an HTTP error, not a session.
    let (code, out) = request(port, "POST", &[json, accept, auth], INIT);
    assert_eq!(code, 503, "{out}");
    assert!(out.contains("too many clients"), "{out}");

    let sid = ("Mcp-Session-Id", session.as_str());
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let (code, _) = request(port, "POST", &[json, accept, auth, sid], note);
    assert_eq!(code, 202);
    let (code, out) = request(port, "POST", &[json, accept, auth, sid], list);
    assert_eq!(code, 200, "{out}");
    assert!(
        out.contains("text/event-stream") && out.contains(r#"data: {"id":2,"#),
        "{out}"
    );
    let (code, _) = request(port, "DELETE", &[auth, sid], "");
    assert_eq!(code, 200);
    mux.wait_status("fake", |s| s["clients"] == 0);
    let (code, _) = request(port, "POST", &[json, accept, auth, sid], list);
    assert_eq!(code, 404, "a deleted session is gone");
}

#[test]
fn a_non_loopback_http_address_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mux.toml");
    std::fs::write(
        &config,
        config_text(
            dir.path(),
            "http = \"0.0.0.0:7311\"",
            "[servers.fake]\ncmd = \"{fake}\"\n",
        ),
    )
    .unwrap();
    let out = Command::new(MUX)
        .arg("--config")
        .arg(&config)
        .env("HOME", dir.path())
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":4: daemon.http: ") && err.contains("not a loopback address"),
        "{err}"
    );
    // Nothing was started.
    assert!(!dir.path().join("run/fake.sock").exists());
}

#[test]
fn a_new_http_address_waits_for_a_restart_and_the_front_stays() {
    let (mux, port) = start("[servers.fake]\ncmd = \"{fake}\"\n");
    let other = free_port();
    mux.edit(
        &format!("http = \"127.0.0.1:{other}\""),
        "[servers.fake]\ncmd = \"{fake}\"\n",
    );
    let (code, out, err) = mux.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("http changed: needs a daemon restart"),
        "{out}"
    );
    let (url, _, _) = http_status(&mux);
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    let (code, _) = request(port, "POST", &[("Content-Type", "application/json")], INIT);
    assert_eq!(code, 401, "the front still answers on its address");
}

#[test]
fn a_broken_sse_stream_resumes_with_last_event_id() {
    let (mux, port) = start("[servers.fake]\ncmd = \"{fake}\"\n");
    let (_, token_file, _) = http_status(&mux);
    let bearer = format!(
        "Bearer {}",
        std::fs::read_to_string(&token_file).unwrap().trim()
    );
    let json = ("Content-Type", "application/json");
    let accept = ("Accept", "application/json, text/event-stream");
    let auth = ("Authorization", bearer.as_str());
    let (code, out) = request(port, "POST", &[json, accept, auth], INIT);
    assert_eq!(code, 200, "{out}");
    let session = session_id(&out);
    let sid = ("Mcp-Session-Id", session.as_str());
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(
        request(port, "POST", &[json, accept, auth, sid], note).0,
        202
    );

    // A slow call whose connection breaks right after the stream's first (priming) event.
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"slow","arguments":{"ms":1500,"steps":3},"_meta":{"progressToken":"p3"}}}"#;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "POST /fake/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAuthorization: {bearer}\r\nMcp-Session-Id: {session}\r\nContent-Length: {}\r\n\r\n{call}",
        call.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let last = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before its first event");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("id: ")) {
            break id.trim().to_owned();
        }
    };
    assert!(
        last.ends_with("-0"),
        "the first event primes the stream: {last}"
    );
    drop(s);

    // Resumed: what came after that event, the answer included, then the stream ends.
    let (code, out) = request(
        port,
        "GET",
        &[
            ("Accept", "text/event-stream"),
            auth,
            sid,
            ("Last-Event-ID", &last),
        ],
        "",
    );
    assert_eq!(code, 200, "{out}");
    assert!(out.contains(r#""progressToken":"p3""#), "{out}");
    assert!(
        out.contains(r#"{"id":3,"#) || out.contains(r#""id":3,"result""#),
        "{out}"
    );
    // Nothing more after the answer: resuming again is answered, but nothing comes.
    let ids: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    let end = ids.last().unwrap().trim();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET /fake/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nAuthorization: {bearer}\r\nMcp-Session-Id: {session}\r\nLast-Event-ID: {end}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"),
        "{head}"
    );
    let (code, _) = request(
        port,
        "GET",
        &[
            ("Accept", "text/event-stream"),
            auth,
            sid,
            ("Last-Event-ID", "99-1"),
        ],
        "",
    );
    assert_eq!(code, 400, "no stream 99");
}

#[test]
fn python_sdk_2026_07_28_and_auto_clients_over_http_get_only_their_own_answers() {
    let Some(peers) = peers() else { return };
    let (mux, _) = start(&everything(&peers));
    let (url, token_file, _) = http_status(&mux);
    let endpoint = format!("{url}/everything/mcp");
    let run = |mode: &str, tag: &str, sampling: bool| {
        let mut flags = vec!["--mode", mode, "--tag", tag];
        if sampling {
            flags.push("--sampling");
        }
        py_session(&peers, "modern_session.py", &endpoint, &token_file, &flags)
    };
    // At once, each with its own echo text (checked by the script): one pinned to
    // 2026-07-28, one in auto mode (which probes server/discover, finds the 2026-07-28 form
    // and uses it), one in legacy mode on a session. Nothing on stdio ties server-everything's
    // sampling request to the call that caused it, so one client at a time declares sampling:
    // the request must reach that one, as an input request (MRTR) for a 2026-07-28 client.
    let (modern, auto, legacy) = (
        run("2026-07-28", "alpha", true),
        run("auto", "bravo", false),
        run("legacy", "charlie", false),
    );
    let (modern, auto, legacy) = (finish(modern), finish(auto), finish(legacy));
    let (auto_sampling, legacy_again) = (run("auto", "delta", true), run("legacy", "echo", false));
    let (auto_sampling, legacy_again) = (finish(auto_sampling), finish(legacy_again));
    for s in [&modern, &auto, &auto_sampling] {
        assert_eq!(s["protocol_version"], "2026-07-28", "{s}");
        assert_eq!(s["listen_ok"], true, "{s}");
    }
    for s in [&legacy, &legacy_again] {
        assert_ne!(s["protocol_version"], "2026-07-28", "{s}");
    }
    // The pinned client never asks server/discover, so it knows no server name.
    for s in [&auto, &legacy, &auto_sampling, &legacy_again] {
        assert_eq!(s["server_name"], "mcp-servers/everything", "{s}");
    }
    for s in [&modern, &auto, &legacy, &auto_sampling, &legacy_again] {
        assert_eq!(s["echo_ok"], true, "{s}");
        assert_eq!(s["resource_ok"], true, "{s}");
        assert_eq!(
            s["progress"],
            serde_json::json!([1.0, 2.0, 3.0, 4.0]),
            "{s}"
        );
        assert_eq!(s["cancel_ok"], true, "{s}");
    }
    for s in [&modern, &auto_sampling] {
        assert_eq!(s["sampling_ok"], true, "{s}");
    }
    // Nothing is left: the requests' connections, the one parked for the sampling retry and
    // the listens all closed, and the legacy sessions were deleted.
    mux.wait_status("everything", |s| s["clients"] == 0);
    let log = mux.log.text();
    assert_eq!(log.matches("HTTP session opened").count(), 2, "{log}");
}

/// The headers of a 2026-07-28 request to /fake/mcp, with the token.
fn modern_headers<'a>(bearer: &'a str, method: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", bearer),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ]
}

fn modern_request(id: u32, method: &str, params: &str) -> String {
    modern_request_meta(id, method, params, "")
}

/// A 2026-07-28 request: `params` (members, without braces) and the envelope, with `meta`
/// (members) added to `_meta`.
fn modern_request_meta(id: u32, method: &str, params: &str, meta: &str) -> String {
    let meta = format!(
        r#""_meta":{{{meta}{}"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}"#,
        if meta.is_empty() { "" } else { "," }
    );
    let params = if params.is_empty() {
        format!("{{{meta}}}")
    } else {
        format!("{{{params},{meta}}}")
    };
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

/// The JSON body of an answer.
fn body_of(out: &str) -> Value {
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn the_2026_07_28_form_needs_no_session_and_headers_that_match_the_body() {
    let (mux, port) = start("[servers.fake]\ncmd = \"{fake}\"\n");
    let (_, token_file, _) = http_status(&mux);
    let bearer = format!(
        "Bearer {}",
        std::fs::read_to_string(&token_file).unwrap().trim()
    );

    // server/discover, answered by the mux as one JSON object, with no session.
    let discover = modern_request(1, "server/discover", "");
    let (code, out) = request(
        port,
        "POST",
        &modern_headers(&bearer, "server/discover"),
        &discover,
    );
    assert_eq!(code, 200, "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("mcp-session-id"),
        "{out}"
    );
    let v = body_of(&out);
    assert_eq!(v["id"], 1, "{out}");
    assert!(
        v["result"]["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "2026-07-28")),
        "{out}"
    );

    // A request, answered with resultType; tools/call needs Mcp-Name.
    let list = modern_request(2, "tools/list", "");
    let (code, out) = request(port, "POST", &modern_headers(&bearer, "tools/list"), &list);
    assert_eq!(code, 200, "{out}");
    assert_eq!(body_of(&out)["result"]["resultType"], "complete", "{out}");
    let call = modern_request(
        3,
        "tools/call",
        r#""name":"echo","arguments":{"text":"hi"}"#,
    );
    let mut h = modern_headers(&bearer, "tools/call");
    let (code, out) = request(port, "POST", &h, &call);
    assert_eq!(code, 400, "{out}");
    let v = body_of(&out);
    assert_eq!(v["error"]["code"], -32020, "{out}");
    assert_eq!(v["id"], 3, "{out}");
    h.push(("Mcp-Name", "echo"));
    let (code, out) = request(port, "POST", &h, &call);
    assert_eq!(code, 200, "{out}");
    assert!(body_of(&out)["result"].is_object(), "{out}");

    // Mismatches and missing headers: 400 with HeaderMismatch.
    let (code, out) = request(port, "POST", &modern_headers(&bearer, "tools/call"), &list);
    assert_eq!(
        (code, body_of(&out)["error"]["code"].clone()),
        (400, (-32020).into()),
        "{out}"
    );
    let old_header: Vec<_> = modern_headers(&bearer, "tools/list")
        .into_iter()
        .filter(|(k, _)| *k != "MCP-Protocol-Version")
        .collect();
    let (code, out) = request(port, "POST", &old_header, &list);
    assert_eq!(
        (code, body_of(&out)["error"]["code"].clone()),
        (400, (-32020).into()),
        "{out}"
    );

    // A version nobody serves: 400 with the supported versions.
    let mut h = modern_headers(&bearer, "tools/list");
    h[3].1 = "2099-01-01";
    let (code, out) = request(port, "POST", &h, &list);
    assert_eq!(code, 400, "{out}");
    let v = body_of(&out);
    assert_eq!(v["error"]["code"], -32022, "{out}");
    assert_eq!(v["error"]["data"]["requested"], "2099-01-01", "{out}");

    // A method the modern era dropped: 404 with -32601.
    let ping = modern_request(4, "ping", "");
    let (code, out) = request(port, "POST", &modern_headers(&bearer, "ping"), &ping);
    assert_eq!(code, 404, "{out}");
    assert_eq!(body_of(&out)["error"]["code"], -32601, "{out}");

    // No client notifications, no GET stream, no sessions to delete.
    let note = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}"#;
    let (code, _) = request(
        port,
        "POST",
        &modern_headers(&bearer, "notifications/cancelled"),
        note,
    );
    assert_eq!(code, 202);
    let (code, out) = request(port, "GET", &modern_headers(&bearer, "x"), "");
    assert_eq!(code, 405, "{out}");
    assert!(out.to_ascii_lowercase().contains("allow: post"), "{out}");
    // Each request was a client only while it ran.
    mux.wait_status("fake", |s| s["clients"] == 0);

    // A slow call: its first progress turns the answer into an SSE stream; closing that
    // stream cancels the call upstream.
    let slow = modern_request_meta(
        5,
        "tools/call",
        r#""name":"slow","arguments":{"ms":20000,"steps":20}"#,
        r#""progressToken":"p5""#,
    );
    let mut h = modern_headers(&bearer, "tools/call");
    h.push(("Mcp-Name", "slow"));
    h.push(("Host", "127.0.0.1"));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = String::from("POST /fake/mcp HTTP/1.1\r\n");
    for (k, v) in &h {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{slow}", slow.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("notifications/progress") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"),
        "{head}"
    );
    assert!(head.contains(r#""progressToken":"p5""#), "{head}");
    mux.wait_status("fake", |s| s["pending"] == 1);
    drop(s);
    mux.wait_status("fake", |s| s["pending"] == 0 && s["clients"] == 0);
    let mut c = mux.connect("fake");
    c.initialize(serde_json::json!({}));
    let stats: Value = serde_json::from_str(&text(&c.call(
        serde_json::json!(1),
        "stats",
        serde_json::json!({}),
    )))
    .unwrap();
    assert_eq!(
        stats["cancelled"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: the fields follow the last ")".
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// `pid` and every process under it.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children_of(all[i]));
        i += 1;
    }
    all
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// An HTTP session of the 2025-11-25 form on server `name`: its id, once initialized.
fn open_session(port: u16, name: &str, bearer: &str, client: &str) -> String {
    let path = format!("/{name}/mcp");
    let h = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", bearer),
    ];
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"{client}","version":"1"}}}}}}"#
    );
    let (code, out) = request_to(port, &path, "POST", &h, &init);
    assert_eq!(code, 200, "{name}: {out}");
    let sid = session_id(&out);
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let mut with_sid = h.to_vec();
    with_sid.push(("Mcp-Session-Id", &sid));
    assert_eq!(request_to(port, &path, "POST", &with_sid, note).0, 202);
    sid
}

/// A request on a session: the answer from its SSE stream.
fn session_request(
    port: u16,
    name: &str,
    bearer: &str,
    sid: &str,
    id: u32,
    method: &str,
    params: &str,
) -> Value {
    let h = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", bearer),
        ("Mcp-Session-Id", sid),
    ];
    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
    let (code, out) = request_to(port, &format!("/{name}/mcp"), "POST", &h, &body);
    assert_eq!(code, 200, "{name}: {out}");
    out.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("{name}: no answer to {id} in {out}"))
}

/// Four hosts on each of three real servers, all by URL: every session works while the others
/// are open, and the daemon runs one process tree per server and nothing per host.
#[test]
fn twelve_http_sessions_on_three_real_servers_add_no_process() {
    let Some(peers) = peers() else { return };
    let servers = format!(
        "{}[servers.memory]\ncmd = \"node\"\nargs = [\"{}\"]\nenv = {{ MEMORY_FILE_PATH = \"{{dir}}/memory.jsonl\" }}\n[servers.time]\ncmd = \"{}\"\n",
        everything(&peers),
        peers
            .join("node_modules/@modelcontextprotocol/server-memory/dist/index.js")
            .display(),
        peers.join(".venv/bin/mcp-server-time").display()
    );
    let (mux, port) = start(&servers);
    let (_, token_file, _) = http_status(&mux);
    let bearer = format!(
        "Bearer {}",
        std::fs::read_to_string(&token_file).unwrap().trim()
    );
    let calls = [
        (
            "everything",
            r#"{"name":"echo","arguments":{"message":"MARK"}}"#,
            "Echo: MARK",
        ),
        (
            "memory",
            r#"{"name":"read_graph","arguments":{}}"#,
            "entities",
        ),
        (
            "time",
            r#"{"name":"get_current_time","arguments":{"timezone":"UTC"}}"#,
            "UTC",
        ),
    ];
    let mut sessions = Vec::new();
    for host in 0..4 {
        for (name, _, _) in calls {
            let sid = open_session(port, name, &bearer, &format!("host-{host}"));
            sessions.push((name, host, sid));
        }
    }
    // Every session works with all twelve open, and sees its own marker.
    for (name, host, sid) in &sessions {
        let (_, params, want) = calls.iter().find(|(n, _, _)| n == name).unwrap();
        let mark = format!("{name}-{host}");
        let params = params.replace("MARK", &mark);
        let want = want.replace("MARK", &mark);
        let tools = session_request(port, name, &bearer, sid, 1, "tools/list", "{}");
        assert!(
            tools["result"]["tools"]
                .as_array()
                .is_some_and(|t| !t.is_empty()),
            "{tools}"
        );
        let answer = session_request(port, name, &bearer, sid, 2, "tools/call", &params);
        assert_ne!(answer["result"]["isError"], true, "{answer}");
        let text = text(&answer);
        assert!(text.contains(&want), "{name} for host {host}: {answer}");
    }
    let daemon = mux.child.id();
    let mut servers_seen = Vec::new();
    for (name, _, _) in calls {
        let s = mux.wait_status(name, |s| s["clients"] == 4);
        servers_seen.push(s["pid"].as_u64().unwrap() as u32);
    }
    // The daemon's children are the three servers, no more; nothing under it is a proxy.
    let mut children = children_of(daemon);
    children.sort_unstable();
    servers_seen.sort_unstable();
    assert_eq!(children, servers_seen, "the daemon's children");
    // No proxy anywhere under the tests (none of this file's tests starts one), the daemon
    // included.
    let all = tree(std::process::id());
    assert!(all.contains(&daemon));
    let proxies: Vec<u32> = all
        .iter()
        .copied()
        .filter(|p| comm(*p).starts_with("rmcp-mux-proxy"))
        .collect();
    assert!(proxies.is_empty(), "proxies: {proxies:?}");
}

/// The `Mcp-Session-Id` header of a raw HTTP response.
fn session_id(out: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("mcp-session-id: ")
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no session id in {out}"))
}
