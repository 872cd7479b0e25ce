#include "server.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "smtp.h"

/* As deep as the kernel lets a listen queue be (net.core.somaxconn clamps
 * it, 4096 by default since Linux 5.4).  SMTP's server speaks first: a
 * connection the full queue dropped after SYN cookies completed it waits
 * for a greeting that never comes, so a burst of devices reconnecting at
 * once (after a network outage) must fit.  Those past --max-clients are
 * then answered 421 at once rather than left hanging. */
#define LISTEN_BACKLOG 65535

static void reject_over_limit(struct server *srv, const struct listener *l, int fd,
                              const struct net_addr *peer)
{
    char a[NET_ADDRSTR_MAX], line[CONFIG_HOSTNAME_MAX + 80];
    int n = snprintf(line, sizeof(line), "421 4.7.0 %s Too many connections, try again later\r\n",
                     srv->cfg->hostname);
    /* Best effort on a fresh socket: the reply fits in its send buffer.  A
     * TLS client would take plaintext for a broken handshake: it is only
     * closed. */
    if (!l->tls) {
        ssize_t w = send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    close(fd);
    metrics_add(&metrics->refused[REFUSED_MAX_CLIENTS], 1);
    log_msg(LV_WARN, NULL, "refused %s: %lu connections (--max-clients)", net_addr_str(peer, a),
            srv->sessions.nsessions);
}

/* Accept one connection of l: false when there is none (or accepting
 * must pause). */
static bool accept_one(struct listener *l)
{
    struct server *srv = l->srv;
    struct net_addr peer;
    int fd = net_accept(l->fd, &peer);
    if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
            errno == ECONNABORTED || errno == EPROTO)
            return false;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of resources: stop accepting for a moment rather than spin. */
            log_msg(LV_ERROR, NULL, "accept: %s; pausing for 1s", strerror(errno));
            for (int k = 0; k < srv->nlisteners; k++)
                ev_io_stop(srv->loop, &srv->listeners[k].io);
            if (!srv->standby)
                ev_timer_start(srv->loop, &srv->accept_retry);
            return false;
        }
        log_msg(LV_ERROR, NULL, "accept: %s", strerror(errno));
        return false;
    }
    if (srv->sessions.nsessions >= (unsigned long)srv->cfg->max_clients) {
        reject_over_limit(srv, l, fd, &peer);
        return true;
    }
    if (l->proxy && !config_cidrs_match(&srv->cfg->proxy_from, &peer)) {
        char a[NET_ADDRSTR_MAX], b[NET_ADDRSTR_MAX];
        log_msg(LV_WARN, NULL, "refused %s on %s: not a proxy allowed to send a PROXY header (--proxy-from)",
                net_addr_str(&peer, a), net_addr_str(&l->addr, b));
        close(fd);
        metrics_add(&metrics->refused[REFUSED_PROXY_FROM], 1);
        return true;
    }
    if (server_adopt(srv, fd, &peer, (l->tls ? SESSION_TLS : 0) | (l->proxy ? SESSION_PROXY : 0)) < 0) {
        log_msg(LV_ERROR, NULL, "out of memory for a new session");
        close(fd);
    }
    return true;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    for (int i = 0; i < 64 && accept_one(w->data); i++)
        continue;
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct server *srv = w->data;
    (void)revents;
    if (srv->stopping || srv->standby)
        return;
    for (int k = 0; k < srv->nlisteners; k++)
        ev_io_start(loop, &srv->listeners[k].io);
}

/* The per-client limits: connections open, a minute's connections, and
 * a delay for a client whose sessions were closed for errors lately. */
