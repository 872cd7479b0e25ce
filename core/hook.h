/*
 * hook: the one door between the SMTP core and the scripts.
 *
 * At each stage the core calls hooks->call() with the stage and its
 * arguments.  The implementation either decides at once (HOOK_DONE, the
 * verdict filled in) or later (HOOK_PENDING): the session then waits,
 * reading no further commands, while every other session goes on, until the
 * implementation calls smtp_verdict().  Arguments are valid only during the
 * call; copy what is needed later.  hooks->close() is called once when a
 * session ends, pending verdict or not; after it, smtp_verdict() must not be
 * called for that session.  The session is a struct smtp, opaque here: the
 * functions below say what of it may be read.
 *
 * A verdict is an SMTP answer: VERDICT_ACCEPT (the stage's normal reply),
 * VERDICT_REJECT (the stage's default rejection) or an explicit code, with an
 * optional enhanced code and text.  The core checks it fits the stage (an
 * unusable code is logged and answered 451 4.3.0), adds the enhanced code
 * and the standard text when missing, and strips control characters.
 *
 * The Lua bridge in lua/ implements it; the core's unit tests and fuzz
 * targets bring their own.
 */
#ifndef LUASMTPD_HOOK_H
#define LUASMTPD_HOOK_H

#include <stdbool.h>
#include <stddef.h>

struct session_proxy;

struct smtp;
struct smtp_params;

enum hook_stage {
    HOOK_CONNECT,   /* a client connected: greeting or refusal */
    HOOK_HELO,      /* HELO or EHLO */
    HOOK_MAIL,      /* MAIL FROM */
    HOOK_RCPT,      /* RCPT TO */
    HOOK_DATA,      /* DATA, before the 354 */
    HOOK_MESSAGE,   /* end of data: the whole message */
    HOOK_RSET,      /* RSET */
    HOOK_AUTH,      /* AUTH: a user name and password to check */
    HOOK_VRFY,      /* VRFY: answer for an address (only when decided by a hook) */
    HOOK_EXPN,      /* EXPN: answer for a list (only when decided by a hook) */
    HOOK_STAGE_COUNT
};

#define VERDICT_ACCEPT    0
#define VERDICT_REJECT    (-1)
#define VERDICT_TEXT_MAX  2048   /* all lines, '\n'-separated */
#define VERDICT_ENH_MAX   16
#define VERDICT_ORIGIN_MAX 192

struct verdict {
    int  code;                     /* VERDICT_ACCEPT, VERDICT_REJECT or 200..599 */
    char enhanced[VERDICT_ENH_MAX];/* "5.7.1", or "" to derive it */
    char text[VERDICT_TEXT_MAX];   /* "" for the standard text */
    bool disconnect;               /* close after replying (421 always does) */
    char origin[VERDICT_ORIGIN_MAX];   /* who refused, for the log: "on_rcpt
                                          (rules.lua:12)"; "" if not told */
};

struct hook_args {
    const char *name;       /* HELO: the name given */
    bool        esmtp;      /* HELO: true for EHLO */
    const char *address;    /* MAIL, RCPT: without brackets; "" is the null sender;
                               VRFY, EXPN: the argument as given */
    const struct smtp_params *params;  /* MAIL, RCPT: ESMTP parameters (hook_param) */
    const char *message;    /* MESSAGE: the message after dot-unstuffing */
    size_t      size;       /* MESSAGE: its length in bytes */
    const char *user;       /* AUTH: the user name (authentication identity) */
    const char *password;   /* AUTH: wiped after the call */
};

enum hook_status { HOOK_DONE, HOOK_PENDING };

struct hooks {
    void *ctx;
    enum hook_status (*call)(void *ctx, struct smtp *s, enum hook_stage stage,
                             const struct hook_args *args, struct verdict *v);
    void (*close)(void *ctx, struct smtp *s);
    /* A session began on these hooks (NULL: not told).  Its close() goes
     * to the same hooks, even after the server moved on to others. */
    void (*open)(void *ctx, struct smtp *s);
    /* Does the implementation decide this stage itself?  AUTH is offered
     * only when it decides HOOK_AUTH; VRFY and EXPN keep their fixed
     * replies unless it decides them. */
    bool (*defines)(void *ctx, enum hook_stage stage);
};

/* One ESMTP parameter of MAIL or RCPT: bytes of the command line, not
 * NUL-terminated; value NULL for a keyword without one. */
struct hook_param {
    const char *key, *value;
    size_t      keylen, valuelen;
};
size_t hook_nparams(const struct hook_args *a);
void   hook_param(const struct hook_args *a, size_t i, struct hook_param *p);

/* Deliver the verdict of a call that returned HOOK_PENDING. */
void smtp_verdict(struct smtp *s, const struct verdict *v);

const char *hook_stage_name(enum hook_stage stage);

#define HOOK_TLS_SUBJECT_MAX 512   /* a client certificate's subject, with its NUL */

/* What scripts may read of a session (the strings live as long as the
 * session, or until the transaction is reset for sender and recipients). */
const char *smtp_id(const struct smtp *s);
const char *smtp_server_id(const struct smtp *s);   /* --id */
const char *smtp_peer_host(const struct smtp *s, int *port_r);
const char *smtp_local_host(const struct smtp *s, int *port_r);
/* What a PROXY header said (session.h), or NULL without one. */
const struct session_proxy *smtp_proxy(const struct smtp *s);
const char *smtp_helo(const struct smtp *s);        /* NULL before HELO */
bool        smtp_esmtp(const struct smtp *s);
const char *smtp_sender(const struct smtp *s);      /* NULL before MAIL */
size_t      smtp_nrecipients(const struct smtp *s);
const char *smtp_recipient(const struct smtp *s, size_t i);
const char *smtp_message_id(const struct smtp *s);  /* during HOOK_MESSAGE */
/* DSN (RFC 3461): RET= (0: not given, 1 FULL, 2 HDRS), ENVID= decoded or
 * NULL; each accepted recipient's NOTIFY= bits (NEVER 1, SUCCESS 2,
 * FAILURE 4, DELAY 8; 0 not given) and ORCPT= ("rfc822;x@y") or NULL. */
int         smtp_dsn_ret(const struct smtp *s);
const char *smtp_dsn_envid(const struct smtp *s);
unsigned    smtp_dsn_notify(const struct smtp *s, size_t i);
const char *smtp_dsn_orcpt(const struct smtp *s, size_t i);
const char *smtp_user(const struct smtp *s);        /* NULL before a successful AUTH */
/* TLS: NULL without it; the client certificate's subject "" without one. */
const char *smtp_tls_version(const struct smtp *s);
const char *smtp_tls_cipher(const struct smtp *s);
const char *smtp_tls_sni(const struct smtp *s);     /* the client's SNI name, or NULL */
void        smtp_tls_client(const struct smtp *s, char *subject, size_t size, bool *verified_r);
/* The console (--http, docs/console.md): is the session traced?  The
 * bridge then adds to its trace the actions a hook ran (kind "mqtt",
 * target, result "ok", seconds) and the script's own lines, and hands over
 * the message it parsed with its Subject, so the console need not parse
 * it again. */
struct mime;
bool        smtp_traced(const struct smtp *s);
void        smtp_trace_action(struct smtp *s, const char *kind, const char *target, const char *result,
                              double seconds);
void        smtp_trace_note(struct smtp *s, const char *who, const char *text);
void        smtp_trace_parsed(struct smtp *s, struct mime *m, const char *subject);
/* A slot for the hook implementation's own per-session data. */
void      **smtp_hook_data(struct smtp *s);

#endif
