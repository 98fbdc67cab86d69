-- wrk-summary.lua - the request bench/http.sh sends, and one JSON line of
-- results at the end of a wrk run.
--
-- The request comes from the environment, so that one script serves every
-- target: WRK_METHOD (default GET) and WRK_BODY (a JSON body; when set,
-- Content-Type: application/json is added). Both are fixed for the run, so
-- wrk builds the request once (no request() function: that would cost wrk
-- a Lua call per request). No response() function either, for the same
-- reason: wrk then counts statuses >= 400 in errors.status, and http.sh
-- checks each target's status and body with curl before and after the run.
--
-- The last line wrk prints is then:
--   {"requests": N, "duration_us": N, "bytes": N, "err_connect": N,
--    "err_read": N, "err_write": N, "err_status": N, "err_timeout": N,
--    "lat_mean_us": X, "lat_p50_us": X, "lat_p90_us": X, "lat_p99_us": X,
--    "lat_max_us": X}

local method = os.getenv("WRK_METHOD")
local body = os.getenv("WRK_BODY")
if method and method ~= "" then
   wrk.method = method
end
if body and body ~= "" then
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, "err_connect": %d, "err_read": %d, ' ..
      '"err_write": %d, "err_status": %d, "err_timeout": %d, "lat_mean_us": %.1f, ' ..
      '"lat_p50_us": %.1f, "lat_p90_us": %.1f, "lat_p99_us": %.1f, "lat_max_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
