/* libFuzzer target for the address-list reader: any header value reads
 * without a fault, and its canonical text is a fixed point: read again, it
 * gives the same mailboxes and the same text (so what a rule sees in
 * mail.from and in mail.addresses never disagree).
 *   make fuzz [FUZZ_SECONDS=seconds]    (seeds: tests/fuzz/addr) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same(const struct addr_list *a, const struct addr_list *b)
{
    struct address x, y;
    size_t i = 0, j = 0;
    for (;;) {
        bool more = addr_next(a, &i, &x);
        if (more != addr_next(b, &j, &y))
            return false;
        if (!more)
            return true;
        if (strcmp(x.name, y.name) || strcmp(x.address, y.address) ||
            (x.group == NULL) != (y.group == NULL) || (x.group && strcmp(x.group, y.group)))
            return false;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct addr_list l, again;
    struct buf text, text2;
    addr_list_init(&l, 64 * size + 1024);
    addr_list_init(&again, 64 * 4 * size + 1024);
    buf_init(&text, 4 * size + 64);
    buf_init(&text2, 4 * size + 64);
    if (addr_parse(&l, (const char *)data, size, NULL, NULL) == 0) {
        if (addr_render(&l, &text) < 0)
            abort();              /* the canonical text fits 4 times the input */
        if (addr_parse(&again, buf_head(&text), buf_len(&text), NULL, NULL) < 0 ||
            addr_render(&again, &text2) < 0 || !same(&l, &again) || buf_len(&text) != buf_len(&text2) ||
            memcmp(buf_head(&text), buf_head(&text2), buf_len(&text)) != 0)
            abort();              /* not a fixed point */
    }
    buf_free(&text);
    buf_free(&text2);
    addr_list_free(&l);
    addr_list_free(&again);
    return 0;
}
