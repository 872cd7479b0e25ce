#include "smtp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "config.h"
#include "log.h"
#include "server.h"
#include "session.h"
#include "smtp_parse.h"

#define REPLY_LINE_MAX   512   /* RFC 5321 4.5.3.1.5, with CRLF */
#define REPLY_LINES_MAX  32

/* --- replies ------------------------------------------------------------- */

static const char *standard_text(int code)
{
    switch (code) {
    case 211: return "System status";
    case 214: return "Help message";
    case 220: return "Service ready";
    case 221: return "Closing transmission channel";
    case 235: return "Authentication successful";
    case 250: return "Ok";
    case 251: return "User not local; will forward";
    case 252: return "Cannot verify the user, but will accept the message";
    case 354: return "Start mail input; end with <CRLF>.<CRLF>";
    case 421: return "Service not available, closing transmission channel";
    case 450: return "Mailbox unavailable";
    case 451: return "Local error in processing";
    case 452: return "Insufficient system storage";
    case 454: return "Temporary failure";
    case 455: return "Server unable to accommodate parameters";
    case 530: return "Authentication required";
    case 534: return "Authentication mechanism is too weak";
    case 535: return "Authentication credentials invalid";
    case 538: return "Encryption required for requested authentication mechanism";
    case 500: return "Syntax error, command unrecognized";
    case 501: return "Syntax error in parameters or arguments";
    case 502: return "Command not implemented";
    case 503: return "Bad sequence of commands";
    case 504: return "Command parameter not implemented";
    case 521: return "Does not accept mail";
    case 550: return "Mailbox unavailable";
    case 551: return "User not local";
    case 552: return "Exceeded storage allocation";
    case 553: return "Mailbox name not allowed";
    case 554: return "Transaction failed";
    case 555: return "Parameters not recognized or not implemented";
    }
    return code >= 500 ? "Permanent failure" : code >= 400 ? "Temporary failure" : "Ok";
}

/* Does text start with an RFC 3463 code ("5.7.1 ")? */
static bool has_enhanced(const char *t)
{
    if ((t[0] != '2' && t[0] != '4' && t[0] != '5') || t[1] != '.')
        return false;
    size_t i = 2, d = 0;
    while (t[i] >= '0' && t[i] <= '9' && d < 3) i++, d++;
    if (d == 0 || t[i] != '.')
        return false;
    i++, d = 0;
    while (t[i] >= '0' && t[i] <= '9' && d < 3) i++, d++;
    return d > 0 && (t[i] == ' ' || t[i] == '\0' || t[i] == '\n');
}

/*
 * Queue a reply of one or more lines ('\n' separates them in text).  Each
 * line gets the code and, when enh is not NULL, the enhanced code, unless
 * the line brings its own.  Control and non-ASCII bytes become '?'.
 */
static void reply_text(struct session *s, int code, const char *enh, const char *text)
{
    char line[REPLY_LINE_MAX];
    const char *p = text;

    for (int nl = 0; nl < REPLY_LINES_MAX; nl++) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        bool last = eol == NULL || eol[1] == '\0' || nl == REPLY_LINES_MAX - 1;
        size_t n = 0;
        line[n++] = (char)('0' + code / 100 % 10);
        line[n++] = (char)('0' + code / 10 % 10);
        line[n++] = (char)('0' + code % 10);
        line[n++] = last ? ' ' : '-';
        if (enh && *enh && !has_enhanced(p)) {
            size_t el = strnlen(enh, VERDICT_ENH_MAX - 1);
            memcpy(line + n, enh, el);
            n += el;
            line[n++] = ' ';
        }
        size_t room = sizeof(line) - n - 2;
        if (len > room)
            len = room;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)p[i];
            line[n++] = (c < 32 || c >= 127) ? '?' : (char)c;
        }
        if (log_enabled(code >= 400 ? LOG_INFO : LOG_DEBUG))
            log_msg(code >= 400 ? LOG_INFO : LOG_DEBUG, s->id, "> %.*s", (int)n, line);
        line[n++] = '\r';
        line[n++] = '\n';
        session_write(s, line, n);
        if (last)
            break;
        p = eol + 1;
    }
}

static void reply(struct session *s, int code, const char *enh, const char *fmt, ...)
    LOG_PRINTF(4, 5);

