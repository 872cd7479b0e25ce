#include "mime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"

const struct mime_limits mime_default_limits = {
    .depth = MIME_DEPTH_MAX,
    .parts = MIME_PARTS_MAX,
    .headers = MIME_HEADERS_MAX,
    .header_size = MIME_HEADER_SIZE_MAX,
};

/* ---- arena: everything a parse allocates, freed at once ---- */

#define ARENA_CHUNK 8192

struct arena {
    struct arena *next;
    size_t        used, size;
    _Alignas(max_align_t) char data[];
};

/* A new chunk for at least n bytes (rounded), n of them taken. */
static void *arena_grow(struct mime *m, size_t n)
{
    size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
    struct arena *a = malloc(sizeof(*a) + size);
    if (a == NULL)
        return NULL;
    a->size = size;
    a->used = n;
    a->next = m->arena;
    m->arena = a;
    return a->data;
}

static inline void *arena_alloc(struct mime *m, size_t n)
{
    const size_t align = _Alignof(max_align_t);
    struct arena *a = m->arena;

    n = (n + align - 1) & ~(align - 1);
    if (a == NULL || a->size - a->used < n)
        return arena_grow(m, n);
    void *p = a->data + a->used;
    a->used += n;
    return p;
}

/* A C string copy of s[0, n): NUL bytes become U+FFFD so the string is
 * whole; with lower, ASCII letters are lower-cased. */
static char *arena_str(struct mime *m, const char *s, size_t n, bool lower)
{
    size_t nuls = 0;
    for (const char *z = memchr(s, '\0', n); z; z = memchr(z + 1, '\0', n - (size_t)(z + 1 - s)))
        nuls++;
    char *out = arena_alloc(m, n + 2 * nuls + 1), *o = out;
    if (out == NULL)
        return NULL;
    if (nuls == 0) {              /* the common case, in a loop the compiler can widen */
        if (lower)
            for (size_t i = 0; i < n; i++)
                out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
        else
            memcpy(out, s, n);
        out[n] = '\0';
        return out;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\0') {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
            continue;
        }
        if (lower && c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        *o++ = c;
    }
    *o = '\0';
    return out;
}

/* ---- small text helpers ---- */

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
    while (*n && (is_wsp(**s) || **s == '\r' || **s == '\n')) {
        (*s)++;
        (*n)--;
    }
    while (*n && (is_wsp((*s)[*n - 1]) || (*s)[*n - 1] == '\r' || (*s)[*n - 1] == '\n'))
        (*n)--;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool slice_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* RFC 2045 token characters: ASCII but controls, blanks and tspecials. */
static bool is_token(char c)
{
    static const bool tspecials[128] = {
        ['('] = true, [')'] = true, ['<'] = true, ['>'] = true, ['@'] = true, [','] = true,
        [';'] = true, [':'] = true, ['\\'] = true, ['"'] = true, ['/'] = true, ['['] = true,
        [']'] = true, ['?'] = true, ['='] = true,
    };
    unsigned char u = (unsigned char)c;
    return u > ' ' && u < 127 && !tspecials[u];
}

/* ---- transfer encodings ---- */


/* Base64, leniently: characters outside the alphabet are skipped and '='
 * ends a group wherever it comes (some writers concatenate padded runs). */
static int base64_decode(const char *s, size_t n, struct buf *out)
{
    if (buf_reserve(out, n / 4 * 3 + 3) < 0)
        return -1;
    unsigned char *o = (unsigned char *)buf_tail(out), *o0 = o;
    uint32_t acc = 0;
    int have = 0;

    for (size_t i = 0; i < n; i++) {
        int v = base64_digit[(unsigned char)s[i]];
        if (v) {
            acc = acc << 6 | (uint32_t)(v - 1);
            if (++have == 4) {
                *o++ = (unsigned char)(acc >> 16);
                *o++ = (unsigned char)(acc >> 8);
                *o++ = (unsigned char)acc;
                acc = 0;
                have = 0;
            }
        } else if (s[i] == '=' && have >= 2) {
            *o++ = (unsigned char)(acc >> (have == 2 ? 4 : 10));
            if (have == 3)
                *o++ = (unsigned char)(acc >> 2);
            acc = 0;
            have = 0;
        }
    }
    if (have >= 2) {      /* padding left off */
        *o++ = (unsigned char)(acc >> (have == 2 ? 4 : 10));
        if (have == 3)
            *o++ = (unsigned char)(acc >> 2);
    }
    buf_commit(out, (size_t)(o - o0));
    return 0;
}

/* uuencode (x-uuencode, uuencode, x-uue: Netscape, Eudora, Pine and some
 * devices): after a "begin MODE NAME" line, each line is a length character
 * and groups of four characters of six bits each ((c - 32) & 63), up to a
 * line of length 0 or "end".  Without a begin line the body is kept as it
 * is, as Python's email does. */
