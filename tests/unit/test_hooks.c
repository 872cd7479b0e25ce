/*
 * The hook interface seen from the core: sessions over socketpairs on a real
 * libev loop, with a scripted hook implementation that answers at once or
 * later (HOOK_PENDING, then smtp_verdict from a timer).
 */
#include <ev.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "hook.h"
#include "log.h"
#include "server.h"
#include "pair.h"
#include "test.h"

struct answer {
    int code;
    const char *enh, *text;
    bool disconnect;
    double later;   /* seconds before the verdict; 0: at once */
};

static struct answer plan[HOOK_STAGE_COUNT];
static struct ev_loop *loop;
static struct server srv;
static struct config cfg;
static int closes, calls[HOOK_STAGE_COUNT];
static char last_address[300], last_user[300], last_password[1100];

struct later {
    ev_timer timer;
    struct smtp *s;
    struct verdict v;
};

static void later_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    struct later *p = w->data;
    (void)l;
    (void)revents;
    *smtp_hook_data(p->s) = NULL;
    smtp_verdict(p->s, &p->v);
    free(p);
}

static enum hook_status plan_call(void *ctx, struct smtp *s, enum hook_stage st,
                                  const struct hook_args *a, struct verdict *v)
{
    const struct answer *p = &plan[st];
    (void)ctx;
    calls[st]++;
    if (a->address)
        snprintf(last_address, sizeof(last_address), "%s", a->address);
    if (a->user) {
        snprintf(last_user, sizeof(last_user), "%s", a->user);
        snprintf(last_password, sizeof(last_password), "%s", a->password);
    }
    v->code = p->code;
    snprintf(v->enhanced, sizeof(v->enhanced), "%s", p->enh ? p->enh : "");
    snprintf(v->text, sizeof(v->text), "%s", p->text ? p->text : "");
    v->disconnect = p->disconnect;
    if (p->later <= 0)
        return HOOK_DONE;
    struct later *l = malloc(sizeof(*l));
    l->s = s;
    l->v = *v;
    ev_timer_init(&l->timer, later_cb, p->later, 0.);
    l->timer.data = l;
    ev_timer_start(loop, &l->timer);
    *smtp_hook_data(s) = l;
    return HOOK_PENDING;
}

static void plan_close(void *ctx, struct smtp *s)
{
    struct later *l = *smtp_hook_data(s);
    (void)ctx;
    closes++;
    if (l) {   /* a verdict still to come: it never will */
        ev_timer_stop(loop, &l->timer);
        free(l);
        *smtp_hook_data(s) = NULL;
    }
}

static bool plan_defines(void *ctx, enum hook_stage st)
{
    (void)ctx;
    (void)st;
    return true;
}

static const struct hooks plan_hooks = { .call = plan_call, .close = plan_close, .defines = plan_defines };

static void reset_plan(void)
{
    memset(plan, 0, sizeof(plan));
    memset(calls, 0, sizeof(calls));
    closes = 0;
}

#define DEADLINE 2.0   /* seconds: what is awaited comes far sooner, or never */

static bool sessions_gone(void *before)
{
    return srv.sessions.nsessions <= *(unsigned long *)before;
}

static bool closes_reach(void *n)
{
    return closes >= *(int *)n;
}

/* Send input on a new connection and return what came back once `until`
 * is among it (NULL: once the server closed).  Then leave, and let the
 * server see it (at most a moment: a session may wait on a verdict). */
static void converse(const char *input, const char *until, char *out, size_t outsz)
{
    unsigned long before = srv.sessions.nsessions;
    int fd = connect_client(&srv);
    out[0] = '\0';
    /* This may fail: the server can have replied and closed already. */
    ssize_t w = write(fd, input, strlen(input));
    (void)w;
    wait_reply(loop, fd, out, outsz, until, DEADLINE);
    close(fd);
    run_until(loop, sessions_gone, &before, 0.05);
}

