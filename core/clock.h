/* The clocks: the monotonic one, for intervals, budgets and deadlines, and
 * the time of day in milliseconds for what the console shows. */
#ifndef LUASMTPD_CLOCK_H
#define LUASMTPD_CLOCK_H

#include <stdbool.h>
#include <time.h>

static inline long long clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline double clock_mono(void)
{
    return (double)clock_mono_ns() / 1e9;
}

/* Milliseconds since 1970; coarse: to a few milliseconds, for a cheaper
 * reading where that is enough (idle times). */
static inline long long clock_wall_ms(bool coarse)
{
    struct timespec ts;
    clock_gettime(coarse ? CLOCK_REALTIME_COARSE : CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
