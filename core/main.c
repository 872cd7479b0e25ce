/* luasmtpd: argv, config, the script bridge, signal watchers, ev_run. */
#include <errno.h>
#include <ev.h>
#include <grp.h>
#include <pwd.h>
#include <systemd/sd-daemon.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lua/bridge.h"   /* the one header of lua/ the core sees */
#include "admin.h"
#include "config.h"
#include "log.h"
#include "console.h"
#include "json.h"
#include "metrics.h"
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
static struct admin *admin;   /* --http */

struct args {
    const char *script;
    bool check, reload, standby, activate, start_standby, strict, dry_run;
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
        if (!srv.cfg->worker)
            sd_notify(0, "STOPPING=1");
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

/* --reload, --standby, --activate: sig to the pid in `file`; the exit
 * status. */
static int send_signal(const char *file, int sig, const char *name, const char *what)
{
    FILE *f = fopen(file, "r");
    long pid = 0;
    if (f == NULL) {
        fprintf(stderr, "luasmtpd: cannot read %s: %s\n", file, strerror(errno));
        return 1;
    }
    bool read = fscanf(f, "%ld", &pid) == 1 && pid > 1;
    fclose(f);
    if (!read) {
        fprintf(stderr, "luasmtpd: %s holds no pid\n", file);
        return 1;
    }
    if (kill((pid_t)pid, sig) < 0) {
        fprintf(stderr, "luasmtpd: cannot signal %ld (from %s): %s\n", pid, file, strerror(errno));
        return 1;
    }
    printf("luasmtpd: %s sent to %ld; %s\n", name, pid, what);
    return 0;
}

/* --pid-file: written once serving (tmp, then renamed into place), removed
 * at the end if it still names this process. */
static void pid_file_write(const char *file)
{
    char tmp[CONFIG_PATH_MAX + 32];
    if (!file[0])
        return;
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", file, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 || rename(tmp, file) < 0) {
        log_msg(LV_ERROR, NULL, "--pid-file: cannot write %s: %s", file, strerror(errno));
        unlink(tmp);
    }
}

