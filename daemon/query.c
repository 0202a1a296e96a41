/*
 * DESIGN: the query API for dashboards (ListJobs, GetJob, GetHistory).
 * Unary calls answered on the loop thread from the job registry; histories
 * are downsampled on the server with largest-triangle-three-buckets so a
 * long run answers in bounded time and size. Loop thread.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grist/v1/grist.pb-c.h"
#include "jobs.h"
#include "log.h"

static void brief(const struct grist_job *j, Grist__V1__JobBrief *b)
{
    grist__v1__job_brief__init(b);
    b->job_id = (char *)j->id;
    b->world_size = j->world;
    b->live_workers = j->nstreams;
    b->step = j->high_step;
    b->version = j->version;
}

static grpc_status_code list_jobs(struct grist_net *net, const unsigned char *in, size_t in_len,
                                  unsigned char **out, size_t *out_len, char *msg, size_t msz)
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
    for (struct grist_job *j = d->jobs; j; j = j->next, n++) {
        brief(j, &b[n]);
        bp[n] = &b[n];
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

static grpc_status_code get_job(struct grist_net *net, const unsigned char *in, size_t in_len,
                                unsigned char **out, size_t *out_len, char *msg, size_t msz)
{
    struct grist_daemon *d = grist__daemon_of(net);
    Grist__V1__GetJobRequest *req = grist__v1__get_job_request__unpack(NULL, in_len, in);
    if (!req) {
        snprintf(msg, msz, "GetJobRequest does not decode");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    struct grist_job *j = grist__job_find(d, req->job_id ? req->job_id : "");
    if (!j) {
        snprintf(msg, msz, "job_id: no job '%.128s'", req->job_id ? req->job_id : "");
        grist__v1__get_job_request__free_unpacked(req, NULL);
        return GRPC_STATUS_NOT_FOUND;
    }
    grist__v1__get_job_request__free_unpacked(req, NULL);
    const uint32_t G = j->ngroups;
    Grist__V1__JobBrief b;
    brief(j, &b);
    Grist__V1__GroupState *gs = calloc(G, sizeof(*gs));
    Grist__V1__GroupState **gp = calloc(G, sizeof(*gp));
    Grist__V1__FamilyDiagnostics *fd = calloc(G, sizeof(*fd));
    if (!gs || !gp || !fd) {
        free(gs), free(gp), free(fd);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    for (uint32_t g = 0; g < G; g++) {
        Grist__V1__GroupState *s = &gs[g];
        grist__v1__group_state__init(s);
        grist__v1__family_diagnostics__init(&fd[g]);
        s->name = j->groups[g].name;
        s->momentum = j->version ? j->push[g].momentum : j->groups[g].beta0;
        s->lr_scale = j->version ? j->push[g].lr_scale : 1.0;
        if (j->last) {
            struct grist_engine_group_result *r = &j->last->groups[g];
            s->n_candidates = s->n_alignment = s->n_alignment_se = r->ncand;
            s->candidates = r->cand;
            s->alignment = r->J;
            s->alignment_se = r->J_se;
            s->noise = r->choice.noise;
            s->noise_scale = r->choice.noise_scale;
            s->steps = r->steps;
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
    Grist__V1__GetJobResponse resp = GRIST__V1__GET_JOB_RESPONSE__INIT;
    resp.job = &b;
    resp.n_groups = G;
    resp.groups = gp;
    *out_len = grist__v1__get_job_response__get_packed_size(&resp);
    *out = malloc(*out_len ? *out_len : 1);
    if (*out)
        grist__v1__get_job_response__pack(&resp, *out);
    free(gs), free(gp), free(fd);
    return *out ? GRPC_STATUS_OK : GRPC_STATUS_RESOURCE_EXHAUSTED;
}

static int series_index(const char *s)
{
    static const char *const names[] = {"momentum", "lr_scale", "noise", "noise_scale",
                                        "confidence"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static double series_value(const struct grist_hist_point *p, int k)
{
    switch (k) {
    case 0: return p->momentum;
    case 1: return p->lr_scale;
    case 2: return p->noise;
    case 3: return p->noise_scale;
    default: return p->confidence;
    }
}

/* Largest-triangle-three-buckets: keep `points` of n (x, y) pairs; writes
 * the kept indices to idx and returns their count. */
