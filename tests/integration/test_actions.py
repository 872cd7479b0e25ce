"""Actions and timers of the luasmtpd module (docs/actions.md): save,
after/every, watchdog, debounce, http and mqtt, each against real parts
started here, and each shown not to stall other sessions."""
import http.server
import json
import os
import shutil
import smtplib
import subprocess
import tempfile
import threading
import time
import unittest

from harness import BINARY, Broker, Server, ServerTest, free_port, tmp_path


def script(name, text):
    path = tmp_path("actions-%s.lua" % name)
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
  local path, err
  if mail.subject == "big" then   -- 64 MB cannot be on disk within a millisecond
    path, err = l.save(("x"):rep(1024):rep(65536), target, { timeout = 0.001 })
  else
    path, err = l.save(mail, target)
  end
  if not path then return 451, "4.3.0 " .. err end
  return 250, "saved " .. path
end
'''


class Save(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="luasmtpd-maildir-")
        self.maildir = os.path.join(self.dir, "Maildir")
        os.environ["LUASMTPD_TEST_MAILDIR"] = self.maildir
        # its 64 MB string takes twice that while it is made
        self.srv = Server(script("save", SAVE), "--lua-memory", "256M", "--hook-memory", "256M")

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

    @staticmethod
    def message(s, subject):
        s.ehlo_or_helo_if_needed()
        s.mail("a@example.com")
        s.rcpt("b@example.com")
        return s.data(b"Subject: " + subject + b"\r\n\r\nx\r\n")

    def test_reply_names_the_file_and_errors_reach_the_hook(self):
        with smtplib.SMTP(self.srv.host, self.srv.port) as s:
            code, msg = self.message(s, b"one")
            self.assertEqual(code, 250)
            self.assertIn(b"saved " + self.maildir.encode() + b"/new/", msg)
            code, msg = self.message(s, b"elsewhere")
            self.assertEqual(code, 451)
            self.assertIn(b"save: cannot create /nonexistent/x/maildir", msg)

    def test_timeout_answers_and_the_write_still_completes(self):
        with smtplib.SMTP(self.srv.host, self.srv.port) as s:
            code, msg = self.message(s, b"big")
            self.assertEqual(code, 451, msg)
            self.assertIn(b"save: timed out after 0.001 seconds (the write may still complete)", msg)
            self.assertEqual(self.message(s, b"next")[0], 250)
        deadline = time.monotonic() + 10
        while len(maildir_files(self.maildir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        sizes = sorted(os.path.getsize(os.path.join(self.maildir, "new", n))
                       for n in maildir_files(self.maildir))
        self.assertEqual(sizes[-1], 64 << 20)
        self.assertEqual(maildir_files(self.maildir, "tmp"), [])

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


class WebService(http.server.ThreadingHTTPServer):
    """A local HTTP server: /ok records each request and answers 200 with
    JSON; /fail answers 500; /slow answers after 2 seconds; /redirect
    sends to /ok."""
    daemon_threads = True

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                if self.path == "/slow":
                    time.sleep(2)
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/ok")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code = 500 if self.path == "/fail" else 200
                out = json.dumps({"got": len(body)}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Twice", "a")
                self.send_header("X-Twice", "b")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)
            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_any

        super().__init__(("127.0.0.1", 0), Handler)
        self.handle_error = lambda request, address: None   # a client that left mid-answer
        self.url = "http://127.0.0.1:%d" % self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


HTTP = '''
local l = require "luasmtpd"
local base = os.getenv("LUASMTPD_TEST_URL")
function on_mail(mail)
  if mail.subject == "crlf" then l.http{ url = base, headers = { X = "a\\r\\nB: c" } } end
  if mail.subject == "ftp" then return 451, select(2, l.http{ url = "ftp://127.0.0.1/" }) end
  local path, method, timeout = mail.subject:match("^(%S+) (%u+) ?(%S*)")
  local r, err = l.http{ url = base .. path, method = method, timeout = tonumber(timeout),
                         headers = { ["Content-Type"] = "text/plain", "X-Mail: " .. mail.id },
                         body = method ~= "GET" and method ~= "HEAD" and mail.text or nil,
                         follow = path == "/redirect" }
  if not r then return 451, err end
  return 250, string.format("status=%d type=%s twice=%s body=%s", r.status,
    r.headers["content-type"], r.headers["x-twice"], r.body)
