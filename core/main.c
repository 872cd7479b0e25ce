/* luasmtpd: argv, config, the script bridge, signal watchers, ev_run. */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lua/bridge.h"   /* the one header of lua/ the core sees */
#include "config.h"
#include "log.h"
#include "replay.h"
#include "server.h"
#include "tls.h"
#include "watchdog.h"
#include "workers.h"

#ifndef LUASMTPD_VERSION
#define LUASMTPD_VERSION "0.0.0"
#endif

#define MAX_FLAGS 64

static struct server srv;

struct args {
    const char *script;
    bool check;
    const char *queue_cmd, *queue_arg;  /* --queue-list and the like */
    struct replay_opts replay;
    const char *flags[MAX_FLAGS + 1];   /* options given as flags: they win */
    int nflags;
};

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    if (!srv.stopping) {
        log_msg(LV_INFO, NULL, "signal %d: stopping (again to stop at once)", w->signum);
        server_stop(&srv);
    } else {
        log_msg(LV_WARN, NULL, "signal %d: stopping at once", w->signum);
        server_free(&srv);
        ev_break(loop, EVBREAK_ALL);
    }
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "luasmtpd: %s\nTry 'luasmtpd --help'.\n", msg);
    return 2;
}

/* The server option argv[*i] ("--name[=value]", "--name value" or
 * "--no-name"), set in cfg and remembered in a->flags: 0, or the exit
 * status of a usage error. */
static int parse_option(int argc, char **argv, int *i, struct config *cfg, struct args *a)
{
    static char names[MAX_FLAGS][64];
    char err[CONFIG_ERR_MAX];
    const char *arg = argv[*i], *value;
    const char *eq = strchr(arg + 2, '=');
    size_t n = eq ? (size_t)(eq - (arg + 2)) : strlen(arg + 2);
    if (n >= sizeof(names[0]) || a->nflags == MAX_FLAGS) {
        snprintf(err, sizeof(err), "unknown option '%.40s'", arg);
        return usage_error(err);
    }
    char *name = names[a->nflags];
    memcpy(name, arg + 2, n);
    name[n] = '\0';
    int takes = config_takes_value(name);
    bool negated = takes < 0 && strncmp(name, "no-", 3) == 0 && !eq &&
                   config_takes_value(name + 3) == 0;
    if (negated) {                /* --no-pipelining */
        memmove(name, name + 3, n - 2);
        takes = 0;
    }
    if (takes < 0) {
        snprintf(err, sizeof(err), "unknown option --%s", name);
        return usage_error(err);
    }
    if (eq) {
        value = eq + 1;
    } else if (!takes) {
        value = negated ? "false" : "true";   /* a switch: --rawbody */
    } else if (*i + 1 < argc) {
        value = argv[++*i];
    } else {
        snprintf(err, sizeof(err), "--%s needs a value", name);
        return usage_error(err);
    }
    if (config_set(cfg, name, value, err) < 0)
        return usage_error(err);
    a->flags[a->nflags++] = name;
    return 0;
}

