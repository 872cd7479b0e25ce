#include "console.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "clock.h"
#include "json.h"
#include "log.h"

#define WORKERS_MAX   64
#define EXCERPT_MAX   240      /* bytes of text the list shows */
#define HOT_MIN       (1u << 20)   /* the least of the ring that is written to */
#define LAZY_MAX      (64u << 10)  /* the list's fields of messages this small: made when listed */
#define MADE_SLOTS    256      /* fields made when listed, remembered a process */
#define MADE_MAX      4096     /* the largest remembered (larger ones are made each time) */

struct event {
    uint64_t seq;
    uint32_t len;
    char     json[CONSOLE_EVENT_MAX];
};

/* One kept message: its bytes at ring[pos, pos + meta_len + raw_kept). */
struct entry {
    uint64_t id;
    uint64_t pos;
    uint32_t meta_len;
    size_t   raw_len, raw_kept;
    int      code;
    bool     fields;                /* its list's fields are in its record */
    char     sender[CONSOLE_SENDER_MAX];
};

/* An entry as a reader takes it, with how much of its raw text follows
 * its record (0 unless its fields are to be made from it). */
struct taken {
    struct entry e;
    size_t       raw;
};

/* A session's slot, written by its worker only, read by any without a
 * lock: seq is odd while it is being written, and moves on each time. */
struct slot {
    atomic_uint seq;
    bool used;
    struct console_session s;
};

struct shared {
    pthread_mutex_t lock;
    uint64_t next_id, first_id;     /* kept: ids first_id .. next_id - 1 */
    uint64_t head, tail;            /* the ring's bytes in use: [head, tail) */
    size_t   live;                  /* the kept messages' own bytes (no gap) */
    uint64_t ev_next;               /* the next event's seq (from 1) */
    int      listeners[WORKERS_MAX];
    atomic_size_t used[WORKERS_MAX];    /* a worker's slots touched so far */
    atomic_int nlisteners;          /* read without the lock by writers */
    size_t   keep, bytes, per_worker;
    int      nworkers;
    struct event *events;           /* CONSOLE_EVENTS */
    struct entry *entries;          /* keep */
    struct slot  *slots;            /* nworkers * per_worker */
    char         *ring;             /* bytes */
};

static struct shared *sh;
static int me;                      /* this process's worker index */
static int *free_slots, nfree;      /* this worker's free session slots */
static struct buf event_buf;        /* the event being made */
/* The list's fields made from kept texts, by id (of this mapping). */
static struct made {
    uint64_t   id;                  /* 0: none */
    struct buf json;
} made[MADE_SLOTS];

int console_share(long long keep, long long keep_bytes, long long sessions, int n)
{
    if (n < 1)
        n = 1;
    if (n > WORKERS_MAX)
        n = WORKERS_MAX;
    if (keep < 0)
        keep = 0;
    if (keep == 0)
        keep_bytes = 0;
    size_t head = (sizeof(struct shared) + 63) & ~(size_t)63;
    size_t evs = sizeof(struct event) * CONSOLE_EVENTS;
    size_t ents = sizeof(struct entry) * (size_t)keep;
    size_t slots = sizeof(struct slot) * (size_t)sessions * (size_t)n;
    size_t total = head + evs + ents + slots + (size_t)keep_bytes;
    char *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    struct shared *s = (struct shared *)p;   /* zeroed by the kernel */
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&s->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0) {
        munmap(p, total);
        errno = rc;
        return -1;
    }
    s->next_id = s->first_id = 1;
    for (size_t i = 0; i < MADE_SLOTS; i++)
        made[i].id = 0;
    s->ev_next = 1;
    s->keep = (size_t)keep;
    s->bytes = (size_t)keep_bytes;
    s->per_worker = (size_t)sessions;
    s->nworkers = n;
    s->events = (struct event *)(p + head);
    s->entries = (struct entry *)(p + head + evs);
    s->slots = (struct slot *)(p + head + evs + ents);
    s->ring = p + head + evs + ents + slots;
    sh = s;
    return 0;
}

