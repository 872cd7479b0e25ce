/* The console's record: JSON text, the kept messages' ring (by count and by
 * bytes), the list's filters, the event ring and its readers, session
 * slots, and a session's trace with its transaction rewound. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "console.h"
#include "json.h"
#include "metrics.h"
#include "test.h"
#include "trace.h"

static bool has(const struct buf *b, const char *s)
{
    return memmem(buf_head(b), buf_len(b), s, strlen(s)) != NULL;
}

static void test_json(void)
{
    struct buf b;
    buf_init(&b, 4096);
    CHECK(json_str(&b, "a\"b\\c\n\x01\x7f", 8) == 0, "escape");
    CHECK(buf_len(&b) == strlen("\"a\\\"b\\\\c\\u000a\\u0001\\u007f\"") &&
              memcmp(buf_head(&b), "\"a\\\"b\\\\c\\u000a\\u0001\\u007f\"", buf_len(&b)) == 0,
          "quotes, backslashes and controls escaped: %.*s", (int)buf_len(&b), buf_head(&b));
    buf_clear(&b);
    CHECK(json_str(&b, "\xc3\xa9\xff\xe2\x82", 5) == 0 && buf_len(&b) == 2 + 2 + 18 &&
              memcmp(buf_head(&b), "\"\xc3\xa9\\ufffd\\ufffd\\ufffd\"", buf_len(&b)) == 0,
          "UTF-8 kept, the rest U+FFFD: %.*s", (int)buf_len(&b), buf_head(&b));
    buf_clear(&b);
    CHECK(json_cstr(&b, NULL) == 0 && buf_len(&b) == 4, "NULL is null");
    /* integers against printf's, at each number of digits and its edges */
    long long vals[64] = { 0, LLONG_MIN, LLONG_MAX };
    int nv = 3;
    for (long long p = 1; nv + 3 <= 64 && p <= LLONG_MAX / 10; p *= 10) {
        vals[nv++] = p - 1;
        vals[nv++] = p * 10 - 1;
        vals[nv++] = -p;
    }
    for (int i = 0; i < nv; i++) {
        char want[32];
        int n = snprintf(want, sizeof(want), "%lld", vals[i]);
        buf_clear(&b);
        CHECK(json_int(&b, vals[i]) == 0 && buf_len(&b) == (size_t)n && memcmp(buf_head(&b), want, (size_t)n) == 0,
              "%s: %.*s", want, (int)buf_len(&b), buf_head(&b));
    }
    /* json_text's eight-byte steps against a byte at a time, on strings
     * of plain text with one byte of each kind at each place */
    static const unsigned char odd[] = { '"', '\\', 0x00, 0x1f, 0x7f, 0x80, 0xc3, 0xff, ' ', '~' };
    int same = 0, tried = 0;
    for (size_t len = 1; len <= 24; len++)
        for (size_t at = 0; at < len; at++)
            for (size_t k = 0; k < sizeof(odd); k++) {
                char in[24], got[200], want[200];
                memset(in, 'a', len);
                in[at] = (char)odd[k];
                size_t g = json_text(got, sizeof(got), in, len), w = 0;
                for (size_t i = 0; i < len; i++) {
                    unsigned char c = (unsigned char)in[i];
                    if (c == '"' || c == '\\')
                        w += (size_t)sprintf(want + w, "\\%c", c);
                    else if (c < 0x20 || c == 0x7f)
                        w += (size_t)sprintf(want + w, "\\u%04x", c);
                    else if (c >= 0x80)
                        w += (size_t)sprintf(want + w, "\\ufffd");    /* no whole UTF-8 sequence here */
                    else
                        want[w++] = (char)c;
                }
                tried++;
                same += g == w && memcmp(got, want, w) == 0;
            }
    CHECK(same == tried, "eight bytes at a time as one by one: %d of %d", same, tried);
    /* plain text cut by the room: the last eight-byte step never passes it */
    const char plain_text[] = "abcdefghijklmnopqrstuvwxyz0123";
    same = tried = 0;
    for (size_t cap = 8; cap <= 48; cap++) {
        char got[48];
        size_t want = sizeof(plain_text) - 1 < cap - 7 ? sizeof(plain_text) - 1 : cap - 7;
        tried++;
        same += json_text(got, cap, plain_text, sizeof(plain_text) - 1) == want && memcmp(got, plain_text, want) == 0;
    }
    CHECK(same == tried, "cut by the room: %d of %d", same, tried);
    char d[20];
    CHECK(fmt_dec(d, ULLONG_MAX) == 20 && memcmp(d, "18446744073709551615", 20) == 0, "the largest");
    buf_free(&b);

    buf_init(&b, 64);
    CHECK(buf_printf(&b, "%d-%s", 42, "x") == 0 && buf_len(&b) == 4, "printf");
    char big[100];
    memset(big, 'y', sizeof(big) - 1);
    big[99] = '\0';
    CHECK(buf_printf(&b, "%s", big) < 0 && buf_len(&b) == 4, "past the cap: refused, content kept");
    buf_free(&b);
    buf_init(&b, 1 << 16);
    for (int i = 0; i < 100; i++)
        buf_printf(&b, "%s", big);
    CHECK(buf_len(&b) == 9900, "grows as it goes: %zu", buf_len(&b));
    buf_free(&b);
}

