"""Actions and timers of the luasmtpd module (docs/actions.md): save,
after/every, watchdog, debounce, http and mqtt, each against real parts
started here, and each shown not to stall other sessions."""
import os
import shutil
import smtplib
import tempfile
import time
import unittest

from harness import Server, ServerTest


def script(name, text):
    path = "/tmp/luasmtpd-test-actions-%s.lua" % name
    with open(path, "w") as f:
        f.write(text)
    return path


def maildir_files(root, sub="new"):
    d = os.path.join(root, sub)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


TIMERS = '''
local l = require "luasmtpd"
local ticks = 0
l.every(0.05, function(self)
  ticks = ticks + 1
  l.log("tick", ticks)
  if ticks == 3 then l.log("cancelled", self:cancel()) end
end)
l.after(0.05, function() error("timer boom") end)
l.after(0.1, function() while true do end end)
l.after(0.1, function() l.sleep(0.2); l.log("slept in a timer") end)

function on_rcpt(addr, session)
  local kind, key = addr:match("^(%w+)%-([^@]+)")
  if kind == "watch" then
    l.watchdog(key, 0.6, function(k) l.log("silent", k) end)
  elseif kind == "unwatch" then
    l.watchdog(key, nil)
  elseif kind == "once" then
    if not l.debounce(key, 60) then return 450, "4.2.0 already seen" end
  elseif kind == "later" then
    local h = l.after(0.2, function(self) l.log("later", key, tostring(self)) end)
    if key == "cancel" then l.log("cancel", h:cancel(), h:cancel()) end
  elseif kind == "bad" then
    l.every(0, function() end)
  end
end
'''


class Timers(ServerTest):
    ARGS = (script("timers", TIMERS), "--hook-timeout", "0.3")

    def test_every_runs_until_cancelled_and_errors_are_logged(self):
        self.assertTrue(self.srv.wait_log(r"script: cancelled true"))
        time.sleep(0.3)
        self.assertEqual(self.srv.count_log(r"script: tick \d"), 3)
        self.assertTrue(self.srv.wait_log(r"error after: .*timer boom"))
        self.assertTrue(self.srv.wait_log(r"error after: ran past its time budget of 0.3s"))
        self.assertTrue(self.srv.wait_log(r"script: slept in a timer"))
        c = self.session()                   # and the server still serves
        self.assertReply(self.transaction(c), 250)

    def test_watchdog_fires_only_when_silent(self):
        c = self.session()
        c.cmd("MAIL FROM:<plc@example.com>")
        for _ in range(4):                   # re-armed within its 0.6 s
            self.assertReply(c.cmd("RCPT TO:<watch-plc1@example.com>"), 250)
            time.sleep(0.3)
        self.assertEqual(self.srv.count_log(r"script: silent plc1"), 0)
        self.assertTrue(self.srv.wait_log(r"script: silent plc1", timeout=3))
        self.assertReply(c.cmd("RCPT TO:<watch-plc2@example.com>"), 250)
        self.assertReply(c.cmd("RCPT TO:<unwatch-plc2@example.com>"), 250)
        time.sleep(1)
        self.assertEqual(self.srv.count_log(r"script: silent plc2"), 0)
        self.assertEqual(self.srv.count_log(r"script: silent plc1"), 1)

    def test_debounce(self):
        c = self.session()
        c.cmd("MAIL FROM:<a@example.com>")
        self.assertReply(c.cmd("RCPT TO:<once-alarm@example.com>"), 250)
        self.assertReply(c.cmd("RCPT TO:<once-alarm@example.com>"), 450, "already seen")
        self.assertReply(c.cmd("RCPT TO:<once-other@example.com>"), 250)

    def test_after_and_cancel(self):
        c = self.session()
        c.cmd("MAIL FROM:<a@example.com>")
        self.assertReply(c.cmd("RCPT TO:<later-x@example.com>"), 250)
        self.assertReply(c.cmd("RCPT TO:<later-cancel@example.com>"), 250)
        self.assertTrue(self.srv.wait_log(r"script: cancel true false"))
        self.assertTrue(self.srv.wait_log(r"script: later x luasmtpd.timer \(after, done\)"))
        time.sleep(0.4)
        self.assertEqual(self.srv.count_log(r"script: later cancel"), 0)

    def test_bad_interval_is_a_script_error(self):
        c = self.session()
        c.cmd("MAIL FROM:<a@example.com>")
        self.assertReply(c.cmd("RCPT TO:<bad-x@example.com>"), 451)
        self.assertTrue(self.srv.wait_log(r"bad argument #1 to 'every' \(seconds out of range"))


