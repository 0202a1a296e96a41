/*
 * DESIGN: gRPC core server + libuv bridge (see net.h).
 *
 * Threads: the pump thread only moves (tag, ok) pairs from the completion
 * queue into net->events and wakes the loop; everything else runs on the
 * loop thread. Ordering: events reach the loop in completion-queue order.
 *
 * Shutdown order (asserted by tests/integration): (1) stop accepting
 * (grpc_server_shutdown_and_notify) and, after a 2 s grace for the calls the
 * loop is ending with a status (on_grace), cancel the rest
 * (grpc_server_cancel_all_calls): clients see a status, never a hang; (2) when
 * the server's shutdown tag completes, shut the completion queue down; (3)
 * the pump thread sees GRPC_QUEUE_SHUTDOWN after the last event, posts it and
 * exits; (4) the loop joins it, closes the async handle and calls
 * on_stopped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "auth.h"
#include "log.h"
#include "net.h"
#include "rpc.h"
#include "tls.h"

#define ACCEPTORS 8

struct acceptor {
    struct grist_tag tag;
    struct grist_net *net;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
};

static void pump_main(void *arg)
{
    struct grist_net *net = arg;
    pthread_setname_np(pthread_self(), "gristd-pump");
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(net->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        uv_mutex_lock(&net->mu);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            net->cq_drained = 1;
            uv_mutex_unlock(&net->mu);
            uv_async_send(&net->async);
            return;
        }
        if (ev.type == GRPC_OP_COMPLETE) {
            if (net->ev_len == net->ev_cap) {
                size_t cap = net->ev_cap ? net->ev_cap * 2 : 256;
                struct grist_net_event *e = malloc(cap * sizeof(*e));
                if (!e)
                    abort(); /* cannot lose a tag: the call would leak forever */
                for (size_t i = 0; i < net->ev_len; i++)
                    e[i] = net->events[(net->ev_head + i) % net->ev_cap];
                free(net->events);
                net->events = e;
                net->ev_cap = cap;
                net->ev_head = 0;
            }
            net->events[(net->ev_head + net->ev_len) % net->ev_cap] =
                (struct grist_net_event){ev.tag, ev.success};
            net->ev_len++;
        }
        uv_mutex_unlock(&net->mu);
        uv_async_send(&net->async);
    }
}

static void on_async_closed(uv_handle_t *h)
{
    struct grist_net *net = h->data;
    if (net->on_stopped)
        net->on_stopped(net);
}

static void on_async(uv_async_t *a)
{
    struct grist_net *net = a->data;
    for (;;) {
        uv_mutex_lock(&net->mu);
        if (net->ev_len == 0) {
            int drained = net->cq_drained;
            uv_mutex_unlock(&net->mu);
            if (drained && net->pump_started) {
                uv_thread_join(&net->pump);
                net->pump_started = 0;
                uv_close((uv_handle_t *)&net->async, on_async_closed);
            }
            return;
        }
        struct grist_net_event ev = net->events[net->ev_head];
        net->ev_head = (net->ev_head + 1) % net->ev_cap;
        net->ev_len--;
        uv_mutex_unlock(&net->mu);
        ev.tag->cb(ev.tag, ev.ok);
    }
}

static void arm(struct acceptor *a);

static void on_accept(struct grist_tag *tag, int ok)
{
    struct acceptor *a = (struct acceptor *)tag;
    struct grist_net *net = a->net;
    if (!ok || net->shutting_down) {
        if (a->call) {
            grpc_call_unref(a->call);
        }
        grpc_call_details_destroy(&a->details);
        grpc_metadata_array_destroy(&a->md);
        free(a);
        return;
    }
    grpc_call *call = a->call;
    net->live_calls++;
    char *method = grpc_slice_to_c_string(a->details.method);
    const struct grist_method *m = NULL;
    for (size_t i = 0; i < net->svc.nmethods && !m; i++)
        if (strcmp(method, net->svc.methods[i].path) == 0)
            m = &net->svc.methods[i];
    struct grist_principal who = {.role = GRIST_ROLE_OPEN};
    if (!(m && m->open) && grist__net_principal(net, &a->md, &who) < 0) {
        /* the token is never logged, nor echoed */
        GRIST_DEBUG("%s: no valid bearer token", method);
        if (net->svc.unauthenticated)
            (*net->svc.unauthenticated)++;
        grist__rpc_reject(net, call, -EACCES,
                          "a valid 'authorization: Bearer TOKEN' is required (gristd --tokens)");
    } else if (!m) {
        GRIST_DEBUG("unknown method %s", method);
        char msg[400];
        snprintf(msg, sizeof(msg), "method %.300s is not served by gristd", method);
        grist__rpc_reject(net, call, -ENOSYS, msg);
    } else {
        grist__rpc_start(net, call, m, net->svc.ud, &who);
    }
    gpr_free(method);
    grpc_call_details_destroy(&a->details);
    grpc_metadata_array_destroy(&a->md);
    arm(a);
}