static const char *admit(struct session_owner *o, struct session *s, double *delay_r)
{
    struct server *srv = (struct server *)o;   /* sessions is its first member */
    const struct config *cfg = srv->cfg;
    char a[NET_ADDRSTR_MAX];
    if (config_cidrs_match(&cfg->client_exceptions, &s->peer))
        return NULL;
    net_client_key(&s->peer, (int)cfg->client_ipv6_prefix, s->client);
    if (cfg->max_clients_per_ip) {
        long long open = 0;
        for (const struct session *x = o->sessions; x; x = x->next)
            open += x->admitted && memcmp(x->client, s->client, NET_KEY_MAX) == 0;
        if (open >= cfg->max_clients_per_ip) {
            log_msg(LV_WARN, s->id, "refused %s: %lld connections open from this client (--max-clients-per-ip)",
                    net_addr_str(&s->peer, a), open);
            metrics_add(&metrics->refused[REFUSED_PER_IP], 1);
            return "Too many connections from your address, try again later";
        }
    }
    if (cfg->connect_rate && !clients_connect(&srv->clients, s->client, ev_now(srv->loop), (double)cfg->connect_rate)) {
        log_msg(LV_WARN, s->id, "refused %s: over %lld connections a minute from this client (--connect-rate)",
                net_addr_str(&s->peer, a), cfg->connect_rate);
        metrics_add(&metrics->refused[REFUSED_RATE], 1);
        return "Too many connections from your address, slow down";
    }
    unsigned bad = cfg->max_bad_clients ? clients_bad_count(&srv->clients, s->client, ev_now(srv->loop)) : 0;
    if (bad >= cfg->max_bad_clients && bad > 0) {
        *delay_r = 5.0 * (bad - cfg->max_bad_clients + 1);
        if (*delay_r > 30)
            *delay_r = 30;
        log_msg(LV_WARN, s->id, "%s waits %.0fs before its greeting: %u sessions closed for errors "
                "in 10 minutes (--max-bad-clients)", net_addr_str(&s->peer, a), *delay_r, bad);
    }
    return NULL;
}

static void client_bad(struct session_owner *o, struct session *s)
{
    struct server *srv = (struct server *)o;
    if (s->client[0])             /* a key was made: not one of the exceptions */
        clients_bad(&srv->clients, s->client, ev_now(srv->loop));
}

/* A session was freed: the last one ends a stop. */
static void session_gone(struct session_owner *o)
{
    struct server *srv = (struct server *)((char *)o - offsetof(struct server, sessions));
    if (srv->stopping && o->sessions == NULL) {
        ev_timer_stop(srv->loop, &srv->grace);
        ev_break(srv->loop, EVBREAK_ALL);
    }
}

static void grace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct server *srv = w->data;
    (void)loop;
    (void)revents;
    log_msg(LV_WARN, NULL, "grace period over: closing %lu remaining connection(s)",
            srv->sessions.nsessions);
    while (srv->sessions.sessions) {
        struct session *s = srv->sessions.sessions;
        session_close(s, "server stopping");
        session_free(s);
    }
}

int server_init(struct server *srv, struct ev_loop *loop, const struct config *cfg,
                const struct hooks *hooks, struct tls_server *tls)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = cfg;
    srv->sessions = (struct session_owner){ .loop = loop, .cfg = cfg, .tls = tls,
                                            .proto = &smtp_proto, .proto_ctx = hooks,
                                            .gone = session_gone, .admit = admit, .bad = client_bad };
    /* Session ids, sorted by time: the start second (32 bits), then a count
     * of sessions that begins at a number the kernel draws at random, so
     * that servers started in the same second (a quick restart, --replay
     * runs) make different ids.  Each worker counts in its own residue
     * class, so no two workers make the same id. */
    srv->id_step = cfg->workers > 1 ? (uint64_t)cfg->workers : 1;
    uint32_t r;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint32_t)getpid() * 2654435761u;     /* no entropy yet: the pid, spread */
    uint64_t low = (uint64_t)r / srv->id_step * srv->id_step + (uint64_t)(cfg->worker ? cfg->worker - 1 : 0);
    srv->next_id = ((uint64_t)time(NULL) << 32) + low;
    ev_timer_init(&srv->accept_retry, accept_retry_cb, 1., 0.);
    srv->accept_retry.data = srv;
    ev_timer_init(&srv->grace, grace_cb, (ev_tstamp)cfg->grace, 0.);
    srv->grace.data = srv;

    for (int i = 0; i < cfg->nlisten; i++) {
        char err[NET_ERR_MAX], a[NET_ADDRSTR_MAX];
        struct listener *l = &srv->listeners[i];
        l->srv = srv;
        l->tls = cfg->listen_tls[i];
        l->proxy = cfg->listen_proxy[i];
        l->fd = net_listen(&cfg->listen[i], LISTEN_BACKLOG, cfg->workers > 1, err);
        if (l->fd < 0) {
            log_msg(LV_ERROR, NULL, "%s", err);
            server_free(srv);
            return -1;
        }
        srv->nlisteners++;
        /* With port 0 the kernel chose one: report the real address. */
        if (net_local_addr(l->fd, &l->addr) < 0)
            l->addr = cfg->listen[i];
        ev_io_init(&l->io, accept_cb, l->fd, EV_READ);
        l->io.data = l;
        ev_io_start(loop, &l->io);
        log_msg(LV_INFO, NULL, "listening on %s%s%s", net_addr_str(&l->addr, a),
                l->tls ? " (implicit TLS)" : "", l->proxy ? " (PROXY protocol)" : "");
    }
    return 0;
}

