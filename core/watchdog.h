/*
 * watchdog: a thread that sees the event loop stuck in one round of
 * callbacks for --hook-kill seconds, and ends it.
 *
 * The time budget stops Lua code between instructions.  A C function a
 * script called (a backtracking pattern over a long text), a finalizer, or
 * a bug of ours can hold the loop much longer, and while it does no session
 * is served.  The loop marks when it starts handling events (an ev_check
 * of the highest priority) and when it goes back to waiting (an
 * ev_prepare); the thread looks four times a second.  When it finds the
 * loop stuck it logs what was running and ends the process: a worker of
 * --workers exits (its supervisor starts another at once), and a server on
 * its own starts itself again in the same process with exec (the same pid
 * for the service manager; its connections dropped, its ports bound anew).
 */
#ifndef LUASMTPD_WATCHDOG_H
#define LUASMTPD_WATCHDOG_H

#include <ev.h>
#include <stddef.h>

#define WATCHDOG_EXIT 75   /* a worker's status after the watchdog ended it */

/* Says what the loop is running, for the log line ("on_mail, session
 * ..."); it runs on the watchdog's thread while the loop is stuck. */
typedef void watchdog_describe_fn(void *ctx, char *out, size_t size);

/* Watch loop: 0, or -1 with errno.  With argv, a stuck process starts
 * itself again with it; without, it exits with WATCHDOG_EXIT. */
int  watchdog_start(struct ev_loop *loop, double seconds, watchdog_describe_fn *describe,
                    void *ctx, char *const *argv);
void watchdog_stop(void);
/* First thing in main(): a process the watchdog started again closes the
 * descriptors its stuck predecessor left open.  True if it was one. */
int  watchdog_restarted(void);

#endif
