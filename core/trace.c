#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

struct trace *trace_new(const char *id, const char *peer, int port)
{
    if (!console_on())
        return NULL;
    struct trace *t = malloc(sizeof(*t));
    if (t == NULL)
        return NULL;
    t->n = t->mark = 0;
    t->in_tx = false;
    t->dropped = t->mark_dropped = 0;
    buf_init(&t->dialogue, TRACE_DIALOGUE);
    t->dialogue_mark = 0;
    t->dialogue_cut = false;
    buf_init(&t->fields, 256 * 1024);
    t->t0 = clock_mono();
    t->stage = "connect";
    memset(&t->cs, 0, sizeof(t->cs));
    snprintf(t->cs.id, sizeof(t->cs.id), "%s", id);
    snprintf(t->cs.peer, sizeof(t->cs.peer), "%s", peer);
    t->cs.port = port;
    snprintf(t->cs.state, sizeof(t->cs.state), "greeting");
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

/* src into dst[size], cut short when it must: no format to parse. */
static void copy(char *dst, size_t size, const char *src)
{
    size_t n = src ? strnlen(src, size - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

void trace_add(struct trace *t, enum console_step_kind kind, const char *stage, const char *who, int code,
               const char *text, const char *result, double took)
{
    if (t == NULL)
        return;
    if (t->n == TRACE_MAX) {
        t->dropped++;
        return;
    }
    struct console_step *e = &t->e[t->n++];
    e->at = clock_mono() - t->t0;
    e->took = took;
    e->code = code;
    e->kind = kind;
    copy(e->stage, sizeof(e->stage), stage ? stage : t->stage);
    copy(e->who, sizeof(e->who), who);
    copy(e->text, sizeof(e->text), text);
    copy(e->result, sizeof(e->result), result);
}

void trace_line(struct trace *t, char dir, const char *line, size_t len)
{
    if (t == NULL || t->dialogue_cut)
        return;
    char head[3] = { dir, ':', ' ' };
    /* four bytes stay free for the "..." that says the rest is not here */
    if (buf_len(&t->dialogue) + len + 8 > TRACE_DIALOGUE || buf_append(&t->dialogue, head, 3) < 0 ||
        buf_append(&t->dialogue, line, len) < 0 || buf_append(&t->dialogue, "\n", 1) < 0) {
        buf_append(&t->dialogue, "...\n", 4);
        t->dialogue_cut = true;
    }
}

void trace_mark(struct trace *t)
{
    if (t == NULL)
        return;
    t->in_tx = true;
    t->mark = t->n;
    t->mark_dropped = t->dropped;
    t->dialogue_mark = buf_len(&t->dialogue);
}

void trace_rewind(struct trace *t)
{
    if (t == NULL || !t->in_tx)
        return;
    t->in_tx = false;
    t->n = t->mark;
    t->dropped = t->mark_dropped;
    buf_truncate(&t->dialogue, t->dialogue_mark);
    t->dialogue_cut = false;
    buf_clear(&t->fields);
}

void trace_state(struct trace *t, const char *state)
{
    if (t == NULL)
        return;
    copy(t->cs.state, sizeof(t->cs.state), state);
    t->cs.last = clock_wall_ms(true);     /* at each state change: the cheap clock */
    console_session_set(t->slot, &t->cs);
}
