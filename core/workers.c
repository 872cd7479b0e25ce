/*
 * workers: the supervisor of --workers N (workers.h).  It waits for
 * signals only (sigtimedwait): SIGCHLD when a worker ends, SIGRTMIN when one
 * is ready, SIGTERM/SIGINT/SIGHUP and the standby signals from the user.
 */
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "clock.h"
#include "log.h"

#define WORKERS_MAX   64
#define RESPAWN_DELAY 1.0   /* a worker that lived less than this waits as long */

struct worker {
    pid_t  pid;            /* 0: none */
    double started;
    double respawn_at;     /* > 0: to be started again then */
    bool   ready;
    bool   standby;        /* what it was last told (or started with) */
};

static pid_t supervisor;   /* in a worker: whom workers_ready() tells */
static bool  standby;      /* in a worker: it starts in standby */

/* A worker is ready: it writes its pid into a pipe whose read end the
 * supervisor owns with O_ASYNC, so that the kernel raises READY_SIGNAL in
 * the supervisor.  A signal from the worker itself would not do: one that
 * dropped to --user may not signal a supervisor that stays root. */
#define READY_SIGNAL SIGRTMIN
static int ready_pipe[2] = { -1, -1 };

static int handled[] = { SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGNAL_STANDBY, SIGNAL_ACTIVATE,
                         0 /* READY_SIGNAL */ };
#define NHANDLED (int)(sizeof(handled) / sizeof(handled[0]))

/* The handled signals are blocked and taken by sigtimedwait; the handler
 * only makes sure none of them is ignored (SIGCHLD is by default). */
static void pending(int sig)
{
    (void)sig;
}

/* Take the handled signals through sigtimedwait (again after a check,
 * which may have created and destroyed an event loop that changed them). */
static void take_signals(sigset_t *set, sigset_t *mask)
{
    struct sigaction sa = { .sa_handler = pending };
    handled[NHANDLED - 1] = READY_SIGNAL;
    sigemptyset(&sa.sa_mask);
    sigemptyset(set);
    for (int k = 0; k < NHANDLED; k++) {
        sigaction(handled[k], &sa, NULL);
        sigaddset(set, handled[k]);
    }
    sigprocmask(SIG_BLOCK, set, mask);
}


/* Fork the worker of slot i into w, in standby or not: true in the new
 * worker. */
static bool spawn(struct worker *w, int i, bool in_standby, const sigset_t *mask)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_msg(LV_ERROR, NULL, "worker %d: fork: %s; trying again in %.0fs", i + 1,
                strerror(errno), RESPAWN_DELAY);
        w->respawn_at = clock_mono() + RESPAWN_DELAY;
        return false;
    }
    if (pid == 0) {
        close(ready_pipe[0]);
        for (int k = 0; k < NHANDLED; k++)
            signal(handled[k], SIG_DFL);
        sigprocmask(SIG_SETMASK, mask, NULL);
        /* a worker does not outlive its supervisor: it stops as on SIGTERM */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != supervisor)
            _exit(1);
        standby = in_standby;
        return true;
    }
    w->pid = pid;
    w->started = clock_mono();
    w->respawn_at = 0;
    w->ready = false;
    w->standby = in_standby;
    log_msg(LV_INFO, NULL, "worker %d started (pid %d)", i + 1, (int)pid);
    return false;
}

static void signal_all(struct worker *set, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (set[i].pid)
            kill(set[i].pid, sig);
}

static int live(const struct worker *set, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += set[i].pid != 0;
    return k;
}

static int find(struct worker *set, int n, pid_t pid)
{
    for (int i = 0; i < n; i++)
        if (set[i].pid == pid)
            return i;
    return -1;
}

static bool all_ready(const struct worker *set, int n)
{
    for (int i = 0; i < n; i++)
        if (!set[i].ready)
            return false;
    return true;
}

static void describe(int ws, char *out, size_t size)
{
    if (WIFSIGNALED(ws))
        snprintf(out, size, "was killed by signal %d", WTERMSIG(ws));
    else
        snprintf(out, size, "exited with status %d", WEXITSTATUS(ws));
}

/* The supervisor's state between signals. */
struct supervision {
    struct worker  cur[WORKERS_MAX], old[WORKERS_MAX];   /* old: replaced by SIGHUP */
    int            n;
    bool           starting, stopping;
    bool           standby;
    int           *status;
    sigset_t       set, mask;
    workers_check_fn check;
    void          *arg;
};

