"""PIPELINING (RFC 2920): replies in order, batched, nothing lost."""
import socket
import time

from harness import ServerTest


class Pipelining(ServerTest):
    ARGS = ("--max-junk-commands", "0")   # its NOOPs are the point
    def test_whole_transaction_in_one_write(self):
        c = self.session()
        c.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<bad>\r\nRCPT TO:<g@h.i>\r\nDATA\r\n"
               b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        codes = [c.reply()[0] for _ in range(8)]
        self.assertEqual(codes, [250, 250, 501, 250, 354, 250, 250, 221])
        self.assertTrue(c.closed())
        m = self.srv.wait_log(r"message .* to=<d@e\.f>,\.\.\. size=(\d+)")
        self.assertEqual(int(m.group(1)), len(b"Subject: p\r\n\r\nbody\r\n"))

    def test_replies_are_batched(self):
        # 50 pipelined commands are answered in one write, not fifty.
        c = self.session()
        c.send(b"NOOP\r\n" * 50)
        time.sleep(0.3)
        c.sock.settimeout(2)
        first = c.sock.recv(65536)
        self.assertEqual(first.count(b"\r\n"), 50, first)

    def test_many_transactions_back_to_back(self):
        c = self.session()
        one = b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nx\r\n.\r\n"
        c.send(one * 20)
        codes = [c.reply()[0] for _ in range(80)]
        self.assertEqual(codes, [250, 250, 354, 250] * 20)
        self.assertTrue(self.srv.wait_log(r"message ", count=20))

    def test_command_split_across_packets(self):
        c = self.srv.client()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in b"EHLO split.test\r\nMAIL FROM:<a@b.c>\r\n":
            c.send(bytes([b]))
            time.sleep(0.002)
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.reply()[0], 250)

    def test_client_not_reading_replies_is_bounded(self):
        # A client that sends forever and never reads: the server stops
        # reading too (back-pressure) instead of buffering without end.
        c = self.session()
        c.sock.setblocking(False)
        chunk = b"NOOP\r\n" * 10000
        sent, last_progress = 0, time.monotonic()
        while time.monotonic() - last_progress < 1.0:
            try:
                sent += c.sock.send(chunk)
                last_progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.05)
        rss_kb = self.srv.rss_kb()
        self.assertLess(sent, 32 * 1024 * 1024, "the server kept reading")
        self.assertLess(rss_kb, 40 * 1024, "server RSS %d KB" % rss_kb)
        c.close()
        d = self.session()
        self.assertReply(self.transaction(d), 250)
