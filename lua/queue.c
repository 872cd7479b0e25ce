/*
 * The durable queue: jobs (forward, http, mqtt) in the state database's
 * jobs table, and the delivery agent that runs them (docs/queue.md).
 *
 * luasmtpd.queue (lua/luasmtpd.lua) checks a job and makes its row;
 * put() here inserts it on the writer thread and returns its id once the
 * commit is done, so a hook that then answers 250 has the job on disk.
 * Triggers keep the count and bytes of jobs in one row, which put() checks
 * against --queue-max and --queue-max-bytes in the same transaction.
 *
 * The agent lives in one process (the server, or worker 1): a timer looks
 * once a second whether a job is due or another process added one (the
 * queue's counter in luasmtpd.gen), and starts up to --queue-concurrency
 * deliveries, each a task running the Lua deliver function with the job.
 * That function says how it ended through finish(): done (the row goes),
 * retry (a later next_try) or dead (kept, with its last error).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <sqlite3.h>

#include "internal.h"
#include "log.h"
#include "metrics.h"

#define QUEUE_ID_LEN  16              /* hex digits */
#define QUEUE_TIMEOUT 30.0            /* for the commit of put and finish */

struct running {
    char          id[QUEUE_ID_LEN + 1];
    struct queue *q;
    bool          used;
};

struct queue {
    struct bridge  *b;
    ev_timer        tick;
    unsigned long long gen;        /* the queue's counter when last looked */
    double          next_due;      /* Unix time of the next queued job; 0 none */
    int             deliverref;    /* registry: deliver(job), from luasmtpd.lua */
    int             nrunning;
    long long       max, max_bytes, concurrency, retry[2], lifetime;
    bool            agent;         /* this process delivers */
    bool            kicked;        /* look now, whatever the counter says */
    double          paused_until;  /* Q.pause(): no job starts before (Unix time) */
    struct running *running;       /* concurrency slots */
};

static void kick(struct queue *q);

/* ---- put and finish: jobs of the writer thread ---- */

enum qop { Q_PUT, Q_DONE, Q_RETRY, Q_DEAD };

struct qjob {
    struct wjob    w;
    struct bridge *b;
    enum qop       op;
    char           id[QUEUE_ID_LEN + 1];
    char          *kind, *args, *data, *error;
    size_t         len;
    double         now, next_try, expires;
    long long      max, max_bytes;
    bool           full;           /* Q_PUT: over a limit */
};

static void qjob_free(struct wjob *w)
{
    struct qjob *j = (struct qjob *)w;
    free(j->kind);
    free(j->args);
    free(j->data);
    free(j->error);
}

/* Step q (a statement of the writer's): its result code, and the job
 * told of an error. */
static int step(struct qjob *j, sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        wjob_fail(&j->w, "%s", store_error(j->b, true));
    return rc;
}

static sqlite3_stmt *stmt(struct qjob *j, const char *sql)
{
    sqlite3_stmt *q = store_stmt(j->b, true, sql);
    if (q == NULL)
        wjob_fail(&j->w, "%s", store_error(j->b, true));
    return q;
}

static const char stats_sql[] = "SELECT jobs, bytes FROM queue_stats";
static const char put_sql[] = "INSERT INTO jobs (id, kind, created, next_try, expires, args, data, size) "
                              "VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)";

static void put_run(struct qjob *j)
{
    sqlite3_stmt *q = stmt(j, stats_sql);
    if (q == NULL)
        return;
    if (step(j, q) == SQLITE_ROW &&
        (sqlite3_column_int64(q, 0) >= j->max || sqlite3_column_int64(q, 1) + (long long)j->len > j->max_bytes))
        j->full = true;
    store_stmt_done(q);
    if (j->full || j->w.err[0] || (q = stmt(j, put_sql)) == NULL)
        return;
    sqlite3_bind_text(q, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, j->kind, -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 3, j->now);
    sqlite3_bind_double(q, 4, j->expires);
    sqlite3_bind_text(q, 5, j->args, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 6, j->data, (int)j->len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, (sqlite3_int64)j->len);
    step(j, q);
    store_stmt_done(q);
}

