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
        Proxy::start_env(cmd, args, home, &[])
    }

    fn start_env(cmd: &str, args: &[&str], home: &std::path::Path, envs: &[(&str, &str)]) -> Proxy {
        let mut child = Command::new(cmd)
            .args(args)
            .envs(envs.iter().copied())
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
        self.send_raw(&msg.to_string());
    }

    /// Writes `lines` and a newline in one write.
    fn send_raw(&mut self, lines: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{lines}\n").as_bytes()).unwrap();
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

    /// The inode of the pipe the host writes the proxy's stdin into (what `/proc/PID/fd`
    /// shows as `pipe:[INODE]`).
    fn stdin_pipe(&self) -> String {
        use std::os::fd::AsFd;
        let st = nix::sys::stat::fstat(self.stdin.as_ref().expect("stdin open").as_fd()).unwrap();
        format!("pipe:[{}]", st.st_ino)
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
    // Once quiet again, the session is handed to the new daemon too.
    p.log.wait_for_count(&["attached: the daemon reads"], 2);
    wait_holds(mux2.child.id(), &p.stdin_pipe(), true);
    p.send(&call(4, "echo", json!({"text":"attached again"})));
    assert_eq!(text(&p.response(&json!(4))), "attached again");
}

/// The descriptors a process holds, as `/proc/PID/fd` names them (`pipe:[N]`, paths, ...).
fn fds_of(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// Waits until process `pid` does (or does not) hold the descriptor named `name`.
fn wait_holds(pid: u32, name: &str, held: bool) {
    let deadline = Instant::now() + WAIT;
    while fds_of(pid).iter().any(|f| f == name) != held {
        assert!(
            Instant::now() < deadline,
            "process {pid} should{} hold {name}: {:?}",
            if held { "" } else { " not" },
            fds_of(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Context switches of every thread of a process so far.
fn switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += n.trim().parse::<u64>().unwrap();
            }
        }
    }
    total
}

/// Long answers to an attached host arrive whole and in order, byte for byte, when the host
/// reads them only after asking for all of them: the first is moved into the host's pipe
/// until it is full and copied from there on, the others copied behind it (and the requests,
/// 1.5 MiB each, are lent to the server's stdin). The text varies so that a piece moved
/// twice, lost or out of place would show.
#[test]
fn long_answers_to_an_attached_host_that_reads_late_arrive_whole() {
    let mux = Mux::start(&format!(
        "{SERVER}max_request_bytes = 4194304\nmax_response_bytes = 4194304\n"
    ));
    let mut p = Proxy::of(&mux, "f");
    p.initialize();
    mux.log.wait_for(&["client attached"]);
    let texts = varied_texts(7, 3, 3 << 19);
    for (id, t) in (1..).zip(&texts) {
        p.send(&call(id, "echo", json!({ "text": t })));
    }
    p.send(&call(9, "echo", json!({"text":"after"})));
    for (id, t) in (1..).zip(&texts) {
        let r = p.response(&json!(id));
        assert!(&text(&r) == t, "answer {id} differs from its request");
    }
    assert_eq!(text(&p.response(&json!(9))), "after");
    mux.log
        .wait_for(&["passing a long answer on as it arrives", "live=true"]);
}

/// After the handshake the daemon holds the host's stdin itself and requests keep working
/// without the proxy waking up for them: it is out of the data path.
#[test]
fn hands_the_host_stdio_to_the_daemon_after_the_handshake() {
    let mux = Mux::start(SERVER);
    let mut p = Proxy::of(&mux, "f");
    let pipe = p.stdin_pipe();
    p.initialize();
    p.log.wait_for(&["attached: the daemon reads"]);
    mux.log.wait_for(&["client attached"]);
    wait_holds(mux.child.id(), &pipe, true);
    let proxy = p.child.id();
    let before = switches(proxy);
    for id in 1..=200 {
        p.send(&call(id, "echo", json!({"text":format!("n{id}")})));
        assert_eq!(text(&p.response(&json!(id))), format!("n{id}"));
    }
    let woken = switches(proxy) - before;
    // Copying, the proxy switches at least twice per request (400 here).
    assert!(woken < 40, "the proxy woke {woken} times for 200 requests");
    // The same client all along: one client, and the server saw one handshake.
    assert_eq!(mux.server_status("f")["clients"], 1);
    p.send(&call(900, "stats", json!({})));
    let stats = p.response(&json!(900));
    assert_eq!(stats["result"]["structuredContent"]["initialize"], 1);
}

/// Notifications broadcast to the host while the session is handed over arrive all, once, and
/// in order: the daemon holds what comes after its answer until the proxy has written what
/// came before.
#[test]
fn notifications_keep_their_order_across_the_hand_off() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mux = Mux::start(SERVER);
    let mut p = Proxy::of(&mux, "f");
    p.send(&json!({"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}));
    p.response(&json!("init"));
    // A request owed keeps the proxy copying (and makes the host ready for log messages) while
    // the stream below starts; its answer makes the session quiet in the middle of the stream.
    // Sent in one write with `initialized`, so the proxy never sees a quiet moment between.
    let two = format!(
        "{}\n{}\n",
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        call(0, "slow", json!({"ms":300}))
    );
    let stdin = p.stdin.as_mut().unwrap();
    stdin.write_all(two.as_bytes()).unwrap();
    stdin.flush().unwrap();
    mux.wait_status("f", |s| s["pending"] == 1);
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let seen_max = Arc::new(AtomicU64::new(0));
    // Another client makes the server send a numbered log message to every client, at most
    // 200 ahead of what the host has read (a host that does not read is disconnected).
    let socket = mux.socket("f");
    let (stop2, last2, seen2) = (stop.clone(), last.clone(), seen_max.clone());
    let sender = std::thread::spawn(move || {
        let mut c = Client::connect(&socket);
        c.initialize(json!({}));
        let mut i = 0u64;
        let deadline = Instant::now() + WAIT;
        while !stop2.load(Ordering::SeqCst) {
            if i >= seen2.load(Ordering::SeqCst) + 200 {
                assert!(Instant::now() < deadline, "the host stopped reading at {i}");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            i += 1;
            let data = json!({"i":i,"pad":"x".repeat(2000)});
            let r = c.call(
                json!(i),
                "notify",
                json!({"kind":"message","level":"info","data":data}),
            );
            assert!(r.get("result").is_some(), "{r}");
            last2.store(i, Ordering::SeqCst);
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut answered = false;
    let mut attached_at = None;
    let mut sender = Some(sender);
    let mut last_sent = None;
    let mut paused = false;
    loop {
        if last_sent.is_some() && seen.last() == last_sent.as_ref() {
            break;
        }
        let msg = p.recv().expect("proxy stdout open");
        if msg["id"] == 0 {
            assert_eq!(text(&msg), "slept 300");
            answered = true;
        }
        if !paused && p.log.text().contains("asked the daemon") {
            // The host stops reading once the proxy asked to hand over, until the stream is
            // 200 ahead (far more than a pipe holds): the daemon's answer is then on its way
            // behind lines the proxy still has to copy, and lines come after it.
            paused = true;
            let deadline = Instant::now() + WAIT;
            while last.load(Ordering::SeqCst) < seen_max.load(Ordering::SeqCst) + 190 {
                assert!(Instant::now() < deadline, "the stream stalled");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if msg["method"] == "notifications/message" {
            let n = msg["params"]["data"]["i"].as_u64().unwrap();
            seen.push(n);
            seen_max.store(n, Ordering::SeqCst);
        }
        if attached_at.is_none() && p.log.text().contains("attached: the daemon reads") {
            attached_at = Some(seen.len());
        }
        // Stop well after the hand-off, then read up to the last one sent.
        if attached_at.is_some_and(|at| seen.len() > at + 200) {
            if let Some(sender) = sender.take() {
                stop.store(true, Ordering::SeqCst);
                sender.join().unwrap();
                last_sent = Some(last.load(Ordering::SeqCst));
            }
        }
    }
    assert!(answered, "the hand-off waited for the answer owed");
    let expected: Vec<u64> = (1..=last.load(Ordering::SeqCst)).collect();
    assert!(
        seen == expected,
        "messages lost, doubled or out of order: {seen:?}"
    );
    assert!(attached_at.unwrap() > 0, "some came before the hand-off");
}

/// The host closes stdin while a request is still owed: the daemon (which now reads stdin)
/// answers it, then closes the link, and the proxy exits 0.
#[test]
fn attached_stdin_eof_still_delivers_what_is_owed_then_exits() {
    let mux = Mux::start(SERVER);
    let mut p = Proxy::of(&mux, "f");
    p.initialize();
    p.log.wait_for(&["attached: the daemon reads"]);
    p.send(&call(7, "slow", json!({"ms":300})));
    mux.wait_status("f", |s| s["pending"] == 1);
    drop(p.stdin.take());
    let r = p.response(&json!(7));
    assert_eq!(text(&r), "slept 300");
    assert_eq!(p.wait_exit(), Some(0));
    mux.log.wait_for(&["attached host closed stdin"]);
    mux.wait_status("f", |s| s["clients"] == 0);
}

/// A proxy killed while attached: the daemon drops its client and closes the host's pipes it
/// held (no descriptor left behind).
#[test]
fn a_killed_attached_proxy_leaves_nothing_in_the_daemon() {
    let mux = Mux::start(SERVER);
    let daemon = mux.child.id();
    mux.wait_status("f", |s| s["state"] == "running");
    let baseline = fds_of(daemon).len();
    let mut p = Proxy::of(&mux, "f");
    let pipe = p.stdin_pipe();
    p.initialize();
    p.log.wait_for(&["attached: the daemon reads"]);
    wait_holds(daemon, &pipe, true);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    mux.wait_status("f", |s| s["clients"] == 0);
    wait_holds(daemon, &pipe, false);
    // At most the baseline: a control-socket connection of `wait_status` may still have been
    // open when it was taken.
    let deadline = Instant::now() + WAIT;
    while fds_of(daemon).len() > baseline {
        assert!(
            Instant::now() < deadline,
            "the daemon holds {} descriptors, {baseline} before: {:?}",
            fds_of(daemon).len(),
            fds_of(daemon)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `RMCP_MUX_PROXY_COPY=1` keeps the copying bridge: the daemon never gets the host's pipes.
#[test]
fn copy_mode_on_request_never_hands_over() {
    let mux = Mux::start(SERVER);
    let socket = mux.socket("f");
    let mut p = Proxy::start_env(
        PROXY,
        &["--socket", socket.to_str().unwrap()],
        mux.dir.path(),
        &[("RMCP_MUX_PROXY_COPY", "1")],
    );
    let pipe = p.stdin_pipe();
    p.initialize();
    p.send(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    p.response(&json!(1));
    // Attaching would have been asked before this request was read.
    p.send(&call(2, "echo", json!({"text":"copied"})));
    assert_eq!(text(&p.response(&json!(2))), "copied");
    assert!(!fds_of(mux.child.id()).contains(&pipe));
    assert!(
        !p.log.text().contains("asked the daemon"),
        "{}",
        p.log.text()
    );
}

/// A daemon that does not know the hand-off (an older one passes the request on and an error
/// comes back): the proxy keeps copying, and nothing the host sent is lost.
#[test]
fn a_daemon_that_refuses_the_hand_off_keeps_the_copying_bridge() {
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let old = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut methods = Vec::new();
        // A plain read, as an old daemon does: the kernel drops descriptors sent with it.
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let msg: Value = serde_json::from_str(&line).unwrap();
            let method = msg["method"].as_str().unwrap_or("").to_owned();
            methods.push(method.clone());
            if msg.get("id").is_none() {
                continue;
            }
            let answer = if method == "rmcp-mux/attach" {
                json!({"jsonrpc":"2.0","id":msg["id"],"error":{"code":-32601,"message":"Method not found"}})
            } else {
                json!({"jsonrpc":"2.0","id":msg["id"],"result":{"method":method}})
            };
            writeln!(out, "{answer}").unwrap();
            if method == "last" {
                break;
            }
        }
        methods
    });
    let mut p = Proxy::start(PROXY, &["--socket", path.to_str().unwrap()], dir.path());
    p.initialize();
    p.send(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    p.response(&json!(1));
    p.log.wait_for(&["does not take the host's stdio"]);
    p.send(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}));
    assert_eq!(p.response(&json!(2))["result"]["method"], "tools/list");
    p.send(&json!({"jsonrpc":"2.0","id":3,"method":"last"}));
    assert_eq!(p.response(&json!(3))["result"]["method"], "last");
    let mut methods = old.join().unwrap();
    // Every connection starts with the proxy's working folder (a notification an old daemon
    // passes on to the server like any other).
    assert_eq!(
        methods.first().map(String::as_str),
        Some("rmcp-mux/project")
    );
    methods.remove(0);
    // The hand-off is tried once the session is quiet after the handshake: before the ping
    // or after its answer, whichever comes first; it is refused before `tools/list` (the log
    // line above), and every host line still crosses, in order.
    let attach = methods.iter().position(|m| m == "rmcp-mux/attach");
    assert!(
        matches!(attach, Some(2 | 3)),
        "one hand-off, after the handshake and before tools/list: {methods:?}"
    );
    let host: Vec<&str> = methods
        .iter()
        .map(String::as_str)
        .filter(|m| *m != "rmcp-mux/attach")
        .collect();
    assert_eq!(
        host,
        [
            "initialize",
            "notifications/initialized",
            "ping",
            "tools/list",
            "last"
        ]
    );
    assert_eq!(methods.len(), host.len() + 1, "{methods:?}");
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
    // New args: the reload restarts f's child under the proxy's connection.
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

/// A daemon with server `f`, a proxy whose session is handed over, and the server's pid.
fn handed_over() -> (Mux, Proxy, i64) {
    let mux = Mux::start(SERVER);
    let mut p = Proxy::of(&mux, "f");
    p.initialize();
    p.log.wait_for(&["attached: the daemon reads"]);
    let server = mux.wait_status("f", |s| s["pid"].is_u64())["pid"]
        .as_i64()
        .unwrap();
    (mux, p, server)
}

/// The daemon dies abruptly (SIGKILL) while the session is handed over: the proxy takes the
/// host's stdio back, reconnects to the next daemon, replays the handshake and hands over
/// again; the host goes on without a new handshake.
#[test]
fn a_killed_daemon_is_survived_while_handed_over() {
    let (mut mux, mut p, server) = handed_over();
    let (code, _) = mux.stop(Signal::SIGKILL);
    assert_eq!(code, None, "killed by a signal");
    // The server saw its stdin close with the daemon and is gone too.
    wait_dead(server as i32);
    let mux2 = mux.relaunch();
    p.log.wait_for(&["reconnected"]);
    p.send(&call(1, "echo", json!({"text":"after a crash"})));
    assert_eq!(text(&p.response(&json!(1))), "after a crash");
    p.log.wait_for_count(&["attached: the daemon reads"], 2);
    wait_holds(mux2.child.id(), &p.stdin_pipe(), true);
}

/// The daemon is gone and the host has closed stdin: the proxy does not wait for a daemon that
/// would have nothing to do; it exits 0.
#[test]
fn a_gone_daemon_and_a_closed_stdin_end_the_proxy_cleanly() {
    let (mut mux, mut p, server) = handed_over();
    let daemon = nix::unistd::Pid::from_raw(mux.child.id() as i32);
    // Frozen, the daemon cannot see stdin close (nor say so); then it dies.
    nix::sys::signal::kill(daemon, Signal::SIGSTOP).unwrap();
    drop(p.stdin.take());
    let (code, _) = mux.stop(Signal::SIGKILL);
    assert_eq!(code, None);
    assert_eq!(p.wait_exit(), Some(0), "{}", p.log.text());
    assert!(!p.log.text().contains("reconnecting"), "{}", p.log.text());
    wait_dead(server as i32);
}

/// The host's start of a session with a long call it then cancels, as the tests below share:
/// `initialize` (id 1), then in one write `notifications/initialized` and a call the server
/// would answer only after 30 s (id 2), then `notifications/cancelled` for it, then a `ping`
/// (id 3) whose answer shows the proxy has read the cancel.
fn start_and_cancel_a_long_call(p: &mut Proxy) {
    p.send(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"host","version":"1"}}}));
    p.response(&json!(1));
    let both = format!(
        "{}\n{}",
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        call(2, "slow", json!({"ms":30000}))
    );
    p.send_raw(&both);
    p.send(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2,"reason":"user"}}));
    p.send(&json!({"jsonrpc":"2.0","id":3,"method":"ping"}));
    assert_eq!(p.response(&json!(3))["result"], json!({}));
}

/// A request the host cancelled is no longer owed (the daemon never answers it): at stdin EOF
/// the proxy exits at once instead of waiting out its drain for it.
fn a_cancelled_request_does_not_hold_the_proxy_at_eof(envs: &[(&str, &str)], handoff: bool) {
    let mux = Mux::start(SERVER);
    let socket = mux.socket("f");
    let mut p = Proxy::start_env(
        PROXY,
        &["--socket", socket.to_str().unwrap()],
        mux.dir.path(),
        envs,
    );
    start_and_cancel_a_long_call(&mut p);
    if handoff {
        // Nothing is owed after the cancel, so the session is handed over even though the
        // server is still working on the cancelled call.
        p.log.wait_for(&["attached: the daemon reads"]);
    }
    drop(p.stdin.take());
    // The call would take 30 s and the drain 60 s; the wait here gives up after 20 s.
    assert_eq!(p.wait_exit(), Some(0), "{}", p.log.text());
    let log = p.log.text();
    assert!(!log.contains("gave up waiting"), "{log}");
    assert_eq!(log.contains("attached: the daemon reads"), handoff, "{log}");
}

#[test]
fn a_cancelled_request_is_not_owed_and_the_session_is_still_handed_over() {
    a_cancelled_request_does_not_hold_the_proxy_at_eof(&[], true);
}

#[test]
fn a_cancelled_request_is_not_owed_when_copying() {
    a_cancelled_request_does_not_hold_the_proxy_at_eof(&[("RMCP_MUX_PROXY_COPY", "1")], false);
}

/// A daemon lost while copying: the host hears "connection lost" only for what it still
/// waits for, never for a request it cancelled.
#[test]
fn a_lost_daemon_does_not_fail_a_cancelled_request() {
    let mut mux = Mux::start(SERVER);
    let socket = mux.socket("f");
    let mut p = Proxy::start_env(
        PROXY,
        &["--socket", socket.to_str().unwrap()],
        mux.dir.path(),
        &[("RMCP_MUX_PROXY_COPY", "1")],
    );
    start_and_cancel_a_long_call(&mut p);
    p.send(&call(4, "slow", json!({"ms":30000})));
    mux.wait_status("f", |s| s["pending"] == 1);
    let (code, _) = mux.stop(Signal::SIGKILL);
    assert_eq!(code, None);
    // The errors for what is owed come before the proxy reconnects, so before answer 5.
    let lost = p.recv().expect("an error for request 4");
    assert_eq!(lost["id"], 4, "{lost}");
    assert_eq!(lost["error"]["data"]["reason"], "upstream_exited");
    let _mux2 = mux.relaunch();
    p.send(&json!({"jsonrpc":"2.0","id":5,"method":"ping"}));
    let next = p.recv().expect("the answer to 5");
    assert_eq!(next["id"], 5, "only the ping's answer follows: {next}");
}

/// Hosts whose sessions are handed over, each calling one tool after another while a reload
/// restarts their server's child again and again: every request gets its answer or an error,
/// and the sessions stay handed over (the daemon keeps reading each host's stdin).
#[test]
fn every_request_is_answered_while_reloads_restart_a_handed_over_server() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const HOSTS: usize = 3;
    const RELOADS: usize = 12;
    let mux = Mux::start(SERVER);
    let mut hosts: Vec<Proxy> = (0..HOSTS).map(|_| Proxy::of(&mux, "f")).collect();
    for p in &mut hosts {
        p.initialize();
        p.log.wait_for(&["attached: the daemon reads"]);
    }
    let logs: Vec<Log> = hosts.iter().map(|p| p.log.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = hosts
        .into_iter()
        .enumerate()
        .map(|(h, mut p)| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut answered, mut failed) = (0, 0);
                let mut id = 1;
                while !stop.load(Ordering::SeqCst) {
                    let want = format!("host {h} call {id}");
                    p.send(&call(id, "echo", json!({ "text": want })));
                    // A lost request leaves this waiting until the watchdog ends the proxy.
                    let r = p.response(&json!(id));
                    if r.get("error").is_some() {
                        failed += 1;
                    } else {
                        assert_eq!(text(&r), want, "host {h}");
                        answered += 1;
                    }
                    id += 1;
                }
                (answered, failed)
            })
        })
        .collect();
    for round in 1..=RELOADS {
        let env = format!("{SERVER}env = {{ ROUND = \"{round}\" }}\n");
        mux.edit("", &env);
        mux.log
            .wait_for_count(&["config reloaded", "restarted=[\"f\"]"], round);
        // The next reload comes once the new child runs (every host's requests reach it).
        mux.wait_status("f", |s| s["state"] == "running");
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for (h, c) in callers.into_iter().enumerate() {
        let (answered, failed) = c
            .join()
            .unwrap_or_else(|_| panic!("host {h} lost a request; its log:\n{}", logs[h].text()));
        eprintln!("host {h}: {answered} answered, {failed} failed");
        assert!(answered > 0, "host {h} got no answer at all");
        total += answered + failed;
    }
    assert!(
        total >= HOSTS * RELOADS,
        "only {total} requests in {RELOADS} reloads"
    );
    for (h, log) in logs.iter().enumerate() {
        let text = log.text();
        assert_eq!(
            text.matches("attached: the daemon reads").count(),
            1,
            "host {h} stayed handed over:\n{text}"
        );
    }
}

/// Bytes written into a pipe and not yet read from it (asked on the writing end).
fn unread_in_pipe(w: &impl std::os::fd::AsRawFd) -> usize {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int, to `n`.
    let r = unsafe { nix::libc::ioctl(w.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD on the host's pipe");
    usize::try_from(n).unwrap()
}

/// A reload restarts the server's child while a handed-over host is halfway through writing a
/// line: the daemon keeps reading the host's stdin, and the line arrives whole.
#[test]
fn a_line_half_written_when_a_reload_restarts_the_server_arrives_whole() {
    let (mux, mut p, _server) = handed_over();
    let line = call(1, "echo", json!({"text":"cut in two by a reload"})).to_string();
    let (head, tail) = line.split_at(line.len() / 2);
    write_half(&mut p, head);
    mux.edit("", &format!("{SERVER}env = {{ ROUND = \"1\" }}\n"));
    mux.log.wait_for(&["config reloaded", "restarted=[\"f\"]"]);
    p.send_raw(tail);
    let r = p.response(&json!(1));
    assert_eq!(text(&r), "cut in two by a reload", "{r}");
    assert!(
        !p.log.text().contains("lost the daemon"),
        "the session stayed handed over:\n{}",
        p.log.text()
    );
}

/// Writes `head` to the host's stdin and waits until the daemon has read it.
fn write_half(p: &mut Proxy, head: &str) {
    let stdin = p.stdin.as_mut().expect("stdin open");
    stdin.write_all(head.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + WAIT;
    while unread_in_pipe(p.stdin.as_ref().unwrap()) > 0 {
        assert!(
            Instant::now() < deadline,
            "the daemon never read the first half"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A reload changes the server's sharing scope, which closes its clients, while a handed-over
/// host is halfway through writing a line: the daemon hands back what it had read of it, and
/// the proxy sends the whole line on to the new server.
#[test]
fn a_line_half_written_when_a_reload_lets_the_host_go_arrives_whole() {
    let (mux, mut p, _server) = handed_over();
    let line = call(1, "echo", json!({"text":"cut in two by a reload"})).to_string();
    let (head, tail) = line.split_at(line.len() / 2);
    write_half(&mut p, head);
    mux.edit("", &format!("{SERVER}share = \"client\"\n"));
    mux.log.wait_for(&["config reloaded", "restarted=[\"f\"]"]);
    p.send_raw(tail);
    let r = p.response(&json!(1));
    assert_eq!(text(&r), "cut in two by a reload", "{r}");
    p.log
        .wait_for(&["the daemon handed back what it read of stdin"]);
}