static void test_pending_verdict_holds_the_session(void)
{
    char a[4096] = "", b[4096] = "";
    reset_plan();
    plan[HOOK_MAIL] = (struct answer){ 550, NULL, "Not you", false, 0.2 };
    int ca = connect_client(&srv), cb = connect_client(&srv);
    const char *ia = "EHLO a\r\nMAIL FROM:<x@y.z>\r\nNOOP\r\n";
    CHECK(write(ca, ia, strlen(ia)) > 0, "write");
    wait_reply(loop, ca, a, sizeof(a), "250 HELP\r\n", DEADLINE);
    CHECK(write(cb, "NOOP\r\n", 6) == 6, "write");
    wait_reply(loop, cb, b, sizeof(b), "250 2.0.0 Ok", DEADLINE);
    drain(ca, a, sizeof(a));
    CHECK(strstr(b, "250 2.0.0 Ok") != NULL, "another session is served while one waits: '%s'", b);
    CHECK(strstr(a, "550") == NULL && strstr(a, "250 2.0.0 Ok") == NULL,
          "nothing after the pending MAIL is answered yet: '%s'", a);
    wait_reply(loop, ca, a, sizeof(a), "250 2.0.0 Ok", DEADLINE);
    const char *r = strstr(a, "550 5.7.1 Not you\r\n");
    CHECK(r != NULL, "the late verdict is the reply, enhanced code added: '%s'", a);
    CHECK(r && strstr(r, "250 2.0.0 Ok") != NULL, "the NOOP is answered after it, in order: '%s'", a);
    close(ca);
    close(cb);
    int two = 2;
    run_until(loop, closes_reach, &two, DEADLINE);
    CHECK(closes == 2, "close hook once per session: %d", closes);
}

static void test_client_leaves_while_pending(void)
{
    char out[4096];
    reset_plan();
    /* The client's EOF could be a half-close still waiting for the reply:
     * the pending stage completes, then the session closes. */
    plan[HOOK_RCPT] = (struct answer){ VERDICT_ACCEPT, NULL, NULL, false, 0.2 };
    converse("HELO a\r\nMAIL FROM:<x@y.z>\r\nRCPT TO:<r@y.z>\r\n", "250 2.1.0", out, sizeof(out));
    CHECK(closes == 0 && srv.sessions.nsessions == 1, "still waiting for the verdict: %d", closes);
    int one = 1;
    run_until(loop, closes_reach, &one, DEADLINE);
    CHECK(closes == 1, "closed once the verdict came: %d", closes);
    CHECK(srv.sessions.nsessions == 0, "and freed: %lu", srv.sessions.nsessions);
}

static void test_stop_while_pending(void)
{
    reset_plan();
    plan[HOOK_MAIL] = (struct answer){ VERDICT_ACCEPT, NULL, NULL, false, 60 };
    int fd = connect_client(&srv);
    char out[4096] = "";
    CHECK(write(fd, "HELO a\r\nMAIL FROM:<x@y.z>\r\n", 26) == 26, "write");
    wait_reply(loop, fd, out, sizeof(out), "250 ", DEADLINE);   /* HELO's; MAIL waits */
    server_stop(&srv);
    wait_reply(loop, fd, out, sizeof(out), NULL, DEADLINE);
    CHECK(strstr(out, "421 4.3.2") != NULL, "a session waiting on a hook is told at stop: '%s'", out);
    CHECK(closes == 1 && srv.sessions.nsessions == 0, "and closed, its pending verdict dropped: %d", closes);
    close(fd);
    srv.stopping = false;
}

