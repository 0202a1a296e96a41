/*
 * DESIGN: the query API for dashboards (ListJobs, GetJob, GetHistory,
 * WatchJob).
 * Unary calls answered on the loop thread from the job registry; histories
 * are downsampled on the server with largest-triangle-three-buckets so a
 * long run answers in bounded time and size. WatchJob streams the job's
 * state after every evaluation, latest-wins (one send in flight; a newer
 * state replaces a waiting one). Loop thread.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grist/v1/grist.pb-c.h"
#include "jobs.h"
#include "log.h"
#include "lttb.h"

void grist__job_brief(const struct grist_job *j, Grist__V1__JobBrief *b)
{
    grist__v1__job_brief__init(b);
    b->job_id = (char *)j->id;
    b->world_size = j->world;
    b->live_workers = j->nstreams;
    b->step = j->high_step;
    b->version = j->version;
    b->dropped_steps = j->dropped;
    b->shed_steps = j->shed;
    b->late_summaries = j->late;
    b->validation_summaries = j->validation;
    b->step_segments = j->segments;
    b->groups = j->ngroups;
    b->sketch_dim = j->m;
    b->sketch_kind = j->sketch_kind == GRIST_SKETCH_BLOCK
        ? GRIST__V1__SKETCH_KIND__SKETCH_KIND_BLOCK
        : GRIST__V1__SKETCH_KIND__SKETCH_KIND_HASHED;
}

/* A job id the caller may read, checked before the job is looked up: a
 * token that does not cover the id learns nothing about whether it exists. */
static grpc_status_code may_read(struct grist_daemon *d, const struct grist_principal *who,
                                 const char *id, char *msg, size_t msz)
{
    if (grist__auth_allows(who, GRIST_NEED_READ, id))
        return GRPC_STATUS_OK;
    d->cnt.auth_denied++;
    snprintf(msg, msz, "job_id: this token (tokens file line %u, %s) does not cover the job",
             who->line, grist__role_name(who->role));
    return GRPC_STATUS_PERMISSION_DENIED;
}

