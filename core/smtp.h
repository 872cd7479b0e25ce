/*
 * smtp: the SMTP protocol (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
 * ENHANCEDSTATUSCODES, SMTPUTF8, STARTTLS and AUTH PLAIN/LOGIN) over a
 * session.  Its state (struct smtp, with the transaction apart in struct
 * smtp_tx) is private to smtp.c.  Commands are data: one table pairs each
 * verb with the states it is allowed in and the function that runs it;
 * every stage asks the hooks (hook.h) for a verdict, and a table of stages
 * holds each one's replies and finish work.  Replies are queued on the
 * session and sent in one write when the buffered input is used up.
 */
#ifndef LUASMTPD_SMTP_H
#define LUASMTPD_SMTP_H

#include "session.h"

/* The protocol of the server's sessions; its ctx is the const struct
 * hooks * that decides each stage. */
extern const struct proto smtp_proto;

#endif
