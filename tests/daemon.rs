//! The real `rmcp-mux` binary with our fake server: what no real server does on cue (crash,
//! garbage, slow replies with progress, sampling requests), plus the daemon's own duties
//! (sockets, signals, status, limits, restarts).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use support::*;

fn fake(name: &str, extra: &str) -> String {
    format!(
        "[servers.{name}]\ncmd = \"{{fake}}\"\nargs = [\"--counter-file\", \"{{dir}}/{name}.starts\"]\nrestart_backoff_ms = 50\nrestart_backoff_max_ms = 200\nshutdown_grace_ms = 500\n{extra}\n"
    )
}

fn starts(mux: &Mux, name: &str) -> usize {
    std::fs::read_to_string(mux.path(&format!("{name}.starts")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn stats(c: &mut Client, id: i64) -> serde_json::Value {
    let r = c.call(json!(id), "stats", json!({}));
    serde_json::from_str(&text(&r)).unwrap()
}

#[test]
fn two_clients_share_one_child_and_one_handshake() {
    let mux = Mux::start(&fake("f", ""));
    let mut a = mux.connect("f");
    let mut b = mux.connect("f");
    let ia = a.initialize(json!({}));
    let ib = b.initialize(json!({}));
    assert_eq!(ia["result"], ib["result"]);
    assert_eq!(ia["result"]["serverInfo"]["name"], "mcp-fake-server");
    // Same ids from both clients; each gets its own answer.
    a.send(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"from-a"}}}));
    b.send(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"from-b"}}}));
    assert_eq!(text(&a.response(&json!(1))), "from-a");
    assert_eq!(text(&b.response(&json!(1))), "from-b");
    let s = stats(&mut a, 2);
    assert_eq!(s["initialize"], 1, "one upstream handshake: {s}");
    assert_eq!(s["initialized"], 1, "one initialized notification: {s}");
    assert_eq!(starts(&mux, "f"), 1);
    let st = mux.server_status("f");
    assert_eq!(st["state"], "running");
    assert_eq!(st["clients"], 2);
    assert_eq!(st["pid"], s["pid"]);
}

#[test]
fn hundreds_in_flight_with_the_same_ids_and_tokens_each_get_their_own() {
    let mux = Mux::start(&fake("f", ""));
    let mut clients: Vec<Client> = (0..2).map(|_| mux.connect("f")).collect();
    for c in clients.iter_mut() {
        c.initialize(json!({}));
    }
    for i in 0..200 {
        for (n, c) in clients.iter_mut().enumerate() {
            c.send(&json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"slow","arguments":{"ms":(i % 7) * 3,"steps":2},"_meta":{"progressToken":i}}}));
            let _ = n;
        }
    }
    for (n, c) in clients.iter_mut().enumerate() {
        let mut seen = std::collections::HashSet::new();
        let mut progress = 0;
        while seen.len() < 200 {
            let msg = c.recv().expect("eof");
            if msg["method"] == "notifications/progress" {
                let tok = msg["params"]["progressToken"].as_i64().unwrap();
                assert!(
                    (0..200).contains(&tok),
                    "client {n} got a foreign token: {msg}"
                );
                assert!(
                    !seen.contains(&tok),
                    "progress after the response for {tok}"
                );
                progress += 1;
                continue;
            }
            let id = msg["id"].as_i64().expect("numeric id kept");
            assert!(msg["result"].is_object(), "{msg}");
            assert!(seen.insert(id), "duplicate answer {id}");
        }
        assert_eq!(
            progress, 400,
            "client {n}: two progress notifications per request"
        );
    }
}