static void pid_file_remove(const char *file)
{
    long pid = 0;
    FILE *f = file[0] ? fopen(file, "r") : NULL;
    if (f == NULL)
        return;
    if (fscanf(f, "%ld", &pid) == 1 && pid == (long)getpid())
        unlink(file);
    fclose(f);
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
        static const char *const switches[] = { "--check",    "--reload",        "--standby", "--activate",
                                                "--start-standby", "--strict", "--dry-run" };
        bool *const flags[] = { &a->check,         &a->reload, &a->standby, &a->activate,
                                &a->start_standby, &a->strict, &a->dry_run };
        size_t sw = 0;
        while (sw < sizeof(switches) / sizeof(switches[0]) && strcmp(arg, switches[sw]) != 0)
            sw++;
        if (sw < sizeof(switches) / sizeof(switches[0])) {
            *flags[sw] = true;
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
    if (a->strict && !a->check)
        return usage_error("--strict goes with --check");
    if (a->dry_run && !a->replay.file)
        return usage_error("--dry-run goes with --replay FILE");
    const char *to_server = a->reload ? "--reload" : a->standby ? "--standby" : a->activate ? "--activate" : NULL;
    if (to_server && a->reload + a->standby + a->activate > 1)
        return usage_error("one of --reload, --standby and --activate at a time");
    if (to_server && !cfg->pid_file[0]) {
        snprintf(err, sizeof(err), "%s needs --pid-file FILE", to_server);
        return usage_error(err);
    }
    if (a->reload)
        exit(send_signal(cfg->pid_file, SIGHUP, "SIGHUP", "its log tells whether the script loaded"));
    if (a->standby)
        exit(send_signal(cfg->pid_file, SIGNAL_STANDBY, "SIGUSR1", "it closes its listeners"));
    if (a->activate)
        exit(send_signal(cfg->pid_file, SIGNAL_ACTIVATE, "SIGUSR2", "it opens its listeners"));
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

static bool reloading;   /* setup() for a reload: its errors go to the log */

static void setup_error(const char *err)
{
    if (reloading)
        log_msg(LV_ERROR, NULL, "reload: %s", err);
    else
        fprintf(stderr, "luasmtpd: %s\n", err);
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
    log_json = st->cfg.log_json;
    st->loop = ev_default_loop(EVFLAG_AUTO);
    if (st->loop == NULL) {
        fprintf(stderr, "luasmtpd: cannot start the event loop\n");
        return 1;
    }
    const char *script = st->args.script ? st->args.script : "the default script";
    unsigned opts = (st->cfg.lua_debug ? BRIDGE_DEBUG : 0) | (st->args.dry_run ? BRIDGE_DRY_RUN : 0);
    if (bridge_open(&st->bridge, st->loop, st->args.script, opts, err) < 0 ||
        bridge_apply_config(st->bridge, &st->cfg, st->args.flags, err) < 0 ||
        config_finish(&st->cfg, err) < 0) {
        setup_error(err);
        teardown(st);
        return 2;
    }
    if (st->cfg.require_auth && !bridge_decides_auth(st->bridge)) {
        snprintf(err, sizeof(err), "--require-auth: %s defines no on_auth", script);
        setup_error(err);
        teardown(st);
        return 2;
    }
    log_threshold = (enum log_level)st->cfg.log_level;
    log_json = st->cfg.log_json;
    bridge_set_limits(st->bridge, &st->cfg);
    /* A certificate that cannot serve is an error now, not at the first
     * STARTTLS. */
    if (st->cfg.ntls_certs && tls_server_new(&st->tls, &st->cfg, err, sizeof(err)) < 0) {
        setup_error(err);
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
static struct argv args_given;   /* what a reload reads again */

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

/*
 * Reload (SIGHUP in a serving process): the script is loaded anew, with the
 * options of the command line, into a setup of its own.  If it loads, new
 * sessions use it; the one before retires (its timers and delivery agent
 * stop) and closes once its sessions in progress have ended, and only then
 * does the new one connect to the broker and deliver the queue.  If it does
 * not load, nothing changes.  Options stay as they were at start: those the
 * new script's config changes are logged as waiting for a restart.
 */
#define RETIRED_MAX 8
static struct setup *serving;                 /* the script new sessions get */
static struct setup *retired[RETIRED_MAX];    /* replaced, finishing sessions */
static int nretired;
static ev_timer reap;
static bool standby;                          /* --standby, --start-standby */
/* What the watchdog starts again: the command line without --start-standby,
 * then a last slot that holds it while in standby, so that a restart keeps
 * the state of the moment. */
static char **restart_argv;
static int standby_slot;

static void close_setup(struct setup *s, struct setup *first)
{
    teardown(s);
    if (s != first)
        free(s);
}

static void reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct setup *first = w->data;
    (void)revents;
    int kept = 0;
    for (int i = 0; i < nretired; i++) {
        if (bridge_idle(retired[i]->bridge)) {
            close_setup(retired[i], first);
            log_msg(LV_INFO, NULL, "reload: the script before has no session left: closed");
        } else {
            retired[kept++] = retired[i];
        }
    }
    nretired = kept;
    if (nretired == 0) {
        ev_timer_stop(loop, w);
        bridge_resume(serving->bridge);
    }
}

static void reload(struct ev_loop *loop);

static void reload_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    if (srv.stopping)
        return;
    reload(loop);
    if (!serving->cfg.worker)         /* a worker's supervisor speaks for it */
        sd_notify(0, "READY=1");      /* the reload is over, whatever came of it */
}

static void reload(struct ev_loop *loop)
{
    char err[BRIDGE_ERR_MAX];
    const char *script = serving->args.script ? serving->args.script : "the default script";
    if (nretired == RETIRED_MAX) {
        log_msg(LV_WARN, NULL, "reload: %d scripts before still finish their sessions: not reloaded", nretired);
        return;
    }
    log_msg(LV_INFO, NULL, "reload: loading %s", script);
    if (!serving->cfg.worker)
        workers_notify_reloading();
    struct setup *next = calloc(1, sizeof(*next));
    if (next == NULL) {
        log_msg(LV_ERROR, NULL, "reload: out of memory; the running script goes on");
        return;
    }
    reloading = true;
    int rc = setup(args_given.argc, args_given.argv, next);
    reloading = false;
    if (rc != 0) {                    /* it said why */
        log_msg(LV_ERROR, NULL, "reload: %s does not load; the running script goes on", script);
        free(next);
        return;
    }
    bridge_config_changes(serving->bridge, next->bridge);
    next->cfg = serving->cfg;         /* the options of the start stay */
    log_threshold = (enum log_level)next->cfg.log_level;
    log_json = next->cfg.log_json;
    bridge_set_limits(next->bridge, &next->cfg);
    if (bridge_start(next->bridge, &next->cfg, true, err) < 0) {
        log_msg(LV_ERROR, NULL, "reload: %s; the running script goes on", err);
        close_setup(next, NULL);
        return;
    }
    /* made anew, with the options of the start: a renewed certificate is
     * read.  A key only root may read (--user) keeps the one of the start. */
    tls_server_free(&next->tls);
    if (next->cfg.ntls_certs && tls_server_new(&next->tls, &next->cfg, err, sizeof(err)) < 0) {
        log_msg(LV_WARN, NULL, "reload: %s: the certificate loaded before stays", err);
        next->tls = serving->tls;
        serving->tls = NULL;
    }
    server_set_hooks(&srv, bridge_hooks(next->bridge), next->tls);
    tls_server_free(&serving->tls);   /* TLS sessions in progress hold its context */
    bridge_retire(serving->bridge);
    retired[nretired++] = serving;
    serving = next;
    log_msg(LV_INFO, NULL, "reload: %s loaded; new sessions use it, those in progress end on the one before",
            script);
    struct buf *e = console_event_begin("reload", NULL);
    if (e) {
        json_field(e, "script", script);
        console_event_end();
    }
    if (standby)
        bridge_standby(serving->bridge, true);
    ev_timer_again(loop, &reap);
    ev_feed_event(loop, &reap, EV_TIMER);   /* no session in progress: at once */
}

/* Standby: the listeners close and the script's timers pause; sessions
 * in progress go on.  A script loaded in standby (at start, or by a
 * reload) hears of it once too. */
static void set_standby(bool on)
{
    if (restart_argv)
        restart_argv[standby_slot] = on ? "--start-standby" : NULL;
    server_standby(&srv, on);
    bridge_standby(serving->bridge, on);
    if (!serving->cfg.worker)         /* a worker's supervisor speaks for it */
        sd_notify(0, on ? "STATUS=standby: the listeners are closed" : "STATUS=active");
}

static void standby_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    bool on = w->signum == SIGNAL_STANDBY;
    if (srv.stopping)
        return;
    if (standby == on) {
        log_msg(LV_INFO, NULL, "%s", on ? "already in standby" : "already active");
        return;
    }
    standby = on;
    set_standby(on);
}

/* The watchdog's line: the call that holds the loop, of whichever script. */
static void describe_running(void *ctx, char *out, size_t size)
{
    (void)ctx;
    for (int i = 0; i < nretired; i++)
        if (bridge_in_call(retired[i]->bridge)) {
            bridge_running(retired[i]->bridge, out, size);
            return;
        }
    bridge_running(serving->bridge, out, size);
}

/* --user and --group: every uid and gid, supplementary groups cleared.
 * Without --user, running as root is said once. */
static int drop_privileges(const struct config *cfg, char *err, size_t errsz)
{
    if (!cfg->user[0] && !cfg->group[0]) {
        if (geteuid() == 0 && cfg->worker <= 1)
            log_msg(LV_WARN, NULL, "running as root: hooks, exec and writes have every right; "
                                   "--user NAME drops to that user once the listeners are bound");
        return 0;
    }
    struct passwd *pw = NULL;
    if (cfg->user[0] && (pw = getpwnam(cfg->user)) == NULL) {
        snprintf(err, errsz, "--user %s: no such user", cfg->user);
        return -1;
    }
    gid_t gid = pw ? pw->pw_gid : getgid();
    if (cfg->group[0]) {
        struct group *gr = getgrnam(cfg->group);
        if (gr == NULL) {
            snprintf(err, errsz, "--group %s: no such group", cfg->group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    uid_t uid = pw ? pw->pw_uid : getuid();
    if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
        snprintf(err, errsz, "--user/--group: cannot change to uid %ld gid %ld: %s", (long)uid, (long)gid,
                 strerror(errno));
        return -1;
    }
    if (uid != 0 && setuid(0) == 0) {   /* there is no way back */
        snprintf(err, errsz, "--user: root could be regained: refusing to serve");
        return -1;
    }
    workers_credentials_changed();
    log_msg(LV_INFO, NULL, "running as uid %ld gid %ld%s%s", (long)uid, (long)gid, pw ? ", user " : "",
            pw ? pw->pw_name : "");
    return 0;
}

static void check_warning(const char *text, const void *script)
{
    fprintf(stderr, "luasmtpd: %s: warning: %s\n", (const char *)script, text);
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
    if (st->args.check || st->args.replay.file) {
        if (st->args.replay.file && bridge_start(st->bridge, cfg, false, err) < 0) {
            fprintf(stderr, "luasmtpd: %s\n", err);
            teardown(st);
            return 2;
        }
        if (st->args.check) {
            char desc[512];
            bridge_describe(st->bridge, desc, sizeof(desc));
            printf("%s: ok; %s\n", st->args.script, desc);
            printf("id: %s%s%s\n", cfg->id, cfg->description[0] ? "; " : "", cfg->description);
            bridge_config_set(st->bridge, desc, sizeof(desc));
            if (desc[0])
                printf("config sets %s: read at start (a reload keeps them as they were)\n", desc);
            if (bridge_warnings(st->bridge, check_warning, st->args.script) > 0 && st->args.strict)
                rc = 1;
        } else {
            rc = replay_run(st->loop, cfg, hooks, &st->args.replay);
        }
        teardown(st);
        return rc;
    }
    metrics_use(cfg->worker ? (int)cfg->worker - 1 : 0);
    if (cfg->http_on && !console_on() && console_share(cfg->keep, cfg->keep_bytes, cfg->max_clients, 1) < 0)
        log_msg(LV_WARN, NULL, "console: no memory for it (%s): --http serves /metrics only", strerror(errno));
    console_use(cfg->worker ? (int)cfg->worker - 1 : 0);
    buf_budget_set((size_t)(cfg->max_memory / (cfg->workers > 1 ? cfg->workers : 1)), metrics_budget);
    if (server_init(&srv, st->loop, cfg, hooks, st->tls) < 0) {
        teardown(st);
        return 1;
    }
    /* Listeners bound and the TLS key read: the rest, from the state
     * database and the broker connection to every hook, runs as --user. */
    if (admin_start(&admin, st->loop, cfg, err, sizeof(err)) < 0 || drop_privileges(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "luasmtpd: %s\n", err);
        admin_stop(&admin);
        server_free(&srv);
        teardown(st);
        return 1;
    }
    if (bridge_start(st->bridge, cfg, false, err) < 0) {
        fprintf(stderr, "luasmtpd: %s\n", err);
        admin_stop(&admin);
        server_free(&srv);
        teardown(st);
        return 2;
    }

    ev_signal sigterm, sigint, sighup, sigstandby, sigactivate;
    ev_signal_init(&sigterm, signal_cb, SIGTERM);
    ev_signal_init(&sigint, signal_cb, SIGINT);
    ev_signal_init(&sighup, reload_cb, SIGHUP);
    ev_signal_init(&sigstandby, standby_cb, SIGNAL_STANDBY);
    ev_signal_init(&sigactivate, standby_cb, SIGNAL_ACTIVATE);
    ev_signal_start(st->loop, &sigterm);
    ev_signal_start(st->loop, &sigint);
    ev_signal_start(st->loop, &sighup);
    ev_signal_start(st->loop, &sigstandby);
    ev_signal_start(st->loop, &sigactivate);
    serving = st;
    standby = cfg->worker ? workers_standby() : st->args.start_standby;
    if (standby)
        set_standby(true);
    ev_init(&reap, reap_cb);
    reap.repeat = 0.5;
    reap.data = st;
    if (watchdog_start(st->loop, (double)cfg->hook_kill_ms / 1000.0, describe_running, NULL,
                       cfg->worker ? NULL : argv) < 0)
        log_msg(LV_ERROR, NULL, "cannot start the watchdog: %s", strerror(errno));
    if (!cfg->worker)
        pid_file_write(cfg->pid_file);
    log_msg(LV_INFO, NULL, "luasmtpd %s ready as %s (id %s), script %s", LUASMTPD_VERSION,
            cfg->hostname, cfg->id, st->args.script ? st->args.script : "(default)");
    workers_ready();
    if (!cfg->worker)
        sd_notify(0, "READY=1");      /* systemd's Type=notify; nothing without it */

    ev_run(st->loop, 0);

    watchdog_stop();
    admin_stop(&admin);
    server_free(&srv);
    ev_timer_stop(st->loop, &reap);
    while (nretired > 0)
        close_setup(retired[--nretired], st);
    close_setup(serving, st);
    if (!cfg->worker)
        pid_file_remove(cfg->pid_file);
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
        char pid_file[CONFIG_PATH_MAX + 1];
        snprintf(pid_file, sizeof(pid_file), "%s", st.cfg.pid_file);
        if (st.cfg.http_on && console_share(st.cfg.keep, st.cfg.keep_bytes, st.cfg.max_clients, n) < 0)
            log_msg(LV_WARN, NULL, "console: no shared memory (%s): each worker shows its own", strerror(errno));
        teardown(&st);
        ev_loop_destroy(st.loop);
        if (metrics_share(n) < 0)
            log_msg(LV_WARN, NULL, "metrics: no shared memory (%s): /metrics counts one worker each",
                    strerror(errno));
        pid_file_write(pid_file);
        int worker = workers_supervise(n, st.args.start_standby, script_loads, &a, &rc);
        if (worker < 0) {
            pid_file_remove(pid_file);
            return rc;
        }
        char tag[16];
        snprintf(tag, sizeof(tag), "w%d", worker + 1);
        log_set_tag(tag);
        rc = setup(argc, argv, &st);
        if (rc != 0)
            return rc;
        st.cfg.worker = worker + 1;
    }
    args_given = (struct argv){ argc, argv };
    if ((restart_argv = calloc((size_t)argc + 2, sizeof(*restart_argv))) != NULL)
        for (int i = 0; i < argc; i++)
            if (strcmp(argv[i], "--start-standby") != 0)
                restart_argv[standby_slot++] = argv[i];
    return run(&st, restart_argv ? restart_argv : argv);
}
