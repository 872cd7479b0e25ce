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

static struct metrics_slot own;            /* before metrics_share(), and for --check */
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
    void *p = mmap(NULL, sizeof(struct metrics_slot) * (size_t)n, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    slots = p;       /* zeroed by the kernel */
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
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || buf_append(out, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0) {
        failed = true;
        return -1;
    }
    return 0;
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
    metrics_family(out, "mqtt_connected", "gauge", "Processes connected to the MQTT broker now.");
    metrics_printf(out, "luasmtpd_mqtt_connected %llu\n", SUM(mqtt_connected));
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
    return failed ? -1 : 0;
}
