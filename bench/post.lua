-- wrk script for bench/serving_load.sh and bench/resnet_load.sh: every request is a POST.
-- The body is the file named by $WRK_BODY_FILE (e.g. a JPEG), else a small fixed text;
-- its type is $WRK_CONTENT_TYPE (default application/octet-stream). No per-request hooks
-- (they would slow wrk down); wrk_report.lua's done() prints the machine-readable summary.
local path = os.getenv("WRK_BODY_FILE")
local body = '{"input": "tserve serving benchmark"}'
if path and path ~= "" then
  local f = assert(io.open(path, "rb"))
  body = f:read("*a")
  f:close()
end
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/octet-stream"

-- done(summary, latency, requests) from wrk_report.lua, beside this file.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_report.lua")
