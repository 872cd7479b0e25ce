/*
 * config: every setting with its default, range and help text in one table.
 * The command line (and later a script's `config` table) set values by name
 * through config_set(); config_usage() prints --help from the same table, so
 * the documentation of a flag and its check cannot drift apart.
 */
#ifndef LUASMTPD_CONFIG_H
#define LUASMTPD_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "net.h"

#define CONFIG_SOFTWARE     "luasmtpd"   /* in the default banner and HELP */
#define CONFIG_LISTEN_MAX   16
#define CONFIG_HOSTNAME_MAX 255
#define CONFIG_ERR_MAX      320
#define CONFIG_ID_MAX       64
#define CONFIG_PATH_MAX     1024
#define CONFIG_NAME_MAX     64      /* --user, --group */
#define CONFIG_TEXT_MAX     512
#define CONFIG_DOMAINS_MAX  64
#define CONFIG_BANNER_MAX   200
#define CONFIG_MQTT_ID_MAX  128
#define CONFIG_CIDRS_MAX    32
#define CONFIG_CERTS_MAX    16      /* --tls-cert */

/* A list of networks (--proxy-from, --client-limit-exceptions). */
struct config_cidrs {
    struct net_cidr v[CONFIG_CIDRS_MAX];
    int n;
    bool set;                   /* given, even empty: no default then */
};
bool config_cidrs_match(const struct config_cidrs *c, const struct net_addr *a);

/* --auth-methods */
#define CONFIG_AUTH_PLAIN   1u
#define CONFIG_AUTH_LOGIN   2u

