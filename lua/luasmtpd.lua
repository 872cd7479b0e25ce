-- The Lua half of require "luasmtpd", compiled into the server.  The C half
-- (log, sleep, version) arrives as the module table.
local M = ...

-- HSYCO's event fields, in HSYCO's order.
local HSYCO_FIELDS = { "from", "to", "subject", "date", "contenttype", "returnpath" }

-- The mail as HSYCO's SMTPSERVER JSON event value:
-- {"from":...,"to":...,"subject":...,"date":...,"contenttype":...,"returnpath":...,"body":[...]}
-- Each value goes through lua-cjson; the fields keep HSYCO's order, and "/"
-- is left unescaped as HSYCO writes it.
function M.hsyco_json(mail)
  if type(mail) ~= "table" then
    error("bad argument #1 to 'hsyco_json' (mail table expected, got " .. type(mail) .. ")", 2)
  end
  local encode = require("cjson").encode
  local out = {}
  for i, k in ipairs(HSYCO_FIELDS) do
    out[i] = '"' .. k .. '":' .. encode(tostring(mail[k] or ""))
  end
  local body = {}
  for i, line in ipairs(mail.body or {}) do
    body[i] = encode(tostring(line))
  end
  out[#out + 1] = '"body":[' .. table.concat(body, ",") .. "]"
  -- cjson writes "/" as "\/"; "\/" only ever stands for "/" in its output
  return (("{" .. table.concat(out, ",") .. "}"):gsub("\\/", "/"))
end

-- watchdog(key, seconds, fn): call fn(key) unless watchdog(key, ...) is
-- called again within seconds; each call re-arms it.  watchdog(key, nil)
-- disarms it.  Returns the timer handle (nil when disarmed).
local dogs = {}

function M.watchdog(key, seconds, fn)
  if key == nil then
    error("bad argument #1 to 'watchdog' (key expected, got nil)", 2)
  end
  local old = dogs[key]
  if old then old:cancel() end
  dogs[key] = nil
  if seconds == nil then return nil end
  if type(fn) ~= "function" then
    error("bad argument #3 to 'watchdog' (function expected, got " .. type(fn) .. ")", 2)
  end
  local handle
  handle = M.after(seconds, function()
    if dogs[key] == handle then dogs[key] = nil end
    return fn(key)
  end)
  dogs[key] = handle
  return handle
end

-- debounce(key, seconds): true the first time key is seen in a window of
-- seconds (the window starts then), false for the rest of it.  Expired keys
-- are swept once the table has grown, so it stays as large as the keys seen
-- within one window.
local windows, nwindows, sweep_at = {}, 0, 1024

function M.debounce(key, seconds)
  if key == nil then
    error("bad argument #1 to 'debounce' (key expected, got nil)", 2)
  end
  if type(seconds) ~= "number" or seconds < 0 then
    error("bad argument #2 to 'debounce' (seconds expected)", 2)
  end
  local now = M.now()
  local ends = windows[key]
  if ends and now < ends then return false end
  if not ends then
    nwindows = nwindows + 1
    if nwindows > sweep_at then
      for k, e in pairs(windows) do
        if e <= now then windows[k] = nil; nwindows = nwindows - 1 end
      end
      sweep_at = math.max(1024, 2 * nwindows)
    end
  end
  windows[key] = now + seconds
  return true
end