static grpc_status_code list_jobs(struct grist_net *net, const struct grist_principal *who,
                                  const unsigned char *in, size_t in_len, unsigned char **out,
                                  size_t *out_len, char *msg, size_t msz)
{
    struct grist_daemon *d = grist__daemon_of(net);
    Grist__V1__ListJobsRequest *req = grist__v1__list_jobs_request__unpack(NULL, in_len, in);
    if (!req) {
        snprintf(msg, msz, "ListJobsRequest does not decode");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    grist__v1__list_jobs_request__free_unpacked(req, NULL);
    Grist__V1__JobBrief *b = calloc(d->njobs + 1, sizeof(*b));
    Grist__V1__JobBrief **bp = calloc(d->njobs + 1, sizeof(*bp));
    if (!b || !bp) {
        free(b), free(bp);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    size_t n = 0;
    for (struct grist_job *j = d->jobs; j; j = j->next) {
        if (!grist__auth_allows(who, GRIST_NEED_READ, j->id))
            continue; /* a reader sees only the jobs its token covers */
        grist__job_brief(j, &b[n]);
        bp[n] = &b[n];
        n++;
    }
    Grist__V1__ListJobsResponse resp = GRIST__V1__LIST_JOBS_RESPONSE__INIT;
    resp.n_jobs = n;
    resp.jobs = bp;
    *out_len = grist__v1__list_jobs_response__get_packed_size(&resp);
    *out = malloc(*out_len ? *out_len : 1);
    if (*out)
        grist__v1__list_jobs_response__pack(&resp, *out);
    free(b), free(bp);
    return *out ? GRPC_STATUS_OK : GRPC_STATUS_RESOURCE_EXHAUSTED;
}

int grist__job_response_fill(const struct grist_job *j, struct grist_job_response *jr)
{
    const uint32_t G = j->ngroups;
    memset(jr, 0, sizeof(*jr));
    grist__job_brief(j, &jr->brief);
    Grist__V1__GroupState *gs = jr->gs = calloc(G, sizeof(*gs));
    Grist__V1__GroupState **gp = jr->gp = calloc(G, sizeof(*gp));
    Grist__V1__FamilyDiagnostics *fd = jr->fd = calloc(G, sizeof(*fd));
    if (!gs || !gp || !fd) {
        grist__job_response_release(jr);
        return -ENOMEM;
    }
    for (uint32_t g = 0; g < G; g++) {
        Grist__V1__GroupState *s = &gs[g];
        grist__v1__group_state__init(s);
        grist__v1__family_diagnostics__init(&fd[g]);
        s->name = j->groups[g].name;
        s->momentum = grist__job_momentum(j, g);
        s->lr_scale = grist__job_lr_scale(j, g);
        s->num_elements = j->groups[g].n;
        s->sketch_sample = j->groups[g].sample;
        if (j->last) {
            struct grist_engine_group_result *r = &j->last->groups[g];
            s->n_candidates = s->n_alignment = s->n_alignment_se = r->ncand;
            s->candidates = r->cand;
            s->alignment = r->J;
            s->alignment_se = r->J_se;
            s->noise = r->choice.noise;
            s->noise_scale = r->choice.noise_scale;
            s->steps = r->steps;
            s->reason = r->reason;
            s->curvature = r->choice.kappa;
            s->lr_greedy = r->choice.lr_greedy;
            s->confidence = r->choice.confidence;
            if (r->have_families) {
                const struct grist_families *f = &r->fam;
                fd[g].trace = f->trace;
                fd[g].frobenius = f->frobenius;
                fd[g].trace_sqrt = f->trace_sqrt;
                fd[g].lambda_max = f->lambda_max;
                fd[g].effective_rank = f->effective_rank;
                fd[g].value_frobenius = f->value_frobenius;
                fd[g].value_spectral = f->value_spectral;
                fd[g].value_isotropic = f->value_isotropic;
                fd[g].value_lyapunov = f->value_lyapunov;
                fd[g].value_whitened = f->value_whitened;
                fd[g].value_diagonal = f->value_diagonal;
                s->families = &fd[g];
            }
        }
        gp[g] = s;
    }
    grist__v1__get_job_response__init(&jr->resp);
    jr->resp.job = &jr->brief;
    jr->resp.n_groups = G;
    jr->resp.groups = gp;
    return 0;
}

void grist__job_response_release(struct grist_job_response *jr)
{
    free(jr->gs), free(jr->gp), free(jr->fd);
    jr->gs = NULL, jr->gp = NULL, jr->fd = NULL;
}

uint8_t *grist__job_response_encode(const struct grist_job *j, size_t *out_len)
{
    struct grist_job_response jr;
    if (grist__job_response_fill(j, &jr) < 0)
        return NULL;
    *out_len = grist__v1__get_job_response__get_packed_size(&jr.resp);
    uint8_t *out = malloc(*out_len ? *out_len : 1);
    if (out)
        grist__v1__get_job_response__pack(&jr.resp, out);
    grist__job_response_release(&jr);
    return out;
}

static grpc_status_code get_job(struct grist_net *net, const struct grist_principal *who,
                                const unsigned char *in, size_t in_len, unsigned char **out,
                                size_t *out_len, char *msg, size_t msz)
{
    struct grist_daemon *d = grist__daemon_of(net);
    Grist__V1__GetJobRequest *req = grist__v1__get_job_request__unpack(NULL, in_len, in);
    if (!req) {
        snprintf(msg, msz, "GetJobRequest does not decode");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    grpc_status_code st = may_read(d, who, req->job_id ? req->job_id : "", msg, msz);
    if (st != GRPC_STATUS_OK) {
        grist__v1__get_job_request__free_unpacked(req, NULL);
        return st;
    }
    struct grist_job *j = grist__job_find(d, req->job_id ? req->job_id : "");
    if (!j) {
        snprintf(msg, msz, "job_id: no job '%.128s'", req->job_id ? req->job_id : "");
        grist__v1__get_job_request__free_unpacked(req, NULL);
        return GRPC_STATUS_NOT_FOUND;
    }
    grist__v1__get_job_request__free_unpacked(req, NULL);
    *out = grist__job_response_encode(j, out_len);
    return *out ? GRPC_STATUS_OK : GRPC_STATUS_RESOURCE_EXHAUSTED;
}

/* ---- WatchJob: a server stream of GetJobResponse, one per evaluation ---- */

struct grist_watch {
    struct grist_tag recv_tag, send_tag, close_tag;
    struct grist_daemon *d;
    grpc_call *call;
    struct grist_watch *next; /* d->watches */
    char job[GRIST_JOB_ID_MAX + 1];
    struct grist_principal who;
    grpc_byte_buffer *recv_buf, *send_buf;
    int refs, md_sent, closed, cancelled, finishing, send_in_flight, status_in_flight;
    int dirty; /* a newer state exists than the one in flight */
    grpc_status_code code;
    grpc_slice details;
    int details_set;
};

#define WATCH_OF(tag, member)                                                                      \
    ((struct grist_watch *)((char *)(tag)-offsetof(struct grist_watch, member)))

static void watch_unlink(struct grist_watch *w)
{
    for (struct grist_watch **p = &w->d->watches; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            return;
        }
}

static void watch_maybe_free(struct grist_watch *w)
{
    if (w->refs > 0)
        return;
    watch_unlink(w);
    if (w->recv_buf)
        grpc_byte_buffer_destroy(w->recv_buf);
    if (w->send_buf)
        grpc_byte_buffer_destroy(w->send_buf);
    if (w->details_set)
        grpc_slice_unref(w->details);
    grpc_call_unref(w->call);
    w->d->net.live_calls--;
    free(w);
}

static void watch_batch(struct grist_watch *w, grpc_op *ops, size_t n)
{
    w->refs++;
    w->send_in_flight = 1;
    if (grpc_call_start_batch(w->call, ops, n, &w->send_tag, NULL) != GRPC_CALL_OK) {
        w->refs--;
        w->send_in_flight = 0;
        grpc_call_cancel(w->call, NULL);
    }
}

static void watch_send_status(struct grist_watch *w)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!w->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        w->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = w->code;
    ops[n++].data.send_status_from_server.status_details = &w->details;
    w->status_in_flight = 1;
    watch_batch(w, ops, n);
}

static void watch_finish(struct grist_watch *w, grpc_status_code code, const char *msg)
{
    if (w->finishing)
        return;
    w->finishing = 1;
    w->code = code;
    w->details = grpc_slice_from_copied_string(msg);
    w->details_set = 1;
    if (!w->send_in_flight && !w->closed)
        watch_send_status(w);
}

static void watch_send_state(struct grist_watch *w)
{
    struct grist_job *j = grist__job_find(w->d, w->job);
    if (!j) {
        watch_finish(w, GRPC_STATUS_OK, "the job ended");
        return;
    }
    size_t len;
    uint8_t *buf = grist__job_response_encode(j, &len);
    if (!buf) {
        w->dirty = 1; /* try at the next evaluation */
        return;
    }
    w->send_buf = grist__bb_from(buf, len);
    free(buf);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!w->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        w->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = w->send_buf;
    w->dirty = 0;
    watch_batch(w, ops, n);
}

static void watch_on_send(struct grist_tag *tag, int ok)
{
    struct grist_watch *w = WATCH_OF(tag, send_tag);
    w->refs--;
    w->send_in_flight = 0;
    if (w->send_buf) {
        grpc_byte_buffer_destroy(w->send_buf);
        w->send_buf = NULL;
    }
    if (w->status_in_flight) {
        w->status_in_flight = 0;
    } else if (!ok) {
        watch_finish(w, GRPC_STATUS_UNAVAILABLE, "send failed");
    } else if (w->finishing) {
        if (!w->closed)
            watch_send_status(w);
    } else if (w->dirty) {
        watch_send_state(w);
    }
    watch_maybe_free(w);
}

static void watch_on_close(struct grist_tag *tag, int ok)
{
    (void)ok;
    struct grist_watch *w = WATCH_OF(tag, close_tag);
    w->refs--;
    w->closed = 1;
    w->finishing = 1;
    watch_unlink(w);
    watch_maybe_free(w);
}

static void watch_on_recv(struct grist_tag *tag, int ok)
{
    struct grist_watch *w = WATCH_OF(tag, recv_tag);
    w->refs--;
    grpc_byte_buffer *bb = w->recv_buf;
    w->recv_buf = NULL;
    if (!ok || !bb) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        watch_finish(w, GRPC_STATUS_INVALID_ARGUMENT, "WatchJob needs a WatchJobRequest");
        watch_maybe_free(w);
        return;
    }
    size_t len;
    uint8_t *buf = grist__bb_read(bb, &len);
    grpc_byte_buffer_destroy(bb);
    Grist__V1__WatchJobRequest *req =
        buf ? grist__v1__watch_job_request__unpack(NULL, len, buf) : NULL;
    free(buf);
    if (!req) {
        watch_finish(w, GRPC_STATUS_INVALID_ARGUMENT, "WatchJobRequest does not decode");
    } else {
        snprintf(w->job, sizeof(w->job), "%s", req->job_id ? req->job_id : "");
        grist__v1__watch_job_request__free_unpacked(req, NULL);
        char msg[200];
        if (may_read(w->d, &w->who, w->job, msg, sizeof(msg)) != GRPC_STATUS_OK) {
            watch_finish(w, GRPC_STATUS_PERMISSION_DENIED, msg);
        } else if (!grist__job_find(w->d, w->job)) {
            snprintf(msg, sizeof(msg), "job_id: no job '%.128s'", w->job);
            watch_finish(w, GRPC_STATUS_NOT_FOUND, msg);
        } else if (w->d->stopping) {
            watch_finish(w, GRPC_STATUS_UNAVAILABLE, "gristd is shutting down");
        } else {
            w->next = w->d->watches;
            w->d->watches = w;
            watch_send_state(w);
        }
    }
    watch_maybe_free(w);
}

static void watch_start(struct grist_net *net, grpc_call *call, const struct grist_principal *who)
{
    struct grist_daemon *d = grist__daemon_of(net);
    struct grist_watch *w = calloc(1, sizeof(*w));
    if (!w) {
        grpc_call_cancel(call, NULL);
        grpc_call_unref(call);
        net->live_calls--;
        return;
    }
    w->d = d;
    w->call = call;
    w->who = *who;
    w->recv_tag.cb = watch_on_recv;
    w->send_tag.cb = watch_on_send;
    w->close_tag.cb = watch_on_close;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &w->cancelled;
    w->refs++;
    if (grpc_call_start_batch(call, &op, 1, &w->close_tag, NULL) != GRPC_CALL_OK) {
        w->refs--;
        watch_maybe_free(w);
        return;
    }
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &w->recv_buf;
    w->refs++;
    if (grpc_call_start_batch(call, &op, 1, &w->recv_tag, NULL) != GRPC_CALL_OK) {
        w->refs--;
        grpc_call_cancel(call, NULL);
    }
}

void grist__watch_notify(struct grist_daemon *d, const struct grist_job *j)
{
    for (struct grist_watch *w = d->watches; w; w = w->next) {
        if (w->finishing || strcmp(w->job, j->id) != 0)
            continue;
        if (w->send_in_flight)
            w->dirty = 1; /* latest wins: the newest state goes after this one */
        else
            watch_send_state(w);
    }
}

void grist__watch_recheck(struct grist_daemon *d)
{
    for (struct grist_watch *w = d->watches, *next; w; w = next) {
        next = w->next;
        if (!w->finishing && !grist__still_allowed(d, &w->who, w->job, GRIST_NEED_READ))
            watch_finish(w, GRPC_STATUS_UNAUTHENTICATED,
                         "the token of this watch was revoked or no longer covers its job");
    }
}

void grist__watch_finish_all(struct grist_daemon *d, const char *job)
{
    for (struct grist_watch *w = d->watches; w; w = w->next)
        if (!job || strcmp(w->job, job) == 0)
            watch_finish(w, job ? GRPC_STATUS_OK : GRPC_STATUS_UNAVAILABLE,
                         job ? "the job ended" : "gristd is shutting down");
}

int grist__series_index(const char *s)
{
    static const char *const names[] = {"momentum", "lr_scale", "noise", "noise_scale",
                                        "confidence"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static double series_value(const struct grist_history_point *p, int k)
{
    switch (k) {
    case 0:
        return p->momentum;
    case 1:
        return p->lr_scale;
    case 2:
        return p->noise;
    case 3:
        return p->noise_scale;
    default:
        return p->confidence;
    }
}

int grist__history(const struct grist_job *j, uint32_t group, const char *series, uint64_t from,
                   uint64_t to, size_t points, uint64_t **steps_out, double **vals_out,
                   size_t *n_out)
{
    if (group >= j->ngroups)
        return -ENOENT;
    const int k = grist__series_index(series && series[0] ? series : "momentum");
    if (k < 0)
        return -EINVAL;
    const struct grist_history *h = &j->history[group];
    if (to == 0)
        to = UINT64_MAX;
    double *x = malloc((h->len + 1) * sizeof(double)), *y = malloc((h->len + 1) * sizeof(double));
    size_t *idx = malloc((h->len + 1) * sizeof(size_t));
    int r = -ENOMEM;
    if (!x || !y || !idx)
        goto done;
    size_t n = 0;
    for (uint32_t i = 0; i < h->len; i++) {
        const struct grist_history_point *p = &h->pts[(h->head + i) % h->cap];
        if (p->step < from || p->step > to)
            continue;
        x[n] = (double)p->step;
        y[n] = series_value(p, k);
        n++;
    }
    const size_t kept = grist__lttb(x, y, n, points ? points : 500, idx);
    uint64_t *steps = malloc((kept + 1) * sizeof(uint64_t));
    double *vals = malloc((kept + 1) * sizeof(double));
    if (!steps || !vals) {
        free(steps), free(vals);
        goto done;
    }
    for (size_t i = 0; i < kept; i++) {
        steps[i] = (uint64_t)x[idx[i]];
        vals[i] = y[idx[i]];
    }
    *steps_out = steps;
    *vals_out = vals;
    *n_out = kept;
    r = 0;
done:
    free(x), free(y), free(idx);
    return r;
}

static grpc_status_code get_history(struct grist_net *net, const struct grist_principal *who,
                                    const unsigned char *in, size_t in_len, unsigned char **out,
                                    size_t *out_len, char *msg, size_t msz)
{
    struct grist_daemon *d = grist__daemon_of(net);
    Grist__V1__GetHistoryRequest *req = grist__v1__get_history_request__unpack(NULL, in_len, in);
    if (!req) {
        snprintf(msg, msz, "GetHistoryRequest does not decode");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    grpc_status_code code = may_read(d, who, req->job_id ? req->job_id : "", msg, msz);
    struct grist_job *j =
        code == GRPC_STATUS_OK ? grist__job_find(d, req->job_id ? req->job_id : "") : NULL;
    uint64_t *steps = NULL;
    double *vals = NULL;
    size_t kept = 0;
    int r;
    if (code != GRPC_STATUS_OK) {
        /* msg filled */
    } else if (!j) {
        snprintf(msg, msz, "job_id: no job '%.128s'", req->job_id ? req->job_id : "");
        code = GRPC_STATUS_NOT_FOUND;
    } else if ((r = grist__history(j, req->group, req->series, req->from_step, req->to_step,
                                   req->points, &steps, &vals, &kept)) == -ENOENT) {
        snprintf(msg, msz, "group: %u is not below the job's %u groups", req->group, j->ngroups);
        code = GRPC_STATUS_INVALID_ARGUMENT;
    } else if (r == -EINVAL) {
        snprintf(msg, msz,
                 "series: '%.64s' is not momentum, lr_scale, noise, noise_scale or confidence",
                 req->series);
        code = GRPC_STATUS_INVALID_ARGUMENT;
    } else if (r < 0) {
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    } else {
        Grist__V1__GetHistoryResponse resp = GRIST__V1__GET_HISTORY_RESPONSE__INIT;
        resp.n_steps = resp.n_values = kept;
        resp.steps = steps;
        resp.values = vals;
        *out_len = grist__v1__get_history_response__get_packed_size(&resp);
        *out = malloc(*out_len ? *out_len : 1);
        if (*out)
            grist__v1__get_history_response__pack(&resp, *out);
        else
            code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    grist__v1__get_history_request__free_unpacked(req, NULL);
    free(steps), free(vals);
    return code;
}

int grist__query_method(const char *method)
{
    return strcmp(method, "/grist.v1.Grist/ListJobs") == 0 ||
        strcmp(method, "/grist.v1.Grist/GetJob") == 0 ||
        strcmp(method, "/grist.v1.Grist/GetHistory") == 0 ||
        strcmp(method, "/grist.v1.Grist/WatchJob") == 0;
}

void grist__query_call(struct grist_net *net, grpc_call *call, const char *method,
                       const struct grist_principal *who)
{
    if (strcmp(method, "/grist.v1.Grist/ListJobs") == 0)
        grist__unary_start(net, call, list_jobs, who);
    else if (strcmp(method, "/grist.v1.Grist/GetJob") == 0)
        grist__unary_start(net, call, get_job, who);
    else if (strcmp(method, "/grist.v1.Grist/WatchJob") == 0)
        watch_start(net, call, who);
    else
        grist__unary_start(net, call, get_history, who);
}