static void test_verdict_forms(void)
{
    static const struct {
        enum hook_stage stage;
        struct answer ans;
        const char *expect;
    } cases[] = {
        { HOOK_MAIL, { VERDICT_REJECT }, "550 5.7.1 Sender rejected\r\n" },
        { HOOK_RCPT, { VERDICT_REJECT }, "550 5.1.1 Recipient rejected\r\n" },
        { HOOK_DATA, { VERDICT_REJECT }, "554 5.7.1 Data rejected\r\n" },
        { HOOK_MESSAGE, { VERDICT_REJECT }, "554 5.6.0 Message rejected\r\n" },
        { HOOK_HELO, { VERDICT_REJECT }, "550 5.7.1 Helo command rejected\r\n" },
        { HOOK_MAIL, { 451 }, "451 4.0.0 Local error in processing\r\n" },
        { HOOK_MAIL, { 553, NULL, "Bad sender" }, "553 5.0.0 Bad sender\r\n" },
        { HOOK_MAIL, { 550, "5.7.26", "Policy" }, "550 5.7.26 Policy\r\n" },
        { HOOK_MAIL, { 550, NULL, "5.7.9 own code" }, "550 5.7.9 own code\r\n" },
        { HOOK_MAIL, { 550, NULL, "line one\nline two" }, "550-5.7.1 line one\r\n550 5.7.1 line two\r\n" },
        /* '\n' separates lines, each gets the code: no reply can be forged */
        { HOOK_MAIL, { 550, NULL, "evil\r\n250 forged" }, "550-5.7.1 evil?\r\n550 5.7.1 250 forged\r\n" },
        { HOOK_MAIL, { 550, NULL, "ctl\x01" "bell\x7f" }, "550 5.7.1 ctl?bell?\r\n" },
        { HOOK_MAIL, { 250, NULL, "Sender fine" }, "250 2.1.0 Sender fine\r\n" },
        { HOOK_RCPT, { 251, NULL, NULL }, "251 2.0.0 User not local; will forward\r\n" },
        { HOOK_MAIL, { 299 }, "451 4.3.0 Temporary server error" },
        { HOOK_MAIL, { 354 }, "451 4.3.0 Temporary server error" },
        { HOOK_MAIL, { 700 }, "451 4.3.0 Temporary server error" },
        { HOOK_DATA, { 250 }, "451 4.3.0 Temporary server error" },
        { HOOK_MESSAGE, { VERDICT_ACCEPT, NULL, "Thanks" }, "250 2.0.0 Thanks\r\n" },
        { HOOK_RSET, { VERDICT_REJECT }, "451 4.3.0 Temporary server error" },
    };
    const char *session =
        "EHLO a\r\nMAIL FROM:<x@y.z>\r\nRCPT TO:<r@y.z>\r\nDATA\r\nbody\r\n.\r\nRSET\r\n";
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[8192];
        reset_plan();
        plan[cases[i].stage] = cases[i].ans;
        converse(session, cases[i].expect, out, sizeof(out));
        CHECK(strstr(out, cases[i].expect) != NULL, "case %zu (%s, %d): got '%s'", i,
              hook_stage_name(cases[i].stage), cases[i].ans.code, out);
    }
}

static void test_refused_greeting(void)
{
    char out[4096];
    reset_plan();
    plan[HOOK_CONNECT] = (struct answer){ VERDICT_REJECT, NULL, "No service for you" };
    converse("EHLO a\r\nMAIL FROM:<x@y.z>\r\nQUIT\r\n", NULL, out, sizeof(out));
    CHECK(strncmp(out, "554 ", 4) == 0 && strstr(out, "No service for you") != NULL,
          "554 greeting: '%s'", out);
    CHECK(strstr(out, "503 5.5.1 Service refused") != NULL, "then only QUIT: '%s'", out);
    CHECK(strstr(out, "221 2.0.0") != NULL, "QUIT still works: '%s'", out);
    CHECK(calls[HOOK_HELO] == 0 && calls[HOOK_MAIL] == 0, "no further hooks run");

    reset_plan();
    plan[HOOK_CONNECT] = (struct answer){ 421, NULL, "Busy" };
    converse("EHLO a\r\n", NULL, out, sizeof(out));
    CHECK(strcmp(out, "421 Busy\r\n") == 0, "421 greeting closes at once: '%s'", out);
}

static void test_disconnect_flag(void)
{
    char out[4096];
    reset_plan();
    plan[HOOK_RCPT] = (struct answer){ 550, NULL, "Go away", true };
    converse("EHLO a\r\nMAIL FROM:<x@y.z>\r\nRCPT TO:<r@y.z>\r\nNOOP\r\n", NULL, out, sizeof(out));
    CHECK(strstr(out, "550 5.1.1 Go away\r\n") != NULL, "reply sent: '%s'", out);
    CHECK(strstr(out, "250 2.0.0 Ok\r\n") == NULL, "nothing after a disconnecting verdict: '%s'", out);
    CHECK(closes == 1, "closed");
}

