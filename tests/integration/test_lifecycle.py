"""Connections: timeouts, --max-clients, many clients at once, stopping."""
import resource
import signal
import socket
import threading
import time
import unittest

from harness import Server, ServerTest


class IdleTimeout(ServerTest):
    ARGS = ("--timeout", "1")

    def test_idle_client_closed(self):
        c = self.session()
        t0 = time.monotonic()
        self.assertReply(c.reply(timeout=5), 421, "4.4.2")
        self.assertTrue(c.closed())
        self.assertLess(time.monotonic() - t0, 3)

    def test_trickling_client_closed(self):
        # One byte at a time, never a whole line: still a timeout.
        c = self.session()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.monotonic()
        closed = False
        for _ in range(40):
            try:
                c.send(b"N")
            except OSError:
                closed = True
                break
            c.sock.settimeout(0.25)
            try:
                data = c.sock.recv(1024)
                if not data or b"421" in data:
                    closed = True
                    break
            except socket.timeout:
                pass
        self.assertTrue(closed, "trickling client was not closed")
        self.assertLess(time.monotonic() - t0, 4)

    def test_timeout_in_data_discards_message(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<d@e.f>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b"half a line")
        self.assertReply(c.reply(timeout=5), 421, "4.4.2")
        self.assertTrue(self.srv.wait_log(r"timeout exceeded in DATA after \d+ bytes"))

    def test_active_client_not_closed(self):
        c = self.session()
        for _ in range(6):
            time.sleep(0.4)
            self.assertReply(c.cmd("NOOP"), 250)


class HalfClose(ServerTest):
    ARGS = ("--max-junk-commands", "0")   # its NOOPs are the point
    def test_everything_sent_before_eof_is_answered(self):
        # As `printf ... | nc` does: send it all, shut down the sending side,
        # then read the replies.
        c = self.srv.client(greet=False)
        c.send(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        codes = [c.reply()[0] for _ in range(6)]
        self.assertEqual(codes, [220, 250, 250, 250, 354, 250])
        self.assertEqual(c.reply()[0], 221)
        self.assertTrue(c.closed())

    def test_eof_behind_a_backlog_loses_nothing(self):
        # Pipelined NOOPs then EOF, from a client slow to read: when the EOF
        # arrives, replies are still queued behind a full socket; they must
        # all go out before the close.
        c = self.session()
        n = 200000
        sender = threading.Thread(target=lambda: (c.send(b"NOOP\r\n" * n), c.sock.shutdown(socket.SHUT_WR)))
        sender.start()
        time.sleep(1)
        got = 0
        try:
            while got < n:
                self.assertEqual(c.reply(timeout=10)[0], 250)
                got += 1
        finally:
            sender.join(10)
        self.assertTrue(c.closed())

    def test_eof_mid_data_discards(self):
        c = self.session()
        c.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nunfinished\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
        self.assertTrue(c.closed())
        self.assertTrue(self.srv.wait_log(r"connection lost in DATA after 12 bytes"))
        self.assertEqual(self.srv.count_log(r"message \S+ from="), 0)


class OutOfDescriptors(unittest.TestCase):
    def test_accept_pauses_and_recovers(self):
        # With 16 descriptors the server runs out long before --max-clients:
        # it must pause accepting (not spin or die) and serve again later.
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
        srv = Server(preexec_fn=limit)
        try:
            clients = []
            for _ in range(20):
                try:
                    clients.append(socket.create_connection(("127.0.0.1", srv.port), timeout=2))
                except OSError:
                    break
            self.assertTrue(srv.wait_log(r"accept: Too many open files; pausing"))
            for c in clients:
                c.close()
            time.sleep(1.5)
            c = srv.client()
            self.assertEqual(c.greeting[0], 220)
            self.assertEqual(c.cmd("EHLO x")[0], 250)
            c.close()
        finally:
            self.assertEqual(srv.stop(), 0)


class SessionTimeout(ServerTest):
    ARGS = ("--session-timeout", "1")

    def test_whole_session_limit(self):
        c = self.session()
        t0 = time.monotonic()
        while True:
            code, _ = c.cmd("NOOP")
            if code != 250:
                break
            self.assertLess(time.monotonic() - t0, 4)
            time.sleep(0.1)
        self.assertEqual(code, 421)
        self.assertTrue(c.closed())


class MaxClients(ServerTest):
    ARGS = ("--max-clients", "2")

    def test_over_the_limit_refused(self):
        a = self.session()
        b = self.session()
        c = self.srv.client(greet=False)
        self.assertReply(c.reply(), 421, "4.7.0")
        self.assertTrue(c.closed())
        self.assertTrue(self.srv.wait_log(r"refused .*--max-clients"))
        a.cmd("QUIT")
        a.closed()
        self.assertTrue(self.srv.wait_log(r"disconnect from"))
        d = self.session()
        self.assertReply(self.transaction(d), 250)
        self.assertReply(self.transaction(b), 250)


class Concurrency(ServerTest):
    ARGS = ("--max-clients", "300", "--log-level", "info")

    def test_200_concurrent_sessions(self):
        clients = [self.srv.client() for _ in range(200)]
        for c in clients:
            self.assertEqual(c.greeting[0], 220)
        results = []

        def run(c, i):
            try:
                c.cmd("EHLO c%d" % i)
                c.send(b"MAIL FROM:<s%d@x.y>\r\nRCPT TO:<r@x.y>\r\nDATA\r\n" % i)
                codes = [c.reply()[0] for _ in range(3)]
                c.send(b"Subject: %d\r\n\r\nbody\r\n.\r\n" % i)
                codes.append(c.reply()[0])
                codes.append(c.cmd("QUIT")[0])
                results.append(codes)
            except Exception as e:  # noqa: BLE001 - reported below
                results.append(repr(e))

        threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(results), 200)
        self.assertTrue(all(r == [250, 250, 354, 250, 221] for r in results),
                        [r for r in results if r != [250, 250, 354, 250, 221]][:3])
        self.assertTrue(self.srv.wait_log(r"message ", count=200, timeout=10))