struct config {
    struct net_addr listen[CONFIG_LISTEN_MAX];
    bool   listen_tls[CONFIG_LISTEN_MAX];  /* implicit TLS (--listen-tls) */
    bool   listen_proxy[CONFIG_LISTEN_MAX];  /* a PROXY header first (--proxy-protocol) */
    int    nlisten;
    /* --proxy-protocol: the listeners named, resolved by config_finish */
    struct net_addr proxy_listen[CONFIG_LISTEN_MAX];
    int    nproxy_listen;
    bool   proxy_all;           /* --proxy-protocol '*' */
    struct config_cidrs proxy_from;      /* --proxy-from; default loopback */
    /* per-client limits (server.c), a client being an IPv4 address or an
     * IPv6 prefix */
    long long max_clients_per_ip;
    long long connect_rate;              /* connections a minute */
    long long client_ipv6_prefix;
    long long max_bad_clients;           /* closings for errors in 10 minutes before a tarpit */
    struct config_cidrs client_exceptions;   /* --client-limit-exceptions; default loopback */
    char   hostname[CONFIG_HOSTNAME_MAX + 1];
    char   banner[CONFIG_BANNER_MAX + 1];     /* after the hostname in the 220 */
    char   description[CONFIG_TEXT_MAX + 1];  /* free text for --check */
    char   domains[CONFIG_DOMAINS_MAX][CONFIG_HOSTNAME_MAX + 1];  /* lower case */
    int    ndomains;
    bool   any_domain;          /* "*" listed: every domain is accepted */
    long long pipelining;       /* 0 or 1: advertise PIPELINING */
    long long auth_methods;     /* CONFIG_AUTH_* bits */
    long long max_clients;
    long long max_size;
    long long max_memory;        /* --max-memory: the buffers' budget (buf.h) */
    long long max_recipients;
    long long max_messages;
    long long max_errors;
    long long timeout;
    long long session_timeout;
    long long grace;
    long long hook_timeout_ms;
    long long hook_kill_ms;     /* the watchdog's limit; set by config_finish */
    long long lua_memory;
    long long hook_memory;      /* per call, of lua_memory; set by config_finish */
    long long body_lines;
    long long rawbody;          /* 0 or 1 */
    long long lua_debug;        /* 0 or 1: the whole debug library for scripts */
    char   id[CONFIG_ID_MAX + 1];   /* events are named <id>.mail */
    /* certificates, their keys and names by position, the first the
     * default (SNI picks another by name); a key "" is in its
     * certificate's file, names "" are those of the certificate */
    char   tls_certs[CONFIG_CERTS_MAX][CONFIG_PATH_MAX + 1];
    char   tls_keys[CONFIG_CERTS_MAX][CONFIG_PATH_MAX + 1];
    char   tls_names[CONFIG_CERTS_MAX][CONFIG_PATH_MAX + 1];   /* "a.lan,*.b.lan" */
    int    ntls_certs, ntls_keys, ntls_names;
    char   tls_ciphers[CONFIG_TEXT_MAX + 1];
    /* --http: the admin listener, and what it asks of clients */
    bool   http_on;
    struct net_addr http;
    char   http_token[CONFIG_TEXT_MAX + 1];
    char   http_user[CONFIG_TEXT_MAX + 1];
    char   http_password[CONFIG_TEXT_MAX + 1];
    long long keep, keep_bytes;  /* --keep, --keep-bytes: the console's messages */
    char   tls_client_ca[CONFIG_PATH_MAX + 1];
    long long tls_timeout;
    char   tls_min_version[8];  /* "1.0" to "1.3" */
    long long tls_keep_buffers; /* 0 or 1: no SSL_MODE_RELEASE_BUFFERS */
    long long require_tls;      /* 0 or 1 */
    long long require_auth;     /* 0 or 1 */
    long long allow_insecure_auth;  /* 0 or 1 */
    long long max_auth_failures;
    long long max_junk_commands;
    long long max_auth_rate;    /* failed AUTH per client address and hour */
    /* the MQTT broker of luasmtpd.mqtt.publish (lua/mqtt.c); no host: none */
    char   mqtt_host[CONFIG_HOSTNAME_MAX + 1];
    long long mqtt_port;
    char   mqtt_client_id[CONFIG_MQTT_ID_MAX + 1];  /* "": luasmtpd-<id>-<pid> */
    char   mqtt_user[CONFIG_TEXT_MAX + 1];
    char   mqtt_password[CONFIG_TEXT_MAX + 1];
    long long mqtt_tls;         /* 0 or 1 */
    char   mqtt_tls_ca[CONFIG_PATH_MAX + 1];      /* "": the system's CAs */
    long long mqtt_keepalive;
    long long mqtt_queue;       /* messages held while the broker is away */
    /* the state database (lua/store.c) and its queue of jobs */
    char   state_dir[CONFIG_PATH_MAX + 1];   /* "": $STATE_DIRECTORY or ./luasmtpd-state */
    char   pid_file[CONFIG_PATH_MAX + 1];    /* --pid-file, or "" */
    char   user[CONFIG_NAME_MAX + 1], group[CONFIG_NAME_MAX + 1];   /* --user, --group */
    long long queue_max;        /* jobs */
    long long queue_max_bytes;
    long long queue_concurrency;
    long long queue_retry[2];   /* seconds: the first retry's wait, the longest */
    long long queue_lifetime;   /* seconds a job is tried before it is dead */
    long long workers;          /* processes sharing the listeners (--workers) */
    int    worker;              /* not an option: this one's number, 1 to workers (0: none) */
    int    log_level;
    bool   log_json;                         /* --log-format json */
};

void config_defaults(struct config *cfg);
/* Set the option `name` (as on the command line, without "--") from text.
 * 0, or -1 with a message in err (CONFIG_ERR_MAX). */
int  config_set(struct config *cfg, const char *name, const char *value, char *err);
/* Fill what was left unset (the default listener, the machine's name) and
 * check the options that go together.  0, or -1 with a message in err. */
int  config_finish(struct config *cfg, char *err);
/* Does option `name` take a value?  -1 when there is no such option. */
int  config_takes_value(const char *name);
/* The option's own name for `name`, which may be an alias (a `config` key
 * such as "domains" for --domain); NULL when there is no such option. */
const char *config_option_name(const char *name);
/* What a list of values (a `config` table such as listen = {...}) means for
 * option `name`: the option given once per element (--listen, --domain),
 * the elements joined by commas (--auth-methods), or nothing valid. */
enum config_list { CONFIG_LIST_NONE, CONFIG_LIST_REPEAT, CONFIG_LIST_COMMA };
enum config_list config_option_list(const char *name);
/* Is mail for this domain taken (--domain)?  Case-insensitive. */
bool config_domain_accepted(const struct config *cfg, const char *domain, size_t len);
void config_usage(FILE *out);

#endif
