"""Nothing lost after 250 (docs/queue.md): luasmtpd.forward against a real
receiving server (Python's aiosmtpd, run as a child process), the durable
queue across kill -9, dead letters, limits, HTTP jobs, the queue commands,
luasmtpd.store and luasmtpd.write."""
import http.server
import os
import shutil
import smtplib
import socket
import socketserver
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import BINARY, Server, free_port, tmp_path

HERE = os.path.dirname(os.path.abspath(__file__))
# Debian's python3 has python3-aiosmtpd (scripts/deps.sh)
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

RECEIVER = r'''
import asyncio, os, sys, ssl
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
port, outdir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
state = {"n": 0}
class H:
    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.startswith("bad"): return "550 5.1.1 no such user"
        if address.startswith("later"): return "450 4.2.0 try later"
        envelope.rcpt_tos.append(address); return "250 OK"
    async def handle_DATA(self, server, session, envelope):
        state["n"] += 1
        if mode == "fail-first" and state["n"] == 1: return "451 4.3.0 busy, once"
        name = os.path.join(outdir, "%06d.eml" % state["n"])
        with open(name + ".tmp", "wb") as f:
            f.write(b"X-Envelope: %s %s %s\n" % (envelope.mail_from.encode(),
                    ",".join(envelope.rcpt_tos).encode(),
                    session.authenticated and ("auth " + session.mechanism).encode() or b"-"))
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 2.0.0 Ok: queued as R%d" % state["n"]
def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"dev" and data.password == b"secret"
    session.mechanism = mechanism
    return AuthResult(success=ok, handled=False)   # False: aiosmtpd answers 535 itself
kw = {}
if mode in ("tls", "tls-login"):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    kw = dict(tls_context=ctx, require_starttls=True, authenticator=auth, auth_require_tls=True)
    if mode == "tls-login":                  # LOGIN only, so that the client must use it
        kw["auth_exclude_mechanism"] = ["PLAIN"]
c = Controller(H(), hostname="127.0.0.1", port=port, data_size_limit=64 << 20, **kw)
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
'''


