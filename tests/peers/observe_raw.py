"""Raw look at what a stdio MCP server sends around its handshake (no SDK involved).

Usage: observe_raw.py [--caps sampling,elicitation,roots] [--wait 1.0] [--no-initialized]
                      [--send JSON]... -- COMMAND [ARGS...]

Sends `initialize` (protocol 2025-11-25, the given client capabilities), then
`notifications/initialized` (unless --no-initialized), then each --send line (ids are yours),
and prints every line the server writes within --wait seconds after the last send, one per line,
prefixed with the elapsed milliseconds. Server requests (e.g. roots/list) are answered with an
empty result so the server does not hang. Used to write NOTES.md; not part of the test suite.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--caps", default="", help="comma list of client capabilities to declare")
    p.add_argument("--wait", type=float, default=1.0)
    p.add_argument("--no-initialized", action="store_true")
    p.add_argument("--send", action="append", default=[])
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.command[1:] if a.command and a.command[0] == "--" else a.command
    if not cmd:
        p.error("missing COMMAND")
    caps = {c: {} for c in a.caps.split(",") if c}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ), text=True, bufsize=1)

    def send(msg: dict) -> None:
        proc.stdin.write(json.dumps(msg) + "\n")
        proc.stdin.flush()

    def stamp() -> str:
        return f"{(time.monotonic() - t0) * 1000:7.0f}ms"

    def pump_stdout() -> None:
        for line in proc.stdout:
            print(f"{stamp()} <- {line.rstrip()}", flush=True)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and "method" in msg and "id" in msg:
                result = {"roots": []} if msg["method"] == "roots/list" else {}
                send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
                print(f"{stamp()} -> (auto) answered {msg['method']} id={msg['id']!r}", flush=True)

    def pump_stderr() -> None:
        for line in proc.stderr:
            print(f"{stamp()} stderr: {line.rstrip()}", flush=True)

    threading.Thread(target=pump_stdout, daemon=True).start()
    threading.Thread(target=pump_stderr, daemon=True).start()
    out = [{"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": caps,
                       "clientInfo": {"name": "observe_raw", "version": "0"}}}]
    if not a.no_initialized:
        out.append({"jsonrpc": "2.0", "method": "notifications/initialized"})
    out += [json.loads(s) for s in a.send]
    time.sleep(0.3)  # let the server start up (stderr banner) before the first line
    for i, msg in enumerate(out):
        print(f"{stamp()} -> {json.dumps(msg)}", flush=True)
        send(msg)
        if i == 0:
            time.sleep(0.2)  # the initialize response first, like a real client
    time.sleep(a.wait)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
