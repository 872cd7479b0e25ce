/* The Lua state: allocator with a cap, libraries, package.path, the script,
 * and the script's `config` table. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "internal.h"
#include "log.h"
#include "metrics.h"

#ifndef LUASMTPD_LUADIR
#error "LUASMTPD_LUADIR: the Makefile sets it from LUADIR"
#endif

/* Compiled-in Lua (lua/default.lua, lua/prelude.lua). */
extern const char lua_default[], lua_prelude[];


/* Every allocation of the state goes through here: past the cap, Lua gets
 * NULL and raises "not enough memory" in the script, never in the process. */
/* A call's share: up by what grows, down by what is freed, never below 0. */
static void charge(struct lcall *c, size_t old, size_t nsize)
{
    if (nsize >= old)
        c->mem += nsize - old;
    else
        c->mem = c->mem > old - nsize ? c->mem - (old - nsize) : 0;
}

/*
 * Every allocation of the state goes through here.  Past --lua-memory, or
 * past --hook-memory for the call running now, Lua gets NULL and raises
 * "not enough memory" in the script, never in the process.  A call is
 * charged what is allocated while it runs, less what is freed meanwhile:
 * a hook that holds much while it waits fails itself, not the hooks of
 * other sessions.
 */
static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct bridge *b = ud;
    struct lcall *c = b->running;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        b->mem -= old;
        if (c)
            charge(c, old, 0);
        return NULL;
    }
    if (nsize > old && ((b->mem_limit && b->mem - old + nsize > b->mem_limit) ||
                        (c && b->call_limit && c->mem + (nsize - old) > b->call_limit)))
        return NULL;
    void *p = ptr ? realloc(ptr, nsize) : malloc(nsize);
    if (p == NULL)
        return NULL;
    b->mem = b->mem - old + nsize;
    if (c)
        charge(c, old, nsize);
    return p;
}

/* Where scripts' `require` looks: first the script's own directory (made
 * absolute, so `require "helper"` finds helper.lua beside it whatever the
 * working directory), then lua/ of the source tree when the binary runs
 * from one (build/luasmtpd beside lua/prelude.lua), then LUADIR (`make
 * install LUADIR=...`), then Lua's own path (LUA_PATH), which names LUADIR
 * only once.  A directory whose name holds ';' or '?' (package.path's own
 * characters) is left out. */
static void set_paths(lua_State *L, const char *script)
{
    char exe[PATH_MAX], tree[PATH_MAX + 16] = "", own[PATH_MAX] = "";
    if (script) {
        char dir[PATH_MAX];
        const char *slash = strrchr(script, '/');
        snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - script) : 1, slash ? script : ".");
        if (realpath(dir[0] ? dir : "/", own) == NULL || strpbrk(own, ";?"))
            own[0] = '\0';
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash = n > 0 ? (exe[n] = '\0', strrchr(exe, '/')) : NULL;
    if (slash) {
        *slash = '\0';
        snprintf(tree, sizeof(tree), "%s/../lua", exe);
        char probe[PATH_MAX + 32];
        snprintf(probe, sizeof(probe), "%s/prelude.lua", tree);
        if (access(probe, R_OK) != 0)
            tree[0] = '\0';
    }
    luaL_Buffer b;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *dflt = lua_tostring(L, -1);
    luaL_buffinit(L, &b);
    if (own[0]) {
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", own, own);
        luaL_addvalue(&b);
    }
    if (tree[0]) {
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", tree, tree);
        luaL_addvalue(&b);
    }
    if (strstr(dflt, LUASMTPD_LUADIR "/?.lua;") == NULL)
        luaL_addstring(&b, LUASMTPD_LUADIR "/?.lua;" LUASMTPD_LUADIR "/?/init.lua;");
    luaL_addstring(&b, dflt);
    luaL_pushresult(&b);
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* An error outside any protected call: a bug, never a script's doing.
 * Say so and exit (a supervisor restarts the worker) rather than abort
 * without a word. */
static int panic(lua_State *L)
{
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)";
    log_msg(LV_ERROR, NULL, "lua: unprotected error, exiting: %s", msg);
    _exit(70);   /* EX_SOFTWARE */
}

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Run the chunk a load left on the stack (load status rc) with a traceback
 * handler, leaving its nres results.  0, or -1 with the error in err. */
