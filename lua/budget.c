/*
 * budget: every call has a budget of running time (--hook-timeout).
 *
 * Past it, a debug hook suspends the call's coroutine with a yield, which
 * no pcall in the script can catch; call.c then abandons the call and
 * answers 451.  Where no yield is possible (inside a C callback) the hook
 * raises an error instead, and yields at the next chance.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"

#define COUNT_STEP 1000   /* instructions between budget checks */
#define TICK_IDLE  10     /* ticks without a call before the timer stops */

static void budget_hook(lua_State *L, lua_Debug *ar);

/*
 * When the hook runs.  A count hook makes Lua stop at every instruction to
 * count (8% of a small message's whole cost), so a call's own coroutine
 * runs without one, and a timer signal ticks while calls run (ten times per
 * budget, at most 100 ms apart), each tick setting the hook on the running
 * call's coroutine.  The hook looks at the clock and, within the budget,
 * removes itself until the next tick.  The timer stops after TICK_IDLE ticks
 * without a call.  Coroutines a script creates itself run while their
 * creator waits in resume, out of a tick's reach: they carry the counting
 * hook from birth (see budget_open_coroutines).
 */
static lua_State *volatile tick_co;             /* the running call's coroutine */
static volatile sig_atomic_t tick_idle = -1;    /* ticks without a call; -1: stopped */
static timer_t tick_timer;
static pid_t tick_pid;                          /* the process that made the timer */

static void tick(int sig)
{
    lua_State *co = tick_co;
    (void)sig;
    if (co != NULL) {
        tick_idle = 0;
        lua_sethook(co, budget_hook, LUA_MASKCOUNT, 1);
    } else if (tick_idle >= 0 && ++tick_idle >= TICK_IDLE) {
        struct itimerspec stop = { 0 };
        timer_settime(tick_timer, 0, &stop, NULL);
        tick_idle = -1;
    }
}

/* Start the ticks, making the timer on first use in this process (timers
 * do not survive fork).  0, or -1 with errno. */
static int tick_start(const struct bridge *b)
{
    if (tick_pid != getpid()) {
        struct sigaction sa = { .sa_handler = tick, .sa_flags = SA_RESTART };
        struct sigevent ev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGALRM };
        sigemptyset(&sa.sa_mask);
        ev._sigev_un._tid = gettid();   /* the loop's thread, not a library's */
        if (sigaction(SIGALRM, &sa, NULL) < 0 || timer_create(CLOCK_MONOTONIC, &ev, &tick_timer) < 0)
            return -1;
        tick_pid = getpid();
    }
    double every = b->budget / 10;
    every = every > 0.1 ? 0.1 : every < 0.001 ? 0.001 : every;
    struct timespec t = { .tv_sec = 0, .tv_nsec = (long)(every * 1e9) };
    struct itimerspec its = { .it_interval = t, .it_value = t };
    if (timer_settime(tick_timer, 0, &its, NULL) < 0)
        return -1;
    tick_idle = 0;
    return 0;
}

/*
 * Past the budget the coroutine is suspended by a yield from this hook: no
 * pcall in the script can catch a yield, and the call is then abandoned.
 * Inside a C callback (where no yield is possible) an error is raised
 * instead, and the hook yields at the next count it can.
 */
static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct bridge *b = bridge_of(L);
    (void)ar;
    if (b->running == NULL)
        return;
    if (!b->over_budget && bridge_now() <= b->deadline) {
        /* a tick's look: the call's own coroutine waits for the next one */
        if (L == b->running->co && tick_idle >= 0)
            lua_sethook(L, NULL, 0, 0);
        return;
    }
    b->over_budget = true;
    if (lua_isyieldable(L)) {
        lua_yield(L, 0);   /* in a hook this returns; the yield follows */
        return;
    }
    luaL_error(L, "hook ran past its time budget (%.3gs)", b->budget);
}

/* coroutine.create and coroutine.wrap (upvalue 1) with the counting hook
 * set on the new coroutine (wrap's function holds it as its upvalue). */
static int hooked_coroutine(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    if (lua_type(L, -1) == LUA_TFUNCTION)
        lua_getupvalue(L, -1, 1);
    else
        lua_pushvalue(L, -1);
    lua_sethook(lua_tothread(L, -1), budget_hook, LUA_MASKCOUNT, COUNT_STEP);
    lua_pop(L, 1);
    return 1;
}

void budget_open_coroutines(lua_State *L)
{
    static const char *const names[] = { "create", "wrap" };
    lua_getglobal(L, "coroutine");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        lua_getfield(L, -1, names[i]);
        lua_pushcclosure(L, hooked_coroutine, 1);
        lua_setfield(L, -2, names[i]);
    }
    lua_pop(L, 1);
}

void budget_enter(struct bridge *b, lua_State *co)
{
    tick_co = co;   /* before looking at tick_idle: a tick in between keeps it running */
    if (tick_idle < 0 && tick_start(b) < 0) {
        static bool told;
        if (!told)
            log_msg(LV_ERROR, NULL, "cannot start the hook timer (%s): counting instead",
                    strerror(errno));
        told = true;
        lua_sethook(co, budget_hook, LUA_MASKCOUNT, COUNT_STEP);
    }
}

void budget_leave(void)
{
    tick_co = NULL;
}
