//! Servers shared per client and per project (`share`): the real daemon, the real proxy started
//! in different folders, and the fake server's `where` tool (its pid, working folder, arguments
//! and the `initialize` it got), which no real server reports.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// A fake server shared as `share`, with `extra` keys.
fn shared(share: &str, extra: &str) -> String {
    format!(
        "[servers.f]\ncmd = \"{{fake}}\"\nshare = \"{share}\"\nrestart_backoff_ms = 50\nrestart_backoff_max_ms = 200\nshutdown_grace_ms = 500\n{extra}\n"
    )
}

/// What the child behind a client says about itself.
fn where_(c: &mut Client, id: i64) -> Value {
    let r = c.call(json!(id), "where", json!({}));
    serde_json::from_str(&text(&r)).unwrap_or_else(|e| panic!("{e}: {r}"))
}

fn pid_of(w: &Value) -> i32 {
    w["pid"].as_i64().unwrap_or_else(|| panic!("no pid in {w}")) as i32
}

/// Waits until the server's status has `n` instances, and returns it.
fn instances(mux: &Mux, n: usize) -> Value {
    mux.wait_status("f", |s| s["instances"].as_array().map_or(0, Vec::len) == n)
}

/// `rmcp-mux-proxy` on the server's socket, started in `dir` as a host starts it in its
/// workspace.
struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proxy {
    fn start_in(mux: &Mux, dir: &Path) -> Proxy {
        let mut child = Command::new(PROXY)
            .args(["--socket", mux.socket("f").to_str().unwrap()])
            .current_dir(dir)
            .env("HOME", mux.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proxy {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    /// The answer with `id`; the read is bounded by a watchdog that kills the proxy.
    fn response(&mut self, id: &Value) -> Value {
        let pid = self.child.id() as i32;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(WAIT).is_err() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        });
        let found = loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap() == 0 {
                break None;
            }
            let msg: Value = serde_json::from_str(&line).unwrap();
            if &msg["id"] == id && msg.get("method").is_none() {
                break Some(msg);
            }
        };
        let _ = done_tx.send(());
        watchdog.join().unwrap();
        found.expect("the proxy closed stdout before the answer")
    }

    fn initialize(&mut self, name: &str) -> Value {
        self.send(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":name,"version":"1"}}}));
        let r = self.response(&json!(0));
        self.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        r
    }

    fn where_(&mut self, id: i64) -> Value {
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"where","arguments":{}}}));
        let r = self.response(&json!(id));
        serde_json::from_str(&text(&r)).unwrap_or_else(|e| panic!("{e}: {r}"))
    }

    /// Closes the host's side, as a host ending its session does, and waits for the exit.
    fn close(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the proxy did not exit");
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

fn folder(mux: &Mux, name: &str) -> PathBuf {
    let p = mux.path(name);
    std::fs::create_dir_all(&p).unwrap();
    p.canonicalize().unwrap()
}

/// Processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

#[test]
fn each_client_of_a_client_server_gets_its_own_child_which_ends_with_it() {
    let mux = Mux::start(&shared("client", ""));
    let mut a = mux.connect("f");
    let mut b = mux.connect("f");
    a.request(
        json!(0),
        "initialize",
        json!({"protocolVersion":"2025-06-18","capabilities":{"roots":{}},"clientInfo":{"name":"host-a","version":"1"}}),
    );
    b.initialize(json!({}));
    let (wa, wb) = (where_(&mut a, 1), where_(&mut b, 1));
    let (pa, pb) = (pid_of(&wa), pid_of(&wb));
    assert_ne!(pa, pb, "one child per client");
    assert_eq!(
        wa["initialize"]["clientInfo"]["name"], "host-a",
        "the child got its client's own initialize: {wa}"
    );
    assert_eq!(wa["initialize"]["protocolVersion"], "2025-06-18");
    assert!(wa["initialize"]["capabilities"].get("roots").is_some());
    assert_eq!(wb["initialize"]["clientInfo"]["name"], "test");
    let st = instances(&mux, 2);
    assert_eq!(st["share"], "client");
    assert_eq!(st["clients"], 2);
    let mut pids: Vec<i64> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_i64().unwrap())
        .collect();
    pids.sort_unstable();
    let mut want = vec![i64::from(pa), i64::from(pb)];
    want.sort_unstable();
    assert_eq!(pids, want);

    drop(a);
    // Gone, not a zombie left for a reaper.
    wait_dead(pa);
    assert!(alive(pb));
    assert_eq!(
        pid_of(&where_(&mut b, 2)),
        pb,
        "the other client is untouched"
    );
    let st = instances(&mux, 1);
    assert_eq!(st["instances"][0]["pid"], i64::from(pb));
}

