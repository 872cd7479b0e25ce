"""Hostile clients and hostile scripts (docs/security.md).  Each attack is
followed by an ordinary transaction that must succeed."""
import json
import os
import resource
import socket
import tempfile
import threading
import time

from harness import Server, ServerTest

# Records what the hooks saw, so a test can check what reached the script.
RECORDER = r"""
local cjson = require "cjson"
local luasmtpd = require "luasmtpd"
function on_mail_from(addr) luasmtpd.log("saw-sender", cjson.encode(addr)) end
function on_rcpt(addr) luasmtpd.log("saw-rcpt", cjson.encode(addr)) end
-- the first string in t (a mail table) that is not valid UTF-8
local function invalid_utf8(t, where)
  for k, v in pairs(t) do
    local here = where .. "." .. tostring(k)
    if type(v) == "string" and not utf8.len(v) and k ~= "raw" then return here end
    if type(v) == "table" then
      local bad = invalid_utf8(v, here)
      if bad then return bad end
    end
  end
end
function on_mail(mail)
  local bad = invalid_utf8(mail, "mail")
  if bad then return 451, "invalid UTF-8 in " .. bad end
  local ok, json = pcall(cjson.encode, mail)
  if not ok then return 451, "not JSON: " .. json end
  luasmtpd.log("mail", #json, mail.truncated or "whole", cjson.encode(mail.subject))
  io.write(json, "\n")
  io.flush()
end
"""

HOSTILE = r"""
local luasmtpd = require "luasmtpd"
function on_rcpt(addr)
  if addr:find("^loop@") then while true do end end
  if addr:find("^pcall@") then
    -- the budget cannot be caught by the script
    while true do pcall(function() while true do end end) end
  end
  if addr:find("^memory@") then
    -- 1 MB at a time, built from 1 KB pieces: fast enough under ASan to
    -- reach the cap well within the time budget
    local t, kb = {}, ("x"):rep(1024)
    for i = 1, 1e9 do t[i] = kb:rep(1024) end
  end
  if addr:find("^error@") then error("boom") end
end
"""


def script_file(text):
    fd, path = tempfile.mkstemp(suffix=".lua")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class Recorded(ServerTest):
    def setUp(self):
        self.path = script_file(RECORDER)
        self.srv = Server(self.path)

    def tearDown(self):
        super().tearDown()
        os.unlink(self.path)

    def good(self, c=None):
        c = c or self.session()
        self.assertReply(self.transaction(c), 250)
        return c


