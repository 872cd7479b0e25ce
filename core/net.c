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

/* The address bytes of a (4 or 16) and its family. */
static const unsigned char *addr_bytes(const struct net_addr *a, int *family, int *bits)
{
    *family = a->ss.ss_family;
    if (*family == AF_INET) {
        *bits = 32;
        return (const unsigned char *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
    }
    *bits = 128;
    return (const unsigned char *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
}

int net_parse_cidr(const char *text, struct net_cidr *c, char *err)
{
    char host[NET_ADDRSTR_MAX];
    const char *slash = strchr(text, '/');
    size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
    memset(c, 0, sizeof(*c));
    if (hlen == 0 || hlen >= sizeof(host)) {
        snprintf(err, NET_ERR_MAX, "'%s': expected ADDRESS[/BITS], e.g. 10.0.0.0/8 or 2001:db8::/32", text);
        return -1;
    }
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    int max = 32;
    if (inet_pton(AF_INET, host, c->addr) == 1) {
        c->family = AF_INET;
    } else if (inet_pton(AF_INET6, host, c->addr) == 1) {
        c->family = AF_INET6;
        max = 128;
    } else {
        snprintf(err, NET_ERR_MAX, "'%s': '%s' is not an IPv4 or IPv6 address", text, host);
        return -1;
    }
    c->bits = max;
    if (slash) {
        char *end;
        errno = 0;
        long bits = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || errno != 0 || bits < 0 || bits > max) {
            snprintf(err, NET_ERR_MAX, "'%s': the prefix length must be 0 to %d", text, max);
            return -1;
        }
        c->bits = (int)bits;
    }
    return 0;
}

bool net_cidr_match(const struct net_cidr *c, const struct net_addr *a)
{
    int family, bits;
    const unsigned char *b = addr_bytes(a, &family, &bits);
    if (family != c->family)
        return false;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(b, c->addr, (size_t)full) != 0)
        return false;
    unsigned char mask = (unsigned char)(0xFF << (8 - rest));
    return rest == 0 || (b[full] & mask) == (c->addr[full] & mask);
}

bool net_addr_equal(const struct net_addr *a, const struct net_addr *b)
{
    int fa, fb, bits;
    const unsigned char *pa = addr_bytes(a, &fa, &bits), *pb = addr_bytes(b, &fb, &bits);
    char ha[NET_ADDRSTR_MAX], hb[NET_ADDRSTR_MAX];
    return fa == fb && memcmp(pa, pb, (size_t)bits / 8) == 0 && net_addr_host(a, ha) == net_addr_host(b, hb);
}

void net_client_key(const struct net_addr *a, int prefix6, unsigned char key[NET_KEY_MAX])
{
    int family, bits;
    const unsigned char *b = addr_bytes(a, &family, &bits);
    memset(key, 0, NET_KEY_MAX);
    key[0] = family == AF_INET ? 4 : 6;
    if (family == AF_INET) {
        memcpy(key + 1, b, 4);
        return;
    }
    int full = prefix6 / 8, rest = prefix6 % 8;
    memcpy(key + 1, b, (size_t)full);
    if (rest)
        key[1 + full] = (unsigned char)(b[full] & (0xFF << (8 - rest)));
}
