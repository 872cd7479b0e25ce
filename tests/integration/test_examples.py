"""The scripts in examples/ do what they say, with real clients."""
import json
import os
import shutil
import smtplib
import time
import unittest
from email import message_from_bytes
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from harness import Broker, Server, ServerTest, free_port, tmp_path
from test_actions import WebService

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def example(name):
    return os.path.join(ROOT, "examples", name)


class RejectSenders(ServerTest):
    ARGS = (example("reject_senders.lua"),)

    def test_blocked_and_allowed(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<Spammer@Example.com>"), 550, "5.7.1 Known spammer")
        self.assertReply(c.cmd("MAIL FROM:<x@spam.example>"), 550, "Domain not accepted")
        self.assertReply(c.cmd("MAIL FROM:<x@mail.bad.example>"), 550, "blocked by policy")
        self.assertReply(c.cmd("MAIL FROM:<x@notbad.example>"), 250)
        c.cmd("RSET")
        self.assertReply(self.transaction(c, sender="cam@site.example"), 250)


class Routes(ServerTest):
    ARGS = (example("routes.lua"),)

    def test_routed_recipients(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            refused = s.sendmail("nas@site.example",
                                 ["alarm@hub.example", "cam3@cameras.hub.example", "nobody@hub.example"],
                                 b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(list(refused), ["nobody@hub.example"])
        self.assertEqual(refused["nobody@hub.example"][0], 550)
        self.assertTrue(self.srv.wait_log(r"script: ALARM mail \S+ from nas@site\.example for alarm@hub\.example"))
        self.assertTrue(self.srv.wait_log(r"script: camera mail .* for cam3@cameras\.hub\.example"))


class JsonLog(ServerTest):
    ARGS = (example("json_log.lua"),)

    def test_one_line_per_mail(self):
        c = self.session()
        for i in range(3):
            self.assertReply(self.transaction(c, sender="s%d@site.example" % i), 250)
        c.cmd("QUIT")
        self.srv.stop()
        lines = self.srv.stdout().splitlines()
        self.assertEqual(len(lines), 3)
        first = json.loads(lines[0])
        self.assertEqual(first["from"], "s0@site.example")
        self.assertEqual(first["to"], ["b@example.com"])
        self.assertEqual(first["ip"], "127.0.0.1")
        self.assertRegex(first["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Hsyco(ServerTest):
    ARGS = (example("hsyco.lua"),)

    def test_documented_event_log(self):
        # the message of HSYCO's documentation, sent with smtplib
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.sendmail("me@example.com", ["test@hsyco.com"],
                       b"From: My Name <me@example.com>\r\nTo: test@hsyco.com\r\n"
                       b"Subject: This is a test\r\nDate: Mon, 25 Jan 2016 18:24:49 +0100\r\n"
                       b"Content-Type: text/plain; charset=us-ascii\r\n\r\nMy mail body.\r\n")
        for line in ("From: My Name <me@example.com>", "To: test@hsyco.com",
                     "Date: Mon, 25 Jan 2016 18:24:49 +0100", "Subject: This is a test",
                     "Body Line 1: My mail body."):
            self.assertTrue(self.srv.wait_log(r"script: " + line.replace("+", r"\+") + "$"), line)


class Trigger(ServerTest):
    DIR = tmp_path("trigger")
    ARGS = (example("trigger.lua"),)

    def setUp(self):
        shutil.rmtree(self.DIR, ignore_errors=True)
        os.makedirs(self.DIR)
        os.environ["TRIGGER_DIR"] = self.DIR
        try:
            super().setUp()
        finally:
            del os.environ["TRIGGER_DIR"]

    def test_rules_events_and_command(self):
        c = self.session()
        subject = "Motion $(touch /tmp/pwned) `id`; zone 3"
        body = ("Subject: %s\r\n\r\nsnapshot\r\n" % subject).encode()
        self.assertReply(self.transaction(c, body=body, sender="cam3@site.example"), 250)
        self.assertReply(self.transaction(c, body=b"Subject: Backup ok\r\n\r\nx\r\n",
                                          sender="nas@site.example"), 250)
        self.assertReply(self.transaction(c, body=b"Subject: other\r\n\r\nx\r\n"), 250)
        with open(os.path.join(self.DIR, "events.jsonl")) as f:
            events = [json.loads(line) for line in f]
        self.assertEqual([(e["event"], e["from"]) for e in events],
                         [("motion", "cam3@site.example"), ("backup", "nas@site.example")])
        # the subject reached the command as one argument, not as shell text
        with open(os.path.join(self.DIR, "alarms.log")) as f:
            self.assertEqual(f.read(), subject + "\n")
        self.assertFalse(os.path.exists("/tmp/pwned"))

    def test_failed_command_is_451(self):
        os.makedirs(os.path.join(self.DIR, "alarms.log"))   # a directory: the command fails
        c = self.session()
        self.assertReply(self.transaction(c, body=b"Subject: motion\r\n\r\nx\r\n"), 451, "4.3.0")
        self.assertTrue(self.srv.wait_log(r"motion command failed"))
        self.assertReply(self.transaction(c, body=b"Subject: quiet\r\n\r\nx\r\n"), 250)


class Auth(ServerTest):
    ARGS = ("--allow-insecure-auth", "--require-auth", example("auth.lua"))

    def test_login_and_own_addresses(self):
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            with self.assertRaises(smtplib.SMTPSenderRefused) as e:
                s.sendmail("cam1@site.example", ["ops@hub.example"], b"x\r\n")
            self.assertEqual(e.exception.smtp_code, 530)
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                s.login("cam1", "wrong")
            s.login("nas", "change me")
            self.assertEqual(s.sendmail("backup@site.example", ["ops@hub.example"], b"x\r\n"), {})
            with self.assertRaises(smtplib.SMTPSenderRefused) as e:
                s.sendmail("cam1@site.example", ["ops@hub.example"], b"x\r\n")
            self.assertEqual(e.exception.smtp_code, 550)
            self.assertIn(b"nas may not send as <cam1@site.example>", e.exception.smtp_error)


class WithEnv(ServerTest):
    """A server started with ENV set in its environment."""
    ENV = {}

    def setUp(self):
        saved = {k: os.environ.get(k) for k in self.ENV}
        os.environ.update(self.ENV)
        try:
            super().setUp()
        finally:
            for k, v in saved.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v


class Maildir(WithEnv):
    DIR = tmp_path("maildir-example")
    ARGS = (example("maildir.lua"),)
    ENV = {"MAILDIR": os.path.join(DIR, "Maildir")}

    def test_saved_or_451(self):
        shutil.rmtree(self.DIR, ignore_errors=True)
        os.makedirs(self.DIR)
        with smtplib.SMTP(self.srv.host, self.srv.port) as s:
            s.ehlo()
            s.mail("cam@site.example")
            s.rcpt("ops@site.example")
            code, msg = s.data(b"Subject: motion\r\n\r\nzone 3\r\n")
            self.assertEqual(code, 250)
            name = msg.decode().split("Saved as ")[1]
            with open(os.path.join(self.DIR, "Maildir", "new", name), "rb") as f:
                self.assertEqual(f.read(), b"Subject: motion\r\n\r\nzone 3\r\n")
            shutil.rmtree(self.DIR)                 # the parent is gone: not saved
            s.mail("cam@site.example")
            s.rcpt("ops@site.example")
            code, msg = s.data(b"Subject: motion\r\n\r\nagain\r\n")
            self.assertEqual(code, 451)
        self.assertTrue(self.srv.wait_log(r"not saved: save: cannot create"))


MOTION = (b"From: Camera 3 <cam3@site.example>\r\nTo: ops@site.example\r\n"
          b"Subject: =?UTF-8?Q?Bewegung_erkannt?=\r\nDate: Sat, 21 Nov 2026 10:00:00 +0100\r\n"
          b"\r\nZone 3\r\n")


class MqttBridge(WithEnv):
    ARGS = (example("mqtt_bridge.lua"),)

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker()
        cls.ENV = {"MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(cls.broker.port)}

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()

    def test_each_mail_is_an_event(self):
        self.assertTrue(self.srv.wait_log(r"mqtt: connected"))
        sub = self.broker.subscribe("luasmtpd/#", 2)
        with smtplib.SMTP(self.srv.host, self.srv.port) as s:
            s.sendmail("cam3@site.example", ["ops@site.example"], MOTION)
            s.sendmail("", ["ops@site.example"], b"Subject: bounce\r\n\r\nx\r\n")
        got = dict(sub.result())
        event = json.loads(got["luasmtpd/cam3/mail"])
        parsed = message_from_bytes(MOTION)
        self.assertEqual(event["subject"], "Bewegung erkannt")
        self.assertEqual(event["from"], parsed["From"])
        self.assertEqual(event["body"], ["Zone 3"])
        self.assertIn("luasmtpd/unknown/mail", got)


class Webhook(WithEnv):
    ARGS = (example("webhook.lua"),)

    @classmethod
    def setUpClass(cls):
        cls.web = WebService()
        cls.ENV = {"WEBHOOK_URL": cls.web.url + "/ok"}

    @classmethod
    def tearDownClass(cls):
        cls.web.shutdown()

    def test_posted_and_answer_decides(self):
        with smtplib.SMTP(self.srv.host, self.srv.port) as s:
            s.sendmail("cam3@site.example", ["ops@site.example"], MOTION)
        method, path, headers, body = self.web.requests[-1]
        self.assertEqual((method, path, headers["Content-Type"]), ("POST", "/ok", "application/json"))
        event = json.loads(body)
        self.assertEqual((event["sender"], event["recipients"], event["subject"]),
                         ("cam3@site.example", ["ops@site.example"], "Bewegung erkannt"))

    def test_service_errors_are_451(self):
        os.environ["WEBHOOK_URL"] = self.web.url + "/fail"
        try:
            with Server(example("webhook.lua")) as srv:
                with smtplib.SMTP(srv.host, srv.port) as s:
                    with self.assertRaises(smtplib.SMTPDataError) as e:
                        s.sendmail("cam3@site.example", ["ops@site.example"], MOTION)
                self.assertEqual(e.exception.smtp_code, 451)
                self.assertIn(b"answered 500", e.exception.smtp_error)
        finally:
            del os.environ["WEBHOOK_URL"]


class Watchdog(WithEnv):
    ARGS = (example("watchdog.lua"),)
    ENV = {"SILENT_AFTER": "1", "WATCH": "never@site.example"}

    def test_silent_devices_raise_an_alarm(self):
        with smtplib.SMTP(self.srv.host, self.srv.port) as s:
            for _ in range(3):                  # mailing often: no alarm
                s.sendmail("plc@site.example", ["ops@site.example"], b"Subject: alive\r\n\r\n")
                time.sleep(0.5)
            self.assertEqual(self.srv.count_log(r"watchdog: plc@site.example silent"), 0)
            self.assertTrue(self.srv.wait_log(r"watchdog: never@site.example silent"))
            self.assertTrue(self.srv.wait_log(r"warn script: watchdog: plc@site.example silent", timeout=3))
            s.sendmail("plc@site.example", ["ops@site.example"], b"Subject: alive\r\n\r\n")
            self.assertTrue(self.srv.wait_log(r"script: watchdog: plc@site.example back"))

    def test_one_alarm_with_workers_and_across_a_restart(self):
        state = tmp_path("watchdog-example-state")
        port = free_port()
        with Server(example("watchdog.lua"), "--workers", "2", "--state-dir", state,
                    listen="127.0.0.1:%d" % port, env=self.ENV) as srv:
            self.assertTrue(srv.wait_log(r"watchdog: never@site.example silent"))
            for _ in range(4):                  # either worker may take each
                with smtplib.SMTP("127.0.0.1", port) as s:
                    s.sendmail("plc@site.example", ["ops@site.example"], b"Subject: alive\r\n\r\n")
            self.assertTrue(srv.wait_log(r"watchdog: plc@site.example silent", timeout=4))
            for _ in range(2):                  # back, then armed again
                with smtplib.SMTP("127.0.0.1", port) as s:
                    s.sendmail("plc@site.example", ["ops@site.example"], b"Subject: alive\r\n\r\n")
            self.assertTrue(srv.wait_log(r"watchdog: plc@site.example back"))
            time.sleep(0.3)
            srv.stop()
        for dev in ("never", "plc"):
            self.assertEqual(srv.count_log(r"watchdog: %s@site.example silent" % dev), 1, srv.log())
        self.assertEqual(srv.count_log(r"watchdog: plc@site.example back"), 1, srv.log())
        # plc mailed just before the stop: it goes silent after the restart
        with Server(example("watchdog.lua"), "--state-dir", state, env=self.ENV) as srv:
            self.assertTrue(srv.wait_log(r"watchdog: plc@site.example silent", timeout=4), srv.log())


class AlarmOutbox(unittest.TestCase):
    """examples/alarm_outbox.lua: the picture written, the webhook called,
    and the MQTT event kept through a broker outage and a kill -9."""

    def test_nothing_lost_while_the_broker_is_away(self):
        web = WebService()
        snapshots = tmp_path("alarm-snapshots")
        os.makedirs(snapshots, exist_ok=True)
        state = tmp_path("alarm-state")
        mqtt_port = free_port()
        jpeg = b"\xff\xd8\xff\xe0" + os.urandom(30000) + b"\xff\xd9"
        msg = MIMEMultipart()
        msg["Subject"] = "Alarm zone 2"
        msg["From"] = "cam2@site.example"
        msg.attach(MIMEText("motion in zone 2"))
        msg.attach(MIMEImage(jpeg, "jpeg", name="snap.jpg"))
        env = dict(MQTT_PORT=str(mqtt_port), WEBHOOK_URL=web.url + "/ok", SNAPSHOTS=snapshots)
        args = (example("alarm_outbox.lua"), "--state-dir", state, "--queue-retry", "1,2")
        try:
            with Server(*args, env=env) as srv:        # no broker yet
                with smtplib.SMTP(srv.host, srv.port) as s:
                    s.ehlo()
                    s.mail("cam2@site.example")
                    s.rcpt("ops@site.example")
                    code, reply = s.data(msg.as_bytes())
                self.assertEqual(code, 250)
                self.assertRegex(reply, rb"^2\.0\.0 Ok: queued as \S+$")
                mail_id = srv.wait_log(r"message (\S+) from=").group(1)
                self.assertTrue(srv.wait_log(r"job \S+ http delivered"), srv.log())
                self.assertTrue(srv.wait_log(r"job \S+ deferred"), srv.log())
                srv.stop(sig=9)
            files = os.listdir(snapshots)
            self.assertEqual(files, [mail_id + "-1.jpg"])
            with open(os.path.join(snapshots, files[0]), "rb") as f:
                self.assertEqual(f.read(), jpeg)
            method, path, headers, body = web.requests[-1]
            self.assertEqual((method, path, headers["Content-Type"]), ("POST", "/ok", "application/json"))
            self.assertIn("Luasmtpd-Job", headers)
            event = json.loads(body)
            self.assertEqual((event["id"], event["mail"]["subject"]), (mail_id, "Alarm zone 2"))
            broker = Broker(port=mqtt_port)
            try:
                sub = broker.subscribe("luasmtpd/+/alarm", 1)
                with Server(*args, env=env) as srv:
                    got = sub.result()
                    self.assertEqual(len(got), 1, srv.log())
                    self.assertEqual(got[0][0], "luasmtpd/cam2/alarm")
                    self.assertEqual(json.loads(got[0][1]), event)
                    self.assertTrue(srv.wait_log(r"job \S+ mqtt delivered"), srv.log())
            finally:
                broker.stop()
        finally:
            web.shutdown()
