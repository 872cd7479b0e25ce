/* luasmtpd: argv, config, signal watchers, ev_run. */
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hook.h"
#include "log.h"
#include "server.h"

#ifndef LUASMTPD_VERSION
#define LUASMTPD_VERSION "0.0.0"
#endif

static struct server srv;

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    if (!srv.stopping) {
        log_msg(LOG_INFO, NULL, "signal %d: stopping (again to stop at once)", w->signum);
        server_stop(&srv);
    } else {
        log_msg(LOG_WARN, NULL, "signal %d: stopping at once", w->signum);
        server_free(&srv);
        ev_break(loop, EVBREAK_ALL);
    }
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "luasmtpd: %s\nTry 'luasmtpd --help'.\n", msg);
    return 2;
}

static int parse_args(int argc, char **argv, struct config *cfg)
{
    char err[CONFIG_ERR_MAX];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("luasmtpd %s\n", LUASMTPD_VERSION);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, sizeof(err), "unexpected argument '%s'", a);
            return usage_error(err);
        }
        char name[64];
        const char *value;
        const char *eq = strchr(a + 2, '=');
        size_t n = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        if (n >= sizeof(name)) {
            snprintf(err, sizeof(err), "unknown option '%.40s...'", a);
            return usage_error(err);
        }
        memcpy(name, a + 2, n);
        name[n] = '\0';
        if (config_takes_value(name) < 0) {
            snprintf(err, sizeof(err), "unknown option --%s", name);
            return usage_error(err);
        }
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            snprintf(err, sizeof(err), "--%s needs a value", name);
            return usage_error(err);
        }
        if (config_set(cfg, name, value, err) < 0)
            return usage_error(err);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct config cfg;
    config_defaults(&cfg);
    int rc = parse_args(argc, argv, &cfg);
    if (rc != 0)
        return rc;
    config_finish(&cfg);
    log_threshold = (enum log_level)cfg.log_level;

    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (loop == NULL) {
        fprintf(stderr, "luasmtpd: cannot start the event loop\n");
        return 1;
    }
    if (server_init(&srv, loop, &cfg, &hook_default) < 0)
        return 1;

    ev_signal sigterm, sigint;
    ev_signal_init(&sigterm, signal_cb, SIGTERM);
    ev_signal_init(&sigint, signal_cb, SIGINT);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sigint);
    log_msg(LOG_INFO, NULL, "luasmtpd %s ready as %s", LUASMTPD_VERSION, cfg.hostname);

    ev_run(loop, 0);

    server_free(&srv);
    log_msg(LOG_INFO, NULL, "stopped");
    ev_loop_destroy(loop);
    return 0;
}
