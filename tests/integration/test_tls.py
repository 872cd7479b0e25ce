"""TLS (STARTTLS, implicit TLS) and AUTH (PLAIN, LOGIN) with real clients.

A throwaway CA, server certificate and client certificate are made with
`openssl req` for the module.
"""
import base64
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

from harness import BINARY, Server, ServerTest, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "scripts", "tls_auth.lua")
PKI = {}


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def setUpModule():
    d = tempfile.mkdtemp(prefix="luasmtpd-tls-")
    PKI["dir"] = d
    p = lambda name: os.path.join(d, name)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    # the server's self-signed certificate, as a user would make one
    openssl("req", "-x509", *ec, "-keyout", p("key.pem"), "-out", p("cert.pem"), "-days", "2",
            "-subj", "/CN=localhost")
    # a CA and a client certificate it signed
    openssl("req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2",
            "-subj", "/CN=Test CA")
    openssl("req", *ec, "-keyout", p("client.key"), "-out", p("client.csr"), "-subj",
            "/CN=cam1/O=Site")
    openssl("x509", "-req", "-in", p("client.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"),
            "-CAcreateserial", "-out", p("client.pem"), "-days", "2")
    # a key that belongs to no certificate here
    openssl("req", "-x509", *ec, "-keyout", p("other.key"), "-out", p("other.pem"), "-days", "2",
            "-subj", "/CN=other")
    with open(p("garbage.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    with open(p("both.pem"), "w") as f:
        f.write(open(p("cert.pem")).read() + open(p("key.pem")).read())


def tearDownModule():
    shutil.rmtree(PKI["dir"], ignore_errors=True)


def pki(name):
    return os.path.join(PKI["dir"], name)


def client_ctx(cert=False):
    ctx = ssl.create_default_context(cafile=pki("cert.pem"))
    ctx.check_hostname = False   # the certificate names localhost; we dial 127.0.0.1
    if cert:
        ctx.load_cert_chain(pki("client.pem"), pki("client.key"))
    return ctx


def b64(text):
    return base64.b64encode(text.encode()).decode()


def have(tool):
    return shutil.which(tool) is not None


class TlsTest(ServerTest):
    EXTRA = ()
    SCRIPTED = True

    def setUp(self):
        args = ["--tls-cert", pki("cert.pem"), "--tls-key", pki("key.pem"),
                "--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"]
        if self.SCRIPTED:
            args.append(SCRIPT)
        self.srv = Server(*args, *self.EXTRA, listen=None)

    def starttls(self, c):
        self.assertReply(c.cmd("STARTTLS"), 220, "Ready to start TLS")
        c.starttls(client_ctx())


class StartTls(TlsTest):
    def test_smtplib_starttls_transaction(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.ehlo("cam1")
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"), "AUTH only over TLS")
            s.starttls(context=client_ctx())
            s.ehlo("cam1")
            self.assertFalse(s.has_extn("starttls"), "not offered again after TLS")
            self.assertTrue(s.has_extn("auth"))
            self.assertEqual(s.esmtp_features["auth"].split(), ["PLAIN", "LOGIN"])
            self.assertEqual(s.sendmail("cam1@site.example", ["ops@hub.example"],
                                        b"Subject: over TLS\r\n\r\nhello\r\n"), {})
        m = self.srv.wait_log(r"mail tls=true version=(TLSv1\.[23]) cipher=(\S+) user=nil client=nil")
        self.assertTrue(m, self.srv.log())
        self.assertTrue(self.srv.wait_log(r"TLS established: TLSv1\.[23] "))

    def test_state_reset_after_starttls(self):
        c = self.session()
        self.assertReply(c.cmd("HELP"), 214, "HELP STARTTLS")
        self.assertReply(c.cmd("MAIL FROM:<a@b.example>"), 250)
        self.assertReply(c.cmd("RCPT TO:<c@d.example>"), 250)
        self.starttls(c)
        # RFC 3207 4.2: all that was said before is forgotten, EHLO again
        self.assertReply(c.cmd("MAIL FROM:<a@b.example>"), 503, "HELO or EHLO")
        self.assertReply(c.cmd("RCPT TO:<c@d.example>"), 503)
        code, lines = c.cmd("EHLO again")
        self.assertEqual(code, 250)
        self.assertNotIn("STARTTLS", lines)
        self.assertReply(c.cmd("HELP"), 214, "HELP AUTH")
        self.assertReply(c.cmd("STARTTLS"), 503, "TLS already active")
        self.assertEqual(self.transaction(c)[0], 250)
        self.assertReply(c.cmd("QUIT"), 221)

    def test_injection_after_starttls_is_discarded(self):
        c = self.session()
        # CVE-2011-0411: commands sent in plaintext with STARTTLS must not
        # run inside the TLS session
        c.send("STARTTLS\r\nNOOP\r\nMAIL FROM:<evil@x.example>\r\n")
        self.assertReply(c.reply(), 220)
        c.starttls(client_ctx())
        code, lines = c.cmd("EHLO after")
        self.assertEqual(code, 250, lines)
        self.assertReply(c.cmd("QUIT"), 221)   # the next reply is QUIT's: no NOOP, no MAIL
        self.assertTrue(self.srv.wait_log(r"discarded \d+ byte\(s\) sent after STARTTLS"))
        self.assertEqual(self.srv.count_log(r"evil@x"), 0)

    def test_starttls_syntax(self):
        c = self.session()
        self.assertReply(c.cmd("STARTTLS now"), 501)
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO x")[0], 250)

    def test_curl_ssl_reqd(self):
        if not have("curl"):
            self.skipTest("curl not installed")
        mail = b"From: plc@site.example\r\nSubject: curl tls\r\n\r\ntank 2 high\r\n"
        p = subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", pki("cert.pem"),
                            "smtp://localhost:%d" % self.srv.port, "--mail-from", "plc@site.example",
                            "--mail-rcpt", "ops@hub.example", "--user", "cam1:s3cret",
                            "--upload-file", "-"], input=mail, capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(self.srv.wait_log(r"mail tls=true .* user=cam1 "), self.srv.log())

    def test_curl_smtps(self):
        if not have("curl"):
            self.skipTest("curl not installed")
        p = subprocess.run(["curl", "-sS", "--cacert", pki("cert.pem"),
                            "smtps://localhost:%d" % self.srv.tls_port, "--mail-from", "a@site.example",
                            "--mail-rcpt", "b@hub.example", "--upload-file", "-"],
                           input=b"Subject: smtps\r\n\r\nx\r\n", capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(self.srv.wait_log(r"mail tls=true .* user=nil "))

    def test_swaks_tls_and_tlsc(self):
        if not have("swaks"):
            self.skipTest("swaks not installed")
        for mode, port in (("--tls", self.srv.port), ("--tlsc", self.srv.tls_port)):
            p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, mode,
                                "--from", "nas@site.example", "--to", "ops@hub.example",
                                "--auth", "LOGIN", "--auth-user", "cam1", "--auth-password", "s3cret"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, mode + "\n" + p.stdout + p.stderr)
            self.assertIn("235 2.7.0", p.stdout)
            self.assertIn("250 2.0.0 Ok: queued as", p.stdout)
        self.assertTrue(self.srv.wait_log(r"mail tls=true .* user=cam1 ", count=2))

    def test_openssl_s_client_starttls(self):
        p = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                            "127.0.0.1:%d" % self.srv.port, "-CAfile", pki("cert.pem"), "-quiet",
                            "-verify_return_error"],
                           input=b"EHLO s-client\r\nQUIT\r\n", capture_output=True, timeout=30)
        out = p.stdout.decode()
        self.assertIn("250-AUTH PLAIN LOGIN", out)
        self.assertIn("221 2.0.0", out)


