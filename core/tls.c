#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct tls_server {
    SSL_CTX *ctx[CONFIG_CERTS_MAX];   /* one per --tls-cert, the first the default */
    int nctx;
};

struct tls_conn {
    SSL *ssl;
};

/* "what: reason", the reason from the oldest OpenSSL error queued. */
static void last_error(char *err, size_t errsz, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[TLS_ERR_MAX / 2] = "";
    if (e != 0) {
        ERR_error_string_n(e, reason, sizeof(reason));
        /* "error:0A000086:SSL routines::certificate verify failed": keep the
         * words after the last colon, which say what went wrong */
        const char *last = strrchr(reason, ':');
        if (last && last[1] != '\0')
            memmove(reason, last + 1, strlen(last + 1) + 1);
    }
    snprintf(err, errsz, "%s%s%s", what, reason[0] ? ": " : "", reason);
    ERR_clear_error();
}

/* Ask for a client certificate but let the handshake go on without one or
 * with one that does not verify: hooks see the subject and whether it
 * verified, and decide. */
static int accept_any_cert(int preverify_ok, X509_STORE_CTX *x)
{
    (void)preverify_ok;
    (void)x;
    return 1;
}

/* A client that offers nothing newer than TLS 1.1 (no supported_versions
 * extension, an older legacy version): OpenSSL 3's security levels refuse
 * its SHA-1 handshake, so the level is lowered for this connection only
 * (--tls-min-version 1.0 or 1.1). */
static int legacy_client(SSL *s, int *alert, void *arg)
{
    const unsigned char *ext;
    size_t len;
    (void)alert;
    (void)arg;
    if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_supported_versions, &ext, &len) != 1 &&
        SSL_client_hello_get0_legacy_version(s) < TLS1_2_VERSION)
        SSL_set_security_level(s, 0);
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Session tickets (resumption, RFC 8446 4.6.1 and RFC 5077): one key for
 * the life of the process, drawn with its first context, before --workers
 * forks, so that a device reconnecting resumes whichever worker takes it,
 * after a reload too, and with any of the certificates' contexts.
 * OpenSSL's default, a key per context, would make every worker and every
 * reload a full handshake. */
static unsigned char ticket_keys[80];   /* name 16, HMAC 32, AES 32 */
static bool have_ticket_keys;

/* One certificate's context, set up with the server's settings. */
static SSL_CTX *make_ctx(const struct config *cfg, int i, char *err, size_t errsz)
{
    char what[CONFIG_PATH_MAX * 2 + 128];
    const char *cert = cfg->tls_certs[i];
    const char *key = i < cfg->ntls_keys && cfg->tls_keys[i][0] ? cfg->tls_keys[i] : cert;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        last_error(err, errsz, "cannot create the TLS context");
        return NULL;
    }
    static const struct { const char *name; int version; } versions[] = {
        { "1.0", TLS1_VERSION }, { "1.1", TLS1_1_VERSION }, { "1.2", TLS1_2_VERSION }, { "1.3", TLS1_3_VERSION },
    };
    int min = TLS1_2_VERSION;
    for (size_t k = 0; k < sizeof(versions) / sizeof(versions[0]); k++)
        if (strcmp(cfg->tls_min_version, versions[k].name) == 0)
            min = versions[k].version;
    SSL_CTX_set_min_proto_version(ctx, min);
    if (min < TLS1_2_VERSION)
        SSL_CTX_set_client_hello_cb(ctx, legacy_client, NULL);
    /* SMTP frames its own data (the final "."), so a client that closes
     * without close_notify has only closed */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                             SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* replies are written from a buffer that may move between retries;
     * an idle connection gives its record buffers back unless
     * --tls-keep-buffers (W6: 16 KB of RSS an idle TLS connection, not 24) */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          (cfg->tls_keep_buffers ? 0 : SSL_MODE_RELEASE_BUFFERS));
    if (!have_ticket_keys && RAND_bytes(ticket_keys, sizeof(ticket_keys)) != 1) {
        last_error(err, errsz, "cannot draw the session ticket key");
        goto fail;
    }
    have_ticket_keys = true;
    if (SSL_CTX_set_tlsext_ticket_keys(ctx, ticket_keys, sizeof(ticket_keys)) != 1) {
        last_error(err, errsz, "cannot set the session ticket key");
        goto fail;
    }
    /* a file that cannot be read is said so, once, before OpenSSL tries */
    const char *unreadable = access(cert, R_OK) < 0 ? "--tls-cert" : access(key, R_OK) < 0 ? "--tls-key" : NULL;
    if (unreadable) {
        snprintf(err, errsz, "%s: cannot read %s: %s", unreadable, unreadable[6] == 'c' ? cert : key,
                 strerror(errno));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(what, sizeof(what), "--tls-cert %s: not a PEM certificate", cert);
        last_error(err, errsz, what);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(what, sizeof(what), "--tls-key %s does not match the certificate in %s", key, cert);
        else
            snprintf(what, sizeof(what), "--tls-key %s: cannot load the private key", key);
        last_error(err, errsz, what);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof(what), "--tls-key %s does not match the certificate in %s", key, cert);
        last_error(err, errsz, what);
        goto fail;
    }
    if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1) {
        snprintf(what, sizeof(what), "--tls-ciphers '%s': no usable cipher", cfg->tls_ciphers);
        last_error(err, errsz, what);
        goto fail;
    }
    if (cfg->tls_client_ca[0]) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(what, sizeof(what), "--tls-client-ca %s: cannot load", cfg->tls_client_ca);
            last_error(err, errsz, what);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_cert);
    /* session resumption needs an id context once client certificates are
     * asked for */
    static const unsigned char sid_ctx[] = "luasmtpd";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/*
 * SNI: what the servername callback of the first context needs, owned by
 * that context (its ex_data, freed with it), since a handshake may still be
 * under way when a reload frees the tls_server: the other contexts (each
 * held by a reference) and the names given for each (--tls-names).
 */
