/* Shared by the bridge's files: the state, the running call, helpers. */
#ifndef LUASMTPD_LUA_INTERNAL_H
#define LUASMTPD_LUA_INTERNAL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>

#include "bridge.h"

struct lcall;

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
    double          budget;        /* seconds of running time per hook call */
    double          deadline;      /* of the call running now */
    bool            over_budget;   /* the running call passed it */
    struct lcall   *running;       /* the call whose coroutine runs now */
    struct lcall   *tasks;         /* timer functions in progress (a list) */
    struct saver   *saver;         /* save.c: the writer thread, once started */
    struct http    *http;          /* http.c: the curl multi handle, once used */
    struct mqtt    *mqtt;          /* mqtt.c: the broker connection, if configured */
    int             defined;       /* bit per stage (and CALL_CLOSE): for --check */
    long long       body_lines;    /* --body-lines */
    bool            rawbody;       /* --rawbody */
    bool            ioevent;       /* the script defines IOEvent: for --check */
    char            id[CONFIG_ID_MAX + 1];  /* --id: events are named <id>.mail */
};

/* One hook call in progress: a coroutine of its session; or a task, the
 * coroutine of a timer's function (s NULL). */
struct lcall {
    struct bridge  *b;
    struct smtp *s;             /* NULL for a task */
    int             stage;         /* a hook_stage, CALL_CLOSE or CALL_TASK */
    const char     *name;          /* for the log: "on_rcpt", "every" */
    struct lcall   *next, *prev;   /* in b->tasks */
    struct ltimer  *timer;         /* a task's timer, while both exist */
    lua_State      *co;
    int             coref;         /* registry reference keeping co alive */
    double          used;          /* running time so far */
    ev_timer        wait;          /* luasmtpd.sleep; the timeout of other waits */
    bool            waiting;       /* suspended until something on the loop resumes it */
    void          (*release)(struct lcall *c);  /* frees waitdata, stopping the wait */
    void           *waitdata;      /* the state of the last wait (exec), kept until
                                      the call ends or waits again */
};

/* The script-side state of a session (session_hook_data points here). */
struct lsession {
    struct bridge  *b;
    struct lcall   *call;          /* the call in progress, if any */
    int             udref;         /* registry: the session userdata */
    int             paramsref;     /* registry: params of the current command */
};

double bridge_now(void);
/* The bridge a state belongs to (from C functions called by scripts). */
struct bridge *bridge_of(lua_State *L);

/* lsession.c */
void  lsession_open_lib(lua_State *L);
struct lsession *lsession_get(struct bridge *b, struct smtp *s);
void  lsession_push(lua_State *L, struct lsession *ls);
void  lsession_free(struct bridge *b, struct smtp *s);

/* module.c: the `luasmtpd` module */
int   luaopen_luasmtpd(lua_State *L);

/* mail.c: push the mail table of the message s is receiving; -1 when
 * memory ran out outside the Lua state. */
int   mail_push(lua_State *L, struct bridge *b, struct smtp *s, const char *msg, size_t size);

/* call.c */
void  call_hooks_init(struct bridge *b);
/* coroutine.create/wrap giving new coroutines the time budget's hook. */
void  call_open_coroutines(lua_State *L);
/* Resume a call's coroutine (its wait is over). */
void  call_resume(struct lcall *c);
/* An ev_timer callback resuming the call in w->data (sleep, timeouts). */
void  call_wake_cb(struct ev_loop *loop, ev_timer *w, int revents);
/* The call a C function may suspend (it then returns lua_yield*() with
 * c->waiting set); raises when `what` cannot wait here. */
struct lcall *call_waitable(lua_State *L, const char *what);

/* Run the function on top of b->L as a task named `name` ("after"),
 * with `arg` (a stack index, or 0 for none) as its argument.  Pops the
 * function.  The task, or NULL when it ended at once or could not start
 * (logged). */
struct lcall *call_task(struct bridge *b, const char *name, int arg);
/* End every task (the bridge closes). */
void  call_end_tasks(struct bridge *b);
const char *call_hook_name(int st);

/* exec.c: luasmtpd.exec */
int   l_exec(lua_State *L);

/* timer.c: luasmtpd.after, luasmtpd.every, luasmtpd.now */
int   l_after(lua_State *L);
int   l_every(lua_State *L);
int   l_now(lua_State *L);
/* A timer's task ended (end_call). */
void  timer_task_ended(struct lcall *c);

/* save.c: luasmtpd.save; saver_stop finishes the writes queued and ends
 * the writer thread. */
int   l_save(lua_State *L);
void  saver_stop(struct bridge *b);

/* http.c: luasmtpd.http; http_free once no request is left */
int   l_http(lua_State *L);
void  http_free(struct bridge *b);

/* mqtt.c: the luasmtpd.mqtt table (pushed), and the broker connection */
void  mqtt_open(lua_State *L);
int   mqtt_start(struct bridge *b, const struct config *cfg, char *err, size_t errsz);
void  mqtt_stop(struct bridge *b);

#endif