class PathJunk(Recorded):
    def test_path_junk_is_refused_and_valid_oddities_arrive_verbatim(self):
        c = self.session()
        junk = [b"MAIL FROM:<;sleep 66;>", b"MAIL FROM:<$(reboot)@example.com>",
                b"MAIL FROM:<a@b.c>;sleep 66", b"MAIL FROM:<a\x00b@example.com>",
                b"MAIL FROM:<a\rb@example.com>", b"MAIL FROM:<a@b\x00.c>",
                b"MAIL FROM:<a|b@example.com >", b"MAIL FROM:<\xff\xfe@example.com>",
                b"MAIL FROM:<a@b.c> X=\x01", b"MAIL FROM:<a@b.c> SIZE=1;reboot"]
        for line in junk:
            c.send(line + b"\r\n")
            code = c.reply()[0]
            self.assertTrue(500 <= code < 600, (line, code))
        c.close()
        c = self.session()    # the junk counted towards --max-errors
        # RFC 5321 allows ` $ | { } in a local part: the hook gets it as sent,
        # and must never hand it to a shell (docs/security.md)
        self.assertReply(c.cmd("MAIL FROM:<`id`$HOME|{x}@example.com>"), 250)
        m = self.srv.wait_log(r"saw-sender (.*)")
        self.assertEqual(json.loads(m.group(1)), "`id`$HOME|{x}@example.com")
        self.assertEqual(self.srv.count_log(r"saw-sender"), 1)   # none of the junk
        self.assertReply(c.cmd("RSET"), 250)
        self.good(c)

    def test_nul_and_bare_cr_in_recipients(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        for bad in (b"RCPT TO:<b\x00@example.com>", b"RCPT TO:<b\r@example.com>",
                    b"RCPT TO:<b@exa\rmple.com>"):
            c.send(bad + b"\r\n")
            self.assertTrue(500 <= c.reply()[0] < 600, bad)
        self.assertReply(c.cmd("RSET"), 250)
        self.good(c)
        self.assertTrue(self.srv.wait_log(r"mail \d+ "))   # logged after the hooks before it
        self.assertEqual(self.srv.count_log(r"saw-rcpt"), 1)


class HostileMessages(Recorded):
    def send_message(self, body, timeout=30):
        c = self.session()
        self.start_message(c, body=body)
        return c, c.reply(timeout=timeout)

    def test_ten_thousand_header_lines(self):
        head = b"".join(b"X-H%d: v\r\n" % i for i in range(10000))
        c, reply = self.send_message(b"Subject: many\r\n" + head + b"\r\nbody\r\n")
        self.assertReply(reply, 250)
        m = self.srv.wait_log(r"mail \d+ (\S+) \"many\"")
        self.assertIn(m.group(1), ("headers", "header"))
        self.good(c)

    def test_thousand_level_nesting(self):
        body = b"Subject: deep\r\n"
        for i in range(1000):
            body += b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n" % (i, i)
        body += b"Content-Type: text/plain\r\n\r\nbottom\r\n"
        for i in reversed(range(1000)):
            body += b"--b%d--\r\n" % i
        c, reply = self.send_message(body)
        self.assertReply(reply, 250)
        self.assertTrue(self.srv.wait_log(r"mail \d+ depth \"deep\""), self.srv.log()[-2000:])
        self.good(c)

    def test_encoding_garbage_and_invalid_utf8_everywhere(self):
        body = (b"Subject: =?utf-8?B?\xff\xfe==?= =?x-unknown?Q?=ZZ?= \xc3\x28 \xed\xa0\x80\r\n"
                b"From: \xf8\x88\x80\x80\x80 <a@b.c>\r\n"
                b"Content-Type: multipart/mixed; boundary=\"g\"; name*0*=%ff%fe\r\n\r\n"
                b"--g\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=FF=C3=28=\r\n=Z1= =\r\n"
                b"--g\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n!!!!****====\xff\xfe====QUJD\r\n"
                b"--g\r\nContent-Type: application/octet-stream; name=\"\xff.bin\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n@@@\r\n--g--\r\n")
        c, reply = self.send_message(body)
        self.assertReply(reply, 250)
        self.assertTrue(self.srv.wait_log(r"mail \d+ "))
        # 250: every string of the mail table but mail.raw was valid UTF-8
        # (the script checks with utf8.len) and the table encoded as JSON
        line = self.srv.wait_log(r"^\{.*", stdout=True).group(0)
        mail = json.loads(line)
        self.assertIn("\ufffd", mail["subject"])
        self.assertIn("\ufffd", mail["from"])
        self.good(c)

    def test_smuggling_then_a_normal_message(self):
        # each of these must stay inside the first message
        for seq in (b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n"):
            c = self.session()
            self.start_message(c, body=b"Subject: s\r\n\r\nbefore" + seq +
                               b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<x@example.com>\r\n"
                               b"DATA\r\nsmuggled\r\n")
            self.assertReply(c.reply(), 250)
            self.good(c)
            c.close()
        self.assertTrue(self.srv.wait_log(r"mail \d+ ", count=10))
        self.assertEqual(self.srv.count_log(r"saw-sender \"evil@example.com\""), 0)


class HostileClients(Recorded):
    def test_clients_vanishing_mid_command_and_mid_data(self):
        for payload in (b"MAIL FROM:<a@exa", b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@e",
                        b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                        b"DATA\r\nSubject: half\r\n\r\nhalf a mess"):
            c = self.srv.client()
            c.send(payload)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()           # a reset, not even a FIN
        self.good()
        self.assertTrue(self.srv.wait_log(r"mail \d+ "))
        self.assertTrue(self.srv.wait_log(r"disconnect from", count=3))
        self.assertEqual(self.srv.count_log(r"mail \d+ "), 1)


class Crowd(ServerTest):
    ARGS = ("--max-clients", "100")

    def test_thousand_connections(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        socks, codes = [], []
        for _ in range(1000):
            s = socket.create_connection((self.srv.host, self.srv.port))
            s.settimeout(10)
            socks.append(s)
        for s in socks:
            codes.append(s.recv(64)[:3])
        self.assertEqual(codes.count(b"220"), 100)
        self.assertEqual(codes.count(b"421"), 900)
        for s in socks:
            s.close()
        # the slots come back
        deadline = time.monotonic() + 10
        while self.srv.count_log(r"disconnect from") < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        c = self.session()
        self.assertReply(self.transaction(c), 250)


class HostileHooks(ServerTest):
    def setUp(self):
        self.path = script_file(HOSTILE)
        self.srv = Server(self.path, "--hook-timeout", "0.5", "--lua-memory", "32M")

    def tearDown(self):
        super().tearDown()
        os.unlink(self.path)

    def test_loops_errors_and_memory_answer_451_and_others_go_on(self):
        results = {}

        def attack(kind):
            c = self.session()
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            results[kind] = c.cmd("RCPT TO:<%s@example.com>" % kind, )[0]
            self.assertReply(c.cmd("RSET"), 250)
            self.assertReply(self.transaction(c), 250)

        def ordinary():
            for _ in range(5):
                c = self.session()
                self.assertReply(self.transaction(c), 250)
                c.close()
            results["ordinary"] = 250

        threads = [threading.Thread(target=attack, args=(k,))
                   for k in ("loop", "pcall", "memory", "error")]
        threads.append(threading.Thread(target=ordinary))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(results, {"loop": 451, "pcall": 451, "memory": 451, "error": 451,
                                   "ordinary": 250})
        self.assertTrue(self.srv.wait_log(r"ran past its time budget", count=2))
        self.assertTrue(self.srv.wait_log(r"not enough memory"), self.srv.log()[-3000:])
        # the memory the failed hook took is given back
        self.assertLess(self.srv.rss_kb(), 200 * 1024)