/* Tell w of a standby change it has not heard of.  Only a ready worker
 * is told: before that it may not have its handlers yet, and it started
 * with the state of its fork. */
static void tell_standby(const struct supervision *sv, struct worker *w)
{
    if (w->pid && w->ready && w->standby != sv->standby) {
        kill(w->pid, sv->standby ? SIGNAL_STANDBY : SIGNAL_ACTIVATE);
        w->standby = sv->standby;
    }
}

static void on_ready(struct supervision *sv, pid_t pid)
{
    int i = find(sv->cur, sv->n, pid);
    if (i < 0)
        return;
    sv->cur[i].ready = true;
    tell_standby(sv, &sv->cur[i]);
    if (!all_ready(sv->cur, sv->n))
        return;
    if (sv->starting)
        log_msg(LV_INFO, NULL, "supervisor: %d workers ready", sv->n);
    sv->starting = false;
    sd_notify(0, "READY=1");          /* started, or reloaded: systemd hears of it */
    if (live(sv->old, sv->n)) {
        log_msg(LV_INFO, NULL, "supervisor: the new workers are ready; stopping the old ones");
        signal_all(sv->old, sv->n, SIGTERM);
    }
}

/* Worker pid ended with wait status ws. */
static void on_ended(struct supervision *sv, pid_t pid, int ws)
{
    char how[64];
    int i;
    describe(ws, how, sizeof(how));
    if ((i = find(sv->old, sv->n, pid)) >= 0) {
        sv->old[i].pid = 0;
        log_msg(LV_INFO, NULL, "old worker %d (pid %d) %s", i + 1, (int)pid, how);
        return;
    }
    if ((i = find(sv->cur, sv->n, pid)) < 0)
        return;
    struct worker *w = &sv->cur[i];
    w->pid = 0;
    if (sv->stopping) {
        log_msg(LV_INFO, NULL, "worker %d (pid %d) %s", i + 1, (int)pid, how);
    } else if (sv->starting && !w->ready) {
        /* it said why on stderr; a server that cannot start stops */
        log_msg(LV_ERROR, NULL, "worker %d (pid %d) %s before it was ready: stopping", i + 1,
                (int)pid, how);
        *sv->status = WIFEXITED(ws) && WEXITSTATUS(ws) ? WEXITSTATUS(ws) : 1;
        sv->stopping = true;
        signal_all(sv->cur, sv->n, SIGTERM);
    } else {
        double lived = clock_mono() - w->started;
        w->respawn_at = clock_mono() + (lived < RESPAWN_DELAY ? RESPAWN_DELAY : 0);
        log_msg(LV_WARN, NULL, "worker %d (pid %d) %s; restarting it%s", i + 1, (int)pid, how,
                lived < RESPAWN_DELAY ? " in a second" : "");
    }
}

static void on_stop(struct supervision *sv, int sig)
{
    log_msg(LV_INFO, NULL, "supervisor: signal %d: %s", sig,
            sv->stopping ? "passed on again (the workers stop at once)"
                         : "stopping the workers (again to stop them at once)");
    sv->stopping = true;
    sd_notify(0, "STOPPING=1");
    signal_all(sv->cur, sv->n, sig);
    signal_all(sv->old, sv->n, sig);
}

/* --standby (on) or --activate: passed on to every worker. */
static void on_standby(struct supervision *sv, bool on)
{
    if (sv->stopping)
        return;
    if (sv->standby == on) {
        log_msg(LV_INFO, NULL, "supervisor: %s", on ? "already in standby" : "already active");
        return;
    }
    sv->standby = on;
    log_msg(LV_INFO, NULL, "supervisor: %s: telling the workers", on ? "standby" : "activate");
    sd_notify(0, on ? "STATUS=standby: the listeners are closed" : "STATUS=active");
    for (int i = 0; i < sv->n; i++) {
        tell_standby(sv, &sv->cur[i]);
        tell_standby(sv, &sv->old[i]);
    }
}

/* SIGHUP: new workers with the script as it is now, if it loads; the old
 * ones stop when the new ones are ready. */
