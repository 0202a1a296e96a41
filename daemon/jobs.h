/*
 * The job registry and the per-step aggregation (jobs.c): jobs made by a
 * Hello or restored from a snapshot, summaries filed under (job, step),
 * complete steps handed to the compute threads, and their evaluations
 * turned into Hyperparams versions. No gRPC here: failures are grist error
 * codes (0, -errno, GRIST_E*), and news goes up through d->events.
 * Loop thread only.
 */
#ifndef GRIST_DAEMON_JOBS_H
#define GRIST_DAEMON_JOBS_H

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "daemon.h"
struct grist_sub;

struct grist_agg {
    struct grist_agg *next;
    uint64_t step;
    uint32_t n;
    uint64_t t0_ms;
    uint8_t *seen; /* one bit per rank < world */
    uint32_t world; /* ranks seen[] holds: the job's world when it last grew */
    float *first; /* ngroups * m: the first rank's sketch, taken from its summary, while n == 1 */
    double *sum; /* ngroups * m: the sum of the sketches, from the second rank on (else NULL) */
    double *sq; /* ngroups: sum over workers of |s_w|^2 */
    uint64_t *batch; /* ngroups */
    double *lrb; /* 2 * ngroups: update multiplier and beta of the first summary */
};

/* One evaluation of a group, for dashboards: float32 values (a dashboard
 * reads 7 digits; the pushed values themselves are doubles elsewhere). */
struct grist_history_point {
    uint64_t step;
    float momentum, lr_scale, noise, noise_scale, confidence;
};

/* A group's history over the whole run in at most cap points: every
 * stride-th evaluation is kept; when the array is full, every other point
 * goes and the stride doubles, so it always spans the run from its first
 * evaluation at an even spacing (docs/ARCHITECTURE.md, history). pts[0 ..
 * len) in step order. */
struct grist_history {
    struct grist_history_point *pts;
    uint32_t cap, len;
    uint32_t stride, skip; /* keep one evaluation in stride; evaluations since the last kept */
};

/* x as a float, out-of-range values as +-inf (a plain conversion of them
 * is undefined behaviour) */
static inline float grist__f32(double x)
{
    return x > FLT_MAX ? INFINITY : x < -FLT_MAX ? -INFINITY : (float)x;
}

/* Add one evaluation to h (thinning as above). */
void grist__history_add(struct grist_history *h, const struct grist_history_point *p);

struct grist_job {
    struct grist_job *next;
    char id[GRIST_JOB_ID_MAX + 1];
    uint64_t key;
    uint32_t seed;
    uint32_t world, ngroups, m;
    uint32_t sketch_kind; /* enum grist_sketch_kind, fixed by the first Hello */
    uint64_t stats_bytes; /* its share of d->stats_bytes */
    struct grist_group_spec *groups;
    struct grist_job_policy policy;
    struct grist_sub *subs; /* publish.c's: who hears of this job */
    uint32_t nstreams; /* workers attached now (grist__job_attach / _detach) */
    uint64_t version, push_step;
    struct grist_push_group *push;
    char (*push_reason)[128];
    uint8_t *push_msg;
    size_t push_len;
    struct grist_agg *aggs;
    uint32_t naggs;
    uint64_t high_step, steps, dropped, partial, late, duplicate, rejected, segments, validation;
    uint64_t shed; /* of dropped: over its share of a compute thread that was behind */
    struct grist_engine_share share;
    int seg_open; /* a new segment began and none of its steps is aggregated */
    uint64_t created_ms, idle_since_ms;
    struct grist_engine_result *last;
    struct grist_history *history;
    uint64_t snap_sig; /* the state last handed to the writer (snapshot.c) */
    int snap_pending; /* a snapshot of it is being taken */
    int owned; /* created (or first attached after a restore) with a token */
    uint8_t owner[32]; /* that token's digest: only it (or admin) may attach */
    uint32_t owner_line; /* its tokens file line, for messages */
    double rate_tokens; /* --max-summary-rate: summaries it may still send now */
    uint64_t rate_ms; /* when rate_tokens was last refilled */
};

/* d->cfg = c, and the daemon-wide policy defaults and limits from it.
 * @return 0, or -EINVAL after a message on stderr naming the bad option. */
int grist__daemon_configure(struct grist_daemon *d, const struct grist_config *c);

struct grist_job *grist__job_find(struct grist_daemon *d, const char *id);
/* Someone read the job (a query, a watch, an HTTP view): its family values
 * keep the --families-interval cadence for --families-idle-interval. */
void grist__job_mark_read(struct grist_job *j);
/* Attach a worker to the job named in hello, creating the job on first use;
 * the job counts it in nstreams until grist__job_detach. @return 0; -EPERM
 * (the token may not); -EINVAL (another shape, a bad policy); -ENOSPC
 * (--max-jobs, a memory budget); -ENOMEM; err says why. */
int grist__job_attach(struct grist_daemon *d, const struct grist_hello *h,
                      const struct grist_principal *who, struct grist_job **out, char *err,
                      size_t errsz);
void grist__job_detach(struct grist_daemon *d, struct grist_job *j);
/* File a validated summary of rank into its step (takes ownership of sum).
 * @return 0 (filed, or counted as late or duplicate), or -EINVAL with err
 * filled for a step number the job refuses (a jump of more than
 * max-step-jump past its newest step). */
int grist__job_submit(struct grist_daemon *d, struct grist_job *j, uint32_t rank,
                      struct grist_summary *sum, char *err, size_t errsz);
/* An evaluation from a compute thread (not a snapshot: main.c routes those). */
void grist__job_on_result(void *ud, struct grist_engine_result *r);
/* Aggregation timeouts and job expiry (d->events.gone before a job goes). */
void grist__jobs_tick(struct grist_daemon *d);
void grist__jobs_free_all(struct grist_daemon *d);
/* The encoded current Hyperparams (NULL before the first push). */
const uint8_t *grist__job_current_push(const struct grist_job *j, size_t *len);
void grist__job_free(struct grist_job *j);
/* Admit a job decoded from a snapshot (j filled by snapshot.c; eng: its
 * compute state for the engine). On failure j is freed and err says why:
 * -EEXIST, GRIST_ESHARD, -ENOSPC, -ENOMEM. */
int grist__job_restore(struct grist_daemon *d, struct grist_job *j, const void *eng, size_t eng_len,
                       char *err, size_t errsz);
/* Aggregate every open step as it is (partial), before a final snapshot. */
void grist__job_complete_open(struct grist_daemon *d, struct grist_job *j);

/* The values in force for group g: the newest push, or the group's own
 * starting momentum and lr_scale 1 before the first one. */
static inline double grist__job_momentum(const struct grist_job *j, uint32_t g)
{
    return j->version ? j->push[g].momentum : j->groups[g].beta0;
}

static inline double grist__job_lr_scale(const struct grist_job *j, uint32_t g)
{
    return j->version ? j->push[g].lr_scale : 1.0;
}

#endif
