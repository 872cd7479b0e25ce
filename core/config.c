#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

enum opt_type {
    OPT_BOOL, OPT_INT, OPT_SIZE, OPT_SECONDS, OPT_MILLIS, OPT_LISTEN, OPT_HOSTNAME, OPT_ID,
    OPT_LOGLEVEL, OPT_LOGFORMAT, OPT_TEXT,   /* OPT_TEXT: a string of at most `max` bytes at offset */
    OPT_DOMAIN, OPT_AUTH_METHODS, OPT_WORKERS,   /* OPT_WORKERS: OPT_INT or "auto" */
    OPT_SECONDS_PAIR,          /* "MIN,MAX": two OPT_SECONDS, the first at offset */
    OPT_PROXY, OPT_CIDRS,      /* --proxy-protocol, --proxy-from */
    OPT_HTTP,                  /* --http [ADDR:]PORT */
    OPT_TLS_FILE,              /* --tls-cert (offset 0), --tls-key (1), --tls-names (2): appended */
};

struct option_def {
    const char   *name;
    enum opt_type type;
    size_t        offset;
    long long     min, max;
    const char   *arg;
    const char   *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct option_def options[] = {
    { "listen", OPT_LISTEN, 0, 0, 0, "ADDR:PORT",
      "listen on this address; repeatable; IPv6 in brackets ([::1]:2525)\n"
      "default 127.0.0.1:2525 (loopback: open it up on purpose) unless\n"
      "--listen-tls is given" },
    { "listen-tls", OPT_LISTEN, 1, 0, 0, "ADDR:PORT",
      "listen for implicit TLS (SMTPS, RFC 8314; port 465 by convention);\n"
      "repeatable; needs --tls-cert" },
    { "proxy-protocol", OPT_PROXY, 0, 0, 0, "ADDR:PORT|*",
      "the listener at ADDR:PORT (of --listen or --listen-tls; * for all) takes\n"
      "HAProxy's PROXY header (v1 or v2) before the client speaks: hooks and logs\n"
      "see the client's address; a connection without a valid header is closed;\n"
      "repeatable" },
    { "proxy-from", OPT_CIDRS, OFF(proxy_from), 0, 0, "CIDR,...",
      "the proxies allowed to send a PROXY header (10.0.0.0/8, 2001:db8::1); others\n"
      "are refused and logged; repeatable (default loopback: 127.0.0.0/8, ::1)" },
    { "http", OPT_HTTP, 0, 0, 0, "[ADDR:]PORT",
      "serve the console over HTTP here: a page, /api/ and /metrics (Prometheus);\n"
      "a port alone binds 127.0.0.1; off by default (docs/console.md)" },
    { "keep", OPT_INT, OFF(keep), 0, 100000, "N",
      "--http keeps the last N messages, with their traces, in memory\n"
      "(default 200; 0 keeps none)" },
    { "keep-bytes", OPT_SIZE, OFF(keep_bytes), 1LL << 20, 1LL << 34, "BYTES",
      "at most this much memory for them: the oldest go first (default 64M)" },
    { "http-token", OPT_TEXT, OFF(http_token), 1, CONFIG_TEXT_MAX, "TOKEN",
      "--http asks for Authorization: Bearer TOKEN" },
    { "http-user", OPT_TEXT, OFF(http_user), 1, CONFIG_TEXT_MAX, "NAME",
      "--http asks for HTTP Basic with this user and --http-password; without\n"
      "a token or a user, only loopback clients may connect" },
    { "http-password", OPT_TEXT, OFF(http_password), 1, CONFIG_TEXT_MAX, "PASSWORD",
      "the password of --http-user" },
    { "hostname", OPT_HOSTNAME, 0, 0, 0, "NAME",
      "name in the greeting and EHLO reply; default the machine's name" },
    { "banner", OPT_TEXT, OFF(banner), 0, CONFIG_BANNER_MAX, "TEXT",
      "greeting text after the hostname (default \"ESMTP luasmtpd\")" },
    { "description", OPT_TEXT, OFF(description), 0, CONFIG_TEXT_MAX, "TEXT",
      "free text about this server, shown by --check" },
    { "domain", OPT_DOMAIN, 0, 0, 0, "NAME",
      "take mail for this domain only (repeatable; config.domains = {...});\n"
      "RCPT to others gets 550 5.7.1 unless authenticated; * takes every\n"
      "domain (the default); the first is the server's own" },
    { "pipelining", OPT_BOOL, OFF(pipelining), 0, 1, NULL,
      "advertise PIPELINING (default on; --no-pipelining turns it off)" },
    { "max-clients", OPT_INT, OFF(max_clients), 1, 100000, "N",
      "concurrent connections; one more is answered 421 and closed (default 100)" },
    { "max-size", OPT_SIZE, OFF(max_size), 1024, 1LL << 30, "BYTES",
      "largest message, advertised with SIZE; K, M, G suffixes (default 10M)" },
    { "max-memory", OPT_SIZE, OFF(max_memory), 1LL << 20, 1LL << 40, "BYTES",
      "memory all sessions' messages and input may hold together (split evenly\n"
      "among --workers); a message that would pass it gets 452 4.3.1, at MAIL when\n"
      "its SIZE= says so, else at its end, read and dropped (default 256M)" },
    { "max-clients-per-ip", OPT_INT, OFF(max_clients_per_ip), 0, 100000, "N",
      "connections open from one client (an IPv4 address, an IPv6 /64); one more\n"
      "is answered 421 4.7.0 and closed; 0 = no limit (default 10)" },
    { "connect-rate", OPT_INT, OFF(connect_rate), 0, 1000000, "N",
      "connections one client may open a minute (a burst of N, then N a minute);\n"
      "past it 421 4.7.0; 0 = no limit (default 600)" },
    { "max-bad-clients", OPT_INT, OFF(max_bad_clients), 0, 1000, "N",
      "a client whose sessions were closed for errors (--max-errors,\n"
      "--max-junk-commands, --max-auth-failures) N times in 10 minutes waits\n"
      "before its greeting: 5s, 5s more each time after, 30s at most; 0 = never\n"
      "(default 3)" },
    { "client-ipv6-prefix", OPT_INT, OFF(client_ipv6_prefix), 16, 128, "BITS",
      "the IPv6 prefix that is one client for the limits above (default 64)" },
    { "client-limit-exceptions", OPT_CIDRS, OFF(client_exceptions), 0, 0, "CIDR,...",
      "clients the per-client limits leave alone (default loopback: 127.0.0.0/8,\n"
      "::1; \"\" for none); repeatable" },
    { "max-recipients", OPT_INT, OFF(max_recipients), 1, 100000, "N",
      "recipients per message; the next RCPT gets 452 (default 100)" },
    { "max-messages", OPT_INT, OFF(max_messages), 0, 1000000, "N",
      "messages per connection, then 421 and close; 0 = no limit (default 0)" },
    { "max-errors", OPT_INT, OFF(max_errors), 1, 1000, "N",
      "bad commands per connection before 421 and close (default 10)" },
    { "max-junk-commands", OPT_INT, OFF(max_junk_commands), 0, 1000000, "N",
      "NOOP, RSET, VRFY, EXPN and HELP outside a transaction per connection\n"
      "(counted anew after each message); past it each counts as an error;\n"
      "0 = no limit (default 100)" },
    { "timeout", OPT_SECONDS, OFF(timeout), 1, 86400, "SECONDS",
      "idle time allowed between complete lines, then 421 (default 300)" },
    { "session-timeout", OPT_SECONDS, OFF(session_timeout), 0, 86400 * 7, "SECONDS",
      "longest connection, then 421; 0 = no limit (default 0)" },
    { "workers", OPT_WORKERS, OFF(workers), 1, 64, "N|auto",
      "processes serving the listeners together (SO_REUSEPORT), each with\n"
      "its own loop and script state, under a supervisor that restarts one\n"
      "that dies (it starts new workers on SIGHUP); auto = one per core\n"
      "(default 1: no supervisor)" },
    { "grace", OPT_SECONDS, OFF(grace), 0, 3600, "SECONDS",
      "on SIGTERM/SIGINT, time given to messages in progress (default 30);\n"
      "SIGHUP (or --reload) loads the script anew, sessions in progress\n"
      "finishing on the old one" },
    { "user", OPT_TEXT, OFF(user), 1, CONFIG_NAME_MAX, "NAME",
      "once the listeners are bound and the TLS key read, run as this user\n"
      "(its uid and group; supplementary groups cleared); default: stay" },
    { "group", OPT_TEXT, OFF(group), 1, CONFIG_NAME_MAX, "NAME",
      "with --user (or alone), this group instead of the user's" },
    { "pid-file", OPT_TEXT, OFF(pid_file), 1, CONFIG_PATH_MAX, "FILE",
      "write the server's pid there while it runs (the supervisor's with\n"
      "--workers); --reload reads it" },
    { "hook-timeout", OPT_MILLIS, OFF(hook_timeout_ms), 1, 600000, "SECONDS",
      "running time each hook call may use (waits excluded), then 451;\n"
      "decimals allowed (default 1)" },
    { "hook-kill", OPT_MILLIS, OFF(hook_kill_ms), 0, 86400000, "SECONDS",
      "when the event loop is held this long in one go (a script stuck in a C\n"
      "function, say), log what held it and start the process again; 0 = 10x\n"
      "--hook-timeout, at least 5 (default 0)" },
    { "lua-memory", OPT_SIZE, OFF(lua_memory), 1LL << 20, 1LL << 34, "BYTES",
      "memory the script's Lua state may hold; a hook past it gets 451 (default 64M)" },
    { "hook-memory", OPT_SIZE, OFF(hook_memory), 0, 1LL << 34, "BYTES",
      "of that, what one hook call may take (allocated while it runs, less\n"
      "what is freed meanwhile); past it that call gets 451; 0 = half\n"
      "of --lua-memory (default 0)" },
    { "id", OPT_ID, 0, 0, 0, "NAME",
      "the server's name (HSYCO's I/O server id): IOEvent gets each mail as\n"
      "NAME.mail; hooks see session.server_id (default smtp)" },
    { "body-lines", OPT_INT, OFF(body_lines), 0, 100000, "N",
      "lines of the text body in mail.body and the HSYCO event (default 64)" },
    { "lua-debug", OPT_BOOL, OFF(lua_debug), 0, 1, NULL,
      "the whole debug library for scripts (by default only debug.traceback);\n"
      "on the command line only" },
    { "rawbody", OPT_BOOL, OFF(rawbody), 0, 1, NULL,
      "mail.body from the body as received, not the decoded text part" },
    { "tls-cert", OPT_TLS_FILE, 0, 0, 0, "FILE",
      "PEM certificate, or a chain with the server's first; turns on STARTTLS;\n"
      "repeatable: the client's SNI name picks the certificate whose names\n"
      "(subjectAltName, else CN) match, the first by default" },
    { "tls-key", OPT_TLS_FILE, 1, 0, 0, "FILE",
      "PEM private key of the --tls-cert in the same place (default: read from\n"
      "that certificate's file); repeatable" },
    { "tls-names", OPT_TLS_FILE, 2, 0, 0, "LIST",
      "the names (comma-separated, *.domain for any one label) the --tls-cert\n"
      "in the same place serves to SNI, instead of the certificate's own;\n"
      "repeatable" },
    { "tls-ciphers", OPT_TEXT, OFF(tls_ciphers), 1, CONFIG_TEXT_MAX, "LIST",
      "OpenSSL cipher list for TLS 1.2 and older (default HIGH:!aNULL:!MD5:!RC4);\n"
      "TLS 1.3 uses OpenSSL's suites" },
    { "tls-min-version", OPT_TEXT, OFF(tls_min_version), 3, 3, "1.0|1.1|1.2|1.3",
      "the oldest TLS version taken (default 1.2); 1.0 and 1.1 are for old\n"
      "printers and scanners, with OpenSSL's security level lowered for\n"
      "those connections only (docs/tls.md)" },
    { "tls-client-ca", OPT_TEXT, OFF(tls_client_ca), 0, CONFIG_PATH_MAX, "FILE",
      "CA certificates that client certificates are checked against\n"
      "(session.tls_client_verified); without it none verifies" },
    { "tls-timeout", OPT_SECONDS, OFF(tls_timeout), 1, 3600, "SECONDS",
      "time a TLS handshake may take, then the connection closes (default 30)" },
    { "tls-keep-buffers", OPT_BOOL, OFF(tls_keep_buffers), 0, 1, NULL,
      "keep each TLS connection's record buffers while it is idle (more\n"
      "memory a connection, no allocation a read; docs/performance.md)" },
    { "require-tls", OPT_BOOL, OFF(require_tls), 0, 1, NULL,
      "MAIL before STARTTLS gets 530 5.7.0" },
    { "require-auth", OPT_BOOL, OFF(require_auth), 0, 1, NULL,
      "MAIL before a successful AUTH gets 530 5.7.0 (the script needs on_auth)" },
    { "allow-insecure-auth", OPT_BOOL, OFF(allow_insecure_auth), 0, 1, NULL,
      "offer AUTH without TLS too (passwords then cross the network in clear)" },
    { "auth-methods", OPT_AUTH_METHODS, 0, 0, 0, "LIST",
      "SASL mechanisms offered and taken, comma-separated (default PLAIN,LOGIN)" },
    { "max-auth-failures", OPT_INT, OFF(max_auth_failures), 1, 1000, "N",
      "failed AUTH attempts per connection, then 421 and close (default 3)" },
    { "max-auth-rate", OPT_INT, OFF(max_auth_rate), 0, 1000000, "N",
      "failed AUTH attempts per client address and hour across its\n"
      "connections, then AUTH gets 421 until the hour is over; counted by\n"
      "each worker; 0 = no limit (default 60)" },
    { "mqtt-host", OPT_TEXT, OFF(mqtt_host), 0, CONFIG_HOSTNAME_MAX, "HOST",
      "MQTT broker for luasmtpd.mqtt.publish (none by default); a script\n"
      "may give these as config.mqtt = {host = ..., port = ...}" },
    { "mqtt-port", OPT_INT, OFF(mqtt_port), 1, 65535, "PORT",
      "the broker's port (default 1883, 8883 with --mqtt-tls)" },
    { "mqtt-client-id", OPT_TEXT, OFF(mqtt_client_id), 0, CONFIG_MQTT_ID_MAX, "ID",
      "MQTT client id (default luasmtpd-ID-PID)" },
    { "mqtt-user", OPT_TEXT, OFF(mqtt_user), 0, CONFIG_TEXT_MAX, "NAME",
      "user name for the broker" },
    { "mqtt-password", OPT_TEXT, OFF(mqtt_password), 0, CONFIG_TEXT_MAX, "TEXT",
      "password for the broker (better in the script's config than on a command line)" },
    { "mqtt-tls", OPT_BOOL, OFF(mqtt_tls), 0, 1, NULL,
      "connect to the broker over TLS, checking its certificate" },
    { "mqtt-tls-ca", OPT_TEXT, OFF(mqtt_tls_ca), 0, CONFIG_PATH_MAX, "FILE",
      "CA certificates the broker's certificate is checked against (implies\n"
      "--mqtt-tls; default the system's)" },
    { "mqtt-keepalive", OPT_SECONDS, OFF(mqtt_keepalive), 5, 65535, "SECONDS",
      "MQTT keepalive interval (default 60)" },
    { "mqtt-queue", OPT_INT, OFF(mqtt_queue), 0, 1000000, "N",
      "messages held while the broker is unreachable (default 1000); past\n"
      "it publish returns an error" },
    { "state-dir", OPT_TEXT, OFF(state_dir), 1, CONFIG_PATH_MAX, "DIR",
      "the state database (luasmtpd.store, luasmtpd.queue); default\n"
      "$STATE_DIRECTORY when systemd sets it, else ./luasmtpd-state" },
    { "queue-max", OPT_INT, OFF(queue_max), 1, 100000000, "N",
      "jobs held in the queue; past it queue() fails (default 100000)" },
    { "queue-max-bytes", OPT_SIZE, OFF(queue_max_bytes), 1024, 1LL << 40, "BYTES",
      "bytes of messages and payloads held in the queue (default 1G)" },
    { "queue-concurrency", OPT_INT, OFF(queue_concurrency), 1, 1000, "N",
      "jobs delivered at once (default 10)" },
    { "queue-retry", OPT_SECONDS_PAIR, OFF(queue_retry), 1, 31536000, "MIN,MAX",
      "wait before the first retry, doubling up to MAX; s, m, h, d\n"
      "suffixes (default 1m,1h)" },
    { "queue-lifetime", OPT_SECONDS, OFF(queue_lifetime), 1, 31536000, "SECONDS",
      "how long a job is retried before it is dead; s, m, h, d suffixes\n"
      "(default 5d)" },
    { "log-level", OPT_LOGLEVEL, 0, 0, 0, "LEVEL",
      "error, warn, info or debug (default info); debug shows the whole\n"
      "dialogue, each command and reply" },
    { "log-format", OPT_LOGFORMAT, 0, 0, 0, "FORMAT",
      "text (default) or json: one JSON object per line (time, level,\n"
      "worker, session, msg), for journald, Loki or ELK" },
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_clients = 100;
    cfg->keep = 200;
    cfg->keep_bytes = 64LL << 20;
    cfg->max_clients_per_ip = 10;
    cfg->connect_rate = 600;
    cfg->client_ipv6_prefix = 64;
    cfg->max_bad_clients = 3;
    cfg->workers = 1;
    cfg->max_size = 10LL << 20;
    cfg->max_memory = 256LL << 20;
    cfg->max_recipients = 100;
    cfg->max_messages = 0;
    cfg->max_errors = 10;
    cfg->timeout = 300;
    cfg->session_timeout = 0;
    cfg->grace = 30;
    cfg->hook_timeout_ms = 1000;
    cfg->lua_memory = 64LL << 20;
    cfg->body_lines = 64;
    strcpy(cfg->id, "smtp");
    strcpy(cfg->tls_ciphers, "HIGH:!aNULL:!MD5:!RC4");
    strcpy(cfg->tls_min_version, "1.2");
    cfg->tls_timeout = 30;
    cfg->max_auth_failures = 3;
    cfg->max_junk_commands = 100;
    cfg->max_auth_rate = 60;
    cfg->pipelining = 1;
    cfg->auth_methods = CONFIG_AUTH_PLAIN | CONFIG_AUTH_LOGIN;
    cfg->mqtt_keepalive = 60;
    cfg->mqtt_queue = 1000;
    cfg->queue_max = 100000;
    cfg->queue_max_bytes = 1LL << 30;
    cfg->queue_concurrency = 10;
    cfg->queue_retry[0] = 60;
    cfg->queue_retry[1] = 3600;
    cfg->queue_lifetime = 5 * 86400;
    snprintf(cfg->banner, sizeof(cfg->banner), "ESMTP %s", CONFIG_SOFTWARE);
    cfg->log_level = LV_INFO;
}

/* Other names of options, as `config` keys read best. */
static const char *const aliases[][2] = {
    { "domains", "domain" },
};

static const struct option_def *find_option(const char *name)
{
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
        if (strcmp(aliases[i][0], name) == 0)
            name = aliases[i][1];
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

const char *config_option_name(const char *name)
{
    const struct option_def *o = find_option(name);
    return o ? o->name : NULL;
}

enum config_list config_option_list(const char *name)
{
    const struct option_def *o = find_option(name);
    if (o && (o->type == OPT_LISTEN || o->type == OPT_DOMAIN || o->type == OPT_PROXY || o->type == OPT_CIDRS ||
              o->type == OPT_TLS_FILE))
        return CONFIG_LIST_REPEAT;
    return o && o->type == OPT_AUTH_METHODS ? CONFIG_LIST_COMMA : CONFIG_LIST_NONE;
}

/* A domain as RCPT paths carry it: labels of letters, digits and hyphens
 * (UTF-8 allowed), or an address literal in brackets. */
static bool valid_domain(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONFIG_HOSTNAME_MAX)
        return false;
    if (s[0] == '[')
        return n > 2 && s[n - 1] == ']';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c >= 0x80 || c == '-' || c == '.' || (c >= '0' && c <= '9') ||
              ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')))
            return false;
    }
    return s[0] != '.' && s[n - 1] != '.' && strstr(s, "..") == NULL;
}

