//! The real reference servers (npm, PyPI) behind the real daemon, driven by the official Python
//! MCP SDK and the TypeScript SDK v2 client through `rmcp-mux-proxy`, the way a host uses it. The peers are installed from the
//! lock files in `tests/peers` by `tools/install-test-peers.sh`; CI sets
//! RMCP_MUX_REQUIRE_PEERS=1 so that a failed install fails the run instead of skipping.

mod support;

use std::process::Command;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::*;

fn everything(peers: &std::path::Path) -> String {
    format!(
        "[servers.everything]\ncmd = \"node\"\nargs = [\"{}\", \"stdio\"]\nrestart_backoff_ms = 100\n",
        peers.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js").display()
    )
}

/// Starts a Python SDK session script through the proxy.
fn session(
    peers: &std::path::Path,
    script: &str,
    tag: Option<&str>,
    socket: &std::path::Path,
) -> std::process::Child {
    session_with(peers, script, tag, &[], socket)
}

fn session_with(
    peers: &std::path::Path,
    script: &str,
    tag: Option<&str>,
    flags: &[&str],
    socket: &std::path::Path,
) -> std::process::Child {
    let mut cmd = Command::new(peers.join(".venv/bin/python"));
    cmd.arg(peers.join(script)).args(flags);
    if let Some(tag) = tag {
        cmd.args(["--tag", tag]);
    }
    cmd.args(["--", PROXY, "--socket"])
        .arg(socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_python_sessions_share_one_server_everything() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&everything(&peers));
    let socket = mux.socket("everything");
    // Both at once: same request ids and progress tokens (the SDK numbers from 0 in each).
    // Only alpha declares sampling, so every sampling request must reach alpha: stdio links a
    // server request to no client request, and two capable sessions sampling at the same
    // instant would be ambiguous (PROTOCOL.md's policy then decides).
    let a = session(&peers, "everything_session.py", Some("alpha"), &socket);
    let b = session_with(
        &peers,
        "everything_session.py",
        Some("bravo"),
        &["--no-sampling"],
        &socket,
    );
    let (a, b) = (finish(a), finish(b));
    // Both proxies handed their session to the daemon once quiet (the SDK waits for each
    // answer before the next request), and everything below went on working after that.
    mux.log.wait_for_count(&["client attached"], 2);
    for (out, tag) in [(&a, "alpha"), (&b, "bravo")] {
        assert_eq!(out["tag"], tag);
        assert_eq!(out["server_name"], "mcp-servers/everything");
        assert_eq!(out["echo_ok"], true);
        assert_eq!(
            out["progress"],
            serde_json::json!([1.0, 2.0, 3.0, 4.0]),
            "{out}"
        );
    }
    assert_eq!(
        a["sampling_ok"], true,
        "sampling reached the capable session: {a}"
    );
    assert_eq!(b["sampling_ok"], Value::Null);
    let st = mux.wait_status("everything", |s| s["clients"] == 0);
    assert_eq!(st["restarts"], 0);
    assert_eq!(st["state"], "running");
    // Still the one child it started with.
    mux.log.wait_for_count(&["child started"], 1);
    assert!(!mux.log.text().contains("child exited"));
}

#[test]
fn memory_sessions_see_one_shared_graph() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&format!(
        "[servers.memory]\ncmd = \"node\"\nargs = [\"{}\"]\nenv = {{ MEMORY_FILE_PATH = \"{{dir}}/memory.jsonl\" }}\n",
        peers.join("node_modules/@modelcontextprotocol/server-memory/dist/index.js").display()
    ));
    let socket = mux.socket("memory");
    let first = finish(session(&peers, "memory_session.py", Some("one"), &socket));
    assert_eq!(first["server_name"], "memory-server");
    let second = finish(session(&peers, "memory_session.py", Some("two"), &socket));
    let graph = second["graph"].as_str().unwrap();
    assert!(
        graph.contains("entity-one") && graph.contains("entity-two"),
        "one server, one graph: {graph}"
    );
}

