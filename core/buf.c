#include "buf.h"

#include <stdlib.h>
#include <string.h>

#define BUF_MIN_ALLOC 1024

void buf_init(struct buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void buf_free(struct buf *b)
{
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

int buf_reserve(struct buf *b, size_t n)
{
    size_t used = b->end - b->start;

    if (b->size - b->end >= n)
        return 0;
    if (n > b->max || used > b->max - n)
        return -1;
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
    char *p = malloc(want);
    if (p == NULL)
        return -1;
    if (used)
        memcpy(p, b->data + b->start, used);
    free(b->data);
    b->data = p;
    b->start = 0;
    b->end = used;
    b->size = want;
    return 0;
}

void buf_commit(struct buf *b, size_t n)
{
    b->end += n;
}

int buf_append_grow(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->end, p, n);
    b->end += n;
    return 0;
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
