"""Command line: --help, --version, bad flags and values, listeners."""
import json
import smtplib
import socket
import subprocess
import unittest

from harness import BINARY, Server, tmp_path


def run(*args):
    p = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout, p.stderr


class Cli(unittest.TestCase):
    def test_help(self):
        rc, out, _ = run("--help")
        self.assertEqual(rc, 0)
        for flag in ("--listen", "--hostname", "--max-clients", "--max-size", "--max-recipients",
                     "--max-messages", "--timeout", "--session-timeout", "--max-errors",
                     "--grace", "--hook-timeout", "--lua-memory", "--log-level", "--check",
                     "--version", "SCRIPT.lua", "--replay", "--from", "--to"):
            self.assertIn(flag, out)

    def test_version(self):
        rc, out, _ = run("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^luasmtpd \d+\.\d+\.\d+")

    def test_bad_usage_exits_2(self):
        for args, msg in ((["--no-such-flag"], "unknown option"),
                          (["--max-size", "abc"], "not a size"),
                          (["--max-size", "1"], "out of range"),
                          (["--max-clients", "0"], "out of range"),
                          (["--timeout", "-5"], "number of seconds"),
                          (["--listen", "127.0.0.1"], "ADDRESS:PORT"),
                          (["--listen", "::1:25"], "brackets"),
                          (["--listen", "example.com:25"], "numeric"),
                          (["--listen", "127.0.0.1:70000"], "port"),
                          (["--hostname", "has space"], "printable"),
                          (["--log-level", "loud"], "debug"),
                          (["--timeout"], "needs a value"),
                          (["missing.lua"], "cannot open missing.lua"),
                          (["a.lua", "b.lua"], "one script only"),
                          (["--check"], "--check needs a SCRIPT"),
                          (["-x"], "unknown option -x"),
                          (["-check", "a.lua"], "unknown option -check")):
            rc, out, err = run(*args)
            self.assertEqual(rc, 2, args)
            self.assertIn(msg, err, args)

    def test_values_with_equals_and_suffix(self):
        with Server("--max-size=2M", "--hostname=mx.test") as srv:
            c = srv.client()
            self.assertIn("mx.test", c.greeting[1][0])
            code, lines = c.cmd("EHLO x")
            self.assertIn("SIZE 2097152", lines)

    def test_port_in_use_fails(self):
        with Server() as srv:
            rc, _, err = run("--listen", "127.0.0.1:%d" % srv.port)
            self.assertEqual(rc, 1)
            self.assertIn("Address already in use", err)

    def test_two_listeners_and_ipv6(self):
        try:
            s = socket.socket(socket.AF_INET6)
            s.bind(("::1", 0))
            s.close()
        except OSError:
            self.skipTest("no IPv6 loopback")
        with Server("--listen", "[::1]:0") as srv:
            m = srv.wait_log(r"listening on \[::1\]:(\d+)")
            self.assertTrue(m)
            c6 = socket.create_connection(("::1", int(m.group(1))), timeout=5)
            self.assertTrue(c6.recv(100).startswith(b"220 "))
            c6.close()
            # an IPv6 peer is written as in a URL: [::1]:41672
            self.assertTrue(srv.wait_log(r"connect from \[::1\]:\d+ to \[::1\]:%s" % m.group(1)), srv.log())
            self.assertTrue(srv.wait_log(r"disconnect from \[::1\]:\d+"), srv.log())
            c4 = srv.client()
            self.assertEqual(c4.greeting[0], 220)


class JsonLog(unittest.TestCase):
    def test_every_line_is_a_json_object(self):
        path = tmp_path("jsonlog.lua")
        with open(path, "w") as f:
            f.write('local l = require "luasmtpd"\n'
                    'function on_mail(m) l.log("subject", m.subject, "\\xff", {q = "\\"x\\""}) end\n')
        with Server(path, "--log-format", "json", "--workers", "1") as srv:
            with smtplib.SMTP(srv.host, srv.port) as c:
                c.sendmail("a@b.example", ["c@d.example"],
                           "Subject: =?utf-8?q?K=C3=BChlraum_=22A=22?=\r\n\r\nx\r\n".encode())
            self.assertTrue(srv.wait_log(r'"msg":"script: subject'), srv.log())
            srv.stop()
        events = [json.loads(line) for line in srv.log().splitlines()]
        self.assertTrue(all({"time", "level", "msg"} <= set(e) for e in events), events)
        script = [e for e in events if e["msg"].startswith("script: subject")][0]
        self.assertEqual(script["level"], "info")
        self.assertRegex(script["session"], r"^[0-9A-F]{16}$")
        self.assertEqual(script["msg"], 'script: subject Kühlraum "A" \ufffd {q = ""x""}')
        self.assertRegex(script["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
        accepted = [e for e in events if e["msg"].startswith("message ")]
        self.assertEqual(len(accepted), 1)
