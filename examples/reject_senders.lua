-- Refuse mail from listed senders and domains, with a reason.
--   build/luasmtpd examples/reject_senders.lua
-- Everything not listed is accepted.

local blocked_senders = {
  ["spammer@example.com"] = "Known spammer",
}

local blocked_domains = {
  ["spam.example"] = "Domain not accepted here",
  ["bad.example"]  = "Domain blocked by policy",
}

function on_mail_from(address, session)
  local addr = address:lower()
  local why = blocked_senders[addr]
  if why then
    return 550, "5.7.1 " .. why
  end
  -- the domain and each parent domain: mail.spam.example matches spam.example
  local domain = addr:match("@(.+)$")
  while domain do
    why = blocked_domains[domain]
    if why then
      return 550, "5.7.1 " .. why
    end
    domain = domain:match("^[^.]+%.(.+)$")
  end
end
