-- The embedded default script: accept every mail and log it as an
-- HSYCO-style event line.  Copy it as a start for your own
-- (build/luasmtpd your.lua).
local luasmtpd = require "luasmtpd"
local ok, cjson = pcall(require, "cjson")

function on_mail(mail)
  local event = {
    from = mail.sender,
    to = table.concat(mail.recipients, ", "),
    size = mail.size,
    id = mail.id,
  }
  luasmtpd.log("smtp.mail = " .. (ok and cjson.encode(event)
    or string.format("{from=%q, to=%q, size=%d}", event.from, event.to, event.size)))
end
