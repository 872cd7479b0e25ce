#include "charset.h"

#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "smtp_parse.h"

static const char replacement[3] = { (char)0xEF, (char)0xBF, (char)0xBD };   /* U+FFFD */

int utf8_append_valid(struct buf *out, const char *in, size_t len)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, run = 0;

    while (i < len) {
        if (p[i] < 0x80) {
            /* ASCII runs are skipped a word at a time */
            uint64_t w;
            for (i++; i + sizeof(w) <= len; i += sizeof(w)) {
                memcpy(&w, p + i, sizeof(w));
                if (w & 0x8080808080808080u)
                    break;
            }
            continue;
        }
        size_t n = smtp_utf8_seq(p + i, len - i);
        if (n) {
            i += n;
            continue;
        }
        if (buf_append(out, in + run, i - run) < 0 ||
            buf_append(out, replacement, sizeof(replacement)) < 0)
            return -1;
        run = ++i;
    }
    return buf_append(out, in + run, len - run);
}

/* ISO-2022-JP as Japanese mailers write it (CP50221, with NEC's row 13:
 * №, ①): iconv has no such converter, so it is read as EUC-JP-MS, which
 * has those characters, after the shift below. */
#define CP50221 "x-cp50221"

/* Names iconv knows under another name, or that are read as a superset the
 * way mail readers do (the subset's text is unchanged). */
static const struct { const char *name, *use; } aliases[] = {
    { "utf8", "utf-8" },
    { "us-ascii", "utf-8" }, { "ascii", "utf-8" }, { "ansi_x3.4-1968", "utf-8" },
    { "iso-8859-1", "windows-1252" }, { "latin1", "windows-1252" },
    { "gb2312", "gb18030" }, { "gbk", "gb18030" }, { "x-gbk", "gb18030" },
    { "cp936", "gb18030" }, { "euc-cn", "gb18030" },
    { "ks_c_5601-1987", "cp949" }, { "euc-kr", "cp949" },
    { "shift_jis", "cp932" }, { "sjis", "cp932" }, { "x-sjis", "cp932" },
    { "iso-2022-jp", CP50221 }, { "csiso2022jp", CP50221 },
    { "windows-31j", "cp932" },
    /* RFC 1556's bidi variants name the same characters */
    { "iso-8859-6-i", "iso-8859-6" }, { "iso-8859-8-i", "iso-8859-8" },
    { "iso-8859-6-e", "iso-8859-6" }, { "iso-8859-8-e", "iso-8859-8" },
};

/* Normalise a declared name into out (lower case, quotes, blanks and an RFC
 * 2231 language suffix removed, aliases applied).  0, or -1 when the name
 * cannot be a charset (iconv must never see '/' or other syntax). */
static int normalise(const char *name, size_t n, char out[CHARSET_NAME_MAX + 1])
{
    while (n && (*name == ' ' || *name == '\t' || *name == '"')) {
        name++;
        n--;
    }
    while (n && (name[n - 1] == ' ' || name[n - 1] == '\t' || name[n - 1] == '"'))
        n--;
    const char *star = memchr(name, '*', n);
    if (star)
        n = (size_t)(star - name);
    if (n == 0) {
        strcpy(out, "utf-8");
        return 0;
    }
    if (n > CHARSET_NAME_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-_.:+", c)))
            return -1;
        out[i] = c;
    }
    out[n] = '\0';
    /* "win-1257", as some writers shorten windows-1257 */
    if (n >= 8 && n + 4 <= CHARSET_NAME_MAX && memcmp(out, "win-", 4) == 0 && out[4] >= '0' && out[4] <= '9') {
        memmove(out + 8, out + 4, n - 3);
        memcpy(out, "windows-", 8);
    }
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
        if (strcmp(out, aliases[i].name) == 0) {
            strcpy(out, aliases[i].use);
            break;
        }
    return 0;
}

void charset_cache_init(struct charset_cache *cc)
{
    memset(cc, 0, sizeof(*cc));
}

void charset_cache_free(struct charset_cache *cc)
{
    for (int i = 0; i < cc->used; i++)
        if (cc->slot[i].cd)
            iconv_close((iconv_t)cc->slot[i].cd);
    cc->used = 0;
}

