/*
 * charset: text in any declared charset to valid UTF-8, through iconv.
 *
 * Mail declares its charsets by name (RFC 2045 charset=, RFC 2047 encoded
 * words); the names are normalised (case, common aliases, supersets such as
 * GB2312 read as GB18030) and opened with iconv.  UTF-8 and US-ASCII, the
 * common cases, take a fast path without iconv.  Conversion never fails
 * but for memory: an invalid sequence becomes U+FFFD and decoding goes on,
 * what iconv writes that is not valid UTF-8 is repaired, and text that
 * would grow past the output buffer's cap is cut there; text in an
 * unknown charset is kept where it is valid UTF-8 and replaced elsewhere.
 *
 * A charset_cache keeps the iconv descriptors opened for one message so a
 * charset used by many headers and parts is opened once.
 */
#ifndef LUASMTPD_CHARSET_H
#define LUASMTPD_CHARSET_H

#include <stddef.h>

#include "buf.h"

#define CHARSET_NAME_MAX  40
#define CHARSET_CACHE_MAX 4

struct charset_cache {
    struct {
        char  name[CHARSET_NAME_MAX + 1];
        void *cd;                 /* iconv_t, or NULL: unknown charset */
    } slot[CHARSET_CACHE_MAX];
    int used;
    int next;                     /* slot to reuse when full */
};

void charset_cache_init(struct charset_cache *cc);
void charset_cache_free(struct charset_cache *cc);

/* Append `in` (charset `name`; NULL or "" is US-ASCII) as UTF-8 to out.
 * 0, or -1 when out cannot grow (its cap or memory). */
int  charset_to_utf8(struct charset_cache *cc, const char *name, size_t namelen,
                     const char *in, size_t len, struct buf *out);

/* Append `in` to out with every byte that is not part of a valid UTF-8
 * sequence replaced by U+FFFD.  0 or -1 as above. */
int  utf8_append_valid(struct buf *out, const char *in, size_t len);

#endif
