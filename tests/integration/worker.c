/* DESIGN: see worker.h. Tags: SEND (one message or half-close at a time),
 * RECV (always one RECV_MESSAGE outstanding once Welcome is requested),
 * STATUS (RECV_STATUS_ON_CLIENT, issued at open). Events for other tags
 * seen while waiting are remembered in flags. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grist/v1/grist.pb-c.h"
#include "worker.h"

enum { T_SEND = 1, T_RECV, T_STATUS };

struct tw {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
    int status_done, send_done, recv_done, recv_pending, md_received, md_sent;
    grpc_byte_buffer *recv_buf, *send_buf;
    char tags[4];
};

static gpr_timespec deadline(double s)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_micros((int64_t)(s * 1e6), GPR_TIMESPAN));
}

/* Wait until the event for tag arrives; returns 1 ok, 0 failed, -1 timeout. */
static int wait_for(struct tw *w, int tag, double timeout_s)
{
    int *flag = tag == T_SEND ? &w->send_done : tag == T_RECV ? &w->recv_done : &w->status_done;
    gpr_timespec dl = deadline(timeout_s);
    while (!*flag) {
        grpc_event ev = grpc_completion_queue_next(w->cq, dl, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT)
            return -1;
        if (ev.type != GRPC_OP_COMPLETE)
            return 0;
        const int t = (int)((char *)ev.tag - w->tags);
        int *f = t == T_SEND ? &w->send_done : t == T_RECV ? &w->recv_done : &w->status_done;
        *f = ev.success ? 1 : 2;
    }
    int r = *flag == 1;
    *flag = 0;
    return r;
}

static int start(struct tw *w, grpc_op *ops, size_t n, int tag)
{
    return grpc_call_start_batch(w->call, ops, n, &w->tags[tag], NULL) == GRPC_CALL_OK ? 0 : -1;
}

static int send_bytes(struct tw *w, const void *buf, size_t len, int with_md)
{
    grpc_slice s = grpc_slice_from_copied_buffer(buf, len);
    w->send_buf = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (with_md || !w->md_sent)
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    w->md_sent = 1;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = w->send_buf;
    int r = start(w, ops, n, T_SEND);
    if (r == 0)
        r = wait_for(w, T_SEND, 30.0) == 1 ? 0 : -1;
    grpc_byte_buffer_destroy(w->send_buf);
    w->send_buf = NULL;
    return r;
}

static void post_recv(struct tw *w)
{
    if (w->recv_pending)
        return;
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!w->md_received) { /* a client must take the initial metadata first */
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &w->md_init;
        w->md_received = 1;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &w->recv_buf;
    if (start(w, ops, n, T_RECV) == 0)
        w->recv_pending = 1;
}

static struct tw *open_call(const char *target, const char *method);
static struct tw *tw_hello(struct tw *w, const struct tw_opts *o);

struct tw *tw_open_method(const char *target, const char *method)
{
    return open_call(target, method);
}

struct tw *tw_open(const char *target, const struct tw_opts *o)
{
    struct tw *w = open_call(target, "/grist.v1.Grist/Attach");
    if (!o)
        return w;
    return tw_hello(w, o);
}

