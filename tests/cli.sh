#!/usr/bin/env bash
# The command line end to end: plugins, check-config, project create, serve,
# config and plugin errors with their exit codes and one-line messages.
. "${PB_SRCDIR:-.}/tests/lib.sh"

install_plugins "$work/plugins"
port=$(free_port)
cat > "$work/plugboard.yaml" <<YAML
listen: 127.0.0.1:$port
data_dir: $work/var
store: sqlite:$work/var/plugboard.db
master_key_file: $work/var/master.key
plugin_dir: $work/plugins
log: { level: info, format: json }
providers:
  hubspot:    { plugin: hubspot,    client_id: cid, client_secret: csecret }
  salesforce: { plugin: salesforce, client_id: cid, client_secret: csecret, login_url: https://login.salesforce.com }
  sendgrid:   { plugin: generic,    base_url: https://api.sendgrid.com }
YAML
cfg="$work/plugboard.yaml"

# plugins: one line per provider with file, ABI and capabilities.
out=$("$PB_BIN" plugins --config "$cfg"); rc=$?
check "plugins exits 0" [ "$rc" -eq 0 ]
check "plugins lists three providers" [ "$(echo "$out" | wc -l)" -eq 3 ]
check "hubspot line" grep -qxF "hubspot	$work/plugins/hubspot.so	abi 1.1	write,batch,associations,delete,oauth2_refresh,oauth2_connect,read" <<<"$out"
check "salesforce line" grep -qxF "salesforce	$work/plugins/salesforce.so	abi 1.1	write,batch,delete,header_passthrough,oauth2_refresh,oauth2_connect,read" <<<"$out"
check "generic line" grep -qE "^sendgrid	$work/plugins/generic.so	abi 1.1	" <<<"$out"
check "generic has no write capabilities" bash -c "! grep '^sendgrid' <<<'$out' | cut -f4 | grep -qwE 'batch|associations|delete|header_passthrough|read'"

# check-config
out=$("$PB_BIN" --config "$cfg" check-config); rc=$?
check "check-config exits 0" [ "$rc" -eq 0 ]
check "check-config says ok" grep -q "ok (3 providers enabled)" <<<"$out"

# A config error: exit 2, one line with file:line:column.
printf 'listen: 127.0.0.1:1\nlistenn: x\n' > "$work/bad.yaml"
err=$("$PB_BIN" check-config --config "$work/bad.yaml" 2>&1 >/dev/null); rc=$?
check "bad key exits 2" [ "$rc" -eq 2 ]
check "bad key names file:line:col" grep -q "$work/bad.yaml:2:1: unknown key 'listenn'" <<<"$err"
check "bad key is one line" [ "$(echo "$err" | wc -l)" -eq 1 ]
err=$("$PB_BIN" check-config --config "$work/missing.yaml" 2>&1); rc=$?
check "missing config exits 2" [ "$rc" -eq 2 ]
check "missing config names the file" grep -q "$work/missing.yaml" <<<"$err"

# A file in plugin_dir that is not a plugin, enabled: serve exits 2 naming it.
cp -r "$work/plugins" "$work/plugins-bad"
echo "not a plugin" > "$work/plugins-bad/acme.so"
sed -e "s#plugin_dir: .*#plugin_dir: $work/plugins-bad#" "$cfg" > "$work/acme.yaml"
echo "  acme: { plugin: acme }" >> "$work/acme.yaml"
err=$(timeout 10 "$PB_BIN" serve --config "$work/acme.yaml" 2>&1); rc=$?
check "non-plugin exits 2" [ "$rc" -eq 2 ]
check "non-plugin message names the file" grep -q "^plugboard: $work/plugins-bad/acme.so: not a loadable shared object" <<<"$err"
check "non-plugin message is one line" [ "$(echo "$err" | wc -l)" -eq 1 ]
check "nothing was served" bash -c "! curl -s -o /dev/null http://127.0.0.1:$port/healthz"

# Usage errors.
"$PB_BIN" frobnicate >/dev/null 2>&1; rc=$?
check "unknown command exits 2" [ "$rc" -eq 2 ]
"$PB_BIN" project create 'bad name!' --config "$cfg" >/dev/null 2>&1; rc=$?
check "bad project name exits 2" [ "$rc" -eq 2 ]

# project create: JSON with id, name and a key shown once; stored hashed.
out=$("$PB_BIN" project create acme --config "$cfg"); rc=$?
check "project create exits 0" [ "$rc" -eq 0 ]
id=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["id"])' "$out")
key=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["apiKey"])' "$out")
name=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["name"])' "$out")
check "project id has prefix" grep -qE '^prj_[a-z2-7]{26}$' <<<"$id"
check "project name echoed" [ "$name" = acme ]
check "api key has prefix" grep -qE '^pbk_[A-Za-z0-9_-]{43}$' <<<"$key"
check "master key is 0600" [ "$(stat -c %a "$work/var/master.key")" = 600 ]
check "master key is 32 bytes" [ "$(stat -c %s "$work/var/master.key")" = 32 ]
check "database does not hold the key" bash -c "! grep -qF '$key' $work/var/plugboard.db*"
"$PB_BIN" project create acme --config "$cfg" >/dev/null 2>"$work/dup.err"; rc=$?
check "duplicate project exits 1" [ "$rc" -eq 1 ]
check "duplicate project says so" grep -q "project 'acme' already exists" "$work/dup.err"

# serve: health, readiness, then SIGTERM stops it cleanly with exit 0.
"$PB_BIN" serve --config "$cfg" 2>"$work/serve.log" &
pid=$!
check "server answers" wait_http "http://127.0.0.1:$port/healthz"
check "healthz 200" [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")" = 200 ]
check "readyz ready" grep -q '"status":"ready"' <<<"$(curl -s "http://127.0.0.1:$port/readyz")"
kill -TERM "$pid"; wait "$pid"; rc=$?
check "SIGTERM exits 0" [ "$rc" -eq 0 ]
check "logs are JSON lines" python3 -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "no log"
for l in lines:
    d = json.loads(l)
    assert {"ts", "level", "msg"} <= d.keys(), l
msgs = [json.loads(l)["msg"] for l in lines]
assert "listening" in msgs and "stopped" in msgs, msgs
' "$work/serve.log"
check "log holds no api key" bash -c "! grep -qF '$key' '$work/serve.log'"

finish
