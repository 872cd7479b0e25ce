/* Shared by the bridge's files: the state, the running call, helpers. */
#ifndef LUASMTPD_LUA_INTERNAL_H
#define LUASMTPD_LUA_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "bridge.h"
#include "hook.h"

struct lcall;
struct mime;

/* The stage numbers of calls that are no hook.h stage: on_close, and a
 * timer's function (a task: no session, no verdict). */
#define CALL_CLOSE HOOK_STAGE_COUNT
#define CALL_TASK  (HOOK_STAGE_COUNT + 1)

struct bridge {
    lua_State      *L;
    struct ev_loop *loop;
    struct hooks    hooks;
    const char     *script;        /* path, or "(default)" */
    size_t          mem, mem_limit;
    size_t          call_limit;    /* --hook-memory */
    double          budget;        /* seconds of running time per hook call */
    unsigned long   ncalls;        /* calls run so far */
    unsigned long   seen, trimmed; /* ncalls at the last tick, at the last trim */
    ev_timer        trim;          /* gives memory back after a burst */
    double          deadline;      /* of the call running now */
    bool            over_budget;   /* the running call passed it */
    struct lcall   *running;       /* the call whose coroutine runs now */
    struct lcall   *tasks;         /* timer functions in progress (a list) */
    struct ltimer  *timers;        /* timer.c: the armed timers (a list) */
    unsigned long   sessions;      /* sessions begun on its hooks, not yet closed */
    bool            held;          /* a reload's, while the script before it finishes:
                                      no broker connection, no delivery agent yet */
    bool            dry_run;       /* --replay --dry-run: actions are only told */
    bool            standby;       /* --standby: its timers wait */
    struct writer  *writer;        /* writer.c: the writer thread, once started */
    struct store   *store;         /* store.c: the state database, once opened */
    struct queue   *queue;         /* queue.c: limits and the delivery agent */
    char            state_dir[CONFIG_PATH_MAX + 1];  /* where it is (--state-dir) */
    struct http    *http;          /* http.c: the curl multi handle, once used */
    struct mqtt    *mqtt;          /* mqtt.c: the broker connection, if configured */
    struct mail_build {            /* mail.c: the C side of the mail table being made,
                                      freed once it is made, or by mail_abandon */
        struct mime *m;            /* the parse */
        struct buf   tmp;
        struct buf   uu;           /* the text body, when uuencoded files are taken out of it */
    } build;
    int             defined;       /* bit per stage (and CALL_CLOSE): the hooks
                                      defined once the script loaded */
    struct origin {                /* a stage's hook, as "on_mail (rules.lua:12)" */
        const void *fn;            /* the function it names, held by ref */
        int         ref;
        char        text[VERDICT_ORIGIN_MAX];
    } origins[HOOK_STAGE_COUNT];
    long long       body_lines;    /* --body-lines */
    bool            rawbody;       /* --rawbody */
    bool            ioevent;       /* the script defines IOEvent: for --check */
    char            event[CONFIG_ID_MAX + 6];  /* on_mail's third argument, "<--id>.mail" */
    char            hostname[CONFIG_HOSTNAME_MAX + 1];  /* --hostname: in trace fields */
};

/* One hook call in progress: a coroutine of its session; or a task, the
 * coroutine of a timer's function (s NULL). */
struct lcall {
    struct bridge  *b;
    struct smtp *s;             /* NULL for a task */
    int             stage;         /* a hook_stage, CALL_CLOSE or CALL_TASK */
    const char     *name;          /* for the log: "on_rcpt", "every" */
    struct lcall   *next, *prev;   /* in b->tasks */
    void          (*ended)(void *data);  /* a task's: told when it ends */
    void           *ended_data;
    lua_State      *co;
    int             coref;         /* registry reference keeping co alive */
    double          used;          /* running time so far */
    double          begun;         /* when it was called (bridge_now) */
    size_t          mem;           /* memory charged to it (host.c) */
    /* the wait in progress (call_wait) */
    ev_timer        wait;          /* its timeout */
    double          timeout;       /* seconds, or CALL_NO_TIMEOUT */
    bool            waiting;       /* suspended until call_wake() */
    bool            woken;         /* call_wake_soon() came before the timeout */
    bool            timed_out;     /* the timeout ended it */
    void          (*release)(void *data);  /* frees waitdata, stopping what it waits on */
    void           *waitdata;      /* the action's state, kept until call_release(),
                                      the next wait or the end of the call */
};

