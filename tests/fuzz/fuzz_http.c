/* libFuzzer target for the console's HTTP side (core/admin.c): the input is
 * what an HTTP client sends, to the real listener (libmicrohttpd in a libev
 * loop) over loopback TCP, with two messages kept (one with an attachment)
 * so that /api/messages/ID, /raw and /attachments/N have something to
 * serve.  Checks: every connection ends (answered or closed; an event
 * stream once its head is in), with a status line when anything is
 * answered.
 *   make fuzz [FUZZ_SECONDS=seconds]    (clang, ASan+UBSan; seeds: tests/fuzz/http) */
#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "buf.h"
#include "config.h"
#include "console.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char plain[] = "Subject: one\r\nFrom: a@b.example\r\n\r\nhello\r\n";
static const char parts[] =
    "Subject: two\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    "--b\r\nContent-Type: text/plain\r\n\r\ntext\r\n"
    "--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
    "--b\r\nContent-Type: image/png; name=\"x y.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "iVBORw0KGgo=\r\n--b--\r\n";

struct client {
    int        fd;
    const uint8_t *data;
    size_t     size, sent;
    ev_io      rio, wio;
    ev_timer   limit, eof;
    struct buf reply;
};

static void end(struct ev_loop *loop, struct client *c)
{
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    ev_timer_stop(loop, &c->limit);
    ev_timer_stop(loop, &c->eof);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct client *c = w->data;
    char chunk[65536];
    (void)revents;
    ssize_t n = read(c->fd, chunk, sizeof(chunk));
    if (n > 0) {
        buf_append(&c->reply, chunk, (size_t)n);   /* the first bytes are enough */
        /* /api/events never ends of itself: its head is the answer */
        if (!memmem(buf_head(&c->reply), buf_len(&c->reply), "text/event-stream", 17))
            return;
    }
    end(loop, c);
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
        ev_timer_start(loop, &c->eof);
    }
}

/* The end of the input, a moment after its last bytes: arriving with them,
 * libmicrohttpd (its epoll edge-triggered) notices it only at its idle
 * timeout, and every input would take that long. */
static void eof_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct client *c = w->data;
    (void)loop;
    (void)revents;
    shutdown(c->fd, SHUT_WR);
}

static void limit_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    abort();                 /* neither answered nor closed: it hung */
}

/* A port nothing listens on now. */
static int free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config cfg;
    static struct ev_loop *loop;
    static struct admin *admin;
    static int port;
    char err[CONFIG_ERR_MAX];

    if (loop == NULL) {
        log_threshold = LV_ERROR;
        config_defaults(&cfg);
        port = free_port();
        char where[32];
        snprintf(where, sizeof(where), "127.0.0.1:%d", port);
        if (config_set(&cfg, "http", where, err) < 0 || config_finish(&cfg, err) < 0)
            abort();
        if (console_share(8, 1 << 20, 4, 1) < 0)
            abort();
        console_use(0);
        const char *rcpts[] = { "ops@site.example" };
        const struct console_message one = { .code = 250, .sender = "a@b.example", .rcpts = rcpts, .nrcpts = 1,
                                             .raw = plain, .raw_len = sizeof(plain) - 1 };
        const struct console_message two = { .code = 550, .sender = "c@d.example", .rcpts = rcpts, .nrcpts = 1,
                                             .raw = parts, .raw_len = sizeof(parts) - 1 };
        console_keep(&one);
        console_keep(&two);
        loop = ev_default_loop(0);
        if (admin_start(&admin, loop, &cfg, err, sizeof(err)) < 0)
            abort();
    }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct client c = { .data = data, .size = size };
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        abort();
    buf_init(&c.reply, 1 << 16);
    ev_io_init(&c.rio, read_cb, c.fd, EV_READ);
    ev_io_init(&c.wio, write_cb, c.fd, EV_WRITE);
    ev_timer_init(&c.limit, limit_cb, 30., 0.);
    ev_timer_init(&c.eof, eof_cb, 0.001, 0.);
    c.rio.data = c.wio.data = c.eof.data = &c;
    ev_io_start(loop, &c.rio);
    ev_timer_start(loop, &c.limit);
    ev_io_start(loop, &c.wio);
    while (ev_is_active(&c.rio))
        ev_run(loop, EVRUN_ONCE);
    if (buf_len(&c.reply) && (buf_len(&c.reply) < 12 || memcmp(buf_head(&c.reply), "HTTP/1.", 7) != 0))
        abort();
    buf_free(&c.reply);
    close(c.fd);
    return 0;
}
