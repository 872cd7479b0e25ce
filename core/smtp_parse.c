#include "smtp_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const verb_names[SMTP_VERB_COUNT] = {
    [SMTP_UNKNOWN] = "?",
    [SMTP_HELO] = "HELO", [SMTP_EHLO] = "EHLO", [SMTP_MAIL] = "MAIL",
    [SMTP_RCPT] = "RCPT", [SMTP_DATA] = "DATA", [SMTP_RSET] = "RSET",
    [SMTP_NOOP] = "NOOP", [SMTP_QUIT] = "QUIT", [SMTP_VRFY] = "VRFY",
    [SMTP_EXPN] = "EXPN", [SMTP_HELP] = "HELP",
    [SMTP_STARTTLS] = "STARTTLS", [SMTP_AUTH] = "AUTH", [SMTP_BDAT] = "BDAT",
    [SMTP_ETRN] = "ETRN", [SMTP_TURN] = "TURN",
};

const char *smtp_verb_name(enum smtp_verb verb)
{
    return (unsigned)verb < SMTP_VERB_COUNT ? verb_names[verb] : "?";
}

static inline char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

bool smtp_ieq(const char *p, size_t n, const char *s)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (s[i] == '\0' || lower(p[i]) != lower(s[i]))
            return false;
    return s[i] == '\0';
}

void smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
    size_t v = 0;
    while (v < len && line[v] != ' ')
        v++;
    cmd->verb = SMTP_UNKNOWN;
    for (int i = 1; i < SMTP_VERB_COUNT; i++) {
        if (smtp_ieq(line, v, verb_names[i])) {
            cmd->verb = (enum smtp_verb)i;
            break;
        }
    }
    size_t a = v;
    while (a < len && line[a] == ' ')
        a++;
    size_t e = len;
    while (e > a && line[e - 1] == ' ')
        e--;
    cmd->arg = line + a;
    cmd->arglen = e - a;
}

/* --- UTF-8 ------------------------------------------------------------- */

size_t smtp_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;

    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 3;
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else return 0;
    if (n < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return need;
}