static int uu_lines(const char *line, const char *e, struct buf *out)
{
    if (buf_reserve(out, (size_t)(e - line) / 4 * 3 + 3) < 0)
        return -1;
    unsigned char *o = (unsigned char *)buf_tail(out), *o0 = o;
    while (line < e) {
        const char *nl = memchr(line, '\n', (size_t)(e - line));
        const char *end = nl ? nl : e, *next = nl ? nl + 1 : e;
        if (end > line && end[-1] == '\r')
            end--;
        size_t len = end > line ? (size_t)((line[0] - 32) & 63) : 0;
        if (len == 0 || (end - line == 3 && memcmp(line, "end", 3) == 0))
            break;
        const char *c = line + 1;
        for (size_t done = 0; done < len && c < end; c += 4) {
            unsigned v[4];
            for (int k = 0; k < 4; k++)
                v[k] = c + k < end ? (unsigned)((c[k] - 32) & 63) : 0;
            unsigned char b[3] = { (unsigned char)(v[0] << 2 | v[1] >> 4), (unsigned char)(v[1] << 4 | v[2] >> 2),
                                   (unsigned char)(v[2] << 6 | v[3]) };
            for (int k = 0; k < 3 && done < len; k++, done++)
                *o++ = b[k];
        }
        line = next;
    }
    buf_commit(out, (size_t)(o - o0));
    return 0;
}

static int uu_decode(const char *s, size_t n, struct buf *out)
{
    const char *e = s + n, *line = s;
    bool begun = false;
    while (line < e && !begun) {
        const char *nl = memchr(line, '\n', (size_t)(e - line));
        const char *next = nl ? nl + 1 : e;
        begun = e - line > 6 && memcmp(line, "begin ", 6) == 0;
        line = next;
    }
    return begun ? uu_lines(line, e, out) : buf_append(out, s, n);
}

/* Is line[0, n) a line of uuencoded data: its length character, then the
 * four characters for each three bytes (a last group may be left short,
 * and a writer may add a checksum character or blanks)? */
static bool uu_line(const char *line, size_t n)
{
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\r'))
        n--;
    if (n == 0 || line[0] < ' ' || line[0] > '`')
        return false;
    size_t len = (size_t)((line[0] - 32) & 63), chars = (len + 2) / 3 * 4;
    if (n - 1 < (len * 4 + 2) / 3 || n - 1 > chars + 2)
        return false;
    for (size_t i = 1; i < n; i++)
        if (line[i] < ' ' || line[i] > '`')
            return false;
    return true;
}

bool mime_uu_block(const char *text, size_t len, size_t from, struct mime_uu *b)
{
    for (size_t pos = from; pos < len;) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos, next = pos + n + (nl != NULL);
        size_t digits = 0;
        while (n > 6 + digits && line[6 + digits] >= '0' && line[6 + digits] <= '7')
            digits++;
        if (n < 6 || memcmp(line, "begin ", 6) != 0 || digits < 3 || digits > 4 ||
            (n > 6 + digits && line[6 + digits] != ' ')) {
            pos = next;
            continue;
        }
        /* its data lines, then "end" (after a line of length 0, as writers
         * put one) */
        size_t at = next;
        b->data = at;
        for (;;) {
            const char *l = text + at, *lnl = at < len ? memchr(l, '\n', len - at) : NULL;
            size_t ln = at < len ? (lnl ? (size_t)(lnl - l) : len - at) : 0;
            size_t trimmed = ln && l[ln - 1] == '\r' ? ln - 1 : ln;
            if (at < len && trimmed == 3 && memcmp(l, "end", 3) == 0) {
                b->start = pos;
                b->end = lnl ? at + ln + 1 : len;
                b->data_end = at;
                b->name = line + 6 + digits + (n > 6 + digits);
                b->name_len = (size_t)(line + n - b->name);
                while (b->name_len && (b->name[b->name_len - 1] == '\r' || b->name[b->name_len - 1] == ' '))
                    b->name_len--;
                return true;
            }
            if (at >= len || !uu_line(l, ln))
                break;            /* not a block: go on after its begin line */
            at += ln + (lnl != NULL);
        }
        pos = next;
    }
    return false;
}

int mime_uu_decode(const char *text, const struct mime_uu *b, struct buf *out)
{
    return uu_lines(text + b->data, text + b->data_end, out);
}

/* Quoted-printable (RFC 2045 6.7): =XX, soft breaks, trailing blanks of a
 * line removed; a malformed '=' is kept as it is.  With q, RFC 2047's Q
 * form: '_' is a space and there are no lines. */
static int qp_decode(const char *s, size_t n, bool q, struct buf *out)
{
    if (buf_reserve(out, n + 1) < 0)
        return -1;
    char *o = buf_tail(out), *o0 = o;
    size_t i = 0;

    while (i < n) {
        const char *lf = q ? NULL : memchr(s + i, '\n', n - i);
        size_t le = lf ? (size_t)(lf - s) : n, next = lf ? le + 1 : n;
        bool crlf = lf && le > i && s[le - 1] == '\r';
        if (!q)
            while (le > i && (is_wsp(s[le - 1]) || s[le - 1] == '\r'))
                le--;
        bool soft = !q && le > i && s[le - 1] == '=';
        if (soft)
            le--;
        for (size_t j = i; j < le; j++) {
            char c = s[j];
            if (c == '=' && j + 2 < le && hexval(s[j + 1]) >= 0 && hexval(s[j + 2]) >= 0) {
                *o++ = (char)(hexval(s[j + 1]) << 4 | hexval(s[j + 2]));
                j += 2;
            } else if (q && c == '_') {
                *o++ = ' ';
            } else {
                *o++ = c;
            }
        }
        if (lf && !soft) {
            if (crlf)
                *o++ = '\r';
            *o++ = '\n';
        }
        i = next;
    }
    buf_commit(out, (size_t)(o - o0));
    return 0;
}

/* ---- the parser's state ---- */

