-- Run in the Lua state before the user's script (compiled in): the global
-- HSYCO scripts expect, and the step the server runs at the end of data.
local luasmtpd = require "luasmtpd"

-- HSYCO's messageLog(text): a line in the server log.
function messageLog(...)
  luasmtpd.log(...)
end

-- Do a hook's return values accept: nothing, true, a 2xx code or {2xx, ...}?
local function accepts(v)
  if type(v) == "table" then v = v[1] end
  return v == nil or v == true or (type(v) == "number" and v >= 200 and v < 300)
end

-- The end of data: on_mail decides; when it accepts, IOEvent(event, json)
-- receives HSYCO's event.  on_mail's values are returned unchanged.
return function(mail, session, event)
  local r = table.pack(true)
  if type(on_mail) == "function" then
    r = table.pack(on_mail(mail, session))
  end
  if accepts(r[1]) and type(IOEvent) == "function" then
    IOEvent(event, luasmtpd.hsyco_json(mail))
  end
  return table.unpack(r, 1, r.n)
end
