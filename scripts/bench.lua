-- The script `make bench` runs luasmtpd with: what a realistic rule does
-- with every message (read the subject and the sender, build HSYCO's JSON
-- event with cjson) and a count of the messages, written to $BENCH_COUNT
-- every 0.1 s so the benchmark can check that none was lost (one file per
-- process, for --workers).
local luasmtpd = require "luasmtpd"

local pid = assert(io.open("/proc/self/stat")):read("n")
local countfile = assert(os.getenv("BENCH_COUNT"), "BENCH_COUNT not set") .. "." .. pid
local count, written = 0, -1

luasmtpd.every(0.1, function()
  if count ~= written then
    local f = assert(io.open(countfile, "w"))
    f:write(count, "\n")
    f:close()
    written = count
  end
end)

local last = {}

function on_mail(mail)
  last.subject, last.sender = mail.subject, mail.sender
  last.event = luasmtpd.hsyco_json(mail)
  count = count + 1
end