class Stopping(ServerTest):
    ARGS = ("--grace", "5")

    def tearDown(self):  # the tests stop the server themselves
        self.srv.stop()

    def test_sigterm_lets_message_finish(self):
        idle = self.session()
        busy = self.session()
        self.assertReply(busy.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(busy.cmd("RCPT TO:<d@e.f>"), 250)
        self.assertReply(busy.cmd("DATA"), 354)
        busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        self.srv.proc.send_signal(signal.SIGTERM)
        # The idle session is told at once, the listener is gone.
        self.assertReply(idle.reply(), 421, "4.3.2")
        self.assertTrue(idle.closed())
        self.assertTrue(self.srv.wait_log(r"stopping: 2 connection"))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.srv.port), timeout=1)
        # The message in progress completes and is acknowledged.
        busy.send(b"second half\r\n.\r\n")
        self.assertReply(busy.reply(), 250)
        self.assertReply(busy.reply(), 421, "4.3.2")
        self.assertTrue(busy.closed())
        self.assertEqual(self.srv.proc.wait(timeout=5), 0)
        self.assertTrue(self.srv.wait_log(r"message \S+ from=<a@b\.c>"))

    def test_grace_period_bounds_the_wait(self):
        srv = Server("--grace", "1")
        try:
            c = srv.client()
            c.cmd("EHLO x")
            c.cmd("MAIL FROM:<a@b.c>")
            c.cmd("RCPT TO:<d@e.f>")
            self.assertEqual(c.cmd("DATA")[0], 354)
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            self.assertEqual(srv.proc.wait(timeout=5), 0)
            self.assertLess(time.monotonic() - t0, 3)
            self.assertTrue(srv.wait_log(r"grace period over"))
        finally:
            srv.stop()

    def test_sigint_with_no_clients(self):
        self.srv.proc.send_signal(signal.SIGINT)
        self.assertEqual(self.srv.proc.wait(timeout=5), 0)
        self.assertTrue(self.srv.wait_log(r"stopped"))
