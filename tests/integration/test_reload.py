"""Reload: SIGHUP in a single-process server loads the script anew while
sessions in progress finish on the one they began with (docs/config.md,
"Reload")."""
import os
import signal
import smtplib
import socket
import subprocess
import time
import unittest

from harness import BINARY, Server, free_port, tmp_path
from test_actions import WebService

V = '''
local l = require "luasmtpd"
l.every(0.2, function() l.log("tick %(v)s") end)
function on_rcpt(addr) if addr:match("^no@") then return false end end
function on_mail(m) l.log("on_mail %(v)s", m.subject) end
%(extra)s
'''


def write(path, v, extra=""):
    with open(path, "w") as f:
        f.write(V % dict(v=v, extra=extra))


class Reload(unittest.TestCase):
    def setUp(self):
        self.path = tmp_path("reload.lua")
        write(self.path, "v1")
        self.srv = Server(self.path, "--state-dir", tmp_path("reload-state"))
        self.addCleanup(self.srv.stop)

    def reload(self):
        """SIGHUP; the outcome's log line."""
        pattern = r"reload: \S+ (loaded|does not load)"
        before = self.srv.count_log(pattern)
        self.srv.proc.send_signal(signal.SIGHUP)
        m = self.srv.wait_log(pattern, count=before + 1)
        self.assertIsNotNone(m, self.srv.log())
        return m.group(0)

    def send(self, subject):
        with smtplib.SMTP(self.srv.host, self.srv.port) as c:
            c.sendmail("a@example.com", ["b@example.com"], "Subject: %s\r\n\r\nx\r\n" % subject)

    def test_new_sessions_get_the_new_script_old_ones_finish_on_theirs(self):
        srv = self.srv
        self.assertTrue(srv.wait_log(r"tick v1"))
        old = smtplib.SMTP(srv.host, srv.port)
        old.ehlo()
        old.mail("a@example.com")
        old.rcpt("b@example.com")                 # a transaction in progress
        write(self.path, "v2", 'config = { max_size = "2M" }')
        self.assertIn("loaded", self.reload())
        self.assertTrue(srv.wait_log(r"reload: --max-size changed in the script's config: "
                                     r"it takes effect at a restart"))
        self.send("new")
        self.assertTrue(srv.wait_log(r"on_mail v2 new"), srv.log())
        # the old script's timers stopped at the reload; its session goes on
        ticks = srv.count_log(r"tick v1")
        time.sleep(0.6)
        self.assertEqual(srv.count_log(r"tick v1"), ticks)
        self.assertGreater(srv.count_log(r"tick v2"), 0)
        self.assertEqual(old.data("Subject: old\r\n\r\nx\r\n")[0], 250)
        old.quit()
        self.assertTrue(srv.wait_log(r"on_mail v1 old"), srv.log())
        self.assertTrue(srv.wait_log(r"reload: the script before has no session left: closed"))
        # and the options of the start stay: 10M, not the script's 2M
        with smtplib.SMTP(srv.host, srv.port) as c:
            self.assertEqual(c.ehlo()[0], 250)
            self.assertEqual(c.esmtp_features.get("size"), str(10 << 20))

    def test_reloads_are_bounded_while_old_scripts_still_have_sessions(self):
        srv = self.srv
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        for i in range(8):                        # each reload leaves a script with a session
            held.append(socket.create_connection((srv.host, srv.port)))
            self.assertTrue(srv.wait_log(r"connect from", count=i + 1))
            self.assertIn("loaded", self.reload())
        srv.proc.send_signal(signal.SIGHUP)
        self.assertTrue(srv.wait_log(r"reload: 8 scripts before still finish their sessions: not reloaded"),
                        srv.log())
        for s in held:
            s.close()
        self.assertTrue(srv.wait_log(r"reload: the script before has no session left: closed", count=8),
                        srv.log())
        self.assertIn("loaded", self.reload())    # and reloads work again
        self.send("after")
        self.assertTrue(srv.wait_log(r"on_mail v1 after"), srv.log())

    def test_a_broken_script_leaves_the_running_one(self):
        srv = self.srv
        with open(self.path, "w") as f:
            f.write("function on_mail(\n")
        self.assertIn("does not load", self.reload())
        self.assertTrue(srv.wait_log(r"reload\.lua:2: .*expected"), srv.log())
        self.send("still")
        self.assertTrue(srv.wait_log(r"on_mail v1 still"), srv.log())
        with smtplib.SMTP(srv.host, srv.port) as c:
            c.ehlo()
            c.mail("a@example.com")
            self.assertEqual(c.rcpt("no@example.com")[0], 550)   # the old rules still decide
        # a config error is a load error too
        write(self.path, "v3", "config = { max_sise = 1 }")
        self.assertIn("does not load", self.reload())
        self.assertTrue(srv.wait_log(r"config.max_sise is not an option"))
        write(self.path, "v4")
        self.assertIn("loaded", self.reload())
        self.send("fixed")
        self.assertTrue(srv.wait_log(r"on_mail v4 fixed"), srv.log())
        self.assertIsNone(srv.proc.poll())


