-- The one wrk script of bench/bench.py, configured by environment variables (see bench/harness/wrk.py):
--   BENCH_METHOD           GET (default) or POST (then the body is a form)
--   BENCH_BODY             a fixed request body
--   BENCH_AUTH             the value of the Authorization header
--   BENCH_IF_NONE_MATCH    sent as If-None-Match (conditional GET)
--   BENCH_TOKENS           a file of single-use tokens, one a line: request i gets token i, never twice,
--   BENCH_BODY_PREFIX        with body BENCH_BODY_PREFIX .. token; needs -t1 (one Lua state, one counter)
--   BENCH_LIMIT            the request cap: stop after this many responses, or with BENCH_TOKENS after handing
--                            out this many tokens (the file holds a few spares beyond it: connections already
--                            writing when the thread stops still ask for one)
--   BENCH_OK_STATUS        the status that counts as success (default 200)
--   BENCH_EXPECT           a substring every successful body must contain
-- done() prints one "RESULT key=value ..." line; "bad" counts responses that were not a success.
-- At the cap the thread prints "STOPPED" at once: wrk's own duration is always the full -d (its main
-- thread sleeps that long), so bench.py times a capped run by when that line arrives.

local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local auth = os.getenv("BENCH_AUTH")
local inm = os.getenv("BENCH_IF_NONE_MATCH")
local token_file = os.getenv("BENCH_TOKENS")
local prefix = os.getenv("BENCH_BODY_PREFIX") or ""
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
local ok_status = tonumber(os.getenv("BENCH_OK_STATUS") or "200")
local expect = os.getenv("BENCH_EXPECT")

wrk.method = method
if body and #body > 0 then wrk.body = body end
if method == "POST" then wrk.headers["Content-Type"] = "application/x-www-form-urlencoded" end
if auth and #auth > 0 then wrk.headers["Authorization"] = auth end
if inm and #inm > 0 then wrk.headers["If-None-Match"] = inm end

-- Globals of the thread's Lua state, read by done() through thread:get.
bad = 0
handed = 0
responses = 0

local function stop()
  wrk.thread:stop()
  io.write("STOPPED\n")
  io.flush()
end
first_bad = ""

local tokens = nil
if token_file and #token_file > 0 then
  tokens = {}
  for line in io.lines(token_file) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  request = function()
    handed = handed + 1
    if handed == limit then stop() end
    local token = tokens[handed]
    if token == nil then
      -- Out of spares too (cannot happen with the spares bench.py adds): never reuse a token.
      return wrk.format("GET", "/healthz", {}, "")
    end
    return wrk.format(nil, nil, nil, prefix .. token)
  end
end

response = function(status, headers, resp_body)
  responses = responses + 1
  if tokens == nil and limit > 0 and responses == limit then stop() end
  if status ~= ok_status or (expect and #expect > 0 and not string.find(resp_body or "", expect, 1, true)) then
    bad = bad + 1
    if first_bad == "" then first_bad = tostring(status) .. " " .. string.sub(resp_body or "", 1, 200) end
  end
end

local threads = {}
setup = function(thread)
  threads[#threads + 1] = thread
end

done = function(summary, latency, requests)
  local total_bad, handed_out, answered, first = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
    handed_out = handed_out + t:get("handed")
    answered = answered + t:get("responses")
    if first == "" then first = t:get("first_bad") end
  end
  local s = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f bad=%d handed=%d responses=%d connect=%d read=%d write=%d timeout=%d status=%d " ..
    "p50_ms=%.3f p95_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
    summary.requests, s, total_bad, handed_out, answered, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
  io.write("FIRST_BAD " .. string.gsub(first, "\n", " ") .. "\n")
end