bool config_domain_accepted(const struct config *cfg, const char *domain, size_t len)
{
    if (cfg->any_domain || cfg->ndomains == 0)
        return true;
    for (int i = 0; i < cfg->ndomains; i++)
        if (strlen(cfg->domains[i]) == len && strncasecmp(cfg->domains[i], domain, len) == 0)
            return true;
    return false;
}

static int parse_auth_methods(const char *value, long long *out, char *err)
{
    long long mask = 0;
    const char *p = value;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 5 && strncasecmp(p, "PLAIN", 5) == 0) {
            mask |= CONFIG_AUTH_PLAIN;
        } else if (n == 5 && strncasecmp(p, "LOGIN", 5) == 0) {
            mask |= CONFIG_AUTH_LOGIN;
        } else {
            snprintf(err, CONFIG_ERR_MAX, "--auth-methods: '%.*s' is not PLAIN or LOGIN", (int)n, p);
            return -1;
        }
        p += n + (p[n] == ',');
    }
    if (mask == 0) {
        snprintf(err, CONFIG_ERR_MAX, "--auth-methods: name PLAIN, LOGIN or both");
        return -1;
    }
    *out = mask;
    return 0;
}

int config_takes_value(const char *name)
{
    const struct option_def *o = find_option(name);
    return o == NULL ? -1 : o->type != OPT_BOOL;
}

