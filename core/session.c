#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "smtp.h"
#include "tls.h"

#define READ_CHUNK     16384
#define IN_MAX         (64 * 1024)   /* unprocessed input held at most */
#define OUT_MAX        (256 * 1024)  /* queued replies held at most */
#define OUT_HIGH       (64 * 1024)   /* stop taking commands above this */

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void life_cb(struct ev_loop *loop, ev_timer *w, int revents);
static int  start_tls(struct session *s);

int session_new(struct server *srv, int fd, const struct net_addr *peer, bool tls)
{
    struct session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -1;
    struct ev_loop *loop = srv->loop;
    const struct config *cfg = srv->cfg;

    s->srv = srv;
    s->fd = fd;
    s->peer = *peer;
    if (net_local_addr(fd, &s->local) < 0)
        memset(&s->local, 0, sizeof(s->local));
    s->peer_port = net_addr_host(&s->peer, s->peer_host);
    s->local_port = net_addr_host(&s->local, s->local_host);
    snprintf(s->id, sizeof(s->id), "%012lX", srv->next_id);
    srv->next_id += srv->id_step;
    s->started = ev_now(loop);
    s->pending = -1;
    buf_init(&s->in, IN_MAX);
    buf_init(&s->out, OUT_MAX);
    buf_init(&s->msg, (size_t)cfg->max_size);

    ev_io_init(&s->rio, read_cb, fd, EV_READ);
    ev_io_init(&s->wio, write_cb, fd, EV_WRITE);
    ev_init(&s->idle, idle_cb);
    s->idle.repeat = (ev_tstamp)cfg->timeout;
    ev_timer_init(&s->life, life_cb, (ev_tstamp)cfg->session_timeout, 0.);
    s->rio.data = s->wio.data = s->idle.data = s->life.data = s;

    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;

    log_msg(LOG_INFO, s->id, "connect from %s:%d to %s:%d%s", s->peer_host, s->peer_port,
            s->local_host, s->local_port, tls ? " (TLS)" : "");
    if (cfg->session_timeout > 0)
        ev_timer_start(loop, &s->life);
    if (tls) {
        if (start_tls(s) < 0)
            session_close(s, "out of memory for TLS");
    } else {
        ev_timer_again(loop, &s->idle);
        smtp_start(s);
    }
    session_settle(s);
    return 0;
}

/* --- TLS --------------------------------------------------------------- */

/* Begin the server side of a handshake; the client speaks first. */
static int start_tls(struct session *s)
{
    s->tls = tls_conn_new(s->srv->tls, s->fd);
    if (s->tls == NULL)
        return -1;
    s->tls_state = STLS_HANDSHAKE;
    s->idle.repeat = (ev_tstamp)s->srv->cfg->tls_timeout;
    ev_timer_again(s->srv->loop, &s->idle);
    return 0;
}

void session_starttls(struct session *s)
{
    size_t n = buf_len(&s->in);
    if (n > 0) {
        log_msg(LOG_WARN, s->id, "discarded %zu byte(s) sent after STARTTLS before the handshake", n);
        buf_clear(&s->in);
    }
    s->tls_state = STLS_STARTING;
}

static void handshake(struct session *s)
{
    char err[TLS_ERR_MAX];
    switch (tls_handshake(s->tls, err)) {
    case TLS_OK: {
        bool implicit = s->state == ST_GREETING;   /* no SMTP yet: no STARTTLS either */
        s->tls_state = STLS_ON;
        ev_io_stop(s->srv->loop, &s->wio);
        s->idle.repeat = (ev_tstamp)s->srv->cfg->timeout;
        ev_timer_again(s->srv->loop, &s->idle);
        char subject[TLS_SUBJECT_MAX];
        bool verified;
        tls_client_subject(s->tls, subject, sizeof(subject), &verified);
        log_msg(LOG_INFO, s->id, "TLS established: %s %s%s%s%s", tls_version(s->tls),
                tls_cipher(s->tls), subject[0] ? ", client certificate " : "", subject,
                subject[0] ? (verified ? " (verified)" : " (not verified)") : "");
        smtp_tls_ready(s, implicit);
        return;
    }
    case TLS_WANT_READ:
        ev_io_stop(s->srv->loop, &s->wio);
        return;
    case TLS_WANT_WRITE:
        ev_io_start(s->srv->loop, &s->wio);
        return;
    case TLS_CLOSED:
    case TLS_ERROR:
        break;
    }
    log_msg(LOG_INFO, s->id, "TLS handshake failed: %s", err);
    session_close(s, "TLS handshake failed");
}

void session_write(struct session *s, const char *p, size_t n)
{
    if (s->dead)
        return;
    if (buf_append(&s->out, p, n) < 0)   /* a client that never reads its replies, or OOM */
        session_close(s, buf_len(&s->out) + n > OUT_MAX ? "output backlog over limit"
                                                        : "out of memory for replies");
}