/* Only workers share the region: a single process, whose console and
 * sessions run on one loop, takes no lock. */
static void lock(void)
{
    if (sh->nworkers > 1 && pthread_mutex_lock(&sh->lock) == EOWNERDEAD) {
        /* a worker died holding it: what it was writing is lost, and the
         * messages with it (they are only a view) */
        sh->first_id = sh->next_id;
        sh->head = sh->tail;
        sh->live = 0;
        pthread_mutex_consistent(&sh->lock);
        log_msg(LV_WARN, NULL, "console: a worker died while writing: the kept messages start over");
    }
}

static void unlock(void)
{
    if (sh->nworkers > 1)
        pthread_mutex_unlock(&sh->lock);
}

static void slot_write(struct slot *sl, bool used, const struct console_session *cs, bool all)
{
    /* even, also after a writer that died writing */
    unsigned seq = (atomic_load_explicit(&sl->seq, memory_order_relaxed) + 1) & ~1u;
    atomic_store_explicit(&sl->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    sl->used = used;
    if (cs && all) {
        sl->s = *cs;
    } else if (cs) {
        memcpy(sl->s.state, cs->state, sizeof(cs->state));
        sl->s.last = cs->last;
        sl->s.messages = cs->messages;
    }
    atomic_store_explicit(&sl->seq, seq + 2, memory_order_release);
}

/* A copy of slot i as it stood between two writes; false when it is not
 * in use, or kept changing (or its writer died writing it). */
static bool slot_read(size_t i, struct console_session *out)
{
    struct slot *sl = &sh->slots[i];
    for (int tries = 0; tries < 1000; tries++) {
        unsigned seq = atomic_load_explicit(&sl->seq, memory_order_acquire);
        if (seq & 1)
            continue;
        bool used = sl->used;
        *out = sl->s;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&sl->seq, memory_order_relaxed) == seq)
            return used;
    }
    return false;
}

void console_use(int i)
{
    if (sh == NULL)
        return;
    me = i >= 0 && i < sh->nworkers ? i : 0;
    free(free_slots);
    free_slots = malloc(sizeof(*free_slots) * (sh->per_worker ? sh->per_worker : 1));
    nfree = 0;
    lock();
    atomic_fetch_sub(&sh->nlisteners, sh->listeners[me]);
    sh->listeners[me] = 0;
    /* the slots of the worker before this one (only those it touched:
     * the pages of the others stay unmapped) */
    for (size_t k = 0; k < sh->used[me]; k++)
        slot_write(&sh->slots[(size_t)me * sh->per_worker + k], false, NULL, false);
    sh->used[me] = 0;
    for (size_t k = sh->per_worker; free_slots && k-- > 0;)
        free_slots[nfree++] = (int)k;      /* the lowest on top */
    unlock();
    buf_init(&event_buf, CONSOLE_EVENT_MAX);
}

bool console_on(void)
{
    return sh != NULL;
}

bool console_keeping(void)
{
    return sh != NULL && sh->keep > 0;
}

/* --- events -------------------------------------------------------------- */

struct buf *console_event_begin(const char *type, const char *session)
{
    if (sh == NULL || atomic_load_explicit(&sh->nlisteners, memory_order_relaxed) <= 0)
        return NULL;
    buf_clear(&event_buf);
    JSON_LIT(&event_buf, "{\"type\":\"");
    buf_append(&event_buf, type, strlen(type));
    JSON_LIT(&event_buf, "\",\"time\":");
    json_int(&event_buf, clock_wall_ms(false));
    if (session)
        json_field(&event_buf, "session", session);
    return &event_buf;
}

void console_event_end(void)
{
    /* an event cut short by its cap is not valid JSON: it is dropped */
    if (buf_append(&event_buf, "}", 1) < 0 || buf_len(&event_buf) == 0)
        return;
    lock();
    struct event *e = &sh->events[sh->ev_next % CONSOLE_EVENTS];
    e->seq = sh->ev_next++;
    e->len = (uint32_t)buf_len(&event_buf);
    memcpy(e->json, buf_head(&event_buf), e->len);
    unlock();
}

