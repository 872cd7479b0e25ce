#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

enum log_level log_threshold = LV_INFO;
bool log_json;
static char tag[16];           /* "w1 " in a worker */

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

void log_set_tag(const char *t)
{
    snprintf(tag, sizeof(tag), "%s ", t);
}

/* --log-format json: {"time":...,"level":...,"worker":...,"session":...,"msg":...} */
static void write_json(const struct timeval *tv, const struct tm *tm, enum log_level level, const char *sid,
                       const char *msg)
{
    char line[LOG_LINE_MAX * 2], when[64], zone[8];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", tm);
    strftime(zone, sizeof(zone), "%z", tm);   /* +0100, written +01:00 */
    size_t n = (size_t)snprintf(line, sizeof(line), "{\"time\":\"%s.%03d%.3s:%s\",\"level\":\"%s\"", when,
                                (int)(tv->tv_usec / 1000), zone, zone[0] ? zone + 3 : "", level_names[level]);
    if (tag[0])
        n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"worker\":\"%.*s\"", (int)strlen(tag) - 1, tag);
    if (sid)
        n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"session\":\"%s\"", sid);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ",\"msg\":\"");
    n += json_text(line + n, sizeof(line) - n - 3, msg, strlen(msg));
    memcpy(line + n, "\"}\n", 3);
    ssize_t w = write(STDERR_FILENO, line, n + 3);
    (void)w;
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
    if (log_json) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        write_json(&tv, &tm, level, sid, line);
        return;
    }
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
