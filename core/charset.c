#include "charset.h"

#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <string.h>

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
    { "windows-31j", "cp932" },
    { "iso-8859-6-i", "iso-8859-6" }, { "iso-8859-8-i", "iso-8859-8" },
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

static int convert(iconv_t cd, const char *in, size_t len, struct buf *out)
{
    char *ip = (char *)in;
    size_t il = len;
    size_t want = len + len / 2 + 16;

    iconv(cd, NULL, NULL, NULL, NULL);
    while (il > 0) {
        if (buf_reserve(out, want) < 0)
            return -1;
        char *start = buf_tail(out), *op = start;
        size_t ol = buf_room(out);
        size_t r = iconv(cd, &ip, &il, &op, &ol);
        int err = errno;
        buf_commit(out, (size_t)(op - start));
        if (r != (size_t)-1)
            break;
        if (err == E2BIG) {
            want = il * 4 + 16;
        } else if (err == EILSEQ) {
            if (buf_append(out, replacement, sizeof(replacement)) < 0)
                return -1;
            ip++;
            il--;
        } else {
            /* EINVAL: the text ends inside a sequence */
            return buf_append(out, replacement, sizeof(replacement));
        }
    }
    /* the shift sequence of a stateful charset, if any */
    if (buf_reserve(out, 16) < 0)
        return -1;
    char *start = buf_tail(out), *op = start;
    size_t ol = buf_room(out);
    iconv(cd, NULL, NULL, &op, &ol);
    buf_commit(out, (size_t)(op - start));
    return 0;
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
    if (normalise(name ? name : "", namelen, norm) == 0 && strcmp(norm, "utf-8") != 0)
        cd = lookup(cc, norm);
    if (cd == NULL)
        return utf8_append_valid(out, in, len);
    return convert(cd, in, len, out);
}
