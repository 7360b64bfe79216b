//! The detached daemon as a user runs it: `rmcp-mux daemon start|stop|status|restart`, the
//! PID file and its lock, the log file and `rmcp-mux logs`, and `rmcp-mux-proxy --autostart`.
//! Real binaries in a temporary HOME / XDG_STATE_HOME / XDG_CONFIG_HOME.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// A temporary user with one config; kills every daemon it finds a PID file for on drop.
struct Home {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Home {
    fn new(servers: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let config = dir.path().join("mux.toml");
        let text = format!(
            "[daemon]\ncontrol_socket = \"{d}/run/control.sock\"\nsocket_dir = \"{d}/run\"\n\n{}",
            servers.replace("{dir}", &d).replace("{fake}", FAKE)
        );
        std::fs::write(&config, text).unwrap();
        Home { dir, config }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn state(&self) -> PathBuf {
        self.path("state/rmcp-mux")
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("HOME", self.dir.path())
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("RMCP_MUX_LOG", "info,rmcp_mux=debug")
            .env_remove("RMCP_MUX_CONFIG");
        c
    }

    /// `rmcp-mux ARGS --config F` with stdout and stderr piped, bounded by a watchdog.
    fn mux(&self, args: &[&str]) -> (i32, String, String) {
        let mut c = self.cmd(MUX);
        c.args(args).arg("--config").arg(&self.config);
        let out = bounded_output(c);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `daemon start`; returns the PID it printed.
    fn start(&self) -> i32 {
        let (code, out, err) = self.mux(&["daemon", "start"]);
        assert_eq!(code, 0, "daemon start failed: {err}");
        parse_pid(&out)
    }

    fn status(&self) -> Value {
        let (code, out, err) = self.mux(&["daemon", "status", "--json"]);
        assert_eq!(code, 0, "daemon status failed: {err}");
        serde_json::from_str(&out).unwrap()
    }

    fn pid_files(&self) -> Vec<PathBuf> {
        files_with(&self.state(), ".pid")
    }

    fn log_file(&self) -> PathBuf {
        let logs = files_with(&self.state().join("logs"), ".log");
        assert_eq!(logs.len(), 1, "{logs:?}");
        logs[0].clone()
    }

    fn connect(&self, name: &str) -> Client {
        Client::connect(&self.path(&format!("run/{name}.sock")))
    }

    /// Waits until the log file has a line with every one of `needles`.
    fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?} in the log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for pid_file in self.pid_files() {
            let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.parse::<i32>().ok()))
            else {
                continue;
            };
            if pid == std::process::id() as i32 || !alive(pid) {
                continue;
            }
            let p = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// Runs a command to completion with piped stdout/stderr; panics (after killing it) if reading
/// its output to EOF takes longer than WAIT, which is what a daemon holding the pipes would do.
fn bounded_output(mut c: Command) -> Output {
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the command's output did not reach EOF within {WAIT:?}");
        }
    }
}

fn parse_pid(out: &str) -> i32 {
    let rest = out
        .trim()
        .strip_prefix("started (PID ")
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    rest.trim_end_matches(')').parse().unwrap()
}

fn fake(name: &str) -> String {
    format!("[servers.{name}]\ncmd = \"{{fake}}\"\nshutdown_grace_ms = 500\n")
}

fn child_pids(status: &Value) -> Vec<i32> {
    status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["pid"].as_i64().map(|p| p as i32))
        .collect()
}

