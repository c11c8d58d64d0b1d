#!/usr/bin/env bash
# The control plane end to end, as the README's "Control plane tour" does it:
# the CLI subcommands (project create, manifest apply, connection import,
# installation create) with their exit codes and one-line errors, then the
# same walk with curl against `plugboard serve` on examples/plugboard.yaml.
. "${PB_SRCDIR:-.}/tests/lib.sh"

src=${PB_SRCDIR:-.}
install_plugins "$work/plugins"
port=$(free_port)
# examples/plugboard.yaml itself, moved to a free port and a scratch dir.
sed -e "s#127.0.0.1:8080#127.0.0.1:$port#" -e "s#\./var#$work/var#g" \
  -e "s#\./catalog/#$src/examples/catalog/#" \
  "$src/examples/plugboard.yaml" > "$work/plugboard.yaml"
cat >> "$work/plugboard.yaml" <<YAML
plugin_dir: $work/plugins
server: { max_body_bytes: 4096 }
YAML
cfg="$work/plugboard.yaml"
db="$work/var/plugboard.db"
base="http://127.0.0.1:$port"

# j EXPR: evaluates a Python expression over the JSON on stdin (d).
j() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=eval(sys.argv[1]); print(v if isinstance(v,str) else json.dumps(v))' "$1"; }
# one_line FILE: exactly one line starting with "plugboard: ".
one_line() { [ "$(wc -l < "$1")" -eq 1 ] && grep -q '^plugboard: ' "$1"; }
# not_in_db TEXT: neither the database nor its WAL holds TEXT.
not_in_db() { ! grep -qF -- "$1" "$db" "$db-wal" 2>/dev/null; }
# run NAME-OF-OUTPUT CMD...: stdout to $work/out, stderr to $work/err, $rc.
run() { "$@" >"$work/out" 2>"$work/err"; rc=$?; }

# ---- CLI ---------------------------------------------------------------------------

run "$PB_BIN" project create tour --config "$cfg"
check "project create exits 0" [ "$rc" -eq 0 ]
pid=$(j 'd["id"]' < "$work/out")
key=$(j 'd["apiKey"]' < "$work/out")
check "project create prints id, name, apiKey" [ "$(j 'sorted(d)' < "$work/out")" = '["apiKey", "id", "name"]' ]

run "$PB_BIN" project create prj_lookalike --config "$cfg"
check "a project name shaped like an id exits 2" [ "$rc" -eq 2 ]
check "... and says why" grep -qxF "plugboard: name: must not start with 'prj_' (project ids do)" "$work/err"

run "$PB_BIN" manifest apply "$src/examples/amp.yaml" --project tour --config "$cfg"
check "manifest apply exits 0" [ "$rc" -eq 0 ]
check "manifest apply prints the three integrations" \
  [ "$(j '[i["name"] for i in d["integrations"]]' < "$work/out")" = '["hubspot-crm", "salesforce-crm", "sendgrid-email"]' ]
check "integrations belong to the project" \
  [ "$(j 'sorted(set(i["projectId"] for i in d["integrations"]))' < "$work/out")" = "[\"$pid\"]" ]
ids1=$(j '[i["id"] for i in d["integrations"]]' < "$work/out")
run "$PB_BIN" manifest apply "$src/examples/amp.yaml" --project "$pid" --config "$cfg"
check "manifest apply again (by project id) exits 0" [ "$rc" -eq 0 ]
check "applying again keeps the integration ids" [ "$(j '[i["id"] for i in d["integrations"]]' < "$work/out")" = "$ids1" ]

printf 'specVersion: 1.0.0\nintegrations:\n  - name: crm\n    provider: zoho\n' > "$work/zoho.yaml"
run "$PB_BIN" manifest apply "$work/zoho.yaml" --project tour --config "$cfg"
check "manifest with a disabled provider exits 2" [ "$rc" -eq 2 ]
check "disabled provider named with file:line:col" \
  grep -qxF "plugboard: $work/zoho.yaml:4:15: provider 'zoho' is not enabled in plugboard.yaml" "$work/err"
