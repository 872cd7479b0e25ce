/*
 * The state database: one SQLite file, STATE_DIR/luasmtpd.db, in WAL mode
 * with synchronous=FULL, so what is committed survives kill -9 and power
 * loss.  It holds luasmtpd.store's keys and the queue's jobs (queue.c), and
 * every worker of a server opens the same file.
 *
 * Writes run on the writer thread (writer.c), which batches what the loop
 * queued during the last commit into one transaction.  Reads run on the
 * loop, on a second connection: WAL lets them go on while the writer
 * commits.
 *
 * luasmtpd.store keeps what it read in a cache, so a read that hits costs
 * no system call.  Other processes (workers, --queue-* commands) may write
 * too; STATE_DIR/luasmtpd.gen, mapped into each of them, holds a counter
 * per slot of keys that a writer moves on after each commit.  A cached
 * value is good while its slot's counter is what it was before the value
 * was read.  Slot 0 belongs to the queue: a moved counter tells the
 * delivery agent that there are new jobs.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "internal.h"
#include "log.h"

#define GEN_SLOTS   4096
#define KEY_MAX     1024
#define VALUE_MAX   (1024 * 1024)
#define STORE_TIMEOUT 30.0
#define BUSY_MS     5000           /* another process holds the write lock */
#define STMT_MAX    16             /* statements of one connection, prepared once */
#define CACHE_MAX   4096           /* keys the cache of store.get holds */

static const char schema[] =
    "PRAGMA journal_mode = WAL;"
    "CREATE TABLE IF NOT EXISTS kv ("
    "  key TEXT PRIMARY KEY,"
    "  type TEXT NOT NULL,"                  /* s string, n number, b boolean, t table */
    "  value,"
    "  expires REAL"                         /* Unix time, or NULL: for ever */
    ") WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS jobs ("
    "  id TEXT PRIMARY KEY,"
    "  kind TEXT NOT NULL,"                  /* forward, http, mqtt */
    "  state TEXT NOT NULL DEFAULT 'queued',"/* queued or dead */
    "  created REAL NOT NULL,"
    "  next_try REAL NOT NULL,"
    "  expires REAL NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  args TEXT NOT NULL,"                  /* the options, JSON */
    "  data BLOB,"                           /* the message or payload */
    "  size INTEGER NOT NULL"
    ");"
    "CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_try);"
    /* the count and bytes of jobs, for --queue-max and --queue-max-bytes */
    "CREATE TABLE IF NOT EXISTS queue_stats (one INTEGER PRIMARY KEY CHECK (one = 1),"
    "  jobs INTEGER NOT NULL, bytes INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO queue_stats VALUES (1, 0, 0);"
    "CREATE TRIGGER IF NOT EXISTS jobs_in AFTER INSERT ON jobs BEGIN"
    "  UPDATE queue_stats SET jobs = jobs + 1, bytes = bytes + NEW.size; END;"
    "CREATE TRIGGER IF NOT EXISTS jobs_out AFTER DELETE ON jobs BEGIN"
    "  UPDATE queue_stats SET jobs = jobs - 1, bytes = bytes - OLD.size; END;";

/* The prepared statements of a connection, by the address of their SQL
 * (each a constant of this file or queue.c). */
struct stmts {
    const char   *sql[STMT_MAX];
    sqlite3_stmt *q[STMT_MAX];
};

struct store {
    sqlite3       *db;             /* the writer thread's */
    sqlite3       *rdb;            /* the loop's */
    struct stmts   wq, rq;         /* their statements */
    _Atomic unsigned long long *gen;   /* GEN_SLOTS counters, shared */
    char           dir[PATH_MAX];
    int            cacheref;       /* registry: key -> {value, gen, expires} */
    int            cached;         /* entries put in it since it was last emptied */
};

/* ---- the shared counters ---- */

static unsigned slot_of(const char *key, size_t len)
{
    unsigned h = 2166136261u;         /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return 1 + h % (GEN_SLOTS - 1);
}

static unsigned long long gen_now(const struct store *st, unsigned slot)
{
    return atomic_load_explicit(&st->gen[slot], memory_order_acquire);
}

void store_bump(struct bridge *b, unsigned slot)
{
    if (b->store)
        atomic_fetch_add_explicit(&b->store->gen[slot], 1, memory_order_release);
}