class ImplicitTls(TlsTest):
    def test_smtp_ssl_transaction(self):
        with smtplib.SMTP_SSL("127.0.0.1", self.srv.tls_port, timeout=10, context=client_ctx()) as s:
            s.ehlo("cam1")
            self.assertFalse(s.has_extn("starttls"))
            s.login("cam1", "s3cret")
            self.assertEqual(s.sendmail("cam1@site.example", ["ops@hub.example"], b"x\r\n"), {})
        self.assertTrue(self.srv.wait_log(r"mail tls=true version=TLSv1\.[23] .* user=cam1 "))
        self.assertTrue(self.srv.wait_log(r"connect from .* \(TLS\)"))

    def test_tls_1_1_refused(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            self.skipTest("this Python cannot speak TLS 1.1")
        with self.assertRaises((ssl.SSLError, ConnectionError, EOFError)):
            c = self.srv.client(tls=ctx)
            c.reply()
        self.assertTrue(self.srv.wait_log(r"TLS handshake failed"), self.srv.log())
        with smtplib.SMTP_SSL("127.0.0.1", self.srv.tls_port, timeout=10, context=client_ctx()) as s:
            self.assertEqual(s.noop()[0], 250)

    def test_client_gone_mid_handshake(self):
        # one client sends half a ClientHello and leaves, one sends nothing
        # and stays: both cost only their own session
        half = socket.create_connection(("127.0.0.1", self.srv.tls_port))
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        half.close()
        idle = socket.create_connection(("127.0.0.1", self.srv.tls_port))
        garbage = socket.create_connection(("127.0.0.1", self.srv.tls_port))
        garbage.sendall(b"EHLO plaintext\r\n")
        with smtplib.SMTP_SSL("127.0.0.1", self.srv.tls_port, timeout=10, context=client_ctx()) as s:
            self.assertEqual(s.noop()[0], 250)
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            self.assertEqual(s.noop()[0], 250)
        self.assertTrue(self.srv.wait_log(r"TLS handshake failed", count=2), self.srv.log())
        garbage.close()
        idle.close()

    def test_client_certificate(self):
        c = self.srv.client(tls=client_ctx(cert=True))
        self.assertEqual(c.greeting[0], 220)
        self.assertEqual(c.cmd("EHLO cam1")[0], 250)
        self.assertReply(c.cmd("MAIL FROM:<cam1@site.example>"), 250)
        # no --tls-client-ca: the subject is shown (RFC 2253: the last RDN
        # first), never as verified
        self.assertTrue(self.srv.wait_log(r"client=O=Site,CN=cam1 verified=false"), self.srv.log())
        c.close()


class Ciphers(TlsTest):
    EXTRA = ("--tls-ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384")

    def tls12(self, cipher):
        ctx = client_ctx()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher)
        return ctx

    def test_only_the_listed_ciphers_for_tls_1_2(self):
        with self.assertRaises((ssl.SSLError, ConnectionError, EOFError)):
            c = self.srv.client(tls=self.tls12("ECDHE-ECDSA-AES128-GCM-SHA256"))
            c.reply()
        self.assertTrue(self.srv.wait_log(r"TLS handshake failed"), self.srv.log())
        with smtplib.SMTP_SSL("127.0.0.1", self.srv.tls_port, timeout=10,
                              context=self.tls12("ECDHE-ECDSA-AES128-GCM-SHA256:"
                                                 "ECDHE-ECDSA-AES256-GCM-SHA384")) as s:
            self.assertEqual(s.sock.cipher()[0], "ECDHE-ECDSA-AES256-GCM-SHA384")
            self.assertEqual(s.noop()[0], 250)
        # TLS 1.3 keeps OpenSSL's own suites (docs/config.md)
        with smtplib.SMTP_SSL("127.0.0.1", self.srv.tls_port, timeout=10, context=client_ctx()) as s:
            self.assertEqual(s.sock.version(), "TLSv1.3")


