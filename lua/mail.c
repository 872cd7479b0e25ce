/* The parsed message as the plain table on_mail receives (docs/hooks.md,
 * "The mail table"): strings, numbers, booleans and tables only, so
 * cjson.encode(mail) works. */
#include <limits.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "internal.h"
#include "smtp_parse.h"
#include "session.h"
#include "mime.h"

/* A line of mail.body longer than this is cut (mail.truncated says so). */
#define MAIL_LINE_MAX 8192

/* A string of this message's: pushed with its length, not with
 * lua_pushstring, whose cache of C pointers (a hit for a constant key)
 * such a string would miss and then evict a key from. */
static void push_str(lua_State *L, const char *s)
{
    lua_pushlstring(L, s, strlen(s));
}

static void set_str(lua_State *L, const char *key, const char *value)
{
    if (value == NULL)
        return;
    push_str(L, value);
    lua_setfield(L, -2, key);
}

/* headers: name -> first value; header_list: every field, in order. */
static void push_headers(lua_State *L, const struct mime_part *p)
{
    int n = 0, count = 0;
    for (const struct mime_header *h = p->headers; h && count < INT_MAX; h = h->next)
        count++;
    lua_createtable(L, 0, count);   /* sized at once: no rehash as it fills */
    lua_createtable(L, count, 0);
    int headers = lua_gettop(L) - 1;
    for (const struct mime_header *h = p->headers; h; h = h->next) {
        lua_createtable(L, 0, 2);
        push_str(L, h->name);        /* each string made once, for both tables */
        push_str(L, h->value);
        lua_pushvalue(L, -2);
        if (lua_rawget(L, headers) == LUA_TNIL) {   /* the first of its name */
            lua_pushvalue(L, -3);
            lua_pushvalue(L, -3);
            lua_rawset(L, headers);
        }
        lua_pop(L, 1);
        lua_setfield(L, -3, "value");
        lua_setfield(L, -2, "name");
        lua_rawseti(L, -2, ++n);
    }
    lua_setfield(L, -3, "header_list");
    lua_setfield(L, -2, "headers");
}

/* The message's headers the mail table has a field for: the first of
 * each name, found in one pass over them. */
enum { H_FROM, H_TO, H_SUBJECT, H_DATE, H_CONTENT_TYPE, H_RETURN_PATH, H_CC, H_BCC, H_REPLY_TO,
       H_SENDER, H_MESSAGE_ID, H_COUNT };
static const char *const named[H_COUNT] = {
    "from", "to", "subject", "date", "content-type", "return-path", "cc", "bcc", "reply-to", "sender",
    "message-id",
};

static void find_named(const struct mime_part *root, const struct mime_header *found[H_COUNT])
{
    for (int i = 0; i < H_COUNT; i++)
        found[i] = NULL;
    for (const struct mime_header *h = root->headers; h; h = h->next)
        for (int i = 0; i < H_COUNT; i++)
            if (found[i] == NULL && h->name[0] == named[i][0] && strcmp(h->name, named[i]) == 0) {
                found[i] = h;
                break;
            }
}

/* addresses: the mailboxes of the message's address headers, each a list
 * of {name=, address=[, group=]} (empty when the header is absent). */
static void push_addresses(lua_State *L, const struct mime_header *const found[H_COUNT])
{
    static const struct { const char *field; int header; } lists[] = {
        { "from", H_FROM }, { "to", H_TO }, { "cc", H_CC }, { "bcc", H_BCC },
        { "reply_to", H_REPLY_TO }, { "sender", H_SENDER },
    };
    lua_createtable(L, 0, sizeof(lists) / sizeof(lists[0]));
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        const struct mime_header *h = found[lists[i].header];
        size_t n = h ? h->naddresses : 0;
        lua_createtable(L, n < INT_MAX ? (int)n : INT_MAX, 0);
        for (size_t k = 0; k < n; k++) {
            const struct address *a = &h->addresses[k];
            lua_createtable(L, 0, 3);
            set_str(L, "name", a->name);
            set_str(L, "address", a->address);
            set_str(L, "group", a->group);
            lua_rawseti(L, -2, (lua_Integer)k + 1);
        }
        lua_setfield(L, -2, lists[i].field);
    }
    lua_setfield(L, -2, "addresses");
}

/* Up to `max` lines of text[0, n), each cut at MAIL_LINE_MAX on a
 * character boundary; a CR before a line's LF is dropped.  The array is
 * left on the stack; true if a line was cut. */
