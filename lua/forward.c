/*
 * luasmtpd.forward(mail, {via = "smtp://host:587", starttls =, user =,
 *                  password =, bearer =, from =, to =, dsn =, timeout =,
 *                  cafile =, insecure =, trace =})
 *
 * Relays the message to another SMTP server, on the loop like http.  It
 * goes in two parts:
 *  - libcurl connects (its multi handle, http.c; CURLOPT_CONNECT_ONLY):
 *    the name, the greeting, EHLO, STARTTLS and the certificate's check,
 *    AUTH.  Its transcript (the debug callback) tells what the server
 *    offers, and its refusal of a login.
 *  - then the transaction is this file's, on curl's connection
 *    (curl_easy_send and curl_easy_recv, the socket watched by an ev_io):
 *    MAIL FROM with SIZE, BODY=8BITMIME and SMTPUTF8 where they apply and
 *    the DSN parameters (RFC 3461) when the server offers DSN, each RCPT
 *    TO with its own, DATA and the message dot-stuffed, QUIT.  curl writes
 *    MAIL and RCPT itself with no room for parameters, hence this part.
 * The message goes out as received, after the Received: field RFC 5321
 * 4.4 asks of a relay (trace = false leaves it out).
 *
 * The result is {code = 250, reply = "2.0.0 Ok ...", command = "DATA",
 * rejected = {["x@y"] = "550 5.1.1 ..."}, dsn = true}: the last reply, to
 * the message or to the command that ended the transaction, each refused
 * recipient with its reply, and whether the DSN parameters went on (nil
 * when there were none).  nil and a reason when no SMTP answer came (no
 * connection, TLS, a timeout, a server that is not speaking SMTP).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "internal.h"
#include "smtp_parse.h"
#include "transcript.h"

#define FORWARD_TIMEOUT 60.0
#define RCPT_MAX        1000
#define FWD_LINE        2048   /* a command or a reply line: 512 and the parameters' room */

/* The command whose reply is awaited, or QUIT being sent. */
enum fwd_step { FWD_MAIL, FWD_RCPT, FWD_DATA, FWD_BODY, FWD_QUIT };

struct fwd {
    struct xfer        x;
    ev_io              io;
    ev_timer           timer;        /* what is left of the timeout once curl is done */
    double             deadline;
    enum fwd_step      step;
    char              *data;         /* the trace field and the message; dot-stuffed once connected */
    size_t             len, size;    /* size: before the stuffing (SIZE=) */
    char              *mail;         /* "<from>", then after its NUL the DSN parameters */
    char             **rcpt;         /* the same for each recipient */
    size_t             nrcpt, next, accepted;
    bool               dsn, utf8, eight;
    bool               talking;      /* curl is done: the transaction is ours */
    const char        *out;          /* what is being sent */
    size_t             outlen, outoff;
    char               cmd[FWD_LINE];
    char               in[FWD_LINE]; /* what was read of the next reply line */
    size_t             inlen;
    char               err[CURL_ERROR_SIZE];
    struct transcript  t;            /* what the server answered */
};

static int debug_cb(CURL *e, curl_infotype type, char *data, size_t size, void *userp)
{
    struct fwd *f = userp;
    (void)e;
    if (type == CURLINFO_HEADER_IN || type == CURLINFO_HEADER_OUT)
        transcript_feed(&f->t, type == CURLINFO_HEADER_OUT, data, size);
    return 0;
}

static void fwd_release(void *data)
{
    struct fwd *f = data;
    struct ev_loop *loop = f->x.c->b->loop;
    ev_io_stop(loop, &f->io);
    ev_timer_stop(loop, &f->timer);
    xfer_free(f->x.c->b, &f->x);
    for (size_t i = 0; i < f->nrcpt && f->rcpt; i++)
        free(f->rcpt[i]);
    free(f->rcpt);
    free(f->mail);
    transcript_free(&f->t);
    free(f->data);
    free(f);
}

