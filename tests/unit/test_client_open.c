/*
 * libgrist's grist_client_open: every failure it can be made to take returns
 * its error code and leaves nothing behind (run it under memcheck or ASan to
 * see the second half: `meson test -C build --setup=valgrind client-open`).
 * No daemon is needed: a channel connects lazily.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grist/client.h"
#include "grist/error.h"
#include "../check_main.h"

static int open_with(const char *addr, const struct grist_client_options *o)
{
    struct grist_client *c = NULL;
    const int r = grist_client_open(addr, o, &c);
    if (r == 0) {
        ck_assert_ptr_nonnull(c);
        grist_client_close(c);
    } else {
        ck_assert_ptr_null(c);
    }
    return r;
}

START_TEST(test_opens_and_closes)
{
    ck_assert_int_eq(open_with("127.0.0.1:1", NULL), 0);
    struct grist_client_options o;
    grist_client_options_default(&o);
    o.token = "a-token";
    ck_assert_int_eq(open_with("127.0.0.1:1,127.0.0.1:2", &o), 0);
}
END_TEST

START_TEST(test_bad_arguments)
{
    struct grist_client *c = NULL;
    ck_assert_int_eq(grist_client_open(NULL, NULL, &c), -EINVAL);
    ck_assert_int_eq(grist_client_open("127.0.0.1:1", NULL, NULL), -EINVAL);
    ck_assert_int_eq(open_with(",", NULL), -EINVAL); /* no address in the list */
    ck_assert_int_eq(open_with("", NULL), -EINVAL);
}
END_TEST

START_TEST(test_bad_tokens)
{
    struct grist_client_options o;
    grist_client_options_default(&o);
    o.token = "";
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), -EINVAL);
    o.token = "two words";
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), -EINVAL);
    o.token = "tab\there";
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), -EINVAL);
}
END_TEST

START_TEST(test_bad_tls)
{
    struct grist_client_options o;
    grist_client_options_default(&o);
    o.token = "t"; /* a token's metadata is made before the credentials fail */
    o.tls_cert_file = "/nonexistent/cert.pem"; /* a certificate without a CA */
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), -EINVAL);
    grist_client_options_default(&o);
    o.tls_ca_file = "/nonexistent/ca.pem";
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), -ENOENT);
    o.tls_cert_file = "/nonexistent/cert.pem"; /* a certificate without its key */
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), -EINVAL);
}
END_TEST

/* The two threads failing to start (GRIST_CLIENT_FAULT): -EAGAIN, and the
 * first thread is stopped and joined when the second fails. */
START_TEST(test_thread_failures_unwind)
{
    struct grist_client_options o;
    grist_client_options_default(&o);
    o.token = "t";
    setenv("GRIST_CLIENT_FAULT", "sender", 1);
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), -EAGAIN);
    setenv("GRIST_CLIENT_FAULT", "thread", 1);
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), -EAGAIN);
    unsetenv("GRIST_CLIENT_FAULT");
    ck_assert_int_eq(open_with("127.0.0.1:1", &o), 0); /* and then it works */
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client-open");
    TCase *tc = tcase_create("open");
    tcase_add_test(tc, test_opens_and_closes);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_bad_tokens);
    tcase_add_test(tc, test_bad_tls);
    tcase_add_test(tc, test_thread_failures_unwind);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
