"""Real SMTP clients: Python smtplib, swaks, curl, Postfix smtp-source."""
import email.message
import os
import shutil
import smtplib
import subprocess
import tempfile

from harness import ServerTest


def have(tool):
    return shutil.which(tool) or os.path.exists("/usr/sbin/" + tool)


class Clients(ServerTest):
    ARGS = ("--log-level", "info")

    def test_smtplib_sendmail(self):
        msg = email.message.EmailMessage()
        msg["From"] = "Camera 1 <cam1@site.example>"
        msg["To"] = "events@hub.example"
        msg["Subject"] = "Motion detected"
        msg.set_content("Zone 3 at 12:00\n")
        raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.ehlo("cam1")
            self.assertTrue(s.has_extn("pipelining"))
            self.assertEqual(int(s.esmtp_features["size"]), 10 * 1024 * 1024)
            refused = s.sendmail("cam1@site.example", ["events@hub.example", "log@hub.example"], raw)
            self.assertEqual(refused, {})
        m = self.srv.wait_log(r"message \S+ from=<cam1@site\.example> to=<events@hub\.example>,\.\.\. size=(\d+)")
        self.assertTrue(m, self.srv.log())
        self.assertEqual(int(m.group(1)), len(raw))

    def test_smtplib_utf8(self):
        msg = email.message.EmailMessage()
        msg["From"] = "jörg@bücher.example"
        msg["To"] = "δοκιμή@example.com"
        msg["Subject"] = "Grüße"
        msg.set_content("Ünïcödé\n")
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.send_message(msg)  # adds SMTPUTF8 itself for non-ASCII addresses
        self.assertTrue(self.srv.wait_log(r"message \S+ from=<jörg@bücher\.example>"))

    def test_smtplib_rejections_raise(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            with self.assertRaises(smtplib.SMTPSenderRefused):
                s.sendmail("not an address", ["a@b.c"], b"x\r\n")

    def test_swaks(self):
        if not have("swaks"):
            self.skipTest("swaks not installed")
        p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % self.srv.port, "--from", "nas@site.example",
                            "--to", "ops@hub.example", "--header", "Subject: backup done",
                            "--body", "all good", "--pipeline"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("250 2.0.0 Ok: queued as", p.stdout)
        self.assertTrue(self.srv.wait_log(r"message \S+ from=<nas@site\.example>"))

    def test_curl(self):
        if not have("curl"):
            self.skipTest("curl not installed")
        mail = b"From: plc@site.example\r\nTo: ops@hub.example\r\nSubject: alarm\r\n\r\ntank 2 high\r\n"
        with tempfile.NamedTemporaryFile("wb", suffix=".eml", delete=False) as f:
            f.write(mail)
            path = f.name
        try:
            p = subprocess.run(["curl", "-sS", "smtp://127.0.0.1:%d" % self.srv.port,
                                "--mail-from", "plc@site.example", "--mail-rcpt", "ops@hub.example",
                                "--upload-file", path], capture_output=True, text=True, timeout=30)
        finally:
            os.unlink(path)
        self.assertEqual(p.returncode, 0, p.stderr)
        m = self.srv.wait_log(r"message \S+ from=<plc@site\.example> .* size=(\d+)")
        self.assertTrue(m)
        self.assertEqual(int(m.group(1)), len(mail))

    def test_smtp_source(self):
        tool = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
        if not os.path.exists(tool):
            self.skipTest("smtp-source not installed")
        # 100 messages over 10 parallel sessions, 10 messages each.
        p = subprocess.run([tool, "-s", "10", "-m", "100", "-l", "2048", "-d",
                            "-f", "src@site.example", "-t", "dst@hub.example",
                            "127.0.0.1:%d" % self.srv.port], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertTrue(self.srv.wait_log(r"message \S+ from=<src@site\.example>", count=100, timeout=20))
        self.assertEqual(self.srv.count_log(r"message \S+ from=<src@site\.example>"), 100)
