/*
 * DESIGN: the cluster view of a sharded gristd (--shard I/N --shard-peers):
 * GET /api/v1/cluster/jobs on any replica asks every other replica's
 * ListJobs over gRPC and answers with all of them, so a dashboard needs one
 * address. The caller's bearer token is passed on, so each replica filters
 * by the same token as if asked directly.
 *
 * Loop thread. The client calls run on the daemon's own completion queue:
 * the pump thread hands their completions to the loop like any server tag.
 * Channels to the peers are made on first use and kept (gRPC reconnects
 * them); a call has a 2 s deadline, so a dead replica costs at most that and
 * shows as an error for its shard. With TLS the peers are verified against
 * --tls-client-ca when given (the cluster's CA), else the system roots, and
 * under mTLS the replica presents its own certificate.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "daemon.h"
#include "net.h"
#include "rpc.h"
#include "fanout.h"
#include "log.h"
#include "tls.h"

struct grist_fanout {
    grpc_channel *ch[GRIST_MAX_SHARDS];
    uint64_t tls_gen; /* the certificate set the channels were made with */
};

struct peer_call {
    struct grist_tag tag;
    struct fan_req *req;
    uint32_t shard;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
    grpc_metadata auth;
    int has_auth;
};

struct fan_req {
    struct grist_daemon *d;
    uint32_t pending;
    struct grist_fanout_result *res;
    grist_fanout_done *done;
    void *ud;
};

static void drop_channels(struct grist_fanout *f)
{
    for (uint32_t k = 0; k < GRIST_MAX_SHARDS; k++)
        if (f->ch[k]) { /* calls in flight keep what they need */
            grpc_channel_destroy(f->ch[k]);
            f->ch[k] = NULL;
        }
}

static grpc_channel *channel(struct grist_daemon *d, uint32_t k)
{
    if (!d->fanout) {
        d->fanout = calloc(1, sizeof(*d->fanout));
        if (!d->fanout)
            return NULL;
    }
    struct grist_fanout *f = d->fanout;
    const uint64_t gen = grist__tls_generation(d->tls);
    if (gen != f->tls_gen) { /* a SIGHUP rotated the certificate: present the new one */
        drop_channels(f);
        f->tls_gen = gen;
    }
    if (f->ch[k])
        return f->ch[k];
    /* the certificate set in force (the one tls.c checked), not the files */
    grpc_channel_credentials *creds =
        d->tls ? grist__tls_channel_credentials(d->tls) : grpc_insecure_credentials_create();
    if (!creds)
        return NULL;
    f->ch[k] = grpc_channel_create(d->shard_peer[k], creds, NULL);
    grpc_channel_credentials_release(creds);
    return f->ch[k];
}

static void finish_one(struct fan_req *q)
{
    if (--q->pending > 0)
        return;
    q->done(q->ud, q->res, q->d->shard_n);
    free(q);
}

static void on_peer(struct grist_tag *tag, int ok)
{
    struct peer_call *pc = (struct peer_call *)tag;
    struct grist_fanout_result *r = &pc->req->res[pc->shard];
    r->status = ok ? (int)pc->status : (int)grist__rpc_status(-ECONNRESET);
    if (r->status == 0 && pc->recv)
        r->body = grist__bb_read(pc->recv, &r->len);
    else
        snprintf(r->error, sizeof(r->error), "%.*s", (int)GRPC_SLICE_LENGTH(pc->details),
                 (const char *)GRPC_SLICE_START_PTR(pc->details));
    if (pc->recv)
        grpc_byte_buffer_destroy(pc->recv);
    grpc_byte_buffer_destroy(pc->send);
    grpc_metadata_array_destroy(&pc->md_init);
    grpc_metadata_array_destroy(&pc->md_trail);
    grpc_slice_unref(pc->details);
    if (pc->has_auth)
        grpc_slice_unref(pc->auth.value);
    grpc_call_unref(pc->call);
    struct fan_req *q = pc->req;
    free(pc);
    finish_one(q);
}

static int ask(struct fan_req *q, uint32_t k, const char *auth, size_t auth_len)
{
    struct grist_daemon *d = q->d;
    grpc_channel *ch = channel(d, k);
    struct peer_call *pc = ch ? calloc(1, sizeof(*pc)) : NULL;
    if (!pc)
        return -ENOMEM;
    pc->tag.cb = on_peer;
    pc->req = q;
    pc->shard = k;
    const gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(2000, GPR_TIMESPAN));
    pc->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, d->net->cq,
                                        grpc_slice_from_static_string("/grist.v1.Grist/ListJobs"),
                                        NULL, deadline, NULL);
    if (!pc->call) {
        free(pc);
        return -ENOMEM;
    }
    pc->send = grist__bb_from("", 0); /* an empty ListJobsRequest */
    grpc_metadata_array_init(&pc->md_init);
    grpc_metadata_array_init(&pc->md_trail);
    pc->details = grpc_empty_slice();
    if (auth_len) {
        pc->auth.key = grpc_slice_from_static_string("authorization");
        pc->auth.value = grpc_slice_from_copied_buffer(auth, auth_len);
        pc->has_auth = 1;
    }
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = pc->has_auth ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = pc->has_auth ? &pc->auth : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = pc->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &pc->md_init;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &pc->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &pc->md_trail;
    ops[5].data.recv_status_on_client.status = &pc->status;
    ops[5].data.recv_status_on_client.status_details = &pc->details;
    q->pending++;
    if (grpc_call_start_batch(pc->call, ops, 6, &pc->tag, NULL) != GRPC_CALL_OK) {
        q->pending--;
        grpc_byte_buffer_destroy(pc->send);
        grpc_metadata_array_destroy(&pc->md_init);
        grpc_metadata_array_destroy(&pc->md_trail);
        if (pc->has_auth)
            grpc_slice_unref(pc->auth.value);
        grpc_call_unref(pc->call);
        free(pc);
        return -EIO;
    }
    return 0;
}

int grist__fanout_jobs(struct grist_daemon *d, const char *auth, size_t auth_len,
                       grist_fanout_done *done, void *ud)
{
    if (d->shard_n <= 1 || !d->shard_peer[0] || d->stopping)
        return -ENOENT;
    struct fan_req *q = calloc(1, sizeof(*q));
    if (q)
        q->res = calloc(d->shard_n, sizeof(*q->res));
    if (!q || !q->res) {
        free(q);
        return -ENOMEM;
    }
    q->d = d;
    q->done = done;
    q->ud = ud;
    q->pending = 1; /* held until every call is started */
    for (uint32_t k = 0; k < d->shard_n; k++) {
        if (k == d->shard_i)
            continue; /* this replica answers from its own registry */
        if (ask(q, k, auth, auth_len) < 0) {
            q->res[k].status = (int)grist__rpc_status(-ENOMEM);
            snprintf(q->res[k].error, sizeof(q->res[k].error), "cannot start the call");
        }
    }
    finish_one(q);
    return 0;
}

void grist__fanout_free(struct grist_daemon *d)
{
    if (!d->fanout)
        return;
    drop_channels(d->fanout);
    free(d->fanout);
    d->fanout = NULL;
}
