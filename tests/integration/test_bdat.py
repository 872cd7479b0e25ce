"""CHUNKING (RFC 3030): BDAT from raw sockets for the edge cases, from
Perl's Net::SMTP (its bdat and bdatlast), and Postfix's smtp client
relaying to luasmtpd (a throwaway Postfix instance, as make bench runs
it): Postfix 3.7 sends DATA even when CHUNKING is offered, and must go on
working so."""
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import time
import unittest

from harness import Server

HERE = os.path.dirname(os.path.abspath(__file__))
DUMP = os.path.join(HERE, "scripts", "dump_mail.lua")


def converse(port, data, wait_for):
    """Send data at once (pipelined), read until wait_for is in the replies."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.recv(200)
    s.sendall(data)
    out = b""
    deadline = time.monotonic() + 10
    while wait_for not in out and time.monotonic() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()


def replies(text):
    return [line[:3] for line in text.split("\r\n") if line[:3].isdigit() and line[3:4] == " "]


class Chunks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--max-size", "4K", DUMP)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def mails(self):
        return [json.loads(m[5:]) for m in self.srv.stdout().splitlines() if m.startswith("MAIL ")]

    def test_ehlo_offers_chunking_and_binarymime(self):
        out = converse(self.srv.port, b"EHLO x\r\nQUIT\r\n", b"221")
        self.assertIn("250-CHUNKING\r\n", out)
        self.assertIn("250-BINARYMIME\r\n", out)

    def test_pipelined_chunks_are_the_message_byte_for_byte(self):
        msg = b"Subject: chunks\r\n\r\n.line with a dot\r\n.\r\nbare\rCR and bare\nLF\r\n\x00\xff end"
        a, b = msg[:21], msg[21:]
        out = converse(self.srv.port, b"EHLO x\r\nMAIL FROM:<cam@site>\r\nRCPT TO:<ops@site>\r\n"
                       b"BDAT %d\r\n%sBDAT %d LAST\r\n%sQUIT\r\n" % (len(a), a, len(b), b), b"221")
        self.assertEqual(replies(out), ["220", "250", "250", "250", "250", "250", "221"][1:], out)
        self.assertIn("250 2.0.0 21 octets received", out)
        self.assertTrue(self.srv.wait_log(r"^MAIL .*\"subject\":\"chunks\"", stdout=True))
        mail = [m for m in self.mails() if m["subject"] == "chunks"][0]
        self.assertEqual(bytes.fromhex(mail["raw"]), msg)   # no dot-unstuffing, bare CR and LF kept

    def test_bdat_0_last_ends_the_message(self):
        out = converse(self.srv.port, b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 17\r\n"
                       b"Subject: zero\r\n\r\nBDAT 0 LAST\r\nQUIT\r\n", b"221")
        self.assertRegex(out, r"250 2.0.0 Ok: queued as \S+\r\n221")
        self.assertTrue(self.srv.wait_log(r"^MAIL .*\"subject\":\"zero\"", stdout=True))

    def test_data_after_bdat_is_503(self):
        out = converse(self.srv.port, b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcDATA\r\n"
                       b"BDAT 0 LAST\r\nQUIT\r\n", b"221")
        self.assertIn("503 5.5.1 DATA cannot follow BDAT in one transaction", out)
        self.assertRegex(out, r"queued as")

    def test_a_chunk_out_of_order_is_skipped_never_read_as_commands(self):
        out = converse(self.srv.port, b"EHLO x\r\nBDAT 15\r\nMAIL FROM:<x>\r\nRSET\r\nQUIT\r\n", b"221")
        self.assertEqual(replies(out)[1:], ["503", "250", "221"], out)
        self.assertIn("503 5.5.1 Need MAIL before BDAT", out)

    def test_a_refused_session_skips_the_chunk_too(self):
        with Server(os.path.join(HERE, "scripts", "refuse_connect.lua")) as srv:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            self.assertTrue(s.recv(200).startswith(b"554 "))
            s.sendall(b"BDAT 12\r\nNOOP\r\nNOOP\r\nQUIT\r\n")
            out = b""
            while b"221" not in out:
                chunk = s.recv(1000)
                if not chunk:
                    break
                out += chunk
            s.close()
            self.assertEqual(replies(out.decode()), ["503", "221"], out)

    def test_over_max_size_552_as_soon_as_the_total_passes_then_skipped(self):
        big = b"x" * 3000
        out = converse(self.srv.port, b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3000\r\n" + big +
                       b"BDAT 3000\r\n" + big + b"BDAT 4 LAST\r\nRSETNOOP\r\nQUIT\r\n", b"221")
        self.assertEqual(replies(out)[1:], ["250", "250", "250", "552", "503", "250", "221"], out)
        self.assertTrue(self.srv.wait_log(r"refused: 6000 bytes over --max-size 4096"))

    def test_binarymime_takes_bdat_only(self):
        out = converse(self.srv.port, b"EHLO x\r\nMAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<c@d>\r\nDATA\r\n"
                       b"BDAT 3 LAST\r\n\x00\x01\x02QUIT\r\n", b"221")
        self.assertIn("503 5.5.1 BODY=BINARYMIME takes BDAT, not DATA", out)
        self.assertRegex(out, r"queued as")

    def test_bad_sizes_are_501(self):
        for arg in (b"", b"x", b"-1", b"10 FIRST", b"1" * 19, b"10 LAST x"):
            out = converse(self.srv.port, b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT " + arg +
                           b"\r\nQUIT\r\n", b"221")
            self.assertIn("501 5.5.4 Syntax: BDAT size [LAST]", out, arg)

    def test_refused_by_on_data_the_chunk_is_skipped(self):
        """As after a refused DATA, the transaction stands: each first BDAT
        asks on_data again, and its chunk is skipped."""
        with Server("--max-size", "4K", os.path.join(HERE, "scripts", "refuse_data.lua")) as srv:
            out = converse(srv.port, b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 10\r\nRSET\r\nRSET"
                           b"BDAT 2 LAST\r\nxxNOOP\r\nQUIT\r\n", b"221")
            self.assertEqual(replies(out)[1:], ["250", "250", "554", "554", "250", "221"], out)
            self.assertEqual(out.count("554 5.7.1 no messages today"), 2)


NET_SMTP = r"""
use Net::SMTP;
my $smtp = Net::SMTP->new("127.0.0.1", Port => $ARGV[0], Hello => "perl.test") or die "connect: $@";
$smtp->mail("cam\@site.example", Bits => "binary") or die "mail: " . $smtp->message;   # BODY=BINARYMIME, then BDAT
$smtp->to("ops\@site.example") or die "rcpt";
$smtp->bdat("Subject: via Net::SMTP\r\n\r\n.first line\r\n") or die "bdat: " . $smtp->message;
$smtp->bdat("second\r\n") or die "bdat 2";
$smtp->bdatlast("last\r\n") or die "bdatlast: " . $smtp->message;
$smtp->quit;
"""


@unittest.skipUnless(shutil.which("perl"), "perl not installed")
class FromNetSMTP(unittest.TestCase):
    def test_net_smtp_sends_chunks(self):
        with Server(DUMP) as srv:
            p = subprocess.run(["perl", "-e", NET_SMTP, str(srv.port)], capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(srv.wait_log(r"^MAIL .*\"subject\":\"via Net::SMTP\"", stdout=True))
            self.assertEqual(srv.count_log(r"< BDAT \d+"), 3)
            self.assertTrue(srv.wait_log(r"< BDAT 6 LAST"))
            mail = json.loads([m for m in srv.stdout().splitlines() if m.startswith("MAIL ")][-1][5:])
            self.assertEqual(mail["text"], ".first line\nsecond\nlast\n")


@unittest.skipUnless(os.path.exists("/usr/lib/postfix/sbin/master") and os.geteuid() == 0,
                     "Postfix's master needs root")
class FromPostfix(unittest.TestCase):
    def test_postfix_relays_with_chunking_offered(self):
        sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
        from bench import PostfixRelay
        with Server("--max-size", "1M", DUMP) as srv:
            relay = PostfixRelay(srv.port)
            self.addCleanup(relay.stop)
            body = "".join("line %d\r\n.dot %d\r\n" % (i, i) for i in range(2000))
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as c:
                c.sendmail("cam@site.example", ["ops@site.example"],
                           "Subject: via postfix\r\nFrom: cam@site.example\r\n\r\n" + body)
            self.assertTrue(srv.wait_log(r"^MAIL .*\"subject\":\"via postfix\"", stdout=True, timeout=30))
            self.assertTrue(srv.wait_log(r"> 250-CHUNKING"))
            mail = json.loads([m for m in srv.stdout().splitlines() if m.startswith("MAIL ")][-1][5:])
            self.assertEqual(mail["text"].replace("\n", "\r\n"), body)


if __name__ == "__main__":
    unittest.main()
