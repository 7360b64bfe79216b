//! `rmcp-mux-proxy` as a host runs it: stdio on one side, the daemon's socket on the other.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::*;

const SERVER: &str = "[servers.f]\ncmd = \"{fake}\"\nrestart_backoff_ms = 50\n";

struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    log: Log,
}

impl Proxy {
    fn start(cmd: &str, args: &[&str], home: &std::path::Path) -> Proxy {
        let mut child = Command::new(cmd)
            .args(args)
            .env("HOME", home)
            .env("RMCP_MUX_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Log::capture(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proxy {
            child,
            stdin,
            stdout,
            log,
        }
    }

    /// The standalone proxy on server `name` of `mux`, as a rewired host runs it.
    fn of(mux: &Mux, name: &str) -> Proxy {
        let socket = mux.socket(name);
        Proxy::start(
            PROXY,
            &["--socket", socket.to_str().unwrap()],
            mux.dir.path(),
        )
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line; the read is bounded by a watchdog that kills the proxy on timeout.
    fn recv(&mut self) -> Option<Value> {
        let pid = self.child.id() as i32;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(WAIT).is_err() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        });
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        let _ = done_tx.send(());
        watchdog.join().unwrap();
        (n > 0).then(|| serde_json::from_str(&line).unwrap())
    }

    fn response(&mut self, id: &Value) -> Value {
        loop {
            let msg = self
                .recv()
                .unwrap_or_else(|| panic!("proxy closed stdout; log:\n{}", self.log.text()));
            if &msg["id"] == id && msg.get("method").is_none() {
                return msg;
            }
        }
    }

    fn initialize(&mut self) -> Value {
        self.send(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}));
        let r = self.response(&json!(0));
        self.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        r
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(id: i64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
}

#[test]
fn bridges_a_host_session_and_expands_tilde() {
    let mux = Mux::start(SERVER);
    // Hosts pass args without a shell: the proxy expands `~` itself.
    let mut p = Proxy::start(PROXY, &["--socket", "~/run/f.sock"], mux.dir.path());
    let init = p.initialize();
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-fake-server");
    p.send(&call(1, "echo", json!({"text":"through the proxy"})));
    assert_eq!(text(&p.response(&json!(1))), "through the proxy");
    // The subcommand form works the same.
    let socket = mux.socket("f");
    let mut q = Proxy::start(
        MUX,
        &["proxy", "--socket", socket.to_str().unwrap()],
        mux.dir.path(),
    );
    q.initialize();
    q.send(&call(1, "echo", json!({"text":"sub"})));
    assert_eq!(text(&q.response(&json!(1))), "sub");
    assert_eq!(mux.server_status("f")["clients"], 2);
}

#[test]
fn large_lines_cross_the_proxy_both_ways() {
    let mux = Mux::start(&format!(
        "{SERVER}max_request_bytes = 4194304\nmax_response_bytes = 4194304\n"
    ));
    let mut p = Proxy::of(&mux, "f");
    p.initialize();
    let big = "y".repeat(1 << 20);
    for round in 0..3 {
        p.send(&call(10 + round, "echo", json!({ "text": big })));
        let r = p.response(&json!(10 + round));
        assert!(text(&r) == big, "round {round}: the echoed text differs");
        p.send(&call(
            20 + round,
            "echo",
            json!({"text":"p", "pad": 1 << 20}),
        ));
        assert_eq!(text(&p.response(&json!(20 + round))).len(), 1 + (1 << 20));
        p.send(&call(30 + round, "echo", json!({"text":"s"})));
        assert_eq!(text(&p.response(&json!(30 + round))), "s");
    }
    // What was owed is settled: stdin EOF ends the proxy at once.
    drop(p.stdin.take());
    assert_eq!(p.wait_exit(), Some(0));
}

#[test]
fn stdin_eof_still_delivers_what_is_owed_then_exits() {
    let mux = Mux::start(SERVER);
    let mut p = Proxy::of(&mux, "f");
    p.initialize();
    p.send(&call(7, "slow", json!({"ms":300})));
    drop(p.stdin.take());
    let r = p.response(&json!(7));
    assert_eq!(text(&r), "slept 300");
    assert_eq!(p.wait_exit(), Some(0));
}

#[test]
fn exits_cleanly_when_the_host_goes_away() {
    let mux = Mux::start(SERVER);
    let mut p = Proxy::of(&mux, "f");
    p.initialize();
    drop(p.stdin.take());
    assert_eq!(p.wait_exit(), Some(0));
    mux.wait_status("f", |s| s["clients"] == 0);
}

