-- wrk script for benchmarks/gateway.py: the same POST on every connection, and one JSON line at the end.
-- Arguments after `--`: the request body (JSON); the answer text the stub returns, so that a 200 the stub did not
-- answer is counted (`wrong`); N > 0 to end after N responses (the thread stops and prints WRK_LIMIT, and
-- gateway.py then sends SIGINT, on which wrk prints its summary); the Authorization header's value, or "" for none.
-- Every status code is counted on its own (`statuses`), next to wrk's socket errors (connect, read, write) and
-- timeouts. wrk (not wrk2) reports raw latencies: no coordinated-omission correction.

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
  if args[4] and args[4] ~= "" then
    wrk.headers["Authorization"] = args[4]
  end
  -- Globals, not locals: done() reads them from each thread's own Lua state with thread:get().
  responses = 0
  wrong = 0
  statuses = {}
end

function response(status, headers, body)
  responses = responses + 1
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 200 and status <= 299 and not string.find(body, marker, 1, true) then
    wrong = wrong + 1
  end
  if limit > 0 and responses == limit then
    wrk.thread:stop()
    io.write("WRK_LIMIT\n")
    io.flush()
  end
end

function done(summary, latency, requests)
  local wrong_total = 0
  local status_total = {}
  for _, thread in ipairs(threads) do
    wrong_total = wrong_total + thread:get("wrong")
    for status, n in pairs(thread:get("statuses")) do
      status_total[status] = (status_total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(status_total) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"statuses":{%s},"wrong":%d,"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, table.concat(parts, ","),
    wrong_total, latency.mean, latency.max, latency:percentile(50), latency:percentile(95),
    latency:percentile(99)))
end