/* The descriptor for a normalised name, opened once; NULL when unknown. */
static iconv_t lookup(struct charset_cache *cc, const char *name)
{
    for (int i = 0; i < cc->used; i++)
        if (strcmp(cc->slot[i].name, name) == 0)
            return (iconv_t)cc->slot[i].cd;
    iconv_t cd = iconv_open("UTF-8", name);
    int i;
    if (cc->used < CHARSET_CACHE_MAX) {
        i = cc->used++;
    } else {
        i = cc->next;
        cc->next = (cc->next + 1) % CHARSET_CACHE_MAX;
        if (cc->slot[i].cd)
            iconv_close((iconv_t)cc->slot[i].cd);
    }
    strcpy(cc->slot[i].name, name);
    cc->slot[i].cd = cd == (iconv_t)-1 ? NULL : (void *)cd;
    return (iconv_t)cc->slot[i].cd;
}

/* Room for `want` more bytes of out, or as many as its cap leaves: the
 * room (0 at the cap), or -1 when memory ran out. */
static ssize_t reserve_upto(struct buf *out, size_t want)
{
    size_t used = buf_len(out), most = out->max > used ? out->max - used : 0;
    if (want > most)
        want = most;
    if (want > 0 && buf_reserve(out, want) < 0)
        return -1;
    return want > 0 ? (ssize_t)buf_room(out) : 0;
}

/* U+FFFD where a sequence does not decode: 0, 1 at out's cap, -1 OOM. */
static int replace(struct buf *out)
{
    ssize_t room = reserve_upto(out, sizeof(replacement));
    if (room < (ssize_t)sizeof(replacement))
        return room < 0 ? -1 : 1;
    return buf_append(out, replacement, sizeof(replacement));
}

/*
 * Convert with iconv.  The room asked for follows what is left of the
 * input, never the whole input again, and nothing is asked beyond out's
 * cap: text that would grow past it (callers give 4x the input, more than
 * any charset's worst case but a few combining ones) is cut there.  So the
 * only failure is memory: 0, or -1.
 */
static int convert(iconv_t cd, const char *in, size_t len, struct buf *out)
{
    char *ip = (char *)in;
    size_t il = len;
    size_t want = len + len / 2 + 16;   /* most text needs no more */

    iconv(cd, NULL, NULL, NULL, NULL);
    while (il > 0) {
        ssize_t room = reserve_upto(out, want);
        if (room < 0)
            return -1;
        char *start = buf_tail(out), *op = start;
        size_t ol = (size_t)room;
        size_t r = room > 0 ? iconv(cd, &ip, &il, &op, &ol) : (size_t)-1;
        int err = room > 0 ? errno : E2BIG;
        buf_commit(out, (size_t)(op - start));
        if (r != (size_t)-1)
            break;
        if (err == E2BIG) {
            if ((size_t)room < want)
                return 0;               /* at the cap: the rest is cut */
            want = il * 4 + 16;
            continue;
        }
        /* EILSEQ: skip one byte; EINVAL: the text ends inside a sequence */
        int rc = replace(out);
        if (rc != 0 || err != EILSEQ)
            return rc < 0 ? -1 : 0;
        if (il == 0)
            break;   /* glibc's ISO-2022-CN-EXT at times fails on a character it has taken */
        ip++;
        il--;
        want = il + il / 2 + 16;
    }
    /* the shift sequence of a stateful charset, if any */
    ssize_t room = reserve_upto(out, 16);
    if (room < 0)
        return -1;
    char *start = buf_tail(out), *op = start;
    size_t ol = (size_t)room;
    iconv(cd, NULL, NULL, &op, &ol);
    buf_commit(out, (size_t)(op - start));
    return 0;
}

/* in (n bytes) into out as valid UTF-8, with U+FFFD for each byte that
 * starts no valid sequence, cut at out's cap: 0, or -1 out of memory. */
static int append_repaired(struct buf *out, const char *in, size_t n)
{
    const unsigned char *p = (const unsigned char *)in;
    for (size_t i = 0; i < n;) {
        size_t k = p[i] < 0x80 ? 1 : smtp_utf8_seq(p + i, n - i);
        const char *seq = k ? in + i : replacement;
        size_t len = k ? k : sizeof(replacement);
        ssize_t room = reserve_upto(out, len);
        if (room < 0)
            return -1;
        if ((size_t)room < len)
            return 0;                   /* at the cap */
        buf_append(out, seq, len);
        i += k ? k : 1;
    }
    return 0;
}