static int run_chunk(lua_State *L, int rc, int nres, char *err)
{
    if (rc == LUA_OK) {
        lua_pushcfunction(L, msghandler);
        lua_insert(L, -2);
        rc = lua_pcall(L, 0, nres, -2);
        lua_remove(L, -1 - (rc == LUA_OK ? nres : 1));
    }
    if (rc != LUA_OK) {
        snprintf(err, BRIDGE_ERR_MAX, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* string.rep (upvalue 1) that returns at once what is empty: the original
 * runs its count out even for nothing, out of the budget's reach.  A result
 * over --lua-memory needs no check here: the original asks for all of it
 * first, and the capped allocator refuses before any work. */
static int bounded_rep(lua_State *L)
{
    size_t l, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || (l == 0 && lsep == 0)) {
        lua_pushliteral(L, "");
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* What scripts get of the standard library beyond Lua's own: a bounded
 * string.rep, and of the debug library only traceback unless --lua-debug
 * (sethook, getinfo and the rest reach past the time budget and into the
 * bridge's own coroutines). */
static void restrict_libs(lua_State *L, bool debug)
{
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "rep");
    lua_pushcclosure(L, bounded_rep, 1);
    lua_setfield(L, -2, "rep");
    lua_pop(L, 1);
    if (debug)
        return;
    lua_createtable(L, 0, 1);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_setfield(L, -3, "traceback");
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "debug");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_insert(L, -2);
    lua_setfield(L, -2, "debug");   /* require "debug" gives the same */
    lua_pop(L, 1);
}

int bridge_open(struct bridge **b_r, struct ev_loop *loop, const char *script, unsigned opts,
                char *err)
{
    struct bridge *b = calloc(1, sizeof(*b));
    *b_r = NULL;
    if (b == NULL) {
        snprintf(err, BRIDGE_ERR_MAX, "out of memory");
        return -1;
    }
    b->loop = loop;
    b->script = script ? script : "(default)";
    b->budget = 1.0;
    b->body_lines = 64;
    strcpy(b->event, "smtp.mail");
    for (int i = 0; i < HOOK_STAGE_COUNT; i++)
        b->origins[i].ref = LUA_NOREF;
    b->L = lua_newstate(capped_alloc, b);
    if (b->L == NULL) {
        free(b);
        snprintf(err, BRIDGE_ERR_MAX, "cannot create the Lua state");
        return -1;
    }
    lua_State *L = b->L;
    lua_atpanic(L, panic);
    call_metrics_names();
    luaL_openlibs(L);
    restrict_libs(L, opts & BRIDGE_DEBUG);
    b->dry_run = opts & BRIDGE_DRY_RUN;
    budget_open_coroutines(L);
    /* most objects (each mail table) die young: the generational mode
     * collects them for less work */
    lua_gc(L, LUA_GCGEN, 0, 0);
    set_paths(L, script);
    /* the bridge itself, reachable from C functions called by scripts */
    lua_pushlightuserdata(L, b);
    lua_setfield(L, LUA_REGISTRYINDEX, "luasmtpd.bridge");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_luasmtpd);
    lua_setfield(L, -2, "luasmtpd");
    lua_pop(L, 1);
    lsession_open_lib(L);

    /* the prelude (HSYCO's globals) returns the end-of-data step */
    int rc = run_chunk(L, luaL_loadbuffer(L, lua_prelude, strlen(lua_prelude), "=prelude.lua"), 1,
                       err);
    if (rc == 0) {
        lua_setfield(L, LUA_REGISTRYINDEX, "luasmtpd.message");
        rc = run_chunk(L, script ? luaL_loadfile(L, script)
                                 : luaL_loadbuffer(L, lua_default, strlen(lua_default),
                                                   "=(default script)"),
                       0, err);
    }
    if (rc < 0) {
        bridge_close(&b);
        return -1;
    }
    call_hooks_init(b);
    *b_r = b;
    return 0;
}

/* A config value as option text: numbers, strings, booleans. */
static int config_value(lua_State *L, int idx, const char *key, char *out, size_t outsz, char *err)
{
    int k;
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            k = snprintf(out, outsz, "%lld", (long long)lua_tointeger(L, idx));
        else
            k = snprintf(out, outsz, "%.17g", lua_tonumber(L, idx));
        break;
    case LUA_TSTRING:
        k = snprintf(out, outsz, "%s", lua_tostring(L, idx));
        break;
    case LUA_TBOOLEAN:
        k = snprintf(out, outsz, "%s", lua_toboolean(L, idx) ? "true" : "false");
        break;
    default:
        snprintf(err, BRIDGE_ERR_MAX, "config.%s: a %s is not a valid value", key,
                 luaL_typename(L, idx));
        return -1;
    }
    if (k < 0 || (size_t)k >= outsz) {
        snprintf(err, BRIDGE_ERR_MAX, "config.%s: the value is too long", key);
        return -1;
    }
    return 0;
}

/* The elements of the list at -1 as one comma-separated value. */
static int joined_value(lua_State *L, const char *name, char *out, size_t outsz, char *err)
{
    size_t used = 0;
    lua_Integer n = luaL_len(L, -1);
    out[0] = '\0';
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1)
            out[used++] = ',';
        lua_geti(L, -1, i);
        int rc = config_value(L, -1, name, out + used, outsz - used, err);
        lua_pop(L, 1);
        if (rc < 0)
            return -1;
        used += strlen(out + used);
    }
    return 0;
}