int grist__net_principal(struct grist_net *net, const grpc_metadata_array *md,
                         struct grist_principal *who)
{
    const char *val = NULL;
    size_t len = 0;
    for (size_t i = 0; i < md->count; i++) {
        const grpc_slice k = md->metadata[i].key;
        if (GRPC_SLICE_LENGTH(k) == 13 &&
            memcmp(GRPC_SLICE_START_PTR(k), "authorization", 13) == 0) {
            val = (const char *)GRPC_SLICE_START_PTR(md->metadata[i].value);
            len = GRPC_SLICE_LENGTH(md->metadata[i].value);
            break;
        }
    }
    return grist__auth_resolve(net->svc.auth ? *net->svc.auth : NULL, val, len, who);
}

static void arm(struct acceptor *a)
{
    a->call = NULL;
    grpc_call_details_init(&a->details);
    grpc_metadata_array_init(&a->md);
    a->tag.cb = on_accept;
    grpc_call_error e = grpc_server_request_call(a->net->server, &a->call, &a->details, &a->md,
                                                 a->net->cq, a->net->cq, &a->tag);
    if (e != GRPC_CALL_OK) {
        GRIST_ERR("grpc_server_request_call failed (%d)", (int)e);
        grpc_call_details_destroy(&a->details);
        grpc_metadata_array_destroy(&a->md);
        free(a);
    }
}

/* "host:0" + port 43121 -> "host:43121"; unix: paths as given. */
static void bound_name(const char *addr, int port, char *out, size_t size)
{
    if (strncmp(addr, "unix:", 5) == 0 || strncmp(addr, "unix-abstract:", 14) == 0) {
        snprintf(out, size, "%s", addr);
        return;
    }
    const char *colon = strrchr(addr, ':');
    if (!colon) {
        snprintf(out, size, "%s:%d", addr, port);
        return;
    }
    snprintf(out, size, "%.*s:%d", (int)(colon - addr), addr, port);
}

static int is_unix(const char *addr)
{
    return strncmp(addr, "unix:", 5) == 0;
}

/* Destroy the server and its queue with no pump thread running: a started
 * server is shut down first (no call was accepted yet: nothing was
 * requested), and the queue is drained here. */
