/* libFuzzer target for the PROXY protocol header: any input parses
 * without a fault, and an accepted header's reading depends on its bytes
 * only: every shorter prefix wants more, and what follows changes nothing
 * (so the transport never takes a byte that is not the header's).
 *   make fuzz [FUZZ_SECONDS=seconds]    (seeds: tests/fuzz/proxy) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_header h, again;
    size_t len, len2;
    const char *why;
    const char *s = (const char *)data;
    enum proxy_result r = proxy_parse(s, size, &h, &len, &why);
    if (r == PROXY_BAD && why == NULL)
        abort();
    if (r == PROXY_MORE && size >= PROXY_MAX)
        abort();                  /* the bound holds */
    if (r != PROXY_OK)
        return 0;
    if (len == 0 || len > size || len > PROXY_MAX)
        abort();
    if (proxy_parse(s, len, &again, &len2, &why) != PROXY_OK || len2 != len || memcmp(&h, &again, sizeof(h)) != 0)
        abort();
    for (size_t k = 0; k < len; k += 1 + k / 8)
        if (proxy_parse(s, k, &again, &len2, &why) != PROXY_MORE)
            abort();
    return 0;
}
