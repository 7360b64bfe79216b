#!/usr/bin/env bash
# Builds rmcp-mux.app (the menu-bar app) from a release build, on macOS:
#   tools/bundle-macos.sh [--target aarch64-apple-darwin|x86_64-apple-darwin|universal] [--out DIR]
# or lays the bundle out from binaries already built (any system; used to check the layout):
#   tools/bundle-macos.sh --bin-dir DIR [--out DIR]
# Layout: Contents/Info.plist (bundle/Info.plist, version from Cargo.toml),
#         Contents/MacOS/rmcp-mux (the bundle's executable: with no arguments it runs the app,
#         `--tray`; with arguments it is the CLI), Contents/MacOS/rmcp-mux-proxy,
#         Contents/Resources/AppIcon.icns (from bundle/AppIcon.iconset, by iconutil or, where it
#         is missing, tools/pack-icns.py). tools/check-bundle.py checks the result.
# The app reads ~/.rmcp-mux/mux.toml (or $RMCP_MUX_CONFIG). Ad-hoc signs the bundle when
# `codesign` is present. Prints the bundle's path; exits non-zero with the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bundle-macos: error: $*" >&2; exit 1; }

target="" out="target/bundle" bin_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="${2:?--target needs a value}"; shift 2 ;;
    --out) out="${2:?--out needs a value}"; shift 2 ;;
    --bin-dir) bin_dir="${2:?--bin-dir needs a value}"; shift 2 ;;
    *) die "unknown argument $1 (see the header of $0)" ;;
  esac
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || die "no version in Cargo.toml"

bins=(rmcp-mux rmcp-mux-proxy)
if [ -n "$bin_dir" ]; then
  [ -z "$target" ] || die "--bin-dir and --target exclude each other"
  dir="$bin_dir"
else
  [ "$(uname -s)" = Darwin ] || die "run this on macOS (it builds with the Apple toolchain), or pass --bin-dir"
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
fi
for b in "${bins[@]}"; do [ -x "$dir/$b" ] || die "$dir/$b is missing"; done

app="$out/rmcp-mux.app"
rm -rf "$app"
mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources"
sed "s/__VERSION__/$version/g" bundle/Info.plist >"$app/Contents/Info.plist"
if command -v plutil >/dev/null 2>&1; then
  plutil -lint "$app/Contents/Info.plist" >/dev/null || die "Info.plist does not parse"
else
  python3 -c 'import plistlib,sys; plistlib.load(open(sys.argv[1],"rb"))' "$app/Contents/Info.plist" ||
    die "Info.plist does not parse"
fi
for b in "${bins[@]}"; do cp "$dir/$b" "$app/Contents/MacOS/$b"; done

if command -v iconutil >/dev/null 2>&1; then
  iconutil -c icns bundle/AppIcon.iconset -o "$app/Contents/Resources/AppIcon.icns"
else
  python3 tools/pack-icns.py bundle/AppIcon.iconset "$app/Contents/Resources/AppIcon.icns"
fi

if command -v codesign >/dev/null 2>&1; then
  codesign --force --deep --sign - "$app" >/dev/null 2>&1 || echo "bundle-macos: warning: ad-hoc signing failed" >&2
fi
echo "$app"
