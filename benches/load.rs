//! The side-by-side benchmark: the same fast MCP server (`mcp-fake-server`) reached over its own
//! stdio ("direct"), through the mux's socket ("mux"), and through `rmcp-mux-proxy` ("proxy",
//! what a host uses), in one run; for reference, latency and the 1 MiB messages also through a
//! null relay ("relay", this executable run with `--null-relay`), latency through the proxy
//! with socket pairs for its stdio ("proxy_socketpair", what libuv-based hosts give it), and
//! the machine's own pipe round trip on one CPU and across two (`--byte-echo`). Then, with
//! daemons of their own: a per-client server (`share = "client"`, first answer with the child's
//! start, daemon RSS with 10 × 3 children), a 2026-07-28 client against a handshake client on
//! the same server, and the Streamable HTTP front against the proxy. Every answer is checked:
//! a misrouted or lost response fails the run. Results go to
//! `target/bench/results.json`; `tools/bench.sh` turns them into a table and a plot.
//!
//! Run it through `tools/bench.sh` (it builds the release binaries first). Set
//! `BENCH_QUICK=1` for a short smoke run; `BENCH_SMAPS=DIR` saves the daemon's smaps at each RSS
//! measurement; `BENCH_PERF=1` prints the daemon's syscalls by kind and context switches per
//! answer in each eras throughput round (`perf stat`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp_mux::jsonrpc::decimal;
use serde_json::{json, Value};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

type Reader = tokio::io::Lines<BufReader<Box<dyn AsyncRead + Unpin + Send>>>;
type Writer = BufWriter<Box<dyn AsyncWrite + Unpin + Send>>;

struct Bins {
    mux: PathBuf,
    proxy: PathBuf,
    fake: PathBuf,
}

fn bins() -> Bins {
    // BENCH_BIN_DIR measures other builds (for before/after comparisons) with this same bench.
    let dir = std::env::var_os("BENCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release"));
    let b = Bins {
        mux: dir.join("rmcp-mux"),
        proxy: dir.join("rmcp-mux-proxy"),
        fake: dir.join("mcp-fake-server"),
    };
    for p in [&b.mux, &b.proxy, &b.fake] {
        assert!(
            p.exists(),
            "{} missing: run `cargo build --release --bins` (tools/bench.sh does)",
            p.display()
        );
    }
    b
}

/// One MCP connection of any kind.
struct Conn {
    w: Writer,
    r: Reader,
    _child: Option<Child>,
    /// A 2026-07-28 client: no handshake, every request in the `_meta` envelope.
    modern: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Path3 {
    Direct,
    Mux,
    Proxy,
    /// The proxy with socket pairs for stdio, as libuv-based hosts (Node, Electron) give it.
    ProxyPair,
    /// The server behind [`relay`]: a reference, not a path of the mux.
    Relay,
}

impl Path3 {
    fn name(self) -> &'static str {
        match self {
            Path3::Direct => "direct",
            Path3::Mux => "mux",
            Path3::Proxy => "proxy",
            Path3::ProxyPair => "proxy_socketpair",
            Path3::Relay => "relay",
        }
    }
}

/// A command, pinned to CPU `pin` with taskset when asked (the one-core latency run).
fn command(bin: &Path, pin: Option<usize>) -> Command {
    match pin {
        Some(cpu) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpu.to_string()).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Lets this process's main thread run on every CPU again, after [`pin_self`].
fn unpin_self() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    pin_self(&format!("0-{}", cpus - 1));
}

