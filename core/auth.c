#include "auth.h"

#include <string.h>

#include "base64.h"

int auth_b64_decode(const char *in, size_t n, char *out, size_t outsz, size_t *n_r)
{
    size_t pad = 0;
    while (pad < 2 && n > 0 && in[n - 1] == '=')
        n--, pad++;
    /* with padding, the whole must be a multiple of 4; without, a group of
     * one character cannot encode a byte */
    if ((pad > 0 && (n + pad) % 4 != 0) || n % 4 == 1)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = base64_digit[(unsigned char)in[i]] - 1;
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == outsz)
                return -1;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    /* the bits left over must be zero (RFC 4648 section 3.5) */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    *n_r = o;
    return 0;
}

int auth_plain_split(const char *msg, size_t n, struct auth_plain *r)
{
    const char *nul1 = memchr(msg, '\0', n);
    if (nul1 == NULL)
        return -1;
    const char *user = nul1 + 1;
    const char *nul2 = memchr(user, '\0', n - (size_t)(user - msg));
    if (nul2 == NULL)
        return -1;
    const char *pass = nul2 + 1;
    size_t plen = n - (size_t)(pass - msg);
    if (memchr(pass, '\0', plen) != NULL || nul2 == user)
        return -1;
    r->authzid = msg;
    r->authzid_len = (size_t)(nul1 - msg);
    r->user = user;
    r->user_len = (size_t)(nul2 - user);
    r->password = pass;
    r->password_len = plen;
    return 0;
}

bool auth_text_ok(const char *p, size_t n, size_t max)
{
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
            return false;
    return true;
}
