/* tls_load: the TLS load generator of make bench (W6, docs/performance.md).
 * smtp-source speaks no TLS; this one does, on one libev loop, so that the
 * client is not what a run measures.
 *
 *   tls_load -p PORT [-n CONNECTIONS] [-c CONCURRENT] [-s SIZE] [-r] [-t | -i]
 *
 * Each connection to 127.0.0.1:PORT (loopback only, by construction): the
 * greeting, EHLO, STARTTLS, a TLS 1.3 handshake on X25519, EHLO, MAIL,
 * RCPT, DATA with one SIZE-byte message (default 1024), QUIT.  -c at a
 * time (default 20) until -n (default 1000) are done.
 *   -r  each handshake resumes from a session ticket, as a device
 *       reconnecting would: the -c connections at a time are -c devices,
 *       each offering the last ticket it was given (a TLS 1.3 client uses
 *       a ticket once, RFC 8446 C.4, so the first -c handshakes are full);
 *   -t  TLS from the first byte and no SMTP: the handshake, close_notify
 *       both ways, closed (a bare handshake, against openssl s_server);
 *   -i  -c connections, each up to the EHLO after STARTTLS, then silent
 *       until standard input closes; "ready" is printed once all are (the
 *       server's memory per idle TLS connection); then each QUITs.  20
 *       are on their way at a time, as devices arriving over a while
 *       would be (a burst of thousands overflows a listen queue).
 * Every reply's code is checked: anything else, a close, or 30 s of
 * silence fails the connection, and any failure makes the exit status 1.
 * The last line printed is
 *   connections=N failed=N resumed=N seconds=S cpu=S
 * (cpu: this process's own user + system time). */
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONC_MAX 10000
#define CONNS_MAX 10000000L
#define SIZE_MAX_MSG (10L << 20)
#define REPLY_MAX 4096      /* a reply's lines buffered at once */
#define TIMEOUT 30.0
#define IDLE_OPENING 20     /* -i: connections on their way to idle at once */

enum state {
    S_CONNECT, S_GREETING, S_EHLO, S_STARTTLS, S_HANDSHAKE, S_EHLO_TLS,
    S_MAIL, S_RCPT, S_DATA, S_DOT, S_IDLE, S_QUIT, S_SHUTDOWN,
};
/* the reply each state waits for */
static const int expect[] = {
    [S_GREETING] = 220, [S_EHLO] = 250, [S_STARTTLS] = 220, [S_EHLO_TLS] = 250,
    [S_MAIL] = 250, [S_RCPT] = 250, [S_DATA] = 354, [S_DOT] = 250, [S_QUIT] = 221,
};

struct conn {
    ev_io io;                 /* first: the watcher is the connection */
    ev_timer timer;
    int fd;
    SSL *ssl;
    enum state state;
    int device;               /* its index in g.tickets */
    bool starttls;            /* EHLO offered it */
    const char *out;          /* what is left to write */
    size_t outlen;
    size_t inlen;
    char in[REPLY_MAX];
    struct conn *prev, *next; /* g.conns */
};

static struct {
    struct ev_loop *loop;
    SSL_CTX *ctx;
    SSL_SESSION **tickets;    /* -r: each device's last one */
    int *free_devices, nfree; /* the devices no connection is using */
    int port, conc;
    long n, size;
    bool resume, bare, idle;
    bool quitting;            /* -i: standard input has closed */
    long started, ok, failed, resumed, active, ready;
    long idle_now;            /* -i: connections in S_IDLE */
    struct conn *conns;       /* the open ones */
    char *message;            /* headers, body, final "." */
    size_t msglen;
    ev_io stdin_io;
} g;

static void drive(struct conn *c);

static void done(struct conn *c, const char *why)
{
    if (why) {
        if (g.failed++ < 5)
            fprintf(stderr, "tls_load: connection failed in state %d: %s\n", (int)c->state, why);
    } else {
        g.ok++;
    }
    ev_io_stop(g.loop, &c->io);
    ev_timer_stop(g.loop, &c->timer);
    if (c->state == S_IDLE)
        g.idle_now--;
    if (c->prev)
        c->prev->next = c->next;
    else
        g.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    g.free_devices[g.nfree++] = c->device;
    SSL_free(c->ssl);
    close(c->fd);
    free(c);
    g.active--;
}

