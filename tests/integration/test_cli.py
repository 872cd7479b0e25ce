"""Command line: --help, --version, bad flags and values, listeners."""
import socket
import subprocess
import unittest

from harness import BINARY, Server


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
