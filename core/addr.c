#include "addr.h"

#include <string.h>

#include "charset.h"

/* What the list holds, by offsets into l->text (0 is "", the empty string). */
struct addr_item {
    size_t name, address, group;
    unsigned group_id;            /* 0: not in a group; groups count from 1 */
    bool mailbox;                 /* false: stands for an empty group */
};

enum tok_kind { TOK_ATOM, TOK_QUOTED, TOK_LITERAL, TOK_COMMENT, TOK_SPECIAL };

struct tok {
    size_t at, len;               /* quoted string, comment: the inside, still escaped */
    enum tok_kind kind;
    bool space;                   /* blanks or a comment came before it */
};

struct reader {
    struct addr_list *l;
    const char *s;
    const struct tok *t;
    size_t nt;
    addr_decode_fn *decode;
    void *ctx;
    unsigned groups, group_id;    /* groups seen; the one open (0: none) */
    size_t group_name;
    bool group_members;
};

/* RFC 5322's specials (a table, not a search, for every byte of a header). */
static const bool specials[128] = {
    ['('] = true, [')'] = true, ['<'] = true, ['>'] = true, ['['] = true, [']'] = true,
    [':'] = true, [';'] = true, ['@'] = true, ['\\'] = true, [','] = true, ['"'] = true,
};

/* RFC 5322 atext, with '.' (dot-atoms and obsolete phrases lex as one
 * word) and the bytes of UTF-8 (RFC 6532). */
static inline bool is_atext(unsigned char c)
{
    return c >= 0x80 || (c > ' ' && c < 127 && !specials[c]);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void addr_list_init(struct addr_list *l, size_t max)
{
    buf_init(&l->items, max);
    buf_init(&l->text, max);
    buf_init(&l->tokens, max);
    buf_init(&l->phrase, max);
    buf_init(&l->scratch, max);
}

void addr_list_free(struct addr_list *l)
{
    buf_free(&l->items);
    buf_free(&l->text);
    buf_free(&l->tokens);
    buf_free(&l->phrase);
    buf_free(&l->scratch);
}

/* ---- tokens ---- */

/* The end of a quoted string or comment starting at s[i] (just inside its
 * opening character): the index of the closing one, or n. */
static size_t close_quoted(const char *s, size_t i, size_t n)
{
    while (i < n && s[i] != '"') {
        if (s[i] == '\\' && i + 1 < n)
            i++;
        i++;
    }
    return i;
}

static size_t close_comment(const char *s, size_t i, size_t n)
{
    for (int depth = 1; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n)
            i++;
        else if (s[i] == '(')
            depth++;
        else if (s[i] == ')' && --depth == 0)
            return i;
    }
    return n;
}

static int lex(struct addr_list *l, const char *s, size_t n)
{
    /* a '[' after the last ']' is never closed: found without a search, so
     * that many of them stay linear */
    const char *last_close = memrchr(s, ']', n);
    bool space = false;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        struct tok t = { .at = i, .len = 1, .kind = TOK_SPECIAL, .space = space };
        size_t next = i + 1;
        if (is_blank((char)c)) {
            space = true;
            i++;
            continue;
        }
        if (c == '(' || c == '"') {
            size_t e = c == '(' ? close_comment(s, i + 1, n) : close_quoted(s, i + 1, n);
            t.kind = c == '(' ? TOK_COMMENT : TOK_QUOTED;
            t.at = i + 1;
            t.len = e - (i + 1);
            next = e < n ? e + 1 : n;
        } else if (c == '[' && last_close && s + i < last_close) {   /* an unclosed one is a special */
            next = (size_t)((const char *)memchr(s + i, ']', n - i) - s) + 1;
            t.kind = TOK_LITERAL;
            t.len = next - i;
        } else if (is_atext(c)) {
            while (next < n && is_atext((unsigned char)s[next]))
                next++;
            t.kind = TOK_ATOM;
            t.len = next - i;
        }
        if (buf_append(&l->tokens, &t, sizeof(t)) < 0)
            return -1;
        space = t.kind == TOK_COMMENT;
        i = next;
    }
    return 0;
}

static bool is_special(const struct tok *t, const char *s, char c)
{
    return t->kind == TOK_SPECIAL && s[t->at] == c;
}

static bool is_word(const struct tok *t)
{
    return t->kind == TOK_ATOM || t->kind == TOK_QUOTED || t->kind == TOK_LITERAL;
}

/* ---- text ---- */

/* Append s[0, n), a NUL as U+FFFD (the strings are C strings), and with
 * unescape the backslashes of a quoted string or comment undone. */
