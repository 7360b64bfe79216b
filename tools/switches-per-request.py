#!/usr/bin/env python3
"""Context switches and CPU time per request in the proxy, the daemon and the server, for a host
that sends N sequential requests through `rmcp-mux-proxy`: once with the proxy copying every
line (RMCP_MUX_PROXY_COPY=1) and once with the host's stdio handed to the daemon (the default;
"attached" says whether the daemon took it, so an older build shows as copying twice). Counts,
unlike timings, hardly depend on the machine's load. Linux only (/proc).

Usage: tools/switches-per-request.py [BIN_DIR] [N] [ROUNDS]
  BIN_DIR  where rmcp-mux, rmcp-mux-proxy and mcp-fake-server are (default target/release)
  N        requests per measurement (default 5000); ROUNDS alternating pairs (default 2)
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release")
N = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 2
TICK = os.sysconf("SC_CLK_TCK")


def switches(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


def fds(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


def measure(sock, daemon, server, copy, home):
    env = dict(os.environ, HOME=home)
    env.pop("RMCP_MUX_PROXY_COPY", None)
    if copy:
        env["RMCP_MUX_PROXY_COPY"] = "1"
    p = subprocess.Popen([f"{BIN}/rmcp-mux-proxy", "--socket", sock], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=env, bufsize=0)
    out = p.stdout

    def ask(msg):
        p.stdin.write((json.dumps(msg, separators=(",", ":")) + "\n").encode())
        return json.loads(out.readline())

    ask({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}})
    p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    ask({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    pipe = f"pipe:[{os.fstat(p.stdin.fileno()).st_ino}]"
    # The hand-off follows the ping's answer at once; a build without it never does it.
    deadline = time.time() + 2
    while not copy and pipe not in fds(daemon) and time.time() < deadline:
        time.sleep(0.01)
    attached = pipe in fds(daemon)
    call = {"jsonrpc": "2.0", "id": 0, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}}}
    for i in range(200):  # warm-up
        call["id"] = 10 + i
        ask(call)
    pids = {"proxy": p.pid, "daemon": daemon, "server": server}
    before = {k: (switches(v), cpu_ms(v)) for k, v in pids.items()}
    lat = []
    for i in range(N):
        call["id"] = 1000 + i
        t = time.perf_counter()
        ask(call)
        lat.append(time.perf_counter() - t)
    after = {k: (switches(v), cpu_ms(v)) for k, v in pids.items()}
    p.stdin.close()
    p.wait(timeout=20)
    row = {k: ((after[k][0] - before[k][0]) / N, (after[k][1] - before[k][1]) * 1000 / N)
           for k in pids}
    return attached, row, statistics.median(lat) * 1e6


def main():
    with tempfile.TemporaryDirectory() as home:
        cfg = os.path.join(home, "mux.toml")
        with open(cfg, "w") as f:
            f.write(f'[daemon]\ncontrol_socket = "{home}/run/control.sock"\nsocket_dir = "{home}/run"\n\n'
                    f'[servers.f]\ncmd = "{BIN}/mcp-fake-server"\n')
        env = dict(os.environ, HOME=home, XDG_STATE_HOME=f"{home}/state", RMCP_MUX_LOG="warn")
        d = subprocess.Popen([f"{BIN}/rmcp-mux", "--config", cfg], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        sock = f"{home}/run/f.sock"
        try:
            deadline = time.time() + 20
            while not (os.path.exists(sock) and children(d.pid)):
                assert time.time() < deadline, "the daemon did not start"
                time.sleep(0.05)
            server = children(d.pid)[0]
            print(f"load average {os.getloadavg()[0]:.2f}; {N} sequential requests each")
            print("| mode | attached | switches/req proxy, daemon, server | CPU µs/req proxy, daemon, server | p50 µs |")
            print("|---|---|---|---|---|")
            for _ in range(ROUNDS):
                for copy in (True, False):
                    attached, row, p50 = measure(sock, d.pid, server, copy, home)
                    sw = ", ".join(f"{row[k][0]:.2f}" for k in ("proxy", "daemon", "server"))
                    cpu = ", ".join(f"{row[k][1]:.1f}" for k in ("proxy", "daemon", "server"))
                    mode = "copy (RMCP_MUX_PROXY_COPY=1)" if copy else "hand-off"
                    print(f"| {mode} | {attached} | {sw} | {cpu} | {p50:.1f} |", flush=True)
            print(f"load average {os.getloadavg()[0]:.2f}")
        finally:
            d.terminate()
            d.wait(timeout=20)


main()
