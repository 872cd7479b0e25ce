"""No lost mail: thousands of messages of mixed sizes and MIME shapes over
20 connections to a script that saves each one (luasmtpd.save: temporary
file, fsync, rename) and answers 250 only then.  Every 250 must be on disk
exactly once and byte-exact; then the same with SIGTERM in the middle."""
import base64
import hashlib
import math
import os
import random
import shutil
import smtplib
import socket
import tempfile
import threading
import time
import unittest

from harness import Server

SCRIPT = """
local luasmtpd = require "luasmtpd"
local DIR = assert(os.getenv("LUASMTPD_SOAK_DIR"))
function on_mail(mail)
  local path, err = luasmtpd.save(mail, DIR, { timeout = 60 })
  if not path then return 451, "4.3.0 not saved: " .. err end
  return 250, "2.0.0 saved " .. path:match("[^/]+$")
end
"""

CONNECTIONS = 20


def text_lines(rng, size):
    words = [b"alarm", b"zone", b"door", b"caf\xc3\xa9", b"temp", b"21.5", b"ok", b"..dot", b"."]
    out, n = [], 0
    while n < size:
        line = b" ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        out.append(line)
        n += len(line) + 2
    return b"\r\n".join(out) + b"\r\n"


def wrapped_base64(data):
    b = base64.b64encode(data)
    return b"\r\n".join(b[i:i + 76] for i in range(0, len(b), 76)) + b"\r\n"


