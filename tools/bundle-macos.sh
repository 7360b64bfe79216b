#!/usr/bin/env bash
# Builds rmcp-mux.app (the menu-bar app) from a release build, on macOS:
#   tools/bundle-macos.sh [--target aarch64-apple-darwin|x86_64-apple-darwin|universal] [--out DIR]
# Layout: Contents/Info.plist (bundle/Info.plist, version from Cargo.toml),
#         Contents/MacOS/rmcp-mux (the CLI) and rmcp-mux-app (runs `rmcp-mux --tray`),
#         Contents/MacOS/rmcp-mux-proxy, Contents/Resources/AppIcon.icns (from bundle/AppIcon.png).
# The app reads ~/.rmcp-mux/mux.toml (or $RMCP_MUX_CONFIG). Ad-hoc signs the bundle when
# `codesign` is present. Prints the bundle's path; exits non-zero with the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bundle-macos: error: $*" >&2; exit 1; }

target="" out="target/bundle"
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="${2:?--target needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
[ "$(uname -s)" = Darwin ] || die "run this on macOS (it needs the Apple toolchain, sips and iconutil)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || die "no version in Cargo.toml"

bins=(rmcp-mux rmcp-mux-proxy)
case "$target" in
  "") cargo build --release --bins; dir="target/release" ;;
  universal)
    for t in aarch64-apple-darwin x86_64-apple-darwin; do cargo build --release --bins --target "$t"; done
    dir="target/universal"
    mkdir -p "$dir"
    for b in "${bins[@]}"; do
      lipo -create -output "$dir/$b" "target/aarch64-apple-darwin/release/$b" "target/x86_64-apple-darwin/release/$b"
    done ;;
  *) cargo build --release --bins --target "$target"; dir="target/$target/release" ;;
esac

app="$out/rmcp-mux.app"
rm -rf "$app"
mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources"
sed "s/__VERSION__/$version/g" bundle/Info.plist >"$app/Contents/Info.plist"
plutil -lint "$app/Contents/Info.plist" >/dev/null || die "Info.plist does not parse"
for b in "${bins[@]}"; do cp "$dir/$b" "$app/Contents/MacOS/$b"; done
# The bundle's executable: the tray with the user's config (a launcher, so that the CLI in the
# same folder stays a plain CLI when run from a terminal).
cat >"$app/Contents/MacOS/rmcp-mux-app" <<'SH'
#!/bin/sh
exec "$(dirname "$0")/rmcp-mux" --tray "$@"
SH
chmod +x "$app/Contents/MacOS/rmcp-mux-app"

iconset="$(mktemp -d)/AppIcon.iconset"
mkdir -p "$iconset"
for s in 16 32 128 256 512; do
  sips -z "$s" "$s" bundle/AppIcon.png --out "$iconset/icon_${s}x${s}.png" >/dev/null
  d=$((s * 2)); [ "$d" -le 512 ] || d=512
  sips -z "$d" "$d" bundle/AppIcon.png --out "$iconset/icon_${s}x${s}@2x.png" >/dev/null
done
iconutil -c icns "$iconset" -o "$app/Contents/Resources/AppIcon.icns"
rm -rf "$(dirname "$iconset")"

if command -v codesign >/dev/null 2>&1; then
  codesign --force --deep --sign - "$app" >/dev/null 2>&1 || echo "bundle-macos: warning: ad-hoc signing failed" >&2
fi
echo "$app"