unsigned long long store_gen(const struct bridge *b, unsigned slot)
{
    return b->store ? gen_now(b->store, slot) : 0;
}

static int map_gen(struct store *st, char *err, size_t errsz)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/luasmtpd.gen", st->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    size_t size = GEN_SLOTS * sizeof(*st->gen);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        snprintf(err, errsz, "cannot open %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errsz, "cannot map %s: %s", path, strerror(errno));
        return -1;
    }
    st->gen = p;
    return 0;
}

int store_poke(const char *dir, char *err, size_t errsz)
{
    struct store st = { .gen = NULL };
    snprintf(st.dir, sizeof(st.dir), "%s", dir);
    if (map_gen(&st, err, errsz) < 0)
        return -1;
    atomic_fetch_add_explicit(&st.gen[0], 1, memory_order_release);
    munmap((void *)st.gen, GEN_SLOTS * sizeof(*st.gen));
    return 0;
}

/* ---- opening ---- */

static int open_db(struct store *st, sqlite3 **db_r, bool create, char *err, size_t errsz)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/luasmtpd.db", st->dir);
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errsz, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, BUSY_MS);
    sqlite3_extended_result_codes(db, 1);
    char *msg = NULL;
    if (sqlite3_exec(db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;", NULL, NULL, &msg) != SQLITE_OK ||
        (create && sqlite3_exec(db, schema, NULL, NULL, &msg) != SQLITE_OK)) {
        snprintf(err, errsz, "%s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_close(db);
        return -1;
    }
    *db_r = db;
    return 0;
}

int store_locate(const struct config *cfg, char *dir, size_t size)
{
    const char *d = cfg->state_dir[0] ? cfg->state_dir : getenv("STATE_DIRECTORY");
    if (d == NULL || !*d)
        d = "luasmtpd-state";
    /* systemd may list several, separated by colons: the first is ours */
    size_t n = strcspn(d, cfg->state_dir[0] ? "" : ":");
    if (n + 1 > size)
        return -1;
    memcpy(dir, d, n);
    dir[n] = '\0';
    return 0;
}

static void close_db(sqlite3 *db, struct stmts *c)
{
    for (int i = 0; i < STMT_MAX && c->sql[i]; i++)
        sqlite3_finalize(c->q[i]);
    sqlite3_close(db);
}

/* Close the database (the writer thread has no job of it left). */
static void store_free(struct bridge *b)
{
    struct store *st = b->store;
    if (st == NULL)
        return;
    close_db(st->db, &st->wq);
    close_db(st->rdb, &st->rq);
    if (st->gen)
        munmap((void *)st->gen, GEN_SLOTS * sizeof(*st->gen));
    luaL_unref(b->L, LUA_REGISTRYINDEX, st->cacheref);
    free(st);
    b->store = NULL;
}

/* The bridge closes: the queued writes first, then the database. */
static void store_stop(struct bridge *b)
{
    writer_stop(b);
    store_free(b);
}

sqlite3_stmt *store_stmt(struct bridge *b, bool writer, const char *sql)
{
    struct store *st = b->store;
    struct stmts *c = writer ? &st->wq : &st->rq;
    for (int i = 0; i < STMT_MAX; i++) {
        if (c->sql[i] == sql) {
            store_stmt_done(c->q[i]);   /* a raise may have left it stepped */
            return c->q[i];
        }
        if (c->sql[i] == NULL) {
            if (sqlite3_prepare_v3(writer ? st->db : st->rdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &c->q[i],
                                   NULL) != SQLITE_OK)
                return NULL;
            c->sql[i] = sql;
            return c->q[i];
        }
    }
    return NULL;                      /* more than STMT_MAX: raise it */
}

void store_stmt_done(sqlite3_stmt *q)
{
    sqlite3_reset(q);                 /* a read transaction ends here */
    sqlite3_clear_bindings(q);
}

int store_open(struct bridge *b, bool create, char *err, size_t errsz)
{
    if (b->store)
        return 0;
    struct store *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    st->cacheref = LUA_NOREF;
    snprintf(st->dir, sizeof(st->dir), "%s", b->state_dir);
    char path[PATH_MAX + 16];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/luasmtpd.db", st->dir);
    if (!create && stat(path, &sb) < 0) {
        free(st);
        return 1;                     /* nothing there yet */
    }
    if (mkdir(st->dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create %s: %s", st->dir, strerror(errno));
        free(st);
        return -1;
    }
    b->store = st;
    if (map_gen(st, err, errsz) < 0) {
        store_free(b);
        return -1;
    }
    /* workers starting together: one at a time makes the schema (SQLite
     * answers "locked" at once to a second one switching to WAL).  The lock
     * is on a descriptor of its own: the mapping keeps map_gen's open. */
    snprintf(path, sizeof(path), "%s/luasmtpd.gen", st->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && flock(fd, LOCK_EX) < 0 && errno == EINTR)
        ;
    int rc = open_db(st, &st->db, true, err, errsz) < 0 || open_db(st, &st->rdb, false, err, errsz) < 0 ? -1 : 0;
    if (fd >= 0)
        close(fd);                    /* and the lock with it */
    if (rc < 0) {
        store_free(b);
        return -1;
    }
    lua_newtable(b->L);
    st->cacheref = luaL_ref(b->L, LUA_REGISTRYINDEX);
    return 0;
}

/* The database for what (a name for errors), opened on first use; with
 * create false, NULL when there is none yet: a read does not create it. */
static struct store *store_use(lua_State *L, const char *what, bool create)
{
    struct bridge *b = bridge_of(L);
    char err[PATH_MAX + 256];
    if (!b->state_dir[0])             /* the options are not read yet */
        luaL_error(L, "%s: not while the script loads (use it in a hook or a timer)", what);
    if (b->store == NULL && store_open(b, create, err, sizeof(err)) < 0)
        luaL_error(L, "%s: %s", what, err);
    return b->store;
}

struct store *store_need(lua_State *L, const char *what)
{
    return store_use(L, what, true);
}

/* ---- the writer's transactions (writer.c) ---- */

static int exec_tx(struct store *st, const char *sql, char *err, size_t errsz)
{
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    snprintf(err, errsz, "%s", sqlite3_errmsg(st->db));
    return -1;
}

int store_tx_begin(struct bridge *b, char *err, size_t errsz)
{
    return exec_tx(b->store, "BEGIN IMMEDIATE", err, errsz);
}

int store_tx_end(struct bridge *b, char *err, size_t errsz)
{
    struct store *st = b->store;
    if (exec_tx(st, "COMMIT", err, errsz) == 0)
        return 0;
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

bool store_tx_open(const struct bridge *b)
{
    return !sqlite3_get_autocommit(b->store->db);
}

const char *store_error(const struct bridge *b, bool writer)
{
    return sqlite3_errmsg(writer ? b->store->db : b->store->rdb);
}

/* ---- values ---- */

/* A value on the stack at idx as what the kv table holds. */
struct value {
    char         type;            /* 's', 'n', 'b', 't'; 0: none (delete) */
    bool         is_int;
    lua_Integer  i;
    double       d;
    char        *s;               /* 's' and 't' (JSON), malloc'd */
    size_t       len;
};

/* A flat table as JSON: cjson (lua-cjson) writes it. */
static void encode_table(lua_State *L, int idx)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int t = lua_type(L, -1);
        if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA || t == LUA_TTHREAD)
            luaL_error(L, "store: a table value must be flat (strings, numbers, booleans)");
        lua_pop(L, 1);
    }
    if (lua_getfield(L, LUA_REGISTRYINDEX, "luasmtpd.cjson") != LUA_TTABLE)
        luaL_error(L, "store: tables need lua-cjson, which did not load");
    lua_getfield(L, -1, "encode");
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    lua_replace(L, -2);
}