/// Pins this process's main thread, where the current-thread runtime runs, to `cpus` (a
/// taskset list).
fn pin_self(cpus: &str) {
    let ok = std::process::Command::new("taskset")
        .args(["-pc", cpus, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset -pc {cpus} failed");
}

impl Conn {
    async fn open(kind: Path3, bins: &Bins, socket: &Path) -> Conn {
        Self::open_pinned(kind, bins, socket, None).await
    }

    async fn open_pinned(kind: Path3, bins: &Bins, socket: &Path, pin: Option<usize>) -> Conn {
        let mut conn = match kind {
            Path3::Direct => Self::spawn(command(&bins.fake, pin)),
            Path3::Relay => {
                let mut cmd = command(&std::env::current_exe().expect("the bench's own path"), pin);
                cmd.arg(RELAY_ARG).arg(&bins.fake);
                Self::spawn(cmd)
            }
            Path3::Proxy => {
                let mut cmd = command(&bins.proxy, pin);
                cmd.arg("--socket").arg(socket);
                Self::spawn(cmd)
            }
            Path3::ProxyPair => {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socket pair");
                let mut cmd = command(&bins.proxy, pin);
                cmd.arg("--socket").arg(socket);
                let child = cmd
                    .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                        theirs.try_clone().unwrap(),
                    )))
                    .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
                ours.set_nonblocking(true).unwrap();
                Self::on_socket(UnixStream::from_std(ours).unwrap(), Some(child))
            }
            Path3::Mux => {
                let s = UnixStream::connect(socket)
                    .await
                    .expect("connect to the mux");
                Self::on_socket(s, None)
            }
        };
        conn.send(&json!({"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}).to_string()).await;
        conn.w.flush().await.unwrap();
        let init = conn.recv().await;
        assert!(init.contains("\"result\""), "initialize failed: {init}");
        conn.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        conn
    }

    /// A connection over socket `s`, in the halves the proxy uses (one-way registrations; a
    /// libuv host, too, watches for room to write only while a write waits), so that this
    /// client costs what the mux's real clients cost on their socket side; the same read
    /// buffer as the stdio paths, so that the client's own reads cost the same on every path.
    fn on_socket(s: UnixStream, child: Option<Child>) -> Conn {
        let (r, w) = rmcp_mux::io::socket::split_tokio(s).expect("register the socket");
        Conn {
            w: BufWriter::new(Box::new(w)),
            r: BufReader::with_capacity(1 << 16, Box::new(r) as Box<dyn AsyncRead + Unpin + Send>)
                .lines(),
            _child: child,
            modern: false,
        }
    }

    fn spawn(mut cmd: Command) -> Conn {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let w = child.stdin.take().unwrap();
        let r = child.stdout.take().unwrap();
        Conn {
            w: BufWriter::new(Box::new(w)),
            r: BufReader::with_capacity(1 << 16, Box::new(r) as Box<dyn AsyncRead + Unpin + Send>)
                .lines(),
            _child: Some(child),
            modern: false,
        }
    }

    /// A 2026-07-28 client on the mux socket: it sends no `initialize`, and each of its
    /// requests carries the envelope, which the mux checks and strips before the handshake-era
    /// server sees it, adding `resultType` to the answer.
    async fn open_modern(socket: &Path) -> Conn {
        let s = UnixStream::connect(socket)
            .await
            .expect("connect to the mux");
        let mut conn = Self::on_socket(s, None);
        conn.modern = true;
        conn
    }

    async fn send(&mut self, line: &str) {
        self.w.write_all(line.as_bytes()).await.unwrap();
        self.w.write_all(b"\n").await.unwrap();
    }

    async fn recv(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(60), self.r.next_line())
            .await
            .expect("no answer within 60 s")
            .unwrap()
            .expect("connection closed")
    }
}

/// The argument that makes this executable [`relay`] instead of benchmarking.
const RELAY_ARG: &str = "--null-relay";

/// The null relay: runs `server` and copies bytes between this process's stdio and the
/// server's, each read written on as it comes, without looking at them. It does less than a
/// mux must (no line assembly, no parsing, no id to rewrite), so what it adds to direct stdio
/// is a reference for what one more process in the path costs on this machine, beside the
/// mux's own large-message rows. Plain reads and writes on the default pipes: of the relays
/// tried, the one that passed a 1 MiB request on fastest (docs/performance.md, "Reference rows"). Not
/// `io::copy`, which splices between pipes on Linux: a mux must see what it passes on.
fn relay(server: &std::ffi::OsStr) {
    use std::io::{Read, Write};
    fn pump(mut from: impl Read, mut to: impl Write) {
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if to.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    }
    let mut child = std::process::Command::new(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server behind the relay");
    let (to_server, from_server) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let answers = std::thread::spawn(move || pump(from_server, std::io::stdout()));
    pump(std::io::stdin(), to_server); // dropping its stdin ends the server
    let _ = child.wait();
    let _ = answers.join();
}

/// The argument that makes this executable [`byte_echo`] instead of benchmarking.
const BYTE_ECHO_ARG: &str = "--byte-echo";

/// Writes back every byte it reads: the other end of [`pipe_round_trip`].
fn byte_echo() {
    use std::io::{Read, Write};
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut b = [0u8; 1];
    while let Ok(1) = input.read(&mut b) {
        if output.write_all(&b).and_then(|()| output.flush()).is_err() {
            return;
        }
    }
}

/// One byte to a process on CPU `peer` and back, from this thread pinned to CPU `me`, over
/// pipes: microseconds per round trip (median of 2,000). What the machine itself charges for
/// two wake-ups, on one CPU or across two, before any mux is involved: on a virtual machine a
/// wake-up on another vCPU can cost tens of microseconds (an interrupt through the hypervisor),
/// and one more process in a path pays it whenever it does not share its peers' CPU.
fn pipe_round_trip(me: usize, peer: usize) -> f64 {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new("taskset")
        .arg("-c")
        .arg(peer.to_string())
        .arg(std::env::current_exe().expect("the bench's own path"))
        .arg(BYTE_ECHO_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the byte echo");
    let (mut to, mut from) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    pin_self(&me.to_string());
    let mut samples = Vec::with_capacity(2000);
    let mut b = [b'x'];
    for i in 0..2200 {
        let start = Instant::now();
        to.write_all(&b).unwrap();
        from.read_exact(&mut b).expect("the byte echo answers");
        if i >= 200 {
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    unpin_self();
    drop(to);
    let _ = child.wait();
    samples.sort_by(f64::total_cmp);
    percentile(&samples, 0.5)
}

/// An echo request; `pad` x's are added by the server to the result, `body` y's are sent
/// in the request itself (and come back in the result).
fn echo(client: usize, seq: u64, pad: usize, body: usize, modern: bool) -> String {
    let mut line = String::new();
    write_echo(&mut line, client, seq, pad, body, modern);
    line
}

/// The 2026-07-28 envelope a modern client puts in each request's `params._meta`.
const ENVELOPE: &str = r#","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}"#;

/// [`echo`] into a buffer the caller keeps. Digits by hand: `write!` was a seventh of the load
/// generator's CPU per answer, which on two cores is taken from the mux being measured.
fn write_echo(line: &mut String, client: usize, seq: u64, pad: usize, body: usize, modern: bool) {
    line.push_str(r#"{"jsonrpc":"2.0","id":"#);
    push_digits(line, seq);
    line.push_str(r#","method":"tools/call","params":{"name":"echo","arguments":{"text":"c"#);
    push_digits(line, client as u64);
    line.push('-');
    push_digits(line, seq);
    line.extend(std::iter::repeat_n('y', body));
    line.push_str(r#"","pad":"#);
    push_digits(line, pad as u64);
    line.push('}');
    if modern {
        line.push_str(ENVELOPE);
    }
    line.push_str("}}");
}

/// `n` in decimal at the end of `out`.
fn push_digits(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    out.extend(decimal(n, &mut buf).iter().map(|&d| char::from(d)));
}

/// Checks that `line` answers request `seq` of `client`, whose text came back with `body`
/// y's and `pad` x's after it; panics on a misrouted, truncated, altered or lost answer. A
/// `modern` client's answer must begin its result with `"resultType":"complete"`.
///
/// Byte for byte against the fake server's answer (`tests/support/fake_server.rs`, keys in
/// serde_json's order): stricter than parsing it, since only that exact valid JSON passes.
/// Parsing every answer with serde_json (and formatting the text expected) was 44 % of the
/// load generator's CPU per answer, and on two cores that CPU is taken from the mux under
/// test.
fn check(line: &str, client: usize, seq: u64, body: usize, pad: usize, modern: bool) {
    let mut rest = line.as_bytes();
    let mut eat = |want: &[u8]| match rest.strip_prefix(want) {
        Some(after) => {
            rest = after;
            true
        }
        None => false,
    };
    let (mut seq_digits, mut client_digits) = ([0u8; 20], [0u8; 20]);
    let (seq_text, client_text) = (
        decimal(seq, &mut seq_digits),
        decimal(client as u64, &mut client_digits),
    );
    let whole = eat(br#"{"id":"#)
        && eat(seq_text)
        && eat(br#","jsonrpc":"2.0","result":{"#)
        && (!modern || eat(br#""resultType":"complete","#))
        && eat(br#""content":[{"text":"c"#)
        && eat(client_text)
        && eat(b"-")
        && eat(seq_text)
        && {
            let text_end = rest.len().checked_sub(TAIL.len());
            text_end.is_some_and(|end| {
                end == body + pad
                    && rest[..body].iter().all(|&c| c == b'y')
                    && rest[body..end].iter().all(|&c| c == b'x')
                    && &rest[end..] == TAIL
            })
        };
    assert!(
        whole,
        "not the answer to c{client}-{seq} ({} bytes, {body} y's and {pad} x's expected): {}",
        line.len(),
        &line[..line.len().min(200)]
    );
}

/// How the fake server's echo answer ends, after the text.
const TAIL: &[u8] = br#"","type":"text"}]}}"#;

/// What a daemon's config holds beyond the plain servers of the global rows (which use the
/// default, so their config stays as it was).
#[derive(Default)]
struct Extra {
    /// Lines for `[daemon]`.
    daemon: String,
    /// Lines for every `[servers.sN]`.
    server: String,
    /// A state folder of this run's own (`XDG_STATE_HOME`), for the HTTP front's token.
    state: bool,
    /// The fake server's arguments (a TOML array; none when empty).
    args: &'static str,
}

/// A daemon running `servers` fake servers in a temp dir.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    async fn start(bins: &Bins, servers: usize, lazy: bool) -> (Daemon, Duration) {
        Self::start_pinned(bins, servers, lazy, None).await
    }

    async fn start_pinned(
        bins: &Bins,
        servers: usize,
        lazy: bool,
        pin: Option<usize>,
    ) -> (Daemon, Duration) {
        Self::start_with(bins, servers, lazy, pin, &Extra::default()).await
    }

    async fn start_with(
        bins: &Bins,
        servers: usize,
        lazy: bool,
        pin: Option<usize>,
        extra: &Extra,
    ) -> (Daemon, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = format!(
            "[daemon]\ncontrol_socket = \"{0}/control.sock\"\nsocket_dir = \"{0}/s\"\n{1}",
            dir.path().display(),
            extra.daemon,
        );
        for i in 0..servers {
            let (cmd, args) = match pin {
                Some(cpu) => (
                    "taskset".to_owned(),
                    format!("[\"-c\", \"{cpu}\", \"{}\"]", bins.fake.display()),
                ),
                None if !extra.args.is_empty() => {
                    (bins.fake.display().to_string(), extra.args.to_owned())
                }
                None => (bins.fake.display().to_string(), "[]".to_owned()),
            };
            cfg += &format!(
                "[servers.s{i}]\ncmd = \"{cmd}\"\nargs = {args}\nmax_active_clients = 4096\nmax_request_bytes = 8388608\nlazy_start = {lazy}\n{}",
                extra.server,
            );
        }
        let path = dir.path().join("mux.toml");
        std::fs::write(&path, cfg).unwrap();
        let start = Instant::now();
        let child = command(&bins.mux, pin)
            .arg("--config")
            .arg(&path)
            .env("RMCP_MUX_LOG", "warn")
            .envs(
                std::env::var("RMCP_MUX_THREADS")
                    .ok()
                    .map(|v| ("RMCP_MUX_THREADS", v)),
            )
            // The HTTP front's token file goes to the state folder: this run's own.
            .envs(
                extra
                    .state
                    .then(|| ("XDG_STATE_HOME", dir.path().join("state"))),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let d = Daemon { child, dir };
        // Ready when every socket accepts a connection.
        for i in 0..servers {
            let sock = d.socket(i);
            let deadline = Instant::now() + Duration::from_secs(10);
            while UnixStream::connect(&sock).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "socket {} never came up",
                    sock.display()
                );
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        }
        let took = start.elapsed();
        (d, took)
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("s/s{i}.sock"))
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id().unwrap())
    }

    /// With BENCH_SMAPS=DIR, copies the daemon's /proc/PID/smaps and status (thread count) to
    /// DIR/NAME.smaps, for a breakdown of what its RSS is made of (docs/performance.md).
    fn dump_smaps(&self, name: &str) {
        let Some(dir) = std::env::var_os("BENCH_SMAPS") else {
            return;
        };
        let pid = self.child.id().unwrap();
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        std::fs::write(dir.join(format!("{name}.smaps")), smaps).unwrap();
        std::fs::write(dir.join(format!("{name}.status")), status).unwrap();
    }
}

fn rss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size: shared pages (libc, the binary's code) divided among their users.
fn pss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// The KiB figure of the line starting with `key` in a `/proc` file (0 when absent).
fn proc_kib(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The contents of file `name` of every thread of process `pid` (`/proc/PID/task/*/NAME`),
/// skipping those that cannot be read (a thread that has just ended).
fn task_files(pid: u32, name: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join(name)).ok())
        .collect()
}

/// CPU time every thread of process `pid` has run so far, in ns (`schedstat`; 0 where
/// unreadable).
fn cpu_ns(pid: u32) -> u64 {
    task_files(pid, "schedstat")
        .iter()
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    task_files(pid, "children")
        .iter()
        .flat_map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()))
        .collect()
}

/// The machine's idle and stolen time so far, in clock ticks summed over its CPUs, and the total
/// (`/proc/stat`): stolen is time a virtual CPU wanted to run and its host ran something else.
fn idle_steal_total() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    (at(3) + at(4), at(7), (0..8).map(at).sum())
}

/// Where the CPU of one throughput round went: per answer, in µs, of the server, of the daemon
/// and of the load generator, and the machine's idle and stolen shares.
#[derive(Clone, Copy, Default)]
struct Spent {
    server_us: f64,
    daemon_us: f64,
    generator_us: f64,
    idle: f64,
    steal: f64,
}

/// [`throughput`], with the CPU each process spent on it: `server` and `daemon` are pids (the
/// daemon's is `None` for direct stdio). The proxies, idle once they have attached, are not
/// counted.
async fn throughput_spent(
    conns: Vec<Conn>,
    depth: usize,
    dur: Duration,
    server: u32,
    daemon: Option<u32>,
) -> (f64, Spent) {
    let me = std::process::id();
    let cpu = || [cpu_ns(server), daemon.map_or(0, cpu_ns), cpu_ns(me)];
    let (before, (idle0, steal0, total0)) = (cpu(), idle_steal_total());
    let (rate, answers) = throughput_counted(conns, depth, dur).await;
    let (after, (idle1, steal1, total1)) = (cpu(), idle_steal_total());
    // A thread that ended meanwhile (the runtime's idle blocking threads) takes its time along.
    let per = |i: usize| after[i].saturating_sub(before[i]) as f64 / 1e3 / answers as f64;
    let ticks = (total1 - total0).max(1) as f64;
    let spent = Spent {
        server_us: per(0),
        daemon_us: per(1),
        generator_us: per(2),
        idle: (idle1 - idle0) as f64 / ticks,
        steal: (steal1 - steal0) as f64 / ticks,
    };
    (rate, spent)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Sequential requests, one in flight: latency percentiles in microseconds. The first tenth
/// (at most 100) warms up and is not counted.
async fn latency(conn: &mut Conn, n: usize, pad: usize, body: usize) -> (f64, f64, f64, f64) {
    latency_interleaved(std::slice::from_mut(conn), n, pad, body).await[0]
}

/// One request and its checked answer: microseconds.
async fn one_request(conn: &mut Conn, seq: u64, pad: usize, body: usize) -> f64 {
    let req = echo(0, seq, pad, body, conn.modern);
    let start = Instant::now();
    conn.send(&req).await;
    conn.w.flush().await.unwrap();
    let line = conn.recv().await;
    let took = start.elapsed().as_secs_f64() * 1e6;
    check(&line, 0, seq, body, pad, conn.modern);
    took
}

/// p50, p90, p99 and mean of `samples`.
fn summary(mut samples: Vec<f64>) -> (f64, f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
        mean,
    )
}

/// The same as [`latency`] for several connections taken in turn, one request each per round,
/// so that whatever drifts during the run (the machine's load, the server's heap) weighs on
/// every path alike; the first tenth of the rounds warms up.
async fn latency_interleaved(
    conns: &mut [Conn],
    n: usize,
    pad: usize,
    body: usize,
) -> Vec<(f64, f64, f64, f64)> {
    let mut samples = vec![Vec::with_capacity(n); conns.len()];
    let warm = (n as u64 / 10).clamp(1, 100);
    for seq in 0..(n as u64 + warm) {
        for (conn, got) in conns.iter_mut().zip(&mut samples) {
            let took = one_request(conn, seq, pad, body).await;
            if seq >= warm {
                got.push(took);
            }
        }
    }
    samples.into_iter().map(summary).collect()
}

/// `conns` connections with `depth` requests in flight each for `dur`: answers per second.
///
/// Each connection writes and reads at once (a writer that waited for its reader could
/// deadlock against a server whose own output pipe is full): the reader counts the answers it
/// has checked and wakes the writer once it has taken those read together; the writer sends
/// one more request per answer until `dur` is over; the reader then reads what is still owed.
/// A counter and a wake-up instead of a channel message per answer, and one timer for the
/// whole run instead of one per read: on two cores the load generator's CPU is taken from
/// the mux being measured.
async fn throughput(conns: Vec<Conn>, depth: usize, dur: Duration) -> f64 {
    throughput_counted(conns, depth, dur).await.0
}

/// [`throughput`], with the number of answers checked.
async fn throughput_counted(conns: Vec<Conn>, depth: usize, dur: Duration) -> (f64, u64) {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    /// Answers read together after which the writer takes its turn. Refilling only once a
    /// read's answers were all taken cut direct stdio's rate with 512 in flight by 7–10 %
    /// (267 k against 289–297 k req/s with 32, 64 or 128 here), since the server then waited
    /// for the whole window to come back; the old generator (a channel message per answer)
    /// reached 270–297 k.
    const REFILL_EVERY: u64 = 64;
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(dur).await;
            stop.store(true, Relaxed);
        })
    };
    let mut tasks = Vec::new();
    for (client, conn) in conns.into_iter().enumerate() {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let Conn {
                mut w,
                mut r,
                _child,
                modern,
            } = conn;
            // The task's two halves run on one thread: the counters are never contended.
            let (answered, sent) = (AtomicU64::new(0), AtomicU64::new(0));
            let (wake, finished) = (tokio::sync::Notify::new(), AtomicBool::new(false));
            let writer = async {
                let mut out = String::new();
                let mut next = 0u64;
                loop {
                    let owed = (answered.load(Relaxed) + depth as u64).saturating_sub(next);
                    if owed > 0 {
                        out.clear();
                        for _ in 0..owed {
                            write_echo(&mut out, client, next, 0, 0, modern);
                            out.push('\n');
                            next += 1;
                        }
                        w.write_all(out.as_bytes()).await.unwrap();
                        w.flush().await.unwrap();
                        sent.store(next, Relaxed);
                    }
                    if stop.load(Relaxed) {
                        finished.store(true, Relaxed);
                        wake.notify_one();
                        return;
                    }
                    wake.notified().await;
                }
            };
            let reader = async {
                let r = r.get_mut();
                let mut line = String::new();
                let mut seq = 0u64;
                loop {
                    if finished.load(Relaxed) && seq == sent.load(Relaxed) {
                        return seq;
                    }
                    line.clear();
                    let n = r.read_line(&mut line).await.unwrap();
                    assert!(n > 0, "connection closed with requests unanswered");
                    // The server answers each connection's echoes in order.
                    check(line.trim_end_matches('\n'), client, seq, 0, 0, modern);
                    seq += 1;
                    answered.store(seq, Relaxed);
                    if r.buffer().is_empty() {
                        wake.notify_one();
                    } else if seq.is_multiple_of(REFILL_EVERY) {
                        // A long run of answers read at once (direct stdio, 512 in flight):
                        // the writer refills part way through it, so that the server is not
                        // left idle waiting for the whole window.
                        wake.notify_one();
                        tokio::task::yield_now().await;
                    }
                }
            };
            let ((), answers) = tokio::join!(writer, reader);
            answers
        }));
    }
    let start = Instant::now();
    let answers = tokio::time::timeout(dur + Duration::from_secs(60), async {
        let mut answers = 0;
        for t in tasks {
            answers += t.await.unwrap();
        }
        answers
    })
    .await
    .expect("requests unanswered 60 s after the end of the run: one was lost");
    timer.abort();
    (answers as f64 / start.elapsed().as_secs_f64(), answers)
}

