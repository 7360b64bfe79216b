#!/usr/bin/env python3
"""A soak of rmcp-mux under seeded chaos (run by tools/soak.sh, which builds the binaries).

Runs the daemon in the foreground on a config of fake servers (tests/support/fake_server.rs) in
a fresh temporary folder, with many clients at once, some straight on the server sockets and
some through rmcp-mux-proxy, each keeping a few `tools/call` requests in flight. Meanwhile it
kills and crashes children, drops clients, kills proxies, reloads configs that change, add and
remove servers, and runs `rmcp-mux restart NAME`, all from one seed.

Checks every request: exactly one answer, the right one (the echo of its own text), or an error
the mux documents (-32603 with `data.reason` upstream_exited, upstream_timeout or
server_unavailable); requests a client gave up itself (dropped, proxy killed) are not counted.
A reload that changes a server restarts its child under its clients, and one that removes it
answers its clients until they leave, so a connection ended by a reload with requests owed is
a loss like any other.
At the end: nothing pending and no client left in the daemon's status, the daemon's RSS and
open descriptors flat, and after it stops no process of the run left (orphans), no socket left
in its folder, exit status 0. Prints its figures and a last line `N passed, M failed`; exits 1
on any failure. Traffic stays on Unix sockets and pipes.
"""

import argparse
import json
import os
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

DOCUMENTED = {"upstream_exited", "upstream_timeout", "server_unavailable"}
STABLE = ["alpha", "beta"]  # always configured: proxies and direct clients
EXTRA = "gamma"  # added and removed by reloads: direct clients only
ANSWER_WAIT = 30.0  # longer than request_timeout_ms below, so a lost answer is a failure
TEARDOWN_WINDOW = 5.0  # a reload takes effect within this (the watcher or `rmcp-mux reload`)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def fail(self, what):
        with self.lock:
            self.counts["failed"] = self.counts.get("failed", 0) + 1
            if len(self.failures) < 40:
                self.failures.append(what)

    def get(self, key):
        with self.lock:
            return self.counts.get(key, 0)


