"""RFC 5321 commands, their replies, order and syntax, with a raw client."""
from harness import ServerTest


class Protocol(ServerTest):
    ARGS = ("--max-errors", "100")

    def test_greeting_and_ehlo(self):
        c = self.srv.client()
        self.assertEqual(c.greeting[0], 220)
        self.assertIn("ESMTP luasmtpd", c.greeting[1][0])
        code, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        ext = [l.split()[0] for l in lines[1:]]
        for e in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            self.assertIn(e, ext)
        self.assertIn("SIZE 10485760", lines)
        self.assertNotIn("STARTTLS", ext)
        self.assertNotIn("AUTH", ext)

    def test_helo(self):
        c = self.srv.client()
        code, lines = c.cmd("HELO client.test")
        self.assertEqual(code, 250)
        self.assertEqual(len(lines), 1)
        self.assertEqual(self.transaction(c)[0], 250)

    def test_helo_needs_a_name(self):
        c = self.srv.client()
        self.assertReply(c.cmd("EHLO"), 501, "5.5.4")
        self.assertReply(c.cmd("HELO"), 501, "5.5.4")
        self.assertReply(c.cmd("EHLO a\x01b"), 501, "5.5.4")
        self.assertReply(c.cmd("EHLO ok.example"), 250)

    def test_simple_commands(self):
        c = self.session()
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertReply(c.cmd("NOOP with argument"), 250)
        self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        self.assertReply(c.cmd("VRFY someone@example.com"), 252, "2.0.0")
        self.assertReply(c.cmd("VRFY"), 501)
        self.assertReply(c.cmd("EXPN staff"), 502, "5.5.1")
        code, lines = c.cmd("HELP")
        self.assertEqual(code, 214)
        self.assertTrue(all(l.startswith("2.0.0") for l in lines))
        self.assertReply(c.cmd("QUIT"), 221, "2.0.0")
        self.assertTrue(c.closed())

    def test_unknown_and_unimplemented(self):
        c = self.session()
        self.assertReply(c.cmd("FOO"), 500, "5.5.1")
        self.assertReply(c.cmd(""), 500, "5.5.1")
        self.assertReply(c.cmd("STARTTLS"), 502, "5.5.1")
        self.assertReply(c.cmd("AUTH PLAIN"), 502, "5.5.1")
        self.assertReply(c.cmd("NOOP"), 250)

    def test_case_insensitive_verbs(self):
        c = self.srv.client()
        self.assertReply(c.cmd("ehlo x"), 250)
        self.assertReply(c.cmd("mail from:<a@b.c>"), 250)
        self.assertReply(c.cmd("rcpt to:<d@e.f>"), 250)
        self.assertReply(c.cmd("data"), 354)

    def test_sequence_errors(self):
        c = self.srv.client()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 503, "5.5.1")
        self.assertReply(c.cmd("RCPT TO:<a@b.c>"), 503, "5.5.1")
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        self.assertReply(c.cmd("EHLO x"), 250)
        self.assertReply(c.cmd("RCPT TO:<a@b.c>"), 503, "5.5.1")
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 503, "Nested")
        self.assertReply(c.cmd("DATA"), 503, "RCPT")
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)
        self.assertReply(c.cmd("DATA"), 354)

    def test_syntax_errors(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:a@b.c"), 501, "5.5.4")
        self.assertReply(c.cmd("MAIL TO:<a@b.c>"), 501, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c"), 501, "5.1.7")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> x=y=z"), 501, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<>"), 501, "5.1.3")
        self.assertReply(c.cmd("RCPT TO:d@e.f"), 501, "5.5.4")
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)
        self.assertReply(c.cmd("DATA now"), 501, "5.5.4")
        self.assertReply(c.cmd("RSET x"), 501)
        self.assertReply(c.cmd("QUIT now"), 501)
        self.assertReply(c.cmd("DATA"), 354)

    def test_path_junk_refused_session_goes_on(self):
        c = self.session()
        for junk in ("<;sleep 66;>", "<a@b.c>garbage", "<a b@c.d>", "<a@b.c> <x@y.z>",
                     "<`id`@x.y>x", "<@>", "<a@>", "<a@b..c>", "<a@[1.2.3]>"):
            code, _ = c.cmd("MAIL FROM:" + junk)
            self.assertIn(code, (501, 555), junk)
        c.send(b"MAIL FROM:<a\x00b@c.d>\r\n")
        self.assertReply(c.reply(), 501)
        c.send(b"MAIL FROM:<a\rb@c.d>\r\n")
        self.assertReply(c.reply(), 501)
        self.assertEqual(self.transaction(c)[0], 250)

    def test_null_sender_and_postmaster(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<>"), 250, "2.1.0")
        self.assertReply(c.cmd("RCPT TO:<Postmaster>"), 250, "2.1.5")
        self.assertReply(c.cmd("RCPT TO:<@relay.example:user@example.com>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b"x\r\n.\r\n")
        self.assertReply(c.reply(), 250)
        m = self.srv.wait_log(r"message \S+ from=<> to=<Postmaster>,\.\.\. size=3")
        self.assertTrue(m, self.srv.log())

    def test_esmtp_parameters(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME"), 250)
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> BODY=7BIT"), 250)
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> SIZE=99999999"), 552, "5.3.4")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> SIZE=abc"), 501, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> SIZE"), 501, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> BODY=BINARYMIME"), 250)   # RFC 3030, with BDAT
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> BODY=UUENCODE"), 555, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> FOO=bar"), 555, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> SIZE=1 SIZE=2"), 501, "Duplicate")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c> SMTPUTF8=yes"), 555)
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<d@e.f> NOTIFY=NEVER"), 250)     # DSN, RFC 3461
        self.assertReply(c.cmd("RCPT TO:<d@e.f> NOTIFY=NEVER,DELAY"), 501, "5.5.4")
        self.assertReply(c.cmd("RCPT TO:<d@e.f> XFORWARD=1"), 555, "5.5.4")
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)

    def test_smtputf8(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<jörg@bücher.de>"), 553, "5.6.7")
        self.assertReply(c.cmd("MAIL FROM:<jörg@bücher.de> SMTPUTF8"), 250)
        self.assertReply(c.cmd("RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>"), 250)
        c.cmd("RSET")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<δοκιμή@example.com>"), 553, "5.6.7")
        c.send(b"RCPT TO:<a\xff@example.com>\r\n")
        self.assertReply(c.reply(), 501)

    def test_ehlo_resets_transaction(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)
        self.assertReply(c.cmd("EHLO again"), 250)
        self.assertReply(c.cmd("DATA"), 503)
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)

    def test_rset_resets_transaction(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("DATA"), 503)
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 503)

    def test_several_messages_per_session(self):
        c = self.session()
        for i in range(5):
            self.assertReply(self.transaction(c, body=b"n: %d\r\n" % i), 250, "queued as")
        self.assertTrue(self.srv.wait_log(r"message .* size=6", count=5))

    def test_client_talks_before_greeting(self):
        c = self.srv.client(greet=False)
        c.send("EHLO early\r\nNOOP\r\n")
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)

    def test_log_lines(self):
        c = self.session()
        self.transaction(c)
        c.cmd("FOO")
        c.cmd("QUIT")
        c.closed()
        m = self.srv.wait_log(r"info \[([0-9A-F]+)\] connect from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+")
        self.assertTrue(m)
        sid = m.group(1)
        self.assertTrue(self.srv.wait_log(r"\[%s\] > 500 5\.5\.1" % sid))
        self.assertTrue(self.srv.wait_log(r"\[%s\] disconnect from 127\.0\.0\.1:\d+ messages=1" % sid))
