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

from harness import Server, free_port, tmp_path
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


class MetricsWorkers(Metrics):
    """With --workers, whichever worker answers sums them all."""
    WORKERS = ("--workers", "2")

    def test_every_scrape_sums_the_workers(self):
        for i in range(10):
            self.send("m%d" % i)
        self.assertEqual({value(self.scrape(), "luasmtpd_messages_total", result="accepted") for _ in range(10)},
                         {10})
        self.assertEqual(len(set(re.findall(r"\bw(\d) .*message \S+ from=", self.srv.log()))), 2)


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


if __name__ == "__main__":
    unittest.main()
