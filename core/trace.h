/*
 * trace: what one session did, for the console (core/console.h).  The
 * protocol (core/smtp.c) records each stage decided, with who decided it,
 * the reply and the time it took; the bridge adds the actions a hook ran
 * and the script's own lines (smtp_trace in hook.h).  It also keeps the
 * SMTP dialogue, passwords masked.  Steps are fixed records in an array
 * made once a session: recording costs no allocation.
 *
 * A message kept by the console takes the trace as it stands at its end:
 * the session's part (connect, HELO, STARTTLS, AUTH) and its transaction's.
 * trace_mark() says where a transaction begins (at MAIL), trace_rewind()
 * forgets what was recorded since (at its end: the message, RSET, HELO).
 */
#ifndef LUASMTPD_TRACE_H
#define LUASMTPD_TRACE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "console.h"

#define TRACE_MAX       40       /* entries a message's trace holds */
#define TRACE_DIALOGUE  8192     /* bytes of dialogue */

struct trace {
    char     steps[TRACE_MAX * STEP_MAX];   /* packed (struct console_step) */
    size_t   len, mark_len;      /* their bytes; where the transaction began */
    unsigned n, mark;            /* steps; where the transaction began */
    bool     in_tx;              /* marked, not yet rewound */
    unsigned long dropped, mark_dropped;   /* past TRACE_MAX */
    struct buf dialogue;
    size_t   dialogue_mark;
    bool     dialogue_cut;
    struct buf fields;           /* console_fields() of the message, when made at its arrival */
    bool     parsed;             /* the bridge parsed the message: subject is its */
    char     subject[200];
    double   t0;                 /* the session's start, monotonic */
    const char *stage;           /* the stage being decided, for actions */
    int      slot;               /* console_session_open()'s */
    struct console_session cs;   /* what /api/sessions shows */
    bool     cs_changed;         /* more of it than the state (HELO, user, TLS) since shown */
};

/* NULL when the console is off (or out of memory: nothing is recorded). */
struct trace *trace_new(const char *id, const char *peer, int port);
void trace_free(struct trace *t);

/* A step at `now` (clock_mono()) that took `took` seconds; text is
 * text_len bytes (a reply's first line, an action's target). */
void trace_add(struct trace *t, enum console_step_kind kind, const char *stage, const char *who, int code,
               const char *text, size_t text_len, const char *result, double now, double took);
/* A line the client sent (dir 'C') or the server (dir 'S'). */
void trace_line(struct trace *t, char dir, const char *line, size_t len);
void trace_mark(struct trace *t);
void trace_rewind(struct trace *t);
/* The bridge parsed the transaction's message, whose subject is this
 * (NULL: none): the message's event can tell it. */
void trace_parsed(struct trace *t, const char *subject);
/* The session's state as /api/sessions shows it, entered again when
 * `same` (its last activity is then shown to the second). */
void trace_state(struct trace *t, const char *state, bool same);

#endif
