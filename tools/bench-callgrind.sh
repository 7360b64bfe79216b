#!/usr/bin/env bash
# Counts the daemon's instructions per request with valgrind's callgrind, which is repeatable
# on a loaded machine (timings are not). Runs the daemon from BIN_DIR (default
# target/release) under callgrind, sends N echo requests (pad bytes of result padding each, body
# bytes of text in each request, echoed back) over its socket one at a time, stops it, and prints
# the total instruction count. Compare two builds, or N and 0 requests, to get instructions per
# request:
#   tools/bench-callgrind.sh [N] [PAD] [BODY]      BIN_DIR=/some/build tools/bench-callgrind.sh 2000
# ERA=modern sends 2026-07-28 requests instead (no handshake; each request carries the envelope
# in `params._meta`, as the bench's `eras` phase does, and each answer must start its result
# with `"resultType":"complete"`; `server/discover` takes the place of `initialize`, so N and 0
# requests still differ only by the requests). VIA=http sends the same requests to the
# daemon's Streamable HTTP front instead (`[daemon] http`), one POST each on one keep-alive
# HTTP/1.1 connection: a session (`initialize` answered as JSON, each answer an SSE stream) for
# ERA=handshake, the stateless form (`MCP-Protocol-Version: 2026-07-28`, each answer one JSON
# object) for ERA=modern. CG_OUT=FILE keeps the callgrind profile for callgrind_annotate.
# COUNT=syscalls counts system calls instead (perf stat, raw_syscalls:sys_enter; the daemon's
# threads and its server child together, so compare the difference of two runs).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
pad=${2:-0}
body=${3:-0}
era=${ERA:-handshake}
case "$era" in handshake | modern) ;; *) echo "ERA must be handshake or modern" >&2; exit 2 ;; esac
via=${VIA:-socket}
case "$via" in socket | http) ;; *) echo "VIA must be socket or http" >&2; exit 2 ;; esac
bin=${BIN_DIR:-target/release}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
http=
if [ "$via" = http ]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    http="http = \"127.0.0.1:$port\""
fi
cat >"$dir/mux.toml" <<TOML
[daemon]
control_socket = "$dir/control.sock"
socket_dir = "$dir/s"
$http
[servers.s]
cmd = "$bin/mcp-fake-server"
max_request_bytes = 8388608
max_response_bytes = 8388608
TOML
count=${COUNT:-instructions}
case "$count" in instructions | syscalls) ;; *) echo "COUNT must be instructions or syscalls" >&2; exit 2 ;; esac
if [ "$count" = syscalls ]; then
    XDG_STATE_HOME="$dir/state" RMCP_MUX_LOG=warn perf stat -e raw_syscalls:sys_enter -x, -o "$dir/perf.txt" \
        "$bin/rmcp-mux" --config "$dir/mux.toml" 2>"$dir/daemon.log" &
else
    XDG_STATE_HOME="$dir/state" RMCP_MUX_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
        "$bin/rmcp-mux" --config "$dir/mux.toml" 2>"$dir/valgrind.log" &
fi
pid=$!
python3 - "$dir/s/s.sock" "$n" "$pad" "$body" "$era" "$via" "${port:-0}" "$dir/state/rmcp-mux/http-token" <<'PY'
import http.client, json, socket, sys, time
path, n, pad, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
modern = sys.argv[5] == "modern"
via_http, port, token_file = sys.argv[6] == "http", int(sys.argv[7]), sys.argv[8]

deadline = time.time() + 120
while True:
    try:
        if via_http:
            s = socket.create_connection(("127.0.0.1", port)); s.close()
            token = open(token_file).read().strip()
        else:
            s = socket.socket(socket.AF_UNIX); s.connect(path)
        break
    except OSError:
        if time.time() > deadline: sys.exit("the daemon never came up")
        time.sleep(0.1)
if via_http:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {"Host": f"127.0.0.1:{port}", "Authorization": f"Bearer {token}",
               "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if modern:
        headers["MCP-Protocol-Version"] = "2026-07-28"
    def post(msg):
        h = headers
        if modern:
            # The headers that mirror the body.
            h = dict(headers, **{"Mcp-Method": msg["method"]})
            if msg["method"] == "tools/call":
                h["Mcp-Name"] = msg["params"]["name"]
        conn.request("POST", "/s/mcp", json.dumps(msg).encode(), h)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status in (200, 202), (resp.status, data)
        return resp, data
    def call(msg):
        resp, data = post(msg)
        if resp.getheader("content-type", "").startswith("text/event-stream"):
            data = [l[6:] for l in data.split(b"\n") if l.startswith(b"data: {")][-1]
        if "Mcp-Session-Id" not in headers and resp.getheader("mcp-session-id"):
            headers["Mcp-Session-Id"] = resp.getheader("mcp-session-id")
        return json.loads(data)
else:
    r = s.makefile("rb")
    def call(msg):
        s.sendall(json.dumps(msg).encode() + b"\n")
        return json.loads(r.readline())
if not modern:
    init = call({"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"cg","version":"1"}}})
    assert "result" in init, init
    if via_http:
        post({"jsonrpc":"2.0","method":"notifications/initialized"})
    else:
        s.sendall(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
else:
    # Starts the server and waits for its handshake, as `initialize` does for the other era.
    found = call({"jsonrpc":"2.0","id":"discover","method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}})
    assert "result" in found, found
envelope = {"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"cg","version":"1"}}
ys = "y" * body
for i in range(n):
    params = {"name":"echo","arguments":{"text":f"c-{i}{ys}","pad":pad}}
    if modern:
        params["_meta"] = envelope
    got = call({"jsonrpc":"2.0","id":i,"method":"tools/call","params":params})
    assert got["id"] == i and len(got["result"]["content"][0]["text"]) == len(f"c-{i}") + body + pad, "wrong answer"
    assert not modern or list(got["result"])[0] == "resultType" and got["result"]["resultType"] == "complete", got
PY
if [ "$count" = syscalls ]; then
    # perf waits for the daemon, its child, and then writes the count.
    kill -TERM $(pgrep -P "$pid")
    wait "$pid" || true
    grep raw_syscalls "$dir/perf.txt" | awk -F, -v n="$n" -v era="$era" -v via="$via" '{print "syscalls:", $1, "requests:", n, "era:", era, "via:", via}'
    exit 0
fi
kill -TERM "$pid"
wait "$pid" || true
if [ -n "${CG_OUT:-}" ]; then cp "$dir/cg.out" "$CG_OUT"; fi
grep -E "^(summary|totals):" "$dir/cg.out" | head -1 | awk -v n="$n" -v era="$era" -v via="$via" '{print "instructions:", $2, "requests:", n, "era:", era, "via:", via}'
