/*
 * libgrist: the worker side of grist (C API).
 *
 * A client owns one gRPC channel to gristd and one background thread; each
 * session is one Attach stream (one worker of one job). Nothing here blocks
 * on the network: grist_session_submit() only queues (dropping the oldest
 * summary when the queue is full), grist_session_latest() only copies the
 * newest hyperparameters received. When the daemon is slow, absent or
 * restarted, the background thread reconnects with exponential backoff and
 * jitter and attaches again; training keeps the last values it received.
 *
 * Thread safety: every function may be called from any thread; a session
 * must not be used after grist_session_close(), a client not after
 * grist_client_close().
 *
 * Errors: functions return 0 or a negative code (-EINVAL, -ENOMEM, or a
 * GRIST_E* code of grist/error.h); grist_strerror() gives the text.
 */
#ifndef GRIST_CLIENT_H
#define GRIST_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "grist/error.h"
#include "grist/sketch.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define GRIST_EXPORT __attribute__((visibility("default")))
#else
#define GRIST_EXPORT
#endif

struct grist_client;
struct grist_session;

/** Client options; fill with grist_client_options_default() first. */
struct grist_client_options {
    double backoff_initial_s; /**< first reconnect delay (default 0.1 s) */
    double backoff_max_s; /**< cap of the exponential backoff (default 5 s) */
    uint32_t queue_capacity; /**< summaries queued per session (default 1024: a run that
                                   outpaces its first connection loses nothing) */
    int32_t max_message_bytes; /**< gRPC message limit (default 64 MiB) */
    double keepalive_s; /**< HTTP/2 ping interval (default 15 s; gristd accepts one per
                                   5 s): a daemon that stops answering (hung, SIGSTOP, a dead
                                   link) is noticed within keepalive_s + 5 s and the session
                                   reconnects; 0 = off */
    /* Security (docs/SECURITY.md); every string is copied by grist_client_open. */
    const char *token; /**< bearer token sent as "authorization: Bearer TOKEN" on every
                                   call (gristd --tokens); NULL: none */
    const char *tls_ca_file; /**< PEM CA bundle: connect with TLS and verify gristd's
                                   certificate against it; NULL: plaintext */
    const char *tls_cert_file; /**< PEM client certificate for mTLS (with tls_key_file) */
    const char *tls_key_file; /**< PEM private key of tls_cert_file */
    const char *tls_server_name; /**< name expected in gristd's certificate when it is not
                                   the address's host (NULL: the host) */
};

/** The shard (0..n-1) that owns job_id: rendezvous hashing of the id, the
 *  rule gristd --shard applies (docs/ARCHITECTURE.md, "Sharding"). */
GRIST_EXPORT uint32_t grist_shard_pick(const char *job_id, uint32_t n);

/** sizeof(struct grist_client_options) of this build: bindings that mirror the
 *  struct (grist._native) check their layout against it. */
GRIST_EXPORT size_t grist_client_options_size(void);

/** Fill options with their defaults. @param o written. */
GRIST_EXPORT void grist_client_options_default(struct grist_client_options *o);

/**
 * Open a client: a channel to address and its background thread. Does not
 * connect yet (connections are made by sessions, in the background).
 *
 * @param address "host:port" or "unix:/path"; or "a,b,c", the replicas of a
 *                sharded gristd in shard order (gristd --shard I/N): each
 *                session goes to the replica of its job (grist_shard_pick),
 *                queries to the first. A replica that refuses a job of
 *                another shard names the right one and the session moves.
 * @param opt     options or NULL for defaults; copied.
 * @param out     receives the client; free with grist_client_close().
 * @return 0; -EINVAL (NULL address/out; a token with spaces or control
 *         characters); -ENOENT (a TLS file cannot be read); -ENOMEM; -EAGAIN
 *         (thread creation).
 */
GRIST_EXPORT int grist_client_open(const char *address, const struct grist_client_options *opt,
                                   struct grist_client **out);

/** Close every session still open, stop the thread, free the client. NULL is allowed. */
GRIST_EXPORT void grist_client_close(struct grist_client *c);

/** Optimizer of a group: how its momentum is defined (docs/MATH.md section 1;
 *  the values are the wire's OptimizerKind). RMSprop, NAdam and RAdam sketch
 *  in the metric P^-1 as Adam does (grist_sketch_adam_f32). */
