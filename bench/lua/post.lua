-- wrk script: POST the same body on every request.
-- BENCH_BODY_FILE     path of the body to send (read once, at start-up)
-- BENCH_CONTENT_TYPE  value of the Content-Type header (default application/json)
-- BENCH_ACCEPT        value of the Accept header (none when unset)
-- wrk adds Content-Length itself.
local path = assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE is not set")
local file = assert(io.open(path, "rb"))

wrk.method = "POST"
wrk.body = file:read("*a")
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
if os.getenv("BENCH_ACCEPT") then
  wrk.headers["Accept"] = os.getenv("BENCH_ACCEPT")
end
file:close()
