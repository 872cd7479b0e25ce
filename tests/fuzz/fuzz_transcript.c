/* libFuzzer target for the reader of an SMTP client's transcript
 * (core/transcript.c), which takes what a remote server answered.  The
 * input is pieces separated by NUL bytes; a piece's first byte tells who
 * wrote the rest ('>' the client, anything else the server).  Checks: the
 * reply is a code of 200-599 with bounded text, every refusal belongs to a
 * RCPT of its own, the extensions are the known ones, and all of it is
 * freed.
 *   make fuzz [FUZZ_SECONDS=seconds]    (clang, ASan+UBSan; seeds: tests/fuzz/transcript) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transcript.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The lines of a piece the client sent that begin with RCPT. */
static size_t rcpts(const char *p, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if ((i == 0 || p[i - 1] == '\n') && n - i >= 4 && memcmp(p + i, "RCPT", 4) == 0)
            count++;
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct transcript t = { .code = 0 };
    const char *p = (const char *)data, *end = p + size;
    size_t sent_rcpts = 0;
    while (p < end) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        size_t n = nul ? (size_t)(nul - p) : (size_t)(end - p);
        if (n > 0) {
            bool sent = p[0] == '>';
            if (sent)
                sent_rcpts += rcpts(p + 1, n - 1);
            transcript_feed(&t, sent, p + 1, n - 1);
        }
        p += n + (nul != NULL);
    }
    if (t.code != 0 && (t.code < 200 || t.code > 599))
        abort();
    if (strlen(t.reply) >= sizeof(t.reply) || strlen(t.cmd) >= sizeof(t.cmd) ||
        strlen(t.replied) >= sizeof(t.replied))
        abort();
    size_t refusals = 0;
    for (const struct transcript_refusal *r = t.refused; r; r = r->next, refusals++)
        if (!r->addr[0] || (r->reply[0] != '4' && r->reply[0] != '5'))
            abort();
    if (refusals > sent_rcpts)
        abort();
    if (t.ext & ~(TRANSCRIPT_SIZE | TRANSCRIPT_8BITMIME | TRANSCRIPT_SMTPUTF8 | TRANSCRIPT_DSN))
        abort();
    transcript_free(&t);
    return 0;
}