void session_touch(struct session *s)
{
    ev_timer_again(s->srv->loop, &s->idle);
}

void session_update_io(struct session *s)
{
    struct ev_loop *loop = s->srv->loop;
    bool want;
    if (s->dead)
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
            ev_io_start(s->srv->loop, &s->wio);
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
        ev_io_start(s->srv->loop, &s->wio);
        return 0;
    case TLS_WANT_READ:
        s->write_wants_read = true;
        session_update_io(s);
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

void session_flush(struct session *s)
{
    struct ev_loop *loop = s->srv->loop;

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
        ev_io_stop(loop, &s->wio);
    buf_shrink(&s->out);
    if (s->closing)
        session_close(s, NULL);
    else if (s->tls_state == STLS_STARTING && start_tls(s) < 0)
        session_close(s, "out of memory for TLS");
}

void session_settle(struct session *s)
{
    /* Take buffered commands while replies can be queued, then send them
     * all in one write: pipelined replies go out batched and in order. */
    if (buf_len(&s->in) > 0 && session_can_take(s))
        smtp_input(s);
    /* The client has finished sending: once everything it sent has been
     * answered (no verdict pending, no backlog holding input back), what is
     * left is an unfinished command or message; reply, then close. */
    if (s->eof && session_can_take(s)) {
        smtp_eof(s);
        s->closing = true;
    }
    if (!s->dead)
        session_flush(s);
    if (s->dead) {
        session_free(s);
        return;
    }
    buf_shrink(&s->in);
    session_update_io(s);
}

bool session_can_take(const struct session *s)
{
    return !s->dead && !s->closing && s->pending < 0 && buf_len(&s->out) < OUT_HIGH &&
           (s->tls_state == STLS_NONE || s->tls_state == STLS_ON);
}

void session_wait(struct session *s, bool waiting)
{
    if (waiting)
        ev_timer_stop(s->srv->loop, &s->idle);
    else if (!s->dead)
        ev_timer_again(s->srv->loop, &s->idle);
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
            ev_io_start(s->srv->loop, &s->wio);
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
    if (s->tls_state == STLS_HANDSHAKE)
        handshake(s);
    else
        receive(s);
    session_settle(s);
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
    session_settle(s);
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;
    if (s->tls_state == STLS_HANDSHAKE) {
        log_msg(LOG_INFO, s->id, "TLS handshake timed out (--tls-timeout)");
        session_close(s, "TLS handshake timed out");
    } else if (s->closing) {
        session_close(s, "client does not read its replies");
    } else {
        smtp_timeout(s, "timeout exceeded");
    }
    session_settle(s);
}

static void life_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;
    if (s->tls_state == STLS_HANDSHAKE)
        session_close(s, "session time limit exceeded in the TLS handshake");
    else
        smtp_timeout(s, "session time limit exceeded");
    session_settle(s);
}

void session_shutdown(struct session *s)
{
    if (s->tls_state == STLS_HANDSHAKE)
        session_close(s, "server stopping");
    else
        smtp_shutdown(s);
    session_settle(s);
}

void session_close(struct session *s, const char *why)
{
    if (s->dead)
        return;
    struct ev_loop *loop = s->srv->loop;
    s->dead = true;
    ev_io_stop(loop, &s->rio);
    ev_io_stop(loop, &s->wio);
    ev_timer_stop(loop, &s->idle);
    ev_timer_stop(loop, &s->life);
    s->reading = false;
    tls_conn_free(&s->tls);
    close(s->fd);
    s->fd = -1;
    s->srv->hooks->close(s->srv->hooks->ctx, s);
    log_msg(LOG_INFO, s->id, "disconnect from %s:%d%s%s messages=%lu duration=%.3fs", s->peer_host,
            s->peer_port, why ? ": " : "", why ? why : "", s->nmessages,
            ev_now(loop) - s->started);
}

void session_free(struct session *s)
{
    session_close(s, "closed by server");
    smtp_free(s);
    buf_free(&s->in);
    buf_free(&s->out);
    buf_free(&s->msg);
    server_session_gone(s->srv, s);
    free(s);
}

const char *session_id(const struct session *s) { return s->id; }
const char *session_server_id(const struct session *s) { return s->srv->cfg->id; }
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
const char *session_helo(const struct session *s) { return s->helo; }
bool session_esmtp(const struct session *s) { return s->esmtp; }
const char *session_sender(const struct session *s) { return s->sender; }
size_t session_nrecipients(const struct session *s) { return s->nrcpts; }
const char *session_recipient(const struct session *s, size_t i)
{
    return i < s->nrcpts ? s->rcpts[i] : NULL;
}
const char *session_message_id(const struct session *s) { return s->msgid; }
const char *session_user(const struct session *s) { return s->user; }
const char *session_tls_version(const struct session *s)
{
    return s->tls_state == STLS_ON ? tls_version(s->tls) : NULL;
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
void **session_hook_data(struct session *s) { return &s->hook_data; }
