/*
 * call: hook.h implemented by running the script's on_* functions.
 *
 * Each call is a coroutine of its session.  It may wait on an action
 * (call_wait): the call is then HOOK_PENDING and resumed from the loop;
 * the verdict goes back through smtp_verdict().  Every call has a budget
 * of running time (budget.c): past it the coroutine is suspended by a
 * yield no pcall can catch, and the call is abandoned.  Memory is capped
 * by the state's allocator.  An error, an overrun or a return value that
 * is no verdict is logged and answered 451 4.3.0.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "log.h"
#include "console.h"
#include "json.h"
#include "metrics.h"

#define PATH_MAX_SHOWN (LUA_IDSIZE + 32)   /* " at FILE:LINE" */

/* on_close has no verdict: it runs as the pseudo-stage CALL_CLOSE. */
static const char *const hook_names[CALL_TASK] = {
    [HOOK_CONNECT] = "on_connect", [HOOK_HELO] = "on_helo",   [HOOK_MAIL] = "on_mail_from",
    [HOOK_RCPT] = "on_rcpt",       [HOOK_DATA] = "on_data",   [HOOK_MESSAGE] = "on_mail",
    [HOOK_RSET] = "on_rset",       [HOOK_AUTH] = "on_auth",   [HOOK_VRFY] = "on_vrfy",
    [HOOK_EXPN] = "on_expn",       [CALL_CLOSE] = "on_close",
};

void call_metrics_names(void)
{
    for (int st = 0; st <= CALL_CLOSE; st++)
        metrics_hook_name(st, hook_names[st]);
    metrics_hook_name(CALL_TASK, "task");
}

const char *call_hook_name(int st)
{
    return hook_names[st];
}

/* Where the hook `name` (a global function) was defined, for the log line
 * of a refusal: "on_rcpt (rules.lua:12)", or `why` in the parentheses. */
static void set_origin(struct bridge *b, int stage, const char *name, const char *why, struct verdict *v)
{
    lua_State *L = b->L;
    if (why || lua_getglobal(L, name) != LUA_TFUNCTION) {
        if (!why)
            lua_pop(L, 1);
        snprintf(v->origin, sizeof(v->origin), "%s%s%s%s", name, why ? " (" : "", why ? why : "", why ? ")" : "");
        return;
    }
    /* made once a function (it is held, so no other can take its address) */
    struct origin *o = &b->origins[stage];
    if (lua_topointer(L, -1) != o->fn) {
        lua_Debug ar;
        o->fn = lua_topointer(L, -1);
        lua_pushvalue(L, -1);
        lua_getinfo(L, ">S", &ar);        /* pops the copy */
        if (ar.linedefined > 0)
            snprintf(o->text, sizeof(o->text), "%s (%s:%d)", name, ar.short_src, ar.linedefined);
        else
            snprintf(o->text, sizeof(o->text), "%s", name);
        luaL_unref(L, LUA_REGISTRYINDEX, o->ref);
        o->ref = luaL_ref(L, LUA_REGISTRYINDEX);    /* pops the function */
    } else {
        lua_pop(L, 1);
    }
    memcpy(v->origin, o->text, strlen(o->text) + 1);
}

/* " at rules.lua:12": the line the coroutine stopped at, or "". */
static void where_stopped(lua_State *co, char *out, size_t size)
{
    lua_Debug ar;
    out[0] = '\0';
    for (int level = 0; lua_getstack(co, level, &ar); level++)
        if (lua_getinfo(co, "Sl", &ar) && ar.currentline > 0) {
            snprintf(out, size, " at %s:%d", ar.short_src, ar.currentline);
            return;
        }
}

/* A returned value for the log: its type, and a short form of a string,
 * number or boolean. */
static void shown_value(lua_State *co, int idx, char *out, size_t size)
{
    int t = lua_type(co, idx);
    if (t == LUA_TSTRING || t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
        char esc[160];
        size_t len;
        const char *s = luaL_tolstring(co, idx, &len);
        snprintf(out, size, "%s %s%s%s", lua_typename(co, t), t == LUA_TSTRING ? "\"" : "",
                 log_escape(esc, sizeof(esc), s, len > 40 ? 40 : len), t == LUA_TSTRING ? "\"" : "");
        lua_pop(co, 1);
    } else {
        snprintf(out, size, "%s", lua_typename(co, t));
    }
}

