/* The MIME extractor and the charset layer: inline cases for each rule,
 * then the corpus in tests/data, each file whole and cut at every length. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charset.h"
#include "mime.h"
#include "smtp_parse.h"
#include "test.h"

static const char *data_dir = "tests/data";

/* Messages are written with LF; crlf() gives the CRLF form a client sends. */
static char *crlf(const char *s, size_t *len_r)
{
    size_t n = strlen(s), o = 0;
    char *out = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            out[o++] = '\r';
        out[o++] = s[i];
    }
    out[o] = '\0';
    *len_r = o;
    return out;
}

struct parsed {
    char *msg;
    size_t len;
    struct mime *m;
};

static struct parsed parse_lim(const char *lf_text, const struct mime_limits *lim)
{
    struct parsed p;
    p.msg = crlf(lf_text, &p.len);
    if (mime_parse(p.msg, p.len, lim, &p.m) < 0) {
        fprintf(stderr, "mime_parse failed\n");
        exit(1);
    }
    return p;
}

static struct parsed parse(const char *lf_text)
{
    return parse_lim(lf_text, NULL);
}

static void done(struct parsed *p)
{
    mime_free(&p->m);
    free(p->msg);
}

/* The n-th part in document order (0 is the message). */
static const struct mime_part *nth(const struct mime *m, int n)
{
    const struct mime_part *p = m->root;
    while (p && n-- > 0)
        p = mime_next(p, true);
    return p;
}

static int count_parts(const struct mime *m)
{
    int n = 0;
    for (const struct mime_part *p = m->root; p; p = mime_next(p, true))
        n++;
    return n;
}

/* A part's body decoded (as text or as bytes), NUL-terminated, static. */
static const char *body(struct mime *m, const struct mime_part *p, bool text)
{
    static char out[65536];
    struct buf b;
    buf_init(&b, sizeof(out) - 1);
    if (p == NULL || mime_decode(m, p, text, &b) < 0) {
        buf_free(&b);
        return "(error)";
    }
    memcpy(out, buf_len(&b) ? buf_head(&b) : "", buf_len(&b));
    out[buf_len(&b)] = '\0';
    buf_free(&b);
    return out;
}

static const char *str(const char *s)
{
    return s ? s : "(null)";
}

#define CHECK_STR(got, want) \
    CHECK(strcmp(str(got), (want)) == 0, "got '%s', want '%s'", str(got), (want))