/* The options the script's `config` set, as the registry's table
 * "luasmtpd.applied": option name -> its values, one per line. */
static void note_applied(lua_State *L, const char *name, const char *value)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, "luasmtpd.applied");
    lua_getfield(L, -1, name);
    if (lua_isstring(L, -1))
        lua_pushfstring(L, "%s\n%s", lua_tostring(L, -1), value);
    else
        lua_pushstring(L, value);
    lua_setfield(L, -3, name);
    lua_pop(L, 2);
}

static int set_option(struct bridge *b, struct config *cfg, const char *name, const char *value,
                      char *err)
{
    char cerr[CONFIG_ERR_MAX];
    if (config_set(cfg, name, value, cerr) == 0) {
        note_applied(b->L, name, value);
        return 0;
    }
    snprintf(err, BRIDGE_ERR_MAX, "%s: config: %s", b->script, cerr);
    return -1;
}

static bool listed(const char *const *flags, const char *name)
{
    for (; flags && *flags; flags++)
        if (strcmp(*flags, name) == 0)
            return true;
    return false;
}

/*
 * config.tls = {{cert = FILE, key = FILE, names = {"mx.lan", "*.lan"}}, ...},
 * the list at -1: each entry a --tls-cert with the --tls-key and
 * --tls-names in the same place ("" when not given: the key in the
 * certificate's file, the certificate's own names).  A --tls-cert on the
 * command line wins over the whole list.  0, or -1 with err.
 */
