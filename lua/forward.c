/*
 * luasmtpd.forward(mail, {via = "smtp://host:587", starttls =, user =,
 *                  password =, bearer =, from =, to =, timeout =, cafile =,
 *                  insecure =, trace =})
 *
 * Relays the message to another SMTP server through libcurl's SMTP client,
 * driven by the loop like http (http.c's multi handle).  The message goes
 * out as received, after the Received: field RFC 5321 4.4 asks of a relay
 * (trace = false leaves it out); curl does the dot-stuffing.
 *
 * What the server answered is read from curl's transcript (its debug
 * callback): the reply to each RCPT, so that every refused recipient is
 * told, and the last reply, to the message or to the command that ended
 * the transaction.  The result is {code = 250, reply = "2.0.0 Ok ...",
 * command = "DATA", rejected = {["x@y"] = "550 5.1.1 ..."}}, with the code
 * and the command of a refusal when
 * the server refused (check r.code); nil and a reason when no SMTP answer
 * came (no connection, TLS, a timeout).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "internal.h"
#include "transcript.h"

#define FORWARD_TIMEOUT 60.0
#define RCPT_MAX        1000

struct fwd {
    struct xfer        x;
    struct curl_slist *rcpts;
    char              *data;      /* the trace field and the message */
    size_t             len, off;
    char               err[CURL_ERROR_SIZE];
    struct transcript  t;         /* what the server answered */
};

static size_t read_cb(char *out, size_t size, size_t n, void *userp)
{
    struct fwd *f = userp;
    size_t want = size * n, left = f->len - f->off;
    if (want > left)
        want = left;
    memcpy(out, f->data + f->off, want);
    f->off += want;
    return want;
}

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
    xfer_free(f->x.c->b, &f->x);
    curl_slist_free_all(f->rcpts);
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
    if (f->t.code == 0 || (f->x.result != CURLE_OK && f->t.code < 400)) {
        n = call_fail(L, "forward: %s", f->err[0] ? f->err : curl_easy_strerror((CURLcode)f->x.result));
    } else if (f->t.oom) {            /* a refusal not kept: nothing may pass as delivered */
        n = call_fail(L, "forward: out of memory");
    } else {
        lua_createtable(L, 0, 4);
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
    }
    call_release(c);
    return n;
}

/* An address for MAIL FROM or RCPT TO, in angle brackets; raises on one
 * that would break the command line. */
static const char *bracketed(lua_State *L, const char *addr, const char *what)
{
    if (strpbrk(addr, "\r\n<>") || strlen(addr) > 320)
        luaL_error(L, "forward: %s address '%s' is not an address", what, addr);
    return lua_pushfstring(L, "<%s>", addr);
}

/* Push the recipients, each in angle brackets: opts.to (a string or a
 * list), else mail.recipients.  Raises on a bad one. */
static void push_recipients(lua_State *L)
{
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
        lua_rawgeti(L, -2, i);
        const char *a = lua_tostring(L, -1);
        if (a == NULL)
            luaL_error(L, "forward: recipient %d is not a string", (int)i);
        bracketed(L, a, "recipient");
        lua_rawseti(L, -3, i);
        lua_pop(L, 1);
    }
    lua_remove(L, -2);
}

/* The list at idx (push_recipients) as curl's: 0, or -1 out of memory. */
static int rcpt_list(lua_State *L, int idx, struct curl_slist **list)
{
    for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, idx); i <= n; i++) {
        lua_rawgeti(L, idx, i);
        struct curl_slist *more = curl_slist_append(*list, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (more == NULL)
            return -1;
        *list = more;
    }
    return 0;
}

static const char *opt_str(lua_State *L, const char *key)
{
    lua_getfield(L, 2, key);
    const char *v = lua_tostring(L, -1);
    lua_pop(L, 1);                    /* the options table keeps it */
    return v;
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
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, f->rcpts);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT_ALLLOWFAILS, 1L);   /* each refusal is told */
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(e, CURLOPT_READDATA, f);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)f->len);
    curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);                 /* the transcript */
    curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, debug_cb);
    curl_easy_setopt(e, CURLOPT_DEBUGDATA, f);
}

static int l_forward(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    struct lcall *c = call_waitable(L, "luasmtpd.forward");
    const char *via = opt_str(L, "via");
    if (via == NULL || (strncmp(via, "smtp://", 7) != 0 && strncmp(via, "smtps://", 8) != 0))
        return luaL_error(L, "forward: via must be an smtp:// or smtps:// URL");
    size_t rawlen, tlen = 0;
    lua_getfield(L, 1, "raw");
    const char *raw = lua_tolstring(L, -1, &rawlen);
    if (raw == NULL)
        return luaL_error(L, "forward: the mail has no raw message (mail.raw)");
    const char *from = opt_str(L, "from");
    if (from == NULL) {
        lua_getfield(L, 1, "sender");
        from = lua_tostring(L, -1);
    }
    from = bracketed(L, from ? from : "", "sender");
    lua_getfield(L, 2, "trace");
    bool trace = lua_isnil(L, -1) || lua_toboolean(L, -1);
    const char *head = "";
    if (trace) {
        mail_push_trace(L, 1, false);
        head = lua_tolstring(L, -1, &tlen);
    }
    double timeout = call_opt_timeout(L, 2, FORWARD_TIMEOUT);
    long ssl = use_ssl(L, opt_str(L, "user") || opt_str(L, "bearer"));
    push_recipients(L);
    int rcpts = lua_gettop(L);

    struct fwd *f = calloc(1, sizeof(*f));
    if (f == NULL || (f->data = malloc(tlen + rawlen + 1)) == NULL || rcpt_list(L, rcpts, &f->rcpts) < 0 ||
        xfer_new(c->b, &f->x) == NULL) {
        if (f) {
            f->x.c = c;
            fwd_release(f);
        }
        return call_fail(L, "forward: out of memory");
    }
    f->x.c = c;
    memcpy(f->data, head, tlen);
    memcpy(f->data + tlen, raw, rawlen);
    f->len = tlen + rawlen;
    set_options(L, c->b, f, via, ssl);
    curl_easy_setopt(f->x.easy, CURLOPT_MAIL_FROM, from);
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
}

const struct action forward_action = { .open = forward_open };