#[test]
fn mcp_server_time_speaks_through_the_mux() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&format!(
        "[servers.time]\ncmd = \"{}\"\n",
        peers.join(".venv/bin/mcp-server-time").display()
    ));
    let out = finish(session(
        &peers,
        "time_session.py",
        None,
        &mux.socket("time"),
    ));
    assert_eq!(out["server_name"], "mcp-time");
    assert_eq!(out["time"]["timezone"], "UTC");
}

/// Long answers from real SDKs reach Python SDK sessions whole through the proxy: the Python
/// SDK writes the id first, so the daemon passes its answer on as it arrives (two sessions at
/// once, one after the other on the one server); server-filesystem (TypeScript) writes the id
/// last, so its answer is read whole as before.
#[test]
fn long_answers_of_real_servers_arrive_whole() {
    let Some(peers) = peers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let len = 1_500_000; // over the 1 MiB pipe: the line arrives in more than one read
    std::fs::write(dir.path().join("big.txt"), "f".repeat(len)).unwrap();
    let mux = Mux::start(&format!(
        "[servers.py]\ncmd = \"{}\"\nargs = [\"{}\"]\n[servers.fs]\ncmd = \"node\"\nargs = [\"{}\", \"{}\"]\n",
        peers.join(".venv/bin/python").display(),
        peers.join("big_answer_server.py").display(),
        peers
            .join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
            .display(),
        dir.path().display(),
    ));
    let call = |server: &str, tool: &str, args: Value, char: &str| {
        let args = args.to_string();
        let len = len.to_string();
        let flags = [
            "--tool", tool, "--args", &args, "--length", &len, "--char", char,
        ];
        session_with(
            &peers,
            "long_answer_session.py",
            None,
            &flags,
            &mux.socket(server),
        )
    };
    let a = call("py", "text", serde_json::json!({ "n": len }), "b");
    let b = call("py", "text", serde_json::json!({ "n": len }), "b");
    let path = dir.path().join("big.txt").display().to_string();
    let c = call(
        "fs",
        "read_text_file",
        serde_json::json!({ "path": path }),
        "f",
    );
    for out in [finish(a), finish(b), finish(c)] {
        assert_eq!(out["length"], len, "{out}");
    }
    let log = mux.log.text();
    assert_eq!(
        log.matches("passing a long answer on as it arrives")
            .count(),
        2,
        "the Python SDK's two answers were streamed, the TypeScript one was not: {log}"
    );
}

#[test]
fn a_killed_real_server_is_restarted_and_new_sessions_work() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&everything(&peers));
    let pid = mux.wait_status("everything", |s| s["state"] == "running")["pid"]
        .as_i64()
        .unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let st = mux.wait_status("everything", |s| {
        s["state"] == "running" && s["restarts"] == 1
    });
    assert_ne!(st["pid"].as_i64().unwrap() as i32, pid);
    assert!(
        st["last_exit"].as_str().unwrap().contains("signal 9"),
        "{st}"
    );
    let out = finish(session(
        &peers,
        "everything_session.py",
        Some("after"),
        &mux.socket("everything"),
    ));
    assert_eq!(out["echo_ok"], true);
}

