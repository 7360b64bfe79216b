#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each (default 60), on
# the nightly toolchain; installs cargo-fuzz from crates.io first when it is missing.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]
#
# Each target starts from its seeds in fuzz/seeds/TARGET (kept in the repository) and keeps
# what it learns in fuzz/corpus/TARGET (not kept). A crash, panic or failed invariant stops
# that target, leaves the input in fuzz/artifacts/TARGET/ and makes the script exit 1; replay
# it with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...` in fuzz/.
# The targets are built optimized with debug assertions and overflow checks (cargo-fuzz's
# default). FUZZ_JOBS=N runs N targets at once (default 1). FUZZ_SANITIZER=none builds without
# AddressSanitizer (a faster build for short runs: the fuzzed modules are safe Rust but for one
# UTF-8 conversion, and panics and failed invariants are caught either way).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
CARGO_FUZZ_VERSION=0.13.2
SANITIZER="${FUZZ_SANITIZER:-address}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo +nightly install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# The optimized build is kept per machine, outside the clone, so that a fresh clone (CI) only
# rebuilds this crate; FUZZ_TARGET_DIR chooses another place.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rmcp-mux/fuzz-target}"
cd fuzz
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi

echo "== building ${#TARGETS[@]} targets"
if [ "$#" -gt 0 ]; then
    for t in "${TARGETS[@]}"; do cargo +nightly fuzz build -s "$SANITIZER" "$t"; done
else
    cargo +nightly fuzz build -s "$SANITIZER"
fi

run_one() {
    local t="$1"
    mkdir -p "corpus/$t" "seeds/$t"
    local start=$SECONDS
    if cargo +nightly fuzz run -s "$SANITIZER" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"target/fuzz-$t.log" 2>&1; then
        echo "ok      $t: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "target/fuzz-$t.log" | grep -o '[0-9]*$') runs in $((SECONDS - start)) s, corpus $(ls "corpus/$t" | wc -l)"
    else
        echo "FAILED  $t after $((SECONDS - start)) s; the input is in fuzz/artifacts/$t/:"
        grep -E 'panicked|ERROR|SUMMARY' "target/fuzz-$t.log" | head -5
        return 1
    fi
}

echo "== running each for ${SECONDS_EACH} s"
mkdir -p target
failed=0
jobs_max="${FUZZ_JOBS:-1}"
pids=()
for t in "${TARGETS[@]}"; do
    run_one "$t" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$jobs_max" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
exit "$failed"