static int fwd_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lcall *c = (struct lcall *)ctx;
    struct fwd *f = c->waitdata;
    int n = 1;
    (void)status;
    /* curl ends with the server's refusal of a login or of STARTTLS; a
     * transaction cut short is no answer, whatever came before */
    if (f->t.code == 0 || (f->x.result != CURLE_OK && (f->talking || f->t.code < 400))) {
        n = call_fail(L, "forward: %s", f->err[0] ? f->err : curl_easy_strerror((CURLcode)f->x.result));
    } else if (f->t.oom) {            /* a refusal not kept: nothing may pass as delivered */
        n = call_fail(L, "forward: out of memory");
    } else {
        lua_createtable(L, 0, 5);
        lua_pushinteger(L, f->t.code);
        lua_setfield(L, -2, "code");
        lua_pushstring(L, f->t.reply);
        lua_setfield(L, -2, "reply");
        lua_pushstring(L, f->t.replied);
        lua_setfield(L, -2, "command");
        lua_newtable(L);
        for (const struct transcript_refusal *r = f->t.refused; r; r = r->next) {
            lua_pushstring(L, r->reply);
            lua_setfield(L, -2, r->addr);
        }
        lua_setfield(L, -2, "rejected");
        if (f->dsn) {
            lua_pushboolean(L, (f->t.ext & TRANSCRIPT_DSN) != 0);
            lua_setfield(L, -2, "dsn");
        }
    }
    call_release(c);
    return n;
}

/* The transaction is over (result CURLE_OK: the server's last reply says
 * how), or it failed: why, after "forward: ". */
static void fwd_end(struct fwd *f, int result, const char *fmt, ...)
{
    struct ev_loop *loop = f->x.c->b->loop;
    ev_io_stop(loop, &f->io);
    ev_timer_stop(loop, &f->timer);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->err, sizeof(f->err), fmt, ap);
        va_end(ap);
    }
    f->x.result = result;
    call_wake(f->x.c);                /* its k function frees f */
}

static void fwd_send(struct fwd *f, const char *p, size_t n)
{
    f->out = p;
    f->outlen = n;
    f->outoff = 0;
}

/* A command line (the transcript is told). */
static void fwd_command(struct fwd *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(f->cmd, sizeof(f->cmd) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(f->cmd) - 2)
        n = 0;                        /* cannot be: every part is bounded when the call starts */
    memcpy(f->cmd + n, "\r\n", 2);
    transcript_feed(&f->t, true, f->cmd, (size_t)n + 2);
    fwd_send(f, f->cmd, (size_t)n + 2);
}

/* What the next hop is offered in MAIL FROM: the size, 8BITMIME for a
 * message with 8-bit bytes, SMTPUTF8 for addresses that need it, and the
 * DSN parameters; each only when the server offers the extension. */
static void mail_command(struct fwd *f)
{
    char size[32] = "";
    unsigned ext = f->t.ext;
    if (ext & TRANSCRIPT_SIZE)
        snprintf(size, sizeof(size), " SIZE=%zu", f->size);
    const char *params = f->mail + strlen(f->mail) + 1;
    fwd_command(f, "MAIL FROM:%s%s%s%s%s", f->mail, size,
                f->eight && (ext & TRANSCRIPT_8BITMIME) ? " BODY=8BITMIME" : "",
                f->utf8 && (ext & TRANSCRIPT_SMTPUTF8) ? " SMTPUTF8" : "",
                ext & TRANSCRIPT_DSN ? params : "");
}

static void rcpt_command(struct fwd *f)
{
    const char *r = f->rcpt[f->next];
    fwd_command(f, "RCPT TO:%s%s", r, f->t.ext & TRANSCRIPT_DSN ? r + strlen(r) + 1 : "");
}

static void fwd_quit(struct fwd *f)
{
    f->step = FWD_QUIT;
    fwd_command(f, "QUIT");
}

