"""The admin listener (--http): GET /metrics read by Prometheus' own Python
parser (python3-prometheus-client) and checked against the traffic sent,
its access control, and bad HTTP that must not hold up SMTP."""
import base64
import os
import re
import smtplib
import socket
import ssl
import time
import unittest
import urllib.error
import urllib.request

from harness import Client, Server, free_port, tmp_path
from test_queue import make_cert

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:          # scripts/deps.sh installs python3-prometheus-client
    text_string_to_metric_families = None

RULES = '''
local l = require "luasmtpd"
function on_helo(name)
  if name == "crash" then error("on purpose") end
  if name == "spin" then while true do end end
end
function on_rcpt(addr)
  if addr:match("^nobody@") then return 550, "5.1.1 no such user" end
end
function on_mail(m)
  if m.subject == "refuse" then return 554, "5.7.1 not this one" end
  if m.subject == "queue" then
    assert(l.queue("forward", m, { via = "smtp://127.0.0.1:%d", timeout = 1 }))
  end
end
'''


def script():
    path = tmp_path("console.lua")
    with open(path, "w") as f:
        f.write(RULES % free_port())
    return path


def get(port, path="/metrics", headers=None, host="127.0.0.1"):
    """(status, headers, body) of a GET."""
    req = urllib.request.Request("http://%s:%d%s" % (host, port, path), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def samples(text):
    """{(name, sorted labels): value}, every family with its HELP and TYPE."""
    out = {}
    for fam in text_string_to_metric_families(text):
        assert fam.documentation, fam.name
        assert fam.type in ("counter", "gauge", "histogram"), (fam.name, fam.type)
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0)