static int append(struct buf *out, const char *s, size_t n, bool unescape)
{
    if (!unescape && !memchr(s, '\0', n))
        return buf_append(out, s, n);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        bool escape = unescape && s[i] == '\\' && i + 1 < n;
        if (s[i] != '\0' && !escape)
            continue;
        if (buf_append(out, s + run, i - run) < 0)
            return -1;
        if (escape)
            i++;                  /* the escaped character, taken as it is */
        run = i;
        if (s[i] == '\0') {
            if (buf_append(out, "\xEF\xBF\xBD", 3) < 0)
                return -1;
            run = i + 1;
        }
    }
    return buf_append(out, s + run, n - run);
}

/* The words and specials of t[a, b) as one text into r->l->phrase, a
 * blank between two where the header had blanks or a comment; comments
 * are left out. */
static int join(struct reader *r, size_t a, size_t b)
{
    struct buf *out = &r->l->phrase;
    buf_clear(out);
    for (size_t i = a; i < b; i++) {
        const struct tok *t = &r->t[i];
        if (t->kind == TOK_COMMENT)
            continue;
        if (t->space && buf_len(out) && buf_append(out, " ", 1) < 0)
            return -1;
        if (append(out, r->s + t->at, t->len, t->kind == TOK_QUOTED) < 0)
            return -1;
    }
    return 0;
}

/* Add s[0, n), which holds no NUL (append() and add_decoded() see to
 * that), to the strings as valid UTF-8, NUL-terminated: a byte that is not
 * UTF-8 becomes U+FFFD, and a line break or tab a blank, so that the
 * string is one line; blanks at its ends are dropped.  *off_r is where it
 * went (0 when it is empty). */
static int add_text(struct addr_list *l, const char *s, size_t n, size_t *off_r)
{
    while (n && is_blank(*s)) {
        s++;
        n--;
    }
    while (n && is_blank(s[n - 1]))
        n--;
    *off_r = 0;
    if (n == 0)
        return 0;
    size_t from = buf_len(&l->text);
    if (utf8_append_valid(&l->text, s, n) < 0)
        return -1;
    size_t added = buf_len(&l->text) - from;
    for (char *c = buf_tail(&l->text) - added, *end = buf_tail(&l->text); c < end; c++)
        if (is_blank(*c))
            *c = ' ';
    *off_r = from;
    return buf_append(&l->text, "", 1);
}

/* A display name, group name or comment as its user reads it: the text in
 * r->l->phrase with its encoded words decoded. */
static int add_decoded(struct reader *r, size_t *off_r)
{
    struct addr_list *l = r->l;
    if (r->decode == NULL || !memmem(buf_head(&l->phrase), buf_len(&l->phrase), "=?", 2))
        return add_text(l, buf_head(&l->phrase), buf_len(&l->phrase), off_r);
    buf_clear(&l->scratch);
    if (r->decode(r->ctx, buf_head(&l->phrase), buf_len(&l->phrase), &l->scratch) < 0)
        return -1;
    struct buf *text = &l->scratch;
    if (memchr(buf_head(text), '\0', buf_len(text))) {   /* =00 decoded */
        buf_clear(&l->phrase);
        if (append(&l->phrase, buf_head(text), buf_len(text), false) < 0)
            return -1;
        text = &l->phrase;
    }
    return add_text(l, buf_head(text), buf_len(text), off_r);
}

static int add_phrase(struct reader *r, size_t a, size_t b, size_t *off_r)
{
    return join(r, a, b) < 0 ? -1 : add_decoded(r, off_r);
}

/* The last comment of t[a, b), decoded: the name of a bare address. */
static int add_comment(struct reader *r, size_t a, size_t b, size_t *off_r)
{
    *off_r = 0;
    for (size_t i = b; i > a; i--) {
        const struct tok *t = &r->t[i - 1];
        if (t->kind != TOK_COMMENT)
            continue;
        buf_clear(&r->l->phrase);
        if (append(&r->l->phrase, r->s + t->at, t->len, true) < 0)
            return -1;
        return add_decoded(r, off_r);
    }
    return 0;
}

static bool is_dot_atom(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_atext((unsigned char)s[i]) || (s[i] == '.' && s[i + 1] == '.'))
            return false;
    return true;
}

