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
#include "publish.h"
#include "query.h"

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
static int may_read(struct grist_daemon *d, const struct grist_principal *who, const char *id,
                    char *msg, size_t msz)
{
    if (grist__auth_allows(who, GRIST_NEED_READ, id))
        return 0;
    d->cnt.auth_denied++;
    snprintf(msg, msz, "job_id: this token (tokens file line %u, %s) does not cover the job",
             who->line, grist__role_name(who->role));
    return -EPERM;
}

/* ListJobs' reply: the briefs and their pointers, freed by release. */
struct list_reply {
    Grist__V1__ListJobsResponse resp;
    Grist__V1__JobBrief *b, **bp;
};

static void list_release(struct grist_reply *rep)
{
    struct list_reply *l = rep->data;
    free(l->b), free(l->bp), free(l);
}

int grist__query_list_jobs(void *ud, const struct grist_principal *who, const ProtobufCMessage *req,
                           struct grist_reply *rep)
{
    (void)req; /* ListJobsRequest has no fields */
    struct grist_daemon *d = ud;
    struct list_reply *l = calloc(1, sizeof(*l));
    if (l) {
        l->b = calloc(d->njobs + 1, sizeof(*l->b));
        l->bp = calloc(d->njobs + 1, sizeof(*l->bp));
    }
    if (!l || !l->b || !l->bp) {
        if (l)
            free(l->b), free(l->bp), free(l);
        return -ENOMEM;
    }
    size_t n = 0;
    for (struct grist_job *j = d->jobs; j; j = j->next) {
        if (!grist__auth_allows(who, GRIST_NEED_READ, j->id))
            continue; /* a reader sees only the jobs its token covers */
        grist__job_brief(j, &l->b[n]);
        l->bp[n] = &l->b[n];
        n++;
    }
    grist__v1__list_jobs_response__init(&l->resp);
    l->resp.n_jobs = n;
    l->resp.jobs = l->bp;
    rep->msg = &l->resp.base;
    rep->data = l;
    rep->release = list_release;
    return 0;
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

/* The job named by a request that the caller may read. @return 0; -EPERM;
 * -ENOENT (rep->err says why). */
static int readable_job(struct grist_daemon *d, const struct grist_principal *who, const char *id,
                        struct grist_job **out, char *msg, size_t msz)
{
    id = id ? id : "";
    const int r = may_read(d, who, id, msg, msz);
    if (r < 0)
        return r;
    if (!(*out = grist__job_find(d, id))) {
        snprintf(msg, msz, "job_id: no job '%.128s'", id);
        return -ENOENT;
    }
    grist__job_mark_read(*out);
    return 0;
}

static void job_release(struct grist_reply *rep)
{
    grist__job_response_release(rep->data);
    free(rep->data);
}

int grist__query_get_job(void *ud, const struct grist_principal *who, const ProtobufCMessage *req,
                         struct grist_reply *rep)
{
    const Grist__V1__GetJobRequest *q = (const Grist__V1__GetJobRequest *)req;
    struct grist_job *j;
    int r = readable_job(ud, who, q->job_id, &j, rep->err, sizeof(rep->err));
    if (r < 0)
        return r;
    struct grist_job_response *jr = malloc(sizeof(*jr));
    if (!jr || grist__job_response_fill(j, jr) < 0) {
        free(jr);
        return -ENOMEM;
    }
    rep->msg = &jr->resp.base;
    rep->data = jr;
    rep->release = job_release;
    return 0;
}

/* ---- WatchJob: a server stream of GetJobResponse, one per evaluation ---- */

struct grist_watch {
    struct grist_call *call; /* the watch lives exactly as long as its call */
    struct grist_daemon *d;
    struct grist_watch *next, *prev; /* d->watches */
    struct grist_sub sub; /* on its job, once the request named one */
    struct grist_principal who;
    char job[GRIST_JOB_ID_MAX + 1];
};

#define WATCH_OF_SUB(p) ((struct grist_watch *)((char *)(p)-offsetof(struct grist_watch, sub)))

static void watch_finish(struct grist_watch *w, int err, const char *msg)
{
    grist__call_finish(w->call, err, msg);
}

/* The job's state now; latest wins (rpc.c keeps at most one waiting). */
static void watch_send_state(struct grist_watch *w, const struct grist_job *j)
{
    size_t len;
    uint8_t *buf = grist__job_response_encode(j, &len);
    if (!buf)
        return; /* the next evaluation brings a newer one */
    grist__call_send(w->call, buf, len);
    free(buf);
}

static void watch_on_state(struct grist_sub *sub, const struct grist_job *j)
{
    struct grist_watch *w = WATCH_OF_SUB(sub);
    if (!grist__call_finishing(w->call)) {
        grist__job_mark_read(sub->job); /* a watch reads every evaluation */
        watch_send_state(w, j);
    }
}

static void watch_on_gone(struct grist_sub *sub)
{
    watch_finish(WATCH_OF_SUB(sub), 0, "the job ended");
}

static void watch_on_end(struct grist_call *c, void *ud)
{
    (void)c;
    struct grist_watch *w = ud;
    grist__publish_leave(&w->sub);
    if (w->prev)
        w->prev->next = w->next;
    else
        w->d->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    free(w);
}

static void watch_on_message(struct grist_call *c, void *ud, const uint8_t *buf, size_t len)
{
    struct grist_watch *w = ud;
    if (w->job[0] || w->sub.job) /* one request only: what follows is not read */
        return;
    Grist__V1__WatchJobRequest *req =
        buf ? grist__v1__watch_job_request__unpack(NULL, len, buf) : NULL;
    if (!buf) {
        watch_finish(w, -EINVAL, "WatchJob needs a WatchJobRequest");
        return;
    }
    if (!req) {
        watch_finish(w, -EINVAL, "WatchJobRequest does not decode");
        return;
    }
    char msg[200];
    struct grist_job *j;
    const int r = readable_job(w->d, &w->who, req->job_id, &j, msg, sizeof(msg));
    grist__v1__watch_job_request__free_unpacked(req, NULL);
    if (r < 0) {
        watch_finish(w, r, msg);
    } else if (w->d->stopping) {
        watch_finish(w, -ESHUTDOWN, "gristd is shutting down");
    } else {
        snprintf(w->job, sizeof(w->job), "%s", j->id);
        w->sub.on_state = watch_on_state;
        w->sub.on_gone = watch_on_gone;
        grist__publish_join(j, &w->sub);
        watch_send_state(w, j);
    }
    (void)c;
}

static const struct grist_call_ops watch_ops = {watch_on_message, watch_on_end, NULL};

void grist__query_watch_job(void *ud, struct grist_call *c, const struct grist_principal *who)
{
    struct grist_daemon *d = ud;
    struct grist_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return; /* unbound: rpc.c ends the call */
    w->d = d;
    w->call = c;
    w->who = *who;
    grist__call_bind(c, &watch_ops, w);
    w->next = d->watches;
    if (d->watches)
        d->watches->prev = w;
    d->watches = w;
    grist__call_recv(c);
}

void grist__watch_recheck(struct grist_daemon *d)
{
    for (struct grist_watch *w = d->watches; w; w = w->next)
        if (w->job[0] && !grist__call_finishing(w->call) &&
            !grist__auth_still_allowed(d->auth, &w->who, w->job, GRIST_NEED_READ))
            watch_finish(w, -EACCES,
                         "the token of this watch was revoked or no longer covers its job");
}

void grist__watch_finish_all(struct grist_daemon *d)
{
    for (struct grist_watch *w = d->watches; w; w = w->next)
        watch_finish(w, -ESHUTDOWN, "gristd is shutting down");
}

int grist__series_index(const char *s)
{
    static const char *const names[] = {"momentum", "lr_scale", "noise", "noise_scale",
                                        "confidence"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -EINVAL;
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
        const struct grist_history_point *p = &h->pts[i];
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

struct history_reply {
    Grist__V1__GetHistoryResponse resp;
    uint64_t *steps;
    double *vals;
};

static void history_release(struct grist_reply *rep)
{
    struct history_reply *h = rep->data;
    free(h->steps), free(h->vals), free(h);
}

int grist__query_get_history(void *ud, const struct grist_principal *who,
                             const ProtobufCMessage *req, struct grist_reply *rep)
{
    const Grist__V1__GetHistoryRequest *q = (const Grist__V1__GetHistoryRequest *)req;
    struct grist_job *j;
    int r = readable_job(ud, who, q->job_id, &j, rep->err, sizeof(rep->err));
    if (r < 0)
        return r;
    struct history_reply *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    size_t kept = 0;
    r = grist__history(j, q->group, q->series, q->from_step, q->to_step, q->points, &h->steps,
                       &h->vals, &kept);
    if (r == -ENOENT) {
        snprintf(rep->err, sizeof(rep->err), "group: %u is not below the job's %u groups", q->group,
                 j->ngroups);
        r = -EINVAL;
    } else if (r == -EINVAL) {
        snprintf(rep->err, sizeof(rep->err),
                 "series: '%.64s' is not momentum, lr_scale, noise, noise_scale or confidence",
                 q->series);
    }
    if (r < 0) {
        free(h);
        return r;
    }
    grist__v1__get_history_response__init(&h->resp);
    h->resp.n_steps = h->resp.n_values = kept;
    h->resp.steps = h->steps;
    h->resp.values = h->vals;
    rep->msg = &h->resp.base;
    rep->data = h;
    rep->release = history_release;
    return 0;
}
