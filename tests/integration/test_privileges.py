"""--user and --group: bind as root, then serve as the user (docs/config.md)."""
import os
import pwd
import smtplib
import stat
import subprocess
import unittest

from harness import BINARY, Server, free_port, tmp_path

SCRIPT = '''
local l = require "luasmtpd"
function on_mail(mail)
  l.log("wrote", l.write(os.getenv("OUT") .. "/by-hook.txt", "x"))
  l.log("exec", l.exec{"id", "-u"}.stdout)
end
'''


def ids(pid):
    """Uid, Gid and Groups lines of /proc/PID/status."""
    got = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                got[key] = value.split()
    return got


@unittest.skipUnless(os.geteuid() == 0, "needs root to drop privileges")
class User(unittest.TestCase):
    def setUp(self):
        self.nobody = pwd.getpwnam("nobody")
        self.out = tmp_path("privileges-out")
        os.makedirs(self.out, exist_ok=True)
        os.chmod(self.out, 0o777)
        os.chmod(os.path.dirname(self.out), 0o711)   # the test's own directory: passable
        self.path = tmp_path("privileges.lua")
        with open(self.path, "w") as f:
            f.write(SCRIPT)

    def test_hooks_run_as_the_user(self):
        port = free_port()            # below 1024 would prove the bind; any port shows the drop
        with Server(self.path, "--user", "nobody", "--state-dir", os.path.join(self.out, "state"),
                    listen="127.0.0.1:%d" % port, env={"OUT": self.out}) as srv:
            srv.port = port
            uid, gid = str(self.nobody.pw_uid), str(self.nobody.pw_gid)
            self.assertEqual(ids(srv.proc.pid), {"Uid": [uid] * 4, "Gid": [gid] * 4, "Groups": []})
            self.assertTrue(srv.wait_log(r"running as uid %s gid %s, user nobody" % (uid, gid)))
            with smtplib.SMTP("127.0.0.1", port) as c:
                c.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nx\r\n")
            self.assertTrue(srv.wait_log(r"script: exec %s" % uid), srv.log())
            st = os.stat(os.path.join(self.out, "by-hook.txt"))
            self.assertEqual((st.st_uid, st.st_gid), (self.nobody.pw_uid, self.nobody.pw_gid))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)

    def test_workers_run_as_the_user(self):
        port = free_port()
        with Server(self.path, "--user", "nobody", "--workers", "2", listen="127.0.0.1:%d" % port,
                    env={"OUT": self.out}) as srv:
            self.assertTrue(srv.wait_log(r"2 workers ready"), srv.log())
            with open("/proc/%d/task/%d/children" % (srv.proc.pid, srv.proc.pid)) as f:
                workers = [int(p) for p in f.read().split()]
            self.assertEqual(len(workers), 2)
            for w in workers:
                self.assertEqual(ids(w)["Uid"], [str(self.nobody.pw_uid)] * 4)
            self.assertEqual(ids(srv.proc.pid)["Uid"][0], "0")   # the supervisor stays

    def test_unknown_user_and_root_warning(self):
        with Server(self.path) as srv:
            self.assertTrue(srv.wait_log(r"warn running as root: .* --user NAME"), srv.log())
        p = subprocess.run([BINARY, "--user", "no-such-user-here", "--listen", "127.0.0.1:0", self.path],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--user no-such-user-here: no such user", p.stderr)
        p = subprocess.run([BINARY, "--user", "nobody", "--group", "no-such-group-here", "--listen", "127.0.0.1:0",
                            self.path], capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--group no-such-group-here: no such group", p.stderr)


if __name__ == "__main__":
    unittest.main()
