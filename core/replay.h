/*
 * replay: one message through the hooks without a network.  A session of
 * the real state machine is served over a socketpair and driven by a small
 * client (EHLO, MAIL, RCPT..., DATA, the message, QUIT); the dialogue goes
 * to stdout.  The way to develop and test rules.
 */
#ifndef LUASMTPD_REPLAY_H
#define LUASMTPD_REPLAY_H

#include <ev.h>

#include "config.h"

struct hooks;

#define REPLAY_MAX_TO 64

struct replay_opts {
    const char *file;            /* the message (.eml); "-" for stdin */
    const char *from;            /* NULL: replay@localhost */
    const char *to[REPLAY_MAX_TO];
    int nto;                     /* 0: postmaster@localhost */
};

/* 0 when the message would be accepted, 1 when refused, 2 when the file
 * cannot be read or the replay cannot run. */
int replay_run(struct ev_loop *loop, const struct config *cfg, const struct hooks *hooks,
               const struct replay_opts *opts);

#endif
