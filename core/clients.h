/*
 * clients: what is remembered of each client across its connections:
 * connections per minute (--connect-rate) as a token bucket, and the
 * sessions closed for errors lately (--max-bad-clients).  A fixed table: a
 * client's key hashes to a window of a few slots, and a new client takes
 * the least recently seen of them, so memory is bounded whatever the number
 * of addresses (a client pushed out starts again with a clean slate).
 */
#ifndef LUASMTPD_CLIENTS_H
#define LUASMTPD_CLIENTS_H

#include <stdbool.h>

#include "net.h"

#define CLIENTS_SLOTS 4096          /* a power of two */
#define CLIENTS_PROBE 8

#define CLIENTS_BAD_WINDOW 600.0    /* seconds a closing for errors is held against a client */

struct client_slot {
    unsigned char key[NET_KEY_MAX];
    double tokens, last;            /* last: when it was seen; 0 for a free slot */
    unsigned bad;                   /* sessions closed for errors since bad_since */
    double bad_since;
};

struct clients {
    struct client_slot *slot;       /* CLIENTS_SLOTS of them, allocated when first used */
};

/* A connection from key at `now` (seconds, monotonic): false when the
 * client has used up per_minute connections, counted as a bucket that
 * fills at per_minute a minute and holds as many.  Out of memory, it
 * lets the connection through. */
bool clients_connect(struct clients *t, const unsigned char key[NET_KEY_MAX], double now, double per_minute);
/* A session of the client was closed for its errors. */
void clients_bad(struct clients *t, const unsigned char key[NET_KEY_MAX], double now);
/* Its sessions closed for errors in the last CLIENTS_BAD_WINDOW seconds. */
unsigned clients_bad_count(struct clients *t, const unsigned char key[NET_KEY_MAX], double now);
void clients_free(struct clients *t);

#endif
