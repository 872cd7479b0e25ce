/*
 * metrics: the counters GET /metrics shows (core/admin.c), in Prometheus'
 * text format.
 *
 * Each process counts in a slot of its own; the slots are in memory that
 * the workers of --workers share (mapped by the supervisor before it
 * forks), so that whichever worker answers a scrape sums them all.  A slot
 * outlives its worker: a worker started again (or anew by a reload) goes
 * on counting in it, and counters never go back.  Counting is a relaxed
 * atomic add: no lock, no allocation.
 */
#ifndef LUASMTPD_METRICS_H
#define LUASMTPD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "smtp_parse.h"

/* Why a connection was refused before its session began. */
enum metrics_refusal {
    REFUSED_MAX_CLIENTS, REFUSED_PER_IP, REFUSED_RATE, REFUSED_PROXY_FROM, REFUSED_COUNT
};

/* What a reply answers: a command (its verb), or these. */
enum {
    STAGE_GREETING = SMTP_VERB_COUNT,
    STAGE_MESSAGE,                 /* the end of DATA, or BDAT LAST */
    STAGE_COUNT
};

#define METRICS_HOOKS   16          /* hook names the bridge gives */
#define METRICS_ACTIONS 7           /* exec, http, mqtt, save, write, forward, queue */
#define METRICS_RESULTS 4           /* ok, refused, error, timeout */
#define METRICS_SCRIPT_SERIES 256   /* luasmtpd.metric: series in all */
#define METRICS_SCRIPT_KEY    256   /* a series' name and labels */
#define METRICS_BUCKETS 12          /* hook durations, with +Inf */

struct metrics_hook {
    atomic_ullong calls, errors, overruns;
    atomic_ullong le[METRICS_BUCKETS];   /* calls that took at most bucket k */
    atomic_ullong micros;                /* their durations' sum */
};

struct metrics_slot {
    atomic_int    pid;             /* 0: unused */
    atomic_ullong connections, open, refused[REFUSED_COUNT];
    atomic_ullong commands[SMTP_VERB_COUNT];
    atomic_ullong replies[STAGE_COUNT][4];   /* 2xx, 3xx, 4xx, 5xx */
    atomic_ullong accepted, refused_messages, bytes;
    atomic_ullong tls_ok, tls_failed;
    atomic_ullong lua_bytes, mqtt_connected;  /* gauges the bridge keeps */
    atomic_ullong budget_bytes;    /* --max-memory in use (buf.h) */
    struct metrics_hook hooks[METRICS_HOOKS];
    atomic_ullong actions[METRICS_ACTIONS][METRICS_RESULTS];
};

/* This process's slot (a slot of its own until metrics_share()). */
extern struct metrics_slot *metrics;

static inline void metrics_add(atomic_ullong *c, unsigned long long n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline void metrics_set(atomic_ullong *c, unsigned long long v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

/* Before the workers fork: n slots shared by them; 0, or -1 (errno). */
int  metrics_share(int n);
/* In worker i (0 to n-1), or in a server without workers (i = 0). */
void metrics_use(int i);
/* The name of hook index i (< METRICS_HOOKS), set once by the bridge. */
void metrics_hook_name(int i, const char *name);
/* A hook call that took `seconds`, and how it ended. */
void metrics_hook(int i, double seconds, int error, int overrun);

/* An action a script ran ("mqtt"), and how it ended ("ok", "refused":
 * the other side said no, "error", "timeout"). */
void metrics_action(const char *kind, const char *result);
/* buf.h's budget watch: what this process holds of --max-memory. */
void metrics_budget(size_t used);
/* luasmtpd.metric: add value to the series name{labels} (labels rendered,
 * "" for none), shared by the workers: 0, or -1 when METRICS_SCRIPT_SERIES
 * are taken. */
int  metrics_script(const char *name, const char *labels, double value);

/* Scrape-time figures of the whole host (the durable queue, say): the
 * bridge registers one function that appends its lines. */
typedef void (*metrics_collect_fn)(struct buf *out, void *ctx);
void metrics_collector(metrics_collect_fn fn, void *ctx);
/* ctx goes: its collector, if it is the one registered, with it. */
void metrics_collector_gone(void *ctx);
/* The HELP and TYPE lines of family luasmtpd_NAME. */
void metrics_family(struct buf *out, const char *name, const char *type, const char *help);
/* Append a line to a rendering: 0, or -1. */
int  metrics_printf(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The exposition (text format 0.0.4) into out: 0, or -1 out of memory. */
int  metrics_render(struct buf *out);

#endif
