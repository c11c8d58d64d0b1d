#!/bin/sh
# Secrets never rest in plain text (DESIGN.md principle 7): runs test_attack
# and test_faults with PB_SECRETS_LOG (each secret they make, one per line)
# and PB_KEEP_TMP (their temp dirs stay), then looks for every one of those
# secrets in every SQLite file and log they left, and in their stderr (the
# server's log, at debug level). A hit names the file, never the secret.
. "$(dirname "$0")/lib.sh"

secrets=$work/secrets.txt
logs=$work/logs
tmp=$work/tmp
mkdir -p "$logs" "$tmp"
: >"$secrets"

run_test() { # run_test NAME: 0 when it ran to its end (passed or not)
  PB_SECRETS_LOG=$secrets PB_KEEP_TMP=1 TMPDIR=$tmp \
    "$PB_BUILDDIR/tests/$1" >"$logs/$1.stdout.log" 2>"$logs/$1.stderr.log"
  rc=$?
  echo "# $1 exited with $rc"
  # 0 passed, 1 some test failed (reported by the program itself); the
  # scan only needs it to have run: not set-up failure (99) nor a crash.
  [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ]
}

check "test_attack ran" run_test test_attack
check "test_faults ran" run_test test_faults

# The list: one secret a line; empty lines would match everything.
grep -v '^$' "$secrets" | sort -u >"$work/list.txt"
n=$(wc -l <"$work/list.txt")
echo "# $n distinct secrets"
check "the tests logged their secrets (at least 30)" test "$n" -ge 30
short=$(awk 'length($0) < 12' "$work/list.txt" | wc -l)
check "every secret is long enough to be unambiguous" test "$short" -eq 0

find "$tmp" "$logs" -type f \( -name '*.db' -o -name '*.db-wal' -o -name '*.db-journal' \
  -o -name '*.log' \) | sort >"$work/files.txt"
ndb=$(grep -c '\.db$' "$work/files.txt")
echo "# $(wc -l <"$work/files.txt") files to scan, $ndb SQLite stores"
check "the kept temp dirs hold the stores of both programs (4)" test "$ndb" -ge 4

# The scanner finds a secret when there is one (a planted copy).
planted=$work/planted.log
printf 'noise %s noise\n' "$(head -n 1 "$work/list.txt")" >"$planted"
check "the scan finds a planted secret" grep -a -F -q -f "$work/list.txt" "$planted"
rm -f "$planted"

leaks=0
while IFS= read -r f; do
  if grep -a -F -q -f "$work/list.txt" "$f"; then
    not_ok "a secret in plain text in ${f#"$work"/}"
    leaks=$((leaks + 1))
  fi
done <"$work/files.txt"
check "no secret in any store or log" test "$leaks" -eq 0

finish