static const char *const finish_sql[] = {
    [Q_DONE] = "DELETE FROM jobs WHERE id = ?1",
    [Q_RETRY] = "UPDATE jobs SET attempts = attempts + 1, next_try = ?2, last_error = ?3, "
                "args = coalesce(?4, args) WHERE id = ?1",
    [Q_DEAD] = "UPDATE jobs SET attempts = attempts + 1, state = 'dead', last_error = ?3, "
               "args = coalesce(?4, args) WHERE id = ?1",
};

static void qjob_run(struct wjob *w)
{
    struct qjob *j = (struct qjob *)w;
    if (j->op == Q_PUT) {
        put_run(j);
        return;
    }
    sqlite3_stmt *q = stmt(j, finish_sql[j->op]);
    if (q == NULL)
        return;
    sqlite3_bind_text(q, 1, j->id, -1, SQLITE_STATIC);
    if (j->op != Q_DONE) {
        sqlite3_bind_double(q, 2, j->next_try);
        sqlite3_bind_text(q, 3, j->error ? j->error : "", -1, SQLITE_STATIC);
        if (j->args)
            sqlite3_bind_text(q, 4, j->args, -1, SQLITE_STATIC);
    }
    step(j, q);
    store_stmt_done(q);
}

static void qjob_committed(struct wjob *w)
{
    struct qjob *j = (struct qjob *)w;
    if (j->op == Q_PUT)
        store_bump(j->b, 0);          /* other processes' agents: look */
}

static int qjob_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lcall *c = (struct lcall *)ctx;
    struct qjob *j = c->waitdata;
    int n = 1;
    (void)status;
    if (c->timed_out) {
        n = call_fail(L, "queue: the disk did not answer within %f seconds (the job may still be written)",
                      (lua_Number)c->timeout);
    } else if (j->w.err[0]) {
        n = call_fail(L, "queue: %s", j->w.err);
    } else if (j->full) {
        n = call_fail(L, "queue full");
    } else if (j->op == Q_PUT) {
        lua_pushstring(L, j->id);
        kick(j->b->queue);            /* deliver now */
    } else {
        lua_pushboolean(L, 1);
    }
    call_release(c);
    return n;
}

/* A copy of the string at idx (checked by the caller); NULL: no memory. */
static char *dup_arg(lua_State *L, int idx, size_t *len)
{
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    char *d = s ? malloc(n + 1) : NULL;
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    if (len)
        *len = n;
    return d;
}

/* A new job for call c, or NULL (nothing left to free). */
static struct qjob *qjob_new(struct lcall *c, enum qop op)
{
    struct qjob *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->b = c->b;
    j->op = op;
    j->w.what = "queue";
    j->w.in_tx = true;
    j->w.run = qjob_run;
    j->w.committed = qjob_committed;
    j->w.free = qjob_free;
    return j;
}

/* The queue, with its database open; raises while the script loads. */
static struct queue *queue_need(lua_State *L)
{
    store_need(L, "queue");
    return bridge_of(L)->queue;
}

/* Q.put(kind, args, data): the new job's id once it is on disk. */
static int l_put(lua_State *L)
{
    for (int i = 1; i <= 3; i++)
        luaL_checkstring(L, i);
    struct queue *q = queue_need(L);
    struct lcall *c = call_waitable(L, "luasmtpd.queue");
    struct qjob *j = qjob_new(c, Q_PUT);
    if (j == NULL)
        return call_fail(L, "queue: out of memory");
    j->kind = dup_arg(L, 1, NULL);
    j->args = dup_arg(L, 2, NULL);
    j->data = dup_arg(L, 3, &j->len);
    if (j->kind == NULL || j->args == NULL || j->data == NULL) {
        qjob_free(&j->w);
        free(j);
        return call_fail(L, "queue: out of memory");
    }
    unsigned char rnd[4] = { 0 };
    if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
        rnd[0] = (unsigned char)(c->b->ncalls & 0xff);
    j->now = ev_now(c->b->loop);
    snprintf(j->id, sizeof(j->id), "%08llX%02X%02X%02X%02X", (unsigned long long)j->now & 0xffffffffULL,
             rnd[0], rnd[1], rnd[2], rnd[3]);
    j->expires = j->now + (double)q->lifetime;
    j->max = q->max;
    j->max_bytes = q->max_bytes;
    return writer_wait(L, c, &j->w, QUEUE_TIMEOUT, qjob_k);
}