static int parse_bool(const struct option_def *o, const char *value, long long *out, char *err)
{
    static const char *const yes[] = { "true", "yes", "on", "1" }, *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
            *out = strcasecmp(value, yes[i]) == 0;
            return 0;
        }
    }
    snprintf(err, CONFIG_ERR_MAX, "--%s: '%s' is not true or false", o->name, value);
    return -1;
}

static int parse_number(const struct option_def *o, const char *value, long long *out, char *err)
{
    char *end;
    errno = 0;
    if (o->type == OPT_MILLIS) {
        double d = strtod(value, &end);
        if (end == value || *end != '\0' || errno != 0 || !(d >= 0))
            goto bad;
        if (d * 1000 < (double)o->min || d * 1000 > (double)o->max) {
            snprintf(err, CONFIG_ERR_MAX, "--%s: %s is out of range (%g to %g)", o->name, value,
                     (double)o->min / 1000, (double)o->max / 1000);
            return -1;
        }
        *out = (long long)(d * 1000 + 0.5);
        return 0;
    }
    long long v = strtoll(value, &end, 10);
    if (end == value || errno != 0 || v < 0)
        goto bad;
    if (o->type == OPT_SECONDS && *end != '\0' && end[1] == '\0') {
        long long unit = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : *end == 'd' ? 86400 : 0;
        if (unit == 0)
            goto bad;
        end++;
        if (v > LLONG_MAX / unit)
            goto range;
        v *= unit;
    }
    if (o->type == OPT_SIZE && *end != '\0') {
        int shift = 0;
        switch (*end) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: goto bad;
        }
        end++;
        if (v > (LLONG_MAX >> shift))
            goto range;
        v <<= shift;
    }
    if (*end != '\0')
        goto bad;
    if (v < o->min || v > o->max)
        goto range;
    *out = v;
    return 0;