#[test]
fn crash_fails_in_flight_then_restarts_and_clients_keep_working() {
    let mux = Mux::start(&fake("f", ""));
    let mut a = mux.connect("f");
    let mut b = mux.connect("f");
    a.initialize(json!({}));
    b.initialize(json!({}));
    a.send(&json!({"jsonrpc":"2.0","id":"slow","method":"tools/call","params":{"name":"slow","arguments":{"ms":10000}}}));
    // The slow request is written before the crash request, on the same pipe.
    mux.wait_status("f", |s| s["pending"] == 1);
    b.send(&json!({"jsonrpc":"2.0","id":"boom","method":"tools/call","params":{"name":"crash","arguments":{"code":7}}}));
    let r = a.response(&json!("slow"));
    assert_eq!(r["error"]["code"], -32603);
    assert_eq!(
        r["error"]["data"],
        json!({"reason":"upstream_exited","server":"f"})
    );
    let r = b.response(&json!("boom"));
    assert_eq!(r["error"]["data"]["reason"], "upstream_exited");
    let st = mux.wait_status("f", |s| s["state"] == "running" && s["restarts"] == 1);
    assert_eq!(st["last_exit"], "exited with status 7");
    // Same connections, no new handshake.
    assert_eq!(
        text(&a.call(json!(3), "echo", json!({"text":"again"}))),
        "again"
    );
    let s = stats(&mut b, 4);
    assert_eq!(
        s["initialize"], 1,
        "the mux re-initialized the new child itself"
    );
    assert_eq!(starts(&mux, "f"), 2);
    mux.log.wait_for(&["child exited", "exited with status 7"]);
}

#[test]
fn restart_limit_leads_to_failed_until_restarted() {
    let mux = Mux::start(
        "[servers.f]\ncmd = \"{fake}\"\nargs = [\"--crash-on-start\", \"--counter-file\", \"{dir}/f.starts\"]\nrestart_backoff_ms = 10\nrestart_backoff_max_ms = 40\nmax_restarts = 2\n",
    );
    let st = mux.wait_status("f", |s| s["state"] == "failed");
    assert_eq!(st["restarts"], 2);
    assert_eq!(starts(&mux, "f"), 3, "first start plus two restarts");
    let mut c = mux.connect("f");
    let r = c.request(json!(1), "initialize", json!({"capabilities":{}}));
    assert_eq!(
        r["error"]["data"],
        json!({"reason":"server_unavailable","state":"failed"})
    );
    mux.log.wait_for(&["giving up"]);
    let (code, out, err) = mux.cli(&["restart", "f"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "restarting f");
    mux.wait_status("f", |s| s["state"] == "failed" && starts(&mux, "f") == 6);
}

#[test]
fn lazy_start_waits_for_the_first_request() {
    let mux = Mux::start(&fake("f", "lazy_start = true"));
    assert_eq!(mux.server_status("f")["state"], "lazy");
    let mut c = mux.connect("f");
    assert_eq!(c.request(json!(1), "ping", json!({}))["result"], json!({}));
    assert_eq!(starts(&mux, "f"), 0, "ping needs no child");
    c.initialize(json!({}));
    assert_eq!(starts(&mux, "f"), 1);
    assert_eq!(mux.server_status("f")["state"], "running");
}

#[test]
fn oversized_lines_are_refused_and_the_connection_survives() {
    let mux = Mux::start(&fake("f", "max_request_bytes = 2048"));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let big = "x".repeat(1 << 20);
    c.send_raw(&format!(r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{big}"}}}}}}"#));
    let r = c.recv().unwrap();
    assert_eq!(r["id"], json!(null));
    assert_eq!(r["error"]["code"], -32600);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2048 bytes"),
        "{r}"
    );
    assert_eq!(
        text(&c.call(json!(10), "echo", json!({"text":"small"}))),
        "small"
    );
}

/// A client's first read buffer is small (1 KiB); lines around and far above it, one after
/// another on one connection, still arrive whole and in order.
#[test]
fn requests_larger_than_the_first_read_buffer_arrive_whole() {
    let mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    for (i, len) in [900usize, 1000, 1024, 2000, 70_000, 10, 300_000, 5]
        .into_iter()
        .enumerate()
    {
        let sent = format!("{i}:{}", "y".repeat(len));
        assert_eq!(text(&c.call(json!(i), "echo", json!({"text": sent}))), sent);
    }
}

#[test]
fn large_lines_pass_both_ways_with_ids_and_tokens_restored() {
    let mux = Mux::start(&fake(
        "f",
        "max_request_bytes = 4194304\nmax_response_bytes = 4194304",
    ));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let big = "y".repeat(1 << 20);
    for round in 0..3 {
        // A 1 MiB request echoed back as a 1 MiB result, under a string id.
        let id = json!(format!("big-{round}"));
        let r = c.call(id.clone(), "echo", json!({"text": big}));
        assert_eq!(r["id"], id);
        assert!(text(&r) == big, "round {round}: the echoed text differs");
        // A 1 MiB result to a small request, then a small answer right behind it.
        let r = c.call(json!(round), "echo", json!({"text":"p", "pad": 1 << 20}));
        assert_eq!(text(&r).len(), 1 + (1 << 20));
        assert_eq!(
            text(&c.call(json!(100 + round), "echo", json!({"text":"s"}))),
            "s"
        );
    }
    // A large request with a progress token: progress comes back under the client's token.
    c.send(&json!({"jsonrpc":"2.0","id":"slow-big","method":"tools/call","params":{"name":"slow","arguments":{"ms":30,"steps":2,"ballast":big},"_meta":{"progressToken":"tok-big"}}}));
    let mut progress = 0;
    let done = loop {
        let msg = c.recv().expect("the daemon closed the connection");
        if msg["method"] == "notifications/progress" {
            assert_eq!(msg["params"]["progressToken"], "tok-big");
            progress += 1;
        } else {
            break msg;
        }
    };
    assert_eq!(done["id"], "slow-big");
    assert_eq!(progress, 2);
}

/// A daemon whose fake server has begun a `halves` answer (`arguments` as given) to the
/// client's request `id`, and the first `first` bytes of it, read while the server waits for
/// its cue (`notifications/fake/finish`) to write the rest.
fn halfway(
    id: serde_json::Value,
    arguments: serde_json::Value,
    first: usize,
) -> (Mux, Client, Vec<u8>) {
    let mux = Mux::start(&fake("f", "max_response_bytes = 4194304"));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    c.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"halves","arguments":arguments}}));
    let head = c.read_bytes(first);
    (mux, c, head)
}

