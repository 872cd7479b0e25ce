"""Behind a load balancer: the PROXY protocol (HAProxy's v1 text and v2
binary headers) on --proxy-protocol listeners, from raw sockets for the
edge cases and through a real HAProxy (Debian's haproxy, started here on
loopback) balancing over two luasmtpd instances."""
import os
import re
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest

from harness import Server, free_port, tmp_path
from test_queue import make_cert

HERE = os.path.dirname(os.path.abspath(__file__))

# The hook tells what it sees of each client.
SEEN = '''
local l = require "luasmtpd"
function on_connect(s)
  l.log("seen ip=" .. s.ip .. " port=" .. s.port .. " proxied=" .. tostring(s.proxied) .. " proxy=" ..
        tostring(s.proxy_ip) .. " local=" .. s.local_ip .. ":" .. s.local_port ..
        " authority=" .. tostring(s.proxy_authority) .. " proxy_tls=" .. tostring(s.proxy_tls))
end
function on_mail(m)
  l.log("mail ip=" .. m.ip .. " port=" .. m.port .. " proxy=" .. tostring(m.proxy) .. " subject=" .. m.subject)
end
'''

V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def script():
    path = tmp_path("proxy_seen.lua")
    with open(path, "w") as f:
        f.write(SEEN)
    return path


