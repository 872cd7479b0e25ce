-- The legacy-device relay: scanners and printers on the LAN send plain SMTP
-- (no TLS, no AUTH); each mail is queued durably and forwarded to the
-- smarthost with STARTTLS and AUTH, from the account's own address.
--   SMARTHOST=smtp://smtp.example.com:587 SMTP_USER=scanner@example.com \
--   SMTP_PASSWORD=... LAN=192.168.1. build/luasmtpd examples/relay.lua
-- SMTP_CAFILE names the CAs of a smarthost with a private certificate.
local luasmtpd = require "luasmtpd"
local LAN, USER = os.getenv("LAN") or "127.0.0.1", os.getenv("SMTP_USER")
local VIA = { via = os.getenv("SMARTHOST") or "smtp://127.0.0.1:587", starttls = "required",
              user = USER, password = os.getenv("SMTP_PASSWORD"), from = USER,
              cafile = os.getenv("SMTP_CAFILE") }

function on_connect(session)
  if session.ip:sub(1, #LAN) ~= LAN then return 554, "5.7.1 not on the LAN" end
end

function on_mail(mail)
  local id, err = luasmtpd.queue("forward", mail, VIA)
  if not id then return 451, "4.3.0 " .. err end
  return 250, "2.0.0 Ok: queued as " .. id
end