def make_message(rng, tag, size):
    """A message of about `size` bytes in one of several MIME shapes, with
    CRLF line ends and a final CRLF (what smtplib sends unchanged)."""
    head = b"From: cam@example.com\r\nTo: ops@example.com\r\nSubject: soak " + tag + b"\r\n" \
           b"Message-ID: <" + tag + b"@example.com>\r\nMIME-Version: 1.0\r\n"
    shape = rng.choice(["plain", "alternative", "attachment", "qp", "nested"])
    if shape == "plain":
        return head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text_lines(rng, size)
    if shape == "qp":
        body = text_lines(rng, size).replace(b"\xc3\xa9", b"=C3=A9")
        return head + b"Content-Type: text/plain; charset=utf-8\r\n" \
                      b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body
    if shape == "alternative":
        t = text_lines(rng, size // 2)
        return head + b"Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n" \
            b"--b1\r\nContent-Type: text/plain\r\n\r\n" + t + \
            b"--b1\r\nContent-Type: text/html\r\n\r\n<p>" + t + b"</p>\r\n--b1--\r\n"
    if shape == "attachment":
        blob = rng.randbytes(max(1, size * 3 // 4))
        return head + b"Content-Type: multipart/mixed; boundary=\"b2\"\r\n\r\n" \
            b"--b2\r\nContent-Type: text/plain\r\n\r\nsnapshot attached\r\n" \
            b"--b2\r\nContent-Type: image/jpeg; name=\"snap.jpg\"\r\n" \
            b"Content-Transfer-Encoding: base64\r\n\r\n" + wrapped_base64(blob) + b"--b2--\r\n"
    inner = b"Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\n" \
            b"Content-Type: text/plain\r\n\r\n" + text_lines(rng, size) + b"--in--\r\n"
    return head + b"Content-Type: multipart/mixed; boundary=\"out\"\r\n\r\n--out\r\n" \
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n" + inner + b"--out--\r\n"


def sizes(rng, n):
    """Log-uniform sizes: most from 100 B to 64 KB, one in fifty up to 1 MB."""
    out = []
    for _ in range(n):
        top = 1 << 20 if rng.random() < 0.02 else 64 << 10
        out.append(int(10 ** rng.uniform(2, math.log10(top))))
    return out


class Soak(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="luasmtpd-soak-")
        self.maildir = os.path.join(self.dir, "Maildir")
        path = os.path.join(self.dir, "soak.lua")
        with open(path, "w") as f:
            f.write(SCRIPT)
        os.environ["LUASMTPD_SOAK_DIR"] = self.maildir
        self.srv = Server(path, "--max-size", "2M", "--grace", "60", log_level="info")
        self.lock = threading.Lock()
        self.acked = {}       # file name -> sha256 of the message
        self.refused = 0      # 4xx/5xx replies
        self.unanswered = []  # sha256 of messages sent whole whose reply never came

    def tearDown(self):
        self.srv.stop()
        shutil.rmtree(self.dir)

    def client(self, seed, count, stop_after=None):
        rng = random.Random(seed)
        msgs = [make_message(rng, b"%d-%d" % (seed, i), size)
                for i, size in enumerate(sizes(rng, count))]
        s = smtplib.SMTP(self.srv.host, self.srv.port, timeout=120)
        s.ehlo()
        for m in msgs:
            digest = hashlib.sha256(m).hexdigest()
            try:
                code, text = s.mail("cam@example.com")
                if code == 250:
                    code, text = s.rcpt("ops@example.com")
                if code == 250:
                    code, text = s.data(m)
            except smtplib.SMTPDataError as e:       # DATA itself refused
                code, text = e.smtp_code, e.smtp_error
            except (smtplib.SMTPServerDisconnected, OSError):
                with self.lock:
                    self.unanswered.append(digest)
                break
            if code != 250:
                with self.lock:
                    self.refused += 1
                self.assertTrue(400 <= code < 600, (code, text))
                if code == 421:
                    break
                continue
            name = text.decode().rsplit(" ", 1)[1]
            with self.lock:
                self.assertNotIn(name, self.acked)
                self.acked[name] = digest
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass

    def run_clients(self, per_connection, during=None):
        errors = []

        def run(seed):
            try:
                self.client(seed, per_connection)
            except Exception as e:        # reported below, with the others
                errors.append(repr(e))

        threads = [threading.Thread(target=run, args=(seed,)) for seed in range(CONNECTIONS)]
        for t in threads:
            t.start()
        if during:
            during()
        for t in threads:
            t.join(timeout=600)
        self.assertEqual(errors, [])

    def on_disk(self):
        new = os.path.join(self.maildir, "new")
        files = {}
        for name in os.listdir(new):
            with open(os.path.join(new, name), "rb") as f:
                files[name] = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(os.listdir(os.path.join(self.maildir, "tmp")), [])
        return files

    def test_every_250_is_on_disk_once_and_byte_exact(self):
        self.run_clients(500)                     # 10,000 messages
        files = self.on_disk()
        self.assertEqual(self.refused, 0)
        self.assertEqual(len(self.acked), CONNECTIONS * 500)
        self.assertEqual(files, self.acked)
        self.assertEqual(self.srv.stop(), 0)
        self.assertNotIn("Sanitizer", self.srv.log())

    def test_sigterm_in_the_middle_loses_no_250(self):
        def stop_midway():
            # about a third of the messages in, SIGTERM
            deadline = time.monotonic() + 120
            while len(self.acked) < CONNECTIONS * 50 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.srv.proc.send_signal(15)

        self.run_clients(150, during=stop_midway)
        self.assertEqual(self.srv.proc.wait(timeout=90), 0)
        files = self.on_disk()
        self.assertGreaterEqual(len(self.acked), CONNECTIONS * 50)
        # every 250 is there, byte-exact
        for name, digest in self.acked.items():
            self.assertEqual(files.get(name), digest, name)
        # anything else on disk is a message whose reply the client never read
        extra = set(files) - set(self.acked)
        self.assertLessEqual({files[n] for n in extra}, set(self.unanswered))
        self.assertNotIn("Sanitizer", self.srv.log())
        with self.assertRaises(OSError):
            socket.create_connection((self.srv.host, self.srv.port), timeout=2).close()


if __name__ == "__main__":
    unittest.main()
