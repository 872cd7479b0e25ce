/*
 * luasmtpd.http{url = ..., method =, headers =, body =, timeout =,
 *               follow =, insecure =, cafile =}
 *
 * HTTP and HTTPS through libcurl's multi interface, driven by the server's
 * libev loop: curl tells which sockets to watch (socket_cb) and when to
 * call it back (timer_cb); the hook's coroutine waits meanwhile.  Returns
 * {status = 200, headers = {["content-type"] = ...}, body = "...",
 * truncated = true | nil}, or nil and curl's message (no connection, a
 * timeout, a TLS failure).  Any status is a result: check r.status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "buf.h"
#include "internal.h"
#include "log.h"

#define HTTP_BODY_MAX     (8 * 1024 * 1024)
#define HTTP_HEADERS_MAX  (64 * 1024)
#define HTTP_TIMEOUT      10.0
#define HTTP_REDIRECTS    5

struct http {
    CURLM          *multi;
    ev_timer        timer;
    struct bridge  *b;
};

/* A socket curl asked us to watch. */
struct hsock {
    ev_io         io;
    struct http  *h;
};

struct req {
    struct xfer        x;
    struct curl_slist *hdrs;
    struct buf         body, head;   /* the response */
    bool               truncated;
    CURLcode           result;
    char               err[CURL_ERROR_SIZE];
};

static void check_done(struct http *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        x->result = msg->data.result;
        if (x->done)
            x->done(x);
        else
            call_wake(x->c);         /* its k function frees the transfer */
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct hsock *hs = w->data;
    struct http *h = hs->h;
    int running;
    (void)loop;
    int action = (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(h->multi, w->fd, action, &running);
    check_done(h);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct http *h = w->data;
    int running;
    (void)loop;
    (void)revents;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct http *h = userp;
    struct hsock *hs = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (hs) {
            ev_io_stop(h->b->loop, &hs->io);
            free(hs);
        }
        return 0;
    }
    if (hs == NULL) {
        if ((hs = calloc(1, sizeof(*hs))) == NULL)
            return -1;                /* curl fails the transfer */
        hs->h = h;
        ev_init(&hs->io, io_cb);
        hs->io.data = hs;
        curl_multi_assign(h->multi, fd, hs);
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    ev_io_stop(h->b->loop, &hs->io);
    ev_io_set(&hs->io, fd, events);
    ev_io_start(h->b->loop, &hs->io);
    return 0;
}

static int timer_cb(CURLM *multi, long ms, void *userp)
{
    struct http *h = userp;
    (void)multi;
    ev_timer_stop(h->b->loop, &h->timer);
    if (ms >= 0) {                    /* 0: as soon as the loop goes round */
        ev_timer_set(&h->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(h->b->loop, &h->timer);
    }
    return 0;
}

static struct http *http_get(struct bridge *b)
{
    if (b->http)
        return b->http;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    struct http *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->multi = curl_multi_init()) == NULL) {
        free(h);
        return NULL;
    }
    h->b = b;
    ev_init(&h->timer, timeout_cb);
    h->timer.data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    b->http = h;
    return h;
}

static void http_free(struct bridge *b)
{
    struct http *h = b->http;
    if (h == NULL)
        return;
    ev_timer_stop(b->loop, &h->timer);
    curl_multi_cleanup(h->multi);     /* its requests went with their calls */
    free(h);
    b->http = NULL;
    curl_global_cleanup();
}

void *xfer_new(struct bridge *b, struct xfer *x)
{
    struct http *h = http_get(b);
    if (h == NULL || (x->easy = curl_easy_init()) == NULL)
        return NULL;
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
    return x->easy;
}

int xfer_start(struct bridge *b, struct xfer *x)
{
    return curl_multi_add_handle(b->http->multi, x->easy) == CURLM_OK ? 0 : -1;
}

void xfer_free(struct bridge *b, struct xfer *x)
{
    if (x->easy == NULL)
        return;
    curl_multi_remove_handle(b->http->multi, x->easy);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
}

static void http_release(void *data)
{
    struct req *r = data;
    xfer_free(r->x.c->b, &r->x);
    curl_slist_free_all(r->hdrs);
    buf_free(&r->body);
    buf_free(&r->head);
    free(r);
}

static size_t body_cb(char *data, size_t size, size_t n, void *userp)
{
    struct req *r = userp;
    size_t len = size * n, keep = len;
    if (buf_len(&r->body) + keep > HTTP_BODY_MAX) {
        keep = HTTP_BODY_MAX - buf_len(&r->body);
        r->truncated = true;
    }
    if (keep && buf_append(&r->body, data, keep) < 0)
        r->truncated = true;
    return len;                       /* the rest is read and dropped */
}

static size_t header_cb(char *data, size_t size, size_t n, void *userp)
{
    struct req *r = userp;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
        buf_clear(&r->head);          /* a new response (after a redirect or a 100) */
    if (buf_len(&r->head) + len <= HTTP_HEADERS_MAX && buf_append(&r->head, data, len) == 0)
        return len;
    r->truncated = true;
    return len;
}

/* headers: lower-cased name -> value; a repeated field's values joined by
 * ", " (RFC 9110 5.3). */