static void set_verdict_error(struct verdict *v)
{
    v->code = 451;
    snprintf(v->enhanced, sizeof(v->enhanced), "4.3.0");
    snprintf(v->text, sizeof(v->text), "Temporary server error, try again later");
    v->disconnect = false;
}

/* Text of a reply: a string, or a table of lines. 0, or -1 if neither. */
static int reply_text(lua_State *L, int idx, struct verdict *v)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        snprintf(v->text, sizeof(v->text), "%s", lua_tostring(L, idx));
        return 0;
    }
    if (!lua_istable(L, idx))
        return -1;
    size_t o = 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            return -1;
        }
        int k = snprintf(v->text + o, sizeof(v->text) - o, "%s%s", i > 1 ? "\n" : "", lua_tostring(L, -1));
        lua_pop(L, 1);
        if (k < 0 || (size_t)k >= sizeof(v->text) - o)
            break;
        o += (size_t)k;
    }
    return 0;
}

/*
 * The values a hook returned (nres of them on top of co) as a verdict:
 *   nil / true [, text]    accept          false [, text]  the stage's rejection
 *   code [, text]          that code       {code, text}    the same (Pike's form)
 * text is a string or a table of lines.  Returns 0, or -1 when they are none.
 */
static int to_verdict(lua_State *co, int nres, struct verdict *v)
{
    int base = lua_gettop(co) - nres + 1;
    int first = nres > 0 ? base : 0;
    int t = first ? lua_type(co, first) : LUA_TNIL;
    int textidx = nres > 1 ? base + 1 : 0;

    v->code = VERDICT_ACCEPT;
    if (t == LUA_TTABLE) {   /* raw: outside a protected call no metamethod may run */
        lua_rawgeti(co, first, 1);
        lua_rawgeti(co, first, 2);
        first = lua_gettop(co) - 1;
        textidx = lua_isnil(co, -1) ? 0 : lua_gettop(co);
        t = lua_type(co, first);
        if (t != LUA_TNUMBER)
            return -1;
    }
    switch (t) {
    case LUA_TNIL:
        break;
    case LUA_TBOOLEAN:
        v->code = lua_toboolean(co, first) ? VERDICT_ACCEPT : VERDICT_REJECT;
        break;
    case LUA_TNUMBER: {
        int isnum;
        lua_Integer code = lua_tointegerx(co, first, &isnum);
        if (!isnum || code < 200 || code > 599)
            return -1;
        v->code = (int)code;
        break;
    }
    default:
        return -1;
    }
    if (textidx && !lua_isnil(co, textidx) && reply_text(co, textidx, v) < 0)
        return -1;
    return 0;
}

static void end_call(struct lcall *c)
{
    struct bridge *b = c->b;
    if (c->s) {
        struct lsession *ls = *smtp_hook_data(c->s);
        if (ls && ls->call == c)
            ls->call = NULL;
    } else {
        if (c->prev)
            c->prev->next = c->next;
        else if (b->tasks == c)
            b->tasks = c->next;
        if (c->next)
            c->next->prev = c->prev;
        if (c->ended)
            c->ended(c->ended_data);
    }
    ev_timer_stop(b->loop, &c->wait);
    call_release(c);
    /* An abandoned coroutine (over budget, or its session gone) may hold
     * to-be-closed variables: close them now. */
    if (c->co && lua_status(c->co) == LUA_YIELD)
        lua_resetthread(c->co);
    luaL_unref(b->L, LUA_REGISTRYINDEX, c->coref);
    free(c);
}

/* Under lua_pcall: the traceback of coroutine 1 (light userdata) after
 * message 2 (a light C string). */
/* The traceback of the coroutine at 1 with the message at 2, without the
 * frames of the server's own prelude.lua, which only calls the hook. */
static int traceback(lua_State *L)
{
    luaL_traceback(L, lua_touserdata(L, 1), lua_touserdata(L, 2), 0);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len), *end = s + len;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t n = nl ? (size_t)(nl - s) + 1 : (size_t)(end - s);
        if (strncmp(s, "\tprelude.lua:", 13) != 0)
            luaL_addlstring(&b, s, n);
        s += n;
    }
    if (luaL_bufflen(&b) > 0 && luaL_buffaddr(&b)[luaL_bufflen(&b) - 1] == '\n')
        luaL_buffsub(&b, 1);          /* the prelude's frame was the last */
    luaL_pushresult(&b);
    return 1;
}

