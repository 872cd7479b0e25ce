"""Scripts and clients that try to take the server down (docs/security.md).
Each case ends with an ordinary transaction that must succeed on the same
server."""
import os
import resource
import selectors
import socket
import threading
import time

from harness import Server, ServerTest, free_port, tmp_path

# Keeps every message it is given: the Lua state fills up to --lua-memory.
HOARDER = r"""
keep = {}
function on_mail(mail) keep[#keep + 1] = mail.raw end
"""

# Each recipient is an escape from the time budget that is closed now.
ESCAPES = r"""
function on_rcpt(addr)
  if addr:find("^rep@") then return 250, "rep " .. #string.rep("", 1e15) end
  if addr:find("^bigrep@") then return 250, #("x"):rep(1e8) end
  if addr:find("^sethook@") then
    -- a script-made coroutine that takes the budget's hook off itself
    local co = coroutine.create(function() debug.sethook(); while true do end end)
    assert(coroutine.resume(co))
  end
  if addr:find("^debug@") then return 250, "debug " .. type(debug.getinfo) end
end
"""

# Hooks stuck where the time budget cannot reach: in one C call, or in a
# finalizer (Lua runs those with hooks off).
STUCK = r"""
function on_mail(mail)
  if mail.subject == "backtrack" then
    local s = ("a"):rep(5000)
    s:find(("a-"):rep(12) .. "b")     -- minutes in one string.find
  elseif #mail.subject > 10000 then
    local trimmed = mail.subject:match("^%s*(.-)%s*$")   -- quadratic: the trim idiom
  elseif mail.subject == "gc" then
    setmetatable({}, { __gc = function() while true do end end })
    collectgarbage()
  end
end
"""

DIRECTORY = r"""
function on_auth(user, password) return user == "cam" and password == "s3cret" end
"""

# holdN@: take N MB, then wait with it.
HOLDER = r"""
local luasmtpd = require "luasmtpd"
function on_rcpt(addr)
  local mb = tonumber(addr:match("^hold(%d+)@"))
  if mb then
    local t = {}
    for i = 1, mb do t[i] = ("x"):rep(1 << 20) end
    luasmtpd.sleep(1.5)
    return 250, "held " .. #t
  end
end
"""

CHARSETS = r"""
local luasmtpd = require "luasmtpd"
function on_mail(mail) luasmtpd.log("text", #(mail.text or "")) end
"""


def script(name, text):
    path = tmp_path(name)
    with open(path, "w") as f:
        f.write(text)
    return path


def message(body, headers=b"Subject: t\r\n"):
    return headers + b"\r\n" + body


class MemoryCap(ServerTest):
    """A hook that fails at the --lua-memory cap used to abort the process
    (its traceback was made outside any protected call)."""
    ARGS = (script("hoarder.lua", HOARDER), "--lua-memory", "8M", "--max-size", "2M")

    def test_errors_at_the_cap_answer_451_and_the_server_stays(self):
        size, refused, sent = 1 << 20, 0, 0
        c = self.session()
        while size >= 256 and sent < 400:
            reply = self.transaction(c, body=message(b"x" * (size - 2) + b"\r\n"))
            sent += 1
            self.assertIn(reply[0], (250, 451), reply)
            if reply[0] == 451:
                refused += 1
                size //= 2
        self.assertGreater(refused, 5)
        self.assertIsNone(self.srv.proc.poll(), "the server died:\n" + self.srv.log()[-3000:])
        self.assertTrue(self.srv.wait_log(r"on_mail: .*not enough memory"))
        # a new session is served; the state is full, so its message gets 451
        c = self.session()
        self.assertIn(self.transaction(c)[0], (250, 451))


class Pipelining(ServerTest):
    """A batch whose replies pass the output backlog cap used to be left
    partly unanswered until the client sent more."""
    ARGS = ("--max-junk-commands", "0")

    def test_every_command_of_a_large_batch_is_answered(self):
        c = self.session()
        n = 8190
        c.send(b"NOOP\r\n" * n)
        got, deadline = 0, time.monotonic() + 20
        while got < n and time.monotonic() < deadline:
            got += 1 if c.reply(timeout=5)[0] == 250 else 0
        self.assertEqual(got, n)
        self.assertReply(self.transaction(c), 250)


class Charsets(ServerTest):
    """Text that grows past 2.5x when decoded used to be refused with 451
    on every try ("cannot start: out of memory")."""
    ARGS = (script("charsets.lua", CHARSETS),)

    def test_text_that_grows_when_decoded_is_accepted(self):
        ja = "日本語の文章です。".encode() * 82        # 2,214 bytes of UTF-8
        cases = [("iso-2022-jp", ja + b"\r\n"), ("euc-jp", b"\xff" * 1000 + b"\r\n")]
        c = self.session()
        for charset, body in cases:
            headers = b"Subject: t\r\nContent-Type: text/plain; charset=%s\r\n" % charset.encode()
            self.assertReply(self.transaction(c, body=message(body, headers)), 250)
        # each invalid byte became a 3-byte U+FFFD, and the line ends in LF
        self.assertTrue(self.srv.wait_log(r"script: text 3001\b"))
        self.assertEqual(self.srv.count_log(r"out of memory"), 0)


