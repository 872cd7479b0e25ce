"""Options from the seeded systems: accepted domains, the pipelining switch,
AUTH methods, VRFY/EXPN hooks, the listener's identity and the banner."""
import base64
import os
import smtplib
import subprocess
import unittest

from harness import BINARY, Server, ServerTest

HERE = os.path.dirname(os.path.abspath(__file__))
DIRECTORY = os.path.join(HERE, "scripts", "directory.lua")
TLS_AUTH = os.path.join(HERE, "scripts", "tls_auth.lua")


def b64(text):
    return base64.b64encode(text.encode()).decode()


class Domains(ServerTest):
    # config.domains in the script: site.example and cams.site.example
    ARGS = (DIRECTORY,)

    def test_other_domains_are_refused_before_on_rcpt(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            refused = s.sendmail("cam1@site.example",
                                 ["ops@site.example", "ops@CAMS.site.example", "x@elsewhere.example",
                                  "x@sub.site.example"], b"x\r\n")
        self.assertEqual(sorted(refused), ["x@elsewhere.example", "x@sub.site.example"])
        code, text = refused["x@elsewhere.example"]
        self.assertEqual(code, 550)
        self.assertIn(b"5.7.1 <x@elsewhere.example>: Relaying denied: site.example", text)
        # one log line: what, and which option refused it
        self.assertTrue(self.srv.wait_log(r"RCPT TO <x@elsewhere\.example> refused by --domain: 550 5\.7\.1 "
                                          r"<x@elsewhere\.example>: Relaying denied"), self.srv.log())

    def test_postmaster_always_accepted(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.example>"), 250)
        # on_rcpt would refuse blocked@, but postmaster is never refused
        self.assertReply(c.cmd("RCPT TO:<blocked@site.example>"), 550)
        self.assertReply(c.cmd("RCPT TO:<Postmaster>"), 250)
        self.assertReply(c.cmd("RCPT TO:<POSTMASTER@cams.site.example>"), 250)
        self.assertReply(c.cmd("RCPT TO:<postmaster@elsewhere.example>"), 550, "Relaying denied")
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"x\r\n.\r\n")
        self.assertReply(c.reply(), 250)


class DomainsWithAuth(ServerTest):
    ARGS = ("--allow-insecure-auth", "--domain", "site.example", TLS_AUTH)

    def test_relay_after_auth(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@site.example>"), 250)
        self.assertReply(c.cmd("RCPT TO:<x@elsewhere.example>"), 550, "Relaying denied")
        c.cmd("RSET")
        self.assertReply(c.cmd("AUTH PLAIN " + b64("\0cam1\0s3cret")), 235)
        self.assertReply(c.cmd("MAIL FROM:<a@site.example>"), 250)
        self.assertReply(c.cmd("RCPT TO:<x@elsewhere.example>"), 250)


class StarDomain(ServerTest):
    ARGS = ("--domain", "site.example", "--domain", "*")

    def test_star_takes_everything(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.example>"), 250)
        self.assertReply(c.cmd("RCPT TO:<x@anywhere.example>"), 250)


class AuthMethods(ServerTest):
    ARGS = ("--allow-insecure-auth", "--auth-methods", "LOGIN", TLS_AUTH)

    def test_only_login(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.ehlo()
            self.assertEqual(s.esmtp_features["auth"].split(), ["LOGIN"])
            self.assertEqual(s.docmd("AUTH PLAIN", b64("\0cam1\0s3cret"))[0], 504)
            s.login("cam1", "s3cret")   # smtplib picks LOGIN


class NoPipelining(ServerTest):
    ARGS = ("--no-pipelining",)

    def test_not_advertised_but_batches_still_answered(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.ehlo()
            self.assertFalse(s.has_extn("pipelining"))
            self.assertTrue(s.has_extn("size"))
        c = self.session()
        c.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\n"
               "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n")
        self.assertEqual([c.reply()[0] for _ in range(6)], [250, 250, 250, 354, 250, 250])


class Directory(ServerTest):
    ARGS = ("--id", "gate.1", "--banner", "Gate 1 mail intake", DIRECTORY)

    def test_vrfy_and_expn_hooks(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            self.assertEqual(s.verify("cam1"), (250, b"2.1.5 Camera 1 <cam1@site.example>"))
            self.assertEqual(s.verify("<cam1@site.example>")[0], 250)
            self.assertEqual(s.verify("nobody"), (550, b"5.1.1 User unknown"))
            self.assertEqual(s.verify("slow")[0], 252)
            code, text = s.expn("cameras")
            self.assertEqual(code, 250)
            self.assertEqual(text.split(b"\n"), [b"2.1.5 Camera 1 <cam1@site.example>",
                                                 b"2.1.5 Camera 2 <cam2@site.example>"])
            self.assertEqual(s.expn("nothing"), (550, b"5.1.1 No such list"))
            self.assertEqual(s.docmd("VRFY")[0], 501)

    def test_identity_and_banner(self):
        s = smtplib.SMTP(timeout=10)
        code, text = s.connect("127.0.0.1", self.srv.port)
        self.assertEqual(code, 220)
        self.assertTrue(text.endswith(b" Gate 1 mail intake"), text)
        s.quit()
        self.assertTrue(self.srv.wait_log(r"script: server id gate\.1"))
        self.assertTrue(self.srv.wait_log(r"ready as \S+ \(id gate\.1\)"))

    def test_check_shows_description(self):
        p = subprocess.run([BINARY, "--id", "gate.1", "--check", DIRECTORY], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("on_vrfy on_expn", p.stdout)
        self.assertIn("id: gate.1; Gate 1 camera inbox", p.stdout)


class Defaults(ServerTest):
    def test_without_hooks(self):
        c = self.session()
        self.assertReply(c.cmd("VRFY cam1"), 252)
        self.assertReply(c.cmd("EXPN cameras"), 502)
        self.assertIn("ESMTP luasmtpd", c.greeting[1][0])
        code, lines = c.cmd("EHLO again")
        self.assertIn("PIPELINING", lines)


class BadValues(unittest.TestCase):
    def test_exit_2(self):
        for args, expect in ((("--domain", "bad domain"), "not a domain name"),
                             (("--domain", "a..b"), "not a domain name"),
                             (("--auth-methods", "CRAM-MD5"), "is not PLAIN or LOGIN"),
                             (("--auth-methods", ""), "name PLAIN, LOGIN or both"),
                             (("--no-max-size",), "unknown option --no-max-size"),
                             (("--banner", "x" * 201), "--banner: must be")):
            p = subprocess.run([BINARY, "--listen", "127.0.0.1:0", *args], capture_output=True,
                               text=True, timeout=10, stdin=subprocess.DEVNULL)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(expect, p.stderr, args)
