/*
 * addr: RFC 5322 address lists (3.4, with the obsolete forms of 4.4), read
 * the way mail readers read them, and written back in one canonical form.
 *
 * The grammar is the RFC's: mailboxes and groups separated by commas,
 * display names as phrases of atoms and quoted strings, comments anywhere,
 * obsolete routes (<@a,@b:x@y>) and empty list elements.  Where a header
 * breaks it, the reading is the safe one: the address is what stands in
 * angle brackets, else the word before the last '@'; everything before it
 * is display name.  A comment after a bare address (x@y (Name)) is its
 * name when it has no other.
 *
 * Encoded words (RFC 2047) are decoded in display names, group names and
 * comments only, through the caller's `decode`: never in an address, which
 * 2047 5(3) forbids, so a rule matching an address is not fooled by what
 * an encoded word turns into.  The canonical text quotes a display name
 * that holds specials, so a decoded "a@b, c" cannot pose as a second
 * mailbox.
 *
 * I/O-free and allocation-bounded: everything lives in the list's buffers,
 * capped with the size given to addr_list_init.
 */
#ifndef LUASMTPD_ADDR_H
#define LUASMTPD_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* A mailbox as its user sees it: NUL-terminated, valid UTF-8 (bytes that
 * are not become U+FFFD). */
struct address {
    const char *name;      /* display name, decoded; "" when none */
    const char *address;   /* local@domain as written, comments and blanks left out; "" for <> */
    const char *group;     /* the group it is in, or NULL */
};

/* Append s[0, n) to out with its encoded words decoded; 0 or -1. */
typedef int addr_decode_fn(void *ctx, const char *s, size_t n, struct buf *out);

struct addr_list {
    struct buf items;      /* struct addr_item[], internal */
    struct buf text;       /* the strings the items point into, by offset */
    struct buf tokens, phrase, scratch;   /* the parser's */
};

void addr_list_init(struct addr_list *l, size_t max);
void addr_list_free(struct addr_list *l);

/* Read the header value s[0, n) (unfolded) into l, replacing what l held.
 * decode NULL: encoded words are kept as they are.  0, or -1 when a
 * buffer cap or memory did not allow it. */
int addr_parse(struct addr_list *l, const char *s, size_t n, addr_decode_fn *decode, void *ctx);

/* The mailboxes read, in order (an empty group has none):
 *     for (size_t i = 0; addr_next(l, &i, &a);)
 * Their strings stay valid until l is next written. */
bool addr_next(const struct addr_list *l, size_t *i, struct address *a);

/* Append the canonical text of l: "Name <a@b>, c@d, Group: e@f;" with
 * display names quoted where they need it.  0 or -1. */
int addr_render(const struct addr_list *l, struct buf *out);

#endif