class MailTableTooLarge(ServerTest):
    """A mail table that does not fit in --lua-memory used to leave its C
    memory (MIME tree, decode buffer) to Lua's collector, which never knew
    of it: RSS grew by megabytes per refused message."""
    ARGS = (script("charsets.lua", CHARSETS), "--lua-memory", "12M", "--max-size", "20M")

    def setUp(self):
        # ASan's quarantine would hold the freed memory too: RSS says nothing
        old = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = (old + ":" if old else "") + "quarantine_size_mb=0"
        try:
            super().setUp()
        finally:
            if old is None:
                del os.environ["ASAN_OPTIONS"]
            else:
                os.environ["ASAN_OPTIONS"] = old

    def test_refused_tables_leave_no_memory_behind(self):
        body = (b"y" * 998 + b"\r\n") * 8000      # 8 MB of text
        c = self.session()
        self.assertReply(self.transaction(c, body=message(body)), 451)
        before = self.srv.rss_kb()
        for _ in range(8):
            self.assertReply(self.transaction(c, body=message(body)), 451)
        grown = self.srv.rss_kb() - before
        self.assertLess(grown, 48 * 1024, "RSS grew by %d kB over 8 refused messages" % grown)
        self.assertReply(self.transaction(c), 250)


class BudgetEscapes(ServerTest):
    """Ways out of the time budget that used to stall the whole loop."""
    ARGS = (script("escapes.lua", ESCAPES), "--hook-timeout", "0.5")

    def test_closed_escapes_answer_and_the_server_goes_on(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        self.assertReply(c.cmd("RCPT TO:<rep@example.com>"), 250, "rep 0")
        self.assertReply(c.cmd("RCPT TO:<bigrep@example.com>"), 451)
        self.assertTrue(self.srv.wait_log(r"on_rcpt: not enough memory"))
        self.assertReply(c.cmd("RCPT TO:<sethook@example.com>"), 451)
        self.assertTrue(self.srv.wait_log(r"on_rcpt: .*attempt to call a nil value \(field 'sethook'\)"))
        self.assertReply(c.cmd("RCPT TO:<debug@example.com>"), 250, "debug nil")
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(self.transaction(c), 250)


class LuaDebug(ServerTest):
    ARGS = (script("escapes.lua", ESCAPES), "--lua-debug")

    def test_the_whole_debug_library_on_request(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        self.assertReply(c.cmd("RCPT TO:<debug@example.com>"), 250, "debug function")


class Watchdog(ServerTest):
    """A hook stuck in a C function held the whole event loop for good."""
    WORKERS = ()

    def setUp(self):
        self.srv = Server(script("stuck.lua", STUCK), "--hook-timeout", "0.2", "--hook-kill", "1",
                          *self.WORKERS, listen="127.0.0.1:%d" % free_port())

    def served(self, deadline):
        while time.monotonic() < deadline:
            try:
                c = self.session()
                return self.transaction(c)[0]
            except (OSError, EOFError, AssertionError):
                time.sleep(0.1)
        return None

    def restarted(self, n):
        """The process started again: nothing to wait for."""

    def test_stuck_hooks_cost_a_restart_and_nothing_more(self):
        pid = self.srv.proc.pid
        subjects = [b"backtrack", b"t" + b" " * 60000 + b"x", b"gc", b"backtrack"]
        for n, subject in enumerate(subjects, 1):
            c = self.session()
            self.start_message(c, body=message(b"x\r\n", b"Subject: " + subject + b"\r\n"))
            try:
                reply = c.reply(timeout=30)
            except (OSError, EOFError):
                reply = None       # dropped: the client will try again later
            self.assertIsNone(reply, "a stuck message was answered (%r...)" % subject[:20])
            # the log names the hook and the message; the same process serves again
            self.assertTrue(self.srv.wait_log(
                r"watchdog: the event loop has been held for \S+ \(--hook-kill\) by on_mail in "
                r"\S*stuck\.lua, session \w+, message \w+\.1", count=n, timeout=30))
            self.restarted(n)
            self.assertEqual(self.served(time.monotonic() + 10), 250)
        self.assertEqual(self.srv.proc.pid, pid)


class WatchdogWorkers(Watchdog):
    WORKERS = ("--workers", "2")

    def restarted(self, n):
        # until the stuck worker is gone, the kernel may still queue a
        # connection on its SO_REUSEPORT socket, and resets it when it exits
        self.assertTrue(self.srv.wait_log(r"worker \d \(pid \d+\) .*; restarting it", count=n,
                                          timeout=30))


class ConnectionBurst(ServerTest):
    """3,000 connections at once, as devices reconnecting after a network
    outage would come (the listen queue is as deep as the kernel allows:
    core/server.c): each is greeted, and the server goes on."""
    N = 3000
    ARGS = ("--max-clients", "5000", "--max-clients-per-ip", "0", "--connect-rate", "0")

    def test_every_connection_is_answered(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < self.N + 100:
            self.skipTest("open-file limit %d" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, self.N + 100), hard))
        sel = selectors.DefaultSelector()
        socks = []
        try:
            for _ in range(self.N):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.srv.port))
                socks.append(s)
                sel.register(s, selectors.EVENT_READ)
            answered, deadline = {}, time.monotonic() + 30
            while len(answered) < self.N and time.monotonic() < deadline:
                for key, _ in sel.select(0.5):
                    try:
                        data = key.fileobj.recv(512)
                    except OSError:
                        data = b""
                    sel.unregister(key.fileobj)
                    answered[key.fileobj] = data[:3]
            codes = list(answered.values())
            self.assertEqual(len(codes), self.N, "%d never answered" % (self.N - len(codes)))
            self.assertEqual(codes.count(b"220"), self.N, set(codes))
        finally:
            for s in socks:
                s.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        self.assertReply(self.transaction(self.session()), 250)


