/*
 * luasmtpd.exec{"prog", "arg", ..., stdin = "text", timeout = 10, env = {K = "v"}}
 *
 * Runs a program without a shell (argv as given, so mail data cannot
 * become shell syntax), with its stdout and stderr collected through pipes
 * and its exit seen by an ev_child watcher: the hook's coroutine waits on
 * the loop and other sessions are served meanwhile.  Returns
 * {status = n | nil, signal = n | nil, stdout = "...", stderr = "...",
 *  truncated = true | nil}, or nil and "exec: ..." when the program could
 * not be run or ran past its timeout (then it is killed).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "internal.h"

#define EXEC_ARGS_MAX    256
#define EXEC_OUTPUT_MAX  (1024 * 1024)   /* of stdout and of stderr each */
#define EXEC_TIMEOUT     10.0

extern char **environ;

struct exec {
    struct lcall *c;
    pid_t     pid;
    ev_child  child;
    ev_io     in, out, err;
    char     *input;              /* stdin text (a copy) and how much is written */
    size_t    input_len, input_off;
    struct buf outbuf, errbuf;
    bool      truncated, exited;
    int       wstatus;
};

static void close_io(struct ev_loop *loop, ev_io *w)
{
    if (w->fd < 0)
        return;
    ev_io_stop(loop, w);
    close(w->fd);
    w->fd = -1;
}

/* Stop everything and free (the wait is over, or the call ended). */
static void exec_release(void *data)
{
    struct exec *ex = data;
    struct ev_loop *loop = ex->c->b->loop;
    close_io(loop, &ex->in);
    close_io(loop, &ex->out);
    close_io(loop, &ex->err);
    if (!ex->exited) {
        ev_child_stop(loop, &ex->child);
        kill(ex->pid, SIGKILL);   /* the loop's SIGCHLD handler reaps it */
    }
    buf_free(&ex->outbuf);
    buf_free(&ex->errbuf);
    free(ex->input);
    free(ex);
}

/* Done when the program exited and its outputs are closed. */
static void maybe_done(struct exec *ex)
{
    if (ex->exited && ex->out.fd < 0 && ex->err.fd < 0)
        call_wake(ex->c);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct exec *ex = w->data;
    struct buf *b = w == &ex->out ? &ex->outbuf : &ex->errbuf;
    char tmp[16384];
    (void)revents;
    ssize_t n = read(w->fd, tmp, sizeof(tmp));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close_io(loop, w);
        maybe_done(ex);
        return;
    }
    size_t keep = (size_t)n;
    if (buf_len(b) + keep > EXEC_OUTPUT_MAX) {
        keep = EXEC_OUTPUT_MAX - buf_len(b);
        ex->truncated = true;
    }
    if (keep && buf_append(b, tmp, keep) < 0)
        ex->truncated = true;
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct exec *ex = w->data;
    (void)revents;
    ssize_t n = write(w->fd, ex->input + ex->input_off, ex->input_len - ex->input_off);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n < 0 || (ex->input_off += (size_t)n) == ex->input_len)
        close_io(loop, w);        /* all written, or the program stopped reading */
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    struct exec *ex = w->data;
    (void)revents;
    ev_child_stop(loop, w);
    ex->exited = true;
    ex->wstatus = w->rstatus;
    maybe_done(ex);
}

/* After the wait: the result, pushed by the coroutine itself. */
static int exec_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lcall *c = (struct lcall *)ctx;
    struct exec *ex = c->waitdata;
    (void)status;
    if (c->timed_out) {
        call_release(c);
        return call_fail(L, "exec: timed out after %f seconds (killed)", (lua_Number)c->timeout);
    }
    lua_createtable(L, 0, 5);
    if (WIFEXITED(ex->wstatus)) {
        lua_pushinteger(L, WEXITSTATUS(ex->wstatus));
        lua_setfield(L, -2, "status");
    } else if (WIFSIGNALED(ex->wstatus)) {
        lua_pushinteger(L, WTERMSIG(ex->wstatus));
        lua_setfield(L, -2, "signal");
    }
    lua_pushlstring(L, buf_head(&ex->outbuf), buf_len(&ex->outbuf));
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, buf_head(&ex->errbuf), buf_len(&ex->errbuf));
    lua_setfield(L, -2, "stderr");
    if (ex->truncated) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "truncated");
    }
    call_release(c);
    return 1;
}

/* The strings of a program's argv or environment, left on the stack
 * (which keeps them alive until the spawn has copied them). */
static void push_env(lua_State *L, int tidx, const char **envp, int *n)
{
    lua_pushnil(L);
    while (lua_next(L, tidx)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
            luaL_error(L, "exec: env must map names to strings");
        if (*n == EXEC_ARGS_MAX)
            luaL_error(L, "exec: more than %d environment entries", EXEC_ARGS_MAX);
        luaL_checkstack(L, 3, "exec: env");
        envp[(*n)++] = lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
        lua_insert(L, -3);        /* keep it below the key and value */
        lua_pop(L, 1);
    }
}