/// A long answer reaches its client while the server is still writing it (the daemon does not
/// hold the whole line first), under the client's id; a line the mux answers itself meanwhile
/// (a ping) waits until the answer is complete, and the connection goes on as usual.
#[test]
fn a_long_answer_is_passed_on_while_the_server_writes_it() {
    let n = 600_000;
    // The first half is here while the server waits for the cue to write the rest.
    let (_mux, mut c, head) = halfway(json!("long"), json!({"bytes": n}), n / 2);
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.starts_with(r#"{"id":"long","jsonrpc":"2.0","result":"#),
        "{}",
        &head[..80]
    );
    c.send(&json!({"jsonrpc":"2.0","id":"p","method":"ping"}));
    c.send(&json!({"jsonrpc":"2.0","method":"notifications/fake/finish"}));
    let line = head + &c.recv_raw();
    let answer: serde_json::Value = serde_json::from_str(&line).expect("the answer arrived whole");
    assert_eq!(answer["id"], "long");
    assert!(text(&answer) == "h".repeat(n), "the text differs");
    assert_eq!(
        c.recv().unwrap()["id"],
        "p",
        "the ping's answer came after the long one"
    );
    assert_eq!(
        text(&c.call(json!(2), "echo", json!({"text":"after"}))),
        "after"
    );
}

/// A client that goes away while its long answer is being passed on (on Linux, moved into its
/// socket) costs no one else anything: the rest of the answer is dropped, and the server and
/// the daemon go on answering another client, whose request went to the server meanwhile.
#[test]
fn a_client_gone_during_its_long_answer_leaves_the_server_to_the_others() {
    let mux = Mux::start(&fake("f", "max_response_bytes = 8388608"));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    c.send(&json!({"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"big","arguments":{"bytes": 6_000_000}}}));
    assert!(c.read_bytes(1000).starts_with(br#"{"id":"long","#));
    drop(c);
    let mut other = mux.connect("f");
    other.initialize(json!({}));
    assert_eq!(
        text(&other.call(json!(2), "echo", json!({"text":"after"}))),
        "after"
    );
    assert_eq!(mux.server_status("f")["clients"], 1);
    let log = mux.log.text();
    assert!(
        !log.contains("not valid JSON-RPC") && !log.contains("not JSON-RPC"),
        "the server's lines were misread after the client went away:\n{log}"
    );
}

/// Long answers to a socket client arrive whole and in order, byte for byte, when the client
/// reads them only after asking for all of them: on Linux the first is moved from the server's
/// pipe into the socket until it is full and copied from there on, the others copied behind it.
/// The text varies so that a piece moved twice, lost or out of place would show.
#[test]
fn long_answers_to_a_socket_client_that_reads_late_arrive_whole() {
    let mux = Mux::start(&fake(
        "f",
        "max_request_bytes = 4194304\nmax_response_bytes = 4194304",
    ));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let texts = varied_texts(11, 3, 3 << 19);
    for (id, t) in (1..).zip(&texts) {
        c.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"text":t}}}));
    }
    for (id, t) in (1..).zip(&texts) {
        let r = c.response(&json!(id));
        assert!(&text(&r) == t, "answer {id} differs from its request");
    }
    assert_eq!(
        text(&c.call(json!(9), "echo", json!({"text":"after"}))),
        "after"
    );
    mux.log
        .wait_for(&["passing a long answer on as it arrives", "live=true"]);
}

