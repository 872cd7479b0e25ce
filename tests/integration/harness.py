"""Start build/luasmtpd on 127.0.0.1 and talk to it.

Server: the binary on a kernel-chosen port, its log collected from stderr.
Client: a raw socket client for the cases real SMTP libraries refuse to send.
"""
import atexit
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

BINARY = os.environ.get("LUASMTPD_BIN", "build/luasmtpd")

# Files the tests write go into a directory of this run's own, never to a
# fixed path that another run could be using.
TMPDIR = tempfile.mkdtemp(prefix="luasmtpd-test-")
atexit.register(shutil.rmtree, TMPDIR, True)


def tmp_path(name):
    return os.path.join(TMPDIR, name)


class Server:
    def __init__(self, *args, listen="127.0.0.1:0", log_level="debug", preexec_fn=None, env=None):
        cmd = [BINARY, "--log-level", log_level]
        if listen:
            cmd += ["--listen", listen]
        cmd += list(args)
        self.cmd = cmd
        # env: variables added to ours; without --state-dir, a state
        # directory of this server's own
        env = dict(os.environ, STATE_DIRECTORY=tempfile.mkdtemp(prefix="state-", dir=TMPDIR), **(env or {}))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=preexec_fn, env=env)
        self.lines = []
        self.out = []         # stdout: what scripts print (the default's events)
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, args=(self.proc.stderr, self.lines),
                                       daemon=True)
        self.reader.start()
        self.out_reader = threading.Thread(target=self._read, args=(self.proc.stdout, self.out),
                                           daemon=True)
        self.out_reader.start()
        if not self.wait_log(r"ready as ", timeout=10):
            self.stop()
            raise RuntimeError("server did not start: " + self.log())
        self.host = "127.0.0.1"
        # the first plaintext and the first implicit-TLS listener
        self.port = self.tls_port = None
        for m in re.finditer(r"listening on \S+:(\d+)( \(implicit TLS\))?", self.log()):
            if m.group(2) and self.tls_port is None:
                self.tls_port = int(m.group(1))
            elif not m.group(2) and self.port is None:
                self.port = int(m.group(1))

    def _read(self, stream, lines):
        for raw in stream:
            with self.lock:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def log(self):
        with self.lock:
            return "\n".join(self.lines)

    def wait_log(self, pattern, timeout=5.0, count=1, stdout=False):
        """Wait until `pattern` has matched `count` log lines (with stdout,
        lines the server printed); the last match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        lines = self.out if stdout else self.lines
        while True:
            with self.lock:
                found = [m for m in map(rx.search, lines) if m]
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self.reader.is_alive()):
                return None
            time.sleep(0.02)

    def count_log(self, pattern):
        rx = re.compile(pattern)
        with self.lock:
            return sum(1 for line in self.lines if rx.search(line))

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def client(self, tls=None, **kw):
        """A raw client; with tls (an SSLContext), on the implicit-TLS port."""
        return Client(self.tls_port if tls else self.port, tls=tls, **kw)

    def stop(self, sig=15, timeout=10):
        """Stop the server; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        self.out_reader.join(timeout=5)
        return self.proc.returncode

    def stdout(self):
        with self.lock:
            return "\n".join(self.out)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Client:
    """SMTP over a raw socket: send exact bytes, read replies."""

    def __init__(self, port, host="127.0.0.1", greet=True, timeout=5.0, tls=None):
        """tls: an ssl.SSLContext for implicit TLS."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock)
        self.timeout = timeout
        self.buf = b""
        if greet:
            self.greeting = self.reply()

    def starttls(self, ctx):
        """Start TLS on the connection (after a 220 to STARTTLS); bytes read
        but not yet consumed are a failure of the test."""
        assert self.buf == b"", "plaintext left unread: %r" % self.buf
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed; pending: %r" % self.buf)
        self.buf += chunk

    def line(self, timeout=None):
        while b"\r\n" not in self.buf:
            self._fill(timeout or self.timeout)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self, timeout=None):
        """(code, [text lines]) of one whole reply, multi-line included."""
        lines = []
        while True:
            line = self.line(timeout)
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()

    def closed(self, timeout=None):
        """True when the server closes the connection (after any pending bytes)."""
        try:
            while True:
                self._fill(timeout or self.timeout)
        except EOFError:
            return True
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ServerTest(unittest.TestCase):
    """A test case with one server per test; ARGS are its flags."""
    ARGS = ()

    def setUp(self):
        self.srv = Server(*self.ARGS)

    def tearDown(self):
        rc = self.srv.stop()
        log = self.srv.log()
        # A sanitizer report (LeakSanitizer's at exit too) or a crash is a
        # failure of whatever test ran.
        self.assertNotIn("ERROR: AddressSanitizer", log)
        self.assertNotIn("ERROR: LeakSanitizer", log)
        self.assertNotIn("runtime error:", log)
        self.assertEqual(rc, 0, "server exit status %s\n%s" % (rc, log[-3000:]))

    def session(self, helo="EHLO client.test"):
        c = self.srv.client()
        self.assertEqual(c.greeting[0], 220)
        if helo:
            self.assertEqual(c.cmd(helo)[0], 250)
        return c

    def assertReply(self, reply, code, contains=None):
        self.assertEqual(reply[0], code, "reply %r" % (reply,))
        if contains is not None:
            self.assertIn(contains, " ".join(reply[1]), "reply %r" % (reply,))

    def start_message(self, c, body=b"Subject: t\r\n\r\nhello\r\n", sender="a@example.com",
                      rcpts=("b@example.com",)):
        """Send a whole transaction but do not wait for the final reply
        (while a hook waits, say)."""
        self.assertReply(c.cmd("MAIL FROM:<%s>" % sender), 250)
        for r in rcpts:
            self.assertReply(c.cmd("RCPT TO:<%s>" % r), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(body + b".\r\n")

    def transaction(self, c, *args, **kw):
        """A whole transaction; the final reply."""
        self.start_message(c, *args, **kw)
        return c.reply()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto broker on a free local port (the Debian package); with
    tls=(certfile, keyfile), also a TLS listener on tls_port; with
    login=(user, password), only that user may connect."""

    def __init__(self, port=None, tls=None, login=None):
        self.port = port or free_port()
        self.conf = tempfile.NamedTemporaryFile("w", prefix="luasmtpd-mosquitto-", suffix=".conf")
        self.passwd = None
        if login:
            self.passwd = tempfile.NamedTemporaryFile("w", prefix="luasmtpd-mosquitto-", suffix=".pw")
            subprocess.run(["mosquitto_passwd", "-b", self.passwd.name, *login], check=True,
                           capture_output=True)
            self.conf.write("password_file %s\n" % self.passwd.name)
        self.conf.write("user root\nallow_anonymous %s\nlistener %d 127.0.0.1\n"
                        % ("false" if login else "true", self.port))
        self.tls_port = None
        if tls:
            self.tls_port = free_port()
            self.conf.write("listener %d 127.0.0.1\ncertfile %s\nkeyfile %s\n"
                            % (self.tls_port, tls[0], tls[1]))
        self.conf.flush()
        self.proc = subprocess.Popen(["mosquitto", "-c", self.conf.name], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                for port in (self.port, self.tls_port or self.port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def subscribe(self, topic, count, timeout=10):
        """Start mosquitto_sub for `count` messages; .result() gives
        [(topic, payload)] once they came (or the timeout passed)."""
        return Subscription(self.port, topic, count, timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.conf.close()
        if self.passwd:
            self.passwd.close()


class Subscription:
    """mosquitto_sub, known to be subscribed: a probe message published
    until it comes back."""

    def __init__(self, port, topic, count, timeout):
        probe = "luasmtpd-test-probe/%d" % os.getpid()
        self.count, self.timeout = count, timeout
        self.proc = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-t", topic, "-t", probe,
                                      "-v", "-q", "1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 5
        while not self.lines and time.monotonic() < deadline:
            subprocess.run(["mosquitto_pub", "-p", str(port), "-t", probe, "-m", "probe"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.1)

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def messages(self):
        return [tuple(line.split(" ", 1)) for line in list(self.lines)
                if not line.startswith("luasmtpd-test-probe/")]

    def result(self):
        """[(topic, payload)] once `count` came, or the timeout passed."""
        deadline = time.monotonic() + self.timeout
        while len(self.messages()) < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)           # anything more than expected shows too
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self.reader.join(timeout=5)
        return self.messages()