async fn open_many(kind: Path3, bins: &Bins, socket: &Path, n: usize) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::open(kind, bins, socket).await);
    }
    conns
}

/// Latency of every path, and of the null relay for reference, one request in flight; `pin`
/// runs everything on one CPU. Each of `rounds` rounds starts a daemon and every connection
/// afresh and the rounds are compared by medians: where the scheduler puts the processes
/// decides the round trip (on a virtual machine a wake-up on another vCPU can cost tens of
/// microseconds, [`pipe_round_trip`]), and one placement, kept for a whole round, is a coin
/// toss that direct stdio takes too.
async fn latencies(
    bins: &Bins,
    n: usize,
    pin: Option<usize>,
    rounds: usize,
) -> serde_json::Map<String, Value> {
    let kinds = [
        Path3::Direct,
        Path3::Mux,
        Path3::Proxy,
        Path3::ProxyPair,
        Path3::Relay,
    ];
    let mut got: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        let (daemon, _) = Daemon::start_pinned(bins, 1, false, pin).await;
        let socket = daemon.socket(0);
        for (kind, got) in kinds.iter().zip(&mut got) {
            let mut c = Conn::open_pinned(*kind, bins, &socket, pin).await;
            let (p50, p90, p99, mean) = latency(&mut c, n, 0, 0).await;
            eprintln!(
                "latency {:6}{} round {}: p50 {p50:7.1} µs  p90 {p90:7.1}  p99 {p99:7.1}  mean {mean:7.1}",
                kind.name(),
                if pin.is_some() { " (one core)" } else { "" },
                round + 1,
            );
            got.push((p50, p90, p99, mean));
        }
        drop(daemon);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut lat = serde_json::Map::new();
    for (kind, got) in kinds.iter().zip(got) {
        let pick = |f: fn(&(f64, f64, f64, f64)) -> f64| median(got.iter().map(f).collect());
        lat.insert(
            kind.name().into(),
            json!({
                "p50_us": pick(|r| r.0),
                "p90_us": pick(|r| r.1),
                "p99_us": pick(|r| r.2),
                "mean_us": pick(|r| r.3),
                "rounds_p50_us": got.iter().map(|r| r.0).collect::<Vec<_>>(),
            }),
        );
    }
    lat
}

