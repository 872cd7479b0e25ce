/*
 * server: the listening sockets, accepting (with the --max-clients limit),
 * the list of live sessions, and the graceful stop.
 */
#ifndef LUASMTPD_SERVER_H
#define LUASMTPD_SERVER_H

#include <ev.h>
#include <stdbool.h>

#include "config.h"
#include "hook.h"

struct session;
struct tls_server;

struct listener {
    struct server *srv;
    ev_io   io;
    int     fd;
    struct net_addr addr;
    bool    tls;           /* implicit TLS */
};

struct server {
    struct ev_loop      *loop;
    const struct config *cfg;
    const struct hooks  *hooks;
    struct tls_server   *tls;           /* NULL: no TLS configured */
    struct listener      listeners[CONFIG_LISTEN_MAX];
    int                  nlisteners;
    ev_timer             accept_retry;  /* out of descriptors: pause accepting */
    ev_timer             grace;
    struct session      *sessions;
    unsigned long        nsessions;
    unsigned long        next_id;
    unsigned long        id_step;       /* the number of workers */
    bool                 stopping;
};

/* Open every listener of cfg; 0, or -1 after logging why.  tls (which the
 * caller keeps) serves STARTTLS and the --listen-tls listeners. */
int  server_init(struct server *srv, struct ev_loop *loop, const struct config *cfg,
                 const struct hooks *hooks, struct tls_server *tls);
/* SIGTERM/SIGINT: stop accepting, let messages in progress finish within
 * the grace period; the loop ends when the last session has gone. */
void server_stop(struct server *srv);
/* A session has been freed (called by session_free). */
void server_session_gone(struct server *srv, struct session *s);
void server_free(struct server *srv);

#endif