/* The Lua value at idx into v; raises on a type the store cannot hold. */
static void value_from(lua_State *L, int idx, struct value *v)
{
    memset(v, 0, sizeof(*v));
    const char *s = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        v->type = 's';
        s = lua_tolstring(L, idx, &v->len);
        break;
    case LUA_TNUMBER:
        v->type = 'n';
        if ((v->is_int = lua_isinteger(L, idx)))
            v->i = lua_tointeger(L, idx);
        else if (!isfinite(v->d = lua_tonumber(L, idx)))
            luaL_error(L, "store: a number must be finite");
        break;
    case LUA_TBOOLEAN:
        v->type = 'b';
        v->is_int = true;
        v->i = lua_toboolean(L, idx);
        break;
    case LUA_TTABLE:
        v->type = 't';
        encode_table(L, idx);
        s = lua_tolstring(L, -1, &v->len);
        break;
    default:
        luaL_error(L, "store: a %s cannot be stored (strings, numbers, booleans, flat tables)",
                   luaL_typename(L, idx));
    }
    if (s) {
        if (v->len > VALUE_MAX)
            luaL_error(L, "store: value larger than %d bytes", VALUE_MAX);
        if ((v->s = malloc(v->len ? v->len : 1)) == NULL)
            luaL_error(L, "store: out of memory");
        memcpy(v->s, s, v->len);
    }
    if (v->type == 't')
        lua_pop(L, 1);
}