#[test]
fn an_open_memory_session_keeps_its_server_while_another_is_added_by_reload() {
    let Some(peers) = peers() else { return };
    let memory = format!(
        "[servers.memory]\ncmd = \"node\"\nargs = [\"{}\"]\nenv = {{ MEMORY_FILE_PATH = \"{{dir}}/memory.jsonl\" }}\n",
        peers.join("node_modules/@modelcontextprotocol/server-memory/dist/index.js").display()
    );
    let mux = Mux::start(&memory);
    // A raw JSON-RPC session, left open across the reload.
    let mut c = mux.connect("memory");
    let init = c.initialize(serde_json::json!({}));
    assert_eq!(init["result"]["serverInfo"]["name"], "memory-server");
    let made = c.call(
        serde_json::json!(1),
        "create_entities",
        serde_json::json!({"entities":[{"name":"before-reload","entityType":"test","observations":["kept"]}]}),
    );
    assert!(made["result"].is_object(), "{made}");
    let pid = mux.wait_status("memory", |s| s["state"] == "running")["pid"].clone();

    let time = format!(
        "[servers.time]\ncmd = \"{}\"\n",
        peers.join(".venv/bin/mcp-server-time").display()
    );
    mux.edit("", &format!("{memory}{time}"));
    mux.log
        .wait_for(&["config reloaded", "added=[\"time\"]", "restarted=[]"]);
    // The added server serves a real SDK session...
    let out = finish(session(
        &peers,
        "time_session.py",
        None,
        &mux.socket("time"),
    ));
    assert_eq!(out["server_name"], "mcp-time");
    // ...and the open session goes on with the same child and its state.
    let graph = text(&c.call(serde_json::json!(2), "read_graph", serde_json::json!({})));
    assert!(graph.contains("before-reload"), "{graph}");
    let st = mux.server_status("memory");
    assert_eq!(st["pid"], pid, "memory was not restarted: {st}");
    assert_eq!(st["clients"], 1);
}

