/*
 * proxy: the PROXY protocol header a TCP load balancer (HAProxy, nginx
 * stream, a cloud NLB) puts before a client's bytes, so that the server
 * learns who the client is (HAProxy's specification: version 1 is a text
 * line, version 2 binary with TLVs).
 *
 * I/O-free and bounded: proxy_parse() reads the bytes received so far.
 * PROXY_MORE promises that every one of them belongs to the header, so the
 * caller can take them from the socket and read on without ever taking a
 * byte of what follows (the TLS handshake of an implicit-TLS listener, or
 * the client's first command).
 */
#ifndef LUASMTPD_PROXY_H
#define LUASMTPD_PROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "net.h"

#define PROXY_V1_MAX 107            /* the longest line version 1 allows, CRLF included */
#define PROXY_MAX    4096           /* a version 2 header past this is refused */
#define PROXY_TEXT_MAX 256          /* a TLV's text kept, printable ASCII */

enum proxy_result { PROXY_MORE, PROXY_OK, PROXY_BAD };

struct proxy_header {
    int  version;                   /* 1 or 2 */
    /* The proxy's own connection (v2 LOCAL, v1 UNKNOWN, or an address
     * family other than TCP over IPv4 or IPv6): a health check, say.  The
     * connection's real endpoints stay; src and dst are not set. */
    bool local;
    struct net_addr src, dst;       /* the client, and the address it connected to */
    /* version 2 TLVs */
    char authority[PROXY_TEXT_MAX]; /* PP2_TYPE_AUTHORITY: the host name the client asked for */
    bool ssl;                       /* PP2_TYPE_SSL: the client spoke TLS to the proxy */
    bool ssl_verified;              /* ... and its certificate was verified */
    char ssl_version[PROXY_TEXT_MAX], ssl_cn[PROXY_TEXT_MAX], ssl_cipher[PROXY_TEXT_MAX];
};

/* The header at the start of s[0, n): PROXY_MORE when it is not all there
 * yet (read more: all n bytes are the header's), PROXY_OK with its length in
 * *len_r and h filled, PROXY_BAD with the reason in *why_r. */
enum proxy_result proxy_parse(const char *s, size_t n, struct proxy_header *h, size_t *len_r,
                              const char **why_r);

#endif
