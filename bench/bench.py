#!/usr/bin/env python3
"""plugboard's benchmarks: what the gateway costs on top of the call it makes.

Run through scripts/bench, which installs nginx, wrk and valgrind, builds
plugboard and the helpers, then calls this file. Everything runs on
127.0.0.1, every step is bounded in time, and every process started here is
stopped on exit (also on Ctrl-C or an overall time limit).

Each figure is the median of several runs with its min-max; a comparison is
the median of per-round ratios, where one round runs every contender once,
back to back, in a rotating order (the machine is shared and noisy: only
figures taken side by side mean much).
"""
import argparse
import atexit
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MB = 1024 * 1024

# ---------------------------------------------------------------- processes

PROCS = []


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def start(name, argv, workdir, stdin=None, stdout=None, env=None):
    """Starts a long-running process whose output goes to WORKDIR/NAME.log."""
    logf = open(os.path.join(workdir, f"{name}.log"), "ab")
    p = subprocess.Popen(argv, stdin=stdin, stdout=stdout if stdout else logf, stderr=logf,
                         env=env, start_new_session=True)
    p.bench_name = name
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=20):
    """Stops one process that this script started, by its pid."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        except ProcessLookupError:
            pass
    if p in PROCS:
        PROCS.remove(p)


def cleanup():
    for p in list(reversed(PROCS)):
        try:
            stop(p, timeout=10)
        except Exception as e:  # keep stopping the others
            log(f"could not stop {getattr(p, 'bench_name', p.pid)}: {e}")


def on_signal(signum, frame):
    raise SystemExit(f"bench: stopped by signal {signum}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30.0, headers=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status < 500:
                    return True
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def run(argv, timeout, env=None, check=True):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {r.returncode}: {r.stderr.strip()[:500]}")
    return r


# ---------------------------------------------------------------- memory

def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def rss_mb(pid):
    return proc_status(pid).get("VmRSS", 0) / 1024


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User + system CPU of processes (all their threads, live and exited)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def reset_peak(pid):
    """Makes VmHWM start again from the current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's resident memory every 50 ms while in use."""

    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def __enter__(self):
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.05)

    def __exit__(self, *a):
        self._stop.set()
        self.t.join()
        self.peak = max(self.peak, rss_mb(self.pid))


# ---------------------------------------------------------------- statistics

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(xs, digits=0, scale=1.0):
    """median (min-max)"""
    if not xs:
        return "n/a"
    v = [x * scale for x in xs]
    f = f"{{:,.{digits}f}}"
    if len(v) == 1:
        return f.format(v[0])
    return f"{f.format(med(v))} ({f.format(min(v))}–{f.format(max(v))})"


def fmt_ratio(xs):
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.2f}×"
    return f"{med(xs):.2f}× ({min(xs):.2f}–{max(xs):.2f})"


def rotate(items, r):
    k = r % len(items)
    return items[k:] + items[:k]


# ---------------------------------------------------------------- load tools

def wrk(url, conns, seconds, headers=(), body_file=None, method=None, counted=False,
        threads=2):
    env = dict(os.environ)
    if body_file:
        env["BENCH_BODY"] = body_file
    if method:
        env["BENCH_METHOD"] = method
    if counted:
        env["BENCH_COUNT"] = "1"
        env["BENCH_RUN"] = f"r{os.getpid()}x{time.monotonic_ns() % 10**9}"
    argv = ["wrk", "-t", str(min(threads, conns)), "-c", str(conns), "-d", f"{seconds}s",
            "--timeout", "10s", "-s", os.path.join(HERE, "wrk", "bench.lua")]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    r = run(argv, timeout=seconds + 60, env=env)
    for line in r.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            res = json.loads(line[len("WRK_RESULT "):])
            res["errors"] = sum(res[k] for k in res if k.startswith("err_"))
            return res
    raise RuntimeError(f"wrk printed no result: {r.stdout[-500:]} {r.stderr[-500:]}")


def burst(helpers, url, n, c, headers=(), body=None, method=None, timeout=180):
    argv = [os.path.join(helpers, "burst"), "-n", str(n), "-c", str(c)]
    for h in headers:
        argv += ["-H", h]
    if body is not None:
        argv += ["-d", body]
    if method:
        argv += ["-X", method]
    argv.append(url)
    r = run(argv, timeout=timeout, check=False)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"burst failed: {r.stderr.strip()[:300]}")


def curl_transfer(url, headers=(), upload=None, timeout=600):
    argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(timeout), "-w",
            "%{http_code} %{size_download} %{size_upload} %{time_total}"]
    for h in headers:
        argv += ["-H", h]
    if upload:
        argv += ["-T", upload, "-H", "Expect:"]
    argv.append(url)
    r = run(argv, timeout=timeout + 30)
    code, down, up, total = r.stdout.split()
    return int(code), int(down), int(up), float(total)


# ---------------------------------------------------------------- fixtures