static bool push_lines(lua_State *L, const char *text, size_t n, long long max)
{
    bool cut = false;
    lua_Integer i = 0;
    lua_createtable(L, max < 64 ? (int)max : 64, 0);
    while (n > 0 && i < max) {
        const char *lf = memchr(text, '\n', n);
        size_t len = lf ? (size_t)(lf - text) : n, next = lf ? len + 1 : n;
        if (len > 0 && text[len - 1] == '\r' && lf)
            len--;
        if (len > MAIL_LINE_MAX) {
            len = MAIL_LINE_MAX;
            while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
                len--;
            cut = true;
        }
        lua_pushlstring(L, text, len);
        lua_rawseti(L, -2, ++i);
        text += next;
        n -= next;
    }
    return cut;
}

static int push_decoded(lua_State *L, struct mime *m, const struct mime_part *p, bool text,
                        struct buf *tmp)
{
    buf_clear(tmp);
    if (mime_decode(m, p, text, tmp) < 0)
        return -1;
    lua_pushlstring(L, buf_head(tmp), buf_len(tmp));
    return 0;
}

static int push_attachment(lua_State *L, struct mime *m, const struct mime_part *p, struct buf *tmp)
{
    lua_createtable(L, 0, 8);
    set_str(L, "filename", p->filename);
    set_str(L, "content_type", p->type);
    set_str(L, "charset", p->charset);
    set_str(L, "disposition", p->disposition);
    set_str(L, "content_id", p->content_id);
    if (push_decoded(L, m, p, false, tmp) < 0)
        return -1;
    lua_pushinteger(L, (lua_Integer)buf_len(tmp));
    lua_setfield(L, -3, "size");
    lua_setfield(L, -2, "content");
    if (p->container && p->child)          /* an attached message: its headers */
        push_headers(L, p->child);
    return 0;
}

static void build_free(struct mail_build *bd)
{
    buf_free(&bd->tmp);
    buf_free(&bd->uu);
    mime_free(&bd->m);
}

void mail_abandon(struct bridge *b)
{
    build_free(&b->build);
}

/* The uuencoded files of the text body in bd->tmp go to bd->uu, which
 * then holds the whole text, and bd->tmp keeps the rest of the text, the
 * way mail readers show such a message.  0, or -1 out of memory. */
static int take_uu(struct mail_build *bd)
{
    struct mime_uu blk;
    buf_clear(&bd->uu);
    if (!mime_uu_block(buf_head(&bd->tmp), buf_len(&bd->tmp), 0, &blk))
        return 0;
    struct buf whole = bd->tmp;
    bd->tmp = bd->uu;
    bd->uu = whole;
    const char *s = buf_head(&bd->uu);
    size_t n = buf_len(&bd->uu), at = 0;
    do {
        if (buf_append(&bd->tmp, s + at, blk.start - at) < 0)
            return -1;
        at = blk.end;
    } while (mime_uu_block(s, n, at, &blk));
    return buf_append(&bd->tmp, s + at, n - at);
}

/* The type a uuencoded file's name suggests, as mail readers guess it (a
 * begin line gives no type). */
static const char *type_of_name(const char *name, size_t n)
{
    static const struct { const char *ext, *type; } types[] = {
        { ".jpg", "image/jpeg" }, { ".jpeg", "image/jpeg" }, { ".png", "image/png" },
        { ".gif", "image/gif" }, { ".bmp", "image/bmp" }, { ".tif", "image/tiff" },
        { ".tiff", "image/tiff" }, { ".pdf", "application/pdf" }, { ".zip", "application/zip" },
        { ".txt", "text/plain" }, { ".csv", "text/csv" }, { ".xml", "application/xml" },
        { ".htm", "text/html" }, { ".html", "text/html" }, { ".wav", "audio/wav" },
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        size_t e = strlen(types[i].ext);
        if (n > e && strncasecmp(name + n - e, types[i].ext, e) == 0)
            return types[i].type;
    }
    return "application/octet-stream";
}

/* Each uuencoded file taken out of the text, as an attachment. */
static int push_uu(lua_State *L, struct mail_build *bd, lua_Integer *na)
{
    const char *s = buf_head(&bd->uu);
    size_t n = buf_len(&bd->uu);
    struct mime_uu blk;
    for (size_t at = 0; mime_uu_block(s, n, at, &blk); at = blk.end) {
        lua_createtable(L, 0, 5);
        if (blk.name_len) {
            lua_pushlstring(L, blk.name, blk.name_len);
            lua_setfield(L, -2, "filename");
        }
        set_str(L, "content_type", type_of_name(blk.name, blk.name_len));
        set_str(L, "disposition", "attachment");
        buf_clear(&bd->tmp);
        if (mime_uu_decode(s, &blk, &bd->tmp) < 0)
            return -1;
        lua_pushinteger(L, (lua_Integer)buf_len(&bd->tmp));
        lua_setfield(L, -2, "size");
        lua_pushlstring(L, buf_head(&bd->tmp), buf_len(&bd->tmp));
        lua_setfield(L, -2, "content");
        lua_rawseti(L, -2, ++*na);
    }
    return 0;
}