bool smtp_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) { i++; continue; }
        size_t k = smtp_utf8_seq(p + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* --- paths --------------------------------------------------------------- */

struct cursor {
    const unsigned char *p;
    size_t i, n;
    bool utf8;
};

static inline int peek(const struct cursor *c)
{
    return c->i < c->n ? c->p[c->i] : -1;
}

static inline bool is_alpha(int ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'); }
static inline bool is_digit(int ch) { return ch >= '0' && ch <= '9'; }
static inline bool is_alnum(int ch) { return is_alpha(ch) || is_digit(ch); }

static bool is_atext(int ch)
{
    return is_alnum(ch) || (ch > 0 && ch < 128 && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* Consume one UTF-8 sequence if one starts here (RFC 6531 UTF8-non-ascii). */
static bool take_utf8(struct cursor *c)
{
    if (peek(c) < 0x80)
        return false;
    size_t k = smtp_utf8_seq(c->p + c->i, c->n - c->i);
    if (k == 0)
        return false;
    c->i += k;
    c->utf8 = true;
    return true;
}

/* Dot-string = Atom *("." Atom) */
static bool parse_dot_string(struct cursor *c)
{
    for (;;) {
        size_t start = c->i;
        for (;;) {
            if (is_atext(peek(c)))
                c->i++;
            else if (!take_utf8(c))
                break;
        }
        if (c->i == start)
            return false;
        if (peek(c) != '.')
            return true;
        c->i++;
    }
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE */
static bool parse_quoted_string(struct cursor *c)
{
    c->i++; /* opening quote */
    for (;;) {
        int ch = peek(c);
        if (ch == '"') {
            c->i++;
            return true;
        }
        if (ch == '\\') {
            c->i++;
            ch = peek(c);
            if (ch < 32 || ch > 126)
                return false;
            c->i++;
        } else if (ch >= 32 && ch <= 126) {
            c->i++;
        } else if (!take_utf8(c)) {
            return false;
        }
    }
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str] */
static bool parse_domain(struct cursor *c)
{
    for (;;) {
        size_t start = c->i;
        bool last_hyphen = false;
        for (;;) {
            int ch = peek(c);
            if (is_alnum(ch)) {
                c->i++;
                last_hyphen = false;
            } else if (ch == '-' && c->i > start) {
                c->i++;
                last_hyphen = true;
            } else if (take_utf8(c)) {
                last_hyphen = false;
            } else {
                break;
            }
        }
        if (c->i == start || last_hyphen || c->i - start > 63)
            return false;
        if (peek(c) != '.')
            return true;
        c->i++;
    }
}

/* address-literal = "[" ( IPv4 / "IPv6:" IPv6 / tag ":" 1*dcontent ) "]" */
static bool parse_address_literal(struct cursor *c)
{
    size_t start = ++c->i;
    while (c->i < c->n && c->p[c->i] != ']' && c->p[c->i] != '[')
        c->i++;
    if (peek(c) != ']')
        return false;
    const char *lit = (const char *)c->p + start;
    size_t len = c->i - start;
    c->i++;

    char tmp[64];
    unsigned char addr[16];
    if (len >= 5 && smtp_ieq(lit, 5, "IPv6:")) {
        if (len - 5 >= sizeof(tmp))
            return false;
        memcpy(tmp, lit + 5, len - 5);
        tmp[len - 5] = '\0';
        return inet_pton(AF_INET6, tmp, addr) == 1;
    }
    const char *colon = memchr(lit, ':', len);
    if (colon == NULL) {
        if (len >= sizeof(tmp))
            return false;
        memcpy(tmp, lit, len);
        tmp[len] = '\0';
        return inet_pton(AF_INET, tmp, addr) == 1;
    }
    /* General-address-literal: Standardized-tag ":" 1*dcontent */
    size_t taglen = (size_t)(colon - lit);
    if (taglen == 0 || !is_alnum((unsigned char)lit[0]) || !is_alnum((unsigned char)lit[taglen - 1]))
        return false;
    for (size_t i = 0; i < taglen; i++)
        if (!is_alnum((unsigned char)lit[i]) && lit[i] != '-')
            return false;
    if (taglen + 1 == len)
        return false;
    for (size_t i = taglen + 1; i < len; i++) {
        unsigned char ch = (unsigned char)lit[i];
        if (ch < 33 || ch > 126 || ch == '[' || ch == '\\' || ch == ']')
            return false;
    }
    return true;
}

/* A-d-l = At-domain *( "," At-domain ) ":" -- parsed and dropped */
static bool parse_adl(struct cursor *c)
{
    for (;;) {
        if (peek(c) != '@')
            return false;
        c->i++;
        if (!parse_domain(c))
            return false;
        if (peek(c) == ':') {
            c->i++;
            return true;
        }
        if (peek(c) != ',')
            return false;
        c->i++;
    }
}

static enum smtp_path_status parse_params(struct cursor *c, struct smtp_params *ps)
{
    ps->n = 0;
    for (;;) {
        while (peek(c) == ' ')
            c->i++;
        if (c->i >= c->n)
            return SMTP_PATH_OK;
        if (ps->n == SMTP_PARAMS_MAX)
            return SMTP_PATH_BAD_PARAMS;
        struct smtp_param *p = &ps->p[ps->n];
        size_t k = c->i;
        if (!is_alnum(peek(c)))
            return SMTP_PATH_BAD_PARAMS;
        while (is_alnum(peek(c)) || peek(c) == '-')
            c->i++;
        p->key = (const char *)c->p + k;
        p->keylen = c->i - k;
        p->value = NULL;
        p->valuelen = 0;
        if (peek(c) == '=') {
            size_t v = ++c->i;
            for (;;) {
                int ch = peek(c);
                if (ch >= 33 && ch <= 126 && ch != '=')
                    c->i++;
                else if (!take_utf8(c))
                    break;
            }
            if (c->i == v)
                return SMTP_PATH_BAD_PARAMS;
            p->value = (const char *)c->p + v;
            p->valuelen = c->i - v;
        }
        if (c->i < c->n && peek(c) != ' ')
            return SMTP_PATH_BAD_PARAMS;
        ps->n++;
    }
}

enum smtp_path_status smtp_parse_path(const char *arg, size_t len, const char *prefix,
                                      unsigned flags, struct smtp_path *path)
{
    size_t plen = strlen(prefix);
    struct cursor c = { (const unsigned char *)arg, 0, len, false };

    path->addr[0] = '\0';
    path->addrlen = 0;
    path->utf8 = false;
    path->params.n = 0;

    if (len < plen || !smtp_ieq(arg, plen, prefix))
        return SMTP_PATH_BAD_PREFIX;
    c.i = plen;
    while (peek(&c) == ' ')
        c.i++;
    if (peek(&c) != '<')
        return SMTP_PATH_BAD_PREFIX;
    size_t open = c.i++;

    size_t mbox = c.i, at = 0;
    if (peek(&c) == '>') {
        if (!(flags & SMTP_PATH_NULL_OK))
            return SMTP_PATH_BAD_ADDRESS;
    } else {
        if (peek(&c) == '@') {
            if (!parse_adl(&c))
                return SMTP_PATH_BAD_ADDRESS;
            mbox = c.i;
        }
        bool ok = peek(&c) == '"' ? parse_quoted_string(&c) : parse_dot_string(&c);
        if (!ok)
            return SMTP_PATH_BAD_ADDRESS;
        at = c.i;
        if (at - mbox > SMTP_LOCAL_MAX)
            return SMTP_PATH_TOO_LONG;
        if (peek(&c) == '>' && (flags & SMTP_PATH_POSTMASTER_OK) && mbox == open + 1 &&
            smtp_ieq(arg + mbox, at - mbox, "postmaster")) {
            /* RFC 5321 4.1.1.3: "RCPT TO:<Postmaster>" needs no domain. */
        } else {
            if (peek(&c) != '@')
                return SMTP_PATH_BAD_ADDRESS;
            c.i++;
            size_t dom = c.i;
            ok = peek(&c) == '[' ? parse_address_literal(&c) : parse_domain(&c);
            if (!ok)
                return SMTP_PATH_BAD_ADDRESS;
            if (c.i - dom > SMTP_DOMAIN_MAX)
                return SMTP_PATH_TOO_LONG;
        }
        if (peek(&c) != '>')
            return SMTP_PATH_BAD_ADDRESS;
    }
    size_t close = c.i++;
    if (close + 1 - open > SMTP_PATH_MAX)
        return SMTP_PATH_TOO_LONG;
    if (c.i < c.n && peek(&c) != ' ')
        return SMTP_PATH_BAD_ADDRESS;

    path->addrlen = close - mbox;
    memcpy(path->addr, arg + mbox, path->addrlen);
    path->addr[path->addrlen] = '\0';
    path->utf8 = c.utf8;

    return parse_params(&c, &path->params);
}

const struct smtp_param *smtp_param_find(const struct smtp_params *ps, const char *key)
{
    for (size_t i = 0; i < ps->n; i++)
        if (smtp_ieq(ps->p[i].key, ps->p[i].keylen, key))
            return &ps->p[i];
    return NULL;
}

/* --- DATA ---------------------------------------------------------------- */

enum {
    D_BOL,    /* at the start of a line (after CRLF) */
    D_TEXT,   /* inside a line */
    D_CR,     /* after a CR inside a line */
    D_DOT,    /* a '.' at the start of a line, held back */
    D_DOTCR,  /* ".\r" at the start of a line, held back */
};

void smtp_data_init(struct smtp_data *d)
{
    d->state = D_BOL;
    d->size = 0;
    d->lines = 0;
    d->overflow = d->no_budget = false;
}

static void emit(struct smtp_data *d, struct buf *sink, const char *p, size_t n)
{
    d->size += n;
    if (!d->overflow && buf_append(sink, p, n) < 0) {
        d->overflow = true;
        d->no_budget = errno == ENOBUFS;
        buf_free(sink);   /* read on to the end, holding none of it */
    }
}

size_t smtp_data_scan(struct smtp_data *d, const char *in, size_t len,
                      struct buf *sink, bool *done_r)
{
    size_t i = 0;
    *done_r = false;

    while (i < len) {
        char ch = in[i];
        switch (d->state) {
        case D_TEXT: {
            /* The hot path: copy up to and including the next CR. */
            const char *cr = memchr(in + i, '\r', len - i);
            size_t n = cr ? (size_t)(cr - (in + i)) + 1 : len - i;
            emit(d, sink, in + i, n);
            i += n;
            if (cr)
                d->state = D_CR;
            break;
        }
        case D_BOL:
            if (ch == '.') {
                d->state = D_DOT;
                i++;
            } else {
                d->state = D_TEXT;
            }
            break;
        case D_CR:
            if (ch == '\n') {
                emit(d, sink, "\n", 1);
                d->lines++;
                d->state = D_BOL;
                i++;
            } else {
                d->state = D_TEXT;  /* a bare CR is data */
            }
            break;
        case D_DOT:
            /* The leading dot of a line with more on it is removed. */
            if (ch == '\r') {
                d->state = D_DOTCR;
                i++;
            } else {
                d->state = D_TEXT;
            }
            break;
        case D_DOTCR:
            if (ch == '\n') {
                d->state = D_BOL;
                *done_r = true;
                return i + 1;
            }
            /* ".\r" followed by something else: a bare CR after a removed dot. */
            emit(d, sink, "\r", 1);
            d->state = D_CR;
            break;
        }
    }
    return i;
}

bool smtp_parse_bdat(const char *arg, size_t n, unsigned long long *size_r, bool *last_r)
{
    size_t i = 0;
    unsigned long long v = 0;
    while (i < n && arg[i] >= '0' && arg[i] <= '9' && i < 18)
        v = v * 10 + (unsigned long long)(arg[i++] - '0');
    if (i == 0 || (i < n && arg[i] != ' '))
        return false;
    *size_r = v;
    *last_r = false;
    if (i == n)
        return true;
    while (i < n && arg[i] == ' ')
        i++;
    *last_r = smtp_ieq(arg + i, n - i, "LAST");
    return *last_r;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bool smtp_xtext_decode(const char *s, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {           /* hexchar: "+" and two hex digits */
            if (i + 2 >= n || hex_digit(s[i + 1]) < 0 || hex_digit(s[i + 2]) < 0)
                return false;
            c = (unsigned char)(hex_digit(s[i + 1]) << 4 | hex_digit(s[i + 2]));
            i += 2;
        } else if (c < '!' || c > '~' || c == '=') {
            return false;
        }
        if (o + 1 >= size)
            return false;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

bool smtp_xtext_encode(const char *s, char *out, size_t size)
{
    size_t o = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool plain = c >= '!' && c <= '~' && c != '+' && c != '=';
        if (o + (plain ? 1 : 3) >= size)
            return false;
        if (plain)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, size - o, "+%02X", c);
    }
    out[o] = '\0';
    return true;
}

static const struct { const char *name; unsigned bit; } notify_kw[] = {
    { "NEVER", SMTP_NOTIFY_NEVER }, { "SUCCESS", SMTP_NOTIFY_SUCCESS },
    { "FAILURE", SMTP_NOTIFY_FAILURE }, { "DELAY", SMTP_NOTIFY_DELAY },
};

const char *smtp_notify_name(unsigned bit)
{
    for (size_t k = 0; k < sizeof(notify_kw) / sizeof(notify_kw[0]); k++)
        if (notify_kw[k].bit == bit)
            return notify_kw[k].name;
    return NULL;
}

bool smtp_parse_notify(const char *s, size_t n, unsigned *bits_r)
{
    unsigned bits = 0;
    for (size_t i = 0; i <= n;) {
        size_t e = i;
        while (e < n && s[e] != ',')
            e++;
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof(notify_kw) / sizeof(notify_kw[0]); k++)
            if (smtp_ieq(s + i, e - i, notify_kw[k].name))
                bit = notify_kw[k].bit;
        if (bit == 0 || (bits & bit))
            return false;
        bits |= bit;
        i = e + 1;
    }
    if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
        return false;             /* NEVER stands alone */
    *bits_r = bits;
    return true;
}

bool smtp_dsn_text(const char *s, size_t n, char *out, size_t size)
{
    if (!smtp_xtext_decode(s, n, out, size))
        return false;
    for (const unsigned char *p = (const unsigned char *)out; *p;) {
        if (*p < 0x80) {
            if (*p < ' ' || *p == 0x7f)
                return false;
            p++;
            continue;
        }
        size_t k = smtp_utf8_seq(p, strlen((const char *)p));
        if (k == 0)
            return false;
        p += k;
    }
    return true;
}
