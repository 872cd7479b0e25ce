/* require "luasmtpd": the server's own functions for scripts. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "console.h"
#include "internal.h"
#include "json.h"
#include "log.h"
#include "metrics.h"

/* Every action of the module (a new one: its file, and a row here). */
const struct action *const bridge_actions[] = {
    &exec_action, &timer_action, &save_action, &http_action, &mqtt_action, &store_action,
    &forward_action, &queue_action, NULL,
};

/* lua/luasmtpd.lua, compiled in */
extern const char lua_luasmtpd[];

#ifndef LUASMTPD_VERSION
#define LUASMTPD_VERSION "0.0.0"
#endif

#define SHOWN_ENTRIES 16   /* of a table luasmtpd.log shows */

/* Push a value as a shown table has it: strings quoted, tables "{...}",
 * the rest as tostring. */
static void push_shown(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "{...}");
    } else if (t == LUA_TSTRING) {
        lua_pushfstring(L, "\"%s\"", lua_tostring(L, idx));
    } else {
        luaL_tolstring(L, idx, NULL);
    }
}

/* Push a table without __tostring as {1, 2, key = "v", sub = {...}}: one
 * level, at most SHOWN_ENTRIES entries (then "...").  The pieces are
 * joined on the stack: a luaL_Buffer may not be used while lua_next's key
 * and value sit above it. */
static void push_table(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    int n = 0;
    lua_pushliteral(L, "{");
    int acc = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (n++ == SHOWN_ENTRIES) {
            lua_pop(L, 2);
            lua_pushliteral(L, ", ...");
            lua_concat(L, 2);
            break;
        }
        int parts = 0;
        if (n > 1) {
            lua_pushliteral(L, ", ");
            parts++;
        }
        if (!lua_isinteger(L, -2 - parts) || lua_tointeger(L, -2 - parts) != n) {   /* not next of a list */
            if (lua_type(L, -2 - parts) == LUA_TSTRING)
                lua_pushfstring(L, "%s = ", lua_tostring(L, -2 - parts));
            else {
                push_shown(L, -2 - parts);
                lua_pushfstring(L, "[%s] = ", lua_tostring(L, -1));
                lua_remove(L, -2);
            }
            parts++;
        }
        push_shown(L, -1 - parts);
        parts++;
        lua_concat(L, parts);         /* this entry */
        lua_pushvalue(L, acc);
        lua_insert(L, -2);
        lua_concat(L, 2);
        lua_replace(L, acc);
        lua_pop(L, 1);                /* the value; the key stays for lua_next */
    }
    lua_pushliteral(L, "}");
    lua_concat(L, 2);
}

/* luasmtpd.log([level,] ...): one log line, the values joined by spaces
 * (a table shown one level deep); level is "error", "warn", "info"
 * (default) or "debug". */
static int log_values(lua_State *L, const char *prefix)
{
    int first = 1, level = LV_INFO, n = lua_gettop(L);
    if (n >= 2 && lua_type(L, 1) == LUA_TSTRING) {
        int l = log_level_parse(lua_tostring(L, 1));
        if (l >= 0) {
            level = l;
            first = 2;
        }
    }
    if (!log_enabled((enum log_level)level))
        return 0;
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int i = first; i <= n; i++) {
        if (lua_type(L, i) == LUA_TTABLE && !luaL_getmetafield(L, i, "__tostring")) {
            push_table(L, i);
            luaL_addvalue(&buf);
        } else {
            if (lua_type(L, i) == LUA_TTABLE)
                lua_pop(L, 1);        /* the __tostring found */
            luaL_tolstring(L, i, NULL);
            luaL_addvalue(&buf);
        }
        if (i < n)
            luaL_addchar(&buf, ' ');
    }
    luaL_pushresult(&buf);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    char esc[LOG_LINE_MAX];
    struct bridge *b = bridge_of(L);
    log_msg((enum log_level)level, b->running && b->running->s ? smtp_id(b->running->s) : NULL, "%s%s", prefix,
            log_escape(esc, sizeof(esc), msg, len));
    return 0;
}

static int l_log(lua_State *L)
{
    return log_values(L, "script: ");
}

/* _log(...): a line of the server's own, from lua/luasmtpd.lua (the queue's
 * agent, watchdogs), without "script: " (luasmtpd.lua takes it away). */
static int l_server_log(lua_State *L)
{
    return log_values(L, "");
}

/* luasmtpd.sleep(seconds): wait without blocking other sessions. */
static int l_sleep(lua_State *L)
{
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0 && secs <= 86400, 1, "seconds out of range (0 to 86400)");
    struct lcall *c = call_waitable(L, "luasmtpd.sleep");
    return call_wait(L, c, NULL, NULL, secs, NULL);
}

/* _can_wait(): whether the caller may wait on an action here (luasmtpd.lua
 * takes it away from the module table). */
static int l_can_wait(lua_State *L)
{
    lua_pushboolean(L, call_no_wait(L) == NULL);
    return 1;
}

/* luasmtpd.trace(text): a line in the trace of the message the running
 * hook decides (the console shows it); nothing outside a session's hook. */