/// Polls the daemon's status (no event to await from outside) until every server runs.
fn wait_running(home: &Home, n: usize) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = home.status();
        let running = st["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "running")
            .count();
        if running == n {
            return st;
        }
        assert!(Instant::now() < deadline, "servers never all ran: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn start_detaches_serves_after_the_parent_exits_and_a_second_start_is_refused() {
    let home = Home::new(&(fake("f") + &fake("g")));
    let begun = Instant::now();
    // bounded_output reads both pipes to EOF: it only returns if the daemon let go of them.
    let pid = home.start();
    assert!(
        begun.elapsed() < Duration::from_secs(15),
        "took {:?}",
        begun.elapsed()
    );
    assert!(alive(pid), "the daemon outlived `daemon start`");
    let mut c = home.connect("f");
    c.initialize(json!({}));
    assert_eq!(text(&c.call(json!(1), "echo", json!({"text":"hi"}))), "hi");

    let st = wait_running(&home, 2);
    assert_eq!(st["pid"], pid);
    assert!(st["uptime_ms"].is_u64(), "{st}");
    assert_eq!(
        st["config"],
        std::fs::canonicalize(&home.config)
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(st["log_file"], home.log_file().display().to_string());
    assert_eq!(st["servers"][0]["name"], "f");
    assert_eq!(st["servers"][1]["name"], "g");
    assert_eq!(st["servers"][0]["clients"], 1);
    assert_eq!(child_pids(&st).len(), 2);

    // The human form says running, with the PID.
    let (code, out, _) = home.mux(&["daemon", "status"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("running (PID {pid}), up ")),
        "{out}"
    );
    assert!(out.contains("│ f "), "{out}");

    let (code, out, err) = home.mux(&["daemon", "start"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(err.trim(), format!("rmcp-mux: already running (PID {pid})"));
    assert!(out.is_empty());
    // The old spelling of status still works next to the new group.
    let (code, out, err) = home.mux(&["daemon-status", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["pid"], pid);

    // One PID file, 0600 in a 0700 folder, naming the daemon.
    let pid_files = home.pid_files();
    assert_eq!(pid_files.len(), 1);
    let text = std::fs::read_to_string(&pid_files[0]).unwrap();
    assert_eq!(text.lines().next().unwrap(), pid.to_string());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&pid_files[0]), 0o600);
    assert_eq!(mode(&home.state()), 0o700);
}

#[test]
fn stop_leaves_no_process_no_socket_and_no_pid_file() {
    let home = Home::new(&(fake("f") + &fake("g")));
    let pid = home.start();
    let st = wait_running(&home, 2);
    let children = child_pids(&st);
    assert_eq!(children.len(), 2);
    let (code, out, err) = home.mux(&["daemon", "stop"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("stopped (PID {pid})"));
    wait_dead(pid);
    for c in children {
        wait_dead(c);
    }
    for sock in ["run/f.sock", "run/g.sock", "run/control.sock"] {
        assert!(!home.path(sock).exists(), "{sock} left behind");
    }
    assert!(home.pid_files().is_empty(), "PID file left behind");
    home.wait_log(&["SIGTERM received"]);

    let (code, out, err) = home.mux(&["daemon", "stop"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("rmcp-mux: not running (config "), "{err}");
    let (code, _, err) = home.mux(&["daemon", "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn restart_gives_a_new_pid_and_the_same_servers_come_back() {
    let home = Home::new(&(fake("f") + &fake("g")));
    let (code, out, err) = home.mux(&["daemon", "start", "--only", "f"]);
    assert_eq!(code, 0, "{err}");
    let first = parse_pid(&out);
    let before = wait_running(&home, 1);
    let (code, out, err) = home.mux(&["daemon", "restart"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(format!("stopped (PID {first})").as_str())
    );
    let second = parse_pid(lines.next().unwrap());
    assert_ne!(first, second);
    wait_dead(first);
    for c in child_pids(&before) {
        wait_dead(c);
    }
    let after = wait_running(&home, 1);
    assert_eq!(after["pid"], second);
    // Same selection: still only f.
    let names: Vec<&str> = after["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f"]);
    let mut c = home.connect("f");
    c.initialize(json!({}));
    assert_eq!(
        text(&c.call(json!(1), "echo", json!({"text":"back"}))),
        "back"
    );
}

#[test]
fn stale_pid_files_are_cleaned_and_start_succeeds() {
    let home = Home::new(&fake("f"));
    // A dead PID (a process that has exited) and a live one of another program (this test).
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let foreign = std::process::id().to_string();
    for stale in [dead.id().to_string(), foreign] {
        let pid = home.start();
        let pid_file = home.pid_files().pop().unwrap();
        let (code, _, err) = home.mux(&["daemon", "stop"]);
        assert_eq!(code, 0, "{err}");
        wait_dead(pid);
        // Leave a PID file whose lock nobody holds.
        std::fs::write(&pid_file, format!("{stale}\n")).unwrap();
        let (code, out, err) = home.mux(&["daemon", "start"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("removed a stale PID file") && err.contains(&stale),
            "{err}"
        );
        let new = parse_pid(&out);
        assert_eq!(
            std::fs::read_to_string(&pid_file).unwrap().lines().next(),
            Some(new.to_string().as_str())
        );
        assert!(
            alive(std::process::id() as i32),
            "the foreign process was left alone"
        );
        let (code, _, err) = home.mux(&["daemon", "stop"]);
        assert_eq!(code, 0, "{err}");
        wait_dead(new);
    }
    // With no daemon, status finds a stale file too, removes it and says not running.
    assert!(home.pid_files().is_empty(), "stop removed the PID file");
    let lock = files_with(&home.state(), ".lock").pop().unwrap();
    let pid_file = lock.with_extension("pid");
    std::fs::write(&pid_file, format!("{}\n", dead.id())).unwrap();
    let (code, _, err) = home.mux(&["daemon", "status"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("removed a stale PID file") && err.contains("not running"),
        "{err}"
    );
    assert!(!pid_file.exists());
}

#[test]
fn start_reports_the_daemons_own_errors() {
    // A config error is found before detaching: exit 2, with file and key.
    let home = Home::new("[servers.f]\ncmd = \"{fake}\"\nsoket = \"x\"\n");
    let (code, out, err) = home.mux(&["daemon", "start"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("mux.toml:") && err.contains("soket"), "{err}");
    assert!(home.pid_files().is_empty());
    // A socket that cannot be bound fails in the detached daemon; its error comes back.
    let home = Home::new("[servers.f]\ncmd = \"{fake}\"\nsocket = \"{dir}/file/f.sock\"\n");
    std::fs::write(home.path("file"), "not a folder").unwrap();
    let (code, out, err) = home.mux(&["daemon", "start"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("the daemon did not start") && err.contains("server f: cannot listen"),
        "{err}"
    );
    assert!(
        home.pid_files().is_empty(),
        "the failed daemon removed its PID file"
    );
}

#[test]
fn a_foreground_daemon_holds_the_same_lock() {
    let mux = Mux::start(&fake("f"));
    let out = Command::new(MUX)
        .args(["daemon", "start", "--config"])
        .arg(&mux.config)
        .env("HOME", mux.dir.path())
        .env("XDG_STATE_HOME", mux.path("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("rmcp-mux: already running (PID {})", mux.child.id())
    );
    // The foreground daemon logs to stderr, and says so in its status.
    assert!(mux.status().get("log_file").is_none());
}

#[test]
fn the_log_file_is_private_tagged_with_server_names_and_filtered_by_logs() {
    let home = Home::new(&(fake("f") + &fake("g")));
    home.start();
    wait_running(&home, 2);
    let log = home.log_file();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(log.parent().unwrap()), 0o700);
    // A child's stderr lands in the file, tagged with its server.
    let mut c = home.connect("g");
    c.initialize(json!({}));
    c.call(json!(1), "log", json!({"text":"note-from-g-stderr"}));
    let line = home.wait_log(&["note-from-g-stderr"]);
    assert!(
        line.contains("child_stderr") && line.contains("server=g"),
        "{line}"
    );
    assert!(!line.contains('\x1b'), "no ANSI in the file: {line:?}");
    home.wait_log(&["server{name=f}", "child started"]);

    let (code, out, err) = home.mux(&["logs", "g"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("note-from-g-stderr"), "{out}");
    assert!(out.contains("server{name=g}"), "{out}");
    assert!(!out.contains("name=f"), "only g's lines: {out}");
    let (code, out, _) = home.mux(&["logs", "-n", "1"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");

    // --follow prints a line written after it started.
    let mut follow = home
        .cmd(MUX)
        .args(["logs", "f", "--follow", "-n", "0", "--config"])
        .arg(&home.config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    // Keep writing until follow shows one (it may open the file after the first write).
    let mut f = home.connect("f");
    f.initialize(json!({}));
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    let seen = loop {
        n += 1;
        f.call(json!(n), "log", json!({"text": format!("follow-me-{n}")}));
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            if line.contains("follow-me-") {
                break line;
            }
        }
        assert!(Instant::now() < deadline, "logs --follow showed nothing");
    };
    assert!(seen.contains("server=f"), "{seen}");
    let _ = follow.kill();
    let _ = follow.wait();

    // The log is still there, and readable, once the daemon is gone.
    let (code, _, err) = home.mux(&["daemon", "stop"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = home.mux(&["logs"]);
    assert_eq!(code, 0);
    assert!(out.contains("shutting down"), "{out}");
}

#[test]
fn ten_autostarting_proxies_give_one_daemon_and_all_get_answers() {
    let home = Home::new(&fake("f"));
    let socket = home.path("run/f.sock");
    let proxies: Vec<_> = (0..10)
        .map(|i| {
            // Both spellings: rmcp-mux-proxy and `rmcp-mux proxy`.
            let mut cmd = if i % 2 == 0 {
                home.cmd(PROXY)
            } else {
                let mut c = home.cmd(MUX);
                c.arg("proxy");
                c
            };
            cmd.arg("--socket")
                .arg(&socket)
                .arg("--autostart")
                .arg("--config")
                .arg(&home.config)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let threads: Vec<_> = proxies
        .into_iter()
        .map(|mut child| {
            std::thread::spawn(move || {
                let mut stdin = child.stdin.take().unwrap();
                let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"host","version":"1"}}});
                let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});
                writeln!(stdin, "{init}").unwrap();
                writeln!(stdin, "{}", json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
                writeln!(stdin, "{list}").unwrap();
                drop(stdin); // EOF: the proxy delivers what is owed, then exits.
                let mut out = String::new();
                child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                let status = child.wait().unwrap();
                (status, out, err)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for t in threads {
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "a proxy never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, out, err) = t.join().unwrap();
        assert!(status.success(), "proxy failed: {err}");
        // Pure protocol on stdout: every line is a JSON-RPC answer, nothing of the daemon.
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["result"]["serverInfo"]["name"], "mcp-fake-server");
        assert!(
            lines[1]["result"]["tools"].as_array().unwrap().len() > 1,
            "{}",
            lines[1]
        );
    }
    // Exactly one daemon: one PID file, and its process is the one status reports.
    let st = home.status();
    let pid_files = home.pid_files();
    assert_eq!(pid_files.len(), 1);
    let pid: i64 = std::fs::read_to_string(&pid_files[0])
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(st["pid"], pid);
    let daemons = count_daemons(&home.config);
    assert_eq!(daemons, 1, "exactly one daemon runs this config");
}

/// Daemon processes whose command line names `config` in daemon mode (not `daemon start`).
fn count_daemons(config: &Path) -> usize {
    let canon = std::fs::canonicalize(config).unwrap();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 1; // no /proc (macOS): the PID file check above stands alone
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.ends_with("rmcp-mux"))
                && args.iter().any(|a| a == "--log-file")
                && args.iter().any(|a| Path::new(a) == canon)
        })
        .count()
}

#[test]
fn autostart_with_a_broken_config_fails_at_once_with_the_error() {
    let home = Home::new("[servers.f]\ncmd = \"{fake}\"\nsoket = \"x\"\n");
    let begun = Instant::now();
    let mut c = home.cmd(PROXY);
    c.arg("--socket")
        .arg(home.path("run/f.sock"))
        .arg("--autostart")
        .arg("--config")
        .arg(&home.config);
    let out = bounded_output(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing but protocol on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot start the daemon") && err.contains("soket"),
        "{err}"
    );
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "it did not wait for the socket"
    );
}

#[test]
fn the_daemon_keeps_no_fd_its_starter_leaked_and_passes_nothing_on_to_servers() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let home = Home::new(&fake("f"));
    // A caller that leaks the write end of a pipe as fd 50 (as some shells and hosts do).
    let (read, write) = nix::unistd::pipe().unwrap();
    let raw = write.as_raw_fd();
    let mut c = home.cmd(MUX);
    c.args(["daemon", "start", "--config"]).arg(&home.config);
    // SAFETY: dup2 only, between fork and exec.
    unsafe {
        c.pre_exec(move || {
            nix::libc::dup2(raw, 50);
            Ok(())
        });
    }
    let out = bounded_output(c);
    assert!(out.status.success());
    let pid = parse_pid(&String::from_utf8_lossy(&out.stdout));
    drop(write);
    // EOF on the pipe: nobody (the daemon included) holds its write end any more.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::fs::File::from(read).read_to_end(&mut buf);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(WAIT).is_ok(),
        "the daemon (PID {pid}) kept the leaked fd open"
    );
    // The server process sees neither the ready pipe nor its variable.
    let st = wait_running(&home, 1);
    let child = child_pids(&st)[0];
    if let Ok(environ) = std::fs::read(format!("/proc/{child}/environ")) {
        assert!(
            !String::from_utf8_lossy(&environ).contains("RMCP_MUX_READY_FD"),
            "the ready variable reached a server"
        );
        let fds: Vec<_> = std::fs::read_dir(format!("/proc/{child}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut fds: Vec<i32> = fds.iter().map(|f| f.parse().unwrap()).collect();
        fds.sort();
        assert_eq!(fds, [0, 1, 2], "a server inherits only its stdio");
    }
}

#[test]
fn stop_kills_a_daemon_that_does_not_stop_within_ten_seconds() {
    let home = Home::new(&fake("f"));
    let pid = home.start();
    let child = child_pids(&wait_running(&home, 1))[0];
    // A stopped process cannot act on SIGTERM; only SIGKILL ends it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let begun = Instant::now();
    let (code, out, err) = home.mux(&["daemon", "stop"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("stopped (PID {pid})"));
    assert!(
        err.contains(&format!("PID {pid} did not stop within 10 s; killed it")),
        "{err}"
    );
    assert!(begun.elapsed() >= Duration::from_secs(10));
    wait_dead(pid);
    assert!(
        home.pid_files().is_empty(),
        "PID file cleaned after SIGKILL"
    );
    // Its server sees stdin close and exits on its own.
    wait_dead(child);
}

#[test]
fn a_detached_daemon_brings_up_an_added_server_without_restarting_the_others() {
    let home = Home::new(&fake("f"));
    let pid = home.start();
    let st = wait_running(&home, 1);
    let f_pid = st["servers"][0]["pid"].clone();
    let mut c = home.connect("f");
    c.initialize(json!({}));
    // The user edits the config; the editor saves by rename.
    let text = std::fs::read_to_string(&home.config).unwrap();
    let edited = format!("{text}{}", fake("g").replace("{fake}", FAKE));
    let tmp = home.path("mux.toml.swp");
    std::fs::write(&tmp, &edited).unwrap();
    std::fs::rename(&tmp, &home.config).unwrap();
    home.wait_log(&["config reloaded", "added=[\"g\"]"]);
    let st = wait_running(&home, 2);
    assert_eq!(st["pid"], pid, "the same daemon");
    assert_eq!(st["servers"][0]["pid"], f_pid, "f was not restarted: {st}");
    assert_eq!(st["servers"][0]["clients"], 1);
    assert_eq!(text_of_echo(&mut c), "still");
    home.connect("g").initialize(json!({}));

    // A broken edit: `daemon status` still reaches the daemon and shows the error.
    std::fs::write(&tmp, format!("{edited}bogus = 1\n")).unwrap();
    std::fs::rename(&tmp, &home.config).unwrap();
    home.wait_log(&["ERROR", "config reload refused", "`bogus`"]);
    let (code, out, err) = home.mux(&["daemon", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("config error") && out.contains("`bogus`"),
        "{out}"
    );

    let children = child_pids(&home.status());
    let (code, _, err) = home.mux(&["daemon", "stop"]);
    assert_eq!(code, 0, "{err}");
    wait_dead(pid);
    for child in children {
        wait_dead(child);
    }
    for sock in ["run/f.sock", "run/g.sock", "run/control.sock"] {
        assert!(!home.path(sock).exists(), "{sock} left behind");
    }
}

fn text_of_echo(c: &mut Client) -> String {
    text(&c.call(json!(9), "echo", json!({"text":"still"})))
}

/// A server that ignores stdin EOF (it never reads stdin) with a grandchild in its process
/// group; each writes its pid to `{dir}/NAME.child` and `{dir}/NAME.grandchild`. (`$$` is
/// the config's escape for `$`.)
fn stubborn(name: &str) -> String {
    format!(
        "[servers.{name}]\ncmd = \"sh\"\nargs = [\"-c\", \"sleep 300 & echo $$! > {{dir}}/{name}.grandchild; echo $$$$ > {{dir}}/{name}.child; exec sleep 301\"]\n"
    )
}

/// Waits for a pid file a test server writes; returns the pid.
fn wait_pid_file(path: &Path) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a detached daemon with a stubborn server, checks its child is recorded in the state
/// folder, and kills the daemon outright; returns (child, grandchild).
fn a_daemon_killed_outright(home: &Home) -> (i32, i32) {
    let daemon = home.start();
    let child = wait_pid_file(&home.path("s.child"));
    let grandchild = wait_pid_file(&home.path("s.grandchild"));
    // The daemon records the child once it has started it, which may be a moment after the
    // child wrote its pid.
    let deadline = Instant::now() + WAIT;
    loop {
        let records = files_with(&home.state(), ".children");
        assert!(records.len() <= 1, "{records:?}");
        if records
            .first()
            .is_some_and(|r| r.join(child.to_string()).exists())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the child is not recorded");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(home.path("s.child")).unwrap();
    std::fs::remove_file(home.path("s.grandchild")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_dead(daemon);
    // Its last threads may still hold the lock for a moment after it shows as dead.
    let deadline = Instant::now() + WAIT;
    while home.mux(&["daemon", "status"]).0 != 1 {
        assert!(
            Instant::now() < deadline,
            "the killed daemon's lock is still held"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, grandchild)
}

/// A daemon killed outright (a crash, the OOM killer, Force Quit) cannot stop its children:
/// the kernel ends the child on Linux, and the next daemon of the config ends what the records
/// show is still running (the grandchild here; the child itself elsewhere).
#[test]
fn the_next_daemon_ends_what_a_daemon_killed_outright_left_running() {
    let home = Home::new(&stubborn("s"));
    let (child, grandchild) = a_daemon_killed_outright(&home);
    #[cfg(target_os = "linux")]
    wait_dead(child);
    let _ = child;
    assert!(
        alive(grandchild),
        "nothing but the next daemon ends the grandchild"
    );
    home.start();
    wait_dead(grandchild);
    home.wait_log(&["left running by a daemon that did not stop normally"]);
    // The new daemon's own child is recorded, and a clean stop leaves no record behind.
    let new_child = wait_pid_file(&home.path("s.child"));
    let (code, _, err) = home.mux(&["daemon", "stop"]);
    assert_eq!(code, 0, "{err}");
    wait_dead(new_child);
    let records = files_with(&home.state(), ".children");
    let left: Vec<_> = std::fs::read_dir(&records[0]).unwrap().flatten().collect();
    assert!(left.is_empty(), "records left after a clean stop: {left:?}");
}

/// `daemon stop` after the daemon was killed outright ends what it left running, and says so.
#[test]
fn stop_ends_what_a_daemon_killed_outright_left_running() {
    let home = Home::new(&stubborn("s"));
    let (_, grandchild) = a_daemon_killed_outright(&home);
    let (code, _, err) = home.mux(&["daemon", "stop"]);
    assert_eq!(code, 1, "nothing was running: {err}");
    assert!(err.contains("ended 1 process(es)"), "{err}");
    wait_dead(grandchild);
}
