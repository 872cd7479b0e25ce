"""The MIME extractor on real-world mail: the 615 messages of
../shared/external_corpus (the test suites of eight other MIME parsers; see
its SOURCES.md), each sent through luasmtpd and compared field by field with
Python's email package (policy.default), as test_mime.py does for
tests/data.  The corpus is third-party data: it is read where it lies and
never copied into the project.  LUASMTPD_CORPUS names another place.

Every remaining difference is listed below, by class, with the reason we
read the message otherwise (docs/hooks.md has the same table).  The test
fails on a difference not listed, and on a listed one that has gone."""
import binascii
import concurrent.futures
import os
import unittest

from test_mime import HERE, our_view, python_view, replay

CORPUS = os.environ.get("LUASMTPD_CORPUS",
                        os.path.join(HERE, "..", "..", "..", "shared", "external_corpus"))

# class: (why we differ from Python, the "directory/file field" it covers)
DIFFERENCES = {
    "words joined": (
        "encoded words separated only by blanks are one text (RFC 2047 6.2); Python keeps the blank", [
            "mail-mime-parser/emails__m2001.eml to", "mail-mime-parser/emails__m2011.eml to",
            "mail-mime-parser/emails__m2012.eml to", "mail-mime-parser/emails__m2014.eml to",
            "mail/emails__error_emails__bad_subject.eml from", "php-mime-mail-parser/m0124.eml from",
        ]),
    "no decoding in addresses": (
        "an encoded word in an address is not decoded (RFC 2047 5(3)); Python decodes it into the address", [
            "mailparser/inline__address_security_Should_decode_and_reject_encoded_words_in_addr_spec_that_produce_invalid_.eml from",
            "mailparser/inline__address_security_Should_not_fabricate_address_from_bare_Base64_encoded_email.eml from",
            "mailparser/inline__address_security_Should_still_parse_legitimate_encoded_Name_email_addresses.eml to",
        ]),
    "comment as name": (
        "a comment after a bare address is its display name, as mail readers show it; Python drops it", [
            "mail/emails__multipart_report_emails__multi_address_bounce1.eml from",
            "mime4j/mimetools-testmsgs__german.eml from", "mime4j/mimetools-testmsgs__not-mime.eml from",
            "mimekit/mbox__content-length_005.eml from", "mimekit/mbox__content-length_019.eml from",
            "mimekit/mbox__content-length_023.eml from", "mimekit/mbox__content-length_023.eml to",
            "mimekit/mbox__content-length_026.eml from", "mimekit/mbox__content-length_026.eml to",
            "mimekit/mbox__content-length_028.eml from", "mimekit/messages__bounce.eml from",
            "mimekit/messages__startrek.eml from",
        ]),
    "broken address lists": (
        "off the grammar, the address is what is in angle brackets, else the word before the last '@', "
        "and what comes before it is display name; Python reads these otherwise", [
            "mail/emails__error_emails__missing_body.eml to",
            "mail/emails__plain_emails__mix_caps_content_type.eml from",
            "mail/emails__plain_emails__raw_email_multiple_from.eml from",
            "mail/emails__plain_emails__raw_email_multiple_from.eml to",
            "mail/emails__plain_emails__raw_email_with_at_display_name.eml to",
            "mailparser/inline__mail_parser_Transfer_encoding_gb2312_mime_words.eml from",
            "mimekit/mbox__content-length_006.eml from", "mimekit/mbox__content-length_006.eml to",
            "mimekit/messages__issue358.eml from", "mimekit/messages__stack-overflow.eml to",
        ]),
    "Python fails on the header": (
        "Python raises on a group in To, or on a decoded line break in a name; we read them", [
            "enmime/testdata__mail__qp-utf8-header-recursed.eml from",
            "mimekit/messages__delivery-status-no-blank-line.eml to",
            "mimekit/messages__delivery-status.anonymized.eml to", "mimekit/messages__delivery-status.eml to",
        ]),
    "blanks around header values": (
        "blanks at the ends of a header value are trimmed; Python keeps them", [
            "mail/emails__error_emails__bad_date_header.eml date",
            "mail/emails__error_emails__bad_date_header.eml subject",
            "mail/emails__error_emails__bad_subject.eml subject",
            "mail/emails__error_emails__empty_in_reply_to.eml subject",
            "mail/emails__error_emails__must_supply_encoding.eml subject",
        ]),
    "blanks before the colon": (
        "'Name : value' is a field (RFC 5322 4.5.3, obsolete syntax); Python ends the header block there", [
            "mail/emails__rfc2822__example13.eml text", "mail/emails__rfc2822__example13.eml to",
            "mime4j/testmsgs__obsolete.eml date", "mime4j/testmsgs__obsolete.eml subject",
            "mime4j/testmsgs__obsolete.eml text",
            "stalwart-mail-parser/malformed__019.eml attachments", "stalwart-mail-parser/malformed__019.eml date",
            "stalwart-mail-parser/malformed__019.eml html", "stalwart-mail-parser/malformed__019.eml subject",
            "stalwart-mail-parser/malformed__019.eml text", "stalwart-mail-parser/malformed__019.eml to",
        ]),
    "charsets Python lacks": (
        "iconv knows the charset, or the superset its writers meant (gb2312 as GB18030, ISO-2022-JP as "
        "CP50221, iso-8859-8-i/-e as ISO-8859-8, win-1257); Python raises or replaces", [
            "mailparser/inline__mail_parser_Transfer_encoding_8bit_Win_1257.eml text",
            "mailparser/inline__simple_parser_Parse_iso_8859_8_e_charset.eml text",
            "mailparser/inline__simple_parser_Parse_iso_8859_8_i_charset.eml text",
            "php-mime-mail-parser/failure.eml text", "php-mime-mail-parser/issue116.eml subject",
            "php-mime-mail-parser/issue149.eml subject", "php-mime-mail-parser/issue230.eml html",
            "php-mime-mail-parser/issue230.eml text",
        ]),
    "unknown charsets": (
        "an unknown charset keeps the text that is valid UTF-8 and replaces the rest; Python raises", [
            "enmime/testdata__low-quality__unk-charset-part.eml text",
            "enmime/testdata__mail__html-mime-bad-charset-inline.eml html",
            "enmime/testdata__mail__html-mime-bad-charset-inline.eml text",
            "enmime/testdata__mail__html-mime-bad-unknown-charset-inline.eml html",
            "enmime/testdata__mail__html-mime-bad-unknown-charset-inline.eml text",
            "mail-mime-parser/emails__invalid-charset.eml text", "mail/emails__plain_emails__raw_email10.eml text",
            "mailparser/inline__mail_parser_Text_encodings_HTML_encoding_Header_defined.eml html",
        ]),
    "8-bit text as UTF-8": (
        "8-bit text with no charset, or declared us-ascii, is read as UTF-8 (U+FFFD where it is not); "
        "Python replaces every 8-bit byte", [
            "enmime/testdata__low-quality__incorrect-charset.eml text",
            "enmime/testdata__mail__non-mime-missing-charset.eml html",
            "mail/emails__error_emails__content_transfer_encoding_plain.eml text",
            "mail/emails__plain_emails__raw_email5.eml text", "mail/emails__plain_emails__raw_email6.eml text",
            "mailparser/inline__mail_parser_Text_encodings_Plaintext_encoding_Default.eml text",
            "mailparser/inline__mail_parser_Transfer_encoding_8bit_Default_charset.eml text",
            "mailparser/inline__mail_parser_Transfer_encoding_Base64_Default_charset.eml text",
            "mailparser/inline__mail_parser_Transfer_encoding_Quoted_Printable_Default_charset.eml text",
            "mimekit/messages__feedback-report.eml text", "php-mime-mail-parser/m0009.eml text",
            "stalwart-mail-parser/thirdparty__010.eml text",
        ]),
    "iso-8859-1 as windows-1252": (
        "iso-8859-1 is read as windows-1252, as mail readers do; Python gives C1 control characters", [
            "mail/emails__attachment_emails__attachment_pdf_non_ascii.eml text",
            "mail/emails__error_emails__content_transfer_encoding_7-bit.eml html",
            "mail/emails__error_emails__content_transfer_encoding_7-bit.eml text",
        ]),
    "quoted-printable": (
        "blanks ending a quoted-printable line are dropped (RFC 2045 6.7), and a '=' that starts no "
        "escape is kept while the next one is read; Python keeps the blanks and reads '==' otherwise", [
            "mail/emails__attachment_emails__attachment_message_rfc822_inline_image.eml html",
            "mailparser/fixtures__nested.eml text", "php-mime-mail-parser/m0013.eml text",
            "mailparser/inline__mail_parser_Transfer_encoding_Invalid_Quoted_Printable.eml text",
        ]),
    "lenient base64": (
        "base64 is decoded leniently: characters outside the alphabet are skipped and decoding goes on "
        "after '=' padding (writers glue padded runs); Python stops there or returns the text undecoded", [
            "enmime/testdata__mail__epilogue-sample.eml attachments",
            "enmime/testdata__mail__mime-bad-content-transfer-encoding.eml text",
            "php-mime-mail-parser/m0018.eml attachments", "stalwart-mail-parser/thirdparty__002.eml attachments",
        ]),
    "transfer encoding with blanks": (
        "a Content-Transfer-Encoding with blanks after its name is read; Python ignores it", [
            "mime4j/mimetools-testmsgs__twopart.eml attachments",
            "stalwart-mail-parser/thirdparty__003.eml attachments",
        ]),
    "Content-Type without ';'": (
        "'application/pdf name=x' is read as if its ';' were there; Python takes it all as the type", [
            "enmime/testdata__mail__mime-bad-content-type.eml attachments",
            "enmime/testdata__mail__mime-blank-media-name.eml attachments",
            "stalwart-mail-parser/malformed__017.eml attachments",
        ]),
    "parameters": (
        "a parameter's unquoted value runs to ';', encoded words in it are decoded, a decoded line break "
        "is a blank; Python stops at a special character and keeps the words and breaks", [
            "mail/emails__attachment_emails__attachment_with_base64_encoded_name.eml attachments",
            "mail/emails__attachment_emails__attachment_with_unquoted_name.eml attachments",
            "mime4j/mimetools-testmsgs__multi-2evil.eml attachments",
            "mime4j/mimetools-testmsgs__russian.eml attachments",
            "mime4j/testmsgs__russian-headers.eml attachments",
            "php-mime-mail-parser/issue133.eml attachments", "php-mime-mail-parser/issue250.eml attachments",
        ]),
    "multiparts Python cannot split": (
        "a multipart with broken, missing or odd boundaries is read as its parts, or as the text it "
        "holds when no boundary occurs, or as nothing when it holds none; Python lists it as one "
        "attachment of its raw body", [
            "mail/emails__error_emails__bad_date_header2.eml attachments",
            "mail/emails__error_emails__empty_in_reply_to.eml attachments",
            "mail/emails__error_emails__missing_body.eml attachments",
            "mail/emails__error_emails__must_supply_encoding.eml attachments",
            "mail/emails__mime_emails__raw_email_with_binary_encoded.eml attachments",
            "mail/emails__mime_emails__raw_email_with_illegal_boundary.eml attachments",
            "mail/emails__mime_emails__raw_email_with_illegal_boundary.eml html",
            "mail/emails__mime_emails__raw_email_with_illegal_boundary.eml text",
            "mail/emails__plain_emails__raw_email_bad_time.eml attachments",
            "mail/emails__plain_emails__raw_email_bad_time.eml html",
            "mail/emails__plain_emails__raw_email_bad_time.eml text",
            "mime4j/mimetools-testmsgs__badbound.eml attachments", "mime4j/mimetools-testmsgs__badbound.eml text",
            "mime4j/testmsgs__ending-boundaries.eml attachments",
            "mime4j/testmsgs__missing-boundary.eml attachments", "mime4j/testmsgs__missing-boundary.eml text",
            "mime4j/testmsgs__missing-inner-boundary.eml attachments",
            "mime4j/testmsgs__missing-inner-start-boundary.eml attachments",
            "mime4j/testmsgs__multipartnopart.eml attachments",
            "mimekit/mbox__simple_001.eml attachments", "mimekit/mbox__simple_002.eml attachments",
            "mimekit/messages__empty-multipart.eml attachments",
            "stalwart-mail-parser/malformed__001.eml attachments",
            "stalwart-mail-parser/malformed__002.eml attachments", "stalwart-mail-parser/malformed__002.eml text",
            "stalwart-mail-parser/malformed__003.eml attachments",
            "stalwart-mail-parser/malformed__004.eml attachments", "stalwart-mail-parser/malformed__004.eml text",
            "stalwart-mail-parser/malformed__005.eml attachments", "stalwart-mail-parser/malformed__005.eml text",
            "stalwart-mail-parser/malformed__013.eml attachments",
        ]),
    "empty parts": (
        "a part with neither headers nor content is not an attachment, one with headers is, and an "
        "empty text part is an empty text; Python chooses otherwise", [
            "enmime/testdata__low-quality__bad-final-boundary.eml attachments",
            "mailparser/inline__cpanel_Simple_with_part_as_rfc822_with_bad_closing_boundary_01.eml attachments",
            "mailparser/inline__cpanel_Simple_with_part_as_rfc822_with_bad_closing_boundary_02.eml attachments",
            "mime4j/testmsgs__multipartemptypart.eml text",
            "stalwart-mail-parser/malformed__000.eml attachments", "stalwart-mail-parser/malformed__014.eml attachments",
        ]),
    "uuencoded files in the text": (
        "a uuencoded file (begin MODE NAME ... end) in the text body is taken out as an attachment, "
        "as mail readers show it; Python leaves it in the text", [
            "mail-mime-parser/emails__m0018.eml attachments", "mail-mime-parser/emails__m0018.eml text",
            "mime4j/mimetools-testmsgs__sig-uu.eml attachments", "mime4j/mimetools-testmsgs__sig-uu.eml text",
            "mime4j/mimetools-testmsgs__uu-zeegee.eml attachments",
            "mime4j/mimetools-testmsgs__uu-zeegee.eml text",
            "stalwart-mail-parser/legacy__049.eml attachments", "stalwart-mail-parser/legacy__049.eml text",
        ]),
    "multipart/related": (
        "the HTML of a multipart/related is its body even when an image comes first; Python finds none", [
            "mimekit/messages__multipart-related-mhtml.eml attachments",
            "mimekit/messages__multipart-related-mhtml.eml html",
        ]),
}


