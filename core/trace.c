#include "trace.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* src into dst[size], cut short when it must (no format to parse). */
static void copy(char *dst, size_t size, const char *src)
{
    size_t n = src ? strnlen(src, size - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

/* src, at most max bytes of it, at w: past them. */
static char *put(char *w, const char *src, size_t max, unsigned char *len)
{
    size_t n = src ? strnlen(src, max) : 0;
    if (n)
        memcpy(w, src, n);
    *len = (unsigned char)n;
    return w + n;
}

struct trace *trace_new(const char *id, const char *peer, int port)
{
    if (!console_on())
        return NULL;
    struct trace *t = malloc(sizeof(*t));
    if (t == NULL)
        return NULL;
    t->n = t->mark = 0;
    t->len = t->mark_len = 0;
    t->in_tx = false;
    t->dropped = t->mark_dropped = 0;
    buf_init(&t->dialogue, TRACE_DIALOGUE);
    t->dialogue_mark = 0;
    t->dialogue_cut = false;
    buf_init(&t->fields, 256 * 1024);
    t->parsed = false;
    t->cs_changed = false;
    t->t0 = clock_mono();
    t->stage = "connect";
    memset(&t->cs, 0, sizeof(t->cs));
    copy(t->cs.id, sizeof(t->cs.id), id);
    copy(t->cs.peer, sizeof(t->cs.peer), peer);
    t->cs.port = port;
    copy(t->cs.state, sizeof(t->cs.state), "greeting");
    t->cs.started = t->cs.last = clock_wall_ms(false);
    t->slot = console_session_open(&t->cs);
    return t;
}

void trace_free(struct trace *t)
{
    if (t == NULL)
        return;
    console_session_close(t->slot);
    buf_free(&t->dialogue);
    buf_free(&t->fields);
    free(t);
}

void trace_add(struct trace *t, enum console_step_kind kind, const char *stage, const char *who, int code,
               const char *text, size_t text_len, const char *result, double now, double took)
{
    if (t == NULL)
        return;
    if (t->n == TRACE_MAX) {
        t->dropped++;
        return;
    }
    t->n++;
    struct console_step e = { .at_us = (long long)((now - t->t0) * 1e6), .took_us = (long long)(took * 1e6),
                              .code = code, .kind = (unsigned char)kind };
    char *w = t->steps + t->len + sizeof(e);
    w = put(w, stage ? stage : t->stage, STEP_STAGE_MAX, &e.len[0]);
    w = put(w, who, STEP_WHO_MAX, &e.len[1]);
    text_len = text_len < STEP_TEXT_MAX ? text_len : STEP_TEXT_MAX;
    if (text_len)
        memcpy(w, text, text_len);
    e.len[2] = (unsigned char)text_len;
    w += text_len;
    w = put(w, result, STEP_RESULT_MAX, &e.len[3]);
    memcpy(t->steps + t->len, &e, sizeof(e));
    t->len = (size_t)(w - t->steps);
}

void trace_line(struct trace *t, char dir, const char *line, size_t len)
{
    if (t == NULL || t->dialogue_cut)
        return;
    /* four bytes stay free for the "..." that says the rest is not here */
    if (buf_len(&t->dialogue) + len + 8 > TRACE_DIALOGUE || buf_reserve(&t->dialogue, len + 4) < 0) {
        buf_append(&t->dialogue, "...\n", 4);
        t->dialogue_cut = true;
        return;
    }
    char *w = buf_tail(&t->dialogue);
    w[0] = dir;
    w[1] = ':';
    w[2] = ' ';
    memcpy(w + 3, line, len);
    w[3 + len] = '\n';
    buf_commit(&t->dialogue, len + 4);
}

void trace_mark(struct trace *t)
{
    if (t == NULL)
        return;
    t->in_tx = true;
    t->mark = t->n;
    t->mark_len = t->len;
    t->mark_dropped = t->dropped;
    t->dialogue_mark = buf_len(&t->dialogue);
}

void trace_rewind(struct trace *t)
{
    if (t == NULL || !t->in_tx)
        return;
    t->in_tx = false;
    t->n = t->mark;
    t->len = t->mark_len;
    t->dropped = t->mark_dropped;
    buf_truncate(&t->dialogue, t->dialogue_mark);
    t->dialogue_cut = false;
    buf_clear(&t->fields);
    t->parsed = false;
}

void trace_parsed(struct trace *t, const char *subject)
{
    t->parsed = true;
    copy(t->subject, sizeof(t->subject), subject);
}

void trace_state(struct trace *t, const char *state, bool same)
{
    if (t == NULL)
        return;
    /* at each state change, the cheap clock; the same state again (the
     * next RCPT) moves the last activity on once a second */
    long long now = clock_wall_ms(true);
    if (same && !t->cs_changed && now - t->cs.last < 1000)
        return;
    copy(t->cs.state, sizeof(t->cs.state), state);
    t->cs.last = now;
    console_session_set(t->slot, &t->cs, t->cs_changed);
    t->cs_changed = false;
}