static void drop_server(struct grist_net *net, int started)
{
    if (started) {
        struct grist_tag done = {0};
        grpc_server_shutdown_and_notify(net->server, net->cq, &done);
        grpc_server_cancel_all_calls(net->server);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(net->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN || ev.tag == &done)
                break;
        }
    }
    grpc_server_destroy(net->server);
    grpc_completion_queue_shutdown(net->cq);
    while (grpc_completion_queue_next(net->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(net->cq);
    net->server = NULL;
    net->cq = NULL;
}

int grist__net_start(struct grist_net *net, uv_loop_t *loop, const struct grist_config *cfg,
                     struct grist_tls *tls, const struct grist_net_service *svc)
{
    memset(net, 0, sizeof(*net));
    net->loop = loop;
    net->cfg = cfg;
    net->svc = *svc;
    grpc_arg args[6];
    memset(args, 0, sizeof(args));
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)cfg->max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)cfg->max_message_bytes;
    /* allow client keepalive pings (the default minimum is 5 minutes):
     * libgrist pings every 15 s by default, tests every 6 s */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
    args[2].value.integer = 5000;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
    args[3].value.integer = 1;
    /* gRPC sets SO_REUSEPORT by default, which would let a second daemon
     * bind the same port silently; a taken port must be an error. */
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[4].value.integer = 0;
    /* a large per-stream receive window: workers stream 32 KiB+ summaries
     * back to back, and the default 64 KiB window would make every second
     * one wait for a WINDOW_UPDATE round trip through the loop thread */
    args[5].type = GRPC_ARG_INTEGER;
    args[5].key = GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES;
    args[5].value.integer = 8 << 20;
    grpc_channel_args chargs = {6, args};

    net->cq = grpc_completion_queue_create_for_next(NULL);
    net->server = grpc_server_create(&chargs, NULL);
    if (!net->cq || !net->server)
        return -ENOMEM;
    grpc_server_register_completion_queue(net->server, net->cq, NULL);
    for (int i = 0; i < cfg->nlisten; i++) {
        /* TCP listeners serve TLS when gristd has a certificate; a unix
         * socket stays plaintext, guarded by its mode (0600: the daemon's
         * user only) */
        const int unix_sock = is_unix(cfg->listen[i]);
        grpc_server_credentials *creds = tls && !unix_sock
            ? grist__tls_grpc_credentials(tls)
            : grpc_insecure_server_credentials_create();
        mode_t old = 0;
        if (unix_sock)
            old = umask(0177);
        int port = creds ? grpc_server_add_http2_port(net->server, cfg->listen[i], creds) : 0;
        if (unix_sock) {
            umask(old);
            if (port > 0 && chmod(cfg->listen[i] + 5, 0600) < 0)
                GRIST_WARN("chmod 0600 %s: %s", cfg->listen[i] + 5, strerror(errno));
        }
        if (creds)
            grpc_server_credentials_release(creds);
        if (port <= 0) {
            GRIST_ERR("cannot listen on %s (address in use or invalid)", cfg->listen[i]);
            drop_server(net, 0);
            return -EADDRINUSE;
        }
        bound_name(cfg->listen[i], port, net->bound[i], sizeof(net->bound[i]));
        net->nbound++;
    }
    /* what can fail is done before the server starts, and a failure after
     * it undoes the start: gristd then exits 1 with nothing left running */
    struct acceptor *acc[ACCEPTORS] = {0};
    for (int i = 0; i < ACCEPTORS; i++)
        if (!(acc[i] = calloc(1, sizeof(*acc[i])))) {
            for (int k = 0; k < i; k++)
                free(acc[k]);
            drop_server(net, 0);
            return -ENOMEM;
        }
    uv_mutex_init(&net->mu);
    uv_async_init(loop, &net->async, on_async);
    net->async.data = net;
    grpc_server_start(net->server);
    /* GRISTD_FAULT=net-pump: the pump thread does not start (the undo below
     * is tested by test_daemon, not only written) */
    const char *fault = getenv("GRISTD_FAULT");
    if ((fault && strcmp(fault, "net-pump") == 0) ||
        uv_thread_create(&net->pump, pump_main, net) != 0) {
        GRIST_ERR("net: cannot start the gRPC pump thread");
        for (int i = 0; i < ACCEPTORS; i++)
            free(acc[i]);
        drop_server(net, 1);
        uv_close((uv_handle_t *)&net->async, NULL); /* closed by the caller's uv_run */
        uv_mutex_destroy(&net->mu);
        return -ENOMEM;
    }
    net->pump_started = 1;
    for (int i = 0; i < ACCEPTORS; i++) {
        acc[i]->net = net;
        arm(acc[i]);
    }
    for (int i = 0; i < net->nbound; i++)
        GRIST_INFO("listening on %s (%s)", net->bound[i],
                   is_unix(net->bound[i]) ? "unix socket, mode 0600"
                       : tls ? (cfg->tls_client_ca[0] ? "TLS, client certificates" : "TLS")
                             : "plaintext");
    return 0;
}

static void on_server_shutdown(struct grist_tag *tag, int ok)
{
    (void)ok;
    struct grist_net *net =
        (struct grist_net *)((char *)tag - offsetof(struct grist_net, shutdown_tag));
    GRIST_INFO("server stopped; draining the completion queue");
    if (net->grace_armed && !uv_is_closing((uv_handle_t *)&net->grace)) {
        uv_timer_stop(&net->grace);
        uv_close((uv_handle_t *)&net->grace, NULL);
    }
    grpc_completion_queue_shutdown(net->cq);
}

static void on_grace(uv_timer_t *t)
{
    struct grist_net *net = t->data;
    if (net->live_calls > 0)
        GRIST_WARN("%d calls still open after the grace period: cancelling them", net->live_calls);
    grpc_server_cancel_all_calls(net->server);
    uv_close((uv_handle_t *)t, NULL);
}

void grist__net_shutdown(struct grist_net *net, double grace_s,
                         void (*on_stopped)(struct grist_net *net))
{
    if (net->shutting_down)
        return;
    net->shutting_down = 1;
    net->on_stopped = on_stopped;
    net->shutdown_tag.cb = on_server_shutdown;
    grpc_server_shutdown_and_notify(net->server, net->cq, &net->shutdown_tag);
    /* calls that were told to finish get grace_s to deliver their status;
     * whatever is still open then is cancelled */
    uv_timer_init(net->loop, &net->grace);
    net->grace.data = net;
    net->grace_armed = 1;
    uv_timer_start(&net->grace, on_grace, (uint64_t)(grace_s * 1000.0), 0);
}

void grist__net_destroy(struct grist_net *net)
{
    if (net->server)
        grpc_server_destroy(net->server);
    if (net->cq)
        grpc_completion_queue_destroy(net->cq);
    net->server = NULL;
    net->cq = NULL;
    free(net->events);
    net->events = NULL;
    uv_mutex_destroy(&net->mu);
}
