/*
 * DESIGN: gristd's entry point. Start order: parse config -> open the
 * kernels backend (an explicit backend that is unavailable is fatal) ->
 * start the compute threads -> restore the state (--state-dir) -> grpc_init
 * -> bind listeners -> write the ready fd -> run the loop.
 *
 * Shutdown order on SIGTERM/SIGINT (tests/integration asserts what clients
 * see): (1) every live Attach stream is finished with UNAVAILABLE; (2) the
 * server stops accepting and gets a grace period for those statuses to go
 * out, then cancels what is left; (3) the completion queue drains and the
 * pump thread is joined; (4) with --state-dir, the open steps are
 * aggregated and every job that changed is written (snapshot.c); (5) the
 * compute threads finish their
 * queues and are joined; (6) timers and signal handles close, the loop
 * returns, exit 0. The state is restored before the listeners bind, so a
 * daemon that reports ready serves its restored jobs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/resource.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <uv.h>

#include "grist_config.h"
#if GRIST_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "attach.h"
#include "daemon.h"
#include "fanout.h"
#include "grist/kernels.h"
#include "grist/v1/grist.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "health.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "net.h"
#include "probe.h"
#include "publish.h"
#include "query.h"
#include "rpc.h"
#include "snapshot.h"
#include "tls.h"

/* Every method gristd serves; net.c dispatches from this table. */
static const struct grist_method g_methods[] = {
    {"/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor,
     grist__health_check, NULL, 1},
    {"/grist.v1.Grist/Attach", NULL, NULL, grist__attach_stream, 0},
    {"/grist.v1.Grist/ListJobs", &grist__v1__list_jobs_request__descriptor, grist__query_list_jobs,
     NULL, 0},
    {"/grist.v1.Grist/GetJob", &grist__v1__get_job_request__descriptor, grist__query_get_job, NULL,
     0},
    {"/grist.v1.Grist/GetHistory", &grist__v1__get_history_request__descriptor,
     grist__query_get_history, NULL, 0},
    {"/grist.v1.Grist/WatchJob", NULL, NULL, grist__query_watch_job, 0},
};

static struct grist_daemon g_d;
static struct grist_net g_net;
static uv_signal_t g_sigterm, g_sigint, g_sighup;
static uv_timer_t g_watchdog; /* systemd WatchdogSec=: pinged from the loop thread */
static int g_watchdog_on;
static struct grist_config g_cfg;

static void on_engine_stopped(void *ud)
{
    struct grist_daemon *d = ud;
    if (--d->engines_running > 0)
        return;
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
    uv_close((uv_handle_t *)&g_sighup, NULL);
    if (g_watchdog_on)
        uv_close((uv_handle_t *)&g_watchdog, NULL);
    uv_close((uv_handle_t *)&d->tick, NULL);
    grist__snapshot_stop(d);
    GRIST_INFO("shutdown complete");
}

static void stop_engines(struct grist_daemon *d)
{
    for (uint32_t i = 0; i < d->nengines; i++)
        grist__engine_stop(d->engines[i], on_engine_stopped);
}

static void on_net_stopped(struct grist_net *net)
{
    (void)net;
    /* no summary comes in any more: the final snapshot sees everything */
    grist__snapshot_final(&g_d, stop_engines);
}

/* A compute thread's answer: a snapshot goes to snapshot.c, an evaluation
 * to the registry. */
static void on_engine_result(void *ud, struct grist_engine_result *r)
{
    if (r->snapshot)
        grist__snapshot_result(ud, r); /* takes r */
    else
        grist__job_on_result(ud, r);
}

/* A job expires: its subscribers hear it, its file goes. */
static void on_job_gone(void *ud, struct grist_job *j)
{
    grist__publish_gone(NULL, j);
    grist__snapshot_forget(ud, j);
}

/* systemd (Type=notify): READY, STOPPING, STATUS and the watchdog. No-ops
 * without NOTIFY_SOCKET or without libsystemd at build time. */
