/* The PROXY protocol header (core/proxy.c): version 1 and 2, whole, fed a
 * byte at a time, with what follows it, and broken in each way the parser
 * must refuse. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "proxy.h"
#include "test.h"

static const char V2[] = "\r\n\r\n\0\r\nQUIT\n";

/* A version 2 header: command/version, family, then body[0, n). */
static size_t v2(char *out, unsigned char ver_cmd, unsigned char fam, const void *body, size_t n)
{
    memcpy(out, V2, 12);
    out[12] = (char)ver_cmd;
    out[13] = (char)fam;
    out[14] = (char)(n >> 8);
    out[15] = (char)n;
    memcpy(out + 16, body, n);
    return 16 + n;
}

static const char *host(const struct net_addr *a, int *port)
{
    static char buf[2][NET_ADDRSTR_MAX];
    static int k;
    char *b = buf[k++ & 1];
    *port = net_addr_host(a, b);
    return b;
}

/* Every prefix of s[0, len) is PROXY_MORE, the whole is PROXY_OK of length
 * len, and bytes after it change nothing. */
static void whole_and_split(const char *what, const char *s, size_t len, struct proxy_header *h)
{
    size_t got;
    const char *why;
    int more = 0;
    for (size_t k = 0; k < len; k++)
        more += proxy_parse(s, k, h, &got, &why) == PROXY_MORE;
    CHECK(more == (int)len, "%s: %d of %zu prefixes want more", what, more, len);
    char follow[PROXY_MAX + 64];
    memcpy(follow, s, len);
    memcpy(follow + len, "EHLO x\r\n", 8);
    CHECK(proxy_parse(follow, len + 8, h, &got, &why) == PROXY_OK && got == len, "%s: with what follows", what);
    CHECK(proxy_parse(s, len, h, &got, &why) == PROXY_OK && got == len, "%s: whole (%s)", what, why ? why : "");
}

static void test_v1(void)
{
    struct proxy_header h;
    int sp, dp;
    const char *a = "PROXY TCP4 192.0.2.7 198.51.100.2 56324 2525\r\n";
    whole_and_split("v1 tcp4", a, strlen(a), &h);
    CHECK(h.version == 1 && !h.local, "v1 tcp4 fields");
    CHECK(strcmp(host(&h.src, &sp), "192.0.2.7") == 0 && sp == 56324, "v1 src");
    CHECK(strcmp(host(&h.dst, &dp), "198.51.100.2") == 0 && dp == 2525, "v1 dst");
    const char *b = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    whole_and_split("v1 tcp6", b, strlen(b), &h);
    CHECK(strcmp(host(&h.src, &sp), "2001:db8::1") == 0 && sp == 65535, "v1 tcp6 src");
    const char *c = "PROXY UNKNOWN ffff::1 whatever\r\n";
    whole_and_split("v1 unknown", c, strlen(c), &h);
    CHECK(h.local, "v1 unknown is the proxy's own");
    whole_and_split("v1 unknown alone", "PROXY UNKNOWN\r\n", 15, &h);

    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.7 198.51.100.2 56324 2525\n",          /* LF alone */
        "PROXY TCP4 192.0.2.7  198.51.100.2 56324 2525\r\n",       /* two spaces */
        "PROXY TCP4 192.0.2.7 198.51.100.2 56324\r\n",             /* a field short */
        "PROXY TCP4 192.0.2.7 198.51.100.2 56324 2525 x\r\n",      /* one too many */
        "PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",             /* family mismatch */
        "PROXY TCP4 192.0.2.7 198.51.100.2 65536 2\r\n",           /* port range */
        "PROXY TCP4 192.0.2.7 198.51.100.2 0080 2\r\n",            /* leading zero */
        "PROXY TCP4 192.0.2.7 198.51.100.2 -1 2\r\n",
        "PROXY UDP4 192.0.2.7 198.51.100.2 1 2\r\n",
        "PROXY \r\n",
        "EHLO client.example\r\n",                                  /* no header at all */
        "proxy TCP4 192.0.2.7 198.51.100.2 1 2\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t got;
        const char *why;
        CHECK(proxy_parse(bad[i], strlen(bad[i]), &h, &got, &why) == PROXY_BAD && why, "bad v1 %zu", i);
    }
    char longline[200];
    memset(longline, '1', sizeof(longline));
    memcpy(longline, "PROXY TCP4 ", 11);
    size_t got;
    const char *why;
    CHECK(proxy_parse(longline, 106, &h, &got, &why) == PROXY_MORE, "106 bytes want more");
    CHECK(proxy_parse(longline, 107, &h, &got, &why) == PROXY_BAD, "107 without CRLF is bad");
}

