#include "json.h"

#include <stdint.h>
#include <string.h>

/* The length of the UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xf0 && p[0] < 0xf5 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* The bytes a JSON string takes as they are: printable ASCII but '"' and '\\'. */
#define P16 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
static const unsigned char plain[256] = {
    [0x20] = 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,      /* '"' */
    [0x30] = P16, P16,
    [0x50] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,      /* '\\' */
    [0x60] = P16,
    [0x70] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,      /* DEL */
};

/* Whether the 8 bytes at p are all plain: none below 0x20 or from 0x7f,
 * no '"' and no '\\' (each test is exact as a whole, if not byte by byte). */
static bool plain8(const unsigned char *p)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\'), d = x ^ (ones * 0x7f);
    uint64_t bad = (x | ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | ((d - ones) & ~d)) & highs;
    return bad == 0;
}

size_t json_text(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n && o + 7 < cap;) {
        unsigned char c = p[i];
        if (plain[c]) {
            /* a run of plain ASCII: copied at once */
            size_t j = i + 1, end = n - i < cap - 7 - o ? n : i + (cap - 7 - o);
            while (j + 8 <= end && plain8(p + j))
                j += 8;
            /* fewer than eight left: the last eight, overlapping bytes seen plain */
            if (j < end && j + 8 > end && end - i >= 8 && plain8(p + end - 8))
                j = end;
            while (j < end && plain[p[j]])
                j++;
            memcpy(out + o, p + i, j - i);
            o += j - i;
            i = j;
        } else if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
            i++;
        } else {
            size_t len = utf8_len(p + i, n - i);
            if (len == 0) {
                memcpy(out + o, "\\ufffd", 6);
                o += 6;
                i++;
            } else {
                memcpy(out + o, p + i, len);
                o += len;
                i += len;
            }
        }
    }
    return o;
}

int json_str(struct buf *out, const char *s, size_t n)
{
    /* at worst six bytes a byte, and the room json_text keeps */
    if (n > ((size_t)-1 - 16) / 6 || buf_reserve(out, 6 * n + 10) < 0)
        return -1;
    char *t = buf_tail(out);
    t[0] = '"';
    size_t w = json_text(t + 1, buf_room(out) - 2, s, n);
    t[w + 1] = '"';
    buf_commit(out, w + 2);
    return 0;
}

int json_int(struct buf *out, long long v)
{
    if (buf_reserve(out, 21) < 0)
        return -1;
    char *d = buf_tail(out);
    size_t n = v < 0 ? 1 : 0;
    d[0] = '-';
    buf_commit(out, n + fmt_dec(d + n, v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v));
    return 0;
}

int json_cstr(struct buf *out, const char *s)
{
    return s ? json_str(out, s, strlen(s)) : buf_append(out, "null", 4);
}