check "disabled provider error is one line" one_line "$work/err"
printf 'specVersion: 1.0.0\nintegrations:\n  - name: crm\n    provider: [hubspot\n' > "$work/broken.yaml"
run "$PB_BIN" manifest apply "$work/broken.yaml" --project tour --config "$cfg"
check "broken YAML exits 2" [ "$rc" -eq 2 ]
check "broken YAML names file:line:col" grep -qE "^plugboard: $work/broken.yaml:[0-9]+:[0-9]+: " "$work/err"
check "broken YAML error is one line" one_line "$work/err"
run "$PB_BIN" manifest apply "$src/examples/amp.yaml" --project nope --config "$cfg"
check "unknown project exits 1" [ "$rc" -eq 1 ]
check "unknown project says so" grep -qxF "plugboard: project 'nope' not found" "$work/err"
run "$PB_BIN" manifest apply "$src/examples/amp.yaml" --config "$cfg"
check "manifest apply without --project exits 2" [ "$rc" -eq 2 ]
check "manifest apply usage line" grep -qxF "plugboard: usage: plugboard manifest apply FILE --project ID_OR_NAME" "$work/err"
run "$PB_BIN" manifest apply "$work/none.yaml" --project tour --config "$cfg"
check "missing manifest file exits 2" [ "$rc" -eq 2 ]
check "missing manifest file is named" grep -qxF "plugboard: $work/none.yaml: cannot read: No such file or directory" "$work/err"

# connection import: OAuth tokens, shown back without secrets, sealed at rest.
run "$PB_BIN" connection import --project tour --provider hubspot --group-ref cust-1 \
  --access-token cli-at-5e7d1c --refresh-token cli-rt-9a8b7c --expires-in 3600 --config "$cfg"
