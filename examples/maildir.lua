-- Keep every accepted mail in a Maildir, and say where in the reply.
--   MAILDIR=/var/lib/luasmtpd/Maildir build/luasmtpd examples/maildir.lua
--   mutt -f /var/lib/luasmtpd/Maildir      (or any Maildir reader)
--
-- A mail is answered 250 only once it is on disk (written, synced, moved
-- into new/), so a device never deletes a mail the server did not keep.
-- When the disk is full or the directory unwritable the answer is 451 and
-- the device retries later.
local luasmtpd = require "luasmtpd"

local MAILDIR = os.getenv("MAILDIR") or "/tmp/luasmtpd-maildir"

function on_mail(mail)
  local path, err = luasmtpd.save(mail, MAILDIR)
  if not path then
    luasmtpd.log("error", "not saved:", err)
    return 451, "4.3.0 Cannot store the message now, try again later"
  end
  luasmtpd.log("saved", mail.sender, "->", path)
  return 250, "2.0.0 Saved as " .. path:match("[^/]+$")
end