def s_client(port, version):
    """openssl s_client speaking only TLS `version` (its own security level
    lowered so that it may), QUIT sent: the replies, or "" when refused."""
    p = subprocess.run(["openssl", "s_client", "-" + version, "-cipher", "DEFAULT@SECLEVEL=0", "-quiet",
                        "-connect", "127.0.0.1:%d" % port], input=b"QUIT\r\n", capture_output=True, timeout=20)
    return p.stdout.decode(errors="replace")


class LegacyTlsRefused(TlsTest):
    SCRIPTED = False

    def test_tls_1_0_and_1_1_refused_by_default(self):
        for version in ("tls1", "tls1_1"):
            self.assertNotIn("220 ", s_client(self.srv.tls_port, version), version)
        self.assertIn("220 ", s_client(self.srv.tls_port, "tls1_2"))
        self.assertTrue(self.srv.wait_log(r"TLS handshake failed: .*(unsupported protocol|version)"), self.srv.log())


class LegacyTlsAllowed(TlsTest):
    SCRIPTED = False
    EXTRA = ("--tls-min-version", "1.0")

    def test_old_devices_with_tls_1_0_and_1_1(self):
        for version, name in (("tls1", "TLSv1"), ("tls1_1", "TLSv1.1"), ("tls1_2", "TLSv1.2")):
            out = s_client(self.srv.tls_port, version)
            self.assertIn("220 ", out, version)
            self.assertIn("221 ", out, version)
            self.assertTrue(self.srv.wait_log(r"TLS established: %s " % re.escape(name)), version)
        # a modern client is not lowered to the legacy level: TLS 1.3 still
        with smtplib.SMTP_SSL("127.0.0.1", self.srv.tls_port, timeout=10, context=client_ctx()) as s:
            self.assertEqual(s.sock.version(), "TLSv1.3")


