/*
 * DESIGN: libgrist's query calls (ListJobs, GetJob, GetHistory, WatchJob)
 * for dashboards and gristctl. They are blocking by nature, so each call
 * runs on the caller's thread with its own pluck completion queue on the
 * client's channel; the background thread and the sessions' streams are
 * not involved. Answers are unpacked with protobuf-c and copied into plain
 * structs (grist/client.h), so callers never see generated types.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "grist/v1/grist.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "internal.h"

static int status_to_errno(grpc_status_code st)
{
    switch (st) {
    case GRPC_STATUS_OK:
        return 0;
    case GRPC_STATUS_NOT_FOUND:
        return -ENOENT;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return -EINVAL;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return -ETIMEDOUT;
    case GRPC_STATUS_UNAVAILABLE:
        return -ECONNREFUSED;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return -ENOMEM;
    case GRPC_STATUS_UNAUTHENTICATED:
        return -EACCES;
    case GRPC_STATUS_PERMISSION_DENIED:
        return -EPERM;
    default:
        return -EPROTO;
    }
}

static gpr_timespec deadline_in(double s)
{
    if (s <= 0)
        return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                        gpr_time_from_micros((int64_t)(s * 1e6), GPR_TIMESPAN));
}

static void wait_tag(grpc_completion_queue *cq, void *tag, int *ok)
{
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ok)
        *ok = ev.type == GRPC_OP_COMPLETE && ev.success;
}

static int take_bytes(grpc_byte_buffer *bb, uint8_t **out, size_t *len)
{
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb))
        return -EPROTO;
    grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    *len = GRPC_SLICE_LENGTH(sl);
    *out = malloc(*len ? *len : 1);
    if (*out)
        memcpy(*out, GRPC_SLICE_START_PTR(sl), *len);
    grpc_slice_unref(sl);
    return *out ? 0 : -ENOMEM;
}

/* One call on its own pluck queue: what unary and streaming calls share. */
struct qcall {
    struct grist_client *c;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_byte_buffer *send;
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
};

/* the request is packed straight into the slice gRPC sends */
static void qcall_open(struct qcall *q, struct grist_client *c, const char *method,
                       const ProtobufCMessage *req, double timeout_s)
{
    q->c = c;
    q->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_static_string(method);
    q->call = grpc_channel_create_call(grist__client_channel(c), NULL, GRPC_PROPAGATE_DEFAULTS,
                                       q->cq, m, NULL, deadline_in(timeout_s), NULL);
    grpc_slice sl = grpc_slice_malloc(protobuf_c_message_get_packed_size(req));
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(sl));
    q->send = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_metadata_array_init(&q->md_init);
    grpc_metadata_array_init(&q->md_trail);
    q->status = GRPC_STATUS_UNKNOWN;
    q->details = grpc_empty_slice();
}