/* Append s[0, n) as a quoted string. */
static int quote(struct buf *out, const char *s, size_t n)
{
    if (buf_append(out, "\"", 1) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((s[i] == '"' || s[i] == '\\') && buf_append(out, "\\", 1) < 0)
            return -1;
        else if (buf_append(out, s + i, 1) < 0)
            return -1;
    return buf_append(out, "\"", 1);
}

/* The address t[a, at) "@" t[at + 1, b) (at == b: no '@'), never decoded:
 * the local part as a dot-atom when it is one, else quoted; the domain's
 * pieces joined, blanks and comments left out. */
static int add_address(struct reader *r, size_t a, size_t at, size_t b, size_t *off_r)
{
    struct addr_list *l = r->l;
    if (join(r, a, at) < 0)
        return -1;
    struct buf *out = &l->phrase;   /* a dot-atom local part stays where join put it */
    const char *local = buf_head(out);
    size_t local_len = buf_len(out);
    if (local_len == 0 && at == b) {  /* <> */
        *off_r = 0;
        return 0;
    }
    if (local_len && !is_dot_atom(local, local_len)) {
        out = &l->scratch;
        buf_clear(out);
        if (quote(out, local, local_len) < 0)
            return -1;
    }
    if (at < b && buf_append(out, "@", 1) < 0)
        return -1;
    for (size_t i = at + 1; i < b; i++) {
        const struct tok *t = &r->t[i];
        if (t->kind != TOK_COMMENT && append(out, r->s + t->at, t->len, false) < 0)
            return -1;
    }
    return add_text(l, buf_head(out), buf_len(out), off_r);
}

/* ---- the list ---- */

static int push(struct reader *r, size_t name, size_t address, bool mailbox)
{
    struct addr_item it = { .name = name, .address = address, .mailbox = mailbox,
                            .group = r->group_id ? r->group_name : 0, .group_id = r->group_id };
    if (mailbox && r->group_id)
        r->group_members = true;
    return buf_append(&r->l->items, &it, sizeof(it));
}

static bool dot_at(const struct reader *r, const struct tok *t, bool end)
{
    return t->len && r->s[end ? t->at + t->len - 1 : t->at] == '.';
}

/* The end of the domain after the '@' at t[at]: its atoms and literals,
 * comments passed over, up to a blank that does not stand by a dot
 * ("example .com" is one obsolete domain, "a@b c" ends at b). */
static size_t domain_end(const struct reader *r, size_t at, size_t b)
{
    const struct tok *t = r->t, *prev = NULL;
    size_t end = at + 1;
    for (; end < b; end++) {
        if (t[end].kind == TOK_COMMENT)
            continue;
        if ((t[end].kind != TOK_ATOM && t[end].kind != TOK_LITERAL) ||
            (prev && t[end].space && !dot_at(r, &t[end], false) && !dot_at(r, prev, true)))
            break;
        prev = &t[end];
    }
    return end;
}

/* One element of the list, t[a, b): a mailbox, or nothing when it holds
 * only comments. */
static int element(struct reader *r, size_t a, size_t b)
{
    const struct tok *t = r->t;
    const char *s = r->s;
    size_t name = 0, address = 0, lt = b, at = b;

    for (size_t i = a; i < b && lt == b; i++)
        if (is_special(&t[i], s, '<'))
            lt = i;
    if (lt < b) {                 /* [phrase] <[route:]addr-spec> */
        size_t gt = lt + 1, from = lt + 1;
        while (gt < b && !is_special(&t[gt], s, '>'))
            gt++;
        if (from < gt && is_special(&t[from], s, '@'))   /* obs-route "@a,@b:" */
            for (size_t i = from; i < gt; i++)
                if (is_special(&t[i], s, ':'))
                    from = i + 1;
        for (size_t i = from; i < gt; i++)
            if (is_special(&t[i], s, '@'))
                at = i;
        if (at > gt)
            at = gt;
        if (add_phrase(r, a, lt, &name) < 0 ||
            add_address(r, from, at, at < gt ? domain_end(r, at, gt) : gt, &address) < 0)
            return -1;
        return push(r, name, address, true);
    }
    /* [phrase] local@domain, or a lone word */
    bool words = false;
    for (size_t i = a; i < b; i++) {
        words |= t[i].kind != TOK_COMMENT;
        if (is_special(&t[i], s, '@'))
            at = i;
    }
    if (!words)
        return 0;
    size_t local = a, end = b;
    if (at < b) {
        /* the local part: what stands right before the last '@', up to a blank */
        for (local = at; local > a && (is_word(&t[local - 1]) || is_special(&t[local - 1], s, '@') ||
                                       t[local - 1].kind == TOK_COMMENT);)
            if (t[--local].space && t[local].kind != TOK_COMMENT)
                break;
        end = domain_end(r, at, b);
    }
    if (add_phrase(r, a, local, &name) < 0 || add_address(r, local, at < b ? at : end, end, &address) < 0)
        return -1;
    if (name == 0 && address != 0 && add_comment(r, a, b, &name) < 0)   /* x@y (Name) */
        return -1;
    return push(r, name, address, true);
}

static int close_group(struct reader *r)
{
    int rc = r->group_members ? 0 : push(r, 0, 0, false);
    r->group_id = 0;
    return rc;
}

int addr_parse(struct addr_list *l, const char *s, size_t n, addr_decode_fn *decode, void *ctx)
{
    buf_clear(&l->items);
    buf_clear(&l->text);
    buf_clear(&l->tokens);
    if (buf_append(&l->text, "", 1) < 0 || lex(l, s, n) < 0)
        return -1;
    struct reader r = { .l = l, .s = s, .t = (const struct tok *)(const void *)buf_head(&l->tokens),
                        .nt = buf_len(&l->tokens) / sizeof(struct tok), .decode = decode, .ctx = ctx };
    size_t a = 0;
    bool angle = false, at = false;
    for (size_t i = 0; i < r.nt; i++) {
        const struct tok *t = &r.t[i];
        if (t->kind != TOK_SPECIAL)
            continue;
        char c = s[t->at];
        if (angle) {
            angle = c != '>';
            continue;
        }
        if (c == '<') {
            angle = true;
        } else if (c == '@') {
            at = true;
        } else if (c == ',' || c == ';') {
            if (element(&r, a, i) < 0 || (c == ';' && r.group_id && close_group(&r) < 0))
                return -1;
            a = i + 1;
            at = false;
        } else if (c == ':' && !r.group_id && !at) {   /* display-name ":" starts a group */
            r.group_id = ++r.groups;
            r.group_members = false;
            if (add_phrase(&r, a, i, &r.group_name) < 0)
                return -1;
            a = i + 1;
        }
    }
    if (element(&r, a, r.nt) < 0 || (r.group_id && close_group(&r) < 0))
        return -1;
    return 0;
}

bool addr_next(const struct addr_list *l, size_t *i, struct address *a)
{
    const struct addr_item *it = (const struct addr_item *)(const void *)buf_head(&l->items);
    const char *text = buf_head(&l->text);
    for (size_t k = buf_len(&l->items) / sizeof(*it); *i < k; (*i)++) {
        if (!it[*i].mailbox)      /* an empty group's place */
            continue;
        *a = (struct address){ .name = text + it[*i].name, .address = text + it[*i].address,
                               .group = it[*i].group_id ? text + it[*i].group : NULL };
        (*i)++;
        return true;
    }
    return false;
}

/* ---- the canonical text ---- */

/* A display or group name: as atoms when it reads back so (blanks between
 * words are one blank then), else quoted. */
static int render_phrase(struct buf *out, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool special = c < 128 && (c < ' ' || c == 127 || specials[c] || c == '.');
        if (special || (c == ' ' && s[i + 1] == ' '))
            return quote(out, s, n);
    }
    return buf_append(out, s, n);
}

