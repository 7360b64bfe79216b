#!/usr/bin/env python3
"""Reads a com.canonical.dbusmenu layout the way a tray host does, for tools/tray-e2e.sh.

    dbusmenu.py BUS PATH        prints one line per menu item:
                                ID <TAB> LABEL PATH (" > " between levels) <TAB> enabled|disabled
                                <TAB> checked|unchecked|- <TAB> submenu|item

It calls `gdbus call ... GetLayout 0 -1 [label, enabled, toggle-state, children-display]` and
turns gdbus's GVariant text into Python values (standard library only). Separators (no label)
are skipped. With DBUSMENU_RAW=FILE the raw reply is saved there. Exits 1 with gdbus's message when the call fails.
"""
import os
import re
import subprocess
import sys


def gvariant_to_python(text):
    """Converts the GVariant text gdbus prints (for this signature) into Python values."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in "'\"":  # a string: copy it whole, with its escapes
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
            continue
        m = re.match(r"(uint32|int32|uint64|int64|byte|@[a-z{}()]+)\s+", text[i:])
        if m:  # a type annotation: drop it
            i += m.end()
            continue
        if text.startswith("true", i):
            out.append("True")
            i += 4
            continue
        if text.startswith("false", i):
            out.append("False")
            i += 5
            continue
        if c in "<>":  # variant brackets
            i += 1
            continue
        out.append(c)
        i += 1
    import ast

    return ast.literal_eval("".join(out))


def walk(node, parents, lines):
    ident, props, children = node
    label = props.get("label")
    if label is not None:
        label = label.replace("__", "\0").replace("_", "").replace("\0", "_")  # GTK mnemonics
        path = parents + [label]
        enabled = "enabled" if props.get("enabled", True) else "disabled"
        toggle = props.get("toggle-state")
        checked = "-" if toggle is None else ("checked" if toggle == 1 else "unchecked")
        kind = "submenu" if props.get("children-display") == "submenu" or children else "item"
        lines.append(f"{ident}\t{' > '.join(path)}\t{enabled}\t{checked}\t{kind}")
    else:
        path = parents
    for child in children:
        walk(child, path, lines)


def main():
    bus, path = sys.argv[1], sys.argv[2]
    res = subprocess.run(
        ["gdbus", "call", "--session", "--dest", bus, "--object-path", path,
         "--method", "com.canonical.dbusmenu.GetLayout", "--", "0", "-1",
         "['label', 'enabled', 'toggle-state', 'children-display']"],
        capture_output=True, text=True, timeout=10,
    )
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        sys.exit(1)
    raw = os.environ.get("DBUSMENU_RAW")
    if raw:
        with open(raw, "w") as f:
            f.write(res.stdout)
    _revision, root = gvariant_to_python(res.stdout.strip())
    lines = []
    for child in root[2]:
        walk(child, [], lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