static struct tw *open_call(const char *target, const char *method)
{
    struct tw *w = calloc(1, sizeof(*w));
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_arg arg = {GRPC_ARG_INTEGER,
                    (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                    {.integer = 64 << 20}};
    grpc_arg arg2 = {GRPC_ARG_INTEGER,
                     (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                     {.integer = 64 << 20}};
    grpc_arg args[2] = {arg, arg2};
    grpc_channel_args ca = {2, args};
    w->ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    w->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice m = grpc_slice_from_copied_string(method);
    w->call = grpc_channel_create_call(w->ch, NULL, GRPC_PROPAGATE_DEFAULTS, w->cq, m, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    w->details = grpc_empty_slice();
    grpc_metadata_array_init(&w->md_init);
    grpc_metadata_array_init(&w->md_trail);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &w->md_trail;
    ops[0].data.recv_status_on_client.status = &w->status;
    ops[0].data.recv_status_on_client.status_details = &w->details;
    start(w, ops, 1, T_STATUS);
    grpc_slice_unref(m);
    return w;
}

size_t tw_encode_hello(uint8_t **out, const struct tw_opts *o)
{
    Grist__V1__GroupSpec *gs = calloc(o->ngroups, sizeof(*gs));
    Grist__V1__GroupSpec **gp = calloc(o->ngroups, sizeof(*gp));
    for (uint32_t g = 0; g < o->ngroups; g++) {
        grist__v1__group_spec__init(&gs[g]);
        gs[g].name = (char *)"g";
        gs[g].num_elements = o->n;
        gs[g].optimizer = o->adam ? GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_ADAM
                                  : GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_SGD;
        gs[g].lr = 0.1;
        gs[g].beta = o->beta0;
        gs[g].sketch_sample = o->sketch_sample;
        gp[g] = &gs[g];
    }
    Grist__V1__Policy pol = GRIST__V1__POLICY__INIT;
    pol.solve_every = o->solve_every;
    pol.min_steps = o->min_steps;
    pol.hysteresis_h = o->hysteresis_h;
    pol.hysteresis_z = o->hysteresis_z;
    pol.noise_correction = (char *)(o->noise ? o->noise : "");
    pol.rule = (char *)(o->rule ? o->rule : "");
    Grist__V1__Hello h = GRIST__V1__HELLO__INIT;
    h.job_id = (char *)o->job;
    h.rank = o->rank;
    h.world_size = o->world;
    h.n_groups = o->ngroups;
    h.groups = gp;
    h.sketch_dim = o->m;
    h.sketch_kind = (Grist__V1__SketchKind)o->sketch_kind;
    h.policy = &pol;
    Grist__V1__WorkerMessage wm = GRIST__V1__WORKER_MESSAGE__INIT;
    wm.msg_case = GRIST__V1__WORKER_MESSAGE__MSG_HELLO;
    wm.hello = &h;
    size_t len = grist__v1__worker_message__get_packed_size(&wm);
    *out = malloc(len);
    grist__v1__worker_message__pack(&wm, *out);
    free(gs);
    free(gp);
    return len;
}

struct tw *tw_hello(struct tw *w, const struct tw_opts *o)
{
    uint8_t *buf;
    size_t len = tw_encode_hello(&buf, o);
    send_bytes(w, buf, len, 1);
    free(buf);
    return w;
}

int tw_send_md(struct tw *w)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    w->md_sent = 1;
    if (start(w, &op, 1, T_SEND) != 0)
        return -1;
    return wait_for(w, T_SEND, 30.0) == 1 ? 0 : -1;
}

int tw_send_raw(struct tw *w, const void *buf, size_t len)
{
    return send_bytes(w, buf, len, 0);
}

/* one received ServerMessage, or NULL when the stream is over */
/* one received ServerMessage, or NULL when the stream is over or timed out */
static Grist__V1__ServerMessage *recv_msg(struct tw *w, double timeout_s, int *timed_out)
{
    uint8_t *buf;
    size_t len;
    const int r = tw_recv_raw(w, &buf, &len, timeout_s);
    *timed_out = r == 0;
    if (r != 1)
        return NULL;
    Grist__V1__ServerMessage *m = grist__v1__server_message__unpack(NULL, len, buf);
    free(buf);
    return m;
}

static int final_status(struct tw *w)
{
    /* gRPC delivers the status only after every message was read: drain */
    for (int i = 0; i < 100000 && w->status_done != 3; i++) {
        post_recv(w);
        if (wait_for(w, T_RECV, 30.0) != 1)
            break;
        w->recv_pending = 0;
        if (!w->recv_buf)
            break;
        grpc_byte_buffer_destroy(w->recv_buf);
        w->recv_buf = NULL;
    }
    w->recv_pending = 0;
    wait_for(w, T_STATUS, 30.0);
    w->status_done = 3; /* remember */
    return -(int)w->status;
}

int tw_recv_raw(struct tw *w, uint8_t **buf, size_t *len, double timeout_s)
{
    post_recv(w);
    int r = wait_for(w, T_RECV, timeout_s);
    if (r < 0)
        return 0;
    w->recv_pending = 0;
    if (!w->recv_buf)
        return final_status(w) - 1;
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, w->recv_buf);
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(w->recv_buf);
    w->recv_buf = NULL;
    *len = GRPC_SLICE_LENGTH(s);
    *buf = malloc(*len + 1);
    memcpy(*buf, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return 1;
}

int tw_welcome(struct tw *w, uint32_t *seed, double timeout_s)
{
    int to;
    Grist__V1__ServerMessage *m = recv_msg(w, timeout_s, &to);
    if (!m)
        return to ? -1000 : final_status(w);
    int r = -1001;
    if (m->msg_case == GRIST__V1__SERVER_MESSAGE__MSG_WELCOME) {
        *seed = m->welcome->job_seed;
        r = 0;
    }
    grist__v1__server_message__free_unpacked(m, NULL);
    return r;
}

static void fill_hp(const Grist__V1__Hyperparams *h, struct tw_hp *hp)
{
    hp->version = h->version;
    hp->step = h->step;
    hp->ngroups = (uint32_t)h->n_groups;
    for (size_t g = 0; g < h->n_groups && g < 16; g++) {
        hp->momentum[g] = h->groups[g]->momentum;
        hp->lr_scale[g] = h->groups[g]->lr_scale;
        hp->confidence[g] = h->groups[g]->confidence;
    }
    if (h->n_groups)
        snprintf(hp->reason, sizeof(hp->reason), "%s", h->groups[0]->reason);
}

int tw_next(struct tw *w, struct tw_hp *hp, double timeout_s)
{
    int to;
    Grist__V1__ServerMessage *m = recv_msg(w, timeout_s, &to);
    if (!m)
        return to ? 0 : final_status(w) - 1;
    int r = 0;
    if (m->msg_case == GRIST__V1__SERVER_MESSAGE__MSG_HYPERPARAMS) {
        fill_hp(m->hyperparams, hp);
        r = 1;
    }
    grist__v1__server_message__free_unpacked(m, NULL);
    return r;
}

uint64_t tw_drain(struct tw *w, struct tw_hp *latest)
{
    struct tw_hp hp;
    while (tw_next(w, &hp, 0.001) == 1)
        *latest = hp;
    return latest->version;
}

size_t tw_encode_summary(uint8_t **out, uint64_t step, uint32_t ngroups, uint32_t m,
                         const float *sketch, const double *sq_norm, uint32_t batch)
{
    Grist__V1__GroupSummary *gs = calloc(ngroups, sizeof(*gs));
    Grist__V1__GroupSummary **gp = calloc(ngroups, sizeof(*gp));
    for (uint32_t g = 0; g < ngroups; g++) {
        grist__v1__group_summary__init(&gs[g]);
        gs[g].sq_norm = sq_norm ? sq_norm[g] : 1.0;
        gs[g].n_sketch = m;
        gs[g].sketch = (float *)sketch + (size_t)g * m;
        gs[g].batch_size = batch;
        gp[g] = &gs[g];
    }
    Grist__V1__Summary s = GRIST__V1__SUMMARY__INIT;
    s.step = step;
    s.n_groups = ngroups;
    s.groups = gp;
    Grist__V1__WorkerMessage wm = GRIST__V1__WORKER_MESSAGE__INIT;
    wm.msg_case = GRIST__V1__WORKER_MESSAGE__MSG_SUMMARY;
    wm.summary = &s;
    size_t len = grist__v1__worker_message__get_packed_size(&wm);
    *out = malloc(len);
    grist__v1__worker_message__pack(&wm, *out);
    free(gs);
    free(gp);
    return len;
}

grpc_status_code tw_status(struct tw *w, char *details, size_t dsz)
{
    if (w->status_done != 3)
        final_status(w);
    if (details) {
        char *d = grpc_slice_to_c_string(w->details);
        snprintf(details, dsz, "%s", d);
        gpr_free(d);
    }
    return w->status;
}

grpc_status_code tw_finish(struct tw *w, char *details, size_t dsz, double timeout_s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (start(w, &op, 1, T_SEND) == 0)
        wait_for(w, T_SEND, timeout_s);
    return tw_status(w, details, dsz);
}

void tw_cancel(struct tw *w)
{
    grpc_call_cancel(w->call, NULL);
}

void tw_free(struct tw *w)
{
    if (!w)
        return;
    grpc_call_cancel(w->call, NULL);
    if (w->status_done != 3)
        wait_for(w, T_STATUS, 10.0);
    if (w->recv_pending)
        wait_for(w, T_RECV, 10.0);
    if (w->recv_buf)
        grpc_byte_buffer_destroy(w->recv_buf);
    grpc_call_unref(w->call);
    grpc_slice_unref(w->details);
    grpc_metadata_array_destroy(&w->md_init);
    grpc_metadata_array_destroy(&w->md_trail);
    grpc_completion_queue_shutdown(w->cq);
    while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(w->cq);
    grpc_channel_destroy(w->ch);
    free(w);
}