SNI_SCRIPT = """
local l = require "luasmtpd"
function on_helo(name, session)
  l.log("sni=" .. tostring(session.tls_sni) .. " tls=" .. tostring(session.tls_version))
end
"""


class Sni(unittest.TestCase):
    """Repeated --tls-cert: the certificate is the one whose names hold the
    client's SNI name, the first when none does (or none is sent)."""

    @classmethod
    def setUpClass(cls):
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
        for name, san in (("a", "DNS:mx.a.test"), ("b", "DNS:mx.b.test,DNS:*.b.test")):
            openssl("req", "-x509", *ec, "-keyout", pki(name + ".key"), "-out", pki(name + ".pem"),
                    "-subj", "/CN=" + name, "-addext", "subjectAltName=" + san)
        cls.script = pki("sni.lua")
        with open(cls.script, "w") as f:
            f.write(SNI_SCRIPT)

    def der(self, name):
        with open(pki(name + ".pem")) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    def check(self, srv, cases, raw=None):
        """Each (SNI name, certificate expected) over implicit TLS; raw: a
        connection made before."""
        for sni, cert in cases:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with raw or socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10) as sock:
                with ctx.wrap_socket(sock, server_hostname=sni) as t:
                    self.assertEqual(t.getpeercert(binary_form=True), self.der(cert), sni)
                    t.recv(100)
                    t.sendall(b"EHLO x\r\n")
                    t.recv(1000)
                    t.sendall(b"QUIT\r\n")
            self.assertTrue(srv.wait_log(r"sni=%s tls=TLSv1\.3" % re.escape(sni or "nil")), sni)

    def test_the_certificate_follows_the_name(self):
        with Server("--listen-tls", "127.0.0.1:0", "--tls-cert", pki("a.pem"), "--tls-key", pki("a.key"),
                    "--tls-cert", pki("b.pem"), "--tls-key", pki("b.key"), self.script, listen=None) as srv:
            self.check(srv, (("mx.b.test", "b"), ("cam.b.test", "b"), ("mx.a.test", "a"), ("other.test", "a"),
                             (None, "a")))

    def test_names_given_instead_of_the_certificates(self):
        # by position, as keys: b's names are the second --tls-names
        with Server("--listen-tls", "127.0.0.1:0", "--tls-cert", pki("a.pem"), "--tls-key", pki("a.key"),
                    "--tls-names", "mx.a.test", "--tls-cert", pki("b.pem"), "--tls-key", pki("b.key"),
                    "--tls-names", "*.lan,SMTP.example", self.script, listen=None) as srv:
            # b serves these names only, not those in it
            self.check(srv, (("cam.lan", "b"), ("smtp.example", "b"), ("mx.b.test", "a"), ("x.cam.lan", "a"),
                             ("lan", "a"), ("mx.a.test", "a")))

    def test_the_config_tables_form(self):
        script = pki("sni_config.lua")
        with open(script, "w") as f:
            f.write(SNI_SCRIPT + 'config = { listen_tls = "127.0.0.1:0", listen = {}, tls = {\n'
                    '  { cert = "%s", key = "%s" },\n'
                    '  { cert = "%s", key = "%s", names = { "*.lan", "mx.b.test" } } } }\n'
                    % (pki("a.pem"), pki("a.key"), pki("b.pem"), pki("b.key")))
        with Server(script, listen=None) as srv:
            self.check(srv, (("cam.lan", "b"), ("mx.b.test", "b"), ("cam.b.test", "a"), (None, "a")))

    def test_a_reload_while_a_handshake_waits(self):
        """The certificates of the start serve a handshake begun before a
        reload replaced them (they used to be freed under it)."""
        with Server("--listen-tls", "127.0.0.1:0", "--tls-cert", pki("a.pem"), "--tls-key", pki("a.key"),
                    "--tls-cert", pki("b.pem"), "--tls-key", pki("b.key"), self.script, listen=None) as srv:
            raw = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10)
            self.assertTrue(srv.wait_log(r"connect from"))
            srv.proc.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r"reload: \S+ loaded"))
            self.check(srv, (("mx.b.test", "b"),), raw=raw)
            self.check(srv, (("cam.b.test", "b"), ("mx.a.test", "a")))

    def test_config_errors(self):
        bad = (('{ "a.pem" }', "config.tls[1] must be a table"),
               ('{ { key = "a.key" } }', "config.tls[1] needs cert"),
               ('{ { cert = "a.pem", name = "x" } }', "config.tls[1]: name is not cert, key or names"),
               ('{ { cert = "a.pem", names = { "a b" } } }', "--tls-names: 'a b' is not a host name"),
               ('{ { cert = "a.pem", names = "x.lan,,y.lan" } }', "--tls-names: '' is not a host name"))
        for value, text in bad:
            script = pki("bad_tls.lua")
            with open(script, "w") as f:
                f.write("config = { tls = %s }\n" % value)
            p = subprocess.run([BINARY, "--check", script], capture_output=True, text=True, timeout=10)
            self.assertNotEqual(p.returncode, 0, value)
            self.assertIn(text, p.stderr, value)
        p = subprocess.run([BINARY, "--check", "--tls-cert", pki("a.pem"), "--tls-names", "a.lan", "--tls-names",
                            "b.lan", self.script], capture_output=True, text=True, timeout=10)
        self.assertIn("--tls-names: 2 name lists for 1 certificates (--tls-cert)", p.stderr)

    def test_keys_without_certificates(self):
        p = subprocess.run([BINARY, "--check", "--tls-cert", pki("a.pem"), "--tls-key", pki("a.key"),
                            "--tls-key", pki("b.key"), self.script], capture_output=True, text=True, timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--tls-key: 2 keys for 1 certificates (--tls-cert)", p.stderr)


class Resumption(unittest.TestCase):
    """Devices reconnect often: a session ticket from one connection
    resumes the next, on whichever worker takes it and after a reload, over
    implicit TLS and STARTTLS, TLS 1.3 and 1.2."""

    @staticmethod
    def ctx(version):
        ctx = client_ctx()
        ctx.minimum_version = ctx.maximum_version = version
        return ctx

    def connect(self, srv, ctx, session=None, starttls=False):
        """One connection; its session, and whether it was resumed."""
        sock = socket.create_connection(("127.0.0.1", srv.port if starttls else srv.tls_port), timeout=10)
        if starttls:
            sock.recv(1000)
            sock.sendall(b"EHLO x\r\n")
            while not re.search(rb"^250 ", sock.recv(1000), re.M):
                pass
            sock.sendall(b"STARTTLS\r\n")
            sock.recv(1000)
        with ctx.wrap_socket(sock, server_hostname="localhost", session=session) as t:
            if starttls:
                t.sendall(b"EHLO x\r\n")
            t.recv(1000)          # the greeting (or EHLO's reply), and TLS 1.3's tickets with it
            t.sendall(b"QUIT\r\n")
            t.recv(1000)
            return t.session, t.session_reused

    def test_on_every_worker_and_after_a_reload(self):
        with Server("--tls-cert", pki("cert.pem"), "--tls-key", pki("key.pem"), "--listen",
                    "127.0.0.1:%d" % free_port(), "--listen-tls", "127.0.0.1:%d" % free_port(), "--workers", "2",
                    listen=None, log_level="info") as srv:
            for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
                for starttls in (False, True):
                    ctx = self.ctx(version)
                    session, reused = self.connect(srv, ctx, starttls=starttls)
                    self.assertFalse(reused)
                    self.assertEqual([self.connect(srv, ctx, session, starttls)[1] for _ in range(8)], [True] * 8,
                                     (version, starttls))
            # both workers served some of them
            self.assertEqual(len(set(re.findall(r"\bw(\d) .*TLS established", srv.log()))), 2)
            ctx = self.ctx(ssl.TLSVersion.TLSv1_3)
            session, _ = self.connect(srv, ctx)
            srv.proc.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r"supervisor: the new workers are ready"))
            self.assertEqual([self.connect(srv, ctx, session)[1] for _ in range(4)], [True] * 4)


