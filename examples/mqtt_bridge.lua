-- Every mail from a device becomes an MQTT message carrying HSYCO's JSON
-- event: a camera's motion mail reaches Home Assistant, Node-RED or any
-- subscriber as it arrives.
--   MQTT_HOST=127.0.0.1 build/luasmtpd examples/mqtt_bridge.lua
--   mosquitto_sub -t 'luasmtpd/#' -v
--
-- The topic is luasmtpd/<sender's local part>/mail ("cam3@site" publishes
-- to luasmtpd/cam3/mail), with characters MQTT gives a meaning (+ # /)
-- replaced.  QoS 1: the mail is answered 250 once the broker acknowledged
-- the event.  While the broker is unreachable events wait in the server's
-- queue (config mqtt.queue) and the mail is still accepted; when the queue
-- is full the answer is 451 and the device retries later.
local luasmtpd = require "luasmtpd"

config = {
  mqtt = {
    host = os.getenv("MQTT_HOST") or "127.0.0.1",
    port = tonumber(os.getenv("MQTT_PORT") or "1883"),
    queue = 1000,
  },
}

local function topic_for(sender)
  local who = (sender:match("^([^@]+)@") or sender):gsub("[+#/%z]", "_")
  if who == "" then who = "unknown" end     -- the null sender <>
  return "luasmtpd/" .. who .. "/mail"
end

function on_mail(mail)
  local topic = topic_for(mail.sender)
  local ok, err = luasmtpd.mqtt.publish(topic, luasmtpd.hsyco_json(mail), { qos = 1, timeout = 5 })
  if not ok then
    luasmtpd.log("warn", "event not published:", err)
    return 451, "4.3.0 Cannot pass the event on now, try again later"
  end
  luasmtpd.log("event", topic, err or "published")   -- err is "queued" when held
end