static void test_encoded_words(void)
{
    static const struct { const char *raw, *want; } cases[] = {
        { "=?utf-8?q?a?= =?utf-8?q?b?=", "ab" },                   /* joined */
        { "=?utf-8?q?a?=\t =?utf-8?b?Yg==?=", "ab" },
        { "=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b" },              /* text between stays */
        { "=?utf-8?q?=E2=82?= =?utf-8?q?=AC?=", "\xE2\x82\xAC" },  /* a character split */
        { "=?iso-8859-1?q?caf=E9?= =?utf-8?q?=C3=A9?=", "caf\xC3\xA9\xC3\xA9" },
        { "=?UTF-8?B?w6k?=", "\xC3\xA9" },                         /* padding left off */
        { "=?utf-8?Q?a_b?=", "a b" },
        { "=?utf-8*en?q?lang?=", "lang" },                         /* RFC 2231 language */
        { "=?utf-8?x?abc?=", "=?utf-8?x?abc?=" },                  /* not a word: kept */
        { "=?utf-8?q?open", "=?utf-8?q?open" },
        { "=?utf-8?q?two words?=", "=?utf-8?q?two words?=" },
        { "=?utf-8?q?" "?=", "" },
        { "a=?utf-8?q?b?=c", "abc" },
        { "=?utf-8?q?a?==?utf-8?q?b?=", "ab" },                    /* no blank between */
        { "=?koi8-r?b?8NLJ18XU?=", "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82" },
        { "=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E" },
        { "=?gb2312?b?1tDOxA==?=", "\xE4\xB8\xAD\xE6\x96\x87" },
        { "=?no-such-charset?q?ok=C3=A9=FF?=", "ok\xC3\xA9\xEF\xBF\xBD" },
        /* ISO-2022-JP read as CP50221: NEC's row 13 (No.), half-width katakana */
        { "=?iso-2022-jp?B?GyRCLWIbKEI=?=", "\xE2\x84\x96" },
        { "=?ISO-2022-JP?B?GyRCRnxLXBsoQg==?=", "\xE6\x97\xA5\xE6\x9C\xAC" },
        { "=?iso-2022-jp?B?GyhJMTIbKEI=?=", "\xEF\xBD\xB1\xEF\xBD\xB2" },
        /* a decoded line break does not split the field */
        { "=?utf-8?q?Alarm=0D=0ABcc:_x@evil?=", "Alarm  Bcc: x@evil" },
        { "=?x/../y?q?a?=", "a" },                                 /* no name for iconv */
        { "raw \xC3\xA9 and \xFF", "raw \xC3\xA9 and \xEF\xBF\xBD" },
        { "  padded  ", "padded" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char msg[512];
        snprintf(msg, sizeof(msg), "Subject: %s\n\nbody\n", cases[i].raw);
        struct parsed p = parse(msg);
        const char *got = mime_header(p.m->root, "subject");
        CHECK(got && strcmp(got, cases[i].want) == 0, "case %zu '%s': got '%s'", i, cases[i].raw,
              str(got));
        done(&p);
    }
}

static void test_headers(void)
{
    struct parsed p = parse("From sender@x Mon Jan  1 00:00:00 2024\n"
                            "Subject: a folded\n\tsubject\n  line\n"
                            "X-Empty:\n"
                            "Subject : second\n"
                            "RECEIVED: one\n"
                            "Received: two\n"
                            "\n"
                            "Not-A-Header: in the body\n");
    const struct mime_part *r = p.m->root;
    CHECK_STR(mime_header(r, "subject"), "a folded\tsubject  line");
    CHECK_STR(mime_header(r, "x-empty"), "");
    CHECK_STR(mime_header(r, "received"), "one");
    int n = 0;
    const char *want[][2] = { { "subject", "a folded\tsubject  line" }, { "x-empty", "" },
                              { "subject", "second" }, { "received", "one" }, { "received", "two" } };
    for (const struct mime_header *h = r->headers; h; h = h->next, n++)
        if (n < 5) {
            CHECK_STR(h->name, want[n][0]);
            CHECK_STR(h->value, want[n][1]);
        }
    CHECK(n == 5, "%d headers", n);
    CHECK_STR(body(p.m, r, true), "Not-A-Header: in the body\n");
    CHECK(p.m->nheaders == 5, "%u", p.m->nheaders);
    done(&p);

    /* a line that is no header ends them: it is the first line of the body */
    p = parse("Subject: x\nthis line has no colon\nFrom: later@x\n");
    CHECK(mime_header(p.m->root, "from") == NULL, "a header after the body began");
    CHECK_STR(body(p.m, p.m->root, true), "this line has no colon\nFrom: later@x\n");
    done(&p);

    /* headers to the end, no body; a fold before any field is dropped */
    p = parse(" orphan fold\nSubject: only");
    CHECK_STR(mime_header(p.m->root, "subject"), "only");
    CHECK(p.m->root->body == p.len && p.m->root->end == p.len, "empty body");
    done(&p);

    /* NUL: whole strings in headers, kept in bodies */
    static const char nul[] = "Subject: a\0b\r\n\r\nc\0d";
    struct mime *m;
    CHECK(mime_parse(nul, sizeof(nul) - 1, NULL, &m) == 0, "parse");
    CHECK_STR(mime_header(m->root, "subject"), "a\xEF\xBF\xBD" "b");
    CHECK(m->root->end - m->root->body == 3 && memcmp(nul + m->root->body, "c\0d", 3) == 0, "body");
    mime_free(&m);

    /* an empty message */
    CHECK(mime_parse("", 0, NULL, &m) == 0 && m->root && m->root->end == 0, "empty");
    CHECK_STR(m->root->type, "text/plain");
    mime_free(&m);
}

static void test_content_type(void)
{
    static const struct { const char *ct, *type, *charset, *boundary, *filename; } cases[] = {
        { NULL, "text/plain", NULL, NULL, NULL },                      /* RFC 2045 5.2 */
        { "TEXT/HTML; Charset=\"ISO-8859-1\"", "text/html", "iso-8859-1", NULL, NULL },
        { "text", "text/plain", NULL, NULL, NULL },                    /* malformed */
        { "text/plain/x; charset=utf-8", "text/plain", NULL, NULL, NULL },
        { "application/pdf; name=\"a \\\"b\\\".pdf\"", "application/pdf", NULL, NULL, "a \"b\".pdf" },
        { "application/pdf; name=spaced name.pdf ; x=y", "application/pdf", NULL, NULL,
          "spaced name.pdf" },
        { "multipart/mixed; boundary=\"with space\"", "multipart/mixed", NULL, "with space", NULL },
        { "multipart/mixed;\n boundary=plain", "multipart/mixed", NULL, "plain", NULL },
        { "multipart/mixed (comment); (c) boundary = \"b\"", "multipart/mixed", NULL, "b", NULL },
        { "text/plain; charset*=utf-8''UTF-8", "text/plain", "utf-8", NULL, NULL },
        { "x/y; name*1=\"b\"; name*0=\"a\"; name*2=c", "x/y", NULL, NULL, "abc" },
        { "x/y; name*0=a; name*2=c", "x/y", NULL, NULL, "a" },          /* a gap ends it */
        { "x/y; name=\"plain\"; name*=utf-8''%E2%82%AC", "x/y", NULL, NULL, "\xE2\x82\xAC" },
        { "x/y; name*=iso-8859-1'de'%E4rger", "x/y", NULL, NULL, "\xC3\xA4rger" },
        { "x/y; name*=no-quotes%20here", "x/y", NULL, NULL, "no-quotes here" },
        { "x/y; name*0*=utf-8''%C3; name*1*=%A9", "x/y", NULL, NULL, "\xC3\xA9" },
        { "x/y; name=\"=?utf-8?B?w6TDtsO8LmRhdA==?=\"", "x/y", NULL, NULL,
          "\xC3\xA4\xC3\xB6\xC3\xBC.dat" },
        { "x/y; filename=nope; =x; name", "x/y", NULL, NULL, NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s%s%s\n\n\n", cases[i].ct ? "Content-Type: " : "",
                 cases[i].ct ? cases[i].ct : "", cases[i].ct ? "\n" : "");
        struct parsed p = parse(msg);
        const struct mime_part *r = p.m->root;
        CHECK(strcmp(r->type, cases[i].type) == 0, "case %zu: type %s", i, r->type);
        CHECK(strcmp(str(r->charset), str(cases[i].charset)) == 0, "case %zu: charset %s", i,
              str(r->charset));
        CHECK(strcmp(str(r->boundary), str(cases[i].boundary)) == 0, "case %zu: boundary %s", i,
              str(r->boundary));
        CHECK(strcmp(str(r->filename), str(cases[i].filename)) == 0, "case %zu: filename %s", i,
              str(r->filename));
        done(&p);
    }
    /* disposition: its filename wins over the type's name; first header wins */
    struct parsed p = parse("Content-Type: image/png; name=type.png\n"
                            "Content-Disposition: Attachment; filename*=utf-8''d%C3%A9.png\n"
                            "Content-Disposition: inline\n"
                            "Content-Transfer-Encoding:  Base64 \n"
                            "Content-ID: <id@x>\n\naGk=\n");
    CHECK_STR(p.m->root->disposition, "attachment");
    CHECK_STR(p.m->root->filename, "d\xC3\xA9.png");
    CHECK_STR(p.m->root->content_id, "<id@x>");
    CHECK(p.m->root->encoding == MIME_BASE64, "encoding %d", p.m->root->encoding);
    CHECK_STR(body(p.m, p.m->root, false), "hi");
    done(&p);
}

static void test_multipart(void)
{
    struct parsed p = parse("Content-Type: multipart/mixed; boundary=\"b\"\n\n"
                            "preamble\n--bb\nnot a delimiter\n"
                            "--b \t\n"                                 /* transport padding */
                            "Content-Type: text/plain\n\none\n"
                            "--b\n"                                    /* no headers */
                            "\ntwo\n\n"
                            "--b\n"
                            "Content-Type: multipart/alternative; boundary=\"c\"\n\n"
                            "--c\nContent-Type: text/plain\n\ninner\n"
                            "--b\n"                                    /* closes c's part too */
                            "Content-Type: text/html\n\n<p>\n"
                            "--b--x\n"                                 /* not a close */
                            "--b--  \n"
                            "epilogue\n--b\nafter the end\n");
    struct mime *m = p.m;
    CHECK(count_parts(m) == 6, "%d parts", count_parts(m));
    CHECK_STR(body(m, nth(m, 1), true), "one");
    CHECK_STR(body(m, nth(m, 2), true), "two\n");
    CHECK_STR(nth(m, 3)->type, "multipart/alternative");
    CHECK_STR(body(m, nth(m, 4), true), "inner");
    CHECK_STR(body(m, nth(m, 5), true), "<p>\n--b--x");
    CHECK(nth(m, 4)->parent == nth(m, 3) && nth(m, 5)->parent == m->root, "structure");
    const struct mime_part *t, *h;
    mime_bodies(m, &t, &h);
    CHECK(t == nth(m, 1) && h == nth(m, 5), "bodies");
    CHECK(m->cut == MIME_CUT_NONE, "cut %d", m->cut);
    done(&p);

    /* a boundary past RFC 2046's 70 characters, and an empty one, still
     * delimit parts, as mail readers take them */
    static char bnd[1001], longb[3200];
    memset(bnd, 'x', 1000);
    snprintf(longb, sizeof(longb), "Content-Type: multipart/mixed; boundary=\"%s\"\n\n"
             "--%s\n\nfirst\n--%s--\n", bnd, bnd, bnd);
    p = parse(longb);
    CHECK(count_parts(p.m) == 2 && p.m->cut == MIME_CUT_NONE, "1,000-character boundary: %d parts",
          count_parts(p.m));
    CHECK_STR(body(p.m, nth(p.m, 1), true), "first");
    done(&p);
    p = parse("Content-Type: multipart/mixed; boundary=\"\"\n\n--\n\nfirst\n--\n\nsecond\n----\n");
    CHECK(count_parts(p.m) == 3, "empty boundary: %d parts", count_parts(p.m));
    CHECK_STR(body(p.m, nth(p.m, 2), true), "second");
    done(&p);

    /* unclosed: the last part runs to the end, less the final line break */
    p = parse("Content-Type: multipart/mixed; boundary=q\n\n--q\n\nlast\n");
    CHECK_STR(body(p.m, nth(p.m, 1), true), "last");
    done(&p);

    /* a part cut short in its headers by the next delimiter */
    p = parse("Content-Type: multipart/mixed; boundary=q\n\n--q\nX-A: 1\n--q\n\nb\n--q--\n");
    CHECK(count_parts(p.m) == 3, "%d parts", count_parts(p.m));
    CHECK_STR(mime_header(nth(p.m, 1), "x-a"), "1");
    CHECK_STR(body(p.m, nth(p.m, 1), true), "");
    CHECK_STR(body(p.m, nth(p.m, 2), true), "b");
    done(&p);

    /* multipart without a boundary: one part, its body as it is */
    p = parse("Content-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n");
    CHECK(count_parts(p.m) == 1 && !p.m->root->container, "no boundary");
    done(&p);

    /* digest parts default to messages; an attached message is parsed */
    p = parse("Content-Type: multipart/digest; boundary=d\n\n"
              "--d\n\nSubject: inner\n\ninner body\n"
              "--d\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeA==\n"
              "--d--\n");
    CHECK(count_parts(p.m) == 4, "%d parts", count_parts(p.m));
    CHECK_STR(nth(p.m, 1)->type, "message/rfc822");
    CHECK(mime_is_message(nth(p.m, 1)), "a message");
    CHECK_STR(mime_header(nth(p.m, 2), "subject"), "inner");
    CHECK_STR(body(p.m, nth(p.m, 2), true), "inner body");
    CHECK(!nth(p.m, 3)->container, "a base64 message is not parsed");
    mime_bodies(p.m, &t, &h);
    CHECK(t == NULL && h == NULL, "no body outside the messages");
    CHECK(mime_is_attachment(nth(p.m, 1), t, h) && mime_is_attachment(nth(p.m, 3), t, h), "attached");
    done(&p);

    /* a text part marked as attachment is not the text */
    p = parse("Content-Type: multipart/mixed; boundary=m\n\n"
              "--m\nContent-Disposition: attachment; filename=log.txt\n\nlog\n"
              "--m\n\nreal\n--m--\n");
    mime_bodies(p.m, &t, &h);
    CHECK(t == nth(p.m, 2), "text");
    CHECK(mime_is_attachment(nth(p.m, 1), t, h) && !mime_is_attachment(p.m->root, t, h), "attachment");
    done(&p);
}

static void test_transfer_encodings(void)
{
    static const struct { const char *cte, *charset, *raw, *text; } cases[] = {
        { "base64", "utf-8", "w6kg\n4oKs\n", "\xC3\xA9 \xE2\x82\xAC" },
        { "base64", NULL, "aGVs*bG8g\nd29y bGQ", "hello world" },        /* junk skipped */
        { "base64", NULL, "YQ==YQ==", "aa" },                           /* padded runs */
        { "base64", NULL, "YWJjZA", "abcd" },                           /* no padding */
        { "base64", NULL, "Y", "" },
        { "quoted-printable", "iso-8859-1", "caf=E9 \t\nsoft=\nbreak=\n", "caf\xC3\xA9\nsoftbreak" },
        { "quoted-printable", NULL, "a=3Db =ZZ =4", "a=b =ZZ =4" },
        { "quoted-printable", NULL, "=41=\n=42\n", "AB\n" },
        { "quoted-printable", NULL, "x==41\n", "x=A\n" },
        { "7bit", "windows-1252", "\x93quoted\x94\n", "\xE2\x80\x9Cquoted\xE2\x80\x9D\n" },
        { "8bit", "iso-2022-jp", "\x1B$BF|K\\8l\x1B(B\n", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\n" },
        { "8bit", "utf-8", "bad \xC3\x28 \xED\xA0\x80 \xF4\x90\x80\x80 ok\n",
          "bad \xEF\xBF\xBD( \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD "
          "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD ok\n" },
        { "8bit", "iso-8859-5", "\xBF\xE0\xD8\n", "\xD0\x9F\xD1\x80\xD0\xB8\n" },
        { "x-unknown", NULL, "as is\n", "as is\n" },
        { "binary", "shift_jis", "\x93\xfa\x96\x7b\n", "\xE6\x97\xA5\xE6\x9C\xAC\n" },
        { "8bit", "euc-jp", "\xC6\xFC\xCB\xDC\xB8\xEC", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E" },
        { "8bit", "iso-2022-jp", "\x1B$BF", "\xEF\xBF\xBD" },           /* cut mid-character */
        { "x-uuencode", NULL, "begin 644 a.txt\n#0V%T\n`\nend\n", "Cat" },
        { "uuencode", NULL, "junk first\r\nbegin 600 b\r\n%:&5L;&\\`\r\n`\r\nend\r\n", "hello" },
        { "x-uue", NULL, "begin 644 c\n,:&5L;&\\@=V]R;&0A\nend\n", "hello world!" },
        { "x-uuencode", NULL, "no begin line\n", "no begin line\n" },      /* kept as it is */
        { "x-uuencode", NULL, "begin 644 d\nM\n", "" },                     /* cut short: no crash */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char msg[512];
        snprintf(msg, sizeof(msg), "Content-Type: text/plain%s%s\nContent-Transfer-Encoding: %s\n\n%s",
                 cases[i].charset ? "; charset=" : "", cases[i].charset ? cases[i].charset : "",
                 cases[i].cte, cases[i].raw);
        struct parsed p = parse(msg);
        const char *got = body(p.m, p.m->root, true);
        CHECK(strcmp(got, cases[i].text) == 0, "case %zu (%s): got '%s'", i, cases[i].cte, got);
        done(&p);
    }
    /* bytes, not text: no charset, CRLF kept */
    struct parsed p = parse("Content-Transfer-Encoding: quoted-printable\n\na=\nb\nc=0D=0A");
    CHECK_STR(body(p.m, p.m->root, false), "ab\r\nc\r\n");
    done(&p);
}

static void test_limits(void)
{
    struct mime_limits lim = mime_default_limits;
    char msg[8192];
    size_t o = (size_t)snprintf(msg, sizeof(msg), "Content-Type: multipart/mixed; boundary=d0\n\n");
    for (int i = 1; i < 6; i++)
        o += (size_t)snprintf(msg + o, sizeof(msg) - o,
                              "--d%d\nContent-Type: multipart/mixed; boundary=d%d\n\n", i - 1, i);
    snprintf(msg + o, sizeof(msg) - o, "--d5\n\ndeepest\n");

    struct parsed p = parse(msg);
    CHECK(p.m->cut == MIME_CUT_NONE && count_parts(p.m) == 7, "%d parts", count_parts(p.m));
    done(&p);
    lim.depth = 3;
    p = parse_lim(msg, &lim);
    CHECK(p.m->cut == MIME_CUT_DEPTH, "cut %s", mime_cut_name(p.m->cut));
    CHECK(count_parts(p.m) == 4, "%d parts", count_parts(p.m));
    CHECK(nth(p.m, 3)->depth == 3 && !nth(p.m, 3)->container, "deepest part is a leaf");
    done(&p);

    lim = mime_default_limits;
    lim.parts = 3;
    p = parse_lim("Content-Type: multipart/mixed; boundary=b\n\n--b\n\n1\n--b\n\n2\n--b\n\n3\n--b--\n", &lim);
    CHECK(p.m->cut == MIME_CUT_PARTS && count_parts(p.m) == 3, "%s, %d parts",
          mime_cut_name(p.m->cut), count_parts(p.m));
    CHECK_STR(body(p.m, nth(p.m, 2), true), "2");
    done(&p);

    lim = mime_default_limits;
    lim.headers = 2;
    p = parse_lim("A: 1\nB: 2\nC: 3\n\nbody\n", &lim);
    CHECK(p.m->cut == MIME_CUT_HEADERS && p.m->nheaders == 2, "%s", mime_cut_name(p.m->cut));
    CHECK(mime_header(p.m->root, "c") == NULL, "third header kept");
    CHECK_STR(body(p.m, p.m->root, true), "body\n");
    done(&p);

    lim = mime_default_limits;
    lim.header_size = 16;
    p = parse_lim("Subject: 0123456789abcdef\n more\nX: y\n\nb\n", &lim);
    CHECK(p.m->cut == MIME_CUT_HEADER_SIZE, "%s", mime_cut_name(p.m->cut));
    CHECK_STR(mime_header(p.m->root, "subject"), "0123456");
    CHECK_STR(mime_header(p.m->root, "x"), "y");
    done(&p);
}

/* ---- the corpus ---- */

static char *read_file(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0, r;
    char *s = malloc(cap);
    while ((r = fread(s + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap)
            s = realloc(s, cap *= 2);
    }
    fclose(f);
    *len_r = n;
    return s;
}

static bool valid_utf8(const char *s, size_t n)
{
    struct buf b;
    buf_init(&b, 4 * n + 16);
    bool ok = utf8_append_valid(&b, s, n) == 0 && buf_len(&b) == n &&
              (n == 0 || memcmp(buf_head(&b), s, n) == 0);
    buf_free(&b);
    return ok;
}

/* What must hold of any parse: ranges nest inside the message and their
 * parents, strings are valid UTF-8, every body decodes. */
static int check_tree(struct mime *m, size_t len)
{
    int bad = 0;
    struct buf b;
    buf_init(&b, 8 * len + 64);
    for (const struct mime_part *p = m->root; p; p = mime_next(p, true)) {
        const struct mime_part *up = p->parent;
        if (!(p->start <= p->body && p->body <= p->end && p->end <= len))
            bad++;
        if (up && (p->start < up->body || p->end > up->end))
            bad++;
        if (up && p->depth != up->depth + 1)
            bad++;
        for (const struct mime_header *h = p->headers; h; h = h->next)
            if (!valid_utf8(h->value, strlen(h->value)))
                bad++;
        buf_clear(&b);
        if (mime_decode(m, p, true, &b) < 0 || !valid_utf8(buf_len(&b) ? buf_head(&b) : "", buf_len(&b)))
            bad++;
        buf_clear(&b);
        if (mime_decode(m, p, false, &b) < 0)
            bad++;
    }
    buf_free(&b);
    return bad;
}

struct expect {
    const char *file, *subject, *text_has;
    int parts;
    enum mime_cut cut;
};

static const struct expect expected[] = {
    { "plain.eml", "This is a test", "My mail body.\nSecond line.\n", 1, MIME_CUT_NONE },
    { "no_content_type.eml", "Zone 4 alarm", "ALARM zone 4\n", 1, MIME_CUT_NONE },
    { "alternative.eml", "Toner low", "5% \xE2\x80\x93 replace", 3, MIME_CUT_NONE },
    { "nested.eml", "Backup report", "Sauvegarde termin\xC3\xA9" "e. \nDur\xC3\xA9" "e : 12 min", 7,
      MIME_CUT_NONE },
    { "base64_text.eml", "Gr\xC3\xBC\xC3\x9F" "e aus K\xC3\xB6ln", "Gr\xC3\xBC\xC3\x9F" "e aus", 1,
      MIME_CUT_NONE },
    { "encoded_words.eml", "split char \xE2\x82\xAC joined and \xE4\xB8\xAD\xE6\x96\x87 text", "body", 1,
      MIME_CUT_NONE },
    { "message_rfc822.eml", "Fwd: original", "See the forwarded message.", 6, MIME_CUT_NONE },
    { "deep_nesting.eml", "deep", NULL, 33, MIME_CUT_DEPTH },
    { "missing_final_boundary.eml", "cut short", "part one", 3, MIME_CUT_NONE },
    { "preamble_epilogue.eml", "preamble", "the body", 2, MIME_CUT_NONE },
    { "mbox_from.eml", "mbox line first", "body\n", 1, MIME_CUT_NONE },
    { "headers_only.eml", "no body", "", 1, MIME_CUT_NONE },
    { "charsets_body.eml", "bodies", "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82", 5, MIME_CUT_NONE },
    { "attachment_text.eml", "log attached", "the real body", 3, MIME_CUT_NONE },
};

static void test_corpus_file(const char *name)
{
    char path[1024];
    size_t len;
    snprintf(path, sizeof(path), "%s/%s", data_dir, name);
    char *msg = read_file(path, &len);
    CHECK(msg != NULL, "cannot read %s", path);
    if (msg == NULL)
        return;
    struct mime *m;
    CHECK(mime_parse(msg, len, NULL, &m) == 0, "%s: parse", name);
    CHECK(check_tree(m, len) == 0, "%s: tree", name);
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        const struct expect *e = &expected[i];
        if (strcmp(e->file, name) != 0)
            continue;
        CHECK_STR(mime_header(m->root, "subject"), e->subject);
        CHECK(count_parts(m) == e->parts, "%s: %d parts", name, count_parts(m));
        CHECK(m->cut == e->cut, "%s: cut %s", name, mime_cut_name(m->cut));
        const struct mime_part *t, *h;
        mime_bodies(m, &t, &h);
        if (e->text_has)
            CHECK(t && strstr(body(m, t, true), e->text_has), "%s: text '%s'", name,
                  t ? body(m, t, true) : "(none)");
        else
            CHECK(t == NULL, "%s: text found", name);
    }
    mime_free(&m);

    /* every cut of it parses too (a message ends anywhere) */
    size_t step = len < 8192 ? 1 : len / 2000;
    int bad = 0;
    for (size_t n = 0; n < len; n += step) {
        char *copy = malloc(n ? n : 1);     /* exactly n bytes: ASan sees overreads */
        memcpy(copy, msg, n);
        if (mime_parse(copy, n, NULL, &m) < 0 || check_tree(m, n) != 0)
            bad++;
        mime_free(&m);
        free(copy);
    }
    CHECK(bad == 0, "%s: %d prefixes failed", name, bad);
    free(msg);
}

static void test_corpus(void)
{
    DIR *d = opendir(data_dir);
    CHECK(d != NULL, "cannot open %s", data_dir);
    if (d == NULL)
        return;
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".eml") == 0) {
            test_corpus_file(e->d_name);
            files++;
        }
    }
    closedir(d);
    CHECK(files >= 25, "only %d corpus files", files);
}

