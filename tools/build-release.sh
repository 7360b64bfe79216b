#!/usr/bin/env bash
# Builds the release binaries (`cargo build --release --bins`, extra arguments passed on) and, on
# Linux with glibc, links rmcp-mux-proxy and rmcp-mux statically: a static binary maps only the
# part of libc it uses and no dynamic loader, libm or libgcc_s (proxy RSS ≈ 2.2 MB instead of
# ≈ 3.2 MB, daemon with 10 servers and 100 clients ≈ 1.3 MB less; docs/performance.md, "Proxy
# memory" and "Daemon memory"). The daemon stays dynamic when the `tray` feature is asked for
# (GTK cannot be linked statically). Cargo cannot set `crt-static` for one binary of a package,
# hence the extra, link-only steps (about 10 s for the proxy, 30 s for the daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/same-tree.sh
cargo build --release --bins "$@"
# `grep -q` would stop reading early and fail the pipeline (pipefail, SIGPIPE in ldd) at random.
if [ "$(uname -s)" = Linux ] && ldd --version 2>&1 | grep -i 'gnu libc\|glibc' >/dev/null; then
    cargo rustc --release --bin rmcp-mux-proxy "$@" -- -C target-feature=+crt-static
    case " $* " in
        *tray* | *all-features*) ;;
        *) cargo rustc --release --bin rmcp-mux "$@" -- -C target-feature=+crt-static ;;
    esac
fi