static void reply(struct session *s, int code, const char *enh, const char *fmt, ...)
{
    char text[REPLY_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    reply_text(s, code, enh, text);
}

static const char *hostname(const struct session *s)
{
    return s->srv->cfg->hostname;
}

/* Reply, then close once it has been sent. */
static void reply_close(struct session *s, const char *enh, const char *why)
{
    reply(s, 421, enh, "%s %s, closing connection", hostname(s), why);
    s->closing = true;
}

/* A client error: count it against --max-errors. */
static void reply_error(struct session *s, int code, const char *enh, const char *text)
{
    reply_text(s, code, enh, text);
    if (++s->nerrors >= (unsigned)s->srv->cfg->max_errors)
        reply_close(s, "4.7.0", "Too many errors");
}

/* --- the transaction ------------------------------------------------------- */

static void reset_transaction(struct session *s)
{
    free(s->sender);
    s->sender = NULL;
    s->smtputf8 = false;
    for (size_t i = 0; i < s->nrcpts; i++)
        free(s->rcpts[i]);
    s->nrcpts = 0;
    buf_free(&s->msg);
    if (s->state >= ST_READY)
        s->state = ST_READY;
}

void smtp_free(struct session *s)
{
    reset_transaction(s);
    free(s->rcpts);
    s->rcpts = NULL;
    s->rcpts_cap = 0;
    free(s->helo);
    s->helo = NULL;
    free(s->user);
    s->user = NULL;
}

static int add_recipient(struct session *s, const char *addr)
{
    if (s->nrcpts == s->rcpts_cap) {
        size_t cap = s->rcpts_cap ? s->rcpts_cap * 2 : 4;
        char **r = realloc(s->rcpts, cap * sizeof(*r));
        if (r == NULL)
            return -1;
        s->rcpts = r;
        s->rcpts_cap = cap;
    }
    char *copy = strdup(addr);
    if (copy == NULL)
        return -1;
    s->rcpts[s->nrcpts++] = copy;
    return 0;
}

/* --- verdicts -------------------------------------------------------------- */

struct stage_def {
    int accept_code;  const char *accept_enh;  const char *accept_text;
    int reject_code;  const char *reject_enh;  const char *reject_text;
};

/* The normal reply and the default rejection of each stage.  An enh of
 * NULL means the stage's replies carry no enhanced code (RFC 2034: not on
 * the greeting; 354 is not a completion reply). */
static const struct stage_def stages[HOOK_STAGE_COUNT] = {
    [HOOK_CONNECT] = { 220, NULL,    "ESMTP " SMTP_SOFTWARE, 554, NULL,    "Service unavailable" },
    [HOOK_HELO]    = { 250, NULL,    "",                     550, "5.7.1", "Helo command rejected" },
    [HOOK_MAIL]    = { 250, "2.1.0", "Ok",                   550, "5.7.1", "Sender rejected" },
    [HOOK_RCPT]    = { 250, "2.1.5", "Ok",                   550, "5.1.1", "Recipient rejected" },
    [HOOK_DATA]    = { 354, NULL,    "End data with <CR><LF>.<CR><LF>", 554, "5.7.1", "Data rejected" },
    [HOOK_MESSAGE] = { 250, "2.0.0", "Ok: queued as",        554, "5.6.0", "Message rejected" },
    [HOOK_RSET]    = { 250, "2.0.0", "Ok",                   0,   NULL,    NULL },
    [HOOK_AUTH]    = { 235, "2.7.0", "Authentication successful", 535, "5.7.8",
                       "Authentication credentials invalid" },
    /* accepted, VRFY and EXPN answer with the argument itself */
    [HOOK_VRFY]    = { 250, "2.1.5", "",                     550, "5.1.1", "User unknown" },
    [HOOK_EXPN]    = { 250, "2.1.5", "",                     550, "5.1.1", "List unknown" },
};

const char *hook_stage_name(enum hook_stage stage)
{
    static const char *const names[HOOK_STAGE_COUNT] = {
        "connect", "helo", "mail", "rcpt", "data", "message", "rset", "auth", "vrfy", "expn",
    };
    return (unsigned)stage < HOOK_STAGE_COUNT ? names[stage] : "?";
}

static bool code_fits(enum hook_stage st, int code)
{
    const struct stage_def *d = &stages[st];
    if (code < 200 || code > 599)
        return false;
    if (code >= 400)
        return true;
    if (code == d->accept_code)
        return true;
    return (st == HOOK_RCPT || st == HOOK_VRFY || st == HOOK_EXPN) && (code == 251 || code == 252);
}

/* The reply a verdict gives: code, enhanced code and text.  Returns the
 * code; an unusable verdict becomes 451 4.3.0 and is logged. */
static int resolve(struct session *s, enum hook_stage st, const struct verdict *v,
                   const char **enh_r, const char **text_r)
{
    const struct stage_def *d = &stages[st];
    int code = v->code;

    if (code == VERDICT_ACCEPT) {
        code = d->accept_code;
        *enh_r = d->accept_enh;
        *text_r = d->accept_text;
    } else if (code == VERDICT_REJECT && d->reject_code) {
        code = d->reject_code;
        *enh_r = d->reject_enh;
        *text_r = d->reject_text;
    } else if (code_fits(st, code)) {
        if (code == d->accept_code) {
            *enh_r = d->accept_enh;
            *text_r = d->accept_text;
        } else if (code == d->reject_code) {
            *enh_r = d->reject_enh;
            *text_r = d->reject_text;
        } else {
            static const char *const cls[] = { "2.0.0", "4.0.0", "5.0.0" };
            *enh_r = (st == HOOK_CONNECT || (st == HOOK_HELO && code < 300)) ? NULL
                     : cls[code >= 500 ? 2 : code >= 400 ? 1 : 0];
            *text_r = standard_text(code);
        }
    } else {
        log_msg(LOG_WARN, s->id, "hook %s: invalid reply code %d; answering 451",
                hook_stage_name(st), v->code);
        *enh_r = st == HOOK_CONNECT ? NULL : "4.3.0";
        *text_r = "Temporary server error, try again later";
        return 451;
    }
    if (v->text[0] != '\0')
        *text_r = v->text;
    if (v->enhanced[0] != '\0' && *enh_r != NULL)
        *enh_r = v->enhanced;
    return code;
}

/* STARTTLS is offered on a plaintext session of a server with a certificate. */
static bool starttls_offered(const struct session *s)
{
    return s->srv->tls != NULL && s->tls_state == STLS_NONE;
}

/* AUTH is offered when the script decides it, over TLS unless allowed
 * without (RFC 4954 section 4 asks for a protected channel for PLAIN). */
static bool auth_offered(const struct session *s)
{
    const struct hooks *h = s->srv->hooks;
    return (s->tls_state == STLS_ON || s->srv->cfg->allow_insecure_auth) &&
           h->defines(h->ctx, HOOK_AUTH);
}

static void send_ehlo(struct session *s, const char *greet)
{
    const struct config *cfg = s->srv->cfg;
    bool auth = auth_offered(s);
    char text[REPLY_LINE_MAX * 2];
    /* the first line is cut at REPLY_LINE_MAX anyway: the greeting text
     * never pushes the keywords out */
    snprintf(text, sizeof(text),
             "%s%s%.256s%s\nSIZE %lld\n8BITMIME\nENHANCEDSTATUSCODES\nSMTPUTF8%s%s%s%s\nHELP",
             hostname(s), *greet ? " " : "", greet, cfg->pipelining ? "\nPIPELINING" : "",
             cfg->max_size, starttls_offered(s) ? "\nSTARTTLS" : "",
             auth ? "\nAUTH" : "", auth && (cfg->auth_methods & CONFIG_AUTH_PLAIN) ? " PLAIN" : "",
             auth && (cfg->auth_methods & CONFIG_AUTH_LOGIN) ? " LOGIN" : "");
    reply_text(s, 250, NULL, text);
}

/* An AUTH exchange failed: counted against --max-auth-failures. */
static void auth_failed(struct session *s, int code, const char *enh, const char *text)
{
    s->state = ST_READY;
    s->auth_step = AUTH_NONE;
    reply_text(s, code, enh, text);
    if (++s->nauth_failures >= (unsigned)s->srv->cfg->max_auth_failures) {
        log_msg(LOG_WARN, s->id, "%u failed AUTH attempts: closing", s->nauth_failures);
        reply_close(s, "4.7.0", "Too many authentication failures");
    }
}

static void finish_stage(struct session *s, enum hook_stage st, const struct verdict *v)
{
    const char *enh, *text;
    int code = resolve(s, st, v, &enh, &text);
    bool ok = code < 400;
    const char *arg = s->pending_arg;

    switch (st) {
    case HOOK_CONNECT:
        s->state = ok ? ST_INIT : ST_REFUSED;
        if (text == stages[HOOK_CONNECT].accept_text)
            text = s->srv->cfg->banner;
        if (code == 220 || code == 554)
            reply(s, code, NULL, "%s %s", hostname(s), text);
        else
            reply_text(s, code, NULL, text);
        break;
    case HOOK_HELO:
        if (ok) {
            char *copy = strdup(arg);
            if (copy == NULL) {
                reply(s, 451, "4.3.0", "Out of memory, try again later");
                break;
            }
            free(s->helo);
            s->helo = copy;
            s->state = ST_READY;
            if (s->esmtp)
                send_ehlo(s, text);
            else
                reply(s, 250, NULL, "%s%s%s", hostname(s), *text ? " " : "", text);
        } else {
            free(s->helo);
            s->helo = NULL;
            s->state = ST_INIT;
            reply_text(s, code, enh, text);
        }
        break;
    case HOOK_MAIL:
        if (ok && (s->sender = strdup(arg)) == NULL) {
            code = 451, enh = "4.3.0", text = "Out of memory, try again later";
            ok = false;
        }
        if (ok)
            s->state = ST_MAIL;
        else
            s->smtputf8 = false;
        reply_text(s, code, enh, text);
        break;
    case HOOK_RCPT:
        if (ok && add_recipient(s, arg) < 0) {
            code = 451, enh = "4.3.0", text = "Out of memory, try again later";
            ok = false;
        }
        if (ok)
            s->state = ST_RCPT;
        reply_text(s, code, enh, text);
        break;
    case HOOK_DATA:
        if (ok) {
            s->state = ST_DATA;
            smtp_data_init(&s->data);
        }
        reply_text(s, code, enh, text);
        break;
    case HOOK_MESSAGE:
        if (ok) {
            s->nmessages++;
            /* Addresses are validated: no control characters to escape. */
            log_msg(LOG_INFO, s->id, "message %s from=<%s> to=<%s>%s size=%zu: %d", s->msgid,
                    s->sender, s->rcpts[0], s->nrcpts > 1 ? ",..." : "", buf_len(&s->msg), code);
            if (text == stages[HOOK_MESSAGE].accept_text)
                reply(s, code, enh, "%s %s", text, s->msgid);
            else
                reply_text(s, code, enh, text);
        } else {
            log_msg(LOG_INFO, s->id, "message %s rejected: %d", s->msgid, code);
            reply_text(s, code, enh, text);
        }
        reset_transaction(s);
        if (s->draining && code != 421)
            reply_close(s, "4.3.2", "Service shutting down");
        break;
    case HOOK_AUTH:
        if (ok && (s->user = strdup(arg)) == NULL) {
            code = 454, enh = "4.7.0", text = "Out of memory, try again later";
            ok = false;
        }
        if (log_enabled(LOG_INFO)) {
            char esc[AUTH_USER_MAX * 4 + 1];
            log_msg(LOG_INFO, s->id, "AUTH user=<%s>: %d", log_escape(esc, sizeof(esc), arg, strlen(arg)),
                    code);
        }
        if (ok) {
            s->state = ST_READY;
            reply_text(s, code, enh, text);
        } else {
            auth_failed(s, code, enh, text);
        }
        break;
    case HOOK_VRFY:
    case HOOK_EXPN:
        if (text == stages[st].accept_text)
            text = arg;
        reply_text(s, code, enh, text);
        break;
    case HOOK_RSET:
    case HOOK_STAGE_COUNT:
        reply_text(s, code, enh, text);
        break;
    }
    if ((code == 421 || v->disconnect) && !s->closing)
        s->closing = true;
}

/* Ask the hooks; arg (HELO name or address) is kept for finish_stage. */
static void call_hook(struct session *s, enum hook_stage st, const struct hook_args *a,
                      const char *arg)
{
    struct verdict v;
    const struct hooks *h = s->srv->hooks;

    v.code = VERDICT_ACCEPT;
    v.enhanced[0] = v.text[0] = '\0';
    v.disconnect = false;
    if (arg) {
        /* Parsed names and addresses fit: SMTP_PATH_MAX bounds both. */
        size_t n = strnlen(arg, sizeof(s->pending_arg) - 1);
        memcpy(s->pending_arg, arg, n);
        s->pending_arg[n] = '\0';
    }
    if (h->call(h->ctx, s, st, a, &v) == HOOK_PENDING) {
        s->pending = (int)st;
        session_wait(s, true);
        return;
    }
    finish_stage(s, st, &v);
}

void smtp_verdict(struct session *s, const struct verdict *v)
{
    if (s->dead || s->pending < 0)
        return;
    enum hook_stage st = (enum hook_stage)s->pending;
    s->pending = -1;
    session_wait(s, false);
    finish_stage(s, st, v);
    session_settle(s);
}

/* --- commands -------------------------------------------------------------- */

static void cmd_helo(struct session *s, const struct smtp_cmd *c)
{
    bool esmtp = c->verb == SMTP_EHLO;
    size_t n = 0;
    while (n < c->arglen && c->arg[n] != ' ')
        n++;
    bool ok = n > 0 && n <= SMTP_DOMAIN_MAX && smtp_utf8_valid(c->arg, n);
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)c->arg[i] >= 32 && c->arg[i] != 127;
    if (!ok) {
        reply_error(s, 501, "5.5.4", esmtp ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
        return;
    }
    char name[SMTP_DOMAIN_MAX + 1];
    memcpy(name, c->arg, n);
    name[n] = '\0';
    /* RFC 5321 4.1.4: HELO/EHLO in a transaction resets it. */
    reset_transaction(s);
    s->esmtp = esmtp;
    struct hook_args a = { .name = name, .esmtp = esmtp };
    call_hook(s, HOOK_HELO, &a, name);
}

static void path_error(struct session *s, enum smtp_path_status st, bool mail)
{
    switch (st) {
    case SMTP_PATH_BAD_PREFIX:
        reply_error(s, 501, "5.5.4", mail ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>");
        break;
    case SMTP_PATH_TOO_LONG:
        reply_error(s, 501, mail ? "5.1.7" : "5.1.3", "Address too long");
        break;
    case SMTP_PATH_BAD_PARAMS:
        reply_error(s, 501, "5.5.4", "Bad parameter syntax");
        break;
    default:
        reply_error(s, 501, mail ? "5.1.7" : "5.1.3",
                    mail ? "Bad sender address syntax" : "Bad recipient address syntax");
        break;
    }
}

static void reply_unsupported(struct session *s, const struct smtp_param *p)
{
    char text[REPLY_LINE_MAX];
    snprintf(text, sizeof(text), "Unsupported parameter %.*s", (int)p->keylen, p->key);
    reply_error(s, 555, "5.5.4", text);
}

/* MAIL parameters: SIZE, BODY, SMTPUTF8.  0, or -1 after replying. */
static int mail_params(struct session *s, const struct smtp_params *ps)
{
    char text[REPLY_LINE_MAX];
    for (size_t i = 0; i < ps->n; i++) {
        const struct smtp_param *p = &ps->p[i];
        for (size_t j = 0; j < i; j++) {
            if (ps->p[j].keylen == p->keylen && strncasecmp(ps->p[j].key, p->key, p->keylen) == 0) {
                snprintf(text, sizeof(text), "Duplicate parameter %.*s", (int)p->keylen, p->key);
                reply_error(s, 501, "5.5.4", text);
                return -1;
            }
        }
        if (smtp_ieq(p->key, p->keylen, "SIZE")) {
            unsigned long long v = 0;
            bool ok = p->value != NULL && p->valuelen <= 20;
            for (size_t k = 0; ok && k < p->valuelen; k++) {
                ok = p->value[k] >= '0' && p->value[k] <= '9';
                v = v * 10 + (unsigned)(p->value[k] - '0');
            }
            if (!ok) {
                reply_error(s, 501, "5.5.4", "Bad SIZE parameter");
                return -1;
            }
            if (v > (unsigned long long)s->srv->cfg->max_size) {
                reply(s, 552, "5.3.4", "Message size exceeds fixed maximum message size (%lld)",
                      s->srv->cfg->max_size);
                return -1;
            }
        } else if (smtp_ieq(p->key, p->keylen, "BODY")) {
            if (p->value == NULL || !(smtp_ieq(p->value, p->valuelen, "7BIT") ||
                                      smtp_ieq(p->value, p->valuelen, "8BITMIME"))) {
                reply_error(s, 555, "5.5.4", "Unsupported BODY value (7BIT or 8BITMIME)");
                return -1;
            }
        } else if (smtp_ieq(p->key, p->keylen, "SMTPUTF8")) {
            if (p->value != NULL) {
                reply_error(s, 555, "5.5.4", "SMTPUTF8 takes no value");
                return -1;
            }
            s->smtputf8 = true;
        } else {
            reply_unsupported(s, p);
            return -1;
        }
    }
    return 0;
}

static void cmd_mail(struct session *s, const struct smtp_cmd *c)
{
    struct smtp_path path;
    long long maxm = s->srv->cfg->max_messages;

    if (s->draining) {
        reply_close(s, "4.3.2", "Service shutting down");
        return;
    }
    if (maxm > 0 && s->nmessages >= (unsigned long long)maxm) {
        reply_close(s, "4.7.0", "Too many messages in one session");
        return;
    }
    if (s->srv->cfg->require_tls && s->tls_state != STLS_ON) {
        reply_error(s, 530, "5.7.0", "Must issue a STARTTLS command first");
        return;
    }
    if (s->srv->cfg->require_auth && s->user == NULL) {
        reply_error(s, 530, "5.7.0", "Authentication required");
        return;
    }
    enum smtp_path_status st = smtp_parse_path(c->arg, c->arglen, "FROM:", SMTP_PATH_NULL_OK, &path);
    if (st != SMTP_PATH_OK) {
        path_error(s, st, true);
        return;
    }
    s->smtputf8 = false;
    if (mail_params(s, &path.params) < 0) {
        s->smtputf8 = false;
        return;
    }
    if (path.utf8 && !s->smtputf8) {
        reply_error(s, 553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        return;
    }
    struct hook_args a = { .address = path.addr, .params = &path.params };
    call_hook(s, HOOK_MAIL, &a, path.addr);
}

/*
 * --domain: a recipient in another domain is refused before on_rcpt
 * (unless the client authenticated), and the postmaster of a listed domain
 * (or <Postmaster>) is accepted without asking (RFC 5321 4.5.1).  True when
 * the RCPT has been answered here.
 */
static bool rcpt_by_domain(struct session *s, const char *addr)
{
    const struct config *cfg = s->srv->cfg;
    if (cfg->any_domain || cfg->ndomains == 0)
        return false;
    const char *at = strrchr(addr, '@');
    const char *domain = at ? at + 1 : "";
    bool ours = at == NULL || config_domain_accepted(cfg, domain, strlen(domain));
    if (!ours && s->user == NULL) {
        reply(s, 550, "5.7.1", "<%s>: Relaying denied: %s takes mail for its own domains only",
              addr, cfg->domains[0]);
        return true;
    }
    if (ours && (at ? (size_t)(at - addr) : strlen(addr)) == 10 && strncasecmp(addr, "postmaster", 10) == 0) {
        struct verdict v = { .code = VERDICT_ACCEPT };
        memcpy(s->pending_arg, addr, strlen(addr) + 1);   /* parsed: fits */
        finish_stage(s, HOOK_RCPT, &v);
        return true;
    }
    return false;
}

static void cmd_rcpt(struct session *s, const struct smtp_cmd *c)
{
    struct smtp_path path;

    if (s->nrcpts >= (size_t)s->srv->cfg->max_recipients) {
        reply(s, 452, "4.5.3", "Too many recipients");
        return;
    }
    enum smtp_path_status st = smtp_parse_path(c->arg, c->arglen, "TO:", SMTP_PATH_POSTMASTER_OK, &path);
    if (st != SMTP_PATH_OK) {
        path_error(s, st, false);
        return;
    }
    if (path.params.n > 0) {   /* no RCPT parameter is offered */
        reply_unsupported(s, &path.params.p[0]);
        return;
    }
    if (path.utf8 && !s->smtputf8) {
        reply_error(s, 553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
        return;
    }
    if (rcpt_by_domain(s, path.addr))
        return;
    struct hook_args a = { .address = path.addr, .params = &path.params };
    call_hook(s, HOOK_RCPT, &a, path.addr);
}

static void cmd_data(struct session *s, const struct smtp_cmd *c)
{
    if (c->arglen > 0) {
        reply_error(s, 501, "5.5.4", "Syntax: DATA");
        return;
    }
    s->ntransactions++;
    snprintf(s->msgid, sizeof(s->msgid), "%s.%lu", s->id, s->ntransactions);
    struct hook_args a = { 0 };
    call_hook(s, HOOK_DATA, &a, NULL);
}

static void end_of_data(struct session *s)
{
    if (s->data.overflow) {
        /* the message buffer could not grow: past --max-size, or no memory */
        if (s->data.size > (size_t)s->srv->cfg->max_size) {
            log_msg(LOG_INFO, s->id, "message %s refused: %zu bytes over --max-size %lld",
                    s->msgid, s->data.size, s->srv->cfg->max_size);
            reply(s, 552, "5.3.4", "Message size exceeds fixed maximum message size (%lld)",
                  s->srv->cfg->max_size);
        } else {
            log_msg(LOG_ERROR, s->id, "message %s refused: out of memory for %zu bytes", s->msgid,
                    s->data.size);
            reply(s, 451, "4.3.0", "Out of memory, try again later");
        }
        reset_transaction(s);
        if (s->draining)
            reply_close(s, "4.3.2", "Service shutting down");
        return;
    }
    s->state = ST_READY;   /* no more message bytes, whatever the verdict */
    struct hook_args a = { .message = buf_head(&s->msg),
                           .size = buf_len(&s->msg) };
    call_hook(s, HOOK_MESSAGE, &a, NULL);
}

static void cmd_rset(struct session *s, const struct smtp_cmd *c)
{
    if (c->arglen > 0) {
        reply_error(s, 501, "5.5.4", "Syntax: RSET");
        return;
    }
    reset_transaction(s);
    struct hook_args a = { 0 };
    call_hook(s, HOOK_RSET, &a, NULL);
}

static void cmd_noop(struct session *s, const struct smtp_cmd *c)
{
    (void)c;
    reply(s, 250, "2.0.0", "Ok");
}

static void cmd_quit(struct session *s, const struct smtp_cmd *c)
{
    if (c->arglen > 0) {
        reply_error(s, 501, "5.5.4", "Syntax: QUIT");
        return;
    }
    reply(s, 221, "2.0.0", "%s Bye", hostname(s));
    s->closing = true;
}

/* VRFY and EXPN: a fixed answer, or the script's when it decides the stage. */
static void ask_directory(struct session *s, const struct smtp_cmd *c, enum hook_stage st)
{
    const struct hooks *h = s->srv->hooks;
    bool vrfy = st == HOOK_VRFY;
    if (c->arglen == 0 || c->arglen > SMTP_PATH_MAX || !smtp_utf8_valid(c->arg, c->arglen) ||
        memchr(c->arg, '\0', c->arglen) != NULL) {
        reply_error(s, 501, "5.5.4", vrfy ? "Syntax: VRFY address" : "Syntax: EXPN list");
        return;
    }
    if (!h->defines(h->ctx, st)) {
        if (vrfy)   /* RFC 5321 3.5.3: never confirm or deny an address */
            reply(s, 252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
        else
            reply(s, 502, "5.5.1", "EXPN not available");
        return;
    }
    char arg[SMTP_PATH_MAX + 1];
    memcpy(arg, c->arg, c->arglen);
    arg[c->arglen] = '\0';
    struct hook_args a = { .address = arg };
    call_hook(s, st, &a, arg);
}

static void cmd_vrfy(struct session *s, const struct smtp_cmd *c)
{
    ask_directory(s, c, HOOK_VRFY);
}

static void cmd_expn(struct session *s, const struct smtp_cmd *c)
{
    ask_directory(s, c, HOOK_EXPN);
}

static void cmd_help(struct session *s, const struct smtp_cmd *c)
{
    char text[REPLY_LINE_MAX];
    (void)c;
    snprintf(text, sizeof(text),
             SMTP_SOFTWARE " accepts: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY EXPN HELP%s%s\n"
             "See RFC 5321", starttls_offered(s) ? " STARTTLS" : "", auth_offered(s) ? " AUTH" : "");
    reply_text(s, 214, "2.0.0", text);
}

static void cmd_starttls(struct session *s, const struct smtp_cmd *c)
{
    if (s->tls_state != STLS_NONE) {
        reply_error(s, 503, "5.5.1", "TLS already active");
        return;
    }
    if (s->srv->tls == NULL) {
        reply_error(s, 502, "5.5.1", "STARTTLS not available");
        return;
    }
    if (c->arglen > 0) {
        reply_error(s, 501, "5.5.4", "Syntax: STARTTLS");
        return;
    }
    reply(s, 220, "2.0.0", "Ready to start TLS");
    session_starttls(s);
}

void smtp_tls_ready(struct session *s, bool implicit)
{
    if (implicit) {
        smtp_start(s);
        return;
    }
    /* RFC 3207 section 4.2: forget all the client said before; a new EHLO
     * is needed. */
    reset_transaction(s);
    free(s->helo);
    s->helo = NULL;
    free(s->user);
    s->user = NULL;
    s->esmtp = false;
    s->state = ST_INIT;
}

_Static_assert(AUTH_USER_MAX < sizeof(((struct session *)0)->pending_arg),
               "pending_arg holds a user name");

/* Hand a user name and password to the hooks (the caller wipes the
 * password's buffer). */
static void auth_check(struct session *s, const char *user, size_t ulen, char *pass, size_t plen)
{
    if (!auth_text_ok(user, ulen, AUTH_USER_MAX) || !auth_text_ok(pass, plen, AUTH_PASSWORD_MAX)) {
        auth_failed(s, 501, "5.5.2", "User name or password too long or malformed");
        return;
    }
    char name[AUTH_USER_MAX + 1];
    memcpy(name, user, ulen);
    name[ulen] = '\0';
    pass[plen] = '\0';
    struct hook_args a = { .user = name, .password = pass };
    call_hook(s, HOOK_AUTH, &a, name);
}

/*
 * A SASL response: the initial response of the AUTH command or a line of
 * its own.  "*" cancels (RFC 4954 section 4); PLAIN is one message, LOGIN a
 * user name then a password.
 */
static void auth_response(struct session *s, const char *line, size_t len)
{
    char dec[AUTH_LINE_MAX];
    size_t n;

    if (len == 1 && line[0] == '*') {
        auth_failed(s, 501, "5.0.0", "Authentication cancelled");
        return;
    }
    if (len == 1 && line[0] == '=')
        n = 0;      /* an empty initial response */
    else if (auth_b64_decode(line, len, dec, sizeof(dec) - 1, &n) < 0) {
        auth_failed(s, 501, "5.5.2", "Cannot decode response");
        return;
    }
    switch (s->auth_step) {
    case AUTH_PLAIN: {
        struct auth_plain p;
        if (auth_plain_split(dec, n, &p) < 0) {
            auth_failed(s, 501, "5.5.2", "Malformed PLAIN response");
        } else if (p.authzid_len > 0 &&
                   (p.authzid_len != p.user_len || memcmp(p.authzid, p.user, p.user_len) != 0)) {
            /* acting for another identity is not offered */
            auth_failed(s, 535, "5.7.8", "Authorization identity not allowed");
        } else {
            s->auth_step = AUTH_NONE;
            auth_check(s, p.user, p.user_len, (char *)p.password, p.password_len);
        }
        break;
    }
    case AUTH_LOGIN_USER:
        /* the name waits in pending_arg for the password */
        if (n == 0 || !auth_text_ok(dec, n, AUTH_USER_MAX)) {
            auth_failed(s, 501, "5.5.2", "Malformed user name");
            break;
        }
        memcpy(s->pending_arg, dec, n);
        s->pending_arg[n] = '\0';
        s->auth_step = AUTH_LOGIN_PASSWORD;
        s->state = ST_AUTH;
        reply(s, 334, NULL, "UGFzc3dvcmQ6");   /* "Password:" */
        break;
    case AUTH_LOGIN_PASSWORD:
        s->auth_step = AUTH_NONE;
        auth_check(s, s->pending_arg, strlen(s->pending_arg), dec, n);
        break;
    case AUTH_NONE:
        break;
    }
    explicit_bzero(dec, sizeof(dec));
}

static void cmd_auth(struct session *s, const struct smtp_cmd *c)
{
    const struct hooks *h = s->srv->hooks;
    if (!h->defines(h->ctx, HOOK_AUTH)) {
        reply_error(s, 502, "5.5.1", "AUTH not available");
        return;
    }
    if (!auth_offered(s)) {
        reply_error(s, 538, "5.7.11", "Encryption required: use STARTTLS first");
        return;
    }
    if (s->user != NULL) {
        reply_error(s, 503, "5.5.1", "Already authenticated");
        return;
    }
    size_t m = 0;
    while (m < c->arglen && c->arg[m] != ' ')
        m++;
    const char *ir = m < c->arglen ? c->arg + m + 1 : NULL;
    size_t irlen = ir ? c->arglen - m - 1 : 0;
    unsigned methods = (unsigned)s->srv->cfg->auth_methods;
    if (smtp_ieq(c->arg, m, "PLAIN") && (methods & CONFIG_AUTH_PLAIN)) {
        s->auth_step = AUTH_PLAIN;
    } else if (smtp_ieq(c->arg, m, "LOGIN") && (methods & CONFIG_AUTH_LOGIN)) {
        s->auth_step = AUTH_LOGIN_USER;
    } else {
        reply_error(s, m ? 504 : 501, "5.5.4", m ? "Unrecognized authentication type"
                                                 : "Syntax: AUTH mechanism [initial-response]");
        return;
    }
    if (ir) {
        auth_response(s, ir, irlen);
        return;
    }
    s->state = ST_AUTH;
    if (s->auth_step == AUTH_PLAIN)
        reply_text(s, 334, NULL, "");   /* an empty challenge */
    else
        reply(s, 334, NULL, "VXNlcm5hbWU6");   /* "Username:" */
}

static void cmd_not_implemented(struct session *s, const struct smtp_cmd *c)
{
    (void)c;
    reply_error(s, 502, "5.5.1", "Command not implemented");
}

#define S(x) (1u << (x))
#define S_SESSION (S(ST_INIT) | S(ST_READY) | S(ST_MAIL) | S(ST_RCPT))

static const struct command {
    unsigned    states;       /* where the command is allowed */
    const char *out_of_order; /* the 503 text elsewhere */
    void (*run)(struct session *, const struct smtp_cmd *);
} commands[SMTP_VERB_COUNT] = {
    [SMTP_HELO]     = { S_SESSION, NULL, cmd_helo },
    [SMTP_EHLO]     = { S_SESSION, NULL, cmd_helo },
    [SMTP_MAIL]     = { S(ST_READY), NULL, cmd_mail },
    [SMTP_RCPT]     = { S(ST_MAIL) | S(ST_RCPT), "Need MAIL before RCPT", cmd_rcpt },
    [SMTP_DATA]     = { S(ST_RCPT), NULL, cmd_data },
    [SMTP_RSET]     = { S_SESSION, NULL, cmd_rset },
    [SMTP_NOOP]     = { S_SESSION, NULL, cmd_noop },
    [SMTP_QUIT]     = { S_SESSION | S(ST_REFUSED), NULL, cmd_quit },
    [SMTP_VRFY]     = { S_SESSION, NULL, cmd_vrfy },
    [SMTP_EXPN]     = { S_SESSION, NULL, cmd_expn },
    [SMTP_HELP]     = { S_SESSION, NULL, cmd_help },
    [SMTP_STARTTLS] = { S_SESSION, NULL, cmd_starttls },
    [SMTP_AUTH]     = { S(ST_READY), NULL, cmd_auth },
    [SMTP_BDAT]     = { S_SESSION, NULL, cmd_not_implemented },
    [SMTP_ETRN]     = { S_SESSION, NULL, cmd_not_implemented },
    [SMTP_TURN]     = { S_SESSION, NULL, cmd_not_implemented },
};

static const char *sequence_error(const struct session *s, enum smtp_verb verb)
{
    if (s->state == ST_REFUSED)
        return "Service refused; only QUIT is accepted";
    switch (verb) {
    case SMTP_MAIL:
        return s->state == ST_INIT ? "Send HELO or EHLO first" : "Nested MAIL command";
    case SMTP_DATA:
        return s->state == ST_MAIL ? "Need RCPT before DATA" : "Need MAIL before DATA";
    case SMTP_AUTH:   /* RFC 4954 section 4: not within a transaction */
        return s->state == ST_INIT ? "Send EHLO first" : "AUTH not allowed in a mail transaction";
    default:
        return commands[verb].out_of_order ? commands[verb].out_of_order : "Bad sequence of commands";
    }
}

static void command(struct session *s, const char *line, size_t len)
{
    struct smtp_cmd c;

    smtp_parse_command(line, len, &c);
    if (len + 2 > SMTP_LINE_MAX && c.verb != SMTP_AUTH) {
        reply_error(s, 500, "5.5.6", "Line too long");
        return;
    }
    if (log_enabled(LOG_DEBUG)) {
        char esc[REPLY_LINE_MAX * 4];
        size_t shown = len;
        const char *sp = c.verb == SMTP_AUTH ? memchr(c.arg, ' ', c.arglen) : NULL;
        if (sp)   /* never log credentials: the mechanism only */
            shown = (size_t)(sp - line);
        log_msg(LOG_DEBUG, s->id, "< %s%s", log_escape(esc, sizeof(esc), line, shown),
                shown < len ? " ***" : "");
    }
    const struct command *cmd = &commands[c.verb];
    if (cmd->run == NULL) {
        reply_error(s, 500, "5.5.1", "Command unrecognized");
        return;
    }
    if (!(cmd->states & S(s->state))) {
        reply_error(s, 503, "5.5.1", sequence_error(s, c.verb));
        return;
    }
    cmd->run(s, &c);
}

/* --- input ----------------------------------------------------------------- */

void smtp_start(struct session *s)
{
    struct hook_args a = { 0 };
    s->state = ST_GREETING;
    call_hook(s, HOOK_CONNECT, &a, NULL);
}

void smtp_input(struct session *s)
{
    while (session_can_take(s)) {
        if (s->state == ST_DATA) {
            size_t lines = s->data.lines;
            bool done;
            size_t n = smtp_data_scan(&s->data, buf_head(&s->in), buf_len(&s->in), &s->msg, &done);
            buf_consume(&s->in, n);
            if (s->data.lines != lines)
                session_touch(s);
            if (!done)
                return;
            end_of_data(s);
            continue;
        }
        /* AUTH lines may be longer than other commands (RFC 4954 section
         * 4); command() holds the others to SMTP_LINE_MAX. */
        const char *line;
        size_t len;
        switch (buf_getline(&s->in, AUTH_LINE_MAX, &line, &len)) {
        case BUF_LINE_AGAIN:
            return;
        case BUF_LINE_TOO_LONG:
            session_touch(s);
            if (s->state == ST_AUTH)
                auth_failed(s, 500, "5.5.6", "Line too long");
            else
                reply_error(s, 500, "5.5.6", "Line too long");
            break;
        case BUF_LINE_OK:
            session_touch(s);
            if (s->state == ST_AUTH) {
                log_msg(LOG_DEBUG, s->id, "< (SASL response, %zu bytes)", len);
                auth_response(s, line, len);
            } else {
                command(s, line, len);
            }
            break;
        }
    }
}

void smtp_eof(struct session *s)
{
    if (s->state == ST_DATA)
        log_msg(LOG_WARN, s->id, "connection lost in DATA after %zu bytes: message %s discarded",
                s->data.size, s->msgid);
}

void smtp_timeout(struct session *s, const char *why)
{
    if (s->dead || s->closing)
        return;
    if (s->state == ST_DATA)
        log_msg(LOG_WARN, s->id, "%s in DATA after %zu bytes: message %s discarded", why,
                s->data.size, s->msgid);
    else
        log_msg(LOG_INFO, s->id, "%s", why);
    reply(s, 421, "4.4.2", "%s Error: %s, closing connection", hostname(s), why);
    s->closing = true;
}

void smtp_shutdown(struct session *s)
{
    if (s->dead || s->closing)
        return;
    if (s->state == ST_DATA || s->pending == HOOK_MESSAGE) {
        s->draining = true;   /* the message in progress may finish */
        return;
    }
    reply_close(s, "4.3.2", "Service shutting down");
}