static int parse_args(int argc, char **argv, struct config *cfg, struct args *a)
{
    char err[CONFIG_ERR_MAX];

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            config_usage(stdout);
            exit(0);
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            printf("luasmtpd %s\n", LUASMTPD_VERSION);
            exit(0);
        }
        if (strcmp(arg, "--check") == 0) {
            a->check = true;
            continue;
        }
        /* --queue-list, --queue-show ID, --queue-flush ID|all, --queue-delete ID */
        static const char *const queue_cmds[] = { "list", "show", "flush", "delete" };
        if (strncmp(arg, "--queue-", 8) == 0 && config_option_name(arg + 2) == NULL) {
            for (size_t q = 0; q < sizeof(queue_cmds) / sizeof(queue_cmds[0]); q++)
                if (strcmp(arg + 8, queue_cmds[q]) == 0)
                    a->queue_cmd = queue_cmds[q];
            if (a->queue_cmd == NULL) {
                snprintf(err, sizeof(err), "unknown option %s", arg);
                return usage_error(err);
            }
            if (strcmp(a->queue_cmd, "list") != 0) {
                if (i + 1 >= argc) {
                    snprintf(err, sizeof(err), "%s needs a job id%s", arg,
                             strcmp(a->queue_cmd, "flush") == 0 ? " or all" : "");
                    return usage_error(err);
                }
                a->queue_arg = argv[++i];
            }
            continue;
        }
        /* --replay FILE [--from ADDR] [--to ADDR]...: not server options */
        const char **slot = strcmp(arg, "--replay") == 0 ? &a->replay.file
                            : strcmp(arg, "--from") == 0 ? &a->replay.from : NULL;
        if (slot || strcmp(arg, "--to") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, sizeof(err), "%s needs a value", arg);
                return usage_error(err);
            }
            if (slot) {
                *slot = argv[++i];
            } else if (a->replay.nto == REPLAY_MAX_TO) {
                return usage_error("too many --to");
            } else {
                a->replay.to[a->replay.nto++] = argv[++i];
            }
            continue;
        }
        if (arg[0] == '-' && arg[1] != '-') {    /* -x: no script is named so */
            snprintf(err, sizeof(err), "unknown option %s", arg);
            return usage_error(err);
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (a->script != NULL) {
                snprintf(err, sizeof(err), "one script only: '%s' and '%s'", a->script, arg);
                return usage_error(err);
            }
            a->script = arg;
            continue;
        }
        int rc = parse_option(argc, argv, &i, cfg, a);
        if (rc != 0)
            return rc;
    }
    if (a->check && a->script == NULL)
        return usage_error("--check needs a SCRIPT.lua");
    if ((a->replay.from || a->replay.nto) && a->replay.file == NULL)
        return usage_error("--from and --to go with --replay FILE");
    return 0;
}

/* What serving needs: the options, the loaded script, the TLS context. */
struct setup {
    struct config      cfg;
    struct args        args;
    struct ev_loop    *loop;      /* the default loop */
    struct bridge     *bridge;
    struct tls_server *tls;
};

static void teardown(struct setup *st)
{
    tls_server_free(&st->tls);
    bridge_close(&st->bridge);
}

/* From argv to a loaded, checked script: 0, or the exit status after
 * saying what is wrong.  The script never runs broken: a load error or a
 * bad config stops here. */
static int setup(int argc, char **argv, struct setup *st)
{
    char err[BRIDGE_ERR_MAX];

    memset(&st->args, 0, sizeof(st->args));
    st->loop = NULL;
    st->bridge = NULL;
    st->tls = NULL;
    config_defaults(&st->cfg);
    int rc = parse_args(argc, argv, &st->cfg, &st->args);
    if (rc != 0)
        return rc;
    log_threshold = (enum log_level)st->cfg.log_level;
    st->loop = ev_default_loop(EVFLAG_AUTO);
    if (st->loop == NULL) {
        fprintf(stderr, "luasmtpd: cannot start the event loop\n");
        return 1;
    }
    const char *script = st->args.script ? st->args.script : "the default script";
    if (bridge_open(&st->bridge, st->loop, st->args.script, st->cfg.lua_debug != 0, err) < 0 ||
        bridge_apply_config(st->bridge, &st->cfg, st->args.flags, err) < 0 ||
        config_finish(&st->cfg, err) < 0) {
        fprintf(stderr, "luasmtpd: %s\n", err);
        teardown(st);
        return 2;
    }
    if (st->cfg.require_auth && !bridge_decides_auth(st->bridge)) {
        fprintf(stderr, "luasmtpd: --require-auth: %s defines no on_auth\n", script);
        teardown(st);
        return 2;
    }
    log_threshold = (enum log_level)st->cfg.log_level;
    bridge_set_limits(st->bridge, &st->cfg);
    /* A certificate that cannot serve is an error now, not at the first
     * STARTTLS. */
    if (st->cfg.tls_cert[0] && tls_server_new(&st->tls, &st->cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "luasmtpd: %s\n", err);
        teardown(st);
        return 2;
    }
    return 0;
}