def own_address():
    """An address of this host that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))      # no packet is sent
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


@unittest.skipUnless(text_string_to_metric_families, "python3-prometheus-client not installed")
class Metrics(unittest.TestCase):
    WORKERS = ()

    def setUp(self):
        cert, key = make_cert()
        self.http = free_port()
        self.srv = Server("--http", str(self.http), "--tls-cert", cert, "--tls-key", key, "--hook-timeout", "0.2",
                          "--client-limit-exceptions", "192.0.2.255/32", "--max-clients-per-ip", "3",
                          script(), *self.WORKERS, listen="127.0.0.1:%d" % free_port(), log_level="info")
        self.addCleanup(self.srv.stop)

    def scrape(self):
        status, headers, body = get(self.http)
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        return samples(body)

    def send(self, subject, rcpts=("ops@site.example",), helo="cam1"):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname=helo, timeout=10) as c:
            c.sendmail("cam@site.example", list(rcpts), "Subject: %s\r\n\r\nbody\r\n" % subject)

    def test_counters_follow_the_traffic(self):
        before = self.scrape()
        self.assertEqual(value(before, "luasmtpd_connections_total"), 0)
        for i in range(3):
            self.send("ok %d" % i)
        self.send("two", rcpts=("ops@site.example", "nobody@site.example"))
        with self.assertRaises(smtplib.SMTPDataError):
            self.send("refuse")
        self.send("queue")
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as c:   # STARTTLS
            c.starttls(context=ssl._create_unverified_context())
            c.ehlo("cam2")
        for helo in ("crash", "spin"):
            with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as c:
                self.assertEqual(c.ehlo(helo)[0], 451)
        # --max-clients-per-ip 3 (loopback is no exception here; with
        # --workers, each worker counts its own)
        held = [socket.create_connection(("127.0.0.1", self.srv.port)) for _ in range(4)]
        if not self.WORKERS:
            self.assertTrue(self.srv.wait_log(r"--max-clients-per-ip"))
        deadline = time.monotonic() + 5
        while value(self.scrape(), "luasmtpd_connections_open") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        open_now = value(self.scrape(), "luasmtpd_connections_open")
        for s in held:
            s.close()

        m = self.scrape()
        # with --workers the four may have met on one worker, which refused one
        self.assertIn(open_now, (3, 4) if self.WORKERS else (3,))
        self.assertEqual(value(m, "luasmtpd_messages_total", result="accepted"), 5)
        self.assertEqual(value(m, "luasmtpd_messages_total", result="refused"), 1)
        sizes = [int(x) for x in re.findall(r"message \S+ from=.* size=(\d+): 250", self.srv.log())]
        self.assertEqual(len(sizes), 5)
        self.assertEqual(value(m, "luasmtpd_message_bytes_total"), sum(sizes))
        self.assertEqual(value(m, "luasmtpd_replies_total", stage="rcpt", **{"class": "5xx"}), 1)
        self.assertEqual(value(m, "luasmtpd_replies_total", stage="rcpt", **{"class": "2xx"}), 6)
        self.assertEqual(value(m, "luasmtpd_replies_total", stage="message", **{"class": "5xx"}), 1)
        self.assertEqual(value(m, "luasmtpd_replies_total", stage="data", **{"class": "3xx"}), 6)
        self.assertEqual(value(m, "luasmtpd_replies_total", stage="starttls", **{"class": "2xx"}), 1)
        self.assertEqual(value(m, "luasmtpd_commands_total", command="rcpt"), 7)
        self.assertEqual(value(m, "luasmtpd_tls_handshakes_total", result="ok"), 1)
        if not self.WORKERS:
            self.assertEqual(value(m, "luasmtpd_connections_refused_total", reason="per_ip"), 1)
        # 6 + 1 + 2 sessions, the 3 held and the one refused
        self.assertEqual(value(m, "luasmtpd_connections_total"), 13)
        self.assertEqual(value(m, "luasmtpd_hook_calls_total", hook="on_rcpt"), 7)
        self.assertEqual(value(m, "luasmtpd_hook_calls_total", hook="on_mail"), 6)
        self.assertEqual(value(m, "luasmtpd_hook_errors_total", hook="on_helo"), 1)
        self.assertEqual(value(m, "luasmtpd_hook_budget_overruns_total", hook="on_helo"), 1)
        self.assertEqual(value(m, "luasmtpd_hook_duration_seconds_count", hook="on_rcpt"), 7)
        self.assertEqual(value(m, "luasmtpd_hook_duration_seconds_bucket", hook="on_rcpt", le="+Inf"), 7)
        self.assertGreaterEqual(value(m, "luasmtpd_hook_duration_seconds_sum", hook="on_helo"), 0.2)
        self.assertEqual(value(m, "luasmtpd_queue_jobs", state="queued"), 1)
        self.assertGreater(value(m, "luasmtpd_queue_oldest_job_age_seconds"), 0)
        self.assertEqual(value(m, "luasmtpd_processes"), len(self.WORKERS) and 2 or 1)
        self.assertGreater(value(m, "luasmtpd_process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(value(m, "luasmtpd_process_open_fds"), 3)
        time.sleep(1.2)                        # the Lua figure is kept once a second
        self.assertGreater(value(self.scrape(), "luasmtpd_lua_memory_bytes"), 10000)


    def test_memory_budget_in_use(self):
        """luasmtpd_memory_budget_used_bytes: a message on its way holds its
        bytes of --max-memory, and gives them back at its end."""
        self.assertLess(value(self.scrape(), "luasmtpd_memory_budget_used_bytes"), 1 << 20)
        c = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10)
        f = c.makefile("rb")
        def reply():
            while True:
                line = f.readline()
                if line[3:4] != b"-":
                    return line
        reply()
        for cmd in (b"EHLO cam1", b"MAIL FROM:<cam@site.example>", b"RCPT TO:<ops@site.example>", b"DATA"):
            c.sendall(cmd + b"\r\n")
            reply()
        c.sendall(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2000)   # 2 MB
        deadline = time.monotonic() + 5
        while value(self.scrape(), "luasmtpd_memory_budget_used_bytes") < 2000000 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(value(self.scrape(), "luasmtpd_memory_budget_used_bytes"), 2000000)
        c.sendall(b".\r\n")
        self.assertTrue(reply().startswith(b"250 "))
        c.sendall(b"QUIT\r\n")
        reply()
        c.close()
        deadline = time.monotonic() + 5
        while value(self.scrape(), "luasmtpd_memory_budget_used_bytes") >= 1 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLess(value(self.scrape(), "luasmtpd_memory_budget_used_bytes"), 1 << 20)


class MetricsWorkers(Metrics):
    """With --workers, whichever worker answers sums them all."""
    WORKERS = ("--workers", "2")

    def test_every_scrape_sums_the_workers(self):
        # the kernel spreads connections over the workers by a hash, so a
        # few more may be needed before each has served some
        sent = 0
        while sent < 10 or (len(set(re.findall(r"\bw(\d) .*message \S+ from=", self.srv.log()))) < 2
                            and sent < 60):
            self.send("m%d" % sent)
            sent += 1
        self.assertEqual(len(set(re.findall(r"\bw(\d) .*message \S+ from=", self.srv.log()))), 2)
        self.assertEqual({value(self.scrape(), "luasmtpd_messages_total", result="accepted") for _ in range(10)},
                         {sent})


class Access(unittest.TestCase):
    def server(self, *args, http="127.0.0.1:%d"):
        self.http = free_port()
        srv = Server("--http", http % self.http, *args, listen="127.0.0.1:%d" % free_port(), log_level="info")
        self.addCleanup(srv.stop)
        return srv

    def test_bearer_token(self):
        self.server("--http-token", "t0ken-xyz")
        status, headers, _ = get(self.http)
        self.assertEqual(status, 401)
        self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="luasmtpd"')
        self.assertEqual(get(self.http, headers={"Authorization": "Bearer t0ken-xy"})[0], 401)
        self.assertEqual(get(self.http, headers={"Authorization": "Bearer t0ken-xyz"})[0], 200)

    def test_basic_user_and_password(self):
        srv = self.server("--http-user", "ops", "--http-password", "pa55-word")
        status, headers, _ = get(self.http)
        self.assertEqual(status, 401)
        self.assertIn("Basic", headers["WWW-Authenticate"])
        basic = lambda u, p: {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (u, p)).encode()).decode()}
        self.assertEqual(get(self.http, headers=basic("ops", "pa55-wor"))[0], 401)
        self.assertEqual(get(self.http, headers=basic("op", "pa55-word"))[0], 401)
        status, _, body = get(self.http, headers=basic("ops", "pa55-word"))
        self.assertEqual(status, 200)
        self.assertIn("luasmtpd_connections_total", body)
        self.assertNotIn("pa55-word", srv.log())

    def test_without_credentials_only_loopback(self):
        ip = own_address()
        if ip is None:
            self.skipTest("this host has no address but loopback")
        srv = self.server(http="0.0.0.0:%d")
        self.assertEqual(get(self.http)[0], 200)
        with self.assertRaises((urllib.error.URLError, ConnectionError, OSError)):
            get(self.http, host=ip)
        self.assertTrue(srv.wait_log(r"http: refused %s:\d+: without --http-token or --http-user only loopback"
                                     % re.escape(ip)))

    def test_with_a_token_other_hosts_may_ask(self):
        ip = own_address()
        if ip is None:
            self.skipTest("this host has no address but loopback")
        self.server("--http-token", "t0ken-xyz", http="0.0.0.0:%d")
        self.assertEqual(get(self.http, host=ip)[0], 401)
        self.assertEqual(get(self.http, host=ip, headers={"Authorization": "Bearer t0ken-xyz"})[0], 200)

    def test_option_errors(self):
        import subprocess
        from harness import BINARY
        for args, text in ((["--http-user", "ops"], "--http-user needs --http-password"),
                           (["--http-password", "x"], "--http-password needs --http-user"),
                           (["--http-token", "t"], "--http-token needs --http"),
                           (["--http", "8025", "--http-token", "t", "--http-user", "u", "--http-password", "p"],
                            "one of them"),
                           (["--http", "host:80"], "--http:")):
            empty = tmp_path("empty.lua")
            open(empty, "w").close()
            p = subprocess.run([BINARY, "--check", empty] + args, capture_output=True, text=True, timeout=10)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(text, p.stderr, args)


class BadRequests(unittest.TestCase):
    def setUp(self):
        self.http = free_port()
        self.srv = Server("--http", str(self.http), listen="127.0.0.1:%d" % free_port(), log_level="info")
        self.addCleanup(self.srv.stop)

    def raw(self, data, timeout=5):
        with socket.create_connection(("127.0.0.1", self.http), timeout=timeout) as s:
            s.sendall(data)
            out = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            except (ConnectionResetError, socket.timeout):
                pass
            return out

    def test_unknown_paths_methods_and_oversized_headers(self):
        self.assertEqual(get(self.http, "/nothing")[0], 404)
        self.assertTrue(self.raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
                        .startswith(b"HTTP/1.1 405"))
        reply = self.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
        self.assertRegex(reply[:12], rb"^(HTTP/1\.1 4(31|13)|)$")   # refused, or closed
        self.assertRegex(self.raw(b"\x00\xff garbage\r\n\r\n")[:12], rb"^(HTTP/1\.1 400|)$")
        self.assertEqual(get(self.http)[0], 200)
        self.assertEqual(self.srv.proc.poll(), None)

    def test_slow_clients_do_not_hold_up_smtp(self):
        slow = []
        for _ in range(8):              # the most one address may hold
            s = socket.create_connection(("127.0.0.1", self.http))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")   # and never the end of the headers
            slow.append(s)
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=5) as c:
            self.assertEqual(c.sendmail("a@site.example", ["b@site.example"], "Subject: s\r\n\r\nx\r\n"), {})
        self.assertLess(time.monotonic() - t0, 2)
        for s in slow:
            s.close()
        # once they are gone, this address may ask again
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if get(self.http)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        self.assertEqual(get(self.http)[0], 200)


API_RULES = """
local l = require "luasmtpd"
function on_auth(user, password) return user == "cam" and password == "pa55-smtp" end
function on_rcpt(addr)
  if addr:match("^nobody@") then return 550, "5.1.1 no such user" end
