-- The Lua half of require "luasmtpd", compiled into the server.  The C half
-- (log, sleep, version) arrives as the module table.
local M = ...

-- The mail as HSYCO's SMTPSERVER JSON event value:
-- {"from":...,"to":...,"subject":...,"date":...,"contenttype":...,"returnpath":...,"body":[...]}
-- Each value goes through lua-cjson; the fields keep HSYCO's order, and "/"
-- is left unescaped as HSYCO writes it.  It runs on every message of a
-- typical script, so it makes one string concatenation and one cjson call
-- per field, and one for the whole body.
local encode   -- cjson.encode, loaded on first use

-- cjson writes "/" as "\/", and "\/" only ever stands for "/" in its output.
-- A plain find jumps from one to the next (gsub would try a match at every
-- byte, ten times slower on a typical message).
local function unescape_slashes(json)
  local at = json:find("\\/", 1, true)
  if not at then return json end
  local pieces, n, from = {}, 0, 1
  repeat
    n = n + 1
    pieces[n] = json:sub(from, at - 1)
    from = at + 1
    at = json:find("\\/", from + 1, true)
  until not at
  pieces[n + 1] = json:sub(from)
  return table.concat(pieces)
end

-- A value as a string (tostring looks for a __tostring first: slow)
local function text(v)
  if type(v) == "string" then return v end
  return tostring(v or "")
end

local function field(mail, k)
  return encode(text(mail[k]))
end

function M.hsyco_json(mail)
  if type(mail) ~= "table" then
    error("bad argument #1 to 'hsyco_json' (mail table expected, got " .. type(mail) .. ")", 2)
  end
  encode = encode or require("cjson").encode
  local lines = {}
  for i, line in ipairs(mail.body or {}) do
    lines[i] = text(line)
  end
  local json = '{"from":' .. field(mail, "from") .. ',"to":' .. field(mail, "to")
    .. ',"subject":' .. field(mail, "subject") .. ',"date":' .. field(mail, "date")
    .. ',"contenttype":' .. field(mail, "contenttype")
    .. ',"returnpath":' .. field(mail, "returnpath")
    .. ',"body":' .. (lines[1] and encode(lines) or "[]") .. "}"
  return unescape_slashes(json)
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