static void bind_value(sqlite3_stmt *q, int col, const struct value *v)
{
    if (v->type == 's')
        sqlite3_bind_blob(q, col, v->s, (int)v->len, SQLITE_STATIC);
    else if (v->type == 't')
        sqlite3_bind_text(q, col, v->s, (int)v->len, SQLITE_STATIC);
    else if (v->is_int)
        sqlite3_bind_int64(q, col, v->i);
    else
        sqlite3_bind_double(q, col, v->d);
}

/* Push column col of a kv row of type `type` as a Lua value. */
static void push_column(lua_State *L, sqlite3_stmt *q, int col, char type)
{
    switch (type) {
    case 'n':
        if (sqlite3_column_type(q, col) == SQLITE_INTEGER)
            lua_pushinteger(L, sqlite3_column_int64(q, col));
        else
            lua_pushnumber(L, sqlite3_column_double(q, col));
        break;
    case 'b':
        lua_pushboolean(L, sqlite3_column_int(q, col) != 0);
        break;
    case 't':
        if (lua_getfield(L, LUA_REGISTRYINDEX, "luasmtpd.cjson") == LUA_TTABLE)
            lua_getfield(L, -1, "decode");
        else
            lua_pushnil(L);
        lua_remove(L, -2);
        lua_pushlstring(L, (const char *)sqlite3_column_text(q, col), (size_t)sqlite3_column_bytes(q, col));
        if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);           /* edited by hand into something else */
            break;
        }
        /* JSON has one kind of number: whole ones come back as integers */
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_Integer i;
            if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
                lua_numbertointeger(lua_tonumber(L, -1), &i)) {
                lua_pushvalue(L, -2);
                lua_pushinteger(L, i);
                lua_rawset(L, -5);
            }
            lua_pop(L, 1);
        }
        break;
    default:
        lua_pushlstring(L, sqlite3_column_blob(q, col), (size_t)sqlite3_column_bytes(q, col));
    }
}

/* ---- the writer's jobs for keys ---- */

enum kv_op { KV_SET, KV_DELETE, KV_DELETE_IF, KV_INCR, KV_ADD };

struct kvjob {
    struct wjob   w;
    struct bridge *b;
    enum kv_op    op;
    char         *key;
    size_t        klen;
    struct value  v;
    double        now, expires;   /* Unix time; expires 0: never */
    bool          changed;        /* KV_ADD: it was set; KV_DELETE_IF: deleted;
                                     KV_INCR: a result */
    bool          not_number;     /* KV_INCR on a value that is not a number */
    lua_Integer   ri;             /* KV_INCR's result */
    double        rd;
    bool          r_is_int;
};

static const char *const kv_sql[] = {
    [KV_SET] = "INSERT INTO kv (key, type, value, expires) VALUES (?1, ?2, ?3, ?4) "
               "ON CONFLICT (key) DO UPDATE SET type = excluded.type, value = excluded.value, "
               "expires = excluded.expires",
    [KV_DELETE] = "DELETE FROM kv WHERE key = ?1",
    /* delete(key, value): only while key holds value */
    [KV_DELETE_IF] = "DELETE FROM kv WHERE key = ?1 AND type = ?2 AND value = ?3 "
                     "AND (expires IS NULL OR expires > ?5) RETURNING 1",
    /* a missing or expired key starts from 0; one that holds no number is
     * left alone, and no row comes back */
    [KV_INCR] = "INSERT INTO kv (key, type, value, expires) VALUES (?1, 'n', ?3, NULL) "
                "ON CONFLICT (key) DO UPDATE SET "
                "value = CASE WHEN kv.expires <= ?5 THEN excluded.value ELSE kv.value + excluded.value END, "
                "expires = CASE WHEN kv.expires <= ?5 THEN NULL ELSE kv.expires END, type = 'n' "
                "WHERE kv.type = 'n' OR kv.expires <= ?5 RETURNING value",
    /* set only when missing or expired */
    [KV_ADD] = "INSERT INTO kv (key, type, value, expires) VALUES (?1, ?2, ?3, ?4) "
               "ON CONFLICT (key) DO UPDATE SET type = excluded.type, value = excluded.value, "
               "expires = excluded.expires WHERE kv.expires <= ?5 RETURNING 1",
};

