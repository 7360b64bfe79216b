#!/usr/bin/env bash
# Builds the release binaries (`cargo build --release --bins`, extra arguments passed on) and, on
# Linux with glibc, links rmcp-mux-proxy statically: one proxy runs per host session, and a
# static proxy maps only the part of libc it uses and no dynamic loader, libm or libgcc_s
# (RSS ≈ 2.2 MB instead of ≈ 3.2 MB; docs/performance.md, "Proxy memory"). Cargo cannot set
# `crt-static` for one binary of a package, hence the second, link-only step (about 10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins "$@"
if [ "$(uname -s)" = Linux ] && ldd --version 2>&1 | grep -qi 'gnu libc\|glibc'; then
    cargo rustc --release --bin rmcp-mux-proxy "$@" -- -C target-feature=+crt-static
fi
