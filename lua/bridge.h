/*
 * bridge: the Lua side of hook.h.  Loads the user's script (or the embedded
 * default) into one Lua 5.4 state and runs its on_* functions as coroutines
 * of their sessions, with a time budget and a memory cap.  This header does
 * not include lua.h: core/main.c wires the bridge in without seeing Lua.
 */
#ifndef LUASMTPD_BRIDGE_H
#define LUASMTPD_BRIDGE_H

#include <ev.h>
#include <stddef.h>

#include <stdbool.h>

#include "config.h"

struct bridge;
struct hooks;

#define BRIDGE_ERR_MAX 1024

/* Load `script` (NULL: the embedded default).  Options: BRIDGE_DEBUG,
 * scripts get the whole debug library (--lua-debug); BRIDGE_DRY_RUN, the
 * actions only say what they would do (--replay --dry-run).  0, or -1 with
 * the reason in err ("file:line: message" for a script error). */
#define BRIDGE_DEBUG   1u
#define BRIDGE_DRY_RUN 2u
int  bridge_open(struct bridge **b_r, struct ev_loop *loop, const char *script, unsigned opts,
                 char *err);
/* Apply the script's global `config` table to cfg, skipping the options
 * named in `flags` (set on the command line, which wins).  0 or -1 + err. */
int  bridge_apply_config(struct bridge *b, struct config *cfg, const char *const *flags,
                         char *err);
/* What the config says of hooks and the mail table (--hook-timeout,
 * --lua-memory, --body-lines, --rawbody). */
void bridge_set_limits(struct bridge *b, const struct config *cfg);
/* Start what scripts use beyond hooks: the state database, the queue's
 * delivery agent, the MQTT broker connection.  held (a reload's bridge,
 * while the one it replaces still finishes its sessions): the agent and
 * the broker connection wait for bridge_resume().  0, or -1 with err. */
int  bridge_start(struct bridge *b, const struct config *cfg, bool held, char *err);
/* A reload replaced b: its timers and its delivery agent stop now; its
 * sessions in progress go on with it. */
void bridge_retire(struct bridge *b);
void bridge_resume(struct bridge *b);
/* Standby (on) or active again: the script's timers (after, every and
 * so watchdogs) pause and go on with the time they had left; then
 * on_standby(active) runs as a task.  Delivery and the broker go on. */
void bridge_standby(struct bridge *b, bool on);
/* No session, no call, no timer function in progress: b may close. */
bool bridge_idle(const struct bridge *b);
/* Log each option that new's `config` table sets otherwise than old's:
 * options are read at start, and wait for a restart. */
void bridge_config_changes(struct bridge *old, struct bridge *new);
/* What the bridge runs now, for the watchdog's log line (called on its
 * thread while the loop is stuck: reads only); bridge_in_call() tells
 * whether one of its calls runs at all. */
void bridge_running(void *b, char *out, size_t size);
bool bridge_in_call(const void *b);
/* A summary for --check: which hooks the script defines. */
void bridge_describe(struct bridge *b, char *out, size_t outsz);
/* The options the script's `config` table set ("--max-size, --mqtt-host"),
 * or "". */
void bridge_config_set(struct bridge *b, char *out, size_t outsz);
/* What --check warns of (a global on_* function that is no hook, with the
 * nearest hook's name): warn() once each; the count. */
int  bridge_warnings(struct bridge *b, void (*warn)(const char *text, const void *arg), const void *arg);
const struct hooks *bridge_hooks(struct bridge *b);
/* Does the script decide AUTH (on_auth)? */
bool bridge_decides_auth(const struct bridge *b);
void bridge_close(struct bridge **b);
/* --queue-list, --queue-show ID, --queue-flush ID|all, --queue-delete ID:
 * cmd is "list", "show", "flush" or "delete"; on the state directory of
 * cfg, a server running on it or not.  The exit status. */
int  bridge_queue_command(const struct config *cfg, const char *cmd, const char *arg);

#endif