check "connection import exits 0" [ "$rc" -eq 0 ]
conn=$(j 'd["id"]' < "$work/out")
check "connection id has prefix" grep -qE '^conn_[a-z2-7]{26}$' <<<"$conn"
check "connection fields" [ "$(j '[d["provider"], d["groupRef"], d["consumerRef"], d["authScheme"], d["status"]]' < "$work/out")" = '["hubspot", "cust-1", "cust-1", "oauth2/authorizationCode", "working"]' ]
check "expiry about an hour ahead" python3 -c '
import json, sys, datetime
d = json.load(open(sys.argv[1]))
t = datetime.datetime.strptime(d["accessTokenExpiresAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
left = (t - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
assert 3500 < left <= 3600, left' "$work/out"
check "import output holds no token" bash -c "! grep -qE 'cli-at-|cli-rt-' '$work/out'"
check "database holds no access token" not_in_db cli-at-5e7d1c
check "database holds no refresh token" not_in_db cli-rt-9a8b7c

run "$PB_BIN" connection import --project tour --provider sendgrid --group-ref cust-1 --api-key SG.cli-4f4f4f --config "$cfg"
check "api key import exits 0" [ "$rc" -eq 0 ]
check "api key scheme" [ "$(j 'd["authScheme"]' < "$work/out")" = apiKey ]
check "database holds no imported api key" not_in_db SG.cli-4f4f4f
run "$PB_BIN" connection import --project tour --provider sendgrid --group-ref cust-2 --username bob --password cli-pw-3c3c --consumer-ref bob@example.com --config "$cfg"
check "basic auth import exits 0" [ "$rc" -eq 0 ]
check "basic scheme and consumerRef" [ "$(j '[d["authScheme"], d["consumerRef"]]' < "$work/out")" = '["basic", "bob@example.com"]' ]
check "database holds no password" not_in_db cli-pw-3c3c
run "$PB_BIN" connection import --project tour --provider salesforce --group-ref cust-1 \
  --access-token cli-sf-at-1 --meta instance_url=https://acme.my.salesforce.com --config "$cfg"
check "salesforce import exits 0" [ "$rc" -eq 0 ]
check "instance_url is provider metadata" \
  [ "$(j 'd["providerMetadata"]' < "$work/out")" = '{"instance_url": {"value": "https://acme.my.salesforce.com"}}' ]

# connection import: bad usage, one line each, exit 2.
bad_import() { # NAME EXPECTED-LINE ARGS...
  local name=$1 want=$2; shift 2
  run "$PB_BIN" connection import --config "$cfg" "$@"
  check "$name exits 2" [ "$rc" -eq 2 ]
  check "$name message" grep -qxF "plugboard: $want" "$work/err"
  check "$name is one line" one_line "$work/err"
  check "$name prints nothing" [ ! -s "$work/out" ]
}
bad_import "import without --group-ref" \
  "usage: plugboard connection import --project P --provider X --group-ref G [--access-token T --refresh-token R --expires-in S | --api-key K | --username U --password W] [--meta k=v ...]" \
  --project tour --provider hubspot --api-key k
bad_import "import of a disabled provider" "provider: provider 'zoho' is not enabled in plugboard.yaml" \
  --project tour --provider zoho --group-ref g --api-key k
bad_import "import with two kinds of credentials" \
  "give one of --access-token/--refresh-token, --api-key or --username/--password" \
  --project tour --provider hubspot --group-ref g --access-token a --api-key k
bad_import "import with a bad --expires-in" \
  "--expires-in must be a number of seconds from 1 to 315360000, not 'soon'" \
  --project tour --provider hubspot --group-ref g --access-token a --expires-in soon
bad_import "import with --expires-in alone" "--expires-in needs --access-token" \
  --project tour --provider hubspot --group-ref g --refresh-token r --expires-in 60
bad_import "import with --password alone" "--password needs --username" \
  --project tour --provider sendgrid --group-ref g --password p
bad_import "import with a bad --meta" "--meta takes key=value, not 'instance_url'" \
  --project tour --provider salesforce --group-ref g --api-key k --meta instance_url
bad_import "import with an unknown option" "unknown option '--token'" \
  --project tour --provider hubspot --group-ref g --token t
run "$PB_BIN" connection import --project nope --provider hubspot --group-ref g --api-key k --config "$cfg"
check "import into an unknown project exits 1" [ "$rc" -eq 1 ]
check "import into an unknown project says so" grep -qxF "plugboard: project 'nope' not found" "$work/err"

# installation create, with a config file.
cat > "$work/install.json" <<'JSON'
{"content": {"write": {"objects": {"contacts": {
  "deletionSettings": {"enabled": true},
  "selectedFieldSettings": {"lifecyclestage": {"default": {"stringValue": "lead"},
                                               "writeOnCreate": "always", "writeOnUpdate": "ifEmpty"}}}}}}}
JSON
run "$PB_BIN" installation create --project tour --integration hubspot-crm --group-ref cust-1 \
  --config-file "$work/install.json" --config "$cfg"
check "installation create exits 0" [ "$rc" -eq 0 ]
inst=$(j 'd["id"]' < "$work/out")
check "installation id has prefix" grep -qE '^inst_[a-z2-7]{26}$' <<<"$inst"
check "installation uses the group's hubspot connection" [ "$(j 'd["connectionId"]' < "$work/out")" = "$conn" ]
check "installation keeps the config" python3 -c '
import json, sys
assert json.load(open(sys.argv[1]))["config"] == json.load(open(sys.argv[2]))' "$work/out" "$work/install.json"
run "$PB_BIN" installation create --project tour --integration hubspot-crm --group-ref cust-1 --config "$cfg"
check "second installation for the group exits 1" [ "$rc" -eq 1 ]
check "second installation says why" \
  grep -qxF "plugboard: groupRef 'cust-1' already has an installation of integration 'hubspot-crm'" "$work/err"
run "$PB_BIN" installation create --project tour --integration salesforce-crm --group-ref cust-1 --config "$cfg"
check "another integration for the same group exits 0" [ "$rc" -eq 0 ]
check "salesforce installation has an empty config" [ "$(j 'd["config"]' < "$work/out")" = '{"content": {}}' ]

# --connection-id: a connection of the group, not another group's.
run "$PB_BIN" connection import --project tour --provider hubspot --group-ref cust-3 --api-key pat-3 --config "$cfg"
conn3=$(j 'd["id"]' < "$work/out")
run "$PB_BIN" installation create --project tour --integration hubspot-crm --group-ref cust-3 \
  --connection-id "$conn3" --config "$cfg"
check "installation with --connection-id exits 0" [ "$rc" -eq 0 ]
check "installation uses that connection" [ "$(j 'd["connectionId"]' < "$work/out")" = "$conn3" ]

bad_install() { # NAME CODE EXPECTED-LINE ARGS...
  local name=$1 code=$2 want=$3; shift 3
  run "$PB_BIN" installation create --config "$cfg" "$@"
  check "$name exits $code" [ "$rc" -eq "$code" ]
  check "$name message" grep -qxF "plugboard: $want" "$work/err"
  check "$name is one line" one_line "$work/err"
}
echo '{"content": {"write": {"objects": {"deals": {}}}}}' > "$work/deals.json"
bad_install "config with an unknown object" 2 \
  "config.content.write.objects.deals: 'deals' is not a write object of integration 'hubspot-crm'" \
  --project tour --integration hubspot-crm --group-ref cust-2 --config-file "$work/deals.json"
echo '{"content": {"write": {"objects": {"contacts": {"selectedFieldSettings": {"email": {"writeOnUpdate": "often"}}}}}}}' > "$work/often.json"
bad_install "config with a bad writeOnUpdate" 2 \
  "config.content.write.objects.contacts.selectedFieldSettings.email.writeOnUpdate: must be always, never or ifEmpty" \
  --project tour --integration hubspot-crm --group-ref cust-2 --config-file "$work/often.json"
printf '{"content":\n' > "$work/trunc.json"
bad_install "config file that is not JSON" 2 "$work/trunc.json:2:0: unexpected token near end of file" \
  --project tour --integration hubspot-crm --group-ref cust-2 --config-file "$work/trunc.json"
bad_install "group without a connection" 2 \
  "connectionId: no connection for groupRef 'cust-9' and provider 'hubspot': import one with connections:generate or OAuth connect first" \
  --project tour --integration hubspot-crm --group-ref cust-9
bad_install "another group's connection" 2 \
  "connectionId: connection '$conn3' belongs to groupRef 'cust-3', not 'cust-2'" \
  --project tour --integration hubspot-crm --group-ref cust-2 --connection-id "$conn3"
bad_install "unknown integration" 1 "integration 'nope' not found" \
  --project tour --integration nope --group-ref cust-1
bad_install "installation without --group-ref" 2 \
  "usage: plugboard installation create --project P --integration I --group-ref G [--config-file F] [--connection-id C]" \
  --project tour --integration hubspot-crm
check "database holds no api key" not_in_db "$key"

# ---- the same over HTTP, against plugboard serve -------------------------------------

"$PB_BIN" serve --config "$cfg" 2>"$work/serve.log" &
spid=$!
check "server answers" wait_http "$base/healthz"

# api METHOD PATH [curl args]: sets $status, $ctype and $body.
api() {
  local m=$1 p=$2; shift 2
  local out
  out=$(curl -s -o "$work/body" -w '%{http_code} %{content_type}' -X "$m" "$base$p" "$@")
  status=${out%% *}
  ctype=${out#* }
  body=$(cat "$work/body")
}
# problem STATUS TYPE-SLUG ISSUE-NAME|-: checks the last answer is that problem+json.
problem() {
  [ "$status" = "$1" ] && [ "$ctype" = application/problem+json ] && python3 -c '
import json, sys
d = json.loads(sys.argv[1])
assert d["type"] == "urn:plugboard:problem:" + sys.argv[2], d
assert d["status"] == int(sys.argv[3]) and d["title"] and d["detail"] and d["requestId"], d
if sys.argv[4] == "-":
    assert "issues" not in d, d
else:
    assert [i["name"] for i in d["issues"]] == [sys.argv[4]], d' "$body" "$2" "$1" "$3"
}
H=(-H "x-api-key: $key")

# The tour: a project made by the CLI (no server needed for the first key),
# then everything else over HTTP.
run "$PB_BIN" project create demo --config "$cfg"
check "project create while serving exits 0" [ "$rc" -eq 0 ]
dkey=$(j 'd["apiKey"]' < "$work/out")
D=(-H "x-api-key: $dkey")
api PUT /v1/projects/demo/manifest "${D[@]}" --data-binary @"$src/examples/amp.yaml"
check "PUT manifest 200" [ "$status" = 200 ]
check "PUT manifest answers the integrations" [ "$(j '[i["name"] for i in d["integrations"]]' <<<"$body")" = '["hubspot-crm", "salesforce-crm", "sendgrid-email"]' ]
api GET /v1/projects/demo/integrations/hubspot-crm -H "Authorization: Bearer $dkey"
check "GET integration with a Bearer key" [ "$status" = 200 ]
check "integration's write objects" [ "$(j '[o["objectName"] for o in d["write"]["objects"]]' <<<"$body")" = '["contacts", "companies"]' ]

api POST /v1/projects/demo/connections:generate "${D[@]}" -d '{
  "groupRef": "customer-42", "provider": "hubspot",
  "oauth2AuthorizationCode": {"accessToken": {"token": "curl-at-77aa", "expiresAt": "2030-01-01T00:00:00Z"},
                              "refreshToken": {"token": "curl-rt-88bb"}}}'
check "connections:generate 201" [ "$status" = 201 ]
dconn=$(j 'd["id"]' <<<"$body")
check "connections:generate answer has no tokens" bash -c "! grep -qE 'curl-(at|rt)-' <<<'$body'"
api GET "/v1/projects/demo/connections/$dconn" "${D[@]}"
check "GET connection 200" [ "$status" = 200 ]
check "GET connection shows the expiry" [ "$(j 'd["accessTokenExpiresAt"]' <<<"$body")" = 2030-01-01T00:00:00Z ]
check "GET connection has no tokens" bash -c "! grep -qE 'curl-(at|rt)-|token\"' <<<'$body'"
check "database holds neither token" bash -c "! grep -qE 'curl-(at|rt)-' '$db' '$db-wal' 2>/dev/null"

api POST /v1/projects/demo/integrations/hubspot-crm/installations "${D[@]}" \
  -d '{"groupRef": "customer-42", "config": {"content": {"write": {"objects": {"contacts": {"deletionSettings": {"enabled": true}}}}}}}'
check "POST installation 201" [ "$status" = 201 ]
dinst=$(j 'd["id"]' <<<"$body")
check "installation picked the connection" [ "$(j 'd["connectionId"]' <<<"$body")" = "$dconn" ]
api POST /v1/projects/demo/integrations/hubspot-crm/installations "${D[@]}" \
  -d '{"groupRef": "customer-42", "config": {"content": {}}}'
check "second installation 409 problem" problem 409 conflict -
api GET "/v1/projects/demo/integrations/hubspot-crm/installations/$dinst" "${D[@]}"
check "GET installation 200" [ "$status" = 200 ]
check "GET installation config" [ "$(j 'd["config"]["content"]["write"]["objects"]' <<<"$body")" = '{"contacts": {"deletionSettings": {"enabled": true}}}' ]
api GET "/v1/projects/demo/integrations/hubspot-crm/installations?groupRef=customer-42" "${D[@]}"
check "list by groupRef" [ "$(j '[i["id"] for i in d]' <<<"$body")" = "[\"$dinst\"]" ]
api PATCH "/v1/projects/demo/integrations/hubspot-crm/installations/$dinst" "${D[@]}" -d '{
  "updateMask": ["config.content.write.objects.companies"],
  "installation": {"config": {"content": {"write": {"objects": {"companies": {"deletionSettings": {"enabled": false}}}}}}}}'
check "PATCH installation 200" [ "$status" = 200 ]
check "PATCH added companies, kept contacts" [ "$(j 'sorted(d["config"]["content"]["write"]["objects"])' <<<"$body")" = '["companies", "contacts"]' ]
api PATCH "/v1/projects/demo/integrations/hubspot-crm/installations/$dinst" "${D[@]}" \
  -d '{"updateMask": ["groupRef"], "installation": {"groupRef": "x"}}'
check "PATCH of a path outside the mask list is a 400 naming it" problem 400 invalid-request 'updateMask[0]'
check "... and the detail quotes the path" grep -q "'groupRef' is not an updatable path" <<<"$body"
api PATCH /v1/projects/demo/integrations/hubspot-crm/objects/contacts/config-content "${D[@]}" -d '{
  "groupRef": "customer-42", "action": "write",
  "changes": [{"op": "replace", "path": "/deletionSettings/enabled", "value": false},
              {"op": "add", "path": "/selectedFieldSettings", "value": {"email": {"writeOnUpdate": "ifEmpty"}}}]}'
check "JSON Patch on one object 200" [ "$status" = 200 ]
check "JSON Patch applied" [ "$(j 'd["config"]["content"]["write"]["objects"]["contacts"]' <<<"$body")" = '{"deletionSettings": {"enabled": false}, "selectedFieldSettings": {"email": {"writeOnUpdate": "ifEmpty"}}}' ]
api PATCH /v1/projects/demo/integrations/hubspot-crm/objects/contacts/config-content "${D[@]}" -d '{
  "groupRef": "customer-42", "action": "write",
  "changes": [{"op": "remove", "path": "/deletionSettings"}, {"op": "remove", "path": "/nope"}]}'