/* Send what is left: 1 all of it, 0 the socket is full, -1 an error. */
static int fwd_flush(struct fwd *f)
{
    while (f->outoff < f->outlen) {
        size_t n = 0;
        CURLcode rc = curl_easy_send(f->x.easy, f->out + f->outoff, f->outlen - f->outoff, &n);
        if (rc == CURLE_AGAIN)
            return 0;
        if (rc != CURLE_OK) {
            snprintf(f->err, sizeof(f->err), "cannot send to the server: %s", curl_easy_strerror(rc));
            return -1;
        }
        f->outoff += n;
    }
    return 1;
}

/* Read up to the end of a reply, each line told to the transcript: 1 it
 * came, 0 wait for more, -1 an error. */
static int fwd_reply(struct fwd *f)
{
    for (;;) {
        char *lf = memchr(f->in, '\n', f->inlen);
        if (lf) {
            size_t n = (size_t)(lf - f->in) + 1;
            int kind = transcript_line_kind(f->in, n);
            if (kind == 0) {
                snprintf(f->err, sizeof(f->err), "the server's answer is not an SMTP reply");
                return -1;
            }
            transcript_feed(&f->t, false, f->in, n);
            memmove(f->in, f->in + n, f->inlen - n);
            f->inlen -= n;
            if (kind == 2)
                return 1;
            continue;
        }
        if (f->inlen == sizeof(f->in)) {
            snprintf(f->err, sizeof(f->err), "the server's reply has a line over %zu bytes", sizeof(f->in));
            return -1;
        }
        size_t got = 0;
        CURLcode rc = curl_easy_recv(f->x.easy, f->in + f->inlen, sizeof(f->in) - f->inlen, &got);
        if (rc == CURLE_AGAIN)
            return 0;
        if (rc != CURLE_OK || got == 0) {
            snprintf(f->err, sizeof(f->err), "the server closed the connection%s%s",
                     rc != CURLE_OK ? ": " : "", rc != CURLE_OK ? curl_easy_strerror(rc) : "");
            return -1;
        }
        f->inlen += got;
    }
}

/* The server answered the command of f->step: what comes next.  -1 when
 * the reply makes no sense there. */
static int fwd_next(struct fwd *f)
{
    int code = f->t.code;
    switch (f->step) {
    case FWD_MAIL:
        if (code >= 400)
            fwd_quit(f);
        else {
            f->step = FWD_RCPT;
            rcpt_command(f);
        }
        return 0;
    case FWD_RCPT:
        f->accepted += code < 400;     /* the transcript keeps each refusal */
        if (++f->next < f->nrcpt)
            rcpt_command(f);
        else if (f->accepted == 0)
            fwd_quit(f);
        else {
            f->step = FWD_DATA;
            fwd_command(f, "DATA");
        }
        return 0;
    case FWD_DATA:
        if (code == 354) {
            f->step = FWD_BODY;
            fwd_send(f, f->data, f->len);
            return 0;
        }
        if (code < 400) {
            snprintf(f->err, sizeof(f->err), "the server answered DATA with %d", code);
            return -1;
        }
        fwd_quit(f);
        return 0;
    case FWD_BODY:
    case FWD_QUIT:
        break;
    }
    fwd_quit(f);
    return 0;
}

/* Go on as far as the socket lets, then wait for it. */
static void fwd_run(struct fwd *f)
{
    struct ev_loop *loop = f->x.c->b->loop;
    int events;
    for (;;) {
        int r = fwd_flush(f);
        if (f->step == FWD_QUIT && r != 0) {
            fwd_end(f, CURLE_OK, NULL);   /* the outcome is known; QUIT's reply is not awaited */
            return;
        }
        if (r < 0) {
            fwd_end(f, CURLE_SEND_ERROR, NULL);
            return;
        }
        if (r == 0) {
            events = EV_WRITE;
            break;
        }
        if ((r = fwd_reply(f)) < 0) {
            fwd_end(f, CURLE_RECV_ERROR, NULL);
            return;
        }
        if (r == 0) {
            events = EV_READ;
            break;
        }
        if (fwd_next(f) < 0) {
            fwd_end(f, CURLE_WEIRD_SERVER_REPLY, NULL);
            return;
        }
    }
    if (f->io.events != events || !ev_is_active(&f->io)) {
        ev_io_stop(loop, &f->io);
        ev_io_set(&f->io, f->io.fd, events);
        ev_io_start(loop, &f->io);
    }
}

