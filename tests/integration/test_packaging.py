"""The LuaRocks rockspec: lint passes, `luarocks make` builds and installs;
`make install` and the service."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROCKSPEC = "luasmtpd-scm-1.rockspec"


@unittest.skipUnless(shutil.which("luarocks"), "luarocks not installed")
class Rockspec(unittest.TestCase):
    def test_lint(self):
        p = subprocess.run(["luarocks", "lint", ROCKSPEC], cwd=ROOT, capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_make_installs_the_server(self):
        with tempfile.TemporaryDirectory() as tmp:
            # Build a copy: the suite's own binary in build/ stays untouched.
            src = os.path.join(tmp, "src")
            shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", ".git", "__pycache__"))
            tree = os.path.join(tmp, "tree")
            p = subprocess.run(["luarocks", "--lua-version", "5.4", "make", "--tree", tree, ROCKSPEC],
                               cwd=src, capture_output=True, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            exe = os.path.join(tree, "bin", "luasmtpd")
            v = subprocess.run([exe, "--version"], capture_output=True, text=True)
            self.assertEqual(v.returncode, 0)
            self.assertTrue(v.stdout.startswith("luasmtpd "))


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300, **kw)


class Install(unittest.TestCase):
    """make install DESTDIR=: what it puts where, a run from there, the man
    pages, the unit; make uninstall takes it away again."""

    def test_install_run_and_uninstall(self):
        with tempfile.TemporaryDirectory() as root:
            p = run("make", "-s", "install", "DESTDIR=" + root, "PREFIX=/usr/local", cwd=ROOT)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            usr = os.path.join(root, "usr", "local")
            for f in ("bin/luasmtpd", "share/man/man8/luasmtpd.8", "share/man/man7/luasmtpd-lua.7",
                      "share/doc/luasmtpd/README.md", "share/doc/luasmtpd/docs/queue.md",
                      "share/doc/luasmtpd/examples/relay.lua", "share/doc/luasmtpd/examples/keepalived-notify",
                      "lib/systemd/system/luasmtpd.service"):
                self.assertTrue(os.path.exists(os.path.join(usr, f)), f)
            rules = os.path.join(root, "etc", "luasmtpd", "rules.lua")
            exe = os.path.join(usr, "bin", "luasmtpd")
            p = run(exe, "--check", rules)
            self.assertEqual(p.returncode, 0, p.stderr)
            # the rules are the user's: a second install keeps them
            with open(rules, "a") as f:
                f.write("-- mine\n")
            self.assertEqual(run("make", "-s", "install", "DESTDIR=" + root, "PREFIX=/usr/local",
                                 cwd=ROOT).returncode, 0)
            with open(rules) as f:
                self.assertTrue(f.read().endswith("-- mine\n"))
            # the man pages render without a warning, and luasmtpd(8) has every option of --help
            for page in ("man8/luasmtpd.8", "man7/luasmtpd-lua.7"):
                path = os.path.join(usr, "share", "man", page)
                p = run("groff", "-man", "-ww", "-z", path)
                self.assertEqual((p.returncode, p.stderr), (0, ""), page)
                p = run("man", "-l", path, env=dict(os.environ, MANWIDTH="80", MAN_KEEP_STDERR="1"))
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("luasmtpd", p.stdout)
            with open(os.path.join(usr, "share", "man", "man8", "luasmtpd.8")) as f:
                man = f.read()
            helptext = run(exe, "--help").stdout
            for opt in sorted(set(re.findall(r"^  (--[a-z-]+)", helptext, re.M))):
                self.assertIn(".B " + opt.replace("-", "\\-"), man, opt)
            # the unit as systemd reads it, its ExecStart the binary installed here
            with open(os.path.join(usr, "lib", "systemd", "system", "luasmtpd.service")) as f:
                unit = f.read()
            self.assertIn("ExecStart=/usr/local/bin/luasmtpd ", unit)
            check = os.path.join(root, "luasmtpd.service")
            with open(check, "w") as f:
                f.write(unit.replace("/usr/local/bin/luasmtpd", exe))
            p = run("systemd-analyze", "verify", "--man=no", check)
            self.assertEqual((p.returncode, p.stderr.strip()), (0, ""), p.stdout + p.stderr)
            os.unlink(check)
            p = run("make", "-s", "uninstall", "DESTDIR=" + root, "PREFIX=/usr/local", cwd=ROOT)
            self.assertEqual(p.returncode, 0, p.stderr)
            left = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs]
            self.assertEqual(left, ["etc/luasmtpd/rules.lua"])   # edited: kept
