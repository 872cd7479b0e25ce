#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_ALLOC 1024

static size_t budget_max = (size_t)-1, budget_used;
static void (*budget_watch)(size_t used);

void buf_budget_set(size_t max, void (*watch)(size_t used))
{
    budget_max = max;
    budget_watch = watch;
}

/* The budget's use moved: now `used`. */
static void budget_now(size_t used)
{
    budget_used = used;
    if (budget_watch)
        budget_watch(used);
}

size_t buf_budget_left(void)
{
    return budget_used < budget_max ? budget_max - budget_used : 0;
}

void buf_init(struct buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void buf_init_counted(struct buf *b, size_t max, enum buf_budget kind)
{
    buf_init(b, max);
    b->budget = (unsigned char)kind;
}

void buf_free(struct buf *b)
{
    if (b->budget != BUF_UNCOUNTED && b->size)
        budget_now(budget_used - b->size);
    free(b->data);
    b->data = NULL;
    b->start = b->end = b->size = 0;
}

void buf_clear(struct buf *b)
{
    b->start = b->end = 0;
    b->skipping = false;
}

void buf_truncate(struct buf *b, size_t n)
{
    if (n < b->end - b->start)
        b->end = b->start + n;
}

void buf_shrink(struct buf *b)
{
    if (b->data != NULL && b->start == b->end)
        buf_free(b);
}

int buf_reserve_grow(struct buf *b, size_t n)
{
    size_t used = b->end - b->start;

    if (n > b->max || used > b->max - n) {
        errno = EMSGSIZE;
        return -1;
    }
    /* Slide the unread bytes to the front when that makes enough room. */
    if (b->start > 0 && b->size - used >= n) {
        memmove(b->data, b->data + b->start, used);
        b->start = 0;
        b->end = used;
        return 0;
    }
    size_t want = b->size ? b->size : BUF_MIN_ALLOC;
    while (want - used < n)
        want = want > b->max / 2 ? b->max : want * 2;
    if (want > b->max)
        want = b->max;
    size_t left = b->budget == BUF_BUDGETED ? buf_budget_left() : SIZE_MAX;
    if (want - b->size > left) {
        /* no room to double: a quarter more than asked for (so growing on
         * copies it a few times only), or what is left */
        size_t need = used + n;
        if (need - b->size > left) {
            errno = ENOBUFS;
            return -1;
        }
        want = need + need / 4 < b->max ? need + need / 4 : b->max;
        if (want - b->size > left)
            want = b->size + left;
    }
    char *p = malloc(want);
    if (p == NULL)
        return -1;
    if (b->budget != BUF_UNCOUNTED)
        budget_now(budget_used + (want - b->size));
    if (used)
        memcpy(p, b->data + b->start, used);
    free(b->data);
    b->data = p;
    b->start = 0;
    b->end = used;
    b->size = want;
    return 0;
}

int buf_append_grow(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->end, p, n);
    b->end += n;
    return 0;
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(b->data ? b->data + b->end : NULL, b->data ? b->size - b->end : 0, fmt, ap);
    if (n >= 0 && (size_t)n >= (b->data ? b->size - b->end : 0)) {
        /* it did not fit: make room, then write it again */
        if (buf_reserve(b, (size_t)n + 1) < 0)
            n = -1;
        else
            n = vsnprintf(b->data + b->end, b->size - b->end, fmt, again);
    }
    va_end(again);
    if (n < 0)
        return -1;
    b->end += (size_t)n;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_consume(struct buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->end)
        b->start = b->end = 0;
}

enum buf_line buf_getline(struct buf *b, size_t max, const char **line_r, size_t *len_r)
{
    size_t avail = b->end - b->start;
    const char *head = b->data + b->start;
    const char *lf = avail ? memchr(head, '\n', avail) : NULL;

    if (lf == NULL) {
        if (b->skipping || avail >= max) {
            b->skipping = true;
            buf_consume(b, avail);
        }
        return BUF_LINE_AGAIN;
    }
    size_t n = (size_t)(lf - head) + 1;
    if (b->skipping || n > max) {
        b->skipping = false;
        buf_consume(b, n);
        return BUF_LINE_TOO_LONG;
    }
    size_t len = n - 1;
    if (len > 0 && head[len - 1] == '\r')
        len--;
    *line_r = head;
    *len_r = len;
    /* Advance without compacting: the line stays readable until the next
     * write into the buffer. */
    b->start += n;
    return BUF_LINE_OK;
}

size_t fmt_dec(char *out, unsigned long long v)
{
    /* two digits a division, written from the last: no count first */
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    char tmp[20], *end = tmp + sizeof(tmp), *p = end;
    while (v >= 100) {
        p -= 2;
        memcpy(p, pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
    memcpy(out, p, (size_t)(end - p));
    return (size_t)(end - p);
}
