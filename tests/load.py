"""Load driver for the shell tests: mixed proxy calls and asynchronous writes
against a running plugboard, from a few threads, for a bounded time.

  load.py BASE KEY PROJECT SECONDS OUT.json

Writes OUT.json: {"acked": [emails of writes answered 200 with an operationId],
"ops": [operation ids], "proxy_ok": n, "proxy_errors": {status: n},
"write_errors": {status: n}}. Connection errors (the server killed under it)
count as status "conn"."""
import json, sys, threading, time, urllib.request, urllib.error

base, key, project, seconds, out = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
lock = threading.Lock()
result = {"acked": [], "ops": [], "proxy_ok": 0, "proxy_errors": {}, "write_errors": {}}
deadline = time.time() + seconds
counter = [0]


def bump(kind, status):
    with lock:
        d = result[kind]
        d[str(status)] = d.get(str(status), 0) + 1


def request(method, url, headers, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception:
        return "conn", b""


def worker(n):
    while time.time() < deadline:
        with lock:
            counter[0] += 1
            i = counter[0]
        if i % 2:
            st, _ = request("GET", base + "/crm/v3/objects/contacts?limit=1", {
                "x-amp-proxy-version": "1", "x-api-key": key, "x-amp-project-id": project,
                "x-amp-integration-name": "crm", "x-amp-group-ref": "cust-1"})
            if st == 200:
                with lock:
                    result["proxy_ok"] += 1
            else:
                bump("proxy_errors", st)
        else:
            email = "load-%d-%d@x.test" % (n, i)
            body = json.dumps({"groupRef": "cust-1", "type": "create", "mode": "asynchronous",
                               "record": {"email": email}}).encode()
            st, data = request("POST", "%s/v1/projects/%s/integrations/crm/objects/contacts" % (base, project),
                               {"x-api-key": key, "Content-Type": "application/json"}, body)
            if st == 200:
                op = json.loads(data)["operationId"]
                with lock:
                    result["acked"].append(email)
                    result["ops"].append(op)
            else:
                bump("write_errors", st)


threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(out, "w") as f:
    json.dump(result, f)
