/*
 * tls: OpenSSL behind a small non-blocking interface.  Nothing else in the
 * server includes an OpenSSL header.
 *
 * A tls_server holds the certificate, key and settings (TLS 1.2 and later,
 * the cipher list, a request for a client certificate that is reported,
 * verified only against --tls-client-ca).  A tls_conn is one connection's
 * TLS state over a socket the caller owns.  Every I/O step returns at once
 * with what it needs to go on: TLS_WANT_READ or TLS_WANT_WRITE say which
 * readiness of the socket to wait for.
 */
#ifndef LUASMTPD_TLS_H
#define LUASMTPD_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

#define TLS_ERR_MAX      256    /* the err of a connection's steps */
#define TLS_SUBJECT_MAX  512

struct tls_server;
struct tls_conn;

enum tls_io {
    TLS_OK,          /* done; for reads and writes, *n_r bytes moved */
    TLS_WANT_READ,   /* call again when the socket is readable */
    TLS_WANT_WRITE,  /* call again when the socket is writable */
    TLS_CLOSED,      /* the peer closed the TLS session (or the socket) */
    TLS_ERROR,       /* failed: the reason is in err */
};

/* From cfg->tls_certs (one context each, the first the default; SNI picks
 * another by the names of its certificate), tls_keys, tls_ciphers,
 * tls_min_version, tls_client_ca.  0, or -1 with
 * the reason in err (errsz bytes: a file that cannot be read, a key that
 * does not match the certificate, a cipher list OpenSSL does not know). */
int  tls_server_new(struct tls_server **srv_r, const struct config *cfg, char *err, size_t errsz);
void tls_server_free(struct tls_server **srv);

/* NULL when out of memory. */
struct tls_conn *tls_conn_new(struct tls_server *srv, int fd);
/* Send a close_notify if the session got that far (best effort), free. */
void tls_conn_free(struct tls_conn **c);

enum tls_io tls_handshake(struct tls_conn *c, char *err);
enum tls_io tls_read(struct tls_conn *c, void *p, size_t n, size_t *n_r, char *err);
enum tls_io tls_write(struct tls_conn *c, const void *p, size_t n, size_t *n_r, char *err);
/* Has the TLS layer decrypted bytes the socket will not signal again? */
bool tls_pending(const struct tls_conn *c);

/* After the handshake: "TLSv1.3", the cipher's name. */
const char *tls_version(const struct tls_conn *c);
const char *tls_cipher(const struct tls_conn *c);
/* The host name the client sent (SNI), or NULL. */
const char *tls_sni(const struct tls_conn *c);
/* The client certificate's subject ("CN=cam1,O=Site"), "" when none was
 * presented; *verified_r: it chains to --tls-client-ca. */
void tls_client_subject(const struct tls_conn *c, char *out, size_t outsz, bool *verified_r);

#endif