static void want(struct conn *c, int events)
{
    if (c->io.events != events) {
        ev_io_stop(g.loop, &c->io);
        ev_io_set(&c->io, c->fd, events);
        ev_io_start(g.loop, &c->io);
    }
}

static void send_text(struct conn *c, enum state next, const char *s, size_t n)
{
    c->state = next;
    c->out = s;
    c->outlen = n;
}
#define SEND(c, next, lit) send_text(c, next, lit, sizeof(lit) - 1)

static int new_ticket(SSL *ssl, SSL_SESSION *s)
{
    struct conn *c = SSL_get_app_data(ssl);
    SSL_SESSION_free(g.tickets[c->device]);
    g.tickets[c->device] = s;
    return 1;                 /* kept: ours to free */
}

static void start_tls(struct conn *c)
{
    if ((c->ssl = SSL_new(g.ctx)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        done(c, "SSL_new failed");
        return;
    }
    SSL_set_app_data(c->ssl, c);
    if (g.resume && g.tickets[c->device])
        SSL_set_session(c->ssl, g.tickets[c->device]);
    SSL_set_connect_state(c->ssl);
    c->state = S_HANDSHAKE;
    drive(c);
}

/* A whole reply has come: check it and say what is next. */
static bool on_reply(struct conn *c, int code)
{
    if (code != expect[c->state]) {
        char why[64];
        snprintf(why, sizeof(why), "reply %d, not %d", code, expect[c->state]);
        done(c, why);
        return false;
    }
    switch (c->state) {
    case S_GREETING: SEND(c, S_EHLO, "EHLO load.test\r\n"); break;
    case S_EHLO:
        if (!c->starttls) {
            done(c, "EHLO offers no STARTTLS");
            return false;
        }
        SEND(c, S_STARTTLS, "STARTTLS\r\n");
        break;
    case S_STARTTLS:
        if (c->inlen) {
            done(c, "bytes after the 220 to STARTTLS");
            return false;
        }
        start_tls(c);
        return false;
    case S_EHLO_TLS:
        if (!g.idle) {
            SEND(c, S_MAIL, "MAIL FROM:<load@load.test>\r\n");
        } else if (g.quitting) {
            SEND(c, S_QUIT, "QUIT\r\n");
        } else {
            c->state = S_IDLE;
            g.idle_now++;
            ev_timer_stop(g.loop, &c->timer);
            if (++g.ready == g.conc) {
                printf("ready\n");
                fflush(stdout);
            }
        }
        break;
    case S_MAIL: SEND(c, S_RCPT, "RCPT TO:<sink@load.test>\r\n"); break;
    case S_RCPT: SEND(c, S_DATA, "DATA\r\n"); break;
    case S_DATA: send_text(c, S_DOT, g.message, g.msglen); break;
    case S_DOT: SEND(c, S_QUIT, "QUIT\r\n"); break;
    case S_QUIT:
        /* close_notify, as a polite client sends; without it OpenSSL takes
         * the session for a bad one, and no later connection resumes it */
        SSL_shutdown(c->ssl);
        done(c, NULL);
        return false;
    default: done(c, "a reply while none was due"); return false;
    }
    return true;
}

/* The complete lines buffered: 0 when more are needed, -1 when the
 * connection ended, 1 when a reply was taken (and the next command set). */
static int take_replies(struct conn *c)
{
    char *nl;
    while ((nl = memchr(c->in, '\n', c->inlen)) != NULL) {
        size_t len = (size_t)(nl - c->in) + 1;
        if (len < 5 || c->in[0] < '2' || c->in[0] > '5' || (c->in[3] != ' ' && c->in[3] != '-' &&
                                                          c->in[3] != '\r')) {
            done(c, "not an SMTP reply line");
            return -1;
        }
        bool last = c->in[3] != '-';
        if (c->state == S_EHLO && len >= 12 && strncasecmp(c->in + 4, "STARTTLS", 8) == 0)
            c->starttls = true;
        int code = (c->in[0] - '0') * 100 + (c->in[1] - '0') * 10 + (c->in[2] - '0');
        memmove(c->in, c->in + len, c->inlen - len);
        c->inlen -= len;
        if (last)
            return on_reply(c, code) ? 1 : -1;
    }
    if (c->inlen == sizeof(c->in)) {
        done(c, "a reply longer than 4 KB");
        return -1;
    }
    return 0;
}

/* A TLS call did not go through: wait for the socket, or end the
 * connection (well, when it is the close awaited in S_SHUTDOWN). */
static void tls_error(struct conn *c, int r, const char *what)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ: want(c, EV_READ); return;
    case SSL_ERROR_WANT_WRITE: want(c, EV_WRITE); return;
    case SSL_ERROR_ZERO_RETURN:
        if (c->state == S_SHUTDOWN) {
            done(c, NULL);
            return;
        }
        /* fall through */
    default: {
        char why[160];
        unsigned long e = ERR_get_error();
        snprintf(why, sizeof(why), "%s: %s", what, e ? ERR_reason_error_string(e) : "closed");
        ERR_clear_error();
        done(c, why);
        return;
    }
    }
}