enum grist_optimizer {
    GRIST_OPT_SGD = 1,
    GRIST_OPT_ADAM = 2,
    GRIST_OPT_SGD_NESTEROV = 3,
    GRIST_OPT_RMSPROP = 4,
    GRIST_OPT_NADAM = 5,
    GRIST_OPT_RADAM = 6
};

/** One parameter group as declared at attach. */
struct grist_group_desc {
    const char *name; /**< shown in dashboards; may be NULL */
    uint64_t num_elements; /**< n, below 2^32 */
    enum grist_optimizer optimizer;
    double lr; /**< the user's configured learning rate */
    double beta; /**< the user's configured momentum / beta1 */
    uint32_t sketch_sample; /**< block sketch: 1 run in N is sketched, N = 1, 4, 16 or 64
                                 (docs/MATH.md 2.1); 0 = grist_sketch_sample_auto(num_elements,
                                 m); the hashed sketch takes only 0 or 1 */
};

/** What a worker attaches with. Zero policy fields take the daemon's defaults. */
struct grist_attach_options {
    const char *job; /**< job id (1..128 bytes) */
    uint32_t rank, world_size;
    uint32_t ngroups;
    const struct grist_group_desc *groups; /**< ngroups entries; copied */
    uint32_t sketch_dim; /**< m: a power of two in [64, 65536]; 0 = 1024 */
    const char *mode; /**< "per_group" | "global" | NULL */
    const char *noise_correction; /**< "off" | "workers" | "acf" | "auto" | NULL */
    const char *lr_coupling; /**< "none" | "dc" | "energy" | "radius" | NULL */
    uint32_t solve_every, min_steps;
    double beta_min, beta_max;
    const double *candidates; /**< explicit beta list (e.g. the paper's {0.5, 0.9, 0.99});
                                    NULL = the daemon's grid; copied */
    uint32_t ncandidates; /**< entries of candidates, at most 64 */
    const char *select_on; /**< "train" | "validation" | NULL */
    double hysteresis_z; /**< standard errors the best must lead by; 0 = default */
    uint32_t hysteresis_h; /**< consecutive agreeing evaluations; 0 = default */
    double ema_gamma; /**< EMA decay of the statistics; 0 = default */
    double j_ema; /**< EMA of J before the argmax, in (0, 1); 0 = default */
    double radius; /**< rho for lr_coupling "radius"; 0 = default */
    const char *rule; /**< "curvature" | "alignment" | NULL (docs/MATH.md 5.4) */
    double hysteresis_z_fast; /**< curvature rule: a lead that moves at once; 0 = default */
    const char *sketch_kind; /**< "block" | "hashed" | NULL = "block" (docs/MATH.md 2.1); every
                                    rank of a job must use the same */
};

/** The session's sketch kind: GRIST_SKETCH_BLOCK (1) or GRIST_SKETCH_HASHED (0);
 * what its grist_session_sketch_begin() computes and what a caller that
 * sketches on its own must compute. */
GRIST_EXPORT int grist_session_sketch_kind(const struct grist_session *s);

/** The sampling N of group g as resolved at attach (1, 4, 16 or 64; what a
 * caller that sketches on its own passes to the block kernels and to
 * grist_sketch_unsample()); -EINVAL for a bad session or group. */
GRIST_EXPORT int grist_session_sketch_sample(const struct grist_session *s, uint32_t g);

/**
 * Attach a worker. Returns at once; the background thread connects, sends
 * Hello and receives Welcome (see grist_session_wait_ready()).
 *
 * The daemon checks the policy fields: a value it refuses (an unknown mode
 * name, a bound out of range) ends the stream with INVALID_ARGUMENT;
 * grist_session_wait_ready() then times out and grist_session_last_error()
 * has the daemon's message (the thread keeps retrying with backoff, as for
 * any stream that ended).
 *
 * @return 0; -EINVAL for a missing job, rank >= world_size, no groups, more
 *         than 64 candidates or one outside [0, 1), a group of 2^32 elements
 *         or more (GRIST_ETOOBIG), a bad sketch_dim (GRIST_EBADDIM); -ENOMEM.
 */
GRIST_EXPORT int grist_session_attach(struct grist_client *c, const struct grist_attach_options *o,
                                      struct grist_session **out);