end
'''


class Http(ServerTest):
    @classmethod
    def setUpClass(cls):
        cls.web = WebService()
        os.environ["LUASMTPD_TEST_URL"] = cls.web.url
        cls.ARGS = (script("http", HTTP),)

    @classmethod
    def tearDownClass(cls):
        cls.web.shutdown()

    def send(self, c, subject, text=b"payload"):
        return self.transaction(c, body=b"Subject: " + subject + b"\r\n\r\n" + text + b"\r\n")

    def test_post_and_the_answer(self):
        c = self.session()
        self.assertReply(self.send(c, b"/ok POST", b"motion zone 3"), 250,
                         'status=200 type=application/json twice=a, b body={"got": 14}')
        method, path, headers, body = self.web.requests[-1]
        self.assertEqual((method, path, body), ("POST", "/ok", b"motion zone 3\n"))   # mail.text
        self.assertEqual(headers["Content-Type"], "text/plain")
        self.assertTrue(headers["X-Mail"])
        self.assertTrue(headers["User-Agent"].startswith("luasmtpd/"))
        self.assertReply(self.send(c, b"/ok PUT"), 250, "status=200")
        self.assertEqual(self.web.requests[-1][0], "PUT")
        self.assertReply(self.send(c, b"/ok GET"), 250, 'body={"got": 0}')
        self.assertReply(self.send(c, b"/ok HEAD"), 250, "status=200 type=application/json")
        self.assertReply(self.send(c, b"/redirect GET"), 250, "status=200")
        self.assertEqual([r[1] for r in self.web.requests[-2:]], ["/redirect", "/ok"])

    def test_errors_reach_the_hook(self):
        c = self.session()
        self.assertReply(self.send(c, b"/fail POST"), 250, "status=500")
        start = time.monotonic()
        self.assertReply(self.send(c, b"/slow GET 0.3"), 451, "http: Operation timed out")
        self.assertLess(time.monotonic() - start, 1.5)
        port = free_port()
        os.environ["LUASMTPD_TEST_URL"] = "http://127.0.0.1:%d" % port
        with Server(script("http", HTTP)) as other:
            c2 = other.client()
            c2.cmd("EHLO x")
            self.assertReply(self.send(c2, b"/ok GET"), 451, "Couldn't connect to server")
        os.environ["LUASMTPD_TEST_URL"] = self.web.url

    def test_other_sessions_are_served_meanwhile(self):
        slow = self.session()
        self.start_message(slow, body=b"Subject: /slow GET\r\n\r\nx\r\n")
        start = time.monotonic()
        fast = self.session()
        self.assertReply(self.send(fast, b"/ok POST"), 250, "status=200")
        self.assertLess(time.monotonic() - start, 1.5)
        self.assertEqual(slow.buf, b"")          # its request still waits
        self.assertReply(slow.reply(timeout=5), 250, "status=200")

    def test_client_leaving_mid_request(self):
        c = self.session()
        self.start_message(c, body=b"Subject: /slow GET\r\n\r\nx\r\n")
        time.sleep(0.2)
        c.close()
        self.assertTrue(self.srv.wait_log(r"disconnect from"))
        c = self.session()
        self.assertReply(self.send(c, b"/ok GET"), 250, "status=200")

    def test_misuse_is_a_script_error(self):
        c = self.session()
        self.assertReply(self.send(c, b"/ok get"), 451)   # the pattern wants %u: no match
        self.assertTrue(self.srv.wait_log(r"on_mail: .*attempt to concatenate"))
        self.assertReply(self.send(c, b"crlf"), 451)
        self.assertTrue(self.srv.wait_log(r"on_mail: .*http: a header holds a line break"))
        self.assertReply(self.send(c, b"ftp"), 451, 'http: Protocol "ftp" not supported')


MQTT = '''
local l = require "luasmtpd"
config = { mqtt = { host = "127.0.0.1", port = tonumber(os.getenv("LUASMTPD_TEST_MQTT")),
                    queue = 2, keepalive = 5 } }
function on_mail(mail)
  if mail.subject == "wildcard" then l.mqtt.publish("a/#", "x") end
  local qos = tonumber(mail.subject:match("qos(%d)") or "0")
  local payload = (mail.text or ""):gsub("%s+$", "")
  local ok, err = l.mqtt.publish("luasmtpd/test/" .. mail.subject, payload, { qos = qos })
  if not ok then return 451, err end
  return 250, "published " .. tostring(err or "sent")
