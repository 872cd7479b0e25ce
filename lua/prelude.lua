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

-- IOEvent(event, json) receives HSYCO's event when on_mail's first value
-- accepts; on_mail's values are returned unchanged.
local function finish(mail, event, ...)
  if accepts((...)) and type(IOEvent) == "function" then
    IOEvent(event, luasmtpd.hsyco_json(mail))
  end
  return ...
end

-- The end of data: on_mail decides, then finish.
return function(mail, session, event)
  if type(on_mail) == "function" then
    return finish(mail, event, on_mail(mail, session))
  end
  return finish(mail, event, true)
end