class Receiver:
    """aiosmtpd on a port of its own; what it took lands in outdir."""

    def __init__(self, name, mode="plain", port=None, cert=None):
        self.port = port or free_port()
        self.dir = tmp_path("rx-" + name)
        os.makedirs(self.dir, exist_ok=True)
        prog = tmp_path("receiver.py")
        with open(prog, "w") as f:
            f.write(RECEIVER)
        args = [PYTHON, prog, str(self.port), self.dir, mode] + (list(cert) if cert else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("aiosmtpd did not start")

    def messages(self):
        return [open(os.path.join(self.dir, n), "rb").read()
                for n in sorted(os.listdir(self.dir)) if n.endswith(".eml")]

    def wait(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.messages()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        return self.messages()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.terminate()
            self.proc.wait()


def script(name, text):
    path = tmp_path("queue-%s.lua" % name)
    with open(path, "w") as f:
        f.write(text)
    return path


def send(port, rcpt="a@example.com", body="Subject: hi\r\n\r\nhello\r\n", sender="cam@lan"):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        try:
            c.sendmail(sender, [rcpt], body)
            return 250, ""
        except smtplib.SMTPResponseException as e:
            return e.smtp_code, e.smtp_error.decode()
        except smtplib.SMTPRecipientsRefused as e:
            return list(e.recipients.values())[0][0], ""


def tls_receiver(test, name, mode="tls"):
    """A Receiver with STARTTLS and AUTH (mode "tls", or "tls-login": LOGIN
    only), stopped with the test; (receiver, its CA file)."""
    cert, key = make_cert()
    rx = Receiver(name, mode=mode, cert=(cert, key))
    test.addCleanup(rx.stop)
    return rx, cert


def make_cert():
    cert, key = tmp_path("rx-cert.pem"), tmp_path("rx-key.pem")
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


FORWARD = '''
local l = require "luasmtpd"
function on_mail(mail)
  local opts = { via = "%(via)s", starttls = %(starttls)s, cafile = %(cafile)s,
                 user = %(user)s, password = %(password)s,
                 to = mail.headers["x-to"] and { mail.headers["x-to"], "bad@x", "later@x" } }
  local r, err = l.forward(mail, opts)
  if not r then return 451, "4.4.0 " .. err end
  local rej = {}
  for k, v in pairs(r.rejected) do rej[#rej + 1] = k .. "=" .. v end
  table.sort(rej)
  l.log("forwarded", r.code, r.reply, table.concat(rej, ";"), "command", r.command)
  if r.code >= 400 then return r.code, r.reply end
end
'''


def lua_str(v):
    return "nil" if v is None else '"%s"' % v


class Forward(unittest.TestCase):
    def serve(self, rx, starttls="false", cafile=None, user=None, password=None, via=None):
        path = script("fwd", FORWARD % dict(via=via or "smtp://127.0.0.1:%d" % rx.port, starttls=starttls,
                                            cafile=lua_str(cafile), user=lua_str(user),
                                            password=lua_str(password)))
        return Server(path, "--state-dir", tmp_path("fwd-state"), "--max-size", "20M")

    def test_relays_byte_exact_after_the_trace_field(self):
        rx = Receiver("exact")
        self.addCleanup(rx.stop)
        big = b"".join(b"line %07d of a large message .. and a dot at the start:\r\n..x\r\n" % i
                       for i in range(82000))  # over 5 MB
        body = b"Subject: big\r\nMessage-ID: <big@lan>\r\n\r\n" + big
        with self.serve(rx) as srv:
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=60) as c:
                c.sendmail("cam@lan", ["office@example.com"], body)
            got = rx.wait(1)
            self.assertEqual(len(got), 1, srv.log())
            env, rest = got[0].split(b"\n", 1)
            self.assertEqual(env, b"X-Envelope: cam@lan office@example.com -")
            self.assertTrue(rest.startswith(b"Received: from "), rest[:200])
            head, sep, tail = rest.partition(b"\r\nSubject: big")
            self.assertIn(b"by ", head)
            self.assertIn(b"with ESMTP id ", head)
            self.assertIn(b"for <office@example.com>", head)
            self.assertEqual(b"Subject: big" + tail, body)   # the message itself is untouched
            self.assertGreater(len(body), 5 << 20)

    def test_each_refused_recipient_is_told_4xx_apart_from_5xx(self):
        rx = Receiver("refused")
        self.addCleanup(rx.stop)
        with self.serve(rx) as srv:
            self.assertEqual(send(srv.port, body="X-To: ok@example.com\r\n\r\nhi\r\n")[0], 250)
            m = srv.wait_log(r"forwarded (\d+) (.*?) (bad@x=.*)")
            self.assertIsNotNone(m, srv.log())
            self.assertEqual(m.group(1), "250")
            self.assertIn("bad@x=550 5.1.1 no such user", m.group(3))
            self.assertIn("later@x=450 4.2.0 try later", m.group(3))
            self.assertEqual(rx.wait(1)[0].split(b"\n", 1)[0], b"X-Envelope: cam@lan ok@example.com -")

    def test_receiver_refusing_the_message_gives_its_code(self):
        rx = Receiver("busy", mode="fail-first")
        self.addCleanup(rx.stop)
        with self.serve(rx) as srv:
            code, text = send(srv.port)
            self.assertEqual(code, 451, srv.log())
            self.assertIn("busy, once", text)
            self.assertEqual(send(srv.port)[0], 250)
            self.assertEqual(len(rx.wait(1)), 1)

    def test_starttls_and_auth(self):
        rx, cert = tls_receiver(self, "tls")
        with self.serve(rx, starttls='"required"', cafile=cert, user="dev", password="secret") as srv:
            self.assertEqual(send(srv.port)[0], 250, srv.log())
            got = rx.wait(1)
            self.assertEqual(got[0].split(b"\n", 1)[0], b"X-Envelope: cam@lan a@example.com auth PLAIN")
        # the certificate is checked: without the CA it is refused
        with self.serve(rx, starttls='"required"', user="dev", password="secret") as srv:
            code, text = send(srv.port)
            self.assertEqual(code, 451, srv.log())
            self.assertIn("forward:", text)

    def test_auth_login_when_plain_is_not_offered(self):
        rx, cert = tls_receiver(self, "login", "tls-login")
        with self.serve(rx, starttls='"required"', cafile=cert, user="dev", password="secret") as srv:
            self.assertEqual(send(srv.port)[0], 250, srv.log())
            got = rx.wait(1)
            self.assertEqual(got[0].split(b"\n", 1)[0], b"X-Envelope: cam@lan a@example.com auth LOGIN")

    def test_wrong_password_gives_the_servers_refusal(self):
        rx, cert = tls_receiver(self, "badauth")
        with self.serve(rx, starttls='"required"', cafile=cert, user="dev", password="wrong") as srv:
            code, text = send(srv.port)      # the script answers with r.code and r.reply
            self.assertEqual((code, text), (535, "5.7.8 Authentication credentials invalid"), srv.log())
            self.assertIsNotNone(srv.wait_log(r"forwarded 535 .* command AUTH"), srv.log())
            self.assertEqual(rx.messages(), [])

    def test_queued_job_with_a_refused_login_is_retried_not_dropped(self):
        rx, cert = tls_receiver(self, "softbounce")
        path = script("softbounce", '''
local l = require "luasmtpd"
config = { queue = { retry = "1,1" } }
function on_mail(mail)
  return 250, "2.0.0 queued as " .. assert(l.queue("forward", mail,
    { via = "smtp://127.0.0.1:%d", cafile = "%s", user = "dev", password = "wrong" }))
end
function on_queue_failed(job) l.log("dead letter", job.id) end
''' % (rx.port, cert))
        with Server(path, "--state-dir", tmp_path("softbounce-state")) as srv:
            self.assertEqual(send(srv.port)[0], 250)
            self.assertIsNotNone(srv.wait_log(r"deferred 1s: 535 5.7.8", count=2, timeout=10), srv.log())
            self.assertEqual(srv.count_log(r"dead letter"), 0)

    def test_starttls_required_but_not_offered(self):
        rx = Receiver("notls")
        self.addCleanup(rx.stop)
        with self.serve(rx, starttls='"required"') as srv:
            code, text = send(srv.port)
            self.assertEqual(code, 451, srv.log())
            self.assertEqual(rx.messages(), [])


QUEUE = '''
local l = require "luasmtpd"
config = { queue = { retry = "1,2" } }
function on_mail(mail)
  local id, err = l.queue("forward", mail, { via = "smtp://127.0.0.1:%(port)d", starttls = false })
  if not id then return 451, "4.3.0 " .. err end
  return 250, "2.0.0 queued as " .. id
end
function on_queue_failed(job)
  l.log("warn", "dead letter", job.id, job.kind, job.attempts, job.error)
end
'''


def jobs(state):
    db = sqlite3.connect(os.path.join(state, "luasmtpd.db"))
    try:
        return db.execute("SELECT id, state, attempts, last_error FROM jobs ORDER BY created").fetchall()
    finally:
        db.close()


class Queue(unittest.TestCase):
    def test_500_accepted_while_the_receiver_is_down_survive_kill_9(self):
        port = free_port()
        state = tmp_path("q500-state")
        path = script("q500", QUEUE % dict(port=port))
        srv = Server(path, "--state-dir", state, "--log-level", "info")
        try:
            def client(k):
                with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as c:
                    for i in range(50):
                        c.sendmail("cam@lan", ["a@example.com"],
                                   "Subject: n %d-%d\r\nX-N: %d-%d\r\n\r\nhi\r\n" % (k, i, k, i))
            threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(srv.count_log(r": 250$"), 500, srv.log()[-2000:])
        finally:
            srv.stop(sig=9)
        self.assertEqual(len(jobs(state)), 500)
        rx = Receiver("q500", port=port)
        self.addCleanup(rx.stop)
        srv = Server(path, "--state-dir", state, "--log-level", "info")
        try:
            # at least once: a duplicate may come before the last one, so
            # wait for 500 different messages, not for 500 files
            deadline = time.monotonic() + 60
            while True:
                seen = {}
                for m in rx.messages():
                    n = m.split(b"X-N: ", 1)[1].split(b"\r\n", 1)[0]
                    seen[n] = seen.get(n, 0) + 1
                if len(seen) >= 500 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual(len(seen), 500, srv.log()[-2000:])
            dups = sum(v - 1 for v in seen.values())
            print("\n  500 queued, kill -9, restart: %d delivered, %d duplicate(s)" % (len(seen), dups),
                  file=sys.stderr)
            deadline = time.monotonic() + 10
            while jobs(state) and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(jobs(state), [])
        finally:
            srv.stop()

    def test_550_is_one_dead_letter_and_one_hook_call(self):
        rx = Receiver("dead")
        self.addCleanup(rx.stop)
        state = tmp_path("dead-state")
        with Server(script("dead", QUEUE % dict(port=rx.port)), "--state-dir", state) as srv:
            self.assertEqual(send(srv.port, rcpt="bad@example.com")[0], 250)
            self.assertIsNotNone(srv.wait_log(r"dead letter \w+ forward 1 bad@example.com: 550 5.1.1", timeout=10), srv.log())
            time.sleep(1.5)
            self.assertEqual(srv.count_log(r"dead letter"), 1)
            rows = jobs(state)
            self.assertEqual([(r[1], r[2]) for r in rows], [("dead", 1)])
            self.assertIn("550 5.1.1", rows[0][3])
            # the commands see it, and flushing it brings it back
            out = subprocess.run([BINARY, "--state-dir", state, "--queue-list"], capture_output=True, text=True)
            self.assertEqual(out.returncode, 0)
            self.assertIn(rows[0][0], out.stdout)
            self.assertIn("dead", out.stdout)
            show = subprocess.run([BINARY, "--state-dir", state, "--queue-show", rows[0][0]],
                                  capture_output=True, text=True)
            self.assertIn("smtp://127.0.0.1", show.stdout)
            flush = subprocess.run([BINARY, "--state-dir", state, "--queue-flush", rows[0][0]],
                                   capture_output=True, text=True)
            self.assertEqual(flush.returncode, 0, flush.stderr)
            self.assertIsNotNone(srv.wait_log(r"dead letter", count=2, timeout=10), srv.log())
            deleted = subprocess.run([BINARY, "--state-dir", state, "--queue-delete", rows[0][0]],
                                     capture_output=True, text=True)
            self.assertEqual(deleted.returncode, 0)
            self.assertEqual(jobs(state), [])
            missing = subprocess.run([BINARY, "--state-dir", state, "--queue-show", "0000000000000000"],
                                     capture_output=True, text=True)
            self.assertEqual(missing.returncode, 1)
            self.assertIn("no job", missing.stderr)

    def test_4xx_is_retried_then_delivered(self):
        rx = Receiver("retry", mode="fail-first")
        self.addCleanup(rx.stop)
        state = tmp_path("retry-state")
        with Server(script("retry", QUEUE % dict(port=rx.port)), "--state-dir", state) as srv:
            self.assertEqual(send(srv.port)[0], 250)
            self.assertIsNotNone(srv.wait_log(r"deferred 1s: 451 4.3.0 busy, once"), srv.log())
            self.assertEqual(len(rx.wait(1)), 1)
            deadline = time.monotonic() + 5
            while jobs(state) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(jobs(state), [])

    def test_expiry(self):
        state = tmp_path("expiry-state")
        with Server(script("expiry", QUEUE % dict(port=free_port())), "--state-dir", state,
                    "--queue-lifetime", "2") as srv:
            self.assertEqual(send(srv.port)[0], 250)
            m = srv.wait_log(r"dead letter \w+ forward (\d+) expired after", timeout=15)
            self.assertIsNotNone(m, srv.log())
            self.assertEqual([r[1] for r in jobs(state)], ["dead"])

    def test_full_queue_answers_451_and_keeps_what_it_had(self):
        port = free_port()
        state = tmp_path("full-state")
        path = script("full", QUEUE % dict(port=port))
        with Server(path, "--state-dir", state, "--queue-max-bytes", "4K") as srv:
            codes = [send(srv.port, body="Subject: %d\r\n\r\n%s\r\n" % (i, "x" * 900))[0] for i in range(8)]
            self.assertIn(451, codes, srv.log())
            accepted = codes.index(451)
            self.assertEqual(codes[:accepted], [250] * accepted)
            self.assertTrue(all(c == 451 for c in codes[accepted:]))
            self.assertIn("queue full", srv.log())
        rx = Receiver("full", port=port)
        self.addCleanup(rx.stop)
        with Server(path, "--state-dir", state) as srv:
            self.assertEqual(len(rx.wait(accepted)), accepted)


    def test_disk_full_answers_451_and_keeps_what_it_had(self):
        mnt = tmp_path("tiny-fs")
        os.makedirs(mnt, exist_ok=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
                          capture_output=True).returncode != 0:
            self.skipTest("cannot mount a tmpfs here (it needs root)")
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        port = free_port()
        state = os.path.join(mnt, "state")
        path = script("disk-full", QUEUE % dict(port=port))
        body = "Subject: %d\r\n\r\n" + ("y" * 76 + "\r\n") * 800      # 62 KB each
        with Server(path, "--state-dir", state) as srv:
            replies = [send(srv.port, body=body % i) for i in range(30)]
            codes = [r[0] for r in replies]
            self.assertIn(451, codes, srv.log())
            accepted = codes.index(451)
            self.assertGreater(accepted, 0, srv.log())
            self.assertIn("4.3.0 queue: database or disk is full", replies[accepted][1])
            # no crash, and still serving
            codes.append(send(srv.port, body=body % len(codes))[0])
            self.assertIn(codes[-1], (250, 451))
            self.assertEqual(srv.proc.poll(), None)
        self.assertEqual(srv.proc.returncode, 0, srv.log())
        rx = Receiver("disk-full", port=port)
        self.addCleanup(rx.stop)
        with Server(path, "--state-dir", state) as srv:
            got = rx.wait(codes.count(250), timeout=30)
            time.sleep(2)                  # time for a second delivery, if one were coming
            got = rx.messages()
            print("\n  1 MB tmpfs: first 451 after %d messages, %d of %d accepted; %d delivered after a restart"
                  % (accepted, codes.count(250), len(codes), len(got)), end=" ", flush=True)
            subjects = [m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in got if b"Subject: " in m]
            want = sorted(b"%d" % i for i, c in enumerate(codes) if c == 250)
            self.assertTrue(set(want) <= set(subjects), (want, subjects, srv.log()))
            # a job whose outcome cannot be written (the disk still full) is
            # not delivered over and over: once, until the outcome is written
            self.assertEqual(len(subjects), len(set(subjects)), (subjects, srv.log()))


class FlakyWeb(http.server.BaseHTTPRequestHandler):
    calls = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FlakyWeb.calls.append((self.headers.get("Luasmtpd-Job"), body))
        self.send_response(503 if len(FlakyWeb.calls) <= 2 else 204)
        self.end_headers()

    def log_message(self, *a):
        pass


class HttpJobs(unittest.TestCase):
    def test_fails_twice_then_succeeds(self):
        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyWeb)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        self.addCleanup(web.shutdown)
        path = script("http", '''
local l = require "luasmtpd"
config = { queue = { retry = "1,1" } }
function on_mail(mail)
  local id, err = l.queue("http", { url = "http://127.0.0.1:%d/hook", method = "POST", body = mail.subject })
  if not id then return 451, "4.3.0 " .. err end
  l.log("queued", id)
end
''' % web.server_address[1])
        with Server(path, "--state-dir", tmp_path("http-state")) as srv:
            self.assertEqual(send(srv.port, body="Subject: door open\r\n\r\nx\r\n")[0], 250)
            job = srv.wait_log(r"queued (\w+)").group(1)
            deadline = time.monotonic() + 15
            while len(FlakyWeb.calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(FlakyWeb.calls, [(job, b"door open")] * 3, srv.log())
            self.assertEqual(srv.count_log(r"deferred .*HTTP 503"), 2)
            # the agent's lines are the server's, not the script's
            self.assertEqual(srv.count_log(r"info queue: job \S+ deferred"), 2, srv.log())
            self.assertEqual(srv.count_log(r"script: queue:"), 0)


class Store(unittest.TestCase):
    def test_values_survive_kill_9(self):
        state = tmp_path("store-state")
        path = script("store", '''
local l = require "luasmtpd"
local s = l.store
function on_mail(mail)
  if mail.subject == "set" then
    assert(s.set("name", "camera 1"))
    assert(s.set("table", { a = 1, b = "two", c = true }))
    assert(s.set("short", 1, 0.2))
    l.log("incr", s.incr("count"), s.incr("count", 2))
    l.log("add", tostring(s.add("once", true)), tostring(s.add("once", true)))
  elseif mail.subject == "keys" then
    l.log("keys", table.concat(s.keys(), ","), table.concat(s.keys("c"), ","), #s.keys("", 2),
          #s.keys("zzz"), table.concat(s.keys("\xff"), ","))
    l.log("delete if", tostring(s.delete("once", false)), tostring(s.delete("once", true)),
          tostring(s.get("once")), tostring(s.delete("count", "3")))
  else
    local t = s.get("table")
    l.log("got", s.get("name"), t.a, t.b, tostring(t.c), s.get("count"), tostring(s.get("short")),
          select(2, s.incr("name")))
  end
end
''')
        with Server(path, "--state-dir", state) as srv:
            self.assertEqual(send(srv.port, body="Subject: set\r\n\r\nx\r\n")[0], 250)
            self.assertIsNotNone(srv.wait_log(r"incr 1 3"), srv.log())
            self.assertIsNotNone(srv.wait_log(r"add true false"), srv.log())
            srv.stop(sig=9)
        time.sleep(0.3)
        with Server(path, "--state-dir", state) as srv:
            self.assertEqual(send(srv.port, body="Subject: get\r\n\r\nx\r\n")[0], 250)
            m = srv.wait_log(r"got .*")
            self.assertIsNotNone(m, srv.log())
            self.assertEqual(m.group(0), "got camera 1 1 two true 3 nil store: name does not hold a number")
            self.assertEqual(send(srv.port, body="Subject: keys\r\n\r\nx\r\n")[0], 250)
            self.assertIsNotNone(srv.wait_log(r"keys count,name,once,table count 2 0 $"), srv.log())
            self.assertIsNotNone(srv.wait_log(r"delete if false true nil false$"), srv.log())

    def test_reads_create_no_database(self):
        state = tmp_path("read-only-state")
        path = script("reads", '''
local l = require "luasmtpd"
function on_mail(mail) l.log("read", tostring(l.store.get("x")), #l.store.keys()) end
''')
        with Server(path, "--state-dir", state) as srv:
            self.assertEqual(send(srv.port)[0], 250)
            self.assertIsNotNone(srv.wait_log(r"read nil 0"), srv.log())
        self.assertFalse(os.path.exists(state))

    def test_workers_share_it(self):
        state = tmp_path("shared-state")
        path = script("shared", '''
local l = require "luasmtpd"
function on_mail(mail)
  l.log("count", l.store.incr("mails"), "first", tostring(l.store.add("seen:" .. mail.subject, true, 60)))
end
''')
        port = free_port()
        with Server(path, "--state-dir", state, "--workers", "2", listen="127.0.0.1:%d" % port) as srv:
            srv.port = port
            for i in range(20):
                self.assertEqual(send(port, body="Subject: %d\r\n\r\nx\r\n" % (i % 5))[0], 250)
            self.assertIsNotNone(srv.wait_log(r"count 20 ", timeout=10), srv.log())
            self.assertEqual(srv.count_log(r"first true"), 5)
            # both workers took mail: the sharing above is across processes
            self.assertGreater(srv.count_log(r" w1 .*script: count"), 0, srv.log())
            self.assertGreater(srv.count_log(r" w2 .*script: count"), 0, srv.log())

    def test_watchdog_survives_kill_9(self):
        state = tmp_path("watchdog-state")
        path = script("watchdog", '''
local l = require "luasmtpd"
l.watchdog("boot", 1.5, function(k) l.log("silent", k, "armed at load") end)
function on_mail(mail)
  local key, off = mail.subject:match("^(%S+)( ?o?f?f?)")
  if off == " off" then l.watchdog(key, nil)
  else l.log("armed", key, tostring(l.watchdog(key, 2, function(k) l.log("silent", k) end))) end
end
function on_watchdog(k) l.log("silent", k, "after a restart") end
''')
        with Server(path, "--state-dir", state) as srv:
            for key in ("cam1", "cam2", "cam3", "cam3 off"):
                self.assertEqual(send(srv.port, body="Subject: %s\r\n\r\nx\r\n" % key)[0], 250)
            self.assertIsNotNone(srv.wait_log(r"armed cam2 true"), srv.log())
            srv.stop(sig=9)
        self.assertEqual(srv.count_log(r"silent"), 0)
        with Server(path, "--state-dir", state) as srv:
            for key in ("cam1", "cam2", "boot"):
                self.assertIsNotNone(srv.wait_log(r"silent %s" % key, timeout=5), srv.log())
            time.sleep(0.5)
            # each once; the function armed at load still runs for its key
            self.assertEqual(srv.count_log(r"silent cam1 after a restart"), 1, srv.log())
            self.assertEqual(srv.count_log(r"silent cam2 after a restart"), 1, srv.log())
            self.assertEqual(srv.count_log(r"silent boot armed at load"), 1, srv.log())
            self.assertEqual(srv.count_log(r"silent cam3"), 0, srv.log())
            self.assertEqual(subprocess.run(["sqlite3", os.path.join(state, "luasmtpd.db"),
                                             "SELECT count(*) FROM kv WHERE key LIKE 'watchdog:%'"],
                                            capture_output=True, text=True).stdout.strip(), "0")

    def test_workers_share_watchdogs_and_debounce(self):
        port = free_port()
        path = script("watchdog-workers", '''
local l = require "luasmtpd"
function on_mail(mail)
  l.watchdog(mail.subject, 1, function(k) l.log("silent", k) end)
  l.log("mail", mail.subject, "first", tostring(l.debounce(mail.subject, 60)))
end
''')
        with Server(path, "--workers", "2", listen="127.0.0.1:%d" % port) as srv:
            # each key mailed every 0.3 s for 1.8 s, by either worker: its
            # 1 s watchdog is re-armed across workers and stays quiet
            for _ in range(6):
                for k in range(4):
                    self.assertEqual(send(port, body="Subject: dev%d\r\n\r\nx\r\n" % k)[0], 250)
                time.sleep(0.3)
            self.assertEqual(srv.count_log(r"silent dev"), 0, srv.log())
            for k in range(4):
                self.assertIsNotNone(srv.wait_log(r"silent dev%d" % k, timeout=5), srv.log())
            time.sleep(1.5)
            for k in range(4):
                self.assertEqual(srv.count_log(r"silent dev%d\b" % k), 1, srv.log())
                self.assertEqual(srv.count_log(r"mail dev%d first true" % k), 1, srv.log())
            self.assertEqual(srv.count_log(r"first false"), 20)
            self.assertGreater(srv.count_log(r" w1 .*script: mail"), 0, srv.log())
            self.assertGreater(srv.count_log(r" w2 .*script: mail"), 0, srv.log())
            self.assertEqual(srv.count_log(r"locked"), 0, srv.log())

    def test_write_is_atomic(self):
        out = tmp_path("write-out")
        os.makedirs(out, exist_ok=True)
        path = script("write", '''
local l = require "luasmtpd"
function on_mail(mail)
  local p, err = l.write("%s/" .. mail.subject .. ".txt", mail.raw)
  l.log("wrote", p, err)
  local _, err2 = l.write("%s/missing/dir/x", "x")
  l.log("failed", err2)
end
''' % (out, out))
        with Server(path, "--state-dir", tmp_path("write-state")) as srv:
            self.assertEqual(send(srv.port, body="Subject: pic\r\n\r\nx\r\n")[0], 250)
            self.assertIsNotNone(srv.wait_log(r"failed write: cannot create .*missing/dir/x"), srv.log())
            self.assertEqual(os.listdir(out), ["pic.txt"])
            self.assertIn(b"Subject: pic", open(os.path.join(out, "pic.txt"), "rb").read())

    def test_writes_wait_so_not_from_on_close(self):
        path = script("close", '''
local l = require "luasmtpd"
function on_mail(mail) l.log("get", tostring(l.store.get("k"))) end
function on_close() l.store.set("k", 1) end
''')
        with Server(path, "--state-dir", tmp_path("close-state")) as srv:
            self.assertEqual(send(srv.port)[0], 250)
            self.assertIsNotNone(srv.wait_log(r"on_close may not wait \(luasmtpd.store\)"), srv.log())
            self.assertIsNotNone(srv.wait_log(r"get nil"), srv.log())

    def test_not_while_loading(self):
        path = script("loading", 'local l = require "luasmtpd"\nl.store.set("x", 1)\n')
        out = subprocess.run([BINARY, "--check", path], capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)
        self.assertIn("store: not while the script loads", out.stderr)


class Sink:
    """Postfix's smtp-sink on a port of its own, each transaction dumped to
    a file with the MAIL and RCPT arguments it got (-d); args are more of
    its flags (-N: no DSN offered)."""

    def __init__(self, test, *args):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="luasmtpd-sink-")   # not under tmp_path: nobody must reach it
        os.chmod(self.dir, 0o777)              # smtp-sink writes as nobody
        test.addCleanup(shutil.rmtree, self.dir, True)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(["smtp-sink", *user, *args, "-d", self.dir + "/%M.",
                                      "127.0.0.1:%d" % self.port, "100"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        test.addCleanup(self.stop)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def wait(self, count, timeout=20):
        """The dumps, once count of them are whole: (arguments, message)."""
        deadline = time.monotonic() + timeout
        while True:
            names = sorted(os.listdir(self.dir))
            got = [open(os.path.join(self.dir, n), "rb").read() for n in names]
            if (len(got) >= count and all(g.endswith(b"\n") for g in got)) or time.monotonic() > deadline:
                return [self.parse(g) for g in got]
            time.sleep(0.05)

    @staticmethod
    def parse(dump):
        head, _, msg = dump.partition(b"\n\tby smtp-sink")
        args = [line.decode() for line in head.split(b"\n") if line.startswith((b"X-Mail-Args", b"X-Rcpt-Args"))]
        return args, msg.split(b"\n", 2)[2][:-1]      # after smtp-sink's Received:, before its empty line

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


FORWARD_DSN = '''
local l = require "luasmtpd"
function on_mail(mail)
  local opts = { via = "smtp://127.0.0.1:%(port)d", starttls = false }
  if mail.headers["x-no-dsn"] then opts.dsn = false end
  local r, err = l.forward(mail, opts)
  if not r then return 451, "4.4.0 " .. err end
  l.log("forwarded", r.code, "dsn", tostring(r.dsn))
  return r.code, r.reply
end
'''


def dsn_transaction(c, body, mail="MAIL FROM:<cam@lan> RET=HDRS ENVID=QQ+2B1"):
    """A transaction with the DSN parameters of RFC 3461 (xtext in ENVID
    and ORCPT); the final reply."""
    for cmd in (mail, "RCPT TO:<ops@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ops+2Bcam+40x",
                "RCPT TO:<b@x>", "DATA"):
        code = c.cmd(cmd)[0]
        assert code in (250, 354), (cmd, code)
    c.send(body + b".\r\n")
    return c.reply()


@unittest.skipUnless(os.path.exists("/usr/sbin/smtp-sink"), "Postfix's smtp-sink not installed")
class ForwardDsn(unittest.TestCase):
    """forward passes the DSN parameters on (RFC 3461 5.2.2: a relay keeps
    them), to Postfix's smtp-sink, which dumps what it got."""
    BODY = b"Subject: dsn\r\n\r\n..a dot\r\nh\xc3\xa9 8-bit\r\n"   # ".a dot", stuffed by the client

    def test_passed_on_when_offered(self):
        sink = Sink(self)
        with Server(script("dsn", FORWARD_DSN % dict(port=sink.port))) as srv:
            with srv.client() as c:
                c.cmd("EHLO cam")
                self.assertEqual(dsn_transaction(c, self.BODY)[0], 250, srv.log())
            (args, msg), = sink.wait(1)
            self.assertEqual(args, ["X-Mail-Args: <cam@lan> BODY=8BITMIME RET=HDRS ENVID=QQ+2B1",
                                    "X-Rcpt-Args: <ops@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ops+2Bcam@x",
                                    "X-Rcpt-Args: <b@x>"])
            self.assertTrue(msg.startswith(b"Received: from cam "), msg)
            # smtp-sink writes LF line ends; the message is otherwise as sent, unstuffed once
            self.assertTrue(msg.endswith(b"\nSubject: dsn\n\n.a dot\nh\xc3\xa9 8-bit\n"), msg)
            self.assertIsNotNone(srv.wait_log(r"forwarded 250 dsn true"), srv.log())

    def test_dropped_and_told_when_not_offered_or_not_wanted(self):
        sink = Sink(self, "-N")
        with Server(script("nodsn", FORWARD_DSN % dict(port=sink.port))) as srv:
            with srv.client() as c:
                c.cmd("EHLO cam")
                self.assertEqual(dsn_transaction(c, self.BODY)[0], 250, srv.log())
                self.assertEqual(dsn_transaction(c, b"X-No-Dsn: 1\r\n\r\nhi\r\n")[0], 250, srv.log())
                # only the recipients' parameters: still told
                self.assertEqual(dsn_transaction(c, b"\r\nhi\r\n", mail="MAIL FROM:<cam@lan>")[0], 250)
            dumps = sink.wait(3)
            self.assertEqual(sorted(d[0][0] for d in dumps), ["X-Mail-Args: <cam@lan>", "X-Mail-Args: <cam@lan>",
                                                              "X-Mail-Args: <cam@lan> BODY=8BITMIME"])
            self.assertEqual([d[0][1] for d in dumps], ["X-Rcpt-Args: <ops@x>"] * 3)
            self.assertIsNotNone(srv.wait_log(r"forwarded 250 dsn false", count=2), srv.log())
            self.assertEqual(srv.count_log(r"forwarded 250 dsn nil"), 1)     # dsn = false: none asked

    def test_a_message_without_a_last_line_end_gets_one(self):
        sink = Sink(self)
        with Server(script("bdat", FORWARD_DSN % dict(port=sink.port))) as srv:
            with srv.client() as c:
                c.cmd("EHLO cam")
                c.cmd("MAIL FROM:<cam@lan>")
                c.cmd("RCPT TO:<ops@x>")
                tail = b"Subject: chunk\r\n\r\n.first\r\nno line end"
                c.send(b"BDAT %d LAST\r\n" % len(tail) + tail)
                self.assertEqual(c.reply()[0], 250, srv.log())
            (args, msg), = sink.wait(1)
            self.assertTrue(msg.endswith(b"\nSubject: chunk\n\n.first\nno line end\n"), msg)

    def test_a_queued_forward_keeps_them(self):
        sink = Sink(self)
        path = script("dsnq", QUEUE % dict(port=sink.port))
        with Server(path, "--state-dir", tmp_path("dsnq-state")) as srv:
            with srv.client() as c:
                c.cmd("EHLO cam")
                self.assertEqual(dsn_transaction(c, self.BODY)[0], 250, srv.log())
            (args, msg), = sink.wait(1)
            self.assertEqual(args[0], "X-Mail-Args: <cam@lan> BODY=8BITMIME RET=HDRS ENVID=QQ+2B1")
            self.assertEqual(args[1], "X-Rcpt-Args: <ops@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ops+2Bcam@x")

    def test_bad_values_raise(self):
        path = script("dsnbad", r"""
local l = require "luasmtpd"
function on_mail(mail)
  for _, d in ipairs{ {ret = "ALL"}, {envid = string.rep("+", 40)}, {rcpt = {["b@x"] = {notify = {"NEVER", "DELAY"}}}},
                      {rcpt = {["b@x"] = {orcpt = "no type"}}}, 7 } do
    local ok, err = pcall(l.forward, mail, { via = "smtp://127.0.0.1:9", to = "b@x", dsn = d })
    l.log("refused", tostring(ok), err)
  end
  -- a queued forward is checked when it is queued, not when it is delivered
  local ok, err = pcall(l.queue, "forward", mail, { via = "smtp://127.0.0.1:9", dsn = {ret = "ALL"} })
  l.log("queued", tostring(ok), err)
end
""")
        with Server(path, "--state-dir", tmp_path("dsnbad-state")) as srv:
            self.assertEqual(send(srv.port)[0], 250)
            self.assertIsNotNone(srv.wait_log(r"queued false .*forward: dsn ret must be"), srv.log())
            for why in (r'dsn ret must be "FULL" or "HDRS", not .ALL.', r"dsn envid is over 100 characters as xtext",
                        r"dsn notify of b@x must be", r"dsn orcpt of b@x is not TYPE;ADDRESS",
                        r"dsn must be a table \(as mail.dsn\) or false"):
                self.assertIsNotNone(srv.wait_log(r"refused false .*forward: " + why), srv.log())


class Misbehaving(socketserver.StreamRequestHandler):
    """An SMTP server that goes wrong after EHLO, as server.mode says."""

    def handle(self):
        mode = self.server.mode
        self.wfile.write(b"220 odd ESMTP\r\n")
        self.rfile.readline()
        self.wfile.write(b"250-odd\r\n250 DSN\r\n")
        self.rfile.readline()                   # MAIL
        if mode == "refuse-then-close":         # the second recipient is never answered
            self.wfile.write(b"250 ok\r\n")
            self.rfile.readline()
            self.wfile.write(b"550 5.1.1 no\r\n")
            self.rfile.readline()
            return
        if mode == "garbage":
            self.wfile.write(b"hello there\r\n")
        elif mode == "long":
            self.wfile.write(b"250-" + b"x" * 5000)
        elif mode == "close":
            return
        try:
            self.rfile.read(1)                  # "silent": nothing more, until the client leaves
        except OSError:
            pass


class ForwardToABadServer(unittest.TestCase):
    """A next hop that is not speaking SMTP gets nil and a reason, soon:
    no hang, no crash, nothing taken for delivered."""

    def test_each_way_of_going_wrong(self):
        for mode, why in (("garbage", "not an SMTP reply"), ("long", "a line over 2048 bytes"),
                          ("close", "closed the connection"), ("silent", "no answer from the server within"),
                          ("refuse-then-close", "closed the connection")):
            with self.subTest(mode=mode):
                odd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Misbehaving)
                odd.daemon_threads = True
                odd.mode = mode
                threading.Thread(target=odd.serve_forever, daemon=True).start()
                self.addCleanup(odd.server_close)
                self.addCleanup(odd.shutdown)
                path = script("odd", '''
local l = require "luasmtpd"
function on_mail(mail)
  local r, err = l.forward(mail, { via = "smtp://127.0.0.1:%d", starttls = false, timeout = 1,
                                  to = { "a@x", "b@x" } })
  return 451, "4.4.0 " .. tostring(err)
end
''' % odd.server_address[1])
                with Server(path) as srv:
                    code, text = send(srv.port)
                    self.assertEqual(code, 451, srv.log())
                    self.assertIn("forward: ", text)
                    self.assertIn(why, text)


class RelayExample(unittest.TestCase):
    def test_plain_in_starttls_and_auth_out(self):
        rx, cert = tls_receiver(self, "relay")
        env = dict(SMARTHOST="smtp://127.0.0.1:%d" % rx.port, SMTP_USER="dev",
                   SMTP_PASSWORD="secret", SMTP_CAFILE=cert, LAN="127.0.")
        example = os.path.join(HERE, "..", "..", "examples", "relay.lua")
        srv = Server(example, "--state-dir", tmp_path("relay-state"), env=env)
        try:
            code, text = send(srv.port, sender="scanner@lan")
            self.assertEqual(code, 250)
            got = rx.wait(1)
            self.assertEqual(len(got), 1, srv.log())
            self.assertEqual(got[0].split(b"\n", 1)[0], b"X-Envelope: dev a@example.com auth PLAIN")
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main()
