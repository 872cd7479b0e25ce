"""Per-session limits: line length, recipients, messages, errors."""
from harness import ServerTest


class LineLength(ServerTest):
    def test_command_line_limit(self):
        c = self.session()
        line = "NOOP " + "x" * (512 - 7)  # 510 + CRLF = 512: allowed
        self.assertReply(c.cmd(line), 250)
        self.assertReply(c.cmd(line + "x"), 500, "5.5.6")
        self.assertReply(c.cmd("NOOP"), 250)

    def test_64k_command_line(self):
        c = self.session()
        c.send(b"MAIL FROM:<" + b"a" * 65536 + b"@b.c>\r\nNOOP\r\n")
        self.assertReply(c.reply(), 500, "5.5.6")
        self.assertReply(c.reply(), 250)
        self.assertEqual(self.transaction(c)[0], 250)

    def test_huge_line_without_end_does_not_grow_memory(self):
        c = self.session()
        chunk = b"A" * 65536
        for _ in range(64):  # 4 MiB with no line end
            c.send(chunk)
        c.send(b"\r\nNOOP\r\n")
        self.assertReply(c.reply(timeout=10), 500, "5.5.6")
        self.assertReply(c.reply(), 250)


class Recipients(ServerTest):
    ARGS = ("--max-recipients", "3")

    def test_max_recipients(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        for i in range(3):
            self.assertReply(c.cmd("RCPT TO:<r%d@e.f>" % i), 250)
        self.assertReply(c.cmd("RCPT TO:<r4@e.f>"), 452, "4.5.3")
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b"x\r\n.\r\n")
        self.assertReply(c.reply(), 250)


class ManyRecipients(ServerTest):
    def test_ten_thousand_rcpt(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        c.send(b"".join(b"RCPT TO:<r%d@e.f>\r\n" % i for i in range(10000)))
        codes = [c.reply(timeout=20)[0] for _ in range(10000)]
        self.assertEqual(codes.count(250), 100)
        self.assertEqual(codes.count(452), 9900)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b"x\r\n.\r\n")
        self.assertReply(c.reply(), 250)


class Messages(ServerTest):
    ARGS = ("--max-messages", "2")

    def test_max_messages(self):
        c = self.session()
        self.assertReply(self.transaction(c), 250)
        self.assertReply(self.transaction(c), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 421, "4.7.0")
        self.assertTrue(c.closed())


class Errors(ServerTest):
    ARGS = ("--max-errors", "3")

    def test_max_errors(self):
        c = self.session()
        self.assertReply(c.cmd("BAD1"), 500)
        self.assertReply(c.cmd("MAIL FROM:bad"), 501)
        code, _ = c.cmd("BAD3")
        self.assertEqual(code, 500)
        self.assertReply(c.reply(), 421, "Too many errors")
        self.assertTrue(c.closed())

    def test_good_commands_do_not_count(self):
        c = self.session()
        for _ in range(2):
            self.assertReply(c.cmd("BAD"), 500)
            self.assertReply(c.cmd("NOOP"), 250)
        self.assertReply(self.transaction(c), 250)