struct sni {
    int      n;
    SSL_CTX *ctx[CONFIG_CERTS_MAX];
    char     names[CONFIG_CERTS_MAX][CONFIG_PATH_MAX + 1];   /* "" : the certificate's */
};

static int sni_index = -1;

static void sni_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct sni *t = ptr;
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (t == NULL)
        return;
    for (int i = 1; i < t->n; i++)
        SSL_CTX_free(t->ctx[i]);
    free(t);
}

/* Is host one of the comma-separated names: equal, or "*.rest" with host
 * one label before rest (case does not matter)? */
static bool listed_name(const char *names, const char *host)
{
    size_t hl = strlen(host);
    for (const char *p = names; *p;) {
        size_t n = strcspn(p, ",");
        if (n > 2 && p[0] == '*' && p[1] == '.') {
            const char *dot = strchr(host, '.');
            if (dot && dot != host && (size_t)(host + hl - dot) == n - 1 && strncasecmp(dot, p + 1, n - 1) == 0)
                return true;
        } else if (n == hl && strncasecmp(p, host, n) == 0) {
            return true;
        }
        p += n + (p[n] == ',');
    }
    return false;
}

/* Does certificate i serve host: one of its --tls-names, or else one of
 * the certificate's own names (a subjectAltName DNS name, "*." standing for
 * one label, or its CN when it has none)? */
static bool names_host(const struct sni *t, int i, const char *host)
{
    if (t->names[i][0])
        return listed_name(t->names[i], host);
    X509 *x = SSL_CTX_get0_certificate(t->ctx[i]);
    /* X509_check_host: RFC 6125 matching, subjectAltName first, then CN */
    return x && X509_check_host(x, host, strlen(host), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1;
}

/* SNI: the certificate that serves the name the client sent; the first
 * (the context the connection started with) when none does. */
static int pick_cert(SSL *s, int *alert, void *arg)
{
    const struct sni *t = arg;
    const char *host = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (host == NULL || names_host(t, 0, host))
        return SSL_TLSEXT_ERR_OK;
    for (int i = 1; i < t->n; i++)
        if (names_host(t, i, host)) {
            SSL_set_SSL_CTX(s, t->ctx[i]);
            break;
        }
    return SSL_TLSEXT_ERR_OK;
}

/* With several certificates, the first context picks among them: 0, or
 * -1 when out of memory. */
static int sni_setup(struct tls_server *srv, const struct config *cfg, char *err, size_t errsz)
{
    if (srv->nctx < 2)
        return 0;
    if (sni_index < 0)
        sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, sni_free);
    struct sni *t = calloc(1, sizeof(*t));
    if (sni_index < 0 || t == NULL || SSL_CTX_set_ex_data(srv->ctx[0], sni_index, t) != 1) {
        free(t);
        snprintf(err, errsz, "out of memory for the SNI table");
        return -1;
    }
    t->ctx[0] = srv->ctx[0];   /* the owner: no reference of its own */
    t->n = 1;
    for (int i = 1; i < srv->nctx && SSL_CTX_up_ref(srv->ctx[i]) == 1; i++)
        t->ctx[t->n++] = srv->ctx[i];
    for (int i = 0; i < t->n && i < cfg->ntls_names; i++)
        strcpy(t->names[i], cfg->tls_names[i]);
    SSL_CTX_set_tlsext_servername_callback(srv->ctx[0], pick_cert);
    SSL_CTX_set_tlsext_servername_arg(srv->ctx[0], t);
    return 0;
}

