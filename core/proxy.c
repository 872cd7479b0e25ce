#include "proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const unsigned char v2_signature[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

enum {
    PP2_TYPE_AUTHORITY = 0x02,
    PP2_TYPE_SSL = 0x20,
    PP2_SUBTYPE_SSL_VERSION = 0x21,
    PP2_SUBTYPE_SSL_CN = 0x22,
    PP2_SUBTYPE_SSL_CIPHER = 0x23,
    PP2_CLIENT_SSL = 0x01,
};

static enum proxy_result bad(const char **why_r, const char *why)
{
    *why_r = why;
    return PROXY_BAD;
}

static unsigned be16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* A TLV's text, kept printable: it goes to logs and scripts. */
static void text(char out[PROXY_TEXT_MAX], const unsigned char *v, size_t n)
{
    if (n > PROXY_TEXT_MAX - 1)
        n = PROXY_TEXT_MAX - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = v[i] >= ' ' && v[i] < 127 ? (char)v[i] : '?';
    out[n] = '\0';
}

static void set_addr(struct net_addr *a, int family, const unsigned char *ip, unsigned port)
{
    memset(a, 0, sizeof(*a));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, ip, 4);
        in->sin_port = htons((unsigned short)port);
        a->len = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, ip, 16);
        in6->sin6_port = htons((unsigned short)port);
        a->len = sizeof(*in6);
    }
}

/* ---- version 1: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n" ---- */

/* The next field of line[*at, n) up to a single space (or the end). */
static bool field(const char *line, size_t n, size_t *at, char *out, size_t size)
{
    size_t i = *at, k = 0;
    while (i < n && line[i] != ' ') {
        if (k + 1 >= size)
            return false;
        out[k++] = line[i++];
    }
    out[k] = '\0';
    if (k == 0)
        return false;
    *at = i < n ? i + 1 : i;
    return true;
}

static bool port(const char *s, unsigned *port_r)
{
    unsigned v = 0;
    size_t i = 0;
    for (; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9' || i == 5)
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *port_r = v;
    return i > 0 && v <= 65535 && !(s[0] == '0' && i > 1);
}

static enum proxy_result parse_v1(const char *s, size_t n, struct proxy_header *h, size_t *len_r,
                                  const char **why_r)
{
    size_t lim = n < PROXY_V1_MAX ? n : PROXY_V1_MAX;
    const char *lf = memchr(s, '\n', lim);
    if (lf == NULL)
        return n >= PROXY_V1_MAX ? bad(why_r, "a version 1 line longer than 107 bytes") : PROXY_MORE;
    size_t len = (size_t)(lf - s) + 1;
    if (len < 2 || lf[-1] != '\r')
        return bad(why_r, "a version 1 line not ended by CRLF");
    size_t end = len - 2, at = 6;
    char proto[8], src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN], sport[8], dport[8];
    h->version = 1;
    *len_r = len;
    if (!field(s, end, &at, proto, sizeof(proto)))
        return bad(why_r, "a version 1 line without its protocol");
    if (strcmp(proto, "UNKNOWN") == 0) {   /* the rest is to be ignored */
        h->local = true;
        return PROXY_OK;
    }
    int family = strcmp(proto, "TCP4") == 0 ? AF_INET : strcmp(proto, "TCP6") == 0 ? AF_INET6 : 0;
    if (family == 0)
        return bad(why_r, "a version 1 protocol other than TCP4, TCP6 or UNKNOWN");
    unsigned char sip[16], dip[16];
    unsigned sp, dp;
    if (!field(s, end, &at, src, sizeof(src)) || !field(s, end, &at, dst, sizeof(dst)) ||
        !field(s, end, &at, sport, sizeof(sport)) || !field(s, end, &at, dport, sizeof(dport)) ||
        at != end)
        return bad(why_r, "a version 1 line without its four fields");
    if (inet_pton(family, src, sip) != 1 || inet_pton(family, dst, dip) != 1)
        return bad(why_r, "a version 1 address that is not one of its protocol");
    if (!port(sport, &sp) || !port(dport, &dp))
        return bad(why_r, "a version 1 port that is not 0 to 65535");
    set_addr(&h->src, family, sip, sp);
    set_addr(&h->dst, family, dip, dp);
    return PROXY_OK;
}

