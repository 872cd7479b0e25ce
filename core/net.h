/*
 * net: socket calls, and the addresses and networks they take.  0 or a
 * descriptor on success, -1 with a message in err (size NET_ERR_MAX) on
 * failure.
 */
#ifndef LUASMTPD_NET_H
#define LUASMTPD_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define NET_ERR_MAX 256
#define NET_ADDRSTR_MAX 64   /* "[ffff:...:ffff]:65535" */

struct net_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* "127.0.0.1:2525", "[::1]:2525", "0.0.0.0:25", "[::]:25"; numeric only.
 * Port 0 asks the kernel for a free port. */
int  net_parse_addr(const char *text, struct net_addr *addr, char *err);
/* Non-blocking, close-on-exec listening socket; IPv6 sockets are v6-only.
 * shared: SO_REUSEPORT, for the processes of --workers to listen together. */
int  net_listen(const struct net_addr *addr, int backlog, bool shared, char *err);
/* Accept one connection as a non-blocking, close-on-exec socket with
 * TCP_NODELAY; -1 with errno set (EAGAIN when none is waiting). */
int  net_accept(int lfd, struct net_addr *peer);
int  net_local_addr(int fd, struct net_addr *addr);
/* 127.0.0.1, port 0: the peer of a session on a socketpair (--replay,
 * the session fuzzer). */
void net_loopback_addr(struct net_addr *addr);
/* "1.2.3.4" / "::1" into host (NET_ADDRSTR_MAX); returns the port. */
int  net_addr_host(const struct net_addr *addr, char *host);
/* "1.2.3.4:25" / "[::1]:25" into out (NET_ADDRSTR_MAX). */
char *net_addr_str(const struct net_addr *addr, char *out);
/* Same address and port. */
bool net_addr_equal(const struct net_addr *a, const struct net_addr *b);

/* A network: "10.0.0.0/8", "2001:db8::/32", or one address ("192.0.2.7"). */
struct net_cidr {
    int family;                   /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
};
int  net_parse_cidr(const char *text, struct net_cidr *c, char *err);
bool net_cidr_match(const struct net_cidr *c, const struct net_addr *a);

/* Who a client is for per-client limits: its IPv4 address, or the first
 * prefix6 bits of its IPv6 address (a /64 is one subscriber). */
#define NET_KEY_MAX 17
void net_client_key(const struct net_addr *a, int prefix6, unsigned char key[NET_KEY_MAX]);

#endif
