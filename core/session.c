#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "smtp.h"

#define READ_CHUNK     16384
#define IN_MAX         (64 * 1024)   /* unprocessed input held at most */
#define OUT_MAX        (256 * 1024)  /* queued replies held at most */
#define OUT_HIGH       (64 * 1024)   /* stop taking commands above this */

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void write_cb(struct ev_loop *loop, ev_io *w, int revents);
static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void life_cb(struct ev_loop *loop, ev_timer *w, int revents);

int session_new(struct server *srv, int fd, const struct net_addr *peer)
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
    snprintf(s->id, sizeof(s->id), "%012lX", srv->next_id++);
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

    log_msg(LOG_INFO, s->id, "connect from %s:%d to %s:%d", s->peer_host, s->peer_port,
            s->local_host, s->local_port);
    ev_timer_again(loop, &s->idle);
    if (cfg->session_timeout > 0)
        ev_timer_start(loop, &s->life);
    smtp_start(s);
    session_settle(s);
    return 0;
}

void session_write(struct session *s, const char *p, size_t n)
{
    if (s->dead)
        return;
    if (buf_append(&s->out, p, n) < 0) {
        /* Only a client that never reads its replies gets here. */
        session_close(s, "output backlog over limit");
    }
}

void session_touch(struct session *s)
{
    ev_timer_again(s->srv->loop, &s->idle);
}

void session_update_io(struct session *s)
{
    struct ev_loop *loop = s->srv->loop;
    bool want = !s->dead && !s->closing && !s->eof && buf_len(&s->out) < OUT_HIGH &&
                buf_len(&s->in) < IN_MAX;
    if (want && !s->reading)
        ev_io_start(loop, &s->rio);
    else if (!want && s->reading)
        ev_io_stop(loop, &s->rio);
    s->reading = want;
}

void session_flush(struct session *s)
{
    struct ev_loop *loop = s->srv->loop;

    while (!s->dead && buf_len(&s->out) > 0) {
        ssize_t n = send(s->fd, buf_head(&s->out), buf_len(&s->out), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&s->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(loop, &s->wio);
            return;
        }
        session_close(s, n < 0 ? strerror(errno) : "send returned 0");
        return;
    }
    if (s->dead)
        return;
    ev_io_stop(loop, &s->wio);
    buf_shrink(&s->out);
    if (s->closing)
        session_close(s, NULL);
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
    return !s->dead && !s->closing && s->pending < 0 && buf_len(&s->out) < OUT_HIGH;
}

void session_wait(struct session *s, bool waiting)
{
    if (waiting)
        ev_timer_stop(s->srv->loop, &s->idle);
    else if (!s->dead)
        ev_timer_again(s->srv->loop, &s->idle);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;

    if (buf_reserve(&s->in, READ_CHUNK) < 0 && buf_reserve(&s->in, 1) < 0) {
        /* Full: wait until what is buffered has been processed. */
        session_update_io(s);
        return;
    }
    ssize_t n = recv(s->fd, buf_tail(&s->in), buf_room(&s->in), 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            buf_shrink(&s->in);
            return;
        }
        session_close(s, strerror(errno));
    } else if (n == 0) {
        s->eof = true;
    } else {
        buf_commit(&s->in, (size_t)n);
    }
    session_settle(s);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;
    session_settle(s);
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct session *s = w->data;
    (void)loop;
    (void)revents;
    if (s->closing) {
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
    smtp_timeout(s, "session time limit exceeded");
    session_settle(s);
}

void session_shutdown(struct session *s)
{
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
void **session_hook_data(struct session *s) { return &s->hook_data; }
