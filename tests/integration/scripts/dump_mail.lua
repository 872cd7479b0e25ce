-- Prints the mail table on stdout as one JSON line ("MAIL {...}"), with
-- byte strings (raw, attachment contents) as hex so the JSON stays UTF-8.
local cjson = require "cjson"
local luasmtpd = require "luasmtpd"

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function on_mail(mail)
  -- the table is plain data: cjson takes it whole, bytes and all
  local whole = cjson.encode(mail)
  mail.encoded_size = #whole
  mail.raw = hex(mail.raw)
  for _, a in ipairs(mail.attachments) do a.content = hex(a.content) end
  mail.hsyco = luasmtpd.hsyco_json(mail)
  print("MAIL " .. cjson.encode(mail))
end
