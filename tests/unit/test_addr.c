/* RFC 5322 address lists (core/addr.c): each form of the grammar and of
 * what writers get wrong, read into mailboxes and written back; through
 * mime_parse, encoded words in names only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "mime.h"
#include "test.h"

/* "name|address|group;" for each mailbox ("-" for no group). */
static void describe(const struct addr_list *l, char *out, size_t size)
{
    struct address a;
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; addr_next(l, &i, &a) && o < size;)
        o += (size_t)snprintf(out + o, size - o, "%s|%s|%s;", a.name, a.address, a.group ? a.group : "-");
}

static const struct {
    const char *in, *text, *boxes;
} cases[] = {
    { "a@b.c", "a@b.c", "|a@b.c|-;" },
    { "John Doe <jdoe@example.com>", "John Doe <jdoe@example.com>", "John Doe|jdoe@example.com|-;" },
    { "\"Doe, John\" <jdoe@x>", "\"Doe, John\" <jdoe@x>", "Doe, John|jdoe@x|-;" },
    { "\"John\" <j@x>", "John <j@x>", "John|j@x|-;" },
    { "\"a\\\"b\" <x@y>", "\"a\\\"b\" <x@y>", "a\"b|x@y|-;" },
    /* RFC 5322 A.5: comments anywhere */
    { "Pete(A wonderful \\) chap) <pete(his account)@silly.test(his host)>", "Pete <pete@silly.test>",
      "Pete|pete@silly.test|-;" },
    { "pete(his account)@silly.test(his host)", "his host <pete@silly.test>", "his host|pete@silly.test|-;" },
    { "<c@(Chris's host.)public.example>", "c@public.example", "|c@public.example|-;" },
    /* A.1.3: groups, and an empty one */
    { "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, x@y",
      "A Group: Ed Jones <c@a.test>, joe@where.test, John <jdoe@one.test>;, x@y",
      "Ed Jones|c@a.test|A Group;|joe@where.test|A Group;John|jdoe@one.test|A Group;|x@y|-;" },
    { "undisclosed-recipients:;", "undisclosed-recipients:;", "" },
    { "a@b, Friends: ; c@d", "a@b, Friends:;, c@d", "|a@b|-;|c@d|-;" },
    { "G: a@b", "G: a@b;", "|a@b|G;" },                       /* never closed */
    /* 4.4: obsolete forms */
    { "<@a.com,@b.com:x@y.com>", "x@y.com", "|x@y.com|-;" },
    { "John . Q. Public <jqp@x>", "\"John . Q. Public\" <jqp@x>", "John . Q. Public|jqp@x|-;" },
    { "jdoe@EXAMPLE .com", "jdoe@EXAMPLE.com", "|jdoe@EXAMPLE.com|-;" },
    { "a@b, , c@d,", "a@b, c@d", "|a@b|-;|c@d|-;" },
    /* quoted local parts: quotes only where needed */
    { "\"very.unusual.@.unusual.com\"@example.com", "\"very.unusual.@.unusual.com\"@example.com",
      "|\"very.unusual.@.unusual.com\"@example.com|-;" },
    { "\"john\"@x", "john@x", "|john@x|-;" },
    { "<john doe@x>", "\"john doe\"@x", "|\"john doe\"@x|-;" },
    { "x@[1.2.3.4]", "x@[1.2.3.4]", "|x@[1.2.3.4]|-;" },
    /* the old "address (Name)" */
    { "jdoe@example.com (John Doe)", "John Doe <jdoe@example.com>", "John Doe|jdoe@example.com|-;" },
    { "Real <r@x> (comment)", "Real <r@x>", "Real|r@x|-;" },
    /* lone words, nothing, <> */
    { "nsb", "nsb", "|nsb|-;" },
    { "Mary Smith", "\"Mary Smith\"", "|\"Mary Smith\"|-;" },
    { "(only a comment)", "", "" },
    { "", "", "" },
    { "\"Nobody\" <>", "Nobody <>", "Nobody||-;" },
    { "<>", "<>", "||-;" },
    /* what writers get wrong: the address is what is in angle brackets,
     * else the word before the last '@'; the rest is display name */
    { "Mikel@Lindsaar <raasdnil@gmail.com>", "\"Mikel@Lindsaar\" <raasdnil@gmail.com>",
      "Mikel@Lindsaar|raasdnil@gmail.com|-;" },
    { "boss@corp.example evil@x", "\"boss@corp.example\" <evil@x>", "boss@corp.example|evil@x|-;" },
    { "Big Bug bb@bug.com", "Big Bug <bb@bug.com>", "Big Bug|bb@bug.com|-;" },
    { "develop!nextmime@ebony@sblab.att.com", "\"develop!nextmime@ebony\"@sblab.att.com",
      "|\"develop!nextmime@ebony\"@sblab.att.com|-;" },
    { "Name <a@b", "Name <a@b>", "Name|a@b|-;" },
    { "<a,b@c>", "\"a,b\"@c", "|\"a,b\"@c|-;" },
    { "\"open <a@b>", "\"open <a@b>\"", "|\"open <a@b>\"|-;" },
    { "a <b> <c@d>", "a <b>", "a|b|-;" },
    { "x\ty@z\x01", "x <y@z>", "x|y@z|-;" },
};

