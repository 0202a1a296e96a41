/*
 * Fuzz target: the HTTP request path (daemon/http.c) as a client reaches
 * it. One in-process daemon core (a ref-backend engine, one job with a few
 * aggregated steps, so /metrics and /api/v1 have something to print) serves
 * --http on 127.0.0.1:0; each input is written as is over a real loopback
 * TCP connection, the write side is shut, and the target reads until the
 * server closes. Any request bytes (pipelined, partial, oversize, invalid)
 * must end in answers or a close, never a crash, a hang or a leak.
 *
 *   build/tests/fuzz-http-replay tests/fuzz/corpus-http      (CI: the corpus;
 *                                  FUZZ_HTTP_VERBOSE=1 prints each status line)
 *   build-fuzz/tests/fuzz-http -max_total_time=3600 CORPUS    (libFuzzer)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "engine.h"
#include "jobs.h"
#include "log.h"
#include "wire.h"
#include "grist/backend.h"
#include "grist/select.h"
#include "grist/stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct grist_config cfg;
static struct grist_daemon dd;
static uv_loop_t loop;
static struct sockaddr_in srv;

static void add_job(void)
{
    enum { G = 2, M = 64 };
    struct grist_hello h = {.world = 1, .m = M, .ngroups = G};
    snprintf(h.job_id, sizeof(h.job_id), "fuzz \"job\"/1");
    struct grist_group_spec gs[G];
    memset(gs, 0, sizeof(gs));
    for (int g = 0; g < G; g++) {
        snprintf(gs[g].name, sizeof(gs[g].name), "g<%d>", g);
        gs[g].n = 1000;
        gs[g].lr = 0.1;
        gs[g].beta0 = 0.9;
    }
    h.groups = gs;
    struct grist_job *j = NULL;
    char err[256];
    if (grist__job_attach(&dd, &h, NULL, &j, err, sizeof(err)) != GRPC_STATUS_OK)
        abort();
    for (uint64_t step = 1; step <= 30; step++) {
        struct grist_summary s = {.step = step, .ngroups = G, .m = M};
        s.sq_norm = calloc(G, sizeof(double));
        s.batch = malloc(G * sizeof(uint32_t));
        s.lrb = malloc(2 * G * sizeof(double));
        s.sketch = malloc(G * M * sizeof(float));
        for (int g = 0; g < G; g++)
            s.batch[g] = 8, s.lrb[g] = 0.0, s.lrb[G + g] = -1.0;
        for (int i = 0; i < G * M; i++)
            s.sketch[i] = (float)((i * 7 + (int)step) % 13) * 0.01f;
        grist__job_submit(&dd, j, 0, &s, err, sizeof(err));
    }
}

static void init(void)
{
    grist__log_set_level(GRIST_LOG_ERROR);
    grist__config_defaults(&cfg);
    dd.cfg = &cfg;
    grist_policy_default(&dd.defaults.sel);
    dd.defaults.solve_every = 10;
    dd.defaults.families_every = 1000;
    dd.defaults.gamma = 0.95;
    dd.defaults.ncand = grist_candidates_default(0.0, 0.9999, dd.defaults.cand);
    uv_loop_init(&loop);
    dd.loop = &loop;
    struct grist_backend *be;
    if (grist_backend_open("ref", &be) < 0)
        abort();
    dd.nengines = 1;
    if (grist__engine_start(&dd.engines[0], &loop, be, 4096, 1.0, grist__job_on_result, &dd) < 0)
        abort();
    add_job();
    if (grist__http_start(&dd, "127.0.0.1:0", &dd.http) < 0)
        abort();
    const char *b = grist__http_bound(dd.http);
    const char *colon = strrchr(b, ':');
    uv_ip4_addr("127.0.0.1", atoi(colon + 1), &srv);
}

struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    uv_buf_t out;
    char in[65536];
    int done;
};

static void closed(uv_handle_t *h)
{
    ((struct client *)h->data)->done = 1;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct client *c = h->data;
    *b = uv_buf_init(c->in, sizeof(c->in));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    if (n > 0 && getenv("FUZZ_HTTP_VERBOSE")) /* the status lines, to see what was reached */
        for (ssize_t i = 0; i + 8 < n; i++)
            if (memcmp(b->base + i, "HTTP/1.", 7) == 0)
                fprintf(stderr, "%.15s\n", b->base + i);
    if (n < 0) /* EOF: the server closed, or a reset */
        uv_close((uv_handle_t *)s, closed);
}

static void shut_cb(uv_shutdown_t *r, int status)
{
    (void)r, (void)status;
}

static void write_cb(uv_write_t *w, int status)
{
    struct client *c = w->data;
    if (status < 0) {
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, closed);
        return;
    }
    uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, shut_cb);
}

static void connect_cb(uv_connect_t *r, int status)
{
    struct client *c = r->data;
    if (status < 0) {
        uv_close((uv_handle_t *)&c->tcp, closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    c->wreq.data = c;
    if (c->out.len == 0)
        uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, shut_cb);
    else
        uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &c->out, 1, write_cb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size > 256 * 1024) /* past the server's 64 KiB input limit: nothing new */
        return 0;
    struct client *c = calloc(1, sizeof(*c));
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    c->out = uv_buf_init(copy, (unsigned)size);
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&srv, connect_cb);
    while (!c->done)
        uv_run(&loop, UV_RUN_ONCE);
    /* let the server side finish closing its connection */
    for (int i = 0; i < 8; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    free(copy);
    free(c);
    return 0;
}
