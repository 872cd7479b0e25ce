/*
 * luasmtpd.mqtt.publish(topic, payload [, {qos =, retain =, timeout =}])
 *
 * One connection to the broker of --mqtt-host, through libmosquitto driven
 * by the server's loop: its socket is watched by an ev_io (for writing only
 * while libmosquitto has bytes to send), and an ev_timer calls
 * mosquitto_loop_misc() each second for keepalive and retries.  A lost
 * connection is retried after 1, 2, 4 ... 60 seconds.
 *
 * publish waits until the broker has the message (QoS 0: written to the
 * socket; 1: PUBACK; 2: PUBCOMP) and returns true; or nil and why.  While
 * the broker is unreachable, messages wait in a queue of --mqtt-queue
 * entries and publish returns true, "queued" at once (hold = false: nil
 * and an error instead, for the durable queue's jobs); a full queue is an
 * error for the caller, and what is still queued when the server stops is
 * logged, never dropped in silence.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>

#include "internal.h"
#include "log.h"
#include "metrics.h"

#define MQTT_TIMEOUT      10.0
#define MQTT_PAYLOAD_MAX  (16 * 1024 * 1024)
#define MQTT_TOPIC_MAX    65535
#define MQTT_BACKOFF_MAX  60.0

/* A message held while the broker is away. */
struct held {
    struct held *next;
    char        *topic;
    void        *payload;
    int          len, qos;
    bool         retain;
};

/* A publish waiting for the broker's word. */
struct pub {
    struct pub   *next, *prev;
    struct lcall *c;
    struct mqtt  *m;
    int           mid;
    bool          done;
};

struct mqtt {
    struct bridge    *b;
    struct mosquitto *mosq;
    ev_io             io;
    ev_timer          misc, retry;
    bool              connected, started;
    double            backoff;
    char              host[CONFIG_HOSTNAME_MAX + 1];
    int               port, keepalive;
    long long         queue_max, nheld;
    struct held      *held, **held_tail;
    struct pub       *pubs;
};

static void schedule_retry(struct mqtt *m);
static void connection_ended(struct mqtt *m, int rc);