check "a failed JSON Patch op is a 400 naming it" problem 400 invalid-request 'changes[1]'
api GET "/v1/projects/demo/integrations/hubspot-crm/installations/$dinst" "${D[@]}"
check "a failed JSON Patch changes nothing" [ "$(j 'd["config"]["content"]["write"]["objects"]["contacts"]["deletionSettings"]' <<<"$body")" = '{"enabled": false}' ]

# OAuth connect: the authorize URL, with the callback under public_url.
api POST /v1/oauth-connect "${D[@]}" -d '{"projectIdOrName": "demo", "groupRef": "customer-7", "provider": "hubspot"}'
check "oauth-connect 200" [ "$status" = 200 ]
check "oauth-connect answers text/plain" [ "$ctype" = "text/plain; charset=utf-8" ]
check "authorize URL" grep -qxE "https://app\.hubspot\.com/oauth/authorize\?client_id=example-hubspot-client-id&redirect_uri=http%3A%2F%2F127\.0\.0\.1%3A$port%2Fcallbacks%2Fv1%2Foauth&state=st_[a-z2-7]{26}" <<<"$body"
api GET "/callbacks/v1/oauth?code=abc&state=st_bogus"
check "callback with an unknown state: 400 page" [ "$status" = 400 ]
check "callback page is HTML" [ "$ctype" = "text/html; charset=utf-8" ]
check "callback page says why" grep -qF "state: unknown, already used or expired: start the connection again" <<<"$body"