bad:
    snprintf(err, CONFIG_ERR_MAX, "--%s: '%s' is not a %s", o->name, value,
             o->type == OPT_SIZE ? "size (e.g. 10485760 or 10M)"
             : o->type == OPT_MILLIS ? "number of seconds"
             : o->type == OPT_SECONDS ? "number of seconds (or 90s, 5m, 2h, 5d)" : "whole number");
    return -1;
range:
    snprintf(err, CONFIG_ERR_MAX, "--%s: %s is out of range (%lld to %lld)", o->name, value,
             o->min, o->max);
    return -1;
}

/* "MIN,MAX": two durations, MIN at most MAX. */
static int set_seconds_pair(struct config *cfg, const struct option_def *o, const char *value, char *err)
{
    struct option_def one = *o;
    char first[64];
    const char *comma = strchr(value, ',');
    long long v[2];
    one.type = OPT_SECONDS;
    if (comma == NULL || (size_t)(comma - value) >= sizeof(first)) {
        snprintf(err, CONFIG_ERR_MAX, "--%s: '%s' is not MIN,MAX (e.g. 1m,1h)", o->name, value);
        return -1;
    }
    memcpy(first, value, (size_t)(comma - value));
    first[comma - value] = '\0';
    if (parse_number(&one, first, &v[0], err) < 0 || parse_number(&one, comma + 1, &v[1], err) < 0)
        return -1;
    if (v[0] > v[1]) {
        snprintf(err, CONFIG_ERR_MAX, "--%s: '%s': MIN is more than MAX", o->name, value);
        return -1;
    }
    memcpy((char *)cfg + o->offset, v, sizeof(v));
    return 0;
}

