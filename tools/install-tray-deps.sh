#!/usr/bin/env bash
# Installs the Debian packages the menu-bar app needs on Linux: the GTK and appindicator
# headers to build the cargo feature `tray`, and the headless desktop tools/tray-e2e.sh drives
# (Xvfb, a window manager, a StatusNotifier watcher and panel, a notification daemon, xdotool,
# xclip to read the clipboard back, ImageMagick for the screenshot). Idempotent: does nothing when every package is installed.
# Needs root (CI runs as root) or sudo. Exits non-zero with the reason on stderr.
set -euo pipefail

say() { echo "install-tray-deps: $*"; }
die() { echo "install-tray-deps: error: $*" >&2; exit 1; }

build_pkgs=(pkg-config libgtk-3-dev libayatana-appindicator3-dev libxdo-dev)
e2e_pkgs=(xvfb openbox x11-utils dbus-daemon dbus-bin libglib2.0-bin xdotool xclip imagemagick dunst
  haskell-status-notifier-item-utils haskell-gtk-sni-tray-utils)

missing=()
for p in "${build_pkgs[@]}" "${e2e_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  say "all packages present"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo; install by hand: ${missing[*]}"
  sudo="sudo"
fi
say "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
say "done"
