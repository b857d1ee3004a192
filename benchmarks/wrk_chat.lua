-- wrk script for benchmarks/gateway.py: the same chat request on every connection, and one JSON line at the end.
-- Arguments after `--`: the request body (JSON); the answer text the stub returns, so that a 200 the stub did not
-- answer is counted (`wrong`); N > 0 to end after N responses (the sequential run, one thread, one connection):
-- the thread stops and prints WRK_LIMIT, and gateway.py then sends SIGINT, on which wrk prints its summary.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Privacy-Level"] = "public"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.body = args[1]
  marker = args[2]
  limit = tonumber(args[3] or "0")
  -- Globals, not locals: done() reads them from each thread's own Lua state with thread:get().
  responses = 0
  wrong = 0
  non2xx = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif not string.find(body, marker, 1, true) then
    wrong = wrong + 1
  end
  if limit > 0 and responses == limit then
    wrk.thread:stop()
    io.write("WRK_LIMIT\n")
    io.flush()
  end
end

function done(summary, latency, requests)
  local wrong_total, non2xx_total = 0, 0
  for _, thread in ipairs(threads) do
    wrong_total = wrong_total + thread:get("wrong")
    non2xx_total = non2xx_total + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"non2xx":%d,"wrong":%d,"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, non2xx_total, wrong_total,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