static int apply_tls_list(struct bridge *b, struct config *cfg, const char *const *flags, char *err)
{
    static const char *const fields[] = { "cert", "key", "names" };
    static const char *const opts[] = { "tls-cert", "tls-key", "tls-names" };
    lua_State *L = b->L;
    if (listed(flags, "tls-cert"))
        return 0;
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        char name[64], value[CONFIG_PATH_MAX + 1];
        int rc = 0;
        lua_geti(L, -1, i);
        if (!lua_istable(L, -1)) {
            snprintf(err, BRIDGE_ERR_MAX, "%s: config.tls[%lld] must be a table {cert = ..., key = ..., names = ...}",
                     b->script, (long long)i);
            lua_pop(L, 1);
            return -1;
        }
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
            lua_pop(L, 1);
            if (strcmp(k, "cert") != 0 && strcmp(k, "key") != 0 && strcmp(k, "names") != 0) {
                snprintf(err, BRIDGE_ERR_MAX, "%s: config.tls[%lld]: %s is not cert, key or names", b->script,
                         (long long)i, lua_type(L, -1) == LUA_TSTRING ? k : "a key");
                lua_pop(L, 2);
                return -1;
            }
        }
        if (lua_getfield(L, -1, "cert") == LUA_TNIL) {
            snprintf(err, BRIDGE_ERR_MAX, "%s: config.tls[%lld] needs cert", b->script, (long long)i);
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
        /* keys and names line up with their certificates */
        while (rc == 0 && cfg->ntls_keys < cfg->ntls_certs)
            rc = set_option(b, cfg, "tls-key", "", err);
        while (rc == 0 && cfg->ntls_names < cfg->ntls_certs)
            rc = set_option(b, cfg, "tls-names", "", err);
        for (int f = 0; f < 3 && rc == 0; f++) {
            snprintf(name, sizeof(name), "tls[%lld].%s", (long long)i, fields[f]);
            value[0] = '\0';
            int t = lua_getfield(L, -1, fields[f]);
            if (t == LUA_TTABLE && f == 2)
                rc = joined_value(L, name, value, sizeof(value), err);
            else if (t != LUA_TNIL)
                rc = config_value(L, -1, name, value, sizeof(value), err);
            lua_pop(L, 1);
            if (rc == 0)
                rc = set_option(b, cfg, opts[f], value, err);
        }
        lua_pop(L, 1);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/*
 * One `config` entry: the key at -2, the value at -1.  `prefix` is the
 * section's name for a table of options (mqtt = {host = ...} sets
 * mqtt-host); a list (listen = {...}) sets the option once per element.
 * 0, or -1 with err.
 */
static int apply_entry(struct bridge *b, struct config *cfg, const char *const *flags,
                       const char *prefix, char *err)
{
    lua_State *L = b->L;
    char name[128], value[1024];
    if (lua_type(L, -2) != LUA_TSTRING) {
        snprintf(err, BRIDGE_ERR_MAX, "%s: config keys must be names", b->script);
        return -1;
    }
    snprintf(name, sizeof(name), "%s%s%s", prefix ? prefix : "", prefix ? "-" : "",
             lua_tostring(L, -2));
    for (char *p = name; *p; p++)
        if (*p == '_')
            *p = '-';
    const char *option = config_option_name(name);
    if (option == NULL && prefix == NULL && strcmp(name, "tls") == 0 && lua_istable(L, -1) &&
        luaL_len(L, -1) > 0)
        return apply_tls_list(b, cfg, flags, err);
    if (option == NULL && prefix == NULL && lua_istable(L, -1) && luaL_len(L, -1) == 0) {
        int rc = 0;
        lua_pushnil(L);
        while (rc == 0 && lua_next(L, -2)) {
            rc = apply_entry(b, cfg, flags, name, err);
            lua_pop(L, 1);
        }
        if (rc != 0)
            lua_pop(L, 1);        /* the key lua_next left */
        return rc;
    }
    if (option == NULL) {
        snprintf(err, BRIDGE_ERR_MAX, "%s: config.%s%s%s is not an option (see --help)", b->script,
                 prefix ? prefix : "", prefix ? "." : "", lua_tostring(L, -2));
        return -1;
    }
    if (listed(flags, option))
        return 0;
    if (strcmp(option, "lua-debug") == 0) {   /* the script has run by now */
        snprintf(err, BRIDGE_ERR_MAX, "%s: config.%s: only on the command line (--lua-debug)",
                 b->script, name);
        return -1;
    }
    bool list = lua_istable(L, -1);
    enum config_list kind = config_option_list(option);
    if (list && kind == CONFIG_LIST_NONE) {
        snprintf(err, BRIDGE_ERR_MAX, "%s: config.%s takes one value, not a list", b->script, name);
        return -1;
    }
    if (!list || kind == CONFIG_LIST_COMMA) {
        int rc = list ? joined_value(L, name, value, sizeof(value), err)
                      : config_value(L, -1, name, value, sizeof(value), err);
        return rc < 0 ? -1 : set_option(b, cfg, name, value, err);
    }
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, -1, i);
        int rc = config_value(L, -1, name, value, sizeof(value), err);
        lua_pop(L, 1);
        if (rc < 0 || set_option(b, cfg, name, value, err) < 0)
            return -1;
    }
    return 0;
}

int bridge_apply_config(struct bridge *b, struct config *cfg, const char *const *flags, char *err)
{
    lua_State *L = b->L;
    int rc = 0;
    lua_getglobal(L, "config");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (!lua_istable(L, -1)) {
        snprintf(err, BRIDGE_ERR_MAX, "%s: config must be a table", b->script);
        lua_pop(L, 1);
        return -1;
    }
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, -2)) {
        rc = apply_entry(b, cfg, flags, NULL, err);
        lua_pop(L, 1);
    }
    if (rc != 0)
        lua_settop(L, 0);
    else
        lua_pop(L, 1);
    return rc;
}