static void fwd_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    fwd_run(w->data);
}

static void fwd_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct fwd *f = w->data;
    (void)loop;
    (void)revents;
    fwd_end(f, CURLE_OPERATION_TIMEDOUT, "no answer from the server within the timeout");
}

static bool has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/* Dot-stuff the message in place (RFC 5321 4.5.2), a dot after every line
 * end, bare LF too, and end it with CRLF "." CRLF; note 8-bit bytes.  0, or
 * -1 out of memory. */
static int fwd_stuff(struct fwd *f)
{
    size_t dots = 0;
    f->size = f->len;
    f->eight = has_8bit(f->data, f->len);
    for (size_t i = 0; i < f->len; i++)
        dots += f->data[i] == '.' && (i == 0 || f->data[i - 1] == '\n');
    bool crlf = f->len >= 2 && f->data[f->len - 2] == '\r' && f->data[f->len - 1] == '\n';
    size_t n = f->len + dots + (crlf ? 0 : 2) + 3;
    char *d = realloc(f->data, n);
    if (d == NULL)
        return -1;
    size_t o = n - 3;
    memcpy(d + o, ".\r\n", 3);
    if (!crlf) {
        d[--o] = '\n';
        d[--o] = '\r';
    }
    for (size_t i = f->len; i-- > 0;) {    /* from the end: what is read is not yet written over */
        d[--o] = d[i];
        if (d[i] == '.' && (i == 0 || d[i - 1] == '\n'))
            d[--o] = '.';
    }
    f->data = d;
    f->len = n;
    return 0;
}

