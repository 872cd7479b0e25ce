/*
 * smtp: the SMTP state machine (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
 * ENHANCEDSTATUSCODES, SMTPUTF8, STARTTLS and AUTH PLAIN/LOGIN).  Commands are data: one table pairs
 * each verb with the states it is allowed in and the function that runs it.
 * Every stage asks the hooks (hook.h) for a verdict; replies are queued on
 * the session and sent in one write when the buffered input is used up.
 */
#ifndef LUASMTPD_SMTP_H
#define LUASMTPD_SMTP_H

#include <stdbool.h>

struct session;

#define SMTP_SOFTWARE "luasmtpd"

void smtp_start(struct session *s);          /* a client connected */
void smtp_input(struct session *s);          /* take the buffered input */
void smtp_eof(struct session *s);            /* the client closed its side; all it sent is answered */
void smtp_timeout(struct session *s, const char *why);
void smtp_shutdown(struct session *s);       /* the server is stopping */
void smtp_free(struct session *s);           /* release transaction memory */
/* The TLS handshake succeeded: greet (implicit TLS) or start over after
 * STARTTLS. */
void smtp_tls_ready(struct session *s, bool implicit);

#endif
