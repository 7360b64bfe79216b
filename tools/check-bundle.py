#!/usr/bin/env python3
"""Checks the layout of rmcp-mux.app as tools/bundle-macos.sh makes it:
  tools/check-bundle.py PATH/rmcp-mux.app
Info.plist: the keys the app relies on (bundle id, LSUIElement, LSAppNapIsDisabled, a version
filled in) and an executable that is rmcp-mux itself, a binary and not a launcher script (a
script passing "$@" on would hand clap LaunchServices' -psn_ argument). The icon set: every
size iconutil expects, each PNG of the right pixel size (icon_512x512@2x is 1024 px), in
bundle/AppIcon.iconset and in the bundle's .icns. The menu-bar template icons: 44 px canvases.
Prints what is wrong and exits 1; prints "check-bundle: ok" otherwise.
"""
import os
import plistlib
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BUNDLE_ID = "dev.rmcp-mux.tray"
# icns type -> (file name in the iconset, pixels)
ICNS = {
    b"icp4": ("icon_16x16.png", 16),
    b"ic11": ("icon_16x16@2x.png", 32),
    b"icp5": ("icon_32x32.png", 32),
    b"ic12": ("icon_32x32@2x.png", 64),
    b"ic07": ("icon_128x128.png", 128),
    b"ic13": ("icon_128x128@2x.png", 256),
    b"ic08": ("icon_256x256.png", 256),
    b"ic14": ("icon_256x256@2x.png", 512),
    b"ic09": ("icon_512x512.png", 512),
    b"ic10": ("icon_512x512@2x.png", 1024),
}
problems = []


def png_size(data):
    """(width, height) of PNG data, or None when it is not PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def check_plist(app):
    path = os.path.join(app, "Contents", "Info.plist")
    try:
        with open(path, "rb") as f:
            info = plistlib.load(f)
    except (OSError, plistlib.InvalidFileException) as e:
        problems.append(f"{path}: {e}")
        return {}
    want = {
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleExecutable": "rmcp-mux",
        "CFBundlePackageType": "APPL",
        "CFBundleIconFile": "AppIcon",
        "LSUIElement": True,
        "LSAppNapIsDisabled": True,
    }
    for key, value in want.items():
        if info.get(key) != value:
            problems.append(f"Info.plist: {key} is {info.get(key)!r}, expected {value!r}")
    for key in ("CFBundleShortVersionString", "CFBundleVersion"):
        v = str(info.get(key, ""))
        if not v or "__" in v:
            problems.append(f"Info.plist: {key} is {v!r}")
    return info


def check_executables(app, info):
    macos = os.path.join(app, "Contents", "MacOS")
    for name in {info.get("CFBundleExecutable", "rmcp-mux"), "rmcp-mux", "rmcp-mux-proxy"}:
        path = os.path.join(macos, name)
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            problems.append(f"{path}: missing or not executable")
            continue
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"#!":
            problems.append(f"{path}: a script; the bundle's programs must be the binaries")
    extra = sorted(set(os.listdir(macos)) - {"rmcp-mux", "rmcp-mux-proxy"}) if os.path.isdir(macos) else []
    if extra:
        problems.append(f"{macos}: unexpected files {extra}")


def check_iconset(iconset):
    for name, px in ICNS.values():
        path = os.path.join(iconset, name)
        try:
            with open(path, "rb") as f:
                size = png_size(f.read(24))
        except OSError as e:
            problems.append(f"{path}: {e}")
            continue
        if size != (px, px):
            problems.append(f"{path}: {size}, expected {px}x{px} px")


def check_icns(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        problems.append(f"{path}: {e}")
        return
    if data[:4] != b"icns" or struct.unpack(">I", data[4:8])[0] != len(data):
        problems.append(f"{path}: not an icns file")
        return
    seen = {}
    at = 8
    while at + 8 <= len(data):
        kind, length = data[at : at + 4], struct.unpack(">I", data[at + 4 : at + 8])[0]
        if length < 8:
            problems.append(f"{path}: bad entry {kind!r}")
            return
        seen[kind] = data[at + 8 : at + length]
        at += length
    for kind, (name, px) in ICNS.items():
        if kind not in seen:
            problems.append(f"{path}: no {kind.decode()} ({name}, {px} px)")
            continue
        size = png_size(seen[kind])
        # iconutil may store the smallest sizes in another format; PNG entries must match.
        if size is not None and size != (px, px):
            problems.append(f"{path}: {kind.decode()} ({name}) is {size[0]}x{size[1]} px, expected {px}")


def check_tray_icons():
    public = os.path.join(ROOT, "public")
    for state in ("running", "busy", "failed", "stopped"):
        path = os.path.join(public, f"tray-{state}-template@2x.png")
        with open(path, "rb") as f:
            size = png_size(f.read(24))
        if size != (44, 44):
            problems.append(f"{path}: {size}, expected a 44x44 px canvas (22 pt at 2x)")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check-bundle.py PATH/rmcp-mux.app")
    app = sys.argv[1]
    info = check_plist(app)
    check_executables(app, info)
    check_iconset(os.path.join(ROOT, "bundle", "AppIcon.iconset"))
    check_icns(os.path.join(app, "Contents", "Resources", "AppIcon.icns"))
    check_tray_icons()
    for p in problems:
        print(f"check-bundle: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("check-bundle: ok")


if __name__ == "__main__":
    main()
