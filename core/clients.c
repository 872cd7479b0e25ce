#include "clients.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t hash(const unsigned char *k)
{
    uint32_t h = 2166136261u;     /* FNV-1a */
    for (int i = 0; i < NET_KEY_MAX; i++)
        h = (h ^ k[i]) * 16777619u;
    return h;
}

/* The client's slot, made (its bucket full) when it has none; NULL out of
 * memory. */
static struct client_slot *slot_of(struct clients *t, const unsigned char key[NET_KEY_MAX], double now)
{
    if (t->slot == NULL && (t->slot = calloc(CLIENTS_SLOTS, sizeof(*t->slot))) == NULL)
        return NULL;
    uint32_t at = hash(key);
    struct client_slot *c = NULL, *oldest = NULL;
    for (int i = 0; i < CLIENTS_PROBE && c == NULL; i++) {
        struct client_slot *s = &t->slot[(at + (uint32_t)i) & (CLIENTS_SLOTS - 1)];
        if (s->last > 0 && memcmp(s->key, key, NET_KEY_MAX) == 0)
            c = s;
        else if (oldest == NULL || s->last < oldest->last)
            oldest = s;
    }
    if (c == NULL) {              /* new here, or pushed out: a clean slate */
        c = oldest;
        *c = (struct client_slot){ .tokens = -1, .last = now > 0 ? now : 1e-9 };   /* -1: full */
        memcpy(c->key, key, NET_KEY_MAX);
    }
    if (now - c->bad_since > CLIENTS_BAD_WINDOW)
        c->bad = 0;
    return c;
}

bool clients_connect(struct clients *t, const unsigned char key[NET_KEY_MAX], double now, double per_minute)
{
    struct client_slot *c = slot_of(t, key, now);
    if (c == NULL)
        return true;
    if (c->tokens < 0)
        c->tokens = per_minute;
    c->tokens += (now - c->last) * per_minute / 60;
    if (c->tokens > per_minute)
        c->tokens = per_minute;
    c->last = now > 0 ? now : 1e-9;
    if (c->tokens < 1)
        return false;
    c->tokens -= 1;
    return true;
}

void clients_bad(struct clients *t, const unsigned char key[NET_KEY_MAX], double now)
{
    struct client_slot *c = slot_of(t, key, now);
    if (c && c->bad++ == 0)
        c->bad_since = now;
}

unsigned clients_bad_count(struct clients *t, const unsigned char key[NET_KEY_MAX], double now)
{
    struct client_slot *c = slot_of(t, key, now);
    return c ? c->bad : 0;
}

void clients_free(struct clients *t)
{
    free(t->slot);
    t->slot = NULL;
}