static int valid_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONFIG_HOSTNAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 127)
            return 0;
    return 1;
}

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CONFIG_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("_-.", s[i])))
            return 0;
    return 1;
}

static int set_listen(struct config *cfg, const struct option_def *o, const char *value, char *err)
{
    char nerr[NET_ERR_MAX];
    if (cfg->nlisten == CONFIG_LISTEN_MAX) {
        snprintf(err, CONFIG_ERR_MAX, "--%s: at most %d listeners in all", o->name,
                 CONFIG_LISTEN_MAX);
        return -1;
    }
    if (net_parse_addr(value, &cfg->listen[cfg->nlisten], nerr) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "--%s: %s", o->name, nerr);
        return -1;
    }
    cfg->listen_tls[cfg->nlisten++] = o->offset == 1;   /* offset: 1 for implicit TLS */
    return 0;
}

static int set_proxy(struct config *cfg, const char *value, char *err)
{
    char nerr[NET_ERR_MAX];
    if (strcmp(value, "*") == 0) {
        cfg->proxy_all = true;
        return 0;
    }
    if (cfg->nproxy_listen == CONFIG_LISTEN_MAX) {
        snprintf(err, CONFIG_ERR_MAX, "--proxy-protocol: at most %d listeners", CONFIG_LISTEN_MAX);
        return -1;
    }
    if (net_parse_addr(value, &cfg->proxy_listen[cfg->nproxy_listen], nerr) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "--proxy-protocol: %s", nerr);
        return -1;
    }
    cfg->nproxy_listen++;
    return 0;
}

bool config_cidrs_match(const struct config_cidrs *c, const struct net_addr *a)
{
    for (int i = 0; i < c->n; i++)
        if (net_cidr_match(&c->v[i], a))
            return true;
    return false;
}