/// The real filesystem server shared per project with its folder given as `${project}`: two
/// Python SDK sessions started in two folders each see only their own folder, as each would
/// with a server of its own.
#[test]
fn a_filesystem_server_per_project_shows_each_session_its_own_folder() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&format!(
        "[servers.fs]\ncmd = \"node\"\nargs = [\"{}\", \"${{project}}\"]\nshare = \"project\"\n",
        peers
            .join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
            .display()
    ));
    let socket = mux.socket("fs");
    let mut folders = Vec::new();
    for (name, file) in [
        ("alpha", "only-in-alpha.txt"),
        ("bravo", "only-in-bravo.txt"),
    ] {
        let dir = mux.path(&format!("projects/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), name).unwrap();
        folders.push((dir.canonicalize().unwrap(), file));
    }
    let sessions: Vec<std::process::Child> = folders
        .iter()
        .map(|(dir, _)| {
            Command::new(peers.join(".venv/bin/python"))
                .arg(peers.join("filesystem_session.py"))
                .args(["--", PROXY, "--socket"])
                .arg(&socket)
                .current_dir(dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, (dir, file)) in sessions.into_iter().zip(&folders) {
        let out = finish(child);
        assert_eq!(out["cwd"], dir.to_str().unwrap());
        assert_eq!(
            out["entries"],
            serde_json::json!([format!("[FILE] {file}")]),
            "{out}"
        );
        let allowed = out["allowed"].as_str().unwrap();
        assert!(allowed.contains(dir.to_str().unwrap()), "{allowed}");
        let other = folders.iter().find(|(d, _)| d != dir).unwrap();
        assert!(!allowed.contains(other.0.to_str().unwrap()), "{allowed}");
        assert_eq!(out["parent_refused"], true, "{out}");
    }
    let st = mux.server_status("fs");
    assert_eq!(st["instances"].as_array().map(Vec::len), Some(2), "{st}");
}

/// Runs `modern_session.py` through the proxy in the SDK client mode `mode`.
fn modern_session(
    peers: &std::path::Path,
    mode: &str,
    server: &str,
    tag: &str,
    socket: &std::path::Path,
) -> std::process::Child {
    session_with(
        peers,
        "modern_session.py",
        Some(tag),
        &["--mode", mode, "--server", server],
        socket,
    )
}

fn time_server(peers: &std::path::Path) -> String {
    format!(
        "[servers.time]\ncmd = \"{}\"\n",
        peers.join(".venv/bin/mcp-server-time").display()
    )
}

/// A Python SDK client pinned to 2026-07-28 cannot use server-everything directly (the server
/// speaks only the handshake era, and the client rejects its unmarked results); through the mux,
/// which translates, it can: tools, resources, progress, cancellation, a subscription, and the
/// server's sampling and elicitation requests as multi round-trip input requests.
#[test]
fn a_modern_python_client_uses_handshake_only_server_everything_through_the_mux() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&everything(&peers));
    let out = finish(session_with(
        &peers,
        "modern_session.py",
        Some("m1"),
        &["--sampling", "--elicitation"],
        &mux.socket("everything"),
    ));
    assert_eq!(out["protocol_version"], "2026-07-28");
    assert!(out["tools"].as_array().unwrap().len() > 3, "{out}");
    assert_eq!(out["echo_ok"], true);
    assert_eq!(out["resource_ok"], true);
    assert_eq!(out["progress"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
    assert_eq!(out["cancel_ok"], true);
    assert_eq!(
        out["listen_ok"], true,
        "a resource update arrived on the listen"
    );
    let st = mux.wait_status("everything", |s| s["clients"] == 0);
    assert_eq!(st["restarts"], 0);
}

/// mcp-server-time serves either era but pins a connection to the first it sees: the mux's
/// `initialize` pins it to the handshake era, and a modern client is served by translation.
#[test]
fn a_modern_python_client_uses_dual_era_mcp_server_time_through_the_mux() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&time_server(&peers));
    let out = finish(modern_session(
        &peers,
        "2026-07-28",
        "time",
        "t1",
        &mux.socket("time"),
    ));
    assert_eq!(out["protocol_version"], "2026-07-28");
    assert_eq!(out["time"]["timezone"], "UTC");
    assert_eq!(
        out["tools"],
        serde_json::json!(["get_current_time", "convert_time"])
    );
}

/// With `era = "auto"` the mux's probe finds mcp-server-time modern: the child runs the
/// 2026-07-28 era and a modern client's envelopes pass through; a legacy client at the same
/// time is served by the mux's own handshake.
#[test]
fn with_era_auto_mcp_server_time_runs_modern_and_clients_of_both_eras_use_it() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&format!("{}era = \"auto\"\n", time_server(&peers)));
    let st = mux.wait_status("time", |s| s["state"] == "running");
    assert_eq!(st["era"], "modern", "{st}");
    assert_eq!(st["protocol_version"], "2026-07-28", "{st}");
    let socket = mux.socket("time");
    let runs: Vec<_> = ["2026-07-28", "legacy", "auto"]
        .into_iter()
        .map(|mode| {
            let tag = format!("auto-{}", mode.replace('-', ""));
            (mode, modern_session(&peers, mode, "time", &tag, &socket))
        })
        .collect();
    for (mode, child) in runs {
        let out = finish(child);
        assert_eq!(out["mode"], mode);
        let era = if mode == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert_eq!(out["protocol_version"], era, "{out}");
        assert_eq!(out["time"]["timezone"], "UTC", "{out}");
        assert_eq!(
            out["tools"],
            serde_json::json!(["get_current_time", "convert_time"])
        );
    }
    let st = mux.server_status("time");
    assert_eq!(st["restarts"], 0, "{st}");
    assert!(!mux.log.text().contains("child exited"));
}

/// With `era = "auto"` in front of server-everything (handshake only), the probe's -32601 makes
/// the mux `initialize` the same process, and a modern client is served by translation.
#[test]
fn with_era_auto_server_everything_stays_handshake_and_a_modern_client_uses_it() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&format!("{}era = \"auto\"\n", everything(&peers)));
    let st = mux.wait_status("everything", |s| s["state"] == "running");
    assert_eq!(st["era"], "handshake", "{st}");
    let out = finish(modern_session(
        &peers,
        "2026-07-28",
        "everything",
        "auto-everything",
        &mux.socket("everything"),
    ));
    assert_eq!(out["protocol_version"], "2026-07-28");
    assert_eq!(out["echo_ok"], true, "{out}");
    assert_eq!(out["listen_ok"], true, "{out}");
    let st = mux.server_status("everything");
    assert_eq!(st["restarts"], 0, "one process: {st}");
    let log = mux.log.text();
    assert_eq!(log.matches("child started").count(), 1, "{log}");
}

