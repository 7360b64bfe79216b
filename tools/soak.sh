#!/usr/bin/env bash
# A soak of the daemon under seeded chaos (tools/soak.py): many clients, some through the
# proxy, while children are killed and crash, clients drop, proxies are killed, the config is
# reloaded (servers changed, added, removed) and servers restarted. Every request must get
# exactly one answer, the right one, or an error the mux documents; at the end nothing is
# pending, no process or socket is left, and the daemon's memory and descriptors are flat.
#
#   tools/soak.sh [SECONDS] [--seed N] [--clients N]
#
# Builds the binaries first (debug; SOAK_RELEASE=1 for release). Prints its figures and a last
# line `N passed, M failed`; exits 1 on any failure, keeping the run's folder and the daemon's
# log for a look. The same seed gives the same schedule of chaos.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
if [ "${SOAK_RELEASE:-0}" = 1 ]; then
    tools/same-tree.sh >&2
    cargo build --release --bins >&2
    bin="$target/release"
else
    cargo build --bins >&2
    bin="$target/debug"
fi
exec python3 tools/soak.py --bin-dir "$bin" "$@"
