#include "watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

#define LOOK_EVERY_NS  250000000L      /* the thread looks four times a second */
#define RESTARTED_ENV  "LUASMTPD_RESTARTED=1"
#define ENV_MAX        4096

extern char **environ;

static struct {
    struct ev_loop        *loop;
    ev_prepare             idle;       /* the loop goes back to waiting */
    ev_check               busy;       /* the loop starts a round of callbacks */
    atomic_llong           since;      /* when the round began (ns), or 0 between rounds */
    long long              limit;      /* ns */
    watchdog_describe_fn  *describe;
    void                  *ctx;
    char *const           *argv;
    char                  *envp[ENV_MAX + 2];
    sigset_t               mask;       /* the loop's: the process started again gets it */
    pthread_t              thread;
    pthread_mutex_t        lock;
    pthread_cond_t         wake;       /* watchdog_stop() */
    bool                   quit;
    bool                   running;
} wd = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };


static void busy_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    atomic_store_explicit(&wd.since, clock_mono_ns(), memory_order_relaxed);
}

static void idle_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    atomic_store_explicit(&wd.since, 0, memory_order_relaxed);
}

/* The loop is stuck: say what it runs, then go (never returns). */
static void stuck(long long held)
{
    char what[512] = "";
    wd.describe(wd.ctx, what, sizeof(what));
    log_msg(LV_ERROR, NULL, "watchdog: the event loop has been held for %.1fs (--hook-kill) by %s; %s",
            (double)held / 1e9, what, wd.argv ? "starting the server again" : "exiting");
    if (wd.argv) {
        /* exec keeps the calling thread's mask, and this one blocks all */
        pthread_sigmask(SIG_SETMASK, &wd.mask, NULL);
        execve("/proc/self/exe", wd.argv, wd.envp);
        log_msg(LV_ERROR, NULL, "watchdog: cannot start the server again: %s; exiting",
                strerror(errno));
    }
    _exit(WATCHDOG_EXIT);
}

static void *watch(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&wd.lock);
    while (!wd.quit) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += LOOK_EVERY_NS;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&wd.wake, &wd.lock, &t);
        long long since = atomic_load_explicit(&wd.since, memory_order_relaxed);
        if (!wd.quit && since != 0 && clock_mono_ns() - since > wd.limit)
            stuck(clock_mono_ns() - since);
    }
    pthread_mutex_unlock(&wd.lock);
    return NULL;
}

/* The environment of the process started again: this one's, and the mark
 * that it was the watchdog's doing. */
static void prepare_env(void)
{
    size_t n = 0;
    for (char **e = environ; *e && n < ENV_MAX; e++)
        if (strcmp(*e, RESTARTED_ENV) != 0)
            wd.envp[n++] = *e;
    wd.envp[n++] = (char *)RESTARTED_ENV;
    wd.envp[n] = NULL;
}

int watchdog_start(struct ev_loop *loop, double seconds, watchdog_describe_fn *describe,
                   void *ctx, char *const *argv)
{
    wd.loop = loop;
    wd.limit = (long long)(seconds * 1e9);
    wd.describe = describe;
    wd.ctx = ctx;
    wd.argv = argv;
    atomic_store(&wd.since, 0);
    wd.quit = false;
    if (argv)
        prepare_env();
    /* signals stay with the loop's thread */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &wd.mask);
    int rc = pthread_create(&wd.thread, NULL, watch, NULL);
    pthread_sigmask(SIG_SETMASK, &wd.mask, NULL);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    ev_check_init(&wd.busy, busy_cb);
    ev_set_priority(&wd.busy, EV_MAXPRI);
    ev_prepare_init(&wd.idle, idle_cb);
    ev_check_start(loop, &wd.busy);
    ev_prepare_start(loop, &wd.idle);
    ev_unref(loop);   /* neither keeps the loop running */
    ev_unref(loop);
    wd.running = true;
    return 0;
}

void watchdog_stop(void)
{
    if (!wd.running)
        return;
    pthread_mutex_lock(&wd.lock);
    wd.quit = true;
    pthread_cond_signal(&wd.wake);
    pthread_mutex_unlock(&wd.lock);
    pthread_join(wd.thread, NULL);
    ev_ref(wd.loop);
    ev_ref(wd.loop);
    ev_check_stop(wd.loop, &wd.busy);
    ev_prepare_stop(wd.loop, &wd.idle);
    wd.running = false;
}

int watchdog_restarted(void)
{
    const char *mark = getenv("LUASMTPD_RESTARTED");
    if (mark == NULL)
        return 0;
    unsetenv("LUASMTPD_RESTARTED");
    /* what the stuck process held open without close-on-exec: its
     * libraries' sockets, a client's connection */
    close_range(3, ~0U, 0);
    return 1;
}
