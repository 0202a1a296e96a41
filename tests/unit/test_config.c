/* Unit tests of gristd's configuration table: defaults, flags, the config
 * file, precedence, and refusal of bad values. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "../check_main.h"

START_TEST(test_defaults)
{
    struct grist_config c;
    grist__config_defaults(&c);
    ck_assert_int_eq(c.nlisten, 1);
    ck_assert_str_eq(c.listen[0], "127.0.0.1:7788");
    ck_assert_int_eq(c.ready_fd, -1);
    ck_assert_str_eq(c.backend, "auto");
    ck_assert_int_eq(c.max_message_bytes, 64 << 20);
}
END_TEST

START_TEST(test_flags)
{
    struct grist_config c;
    grist__config_defaults(&c);
    char *argv[] = {"gristd",
                    "--listen",
                    "unix:/tmp/x.sock",
                    "--listen=127.0.0.1:0",
                    "--ready-fd=5",
                    "--backend",
                    "ref",
                    NULL};
    ck_assert_int_eq(grist__config_parse(&c, 7, argv), 0);
    ck_assert_int_eq(c.nlisten, 2);
    ck_assert_str_eq(c.listen[0], "unix:/tmp/x.sock");
    ck_assert_str_eq(c.listen[1], "127.0.0.1:0");
    ck_assert_int_eq(c.ready_fd, 5);
    ck_assert_str_eq(c.backend, "ref");
}
END_TEST

START_TEST(test_file_and_precedence)
{
    char path[] = "/tmp/grist-config-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *text = "# comment\nbackend = ref\n  max-message-bytes=4096  # trailing\n"
                       "listen = 127.0.0.1:0\n";
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct grist_config c;
    grist__config_defaults(&c);
    char *argv[] = {"gristd", "--config", path, "--backend", "cpu", NULL};
    ck_assert_int_eq(grist__config_parse(&c, 5, argv), 0);
    ck_assert_str_eq(c.backend, "cpu"); /* flag wins */
    ck_assert_int_eq(c.max_message_bytes, 4096);
    ck_assert_int_eq(c.nlisten, 1);
    ck_assert_str_eq(c.listen[0], "127.0.0.1:0");
    unlink(path);
}
END_TEST

START_TEST(test_bad_values)
{
    struct grist_config c;
    char *a1[] = {"gristd", "--max-message-bytes", "12x", NULL};
    char *a2[] = {"gristd", "--nope", "1", NULL};
    char *a3[] = {"gristd", "--ready-fd", NULL};
    char *a4[] = {"gristd", "--max-message-bytes", "10", NULL};
    char *a5[] = {"gristd", "--config", "/nonexistent/grist.conf", NULL};
    grist__config_defaults(&c);
    ck_assert_int_lt(grist__config_parse(&c, 3, a1), 0);
    grist__config_defaults(&c);
    ck_assert_int_lt(grist__config_parse(&c, 3, a2), 0);
    grist__config_defaults(&c);
    ck_assert_int_lt(grist__config_parse(&c, 2, a3), 0);
    grist__config_defaults(&c);
    ck_assert_int_lt(grist__config_parse(&c, 3, a4), 0); /* below the bound */
    grist__config_defaults(&c);
    ck_assert_int_lt(grist__config_parse(&c, 3, a5), 0);
}
END_TEST

START_TEST(test_help_lists_every_option)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    grist__config_help(f);
    fclose(f);
    const char *names[] = {"--listen",    "--ready-fd",          "--backend",
                           "--log-level", "--max-message-bytes", "--config"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        ck_assert_ptr_nonnull(strstr(buf, names[i]));
    ck_assert_ptr_nonnull(strstr(buf, "default: 127.0.0.1:7788"));
    free(buf);
}
END_TEST

/* The example file shipped in deploy/ parses and holds the defaults. */
START_TEST(test_shipped_example)
{
    const char *path = getenv("GRIST_CONF");
    ck_assert_ptr_nonnull(path);
    struct grist_config c, d;
    grist__config_defaults(&c);
    grist__config_defaults(&d);
    char *argv[] = {"gristd", "--config", (char *)path, NULL};
    ck_assert_int_eq(grist__config_parse(&c, 3, argv), 0);
    ck_assert_str_eq(c.listen[0], d.listen[0]);
    ck_assert_int_eq(c.compute_threads, d.compute_threads);
    ck_assert_int_eq(c.solve_every, d.solve_every);
    ck_assert_str_eq(c.noise_correction, d.noise_correction);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_flags);
    tcase_add_test(tc, test_file_and_precedence);
    tcase_add_test(tc, test_bad_values);
    tcase_add_test(tc, test_help_lists_every_option);
    tcase_add_test(tc, test_shipped_example);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