class Conn:
    """One client: a socket, or a proxy process's pipes. Lines in, lines out."""

    def __init__(self, kind, path, proxy_bin):
        self.kind = kind
        self.buf = b""
        self.proc = None
        if kind == "socket":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(5)
            self.sock.connect(path)
            self.sock.setblocking(False)
            self.rfd = self.sock.fileno()
        else:
            self.proc = subprocess.Popen(
                [proxy_bin, "--socket", path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
            self.rfd = self.proc.stdout.fileno()
            os.set_blocking(self.rfd, False)

    def send(self, obj):
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        try:
            if self.kind == "socket":
                self.sock.setblocking(True)
                self.sock.sendall(data)
                self.sock.setblocking(False)
            else:
                self.proc.stdin.write(data)
            return True
        except OSError:
            return False

    def recv(self, deadline):
        """The next line as JSON, None at EOF, or "timeout"."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1 :]
                if not line.strip():
                    continue
                try:
                    return json.loads(line)
                except ValueError:
                    return {"unparsable": line[:200].decode("utf-8", "replace")}
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            r, _, _ = select.select([self.rfd], [], [], min(left, 0.5))
            if not r:
                continue
            try:
                chunk = os.read(self.rfd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def close(self, hard=False):
        if self.kind == "socket":
            try:
                if hard:
                    self.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                self.sock.close()
            except OSError:
                pass
        else:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            if hard:
                try:
                    self.proc.kill()
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=70)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()


class Worker(threading.Thread):
    def __init__(self, wid, soak, kind, server, seed):
        super().__init__(daemon=True)
        self.wid = wid
        self.soak = soak
        self.kind = kind
        self.server = server
        self.rng = random.Random(seed)
        self.drop = threading.Event()  # chaos: drop the connection now
        self.killed = threading.Event()  # chaos: its proxy was killed
        self.conn = None
        self.conn_lock = threading.Lock()
        self.n = 0

    def connect(self):
        path = self.soak.socket(self.server)
        try:
            conn = Conn(self.kind, path, self.soak.proxy_bin)
        except OSError:
            return None
        conn.send(
            {
                "jsonrpc": "2.0",
                "id": "init",
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": f"soak-{self.wid}", "version": "1"},
                },
            }
        )
        deadline = time.monotonic() + 20
        while True:
            msg = conn.recv(deadline)
            if msg is None or msg == "timeout":
                conn.close(hard=True)
                return None
            if msg.get("id") == "init":
                if "result" not in msg:
                    conn.close(hard=True)
                    return None
                break
        conn.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return conn

    def run(self):
        soak = self.soak
        while not soak.stopping.is_set():
            conn = self.connect()
            if conn is None:
                soak.stats.add("connect_retries")
                time.sleep(0.2)
                continue
            with self.conn_lock:
                self.conn = conn
            self.killed.clear()
            self.drop.clear()
            soak.stats.add(f"connections_{self.kind}")
            ok = self.session(conn)
            with self.conn_lock:
                self.conn = None
            conn.close(hard=not ok)

    def session(self, conn):
        """Requests until told to stop or the connection ends; False when ended abruptly."""
        soak = self.soak
        while not soak.stopping.is_set():
            owed = {}
            for _ in range(self.rng.randint(1, 4)):
                self.n += 1
                rid = self.n if self.n % 2 else f"r{self.n}"
                if self.rng.random() < 0.25:
                    ms = self.rng.randint(20, 400)
                    params = {"name": "slow", "arguments": {"ms": ms, "steps": 1}}
                    want = f"slept {ms}"
                else:
                    text = f"w{self.wid}-{self.n}-{self.rng.getrandbits(32):08x}"
                    params = {"name": "echo", "arguments": {"text": text}}
                    want = text
                owed[json.dumps(rid)] = want
                soak.stats.add("sent")
                if not conn.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}):
                    break
            if self.drop.is_set():
                soak.stats.add("abandoned", len(owed))
                return False
            deadline = time.monotonic() + ANSWER_WAIT
            unavailable = False
            while owed:
                msg = conn.recv(deadline)
                if msg == "timeout":
                    for rid in owed:
                        soak.stats.fail(f"lost: worker {self.wid} ({self.kind} {self.server}) id {rid}")
                    soak.stats.add("lost", len(owed))
                    return False
                if msg is None:
                    if self.killed.is_set() or self.drop.is_set():
                        soak.stats.add("abandoned", len(owed))
                    else:
                        for rid in owed:
                            soak.stats.fail(
                                f"lost at EOF: worker {self.wid} ({self.kind} {self.server}) id {rid}"
                            )
                        soak.stats.add("lost", len(owed))
                    return False
                if "unparsable" in msg:
                    soak.stats.fail(f"unparsable line to worker {self.wid}: {msg['unparsable']}")
                    continue
                if "id" not in msg or "method" in msg:
                    continue  # a notification (list_changed after a restart, ...)
                key = json.dumps(msg["id"])
                if key not in owed:
                    soak.stats.add("duplicate_or_misrouted")
                    soak.stats.fail(f"answer to an id not owed: worker {self.wid} got {json.dumps(msg)[:200]}")
                    continue
                want = owed.pop(key)
                if "result" in msg:
                    content = msg["result"].get("content") or [{}]
                    got = content[0].get("text")
                    if got == want:
                        soak.stats.add("answered")
                    else:
                        soak.stats.add("misrouted")
                        soak.stats.fail(f"wrong answer: worker {self.wid} id {key} wanted {want!r} got {got!r}")
                else:
                    err = msg.get("error") or {}
                    reason = (err.get("data") or {}).get("reason")
                    if err.get("code") == -32603 and reason in DOCUMENTED:
                        soak.stats.add(f"error_{reason}")
                        unavailable |= reason == "server_unavailable"
                    else:
                        soak.stats.add("undocumented_error")
                        soak.stats.fail(f"undocumented error: worker {self.wid} id {key}: {json.dumps(err)[:200]}")
            # A removed (or stopped) server answers at once: pause as a real client would,
            # rather than spin on it until it is added back.
            time.sleep(0.2 if unavailable else self.rng.random() * 0.02)
        return True


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.stopping = threading.Event()
        self.dir = tempfile.mkdtemp(prefix="rmcp-soak-", dir="/tmp")
        self.mux_bin = os.path.join(args.bin_dir, "rmcp-mux")
        self.proxy_bin = os.path.join(args.bin_dir, "rmcp-mux-proxy")
        self.fake_bin = os.path.join(args.bin_dir, "mcp-fake-server")
        self.config = os.path.join(self.dir, "mux.toml")
        self.env = dict(os.environ)
        self.env.update(
            {
                "HOME": self.dir,
                "XDG_STATE_HOME": os.path.join(self.dir, "state"),
                "XDG_CONFIG_HOME": os.path.join(self.dir, "config"),
                "RMCP_MUX_LOG": "info",
            }
        )
        self.generation = 0
        self.extra_on = True
        self.samples = []  # (t, rss_kib, fds)
        self.teardowns = {}  # server -> when a reload last stopped it (monotonic)
        self.daemon = None

    def torn_down_lately(self, name):
        """Whether a reload stopped this server in the last few seconds."""
        return time.monotonic() - self.teardowns.get(name, -1e9) < TEARDOWN_WINDOW

    def socket(self, name):
        return os.path.join(self.dir, "run", f"{name}.sock")

    def config_text(self, gen_of):
        d = self.dir
        out = [
            "[daemon]",
            f'control_socket = "{d}/run/control.sock"',
            f'socket_dir = "{d}/run"',
            "",
        ]
        names = STABLE + ([EXTRA] if self.extra_on else [])
        for name in names:
            out += [
                f"[servers.{name}]",
                f'cmd = "{self.fake_bin}"',
                f'args = ["--counter-file", "{d}/count-{name}"]',
                f'env = {{ SOAK_GENERATION = "{gen_of.get(name, 0)}" }}',
                "request_timeout_ms = 10000",
                "restart_backoff_ms = 50",
                "restart_backoff_max_ms = 400",
                "max_restarts = 0",
                "shutdown_grace_ms = 300",
                "",
            ]
        return "\n".join(out)

    def write_config(self, gen_of):
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config_text(gen_of))
        os.rename(tmp, self.config)

    def cli(self, *args):
        return subprocess.run(
            [self.mux_bin, *args, "--config", self.config],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def status(self):
        r = self.cli("status", "--json")
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def start_daemon(self):
        self.log = open(os.path.join(self.dir, "daemon.log"), "w")
        self.daemon = subprocess.Popen(
            [self.mux_bin, "--config", self.config],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            s = self.status()
            if s and all(v["state"] == "running" for v in s["servers"]):
                return
            time.sleep(0.05)
        raise SystemExit("the daemon did not come up; see " + self.log.name)

    def sample(self):
        pid = self.daemon.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            return None
        return rss, fds

    def chaos(self, workers, until):
        gen_of = {}
        kinds = ["kill", "crash", "drop", "proxy_kill", "reload_change", "reload_toggle", "restart"]
        while time.monotonic() < until and not self.stopping.is_set():
            time.sleep(self.rng.uniform(0.1, 0.6))
            what = self.rng.choice(kinds)
            self.stats.add(f"chaos_{what}")
            if what == "kill":
                s = self.status()
                pids = [v["pid"] for v in (s or {}).get("servers", []) if v.get("pid")]
                if pids:
                    try:
                        os.kill(self.rng.choice(pids), signal.SIGKILL)
                    except OSError:
                        pass
            elif what == "crash":
                name = self.rng.choice(STABLE)
                w = Worker(-1, self, "socket", name, self.rng.random())
                conn = w.connect()
                if conn:
                    conn.send(
                        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "crash", "arguments": {}}}
                    )
                    msg = conn.recv(time.monotonic() + ANSWER_WAIT)
                    reason = ((msg or {}).get("error") or {}).get("data", {}).get("reason") if isinstance(msg, dict) else None
                    if reason == "upstream_exited":
                        self.stats.add("crash_answered")
                    else:
                        self.stats.fail(f"a crashing request got {msg!r}")
                    conn.close()
            elif what in ("drop", "proxy_kill"):
                kind = "socket" if what == "drop" else "proxy"
                cands = [w for w in workers if w.kind == kind]
                if cands:
                    w = self.rng.choice(cands)
                    with w.conn_lock:
                        if w.conn is not None:
                            if kind == "proxy":
                                w.killed.set()
                                try:
                                    w.conn.proc.kill()
                                except OSError:
                                    pass
                            else:
                                w.drop.set()
            elif what == "reload_change":
                name = self.rng.choice(STABLE + ([EXTRA] if self.extra_on else []))
                gen_of[name] = gen_of.get(name, 0) + 1
                self.teardowns[name] = time.monotonic()
                self.write_config(gen_of)
                if self.rng.random() < 0.5:
                    self.cli("reload")
            elif what == "reload_toggle":
                self.extra_on = not self.extra_on
                self.teardowns[EXTRA] = time.monotonic()
                self.write_config(gen_of)
                if self.rng.random() < 0.5:
                    self.cli("reload")
            elif what == "restart":
                name = self.rng.choice(STABLE)
                r = self.cli("restart", name)
                if r.returncode == 0:
                    self.stats.add("restarted")
                elif self.torn_down_lately(name) and "shutting down" in r.stderr:
                    # A reload was replacing that server at the moment: refused, and said so.
                    self.stats.add("restart_refused_during_reload")
                else:
                    self.stats.fail(f"restart {name} failed: {r.stderr.strip()}")
        self.extra_on = True
        self.write_config(gen_of)
        r = self.cli("reload")
        if r.returncode != 0:
            self.stats.fail(f"the last reload failed: {r.stderr.strip()}")
        return gen_of

    def run(self):
        a = self.args
        self.write_config({})
        self.start_daemon()
        time.sleep(0.3)
        idle = self.sample()
        start = time.monotonic()
        until = start + a.seconds
        workers = []
        for i in range(a.clients):
            kind = "proxy" if i % 3 == 0 else "socket"
            names = STABLE if kind == "proxy" else STABLE + [EXTRA]
            workers.append(Worker(i, self, kind, names[i % len(names)], self.rng.random()))
        for w in workers:
            w.start()
        sampler_stop = threading.Event()

        def sampler():
            while not sampler_stop.wait(1.0):
                s = self.sample()
                if s:
                    self.samples.append((time.monotonic() - start, *s))

        st = threading.Thread(target=sampler, daemon=True)
        st.start()
        self.chaos(workers, until)
        self.stopping.set()
        for w in workers:
            w.join(timeout=ANSWER_WAIT + 80)
            if w.is_alive():
                self.stats.fail(f"worker {w.wid} did not finish")
        sampler_stop.set()
        st.join()
        elapsed = time.monotonic() - start
        passed = self.stats.get("answered") + sum(
            self.stats.get(f"error_{r}") for r in DOCUMENTED
        ) + self.stats.get("crash_answered")

        # Nothing pending, no client left (the daemon may take a moment to see them go).
        checks = []
        deadline = time.monotonic() + 15
        while True:
            s = self.status()
            busy = [v for v in (s or {"servers": [{}]})["servers"] if v.get("pending") or v.get("clients")]
            if s and not busy:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        checks.append(("nothing pending, no client left", s is not None and not busy, str(busy)[:300]))
        settled = self.sample()
        rss = [x[1] for x in self.samples]
        fds = [x[2] for x in self.samples]
        q = max(1, len(rss) // 4)
        early = statistics.median(rss[q : 2 * q]) if len(rss) >= 4 else None
        late = statistics.median(rss[-q:]) if len(rss) >= 4 else None
        rss_flat = early is None or late <= early * 1.25 + 4096
        checks.append(("daemon RSS flat", rss_flat, f"early {early} KiB, late {late} KiB"))
        fds_flat = idle is not None and settled is not None and settled[1] <= idle[1] + 2
        checks.append(("daemon descriptors back to idle", fds_flat, f"idle {idle}, after {settled}"))

        # A clean stop: exit 0, no process of the run left, no socket left.
        self.daemon.send_signal(signal.SIGTERM)
        try:
            code = self.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            code = self.daemon.wait()
        checks.append(("daemon exits 0 on SIGTERM", code == 0, f"exit {code}"))
        time.sleep(0.2)
        orphans = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == os.getpid():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
                with open(f"/proc/{p}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if self.dir in cmd and state != "Z":
                orphans.append(f"{p}: {cmd[:120]}")
        checks.append(("no orphan process", not orphans, "; ".join(orphans)))
        run = os.path.join(self.dir, "run")
        left = [n for n in os.listdir(run)] if os.path.isdir(run) else []
        checks.append(("no socket left", not left, ", ".join(left)))

        c = self.stats.counts
        print(f"soak: seed {a.seed}, {elapsed:.0f} s, {a.clients} clients ({(a.clients + 2) // 3} through the proxy), folder {self.dir}")
        print(
            f"requests: {c.get('sent', 0)} sent, {c.get('answered', 0)} answered right, "
            + ", ".join(f"{c.get('error_' + r, 0)} {r}" for r in sorted(DOCUMENTED))
            + f", {c.get('abandoned', 0)} given up by their client"
        )
        print(
            f"faults: {c.get('lost', 0)} lost, {c.get('duplicate_or_misrouted', 0)} duplicate or not owed, "
            f"{c.get('misrouted', 0)} wrong answer, {c.get('undocumented_error', 0)} undocumented errors"
        )
        print(
            "chaos: "
            + ", ".join(f"{k[6:]} {v}" for k, v in sorted(c.items()) if k.startswith("chaos_"))
            + f"; crashes answered {c.get('crash_answered', 0)}"
            + f"; restarts done {c.get('restarted', 0)}, refused during a reload {c.get('restart_refused_during_reload', 0)}"
        )
        print(
            f"connections: {c.get('connections_socket', 0)} socket, {c.get('connections_proxy', 0)} proxy, "
            f"{c.get('connect_retries', 0)} connect retries"
        )
        if rss:
            print(
                f"daemon RSS KiB: min {min(rss)}, early median {early}, late median {late}, max {max(rss)}; "
                f"fds: idle {idle[1] if idle else '?'}, min {min(fds)}, max {max(fds)}, after {settled[1] if settled else '?'}"
            )
        for name, ok, detail in checks:
            print(f"check: {name}: {'ok' if ok else 'FAILED'}" + ("" if ok else f" ({detail})"))
        failed = self.stats.get("failed") + sum(1 for _, ok, _ in checks if not ok)
        passed += sum(1 for _, ok, _ in checks if ok)
        for f in self.stats.failures:
            print(f"failure: {f}")
        if failed:
            print(f"the daemon's log: {self.log.name}")
        else:
            subprocess.run(["rm", "-rf", self.dir])
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("seconds", type=float, nargs="?", default=60)
    p.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "1")))
    p.add_argument("--clients", type=int, default=int(os.environ.get("SOAK_CLIENTS", "24")))
    p.add_argument("--bin-dir", required=True)
    sys.exit(Soak(p.parse_args()).run())


if __name__ == "__main__":
    main()
