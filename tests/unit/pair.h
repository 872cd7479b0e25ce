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
    if (server_adopt(srv, sv[0], &peer, false) < 0) {
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

#endif
