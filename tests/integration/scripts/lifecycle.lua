-- Test script: on_close misbehaving, and a session object kept past its
-- connection.
local luasmtpd = require "luasmtpd"
local kept

function on_helo(name, session)
  session.data.mode = name
  if name == "keep" then kept = session end
end

function on_mail_from(address, session)
  if address == "stale@test" then
    local ok, err = pcall(function() return kept.id end)
    luasmtpd.log("stale:", ok, err)
    ok, err = pcall(function() session.helo = "changed" end)
    luasmtpd.log("write:", ok, err)
    luasmtpd.log("tostring:", tostring(kept))
  end
end

function on_close(session)
  local mode = session.data.mode
  if mode == "close-error" then error("on_close failure") end
  if mode == "close-sleep" then luasmtpd.sleep(1) end
  if mode == "close-yield" then coroutine.yield() end
  luasmtpd.log("closed", mode)
end