/*
 * Decoding never fails: every charset this machine's iconv knows, given
 * its worst inputs (all bytes invalid; every byte value; text that grows
 * when decoded), gives valid UTF-8 within the 4x bound callers allow.
 */
/* n bytes of p read as charset `name`: 0 when that gives valid UTF-8, else
 * charset_to_utf8's return code (1 for text that is no UTF-8); *len the
 * bytes it gave. */
static int decode_as(const char *name, const char *p, size_t n, size_t *len)
{
    struct charset_cache cc;
    struct buf out;
    charset_cache_init(&cc);
    buf_init(&out, 4 * n + 64);
    int rc = charset_to_utf8(&cc, name, strlen(name), p, n, &out);
    if (rc == 0 && !smtp_utf8_valid(buf_head(&out), buf_len(&out)))
        rc = 1;
    *len = buf_len(&out);
    buf_free(&out);
    charset_cache_free(&cc);
    return rc;
}

static void test_every_charset(void)
{
    static char ff[1000], all[1024];
    /* Japanese in UTF-8: read as a 7-bit or EUC charset it is all invalid */
    static const char ja[] = "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87";
    char text[2220];
    const struct { const char *what, *p; size_t n; } inputs[] = {
        { "0xFF x 1000", ff, sizeof(ff) }, { "every byte value", all, sizeof(all) },
        { "UTF-8 Japanese", text, sizeof(text) - 1 },
    };
    memset(ff, 0xFF, sizeof(ff));
    for (size_t i = 0; i < sizeof(all); i++)
        all[i] = (char)i;
    for (size_t i = 0; i + sizeof(ja) <= sizeof(text); i += sizeof(ja) - 1)
        memcpy(text + i, ja, sizeof(ja));
    text[sizeof(text) - 1] = '\0';

    FILE *list = popen("iconv -l 2>/dev/null", "r");
    char line[256], failed[3][128] = { "", "", "" };
    int names = 0;
    while (list && fgets(line, sizeof(line), list)) {
        for (char *name = strtok(line, ", /\n"); name; name = strtok(NULL, ", /\n")) {
            names++;
            for (size_t k = 0; k < 3; k++) {
                size_t len;
                int rc = decode_as(name, inputs[k].p, inputs[k].n, &len);
                if (rc != 0 && !failed[k][0])
                    snprintf(failed[k], sizeof(failed[k]), "%s (rc %d, %zu bytes)", name, rc, len);
            }
        }
    }
    if (list)
        pclose(list);
    CHECK(names > 100, "iconv -l lists the charsets: %d", names);
    /* glibc's ISO-2022-CN-EXT now and then reports an invalid sequence
     * after taking the whole input: nothing is left to skip (it once was
     * skipped anyway, and the length wrapped round).  Often, to catch it. */
    int cn_bad = 0;
    for (int round = 0; round < 100; round++) {
        size_t len;
        cn_bad += decode_as("ISO-2022-CN-EXT", text, sizeof(text) - 1, &len) != 0;
    }
    CHECK(cn_bad == 0, "ISO-2022-CN-EXT: %d of 100 rounds failed", cn_bad);
    for (size_t k = 0; k < 3; k++)
        CHECK(failed[k][0] == '\0', "%s decodes in every charset: not %s", inputs[k].what, failed[k]);
}

