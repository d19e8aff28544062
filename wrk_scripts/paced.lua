-- Constant request rate with Debian's wrk 4 (which has no -R): the seed's
-- workload, paced like wrk2 and measured from each request's due time.
--
-- Usage (one connection per thread: -tN -cN, and PACED_THREADS=N):
--   PACED_RATE=8000 PACED_THREADS=16 PACED_WORKLOAD=put PACED_OUT=put.json \
--     wrk -t16 -c16 -d30s -s wrk_scripts/paced.lua http://127.0.0.1:8080
--
-- design: wrk is closed loop: each connection sends its next request when the
-- previous answer arrives. Its Lua hook delay() may hold that next request
-- back, in whole milliseconds. Each thread has its own Lua state and here its
-- own single connection, so the thread can keep its own schedule: request i
-- of thread k is due at t0 + (k + i * threads) / rate. The thread count comes
-- from PACED_THREADS, not from counting setup() calls: wrk starts each thread
-- as soon as its setup() returns, so the count is not known until the last
-- one, and telling the threads already running would write into a Lua state
-- another OS thread is using (a data race that crashed wrk now and then, with
-- SIGSEGV or a Lua panic). delay() waits until the
-- due time (rounded down to the millisecond: a request may go up to 1 ms
-- early, never late because of the rounding), so the threads together offer
-- `rate` requests per second.
--
-- Latency is counted from the due time when the request went out late, which
-- happens only when the previous answer came after the due time: a stalled
-- server is charged for every request that should have gone out meanwhile
-- (no coordinated omission, as in wrk2). A request that went out on time or
-- early counts from when it was sent. The clock is clock_gettime through
-- LuaJIT's ffi: wrk gives scripts no clock finer than a second.
--
-- wrk's own latency figures stay closed loop; the paced figures are written
-- by done() to PACED_OUT as JSON: a histogram of latencies in microseconds
-- (3 significant digits), status counts, the number of requests that went out
-- late, and the time the load took (the answers over the threads' summed
-- rates).
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")
local ffi = require("ffi")

ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
  int clock_gettime(int clock_id, paced_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("paced_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

local threads = {}
local START_DELAY = 0.5 -- seconds between setup and request 0: time to connect

function setup(thread)
  common.setup(thread)
  table.insert(threads, thread)
  local rate = tonumber(os.getenv("PACED_RATE") or "")
  if not rate or rate <= 0 then
    error("paced.lua: set PACED_RATE to the total requests per second")
  end
  local total = tonumber(os.getenv("PACED_THREADS") or "")
  if not total or #threads > total then
    error("paced.lua: set PACED_THREADS to wrk's thread count (-t)")
  end
  if #threads == 1 then
    threads.t0 = now() + START_DELAY
  end
  -- Only this thread's own state is set here: it is not running yet.
  thread:set("thread_total", total)
  thread:set("rate", rate)
  thread:set("t0", threads.t0)
  thread:set("workload", os.getenv("PACED_WORKLOAD") or "get")
end

-- Per-thread state (each thread has its own copy of these globals).
local index = 0 -- requests this thread has sent
local due = 0 -- due time of the request in flight
local sent = 0 -- when it went out
local answered_at = 0 -- when the previous answer arrived
histogram = {} -- latency bucket (us, 3 significant digits) -> count
statuses = {} -- status code (as a string: JSON keys) -> count
late = 0
answered = 0
first_due = nil
last_done = 0

function init(args)
  common.init()
end

-- Thread k (0-based) owns requests k, k + threads, k + 2 * threads, ...
local function due_of(i)
  return t0 + (thread_number - 1 + i * thread_total) / rate
end

local function bucket(us)
  if us < 1000 then
    return math.max(1, math.floor(us))
  end
  local scale = 10 ^ (math.floor(math.log10(us)) - 2)
  return math.floor(us / scale) * scale
end

function delay()
  local wait = due_of(index) - now()
  if wait <= 0 then
    return 0
  end
  return math.floor(wait * 1000)
end

local methods = { get = "GET", put = "PUT", delete = "DELETE" }

function request()
  due = due_of(index)
  first_due = first_due or due
  index = index + 1
  sent = now()
  local method = methods[workload]
  if workload == "mixed" then
    method = math.random() < 0.5 and "GET" or "PUT"
  end
  local body = nil
  if method == "PUT" then
    body = common.random_string(common.BODY_LENGTH)
  end
  return wrk.format(method, common.entity_path(), nil, body)
end

function response(status, headers, body)
  local done_at = now()
  local from = sent
  if sent > due + 0.001 then
    late = late + 1
    from = due
  end
  local us = bucket((done_at - from) * 1e6)
  histogram[us] = (histogram[us] or 0) + 1
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  answered = answered + 1
  last_done = done_at
end

local function json_object(map)
  local parts = {}
  for key, value in pairs(map) do
    table.insert(parts, string.format('"%s": %d', tostring(key), value))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  if #threads ~= threads[1]:get("thread_total") then
    error("paced.lua: PACED_THREADS is not wrk's thread count (-t)")
  end
  local merged, codes = {}, {}
  -- The rate is each thread's own, summed: wrk stops its threads one by
  -- one, and one thread that got its last answer late must not stretch the
  -- others' time. A thread's n answers cover n intervals of its schedule:
  -- from its first due time to its last answer, plus one interval.
  local total_late, total, rate = 0, 0, 0
  local interval = #threads / threads[1]:get("rate")
  for _, thread in ipairs(threads) do
    for us, count in pairs(thread:get("histogram")) do
      merged[us] = (merged[us] or 0) + count
    end
    for code, count in pairs(thread:get("statuses")) do
      codes[code] = (codes[code] or 0) + count
    end
    total_late = total_late + thread:get("late")
    local n, first = thread:get("answered"), thread:get("first_due")
    total = total + n
    if first and n > 0 then
      rate = rate + n / (thread:get("last_done") - first + interval)
    end
  end
  local out = os.getenv("PACED_OUT")
  local text = string.format(
    '{"tool": "wrk paced.lua", "target_rate": %s, "threads": %d, "late": %d, '
      .. '"elapsed_s": %.6f, "errors": %d, "status_counts": %s, "histogram_us": %s}\n',
    tostring(threads[1]:get("rate")), #threads, total_late, rate > 0 and total / rate or 0,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    json_object(codes), json_object(merged)
  )
  if out then
    local file = assert(io.open(out, "w"))
    file:write(text)
    file:close()
  else
    io.write(text)
  end
end
