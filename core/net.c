#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int net_parse_addr(const char *text, struct net_addr *addr, char *err)
{
    char host[NET_ADDRSTR_MAX];
    const char *colon = strrchr(text, ':');
    const char *h = text;
    size_t hlen;

    if (colon == NULL) {
        snprintf(err, NET_ERR_MAX, "'%s': expected ADDRESS:PORT, e.g. 127.0.0.1:2525 or [::1]:2525", text);
        return -1;
    }
    hlen = (size_t)(colon - text);
    if (hlen >= 2 && text[0] == '[' && text[hlen - 1] == ']') {
        h = text + 1;
        hlen -= 2;
    } else if (memchr(text, ':', hlen) != NULL) {
        snprintf(err, NET_ERR_MAX, "'%s': put an IPv6 address in brackets, e.g. [::1]:2525", text);
        return -1;
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        snprintf(err, NET_ERR_MAX, "'%s': missing or overlong address", text);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';

    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535) {
        snprintf(err, NET_ERR_MAX, "'%s': port must be a number from 0 to 65535", text);
        return -1;
    }

    memset(addr, 0, sizeof(*addr));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&addr->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr->ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((unsigned short)port);
        addr->len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((unsigned short)port);
        addr->len = sizeof(*in6);
    } else {
        snprintf(err, NET_ERR_MAX, "'%s': '%s' is not a numeric IPv4 or IPv6 address", text, host);
        return -1;
    }
    return 0;
}

int net_listen(const struct net_addr *addr, int backlog, bool shared, char *err)
{
    char a[NET_ADDRSTR_MAX];
    int one = 1;
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, NET_ERR_MAX, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (shared && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        snprintf(err, NET_ERR_MAX, "SO_REUSEPORT: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (addr->ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0) {
        snprintf(err, NET_ERR_MAX, "bind %s: %s", net_addr_str(addr, a), strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, backlog) < 0) {
        snprintf(err, NET_ERR_MAX, "listen %s: %s", net_addr_str(addr, a), strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int net_accept(int lfd, struct net_addr *peer)
{
    peer->len = sizeof(peer->ss);
    int fd = accept4(lfd, (struct sockaddr *)&peer->ss, &peer->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

void net_loopback_addr(struct net_addr *addr)
{
    memset(addr, 0, sizeof(*addr));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&addr->ss;
    in4->sin_family = AF_INET;
    in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr->len = sizeof(*in4);
}

int net_local_addr(int fd, struct net_addr *addr)
{
    addr->len = sizeof(addr->ss);
    return getsockname(fd, (struct sockaddr *)&addr->ss, &addr->len);
}

int net_addr_host(const struct net_addr *addr, char *host)
{
    if (addr->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr->ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, NET_ADDRSTR_MAX);
        return ntohs(in6->sin6_port);
    }
    if (addr->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)&addr->ss;
        inet_ntop(AF_INET, &in4->sin_addr, host, NET_ADDRSTR_MAX);
        return ntohs(in4->sin_port);
    }
    snprintf(host, NET_ADDRSTR_MAX, "unix");
    return 0;
}

char *net_addr_str(const struct net_addr *addr, char *out)
{
    char host[NET_ADDRSTR_MAX];
    int port = net_addr_host(addr, host);
    snprintf(out, NET_ADDRSTR_MAX, addr->ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    return out;
}