struct parser {
    struct mime *m;
    struct mime_limits lim;
    const char *msg;
    size_t len;
    struct frame {                /* an open multipart */
        struct mime_part *part;
        const char *boundary;
        size_t blen;
        bool delimited;           /* a delimiter line of it came */
    } frames[MIME_DEPTH_MAX + 1];
    int nframes;
    struct mime_part *cur;        /* the part being read */
    bool in_headers;
    bool field;                   /* a header field is being read: */
    size_t field_start, field_colon, field_end, name_end;
    struct buf unfolded, decoded, bytes, pending;   /* scratch */
    struct addr_list addrs;
    unsigned addresses_kept;      /* the message's address headers whose mailboxes are kept */
    bool oom;
};

static void cut(struct parser *p, enum mime_cut c)
{
    if (p->m->cut == MIME_CUT_NONE)
        p->m->cut = c;
}

/* ---- RFC 2047 encoded words ---- */

struct word {
    const char *charset;
    size_t charset_len;
    char enc;                     /* 'b' or 'q' */
    const char *text;
    size_t text_len;
    size_t len;                   /* of the whole word */
};

/* An encoded word =?charset?enc?text?= at s (which starts with "=?"). */
static bool parse_word(const char *s, size_t n, struct word *w)
{
    size_t i = 2;
    while (i < n && s[i] != '?' && !is_wsp(s[i]) && i < 2 + CHARSET_NAME_MAX + 32)
        i++;
    if (i >= n || s[i] != '?' || i == 2 || i + 3 >= n || s[i + 2] != '?')
        return false;
    w->charset = s + 2;
    w->charset_len = i - 2;
    w->enc = (char)(s[i + 1] | 0x20);
    if (w->enc != 'b' && w->enc != 'q')
        return false;
    size_t t = i + 3, j = t;
    while (j < n && s[j] != '?' && !is_wsp(s[j]))
        j++;
    if (j + 1 >= n || s[j] != '?' || s[j + 1] != '=')
        return false;
    w->text = s + t;
    w->text_len = j - t;
    w->len = j + 2;
    return true;
}

/* The decoded bytes of the encoded words in p->pending, into out.  A line
 * break they decode to (=0D=0A) becomes a space: a header field is one
 * line, and a rule or a log line must not see it split. */
static int flush_pending(struct parser *p, const char *charset, size_t charset_len, struct buf *out)
{
    size_t from = buf_len(out);
    int rc = charset_to_utf8(&p->m->charsets, charset, charset_len, buf_head(&p->pending),
                             buf_len(&p->pending), out);
    buf_clear(&p->pending);
    if (rc == 0 && buf_len(out) > from)
        for (char *c = out->data + out->start + from, *e = buf_tail(out); c < e; c++)
            if (*c == '\r' || *c == '\n')
                *c = ' ';
    return rc;
}

/* Append s[0, n) to out with its encoded words decoded: words separated
 * only by blanks are joined (RFC 2047 6.2), and the bytes of adjacent words
 * in one charset are converted together so a character split between two
 * words survives.  Everything else is kept, as valid UTF-8. */
static int decode_words(struct parser *p, const char *s, size_t n, struct buf *out)
{
    struct word w, prev = { 0 };
    size_t lit = 0;               /* start of the text not yet written */
    bool after_word = false;
    int rc = 0;

    for (size_t i = 0; i + 1 < n && rc == 0;) {
        const char *q = memchr(s + i, '=', n - i - 1);
        if (q == NULL)
            break;
        i = (size_t)(q - s);
        if (s[i + 1] != '?' || !parse_word(s + i, n - i, &w)) {
            i++;
            continue;
        }
        bool blank = true;
        for (size_t j = lit; j < i && blank; j++)
            blank = is_wsp(s[j]);
        bool join = after_word && blank;
        if (!join || prev.charset_len != w.charset_len ||
            strncasecmp(prev.charset, w.charset, w.charset_len) != 0) {
            if (after_word)
                rc = flush_pending(p, prev.charset, prev.charset_len, out);
            if (rc == 0 && !join)
                rc = utf8_append_valid(out, s + lit, i - lit);
        }
        if (rc == 0)
            rc = w.enc == 'b' ? base64_decode(w.text, w.text_len, &p->pending)
                              : qp_decode(w.text, w.text_len, true, &p->pending);
        prev = w;
        after_word = true;
        i += w.len;
        lit = i;
    }
    if (rc == 0 && after_word)
        rc = flush_pending(p, prev.charset, prev.charset_len, out);
    if (rc == 0)
        rc = utf8_append_valid(out, s + lit, n - lit);
    return rc;
}

static int header_words(void *p, const char *s, size_t n, struct buf *out)
{
    return decode_words(p, s, n, out);
}

/* ---- parameters (RFC 2045 5.1, RFC 2231) ---- */

#define PARAM_SECTIONS 64

struct param_iter {
    const char *s, *e;
    bool open;                    /* a parameter may start at s, no ';' before it */
};

struct param {
    const char *attr, *val;
    size_t attr_len, val_len;
    bool quoted;
};

static void skip_cfws(struct param_iter *it)
{
    int depth = 0;
    while (it->s < it->e) {
        char c = *it->s;
        if (depth) {
            if (c == '\\' && it->s + 1 < it->e)
                it->s++;
            else if (c == '(')
                depth++;
            else if (c == ')')
                depth--;
        } else if (c == '(') {
            depth = 1;
        } else if (!is_wsp(c) && c != '\r' && c != '\n') {
            return;
        }
        it->s++;
    }
}

/* The next attribute=value after a ';'.  Unquoted values run to the next
 * ';' (blanks inside kept, as careless writers send file names). */
