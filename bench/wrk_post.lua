-- wrk script: POST the WuzAPI fixture with a new WhatsApp message id on every request, and
-- print a JSON summary at the end. Environment: FIXTURE (path), RUN (0-255, so that ids of
-- different runs differ: the receiver remembers the ids it queued).
--
-- Maximum rate only: wrk's delay() would hold a connection open before writing the request,
-- and a gunicorn sync worker waits on such a connection doing nothing, so fixed-rate runs use
-- bench.loadgen, which connects when it sends.
--
-- Ids are "3AF" .. thread (1 hex) .. run (2 hex) .. counter (14 hex): 20 characters like the
-- fixture's, and never equal to the Python load generator's ("3A" .. 18 hex digits, < 2^40).

local fixture = assert(io.open(os.getenv("FIXTURE"), "rb")):read("*a")
local head, tail = fixture:match("^(.-)3A00000000000000F001(.*)$")
assert(head, "the fixture has no message id 3A00000000000000F001")
local run = tonumber(os.getenv("RUN") or "0")
local created = 0

function setup(thread)
  thread:set("thread_index", created)
  created = created + 1
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  counter = 0
end

function request()
  counter = counter + 1
  local id = string.format("3AF%X%02X%014X", thread_index % 16, run % 256, counter)
  return wrk.format(nil, nil, nil, head .. id .. tail)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect + errors.read + errors.write + errors.timeout, errors.status))
end