static size_t lttb(const double *x, const double *y, size_t n, size_t points, size_t *idx)
{
    if (points >= n || points < 3) {
        size_t k = points < 3 && points < n ? points : n;
        if (k == n)
            for (size_t i = 0; i < n; i++)
                idx[i] = i;
        else /* 1 or 2 points: first (and last) */
            for (size_t i = 0; i < k; i++)
                idx[i] = i == 0 ? 0 : n - 1;
        return k;
    }
    const double every = (double)(n - 2) / (double)(points - 2);
    size_t a = 0, out = 0;
    idx[out++] = 0;
    for (size_t i = 0; i < points - 2; i++) {
        size_t s = (size_t)floor((i + 1) * every) + 1, e = (size_t)floor((i + 2) * every) + 1;
        if (e > n)
            e = n;
        double ax = 0, ay = 0;
        for (size_t k = s; k < e; k++)
            ax += x[k], ay += y[k];
        const double cnt = (double)(e - s);
        ax /= cnt > 0 ? cnt : 1;
        ay /= cnt > 0 ? cnt : 1;
        size_t rs = (size_t)floor(i * every) + 1, re = (size_t)floor((i + 1) * every) + 1;
        double best = -1;
        size_t pick = rs;
        for (size_t k = rs; k < re && k < n; k++) {
            const double area = fabs((x[a] - ax) * (y[k] - y[a]) - (x[a] - x[k]) * (ay - y[a]));
            if (area > best) {
                best = area;
                pick = k;
            }
        }
        idx[out++] = pick;
        a = pick;
    }
    idx[out++] = n - 1;
    return out;
}

static grpc_status_code get_history(struct grist_net *net, const unsigned char *in, size_t in_len,
                                    unsigned char **out, size_t *out_len, char *msg, size_t msz)
{
    struct grist_daemon *d = grist__daemon_of(net);
    Grist__V1__GetHistoryRequest *req = grist__v1__get_history_request__unpack(NULL, in_len, in);
    if (!req) {
        snprintf(msg, msz, "GetHistoryRequest does not decode");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    grpc_status_code code = GRPC_STATUS_OK;
    struct grist_job *j = grist__job_find(d, req->job_id ? req->job_id : "");
    int k = series_index(req->series && req->series[0] ? req->series : "momentum");
    double *x = NULL, *y = NULL;
    size_t *idx = NULL;
    uint64_t *steps = NULL;
    double *vals = NULL;
    if (!j) {
        snprintf(msg, msz, "job_id: no job '%.128s'", req->job_id ? req->job_id : "");
        code = GRPC_STATUS_NOT_FOUND;
        goto done;
    }
    if (req->group >= j->ngroups) {
        snprintf(msg, msz, "group: %u is not below the job's %u groups", req->group, j->ngroups);
        code = GRPC_STATUS_INVALID_ARGUMENT;
        goto done;
    }
    if (k < 0) {
        snprintf(msg, msz, "series: '%.64s' is not momentum, lr_scale, noise, noise_scale or confidence",
                 req->series);
        code = GRPC_STATUS_INVALID_ARGUMENT;
        goto done;
    }
    const struct grist_hist *h = &j->hist[req->group];
    const uint64_t to = req->to_step ? req->to_step : UINT64_MAX;
    x = malloc((h->len + 1) * sizeof(double));
    y = malloc((h->len + 1) * sizeof(double));
    idx = malloc((h->len + 1) * sizeof(size_t));
    if (!x || !y || !idx) {
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        goto done;
    }
    size_t n = 0;
    for (uint32_t i = 0; i < h->len; i++) {
        const struct grist_hist_point *p = &h->pts[(h->head + i) % h->cap];
        if (p->step < req->from_step || p->step > to)
            continue;
        x[n] = (double)p->step;
        y[n] = series_value(p, k);
        n++;
    }
    const size_t want = req->points ? req->points : 500;
    const size_t kept = lttb(x, y, n, want, idx);
    steps = malloc((kept + 1) * sizeof(uint64_t));
    vals = malloc((kept + 1) * sizeof(double));
    if (!steps || !vals) {
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        goto done;
    }
    for (size_t i = 0; i < kept; i++) {
        steps[i] = (uint64_t)x[idx[i]];
        vals[i] = y[idx[i]];
    }
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
done:
    grist__v1__get_history_request__free_unpacked(req, NULL);
    free(x), free(y), free(idx), free(steps), free(vals);
    return code;
}

int grist__query_method(const char *method)
{
    return strcmp(method, "/grist.v1.Grist/ListJobs") == 0 ||
           strcmp(method, "/grist.v1.Grist/GetJob") == 0 ||
           strcmp(method, "/grist.v1.Grist/GetHistory") == 0;
}

void grist__query_call(struct grist_net *net, grpc_call *call, const char *method)
{
    if (strcmp(method, "/grist.v1.Grist/ListJobs") == 0)
        grist__unary_start(net, call, list_jobs);
    else if (strcmp(method, "/grist.v1.Grist/GetJob") == 0)
        grist__unary_start(net, call, get_job);
    else
        grist__unary_start(net, call, get_history);
}
