-- The alarm outbox: each mail from a camera becomes a queued MQTT event and
-- a queued webhook call, and its JPEG pictures are written to SNAPSHOTS.
-- The mail is answered 250 only once all of that is on disk, and the queue
-- delivers the event and the call even if the broker or the web service is
-- down for a while, or the server restarts (docs/queue.md).  A camera that
-- mails once per alarm loses nothing.
--   MQTT_HOST=127.0.0.1 WEBHOOK_URL=http://127.0.0.1:8123/api/webhook/cam \
--   SNAPSHOTS=/srv/snapshots build/luasmtpd examples/alarm_outbox.lua
-- SNAPSHOTS must exist.  The event is {"id": mail id, "mail": HSYCO's JSON
-- event}, on luasmtpd/<camera>/alarm; the id lets a subscriber drop the
-- duplicate that at-least-once delivery may bring after a crash.
local luasmtpd = require "luasmtpd"

config = { mqtt = { host = os.getenv("MQTT_HOST") or "127.0.0.1",
                    port = tonumber(os.getenv("MQTT_PORT") or "1883") } }
local WEBHOOK = os.getenv("WEBHOOK_URL")
local SNAPSHOTS = os.getenv("SNAPSHOTS") or "."

function on_mail(mail)
  local camera = (mail.sender:match("^([^@]+)") or "unknown"):gsub("[^%w_.-]", "_")
  for i, a in ipairs(mail.attachments) do
    if a.content_type == "image/jpeg" then
      local ok, err = luasmtpd.write(SNAPSHOTS .. "/" .. mail.id .. "-" .. i .. ".jpg", a.content)
      if not ok then return 451, "4.3.0 " .. err end
    end
  end
  local event = '{"id":"' .. mail.id .. '","mail":' .. luasmtpd.hsyco_json(mail) .. "}"
  -- a failure after the first job makes the camera send again, and the
  -- event comes twice: at least once, as everywhere else
  local id, err = luasmtpd.queue("mqtt", "luasmtpd/" .. camera .. "/alarm", event, { qos = 1 })
  if id and WEBHOOK then
    id, err = luasmtpd.queue("http", { url = WEBHOOK, method = "POST", body = event,
                                       headers = { ["Content-Type"] = "application/json" } })
  end
  if not id then return 451, "4.3.0 " .. err end
  return 250, "2.0.0 Ok: queued as " .. id
end
