/* libFuzzer target for a whole SMTP session: the input is what a client
 * sends, from the greeting on, to the real state machine (session, smtp,
 * the DATA scanner, AUTH) over a socketpair inside the process, with hooks
 * whose verdicts depend on the input (reject, multi-line text, disconnect,
 * AUTH).  Input that starts like a PROXY header is read as one first.
 * Each message that reaches the end of data is run through the MIME
 * extractor, and the console records it all (trace, kept message, events).  Checks: the session ends, every reply line is well formed.
 *   make fuzz [FUZZ_SECONDS=seconds]    (clang, ASan+UBSan; seeds: tests/fuzz/session) */
#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "console.h"
#include "hook.h"
#include "log.h"
#include "mime.h"
#include "server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A verdict from the first letter of the address or name. */
static void decide(const char *what, struct verdict *v)
{
    switch (what && *what ? what[0] : '-') {
    case 'r': v->code = 550; snprintf(v->text, sizeof(v->text), "no %s", what); break;
    case 't': v->code = 451; break;
    case 'm': v->code = 250; snprintf(v->text, sizeof(v->text), "first\nsecond\n\nfourth"); break;
    case 'x': v->code = 421; v->disconnect = true; break;
    case 'f': v->code = VERDICT_REJECT; break;
    default: break;
    }
}

static enum hook_status call(void *ctx, struct smtp *s, enum hook_stage stage,
                             const struct hook_args *a, struct verdict *v)
{
    (void)ctx;
    (void)s;
    switch (stage) {
    case HOOK_HELO: decide(a->name, v); break;
    case HOOK_MAIL:
    case HOOK_RCPT:
    case HOOK_VRFY:
    case HOOK_EXPN: decide(a->address, v); break;
    case HOOK_AUTH:
        if (strcmp(a->user, a->password) != 0)
            v->code = VERDICT_REJECT;
        break;
    case HOOK_MESSAGE: {
        struct mime *m = NULL;
        struct buf out;
        if (mime_parse(a->message, a->size, NULL, &m) == 0) {
            const struct mime_part *text, *html;
            mime_bodies(m, &text, &html);
            buf_init(&out, 4 * a->size + 64);
            if (text)
                (void)mime_decode(m, text, true, &out);
            buf_free(&out);
        }
        mime_free(&m);
        char first[2] = { a->size ? a->message[0] : '-', '\0' };   /* the message has no NUL */
        decide(first, v);
        break;
    }
    default: break;
    }
    return HOOK_DONE;
}

static void close_cb(void *ctx, struct smtp *s)
{
    (void)ctx;
    (void)s;
}

static bool defines(void *ctx, enum hook_stage stage)
{
    (void)ctx;
    return stage == HOOK_AUTH || stage == HOOK_VRFY;
}

static const struct hooks fuzz_hooks = { .call = call, .close = close_cb, .defines = defines };

struct client {
    int        fd;
    const uint8_t *data;
    size_t     size, sent;
    ev_io      rio, wio;
    struct buf replies;
};

/* Every reply line: three digits, then ' ' or '-', then text, CRLF. */
static void check_replies(struct buf *b)
{
    const char *p = buf_head(b), *end = buf_tail(b);
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            abort();    /* a reply cut in the middle */
        size_t n = (size_t)(lf - p);
        if (n < 5 || p[n - 1] != '\r' || p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' ||
            p[2] < '0' || p[2] > '9' || (p[3] != ' ' && p[3] != '-'))
            abort();
        p = lf + 1;
    }
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct client *c = w->data;
    (void)revents;
    if (buf_reserve(&c->replies, 4096) < 0)
        abort();
    ssize_t n = read(c->fd, buf_tail(&c->replies), buf_room(&c->replies));
    if (n > 0) {
        buf_commit(&c->replies, (size_t)n);
        return;
    }
    ev_io_stop(loop, &c->rio);   /* the server closed: the session is over */
    ev_io_stop(loop, &c->wio);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct client *c = w->data;
    (void)revents;
    ssize_t n = write(c->fd, c->data + c->sent, c->size - c->sent);
    if (n > 0)
        c->sent += (size_t)n;
    if (n <= 0 || c->sent == c->size) {
        ev_io_stop(loop, &c->wio);
        shutdown(c->fd, SHUT_WR);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config cfg;
    static struct ev_loop *loop;
    static struct server srv;
    char err[CONFIG_ERR_MAX];

    if (loop == NULL) {
        log_threshold = LV_ERROR;
        config_defaults(&cfg);
        config_set(&cfg, "max-size", "16K", err);
        config_set(&cfg, "max-recipients", "5", err);
        config_set(&cfg, "allow-insecure-auth", "true", err);
        config_set(&cfg, "hostname", "fuzz.test", err);
        /* one server for every input: per-client state (rates, tarpits)
         * must not carry from one to the next */
        config_set(&cfg, "client-limit-exceptions", "0.0.0.0/0,::/0", err);
        if (config_finish(&cfg, err) < 0)
            abort();
        cfg.nlisten = 0;
        /* the console records every session: traces, kept messages, events */
        if (console_share(8, 1 << 20, 4, 1) < 0)
            abort();
        console_use(0);
        console_listen(1);
        loop = ev_default_loop(0);
        if (server_init(&srv, loop, &cfg, &fuzz_hooks, NULL) < 0)
            abort();
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    struct net_addr peer;
    net_loopback_addr(&peer);

    struct client c = { .fd = sv[1], .data = data, .size = size };
    buf_init(&c.replies, 1 << 22);
    ev_io_init(&c.rio, read_cb, c.fd, EV_READ);
    ev_io_init(&c.wio, write_cb, c.fd, EV_WRITE);
    c.rio.data = c.wio.data = &c;
    ev_io_start(loop, &c.rio);
    if (size)
        ev_io_start(loop, &c.wio);
    else
        shutdown(c.fd, SHUT_WR);
    /* input that starts like a PROXY header comes through a listener that
     * takes one (--proxy-protocol) */
    bool proxy = (size >= 5 && memcmp(data, "PROXY", 5) == 0) || (size >= 2 && memcmp(data, "\r\n\r\n", size < 4 ? size : 4) == 0);
    if (server_adopt(&srv, sv[0], &peer, proxy ? SESSION_PROXY : 0) < 0)
        abort();
    ev_run(loop, 0);
    if (srv.sessions.sessions != NULL)
        abort();     /* the loop ended with the session still open: it hung */
    check_replies(&c.replies);
    buf_free(&c.replies);
    close(c.fd);
    return 0;
}
