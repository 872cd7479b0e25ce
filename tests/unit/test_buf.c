/* buf: storage, cap, the memory budget, and the line reader fed whole and
 * byte by byte. */
#include <errno.h>
#include <string.h>

#include "buf.h"
#include "test.h"

struct line_case {
    const char *name;
    const char *input;
    size_t max;
    const char *expect;   /* lines joined with '|', "!" for an overlong line */
    size_t inlen, explen; /* for inputs with a NUL in them; 0: strlen */
};

static const struct line_case line_cases[] = {
    { "crlf lines", "HELO a\r\nNOOP\r\n", 512, "HELO a|NOOP" },
    { "bare lf accepted", "NOOP\nQUIT\n", 512, "NOOP|QUIT" },
    { "partial tail kept", "NOOP\r\nQU", 512, "NOOP" },
    { "empty line", "\r\n\n", 512, "|" },
    { "cr inside a line stays", "A\rB\r\n", 512, "A\rB" },
    { "exactly max with crlf", "123456\r\n", 8, "123456" },
    { "one over max", "1234567\r\nOK\r\n", 8, "!|OK" },
    { "very long line skipped", "0123456789012345678901234567890123456789\r\nAFTER\r\n", 8, "!|AFTER" },
    { "long line without end", "0123456789012345678901234567890123456789", 8, "" },
    { "nul kept", "A\0B\r\n", 512, "A\0B", 5, 3 },
};

/* Run the reader over input given in pieces of `step` bytes. */
static void collect(const struct line_case *c, size_t inlen, size_t step, char *out, size_t outsz)
{
    struct buf b;
    size_t o = 0, nlines = 0;
    buf_init(&b, 64);
    out[0] = '\0';
    for (size_t pos = 0; pos < inlen; pos += step) {
        size_t n = inlen - pos < step ? inlen - pos : step;
        if (buf_append(&b, c->input + pos, n) < 0) {
            snprintf(out, outsz, "<append failed>");
            break;
        }
        for (;;) {
            const char *line;
            size_t len;
            enum buf_line r = buf_getline(&b, c->max, &line, &len);
            if (r == BUF_LINE_AGAIN)
                break;
            if (nlines++ > 0 && o < outsz - 1)
                out[o++] = '|';
            if (r == BUF_LINE_TOO_LONG) {
                if (o < outsz - 1)
                    out[o++] = '!';
            } else {
                for (size_t i = 0; i < len && o < outsz - 1; i++)
                    out[o++] = line[i];
            }
        }
    }
    out[o] = '\0';
    buf_free(&b);
}

static void test_lines(void)
{
    for (size_t i = 0; i < sizeof(line_cases) / sizeof(line_cases[0]); i++) {
        const struct line_case *c = &line_cases[i];
        size_t inlen = c->inlen ? c->inlen : strlen(c->input);
        size_t elen = c->explen ? c->explen : strlen(c->expect);
        char whole[256], trickle[256];
        collect(c, inlen, inlen, whole, sizeof(whole));
        collect(c, inlen, 1, trickle, sizeof(trickle));
        CHECK(memcmp(whole, c->expect, elen + 1) == 0, "%s (whole): got '%s'", c->name, whole);
        CHECK(memcmp(trickle, c->expect, elen + 1) == 0, "%s (byte by byte): got '%s'", c->name, trickle);
    }
}

static void test_storage(void)
{
    struct buf b;
    buf_init(&b, 4096);
    CHECK(b.data == NULL, "no storage before use");
    CHECK(buf_append(&b, "hello", 5) == 0, "append");
    CHECK(buf_len(&b) == 5 && memcmp(buf_head(&b), "hello", 5) == 0, "content");
    buf_consume(&b, 5);
    buf_shrink(&b);
    CHECK(b.data == NULL, "empty buffer gives its storage back");

    char big[5000];
    memset(big, 'x', sizeof(big));
    CHECK(buf_append(&b, big, 4096) == 0, "fill to the cap");
    CHECK(buf_append(&b, "y", 1) < 0, "one byte over the cap is refused");
    CHECK(buf_len(&b) == 4096, "a refused append leaves the content");
    buf_consume(&b, 4000);
    CHECK(buf_append(&b, big, 3000) == 0, "room made by consuming is reused");
    CHECK(buf_len(&b) == 3096 && b.size <= 4096, "compacted within the cap");
    buf_free(&b);

    buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        buf_append(&b, big, 1000);
    CHECK(buf_len(&b) == 1000000, "grows by doubling to 1 MB");
    CHECK(b.size <= 1 << 20, "never past the cap");
    buf_free(&b);
}

/* What the budget's watch was last told. */
static size_t watched;
static void watch(size_t used)
{
    watched = used;
}

/* --max-memory: budgeted buffers stop growing at it, charged ones count
 * and grow; freeing gives the bytes back; the watch hears each move. */
static void test_budget(void)
{
    static char chunk[64 * 1024];
    buf_budget_set(1 << 20, watch);
    struct buf in, a, b;
    buf_init_counted(&in, 1 << 20, BUF_CHARGED);
    buf_init_counted(&a, 4 << 20, BUF_BUDGETED);
    buf_init_counted(&b, 4 << 20, BUF_BUDGETED);
    CHECK(buf_append(&in, chunk, sizeof(chunk)) == 0 && watched == sizeof(chunk), "input counted");
    int rc = 0;
    size_t taken = 0;
    while (rc == 0 && taken < (2u << 20)) {
        rc = buf_append(&a, chunk, sizeof(chunk));
        taken += rc == 0 ? sizeof(chunk) : 0;
    }
    CHECK(rc < 0 && errno == ENOBUFS, "past the budget: ENOBUFS (%d)", errno);
    CHECK(watched <= 1 << 20 && taken >= (1u << 20) - 2 * sizeof(chunk),
          "grown up to it: %zu bytes taken, %zu used", taken, watched);
    CHECK(buf_append(&b, chunk, 1024) < 0 && errno == ENOBUFS, "another budgeted buffer refused too");
    CHECK(buf_append(&in, chunk, sizeof(chunk)) == 0 && watched > 1 << 20, "input grows past it");
    buf_free(&a);
    CHECK(buf_append(&b, chunk, sizeof(chunk)) == 0, "room again once freed");
    buf_free(&b);
    buf_free(&in);
    CHECK(watched == 0 && buf_budget_left() == 1 << 20, "all given back");
    buf_budget_set((size_t)-1, NULL);
}

int main(void)
{
    test_storage();
    test_budget();
    test_lines();
    return test_summary("test_buf");
}