/// Clients of both eras at once on one child: each gets its own answers in its own era.
#[test]
fn modern_auto_and_legacy_python_clients_share_one_child_at_once() {
    let Some(peers) = peers() else { return };
    for (name, config, server) in [
        ("everything", everything(&peers), "everything"),
        ("time", time_server(&peers), "time"),
    ] {
        let mux = Mux::start(&config);
        let socket = mux.socket(name);
        let runs: Vec<_> = ["2026-07-28", "auto", "legacy"]
            .into_iter()
            .map(|mode| {
                let tag = format!("{server}-{}", mode.replace('-', ""));
                (mode, modern_session(&peers, mode, server, &tag, &socket))
            })
            .collect();
        for (mode, child) in runs {
            let out = finish(child);
            assert_eq!(out["mode"], mode);
            // auto probes server/discover, which the mux answers: it goes modern too.
            let era = if mode == "legacy" {
                "2025-11-25"
            } else {
                "2026-07-28"
            };
            assert_eq!(out["protocol_version"], era, "{out}");
            if server == "everything" {
                assert_eq!(out["echo_ok"], true, "{out}");
                assert_eq!(out["cancel_ok"], true, "{out}");
                assert_eq!(out["progress"], serde_json::json!([1.0, 2.0, 3.0, 4.0]));
                let listened = if mode == "legacy" {
                    Value::Null
                } else {
                    Value::Bool(true)
                };
                assert_eq!(out["listen_ok"], listened, "{out}");
            } else {
                assert_eq!(out["time"]["timezone"], "UTC", "{out}");
            }
        }
        mux.log.wait_for_count(&["child started"], 1);
        assert!(!mux.log.text().contains("child exited"));
    }
}

/// Runs `ts_session.mjs` (the TypeScript SDK v2 client) through the proxy in negotiation
/// mode `mode`.
fn ts_session(
    peers: &std::path::Path,
    mode: &str,
    tag: &str,
    socket: &std::path::Path,
) -> std::process::Child {
    Command::new("node")
        .arg(peers.join("ts_session.mjs"))
        .args(["--mode", mode, "--tag", tag, "--", PROXY, "--socket"])
        .arg(socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The TypeScript SDK v2 client against server-everything through the mux, at once in its
/// default mode (`initialize`) and in `auto` (its probe, on a sibling proxy process, gets the
/// mux's `server/discover` answer, so it talks 2026-07-28 and is served by translation): tools
/// listed and called, and the server's sampling request answered by the right client (in the
/// 2026-07-28 era as an input request the SDK fulfils and retries).
#[test]
fn the_typescript_sdk_v2_client_uses_server_everything_through_the_mux_in_both_modes() {
    let Some(peers) = peers() else { return };
    let mux = Mux::start(&everything(&peers));
    let socket = mux.socket("everything");
    let runs: Vec<_> = ["legacy", "auto"]
        .into_iter()
        .map(|mode| {
            (
                mode,
                ts_session(&peers, mode, &format!("ts{mode}"), &socket),
            )
        })
        .collect();
    for (mode, child) in runs {
        let out = finish(child);
        assert_eq!(out["mode"], mode);
        let (era, version) = match mode {
            "legacy" => ("legacy", "2025-11-25"),
            _ => ("modern", "2026-07-28"),
        };
        assert_eq!(out["era"], era, "{out}");
        assert_eq!(out["protocol_version"], version, "{out}");
        assert_eq!(out["server_name"], "mcp-servers/everything", "{out}");
        assert!(
            out["tools"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "trigger-sampling-request"),
            "{out}"
        );
        assert_eq!(out["echo_ok"], true, "{out}");
        assert_eq!(out["sampling_ok"], true, "{out}");
    }
    let st = mux.wait_status("everything", |s| s["clients"] == 0);
    assert_eq!(st["restarts"], 0, "{st}");
}
