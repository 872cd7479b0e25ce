-- The embedded default script: accept every mail and print it on stdout as
-- HSYCO's event line, smtp.mail = {"from":...,"body":[...]} (the name
-- follows --id).  Copy it as a start for your own (build/luasmtpd your.lua).
function IOEvent(name, value)
  print(name .. " = " .. value)
end
