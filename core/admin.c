#include "admin.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "clock.h"
#include "console.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "mime.h"
#include "net.h"

#define ADMIN_CONNECTIONS   32        /* at once, in all */
#define ADMIN_PER_IP        8
#define ADMIN_IDLE          10        /* seconds a connection may send nothing */
#define ADMIN_REQUEST_BYTES 16384     /* request line and headers: more gets 431 */
#define ADMIN_METRICS_MAX   (4u << 20)
#define ADMIN_STREAMS       8         /* /api/events readers at once */
#define ADMIN_LIST_DEFAULT  50
#define ADMIN_BODY_MAX      (1u << 20)    /* text or HTML a message's view shows */
#define ADMIN_REPLY_MAX     (256u << 20)  /* a rendered answer */
#define ADMIN_PING          15.0      /* seconds between comments on an idle stream */
#define ADMIN_BATCH         0.05      /* seconds between a stream's batches of events */

/* The page at / (core/console.html, compiled in). */
extern const char console_html[];

struct admin;

/* One reader of /api/events. */
struct stream {
    struct admin          *a;
    struct MHD_Connection *c;
    struct stream         *prev, *next;
    uint64_t               seq;       /* the next event it gets */
    struct buf             out;       /* rendered, not yet taken by MHD */
    bool                   suspended;
    bool                   due;       /* woken by the poll timer: may take new events */
    double                 wrote;     /* when it was last sent something */
};

struct admin {
    struct MHD_Daemon   *d;
    struct ev_loop      *loop;
    const struct config *cfg;
    ev_io                io;         /* MHD's epoll descriptor */
    ev_timer             timer;      /* MHD's next timeout */
    ev_timer             poll;       /* streams: new events (from any worker) */
    struct stream       *streams;
    unsigned             nstreams;
    bool                 open;       /* without credentials, loopback only */
};

static void logger(void *cls, const char *fmt, va_list ap)
{
    char text[512];
    (void)cls;
    vsnprintf(text, sizeof(text), fmt, ap);
    text[strcspn(text, "\n")] = '\0';
    log_msg(LV_DEBUG, NULL, "http: %s", text);
}

static bool loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* Without --http-token or --http-user, only this host may connect: the
 * console shows mail, and anyone who reaches it reads it. */
static enum MHD_Result admit(void *cls, const struct sockaddr *sa, socklen_t len)
{
    struct admin *a = cls;
    if (!a->open || loopback(sa))
        return MHD_YES;
    struct net_addr peer;
    char text[NET_ADDRSTR_MAX];
    memset(&peer, 0, sizeof(peer));
    memcpy(&peer.ss, sa, len < sizeof(peer.ss) ? len : sizeof(peer.ss));
    peer.len = len;
    log_msg(LV_WARN, NULL, "http: refused %s: without --http-token or --http-user only loopback may connect",
            net_addr_str(&peer, text));
    return MHD_NO;
}

/* Equal, in a time that does not tell where they differ. */
static bool same(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[i < lb ? i : 0]);
    return d == 0;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               const void *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");   /* a message is never run as a page */
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return respond(c, status, "text/plain; charset=utf-8", msg, strlen(msg));
}

/* Credentials as --http-token (Bearer) or --http-user/--http-password
 * (Basic) ask: MHD_YES when they are right (or none is asked), else the
 * 401 has been queued (or MHD_NO). */
static enum MHD_Result authorized(const struct admin *a, struct MHD_Connection *c, bool *ok)
{
    const struct config *cfg = a->cfg;
    *ok = true;
    if (cfg->http_token[0]) {
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (h && strncasecmp(h, "Bearer ", 7) == 0 && same(h + 7, cfg->http_token))
            return MHD_YES;
        *ok = false;
        struct MHD_Response *r = MHD_create_response_from_buffer(13, (void *)"Unauthorized\n",
                                                                 MHD_RESPMEM_PERSISTENT);
        if (r == NULL)
            return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"luasmtpd\"");
        enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_UNAUTHORIZED, r);
        MHD_destroy_response(r);
        return rc;
    }
    if (cfg->http_user[0]) {
        char *password = NULL, *user = MHD_basic_auth_get_username_password(c, &password);
        bool right = user && password && same(user, cfg->http_user) && same(password, cfg->http_password);
        MHD_free(user);
        MHD_free(password);
        if (right)
            return MHD_YES;
        *ok = false;
        struct MHD_Response *r = MHD_create_response_from_buffer(13, (void *)"Unauthorized\n",
                                                                 MHD_RESPMEM_PERSISTENT);
        if (r == NULL)
            return MHD_NO;
        enum MHD_Result rc = MHD_queue_basic_auth_fail_response(c, "luasmtpd", r);
        MHD_destroy_response(r);
        return rc;
    }
    return MHD_YES;
}