/* ---- version 2: 16 bytes, the addresses, then TLVs ---- */

static enum proxy_result ssl_tlv(const unsigned char *v, size_t n, struct proxy_header *h, const char **why_r)
{
    if (n < 5)
        return bad(why_r, "a version 2 SSL TLV shorter than 5 bytes");
    h->ssl = v[0] & PP2_CLIENT_SSL;
    h->ssl_verified = h->ssl && v[1] == 0 && v[2] == 0 && v[3] == 0 && v[4] == 0;
    for (size_t i = 5; i < n;) {
        if (n - i < 3 || be16(v + i + 1) > n - i - 3)
            return bad(why_r, "a version 2 SSL sub-TLV past its TLV");
        unsigned type = v[i], len = be16(v + i + 1);
        const unsigned char *val = v + i + 3;
        if (type == PP2_SUBTYPE_SSL_VERSION)
            text(h->ssl_version, val, len);
        else if (type == PP2_SUBTYPE_SSL_CN)
            text(h->ssl_cn, val, len);
        else if (type == PP2_SUBTYPE_SSL_CIPHER)
            text(h->ssl_cipher, val, len);
        i += 3 + len;
    }
    return PROXY_OK;
}

static enum proxy_result parse_v2(const unsigned char *s, size_t n, struct proxy_header *h, size_t *len_r,
                                  const char **why_r)
{
    if (n < 16)
        return PROXY_MORE;
    size_t total = 16 + be16(s + 14);
    if ((s[12] >> 4) != 2)
        return bad(why_r, "a version 2 signature with another version");
    unsigned command = s[12] & 0x0F, family = s[13] >> 4, transport = s[13] & 0x0F;
    if (command > 1)
        return bad(why_r, "a version 2 command other than LOCAL or PROXY");
    if (total > PROXY_MAX)
        return bad(why_r, "a version 2 header over 4096 bytes");
    if (n < total)
        return PROXY_MORE;
    h->version = 2;
    *len_r = total;
    /* LOCAL, and families this server cannot use, keep the real endpoints */
    size_t at = 16;
    h->local = command == 0 || transport != 1 || (family != 1 && family != 2);
    if (command == 1 && transport == 2)
        return bad(why_r, "a version 2 header for a datagram");
    if (!h->local) {
        size_t alen = family == 1 ? 12 : 36, ip = family == 1 ? 4 : 16;
        if (total - 16 < alen)
            return bad(why_r, "a version 2 header shorter than its addresses");
        set_addr(&h->src, family == 1 ? AF_INET : AF_INET6, s + 16, be16(s + 16 + 2 * ip));
        set_addr(&h->dst, family == 1 ? AF_INET : AF_INET6, s + 16 + ip, be16(s + 16 + 2 * ip + 2));
        at += alen;
    } else {
        at = total;               /* LOCAL: the whole block is discarded */
    }
    /* TLVs: type, 16-bit length, value, each within the header */
    for (size_t i = at; i < total;) {
        if (total - i < 3 || be16(s + i + 1) > total - i - 3)
            return bad(why_r, "a version 2 TLV past the header");
        unsigned type = s[i], len = be16(s + i + 1);
        if (type == PP2_TYPE_AUTHORITY)
            text(h->authority, s + i + 3, len);
        else if (type == PP2_TYPE_SSL && ssl_tlv(s + i + 3, len, h, why_r) == PROXY_BAD)
            return PROXY_BAD;
        i += 3 + len;
    }
    return PROXY_OK;
}

enum proxy_result proxy_parse(const char *s, size_t n, struct proxy_header *h, size_t *len_r,
                              const char **why_r)
{
    memset(h, 0, sizeof(*h));
    *len_r = 0;
    *why_r = NULL;
    if (memcmp(s, v2_signature, n < 12 ? n : 12) == 0)
        return n < 12 ? PROXY_MORE : parse_v2((const unsigned char *)s, n, h, len_r, why_r);
    if (memcmp(s, "PROXY ", n < 6 ? n : 6) == 0)
        return n < 6 ? PROXY_MORE : parse_v1(s, n, h, len_r, why_r);
    return bad(why_r, "no PROXY header");
}
