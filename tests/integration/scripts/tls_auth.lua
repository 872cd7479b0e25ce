-- TLS and AUTH tests: a user table, a slow directory, and a log line with
-- what the session says of TLS and the user at each MAIL.
local luasmtpd = require "luasmtpd"

local users = { cam1 = "s3cret", slow = "s3cret", ["jörg"] = "pässword" }

function on_auth(user, password, session)
  if user == "slow" then
    luasmtpd.sleep(0.05)   -- a hook may wait, like any other
  end
  if user == "temp" then
    return 454, "Directory unavailable"
  end
  return users[user] ~= nil and users[user] == password
end

function on_mail_from(address, session)
  luasmtpd.log(string.format("mail tls=%s version=%s cipher=%s user=%s client=%s verified=%s",
    tostring(session.tls), tostring(session.tls_version), tostring(session.cipher),
    tostring(session.user), tostring(session.tls_client_subject),
    tostring(session.tls_client_verified)))
end
