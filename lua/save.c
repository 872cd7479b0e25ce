/*
 * luasmtpd.save(mail, dir [, {timeout = 30}]): the raw message into a Maildir.
 *
 * The write, its fsync and the rename happen on a writer thread, so a slow
 * disk stalls no session: the hook's coroutine waits for the result, which
 * comes back to the loop through an ev_async.  A job belongs to the thread
 * until it is handed back; if its call ends first (the client left) the
 * message is still written and the job is freed on its return.  Stopping
 * the bridge finishes every queued write before the thread exits.
 *
 * Maildir delivery: write DIR/tmp/NAME, fsync it, rename it to
 * DIR/new/NAME, fsync DIR/new.  NAME is "SECS.MusecPpidQn.HOST", unique per
 * process and host; DIR and its tmp, new and cur are made (0700) when
 * missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"

#define SAVE_TIMEOUT 30.0

struct job {
    struct job   *next;
    struct lcall *c;              /* the waiting call; NULL once it ended */
    bool          delivered;      /* handed back to the loop */
    char         *data;
    size_t        len;
    char          path[PATH_MAX]; /* in: the Maildir; out: the file in new/ */
    char          err[PATH_MAX + 128];
};

struct saver {
    pthread_t       thread;
    pthread_mutex_t lock;
    pthread_cond_t  wake;
    struct job     *queue, **queue_tail;
    struct job     *done;
    bool            quit;
    ev_async        back;
    struct bridge  *b;
    unsigned long   seq;          /* Q part of the names (thread only) */
    char            host[256];    /* the name's host part, '/' and ':' escaped */
};

static int make_dir(const char *path, char *err, size_t errsz)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    snprintf(err, errsz, "cannot create %s: %s", path, strerror(errno));
    return -1;
}

