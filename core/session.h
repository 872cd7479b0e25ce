/*
 * session: one client connection, the transport.  Owns the socket, its
 * libev watchers (embedded, as libev intends), TLS, the input and output
 * buffers, back-pressure, the idle and whole-session timers, close-later
 * and free-late.  It knows no SMTP: it calls its protocol through the
 * events of struct proto, and the protocol reaches it through the
 * functions below (write, pause and resume, close after flush, start TLS).
 *
 * Reading stops while the session cannot take more (output backlog, a full
 * input buffer while the protocol is paused), so no input makes memory grow
 * without bound.  A session is never freed inside a call that may still
 * touch it: session_close() marks it dead and the outermost event callback
 * frees it.
 */
#ifndef LUASMTPD_SESSION_H
#define LUASMTPD_SESSION_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "net.h"
#include "proxy.h"

struct session;
struct tls_conn;
struct tls_server;

#define SESSION_ID_MAX 24
#define SESSION_SUMMARY_MAX 64

/*
 * The protocol's side.  open() makes its state for a new connection (NULL
 * when out of memory); every other event gets that state.  None of them
 * runs after closed(); free() is the last.
 */
struct proto {
    void *(*open)(const void *ctx, struct session *s);
    void (*start)(void *p);                   /* ready: at once, or after implicit TLS */
    void (*input)(void *p);                   /* bytes wait in session_input() */
    void (*eof)(void *p);                     /* the client closed; all it sent was taken */
    void (*timeout)(void *p, const char *why);/* idle or whole-session limit */
    void (*shutdown)(void *p);                /* the server is stopping */
    void (*tls_ready)(void *p);               /* the handshake after session_starttls() */
    /* The connection is gone: words for the disconnect line (" messages=2"). */
    void (*closed)(void *p, char *summary, size_t size);
    void (*free)(void *p);
};

/* What the sessions of one server share. */
struct session_owner {
    struct ev_loop      *loop;
    const struct config *cfg;
    struct tls_server   *tls;              /* NULL: no TLS configured */
    const struct proto  *proto;
    const void          *proto_ctx;
    struct session      *sessions;         /* the live ones */
    unsigned long        nsessions;
    void (*gone)(struct session_owner *o); /* one of them was freed */
    /* A client's connection, its address known (after any PROXY header):
     * NULL to let it in (after *delay_r seconds, a tarpit, when it sets
     * one), else the 421 text that turns it away (logged by the owner). */
    const char *(*admit)(struct session_owner *o, struct session *s, double *delay_r);
    /* An admitted session marked by session_mark_bad() has closed. */
    void (*bad)(struct session_owner *o, struct session *s);
};

/* What a PROXY header said of a connection (session_proxy()). */
struct session_proxy {
    char host[NET_ADDRSTR_MAX];     /* the proxy: the connection's own peer */
    int  port;
    int  version;                   /* 1 or 2 */
    bool local;                     /* the proxy's own connection (a health check) */
    bool tls, tls_verified;         /* v2: the client spoke TLS to the proxy */
    char authority[PROXY_TEXT_MAX]; /* v2: the name the client asked the proxy for, or "" */
};

/* How session_new() starts a connection. */
#define SESSION_TLS   1u            /* implicit TLS: a handshake first */
#define SESSION_PROXY 2u            /* a PROXY header first (before any TLS) */

enum session_tls {
    STLS_NONE,       /* plaintext */
    STLS_STARTING,   /* STARTTLS answered: the handshake starts once the reply is sent */
    STLS_HANDSHAKE,  /* the handshake runs: no protocol until it is done */
    STLS_ON,
};

struct session {
    struct session_owner *owner;
    struct session *prev, *next;     /* the owner's list of live sessions */
    void      *proto;                /* the protocol's state */

    int       fd;
    ev_io     rio, wio;
    ev_timer  idle, life;
    ev_timer  kick;                  /* never started: fed to settle after session_resume() */
    struct buf in, out;