static void test_v2(void)
{
    struct proxy_header h;
    char buf[PROXY_MAX + 64];
    int sp, dp;
    size_t got;
    const char *why;

    unsigned char tcp4[12 + 14 + 8 + 10 + 3] = { 192, 0, 2, 7, 198, 51, 100, 2, 0xDC, 0x04, 0x09, 0xDD };
    size_t k = 12;
    memcpy(tcp4 + k, "\x02\x00\x0b" "mx.site.exa", 14);                 /* AUTHORITY */
    k += 14;
    memcpy(tcp4 + k, "\x20\x00\x12" "\x01" "\x00\x00\x00\x00", 8);       /* SSL, verified, then 13 bytes of subs */
    k += 8;
    memcpy(tcp4 + k, "\x21\x00\x07" "TLSv1.3", 10);
    k += 10;
    memcpy(tcp4 + k, "\x22\x00\x00", 3);                                  /* an empty CN */
    k += 3;
    size_t n = v2(buf, 0x21, 0x11, tcp4, k);
    whole_and_split("v2 tcp4", buf, n, &h);
    CHECK(h.version == 2 && !h.local, "v2 tcp4");
    CHECK(strcmp(host(&h.src, &sp), "192.0.2.7") == 0 && sp == 56324, "v2 src %d", sp);
    CHECK(strcmp(host(&h.dst, &dp), "198.51.100.2") == 0 && dp == 2525, "v2 dst %d", dp);
    CHECK(strcmp(h.authority, "mx.site.exa") == 0, "authority %s", h.authority);
    CHECK(h.ssl && h.ssl_verified && strcmp(h.ssl_version, "TLSv1.3") == 0 && h.ssl_cn[0] == '\0', "ssl");

    unsigned char tcp6[36] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1, [31] = 1, 0, 80, 0, 25 };
    n = v2(buf, 0x21, 0x21, tcp6, sizeof(tcp6));
    whole_and_split("v2 tcp6", buf, n, &h);
    CHECK(strcmp(host(&h.src, &sp), "2001:db8::1") == 0 && sp == 80, "v2 tcp6 src");

    n = v2(buf, 0x20, 0x00, "", 0);                                      /* LOCAL: a health check */
    whole_and_split("v2 local", buf, n, &h);
    CHECK(h.local, "v2 local");
    n = v2(buf, 0x20, 0x11, tcp4, 12);                                    /* LOCAL with addresses: ignored */
    whole_and_split("v2 local with addresses", buf, n, &h);
    CHECK(h.local, "v2 local keeps the real endpoints");
    unsigned char unix_addrs[216] = { 0 };
    n = v2(buf, 0x21, 0x31, unix_addrs, sizeof(unix_addrs));
    whole_and_split("v2 unix", buf, n, &h);
    CHECK(h.local, "v2 unix: the real endpoints");
    unsigned char big[PROXY_MAX - 16] = { 192, 0, 2, 7, 198, 51, 100, 2, 0, 1, 0, 2, 0x04 };
    big[13] = (unsigned char)((sizeof(big) - 15) >> 8);                  /* one NOOP TLV filling it */
    big[14] = (unsigned char)(sizeof(big) - 15);
    n = v2(buf, 0x21, 0x11, big, sizeof(big));
    CHECK(n == PROXY_MAX && proxy_parse(buf, n, &h, &got, &why) == PROXY_OK && got == n, "4096 bytes: %s", why);

    struct { unsigned char ver_cmd, fam; const void *body; size_t n; const char *what; } bad[] = {
        { 0x11, 0x11, tcp4, 12, "version 1 in a v2 signature" },
        { 0x22, 0x11, tcp4, 12, "command 2" },
        { 0x21, 0x11, tcp4, 11, "addresses cut" },
        { 0x21, 0x21, tcp6, 30, "IPv6 addresses cut" },
        { 0x21, 0x12, tcp4, 12, "a datagram" },
        { 0x21, 0x11, "\xc0\x00\x02\x07\xc6\x33\x64\x02\x00\x01\x00\x02\x02\x00\x05" "ab", 17, "a TLV past the end" },
        { 0x21, 0x11, "\xc0\x00\x02\x07\xc6\x33\x64\x02\x00\x01\x00\x02\x20", 13, "a TLV head cut" },
        { 0x21, 0x11, "\xc0\x00\x02\x07\xc6\x33\x64\x02\x00\x01\x00\x02\x20\x00\x02\x01\x00", 17, "a short SSL TLV" },
        { 0x21, 0x11, "\xc0\x00\x02\x07\xc6\x33\x64\x02\x00\x01\x00\x02\x20\x00\x08\x01\x00\x00\x00\x00\x21\x00\x09", 23,
          "an SSL sub-TLV past its TLV" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = v2(buf, bad[i].ver_cmd, bad[i].fam, bad[i].body, bad[i].n);
        CHECK(proxy_parse(buf, n, &h, &got, &why) == PROXY_BAD && why, "bad v2: %s", bad[i].what);
    }
    /* over 4096 bytes: refused as soon as the length is known */
    n = v2(buf, 0x21, 0x11, tcp4, 12);
    buf[14] = 0x10;
    buf[15] = 0x00;
    CHECK(proxy_parse(buf, 16, &h, &got, &why) == PROXY_BAD, "a length past 4096");
    /* a broken signature */
    memcpy(buf, V2, 12);
    buf[11] = 'X';
    CHECK(proxy_parse(buf, 12, &h, &got, &why) == PROXY_BAD, "signature");
}

int main(void)
{
    test_v1();
    test_v2();
    return test_summary("test_proxy");
}