static enum MHD_Result serve_metrics(struct MHD_Connection *c)
{
    struct buf b;
    buf_init(&b, ADMIN_METRICS_MAX);
    enum MHD_Result rc = metrics_render(&b) == 0
                             ? respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", buf_head(&b),
                                       buf_len(&b))
                             : text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    buf_free(&b);
    return rc;
}

static void rearm(struct admin *a);

/* Answer with what b holds (freed here). */
static enum MHD_Result respond_buf(struct MHD_Connection *c, int rc, const char *type, struct buf *b)
{
    enum MHD_Result r = rc < 0 ? text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n")
                               : respond(c, MHD_HTTP_OK, type, buf_head(b), buf_len(b));
    buf_free(b);
    return r;
}

#define JSON_TYPE "application/json; charset=utf-8"

static const char *arg(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    return v && *v ? v : NULL;
}

/* A decimal number of at most 18 digits, all of s up to end (or NUL). */
static bool number(const char *s, const char *end, unsigned long long *n)
{
    *n = 0;
    if (s == end || *s == '\0')
        return false;
    for (int d = 0; s != end && *s; s++, d++) {
        if (*s < '0' || *s > '9' || d == 18)
            return false;
        *n = *n * 10 + (unsigned)(*s - '0');
    }
    return true;
}

static enum MHD_Result serve_list(struct MHD_Connection *c)
{
    unsigned long long limit = ADMIN_LIST_DEFAULT;
    const char *l = arg(c, "limit"), *v = arg(c, "verdict");
    if (l && (!number(l, NULL, &limit) || limit == 0))
        return text(c, MHD_HTTP_BAD_REQUEST, "limit: a number from 1\n");
    if (v && strcmp(v, "accepted") && strcmp(v, "refused") && strcmp(v, "4xx") && strcmp(v, "5xx"))
        return text(c, MHD_HTTP_BAD_REQUEST, "verdict: accepted, refused, 4xx or 5xx\n");
    struct buf b;
    buf_init(&b, ADMIN_REPLY_MAX);
    int rc = console_list(&b, limit > 100000 ? 100000 : (unsigned)limit, arg(c, "sender"), v);
    return respond_buf(c, rc, JSON_TYPE, &b);
}

/* The decoded body of part p, at most ADMIN_BODY_MAX bytes, as "name":"...". */
static int body_field(struct buf *out, struct mime *m, const struct mime_part *p, const char *name)
{
    if (buf_printf(out, ",\"%s\":", name) < 0)
        return -1;
    if (p == NULL)
        return buf_append(out, "null", 4);
    struct buf t;
    buf_init(&t, ADMIN_BODY_MAX * 4 + 64);
    int rc = mime_decode(m, p, true, &t);
    size_t n = buf_len(&t) < ADMIN_BODY_MAX ? buf_len(&t) : ADMIN_BODY_MAX;
    rc |= json_str(out, buf_head(&t), n);
    buf_free(&t);
    return rc;
}

/* The message's object, and what its raw text shows: text, HTML, and
 * each attachment with the number /attachments/N takes. */
