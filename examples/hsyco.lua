-- HSYCO's SMTPSERVER example, in Lua.  Each accepted mail arrives as the
-- I/O event "smtp.mail" whose value is HSYCO's JSON; this writes its fields
-- to the log as HSYCO's messageLog does.
--   build/luasmtpd examples/hsyco.lua           (--id NAME: events are NAME.mail)
local cjson = require "cjson"

function IOEvent(name, value)
  if name == "smtp.mail" then
    local mail = cjson.decode(value)
    messageLog("From: " .. mail.from)
    messageLog("To: " .. mail.to)
    messageLog("Date: " .. mail.date)
    messageLog("Subject: " .. mail.subject)
    for i = 1, #mail.body do
      messageLog("Body Line " .. i .. ": " .. mail.body[i])
    end
  end
end
