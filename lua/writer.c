/*
 * The writer thread: every write that must reach the disk before a hook
 * goes on (save, write, the state database) runs here, so a slow disk
 * stalls no session.
 *
 * A job is a struct wjob at the head of the action's own struct.  The loop
 * queues it (writer_wait); the thread takes everything queued at once and
 * runs it in order.  Jobs marked in_tx that follow one another share one
 * database transaction, committed before the next file job or at the end of
 * the batch: that is the group commit, one fsync for all the sessions that
 * queued during the last one.  Each job then comes back to the loop through
 * an ev_async and wakes its call.  A job whose call ended first (the client
 * left) still runs; it is freed when it comes back.
 */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"

struct writer {
    pthread_t       thread;
    pthread_mutex_t lock;
    pthread_cond_t  wake;          /* the thread: work, or quit */
    struct wjob    *queue, **queue_tail;
    struct wjob    *done;
    bool            quit;
    ev_async        back;
    struct bridge  *b;
};

void wjob_fail(struct wjob *j, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err, sizeof(j->err), fmt, ap);
    va_end(ap);
}

static void wjob_free(struct wjob *j)
{
    if (j->free)
        j->free(j);
    free(j);
}

/* The transaction of jobs first..last failed as a whole: each learns why. */
static void fail_tx(struct wjob *first, struct wjob *end, const char *why)
{
    for (struct wjob *j = first; j != end; j = j->next)
        if (j->in_tx && !j->err[0])
            wjob_fail(j, "%s", why);
}

/* Commit the transaction of jobs tx..end (exclusive); each learns. */
static void commit(struct writer *w, struct wjob *tx, struct wjob *end)
{
    char why[WJOB_ERR_MAX];
    if (store_tx_end(w->b, why, sizeof(why)) < 0) {
        fail_tx(tx, end, why);
        return;
    }
    for (struct wjob *j = tx; j != end; j = j->next)
        if (j->in_tx && !j->err[0] && j->committed)
            j->committed(j);
}

/* Run one batch (on the thread).  tx: the first job of the open
 * transaction, or NULL. */
static void run_batch(struct writer *w, struct wjob *list)
{
    struct wjob *tx = NULL;
    char why[WJOB_ERR_MAX];
    for (struct wjob *j = list; j; j = j->next) {
        if (tx && !j->in_tx) {
            commit(w, tx, j);
            tx = NULL;
        }
        j->err[0] = '\0';
        if (j->in_tx && tx == NULL) {
            if (store_tx_begin(w->b, why, sizeof(why)) < 0) {
                wjob_fail(j, "%s", why);
                continue;
            }
            tx = j;
        }
        j->run(j);
        /* a disk full or an I/O error may have rolled back all of it */
        if (tx && !store_tx_open(w->b)) {
            fail_tx(tx, j->next, j->err[0] ? j->err : "the transaction was rolled back");
            tx = NULL;
        }
    }
    if (tx)
        commit(w, tx, NULL);
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        struct wjob *list = w->queue;
        if (list == NULL) {
            if (w->quit)
                break;
            pthread_cond_wait(&w->wake, &w->lock);
            continue;
        }
        w->queue = NULL;
        w->queue_tail = &w->queue;
        pthread_mutex_unlock(&w->lock);

        run_batch(w, list);

        pthread_mutex_lock(&w->lock);
        while (list) {
            struct wjob *j = list;
            list = j->next;
            j->next = w->done;
            w->done = j;
        }
        ev_async_send(w->b->loop, &w->back);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void orphan_done(struct wjob *j)
{
    if (j->err[0])
        log_msg(LV_ERROR, NULL, "%s: %s (its call had ended)", j->what, j->err);
    wjob_free(j);
}

/* Back on the loop: resume the calls still waiting, free the rest. */
static void back_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    struct writer *w = a->data;
    (void)loop;
    (void)revents;
    pthread_mutex_lock(&w->lock);
    struct wjob *list = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->lock);
    /* the list is newest first: wake in the order they were queued */
    struct wjob *order = NULL;
    while (list) {
        struct wjob *j = list;
        list = j->next;
        j->next = order;
        order = j;
    }
    while (order) {
        struct wjob *j = order;
        order = j->next;
        j->back = true;
        if (j->c)
            call_wake(j->c);
        else
            orphan_done(j);
    }
}

static struct writer *writer_start(struct bridge *b)
{
    struct writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->b = b;
    w->queue_tail = &w->queue;
    ev_async_init(&w->back, back_cb);
    w->back.data = w;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    /* signals stay with the loop's thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&w->thread, NULL, writer_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->wake);
        free(w);
        return NULL;
    }
    ev_async_start(b->loop, &w->back);
    ev_unref(b->loop);            /* the watcher alone keeps no loop running */
    return w;
}

static void enqueue(struct writer *w, struct wjob *j)
{
    j->next = NULL;
    j->back = false;
    pthread_mutex_lock(&w->lock);
    *w->queue_tail = j;
    w->queue_tail = &j->next;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

/* The call's release: a job still the thread's is let go, and freed when
 * it comes back. */
static void writer_release(void *data)
{
    struct wjob *j = data;
    if (j->back)
        wjob_free(j);
    else
        j->c = NULL;
}

int writer_wait(lua_State *L, struct lcall *c, struct wjob *j, double timeout, lua_KFunction k)
{
    struct bridge *b = c->b;
    if (b->writer == NULL && (b->writer = writer_start(b)) == NULL) {
        const char *what = j->what;   /* a constant */
        wjob_free(j);
        return call_fail(L, "%s: cannot start the writer thread", what);
    }
    j->c = c;
    enqueue(b->writer, j);
    return call_wait(L, c, j, writer_release, timeout, k);
}

void writer_stop(struct bridge *b)
{
    struct writer *w = b->writer;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->quit = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);   /* after the queued writes */
    ev_ref(b->loop);
    ev_async_stop(b->loop, &w->back);
    /* no call waits any more: what came back is only freed */
    for (struct wjob *j = w->done; j;) {
        struct wjob *next = j->next;
        orphan_done(j);
        j = next;
    }
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    free(w);
    b->writer = NULL;
}