static uint64_t keep(const char *sender, int code, const char *raw, size_t rawlen)
{
    const char *rcpts[] = { "ops@site.example", "b@site.example" };
    const struct console_message m = { .time = 1, .code = code, .sender = sender, .reply = "Ok", .rcpts = rcpts,
                                       .nrcpts = 2, .raw = raw, .raw_len = rawlen, .size = rawlen };
    return console_keep(&m);
}

static int count(const struct buf *b)
{
    int n = 0;
    for (const char *p = buf_head(b); (p = memmem(p, (size_t)(buf_tail((struct buf *)b) - p), "{\"id\":", 6)); p++)
        n++;
    return n;
}

static void test_keep(void)
{
    CHECK(!console_on(), "off until shared");
    CHECK(keep("a", 250, "m", 1) == 0, "nothing kept while off");
    CHECK(console_share(3, 1 << 20, 2, 1) == 0, "shared");
    console_use(0);
    CHECK(console_on() && console_keeping(), "on");

    for (int i = 0; i < 5; i++)
        keep(i % 2 ? "odd@x" : "even@x", i == 4 ? 550 : 250, "Subject: s\r\n\r\nbody\r\n", 21);
    struct buf b, raw;
    buf_init(&b, 1 << 20);
    buf_init(&raw, 1 << 20);
    CHECK(console_list(&b, 10, NULL, NULL) == 0 && count(&b) == 3, "three kept of five");
    CHECK(memcmp(buf_head(&b), "[{\"id\":5,", 9) == 0, "newest first: %.*s", 40, buf_head(&b));
    CHECK(console_get(2, &b, &raw) == 0, "the oldest went first");
    buf_clear(&b);
    CHECK(console_get(4, &b, &raw) == 1 && buf_len(&raw) == 21 && has(&b, "\"raw_kept\":true") &&
              has(&b, "\"sender\":\"odd@x\"") && has(&b, "\"recipients\":[\"ops@site.example\",\"b@site.example\"]") &&
              has(&b, "\"reply\":{\"code\":250,\"text\":\"Ok\"}") && has(&b, "\"helo\":null"),
          "one, whole: %.*s", (int)buf_len(&b), buf_head(&b));
    buf_clear(&b);
    console_list(&b, 10, "ODD", NULL);
    CHECK(count(&b) == 1 && has(&b, "\"id\":4"), "sender, any case");
    buf_clear(&b);
    console_list(&b, 10, NULL, "refused");
    CHECK(count(&b) == 1 && has(&b, "\"id\":5"), "refused");
    buf_clear(&b);
    console_list(&b, 10, NULL, "2xx");
    CHECK(count(&b) == 2, "2xx");
    buf_clear(&b);
    console_list(&b, 1, NULL, NULL);
    CHECK(count(&b) == 1, "limit");

    /* by bytes: 400 KB each in 1 MB, then one larger than it all */
    static char big[1 << 20];
    memset(big, 'z', sizeof(big));
    for (int i = 0; i < 3; i++)
        keep("big@x", 250, big, 400 << 10);
    buf_clear(&b);
    console_list(&b, 10, NULL, NULL);
    CHECK(count(&b) == 2 && has(&b, "\"id\":8") && has(&b, "\"id\":7"), "what fits in --keep-bytes");
    keep("huge@x", 250, big, sizeof(big));
    buf_clear(&b);
    buf_clear(&raw);
    CHECK(console_get(9, &b, &raw) == 1 && buf_len(&raw) == 0 && has(&b, "\"raw_kept\":false"),
          "larger than --keep-bytes: kept without its text");
    const struct console_message fat = { .code = 250, .fields = big, .fields_len = 600 << 10 };
    CHECK(console_keep(&fat) == 0, "a record over half the ring is not kept");

    /* many small messages: the ring's writes stay in its first MB */
    for (int i = 0; i < 5000; i++)
        keep("many@x", 250, big, 2000);
    buf_clear(&b);
    console_list(&b, 10, NULL, NULL);
    CHECK(count(&b) == 3 && has(&b, "\"id\":5009"), "the newest three");
    buf_clear(&raw);
    CHECK(console_get(5008, &b, &raw) == 1 && buf_len(&raw) == 2000, "whole after many laps");
    buf_free(&b);
    buf_free(&raw);
}