    struct net_addr peer, local;
    char      peer_host[NET_ADDRSTR_MAX], local_host[NET_ADDRSTR_MAX];
    int       peer_port, local_port;
    char      id[SESSION_ID_MAX];
    ev_tstamp started;
    struct tls_conn *tls;
    enum session_tls tls_state;
    struct session_proxy *proxy;     /* NULL unless the listener takes PROXY headers */
    bool      proxy_wait;            /* its header has not come yet */
    bool      implicit_tls;          /* a handshake starts once the header is read */
    bool      quiet;                 /* a proxy's health check: connect and disconnect at debug */
    unsigned char client[NET_KEY_MAX];   /* the client for per-client limits (net_client_key) */
    bool      admitted;              /* counted among its client's connections */
    bool      tarpit;                /* admitted, waiting out a delay before the greeting */
    bool      bad;                   /* closed for its errors (session_mark_bad) */
    bool      read_wants_write;      /* a TLS read needs the socket writable first */
    bool      write_wants_read;      /* a TLS write needs the socket readable first */

    bool      begun;                 /* proto->start has run */
    bool      paused;                /* the protocol takes no input for now */
    bool      closing;               /* close once the output is flushed */
    bool      dead;                  /* closed; free when the callback unwinds */
    bool      eof;                   /* the client has shut down its side */
    bool      reading;               /* rio is active */
};

/* Serve a connected fd as session `id` of o: 0, or -1 when out of memory
 * (the caller closes fd).  how: SESSION_PROXY reads a PROXY header first
 * (the client's address replaces the proxy's; no valid header closes the
 * connection), SESSION_TLS then a TLS handshake (implicit TLS); the
 * protocol starts after them. */
int  session_new(struct session_owner *o, int fd, const struct net_addr *peer, unsigned how,
                 uint64_t id);

/* --- for the protocol ------------------------------------------------------ */

/* The input to take: consume what is used. */
struct buf *session_input(struct session *s);
/* Queue reply bytes; they go out when the input taken now is answered. */
void session_write(struct session *s, const char *p, size_t n);
/* May the next buffered input be taken now? */
bool session_can_take(const struct session *s);
/* A complete line arrived: restart the idle timer. */
void session_touch(struct session *s);
/* Take no input, and stop the idle timer, until session_resume(). */
void session_pause(struct session *s);
/* Take input again: the buffered input is handed over, and the replies
 * written, from the session's own callback. */
void session_resume(struct session *s);
/* Close once everything queued has been sent. */
void session_close_after_flush(struct session *s);
/* The session is closing for the client's errors (--max-errors and the
 * like): it counts against the client (--max-bad-clients). */
void session_mark_bad(struct session *s);
/* STARTTLS was answered: discard what the client sent after the command
 * (RFC 3207 section 5: it is plaintext that must not reach the TLS
 * session), read nothing more, and start the handshake once the reply is
 * out; proto->tls_ready follows when it succeeds. */
void session_starttls(struct session *s);
bool session_tls_possible(const struct session *s);   /* the server has a certificate */
enum session_tls session_tls_state(const struct session *s);
const struct config *session_config(const struct session *s);
const char *session_id(const struct session *s);
const char *session_peer_host(const struct session *s, int *port_r);
const char *session_local_host(const struct session *s, int *port_r);
/* The PROXY header's account of the connection, or NULL without one. */
const struct session_proxy *session_proxy(const struct session *s);
/* TLS: NULL without it; the client certificate's subject "" without one. */
const char *session_tls_version(const struct session *s);
const char *session_tls_cipher(const struct session *s);
const char *session_tls_sni(const struct session *s);   /* the name the client asked for, or NULL */
void session_tls_client(const struct session *s, char *subject, size_t size, bool *verified_r);

/* --- for the owner --------------------------------------------------------- */

/* Server stopping: the protocol decides (finish a message, or go now). */
void session_shutdown(struct session *s);
/* Stop: close the socket now (proto->closed runs); freed later. */
void session_close(struct session *s, const char *why);
void session_free(struct session *s);

#endif
