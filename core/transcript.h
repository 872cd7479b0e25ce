/*
 * Reading an SMTP client's transcript: the lines it sent and the lines the
 * server answered, in order, as they went over the wire.  What comes out
 * is the last final reply and the command it answered, and each refused
 * RCPT with its reply.  forward (lua/forward.c) feeds it libcurl's debug
 * lines; nothing of it trusts the server: every text is bounded, and a
 * RCPT is refused at most once.
 */
#ifndef LUASMTPD_TRANSCRIPT_H
#define LUASMTPD_TRANSCRIPT_H

#include <stdbool.h>
#include <stddef.h>

#define TRANSCRIPT_TEXT 512

struct transcript_refusal {
    struct transcript_refusal *next;
    char addr[TRANSCRIPT_TEXT];
    char reply[TRANSCRIPT_TEXT + 8];       /* "550 5.1.1 ..." */
};

struct transcript {
    char     cmd[16];                      /* the last command sent: "RCPT", "MAIL", ... */
    char     rcpt[TRANSCRIPT_TEXT];        /* its address, while a RCPT waits for its reply */
    int      code;                         /* the last final reply, or 0 */
    char     reply[TRANSCRIPT_TEXT];       /* its text, after the code */
    char     replied[16];                  /* the command it answered */
    struct transcript_refusal *refused;    /* newest first */
    bool     oom;                          /* a refusal could not be kept */
};

/* A piece of the transcript (one or more lines, sent by the client or
 * answered by the server). */
void transcript_feed(struct transcript *t, bool sent, const char *data, size_t size);
void transcript_free(struct transcript *t);

#endif