static bool next_param(struct param_iter *it, struct param *pr)
{
    for (;;) {
        if (it->open) {
            it->open = false;
        } else {
            const char *semi = memchr(it->s, ';', (size_t)(it->e - it->s));
            if (semi == NULL)
                return false;
            it->s = semi + 1;
        }
        skip_cfws(it);
        pr->attr = it->s;
        while (it->s < it->e && is_token(*it->s) && *it->s != '*')
            it->s++;
        while (it->s < it->e && (is_token(*it->s) || *it->s == '*'))
            it->s++;
        pr->attr_len = (size_t)(it->s - pr->attr);
        skip_cfws(it);
        if (pr->attr_len == 0 || it->s >= it->e || *it->s != '=')
            continue;
        it->s++;
        skip_cfws(it);
        pr->quoted = it->s < it->e && *it->s == '"';
        if (pr->quoted) {
            pr->val = ++it->s;
            while (it->s < it->e && *it->s != '"') {
                if (*it->s == '\\' && it->s + 1 < it->e)
                    it->s++;
                it->s++;
            }
            pr->val_len = (size_t)(it->s - pr->val);
            if (it->s < it->e)
                it->s++;
        } else {
            pr->val = it->s;
            const char *end = memchr(it->s, ';', (size_t)(it->e - it->s));
            it->s = end ? end : it->e;
            pr->val_len = (size_t)(it->s - pr->val);
            trim(&pr->val, &pr->val_len);
        }
        return true;
    }
}

/* Append a quoted string's text without its backslashes. */
static int unquote(const char *s, size_t n, struct buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n)
            i++;
        if (buf_append(out, s + i, 1) < 0)
            return -1;
    }
    return 0;
}

/* Append RFC 2231 %XX-encoded text decoded. */
static int percent_decode(const char *s, size_t n, struct buf *out)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            c = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        }
        if (buf_append(out, &c, 1) < 0)
            return -1;
    }
    return 0;
}

/* The value of parameter `name` of a header value, decoded to UTF-8 into
 * p->decoded: RFC 2231 forms (name*=, name*0=, name*0*=...) win over the
 * plain one, which may carry RFC 2047 words.  false when absent. */
static bool param_value(struct parser *p, struct param_iter it, const char *name)
{
    struct param pr, plain = { 0 }, sect[PARAM_SECTIONS];   /* cleared as used */
    bool have_plain = false, have_sect = false, ext[PARAM_SECTIONS] = { false };
    size_t nl = strlen(name);
    unsigned long nsect = 0;

    while (next_param(&it, &pr)) {
        if (pr.attr_len < nl || strncasecmp(pr.attr, name, nl) != 0)
            continue;
        const char *rest = pr.attr + nl;
        size_t rn = pr.attr_len - nl;
        if (rn == 0) {
            if (!have_plain)
                plain = pr;
            have_plain = true;
            continue;
        }
        if (*rest != '*')
            continue;
        rest++, rn--;
        unsigned long idx = 0;
        bool extended = false;
        if (rn == 0) {
            extended = true;                     /* name*= */
        } else {
            size_t d = 0;
            while (d < rn && rest[d] >= '0' && rest[d] <= '9' && d < 3)
                idx = idx * 10 + (unsigned long)(rest[d++] - '0');
            if (d == 0 || (d < rn && !(d + 1 == rn && rest[d] == '*')) || (d > 1 && rest[0] == '0'))
                continue;
            extended = d < rn;
        }
        if (idx >= PARAM_SECTIONS)
            continue;
        if (idx >= nsect) {       /* sections [0, nsect) are set or cleared */
            memset(sect + nsect, 0, (idx + 1 - nsect) * sizeof(sect[0]));
            nsect = idx + 1;
        } else if (sect[idx].attr) {
            continue;
        }
        sect[idx] = pr;
        ext[idx] = extended;
        have_sect = true;
    }
    buf_clear(&p->decoded);
    buf_clear(&p->bytes);
    if (have_sect && sect[0].attr) {
        const char *cs = NULL;
        size_t csn = 0;
        int rc = 0;
        for (unsigned long i = 0; i < nsect && sect[i].attr && rc == 0; i++) {
            const char *v = sect[i].val;
            size_t vn = sect[i].val_len;
            if (!ext[i]) {
                rc = sect[i].quoted ? unquote(v, vn, &p->bytes) : buf_append(&p->bytes, v, vn);
                continue;
            }
            if (i == 0) {                       /* charset'language'text */
                const char *q1 = memchr(v, '\'', vn);
                const char *q2 = q1 ? memchr(q1 + 1, '\'', vn - (size_t)(q1 + 1 - v)) : NULL;
                if (q2) {
                    cs = v;
                    csn = (size_t)(q1 - v);
                    vn -= (size_t)(q2 + 1 - v);
                    v = q2 + 1;
                }
            }
            rc = percent_decode(v, vn, &p->bytes);
        }
        if (rc == 0)
            rc = charset_to_utf8(&p->m->charsets, cs, csn, buf_head(&p->bytes),
                                 buf_len(&p->bytes), &p->decoded);
        p->oom |= rc < 0;
        return rc == 0;
    }
    if (!have_plain)
        return false;
    if (!plain.quoted) {
        int rc = decode_words(p, plain.val, plain.val_len, &p->decoded);
        p->oom |= rc < 0;
        return rc == 0;
    }
    int rc = unquote(plain.val, plain.val_len, &p->bytes);
    if (rc == 0)
        rc = decode_words(p, buf_head(&p->bytes), buf_len(&p->bytes), &p->decoded);
    p->oom |= rc < 0;
    return rc == 0;
}

