/* smtp_parse: verbs, RFC 5321 paths and parameters, and the DATA reader,
 * each table run whole and (for the resumable DATA reader) byte by byte. */
#include <string.h>

#include "smtp_parse.h"
#include "transcript.h"
#include "test.h"

static void test_commands(void)
{
    static const struct { const char *line; enum smtp_verb verb; const char *arg; } cases[] = {
        { "HELO example.com", SMTP_HELO, "example.com" },
        { "ehlo  host  ", SMTP_EHLO, "host" },
        { "MAIL FROM:<a@b>", SMTP_MAIL, "FROM:<a@b>" },
        { "Rcpt To:<a@b>", SMTP_RCPT, "To:<a@b>" },
        { "DATA", SMTP_DATA, "" },
        { "QUIT", SMTP_QUIT, "" },
        { "NOOP anything", SMTP_NOOP, "anything" },
        { "STARTTLS", SMTP_STARTTLS, "" },
        { "MAILX FROM:<a@b>", SMTP_UNKNOWN, "FROM:<a@b>" },
        { "MAI", SMTP_UNKNOWN, "" },
        { "", SMTP_UNKNOWN, "" },
        { "GET / HTTP/1.1", SMTP_UNKNOWN, "/ HTTP/1.1" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct smtp_cmd c;
        smtp_parse_command(cases[i].line, strlen(cases[i].line), &c);
        CHECK(c.verb == cases[i].verb, "'%s': verb %d", cases[i].line, c.verb);
        CHECK(smtp_ieq(c.arg, c.arglen, cases[i].arg) && c.arglen == strlen(cases[i].arg),
              "'%s': arg '%.*s'", cases[i].line, (int)c.arglen, c.arg);
    }
    struct smtp_cmd c;
    smtp_parse_command("DA\0A", 4, &c);
    CHECK(c.verb == SMTP_UNKNOWN, "a NUL in the verb is not DATA");
}

struct path_case {
    const char *arg;
    unsigned flags;
    enum smtp_path_status status;
    const char *addr;     /* expected address when OK */
    size_t nparams;
};

#define MAILF SMTP_PATH_NULL_OK
#define RCPTF SMTP_PATH_POSTMASTER_OK

static const struct path_case path_cases[] = {
    { "FROM:<user@example.com>", MAILF, SMTP_PATH_OK, "user@example.com", 0 },
    { "from:<user@example.com>", MAILF, SMTP_PATH_OK, "user@example.com", 0 },
    { "FROM: <user@example.com>", MAILF, SMTP_PATH_OK, "user@example.com", 0 },
    { "FROM:<>", MAILF, SMTP_PATH_OK, "", 0 },
    { "TO:<>", RCPTF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a.b.c@d-e.f>", MAILF, SMTP_PATH_OK, "a.b.c@d-e.f", 0 },
    { "FROM:<!#$%&'*+-/=?^_`{|}~@x.y>", MAILF, SMTP_PATH_OK, "!#$%&'*+-/=?^_`{|}~@x.y", 0 },
    { "FROM:<\"john doe\"@example.com>", MAILF, SMTP_PATH_OK, "\"john doe\"@example.com", 0 },
    { "FROM:<\"a\\\"b>c\"@example.com>", MAILF, SMTP_PATH_OK, "\"a\\\"b>c\"@example.com", 0 },
    { "FROM:<@relay.org,@r2.org:user@example.com>", MAILF, SMTP_PATH_OK, "user@example.com", 0 },
    { "FROM:<user@[192.168.1.1]>", MAILF, SMTP_PATH_OK, "user@[192.168.1.1]", 0 },
    { "FROM:<user@[IPv6:2001:db8::1]>", MAILF, SMTP_PATH_OK, "user@[IPv6:2001:db8::1]", 0 },
    { "FROM:<user@[x-tag:abc]>", MAILF, SMTP_PATH_OK, "user@[x-tag:abc]", 0 },
    { "FROM:<user@[300.1.1.1]>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<user@[IPv6:zz]>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@b> SIZE=100 BODY=8BITMIME", MAILF, SMTP_PATH_OK, "a@b", 2 },
    { "FROM:<a@b> SMTPUTF8", MAILF, SMTP_PATH_OK, "a@b", 1 },
    { "FROM:<a@b>  SIZE=1  ", MAILF, SMTP_PATH_OK, "a@b", 1 },
    { "TO:<Postmaster>", RCPTF, SMTP_PATH_OK, "Postmaster", 0 },
    { "TO:<postmaster>", RCPTF, SMTP_PATH_OK, "postmaster", 0 },
    { "FROM:<Postmaster>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "TO:<user@example.com>", RCPTF, SMTP_PATH_OK, "user@example.com", 0 },
    /* refused */
    { "FROM:user@example.com", MAILF, SMTP_PATH_BAD_PREFIX, NULL, 0 },
    { "FROM <a@b>", MAILF, SMTP_PATH_BAD_PREFIX, NULL, 0 },
    { "TO:<a@b>", MAILF, SMTP_PATH_BAD_PREFIX, NULL, 0 },
    { "FROM:", MAILF, SMTP_PATH_BAD_PREFIX, NULL, 0 },
    { "FROM:<;sleep 66;>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@b", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@b>x", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@b>>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@b> =x", MAILF, SMTP_PATH_BAD_PARAMS, NULL, 0 },
    { "FROM:<a@b> SIZE=", MAILF, SMTP_PATH_BAD_PARAMS, NULL, 0 },
    { "FROM:<a@b> SIZE==1", MAILF, SMTP_PATH_BAD_PARAMS, NULL, 0 },
    { "FROM:<user>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<@example.com>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a..b@c>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<.a@c>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a.@c>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@-c.d>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@c-.d>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@c..d>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@c.>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a b@c>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@b c>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a\r@b>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@b\r>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<\"a\rb\"@c>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@b>\r", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<\"unterminated@c>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@\xff.com>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<a@\xc0\xaf.com>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
    { "FROM:<@a:b@c>", MAILF, SMTP_PATH_OK, "b@c", 0 },
    { "FROM:<@a b@c>", MAILF, SMTP_PATH_BAD_ADDRESS, NULL, 0 },
};

/* The command line as the server meets it: "MAIL arg\r\n" through the line
 * reader, whole or one byte at a time, then the command and path parsers. */
static enum smtp_path_status parse_line(const struct path_case *c, size_t step, struct smtp_path *p)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s %s\r\n",
                     (c->flags & SMTP_PATH_NULL_OK) ? "MAIL" : "RCPT", c->arg);
    struct buf b;
    const char *l = NULL;
    size_t len = 0;
    enum buf_line r = BUF_LINE_AGAIN;
    buf_init(&b, 4096);
    for (int pos = 0; pos < n && r == BUF_LINE_AGAIN; pos += (int)step) {
        buf_append(&b, line + pos, (size_t)(n - pos) < step ? (size_t)(n - pos) : step);
        r = buf_getline(&b, SMTP_LINE_MAX, &l, &len);
    }
    enum smtp_path_status st = SMTP_PATH_BAD_PREFIX;
    if (r == BUF_LINE_OK) {
        struct smtp_cmd cmd;
        smtp_parse_command(l, len, &cmd);
        st = smtp_parse_path(cmd.arg, cmd.arglen, (c->flags & SMTP_PATH_NULL_OK) ? "FROM:" : "TO:",
                             c->flags, p);
    }
    buf_free(&b);
    return st;
}

static void test_paths(void)
{
    for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *c = &path_cases[i];
        const char *prefix = (c->flags & SMTP_PATH_NULL_OK) ? "FROM:" : "TO:";
        struct smtp_path p, q;
        enum smtp_path_status st = smtp_parse_path(c->arg, strlen(c->arg), prefix, c->flags, &p);
        /* The same through the line reader, whole and byte by byte.  A
         * trailing CR or space is the line's end, not the argument's. */
        size_t alen = strlen(c->arg);
        if (alen && c->arg[alen - 1] != '\r' && c->arg[alen - 1] != ' ') {
            for (size_t step = 1; step <= 1024; step *= 1024) {
                enum smtp_path_status st2 = parse_line(c, step, &q);
                CHECK(st2 == st && (st != SMTP_PATH_OK || strcmp(p.addr, q.addr) == 0),
                      "'%s' via the line reader in steps of %zu: status %d", c->arg, step, st2);
            }
        }
        CHECK(st == c->status, "'%s': status %d, want %d", c->arg, st, c->status);
        if (st == SMTP_PATH_OK && c->status == SMTP_PATH_OK) {
            CHECK(strcmp(p.addr, c->addr) == 0, "'%s': addr '%s'", c->arg, p.addr);
            CHECK(p.params.n == c->nparams, "'%s': %zu params", c->arg, p.params.n);
            CHECK(!p.utf8, "'%s': marked as UTF-8", c->arg);
        }
    }

    /* NUL inside an address */
    struct smtp_path p;
    CHECK(smtp_parse_path("FROM:<a\0b@c>", 12, "FROM:", MAILF, &p) == SMTP_PATH_BAD_ADDRESS,
          "NUL in an address is refused");

    /* UTF-8 addresses parse and are flagged for the SMTPUTF8 check */
    const char *u = "FROM:<j\xc3\xb6rg@b\xc3\xbc" "cher.de> SMTPUTF8";
    CHECK(smtp_parse_path(u, strlen(u), "FROM:", MAILF, &p) == SMTP_PATH_OK && p.utf8,
          "UTF-8 address flagged");

    /* limits: local part 64, domain 255, path 256 */
    char arg[600], local[80], dom[300];
    memset(local, 'a', 64); local[64] = '\0';
    snprintf(arg, sizeof(arg), "FROM:<%s@example.com>", local);
    CHECK(smtp_parse_path(arg, strlen(arg), "FROM:", MAILF, &p) == SMTP_PATH_OK, "64-octet local part");
    memset(local, 'a', 65); local[65] = '\0';
    snprintf(arg, sizeof(arg), "FROM:<%s@example.com>", local);
    CHECK(smtp_parse_path(arg, strlen(arg), "FROM:", MAILF, &p) == SMTP_PATH_TOO_LONG, "65-octet local part");
    /* four labels of 63 and three dots: a 255-octet domain */
    size_t d = 0;
    for (int l = 0; l < 4; l++) {
        memset(dom + d, 'd', 63);
        d += 63;
        if (l < 3)
            dom[d++] = '.';
    }
    dom[d] = '\0';
    CHECK(d == 255, "domain built to 255");
    snprintf(arg, sizeof(arg), "FROM:<a@%s>", dom + 4);   /* 251-octet domain: path 255 */
    CHECK(smtp_parse_path(arg, strlen(arg), "FROM:", MAILF, &p) == SMTP_PATH_OK, "path of 255 octets");
    snprintf(arg, sizeof(arg), "FROM:<a@%s>", dom);
    CHECK(smtp_parse_path(arg, strlen(arg), "FROM:", MAILF, &p) == SMTP_PATH_TOO_LONG,
          "path over 256 octets (a@ + 255)");
    memset(dom, 'd', 64); dom[64] = '\0';
    snprintf(arg, sizeof(arg), "FROM:<a@%s.com>", dom);
    CHECK(smtp_parse_path(arg, strlen(arg), "FROM:", MAILF, &p) == SMTP_PATH_BAD_ADDRESS, "64-octet label");

    /* too many parameters */
    strcpy(arg, "FROM:<a@b>");
    for (int k = 0; k < SMTP_PARAMS_MAX + 1; k++)
        strcat(arg, " X=1");
    CHECK(smtp_parse_path(arg, strlen(arg), "FROM:", MAILF, &p) == SMTP_PATH_BAD_PARAMS, "17 parameters");

    /* parameter lookup */
    const char *pa = "FROM:<a@b> size=42 SMTPUTF8";
    CHECK(smtp_parse_path(pa, strlen(pa), "FROM:", MAILF, &p) == SMTP_PATH_OK, "params parse");
    const struct smtp_param *sp = smtp_param_find(&p.params, "SIZE");
    CHECK(sp && sp->valuelen == 2 && memcmp(sp->value, "42", 2) == 0, "SIZE=42 found");
    sp = smtp_param_find(&p.params, "smtputf8");
    CHECK(sp && sp->value == NULL, "SMTPUTF8 without value");
    CHECK(smtp_param_find(&p.params, "BODY") == NULL, "absent parameter");
}

static void test_utf8(void)
{
    CHECK(smtp_utf8_valid("abc", 3), "ascii");
    CHECK(smtp_utf8_valid("\xe2\x82\xac", 3), "euro sign");
    CHECK(smtp_utf8_valid("\xf0\x9f\x98\x80", 4), "emoji");
    CHECK(!smtp_utf8_valid("\xc0\xaf", 2), "overlong");
    CHECK(!smtp_utf8_valid("\xed\xa0\x80", 3), "surrogate");
    CHECK(!smtp_utf8_valid("\xf4\x90\x80\x80", 4), "past U+10FFFF");
    CHECK(!smtp_utf8_valid("\xe2\x82", 2), "truncated");
    CHECK(!smtp_utf8_valid("\x80", 1), "lone continuation");
}

struct data_case {
    const char *name;
    const char *in;
    size_t inlen;           /* 0: strlen */
    int done;               /* 1 when the input holds the end of data */
    const char *msg;        /* message expected */
    size_t msglen;          /* 0: strlen */
    size_t rest;            /* bytes left after the end */
};

static const struct data_case data_cases[] = {
    { "simple", "Subject: x\r\n\r\nbody\r\n.\r\n", 0, 1, "Subject: x\r\n\r\nbody\r\n", 0, 0 },
    { "empty message", ".\r\n", 0, 1, "", 0, 0 },
    { "dot stuffing", "..a\r\n..\r\n.b\r\n.\r\n", 0, 1, ".a\r\n.\r\nb\r\n", 0, 0 },
    { "pipelined after end", "x\r\n.\r\nQUIT\r\n", 0, 1, "x\r\n", 0, 6 },
    { "no end yet", "line\r\n", 0, 0, "line\r\n", 0, 0 },
    { "smuggle lf.lf", "a\n.\nMAIL FROM:<x@y>\n", 0, 0, "a\n.\nMAIL FROM:<x@y>\n", 0, 0 },
    { "smuggle lf.crlf", "a\n.\r\nb", 0, 0, "a\n.\r\nb", 0, 0 },
    { "smuggle cr.cr", "a\r.\rb", 0, 0, "a\r.\rb", 0, 0 },
    { "smuggle crlf.lf", "a\r\n.\nb\r\n", 0, 0, "a\r\n\nb\r\n", 0, 0 },
    { "smuggle cr.crlf", "a\r.\r\nb", 0, 0, "a\r.\r\nb", 0, 0 },
    { "smuggle crlf.cr", "a\r\n.\rb", 0, 0, "a\r\n\rb", 0, 0 },
    { "real end after smuggle attempts", "a\n.\n\r\n.\r\n", 0, 1, "a\n.\n\r\n", 0, 0 },
    { "nul bytes kept", "a\0b\r\n.\r\n", 8, 1, "a\0b\r\n", 5, 0 },
    { "bare cr at start", "\r\r\n.\r\n", 0, 1, "\r\r\n", 0, 0 },
    { "long line", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n.\r\n", 0, 1,
      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 0, 0 },
};

static void run_data(const struct data_case *c, size_t step, const char *how)
{
    size_t inlen = c->inlen ? c->inlen : strlen(c->in);
    size_t msglen = c->msglen ? c->msglen : strlen(c->msg);
    struct smtp_data d;
    struct buf sink;
    bool done = false;
    size_t pos = 0;

    smtp_data_init(&d);
    buf_init(&sink, 1 << 20);
    while (pos < inlen && !done) {
        size_t n = inlen - pos < step ? inlen - pos : step;
        size_t used = smtp_data_scan(&d, c->in + pos, n, &sink, &done);
        CHECK(used == n || done, "%s (%s): consumed %zu of %zu without ending", c->name, how, used, n);
        pos += used;
    }
    CHECK(done == (c->done != 0), "%s (%s): done=%d", c->name, how, done);
    if (c->done)
        CHECK(inlen - pos == c->rest, "%s (%s): %zu bytes left", c->name, how, inlen - pos);
    CHECK(buf_len(&sink) == msglen && (msglen == 0 || memcmp(buf_head(&sink), c->msg, msglen) == 0),
          "%s (%s): message of %zu bytes differs", c->name, how, buf_len(&sink));
    CHECK(d.size == msglen, "%s (%s): size %zu", c->name, how, d.size);
    buf_free(&sink);
}

static void test_data(void)
{
    for (size_t i = 0; i < sizeof(data_cases) / sizeof(data_cases[0]); i++) {
        run_data(&data_cases[i], 1 << 20, "whole");
        run_data(&data_cases[i], 1, "byte by byte");
        run_data(&data_cases[i], 3, "3-byte pieces");
    }

    /* past the sink's cap: counted, not stored, still ends */
    struct smtp_data d;
    struct buf sink;
    bool done;
    char big[3000];
    memset(big, 'x', sizeof(big));
    memcpy(big + sizeof(big) - 5, "\r\n.\r\n", 5);
    smtp_data_init(&d);
    buf_init(&sink, 1024);
    size_t used = smtp_data_scan(&d, big, sizeof(big), &sink, &done);
    CHECK(done && used == sizeof(big), "oversized message still ends");
    CHECK(d.overflow, "oversized message flagged");
    CHECK(d.size == sizeof(big) - 3, "oversized message counted: %zu", d.size);
    CHECK(buf_len(&sink) == 0, "oversized message: none of it held");
    buf_free(&sink);
}

static void test_bdat(void)
{
    static const struct { const char *arg; bool ok; unsigned long long size; bool last; } cases[] = {
        { "0", true, 0, false },
        { "0 LAST", true, 0, true },
        { "1024 last", true, 1024, true },
        { "1024  LAST", true, 1024, true },
        { "999999999999999999", true, 999999999999999999ull, false },
        { "1000000000000000000", false, 0, false },   /* 19 digits */
        { "", false, 0, false },
        { "LAST", false, 0, false },
        { "-1", false, 0, false },
        { "10 FIRST", false, 0, false },
        { "10 LAST x", false, 0, false },
        { "10x", false, 0, false },
        { " 10", false, 0, false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned long long size = 7;
        bool last = false;
        bool ok = smtp_parse_bdat(cases[i].arg, strlen(cases[i].arg), &size, &last);
        CHECK(ok == cases[i].ok, "BDAT %s: %d", cases[i].arg, ok);
        if (ok && cases[i].ok)
            CHECK(size == cases[i].size && last == cases[i].last, "BDAT %s: %llu %d", cases[i].arg, size, last);
    }
}

static void test_dsn(void)
{
    static const struct { const char *in; bool ok; unsigned bits; } notify[] = {
        { "NEVER", true, SMTP_NOTIFY_NEVER }, { "success", true, SMTP_NOTIFY_SUCCESS },
        { "SUCCESS,FAILURE,DELAY", true, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY },
        { "NEVER,SUCCESS", false, 0 }, { "SUCCESS,SUCCESS", false, 0 }, { "", false, 0 },
        { "SUCCESS,", false, 0 }, { ",FAILURE", false, 0 }, { "ALWAYS", false, 0 },
    };
    for (size_t i = 0; i < sizeof(notify) / sizeof(notify[0]); i++) {
        unsigned bits = 0;
        bool ok = smtp_parse_notify(notify[i].in, strlen(notify[i].in), &bits);
        CHECK(ok == notify[i].ok && (!ok || bits == notify[i].bits), "NOTIFY=%s: %d %u", notify[i].in, ok, bits);
    }
    CHECK(strcmp(smtp_notify_name(SMTP_NOTIFY_FAILURE), "FAILURE") == 0 && smtp_notify_name(16) == NULL,
          "NOTIFY keywords");
    static const struct { const char *in, *out; } xtext[] = {
        { "abc", "abc" }, { "a+2Bb", "a+b" }, { "+3D", "=" }, { "x+40y", "x@y" }, { "+c3+a9", "\xC3\xA9" },
        { "a=b", NULL }, { "a b", NULL }, { "+4", NULL }, { "+GG", NULL }, { "a+", NULL },
    };
    for (size_t i = 0; i < sizeof(xtext) / sizeof(xtext[0]); i++) {
        char out[64];
        bool ok = smtp_xtext_decode(xtext[i].in, strlen(xtext[i].in), out, sizeof(out));
        CHECK(ok == (xtext[i].out != NULL) && (!ok || strcmp(out, xtext[i].out) == 0), "xtext %s", xtext[i].in);
    }
    char out[8], enc[64], dec[64];
    CHECK(!smtp_xtext_decode("abcdefghij", 10, out, sizeof(out)), "too long for the buffer");
    CHECK(smtp_xtext_encode("a+b=c d\xC3\xA9", enc, sizeof(enc)) && strcmp(enc, "a+2Bb+3Dc+20d+C3+A9") == 0, "%s", enc);
    CHECK(smtp_xtext_decode(enc, strlen(enc), dec, sizeof(dec)) && strcmp(dec, "a+b=c d\xC3\xA9") == 0, "round trip");
    CHECK(!smtp_xtext_encode("abc", enc, 3), "encode past the buffer");
    /* what ENVID and ORCPT may hold: text, UTF-8, no controls */
    CHECK(smtp_dsn_text("x+C3+A9", 7, dec, sizeof(dec)), "UTF-8");
    CHECK(!smtp_dsn_text("x+0D+0A", 7, dec, sizeof(dec)), "CRLF");
    CHECK(!smtp_dsn_text("x+FF", 4, dec, sizeof(dec)), "not UTF-8");
}

/* What forward reads of a next hop (core/transcript.c): the extensions of
 * the last EHLO reply, the kinds of reply lines, refusals. */
static void test_transcript(void)
{
    static const struct { const char *line; int kind; } lines[] = {
        { "250 ok\r\n", 2 }, { "250-DSN\r\n", 1 }, { "250\r\n", 2 }, { "550", 2 }, { "354 go\n", 2 },
        { "hello\r\n", 0 }, { "25\r\n", 0 }, { "250x\r\n", 0 }, { "199 no\r\n", 0 }, { "600 no\r\n", 0 },
        { "2a0 no\r\n", 0 }, { "", 0 },
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        CHECK(transcript_line_kind(lines[i].line, strlen(lines[i].line)) == lines[i].kind, "%s", lines[i].line);

    struct transcript t = { .code = 0 };
    transcript_feed(&t, false, "220 hop ESMTP\r\n", 15);
    transcript_feed(&t, true, "EHLO me\r\n", 9);
    /* the first line is the server's name, even one that reads like a keyword */
    const char *ehlo = "250-DSN\r\n250-size 1000\r\n250-PIPELINING\r\n250-8BITMIMEX\r\n250 SMTPUTF8\r\n";
    transcript_feed(&t, false, ehlo, strlen(ehlo));
    CHECK(t.ext == (TRANSCRIPT_SIZE | TRANSCRIPT_SMTPUTF8), "ext %u", t.ext);
    CHECK(t.code == 250 && strcmp(t.replied, "EHLO") == 0, "%d %s", t.code, t.replied);
    transcript_feed(&t, true, "STARTTLS\r\n", 10);
    transcript_feed(&t, false, "220 go\r\n", 8);
    transcript_feed(&t, true, "EHLO me\r\n", 9);      /* after TLS, what was offered before is forgotten */
    transcript_feed(&t, false, "250-hop\r\n250 DSN\r\n", 18);
    CHECK(t.ext == TRANSCRIPT_DSN, "ext after STARTTLS %u", t.ext);
    transcript_feed(&t, true, "MAIL FROM:<a@b> RET=HDRS\r\n", 26);
    transcript_feed(&t, false, "250-DSN\r\n250 8BITMIME\r\n", 23);   /* not EHLO's: no extension */
    CHECK(t.ext == TRANSCRIPT_DSN, "ext after MAIL %u", t.ext);
    transcript_feed(&t, true, "RCPT TO:<x@y> NOTIFY=NEVER\r\n", 28);
    transcript_feed(&t, false, "550 5.1.1 no\r\n", 14);
    CHECK(t.refused && strcmp(t.refused->addr, "x@y") == 0 && strcmp(t.refused->reply, "550 5.1.1 no") == 0,
          "refusal %s", t.refused ? t.refused->reply : "none");
    transcript_free(&t);
}

int main(void)
{
    test_transcript();
    test_dsn();
    test_bdat();
    test_commands();
    test_paths();
    test_utf8();
    test_data();
    return test_summary("test_parse");
}