end
function on_mail(m)
  if m.subject == "metric errors" then
    local said = {}
    for _, args in ipairs({ { "bad-name" }, { "x_total", -1 }, { "ok", 1, { ["bad key"] = "v" } } }) do
      local ok, err = pcall(l.metric, table.unpack(args))
      said[#said + 1] = ok and "accepted" or err:match("%%((.-)%%)$") or err
    end
    return 250, "2.0.0 " .. table.concat(said, "|")
  end
  l.trace("matched rule camera-" .. (m.subject:match("cam(%%d)") or "?"))
  l.metric("alarms_total", 1, { zone = "3", site = "hq" })
  assert(l.write(%r, m.subject))
  if m.subject == "refuse" then return 554, "5.7.1 not this one" end
  if m.subject == "crash" then error("on purpose") end
end
"""


def api_script():
    path = tmp_path("api.lua")
    with open(path, "w") as f:
        f.write(API_RULES % tmp_path("api-out.txt"))
    return path


def get_json(port, path):
    status, headers, body = get(port, path)
    assert status == 200, (path, status, body)
    assert headers["Content-Type"] == "application/json; charset=utf-8", headers["Content-Type"]
    import json
    return json.loads(body)


def picture():
    from email.message import EmailMessage
    m = EmailMessage()
    m["From"] = "Camera 3 <cam3@site.example>"
    m["To"] = "ops@site.example"
    m["Subject"] = "Motion cam3"
    m.set_content("Motion detected in zone 3\nat the gate\n")
    m.add_alternative("<p>Motion <b>detected</b> in zone 3</p>", subtype="html")
    m.add_attachment(bytes(range(256)) * 40, maintype="image", subtype="jpeg", filename="snap 1.jpg")
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Api(unittest.TestCase):
    """GET /api/...: the kept messages with their traces, open sessions, and
    the event stream, checked against what was sent."""
    ARGS = ()

    def setUp(self):
        self.http = free_port()
        self.srv = Server("--http", str(self.http), "--allow-insecure-auth", api_script(), *self.ARGS,
                          listen="127.0.0.1:%d" % free_port(), log_level="info")
        self.addCleanup(self.srv.stop)

    def send(self, body, rcpts=("ops@site.example",), sender="cam3@site.example", login=False):
        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="cam3.lan", timeout=10) as c:
            if login:
                c.login("cam", "pa55-smtp")
            return c.sendmail(sender, list(rcpts), body)

    def test_messages_as_sent_with_their_trace(self):
        raw = picture()
        self.assertEqual(self.send(raw, rcpts=("ops@site.example", "nobody@site.example"), login=True),
                         {"nobody@site.example": (550, b"5.1.1 no such user")})
        with self.assertRaises(smtplib.SMTPDataError):
            self.send(b"Subject: refuse\r\n\r\nno\r\n", sender="other@else.example")
        with self.assertRaises(smtplib.SMTPDataError):
            self.send(b"Subject: crash\r\n\r\nno\r\n")
        msgs = get_json(self.http, "/api/messages")
        self.assertEqual([m["reply"]["code"] for m in msgs], [451, 554, 250])    # newest first
        self.assertEqual([m["id"] for m in msgs], [3, 2, 1])
        m = msgs[2]
        self.assertEqual((m["sender"], m["recipients"], m["size"], m["helo"], m["user"], m["peer"]),
                         ("cam3@site.example", ["ops@site.example"], len(raw), "cam3.lan", "cam", "127.0.0.1"))
        self.assertTrue(m["raw_kept"])
        self.assertRegex(m["queued_as"], r"^[0-9A-F]{16}\.1$")
        f = m["fields"]
        self.assertEqual((f["from"], f["to"], f["subject"]), ("Camera 3 <cam3@site.example>", "ops@site.example",
                                                               "Motion cam3"))
        self.assertTrue(f["excerpt"].startswith("Motion detected in zone 3"))
        self.assertEqual(f["attachments"], [{"name": "snap 1.jpg", "type": "image/jpeg", "size": 10240}])
        self.assertTrue(f["html"])
        # made from the kept text when first listed, then remembered: the
        # same again, and the same for the message alone
        self.assertEqual(get_json(self.http, "/api/messages")[2]["fields"], f)
        self.assertEqual(get_json(self.http, "/api/messages/1")["fields"], f)
        # the trace: every stage, who decided it, the actions and the script's line
        stages = [(e["stage"], e["code"], e["who"]) for e in m["trace"] if e["kind"] == "stage"]
        self.assertEqual([s[:2] for s in stages], [("connect", 220), ("helo", 250), ("auth", 235), ("mail", 250),
                                                   ("rcpt", 250), ("rcpt", 550), ("data", 354), ("message", 250)])
        self.assertRegex(stages[5][2], r"^on_rcpt \(.*api\.lua:4\)$")
        self.assertRegex(stages[7][2], r"^on_mail \(.*api\.lua:7\)$")
        self.assertEqual(stages[0][2], "")            # no on_connect: the server's own answer
        rcpt = [e for e in m["trace"] if e["stage"] == "rcpt"][1]
        self.assertEqual(rcpt["text"], "5.1.1 no such user")
        note = [e for e in m["trace"] if e["kind"] == "note"]
        self.assertEqual([(n["who"], n["text"]) for n in note], [("on_mail", "matched rule camera-3")])
        act = [e for e in m["trace"] if e["kind"] == "action"]
        self.assertEqual([(a["who"], a["text"], a["result"].split(":")[0]) for a in act],
                         [("write", tmp_path("api-out.txt"), "ok")])
        for e in m["trace"]:
            self.assertGreaterEqual(e["took_us"], 0)
        self.assertEqual(sorted(m["trace"], key=lambda e: e["at_us"]), m["trace"])
        self.assertLess(abs(m["time"] / 1000 - time.time()), 60)
        # the dialogue, the password never in it
        self.assertIn("C: AUTH PLAIN ***\nS: 235 2.7.0 Authentication successful\n", m["dialogue"])
        self.assertIn("S: 550 5.1.1 no such user\n", m["dialogue"])
        self.assertIn("C: (the message: %d bytes)\nS: 250 2.0.0 Ok: queued as %s\n" % (len(raw), m["queued_as"]),
                      m["dialogue"])
        everything = get(self.http, "/api/messages")[2] + get(self.http, "/api/messages/1")[2]
        self.assertNotIn("pa55-smtp", everything)
        self.assertNotIn(base64.b64encode(b"\0cam\0pa55-smtp").decode(), everything)
        # the refused ones say who refused
        decided = lambda m: [e["who"] for e in m["trace"] if e["kind"] == "stage" and e["stage"] == "message"]
        self.assertEqual(decided(msgs[1]), ["on_mail (%s:7)" % api_script()])
        self.assertEqual(decided(msgs[0]), ["on_mail (script error)"])

        # one message: its text, HTML, attachments, and the raw message
        one = get_json(self.http, "/api/messages/1")
        self.assertEqual(one["text"], "Motion detected in zone 3\nat the gate\n")
        self.assertEqual(one["html"], "<p>Motion <b>detected</b> in zone 3</p>\n")
        self.assertEqual(one["parts"], [{"index": 0, "name": "snap 1.jpg", "type": "image/jpeg"}])
        status, headers, _ = get(self.http, "/api/messages/1/raw")
        self.assertEqual((status, headers["Content-Type"]), (200, "message/rfc822"))
        with urllib.request.urlopen("http://127.0.0.1:%d/api/messages/1/raw" % self.http, timeout=10) as r:
            self.assertEqual(r.read(), raw)
        with urllib.request.urlopen("http://127.0.0.1:%d/api/messages/1/attachments/0" % self.http, timeout=10) as r:
            self.assertEqual(r.read(), bytes(range(256)) * 40)
            self.assertEqual(r.headers["Content-Disposition"], 'attachment; filename="snap_1.jpg"')
            self.assertEqual(r.headers["Content-Type"], "application/octet-stream")
        for path in ("/api/messages/9", "/api/messages/1/attachments/1", "/api/messages/x", "/api/messages/1/x",
                     "/api/messages/1/attachments/", "/api/messages/99999999999999999999"):
            self.assertEqual(get(self.http, path)[0], 404, path)

        # filters
        self.assertEqual([m["id"] for m in get_json(self.http, "/api/messages?limit=1")], [3])
        self.assertEqual([m["id"] for m in get_json(self.http, "/api/messages?verdict=refused")], [3, 2])
        self.assertEqual([m["id"] for m in get_json(self.http, "/api/messages?verdict=5xx")], [2])
        self.assertEqual([m["id"] for m in get_json(self.http, "/api/messages?verdict=accepted")], [1])
        self.assertEqual([m["id"] for m in get_json(self.http, "/api/messages?sender=ELSE.example")], [2])
        for q in ("limit=0", "limit=x", "verdict=maybe"):
            self.assertEqual(get(self.http, "/api/messages?" + q)[0], 400, q)

        # the script's own counter and the actions, in /metrics
        if text_string_to_metric_families:
            mm = samples(get(self.http)[2])
            self.assertEqual(value(mm, "luasmtpd_script_alarms_total", zone="3", site="hq"), 3)
            self.assertEqual(value(mm, "luasmtpd_actions_total", kind="write", result="ok"), 3)

    def test_metric_misuse_is_an_error(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as c:
            c.ehlo("cam3.lan")
            self.assertEqual(c.mail("cam3@site.example")[0], 250)
            self.assertEqual(c.rcpt("ops@site.example")[0], 250)
            code, text = c.data(b"Subject: metric errors\r\n\r\nx\r\n")
        self.assertEqual(code, 250)
        said = text.decode().split("|")
        self.assertIn("a name is [A-Za-z_][A-Za-z0-9_]*", said[0])
        self.assertIn("only goes up", said[1])
        self.assertIn("label name", said[2])

    def test_open_sessions(self):
        with Client(self.srv.port) as c:
            c.cmd("EHLO gate.lan")
            c.cmd("MAIL FROM:<a@site.example>")
            time.sleep(0.3)
            sessions = get_json(self.http, "/api/sessions")
            self.assertEqual(len(sessions), 1)
            s = sessions[0]
            self.assertEqual((s["helo"], s["state"], s["peer"], s["messages"]), ("gate.lan", "mail", "127.0.0.1", 0))
            self.assertGreaterEqual(s["idle_ms"], 250)
        deadline = time.monotonic() + 5
        while get_json(self.http, "/api/sessions") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(get_json(self.http, "/api/sessions"), [])

    def test_event_stream(self):
        import json
        import threading
        events = []
        sock = socket.create_connection(("127.0.0.1", self.http), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        got = threading.Event()

        def read():
            data = b""
            while not got.is_set():
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                data += chunk
                for line in data.split(b"\n"):
                    if line.startswith(b"data: "):
                        try:
                            e = json.loads(line[6:])
                        except ValueError:
                            continue      # a line cut by the chunked encoding
                        if e not in events:
                            events.append(e)
                if any(e["type"] == "error" for e in events):
                    got.set()
        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(0.5)
        self.send(b"Subject: cam3\r\n\r\nhello\r\n")
        with self.assertRaises(smtplib.SMTPDataError):
            self.send(b"Subject: crash\r\n\r\nno\r\n")
        self.assertTrue(got.wait(10), events)
        types = [e["type"] for e in events]
        for t_ in ("session", "stage", "action", "message", "error"):
            self.assertIn(t_, types)
        msg = [e for e in events if e["type"] == "message"]
        self.assertEqual([(e["id"], e["code"], e["subject"]) for e in msg], [(1, 250, "cam3"), (2, 451, "crash")])
        self.assertRegex(msg[0]["who"], r"^on_mail \(.*api\.lua:\d+\)$")
        # a stage has an event when something decided it: here on_rcpt, and
        # on_auth and the core for nothing; the message's is its own event
        stages = [(e["stage"], e["code"]) for e in events if e["type"] == "stage"]
        self.assertEqual(stages, [("rcpt", 250), ("rcpt", 250)], events)
        self.assertTrue(all(e["who"].startswith("on_rcpt (") for e in events if e["type"] == "stage"))
        err = [e for e in events if e["type"] == "error"][0]
        self.assertEqual((err["hook"], err["why"]), ("on_mail", "script error"))
        self.assertIn("on purpose", err["message"])


class Streams(unittest.TestCase):
    def test_at_most_eight_event_streams(self):
        """The ninth /api/events gets 503 (from other loopback addresses:
        one address may hold only eight connections of any kind)."""
        http = free_port()
        srv = Server("--http", str(http), listen="127.0.0.1:%d" % free_port(), log_level="info")
        self.addCleanup(srv.stop)
        held = []
        for i in range(9):
            s = socket.socket()
            s.bind(("127.0.0.%d" % (i + 2), 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", http))
            s.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(s)
            head = s.recv(4096)
            self.assertTrue(head.startswith(b"HTTP/1.1 503" if i == 8 else b"HTTP/1.1 200"), (i, head[:40]))
        for s in held:
            s.close()
        self.assertEqual(get(http)[0], 200)


class ApiWorkers(Api):
    """With --workers, whichever worker answers shows every worker's messages."""
    ARGS = ("--workers", "2")

    def test_every_worker_shows_them_all(self):
        for i in range(8):
            self.send(b"Subject: m%d\r\n\r\nx\r\n" % i)
        seen = {tuple(m["id"] for m in get_json(self.http, "/api/messages")) for _ in range(10)}
        self.assertEqual(seen, {tuple(range(8, 0, -1))})
        self.assertEqual(len(set(re.findall(r"\bw(\d) .*message \S+ from=", self.srv.log()))), 2)


class Keep(unittest.TestCase):
    def server(self, *args):
        self.http = free_port()
        srv = Server("--http", str(self.http), *args, listen="127.0.0.1:%d" % free_port(), log_level="info")
        self.addCleanup(srv.stop)
        return srv

    def send(self, srv, body):
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
            c.sendmail("a@site.example", ["b@site.example"], body)

    def test_keep_counts_and_bytes(self):
        srv = self.server("--keep", "3")
        for i in range(5):
            self.send(srv, "Subject: %d\r\n\r\nx\r\n" % i)
        self.assertEqual([m["fields"]["subject"] for m in get_json(self.http, "/api/messages")], ["4", "3", "2"])
        self.assertEqual(get(self.http, "/api/messages/2")[0], 404)
        srv.stop()
        srv = self.server("--keep-bytes", "1M")
        big = "Subject: %d\r\n\r\n" + ("y" * 998 + "\r\n") * 300     # 300 KB each
        for i in range(6):
            self.send(srv, big % i)
        kept = [m["fields"]["subject"] for m in get_json(self.http, "/api/messages")]
        self.assertEqual(kept, ["5", "4", "3"])
        srv.stop()
        srv = self.server("--keep", "0")
        self.send(srv, "Subject: x\r\n\r\nx\r\n")
        self.assertEqual(get_json(self.http, "/api/messages"), [])

    def test_memory_follows_keep_not_keep_bytes(self):
        """--keep 200 of 64M: the shared memory written stays near what 200
        messages take, however many go by."""
        srv = self.server()
        body = "Subject: s\r\n\r\n" + ("x" * 78 + "\r\n") * 25      # 2 KB
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as c:
            for _ in range(5000):
                c.sendmail("a@site.example", ["b@site.example"], body)
        with open("/proc/%d/status" % srv.proc.pid) as f:
            shmem = int(re.search(r"RssShmem:\s+(\d+) kB", f.read()).group(1))
        self.assertLess(shmem, 4096, "%d kB of shared memory touched for 5000 messages of 3 KB kept" % shmem)
        self.assertEqual(len(get_json(self.http, "/api/messages?limit=1000")), 200)

    def test_a_message_larger_than_keep_bytes(self):
        srv = self.server("--keep-bytes", "1M", "--max-size", "4M")
        self.send(srv, "Subject: huge\r\n\r\n" + ("z" * 998 + "\r\n") * 1500)
        m = get_json(self.http, "/api/messages")[0]
        self.assertEqual((m["fields"]["subject"], m["raw_kept"], m["reply"]["code"]), ("huge", False, 250))
        self.assertEqual(get(self.http, "/api/messages/%d/raw" % m["id"])[0], 404)


if __name__ == "__main__":
    unittest.main()
