#!/usr/bin/env bash
# Counts the daemon's instructions per request with valgrind's callgrind, which is repeatable
# on a loaded machine (timings are not). Runs the daemon from BIN_DIR (default
# target/release) under callgrind, sends N echo requests (pad bytes of result padding each, body
# bytes of text in each request, echoed back) over its socket one at a time, stops it, and prints
# the total instruction count. Compare two builds, or N and 0 requests, to get instructions per
# request:
#   tools/bench-callgrind.sh [N] [PAD] [BODY]      BIN_DIR=/some/build tools/bench-callgrind.sh 2000
# CG_OUT=FILE keeps the callgrind profile for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
pad=${2:-0}
body=${3:-0}
bin=${BIN_DIR:-target/release}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/mux.toml" <<TOML
[daemon]
control_socket = "$dir/control.sock"
socket_dir = "$dir/s"
[servers.s]
cmd = "$bin/mcp-fake-server"
max_request_bytes = 8388608
max_response_bytes = 8388608
TOML
RMCP_MUX_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$bin/rmcp-mux" --config "$dir/mux.toml" 2>"$dir/valgrind.log" &
pid=$!
python3 - "$dir/s/s.sock" "$n" "$pad" "$body" <<'PY'
import json, socket, sys, time
path, n, pad, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
deadline = time.time() + 120
while True:
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(path); break
    except OSError:
        if time.time() > deadline: sys.exit("socket never came up")
        time.sleep(0.1)
f = s.makefile("rwb", buffering=0)
r = s.makefile("rb")
def call(msg):
    s.sendall(json.dumps(msg).encode() + b"\n")
    return json.loads(r.readline())
init = call({"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"cg","version":"1"}}})
assert "result" in init, init
s.sendall(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
ys = "y" * body
for i in range(n):
    got = call({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":"echo","arguments":{"text":f"c-{i}{ys}","pad":pad}}})
    assert got["id"] == i and len(got["result"]["content"][0]["text"]) == len(f"c-{i}") + body + pad, "wrong answer"
PY
kill -TERM "$pid"
wait "$pid" || true
if [ -n "${CG_OUT:-}" ]; then cp "$dir/cg.out" "$CG_OUT"; fi
grep -E "^(summary|totals):" "$dir/cg.out" | head -1 | awk -v n="$n" '{print "instructions:", $2, "requests:", n}'
