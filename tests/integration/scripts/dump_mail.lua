-- Prints the mail table on stdout as one JSON line ("MAIL {...}"), with
-- byte strings (raw, attachment contents) as hex so the JSON stays UTF-8.
local cjson = require "cjson"
local luasmtpd = require "luasmtpd"

local function hex(s)
  local out = {}
  for i = 1, #s, 1024 do
    local chunk = s:sub(i, i + 1023)
    out[#out + 1] = ("%02x"):rep(#chunk):format(chunk:byte(1, -1))
  end
  return table.concat(out)
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
