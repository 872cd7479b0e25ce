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
