#!/usr/bin/env bash
# Makes sure the release artifacts in the target dir are built from this checkout as it is now.
# Cargo takes artifacts as fresh when their sources are older than they are, and a package's
# artifacts have the same names whichever checkout built them: a worktree (or an older commit)
# built with this target dir (CARGO_TARGET_DIR) leaves its binaries behind, and this checkout's
# older files do not rebuild them, so a bench would measure the other tree's daemon. Each
# release build records the tree it is from (its path and the content of what is compiled,
# committed and not); one from another tree cleans this package's release artifacts first (its
# dependencies stay built). Docs and scripts do not count.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
compiled=(src benches tests Cargo.toml Cargo.lock)
stamp=$({
    pwd
    git ls-tree HEAD -- "${compiled[@]}" 2>/dev/null || true
    git diff HEAD -- "${compiled[@]}" 2>/dev/null || true
} | sha256sum | cut -d' ' -f1)
file="$target/release/.source-tree"
if [ -f "$file" ] && [ "$(cat "$file")" != "$stamp" ]; then
    echo "same-tree: the release artifacts in $target come from another tree or state; rebuilding this package" >&2
    cargo clean --release -p rmcp-mux
fi
mkdir -p "$target/release"
echo "$stamp" >"$file"