/* The delivery itself, on the writer thread.  0, or -1 with job->err. */
static int deliver(struct saver *sv, struct job *job)
{
    char dir[PATH_MAX], tmp[PATH_MAX], name[512];
    static const char *const subdirs[] = { "tmp", "new", "cur" };
    struct timeval tv;
    int fd = -1;

    snprintf(dir, sizeof(dir), "%s", job->path);
    if (make_dir(dir, job->err, sizeof(job->err)) < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s/%s", dir, subdirs[i]) >= sizeof(tmp)) {
            snprintf(job->err, sizeof(job->err), "path too long: %s", dir);
            return -1;
        }
        if (make_dir(tmp, job->err, sizeof(job->err)) < 0)
            return -1;
    }
    gettimeofday(&tv, NULL);
    snprintf(name, sizeof(name), "%lld.M%06ldP%ldQ%lu.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
             (long)getpid(), ++sv->seq, sv->host);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s/tmp/%s", dir, name) >= sizeof(tmp) ||
        (size_t)snprintf(job->path, sizeof(job->path), "%s/new/%s", dir, name) >= sizeof(job->path)) {
        snprintf(job->err, sizeof(job->err), "path too long: %s", dir);
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(job->err, sizeof(job->err), "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    for (size_t off = 0; off < job->len;) {
        ssize_t n = write(fd, job->data + off, job->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(job->err, sizeof(job->err), "cannot write %s: %s", tmp, strerror(errno));
            goto fail;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0) {
        snprintf(job->err, sizeof(job->err), "cannot sync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        snprintf(job->err, sizeof(job->err), "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, job->path) < 0) {
        snprintf(job->err, sizeof(job->err), "cannot move %s to new/: %s", tmp, strerror(errno));
        goto fail;
    }
    /* the rename is durable once the directory is (the name fit above) */
    memcpy(tmp, job->path, strlen(dir) + 4);
    tmp[strlen(dir) + 4] = '\0';
    fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        snprintf(job->err, sizeof(job->err), "cannot sync %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

static void *writer(void *arg)
{
    struct saver *sv = arg;
    pthread_mutex_lock(&sv->lock);
    for (;;) {
        struct job *job = sv->queue;
        if (job == NULL) {
            if (sv->quit)
                break;
            pthread_cond_wait(&sv->wake, &sv->lock);
            continue;
        }
        sv->queue = job->next;
        if (sv->queue == NULL)
            sv->queue_tail = &sv->queue;
        pthread_mutex_unlock(&sv->lock);

        job->err[0] = '\0';
        deliver(sv, job);
        free(job->data);
        job->data = NULL;

        pthread_mutex_lock(&sv->lock);
        job->next = sv->done;
        sv->done = job;
        ev_async_send(sv->b->loop, &sv->back);
    }
    pthread_mutex_unlock(&sv->lock);
    return NULL;
}

/* Back on the loop: resume the calls still waiting, free the rest. */
static void back_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct saver *sv = w->data;
    (void)loop;
    (void)revents;
    pthread_mutex_lock(&sv->lock);
    struct job *list = sv->done;
    sv->done = NULL;
    pthread_mutex_unlock(&sv->lock);
    while (list) {
        struct job *job = list;
        list = job->next;
        job->delivered = true;
        if (job->c == NULL) {
            if (job->err[0])
                log_msg(LV_ERROR, NULL, "save: %s (its call had ended)", job->err);
            free(job);
            continue;
        }
        call_wake(job->c);
    }
}

static struct saver *saver_start(struct bridge *b)
{
    struct saver *sv = calloc(1, sizeof(*sv));
    if (sv == NULL)
        return NULL;
    sv->b = b;
    sv->queue_tail = &sv->queue;
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    size_t o = 0;
    for (const char *p = host; *p && o + 5 < sizeof(sv->host); p++)
        o += (size_t)(*p == '/' ? snprintf(sv->host + o, 5, "\\057")
                      : *p == ':' ? snprintf(sv->host + o, 5, "\\072")
                                  : snprintf(sv->host + o, 2, "%c", *p));
    ev_async_init(&sv->back, back_cb);
    sv->back.data = sv;
    pthread_mutex_init(&sv->lock, NULL);
    pthread_cond_init(&sv->wake, NULL);
    /* signals stay with the loop's thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&sv->thread, NULL, writer, sv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&sv->lock);
        pthread_cond_destroy(&sv->wake);
        free(sv);
        return NULL;
    }
    ev_async_start(b->loop, &sv->back);
    ev_unref(b->loop);            /* the watcher alone keeps no loop running */
    return sv;
}

static void saver_stop(struct bridge *b)
{
    struct saver *sv = b->saver;
    if (sv == NULL)
        return;
    pthread_mutex_lock(&sv->lock);
    sv->quit = true;
    pthread_cond_signal(&sv->wake);
    pthread_mutex_unlock(&sv->lock);
    pthread_join(sv->thread, NULL);   /* after the queued writes */
    ev_ref(b->loop);
    ev_async_stop(b->loop, &sv->back);
    /* no call waits any more: what came back is only freed */
    for (struct job *job = sv->done; job;) {
        struct job *next = job->next;
        if (job->err[0])
            log_msg(LV_ERROR, NULL, "save: %s", job->err);
        free(job);
        job = next;
    }
    pthread_mutex_destroy(&sv->lock);
    pthread_cond_destroy(&sv->wake);
    free(sv);
    b->saver = NULL;
}

/* A job still the writer's (it may be writing its err and path right now)
 * is let go: the loop frees it when it comes back. */
static void save_release(void *data)
{
    struct job *job = data;
    if (job->delivered)
        free(job);
    else
        job->c = NULL;
}

static int save_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lcall *c = (struct lcall *)ctx;
    struct job *job = c->waitdata;
    int n = 1;
    (void)status;
    if (c->timed_out)
        n = call_fail(L, "save: timed out after %f seconds (the write may still complete)",
                      (lua_Number)c->timeout);
    else if (job->err[0])
        n = call_fail(L, "save: %s", job->err);
    else
        lua_pushstring(L, job->path);
    call_release(c);
    return n;
}

static int l_save(lua_State *L)
{
    size_t len, dlen;
    const char *data;
    lua_settop(L, 3);
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "raw");
        data = lua_tolstring(L, -1, &len);
        luaL_argcheck(L, data != NULL, 1, "the mail has no raw message (mail.raw)");
    } else {
        data = luaL_checklstring(L, 1, &len);
    }
    const char *dir = luaL_checklstring(L, 2, &dlen);
    luaL_argcheck(L, dlen > 0 && dlen < PATH_MAX - 600 && strlen(dir) == dlen, 2,
                  "directory name empty, too long or holding a NUL");
    double timeout = SAVE_TIMEOUT;
    if (!lua_isnil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        timeout = call_opt_timeout(L, 3, SAVE_TIMEOUT);
    }
    struct lcall *c = call_waitable(L, "luasmtpd.save");
    struct bridge *b = c->b;

    if (b->saver == NULL && (b->saver = saver_start(b)) == NULL)
        return call_fail(L, "save: cannot start the writer thread");
    struct job *job = calloc(1, sizeof(*job));
    char *copy = malloc(len ? len : 1);
    if (job == NULL || copy == NULL) {
        free(job);
        free(copy);
        return call_fail(L, "save: out of memory");
    }
    memcpy(copy, data, len);
    memcpy(job->path, dir, dlen + 1);
    job->data = copy;
    job->len = len;
    job->c = c;
    struct saver *sv = b->saver;
    pthread_mutex_lock(&sv->lock);
    *sv->queue_tail = job;
    sv->queue_tail = &job->next;
    pthread_cond_signal(&sv->wake);
    pthread_mutex_unlock(&sv->lock);
    return call_wait(L, c, job, save_release, timeout, save_k);
}

static void save_open(lua_State *L)
{
    lua_pushcfunction(L, l_save);
    lua_setfield(L, -2, "save");
}

const struct action save_action = { save_open, NULL, saver_stop };