static void notify(const char *state)
{
#if GRIST_HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

/* The watchdog is pinged by a loop timer: a loop that stops turning (a
 * deadlock, a handler that never returns) stops the pings and systemd
 * restarts gristd. */
static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    notify("WATCHDOG=1");
}

static void start_watchdog(uv_loop_t *loop)
{
#if GRIST_HAVE_SYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        uv_timer_init(loop, &g_watchdog);
        const uint64_t ms = usec / 2000 ? usec / 2000 : 1; /* twice per period */
        uv_timer_start(&g_watchdog, on_watchdog, ms, ms);
        g_watchdog_on = 1;
        GRIST_INFO("systemd watchdog: pinged every %llu ms", (unsigned long long)ms);
    }
#else
    (void)loop;
#endif
}

static void begin_shutdown(struct grist_daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    notify("STOPPING=1");
    grist__probe_stop(d->probe);
    d->probe = NULL;
    grist__http_stop(d->http);
    d->http = NULL;
    grist__streams_finish_all(d);
    grist__watch_finish_all(d);
    grist__net_shutdown(d->net, 2.0, on_net_stopped);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct grist_daemon *d = s->data;
    if (d->stopping)
        return;
    GRIST_INFO("signal %d: shutting down (%u streams, %u jobs)", signum, d->nstreams, d->njobs);
    begin_shutdown(d);
}

/* SIGHUP: the tokens file and the TLS files are read again. A set that
 * does not load is logged and the one in force stays; streams and watches
 * whose token is gone or no longer covers their job are ended. */
static void on_sighup(uv_signal_t *s, int signum)
{
    (void)signum;
    struct grist_daemon *d = s->data;
    char err[512];
    notify("RELOADING=1");
    if (d->cfg->tokens[0]) {
        struct grist_auth *a = NULL;
        if (grist__auth_load(d->cfg->tokens, &a, err, sizeof(err)) < 0) {
            GRIST_ERR("SIGHUP: %s; the tokens in force stay", err);
            d->cnt.reload_errors++;
        } else {
            grist__auth_free(d->auth);
            d->auth = a;
            d->cnt.reloads++;
            GRIST_INFO("SIGHUP: %zu tokens loaded from %s", grist__auth_count(a), d->cfg->tokens);
            grist__streams_recheck(d);
            grist__watch_recheck(d);
        }
    }
    if (d->tls) {
        if (grist__tls_reload(d->tls, err, sizeof(err)) < 0) {
            GRIST_ERR("SIGHUP: TLS: %s; the certificate in force stays", err);
            d->cnt.reload_errors++;
        } else {
            d->cnt.reloads++;
            GRIST_INFO("SIGHUP: TLS certificate reloaded (set %llu); open connections keep theirs",
                       (unsigned long long)grist__tls_generation(d->tls));
        }
    }
    notify("READY=1");
}

/* Whether addr (HOST:PORT) can only be reached from this machine: a unix
 * socket path (its mode guards it), a numeric loopback address or
 * "localhost". An abstract socket has no permissions, so it does not count. */
static int loopback(const char *addr)
{
    if (strncmp(addr, "unix:", 5) == 0)
        return 1;
    if (strncmp(addr, "unix-abstract:", 14) == 0)
        return 0;
    char host[256];
    const char *colon = strrchr(addr, ':');
    size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
    if (n >= sizeof(host))
        return 0;
    memcpy(host, addr, n);
    host[n] = '\0';
    char *h = host;
    if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
        h[n - 1] = '\0';
        h++;
    }
    if (strcmp(h, "localhost") == 0)
        return 1;
    unsigned char a[16];
    if (inet_pton(AF_INET, h, a) == 1)
        return a[0] == 127;
    if (inet_pton(AF_INET6, h, a) == 1) {
        static const unsigned char one[16] = {[15] = 1};
        return memcmp(a, one, 16) == 0;
    }
    return 0; /* another host name: it may resolve to anything */
}

