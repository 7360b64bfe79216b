//! Hot reload and status files, against the real `rmcp-mux` binary and the fake server: the
//! config edited the way editors save it (a temporary file renamed over it), SIGHUP,
//! `rmcp-mux reload`, invalid and deleted configs, and the `status_file` snapshots.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::*;

/// A fake server table; `args` are appended to its arguments.
fn fake(name: &str, args: &str, extra: &str) -> String {
    format!(
        "[servers.{name}]\ncmd = \"{{fake}}\"\nargs = [\"--counter-file\", \"{{dir}}/{name}.starts\"{args}]\nrestart_backoff_ms = 50\nshutdown_grace_ms = 500\n{extra}\n"
    )
}

fn starts(mux: &Mux, name: &str) -> usize {
    std::fs::read_to_string(mux.path(&format!("{name}.starts")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn running(s: &Value) -> bool {
    s["state"] == "running" && s["pid"].is_number()
}

fn pid(s: &Value) -> i32 {
    s["pid"].as_i64().unwrap_or_else(|| panic!("no pid in {s}")) as i32
}

fn names(status: &Value) -> Vec<String> {
    status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The 1-based line of the first line of `text` starting with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        + 1
}

/// Polls a JSON file (written by the daemon; there is no event to await) until `pred` holds.
fn wait_file(path: &Path, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(v) = v {
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{} never matched: {v}",
                path.display()
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "{} never appeared (or is not JSON)",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn edits_add_restart_and_remove_servers_and_leave_the_others_alone() {
    let a = fake("a", "", "");
    let b = fake("b", "", "");
    let mux = Mux::start(&format!("{a}{b}"));
    let mut client = mux.connect("a");
    client.initialize(json!({}));
    let a_pid = pid(&mux.wait_status("a", running));
    let b_pid = pid(&mux.wait_status("b", running));

    // Add c: it comes up; a's session and child are untouched.
    let c = fake("c", "", "");
    mux.edit("", &format!("{a}{b}{c}"));
    mux.log
        .wait_for(&["config reloaded", "added=[\"c\"]", "restarted=[]"]);
    let mut cc = mux.connect("c");
    let init = cc.initialize(json!({}));
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-fake-server");
    assert_eq!(
        text(&client.call(json!(1), "echo", json!({"text":"still here"}))),
        "still here"
    );
    let st = mux.server_status("a");
    assert_eq!(pid(&st), a_pid, "a's child was not restarted: {st}");
    assert_eq!(st["clients"], 1, "a's client is still connected: {st}");
    assert_eq!(pid(&mux.server_status("b")), b_pid);
    assert_eq!(names(&mux.status()), ["a", "b", "c"]);

    // Change b's args: b restarts with them, nobody else does.
    let b2 = fake("b", ", \"--server-version\", \"2.0\"", "");
    mux.edit("", &format!("{a}{b2}{c}"));
    mux.log.wait_for(&["config reloaded", "restarted=[\"b\"]"]);
    let st = mux.wait_status("b", |s| running(s) && pid(s) != b_pid);
    wait_dead(b_pid);
    let mut bc = mux.connect("b");
    assert_eq!(
        bc.initialize(json!({}))["result"]["serverInfo"]["version"],
        "2.0",
        "b runs its new args: {st}"
    );
    assert_eq!(pid(&mux.server_status("a")), a_pid);
    assert_eq!(starts(&mux, "a"), 1);
    assert_eq!(starts(&mux, "c"), 1);

    // Remove a: its socket and its child go; its client is answered until it leaves.
    mux.edit("", &format!("{b2}{c}"));
    mux.log.wait_for(&["config reloaded", "removed=[\"a\"]"]);
    assert!(!mux.socket("a").exists(), "a's socket is unlinked");
    wait_dead(a_pid);
    let r = client.call(json!("gone"), "echo", json!({"text":"anyone?"}));
    assert_eq!(
        r["error"]["data"],
        json!({"reason":"server_unavailable","state":"stopped"}),
        "{r}"
    );
    drop(client);
    mux.log.wait_for(&["out of service and no client left"]);
    assert_eq!(names(&mux.status()), ["b", "c"]);
    assert_eq!(
        text(&cc.call(json!(2), "echo", json!({"text":"c ok"}))),
        "c ok"
    );
    assert_eq!(starts(&mux, "c"), 1);
}

#[test]
fn an_invalid_or_deleted_config_keeps_everything_running_and_shows_where() {
    let servers = format!("{}{}", fake("a", "", ""), fake("b", "", ""));
    let mux = Mux::start(&servers);
    let a_pid = pid(&mux.wait_status("a", running));
    let b_pid = pid(&mux.wait_status("b", running));

    let bad = config_text(mux.dir.path(), "", &format!("{servers}argz = []\n"));
    let line = line_of(&bad, "argz");
    mux.write_config(&bad);
    let st = mux.wait_daemon(|s| s["config_error"].is_string());
    let err = st["config_error"].as_str().unwrap();
    assert!(
        err.contains(&format!("mux.toml:{line}:"))
            && err.contains("unknown key `argz`; did you mean `args`?"),
        "{err}"
    );
    mux.log
        .wait_for(&["ERROR", "config reload refused", "`argz`"]);
    for (name, p) in [("a", a_pid), ("b", b_pid)] {
        let s = mux.server_status(name);
        assert!(
            running(&s) && pid(&s) == p,
            "{name} still runs as before: {s}"
        );
    }
    // The table says it too (the CLI finds the daemon although the config is broken).
    let (code, out, stderr) = mux.cli(&["status"]);
    assert_eq!(code, 0, "{stderr}");
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("config error (still running the previous configuration): ")
            && last.contains("`argz`"),
        "{out}"
    );

    // Fixing it clears the error; nothing restarts.
    mux.edit("", &servers);
    let st = mux.wait_daemon(|s| s["config_error"].is_null());
    assert_eq!(names(&st), ["a", "b"]);
    assert_eq!(pid(&mux.server_status("a")), a_pid);
    assert_eq!(pid(&mux.server_status("b")), b_pid);

    // A deleted config is an error too, and the daemon keeps running.
    std::fs::remove_file(&mux.config).unwrap();
    let st = mux.wait_daemon(|s| s["config_error"].is_string());
    let err = st["config_error"].as_str().unwrap();
    assert!(
        err.contains("cannot read config") && err.contains("mux.toml"),
        "{err}"
    );
    assert!(running(&st["servers"][0]) && pid(&st["servers"][0]) == a_pid);
    mux.edit("", &servers);
    let st = mux.wait_daemon(|s| s["config_error"].is_null());
    assert_eq!(pid(&st["servers"][1]), b_pid);
    assert_eq!((starts(&mux, "a"), starts(&mux, "b")), (1, 1));
}

#[test]
fn sighup_and_the_reload_command_apply_the_config_on_demand() {
    let a = fake("a", "", "");
    let b = fake("b", "", "");
    let c = fake("c", "", "");
    // Without the watcher, only SIGHUP and `rmcp-mux reload` can have applied the edits.
    let mux = Mux::start_full(
        tempfile::tempdir().unwrap(),
        "",
        &a,
        &[],
        &[("RMCP_MUX_WATCH", "0")],
    );
    mux.log.wait_for(&["not watching the config"]);

    mux.edit("", &format!("{a}{b}"));
    let daemon = nix::unistd::Pid::from_raw(mux.child.id() as i32);
    nix::sys::signal::kill(daemon, Signal::SIGHUP).unwrap();
    mux.log.wait_for(&["SIGHUP received"]);
    mux.log.wait_for(&["config reloaded", "added=[\"b\"]"]);
    let mut bc = mux.connect("b");
    bc.initialize(json!({}));
    let st = mux.status();
    assert_eq!(names(&st), ["a", "b"], "SIGHUP did not stop the daemon");

    mux.edit("", &format!("{b}{c}"));
    let (code, out, err) = mux.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  added:     c\n")
            && out.contains("  removed:   a\n")
            && out.contains("  unchanged: b\n"),
        "{out}"
    );
    assert!(
        out.starts_with("reloaded ") && !out.contains("restarted"),
        "{out}"
    );
    assert_eq!(names(&mux.status()), ["b", "c"]);
    assert!(!mux.socket("a").exists());

    // Nothing changed: it says so.
    let (code, out, _) = mux.cli(&["reload"]);
    assert_eq!(code, 0);
    assert!(out.contains("no server changed"), "{out}");

    // A bad config: the daemon refuses it, the command says where, and exits 2.
    let bad = config_text(mux.dir.path(), "", &format!("{b}{c}argz = 1\n"));
    let line = line_of(&bad, "argz");
    mux.write_config(&bad);
    let (code, out, err) = mux.cli(&["reload"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.starts_with("rmcp-mux: ")
            && err.contains(&format!("mux.toml:{line}:"))
            && err.contains("`argz`"),
        "{err}"
    );
    let socket = mux.control_socket().display().to_string();
    let (code, _, err2) = mux.cli_raw(&["reload", "--control-socket", &socket]);
    assert_eq!((code, &err2), (2, &err));
    let st = mux.status();
    assert!(st["config_error"].as_str().unwrap().contains("`argz`"));
    assert_eq!(names(&st), ["b", "c"]);
}

#[test]
fn status_files_follow_restarts_and_keep_the_final_state() {
    let mut mux = Mux::start_full(
        tempfile::tempdir().unwrap(),
        "status_file = \"{dir}/status/daemon.json\"",
        &format!(
            "{}{}",
            fake("a", "", "status_file = \"a.json\""),
            fake("b", "", "status_file = \"b.json\"")
        ),
        &[],
        &[],
    );
    let daemon_file = mux.path("status/daemon.json");
    let a_file = mux.path("a.json");
    let a = wait_file(&a_file, running);
    assert_eq!(a["name"], "a");
    let first = pid(&a);
    let d = wait_file(&daemon_file, |v| {
        v["servers"]
            .as_array()
            .is_some_and(|s| s.iter().all(running))
    });
    assert_eq!(names(&d), ["a", "b"]);
    assert_eq!(mode(&a_file), 0o600);
    assert_eq!(mode(&daemon_file), 0o600);
    assert_eq!(mode(&mux.path("status")), 0o700);

    // A client connecting is a change; the requests it sends are not.
    let mut c = mux.connect("a");
    c.initialize(json!({}));
    wait_file(&a_file, |v| v["clients"] == 1);
    let ino = std::fs::metadata(&a_file).unwrap().ino();
    for i in 0..50 {
        assert_eq!(text(&c.call(json!(i), "echo", json!({"text":"x"}))), "x");
    }
    assert_eq!(
        std::fs::metadata(&a_file).unwrap().ino(),
        ino,
        "pending counts do not rewrite the file"
    );
    drop(c);

    // A restart is.
    let (code, _, err) = mux.cli(&["restart", "a"]);
    assert_eq!(code, 0, "{err}");
    let a = wait_file(&a_file, |v| running(v) && pid(v) != first);
    wait_file(&daemon_file, |v| v["servers"][0]["pid"] == a["pid"]);

    // A server removed by a reload leaves its file in its final state.
    wait_file(&mux.path("b.json"), running);
    mux.edit(
        "status_file = \"{dir}/status/daemon.json\"",
        &fake("a", "", "status_file = \"a.json\""),
    );
    mux.log.wait_for(&["config reloaded", "removed=[\"b\"]"]);
    // (While the child is being stopped the file may say `stopped` with its pid.)
    wait_file(&mux.path("b.json"), |v| {
        v["state"] == "stopped" && v["pid"].is_null()
    });
    wait_file(&daemon_file, |v| names(v) == ["a"]);

    // At shutdown the files keep the final state: stopped, no pid.
    let (code, _) = mux.stop(Signal::SIGTERM);
    assert_eq!(code, Some(0));
    let a: Value = serde_json::from_str(&std::fs::read_to_string(&a_file).unwrap()).unwrap();
    assert_eq!(
        (&a["state"], &a["pid"]),
        (&json!("stopped"), &Value::Null),
        "{a}"
    );
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&daemon_file).unwrap()).unwrap();
    for s in d["servers"].as_array().unwrap() {
        assert_eq!(
            (&s["state"], &s["pid"]),
            (&json!("stopped"), &Value::Null),
            "{d}"
        );
    }
    let left: Vec<String> = std::fs::read_dir(mux.path("status"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["daemon.json"], "no temporary file left behind");
}

#[test]
fn a_new_socket_dir_moves_sockets_and_a_new_control_socket_waits_for_a_restart() {
    let a = fake("a", "", "");
    let b = fake("b", "", "socket = \"{dir}/own/b.sock\"");
    let mux = Mux::start(&format!("{a}{b}"));
    let a_pid = pid(&mux.wait_status("a", running));
    let b_pid = pid(&mux.wait_status("b", running));
    let text = config_text(mux.dir.path(), "", &format!("{a}{b}"))
        .replace("/run/control.sock", "/run/other.sock")
        .replace("/run\"", "/moved\"");
    mux.write_config(&text);
    mux.log.wait_for(&["config reloaded", "restarted=[\"a\"]"]);
    mux.log
        .wait_for(&["control_socket changed", "needs a daemon restart"]);
    // a's default socket moved; b has its own socket and did not restart.
    let moved = mux.path("moved/a.sock");
    assert!(moved.exists() && !mux.socket("a").exists());
    Client::connect(&moved).initialize(json!({}));
    let st = mux.wait_daemon(|s| running(&s["servers"][0]) && pid(&s["servers"][0]) != a_pid);
    assert_eq!(st["servers"][0]["socket"], moved.display().to_string());
    assert_eq!(pid(&st["servers"][1]), b_pid);
    // The daemon still answers on the control socket it started with.
    assert!(mux.control_socket().exists() && !mux.path("run/other.sock").exists());
    let socket = mux.control_socket().display().to_string();
    let (code, out, err) = mux.cli_raw(&["reload", "--control-socket", &socket]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("note:") && out.contains("needs a daemon restart"),
        "{out}"
    );
}

#[test]
fn a_server_that_cannot_listen_is_reported_and_the_rest_applies() {
    let a = fake("a", "", "");
    let mux = Mux::start(&a);
    let a_pid = pid(&mux.wait_status("a", running));
    // Something that is not a socket is in the way: it is never deleted.
    std::fs::write(mux.path("in-the-way"), "keep me").unwrap();
    let blocked = fake("x", "", "socket = \"{dir}/in-the-way\"");
    let c = fake("c", "", "");
    mux.edit("", &format!("{a}{blocked}{c}"));
    let socket = mux.control_socket().display().to_string();
    let (code, out, err) = mux.cli_raw(&["reload", "--control-socket", &socket]);
    // The watcher may have applied the edit first: then c shows as unchanged.
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("  failed:    x: server x: cannot listen") && out.contains("not a socket"),
        "{out}"
    );
    assert!(!out.contains("added:     x"), "{out}");
    let st = mux.wait_daemon(|s| names(s) == ["a", "c"]);
    let e = st["config_error"].as_str().unwrap_or_default();
    assert!(e.starts_with("server x: cannot listen"), "{st}");
    assert_eq!(pid(&st["servers"][0]), a_pid);
    assert_eq!(
        std::fs::read_to_string(mux.path("in-the-way")).unwrap(),
        "keep me"
    );
}

#[test]
fn only_and_except_apply_to_every_reload() {
    let a = fake("a", "", "");
    let b = fake("b", "", "");
    let mux = Mux::start_full(
        tempfile::tempdir().unwrap(),
        "",
        &format!("{a}{b}"),
        &["--except", "b"],
        &[],
    );
    assert_eq!(names(&mux.status()), ["a"]);
    let c = fake("c", "", "");
    let d = fake("d", "", "enabled = false");
    mux.edit("", &format!("{a}{b}{c}{d}"));
    mux.log.wait_for(&["config reloaded", "added=[\"c\"]"]);
    assert_eq!(
        names(&mux.status()),
        ["a", "c"],
        "b stays excepted, d disabled"
    );
    assert!(!mux.socket("b").exists() && !mux.socket("d").exists());

    // With --only, exactly those run, disabled or not; a file without one of them is refused.
    let dir = tempfile::tempdir().unwrap();
    let only = Mux::start_full(dir, "", &format!("{a}{d}"), &["--only", "d"], &[]);
    assert_eq!(names(&only.status()), ["d"]);
    only.edit("", &format!("{a}{c}{d}"));
    only.log.wait_for(&["config reloaded", "unchanged=1"]);
    assert_eq!(names(&only.status()), ["d"]);
    only.edit("", &format!("{a}{c}"));
    let st = only.wait_daemon(|s| s["config_error"].is_string());
    assert!(
        st["config_error"]
            .as_str()
            .unwrap()
            .contains("unknown server `d`"),
        "{st}"
    );
    assert_eq!(names(&st), ["d"], "d keeps running");
}

#[test]
fn an_unwritable_status_file_is_logged_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the status file's folder should be.
    std::fs::write(dir.path().join("blocker"), "").unwrap();
    let mux = Mux::start_full(
        dir,
        "status_file = \"{dir}/blocker/status.json\"",
        &fake("a", "", ""),
        &[],
        &[],
    );
    mux.log
        .wait_for(&["WARN", "cannot write the status file", "blocker"]);
    assert!(running(&mux.wait_status("a", running)));
    std::fs::remove_file(mux.path("blocker")).unwrap();
    let v = wait_file(&mux.path("blocker/status.json"), |v| {
        v["servers"][0]["state"] == "running"
    });
    assert_eq!(names(&v), ["a"]);
    mux.log.wait_for(&["status file written again"]);
    assert_eq!(
        mux.log
            .text()
            .matches("cannot write the status file")
            .count(),
        1,
        "logged once per failing spell"
    );
}

/// A direct socket client's loop of `tools/call echo`, `depth` requests in flight at a time,
/// until `stop`: every request gets its echo or the documented `upstream_exited` error (its
/// child was restarted under it), and the connection never closes. Returns (echoed, errors).
fn echo_loop(
    client: &mut Client,
    who: &str,
    depth: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> (usize, usize) {
    let (mut echoed, mut errors) = (0, 0);
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut owed = Vec::new();
        for _ in 0..depth {
            n += 1;
            let (id, words) = (json!(format!("{who}-{n}")), format!("{who} says {n}"));
            client.send(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
                "params":{"name":"echo","arguments":{"text":words}}}));
            owed.push((id, words));
        }
        while !owed.is_empty() {
            let Some(msg) = next_answer(client) else {
                panic!("{who}: the connection closed with {owed:?} unanswered")
            };
            let Some(at) = owed.iter().position(|(id, _)| msg["id"] == *id) else {
                panic!("{who}: an answer to an id not owed: {msg}")
            };
            let (_, words) = owed.swap_remove(at);
            if msg.get("result").is_some() {
                assert_eq!(text(&msg), words, "{who}: {msg}");
                echoed += 1;
            } else {
                assert_eq!(msg["error"]["code"], -32603, "{who}: {msg}");
                assert_eq!(
                    msg["error"]["data"]["reason"], "upstream_exited",
                    "{who}: {msg}"
                );
                errors += 1;
            }
        }
    }
    (echoed, errors)
}

