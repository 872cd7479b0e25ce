/*
 * net: socket calls and nothing else.  0 or a descriptor on success, -1 with
 * a message in err (size NET_ERR_MAX) on failure.
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

#endif
