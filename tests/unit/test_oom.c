/*
 * Out of memory: each allocation the core makes is failed in turn, and the
 * core must come out whole.  The binary is linked with --wrap for malloc,
 * calloc, realloc and strdup, so that the core's calls (and only theirs:
 * not libev's or libc's own) go through the counters below.
 *
 * - The MIME extractor, on every message in tests/data: with allocation k
 *   failing, parsing and decoding give -1 or exactly what they give with
 *   enough memory, never a part of it.
 * - A session, through a whole transaction: with allocation k failing, no
 *   message is answered 250 unless the hook received it whole, the client
 *   is always answered or let go, and the next session works.
 * Under the ASan build, a leak or a use after free on any of these paths
 * fails the run too.
 */
#include <dirent.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "hook.h"
#include "log.h"
#include "mime.h"
#include "pair.h"
#include "test.h"

/* --- failing the k-th allocation ------------------------------------------ */

static long alloc_count;      /* allocations since arm() */
static long fail_at = -1;     /* the one to fail, counting from 0; -1: none */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static bool fail_now(void)
{
    return alloc_count++ == fail_at;
}

void *__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    return fail_now() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return fail_now() ? NULL : __real_strdup(s);
}

static void arm(long k)
{
    alloc_count = 0;
    fail_at = k;
}

/* --- the MIME extractor ---------------------------------------------------- */

static int append(struct buf *out, const char *label, const char *value)
{
    if (buf_append(out, label, strlen(label)) < 0)
        return -1;
    return value ? buf_append(out, value, strlen(value) + 1) : buf_append(out, "-", 2);
}

/* Everything the extractor makes of msg, into out (a buffer of the test's
 * own, allocated before arming).  0, or -1 when the extractor said -1. */
static int extract(const char *msg, size_t len, struct buf *out)
{
    struct mime *m = NULL;
    int rc = 0;
    if (mime_parse(msg, len, NULL, &m) < 0)
        return -1;
    for (const struct mime_part *p = m->root; p && rc == 0; p = mime_next(p, true)) {
        append(out, "type ", p->type);
        append(out, "charset ", p->charset);
        append(out, "filename ", p->filename);
        for (const struct mime_header *h = p->headers; h; h = h->next) {
            append(out, "header ", h->name);
            append(out, "= ", h->value);
        }
        if (!p->child)
            rc = mime_decode(m, p, strncmp(p->type, "text/", 5) == 0, out);
    }
    mime_free(&m);
    return rc;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)n + 1)) != NULL)
            *len = fread(data, 1, (size_t)n, f);
    }
    fclose(f);
    return data;
}

static void test_mime_file(const char *path)
{
    size_t len = 0;
    char *msg = read_file(path, &len);
    struct buf want, got;
    CHECK(msg != NULL, "%s", path);
    if (msg == NULL)
        return;
    buf_init(&want, 64 << 20);
    buf_init(&got, 64 << 20);
    /* room enough: the outputs never need the allocator while it fails */
    if (buf_reserve(&want, 8 << 20) < 0 || buf_reserve(&got, 8 << 20) < 0)
        abort();
    arm(-1);
    CHECK(extract(msg, len, &want) == 0, "%s: extracts with enough memory", path);
    long total = alloc_count;
    CHECK(total > 0, "%s: allocates", path);
    long partial = 0;
    for (long k = 0; k < total; k++) {
        buf_clear(&got);
        arm(k);
        int rc = extract(msg, len, &got);
        fail_at = -1;
        if (rc == 0 && (buf_len(&got) != buf_len(&want) ||
                        memcmp(buf_head(&got), buf_head(&want), buf_len(&want)) != 0))
            partial++;
    }
    CHECK(partial == 0, "%s: %ld of %ld failed allocations gave a result that is not whole",
          path, partial, total);
    buf_free(&want);
    buf_free(&got);
    free(msg);
}

static void test_mime(void)
{
    DIR *d = opendir("tests/data");
    struct dirent *e;
    int files = 0;
    CHECK(d != NULL, "tests/data (run from the source tree)");
    while (d && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".eml") == 0) {
            char path[512];
            snprintf(path, sizeof(path), "tests/data/%s", e->d_name);
            test_mime_file(path);
            files++;
        }
    }
    if (d)
        closedir(d);
    CHECK(files >= 10, "messages in tests/data: %d", files);
}