/* Q.finish(id, "done" | "retry" | "dead", error, next_try, args) */
static int l_finish(lua_State *L)
{
    static const char *const ops[] = { "done", "retry", "dead", NULL };
    size_t idlen;
    const char *id = luaL_checklstring(L, 1, &idlen);
    luaL_argcheck(L, idlen == QUEUE_ID_LEN, 1, "not a job id");
    enum qop op = (enum qop)(Q_DONE + luaL_checkoption(L, 2, NULL, ops));
    double next_try = luaL_optnumber(L, 4, 0);
    queue_need(L);
    struct lcall *c = call_waitable(L, "queue finish");
    struct qjob *j = qjob_new(c, op);
    if (j == NULL)
        return call_fail(L, "queue: out of memory");
    memcpy(j->id, id, idlen + 1);
    j->next_try = next_try;
    j->error = lua_isstring(L, 3) ? dup_arg(L, 3, NULL) : NULL;
    j->args = lua_isstring(L, 5) ? dup_arg(L, 5, NULL) : NULL;
    if ((lua_isstring(L, 3) && j->error == NULL) || (lua_isstring(L, 5) && j->args == NULL)) {
        qjob_free(&j->w);
        free(j);
        return call_fail(L, "queue: out of memory");
    }
    return writer_wait(L, c, &j->w, QUEUE_TIMEOUT, qjob_k);
}

/* Q.pause(seconds): start no job for that long (the outcome of one could
 * not be written: the disk is full, the database failing). */
static int l_pause(lua_State *L)
{
    struct queue *q = bridge_of(L)->queue;
    double secs = luaL_checknumber(L, 1);
    if (q)
        q->paused_until = ev_now(q->b->loop) + secs;
    return 0;
}

/* Q.settings(): {retry_min =, retry_max =} for deliver's backoff. */
static int l_settings(lua_State *L)
{
    struct queue *q = bridge_of(L)->queue;
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, q ? q->retry[0] : 60);
    lua_setfield(L, -2, "retry_min");
    lua_pushinteger(L, q ? q->retry[1] : 3600);
    lua_setfield(L, -2, "retry_max");
    return 1;
}

/* ---- the agent ---- */

static void running_ended(void *data)
{
    struct running *r = data;
    r->used = false;
    r->q->nrunning--;
    kick(r->q);                       /* the next one */
}

static bool is_running(const struct queue *q, const char *id)
{
    for (int i = 0; i < q->concurrency; i++)
        if (q->running[i].used && strcmp(q->running[i].id, id) == 0)
            return true;
    return false;
}

static struct running *free_slot(struct queue *q)
{
    for (int i = 0; i < q->concurrency; i++)
        if (!q->running[i].used)
            return &q->running[i];
    return NULL;
}

/* Push row r of `SELECT id, kind, args, data, attempts, created, expires,
 * last_error` as the job table deliver takes. */
static void push_job(lua_State *L, sqlite3_stmt *r)
{
    static const char *const names[] = { "id", "kind", "args", "data", "attempts", "created", "expires", "error" };
    lua_createtable(L, 0, 8);
    for (int i = 0; i < 8; i++) {
        switch (sqlite3_column_type(r, i)) {
        case SQLITE_INTEGER: lua_pushinteger(L, sqlite3_column_int64(r, i)); break;
        case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(r, i)); break;
        case SQLITE_NULL: lua_pushnil(L); break;
        default:
            lua_pushlstring(L, sqlite3_column_blob(r, i), (size_t)sqlite3_column_bytes(r, i));
        }
        lua_setfield(L, -2, names[i]);
    }
}