def v2_tcp4(src, dst, sport, dport, tlvs=b"", command=0x21):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlvs
    return V2 + bytes([command, 0x11]) + struct.pack("!H", len(body)) + body


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def closed(sock):
    """The server closed: an end of file, or a reset when it had not read
    all that was sent."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def read_reply(sock):
    data = b""
    while not re.search(rb"(^|\n)\d{3} [^\n]*\r\n$", data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class Headers(unittest.TestCase):
    """Raw sockets: each form of the header, split anyhow, and each refusal."""

    @classmethod
    def setUpClass(cls):
        cls.cert, cls.key = make_cert()
        cls.srv = Server("--proxy-protocol", "*", "--listen-tls", "127.0.0.1:0", "--tls-cert", cls.cert,
                         "--tls-key", cls.key, "--timeout", "2", script())

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def session(self, header, split=False):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        if split:
            for b in header:
                s.sendall(bytes([b]))
                time.sleep(0.002)
        else:
            s.sendall(header)
        return s

    def test_v1(self):
        s = self.session(b"PROXY TCP4 192.0.2.7 198.51.100.2 56324 25\r\n")
        self.assertTrue(read_reply(s).startswith(b"220 "))
        s.sendall(b"QUIT\r\n")
        s.close()
        self.assertTrue(self.srv.wait_log(r"seen ip=192\.0\.2\.7 port=56324 proxied=true proxy=127\.0\.0\.1 "
                                          r"local=198\.51\.100\.2:25"))
        self.assertTrue(self.srv.wait_log(r"connect from 192\.0\.2\.7:56324 to 198\.51\.100\.2:25 via "
                                          r"127\.0\.0\.1:\d+ \(PROXY v1\)"))

    def test_v2_split_byte_by_byte_with_tlvs_then_a_message(self):
        tlvs = tlv(0x02, b"mx.site.example") + tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3"))
        s = self.session(v2_tcp4("192.0.2.8", "198.51.100.3", 40000, 2525, tlvs), split=True)
        self.assertTrue(read_reply(s).startswith(b"220 "))
        for line in (b"EHLO cam\r\n", b"MAIL FROM:<cam@site>\r\n", b"RCPT TO:<ops@site>\r\n", b"DATA\r\n",
                     b"Subject: via v2\r\n\r\nbody\r\n.\r\n"):
            s.sendall(line)
            self.assertRegex(read_reply(s), rb"^(250|354)")
        s.close()
        self.assertTrue(self.srv.wait_log(r"seen ip=192\.0\.2\.8 port=40000 proxied=true proxy=127\.0\.0\.1 "
                                          r"local=198\.51\.100\.3:2525 authority=mx\.site\.example proxy_tls=true"))
        self.assertTrue(self.srv.wait_log(r"mail ip=192\.0\.2\.8 port=40000 proxy=127\.0\.0\.1 subject=via v2"))
        # the trace header names the client, not the proxy
        self.assertTrue(self.srv.wait_log(r"message \S+ from=<cam@site>"))

    def test_v2_ipv6(self):
        body = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        body += struct.pack("!HH", 5555, 25)
        s = self.session(V2 + b"\x21\x21" + struct.pack("!H", len(body)) + body)
        self.assertTrue(read_reply(s).startswith(b"220 "))
        s.close()
        self.assertTrue(self.srv.wait_log(r"connect from \[2001:db8::7\]:5555 to \[2001:db8::1\]:25 via"))

    def test_implicit_tls_right_after_the_header(self):
        """The ClientHello comes in the same segment as the header: not a
        byte of it may be taken with the header."""
        raw = socket.create_connection(("127.0.0.1", self.srv.tls_port), timeout=5)
        raw.sendall(b"PROXY TCP4 192.0.2.9 198.51.100.4 41000 465\r\n")
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        tls = ctx.wrap_socket(raw)
        self.assertTrue(read_reply(tls).startswith(b"220 "))
        tls.sendall(b"QUIT\r\n")
        tls.close()
        self.assertTrue(self.srv.wait_log(r"connect from 192\.0\.2\.9:41000 to 198\.51\.100\.4:465 via \S+ "
                                          r"\(PROXY v1\) \(TLS\)"))
        self.assertTrue(self.srv.wait_log(r"seen ip=192\.0\.2\.9 port=41000"))

    def test_the_proxys_own_connection_asks_no_hook_and_sends_no_mail(self):
        for header in (V2 + b"\x20\x00\x00\x00", b"PROXY UNKNOWN\r\n"):
            before = self.srv.count_log(r"seen ip=")
            s = self.session(header)
            self.assertTrue(read_reply(s).startswith(b"220 "))
            s.sendall(b"EHLO haproxy\r\n")
            self.assertTrue(read_reply(s).startswith(b"250"))
            s.sendall(b"MAIL FROM:<x@y>\r\n")
            self.assertTrue(read_reply(s).startswith(b"550 5.7.1 Not a client"))
            s.sendall(b"QUIT\r\n")
            read_reply(s)
            s.close()
            time.sleep(0.2)
            self.assertEqual(self.srv.count_log(r"seen ip="), before, "no hook for a health check")
        self.assertTrue(self.srv.wait_log(r"debug \[\w+\] connect from 127\.0\.0\.1:\d+ .* health check"))

    def test_bad_headers_are_closed_with_a_line(self):
        for data, why in ((b"EHLO no.header\r\n", "no PROXY header"),
                          (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "without its four fields"),
                          (V2 + b"\x22\x11\x00\x00", "command other than LOCAL or PROXY"),
                          (b"PROXY " + b"x" * 120, "longer than 107 bytes")):
            s = self.session(data)
            self.assertTrue(closed(s), data)
            s.close()
            self.assertTrue(self.srv.wait_log(r"warn \[\w+\] closing the connection from 127\.0\.0\.1:\d+: "
                                              r"bad PROXY header: .*" + re.escape(why)), why)

    def test_no_header_in_time(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        s.sendall(b"PROX")
        t = time.monotonic()
        self.assertTrue(closed(s))
        self.assertLess(time.monotonic() - t, 4)
        self.assertTrue(self.srv.wait_log(r"no PROXY header within --timeout"))


class Refusals(unittest.TestCase):
    def test_a_source_not_in_proxy_from_is_refused(self):
        with Server("--proxy-protocol", "*", "--proxy-from", "10.0.0.0/8, 2001:db8::/32", script()) as srv:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"PROXY TCP4 192.0.2.7 198.51.100.2 56324 25\r\n")
            self.assertTrue(closed(s))
            self.assertTrue(srv.wait_log(r"refused 127\.0\.0\.1:\d+ on 127\.0\.0\.1:\d+: not a proxy allowed "
                                         r"to send a PROXY header \(--proxy-from\)"))
            self.assertEqual(srv.count_log(r"seen ip="), 0)

    def test_only_the_named_listener_takes_headers(self):
        port = free_port()
        with Server("--listen", "127.0.0.1:%d" % port, "--proxy-protocol", "127.0.0.1:%d" % port,
                    script()) as srv:
            self.assertTrue(srv.wait_log(r"listening on 127\.0\.0\.1:%d \(PROXY protocol\)" % port))
            plain = [p for p in map(int, re.findall(r"listening on 127\.0\.0\.1:(\d+)\n", srv.log()))]
            with smtplib.SMTP("127.0.0.1", plain[0], timeout=5) as c:
                self.assertEqual(c.noop()[0], 250)
            self.assertTrue(srv.wait_log(r"seen ip=127\.0\.0\.1 port=\d+ proxied=false proxy=nil"))

    def test_option_errors(self):
        from harness import BINARY
        for args, msg in ((["--proxy-protocol", "127.0.0.1:1"], "--proxy-protocol 127.0.0.1:1: no such listener"),
                          (["--proxy-from", "10.0.0.0/33"], "the prefix length must be 0 to 32"),
                          (["--proxy-from", "example.com"], "is not an IPv4 or IPv6 address")):
            p = subprocess.run([BINARY, "--check", *args, script()], capture_output=True, text=True, timeout=10)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(msg, p.stderr, args)


HAPROXY_CFG = """
global
    log stderr format raw local0 info
    stats socket {stats} mode 600 level admin
defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend v1
    bind 127.0.0.1:{fe1}
    default_backend pool_v1
frontend v2
    bind 127.0.0.1:{fe2}
    default_backend pool_v2
backend pool_v1
    balance roundrobin
    option smtpchk EHLO haproxy.test
    server a 127.0.0.1:{a} send-proxy check check-send-proxy inter 200ms
    server b 127.0.0.1:{b} send-proxy check check-send-proxy inter 200ms
backend pool_v2
    balance roundrobin
    option smtpchk EHLO haproxy.test
    server a 127.0.0.1:{a} send-proxy-v2 check check-send-proxy inter 200ms
    server b 127.0.0.1:{b} send-proxy-v2 check check-send-proxy inter 200ms
"""


@unittest.skipUnless(shutil.which("haproxy"), "haproxy not installed")
class BehindHAProxy(unittest.TestCase):
    """Debian's HAProxy in mode tcp, send-proxy and send-proxy-v2, in
    front of two instances, with smtpchk health checks."""

    def setUp(self):
        self.ports = {"a": free_port(), "b": free_port(), "fe1": free_port(), "fe2": free_port()}
        self.servers = {}
        for name in ("a", "b"):
            srv = Server("--proxy-protocol", "*", "--id", name, script(),
                         listen="127.0.0.1:%d" % self.ports[name], log_level="info")
            self.addCleanup(srv.stop)
            self.servers[name] = srv
        d = tempfile.mkdtemp(prefix="haproxy-", dir=os.path.dirname(tmp_path("x")))
        self.stats = os.path.join(d, "stats.sock")
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CFG.format(stats=self.stats, **self.ports))
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        self.addCleanup(self.stop_haproxy)
        self.wait_up(4)

    def stop_haproxy(self):
        self.haproxy.terminate()
        try:
            self.haproxy.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.haproxy.kill()

    def status(self):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.stats)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        rows = [r.split(",") for r in data.decode().splitlines() if r and not r.startswith("#")]
        return {(r[0], r[1]): r[17] for r in rows if r[1] in ("a", "b")}

    def wait_up(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = self.status()
                if sum(v == "UP" for v in st.values()) == n:
                    return st
            except OSError:
                pass
            time.sleep(0.1)
        self.fail("HAProxy's servers not UP: %r" % (self.status(),))

    def seen(self, pattern, timeout=5):
        """The pattern in either instance's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(srv.count_log(pattern) for srv in self.servers.values()):
                return True
            time.sleep(0.02)
        return False

    def test_balanced_with_the_clients_address_and_quiet_health_checks(self):
        for fe, version in (("fe1", "v1"), ("fe2", "v2")):
            for i in range(4):
                with smtplib.SMTP("127.0.0.1", self.ports[fe], timeout=10) as c:
                    port = c.sock.getsockname()[1]
                    c.sendmail("cam@site.example", ["ops@site.example"],
                               "Subject: %s-%d\r\n\r\nvia HAProxy\r\n" % (version, i))
                # the hook saw this client's own port, and the frontend it
                # connected to, through the proxy
                self.assertTrue(self.seen(r"seen ip=127\.0\.0\.1 port=%d proxied=true proxy=127\.0\.0\.1 "
                                          r"local=127\.0\.0\.1:%d " % (port, self.ports[fe])), (fe, i))
        for name, srv in self.servers.items():
            # roundrobin: each instance had half of each frontend's mail
            for version in ("v1", "v2"):
                self.assertTrue(srv.wait_log(r"mail ip=127\.0\.0\.1 port=\d+ proxy=127\.0\.0\.1 subject=%s-" % version,
                                             count=2), (name, version))
        # the health checks ran all along (servers UP), and left no line at
        # info or above, no warning, and no hook call
        time.sleep(1)
        self.assertEqual(set(self.wait_up(4).values()), {"UP"})
        for name, srv in self.servers.items():
            log = srv.log()
            self.assertEqual(len(re.findall(r"seen ip=", log)), len(re.findall(r"mail ip=", log)), name)
            self.assertNotRegex(log.replace("warn running as root", ""), r"(warn|error) ", name)
            self.assertNotRegex(log, r"haproxy\.test", name)


if __name__ == "__main__":
    unittest.main()


def connect_from(port, source):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


