#include "session.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "tls.h"

#define READ_CHUNK     16384
#define IN_MAX         (64 * 1024)   /* unprocessed input held at most */
#define OUT_MAX        (256 * 1024)  /* queued replies held at most */
#define OUT_HIGH       (64 * 1024)   /* stop taking commands above this */

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void life_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents);
static int  start_tls(struct session *s);
static void settle(struct session *s);
static void begin(struct session *s);
static void start(struct session *s);

int session_new(struct session_owner *o, int fd, const struct net_addr *peer, unsigned how,
                uint64_t id)
{
    struct session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    if ((how & SESSION_PROXY) && (s->proxy = calloc(1, sizeof(*s->proxy))) == NULL) {
        free(s);
        return -1;
    }
    struct ev_loop *loop = o->loop;
    const struct config *cfg = o->cfg;

    s->owner = o;
    s->fd = fd;
    s->peer = *peer;
    if (net_local_addr(fd, &s->local) < 0)
        memset(&s->local, 0, sizeof(s->local));
    s->peer_port = net_addr_host(&s->peer, s->peer_host);
    s->local_port = net_addr_host(&s->local, s->local_host);
    snprintf(s->id, sizeof(s->id), "%016" PRIX64, id);
    s->started = ev_now(loop);
    buf_init_counted(&s->in, IN_MAX, BUF_CHARGED);
    buf_init(&s->out, OUT_MAX);
    if ((s->proto = o->proto->open(o->proto_ctx, s)) == NULL) {
        free(s->proxy);
        free(s);
        return -1;
    }

    ev_io_init(&s->rio, read_cb, fd, EV_READ);
    ev_io_init(&s->wio, write_cb, fd, EV_WRITE);
    ev_init(&s->idle, idle_cb);
    s->idle.repeat = (ev_tstamp)cfg->timeout;
    ev_timer_init(&s->life, life_cb, (ev_tstamp)cfg->session_timeout, 0.);
    ev_init(&s->kick, kick_cb);
    s->rio.data = s->wio.data = s->idle.data = s->life.data = s->kick.data = s;

    s->next = o->sessions;
    if (o->sessions)
        o->sessions->prev = s;
    o->sessions = s;
    o->nsessions++;
    metrics_add(&metrics->connections, 1);
    metrics_add(&metrics->open, 1);

    s->implicit_tls = how & SESSION_TLS;
    if (cfg->session_timeout > 0)
        ev_timer_start(loop, &s->life);
    if (s->proxy) {                 /* the connect line waits for the client's address */
        s->proxy_wait = true;
        ev_timer_again(loop, &s->idle);
    } else {
        begin(s);
    }
    settle(s);
    return 0;
}

/* The connection is the client's: log it, then the handshake or the protocol. */
static void begin(struct session *s)
{
    char from[NET_ADDRSTR_MAX], to[NET_ADDRSTR_MAX], via[NET_ADDRSTR_MAX + 32] = "";
    if (s->proxy && !s->proxy->local)
        snprintf(via, sizeof(via), " via %s%s%s:%d (PROXY v%d)", strchr(s->proxy->host, ':') ? "[" : "",
                 s->proxy->host, strchr(s->proxy->host, ':') ? "]" : "", s->proxy->port, s->proxy->version);
    log_msg(s->quiet ? LV_DEBUG : LV_INFO, s->id, "connect from %s to %s%s%s%s", net_addr_str(&s->peer, from),
            net_addr_str(&s->local, to), via, s->implicit_tls ? " (TLS)" : "",
            s->quiet ? " (the proxy's own connection: a health check)" : "");
    double delay = 0;
    const char *refusal = s->owner->admit ? s->owner->admit(s->owner, s, &delay) : NULL;
    if (refusal) {
        /* a TLS client would take plaintext for a broken handshake: it is
         * only closed */
        if (!s->implicit_tls) {
            char line[CONFIG_HOSTNAME_MAX + 128];
            int n = snprintf(line, sizeof(line), "421 4.7.0 %s %s\r\n", s->owner->cfg->hostname, refusal);
            session_write(s, line, (size_t)n);
        }
        s->closing = true;
        return;
    }
    s->admitted = true;
    if (delay > 0) {              /* nothing is read or sent until it is over */
        s->tarpit = true;
        s->idle.repeat = delay;
        ev_timer_again(s->owner->loop, &s->idle);
        return;
    }
    start(s);
}