#[test]
fn survives_a_daemon_restart_without_a_new_handshake() {
    let mut mux = Mux::start(SERVER);
    let mut p = Proxy::of(&mux, "f");
    p.initialize();
    p.send(&call(1, "echo", json!({"text":"before"})));
    assert_eq!(text(&p.response(&json!(1))), "before");
    p.send(&call(2, "slow", json!({"ms":10000})));
    mux.wait_status("f", |s| s["pending"] == 1);
    let (code, _) = mux.stop(Signal::SIGTERM);
    assert_eq!(code, Some(0));
    // The request in flight is answered with an error, not left hanging.
    let r = p.response(&json!(2));
    assert_eq!(r["error"]["code"], -32603, "{r}");
    let mux2 = mux.relaunch();
    p.send(&call(3, "echo", json!({"text":"after"})));
    let r = p.response(&json!(3));
    assert_eq!(text(&r), "after", "{r}\nproxy log:\n{}", p.log.text());
    mux2.wait_status("f", |s| s["clients"] == 1);
}

#[test]
fn a_missing_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let out = Command::new(PROXY)
        .args(["--socket", missing.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rmcp-mux-proxy: cannot connect to") && err.contains("none.sock"),
        "{err}"
    );
}

#[test]
fn both_spellings_refuse_the_same_usage_errors_with_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let sock = sock.to_str().unwrap();
    let cases: [&[&str]; 4] = [
        &[],
        &["--socket", sock, "--config", "/c.toml"],
        &["--socket", sock, "--bogus"],
        &["--socket", sock, "--socket", sock],
    ];
    for args in cases {
        for (bin, sub) in [(PROXY, None), (MUX, Some("proxy"))] {
            let out = Command::new(bin)
                .args(sub)
                .args(args)
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{bin} {sub:?} {args:?}");
            assert!(out.stdout.is_empty(), "stdout carries only protocol");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.starts_with("error: "), "{bin} {args:?}: {err}");
        }
    }
    let help = Command::new(PROXY).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--socket <PATH>", "--autostart", "--config <FILE>"] {
        assert!(help.contains(flag), "{help}");
    }
}

#[test]
fn keeps_the_host_session_when_a_reload_restarts_its_server() {
    let mux = Mux::start(SERVER);
    let mut p = Proxy::of(&mux, "f");
    p.initialize();
    p.send(&call(1, "echo", json!({"text":"before"})));
    assert_eq!(text(&p.response(&json!(1))), "before");
    let old = mux.wait_status("f", |s| s["clients"] == 1)["pid"].clone();
    // New args: the reload stops f (closing the proxy's connection) and starts it again.
    mux.edit(
        "",
        &format!("{SERVER}args = [\"--server-version\", \"2.0\"]\n"),
    );
    mux.log.wait_for(&["config reloaded", "restarted=[\"f\"]"]);
    p.send(&call(2, "echo", json!({"text":"after"})));
    let r = p.response(&json!(2));
    assert_eq!(text(&r), "after", "{r}\nproxy log:\n{}", p.log.text());
    let st = mux.wait_status("f", |s| s["clients"] == 1);
    assert_ne!(st["pid"], old, "a new child runs the new args");
}

/// Node-based hosts (libuv) give a child socket pairs for stdin and stdout, not pipes. The
/// proxy must bridge those too, including answers far larger than a socket buffer (its writes
/// wait for room), and end when the host closes its side.
#[test]
fn bridges_a_host_that_uses_socket_pairs_for_stdio() {
    use std::os::unix::net::UnixStream;
    let mux = Mux::start(SERVER);
    let socket = mux.socket("f");
    let (host_in, proxy_in) = UnixStream::pair().unwrap();
    let (host_out, proxy_out) = UnixStream::pair().unwrap();
    let mut child = Command::new(PROXY)
        .args(["--socket", socket.to_str().unwrap()])
        .env("HOME", mux.dir.path())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(proxy_in)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(proxy_out)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    host_out.set_read_timeout(Some(WAIT)).unwrap();
    let mut host_in = host_in;
    let mut lines = BufReader::new(&host_out);
    let mut ask = |msg: Value, id: i64| -> Value {
        writeln!(host_in, "{msg}").unwrap();
        if id < 0 {
            writeln!(
                host_in,
                "{}",
                json!({"jsonrpc":"2.0","id":id,"method":"ping"})
            )
            .unwrap();
        }
        loop {
            let mut line = String::new();
            let n = lines
                .read_line(&mut line)
                .expect("an answer within the timeout");
            assert!(n > 0, "the proxy closed its stdout");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == json!(id) {
                return v;
            }
        }
    };
    let init = ask(
        json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"node-host","version":"1"}}}),
        0,
    );
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-fake-server");
    // A notification gets no answer; a ping right behind it proves it went through in order.
    let pong = ask(
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        -1,
    );
    assert_eq!(pong["result"], json!({}));
    for (id, pad) in [(1, 0usize), (2, 3 << 20), (3, 10)] {
        let r = ask(call(id, "echo", json!({"text":"pair","pad":pad})), id);
        let got = text(&r);
        assert_eq!(got.len(), 4 + pad, "answer {id} has the wrong size");
        assert!(got.starts_with("pair"));
    }
    // The closure borrowed `host_in`; its last use is above, so the host can close it now.
    drop(host_in);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after stdin closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
}
