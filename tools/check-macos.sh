#!/usr/bin/env bash
# Type-checks (and lints) everything macOS compiles (the menu-bar app is always on there) for both Mac
# targets, from Linux, with tools/fake-apple-cc.sh standing in for clang (see DESIGN.md,
# Platforms). Linking is impossible this way; type errors in cfg(target_os = "macos") code are
# caught. Every menu-bar crate (rfd's dialogs included) is checked to be in each Mac build.
# Skips with a warning (exit 0) when the targets cannot be installed on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "check-macos: $*"; }

targets=(aarch64-apple-darwin x86_64-apple-darwin)
if ! command -v rustup >/dev/null 2>&1; then
  say "WARNING: no rustup; skipping the macOS type-check"
  exit 0
fi
installed="$(rustup target list --installed 2>/dev/null || true)"
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$installed"; then
    if ! rustup target add "$t" >/dev/null 2>&1; then
      say "WARNING: cannot install the $t target here; skipping the macOS type-check"
      exit 0
    fi
  fi
done

# Every crate of the menu-bar app must be in the Mac build (the target table of Cargo.toml),
# so that the clippy run below type-checks the code that uses it.
menu_bar_crates=(tao tray-icon muda notify-rust auto-launch png arboard rfd)
cc="$PWD/tools/fake-apple-cc.sh"
for t in "${targets[@]}"; do
  deps="$(cargo tree --target "$t" -e normal --depth 1 --locked --prefix none)"
  for c in "${menu_bar_crates[@]}"; do
    grep -q "^$c v" <<<"$deps" || { say "$c is not a dependency of the $t build"; exit 1; }
  done
  var="${t//-/_}"
  say "cargo clippy --target $t --all-targets -- -D warnings"
  env "CC_$var=$cc" "AR_$var=ar" \
    cargo clippy --target "$t" --all-targets --locked -- -D warnings
done
say "ok"
