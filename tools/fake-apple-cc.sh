#!/usr/bin/env bash
# A stand-in C compiler for `cargo check --target *-apple-darwin` on Linux (DESIGN.md, Platforms).
# Build scripts (mac-notification-sys compiles an Objective-C file through cc-rs) need a C
# compiler for the target; a type-check links nothing, so an empty object is enough. It answers
# cc-rs's probes as clang does: `-E` (preprocess the compiler-family probe) prints "clang",
# `-?` fails, and any `-o PATH` gets an empty file. Never use it to build anything that runs.
out=""
prev=""
for a in "$@"; do
  case "$a" in
    -E) echo '"clang"'; exit 0 ;;
    '-?') exit 1 ;;
  esac
  [ "$prev" = "-o" ] && out="$a"
  case "$a" in -o?*) out="${a#-o}" ;; esac
  prev="$a"
done
if [ -n "$out" ]; then : >"$out"; fi
exit 0