/* Watch the socket as libmosquitto needs it now. */
static void rewatch(struct mqtt *m)
{
    struct ev_loop *loop = m->b->loop;
    int fd = mosquitto_socket(m->mosq);
    if (fd < 0) {
        ev_io_stop(loop, &m->io);
        return;
    }
    int events = EV_READ | (mosquitto_want_write(m->mosq) ? EV_WRITE : 0);
    if (ev_is_active(&m->io) && m->io.fd == fd && (m->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(loop, &m->io);
    ev_io_set(&m->io, fd, events);
    ev_io_start(loop, &m->io);
}

static void connect_now(struct mqtt *m)
{
    int rc = m->started ? mosquitto_reconnect_async(m->mosq)
                        : mosquitto_connect_async(m->mosq, m->host, m->port, m->keepalive);
    m->started = true;
    if (rc != MOSQ_ERR_SUCCESS) {
        log_msg(LV_WARN, NULL, "mqtt: cannot connect to %s:%d: %s", m->host, m->port,
                rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        schedule_retry(m);
        return;
    }
    rewatch(m);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    connect_now(w->data);
}

static void schedule_retry(struct mqtt *m)
{
    ev_io_stop(m->b->loop, &m->io);
    m->backoff = m->backoff == 0 ? 1 : m->backoff * 2 > MQTT_BACKOFF_MAX ? MQTT_BACKOFF_MAX : m->backoff * 2;
    ev_timer_stop(m->b->loop, &m->retry);
    ev_timer_set(&m->retry, m->backoff, 0.);
    ev_timer_start(m->b->loop, &m->retry);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct mqtt *m = w->data;
    int rc = MOSQ_ERR_SUCCESS;
    (void)loop;
    if (revents & EV_READ)
        rc = mosquitto_loop_read(m->mosq, 1);
    if (rc == MOSQ_ERR_SUCCESS && (revents & EV_WRITE))
        rc = mosquitto_loop_write(m->mosq, 1);
    /* a lost connection runs on_disconnect, which retries; a failed TLS
     * handshake does not: the reconnection closes its socket */
    if (rc != MOSQ_ERR_SUCCESS && !ev_is_active(&m->retry)) {
        connection_ended(m, rc);
        return;
    }
    rewatch(m);
}

static void misc_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mqtt *m = w->data;
    (void)loop;
    (void)revents;
    if (mosquitto_socket(m->mosq) >= 0) {
        mosquitto_loop_misc(m->mosq);
        rewatch(m);
    }
}

/* Hand the held messages to libmosquitto (now connected). */
static void flush_held(struct mqtt *m)
{
    while (m->held && m->connected) {
        struct held *h = m->held;
        int rc = mosquitto_publish(m->mosq, NULL, h->topic, h->len, h->payload, h->qos, h->retain);
        if (rc == MOSQ_ERR_NO_CONN)
            return;                   /* kept for the next connection */
        if (rc != MOSQ_ERR_SUCCESS)
            log_msg(LV_ERROR, NULL, "mqtt: held message to '%s' refused by the library: %s; dropped",
                    h->topic, mosquitto_strerror(rc));
        m->held = h->next;
        if (m->held == NULL)
            m->held_tail = &m->held;
        m->nheld--;
        free(h->topic);
        free(h->payload);
        free(h);
    }
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    struct mqtt *m = obj;
    (void)mosq;
    if (rc != 0) {
        log_msg(LV_WARN, NULL, "mqtt: %s:%d refused the connection: %s", m->host, m->port,
                mosquitto_connack_string(rc));
        return;                       /* the broker closes; on_disconnect retries */
    }
    m->connected = true;
    metrics_set(&metrics->mqtt_connected, 1);
    m->backoff = 0;
    log_msg(LV_INFO, NULL, "mqtt: connected to %s:%d%s", m->host, m->port,
            m->nheld ? ", sending the held messages" : "");
    flush_held(m);
}

/* The connection is gone, or never came: say so and try again later. */
static void connection_ended(struct mqtt *m, int rc)
{
    schedule_retry(m);
    log_msg(LV_WARN, NULL, "mqtt: %s %s:%d (%s); retrying in %gs",
            m->connected ? "lost" : "cannot reach", m->host, m->port,
            rc == MOSQ_ERR_ERRNO ? strerror(errno) : rc == 0 ? "closed" : mosquitto_strerror(rc),
            m->backoff);
    m->connected = false;
    metrics_set(&metrics->mqtt_connected, 0);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    struct mqtt *m = obj;
    (void)mosq;
    if (m->b->mqtt == m)              /* not while closing */
        connection_ended(m, rc);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid)
{
    struct mqtt *m = obj;
    (void)mosq;
    for (struct pub *p = m->pubs; p; p = p->next)
        if (p->mid == mid && !p->done) {
            p->done = true;
            /* resumed from the loop, not from inside libmosquitto; a
             * publish acknowledged before it waits returns at once */
            if (p->c->waiting)
                call_wake_soon(p->c);
            return;
        }
}

static void on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
    (void)mosq;
    (void)obj;
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING))
        log_msg(LV_WARN, NULL, "mqtt: %s", str);
}