/* A parameter's value as an arena string (lower-cased if asked); NULL when
 * it is missing, or empty and not `empty`. */
static const char *param_str(struct parser *p, struct param_iter params, const char *name,
                             bool lower, bool empty)
{
    if (!param_value(p, params, name))
        return NULL;
    const char *v = buf_head(&p->decoded);
    size_t n = buf_len(&p->decoded);
    trim(&v, &n);
    return n || empty ? arena_str(p->m, v, n, lower) : NULL;
}

/* ---- header fields ---- */

static bool type_is(const struct mime_part *part, const char *prefix)
{
    return strncmp(part->type, prefix, strlen(prefix)) == 0;
}

/* The head of a structured value (type/subtype, a disposition), trimmed,
 * and where its parameters are: the head ends at ';' or a comment, or at
 * a blank inside it when the ';' was left out ("application/pdf name=x",
 * as some writers send it). */
static struct param_iter value_head(const char *v, size_t n, const char **head, size_t *head_len)
{
    size_t i = 0;
    while (i < n && v[i] != ';' && v[i] != '(')
        i++;
    const char *t = v;
    trim(&t, &i);
    *head = t;
    *head_len = i;
    for (size_t k = 0; k < i; k++)
        if (is_wsp(t[k])) {
            *head_len = k;
            return (struct param_iter){ t + k, v + n, true };
        }
    return (struct param_iter){ v, v + n, false };
}

/* Content-Type: type/subtype (lower case; RFC 2045 5.2 default when
 * missing or malformed) and the parameters used. */
static void content_type(struct parser *p, struct mime_part *part, const char *v, size_t n)
{
    const char *t;
    size_t tn;
    struct param_iter params = value_head(v, n, &t, &tn);
    const char *slash = memchr(t, '/', tn);
    bool ok = slash && slash > t && slash < t + tn - 1;
    for (size_t i = 0; ok && i < tn; i++)
        ok = is_token(t[i]) || t + i == slash;
    if (!ok)
        return;                   /* the default stays */
    part->type = arena_str(p->m, t, tn, true);
    part->charset = param_str(p, params, "charset", true, false);
    const char *name = param_str(p, params, "name", false, false);
    if (part->filename == NULL)
        part->filename = name;
    if (type_is(part, "multipart/")) {
        /* any length, even none: RFC 2046 asks for 1 to 70 characters,
         * and mail readers take longer and empty ones too (the header
         * field's own cap bounds it) */
        part->boundary = param_str(p, params, "boundary", false, true);
    }
}

static void content_disposition(struct parser *p, struct mime_part *part, const char *v, size_t n)
{
    const char *t;
    size_t tn;
    struct param_iter params = value_head(v, n, &t, &tn);
    if (tn)
        part->disposition = arena_str(p->m, t, tn, true);
    const char *f = param_str(p, params, "filename", false, false);
    if (f)
        part->filename = f;
}

static enum mime_encoding encoding(const char *v, size_t n)
{
    static const struct { const char *name; enum mime_encoding e; } names[] = {
        { "7bit", MIME_7BIT }, { "8bit", MIME_8BIT }, { "binary", MIME_BINARY },
        { "quoted-printable", MIME_QUOTED_PRINTABLE }, { "base64", MIME_BASE64 },
        { "x-uuencode", MIME_UUENCODE }, { "uuencode", MIME_UUENCODE }, { "x-uue", MIME_UUENCODE },
    };
    trim(&v, &n);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (slice_is(v, n, names[i].name))
            return names[i].e;
    return MIME_ENCODING_OTHER;
}

/* ---- address headers ---- */

/* Which address header a field is: 0 for none, else a bit of its own
 * (From, To, ... and their Resent- forms). */
static unsigned address_header(const char *name, size_t n)
{
    static const char *const names[] = { "from", "sender", "reply-to", "to", "cc", "bcc" };
    unsigned resent = 0;
    if (n > 7 && strncasecmp(name, "resent-", 7) == 0) {
        name += 7;
        n -= 7;
        resent = 6;
    }
    if (n < 2 || n > 8)
        return 0;
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (slice_is(name, n, names[i]))
            return 1u << (i + resent);
    return 0;
}

/* A copy of the C string s in the arena. */
static const char *arena_dup(struct mime *m, const char *s)
{
    size_t n = strlen(s) + 1;
    char *out = arena_alloc(m, n);
    return out ? memcpy(out, s, n) : NULL;
}

/* h's mailboxes, copied from l into the arena. */
static int keep_addresses(struct mime *m, struct mime_header *h, const struct addr_list *l)
{
    struct address a;
    size_t n = 0;
    for (size_t i = 0; addr_next(l, &i, &a);)
        n++;
    struct address *v = arena_alloc(m, n * sizeof(*v) + 1);
    if (v == NULL)
        return -1;
    h->addresses = v;
    for (size_t i = 0; addr_next(l, &i, &a); v++) {
        v->name = arena_dup(m, a.name);
        v->address = arena_dup(m, a.address);
        v->group = a.group ? arena_dup(m, a.group) : NULL;
        if (v->name == NULL || v->address == NULL || (a.group && v->group == NULL))
            return -1;
        h->naddresses++;
    }
    return 0;
}

