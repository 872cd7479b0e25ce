-- POST each mail as JSON to a web service (a home-automation webhook, a
-- chat bot, a ticket system), and let its answer decide the SMTP reply.
--   WEBHOOK_URL=http://127.0.0.1:8080/mail build/luasmtpd examples/webhook.lua
--
-- The body is the mail's main fields as a JSON object (sender, recipients,
-- subject, text, attachment names).  A 2xx answer accepts the mail; any
-- other answer, no answer within 5 seconds or no connection gives 451, so
-- the device keeps the mail and retries.  While the service is slow other
-- devices are served: the request waits on the event loop.
local luasmtpd = require "luasmtpd"
local cjson = require "cjson"

local URL = os.getenv("WEBHOOK_URL") or "http://127.0.0.1:8080/mail"

function on_mail(mail)
  local files = {}
  for i, a in ipairs(mail.attachments) do files[i] = a.filename or a.content_type end
  local event = {
    sender = mail.sender, recipients = mail.recipients, subject = mail.subject,
    date = mail.date, text = mail.text or "", attachments = files, id = mail.id,
  }
  local r, err = luasmtpd.http{
    url = URL, method = "POST", timeout = 5,
    headers = { ["Content-Type"] = "application/json" },
    body = cjson.encode(event),
  }
  if not r then
    luasmtpd.log("warn", "webhook failed:", err)
    return 451, "4.3.0 Event service unreachable, try again later"
  end
  if r.status < 200 or r.status > 299 then
    luasmtpd.log("warn", "webhook answered", r.status)
    return 451, "4.3.0 Event service answered " .. r.status .. ", try again later"
  end
end