static void test_hook_arguments(void)
{
    char out[4096];
    reset_plan();
    converse("EHLO a\r\nMAIL FROM:<@relay.example:Someone@Example.COM> SIZE=10\r\n", "250 2.1.0",
             out, sizeof(out));
    CHECK(strcmp(last_address, "Someone@Example.COM") == 0, "address without route or brackets: '%s'",
          last_address);
    CHECK(calls[HOOK_CONNECT] == 1 && calls[HOOK_HELO] == 1 && calls[HOOK_MAIL] == 1, "each stage once");
}

/* AUTH PLAIN and LOGIN as RFC 4954 and 4616 give them; "dXNlcgBzZWNyZXQ=" is
 * "user\0secret", "AHVzZXIAc2VjcmV0" is "\0user\0secret". */
static void test_auth(void)
{
    static const struct {
        const char *input;
        struct answer ans;
        const char *expect, *user, *password;
    } cases[] = {
        { "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n", { 0 }, "235 2.7.0 Authentication successful\r\n",
          "user", "secret" },
        { "AUTH plain\r\nAHVzZXIAc2VjcmV0\r\n", { 0 }, "334 \r\n235 2.7.0", "user", "secret" },
        /* authzid equal to the user */
        { "AUTH PLAIN dXNlcgB1c2VyAHNlY3JldA==\r\n", { 0 }, "235 2.7.0", "user", "secret" },
        { "AUTH LOGIN\r\ndXNlcg==\r\nc2VjcmV0\r\n", { 0 },
          "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0", "user", "secret" },
        { "AUTH LOGIN dXNlcg==\r\nc2VjcmV0\r\n", { 0 }, "334 UGFzc3dvcmQ6\r\n235 2.7.0", "user",
          "secret" },
        /* an empty password */
        { "AUTH LOGIN dXNlcg==\r\n=\r\n", { 0 }, "235 2.7.0", "user", "" },
        { "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n", { VERDICT_REJECT },
          "535 5.7.8 Authentication credentials invalid\r\n", "user", "secret" },
        { "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n", { 454, NULL, "Directory down" },
          "454 4.0.0 Directory down\r\n", "user", "secret" },
        { "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n", { 0, NULL, NULL, false, 0.05 }, "235 2.7.0", "user",
          "secret" },
        { "AUTH PLAIN\r\n*\r\n", { 0 }, "334 \r\n501 5.0.0 Authentication cancelled", NULL, NULL },
        { "AUTH LOGIN\r\n*\r\n", { 0 }, "501 5.0.0 Authentication cancelled", NULL, NULL },
        { "AUTH PLAIN not*base64\r\n", { 0 }, "501 5.5.2 Cannot decode response", NULL, NULL },
        { "AUTH PLAIN AHVzZXIAc2VjcmV0=\r\n", { 0 }, "501 5.5.2 Cannot decode", NULL, NULL },
        { "AUTH PLAIN dXNlcnNlY3JldA==\r\n", { 0 }, "501 5.5.2 Malformed PLAIN", NULL, NULL },
        { "AUTH PLAIN b3RoZXIAdXNlcgBzZWNyZXQ=\r\n", { 0 }, "535 5.7.8 Authorization identity",
          NULL, NULL },
        { "AUTH CRAM-MD5\r\n", { 0 }, "504 5.5.4 Unrecognized authentication type", NULL, NULL },
        { "AUTH\r\n", { 0 }, "501 5.5.4 Syntax: AUTH", NULL, NULL },
        { "AUTH PLAIN AHVzZXIAc2VjcmV0\r\nAUTH PLAIN AHVzZXIAc2VjcmV0\r\n", { 0 },
          "235 2.7.0 Authentication successful\r\n503 5.5.1 Already authenticated", "user", "secret" },
        { "MAIL FROM:<a@b.c>\r\nAUTH PLAIN AHVzZXIAc2VjcmV0\r\n", { 0 },
          "503 5.5.1 AUTH not allowed in a mail transaction", NULL, NULL },
        /* three failures close the session (the third reply, then 421) */
        { "AUTH PLAIN\r\n*\r\nAUTH PLAIN =\r\nAUTH LOGIN\r\n*\r\nNOOP\r\n", { 0 },
          "501 5.0.0 Authentication cancelled\r\n421 4.7.0", NULL, NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char in[1024], out[8192];
        reset_plan();
        last_user[0] = last_password[0] = '\0';
        plan[HOOK_AUTH] = cases[i].ans;
        snprintf(in, sizeof(in), "EHLO a\r\n%s", cases[i].input);
        converse(in, cases[i].expect, out, sizeof(out));
        CHECK(strstr(out, "250-AUTH PLAIN LOGIN\r\n") != NULL, "case %zu: AUTH advertised: '%s'", i, out);
        CHECK(strstr(out, cases[i].expect) != NULL, "case %zu: got '%s'", i, out);
        if (cases[i].user)
            CHECK(strcmp(last_user, cases[i].user) == 0 && strcmp(last_password, cases[i].password) == 0,
                  "case %zu: the hook got '%s' / '%s'", i, last_user, last_password);
        else
            CHECK(calls[HOOK_AUTH] == 0, "case %zu: no hook call", i);
    }
    char out[8192];
    reset_plan();
    converse("HELO a\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n*\r\nNOOP\r\nAUTH PLAIN\r\n*\r\nNOOP\r\n",
             NULL, out, sizeof(out));
    CHECK(strstr(out, "250 2.0.0 Ok\r\n334 \r\n501 5.0.0 Authentication cancelled\r\n421 4.7.0 ") != NULL,
          "the third failure closes, not counting other commands: '%s'", out);
    CHECK(strstr(out, "421 4.7.0 ") && strstr(strstr(out, "421 4.7.0 "), "250 2.0.0") == NULL,
          "nothing answered after the 421: '%s'", out);
}

/* AUTH responses may be long (RFC 4954: 12288 octets); other commands not. */
static void test_auth_line_limits(void)
{
    static char in[16384], out[8192];
    /* PLAIN for "u" and a 1000-byte password: 1,340 base64 characters */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[1003] = { 0, 'u', 0 };
    memset(raw + 3, 'p', 1000);
    size_t o = (size_t)snprintf(in, sizeof(in), "EHLO a\r\nAUTH PLAIN ");
    for (size_t i = 0; i < sizeof(raw); i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (i + 1 < sizeof(raw) ? (unsigned)raw[i + 1] << 8 : 0) |
                     (i + 2 < sizeof(raw) ? raw[i + 2] : 0);
        in[o++] = b64[v >> 18];
        in[o++] = b64[(v >> 12) & 63];
        in[o++] = i + 1 < sizeof(raw) ? b64[(v >> 6) & 63] : '=';
        in[o++] = i + 2 < sizeof(raw) ? b64[v & 63] : '=';
    }
    snprintf(in + o, sizeof(in) - o, "\r\nNOOP %0600d\r\n", 0);
    reset_plan();
    converse(in, "500 5.5.6 Line too long", out, sizeof(out));
    CHECK(strstr(out, "235 2.7.0") != NULL && strlen(last_password) == 1000,
          "a 1,340-byte AUTH line is taken: '%s'", out);
    CHECK(strstr(out, "500 5.5.6 Line too long") != NULL, "a 600-byte NOOP is not: '%s'", out);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);   /* as the server's main() does */
    log_threshold = LV_ERROR;
    config_defaults(&cfg);
    cfg.nlisten = 1;   /* keep config_finish from adding a listener */
    cfg.allow_insecure_auth = 1;   /* AUTH over the socketpair: no TLS here */
    char err[CONFIG_ERR_MAX];
    if (config_finish(&cfg, err) < 0)
        return 1;
    cfg.nlisten = 0;
    loop = ev_default_loop(0);
    if (server_init(&srv, loop, &cfg, &plan_hooks, NULL) < 0)
        return 1;
    test_pending_verdict_holds_the_session();
    test_auth();
    test_auth_line_limits();
    test_client_leaves_while_pending();
    test_verdict_forms();
    test_refused_greeting();
    test_disconnect_flag();
    test_hook_arguments();
    test_stop_while_pending();
    server_free(&srv);
    return test_summary("test_hooks");
}
