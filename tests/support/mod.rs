//! Shared helpers for the integration tests: start the real `rmcp-mux` binary on a config in a
//! temporary HOME, wait for events in its log, and talk MCP over its sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const MUX: &str = env!("CARGO_BIN_EXE_rmcp-mux");
pub const PROXY: &str = env!("CARGO_BIN_EXE_rmcp-mux-proxy");
pub const FAKE: &str = env!("CARGO_BIN_EXE_mcp-fake-server");

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// A log collected from a child's stderr, with a way to wait for a line.
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Log {
    pub fn capture(stream: impl std::io::Read + Send + 'static) -> Log {
        let log = Log::default();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("MUX_TEST_ECHO").is_some() {
                    eprintln!("[mux] {line}");
                }
                let (lines, cv) = &*l.0;
                lines.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        log
    }

    pub fn text(&self) -> String {
        self.0 .0.lock().unwrap().join("\n")
    }

    /// Waits until a line contains every one of `needles`; panics with the log on timeout.
    pub fn wait_for(&self, needles: &[&str]) -> String {
        self.wait_for_count(needles, 1)
    }

    /// Waits until `n` lines contain every one of `needles`.
    pub fn wait_for_count(&self, needles: &[&str], n: usize) -> String {
        let (lines, cv) = &*self.0;
        let deadline = Instant::now() + WAIT;
        let mut guard = lines.lock().unwrap();
        loop {
            let hits: Vec<&String> = guard
                .iter()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .collect();
            if hits.len() >= n {
                return hits[n - 1].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out waiting for {needles:?} (x{n}) in log:\n{}",
                    guard.join("\n")
                );
            }
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }
}

/// A running daemon in its own temporary HOME.
pub struct Mux {
    pub child: Child,
    pub dir: Arc<tempfile::TempDir>,
    pub config: PathBuf,
    pub log: Log,
}

