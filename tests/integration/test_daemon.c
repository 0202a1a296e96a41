/*
 * gristd end to end: the real daemon on 127.0.0.1:0 and on a unix socket,
 * started with --ready-fd, checked with a gRPC core client.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grist/backend.h"
#include "harness.h"
#include "../check_main.h"

START_TEST(test_health_and_sigterm)
{
    struct gristd_proc p;
    const char *args[] = {"--listen", "127.0.0.1:0", "--log-level", "warn", NULL};
    ck_assert_int_eq(gristd_start(&p, args), 0);
    ck_assert_int_eq(p.naddr, 1);
    ck_assert_msg(strncmp(p.addr[0], "127.0.0.1:", 10) == 0 && strcmp(p.addr[0], "127.0.0.1:0"),
                  "bound address %s", p.addr[0]);
    grpc_init();
    ck_assert_int_eq(health_check(p.addr[0], ""), 1); /* SERVING */
    ck_assert_int_eq(health_check(p.addr[0], "grist.v1.Grist"), 1);
    ck_assert_int_eq(health_check(p.addr[0], "no.such.Service"), -GRPC_STATUS_NOT_FOUND);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

START_TEST(test_unknown_method_and_bad_request)
{
    struct gristd_proc p;
    const char *args[] = {"--listen", "127.0.0.1:0", "--log-level", "warn", NULL};
    ck_assert_int_eq(gristd_start(&p, args), 0);
    grpc_init();
    char details[256];
    ck_assert_int_eq(rpc_unary(p.addr[0], "/grist.v1.Nope/Nothing", "", 0, NULL, NULL, details,
                               sizeof(details), 10.0),
                     GRPC_STATUS_UNIMPLEMENTED);
    ck_assert_ptr_nonnull(strstr(details, "/grist.v1.Nope/Nothing"));
    /* bytes that are not a HealthCheckRequest */
    const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    ck_assert_int_eq(rpc_unary(p.addr[0], "/grpc.health.v1.Health/Check", junk, sizeof(junk), NULL,
                               NULL, details, sizeof(details), 10.0),
                     GRPC_STATUS_INVALID_ARGUMENT);
    /* the daemon still serves */
    ck_assert_int_eq(health_check(p.addr[0], ""), 1);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGINT), 0);
}
END_TEST

START_TEST(test_unix_and_two_listeners)
{
    char sock[64];
    snprintf(sock, sizeof(sock), "unix:/tmp/gristd-test-%d.sock", (int)getpid());
    unlink(sock + 5);
    struct gristd_proc p;
    /* both listeners probed every 0.2 s: answering ones never trip it */
    const char *args[] = {"--listen", sock,          "--listen", "127.0.0.1:0", "--listener-probe",
                          "0.2",      "--log-level", "warn",     NULL};
    ck_assert_int_eq(gristd_start(&p, args), 0);
    ck_assert_int_eq(p.naddr, 2);
    ck_assert_str_eq(p.addr[0], sock);
    usleep(1500 * 1000);
    int st;
    ck_assert_int_eq(waitpid(p.pid, &st, WNOHANG), 0);
    grpc_init();
    ck_assert_int_eq(health_check(p.addr[0], ""), 1);
    ck_assert_int_eq(health_check(p.addr[1], ""), 1);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    unlink(sock + 5);
}
END_TEST

static int run_capture(const char *const *argv, char *out, size_t size)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], out + len, size - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = '\0';
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

START_TEST(test_help_and_bad_flags)
{
    static char out[16384];
    const char *bin = getenv("GRISTD");
    const char *help[] = {bin, "--help", NULL};
    ck_assert_int_eq(run_capture(help, out, sizeof(out)), 0);
    const char *opts[] = {"--listen",    "--ready-fd",          "--backend",
                          "--log-level", "--max-message-bytes", "--config"};
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        ck_assert_msg(strstr(out, opts[i]) != NULL, "--help lacks %s", opts[i]);
    ck_assert_ptr_nonnull(strstr(out, "default: 127.0.0.1:7788"));
    const char *bad[] = {bin, "--no-such-flag", NULL};
    ck_assert_int_eq(run_capture(bad, out, sizeof(out)), 2);
    ck_assert_ptr_nonnull(strstr(out, "--no-such-flag"));
    /* an explicit backend that is not usable is an error, not a fallback */
    if (!grist_backend_usable("cuda")) {
        const char *cuda[] = {bin, "--backend", "cuda", "--listen", "127.0.0.1:0", NULL};
        ck_assert_int_eq(run_capture(cuda, out, sizeof(out)), 1);
        ck_assert_ptr_nonnull(strstr(out, "not available"));
    }
}
END_TEST

/* The compute thread, then the gRPC pump thread, cannot start (forced with
 * GRISTD_FAULT): gristd exits 1 with a clear line, and under memcheck
 * without an invalid access (the engine's failure path once freed the
 * engine while its families thread ran). */
