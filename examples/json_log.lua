-- One JSON line per mail on standard output, ready for jq or a log shipper.
--   build/luasmtpd examples/json_log.lua > mails.jsonl
local cjson = require "cjson"

function on_mail(mail, session)
  io.stdout:write(cjson.encode({
    id = mail.id,
    time = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    ip = mail.ip,
    helo = mail.helo,
    from = mail.sender,
    to = mail.recipients,
    size = mail.size,
  }), "\n")
  io.stdout:flush()
end