void server_stop(struct server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    ev_timer_stop(srv->loop, &srv->accept_retry);
    for (int i = 0; i < srv->nlisteners; i++) {
        ev_io_stop(srv->loop, &srv->listeners[i].io);
        close(srv->listeners[i].fd);
    }
    srv->nlisteners = 0;
    log_msg(LV_INFO, NULL, "stopping: %lu connection(s) open", srv->sessions.nsessions);

    struct session *s = srv->sessions.sessions;
    while (s) {
        struct session *next = s->next;
        session_shutdown(s);
        s = next;
    }
    if (srv->sessions.sessions)
        ev_timer_start(srv->loop, &srv->grace);
    else
        ev_break(srv->loop, EVBREAK_ALL);
}

/* Linux stops a listening socket on shutdown(SHUT_RD), which keeps its
 * address: connecting is refused until listen() again.  So the port stays
 * this process's, and --user needs no right to bind it again.  What waits
 * in the backlog would be reset: it is accepted first, and served. */
void server_standby(struct server *srv, bool on)
{
    if (srv->stopping || srv->standby == on)
        return;
    srv->standby = on;
    if (on)
        ev_timer_stop(srv->loop, &srv->accept_retry);
    for (int i = 0; i < srv->nlisteners; i++) {
        struct listener *l = &srv->listeners[i];
        char a[NET_ADDRSTR_MAX];
        if (on) {
            ev_io_stop(srv->loop, &l->io);
            for (int k = 0; k <= LISTEN_BACKLOG && accept_one(l); k++)
                continue;
            if (shutdown(l->fd, SHUT_RD) < 0)
                log_msg(LV_ERROR, NULL, "standby: cannot stop listening on %s: %s",
                        net_addr_str(&l->addr, a), strerror(errno));
        } else if (listen(l->fd, LISTEN_BACKLOG) < 0) {
            log_msg(LV_ERROR, NULL, "activate: cannot listen on %s again: %s", net_addr_str(&l->addr, a),
                    strerror(errno));
        } else {
            ev_io_start(srv->loop, &l->io);
        }
    }
    if (on)
        log_msg(LV_INFO, NULL, "standby: the listeners are closed; %lu session(s) in progress go on",
                srv->sessions.nsessions);
    else
        log_msg(LV_INFO, NULL, "active: listening again");
}

int server_adopt(struct server *srv, int fd, const struct net_addr *peer, unsigned how)
{
    uint64_t id = srv->next_id;
    srv->next_id += srv->id_step;
    return session_new(&srv->sessions, fd, peer, how, id);
}

void server_set_hooks(struct server *srv, const struct hooks *hooks, struct tls_server *tls)
{
    srv->sessions.proto_ctx = hooks;
    srv->sessions.tls = tls;
}

void server_free(struct server *srv)
{
    for (int i = 0; i < srv->nlisteners; i++) {
        ev_io_stop(srv->loop, &srv->listeners[i].io);
        close(srv->listeners[i].fd);
    }
    srv->nlisteners = 0;
    while (srv->sessions.sessions) {
        struct session *s = srv->sessions.sessions;
        session_close(s, "server exiting");
        session_free(s);
    }
    clients_free(&srv->clients);
}
