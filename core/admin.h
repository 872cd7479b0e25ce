/*
 * admin: the HTTP listener of --http (docs/console.md): the console's page,
 * its JSON API and event stream (core/console.h), and GET /metrics.
 *
 * GNU libmicrohttpd parses HTTP; it runs in the server's own event loop
 * (its epoll descriptor watched by an ev_io, its timeouts by an ev_timer),
 * with no thread of its own, so a request is served between two SMTP
 * events and never holds one up for long.
 */
#ifndef LUASMTPD_ADMIN_H
#define LUASMTPD_ADMIN_H

#include <ev.h>
#include <stddef.h>

#include "config.h"

struct admin;

/* Listen on cfg->http: 0 (with *a_r NULL when --http is off), or -1 with
 * err.  Call before dropping privileges, like the SMTP listeners. */
int  admin_start(struct admin **a_r, struct ev_loop *loop, const struct config *cfg, char *err,
                 size_t errsz);
void admin_stop(struct admin **a);

#endif