/* Start what is due, as far as the free slots go. */
static void start_due(struct queue *q)
{
    struct bridge *b = q->b;
    lua_State *L = b->L;
    static const char due_sql[] = "SELECT id, kind, args, data, attempts, created, expires, last_error "
                                  "FROM jobs WHERE state = 'queued' AND next_try <= ?1 ORDER BY next_try LIMIT ?2";
    static const char next_sql[] = "SELECT min(next_try) FROM jobs WHERE state = 'queued'";
    double now = ev_now(b->loop);
    sqlite3_stmt *r = store_stmt(b, false, due_sql);
    if (r == NULL) {
        log_msg(LV_ERROR, NULL, "queue: %s", store_error(b, false));
        return;
    }
    sqlite3_bind_double(r, 1, now);
    sqlite3_bind_int64(r, 2, q->concurrency * 2);
    while (q->nrunning < q->concurrency && sqlite3_step(r) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(r, 0);
        if (id == NULL || strlen(id) != QUEUE_ID_LEN || is_running(q, id))
            continue;
        struct running *slot = free_slot(q);
        push_job(L, r);
        int arg = lua_gettop(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, q->deliverref);
        struct lcall *c = call_task(b, "queue", arg);
        lua_pop(L, 1);
        if (c == NULL)
            continue;                 /* ended at once, or could not start (logged) */
        memcpy(slot->id, id, QUEUE_ID_LEN + 1);
        slot->used = true;
        slot->q = q;
        q->nrunning++;
        c->ended = running_ended;
        c->ended_data = slot;
    }
    store_stmt_done(r);
    q->next_due = 0;
    if ((r = store_stmt(b, false, next_sql)) != NULL) {
        if (sqlite3_step(r) == SQLITE_ROW && sqlite3_column_type(r, 0) != SQLITE_NULL)
            q->next_due = sqlite3_column_double(r, 0);
        store_stmt_done(r);
    }
}

/* Once a second, and when kicked (a job put or ended here). */
static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct queue *q = w->data;
    struct bridge *b = q->b;
    (void)loop;
    (void)revents;
    if (b->store == NULL) {           /* another process may have made it */
        char err[1024];
        if (store_open(b, false, err, sizeof(err)) < 0)
            log_msg(LV_ERROR, NULL, "queue: %s", err);
        if (b->store == NULL)
            return;
    }
    if (q->nrunning >= q->concurrency || q->deliverref == LUA_NOREF || ev_now(b->loop) < q->paused_until)
        return;
    unsigned long long gen = store_gen(b, 0);
    bool due = q->next_due > 0 && q->next_due <= ev_now(b->loop);
    if (gen == q->gen && !due && !q->kicked)
        return;
    q->kicked = false;
    q->gen = gen;
    start_due(q);
}

static void kick(struct queue *q)
{
    if (!ev_is_active(&q->tick))      /* no agent here, or not now (a reload) */
        return;
    q->kicked = true;
    ev_feed_event(q->b->loop, &q->tick, EV_TIMER);
}

/* Q.trace(mail): the Received: field of a forward queued now. */
static int l_trace(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    mail_push_trace(L, 1, false);
    return 1;
}

/* Q.agent(deliver): the function that runs each job. */
static int l_agent(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "luasmtpd.queue_deliver");
    return 0;
}

/* The delivery agent runs in this process (the server's, or worker 1's). */
static void agent_start(struct queue *q)
{
    if (!q->agent || ev_is_active(&q->tick))
        return;
    ev_timer_start(q->b->loop, &q->tick);
    ev_unref(q->b->loop);
    kick(q);                          /* what an earlier run left */
}

static void agent_stop(struct queue *q)
{
    if (ev_is_active(&q->tick)) {
        ev_ref(q->b->loop);
        ev_timer_stop(q->b->loop, &q->tick);
    }
    ev_clear_pending(q->b->loop, &q->tick);
}

/* GET /metrics: the jobs of the host, by state, and the age of the oldest
 * waiting one (read from the state database at each scrape). */
static void queue_metrics(struct buf *out, void *ctx)
{
    static const char sql[] = "SELECT state, count(*), min(created) FROM jobs GROUP BY state";
    struct bridge *b = ctx;
    long long queued = 0, dead = 0;
    double oldest = 0;
    char err[1024];
    if (b->store == NULL && store_open(b, false, err, sizeof(err)) < 0)   /* another process made it? */
        log_msg(LV_DEBUG, NULL, "metrics: %s", err);
    sqlite3_stmt *r = b->store ? store_stmt(b, false, sql) : NULL;
    while (r && sqlite3_step(r) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(r, 0);
        if (state && strcmp(state, "dead") == 0) {
            dead = sqlite3_column_int64(r, 1);
        } else {
            queued += sqlite3_column_int64(r, 1);
            oldest = ev_now(b->loop) - sqlite3_column_double(r, 2);
        }
    }
    if (r)
        store_stmt_done(r);
    metrics_family(out, "queue_jobs", "gauge", "Jobs of the durable queue, by state (dead: kept as dead letters).");
    metrics_printf(out, "luasmtpd_queue_jobs{state=\"queued\"} %lld\n", queued);
    metrics_printf(out, "luasmtpd_queue_jobs{state=\"dead\"} %lld\n", dead);
    metrics_family(out, "queue_oldest_job_age_seconds", "gauge", "Age of the oldest job waiting for delivery.");
    metrics_printf(out, "luasmtpd_queue_oldest_job_age_seconds %.3f\n", queued ? oldest : 0.0);
}