static int message_json(struct buf *out, const struct buf *meta, const struct buf *raw)
{
    int rc = buf_append(out, buf_head(meta), buf_len(meta) - 1);    /* all but its '}' */
    struct mime *m = NULL;
    if (buf_len(raw) && mime_parse(buf_head(raw), buf_len(raw), NULL, &m) == 0) {
        const struct mime_part *text, *html;
        mime_bodies(m, &text, &html);
        rc |= body_field(out, m, text, "text") | body_field(out, m, html, "html");
        rc |= buf_append(out, ",\"parts\":[", 10);
        unsigned n = 0;
        for (const struct mime_part *p = console_attachment(m, NULL); p; p = console_attachment(m, p), n++) {
            rc |= buf_printf(out, "%s{\"index\":%u,\"name\":", n ? "," : "", n) | json_cstr(out, p->filename);
            rc |= buf_append(out, ",\"type\":", 8) | json_cstr(out, p->type) | buf_append(out, "}", 1);
        }
        rc |= buf_append(out, "]", 1);
    }
    mime_free(&m);
    return rc | buf_append(out, "}", 1);
}

/* A file name for Content-Disposition: what is not plainly safe becomes _. */
static void safe_name(char *out, size_t size, const char *name)
{
    size_t o = 0;
    for (; name && *name && o + 1 < size; name++)
        out[o++] = (isalnum((unsigned char)*name) || strchr("._-", *name)) ? *name : '_';
    if (o == 0)
        o = (size_t)snprintf(out, size, "attachment");
    out[o] = '\0';
}

static enum MHD_Result serve_attachment(struct MHD_Connection *c, const struct buf *raw, unsigned long long n)
{
    struct mime *m = NULL;
    if (buf_len(raw) == 0 || mime_parse(buf_head(raw), buf_len(raw), NULL, &m) < 0)
        return text(c, MHD_HTTP_NOT_FOUND, "no such attachment\n");
    const struct mime_part *p = console_attachment(m, NULL);
    for (unsigned long long i = 0; p && i < n; i++)
        p = console_attachment(m, p);
    enum MHD_Result r;
    struct buf b;
    buf_init(&b, buf_len(raw) + 64);
    if (p == NULL) {
        r = text(c, MHD_HTTP_NOT_FOUND, "no such attachment\n");
    } else if (mime_decode(m, p, false, &b) < 0) {
        r = text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    } else {
        struct MHD_Response *res = MHD_create_response_from_buffer(buf_len(&b), (void *)buf_head(&b),
                                                                   MHD_RESPMEM_MUST_COPY);
        char disp[300], name[200];
        safe_name(name, sizeof(name), p->filename);
        snprintf(disp, sizeof(disp), "attachment; filename=\"%s\"", name);
        r = MHD_NO;
        if (res) {
            /* as a download, never shown in the console's own origin */
            MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
            MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
            MHD_add_response_header(res, "X-Content-Type-Options", "nosniff");
            r = MHD_queue_response(c, MHD_HTTP_OK, res);
            MHD_destroy_response(res);
        }
    }
    buf_free(&b);
    mime_free(&m);
    return r;
}

/* /api/messages/ID, /ID/raw, /ID/attachments/N */
static enum MHD_Result serve_message(struct MHD_Connection *c, const char *path)
{
    const char *slash = strchr(path, '/');
    unsigned long long id, n = 0;
    if (!number(path, slash, &id))
        return text(c, MHD_HTTP_NOT_FOUND, "Not found: see docs/console.md\n");
    enum { WHOLE, RAW, ATTACHMENT } what = WHOLE;
    if (slash && strcmp(slash, "/raw") == 0)
        what = RAW;
    else if (slash && strncmp(slash, "/attachments/", 13) == 0 && number(slash + 13, NULL, &n))
        what = ATTACHMENT;
    else if (slash)
        return text(c, MHD_HTTP_NOT_FOUND, "Not found: see docs/console.md\n");
    struct buf meta, raw, out;
    buf_init(&meta, ADMIN_REPLY_MAX);
    buf_init(&raw, ADMIN_REPLY_MAX);
    buf_init(&out, ADMIN_REPLY_MAX);
    int got = console_get(id, &meta, &raw);
    enum MHD_Result r;
    if (got < 0)
        r = text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    else if (got == 0)
        r = text(c, MHD_HTTP_NOT_FOUND, "no such message (or no longer kept: --keep, --keep-bytes)\n");
    else if (what == RAW && buf_len(&raw) == 0)
        r = text(c, MHD_HTTP_NOT_FOUND, "its text was not kept: larger than --keep-bytes, or refused by size\n");
    else if (what == RAW)
        r = respond(c, MHD_HTTP_OK, "message/rfc822", buf_head(&raw), buf_len(&raw));
    else if (what == ATTACHMENT)
        r = serve_attachment(c, &raw, n);
    else
        r = message_json(&out, &meta, &raw) < 0 ? text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n")
                                                : respond(c, MHD_HTTP_OK, JSON_TYPE, buf_head(&out), buf_len(&out));
    buf_free(&meta);
    buf_free(&raw);
    buf_free(&out);
    return r;
}