/// The next answer (notifications such as `list_changed` after a restart set aside); `None`
/// at EOF.
fn next_answer(client: &mut Client) -> Option<Value> {
    loop {
        let msg = client.recv()?;
        if msg.get("method").is_none() {
            return Some(msg);
        }
    }
}

#[test]
fn a_changed_env_restarts_the_child_under_connected_clients_and_loses_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = |tag: usize| fake("a", "", &format!("env = {{ FAKE_TAG = \"gen-{tag}\" }}"));
    let mux = Mux::start(&server(0));
    let mut one = mux.connect("a");
    let mut many = mux.connect("a");
    one.initialize(json!({}));
    many.initialize(json!({}));
    let stop = AtomicBool::new(false);
    const RELOADS: usize = 40;
    let ((e1, x1), (e2, x2)) = std::thread::scope(|s| {
        let a = s.spawn(|| echo_loop(&mut one, "one", 1, &stop));
        let b = s.spawn(|| echo_loop(&mut many, "many", 4, &stop));
        for tag in 1..=RELOADS {
            mux.edit("", &server(tag));
            let (code, out, err) = mux.cli(&["reload"]);
            assert_eq!(code, 0, "{out}{err}");
            if tag % 3 == 0 {
                // Let the new child come up now and then, so requests reach it too.
                mux.wait_status("a", running);
            }
        }
        stop.store(true, Ordering::Relaxed);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(e1 > 0 && e2 > 0, "echoes answered: {e1} and {e2}");
    eprintln!("answered {e1} + {e2}, upstream_exited {x1} + {x2}");
    // Both clients are still connected, and their requests reach a child with the last env.
    for c in [&mut one, &mut many] {
        let r = c.call(json!("where"), "where", json!({}));
        assert_eq!(
            r["result"]["structuredContent"]["tag"],
            format!("gen-{RELOADS}"),
            "{r}"
        );
    }
    let st = mux.wait_status("a", running);
    assert_eq!(st["clients"], 2, "{st}");
    assert!(
        mux.log.text().contains("restarted=[\"a\"]"),
        "the reload reports a restarted"
    );
}

#[test]
fn a_moved_socket_keeps_its_connected_clients() {
    let mux = Mux::start(&fake("a", "", ""));
    let mut client = mux.connect("a");
    client.initialize(json!({}));
    let old_pid = pid(&mux.wait_status("a", running));
    mux.edit("", &fake("a", "", "socket = \"{dir}/moved/a.sock\""));
    mux.log.wait_for(&["config reloaded", "restarted=[\"a\"]"]);
    let moved = mux.path("moved/a.sock");
    assert!(moved.exists(), "the new path is served");
    assert!(!mux.socket("a").exists(), "the old path is unlinked");
    // The connected client is kept, on a new child, and a new client finds the new path.
    assert_eq!(
        text(&client.call(json!(1), "echo", json!({"text":"still here"}))),
        "still here"
    );
    let mut fresh = Client::connect(&moved);
    fresh.initialize(json!({}));
    assert_eq!(
        text(&fresh.call(json!(1), "echo", json!({"text":"new path"}))),
        "new path"
    );
    let st = mux.wait_status("a", |s| running(s) && pid(s) != old_pid);
    assert_eq!(st["clients"], 2, "{st}");
    assert_eq!(st["socket"], moved.display().to_string(), "{st}");
}

#[test]
fn a_per_client_server_hands_the_new_config_to_each_instance() {
    let server = |tag: &str| {
        fake(
            "a",
            "",
            &format!("share = \"client\"\nenv = {{ FAKE_TAG = \"{tag}\" }}"),
        )
    };
    let mux = Mux::start(&server("old"));
    let mut first = mux.connect("a");
    let mut second = mux.connect("a");
    for c in [&mut first, &mut second] {
        c.initialize(json!({}));
        let r = c.call(json!("before"), "where", json!({}));
        assert_eq!(r["result"]["structuredContent"]["tag"], "old", "{r}");
    }
    mux.edit("", &server("new"));
    mux.log.wait_for(&["config reloaded", "restarted=[\"a\"]"]);
    // Each client keeps its own instance, whose child now runs with the new env.
    for c in [&mut first, &mut second] {
        let r = c.call(json!("after"), "where", json!({}));
        assert_eq!(r["result"]["structuredContent"]["tag"], "new", "{r}");
    }
    let st = mux.server_status("a");
    assert_eq!(st["clients"], 2, "{st}");
    assert_eq!(st["instances"].as_array().map(Vec::len), Some(2), "{st}");
}

#[test]
fn a_removed_server_answers_its_clients_and_serves_them_again_when_added_back() {
    let a = fake("a", "", "");
    let b = fake("b", "", "");
    let mux = Mux::start(&format!("{a}{b}"));
    let mut client = mux.connect("a");
    client.initialize(json!({}));
    let old_pid = pid(&mux.wait_status("a", running));
    // Requests in flight as it goes are answered too.
    for i in 0..4 {
        client.send(&json!({"jsonrpc":"2.0","id":i,"method":"tools/call",
            "params":{"name":"slow","arguments":{"ms":300,"steps":1}}}));
    }
    mux.edit("", &b);
    mux.log.wait_for(&["config reloaded", "removed=[\"a\"]"]);
    for _ in 0..4 {
        let r = next_answer(&mut client).expect("answered, not closed");
        assert_eq!(r["error"]["data"]["reason"], "server_unavailable", "{r}");
    }
    assert!(!mux.socket("a").exists());
    wait_dead(old_pid);
    let r = client.call(json!("while"), "echo", json!({"text":"x"}));
    assert_eq!(r["error"]["data"]["state"], "stopped", "{r}");
    // Added back: the same connection is served by a new child.
    mux.edit("", &format!("{a}{b}"));
    mux.log.wait_for(&["config reloaded", "added=[\"a\"]"]);
    assert_eq!(
        text(&client.call(json!("back"), "echo", json!({"text":"back"}))),
        "back"
    );
    let st = mux.wait_status("a", running);
    assert_eq!(st["clients"], 1, "{st}");
}

/// A removed server kept by a connected client is in every status (the control socket's, the
/// table, the daemon's status file and its own), marked removed with its client; commands for
/// it are refused with the reason; once the client leaves it is gone from them all.
#[test]
fn a_removed_server_is_listed_as_removed_until_its_last_client_leaves() {
    let files = "status_file = \"{dir}/status/daemon.json\"";
    let a = fake(
        "a",
        "",
        "status_file = \"a.json\"\nenv = { SECRET_TOKEN = \"hunter2\" }",
    );
    let b = fake("b", "", "");
    let mux = Mux::start_full(
        tempfile::tempdir().unwrap(),
        files,
        &format!("{a}{b}"),
        &[],
        &[],
    );
    let mut client = mux.connect("a");
    client.initialize(json!({}));
    let old_pid = pid(&mux.wait_status("a", running));
    let a_file = mux.path("a.json");
    let daemon_file = mux.path("status/daemon.json");
    wait_file(&a_file, |v| v["clients"] == 1);

    mux.edit(files, &b);
    let (code, out, err) = mux.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    // The reload (the watcher's or this one) returns once the removed child has exited.
    mux.log.wait_for(&["config reloaded", "removed=[\"a\"]"]);
    assert!(
        !alive(old_pid),
        "a's child stopped before the reload returned"
    );

    let st = mux.status();
    assert_eq!(names(&st), ["b", "a"], "{st}");
    let a = &st["servers"][1];
    assert_eq!(
        (&a["removed"], &a["clients"], &a["state"], &a["pid"]),
        (&json!(true), &json!(1), &json!("stopped"), &Value::Null),
        "{st}"
    );
    assert!(st["servers"][0].get("removed").is_none(), "{st}");
    assert!(!st.to_string().contains("hunter2"), "{st}");
    let (code, table, err) = mux.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with("│ a "))
        .unwrap_or_else(|| panic!("no row for a: {table}"));
    assert!(
        row.contains("│ removed ") && row.contains("│ 1/"),
        "{table}"
    );
    assert!(
        table.contains(
            "removed: a: no longer in the config; its 1 client gets `server_unavailable` until \
             it disconnects\n"
        ),
        "{table}"
    );
    let d = wait_file(&daemon_file, |v| names(v) == ["b", "a"]);
    assert_eq!(d["servers"][1]["removed"], true, "{d}");
    let own = wait_file(&a_file, |v| v["removed"] == true);
    assert_eq!(own["clients"], 1, "{own}");

    // Commands for it are refused, saying why; nothing is started.
    let why = "server `a` was removed from the config and is out of service (its 1 client gets \
               `server_unavailable` until it disconnects); add it back to the config to run it \
               again";
    for cmd in ["restart", "start", "stop"] {
        let (code, _, err) = mux.cli(&[cmd, "a"]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert_eq!(err.trim_end(), format!("rmcp-mux: {why}"), "{cmd}");
    }
    let (code, _, err) = mux.cli(&["restart", "a", "--project", "/tmp"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(why), "{err}");
    assert_eq!(starts(&mux, "a"), 1, "no new child for a");
    let r = client.call(json!(1), "echo", json!({"text":"x"}));
    assert_eq!(r["error"]["data"]["reason"], "server_unavailable", "{r}");

    // The last client leaves: it is gone from every status.
    drop(client);
    let st = mux.wait_daemon(|s| names(s) == ["b"]);
    assert!(st["servers"][0].get("removed").is_none(), "{st}");
    wait_file(&daemon_file, |v| names(v) == ["b"]);
    // Its own file keeps its final state.
    wait_file(&a_file, |v| v["removed"] == true && v["clients"] == 0);
    let (code, _, err) = mux.cli(&["restart", "a"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown server `a`"), "{err}");
}

/// A change of `share` is the one reload that closes a server's clients (they belong to other
/// children now). A direct client writing requests all the while gets an answer to each one the
/// daemon read, all before the connection ends: the answers it gets are those of the first requests
/// it sent, with no gap, and each is an echo or a documented error.
#[test]
fn a_share_change_answers_what_it_read_before_closing_a_client() {
    let global = fake("a", "", "");
    let mux = Mux::start(&global);
    let mut client = mux.connect("a");
    client.initialize(json!({}));
    let mut writer = client.stream.try_clone().unwrap();
    const MAX: usize = 20_000;
    let sent = std::thread::spawn(move || {
        let mut n = 0;
        while n < MAX {
            let line = format!(
                "{}\n",
                json!({"jsonrpc":"2.0","id":n,"method":"tools/call",
                    "params":{"name":"echo","arguments":{"text":format!("n{n}")}}})
            );
            if std::io::Write::write_all(&mut writer, line.as_bytes()).is_err() {
                break;
            }
            n += 1;
        }
        n
    });
    let mut answered = Vec::new();
    // The close may come as ECONNRESET: the daemon closes with requests of ours unread.
    while let Some(msg) = client.recv_until_closed() {
        if msg.get("method").is_some() {
            continue;
        }
        if answered.len() == 100 {
            // Some answers first, then the reload while requests keep coming.
            mux.edit("", &fake("a", "", "share = \"client\""));
        }
        let id = msg["id"].as_u64().unwrap_or_else(|| panic!("{msg}")) as usize;
        match msg.get("result") {
            Some(_) => assert_eq!(text(&msg), format!("n{id}"), "{msg}"),
            None => {
                let reason = &msg["error"]["data"]["reason"];
                assert!(
                    reason == "server_unavailable" || reason == "upstream_exited",
                    "{msg}"
                );
            }
        }
        answered.push(id);
    }
    let sent = sent.join().unwrap();
    eprintln!("{} answered of {sent} sent", answered.len());
    mux.log.wait_for(&["config reloaded", "restarted=[\"a\"]"]);
    assert!(
        !answered.is_empty() && answered.len() <= sent,
        "{sent} sent"
    );
    answered.sort_unstable();
    let expected: Vec<usize> = (0..answered.len()).collect();
    assert_eq!(
        answered, expected,
        "the answers are those of the first requests, once each"
    );
}
