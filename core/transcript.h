/*
 * Reading an SMTP client's transcript: the lines it sent and the lines the
 * server answered, in order, as they went over the wire.  What comes out
 * is the last final reply and the command it answered, and each refused
 * RCPT with its reply, and the extensions the server's last EHLO reply
 * offered.  forward (lua/forward.c) feeds it libcurl's debug lines while
 * curl logs in, then the commands it sends itself and what it reads;
 * nothing of it trusts the server: every text is bounded, and a RCPT is
 * refused at most once.
 */
#ifndef LUASMTPD_TRANSCRIPT_H
#define LUASMTPD_TRANSCRIPT_H

#include <stdbool.h>
#include <stddef.h>

#define TRANSCRIPT_TEXT 512

/* The EHLO keywords (RFC 5321 4.1.1.1) a client acts on. */
#define TRANSCRIPT_SIZE       1u     /* RFC 1870 */
#define TRANSCRIPT_8BITMIME   2u     /* RFC 6152 */
#define TRANSCRIPT_SMTPUTF8   4u     /* RFC 6531 */
#define TRANSCRIPT_DSN        8u     /* RFC 3461 */

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
    unsigned ext;                          /* TRANSCRIPT_* of the last EHLO reply */
    unsigned ehlo_line;                    /* lines of the EHLO reply so far */
};

/* What a line the server sent is: 0 not a reply ("250" then a space, a
 * '-', or nothing, before the line end; codes 200 to 599), 1 a line of a
 * multiline reply, 2 its last line. */
int  transcript_line_kind(const char *line, size_t n);

/* A piece of the transcript (one or more lines, sent by the client or
 * answered by the server). */
void transcript_feed(struct transcript *t, bool sent, const char *data, size_t size);
void transcript_free(struct transcript *t);

#endif
