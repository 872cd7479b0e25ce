/*
 * luasmtpd.after(seconds, fn), luasmtpd.every(seconds, fn), luasmtpd.now(),
 * luasmtpd.time()
 *
 * A timer is a userdata holding an ev_timer and the function.  While armed
 * it is anchored in the registry, so a script may drop the handle; cancel()
 * or the last run of an `after` lets it go.  Each firing runs the function
 * as a task (call.c): a coroutine with the hooks' time budget that may wait
 * on actions.  An `every` whose previous run still waits skips the tick.
 * In standby the armed timers stop, and start again with the time each
 * had left.
 */
#include "internal.h"
#include "log.h"

#define TIMER_META    "luasmtpd.timer"
#define TIMER_MAX     31536000.0     /* a year */
#define EVERY_MIN     0.01

struct ltimer {
    ev_timer        t;
    struct bridge  *b;
    int             fnref;         /* the function */
    int             selfref;       /* the anchor while armed, or LUA_NOREF */
    bool            repeat;
    struct lcall   *task;          /* its run in progress, if any */
    double          left;          /* in standby: the seconds it had left */
    struct ltimer  *next, **pprev; /* in b->timers while armed */
};

static void unlink_timer(struct ltimer *tm)
{
    if (tm->pprev == NULL)
        return;
    if (tm->next)
        tm->next->pprev = tm->pprev;
    *tm->pprev = tm->next;
    tm->next = NULL;
    tm->pprev = NULL;
}

static void disarm(struct ltimer *tm)
{
    lua_State *L = tm->b->L;
    unlink_timer(tm);
    ev_timer_stop(tm->b->loop, &tm->t);
    luaL_unref(L, LUA_REGISTRYINDEX, tm->selfref);
    tm->selfref = LUA_NOREF;
}

/* The timer's run ended. */
static void task_ended(void *data)
{
    struct ltimer *tm = data;
    tm->task = NULL;
}

static void fire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ltimer *tm = w->data;
    lua_State *L = tm->b->L;
    const char *kind = tm->repeat ? "every" : "after";
    (void)loop;
    (void)revents;
    if (tm->task) {
        log_msg(LV_DEBUG, NULL, "every: the previous run still waits; tick skipped");
        return;
    }
    /* the handle is the function's argument; keep it on the stack, since
     * disarming an `after` may leave it otherwise unreferenced */
    lua_rawgeti(L, LUA_REGISTRYINDEX, tm->selfref);
    int self = lua_gettop(L);
    if (!tm->repeat)
        disarm(tm);
    lua_rawgeti(L, LUA_REGISTRYINDEX, tm->fnref);
    struct lcall *c = call_task(tm->b, kind, self);
    if (c) {
        c->ended = task_ended;
        c->ended_data = tm;
        tm->task = c;
    }
    lua_pop(L, 1);
}

static int timer_cancel(lua_State *L)
{
    struct ltimer *tm = luaL_checkudata(L, 1, TIMER_META);
    bool armed = tm->selfref != LUA_NOREF;
    if (armed)
        disarm(tm);
    lua_pushboolean(L, armed);
    return 1;
}

static int timer_gc(lua_State *L)
{
    struct ltimer *tm = luaL_checkudata(L, 1, TIMER_META);
    unlink_timer(tm);
    ev_timer_stop(tm->b->loop, &tm->t);
    if (tm->task)
        tm->task->ended = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, tm->fnref);
    tm->fnref = LUA_NOREF;
    return 0;
}

static int timer_tostring(lua_State *L)
{
    struct ltimer *tm = luaL_checkudata(L, 1, TIMER_META);
    lua_pushfstring(L, "luasmtpd.timer (%s, %s)", tm->repeat ? "every" : "after",
                    tm->selfref != LUA_NOREF ? "armed" : "done");
    return 1;
}

static int new_timer(lua_State *L, bool repeat)
{
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_Number min = repeat ? EVERY_MIN : 0;
    luaL_argcheck(L, secs >= min && secs <= TIMER_MAX, 1,
                  repeat ? "seconds out of range (0.01 to 31536000)"
                         : "seconds out of range (0 to 31536000)");
    struct bridge *b = bridge_of(L);
    struct ltimer *tm = lua_newuserdatauv(L, sizeof(*tm), 0);
    tm->b = b;
    tm->fnref = tm->selfref = LUA_NOREF;
    tm->repeat = repeat;
    tm->task = NULL;
    tm->next = NULL;
    tm->pprev = NULL;
    ev_timer_init(&tm->t, fire_cb, secs, repeat ? secs : 0.);
    tm->t.data = tm;
    if (luaL_newmetatable(L, TIMER_META)) {
        static const luaL_Reg methods[] = { { "cancel", timer_cancel }, { NULL, NULL } };
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, timer_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, timer_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 2);
    tm->fnref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    tm->selfref = luaL_ref(L, LUA_REGISTRYINDEX);
    tm->left = secs;
    if (!b->standby)
        ev_timer_start(b->loop, &tm->t);
    if ((tm->next = b->timers) != NULL)
        tm->next->pprev = &tm->next;
    tm->pprev = &b->timers;
    b->timers = tm;
    return 1;
}

static int l_after(lua_State *L)
{
    return new_timer(L, false);
}

static int l_every(lua_State *L)
{
    return new_timer(L, true);
}

/* luasmtpd.now(): seconds on a monotonic clock, for measuring intervals. */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, bridge_now());
    return 1;
}

/* luasmtpd.time(): the date as Unix time, with a fraction (the loop's clock,
 * the one luasmtpd.store's expiries use). */
static int l_time(lua_State *L)
{
    lua_pushnumber(L, ev_now(bridge_of(L)->loop));
    return 1;
}

static void timer_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "after", l_after }, { "every", l_every }, { "now", l_now }, { "time", l_time }, { NULL, NULL },
    };
    luaL_setfuncs(L, funcs, 0);
}

/* A reload retires the bridge: its timers, `every` and watchdogs with them,
 * stop now (a run in progress finishes). */
static void timer_retire(struct bridge *b)
{
    while (b->timers)
        disarm(b->timers);
}

static void timer_standby(struct bridge *b, bool on)
{
    for (struct ltimer *tm = b->timers; tm; tm = tm->next) {
        if (on) {
            tm->left = ev_timer_remaining(b->loop, &tm->t);
            ev_timer_stop(b->loop, &tm->t);
        } else {
            ev_timer_set(&tm->t, tm->left > 0 ? tm->left : 0., tm->t.repeat);
            ev_timer_start(b->loop, &tm->t);
        }
    }
}

const struct action timer_action = { .open = timer_open, .retire = timer_retire, .standby = timer_standby };