impl Mux {
    /// Writes `servers` (TOML server tables, `{dir}` replaced by the temp dir) under a
    /// `[daemon]` table pointing into the temp dir, and starts the daemon.
    pub fn start(servers: &str) -> Mux {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, servers, &[])
    }

    pub fn start_in(dir: tempfile::TempDir, servers: &str, extra_args: &[&str]) -> Mux {
        Self::start_full(dir, "", servers, extra_args, &[])
    }

    /// As [`Mux::start_in`], with more `[daemon]` keys (`{dir}` replaced) and environment.
    pub fn start_full(
        dir: tempfile::TempDir,
        daemon_extra: &str,
        servers: &str,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Mux {
        let dir = Arc::new(dir);
        let config = dir.path().join("mux.toml");
        std::fs::write(&config, config_text(dir.path(), daemon_extra, servers)).unwrap();
        Self::launch(dir, config, extra_args, envs)
    }

    /// Rewrites the config the way editors save: a temporary file renamed over it.
    pub fn edit(&self, daemon_extra: &str, servers: &str) {
        self.write_config(&config_text(self.dir.path(), daemon_extra, servers));
    }

    /// Replaces the config with `text` as it is, by rename.
    pub fn write_config(&self, text: &str) {
        let tmp = self.path("mux.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// The control socket of the config this daemon started with.
    pub fn control_socket(&self) -> PathBuf {
        self.path("run/control.sock")
    }

    /// A daemon on an existing config, with `home` as its HOME (`dir` is kept alive with it).
    pub fn start_config(dir: Arc<tempfile::TempDir>, config: PathBuf, home: &Path) -> Mux {
        Self::launch_home(dir, config, &[], &[], home.to_owned())
    }

    /// Another daemon on the same config and HOME (after this one was stopped).
    pub fn relaunch(&self) -> Mux {
        Self::launch(self.dir.clone(), self.config.clone(), &[], &[])
    }

    fn launch(
        dir: Arc<tempfile::TempDir>,
        config: PathBuf,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Mux {
        let home = dir.path().to_owned();
        Self::launch_home(dir, config, extra_args, envs, home)
    }

    fn launch_home(
        dir: Arc<tempfile::TempDir>,
        config: PathBuf,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        home: PathBuf,
    ) -> Mux {
        let mut child = Command::new(MUX)
            .arg("--config")
            .arg(&config)
            .args(extra_args)
            .envs(envs.iter().copied())
            .env("HOME", &home)
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("RMCP_MUX_LOG", "info,rmcp_mux=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Log::capture(child.stderr.take().unwrap());
        let mux = Mux {
            child,
            dir,
            config,
            log,
        };
        mux.log.wait_for(&["rmcp-mux ready"]);
        mux
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.path(&format!("run/{name}.sock"))
    }

    pub fn connect(&self, name: &str) -> Client {
        Client::connect(&self.socket(name))
    }

    /// Runs the CLI against this daemon; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let config = self.config.display().to_string();
        self.cli_raw(&[args, &["--config", &config]].concat())
    }

    /// Runs the CLI with exactly these arguments (in this daemon's HOME).
    pub fn cli_raw(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(MUX)
            .args(args)
            .env("HOME", self.dir.path())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn status(&self) -> Value {
        let (code, out, err) = self.cli(&["status", "--json"]);
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(&out).unwrap()
    }

    pub fn server_status(&self, name: &str) -> Value {
        let s = self.status();
        s["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap()
    }

    /// Polls the whole daemon's status (through the control socket directly, so that it works
    /// while the config is broken or gone) until `pred` holds.
    pub fn wait_daemon(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let socket = self.control_socket().display().to_string();
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, out, err) = self.cli_raw(&["status", "--json", "--control-socket", &socket]);
            assert_eq!(code, 0, "status failed: {err}");
            let s: Value = serde_json::from_str(&out).unwrap();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "status never matched: {s}\nlog:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the status (an external view with no event to await) until `pred` holds.
    pub fn wait_status(&self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.server_status(name);
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "status never matched: {s}\nlog:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal and waits for the exit; returns (exit code, how long it took).
    pub fn stop(&mut self, sig: nix::sys::signal::Signal) -> (Option<i32>, Duration) {
        let start = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
        let deadline = start + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        // A failed test shows what the daemon said (cargo prints it with the failure).
        if std::thread::panicking() {
            eprintln!("--- the daemon's log ---\n{}", self.log.text());
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A config file: a `[daemon]` table pointing into `dir` plus `daemon_extra`, then `servers`
/// (`{dir}` and `{fake}` replaced in both).
pub fn config_text(dir: &Path, daemon_extra: &str, servers: &str) -> String {
    let d = dir.display().to_string();
    let fill = |s: &str| s.replace("{dir}", &d).replace("{fake}", FAKE);
    format!(
        "[daemon]\ncontrol_socket = \"{d}/run/control.sock\"\nsocket_dir = \"{d}/run\"\n{}\n\n{}",
        fill(daemon_extra),
        fill(servers)
    )
}

/// A line-oriented MCP client over a Unix socket; keeps notifications it skipped.
pub struct Client {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
    pub notes: Vec<Value>,
    pub requests: Vec<Value>,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client {
            stream,
            reader,
            notes: vec![],
            requests: vec![],
        }
    }

    pub fn send(&mut self, msg: &Value) {
        self.send_raw(&msg.to_string());
    }

    pub fn send_raw(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    /// The next line as JSON; `None` at EOF.
    pub fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")),
            ),
            Err(e) => panic!("read failed (timeout?): {e}"),
        }
    }

    /// The next line as JSON; `None` at EOF or when the daemon closed the connection with
    /// requests of ours still unread (the kernel then ends it with ECONNRESET, after every
    /// answer the daemon wrote has been read).
    pub fn recv_until_closed(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Ok(_) => Some(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")),
            ),
            Err(e) => panic!("read failed (timeout?): {e}"),
        }
    }

    /// Writes `line` with descriptors attached to it (`SCM_RIGHTS`), as a proxy asking to
    /// attach does.
    pub fn send_with_fds(&mut self, line: &[u8], fds: &[std::os::fd::RawFd]) {
        use std::os::fd::AsRawFd;
        nix::sys::socket::sendmsg::<nix::sys::socket::UnixAddr>(
            self.stream.as_raw_fd(),
            &[std::io::IoSlice::new(line)],
            &[nix::sys::socket::ControlMessage::ScmRights(fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    /// The next `n` bytes, whether or not a line ends in them.
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        std::io::Read::read_exact(&mut self.reader, &mut got)
            .unwrap_or_else(|e| panic!("read of {n} bytes failed (timeout?): {e}"));
        got
    }

    /// The rest of the current line, without its newline, as it came (JSON or not).
    pub fn recv_raw(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("read failed (timeout?): {e}"));
        assert!(
            line.ends_with('\n'),
            "the connection closed mid-line: {line:?}"
        );
        line.pop();
        line
    }

    /// Waits for the response with `id`, keeping notifications and server requests aside.
    pub fn response(&mut self, id: &Value) -> Value {
        loop {
            let msg = self.recv().expect("connection closed before the response");
            if msg.get("method").is_some() {
                if msg.get("id").is_some() {
                    self.requests.push(msg);
                } else {
                    self.notes.push(msg);
                }
                continue;
            }
            if &msg["id"] == id {
                return msg;
            }
            panic!("unexpected message while waiting for {id}: {msg}");
        }
    }

    pub fn request(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}));
        self.response(&id)
    }

    pub fn initialize(&mut self, caps: Value) -> Value {
        let r = self.request(
            json!("init"),
            "initialize",
            json!({"protocolVersion":"2025-11-25","capabilities":caps,"clientInfo":{"name":"test","version":"1"}}),
        );
        assert!(r.get("result").is_some(), "initialize failed: {r}");
        self.send(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        r
    }

    pub fn call(&mut self, id: Value, tool: &str, args: Value) -> Value {
        self.request(id, "tools/call", json!({"name":tool,"arguments":args}))
    }
}

/// The real MCP peers folder (`tests/peers`), installed by `tools/install-test-peers.sh`;
/// `None` (the test says SKIPPED) when they cannot be installed, unless RMCP_MUX_REQUIRE_PEERS
/// is set (CI), which makes that a failure.
pub fn peers() -> Option<PathBuf> {
    static READY: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let out = Command::new(root.join("tools/install-test-peers.sh")).output();
            let required = std::env::var_os("RMCP_MUX_REQUIRE_PEERS").is_some();
            match out {
                Ok(o) if o.status.success() => Some(root.join("tests/peers")),
                other => {
                    let why = match other {
                        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                        Err(e) => e.to_string(),
                    };
                    assert!(!required, "installing the test peers failed: {why}");
                    eprintln!("SKIPPED: real MCP peers unavailable ({why}); run tools/install-test-peers.sh");
                    None
                }
            }
        })
        .clone()
}

/// `n` texts of lowercase letters from a small linear congruential generator seeded with
/// `seed`, `len`, `len + 1000`, … long: a piece of a long message moved twice, lost or out of
/// place shows in them, where it would not in one repeated letter.
pub fn varied_texts(mut seed: u32, n: usize, len: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            (0..len + 1000 * i)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    char::from(b'a' + (seed >> 16) as u8 % 26)
                })
                .collect()
        })
        .collect()
}

/// The text of a tool result's first content block.
pub fn text(result: &Value) -> String {
    result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {result}"))
        .to_owned()
}

/// Whether a process exists (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until a process is gone.
pub fn wait_dead(pid: i32) {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a peer session script (Python or Node) and returns the JSON it printed; a failed
/// session fails the test with what it wrote to stderr.
pub fn finish(child: Child) -> Value {
    let std::process::Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "session failed: {err}");
    serde_json::from_slice(&stdout).unwrap_or_else(|e| panic!("bad output {e}: {err}"))
}
