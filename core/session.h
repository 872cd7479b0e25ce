/*
 * session: one client connection.  Owns the socket, its libev watchers
 * (embedded, as libev intends), the input and output buffers, the idle and
 * whole-session timers, and the SMTP state that smtp.c drives.
 *
 * Reading stops while the session cannot take more (output backlog, a full
 * input buffer while a hook decides), so no input makes memory grow without
 * bound.  A session is never freed inside a call that may still touch it:
 * session_close() marks it dead and the outermost event callback frees it.
 */
#ifndef LUASMTPD_SESSION_H
#define LUASMTPD_SESSION_H

#include <ev.h>
#include <stdbool.h>

#include "buf.h"
#include "hook.h"
#include "net.h"
#include "smtp_parse.h"

struct server;
struct tls_conn;

#define SESSION_ID_MAX 24

enum smtp_state {
    ST_GREETING,     /* waiting for the connect hook */
    ST_REFUSED,      /* greeting refused: only QUIT is served (RFC 5321 3.1) */
    ST_INIT,         /* needs HELO/EHLO */
    ST_READY,        /* may start a transaction */
    ST_MAIL,         /* sender given */
    ST_RCPT,         /* at least one recipient */
    ST_DATA,         /* reading the message */
    ST_AUTH,         /* AUTH: reading the client's next SASL response */
};

enum session_tls {
    STLS_NONE,       /* plaintext */
    STLS_STARTING,   /* STARTTLS answered: the handshake starts once the 220 is sent */
    STLS_HANDSHAKE,  /* the handshake runs: no SMTP until it is done */
    STLS_ON,
};

enum auth_step { AUTH_NONE, AUTH_PLAIN, AUTH_LOGIN_USER, AUTH_LOGIN_PASSWORD };

struct session {
    struct server  *srv;
    struct session *prev, *next;     /* server's list of live sessions */

    int       fd;
    ev_io     rio, wio;
    ev_timer  idle, life;
    struct buf in, out, msg;

    struct net_addr peer, local;
    char      peer_host[NET_ADDRSTR_MAX], local_host[NET_ADDRSTR_MAX];
    int       peer_port, local_port;
    char      id[SESSION_ID_MAX];
    char      msgid[SESSION_ID_MAX + 12];
    ev_tstamp started;
    struct tls_conn *tls;
    enum session_tls tls_state;
    bool      read_wants_write;      /* a TLS read needs the socket writable first */
    bool      write_wants_read;      /* a TLS write needs the socket readable first */

    /* SMTP */
    enum smtp_state state;
    int       pending;               /* the stage awaiting a verdict, or -1 */
    char      pending_arg[SMTP_PATH_MAX + 1]; /* HELO name / address awaiting it */
    char     *helo;
    bool      esmtp;
    char     *sender;
    bool      smtputf8;              /* MAIL ... SMTPUTF8 */
    char    **rcpts;
    size_t    nrcpts, rcpts_cap;
    struct smtp_data data;
    unsigned  nerrors;
    enum auth_step auth_step;        /* in ST_AUTH: which response comes next */
    unsigned  nauth_failures;
    char     *user;                  /* after a successful AUTH */
    unsigned long nmessages;         /* accepted with 250 */
    unsigned long ntransactions;     /* DATA started: numbers message ids */
    void     *hook_data;

    bool      closing;               /* close once the output is flushed */
    bool      draining;              /* server stopping: close after this message */
    bool      dead;                  /* closed; free when the callback unwinds */
    bool      eof;                   /* the client has shut down its side */
    bool      reading;               /* rio is active */
};

/* 0, or -1 when out of memory (the caller closes fd).  With tls, the
 * session starts with a TLS handshake (implicit TLS); the SMTP greeting
 * follows it. */
int  session_new(struct server *srv, int fd, const struct net_addr *peer, bool tls);
/* Queue reply bytes; they are written when session_flush() runs. */
void session_write(struct session *s, const char *p, size_t n);
void session_flush(struct session *s);
/* A complete line arrived: restart the idle timer. */
void session_touch(struct session *s);
/* Stop: close the socket now (a hook's close runs); freed later. */
void session_close(struct session *s, const char *why);
/* After an outside event (a verdict, shutdown): flush, free if dead. */
void session_settle(struct session *s);
/* May the next buffered command be processed now? */
bool session_can_take(const struct session *s);
/* A hook is deciding: the idle timer stops until the verdict comes. */
void session_wait(struct session *s, bool waiting);
/* Set reading on or off to match what the session can take. */
void session_update_io(struct session *s);
/* STARTTLS was answered: discard what the client sent after the command
 * (RFC 3207 section 5: it is plaintext that must not reach the TLS
 * session), read nothing more, and start the handshake once the reply is
 * out.  smtp_tls_ready() is called when it succeeds. */
void session_starttls(struct session *s);
/* Server stopping: finish a message in progress, otherwise 421 now. */
void session_shutdown(struct session *s);
void session_free(struct session *s);

#endif