/*
 * Log the error that ended call c.  The traceback is made in a protected
 * call, as everything allocated for a call: at the --lua-memory cap it
 * cannot be made, and the message alone is logged.
 */
static void log_error(struct lcall *c, int rc, const char *then)
{
    lua_State *L = c->b->L;
    const char *sid = c->s ? smtp_id(c->s) : NULL;
    const char *msg = rc == LUA_ERRMEM                       ? "not enough memory (--lua-memory)"
                      : lua_type(c->co, -1) == LUA_TSTRING ? lua_tostring(c->co, -1)
                                                            : "(error object is not a string)";
    lua_pushcfunction(L, traceback);
    lua_pushlightuserdata(L, c->co);
    lua_pushlightuserdata(L, (void *)msg);
    if (lua_pcall(L, 2, 1, 0) == LUA_OK)
        log_msg(LV_ERROR, sid, "%s: %s%s", c->name, lua_tostring(L, -1), then);
    else
        log_msg(LV_ERROR, sid, "%s: %s (no traceback: out of memory)%s", c->name, msg, then);
    lua_pop(L, 1);
}

/*
 * Run the coroutine until it finishes or waits.  HOOK_DONE with v filled
 * (the call is freed), or HOOK_PENDING (it waits on the loop).
 */
static enum hook_status run(struct lcall *c, int nargs, struct verdict *v)
{
    struct bridge *b = c->b;
    int nres = 0;
    double start = bridge_now();

    b->running = c;
    b->ncalls++;
    b->over_budget = false;
    b->deadline = start + (b->budget - c->used);
    c->waiting = false;
    budget_enter(b, c->co);
    int rc = lua_resume(c->co, b->L, nargs, &nres);
    budget_leave();
    b->running = NULL;
    c->used += bridge_now() - start;

    const char *sid = c->s ? smtp_id(c->s) : NULL;
    const char *name = c->name;
    bool verdict = c->stage < CALL_CLOSE;
    const char *then = verdict ? "; answering 451" : "";
    if (rc == LUA_YIELD && c->waiting && !b->over_budget) {
        lua_pop(c->co, nres);
        return HOOK_PENDING;
    }
    v->enhanced[0] = v->text[0] = v->origin[0] = '\0';
    v->disconnect = false;
    const char *why = NULL;           /* what went wrong, for the refusal's log line */
    int first = lua_gettop(c->co) - nres + 1;   /* the first value returned */
    if (b->over_budget) {
        char at[PATH_MAX_SHOWN];
        where_stopped(c->co, at, sizeof(at));
        log_msg(LV_ERROR, sid, "%s: ran past its time budget of %.3gs%s%s%s%s%s", name, b->budget, at,
                at[0] ? "" : " (", at[0] ? "" : b->script, at[0] ? "" : ")", then);
        set_verdict_error(v);
        why = "over its time budget";
    } else if (rc == LUA_YIELD) {
        log_msg(LV_ERROR, sid, "%s: yielded outside a luasmtpd wait (%s)%s", name, b->script, then);
        set_verdict_error(v);
        why = "yielded outside a wait";
    } else if (rc != LUA_OK) {
        log_error(c, rc, then);
        set_verdict_error(v);
        why = "script error";
    } else if (verdict && to_verdict(c->co, nres, v) < 0) {
        char shown[256] = "nothing";
        if (nres)
            shown_value(c->co, first, shown, sizeof(shown));
        log_msg(LV_ERROR, sid, "%s: invalid return value (%s)%s", name, shown, then);
        set_verdict_error(v);
        why = "invalid return value";
    }
    /* refusals only, not per 250, unless the console shows who decided */
    if (verdict && (v->code == VERDICT_REJECT || v->code >= 400 || (c->s && smtp_traced(c->s))))
        set_origin(b, c->stage, name, why, v);
    struct buf *e = why ? console_event_begin("error", sid) : NULL;
    if (e) {
        json_field(e, "hook", name);
        json_field(e, "why", why);
        json_field(e, "message", rc != LUA_OK && rc != LUA_YIELD && lua_type(c->co, -1) == LUA_TSTRING
                                     ? lua_tostring(c->co, -1) : NULL);
        console_event_end();
    }
    metrics_hook(c->stage, bridge_now() - c->begun, why && !b->over_budget, b->over_budget);
    end_call(c);
    return HOOK_DONE;
}