static void kv_run(struct wjob *w)
{
    struct kvjob *j = (struct kvjob *)w;
    sqlite3_stmt *q = store_stmt(j->b, true, kv_sql[j->op]);
    if (q == NULL) {
        wjob_fail(w, "%s", store_error(j->b, true));
        return;
    }
    sqlite3_bind_text(q, 1, j->key, (int)j->klen, SQLITE_STATIC);
    if (j->op != KV_DELETE) {
        char type[2] = { j->v.type, 0 };
        sqlite3_bind_text(q, 2, type, 1, SQLITE_TRANSIENT);
        bind_value(q, 3, &j->v);
        if (j->expires > 0)
            sqlite3_bind_double(q, 4, j->expires);
        sqlite3_bind_double(q, 5, j->now);
    }
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        j->changed = true;
        if (j->op == KV_INCR) {
            if ((j->r_is_int = sqlite3_column_type(q, 0) == SQLITE_INTEGER))
                j->ri = sqlite3_column_int64(q, 0);
            else
                j->rd = sqlite3_column_double(q, 0);
        }
        rc = sqlite3_step(q);
    }
    if (rc != SQLITE_DONE)
        wjob_fail(w, "%s", store_error(j->b, true));
    else if (j->op == KV_INCR && !j->changed)
        j->not_number = true;
    store_stmt_done(q);
}

static void kv_committed(struct wjob *w)
{
    struct kvjob *j = (struct kvjob *)w;
    store_bump(j->b, slot_of(j->key, j->klen));
}

static void kv_free(struct wjob *w)
{
    struct kvjob *j = (struct kvjob *)w;
    free(j->key);
    free(j->v.s);
}

/* ---- the cache ---- */

/* Forget key (on top of nothing; the key is at kidx). */
static void cache_drop(lua_State *L, struct store *st, int kidx)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->cacheref);
    lua_pushvalue(L, kidx);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* A copy of a table, so that a script changing it leaves the cache alone. */
