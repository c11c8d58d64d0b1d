#!/bin/sh
# Replays every seed and regression input (tests/fuzz/<name>/seeds and
# tests/fuzz/<name>/regressions) through its fuzz target, built either as a
# plain program (tests/fuzz/replay.c) or with libFuzzer: both run the files
# they are given once. Run by make check; by hand:
#   PB_BUILDDIR=build PB_SRCDIR=. tests/fuzz/replay.sh [name...]
set -u
b=${PB_BUILDDIR:-.}
s=${PB_SRCDIR:-.}
names=${*:-config manifest catalog write_body json_patch proxy_path plugin_response}
pass=0
fail=0
for t in $names; do
  prog=$b/tests/fuzz/fuzz_$t
  if [ ! -x "$prog" ]; then
    echo "FAIL $t: $prog is not built"
    fail=$((fail + 1))
    continue
  fi
  set --
  for d in seeds regressions; do
    [ -d "$s/tests/fuzz/$t/$d" ] && set -- "$@" "$s/tests/fuzz/$t/$d"
  done
  if [ $# -eq 0 ]; then
    echo "FAIL $t: no inputs in $s/tests/fuzz/$t"
    fail=$((fail + 1))
    continue
  fi
  n=$(find "$@" -type f | wc -l)
  log=$(mktemp)
  # find exits non-zero when a batch of files made the target fail.
  if find "$@" -type f -exec "$prog" {} + >"$log" 2>&1; then
    echo "ok $t: $n inputs"
    pass=$((pass + 1))
  else
    echo "FAIL $t:"
    tail -n 40 "$log"
    fail=$((fail + 1))
  fi
  rm -f "$log"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