/// A hand-off of the host's stdio asked for while a long answer is on its way to the client is
/// answered after the answer is complete, not in the middle of its line (both go out on the
/// client's socket).
#[test]
fn an_attach_asked_during_a_long_answer_is_answered_after_it() {
    use std::os::fd::AsRawFd;
    let n = 600_000;
    let (_mux, mut c, head) = halfway(json!("long"), json!({"bytes": n}), n / 2);
    let head = String::from_utf8(head).unwrap();
    // The cue for the rest, and right behind it (before the server can have written the rest)
    // the hand-off: a host's stdin and stdout, two pipes. (A proxy sends nothing after it
    // until it is answered, and the daemon reads nothing more from this socket meanwhile.)
    c.send(&json!({"jsonrpc":"2.0","method":"notifications/fake/finish"}));
    let (stdin_r, _stdin_w) = nix::unistd::pipe().unwrap();
    let (_stdout_r, stdout_w) = nix::unistd::pipe().unwrap();
    let line = b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"rmcp-mux/attach\"}\n";
    let fds = [stdin_r.as_raw_fd(), stdout_w.as_raw_fd()];
    c.send_with_fds(line, &fds);
    let line = head + &c.recv_raw();
    let answer: serde_json::Value = serde_json::from_str(&line).expect("the answer arrived whole");
    assert!(text(&answer) == "h".repeat(n), "the text differs");
    let ack = c.recv().unwrap();
    assert_eq!(ack, json!({"jsonrpc":"2.0","id":"a","result":{}}));
}

/// A long answer cut off by the server's exit ends the client's line where it was cut, then
/// the client gets an error for its request; the server restarts and serves again.
#[test]
fn a_long_answer_cut_off_by_a_crash_is_followed_by_an_error() {
    let (mux, mut c, head) = halfway(json!(9), json!({"bytes":400_000,"exit":true}), 100_000);
    assert!(head.starts_with(br#"{"id":9,"#));
    c.send(&json!({"jsonrpc":"2.0","method":"notifications/fake/finish"}));
    let rest = c.recv_raw();
    assert!(
        serde_json::from_str::<serde_json::Value>(&(String::from_utf8(head).unwrap() + &rest))
            .is_err(),
        "the cut line is not valid JSON"
    );
    let err = c.recv().expect("an error for the request");
    assert_eq!(err["id"], 9);
    assert_eq!(err["error"]["code"], -32603);
    assert_eq!(err["error"]["data"]["reason"], "upstream_answer_broken");
    mux.wait_status("f", |s| s["state"] == "running" && s["restarts"] == 1);
    assert_eq!(
        text(&c.call(json!(10), "echo", json!({"text":"again"}))),
        "again"
    );
}

/// A client that writes as fast as it can does not keep the daemon from shutting down, and the
/// socket file is gone after it.
#[test]
fn a_flooding_client_does_not_hold_up_shutdown() {
    let mut mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let mut flood = c.stream.try_clone().unwrap();
    let (started, going) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let line = json!({"jsonrpc":"2.0","method":"notifications/flood"}).to_string() + "\n";
        let lines = line.repeat(1000);
        let mut sent = 0u64;
        while std::io::Write::write_all(&mut flood, lines.as_bytes()).is_ok() {
            sent += 1;
            if sent == 20 {
                let _ = started.send(());
            }
        }
        sent
    });
    going
        .recv_timeout(WAIT)
        .expect("the flood got going (20,000 lines written)");
    let socket = mux.socket("f");
    let (code, took) = mux.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, Some(0), "{}", mux.log.text());
    assert!(!socket.exists(), "the socket file is gone");
    let sent = writer.join().unwrap();
    assert!(sent >= 20, "{sent} batches, {took:?}");
}

