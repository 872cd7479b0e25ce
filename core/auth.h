/*
 * auth: the SASL side of SMTP AUTH (RFC 4954), without I/O: strict base64
 * for the client's responses and the PLAIN message (RFC 4616).  LOGIN needs
 * nothing more than base64: a user name, then a password.
 */
#ifndef LUASMTPD_AUTH_H
#define LUASMTPD_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define AUTH_LINE_MAX      12288  /* an AUTH command or response, RFC 4954 section 4 */
#define AUTH_USER_MAX      256    /* bytes of a user name */
#define AUTH_PASSWORD_MAX  1024   /* bytes of a password */

/* Decode base64 (RFC 4648 alphabet; '=' padding may be left out).  Anything
 * else in the input (spaces, line ends, characters outside the alphabet,
 * data after the padding) is an error.  0 with *n_r bytes in out, or -1
 * (malformed, or more than outsz bytes). */
int auth_b64_decode(const char *in, size_t n, char *out, size_t outsz, size_t *n_r);

struct auth_plain {
    const char *authzid;   size_t authzid_len;    /* may be empty */
    const char *user;      size_t user_len;       /* authcid: never empty */
    const char *password;  size_t password_len;
};

/* Split a decoded PLAIN message, authzid NUL authcid NUL passwd.  0, or -1
 * when it does not have exactly that shape or the user name is empty. */
int auth_plain_split(const char *msg, size_t n, struct auth_plain *r);

/* Is a user name or password acceptable to hand to a hook: within its cap,
 * no NUL or line break? */
bool auth_text_ok(const char *p, size_t n, size_t max);

#endif