/* The header field read so far is complete: store it. */
static void end_field(struct parser *p)
{
    struct mime_part *part = p->cur;
    struct mime *m = p->m;

    if (!p->field)
        return;
    p->field = false;
    if (m->nheaders >= p->lim.headers) {
        cut(p, MIME_CUT_HEADERS);
        return;
    }
    size_t end = p->field_end;
    if (end - p->field_start > p->lim.header_size) {
        cut(p, MIME_CUT_HEADER_SIZE);
        end = p->field_start + p->lim.header_size;
        if (end < p->field_colon + 1)
            end = p->field_colon + 1;
    }
    /* unfold: the line breaks go, the blanks after them stay (RFC 5322 2.2.3) */
    buf_clear(&p->unfolded);
    const char *s = p->msg + p->field_colon + 1;
    size_t n = end - (p->field_colon + 1);
    while (n) {
        const char *lf = memchr(s, '\n', n);
        size_t seg = lf ? (size_t)(lf - s) : n;
        size_t keep = seg && s[seg - 1] == '\r' && lf ? seg - 1 : seg;
        if (buf_append(&p->unfolded, s, keep) < 0) {
            p->oom = true;
            return;
        }
        seg += lf ? 1 : 0;
        s += seg;
        n -= seg;
    }
    const char *v = buf_head(&p->unfolded);
    size_t vn = buf_len(&p->unfolded);
    trim(&v, &vn);

    const char *name = p->msg + p->field_start;
    size_t nn = p->name_end - p->field_start;
    if (slice_is(name, nn, "content-type") && mime_header(part, "content-type") == NULL)
        content_type(p, part, v, vn);
    else if (slice_is(name, nn, "content-disposition") && part->disposition == NULL)
        content_disposition(p, part, v, vn);
    else if (slice_is(name, nn, "content-transfer-encoding") &&
             mime_header(part, "content-transfer-encoding") == NULL)
        part->encoding = encoding(v, vn);

    /* an address header is read as one (RFC 5322 3.4) and written back in
     * the canonical form, encoded words decoded in its names only */
    unsigned addresses = address_header(name, nn);
    buf_clear(&p->decoded);
    struct mime_header *h = arena_alloc(m, sizeof(*h));
    if (h == NULL ||
        (addresses ? addr_parse(&p->addrs, v, vn, header_words, p) < 0 || addr_render(&p->addrs, &p->decoded) < 0
                   : decode_words(p, v, vn, &p->decoded) < 0)) {
        p->oom = true;
        return;
    }
    *h = (struct mime_header){ .name = arena_str(m, name, nn, true),
                               .value = arena_str(m, buf_head(&p->decoded), buf_len(&p->decoded), false) };
    /* the mailboxes of the message's own first From, To, ... */
    bool keep = part == m->root && (addresses & ~p->addresses_kept);
    if (h->name == NULL || h->value == NULL || (keep && keep_addresses(m, h, &p->addrs) < 0)) {
        p->oom = true;
        return;
    }
    if (keep)
        p->addresses_kept |= addresses;
    if (slice_is(name, nn, "content-id") && part->content_id == NULL && h->value[0])
        part->content_id = h->value;
    if (part->last_header)
        part->last_header->next = h;
    else
        part->headers = h;
    part->last_header = h;
    m->nheaders++;
}

/* ---- structure ---- */

/* A new part of `parent` (NULL: the message) whose headers start at `at`;
 * false when the part limit (or memory) does not allow one. */
static bool new_part(struct parser *p, struct mime_part *parent, size_t at)
{
    struct mime *m = p->m;
    if (m->nparts >= p->lim.parts) {
        cut(p, MIME_CUT_PARTS);
        return false;
    }
    struct mime_part *part = arena_alloc(m, sizeof(*part));
    if (part == NULL) {
        p->oom = true;
        return false;
    }
    memset(part, 0, sizeof(*part));
    part->parent = parent;
    part->depth = parent ? parent->depth + 1 : 0;
    /* RFC 2046 5.1.5: in a digest, parts are messages unless they say so */
    part->type = parent && strcmp(parent->type, "multipart/digest") == 0 ? "message/rfc822"
                                                                          : "text/plain";
    part->start = part->body = part->end = at;
    if (parent == NULL)
        m->root = part;
    else if (parent->last_child)
        parent->last_child->next = part;
    else
        parent->child = part;
    if (parent)
        parent->last_child = part;
    m->nparts++;
    p->cur = part;
    p->in_headers = true;
    p->field = false;
    return true;
}

/* The headers of the current part ended; its body starts at `at`. */
static bool end_headers(struct parser *p, size_t at)
{
    struct mime_part *part = p->cur;

    end_field(p);
    p->in_headers = false;
    part->body = part->end = at;
    bool multipart = part->boundary != NULL;
    bool message = (strcmp(part->type, "message/rfc822") == 0 ||
                    strcmp(part->type, "message/global") == 0) &&
                   part->encoding != MIME_BASE64 && part->encoding != MIME_QUOTED_PRINTABLE;
    if (!multipart && !message)
        return true;
    if (part->depth + 1 > p->lim.depth) {
        cut(p, MIME_CUT_DEPTH);
        return true;
    }
    part->container = true;
    if (multipart) {
        struct frame *f = &p->frames[p->nframes++];
        f->part = part;
        f->boundary = part->boundary;
        f->blen = strlen(part->boundary);
        f->delimited = false;
        return true;
    }
    return new_part(p, part, at);
}

/* End every part from the current one up to (not including) `upto` at
 * offset `at` (NULL: all of them). */
static void close_parts(struct parser *p, const struct mime_part *upto, size_t at)
{
    if (p->in_headers) {          /* a part cut short in its headers has no body */
        end_field(p);
        p->in_headers = false;
        p->cur->body = at > p->cur->start ? at : p->cur->start;
    }
    /* no part ends before its body starts, nor before a part inside it */
    for (struct mime_part *q = p->cur; q && q != upto; q = q->parent) {
        if (at < q->body)
            at = q->body;
        q->end = at;
    }
}

