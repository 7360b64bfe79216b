#!/usr/bin/env python3
"""Draws the tray icons in public/ (run once; the PNGs are committed).

One glyph per aggregate state (see src/tray/model.rs, IconState): running = a filled disc,
busy = a ring with a quarter cut out (starting or restarting), failed = a disc with a bar cut
through it, stopped = a thin empty ring.

- macOS template images, black + alpha so the menu bar tints them for light and dark mode:
  tray-STATE-template@2x.png, a 44 px canvas with the 36 px glyph centred. tray-icon 0.26 takes
  an image's pixels as points and scales anything taller than 22 pt down to 22 pt, so a 44 px
  canvas is drawn as 22 pt, exactly 2x on a Retina display (a 36 px image became a 22 pt bitmap
  upscaled about 1.2x). tray-STATE-template.png (22 px canvas, 18 px glyph) is its 1x form.
- Linux, coloured (hosts draw them as they are): tray-STATE.png (32 px).
- bundle/AppIcon.iconset/icon_SxS.png and icon_SxS@2x.png for S in 16, 32, 128, 256, 512 (so
  icon_512x512@2x.png is 1024 px), the .app's icon set (tools/bundle-macos.sh packs it), and
  bundle/AppIcon.png (1024 px), the source.

Only the standard library: PNGs are written with zlib, shapes are anti-aliased by supersampling.
"""
import math
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SS = 4  # supersampling per axis

COLOURS = {
    "running": (0x2E, 0xA0, 0x43),
    "busy": (0xE0, 0x9B, 0x1A),
    "failed": (0xD7, 0x3A, 0x2F),
    "stopped": (0x8A, 0x8F, 0x98),
}


def coverage(state, x, y):
    """1 where the glyph covers the unit-square point (x, y), else 0."""
    dx, dy = x - 0.5, y - 0.5
    r = math.hypot(dx, dy)
    if state == "running":
        return r <= 0.40
    if state == "busy":
        ang = math.atan2(-dy, dx)  # 0 = right, counter-clockwise
        in_ring = 0.26 <= r <= 0.42
        gap = 0 <= ang <= math.pi / 2  # the top-right quarter is open
        return in_ring and not gap
    if state == "failed":
        disc = r <= 0.42
        bar = abs(dx + dy) <= 0.07 * math.sqrt(2) and r <= 0.34
        return disc and not bar
    if state == "stopped":
        return 0.32 <= r <= 0.42
    raise ValueError(state)


def render(state, size, rgb, canvas=None):
    """The glyph drawn `size` px wide, centred on a transparent `canvas` px square."""
    canvas = canvas or size
    pad = (canvas - size) // 2
    ss = SS if size <= 256 else 2  # enough samples for large sizes, and much faster
    blank = bytes(4 * canvas)
    rows = [bytes([0]) + blank for _ in range(pad)]
    for py in range(size):
        row = bytearray([0]) + bytearray(4 * pad)  # filter: none, left padding
        for px in range(size):
            hits = 0
            for sy in range(ss):
                for sx in range(ss):
                    x = (px + (sx + 0.5) / ss) / size
                    y = (py + (sy + 0.5) / ss) / size
                    hits += coverage(state, x, y)
            a = round(255 * hits / (ss * ss))
            row += bytes(rgb) + bytes([a])
        row += bytearray(4 * (canvas - size - pad))
        rows.append(bytes(row))
    rows += [bytes([0]) + blank for _ in range(canvas - size - pad)]
    return b"".join(rows)


def write_png(path, size, raw):
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
    png += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def main():
    public = os.path.join(ROOT, "public")
    os.makedirs(public, exist_ok=True)
    for state, rgb in COLOURS.items():
        write_png(os.path.join(public, f"tray-{state}-template.png"), 22, render(state, 18, (0, 0, 0), 22))
        write_png(os.path.join(public, f"tray-{state}-template@2x.png"), 44, render(state, 36, (0, 0, 0), 44))
        write_png(os.path.join(public, f"tray-{state}.png"), 32, render(state, 32, rgb))
    bundle = os.path.join(ROOT, "bundle")
    iconset = os.path.join(bundle, "AppIcon.iconset")
    os.makedirs(iconset, exist_ok=True)
    drawn = {}
    for s in (16, 32, 128, 256, 512):
        for scale, suffix in ((1, ""), (2, "@2x")):
            px = s * scale
            if px not in drawn:
                drawn[px] = render("running", px, COLOURS["running"])
            write_png(os.path.join(iconset, f"icon_{s}x{s}{suffix}.png"), px, drawn[px])
    write_png(os.path.join(bundle, "AppIcon.png"), 1024, drawn[1024])


if __name__ == "__main__":
    main()
