"""Lua hooks: return values as replies at every stage, errors and budgets,
waiting hooks, the session table, config precedence, --check."""
import json
import os
import re
import socket
import subprocess
import threading
import time
import unittest

from harness import BINARY, Server, ServerTest, tmp_path

HERE = os.path.dirname(os.path.abspath(__file__))
VERDICTS = os.path.join(HERE, "scripts", "verdicts.lua")


def script(tmp_path, text):
    with open(tmp_path, "w") as f:
        f.write(text)
    return tmp_path


class Verdicts(ServerTest):
    ARGS = (VERDICTS, "--hook-timeout", "0.5", "--lua-memory", "64M", "--max-errors", "100")

    def test_return_forms_at_mail(self):
        c = self.session()
        for tag, code, text in (("true", 250, "2.1.0 Ok"), ("nil", 250, "2.1.0 Ok"),
                                ("false", 550, "5.7.1 Sender rejected"),
                                ("code", 553, "5.0.0 Mailbox name not allowed"),
                                ("codetext", 551, "5.1.6 Moved away"),
                                ("pike", 452, "4.0.0 Come back later")):
            reply = c.cmd("MAIL FROM:<x-%s@t.example>" % tag)
            self.assertEqual(reply, (code, [text]), tag)
            c.cmd("RSET")
        self.assertEqual(c.cmd("MAIL FROM:<x-lines@t.example>"),
                         (550, ["5.7.1 first line", "5.7.1 second line"]))

    def test_false_at_each_stage(self):
        c = self.srv.client()
        self.assertReply(c.cmd("EHLO x-false"), 550, "5.7.1")
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 503)  # no HELO accepted
        self.assertReply(c.cmd("EHLO fine"), 250)
        self.assertReply(c.cmd("MAIL FROM:<a@b.c>"), 250)
        self.assertReply(c.cmd("RCPT TO:<x-false@b.c>"), 550, "5.1.1")
        self.assertReply(c.cmd("RCPT TO:<data-false@b.c>"), 250)
        self.assertReply(c.cmd("DATA"), 554, "5.7.1")
        c.cmd("RSET")
        self.assertReply(self.transaction(c, body=b"Subject: x-false\r\n\r\nb\r\n"), 554, "5.6.0")
        self.assertReply(self.transaction(c, body=b"Subject: x-codetext\r\n\r\nb\r\n"), 551, "5.1.6 Moved away")
        self.assertReply(self.transaction(c), 250)
        # each refusal is one log line: what, and which hook decided where
        for pattern in (r"HELO x-false refused by on_helo \(\S*verdicts\.lua:\d+\): 550 5\.7\.1 ",
                        r"RCPT TO <x-false@b\.c> refused by on_rcpt \(\S*verdicts\.lua:62\): 550 5\.1\.1 ",
                        r"DATA refused by on_data \(\S*verdicts\.lua:\d+\): 554 5\.7\.1 ",
                        r"message \S+ from=<[^>]+> to=<[^>]+> size=\d+: 554, refused by on_mail "
                        r"\(\S*verdicts\.lua:78\)",
                        r"message \S+ from=<[^>]+> to=<[^>]+> size=\d+: 551, refused by on_mail"):
            self.assertTrue(self.srv.wait_log(pattern), pattern + "\n" + self.srv.log())
        self.assertEqual(self.srv.count_log(r"info .*> 550 5\.1\.1"), 0)   # not said twice

    def test_421_closes(self):
        c = self.session()
        self.assertReply(c.cmd("RCPT TO:<a@b.c>"), 503)
        self.assertReply(c.cmd("MAIL FROM:<x-421@b.c>"), 421, "Closing now")
        self.assertTrue(c.closed())

    def test_errors_answer_451_and_the_next_transaction_works(self):
        c = self.session()
        for tag in ("error", "badtype", "badcode", "float", "yield", "nested", "memory", "loop",
                    "coloop", "wraploop"):
            t0 = time.monotonic()
            self.assertReply(c.cmd("MAIL FROM:<x-%s@b.c>" % tag), 451, "4.3.0")
            self.assertLess(time.monotonic() - t0, 3, tag)
            self.assertReply(self.transaction(c), 250)
        # the log is read by a thread: wait for each line, not just look
        for pattern in (r"on_mail_from: .*verdicts\.lua:\d+: deliberate failure", "stack traceback",
                        r'on_mail_from: invalid return value \(string "[^"]*"\)',
                        r"MAIL FROM <x-error@b\.c> refused by on_mail_from \(script error\): 451 4\.3\.0",
                        r"MAIL FROM <x-badcode@b\.c> refused by the server \(the hook's code 299 does not fit\)",
                        r"hook mail: invalid reply code 299",
                        r"on_mail_from: yielded outside a luasmtpd wait", r"nested coroutine",
                        r"on_mail_from: not enough memory"):
            self.assertTrue(self.srv.wait_log(pattern), pattern + "\n" + self.srv.log())
        self.assertEqual(self.srv.count_log(r"prelude\.lua"), 0)   # the server's own frames are left out
        # loop, coloop and wraploop
        self.assertTrue(self.srv.wait_log(r"on_mail_from: ran past its time budget of 0\.5s at \S*verdicts\.lua:\d+;",
                                          count=3), self.srv.log())

    def test_budget_after_an_idle_while(self):
        # the budget's timer stops after ten ticks without a call (0.5 s at
        # this budget); the next call must start it again
        c = self.session()
        time.sleep(1.2)
        t0 = time.monotonic()
        self.assertReply(c.cmd("MAIL FROM:<x-loop@b.c>"), 451, "4.3.0")
        self.assertLess(time.monotonic() - t0, 3)
        self.assertReply(self.transaction(c), 250)

    def test_sleeping_hook_does_not_delay_others(self):
        slow = self.session()
        fast = self.session()
        done = {}

        def run():
            t0 = time.monotonic()
            done["reply"] = slow.cmd("MAIL FROM:<x-sleep@b.c>")
            done["took"] = time.monotonic() - t0

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        self.assertReply(self.transaction(fast), 250)
        self.assertLess(time.monotonic() - t0, 0.5)
        self.assertNotIn("reply", done)  # still sleeping
        t.join(5)
        self.assertReply(done["reply"], 250)
        self.assertGreaterEqual(done["took"], 0.95)

    def test_session_fields(self):
        c = self.srv.client()
        c.cmd("EHLO client.example")
        self.assertReply(c.cmd("MAIL FROM:<fields@test> SIZE=42 BODY=8BITMIME"), 250)
        m = self.srv.wait_log(r"script: fields (\{.*\})")
        f = json.loads(m.group(1))
        self.assertRegex(f["id"], r"^[0-9A-F]+$")
        self.assertEqual(f["ip"], "127.0.0.1")
        self.assertEqual(f["local_ip"], "127.0.0.1")
        self.assertEqual(f["local_port"], self.srv.port)
        self.assertEqual(f["port"], c.sock.getsockname()[1])
        self.assertEqual(f["helo"], "client.example")
        self.assertTrue(f["esmtp"])
        self.assertFalse(f["tls"])
        self.assertNotIn("sender", f)  # not accepted yet while on_mail_from decides
        self.assertEqual(f["params"], {"SIZE": "42", "BODY": "8BITMIME"})
        self.assertTrue(f["connected"])  # session.data kept from on_connect

    def test_session_data_and_transaction(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<s@b.c>"), 250)
        for i in range(3):
            self.assertReply(c.cmd("RCPT TO:<count@test>"), 250)
        self.assertTrue(self.srv.wait_log(r"script: rcpt 3 sender s@b\.c so far 2"))

    def test_mail_table(self):
        c = self.session()
        # byte-exact: dot-unstuffed, with bare LF, bare CR, NUL and 8-bit kept
        body = b"Subject: hello\r\n\r\n..dot\r\nbare\nlf\rcr\x00nul \xc3\xbc\xff\r\n"
        self.assertReply(self.transaction(c, body=body, rcpts=("r1@b.c", "r2@b.c")), 250)
        m = self.srv.wait_log(r"script: mail (\{.*\})")
        mail = json.loads(m.group(1))
        received = body.replace(b"\r\n..", b"\r\n.")
        self.assertEqual(bytes.fromhex(mail["raw"]), received)
        self.assertEqual(mail["size"], len(received))
        self.assertEqual(mail["sender"], "a@example.com")
        self.assertEqual(mail["recipients"], ["r1@b.c", "r2@b.c"])
        self.assertEqual(mail["helo"], "client.test")
        self.assertEqual(mail["ip"], "127.0.0.1")
        self.assertRegex(mail["id"], r"^[0-9A-F]+\.1$")

    def test_rset_and_close_hooks(self):
        c = self.session()
        self.assertReply(c.cmd("RSET"), 250)
        c.cmd("QUIT")
        c.closed()
        self.assertTrue(self.srv.wait_log(r"script: rset in [0-9A-F]+"))
        self.assertTrue(self.srv.wait_log(r"script: closed [0-9A-F]+"))


class NoHooks(ServerTest):
    def setUp(self):
        self.path = os.path.join(HERE, "scripts", "_empty.lua")
        script(self.path, "-- no hooks at all\n")
        self.ARGS = (self.path,)
        super().setUp()

    def tearDown(self):
        super().tearDown()
        os.unlink(self.path)

    def test_everything_accepted(self):
        c = self.session()
        self.assertReply(self.transaction(c, sender="anyone@anywhere.example",
                                          rcpts=("x@y.z", "postmaster@y.z")), 250)


class DefaultScript(ServerTest):
    def test_event_line(self):
        c = self.session()
        body = (b"From: Cam 1 <cam1@site.example>\r\nTo: events@hub.example\r\n"
                b"Subject: =?utf-8?q?Bewegung_erkannt?=\r\nDate: Mon, 25 Jan 2016 18:24:49 +0100\r\n"
                b"\r\nzone 3\r\nzone 4\r\n")
        self.assertReply(self.transaction(c, body=body), 250)
        m = self.srv.wait_log(r"^smtp\.mail = (\{.*\})$", stdout=True)
        self.assertTrue(m, self.srv.stdout())
        self.assertEqual(json.loads(m.group(1)), {
            "from": "Cam 1 <cam1@site.example>", "to": "events@hub.example",
            "subject": "Bewegung erkannt", "date": "Mon, 25 Jan 2016 18:24:49 +0100",
            "contenttype": "text/plain; charset=us-ascii", "returnpath": "",
            "body": ["zone 3", "zone 4"]})
        # HSYCO's key order, "/" unescaped
        self.assertTrue(m.group(1).startswith('{"from":'), m.group(1))
        self.assertIn('"contenttype":"text/plain; charset=us-ascii","returnpath":"","body":[', m.group(1))


IOEVENT = '''
local luasmtpd = require "luasmtpd"
function on_mail(mail)
  if mail.subject == "reject" then return 554, "5.7.1 not this one" end
  if mail.subject == "code" then return 250 end
end
function IOEvent(name, value)
  print("EVENT " .. name .. " " .. value)
  if value:find('"subject":"ioevent%-error"') then error("IOEvent failed") end
end
'''


class IOEvent(ServerTest):
    """HSYCO's IOEvent(name, value): called for each accepted mail."""
    ARGS = (script(tmp_path("ioevent.lua"), IOEVENT), "--id", "gate.1")

    def test_called_after_an_accepting_on_mail(self):
        c = self.session()
        self.assertReply(self.transaction(c, body=b"Subject: first\r\n\r\nbody 1\r\n"), 250)
        self.assertReply(self.transaction(c, body=b"Subject: reject\r\n\r\nx\r\n"), 554,
                         "not this one")
        self.assertReply(self.transaction(c, body=b"Subject: code\r\n\r\nx\r\n"), 250)
        # an error in IOEvent: the event was not handled, the client retries
        self.assertReply(self.transaction(c, body=b"Subject: ioevent-error\r\n\r\nx\r\n"), 451)
        self.assertTrue(self.srv.wait_log(r"on_mail: .*IOEvent failed"))
        self.assertTrue(self.srv.wait_log(r"^EVENT gate\.1\.mail .*ioevent-error", stdout=True))
        events = [l for l in self.srv.out if l.startswith("EVENT ")]
        self.assertEqual(len(events), 3, events)
        name, value = events[0].split(" ", 2)[1:]
        self.assertEqual(name, "gate.1.mail")
        self.assertEqual(json.loads(value)["body"], ["body 1"])
        self.assertIn('"subject":"code"', events[1])

    def test_check_lists_it(self):
        p = run_bin("--check", tmp_path("ioevent.lua"))
        self.assertIn("hooks: on_mail IOEvent", p.stdout)
        p = run_bin("--id", "bad id", "--check", tmp_path("ioevent.lua"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("--id: 'bad id' must be", p.stderr)


EXEC = '''
local luasmtpd = require "luasmtpd"
function on_mail(mail)
  local s = mail.subject
  local r, err
  if s == "slow" then r, err = luasmtpd.exec{"sleep", "2"}
  elseif s == "io" then r, err = luasmtpd.exec{"sh", "-c", "tr a-z A-Z; echo oops >&2; exit 7", stdin = mail.text}
  elseif s == "missing" then r, err = luasmtpd.exec{"/nonexistent/program"}
  elseif s == "timeout" then r, err = luasmtpd.exec{"sleep", "10", timeout = 0.2}
  elseif s == "big" then r, err = luasmtpd.exec{"head", "-c", "3000000", "/dev/zero"}
  elseif s == "badarg" then r, err = luasmtpd.exec{"echo", {}}
  end
  if not r then return 550, err end
  return 250, string.format("status=%s signal=%s out=%s err=%s truncated=%s", r.status, r.signal,
    #r.stdout > 100 and #r.stdout or r.stdout:gsub("%s+$", ""), r.stderr:gsub("%s+$", ""), r.truncated)
end
function on_close() luasmtpd.exec{"true"} end
'''


class Exec(ServerTest):
    """luasmtpd.exec: programs run while other sessions are served."""
    ARGS = (script(tmp_path("exec.lua"), EXEC),)

    def send(self, c, subject, text=b"x"):
        return self.transaction(c, body=b"Subject: " + subject + b"\r\n\r\n" + text + b"\r\n")

    def test_results(self):
        c = self.session()
        self.assertReply(self.send(c, b"io", b"hello"), 250, "status=7 signal=nil out=HELLO err=oops")
        self.assertReply(self.send(c, b"missing"), 550, "exec: cannot run /nonexistent/program: No such file")
        start = time.monotonic()
        self.assertReply(self.send(c, b"timeout"), 550, "exec: timed out after 0.2 seconds")
        self.assertLess(time.monotonic() - start, 5)
        self.assertReply(self.send(c, b"big"), 250, "out=1048576 err= truncated=true")
        self.assertReply(self.send(c, b"badarg"), 451)
        self.assertTrue(self.srv.wait_log(r"exec: argument 2 is a table"))
        c.cmd("QUIT")
        self.assertTrue(self.srv.wait_log(r"on_close: .*on_close may not wait \(luasmtpd.exec\)"))

    def test_other_sessions_are_served_meanwhile(self):
        slow = self.session()
        self.start_message(slow, body=b"Subject: slow\r\n\r\nx\r\n")
        fast = self.session()
        self.assertReply(self.send(fast, b"io", b"quick"), 250, "out=QUICK")
        self.assertFalse(slow.closed(timeout=0.05))
        self.assertEqual(slow.buf, b"")     # its program still runs
        self.assertReply(slow.reply(), 250, "status=0")

    def test_client_leaving_kills_the_program(self):
        c = self.session()
        self.start_message(c, body=b"Subject: slow\r\n\r\nx\r\n")
        c.close()
        self.assertTrue(self.srv.wait_log(r"disconnect from"))
        time.sleep(0.2)
        children = subprocess.run(["pgrep", "-P", str(self.srv.proc.pid)], capture_output=True, text=True)
        self.assertEqual(children.stdout.strip(), "")


def run_bin(*args):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=10)


class ScriptLoading(unittest.TestCase):
    run_bin = staticmethod(run_bin)

    def test_check(self):
        p = self.run_bin("--check", VERDICTS)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("ok; hooks: on_connect on_helo on_mail_from on_rcpt on_data on_mail on_rset on_close",
                      p.stdout)

    def test_check_names_task_hooks_and_warns_of_misspelt_ones(self):
        path = script(tmp_path("tasks.lua"), "function on_mail() end\nfunction on_watchdog() end\n"
                      "function on_queue_failed() end\nfunction on_mial_from() end\non_rcpt_to = print\n")
        p = self.run_bin("--check", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("ok; hooks: on_mail on_watchdog on_queue_failed\n", p.stdout)
        self.assertIn("warning: on_mial_from is not a hook, and is never called (on_mail_from?)", p.stderr)
        self.assertIn("warning: on_rcpt_to is not a hook, and is never called (on_rcpt?)", p.stderr)
        p = self.run_bin("--check", "--strict", path)
        self.assertEqual(p.returncode, 1, p.stderr)
        p = self.run_bin("--check", "--strict", VERDICTS)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        path = script(tmp_path("cfg-note.lua"), 'config = { max_size = "2M" }\n')
        self.assertIn("config sets --max-size: read at start (a reload keeps them as they were)\n",
                      self.run_bin("--check", path).stdout)

    def test_require_finds_modules_beside_the_script(self):
        d = tmp_path("rules-dir")
        os.makedirs(d, exist_ok=True)
        script(os.path.join(d, "helper.lua"), "return { answer = 42 }\n")
        path = script(os.path.join(d, "rules.lua"),
                      'local h = require "helper"\nconfig = { description = "answer " .. h.answer }\n')
        p = subprocess.run([BINARY, "--check", path], capture_output=True, text=True, cwd="/", timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("id: smtp; answer 42", p.stdout)

    def test_syntax_error_exits_2_with_file_and_line(self):
        path = script(tmp_path("bad.lua"), "function on_rcpt(a)\n  return (\nend\n")
        for args in (("--check", path), (path,)):
            p = self.run_bin(*args)
            self.assertEqual(p.returncode, 2)
            self.assertRegex(p.stderr, r"/bad\.lua:3: unexpected symbol")

    def test_runtime_error_at_load_exits_2(self):
        path = script(tmp_path("bad.lua"), "local x = nil\nx.y = 1\n")
        p = self.run_bin("--check", path)
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr, r"/bad\.lua:2: attempt to index")

    def test_unknown_config_key(self):
        path = script(tmp_path("bad.lua"), "config = { max_sise = 10 }\n")
        p = self.run_bin("--check", path)
        self.assertEqual(p.returncode, 2)
        self.assertIn("config.max_sise is not an option", p.stderr)

    def test_bad_config_value(self):
        path = script(tmp_path("bad.lua"), "config = { max_size = 'huge' }\n")
        p = self.run_bin("--check", path)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--max-size: 'huge' is not a size", p.stderr)

    def test_config_and_flag_precedence(self):
        path = script(tmp_path("cfg.lua"),
                      'config = { max_size = "1M", hostname = "from.script", max_recipients = 2,\n'
                      '           listen = { "127.0.0.1:1" } }\n')
        srv = Server(path, "--hostname", "from.flag")  # the harness adds --listen too
        try:
            c = srv.client()
            self.assertIn("from.flag", c.greeting[1][0])
            code, lines = c.cmd("EHLO x")
            self.assertIn("SIZE 1048576", lines)
            c.cmd("MAIL FROM:<a@b.c>")
            c.cmd("RCPT TO:<1@b.c>")
            c.cmd("RCPT TO:<2@b.c>")
            self.assertEqual(c.cmd("RCPT TO:<3@b.c>")[0], 452)
        finally:
            srv.stop()

    def test_config_lists(self):
        # a comma list option takes every element; a one-value option no list
        path = script(tmp_path("cfg.lua"),
                      'config = { allow_insecure_auth = true, auth_methods = { "PLAIN", "LOGIN" } }\n'
                      'function on_auth(user, password) return password == "pw" end\n')
        srv = Server(path)
        try:
            c = srv.client()
            code, lines = c.cmd("EHLO x")
            self.assertIn("AUTH PLAIN LOGIN", lines)  # not just the last one
        finally:
            srv.stop()
        path = script(tmp_path("bad.lua"), 'config = { hostname = { "a.example", "b.example" } }\n')
        p = self.run_bin("--check", path)
        self.assertEqual(p.returncode, 2)
        self.assertIn("config.hostname takes one value, not a list", p.stderr)

    def test_cjson_available(self):
        path = script(tmp_path("uses-cjson.lua"),
                      'local cjson = require "cjson"\nassert(cjson.encode({1}) == "[1]")\n'
                      'local l = require "luasmtpd"\nassert(type(l.version) == "string")\n')
        p = self.run_bin("--check", path)
        self.assertEqual(p.returncode, 0, p.stderr)


class Replay(unittest.TestCase):
    run_bin = staticmethod(run_bin)

    def replay(self, *args, message=b"Subject: hi\n\n.dot\nbody\n"):
        with open(tmp_path("replay.eml"), "wb") as f:
            f.write(message)
        return run_bin("--log-level", "info", "--replay", tmp_path("replay.eml"), *args)

    def test_accepted(self):
        p = self.replay("--from", "a@b.c", "--to", "r1@x.y", "--to", "r2@x.y", VERDICTS)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("C: MAIL FROM:<a@b.c>\nS: 250 2.1.0 Ok\n", p.stdout)
        self.assertIn("C: RCPT TO:<r2@x.y>\nS: 250 2.1.5 Ok\n", p.stdout)
        self.assertRegex(p.stdout, r"S: 250 2\.0\.0 Ok: queued as \S+\nC: QUIT\n")
        self.assertTrue(p.stdout.endswith("accepted\n"))
        # the hook saw the message as a client sends it: CRLF lines, unstuffed
        m = re.search(r"script: mail (\{.*\})", p.stderr)
        mail = json.loads(m.group(1))
        self.assertEqual(bytes.fromhex(mail["raw"]), b"Subject: hi\r\n\r\n.dot\r\nbody\r\n")
        self.assertEqual(mail["recipients"], ["r1@x.y", "r2@x.y"])

    def test_log_shows_tables_one_level_deep(self):
        path = script(tmp_path("logtables.lua"), '''
local l = require "luasmtpd"
function on_mail(mail)
  local many = {}
  for i = 1, 20 do many[i] = i end
  l.log("shown", {mail.subject, to = mail.recipients}, many, setmetatable({}, {__tostring = function() return "own" end}))
end
''')
        p = self.replay(path)
        self.assertRegex(p.stderr, r'script: shown \{"hi", to = \{\.\.\.\}\} '
                                   r'\{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, \.\.\.\} own\n')

    def test_dry_run_only_says_what_the_actions_would_do(self):
        out = tmp_path("dry-run-out.txt")
        path = script(tmp_path("dryrun.lua"), '''
local l = require "luasmtpd"
function on_mail(mail)
  local r = assert(l.exec{"touch", "%(out)s.exec"})
  assert(l.write("%(out)s", mail.raw))
  assert(assert(l.http{url = "http://127.0.0.1:9/hook", body = "x"}).status == 200)
  assert(l.queue("mqtt", "cams/1", "event"))
  assert(l.forward(mail, {via = "smtp://127.0.0.1:9"}))
  assert(l.mqtt.publish("cams/1", "event"))
  l.log("exec status", r.status)
end
''' % dict(out=out))
        p = self.replay("--dry-run", path)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for said in (r"dry-run: exec touch \S+\.exec", r"dry-run: write \S+dry-run-out\.txt \d+ bytes",
                     r"dry-run: http POST http://127\.0\.0\.1:9/hook", r"dry-run: queue mqtt cams/1 event",
                     r"dry-run: forward mail \S+ via smtp://127\.0\.0\.1:9", r"dry-run: mqtt\.publish cams/1 5 bytes",
                     r"script: exec status 0"):
            self.assertRegex(p.stderr, said)
        self.assertFalse(os.path.exists(out) or os.path.exists(out + ".exec"))
        # without --dry-run, --replay performs them
        p = self.replay(path)
        self.assertTrue(os.path.exists(out + ".exec"), p.stderr)
        p = run_bin("--dry-run", path)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--dry-run goes with --replay FILE", p.stderr)

    def test_json_keeps_the_mail_tables_lists(self):
        path = script(tmp_path("json.lua"), '''
local l = require "luasmtpd"
function on_mail(mail)
  mail.raw = nil
  l.log("json", l.json(mail))
  l.log("other", l.json({ url = "http://a/b", list = {1, "two"}, empty = {} }))
  l.log("bad", select(2, pcall(l.json, { f = print })))
end
''')
        p = self.replay(path, message=b"Subject: cam/1\n\nbody\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        mail = json.loads(re.search(r"script: json (\{.*\})\n", p.stderr).group(1))
        self.assertEqual(mail["attachments"], [])
        self.assertEqual(mail["addresses"], {k: [] for k in ("from", "to", "cc", "bcc", "reply_to", "sender")})
        self.assertEqual((mail["subject"], mail["recipients"], mail["body"]), ("cam/1", ["postmaster@localhost"], ["body"]))
        self.assertIn('"subject":"cam/1"', p.stderr)         # "/" left as it is
        other = json.loads(re.search(r"script: other (\{.*\})\n", p.stderr).group(1))
        self.assertEqual(other, {"url": "http://a/b", "list": [1, "two"], "empty": {}})
        self.assertIn("script: bad json: Cannot serialise function", p.stderr)

    def test_ids_do_not_repeat_across_runs(self):
        ids = set()
        for _ in range(10):
            p = self.replay()
            ids.add(re.search(r"queued as (\S+)", p.stdout).group(1))
        self.assertEqual(len(ids), 10, ids)
        for i in ids:
            self.assertRegex(i, r"^[0-9A-F]{16}\.1$")
        # servers started one after the other, within a second or so
        got = set()
        for _ in range(3):
            with Server() as srv:
                socket.create_connection((srv.host, srv.port)).close()
                got.add(srv.wait_log(r"\[([0-9A-F]{16})\] connect").group(1))
        self.assertEqual(len(got), 3, got)

    def test_rejected_at_each_stage(self):
        for args, reply in ((("--from", "x-false@b.c"), "550 5.7.1"),
                            (("--to", "x-false@b.c"), "550 5.1.1"),
                            (("--to", "data-false@b.c"), "554 5.7.1")):
            p = self.replay(*args, VERDICTS)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn("S: " + reply, p.stdout)
            self.assertTrue(p.stdout.endswith("rejected\n"))
        p = self.replay(VERDICTS, message=b"Subject: x-false\n\nb\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("S: 554 5.6.0 Message rejected", p.stdout)

    def test_default_script_and_defaults(self):
        p = self.replay()
        self.assertEqual(p.returncode, 0)
        self.assertIn("MAIL FROM:<replay@localhost>", p.stdout)
        self.assertIn("RCPT TO:<postmaster@localhost>", p.stdout)
        self.assertIn("\nsmtp.mail = {", p.stdout)

    def test_usage(self):
        p = self.run_bin("--replay", "/nonexistent.eml")
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot read /nonexistent.eml", p.stderr)
        p = self.run_bin("--from", "a@b.c")
        self.assertEqual(p.returncode, 2)
        self.assertIn("go with --replay", p.stderr)


class Lifecycle(ServerTest):
    ARGS = (os.path.join(HERE, "scripts", "lifecycle.lua"),)

    def close_with(self, mode):
        c = self.srv.client()
        self.assertReply(c.cmd("EHLO " + mode), 250)
        c.cmd("QUIT")
        self.assertTrue(c.closed())

    def test_on_close_failures_are_logged_and_harmless(self):
        self.close_with("close-error")
        self.assertTrue(self.srv.wait_log(r"on_close: .*lifecycle\.lua:\d+: on_close failure"))
        self.assertTrue(self.srv.wait_log(r"stack traceback"))
        self.close_with("close-sleep")
        self.assertTrue(self.srv.wait_log(r"on_close: .*on_close may not wait"))
        self.close_with("close-yield")
        self.assertTrue(self.srv.wait_log(r"on_close: yielded outside a luasmtpd wait"))
        self.assertEqual(self.srv.count_log(r"answering 451"), 0)
        self.close_with("fine")
        self.assertTrue(self.srv.wait_log(r"script: closed fine"))
        c = self.session()
        self.assertReply(self.transaction(c), 250)

    def test_kept_session_is_cut_loose(self):
        self.close_with("keep")
        self.assertTrue(self.srv.wait_log(r"script: closed keep"))
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<stale@test>"), 250)
        self.assertTrue(self.srv.wait_log(r"script: stale: false .*the session has ended"))
        self.assertTrue(self.srv.wait_log(r"script: write: false .*read-only"))
        self.assertTrue(self.srv.wait_log(r"script: tostring: session \(ended\)"))