#[test]
fn malformed_client_lines_get_json_rpc_errors() {
    let mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    c.send_raw("{this is not json");
    assert_eq!(c.recv().unwrap()["error"]["code"], -32700);
    c.send_raw(r#"{"just":"json"}"#);
    assert_eq!(c.recv().unwrap()["error"]["code"], -32600);
    assert_eq!(text(&c.call(json!(1), "echo", json!({"text":"ok"}))), "ok");
}

#[test]
fn too_many_clients_are_told_and_closed() {
    let mux = Mux::start(&fake("f", "max_active_clients = 1"));
    let mut a = mux.connect("f");
    a.initialize(json!({}));
    let mut b = mux.connect("f");
    let r = b.recv().expect("an error before the close");
    assert_eq!(
        r["error"]["data"],
        json!({"reason":"too_many_clients","max":1})
    );
    assert!(b.recv().is_none(), "then the connection closes");
    assert_eq!(
        text(&a.call(json!(1), "echo", json!({"text":"still here"}))),
        "still here"
    );
}

#[test]
fn garbage_on_stdout_is_logged_and_skipped_and_stderr_is_logged() {
    let mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    assert_eq!(text(&c.call(json!(1), "garbage", json!({}))), "ok");
    mux.log.wait_for(&["not JSON-RPC", "this is not json", "f"]);
    c.call(json!(2), "log", json!({"text":"hello-from-stderr"}));
    let line = mux.log.wait_for(&["hello-from-stderr"]);
    assert!(
        line.contains("child_stderr") && line.contains("f"),
        "{line}"
    );
}

#[test]
fn disconnecting_client_cancels_its_requests_upstream() {
    let mux = Mux::start(&fake("f", ""));
    let mut a = mux.connect("f");
    let mut b = mux.connect("f");
    a.initialize(json!({}));
    b.initialize(json!({}));
    a.send(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"ms":10000}}}));
    mux.wait_status("f", |s| s["pending"] == 1);
    drop(a);
    mux.wait_status("f", |s| s["clients"] == 1 && s["pending"] == 0);
    let s = stats(&mut b, 1);
    assert_eq!(s["cancelled"].as_array().unwrap().len(), 1, "{s}");
}

