#include "replay.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "server.h"

enum step { R_GREETING, R_EHLO, R_MAIL, R_RCPT, R_DATA, R_MESSAGE, R_QUIT, R_DONE };

struct client {
    const struct replay_opts *o;
    struct ev_loop *loop;
    int        fd;
    ev_io      io, wio;
    struct buf in, out;
    char      *message;      /* dot-stuffed, CRLF lines, ending "\r\n.\r\n" */
    size_t     msglen;
    enum step  step;
    int        rcpt;         /* next recipient to send */
    int        accepted_rcpts;
    bool       accepted;     /* the message got a 2xx */
};

static int read_file(const char *path, char **data_r, size_t *len_r)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    struct buf b;
    if (f == NULL)
        return -1;
    buf_init(&b, 1u << 30);
    for (;;) {
        if (buf_reserve(&b, 65536) < 0)
            break;
        size_t n = fread(buf_tail(&b), 1, buf_room(&b), f);
        if (n == 0)
            break;
        buf_commit(&b, n);
    }
    int err = ferror(f);
    if (f != stdin)
        fclose(f);
    if (err) {
        buf_free(&b);
        return -1;
    }
    *len_r = buf_len(&b);
    *data_r = b.data;   /* start is 0: nothing was consumed */
    return 0;
}

/* The message as a client sends it: CRLF line ends, dot-stuffed, ".". */
static int prepare_message(struct client *c, const char *raw, size_t len)
{
    struct buf out;
    buf_init(&out, (1u << 30) + (1u << 20));
    size_t i = 0;
    int rc = 0;
    while (i < len && rc == 0) {
        const char *lf = memchr(raw + i, '\n', len - i);
        size_t end = lf ? (size_t)(lf - raw) : len;
        size_t n = end - i;
        if (n > 0 && raw[end - 1] == '\r')
            n--;
        if (n > 0 && raw[i] == '.')
            rc |= buf_append(&out, ".", 1);
        rc |= buf_append(&out, raw + i, n);
        rc |= buf_append(&out, "\r\n", 2);
        i = lf ? end + 1 : len;
    }
    rc |= buf_append(&out, ".\r\n", 3);
    c->message = out.data;
    c->msglen = buf_len(&out);
    return rc;
}

static void client_send(struct client *c, const char *p, size_t n)
{
    if (buf_append(&c->out, p, n) == 0)
        ev_io_start(c->loop, &c->wio);
}

static void send_line(struct client *c, const char *fmt, const char *arg)
{
    char line[1024];
    int n = snprintf(line, sizeof(line) - 2, fmt, arg);
    printf("C: %s\n", line);
    memcpy(line + n, "\r\n", 2);
    client_send(c, line, (size_t)n + 2);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct client *c = w->data;
    (void)revents;
    ssize_t n = write(c->fd, buf_head(&c->out), buf_len(&c->out));
    if (n > 0)
        buf_consume(&c->out, (size_t)n);
    else if (n < 0 && errno != EAGAIN && errno != EINTR)
        buf_clear(&c->out);
    if (buf_len(&c->out) == 0)
        ev_io_stop(loop, w);
}

static void next(struct client *c, int code)
{
    const struct replay_opts *o = c->o;
    bool ok = code >= 200 && code < 400;

    switch (c->step) {
    case R_GREETING:
        c->step = ok ? R_EHLO : R_QUIT;
        break;
    case R_EHLO:
    case R_MAIL:
        c->step = ok ? c->step + 1 : R_QUIT;
        break;
    case R_RCPT:
        c->accepted_rcpts += ok;
        if (c->rcpt < (o->nto ? o->nto : 1))
            break;   /* stay: another RCPT */
        c->step = c->accepted_rcpts ? R_DATA : R_QUIT;
        break;
    case R_DATA:
        c->step = ok ? R_MESSAGE : R_QUIT;
        break;
    case R_MESSAGE:
        c->accepted = code >= 200 && code < 300;
        c->step = R_QUIT;
        send_line(c, "%s", "QUIT");
        return;
    case R_QUIT:
    case R_DONE:
        c->step = R_DONE;
        return;
    }
    switch (c->step) {
    case R_EHLO:
        send_line(c, "EHLO %s", "replay.localhost");
        break;
    case R_MAIL:
        send_line(c, "MAIL FROM:<%s>", o->from ? o->from : "replay@localhost");
        break;
    case R_RCPT:
        send_line(c, "RCPT TO:<%s>", o->nto ? o->to[c->rcpt] : "postmaster@localhost");
        c->rcpt++;
        break;
    case R_DATA:
        send_line(c, "%s", "DATA");
        break;
    case R_MESSAGE:
        printf("C: (the message, %zu bytes as sent)\nC: .\n", c->msglen - 3);
        client_send(c, c->message, c->msglen);
        break;
    case R_QUIT:
        send_line(c, "%s", "QUIT");
        break;
    default:
        break;
    }
}

static void client_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct client *c = w->data;
    (void)revents;
    if (buf_reserve(&c->in, 4096) < 0)
        goto done;
    ssize_t n = read(c->fd, buf_tail(&c->in), buf_room(&c->in));
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        goto done;
    }
    buf_commit(&c->in, (size_t)n);
    const char *line;
    size_t len;
    while (buf_getline(&c->in, 4096, &line, &len) == BUF_LINE_OK) {
        printf("S: %.*s\n", (int)len, line);
        if (len >= 4 && line[3] == '-')
            continue;
        next(c, len >= 3 ? atoi(line) : 0);
        if (c->step == R_DONE)
            goto done;
    }
    return;
done:
    ev_io_stop(loop, &c->io);
    ev_break(loop, EVBREAK_ALL);
}

int replay_run(struct ev_loop *loop, const struct config *cfg, const struct hooks *hooks,
               const struct replay_opts *o)
{
    struct client c = { .o = o, .loop = loop, .step = R_GREETING };
    struct server srv;
    struct config rcfg = *cfg;
    char *raw;
    size_t len;
    int sv[2];

    if (read_file(o->file, &raw, &len) < 0) {
        fprintf(stderr, "luasmtpd: --replay: cannot read %s: %s\n", o->file, strerror(errno));
        return 2;
    }
    int rc = prepare_message(&c, raw, len);
    free(raw);
    if (rc != 0) {
        fprintf(stderr, "luasmtpd: --replay: %s is too large\n", o->file);
        free(c.message);
        return 2;
    }
    rcfg.nlisten = 0;
    if (server_init(&srv, loop, &rcfg, hooks, NULL) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        free(c.message);
        return 2;
    }
    /* The session sees a loopback client. */
    struct net_addr peer;
    net_loopback_addr(&peer);
    c.fd = sv[1];
    buf_init(&c.in, 1 << 20);
    buf_init(&c.out, c.msglen + 4096);
    ev_io_init(&c.io, client_cb, c.fd, EV_READ);
    ev_io_init(&c.wio, write_cb, c.fd, EV_WRITE);
    c.io.data = c.wio.data = &c;
    ev_io_start(loop, &c.io);
    if (server_adopt(&srv, sv[0], &peer, 0) < 0) {
        close(sv[0]);
        c.step = R_DONE;
    } else {
        ev_run(loop, 0);
    }

    ev_io_stop(loop, &c.wio);
    close(c.fd);
    server_free(&srv);
    buf_free(&c.in);
    buf_free(&c.out);
    free(c.message);
    printf("%s\n", c.accepted ? "accepted" : "rejected");
    return c.accepted ? 0 : 1;
}
