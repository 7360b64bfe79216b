#!/usr/bin/env bash
# Installs the real MCP peers the test suite runs against, exactly as pinned:
#   npm:  tests/peers/package-lock.json  -> tests/peers/node_modules   (npm ci)
#   PyPI: tests/peers/requirements.txt   -> tests/peers/.venv          (hash-checked pip install)
# Idempotent: a stamp of each lock's hash (plus the runtime's version) skips work already done,
# so a second run takes a few milliseconds. Prints one line per step; exits non-zero with the
# reason on stderr. PYTHON=/path/to/python3.11+ overrides the interpreter used for the venv.
set -euo pipefail

peers="$(cd "$(dirname "$0")/../tests/peers" && pwd)"
say() { echo "install-test-peers: $*"; }
die() { echo "install-test-peers: error: $*" >&2; exit 1; }

command -v node >/dev/null 2>&1 || die "'node' not found on PATH (need Node.js >= 20)"
command -v npm >/dev/null 2>&1 || die "'npm' not found on PATH (it comes with Node.js)"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || die "'$python' not found on PATH (need Python >= 3.11; or set PYTHON)"
command -v sha256sum >/dev/null 2>&1 || die "'sha256sum' not found on PATH (coreutils)"

node_version="$(node --version)"                       # v20.20.2
node_major="${node_version#v}"; node_major="${node_major%%.*}"
[ "$node_major" -ge 20 ] 2>/dev/null || die "Node.js >= 20 required, found $node_version"

# Two test binaries may run this at once: serialise (best effort, flock is util-linux).
if command -v flock >/dev/null 2>&1; then
  lock="${TMPDIR:-/tmp}/rmcp-mux-test-peers-$(printf '%s' "$peers" | sha256sum | cut -c1-16).lock"
  exec 9>"$lock"
  flock -w 600 9 || die "timed out waiting for another install ($lock)"
fi

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- npm: server-everything, server-memory, server-filesystem, the TypeScript SDK v2 client --
npm_stamp="$peers/node_modules/.rmcp-mux-stamp"
npm_want="$(hash_of "$peers/package-lock.json") node$node_major"
npm_ok=1
[ "$(cat "$npm_stamp" 2>/dev/null)" = "$npm_want" ] || npm_ok=0
for p in server-everything server-memory server-filesystem; do
  [ -f "$peers/node_modules/@modelcontextprotocol/$p/dist/index.js" ] || npm_ok=0
done
[ -f "$peers/node_modules/@modelcontextprotocol/client/dist/index.mjs" ] || npm_ok=0
if [ "$npm_ok" = 1 ]; then
  say "npm peers up to date"
else
  say "npm ci in tests/peers (server-everything, server-memory, server-filesystem, client)"
  (cd "$peers" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) \
    || die "npm ci failed in $peers (registry unreachable or lock out of date?)"
  echo "$npm_want" > "$npm_stamp"
fi

# --- PyPI: mcp SDK, mcp-server-time -----------------------------------------------------------
py_version="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" \
  || die "'$python' does not run"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python >= 3.11 required (httpx2, a dependency of mcp), found $py_version at $(command -v "$python"); set PYTHON"
venv="$peers/.venv"
py_stamp="$venv/.rmcp-mux-stamp"
py_want="$(hash_of "$peers/requirements.txt") python$py_version"
if [ "$(cat "$py_stamp" 2>/dev/null)" = "$py_want" ] && [ -x "$venv/bin/python" ] \
   && [ -x "$venv/bin/mcp-server-time" ]; then
  say "python peers up to date"
else
  say "python venv tests/peers/.venv with python $py_version"
  rm -rf "$venv"
  "$python" -m venv "$venv" \
    || die "'$python -m venv' failed (on Debian: apt-get install python3-venv)"
  say "pip install -r tests/peers/requirements.txt (mcp SDK, mcp-server-time; hash-checked)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --no-deps --require-hashes -r "$peers/requirements.txt" \
    || die "pip install failed (PyPI unreachable or no wheel for this platform?)"
  echo "$py_want" > "$py_stamp"
fi