static void drive(struct conn *c)
{
    for (;;) {
        if (c->state == S_HANDSHAKE) {
            int r = SSL_do_handshake(c->ssl);
            if (r != 1) {
                tls_error(c, r, "handshake");
                return;
            }
            g.resumed += SSL_session_reused(c->ssl);
            if (g.bare) {
                SSL_shutdown(c->ssl);       /* our close_notify; then read to the server's */
                c->state = S_SHUTDOWN;
            } else {
                SEND(c, S_EHLO_TLS, "EHLO load.test\r\n");
            }
        }
        while (c->outlen) {
            ssize_t n;
            if (c->ssl) {
                int r = SSL_write(c->ssl, c->out, (int)c->outlen);
                if (r <= 0) {
                    tls_error(c, r, "write");
                    return;
                }
                n = r;
            } else if ((n = write(c->fd, c->out, c->outlen)) < 0) {
                if (errno == EAGAIN) {
                    want(c, EV_WRITE);
                    return;
                }
                done(c, strerror(errno));
                return;
            }
            c->out += n;
            c->outlen -= (size_t)n;
        }
        if (c->state == S_IDLE)
            want(c, EV_READ);       /* a close or a byte from the server is a failure */
        ssize_t n;
        char *to = c->in + c->inlen;
        size_t room = sizeof(c->in) - c->inlen;
        if (c->ssl) {
            int r = SSL_read(c->ssl, to, (int)room);
            if (r <= 0) {
                tls_error(c, r, "read");
                return;
            }
            n = r;
        } else if ((n = read(c->fd, to, room)) <= 0) {
            if (n < 0 && errno == EAGAIN) {
                want(c, EV_READ);
                return;
            }
            done(c, n == 0 ? "closed by the server" : strerror(errno));
            return;
        }
        if (c->state == S_SHUTDOWN)
            continue;                 /* read on to the server's close_notify */
        if (c->state == S_IDLE) {
            done(c, "the server spoke to an idle connection");
            return;
        }
        c->inlen += (size_t)n;
        ev_timer_again(g.loop, &c->timer);
        if (take_replies(c) < 0)
            return;
    }
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = (struct conn *)w;
    if (c->state == S_CONNECT) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            done(c, strerror(err));
            return;
        }
        if (g.bare) {
            start_tls(c);
            return;
        }
        c->state = S_GREETING;
        want(c, EV_READ);
    }
    drive(c);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    done((struct conn *)((char *)w - offsetof(struct conn, timer)), "30 s without a reply");
}

static void open_more(void)
{
    long want_open = g.idle ? g.conc : g.n;
    while (g.active < g.conc && g.started < want_open &&
           (!g.idle || g.active - g.idle_now < IDLE_OPENING)) {
        struct conn *c = calloc(1, sizeof(*c));
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c == NULL || fd < 0) {
            fprintf(stderr, "tls_load: %s\n", strerror(errno));
            exit(2);
        }
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((unsigned short)g.port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        g.started++;
        g.active++;
        c->fd = fd;
        c->device = g.free_devices[--g.nfree];
        if ((c->next = g.conns) != NULL)
            g.conns->prev = c;
        g.conns = c;
        ev_io_init(&c->io, on_io, fd, EV_WRITE);
        ev_timer_init(&c->timer, on_timeout, 0, TIMEOUT);
        ev_timer_again(g.loop, &c->timer);
        if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS) {
            done(c, strerror(errno));
            continue;
        }
        ev_io_start(g.loop, &c->io);
    }
}