/* Plaintext beyond this machine only with --insecure, said loudly. */
static int check_exposure(const struct grist_config *c)
{
    const char *open = NULL;
    for (int i = 0; i < c->nlisten; i++)
        if (!loopback(c->listen[i]) && !c->tls_cert[0])
            open = c->listen[i];
    if (c->http[0] && !loopback(c->http) && !c->tls_cert[0])
        open = c->http;
    if (!open)
        return 0;
    if (!c->insecure) {
        fprintf(stderr,
                "gristd: %s is reachable from other machines and would be served without TLS; "
                "give --tls-cert and --tls-key (docs/SECURITY.md), or --insecure to accept it\n",
                open);
        return -EINVAL;
    }
    GRIST_WARN("INSECURE: %s is served without TLS to anyone who can reach it (--insecure)%s", open,
               c->tokens[0] ? "; tokens travel in the clear" : " and without tokens");
    return 0;
}

/* A listener stopped accepting (probe.c): stop in order, exit 1. */
static void on_listener_failed(struct grist_daemon *d)
{
    d->exit_code = 1;
    begin_shutdown(d);
}

static void on_tick(uv_timer_t *t)
{
    grist__jobs_tick(t->data);
    grist__attach_tick(t->data);
}

static int write_ready(int fd, const struct grist_net *net, const struct grist_http *http)
{
    if (fd < 0)
        return 0;
    char buf[(GRIST_MAX_LISTENERS + 1) * 320];
    size_t len = 0;
    for (int i = 0; i < net->nbound; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "grpc %s\n", net->bound[i]);
    if (http)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "http %s\n", grist__http_bound(http));
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            GRIST_ERR("ready fd %d: %s", fd, strerror(errno));
            close(fd);
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    close(fd);
    return 0;
}