static int mqtt_start(struct bridge *b, const struct config *cfg, char *err, size_t errsz)
{
    if (cfg->mqtt_host[0] == '\0')
        return 0;
    mosquitto_lib_init();
    struct mqtt *m = calloc(1, sizeof(*m));
    char id[CONFIG_MQTT_ID_MAX + 32];
    if (cfg->mqtt_client_id[0] && cfg->worker)   /* one id per connection */
        snprintf(id, sizeof(id), "%s-w%d", cfg->mqtt_client_id, cfg->worker);
    else if (cfg->mqtt_client_id[0])
        snprintf(id, sizeof(id), "%s", cfg->mqtt_client_id);
    else
        snprintf(id, sizeof(id), "luasmtpd-%s-%ld", cfg->id, (long)getpid());
    if (m == NULL || (m->mosq = mosquitto_new(id, true, m)) == NULL) {
        free(m);
        snprintf(err, errsz, "mqtt: cannot create the client (out of memory)");
        return -1;
    }
    m->b = b;
    snprintf(m->host, sizeof(m->host), "%s", cfg->mqtt_host);
    m->port = (int)cfg->mqtt_port;
    m->keepalive = (int)cfg->mqtt_keepalive;
    m->queue_max = cfg->mqtt_queue;
    m->held_tail = &m->held;
    mosquitto_connect_callback_set(m->mosq, on_connect);
    mosquitto_disconnect_callback_set(m->mosq, on_disconnect);
    mosquitto_publish_callback_set(m->mosq, on_publish);
    mosquitto_log_callback_set(m->mosq, on_log);
    int rc = MOSQ_ERR_SUCCESS;
    if (cfg->mqtt_user[0])
        rc = mosquitto_username_pw_set(m->mosq, cfg->mqtt_user,
                                       cfg->mqtt_password[0] ? cfg->mqtt_password : NULL);
    if (rc == MOSQ_ERR_SUCCESS && cfg->mqtt_tls)
        rc = mosquitto_tls_set(m->mosq, cfg->mqtt_tls_ca[0] ? cfg->mqtt_tls_ca : NULL,
                               cfg->mqtt_tls_ca[0] ? NULL : "/etc/ssl/certs", NULL, NULL, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(err, errsz, "mqtt: %s%s", cfg->mqtt_tls ? "TLS settings: " : "",
                 mosquitto_strerror(rc));
        mosquitto_destroy(m->mosq);
        free(m);
        return -1;
    }
    ev_init(&m->io, io_cb);
    m->io.data = m;
    ev_timer_init(&m->misc, misc_cb, 1., 1.);
    m->misc.data = m;
    ev_init(&m->retry, retry_cb);
    m->retry.data = m;
    ev_timer_start(b->loop, &m->misc);
    b->mqtt = m;
    if (!b->held)                     /* a reload's: once the old one has gone */
        connect_now(m);
    return 0;
}

/* The script before it closed: connect with the client id it used. */
static void mqtt_resume(struct bridge *b)
{
    if (b->mqtt && !b->mqtt->started)
        connect_now(b->mqtt);
}

static void mqtt_stop(struct bridge *b)
{
    struct mqtt *m = b->mqtt;
    if (m == NULL)
        return;
    b->mqtt = NULL;
    if (m->connected) {
        mosquitto_disconnect(m->mosq);
        mosquitto_loop_write(m->mosq, 1);   /* best effort: DISCONNECT */
    }
    ev_io_stop(b->loop, &m->io);
    ev_timer_stop(b->loop, &m->misc);
    ev_timer_stop(b->loop, &m->retry);
    if (m->nheld)
        log_msg(LV_WARN, NULL, "mqtt: stopping with %lld message(s) never delivered to %s:%d",
                m->nheld, m->host, m->port);
    while (m->held) {
        struct held *h = m->held;
        log_msg(LV_WARN, NULL, "mqtt: not delivered: topic '%s', %d bytes", h->topic, h->len);
        m->held = h->next;
        free(h->topic);
        free(h->payload);
        free(h);
    }
    mosquitto_destroy(m->mosq);
    free(m);
    mosquitto_lib_cleanup();
}

static void pub_release(void *data)
{
    struct pub *p = data;
    if (p->prev)
        p->prev->next = p->next;
    else if (p->m->pubs == p)
        p->m->pubs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);
}

static int publish_k(lua_State *L, int status, lua_KContext ctx)
{
    struct lcall *c = (struct lcall *)ctx;
    struct pub *p = c->waitdata;
    (void)status;
    bool done = p->done;
    call_release(c);
    if (!done)
        return call_fail(L, "mqtt: timed out waiting for the broker (the message may still arrive)");
    lua_pushboolean(L, 1);
    return 1;
}

/* Keep a message for when the broker is back: true, "queued"; or nil and
 * why when the queue is full. */