/* "10.0.0.0/8,192.0.2.7": each network is added to the list at the
 * option's offset. */
static int set_cidrs(struct config *cfg, const struct option_def *o, const char *value, char *err)
{
    struct config_cidrs *c = (struct config_cidrs *)((char *)cfg + o->offset);
    char nerr[NET_ERR_MAX], one[NET_ADDRSTR_MAX + 8];
    c->set = true;
    for (const char *p = value; *p;) {
        size_t n = strcspn(p, ", ");
        if (n >= sizeof(one)) {
            snprintf(err, CONFIG_ERR_MAX, "--%s: '%.*s' is too long", o->name, (int)n, p);
            return -1;
        }
        if (n > 0) {
            memcpy(one, p, n);
            one[n] = '\0';
            if (c->n == CONFIG_CIDRS_MAX) {
                snprintf(err, CONFIG_ERR_MAX, "--%s: at most %d networks", o->name, CONFIG_CIDRS_MAX);
                return -1;
            }
            if (net_parse_cidr(one, &c->v[c->n], nerr) < 0) {
                snprintf(err, CONFIG_ERR_MAX, "--%s: %s", o->name, nerr);
                return -1;
            }
            c->n++;
        }
        p += n;
        p += strspn(p, ", ");
    }
    return 0;
}

/* --tls-names: host names, each maybe "*." and a domain. */
static int check_tls_names(const char *value, char *err)
{
    for (const char *p = value; *p;) {
        char name[CONFIG_HOSTNAME_MAX + 3];
        size_t n = strcspn(p, ",");
        snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) - 1 ? n : sizeof(name) - 1), p);
        const char *domain = strncmp(name, "*.", 2) == 0 ? name + 2 : name;
        if (n >= sizeof(name) - 1 || name[0] == '[' || !valid_domain(domain)) {
            snprintf(err, CONFIG_ERR_MAX, "--tls-names: '%.*s' is not a host name (or *.domain)", (int)n, p);
            return -1;
        }
        p += n + (p[n] == ',');
    }
    return 0;
}

static int set_tls_file(struct config *cfg, const struct option_def *o, const char *value, char *err)
{
    int *n = o->offset == 2 ? &cfg->ntls_names : o->offset ? &cfg->ntls_keys : &cfg->ntls_certs;
    char (*files)[CONFIG_PATH_MAX + 1] = o->offset == 2 ? cfg->tls_names : o->offset ? cfg->tls_keys : cfg->tls_certs;
    if (o->offset == 2 && check_tls_names(value, err) < 0)
        return -1;
    if (*n == CONFIG_CERTS_MAX) {
        snprintf(err, CONFIG_ERR_MAX, "--%s: at most %d", o->name, CONFIG_CERTS_MAX);
        return -1;
    }
    if (strlen(value) > CONFIG_PATH_MAX) {
        snprintf(err, CONFIG_ERR_MAX, "--%s: a path of at most %d bytes", o->name, CONFIG_PATH_MAX);
        return -1;
    }
    strcpy(files[(*n)++], value);
    return 0;
}

static int set_text(struct config *cfg, const struct option_def *o, const char *value, char *err)
{
    size_t n = strlen(value);
    if (n < (size_t)o->min || n > (size_t)o->max) {
        snprintf(err, CONFIG_ERR_MAX, "--%s: must be %lld to %lld bytes long", o->name, o->min,
                 o->max);
        return -1;
    }
    memcpy((char *)cfg + o->offset, value, n + 1);
    return 0;
}

static int set_domain(struct config *cfg, const char *value, char *err)
{
    if (strcmp(value, "*") == 0) {
        cfg->any_domain = true;
        return 0;
    }
    if (!valid_domain(value)) {
        snprintf(err, CONFIG_ERR_MAX, "--domain: '%s' is not a domain name", value);
        return -1;
    }
    if (cfg->ndomains == CONFIG_DOMAINS_MAX) {
        snprintf(err, CONFIG_ERR_MAX, "--domain: at most %d domains", CONFIG_DOMAINS_MAX);
        return -1;
    }
    for (char *d = strcpy(cfg->domains[cfg->ndomains++], value); *d; d++)
        *d = (char)((*d >= 'A' && *d <= 'Z') ? *d + 32 : *d);
    return 0;
}

