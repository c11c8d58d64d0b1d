# Shared helpers for the shell tests (sourced).
set -u
: "${PB_BUILDDIR:?run through make check}"
: "${PB_BIN:=$PB_BUILDDIR/plugboard}"
work=$(mktemp -d "${TMPDIR:-/tmp}/pbsh-XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; }
check() { # check NAME COMMAND...
  local name=$1; shift
  if "$@"; then ok "$name"; else not_ok "$name"; fi
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# Copies the in-tree plugins into $1.
install_plugins() {
  mkdir -p "$1"
  for p in hubspot salesforce generic; do
    cp "$PB_BUILDDIR/plugins/$p/.libs/$p.so" "$1/$p.so"
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL: waits up to 10 s for any HTTP answer.
wait_http() {
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}
