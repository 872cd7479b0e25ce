#include "json.h"

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
    char d[24], *p = d + sizeof(d);
    unsigned long long u = v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--p = '-';
    return buf_append(out, p, (size_t)(d + sizeof(d) - p));
}

int json_key(struct buf *out, const char *name)
{
    return JSON_LIT(out, ",\"") | buf_append(out, name, strlen(name)) | JSON_LIT(out, "\":");
}

int json_field(struct buf *out, const char *name, const char *value)
{
    return json_key(out, name) | json_cstr(out, value);
}

int json_field_int(struct buf *out, const char *name, long long v)
{
    return json_key(out, name) | json_int(out, v);
}

int json_cstr(struct buf *out, const char *s)
{
    return s ? json_str(out, s, strlen(s)) : buf_append(out, "null", 4);
}
