/* Reading an SMTP client's transcript (transcript.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    const char *lt = memchr(line, '<', n), *gt = lt ? memchr(lt, '>', n - (size_t)(lt - line)) : NULL;
    if (strcmp(t->cmd, "RCPT") == 0 && gt && (size_t)(gt - lt) < sizeof(t->rcpt))
        snprintf(t->rcpt, sizeof(t->rcpt), "%.*s", (int)(gt - lt - 1), lt + 1);
}

/* A line the server answered: its final line ("250 ...") is the reply. */
static void answered_line(struct transcript *t, const char *line, size_t n)
{
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        n--;
    if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' ||
        line[2] > '9' || (n > 3 && line[3] != ' ') || strcmp(t->cmd, "QUIT") == 0)
        return;                       /* not a reply, not its last line, or of no interest */
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