/* Raise the soft limit on open files to the hard one: every connection
 * (gRPC and HTTP) is a descriptor, and at 1024 a burst of clients made
 * gRPC's accept fail with EMFILE. Logged, never fatal. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    const rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        GRIST_INFO("open files: soft limit raised from %llu to %llu", (unsigned long long)was,
                   (unsigned long long)rl.rlim_cur);
    else
        GRIST_WARN("open files: cannot raise the soft limit %llu: %s", (unsigned long long)was,
                   strerror(errno));
}

int main(int argc, char **argv)
{
    struct grist_daemon *d = &g_d;
    grist__config_defaults(&g_cfg);
    int r = grist__config_parse(&g_cfg, argc, argv);
    if (r == 1)
        return 0;
    if (r < 0)
        return 2;
    enum grist_log_level lvl;
    if (grist__log_parse_level(g_cfg.log_level, &lvl) < 0) {
        fprintf(stderr, "gristd: bad --log-level '%s' (error, warn, info, debug)\n",
                g_cfg.log_level);
        return 2;
    }
    grist__log_set_level(lvl);
    raise_nofile();
    if (grist__daemon_configure(d, &g_cfg) < 0)
        return 2;
    if (check_exposure(&g_cfg) < 0)
        return 2;
    char err[512];
    if (g_cfg.tokens[0]) {
        if (grist__auth_load(g_cfg.tokens, &d->auth, err, sizeof(err)) < 0) {
            fprintf(stderr, "gristd: --tokens: %s\n", err);
            return 2;
        }
        GRIST_INFO("%zu tokens loaded from %s: every call but health needs one",
                   grist__auth_count(d->auth), g_cfg.tokens);
    }
    if (grist__tls_open(&g_cfg, &d->tls, err, sizeof(err)) < 0) {
        fprintf(stderr, "gristd: TLS: %s\n", err);
        return 2;
    }

    static uv_loop_t loop;
    uv_loop_init(&loop);
    d->loop = &loop;
    d->net = &g_net;
    d->events =
        (struct grist_job_events){grist__publish_version, grist__publish_state, on_job_gone, d};
    int rc = 1, grpc_on = 0;
    d->nengines = (uint32_t)g_cfg.compute_threads;
    for (uint32_t i = 0; i < d->nengines; i++) {
        struct grist_backend *be;
        r = grist_backend_open(g_cfg.backend, &be);
        if (r < 0) {
            GRIST_ERR("backend '%s': %s", g_cfg.backend, grist_strerror(r));
            goto stop_started;
        }
        grist_backend_set_threads(be, (int)g_cfg.blas_threads);
        if (i == 0)
            GRIST_INFO("gristd %s: kernels backend %s, %u compute thread%s", GRIST_VERSION,
                       grist_backend_name(be), d->nengines, d->nengines > 1 ? "s" : "");
        if (grist__engine_start(&d->engines[i], &loop, be, (uint32_t)g_cfg.compute_queue,
                                g_cfg.compute_lag, on_engine_result, d) < 0) {
            grist_backend_close(be);
            goto stop_started;
        }
        grist__engine_set_families_interval(d->engines[i], g_cfg.families_interval,
                                            g_cfg.families_idle_interval);
        d->engines_running++;
    }
    if (grist__snapshot_start(d) < 0)
        goto stop_started;
    grpc_init();
    grpc_on = 1;
    const struct grist_net_service svc = {g_methods, sizeof(g_methods) / sizeof(g_methods[0]), d,
                                          &d->auth, &d->cnt.auth_unauthenticated};
    r = grist__net_start(d->net, &loop, &g_cfg, d->tls, &svc);
    if (r < 0)
        goto stop_started;
    uv_signal_init(&loop, &g_sigterm);
    uv_signal_init(&loop, &g_sigint);
    g_sigterm.data = g_sigint.data = d;
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_signal, SIGINT);
    uv_signal_init(&loop, &g_sighup);
    g_sighup.data = d;
    uv_signal_start(&g_sighup, on_sighup, SIGHUP);
    uv_timer_init(&loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, 50, 50);
    if (g_cfg.http[0] && grist__http_start(d, g_cfg.http, &d->http) < 0) {
        fprintf(stderr, "gristd: --http %s: cannot serve (HOST:PORT, e.g. 127.0.0.1:9788)\n",
                g_cfg.http);
        on_signal(&g_sigterm, SIGTERM); /* the ordered shutdown, as for SIGTERM */
        uv_run(&loop, UV_RUN_DEFAULT);
        goto teardown;
    }
    if (grist__probe_start(d, g_cfg.listener_probe, on_listener_failed, &d->probe) < 0)
        GRIST_WARN("listener probe: out of memory; listeners are not probed");
    write_ready(g_cfg.ready_fd, d->net, d->http);
    start_watchdog(&loop);
    {
        char st[400];
        snprintf(st, sizeof(st), "READY=1\nSTATUS=serving on %.200s%s%.100s, %u jobs restored",
                 d->net->bound[0], d->http ? ", http " : "",
                 d->http ? grist__http_bound(d->http) : "", d->njobs);
        notify(st);
    }

    uv_run(&loop, UV_RUN_DEFAULT);
    rc = d->exit_code;

    /* One teardown, in the reverse order of the start. */
teardown: /* the loop ran the ordered shutdown (net, final snapshot, engines) */
    grist__fanout_free(d);
    grist__jobs_free_all(d);
    grist__net_destroy(d->net);
    goto close_loop;
stop_started: /* start-up failed before serving: stop what had started */
    grist__snapshot_stop(d); /* its timer would keep the loop running */
    for (uint32_t i = 0; i < d->engines_running; i++)
        grist__engine_stop(d->engines[i], NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    grist__jobs_free_all(d);
close_loop:
    uv_loop_close(&loop);
    if (grpc_on)
        grpc_shutdown();
    grist__tls_free(d->tls);
    grist__auth_free(d->auth);
    return rc;
}