/// Medians of each column of `rows` (one row per round).
fn medians<const N: usize>(rows: &[[f64; N]]) -> [f64; N] {
    std::array::from_fn(|i| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    })
}

/// A server shared per client (`share = "client"`): the time from connecting to the first
/// answer, the child's start included (the daemon starts one child per client), against direct
/// stdio starting the same server, and through the proxy as a host runs it; then the daemon's
/// RSS with 10 such servers × 3 clients (30 children), beside 10 global servers with the same
/// 30 clients.
async fn sharing(bins: &Bins, quick: bool) -> Value {
    let per_client = Extra {
        server: "share = \"client\"\nmax_instances = 64\n".into(),
        ..Extra::default()
    };
    let (daemon, _) = Daemon::start_with(bins, 1, true, None, &per_client).await;
    let socket = daemon.socket(0);
    let kinds = [Path3::Direct, Path3::Mux, Path3::Proxy];
    let mut got = Vec::new();
    for _ in 0..if quick { 5 } else { 30 } {
        let mut row = [0.0; 3];
        for (kind, ms) in kinds.iter().zip(&mut row) {
            let start = Instant::now();
            let mut c = Conn::open(*kind, bins, &socket).await;
            one_request(&mut c, 0, 0, 0).await;
            *ms = start.elapsed().as_secs_f64() * 1e3;
        }
        got.push(row);
    }
    let [direct, mux, proxy] = medians(&got);
    eprintln!(
        "share = client, connect to first answer (medians of {}): direct {direct:.2} ms, mux {mux:.2} ms, proxy {proxy:.2} ms",
        got.len()
    );
    drop(daemon);

    // 10 servers × 3 clients each: per client, 30 children; global, 10.
    let mut rss = serde_json::Map::new();
    for (name, extra) in [("client", per_client), ("global", Extra::default())] {
        let (daemon, _) = Daemon::start_with(bins, 10, true, None, &extra).await;
        let mut clients = Vec::new();
        for i in 0..30 {
            let mut c = Conn::open(Path3::Mux, bins, &daemon.socket(i % 10)).await;
            latency(&mut c, 1, 0, 0).await;
            clients.push(c);
        }
        let kids = children(daemon.child.id().unwrap()).len();
        let want = if name == "client" { 30 } else { 10 };
        assert_eq!(
            kids, want,
            "share = {name}: {kids} children, {want} expected"
        );
        let kib = daemon.rss_kib();
        daemon.dump_smaps(&format!("share_{name}_10x3"));
        eprintln!(
            "RSS: daemon, 10 servers × 3 clients, share = {name} ({kids} children): {kib} KiB"
        );
        rss.insert(name.into(), json!(kib));
        drop((clients, daemon));
    }
    json!({
        "first_answer_ms": {"direct": direct, "mux": mux, "proxy": proxy, "rounds": got},
        "daemon_rss_kib_10x3": rss,
    })
}

