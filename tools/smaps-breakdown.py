#!/usr/bin/env python3
"""What a process's RSS is made of, from a saved /proc/PID/smaps (or a live PID).

Usage: tools/smaps-breakdown.py FILE.smaps|PID [more...]

Groups the mappings into the binary (text, read-only data, writable data), each shared
library, glibc's heaps (the main [heap] and the per-thread arenas, 64 MiB reservations of
which only the front part is writable), thread stacks (anonymous rw mappings directly above a
4 KiB guard page), the main stack and the rest of anonymous memory. Prints RSS and private
dirty per group, in KiB. The benchmark saves the daemon's smaps with BENCH_SMAPS=DIR
(docs/performance.md, "Daemon memory").
"""

import os
import re
import sys

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")
ARENA = 64 << 20


def parse(text):
    maps = []
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            maps.append(
                {
                    "start": int(m.group(1), 16),
                    "end": int(m.group(2), 16),
                    "perms": m.group(3),
                    "path": m.group(4).strip(),
                    "fields": {},
                }
            )
        elif maps and ":" in line:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                maps[-1]["fields"][key] = int(parts[0])
    return maps


def classify(maps):
    out = []
    for i, m in enumerate(maps):
        path, perms = m["path"], m["perms"]
        size = m["end"] - m["start"]
        if path and not path.startswith("["):
            name = os.path.basename(path)
            for lib in ("libc.so", "ld-linux", "libm.so", "libgcc_s"):
                if name.startswith(lib):
                    name = lib
                    break
            else:
                name = "binary " + name
            kind = {"r-xp": "text", "r--p": "ro", "rw-p": "data"}.get(perms, perms)
            group = f"{name} {kind}"
        elif path == "[heap]":
            group = "heap: main arena ([heap])"
        elif path == "[stack]":
            group = "main thread stack"
        elif path.startswith("["):
            group = path
        elif perms == "rw-p":
            prev = maps[i - 1] if i > 0 else None
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            guard_below = (
                prev
                and prev["perms"] == "---p"
                and prev["end"] == m["start"]
                and prev["end"] - prev["start"] <= 64 << 10
            )
            reserve_above = (
                nxt
                and nxt["perms"] == "---p"
                and nxt["start"] == m["end"]
                and m["start"] % ARENA == 0
            )
            if reserve_above or (m["start"] % ARENA == 0 and size < ARENA and size > 128 << 10 and not guard_below):
                group = "heap: thread arenas"
            elif guard_below:
                group = "thread stacks"
            else:
                group = "other anonymous (mmap'd allocations, tls)"
        elif perms == "---p":
            group = "reserved (---p)"
        else:
            group = f"anonymous {perms}"
        out.append((group, m))
    return out


def report(label, text):
    maps = parse(text)
    groups = {}
    for group, m in classify(maps):
        g = groups.setdefault(group, {"n": 0, "size": 0, "rss": 0, "dirty": 0})
        g["n"] += 1
        g["size"] += (m["end"] - m["start"]) >> 10
        g["rss"] += m["fields"].get("Rss", 0)
        g["dirty"] += m["fields"].get("Private_Dirty", 0)
    print(f"== {label}")
    print(f"{'group':46} {'maps':>4} {'size KiB':>10} {'RSS KiB':>8} {'dirty':>7}")
    total = dirty = 0
    for name, g in sorted(groups.items(), key=lambda kv: -kv[1]["rss"]):
        if g["rss"] == 0 and g["size"] > 0 and name.startswith("reserved"):
            continue
        print(f"{name:46} {g['n']:4} {g['size']:10} {g['rss']:8} {g['dirty']:7}")
        total += g["rss"]
        dirty += g["dirty"]
    print(f"{'total':46} {'':4} {'':10} {total:8} {dirty:7}")


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    for arg in sys.argv[1:]:
        path = f"/proc/{arg}/smaps" if arg.isdigit() else arg
        with open(path) as f:
            report(arg, f.read())


if __name__ == "__main__":
    main()