static int queue_start(struct bridge *b, const struct config *cfg, char *err, size_t errsz)
{
    struct queue *q = calloc(1, sizeof(*q));
    if (q == NULL || (q->running = calloc((size_t)cfg->queue_concurrency, sizeof(*q->running))) == NULL) {
        free(q);
        snprintf(err, errsz, "queue: out of memory");
        return -1;
    }
    q->b = b;
    q->deliverref = LUA_NOREF;
    q->max = cfg->queue_max;
    q->max_bytes = cfg->queue_max_bytes;
    q->concurrency = cfg->queue_concurrency;
    q->retry[0] = cfg->queue_retry[0];
    q->retry[1] = cfg->queue_retry[1];
    q->lifetime = cfg->queue_lifetime;
    q->agent = cfg->worker <= 1;     /* one agent per server */
    b->queue = q;
    /* deliver() is set when the module loads: a script need not load it */
    lua_getglobal(b->L, "require");
    lua_pushliteral(b->L, "luasmtpd");
    if (lua_pcall(b->L, 1, 0, 0) != LUA_OK) {
        snprintf(err, errsz, "queue: %s", lua_tostring(b->L, -1));
        lua_pop(b->L, 1);
        return -1;
    }
    if (lua_getfield(b->L, LUA_REGISTRYINDEX, "luasmtpd.queue_deliver") == LUA_TFUNCTION)
        q->deliverref = luaL_ref(b->L, LUA_REGISTRYINDEX);
    else
        lua_pop(b->L, 1);
    ev_timer_init(&q->tick, tick_cb, 1., 1.);
    q->tick.data = q;
    if (!b->held)
        agent_start(q);
    metrics_collector(queue_metrics, b);
    return 0;
}

static void queue_stop(struct bridge *b)
{
    struct queue *q = b->queue;
    metrics_collector_gone(b);
    if (q == NULL)
        return;
    agent_stop(q);
    luaL_unref(b->L, LUA_REGISTRYINDEX, q->deliverref);
    free(q->running);
    free(q);
    b->queue = NULL;
}

static void queue_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "put", l_put },
        { "finish", l_finish },
        { "settings", l_settings },
        { "pause", l_pause },
        { "agent", l_agent },
        { "trace", l_trace },
        { NULL, NULL },
    };
    luaL_newlib(L, funcs);
    lua_setfield(L, -2, "_queue");   /* luasmtpd.lua takes it away */
}

/* A reload: the agent moves to the new script once this one has closed
 * (its deliveries in progress finish here), so no job runs twice. */
static void queue_retire(struct bridge *b)
{
    if (b->queue)
        agent_stop(b->queue);
}

static void queue_resume(struct bridge *b)
{
    if (b->queue)
        agent_start(b->queue);
}

const struct action queue_action = { .open = queue_open, .start = queue_start, .stop = queue_stop,
                                     .retire = queue_retire, .resume = queue_resume };

/* ---- the --queue-* commands ---- */

/* The options shown, without the secrets. */
#define SHOWN_ARGS "json_remove(args, '$.password', '$.bearer')"

