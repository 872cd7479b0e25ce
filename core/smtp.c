#include "smtp.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "auth.h"
#include "config.h"
#include "console.h"
#include "hook.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "session.h"
#include "smtp_parse.h"
#include "trace.h"

#define REPLY_LINE_MAX   512   /* RFC 5321 4.5.3.1.5, with CRLF */
#define REPLY_LINES_MAX  32
#define MSGID_MAX        (SESSION_ID_MAX + 21)    /* the session's, '.', its transaction's number */
#define KEEP_RCPTS       100   /* recipients the console lists of a message */

enum smtp_state {
    ST_GREETING,     /* waiting for the connect hook */
    ST_REFUSED,      /* greeting refused: only QUIT is served (RFC 5321 3.1) */
    ST_INIT,         /* needs HELO/EHLO */
    ST_READY,        /* may start a transaction */
    ST_MAIL,         /* sender given */
    ST_RCPT,         /* at least one recipient */
    ST_DATA,         /* reading the message */
    ST_AUTH,         /* AUTH: reading the client's next SASL response */
    ST_BDAT,         /* BDAT chunks taken, the LAST one not yet */
    ST_COUNT
};

enum auth_step { AUTH_NONE, AUTH_PLAIN, AUTH_LOGIN_USER, AUTH_LOGIN_PASSWORD };

/* One mail transaction: RSET and the end of a message clear it. */
struct smtp_tx {
    char    *sender;
    bool     smtputf8;              /* MAIL ... SMTPUTF8 */
    bool     binarymime;            /* MAIL ... BODY=BINARYMIME: BDAT only (RFC 3030 3) */
    enum smtp_dsn_ret dsn_ret;      /* MAIL ... RET= (RFC 3461) */
    char     envid[SMTP_ENVID_MAX + 1];   /* MAIL ... ENVID=, decoded; "" */
    struct rcpt {
        char    *addr;
        char    *orcpt;             /* RCPT ... ORCPT=, "type;address" decoded, or NULL */
        unsigned notify;            /* RCPT ... NOTIFY=: SMTP_NOTIFY_* bits, 0 when not given */
    } *rcpts;
    size_t   nrcpts, rcpts_cap;
    struct smtp_data data;          /* the DATA scanner */
    struct buf msg;                 /* the message, dot-unstuffed */
    char     msgid[MSGID_MAX];      /* set at DATA */
};

/* What the client said of itself: STARTTLS clears it (RFC 3207 4.2). */
struct smtp_client {
    char    *helo;
    bool     esmtp;
    char    *user;                  /* after a successful AUTH */
};

struct smtp {
    struct session      *s;
    const char          *id;        /* the session's */
    const struct config *cfg;
    const struct hooks  *hooks;
    enum smtp_state      state;     /* changed by enter_state() only */
    int                  pending;   /* the stage awaiting a verdict, or -1 */
    char                 arg[SMTP_PATH_MAX + 1];  /* that stage's argument (HELO
                                       name, address, AUTH user name) */
    struct smtp_client   client;
    struct smtp_tx       tx;
    enum auth_step       auth_step; /* in ST_AUTH: which response comes next */
    char                *login_user;    /* AUTH LOGIN: the name, until the password */
    unsigned             nerrors, nauth_failures;
    unsigned long        njunk;          /* see count_junk() */
    unsigned long        nmessages;      /* accepted with 250 */
    unsigned long        ntransactions;  /* DATA started: numbers message ids */
    bool                 draining;       /* server stopping: close after this message */
    bool                 closed;         /* the connection is gone */
    bool                 refusal_logged; /* the refusal being answered is on the log */
    int                  answering;      /* what replies answer now: a verb or STAGE_* */
    struct {                        /* the DSN parameters of the RCPT being decided */
        unsigned notify;
        char    *orcpt;             /* decoded, or NULL: handed to the recipient */
    } rcpt_dsn;
    /* BDAT (RFC 3030): the chunk being read, whatever the state, so that
     * its bytes are never taken for commands */
    struct {
        unsigned long long left;    /* bytes still to come */
        unsigned long long total;   /* the message's bytes so far, kept or not */
        bool   reading, keep, last;
        bool   waiting;             /* a first BDAT awaits on_data's verdict */
        int    code;                /* not kept: the answer once it is read */
        char   enh[8], *text;       /* text: a copy of its own, while a skipped chunk is read */
    } chunk;
    void                *hook_data;
    struct trace        *trace;     /* for the console (--http): NULL without it */
    double               stage_t0;  /* when the stage being decided was asked */
};

static const char *state_name(enum smtp_state st)
{
    static const char *const names[ST_COUNT] = {
        "greeting", "refused", "init", "ready", "mail", "rcpt", "data", "auth", "bdat",
    };
    return names[st];
}

/* The one place the state changes. */
static void enter_state(struct smtp *m, enum smtp_state st)
{
    if (st != m->state && log_enabled(LV_DEBUG))
        log_msg(LV_DEBUG, m->id, "state %s -> %s", state_name(m->state), state_name(st));
    trace_state(m->trace, state_name(st), st == m->state);
    m->state = st;
}

/* --- replies ------------------------------------------------------------- */

static const char *standard_text(int code)
{
    switch (code) {
    case 211: return "System status";
    case 214: return "Help message";
    case 220: return "Service ready";
    case 221: return "Closing transmission channel";
    case 235: return "Authentication successful";
    case 250: return "Ok";
    case 251: return "User not local; will forward";
    case 252: return "Cannot verify the user, but will accept the message";
    case 354: return "Start mail input; end with <CRLF>.<CRLF>";
    case 421: return "Service not available, closing transmission channel";
    case 450: return "Mailbox unavailable";
    case 451: return "Local error in processing";
    case 452: return "Insufficient system storage";
    case 454: return "Temporary failure";
    case 455: return "Server unable to accommodate parameters";
    case 530: return "Authentication required";
    case 534: return "Authentication mechanism is too weak";
    case 535: return "Authentication credentials invalid";
    case 538: return "Encryption required for requested authentication mechanism";
    case 500: return "Syntax error, command unrecognized";
    case 501: return "Syntax error in parameters or arguments";
    case 502: return "Command not implemented";
    case 503: return "Bad sequence of commands";
    case 504: return "Command parameter not implemented";
    case 521: return "Does not accept mail";
    case 550: return "Mailbox unavailable";
    case 551: return "User not local";
    case 552: return "Exceeded storage allocation";
    case 553: return "Mailbox name not allowed";
    case 554: return "Transaction failed";
    case 555: return "Parameters not recognized or not implemented";
    }
    return code >= 500 ? "Permanent failure" : code >= 400 ? "Temporary failure" : "Ok";
}

/* Does text start with an RFC 3463 code ("5.7.1 ")? */
static bool has_enhanced(const char *t)
{
    if ((t[0] != '2' && t[0] != '4' && t[0] != '5') || t[1] != '.')
        return false;
    size_t i = 2, d = 0;
    while (t[i] >= '0' && t[i] <= '9' && d < 3) i++, d++;
    if (d == 0 || t[i] != '.')
        return false;
    i++, d = 0;
    while (t[i] >= '0' && t[i] <= '9' && d < 3) i++, d++;
    return d > 0 && (t[i] == ' ' || t[i] == '\0' || t[i] == '\n');
}

/*
 * Queue a reply of one or more lines ('\n' separates them in text).  Each
 * line gets the code and, when enh is not NULL, the enhanced code, unless
 * the line brings its own.  Control and non-ASCII bytes become '?'.
 */
static void reply_text(struct smtp *m, int code, const char *enh, const char *text)
{
    char line[REPLY_LINE_MAX];
    const char *p = text;

    if (code >= 200 && code < 600) {
        metrics_add(&metrics->replies[m->answering][code / 100 - 2], 1);
        if (m->answering == STAGE_MESSAGE)
            metrics_add(code < 400 ? &metrics->accepted : &metrics->refused_messages, 1);
    }
    for (int nl = 0; nl < REPLY_LINES_MAX; nl++) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        bool last = eol == NULL || eol[1] == '\0' || nl == REPLY_LINES_MAX - 1;
        size_t n = 0;
        line[n++] = (char)('0' + code / 100 % 10);
        line[n++] = (char)('0' + code / 10 % 10);
        line[n++] = (char)('0' + code % 10);
        line[n++] = last ? ' ' : '-';
        if (enh && *enh && !has_enhanced(p)) {
            size_t el = strnlen(enh, VERDICT_ENH_MAX - 1);
            memcpy(line + n, enh, el);
            n += el;
            line[n++] = ' ';
        }
        size_t room = sizeof(line) - n - 2;
        if (len > room)
            len = room;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)p[i];
            line[n++] = (c < 32 || c >= 127) ? '?' : (char)c;
        }
        /* a refusal is on the log already if log_refusal() said it */
        enum log_level lv = code >= 400 && !m->refusal_logged ? LV_INFO : LV_DEBUG;
        if (log_enabled(lv))
            log_msg(lv, m->id, "> %.*s", (int)n, line);
        trace_line(m->trace, 'S', line, n);
        line[n++] = '\r';
        line[n++] = '\n';
        session_write(m->s, line, n);
        if (last)
            break;
        p = eol + 1;
    }
}

static void reply(struct smtp *m, int code, const char *enh, const char *fmt, ...)
    LOG_PRINTF(4, 5);

