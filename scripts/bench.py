#!/usr/bin/env python3
"""luasmtpd beside Postfix's smtp-sink and the peers (make bench).

First the MIME extractor alone (build/bench_mime: plain, nested multipart,
14 MB base64).  Then each workload runs against smtp-sink (the ceiling: it
parses nothing) and against build/luasmtpd with scripts/bench.lua (a Lua
on_mail that reads the subject and sender, encodes HSYCO's JSON with cjson
and counts), in alternating rounds, and reports medians: messages/s, the
ratio to smtp-sink in the same rounds, server CPU per message (from /proc)
and peak RSS.  The count luasmtpd's script received is checked against
what was sent.  W1 runs again with scripts/bench_core.lua (no hook: the
engine and the kernel alone), with each --workers count of --workers-list
(default 1,2) and with the console read; W1's CPU is split into user and
system time, and the console's cost is the median of alternating pairs of
runs without and with it.  Then: peak RSS after 10,000 and
after 100,000 messages, RSS per idle connection (W4), and the peers
(aiosmtpd, nodemailer's smtp-server, Haraka; scripts/peers/) under the
same load.

W6: STARTTLS, one message a connection, from build/tls_load (TLS 1.3,
X25519), with and without resumption, beside openssl s_server (the floor:
the bare handshake) and the peers: connections/s, server CPU per
connection, RSS per idle TLS connection, and what SSL_MODE_RELEASE_BUFFERS
costs (--tls-keep-buffers).  Then the memory budget: 100 sessions of 10 MB
at once under --max-memory 256M.

The relay part: luasmtpd with scripts/bench_relay.lua (each mail queued
durably for a forward to smtp-sink) beside a throwaway Postfix instance
relaying to the same sink: throughput, CPU per message, the p99 latency of
the 250, and luasmtpd's queue() commit latency.  A benchmark, not a test:
nothing here passes or fails on timings.

  scripts/bench.py [--rounds N] [--quick] [--only mime|sink|tls|budget|relay]
                   [--workers-list 1,2,4,8] [--binary build/luasmtpd]
"""
import argparse
import asyncio
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(pid):
    """pid and its children (the workers of --workers)."""
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [pid] + [int(p) for p in f.read().split()]


def cpu_split(pid):
    """(user, system) seconds of pid and its children, those still running
    and those it has reaped (Postfix's master starts and ends its daemons)."""
    user = system = 0
    for p in processes(pid):
        with open("/proc/%d/stat" % p) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11]) + (int(fields[13]) if p == pid else 0)
        system += int(fields[12]) + (int(fields[14]) if p == pid else 0)
    return user / TICK, system / TICK


def cpu_seconds(pid):
    return sum(cpu_split(pid))


def rss_kb(pid, field="VmRSS"):
    """The sum over pid and its children."""
    total = 0
    for p in processes(pid):
        with open("/proc/%d/status" % p) as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def wait_port(port, proc):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("server did not listen on %d" % port)