class LoadGenerator(unittest.TestCase):
    """build/tls_load, the W6 client of make bench, against the server:
    20 STARTTLS connections at a time, every reply checked; resumption
    when each of 20 devices offers its own last ticket, over STARTTLS and
    implicit TLS; idle TLS connections held, then each QUITs; all of it
    with and without --tls-keep-buffers."""
    TLS_LOAD = os.path.join(os.path.dirname(os.path.dirname(HERE)), "build", "tls_load")

    def run_load(self, port, *args, **kw):
        p = subprocess.run([self.TLS_LOAD, "-p", str(port), *args], capture_output=True, text=True, timeout=120,
                           **kw)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return dict(f.split("=") for f in p.stdout.strip().splitlines()[-1].split())

    def test_concurrent_connections_resume_and_idle(self):
        for keep in ((), ("--tls-keep-buffers",)):
            with Server("--tls-cert", pki("cert.pem"), "--tls-key", pki("key.pem"), "--listen",
                        "127.0.0.1:%d" % free_port(), "--listen-tls", "127.0.0.1:%d" % free_port(), *keep,
                        listen=None) as srv:
                r = self.run_load(srv.port, "-n", "200", "-c", "20")
                self.assertEqual((r["connections"], r["failed"], r["resumed"]), ("200", "0", "0"))
                # a device's first handshake is full, every later one resumes
                r = self.run_load(srv.port, "-n", "200", "-c", "20", "-r")
                self.assertEqual((r["connections"], r["failed"], r["resumed"]), ("200", "0", "180"), keep)
                r = self.run_load(srv.tls_port, "-n", "100", "-c", "10", "-t", "-r")
                self.assertEqual((r["failed"], r["resumed"]), ("0", "90"), keep)
                r = self.run_load(srv.port, "-i", "-c", "50", input="")
                self.assertEqual((r["connections"], r["failed"]), ("50", "0"), keep)
                self.assertTrue(srv.wait_log(r"TLS established", count=550))
                self.assertEqual(srv.count_log(r"TLS established"), 550)