class PidFile(unittest.TestCase):
    def test_reload_through_the_pid_file_and_the_file_goes_at_the_end(self):
        path = tmp_path("reload-pid.lua")
        write(path, "p1")
        pid_file = tmp_path("luasmtpd.pid")
        with Server(path, "--pid-file", pid_file) as srv:
            with open(pid_file) as f:
                self.assertEqual(int(f.read()), srv.proc.pid)
            write(path, "p2")
            p = subprocess.run([BINARY, "--reload", "--pid-file", pid_file], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("SIGHUP sent to %d" % srv.proc.pid, p.stdout)
            self.assertTrue(srv.wait_log(r"reload: \S+ loaded"), srv.log())
            srv.stop()
        self.assertFalse(os.path.exists(pid_file))
        p = subprocess.run([BINARY, "--reload", "--pid-file", pid_file], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot read %s: No such file or directory" % pid_file, p.stderr)
        p = subprocess.run([BINARY, "--reload"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--reload needs --pid-file FILE", p.stderr)

    def test_the_supervisor_writes_it_with_workers(self):
        pid_file = tmp_path("luasmtpd-workers.pid")
        port = free_port()
        with Server("--workers", "2", "--pid-file", pid_file, listen="127.0.0.1:%d" % port) as srv:
            self.assertTrue(srv.wait_log(r"2 workers ready"), srv.log())
            with open(pid_file) as f:
                self.assertEqual(int(f.read()), srv.proc.pid)
        self.assertFalse(os.path.exists(pid_file))


class Notify(unittest.TestCase):
    """Type=notify: what systemd would read on $NOTIFY_SOCKET (libsystemd's
    sd_notify, heard here on a datagram socket of the test's own)."""

    def listen(self):
        path = tmp_path("notify-%s.sock" % self.id().rsplit(".", 1)[-1][:40])
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        self.addCleanup(sock.close)
        return path, sock

    def test_ready_reloading_stopping(self):
        path, sock = self.listen()
        script = tmp_path("notify.lua")
        write(script, "n1")
        srv = Server(script, env={"NOTIFY_SOCKET": path})
        self.assertEqual(sock.recv(256), b"READY=1")
        srv.proc.send_signal(signal.SIGHUP)
        self.assertRegex(sock.recv(256), rb"^RELOADING=1\nMONOTONIC_USEC=\d+$")
        self.assertEqual(sock.recv(256), b"READY=1")
        srv.stop()
        self.assertEqual(sock.recv(256), b"STOPPING=1")

    def test_the_supervisor_speaks_for_its_workers(self):
        path, sock = self.listen()
        port = free_port()
        with Server("--workers", "2", env={"NOTIFY_SOCKET": path}, listen="127.0.0.1:%d" % port) as srv:
            self.assertEqual(sock.recv(256), b"READY=1")
            self.assertTrue(srv.wait_log(r"2 workers ready"))
            srv.proc.send_signal(signal.SIGHUP)
            self.assertRegex(sock.recv(256), rb"^RELOADING=1")
            self.assertEqual(sock.recv(256), b"READY=1")
            sock.settimeout(0.5)
            with self.assertRaises(socket.timeout):    # one READY per event, none from a worker
                sock.recv(256)


class ReloadQueue(unittest.TestCase):
    def test_the_delivery_agent_moves_once_the_old_script_has_closed(self):
        web = WebService()
        self.addCleanup(web.shutdown)
        path = tmp_path("reload-queue.lua")
        text = '''
local l = require "luasmtpd"
function on_mail(m)
  assert(l.queue("http", { url = "%s/ok", method = "POST", body = m.subject }))
end
''' % web.url
        with open(path, "w") as f:
            f.write(text)
        with Server(path, "--state-dir", tmp_path("reload-queue-state")) as srv:
            old = smtplib.SMTP(srv.host, srv.port)
            old.ehlo()
            srv.proc.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r"reload: \S+ loaded"), srv.log())
            with smtplib.SMTP(srv.host, srv.port) as c:
                c.sendmail("a@example.com", ["b@example.com"], "Subject: queued after\r\n\r\nx\r\n")
            time.sleep(1.5)                       # no agent while the old script has a session
            self.assertEqual([r for r in web.requests if r[3] == b"queued after"], [])
            old.quit()
            self.assertTrue(srv.wait_log(r"job \S+ http delivered", timeout=10), srv.log())
            self.assertEqual([r[3] for r in web.requests], [b"queued after"])


if __name__ == "__main__":
    unittest.main()