/* Uuencoded files inside a text, as mime_uu_block finds them. */
static void test_uu_blocks(void)
{
    static const struct { const char *text, *name, *bytes; size_t start; } cases[] = {
        { "see:\nbegin 644 a.txt\n#86)C\n`\nend\ntail\n", "a.txt", "abc", 5 },
        { "begin 0755 x\r\n#86)C\r\nend", "x", "abc", 0 },       /* CRLF, no last line break */
        { "begin 644 \n#86)C\nend\n", "", "abc", 0 },             /* no name */
        { "begin 644 a\n#86)C\n", NULL, NULL, 0 },                /* no end: not a block */
        { "begin 644 a\nnot uuencoded at all\nend\n", NULL, NULL, 0 },
        { "begin 64 a\n#86)C\nend\n", NULL, NULL, 0 },             /* a mode of 3 or 4 digits */
        { "begin 644a\n#86)C\nend\n", NULL, NULL, 0 },
        { "begin again tomorrow\nend\n", NULL, NULL, 0 },
        { "xbegin 644 a\n#86)C\nend\n", NULL, NULL, 0 },
        { "begin 644 a\n\"86)\nend\n", "a", "ab", 0 },             /* a last group left short */
        { "begin 644 a\n#86\nend\n", NULL, NULL, 0 },              /* too short for its length */
        { "begin 644 a\n#86)C   \nend\n", "a", "abc", 0 },         /* blanks after a line */
        { "begin 644 a\nend\n", "a", "", 0 },                        /* empty */
    };
    struct buf out;
    buf_init(&out, 1 << 16);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *t = cases[i].text;
        struct mime_uu b;
        bool found = mime_uu_block(t, strlen(t), 0, &b);
        CHECK(found == (cases[i].name != NULL), "case %zu: found %d", i, found);
        if (!found || !cases[i].name)
            continue;
        buf_clear(&out);
        CHECK(b.start == cases[i].start, "case %zu: start %zu", i, b.start);
        CHECK(b.name_len == strlen(cases[i].name) && memcmp(b.name, cases[i].name, b.name_len) == 0,
              "case %zu: name %.*s", i, (int)b.name_len, b.name);
        CHECK(mime_uu_decode(t, &b, &out) == 0 && buf_len(&out) == strlen(cases[i].bytes) &&
              memcmp(buf_head(&out), cases[i].bytes, buf_len(&out)) == 0, "case %zu: bytes", i);
        CHECK(b.end <= strlen(t) && (b.end == strlen(t) || t[b.end - 1] == '\n'), "case %zu: end %zu", i, b.end);
    }
    /* the second of two, from where the first ended */
    const char *two = "begin 644 a\n#86)C\nend\nbetween\nbegin 644 b\n!80``\nend\n";
    struct mime_uu b;
    CHECK(mime_uu_block(two, strlen(two), 0, &b) && mime_uu_block(two, strlen(two), b.end, &b) &&
          b.name_len == 1 && b.name[0] == 'b' && b.start == 30, "second block");
    buf_free(&out);
}

int main(void)
{
    if (getenv("LUASMTPD_TEST_DATA"))
        data_dir = getenv("LUASMTPD_TEST_DATA");
    test_encoded_words();
    test_headers();
    test_content_type();
    test_multipart();
    test_transfer_encodings();
    test_limits();
    test_uu_blocks();
    test_corpus();
    test_every_charset();
    return test_summary("test_mime");
}
