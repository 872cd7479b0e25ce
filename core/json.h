/*
 * json: writing JSON text (the log's json format, the console's API).
 * Strings are escaped as RFC 8259 asks; bytes that are no UTF-8 become
 * U+FFFD, so whatever a client sent, the output parses.
 */
#ifndef LUASMTPD_JSON_H
#define LUASMTPD_JSON_H

#include <stddef.h>
#include <string.h>

#include "buf.h"

/* s[0, n) as the inside of a JSON string, into out (cap bytes, cut short at
 * a character boundary when it must).  The length written. */
size_t json_text(char *out, size_t cap, const char *s, size_t n);
/* Append s[0, n) as a quoted JSON string: 0, or -1 when out cannot grow. */
int    json_str(struct buf *out, const char *s, size_t n);
/* The same for a C string, or null for NULL. */
int    json_cstr(struct buf *out, const char *s);
/* Append a string literal. */
#define JSON_LIT(out, s) buf_append((out), (s), sizeof(s) - 1)
/* Append a decimal integer (no format string to read: this is on the
 * path of every traced stage). */
int    json_int(struct buf *out, long long v);
/* Append ,"name": and then a value; or with it a string (null for NULL)
 * or an integer.  Inline: with a literal name, its length is known. */
static inline int json_key(struct buf *out, const char *name)
{
    return JSON_LIT(out, ",\"") | buf_append(out, name, strlen(name)) | JSON_LIT(out, "\":");
}
static inline int json_field(struct buf *out, const char *name, const char *value)
{
    return json_key(out, name) | json_cstr(out, value);
}
static inline int json_field_int(struct buf *out, const char *name, long long v)
{
    return json_key(out, name) | json_int(out, v);
}

#endif