void bridge_set_limits(struct bridge *b, const struct config *cfg)
{
    b->budget = (double)cfg->hook_timeout_ms / 1000.0;
    b->mem_limit = (size_t)cfg->lua_memory;
    b->call_limit = (size_t)cfg->hook_memory;
    b->body_lines = cfg->body_lines;
    b->rawbody = cfg->rawbody != 0;
    snprintf(b->event, sizeof(b->event), "%s.mail", cfg->id);
    snprintf(b->hostname, sizeof(b->hostname), "%s", cfg->hostname);
    /* a cap below what the script already holds would fail at once */
    if (b->mem_limit && b->mem_limit < b->mem * 2)
        b->mem_limit = b->mem * 2;
}

/* mimalloc's, when it is linked in (not in the ASan build). */
extern void mi_collect(bool force) __attribute__((weak));

static int collect(lua_State *L)
{
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}

/*
 * Once a second: after a burst of calls, once the next second has brought
 * none, collect the garbage the burst left (with no allocation to come,
 * Lua would keep it) and have the allocator give the pages back, so RSS
 * returns near its baseline.  A full collection runs once per burst.
 */
static void trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct bridge *b = w->data;
    (void)loop;
    (void)revents;
    if (b->ncalls == b->seen && b->ncalls != b->trimmed) {
        lua_pushcfunction(b->L, collect);   /* finalizers run: protected */
        if (lua_pcall(b->L, 0, 0, 0) != LUA_OK)
            lua_pop(b->L, 1);
        if (mi_collect)
            mi_collect(true);
        b->trimmed = b->ncalls;
    }
    b->seen = b->ncalls;
    metrics_set(&metrics->lua_bytes, b->mem);
}

int bridge_start(struct bridge *b, const struct config *cfg, bool held, char *err)
{
    b->held = held;
    ev_timer_init(&b->trim, trim_cb, 1., 1.);
    b->trim.data = b;
    ev_timer_start(b->loop, &b->trim);
    ev_unref(b->loop);   /* it keeps no loop running */
    for (const struct action *const *a = bridge_actions; *a; a++)
        if ((*a)->start && (*a)->start(b, cfg, err, BRIDGE_ERR_MAX) < 0)
            return -1;
    return 0;
}

static void each_action(struct bridge *b, bool retire)
{
    for (const struct action *const *a = bridge_actions; *a; a++) {
        void (*fn)(struct bridge *) = retire ? (*a)->retire : (*a)->resume;
        if (fn)
            fn(b);
    }
}

void bridge_retire(struct bridge *b)
{
    each_action(b, true);
}

void bridge_resume(struct bridge *b)
{
    if (!b->held)
        return;
    b->held = false;
    each_action(b, false);
}

void bridge_standby(struct bridge *b, bool on)
{
    lua_State *L = b->L;
    if (b->standby == on)
        return;
    b->standby = on;
    for (const struct action *const *a = bridge_actions; *a; a++)
        if ((*a)->standby)
            (*a)->standby(b, on);
    lua_pushboolean(L, !on);
    int active = lua_gettop(L);
    if (lua_getglobal(L, "on_standby") == LUA_TFUNCTION)
        call_task(b, "on_standby", active);
    else
        lua_pop(L, 1);
    lua_pop(L, 1);
}

bool bridge_idle(const struct bridge *b)
{
    return b->sessions == 0 && b->tasks == NULL && b->running == NULL;
}

bool bridge_in_call(const void *b)
{
    return ((const struct bridge *)b)->running != NULL;
}

/* Log each option that `from`'s config table sets and `to`'s sets
 * otherwise (or, with added_only, not at all): it waits for a restart. */
static void diff_applied(struct bridge *from, struct bridge *to, bool added_only)
{
    lua_State *L = from->L, *T = to->L;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, "luasmtpd.applied");
    luaL_getsubtable(T, LUA_REGISTRYINDEX, "luasmtpd.applied");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *name = lua_tostring(L, -2);
        lua_getfield(T, -1, name);
        const char *now = lua_tostring(T, -1);
        if (added_only ? now == NULL : now == NULL || strcmp(now, lua_tostring(L, -1)) != 0)
            log_msg(LV_WARN, NULL, "reload: --%s changed in the script's config: it takes effect at a restart "
                                   "(the running value stays)", name);
        lua_pop(T, 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pop(T, 1);
}

void bridge_config_changes(struct bridge *old, struct bridge *new)
{
    diff_applied(old, new, false);    /* changed or gone */
    diff_applied(new, old, true);     /* new */
}