/* The supervisor's check on SIGHUP: the script loads as a worker would
 * load it. */
struct argv {
    int    argc;
    char **argv;
};

static bool script_loads(void *arg)
{
    static struct setup st;
    struct argv *a = arg;
    int rc = setup(a->argc, a->argv, &st);
    if (rc == 0)
        teardown(&st);
    if (st.loop)
        ev_loop_destroy(st.loop);
    return rc == 0;
}

/* --check, --replay, or serve until stopped; argv starts the server again
 * when the watchdog finds it stuck (a worker exits instead). */
static int run(struct setup *st, char **argv)
{
    char err[BRIDGE_ERR_MAX];
    int rc = 0;
    const struct hooks *hooks = bridge_hooks(st->bridge);
    struct config *cfg = &st->cfg;

    if (st->args.queue_cmd) {
        int status = bridge_queue_command(cfg, st->args.queue_cmd, st->args.queue_arg);
        teardown(st);
        return status;
    }
    /* the broker connection of luasmtpd.mqtt (not for a mere --check) */
    if (!st->args.check && bridge_start(st->bridge, cfg, err) < 0) {
        fprintf(stderr, "luasmtpd: %s\n", err);
        teardown(st);
        return 2;
    }
    if (st->args.check || st->args.replay.file) {
        if (st->args.check) {
            char desc[512];
            bridge_describe(st->bridge, desc, sizeof(desc));
            printf("%s: ok; %s\n", st->args.script, desc);
            printf("id: %s%s%s\n", cfg->id, cfg->description[0] ? "; " : "", cfg->description);
        } else {
            rc = replay_run(st->loop, cfg, hooks, &st->args.replay);
        }
        teardown(st);
        return rc;
    }
    if (server_init(&srv, st->loop, cfg, hooks, st->tls) < 0) {
        teardown(st);
        return 1;
    }

    ev_signal sigterm, sigint;
    ev_signal_init(&sigterm, signal_cb, SIGTERM);
    ev_signal_init(&sigint, signal_cb, SIGINT);
    ev_signal_start(st->loop, &sigterm);
    ev_signal_start(st->loop, &sigint);
    if (watchdog_start(st->loop, (double)cfg->hook_kill_ms / 1000.0, bridge_running, st->bridge,
                       cfg->worker ? NULL : argv) < 0)
        log_msg(LV_ERROR, NULL, "cannot start the watchdog: %s", strerror(errno));
    log_msg(LV_INFO, NULL, "luasmtpd %s ready as %s (id %s), script %s", LUASMTPD_VERSION,
            cfg->hostname, cfg->id, st->args.script ? st->args.script : "(default)");
    workers_ready();

    ev_run(st->loop, 0);

    watchdog_stop();
    server_free(&srv);
    teardown(st);
    log_msg(LV_INFO, NULL, "stopped");
    ev_loop_destroy(st->loop);
    return 0;
}

int main(int argc, char **argv)
{
    static struct setup st;

    signal(SIGPIPE, SIG_IGN);
    if (watchdog_restarted())
        log_msg(LV_WARN, NULL, "started again by the watchdog");
    int rc = setup(argc, argv, &st);
    if (rc != 0)
        return rc;
    if (st.cfg.workers > 1 && !st.args.check && !st.args.replay.file && !st.args.queue_cmd) {
        /* The supervisor holds no script: each worker loads its own. */
        struct argv a = { argc, argv };
        int n = (int)st.cfg.workers;
        teardown(&st);
        ev_loop_destroy(st.loop);
        int worker = workers_supervise(n, script_loads, &a, &rc);
        if (worker < 0)
            return rc;
        char tag[16];
        snprintf(tag, sizeof(tag), "w%d", worker + 1);
        log_set_tag(tag);
        rc = setup(argc, argv, &st);
        if (rc != 0)
            return rc;
        st.cfg.worker = worker + 1;
    }
    return run(&st, argv);
}