/// With `BENCH_PERF=1`, `perf stat` counting the daemon's syscalls by kind and its context
/// switches during one throughput round, so that two rounds compare per answer (answers per
/// `read` and per `write` show how well each batches), not only per CPU time.
fn perf_start(pid: u32) -> Option<std::process::Child> {
    std::env::var_os("BENCH_PERF")?;
    let events = [
        "raw_syscalls:sys_enter",
        "syscalls:sys_enter_read",
        "syscalls:sys_enter_recvmsg",
        "syscalls:sys_enter_recvfrom",
        "syscalls:sys_enter_write",
        "syscalls:sys_enter_writev",
        "syscalls:sys_enter_epoll_wait",
        "context-switches",
        "task-clock",
    ];
    std::process::Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            &events.join(","),
            "-p",
            &pid.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()
}

/// Stops [`perf_start`]'s `perf` and prints its counts per answer (`answers`, about).
fn perf_stop(perf: Option<std::process::Child>, kind: &str, answers: f64) {
    let Some(perf) = perf else { return };
    let _ = std::process::Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    let out = perf.wait_with_output().expect("perf ends");
    let mut row = String::new();
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        let f: Vec<&str> = l.split(',').collect();
        if let (Some(n), Some(name)) = (f.first().and_then(|n| n.parse::<f64>().ok()), f.get(2)) {
            row.push_str(&format!(" {name} {:.3}", n / answers));
        }
    }
    eprintln!("perf per answer, {kind}:{row}");
}

/// `n` 2026-07-28 clients on `socket`.
async fn open_modern_many(socket: &Path, n: usize) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::open_modern(socket).await);
    }
    conns
}

/// Both protocol eras against one handshake-era echo server through the mux socket: a
/// handshake client and a 2026-07-28 client (the mux checks and strips each request's envelope
/// and adds `resultType` to each answer) taken in turn, one request in flight, then 64 clients
/// × 8 in flight of each era in rotating order.
async fn eras(bins: &Bins, quick: bool, n: usize, dur: Duration) -> Value {
    let rounds = if quick { 1 } else { 3 };
    let (daemon, _) = Daemon::start(bins, 1, false).await;
    let socket = daemon.socket(0);
    let mut lat = Vec::new();
    for round in 0..rounds {
        let mut pair = vec![
            Conn::open(Path3::Mux, bins, &socket).await,
            Conn::open_modern(&socket).await,
        ];
        let [(hp50, _, hp99, _), (mp50, _, mp99, _)] =
            latency_interleaved(&mut pair, n, 0, 0).await[..]
        else {
            unreachable!()
        };
        eprintln!(
            "eras latency round {}: handshake p50 {hp50:.1} µs p99 {hp99:.1}, 2026-07-28 p50 {mp50:.1} µs p99 {mp99:.1} ({:.2}×)",
            round + 1,
            mp50 / hp50
        );
        lat.push([hp50, mp50, hp99, mp99]);
    }
    let daemon_pid = daemon.child.id().expect("the daemon runs");
    let [server] = children(daemon_pid)[..] else {
        panic!("the daemon does not run exactly one server")
    };
    // Per round: rate, then the daemon's and the generator's CPU per answer, of each era.
    let mut tp = Vec::new();
    for round in 0..rounds {
        let mut row = [0.0; 6];
        for k in 0..2 {
            let modern = (round + k) % 2 == 1;
            let conns = if modern {
                open_modern_many(&socket, 64).await
            } else {
                open_many(Path3::Mux, bins, &socket, 64).await
            };
            let perf = perf_start(daemon_pid);
            let (rate, cpu) = throughput_spent(conns, 8, dur, server, Some(daemon_pid)).await;
            perf_stop(
                perf,
                if modern { "modern" } else { "handshake" },
                rate * dur.as_secs_f64(),
            );
            let i = usize::from(modern);
            (row[i], row[2 + i], row[4 + i]) = (rate, cpu.daemon_us, cpu.generator_us);
        }
        eprintln!(
            "eras throughput round {}: handshake 64 × 8 {:.0} req/s, 2026-07-28 {:.0} ({:.2}×); daemon CPU per answer {:.2} / {:.2} µs, generator {:.2} / {:.2} µs",
            round + 1,
            row[0],
            row[1],
            row[1] / row[0],
            row[2],
            row[3],
            row[4],
            row[5]
        );
        tp.push(row);
    }
    drop(daemon);
    let [hp50, mp50, hp99, mp99] = medians(&lat);
    let [htp, mtp, hd, md, hg, mg] = medians(&tp);
    json!({
        "latency_us": {"handshake_p50": hp50, "modern_p50": mp50, "handshake_p99": hp99, "modern_p99": mp99, "rounds": lat},
        "throughput_64": {"handshake": htp, "modern": mtp, "rounds": tp},
        "cpu_per_answer_us": {"daemon_handshake": hd, "daemon_modern": md, "generator_handshake": hg, "generator_modern": mg},
        "list_cache": list_cache(bins, 8, if quick { 10 } else { 50 }).await,
    })
}

/// The child round trips the shared list cache saves: `clients` 2026-07-28 clients each list
/// the tools `times` times, one request at a time, from a modern server that marks its list
/// public (`ttlMs` 60 s), then as many handshake-era clients as many times (which the cache
/// does not serve). The child's own count of `tools/list` requests answered gives the round
/// trips of each; the daemon's `cache_hits` (status) must account for every modern request the
/// child did not see.
async fn list_cache(bins: &Bins, clients: usize, times: usize) -> Value {
    use rmcp_mux::daemon::control::{self, Request};
    let extra = Extra {
        server: "era = \"modern\"\n".into(),
        args: r#"["--era", "modern"]"#,
        ..Extra::default()
    };
    let (daemon, _) = Daemon::start_with(bins, 1, false, None, &extra).await;
    let socket = daemon.socket(0);
    let mut modern = open_modern_many(&socket, clients).await;
    let mut handshake = open_many(Path3::Mux, bins, &socket, clients).await;
    let before = child_lists(&mut modern[0], 0).await;
    list_tools(&mut modern, times).await;
    let after_modern = child_lists(&mut modern[0], 1).await;
    list_tools(&mut handshake, times).await;
    let after_handshake = child_lists(&mut modern[0], 2).await;
    let status = control::request(&daemon.dir.path().join("control.sock"), &Request::Status)
        .await
        .expect("the daemon's status")
        .status
        .expect("a status");
    let hits = status.servers[0].cache_hits;
    let requests = (clients * times) as u64;
    let (with, without) = (after_modern - before, after_handshake - after_modern);
    assert_eq!(
        with + hits,
        requests,
        "every modern list is either a child round trip or a cache hit"
    );
    eprintln!(
        "list cache: {clients} clients × {times} tools/list: {with} child round trips with the cache ({hits} cache hits), {without} without"
    );
    drop((modern, handshake, daemon));
    json!({"clients": clients, "times": times, "requests": requests, "child_round_trips_cached": with, "child_round_trips_uncached": without, "cache_hits": hits})
}