/* curl is done: logged in, or failed. */
static void fwd_connected(struct xfer *x)
{
    struct fwd *f = (struct fwd *)x;
    struct ev_loop *loop = x->c->b->loop;
    curl_socket_t fd = CURL_SOCKET_BAD;
    if (x->result != CURLE_OK) {
        call_wake(x->c);
        return;
    }
    if (curl_easy_getinfo(x->easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK || fd == CURL_SOCKET_BAD) {
        fwd_end(f, CURLE_COULDNT_CONNECT, "the connection is gone");
        return;
    }
    if (fwd_stuff(f) < 0) {
        fwd_end(f, CURLE_OUT_OF_MEMORY, "out of memory");
        return;
    }
    double left = f->deadline - ev_now(loop);
    ev_timer_set(&f->timer, left > 0.001 ? left : 0.001, 0.);
    ev_timer_start(loop, &f->timer);
    ev_io_set(&f->io, fd, EV_WRITE);
    f->talking = true;
    f->step = FWD_MAIL;
    mail_command(f);
    fwd_run(f);
}

/* Raises on an address that would break the command line. */
static void check_address(lua_State *L, const char *addr, const char *what)
{
    if (strpbrk(addr, "\r\n<>") || strlen(addr) > 320)
        luaL_error(L, "forward: %s address '%s' is not an address", what, addr);
}

/* t[key]: a string, or NULL when absent; raises on another type. */
static const char *field_str(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (v == NULL && !lua_isnil(L, -1))
        luaL_error(L, "forward: dsn %s must be a string", key);
    lua_pop(L, 1);                    /* the table keeps it */
    return v;
}

static const char *opt_str(lua_State *L, const char *key)
{
    lua_getfield(L, 2, key);
    const char *v = lua_tostring(L, -1);
    lua_pop(L, 1);                    /* the options table keeps it */
    return v;
}

/* MAIL FROM's DSN parameters (RFC 3461 4.3, 4.4) from the dsn table at
 * idx (0: none) into out; raises on a bad one. */
static void mail_dsn(lua_State *L, int dsn, char *out, size_t size)
{
    out[0] = '\0';
    if (dsn == 0)
        return;
    const char *ret = field_str(L, dsn, "ret");
    if (ret && strcasecmp(ret, "FULL") != 0 && strcasecmp(ret, "HDRS") != 0)
        luaL_error(L, "forward: dsn ret must be \"FULL\" or \"HDRS\", not '%s'", ret);
    if (ret)
        snprintf(out, size, " RET=%s", strcasecmp(ret, "FULL") == 0 ? "FULL" : "HDRS");
    const char *envid = field_str(L, dsn, "envid");
    char x[SMTP_ENVID_MAX + 1];
    if (envid && !smtp_xtext_encode(envid, x, sizeof(x)))
        luaL_error(L, "forward: dsn envid is over %d characters as xtext", SMTP_ENVID_MAX);
    if (envid) {
        size_t n = strlen(out);
        snprintf(out + n, size - n, " ENVID=%s", x);
    }
}

/* RCPT TO's (RFC 3461 4.1, 4.2) for addr, from dsn.rcpt[addr]. */
static void rcpt_dsn(lua_State *L, int dsn, const char *addr, char *out, size_t size)
{
    out[0] = '\0';
    if (dsn == 0)
        return;
    lua_getfield(L, dsn, "rcpt");
    if (lua_istable(L, -1))
        lua_getfield(L, -1, addr);
    else
        lua_pushnil(L);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 2);
        return;
    }
    int t = lua_gettop(L);
    lua_getfield(L, t, "notify");
    if (!lua_isnil(L, -1)) {
        char list[64] = "";
        unsigned bits = 0;
        for (lua_Integer i = 1, n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : 0; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            size_t used = strlen(list);
            const char *v = lua_tostring(L, -1);
            if (v)
                snprintf(list + used, sizeof(list) - used, "%s%s", used ? "," : "", v);
            lua_pop(L, 1);
        }
        if (!smtp_parse_notify(list, strlen(list), &bits))
            luaL_error(L, "forward: dsn notify of %s must be {\"NEVER\"} or a list of \"SUCCESS\", "
                          "\"FAILURE\", \"DELAY\"", addr);
        snprintf(out, size, " NOTIFY=");
        for (unsigned bit = 1; bit <= SMTP_NOTIFY_DELAY; bit <<= 1)
            if (bits & bit) {
                size_t used = strlen(out);
                snprintf(out + used, size - used, "%s%s", out[used - 1] == '=' ? "" : ",", smtp_notify_name(bit));
            }
    }
    lua_pop(L, 1);
    const char *orcpt = field_str(L, t, "orcpt");
    if (orcpt) {                      /* "rfc822;" and the address: only the address is xtext */
        const char *semi = strchr(orcpt, ';');
        size_t tl = semi ? (size_t)(semi - orcpt) : 0;
        char x[SMTP_ORCPT_MAX + 1];
        if (tl == 0 || tl > 64 ||
            strspn(orcpt, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != tl)
            luaL_error(L, "forward: dsn orcpt of %s is not TYPE;ADDRESS", addr);
        if (!smtp_xtext_encode(semi + 1, x, sizeof(x) - tl - 1))
            luaL_error(L, "forward: dsn orcpt of %s is over %d characters as xtext", addr, SMTP_ORCPT_MAX);
        size_t used = strlen(out);
        snprintf(out + used, size - used, " ORCPT=%.*s%s", (int)tl + 1, orcpt, x);
    }
    lua_pop(L, 2);
}

/* "<addr>", then after a NUL the DSN parameters (rcpt_dsn or mail_dsn),
 * as one string: what MAIL FROM and RCPT TO are made of. */
static void push_address(lua_State *L, const char *addr, const char *params)
{
    lua_pushfstring(L, "<%s>%c%s", addr, 0, params);
}

/* Push the recipients (push_address): opts.to (a string or a list), else
 * mail.recipients.  Raises on a bad one; true when one has DSN parameters. */
