/* require "luasmtpd": the server's own functions for scripts. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "log.h"

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

int luaopen_luasmtpd(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "log", l_log },
        { "sleep", l_sleep },
        { "_can_wait", l_can_wait },
        { "_log", l_server_log },
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