class PerClientLimits(unittest.TestCase):
    """--max-clients-per-ip and --connect-rate: one client cannot take the
    slots of all, and behind a proxy the client is the header's."""

    def test_one_client_fills_its_share_and_another_still_gets_its_greeting(self):
        with Server("--client-limit-exceptions", "", "--max-clients", "50", "--max-clients-per-ip", "10",
                    "--connect-rate", "0", script(), log_level="info") as srv:
            held, refused = [], 0
            for _ in range(50):
                s = connect_from(srv.port, "127.0.0.1")
                first = read_reply(s)
                if first.startswith(b"220 "):
                    held.append(s)
                else:
                    self.assertTrue(first.startswith(b"421 4.7.0 "), first)
                    self.assertTrue(closed(s))
                    refused += 1
                    s.close()
            self.assertEqual((len(held), refused), (10, 40))
            t = time.monotonic()
            other = connect_from(srv.port, "127.0.0.2")
            self.assertTrue(read_reply(other).startswith(b"220 "))
            self.assertLess(time.monotonic() - t, 1.0)
            other.close()
            # the log is read as it comes: wait for the 40th line, then check there are no more
            refusal = r"refused 127\.0\.0\.1:\d+: 10 connections open from this client \(--max-clients-per-ip\)"
            self.assertTrue(srv.wait_log(refusal, count=40))
            self.assertEqual(srv.count_log(refusal), 40)
            # a connection closed frees its place
            held.pop().close()
            for _ in range(50):
                s = connect_from(srv.port, "127.0.0.1")
                if read_reply(s).startswith(b"220 "):
                    break
                s.close()
                time.sleep(0.02)
            else:
                self.fail("no place freed")
            for s in held + [s]:
                s.close()

    def test_connect_rate(self):
        with Server("--client-limit-exceptions", "", "--connect-rate", "5", script(), log_level="info") as srv:
            replies = []
            for _ in range(8):
                s = connect_from(srv.port, "127.0.0.3")
                replies.append(read_reply(s)[:3])
                s.close()
            self.assertEqual(replies, [b"220"] * 5 + [b"421"] * 3)
            s = connect_from(srv.port, "127.0.0.4")
            self.assertTrue(read_reply(s).startswith(b"220 "))
            s.close()
            self.assertTrue(srv.wait_log(r"refused 127\.0\.0\.3:\d+: over 5 connections a minute from this client"))

    def test_loopback_is_an_exception_by_default(self):
        with Server("--max-clients-per-ip", "2", script(), log_level="info") as srv:
            socks = [connect_from(srv.port, "127.0.0.1") for _ in range(5)]
            self.assertTrue(all(read_reply(s).startswith(b"220 ") for s in socks))
            for s in socks:
                s.close()

    def test_behind_a_proxy_the_client_is_the_headers(self):
        with Server("--proxy-protocol", "*", "--client-limit-exceptions", "", "--max-clients-per-ip", "2",
                    "--connect-rate", "0", script(), log_level="info") as srv:
            socks = []
            for src in ("192.0.2.7", "192.0.2.7", "192.0.2.7", "192.0.2.8"):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                s.sendall(("PROXY TCP4 %s 198.51.100.2 %d 25\r\n" % (src, 40000 + len(socks))).encode())
                socks.append((src, s, read_reply(s)[:3]))
            self.assertEqual([r for _, _, r in socks], [b"220", b"220", b"421", b"220"])
            self.assertTrue(srv.wait_log(r"refused 192\.0\.2\.7:40002: 2 connections open from this client"))
            for _, s, _ in socks:
                s.close()

    def test_a_client_closed_for_errors_again_and_again_waits_for_its_greeting(self):
        with Server("--client-limit-exceptions", "", "--max-errors", "2", "--max-bad-clients", "2", script(),
                    log_level="info") as srv:
            for _ in range(2):
                s = connect_from(srv.port, "127.0.0.5")
                self.assertTrue(read_reply(s).startswith(b"220 "))
                s.sendall(b"BOGUS\r\nBOGUS\r\n")
                self.assertIn(b"421 4.7.0", read_reply(s) + read_reply(s))
                self.assertTrue(closed(s))
                s.close()
            t = time.monotonic()
            other = connect_from(srv.port, "127.0.0.6")
            self.assertTrue(read_reply(other).startswith(b"220 "))
            self.assertLess(time.monotonic() - t, 1.0)
            other.close()
            s = connect_from(srv.port, "127.0.0.5")
            s.settimeout(10)
            t = time.monotonic()
            s.sendall(b"EHLO early\r\n")            # read only after the wait
            data = read_reply(s)
            self.assertTrue(data.startswith(b"220 "), data)
            self.assertGreater(time.monotonic() - t, 4.5)
            while b"250 " not in data:
                data += read_reply(s)
            s.close()
            self.assertTrue(srv.wait_log(r"127\.0\.0\.5:\d+ waits 5s before its greeting: 2 sessions closed for "
                                         r"errors in 10 minutes \(--max-bad-clients\)"))