def corpus_files():
    for d in sorted(os.listdir(CORPUS)):
        if os.path.isdir(os.path.join(CORPUS, d)):
            for f in sorted(os.listdir(os.path.join(CORPUS, d))):
                yield "%s/%s" % (d, f)


def corpus_mail(rel):
    # up to 2 MB, written out as hex by the dump script: give it time (the
    # ASan build is slow)
    return replay(os.path.join(CORPUS, rel), "--hook-timeout", "60")


def compare(rel):
    mail = corpus_mail(rel)
    py, ours = python_view(bytes.fromhex(mail["raw"])), our_view(mail)
    return {"%s %s" % (rel, f): (py[f], ours[f]) for f in py if py[f] != ours[f]}, len(py)


class ExternalCorpus(unittest.TestCase):
    def test_against_python_email(self):
        if not os.path.isdir(CORPUS):
            self.skipTest("no external corpus at %s" % CORPUS)
        files = list(corpus_files())
        self.assertGreater(len(files), 600)
        found, checks = {}, 0
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for diffs, n in pool.map(compare, files):
                found.update(diffs)
                checks += n
        listed = {key: cls for cls, (_, keys) in DIFFERENCES.items() for key in keys}
        self.assertEqual(len(listed), sum(len(keys) for _, keys in DIFFERENCES.values()), "listed twice")
        new = {k: "python %.300r, luasmtpd %.300r" % v for k, v in sorted(found.items()) if k not in listed}
        self.assertEqual(new, {}, "differences from Python's email that are not listed")
        self.assertEqual(sorted(set(listed) - set(found)), [], "listed differences that have gone")
        print("external corpus: %d messages, %d checks, %d agree, %d listed differences in %d classes" %
              (len(files), checks, checks - len(found), len(found), len(DIFFERENCES)))

    def test_uuencoded_attachments_of_the_external_corpus(self):
        """x-uuencode parts decoded as Python's email decodes them (issue 21,
        item 3), on the shared corpus's messages from Netscape and Eudora."""
        if not os.path.isdir(CORPUS):
            self.skipTest("no external corpus at %s" % CORPUS)
        for name in ("emails__m1014.eml", "emails__m2010.eml", "emails__m3007.eml"):
            mail = corpus_mail("mail-mime-parser/" + name)
            py = python_view(bytes.fromhex(mail["raw"]))["attachments"]
            ours = our_view(mail)["attachments"]
            self.assertGreater(len(py), 0, name)
            self.assertEqual([a[2] for a in ours], [a[2] for a in py], name)
            self.assertTrue(all(a[2].startswith("89504e47") for a in ours if a[1] == "image/png"), name)


    def test_uuencoded_files_in_the_text(self):
        """The files taken out of a text body are the bytes binascii
        decodes from the block's lines."""
        if not os.path.isdir(CORPUS):
            self.skipTest("no external corpus at %s" % CORPUS)
        for rel in ("mime4j/mimetools-testmsgs__uu-zeegee.eml", "mime4j/mimetools-testmsgs__sig-uu.eml",
                    "stalwart-mail-parser/legacy__049.eml"):
            mail = corpus_mail(rel)
            files, lines = [], None
            for line in bytes.fromhex(mail["raw"]).split(b"\r\n"):
                if lines is None and line.startswith(b"begin "):
                    lines = []
                    name = line.split(b" ", 2)[2].decode() if line.count(b" ") >= 2 else ""
                elif lines is not None and line == b"end":
                    files.append((name or None, b"".join(binascii.a2b_uu(x) for x in lines)))
                    lines = None
                elif lines is not None:
                    lines.append(line)
            ours = [(a.get("filename"), bytes.fromhex(a["content"])) for a in mail["attachments"]]
            self.assertEqual(ours, files, rel)
            self.assertNotIn("\nbegin 6", mail["text"], rel)


if __name__ == "__main__":
    unittest.main()