const char *call_no_wait(lua_State *L)
{
    struct lcall *c = bridge_of(L)->running;
    if (c == NULL)
        return "%s can only be called from a hook";
    if (c->stage == CALL_CLOSE)
        return "on_close may not wait (%s)";   /* its session is gone */
    if (c->co != L)
        return "%s cannot be called from a nested coroutine";
    return NULL;
}

struct lcall *call_waitable(lua_State *L, const char *what)
{
    const char *why = call_no_wait(L);
    if (why)
        luaL_error(L, why, what);
    return bridge_of(L)->running;
}

/* --- waiting --------------------------------------------------------------- */

void call_release(struct lcall *c)
{
    if (c->release)
        c->release(c->waitdata);
    c->release = NULL;
    c->waitdata = NULL;
}

static void wait_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct lcall *c = w->data;
    (void)loop;
    (void)revents;
    c->timed_out = !c->woken;
    call_wake(c);
}

/* A new call's wait timer. */
static void init_wait(struct lcall *c)
{
    ev_init(&c->wait, wait_cb);
    c->wait.data = c;
}

int call_wait(lua_State *L, struct lcall *c, void *data, void (*release)(void *data),
              double timeout, lua_KFunction k)
{
    call_release(c);
    c->waitdata = data;
    c->release = release;
    c->timeout = timeout;
    c->woken = c->timed_out = false;
    if (timeout >= 0) {
        ev_timer_set(&c->wait, timeout, 0.);
        ev_timer_start(c->b->loop, &c->wait);
    }
    c->waiting = true;
    return lua_yieldk(L, 0, (lua_KContext)c, k);
}

void call_wake(struct lcall *c)
{
    struct verdict v;
    struct smtp *s = c->s;
    ev_timer_stop(c->b->loop, &c->wait);
    c->waiting = false;
    if (run(c, 0, &v) == HOOK_DONE && s)
        smtp_verdict(s, &v);
}

void call_wake_soon(struct lcall *c)
{
    c->woken = true;
    ev_timer_stop(c->b->loop, &c->wait);
    ev_timer_set(&c->wait, 0., 0.);
    ev_timer_start(c->b->loop, &c->wait);
}

double call_opt_timeout(lua_State *L, int idx, double dflt)
{
    double t = dflt;
    if (lua_getfield(L, idx, "timeout") != LUA_TNIL) {
        t = luaL_checknumber(L, -1);
        luaL_argcheck(L, t > 0 && t <= 86400, idx, "timeout out of range (0 to 86400)");
    }
    lua_pop(L, 1);
    return t;
}

int call_fail(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    lua_pushnil(L);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return 2;
}

/* Under lua_pcall, as prepare(): the task's call and coroutine, with the
 * function and its argument moved onto it. */
static int prepare_task(lua_State *L)
{
    struct lcall **cp = lua_touserdata(L, 1);
    struct bridge *b = bridge_of(L);
    struct lcall *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return luaL_error(L, "out of memory");
    c->b = b;
    c->stage = CALL_TASK;
    c->begun = bridge_now();
    c->coref = LUA_NOREF;
    init_wait(c);
    c->next = b->tasks;
    if (b->tasks)
        b->tasks->prev = c;
    b->tasks = c;
    *cp = c;
    lua_State *co = lua_newthread(L);
    c->coref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->co = co;
    int n = lua_gettop(L) - 1;     /* the function and its argument, if any */
    lua_xmove(L, co, n);
    return 0;
}

struct lcall *call_task(struct bridge *b, const char *name, int arg)
{
    lua_State *L = b->L;
    struct lcall *c = NULL;
    struct verdict ignored;
    int top = lua_gettop(L) - 1;  /* below the function */

