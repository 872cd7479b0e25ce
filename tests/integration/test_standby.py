"""Standby (HSYCO's "shutdown when inactive"): --standby and --activate act
on a running server through its pid file, --start-standby starts one in
standby.  In standby connecting is refused, sessions in progress finish,
and the script's timers wait.  Tested alone, with --workers, and as the
two halves of a pair behind a real HAProxy, switched both ways under
traffic."""
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import test_proxy
from harness import BINARY, Server, ServerTest, free_port, tmp_path

# A tick a tenth of a second, and what on_standby hears.
TICKS = '''
local l = require "luasmtpd"
local n = 0
l.every(0.1, function() n = n + 1; l.log("tick " .. n) end)
function on_standby(active) l.log("on_standby active=" .. tostring(active) .. " ticks=" .. n) end
function on_mail(m)
  l.log("mail " .. m.subject)
  if m.subject == "stuck" then ("a"):rep(5000):find(("a-"):rep(12) .. "b") end   -- minutes
end
'''


def script():
    path = tmp_path("standby.lua")
    with open(path, "w") as f:
        f.write(TICKS)
    return path


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


NOTIFY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "scripts", "keepalived-notify")


def notify(state, pid_file):
    """What keepalived runs on a VRRP change (scripts/keepalived-notify)."""
    subprocess.run([NOTIFY, "INSTANCE", "SMTP", state, "100"], check=True, timeout=10,
                   env=dict(os.environ, LUASMTPD_PID_FILE=pid_file))


