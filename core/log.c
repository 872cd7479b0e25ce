#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LV_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int log_level_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

char *log_escape(char *out, size_t outsz, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (outsz == 0)
        return out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 32 && c != 127 && c != '\\') {
            if (o + 1 >= outsz)
                break;
            out[o++] = (char)c;
        } else {
            if (o + 4 >= outsz)
                break;
            out[o++] = '\\';
            if (c == '\\') {
                out[o++] = '\\';
            } else {
                out[o++] = 'x';
                out[o++] = hex[c >> 4];
                out[o++] = hex[c & 15];
            }
        }
    }
    out[o] = '\0';
    return out;
}

static char tag[16];

void log_set_tag(const char *t)
{
    snprintf(tag, sizeof(tag), "%s ", t);
}

void log_msg(enum log_level level, const char *sid, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;

    char line[LOG_LINE_MAX];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
    int k = snprintf(line + n, sizeof(line) - n, ".%03d %s %s%s%s%s", (int)(tv.tv_usec / 1000),
                     level_names[level], tag, sid ? "[" : "", sid ? sid : "", sid ? "] " : "");
    if (k > 0)
        n += (size_t)k < sizeof(line) - n ? (size_t)k : sizeof(line) - n - 1;

    va_list ap;
    va_start(ap, fmt);
    k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (k > 0)
        n += (size_t)k < sizeof(line) - n ? (size_t)k : sizeof(line) - n - 1;
    line[n++] = '\n';
    /* One write per line: lines from concurrent processes do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
