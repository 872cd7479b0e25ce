-- Act on a mail's sender or subject: append an event line to a file and run
-- a command, without blocking other sessions while the command runs.
--   build/luasmtpd examples/trigger.lua      (TRIGGER_DIR=/path for its files)
--
-- Each rule matches the envelope sender or the decoded subject with a Lua
-- pattern.  Commands run without a shell's parsing of mail data: values
-- like {subject} are put into single arguments, never into command text.
-- A command that fails answers 451, so the device keeps the mail and
-- retries later; a mail no rule matches is accepted and ignored.
local luasmtpd = require "luasmtpd"
local cjson = require "cjson"

local DIR = os.getenv("TRIGGER_DIR") or "/tmp"

local RULES = {
  { subject = "[Mm]otion", event = "motion",
    -- "sh -c" with the subject as $1: the subject is data, not script text
    command = { "sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "sh", "{subject}", DIR .. "/alarms.log" } },
  { sender = "^nas@", event = "backup" },
}

local function matches(rule, mail)
  return (rule.sender and mail.sender:find(rule.sender))
      or (rule.subject and mail.subject:find(rule.subject))
end

local function expand(args, mail)
  local out = {}
  for i, a in ipairs(args) do
    out[i] = a:gsub("{(%w+)}", function(k) return tostring(mail[k] or "") end)
  end
  return out
end

function on_mail(mail, session)
  for _, rule in ipairs(RULES) do
    if matches(rule, mail) then
      local f = assert(io.open(DIR .. "/events.jsonl", "a"))
      f:write(cjson.encode({ event = rule.event, from = mail.sender, subject = mail.subject,
                             id = mail.id, ip = mail.ip }), "\n")
      f:close()
      if rule.command then
        local r, err = luasmtpd.exec(expand(rule.command, mail))
        if not r or r.status ~= 0 then
          luasmtpd.log("warn", rule.event, "command failed:", err or r.stderr)
          return 451, "4.3.0 Action failed, try again later"
        end
      end
      luasmtpd.log(rule.event, "from", mail.sender, mail.subject)
      return true
    end
  end
end