static void on_reload(struct supervision *sv)
{
    sigset_t ignored;
    if (sv->stopping)
        return;
    if (live(sv->old, sv->n)) {
        log_msg(LV_WARN, NULL, "supervisor: SIGHUP: a reload is already under way");
        return;
    }
    bool ok = sv->check(sv->arg);
    /* the check's event loop may have let a SIGCHLD through to the
     * handler: look for ended workers again */
    take_signals(&sv->set, &ignored);
    raise(SIGCHLD);
    if (!ok) {
        log_msg(LV_ERROR, NULL, "supervisor: SIGHUP: the script does not load; "
                                 "the running workers go on");
        return;
    }
    log_msg(LV_INFO, NULL, "supervisor: SIGHUP: starting new workers with the script as it is now");
    workers_notify_reloading();
    memcpy(sv->old, sv->cur, sizeof(sv->cur[0]) * (size_t)sv->n);
    for (int i = 0; i < sv->n; i++) {
        sv->old[i].respawn_at = 0;   /* a slot waiting for a restart is new work */
        sv->cur[i] = (struct worker){ .respawn_at = clock_mono() };
    }
}

/* Start the workers due: the slot's number in a new worker, else -1;
 * *next_r becomes the time of the next restart due. */
static int spawn_due(struct supervision *sv, double *next_r)
{
    double t = clock_mono();
    *next_r = t + 60;
    for (int i = 0; i < sv->n && !sv->stopping; i++) {
        struct worker *w = &sv->cur[i];
        if (w->respawn_at > 0 && w->respawn_at <= t && spawn(w, i, sv->standby, &sv->mask))
            return i;
        if (w->respawn_at > 0 && w->respawn_at < *next_r)
            *next_r = w->respawn_at;
    }
    return -1;
}

int workers_supervise(int n, bool in_standby, workers_check_fn check, void *arg, int *status)
{
    static struct supervision sv;

    sv = (struct supervision){ .n = n > WORKERS_MAX ? WORKERS_MAX : n, .starting = true,
                               .standby = in_standby, .status = status, .check = check, .arg = arg };
    take_signals(&sv.set, &sv.mask);
    supervisor = getpid();
    if (pipe2(ready_pipe, O_CLOEXEC | O_NONBLOCK) < 0 || fcntl(ready_pipe[0], F_SETOWN, supervisor) < 0 ||
        fcntl(ready_pipe[0], F_SETSIG, READY_SIGNAL) < 0 ||
        fcntl(ready_pipe[0], F_SETFL, O_NONBLOCK | O_ASYNC) < 0) {
        log_msg(LV_ERROR, NULL, "supervisor: cannot make the workers' pipe: %s", strerror(errno));
        *status = 1;
        return -1;
    }
    *status = 0;
    log_msg(LV_INFO, NULL, "supervisor (pid %d) starting %d workers", (int)supervisor, sv.n);
    for (int i = 0; i < sv.n; i++)
        sv.cur[i].respawn_at = clock_mono();

    for (;;) {
        double next;
        int worker = spawn_due(&sv, &next);
        if (worker >= 0)
            return worker;
        if (sv.stopping && live(sv.cur, sv.n) + live(sv.old, sv.n) == 0) {
            log_msg(LV_INFO, NULL, "supervisor: every worker has stopped");
            return -1;
        }
        double wait = next - clock_mono();
        struct timespec ts = { .tv_sec = wait > 0 ? (time_t)wait : 0,
                               .tv_nsec = wait > 0 ? (long)((wait - (double)(time_t)wait) * 1e9) : 0 };
        siginfo_t si;
        int sig = sigtimedwait(&sv.set, &si, &ts), ws;
        pid_t pid;
        if (sig == READY_SIGNAL) {
            while (read(ready_pipe[0], &pid, sizeof(pid)) == (ssize_t)sizeof(pid))
                on_ready(&sv, pid);
        } else if (sig == SIGCHLD) {
            while ((pid = waitpid(-1, &ws, WNOHANG)) > 0)
                on_ended(&sv, pid, ws);
        } else if (sig == SIGTERM || sig == SIGINT) {
            on_stop(&sv, sig);
        } else if (sig == SIGHUP) {
            on_reload(&sv);
        } else if (sig == SIGNAL_STANDBY || sig == SIGNAL_ACTIVATE) {
            on_standby(&sv, sig == SIGNAL_STANDBY);
        }
        /* else the timeout (a restart is due), or EINTR */
    }
}

void workers_ready(void)
{
    pid_t me = getpid();
    if (supervisor && write(ready_pipe[1], &me, sizeof(me)) != (ssize_t)sizeof(me))
        log_msg(LV_ERROR, NULL, "cannot tell the supervisor that this worker is ready: %s", strerror(errno));
}

bool workers_standby(void)
{
    return standby;
}

void workers_notify_reloading(void)
{
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%lld", clock_mono_ns() / 1000);
}

void workers_credentials_changed(void)
{
    /* changing uid clears the parent-death signal: set it again */
    if (supervisor && (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != supervisor))
        _exit(1);
}
