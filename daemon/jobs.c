/*
 * DESIGN: the job registry and per-step aggregation. Loop thread only.
 *
 * A job is created by the first Hello naming it; its shape (groups, element
 * counts, sketch dim) is fixed then, while its world size follows the newest
 * Hello (a job can grow or shrink). Summaries are filed under (job, step);
 * a step is aggregated (mean sketch, sum of the workers' |s_w|^2, batch) and
 * queued to the compute thread when every rank reported or when
 * aggregation-timeout passed since its first report. A summary for a step
 * already aggregated is late: counted and ignored, the stream stays up.
 * A step more than 2 * MAX_OPEN_STEPS behind the newest aggregated one is a
 * run resumed from an earlier step: a new segment, counted, whose steps
 * count again. A step more than max-step-jump ahead of the newest known one
 * is refused (INVALID_ARGUMENT): one summary with step 2^64-1 would
 * otherwise make every later step late.
 * Evaluations coming back from the engine feed the history rings and, when
 * a group's values change, a new Hyperparams version that goes to every
 * live stream of the job (latest-wins per stream). A job without streams
 * expires after idle-expiry.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grist/error.h"
#include "grist/sketch.h"
#include "grist/shard.h"
#include "grist/stats.h"
#include "jobs.h"
#include "log.h"

#define MAX_OPEN_STEPS 64

/* --shard I/N and --shard-peers A0,A1,... */
static int configure_shards(struct grist_daemon *d, const struct grist_config *c)
{
    d->shard_i = 0;
    d->shard_n = 0;
    if (!c->shard[0]) {
        if (c->shard_peers[0]) {
            fprintf(stderr, "gristd: --shard-peers needs --shard I/N\n");
            return -EINVAL;
        }
        return 0;
    }
    unsigned i, n;
    char tail;
    if (sscanf(c->shard, "%u/%u%c", &i, &n, &tail) != 2 || n < 1 || n > GRIST_MAX_SHARDS ||
        i >= n) {
        fprintf(stderr, "gristd: --shard '%s': expected I/N with 0 <= I < N <= %d\n", c->shard,
                GRIST_MAX_SHARDS);
        return -EINVAL;
    }
    d->shard_i = i;
    d->shard_n = n;
    if (!c->shard_peers[0])
        return 0;
    d->shard_peers_buf = strdup(c->shard_peers);
    if (!d->shard_peers_buf)
        return -EINVAL;
    unsigned k = 0, extra = 0;
    char *save = NULL;
    for (char *a = strtok_r(d->shard_peers_buf, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        if (k == n)
            extra++;
        else
            d->shard_peer[k++] = a;
    }
    if (k + extra != n) {
        fprintf(stderr, "gristd: --shard-peers: %u addresses for %u shards\n", k + extra, n);
        return -EINVAL;
    }
    return 0;
}

int grist__daemon_configure(struct grist_daemon *d, const struct grist_config *c)
{
    d->cfg = c;
    if (configure_shards(d, c) < 0)
        return -EINVAL;
    d->limits.max_groups = (uint32_t)c->max_groups;
    d->limits.max_workers = (uint32_t)c->max_workers;
    d->limits.max_sketch_dim = (uint32_t)c->max_sketch_dim;
    struct grist_job_policy *p = &d->defaults;
    memset(p, 0, sizeof(*p));
    grist_policy_default(&p->sel);
    if (grist_mode_parse(c->mode, &p->sel.mode) < 0 ||
        grist_noise_parse(c->noise_correction, &p->sel.noise) < 0 ||
        grist_coupling_parse(c->lr_coupling, &p->sel.coupling) < 0 ||
        grist_select_on_parse(c->select_on, &p->sel.select_on) < 0 ||
        grist_rule_parse(c->rule, &p->sel.rule) < 0) {
        fprintf(
            stderr,
            "gristd: bad --mode, --noise-correction, --lr-coupling, --select-on or --rule (see --help)\n");
        return -EINVAL;
    }
    if (c->beta_min > c->beta_max) {
        fprintf(stderr, "gristd: --beta-min is above --beta-max\n");
        return -EINVAL;
    }
    if (c->cov_dim != 0 && (c->cov_dim < 8 || (c->cov_dim & (c->cov_dim - 1)) != 0)) {
        fprintf(stderr, "gristd: --cov-dim must be 0 or a power of two >= 8\n");
        return -EINVAL;
    }
    p->sel.beta_min = c->beta_min;
    p->sel.beta_max = c->beta_max;
    p->sel.min_steps = (uint32_t)c->min_steps;
    p->sel.z = c->hysteresis_z;
    p->sel.j_ema = c->j_ema;
    p->sel.h = (uint32_t)c->hysteresis_h;
    p->sel.z_fast = c->hysteresis_z_fast;
    p->sel.horizon_step = c->horizon_step;
    p->solve_every = (uint32_t)c->solve_every;
    p->families_every = (uint32_t)c->families_every;
    p->gamma = c->ema_gamma;
    p->ncand = grist_candidates_default(0.0, 0.9999, p->cand);
    return 0;
}

void grist__job_mark_read(struct grist_job *j)
{
    j->share.read_ns = uv_hrtime();
}

struct grist_job *grist__job_find(struct grist_daemon *d, const char *id)
{
    for (struct grist_job *j = d->jobs; j; j = j->next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

const uint8_t *grist__job_current_push(const struct grist_job *j, size_t *len)
{
    *len = j->push_len;
    return j->push_msg;
}

/* acc += s over n elements; returns the sum of s_i^2 in grist_sumsq's
 * order (the one the statistics use for r0, so W equal sketches give a
 * noise of exactly 0). */
static double acc_add(double *restrict acc, const float *restrict s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        acc[i] += s[i];
    return grist_sumsq(s, n);
}

static void agg_free(struct grist_agg *a)
{
    if (!a)
        return;
    free(a->seen);
    free(a->first);
    free(a->sum);
    free(a->sq);
    free(a->batch);
    free(a->lrb);
    free(a);
}

/* The job grew while this step was open (a Hello with a larger world): its
 * rank bits grow with it, the ranks already seen kept. */
static int agg_grow(struct grist_agg *a, uint32_t world)
{
    const size_t have = (a->world + 7) / 8, want = (world + 7) / 8;
    uint8_t *seen = realloc(a->seen, want);
    if (!seen)
        return -ENOMEM;
    memset(seen + have, 0, want - have);
    a->seen = seen;
    a->world = world;
    return 0;
}

void grist__job_free(struct grist_job *j)
{
    while (j->aggs) {
        struct grist_agg *a = j->aggs;
        j->aggs = a->next;
        agg_free(a);
    }
    for (uint32_t g = 0; j->history && g < j->ngroups; g++)
        free(j->history[g].pts);
    free(j->history);
    free(j->groups);
    free(j->push);
    free(j->push_reason);
    free(j->push_msg);
    grist__engine_result_free(j->last);
    free(j);
}

static void unlink_job(struct grist_daemon *d, struct grist_job *j)
{
    for (struct grist_job **p = &d->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            d->njobs--;
            d->stats_bytes -= j->stats_bytes;
            return;
        }
}

/* The memory a job will hold, before any of it is allocated: per group the
 * exact bytes its statistics state allocates (grist_stats_footprint, the
 * configuration the compute thread will build), its history and the
 * double sum of an open step's aggregate. The RSS per group measured
 * against this count is in docs/PERFORMANCE.md (daemon memory). */
static uint64_t job_stats_bytes(const struct grist_daemon *d, const struct grist_job *j,
                                uint32_t cov)
{
    struct grist_stats_config cfg;
    grist_stats_config_default(&cfg);
    cfg.m = j->m;
    cfg.cov_dim = cov;
    cfg.lags = (uint32_t)d->cfg->lags;
    cfg.cov_batch = (uint32_t)d->cfg->cov_batch;
    cfg.gamma = j->policy.gamma;
    cfg.ncand = j->policy.ncand;
    memcpy(cfg.cand, j->policy.cand, cfg.ncand * sizeof(double));
    const size_t stats = grist_stats_footprint(&cfg);
    const uint64_t per = stats + (uint64_t)d->cfg->history * sizeof(struct grist_history_point) +
        (uint64_t)j->m * sizeof(double);
    /* a configuration the kernels refuse is refused later with its own
     * error; count it as the ring and the aggregate only */
    return per * j->ngroups;
}

static uint64_t memory_budget_bytes(const struct grist_daemon *d)
{
    if (d->cfg->memory_budget > 0)
        return (uint64_t)(d->cfg->memory_budget * 1048576.0);
    const long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 2 : UINT64_MAX;
}

static int same_shape(const struct grist_job *j, const struct grist_hello *h, char *err,
                      size_t errsz)
{
    if (h->ngroups != j->ngroups) {
        snprintf(err, errsz, "hello.groups: job '%s' attached with %u groups, not %u", j->id,
                 j->ngroups, h->ngroups);
        return 0;
    }
    if (h->m != j->m) {
        snprintf(err, errsz, "hello.sketch_dim: job '%s' attached with %u, not %u", j->id, j->m,
                 h->m);
        return 0;
    }
    if (h->sketch_kind != j->sketch_kind) {
        snprintf(err, errsz, "hello.sketch_kind: job '%s' attached with the %s sketch, not %s",
                 j->id, grist_sketch_kind_name(j->sketch_kind),
                 grist_sketch_kind_name(h->sketch_kind));
        return 0;
    }
    for (uint32_t g = 0; g < h->ngroups; g++)
        if (h->groups[g].n != j->groups[g].n) {
            snprintf(err, errsz, "hello.groups[%u].num_elements: job '%s' attached with %llu", g,
                     j->id, (unsigned long long)j->groups[g].n);
            return 0;
        } else if (h->groups[g].sample != j->groups[g].sample) {
            snprintf(err, errsz, "hello.groups[%u].sketch_sample: job '%s' attached with %u", g,
                     j->id, j->groups[g].sample);
            return 0;
        }
    return 1;
}

static void complete(struct grist_daemon *d, struct grist_job *j, struct grist_agg *a);

/* The common end of creating a job (a Hello) and restoring one (a
 * snapshot): the memory budget, the compute thread's state, the registry.
 * j is filled; on failure it is freed and err says why. */
static int job_admit(struct grist_daemon *d, struct grist_job *j, const void *restore,
                     size_t restore_len, char *err, size_t errsz)
{
    j->key = ++d->next_key;
    uint32_t cov = (uint32_t)d->cfg->cov_dim;
    /* a fold below the block length would make elements of one run collide
     * (docs/MATH.md section 2.2) */
    if (cov != 0 && j->sketch_kind == GRIST_SKETCH_BLOCK && cov < GRIST_SKETCH_BLOCK_LEN)
        cov = GRIST_SKETCH_BLOCK_LEN;
    if (cov > j->m)
        cov = j->m;
    /* the memory budget, checked before anything is allocated for the statistics */
    j->stats_bytes = job_stats_bytes(d, j, cov);
    const uint64_t budget = memory_budget_bytes(d);
    const uint64_t job_limit = (uint64_t)(d->cfg->job_memory_budget * 1048576.0);
    GRIST_DEBUG(
        "job '%s': statistics about %.1f MiB (%u groups, m %u, K %u); held %.1f of %.1f MiB", j->id,
        (double)j->stats_bytes / 1048576.0, j->ngroups, j->m, j->policy.ncand,
        (double)d->stats_bytes / 1048576.0, (double)budget / 1048576.0);
    const int own = j->stats_bytes > job_limit;
    if (own || d->stats_bytes + j->stats_bytes > budget) {
        snprintf(
            err, errsz,
            own ? "job '%s' needs about %.0f MiB of statistics (%u groups x sketch_dim %u), over "
                  "--job-memory-budget %.0f MiB"
                : "job '%s' needs about %.0f MiB of statistics (%u groups x sketch_dim %u): "
                  "the daemon's --memory-budget of %.0f MiB is used up",
            j->id, (double)j->stats_bytes / 1048576.0, j->ngroups, j->m,
            own ? d->cfg->job_memory_budget : (double)budget / 1048576.0);
        j->stats_bytes = 0;
        grist__job_free(j);
        return -ENOSPC;
    }
    struct grist_engine_job_spec spec = {
        .key = j->key,
        .ngroups = j->ngroups,
        .m = j->m,
        .cov_dim = cov,
        .lags = (uint32_t)d->cfg->lags,
        .cov_batch = (uint32_t)d->cfg->cov_batch,
        .policy = j->policy,
        .groups = j->groups,
        .restore = restore,
        .restore_len = restore_len,
    };
    if (grist__engine_create_job(grist__engine_of(d, j->key), &spec) < 0) {
        snprintf(err, errsz, "out of memory creating job '%s'", j->id);
        grist__job_free(j);
        return -ENOMEM;
    }
    j->next = d->jobs;
    d->jobs = j;
    d->stats_bytes += j->stats_bytes;
    d->njobs++;
    if (!restore)
        d->cnt.jobs_created++;
    GRIST_INFO("job '%s' %s: %u groups, m %u, world %u", j->id, restore ? "restored" : "created",
               j->ngroups, j->m, j->world);
    return 0;
}

/* With tokens, a job belongs to the worker token that created it: the
 * world size, the layout and the right to attach are that token's (an admin
 * token may attach too). Another token, even one whose glob covers the id,
 * cannot join it, resize it or feed it. */
static int owner_denies(const struct grist_job *j, const struct grist_principal *who)
{
    return who->role == GRIST_ROLE_WORKER && j->owned && memcmp(j->owner, who->digest, 32) != 0;
}

/* A worker token takes a job nobody owns: one it creates, or one restored
 * from a snapshot (owners are not in the files). */
static void claim(struct grist_job *j, const struct grist_principal *who)
{
    if (who->role != GRIST_ROLE_WORKER || j->owned)
        return;
    j->owned = 1;
    memcpy(j->owner, who->digest, 32);
    j->owner_line = who->line;
}

int grist__job_attach(struct grist_daemon *d, const struct grist_hello *h,
                      const struct grist_principal *who, struct grist_job **out, char *err,
                      size_t errsz)
{
    if (!grist__auth_allows(who, GRIST_NEED_ATTACH, h->job_id)) {
        d->cnt.auth_denied++;
        snprintf(err, errsz,
                 "hello.job_id: this token (tokens file line %u, %s) may not attach to '%.128s'",
                 who->line, grist__role_name(who->role), h->job_id);
        return -EPERM;
    }
    struct grist_job *j = grist__job_find(d, h->job_id);
    if (j) {
        if (owner_denies(j, who)) {
            d->cnt.auth_denied++;
            snprintf(err, errsz,
                     "hello.job_id: job '%.128s' belongs to another token (tokens file line %u); "
                     "attach with that job's worker token",
                     j->id, j->owner_line);
            return -EPERM;
        }
        if (!same_shape(j, h, err, errsz))
            return -EINVAL;
        claim(j, who); /* only by a Hello that passed every check */
        if (h->world != j->world) {
            GRIST_INFO("job '%s': world size %u -> %u", j->id, j->world, h->world);
            j->world = h->world;
            /* steps already open complete on the new size or on timeout */
        }
        j->nstreams++;
        *out = j;
        return 0;
    }
    if (d->njobs >= (uint32_t)d->cfg->max_jobs) {
        snprintf(err, errsz, "job limit reached (%u jobs); try later or raise --max-jobs",
                 d->njobs);
        return -ENOSPC;
    }
    struct grist_job_policy pol;
    if (grist__policy_merge(&d->defaults, &h->policy, &pol, err, errsz) < 0)
        return -EINVAL;
    j = calloc(1, sizeof(*j));
    if (!j)
        goto nomem;
    snprintf(j->id, sizeof(j->id), "%s", h->job_id);
    claim(j, who);
    j->seed = grist_sketch_job_seed(h->job_id);
    j->world = h->world;
    j->ngroups = h->ngroups;
    j->m = h->m;
    j->sketch_kind = h->sketch_kind;
    j->policy = pol;
    j->created_ms = j->idle_since_ms = grist__now_ms(d);
    j->groups = malloc(h->ngroups * sizeof(*j->groups));
    j->push = calloc(h->ngroups, sizeof(*j->push));
    j->push_reason = calloc(h->ngroups, sizeof(*j->push_reason));
    j->history = calloc(h->ngroups, sizeof(*j->history));
    if (!j->groups || !j->push || !j->push_reason || !j->history)
        goto nomem;
    memcpy(j->groups, h->groups, h->ngroups * sizeof(*j->groups));
    const uint32_t hcap = (uint32_t)d->cfg->history;
    for (uint32_t g = 0; g < h->ngroups; g++) {
        j->history[g].pts = malloc(hcap * sizeof(struct grist_history_point));
        if (!j->history[g].pts)
            goto nomem;
        j->history[g].cap = hcap;
    }
    const int r = job_admit(d, j, NULL, 0, err, errsz);
    if (r < 0)
        return r;
    j->nstreams = 1;
    *out = j;
    return 0;
nomem:
    if (j)
        grist__job_free(j);
    snprintf(err, errsz, "out of memory creating job '%s'", h->job_id);
    return -ENOMEM;
}

int grist__job_restore(struct grist_daemon *d, struct grist_job *j, const void *eng, size_t eng_len,
                       char *err, size_t errsz)
{
    if (grist__job_find(d, j->id)) {
        snprintf(err, errsz, "job '%s' is already known (two state files name it)", j->id);
        grist__job_free(j);
        return -EEXIST;
    }
    if (d->shard_n > 1 && grist_shard_of(j->id, d->shard_n) != d->shard_i) {
        snprintf(err, errsz, "job '%s' belongs to shard %u of %u now, not to this one (%u)", j->id,
                 grist_shard_of(j->id, d->shard_n), d->shard_n, d->shard_i);
        grist__job_free(j);
        return GRIST_ESHARD;
    }
    if (d->njobs >= (uint32_t)d->cfg->max_jobs) {
        snprintf(err, errsz, "job limit reached (%u jobs; --max-jobs)", d->njobs);
        grist__job_free(j);
        return -ENOSPC;
    }
    if (j->seed != grist_sketch_job_seed(j->id))
        GRIST_WARN("job '%s': its snapshot's seed %08x is not the one its id gives (%08x); "
                   "workers of this build sketch with the latter",
                   j->id, j->seed, grist_sketch_job_seed(j->id));
    if (j->version) { /* re-attaching workers get the values in force at once */
        for (uint32_t g = 0; g < j->ngroups; g++)
            j->push[g].reason = j->push_reason[g];
        j->push_msg =
            grist__encode_hyperparams(j->version, j->push_step, j->ngroups, j->push, &j->push_len);
        if (!j->push_msg) {
            snprintf(err, errsz, "out of memory restoring job '%s'", j->id);
            grist__job_free(j);
            return -ENOMEM;
        }
    }
    return job_admit(d, j, eng, eng_len, err, errsz);
}

void grist__job_complete_open(struct grist_daemon *d, struct grist_job *j)
{
    while (j->aggs)
        complete(d, j, j->aggs);
}

void grist__job_detach(struct grist_daemon *d, struct grist_job *j)
{
    if (j->nstreams > 0)
        j->nstreams--;
    if (j->nstreams == 0)
        j->idle_since_ms = grist__now_ms(d);
}

static void complete(struct grist_daemon *d, struct grist_job *j, struct grist_agg *a)
{
    const size_t gm = (size_t)j->ngroups * j->m;
    /* one rank: its own sketch is the mean, handed on without a copy */
    float *mean = a->first ? a->first : malloc(gm * sizeof(float));
    a->first = NULL;
    uint32_t *batch = malloc(j->ngroups * sizeof(uint32_t));
    if (mean && batch && a->n > 0) {
        /* not reported: the configured lr times the pushed lr_scale, and the
         * momentum in force (what a worker applying every push uses) */
        for (uint32_t g = 0; g < j->ngroups; g++) {
            if (!(a->lrb[g] > 0.0))
                a->lrb[g] = j->groups[g].lr * grist__job_lr_scale(j, g);
            if (a->lrb[j->ngroups + g] < 0.0)
                a->lrb[j->ngroups + g] = grist__job_momentum(j, g);
        }
        if (a->sum) {
            const double inv = 1.0 / a->n;
            for (size_t i = 0; i < gm; i++)
                mean[i] = (float)(a->sum[i] * inv);
        }
        for (uint32_t g = 0; g < j->ngroups; g++)
            batch[g] = (uint32_t)(a->batch[g] / a->n);
        int r = grist__engine_step(grist__engine_of(d, j->key), &j->share, j->key, a->step, a->n,
                                   j->ngroups, j->m, mean, a->sq, batch, a->lrb);
        mean = NULL; /* the engine's now */
        if (r < 0) {
            j->dropped++;
            d->cnt.steps_dropped++;
            if (r == -EBUSY) {
                j->shed++;
                d->cnt.steps_shed++;
            }
        } else {
            j->steps++;
            d->cnt.steps_aggregated++;
            if (a->n < j->world) {
                j->partial++;
                d->cnt.steps_partial++;
            }
        }
    } else {
        j->dropped++;
        d->cnt.steps_dropped++;
    }
    free(mean);
    free(batch);
    if (a->step > j->high_step || j->seg_open)
        j->high_step = a->step;
    j->seg_open = 0;
    for (struct grist_agg **p = &j->aggs; *p; p = &(*p)->next)
        if (*p == a) {
            *p = a->next;
            break;
        }
    j->naggs--;
    agg_free(a);
}

/* Steps behind the newest aggregated one by more than this start a new
 * segment (a run resumed from an earlier step) instead of being late. */
#define SEGMENT_GAP (2 * MAX_OPEN_STEPS)

/* A run resumed from an earlier step: the open steps of the old run are
 * aggregated as they are, and the job's steps count from here. */
static void new_segment(struct grist_daemon *d, struct grist_job *j, uint64_t step)
{
    GRIST_INFO("job '%s': step %llu is %llu behind its newest step %llu: a new segment "
               "(a resumed run)",
               j->id, (unsigned long long)step, (unsigned long long)(j->high_step - step),
               (unsigned long long)j->high_step);
    while (j->aggs)
        complete(d, j, j->aggs);
    j->seg_open = 1; /* no step of the new segment aggregated yet */
    j->segments++;
    d->cnt.step_segments++;
}

int grist__job_submit(struct grist_daemon *d, struct grist_job *j, uint32_t rank,
                      struct grist_summary *sum, char *err, size_t errsz)
{
    d->cnt.summaries++;
    if (sum->validation) {
        float *sk = sum->sketch;
        sum->sketch = NULL; /* the engine's now */
        if (grist__engine_validation(grist__engine_of(d, j->key), &j->share, j->key, j->ngroups,
                                     j->m, sk) < 0)
            d->cnt.steps_dropped++;
        else
            j->validation++;
        grist__summary_free(sum);
        return 0;
    }
    struct grist_agg *a = j->aggs;
    while (a && a->step != sum->step)
        a = a->next;
    if (!a) {
        /* the newest step the job knows: aggregated or open */
        const int aggregated = j->steps > 0 && !j->seg_open;
        uint64_t newest = aggregated ? j->high_step : 0;
        int known = aggregated;
        for (struct grist_agg *x = j->aggs; x; x = x->next)
            if (!known || x->step > newest)
                newest = x->step, known = 1;
        if (known && sum->step > newest && sum->step - newest > (uint64_t)d->cfg->max_step_jump) {
            snprintf(err, errsz,
                     "summary.step: %llu jumps %llu past the job's newest step %llu "
                     "(more than --max-step-jump %lld)",
                     (unsigned long long)sum->step, (unsigned long long)(sum->step - newest),
                     (unsigned long long)newest, (long long)d->cfg->max_step_jump);
            grist__summary_free(sum);
            return -EINVAL;
        }
        if (aggregated && sum->step <= j->high_step) {
            if (j->high_step - sum->step <= SEGMENT_GAP) {
                j->late++;
                d->cnt.summaries_late++;
                grist__summary_free(sum);
                return 0;
            }
            new_segment(d, j, sum->step);
        }
        if (j->naggs >= MAX_OPEN_STEPS) { /* a rank far ahead: close the oldest step */
            struct grist_agg *old = j->aggs;
            for (struct grist_agg *x = j->aggs; x; x = x->next)
                if (x->step < old->step)
                    old = x;
            complete(d, j, old);
        }
        a = calloc(1, sizeof(*a));
        if (a) {
            a->seen = calloc((j->world + 7) / 8, 1);
            a->world = j->world;
            a->sq = calloc(j->ngroups, sizeof(double));
            a->batch = calloc(j->ngroups, sizeof(uint64_t));
            a->lrb = malloc(2 * (size_t)j->ngroups * sizeof(double));
        }
        if (!a || !a->seen || !a->sq || !a->batch || !a->lrb) {
            agg_free(a);
            j->dropped++;
            d->cnt.steps_dropped++;
            grist__summary_free(sum);
            return 0;
        }
        a->step = sum->step;
        a->t0_ms = grist__now_ms(d);
        /* every rank applies the same values (DDP): the first summary's stand */
        memcpy(a->lrb, sum->lrb, 2 * (size_t)j->ngroups * sizeof(double));
        a->next = j->aggs;
        j->aggs = a;
        j->naggs++;
    }
    if (rank < j->world && rank >= a->world && agg_grow(a, j->world) < 0) {
        j->dropped++;
        d->cnt.steps_dropped++;
        grist__summary_free(sum);
        return 0;
    }
    if (rank >= j->world || (a->seen[rank / 8] >> (rank % 8)) & 1) {
        /* a duplicate (a restarted rank resending), or a rank of a bigger world */
        j->duplicate++;
        d->cnt.summaries_duplicate++;
        grist__summary_free(sum);
        return 0;
    }
    const size_t gm = (size_t)j->ngroups * j->m;
    if (a->n == 1) { /* a second rank: the sum starts from the first one's sketch */
        a->sum = malloc(gm * sizeof(double));
        if (!a->sum) {
            j->dropped++;
            d->cnt.steps_dropped++;
            grist__summary_free(sum);
            return 0;
        }
        for (size_t i = 0; i < gm; i++)
            a->sum[i] = a->first[i];
        free(a->first);
        a->first = NULL;
    }
    a->seen[rank / 8] |= (uint8_t)(1u << (rank % 8));
    for (uint32_t g = 0; g < j->ngroups; g++) {
        const float *s = sum->sketch + (size_t)g * j->m;
        a->sq[g] += a->n == 0 ? grist_sumsq(s, j->m) : acc_add(a->sum + (size_t)g * j->m, s, j->m);
        a->batch[g] += sum->batch[g];
    }
    if (a->n == 0) { /* the first rank: its sketch is kept as it came, no copy */
        a->first = sum->sketch;
        sum->sketch = NULL;
    }
    a->n++;
    grist__summary_free(sum);
    if (a->n >= j->world)
        complete(d, j, a);
    return 0;
}

static void job_state(struct grist_daemon *d, struct grist_job *j)
{
    if (d->events.state)
        d->events.state(d->events.ud, j);
}

void grist__history_add(struct grist_history *h, const struct grist_history_point *p)
{
    if (h->cap < 2)
        return;
    if (h->stride == 0)
        h->stride = 1;
    if (h->len > 0 && ++h->skip < h->stride)
        return;
    h->skip = 0;
    /* full (an even count, so that the point after a thinning is one new
     * stride from the last kept): keep points 0, 2, 4, ...; half the rate */
    if (h->len == (h->cap & ~1u)) {
        for (uint32_t i = 0; 2 * i < h->len; i++)
            h->pts[i] = h->pts[2 * i];
        h->len = (h->len + 1) / 2;
        h->stride *= 2;
    }
    h->pts[h->len++] = *p;
}

void grist__job_on_result(void *ud, struct grist_engine_result *r)
{
    struct grist_daemon *d = ud;
    struct grist_job *j = NULL;
    for (struct grist_job *x = d->jobs; x; x = x->next)
        if (x->key == r->key)
            j = x;
    if (j && r->restore_failed) {
        GRIST_ERR("job '%s': its snapshot's statistics were refused (%s); they start fresh", j->id,
                  grist_strerror(r->error));
        d->cnt.snapshots_refused++;
    }
    if (!j || r->restore_failed || r->ngroups != j->ngroups) {
        grist__engine_result_free(r);
        return;
    }
    if (r->families_only) {
        if (j->last)
            for (uint32_t g = 0; g < j->ngroups; g++) {
                j->last->groups[g].fam = r->groups[g].fam;
                j->last->groups[g].have_families = r->groups[g].have_families;
            }
        grist__engine_result_free(r);
        job_state(d, j);
        return;
    }
    grist__engine_result_free(j->last);
    j->last = r;
    grist__histogram_observe(&d->solve_seconds, r->solve_s);
    int changed = 0, warm = 0;
    for (uint32_t g = 0; g < j->ngroups; g++) {
        const struct grist_engine_group_result *gr = &r->groups[g];
        const struct grist_choice *c = &gr->choice;
        struct grist_history_point p = {r->step,
                                        grist__f32(c->beta),
                                        grist__f32(c->lr_scale),
                                        grist__f32(c->noise),
                                        grist__f32(c->noise_scale),
                                        isfinite(c->confidence) ? grist__f32(c->confidence) : 1e9f};
        grist__history_add(&j->history[g], &p);
        if (gr->steps < j->policy.sel.min_steps)
            warm = 1;
        if (fabs(c->beta - j->push[g].momentum) > 1e-12 ||
            fabs(c->lr_scale - j->push[g].lr_scale) > 1e-12 || fabs(c->lr - j->push[g].lr) > 1e-15)
            changed = 1;
    }
    if (warm || (!changed && j->version > 0)) {
        job_state(d, j);
        return;
    }
    for (uint32_t g = 0; g < j->ngroups; g++) {
        const struct grist_choice *c = &r->groups[g].choice;
        j->push[g] = (struct grist_push_group){c->beta, c->lr_scale, c->lr, c->confidence, NULL};
        snprintf(j->push_reason[g], sizeof(j->push_reason[g]), "%s", r->groups[g].reason);
        j->push[g].reason = j->push_reason[g];
    }
    size_t len;
    uint8_t *msg = grist__encode_hyperparams(j->version + 1, r->step, j->ngroups, j->push, &len);
    if (!msg) {
        job_state(d, j);
        return; /* try again at the next evaluation */
    }
    j->version++;
    j->push_step = r->step;
    free(j->push_msg);
    j->push_msg = msg;
    j->push_len = len;
    d->cnt.pushes++;
    GRIST_DEBUG("job '%s': version %llu at step %llu (group 0 momentum %.4f)", j->id,
                (unsigned long long)j->version, (unsigned long long)r->step, j->push[0].momentum);
    if (d->events.version)
        d->events.version(d->events.ud, j);
    if (r->queued_ns)
        grist__histogram_observe(&d->push_latency_seconds,
                                 (double)(uv_hrtime() - r->queued_ns) * 1e-9);
    job_state(d, j);
}

void grist__jobs_tick(struct grist_daemon *d)
{
    const uint64_t now = grist__now_ms(d);
    const uint64_t timeout = (uint64_t)(d->cfg->aggregation_timeout * 1000.0);
    const uint64_t idle = (uint64_t)(d->cfg->idle_expiry * 1000.0);
    struct grist_job **p = &d->jobs;
    while (*p) {
        struct grist_job *j = *p;
        struct grist_agg *a = j->aggs;
        while (a) {
            struct grist_agg *next = a->next;
            if (now - a->t0_ms >= timeout)
                complete(d, j, a);
            a = next;
        }
        /* a job that never got a summary holds a slot of --max-jobs for
         * nothing: it goes after --empty-job-expiry without workers */
        const int empty = j->steps == 0 && j->high_step == 0 && !j->aggs && !j->version;
        const uint64_t limit = empty ? (uint64_t)(d->cfg->empty_job_expiry * 1000.0) : idle;
        if (j->nstreams == 0 && now - j->idle_since_ms >= limit) {
            GRIST_INFO("job '%s' expired after %.0f s without workers%s", j->id,
                       (double)limit / 1000.0, empty ? " (it never sent a summary)" : "");
            *p = j->next;
            d->njobs--;
            d->stats_bytes -= j->stats_bytes;
            d->cnt.jobs_expired++;
            grist__engine_drop_job(grist__engine_of(d, j->key), j->key);
            if (d->events.gone)
                d->events.gone(d->events.ud, j);
            grist__job_free(j);
            continue;
        }
        p = &j->next;
    }
}

void grist__jobs_free_all(struct grist_daemon *d)
{
    while (d->jobs) {
        struct grist_job *j = d->jobs;
        unlink_job(d, j);
        grist__job_free(j);
    }
    free(d->peers);
    d->peers = NULL;
    d->npeers = 0;
    free(d->shard_peers_buf);
    d->shard_peers_buf = NULL;
}
