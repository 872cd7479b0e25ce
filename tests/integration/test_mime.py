"""The mail table on_mail receives: a differential test of the MIME
extractor against Python's email package (policy.default) over the corpus
in tests/data, then the table's own fields, options and limits."""
import email
import email.message
import email.policy
import email.utils
import json
import os
import smtplib
import subprocess
import unittest

from harness import BINARY, ServerTest, tmp_path

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
DUMP = os.path.join(HERE, "scripts", "dump_mail.lua")

# Where we knowingly read a message differently from Python (docs/hooks.md,
# "Where luasmtpd and Python's email differ").  The test fails on any other
# disagreement, and on an entry here that no longer disagrees.
DOCUMENTED = {
    ("deep_nesting.eml", "text"): "parts past depth 32 are not parsed (mail.truncated)",
    ("deep_nesting.eml", "attachments"): "the part at the depth limit is kept whole",
    ("long_headers.eml", "subject"): "blanks at the end of a header value are trimmed",
    ("nul_bytes.eml", "subject"): "a NUL in a header value becomes U+FFFD",
    ("qp_latin1.eml", "text"): "RFC 2045 6.7: blanks ending a quoted-printable line are dropped",
    ("unknown_charset.eml", "text"): "an unknown charset keeps valid UTF-8, replaces the rest",
    ("uuencode_in_text.eml", "text"): "a uuencoded file in the text is taken out of it",
    ("uuencode_in_text.eml", "attachments"): "... and is an attachment",
}


def replay(path, *args):
    p = subprocess.run([BINARY, "--log-level", "warn", "--replay", path, *args, DUMP],
                       capture_output=True, timeout=30)
    for line in p.stdout.split(b"\n"):
        if line.startswith(b"MAIL "):
            return json.loads(line[5:])
    raise AssertionError("no mail table for %s: %r %r" % (path, p.stdout[-300:], p.stderr[-600:]))


def corpus():
    return sorted(f for f in os.listdir(DATA) if f.endswith(".eml"))


def header_text(s):
    """Python keeps the 8-bit bytes of a header as surrogate escapes; we
    read them as UTF-8 (RFC 6532), U+FFFD where they are not: compared
    after the same reading."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def date_value(text):
    """A Date header by the time it gives (Python writes it anew, we keep
    the text), or the text when it gives none."""
    try:
        return email.utils.parsedate_to_datetime(text).isoformat()
    except (TypeError, ValueError, IndexError):
        return text


def python_view(raw):
    """What Python's email makes of a message, in the mail table's terms.
    Where Python itself fails, the failure is the field's value."""
    m = email.message_from_bytes(raw, policy=email.policy.default)

    def addresses(h):
        return [(header_text(a.display_name), header_text(a.addr_spec))
                for a in m[h].addresses] if m[h] is not None else []
    fields = {
        "subject": lambda: header_text(str(m["subject"])) if m["subject"] is not None else "",
        "date": lambda: (m["date"].datetime.isoformat() if m["date"].datetime else str(m["date"]))
                        if m["date"] is not None else "",
        "from": lambda: addresses("from"),
        "to": lambda: addresses("to"),
        "text": lambda: body("plain"),
        "html": lambda: body("html"),
        "attachments": lambda: attachments(),
    }

    def body(kind):
        part = m.get_body((kind,))
        return part.get_content().replace("\r\n", "\n") if part is not None else None

    def walk(part):
        yield part
        if part.is_multipart() and part.get_content_maintype() != "message":
            for sub in part.iter_parts():
                yield from walk(sub)

    def attachments():
        bodies = [m.get_body(("plain",)), m.get_body(("html",))]
        atts = []
        for part in walk(m):
            if any(part is b for b in bodies) or (part.is_multipart() and
                                                  part.get_content_maintype() == "multipart"):
                continue
            content = None
            if part.get_content_maintype() != "message":
                content = part.get_payload(decode=True).hex()
            atts.append((part.get_filename(), part.get_content_type(), content))
        return atts
    view = {}
    for key, get in fields.items():
        try:
            view[key] = get()
        except Exception as e:
            view[key] = "%s: %s" % (type(e).__name__, e)
    return view