def nginx_conf(template, workdir, name, **subs):
    with open(os.path.join(HERE, "nginx", template)) as f:
        text = f.read()
    subs["DIR"] = workdir
    for k, v in subs.items():
        text = text.replace(f"@{k}@", str(v))
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def start_nginx(workdir, name, conf, port):
    run(["nginx", "-t", "-q", "-p", workdir, "-c", conf], timeout=30)
    p = start(name, ["nginx", "-p", workdir, "-c", conf], workdir)
    wait_http(f"http://127.0.0.1:{port}/ready")
    return p


class FakeHub:
    """bench/fakehub: the project's fake HubSpot (tests/fake), standalone."""

    def __init__(self, helpers, workdir, access, refresh):
        self.p = start("fakehub", [os.path.join(helpers, "fakehub"), access, refresh], workdir,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"fakehub did not start: {line!r}")
        self.url = line.split()[1]
        self.lock = threading.Lock()

    def ask(self, cmd):
        with self.lock:
            self.p.stdin.write((cmd + "\n").encode())
            self.p.stdin.flush()
            return self.p.stdout.readline().decode().strip()

    def num(self, cmd):
        return int(self.ask(cmd))


class Plugboard:
    def __init__(self, prefix, workdir, upstream_port, fake_url, bench_token):
        self.prefix = prefix
        self.bin = os.path.join(prefix, "bin", "plugboard")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        var = os.path.join(workdir, "var")
        os.makedirs(var, exist_ok=True)
        plugins = os.path.join(prefix, "lib", "plugboard", "plugins")
        up = f"http://127.0.0.1:{upstream_port}"
        lines = [
            f"listen: 127.0.0.1:{self.port}",
            f"data_dir: {var}",
            f"store: sqlite:{var}/plugboard.db",
            f"master_key_file: {var}/master.key",
            f"plugin_dir: {plugins}",
            # nginx runs with access_log off; plugboard logs warnings only.
            "log: { level: warn, format: json }",
            "egress: { timeout_ms: 30000, allow_private: true }",
            "server: { connection_limit: 4096, connection_timeout_s: 300 }",
            "tokens: { refresh_margin_s: 300 }",
            "providers:",
            f"  upstream: {{ plugin: generic, base_url: \"{up}\" }}",
        ]
        integrations = ["  - name: bench-api", "    provider: upstream",
                        "    proxy: { enabled: true }"]
        if fake_url:
            # The same HubSpot plugin twice: API calls to nginx with tokens
            # from the fake (refresh benchmark), and everything to the fake
            # (Write API benchmarks).
            lines += [
                f"  hubrefresh: {{ plugin: hubspot, client_id: bench, client_secret: bench, "
                f"base_url: \"{up}\", token_url: \"{fake_url}/oauth/v1/token\" }}",
                f"  hubwrite: {{ plugin: hubspot, client_id: bench, client_secret: bench, "
                f"base_url: \"{fake_url}\", token_url: \"{fake_url}/oauth/v1/token\" }}",
            ]
            integrations += [
                "  - name: bench-refresh", "    provider: hubrefresh",
                "    proxy: { enabled: true }",
                "  - name: bench-crm", "    provider: hubwrite", "    proxy: { enabled: true }",
                "    write:", "      objects:", "        - objectName: contacts",
            ]
        self.config = os.path.join(workdir, "plugboard.yaml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        manifest = os.path.join(workdir, "amp.yaml")
        with open(manifest, "w") as f:
            f.write("specVersion: 1.0.0\nintegrations:\n" + "\n".join(integrations) + "\n")
        proj = self.cli("project", "create", "bench")
        self.project, self.key = proj["id"], proj["apiKey"]
        self.cli("manifest", "apply", manifest, "--project", "bench")
        self.inst = self.install("bench-api", "upstream", "proxy-1", "--access-token", bench_token)

    def cli(self, *args):
        r = run([self.bin, *args, "--config", self.config], timeout=60)
        return json.loads(r.stdout)

    def install(self, integration, provider, group, *cred):
        self.cli("connection", "import", "--project", "bench", "--provider", provider,
                 "--group-ref", group, *cred)
        return self.cli("installation", "create", "--project", "bench", "--integration",
                        integration, "--group-ref", group)["id"]

    def amp_headers(self, inst=None):
        return [f"x-amp-proxy-version: 1", f"x-amp-project-id: {self.project}",
                f"x-api-key: {self.key}", f"x-amp-installation-id: {inst or self.inst}"]

    def serve(self, wrapper=(), timeout=30):
        self.proc = start("plugboard", [*wrapper, self.bin, "serve", "--config", self.config],
                          self.workdir)
        wait_http(self.url + "/healthz", timeout=timeout)
        return self.proc

    def stop(self, timeout=60):
        if self.proc:
            stop(self.proc, timeout=timeout)
            self.proc = None

    @property
    def pid(self):
        return self.proc.pid


# ---------------------------------------------------------------- benchmarks

def bench_proxy(ctx):
    """wrk, keep-alive, 1/64/256 connections, small GET and 4 KB POST:
    direct vs nginx (adds Authorization) vs plugboard (Ampersand style)."""
    a, pb = ctx.args, ctx.pb
    pbs = {"plugboard": pb}
    targets = [
        ("direct", f"http://127.0.0.1:{ctx.up_port}/v1/contacts/42", []),
        ("nginx", f"http://127.0.0.1:{ctx.px_port}/v1/contacts/42", []),
        ("plugboard", f"{pb.url}/v1/contacts/42", pb.amp_headers()),
    ]
    if ctx.pb2:
        pbs["plugboard-B"] = ctx.pb2
        targets.append(("plugboard-B", f"{ctx.pb2.url}/v1/contacts/42", ctx.pb2.amp_headers()))
    kinds = [k for k in (("GET", None), ("POST 4 KB", ctx.body4k))
             if k[0].split()[0].lower() in a.kinds]
    rows = []
    for kind, body in kinds:
        for conns in a.conns:
            res = {name: [] for name, _, _ in targets}
            rss = {name: [] for name in pbs}
            for name, url, hdrs in targets:  # warm-up: connections, caches, pools
                burst(ctx.helpers, url, conns * 4, conns, hdrs,
                      body="@" + body if body else None)
                if a.warmup:
                    wrk(url, conns, a.warmup, hdrs, body)
            for r in range(a.reps):
                for name, url, hdrs in rotate(targets, r):
                    pids = [pbs[name].pid] if name in pbs else ctx.cpu_pids.get(name, [])
                    c0 = cpu_seconds(pids)
                    if name in pbs:
                        with RssSampler(pbs[name].pid) as s:
                            x = wrk(url, conns, a.seconds, hdrs, body)
                        rss[name].append(s.peak)
                    else:
                        x = wrk(url, conns, a.seconds, hdrs, body)
                    if pids and x["requests"]:
                        x["cpu_us"] = (cpu_seconds(pids) - c0) * 1e6 / x["requests"]
                    res[name].append(x)
            rows.append({"kind": kind, "conns": conns, "res": res, "rss": rss})
            log(f"proxy {kind} c={conns}: " + "  ".join(
                f"{k} {med([x['rps'] for x in v]):,.0f}" for k, v in res.items()) +
                " req/s; RSS " + ", ".join(f"{k} {max(v):.1f} MB" for k, v in rss.items()))
    ctx.results["proxy"] = rows


def bench_stream(ctx):
    """A large download and upload through plugboard vs direct."""
    a, pb = ctx.args, ctx.pb
    size = a.stream_mb * MB
    up = f"http://127.0.0.1:{ctx.up_port}"
    rows = []
    for direction in ("download", "upload"):
        path = "/blob" if direction == "download" else "/sink"
        upload = ctx.blob if direction == "upload" else None
        pbs = {"plugboard": pb}
        targets = [("direct", up + path, []), ("plugboard", pb.url + path, pb.amp_headers())]
        if ctx.pb2:
            pbs["plugboard-B"] = ctx.pb2
            targets.append(("plugboard-B", ctx.pb2.url + path, ctx.pb2.amp_headers()))
        res = {name: [] for name, _, _ in targets}
        growth = {name: [] for name in pbs}
        ratios = {name: [] for name in pbs}
        for r in range(a.stream_reps):
            got = {}
            for name, url, hdrs in rotate(targets, r):
                if name in pbs:
                    pid = pbs[name].pid
                    base = rss_mb(pid)
                    reset_peak(pid)
                    with RssSampler(pid) as s:
                        code, down, upl, secs = curl_transfer(url, hdrs, upload)
                    hwm = proc_status(pid).get("VmHWM", 0) / 1024
                    growth[name].append(max(s.peak, hwm) - base)
                else:
                    code, down, upl, secs = curl_transfer(url, hdrs, upload)
                moved = down if direction == "download" else upl
                if code != 200 or moved != size:
                    raise RuntimeError(f"{direction} via {name}: status {code}, {moved} of {size} bytes")
                got[name] = size / secs / MB
                res[name].append(got[name])
            for name in pbs:
                ratios[name].append(got[name] / got["direct"])
        rows.append({"direction": direction, "res": res, "ratios": ratios, "growth": growth})
        log(f"stream {direction}: " + ", ".join(f"{k} {med(v):,.0f} MB/s" for k, v in res.items())
            + "; RSS growth " + ", ".join(f"{k} {max(v):.1f} MB" for k, v in growth.items()))
    ctx.results["stream"] = rows


def bench_refresh(ctx):
    """500 concurrent calls with an expired token: one refresh, and its cost."""
    a, pb, fake = ctx.args, ctx.pb, ctx.fake
    n = 500
    rounds = []
    url = pb.url + "/v1/contacts/42"
    for r in range(a.refresh_reps):
        # A new connection each round: an access token inside the refresh
        # margin (stale), and the same setup with a fresh one as the baseline.
        stale = pb.install("bench-refresh", "hubrefresh", f"stale-{r}", "--access-token",
                           f"stale-token-{r}", "--refresh-token", ctx.refresh_token,
                           "--expires-in", "60")
        fresh = pb.install("bench-refresh", "hubrefresh", f"fresh-{r}", "--access-token",
                           f"fresh-token-{r}", "--refresh-token", ctx.refresh_token,
                           "--expires-in", "86400")
        out = {}
        for name, inst in rotate([("stale", stale), ("fresh", fresh)], r):
            t0 = fake.num("tokens")
            out[name] = burst(ctx.helpers, url, n, n, pb.amp_headers(inst))
            out[name + "_refreshes"] = fake.num("tokens") - t0
            if out[name]["s2xx"] != n:
                raise RuntimeError(f"refresh round {r} ({name}): {out[name]}")
        rounds.append(out)
        log(f"refresh round {r}: {out['stale_refreshes']} refresh call(s); p50 "
            f"{out['stale']['p50_ms']:.1f} ms expired vs {out['fresh']['p50_ms']:.1f} ms fresh")
    ctx.results["refresh"] = rounds


def write_body(kind, i_marker="@N@"):
    if kind == "async":
        return json.dumps({"groupRef": "writer", "type": "create", "mode": "asynchronous",
                           "record": {"email": f"a{i_marker}@bench.test", "firstname": "Ada"}})
    if kind == "autobatch":
        return json.dumps({"groupRef": "writer", "type": "create", "mode": "asynchronous",
                           "record": {"email": f"b{i_marker}@bench.test", "firstname": "Ada"},
                           "autoBatchPolicy": {"maxDelayMinutes": 1}})
    if kind == "batch":
        return json.dumps({"groupRef": "writer", "type": "create", "mode": "synchronous",
                           "batch": [{"record": {"email": f"c{i_marker}-{k}@bench.test",
                                                 "firstname": "Ada"}} for k in range(100)]})
    raise ValueError(kind)


def bench_write(ctx):
    """Write API: durable async writes accepted per second, end-to-end batch
    records per second, and auto batching's provider calls per 10,000 writes."""
    a, pb, fake = ctx.args, ctx.pb, ctx.fake
    url = f"{pb.url}/v1/projects/{pb.project}/integrations/bench-crm/objects/contacts"
    hdrs = [f"x-api-key: {pb.key}"]
    files = {}
    for kind in ("async", "autobatch", "batch"):
        files[kind] = os.path.join(ctx.workdir, f"write-{kind}.json")
        with open(files[kind], "w") as f:
            f.write(write_body(kind))
    out = {"notes": []}
    # A probe: does the Write API answer at all yet?
    probe = burst(ctx.helpers, url, 1, 1, hdrs, body=write_body("batch", "probe"))
    if probe["s2xx"] != 1:
        out["notes"].append(f"synchronous batch write answered {probe} (not 200)")
    else:
        # End to end: synchronous batches of 100 against the fake.
        recs0 = fake.num("records contacts")
        batch = []
        for r in range(a.reps):
            x = wrk(url, 16, a.seconds, hdrs, files["batch"], counted=True)
            batch.append(x)
        recs = fake.num("records contacts") - recs0
        out["batch"] = batch
        out["batch_records_stored"] = recs
        log(f"write batch: {med([x['rps'] * 100 for x in batch]):,.0f} records/s, "
            f"{recs} records at the fake")

    # Auto batching: 10,000 asynchronous single-record creates.
    probe = burst(ctx.helpers, url, 1, 1, hdrs, body=write_body("async", "probe"))
    if probe["s2xx"] != 1:
        out["notes"].append(f"asynchronous write answered {probe} (not 200)")
        ctx.results["write"] = out
        return
    time.sleep(2)  # let the probe's write reach the fake
    n = 10000
    calls0 = fake.num("count POST /crm/v3/objects/contacts/batch/create")
    recs0 = fake.num("records contacts")
    t0 = time.monotonic()
    acc = burst(ctx.helpers, url, n, 64, hdrs, body="@" + files["autobatch"], timeout=300)
    deadline = time.monotonic() + a.drain_timeout
    recs = 0
    while time.monotonic() < deadline:
        recs = fake.num("records contacts") - recs0
        if recs >= n:
            break
        time.sleep(0.2)
    e2e = time.monotonic() - t0
    time.sleep(1)  # a late extra call would show here
    calls = fake.num("count POST /crm/v3/objects/contacts/batch/create") - calls0
    recs = fake.num("records contacts") - recs0
    out["autobatch"] = {"accepted": acc, "provider_calls": calls, "records": recs,
                        "seconds": e2e, "complete": recs >= n}
    log(f"write autobatch: {acc['s2xx']} accepted at {acc['rps']:,.0f}/s, {calls} provider "
        f"calls, {recs} records in {e2e:.1f} s")

    # Durable asynchronous writes accepted per second, 64 clients (last: the
    # queue it leaves behind drains in the background).
    acc = []
    for r in range(a.reps):
        acc.append(wrk(url, 64, a.seconds, hdrs, files["async"], counted=True))
    out["async"] = acc
    log(f"write async: {med([x['rps'] for x in acc]):,.0f} accepted/s")
    ctx.results["write"] = out


CALLGRIND_N = 2000


def bench_profile(ctx):
    """The proxy path under callgrind (or perf where hardware counters work):
    a fixed number of small GETs after a warm-up; self and inclusive top."""
    pb = ctx.pb
    hdrs = pb.amp_headers()
    url = pb.url + "/v1/contacts/42"
    out_dir = os.path.join(ctx.workdir, "profile")
    os.makedirs(out_dir, exist_ok=True)
    pb.stop()
    tool = "callgrind"
    if not ctx.args.callgrind and shutil.which("perf"):
        r = run(["perf", "stat", "-x,", "-e", "instructions", "true"], timeout=30, check=False)
        if r.returncode == 0 and "not supported" not in r.stderr and "<not" not in r.stderr:
            tool = "perf"
    prof = {"tool": tool, "requests": CALLGRIND_N}
    if tool == "callgrind":
        cg = os.path.join(out_dir, "callgrind.out")
        pb.serve(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                  f"--callgrind-out-file={cg}"], timeout=120)
        burst(ctx.helpers, url, 200, 8, hdrs, timeout=300)
        run(["callgrind_control", "-i", "on", str(pb.pid)], timeout=60)
        run(["callgrind_control", "-z", str(pb.pid)], timeout=60)
        x = burst(ctx.helpers, url, CALLGRIND_N, 8, hdrs, timeout=600)
        run(["callgrind_control", "-d", str(pb.pid)], timeout=120)
        pb.stop(timeout=120)
        dumps = sorted((f for f in os.listdir(out_dir) if f.startswith("callgrind.out.")),
                       key=lambda f: int(f.rsplit(".", 1)[1]))
        data = os.path.join(out_dir, dumps[-1])
        prof["file"] = data
        prof["ok"] = x["s2xx"]
        prof["self"] = annotate(data, inclusive=False)
        prof["inclusive"] = annotate(data, inclusive=True)
    else:
        pb.serve()
        data = os.path.join(out_dir, "perf.data")
        w = threading.Thread(target=wrk, args=(url, 64, 8, hdrs))
        w.start()
        time.sleep(1)
        run(["perf", "record", "-g", "-o", data, "-p", str(pb.pid), "--", "sleep", "5"],
            timeout=60)
        w.join()
        pb.stop()
        r = run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol",
                 "--stdio", "-g", "none"], timeout=120)
        prof["self"] = [l.strip() for l in r.stdout.splitlines() if "%" in l][:25]
        prof["inclusive"] = []
    ctx.results["profile"] = prof
    pb.serve()  # the plain server again, for what follows


