-- wrk script of the peer benchmark: one connection per thread (run wrk with -t N -c N), so
-- each thread is one client going through workflows one after another, or firing one-way
-- starts. Configured by environment variables:
--   PEER_MODE    send  one-way start: every 2xx answer is a workflow accepted
--                call  request/response: the answer is the finished workflow (Restate,
--                      or Crane with Prefer: wait; a Crane answer that is not terminal yet
--                      is polled like `poll`)
--                poll  Crane: POST /runs, then GET /runs/{id} every PEER_POLL_MS until terminal
--   PEER_PATH    path of the POST;  PEER_BODY  its JSON body (may be empty)
--   PEER_PREFER  value of a Prefer header to send with the POST (optional)
--   PEER_POLL_MS pause between polls (default 2, as crane-bench)
-- done() prints one line "PEER_RESULT {json}" with counts and per-workflow latencies (ms).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } peer_timespec;
  int clock_gettime(int clk_id, peer_timespec *tp);
]]
local ts = ffi.new("peer_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local mode = os.getenv("PEER_MODE") or "send"
local path = os.getenv("PEER_PATH") or "/runs"
local body = os.getenv("PEER_BODY") or ""
local prefer = os.getenv("PEER_PREFER")
local poll_ms = tonumber(os.getenv("PEER_POLL_MS") or "2")

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- Per-thread state (each thread has its own Lua state). The counters are globals because
-- done() reads them with thread:get, which sees only globals.
local post_req, run_id, started, polling
local wf_requests = 0
accepted, completed, failed, requests, waited, errors = 0, 0, 0, 0, 0, 0
lats = {}

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  if prefer and prefer ~= "" then headers["Prefer"] = prefer end
  post_req = wrk.format("POST", path, headers, body)
end

function request()
  wf_requests = wf_requests + 1
  if polling then
    return wrk.format("GET", "/runs/" .. run_id)
  end
  started = now_ms()
  wf_requests = 1
  return post_req
end

function delay()
  if polling then return poll_ms end
  return 0
end

local terminal = {
  completed = true, failed = true, compensated = true,
  compensation_failed = true, cancelled = true,
}

-- The run's own status: Crane's run JSON has "status" at the top level before "steps".
local function run_status(b)
  return string.match(b, '^%s*{.-"status"%s*:%s*"([%a_]+)"')
end

-- A workflow ended: its requests count (those of one cut short by the end of the run do not).
local function finish(ok)
  polling = false
  requests = requests + wf_requests
  if ok then
    completed = completed + 1
    lats[#lats + 1] = now_ms() - started
  else
    failed = failed + 1
  end
end

function response(status, headers, b)
  if mode == "send" then
    if status >= 200 and status < 300 then accepted = accepted + 1 else errors = errors + 1 end
    return
  end
  if status < 200 or status >= 300 then
    errors = errors + 1
    finish(false)
    return
  end
  if polling then
    local s = run_status(b)
    if s and terminal[s] then finish(s == "completed") end
    return
  end
  accepted = accepted + 1
  if path ~= "/runs" then -- Restate: the answer is the workflow's result
    finish(true)
    return
  end
  for k, v in pairs(headers) do
    if string.lower(k) == "preference-applied" then waited = waited + 1 end
  end
  local s = run_status(b)
  if s and terminal[s] then
    finish(s == "completed")
  else
    run_id = string.match(b, '"run_id"%s*:%s*"([^"]+)"')
    polling = run_id ~= nil
    if not polling then finish(false) end
  end
end

function done(summary, latency, reqs)
  local t = { accepted = 0, completed = 0, failed = 0, requests = 0, waited = 0, errors = 0 }
  local all = {}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
    for _, l in ipairs(th:get("lats") or {}) do all[#all + 1] = string.format("%.3f", l) end
  end
  local e = summary.errors
  io.write(string.format(
    'PEER_RESULT {"accepted":%d,"completed":%d,"failed":%d,"requests":%d,"waited":%d,' ..
    '"http_errors":%d,"socket_errors":%d,"duration_us":%d,"latencies_ms":[%s]}\n',
    t.accepted, t.completed, t.failed, t.requests, t.waited, t.errors,
    e.connect + e.read + e.write + e.timeout, summary.duration, table.concat(all, ",")))
end