/// The fake server's count of `tools/list` requests it answered, asked through the modern
/// client `conn` (a tool call: never cached).
async fn child_lists(conn: &mut Conn, n: usize) -> u64 {
    let meta = ENVELOPE.trim_start_matches(',');
    conn.send(&format!(
        r#"{{"jsonrpc":"2.0","id":"stats-{n}","method":"tools/call","params":{{"name":"stats","arguments":{{}},{meta}}}}}"#
    ))
    .await;
    conn.w.flush().await.unwrap();
    let answer: Value = serde_json::from_str(&conn.recv().await).unwrap();
    answer["result"]["structuredContent"]["tools_list"]
        .as_u64()
        .unwrap_or_else(|| panic!("no stats: {answer}"))
}

/// Each of `conns` lists the tools `times` times, one request in flight at a time, each
/// answer checked to be a list under its id.
async fn list_tools(conns: &mut [Conn], times: usize) {
    for round in 0..times {
        for conn in conns.iter_mut() {
            let params = if conn.modern {
                format!(r#","params":{{{}}}"#, ENVELOPE.trim_start_matches(','))
            } else {
                String::new()
            };
            conn.send(&format!(
                r#"{{"jsonrpc":"2.0","id":{round},"method":"tools/list"{params}}}"#
            ))
            .await;
            conn.w.flush().await.unwrap();
            let answer = conn.recv().await;
            assert!(
                answer.contains(r#""tools":[{"#) && answer.contains(&format!(r#""id":{round},"#)),
                "not the tool list of request {round}: {answer}"
            );
        }
    }
}

/// One HTTP session of the Streamable HTTP front, on one keep-alive HTTP/1.1 connection: a
/// plain client that writes each POST and reads its answer (JSON, or an SSE stream in chunks),
/// so that the load generator costs little beside the daemon.
struct Http {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    /// The request head up to the body's length: path, host, token, accept, session.
    head: String,
    out: Vec<u8>,
    body: Vec<u8>,
}

impl Http {
    /// Opens a session of server `name`: `initialize` (its answer names the session), then
    /// `notifications/initialized`.
    async fn open(port: u16, token: &str, name: &str) -> Http {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the HTTP front");
        s.set_nodelay(true).unwrap();
        let (r, w) = s.into_split();
        let mut h = Http {
            r: BufReader::with_capacity(1 << 16, r),
            w,
            head: format!(
                "POST /{name}/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            ),
            out: Vec::new(),
            body: Vec::new(),
        };
        let init = json!({"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}).to_string();
        let session = h
            .post(&init)
            .await
            .expect("initialize answered with a session");
        let answer = h.answer().to_owned();
        assert!(answer.contains("\"result\""), "initialize failed: {answer}");
        h.head += &format!("Mcp-Session-Id: {session}\r\n");
        h.post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        h
    }

    /// POSTs `msg` and reads the whole response into `self.body`; the session id when the
    /// response names one.
    async fn post(&mut self, msg: &str) -> Option<String> {
        self.out.clear();
        self.out.extend_from_slice(self.head.as_bytes());
        self.out
            .extend_from_slice(format!("Content-Length: {}\r\n\r\n", msg.len()).as_bytes());
        self.out.extend_from_slice(msg.as_bytes());
        self.w.write_all(&self.out).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.response())
            .await
            .expect("no HTTP answer within 60 s")
    }

    async fn response(&mut self) -> Option<String> {
        let mut line = String::new();
        self.r.read_line(&mut line).await.unwrap();
        assert!(
            line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.1 202"),
            "HTTP front answered {line:?}"
        );
        let (mut length, mut chunked, mut session) = (0usize, false, None);
        loop {
            line.clear();
            self.r.read_line(&mut line).await.unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("a header");
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().unwrap();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.eq_ignore_ascii_case("chunked");
            } else if k.eq_ignore_ascii_case("mcp-session-id") {
                session = Some(v.to_owned());
            }
        }
        self.body.clear();
        if !chunked {
            self.body.resize(length, 0);
            self.r.read_exact(&mut self.body).await.unwrap();
            return session;
        }
        loop {
            line.clear();
            self.r.read_line(&mut line).await.unwrap();
            let size = line.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).expect("a chunk size");
            if size == 0 {
                line.clear();
                self.r.read_line(&mut line).await.unwrap(); // the empty trailer
                return session;
            }
            let at = self.body.len();
            self.body.resize(at + size + 2, 0);
            self.r.read_exact(&mut self.body[at..]).await.unwrap();
            self.body.truncate(at + size);
        }
    }

    /// The JSON-RPC message of the last response: the body itself, or the SSE stream's last
    /// `data:` line holding one.
    fn answer(&self) -> &str {
        let text = std::str::from_utf8(&self.body).expect("UTF-8");
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: ").filter(|d| d.starts_with('{')))
            .unwrap_or(text)
    }

    /// One echo request (`client`, `seq`) and its checked answer: microseconds.
    async fn request(&mut self, client: usize, seq: u64) -> f64 {
        let req = echo(client, seq, 0, 0, false);
        let start = Instant::now();
        self.post(&req).await;
        let took = start.elapsed().as_secs_f64() * 1e6;
        check(self.answer(), client, seq, 0, 0, false);
        took
    }
}

/// `sessions` HTTP sessions with one request in flight each for `dur`: answers per second.
async fn http_throughput(sessions: Vec<Http>, dur: Duration) -> f64 {
    use std::sync::atomic::AtomicBool;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(client, mut h)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(Relaxed) {
                    h.request(client, seq).await;
                    seq += 1;
                }
                seq
            })
        })
        .collect();
    tokio::time::sleep(dur).await;
    stop.store(true, Relaxed);
    let mut answers = 0;
    for t in tasks {
        answers += tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("an HTTP request unanswered 60 s after the end of the run")
            .unwrap();
    }
    answers as f64 / start.elapsed().as_secs_f64()
}

