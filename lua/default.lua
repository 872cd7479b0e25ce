-- The embedded default script: accept every mail and print it on stdout as
-- an HSYCO event line, smtp.mail = {"from":...,"body":[...]}.  Copy it as a
-- start for your own (build/luasmtpd your.lua).
local luasmtpd = require "luasmtpd"

function on_mail(mail)
  print("smtp.mail = " .. luasmtpd.hsyco_json(mail))
end