static int spawn_error(lua_State *L, const char *prog, int err, int fds[6])
{
    for (int i = 0; i < 6; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return call_fail(L, "exec: cannot run %s: %s", prog, strerror(err));
}

/* The program and its arguments: argv[0..argc) (the strings stay on the
 * stack), NULL-terminated; raises on a misuse. */
static int read_argv(lua_State *L, const char **argv)
{
    int argc = 0;
    for (lua_Integer i = 1; lua_geti(L, 1, i) != LUA_TNIL; i++) {
        if (argc == EXEC_ARGS_MAX)
            return luaL_error(L, "exec: more than %d arguments", EXEC_ARGS_MAX);
        if (!lua_isstring(L, -1))
            return luaL_error(L, "exec: argument %d is a %s, not a string", (int)i,
                              luaL_typename(L, -1));
        luaL_checkstack(L, 2, "exec: arguments");
        argv[argc++] = lua_tostring(L, -1);   /* stays on the stack */
    }
    lua_pop(L, 1);
    argv[argc] = NULL;
    if (argc == 0)
        return luaL_error(L, "exec: no program given");
    return argc;
}

/* posix_spawnp with the pipes' far ends as 0, 1 and 2 (stdin /dev/null
 * without input): 0, or an errno. */
static int spawn_program(struct exec *ex, const char **argv, char **env, const int fds[6])
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);     /* the server ignores it; the program should not */
    posix_spawn_file_actions_init(&fa);
    if (ex->input)
        posix_spawn_file_actions_adddup2(&fa, fds[0], 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[3], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[5], 2);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawnp(&ex->pid, argv[0], &fa, &attr, (char *const *)argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/* The program runs: our ends of the pipes and its exit on the loop. */
static void watch_program(struct exec *ex, const int fds[6])
{
    struct ev_loop *loop = ex->c->b->loop;
    /* the child's ends are its own now */
    if (ex->input)
        close(fds[0]);
    close(fds[3]);
    close(fds[5]);
    if (ex->input) {
        fcntl(fds[1], F_SETFL, O_NONBLOCK);
        ev_io_init(&ex->in, write_cb, fds[1], EV_WRITE);
        ex->in.data = ex;
        ev_io_start(loop, &ex->in);
    }
    fcntl(fds[2], F_SETFL, O_NONBLOCK);
    fcntl(fds[4], F_SETFL, O_NONBLOCK);
    ev_io_init(&ex->out, read_cb, fds[2], EV_READ);
    ev_io_init(&ex->err, read_cb, fds[4], EV_READ);
    ex->out.data = ex->err.data = ex;
    ev_io_start(loop, &ex->out);
    ev_io_start(loop, &ex->err);
    ev_child_init(&ex->child, child_cb, ex->pid, 0);
    ex->child.data = ex;
    ev_child_start(loop, &ex->child);
}

static int l_exec(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct lcall *c = call_waitable(L, "luasmtpd.exec");
    const char *argv[EXEC_ARGS_MAX + 1], *envp[EXEC_ARGS_MAX + 1];
    int envc = 0;

    lua_settop(L, 1);
    read_argv(L, argv);
    double timeout = call_opt_timeout(L, 1, EXEC_TIMEOUT);
    size_t input_len = 0;
    const char *input = NULL;
    if (lua_getfield(L, 1, "stdin") != LUA_TNIL)
        input = luaL_checklstring(L, -1, &input_len);
    char **env = environ;
    if (lua_getfield(L, 1, "env") != LUA_TNIL) {
        luaL_checktype(L, -1, LUA_TTABLE);
        push_env(L, lua_gettop(L), envp, &envc);
        envp[envc] = NULL;
        env = (char **)envp;
    }

    struct exec *ex = calloc(1, sizeof(*ex));
    char *copy = input ? malloc(input_len ? input_len : 1) : NULL;
    if (ex == NULL || (input && copy == NULL)) {
        free(ex);
        free(copy);
        return call_fail(L, "exec: out of memory");
    }
    ex->c = c;
    ex->input = copy;
    ex->input_len = input_len;
    if (input_len)
        memcpy(copy, input, input_len);
    buf_init(&ex->outbuf, EXEC_OUTPUT_MAX);
    buf_init(&ex->errbuf, EXEC_OUTPUT_MAX);
    ex->in.fd = ex->out.fd = ex->err.fd = -1;

    /* pipes: the child's ends become 0, 1, 2; ours are non-blocking */
    int fds[6] = { -1, -1, -1, -1, -1, -1 };   /* in r/w, out r/w, err r/w */
    int rc = 0;
    for (int i = input ? 0 : 1; i < 3 && rc == 0; i++)
        if (pipe2(fds + 2 * i, O_CLOEXEC) < 0)
            rc = errno;
    if (rc == 0)
        rc = spawn_program(ex, argv, env, fds);
    if (rc != 0) {
        free(copy);
        free(ex);
        return spawn_error(L, argv[0], rc, fds);
    }
    watch_program(ex, fds);
    return call_wait(L, c, ex, exec_release, timeout, exec_k);
}

static void exec_open(lua_State *L)
{
    lua_pushcfunction(L, l_exec);
    lua_setfield(L, -2, "exec");
}

const struct action exec_action = { .open = exec_open };
