/*
 * The session as scripts see it: a userdata whose fields are read from the
 * live session (so sender and recipients follow the transaction), with a
 * `data` table the script keeps its own state in for the connection.  When
 * the connection ends the userdata is cut loose: reading it is an error.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SESSION_MT "luasmtpd.session"

struct box {
    struct smtp *s;   /* NULL once the session has ended */
    struct lsession *ls;
};

static struct box *check_box(lua_State *L)
{
    struct box *bx = luaL_checkudata(L, 1, SESSION_MT);
    if (bx->s == NULL)
        luaL_error(L, "the session has ended");
    return bx;
}

static int session_index(lua_State *L)
{
    struct box *bx = check_box(L);
    struct smtp *s = bx->s;
    const char *k = luaL_checkstring(L, 2);
    int port;

    switch (k[0]) {
    case 'd':
        if (strcmp(k, "data") == 0) {
            lua_getiuservalue(L, 1, 1);
            return 1;
        }
        break;
    case 'e':
        if (strcmp(k, "esmtp") == 0) {
            lua_pushboolean(L, smtp_esmtp(s));
            return 1;
        }
        break;
    case 'h':
        if (strcmp(k, "helo") == 0) {
            lua_pushstring(L, smtp_helo(s));
            return 1;
        }
        break;
    case 'i':
        if (strcmp(k, "id") == 0) {
            lua_pushstring(L, smtp_id(s));
            return 1;
        }
        if (strcmp(k, "ip") == 0) {
            lua_pushstring(L, smtp_peer_host(s, &port));
            return 1;
        }
        break;
    case 'l':
        if (strcmp(k, "local_ip") == 0) {
            lua_pushstring(L, smtp_local_host(s, &port));
            return 1;
        }
        if (strcmp(k, "local_port") == 0) {
            smtp_local_host(s, &port);
            lua_pushinteger(L, port);
            return 1;
        }
        break;
    case 'p':
        if (strcmp(k, "port") == 0) {
            smtp_peer_host(s, &port);
            lua_pushinteger(L, port);
            return 1;
        }
        if (strcmp(k, "params") == 0) {
            if (bx->ls->paramsref > 0)
                lua_rawgeti(L, LUA_REGISTRYINDEX, bx->ls->paramsref);
            else
                lua_newtable(L);
            return 1;
        }
        break;
    case 'r':
        if (strcmp(k, "recipients") == 0) {
            size_t n = smtp_nrecipients(s);
            lua_createtable(L, (int)n, 0);
            for (size_t i = 0; i < n; i++) {
                lua_pushstring(L, smtp_recipient(s, i));
                lua_rawseti(L, -2, (lua_Integer)i + 1);
            }
            return 1;
        }
        break;
    case 's':
        if (strcmp(k, "sender") == 0) {
            lua_pushstring(L, smtp_sender(s));
            return 1;
        }
        if (strcmp(k, "server_id") == 0) {
            lua_pushstring(L, smtp_server_id(s));
            return 1;
        }
        break;
    case 't':
        if (strcmp(k, "tls") == 0) {
            lua_pushboolean(L, smtp_tls_version(s) != NULL);
            return 1;
        }
        if (strcmp(k, "tls_version") == 0) {
            lua_pushstring(L, smtp_tls_version(s));
            return 1;
        }
        bool subj = strcmp(k, "tls_client_subject") == 0;
        if (subj || strcmp(k, "tls_client_verified") == 0) {
            char subject[HOOK_TLS_SUBJECT_MAX];
            bool verified;
            smtp_tls_client(s, subject, sizeof(subject), &verified);
            if (subj)
                lua_pushstring(L, subject[0] ? subject : NULL);
            else
                lua_pushboolean(L, verified);
            return 1;
        }
        break;
    case 'u':
        if (strcmp(k, "user") == 0) {
            lua_pushstring(L, smtp_user(s));
            return 1;
        }
        break;
    case 'c':
        if (strcmp(k, "cipher") == 0) {
            lua_pushstring(L, smtp_tls_cipher(s));
            return 1;
        }
        break;
    }
    lua_pushnil(L);
    return 1;
}

static int session_newindex(lua_State *L)
{
    check_box(L);
    return luaL_error(L, "session fields are read-only; keep your own state in session.data");
}

static int session_tostring(lua_State *L)
{
    struct box *bx = luaL_checkudata(L, 1, SESSION_MT);
    lua_pushfstring(L, "session %s", bx->s ? smtp_id(bx->s) : "(ended)");
    return 1;
}

void lsession_open_lib(lua_State *L)
{
    static const luaL_Reg meta[] = {
        { "__index", session_index },
        { "__newindex", session_newindex },
        { "__tostring", session_tostring },
        { NULL, NULL },
    };
    luaL_newmetatable(L, SESSION_MT);
    luaL_setfuncs(L, meta, 0);
    lua_pushliteral(L, "luasmtpd.session");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

struct lsession *lsession_get(struct bridge *b, struct smtp *s)
{
    struct lsession *ls = *smtp_hook_data(s);
    if (ls)
        return ls;
    /* the Lua side first: if it raises (memory), nothing C-side is lost */
    lua_State *L = b->L;
    struct box *bx = lua_newuserdatauv(L, sizeof(*bx), 1);
    bx->s = NULL;
    bx->ls = NULL;
    luaL_setmetatable(L, SESSION_MT);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ls = calloc(1, sizeof(*ls));
    if (ls == NULL) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return NULL;
    }
    ls->b = b;
    ls->paramsref = LUA_NOREF;
    ls->udref = ref;
    bx->s = s;
    bx->ls = ls;
    *smtp_hook_data(s) = ls;
    return ls;
}

void lsession_push(lua_State *L, struct lsession *ls)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->udref);
}

void lsession_free(struct bridge *b, struct smtp *s)
{
    struct lsession *ls = *smtp_hook_data(s);
    if (ls == NULL)
        return;
    lua_State *L = b->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ls->udref);
    struct box *bx = lua_touserdata(L, -1);
    bx->s = NULL;   /* a script that kept it finds it ended */
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, ls->udref);
    luaL_unref(L, LUA_REGISTRYINDEX, ls->paramsref);
    free(ls);
    *smtp_hook_data(s) = NULL;
}