static void test_cases(void)
{
    struct addr_list l, again;
    struct buf text, text2;
    char boxes[2048], boxes2[2048];
    addr_list_init(&l, 1 << 20);
    addr_list_init(&again, 1 << 20);
    buf_init(&text, 1 << 20);
    buf_init(&text2, 1 << 20);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = cases[i].in;
        buf_clear(&text);
        CHECK(addr_parse(&l, in, strlen(in), NULL, NULL) == 0 && addr_render(&l, &text) == 0, "case %zu", i);
        describe(&l, boxes, sizeof(boxes));
        CHECK(buf_len(&text) == strlen(cases[i].text) && memcmp(buf_head(&text), cases[i].text, buf_len(&text)) == 0,
              "case %zu: %s: text [%.*s]", i, in, (int)buf_len(&text), buf_head(&text));
        CHECK(strcmp(boxes, cases[i].boxes) == 0, "case %zu: %s: mailboxes [%s]", i, in, boxes);
        /* the canonical text reads back as the same mailboxes and text */
        buf_clear(&text2);
        CHECK(addr_parse(&again, buf_head(&text), buf_len(&text), NULL, NULL) == 0 &&
              addr_render(&again, &text2) == 0, "case %zu again", i);
        describe(&again, boxes2, sizeof(boxes2));
        CHECK(strcmp(boxes, boxes2) == 0, "case %zu: %s: read back as [%s]", i, in, boxes2);
        CHECK(buf_len(&text) == buf_len(&text2) && memcmp(buf_head(&text), buf_head(&text2), buf_len(&text)) == 0,
              "case %zu: %s: written back as [%.*s]", i, in, (int)buf_len(&text2), buf_head(&text2));
    }
    buf_free(&text);
    buf_free(&text2);
    addr_list_free(&l);
    addr_list_free(&again);
}

/* A NUL stays a character; a list past the cap is an error, not a crash. */
static void test_bounds(void)
{
    struct addr_list l;
    struct address a;
    size_t i = 0;
    addr_list_init(&l, 1 << 16);
    CHECK(addr_parse(&l, "N\0x <a@b>", 9, NULL, NULL) == 0, "nul");
    CHECK(addr_next(&l, &i, &a) && strcmp(a.name, "N\xEF\xBF\xBDx") == 0, "nul name %s", a.name);
    addr_list_free(&l);

    size_t n = 200000;
    char *many = malloc(n);
    for (size_t k = 0; k < n; k += 2)
        memcpy(many + k, "a,", 2);
    addr_list_init(&l, 1 << 16);
    CHECK(addr_parse(&l, many, n, NULL, NULL) < 0, "over the cap");
    addr_list_free(&l);
    addr_list_init(&l, 64 * n);
    i = 0;
    size_t count = 0;
    CHECK(addr_parse(&l, many, n, NULL, NULL) == 0, "under the cap");
    while (addr_next(&l, &i, &a))
        count++;
    CHECK(count == n / 2, "%zu mailboxes", count);
    addr_list_free(&l);
    free(many);
}