/// A TCP port free on loopback now, for the HTTP front.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The Streamable HTTP front (`[daemon] http`): latency p50/p99 of a session against the proxy
/// path and direct stdio, taken in turn in the same rounds; throughput of 64 sessions with one
/// request in flight each against 64 proxies the same way; the daemon's RSS per open session.
async fn http_front(bins: &Bins, quick: bool, n: usize, dur: Duration) -> Value {
    let port = free_port();
    let extra = Extra {
        daemon: format!("http = \"127.0.0.1:{port}\"\n"),
        state: true,
        ..Extra::default()
    };
    let (daemon, _) = Daemon::start_with(bins, 1, false, None, &extra).await;
    let socket = daemon.socket(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the HTTP front never came up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let token_file = daemon.dir.path().join("state/rmcp-mux/http-token");
    let token = std::fs::read_to_string(&token_file).expect("the token file");
    let token = token.trim();

    let rounds = if quick { 1 } else { 3 };
    let mut lat = Vec::new();
    for round in 0..rounds {
        let mut conns = [
            Conn::open(Path3::Direct, bins, &socket).await,
            Conn::open(Path3::Proxy, bins, &socket).await,
        ];
        let mut http = Http::open(port, token, "s0").await;
        let mut samples: [Vec<f64>; 3] = std::array::from_fn(|_| Vec::with_capacity(n));
        let warm = (n as u64 / 10).clamp(1, 100);
        for seq in 0..(n as u64 + warm) {
            let mut took = [0.0; 3];
            for (conn, t) in conns.iter_mut().zip(&mut took) {
                *t = one_request(conn, seq, 0, 0).await;
            }
            took[2] = http.request(0, seq).await;
            if seq >= warm {
                for (s, t) in samples.iter_mut().zip(took) {
                    s.push(t);
                }
            }
        }
        let [d, p, h] = [0, 1, 2].map(|i| summary(std::mem::take(&mut samples[i])));
        eprintln!(
            "http latency round {}: direct p50 {:.1} µs p99 {:.1}, proxy p50 {:.1} p99 {:.1}, http p50 {:.1} p99 {:.1}",
            round + 1,
            d.0,
            d.2,
            p.0,
            p.2,
            h.0,
            h.2
        );
        lat.push([d.0, d.2, p.0, p.2, h.0, h.2]);
    }

    let mut tp = Vec::new();
    for round in 0..rounds {
        let mut row = [0.0; 2];
        for k in 0..2 {
            let i = (round + k) % 2;
            row[i] = if i == 0 {
                throughput(open_many(Path3::Proxy, bins, &socket, 64).await, 1, dur).await
            } else {
                let mut sessions = Vec::with_capacity(64);
                for _ in 0..64 {
                    sessions.push(Http::open(port, token, "s0").await);
                }
                http_throughput(sessions, dur).await
            };
        }
        eprintln!(
            "http throughput round {}: 64 proxies × 1 {:.0} req/s, 64 sessions × 1 {:.0} ({:.2}×)",
            round + 1,
            row[0],
            row[1],
            row[1] / row[0]
        );
        tp.push(row);
    }

    // Memory per open session: 100 sessions, each answered once, against one.
    let mut warm = Http::open(port, token, "s0").await;
    warm.request(0, 0).await;
    let before = daemon.rss_kib();
    let mut sessions = Vec::new();
    for _ in 0..100 {
        let mut h = Http::open(port, token, "s0").await;
        h.request(0, 0).await;
        sessions.push(h);
    }
    let after = daemon.rss_kib();
    daemon.dump_smaps("http_100_sessions");
    let per_session = (after.saturating_sub(before)) as f64 / 100.0;
    eprintln!("RSS: daemon {before} KiB with one HTTP session, {after} KiB with 101: {per_session:.1} KiB per session");
    drop((sessions, warm, daemon));

    let [dp50, dp99, pp50, pp99, hp50, hp99] = medians(&lat);
    let [ptp, htp] = medians(&tp);
    json!({
        "latency_us": {"direct_p50": dp50, "direct_p99": dp99, "proxy_p50": pp50, "proxy_p99": pp99, "http_p50": hp50, "http_p99": hp99, "rounds": lat},
        "throughput_64x1": {"proxy": ptp, "http": htp, "rounds": tp},
        "rss_kib": {"one_session": before, "with_101_sessions": after, "per_session": per_session},
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == RELAY_ARG) {
        return relay(&args[2]);
    }
    if args.get(1).is_some_and(|a| a == BYTE_ECHO_ARG) {
        return byte_echo();
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    // BENCH_PHASES=latency,big,throughput,many,rss,share,eras,http runs only some phases.
    let phases = std::env::var("BENCH_PHASES").unwrap_or_default();
    let run = |p: &str| phases.is_empty() || phases.split(',').any(|x| x == p);
    let bins = bins();
    let mut results = serde_json::Map::new();
    let lat_n = if quick { 300 } else { 3000 };
    let dur = Duration::from_millis(if quick { 300 } else { 1500 });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<f64> = load
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    results.insert("load_average_at_start".into(), json!(load));
    eprintln!("load average at start: {load:?}");

    // The machine's own price of a wake-up on one CPU and across two (no mux involved).
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        let (same, across) = (pipe_round_trip(0, 0), pipe_round_trip(0, 1));
        eprintln!("pipe round trip: one CPU {same:.1} µs, two CPUs {across:.1} µs");
        results.insert(
            "pipe_round_trip_us".into(),
            json!({"one_cpu": same, "two_cpus": across}),
        );
    }

    // Start-up: 10 lazy servers, from exec to every socket accepting.
    let mut starts = vec![];
    for _ in 0..if quick { 3 } else { 7 } {
        let (d, took) = Daemon::start(&bins, 10, true).await;
        starts.push(took.as_secs_f64() * 1e3);
        drop(d);
    }
    starts.sort_by(f64::total_cmp);
    let start_ms = starts[starts.len() / 2];
    results.insert("start_10_servers_ms".into(), json!(start_ms));
    eprintln!("start-up (10 servers, median): {start_ms:.2} ms");

    if run("latency") {
        // Latency, one request in flight: as scheduled, then everything pinned to one CPU.
        results.insert(
            "latency".into(),
            Value::Object(latencies(&bins, lat_n, None, if quick { 1 } else { 3 }).await),
        );
        pin_self("0");
        let one_core = latencies(&bins, lat_n, Some(0), 1).await;
        unpin_self();
        results.insert("latency_one_core".into(), Value::Object(one_core));
    }

    let (daemon, _) = Daemon::start(&bins, 1, false).await;
    let socket = daemon.socket(0);

    if run("big") {
        // A 1 MiB result, and a 1 MiB request (echoed back), one request at a time: the mux
        // and a direct connection in turn, then the proxy and another direct connection in
        // turn, so that each pair sees the same load and each process the same pauses; then
        // the null relay the same way, for what any process in between costs here.
        let reps = if quick { 10 } else { 100 };
        for (key, pad, body) in [("one_mib", 1 << 20, 0), ("one_mib_request", 0, 1 << 20)] {
            let mut big = serde_json::Map::new();
            for kind in [Path3::Mux, Path3::Proxy, Path3::Relay] {
                let mut pair = vec![
                    Conn::open(Path3::Direct, &bins, &socket).await,
                    Conn::open(kind, &bins, &socket).await,
                ];
                let stats = latency_interleaved(&mut pair, reps, pad, body).await;
                let direct = format!("direct_with_{}", kind.name());
                for (name, (p50, _, _, mean)) in
                    [direct.as_str(), kind.name()].into_iter().zip(stats)
                {
                    eprintln!("{key} {name:17}: p50 {p50:8.1} µs  mean {mean:8.1}");
                    big.insert(name.into(), json!({"p50_us":p50,"mean_us":mean}));
                }
            }
            results.insert(key.into(), Value::Object(big));
        }
    }

    if run("throughput") {
        // Throughput. The target (64 clients × 8 in flight against one direct stdio connection
        // with 512) is measured in rounds, each path once per round in a rotating order, and
        // compared by medians: one sample of each, taken seconds apart, moved the ratio by
        // 0.6–0.8× between back-to-back runs as the machine's scheduling drifted.
        let mut tp = serde_json::Map::new();
        let depth = 8;
        let rounds = if quick { 1 } else { 5 };
        let paths = [Path3::Direct, Path3::Mux, Path3::Proxy];
        let mut samples: [Vec<f64>; 3] = Default::default();
        let mut spent: [Vec<Spent>; 3] = Default::default();
        let daemon_pid = daemon.child.id().expect("the daemon runs");
        // Its server runs once a client has been answered.
        let warm = Conn::open(Path3::Mux, &bins, &socket).await;
        let [daemon_server] = children(daemon_pid)[..] else {
            panic!("the daemon does not run exactly one server")
        };
        drop(warm);
        for round in 0..rounds {
            for k in 0..paths.len() {
                let i = (round + k) % paths.len();
                let (clients, in_flight) = match paths[i] {
                    Path3::Direct => (1, 512),
                    _ => (64, depth),
                };
                let conns = open_many(paths[i], &bins, &socket, clients).await;
                let (server, daemon) = match paths[i] {
                    Path3::Direct => (conns[0]._child.as_ref().and_then(Child::id).unwrap(), None),
                    _ => (daemon_server, Some(daemon_pid)),
                };
                let (rate, cpu) = throughput_spent(conns, in_flight, dur, server, daemon).await;
                samples[i].push(rate);
                spent[i].push(cpu);
            }
            eprintln!(
                "throughput round {}: direct 512 in flight {:9.0} req/s, mux 64 × {depth} {:9.0} ({:.2}×), proxy 64 × {depth} {:9.0} ({:.2}×)",
                round + 1,
                samples[0][round],
                samples[1][round],
                samples[1][round] / samples[0][round],
                samples[2][round],
                samples[2][round] / samples[0][round],
            );
        }
        let [direct, mux, proxy] = samples.map(|mut v| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v)
        });
        let base = direct.0;
        eprintln!(
            "throughput medians of {rounds}: direct {base:9.0} req/s, mux {:9.0} ({:.2}×), proxy {:9.0} ({:.2}×)",
            mux.0,
            mux.0 / base,
            proxy.0,
            proxy.0 / base
        );
        tp.insert("direct_512_in_flight".into(), json!(base));
        tp.insert("mux_64".into(), json!(mux.0));
        tp.insert("proxy_64".into(), json!(proxy.0));
        tp.insert("direct_64".into(), json!(base));
        tp.insert(
            "rounds_64".into(),
            json!({"direct_512": direct.1, "mux": mux.1, "proxy": proxy.1}),
        );
        // Where the CPU went (medians over the rounds): what bounds the ratio on this machine.
        let mut cpu = serde_json::Map::new();
        for (path, rounds) in paths.iter().zip(&spent) {
            let median = |field: fn(&Spent) -> f64| {
                let mut v: Vec<f64> = rounds.iter().map(field).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let m = Spent {
                server_us: median(|s| s.server_us),
                daemon_us: median(|s| s.daemon_us),
                generator_us: median(|s| s.generator_us),
                idle: median(|s| s.idle),
                steal: median(|s| s.steal),
            };
            eprintln!(
                "cpu per answer, {:6}: server {:.2} µs, daemon {:.2} µs, generator {:.2} µs; machine idle {:.0} %, stolen {:.0} %",
                path.name(),
                m.server_us,
                m.daemon_us,
                m.generator_us,
                m.idle * 100.0,
                m.steal * 100.0
            );
            cpu.insert(
                path.name().into(),
                json!({"server_us": m.server_us, "daemon_us": m.daemon_us, "generator_us": m.generator_us, "idle": m.idle, "steal": m.steal}),
            );
        }
        tp.insert("cpu_64".into(), Value::Object(cpu));
        // BENCH_CLIENTS=64 (a list) measures only those client counts (for profiling one).
        let only = std::env::var("BENCH_CLIENTS").unwrap_or_default();
        let counts = [1usize, 8, 512]
            .into_iter()
            .filter(|n| only.is_empty() || only.split(',').any(|o| o == n.to_string()));
        for clients in counts {
            for kind in [Path3::Mux, Path3::Proxy] {
                if kind == Path3::Proxy && clients > 64 {
                    continue; // 512 proxy processes measure process spawning, not the mux
                }
                let conns = open_many(kind, &bins, &socket, clients).await;
                let rate = throughput(conns, depth, dur).await;
                eprintln!(
                    "throughput {:6} {clients:4} clients × {depth}: {rate:9.0} req/s ({:.2}× direct)",
                    kind.name(),
                    rate / base
                );
                tp.insert(format!("{}_{clients}", kind.name()), json!(rate));
            }
            let direct = open_many(Path3::Direct, &bins, &socket, 1).await;
            let rate = throughput(direct, clients * depth, dur).await;
            eprintln!(
                "throughput direct  1 conn × {:4}: {rate:9.0} req/s",
                clients * depth
            );
            tp.insert(format!("direct_{clients}"), json!(rate));
        }
        results.insert("throughput".into(), Value::Object(tp));
    }

    if run("many") {
        // 1,000 clients, 4 in flight each: all served (throughput() fails on a lost answer).
        let many = 1000;
        let start = Instant::now();
        let conns = open_many(Path3::Mux, &bins, &socket, many).await;
        let connect_ms = start.elapsed().as_secs_f64() * 1e3;
        let rss_many = daemon.rss_kib();
        daemon.dump_smaps("many");
        let rate = throughput(conns, 4, dur).await;
        eprintln!("{many} clients: connect+initialize {connect_ms:.0} ms, {rate:.0} req/s, daemon RSS {rss_many} KiB");
        results.insert("many_clients".into(), json!({"clients":many,"connect_init_ms":connect_ms,"req_per_s":rate,"daemon_rss_kib":rss_many}));
    }
    drop(daemon);

    if run("rss") {
        // Memory: 10 idle servers, then 100 connected clients; one idle proxy.
        let (daemon, _) = Daemon::start(&bins, 10, false).await;
        let mut warm = Conn::open(Path3::Mux, &bins, &daemon.socket(0)).await;
        latency(&mut warm, 10, 0, 0).await;
        let idle = daemon.rss_kib();
        daemon.dump_smaps("idle");
        let mut clients = Vec::new();
        for i in 0..100 {
            let mut c = Conn::open(Path3::Mux, &bins, &daemon.socket(i % 10)).await;
            latency(&mut c, 1, 0, 0).await;
            clients.push(c);
        }
        let with_100 = daemon.rss_kib();
        daemon.dump_smaps("with_100");
        let mut proxy = Conn::open(Path3::Proxy, &bins, &daemon.socket(0)).await;
        latency(&mut proxy, 10, 0, 0).await;
        let proxy_pid = proxy._child.as_ref().and_then(|c| c.id());
        let proxy_rss = proxy_pid.map(rss_kib).unwrap_or(0);
        let proxy_pss = proxy_pid.map(pss_kib).unwrap_or(0);
        eprintln!("RSS: daemon idle (10 servers) {idle} KiB, with 100 clients {with_100} KiB, proxy {proxy_rss} KiB");
        results.insert(
            "rss_kib".into(),
            json!({"daemon_10_idle":idle,"daemon_10_with_100_clients":with_100,"proxy":proxy_rss,"proxy_pss":proxy_pss}),
        );
        drop((clients, proxy, warm, daemon));
    }

    // The rows of the per-client share, the 2026-07-28 era and the HTTP front (each with daemons
    // of its own, after the global rows, which they leave as they were).
    if run("share") {
        results.insert("share".into(), sharing(&bins, quick).await);
    }
    if run("eras") {
        results.insert("eras".into(), eras(&bins, quick, lat_n, dur).await);
    }
    if run("http") {
        results.insert("http".into(), http_front(&bins, quick, lat_n, dur).await);
    }

    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench"));
    std::fs::create_dir_all(&out).unwrap();
    let results = Value::Object(results);
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    let table = report::table(&results);
    std::fs::write(out.join("results.md"), &table).unwrap();
    report::plot(&results, &out.join("bench.svg"));
    println!("{table}");
    eprintln!(
        "wrote results.json, results.md and bench.svg to {}",
        out.display()
    );
    if !report::all_met(&results) {
        eprintln!("some DESIGN.md targets are not met (see the table)");
    }
}

#[path = "support/report.rs"]
mod report;
