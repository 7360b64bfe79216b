#!/usr/bin/env bash
# Installs the real MCP peers the test suite runs against, exactly as pinned:
#   npm:  tests/peers/package-lock.json  -> tests/peers/node_modules
#   PyPI: tests/peers/requirements.txt   -> tests/peers/.venv
# Idempotent: a stamp of each lock file's hash skips work that is already done.
set -euo pipefail
peers="$(cd "$(dirname "$0")/../tests/peers" && pwd)"

need() { command -v "$1" >/dev/null 2>&1 || { echo "install-test-peers: '$1' is required ($2)" >&2; exit 1; }; }
need node "Node.js 20 or newer"
need npm "comes with Node.js"
need python3 "Python 3.10 or newer"

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

npm_stamp="$peers/node_modules/.rmcp-mux-stamp"
if [ "$(cat "$npm_stamp" 2>/dev/null)" != "$(hash_of "$peers/package-lock.json")" ]; then
  echo "install-test-peers: npm ci (server-everything, server-memory, server-filesystem)"
  (cd "$peers" && npm ci --no-audit --no-fund --loglevel=error)
  hash_of "$peers/package-lock.json" > "$npm_stamp"
else
  echo "install-test-peers: npm peers up to date"
fi

venv="$peers/.venv"
py_stamp="$venv/.rmcp-mux-stamp"
if [ "$(cat "$py_stamp" 2>/dev/null)" != "$(hash_of "$peers/requirements.txt")" ]; then
  echo "install-test-peers: python venv (mcp SDK, mcp-server-time)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$peers/requirements.txt"
  hash_of "$peers/requirements.txt" > "$py_stamp"
else
  echo "install-test-peers: python peers up to date"
fi