def our_view(mail):
    view = {"subject": mail["subject"], "date": date_value(mail["date"])}
    for h in ("from", "to"):
        view[h] = [(a["name"], a["address"]) for a in mail["addresses"][h]]
    view["text"] = mail.get("text")
    view["html"] = mail.get("html")
    view["attachments"] = [(a.get("filename"), a["content_type"],
                            None if a["content_type"].startswith("message/") else a["content"])
                           for a in mail["attachments"]]
    return view


class Differential(unittest.TestCase):
    def test_corpus_against_python_email(self):
        found = {}
        for name in corpus():
            mail = replay(os.path.join(DATA, name))
            # Python reads the bytes as they came over SMTP, as we did
            py, ours = python_view(bytes.fromhex(mail["raw"])), our_view(mail)
            for field in py:
                if py[field] != ours[field]:
                    found[(name, field)] = "python %r, luasmtpd %r" % (py[field], ours[field])
        undocumented = {k: v[:400] for k, v in found.items() if k not in DOCUMENTED}
        self.assertEqual(undocumented, {}, "disagreements with Python's email")
        self.assertEqual(sorted(set(DOCUMENTED) - set(found)), [],
                         "documented differences that no longer differ")

    def test_every_corpus_message_encodes_as_json(self):
        for name in corpus():
            mail = replay(os.path.join(DATA, name))
            self.assertGreater(mail["encoded_size"], 0, name)
            self.assertIsInstance(mail["body"], (list, dict), name)   # {} is cjson's empty array


