-- Raise an alarm when a device stops mailing: each device (sender address)
-- that mails is watched, and when it has been silent for SILENT_AFTER
-- seconds the alarm is logged, and published over MQTT when MQTT_HOST is
-- set.  The next mail from the device clears it.
--   SILENT_AFTER=900 build/luasmtpd examples/watchdog.lua
--
-- Devices listed in WATCH (comma-separated addresses) are watched from
-- startup, so one that never mails at all is reported too.
--
-- Everything lives in luasmtpd.store: the watchdogs' deadlines and which
-- devices are in alarm.  A restart (even kill -9) forgets nothing: a device
-- that stays silent through it is still reported, once, and with
-- --workers N each alarm and each "back" is raised by one worker.
local luasmtpd = require "luasmtpd"
local store = luasmtpd.store

local SILENT_AFTER = tonumber(os.getenv("SILENT_AFTER") or "900")
local MQTT = os.getenv("MQTT_HOST")

if MQTT then
  config = { mqtt = { host = MQTT, port = tonumber(os.getenv("MQTT_PORT") or "1883") } }
end

local function notify(device, state)
  luasmtpd.log(state == "silent" and "warn" or "info", "watchdog:", device, state)
  if MQTT then
    local ok, err = luasmtpd.mqtt.publish("luasmtpd/watchdog/" .. device:gsub("[+#/%z]", "_"),
      state, { qos = 1, retain = true })
    if not ok then luasmtpd.log("warn", "watchdog: not published:", err) end
  end
end

local function alarm(device)
  store.set("in_alarm:" .. device, true)
  notify(device, "silent")
end

-- a watchdog armed before a restart, which went off after it
on_watchdog = alarm

local function seen(device)
  luasmtpd.watchdog(device, SILENT_AFTER, alarm)
  -- only the worker whose delete succeeds says the device is back
  if store.get("in_alarm:" .. device) and store.delete("in_alarm:" .. device, true) then
    notify(device, "back")
  end
end

for device in (os.getenv("WATCH") or ""):gmatch("[^,%s]+") do
  luasmtpd.watchdog(device:lower(), SILENT_AFTER, alarm)
end

function on_mail(mail)
  if mail.sender ~= "" then seen(mail.sender:lower()) end
end