int config_set(struct config *cfg, const char *name, const char *value, char *err)
{
    const struct option_def *o = find_option(name);

    if (o == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "unknown option --%s (see --help)", name);
        return -1;
    }
    switch (o->type) {
    case OPT_BOOL:
        return parse_bool(o, value, (long long *)((char *)cfg + o->offset), err);
    case OPT_WORKERS:
        if (strcmp(value, "auto") == 0) {
            long cores = sysconf(_SC_NPROCESSORS_ONLN);
            *(long long *)((char *)cfg + o->offset) = cores < o->min   ? o->min
                                                      : cores > o->max ? o->max
                                                                       : cores;
            return 0;
        }
        /* fall through */
    case OPT_INT:
    case OPT_SIZE:
    case OPT_SECONDS:
    case OPT_MILLIS:
        return parse_number(o, value, (long long *)((char *)cfg + o->offset), err);
    case OPT_SECONDS_PAIR:
        return set_seconds_pair(cfg, o, value, err);
    case OPT_LISTEN:
        return set_listen(cfg, o, value, err);
    case OPT_TEXT:
        return set_text(cfg, o, value, err);
    case OPT_HOSTNAME:
        if (!valid_hostname(value)) {
            snprintf(err, CONFIG_ERR_MAX,
                     "--hostname: '%s' must be 1 to %d printable characters without spaces",
                     value, CONFIG_HOSTNAME_MAX);
            return -1;
        }
        strcpy(cfg->hostname, value);
        return 0;
    case OPT_ID:
        if (!valid_id(value)) {
            snprintf(err, CONFIG_ERR_MAX,
                     "--id: '%s' must be 1 to %d letters, digits, '_', '-' or '.'", value,
                     CONFIG_ID_MAX);
            return -1;
        }
        strcpy(cfg->id, value);
        return 0;
    case OPT_DOMAIN:
        return set_domain(cfg, value, err);
    case OPT_PROXY:
        return set_proxy(cfg, value, err);
    case OPT_HTTP: {
        char addr[CONFIG_TEXT_MAX + 16], nerr[NET_ERR_MAX];
        bool port_only = value[0] && strspn(value, "0123456789") == strlen(value);
        snprintf(addr, sizeof(addr), "%s%.*s", port_only ? "127.0.0.1:" : "", CONFIG_TEXT_MAX, value);
        if (net_parse_addr(addr, &cfg->http, nerr) < 0) {
            snprintf(err, CONFIG_ERR_MAX, "--http: %s", nerr);
            return -1;
        }
        cfg->http_on = true;
        return 0;
    }
    case OPT_CIDRS:
        return set_cidrs(cfg, o, value, err);
    case OPT_TLS_FILE:
        return set_tls_file(cfg, o, value, err);
    case OPT_AUTH_METHODS:
        return parse_auth_methods(value, &cfg->auth_methods, err);
    case OPT_LOGFORMAT:
        if (strcmp(value, "text") != 0 && strcmp(value, "json") != 0) {
            snprintf(err, CONFIG_ERR_MAX, "--log-format: '%s' is not text or json", value);
            return -1;
        }
        cfg->log_json = strcmp(value, "json") == 0;
        return 0;
    case OPT_LOGLEVEL: {
        int l = log_level_parse(value);
        if (l < 0) {
            snprintf(err, CONFIG_ERR_MAX, "--log-level: '%s' is not error, warn, info or debug", value);
            return -1;
        }
        cfg->log_level = l;
        return 0;
    }
    }
    return -1;
}

int config_finish(struct config *cfg, char *err)
{
    char nerr[NET_ERR_MAX];
    bool tls = cfg->ntls_certs > 0;
    if (cfg->ntls_keys > cfg->ntls_certs || cfg->ntls_names > cfg->ntls_certs) {
        bool keys = cfg->ntls_keys > cfg->ntls_certs;
        snprintf(err, CONFIG_ERR_MAX, "--tls-%s: %d %s for %d certificates (--tls-cert)", keys ? "key" : "names",
                 keys ? cfg->ntls_keys : cfg->ntls_names, keys ? "keys" : "name lists", cfg->ntls_certs);
        return -1;
    }
    const char *needs_cert = NULL;

    for (int i = 0; i < cfg->nlisten; i++)
        if (cfg->listen_tls[i])
            needs_cert = "--listen-tls";
    if (cfg->require_tls)
        needs_cert = "--require-tls";
    if (cfg->ntls_keys || cfg->ntls_names || cfg->tls_client_ca[0])
        needs_cert = cfg->ntls_keys ? "--tls-key" : cfg->ntls_names ? "--tls-names" : "--tls-client-ca";
    if (strcmp(cfg->tls_min_version, "1.0") != 0 && strcmp(cfg->tls_min_version, "1.1") != 0 &&
        strcmp(cfg->tls_min_version, "1.2") != 0 && strcmp(cfg->tls_min_version, "1.3") != 0) {
        snprintf(err, CONFIG_ERR_MAX, "--tls-min-version: '%s' is not 1.0, 1.1, 1.2 or 1.3", cfg->tls_min_version);
        return -1;
    }
    if (!cfg->http_user[0] != !cfg->http_password[0]) {
        snprintf(err, CONFIG_ERR_MAX, "%s", cfg->http_user[0] ? "--http-user needs --http-password"
                                                              : "--http-password needs --http-user");
        return -1;
    }
    if ((cfg->http_token[0] || cfg->http_user[0]) && !cfg->http_on) {
        snprintf(err, CONFIG_ERR_MAX, "%s needs --http", cfg->http_token[0] ? "--http-token" : "--http-user");
        return -1;
    }
    if (cfg->http_token[0] && cfg->http_user[0]) {
        snprintf(err, CONFIG_ERR_MAX, "--http-token or --http-user: one of them");
        return -1;
    }
    if (needs_cert && !tls) {
        snprintf(err, CONFIG_ERR_MAX, "%s needs --tls-cert", needs_cert);
        return -1;
    }
    if (cfg->require_auth && !tls && !cfg->allow_insecure_auth) {
        snprintf(err, CONFIG_ERR_MAX, "--require-auth: AUTH is offered over TLS only; "
                 "give --tls-cert (or --allow-insecure-auth)");
        return -1;
    }
    if (cfg->hook_memory == 0 || cfg->hook_memory > cfg->lua_memory)
        cfg->hook_memory = cfg->lua_memory / 2;
    if (cfg->hook_kill_ms == 0)
        cfg->hook_kill_ms = cfg->hook_timeout_ms * 10 > 5000 ? cfg->hook_timeout_ms * 10 : 5000;
    if (cfg->hook_kill_ms <= cfg->hook_timeout_ms) {
        snprintf(err, CONFIG_ERR_MAX, "--hook-kill must be longer than --hook-timeout");
        return -1;
    }
    if (cfg->mqtt_tls_ca[0])
        cfg->mqtt_tls = 1;
    if (cfg->mqtt_port == 0)
        cfg->mqtt_port = cfg->mqtt_tls ? 8883 : 1883;
    if (!cfg->mqtt_host[0] && (cfg->mqtt_user[0] || cfg->mqtt_client_id[0] || cfg->mqtt_tls)) {
        snprintf(err, CONFIG_ERR_MAX, "the MQTT options need --mqtt-host");
        return -1;
    }
    if (cfg->nlisten == 0 && net_parse_addr("127.0.0.1:2525", &cfg->listen[0], nerr) == 0)
        cfg->nlisten = 1;
    for (int i = 0; i < cfg->nlisten; i++)
        cfg->listen_proxy[i] = cfg->proxy_all;
    for (int k = 0; k < cfg->nproxy_listen; k++) {
        int i = 0;
        while (i < cfg->nlisten && !net_addr_equal(&cfg->proxy_listen[k], &cfg->listen[i]))
            i++;
        if (i == cfg->nlisten) {
            char a[NET_ADDRSTR_MAX];
            snprintf(err, CONFIG_ERR_MAX, "--proxy-protocol %s: no such listener (--listen, --listen-tls)",
                     net_addr_str(&cfg->proxy_listen[k], a));
            return -1;
        }
        cfg->listen_proxy[i] = true;
    }
    for (size_t i = 0; i < NOPTIONS; i++)   /* lists not given are loopback */
        if (options[i].type == OPT_CIDRS &&
            !((struct config_cidrs *)((char *)cfg + options[i].offset))->set &&
            set_cidrs(cfg, &options[i], "127.0.0.0/8,::1", err) < 0)
            return -1;
    for (int i = 0; i < cfg->nlisten && cfg->workers > 1; i++) {
        char host[NET_ADDRSTR_MAX];
        if (net_addr_host(&cfg->listen[i], host) == 0) {
            snprintf(err, CONFIG_ERR_MAX,
                     "--workers: each worker would get another port for %s:0; give the port",
                     host);
            return -1;
        }
    }
    if (cfg->hostname[0] == '\0') {
        char name[CONFIG_HOSTNAME_MAX + 1] = "";
        if (gethostname(name, sizeof(name) - 1) < 0 || !valid_hostname(name))
            strcpy(name, "localhost");
        strcpy(cfg->hostname, name);
    }
    return 0;
}

