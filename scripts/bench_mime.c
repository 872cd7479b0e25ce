/* The MIME extractor's own cost (make bench): each message parsed and every
 * part decoded the way lua/mail.c builds the mail table (bodies as text,
 * attachments as bytes), over and over, without the server or Lua.
 *   build/bench_mime [FILE...]   (none: plain, nested multipart, 14 MB base64)
 * Prints, per message, the best of five rounds in microseconds per message
 * and in MB/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "mime.h"

static char *slurp(const char *path, size_t *len_r)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *s = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (cap - n < 65536 && (s = realloc(s, cap = 2 * cap + 65536)) == NULL)
            exit(1);
        got = fread(s + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len_r = n;
    return s;
}

/* A camera's upload: a line of text and 10.5 MB of JPEG-like bytes as
 * 14 MB of base64. */
static char *big_base64(size_t *len_r)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *head = "From: cam1@site.example\r\nTo: ops@site.example\r\nSubject: snapshot\r\n"
                       "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                       "Content-Type: text/plain\r\n\r\nMotion on camera 1.\r\n--b\r\n"
                       "Content-Type: image/jpeg; name=snap.jpg\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    size_t lines = 14 * 1000 * 1000 / 78, hl = strlen(head);
    char *s = malloc(hl + lines * 78 + 16), *o = s;
    memcpy(o, head, hl);
    o += hl;
    unsigned x = 12345;
    for (size_t l = 0; l < lines; l++) {
        for (int i = 0; i < 76; i++) {
            x = x * 1103515245u + 12345u;
            *o++ = b64[(x >> 16) & 63];
        }
        *o++ = '\r';
        *o++ = '\n';
    }
    memcpy(o, "--b--\r\n", 7);
    *len_r = (size_t)(o + 7 - s);
    return s;
}

static void decode_all(const char *msg, size_t len, struct buf *out)
{
    struct mime *m;
    if (mime_parse(msg, len, NULL, &m) < 0)
        exit(1);
    const struct mime_part *text, *html;
    mime_bodies(m, &text, &html);
    for (const struct mime_part *p = m->root; p; p = mime_next(p, !mime_is_message(p))) {
        if (p != text && p != html && !mime_is_attachment(p, text, html))
            continue;
        buf_clear(out);
        if (mime_decode(m, p, p == text || p == html, out) < 0)
            exit(1);
    }
    mime_free(&m);
}

static void bench(const char *name, const char *msg, size_t len)
{
    struct buf out;
    buf_init(&out, 4 * len + 64);
    /* about a second in all: as many as fit a fifth of a second a round */
    unsigned long n = 1;
    for (;;) {
        long long t = clock_mono_ns();
        for (unsigned long i = 0; i < n; i++)
            decode_all(msg, len, &out);
        if (clock_mono_ns() - t > 20 * 1000 * 1000LL || n > (1ul << 30))
            break;
        n *= 2;
    }
    n *= 10;
    double best = 1e300;
    for (int r = 0; r < 5; r++) {
        long long t = clock_mono_ns();
        for (unsigned long i = 0; i < n; i++)
            decode_all(msg, len, &out);
        double us = (double)(clock_mono_ns() - t) / 1e3 / (double)n;
        if (us < best)
            best = us;
    }
    printf("%-24s %10zu bytes %12.2f us/message %9.1f MB/s\n", name, len, best, (double)len / best);
    buf_free(&out);
}

int main(int argc, char **argv)
{
    size_t len;
    char *msg;
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            if ((msg = slurp(argv[i], &len)) == NULL) {
                perror(argv[i]);
                return 1;
            }
            bench(argv[i], msg, len);
            free(msg);
        }
        return 0;
    }
    const char *files[][2] = { { "plain", "tests/data/plain.eml" }, { "nested multipart", "tests/data/nested.eml" } };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        if ((msg = slurp(files[i][1], &len)) == NULL) {
            perror(files[i][1]);
            return 1;
        }
        bench(files[i][0], msg, len);
        free(msg);
    }
    msg = big_base64(&len);
    bench("14 MB base64", msg, len);
    free(msg);
    return 0;
}