/* before each wait: the next connections, or the end */
static void before_wait(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    open_more();
    if (g.active == 0)
        ev_break(loop, EVBREAK_ALL);
}

/* -i: standard input closed; each idle connection says QUIT */
static void on_stdin(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    char b[256];
    if (read(w->fd, b, sizeof(b)) > 0)
        return;
    ev_io_stop(loop, w);
    g.quitting = true;
    for (struct conn *c = g.conns, *next; c; c = next) {
        next = c->next;
        if (c->state == S_IDLE) {
            g.idle_now--;
            SEND(c, S_QUIT, "QUIT\r\n");
            ev_timer_again(loop, &c->timer);
            drive(c);
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: tls_load -p PORT [-n CONNECTIONS] [-c CONCURRENT] [-s SIZE] [-r] [-t | -i]\n");
    exit(2);
}

static long number(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        usage();
    return v;
}

static void make_message(void)
{
    static const char head[] = "From: <load@load.test>\r\nTo: <sink@load.test>\r\nSubject: W6\r\n\r\n";
    g.message = malloc((size_t)g.size + 80);
    if (g.message == NULL)
        exit(2);
    size_t n = sizeof(head) - 1;
    memcpy(g.message, head, n);
    while (n + 2 < (size_t)g.size) {
        size_t line = (size_t)g.size - n - 2 < 76 ? (size_t)g.size - n - 2 : 76;
        memset(g.message + n, 'x', line);
        memcpy(g.message + n + line, "\r\n", 2);
        n += line + 2;
    }
    memcpy(g.message + n, ".\r\n", 3);
    g.msglen = n + 3;
}

int main(int argc, char **argv)
{
    g.n = 1000;
    g.conc = 20;
    g.size = 1024;
    int o;
    while ((o = getopt(argc, argv, "p:n:c:s:rti")) != -1) {
        switch (o) {
        case 'p': g.port = (int)number(optarg, 1, 65535); break;
        case 'n': g.n = number(optarg, 1, CONNS_MAX); break;
        case 'c': g.conc = (int)number(optarg, 1, CONC_MAX); break;
        case 's': g.size = number(optarg, 100, SIZE_MAX_MSG); break;
        case 'r': g.resume = true; break;
        case 't': g.bare = true; break;
        case 'i': g.idle = true; break;
        default: usage();
        }
    }
    if (g.port == 0 || optind != argc || (g.bare && g.idle))
        usage();
    make_message();
    g.tickets = calloc((size_t)g.conc, sizeof(*g.tickets));
    g.free_devices = malloc((size_t)g.conc * sizeof(*g.free_devices));
    if (g.tickets == NULL || g.free_devices == NULL) {
        fprintf(stderr, "tls_load: out of memory\n");
        return 2;
    }
    for (g.nfree = 0; g.nfree < g.conc; g.nfree++)
        g.free_devices[g.nfree] = g.conc - 1 - g.nfree;
    if ((g.ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
        SSL_CTX_set_min_proto_version(g.ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set1_groups_list(g.ctx, "X25519") != 1) {
        fprintf(stderr, "tls_load: cannot set up TLS 1.3 on X25519\n");
        return 2;
    }
    /* a benchmark of a loopback server with a throwaway certificate:
     * the certificate is not verified */
    SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(g.ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* a close without close_notify reads as one (-t's end) */
    SSL_CTX_set_options(g.ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(g.ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(g.ctx, new_ticket);
    g.loop = EV_DEFAULT;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g.conc + 16) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)g.conc + 16 ? rl.rlim_max : (rlim_t)g.conc + 16;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ev_prepare prepare;
    ev_prepare_init(&prepare, before_wait);
    ev_prepare_start(g.loop, &prepare);
    if (g.idle) {
        ev_io_init(&g.stdin_io, on_stdin, 0, EV_READ);
        ev_io_start(g.loop, &g.stdin_io);
    }
    ev_tstamp t0 = ev_time();
    open_more();
    ev_run(g.loop, 0);
    double secs = ev_time() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("connections=%ld failed=%ld resumed=%ld seconds=%.3f cpu=%.3f\n", g.ok + g.failed, g.failed,
           g.resumed, secs,
           (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    return g.failed ? 1 : 0;
}