static bool push_recipients(lua_State *L, int dsn)
{
    bool asked = false;
    lua_getfield(L, 2, "to");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, 1, "recipients");
    } else if (lua_isstring(L, -1)) {
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "forward: no recipients (opts.to or mail.recipients)");
    lua_Integer n = luaL_len(L, -1);
    if (n < 1 || n > RCPT_MAX)
        luaL_error(L, "forward: 1 to %d recipients, not %d", RCPT_MAX, (int)n);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        char params[SMTP_ORCPT_MAX + 128];
        lua_rawgeti(L, -2, i);
        const char *a = lua_tostring(L, -1);
        if (a == NULL)
            luaL_error(L, "forward: recipient %d is not a string", (int)i);
        check_address(L, a, "recipient");
        rcpt_dsn(L, dsn, a, params, sizeof(params));
        asked |= params[0] != '\0';
        push_address(L, a, params);
        lua_rawseti(L, -3, i);
        lua_pop(L, 1);
    }
    lua_remove(L, -2);
    return asked;
}

/* A copy of the string at idx (push_address's, NULs and all). */
static char *copy_address(lua_State *L, int idx, struct fwd *f)
{
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n + 1);
        f->utf8 |= has_8bit(s, strlen(s));
    }
    return d;
}

/* The sender and the recipients (list at idx) into f: 0, or -1 out of memory. */
static int copy_envelope(lua_State *L, int sender, int list, struct fwd *f)
{
    size_t n = lua_rawlen(L, list);
    if ((f->mail = copy_address(L, sender, f)) == NULL || (f->rcpt = calloc(n, sizeof(*f->rcpt))) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, list, (lua_Integer)i + 1);
        f->rcpt[i] = copy_address(L, -1, f);
        lua_pop(L, 1);
        if (f->rcpt[i] == NULL)
            return -1;
        f->nrcpt = i + 1;
    }
    return 0;
}

/* starttls: "required" | "try" | false; by default required when
 * credentials go over it, else tried. */
static long use_ssl(lua_State *L, bool credentials)
{
    lua_getfield(L, 2, "starttls");
    long v;
    if (lua_isnil(L, -1))
        v = credentials ? CURLUSESSL_ALL : CURLUSESSL_TRY;
    else if (lua_isboolean(L, -1))
        v = lua_toboolean(L, -1) ? CURLUSESSL_ALL : CURLUSESSL_NONE;
    else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "required") == 0)
        v = CURLUSESSL_ALL;
    else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "try") == 0)
        v = CURLUSESSL_TRY;
    else
        return luaL_error(L, "forward: starttls must be \"required\", \"try\" or false");
    lua_pop(L, 1);
    return v;
}

/* Set the options of the transfer from opts (at 2); raises nothing. */
static void set_options(lua_State *L, struct bridge *b, struct fwd *f, const char *via, long ssl)
{
    CURL *e = f->x.easy;
    const char *user = opt_str(L, "user"), *password = opt_str(L, "password");
    const char *bearer = opt_str(L, "bearer"), *cafile = opt_str(L, "cafile");
    lua_getfield(L, 2, "insecure");
    bool insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    /* EHLO names this server: curl takes it from the URL's path */
    const char *slash = strstr(via, "://");
    slash = slash ? strchr(slash + 3, '/') : NULL;
    const char *url = slash && slash[1] ? via
                    : lua_pushfstring(L, "%s%s%s", via, slash ? "" : "/", b->hostname);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->err);
    curl_easy_setopt(e, CURLOPT_USE_SSL, ssl);
    if (user)
        curl_easy_setopt(e, CURLOPT_USERNAME, user);
    if (password)
        curl_easy_setopt(e, CURLOPT_PASSWORD, password);
    if (bearer)
        curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, bearer);
    if (cafile)
        curl_easy_setopt(e, CURLOPT_CAINFO, cafile);
    if (insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);            /* the transaction is ours */
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);                 /* the transcript */
    curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, debug_cb);
    curl_easy_setopt(e, CURLOPT_DEBUGDATA, f);
}

/* opts.dsn, else mail.dsn: its index, or 0 for none (nil or false). */
static int dsn_table(lua_State *L)
{
    lua_getfield(L, 2, "dsn");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, 1, "dsn");
    }
    if (lua_istable(L, -1))
        return lua_gettop(L);
    if (!lua_isnil(L, -1) && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1)))
        luaL_error(L, "forward: dsn must be a table (as mail.dsn) or false");
    return 0;
}