/**
 * Wait until the session received Welcome (the job seed is then known).
 *
 * @return 0; -ETIMEDOUT when timeout_s passed first.
 */
GRIST_EXPORT int grist_session_wait_ready(struct grist_session *s, double timeout_s);

/** The address the session attaches to now (its shard's replica, or where a
 *  redirect sent it); valid while the client is open. */
GRIST_EXPORT const char *grist_session_address(const struct grist_session *s);

/**
 * The job's sketch seed (MATH.md section 2): derived from the job id at
 * attach (grist_sketch_job_seed()), so it is known before any Welcome; a
 * daemon that announces another seed in Welcome is followed.
 * Pass it to grist_sketch_group_seed() for each group.
 */
GRIST_EXPORT uint32_t grist_session_job_seed(struct grist_session *s);

/**
 * What the worker applied in the optimizer step whose gradient the next
 * summary carries, per group (4 * ngroups doubles: lr in force, momentum /
 * beta1, the lr_scale included in that lr, and the update's extra factor,
 * Adam's bias correction 1/(1 - beta1^k), 1 otherwise). Kept for every
 * following summary until changed; all zero = not reported. The curvature
 * rule (docs/MATH.md 5.4) needs the lr. Call from the thread that submits.
 *
 * @return 0; -EINVAL for a NULL argument or a value that is not finite,
 *         negative, or a beta outside [0, 1).
 */
GRIST_EXPORT int grist_session_set_applied(struct grist_session *s, const double *applied);

/** Per-group seed seed_p = fmix32(job_seed ^ fmix32(group + 1)) (exported form of the inline). */
GRIST_EXPORT uint32_t grist_sketch_group_seed(uint32_t job_seed, uint32_t group_index);

/**
 * Queue the summary of one step: ngroups sketches of m floats (group-major),
 * their squared norms and local batch sizes (both may be NULL). Copies; never
 * blocks on the network. When the queue is full the oldest queued summary is
 * dropped (counted in grist_session_stats()).
 *
 * @param validation nonzero when the sketches are of a held-out-batch gradient.
 * @return 0; -EINVAL for NULL sketches; GRIST_ENONFINITE for a NaN/Inf value
 *         (nothing is queued); -ENOMEM.
 */
GRIST_EXPORT int grist_session_submit(struct grist_session *s, uint64_t step, const float *sketches,
                                      const double *sq_norms, const uint32_t *batch_sizes,
                                      int validation);

/** One gradient tensor of a step, for grist_session_sketch_begin(). */
struct grist_tensor {
    const float *grad; /**< float32, contiguous, n elements */
    const float *exp_avg_sq; /**< Adam's second moment (float32, n) for the
                                  preconditioned sketch, or NULL for the plain one */
    uint64_t n; /**< elements */
    uint64_t offset; /**< element offset of this tensor within its group */
    uint32_t group; /**< group index */
    double v_scale; /**< Adam: 1 / (1 - beta2^t) (bias correction of v) */
    double eps; /**< Adam: epsilon */
};

/**
 * Start the sketch of one step: every tensor is sketched into its group's
 * sketch (MATH.md section 2; for Adam tensors g / sqrt(sqrt(v * v_scale) + eps))
 * with the job's seed. With async nonzero it runs on the session's sketch
 * thread (created on first use) and this call returns at once; otherwise it
 * runs here. The tensor memory must stay valid and unmodified until
 * grist_session_sketch_end() returns. Everything is validated before any
 * work starts.
 *
 * The intended use: begin when the gradients are final (a framework calls
 * it at the start of optimizer.step(), which only reads them), end after
 * the optimizer ran, so the sketch overlaps the optimizer on another core.
 *
 * @return 0; -EAGAIN before Welcome (no job seed yet; nothing started);
 *         -EBUSY when the previous sketch was not ended; -EINVAL (NULL
 *         pointers, group out of range, Adam eps/v_scale not positive);
 *         GRIST_EBADLEN when offset + n exceeds the group's size.
 */
GRIST_EXPORT int grist_session_sketch_begin(struct grist_session *s, const struct grist_tensor *t,
                                            uint32_t ntensors, int async);