START_TEST(test_engine_start_failure)
{
    static char out[16384];
    const char *bin = getenv("GRISTD");
    const char *supp = getenv("GRIST_VALGRIND_SUPP");
    char suppopt[600];
    snprintf(suppopt, sizeof(suppopt), "--suppressions=%s", supp ? supp : "/dev/null");
    const int memcheck = supp && system("valgrind --version >/dev/null 2>&1") == 0;
    setenv("GRISTD_FAULT", "engine-thread", 1);
    const char *plain[] = {bin, "--listen", "127.0.0.1:0", NULL};
    ck_assert_int_eq(run_capture(plain, out, sizeof(out)), 1);
    ck_assert_msg(strstr(out, "cannot start the compute thread"), "no clear error: %s", out);
    if (memcheck) {
        const char *vg[] = {"/usr/bin/valgrind", "--error-exitcode=99", "--quiet", suppopt, bin,
                            "--listen",          "127.0.0.1:0",         NULL};
        ck_assert_int_eq(run_capture(vg, out, sizeof(out)), 1);
        ck_assert_msg(!strstr(out, "Invalid"), "memcheck: %s", out);
    }
    /* the gRPC pump thread cannot start after the server started: the
     * start is undone (server shut down, queue drained) and gristd exits 1
     * instead of hanging with a server nobody polls */
    setenv("GRISTD_FAULT", "net-pump", 1);
    ck_assert_int_eq(run_capture(plain, out, sizeof(out)), 1);
    ck_assert_msg(strstr(out, "cannot start the gRPC pump thread"), "no clear error: %s", out);
    if (memcheck) {
        const char *vg[] = {"/usr/bin/valgrind", "--error-exitcode=99", "--quiet", suppopt, bin,
                            "--listen",          "127.0.0.1:0",         NULL};
        ck_assert_int_eq(run_capture(vg, out, sizeof(out)), 1);
        ck_assert_msg(!strstr(out, "Invalid"), "memcheck: %s", out);
    }
    unsetenv("GRISTD_FAULT");
}
END_TEST

/* gristd raises its soft open-files limit to the hard one (a burst of
 * connections at 1024 once left gRPC's accept failing with EMFILE). */
START_TEST(test_nofile_raised)
{
    struct rlimit rl, low;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max <= 256)
        return; /* nothing to raise */
    low = rl;
    low.rlim_cur = 256;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    struct gristd_proc p;
    const char *args[] = {"--listen", "127.0.0.1:0", "--log-level", "warn", NULL};
    const int started = gristd_start(&p, args);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_int_eq(started, 0);
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/limits", (int)p.pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    unsigned long long soft = 0, hard = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "Max open files %llu %llu", &soft, &hard) == 2)
            break;
    fclose(f);
    ck_assert_uint_eq(hard, (unsigned long long)rl.rlim_max);
    ck_assert_msg(soft == hard, "soft limit %llu not raised to %llu", soft, hard);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

START_TEST(test_port_in_use)
{
    struct gristd_proc a;
    const char *args[] = {"--listen", "127.0.0.1:0", "--log-level", "warn", NULL};
    ck_assert_int_eq(gristd_start(&a, args), 0);
    struct gristd_proc b;
    const char *args2[] = {"--listen", a.addr[0], "--log-level", "error", NULL};
    ck_assert_int_ne(gristd_start(&b, args2), 0); /* no ready line */
    ck_assert_int_eq(gristd_stop(&b, 0), 1); /* exits 1 by itself */
    /* the same with --state-dir: the snapshot timer had started and kept the
     * loop of the failed start running (gristd hung until killed) */
    char dir[] = "/tmp/grist-state-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *args3[] = {"--listen", a.addr[0], "--state-dir", dir, "--log-level", "error", NULL};
    ck_assert_int_ne(gristd_start(&b, args3), 0);
    ck_assert_int_eq(gristd_stop(&b, 0), 1);
    rmdir(dir);
    ck_assert_int_eq(gristd_stop(&a, SIGTERM), 0);
}
END_TEST

/* A listener that stops accepting makes gristd exit 1 (probe.c). gRPC
 * core stops accepting for good once accept4() fails with EMFILE; with 64
 * open files, 120 raw TCP connections get it there. The probe must not fire
 * while the listener answers: 2 s of 0.5 s probes leave health SERVING. */
START_TEST(test_listener_probe)
{
    if (getenv("GRISTD_WRAPPER"))
        return; /* the wrapper below would replace a memcheck wrapper */
    if (system("prlimit --version >/dev/null 2>&1") != 0)
        ck_abort_msg("prlimit missing (util-linux)");
    setenv("GRISTD_WRAPPER", "prlimit --nofile=64:64", 1);
    struct gristd_proc p;
    const char *args[] = {"--listen", "127.0.0.1:0", "--listener-probe", "0.5", "--log-level",
                          "warn",     NULL};
    const int started = gristd_start(&p, args);
    unsetenv("GRISTD_WRAPPER");
    ck_assert_int_eq(started, 0);
    usleep(2000 * 1000);
    int st;
    ck_assert_int_eq(waitpid(p.pid, &st, WNOHANG), 0); /* still running */
    grpc_init();
    ck_assert_int_eq(health_check(p.addr[0], ""), 1);
    grpc_shutdown();

    const char *colon = strrchr(p.addr[0], ':');
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fds[120];
    for (int i = 0; i < 120; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(fds[i], 0);
        ck_assert_int_eq(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
    }
    /* three missed probes (1.5 s), then an ordered shutdown and exit 1 */
    ck_assert_int_eq(gristd_stop(&p, 0), 1);
    for (int i = 0; i < 120; i++)
        close(fds[i]);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_health_and_sigterm);
    tcase_add_test(tc, test_unknown_method_and_bad_request);
    tcase_add_test(tc, test_unix_and_two_listeners);
    tcase_add_test(tc, test_help_and_bad_flags);
    tcase_add_test(tc, test_port_in_use);
    tcase_add_test(tc, test_engine_start_failure);
    tcase_add_test(tc, test_nofile_raised);
    tcase_add_test(tc, test_listener_probe);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
