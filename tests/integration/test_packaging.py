"""The LuaRocks rockspec: lint passes, `luarocks make` builds and installs."""
import os
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