int tls_server_new(struct tls_server **srv_r, const struct config *cfg, char *err, size_t errsz)
{
    struct tls_server *srv = calloc(1, sizeof(*srv));
    *srv_r = NULL;
    if (srv == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    ERR_clear_error();
    for (int i = 0; i < cfg->ntls_certs; i++) {
        if ((srv->ctx[i] = make_ctx(cfg, i, err, errsz)) == NULL) {
            tls_server_free(&srv);
            return -1;
        }
        srv->nctx++;
    }
    if (sni_setup(srv, cfg, err, errsz) < 0) {
        tls_server_free(&srv);
        return -1;
    }
    *srv_r = srv;
    return 0;
}

void tls_server_free(struct tls_server **srv)
{
    if (*srv == NULL)
        return;
    for (int i = 0; i < (*srv)->nctx; i++)
        SSL_CTX_free((*srv)->ctx[i]);
    free(*srv);
    *srv = NULL;
}

struct tls_conn *tls_conn_new(struct tls_server *srv, int fd)
{
    struct tls_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->ssl = SSL_new(srv->ctx[0]);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        ERR_clear_error();
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    SSL_set_accept_state(c->ssl);
    return c;
}

void tls_conn_free(struct tls_conn **c)
{
    if (*c == NULL)
        return;
    if (SSL_is_init_finished((*c)->ssl))
        SSL_shutdown((*c)->ssl);   /* one close_notify; no waiting for the reply */
    ERR_clear_error();
    SSL_free((*c)->ssl);
    free(*c);
    *c = NULL;
}

/* What an SSL_* call that returned rc means. */
static enum tls_io outcome(struct tls_conn *c, int rc, char *err)
{
    int e = SSL_get_error(c->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
            if (errno == 0 || errno == ECONNRESET || errno == EPIPE) {
                snprintf(err, TLS_ERR_MAX, "connection closed by the client");
                return TLS_CLOSED;
            }
            snprintf(err, TLS_ERR_MAX, "%s", strerror(errno));
            return TLS_ERROR;
        }
        /* fall through */
    default:
        last_error(err, TLS_ERR_MAX, "TLS error");
        return TLS_ERROR;
    }
}

enum tls_io tls_handshake(struct tls_conn *c, char *err)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1)
        return TLS_OK;
    enum tls_io r = outcome(c, rc, err);
    if (r == TLS_CLOSED)
        snprintf(err, TLS_ERR_MAX, "connection closed by the client");
    return r;
}

enum tls_io tls_read(struct tls_conn *c, void *p, size_t n, size_t *n_r, char *err)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_read_ex(c->ssl, p, n, n_r);
    return rc == 1 ? TLS_OK : outcome(c, rc, err);
}

enum tls_io tls_write(struct tls_conn *c, const void *p, size_t n, size_t *n_r, char *err)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_write_ex(c->ssl, p, n, n_r);
    return rc == 1 ? TLS_OK : outcome(c, rc, err);
}

bool tls_pending(const struct tls_conn *c)
{
    return SSL_has_pending(c->ssl) == 1;
}

const char *tls_version(const struct tls_conn *c)
{
    return SSL_get_version(c->ssl);
}

const char *tls_sni(const struct tls_conn *c)
{
    const char *host = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    for (const char *h = host; h && *h; h++)
        if (*h <= ' ' || *h >= 127)
            return NULL;          /* not a host name: not shown */
    return host;
}

const char *tls_cipher(const struct tls_conn *c)
{
    return SSL_get_cipher_name(c->ssl);
}

void tls_client_subject(const struct tls_conn *c, char *out, size_t outsz, bool *verified_r)
{
    X509 *cert = SSL_get1_peer_certificate(c->ssl);
    out[0] = '\0';
    *verified_r = false;
    if (cert == NULL)
        return;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio && X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0,
                                  XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        int n = BIO_read(bio, out, (int)outsz - 1);
        out[n > 0 ? n : 0] = '\0';
    }
    BIO_free(bio);
    X509_free(cert);
    *verified_r = SSL_get_verify_result(c->ssl) == X509_V_OK;
    ERR_clear_error();
}
