/*
 * The gRPC core server and its bridge into the libuv loop.
 *
 * gRPC core has no libuv integration, so one pump thread blocks in
 * grpc_completion_queue_next() and hands every completed tag to the loop
 * thread through a mutex-protected queue and uv_async_send(). Tag callbacks
 * therefore always run on the loop thread, which owns all daemon state.
 */
#ifndef GRIST_DAEMON_NET_H
#define GRIST_DAEMON_NET_H

#include <grpc/grpc.h>
#include <uv.h>

#include "config.h"

/** Something waiting for a completion-queue event; embed it first. */
struct grist_tag {
    void (*cb)(struct grist_tag *tag, int ok);
};

struct grist_net;
struct grist_tls;
struct grist_principal;

struct grist_method;
struct grist_auth;

/* What a net serves (rpc.h): the method table, the handlers' ud, and the
 * token table the calls are checked against. */
struct grist_net_service {
    const struct grist_method *methods;
    size_t nmethods;
    void *ud;
    struct grist_auth *const *auth; /* the table in force (SIGHUP replaces it); NULL: open */
    uint64_t *unauthenticated; /* counts the calls refused for want of a token */
};

struct grist_net_event {
    struct grist_tag *tag;
    int ok;
};

struct grist_net {
    uv_loop_t *loop;
    grpc_server *server;
    grpc_completion_queue *cq;
    const struct grist_config *cfg;
    struct grist_net_service svc;

    uv_thread_t pump;
    int pump_started;
    uv_async_t async;
    uv_mutex_t mu;
    struct grist_net_event *events; /* ring, guarded by mu */
    size_t ev_cap, ev_head, ev_len;
    int cq_drained; /* pump saw GRPC_QUEUE_SHUTDOWN (guarded by mu) */

    char bound[GRIST_MAX_LISTENERS][300];
    int nbound;
    int shutting_down;
    int listener_failed; /* a listener stopped accepting (probe.c): health NOT_SERVING */
    int live_calls;
    struct grist_tag shutdown_tag;
    uv_timer_t grace;
    int grace_armed;
    void (*on_stopped)(struct grist_net *net);
};

/**
 * Create the server, bind every listener of cfg and start serving the
 * methods of svc (copied; its table must outlive the net).
 *
 * @return 0; -EADDRINUSE/-EINVAL when a listener cannot bind (its address is
 *         logged); -ENOMEM.
 */
int grist__net_start(struct grist_net *net, uv_loop_t *loop, const struct grist_config *cfg,
                     struct grist_tls *tls, const struct grist_net_service *svc);

/** The principal of a call's metadata ("authorization: Bearer TOKEN").
 *  @return 0; -EACCES: gristd has tokens and this call has no valid one. */
int grist__net_principal(struct grist_net *net, const grpc_metadata_array *md,
                         struct grist_principal *who);

/**
 * Begin the ordered shutdown: stop accepting new calls; calls still open
 * after grace_s seconds are cancelled; then drain the queue, join the pump
 * thread and call on_stopped on the loop thread. Idempotent.
 */
void grist__net_shutdown(struct grist_net *net, double grace_s,
                         void (*on_stopped)(struct grist_net *net));

/** Free what grist__net_start() made; after on_stopped ran. */
void grist__net_destroy(struct grist_net *net);

#endif
