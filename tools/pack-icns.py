#!/usr/bin/env python3
"""Packs an .iconset folder into an .icns file, as `iconutil -c icns` does, where iconutil is
missing (Linux, to check the bundle's layout): each icon_SxS[@2x].png is stored as PNG data
under its icns type. Usage: tools/pack-icns.py DIR.iconset OUT.icns
"""
import os
import struct
import sys

# The icns type of each file name iconutil reads.
TYPES = {
    "icon_16x16.png": b"icp4",
    "icon_16x16@2x.png": b"ic11",
    "icon_32x32.png": b"icp5",
    "icon_32x32@2x.png": b"ic12",
    "icon_128x128.png": b"ic07",
    "icon_128x128@2x.png": b"ic13",
    "icon_256x256.png": b"ic08",
    "icon_256x256@2x.png": b"ic14",
    "icon_512x512.png": b"ic09",
    "icon_512x512@2x.png": b"ic10",
}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: pack-icns.py DIR.iconset OUT.icns")
    src, out = sys.argv[1], sys.argv[2]
    body = b""
    for name, kind in TYPES.items():
        path = os.path.join(src, name)
        if not os.path.exists(path):
            sys.exit(f"pack-icns: {path} is missing")
        with open(path, "rb") as f:
            data = f.read()
        body += kind + struct.pack(">I", len(data) + 8) + data
    with open(out, "wb") as f:
        f.write(b"icns" + struct.pack(">I", len(body) + 8) + body)


if __name__ == "__main__":
    main()