static void test_events(void)
{
    struct buf b;
    buf_init(&b, 1 << 22);
    CHECK(console_event_begin("x", NULL) == NULL, "no reader, no event");
    console_listen(1);
    uint64_t seq = console_event_seq();
    for (int i = 0; i < 3; i++) {
        struct buf *e = console_event_begin("stage", "S1");
        CHECK(e != NULL, "a reader: events are made");
        buf_printf(e, ",\"n\":%d", i);
        console_event_end();
    }
    CHECK(console_events(&seq, &b) && has(&b, "\"type\":\"stage\"") && has(&b, "\"n\":2") && has(&b, "id: "),
          "read as Server-Sent Events");
    CHECK(!console_events(&seq, &b), "then nothing new");
    uint64_t late = seq;
    for (int i = 0; i < CONSOLE_EVENTS + 10; i++) {
        console_event_begin("stage", NULL);
        console_event_end();
    }
    buf_clear(&b);
    CHECK(console_events(&late, &b) && has(&b, "\"type\":\"missed\",\"events\":10"), "a late reader is told");
    console_listen(-1);
    CHECK(console_event_begin("x", NULL) == NULL, "the last reader gone");
    buf_free(&b);
}

static void test_sessions(void)
{
    struct console_session cs = { .id = "A1", .peer = "192.0.2.1", .state = "init" };
    int a = console_session_open(&cs), b2 = console_session_open(&cs);
    CHECK(a >= 0 && b2 >= 0 && a != b2, "two slots");
    CHECK(console_session_open(&cs) < 0, "no third: not listed, not an error");
    struct buf b;
    buf_init(&b, 1 << 16);
    console_sessions_json(&b, 0);
    CHECK(has(&b, "\"peer\":\"192.0.2.1\"") && has(&b, "\"state\":\"init\""), "listed");
    console_session_close(a);
    console_session_close(b2);
    buf_clear(&b);
    console_sessions_json(&b, 0);
    CHECK(buf_len(&b) == 2, "closed: gone");
    buf_free(&b);
}