/* text, html and the lines of body; *cut_r when a line was cut.  0, or -1
 * out of memory. */
static int push_bodies(lua_State *L, struct bridge *b, struct mime *m, const char *msg,
                       size_t size, struct mail_build *bd, bool *cut_r)
{
    const struct mime_part *root = m->root, *text, *html;
    struct buf *tmp = &bd->tmp;
    mime_bodies(m, &text, &html);
    if (html) {
        if (push_decoded(L, m, html, true, tmp) < 0)
            return -1;
        lua_setfield(L, -2, "html");
    }
    if (text) {
        buf_clear(tmp);
        if (mime_decode(m, text, true, tmp) < 0 || take_uu(bd) < 0)
            return -1;
        tmp = &bd->tmp;           /* take_uu may have swapped the buffers */
        lua_pushlstring(L, buf_head(tmp), buf_len(tmp));
        lua_setfield(L, -2, "text");
    }
    if (b->rawbody) {
        buf_clear(tmp);
        if (utf8_append_valid(tmp, msg + root->body, size - root->body) < 0)
            return -1;
    } else if (!text && !html) {
        buf_clear(tmp);
    }
    /* tmp holds the text (or the HTML when there is no text) */
    *cut_r = push_lines(L, buf_head(tmp), buf_len(tmp), b->body_lines);
    lua_setfield(L, -2, "body");

    lua_newtable(L);
    lua_Integer na = 0;
    for (const struct mime_part *p = root; p; p = mime_next(p, !mime_is_message(p))) {
        if (!mime_is_attachment(p, text, html))
            continue;
        if (push_attachment(L, m, p, tmp) < 0)
            return -1;
        lua_rawseti(L, -2, ++na);
    }
    if (push_uu(L, bd, &na) < 0)
        return -1;
    lua_setfield(L, -2, "attachments");
    return 0;
}

/* dsn: the DSN parameters (RFC 3461) when the client gave any:
 * {ret = "HDRS", envid = "...", rcpt = {[addr] = {notify = {"FAILURE"},
 * orcpt = "rfc822;..."}}}. */
static void push_dsn(lua_State *L, struct smtp *s)
{
    static const char *const rets[] = { NULL, "FULL", "HDRS" };
    size_t n = smtp_nrecipients(s), given = 0;
    for (size_t i = 0; i < n; i++)
        given += smtp_dsn_notify(s, i) || smtp_dsn_orcpt(s, i);
    if (!smtp_dsn_ret(s) && !smtp_dsn_envid(s) && !given)
        return;
    lua_createtable(L, 0, 3);
    set_str(L, "ret", rets[smtp_dsn_ret(s)]);
    set_str(L, "envid", smtp_dsn_envid(s));
    lua_createtable(L, 0, (int)given);
    for (size_t i = 0; i < n; i++) {
        unsigned bits = smtp_dsn_notify(s, i);
        if (!bits && !smtp_dsn_orcpt(s, i))
            continue;
        lua_createtable(L, 0, 2);
        if (bits) {
            lua_createtable(L, 4, 0);
            lua_Integer k = 0;
            for (unsigned bit = 1; bit <= SMTP_NOTIFY_DELAY; bit <<= 1)
                if (bits & bit) {
                    lua_pushstring(L, smtp_notify_name(bit));
                    lua_rawseti(L, -2, ++k);
                }
            lua_setfield(L, -2, "notify");
        }
        set_str(L, "orcpt", smtp_dsn_orcpt(s, i));
        lua_setfield(L, -2, smtp_recipient(s, i));
    }
    lua_setfield(L, -2, "rcpt");
    lua_setfield(L, -2, "dsn");
}

/* The envelope and the message as received. */
static void push_envelope(lua_State *L, struct smtp *s, const char *msg, size_t size)
{
    set_str(L, "sender", smtp_sender(s));
    lsession_push_recipients(L, s);
    lua_setfield(L, -2, "recipients");
    set_str(L, "helo", smtp_helo(s) ? smtp_helo(s) : "");
    int port;
    set_str(L, "ip", smtp_peer_host(s, &port));
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
    const struct session_proxy *proxy = smtp_proxy(s);
    if (proxy && !proxy->local)
        set_str(L, "proxy", proxy->host);
    lua_pushlstring(L, msg, size);
    lua_setfield(L, -2, "raw");
    lua_pushinteger(L, (lua_Integer)size);
    lua_setfield(L, -2, "size");
    set_str(L, "id", smtp_message_id(s));
    push_dsn(L, s);
    /* RFC 3848's names for how it came */
    static const char *const protocols[] = { "ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA" };
    set_str(L, "protocol", !smtp_esmtp(s) ? "SMTP"
                           : protocols[(smtp_tls_version(s) ? 2 : 0) + (smtp_user(s) ? 1 : 0)]);
}