/* The script-side state of a session (session_hook_data points here). */
struct lsession {
    struct bridge  *b;
    struct lcall   *call;          /* the call in progress, if any */
    int             udref;         /* registry: the session userdata */
    int             paramsref;     /* registry: params of the current command */
};

/* Seconds on a monotonic clock. */
static inline double bridge_now(void)
{
    return clock_mono();
}

/* The bridge a state belongs to (from C functions called by scripts). */
static inline struct bridge *bridge_of(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "luasmtpd.bridge");
    struct bridge *b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b;
}

/*
 * An action: one file of lua/ adding fields to the luasmtpd table, with
 * what it starts and stops.  module.c lists them all in bridge_actions;
 * host.c starts and stops them.
 */
struct action {
    void (*open)(lua_State *L);   /* set its fields in the table on top */
    /* with the server's options, before serving: 0, or -1 with err */
    int  (*start)(struct bridge *b, const struct config *cfg, char *err, size_t errsz);
    void (*stop)(struct bridge *b);   /* the bridge closes: finish, free */
    /* a reload: the bridge it replaces retires (its sessions go on), and
     * the new one, started held, is resumed once that one has closed */
    void (*retire)(struct bridge *b);
    void (*resume)(struct bridge *b);
    /* standby (on) or active again (--standby, --activate) */
    void (*standby)(struct bridge *b, bool on);
};
extern const struct action *const bridge_actions[];
extern const struct action exec_action, timer_action, save_action, http_action, mqtt_action,
    store_action, forward_action, queue_action;

/* lsession.c */
void  lsession_open_lib(lua_State *L);
struct lsession *lsession_get(struct bridge *b, struct smtp *s);
void  lsession_push(lua_State *L, struct lsession *ls);
void  lsession_free(struct bridge *b, struct smtp *s);
/* The session's recipients as a list. */
void  lsession_push_recipients(lua_State *L, const struct smtp *s);

/* module.c: the `luasmtpd` module */
int   luaopen_luasmtpd(lua_State *L);

/* mail.c: push the mail table of the message s is receiving; -1 when
 * memory ran out outside the Lua state. */
int   mail_push(lua_State *L, struct bridge *b, struct smtp *s, const char *msg, size_t size);
/* The mail table could not be made (a protected call failed): free its C
 * memory (MIME tree, decode buffers). */
void  mail_abandon(struct bridge *b);
/* Push the trace fields RFC 5321 4.4 has a relay (Received:) or the final
 * delivery (Return-Path: too) put before the mail table at idx's message. */
void  mail_push_trace(lua_State *L, int idx, bool final);

/* call.c */
void  call_hooks_init(struct bridge *b);
/* The call a C function may suspend with call_wait(); raises when `what`
 * cannot wait here. */
struct lcall *call_waitable(lua_State *L, const char *what);
/* Why the caller may not wait here (a format for the action's name), or
 * NULL when it may. */
const char *call_no_wait(lua_State *L);

/*
 * The one way an action waits: suspend the running call c (from
 * call_waitable) until call_wake(c), or until `timeout` seconds have
 * passed (c->timed_out is then set).  data is the action's state: release
 * frees it when the call ends, waits again or calls call_release().  After
 * the wait, k runs in the coroutine and pushes the results (NULL: none).
 * Use as `return call_wait(...)`.
 */
#define CALL_NO_TIMEOUT (-1.0)   /* the action keeps its own */
int   call_wait(lua_State *L, struct lcall *c, void *data, void (*release)(void *data),
                double timeout, lua_KFunction k);
/* The wait is over: resume the call now, or from the loop (soon), for a
 * library's callback that must not be re-entered. */
void  call_wake(struct lcall *c);
void  call_wake_soon(struct lcall *c);
void  call_release(struct lcall *c);
/* The `timeout` field of the options table at idx (seconds, more than 0
 * and at most a day), or dflt; a bad value raises. */
double call_opt_timeout(lua_State *L, int idx, double dflt);
/* A failure at run time: pushes nil and "module: reason"; returns 2. */
int   call_fail(lua_State *L, const char *fmt, ...);