void console_listen(int delta)
{
    if (sh == NULL)
        return;
    lock();
    sh->listeners[me] += delta;
    atomic_fetch_add(&sh->nlisteners, delta);
    unlock();
}

uint64_t console_event_seq(void)
{
    if (sh == NULL)
        return 0;
    lock();
    uint64_t s = sh->ev_next;
    unlock();
    return s;
}

bool console_events(uint64_t *seq, struct buf *out)
{
    bool any = false;
    if (sh == NULL)
        return false;
    lock();
    uint64_t end = sh->ev_next;
    if (end - *seq > CONSOLE_EVENTS) {
        buf_printf(out, "event: missed\ndata: {\"type\":\"missed\",\"events\":%llu}\n\n",
                    (unsigned long long)(end - CONSOLE_EVENTS - *seq));
        *seq = end - CONSOLE_EVENTS;
        any = true;
    }
    for (; *seq < end; ++*seq) {
        const struct event *e = &sh->events[*seq % CONSOLE_EVENTS];
        if ((JSON_LIT(out, "id: ") | json_int(out, (long long)e->seq) | JSON_LIT(out, "\ndata: ") |
             buf_append(out, e->json, e->len) | JSON_LIT(out, "\n\n")) < 0)
            break;
        any = true;
    }
    unlock();
    return any;
}

/* --- open sessions -------------------------------------------------------- */

int console_session_open(const struct console_session *cs)
{
    if (sh == NULL || nfree == 0)
        return -1;
    int k = free_slots[--nfree], i = (int)((size_t)me * sh->per_worker) + k;
    if ((size_t)k >= sh->used[me])
        sh->used[me] = (size_t)k + 1;
    slot_write(&sh->slots[i], true, cs, true);
    return i;
}

void console_session_set(int i, const struct console_session *cs, bool all)
{
    if (sh != NULL && i >= 0)
        slot_write(&sh->slots[i], true, cs, all);
}

void console_session_close(int i)
{
    if (sh == NULL || i < 0)
        return;
    slot_write(&sh->slots[i], false, NULL, false);
    free_slots[nfree++] = i - (int)((size_t)me * sh->per_worker);
}

/* A session's text field: null when empty. */
static int field(struct buf *out, const char *name, const char *value)
{
    return json_field(out, name, value[0] ? value : NULL);
}

int console_sessions_json(struct buf *out, long long now)
{
    if (buf_append(out, "[", 1) < 0)
        return -1;
    if (sh == NULL)
        return buf_append(out, "]", 1);
    int rc = 0;
    bool first = true;
    for (size_t i = 0; i < sh->per_worker * (size_t)sh->nworkers && rc == 0; i++) {
        if (i % sh->per_worker >= sh->used[i / sh->per_worker]) {
            i = (i / sh->per_worker + 1) * sh->per_worker - 1;   /* the next worker's */
            continue;
        }
        struct console_session copy;
        if (!slot_read(i, &copy))
            continue;
        const struct console_session *s = &copy;
        rc |= buf_printf(out, "%s{\"id\":", first ? "" : ",");
        rc |= json_cstr(out, s->id);
        rc |= field(out, "peer", s->peer);
        rc |= buf_printf(out, ",\"port\":%d,\"worker\":%zu", s->port, i / sh->per_worker + 1);
        rc |= field(out, "state", s->state);
        rc |= field(out, "helo", s->helo);
        rc |= field(out, "user", s->user);
        rc |= field(out, "tls", s->tls);
        rc |= buf_printf(out, ",\"started\":%lld,\"idle_ms\":%lld,\"messages\":%lu}", s->started,
                         now > s->last ? now - s->last : 0, s->messages);
        first = false;
    }
    return rc | buf_append(out, "]", 1);
}

/* --- kept messages ------------------------------------------------------ */

/* A kept message's bytes: this head, its strings one after the other (a
 * length of ABSENT: NULL), its steps as the trace packed them, then its
 * raw text.  A record never wraps round the ring's end (console_keep puts
 * one that would at its start). */