static void push_headers(lua_State *L, const struct buf *head)
{
    const char *p = buf_head(head), *end = p + buf_len(head);
    lua_newtable(L);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        const char *colon = memchr(p, ':', (size_t)((eol ? eol : end) - p));
        if (colon && colon > p && !(p[0] == 'H' && end - p > 5 && memcmp(p, "HTTP/", 5) == 0)) {
            luaL_Buffer name;
            luaL_buffinit(L, &name);
            for (const char *q = p; q < colon; q++)
                luaL_addchar(&name, (char)(*q >= 'A' && *q <= 'Z' ? *q + 32 : *q));
            luaL_pushresult(&name);
            const char *v = colon + 1, *ve = eol ? eol : end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_rawset(L, -3);
        }
        p = next;
    }
}

static int http_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lcall *c = (struct lcall *)ctx;
    struct req *r = c->waitdata;
    int n = 1;
    (void)status;
    if (r->x.result != CURLE_OK) {
        n = call_fail(L, "http: %s", r->err[0] ? r->err : curl_easy_strerror((CURLcode)r->x.result));
    } else {
        long code = 0;
        curl_easy_getinfo(r->x.easy, CURLINFO_RESPONSE_CODE, &code);
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, code);
        lua_setfield(L, -2, "status");
        push_headers(L, &r->head);
        lua_setfield(L, -2, "headers");
        lua_pushlstring(L, buf_head(&r->body), buf_len(&r->body));
        lua_setfield(L, -2, "body");
        if (r->truncated) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "truncated");
        }
    }
    call_release(c);
    return n;
}

static bool opt_bool(lua_State *L, const char *key)
{
    lua_getfield(L, 1, key);
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The request headers: {["Name"] = "value"} or {"Name: value", ...}, into
 * *list_r: 0, or -1 out of memory (nothing kept); a misuse raises. */
static int request_headers(lua_State *L, int idx, struct curl_slist **list_r)
{
    struct curl_slist *list = NULL;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *line;
        if (lua_type(L, -2) == LUA_TSTRING) {
            if (!lua_isstring(L, -1)) {
                curl_slist_free_all(list);
                luaL_error(L, "http: header %s is not a string", lua_tostring(L, -2));
            }
            line = lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
        } else {
            if (lua_type(L, -1) != LUA_TSTRING) {
                curl_slist_free_all(list);
                luaL_error(L, "http: headers must be strings");
            }
            line = lua_tostring(L, -1);
            lua_pushvalue(L, -1);
        }
        if (strpbrk(line, "\r\n")) {
            curl_slist_free_all(list);
            luaL_error(L, "http: a header holds a line break");
        }
        struct curl_slist *more = curl_slist_append(list, line);
        if (more == NULL) {
            curl_slist_free_all(list);
            return -1;
        }
        list = more;
        lua_pop(L, 2);
    }
    *list_r = list;
    return 0;
}

static int l_http(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct lcall *c = call_waitable(L, "luasmtpd.http");
    lua_getfield(L, 1, "url");
    const char *url = lua_tostring(L, -1);
    if (url == NULL)
        return luaL_error(L, "http: url missing");
    size_t body_len = 0;
    lua_getfield(L, 1, "body");
    const char *body = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &body_len);
    lua_getfield(L, 1, "method");
    const char *method = luaL_optstring(L, -1, body ? "POST" : "GET");
    for (const char *m = method; *m; m++)
        if (!(*m >= 'A' && *m <= 'Z'))
            return luaL_error(L, "http: method '%s' is not an HTTP method name", method);
    double timeout = call_opt_timeout(L, 1, HTTP_TIMEOUT);
    lua_getfield(L, 1, "cafile");
    const char *cafile = lua_tostring(L, -1);
    struct curl_slist *hdrs = NULL;
    if (lua_getfield(L, 1, "headers") != LUA_TNIL) {
        luaL_checktype(L, -1, LUA_TTABLE);
        if (request_headers(L, lua_gettop(L), &hdrs) < 0)
            return call_fail(L, "http: out of memory");
    }

    struct req *r = calloc(1, sizeof(*r));
    CURL *e = r ? xfer_new(c->b, &r->x) : NULL;
    if (e == NULL) {
        curl_slist_free_all(hdrs);
        free(r);
        return call_fail(L, "http: cannot start a request (out of memory)");
    }
    r->x.c = c;
    r->hdrs = hdrs;
    buf_init(&r->body, HTTP_BODY_MAX);
    buf_init(&r->head, HTTP_HEADERS_MAX);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->err);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "luasmtpd/" LUASMTPD_VERSION);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    if (opt_bool(L, "follow")) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)HTTP_REDIRECTS);
    }
    if (opt_bool(L, "insecure")) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (cafile)
        curl_easy_setopt(e, CURLOPT_CAINFO, cafile);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, "");
    }
    CURLcode urc = curl_easy_setopt(e, CURLOPT_URL, url);
    if (urc != CURLE_OK || xfer_start(c->b, &r->x) < 0) {
        http_release(r);
        return call_fail(L, "http: cannot request %s", url);
    }
    /* curl keeps the timeout (CURLOPT_TIMEOUT_MS) */
    return call_wait(L, c, r, http_release, CALL_NO_TIMEOUT, http_k);
}

static void http_open(lua_State *L)
{
    lua_pushcfunction(L, l_http);
    lua_setfield(L, -2, "http");
}

const struct action http_action = { .open = http_open, .stop = http_free };