static int l_trace(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    struct bridge *b = bridge_of(L);
    struct lcall *c = b->running;
    if (c && c->s && smtp_traced(c->s))
        smtp_trace_note(c->s, c->name, text);
    return 0;
}

static bool metric_name(const char *s)
{
    if (!(*s == '_' || isalpha((unsigned char)*s)))
        return false;
    for (; *s; s++)
        if (!(*s == '_' || isalnum((unsigned char)*s)))
            return false;
    return true;
}

/* Render the labels table at idx as k="v",...: keys sorted, so one set of
 * labels is one series whatever the order it was written in. */
static void metric_labels(lua_State *L, int idx, char *out, size_t size)
{
    const char *keys[16];
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || !metric_name(lua_tostring(L, -1)))
            luaL_error(L, "luasmtpd.metric: a label name is [A-Za-z_][A-Za-z0-9_]*");
        if (n == 16)
            luaL_error(L, "luasmtpd.metric: at most 16 labels");
        keys[n++] = lua_tostring(L, -1);   /* the key stays in the table */
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        lua_getfield(L, idx, keys[i]);
        size_t vlen;
        const char *v = luaL_tolstring(L, -1, &vlen);
        o += (size_t)snprintf(out + o, o < size ? size - o : 0, "%s%s=\"", i ? "," : "", keys[i]);
        for (size_t k = 0; k < vlen && o + 3 < size; k++) {
            if (v[k] == '\\' || v[k] == '"' || v[k] == '\n') {
                out[o++] = '\\';
                out[o++] = v[k] == '\n' ? 'n' : v[k];
            } else {
                out[o++] = v[k];
            }
        }
        o += (size_t)snprintf(out + o, o < size ? size - o : 0, "\"");
        lua_pop(L, 2);
        if (o >= size)
            luaL_error(L, "luasmtpd.metric: labels too long");
    }
}

/* luasmtpd.metric(name, value, labels): add value (default 1) to the
 * series luasmtpd_script_<name>{labels} of /metrics. */
static int l_metric(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_Number value = luaL_optnumber(L, 2, 1);
    luaL_argcheck(L, metric_name(name) && strlen(name) <= 64, 1, "a name is [A-Za-z_][A-Za-z0-9_]*, 64 at most");
    size_t nl = strlen(name);
    luaL_argcheck(L, value >= 0 || nl < 6 || strcmp(name + nl - 6, "_total") != 0, 2,
                  "a counter (a name ending in _total) only goes up");
    char labels[METRICS_SCRIPT_KEY];
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        metric_labels(L, 3, labels, sizeof(labels));
    } else {
        labels[0] = '\0';
    }
    if (metrics_script(name, labels, value) < 0)
        return luaL_error(L, "luasmtpd.metric: no room for %s{%s} (%d series at most)", name, labels,
                          METRICS_SCRIPT_SERIES);
    return 0;
}

/* _clock(): seconds on the monotonic clock, for _action. */
static int l_clock(lua_State *L)
{
    lua_pushnumber(L, bridge_now());
    return 1;
}

/* _action(kind, target, since, result, detail): an action ended (lua/luasmtpd.lua
 * times each one): counted in /metrics, put in the running hook's trace,
 * told to the console's readers. */
static int l_action(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1), *target = luaL_optstring(L, 2, "");
    double took = bridge_now() - luaL_checknumber(L, 3);
    const char *result = luaL_checkstring(L, 4), *detail = luaL_optstring(L, 5, result);
    metrics_action(kind, result);
    struct lcall *c = bridge_of(L)->running;
    struct smtp *s = c ? c->s : NULL;
    if (s && smtp_traced(s)) {
        char said[256];
        snprintf(said, sizeof(said), "%s%s%s", result, strcmp(detail, result) ? ": " : "",
                 strcmp(detail, result) ? detail : "");
        smtp_trace_action(s, kind, target, said, took);
    }
    struct buf *e = console_event_begin("action", s ? smtp_id(s) : NULL);
    if (e) {
        json_field(e, "kind", kind);
        json_field(e, "result", result);
        json_field_int(e, "took_us", (long long)(took * 1e6));
        json_field(e, "target", target);
        json_field(e, "detail", detail);
        console_event_end();
    }
    return 0;
}

int luaopen_luasmtpd(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "log", l_log },
        { "sleep", l_sleep },
        { "_can_wait", l_can_wait },
        { "_log", l_server_log },
        { "trace", l_trace },
        { "metric", l_metric },
        { "_clock", l_clock },
        { "_action", l_action },
        { NULL, NULL },
    };
    luaL_newlib(L, funcs);
    lua_pushliteral(L, LUASMTPD_VERSION);
    lua_setfield(L, -2, "version");
    for (const struct action *const *a = bridge_actions; *a; a++)
        (*a)->open(L);
    lua_pushboolean(L, bridge_of(L)->dry_run);
    lua_setfield(L, -2, "_dry_run");
    /* the functions written in Lua (lua/luasmtpd.lua) join the table */
    if (luaL_loadbuffer(L, lua_luasmtpd, strlen(lua_luasmtpd), "=luasmtpd.lua") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    return 1;
}