void config_usage(FILE *out)
{
    fputs("Usage: luasmtpd [OPTIONS] [SCRIPT.lua]\n"
          "       luasmtpd --check SCRIPT.lua\n"
          "       luasmtpd --reload|--standby|--activate --pid-file FILE\n"
          "       luasmtpd --replay FILE.eml [--dry-run] [--from ADDR] [--to ADDR]... [SCRIPT.lua]\n"
          "An SMTP server for machines and scripts: every decision is a Lua hook.\n"
          "Without SCRIPT, the embedded default prints each mail as an event line.\n"
          "A script's global `config` table may set the options below (max_size = ...);\n"
          "flags win over it.\n\n"
          "Options:\n", out);
    for (size_t i = 0; i < NOPTIONS; i++) {
        char head[64];
        snprintf(head, sizeof(head), "--%s%s%s", options[i].name, options[i].arg ? " " : "",
                 options[i].arg ? options[i].arg : "");
        const char *h = options[i].help;
        fprintf(out, "  %-26s", head);
        while (*h) {
            const char *nl = strchr(h, '\n');
            size_t n = nl ? (size_t)(nl - h) : strlen(h);
            fprintf(out, "%.*s\n", (int)n, h);
            h += n;
            if (*h == '\n') {
                h++;
                fprintf(out, "  %-26s", "");
            }
        }
    }
    fputs("  A switch --NAME is turned off with --no-NAME (or --NAME=false).\n"
          "  --check                   load and check SCRIPT, then exit (0: fine, 2: not);\n"
          "                            warnings (a global on_* function that is no hook)\n"
          "                            go to stderr; --strict makes them exit 1\n"
          "  --replay FILE.eml         run one message through the hooks without a network,\n"
          "                            print the dialogue; exit 0 if accepted, 1 if not;\n"
          "                            its actions are performed, unless --dry-run: then\n"
          "                            each only logs what it would do\n"
          "  --from ADDR, --to ADDR    envelope for --replay (default replay@localhost,\n"
          "                            postmaster@localhost); --to is repeatable\n"
          "  --reload                  send SIGHUP to the server of --pid-file, then exit\n"
          "  --standby, --activate     put the server of --pid-file in standby (its\n"
          "                            listeners closed, sessions in progress finish,\n"
          "                            the script's timers wait), or make it active again\n"
          "  --start-standby           start in standby (the half of a pair that waits)\n"
          "  --help, -h                show this help and exit\n"
          "  --version, -V             show the version and exit\n\n"
          "Signals: SIGTERM or SIGINT stops accepting, lets messages in progress\n"
          "finish (see --grace) and exits 0.  SIGHUP loads the script anew: new\n"
          "sessions use it, those in progress finish on the old one; if it does\n"
          "not load, the old one goes on (the log says why).  SIGUSR1 is standby,\n"
          "SIGUSR2 active again.\n"
          "Exit status: 0 after a clean stop, 1 on a runtime failure, 2 on a usage error.\n", out);
}
