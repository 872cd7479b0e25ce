/*
 * console: what the --http console shows (docs/console.md): the last
 * messages (--keep, --keep-bytes), each with what the client said and
 * the decision trace of its session; the sessions open now; and a stream
 * of events.
 *
 * It lives in memory the workers share, mapped before they fork (as the
 * metrics are), so whichever worker answers a request sees everything.
 * One process-shared mutex guards it.  Writers copy fixed records, or one
 * message into a ring of bytes whose oldest records make room for the
 * newest; readers copy out under the lock and render outside it.  Without
 * --http none of it exists and every call here returns at once.
 */
#ifndef LUASMTPD_CONSOLE_H
#define LUASMTPD_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "mime.h"

#define CONSOLE_EVENTS      512     /* the events a late reader may catch up on */
#define CONSOLE_EVENT_MAX   1024    /* one event, as JSON */
#define CONSOLE_SENDER_MAX  256     /* for ?sender=: the sender kept in the index */

/* Map it for n workers (1 without --workers), keeping `keep` messages in
 * at most keep_bytes, and `sessions` open sessions a worker: 0, or -1
 * (errno).  keep 0 keeps no message (sessions and events still show). */
int  console_share(long long keep, long long keep_bytes, long long sessions, int n);
/* In worker i (0 to n-1), or 0: its sessions of a worker before it are
 * gone, and so are its event readers. */
void console_use(int i);
bool console_on(void);
bool console_keeping(void);

/* --- events -------------------------------------------------------------- */

/* An event of `type` with fields to add (json_* on the buffer, each
 * preceded by a comma): NULL when no one reads events (then there is
 * nothing to do).  console_event_end() publishes it. */
struct buf *console_event_begin(const char *type, const char *session);
void console_event_end(void);
/* One reader more (+1) or less (-1) in this process. */
void console_listen(int delta);
/* Append the events after *seq as Server-Sent Events ("id:", "data:"),
 * moving *seq on; a reader more than CONSOLE_EVENTS behind is told how
 * many it missed.  Whether any was appended. */
bool console_events(uint64_t *seq, struct buf *out);
uint64_t console_event_seq(void);

/* --- open sessions -------------------------------------------------------- */

struct console_session {
    char   id[24], peer[64], helo[128], user[128], state[12], tls[16];
    int    port;
    long long started, last;        /* clock_wall_ms(): since, last activity */
    unsigned long messages;
};
/* A slot for a new session (-1: none free; it is then not listed). */
int  console_session_open(const struct console_session *cs);
/* Copy cs into slot i (the owner's, so no one else writes it): all of it
 * when `all`, else its state, last activity and messages only. */
void console_session_set(int i, const struct console_session *cs, bool all);
void console_session_close(int i);
/* The open sessions as a JSON array. */
int  console_sessions_json(struct buf *out, long long now);

/* --- kept messages ------------------------------------------------------ */

/* One step of a session's trace, packed as core/trace.h records it and
 * the console keeps it: this head, then its strings one after the other
 * (no NUL): the stage it happened in; who (hook as file:line, core option,
 * action kind); the text (the reply, the action's target, the note); an
 * action's result.  Each is cut to its STEP_*_MAX bytes. */
enum console_step_kind { STEP_STAGE, STEP_ACTION, STEP_NOTE };

struct console_step {
    long long     at_us, took_us;   /* since the session began; how long it took */
    int           code;             /* the reply of a stage; 0 */
    unsigned char kind, len[4];     /* stage, who, text, result */
};
#define STEP_STAGE_MAX   9
#define STEP_WHO_MAX     95
#define STEP_TEXT_MAX    159
#define STEP_RESULT_MAX  63
#define STEP_MAX  (sizeof(struct console_step) + STEP_STAGE_MAX + STEP_WHO_MAX + STEP_TEXT_MAX + STEP_RESULT_MAX)

/* A message as the protocol hands it over: strings may be NULL. */
struct console_message {
    long long   time;               /* clock_wall_ms() */
    int         code, port;
    bool        proxied;
    const char *session, *peer, *helo, *tls, *user, *sender, *queued_as, *reply;
    const char *const *rcpts;       /* nrcpts addresses */
    size_t      nrcpts, size;       /* size: as received (past --max-size: as counted) */
    const char *fields;             /* console_fields() when console_fields_at_arrival(), or NULL */
    size_t      fields_len;
    const char *steps;              /* nsteps packed steps, steps_len bytes */
    size_t      steps_len;
    unsigned    nsteps;
    unsigned long dropped;          /* steps past the trace's room */
    const char *dialogue;
    size_t      dialogue_len;
    const char *raw;                /* the message, raw_len bytes */
    size_t      raw_len;
};

/* Keep m: copied as it is (rendered as JSON only when asked for), so that
 * keeping costs a few copies.  Returns its id (0 when not kept).  A message
 * too large for --keep-bytes is kept without its text. */
uint64_t console_keep(const struct console_message *m);
/* The newest `limit` messages, newest first, whose sender contains
 * `sender` (NULL: all) and whose reply is of `verdict` ("accepted",
 * "refused", "4xx", "5xx"; NULL: all), as a JSON array. */
int  console_list(struct buf *out, unsigned limit, const char *sender, const char *verdict);
/* Message id: its JSON object, and its raw text (empty when not kept) when
 * raw is not NULL, appended: 1, 0 when it is not (or no longer) kept, -1. */
int  console_get(uint64_t id, struct buf *json, struct buf *raw);

/* Whether the list's fields of a message of `size` bytes are made when it
 * arrives (console_message.fields), or from its kept text when it is first
 * listed: what most messages cost is then nothing until someone looks. */
bool console_fields_at_arrival(size_t size);
/* What the list shows of a parsed message: from, to, subject, date, an
 * excerpt of the text and the attachments' names, types and sizes, as
 * fields ("from":...,...) to go inside an object. */
int  console_fields(struct buf *out, struct mime *m);
/* The attachments of m, as mail.attachments has them (uuencoded blocks
 * aside): the first after p (NULL: the first), or NULL. */
const struct mime_part *console_attachment(const struct mime *m, const struct mime_part *p);

#endif
