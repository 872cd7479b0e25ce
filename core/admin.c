#include "admin.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "net.h"

#define ADMIN_CONNECTIONS   32        /* at once, in all */
#define ADMIN_PER_IP        8
#define ADMIN_IDLE          10        /* seconds a connection may send nothing */
#define ADMIN_REQUEST_BYTES 16384     /* request line and headers: more gets 431 */
#define ADMIN_METRICS_MAX   (4u << 20)

struct admin {
    struct MHD_Daemon   *d;
    struct ev_loop      *loop;
    const struct config *cfg;
    ev_io                io;         /* MHD's epoll descriptor */
    ev_timer             timer;      /* MHD's next timeout */
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
    if (strcmp(url, "/metrics") == 0)
        return get ? serve_metrics(c) : text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only\n");
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
    a->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, admit, a, handle, a,
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
    MHD_socket fd = MHD_quiesce_daemon(a->d);
    MHD_stop_daemon(a->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    free(a);
    *ap = NULL;
}
