/* The monotonic clock, for intervals, budgets and deadlines (never the
 * date: that is ev_now() or time()). */
#ifndef LUASMTPD_CLOCK_H
#define LUASMTPD_CLOCK_H

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

#endif