/* The handshake of implicit TLS, or the protocol. */
static void start(struct session *s)
{
    if (s->implicit_tls) {
        if (start_tls(s) < 0)
            session_close(s, "out of memory for TLS");
    } else {
        s->idle.repeat = (ev_tstamp)s->owner->cfg->timeout;
        ev_timer_again(s->owner->loop, &s->idle);
        s->begun = true;
        s->owner->proto->start(s->proto);
    }
}

/* --- PROXY header ------------------------------------------------------------ */

/* What the header says replaces the connection's endpoints: the client
 * and the address it connected to (unless it is the proxy's own). */
static void proxied(struct session *s, const struct proxy_header *h)
{
    struct session_proxy *p = s->proxy;
    memcpy(p->host, s->peer_host, sizeof(p->host));
    p->port = s->peer_port;
    p->version = h->version;
    p->tls = h->ssl;
    p->tls_verified = h->ssl_verified;
    memcpy(p->authority, h->authority, sizeof(p->authority));
    /* a header naming the connection's own peer relays no client: HAProxy's
     * health checks with check-send-proxy say so in version 1 */
    p->local = h->local || net_addr_equal(&h->src, &s->peer);
    s->quiet = p->local;
    if (p->local)
        return;
    s->peer = h->src;
    s->local = h->dst;
    s->peer_port = net_addr_host(&s->peer, s->peer_host);
    s->local_port = net_addr_host(&s->local, s->local_host);
}

/* Read the PROXY header, never a byte past it: what is there is peeked at,
 * and only the header's bytes are taken from the socket, so that a TLS
 * handshake or the client's first command after it stays there. */
static void receive_proxy(struct session *s)
{
    size_t have = buf_len(&s->in), want = PROXY_MAX - have;
    char peer[NET_ADDRSTR_MAX];
    if (buf_reserve(&s->in, want) < 0) {
        session_close(s, "out of memory for the PROXY header");
        return;
    }
    ssize_t n = recv(s->fd, buf_tail(&s->in), want, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        log_msg(LV_INFO, s->id, "connection from %s closed before its PROXY header",
                net_addr_str(&s->peer, peer));
        session_close(s, n < 0 ? strerror(errno) : "no PROXY header");
        return;
    }
    struct proxy_header h;
    size_t len;
    const char *why;
    enum proxy_result r = proxy_parse(buf_head(&s->in), have + (size_t)n, &h, &len, &why);
    if (r == PROXY_BAD) {
        log_msg(LV_WARN, s->id, "closing the connection from %s: bad PROXY header: %s",
                net_addr_str(&s->peer, peer), why);
        session_close(s, "bad PROXY header");
        return;
    }
    size_t take = r == PROXY_OK ? len - have : (size_t)n;
    ssize_t got = recv(s->fd, buf_tail(&s->in), take, 0);
    if (got != (ssize_t)take) {       /* what was peeked cannot fail to come */
        session_close(s, got < 0 ? strerror(errno) : "the PROXY header went short");
        return;
    }
    buf_commit(&s->in, take);
    if (r == PROXY_MORE)
        return;
    buf_clear(&s->in);
    buf_shrink(&s->in);
    proxied(s, &h);
    s->proxy_wait = false;
    begin(s);
}

/* --- TLS --------------------------------------------------------------- */

/* Begin the server side of a handshake; the client speaks first. */
static int start_tls(struct session *s)
{
    s->tls = tls_conn_new(s->owner->tls, s->fd);
    if (s->tls == NULL)
        return -1;
    s->tls_state = STLS_HANDSHAKE;
    s->idle.repeat = (ev_tstamp)s->owner->cfg->tls_timeout;
    ev_timer_again(s->owner->loop, &s->idle);
    return 0;
}

void session_starttls(struct session *s)
{
    size_t n = buf_len(&s->in);
    if (n > 0) {
        log_msg(LV_WARN, s->id, "discarded %zu byte(s) sent after STARTTLS before the handshake", n);
        buf_clear(&s->in);
    }
    s->tls_state = STLS_STARTING;
}