class LegacyTlsOption(unittest.TestCase):
    def test_bad_version(self):
        p = subprocess.run([BINARY, "--check", "--tls-min-version", "1.4", SCRIPT], capture_output=True, text=True,
                           timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--tls-min-version: '1.4' is not 1.0, 1.1, 1.2 or 1.3", p.stderr)


class ClientCa(TlsTest):
    def setUp(self):
        self.EXTRA = ("--tls-client-ca", pki("ca.pem"))
        super().setUp()

    def test_verified_client_certificate(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.starttls(context=client_ctx(cert=True))
            s.ehlo("cam1")
            s.mail("cam1@site.example")
        self.assertTrue(self.srv.wait_log(r"client=O=Site,CN=cam1 verified=true"), self.srv.log())
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.starttls(context=client_ctx())
            s.ehlo("nocert")
            s.mail("x@site.example")
        self.assertTrue(self.srv.wait_log(r"client=nil verified=false"), self.srv.log())


class Auth(TlsTest):
    def tls_session(self):
        c = self.session()
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO client.test")[0], 250)
        return c

    def test_not_offered_before_tls(self):
        c = self.session()
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0cam1\0s3cret")), 538, "STARTTLS")
        self.assertEqual(self.srv.count_log(r"on_auth|AUTH user="), 0)

    def test_plain_and_login(self):
        for mech in ("PLAIN", "LOGIN"):
            with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
                s.starttls(context=client_ctx())
                s.ehlo("cam1")
                s.user, s.password = "cam1", "s3cret"
                method = s.auth_plain if mech == "PLAIN" else s.auth_login
                code, _ = s.auth(mech, method, initial_response_ok=mech == "PLAIN")
                self.assertEqual(code, 235, mech)
                self.assertEqual(s.sendmail("cam1@site.example", ["o@h.example"], b"x\r\n"), {})
        self.assertTrue(self.srv.wait_log(r"mail tls=true .* user=cam1 ", count=2))

    def test_login_steps_and_utf8(self):
        c = self.tls_session()
        self.assertEqual(c.cmd("AUTH LOGIN"), (334, ["VXNlcm5hbWU6"]))
        self.assertEqual(c.cmd(b64("jörg")), (334, ["UGFzc3dvcmQ6"]))
        self.assertReply(c.cmd(b64("pässword")), 235, "2.7.0")
        self.assertReply(c.cmd("MAIL FROM:<j@site.example>"), 250)
        self.assertTrue(self.srv.wait_log(r"user=jörg "))

    def test_hook_may_wait(self):
        c = self.tls_session()
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0slow\0s3cret")), 235)

    def test_hook_code_and_text(self):
        c = self.tls_session()
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0temp\0x")), 454, "Directory unavailable")

    def test_wrong_password_and_too_many_failures(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.starttls(context=client_ctx())
            s.ehlo("cam1")
            with self.assertRaises(smtplib.SMTPAuthenticationError) as e:
                s.login("cam1", "wrong")
            self.assertEqual(e.exception.smtp_code, 535)
        c = self.tls_session()
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0cam1\0no")), 535, "5.7.8")
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0cam1\0no")), 535)
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0cam1\0no")), 535)
        self.assertReply(c.reply(), 421, "Too many authentication failures")
        self.assertTrue(c.closed())

    def test_malformed(self):
        c = self.tls_session()
        self.assertReply(c.cmd("AUTH PLAIN !!!"), 501, "5.5.2")
        self.assertEqual(c.cmd("AUTH PLAIN"), (334, [""]))
        self.assertReply(c.cmd("*"), 501, "cancelled")
        self.assertReply(c.cmd("AUTH DIGEST-MD5"), 504)
        self.assertReply(c.cmd("NOOP"), 250)
        # the password never reaches the log, even at debug level
        self.assertEqual(self.srv.count_log(b64("\0cam1\0s3cret")), 0)
        c.cmd("AUTH PLAIN " + b64("\0cam1\0s3cret"))
        self.assertTrue(self.srv.wait_log(r"< AUTH PLAIN \*\*\*"))
        self.assertEqual(self.srv.count_log(b64("\0cam1\0s3cret")), 0)


class NoAuthHook(TlsTest):
    SCRIPTED = False

    def test_auth_not_available(self):
        c = self.session()
        self.starttls(c)
        code, lines = c.cmd("EHLO x")
        self.assertNotIn("AUTH PLAIN LOGIN", lines)
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0a\0b")), 502)


class RequireTls(TlsTest):
    EXTRA = ("--require-tls",)

    def test_mail_needs_starttls(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.example>"), 530, "5.7.0")
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        self.assertEqual(self.transaction(c)[0], 250)


class RequireAuth(TlsTest):
    EXTRA = ("--require-auth",)

    def test_mail_needs_auth(self):
        c = self.session()
        self.starttls(c)
        self.assertEqual(c.cmd("EHLO x")[0], 250)
        self.assertReply(c.cmd("MAIL FROM:<a@b.example>"), 530, "Authentication required")
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0cam1\0s3cret")), 235)
        self.assertEqual(self.transaction(c)[0], 250)


class InsecureAuth(ServerTest):
    ARGS = ("--allow-insecure-auth", SCRIPT)

    def test_auth_without_tls(self):
        c = self.session()
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0cam1\0s3cret")), 235)


class HandshakeTimeout(TlsTest):
    EXTRA = ("--tls-timeout", "1")

    def test_silent_client_is_closed(self):
        quiet = socket.create_connection(("127.0.0.1", self.srv.tls_port))
        quiet.settimeout(5)
        start = time.monotonic()
        self.assertEqual(quiet.recv(100), b"")
        self.assertLess(time.monotonic() - start, 4)
        self.assertTrue(self.srv.wait_log(r"TLS handshake timed out"))
        quiet.close()


class Startup(unittest.TestCase):
    def run_server(self, *args):
        p = subprocess.run([BINARY, "--listen", "127.0.0.1:0", *args], capture_output=True, text=True,
                           timeout=10, stdin=subprocess.DEVNULL)
        return p.returncode, p.stderr

    def test_bad_certificates_exit_2(self):
        cases = [
            (("--tls-cert", pki("missing.pem")),
             "--tls-cert: cannot read %s: No such file or directory\n" % pki("missing.pem")),
            (("--tls-cert", pki("cert.pem"), "--tls-key", pki("missing.key")),
             "--tls-key: cannot read %s: No such file or directory\n" % pki("missing.key")),
            (("--tls-cert", pki("garbage.pem"), "--tls-key", pki("key.pem")), "not a PEM certificate"),
            (("--tls-cert", pki("cert.pem"), "--tls-key", pki("other.key")), "does not match"),
            (("--tls-cert", pki("cert.pem")), "cannot load the private key"),
            (("--tls-cert", pki("cert.pem"), "--tls-key", pki("key.pem"), "--tls-ciphers", "NOPE"),
             "no usable cipher"),
            (("--tls-cert", pki("cert.pem"), "--tls-key", pki("key.pem"), "--tls-client-ca",
              pki("missing.pem")), "--tls-client-ca"),
            (("--tls-client-ca", pki("ca.pem")), "--tls-client-ca needs --tls-cert"),
            (("--listen-tls", "127.0.0.1:0"), "--listen-tls needs --tls-cert"),
            (("--require-tls",), "--require-tls needs --tls-cert"),
            (("--require-auth", "--allow-insecure-auth"), "defines no on_auth"),
            (("--require-auth", SCRIPT), "AUTH is offered over TLS only"),
        ]
        for args, expect in cases:
            rc, err = self.run_server(*args)
            self.assertEqual(rc, 2, "%s: %s" % (args, err))
            self.assertIn(expect, err, args)

    def test_combined_pem_file(self):
        # certificate and key in one file: --tls-key may be left out
        with Server("--tls-cert", pki("both.pem"), "--listen-tls", "127.0.0.1:0") as srv:
            with smtplib.SMTP_SSL("127.0.0.1", srv.tls_port, timeout=10, context=client_ctx()) as s:
                self.assertEqual(s.noop()[0], 250)