static enum MHD_Result serve_sessions(struct MHD_Connection *c)
{
    struct buf b;
    buf_init(&b, ADMIN_REPLY_MAX);
    int rc = console_sessions_json(&b, clock_wall_ms(false));
    return respond_buf(c, rc, JSON_TYPE, &b);
}

/* --- /api/events: Server-Sent Events ------------------------------------- */

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct stream *st = cls;
    (void)pos;
    /* New events are taken once a poll tick, not whenever the socket can
     * take more: under load a reader gets a batch every ADMIN_BATCH and is
     * not woken for every few messages. */
    if (buf_len(&st->out) == 0 && st->due) {
        st->due = false;
        console_events(&st->seq, &st->out);
        if (buf_len(&st->out) == 0 && ev_now(st->a->loop) - st->wrote >= ADMIN_PING)
            buf_append(&st->out, ": ping\n\n", 8);
    }
    size_t n = buf_len(&st->out) < max ? buf_len(&st->out) : max;
    if (n == 0) {
        /* nothing yet: parked until the poll timer sees an event */
        MHD_suspend_connection(st->c);
        st->suspended = true;
        return 0;
    }
    memcpy(out, buf_head(&st->out), n);
    buf_consume(&st->out, n);
    st->wrote = ev_now(st->a->loop);
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    struct admin *a = st->a;
    if (st->prev)
        st->prev->next = st->next;
    else
        a->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (--a->nstreams == 0)
        ev_timer_stop(a->loop, &a->poll);
    console_listen(-1);
    buf_free(&st->out);
    free(st);
}

static enum MHD_Result serve_events(struct admin *a, struct MHD_Connection *c)
{
    if (a->nstreams >= ADMIN_STREAMS)
        return text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "too many event streams\n");
    struct stream *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    st->a = a;
    st->c = c;
    st->seq = console_event_seq();
    st->due = true;
    st->wrote = ev_now(a->loop);
    buf_init(&st->out, 2 * CONSOLE_EVENTS * (CONSOLE_EVENT_MAX + 32));
    buf_append(&st->out, "retry: 2000\n\n", 13);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 65536, stream_read, st, stream_free);
    if (r == NULL) {
        buf_free(&st->out);
        free(st);
        return MHD_NO;
    }
    st->next = a->streams;
    if (a->streams)
        a->streams->prev = st;
    a->streams = st;
    if (a->nstreams++ == 0)
        ev_timer_again(a->loop, &a->poll);
    console_listen(1);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

/* Wake the parked streams that have something to send. */
static void poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct admin *a = w->data;
    (void)revents;
    uint64_t seq = console_event_seq();
    bool woke = false;
    for (struct stream *st = a->streams; st; st = st->next)
        if (st->suspended && (st->seq < seq || ev_now(loop) - st->wrote >= ADMIN_PING)) {
            st->suspended = false;
            st->due = true;
            MHD_resume_connection(st->c);
            woke = true;
        }
    if (woke) {
        MHD_run(a->d);
        rearm(a);
    }
}