static void push_copy(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

static const char *check_key(lua_State *L, size_t *len)
{
    const char *key = luaL_checklstring(L, 1, len);
    luaL_argcheck(L, *len > 0 && *len <= KEY_MAX, 1, "key empty or longer than 1024 bytes");
    return key;
}

/* store.get(key): the value, or nil. */
static int l_get(lua_State *L)
{
    size_t klen;
    const char *key = check_key(L, &klen);
    struct bridge *b = bridge_of(L);
    struct store *st = store_use(L, "store", false);
    if (st == NULL) {
        lua_pushnil(L);
        return 1;
    }
    double now = ev_now(b->loop);
    unsigned slot = slot_of(key, klen);
    unsigned long long gen = gen_now(st, slot);
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->cacheref);   /* 2 */
    lua_pushvalue(L, 1);
    if (lua_rawget(L, 2) == LUA_TTABLE) {              /* 3: {value, gen, expires} */
        lua_rawgeti(L, 3, 2);
        lua_rawgeti(L, 3, 3);
        bool good = (unsigned long long)lua_tointeger(L, -2) == gen &&
                    (lua_isnil(L, -1) || lua_tonumber(L, -1) > now);
        lua_pop(L, 2);
        if (good) {
            lua_rawgeti(L, 3, 1);
            if (lua_istable(L, -1))
                push_copy(L, -1);
            return 1;
        }
    }
    lua_settop(L, 2);
    static const char get_sql[] = "SELECT type, value, expires FROM kv WHERE key = ?1 "
                                  "AND (expires IS NULL OR expires > ?2)";
    sqlite3_stmt *q = store_stmt(b, false, get_sql);
    if (q == NULL)
        return call_fail(L, "store: %s", store_error(b, false));
    sqlite3_bind_text(q, 1, key, (int)klen, SQLITE_STATIC);
    sqlite3_bind_double(q, 2, now);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_stmt_done(q);
        return call_fail(L, "store: %s", store_error(b, false));
    }
    lua_createtable(L, 3, 0);                          /* 3: the cache entry */
    if (rc == SQLITE_ROW) {
        const unsigned char *type = sqlite3_column_text(q, 0);
        push_column(L, q, 1, type ? (char)type[0] : 's');
        lua_rawseti(L, 3, 1);
        if (sqlite3_column_type(q, 2) != SQLITE_NULL) {
            lua_pushnumber(L, sqlite3_column_double(q, 2));
            lua_rawseti(L, 3, 3);
        }
    }
    store_stmt_done(q);
    lua_pushinteger(L, (lua_Integer)gen);
    lua_rawseti(L, 3, 2);
    if (++st->cached > CACHE_MAX) {   /* bounded: start again empty */
        luaL_unref(L, LUA_REGISTRYINDEX, st->cacheref);
        lua_newtable(L);
        lua_replace(L, 2);
        lua_pushvalue(L, 2);
        st->cacheref = luaL_ref(L, LUA_REGISTRYINDEX);
        st->cached = 1;
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    lua_rawset(L, 2);
    lua_rawgeti(L, 3, 1);
    if (lua_istable(L, -1))
        push_copy(L, -1);
    return 1;
}

/* Push what a finished write gives: nil and the reason, or its result. */
static int kv_results(lua_State *L, const struct kvjob *j)
{
    if (j->w.err[0])
        return call_fail(L, "store: %s", j->w.err);
    if (j->op == KV_INCR && j->not_number)
        return call_fail(L, "store: %s does not hold a number", j->key);
    if (j->op == KV_INCR && j->r_is_int)
        lua_pushinteger(L, j->ri);
    else if (j->op == KV_INCR)
        lua_pushnumber(L, j->rd);
    else
        lua_pushboolean(L, (j->op != KV_ADD && j->op != KV_DELETE_IF) || j->changed);
    return 1;
}

static int kv_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lcall *c = (struct lcall *)ctx;
    (void)status;
    int n = c->timed_out ? call_fail(L, "store: timed out after %f seconds (the write may still complete)",
                                     (lua_Number)c->timeout)
                         : kv_results(L, c->waitdata);
    call_release(c);
    return n;
}

/* Queue a write of key and wait for its commit. */
static int kv_write(lua_State *L, enum kv_op op, int vidx, double ttl)
{
    size_t klen;
    const char *key = check_key(L, &klen);
    struct store *st = store_need(L, "store");
    struct lcall *c = call_waitable(L, "luasmtpd.store");
    struct value v = { 0 };
    if (vidx)
        value_from(L, vidx, &v);      /* raises before it allocates */
    struct kvjob *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->key = malloc(klen + 1)) == NULL) {
        free(j);
        free(v.s);
        return call_fail(L, "store: out of memory");
    }
    memcpy(j->key, key, klen);
    j->key[klen] = '\0';
    j->klen = klen;
    j->v = v;
    j->b = c->b;
    j->op = op;
    j->now = ev_now(c->b->loop);
    j->expires = ttl > 0 ? j->now + ttl : 0;
    j->w.what = "store";
    j->w.in_tx = true;
    j->w.run = kv_run;
    j->w.committed = kv_committed;
    j->w.free = kv_free;
    cache_drop(L, st, 1);
    return writer_wait(L, c, &j->w, STORE_TIMEOUT, kv_k);
}

static double opt_ttl(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    double ttl = luaL_checknumber(L, idx);
    luaL_argcheck(L, ttl > 0 && ttl <= 10 * 31536000.0, idx, "ttl must be more than 0 seconds (at most 10 years)");
    return ttl;
}

/* store.set(key, value [, ttl]): true once committed; value nil deletes. */
static int l_set(lua_State *L)
{
    if (lua_isnoneornil(L, 2))
        return kv_write(L, KV_DELETE, 0, 0);
    double ttl = opt_ttl(L, 3);
    return kv_write(L, KV_SET, 2, ttl);
}