static void qcall_close(struct qcall *q)
{
    grpc_byte_buffer_destroy(q->send);
    grpc_metadata_array_destroy(&q->md_init);
    grpc_metadata_array_destroy(&q->md_trail);
    grpc_slice_unref(q->details);
    if (q->call)
        grpc_call_unref(q->call);
    grpc_completion_queue_shutdown(q->cq);
    while (
        grpc_completion_queue_pluck(q->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
        GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(q->cq);
}

/* the ops that send the request and half-close */
static int qcall_send(struct qcall *q, grpc_op *ops)
{
    memset(ops, 0, 3 * sizeof(*ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.metadata =
        (grpc_metadata *)grist__client_metadata(q->c, &ops[0].data.send_initial_metadata.count);
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = q->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    return 3;
}

static void qcall_status_op(struct qcall *q, grpc_op *op)
{
    memset(op, 0, sizeof(*op));
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &q->md_trail;
    op->data.recv_status_on_client.status = &q->status;
    op->data.recv_status_on_client.status_details = &q->details;
}

/* one unary call: request bytes in, response bytes out (malloc'ed) */
static int unary(struct grist_client *c, const char *method, const ProtobufCMessage *req,
                 double timeout_s, uint8_t **resp, size_t *resp_len)
{
    struct qcall q;
    qcall_open(&q, c, method, req, timeout_s);
    grpc_byte_buffer *recv = NULL;
    grpc_op ops[6];
    const int n = qcall_send(&q, ops);
    memset(ops + n, 0, 3 * sizeof(*ops));
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &q.md_init;
    ops[n + 1].op = GRPC_OP_RECV_MESSAGE;
    ops[n + 1].data.recv_message.recv_message = &recv;
    qcall_status_op(&q, &ops[n + 2]);
    int r = -EPROTO;
    if (q.call && grpc_call_start_batch(q.call, ops, 6, (void *)1, NULL) == GRPC_CALL_OK) {
        wait_tag(q.cq, (void *)1, NULL);
        r = status_to_errno(q.status);
        if (r == 0)
            r = recv ? take_bytes(recv, resp, resp_len) : -EPROTO;
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    qcall_close(&q);
    return r;
}

/* A unary call whose answer is decoded as a message of descriptor d: 0 and
 * *out (free it with protobuf_c_message_free_unpacked); the codes of unary();
 * -EPROTO when the answer does not decode. */
static int unary_msg(struct grist_client *c, const char *method, const ProtobufCMessage *req,
                     double timeout_s, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out)
{
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int r = unary(c, method, req, timeout_s, &resp, &rlen);
    if (r < 0)
        return r;
    *out = protobuf_c_message_unpack(d, NULL, rlen, resp);
    free(resp);
    return *out ? 0 : -EPROTO;
}

static void copy_brief(const Grist__V1__JobBrief *b, struct grist_job_info *o)
{
    memset(o, 0, sizeof(*o));
    if (!b)
        return;
    snprintf(o->id, sizeof(o->id), "%s", b->job_id ? b->job_id : "");
    o->world_size = b->world_size;
    o->live_workers = b->live_workers;
    o->step = b->step;
    o->version = b->version;
    o->dropped_steps = b->dropped_steps;
    o->late_summaries = b->late_summaries;
    o->validation_summaries = b->validation_summaries;
    o->step_segments = b->step_segments;
    o->shed_steps = b->shed_steps;
    o->groups = b->groups;
    o->sketch_dim = b->sketch_dim;
    o->sketch_kind = (uint32_t)b->sketch_kind;
}

static void copy_group(const Grist__V1__GroupState *g, struct grist_group_info *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->name, sizeof(o->name), "%s", g->name ? g->name : "");
    o->momentum = g->momentum;
    o->lr_scale = g->lr_scale;
    o->noise = g->noise;
    o->noise_scale = g->noise_scale;
    o->steps = g->steps;
    o->curvature = g->curvature;
    o->lr_greedy = g->lr_greedy;
    o->confidence = g->confidence;
    o->num_elements = g->num_elements;
    o->sketch_sample = g->sketch_sample;
    snprintf(o->reason, sizeof(o->reason), "%s", g->reason ? g->reason : "");
    size_t n = g->n_candidates;
    if (n > GRIST_QUERY_MAX_CANDIDATES)
        n = GRIST_QUERY_MAX_CANDIDATES;
    if (g->n_alignment < n)
        n = g->n_alignment;
    o->ncand = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        o->cand[i] = g->candidates[i];
        o->J[i] = g->alignment[i];
        o->J_se[i] = i < g->n_alignment_se ? g->alignment_se[i] : 0;
    }
    if (g->families) {
        const Grist__V1__FamilyDiagnostics *f = g->families;
        o->have_families = 1;
        o->trace = f->trace;
        o->frobenius = f->frobenius;
        o->lambda_max = f->lambda_max;
        o->effective_rank = f->effective_rank;
        o->value_frobenius = f->value_frobenius;
        o->value_spectral = f->value_spectral;
        o->value_isotropic = f->value_isotropic;
        o->value_lyapunov = f->value_lyapunov;
        o->trace_sqrt = f->trace_sqrt;
        o->value_whitened = f->value_whitened;
        o->value_diagonal = f->value_diagonal;
    }
}

/* a GetJobResponse into info + groups (malloc'ed) */
static int copy_job(const Grist__V1__GetJobResponse *r, struct grist_job_info *info,
                    struct grist_group_info **groups, uint32_t *ngroups)
{
    copy_brief(r->job, info);
    struct grist_group_info *g = calloc(r->n_groups ? r->n_groups : 1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    for (size_t i = 0; i < r->n_groups; i++)
        copy_group(r->groups[i], &g[i]);
    *groups = g;
    *ngroups = (uint32_t)r->n_groups;
    return 0;
}

int grist_query_health(struct grist_client *c, double timeout_s, int *serving)
{
    if (!c || !serving)
        return -EINVAL;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *m;
    int r =
        unary_msg(c, "/grpc.health.v1.Health/Check", &req.base, timeout_s,
                  &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&m);
    if (r < 0)
        return r;
    *serving = m->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    grpc__health__v1__health_check_response__free_unpacked(m, NULL);
    return 0;
}

int grist_query_jobs(struct grist_client *c, double timeout_s, struct grist_job_info **jobs,
                     uint32_t *n)
{
    if (!c || !jobs || !n)
        return -EINVAL;
    Grist__V1__ListJobsRequest req = GRIST__V1__LIST_JOBS_REQUEST__INIT;
    Grist__V1__ListJobsResponse *m;
    int r = unary_msg(c, "/grist.v1.Grist/ListJobs", &req.base, timeout_s,
                      &grist__v1__list_jobs_response__descriptor, (ProtobufCMessage **)&m);
    if (r < 0)
        return r;
    *jobs = calloc(m->n_jobs ? m->n_jobs : 1, sizeof(**jobs));
    if (!*jobs) {
        grist__v1__list_jobs_response__free_unpacked(m, NULL);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->n_jobs; i++)
        copy_brief(m->jobs[i], &(*jobs)[i]);
    *n = (uint32_t)m->n_jobs;
    grist__v1__list_jobs_response__free_unpacked(m, NULL);
    return 0;
}

int grist_query_job(struct grist_client *c, const char *job, double timeout_s,
                    struct grist_job_info *info, struct grist_group_info **groups,
                    uint32_t *ngroups)
{
    if (!c || !job || !info || !groups || !ngroups)
        return -EINVAL;
    Grist__V1__GetJobRequest req = GRIST__V1__GET_JOB_REQUEST__INIT;
    req.job_id = (char *)job;
    Grist__V1__GetJobResponse *m;
    int r = unary_msg(c, "/grist.v1.Grist/GetJob", &req.base, timeout_s,
                      &grist__v1__get_job_response__descriptor, (ProtobufCMessage **)&m);
    if (r < 0)
        return r;
    r = copy_job(m, info, groups, ngroups);
    grist__v1__get_job_response__free_unpacked(m, NULL);
    return r;
}

int grist_query_history(struct grist_client *c, const char *job, uint32_t group, const char *series,
                        uint64_t from, uint64_t to, uint32_t points, double timeout_s,
                        uint64_t **steps, double **values, uint32_t *n)
{
    if (!c || !job || !steps || !values || !n)
        return -EINVAL;
    Grist__V1__GetHistoryRequest req = GRIST__V1__GET_HISTORY_REQUEST__INIT;
    req.job_id = (char *)job;
    req.group = group;
    req.series = (char *)(series ? series : "momentum");
    req.from_step = from;
    req.to_step = to;
    req.points = points;
    Grist__V1__GetHistoryResponse *m;
    int r = unary_msg(c, "/grist.v1.Grist/GetHistory", &req.base, timeout_s,
                      &grist__v1__get_history_response__descriptor, (ProtobufCMessage **)&m);
    if (r < 0)
        return r;
    if (m->n_steps != m->n_values) {
        grist__v1__get_history_response__free_unpacked(m, NULL);
        return -EPROTO;
    }
    *steps = malloc((m->n_steps ? m->n_steps : 1) * sizeof(uint64_t));
    *values = malloc((m->n_steps ? m->n_steps : 1) * sizeof(double));
    if (!*steps || !*values) {
        free(*steps), free(*values);
        grist__v1__get_history_response__free_unpacked(m, NULL);
        return -ENOMEM;
    }
    if (m->n_steps) {
        memcpy(*steps, m->steps, m->n_steps * sizeof(uint64_t));
        memcpy(*values, m->values, m->n_steps * sizeof(double));
    }
    *n = (uint32_t)m->n_steps;
    grist__v1__get_history_response__free_unpacked(m, NULL);
    return 0;
}

int grist_query_watch(struct grist_client *c, const char *job, double duration_s,
                      grist_watch_fn *fn, void *ud)
{
    if (!c || !job || !fn)
        return -EINVAL;
    Grist__V1__WatchJobRequest req = GRIST__V1__WATCH_JOB_REQUEST__INIT;
    req.job_id = (char *)job;
    struct qcall q;
    qcall_open(&q, c, "/grist.v1.Grist/WatchJob", &req.base, duration_s);
    int r = -EPROTO, stopped = 0;
    grpc_op ops[3];
    const int nsend = qcall_send(&q, ops);
    if (q.call &&
        grpc_call_start_batch(q.call, ops, (size_t)nsend, (void *)1, NULL) == GRPC_CALL_OK) {
        wait_tag(q.cq, (void *)1, NULL);
        qcall_status_op(&q, &ops[0]);
        grpc_call_start_batch(q.call, ops, 1, (void *)2, NULL);
        /* the first receive also takes the initial metadata (gRPC core wants
         * it before any message) */
        int first = 1;
        for (;;) {
            grpc_byte_buffer *recv = NULL;
            memset(ops, 0, sizeof(ops));
            size_t nops = 0;
            if (first) {
                ops[nops].op = GRPC_OP_RECV_INITIAL_METADATA;
                ops[nops++].data.recv_initial_metadata.recv_initial_metadata = &q.md_init;
                first = 0;
            }
            ops[nops].op = GRPC_OP_RECV_MESSAGE;
            ops[nops++].data.recv_message.recv_message = &recv;
            if (grpc_call_start_batch(q.call, ops, nops, (void *)3, NULL) != GRPC_CALL_OK)
                break;
            int ok = 0;
            wait_tag(q.cq, (void *)3, &ok);
            if (!ok || !recv) /* the stream ended (status follows) */
                break;
            uint8_t *bytes = NULL;
            size_t blen = 0;
            int tr = take_bytes(recv, &bytes, &blen);
            grpc_byte_buffer_destroy(recv);
            Grist__V1__GetJobResponse *msg =
                tr == 0 ? grist__v1__get_job_response__unpack(NULL, blen, bytes) : NULL;
            free(bytes);
            if (!msg)
                break;
            struct grist_job_info info;
            struct grist_group_info *groups = NULL;
            uint32_t ng = 0;
            int cr = copy_job(msg, &info, &groups, &ng);
            grist__v1__get_job_response__free_unpacked(msg, NULL);
            const int stop = cr == 0 ? fn(ud, &info, groups, ng) : 1;
            free(groups);
            if (stop) {
                stopped = 1;
                grpc_call_cancel(q.call, NULL);
                break;
            }
        }
        wait_tag(q.cq, (void *)2, NULL);
        /* a deadline at the end of the asked duration or a cancel by fn are normal ends */
        r = stopped || q.status == GRPC_STATUS_DEADLINE_EXCEEDED ? 0 : status_to_errno(q.status);
    }
    qcall_close(&q);
    return r;
}
