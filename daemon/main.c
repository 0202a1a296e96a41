/*
 * DESIGN: gristd's entry point. Order of start: parse config -> open the
 * kernels backend (an explicit backend that is unavailable is fatal) ->
 * grpc_init -> bind listeners -> write the ready fd -> run the loop.
 * SIGTERM/SIGINT start the ordered shutdown of net.c; when it completes the
 * loop's remaining handles are closed, the loop returns and gristd exits 0.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <uv.h>

#include "config.h"
#include "grist/kernels.h"
#include "grist_config.h"
#include "log.h"
#include "net.h"

struct daemon {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    struct grist_net net;
    struct grist_backend *backend;
};

static void on_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_net_stopped(struct grist_net *net)
{
    struct daemon *d = (struct daemon *)((char *)net - offsetof(struct daemon, net));
    uv_close((uv_handle_t *)&d->sigterm, on_closed);
    uv_close((uv_handle_t *)&d->sigint, on_closed);
    GRIST_INFO("shutdown complete");
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;
    GRIST_INFO("signal %d: shutting down (%d live calls cancelled)", signum, d->net.live_calls);
    grist__net_shutdown(&d->net, on_net_stopped);
}

static int write_ready(int fd, const struct grist_net *net)
{
    if (fd < 0)
        return 0;
    char buf[GRIST_MAX_LISTENERS * 320];
    size_t len = 0;
    for (int i = 0; i < net->nbound; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "grpc %s\n", net->bound[i]);
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

int main(int argc, char **argv)
{
    struct grist_config cfg;
    grist__config_defaults(&cfg);
    int r = grist__config_parse(&cfg, argc, argv);
    if (r == 1)
        return 0;
    if (r < 0)
        return 2;
    enum grist_log_level lvl;
    if (grist__log_parse_level(cfg.log_level, &lvl) < 0) {
        fprintf(stderr, "gristd: bad --log-level '%s' (error, warn, info, debug)\n", cfg.log_level);
        return 2;
    }
    grist__log_set_level(lvl);

    static struct daemon d;
    r = grist_backend_open(cfg.backend, &d.backend);
    if (r < 0) {
        GRIST_ERR("backend '%s': %s", cfg.backend, grist_strerror(r));
        return 1;
    }
    GRIST_INFO("gristd %s: kernels backend %s", GRIST_VERSION, grist_backend_name(d.backend));

    grpc_init();
    uv_loop_init(&d.loop);
    r = grist__net_start(&d.net, &d.loop, &cfg);
    if (r < 0) {
        grist_backend_close(d.backend);
        grpc_shutdown();
        return 1;
    }
    uv_signal_init(&d.loop, &d.sigterm);
    uv_signal_init(&d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    write_ready(cfg.ready_fd, &d.net);

    uv_run(&d.loop, UV_RUN_DEFAULT);

    grist__net_destroy(&d.net);
    uv_loop_close(&d.loop);
    grist_backend_close(d.backend);
    grpc_shutdown();
    return 0;
}