/* The string at the top (popped), or "": its printable bytes only, at most
 * 255, since the trace fields must stay one header. */
static const char *printable(lua_State *L, char *out, size_t size)
{
    size_t n = 0, o = 0;
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : "";
    for (size_t i = 0; i < n && o + 1 < size; i++)
        out[o++] = (unsigned char)v[i] > ' ' && v[i] != 0x7f ? v[i] : '?';
    out[o] = '\0';
    lua_pop(L, 1);
    return out;
}

void mail_push_trace(lua_State *L, int idx, bool final)
{
    struct bridge *b = bridge_of(L);
    char sender[256], helo[256], ip[256], proto[256], id[256], rcpt[256] = "", date[64];
    idx = lua_absindex(L, idx);
    lua_getfield(L, idx, "sender");
    printable(L, sender, sizeof(sender));
    lua_getfield(L, idx, "helo");
    printable(L, helo, sizeof(helo));
    lua_getfield(L, idx, "ip");
    printable(L, ip, sizeof(ip));
    lua_getfield(L, idx, "protocol");
    printable(L, proto, sizeof(proto));
    lua_getfield(L, idx, "id");
    printable(L, id, sizeof(id));
    /* "for" names the recipient only when there is one (RFC 5321 4.4) */
    if (lua_getfield(L, idx, "recipients") == LUA_TTABLE && lua_rawlen(L, -1) == 1) {
        lua_rawgeti(L, -1, 1);
        printable(L, rcpt, sizeof(rcpt));
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "raw");
    const char *raw = lua_tostring(L, -1);
    const char *lf = raw ? strchr(raw, '\n') : NULL;
    const char *eol = lf && lf > raw && lf[-1] == '\r' ? "\r\n" : lf ? "\n" : "\r\n";
    lua_pop(L, 1);
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", localtime_r(&now, &tm));
    lua_pushfstring(L, "%s%s%s%sReceived: from %s ([%s%s])%s\tby %s (" CONFIG_SOFTWARE ") with %s id %s%s%s%s%s; %s%s",
                    final ? "Return-Path: <" : "", final ? sender : "", final ? ">" : "", final ? eol : "",
                    helo[0] ? helo : "unknown", strchr(ip, ':') ? "IPv6:" : "", ip, eol, b->hostname,
                    proto[0] ? proto : "SMTP", id, rcpt[0] ? eol : "", rcpt[0] ? "\tfor <" : "", rcpt,
                    rcpt[0] ? ">" : "", date, eol);
}

/* The mail table of the message being received by s. */
int mail_push(lua_State *L, struct bridge *b, struct smtp *s, const char *msg, size_t size)
{
    /* HSYCO's fields are always there ("" when the header is absent;
     * RFC 2045 5.2: no Content-Type is plain US-ASCII text), the others
     * only with their header */
    static const struct { const char *field; int header; const char *absent; } fields[] = {
        { "from", H_FROM, "" }, { "to", H_TO, "" }, { "subject", H_SUBJECT, "" }, { "date", H_DATE, "" },
        { "contenttype", H_CONTENT_TYPE, "text/plain; charset=us-ascii" }, { "returnpath", H_RETURN_PATH, "" },
        { "cc", H_CC, NULL }, { "reply_to", H_REPLY_TO, NULL }, { "message_id", H_MESSAGE_ID, NULL },
    };

    /* in the bridge, not on this stack: a Lua error (memory) raised halfway
     * leaves it for the caller's mail_abandon */
    struct mail_build *bd = &b->build;
    buf_init(&bd->tmp, 4 * size + 64);
    buf_init(&bd->uu, 4 * size + 64);
    if (mime_parse(msg, size, NULL, &bd->m) < 0)
        return -1;
    struct mime *m = bd->m;
    const struct mime_part *root = m->root;
    const struct mime_header *found[H_COUNT];
    bool line_cut;

    find_named(root, found);
    smtp_trace_parsed(s, m, found[H_SUBJECT] ? found[H_SUBJECT]->value : NULL);
    lua_createtable(L, 0, 32);
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const struct mime_header *h = found[fields[i].header];
        set_str(L, fields[i].field, h ? h->value : fields[i].absent);
    }
    push_headers(L, root);
    push_addresses(L, found);
    if (push_bodies(L, b, m, msg, size, bd, &line_cut) < 0)
        return -1;
    if (m->cut != MIME_CUT_NONE)
        set_str(L, "truncated", mime_cut_name(m->cut));
    else if (line_cut)
        set_str(L, "truncated", "line length");
    push_envelope(L, s, msg, size);
    build_free(bd);
    return 0;
}
