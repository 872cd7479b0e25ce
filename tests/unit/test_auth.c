/* auth.c: strict base64 and the PLAIN message, checked against RFC 4648's
 * test vectors and against every malformed shape a client can send. */
#include <string.h>

#include "auth.h"
#include "test.h"

static void test_b64(void)
{
    static const struct {
        const char *in, *out;   /* out NULL: must fail */
        size_t outlen;
    } cases[] = {
        /* RFC 4648 section 10 */
        { "", "", 0 },
        { "Zg==", "f", 1 },
        { "Zm8=", "fo", 2 },
        { "Zm9v", "foo", 3 },
        { "Zm9vYg==", "foob", 4 },
        { "Zm9vYmE=", "fooba", 5 },
        { "Zm9vYmFy", "foobar", 6 },
        /* padding left out */
        { "Zg", "f", 1 },
        { "Zm8", "fo", 2 },
        /* binary, NULs kept */
        { "AHVzZXIAcGFzcw==", "\0user\0pass", 10 },
        { "+/+/", "\xfb\xff\xbf", 3 },
        /* malformed */
        { "Z", NULL, 0 },
        { "Zm9vY", NULL, 0 },
        { "Zg=", NULL, 0 },
        { "Zg===", NULL, 0 },
        { "=", NULL, 0 },
        { "Zm9v Yg==", NULL, 0 },
        { "Zm9v\r\n", NULL, 0 },
        { "Zm-v", NULL, 0 },
        { "Zm_v", NULL, 0 },
        { "Zg==Zg==", NULL, 0 },
        { "Zh==", NULL, 0 },      /* leftover bits not zero */
        { "Zm9=", NULL, 0 },
        { "*", NULL, 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        size_t n = 99;
        int rc = auth_b64_decode(cases[i].in, strlen(cases[i].in), out, sizeof(out), &n);
        if (cases[i].out == NULL) {
            CHECK(rc < 0, "'%s' is refused", cases[i].in);
        } else {
            CHECK(rc == 0 && n == cases[i].outlen && memcmp(out, cases[i].out, n) == 0,
                  "'%s' decodes (rc %d, %zu bytes)", cases[i].in, rc, n);
        }
    }
    char small[2];
    size_t n;
    CHECK(auth_b64_decode("Zm9v", 4, small, sizeof(small), &n) < 0, "output bound kept");
    CHECK(auth_b64_decode("Zm8=", 4, small, sizeof(small), &n) == 0 && n == 2, "exact fit");
}

static void test_plain(void)
{
    static const struct {
        const char *msg;
        size_t len;
        int rc;
        const char *authzid, *user, *pass;
    } cases[] = {
        { "\0user\0pass", 10, 0, "", "user", "pass" },
        { "admin\0user\0pass", 15, 0, "admin", "user", "pass" },
        { "\0user\0", 6, 0, "", "user", "" },
        { "\0\0pass", 6, -1, NULL, NULL, NULL },          /* empty user */
        { "userpass", 8, -1, NULL, NULL, NULL },
        { "\0userpass", 9, -1, NULL, NULL, NULL },
        { "\0user\0pa\0ss", 11, -1, NULL, NULL, NULL },   /* a third NUL */
        { "", 0, -1, NULL, NULL, NULL },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct auth_plain p;
        int rc = auth_plain_split(cases[i].msg, cases[i].len, &p);
        CHECK(rc == cases[i].rc, "case %zu: rc %d", i, rc);
        if (rc == 0 && cases[i].rc == 0) {
            CHECK(p.authzid_len == strlen(cases[i].authzid) &&
                      memcmp(p.authzid, cases[i].authzid, p.authzid_len) == 0,
                  "case %zu: authzid", i);
            CHECK(p.user_len == strlen(cases[i].user) && memcmp(p.user, cases[i].user, p.user_len) == 0,
                  "case %zu: user", i);
            CHECK(p.password_len == strlen(cases[i].pass) &&
                      memcmp(p.password, cases[i].pass, p.password_len) == 0,
                  "case %zu: password", i);
        }
    }
}

static void test_text(void)
{
    CHECK(auth_text_ok("user", 4, AUTH_USER_MAX), "a name");
    CHECK(auth_text_ok("", 0, AUTH_USER_MAX), "empty is the caller's business");
    CHECK(!auth_text_ok("us\ner", 5, AUTH_USER_MAX), "no line break");
    CHECK(!auth_text_ok("us\rer", 5, AUTH_USER_MAX), "no CR");
    CHECK(!auth_text_ok("us\0er", 5, AUTH_USER_MAX), "no NUL");
    CHECK(!auth_text_ok("abc", 3, 2), "the cap");
}

int main(void)
{
    test_b64();
    test_plain();
    test_text();
    return test_summary("test_auth");
}