static void reply(struct smtp *m, int code, const char *enh, const char *fmt, ...)
{
    char text[REPLY_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    reply_text(m, code, enh, text);
}

static const char *hostname(const struct smtp *m)
{
    return m->cfg->hostname;
}

/* Reply, then close once it has been sent. */
static void reply_close(struct smtp *m, const char *enh, const char *why)
{
    reply(m, 421, enh, "%s %s, closing connection", hostname(m), why);
    session_close_after_flush(m->s);
}

/* A limit on a client's errors was hit: close, and hold it against the
 * client (--max-bad-clients). */
static void close_for_errors(struct smtp *m, const char *text)
{
    session_mark_bad(m->s);
    reply_close(m, "4.7.0", text);
}

/* NOOP, RSET, VRFY, EXPN or HELP outside a transaction: past
 * --max-junk-commands each counts as an error (Postfix's
 * smtpd_junk_command_limit), so one NOOP per --timeout cannot hold a
 * connection slot for good.  An accepted message starts the count over. */
static void count_junk(struct smtp *m)
{
    long long max = m->cfg->max_junk_commands;
    if (max == 0 || ++m->njunk <= (unsigned long)max)
        return;
    if (++m->nerrors >= (unsigned)m->cfg->max_errors) {
        log_msg(LV_INFO, m->id, "%lu commands that move no mail (--max-junk-commands): closing",
                m->njunk);
        close_for_errors(m, "Too many commands that move no mail");
    }
}

/* A client error: count it against --max-errors. */
static void reply_error(struct smtp *m, int code, const char *enh, const char *text)
{
    reply_text(m, code, enh, text);
    if (++m->nerrors >= (unsigned)m->cfg->max_errors)
        close_for_errors(m, "Too many errors");
}

/* --- the transaction ------------------------------------------------------- */

/* The recipients' array is kept for the next transaction: a session of
 * many messages allocates it once. */
static void tx_clear(struct smtp_tx *tx, size_t max_size)
{
    struct rcpt *rcpts = tx->rcpts;
    size_t cap = tx->rcpts_cap;
    free(tx->sender);
    for (size_t i = 0; i < tx->nrcpts; i++) {
        free(rcpts[i].addr);
        free(rcpts[i].orcpt);
    }
    buf_free(&tx->msg);
    memset(tx, 0, sizeof(*tx));
    tx->rcpts = rcpts;
    tx->rcpts_cap = cap;
    buf_init_counted(&tx->msg, max_size, BUF_BUDGETED);
}

static void reset_transaction(struct smtp *m)
{
    trace_rewind(m->trace);
    tx_clear(&m->tx, (size_t)m->cfg->max_size);
    if (m->state >= ST_READY)
        enter_state(m, ST_READY);
}

static void client_clear(struct smtp_client *c)
{
    free(c->helo);
    free(c->user);
    memset(c, 0, sizeof(*c));
}

/* The recipient accepted, with the DSN parameters of its RCPT. */
static int add_recipient(struct smtp *m, const char *addr)
{
    if (m->tx.nrcpts == m->tx.rcpts_cap) {
        size_t cap = m->tx.rcpts_cap ? m->tx.rcpts_cap * 2 : 4;
        struct rcpt *r = realloc(m->tx.rcpts, cap * sizeof(*r));
        if (r == NULL)
            return -1;
        m->tx.rcpts = r;
        m->tx.rcpts_cap = cap;
    }
    struct rcpt r = { .addr = strdup(addr), .notify = m->rcpt_dsn.notify, .orcpt = m->rcpt_dsn.orcpt };
    if (r.addr == NULL)
        return -1;
    m->rcpt_dsn.orcpt = NULL;
    m->tx.rcpts[m->tx.nrcpts++] = r;
    return 0;
}

/* --- verdicts -------------------------------------------------------------- */

/* A resolved reply: what the client is told. */
struct reply {
    int         code;
    const char *enh;     /* NULL: no enhanced code */
    const char *text;
    const char *origin;  /* who decided, for the log ("" if not told) */
};

typedef void finish_fn(struct smtp *m, struct reply *r);
static finish_fn finish_connect, finish_helo, finish_mail, finish_rcpt, finish_data,
                 finish_message, finish_auth, finish_directory, finish_plain;

struct stage_def {
    int accept_code;  const char *accept_enh;  const char *accept_text;
    int reject_code;  const char *reject_enh;  const char *reject_text;
    finish_fn *finish;   /* the stage's work once its verdict is known */
};

/* The normal reply, the default rejection and the finish work of each
 * stage.  An enh of NULL means the stage's replies carry no enhanced code
 * (RFC 2034: not on the greeting; 354 is not a completion reply). */
static const struct stage_def stages[HOOK_STAGE_COUNT] = {
    [HOOK_CONNECT] = { 220, NULL,    "ESMTP " CONFIG_SOFTWARE, 554, NULL,    "Service unavailable",
                       finish_connect },
    [HOOK_HELO]    = { 250, NULL,    "",                     550, "5.7.1", "Helo command rejected",
                       finish_helo },
    [HOOK_MAIL]    = { 250, "2.1.0", "Ok",                   550, "5.7.1", "Sender rejected",
                       finish_mail },
    [HOOK_RCPT]    = { 250, "2.1.5", "Ok",                   550, "5.1.1", "Recipient rejected",
                       finish_rcpt },
    [HOOK_DATA]    = { 354, NULL,    "End data with <CR><LF>.<CR><LF>", 554, "5.7.1", "Data rejected",
                       finish_data },
    [HOOK_MESSAGE] = { 250, "2.0.0", "Ok: queued as",        554, "5.6.0", "Message rejected",
                       finish_message },
    [HOOK_RSET]    = { 250, "2.0.0", "Ok",                   0,   NULL,    NULL, finish_plain },
    [HOOK_AUTH]    = { 235, "2.7.0", "Authentication successful", 535, "5.7.8",
                       "Authentication credentials invalid", finish_auth },
    /* accepted, VRFY and EXPN answer with the argument itself */
    [HOOK_VRFY]    = { 250, "2.1.5", "",                     550, "5.1.1", "User unknown",
                       finish_directory },
    [HOOK_EXPN]    = { 250, "2.1.5", "",                     550, "5.1.1", "List unknown",
                       finish_directory },
};

const char *hook_stage_name(enum hook_stage stage)
{
    static const char *const names[HOOK_STAGE_COUNT] = {
        "connect", "helo", "mail", "rcpt", "data", "message", "rset", "auth", "vrfy", "expn",
    };
    return (unsigned)stage < HOOK_STAGE_COUNT ? names[stage] : "?";
}

static bool code_fits(enum hook_stage st, int code)
{
    const struct stage_def *d = &stages[st];
    if (code < 200 || code > 599)
        return false;
    if (code >= 400)
        return true;
    if (code == d->accept_code)
        return true;
    return (st == HOOK_RCPT || st == HOOK_VRFY || st == HOOK_EXPN) && (code == 251 || code == 252);
}

/* The reply a verdict gives; an unusable verdict becomes 451 4.3.0 and is
 * logged. */
static void resolve(struct smtp *m, enum hook_stage st, const struct verdict *v, struct reply *r)
{
    const struct stage_def *d = &stages[st];
    int code = v->code;

    if (code == VERDICT_ACCEPT) {
        code = d->accept_code;
        r->enh = d->accept_enh;
        r->text = d->accept_text;
    } else if (code == VERDICT_REJECT && d->reject_code) {
        code = d->reject_code;
        r->enh = d->reject_enh;
        r->text = d->reject_text;
    } else if (code_fits(st, code)) {
        if (code == d->accept_code) {
            r->enh = d->accept_enh;
            r->text = d->accept_text;
        } else if (code == d->reject_code) {
            r->enh = d->reject_enh;
            r->text = d->reject_text;
        } else {
            static const char *const cls[] = { "2.0.0", "4.0.0", "5.0.0" };
            r->enh = (st == HOOK_CONNECT || (st == HOOK_HELO && code < 300)) ? NULL
                     : cls[code >= 500 ? 2 : code >= 400 ? 1 : 0];
            r->text = standard_text(code);
        }
    } else {
        log_msg(LV_WARN, m->id, "hook %s: invalid reply code %d; answering 451",
                hook_stage_name(st), v->code);
        r->code = 451;
        r->enh = st == HOOK_CONNECT ? NULL : "4.3.0";
        r->text = "Temporary server error, try again later";
        return;
    }
    r->code = code;
    if (v->text[0] != '\0')
        r->text = v->text;
    if (v->enhanced[0] != '\0' && r->enh != NULL)
        r->enh = v->enhanced;
}

/* STARTTLS is offered on a plaintext session of a server with a certificate. */
static bool starttls_offered(const struct smtp *m)
{
    return session_tls_possible(m->s) && session_tls_state(m->s) == STLS_NONE;
}

/* AUTH is offered when the script decides it, over TLS unless allowed
 * without (RFC 4954 section 4 asks for a protected channel for PLAIN). */
static bool auth_offered(const struct smtp *m)
{
    const struct hooks *h = m->hooks;
    return (session_tls_state(m->s) == STLS_ON || m->cfg->allow_insecure_auth) &&
           h->defines(h->ctx, HOOK_AUTH);
}

static void send_ehlo(struct smtp *m, const char *greet)
{
    const struct config *cfg = m->cfg;
    bool auth = auth_offered(m);
    char text[REPLY_LINE_MAX * 2];
    /* the first line is cut at REPLY_LINE_MAX anyway: the greeting text
     * never pushes the keywords out */
    snprintf(text, sizeof(text),
             "%s%s%.256s%s\nSIZE %lld\n8BITMIME\nCHUNKING\nBINARYMIME\nDSN\nENHANCEDSTATUSCODES\nSMTPUTF8%s%s%s%s\nHELP",
             hostname(m), *greet ? " " : "", greet, cfg->pipelining ? "\nPIPELINING" : "",
             cfg->max_size, starttls_offered(m) ? "\nSTARTTLS" : "",
             auth ? "\nAUTH" : "", auth && (cfg->auth_methods & CONFIG_AUTH_PLAIN) ? " PLAIN" : "",
             auth && (cfg->auth_methods & CONFIG_AUTH_LOGIN) ? " LOGIN" : "");
    reply_text(m, 250, NULL, text);
}

/*
 * Failed AUTH per client address across its connections, for
 * --max-auth-rate: a table of the addresses seen failing in the last hour
 * (per process; the oldest entry makes room).  A guesser that opens
 * connection after connection gets its hour's attempts and no more.
 */
#define AUTH_SEEN_MAX    1024
#define AUTH_RATE_WINDOW 3600.0

static struct auth_seen {
    char     host[NET_ADDRSTR_MAX];
    unsigned failures;
    double   since;                 /* the window's start; 0: a free slot */
} auth_seen[AUTH_SEEN_MAX];

static double mono_now(void)
{
    return clock_mono() + 1;          /* never 0: 0 marks a free slot */
}

/* The client's entry (made when `make`), its window current; or NULL. */
static struct auth_seen *auth_seen_of(const struct smtp *m, bool make)
{
    const char *host = session_peer_host(m->s, NULL);
    double now = mono_now();
    struct auth_seen *oldest = &auth_seen[0];
    for (size_t i = 0; i < AUTH_SEEN_MAX; i++) {
        struct auth_seen *a = &auth_seen[i];
        if (a->since && strcmp(a->host, host) == 0) {
            if (now - a->since > AUTH_RATE_WINDOW)
                *a = (struct auth_seen){ .since = now };   /* a new hour */
            snprintf(a->host, sizeof(a->host), "%s", host);
            return a;
        }
        if (a->since < oldest->since)
            oldest = a;
    }
    if (!make)
        return NULL;
    *oldest = (struct auth_seen){ .since = now };
    snprintf(oldest->host, sizeof(oldest->host), "%s", host);
    return oldest;
}

static bool auth_rate_spent(const struct smtp *m)
{
    long long max = m->cfg->max_auth_rate;
    const struct auth_seen *a = max ? auth_seen_of(m, false) : NULL;
    return a && a->failures >= (unsigned long long)max;
}

/* An AUTH exchange failed: counted against --max-auth-failures and
 * --max-auth-rate. */
static void auth_failed(struct smtp *m, int code, const char *enh, const char *text)
{
    if (m->cfg->max_auth_rate)
        auth_seen_of(m, true)->failures++;
    enter_state(m, ST_READY);
    m->auth_step = AUTH_NONE;
    free(m->login_user);
    m->login_user = NULL;
    reply_text(m, code, enh, text);
    if (++m->nauth_failures >= (unsigned)m->cfg->max_auth_failures) {
        log_msg(LV_WARN, m->id, "%u failed AUTH attempts: closing", m->nauth_failures);
        close_for_errors(m, "Too many authentication failures");
    }
}

static void out_of_memory(struct reply *r, int code, const char *enh)
{
    r->code = code;
    r->enh = enh;
    r->text = "Out of memory, try again later";
}

static void finish_connect(struct smtp *m, struct reply *r)
{
    enter_state(m, r->code < 400 ? ST_INIT : ST_REFUSED);
    const char *text = r->text == stages[HOOK_CONNECT].accept_text ? m->cfg->banner : r->text;
    if (r->code == 220 || r->code == 554)
        reply(m, r->code, NULL, "%s %s", hostname(m), text);
    else
        reply_text(m, r->code, NULL, text);
}

static void finish_helo(struct smtp *m, struct reply *r)
{
    if (r->code >= 400) {
        free(m->client.helo);
        m->client.helo = NULL;
        enter_state(m, ST_INIT);
        reply_text(m, r->code, r->enh, r->text);
        return;
    }
    char *copy = strdup(m->arg);
    if (copy == NULL) {
        reply(m, 451, "4.3.0", "Out of memory, try again later");
        return;
    }
    free(m->client.helo);
    m->client.helo = copy;
    if (m->trace) {
        snprintf(m->trace->cs.helo, sizeof(m->trace->cs.helo), "%s", copy);
        m->trace->cs_changed = true;
    }
    enter_state(m, ST_READY);
    if (m->client.esmtp)
        send_ehlo(m, r->text);
    else
        reply(m, 250, NULL, "%s%s%s", hostname(m), *r->text ? " " : "", r->text);
}

static void finish_mail(struct smtp *m, struct reply *r)
{
    if (r->code < 400 && (m->tx.sender = strdup(m->arg)) == NULL)
        out_of_memory(r, 451, "4.3.0");
    if (r->code < 400)
        enter_state(m, ST_MAIL);
    else
        m->tx.smtputf8 = false;
    reply_text(m, r->code, r->enh, r->text);
}

static void finish_rcpt(struct smtp *m, struct reply *r)
{
    if (r->code < 400 && add_recipient(m, m->arg) < 0)
        out_of_memory(r, 451, "4.3.0");
    if (r->code < 400)
        enter_state(m, ST_RCPT);
    reply_text(m, r->code, r->enh, r->text);
}

/* Read the chunk of the BDAT just answered; keep: into the message, else
 * skipped and answered code enh text once read. */
static void read_chunk(struct smtp *m, bool keep, int code, const char *enh, const char *text)
{
    m->chunk.reading = true;
    m->chunk.keep = keep;
    m->chunk.code = code;
    snprintf(m->chunk.enh, sizeof(m->chunk.enh), "%s", enh ? enh : "");
    free(m->chunk.text);   /* its own copy: only a chunk skipped needs one */
    m->chunk.text = keep ? NULL : strdup(text && *text ? text : standard_text(code));
}

static void finish_data(struct smtp *m, struct reply *r)
{
    if (m->chunk.waiting) {       /* the first BDAT: no 354, the chunk follows */
        m->chunk.waiting = false;
        if (r->code < 400)
            enter_state(m, ST_BDAT);
        read_chunk(m, r->code < 400, r->code, r->enh, r->text);
        return;
    }
    if (r->code < 400) {
        enter_state(m, ST_DATA);
        smtp_data_init(&m->tx.data);
    }
    reply_text(m, r->code, r->enh, r->text);
}

/* The first line of a reply's text as the client gets it ("Ok: queued as"
 * with the message's id), for the console: into out[size], its length. */
static size_t reply_said(const struct smtp *m, const char *text, char *out, size_t size)
{
    size_t n = strcspn(text, "\n");
    if (n >= size)
        n = size - 1;
    memcpy(out, text, n);
    if (text == stages[HOOK_MESSAGE].accept_text) {
        size_t id = strlen(m->tx.msgid);
        if (n + 1 + id < size) {
            out[n++] = ' ';
            memcpy(out + n, m->tx.msgid, id);
            n += id;
        }
    }
    out[n] = '\0';
    return n;
}

/* The console keeps the message just answered with code and `said` (the
 * reply's first line as the client got it), which `who` decided ("": no
 * hook, the server), and tells its readers. */
static void keep_message(struct smtp *m, int code, const char *said, const char *who)
{
    if (m->trace == NULL)
        return;
    uint64_t id = 0;
    size_t size = buf_len(&m->tx.msg);
    struct trace *t = m->trace;
    struct buf *fields = &t->fields;
    /* the bridge's parse when it made one, else one here */
    struct mime *mm = NULL;
    if (console_keeping() && console_fields_at_arrival(size) && buf_len(fields) == 0 &&
        mime_parse(buf_head(&m->tx.msg), size, NULL, &mm) == 0 && console_fields(fields, mm) < 0)
        buf_clear(fields);
    mime_free(&mm);
    int port;
    const char *peer = session_peer_host(m->s, &port);
    if (console_keeping()) {
        const char *rcpts[KEEP_RCPTS];
        size_t n = m->tx.nrcpts < KEEP_RCPTS ? m->tx.nrcpts : KEEP_RCPTS;
        for (size_t i = 0; i < n; i++)
            rcpts[i] = m->tx.rcpts[i].addr;
        const struct console_message cm = {
            .time = clock_wall_ms(false), .code = code, .port = port, .proxied = session_proxy(m->s) != NULL,
            .session = m->id, .peer = peer, .helo = m->client.helo,
            .tls = session_tls_version(m->s), .user = m->client.user, .sender = m->tx.sender,
            .queued_as = m->tx.msgid, .reply = said,
            .rcpts = rcpts, .nrcpts = n, .size = m->tx.data.overflow ? m->tx.data.size : size,
            .fields = buf_head(fields), .fields_len = buf_len(fields),
            .steps = t->steps, .steps_len = t->len, .nsteps = t->n, .dropped = t->dropped,
            .dialogue = buf_head(&t->dialogue), .dialogue_len = buf_len(&t->dialogue),
            .raw = buf_head(&m->tx.msg), .raw_len = size,
        };
        id = console_keep(&cm);
    }
    /* what the page's list shows of it, so that it need not ask; and who
     * decided (the message stage has no event of its own) */
    struct buf *e = console_event_begin("message", m->id);
    if (e) {
        json_field_int(e, "id", (long long)id);
        json_field_int(e, "code", code);
        json_field_int(e, "size", (long long)size);
        json_field(e, "peer", peer);
        json_field(e, "sender", m->tx.sender);
        JSON_LIT(e, ",\"recipients\":[");
        for (size_t i = 0; i < m->tx.nrcpts && i < 3; i++)
            (void)((i ? JSON_LIT(e, ",") : 0) | json_cstr(e, m->tx.rcpts[i].addr));
        JSON_LIT(e, "]");
        json_field(e, "who", *who ? who : NULL);
        if (t->parsed)
            json_field(e, "subject", t->subject[0] ? t->subject : NULL);
        console_event_end();
    }
}

static void finish_message(struct smtp *m, struct reply *r)
{
    char said[REPLY_LINE_MAX];
    reply_said(m, r->text, said, sizeof(said));
    if (r->code < 400) {
        m->nmessages++;
        m->njunk = 0;
        if (m->trace)
            m->trace->cs.messages = m->nmessages;
        metrics_add(&metrics->bytes, buf_len(&m->tx.msg));
        /* Addresses are validated: no control characters to escape. */
        log_msg(LV_INFO, m->id, "message %s from=<%s> to=<%s>%s size=%zu: %d", m->tx.msgid,
                m->tx.sender, m->tx.rcpts[0].addr, m->tx.nrcpts > 1 ? ",..." : "",
                buf_len(&m->tx.msg), r->code);
        /* the default text with the id, and no printf: every message */
        reply_text(m, r->code, r->enh, r->text == stages[HOOK_MESSAGE].accept_text ? said : r->text);
    } else {
        log_msg(LV_INFO, m->id, "message %s from=<%s> to=<%s>%s size=%zu: %d, refused by %s", m->tx.msgid,
                m->tx.sender, m->tx.rcpts[0].addr, m->tx.nrcpts > 1 ? ",..." : "", buf_len(&m->tx.msg), r->code,
                *r->origin ? r->origin : "the server");
        m->refusal_logged = true;     /* that line says it: the reply goes to debug */
        reply_text(m, r->code, r->enh, r->text);
    }
    keep_message(m, r->code, said, r->origin);
    reset_transaction(m);
    if (m->draining && r->code != 421)
        reply_close(m, "4.3.2", "Service shutting down");
}

static void finish_auth(struct smtp *m, struct reply *r)
{
    if (r->code < 400 && (m->client.user = strdup(m->arg)) == NULL)
        out_of_memory(r, 454, "4.7.0");
    if (log_enabled(LV_INFO)) {
        char esc[AUTH_USER_MAX * 4 + 1];
        log_msg(LV_INFO, m->id, "AUTH user=<%s>: %d",
                log_escape(esc, sizeof(esc), m->arg, strlen(m->arg)), r->code);
    }
    if (r->code < 400) {
        if (m->trace) {
            snprintf(m->trace->cs.user, sizeof(m->trace->cs.user), "%s", m->client.user);
            m->trace->cs_changed = true;
        }
        enter_state(m, ST_READY);
        reply_text(m, r->code, r->enh, r->text);
    } else {
        auth_failed(m, r->code, r->enh, r->text);
    }
}

static void finish_directory(struct smtp *m, struct reply *r)
{
    if (*r->text == '\0')   /* accepted with no text of its own */
        r->text = m->arg;
    reply_text(m, r->code, r->enh, r->text);
}

static void finish_plain(struct smtp *m, struct reply *r)
{
    reply_text(m, r->code, r->enh, r->text);
}

/* The command a stage answers, for the log line of a refusal. */
static const char *const refused_what[] = {
    [HOOK_CONNECT] = "connection", [HOOK_HELO] = "HELO", [HOOK_MAIL] = "MAIL FROM",
    [HOOK_RCPT] = "RCPT TO",       [HOOK_DATA] = "DATA", [HOOK_AUTH] = "AUTH",
    [HOOK_VRFY] = "VRFY",          [HOOK_EXPN] = "EXPN",
};

/* One line that says what was refused and who decided:
 *   RCPT TO <x@y> refused by on_rcpt (rules.lua:12): 550 5.1.1 not ours
 *   RCPT TO <x@y> refused by --domain: 550 5.7.1 <x@y>: Relaying denied ...
 * arg (NULL: none) is shown in angle brackets when `bracket`; the reply
 * that follows goes to the debug level, so that it is said once. */
static void log_refused(struct smtp *m, const char *what, const char *arg, bool bracket, const char *by,
                        int code, const char *enh, const char *text)
{
    m->refusal_logged = true;
    if (!log_enabled(LV_INFO))
        return;
    char shown[SMTP_PATH_MAX * 4 + 1], said[REPLY_LINE_MAX * 4 + 1];
    log_msg(LV_INFO, m->id, "%s%s%s%s%s refused by %s: %d%s%s %s", what, arg ? " " : "", arg && bracket ? "<" : "",
            arg ? log_escape(shown, sizeof(shown), arg, strlen(arg)) : "", arg && bracket ? ">" : "", by, code,
            enh && *enh ? " " : "", enh ? enh : "", log_escape(said, sizeof(said), text, strcspn(text, "\n")));
}

/* A hook's refusal (the message's own line says it for a refused message). */
static void log_refusal(struct smtp *m, enum hook_stage st, const struct verdict *v, const struct reply *r)
{
    if (st >= sizeof(refused_what) / sizeof(refused_what[0]) || !refused_what[st])
        return;
    bool has_arg = st != HOOK_CONNECT && st != HOOK_DATA;
    char arg[sizeof(m->arg) + 8];
    snprintf(arg, sizeof(arg), "%s%s", st == HOOK_AUTH ? "user=" : "", m->arg);
    /* no origin: the hook accepted, or gave a code that does not fit (resolve) */
    char by[64] = "the server";
    if (v->code != VERDICT_ACCEPT)
        snprintf(by, sizeof(by), "the server (the hook's code %d does not fit)", v->code);
    log_refused(m, refused_what[st], has_arg ? (st == HOOK_AUTH ? arg : m->arg) : NULL,
                st == HOOK_MAIL || st == HOOK_RCPT, v->origin[0] ? v->origin : by, r->code, r->enh, r->text);
}

/* The console's record of a stage: the trace; and an event when someone
 * decided it (a hook, or a core option that refused), except for the
 * message's stage, whose event is the message's (keep_message). */
static void trace_stage(struct smtp *m, const char *stage, const char *who, int code, const char *text)
{
    if (m->trace == NULL)
        return;
    double now = clock_mono(), took = now - m->stage_t0;
    char first[REPLY_LINE_MAX];
    size_t n = reply_said(m, text, first, sizeof(first));
    trace_add(m->trace, STEP_STAGE, stage, who, code, first, n, NULL, now, took);
    struct buf *e = who && *who && strcmp(stage, "message") ? console_event_begin("stage", m->id) : NULL;
    if (e) {
        json_field(e, "stage", stage);
        json_field_int(e, "code", code);
        json_field_int(e, "took_us", (long long)(took * 1e6));
        json_field(e, "who", who);
        console_event_end();
    }
}

/* The core refuses by one of its options: said as a hook's refusal is
 * (as an error of the client's, counted for --max-errors, when `error`). */
static void refuse(struct smtp *m, const char *what, const char *addr, const char *option, int code,
                   const char *enh, const char *text, bool error)
{
    log_refused(m, what, addr, true, option, code, enh, text);
    if (m->trace) {
        char stage[10];   /* "RCPT TO" is the stage rcpt */
        size_t k = 0;
        for (; what[k] && what[k] != ' ' && k + 1 < sizeof(stage); k++)
            stage[k] = (char)tolower((unsigned char)what[k]);
        stage[k] = '\0';
        m->stage_t0 = clock_mono();
        trace_stage(m, stage, option, code, text);
    }
    if (error)
        reply_error(m, code, enh, text);
    else
        reply_text(m, code, enh, text);
    m->refusal_logged = false;
}

static void finish_stage(struct smtp *m, enum hook_stage st, const struct verdict *v)
{
    struct reply r;
    resolve(m, st, v, &r);
    if (r.code >= 400)
        log_refusal(m, st, v, &r);
    trace_stage(m, hook_stage_name(st), v->origin, r.code, r.text);
    r.origin = v->origin;
    stages[st].finish(m, &r);
    m->refusal_logged = false;
    if (r.code == 421 || v->disconnect)
        session_close_after_flush(m->s);
}

/* Ask the hooks; arg (HELO name, address or user name) waits in m->arg
 * for the stage's finish work. */
static void call_hook(struct smtp *m, enum hook_stage st, const struct hook_args *a,
                      const char *arg)
{
    struct verdict v;
    const struct hooks *h = m->hooks;

    v.code = VERDICT_ACCEPT;
    v.enhanced[0] = v.text[0] = v.origin[0] = '\0';
    v.disconnect = false;
    if (m->trace) {
        m->stage_t0 = clock_mono();
        m->trace->stage = hook_stage_name(st);
    }
    if (arg) {
        /* Parsed names and addresses fit: SMTP_PATH_MAX bounds both. */
        size_t n = strnlen(arg, sizeof(m->arg) - 1);
        memcpy(m->arg, arg, n);
        m->arg[n] = '\0';
    }
    /* A proxy's own connection (a health check) carries no client: the
     * script is not asked about it, and it cannot send mail (cmd_mail). */
    const struct session_proxy *px = session_proxy(m->s);
    if (px && px->local) {
        finish_stage(m, st, &v);
        return;
    }
    if (h->call(h->ctx, m, st, a, &v) == HOOK_PENDING) {
        m->pending = (int)st;
        session_pause(m->s);
        return;
    }
    finish_stage(m, st, &v);
}

void smtp_verdict(struct smtp *m, const struct verdict *v)
{
    if (m->closed || m->pending < 0)
        return;
    enum hook_stage st = (enum hook_stage)m->pending;
    m->pending = -1;
    finish_stage(m, st, v);
    session_resume(m->s);
}

/* --- commands -------------------------------------------------------------- */

static void cmd_helo(struct smtp *m, const struct smtp_cmd *c)
{
    bool esmtp = c->verb == SMTP_EHLO;
    size_t n = 0;
    while (n < c->arglen && c->arg[n] != ' ')
        n++;
    bool ok = n > 0 && n <= SMTP_DOMAIN_MAX && smtp_utf8_valid(c->arg, n);
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)c->arg[i] >= 32 && c->arg[i] != 127;
    if (!ok) {
        reply_error(m, 501, "5.5.4", esmtp ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
        return;
    }
    char name[SMTP_DOMAIN_MAX + 1];
    memcpy(name, c->arg, n);
    name[n] = '\0';
    /* RFC 5321 4.1.4: HELO/EHLO in a transaction resets it. */
    reset_transaction(m);
    m->client.esmtp = esmtp;
    struct hook_args a = { .name = name, .esmtp = esmtp };
    call_hook(m, HOOK_HELO, &a, name);
}

static void path_error(struct smtp *m, enum smtp_path_status st, bool mail)
{
    switch (st) {
    case SMTP_PATH_BAD_PREFIX:
        reply_error(m, 501, "5.5.4", mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>");
        break;
    case SMTP_PATH_TOO_LONG:
        reply_error(m, 501, mail ? "5.1.7" : "5.1.3", "Address too long");
        break;
    case SMTP_PATH_BAD_PARAMS:
        reply_error(m, 501, "5.5.4", "Bad parameter syntax");
        break;
    default:
        reply_error(m, 501, mail ? "5.1.7" : "5.1.3",
                    mail ? "Bad sender address syntax" : "Bad recipient address syntax");
        break;
    }
}

static void reply_unsupported(struct smtp *m, const struct smtp_param *p)
{
    char text[REPLY_LINE_MAX];
    snprintf(text, sizeof(text), "Unsupported parameter %.*s", (int)p->keylen, p->key);
    reply_error(m, 555, "5.5.4", text);
}

/* RCPT parameters: NOTIFY and ORCPT (RFC 3461 4.1, 4.2) into m->rcpt_dsn.
 * 0, or -1 after replying. */
static int rcpt_params(struct smtp *m, const struct smtp_params *ps)
{
    m->rcpt_dsn.notify = 0;
    free(m->rcpt_dsn.orcpt);
    m->rcpt_dsn.orcpt = NULL;
    for (size_t i = 0; i < ps->n; i++) {
        const struct smtp_param *p = &ps->p[i];
        if (smtp_ieq(p->key, p->keylen, "NOTIFY") && !m->rcpt_dsn.notify) {
            if (!smtp_parse_notify(p->value, p->value ? p->valuelen : 0, &m->rcpt_dsn.notify)) {
                reply_error(m, 501, "5.5.4", "Bad NOTIFY parameter (NEVER, or SUCCESS, FAILURE, DELAY)");
                return -1;
            }
        } else if (smtp_ieq(p->key, p->keylen, "ORCPT") && !m->rcpt_dsn.orcpt) {
            /* addr-type ";" xtext; the type an atom */
            const char *semi = p->value ? memchr(p->value, ';', p->valuelen) : NULL;
            size_t tn = semi ? (size_t)(semi - p->value) : 0;
            bool ok = semi && tn > 0 && p->valuelen <= SMTP_ORCPT_MAX;
            for (size_t k = 0; ok && k < tn; k++)
                ok = p->value[k] > ' ' && p->value[k] < 127 && p->value[k] != ';';
            char *o = ok ? malloc(SMTP_ORCPT_MAX + 1) : NULL;
            if (ok && o == NULL) {
                reply_error(m, 451, "4.3.0", "Out of memory, try again later");
                return -1;
            }
            if (ok) {
                memcpy(o, p->value, tn + 1);
                ok = smtp_dsn_text(semi + 1, p->valuelen - tn - 1, o + tn + 1, SMTP_ORCPT_MAX - tn) && semi[1];
            }
            if (!ok) {
                free(o);
                reply_error(m, 501, "5.5.4", "Bad ORCPT parameter (type;xtext)");
                return -1;
            }
            m->rcpt_dsn.orcpt = o;
        } else {
            if (smtp_ieq(p->key, p->keylen, "NOTIFY") || smtp_ieq(p->key, p->keylen, "ORCPT")) {
                reply_error(m, 501, "5.5.4", "Duplicate parameter");
                return -1;
            }
            reply_unsupported(m, p);
            return -1;
        }
    }
    return 0;
}

/* MAIL parameters: SIZE, BODY, SMTPUTF8, RET, ENVID.  0, or -1 after replying. */
static int mail_params(struct smtp *m, const struct smtp_params *ps)
{
    char text[REPLY_LINE_MAX];
    for (size_t i = 0; i < ps->n; i++) {
        const struct smtp_param *p = &ps->p[i];
        for (size_t j = 0; j < i; j++) {
            if (ps->p[j].keylen == p->keylen && strncasecmp(ps->p[j].key, p->key, p->keylen) == 0) {
                snprintf(text, sizeof(text), "Duplicate parameter %.*s", (int)p->keylen, p->key);
                reply_error(m, 501, "5.5.4", text);
                return -1;
            }
        }
        if (smtp_ieq(p->key, p->keylen, "SIZE")) {
            unsigned long long v = 0;
            bool ok = p->value != NULL && p->valuelen <= 20;
            for (size_t k = 0; ok && k < p->valuelen; k++) {
                ok = p->value[k] >= '0' && p->value[k] <= '9';
                v = v * 10 + (unsigned)(p->value[k] - '0');
            }
            if (!ok) {
                reply_error(m, 501, "5.5.4", "Bad SIZE parameter");
                return -1;
            }
            if (v > (unsigned long long)m->cfg->max_size) {
                snprintf(text, sizeof(text), "Message size exceeds fixed maximum message size (%lld)",
                         m->cfg->max_size);
                refuse(m, "MAIL FROM", NULL, "--max-size", 552, "5.3.4", text, false);
                return -1;
            }
            if (v > buf_budget_left()) {
                refuse(m, "MAIL FROM", NULL, "--max-memory", 452, "4.3.1",
                       "Insufficient system storage for a message of that size, try again later", false);
                return -1;
            }
        } else if (smtp_ieq(p->key, p->keylen, "BODY")) {
            m->tx.binarymime = p->value && smtp_ieq(p->value, p->valuelen, "BINARYMIME");
            if (p->value == NULL || !(smtp_ieq(p->value, p->valuelen, "7BIT") ||
                                      smtp_ieq(p->value, p->valuelen, "8BITMIME") || m->tx.binarymime)) {
                reply_error(m, 555, "5.5.4", "Unsupported BODY value (7BIT, 8BITMIME or BINARYMIME)");
                return -1;
            }
        } else if (smtp_ieq(p->key, p->keylen, "SMTPUTF8")) {
            if (p->value != NULL) {
                reply_error(m, 555, "5.5.4", "SMTPUTF8 takes no value");
                return -1;
            }
            m->tx.smtputf8 = true;
        } else if (smtp_ieq(p->key, p->keylen, "RET")) {
            m->tx.dsn_ret = !p->value ? SMTP_RET_NONE
                            : smtp_ieq(p->value, p->valuelen, "FULL") ? SMTP_RET_FULL
                            : smtp_ieq(p->value, p->valuelen, "HDRS") ? SMTP_RET_HDRS : SMTP_RET_NONE;
            if (m->tx.dsn_ret == SMTP_RET_NONE) {
                reply_error(m, 501, "5.5.4", "Bad RET parameter (FULL or HDRS)");
                return -1;
            }
        } else if (smtp_ieq(p->key, p->keylen, "ENVID")) {
            if (!p->value || p->valuelen > SMTP_ENVID_MAX ||
                !smtp_dsn_text(p->value, p->valuelen, m->tx.envid, sizeof(m->tx.envid))) {
                m->tx.envid[0] = '\0';
                reply_error(m, 501, "5.5.4", "Bad ENVID parameter (xtext of at most 100 characters)");
                return -1;
            }
        } else {
            reply_unsupported(m, p);
            return -1;
        }
    }
    return 0;
}

static void cmd_mail(struct smtp *m, const struct smtp_cmd *c)
{
    struct smtp_path path;
    long long maxm = m->cfg->max_messages;

    if (m->draining) {
        reply_close(m, "4.3.2", "Service shutting down");
        return;
    }
    if (maxm > 0 && m->nmessages >= (unsigned long long)maxm) {
        reply_close(m, "4.7.0", "Too many messages in one session");
        return;
    }
    const struct session_proxy *px = session_proxy(m->s);
    if (px && px->local) {
        refuse(m, "MAIL FROM", NULL, "--proxy-protocol", 550, "5.7.1",
               "Not a client: the proxy's own connection (PROXY LOCAL) sends no mail", true);
        return;
    }
    if (m->cfg->require_tls && session_tls_state(m->s) != STLS_ON) {
        refuse(m, "MAIL FROM", NULL, "--require-tls", 530, "5.7.0", "Must issue a STARTTLS command first",
               true);
        return;
    }
    if (m->cfg->require_auth && m->client.user == NULL) {
        refuse(m, "MAIL FROM", NULL, "--require-auth", 530, "5.7.0", "Authentication required", true);
        return;
    }
    enum smtp_path_status st = smtp_parse_path(c->arg, c->arglen, "FROM:", SMTP_PATH_NULL_OK, &path);
    if (st != SMTP_PATH_OK) {
        path_error(m, st, true);
        return;
    }
    /* what a MAIL refused before (by its hook) may have left */
    m->tx.smtputf8 = m->tx.binarymime = false;
    m->tx.dsn_ret = SMTP_RET_NONE;
    m->tx.envid[0] = '\0';
    if (mail_params(m, &path.params) < 0) {
        m->tx.smtputf8 = false;
        return;
    }
    if (path.utf8 && !m->tx.smtputf8) {
        reply_error(m, 553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        return;
    }
    struct hook_args a = { .address = path.addr, .params = &path.params };
    call_hook(m, HOOK_MAIL, &a, path.addr);
}

/*
 * --domain: a recipient in another domain is refused before on_rcpt
 * (unless the client authenticated), and the postmaster of a listed domain
 * (or <Postmaster>) is accepted without asking (RFC 5321 4.5.1).  True when
 * the RCPT has been answered here.
 */
static bool rcpt_by_domain(struct smtp *m, const char *addr)
{
    const struct config *cfg = m->cfg;
    if (cfg->any_domain || cfg->ndomains == 0)
        return false;
    const char *at = strrchr(addr, '@');
    const char *domain = at ? at + 1 : "";
    bool ours = at == NULL || config_domain_accepted(cfg, domain, strlen(domain));
    if (!ours && m->client.user == NULL) {
        char text[SMTP_PATH_MAX + CONFIG_HOSTNAME_MAX + 64];
        snprintf(text, sizeof(text), "<%s>: Relaying denied: %s takes mail for its own domains only", addr,
                 cfg->domains[0]);
        refuse(m, "RCPT TO", addr, "--domain", 550, "5.7.1", text, false);
        return true;
    }
    if (ours && (at ? (size_t)(at - addr) : strlen(addr)) == 10 && strncasecmp(addr, "postmaster", 10) == 0) {
        struct verdict v = { .code = VERDICT_ACCEPT };
        memcpy(m->arg, addr, strlen(addr) + 1);   /* parsed: fits */
        finish_stage(m, HOOK_RCPT, &v);
        return true;
    }
    return false;
}

static void cmd_rcpt(struct smtp *m, const struct smtp_cmd *c)
{
    struct smtp_path path;

    if (m->tx.nrcpts >= (size_t)m->cfg->max_recipients) {
        refuse(m, "RCPT TO", NULL, "--max-recipients", 452, "4.5.3", "Too many recipients", false);
        return;
    }
    enum smtp_path_status st = smtp_parse_path(c->arg, c->arglen, "TO:", SMTP_PATH_POSTMASTER_OK, &path);
    if (st != SMTP_PATH_OK) {
        path_error(m, st, false);
        return;
    }
    if (rcpt_params(m, &path.params) < 0)
        return;
    if (path.utf8 && !m->tx.smtputf8) {
        reply_error(m, 553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        return;
    }
    if (rcpt_by_domain(m, path.addr))
        return;
    struct hook_args a = { .address = path.addr, .params = &path.params };
    call_hook(m, HOOK_RCPT, &a, path.addr);
}

/* A transaction's data begins: its id, the session's and its number. */
static void new_msgid(struct smtp *m)
{
    size_t n = strlen(m->id);
    memcpy(m->tx.msgid, m->id, n);
    m->tx.msgid[n++] = '.';
    m->tx.msgid[n + fmt_dec(m->tx.msgid + n, ++m->ntransactions)] = '\0';
}

static void cmd_data(struct smtp *m, const struct smtp_cmd *c)
{
    if (c->arglen > 0) {
        reply_error(m, 501, "5.5.4", "Syntax: DATA");
        return;
    }
    if (m->tx.binarymime) {
        reply_error(m, 503, "5.5.1", "BODY=BINARYMIME takes BDAT, not DATA");
        return;
    }
    new_msgid(m);
    struct hook_args a = { 0 };
    call_hook(m, HOOK_DATA, &a, NULL);
}

static void end_of_data(struct smtp *m);
static const char *sequence_error(const struct smtp *m, enum smtp_verb verb);

static void cmd_bdat(struct smtp *m, const struct smtp_cmd *c)
{
    unsigned long long size;
    bool last;
    if (!smtp_parse_bdat(c->arg, c->arglen, &size, &last)) {
        reply_error(m, 501, "5.5.4", "Syntax: BDAT size [LAST]");
        return;
    }
    m->chunk.left = size;
    m->chunk.last = last;
    if (m->state == ST_RCPT) {    /* the first chunk: on_data decides, as for DATA */
        new_msgid(m);
        m->chunk.total = 0;
        m->chunk.waiting = true;
        struct hook_args a = { 0 };
        call_hook(m, HOOK_DATA, &a, NULL);
    } else if (m->state == ST_BDAT) {
        read_chunk(m, true, 250, NULL, NULL);
    } else {                      /* out of order: answered once its bytes are skipped */
        read_chunk(m, false, 503, "5.5.1", sequence_error(m, SMTP_BDAT));
        m->nerrors++;
    }
}

/* The BDAT chunk has been read. */
static void chunk_done(struct smtp *m)
{
    m->chunk.reading = false;
    if (!m->chunk.keep) {
        if (m->state == ST_BDAT)  /* the chunk after a refused first one, or past --max-size */
            reset_transaction(m);
        reply_text(m, m->chunk.code, m->chunk.enh[0] ? m->chunk.enh : NULL,
                   m->chunk.text ? m->chunk.text : standard_text(m->chunk.code));
        free(m->chunk.text);
        m->chunk.text = NULL;
        return;
    }
    if (m->chunk.total > (unsigned long long)m->cfg->max_size || m->tx.data.overflow) {
        m->tx.data.size = (size_t)m->chunk.total;
        end_of_data(m);           /* 552, or 451 out of memory */
        return;
    }
    if (!m->chunk.last) {
        reply(m, 250, "2.0.0", "%llu octets received", (unsigned long long)buf_len(&m->tx.msg));
        return;
    }
    end_of_data(m);
}

/* Take what is buffered of the chunk: true once it is all read. */
static bool take_chunk(struct smtp *m, struct buf *in)
{
    size_t n = buf_len(in);
    if (n > m->chunk.left)
        n = (size_t)m->chunk.left;
    if (m->chunk.keep) {
        m->chunk.total += n;
        if (!m->tx.data.overflow && (m->chunk.total > (unsigned long long)m->cfg->max_size ||
                                     buf_append(&m->tx.msg, buf_head(in), n) < 0)) {
            m->tx.data.overflow = true;   /* read on, keep no more */
            m->tx.data.no_budget = m->chunk.total <= (unsigned long long)m->cfg->max_size && errno == ENOBUFS;
            buf_free(&m->tx.msg);
        }
    }
    buf_consume(in, n);
    m->chunk.left -= n;
    return m->chunk.left == 0;
}

static void end_of_data(struct smtp *m)
{
    m->answering = STAGE_MESSAGE;
    if (m->trace) {
        char said[64] = "(the message: ";
        size_t n = strlen(said);
        n += fmt_dec(said + n, m->tx.data.overflow ? m->tx.data.size : buf_len(&m->tx.msg));
        memcpy(said + n, " bytes)", 7);
        trace_line(m->trace, 'C', said, n + 7);
    }
    if (m->tx.data.overflow) {
        /* the message buffer could not grow: past --max-size, or no memory */
        if (m->tx.data.size > (size_t)m->cfg->max_size) {
            log_msg(LV_INFO, m->id, "message %s refused: %zu bytes over --max-size %lld",
                    m->tx.msgid, m->tx.data.size, m->cfg->max_size);
            reply(m, 552, "5.3.4", "Message size exceeds fixed maximum message size (%lld)",
                  m->cfg->max_size);
            keep_message(m, 552, "Message size exceeds fixed maximum message size", "--max-size");
        } else if (m->tx.data.no_budget) {
            /* what is in use now says little: the buffer stopped growing
             * when it came, and other messages may have ended since */
            log_msg(LV_WARN, m->id, "message %s refused: its %zu bytes would pass --max-memory %lld",
                    m->tx.msgid, m->tx.data.size, m->cfg->max_memory);
            reply(m, 452, "4.3.1", "Insufficient system storage, try again later");
            keep_message(m, 452, "Insufficient system storage, try again later", "--max-memory");
        } else {
            log_msg(LV_ERROR, m->id, "message %s refused: out of memory for %zu bytes", m->tx.msgid,
                    m->tx.data.size);
            reply(m, 451, "4.3.0", "Out of memory, try again later");
            keep_message(m, 451, "Out of memory, try again later", "");
        }
        reset_transaction(m);
        if (m->draining)
            reply_close(m, "4.3.2", "Service shutting down");
        return;
    }
    enter_state(m, ST_READY);   /* no more message bytes, whatever the verdict */
    struct hook_args a = { .message = buf_head(&m->tx.msg),
                           .size = buf_len(&m->tx.msg) };
    call_hook(m, HOOK_MESSAGE, &a, NULL);
}

static void cmd_rset(struct smtp *m, const struct smtp_cmd *c)
{
    if (c->arglen > 0) {
        reply_error(m, 501, "5.5.4", "Syntax: RSET");
        return;
    }
    reset_transaction(m);
    struct hook_args a = { 0 };
    call_hook(m, HOOK_RSET, &a, NULL);
}

static void cmd_noop(struct smtp *m, const struct smtp_cmd *c)
{
    (void)c;
    reply(m, 250, "2.0.0", "Ok");
}

static void cmd_quit(struct smtp *m, const struct smtp_cmd *c)
{
    if (c->arglen > 0) {
        reply_error(m, 501, "5.5.4", "Syntax: QUIT");
        return;
    }
    reply(m, 221, "2.0.0", "%s Bye", hostname(m));
    session_close_after_flush(m->s);
}

/* VRFY and EXPN: a fixed answer, or the script's when it decides the stage. */
static void ask_directory(struct smtp *m, const struct smtp_cmd *c, enum hook_stage st)
{
    const struct hooks *h = m->hooks;
    bool vrfy = st == HOOK_VRFY;
    if (c->arglen == 0 || c->arglen > SMTP_PATH_MAX || !smtp_utf8_valid(c->arg, c->arglen) ||
        memchr(c->arg, '\0', c->arglen) != NULL) {
        reply_error(m, 501, "5.5.4", vrfy ? "Syntax: VRFY address" : "Syntax: EXPN list");
        return;
    }
    if (!h->defines(h->ctx, st)) {
        if (vrfy)   /* RFC 5321 3.5.3: never confirm or deny an address */
            reply(m, 252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
        else
            reply(m, 502, "5.5.1", "EXPN not available");
        return;
    }
    char arg[SMTP_PATH_MAX + 1];
    memcpy(arg, c->arg, c->arglen);
    arg[c->arglen] = '\0';
    struct hook_args a = { .address = arg };
    call_hook(m, st, &a, arg);
}

static void cmd_vrfy(struct smtp *m, const struct smtp_cmd *c)
{
    ask_directory(m, c, HOOK_VRFY);
}

static void cmd_expn(struct smtp *m, const struct smtp_cmd *c)
{
    ask_directory(m, c, HOOK_EXPN);
}

static void cmd_help(struct smtp *m, const struct smtp_cmd *c)
{
    char text[REPLY_LINE_MAX];
    (void)c;
    snprintf(text, sizeof(text),
             CONFIG_SOFTWARE " accepts: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY EXPN HELP%s%s\n"
             "See RFC 5321", starttls_offered(m) ? " STARTTLS" : "", auth_offered(m) ? " AUTH" : "");
    reply_text(m, 214, "2.0.0", text);
}

static void cmd_starttls(struct smtp *m, const struct smtp_cmd *c)
{
    if (session_tls_state(m->s) != STLS_NONE) {
        reply_error(m, 503, "5.5.1", "TLS already active");
        return;
    }
    if (!session_tls_possible(m->s)) {
        reply_error(m, 502, "5.5.1", "STARTTLS not available");
        return;
    }
    if (c->arglen > 0) {
        reply_error(m, 501, "5.5.4", "Syntax: STARTTLS");
        return;
    }
    reply(m, 220, "2.0.0", "Ready to start TLS");
    session_starttls(m->s);
}

/* The STARTTLS handshake succeeded.  RFC 3207 section 4.2: forget all the
 * client said before; a new EHLO is needed. */
static void tls_ready(void *p)
{
    struct smtp *m = p;
    reset_transaction(m);
    client_clear(&m->client);
    if (m->trace) {
        snprintf(m->trace->cs.tls, sizeof(m->trace->cs.tls), "%s", session_tls_version(m->s));
        m->trace->cs.helo[0] = m->trace->cs.user[0] = '\0';
        m->trace->cs_changed = true;
    }
    enter_state(m, ST_INIT);
}

_Static_assert(AUTH_USER_MAX < sizeof(((struct smtp *)0)->arg), "arg holds a user name");

/* Hand a user name and password to the hooks (the caller wipes the
 * password's buffer). */
static void auth_check(struct smtp *m, const char *user, size_t ulen, char *pass, size_t plen)
{
    if (!auth_text_ok(user, ulen, AUTH_USER_MAX) || !auth_text_ok(pass, plen, AUTH_PASSWORD_MAX)) {
        auth_failed(m, 501, "5.5.2", "User name or password too long or malformed");
        return;
    }
    char name[AUTH_USER_MAX + 1];
    memcpy(name, user, ulen);
    name[ulen] = '\0';
    pass[plen] = '\0';
    struct hook_args a = { .user = name, .password = pass };
    call_hook(m, HOOK_AUTH, &a, name);
}

/*
 * A SASL response: the initial response of the AUTH command or a line of
 * its own.  "*" cancels (RFC 4954 section 4); PLAIN is one message, LOGIN a
 * user name then a password.
 */
static void auth_response(struct smtp *m, const char *line, size_t len)
{
    char dec[AUTH_LINE_MAX];
    size_t n;

    if (len == 1 && line[0] == '*') {
        auth_failed(m, 501, "5.0.0", "Authentication cancelled");
        return;
    }
    if (len == 1 && line[0] == '=')
        n = 0;      /* an empty initial response */
    else if (auth_b64_decode(line, len, dec, sizeof(dec) - 1, &n) < 0) {
        auth_failed(m, 501, "5.5.2", "Cannot decode response");
        return;
    }
    switch (m->auth_step) {
    case AUTH_PLAIN: {
        struct auth_plain p;
        if (auth_plain_split(dec, n, &p) < 0) {
            auth_failed(m, 501, "5.5.2", "Malformed PLAIN response");
        } else if (p.authzid_len > 0 &&
                   (p.authzid_len != p.user_len || memcmp(p.authzid, p.user, p.user_len) != 0)) {
            /* acting for another identity is not offered */
            auth_failed(m, 535, "5.7.8", "Authorization identity not allowed");
        } else {
            m->auth_step = AUTH_NONE;
            auth_check(m, p.user, p.user_len, (char *)p.password, p.password_len);
        }
        break;
    }
    case AUTH_LOGIN_USER:
        /* the name waits in login_user for the password */
        if (n == 0 || !auth_text_ok(dec, n, AUTH_USER_MAX)) {
            auth_failed(m, 501, "5.5.2", "Malformed user name");
            break;
        }
        free(m->login_user);
        if ((m->login_user = strndup(dec, n)) == NULL) {
            auth_failed(m, 454, "4.7.0", "Out of memory, try again later");
            break;
        }
        m->auth_step = AUTH_LOGIN_PASSWORD;
        enter_state(m, ST_AUTH);
        reply(m, 334, NULL, "UGFzc3dvcmQ6");   /* "Password:" */
        break;
    case AUTH_LOGIN_PASSWORD:
        m->auth_step = AUTH_NONE;
        auth_check(m, m->login_user, strlen(m->login_user), dec, n);
        free(m->login_user);
        m->login_user = NULL;
        break;
    case AUTH_NONE:
        break;
    }
    explicit_bzero(dec, sizeof(dec));
}

static void cmd_auth(struct smtp *m, const struct smtp_cmd *c)
{
    const struct hooks *h = m->hooks;
    if (!h->defines(h->ctx, HOOK_AUTH)) {
        reply_error(m, 502, "5.5.1", "AUTH not available");
        return;
    }
    if (!auth_offered(m)) {
        reply_error(m, 538, "5.7.11", "Encryption required: use STARTTLS first");
        return;
    }
    if (m->client.user != NULL) {
        reply_error(m, 503, "5.5.1", "Already authenticated");
        return;
    }
    if (auth_rate_spent(m)) {
        log_msg(LV_WARN, m->id, "AUTH refused: %lld failures from %s in the last hour "
                "(--max-auth-rate)", m->cfg->max_auth_rate, session_peer_host(m->s, NULL));
        reply_close(m, "4.7.0", "Too many failed authentications from your address, try later");
        return;
    }
    size_t k = 0;
    while (k < c->arglen && c->arg[k] != ' ')
        k++;
    const char *ir = k < c->arglen ? c->arg + k + 1 : NULL;
    size_t irlen = ir ? c->arglen - k - 1 : 0;
    unsigned methods = (unsigned)m->cfg->auth_methods;
    if (smtp_ieq(c->arg, k, "PLAIN") && (methods & CONFIG_AUTH_PLAIN)) {
        m->auth_step = AUTH_PLAIN;
    } else if (smtp_ieq(c->arg, k, "LOGIN") && (methods & CONFIG_AUTH_LOGIN)) {
        m->auth_step = AUTH_LOGIN_USER;
    } else {
        reply_error(m, k ? 504 : 501, "5.5.4", k ? "Unrecognized authentication type"
                                                 : "Syntax: AUTH mechanism [initial-response]");
        return;
    }
    if (ir) {
        auth_response(m, ir, irlen);
        return;
    }
    enter_state(m, ST_AUTH);
    if (m->auth_step == AUTH_PLAIN)
        reply_text(m, 334, NULL, "");   /* an empty challenge */
    else
        reply(m, 334, NULL, "VXNlcm5hbWU6");   /* "Username:" */
}

static void cmd_not_implemented(struct smtp *m, const struct smtp_cmd *c)
{
    (void)c;
    reply_error(m, 502, "5.5.1", "Command not implemented");
}

#define S(x) (1u << (x))
#define S_SESSION (S(ST_INIT) | S(ST_READY) | S(ST_MAIL) | S(ST_RCPT) | S(ST_BDAT))

static const struct command {
    unsigned    states;       /* where the command is allowed */
    const char *out_of_order; /* the 503 text elsewhere */
    void (*run)(struct smtp *, const struct smtp_cmd *);
    bool        junk;         /* moves no mail: counted outside a transaction */
} commands[SMTP_VERB_COUNT] = {
    [SMTP_HELO]     = { S_SESSION, NULL, cmd_helo, false },
    [SMTP_EHLO]     = { S_SESSION, NULL, cmd_helo, false },
    [SMTP_MAIL]     = { S(ST_READY), NULL, cmd_mail, false },
    [SMTP_RCPT]     = { S(ST_MAIL) | S(ST_RCPT), "Need MAIL before RCPT", cmd_rcpt, false },
    [SMTP_DATA]     = { S(ST_RCPT), NULL, cmd_data, false },
    [SMTP_RSET]     = { S_SESSION, NULL, cmd_rset, true },
    [SMTP_NOOP]     = { S_SESSION, NULL, cmd_noop, true },
    [SMTP_QUIT]     = { S_SESSION | S(ST_REFUSED), NULL, cmd_quit, false },
    [SMTP_VRFY]     = { S_SESSION, NULL, cmd_vrfy, true },
    [SMTP_EXPN]     = { S_SESSION, NULL, cmd_expn, true },
    [SMTP_HELP]     = { S_SESSION, NULL, cmd_help, true },
    [SMTP_STARTTLS] = { S_SESSION, NULL, cmd_starttls, false },
    [SMTP_AUTH]     = { S(ST_READY), NULL, cmd_auth, false },
    /* every state: a BDAT's chunk is read (or skipped) wherever it comes */
    [SMTP_BDAT]     = { S_SESSION | S(ST_REFUSED), NULL, cmd_bdat, false },
    [SMTP_ETRN]     = { S_SESSION, NULL, cmd_not_implemented, false },
    [SMTP_TURN]     = { S_SESSION, NULL, cmd_not_implemented, false },
};

static const char *sequence_error(const struct smtp *m, enum smtp_verb verb)
{
    if (m->state == ST_REFUSED)
        return "Service refused; only QUIT is accepted";
    switch (verb) {
    case SMTP_MAIL:
        return m->state == ST_INIT ? "Send HELO or EHLO first" : "Nested MAIL command";
    case SMTP_DATA:
        return m->state == ST_MAIL   ? "Need RCPT before DATA"
               : m->state == ST_BDAT ? "DATA cannot follow BDAT in one transaction"
                                     : "Need MAIL before DATA";
    case SMTP_BDAT:
        return m->state == ST_MAIL ? "Need RCPT before BDAT" : "Need MAIL before BDAT";
    case SMTP_AUTH:   /* RFC 4954 section 4: not within a transaction */
        return m->state == ST_INIT ? "Send EHLO first" : "AUTH not allowed in a mail transaction";
    default:
        return commands[verb].out_of_order ? commands[verb].out_of_order : "Bad sequence of commands";
    }
}

static void command(struct smtp *m, const char *line, size_t len)
{
    struct smtp_cmd c;

    smtp_parse_command(line, len, &c);
    m->answering = c.verb;
    metrics_add(&metrics->commands[c.verb], 1);
    if (len + 2 > SMTP_LINE_MAX && c.verb != SMTP_AUTH) {
        reply_error(m, 500, "5.5.6", "Line too long");
        return;
    }
    /* never log credentials: the mechanism only */
    const char *sp = c.verb == SMTP_AUTH ? memchr(c.arg, ' ', c.arglen) : NULL;
    size_t shown = sp ? (size_t)(sp - line) : len;
    if (log_enabled(LV_DEBUG)) {
        char esc[REPLY_LINE_MAX * 4];
        log_msg(LV_DEBUG, m->id, "< %s%s", log_escape(esc, sizeof(esc), line, shown),
                shown < len ? " ***" : "");
    }
    if (m->trace) {
        if (c.verb == SMTP_MAIL && m->state == ST_READY)
            trace_mark(m->trace);
        char text[REPLY_LINE_MAX];
        size_t n = shown < 500 ? shown : 500;
        memcpy(text, line, n);
        if (shown < len) {
            memcpy(text + n, " ***", 4);
            n += 4;
        }
        trace_line(m->trace, 'C', text, n);
    }
    const struct command *cmd = &commands[c.verb];
    if (cmd->run == NULL) {
        reply_error(m, 500, "5.5.1", "Command unrecognized");
        return;
    }
    if (!(cmd->states & S(m->state))) {
        reply_error(m, 503, "5.5.1", sequence_error(m, c.verb));
        return;
    }
    bool outside = m->state <= ST_READY;
    cmd->run(m, &c);
    if (cmd->junk && outside)
        count_junk(m);
}

/* --- input ----------------------------------------------------------------- */

static void start(void *p)
{
    struct smtp *m = p;
    struct hook_args a = { 0 };
    m->answering = STAGE_GREETING;
    int port;
    const char *peer = session_peer_host(m->s, &port);
    if ((m->trace = trace_new(m->id, peer, port)) != NULL) {
        struct buf *e = console_event_begin("session", m->id);
        if (e) {
            json_field(e, "state", "open");
            json_field_int(e, "port", port);
            json_field(e, "peer", peer);
            console_event_end();
        }
    }
    call_hook(m, HOOK_CONNECT, &a, NULL);
}

static void input(void *p)
{
    struct smtp *m = p;
    struct buf *in = session_input(m->s);
    while (session_can_take(m->s)) {
        if (m->chunk.reading) {
            if (buf_len(in) == 0 && m->chunk.left > 0)
                return;
            session_touch(m->s);
            if (take_chunk(m, in))
                chunk_done(m);
            continue;
        }
        if (m->state == ST_DATA) {
            size_t lines = m->tx.data.lines;
            bool done;
            size_t n = smtp_data_scan(&m->tx.data, buf_head(in), buf_len(in), &m->tx.msg, &done);
            buf_consume(in, n);
            if (m->tx.data.lines != lines)
                session_touch(m->s);
            if (!done)
                return;
            end_of_data(m);
            continue;
        }
        /* AUTH lines may be longer than other commands (RFC 4954 section
         * 4); command() holds the others to SMTP_LINE_MAX. */
        const char *line;
        size_t len;
        switch (buf_getline(in, AUTH_LINE_MAX, &line, &len)) {
        case BUF_LINE_AGAIN:
            return;
        case BUF_LINE_TOO_LONG:
            session_touch(m->s);
            if (m->state == ST_AUTH)
                auth_failed(m, 500, "5.5.6", "Line too long");
            else
                reply_error(m, 500, "5.5.6", "Line too long");
            break;
        case BUF_LINE_OK:
            session_touch(m->s);
            if (m->state == ST_AUTH) {
                log_msg(LV_DEBUG, m->id, "< (SASL response, %zu bytes)", len);
                trace_line(m->trace, 'C', "***", 3);
                auth_response(m, line, len);
            } else {
                command(m, line, len);
            }
            break;
        }
    }
}

static void eof(void *p)
{
    struct smtp *m = p;
    if (m->state == ST_DATA)
        log_msg(LV_WARN, m->id, "connection lost in DATA after %zu bytes: message %s discarded",
                m->tx.data.size, m->tx.msgid);
    else if (m->state == ST_BDAT || m->chunk.reading)
        log_msg(LV_WARN, m->id, "connection lost in BDAT after %llu bytes: message %s discarded",
                m->chunk.total, m->tx.msgid);
}

static void timeout(void *p, const char *why)
{
    struct smtp *m = p;
    if (m->state == ST_DATA)
        log_msg(LV_WARN, m->id, "%s in DATA after %zu bytes: message %s discarded", why,
                m->tx.data.size, m->tx.msgid);
    else
        log_msg(LV_INFO, m->id, "%s", why);
    reply(m, 421, "4.4.2", "%s Error: %s, closing connection", hostname(m), why);
    session_close_after_flush(m->s);
}

static void shutdown_(void *p)
{
    struct smtp *m = p;
    if (m->state == ST_DATA || m->state == ST_BDAT || m->chunk.reading || m->pending == HOOK_MESSAGE) {
        m->draining = true;   /* the message in progress may finish */
        return;
    }
    reply_close(m, "4.3.2", "Service shutting down");
}

/* --- the session's protocol ------------------------------------------------- */

static void *open_(const void *ctx, struct session *s)
{
    struct smtp *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->s = s;
    m->id = session_id(s);
    m->cfg = session_config(s);
    m->hooks = ctx;
    m->pending = -1;
    if (m->hooks->open)
        m->hooks->open(m->hooks->ctx, m);
    buf_init_counted(&m->tx.msg, (size_t)m->cfg->max_size, BUF_BUDGETED);
    return m;
}

static void closed(void *p, char *summary, size_t size)
{
    struct smtp *m = p;
    m->closed = true;
    m->hooks->close(m->hooks->ctx, m);
    if (m->trace) {
        struct buf *e = console_event_begin("session", m->id);
        if (e) {
            json_field(e, "state", "closed");
            json_field_int(e, "messages", (long long)m->nmessages);
            console_event_end();
        }
    }
    snprintf(summary, size, " messages=%lu", m->nmessages);
}

static void free_(void *p)
{
    struct smtp *m = p;
    tx_clear(&m->tx, 0);
    free(m->tx.rcpts);
    client_clear(&m->client);
    free(m->login_user);
    free(m->rcpt_dsn.orcpt);
    free(m->chunk.text);
    trace_free(m->trace);
    free(m);
}

const struct proto smtp_proto = {
    .open = open_, .start = start, .input = input, .eof = eof, .timeout = timeout,
    .shutdown = shutdown_, .tls_ready = tls_ready, .closed = closed, .free = free_,
};

/* --- what hooks may read ---------------------------------------------------- */

const char *smtp_id(const struct smtp *m) { return m->id; }
const char *smtp_server_id(const struct smtp *m) { return m->cfg->id; }
const char *smtp_peer_host(const struct smtp *m, int *port_r) { return session_peer_host(m->s, port_r); }
const char *smtp_local_host(const struct smtp *m, int *port_r) { return session_local_host(m->s, port_r); }
const struct session_proxy *smtp_proxy(const struct smtp *m) { return session_proxy(m->s); }
const char *smtp_helo(const struct smtp *m) { return m->client.helo; }
bool smtp_esmtp(const struct smtp *m) { return m->client.esmtp; }
const char *smtp_sender(const struct smtp *m) { return m->tx.sender; }
size_t smtp_nrecipients(const struct smtp *m) { return m->tx.nrcpts; }
const char *smtp_recipient(const struct smtp *m, size_t i)
{
    return i < m->tx.nrcpts ? m->tx.rcpts[i].addr : NULL;
}
int smtp_dsn_ret(const struct smtp *m) { return (int)m->tx.dsn_ret; }
const char *smtp_dsn_envid(const struct smtp *m) { return m->tx.envid[0] ? m->tx.envid : NULL; }
unsigned smtp_dsn_notify(const struct smtp *m, size_t i) { return i < m->tx.nrcpts ? m->tx.rcpts[i].notify : 0; }
const char *smtp_dsn_orcpt(const struct smtp *m, size_t i) { return i < m->tx.nrcpts ? m->tx.rcpts[i].orcpt : NULL; }
const char *smtp_message_id(const struct smtp *m) { return m->tx.msgid; }
const char *smtp_user(const struct smtp *m) { return m->client.user; }
const char *smtp_tls_version(const struct smtp *m) { return session_tls_version(m->s); }
const char *smtp_tls_cipher(const struct smtp *m) { return session_tls_cipher(m->s); }
const char *smtp_tls_sni(const struct smtp *m) { return session_tls_sni(m->s); }
void smtp_tls_client(const struct smtp *m, char *subject, size_t size, bool *verified_r)
{
    session_tls_client(m->s, subject, size, verified_r);
}
void **smtp_hook_data(struct smtp *m) { return &m->hook_data; }
bool smtp_traced(const struct smtp *m) { return m->trace != NULL; }

void smtp_trace_action(struct smtp *m, const char *kind, const char *target, const char *result, double seconds)
{
    if (m->trace)
        trace_add(m->trace, STEP_ACTION, NULL, kind, 0, target, target ? strlen(target) : 0, result, clock_mono(),
                  seconds);
}

void smtp_trace_note(struct smtp *m, const char *who, const char *text)
{
    if (m->trace)
        trace_add(m->trace, STEP_NOTE, NULL, who, 0, text, text ? strlen(text) : 0, NULL, clock_mono(), 0);
}

void smtp_trace_parsed(struct smtp *m, struct mime *mm, const char *subject)
{
    struct trace *t = m->trace;
    if (t == NULL)
        return;
    trace_parsed(t, subject);
    if (console_keeping() && console_fields_at_arrival(mm->len)) {
        buf_clear(&t->fields);
        if (console_fields(&t->fields, mm) < 0)
            buf_clear(&t->fields);    /* parsed again when kept */
    }
}

size_t hook_nparams(const struct hook_args *a)
{
    return a->params ? a->params->n : 0;
}

void hook_param(const struct hook_args *a, size_t i, struct hook_param *p)
{
    const struct smtp_param *sp = &a->params->p[i];
    p->key = sp->key;
    p->keylen = sp->keylen;
    p->value = sp->value;
    p->valuelen = sp->valuelen;
}
