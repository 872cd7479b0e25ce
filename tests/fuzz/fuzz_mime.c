/* libFuzzer target for the MIME extractor: parse, then decode every part
 * both ways, find the uuencoded files in the text, and pick the bodies, as
 * lua/mail.c does for on_mail.
 *   make fuzz [FUZZ_SECONDS=seconds]    (clang, ASan+UBSan; seeds: tests/data) */
#include <stddef.h>
#include <stdint.h>

#include "mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mime *m;
    /* small limits too, so the fuzzer reaches them */
    const struct mime_limits small = { .depth = 4, .parts = 16, .headers = 32, .header_size = 256 };
    const struct mime_limits *lims[] = { NULL, &small };

    for (size_t l = 0; l < sizeof(lims) / sizeof(lims[0]); l++) {
        if (mime_parse((const char *)data, size, lims[l], &m) < 0)
            continue;
        const struct mime_part *text, *html;
        mime_bodies(m, &text, &html);
        struct buf out;
        buf_init(&out, 8 * size + 64);
        struct buf file;
        buf_init(&file, 8 * size + 64);
        for (const struct mime_part *p = m->root; p; p = mime_next(p, true)) {
            (void)mime_is_attachment(p, text, html);
            buf_clear(&out);
            (void)mime_decode(m, p, true, &out);
            /* the uuencoded files in the text, as lua/mail.c takes them out */
            struct mime_uu b;
            for (size_t at = 0; mime_uu_block(buf_head(&out), buf_len(&out), at, &b); at = b.end) {
                if (b.end <= at || b.end > buf_len(&out) || b.data_end < b.data)
                    __builtin_trap();
                buf_clear(&file);
                (void)mime_uu_decode(buf_head(&out), &b, &file);
            }
            buf_clear(&out);
            (void)mime_decode(m, p, false, &out);
        }
        buf_free(&file);
        buf_free(&out);
        mime_free(&m);
    }
    return 0;
}