/* Through the MIME parser: encoded words are decoded in names, never in
 * addresses, and a decoded name cannot pose as another mailbox. */
static void test_in_headers(void)
{
    static const struct { const char *header, *value; } headers[] = {
        { "From: =?utf-8?q?J=C3=B6hn?= <a@b.c>", "J\xC3\xB6hn <a@b.c>" },
        { "From: \"=?utf-8?q?J=C3=B6hn?=\" <a@b.c>", "J\xC3\xB6hn <a@b.c>" },
        { "From: =?iso-8859-1?Q?J=FCrgen?= =?iso-8859-1?Q?_Schm=FCrgen?= <j@x>",
          "J\xC3\xBCrgen Schm\xC3\xBCrgen <j@x>" },
        { "From: =?utf-8?q?=22Boss=22_=3Cboss=40corp=3E=2C?= <evil@x>",
          "\"\\\"Boss\\\" <boss@corp>,\" <evil@x>" },
        { "From: =?utf-8?q?=40attacker.com?=@microsoft.com", "=?utf-8?q?=40attacker.com?=@microsoft.com" },
        { "To: =?utf-8?B?IlJ5ZGVsIiA8UnlkZWxrYWxvdEAxN2d1YWd1YS5jb20+?=, andris@tr.ee",
          "=?utf-8?B?IlJ5ZGVsIiA8UnlkZWxrYWxvdEAxN2d1YWd1YS5jb20+?=, andris@tr.ee" },
        { "From: =?utf-8?q?a=0D=0Ab?= <x@y>", "\"a  b\" <x@y>" },   /* one line, blanks kept */
        { "Cc: x@y (=?utf-8?q?K=C3=A4mera?=)", "K\xC3\xA4mera <x@y>" },
        { "Subject: =?utf-8?q?a@b=2C_c?= <x>", "a@b, c <x>" },      /* not an address header */
    };
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        char msg[512];
        int n = snprintf(msg, sizeof(msg), "%s\r\n\r\nbody\r\n", headers[i].header);
        struct mime *m;
        CHECK(mime_parse(msg, (size_t)n, NULL, &m) == 0, "parse %zu", i);
        const struct mime_header *h = m->root->headers;
        CHECK(strcmp(h->value, headers[i].value) == 0, "header %zu: %s", i, h->value);
        mime_free(&m);
    }

    /* the mailboxes of the message's first From, not of a later one */
    const char *msg = "From: A <a@x>, b@y\r\nFrom: c@z\r\nTo: G: d@w;\r\n\r\n";
    struct mime *m;
    CHECK(mime_parse(msg, strlen(msg), NULL, &m) == 0, "parse");
    const struct mime_header *from = m->root->headers, *from2 = from->next, *to = from2->next;
    CHECK(from->naddresses == 2 && strcmp(from->addresses[0].name, "A") == 0 &&
          strcmp(from->addresses[1].address, "b@y") == 0 && from->addresses[1].group == NULL, "from");
    CHECK(from2->addresses == NULL && from2->naddresses == 0, "second from");
    CHECK(to->naddresses == 1 && strcmp(to->addresses[0].group, "G") == 0, "to");
    mime_free(&m);
}

int main(void)
{
    test_cases();
    test_bounds();
    test_in_headers();
    return test_summary("test_addr");
}