class MailTable(unittest.TestCase):
    def mail(self, name, *args):
        return replay(os.path.join(DATA, name), *args)

    def test_hsyco_fields_and_json(self):
        mail = self.mail("plain.eml")
        self.assertEqual(mail["from"], "My Name <me@example.com>")
        self.assertEqual(mail["returnpath"], "<me@example.com>")
        self.assertEqual(mail["body"], ["My mail body.", "Second line."])
        # HSYCO's documented event, byte for byte (without its Return-Path)
        with open(os.path.join(DATA, "plain.eml"), "rb") as f:
            raw = f.read().replace(b"Return-Path: <me@example.com>\r\n", b"")
            raw = raw.replace(b"Second line.\r\n", b"")
        path = tmp_path("hsyco.eml")
        with open(path, "wb") as f:
            f.write(raw)
        self.assertEqual(replay(path)["hsyco"],
                         '{"from":"My Name <me@example.com>","to":"test@hsyco.com",'
                         '"subject":"This is a test","date":"Mon, 25 Jan 2016 18:24:49 +0100",'
                         '"contenttype":"text/plain; charset=us-ascii","returnpath":"",'
                         '"body":["My mail body."]}')

    def test_hsyco_json_slashes_backslashes_and_quotes(self):
        # cjson escapes "/" as "\/"; hsyco_json undoes only that, so a
        # backslash before a slash in the text survives
        path = tmp_path("hsyco-slashes.eml")
        with open(path, "wb") as f:
            f.write(b'Subject: a\\/b "q" /c// \\\\/\r\nFrom: x/y <a@b.c>\r\n\r\n'
                    b'http://example.com/a/b\r\n\\/\\\\//\r\n\r\n')
        mail = replay(path)
        self.assertEqual(mail["subject"], 'a\\/b "q" /c// \\\\/')
        self.assertNotIn("\\/", mail["hsyco"].replace("\\\\", ""))
        event = json.loads(mail["hsyco"])
        for k in ("subject", "from", "body"):
            self.assertEqual(event[k], mail[k], k)
        self.assertEqual(event["body"], ["http://example.com/a/b", "\\/\\\\//", ""])

    def test_no_content_type_is_plain_text(self):
        mail = self.mail("no_content_type.eml")
        self.assertEqual(mail["contenttype"], "text/plain; charset=us-ascii")
        self.assertEqual(mail["text"], "ALARM zone 4\narmed by user 2\n")
        self.assertEqual(mail["body"], ["ALARM zone 4", "armed by user 2"])
        self.assertEqual(mail["returnpath"], "")
        self.assertNotIn("truncated", mail)

    def test_headers_shape(self):
        mail = self.mail("encoded_words.eml")
        self.assertEqual(mail["headers"]["from"], "André Pirard <PIRARD@vm1.ulg.ac.be>")
        self.assertEqual(mail["cc"], "日本語 <jp@x.example>")
        self.assertEqual(mail["reply_to"], "a bc <r@x.example>")
        names = [h["name"] for h in mail["header_list"]]
        self.assertEqual(names, ["from", "to", "cc", "subject", "reply-to", "date", "content-type"])
        mail = self.mail("many_headers.eml")
        received = [h["value"] for h in mail["header_list"] if h["name"] == "received"]
        self.assertEqual(len(received), 3000)
        self.assertTrue(received[0].startswith("from relay0.example "))
        self.assertEqual(mail["headers"]["received"], received[0])
        self.assertEqual(self.mail("plain.eml")["message_id"], "<1@example.com>")

    def test_addresses(self):
        path = tmp_path("addresses.eml")
        with open(path, "wb") as f:
            f.write(b"From: =?utf-8?q?Kamera_S=C3=BCd?= <cam1@site.example>\r\n"
                    b"To: Ops: a@site.example, \"Doe, J.\" <j@site.example>;, b@x.example (Bob)\r\n"
                    b"Reply-To: =?utf-8?q?=22Boss=22_=3Cboss=40corp=3E=2C?= <evil@x.example>\r\n"
                    b"Sender: =?utf-8?q?=40attacker.example?=@site.example\r\n\r\nbody\r\n")
        mail = replay(path)
        a = mail["addresses"]
        self.assertEqual(a["from"], [{"name": "Kamera Süd", "address": "cam1@site.example"}])
        self.assertEqual(a["to"], [{"name": "", "address": "a@site.example", "group": "Ops"},
                                   {"name": "Doe, J.", "address": "j@site.example", "group": "Ops"},
                                   {"name": "Bob", "address": "b@x.example"}])
        self.assertEqual(a["reply_to"], [{"name": '"Boss" <boss@corp>,', "address": "evil@x.example"}])
        self.assertEqual(a["sender"], [{"name": "", "address": "=?utf-8?q?=40attacker.example?=@site.example"}])
        self.assertEqual((a["cc"], a["bcc"]), ({}, {}))            # cjson's empty array
        # the header text is written back from the mailboxes: a decoded
        # name cannot pose as another mailbox, nor an address be decoded
        self.assertEqual(mail["from"], "Kamera Süd <cam1@site.example>")
        self.assertEqual(mail["to"], 'Ops: a@site.example, "Doe, J." <j@site.example>;, Bob <b@x.example>')
        self.assertEqual(mail["reply_to"], '"\\"Boss\\" <boss@corp>," <evil@x.example>')
        self.assertEqual(email.utils.getaddresses([mail["reply_to"]]), [('"Boss" <boss@corp>,', "evil@x.example")])
        self.assertEqual(mail["headers"]["sender"], "=?utf-8?q?=40attacker.example?=@site.example")

    def test_uuencoded_file_in_the_text(self):
        mail = self.mail("uuencode_in_text.eml")
        self.assertEqual(mail["text"], "Motion on camera 2, picture below.\n\n\n"
                                       "begin 644 is not a file\nZone 2.\n")
        self.assertNotIn("end", mail["body"])
        [att] = mail["attachments"]
        self.assertEqual((att["filename"], att["content_type"], att["disposition"], att["size"]),
                         ("snap 2.png", "image/png", "attachment", 521))
        self.assertEqual(bytes.fromhex(att["content"]), bytes(range(256)) * 2 + b"\x89PNG tail")
        # --rawbody leaves the body as it came
        self.assertIn("begin 644 snap 2.png", self.mail("uuencode_in_text.eml", "--rawbody")["body"])

    def test_alternative_and_rawbody(self):
        mail = self.mail("alternative.eml")
        self.assertEqual(mail["body"], ["Toner level: 5% – replace the cartridge soon.",
                                        "Device: HP-4th-floor"])
        self.assertIn("<p>Toner level", mail["html"])
        self.assertEqual(mail["attachments"], {})
        raw = self.mail("alternative.eml", "--rawbody")["body"]
        self.assertEqual(raw[:3], ["--alt-1", "Content-Type: text/plain; charset=utf-8",
                                   "Content-Transfer-Encoding: quoted-printable"])
        self.assertEqual((len(raw), raw[-1]), (13, "--alt-1--"))
        # nested: the first text/plain at any depth
        self.assertTrue(self.mail("nested.eml")["body"][0].startswith("Sauvegarde terminée."))

    def test_body_lines(self):
        with open(tmp_path("lines.eml"), "wb") as f:
            f.write(b"Subject: lines\r\n\r\n" + b"".join(b"line %d\r\n" % i for i in range(100)))
        mail = replay(tmp_path("lines.eml"))
        self.assertEqual(len(mail["body"]), 64)
        self.assertEqual(mail["text"].count("\n"), 100)
        self.assertEqual(replay(tmp_path("lines.eml"), "--body-lines", "3")["body"],
                         ["line 0", "line 1", "line 2"])
        self.assertEqual(replay(tmp_path("lines.eml"), "--body-lines", "0")["body"], {})
        with open(tmp_path("lines.eml"), "wb") as f:
            f.write(b"Subject: long\r\n\r\n" + "é".encode() * 5000 + b"\r\nnext\r\n")
        mail = replay(tmp_path("lines.eml"))
        self.assertEqual(mail["body"], ["é" * 4096, "next"])
        self.assertEqual(mail["truncated"], "line length")
        self.assertEqual(len(mail["text"]), 5001 + 5)

    def test_attachments(self):
        mail = self.mail("nested.eml")
        atts = {a["content_type"]: a for a in mail["attachments"]}
        self.assertEqual(sorted(atts), ["application/pdf", "image/png"])
        self.assertEqual(atts["image/png"]["content_id"], "<logo@nas>")
        self.assertEqual(atts["image/png"]["disposition"], "inline")
        self.assertEqual(bytes.fromhex(atts["image/png"]["content"]), bytes(range(256)) * 3)
        self.assertEqual(atts["application/pdf"]["filename"], "report.pdf")
        self.assertEqual(atts["application/pdf"]["size"], 3009)
        names = [a.get("filename") for a in self.mail("rfc2231.eml")["attachments"]]
        self.assertEqual(names, ["日本語.txt", "résumé.txt", "äöü.dat"])
        image = self.mail("image_only.eml")
        self.assertNotIn("text", image)
        self.assertEqual(image["body"], {})
        self.assertEqual(image["attachments"][0]["filename"], "snap.jpg")
        self.assertEqual(image["attachments"][0]["size"], 2006)

    def test_attached_message(self):
        mail = self.mail("message_rfc822.eml")
        self.assertEqual(mail["text"], "See the forwarded message.")
        att = mail["attachments"]
        self.assertEqual(len(att), 1)
        self.assertEqual(att[0]["content_type"], "message/rfc822")
        self.assertEqual(att[0]["filename"], "original.eml")
        self.assertEqual(att[0]["headers"]["subject"], "Originäl")
        self.assertTrue(bytes.fromhex(att[0]["content"]).startswith(b"From: orig@y.example\r\n"))

    def test_charsets(self):
        mail = self.mail("charsets_body.eml")
        self.assertEqual(mail["text"], "Привет, мир")
        texts = {a["filename"]: bytes.fromhex(a["content"]) for a in mail["attachments"]}
        self.assertEqual(texts["sjis.txt"], "日本語".encode("shift_jis"))  # bytes as sent
        self.assertEqual(mail["attachments"][0]["charset"], "shift_jis")

    def test_limits_flag(self):
        mail = self.mail("deep_nesting.eml")
        self.assertEqual(mail["truncated"], "depth")
        self.assertEqual(mail["subject"], "deep")