# Bad inputs over HTTP: problem+json naming what is wrong.
api GET /v1/projects/demo/integrations
check "no key: 401" problem 401 unauthenticated x-api-key
api GET /v1/projects/demo/integrations -H "x-api-key: pbk_wrong"
check "wrong key: 401" problem 401 unauthenticated x-api-key
api GET /v1/projects/demo/integrations "${H[@]}"
check "another project's key: 404" problem 404 not-found -
api GET "/v1/projects/tour/connections/$dconn" "${H[@]}"
check "another project's connection id: 404" problem 404 not-found -
api POST /v1/projects/demo/connections:generate "${D[@]}" -d '{"groupRef": "g", "provider": "hubspot",'
check "malformed JSON: 400" problem 400 invalid-json body
api POST /v1/projects/demo/connections:generate "${D[@]}" -d '{"provider": "hubspot"}'
check "missing groupRef: 400 naming it" problem 400 invalid-request groupRef
api POST /v1/projects/demo/connections:generate "${D[@]}" -d '{"groupRef": 5, "provider": "hubspot"}'
check "groupRef of the wrong type: 400 naming it" problem 400 invalid-request groupRef
head -c 5000 /dev/zero | tr '\0' ' ' > "$work/big.json"
api POST /v1/projects/demo/connections:generate "${D[@]}" --data-binary @"$work/big.json"
check "oversize body: 413" problem 413 body-too-large -
printf 'specVersion: 1.0.0\nintegrations:\n  - name: crm\n    provider: zoho\n' > "$work/zoho.yaml"
api PUT /v1/projects/demo/manifest "${D[@]}" --data-binary @"$work/zoho.yaml"
check "manifest naming a disabled provider: 400 with line:col" problem 400 invalid-manifest 4:15
api GET /v1/projects/demo/connections/conn_nope "${D[@]}"
check "unknown connection: 404" problem 404 not-found -

# Clean up in order: an installation holds its connection.
api DELETE "/v1/projects/demo/connections/$dconn" "${D[@]}"
check "deleting a connection in use: 409" problem 409 conflict -
api DELETE "/v1/projects/demo/integrations/hubspot-crm/installations/$dinst" "${D[@]}"
check "DELETE installation 204" [ "$status" = 204 ]
api DELETE "/v1/projects/demo/connections/$dconn" "${D[@]}"
check "DELETE connection 204" [ "$status" = 204 ]
api GET "/v1/projects/demo/connections/$dconn" "${D[@]}"
check "deleted connection: 404" problem 404 not-found -

kill -TERM "$spid"; wait "$spid"; rc=$?
check "SIGTERM exits 0" [ "$rc" -eq 0 ]
check "log holds no api key" bash -c "! grep -qF -e '$key' -e '$dkey' '$work/serve.log'"
check "log holds no token" bash -c "! grep -qE 'curl-(at|rt)-|cli-(at|rt)-' '$work/serve.log'"
check "database holds no api key of the demo project" not_in_db "$dkey"

finish