SAVE = '''
local l = require "luasmtpd"
local dir = os.getenv("LUASMTPD_TEST_MAILDIR")
function on_mail(mail)
  local target = mail.subject == "elsewhere" and "/nonexistent/x/maildir" or dir
  local path, err = l.save(mail, target)
  if not path then return 451, "4.3.0 " .. err end
  return 250, "saved " .. path
end
'''


class Save(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="luasmtpd-maildir-")
        self.maildir = os.path.join(self.dir, "Maildir")
        os.environ["LUASMTPD_TEST_MAILDIR"] = self.maildir
        self.srv = Server(script("save", SAVE))

    def tearDown(self):
        self.assertEqual(self.srv.stop(), 0, self.srv.log()[-2000:])
        self.assertNotIn("AddressSanitizer", self.srv.log())
        shutil.rmtree(self.dir)

    def test_messages_land_in_new_byte_exact(self):
        bodies = [b"Subject: n%d\r\n\r\n" % i + os.urandom(300).hex().encode() * (i + 1) + b"\r\n..dot\r\n"
                  for i in range(20)]
        with smtplib.SMTP(self.srv.host, self.srv.port) as s:
            for b in bodies:
                s.sendmail("dev@example.com", ["ops@example.com"], b)
        names = maildir_files(self.maildir)
        self.assertEqual(len(names), 20)
        self.assertEqual(maildir_files(self.maildir, "tmp"), [])
        self.assertTrue(os.path.isdir(os.path.join(self.maildir, "cur")))
        got = set()
        for n in names:
            with open(os.path.join(self.maildir, "new", n), "rb") as f:
                got.add(f.read())
        # smtplib dot-stuffs "..dot" to "...dot" on the wire; the server
        # unstuffs it: the saved file is the message as the client meant it
        self.assertEqual(got, set(bodies))
        self.assertEqual(os.stat(os.path.join(self.maildir, "new", names[0])).st_mode & 0o777, 0o600)

    def test_reply_names_the_file_and_errors_reach_the_hook(self):
        with smtplib.SMTP(self.srv.host, self.srv.port) as s:
            s.ehlo()
            s.mail("a@example.com")
            s.rcpt("b@example.com")
            code, msg = s.data(b"Subject: one\r\n\r\nx\r\n")
            self.assertEqual(code, 250)
            self.assertIn(b"saved " + self.maildir.encode() + b"/new/", msg)
            s.mail("a@example.com")
            s.rcpt("b@example.com")
            code, msg = s.data(b"Subject: elsewhere\r\n\r\nx\r\n")
            self.assertEqual(code, 451)
            self.assertIn(b"cannot create /nonexistent/x/maildir", msg)

    def test_client_leaving_while_saving_still_writes(self):
        c = self.srv.client()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@example.com>")
        c.cmd("RCPT TO:<b@example.com>")
        c.cmd("DATA")
        c.send(b"Subject: gone\r\n\r\n" + b"y" * 2000000 + b"\r\n.\r\n")
        c.close()
        self.assertTrue(self.srv.wait_log(r"disconnect from"))
        deadline = time.monotonic() + 5
        while not maildir_files(self.maildir) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(maildir_files(self.maildir)), 1)


if __name__ == "__main__":
    unittest.main()