/* Some of iconv's converters (UCS-4 read from any bytes) write code points
 * UTF-8 has no place for: what convert() gave from `from` on is checked,
 * and repaired where it is not valid UTF-8. */
static int ensure_valid(struct buf *out, size_t from)
{
    size_t n = buf_len(out) - from;
    if (smtp_utf8_valid(buf_head(out) + from, n))
        return 0;
    char *copy = malloc(n);
    if (copy == NULL)
        return -1;
    memcpy(copy, buf_head(out) + from, n);
    buf_truncate(out, from);
    int rc = append_repaired(out, copy, n);
    free(copy);
    return rc;
}

/*
 * ISO-2022-JP (7-bit JIS with escapes) to EUC-JP: a JIS X 0208 pair gets
 * its high bits, half-width katakana (ESC ( I, or SO ... SI) gets SS2
 * before it, the escapes go.  Any other byte is kept for the EUC decoder to
 * judge.  out has room for 2 * len; the length written.
 */
static size_t jis_to_euc(const unsigned char *in, size_t len, unsigned char *out)
{
    enum { ROMAN, KANJI, KANA } mode = ROMAN;
    bool shifted = false;          /* SO: katakana until SI */
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = in[i];
        if (c == 0x1B && i + 2 < len && (in[i + 1] == '$' || in[i + 1] == '(')) {
            unsigned char f = in[i + 2];
            bool two = in[i + 1] == '$';
            if ((two && (f == 'B' || f == '@')) || (!two && (f == 'B' || f == 'J' || f == 'I'))) {
                mode = two ? KANJI : f == 'I' ? KANA : ROMAN;
                i += 2;
                continue;
            }
        }
        if (c == 0x0E || c == 0x0F) {
            shifted = c == 0x0E;
            continue;
        }
        if ((mode == KANA || shifted) && c >= 0x21 && c <= 0x5F) {
            out[o++] = 0x8E;
            out[o++] = (unsigned char)(c | 0x80);
        } else if (mode == KANJI && c >= 0x21 && c <= 0x7E) {
            /* half a pair stays a lone lead byte: the decoder's U+FFFD */
            out[o++] = (unsigned char)(c | 0x80);
            if (i + 1 < len && in[i + 1] >= 0x21 && in[i + 1] <= 0x7E)
                out[o++] = (unsigned char)(in[++i] | 0x80);
        } else {
            /* an 8-bit byte is no character of this 7-bit code: 0xFF is
             * none of EUC-JP either, so it becomes the decoder's U+FFFD */
            out[o++] = c < 0x80 ? c : 0xFF;
        }
    }
    return o;
}

static int cp50221_to_utf8(struct charset_cache *cc, const char *in, size_t len, struct buf *out)
{
    iconv_t cd = lookup(cc, "EUC-JP-MS");
    unsigned char *euc = cd ? malloc(2 * len) : NULL;
    if (euc == NULL)
        return cd ? -1 : utf8_append_valid(out, in, len);
    size_t n = jis_to_euc((const unsigned char *)in, len, euc);
    size_t from = buf_len(out);
    int rc = convert(cd, (const char *)euc, n, out) < 0 ? -1 : ensure_valid(out, from);
    free(euc);
    return rc;
}

int charset_to_utf8(struct charset_cache *cc, const char *name, size_t namelen,
                    const char *in, size_t len, struct buf *out)
{
    char norm[CHARSET_NAME_MAX + 1];
    iconv_t cd = NULL;

    if (len == 0)
        return 0;
    if (name == NULL)
        namelen = 0;
    bool named = normalise(name ? name : "", namelen, norm) == 0;
    if (named && strcmp(norm, CP50221) == 0)
        return cp50221_to_utf8(cc, in, len, out);
    if (named && strcmp(norm, "utf-8") != 0)
        cd = lookup(cc, norm);
    if (cd == NULL)
        return utf8_append_valid(out, in, len);
    size_t from = buf_len(out);
    return convert(cd, in, len, out) < 0 ? -1 : ensure_valid(out, from);
}
