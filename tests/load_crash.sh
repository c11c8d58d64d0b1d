#!/usr/bin/env bash
# Under a mixed load of proxied calls and asynchronous writes, plugboard is
# killed with SIGKILL and restarted: every write that was acknowledged
# reaches the provider (counted at the fake, which runs as its own process),
# none is lost. Then a soak: PB_SOAK_SECONDS (default 20; 300 for the full
# soak) of the same load against one process, sampling its resident memory:
# no errors, and memory flat after the warm-up.
. "${PB_SRCDIR:-.}/tests/lib.sh"

fakesrv=$PB_BUILDDIR/tests/fake/fakesrv
soak=${PB_SOAK_SECONDS:-20}
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
"$fakesrv" hubspot --token load-token <"$work/fake.in" >"$work/fake.port" 2>/dev/null &
fake_pid=$!
exec 7>"$work/fake.in"
for _ in $(seq 1 100); do [ -s "$work/fake.port" ] && break; sleep 0.05; done
fport=$(head -n1 "$work/fake.port")

port=$(free_port)
base="http://127.0.0.1:$port"
cfg="$work/plugboard.yaml"
cat > "$cfg" <<YAML
listen: 127.0.0.1:$port
data_dir: $work/var
plugin_dir: $work/plugins
log: { level: warn }
egress: { allow_private: true, timeout_ms: 5000 }
providers:
  hubspot: { plugin: hubspot, client_id: c, client_secret: s, base_url: "http://127.0.0.1:$fport" }
YAML
printf 'specVersion: 1.0.0\nintegrations:\n  - name: crm\n    provider: hubspot\n    proxy: {enabled: true}\n    write:\n      objects:\n        - objectName: contacts\n' > "$work/amp.yaml"
out=$("$PB_BIN" project create load --config "$cfg")
pid=$(j 'd["id"]' <<<"$out")
key=$(j 'd["apiKey"]' <<<"$out")
"$PB_BIN" manifest apply "$work/amp.yaml" --project load --config "$cfg" >/dev/null
"$PB_BIN" connection import --project load --provider hubspot --group-ref cust-1 \
  --access-token load-token --expires-in 86400 --config "$cfg" >/dev/null
"$PB_BIN" installation create --project load --integration crm --group-ref cust-1 --config "$cfg" >/dev/null

start_serve() {
  "$PB_BIN" serve --config "$cfg" 2>>"$work/serve.log" &
  serve_pid=$!
  wait_http "$base/healthz"
}
start_serve
check "serve starts" [ $? -eq 0 ]
# Load for 4 s, kill -9 after 2 s, restart.
python3 "$PB_SRCDIR/tests/load.py" "$base" "$key" "$pid" 4 "$work/load1.json" &
load_pid=$!
sleep 2
kill -9 "$serve_pid"; wait "$serve_pid" 2>/dev/null; serve_pid=
wait "$load_pid"
acked=$(j 'len(d["acked"])' < "$work/load1.json")
check "writes were acknowledged before the kill" [ "$acked" -gt 0 ]
start_serve
check "serve restarts" [ $? -eq 0 ]

# Every acknowledged operation finishes with success.
pending() {
  python3 - "$base" "$key" "$pid" "$work/load1.json" <<'PY'
import json, sys, urllib.request
base, key, pid, path = sys.argv[1:]
ops = json.load(open(path))["ops"]
left = 0
for op in sorted(set(ops)):
    req = urllib.request.Request("%s/v1/projects/%s/operations/%s" % (base, pid, op), headers={"x-api-key": key})
    st = json.load(urllib.request.urlopen(req, timeout=10))["status"]
    left += st != "success"
print(left)
PY
}
for _ in $(seq 1 120); do [ "$(pending)" = 0 ] && break; sleep 0.5; done
check "every acknowledged write finished with success after the restart" [ "$(pending)" = 0 ]
# Every acknowledged email is at the fake (at least once: a write sent just
# before the kill may be sent again).
python3 - "$fport" "$work/load1.json" > "$work/count.txt" <<'PY'
import json, sys, urllib.request
port, path = sys.argv[1:]
acked = set(json.load(open(path))["acked"])
seen, after = {}, 0
while True:
    req = urllib.request.Request("http://127.0.0.1:%s/crm/v3/objects/contacts?limit=100&after=%d" % (port, after),
                                 headers={"Authorization": "Bearer load-token"})
    d = json.load(urllib.request.urlopen(req, timeout=10))
    for r in d["results"]:
        e = r["properties"].get("email")
        seen[e] = seen.get(e, 0) + 1
    nxt = d.get("paging", {}).get("next", {}).get("after")
    if nxt is None:
        break
    after = int(nxt)
missing = [e for e in acked if e not in seen]
dups = sum(1 for e in acked if seen.get(e, 0) > 1)
print(len(acked), len(missing), dups)
PY
read -r n_acked n_missing n_dups < "$work/count.txt"
echo "# acknowledged $n_acked, missing $n_missing, sent twice $n_dups"
check "no acknowledged write is lost" [ "$n_missing" -eq 0 ]

# Soak: the same load for $soak s, sampling resident memory.
rss() { awk '/VmRSS/ {print $2}' "/proc/$serve_pid/status"; }
python3 "$PB_SRCDIR/tests/load.py" "$base" "$key" "$pid" "$soak" "$work/soak.json" &
load_pid=$!
samples=()
for _ in $(seq 1 "$soak"); do sleep 1; samples+=("$(rss)"); done
wait "$load_pid"
errors=$(j 'sum(d["proxy_errors"].values()) + sum(d["write_errors"].values())' < "$work/soak.json")
ok=$(j 'd["proxy_ok"] + len(d["acked"])' < "$work/soak.json")
echo "# soak ${soak}s: $ok calls answered, rss samples (kB): ${samples[*]}"
check "soak: calls were answered" [ "$ok" -gt 0 ]
check "soak: no errors" [ "$errors" -eq 0 ]
# Flat after warm-up: the last sample is within 16 MB of the one at a third.
third=${samples[$(( ${#samples[@]} / 3 ))]}
last=${samples[$(( ${#samples[@]} - 1 ))]}
if ldd "$PB_BIN" 2>/dev/null | grep -q 'libasan'; then
  # AddressSanitizer keeps freed memory in quarantine: RSS says nothing there.
  echo "# sanitizer build: resident memory not judged ($third -> $last kB)"
else
  check "soak: resident memory flat after warm-up ($third -> $last kB)" [ $(( last - third )) -le 16384 ]
fi
kill -TERM "$serve_pid"; wait "$serve_pid"; rc=$?; serve_pid=
check "serve stops cleanly after the soak" [ "$rc" -eq 0 ]
finish