/* Check what forward is given (the mail at 1, opts at 2), raising on a
 * misuse, and push the envelope: the sender, then the list of the
 * recipients (push_address).  Returns via; *asked tells whether DSN
 * parameters were asked. */
static const char *forward_args(lua_State *L, double *timeout, long *ssl, bool *asked)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    const char *via = opt_str(L, "via");
    if (via == NULL || (strncmp(via, "smtp://", 7) != 0 && strncmp(via, "smtps://", 8) != 0))
        luaL_error(L, "forward: via must be an smtp:// or smtps:// URL");
    *timeout = call_opt_timeout(L, 2, FORWARD_TIMEOUT);
    *ssl = use_ssl(L, opt_str(L, "user") || opt_str(L, "bearer"));
    int dsn = dsn_table(L);
    const char *from = opt_str(L, "from");
    if (from == NULL) {
        lua_getfield(L, 1, "sender");
        from = lua_tostring(L, -1);
    }
    from = from ? from : "";
    check_address(L, from, "sender");
    char params[SMTP_ENVID_MAX + 32];
    mail_dsn(L, dsn, params, sizeof(params));
    push_address(L, from, params);
    *asked = push_recipients(L, dsn) || params[0] != '\0';
    return via;
}

/* luasmtpd._forward_check(mail, opts): what queue("forward") runs, so that
 * a misuse raises when the job is queued, not when it is delivered. */
static int l_forward_check(lua_State *L)
{
    double timeout;
    long ssl;
    bool asked;
    forward_args(L, &timeout, &ssl, &asked);
    return 0;
}

static int l_forward(lua_State *L)
{
    double timeout;
    long ssl;
    bool asked;
    const char *via = forward_args(L, &timeout, &ssl, &asked);
    int sender = lua_gettop(L) - 1, rcpts = lua_gettop(L);
    struct lcall *c = call_waitable(L, "luasmtpd.forward");
    size_t rawlen, tlen = 0;
    lua_getfield(L, 1, "raw");
    const char *raw = lua_tolstring(L, -1, &rawlen);
    if (raw == NULL)
        return luaL_error(L, "forward: the mail has no raw message (mail.raw)");
    lua_getfield(L, 2, "trace");
    const char *head = "";
    if (lua_isnil(L, -1) || lua_toboolean(L, -1)) {
        mail_push_trace(L, 1, false);
        head = lua_tolstring(L, -1, &tlen);
    }

    struct fwd *f = calloc(1, sizeof(*f));
    if (f) {
        f->x.c = c;
        ev_init(&f->io, fwd_io);
        f->io.data = f;
        ev_init(&f->timer, fwd_timeout);
        f->timer.data = f;
    }
    if (f == NULL || (f->data = malloc(tlen + rawlen + 1)) == NULL || copy_envelope(L, sender, rcpts, f) < 0 ||
        xfer_new(c->b, &f->x) == NULL) {
        if (f)
            fwd_release(f);
        return call_fail(L, "forward: out of memory");
    }
    f->x.done = fwd_connected;
    f->dsn = asked;
    memcpy(f->data, head, tlen);
    memcpy(f->data + tlen, raw, rawlen);
    f->len = tlen + rawlen;
    f->deadline = ev_now(c->b->loop) + timeout;
    set_options(L, c->b, f, via, ssl);
    curl_easy_setopt(f->x.easy, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    if (xfer_start(c->b, &f->x) < 0) {
        fwd_release(f);
        return call_fail(L, "forward: cannot start the transfer");
    }
    return call_wait(L, c, f, fwd_release, CALL_NO_TIMEOUT, fwd_k);
}

static void forward_open(lua_State *L)
{
    lua_pushcfunction(L, l_forward);
    lua_setfield(L, -2, "forward");
    lua_pushcfunction(L, l_forward_check);
    lua_setfield(L, -2, "_forward_check");   /* luasmtpd.lua takes it away */
}

const struct action forward_action = { .open = forward_open };