static int list_jobs(sqlite3 *db)
{
    sqlite3_stmt *r = NULL;
    if (sqlite3_prepare_v2(db, "SELECT id, kind, state, attempts, size, datetime(next_try, 'unixepoch'), "
                           "coalesce(last_error, '') FROM jobs ORDER BY created", -1, &r, NULL) != SQLITE_OK)
        return -1;
    int n = 0;
    printf("%-16s %-7s %-6s %8s %10s  %-19s  %s\n", "ID", "KIND", "STATE", "ATTEMPTS", "SIZE", "NEXT TRY (UTC)",
           "LAST ERROR");
    while (sqlite3_step(r) == SQLITE_ROW) {
        bool dead = strcmp((const char *)sqlite3_column_text(r, 2), "dead") == 0;
        printf("%-16s %-7s %-6s %8lld %10lld  %-19s  %s\n", sqlite3_column_text(r, 0), sqlite3_column_text(r, 1),
               sqlite3_column_text(r, 2), (long long)sqlite3_column_int64(r, 3),
               (long long)sqlite3_column_int64(r, 4), dead ? "-" : (const char *)sqlite3_column_text(r, 5),
               sqlite3_column_text(r, 6));
        n++;
    }
    sqlite3_finalize(r);
    printf("%d job(s)\n", n);
    return 0;
}

static int show_job(sqlite3 *db, const char *id)
{
    sqlite3_stmt *r = NULL;
    if (sqlite3_prepare_v2(db, "SELECT id, kind, state, attempts, size, datetime(created, 'unixepoch'), "
                           "datetime(next_try, 'unixepoch'), datetime(expires, 'unixepoch'), "
                           "coalesce(last_error, ''), " SHOWN_ARGS " FROM jobs WHERE id = ?1",
                           -1, &r, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(r, 1, id, -1, SQLITE_STATIC);
    static const char *const names[] = { "id", "kind", "state", "attempts", "size", "created", "next try",
                                         "expires", "last error", "options" };
    int found = sqlite3_step(r) == SQLITE_ROW;
    for (int i = 0; found && i < 10; i++)
        printf("%-11s %s\n", names[i], sqlite3_column_text(r, i) ? (const char *)sqlite3_column_text(r, i) : "");
    sqlite3_finalize(r);
    return found ? 0 : 1;
}

/* flush: due now, a dead job queued again for a new lifetime; delete. */
static int change_jobs(sqlite3 *db, const char *cmd, const char *id, double lifetime)
{
    const char *sql = strcmp(cmd, "delete") == 0 ? "DELETE FROM jobs WHERE id = ?1"
                    : "UPDATE jobs SET next_try = ?2, expires = CASE state WHEN 'dead' THEN ?2 + ?3 "
                      "ELSE expires END, state = 'queued' WHERE id = ?1 OR ?1 = 'all'";
    sqlite3_stmt *r = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &r, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(r, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_double(r, 2, (double)time(NULL));
    sqlite3_bind_double(r, 3, lifetime);
    int rc = sqlite3_step(r);
    sqlite3_finalize(r);
    if (rc != SQLITE_DONE)
        return -1;
    int n = sqlite3_changes(db);
    printf("%s: %d job(s)\n", strcmp(cmd, "delete") == 0 ? "deleted" : "flushed", n);
    return n > 0 ? 0 : 1;
}

int bridge_queue_command(const struct config *cfg, const char *cmd, const char *arg)
{
    char dir[CONFIG_PATH_MAX + 1], path[CONFIG_PATH_MAX + 16], err[CONFIG_PATH_MAX + 256];
    if (store_locate(cfg, dir, sizeof(dir)) < 0) {
        fprintf(stderr, "luasmtpd: --state-dir: the name is too long\n");
        return 2;
    }
    snprintf(path, sizeof(path), "%s/luasmtpd.db", dir);
    bool reading = strcmp(cmd, "list") == 0 || strcmp(cmd, "show") == 0;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, reading ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "luasmtpd: %s: %s (no queue in this state directory?)\n", path,
                db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return 1;
    }
    sqlite3_busy_timeout(db, 5000);
    int rc = strcmp(cmd, "list") == 0 ? list_jobs(db)
           : strcmp(cmd, "show") == 0 ? show_job(db, arg)
                                      : change_jobs(db, cmd, arg, (double)cfg->queue_lifetime);
    if (rc < 0)
        fprintf(stderr, "luasmtpd: %s: %s\n", path, sqlite3_errmsg(db));
    else if (rc > 0)
        fprintf(stderr, "luasmtpd: no job %s in %s\n", arg, path);
    sqlite3_close(db);
    if (rc == 0 && strcmp(cmd, "flush") == 0 && store_poke(dir, err, sizeof(err)) < 0)
        fprintf(stderr, "luasmtpd: %s (a running server looks again within its retry time)\n", err);
    return rc < 0 ? 1 : rc;
}
