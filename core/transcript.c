/* Reading an SMTP client's transcript (transcript.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "transcript.h"

/* A line the client sent: remember its command, and a RCPT's address.  A
 * line that follows a 334 challenge (AUTH's exchange) goes on with the
 * command before it. */
static void sent_line(struct transcript *t, const char *line, size_t n)
{
    if (t->code == 334)
        return;
    size_t w = 0;
    while (w < n && w + 1 < sizeof(t->cmd) && line[w] != ' ' && line[w] != '\r' && line[w] != '\n')
        w++;
    memcpy(t->cmd, line, w);
    t->cmd[w] = '\0';
    t->rcpt[0] = '\0';
    if (strcmp(t->cmd, "EHLO") == 0) {
        t->ext = 0;                   /* what a new EHLO is told counts, not what came before */
        t->ehlo_line = 0;
    }
    const char *lt = memchr(line, '<', n), *gt = lt ? memchr(lt, '>', n - (size_t)(lt - line)) : NULL;
    if (strcmp(t->cmd, "RCPT") == 0 && gt && (size_t)(gt - lt) < sizeof(t->rcpt))
        snprintf(t->rcpt, sizeof(t->rcpt), "%.*s", (int)(gt - lt - 1), lt + 1);
}

int transcript_line_kind(const char *line, size_t n)
{
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        n--;
    if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' ||
        line[2] > '9' || (n > 3 && line[3] != ' ' && line[3] != '-'))
        return 0;
    return n > 3 && line[3] == '-' ? 1 : 2;
}

/* A line of a 250 reply to EHLO: after the first (the server's name), each
 * begins with a keyword. */
static void ehlo_line(struct transcript *t, const char *line, size_t n)
{
    static const struct { const char *name; unsigned bit; } kw[] = {
        { "SIZE", TRANSCRIPT_SIZE }, { "8BITMIME", TRANSCRIPT_8BITMIME },
        { "SMTPUTF8", TRANSCRIPT_SMTPUTF8 }, { "DSN", TRANSCRIPT_DSN },
    };
    if (t->ehlo_line++ == 0 || memcmp(line, "250", 3) != 0 || n < 4)
        return;
    size_t w = 0;
    while (4 + w < n && line[4 + w] != ' ' && line[4 + w] != '\r' && line[4 + w] != '\n')
        w++;
    for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++)
        if (strlen(kw[i].name) == w && strncasecmp(kw[i].name, line + 4, w) == 0)
            t->ext |= kw[i].bit;
}

/* A line the server answered: its final line ("250 ...") is the reply. */
static void answered_line(struct transcript *t, const char *line, size_t n)
{
    int kind = transcript_line_kind(line, n);
    if (kind != 0 && strcmp(t->cmd, "EHLO") == 0)
        ehlo_line(t, line, n);
    if (kind != 2 || strcmp(t->cmd, "QUIT") == 0)
        return;                       /* not a reply, not its last line, or of no interest */
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        n--;
    t->code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    size_t skip = n > 4 ? 4 : n;
    snprintf(t->reply, sizeof(t->reply), "%.*s", (int)(n - skip), line + skip);
    memcpy(t->replied, t->cmd, sizeof(t->replied));
    if (strcmp(t->cmd, "RCPT") == 0 && t->code >= 400 && t->rcpt[0]) {
        struct transcript_refusal *r = calloc(1, sizeof(*r));
        if (r == NULL) {
            t->oom = true;
            return;
        }
        snprintf(r->addr, sizeof(r->addr), "%s", t->rcpt);
        snprintf(r->reply, sizeof(r->reply), "%d %s", t->code, t->reply);
        r->next = t->refused;
        t->refused = r;
        t->rcpt[0] = '\0';            /* one refusal per RCPT, whatever follows */
    }
}

void transcript_feed(struct transcript *t, bool sent, const char *data, size_t size)
{
    while (size > 0) {
        const char *lf = memchr(data, '\n', size);
        size_t n = lf ? (size_t)(lf - data) + 1 : size;
        if (sent)
            sent_line(t, data, n);
        else
            answered_line(t, data, n);
        data += n;
        size -= n;
    }
}

void transcript_free(struct transcript *t)
{
    while (t->refused) {
        struct transcript_refusal *r = t->refused;
        t->refused = r->next;
        free(r);
    }
}
