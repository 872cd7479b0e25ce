"""Connections: timeouts, --max-clients, many clients at once, stopping."""
import signal
import socket
import threading
import time

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
