#!/usr/bin/env bash
# Runs the side-by-side benchmark (benches/load.rs): the same fast MCP server reached directly
# over stdio, through the mux socket and through rmcp-mux-proxy, in one run, every answer
# checked. Writes target/bench/results.json, target/bench/results.md (each DESIGN.md target
# with direct stdio beside it, "met" or "not met") and target/bench/bench.svg (latency
# percentiles per path, throughput against clients). Takes about a minute after the build.
#   BENCH_QUICK=1       a short smoke run
#   BENCH_MICRO=1       also the criterion micro-benchmarks (benches/hot_paths.rs)
#   RMCP_MUX_THREADS=N  the daemon's worker count (default 1; 0 a current-thread runtime)
#   BENCH_BIN_DIR=DIR   measure another build's binaries with this bench (before/after)
# Timings on a shared machine are noisy: compare the ratios of one run, and use
# tools/bench-callgrind.sh (instruction counts) for before/after decisions on the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# `cargo bench` links the release binaries again (and the proxy dynamically), so build the bench
# first, then the binaries as released (tools/build-release.sh), then run the bench executable.
tools/same-tree.sh
bench=$(cargo bench --bench load --no-run --message-format=json \
    | grep '"name":"load","src_path"' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
tools/build-release.sh
"$bench" --bench
if [ -n "${BENCH_MICRO:-}" ]; then
    cargo bench --bench hot_paths
fi