/* Is line[0, n) a delimiter of frame f: "--boundary" or "--boundary--",
 * then only blanks (RFC 2046 5.1.1)?  *close_r tells which. */
static bool delimiter(const struct frame *f, const char *line, size_t n, bool *close_r)
{
    if (n < 2 + f->blen || memcmp(line + 2, f->boundary, f->blen) != 0)
        return false;
    size_t i = 2 + f->blen;
    *close_r = i + 1 < n && line[i] == '-' && line[i + 1] == '-';
    if (*close_r)
        i += 2;
    while (i < n && is_wsp(line[i]))
        i++;
    return i == n;
}

/* A header line of the current part.  false ends the headers: the line
 * belongs to the body. */
static bool header_line(struct parser *p, size_t ls, size_t le)
{
    const char *line = p->msg + ls;
    size_t n = le - ls;

    if (is_wsp(line[0])) {        /* a fold; without a field before it, ignored */
        if (p->field)
            p->field_end = le;
        return true;
    }
    const char *colon = memchr(line, ':', n);
    size_t name_end = colon ? (size_t)(colon - line) : 0;
    while (name_end && is_wsp(line[name_end - 1]))   /* RFC 5322 4.5 obs-optional */
        name_end--;
    bool ok = name_end > 0;
    for (size_t i = 0; ok && i < name_end; i++)
        ok = (unsigned char)line[i] > ' ' && (unsigned char)line[i] < 127;
    if (!ok) {
        /* an mbox "From " line before the first header is not one */
        if (ls == 0 && n >= 5 && memcmp(line, "From ", 5) == 0)
            return true;
        return false;
    }
    end_field(p);
    p->field = true;
    p->field_start = ls;
    p->name_end = ls + name_end;
    p->field_colon = (size_t)(colon - p->msg);
    p->field_end = le;
    return true;
}

/* Close the frames from `keep` on (their parts have ended).  A multipart
 * whose boundary never came is read as the text it holds, the way mail
 * readers show it, so that it is not lost; a blank one stays empty. */
static void drop_frames(struct parser *p, int keep)
{
    for (int i = keep; i < p->nframes; i++) {
        struct mime_part *part = p->frames[i].part;
        bool blank = true;
        for (size_t k = part->body; k < part->end && blank; k++)
            blank = is_wsp(p->msg[k]) || p->msg[k] == '\r' || p->msg[k] == '\n';
        if (!p->frames[i].delimited && !blank) {
            part->container = false;
            part->type = "text/plain";
        }
    }
    p->nframes = keep;
}

static void parse(struct parser *p)
{
    size_t pos = 0, len = p->len, stop = len;
    const char *msg = p->msg;

    if (!new_part(p, NULL, 0))
        return;
    while (pos < len && !p->oom) {
        const char *lf = memchr(msg + pos, '\n', len - pos);
        size_t ls = pos, le = lf ? (size_t)(lf - msg) : len;
        size_t next = lf ? le + 1 : len;
        if (le > ls && msg[le - 1] == '\r')
            le--;
        pos = next;

        if (p->nframes && le - ls >= 2 && msg[ls] == '-' && msg[ls + 1] == '-') {
            int k;
            bool close = false;
            for (k = p->nframes - 1; k >= 0; k--)
                if (delimiter(&p->frames[k], msg + ls, le - ls, &close))
                    break;
            if (k >= 0) {
                /* the line break before a delimiter belongs to it */
                size_t at = ls;
                if (at > 0 && msg[at - 1] == '\n' && --at > 0 && msg[at - 1] == '\r')
                    at--;
                struct mime_part *mp = p->frames[k].part;
                close_parts(p, mp, at);
                p->frames[k].delimited = true;
                drop_frames(p, k + 1);
                if (close) {
                    drop_frames(p, k);   /* what follows is its epilogue */
                    p->cur = mp;
                } else if (!new_part(p, mp, next)) {
                    stop = at;        /* a limit: what follows is not read */
                    break;
                }
                continue;
            }
        }
        if (p->in_headers) {
            if (le == ls) {
                end_headers(p, next);
            } else if (!header_line(p, ls, le)) {
                end_headers(p, ls);
                pos = ls;             /* read it again as body */
            }
        } else if (p->nframes == 0) {
            break;                    /* no delimiter can come: the rest is body */
        }
    }
    /* a multipart left open: its last line break is where the missing
     * delimiter would have been, as if it were there */
    if (stop == len && p->nframes > 0 && stop > 0 && msg[stop - 1] == '\n' && --stop > 0 &&
        msg[stop - 1] == '\r')
        stop--;
    close_parts(p, NULL, stop);
    drop_frames(p, 0);
    p->m->root->end = len;        /* the message's body is all it holds */
}

/* ---- the interface ---- */

