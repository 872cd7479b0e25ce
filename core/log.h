/*
 * log: one line per event on stderr, with a timestamp, a level and, for
 * session events, the session id:  "2026-11-21 13:05:01.042 info [6560A1B20003] ...";
 * a worker of --workers adds its number: "info w2 [6560A1B20003] ..."
 * Lines are cut at LOG_LINE_MAX and control characters are escaped, so
 * client-supplied text can never forge a log line.
 */
#ifndef LUASMTPD_LOG_H
#define LUASMTPD_LOG_H

#include <stdbool.h>
#include <stddef.h>

/* LV_, not LOG_: <syslog.h> has LOG_INFO and LOG_DEBUG. */
enum log_level { LV_ERROR, LV_WARN, LV_INFO, LV_DEBUG };

#define LOG_LINE_MAX 2048

extern enum log_level log_threshold;
extern bool log_json;          /* --log-format json */

/* "error" "warn" "info" "debug" -> level; -1 when unknown. */
int  log_level_parse(const char *name);

#if defined(__GNUC__)
#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LOG_PRINTF(a, b)
#endif

/* A word after the level on every line from now on ("w2": worker 2). */
void log_set_tag(const char *tag);
/* sid may be NULL for server-wide events. */
void log_msg(enum log_level level, const char *sid, const char *fmt, ...) LOG_PRINTF(3, 4);

#define log_enabled(level) ((level) <= log_threshold)

/* Copy n bytes of untrusted text into out (size outsz) with control and
 * non-printable bytes shown as \xNN; always NUL-terminates.  Returns out. */
char *log_escape(char *out, size_t outsz, const char *p, size_t n);

#endif