enum { S_SESSION, S_PEER, S_HELO, S_TLS, S_USER, S_SENDER, S_QUEUED, S_REPLY, S_RCPTS, S_FIELDS, S_DIALOGUE,
       NSTR };
#define ABSENT UINT32_MAX

struct packed {
    long long     time;
    int           code, port;
    bool          proxied;
    size_t        size;
    unsigned      nsteps;
    unsigned long dropped;
    uint32_t      len[NSTR];
};

_Static_assert(STEP_STAGE_MAX < 256 && STEP_WHO_MAX < 256 && STEP_TEXT_MAX < 256 && STEP_RESULT_MAX < 256,
               "a step's strings have a byte's length");

static struct entry *entry_of(uint64_t id)
{
    return &sh->entries[id % sh->keep];
}

static char *ring_at(uint64_t pos)
{
    return sh->ring + pos % sh->bytes;
}

/* n bytes at w: past them. */
static char *put(char *w, const void *from, size_t n)
{
    if (n)
        memcpy(w, from, n);
    return w + n;
}

static int ring_get(uint64_t pos, size_t n, struct buf *out)
{
    return buf_append(out, ring_at(pos), n);
}

/* Drop the oldest message. */
static void drop_oldest(void)
{
    const struct entry *e = entry_of(sh->first_id);
    sh->live -= e->meta_len + e->raw_kept;
    sh->first_id++;
    sh->head = sh->first_id < sh->next_id ? entry_of(sh->first_id)->pos : sh->tail;
}

uint64_t console_keep(const struct console_message *m)
{
    if (!console_keeping())
        return 0;
    struct packed p = { .time = m->time, .code = m->code, .port = m->port, .proxied = m->proxied,
                        .size = m->size, .nsteps = m->nsteps, .dropped = m->dropped };
    const char *str[NSTR] = { m->session, m->peer, m->helo, m->tls, m->user, m->sender, m->queued_as, m->reply,
                              NULL, m->fields, m->dialogue };
    size_t need = sizeof(p) + m->steps_len;
    for (int i = 0; i < NSTR; i++) {
        size_t n = i == S_FIELDS ? m->fields_len : i == S_DIALOGUE ? m->dialogue_len : str[i] ? strlen(str[i]) : 0;
        if (i == S_RCPTS)
            for (size_t r = 0; r < m->nrcpts; r++)
                n += strlen(m->rcpts[r]) + 1;
        p.len[i] = str[i] || i == S_RCPTS ? (uint32_t)n : ABSENT;
        need += n;
    }
    if (need > sh->bytes / 2)
        return 0;
    size_t kept = need + m->raw_len <= sh->bytes ? m->raw_len : 0;
    lock();
    /* Messages are written within the first `hot` bytes of the ring, twice
     * what is kept: past it, the next one goes to the ring's start.  So the
     * pages touched follow what --keep holds, not --keep-bytes, and memory
     * stays flat however many messages go by. */
    size_t hot = 2 * sh->live + need + kept;
    hot = hot < HOT_MIN ? HOT_MIN : hot > sh->bytes ? sh->bytes : hot;
    if (sh->tail % sh->bytes + need + kept > hot) {
        sh->tail += sh->bytes - sh->tail % sh->bytes;
        if (sh->first_id == sh->next_id)
            sh->head = sh->tail;
    }
    while (sh->first_id < sh->next_id &&
           (sh->next_id - sh->first_id >= sh->keep || sh->tail - sh->head + need + kept > sh->bytes))
        drop_oldest();
    uint64_t id = sh->next_id++;
    struct entry *e = entry_of(id);
    e->id = id;
    e->pos = sh->tail;
    e->meta_len = (uint32_t)need;
    e->raw_len = m->raw_len;
    e->raw_kept = kept;
    e->code = m->code;
    e->fields = m->fields_len > 0;
    size_t sn = m->sender ? strnlen(m->sender, sizeof(e->sender) - 1) : 0;
    memcpy(e->sender, m->sender ? m->sender : "", sn);
    e->sender[sn] = '\0';
    char *w = put(ring_at(e->pos), &p, sizeof(p));
    for (int i = 0; i < NSTR; i++) {
        if (i == S_RCPTS)
            for (size_t r = 0; r < m->nrcpts; r++)
                w = put(w, m->rcpts[r], strlen(m->rcpts[r]) + 1);
        else if (p.len[i] != ABSENT)
            w = put(w, str[i], p.len[i]);
    }
    w = put(w, m->steps, m->steps_len);
    put(w, m->raw, kept);
    sh->tail += need + kept;
    sh->live += need + kept;
    unlock();
    return id;
}