static void handshake(struct session *s)
{
    char err[TLS_ERR_MAX];
    struct ev_loop *loop = s->owner->loop;
    switch (tls_handshake(s->tls, err)) {
    case TLS_OK: {
        s->tls_state = STLS_ON;
        ev_io_stop(loop, &s->wio);
        s->idle.repeat = (ev_tstamp)s->owner->cfg->timeout;
        ev_timer_again(loop, &s->idle);
        metrics_add(&metrics->tls_ok, 1);
        char subject[TLS_SUBJECT_MAX];
        bool verified;
        tls_client_subject(s->tls, subject, sizeof(subject), &verified);
        log_msg(LV_INFO, s->id, "TLS established: %s %s%s%s%s", tls_version(s->tls),
                tls_cipher(s->tls), subject[0] ? ", client certificate " : "", subject,
                subject[0] ? (verified ? " (verified)" : " (not verified)") : "");
        /* implicit TLS: the protocol starts only now */
        if (s->begun) {
            s->owner->proto->tls_ready(s->proto);
        } else {
            s->begun = true;
            s->owner->proto->start(s->proto);
        }
        return;
    }
    case TLS_WANT_READ:
        ev_io_stop(loop, &s->wio);
        return;
    case TLS_WANT_WRITE:
        ev_io_start(loop, &s->wio);
        return;
    case TLS_CLOSED:
    case TLS_ERROR:
        break;
    }
    log_msg(LV_INFO, s->id, "TLS handshake failed: %s", err);
    metrics_add(&metrics->tls_failed, 1);
    session_close(s, "TLS handshake failed");
}

/* --- for the protocol ------------------------------------------------------ */

struct buf *session_input(struct session *s)
{
    return &s->in;
}

void session_write(struct session *s, const char *p, size_t n)
{
    if (s->dead)
        return;
    if (buf_append(&s->out, p, n) < 0)   /* a client that never reads its replies, or OOM */
        session_close(s, buf_len(&s->out) + n > OUT_MAX ? "output backlog over limit"
                                                        : "out of memory for replies");
}

bool session_can_take(const struct session *s)
{
    return !s->dead && !s->closing && !s->paused && buf_len(&s->out) < OUT_HIGH &&
           (s->tls_state == STLS_NONE || s->tls_state == STLS_ON);
}

void session_touch(struct session *s)
{
    ev_timer_again(s->owner->loop, &s->idle);
}

void session_pause(struct session *s)
{
    s->paused = true;
    ev_timer_stop(s->owner->loop, &s->idle);
}

void session_resume(struct session *s)
{
    s->paused = false;
    if (!s->dead)
        ev_timer_again(s->owner->loop, &s->idle);
    /* the session's own callback takes it from here (and frees a session
     * that died meanwhile): the protocol is not re-entered from inside */
    ev_feed_event(s->owner->loop, &s->kick, EV_CUSTOM);
}

void session_close_after_flush(struct session *s)
{
    s->closing = true;
}

bool session_tls_possible(const struct session *s)
{
    return s->owner->tls != NULL;
}

enum session_tls session_tls_state(const struct session *s)
{
    return s->tls_state;
}

const struct config *session_config(const struct session *s)
{
    return s->owner->cfg;
}

/* --- I/O ----------------------------------------------------------------- */

/* Set reading on or off to match what the session can take. */
static void update_io(struct session *s)
{
    struct ev_loop *loop = s->owner->loop;
    bool want;
    if (s->dead || s->tarpit)
        want = false;
    else if (s->tls_state == STLS_HANDSHAKE)
        want = !ev_is_active(&s->wio);   /* the handshake waits for one direction */
    else
        want = s->write_wants_read ||
               (!s->closing && !s->eof && s->tls_state != STLS_STARTING &&
                buf_len(&s->out) < OUT_HIGH && buf_len(&s->in) < IN_MAX);
    if (want && !s->reading)
        ev_io_start(loop, &s->rio);
    else if (!want && s->reading)
        ev_io_stop(loop, &s->rio);
    s->reading = want;
    /* Bytes TLS has decrypted already make the socket no readier: read
     * them without waiting for it. */
    if (want && s->tls_state == STLS_ON && tls_pending(s->tls))
        ev_feed_event(loop, &s->rio, EV_READ);
}

