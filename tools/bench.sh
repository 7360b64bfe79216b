#!/usr/bin/env bash
# Runs the side-by-side benchmark (benches/load.rs): the same fast MCP server reached directly
# over stdio, through the mux socket and through rmcp-mux-proxy, in one run. Writes
# target/bench/results.json and target/bench/results.md (ratios against direct stdio).
# BENCH_QUICK=1 for a short smoke run; RMCP_MUX_THREADS=N to pin the daemon's worker count.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo bench --bench load
python3 - <<'PY'
import json, pathlib
out = pathlib.Path("target/bench")
r = json.loads((out / "results.json").read_text())
lat, big, tp, rss = r["latency"], r["one_mib"], r["throughput"], r["rss_kib"]
d = lat["direct"]
rows = [
    ("added latency p50, proxy+mux (µs)", f'{lat["proxy"]["p50_us"] - d["p50_us"]:.1f}', "≤ 50"),
    ("added latency p99, proxy+mux (µs)", f'{lat["proxy"]["p99_us"] - d["p99_us"]:.1f}', "≤ 250"),
    ("added latency p50, mux socket (µs)", f'{lat["mux"]["p50_us"] - d["p50_us"]:.1f}', "-"),
    ("throughput, 64 clients × 8 vs direct 512 in flight", f'{tp["mux_64"] / tp["direct_512_in_flight"]:.2f}×', "≥ 0.70×"),
    ("1 MiB result, mux / direct", f'{big["mux"]["p50_us"] / big["direct"]["p50_us"]:.2f}×', "≤ 1.3×"),
    ("1 MiB result, proxy / direct", f'{big["proxy"]["p50_us"] / big["direct"]["p50_us"]:.2f}×', "≤ 1.3×"),
    ("daemon RSS, 10 idle servers + 100 clients (MiB)", f'{rss["daemon_10_with_100_clients"] / 1024:.1f}', "≤ 8"),
    ("proxy RSS (MiB)", f'{rss["proxy"] / 1024:.1f}', "≤ 2.5"),
    (f'{r["many_clients"]["clients"]} clients × 4 in flight (req/s, all answered)', f'{r["many_clients"]["req_per_s"]:.0f}', "all served"),
    ("daemon start to 10 sockets ready (ms)", f'{r["start_10_servers_ms"]:.1f}', "≤ 10"),
]
md = "| measure | this run | target (DESIGN.md) |\n|---|---|---|\n" + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in rows)
(out / "results.md").write_text(md)
print(md)
PY