static bool verdict_is(int code, const char *verdict)
{
    if (verdict == NULL || !*verdict)
        return true;
    if (strcmp(verdict, "accepted") == 0)
        return code < 400;
    if (strcmp(verdict, "refused") == 0)
        return code >= 400;
    return verdict[0] == '0' + code / 100 && strcmp(verdict + 1, "xx") == 0;
}

static bool made_already(uint64_t id)
{
    return made[id % MADE_SLOTS].id == id;
}

/* Under the lock: entry e and its packed bytes onto out, to render once
 * the lock is given back; with its raw text when its fields are to be
 * made from it (with_raw, and not made already). */
static int take(const struct entry *e, struct buf *out, bool with_raw)
{
    struct taken t = { .e = *e };
    if (with_raw && !e->fields && !made_already(e->id))
        t.raw = e->raw_kept;
    return buf_append(out, &t, sizeof(t)) < 0 || ring_get(e->pos, e->meta_len, out) < 0 ? -1
           : ring_get(e->pos + e->meta_len, t.raw, out);
}

/* The list's fields of message id from its raw text, remembered: what to
 * put in its "fields" object.  A message that does not parse (out of
 * memory) has none; one with more than the room for them, none either. */
static int fields_from(uint64_t id, const char *raw, size_t len, struct buf *out)
{
    struct made *c = &made[id % MADE_SLOTS];
    if (c->id == id)
        return buf_append(out, buf_head(&c->json), buf_len(&c->json));
    struct mime *mm = NULL;
    if (len == 0 || mime_parse(raw, len, NULL, &mm) < 0)
        return 0;
    if (c->json.max == 0)
        buf_init(&c->json, MADE_MAX);
    buf_clear(&c->json);
    c->id = 0;
    int rc = 0;
    if (console_fields(&c->json, mm) == 0) {
        c->id = id;
        rc = buf_append(out, buf_head(&c->json), buf_len(&c->json));
    } else {
        size_t at = buf_len(out);
        if (console_fields(out, mm) < 0)
            buf_truncate(out, at);
    }
    buf_shrink(&c->json);
    mime_free(&mm);
    return rc;
}

static const char *const step_kinds[] = { "stage", "action", "note" };

static int steps_json(struct buf *out, const char *p, unsigned n)
{
    int rc = buf_append(out, "\"trace\":[", 9);
    for (unsigned i = 0; i < n; i++) {
        struct console_step ps;
        memcpy(&ps, p, sizeof(ps));
        const char *f[4];
        p += sizeof(ps);
        for (int k = 0; k < 4; k++) {
            f[k] = p;
            p += ps.len[k];
        }
        rc |= buf_printf(out, "%s{\"kind\":\"%s\",\"at_us\":%lld,\"took_us\":%lld,\"stage\":", i ? "," : "",
                         step_kinds[ps.kind], ps.at_us, ps.took_us);
        rc |= json_str(out, f[0], ps.len[0]);
        if (ps.code)
            rc |= buf_printf(out, ",\"code\":%d", ps.code);
        rc |= buf_append(out, ",\"who\":", 7) | json_str(out, f[1], ps.len[1]);
        rc |= buf_append(out, ",\"text\":", 8) | json_str(out, f[2], ps.len[2]);
        if (ps.kind == STEP_ACTION)
            rc |= buf_append(out, ",\"result\":", 10) | json_str(out, f[3], ps.len[3]);
        rc |= buf_append(out, "}", 1);
    }
    return rc | buf_append(out, "]", 1);
}