class JunkCommands(ServerTest):
    """One NOOP per --timeout used to hold a connection slot for good."""
    ARGS = ("--max-junk-commands", "20")

    def test_commands_that_move_no_mail_run_out(self):
        c = self.session()
        c.send(b"NOOP\r\n" * 40)
        codes = [c.reply()[0] for _ in range(31)]
        # 20 free, then each one an error: the 10th error (--max-errors) closes
        self.assertEqual(codes, [250] * 30 + [421])
        self.assertTrue(c.closed())
        self.assertTrue(self.srv.wait_log(r"30 commands that move no mail"))
        # a session that sends mail starts the count over after each message
        c = self.session()
        for _ in range(3):
            for _ in range(15):
                self.assertReply(c.cmd("NOOP"), 250)
            self.assertReply(self.transaction(c), 250)
        # inside a transaction they are not counted
        self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
        for _ in range(40):
            self.assertReply(c.cmd("NOOP"), 250)


class AuthRate(ServerTest):
    """900 password guesses used to take 0.1 s over 300 connections."""
    ARGS = (script("directory.lua", DIRECTORY), "--allow-insecure-auth", "--max-auth-rate", "5")

    def guess(self, c, password):
        from base64 import b64encode
        return c.cmd("AUTH PLAIN " + b64encode(b"\0cam\0" + password).decode())

    def test_guesses_over_many_connections_run_out(self):
        c = self.session()
        for _ in range(2):
            self.assertReply(self.guess(c, b"guess"), 535)
        self.assertEqual(self.guess(c, b"guess")[0], 535)   # the third closes
        c = self.session()
        self.assertReply(self.guess(c, b"guess"), 535)
        self.assertReply(self.guess(c, b"guess"), 535)      # five from this address
        self.assertReply(self.guess(c, b"s3cret"), 421, "Too many failed authentications")
        self.assertTrue(self.srv.wait_log(r"AUTH refused: 5 failures from 127\.0\.0\.1"))
        # mail without AUTH still goes
        c = self.session()
        self.assertReply(self.transaction(c), 250)


class MemoryAfterBurst(ServerTest):
    """After a burst of large messages mimalloc kept what the burst had
    used (and Lua its garbage): RSS stayed at its peak for good."""
    ARGS = (script("charsets.lua", CHARSETS), "--max-size", "20M", "--lua-memory", "1G")

    def test_rss_comes_back_after_a_burst(self):
        with open("/proc/%d/maps" % self.srv.proc.pid) as f:
            if "libasan" in f.read():
                self.skipTest("the ASan build keeps ASan's allocator, which holds memory itself")
        before = self.srv.rss_kb()
        body = message((b"y" * 998 + b"\r\n") * 5000)      # 5 MB
        errors = []

        def send():
            try:
                c = self.session()
                for _ in range(6):
                    self.assertReply(self.transaction(c, body=body), 250)
            except Exception as e:                         # reported below
                errors.append(e)

        threads = [threading.Thread(target=send) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        peak = self.srv.rss_kb()
        deadline = time.monotonic() + 5
        while self.srv.rss_kb() > before + 32 * 1024 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertLess(self.srv.rss_kb(), before + 32 * 1024,
                        "RSS %d kB before, %d at the peak" % (before, peak))


class MemoryPerCall(ServerTest):
    """A hook that held much while it waited made other sessions' hooks
    fail with 451: one Lua memory budget for all."""
    ARGS = (script("holder.lua", HOLDER), "--lua-memory", "48M", "--hook-memory", "24M",
            "--hook-timeout", "5")

    def test_the_call_past_its_share_fails_not_its_neighbour(self):
        results = {}

        def hold(name, mb, delay):
            time.sleep(delay)
            c = self.session()
            self.assertReply(c.cmd("MAIL FROM:<a@example.com>"), 250)
            results[name] = c.cmd("RCPT TO:<hold%d@example.com>" % mb)[0]

        threads = [threading.Thread(target=hold, args=("greedy", 30, 0)),
                   threading.Thread(target=hold, args=("neighbour", 20, 0.5))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(results, {"greedy": 451, "neighbour": 250})
        self.assertTrue(self.srv.wait_log(r"on_rcpt: not enough memory"))
