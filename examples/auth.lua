-- Devices log in, and each may send only as its own addresses.
--   build/luasmtpd --tls-cert cert.pem --tls-key key.pem --require-auth examples/auth.lua
-- (docs/tls.md shows how to make cert.pem and key.pem.)  With --require-auth,
-- MAIL before a login gets 530; without it, mail from devices that did not
-- log in is accepted as before and only logged-in users are held to their
-- addresses.

local users = {
  -- user     password       addresses it may send from (Lua patterns)
  cam1  = { password = "change me", from = { "^cam1@site%.example$" } },
  nas   = { password = "change me", from = { "^nas@site%.example$", "^backup@site%.example$" } },
  plc   = { password = "change me", from = { "@plc%.site%.example$" } },
}

function on_auth(user, password, session)
  local u = users[user]
  return u ~= nil and u.password == password
end

function on_mail_from(address, session)
  local u = users[session.user or ""]
  if not u then
    return   -- not logged in: --require-auth decides whether that is allowed
  end
  for _, pattern in ipairs(u.from) do
    if address:lower():match(pattern) then
      return true
    end
  end
  return 550, "5.7.1 " .. session.user .. " may not send as <" .. address .. ">"
end