/* The JSON object of a message taken by take(); *used the bytes it took.
 * Its fields are made from raw[0, raw_len) when its record has none (raw
 * NULL: the text taken with it). */
static int render(const char *p, struct buf *out, size_t *used, const char *raw, size_t raw_len)
{
    struct taken t;
    struct packed h;
    memcpy(&t, p, sizeof(t));
    const struct entry e = t.e;
    memcpy(&h, p + sizeof(t), sizeof(h));
    *used = sizeof(t) + e.meta_len + t.raw;
    if (raw == NULL) {
        raw = p + sizeof(t) + e.meta_len;
        raw_len = t.raw;
    }
    const char *str[NSTR], *q = p + sizeof(t) + sizeof(h);
    for (int i = 0; i < NSTR; i++) {
        str[i] = h.len[i] == ABSENT ? NULL : q;
        q += h.len[i] == ABSENT ? 0 : h.len[i];
    }
    static const char *const names[] = { [S_SESSION] = "session", [S_PEER] = "peer", [S_HELO] = "helo",
                                         [S_TLS] = "tls", [S_USER] = "user", [S_SENDER] = "sender",
                                         [S_QUEUED] = "queued_as" };
    int rc = buf_printf(out, "{\"id\":%llu,\"raw_kept\":%s,\"time\":%lld,\"port\":%d,\"proxied\":%s,\"size\":%zu",
                        (unsigned long long)e.id, e.raw_kept == e.raw_len ? "true" : "false", h.time, h.port,
                        h.proxied ? "true" : "false", h.size);
    for (int i = S_SESSION; i <= S_QUEUED; i++)
        rc |= json_key(out, names[i]) | (str[i] ? json_str(out, str[i], h.len[i]) : JSON_LIT(out, "null"));
    rc |= buf_append(out, ",\"recipients\":[", 15);
    for (const char *r = str[S_RCPTS], *end = r + h.len[S_RCPTS]; r < end; r += strlen(r) + 1)
        rc |= (r > str[S_RCPTS] ? buf_append(out, ",", 1) : 0) | json_cstr(out, r);
    rc |= buf_printf(out, "],\"reply\":{\"code\":%d,\"text\":", h.code);
    rc |= json_str(out, str[S_REPLY] ? str[S_REPLY] : "", str[S_REPLY] ? h.len[S_REPLY] : 0);
    rc |= buf_append(out, "},\"fields\":{", 12);
    if (e.fields)
        rc |= buf_append(out, str[S_FIELDS], h.len[S_FIELDS]);
    else
        rc |= fields_from(e.id, raw, raw_len, out);
    rc |= buf_append(out, "},", 2) | steps_json(out, q, h.nsteps);
    rc |= buf_printf(out, ",\"trace_dropped\":%lu,\"dialogue\":", h.dropped);
    rc |= json_str(out, str[S_DIALOGUE] ? str[S_DIALOGUE] : "", str[S_DIALOGUE] ? h.len[S_DIALOGUE] : 0);
    return rc | buf_append(out, "}", 1);
}

int console_list(struct buf *out, unsigned limit, const char *sender, const char *verdict)
{
    int rc = buf_append(out, "[", 1);
    if (console_keeping()) {
        struct buf taken;
        buf_init(&taken, sh->bytes + (size_t)limit * sizeof(struct entry));
        unsigned n = 0;
        lock();
        for (uint64_t id = sh->next_id; id-- > sh->first_id && n < limit && rc == 0;) {
            const struct entry *e = entry_of(id);
            if (!verdict_is(e->code, verdict) || (sender && !strcasestr(e->sender, sender)))
                continue;
            rc |= take(e, &taken, !console_fields_at_arrival(e->raw_len));
            n++;
        }
        unlock();
        size_t used;
        for (size_t at = 0; at < buf_len(&taken) && rc == 0; at += used)
            rc |= (at ? buf_append(out, ",", 1) : 0) | render(buf_head(&taken) + at, out, &used, NULL, 0);
        buf_free(&taken);
    }
    return rc | buf_append(out, "]", 1);
}