#[test]
fn sampling_requests_reach_the_capable_client_only() {
    let mux = Mux::start(&fake("f", ""));
    let mut plain = mux.connect("f");
    plain.initialize(json!({}));
    let mut sampler = mux.connect("f");
    sampler.initialize(json!({"sampling":{}}));
    plain.send(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sample","arguments":{"text":"hi"}}}));
    let req = sampler.recv().unwrap();
    assert_eq!(req["method"], "sampling/createMessage");
    sampler.send(&json!({"jsonrpc":"2.0","id":req["id"],"result":{"role":"assistant","content":{"type":"text","text":"sampled!"},"model":"m"}}));
    let r = plain.response(&json!(1));
    assert!(text(&r).contains("sampled!"), "{r}");
    assert!(plain.requests.is_empty());
}

#[test]
fn sigterm_stops_everything_even_a_child_that_ignores_it() {
    let mut mux = Mux::start(
        "[servers.f]\ncmd = \"{fake}\"\nargs = [\"--ignore-sigterm\", \"--spawn-grandchild\", \"--pid-file\", \"{dir}/f.pids\"]\nshutdown_grace_ms = 1000\n",
    );
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let pids: Vec<i32> = std::fs::read_to_string(mux.path("f.pids"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(alive(pids[0]) && alive(pids[1]));
    let socket = mux.socket("f");
    let control = mux.path("run/control.sock");
    let (code, took) = mux.stop(Signal::SIGTERM);
    assert_eq!(code, Some(0), "{}", mux.log.text());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        took >= Duration::from_millis(1000),
        "the grace period was not needed? {took:?}"
    );
    mux.log.wait_for(&["ignored SIGTERM"]);
    wait_dead(pids[0]);
    wait_dead(pids[1]);
    assert!(!socket.exists() && !control.exists(), "sockets left behind");
}

#[test]
fn sigint_stops_cleanly_too() {
    let mut mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let pid = mux.server_status("f")["pid"].as_i64().unwrap() as i32;
    let (code, _) = mux.stop(Signal::SIGINT);
    assert_eq!(code, Some(0));
    wait_dead(pid);
    assert!(!mux.socket("f").exists());
}

#[test]
fn sockets_are_private_and_a_live_one_is_never_stolen() {
    let mux = Mux::start(&fake("f", ""));
    let dir_mode = std::fs::metadata(mux.path("run"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let sock_mode = std::fs::metadata(mux.socket("f"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert_eq!(sock_mode, 0o600);
    // A second daemon on the same config refuses to start (its lock is taken) and leaves the
    // first alone; so does one on another config naming the same sockets (they are served).
    let copy = mux.path("copy.toml");
    std::fs::copy(&mux.config, &copy).unwrap();
    for (config, expected) in [
        (
            &mux.config,
            format!("already running (PID {})", mux.child.id()),
        ),
        (&copy, "already served".to_owned()),
    ] {
        let out = std::process::Command::new(MUX)
            .arg("--config")
            .arg(config)
            .env("HOME", mux.dir.path())
            .env("XDG_STATE_HOME", mux.path("state"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&expected), "{err}");
    }
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    assert_eq!(mux.server_status("f")["clients"], 1);
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("run/f.sock")).unwrap();
    drop(stale);
    assert!(dir.path().join("run/f.sock").exists());
    let mux = Mux::start_in(dir, &fake("f", ""), &[]);
    let mut c = mux.connect("f");
    c.initialize(json!({}));
}

#[test]
fn status_shows_every_server_and_never_env_values() {
    let mux = Mux::start(&format!(
        "{}{}",
        fake("alpha", "env = { API_TOKEN = \"sekrit-value-123\" }"),
        fake("beta", "lazy_start = true")
    ));
    let s = mux.status();
    for key in ["version", "pid", "uptime_ms", "config", "servers"] {
        assert!(s.get(key).is_some(), "missing {key}: {s}");
    }
    let names: Vec<&str> = s["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let alpha = &s["servers"][0];
    for key in [
        "name",
        "state",
        "socket",
        "pid",
        "clients",
        "max_clients",
        "pending",
        "restarts",
        "uptime_ms",
        "last_exit",
    ] {
        assert!(alpha.get(key).is_some(), "missing {key}: {alpha}");
    }
    let (code, table, _) = mux.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("alpha") && table.contains("lazy") && table.contains("┌"),
        "{table}"
    );
    let (_, legacy, _) = mux.cli(&["--show-status", "--json"]);
    assert!(legacy.contains("\"alpha\""));
    let (_, alias, _) = mux.cli(&["daemon-status"]);
    assert!(alias.contains("alpha"));
    for text in [s.to_string(), table, mux.log.text()] {
        assert!(!text.contains("sekrit-value-123"), "secret leaked: {text}");
    }
}

#[test]
fn stop_and_start_from_the_cli() {
    let mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let (code, out, _) = mux.cli(&["stop", "f"]);
    assert_eq!((code, out.trim()), (0, "stopping f"));
    mux.wait_status("f", |s| s["state"] == "stopped" && s["pid"].is_null());
    let r = c.call(json!(1), "echo", json!({"text":"x"}));
    assert_eq!(
        r["error"]["data"],
        json!({"reason":"server_unavailable","state":"stopped"})
    );
    let (code, _, _) = mux.cli(&["start", "f"]);
    assert_eq!(code, 0);
    mux.wait_status("f", |s| s["state"] == "running");
    assert_eq!(
        text(&c.call(json!(2), "echo", json!({"text":"back"}))),
        "back"
    );
    let (code, _, err) = mux.cli(&["restart", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown server `nope`"), "{err}");
    let (code, _, err) = mux.cli(&["stop", "ff"]);
    assert_eq!(code, 1);
    assert!(err.contains("did you mean `f`?"), "{err}");
}

#[test]
fn health_answers_for_a_running_server_and_fails_for_a_failed_one() {
    let mux = Mux::start(&format!(
        "{}[servers.bad]\ncmd = \"{{fake}}\"\nargs = [\"--crash-on-start\"]\nrestart_backoff_ms = 10\nmax_restarts = 1\n",
        fake("f", "")
    ));
    let (code, out, err) = mux.cli(&["health", "--service", "f"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: f answered"), "{out}");
    let sock = mux.socket("f");
    let out = std::process::Command::new(MUX)
        .args(["health", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    mux.wait_status("bad", |s| s["state"] == "failed");
    let (code, _, err) = mux.cli(&["health", "--service", "bad"]);
    assert_eq!(code, 1);
    assert!(err.contains("failed"), "{err}");
}

#[test]
fn only_and_except_select_servers() {
    let dir = tempfile::tempdir().unwrap();
    let mux = Mux::start_in(
        dir,
        &format!("{}{}{}", fake("a", ""), fake("b", ""), fake("c", "")),
        &["--except", "b", "--only", "a,b,c"],
    );
    let names: Vec<String> = mux.status()["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert!(!mux.socket("b").exists());
}

#[test]
fn config_errors_name_the_file_line_and_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mux.toml");
    std::fs::write(
        &config,
        "[servers.memory]\ncmd = \"npx\"\nsoket = \"/tmp/x.sock\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(MUX)
        .arg("--config")
        .arg(&config)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("rmcp-mux: "), "{err}");
    assert!(err.contains("mux.toml:3"), "{err}");
    assert!(err.contains("soket") && err.contains("socket"), "{err}");
    let out = std::process::Command::new(MUX)
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn status_without_a_daemon_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(MUX)
        .args(["status", "--control-socket"])
        .arg(dir.path().join("nothing.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no rmcp-mux daemon is listening"), "{err}");
}

#[test]
fn a_request_that_times_out_is_cancelled_upstream() {
    let mux = Mux::start(&fake("f", "request_timeout_ms = 300"));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let r = c.call(json!("late"), "slow", json!({"ms":5000}));
    assert_eq!(
        r["error"]["data"],
        json!({"reason":"upstream_timeout","timeout_ms":300})
    );
    let s = stats(&mut c, 2);
    assert_eq!(s["cancelled"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(mux.server_status("f")["pending"], 0);
}

/// The actor keeps one timer and moves it only when a deadline comes earlier. Here it is set
/// for a request due in two minutes when the child crashes: the restart backoff (50 ms) must
/// still move it, or the restart would wait for the request's deadline.
#[test]
fn a_restart_is_not_held_up_by_a_later_request_deadline() {
    let mux = Mux::start(&fake("f", "request_timeout_ms = 120000"));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    c.send(&json!({"jsonrpc":"2.0","id":"long","method":"tools/call","params":{"name":"slow","arguments":{"ms":100000}}}));
    mux.wait_status("f", |s| s["pending"] == 1);
    c.send(&json!({"jsonrpc":"2.0","id":"boom","method":"tools/call","params":{"name":"crash","arguments":{}}}));
    let st = mux.wait_status("f", |s| s["state"] == "running" && s["restarts"] == 1);
    assert_eq!(
        st["pending"], 0,
        "the crash answered what was pending: {st}"
    );
}

#[test]
fn subscriptions_are_shared_and_log_levels_kept_per_client() {
    let mux = Mux::start(&fake("f", ""));
    let mut a = mux.connect("f");
    let mut b = mux.connect("f");
    a.initialize(json!({}));
    b.initialize(json!({}));
    for c in [&mut a, &mut b] {
        let r = c.request(
            json!("s"),
            "resources/subscribe",
            json!({"uri":"file:///x"}),
        );
        assert_eq!(r["result"], json!({}));
    }
    a.request(json!("l"), "logging/setLevel", json!({"level":"error"}));
    b.request(json!("l"), "logging/setLevel", json!({"level":"info"}));
    let s = stats(&mut a, 1);
    assert_eq!(
        s["subscribe"],
        json!(["file:///x"]),
        "one upstream subscribe for two clients"
    );
    assert_eq!(
        s["set_level"],
        json!(["error", "info"]),
        "the most verbose goes upstream"
    );
    // An update reaches both subscribers; an info message only the client that wants info.
    a.call(
        json!(2),
        "notify",
        json!({"kind":"updated","uri":"file:///x"}),
    );
    a.call(
        json!(3),
        "notify",
        json!({"kind":"message","level":"info","data":"hello"}),
    );
    b.call(json!(4), "stats", json!({}));
    let methods = |c: &Client| {
        c.notes
            .iter()
            .map(|n| n["method"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(methods(&a), ["notifications/resources/updated"]);
    assert_eq!(
        methods(&b),
        ["notifications/resources/updated", "notifications/message"]
    );
    drop(b);
    mux.wait_status("f", |s| s["clients"] == 1);
    a.request(
        json!("u"),
        "resources/unsubscribe",
        json!({"uri":"file:///x"}),
    );
    let s = stats(&mut a, 5);
    assert_eq!(
        s["unsubscribe"],
        json!(["file:///x"]),
        "sent once, when the last one left"
    );
}

/// Without the `tray` feature (Linux), `--tray` is a usage error that says how to get it.
#[cfg(not(any(feature = "tray", target_os = "macos")))]
#[test]
fn tray_without_the_feature_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(MUX)
        .args(["--tray", "--config"])
        .arg(dir.path().join("mux.toml"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "rmcp-mux: this build has no menu-bar app; build with `cargo build --features tray` \
         (needs libgtk-3-dev and libayatana-appindicator3-dev)\n"
    );
}

/// `rmcp-mux/attach` without the host's stdin and stdout passed with it (or with a file in
/// their place) is answered with an error that says what was missing, and the client goes on
/// as before.
#[test]
fn an_attach_without_usable_descriptors_is_refused_clearly() {
    use std::os::fd::AsRawFd;
    let mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let r = c.request(json!("a"), "rmcp-mux/attach", json!({}));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("SCM_RIGHTS"), "{msg}");
    // A file and a pipe end are not a host's stdin and stdout.
    let file = tempfile::tempfile().unwrap();
    let (_read, write) = nix::unistd::pipe().unwrap();
    let line = b"{\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"rmcp-mux/attach\"}\n";
    let fds = [file.as_raw_fd(), write.as_raw_fd()];
    c.send_with_fds(line, &fds);
    let r = c.response(&json!("b"));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert_eq!(
        text(&c.call(json!(1), "echo", json!({"text":"still here"}))),
        "still here"
    );
    assert_eq!(mux.server_status("f")["clients"], 1);
}

/// A child that closes its stdout but lives on is given its grace period, then stopped: the
/// request it can no longer answer fails instead of hanging, and the server starts again.
#[test]
fn a_child_that_closes_stdout_but_lives_on_is_stopped_and_restarted() {
    let mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    let pid = mux.wait_status("f", |s| s["pid"].is_u64())["pid"]
        .as_i64()
        .unwrap() as i32;
    let r = c.call(json!(1), "close_stdout", json!({}));
    assert_eq!(r["error"]["data"]["reason"], "upstream_exited", "{r}");
    wait_dead(pid);
    mux.wait_status("f", |s| {
        s["state"] == "running" && s["pid"].as_i64().is_some_and(|p| p as i32 != pid)
    });
    assert_eq!(
        text(&c.call(json!(2), "echo", json!({"text":"back"}))),
        "back"
    );
}

/// A client that shuts down its writing side with requests in flight is treated as the proxy
/// treats stdin EOF: it gets every answer it is owed, then the connection closes. A client
/// that closes both ways is gone: its request is cancelled upstream.
#[test]
fn a_half_closed_client_gets_its_answers_then_the_connection_closes() {
    let mux = Mux::start(&fake("f", ""));
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    c.send(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"ms":300}}}));
    c.send(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"quick"}}}));
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = [c.recv(), c.recv()].map(|m| m.expect("an answer before the end"));
    got.sort_by_key(|m| m["id"].as_i64());
    assert_eq!(text(&got[0]), "slept 300");
    assert_eq!(text(&got[1]), "quick");
    assert_eq!(c.recv(), None, "the connection closes once nothing is owed");
    mux.wait_status("f", |s| s["clients"] == 0 && s["pending"] == 0);

    // Closed both ways: nobody is left to answer, so the call is cancelled at once.
    let mut d = mux.connect("f");
    d.initialize(json!({}));
    d.send(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"slow","arguments":{"ms":30000}}}));
    mux.wait_status("f", |s| s["pending"] == 1);
    drop(d);
    mux.wait_status("f", |s| s["clients"] == 0 && s["pending"] == 0);
}
