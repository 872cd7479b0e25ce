"""--workers: a supervisor and worker processes sharing the port."""
import os
import re
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import unittest

from harness import BINARY, Client, Server, free_port

SCRIPT_REJECT = """
function on_rcpt(rcpt) if rcpt:find("^blocked@") then return 550, "blocked here" end end
"""
SCRIPT_ACCEPT = """
function on_rcpt(rcpt) return true end
"""


def children(pid):
    """The pids of pid's children."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    with open("/proc/%d/stat" % pid) as f:
        return f.read().split(") ")[1][0] != "Z"


def send(port, rcpt="b@example.com"):
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.sendmail("a@example.com", [rcpt], b"Subject: w\r\n\r\nhello\r\n")


class Workers(unittest.TestCase):
    def start(self, *args, n=2):
        self.port = free_port()
        srv = Server("--workers", str(n), *args, listen="127.0.0.1:%d" % self.port)
        self.addCleanup(srv.stop)
        self.assertTrue(srv.wait_log(r"supervisor: %d workers ready" % n, timeout=10), srv.log())
        return srv

    def assertClean(self, srv):
        log = srv.log()
        self.assertNotIn("ERROR: AddressSanitizer", log)
        self.assertNotIn("runtime error:", log)
        self.assertNotIn("ERROR: LeakSanitizer", log)

    def test_connections_are_spread_and_ids_unique(self):
        srv = self.start()
        self.assertEqual(len(children(srv.proc.pid)), 2)
        for _ in range(40):
            send(self.port)
        self.assertTrue(srv.wait_log(r"message \S+ from=", count=40), srv.log())
        served = {m.group(1) for m in re.finditer(r" (w\d) \[\w+\] message ", srv.log())}
        self.assertEqual(served, {"w1", "w2"})
        ids = re.findall(r"\[(\w+)\] connect from", srv.log())
        self.assertEqual(len(ids), 40)
        self.assertEqual(len(set(ids)), 40, "session ids repeat across workers")
        self.assertEqual(srv.stop(), 0)
        self.assertClean(srv)

    def test_dead_worker_is_restarted(self):
        srv = self.start()
        first = children(srv.proc.pid)
        os.kill(first[0], signal.SIGKILL)
        self.assertTrue(srv.wait_log(r"was killed by signal 9; restarting it"), srv.log())
        self.assertTrue(srv.wait_log(r"w\d luasmtpd .* ready as", count=3), srv.log())
        now = children(srv.proc.pid)
        self.assertEqual(len(now), 2)
        self.assertNotIn(first[0], now)
        self.assertIn(first[1], now)
        for _ in range(10):
            send(self.port)
        self.assertEqual(srv.stop(), 0)
        self.assertClean(srv)

    def test_sigterm_stops_every_worker(self):
        srv = self.start("--grace", "5")
        pids = children(srv.proc.pid)
        # a client in the middle of a message keeps its worker until it ends
        c = Client(self.port)
        for cmd, code in (("EHLO c.test", 250), ("MAIL FROM:<a@example.com>", 250),
                          ("RCPT TO:<b@example.com>", 250), ("DATA", 354)):
            self.assertEqual(c.cmd(cmd)[0], code)
        srv.proc.send_signal(signal.SIGTERM)
        self.assertTrue(srv.wait_log(r"stopping: 1 connection"), srv.log())
        c.send(b"Subject: late\r\n\r\nstill delivered\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.close()
        self.assertEqual(srv.proc.wait(timeout=10), 0)
        self.assertTrue(srv.wait_log(r"every worker has stopped"))
        self.assertTrue(srv.wait_log(r"message \S+ from=<a@example.com>"))
        for pid in pids:
            self.assertFalse(alive(pid))
        self.assertClean(srv)

    def test_sighup_loads_the_script_again(self):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "rules.lua")
        with open(path, "w") as f:
            f.write(SCRIPT_REJECT)
        srv = self.start(path)
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            send(self.port, "blocked@example.com")
        old = children(srv.proc.pid)

        with open(path, "w") as f:
            f.write(SCRIPT_ACCEPT)
        srv.proc.send_signal(signal.SIGHUP)
        self.assertTrue(srv.wait_log(r"new workers are ready; stopping the old ones"), srv.log())
        self.assertTrue(srv.wait_log(r"old worker \d \(pid \d+\) exited with status 0", count=2),
                        srv.log())
        send(self.port, "blocked@example.com")
        new = children(srv.proc.pid)
        self.assertEqual(len(new), 2)
        self.assertFalse(set(old) & set(new))

        # a script that no longer loads: the running workers go on
        with open(path, "w") as f:
            f.write("function on_rcpt(\n")
        srv.proc.send_signal(signal.SIGHUP)
        self.assertTrue(srv.wait_log(r"does not load; the running workers go on"), srv.log())
        self.assertEqual(children(srv.proc.pid), new)
        send(self.port, "blocked@example.com")
        self.assertEqual(srv.stop(), 0)
        self.assertClean(srv)

    def test_reload_survives_new_workers_that_fail_and_a_second_sighup(self):
        # The script reads a marker file at load: "exit" makes a worker (not
        # the supervisor's check, whose pid the marker names) exit with 3;
        # "slow" makes every load take a second.
        d = tempfile.mkdtemp()
        path, marker = os.path.join(d, "rules.lua"), os.path.join(d, "marker")
        with open(path, "w") as f:
            f.write("""
