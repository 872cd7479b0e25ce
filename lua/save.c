/*
 * luasmtpd.save(mail, dir [, {timeout = 30, trace = true}]): the raw
 * message into a Maildir, after Return-Path: and Received: (RFC 5321 4.4:
 * this is its final delivery) unless trace = false.
 * luasmtpd.write(path, data [, {timeout = 30}]): a file, atomically.
 *
 * The write, its fsync and the rename happen on the writer thread
 * (writer.c), so a slow disk stalls no session: the hook's coroutine waits
 * for the result.  If its call ends first (the client left) the file is
 * still written.
 *
 * Maildir delivery: write DIR/tmp/NAME, fsync it, rename it to
 * DIR/new/NAME, fsync DIR/new.  NAME is "SECS.MusecPpidQn.HOST", unique per
 * process and host; DIR and its tmp, new and cur are made (0700) when
 * missing.  write: PATH.tmp.PID.N, fsync, rename to PATH, fsync its
 * directory (which must exist).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
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
    struct wjob   w;
    char         *data;
    size_t        len;
    bool          maildir;        /* save; else write: a file of its own */
    char          path[PATH_MAX]; /* in: the Maildir or file; out: the file written */
};

/* The names' parts, set once per process. */
static unsigned long name_seq;    /* the writer thread's only */
static char name_host[256];       /* the host, '/' and ':' escaped */
static pthread_once_t name_once = PTHREAD_ONCE_INIT;

static void name_init(void)
{
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    size_t o = 0;
    for (const char *p = host; *p && o + 5 < sizeof(name_host); p++)
        o += (size_t)(*p == '/' ? snprintf(name_host + o, 5, "\\057")
                      : *p == ':' ? snprintf(name_host + o, 5, "\\072")
                                  : snprintf(name_host + o, 2, "%c", *p));
}

static int make_dir(const char *path, struct wjob *w)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    wjob_fail(w, "cannot create %s: %s", path, strerror(errno));
    return -1;
}

/* Write data to tmp (a new file), fsync it, rename it to path, fsync
 * the directory dir holding path: 0, or -1 with the job's err and no tmp
 * left behind. */
static int write_atomic(struct job *job, const char *tmp, const char *dir)
{
    struct wjob *w = &job->w;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        wjob_fail(w, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    for (size_t off = 0; off < job->len;) {
        ssize_t n = write(fd, job->data + off, job->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            wjob_fail(w, "cannot write %s: %s", tmp, strerror(errno));
            goto fail;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0) {
        wjob_fail(w, "cannot sync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    int rc = close(fd);
    fd = -1;
    if (rc < 0) {
        wjob_fail(w, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, job->path) < 0) {
        wjob_fail(w, "cannot move %s to %s: %s", tmp, job->path, strerror(errno));
        goto fail;
    }
    /* the rename is durable once the directory is */
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        wjob_fail(w, "cannot sync %s: %s", dir, strerror(errno));
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

/* save: DIR/tmp/NAME, then DIR/new/NAME. */
static void maildir_run(struct job *job)
{
    char dir[PATH_MAX], tmp[PATH_MAX], name[512];
    static const char *const subdirs[] = { "tmp", "new", "cur" };
    struct timeval tv;

    snprintf(dir, sizeof(dir), "%s", job->path);
    if (make_dir(dir, &job->w) < 0)
        return;
    for (int i = 0; i < 3; i++) {
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s/%s", dir, subdirs[i]) >= sizeof(tmp)) {
            wjob_fail(&job->w, "path too long: %s", dir);
            return;
        }
        if (make_dir(tmp, &job->w) < 0)
            return;
    }
    gettimeofday(&tv, NULL);
    snprintf(name, sizeof(name), "%lld.M%06ldP%ldQ%lu.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
             (long)getpid(), ++name_seq, name_host);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s/tmp/%s", dir, name) >= sizeof(tmp) ||
        (size_t)snprintf(job->path, sizeof(job->path), "%s/new/%s", dir, name) >= sizeof(job->path)) {
        wjob_fail(&job->w, "path too long: %s", dir);
        return;
    }
    snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/new");
    write_atomic(job, tmp, dir);
}

/* write: PATH.tmp.PID.N beside it, then PATH. */
static void file_run(struct job *job)
{
    char dir[PATH_MAX], tmp[PATH_MAX];
    const char *slash = strrchr(job->path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == job->path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - job->path), job->path);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%lu", job->path, (long)getpid(), ++name_seq) >=
        sizeof(tmp)) {
        wjob_fail(&job->w, "path too long: %s", job->path);
        return;
    }
    write_atomic(job, tmp, dir);
}

static void job_run(struct wjob *w)
{
    struct job *job = (struct job *)w;
    pthread_once(&name_once, name_init);
    if (job->maildir)
        maildir_run(job);
    else
        file_run(job);
    free(job->data);
    job->data = NULL;
}

static void job_free(struct wjob *w)
{
    free(((struct job *)w)->data);
}

static int save_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lcall *c = (struct lcall *)ctx;
    struct job *job = c->waitdata;
    const char *what = job->maildir ? "save" : "write";
    int n = 1;
    (void)status;
    if (c->timed_out)
        n = call_fail(L, "%s: timed out after %f seconds (the write may still complete)", what,
                      (lua_Number)c->timeout);
    else if (job->w.err[0])
        n = call_fail(L, "%s: %s", what, job->w.err);
    else
        lua_pushstring(L, job->path);
    call_release(c);
    return n;
}

