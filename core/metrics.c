#include "metrics.h"

#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

#define SLOTS_MAX 64

/* A series of luasmtpd.metric, its value a double's bits. */
struct series {
    atomic_int     ready;           /* key is set */
    char           key[METRICS_SCRIPT_KEY];   /* name, then {labels} or nothing */
    size_t         name_len;
    atomic_ullong  bits;
};

struct script_table {
    atomic_flag    adding;          /* held while a series is added */
    struct series  s[METRICS_SCRIPT_SERIES];
};

static struct metrics_slot own;            /* before metrics_share(), and for --check */
static struct script_table own_series;
static struct script_table *script = &own_series;
static struct metrics_slot *slots = &own;
static int nslots = 1;
struct metrics_slot *metrics = &own;

static const char *hook_names[METRICS_HOOKS];
static metrics_collect_fn collect;
static void *collect_ctx;
static bool failed;                        /* an append of this rendering failed */

/* Upper bounds of the duration buckets, in seconds (the last is +Inf). */
static const double bounds[METRICS_BUCKETS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5,
};

int metrics_share(int n)
{
    if (n < 1)
        n = 1;
    if (n > SLOTS_MAX)
        n = SLOTS_MAX;
    size_t bytes = sizeof(struct metrics_slot) * (size_t)n;
    char *p = mmap(NULL, bytes + sizeof(struct script_table), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    slots = (struct metrics_slot *)p;       /* zeroed by the kernel */
    script = (struct script_table *)(p + bytes);
    nslots = n;
    metrics = &slots[0];
    return 0;
}

void metrics_use(int i)
{
    metrics = &slots[i >= 0 && i < nslots ? i : 0];
    atomic_store_explicit(&metrics->pid, (int)getpid(), memory_order_relaxed);
}

void metrics_hook_name(int i, const char *name)
{
    if (i >= 0 && i < METRICS_HOOKS)
        hook_names[i] = name;
}

void metrics_hook(int i, double seconds, int error, int overrun)
{
    if (i < 0 || i >= METRICS_HOOKS)
        return;
    struct metrics_hook *h = &metrics->hooks[i];
    int k = 0;
    while (k < METRICS_BUCKETS - 1 && seconds > bounds[k])
        k++;
    metrics_add(&h->calls, 1);
    metrics_add(&h->le[k], 1);
    metrics_add(&h->micros, (unsigned long long)(seconds * 1e6 + 0.5));
    if (error)
        metrics_add(&h->errors, 1);
    if (overrun)
        metrics_add(&h->overruns, 1);
}

static const char *const action_kinds[METRICS_ACTIONS] = {
    "exec", "http", "mqtt", "save", "write", "forward", "queue",
};
static const char *const action_results[METRICS_RESULTS] = { "ok", "refused", "error", "timeout" };

static int index_of(const char *const *names, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

void metrics_budget(size_t used)
{
    metrics_set(&metrics->budget_bytes, used);
}

void metrics_action(const char *kind, const char *result)
{
    int k = index_of(action_kinds, METRICS_ACTIONS, kind), r = index_of(action_results, METRICS_RESULTS, result);
    if (k >= 0 && r >= 0)
        metrics_add(&metrics->actions[k][r], 1);
}

static void add_double(atomic_ullong *bits, double v)
{
    unsigned long long old = atomic_load_explicit(bits, memory_order_relaxed), next;
    do {
        double d;
        memcpy(&d, &old, sizeof(d));
        d += v;
        memcpy(&next, &d, sizeof(next));
    } while (!atomic_compare_exchange_weak_explicit(bits, &old, next, memory_order_relaxed, memory_order_relaxed));
}

static struct series *find_series(const char *key)
{
    for (int i = 0; i < METRICS_SCRIPT_SERIES; i++) {
        struct series *x = &script->s[i];
        if (!atomic_load_explicit(&x->ready, memory_order_acquire))
            return NULL;             /* they are taken in order */
        if (strcmp(x->key, key) == 0)
            return x;
    }
    return NULL;
}

int metrics_script(const char *name, const char *labels, double value)
{
    char key[METRICS_SCRIPT_KEY];
    int n = snprintf(key, sizeof(key), "%s%s%s%s", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "");
    if (n < 0 || (size_t)n >= sizeof(key))
        return -1;
    struct series *x = find_series(key);
    if (x == NULL) {
        while (atomic_flag_test_and_set_explicit(&script->adding, memory_order_acquire))
            ;                        /* another process adds one: a few instructions */
        if ((x = find_series(key)) == NULL) {
            for (int i = 0; i < METRICS_SCRIPT_SERIES && x == NULL; i++)
                if (!atomic_load_explicit(&script->s[i].ready, memory_order_relaxed))
                    x = &script->s[i];
            if (x) {
                memcpy(x->key, key, (size_t)n + 1);
                x->name_len = strlen(name);
                atomic_store_explicit(&x->ready, 1, memory_order_release);
            }
        }
        atomic_flag_clear_explicit(&script->adding, memory_order_release);
        if (x == NULL)
            return -1;
    }
    add_double(&x->bits, value);
    return 0;
}

/* The series of luasmtpd.metric, each name's together under its HELP
 * and TYPE (a counter when it ends in _total, else a gauge). */
static void script_series(struct buf *out)
{
    for (int i = 0; i < METRICS_SCRIPT_SERIES; i++) {
        const struct series *x = &script->s[i];
        if (!atomic_load_explicit(&x->ready, memory_order_acquire))
            break;
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = script->s[j].name_len == x->name_len && memcmp(script->s[j].key, x->key, x->name_len) == 0;
        if (seen)
            continue;
        bool counter = x->name_len > 6 && memcmp(x->key + x->name_len - 6, "_total", 6) == 0;
        metrics_printf(out, "# HELP luasmtpd_script_%.*s Set by the script (luasmtpd.metric).\n"
                            "# TYPE luasmtpd_script_%.*s %s\n", (int)x->name_len, x->key, (int)x->name_len,
                       x->key, counter ? "counter" : "gauge");
        for (int j = i; j < METRICS_SCRIPT_SERIES; j++) {
            const struct series *y = &script->s[j];
            if (!atomic_load_explicit(&y->ready, memory_order_acquire))
                break;
            if (y->name_len != x->name_len || memcmp(y->key, x->key, x->name_len) != 0)
                continue;
            unsigned long long b = atomic_load_explicit(&y->bits, memory_order_relaxed);
            double d;
            memcpy(&d, &b, sizeof(d));
            metrics_printf(out, "luasmtpd_script_%s %.17g\n", y->key, d);
        }
    }
}

void metrics_collector(metrics_collect_fn fn, void *ctx)
{
    collect = fn;
    collect_ctx = ctx;
}

void metrics_collector_gone(void *ctx)
{
    if (collect_ctx == ctx) {
        collect = NULL;
        collect_ctx = NULL;
    }
}

int metrics_printf(struct buf *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(out, fmt, ap);
    va_end(ap);
    if (rc < 0)
        failed = true;
    return rc;
}

/* The sum over the slots of the counter at `offset` in a slot. */
static unsigned long long sum(size_t offset)
{
    unsigned long long t = 0;
    for (int i = 0; i < nslots; i++)
        t += atomic_load_explicit((atomic_ullong *)((char *)&slots[i] + offset), memory_order_relaxed);
    return t;
}

#define SUM(field) sum(offsetof(struct metrics_slot, field))

void metrics_family(struct buf *out, const char *name, const char *type, const char *help)
{
    metrics_printf(out, "# HELP luasmtpd_%s %s\n# TYPE luasmtpd_%s %s\n", name, help, name, type);
}

static void lower(char *dst, const char *src, size_t size)
{
    size_t i = 0;
    for (; src[i] && i + 1 < size; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

static const char *stage_name(int st, char *tmp, size_t size)
{
    if (st == STAGE_GREETING)
        return "greeting";
    if (st == STAGE_MESSAGE)
        return "message";
    lower(tmp, smtp_verb_name((enum smtp_verb)st), size);
    return tmp;
}

/* Resident bytes and open descriptors of process pid: false when it is
 * gone. */
static bool process(int pid, unsigned long long *rss, unsigned long long *fds)
{
    char path[64];
    unsigned long long pages = 0, resident = 0;
    snprintf(path, sizeof(path), "/proc/%d/statm", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool ok = fscanf(f, "%llu %llu", &pages, &resident) == 2;
    fclose(f);
    if (!ok)
        return false;
    *rss += resident * (unsigned long long)sysconf(_SC_PAGESIZE);
    snprintf(path, sizeof(path), "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            *fds += e->d_name[0] != '.';
        closedir(d);
    }
    return true;
}

/* The hooks called so far (one never called has no series yet). */
static bool called(int i)
{
    return hook_names[i] && SUM(hooks[i].calls) > 0;
}

static void hooks(struct buf *out)
{
    static const struct {
        const char *name, *help;
        size_t      offset;
    } counts[] = {
        { "hook_calls_total", "Hook calls, by hook (tasks: timers, the queue's deliveries, on_standby...).",
          offsetof(struct metrics_hook, calls) },
        { "hook_errors_total", "Hook calls that ended in a script error or a bad return value.",
          offsetof(struct metrics_hook, errors) },
        { "hook_budget_overruns_total", "Hook calls stopped at their time budget (--hook-timeout).",
          offsetof(struct metrics_hook, overruns) },
    };
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
        metrics_family(out, counts[k].name, "counter", counts[k].help);
        for (int i = 0; i < METRICS_HOOKS; i++)
            if (called(i))
                metrics_printf(out, "luasmtpd_%s{hook=\"%s\"} %llu\n", counts[k].name, hook_names[i],
                               sum(offsetof(struct metrics_slot, hooks) + sizeof(struct metrics_hook) * (size_t)i +
                                   counts[k].offset));
    }
    metrics_family(out, "hook_duration_seconds", "histogram", "Time from a hook's call to its answer, waits included.");
    for (int i = 0; i < METRICS_HOOKS; i++) {
        if (!called(i))
            continue;
        unsigned long long cum = 0;
        for (int k = 0; k < METRICS_BUCKETS; k++) {
            char le[16] = "+Inf";
            cum += SUM(hooks[i].le[k]);
            if (k < METRICS_BUCKETS - 1)
                snprintf(le, sizeof(le), "%g", bounds[k]);
            metrics_printf(out, "luasmtpd_hook_duration_seconds_bucket{hook=\"%s\",le=\"%s\"} %llu\n",
                           hook_names[i], le, cum);
        }
        metrics_printf(out, "luasmtpd_hook_duration_seconds_sum{hook=\"%s\"} %.6f\n", hook_names[i],
                       (double)SUM(hooks[i].micros) / 1e6);
        metrics_printf(out, "luasmtpd_hook_duration_seconds_count{hook=\"%s\"} %llu\n", hook_names[i], cum);
    }
}

int metrics_render(struct buf *out)
{
    static const char *const refusals[REFUSED_COUNT] = { "max_clients", "per_ip", "rate", "proxy_from" };
    static const char *const classes[4] = { "2xx", "3xx", "4xx", "5xx" };
    char tmp[32];

    failed = false;
    metrics_family(out, "connections_open", "gauge", "SMTP connections open now.");
    metrics_printf(out, "luasmtpd_connections_open %llu\n", SUM(open));
    metrics_family(out, "connections_total", "counter", "SMTP connections accepted.");
    metrics_printf(out, "luasmtpd_connections_total %llu\n", SUM(connections));
    metrics_family(out, "connections_refused_total", "counter", "Connections refused before their session, by reason.");
    for (int r = 0; r < REFUSED_COUNT; r++)
        metrics_printf(out, "luasmtpd_connections_refused_total{reason=\"%s\"} %llu\n", refusals[r],
                       SUM(refused[r]));
    metrics_family(out, "commands_total", "counter", "SMTP commands received, by command.");
    for (int v = 0; v < SMTP_VERB_COUNT; v++)
        metrics_printf(out, "luasmtpd_commands_total{command=\"%s\"} %llu\n", stage_name(v, tmp, sizeof(tmp)),
                       SUM(commands[v]));
    metrics_family(out, "replies_total", "counter", "SMTP replies sent, by what they answer and their class.");
    for (int st = 0; st < STAGE_COUNT; st++)
        for (int c = 0; c < 4; c++) {
            unsigned long long n = SUM(replies[st][c]);
            if (n)
                metrics_printf(out, "luasmtpd_replies_total{stage=\"%s\",class=\"%s\"} %llu\n",
                               stage_name(st, tmp, sizeof(tmp)), classes[c], n);
        }
    metrics_family(out, "messages_total", "counter", "Messages at their end of data, by outcome.");
    metrics_printf(out, "luasmtpd_messages_total{result=\"accepted\"} %llu\n", SUM(accepted));
    metrics_printf(out, "luasmtpd_messages_total{result=\"refused\"} %llu\n", SUM(refused_messages));
    metrics_family(out, "message_bytes_total", "counter", "Bytes of the messages accepted.");
    metrics_printf(out, "luasmtpd_message_bytes_total %llu\n", SUM(bytes));
    metrics_family(out, "tls_handshakes_total", "counter", "TLS handshakes (STARTTLS and implicit TLS), by result.");
    metrics_printf(out, "luasmtpd_tls_handshakes_total{result=\"ok\"} %llu\n", SUM(tls_ok));
    metrics_printf(out, "luasmtpd_tls_handshakes_total{result=\"failed\"} %llu\n", SUM(tls_failed));
    hooks(out);
    metrics_family(out, "actions_total", "counter", "Actions the scripts ran, by kind and result.");
    for (int k = 0; k < METRICS_ACTIONS; k++)
        for (int r = 0; r < METRICS_RESULTS; r++)
            metrics_printf(out, "luasmtpd_actions_total{kind=\"%s\",result=\"%s\"} %llu\n", action_kinds[k],
                           action_results[r], SUM(actions[k][r]));
    metrics_family(out, "mqtt_connected", "gauge", "Processes connected to the MQTT broker now.");
    metrics_printf(out, "luasmtpd_mqtt_connected %llu\n", SUM(mqtt_connected));
    metrics_family(out, "memory_budget_used_bytes", "gauge",
                   "What the sessions' messages and input hold of --max-memory.");
    metrics_printf(out, "luasmtpd_memory_budget_used_bytes %llu\n", SUM(budget_bytes));
    metrics_family(out, "lua_memory_bytes", "gauge", "Memory held by the scripts' Lua states.");
    metrics_printf(out, "luasmtpd_lua_memory_bytes %llu\n", SUM(lua_bytes));

    unsigned long long rss = 0, fds = 0, procs = 0;
    for (int i = 0; i < nslots; i++) {
        int pid = atomic_load_explicit(&slots[i].pid, memory_order_relaxed);
        procs += pid > 0 && process(pid, &rss, &fds);
    }
    metrics_family(out, "processes", "gauge", "Serving processes (workers with --workers).");
    metrics_printf(out, "luasmtpd_processes %llu\n", procs);
    metrics_family(out, "process_resident_memory_bytes", "gauge", "Resident memory of the serving processes.");
    metrics_printf(out, "luasmtpd_process_resident_memory_bytes %llu\n", rss);
    metrics_family(out, "process_open_fds", "gauge", "Open file descriptors of the serving processes.");
    metrics_printf(out, "luasmtpd_process_open_fds %llu\n", fds);
    if (collect)
        collect(out, collect_ctx);
    script_series(out);
    return failed ? -1 : 0;
}
