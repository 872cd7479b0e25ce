/*
 * smtp_parse: the SMTP grammar, with no I/O and no globals.
 *
 * - smtp_parse_command(): a command line to a verb and its argument.
 * - smtp_parse_path(): "FROM:<path> params" / "TO:<path> params" by the
 *   RFC 5321 4.1.2 grammar (with the RFC 6531 UTF-8 extension), giving the
 *   address without angle brackets or source route and the ESMTP parameters.
 * - smtp_data_scan(): the DATA reader: dot-unstuffing and end-of-data
 *   detection, resumable at any byte.  Only <CRLF>.<CRLF> ends the data;
 *   a bare LF or bare CR never starts a line (no SMTP smuggling).
 */
#ifndef LUASMTPD_SMTP_PARSE_H
#define LUASMTPD_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define SMTP_LINE_MAX    512  /* command line with CRLF, RFC 5321 4.5.3.1.4 */
#define SMTP_PATH_MAX    256  /* path with angle brackets, 4.5.3.1.3 */
#define SMTP_LOCAL_MAX   64   /* local part, 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX  255  /* domain, 4.5.3.1.2 */
#define SMTP_PARAMS_MAX  16   /* ESMTP parameters on one MAIL or RCPT */

enum smtp_verb {
    SMTP_UNKNOWN = 0,
    SMTP_HELO, SMTP_EHLO, SMTP_MAIL, SMTP_RCPT, SMTP_DATA, SMTP_RSET,
    SMTP_NOOP, SMTP_QUIT, SMTP_VRFY, SMTP_EXPN, SMTP_HELP,
    SMTP_STARTTLS, SMTP_AUTH,   /* offered when configured (a certificate, on_auth) */
    SMTP_BDAT,                  /* CHUNKING, RFC 3030 */
    SMTP_ETRN, SMTP_TURN,       /* known, answered 502 */
    SMTP_VERB_COUNT
};

struct smtp_cmd {
    enum smtp_verb verb;
    const char *arg;      /* after the verb and its spaces; not NUL-terminated */
    size_t      arglen;   /* trailing spaces removed */
};

/* Never fails: an unrecognised verb gives SMTP_UNKNOWN. */
void smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);
const char *smtp_verb_name(enum smtp_verb verb);

struct smtp_param {
    const char *key;   size_t keylen;
    const char *value; size_t valuelen;   /* value NULL when absent */
};

struct smtp_params {
    size_t n;
    struct smtp_param p[SMTP_PARAMS_MAX];
};

enum smtp_path_flags {
    SMTP_PATH_NULL_OK       = 1 << 0, /* "<>" allowed (MAIL) */
    SMTP_PATH_POSTMASTER_OK = 1 << 1, /* "<Postmaster>" allowed (RCPT) */
};

enum smtp_path_status {
    SMTP_PATH_OK = 0,
    SMTP_PATH_BAD_PREFIX,   /* not "FROM:" / "TO:" followed by "<" */
    SMTP_PATH_BAD_ADDRESS,  /* the path breaks the grammar */
    SMTP_PATH_TOO_LONG,     /* path, local part or domain over its limit */
    SMTP_PATH_BAD_PARAMS,   /* parameter syntax, or too many */
};

struct smtp_path {
    char   addr[SMTP_PATH_MAX + 1]; /* NUL-terminated; "" for the null path */
    size_t addrlen;
    bool   utf8;                    /* holds non-ASCII (needs SMTPUTF8) */
    struct smtp_params params;
};

/* arg: the command argument ("FROM:<a@b> SIZE=10"); prefix: "FROM:" or "TO:".
 * Spaces after the colon are tolerated, as most servers do. */
enum smtp_path_status smtp_parse_path(const char *arg, size_t len, const char *prefix,
                                      unsigned flags, struct smtp_path *path);

/* The parameter named `key` (case-insensitive), or NULL when absent; its
 * value is NULL when it was given without one. */
const struct smtp_param *smtp_param_find(const struct smtp_params *ps, const char *key);

/* Case-insensitive comparison of a byte range with a C string. */
bool smtp_ieq(const char *p, size_t n, const char *s);

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
bool smtp_utf8_valid(const char *p, size_t n);
/* Length of the well-formed UTF-8 sequence at p (a non-ASCII lead byte,
 * n bytes available), or 0. */
size_t smtp_utf8_seq(const unsigned char *p, size_t n);

/* The DATA reader. */
struct smtp_data {
    int    state;
    size_t size;        /* message bytes after unstuffing, counted past max too */
    size_t lines;       /* CRLF-terminated lines seen (progress for timeouts) */
    bool   overflow;    /* more than the sink's cap arrived, or it could not grow: it is freed */
    bool   no_budget;   /* ...because the memory budget had no room (buf.h) */
};

void smtp_data_init(struct smtp_data *d);
/*
 * Scan in[0..len): unstuffed message bytes go to `sink` while it has room
 * (its cap is the size limit); beyond it they are counted and dropped.
 * Returns the bytes consumed; sets *done_r when the terminating
 * <CRLF>.<CRLF> has been consumed (the message then ends with its CRLF).
 */
size_t smtp_data_scan(struct smtp_data *d, const char *in, size_t len,
                      struct buf *sink, bool *done_r);

/* BDAT's argument: "SIZE" or "SIZE LAST" (RFC 3030), SIZE decimal, at
 * most 18 digits.  false on anything else. */
bool smtp_parse_bdat(const char *arg, size_t n, unsigned long long *size_r, bool *last_r);

/* RFC 3461 4 xtext: "+XX" for a byte, other characters '!' to '~' but
 * '+' and '=' as they are.  Decode s[0, n) into out (NUL-terminated, at
 * most size - 1 bytes); false on bad syntax or when it does not fit. */
bool smtp_xtext_decode(const char *s, size_t n, char *out, size_t size);
/* The C string s as xtext into out; false when it does not fit. */
bool smtp_xtext_encode(const char *s, char *out, size_t size);

/* DSN (RFC 3461). */
#define SMTP_ENVID_MAX 100          /* ENVID=, as sent */
#define SMTP_ORCPT_MAX 500          /* ORCPT=, as sent */
enum smtp_dsn_ret { SMTP_RET_NONE, SMTP_RET_FULL, SMTP_RET_HDRS };
#define SMTP_NOTIFY_NEVER   1u
#define SMTP_NOTIFY_SUCCESS 2u
#define SMTP_NOTIFY_FAILURE 4u
#define SMTP_NOTIFY_DELAY   8u
/* NOTIFY=: "NEVER" alone, or a comma list of SUCCESS, FAILURE, DELAY, each
 * once; false on anything else. */
bool smtp_parse_notify(const char *s, size_t n, unsigned *bits_r);
/* The keyword of one SMTP_NOTIFY_* bit ("SUCCESS"), NULL for another. */
const char *smtp_notify_name(unsigned bit);
/* xtext decoded to printable text (what ENVID and ORCPT carry: UTF-8 kept,
 * control characters refused); false on bad syntax. */
bool smtp_dsn_text(const char *s, size_t n, char *out, size_t size);

#endif
