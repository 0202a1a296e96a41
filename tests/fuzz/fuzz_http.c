/*
 * Fuzz target: the HTTP request path (daemon/http.c) as a client reaches
 * it. One in-process daemon core (tests/core: a ref-backend engine, one job
 * with a few aggregated steps, so /metrics and /api/v1 have something to
 * print) serves
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

#include "core/core.h"
#include "http.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct test_core core;
static struct sockaddr_in srv;

static void init(void)
{
    grist__log_set_level(GRIST_LOG_ERROR);
    grist__config_defaults(&core.cfg);
    if (test_core_start(&core) < 0)
        abort();
    char err[256];
    /* a job id and group names that need escaping in JSON and labels */
    struct grist_job *j = test_core_attach(&core, "fuzz \"job\"/1", 1, 2, 64, err, sizeof(err));
    if (!j)
        abort();
    for (uint64_t step = 1; step <= 30; step++)
        test_core_submit(&core, j, 0, step, 0.01f * (float)(step % 13));
    if (grist__http_start(&core.d, "127.0.0.1:0", &core.d.http) < 0)
        abort();
    const char *b = grist__http_bound(core.d.http);
    uv_ip4_addr("127.0.0.1", atoi(strrchr(b, ':') + 1), &srv);
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
    uv_tcp_init(&core.loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&srv, connect_cb);
    while (!c->done)
        uv_run(&core.loop, UV_RUN_ONCE);
    /* let the server side finish closing its connection */
    for (int i = 0; i < 8; i++)
        uv_run(&core.loop, UV_RUN_NOWAIT);
    free(copy);
    free(c);
    return 0;
}