/* store.add(key, value [, ttl]): set only when key holds nothing; true if
 * it was set. */
static int l_add(lua_State *L)
{
    luaL_checkany(L, 2);
    double ttl = opt_ttl(L, 3);
    return kv_write(L, KV_ADD, 2, ttl);
}

/* store.delete(key [, value]): true once committed; with value, only
 * while key holds it, and whether it did. */
static int l_delete(lua_State *L)
{
    if (lua_isnoneornil(L, 2))
        return kv_write(L, KV_DELETE, 0, 0);
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TSTRING || t == LUA_TNUMBER || t == LUA_TBOOLEAN, 2, "string, number or boolean");
    return kv_write(L, KV_DELETE_IF, 2, 0);
}

/* store.incr(key [, n]): the new number. */
static int l_incr(lua_State *L)
{
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_pushinteger(L, 1);
    }
    luaL_checknumber(L, 2);
    return kv_write(L, KV_INCR, 2, 0);
}

/* store.keys([prefix [, max]]): the keys that begin with prefix, in byte
 * order, at most max of them (default 1000). */
static int l_keys(lua_State *L)
{
    size_t plen;
    const char *prefix = luaL_optlstring(L, 1, "", &plen);
    lua_Integer max = luaL_optinteger(L, 2, 1000);
    luaL_argcheck(L, plen <= KEY_MAX, 1, "prefix longer than 1024 bytes");
    luaL_argcheck(L, max > 0, 2, "max must be at least 1");
    struct bridge *b = bridge_of(L);
    struct store *st = store_use(L, "store", false);
    lua_newtable(L);
    if (st == NULL)
        return 1;
    /* the keys past the prefix's range begin with it, its last byte below
     * 0xff moved on by one (none: no end) */
    char end[KEY_MAX];
    size_t elen = plen;
    memcpy(end, prefix, plen);
    while (elen > 0 && (unsigned char)end[elen - 1] == 0xff)
        elen--;
    if (elen > 0)
        end[elen - 1] = (char)((unsigned char)end[elen - 1] + 1);
    static const char keys_sql[] = "SELECT key FROM kv WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) "
                                   "AND (expires IS NULL OR expires > ?3) ORDER BY key LIMIT ?4";
    sqlite3_stmt *q = store_stmt(b, false, keys_sql);
    if (q == NULL)
        return call_fail(L, "store: %s", store_error(b, false));
    sqlite3_bind_text(q, 1, prefix, (int)plen, SQLITE_STATIC);
    if (elen > 0)
        sqlite3_bind_text(q, 2, end, (int)elen, SQLITE_STATIC);
    sqlite3_bind_double(q, 3, ev_now(b->loop));
    sqlite3_bind_int64(q, 4, max);
    int rc, n = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        lua_pushlstring(L, (const char *)sqlite3_column_text(q, 0), (size_t)sqlite3_column_bytes(q, 0));
        lua_rawseti(L, -2, ++n);
    }
    store_stmt_done(q);
    if (rc != SQLITE_DONE)
        return call_fail(L, "store: %s", store_error(b, false));
    return 1;
}

static void store_lib_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "get", l_get },
        { "set", l_set },
        { "add", l_add },
        { "delete", l_delete },
        { "incr", l_incr },
        { "keys", l_keys },
        { NULL, NULL },
    };
    luaL_newlib(L, funcs);
    lua_setfield(L, -2, "store");
}

static int store_start(struct bridge *b, const struct config *cfg, char *err, size_t errsz)
{
    if (store_locate(cfg, b->state_dir, sizeof(b->state_dir)) < 0) {
        snprintf(err, errsz, "--state-dir: the name is too long");
        return -1;
    }
    /* cjson writes and reads the store's tables */
    lua_State *L = b->L;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK)
        lua_setfield(L, LUA_REGISTRYINDEX, "luasmtpd.cjson");
    else
        lua_pop(L, 1);
    /* a database left by an earlier run is opened now, for its queue */
    return store_open(b, false, err, errsz) < 0 ? -1 : 0;
}

const struct action store_action = { .open = store_lib_open, .start = store_start, .stop = store_stop };
