/*
 * server: the listening sockets, accepting (with the --max-clients limit),
 * session ids, the sessions' shared part (struct session_owner, with the
 * list of live sessions), and the graceful stop.
 */
#ifndef LUASMTPD_SERVER_H
#define LUASMTPD_SERVER_H

#include <ev.h>
#include <stdbool.h>

#include "config.h"
#include "net.h"
#include "clients.h"
#include "session.h"

struct hooks;
struct tls_server;

struct listener {
    struct server *srv;
    ev_io   io;
    int     fd;
    struct net_addr addr;
    bool    tls;           /* implicit TLS */
    bool    proxy;         /* a PROXY header first (--proxy-protocol) */
};

struct server {
    struct session_owner sessions;      /* loop, config, TLS, SMTP and the live sessions */
    struct ev_loop      *loop;
    const struct config *cfg;
    struct listener      listeners[CONFIG_LISTEN_MAX];
    int                  nlisteners;
    ev_timer             accept_retry;  /* out of descriptors: pause accepting */
    ev_timer             grace;
    uint64_t             next_id;
    uint64_t             id_step;       /* the number of workers */
    struct clients       clients;       /* connections a minute, per client */
    bool                 stopping;
    bool                 standby;       /* the listeners closed (--standby) */
};

/* Open every listener of cfg; 0, or -1 after logging why.  Sessions speak
 * SMTP asking `hooks`; tls (which the caller keeps) serves STARTTLS and the
 * --listen-tls listeners. */
int  server_init(struct server *srv, struct ev_loop *loop, const struct config *cfg,
                 const struct hooks *hooks, struct tls_server *tls);
/* SIGTERM/SIGINT: stop accepting, let messages in progress finish within
 * the grace period; the loop ends when the last session has gone. */
void server_stop(struct server *srv);
/* Standby (on): the listeners stop accepting, so that connections are
 * refused, while the sessions in progress go on; off: they accept again. */
void server_standby(struct server *srv, bool on);
/* Serve fd (connected to peer) as a new session, how as for session_new():
 * 0, or -1 when out of memory (the caller closes fd). */
int  server_adopt(struct server *srv, int fd, const struct net_addr *peer, unsigned how);
void server_free(struct server *srv);
/* A reload: sessions from now on ask `hooks` and use `tls` (those in
 * progress keep what they began with). */
void server_set_hooks(struct server *srv, const struct hooks *hooks, struct tls_server *tls);

#endif
