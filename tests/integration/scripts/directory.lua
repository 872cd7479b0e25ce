-- An M2M directory for VRFY and EXPN, and the listener's identity.
local luasmtpd = require "luasmtpd"

config = { description = "Gate 1 camera inbox", domains = { "site.example", "cams.site.example" } }

local people = { cam1 = "Camera 1 <cam1@site.example>", ["cam1@site.example"] = "Camera 1 <cam1@site.example>" }
local lists = { cameras = { "Camera 1 <cam1@site.example>", "Camera 2 <cam2@site.example>" } }

function on_vrfy(address, session)
  local who = people[address:gsub("^<(.*)>$", "%1")]
  if who then
    return 250, who
  end
  if address == "slow" then
    luasmtpd.sleep(0.05)
    return 252
  end
  return false
end

function on_expn(list, session)
  local members = lists[list]
  if members then
    return 250, members
  end
  return 550, "5.1.1 No such list"
end

function on_connect(session)
  luasmtpd.log("server id " .. session.server_id)
end

function on_rcpt(address, session)
  if address:match("^blocked@") then
    return false
  end
end