/**
 * Finish the begun sketch: wait for it when it still runs, then submit it
 * as the summary of step (commit nonzero; see grist_session_submit) or
 * discard it (commit 0, e.g. because the caller saw a tensor change while
 * it ran). Either way a new sketch may begin afterwards.
 *
 * @return submit's result when committed (GRIST_ENONFINITE for a
 *         non-finite gradient: nothing queued); 0 when discarded; a kernel
 *         error of the sketch; -ENOENT when nothing was begun.
 */
GRIST_EXPORT int grist_session_sketch_end(struct grist_session *s, uint64_t step,
                                          const uint32_t *batch_sizes, int validation, int commit);

/** Hyperparameters of one group. */
struct grist_group_hyperparams {
    double momentum; /**< momentum (SGD) or beta1 (Adam) */
    double lr_scale; /**< factor on the user's lr */
    double lr; /**< absolute lr (lr_coupling radius), else 0 */
    double confidence; /**< margin in standard errors */
};

/**
 * Copy the newest hyperparameters received. Non-blocking.
 *
 * @param out     ngroups entries, written when a version exists.
 * @param ngroups size of out (must equal the session's group count).
 * @param version receives the version (0: nothing received yet); may be NULL.
 * @param step    receives the step they were computed at; may be NULL.
 * @return 0; -EAGAIN when nothing was received yet; -EINVAL for a wrong ngroups.
 */
GRIST_EXPORT int grist_session_latest(struct grist_session *s, struct grist_group_hyperparams *out,
                                      uint32_t ngroups, uint64_t *version, uint64_t *step);

/** Counters of a session. */
struct grist_session_stats {
    uint64_t submitted; /**< summaries accepted by submit */
    uint64_t sent; /**< summaries handed to gRPC */
    uint64_t dropped; /**< summaries dropped because the queue was full */
    uint64_t attaches; /**< Welcome messages received (1 + re-attaches) */
    uint64_t failures; /**< streams that ended (daemon gone, refused, ...) */
    uint64_t received; /**< Hyperparams messages received */
    uint32_t queued; /**< summaries waiting now */
    int connected; /**< 1 while attached */
    int last_status; /**< gRPC status of the last stream that ended */
};

/** Read the counters. */
GRIST_EXPORT void grist_session_stats(struct grist_session *s, struct grist_session_stats *out);

/**
 * The daemon's message for the last stream that ended with an error (e.g.
 * "hello.policy.j_ema: not in (0, 1)"), copied into buf (NUL-terminated,
 * truncated to len - 1 bytes; "" when none).
 *
 * @return the gRPC status code of that stream (3 = INVALID_ARGUMENT: the
 *         daemon refused the attach, retrying will not help), 0 when no
 *         stream ended with an error; -EINVAL for a NULL session.
 */
GRIST_EXPORT int grist_session_last_error(struct grist_session *s, char *buf, size_t len);

/**
 * Wait until every queued summary was handed to the network (or timeout_s
 * passed): call before grist_session_close() at the end of training so the
 * last steps are not dropped.
 *
 * @return 0; -ETIMEDOUT (the daemon is unreachable or slow); -EINVAL.
 */
GRIST_EXPORT int grist_session_flush(struct grist_session *s, double timeout_s);

/**
 * Detach and free. A connected stream is half-closed first, so the daemon
 * reads every summary already handed to the transport (up to a second);
 * summaries still queued are dropped: call grist_session_flush() before to
 * send them. NULL is allowed.
 */
GRIST_EXPORT void grist_session_close(struct grist_session *s);

/* ---- queries (dashboards, gristctl): blocking calls on the client's channel ---- */

/** One job, as ListJobs / GetJob describe it. */
struct grist_job_info {
    char id[129];
    uint32_t world_size; /**< ranks of the job */
    uint32_t live_workers; /**< Attach streams open now */
    uint64_t step; /**< newest aggregated step */
    uint64_t version; /**< hyperparameter versions pushed */
    uint64_t dropped_steps; /**< steps lost because a compute thread was behind */
    uint64_t late_summaries; /**< summaries for a step already aggregated */
    /* appended after the first release of 0.1 (the struct grew: callers rebuild
     * against this header; the library allocates the arrays it returns) */
    uint64_t validation_summaries; /**< held-out-batch sketches applied */
    uint64_t step_segments; /**< runs resumed from an earlier step */
    uint64_t shed_steps; /**< of dropped_steps: over the job's share of a busy compute thread */
    uint32_t groups; /**< parameter groups */
    uint32_t sketch_dim; /**< m */
    uint32_t sketch_kind; /**< 0 hashed, 1 block (enum grist_sketch_kind) */
};

