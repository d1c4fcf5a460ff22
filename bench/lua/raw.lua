-- wrk script: send the same ready-made request (head and body, any framing) every time.
-- BENCH_REQUEST_FILE  path of the request bytes (read once, at start-up)
local path = assert(os.getenv("BENCH_REQUEST_FILE"), "BENCH_REQUEST_FILE is not set")
local file = assert(io.open(path, "rb"))
local raw = file:read("*a")
file:close()

request = function()
  return raw
end