def annotate(data, inclusive, top=25):
    r = run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", data],
            timeout=120)
    rows, total = [], None
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        name = m.group(3)
        if "PROGRAM TOTALS" in name:
            total = ir
            continue
        # file:function [object]  ->  function (object or file)
        fm = re.match(r"(.*?):(\S+)(?: \[(.*)\])?$", name)
        if fm:
            src, fn, obj = fm.groups()
            where = os.path.basename(obj) if obj else ""
            m2 = re.search(r"/((?:core|plugins|tests)/.*)$", src or "")
            if m2:  # plugboard's own sources, relative to the tree
                where = m2.group(1)
            name = f"{fn} ({where})" if where else fn
        rows.append((ir, float(m.group(2)), name))
        if len(rows) >= top:
            break
    return {"total": total, "rows": rows}


# ---------------------------------------------------------------- report

TARGETS = {
    "proxy_rps": 0.8, "proxy_p99": 1.5, "rss_idle": 20, "rss_256": 64,
    "stream_ratio": 0.7, "stream_growth": 32, "async_accepted": 5000,
}


def yes(ok):
    return "met" if ok else "**missed**"


def report(ctx):
    R, L = ctx.results, []
    a = ctx.args
    L.append(f"Machine: {ctx.machine}. Mode: {'--quick' if a.quick else 'full'}; "
             f"{a.reps} interleaved rounds of {a.seconds} s per cell (wrk, keep-alive), "
             f"streaming {a.stream_mb} MiB × {a.stream_reps}. Figures: median (min–max).")
    L.append("")
    summary = []
    if "proxy" in R:
        L += ["### Proxy: requests/s", "",
              "| request | conns | direct | nginx (+Authorization) | plugboard | plugboard ÷ nginx | plugboard ÷ direct | nginx ÷ direct |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in R["proxy"]:
            res = row["res"]
            rps = {k: [x["rps"] for x in v] for k, v in res.items()}
            pn = [p / n for p, n in zip(rps["plugboard"], rps["nginx"])]
            pd = [p / d for p, d in zip(rps["plugboard"], rps["direct"])]
            nd = [n / d for n, d in zip(rps["nginx"], rps["direct"])]
            errs = sum(x["errors"] for v in res.values() for x in v)
            note = f" ⚠ {errs} errors" if errs else ""
            L.append(f"| {row['kind']} | {row['conns']} | {fmt(rps['direct'])} | {fmt(rps['nginx'])} "
                     f"| {fmt(rps['plugboard'])}{note} | {fmt_ratio(pn)} | {fmt_ratio(pd)} | {fmt_ratio(nd)} |")
            row["pn"] = pn
        L += ["", "### Proxy: CPU time per request (µs, user + system, all threads or workers)", "",
              "| request | conns | nginx (+Authorization) | plugboard | plugboard ÷ nginx |",
              "|---|---:|---:|---:|---:|"]
        for row in R["proxy"]:
            res = row["res"]
            cn = [x.get("cpu_us", 0) for x in res["nginx"]]
            cp = [x.get("cpu_us", 0) for x in res["plugboard"]]
            L.append(f"| {row['kind']} | {row['conns']} | {fmt(cn, 1)} | {fmt(cp, 1)} "
                     f"| {fmt_ratio([p / n for p, n in zip(cp, cn) if n])} |")
        L += ["", "### Proxy: latency (ms) and plugboard's memory", "",
              "| request | conns | p50 direct | p50 nginx | p50 plugboard | p99 direct | p99 nginx | p99 plugboard | p99 plugboard ÷ nginx | plugboard RSS peak (MB) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in R["proxy"]:
            res = row["res"]
            p50 = {k: [x["p50_us"] / 1000 for x in v] for k, v in res.items()}
            p99 = {k: [x["p99_us"] / 1000 for x in v] for k, v in res.items()}
            r99 = [p / n for p, n in zip(p99["plugboard"], p99["nginx"])]
            row["r99"] = r99
            L.append(f"| {row['kind']} | {row['conns']} | {fmt(p50['direct'], 2)} | {fmt(p50['nginx'], 2)} "
                     f"| {fmt(p50['plugboard'], 2)} | {fmt(p99['direct'], 2)} | {fmt(p99['nginx'], 2)} "
                     f"| {fmt(p99['plugboard'], 2)} | {fmt_ratio(r99)} | {max(row['rss']['plugboard']):.1f} |")
        for row in R["proxy"]:
            if row["conns"] == 64:
                summary.append((f"throughput ≥ 0.8× nginx at 64 connections ({row['kind']})",
                                fmt_ratio(row["pn"]), med(row["pn"]) >= TARGETS["proxy_rps"]))
                summary.append((f"p99 ≤ 1.5× nginx at 64 connections ({row['kind']})",
                                fmt_ratio(row["r99"]), med(row["r99"]) <= TARGETS["proxy_p99"]))
        rss256 = max([max(r["rss"]["plugboard"]) for r in R["proxy"] if r["conns"] == 256] or [0])
        summary.append(("RSS ≤ 20 MB idle", f"{ctx.rss_idle:.1f} MB", ctx.rss_idle <= TARGETS["rss_idle"]))
        if rss256:
            summary.append(("RSS ≤ 64 MB at 256 connections", f"{rss256:.1f} MB", rss256 <= TARGETS["rss_256"]))
        if ctx.pb2:
            L += ["", f"### Proxy: plugboard-B ({ctx.pb2.prefix}) against plugboard ({ctx.pb.prefix}), same rounds", "",
                  "| request | conns | plugboard req/s | plugboard-B req/s | B ÷ plugboard | B ÷ nginx | p99 B (ms) | p99 B ÷ nginx | CPU µs/req plugboard → B | RSS peak B (MB) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for row in R["proxy"]:
                res = row["res"]
                a_ = [x["rps"] for x in res["plugboard"]]
                b_ = [x["rps"] for x in res["plugboard-B"]]
                n_ = [x["rps"] for x in res["nginx"]]
                p99b = [x["p99_us"] / 1000 for x in res["plugboard-B"]]
                p99n = [x["p99_us"] / 1000 for x in res["nginx"]]
                L.append(f"| {row['kind']} | {row['conns']} | {fmt(a_)} | {fmt(b_)} "
                         f"| {fmt_ratio([b / x for b, x in zip(b_, a_)])} | {fmt_ratio([b / n for b, n in zip(b_, n_)])} "
                         f"| {fmt(p99b, 2)} | {fmt_ratio([b / n for b, n in zip(p99b, p99n)])} "
                         f"| {med([x.get('cpu_us', 0) for x in res['plugboard']]):.1f} → "
                         f"{med([x.get('cpu_us', 0) for x in res['plugboard-B']]):.1f} "
                         f"| {max(row['rss']['plugboard-B']):.1f} |")
        L.append("")
        L.append(f"plugboard RSS idle (started, store open, plugins loaded, no call yet): "
                 f"{ctx.rss_idle:.1f} MB; after all proxy runs, idle again: {ctx.rss_after_proxy:.1f} MB.")
        L.append("")
    if "stream" in R:
        L += [f"### Streaming {a.stream_mb} MiB (curl, one transfer at a time)", "",
              "| direction | direct MB/s | plugboard MB/s | plugboard ÷ direct | plugboard peak RSS growth (MB) |",
              "|---|---:|---:|---:|---:|"]
        for row in R["stream"]:
            for name in row["growth"]:
                label = row["direction"] + ("" if name == "plugboard" else f" ({name})")
                L.append(f"| {label} | {fmt(row['res']['direct'])} | {fmt(row['res'][name])} "
                         f"| {fmt_ratio(row['ratios'][name])} | {fmt(row['growth'][name], 1)} |")
            r_, g_ = row["ratios"]["plugboard"], row["growth"]["plugboard"]
            summary.append((f"streaming {row['direction']} ≥ 0.7× direct", fmt_ratio(r_),
                            med(r_) >= TARGETS["stream_ratio"]))
            summary.append((f"streaming {row['direction']} RSS growth ≤ 32 MB", f"{max(g_):.1f} MB",
                            max(g_) <= TARGETS["stream_growth"]))
        L.append("")
    if "refresh" in R:
        rounds = R["refresh"]
        refreshes = [r["stale_refreshes"] for r in rounds]
        L += ["### Token refresh: 500 concurrent calls on one connection", "",
              "| | fresh token | expired token | added by the refresh |", "|---|---:|---:|---:|"]
        for k, label in (("p50_ms", "p50 (ms)"), ("p99_ms", "p99 (ms)"), ("max_ms", "max (ms)"),
                         ("wall_ms", "all 500 answered (ms)")):
            f_ = [r["fresh"][k] for r in rounds]
            s_ = [r["stale"][k] for r in rounds]
            L.append(f"| {label} | {fmt(f_, 1)} | {fmt(s_, 1)} | {fmt([s - f for s, f in zip(s_, f_)], 1)} |")
        L.append(f"| upstream refresh calls per round | {fmt([r['fresh_refreshes'] for r in rounds])} "
                 f"| {', '.join(map(str, refreshes))} | |")
        L.append("")
        summary.append(("token refresh: 1 upstream call for 500 concurrent calls",
                        ", ".join(map(str, refreshes)), all(x == 1 for x in refreshes)))
    if "write" in R:
        w = R["write"]
        L += ["### Write API (HubSpot fake on loopback)", "", "| benchmark | figure |", "|---|---:|"]
        if "batch" in w:
            L.append(f"| end to end: synchronous batches of 100, 16 clients — records/s | "
                     f"{fmt([x['rps'] * 100 for x in w['batch']])} |")
            L.append(f"| … records the fake stored / errors | {w['batch_records_stored']:,} / "
                     f"{sum(x['errors'] for x in w['batch'])} |")
        if "autobatch" in w:
            ab = w["autobatch"]
            L.append(f"| auto batching: provider calls per 10,000 writes | {ab['provider_calls']} |")
            L.append(f"| … accepted (64 clients) / stored at the fake / seconds until all stored | "
                     f"{ab['accepted']['s2xx']:,} at {ab['accepted']['rps']:,.0f}/s / {ab['records']:,} / "
                     f"{ab['seconds']:.1f}{'' if ab['complete'] else ' (timed out)'} |")
            summary.append(("auto batching: 100 provider calls per 10,000 writes",
                            str(ab["provider_calls"]), ab["provider_calls"] == 100 and ab["complete"]))
        if "async" in w:
            rps = [x["rps"] for x in w["async"]]
            L.append(f"| durable asynchronous writes accepted/s, 64 clients | {fmt(rps)} |")
            L.append(f"| … p50 / p99 latency (ms) | {fmt([x['p50_us'] / 1000 for x in w['async']], 2)} / "
                     f"{fmt([x['p99_us'] / 1000 for x in w['async']], 2)} |")
            errs = sum(x["errors"] for x in w["async"])
            if errs:
                L.append(f"| … errors (non-2xx, socket) | {errs} |")
            summary.append(("≥ 5,000 durable async writes accepted/s", fmt(rps), med(rps) >= TARGETS["async_accepted"]))
        for n in w.get("notes", []):
            L.append(f"| not measured | {n} |")
        L.append("")
    if "profile" in R:
        p = R["profile"]
        L += [f"### Profile of the proxy path ({p['tool']}, {p.get('requests')} small GETs, 8 connections)", ""]
        if p["tool"] == "callgrind":
            per = p["self"]["total"] / p["requests"] if p["self"]["total"] else 0
            L.append(f"{p['self']['total']:,} instructions in all, {per:,.0f} per request.")
            L.append("")
            for title, key in (("self", "self"), ("inclusive", "inclusive")):
                L += [f"Top by {title} cost:", "", "| Ir | % | function |", "|---:|---:|---|"]
                for ir, pc, name in p[key]["rows"][:20]:
                    L.append(f"| {ir:,} | {pc:.2f} | `{name}` |")
                L.append("")
        else:
            L += ["```"] + p["self"] + ["```", ""]
    if summary:
        S = ["### Targets", "", "| target | measured | |", "|---|---:|---|"]
        for what, val, ok in summary:
            S.append(f"| {what} | {val} | {yes(ok)} |")
        L = S + [""] + L
    return "\n".join(L)


# ---------------------------------------------------------------- main

class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", required=True, help="installed plugboard (bin/, lib/plugboard/plugins)")
    ap.add_argument("--helpers", required=True, help="directory with burst and fakehub")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="proxy,stream,refresh,write,profile",
                    help="comma-separated: proxy,stream,refresh,write,profile")
    ap.add_argument("--out", help="also write the markdown here")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--callgrind", action="store_true", help="profile with callgrind even where perf works")
    ap.add_argument("--max-minutes", type=float, default=45)
    ap.add_argument("--conns", default="1,64,256", help="proxy concurrencies")
    ap.add_argument("--kinds", default="get,post", help="proxy requests: get, post (4 KB)")
    ap.add_argument("--compare", metavar="PREFIX",
                    help="a second plugboard build run as plugboard-B in the same rounds "
                         "(proxy and streaming): before/after figures for a change")
    a = ap.parse_args()
    if a.quick:
        a.seconds, a.warmup, a.reps = 1, 0, 3
        a.stream_mb, a.stream_reps, a.refresh_reps = 256, 3, 3
        a.drain_timeout = 60
        if a.only == ap.get_default("only"):
            a.only = "proxy,stream,refresh,write"
    else:
        a.seconds, a.warmup, a.reps = 5, 2, 5
        a.stream_mb, a.stream_reps, a.refresh_reps = 1024, 5, 5
        a.drain_timeout = 120
    only = set(a.only.split(","))
    a.conns = [int(c) for c in a.conns.split(",")]
    a.kinds = a.kinds.split(",")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(a.max_minutes * 60))
    atexit.register(cleanup)

    ctx = Ctx()
    ctx.args, ctx.helpers, ctx.results = a, a.helpers, {}
    ctx.workdir = w = os.path.abspath(a.workdir)
    for d in ("tmp", "data"):
        os.makedirs(os.path.join(w, d), exist_ok=True)
    # nginx started as root serves files as "nobody": let it read the blob.
    for d in (w, os.path.join(w, "data")):
        os.chmod(d, 0o755)
    ctx.machine = f"{os.cpu_count()} CPUs, {os.uname().release}"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        ctx.machine = f"{model}, {ctx.machine}"
    except OSError:
        pass

    ctx.body4k = os.path.join(w, "body-4k.json")
    with open(ctx.body4k, "w") as f:
        f.write('{"data":"' + "x" * (4096 - 11) + '"}')
    ctx.blob = os.path.join(w, "data", "blob")
    with open(ctx.blob, "wb") as f:  # sparse: costs no disk
        f.truncate(a.stream_mb * MB)
    os.chmod(ctx.blob, 0o644)

    token = "bench-upstream-token-7f3a9c"
    ctx.up_port, ctx.px_port = free_port(), free_port()
    start_nginx(w, "nginx-upstream", nginx_conf("upstream.conf", w, "upstream.conf", PORT=ctx.up_port),
                ctx.up_port)
    px = start_nginx(w, "nginx-proxy", nginx_conf("proxy.conf", w, "proxy.conf", PORT=ctx.px_port,
                                                  UPSTREAM_PORT=ctx.up_port, TOKEN=token), ctx.px_port)
    ctx.cpu_pids = {"nginx": [px.pid] + children(px.pid)}
    ctx.fake = None
    ctx.refresh_token = "bench-refresh-token"
    if only & {"refresh", "write"}:
        if os.path.exists(os.path.join(a.helpers, "fakehub")):
            ctx.fake = FakeHub(a.helpers, w, "bench-hubspot-token", ctx.refresh_token)
        else:
            log("no fakehub helper: skipping the refresh and write benchmarks")
            only -= {"refresh", "write"}
    ctx.pb = Plugboard(a.prefix, w, ctx.up_port, ctx.fake.url if ctx.fake else None, token)
    ctx.pb2 = None
    if a.compare:
        os.makedirs(os.path.join(w, "b"), exist_ok=True)
        ctx.pb2 = Plugboard(a.compare, os.path.join(w, "b"), ctx.up_port, None, token)
        ctx.pb2.serve()
    if "write" in only:
        ctx.pb.install("bench-crm", "hubwrite", "writer", "--access-token", "bench-hubspot-token",
                       "--refresh-token", ctx.refresh_token)
    ctx.pb.serve()
    time.sleep(0.5)
    ctx.rss_idle = rss_mb(ctx.pb.pid)
    log(f"plugboard {ctx.pb.url} (pid {ctx.pb.pid}) idle RSS {ctx.rss_idle:.1f} MB; "
        f"upstream :{ctx.up_port}, nginx proxy :{ctx.px_port}")
    # One call each way before measuring anything.
    for url, hdrs in ((f"http://127.0.0.1:{ctx.px_port}/x", []), (ctx.pb.url + "/x", ctx.pb.amp_headers())):
        x = burst(a.helpers, url, 1, 1, hdrs)
        if x["s2xx"] != 1:
            raise RuntimeError(f"{url} did not answer 200: {x}")

    # The profile comes before the Write API: asynchronous writes leave a
    # queue that drains in the background for a while.
    steps = [("proxy", bench_proxy), ("stream", bench_stream), ("refresh", bench_refresh),
             ("profile", bench_profile), ("write", bench_write)]
    t0 = time.monotonic()
    for name, fn in steps:
        if name not in only:
            continue
        t = time.monotonic()
        try:
            fn(ctx)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            log(f"{name}: FAILED: {e}")
            ctx.results.setdefault("failed", []).append(f"{name}: {e}")
            if ctx.pb.proc is None or ctx.pb.proc.poll() is not None:
                log("restarting plugboard")
                ctx.pb.proc = None
                ctx.pb.serve()
        if name == "proxy":
            time.sleep(1)
            ctx.rss_after_proxy = rss_mb(ctx.pb.pid)
        log(f"{name} took {time.monotonic() - t:.0f} s")
    md = report(ctx)
    if ctx.results.get("failed"):
        md += "\n### Failed\n\n" + "\n".join(f"- {f}" for f in ctx.results["failed"]) + "\n"
    md += f"\n(benchmarks took {time.monotonic() - t0:.0f} s)\n"
    print(md)
    if a.out:
        with open(a.out, "w") as f:
            f.write(md + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(ctx.results, f, indent=1, default=str)
    return 1 if ctx.results.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
