/* Addresses and networks (core/net.c): CIDR matching, and the key that
 * makes one client of an IPv4 address or an IPv6 prefix. */
#include <string.h>

#include "clients.h"
#include "net.h"
#include "test.h"

static struct net_addr addr(const char *text)
{
    struct net_addr a;
    char err[NET_ERR_MAX];
    if (net_parse_addr(text, &a, err) < 0)
        memset(&a, 0, sizeof(a));
    return a;
}

static void test_cidr(void)
{
    static const struct { const char *cidr, *addr; bool match; } cases[] = {
        { "10.0.0.0/8", "10.200.1.2:25", true },
        { "10.0.0.0/8", "11.0.0.1:25", false },
        { "192.0.2.7", "192.0.2.7:1", true },
        { "192.0.2.7", "192.0.2.8:1", false },
        { "192.0.2.0/25", "192.0.2.127:1", true },
        { "192.0.2.0/25", "192.0.2.128:1", false },
        { "0.0.0.0/0", "203.0.113.9:1", true },
        { "2001:db8::/32", "[2001:db8:ffff::1]:25", true },
        { "2001:db8::/32", "[2001:db9::1]:25", false },
        { "::1", "[::1]:25", true },
        { "::1", "127.0.0.1:25", false },          /* families never match */
        { "127.0.0.0/8", "[::1]:25", false },
        { "2001:db8::/127", "[2001:db8::1]:25", true },
        { "2001:db8::/128", "[2001:db8::1]:25", false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct net_cidr c;
        char err[NET_ERR_MAX];
        struct net_addr a = addr(cases[i].addr);
        CHECK(net_parse_cidr(cases[i].cidr, &c, err) == 0, "parse %s: %s", cases[i].cidr, err);
        CHECK(net_cidr_match(&c, &a) == cases[i].match, "%s in %s", cases[i].addr, cases[i].cidr);
    }
    static const char *const bad[] = { "", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "host.example",
                                       "10.0.0.0/-1" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct net_cidr c;
        char err[NET_ERR_MAX];
        CHECK(net_parse_cidr(bad[i], &c, err) < 0 && err[0], "bad %s", bad[i]);
    }
}

static void test_client_key(void)
{
    unsigned char a[NET_KEY_MAX], b[NET_KEY_MAX];
    struct net_addr x = addr("[2001:db8:1:2:aaaa::1]:1000"), y = addr("[2001:db8:1:2:bbbb::9]:2000"),
                    z = addr("[2001:db8:1:3::1]:1000");
    net_client_key(&x, 64, a);
    net_client_key(&y, 64, b);
    CHECK(memcmp(a, b, NET_KEY_MAX) == 0, "one /64 is one client");
    net_client_key(&z, 64, b);
    CHECK(memcmp(a, b, NET_KEY_MAX) != 0, "another /64 is another");
    net_client_key(&z, 48, b);
    net_client_key(&x, 48, a);
    CHECK(memcmp(a, b, NET_KEY_MAX) == 0, "a /48 holds both");
    net_client_key(&x, 128, a);
    net_client_key(&y, 128, b);
    CHECK(memcmp(a, b, NET_KEY_MAX) != 0, "/128: each address");
    struct net_addr p = addr("192.0.2.7:1"), q = addr("192.0.2.7:2"), r = addr("192.0.2.8:1");
    net_client_key(&p, 64, a);
    net_client_key(&q, 64, b);
    CHECK(memcmp(a, b, NET_KEY_MAX) == 0, "IPv4: the address, whatever the port");
    net_client_key(&r, 64, b);
    CHECK(memcmp(a, b, NET_KEY_MAX) != 0, "IPv4: another address");
    CHECK(net_addr_equal(&p, &p) && !net_addr_equal(&p, &q) && !net_addr_equal(&p, &r), "equal");
}

/* --connect-rate's buckets. */
static void test_rate(void)
{
    struct clients t = { 0 };
    unsigned char a[NET_KEY_MAX] = { 4, 192, 0, 2, 7 }, b[NET_KEY_MAX] = { 4, 192, 0, 2, 8 };
    int ok = 0;
    for (int i = 0; i < 5; i++)
        ok += clients_connect(&t, a, 100.0, 3);
    CHECK(ok == 3, "a burst of 3: %d", ok);
    CHECK(clients_connect(&t, b, 100.0, 3), "another client has its own bucket");
    CHECK(!clients_connect(&t, a, 110.0, 3), "10 s later: half a token");
    CHECK(clients_connect(&t, a, 121.0, 3), "20 s later: one more");
    CHECK(!clients_connect(&t, a, 121.0, 3), "and no more");
    /* many clients: the table holds, the oldest give way */
    for (unsigned i = 0; i < 100000; i++) {
        unsigned char k[NET_KEY_MAX] = { 6 };
        memcpy(k + 1, &i, sizeof(i));
        clients_connect(&t, k, 200.0 + i * 1e-3, 3);
    }
    CHECK(clients_connect(&t, a, 400.0, 3), "pushed out: a full bucket again");
    clients_free(&t);
}

int main(void)
{
    test_cidr();
    test_client_key();
    test_rate();
    return test_summary("test_net");
}