#[test]
fn a_crash_restarts_only_that_clients_child() {
    let mux = Mux::start(&shared("client", ""));
    let mut a = mux.connect("f");
    let mut b = mux.connect("f");
    a.initialize(json!({}));
    b.initialize(json!({}));
    let (pa, pb) = (pid_of(&where_(&mut a, 1)), pid_of(&where_(&mut b, 1)));
    let r = a.call(json!(2), "crash", json!({}));
    assert_eq!(r["error"]["data"]["reason"], "upstream_exited", "{r}");
    wait_dead(pa);
    let pa2 = pid_of(&where_(&mut a, 3));
    assert_ne!(pa2, pa, "a's child was restarted");
    assert_eq!(pid_of(&where_(&mut b, 3)), pb, "b's child never noticed");
    let st = mux.server_status("f");
    let restarts: Vec<i64> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["restarts"].as_i64().unwrap())
        .collect();
    assert_eq!(restarts.iter().sum::<i64>(), 1, "{st}");
}

#[test]
fn proxies_in_one_folder_share_a_child_and_another_folder_gets_its_own() {
    let mux = Mux::start(&shared(
        "project",
        "args = [\"--project\", \"${project}\"]\nenv = { FAKE_TAG = \"tag:${project}\" }",
    ));
    let (dir_a, dir_b) = (folder(&mux, "work/a"), folder(&mux, "work/b"));
    let mut a1 = Proxy::start_in(&mux, &dir_a);
    let mut a2 = Proxy::start_in(&mux, &dir_a);
    let mut b = Proxy::start_in(&mux, &dir_b);
    a1.initialize("a1");
    a2.initialize("a2");
    b.initialize("b");
    let (w1, w2, wb) = (a1.where_(1), a2.where_(1), b.where_(1));
    assert_eq!(w1["pid"], w2["pid"], "one child for folder a");
    assert_ne!(w1["pid"], wb["pid"], "folder b has its own");
    assert_eq!(w1["cwd"], dir_a.to_str().unwrap(), "runs in its project");
    assert_eq!(wb["cwd"], dir_b.to_str().unwrap());
    assert_eq!(w1["args"], json!(["--project", dir_a.to_str().unwrap()]));
    assert_eq!(wb["tag"], format!("tag:{}", dir_b.display()));

    // A plain socket client names no project: the "no project" instance, in the home folder.
    let mut plain = mux.connect("f");
    plain.initialize(json!({}));
    let wp = where_(&mut plain, 1);
    let home = mux.dir.path().canonicalize().unwrap();
    assert_eq!(wp["cwd"], home.to_str().unwrap(), "{wp}");
    assert_ne!(wp["pid"], w1["pid"]);
    assert_ne!(wp["pid"], wb["pid"]);
    let st = instances(&mux, 3);
    let mut projects: Vec<Value> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["project"].clone())
        .collect();
    projects.sort_by_key(|v| v.to_string());
    assert_eq!(
        projects,
        [
            json!(dir_a.to_str().unwrap()),
            json!(dir_b.to_str().unwrap()),
            Value::Null
        ]
    );
    // A proxy started in the home folder counts as no project too.
    let mut h = Proxy::start_in(&mux, &home);
    h.initialize("h");
    assert_eq!(h.where_(1)["pid"], wp["pid"]);
}

#[test]
fn a_project_child_stops_after_its_idle_time_and_starts_again_on_the_next_request() {
    let mux = Mux::start(&shared("project", "idle_stop_ms = 300"));
    let dir = folder(&mux, "p");
    let mut first = Proxy::start_in(&mux, &dir);
    first.initialize("one");
    let pid = pid_of(&first.where_(1));
    // While a client is there, it stays, however long.
    let mut second = Proxy::start_in(&mux, &dir);
    second.initialize("two");
    first.close();
    std::thread::sleep(Duration::from_millis(600));
    assert!(alive(pid), "a client is still connected");
    second.close();
    wait_dead(pid);
    let st = instances(&mux, 0);
    assert_eq!(st["state"], "lazy", "{st}");
    let mut again = Proxy::start_in(&mux, &dir);
    again.initialize("three");
    let pid2 = pid_of(&again.where_(1));
    assert_ne!(pid2, pid, "a new child on the next request");
}