/** Maximum candidates a grist_group_info carries. */
#define GRIST_QUERY_MAX_CANDIDATES 128

/** One parameter group's state, as GetJob / WatchJob describe it. */
struct grist_group_info {
    char name[65];
    double momentum, lr_scale; /**< in force */
    double noise, noise_scale; /**< sigma-hat^2 and B_noise */
    uint64_t steps; /**< steps evaluated */
    uint32_t ncand; /**< candidates below (0 before the first evaluation) */
    double cand[GRIST_QUERY_MAX_CANDIDATES], J[GRIST_QUERY_MAX_CANDIDATES],
        J_se[GRIST_QUERY_MAX_CANDIDATES];
    int have_families; /**< the family diagnostics below are set */
    double trace, frobenius, lambda_max, effective_rank;
    double value_frobenius, value_spectral, value_isotropic, value_lyapunov;
    /* appended after the first release of 0.1 (the struct grew: callers rebuild
     * against this header; the library allocates the arrays it returns) */
    double trace_sqrt, value_whitened, value_diagonal; /**< the rest of the families */
    double curvature; /**< kappa along the trajectory; 0 = not measured */
    double lr_greedy; /**< eta* of the current candidate (absolute); 0 = none */
    double confidence; /**< margin of the current choice in standard errors */
    char reason[256]; /**< the selection's state at the last evaluation */
    uint64_t num_elements; /**< n of the group, as attached */
    uint32_t sketch_sample; /**< block sketch: 1 run in N sketched */
};

/**
 * grpc.health.v1 Check of the whole daemon (needs no token: for probes).
 *
 * @param serving set to 1 when gristd answers SERVING, 0 for NOT_SERVING.
 * @return 0; the codes of grist_query_jobs().
 */
GRIST_EXPORT int grist_query_health(struct grist_client *c, double timeout_s, int *serving);

/**
 * Every job the daemon serves. *jobs is malloc'ed (free() it); *n its length.
 *
 * @return 0; -ETIMEDOUT; -ECONNREFUSED (daemon unreachable); -EPROTO (bad
 *         answer); -ENOMEM; -EACCES (gristd wants a token and this client's
 *         is missing or unknown); -EPERM (the token does not cover the job).
 */
GRIST_EXPORT int grist_query_jobs(struct grist_client *c, double timeout_s,
                                  struct grist_job_info **jobs, uint32_t *n);

/**
 * One job and its groups. *groups is malloc'ed (free() it).
 *
 * @return 0; -ENOENT (no such job); the codes of grist_query_jobs().
 */
GRIST_EXPORT int grist_query_job(struct grist_client *c, const char *job, double timeout_s,
                                 struct grist_job_info *info, struct grist_group_info **groups,
                                 uint32_t *ngroups);

/**
 * One series ("momentum", "lr_scale", "noise", "noise_scale", "confidence")
 * of a group between steps from and to (0: up to now), downsampled by the
 * daemon (largest-triangle-three-buckets) to at most points. *steps and
 * *values are malloc'ed.
 *
 * @return 0; -ENOENT (no such job); -EINVAL (group or series); as above.
 */
GRIST_EXPORT int grist_query_history(struct grist_client *c, const char *job, uint32_t group,
                                     const char *series, uint64_t from, uint64_t to,
                                     uint32_t points, double timeout_s, uint64_t **steps,
                                     double **values, uint32_t *n);

/** Called by grist_query_watch() with each new state; return nonzero to stop. */
typedef int grist_watch_fn(void *ud, const struct grist_job_info *info,
                           const struct grist_group_info *groups, uint32_t ngroups);

/**
 * Follow a job: fn gets the current state, then every new evaluation, until
 * it returns nonzero, the job ends, or duration_s passes (0: no limit).
 *
 * @return 0 (stopped by fn, the job ended, or the duration passed); -ENOENT;
 *         the codes of grist_query_jobs().
 */
GRIST_EXPORT int grist_query_watch(struct grist_client *c, const char *job, double duration_s,
                                   grist_watch_fn *fn, void *ud);

#ifdef __cplusplus
}
#endif

#endif /* GRIST_CLIENT_H */