static int hold(lua_State *L, struct mqtt *m, const char *topic, const char *payload, size_t len,
                int qos, bool retain)
{
    if (m->nheld >= m->queue_max) {
        log_msg(LV_WARN, NULL, "mqtt: broker %s:%d away and the queue is full (%lld): '%s' not sent",
                m->host, m->port, m->queue_max, topic);
        if (m->queue_max == 0)
            return call_fail(L, "mqtt: broker unreachable (no queue: --mqtt-queue 0)");
        return call_fail(L, "mqtt: broker unreachable and the queue is full (%d messages)",
                         (int)m->queue_max);
    }
    struct held *h = calloc(1, sizeof(*h));
    char *t = strdup(topic);
    void *pl = malloc(len ? len : 1);
    if (h == NULL || t == NULL || pl == NULL) {
        free(h);
        free(t);
        free(pl);
        return call_fail(L, "mqtt: out of memory");
    }
    memcpy(pl, payload, len);
    h->topic = t;
    h->payload = pl;
    h->len = (int)len;
    h->qos = qos;
    h->retain = retain;
    *m->held_tail = h;
    m->held_tail = &h->next;
    m->nheld++;
    lua_pushboolean(L, 1);
    lua_pushliteral(L, "queued");
    return 2;
}

static int l_publish(lua_State *L)
{
    size_t tlen, len;
    const char *topic = luaL_checklstring(L, 1, &tlen);
    const char *payload = luaL_checklstring(L, 2, &len);
    int qos = 0;
    bool retain = false, may_hold = true;
    double timeout = MQTT_TIMEOUT;
    luaL_argcheck(L, tlen > 0 && tlen <= MQTT_TOPIC_MAX && strlen(topic) == tlen &&
                     !strpbrk(topic, "+#"), 1, "not a topic name (empty, too long, NUL, + or #)");
    luaL_argcheck(L, len <= MQTT_PAYLOAD_MAX, 2, "payload over 16 MiB");
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "qos");
        qos = (int)luaL_optinteger(L, -1, 0);
        luaL_argcheck(L, qos >= 0 && qos <= 2, 3, "qos must be 0, 1 or 2");
        lua_getfield(L, 3, "retain");
        retain = lua_toboolean(L, -1);
        lua_getfield(L, 3, "hold");
        may_hold = lua_isnil(L, -1) || lua_toboolean(L, -1);
        timeout = call_opt_timeout(L, 3, MQTT_TIMEOUT);
    }
    struct lcall *c = call_waitable(L, "luasmtpd.mqtt.publish");
    struct mqtt *m = c->b->mqtt;
    if (m == NULL)
        return luaL_error(L, "mqtt: no broker configured (--mqtt-host, or config.mqtt.host)");
    if (!m->connected && !may_hold)
        return call_fail(L, "mqtt: the broker is not connected");
    if (!m->connected)
        return hold(L, m, topic, payload, len, qos, retain);

    struct pub *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return call_fail(L, "mqtt: out of memory");
    p->c = c;
    p->m = m;
    p->mid = -1;
    p->next = m->pubs;
    if (m->pubs)
        m->pubs->prev = p;
    m->pubs = p;
    /* mid is set before the packet goes out: a QoS 0 publish may be
     * written, and on_publish run, inside this call */
    int rc = mosquitto_publish(m->mosq, &p->mid, topic, (int)len, payload, qos, retain);
    bool done = p->done;
    if (rc != MOSQ_ERR_SUCCESS || done)
        pub_release(p);
    if (rc == MOSQ_ERR_NO_CONN && may_hold)
        return hold(L, m, topic, payload, len, qos, retain);
    if (rc != MOSQ_ERR_SUCCESS)
        return call_fail(L, "mqtt: %s", mosquitto_strerror(rc));
    rewatch(m);
    if (done) {
        lua_pushboolean(L, 1);
        return 1;
    }
    /* the wait ends acknowledged (p->done) or timed out */
    return call_wait(L, c, p, pub_release, timeout, publish_k);
}

/* luasmtpd.mqtt.connected(): is the broker connection up? */
static int l_connected(lua_State *L)
{
    struct mqtt *m = bridge_of(L)->mqtt;
    lua_pushboolean(L, m && m->connected);
    return 1;
}

static void mqtt_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "publish", l_publish },
        { "connected", l_connected },
        { NULL, NULL },
    };
    luaL_newlib(L, funcs);
    lua_setfield(L, -2, "mqtt");
}

const struct action mqtt_action = { .open = mqtt_open, .start = mqtt_start, .stop = mqtt_stop,
                                    .resume = mqtt_resume };