/* Send what is queued: n bytes sent, 0 to wait, -1 after closing. */
static ssize_t send_some(struct session *s)
{
    if (s->tls == NULL) {
        ssize_t n;
        do
            n = send(s->fd, buf_head(&s->out), buf_len(&s->out), MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n > 0)
            return n;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(s->owner->loop, &s->wio);
            return 0;
        }
        session_close(s, n < 0 ? strerror(errno) : "send returned 0");
        return -1;
    }
    char err[TLS_ERR_MAX];
    size_t n;
    s->write_wants_read = false;
    switch (tls_write(s->tls, buf_head(&s->out), buf_len(&s->out), &n, err)) {
    case TLS_OK:
        return (ssize_t)n;
    case TLS_WANT_WRITE:
        ev_io_start(s->owner->loop, &s->wio);
        return 0;
    case TLS_WANT_READ:
        s->write_wants_read = true;
        update_io(s);
        return 0;
    case TLS_CLOSED:
        session_close(s, "connection closed by the client");
        return -1;
    case TLS_ERROR:
        break;
    }
    session_close(s, err);
    return -1;
}

static void flush(struct session *s)
{
    if (s->tls_state == STLS_HANDSHAKE)
        return;   /* replies wait for the handshake */
    while (!s->dead && buf_len(&s->out) > 0) {
        ssize_t n = send_some(s);
        if (n <= 0)
            return;
        buf_consume(&s->out, (size_t)n);
    }
    if (s->dead)
        return;
    if (!s->read_wants_write)
        ev_io_stop(s->owner->loop, &s->wio);
    buf_shrink(&s->out);
    if (s->closing)
        session_close(s, NULL);
    else if (s->tls_state == STLS_STARTING && start_tls(s) < 0)
        session_close(s, "out of memory for TLS");
}

/* The end of every event callback: hand buffered input to the protocol,
 * send the replies, and free the session if it died. */
static void settle(struct session *s)
{
    const struct proto *p = s->owner->proto;
    size_t left;
    do {
        /* Take buffered input while replies can be queued, then send them
         * all in one write: pipelined replies go out batched and in order. */
        left = s->proxy_wait ? 0 : buf_len(&s->in);   /* a PROXY header's part is not input */
        if (left > 0 && session_can_take(s))
            p->input(s->proto);
        /* The client has finished sending: once everything it sent has
         * been taken (the protocol not paused, no backlog holding input
         * back), what is left is unfinished; the protocol answers, then
         * the session closes. */
        if (s->eof && session_can_take(s)) {
            p->eof(s->proto);
            s->closing = true;
        }
        if (!s->dead)
            flush(s);
        if (s->dead) {
            session_free(s);
            return;
        }
        /* A batch the backlog cut short goes on once the replies are out:
         * the client may be sending nothing more until it has them all. */
    } while (buf_len(&s->in) > 0 && buf_len(&s->in) < left && session_can_take(s));
    buf_shrink(&s->in);
    update_io(s);
}

/* Read what the client sent into s->in (through TLS when it is on). */
static void receive(struct session *s)
{
    if (buf_reserve(&s->in, READ_CHUNK) < 0 && buf_reserve(&s->in, 1) < 0)
        return;   /* full: wait until what is buffered has been processed */
    if (s->tls != NULL) {
        char err[TLS_ERR_MAX];
        size_t n;
        s->read_wants_write = false;
        switch (tls_read(s->tls, buf_tail(&s->in), buf_room(&s->in), &n, err)) {
        case TLS_OK:
            buf_commit(&s->in, n);
            return;
        case TLS_WANT_READ:
            buf_shrink(&s->in);
            return;
        case TLS_WANT_WRITE:
            s->read_wants_write = true;
            ev_io_start(s->owner->loop, &s->wio);
            return;
        case TLS_CLOSED:
            s->eof = true;
            return;
        case TLS_ERROR:
            session_close(s, err);
            return;
        }
        return;
    }
    ssize_t n = recv(s->fd, buf_tail(&s->in), buf_room(&s->in), 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            buf_shrink(&s->in);
        else
            session_close(s, strerror(errno));
    } else if (n == 0) {
        s->eof = true;
    } else {
        buf_commit(&s->in, (size_t)n);
    }
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;
    if (s->proxy_wait)
        receive_proxy(s);
    else if (s->tls_state == STLS_HANDSHAKE)
        handshake(s);
    else
        receive(s);
    settle(s);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;
    if (s->tls_state == STLS_HANDSHAKE)
        handshake(s);
    else if (s->read_wants_write)
        receive(s);
    settle(s);
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    settle(w->data);
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;
    if (s->tarpit) {
        s->tarpit = false;
        start(s);
    } else if (s->proxy_wait) {
        char peer[NET_ADDRSTR_MAX];
        log_msg(LV_WARN, s->id, "closing the connection from %s: no PROXY header within --timeout",
                net_addr_str(&s->peer, peer));
        session_close(s, "no PROXY header");
    } else if (s->tls_state == STLS_HANDSHAKE) {
        log_msg(LV_INFO, s->id, "TLS handshake timed out (--tls-timeout)");
        metrics_add(&metrics->tls_failed, 1);
        session_close(s, "TLS handshake timed out");
    } else if (s->closing) {
        session_close(s, "client does not read its replies");
    } else {
        s->owner->proto->timeout(s->proto, "timeout exceeded");
    }
    settle(s);
}