/* --- a session ------------------------------------------------------------- */

static struct ev_loop *loop;
static struct server srv;
static struct config cfg;
static char received[4096];     /* the last message the hook got */
static size_t received_len;

static enum hook_status accept_all(void *ctx, struct smtp *s, enum hook_stage st,
                                   const struct hook_args *a, struct verdict *v)
{
    (void)ctx;
    (void)s;
    (void)v;
    if (st == HOOK_MESSAGE) {
        received_len = a->size < sizeof(received) ? a->size : sizeof(received);
        memcpy(received, a->message, received_len);
    }
    return HOOK_DONE;
}

static void no_close(void *ctx, struct smtp *s)
{
    (void)ctx;
    (void)s;
}

static bool defines_all(void *ctx, enum hook_stage st)
{
    (void)ctx;
    (void)st;
    return true;
}

static const struct hooks hooks = { .call = accept_all, .close = no_close, .defines = defines_all };

static const char message[] = "From: cam@site.example\r\nSubject: motion\r\n\r\nzone 3\r\n";

/* A whole session: what the server answered goes to out.  True when it
 * ended the session (closed the connection) within a second. */
static bool transaction(char *out, size_t outsz)
{
    char input[1024];
    snprintf(input, sizeof(input),
             "EHLO client.example\r\nMAIL FROM:<cam@site.example> SIZE=100\r\n"
             "RCPT TO:<a@hub.example>\r\nRCPT TO:<b@hub.example>\r\nDATA\r\n%s.\r\nQUIT\r\n",
             message);
    received_len = 0;
    out[0] = '\0';
    int fd = connect_client(&srv);
    if (fd < 0)
        return true;   /* no session at all: the client is let go at once */
    bool closed = false;
    ssize_t w = write(fd, input, strlen(input));
    (void)w;
    for (int i = 0; i < 500 && !closed; i++) {
        run_for(loop, 0.002);
        closed = drain(fd, out, outsz);
    }
    close(fd);
    run_for(loop, 0.002);
    return closed;
}

static void test_session(void)
{
    char out[4096];
    loop = ev_default_loop(0);
    CHECK(server_init(&srv, loop, &cfg, &hooks, NULL) == 0, "server_init");
    arm(-1);
    CHECK(transaction(out, sizeof(out)), "the session ends");
    long total = alloc_count;
    CHECK(strstr(out, "250 2.0.0 Ok: queued") && strstr(out, "221 "), "with enough memory: %s", out);
    CHECK(received_len == strlen(message) && memcmp(received, message, received_len) == 0,
          "the hook got the message");
    CHECK(total > 3, "a session allocates: %ld", total);
    long lost = 0, hung = 0, too_big = 0;
    for (long k = 0; k < total; k++) {
        arm(k);
        bool ended = transaction(out, sizeof(out));
        fail_at = -1;
        if (strstr(out, "Ok: queued") &&
            (received_len != strlen(message) || memcmp(received, message, received_len) != 0))
            lost++;
        if (!ended)
            hung++;
        if (strstr(out, "552 "))   /* an out-of-memory is no size limit */
            too_big++;
        arm(-1);
        CHECK(transaction(out, sizeof(out)) && strstr(out, "Ok: queued"),
              "after failing allocation %ld: %s", k, out);
    }
    CHECK(lost == 0, "%ld sessions answered 250 for a message the hook did not get whole", lost);
    CHECK(hung == 0, "%ld sessions were not ended", hung);
    CHECK(too_big == 0, "%ld sessions were told their message was too big", too_big);
    CHECK(srv.sessions.nsessions == 0, "every session ended: %lu left", srv.sessions.nsessions);
    server_free(&srv);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_threshold = LV_ERROR;
    config_defaults(&cfg);
    cfg.nlisten = 1;
    char err[CONFIG_ERR_MAX];
    if (config_finish(&cfg, err) < 0)
        return 1;
    cfg.nlisten = 0;
    test_mime();
    test_session();
    return test_summary("test_oom");
}
