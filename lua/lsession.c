/*
 * The session as scripts see it: a userdata whose fields are read from the
 * live session (so sender and recipients follow the transaction), with a
 * `data` table the script keeps its own state in for the connection.  When
 * the connection ends the userdata is cut loose: reading it is an error.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "session.h"

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

void lsession_push_recipients(lua_State *L, const struct smtp *s)
{
    size_t n = smtp_nrecipients(s);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, smtp_recipient(s, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* The fields: each pushes its value for the session of bx. */
static void f_cipher(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_tls_cipher(bx->s)); }
static void f_data(lua_State *L, struct box *bx) { (void)bx; lua_getiuservalue(L, 1, 1); }
static void f_esmtp(lua_State *L, struct box *bx) { lua_pushboolean(L, smtp_esmtp(bx->s)); }
static void f_helo(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_helo(bx->s)); }
static void f_id(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_id(bx->s)); }
static void f_ip(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_peer_host(bx->s, NULL)); }
static void f_local_ip(lua_State *L, struct box *bx)
{
    lua_pushstring(L, smtp_local_host(bx->s, NULL));
}
static void f_local_port(lua_State *L, struct box *bx)
{
    int port;
    smtp_local_host(bx->s, &port);
    lua_pushinteger(L, port);
}
static void f_params(lua_State *L, struct box *bx)
{
    if (bx->ls->paramsref > 0)
        lua_rawgeti(L, LUA_REGISTRYINDEX, bx->ls->paramsref);
    else
        lua_newtable(L);
}
static void f_port(lua_State *L, struct box *bx)
{
    int port;
    smtp_peer_host(bx->s, &port);
    lua_pushinteger(L, port);
}
static void f_proxied(lua_State *L, struct box *bx)
{
    const struct session_proxy *p = smtp_proxy(bx->s);
    lua_pushboolean(L, p && !p->local);
}
/* the proxy's side of a PROXY header: nil without one */
static void f_proxy_authority(lua_State *L, struct box *bx)
{
    const struct session_proxy *p = smtp_proxy(bx->s);
    lua_pushstring(L, p && p->authority[0] ? p->authority : NULL);
}
static void f_proxy_ip(lua_State *L, struct box *bx)
{
    const struct session_proxy *p = smtp_proxy(bx->s);
    lua_pushstring(L, p ? p->host : NULL);
}
static void f_proxy_port(lua_State *L, struct box *bx)
{
    const struct session_proxy *p = smtp_proxy(bx->s);
    if (p)
        lua_pushinteger(L, p->port);
    else
        lua_pushnil(L);
}
static void f_proxy_tls(lua_State *L, struct box *bx)
{
    const struct session_proxy *p = smtp_proxy(bx->s);
    lua_pushboolean(L, p && p->tls);
}
static void f_recipients(lua_State *L, struct box *bx) { lsession_push_recipients(L, bx->s); }
static void f_sender(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_sender(bx->s)); }
static void f_server_id(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_server_id(bx->s)); }
static void f_tls(lua_State *L, struct box *bx) { lua_pushboolean(L, smtp_tls_version(bx->s) != NULL); }
static void f_tls_client(lua_State *L, struct box *bx, bool subj)
{
    char subject[HOOK_TLS_SUBJECT_MAX];
    bool verified;
    smtp_tls_client(bx->s, subject, sizeof(subject), &verified);
    if (subj)
        lua_pushstring(L, subject[0] ? subject : NULL);
    else
        lua_pushboolean(L, verified);
}
static void f_tls_client_subject(lua_State *L, struct box *bx) { f_tls_client(L, bx, true); }
static void f_tls_client_verified(lua_State *L, struct box *bx) { f_tls_client(L, bx, false); }
static void f_tls_sni(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_tls_sni(bx->s)); }
static void f_tls_version(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_tls_version(bx->s)); }
static void f_user(lua_State *L, struct box *bx) { lua_pushstring(L, smtp_user(bx->s)); }

struct field {
    const char *name;
    void (*push)(lua_State *L, struct box *bx);
};

/* sorted by name, for bsearch */
static const struct field fields[] = {
    { "cipher", f_cipher },
    { "data", f_data },
    { "esmtp", f_esmtp },
    { "helo", f_helo },
    { "id", f_id },
    { "ip", f_ip },
    { "local_ip", f_local_ip },
    { "local_port", f_local_port },
    { "params", f_params },
    { "port", f_port },
    { "proxied", f_proxied },
    { "proxy_authority", f_proxy_authority },
    { "proxy_ip", f_proxy_ip },
    { "proxy_port", f_proxy_port },
    { "proxy_tls", f_proxy_tls },
    { "recipients", f_recipients },
    { "sender", f_sender },
    { "server_id", f_server_id },
    { "tls", f_tls },
    { "tls_client_subject", f_tls_client_subject },
    { "tls_client_verified", f_tls_client_verified },
    { "tls_sni", f_tls_sni },
    { "tls_version", f_tls_version },
    { "user", f_user },
};

static int field_cmp(const void *key, const void *f)
{
    return strcmp(key, ((const struct field *)f)->name);
}

static int session_index(lua_State *L)
{
    struct box *bx = check_box(L);
    const char *k = luaL_checkstring(L, 2);
    const struct field *f = bsearch(k, fields, sizeof(fields) / sizeof(fields[0]), sizeof(fields[0]),
                                    field_cmp);
    if (f)
        f->push(L, bx);
    else
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
