-- Per-address and per-domain handlers, like AlchemyPoint's mail bindings:
-- a recipient is accepted only when a route handles it, and on_mail runs the
-- handler of each recipient.
--   build/luasmtpd examples/routes.lua
local luasmtpd = require "luasmtpd"

local function log_to(tag)
  return function(mail, rcpt)
    luasmtpd.log(tag, "mail", mail.id, "from", mail.sender, "for", rcpt, mail.size, "bytes")
  end
end

local routes = {
  address = {
    ["alarm@hub.example"]  = log_to("ALARM"),
    ["backup@hub.example"] = log_to("backup report"),
  },
  domain = {
    ["cameras.hub.example"] = log_to("camera"),
  },
}

local function route(rcpt)
  rcpt = rcpt:lower()
  return routes.address[rcpt] or routes.domain[rcpt:match("@(.+)$") or ""]
end

function on_rcpt(address, session)
  if not route(address) then
    return 550, "5.1.1 No route for this address"
  end
end

function on_mail(mail, session)
  for _, rcpt in ipairs(mail.recipients) do
    route(rcpt)(mail, rcpt)
  end
end
