/*
 * buf: a byte buffer with read and write offsets and a hard cap.
 *
 * Storage is allocated on first use and can be handed back when the buffer
 * is empty, so an idle connection holds no buffer memory.  Bytes are pointer
 * plus length, never C strings.  buf_getline() is the line reader used for
 * SMTP commands: it bounds a line's length and skips the rest of an overlong
 * line up to its LF, so memory never grows past the cap.  Nothing outside
 * this file touches the offsets.
 */
#ifndef LUASMTPD_BUF_H
#define LUASMTPD_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct buf {
    char  *data;
    size_t start;   /* first unread byte */
    size_t end;     /* one past the last written byte */
    size_t size;    /* bytes allocated */
    size_t max;     /* hard cap on allocation */
    bool   skipping; /* buf_getline: inside an overlong line */
    unsigned char budget; /* enum buf_budget */
};

/* The memory budget (--max-memory): the bytes the buffers counted in it
 * hold together.  A charged buffer (a session's input, bounded by its own
 * cap) counts in it and always grows; a budgeted one (a message) grows
 * only while the budget has room, and fails with errno ENOBUFS past it. */
enum buf_budget { BUF_UNCOUNTED, BUF_CHARGED, BUF_BUDGETED };
/* The budget in bytes, and a function told each time its use moves (for
 * /metrics), or NULL. */
void   buf_budget_set(size_t max, void (*watch)(size_t used));
/* What a budgeted buffer may still take. */
size_t buf_budget_left(void);

enum buf_line {
    BUF_LINE_OK,        /* a whole line: *line_r / *len_r without its CRLF or LF */
    BUF_LINE_AGAIN,     /* no complete line buffered yet */
    BUF_LINE_TOO_LONG,  /* an overlong line ended; it has been dropped */
};

void   buf_init(struct buf *b, size_t max);
/* The same, counted in the memory budget as `kind` says. */
void   buf_init_counted(struct buf *b, size_t max, enum buf_budget kind);
void   buf_free(struct buf *b);
/* Free the storage if nothing is buffered (an idle session keeps none). */
void   buf_shrink(struct buf *b);
void   buf_clear(struct buf *b);
/* Keep the first n bytes (n at most buf_len). */
void   buf_truncate(struct buf *b, size_t n);

static inline size_t buf_len(const struct buf *b) { return b->end - b->start; }
/* The buffered bytes; "" (never NULL) while no storage is allocated. */
static inline const char *buf_head(const struct buf *b) { return b->data ? b->data + b->start : ""; }

/* Make room for at least n more bytes at the end; 0, or -1 when the cap
 * (errno EMSGSIZE), memory (ENOMEM) or, for a budgeted buffer, the budget
 * (ENOBUFS) does not allow it.  Room already there costs no call. */
int    buf_reserve_grow(struct buf *b, size_t n);
static inline int buf_reserve(struct buf *b, size_t n)
{
    return b->size - b->end >= n ? 0 : buf_reserve_grow(b, n);
}
/* Where to write (after buf_reserve) and how much room there is. */
static inline char *buf_tail(struct buf *b) { return b->data + b->end; }
static inline size_t buf_room(const struct buf *b) { return b->size - b->end; }
static inline void buf_commit(struct buf *b, size_t n) { b->end += n; }

/* Append n bytes; 0, or -1 when the cap or memory does not allow it.  The
 * common case, room already there, costs no call. */
int    buf_append_grow(struct buf *b, const void *p, size_t n);
static inline int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n > b->size - b->end)
        return buf_append_grow(b, p, n);
    if (n) {
        memcpy(b->data + b->end, p, n);
        b->end += n;
    }
    return 0;
}
/* v in decimal at out (no NUL): the digits written, at most 20. */
size_t fmt_dec(char *out, unsigned long long v);
/* Append formatted text: 0, or -1 when the cap or memory does not allow it. */
int    buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int    buf_vprintf(struct buf *b, const char *fmt, va_list ap);
void   buf_consume(struct buf *b, size_t n);

/*
 * Next line of at most `max` bytes including its line end.  A line ends at LF;
 * one CR before it is removed too.  The returned pointer stays valid until the
 * buffer is next written to.  An overlong line is consumed as it arrives and
 * reported once, when its LF comes.
 */
enum buf_line buf_getline(struct buf *b, size_t max, const char **line_r, size_t *len_r);

#endif
