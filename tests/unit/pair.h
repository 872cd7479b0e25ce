/* Sessions over socketpairs on a real libev loop, for the unit tests that
 * drive the core as a client would. */
#ifndef LUASMTPD_TEST_PAIR_H
#define LUASMTPD_TEST_PAIR_H

#include <ev.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

static void pair_stop_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ONE);
}

/* Run the loop for `seconds`. */
static inline void run_for(struct ev_loop *loop, double seconds)
{
    ev_timer t;
    ev_timer_init(&t, pair_stop_cb, seconds, 0.);
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    ev_timer_stop(loop, &t);
}

static void pair_tick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

/* Run the loop until done(arg) holds or `seconds` have passed: done(arg). */
static inline bool run_until(struct ev_loop *loop, bool (*done)(void *arg), void *arg,
                             double seconds)
{
    ev_timer tick;   /* wakes the loop to look again */
    ev_timer_init(&tick, pair_tick_cb, 0.002, 0.002);
    ev_timer_start(loop, &tick);
    double deadline = ev_time() + seconds;
    bool ok;
    while (!(ok = done(arg)) && ev_time() < deadline)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    return ok;
}

/* A client end: a new session of srv on the other end of a socketpair;
 * -1 when either could not be made. */
static inline int connect_client(struct server *srv)
{
    int sv[2];
    struct net_addr peer;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        return -1;
    memset(&peer, 0, sizeof(peer));
    peer.ss.ss_family = AF_UNIX;
    if (server_adopt(srv, sv[0], &peer, 0) < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    return sv[1];
}

/* Everything the server has sent so far, appended to out; true once it
 * has closed the connection. */
static inline bool drain(int fd, char *out, size_t outsz)
{
    size_t o = strlen(out);
    ssize_t n = -1;
    while (o < outsz - 1 && (n = read(fd, out + o, outsz - 1 - o)) > 0)
        o += (size_t)n;
    out[o] = '\0';
    return n == 0;
}

struct reply_wait {
    int         fd;
    char       *out;
    size_t      outsz;
    const char *until;   /* NULL: until the server closes */
    bool        closed;
};

static inline bool replied(void *arg)
{
    struct reply_wait *w = arg;
    w->closed = w->closed || drain(w->fd, w->out, w->outsz);
    return w->closed || (w->until && strstr(w->out, w->until));
}

/* Read what the server sends on fd into out (appending) until `until` is
 * in it or the server has closed, for `seconds` at most: true then. */
static inline bool wait_reply(struct ev_loop *loop, int fd, char *out, size_t outsz,
                              const char *until, double seconds)
{
    struct reply_wait w = { fd, out, outsz, until, false };
    return run_until(loop, replied, &w, seconds);
}

#endif
