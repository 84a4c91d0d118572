-- wrk script: POST /v1/convolve with one image (multipart), as a client of the image API.
-- Env: CONVD_IMAGE (path of the picture), CONVD_SPEC (the JSON spec part).
-- Prints a machine-readable summary line "RESULT ..." at the end (see deploy/scaleout.sh).
local image_path = os.getenv("CONVD_IMAGE") or "bench/data/astronaut_1080p.png"
local spec = os.getenv("CONVD_SPEC")
  or '{"preset":"gaussian","size":5,"sigma":1.2,"channels":"each","padding":"same","output":{"normalize":"clamp"}}'

local f = assert(io.open(image_path, "rb"))
local image = f:read("*a")
f:close()

local boundary = "convd-wrk-7d1f0a9c2b"
wrk.method = "POST"
wrk.path = "/v1/convolve"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = table.concat({
  "--" .. boundary,
  'Content-Disposition: form-data; name="image"; filename="image.png"',
  "Content-Type: application/octet-stream",
  "",
  image,
  "--" .. boundary,
  'Content-Disposition: form-data; name="spec"',
  "Content-Type: application/json",
  "",
  spec,
  "--" .. boundary .. "--",
  "",
}, "\r\n")

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d secs=%.1f rps=%.2f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f "
      .. "non2xx=%d connect_err=%d read_err=%d write_err=%d timeout=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