/// `stop NAME` stops every instance and keeps the server stopped: a new client is told so (as a
/// stopped global server's are) until `start NAME`.
#[test]
fn a_stopped_client_server_stays_stopped_for_new_clients_until_started() {
    let mux = Mux::start(&shared("client", ""));
    let mut a = mux.connect("f");
    a.initialize(json!({}));
    let pa = pid_of(&where_(&mut a, 1));
    let (code, _, err) = mux.cli(&["stop", "f"]);
    assert_eq!(code, 0, "{err}");
    wait_dead(pa);
    let mut b = mux.connect("f");
    let r = b.call(json!(2), "where", json!({}));
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert_eq!(r["error"]["data"]["reason"], "server_unavailable", "{r}");
    assert_eq!(r["error"]["data"]["state"], "stopped", "{r}");
    let (code, _, err) = mux.cli(&["start", "f"]);
    assert_eq!(code, 0, "{err}");
    let mut c = mux.connect("f");
    c.initialize(json!({}));
    where_(&mut c, 3);
}

#[test]
fn past_max_instances_a_client_is_told_so_and_the_others_carry_on() {
    let mux = Mux::start(&shared("client", "max_instances = 2"));
    let mut a = mux.connect("f");
    let mut b = mux.connect("f");
    a.initialize(json!({}));
    b.initialize(json!({}));
    instances(&mux, 2);
    let mut c = mux.connect("f");
    let r = c.request(
        json!(7),
        "initialize",
        json!({"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}),
    );
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert_eq!(r["error"]["data"]["reason"], "too_many_instances", "{r}");
    assert_eq!(r["error"]["data"]["max"], 2, "{r}");
    let r = c.call(json!(8), "where", json!({}));
    assert_eq!(r["error"]["data"]["reason"], "too_many_instances", "{r}");
    where_(&mut a, 1);
    where_(&mut b, 1);
    // A place freed is a place taken.
    let pa = pid_of(&where_(&mut a, 2));
    drop(a);
    wait_dead(pa);
    instances(&mux, 1);
    let mut d = mux.connect("f");
    d.initialize(json!({}));
    where_(&mut d, 1);
}

#[test]
fn two_hundred_client_sessions_leave_no_child_socket_or_pending_entry() {
    let mux = Mux::start(&shared("client", ""));
    let daemon = mux.child.id();
    for i in 0..200 {
        let mut c = mux.connect("f");
        c.initialize(json!({}));
        if i % 50 == 0 {
            where_(&mut c, 1);
        }
    }
    let st = instances(&mux, 0);
    assert_eq!(
        (st["clients"].as_i64(), st["pending"].as_i64()),
        (Some(0), Some(0))
    );
    let deadline = Instant::now() + WAIT;
    while !children_of(daemon).is_empty() {
        assert!(
            Instant::now() < deadline,
            "children left: {:?}",
            children_of(daemon)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut files: Vec<String> = std::fs::read_dir(mux.path("run"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["control.sock", "f.sock"]);
}

#[test]
fn a_global_server_with_idle_stop_stops_its_child_and_starts_it_on_the_next_request() {
    let mux = Mux::start(&shared("global", "idle_stop_ms = 300"));
    let mut a = mux.connect("f");
    a.initialize(json!({}));
    let pid = pid_of(&where_(&mut a, 1));
    drop(a);
    wait_dead(pid);
    let st = mux.wait_status("f", |s| s["state"] == "lazy");
    assert_eq!(st["restarts"], 0, "an idle stop is no crash: {st}");
    assert!(
        st.get("instances").is_none(),
        "a global server has none: {st}"
    );
    let mut b = mux.connect("f");
    b.initialize(json!({}));
    let again = pid_of(&where_(&mut b, 1));
    assert_ne!(again, pid);
    assert_eq!(mux.server_status("f")["state"], "running");
}

#[test]
fn status_shows_instances_with_memory_and_restart_acts_on_one_project_or_all() {
    let mux = Mux::start(&shared("project", ""));
    let (dir_a, dir_b) = (folder(&mux, "a"), folder(&mux, "b"));
    let mut a = Proxy::start_in(&mux, &dir_a);
    let mut b = Proxy::start_in(&mux, &dir_b);
    a.initialize("a");
    b.initialize("b");
    let (pa, pb) = (pid_of(&a.where_(1)), pid_of(&b.where_(1)));
    let st = instances(&mux, 2);
    for i in st["instances"].as_array().unwrap() {
        assert!(i["rss_bytes"].as_u64().is_some_and(|b| b > 0), "{i}");
        assert_eq!(i["clients"], 1, "{i}");
        assert!(i["uptime_ms"].as_u64().is_some(), "{i}");
    }
    let sum: u64 = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["rss_bytes"].as_u64().unwrap())
        .sum();
    assert!(
        st["rss_bytes"]
            .as_u64()
            .is_some_and(|r| r > 0 && r <= sum * 2),
        "{st}"
    );
    let whole = mux.status();
    assert!(
        whole["total_rss_bytes"].as_u64() > whole["rss_bytes"].as_u64(),
        "{whole}"
    );
    let (code, table, err) = mux.cli(&["status", "--verbose"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("per project · 2 running"), "{table}");
    assert!(table.contains(&format!("└ {}", dir_a.display())), "{table}");

    // One project's instance.
    let (code, out, err) = mux.cli(&["restart", "f", "--project", dir_a.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restarting f in"), "{out}");
    wait_dead(pa);
    assert_ne!(pid_of(&a.where_(2)), pa);
    assert_eq!(
        pid_of(&b.where_(2)),
        pb,
        "the other project's child is untouched"
    );
    let (code, _, err) = mux.cli(&["restart", "f", "--project", "/nowhere"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no instance runs for project /nowhere"),
        "{err}"
    );

    // Every instance.
    let pa = pid_of(&a.where_(3));
    let (code, _, err) = mux.cli(&["restart", "f"]);
    assert_eq!(code, 0, "{err}");
    wait_dead(pa);
    wait_dead(pb);
    assert_ne!(pid_of(&a.where_(4)), pa);
    assert_ne!(pid_of(&b.where_(4)), pb);
}

#[test]
fn a_reload_that_changes_share_restarts_only_that_server() {
    let g = "[servers.g]\ncmd = \"{fake}\"\n";
    let mux = Mux::start(&format!("{}{g}", shared("global", "")));
    let mut a = mux.connect("f");
    a.initialize(json!({}));
    let before = pid_of(&where_(&mut a, 1));
    let mut other = mux.connect("g");
    other.initialize(json!({}));
    let g_pid = pid_of(&where_(&mut other, 1));
    mux.edit("", &format!("{}{g}", shared("client", "max_instances = 4")));
    mux.log
        .wait_for(&["config reloaded", "restarted=[\"f\"]", "unchanged=1"]);
    wait_dead(before);
    assert_eq!(pid_of(&where_(&mut other, 2)), g_pid, "g is untouched");
    let mut b = mux.connect("f");
    let mut c = mux.connect("f");
    b.initialize(json!({}));
    c.initialize(json!({}));
    assert_ne!(pid_of(&where_(&mut b, 1)), pid_of(&where_(&mut c, 1)));
    assert_eq!(instances(&mux, 2)["share"], "client");
    // idle_stop_ms alone restarts it too.
    let (pb, pc) = (pid_of(&where_(&mut b, 2)), pid_of(&where_(&mut c, 2)));
    mux.edit(
        "",
        &format!(
            "{}{g}",
            shared("client", "max_instances = 4\nidle_stop_ms = 9000")
        ),
    );
    mux.log
        .wait_for_count(&["config reloaded", "restarted=[\"f\"]", "unchanged=1"], 2);
    wait_dead(pb);
    wait_dead(pc);
    assert_eq!(pid_of(&where_(&mut other, 3)), g_pid);
}

#[test]
fn shutdown_stops_every_instance_and_a_refused_client_promptly() {
    let mut mux = Mux::start(&shared("client", "max_instances = 2"));
    let mut a = mux.connect("f");
    let mut b = mux.connect("f");
    a.initialize(json!({}));
    b.initialize(json!({}));
    let pids = [pid_of(&where_(&mut a, 1)), pid_of(&where_(&mut b, 1))];
    let mut refused = mux.connect("f");
    let r = refused.request(json!(1), "ping", json!({}));
    assert_eq!(r["error"]["data"]["reason"], "too_many_instances");
    // A connection still sending nothing (its project line never comes).
    let _silent = std::os::unix::net::UnixStream::connect(mux.socket("f")).unwrap();
    let (code, took) = mux.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, Some(0), "{}", mux.log.text());
    assert!(
        !mux.log.text().contains("did not stop in time"),
        "{}",
        mux.log.text()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for pid in pids {
        assert!(!alive(pid), "child {pid} outlived the daemon");
    }
    assert!(!mux.socket("f").exists());
    assert_eq!(refused.recv(), None, "the refused client was closed");
}

#[test]
fn shutdown_does_not_wait_for_a_project_line_that_never_comes() {
    let mut mux = Mux::start(&shared("project", ""));
    let mut a = mux.connect("f");
    a.initialize(json!({}));
    let pid = pid_of(&where_(&mut a, 1));
    let _silent = std::os::unix::net::UnixStream::connect(mux.socket("f")).unwrap();
    // The daemon has taken the silent connection once a later one is served.
    let mut later = mux.connect("f");
    later.initialize(json!({}));
    let (code, took) = mux.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, Some(0));
    assert!(
        !mux.log.text().contains("did not stop in time"),
        "{}",
        mux.log.text()
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(!alive(pid));
}