int mime_parse(const char *msg, size_t len, const struct mime_limits *lim, struct mime **m_r)
{
    struct mime *m = calloc(1, sizeof(*m));
    struct parser parser = { 0 }, *p = &parser;   /* on the stack: a few KB */
    int rc = -1;

    *m_r = NULL;
    if (m == NULL)
        return -1;
    m->msg = msg;
    m->len = len;
    charset_cache_init(&m->charsets);
    p->m = m;
    p->lim = lim ? *lim : mime_default_limits;
    if (p->lim.depth > MIME_DEPTH_MAX)
        p->lim.depth = MIME_DEPTH_MAX;
    p->msg = msg;
    p->len = len;
    struct buf *scratch[] = { &p->unfolded, &p->decoded, &p->bytes, &p->pending };
    /* bounded by a header field, its decoding growing it at most 3 times;
     * allocated when first used */
    for (size_t i = 0; i < sizeof(scratch) / sizeof(scratch[0]); i++)
        buf_init(scratch[i], 4 * p->lim.header_size + 1024);
    /* a header field's tokens and mailboxes: a few dozen bytes a byte at most */
    addr_list_init(&p->addrs, 64 * p->lim.header_size + 1024);
    if (!p->oom)
        parse(p);
    if (!p->oom && m->root != NULL) {
        *m_r = m;
        m = NULL;
        rc = 0;
    }
    for (size_t i = 0; i < sizeof(scratch) / sizeof(scratch[0]); i++)
        buf_free(scratch[i]);
    addr_list_free(&p->addrs);
    mime_free(&m);
    return rc;
}

void mime_free(struct mime **mp)
{
    struct mime *m = *mp;
    if (m == NULL)
        return;
    charset_cache_free(&m->charsets);
    for (struct arena *a = m->arena, *next; a; a = next) {
        next = a->next;
        free(a);
    }
    free(m);
    *mp = NULL;
}

const char *mime_cut_name(enum mime_cut c)
{
    static const char *const names[] = {
        [MIME_CUT_NONE] = "none", [MIME_CUT_DEPTH] = "depth", [MIME_CUT_PARTS] = "parts",
        [MIME_CUT_HEADERS] = "headers", [MIME_CUT_HEADER_SIZE] = "header size",
    };
    return names[c];
}

const char *mime_header(const struct mime_part *p, const char *name)
{
    for (const struct mime_header *h = p->headers; h; h = h->next)
        if (strcmp(h->name, name) == 0)
            return h->value;
    return NULL;
}

const struct mime_part *mime_next(const struct mime_part *p, bool descend)
{
    if (descend && p->child)
        return p->child;
    for (; p; p = p->parent)
        if (p->next)
            return p->next;
    return NULL;
}

bool mime_is_message(const struct mime_part *p)
{
    return p->container && type_is(p, "message/");
}

void mime_bodies(const struct mime *m, const struct mime_part **text_r,
                 const struct mime_part **html_r)
{
    *text_r = *html_r = NULL;
    for (const struct mime_part *p = m->root; p; p = mime_next(p, !mime_is_message(p))) {
        if (p->container || (p->disposition && strcmp(p->disposition, "attachment") == 0))
            continue;
        if (*text_r == NULL && strcmp(p->type, "text/plain") == 0)
            *text_r = p;
        else if (*html_r == NULL && strcmp(p->type, "text/html") == 0)
            *html_r = p;
    }
}

bool mime_is_attachment(const struct mime_part *p, const struct mime_part *text,
                        const struct mime_part *html)
{
    /* a part with neither headers nor content (two delimiters in a row)
     * has nothing to deliver */
    if (p->headers == NULL && p->body == p->end && p->parent)
        return false;
    return p != text && p != html && (!p->container || mime_is_message(p));
}

/* CRLF to LF in out from offset `from` on. */
static void crlf_to_lf(struct buf *out, size_t from)
{
    char *s = out->data + out->start + from, *e = buf_tail(out);
    char *cr = memchr(s, '\r', (size_t)(e - s));
    if (cr == NULL)
        return;
    /* from one CR to the next: the CR goes when an LF follows it */
    char *o = cr;
    for (char *i = cr; i < e;) {
        char *keep = i + 1 < e && i[1] == '\n' ? i + 1 : i;
        char *next = memchr(i + 1, '\r', (size_t)(e - i - 1));
        char *stop = next ? next : e;
        memmove(o, keep, (size_t)(stop - keep));
        o += stop - keep;
        i = stop;
    }
    out->end -= (size_t)(e - o);
}

int mime_decode(struct mime *m, const struct mime_part *p, bool as_text, struct buf *out)
{
    const char *s = m->msg + p->body;
    size_t n = p->end - p->body;
    enum mime_encoding e = p->container ? MIME_BINARY : p->encoding;
    bool transfer = e == MIME_BASE64 || e == MIME_QUOTED_PRINTABLE || e == MIME_UUENCODE;
    size_t from = buf_len(out);
    int rc;

    if (!as_text) {
        if (e == MIME_BASE64)
            return base64_decode(s, n, out);
        if (e == MIME_QUOTED_PRINTABLE)
            return qp_decode(s, n, false, out);
        if (e == MIME_UUENCODE)
            return uu_decode(s, n, out);
        return buf_append(out, s, n);
    }
    if (transfer) {
        struct buf raw;
        buf_init(&raw, n + 16);
        rc = e == MIME_BASE64 ? base64_decode(s, n, &raw)
             : e == MIME_UUENCODE ? uu_decode(s, n, &raw)
                                  : qp_decode(s, n, false, &raw);
        if (rc == 0 && buf_len(&raw))
            rc = charset_to_utf8(&m->charsets, p->charset, p->charset ? strlen(p->charset) : 0,
                                 buf_head(&raw), buf_len(&raw), out);
        buf_free(&raw);
    } else {
        rc = charset_to_utf8(&m->charsets, p->charset, p->charset ? strlen(p->charset) : 0, s, n,
                             out);
    }
    if (rc == 0 && buf_len(out) > from)
        crlf_to_lf(out, from);
    return rc;
}
