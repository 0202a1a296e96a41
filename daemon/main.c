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
#include <sys/resource.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <uv.h>

#include "daemon.h"
#include "grist/kernels.h"
#include "grist_config.h"
#include "log.h"

static struct grist_daemon g_d;
static uv_signal_t g_sigterm, g_sigint;
static struct grist_config g_cfg;

static void on_engine_stopped(void *ud)
{
    struct grist_daemon *d = ud;
    if (--d->engines_running > 0)
        return;
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
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
    /* no summary comes in any more: the final snapshot sees everything */
    grist__snapshot_final(grist__daemon_of(net), stop_engines);
}

static void begin_shutdown(struct grist_daemon *d)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    grist__probe_stop(d->probe);
    d->probe = NULL;
    grist__http_stop(d->http);
    d->http = NULL;
    grist__streams_finish_all(d);
    grist__watch_finish_all(d, NULL);
    grist__net_shutdown(&d->net, 2.0, on_net_stopped);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct grist_daemon *d = s->data;
    if (d->stopping)
        return;
    GRIST_INFO("signal %d: shutting down (%u streams, %u jobs)", signum, d->nstreams, d->njobs);
    begin_shutdown(d);
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

    static uv_loop_t loop;
    uv_loop_init(&loop);
    d->loop = &loop;
    d->nengines = (uint32_t)g_cfg.compute_threads;
    for (uint32_t i = 0; i < d->nengines; i++) {
        struct grist_backend *be;
        r = grist_backend_open(g_cfg.backend, &be);
        if (r < 0) {
            GRIST_ERR("backend '%s': %s", g_cfg.backend, grist_strerror(r));
            return 1;
        }
        grist_backend_set_threads(be, (int)g_cfg.blas_threads);
        if (i == 0)
            GRIST_INFO("gristd %s: kernels backend %s, %u compute thread%s", GRIST_VERSION,
                       grist_backend_name(be), d->nengines, d->nengines > 1 ? "s" : "");
        if (grist__engine_start(&d->engines[i], &loop, be, (uint32_t)g_cfg.compute_queue,
                                g_cfg.compute_lag, grist__job_on_result, d) < 0) {
            grist_backend_close(be);
            return 1;
        }
        d->engines_running++;
    }
    if (grist__snapshot_start(d) < 0)
        return 1;
    grpc_init();
    r = grist__net_start(&d->net, &loop, &g_cfg);
    if (r < 0) {
        for (uint32_t i = 0; i < d->nengines; i++)
            grist__engine_stop(d->engines[i], NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        grpc_shutdown();
        return 1;
    }
    uv_signal_init(&loop, &g_sigterm);
    uv_signal_init(&loop, &g_sigint);
    g_sigterm.data = g_sigint.data = d;
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_signal, SIGINT);
    uv_timer_init(&loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, 50, 50);
    if (g_cfg.http[0] && grist__http_start(d, g_cfg.http, &d->http) < 0) {
        fprintf(stderr, "gristd: --http %s: cannot serve (HOST:PORT, e.g. 127.0.0.1:9788)\n",
                g_cfg.http);
        on_signal(&g_sigterm, SIGTERM);
        uv_run(&loop, UV_RUN_DEFAULT);
        grist__jobs_free_all(d);
        grist__net_destroy(&d->net);
        uv_loop_close(&loop);
        grpc_shutdown();
        return 1;
    }
    if (grist__probe_start(d, g_cfg.listener_probe, on_listener_failed, &d->probe) < 0)
        GRIST_WARN("listener probe: out of memory; listeners are not probed");
    write_ready(g_cfg.ready_fd, &d->net, d->http);

    uv_run(&loop, UV_RUN_DEFAULT);

    grist__jobs_free_all(d);
    grist__net_destroy(&d->net);
    uv_loop_close(&loop);
    grpc_shutdown();
    return d->exit_code;
}