    lua_pushcfunction(L, prepare_task);
    lua_pushlightuserdata(L, &c);
    lua_rotate(L, -3, 2);         /* prepare_task, &c, function */
    if (arg)
        lua_pushvalue(L, arg);
    int rc = lua_pcall(L, arg ? 3 : 2, 0, 0);
    if (rc != LUA_OK) {
        log_msg(LV_ERROR, NULL, "%s: cannot start: %s", name,
                rc == LUA_ERRMEM ? "not enough memory (--lua-memory)" : lua_tostring(L, -1));
        lua_settop(L, top);
        if (c)
            end_call(c);
        return NULL;
    }
    c->name = name;
    return run(c, arg ? 1 : 0, &ignored) == HOOK_PENDING ? c : NULL;
}

void call_end_tasks(struct bridge *b)
{
    while (b->tasks)
        end_call(b->tasks);
}

/* Push the arguments of a stage; returns their number. */
static int push_args(lua_State *L, struct lsession *ls, enum hook_stage st, const struct hook_args *a,
                     struct smtp *s)
{
    int n = 0;
    switch (st) {
    case HOOK_HELO:
        lua_pushstring(L, a->name);
        n = 1;
        break;
    case HOOK_MAIL:
    case HOOK_RCPT:
    case HOOK_VRFY:
    case HOOK_EXPN:
        lua_pushstring(L, a->address);
        n = 1;
        break;
    case HOOK_AUTH:
        lua_pushstring(L, a->user);
        lua_pushstring(L, a->password);
        n = 2;
        break;
    case HOOK_MESSAGE:
        if (mail_push(L, ls->b, s, a->message, a->size) < 0)
            luaL_error(L, "out of memory");
        n = 1;
        break;
    default:
        break;
    }
    lsession_push(L, ls);
    return n + 1;
}

static void set_params(lua_State *L, struct lsession *ls, const struct hook_args *a);

static bool has_hook(struct bridge *b, int stage)
{
    lua_getglobal(b->L, hook_names[stage]);
    bool defined = lua_isfunction(b->L, -1);
    lua_pop(b->L, 1);
    return defined;
}

struct prep {
    struct bridge          *b;
    struct smtp         *s;
    int                     stage;
    const struct hook_args *args;     /* NULL for on_close */
    struct lcall           *c;        /* out: the call, if the hook exists */
    int                     nargs;
};

/*
 * Under lua_pcall: everything a call allocates in the Lua state (the
 * session object, the coroutine, the arguments, the mail table), so that
 * reaching the memory cap fails this one call, never the process.  The
 * call is recorded in p->c as soon as it exists, for the caller to free
 * when a later step fails.
 */
static int prepare(lua_State *L)
{
    struct prep *p = lua_touserdata(L, 1);
    if (p->stage == HOOK_MESSAGE) {
        /* the end-of-data step of prelude.lua: on_mail, then IOEvent */
        lua_getglobal(L, "on_mail");
        lua_getglobal(L, "IOEvent");
        bool any = lua_isfunction(L, -1) || lua_isfunction(L, -2);
        lua_pop(L, 2);
        if (!any)
            return 0;
        lua_getfield(L, LUA_REGISTRYINDEX, "luasmtpd.message");
    } else {
        lua_getglobal(L, hook_names[p->stage]);
        if (!lua_isfunction(L, -1))
            return 0;
    }
    struct lsession *ls = lsession_get(p->b, p->s);
    struct lcall *c = ls ? calloc(1, sizeof(*c)) : NULL;
    if (c == NULL)
        return luaL_error(L, "out of memory");
    c->b = p->b;
    c->s = p->s;
    c->stage = p->stage;
    c->name = hook_names[p->stage];
    c->begun = bridge_now();
    c->coref = LUA_NOREF;
    init_wait(c);
    p->c = c;
    lua_State *co = lua_newthread(L);
    c->coref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->co = co;
    if (p->args)
        set_params(L, ls, p->args);
    push_args(L, ls, p->stage, p->args, p->s);
    if (p->stage == HOOK_MESSAGE)
        lua_pushstring(L, p->b->event);
    int n = lua_gettop(L) - 1;    /* the function and its arguments */
    if (!lua_checkstack(co, n))
        return luaL_error(L, "stack overflow");
    lua_xmove(L, co, n);
    p->nargs = n - 1;
    ls->call = c;
    return 0;
}

