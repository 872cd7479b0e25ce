-- Test script: each hook answers according to the address or name it gets,
-- so one script covers every return form at every stage.
local luasmtpd = require "luasmtpd"
local cjson = require "cjson"

-- "x-<form>@..." selects the answer
local function answer(tag)
  if tag == "false" then return false end
  if tag == "true" then return true end
  if tag == "nil" then return nil end
  if tag == "code" then return 553 end
  if tag == "codetext" then return 551, "5.1.6 Moved away" end
  if tag == "pike" then return {452, "Come back later"} end
  if tag == "lines" then return 550, {"first line", "second line"} end
  if tag == "421" then return 421, "Closing now" end
  if tag == "error" then error("deliberate failure") end
  if tag == "badtype" then return "a string" end
  if tag == "badcode" then return 299 end
  if tag == "float" then return 550.5 end
  if tag == "loop" then
    while true do pcall(function() while true do end end) end
  end
  -- a loop in a coroutine of the script's own: the budget reaches it too
  if tag == "coloop" then
    coroutine.resume(coroutine.create(function() while true do end end))
    while true do end
  end
  if tag == "wraploop" then coroutine.wrap(function() while true do end end)() end
  if tag == "memory" then local s = string.rep("x", 512 * 1024 * 1024) return #s end
  if tag == "sleep" then luasmtpd.sleep(1.0) return 250 end
  if tag == "nested" then
    local co = coroutine.wrap(function() luasmtpd.sleep(0.1) end)
    co()
  end
  if tag == "yield" then coroutine.yield() end
end

local function tag_of(s) return s:match("^x%-([%w]+)") end

function on_connect(session)
  session.data.connected = true
end

function on_helo(name, session)
  local t = tag_of(name)
  if t then return answer(t) end
end

function on_mail_from(address, session)
  local t = tag_of(address)
  if t then return answer(t) end
  if address == "fields@test" then
    luasmtpd.log("fields", cjson.encode({
      id = session.id, ip = session.ip, port = session.port, local_ip = session.local_ip,
      local_port = session.local_port, helo = session.helo, esmtp = session.esmtp,
      tls = session.tls, sender = session.sender, params = session.params,
      connected = session.data.connected,
    }))
  end
end

function on_rcpt(address, session)
  local t = tag_of(address)
  if t then return answer(t) end
  if address == "count@test" then
    session.data.n = (session.data.n or 0) + 1
    luasmtpd.log("rcpt", session.data.n, "sender", session.sender, "so far", #session.recipients)
  end
end

function on_data(session)
  for _, r in ipairs(session.recipients) do
    local t = r:match("^data%-(%w+)@")
    if t then return answer(t) end
  end
end

function on_mail(mail, session)
  local t = mail.raw:match("Subject: x%-(%w+)")
  if t then return answer(t) end
  -- raw as hex: the test compares it byte for byte
  local hex = mail.raw:gsub(".", function(c) return string.format("%02x", c:byte()) end)
  luasmtpd.log("mail", cjson.encode({id = mail.id, size = mail.size, sender = mail.sender,
    recipients = mail.recipients, helo = mail.helo, ip = mail.ip, raw = hex}))
end

function on_rset(session)
  luasmtpd.log("rset in", session.id)
end

function on_close(session)
  luasmtpd.log("closed", session.id)
end