static void life_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;
    if (s->tls_state == STLS_HANDSHAKE) {
        metrics_add(&metrics->tls_failed, 1);
        session_close(s, "session time limit exceeded in the TLS handshake");
    }
    else if (!s->closing)
        s->owner->proto->timeout(s->proto, "session time limit exceeded");
    settle(s);
}

/* --- for the owner --------------------------------------------------------- */

void session_shutdown(struct session *s)
{
    /* no protocol yet (a handshake, a PROXY header, a tarpit): just close */
    if (s->tls_state == STLS_HANDSHAKE || s->proxy_wait || s->tarpit)
        session_close(s, "server stopping");
    else if (!s->closing)
        s->owner->proto->shutdown(s->proto);
    settle(s);
}

void session_mark_bad(struct session *s)
{
    s->bad = true;
}

void session_close(struct session *s, const char *why)
{
    if (s->dead)
        return;
    struct ev_loop *loop = s->owner->loop;
    char summary[SESSION_SUMMARY_MAX] = "";
    s->dead = true;
    ev_io_stop(loop, &s->rio);
    ev_io_stop(loop, &s->wio);
    ev_timer_stop(loop, &s->idle);
    ev_timer_stop(loop, &s->life);
    s->reading = false;
    tls_conn_free(&s->tls);
    close(s->fd);
    s->fd = -1;
    s->owner->proto->closed(s->proto, summary, sizeof(summary));
    if (s->bad && s->admitted && s->owner->bad)
        s->owner->bad(s->owner, s);
    char peer[NET_ADDRSTR_MAX];
    log_msg(s->quiet ? LV_DEBUG : LV_INFO, s->id, "disconnect from %s%s%s%s duration=%.3fs", net_addr_str(&s->peer, peer),
            why ? ": " : "", why ? why : "", summary, ev_now(loop) - s->started);
}

void session_free(struct session *s)
{
    struct session_owner *o = s->owner;
    session_close(s, "closed by server");
    ev_clear_pending(o->loop, &s->kick);
    o->proto->free(s->proto);
    buf_free(&s->in);
    buf_free(&s->out);
    free(s->proxy);
    if (s->prev)
        s->prev->next = s->next;
    else
        o->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    o->nsessions--;
    metrics_add(&metrics->open, -1ULL);
    free(s);
    o->gone(o);
}

const char *session_id(const struct session *s) { return s->id; }
const char *session_peer_host(const struct session *s, int *port_r)
{
    if (port_r)
        *port_r = s->peer_port;
    return s->peer_host;
}
const char *session_local_host(const struct session *s, int *port_r)
{
    if (port_r)
        *port_r = s->local_port;
    return s->local_host;
}
const struct session_proxy *session_proxy(const struct session *s)
{
    return s->proxy && !s->proxy_wait ? s->proxy : NULL;
}
const char *session_tls_version(const struct session *s)
{
    return s->tls_state == STLS_ON ? tls_version(s->tls) : NULL;
}
const char *session_tls_sni(const struct session *s)
{
    return s->tls_state == STLS_ON ? tls_sni(s->tls) : NULL;
}
const char *session_tls_cipher(const struct session *s)
{
    return s->tls_state == STLS_ON ? tls_cipher(s->tls) : NULL;
}
void session_tls_client(const struct session *s, char *subject, size_t size, bool *verified_r)
{
    if (s->tls_state == STLS_ON) {
        tls_client_subject(s->tls, subject, size, verified_r);
    } else {
        subject[0] = '\0';
        *verified_r = false;
    }
}