/* Start a call of hook `stage`: HOOK_DONE with v untouched when the script
 * has no such hook, or with v an error verdict when it could not start;
 * else the call runs (HOOK_DONE with its verdict, or HOOK_PENDING). */
static enum hook_status begin(struct bridge *b, struct smtp *s, int stage,
                              const struct hook_args *a, struct verdict *v)
{
    lua_State *L = b->L;
    struct prep p = { .b = b, .s = s, .stage = stage, .args = a };
    int top = lua_gettop(L);

    lua_pushcfunction(L, prepare);
    lua_pushlightuserdata(L, &p);
    int rc = lua_pcall(L, 1, 0, 0);
    if (rc != LUA_OK) {
        log_msg(LV_ERROR, smtp_id(s), "%s: cannot start: %s%s", hook_names[stage],
                rc == LUA_ERRMEM ? "not enough memory (--lua-memory)" : lua_tostring(L, -1),
                stage == CALL_CLOSE ? "" : "; answering 451");
        lua_settop(L, top);
        mail_abandon(b);
        if (p.c)
            end_call(p.c);
        set_verdict_error(v);
        return HOOK_DONE;
    }
    if (p.c == NULL)
        return HOOK_DONE;
    return run(p.c, p.nargs, v);
}

static bool lua_defines(void *ctx, enum hook_stage st)
{
    const struct bridge *b = ctx;
    return (b->defined >> st) & 1;
}

/* A hook the script did not define when it loaded costs one test of a
 * bit (the end of data also runs for IOEvent); v is VERDICT_ACCEPT
 * already. */
static enum hook_status lua_call_hook(void *ctx, struct smtp *s, enum hook_stage st,
                                      const struct hook_args *a, struct verdict *v)
{
    struct bridge *b = ctx;
    if (!lua_defines(b, st) && !(st == HOOK_MESSAGE && b->ioevent))
        return HOOK_DONE;
    return begin(b, s, (int)st, a, v);
}

/* session.params: the ESMTP parameters of the command being decided. */
static void set_params(lua_State *L, struct lsession *ls, const struct hook_args *a)
{
    luaL_unref(L, LUA_REGISTRYINDEX, ls->paramsref);
    ls->paramsref = LUA_NOREF;
    if (a->params == NULL)
        return;
    size_t n = hook_nparams(a);
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        struct hook_param p;
        char key[64];
        hook_param(a, i, &p);
        size_t k = p.keylen < sizeof(key) - 1 ? p.keylen : sizeof(key) - 1;
        for (size_t j = 0; j < k; j++)
            key[j] = (char)(p.key[j] >= 'a' && p.key[j] <= 'z' ? p.key[j] - 32 : p.key[j]);
        key[k] = '\0';
        if (p.value)
            lua_pushlstring(L, p.value, p.valuelen);
        else
            lua_pushboolean(L, 1);
        lua_setfield(L, -2, key);
    }
    ls->paramsref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void lua_close_hook(void *ctx, struct smtp *s)
{
    struct bridge *b = ctx;
    struct lsession *ls = *smtp_hook_data(s);
    struct verdict ignored;

    if (ls && ls->call)
        end_call(ls->call);   /* a pending verdict that will never be given */
    if ((b->defined >> CALL_CLOSE) & 1)
        begin(b, s, CALL_CLOSE, NULL, &ignored);   /* cannot wait: luasmtpd.sleep refuses */
    lsession_free(b, s);
    b->sessions--;
}

static void lua_open_hook(void *ctx, struct smtp *s)
{
    struct bridge *b = ctx;
    (void)s;
    b->sessions++;
}

void call_hooks_init(struct bridge *b)
{
    b->hooks.ctx = b;
    b->hooks.call = lua_call_hook;
    b->hooks.close = lua_close_hook;
    b->hooks.open = lua_open_hook;
    b->hooks.defines = lua_defines;
    b->defined = 0;
    for (int st = 0; st <= CALL_CLOSE; st++)
        if (has_hook(b, st))
            b->defined |= 1 << st;
    lua_getglobal(b->L, "IOEvent");
    b->ioevent = lua_isfunction(b->L, -1);
    lua_pop(b->L, 1);
}