end
'''


class Mqtt(unittest.TestCase):
    def start(self, broker_port):
        os.environ["LUASMTPD_TEST_MQTT"] = str(broker_port)
        self.srv = Server(script("mqtt", MQTT))
        self.addCleanup(self.srv.stop)

    def send(self, subject, text=b"hello"):
        c = self.srv.client()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<cam@site>")
        c.cmd("RCPT TO:<ops@site>")
        c.cmd("DATA")
        c.send(b"Subject: " + subject + b"\r\n\r\n" + text + b"\r\n.\r\n")
        r = c.reply()
        c.close()
        return r

    def test_each_qos_reaches_a_subscriber(self):
        broker = Broker()
        self.addCleanup(broker.stop)
        self.start(broker.port)
        self.assertTrue(self.srv.wait_log(r"mqtt: connected to 127.0.0.1:%d" % broker.port))
        sub = broker.subscribe("luasmtpd/test/#", 3)
        for q in (b"qos0", b"qos1", b"qos2"):
            r = self.send(q, b"event " + q)
            self.assertEqual(r[0], 250, r)
            self.assertIn("published sent", " ".join(r[1]))
        self.assertEqual(self.send(b"wildcard")[0], 451)
        self.assertTrue(self.srv.wait_log(r"bad argument #1 to 'publish' \(not a topic name"))
        self.assertEqual(sorted(sub.result()), [("luasmtpd/test/qos%d" % q, "event qos%d" % q)
                                                for q in range(3)])

    def test_broker_down_queues_then_delivers(self):
        port = free_port()
        self.start(port)
        self.assertTrue(self.srv.wait_log(r"mqtt: cannot connect to 127.0.0.1:%d" % port))
        self.assertEqual(self.send(b"qos1-a")[0], 250)
        r = self.send(b"qos1-b")
        self.assertIn("published queued", " ".join(r[1]))
        r = self.send(b"qos1-c")                 # the queue holds 2
        self.assertEqual(r[0], 451, r)
        self.assertIn("queue is full (2 messages)", " ".join(r[1]))
        broker = Broker(port)
        self.addCleanup(broker.stop)
        sub = broker.subscribe("luasmtpd/test/#", 2, timeout=15)
        self.assertTrue(self.srv.wait_log(r"mqtt: connected to .*sending the held messages", timeout=15))
        self.assertEqual(sorted(sub.result()), [("luasmtpd/test/qos1-a", "hello"),
                                                ("luasmtpd/test/qos1-b", "hello")])
        broker.stop()                            # lost: reported and retried
        self.assertTrue(self.srv.wait_log(r"mqtt: lost 127.0.0.1:%d .*retrying in 1s" % port))
        self.assertEqual(self.send(b"qos0-d")[0], 250)
        self.assertEqual(self.srv.stop(), 0)
        self.assertTrue(self.srv.wait_log(r"mqtt: not delivered: topic 'luasmtpd/test/qos0-d', 5 bytes"))

    def test_tls_broker(self):
        d = tempfile.mkdtemp(prefix="luasmtpd-mqtt-tls-")
        self.addCleanup(shutil.rmtree, d)
        p = lambda name: os.path.join(d, name)
        for name in ("broker", "other"):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", p(name + ".key"),
                            "-out", p(name + ".pem"), "-days", "2", "-subj", "/CN=localhost"],
                           check=True, capture_output=True)
        broker = Broker(tls=(p("broker.pem"), p("broker.key")))
        self.addCleanup(broker.stop)
        os.environ["LUASMTPD_TEST_MQTT"] = str(broker.tls_port)
        args = ("--mqtt-host", "localhost", "--mqtt-tls-ca")
        self.srv = Server(script("mqtt", MQTT), *args, p("broker.pem"))
        self.addCleanup(self.srv.stop)
        self.assertTrue(self.srv.wait_log(r"mqtt: connected to localhost:%d" % broker.tls_port))
        sub = broker.subscribe("luasmtpd/test/#", 1)
        self.assertEqual(self.send(b"qos1-tls")[0], 250)
        self.assertEqual(sub.result(), [("luasmtpd/test/qos1-tls", "hello")])
        # a broker whose certificate the CA file does not vouch for: no connection
        with Server(script("mqtt", MQTT), *args, p("other.pem")) as other:
            self.assertTrue(other.wait_log(r"mqtt: cannot reach localhost:%d" % broker.tls_port))
            self.assertEqual(other.count_log(r"mqtt: connected"), 0)

    def test_broker_login(self):
        broker = Broker(login=("cam", "s3cret"))
        self.addCleanup(broker.stop)
        os.environ["LUASMTPD_TEST_MQTT"] = str(broker.port)
        # refused: said, retried, and messages held meanwhile
        with Server(script("mqtt", MQTT), "--mqtt-user", "cam", "--mqtt-password", "wrong") as bad:
            self.assertTrue(bad.wait_log(r"mqtt: 127\.0\.0\.1:%d refused the connection: "
                                         r".*not authori[sz]ed" % broker.port), bad.log())
            self.assertTrue(bad.wait_log(r"mqtt: cannot reach 127\.0\.0\.1:%d .*retrying"
                                         % broker.port), bad.log())
            self.assertEqual(bad.count_log(r"mqtt: connected"), 0)
        self.srv = Server(script("mqtt", MQTT), "--mqtt-user", "cam", "--mqtt-password", "s3cret")
        self.addCleanup(self.srv.stop)
        self.assertTrue(self.srv.wait_log(r"mqtt: connected to 127\.0\.0\.1:%d" % broker.port))

    def test_bad_options(self):
        p = subprocess.run([BINARY, "--mqtt-user", "u"], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("the MQTT options need --mqtt-host", p.stderr)
        path = script("mqtt-bad", 'config = { mqtt = { hots = "x" } }')
        p = subprocess.run([BINARY, "--check", path], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("config.mqtt.hots is not an option", p.stderr)
        path = script("mqtt-none", 'function on_mail() require("luasmtpd").mqtt.publish("t", "x") end')
        srv = Server(path)
        self.addCleanup(srv.stop)
        c = srv.client()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@b>")
        c.cmd("RCPT TO:<c@d>")
        c.cmd("DATA")
        c.send(b"x\r\n.\r\n")
        self.assertEqual(c.reply()[0], 451)
        self.assertTrue(srv.wait_log(r"no broker configured"))


if __name__ == "__main__":
    unittest.main()
