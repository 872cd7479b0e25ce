/*
 * workers: --workers N.  The process started becomes a supervisor that
 * serves nothing itself: it forks N workers, each of which loads the script
 * and opens its own listeners with SO_REUSEPORT, so the kernel spreads the
 * connections over them.  The supervisor restarts a worker that dies,
 * passes SIGTERM, SIGINT and the standby signals on, and on SIGHUP checks
 * the script and starts a new set of workers before stopping the old ones.
 */
#ifndef LUASMTPD_WORKERS_H
#define LUASMTPD_WORKERS_H

#include <signal.h>
#include <stdbool.h>

/* Standby (--standby, --activate): the listeners close, or open again.  The
 * supervisor passes these on to its workers. */
#define SIGNAL_STANDBY  SIGUSR1
#define SIGNAL_ACTIVATE SIGUSR2

/* Does the script (and its config) load?  Called by the supervisor on
 * SIGHUP; it reports what is wrong itself. */
typedef bool (*workers_check_fn)(void *arg);

/*
 * Supervise n workers, in standby from the start if `standby`.  Returns in
 * each worker, with its number (0 to n-1), for it to load the script and
 * serve.  In the supervisor it returns -1 when the last worker has gone,
 * with *status the exit status: 0 after SIGTERM/SIGINT, else that of a
 * worker that could not start.
 */
int  workers_supervise(int n, bool standby, workers_check_fn check, void *arg, int *status);
/* In a worker: does it start in standby?  (The supervisor tells a ready
 * worker of each change after that, with the signals above.) */
bool workers_standby(void);

/* In a worker: its listeners are open (the supervisor waits for this before
 * it stops the workers a SIGHUP replaces).  Nothing without a supervisor. */
void workers_ready(void);
/* In a worker that changed its uid (--user): it stops again with its
 * supervisor (the change cleared that).  Nothing without a supervisor. */
void workers_credentials_changed(void);
/* systemd (Type=notify): a reload begins (READY=1 says it ended). */
void workers_notify_reloading(void);

#endif