local f = io.open(%r)
local how = f and f:read("l")
if f then f:close() end
local me = io.open("/proc/self/stat"):read("n")
if how and how:find("^exit ") and tonumber(how:match("%%d+")) ~= me then os.exit(3) end
if how == "slow" then local t = os.clock() + 1 while os.clock() < t do end end
function on_rcpt(rcpt) return true end
""" % marker)
        srv = self.start(path)
        old = children(srv.proc.pid)

        # new workers that cannot start: the old ones go on serving
        with open(marker, "w") as f:
            f.write("exit %d\n" % srv.proc.pid)
        srv.proc.send_signal(signal.SIGHUP)
        self.assertTrue(srv.wait_log(r"worker \d \(pid \d+\) exited with status 3; restarting it "
                                     r"in a second", timeout=10), srv.log())
        send(self.port)
        self.assertEqual([p for p in old if alive(p)], old)
        os.unlink(marker)
        self.assertTrue(srv.wait_log(r"new workers are ready; stopping the old ones", timeout=10),
                        srv.log())
        self.assertTrue(srv.wait_log(r"old worker \d \(pid \d+\) exited with status 0", count=2),
                        srv.log())
        send(self.port)

        # a SIGHUP while a reload is under way is not a second reload
        with open(marker, "w") as f:
            f.write("slow\n")
        srv.proc.send_signal(signal.SIGHUP)
        self.assertTrue(srv.wait_log(r"SIGHUP: starting new workers", count=2, timeout=10),
                        srv.log())
        srv.proc.send_signal(signal.SIGHUP)
        self.assertTrue(srv.wait_log(r"SIGHUP: a reload is already under way"), srv.log())
        self.assertTrue(srv.wait_log(r"new workers are ready; stopping the old ones", count=2,
                                     timeout=10), srv.log())
        self.assertTrue(srv.wait_log(r"old worker \d \(pid \d+\) exited with status 0", count=4),
                        srv.log())
        send(self.port)
        self.assertEqual(len(children(srv.proc.pid)), 2)
        self.assertEqual(srv.stop(), 0)
        self.assertClean(srv)

    def test_worker_that_cannot_listen_stops_the_server(self):
        port = free_port()
        with socket.socket() as held:      # no SO_REUSEPORT: the workers cannot share it
            held.bind(("127.0.0.1", port))
            held.listen()
            p = subprocess.run([BINARY, "--workers", "2", "--listen", "127.0.0.1:%d" % port],
                               capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("bind 127.0.0.1:%d" % port, p.stderr)
        self.assertIn("before it was ready: stopping", p.stderr)

    def test_options(self):
        p = subprocess.run([BINARY, "--workers", "2", "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--workers: each worker would get another port", p.stderr)
        for bad in ("0", "65", "two"):
            p = subprocess.run([BINARY, "--workers", bad, "--check", "/dev/null"],
                               capture_output=True, text=True, timeout=20)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn("--workers", p.stderr)
        p = subprocess.run([BINARY, "--workers", "auto", "--help"], capture_output=True, text=True)
        self.assertIn("--workers N|auto", p.stdout)


if __name__ == "__main__":
    unittest.main()
