"""DATA: dot-unstuffing, the one end of data, smuggling, sizes, NUL bytes."""
import socket
import time

from harness import ServerTest


class Data(ServerTest):
    ARGS = ("--max-size", "4096")

    def message_size(self, count=1):
        m = self.srv.wait_log(r"message \S+ from=.* size=(\d+)", count=count)
        self.assertTrue(m, self.srv.log())
        return int(m.group(1))

    def test_dot_unstuffing(self):
        c = self.session()
        self.assertReply(self.transaction(c, body=b"a\r\n..b\r\n...\r\n"), 250)
        self.assertEqual(self.message_size(), len(b"a\r\n.b\r\n..\r\n"))

    def test_empty_message(self):
        c = self.session()
        self.assertReply(self.transaction(c, body=b""), 250)
        self.assertEqual(self.message_size(), 0)

    def test_smuggling_sequences_do_not_end_data(self):
        # Each would end the message on a lax server, and the rest would run
        # as a second, smuggled transaction.
        smuggled = b"MAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\nDATA\r\nsmuggled\r\n"
        for i, seq in enumerate((b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r")):
            c = self.session()
            self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
            self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)
            self.assertReply(c.cmd("DATA"), 354)
            c.send(b"Subject: s\r\n\r\nbody" + seq + smuggled + b".\r\n")
            code, text = c.reply()
            self.assertEqual(code, 250, "sequence %r" % seq)
            self.assertReply(c.cmd("NOOP"), 250)  # nothing else was answered
            c.close()
            self.assertTrue(self.srv.wait_log(r"message .* from=<a@b\.c>", count=i + 1))
        self.assertEqual(self.srv.count_log(r"evil@x\.y"), 0)
        self.assertEqual(self.srv.count_log(r"message .* from="), 6)

    def test_nul_bytes_kept(self):
        c = self.session()
        body = b"Subject: nul\r\n\r\na\x00b\x00\r\n"
        self.assertReply(self.transaction(c, body=body), 250)
        self.assertEqual(self.message_size(), len(body))

    def test_long_text_lines_accepted_whole(self):
        # The documented rule: lines past 1000 octets are kept as they are.
        c = self.session()
        body = b"Subject: long\r\n\r\n" + b"x" * 3000 + b"\r\n"
        self.assertReply(self.transaction(c, body=body), 250)
        self.assertEqual(self.message_size(), len(body))

    def test_over_max_size(self):
        c = self.session()
        body = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100  # 7.2 KB > 4096
        self.assertReply(self.transaction(c, body=body), 552, "5.3.4")
        self.assertTrue(self.srv.wait_log(r"refused: \d+ bytes over --max-size"))
        # The session is still usable.
        self.assertReply(self.transaction(c, body=b"small\r\n"), 250)
        self.assertEqual(self.message_size(), 7)

    def test_exactly_max_size(self):
        c = self.session()
        body = b"z" * 4094 + b"\r\n"
        self.assertReply(self.transaction(c, body=body), 250)
        self.assertEqual(self.message_size(), 4096)
        body = b"z" * 4095 + b"\r\n"
        self.assertReply(self.transaction(c, body=body), 552)

    def test_8bit_and_bare_lf_kept(self):
        c = self.session()
        body = "Subject: ü\r\n\r\nGrüße\nbare lf\rbare cr\r\n".encode()
        self.assertReply(self.transaction(c, body=body), 250)
        self.assertEqual(self.message_size(), len(body))

    def test_data_in_tiny_pieces(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = b"a\r\n..b\r\n.\r\n"
        for b in payload:
            c.send(bytes([b]))
            time.sleep(0.005)
        self.assertReply(c.reply(), 250)
        self.assertEqual(self.message_size(), len(b"a\r\n.b\r\n"))

    def test_client_vanishes_mid_data(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b"Subject: half\r\n\r\npart of a mess")
        c.close()
        self.assertTrue(self.srv.wait_log(r"connection lost in DATA after \d+ bytes"))
        self.assertEqual(self.srv.count_log(r"message .* from="), 0)
        c = self.session()
        self.assertReply(self.transaction(c), 250)