def control(flag, pid_file):
    """luasmtpd --standby|--activate --pid-file FILE: its output."""
    p = subprocess.run([BINARY, flag, "--pid-file", pid_file], capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        raise AssertionError("%s: exit %d: %s" % (flag, p.returncode, p.stderr))
    return p.stdout


class Standby(ServerTest):
    WORKERS = ()

    def setUp(self):
        self.pid_file = tmp_path("standby-%d.pid" % free_port())
        self.port = free_port()
        self.srv = Server("--pid-file", self.pid_file, script(), *self.WORKERS, *self.START,
                          listen="127.0.0.1:%d" % self.port, log_level="info")

    START = ()

    def ticks(self):
        return self.srv.count_log(r"tick \d+")

    def switch(self, flag, state, count):
        self.assertIn("sent to", control(flag, self.pid_file))
        line = "standby: the listeners are closed" if flag == "--standby" else "active: listening again"
        self.assertTrue(self.srv.wait_log(line, count=count * self.nproc()), self.srv.log()[-2000:])
        self.assertTrue(self.srv.wait_log(r"on_standby active=%s" % state,
                                          count=count * self.nproc()), self.srv.log()[-2000:])

    def nproc(self):
        return 1

    def served(self, timeout=5):
        """A message on a new connection, once one is accepted."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = self.srv.client()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with c:
            self.assertEqual(c.greeting[0], 220)
            self.assertReply(c.cmd("EHLO client.test"), 250)
            return self.transaction(c)[0]

    def test_both_ways_sessions_in_progress_finish_and_timers_wait(self):
        self.assertEqual(self.served(), 250)
        self.assertTrue(self.srv.wait_log(r"tick 3"))
        c = self.session()               # in progress across the switch
        self.switch("--standby", "false", 1)
        self.assertTrue(refused(self.port))
        # the session begun before goes on to its end
        self.assertReply(self.transaction(c), 250)
        self.assertReply(c.cmd("QUIT"), 221)
        # the ticks wait
        before = self.ticks()
        time.sleep(0.6)
        self.assertLessEqual(self.ticks() - before, self.nproc())   # one may have been under way
        # a second --standby changes nothing
        control("--standby", self.pid_file)
        self.assertTrue(self.srv.wait_log(r"already in standby"))
        self.switch("--activate", "true", 1)
        self.assertEqual(self.served(), 250)
        before = self.ticks()
        self.assertTrue(self.srv.wait_log(r"tick \d+", count=before + 3 * self.nproc()))
        # and once more, both ways
        self.switch("--standby", "false", 2)
        self.assertTrue(refused(self.port))
        self.switch("--activate", "true", 2)
        self.assertEqual(self.served(), 250)


class StandbyWorkers(Standby):
    WORKERS = ("--workers", "2")

    def nproc(self):
        return 2

    def test_a_worker_started_again_in_standby_stays_there(self):
        self.switch("--standby", "false", 1)
        workers = [int(p) for p in subprocess.check_output(["pgrep", "-P", str(self.srv.proc.pid)]).split()]
        self.assertEqual(len(workers), 2)
        os.kill(workers[0], 9)
        self.assertTrue(self.srv.wait_log(r"worker \d \(pid %d\) was killed by signal 9" % workers[0]))
        # the new worker starts in standby (its script hears of it), and
        # the port stays refused
        self.assertTrue(self.srv.wait_log(r"on_standby active=false", count=3, timeout=10))
        for _ in range(10):
            self.assertTrue(refused(self.port))
        self.switch("--activate", "true", 1)
        self.assertEqual(self.served(), 250)


class StartStandby(Standby):
    START = ("--start-standby",)

    def test_both_ways_sessions_in_progress_finish_and_timers_wait(self):
        self.assertTrue(self.srv.wait_log(r"on_standby active=false ticks=0"))
        self.assertTrue(refused(self.port))
        time.sleep(0.5)
        self.assertEqual(self.ticks(), 0)
        self.switch("--activate", "true", 1)
        self.assertEqual(self.served(), 250)
        self.assertTrue(self.srv.wait_log(r"tick 3"))


class WatchdogRestart(Standby):
    """The watchdog starts a stuck server again in the state of the moment,
    whatever the command line said."""
    START = ("--start-standby", "--hook-timeout", "0.2", "--hook-kill", "1")

    def stuck(self, c, n):
        self.start_message(c, body=b"Subject: stuck\r\n\r\nx\r\n")
        self.assertTrue(self.srv.wait_log(r"starting the server again", count=n, timeout=30))
        self.assertTrue(self.srv.wait_log(r"ready as ", count=n + 1, timeout=30))

    def test_both_ways_sessions_in_progress_finish_and_timers_wait(self):
        self.switch("--activate", "true", 1)
        self.stuck(self.session(), 1)
        self.assertEqual(self.served(), 250)               # active, as it was
        c = self.session()
        self.switch("--standby", "false", 2)                # the start's was the first
        self.stuck(c, 2)
        self.assertTrue(self.srv.wait_log(r"on_standby active=false", count=3))
        self.assertTrue(refused(self.port))                 # in standby, as it was
        self.switch("--activate", "true", 2)
        self.assertEqual(self.served(), 250)


class Usage(unittest.TestCase):
    def test_notify_script_errors(self):
        for state, env, text in (("SOMETHING", {}, "is none of MASTER"),
                                 ("MASTER", {"LUASMTPD_PID_FILE": os.devnull}, "no luasmtpd running")):
            p = subprocess.run([NOTIFY, "INSTANCE", "SMTP", state], capture_output=True, text=True,
                               timeout=10, env=dict(os.environ, **env))
            self.assertNotEqual(p.returncode, 0, state)
            self.assertIn(text, p.stderr, state)

    def test_errors(self):
        for args, text in ((["--standby"], "--standby needs --pid-file FILE"),
                           (["--activate", "--reload", "--pid-file", "x"], "one of --reload, --standby"),
                           (["--activate", "--pid-file", tmp_path("none.pid")], "cannot read")):
            p = subprocess.run([BINARY] + args, capture_output=True, text=True, timeout=10)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(text, p.stderr, args)


# Two instances, one active and one in standby; HAProxy checks both and
# sends each connection to the one that is up.
PAIR_CFG = """
global
    stats socket {stats} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    retries 3
    option redispatch 1
frontend smtp
    bind 127.0.0.1:{fe}
    default_backend pair
backend pair
    option smtpchk EHLO haproxy.test
    server a 127.0.0.1:{a} check inter 100ms fall 1 rise 1
    server b 127.0.0.1:{b} check inter 100ms fall 1 rise 1
"""


@unittest.skipUnless(shutil.which("haproxy"), "haproxy not installed")
class PairBehindHAProxy(unittest.TestCase):
    """The standby half is DOWN for HAProxy; switched, the other is."""
    status = test_proxy.BehindHAProxy.status

    def setUp(self):
        self.ports = {"a": free_port(), "b": free_port(), "fe": free_port()}
        self.servers, self.pid_files = {}, {}
        for name, start in (("a", ()), ("b", ("--start-standby",))):
            self.pid_files[name] = tmp_path("pair-%s-%d.pid" % (name, self.ports[name]))
            srv = Server("--id", name, "--pid-file", self.pid_files[name], script(), *start,
                         listen="127.0.0.1:%d" % self.ports[name], log_level="info")
            self.addCleanup(srv.stop)
            self.servers[name] = srv
        d = tempfile.mkdtemp(prefix="haproxy-", dir=os.path.dirname(tmp_path("x")))
        self.stats = os.path.join(d, "stats.sock")
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(PAIR_CFG.format(stats=self.stats, **self.ports))
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        self.addCleanup(haproxy.wait, 5)
        self.addCleanup(haproxy.terminate)
        self.wait_status({"a": "UP", "b": "DOWN"})

    def wait_status(self, want, timeout=10):
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            try:
                st = {k[1]: v.split()[0] for k, v in self.status().items()}
                if st == want:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.fail("HAProxy sees %r, not %r" % (st, want))

    def test_switched_both_ways_under_traffic(self):
        sent, failed, stop = [], [], threading.Event()

        def traffic():
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    with smtplib.SMTP("127.0.0.1", self.ports["fe"], timeout=10) as c:
                        c.sendmail("cam@site.example", ["ops@site.example"], "Subject: m%d\r\n\r\nx\r\n" % i)
                    sent.append(i)
                except (OSError, smtplib.SMTPException) as e:
                    failed.append((i, repr(e)))   # the client would try again later
                time.sleep(0.01)

        t = threading.Thread(target=traffic)
        t.start()
        try:
            def more(k):
                n = len(sent)
                while len(sent) < n + k and t.is_alive():
                    time.sleep(0.02)

            more(20)
            for active, standby in (("b", "a"), ("a", "b")):
                # the order of a switch: the other half up first, as
                # HAProxy sees it, then this one down
                notify("MASTER", self.pid_files[active])
                self.wait_status({active: "UP", standby: "UP"})
                notify("BACKUP", self.pid_files[standby])
                self.wait_status({active: "UP", standby: "DOWN"})
                more(20)
        finally:
            stop.set()
            t.join(30)
        # every message answered 250 reached a hook, exactly once
        got = {}
        for name, srv in self.servers.items():
            for line in srv.log().splitlines():
                if " mail m" in line:
                    got.setdefault(int(line.rsplit(" m", 1)[1]), []).append(name)
        self.assertEqual(sorted(got), sorted(sent))
        self.assertTrue(all(len(v) == 1 for v in got.values()))
        # both halves had their share, and no connection failed: what
        # waited in the backlog of the half going to standby was served.
        # (One that completes its handshake between that last accept and
        # the shutdown is reset: a window of microseconds, allowed for.)
        self.assertGreater(sum(v == ["b"] for v in got.values()), 10)
        self.assertGreater(sum(v == ["a"] for v in got.values()), 10)
        self.assertLessEqual(len(failed), 1, failed)


if __name__ == "__main__":
    unittest.main()
