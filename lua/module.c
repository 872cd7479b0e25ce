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

/* luasmtpd.log([level,] ...): one log line, the values joined by spaces;
 * level is "error", "warn", "info" (default) or "debug". */
static int l_log(lua_State *L)
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
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&buf);
        if (i < n)
            luaL_addchar(&buf, ' ');
    }
    luaL_pushresult(&buf);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    char esc[LOG_LINE_MAX];
    struct bridge *b = bridge_of(L);
    log_msg((enum log_level)level, b->running && b->running->s ? smtp_id(b->running->s) : NULL, "script: %s",
            log_escape(esc, sizeof(esc), msg, len));
    return 0;
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
        { NULL, NULL },
    };
    luaL_newlib(L, funcs);
    lua_pushliteral(L, LUASMTPD_VERSION);
    lua_setfield(L, -2, "version");
    for (const struct action *const *a = bridge_actions; *a; a++)
        (*a)->open(L);
    /* the functions written in Lua (lua/luasmtpd.lua) join the table */
    if (luaL_loadbuffer(L, lua_luasmtpd, strlen(lua_luasmtpd), "=luasmtpd.lua") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    return 1;
}
