/* libFuzzer target for the parsers of the SMTP dialogue: every line of the
 * input as a command (its path and parameters for MAIL and RCPT, its SASL
 * response for AUTH), and the whole input as DATA, fed at once and in two
 * pieces split where the fuzzer says: both must give the same message.
 *   make fuzz [FUZZ_SECONDS=seconds]    (clang, ASan+UBSan; seeds: tests/fuzz/protocol) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "buf.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_line(const char *line, size_t len)
{
    struct smtp_cmd c;
    struct smtp_path path;
    smtp_parse_command(line, len, &c);
    if (c.verb == SMTP_MAIL || c.verb == SMTP_RCPT || c.verb == SMTP_UNKNOWN) {
        if (smtp_parse_path(c.arg, c.arglen, "FROM:", SMTP_PATH_NULL_OK, &path) == SMTP_PATH_OK &&
            (path.addrlen > SMTP_PATH_MAX || strlen(path.addr) != path.addrlen))
            abort();
        if (smtp_parse_path(c.arg, c.arglen, "TO:", SMTP_PATH_POSTMASTER_OK, &path) == SMTP_PATH_OK)
            (void)smtp_param_find(&path.params, "SIZE");
    }
    unsigned long long chunk;
    bool last;
    if (smtp_parse_bdat(c.arg, c.arglen, &chunk, &last) && chunk >= 1000000000000000000ull)
        abort();                  /* at most 18 digits */
    char dec[AUTH_LINE_MAX];
    size_t n;
    struct auth_plain p;
    unsigned bits;
    if (smtp_parse_notify(c.arg, c.arglen, &bits) && (bits == 0 || bits > 15))
        abort();
    if (smtp_xtext_decode(c.arg, c.arglen, dec, sizeof(dec)) && strlen(dec) > c.arglen)
        abort();                  /* decoding never grows (a NUL may shorten it) */
    (void)smtp_dsn_text(c.arg, c.arglen, dec, sizeof(dec));
    if (auth_b64_decode(c.arg, c.arglen, dec, sizeof(dec), &n) == 0 && n > c.arglen)
        abort();
    if (auth_b64_decode(line, len, dec, sizeof(dec), &n) == 0 && auth_plain_split(dec, n, &p) == 0 &&
        (p.user_len == 0 || p.authzid_len + p.user_len + p.password_len + 2 != n))
        abort();
}

/* The DATA scanner over in, in two pieces split at `split`; *over when
 * the message outgrew the sink. */
static size_t scan(const char *in, size_t len, size_t split, struct buf *sink, bool *done,
                   bool *over)
{
    struct smtp_data d;
    size_t used = 0;
    smtp_data_init(&d);
    *done = false;
    while (used < len && !*done) {
        size_t piece = used < split ? split - used : len - used;
        size_t k = smtp_data_scan(&d, in + used, piece, sink, done);
        if (k == 0 && !*done)
            break;   /* it takes all it is given unless the message ended */
        used += k;
    }
    *over = d.overflow;
    return used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    for (size_t i = 0; i < size;) {
        const char *nl = memchr(in + i, '\n', size - i);
        size_t end = nl ? (size_t)(nl - in) : size;
        size_t len = end - i;
        if (len > 0 && in[i + len - 1] == '\r')
            len--;
        one_line(in + i, len);
        i = end + 1;
    }
    struct buf a, b;
    bool done_a, done_b, over_a, over_b;
    buf_init(&a, 4096);   /* a small cap, so overflow is reached too */
    buf_init(&b, 4096);
    size_t split = size ? data[0] % (size + 1) : 0;
    size_t ua = scan(in, size, size, &a, &done_a, &over_a);
    size_t ub = scan(in, size, split, &b, &done_b, &over_b);
    /* How the bytes arrive must change neither the message nor whether it
     * is too big; what an overflowing message left in the sink is thrown
     * away (552), so only a whole message is compared. */
    if (ua != ub || done_a != done_b || over_a != over_b ||
        (!over_a && (buf_len(&a) != buf_len(&b) ||
                     (buf_len(&a) > 0 && memcmp(buf_head(&a), buf_head(&b), buf_len(&a)) != 0))))
        abort();
    buf_free(&a);
    buf_free(&b);
    return 0;
}