/* Run the function on top of b->L as a task named `name` ("after"),
 * with `arg` (a stack index, or 0 for none) as its argument.  Pops the
 * function.  The task, or NULL when it ended at once or could not start
 * (logged). */
struct lcall *call_task(struct bridge *b, const char *name, int arg);
/* End every task (the bridge closes). */
void  call_end_tasks(struct bridge *b);
const char *call_hook_name(int st);
/* The hooks' names for the metrics (each session stage, and "task"). */
void call_metrics_names(void);

/* writer.c: the writer thread.  A job is a struct wjob at the head of an
 * action's own struct, allocated with malloc. */
#define WJOB_ERR_MAX 512
struct wjob {
    struct wjob   *next;
    struct lcall  *c;              /* the call waiting for it; NULL once it ended */
    const char    *what;           /* "save", "store": for the log */
    bool           in_tx;          /* runs in the batch's database transaction */
    void         (*run)(struct wjob *j);        /* on the thread; a failure: wjob_fail() */
    void         (*committed)(struct wjob *j);  /* on the thread, after its commit; or NULL */
    void         (*free)(struct wjob *j);       /* what it holds, before it is freed; or NULL */
    bool           back;           /* the thread is done with it */
    char           err[WJOB_ERR_MAX];
};
void  wjob_fail(struct wjob *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hand j (set up but for c) to the thread and have call c wait for it
 * (call_wait with `timeout` and `k`; j is c->waitdata).  Use as `return
 * writer_wait(...)`; j is the writer's from here, even on failure. */
int   writer_wait(lua_State *L, struct lcall *c, struct wjob *j, double timeout, lua_KFunction k);
/* Finish what is queued, stop the thread. */
void  writer_stop(struct bridge *b);

/* store.c: the state database (for writer.c and queue.c) */
struct sqlite3_stmt;
/* Open it under b->state_dir; create false: only if it is there already
 * (1 when it is not).  0, or -1 with err. */
int   store_open(struct bridge *b, bool create, char *err, size_t errsz);
/* The store, opened on first use, for a script's call; raises "what: ..."
 * while the script loads or when it cannot be opened. */
struct store *store_need(lua_State *L, const char *what);
/* Where --state-dir (or systemd's $STATE_DIRECTORY) puts it; -1: too long. */
int   store_locate(const struct config *cfg, char *dir, size_t size);
int   store_tx_begin(struct bridge *b, char *err, size_t errsz);
int   store_tx_end(struct bridge *b, char *err, size_t errsz);
bool  store_tx_open(const struct bridge *b);
/* The statement of sql (a constant: its address is its key) on the writer
 * thread's connection or the loop's, prepared once; NULL: see
 * store_error().  store_stmt_done() when finished with it. */
struct sqlite3_stmt *store_stmt(struct bridge *b, bool writer, const char *sql);
void  store_stmt_done(struct sqlite3_stmt *q);
const char *store_error(const struct bridge *b, bool writer);
/* The shared counter of a slot (0: the queue), and moving it on. */
unsigned long long store_gen(const struct bridge *b, unsigned slot);
void  store_bump(struct bridge *b, unsigned slot);
/* Move the queue's counter on from outside a server (the --queue-*
 * commands): its agent looks again.  0, or -1 with err. */
int   store_poke(const char *dir, char *err, size_t errsz);

/* http.c: transfers through libcurl's multi interface, on the loop.  A
 * transfer is a struct xfer at the head of the action's request: when it
 * is done, result is its CURLcode and done(x) is called, or c is woken
 * when done is NULL. */
struct xfer {
    struct lcall *c;
    void         *easy;           /* CURL * */
    int           result;
    void        (*done)(struct xfer *x);
};
/* A new easy handle for x (NULL: out of memory); set its options, then
 * xfer_start() (0, or -1). xfer_free() ends it, done or not. */
void *xfer_new(struct bridge *b, struct xfer *x);
int   xfer_start(struct bridge *b, struct xfer *x);
void  xfer_free(struct bridge *b, struct xfer *x);

/* budget.c: the time budget of calls */
/* coroutine.create/wrap giving new coroutines the budget's hook. */
void  budget_open_coroutines(lua_State *L);
/* The call's coroutine co runs now, until budget_leave(). */
void  budget_enter(struct bridge *b, lua_State *co);
void  budget_leave(void);

#endif