/* Queue the write of data[0, len) (a copy, with `prefix` before it) to
 * `path`, and wait for it. */
static int queue_write(lua_State *L, bool maildir, const char *prefix, size_t plen, const char *data,
                       size_t len, const char *path, size_t pathlen, double timeout)
{
    const char *what = maildir ? "save" : "write";
    struct lcall *c = call_waitable(L, maildir ? "luasmtpd.save" : "luasmtpd.write");
    struct job *job = calloc(1, sizeof(*job));
    char *copy = len + plen <= SIZE_MAX - 1 ? malloc(plen + len + 1) : NULL;
    if (job == NULL || copy == NULL) {
        free(job);
        free(copy);
        return call_fail(L, "%s: out of memory", what);
    }
    memcpy(copy, prefix, plen);
    memcpy(copy + plen, data, len);
    memcpy(job->path, path, pathlen + 1);
    job->data = copy;
    job->len = plen + len;
    job->maildir = maildir;
    job->w.what = what;
    job->w.run = job_run;
    job->w.free = job_free;
    return writer_wait(L, c, &job->w, timeout, save_k);
}

static double opt_timeout(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return SAVE_TIMEOUT;
    luaL_checktype(L, idx, LUA_TTABLE);
    return call_opt_timeout(L, idx, SAVE_TIMEOUT);
}

/* luasmtpd.save(mail | text, dir [, {timeout =, trace =}]) */
static int l_save(lua_State *L)
{
    size_t len, dlen, tlen = 0;
    const char *data, *trace = "";
    lua_settop(L, 3);
    const char *dir = luaL_checklstring(L, 2, &dlen);
    luaL_argcheck(L, dlen > 0 && dlen < PATH_MAX - 600 && strlen(dir) == dlen, 2,
                  "directory name empty, too long or holding a NUL");
    double timeout = opt_timeout(L, 3);
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "raw");
        data = lua_tolstring(L, -1, &len);
        luaL_argcheck(L, data != NULL, 1, "the mail has no raw message (mail.raw)");
        bool want = false;   /* the bytes as received, unless asked */
        if (lua_istable(L, 3)) {
            lua_getfield(L, 3, "trace");
            want = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        if (want) {
            mail_push_trace(L, 1, true);
            trace = lua_tolstring(L, -1, &tlen);
        }
    } else {
        data = luaL_checklstring(L, 1, &len);
    }
    return queue_write(L, true, trace, tlen, data, len, dir, dlen, timeout);
}

/* luasmtpd.write(path, data [, {timeout =}]): path holds data, or its old
 * content if this fails. */
static int l_write(lua_State *L)
{
    size_t plen, len;
    lua_settop(L, 3);
    const char *path = luaL_checklstring(L, 1, &plen);
    luaL_argcheck(L, plen > 0 && plen < PATH_MAX - 64 && strlen(path) == plen && path[plen - 1] != '/', 1,
                  "file name empty, too long, a directory or holding a NUL");
    const char *data = luaL_checklstring(L, 2, &len);
    return queue_write(L, false, "", 0, data, len, path, plen, opt_timeout(L, 3));
}

static void save_open(lua_State *L)
{
    lua_pushcfunction(L, l_save);
    lua_setfield(L, -2, "save");
    lua_pushcfunction(L, l_write);
    lua_setfield(L, -2, "write");
}

const struct action save_action = { .open = save_open };
