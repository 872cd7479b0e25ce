#!/usr/bin/env python3
"""luasmtpd beside Postfix's smtp-sink, driven by smtp-source (make bench).

Each workload runs against smtp-sink (the ceiling: it parses nothing) and
against build/luasmtpd with scripts/bench.lua (a Lua on_mail that reads the
subject and sender, encodes HSYCO's JSON with cjson and counts), in
alternating rounds, and reports medians: messages/s, the ratio to smtp-sink
in the same rounds, server CPU per message (from /proc) and peak RSS.  The
count luasmtpd's script received is checked against what was sent.  W1
runs a second time with --workers 2.  Then: peak RSS after 10,000 and
after 100,000 messages, and RSS per idle connection (W4).  A benchmark, not
a test: nothing here passes or fails on timings.

  scripts/bench.py [--rounds N] [--quick] [--binary build/luasmtpd]
"""
import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
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


def cpu_seconds(pid):
    """User + system time of pid and its children."""
    total = 0
    for p in processes(pid):
        with open("/proc/%d/stat" % p) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


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

    def __init__(self, binary, workers=1):
        self.port = free_port()
        self.countdir = tempfile.mkdtemp(prefix="luasmtpd-bench-")
        env = dict(os.environ, BENCH_COUNT=os.path.join(self.countdir, "count"))
        cmd = [binary, "--listen", "127.0.0.1:%d" % self.port, "--log-level", "warn",
               "--max-clients", "5000", "--workers", str(workers),
               os.path.join(ROOT, "scripts", "bench.lua")]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        time.sleep(0.5 if workers > 1 else 0)   # every worker listening

    def received(self):
        """The counts the script wrote, one file per process (each writes
        its own every 0.1 s)."""
        last, deadline = None, time.monotonic() + 5
        while time.monotonic() < deadline:
            n = 0
            for name in os.listdir(self.countdir):
                with open(os.path.join(self.countdir, name)) as f:
                    text = f.read().strip()
                n += int(text) if text else 0
            if n == last:
                return n
            last = n
            time.sleep(0.25)
        return last

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        for name in os.listdir(self.countdir):
            os.unlink(os.path.join(self.countdir, name))
        os.rmdir(self.countdir)


def run_source(port, args, msgs):
    cmd = ["smtp-source", *args, "-m", str(msgs), "-f", "bench@client.test", "-t", "sink@server.test",
           "127.0.0.1:%d" % port]
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def measure(server, args, msgs):
    cpu0 = cpu_seconds(server.proc.pid)
    before = server.received() or 0
    wall = run_source(server.port, args, msgs)
    got = server.received()
    cpu = cpu_seconds(server.proc.pid) - cpu0
    return {"rate": msgs / wall, "cpu_us": cpu * 1e6 / msgs,
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "luasmtpd"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer messages per round")
    a = ap.parse_args()
    scale = 0.2 if a.quick else 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    multipart = os.path.join(ROOT, "scripts", "bench.eml")
    workloads = [
        ("W1 1 KB, 20 sessions x 20", ["-d", "-s", "20", "-l", "1024"], int(20000 * scale)),
        ("W1 with --workers 2", ["-d", "-s", "20", "-l", "1024"], int(20000 * scale), 2),
        ("W2 100 KB, 10 sessions", ["-d", "-s", "10", "-l", "102400"], int(2000 * scale)),
        ("W3 1 per connection, 20", ["-s", "20", "-l", "1024"], int(5000 * scale)),
        ("W5 multipart 50 KB attachment", ["-d", "-s", "10", "-F", multipart], int(2000 * scale)),
    ]
    print("luasmtpd vs smtp-sink, %d rounds, medians (server CPU from /proc; peak RSS)" % a.rounds)
    print("%-31s %12s %12s %7s %12s %12s %9s %6s" % ("workload", "sink msg/s", "ours msg/s", "ratio",
                                                       "sink us/msg", "ours us/msg", "ours RSS", "lost"))
    for name, args, msgs, *workers in workloads:
        rows = {"smtp-sink": [], "luasmtpd": []}
        ratios = []
        for _ in range(a.rounds):
            sink = Sink()
            s = measure(sink, args, msgs)
            sink.stop()
            ours = Luasmtpd(a.binary, *workers)
            o = measure(ours, args, msgs)
            ours.stop()
            rows["smtp-sink"].append(s)
            rows["luasmtpd"].append(o)
            ratios.append(o["rate"] / s["rate"])
        med = lambda who, k: statistics.median(r[k] for r in rows[who])
        lost = sum(r["lost"] for r in rows["luasmtpd"])
        print("%-31s %12.0f %12.0f %7.2f %12.0f %12.0f %7.1fMB %6d" % (
            name, med("smtp-sink", "rate"), med("luasmtpd", "rate"), statistics.median(ratios),
            med("smtp-sink", "cpu_us"), med("luasmtpd", "cpu_us"), med("luasmtpd", "rss") / 1024, lost))
        sys.stdout.flush()

    # Memory under load: peak RSS after 10,000 messages and after 100,000
    # (the same server, W1's traffic); bounded memory keeps it flat.
    ours = Luasmtpd(a.binary)
    peaks = []
    for total in (10000, 100000):
        run_source(ours.port, ["-d", "-s", "20", "-l", "1024"], total - sum(p[0] for p in peaks))
        peaks.append((total, rss_kb(ours.proc.pid, "VmHWM")))
    ours.stop()
    print("memory: peak RSS %.1f MB after %d messages, %.1f MB after %d (%+.1f%%)" % (
        peaks[0][1] / 1024, peaks[0][0], peaks[1][1] / 1024, peaks[1][0],
        (peaks[1][1] - peaks[0][1]) * 100 / peaks[0][1]))
    sys.stdout.flush()

    # W4: luasmtpd alone (the target is absolute: bytes of RSS per
    # connection; smtp-sink does not greet thousands of clients at once)
    n = 2000
    ours = Luasmtpd(a.binary)
    o = idle_rss(ours, n)
    ours.stop()
    print("W4 %d idle connections after the greeting: %.0f bytes of server RSS each" % (n, o))


if __name__ == "__main__":
    main()