int console_get(uint64_t id, struct buf *json, struct buf *raw)
{
    if (!console_keeping())
        return 0;
    struct buf taken;
    buf_init(&taken, sh->bytes + sizeof(struct taken));
    int rc = 0;
    lock();
    if (id >= sh->first_id && id < sh->next_id) {
        const struct entry *e = entry_of(id);
        rc = take(e, &taken, raw == NULL) < 0 || (raw && ring_get(e->pos + e->meta_len, e->raw_kept, raw) < 0) ? -1
                                                                                                                : 1;
    }
    unlock();
    size_t used;
    if (rc == 1 && render(buf_head(&taken), json, &used, raw ? buf_head(raw) : NULL, raw ? buf_len(raw) : 0) < 0)
        rc = -1;
    buf_free(&taken);
    return rc;
}

/* --- what the list shows of a message ------------------------------------ */

bool console_fields_at_arrival(size_t size)
{
    return size > LAZY_MAX;
}

const struct mime_part *console_attachment(const struct mime *m, const struct mime_part *p)
{
    const struct mime_part *text, *html;
    mime_bodies(m, &text, &html);
    for (p = p ? mime_next(p, !mime_is_message(p)) : m->root; p; p = mime_next(p, !mime_is_message(p)))
        if (mime_is_attachment(p, text, html))
            return p;
    return NULL;
}

int console_fields(struct buf *out, struct mime *m)
{
    static const char *const names[] = { "from", "to", "subject", "date" };
    int rc = 0;
    /* the first without its comma: they begin the object */
    rc |= JSON_LIT(out, "\"from\":") | json_cstr(out, mime_header(m->root, names[0]));
    for (size_t i = 1; i < sizeof(names) / sizeof(names[0]); i++)
        rc |= json_field(out, names[i], mime_header(m->root, names[i]));
    const struct mime_part *text, *html;
    mime_bodies(m, &text, &html);
    /* one buffer for the decoding, kept from one message to the next
     * unless a large one made it grow */
    static struct buf body;
    if (body.max == 0)
        buf_init(&body, (size_t)1 << 31);
    buf_clear(&body);
    /* the excerpt needs the text's first bytes only: at most four encoded
     * bytes a decoded one (quoted-printable, UTF-16) */
    struct mime_part head;
    if (text) {
        head = *text;
        if (head.end - head.body > 4 * EXCERPT_MAX + 16)
            head.end = head.body + 4 * EXCERPT_MAX + 16;
    }
    if (text && mime_decode(m, &head, true, &body) == 0) {
        size_t n = buf_len(&body) < EXCERPT_MAX ? buf_len(&body) : EXCERPT_MAX;
        while (n > 0 && n < buf_len(&body) && (buf_head(&body)[n] & 0xc0) == 0x80)
            n--;                    /* not inside a character */
        rc |= buf_append(out, ",\"excerpt\":", 11) | json_str(out, buf_head(&body), n);
    }
    rc |= html ? JSON_LIT(out, ",\"html\":true,\"attachments\":[") : JSON_LIT(out, ",\"html\":false,\"attachments\":[");
    bool first = true;
    for (const struct mime_part *p = console_attachment(m, NULL); p && rc == 0; p = console_attachment(m, p)) {
        buf_clear(&body);
        size_t size = mime_decode(m, p, false, &body) == 0 ? buf_len(&body) : p->end - p->body;
        rc |= buf_printf(out, "%s{\"name\":", first ? "" : ",") | json_cstr(out, p->filename);
        rc |= buf_append(out, ",\"type\":", 8) | json_cstr(out, p->type);
        rc |= buf_printf(out, ",\"size\":%zu}", size);
        first = false;
    }
    if (body.size > HOT_MIN)
        buf_free(&body);
    return rc | buf_append(out, "]", 1);
}
