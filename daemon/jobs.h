/* Internal layout of a job (jobs.c, query.c). Loop thread only. */
#ifndef GRIST_DAEMON_JOBS_H
#define GRIST_DAEMON_JOBS_H

#include <stdint.h>

#include "daemon.h"
#include "grist/v1/grist.pb-c.h"

struct grist_agg {
    struct grist_agg *next;
    uint64_t step;
    uint32_t n;
    uint64_t t0_ms;
    uint8_t *seen; /* one bit per rank < world */
    uint32_t world; /* ranks seen[] holds: the job's world when it last grew */
    double *sum; /* ngroups * m */
    double *sq; /* ngroups: sum over workers of |s_w|^2 */
    uint64_t *batch; /* ngroups */
    double *lrb; /* 2 * ngroups: update multiplier and beta of the first summary */
};

struct grist_history_point {
    uint64_t step;
    double momentum, lr_scale, noise, noise_scale, confidence;
};

struct grist_history {
    struct grist_history_point *pts;
    uint32_t cap, head, len;
};

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
    struct grist_stream *streams;
    uint32_t nstreams;
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

void grist__job_free(struct grist_job *j);
/* query.c: the JobBrief of j (strings point into j). */
struct Grist__V1__JobBrief;
void grist__job_brief(const struct grist_job *j, struct Grist__V1__JobBrief *b);
/* A job's GetJobResponse (what GetJob, WatchJob and the HTTP job view
 * serve), query.c: filled in place (resp points into the job and into the
 * arrays below, valid until the job changes; release frees the arrays), or
 * packed into a malloc'd buffer (NULL on ENOMEM). */
struct grist_job_response {
    Grist__V1__GetJobResponse resp;
    Grist__V1__JobBrief brief;
    Grist__V1__GroupState *gs, **gp;
    Grist__V1__FamilyDiagnostics *fd;
};
int grist__job_response_fill(const struct grist_job *j, struct grist_job_response *jr);
void grist__job_response_release(struct grist_job_response *jr);
uint8_t *grist__job_response_encode(const struct grist_job *j, size_t *out_len);
/* Admit a job decoded from a snapshot (j filled by snapshot.c; eng: its
 * compute state for the engine). On failure j is freed and err says why. */
grpc_status_code grist__job_restore(struct grist_daemon *d, struct grist_job *j, const void *eng,
                                    size_t eng_len, char *err, size_t errsz);
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
