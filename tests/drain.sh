#!/usr/bin/env bash
# SIGTERM drains: a proxied call in flight when `plugboard serve` gets
# SIGTERM still completes with the provider's answer, new connections are
# refused, and the process exits 0 once the call is done. The upstream is
# the echo fake as its own process, holding the call for 2 s.
. "${PB_SRCDIR:-.}/tests/lib.sh"

fakesrv=$PB_BUILDDIR/tests/fake/fakesrv
fake_pid= serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill -9 "$serve_pid" 2>/dev/null
  [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
  exec 7>&- 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
j() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

install_plugins "$work/plugins"
mkfifo "$work/fake.in"
"$fakesrv" echo --fault 'GET:/held:0:2000:-1' <"$work/fake.in" >"$work/fake.port" 2>/dev/null &
fake_pid=$!
exec 7>"$work/fake.in"
for _ in $(seq 1 100); do [ -s "$work/fake.port" ] && break; sleep 0.05; done
fport=$(head -n1 "$work/fake.port")

port=$(free_port)
cfg="$work/plugboard.yaml"
cat > "$cfg" <<YAML
listen: 127.0.0.1:$port
data_dir: $work/var
plugin_dir: $work/plugins
egress: { allow_private: true }
server: { drain_timeout_s: 20 }
providers:
  echo: { plugin: generic, base_url: "http://127.0.0.1:$fport", auth_header: X-Key, auth_scheme: "" }
YAML
printf 'specVersion: 1.0.0\nintegrations:\n  - {name: e, provider: echo, proxy: {enabled: true}}\n' > "$work/amp.yaml"
key=$("$PB_BIN" project create drain --config "$cfg" | j 'd["apiKey"]')
"$PB_BIN" manifest apply "$work/amp.yaml" --project drain --config "$cfg" >/dev/null
conn=$("$PB_BIN" connection import --project drain --provider echo --group-ref g1 \
  --api-key echo-key --config "$cfg" | j 'd["id"]')
"$PB_BIN" installation create --project drain --integration e --group-ref g1 \
  --connection-id "$conn" --config "$cfg" >/dev/null
check "set-up done" [ -n "$conn" ]

"$PB_BIN" serve --config "$cfg" 2>"$work/serve.log" &
serve_pid=$!
check "server answers" wait_http "http://127.0.0.1:$port/healthz"
curl -s -o "$work/slow.out" -w '%{http_code}' -H 'x-amp-proxy-version: 1' -H "x-api-key: $key" \
  -H 'x-amp-project-id: drain' -H 'x-amp-integration-name: e' -H 'x-amp-group-ref: g1' \
  "http://127.0.0.1:$port/held/call" > "$work/slow.code" &
curl_pid=$!
sleep 0.7
kill -TERM "$serve_pid"
sleep 0.3
check "new connections are refused while draining" \
  bash -c "! curl -s -m 2 -o /dev/null http://127.0.0.1:$port/healthz"
wait "$curl_pid"
check "the call in flight got the provider's answer" [ "$(cat "$work/slow.code")" = 200 ]
check "its body is the echo of /held/call" [ "$(j 'd["path"]' < "$work/slow.out")" = /held/call ]
check "the credential was applied" [ "$(j 'd["headers"]["x-key"]' < "$work/slow.out")" = echo-key ]
wait "$serve_pid"; rc=$?
serve_pid=
check "serve exits 0 after draining" [ "$rc" -eq 0 ]
check "the log says it stopped with one call in flight" \
  grep -q '"msg":"stopping".*"inFlight":1' "$work/serve.log"
finish