static void test_trace(void)
{
    struct trace *t = trace_new("S2", "127.0.0.1", 1);
    CHECK(t != NULL, "a trace while the console is on");
    t->t0 = 1.0;   /* the session's start: steps are timed from it */
    trace_add(t, STEP_STAGE, "connect", "", 220, "ESMTP", 5, NULL, 1.0, 0);
    trace_line(t, 'C', "EHLO x", 6);
    trace_mark(t);
    char line[1000];
    memset(line, 'l', sizeof(line));
    size_t at = t->len;
    trace_add(t, STEP_STAGE, "mail", "on_mail (r.lua:3)", 550, line, sizeof(line), NULL, 1.5, 0.25);
    struct console_step e;
    memcpy(&e, t->steps + at, sizeof(e));
    CHECK(e.len[2] == STEP_TEXT_MAX && e.at_us == 500000 && e.took_us == 250000 &&
              t->len == at + sizeof(e) + 4 + strlen("on_mail (r.lua:3)") + STEP_TEXT_MAX,
          "a step's text cut at %d bytes, its times from the session's start", STEP_TEXT_MAX);
    trace_line(t, 'C', "MAIL FROM:<a@b>", 15);
    for (int i = 0; i < TRACE_MAX; i++)
        trace_add(t, STEP_NOTE, NULL, "on_rcpt", 0, "note", 4, NULL, 1.0, 0);
    CHECK(t->n == TRACE_MAX && t->dropped == 2, "bounded: %u, %lu dropped", t->n, t->dropped);
    for (int i = 0; i < 20; i++)
        trace_line(t, 'S', line, sizeof(line));
    CHECK(buf_len(&t->dialogue) <= TRACE_DIALOGUE && t->dialogue_cut, "the dialogue bounded too");
    trace_rewind(t);
    CHECK(t->n == 1 && t->dropped == 0 && buf_len(&t->dialogue) == 10, "rewound to the transaction's start");
    trace_rewind(t);
    CHECK(t->n == 1, "a second rewind keeps the session's part");
    /* kept with a message, rendered when asked for */
    const struct console_message m = { .code = 250, .steps = t->steps, .steps_len = t->len, .nsteps = t->n, .dialogue = buf_head(&t->dialogue),
                                       .dialogue_len = buf_len(&t->dialogue), .fields = "\"subject\":\"s\"",
                                       .fields_len = 13 };
    uint64_t id = console_keep(&m);
    struct buf b;
    buf_init(&b, 1 << 16);
    CHECK(console_get(id, &b, NULL) == 1 && has(&b, "\"trace\":[{\"kind\":\"stage\",\"at_us\":") &&
              has(&b, "\"stage\":\"connect\",\"code\":220,\"who\":\"\",\"text\":\"ESMTP\"}]") &&
              has(&b, "\"dialogue\":\"C: EHLO x\\u000a\"") && has(&b, "\"fields\":{\"subject\":\"s\"}"),
          "as JSON: %.*s", (int)buf_len(&b), buf_head(&b));
    buf_free(&b);
    trace_free(t);
}

/* luasmtpd.metric's series: one per name and labels, summed, bounded. */
static void test_script_metrics(void)
{
    CHECK(metrics_script("alarms_total", "zone=\"3\"", 1) == 0 && metrics_script("alarms_total", "zone=\"3\"", 2) == 0,
          "added");
    CHECK(metrics_script("alarms_total", "zone=\"4\"", 1) == 0 && metrics_script("level", "", -0.5) == 0, "others");
    char name[32];
    int taken = 3, rc = 0;
    for (; rc == 0 && taken < METRICS_SCRIPT_SERIES + 5; taken++) {
        snprintf(name, sizeof(name), "s%d", taken);
        rc = metrics_script(name, "", 1);
    }
    CHECK(rc < 0 && taken == METRICS_SCRIPT_SERIES + 1, "full after %d series (%d)", METRICS_SCRIPT_SERIES, taken);
    CHECK(metrics_script("alarms_total", "zone=\"3\"", 1) == 0, "a series there already still counts");
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK(metrics_render(&b) == 0, "rendered");
    CHECK(has(&b, "# TYPE luasmtpd_script_alarms_total counter\nluasmtpd_script_alarms_total{zone=\"3\"} 4\n"
                  "luasmtpd_script_alarms_total{zone=\"4\"} 1\n"),
          "one family, its series together");
    CHECK(has(&b, "# TYPE luasmtpd_script_level gauge\nluasmtpd_script_level -0.5\n"), "a gauge");
    buf_free(&b);
}

int main(void)
{
    test_script_metrics();
    test_json();
    test_keep();
    test_events();
    test_sessions();
    test_trace();
    return test_summary("test_console");
}
