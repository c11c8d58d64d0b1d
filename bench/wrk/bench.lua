-- wrk script for scripts/bench: optional request body, one JSON result line.
--   BENCH_METHOD   request method (default GET, or POST when a body is set)
--   BENCH_BODY     a file whose bytes are sent as the body (Content-Type: application/json)
--   BENCH_COUNT    when set, each request body's "@N@" is replaced by a value
--                  unique to the request: BENCH_RUN-thread-counter (unique
--                  records for the Write API benchmarks)
local body_file = os.getenv("BENCH_BODY")
local method = os.getenv("BENCH_METHOD")
local counted = os.getenv("BENCH_COUNT")
local run_id = os.getenv("BENCH_RUN") or tostring(os.time())
local body = nil
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  body = f:read("*a")
  f:close()
end
wrk.method = method or (body and "POST" or "GET")
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local thread_id = 0
local n = 0
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

if counted and body then
  function request()
    n = n + 1
    local b = body:gsub("@N@", run_id .. "-" .. tostring(tid) .. "-" .. tostring(n))
    return wrk.format(nil, nil, nil, b)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
