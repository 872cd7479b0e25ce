-- The script of `make bench`'s relay workload: each mail is queued
-- durably for a forward to smtp-sink ($BENCH_SINK, a port on loopback) and
-- answered 250 once the job is on disk.  How long each queue() took (the
-- commit, shared by the sessions that arrive together) is kept, and
-- "count p50 p99 max" (milliseconds) goes to $BENCH_COUNT.PID.
local luasmtpd = require "luasmtpd"

local VIA = { via = "smtp://127.0.0.1:" .. assert(os.getenv("BENCH_SINK"), "BENCH_SINK not set"),
              starttls = false }
local pid = assert(io.open("/proc/self/stat")):read("n")
local statsfile = assert(os.getenv("BENCH_COUNT"), "BENCH_COUNT not set") .. "." .. pid
local took, n, written = {}, 0, -1
local KEEP = 1000000

function on_mail(mail)
  local t = luasmtpd.now()
  local id, err = luasmtpd.queue("forward", mail, VIA)
  if not id then return 451, "4.3.0 " .. err end
  n = n + 1
  if n <= KEEP then took[n] = luasmtpd.now() - t end
  return 250, "2.0.0 Ok: queued as " .. id
end

local function at(sorted, q)
  return sorted[math.max(1, math.ceil(#sorted * q))] * 1000
end

-- written once the mails have stopped for a tick (sorting during the run
-- would cost the CPU being measured)
local seen = -1
luasmtpd.every(0.2, function()
  local busy = n ~= seen
  seen = n
  if busy or n == written then return end
  local sorted = table.move(took, 1, #took, 1, {})
  table.sort(sorted)
  local f = assert(io.open(statsfile, "w"))
  f:write(string.format("%d %.3f %.3f %.3f\n", n, at(sorted, 0.5), at(sorted, 0.99), sorted[#sorted] * 1000))
  f:close()
  written = n
end)