class OverSmtp(ServerTest):
    """The mail table of a message that came through a real client."""
    ARGS = (DUMP,)

    def test_smtplib_message_with_attachment(self):
        msg = email.message.EmailMessage()
        msg["From"] = "Kamera Süd <cam@site.example>"
        msg["To"] = "ops@site.example"
        msg["Subject"] = "Bewegung – Zone 3"
        msg.set_content("Bewegung erkannt.\nZone 3\n")
        msg.add_attachment(b"\xff\xd8" + bytes(5000) + b"\xff\xd9", maintype="image",
                           subtype="jpeg", filename="bild ü.jpg")
        with smtplib.SMTP("127.0.0.1", self.srv.port, timeout=10) as s:
            s.send_message(msg)
        m = self.srv.wait_log(r"^MAIL (\{.*\})$", stdout=True)
        self.assertTrue(m, self.srv.stdout()[-2000:])
        mail = json.loads(m.group(1))
        self.assertEqual(mail["subject"], "Bewegung – Zone 3")
        self.assertEqual(mail["from"], "Kamera Süd <cam@site.example>")
        self.assertEqual(mail["text"], "Bewegung erkannt.\nZone 3\n")
        self.assertEqual(mail["sender"], "cam@site.example")
        self.assertEqual(mail["recipients"], ["ops@site.example"])
        att = mail["attachments"][0]
        self.assertEqual((att["filename"], att["content_type"], att["size"]),
                         ("bild ü.jpg", "image/jpeg", 5004))
        self.assertEqual(bytes.fromhex(att["content"]), b"\xff\xd8" + bytes(5000) + b"\xff\xd9")


    def test_dsn_parameters_decoded(self):
        """RFC 3461's RET, ENVID, NOTIFY and ORCPT reach the mail table
        decoded; a recipient without them has no entry, a message with
        none has no dsn."""
        c = self.session()
        for cmd, code in (("MAIL FROM:<cam@site> RET=HDRS ENVID=cam1+2B42", 250),
                          ("RCPT TO:<ops@site> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ops+40site", 250),
                          ("RCPT TO:<log@site> NOTIFY=NEVER", 250), ("RCPT TO:<plain@site>", 250)):
            self.assertReply(c.cmd(cmd), code)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(b"Subject: dsn\r\n\r\nx\r\n.\r\n")
        self.assertReply(c.reply(), 250)
        m = self.srv.wait_log(r'^MAIL (\{.*"subject":"dsn".*\})$', stdout=True)
        self.assertEqual(json.loads(m.group(1))["dsn"],
                         {"ret": "HDRS", "envid": "cam1+42",
                          "rcpt": {"ops@site": {"notify": ["SUCCESS", "FAILURE"], "orcpt": "rfc822;ops@site"},
                                   "log@site": {"notify": ["NEVER"]}}})
        self.assertReply(self.transaction(c, body=b"Subject: none\r\n\r\nx\r\n"), 250)
        m = self.srv.wait_log(r'^MAIL (\{.*"subject":"none".*\})$', stdout=True)
        self.assertNotIn("dsn", json.loads(m.group(1)))
        for cmd in ("MAIL FROM:<a@b> RET=ALL", "MAIL FROM:<a@b> ENVID=a=b", "MAIL FROM:<a@b> ENVID=" + "x" * 101):
            self.assertReply(c.cmd(cmd), 501, "5.5.4")
        self.assertReply(c.cmd("MAIL FROM:<a@b>"), 250)
        for cmd in ("RCPT TO:<d@e> ORCPT=rfc822", "RCPT TO:<d@e> ORCPT=;x", "RCPT TO:<d@e> ORCPT=rfc822;+0D+0A",
                    "RCPT TO:<d@e> NOTIFY=SUCCESS NOTIFY=DELAY"):
            self.assertReply(c.cmd(cmd), 501, "5.5.4")


class TableOverMemoryCap(ServerTest):
    """A mail table larger than --lua-memory fails that message with 451;
    the server and the session go on."""
    ARGS = (DUMP, "--lua-memory", "1M", "--max-size", "4M")

    def test_big_message_then_small(self):
        c = self.session()
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2000
        self.assertReply(self.transaction(c, body=big), 451, "4.3.0")
        self.assertTrue(self.srv.wait_log(r"on_mail: cannot start: not enough memory"))
        self.assertReply(self.transaction(c, body=b"Subject: small\r\n\r\nok\r\n"), 250)
        self.assertTrue(self.srv.wait_log(r'^MAIL .*"subject":"small"', stdout=True))


if __name__ == "__main__":
    unittest.main()
