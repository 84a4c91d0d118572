-- wrk script for bench/load.sh. LOAD_KIND selects the request:
--   tensor: POST /v1/conv2d, JSON, input [1,3,32,32] with a [8,3,3,3] kernel, padding 1;
--   image:  POST /v1/convolve, multipart, LOAD_IMAGE (default the 1080p photo), gray Sobel.
-- Counts responses by status per thread; done() prints one RESULT line for load.sh.
local kind = os.getenv("LOAD_KIND") or "tensor"

local function tensor_body()
  local function nested(dims, d, seed)
    local parts = {}
    for i = 1, dims[d] do
      if d == #dims then
        parts[i] = tostring(((seed + i) % 17) - 8)
      else
        parts[i] = nested(dims, d + 1, seed * 7 + i)
      end
    end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  return '{"input":' .. nested({1, 3, 32, 32}, 1, 1) ..
         ',"weight":' .. nested({8, 3, 3, 3}, 1, 2) .. ',"padding":1}'
end

local function image_body()
  local path = os.getenv("LOAD_IMAGE") or "bench/data/astronaut_1080p.png"
  local f = assert(io.open(path, "rb"))
  local img = f:read("*a")
  f:close()
  local b = "convdloadboundary7f3a"
  local body = "--" .. b .. "\r\n" ..
    'Content-Disposition: form-data; name="image"; filename="img.png"\r\n' ..
    "Content-Type: image/png\r\n\r\n" .. img .. "\r\n" ..
    "--" .. b .. "\r\n" ..
    'Content-Disposition: form-data; name="spec"\r\n' ..
    "Content-Type: application/json\r\n\r\n" ..
    '{"preset": "sobel_x", "color": "gray", "output": {"normalize": "abs"}}\r\n' ..
    "--" .. b .. "--\r\n"
  return "multipart/form-data; boundary=" .. b, body
end

local req
if kind == "image" then
  local ct, body = image_body()
  req = wrk.format("POST", "/v1/convolve", {["Content-Type"] = ct}, body)
else
  req = wrk.format("POST", "/v1/conv2d", {["Content-Type"] = "application/json"}, tensor_body())
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function request()
  return req
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do
      by[s] = (by[s] or 0) + n
    end
  end
  local parts = {}
  for s, n in pairs(by) do
    parts[#parts + 1] = "s" .. s .. "=" .. n
  end
  table.sort(parts)
  local e = summary.errors
  io.write(string.format(
    "RESULT kind=%s requests=%d secs=%.1f rps=%.1f p50_ms=%.1f p99_ms=%.1f max_ms=%.1f " ..
    "err_connect=%d err_read=%d err_write=%d err_timeout=%d %s\n",
    kind, summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
    e.connect, e.read, e.write, e.timeout, table.concat(parts, " ")))
end