static enum MHD_Result serve_page(struct MHD_Connection *c)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(console_html), (void *)console_html,
                                                             MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    /* the page's own script and style only; a message's HTML is shown in a
     * sandboxed frame that inherits this: no script, no remote image */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
                            "connect-src 'self'; img-src data:; frame-src 'self' about:; base-uri 'none'; "
                            "form-action 'none'; frame-ancestors 'none'");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **state)
{
    struct admin *a = cls;
    (void)version;
    (void)upload;
    /* answered once the headers are in; a body is never read */
    if (*state != NULL) {
        *upload_size = 0;
        return MHD_YES;
    }
    *state = a;
    bool ok;
    enum MHD_Result rc = authorized(a, c, &ok);
    if (!ok)
        return rc;
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool known = strcmp(url, "/metrics") == 0 || strcmp(url, "/") == 0 || strncmp(url, "/api/", 5) == 0;
    if (known && !get)
        return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only\n");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(c);
    if (strcmp(url, "/") == 0)
        return serve_page(c);
    if (strcmp(url, "/api/messages") == 0)
        return serve_list(c);
    if (strncmp(url, "/api/messages/", 14) == 0)
        return serve_message(c, url + 14);
    if (strcmp(url, "/api/sessions") == 0)
        return serve_sessions(c);
    if (strcmp(url, "/api/events") == 0)
        return serve_events(a, c);
    return text(c, MHD_HTTP_NOT_FOUND, "Not found: see docs/console.md\n");
}

/* After each run: when MHD wants to run next. */
static void rearm(struct admin *a)
{
    MHD_UNSIGNED_LONG_LONG ms;
    ev_timer_stop(a->loop, &a->timer);
    if (MHD_get_timeout(a->d, &ms) == MHD_YES) {
        ev_timer_set(&a->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(a->loop, &a->timer);
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct admin *a = w->data;
    (void)loop;
    (void)revents;
    MHD_run(a->d);
    rearm(a);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct admin *a = w->data;
    (void)loop;
    (void)revents;
    MHD_run(a->d);
    rearm(a);
}

int admin_start(struct admin **a_r, struct ev_loop *loop, const struct config *cfg, char *err, size_t errsz)
{
    char nerr[NET_ERR_MAX], where[NET_ADDRSTR_MAX];
    *a_r = NULL;
    if (!cfg->http_on)
        return 0;
    struct admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errsz, "--http: out of memory");
        return -1;
    }
    a->loop = loop;
    a->cfg = cfg;
    a->open = !cfg->http_token[0] && !cfg->http_user[0];
    int fd = net_listen(&cfg->http, 64, cfg->workers > 1, nerr);
    if (fd < 0) {
        snprintf(err, errsz, "--http: %s", nerr);
        free(a);
        return -1;
    }
    struct net_addr bound;
    if (net_local_addr(fd, &bound) < 0)
        bound = cfg->http;
    a->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME, 0, admit, a, handle, a,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)ADMIN_CONNECTIONS,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)ADMIN_PER_IP,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ADMIN_IDLE,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ADMIN_REQUEST_BYTES,
                            MHD_OPTION_EXTERNAL_LOGGER, logger, NULL, MHD_OPTION_END);
    const union MHD_DaemonInfo *info = a->d ? MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (info == NULL) {
        snprintf(err, errsz, "--http: libmicrohttpd does not start on %s", net_addr_str(&bound, where));
        if (a->d)
            MHD_stop_daemon(a->d);
        close(fd);
        free(a);
        return -1;
    }
    ev_io_init(&a->io, io_cb, info->epoll_fd, EV_READ);
    a->io.data = a;
    ev_io_start(loop, &a->io);
    ev_init(&a->timer, timer_cb);
    a->timer.data = a;
    ev_init(&a->poll, poll_cb);
    a->poll.repeat = ADMIN_BATCH;
    a->poll.data = a;
    rearm(a);
    log_msg(LV_INFO, NULL, "http: listening on %s%s", net_addr_str(&bound, where),
            a->open ? " (loopback clients only: no --http-token or --http-user)" : "");
    *a_r = a;
    return 0;
}

void admin_stop(struct admin **ap)
{
    struct admin *a = *ap;
    if (a == NULL)
        return;
    ev_io_stop(a->loop, &a->io);
    ev_timer_stop(a->loop, &a->timer);
    ev_timer_stop(a->loop, &a->poll);
    for (struct stream *st = a->streams; st; st = st->next)   /* MHD stops no parked one */
        if (st->suspended) {
            st->suspended = false;
            st->due = true;
            MHD_resume_connection(st->c);
        }
    MHD_socket fd = MHD_quiesce_daemon(a->d);
    MHD_stop_daemon(a->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    free(a);
    *ap = NULL;
}
