/*
 * A compute thread (one engine each, --compute-threads of them): owns its
 * kernels backend and the statistics of the jobs given to it (key % N);
 * the loop talks to it only through a queue and receives results through
 * uv_async. Aggregated steps waiting in the queue are applied as one batched
 * update per job; beyond the queue's capacity steps are dropped and counted,
 * so the network path never blocks.
 */
#ifndef GRIST_DAEMON_ENGINE_H
#define GRIST_DAEMON_ENGINE_H

#include <stdint.h>
#include <uv.h>

#include "grist/kernels.h"
#include "wire.h"

struct grist_engine;

struct grist_engine_group_result {
    struct grist_choice choice;
    int have_families;
    struct grist_families fam;
    uint32_t ncand;
    double cand[GRIST_MAX_CANDIDATES];
    double J[GRIST_MAX_CANDIDATES];
    double J_se[GRIST_MAX_CANDIDATES];
    uint64_t steps;
    char reason[128];
};

/** An evaluation of a job (every solve_every of its steps). Loop-owned once delivered. */
struct grist_engine_result {
    struct grist_engine_result *next;
    uint64_t key;
    uint64_t step; /* newest step number applied */
    uint64_t steps; /* steps applied so far */
    int error; /* 0 or a grist error (device failure: statistics were reset) */
    double solve_s; /* seconds the selection (and snapshot) took on the compute thread */
    uint64_t queued_ns; /* uv_hrtime() when the newest step of this evaluation was queued */
    int families_only; /* 1: only groups[].fam / have_families are set (the families
                            thread finished a solve); the rest of the job's state stands */
    int snapshot; /* 1: an answer to grist__engine_snapshot(): snap holds the job's
                            compute state (NULL: the job is unknown or memory ran out) */
    int restore_failed; /* 1: the state given to grist__engine_create_job() was refused;
                            the job started fresh (error says why) */
    uint8_t *snap; /* malloc'd, owned by the result */
    size_t snap_len;
    uint32_t ngroups;
    struct grist_engine_group_result groups[]; /* ngroups */
};

typedef void grist_engine_result_fn(void *ud, struct grist_engine_result *r);

/** Aggregated steps waiting in the engine's queue now (thread-safe). */
uint32_t grist__engine_depth(struct grist_engine *e);
/** Steps refused so far for being over their job's share (thread-safe). */
uint64_t grist__engine_shed(struct grist_engine *e);
/** Family solves postponed so far to their job's next evaluation because
 * another job's request was already waiting for the families thread
 * (thread-safe). */
uint64_t grist__engine_families_deferred(struct grist_engine *e);
/** Family solves queued for the families thread so far. Any thread. */
uint64_t grist__engine_families_requested(struct grist_engine *e);

struct grist_engine_job_spec {
    uint64_t key;
    uint32_t ngroups, m, cov_dim, lags, cov_batch;
    struct grist_job_policy policy;
    const struct grist_group_spec *groups; /* copied */
    const void *restore; /* NULL, or a job's compute state from a snapshot (copied) */
    size_t restore_len;
};

/**
 * Start the compute thread with the backend (owned by the engine from now
 * on; closed by grist__engine_stop()).
 * @return 0; -ENOMEM.
 */
/* At most one family solve per job per `seconds` (0: the step cadence,
 * families_every, alone). Set before jobs arrive. */
void grist__engine_set_families_interval(struct grist_engine *e, double seconds,
                                         double idle_seconds);

int grist__engine_start(struct grist_engine **out, uv_loop_t *loop, struct grist_backend *be,
                        uint32_t capacity, double lag_s, grist_engine_result_fn *cb, void *ud);

/*
 * A job's share of its compute thread's queue: what it has queued since the
 * thread last took the queue. Owned by the job (loop thread), read and
 * written only under the engine's lock, inside grist__engine_step().
 */
struct grist_engine_share {
    uint64_t gen; /* the engine's take count when `work` was last reset */
    uint64_t work; /* floats queued (ngroups * m per step) */
    uint32_t steps; /* steps queued */
    /* uv_hrtime() when someone last read the job (loop only; handed to the
     * compute thread with each step: family solves keep the fast cadence
     * while it is recent) */
    uint64_t read_ns;
};

/** Stop the thread (after it drained its queue), free everything. Loop thread. */
void grist__engine_stop(struct grist_engine *e, void (*done)(void *ud));

/**
 * Check a job's compute state from a snapshot against its spec, building
 * and freeing its statistics on be (the snapshot fuzz target; any thread).
 * @return 0; GRIST_EBADSTATE; -ENOMEM; a backend's error.
 */
int grist__engine_state_check(struct grist_backend *be, const struct grist_engine_job_spec *sp,
                              const void *buf, size_t len);

/** Free a result and what it owns. */
void grist__engine_result_free(struct grist_engine_result *r);

/**
 * Ask for a job's compute state (statistics, selectors, counters, families)
 * after every item queued before this one: it comes back as a result with
 * snapshot = 1. Never dropped, never counted against the capacity.
 * @return 0; -ENOMEM.
 */
int grist__engine_snapshot(struct grist_engine *e, uint64_t key);

/** @return 0; -ENOMEM (the job is then not created and the caller refuses it). */
int grist__engine_create_job(struct grist_engine *e, const struct grist_engine_job_spec *spec);
void grist__engine_drop_job(struct grist_engine *e, uint64_t key);

/**
 * Queue one aggregated step: mean sketch (ngroups * m floats, malloc'd; the
 * engine takes it and frees it, on every return), per group sum of the
 * workers' |s_w|^2, local batch sizes and lrb (copied).
 * Fair share: once the thread is behind (its queue half full, or the oldest
 * queued step waited lag_s), a job holding more than 1/N of the queued work (N = jobs on this
 * thread) has its new steps refused, so a heavy job sheds its own steps and
 * the others' still fit.
 * @return 0; -EAGAIN when the queue is full; -EBUSY when the job is over
 *         its share while the thread is behind (either way the step is
 *         dropped and counted); -ENOMEM.
 */
int grist__engine_step(struct grist_engine *e, struct grist_engine_share *sh, uint64_t key,
                       uint64_t step, uint32_t nworkers, uint32_t ngroups, uint32_t m, float *mean,
                       const double *worker_sq, const uint32_t *batch, const double *lrb);

/** Queue a validation sketch (ngroups * m floats, malloc'd; taken like
 * grist__engine_step's mean). Same returns. */
int grist__engine_validation(struct grist_engine *e, struct grist_engine_share *sh, uint64_t key,
                             uint32_t ngroups, uint32_t m, float *sketch);

#endif