bool bridge_decides_auth(const struct bridge *b)
{
    return (b->defined >> HOOK_AUTH) & 1;
}

/* Hooks that run without a session, as tasks (their callers are in
 * lua/luasmtpd.lua). */
static const char *const task_hooks[] = { "on_watchdog", "on_queue_failed", "on_standby", NULL };

/* The i-th hook name (NULL past the last). */
static const char *hook_at(int i)
{
    if (i <= CALL_CLOSE)
        return call_hook_name(i);
    i -= CALL_CLOSE + 1;
    return i < (int)(sizeof(task_hooks) / sizeof(task_hooks[0])) ? task_hooks[i] : NULL;
}

/* Levenshtein distance of two short names (longer ones: far apart). */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (la >= 64 || lb >= 64)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

/* The hook `name` is closest to, or NULL when it is one. */
static const char *nearest_hook(const char *name)
{
    const char *best = NULL;
    size_t d = (size_t)-1;
    for (int i = 0; hook_at(i); i++) {
        size_t k = distance(name, hook_at(i));
        if (k == 0)
            return NULL;
        if (k < d) {
            d = k;
            best = hook_at(i);
        }
    }
    return best;
}

void bridge_describe(struct bridge *b, char *out, size_t outsz)
{
    lua_State *L = b->L;
    size_t o = (size_t)snprintf(out, outsz, "hooks:");
    bool any = b->defined != 0 || b->ioevent;
    for (int st = 0; st <= CALL_CLOSE && o < outsz; st++)
        if (b->defined & (1 << st))
            o += (size_t)snprintf(out + o, outsz - o, " %s", call_hook_name(st));
    for (int i = 0; task_hooks[i] && o < outsz; i++) {
        if (lua_getglobal(L, task_hooks[i]) == LUA_TFUNCTION) {
            o += (size_t)snprintf(out + o, outsz - o, " %s", task_hooks[i]);
            any = true;
        }
        lua_pop(L, 1);
    }
    if (b->ioevent && o < outsz)
        o += (size_t)snprintf(out + o, outsz - o, " IOEvent");
    if (!any && o < outsz)
        o += (size_t)snprintf(out + o, outsz - o, " none (every sender and recipient is accepted)");
}

void bridge_config_set(struct bridge *b, char *out, size_t outsz)
{
    lua_State *L = b->L;
    size_t o = 0;
    out[0] = '\0';
    luaL_getsubtable(L, LUA_REGISTRYINDEX, "luasmtpd.applied");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (o < outsz)
            o += (size_t)snprintf(out + o, outsz - o, "%s--%s", o ? ", " : "", lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

int bridge_warnings(struct bridge *b, void (*warn)(const char *text, const void *arg), const void *arg)
{
    lua_State *L = b->L;
    int n = 0;
    /* a global function named like a hook that is none: a typo */
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        const char *near = strncmp(name, "on_", 3) == 0 ? nearest_hook(name) : NULL;
        if (lua_type(L, -1) == LUA_TFUNCTION && near) {
            char text[256];
            snprintf(text, sizeof(text), "%.64s is not a hook, and is never called (%s?)", name, near);
            warn(text, arg);
            n++;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return n;
}

void bridge_running(void *ctx, char *out, size_t size)
{
    const struct bridge *b = ctx;
    const struct lcall *c = b->running;
    if (c == NULL) {
        snprintf(out, size, "no hook (the server itself, or a finalizer) in %s", b->script);
        return;
    }
    bool message = c->s && c->stage == HOOK_MESSAGE;
    snprintf(out, size, "%s in %s%s%s%s%s", c->name, b->script, c->s ? ", session " : "",
             c->s ? smtp_id(c->s) : "", message ? ", message " : "",
             message ? smtp_message_id(c->s) : "");
}

const struct hooks *bridge_hooks(struct bridge *b)
{
    return &b->hooks;
}

void bridge_close(struct bridge **bp)
{
    struct bridge *b = *bp;
    if (b == NULL)
        return;
    if (b->L) {
        if (ev_is_active(&b->trim)) {
            ev_ref(b->loop);
            ev_timer_stop(b->loop, &b->trim);
        }
        call_end_tasks(b);
        for (const struct action *const *a = bridge_actions; *a; a++)
            if ((*a)->stop)
                (*a)->stop(b);
        lua_close(b->L);
    }
    free(b);
    *bp = NULL;
}