/* Can the address stand without angle brackets and read back the same:
 * one '@' at most and no blank or special outside its quoted string and
 * domain literal. */
static bool bare(const char *s)
{
    int ats = 0;
    for (; *s; s++) {
        if (*s == '"' || *s == '[') {
            char close = *s == '"' ? '"' : ']';
            for (s++; *s && *s != close; s++)
                if (close == '"' && *s == '\\' && s[1])
                    s++;
            if (!*s)
                return false;
        } else if (*s == '@') {
            ats++;
        } else if (!is_atext((unsigned char)*s)) {
            return false;
        }
    }
    return ats <= 1;
}

int addr_render(const struct addr_list *l, struct buf *out)
{
    const struct addr_item *it = (const struct addr_item *)(const void *)buf_head(&l->items);
    const char *text = buf_head(&l->text);
    unsigned group = 0, members = 0;
    bool any = false;
    int rc = 0;

    for (size_t i = 0, k = buf_len(&l->items) / sizeof(*it); i < k && rc == 0; i++, it++) {
        if (it->group_id != group) {
            if (group)
                rc |= buf_append(out, ";", 1);
            group = it->group_id;
            if (group) {
                if (any)
                    rc |= buf_append(out, ", ", 2);
                rc |= render_phrase(out, text + it->group);
                rc |= buf_append(out, ":", 1);
                any = true;
                members = 0;
            }
        }
        if (!it->mailbox)
            continue;
        if (group)
            rc |= members++ ? buf_append(out, ", ", 2) : buf_append(out, " ", 1);
        else if (any)
            rc |= buf_append(out, ", ", 2);
        any = true;
        const char *name = text + it->name, *address = text + it->address;
        if (*name) {
            rc |= render_phrase(out, name);
            rc |= buf_append(out, " ", 1);
        }
        if (*name || !*address || !bare(address)) {
            rc |= buf_append(out, "<", 1);
            rc |= buf_append(out, address, strlen(address));
            rc |= buf_append(out, ">", 1);
        } else {
            rc |= buf_append(out, address, strlen(address));
        }
    }
    if (group && rc == 0)
        rc = buf_append(out, ";", 1);
    return rc < 0 ? -1 : 0;
}
