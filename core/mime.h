/*
 * mime: the message extractor.  RFC 5322 headers (unfolded, RFC 2047
 * encoded words decoded to UTF-8), RFC 2045-2046 MIME structure (multipart
 * at any depth, message/rfc822 parsed as a message of its own), RFC 2231
 * parameters, base64 and quoted-printable bodies, charsets to UTF-8.
 *
 * mime_parse() reads a whole message in one pass over its lines, keeping a
 * stack of the open multipart boundaries: a delimiter line of any enclosing
 * multipart ends every part inside it, the way RFC 2046 and mail readers
 * read broken nesting.  The result is a tree of parts whose bodies are
 * offsets into the caller's message (never copied); header values are
 * decoded at parse time into an arena freed with the tree.  Bodies are
 * decoded on demand with mime_decode().
 *
 * Nothing here fails on bad input: a malformed message gives the best tree
 * that can be read from it, and a message past a limit keeps what was read
 * before the limit, with `cut` naming the limit.  The parser touches no
 * I/O and no globals; it allocates only from its arena.
 */
#ifndef LUASMTPD_MIME_H
#define LUASMTPD_MIME_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "buf.h"
#include "charset.h"

#define MIME_DEPTH_MAX       32          /* nesting of parts below the message */
#define MIME_PARTS_MAX       1000        /* parts, the message itself included */
#define MIME_HEADERS_MAX     10000       /* header fields in all parts */
#define MIME_HEADER_SIZE_MAX (64 * 1024) /* one header field, its folds included */

struct mime_limits {
    unsigned depth, parts, headers;
    size_t   header_size;
};

extern const struct mime_limits mime_default_limits;

/* The first limit a message went past. */
enum mime_cut { MIME_CUT_NONE, MIME_CUT_DEPTH, MIME_CUT_PARTS, MIME_CUT_HEADERS,
                MIME_CUT_HEADER_SIZE };

enum mime_encoding { MIME_7BIT, MIME_8BIT, MIME_BINARY, MIME_QUOTED_PRINTABLE, MIME_BASE64,
                     MIME_UUENCODE, MIME_ENCODING_OTHER };

struct mime_header {
    struct mime_header *next;     /* in the order they came */
    const char *name;             /* lower case */
    const char *value;            /* unfolded, trimmed, decoded, valid UTF-8; an
                                     address header in addr_render's form */
    const struct address *addresses;  /* the message's own first From, To, ...: */
    size_t naddresses;                /* its mailboxes (addr.h); else NULL, 0 */
};

struct mime_part {
    struct mime_part   *parent, *next, *child, *last_child;
    struct mime_header *headers, *last_header;
    unsigned    depth;            /* 0 for the message itself */
    const char *type;             /* "text/plain": lower case, RFC 2045 default */
    const char *charset;          /* lower case, or NULL when not given */
    const char *boundary;         /* of a multipart, or NULL */
    const char *disposition;      /* "attachment", "inline" (lower case) or NULL */
    const char *filename;         /* disposition filename, else type name, decoded */
    const char *content_id;       /* as given ("<id@host>"), or NULL */
    enum mime_encoding encoding;
    bool        container;        /* its body was parsed into child parts */
    size_t      start;            /* the part's headers in the message */
    size_t      body, end;        /* its body: message[body, end) */
};

struct mime {
    const char       *msg;
    size_t            len;
    struct mime_part *root;
    unsigned          nparts, nheaders;
    enum mime_cut     cut;
    struct charset_cache charsets;
    struct arena     *arena;
};

/* Parse msg[0, len), which must outlive the result.  lim NULL: the
 * defaults.  0, or -1 when memory ran out. */
int  mime_parse(const char *msg, size_t len, const struct mime_limits *lim, struct mime **m_r);
void mime_free(struct mime **m);

const char *mime_cut_name(enum mime_cut cut);
/* The value of the first header `name` (lower case), or NULL. */
const char *mime_header(const struct mime_part *p, const char *name);
/* The part after p in document order (depth first), or NULL; with
 * descend false, p's own children are passed over. */
const struct mime_part *mime_next(const struct mime_part *p, bool descend);
/* Is p an attached message parsed into its own part (message/rfc822)? */
bool mime_is_message(const struct mime_part *p);
/* The parts a mail reader shows: the first text/plain and the first
 * text/html part that are not attachments, looking through multiparts but
 * not into attached messages.  Either may be NULL. */
void mime_bodies(const struct mime *m, const struct mime_part **text_r,
                 const struct mime_part **html_r);
/* Is p delivered as an attachment: a part with content of its own (not a
 * multipart) that is neither of the bodies above, nor empty and without
 * headers. */
bool mime_is_attachment(const struct mime_part *p, const struct mime_part *text,
                        const struct mime_part *html);
/* Append p's body with its transfer encoding undone.  As text, it is also
 * converted from its charset to UTF-8 and CRLF becomes LF.  0 or -1 when
 * out cannot grow. */
int  mime_decode(struct mime *m, const struct mime_part *p, bool as_text, struct buf *out);

/* A uuencoded file inside a text body, as mail readers find one: a line
 * "begin MODE NAME" (MODE three or four octal digits), lines of uuencoded
 * data, and a line "end".  Offsets are into the text searched. */
struct mime_uu {
    size_t start, end;            /* the block, its begin and end lines included */
    size_t data, data_end;        /* its data lines */
    const char *name;             /* its file name (not NUL-terminated), */
    size_t name_len;              /* 0 when the begin line gives none */
};
/* The first block in text[from, len); false when there is none. */
bool mime_uu_block(const char *text, size_t len, size_t from, struct mime_uu *b);
/* Append the bytes of block b of text.  0 or -1. */
int  mime_uu_decode(const char *text, const struct mime_uu *b, struct buf *out);

#endif
