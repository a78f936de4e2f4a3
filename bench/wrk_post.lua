-- wrk script of the ingest benchmark (bench/run.py writes the request file and reads the result).
--
-- Environment:
--   BENCH_REQUESTS  file with one pre-signed request per line: "<Kallglot-Signature>\t<JSON body>"
--   BENCH_TARGETS   "127.0.0.1:PORT[,127.0.0.1:PORT...]"; wrk thread i goes to target i mod n
--   BENCH_THREADS   the -t value given to wrk
-- Thread i sends lines i, i+T, i+2T, ... so that no two requests share an event id; a thread that
-- runs out starts over ("wrapped" in the result: those are duplicates for the receiver).
-- done() prints one line "BENCHJSON {...}" (latencies in microseconds).

local threads = {}
local targets = {}

function setup(thread)
  if #targets == 0 then
    for host, port in string.gmatch(os.getenv("BENCH_TARGETS"), "([^,:]+):(%d+)") do
      local addrs = wrk.lookup(host, port)
      targets[#targets + 1] = addrs[1]
    end
  end
  local index = #threads
  thread:set("tid", index)
  thread:set("nthreads", tonumber(os.getenv("BENCH_THREADS")))
  thread.addr = targets[(index % #targets) + 1]
  threads[#threads + 1] = thread
end

function init(args)
  reqs = {}
  local i = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if i % nthreads == tid then
      local sig, body = line:match("^([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/webhooks/kallglot",
        {["Content-Type"] = "application/json", ["Kallglot-Signature"] = sig}, body)
    end
    i = i + 1
  end
  n = 0
  sent = 0
  wrapped = 0
end

function request()
  n = n + 1
  if n > #reqs then
    n = 1
    wrapped = wrapped + 1
  end
  sent = sent + 1
  return reqs[n]
end

function done(summary, latency, requests)
  local sent_total, wrapped_total = 0, 0
  for _, t in ipairs(threads) do
    sent_total = sent_total + (t:get("sent") or 0)
    wrapped_total = wrapped_total + (t:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_p50_us":%d,"lat_p90_us":%d,' ..
    '"lat_p99_us":%d,"lat_max_us":%d,"lat_mean_us":%.1f,"sent":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, sent_total, wrapped_total))
end