class Sink:
    name = "smtp-sink"

    def __init__(self):
        self.port = free_port()
        # -u: the user it runs as when started by root; 1000: listen backlog
        self.proc = subprocess.Popen(["smtp-sink", "-u", "nobody", "127.0.0.1:%d" % self.port, "1000"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def received(self):
        return None                                      # smtp-sink keeps no count

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Luasmtpd:
    name = "luasmtpd"

    def __init__(self, binary, workers=1, console=False, extra=(), listen="--listen", script="bench.lua"):
        """console: with --http, and a reader of /api/events all along, as
        a browser on the console page would be; extra: more options;
        listen: --listen-tls for implicit TLS only; script: under scripts/
        (bench_core.lua has no hook and counts nothing)."""
        self.port = free_port()
        self.countdir = tempfile.mkdtemp(prefix="luasmtpd-bench-")
        env = dict(os.environ, BENCH_COUNT=os.path.join(self.countdir, "count"))
        http = free_port()
        cmd = [binary, listen, "127.0.0.1:%d" % self.port, "--log-level", "warn",
               "--max-clients", "5000", "--workers", str(workers),
               *(["--http", str(http)] if console else []), *extra,
               os.path.join(ROOT, "scripts", script)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        time.sleep(0.5 if workers > 1 else 0)   # every worker listening
        self.events = None
        if console:
            wait_port(http, self.proc)
            self.events = socket.create_connection(("127.0.0.1", http))
            self.events.sendall(b"GET /api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
            self.event_bytes = 0
            threading.Thread(target=self._read_events, daemon=True).start()

    def _read_events(self):
        try:
            while True:
                chunk = self.events.recv(1 << 16)
                if not chunk:
                    return
                self.event_bytes += len(chunk)
        except OSError:
            return

    def received(self):
        """The counts the script wrote, one file per process (each writes
        its own every 0.1 s); None while there is none (a script that keeps
        no count writes none)."""
        last, deadline = None, time.monotonic() + 5
        while time.monotonic() < deadline:
            names = os.listdir(self.countdir)
            if not names:
                return None
            n = 0
            for name in names:
                with open(os.path.join(self.countdir, name)) as f:
                    text = f.read().strip()
                n += int(text) if text else 0
            if n == last:
                return n
            last = n
            time.sleep(0.25)
        return last

    def stop(self):
        if self.events:
            self.events.close()
        self.proc.terminate()
        self.proc.wait()
        for name in os.listdir(self.countdir):
            os.unlink(os.path.join(self.countdir, name))
        os.rmdir(self.countdir)


class CountingSink:
    """smtp-sink -c, which prints how many messages it took: the end of a
    relay's deliveries."""

    def __init__(self):
        self.port = free_port()
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(["smtp-sink", "-c", "-u", "nobody", "127.0.0.1:%d" % self.port, "1000"],
                                     stdout=self.out, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def count(self):
        self.out.seek(0)
        found = re.findall(rb"mesg=(\d+)", self.out.read())
        return int(found[-1]) if found else 0

    def wait(self, n, timeout=300):
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.count()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.out.close()


POSTFIX_MASTER_CF = """\
127.0.0.1:%(port)d inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = %(dir)s/queue
data_directory = %(dir)s/data
mail_owner = postfix
myhostname = relay.bench.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:%(sink)d
smtpd_relay_restrictions = permit_mynetworks, reject
local_transport = error:no local delivery
alias_maps =
maillog_file = /dev/stdout
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_destination_concurrency_limit = 20
"""


class PostfixRelay:
    """A throwaway Postfix instance of its own (config and queue in a
    temporary directory) relaying everything to the sink: its smtpd,
    cleanup, queue manager and smtp client, as a site would run it."""
    name = "Postfix"

    def __init__(self, sink_port):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="luasmtpd-bench-postfix-")
        os.chmod(self.dir, 0o755)                      # its daemons run as postfix
        conf = os.path.join(self.dir, "conf")
        os.mkdir(conf)
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN_CF % dict(dir=self.dir, sink=sink_port))
        with open(os.path.join(conf, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER_CF % dict(port=self.port))
        # the queue's directories, owned as postfix's post-install makes them
        q = os.path.join(self.dir, "queue")
        for d in ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
                  "private", "saved", "trace"):
            subprocess.run(["install", "-d", "-o", "postfix", "-m", "700", os.path.join(q, d)], check=True)
        subprocess.run(["install", "-d", "-o", "postfix", "-g", "postdrop", "-m", "730",
                        os.path.join(q, "maildrop")], check=True)
        subprocess.run(["install", "-d", "-o", "postfix", "-g", "postdrop", "-m", "710",
                        os.path.join(q, "public")], check=True)
        subprocess.run(["install", "-d", "-m", "755", os.path.join(q, "pid")], check=True)
        subprocess.run(["install", "-d", "-o", "postfix", "-m", "700", os.path.join(self.dir, "data")], check=True)
        self.proc = subprocess.Popen(["/usr/lib/postfix/sbin/master", "-c", conf, "-d"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def commit_latency(self):
        return None

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class LuasmtpdRelay:
    """build/luasmtpd with scripts/bench_relay.lua: queue("forward") to the
    sink, answered once on disk."""
    name = "luasmtpd"

    def __init__(self, binary, sink_port):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="luasmtpd-bench-relay-")
        self.stats = os.path.join(self.dir, "stats")
        env = dict(os.environ, BENCH_SINK=str(sink_port), BENCH_COUNT=self.stats)
        cmd = [binary, "--listen", "127.0.0.1:%d" % self.port, "--log-level", "warn",
               "--max-clients", "5000", "--state-dir", os.path.join(self.dir, "state"),
               "--queue-concurrency", "20", os.path.join(ROOT, "scripts", "bench_relay.lua")]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def commit_latency(self, n):
        """(p50, p99, max) of queue() in ms, once the script counted n."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for name in os.listdir(self.dir):
                if name.startswith("stats."):
                    with open(os.path.join(self.dir, name)) as f:
                        fields = f.read().split()
                    if fields and int(fields[0]) >= n:
                        return tuple(float(x) for x in fields[1:4])
            time.sleep(0.1)
        return None

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def latencies(port, sessions, per_session, size=1024):
    """Seconds from the end of each message's data to its 250, with
    `sessions` clients at once, each sending per_session messages in one
    session (MAIL, RCPT and DATA pipelined).  One asyncio loop drives them
    all, so a reply is timed when it arrives, not when a thread gets the
    interpreter back."""
    body = b"Subject: relay bench\r\n\r\n" + (b"y" * 76 + b"\r\n") * max(1, size // 78)
    out, errors = [], []

    async def reply(r):
        while True:
            line = await r.readline()
            if not line or line[3:4] != b"-":
                return line

    async def client():
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            await reply(r)
            w.write(b"EHLO bench.test\r\n")
            await reply(r)
            for _ in range(per_session):
                w.write(b"MAIL FROM:<bench@client.test>\r\nRCPT TO:<sink@server.test>\r\nDATA\r\n")
                for _ in range(3):
                    await reply(r)
                w.write(body)
                await w.drain()
                w.write(b".\r\n")
                t = time.monotonic()
                line = await reply(r)
                out.append(time.monotonic() - t)
                if not line.startswith(b"250"):
                    errors.append(line)
            w.write(b"QUIT\r\n")
            await reply(r)
            w.close()
        except OSError as e:
            errors.append(str(e))

    async def run():
        await asyncio.gather(*(client() for _ in range(sessions)))

    asyncio.run(run())
    return sorted(out), errors


def relay(binary, rounds, msgs):
    """Accept, queue durably and forward to smtp-sink: luasmtpd beside a
    Postfix relay, in alternating rounds."""
    print("relay: accept, queue on disk, forward to smtp-sink; %d messages of 1 KB from 20 sessions, "
          "%d rounds, medians" % (msgs, rounds))
    print("%-9s %10s %10s %12s %12s %12s" % ("server", "accept/s", "relayed/s", "CPU us/msg",
                                             "p99 250 ms", "lost"))
    rows = {"Postfix": [], "luasmtpd": []}
    commit = []
    for _ in range(rounds):
        for make in (lambda p: PostfixRelay(p), lambda p: LuasmtpdRelay(binary, p)):
            sink = CountingSink()
            server = make(sink.port)
            cpu0 = cpu_seconds(server.proc.pid)
            start = time.monotonic()
            accept = run_source(server.port, ["-s", "20", "-l", "1024"], msgs)
            got = sink.wait(msgs)
            total = time.monotonic() - start
            cpu = cpu_seconds(server.proc.pid) - cpu0
            # the 250's latency: 20 sessions, 100 messages each
            lat, errors = latencies(server.port, 20, 100)
            got_all = sink.wait(msgs + len(lat) - len(errors), timeout=60)
            if server.name == "luasmtpd":
                commit.append(server.commit_latency(msgs + len(lat)))
            rows[server.name].append({"accept": msgs / accept, "relayed": got / total, "cpu_us": cpu * 1e6 / msgs,
                                      "p99": lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan"),
                                      "lost": msgs + len(lat) - len(errors) - got_all})
            server.stop()
            sink.stop()
    for name, r in rows.items():
        med = lambda k: statistics.median(x[k] for x in r)
        print("%-9s %10.0f %10.0f %12.0f %12.2f %12d" % (name, med("accept"), med("relayed"), med("cpu_us"),
                                                         med("p99"), sum(x["lost"] for x in r)))
    ours, theirs = rows["luasmtpd"], rows["Postfix"]
    ratio = lambda k: statistics.median(o[k] / t[k] for o, t in zip(ours, theirs))
    print("luasmtpd / Postfix: relayed/s x%.2f, CPU per message x%.2f" % (ratio("relayed"), ratio("cpu_us")))
    commit = [c for c in commit if c]
    if commit:
        print("queue() under 20 sessions: p50 %.2f ms, p99 %.2f ms, max %.2f ms (median of rounds)" % tuple(
            statistics.median(c[i] for c in commit) for i in range(3)))
    sys.stdout.flush()


def run_source(port, args, msgs):
    cmd = ["smtp-source", *args, "-m", str(msgs), "-f", "bench@client.test", "-t", "sink@server.test",
           "127.0.0.1:%d" % port]
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def measure(server, args, msgs):
    user0, sys0 = cpu_split(server.proc.pid)
    before = server.received() or 0
    wall = run_source(server.port, args, msgs)
    got = server.received()
    user, system = cpu_split(server.proc.pid)
    user, system = (user - user0) * 1e6 / msgs, (system - sys0) * 1e6 / msgs
    return {"rate": msgs / wall, "cpu_us": user + system, "user_us": user, "sys_us": system,
            "lost": None if got is None else msgs - (got - before),
            "rss": rss_kb(server.proc.pid, "VmHWM")}


def idle_rss(server, n):
    """RSS per connection held open after the greeting."""
    base = rss_kb(server.proc.pid)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", server.port))
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        s.recv(512)
    time.sleep(0.3)
    per = (rss_kb(server.proc.pid) - base) * 1024 / n
    for s in socks:
        s.close()
    return per


def beside_sink(binary, rounds, scale, workers_list, peers, cert, key):
    """The workloads against smtp-sink, then memory and idle connections."""
    multipart = os.path.join(ROOT, "scripts", "bench.eml")
    w1 = ["-d", "-s", "20", "-l", "1024"]
    workloads = [
        ("W1 1 KB, 20 sessions x 20", w1, int(20000 * scale), {}),
        ("W1 core alone (no hook)", w1, int(20000 * scale), {"script": "bench_core.lua"}),
    ] + [
        ("W1 with --workers %d" % w, w1, int(20000 * scale), {"workers": w})
        for w in workers_list if w != 1
    ] + [
        ("W1 --http, /api/events read", w1, int(20000 * scale), {"console": True}),
        ("W2 100 KB, 10 sessions", ["-d", "-s", "10", "-l", "102400"], int(2000 * scale), {}),
        ("W3 1 per connection, 20", ["-s", "20", "-l", "1024"], int(5000 * scale), {}),
        ("W5 multipart 50 KB attachment", ["-d", "-s", "10", "-F", multipart], int(2000 * scale), {}),
    ]
    print("luasmtpd vs smtp-sink, %d rounds, medians (server CPU from /proc; peak RSS)" % rounds)
    print("%-31s %12s %12s %7s %12s %12s %9s %6s" % ("workload", "sink msg/s", "ours msg/s", "ratio",
                                                       "sink us/msg", "ours us/msg", "ours RSS", "lost"))
    cpu, split = {}, {}
    for name, args, msgs, opts in workloads:
        rows = {"smtp-sink": [], "luasmtpd": []}
        ratios = []
        for _ in range(rounds):
            sink = Sink()
            s = measure(sink, args, msgs)
            sink.stop()
            ours = Luasmtpd(binary, **opts)
            o = measure(ours, args, msgs)
            ours.stop()
            rows["smtp-sink"].append(s)
            rows["luasmtpd"].append(o)
            ratios.append(o["rate"] / s["rate"])
        med = lambda who, k: statistics.median(r[k] for r in rows[who])
        counted = [r["lost"] for r in rows["luasmtpd"] if r["lost"] is not None]
        cpu[name] = med("luasmtpd", "cpu_us")
        split[name] = {who: (med(who, "user_us"), med(who, "sys_us")) for who in rows}
        print("%-31s %12.0f %12.0f %7.2f %12.0f %12.0f %7.1fMB %6s" % (
            name, med("smtp-sink", "rate"), med("luasmtpd", "rate"), statistics.median(ratios),
            med("smtp-sink", "cpu_us"), med("luasmtpd", "cpu_us"), med("luasmtpd", "rss") / 1024,
            sum(counted) if counted else "-"))
        sys.stdout.flush()

    # Where W1's CPU goes: the kernel's share (four round trips a message,
    # the same for both servers) bounds the ratio from below.
    sink_u, sink_s = split["W1 1 KB, 20 sessions x 20"]["smtp-sink"]
    print("W1 CPU per message, user + system: smtp-sink %.0f + %.0f us" % (sink_u, sink_s), end="")
    for name, what in (("W1 1 KB, 20 sessions x 20", "luasmtpd"), ("W1 core alone (no hook)", "no hook")):
        u, k = split[name]["luasmtpd"]
        print("; %s %.0f + %.0f (x%.2f)" % (what, u, k, (u + k) / (sink_u + sink_s)), end="")
    print("; luasmtpd's system time alone x%.2f smtp-sink's whole"
          % (split["W1 1 KB, 20 sessions x 20"]["luasmtpd"][1] / (sink_u + sink_s)))

    # The console's cost, from W1 without and with --http in alternating
    # runs, each pair's ratio: this machine's drift between rounds is as
    # large as what is measured.
    pairs = []
    for i in range(2 * rounds):
        costs = {}
        for console in ((False, True) if i % 2 == 0 else (True, False)):   # either goes first as often
            ours = Luasmtpd(binary, console=console)
            costs[console] = measure(ours, w1, int(20000 * scale))["cpu_us"]
            ours.stop()
        pairs.append(costs[True] / costs[False])
    print("the console's cost: W1 CPU per message %+.1f%% with --http and /api/events read (median of %d "
          "alternating pairs, from %+.1f%% to %+.1f%%; target: at most +5%%)"
          % ((statistics.median(pairs) - 1) * 100, len(pairs), (min(pairs) - 1) * 100, (max(pairs) - 1) * 100))

    # Memory under load: peak RSS after 10,000 messages and after 100,000
    # (the same server, W1's traffic); bounded memory keeps it flat, the
    # console's kept messages (--keep 200) included.
    for console in (False, True):
        ours = Luasmtpd(binary, console=console)
        peaks = []
        for total in (10000, 100000):
            run_source(ours.port, ["-d", "-s", "20", "-l", "1024"], total - sum(p[0] for p in peaks))
            peaks.append((total, rss_kb(ours.proc.pid, "VmHWM")))
        ours.stop()
        print("memory%s: peak RSS %.1f MB after %d messages, %.1f MB after %d (%+.1f%%)" % (
            " with --http" if console else "", peaks[0][1] / 1024, peaks[0][0], peaks[1][1] / 1024, peaks[1][0],
            (peaks[1][1] - peaks[0][1]) * 100 / peaks[0][1]))
        sys.stdout.flush()

    # W4: luasmtpd alone (the target is absolute: bytes of RSS per
    # connection; smtp-sink does not greet thousands of clients at once)
    n = 2000
    ours = Luasmtpd(binary)
    o = idle_rss(ours, n)
    ours.stop()
    print("W4 %d idle connections after the greeting: %.0f bytes of server RSS each" % (n, o))
    sys.stdout.flush()
    if not peers:
        return

    # The peers under the same load: one round each, a quarter of the
    # messages (CPU per message hardly depends on how many)
    plain = [w for w in workloads if not w[3]]
    print()
    print("the peers under smtp-source, each parsing every message: server CPU per message in us (one round, "
          "a quarter of the messages); W4: RSS per idle connection (500 of them for a peer)")
    print("%-14s" % "server" + "".join("%9s" % w[0].split()[0] for w in plain) + "%10s" % "W4")
    print("%-14s" % "luasmtpd" + "".join("%9.0f" % cpu[w[0]] for w in plain) + "%8.1fKB" % (o / 1024))
    costs = {}
    for name, start in peers:
        server = start(cert, key)
        try:
            costs[name] = [measure(server, args, max(msgs // 4, 100))["cpu_us"] for _, args, msgs, _ in plain]
        finally:
            server.stop()
        server = start(cert, key)
        try:
            idle = "%8.1fKB" % (idle_rss(server, 500) / 1024)
        except OSError as e:               # a greeting that did not come
            idle = "%10s" % type(e).__name__
        finally:
            server.stop()
        print("%-14s" % name + "".join("%9.0f" % c for c in costs[name]) + idle)
        sys.stdout.flush()
    print("%-14s" % "best / ours" + "".join(
        "%8.1fx" % (min(costs[p][i] for p in costs) / cpu[w[0]]) for i, w in enumerate(plain)))



# W6: STARTTLS, one message a connection, driven by build/tls_load (the
# generator in C: smtp-source speaks no TLS), beside openssl s_server (the
# floor: the same TLS 1.3 handshake on X25519 with nothing else) and the
# peers that offer STARTTLS, all with one certificate.

PEERS = os.path.join(ROOT, "build", "peers", "node_modules")
HARAKA_PLUGIN = """\
// make bench: take every recipient, parse each message, accept it
exports.hook_rcpt = function (next) { next(OK); };
exports.hook_data = function (next, connection) {
    connection.transaction.parse_body = true;
    next();
};
exports.hook_queue = function (next, connection) {
    void connection.transaction.body;
    next(OK);
};
"""


class Peer:
    """A server started from a command line: a peer, or openssl s_server."""

    def __init__(self, name, cmd, port, env=None, tmp=None):
        self.name, self.port, self.tmp = name, port, tmp
        # stdin held open: s_server reads commands from it
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(port, self.proc)

    def received(self):
        return None

    def stop(self):
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def s_server(cert, key):
    port = free_port()
    return Peer("openssl s_server", ["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", cert,
                                      "-key", key, "-tls1_3", "-groups", "X25519", "-quiet"], port)


def aiosmtpd(cert, key):
    port = free_port()
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return Peer("aiosmtpd", [python, os.path.join(ROOT, "scripts", "peers", "aiosmtpd_peer.py"),
                             str(port), cert, key], port)


def smtp_server(cert, key):
    port = free_port()
    return Peer("smtp-server", ["node", os.path.join(ROOT, "scripts", "peers", "smtp_server_peer.js"),
                                str(port), cert, key], port, env=dict(os.environ, NODE_PATH=PEERS))


def haraka(cert, key):
    """Haraka with its tls plugin and a plugin of ours that parses each
    message, in a directory of its own made by haraka -i."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="luasmtpd-bench-haraka-")
    subprocess.run([os.path.join(PEERS, ".bin", "haraka"), "-i", d], check=True, stdout=subprocess.DEVNULL)
    files = {"config/smtp.ini": "listen=127.0.0.1:%d\n" % port,
             "config/log.ini": "[main]\nlevel=error\n",
             "config/plugins": "tls\nbench\n",
             "plugins/bench.js": HARAKA_PLUGIN}
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    shutil.copy(cert, os.path.join(d, "config", "tls_cert.pem"))
    shutil.copy(key, os.path.join(d, "config", "tls_key.pem"))
    # its tls plugin makes 2048-bit DH parameters at start when there are
    # none, which takes a while: DSA-style ones are quick to make
    subprocess.run(["openssl", "dhparam", "-dsaparam", "-out", os.path.join(d, "config", "dhparams.pem"), "2048"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Peer("Haraka", [os.path.join(PEERS, ".bin", "haraka"), "-c", d], port, tmp=d)


def peers_installed():
    """scripts/peers/install.sh once; the peers that can run, as (name, a
    function of (cert, key) that starts one)."""
    have = []
    if subprocess.run(["/usr/bin/python3", "-c", "import aiosmtpd"], stderr=subprocess.DEVNULL).returncode == 0:
        have.append(("aiosmtpd", aiosmtpd))
    else:
        print("aiosmtpd: skipped: python3-aiosmtpd is not installed (scripts/deps.sh)")
    if subprocess.run(["sh", os.path.join(ROOT, "scripts", "peers", "install.sh")]).returncode == 0:
        have += [("smtp-server", smtp_server), ("Haraka", haraka)]
    else:
        print("smtp-server, Haraka: skipped: scripts/peers/install.sh failed (they come from npm)")
    return have


def tls_load(port, *args, stdin=None):
    """A run of build/tls_load: its last line, as numbers."""
    out = subprocess.run([os.path.join(ROOT, "build", "tls_load"), "-p", str(port), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return {k: float(v) for k, v in (f.split("=") for f in out.strip().splitlines()[-1].split())}


def tls_run(server, args):
    cpu0 = cpu_seconds(server.proc.pid)
    r = tls_load(server.port, *args)
    cpu = cpu_seconds(server.proc.pid) - cpu0
    n = r["connections"]
    return {"rate": n / r["seconds"], "cpu_us": cpu * 1e6 / n, "client_us": r["cpu"] * 1e6 / n,
            "failed": r["failed"], "resumed": r["resumed"] / n}


def tls_idle_rss(server, n):
    """Server RSS per TLS connection held after its EHLO over TLS."""
    tls_load(server.port, "-n", "20")                 # the first handshakes' one-off allocations
    base = rss_kb(server.proc.pid)
    p = subprocess.Popen([os.path.join(ROOT, "build", "tls_load"), "-p", str(server.port), "-i", "-c", str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready = p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    per = (rss_kb(server.proc.pid) - base) * 1024 / n
    p.stdin.close()
    p.wait()
    return per if ready and p.returncode == 0 else None


def w6(binary, rounds, scale, peers, cert, key):
    n = str(int(2000 * scale))
    tls = ["--tls-cert", cert, "--tls-key", key]
    servers = [
        ("openssl s_server, handshake only", lambda: s_server(cert, key), ["-t"]),
        ("luasmtpd, handshake only", lambda: Luasmtpd(binary, listen="--listen-tls", extra=tls), ["-t"]),
        ("luasmtpd", lambda: Luasmtpd(binary, extra=tls), []),
        ("luasmtpd, buffers kept", lambda: Luasmtpd(binary, extra=tls + ["--tls-keep-buffers"]), []),
    ] + [(name, lambda start=start: start(cert, key), []) for name, start in peers]
    print()
    print("W6 STARTTLS (TLS 1.3, X25519, P-256 certificate), EHLO, 1 KB message, QUIT; %s connections, "
          "20 at a time, build/tls_load; %d rounds, medians; -r: resuming from the last ticket" % (n, rounds))
    print("%-33s %8s %8s %9s %9s %8s %9s %10s %7s" % ("server", "conn/s", "us/conn", "conn/s -r", "us/conn -r",
                                                     "resumed", "idle TLS", "client us", "failed"))
    cost, idle = {}, {}
    for name, start, mode in servers:
        rows = {False: [], True: []}
        for r in range(rounds):
            server = start()
            try:
                for resume in (False, True):
                    rows[resume].append(tls_run(server, mode + ["-n", n, "-c", "20"] + (["-r"] if resume else [])))
                if r == 0 and not mode:
                    idle[name] = tls_idle_rss(server, 1000)
            finally:
                server.stop()
        med = lambda resume, k: statistics.median(x[k] for x in rows[resume])
        failed = sum(x["failed"] for k in rows for x in rows[k])
        cost[name] = (med(False, "cpu_us"), med(True, "cpu_us"))
        print("%-33s %8.0f %8.0f %9.0f %10.0f %7.0f%% %9s %10.0f %7d" % (
            name, med(False, "rate"), cost[name][0], med(True, "rate"), cost[name][1], 100 * med(True, "resumed"),
            "%.1f KB" % (idle[name] / 1024) if idle.get(name) is not None else "-", med(False, "client_us"),
            failed))
        sys.stdout.flush()

    floor, hs = cost["openssl s_server, handshake only"], cost["luasmtpd, handshake only"]
    print("luasmtpd's handshake / s_server's: %.2fx, %.2fx resumed (target: at most 1.2x)"
          % (hs[0] / floor[0], hs[1] / floor[1]))
    peers = {k: v for k, v in cost.items() if not k.startswith(("luasmtpd", "openssl"))}
    if peers:
        best = min(peers, key=lambda k: peers[k][0])
        print("the best peer (%s) / luasmtpd, CPU per connection: %.1fx, %.1fx resumed (target: at least 3x)"
              % (best, peers[best][0] / cost["luasmtpd"][0], peers[best][1] / cost["luasmtpd"][1]))
    kept = "luasmtpd, buffers kept"
    print("SSL_MODE_RELEASE_BUFFERS: CPU per connection %+.1f%%, idle TLS connection %.1f KB instead of %.1f KB "
          "(target: at most 12 KB)" % ((cost["luasmtpd"][0] / cost[kept][0] - 1) * 100,
                                        idle["luasmtpd"] / 1024, idle[kept] / 1024))


def smtp_reply(sock, buf):
    """One whole reply (its last line) from sock; buf: bytes read ahead."""
    while True:
        while b"\r\n" in buf[0]:
            line, buf[0] = buf[0].split(b"\r\n", 1)
            if line[3:4] != b"-":
                return int(line[:3])
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed by the server")
        buf[0] += chunk


def memory_budget(binary):
    """100 sessions send 10 MB each at once under the default --max-memory
    (256M): how many get 250 and how many 452, and the peak RSS."""
    sessions, size = 100, 10 * 1000 * 1000
    ours = Luasmtpd(binary, extra=["--max-size", "11M", "--max-clients-per-ip", "0", "--connect-rate", "0",
                                   "--log-level", "error"])     # not 76 lines of refusals
    before = rss_kb(ours.proc.pid)
    start = time.monotonic()
    clients = []
    for _ in range(sessions):
        sock = socket.create_connection(("127.0.0.1", ours.port), timeout=120)
        buf = [b""]
        smtp_reply(sock, buf)
        for cmd, code in ((b"EHLO bench\r\n", 250), (b"MAIL FROM:<cam@bench.test>\r\n", 250),
                          (b"RCPT TO:<alarm@bench.test>\r\n", 250), (b"DATA\r\n", 354)):
            sock.sendall(cmd)
            if smtp_reply(sock, buf) != code:
                raise RuntimeError("%r: not %d" % (cmd, code))
        sock.sendall(b"Subject: big\r\n\r\n")
        clients.append((sock, buf))
    chunk = (b"y" * 998 + b"\r\n") * 64
    peak = 0
    for _ in range(size // len(chunk)):
        for sock, _ in clients:                   # all of them grow together
            sock.sendall(chunk)
        peak = max(peak, rss_kb(ours.proc.pid))
    for sock, _ in clients:
        sock.sendall(b".\r\n")
    codes = [smtp_reply(sock, buf) for sock, buf in clients]
    seconds = time.monotonic() - start
    peak = max(peak, rss_kb(ours.proc.pid, "VmHWM"))
    for sock, _ in clients:
        sock.close()
    ours.stop()
    print("memory budget: %d sessions x 10 MB at once under --max-memory 256M: %d accepted, %d refused with "
          "452 4.3.1, %d other; RSS grew by %.0f MB at most; %.1f s" % (
              sessions, codes.count(250), codes.count(452), len(codes) - codes.count(250) - codes.count(452),
              (peak - before) / 1024, seconds))
    sys.stdout.flush()


def mime_alone(binary):
    """The MIME extractor without the server: scripts/bench_mime.c."""
    print("MIME extractor alone (parse and decode every part, best of 5 rounds):")
    subprocess.run([binary], cwd=ROOT, check=True)
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "luasmtpd"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer messages per round")
    ap.add_argument("--only", choices=("sink", "tls", "budget", "relay", "mime"),
                    help="one part: beside smtp-sink, W6 (TLS), the memory budget, the relay, or the MIME "
                         "extractor alone")
    ap.add_argument("--workers-list", default="1,2",
                    help="W1 with each of these --workers counts (default 1,2; e.g. 1,2,4,8 on a larger machine)")
    a = ap.parse_args()
    scale = 0.2 if a.quick else 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    if a.only in (None, "mime"):
        mime_alone(os.path.join(os.path.dirname(a.binary), "bench_mime"))
    certs = tempfile.mkdtemp(prefix="luasmtpd-bench-tls-")
    cert, key = make_cert(certs)           # the one certificate of every server with TLS
    peers = peers_installed() if a.only in (None, "sink", "tls") else []
    if a.only in (None, "sink"):
        beside_sink(a.binary, a.rounds, scale, [int(w) for w in a.workers_list.split(",")], peers, cert, key)
    if a.only in (None, "tls"):
        w6(a.binary, a.rounds, scale, peers, cert, key)
    if a.only in (None, "budget"):
        memory_budget(a.binary)
    if a.only in (None, "relay") and os.geteuid() != 0:
        print("relay: skipped: Postfix's master needs root to start its daemons as postfix")
    elif a.only in (None, "relay"):
        relay(a.binary, a.rounds, int(5000 * scale))
    shutil.rmtree(certs, ignore_errors=True)


if __name__ == "__main__":
    main()
