/*
 * Per-(job, group) gradient statistics of MATH.md section 3.
 *
 * A grist_stats object lives on one backend (its large arrays in the
 * backend's memory: host for ref/cpu, device for cuda) and is used by one
 * thread at a time. Every update validates its whole input first and
 * returns an error without touching the state when anything is wrong:
 * a state is never half-updated by bad input.
 */
#ifndef GRIST_STATS_H
#define GRIST_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "grist/families.h"

#ifdef __cplusplus
extern "C" {
#endif

struct grist_backend;
struct grist_stats;

/**
 * How a group's optimizer turns gradients into its update (docs/MATH.md
 * section 1): heavy ball b = beta b + g, update b (PyTorch SGD); EMA
 * m = beta m + (1 - beta) g, update m (Adam's exp_avg, in the metric P^-1);
 * Nesterov b = beta b + g, update g + beta b (SGD with nesterov=True);
 * EMA-Nesterov m = beta m + (1 - beta) g, update beta m + (1 - beta) g
 * (NAdam, in the metric P^-1).
 */
enum grist_form {
    GRIST_FORM_HEAVY_BALL = 0,
    GRIST_FORM_EMA = 1,
    GRIST_FORM_NESTEROV = 2,
    GRIST_FORM_EMA_NESTEROV = 3
};

/** Forms whose buffer is an average (weight 1 - beta on the new gradient). */
static inline int grist_form_is_ema(enum grist_form f)
{
    return f == GRIST_FORM_EMA || f == GRIST_FORM_EMA_NESTEROV;
}

/** Largest number of candidates and of autocorrelation lags. */
#define GRIST_MAX_CANDIDATES 64u
#define GRIST_MAX_LAGS 64u

/** Configuration of one group's statistics. */
struct grist_stats_config {
    uint32_t m; /**< sketch dimension (power of two, 64..65536) */
    uint32_t cov_dim; /**< fold the covariance to min(m, cov_dim) (0, or a power
                            of two in [8, 65536]); 0: no covariance */
    uint32_t lags; /**< L, autocorrelation lags 0..L (>= 2 for acf noise) */
    uint32_t cov_batch; /**< steps buffered per rank-b SYRK update (1..256) */
    double gamma; /**< EMA decay in (0, 1) */
    uint32_t ncand; /**< K, number of candidates (1..GRIST_MAX_CANDIDATES) */
    double cand[GRIST_MAX_CANDIDATES]; /**< candidate betas in [0, 1) */
    uint32_t form; /**< enum grist_form of the worker's optimizer (the applied update) */
    uint32_t curv_block; /**< k of the k-step curvature estimate (docs/MATH.md 5.4), 2..256 */
};

/**
 * Fill a configuration with the defaults of MATH.md (m = 1024, cov_dim 256,
 * L = 16, gamma 0.95, cov_batch 16, default grid in [0, 0.995]).
 */
void grist_stats_config_default(struct grist_stats_config *cfg);

/**
 * The default candidate grid {0} ∪ {1 - 2^(-k/4), k = 1..31}, keeping the
 * values in [beta_min, beta_max].
 *
 * @param out  at least 32 doubles.
 * @return the number of candidates written (may be 0).
 */
uint32_t grist_candidates_default(double beta_min, double beta_max, double *out);

/** One aggregated step (host memory, read only, not retained). */
struct grist_step {
    const float *sketch; /**< aggregated sketch s-bar, len floats */
    uint32_t len; /**< must equal the configured m */
    uint32_t nworkers; /**< W: ranks that reported this step (>= 1) */
    const float *worker_sketches; /**< nworkers * m floats, or NULL; used when W >= 2 */
    uint32_t batch_size; /**< local batch size b of one worker */
    int has_worker_sq; /**< when worker_sketches is NULL and W >= 2: use worker_sq_sum */
    double worker_sq_sum; /**< sum over the W workers of |s_w|^2; with the mean this gives
                                sum_w |s_w - s-bar|^2 = worker_sq_sum - W |s-bar|^2 without
                                keeping W sketches (the daemon's aggregation) */
    double lr; /**< multiplier of the applied update a_t in the step the worker took
                                with this gradient (lr in force, times Adam's 1/(1-beta1^k));
                                0 = unknown: no curvature sample spans this step */
    double beta; /**< momentum / beta1 the worker applied in that step, in [0, 1) */
};

/**
 * Create a statistics state.
 *
 * @param be   backend that owns the arrays; borrowed, must outlive the state.
 * @param cfg  copied.
 * @param out  receives the state; free with grist_stats_free().
 * @return 0; GRIST_EBADDIM; GRIST_EBADCONF for other bad fields; -ENOMEM;
 *         GRIST_EDEVICE.
 */
int grist_stats_new(struct grist_backend *be, const struct grist_stats_config *cfg,
                    struct grist_stats **out);

/**
 * The bytes a state made with cfg holds: every array grist_stats_new()
 * allocates (host and backend memory, the momentum buffers, the lag ring,
 * the trajectory vectors, the feature covariances, the folded covariance and
 * its staging) and the state itself, without allocator overhead.
 *
 * @return the byte count; 0 when cfg is refused (as grist_stats_new would).
 */
size_t grist_stats_footprint(const struct grist_stats_config *cfg);

/** Free a state. NULL is allowed. */
void grist_stats_free(struct grist_stats *st);

/** Zero every statistic (keeps the configuration). @return 0 or GRIST_EDEVICE. */
int grist_stats_reset(struct grist_stats *st);

/** The configuration the state was made with. */
const struct grist_stats_config *grist_stats_config(const struct grist_stats *st);

/**
 * sum x_i^2 in double, in the one fixed order every sum of squares of a
 * sketch uses (the daemon's aggregation of the ranks' |s|^2 and the r0 of
 * grist_stats_update): equal sketches give bit-equal sums, so the noise of
 * W identical rank sketches is exactly 0. Eight partial sums, so the loop
 * is not bound by one add's latency.
 */
double grist_sumsq(const float *x, uint32_t n);

/**
 * Apply nsteps aggregated steps in order (a batched update: the covariance
 * takes them as one rank-b SYRK). All steps are validated before any is
 * applied.
 *
 * @return 0; -EINVAL for NULL pointers or nsteps = 0; GRIST_ENONFINITE when
 *         any value is NaN or Inf; GRIST_EBADLEN when a step's len is not m
 *         or its nworkers is 0 (in all these cases the state is unchanged);
 *         GRIST_EDEVICE when the device fails (the state is then reset).
 */
int grist_stats_update(struct grist_stats *st, const struct grist_step *steps, uint32_t nsteps);

/**
 * Feed a validation sketch (len = m floats):
 * J_val_j <- EMA(sqrt(1-b_j^2) <s_val, V_j>).
 *
 * @return 0; -EINVAL; GRIST_EBADLEN; GRIST_ENONFINITE (state unchanged in
 *         all three cases); GRIST_EDEVICE.
 */
int grist_stats_validation(struct grist_stats *st, const float *sketch, uint32_t len);

/** Read-only view of the scalar statistics (bias-corrected). */
struct grist_stats_view {
    uint64_t steps; /**< steps applied */
    uint64_t val_steps; /**< validation sketches applied */
    uint32_t ncand;
    const double *cand; /**< K betas */
    const double *J; /**< alignment per candidate */
    const double *J_val; /**< validation alignment per candidate */
    const double *E; /**< energy |V_j|^2 per candidate */
    const double *acf; /**< r_0 .. r_L (lags beyond steps-1 are 0) */
    uint32_t lags;
    double noise_loc; /**< sigma^2_loc (0 until a step had W >= 2) */
    double noise_mean; /**< sigma^2_loc / W: noise of the aggregated sketch */
    uint64_t worker_steps; /**< steps that had W >= 2 */
    double batch_size; /**< EMA of the local batch size */
    double nworkers; /**< EMA of W */
    const double *dots; /**< EMA of <s_t, V_j> per candidate (J without its sqrt(1-b^2)) */
    double lr; /**< lr of the newest step (0 = not reported) */
};

/** Index of the features f = (<s,V_j> for j < K, |V_j|^2 for j < K, |s|^2) of
 *  grist_stats_linear_se(): dots at j, energies at K + j, r0 at 2K. */
#define GRIST_FEAT_DOT(K, j) (j)
#define GRIST_FEAT_ENERGY(K, j) ((K) + (j))
#define GRIST_FEAT_R0(K) (2 * (K))
#define GRIST_MAX_FEATURES (2 * GRIST_MAX_CANDIDATES + 1)

/** One curvature estimate along the trajectory (docs/MATH.md 5.4). */
struct grist_curv_est {
    double kappa; /**< num / den, or 0 when den <= 0 */
    double se; /**< its standard error (delta method); INFINITY when unknown */
    uint64_t samples; /**< samples folded in */
    int identified; /**< kappa > 0 and kappa > 2 se */
};

/** The curvature the second-order rule uses, and both estimates it comes from. */
struct grist_curvature {
    double kappa; /**< the larger identified estimate; 0 when none is identified */
    double lo, hi; /**< plausible range: that estimate +- 2 se (lo >= 0); unidentified:
                           the range of the more precise estimate; hi = 0: no information */
    int source; /**< 0 none, 1 one-step, 2 k-step */
    struct grist_curv_est one_step, block;
};

/** Fill the curvature estimates of a state. */
void grist_stats_curvature(const struct grist_stats *st, struct grist_curvature *out);

/**
 * Standard error of w . f-hat, the EMA of the feature vector f (see
 * GRIST_FEAT_*), from the EMA covariance of f and the EMA's effective
 * sample size; w holds 2K + 1 weights.
 */
double grist_stats_linear_se(const struct grist_stats *st, const double *w);

/** Fill a view; its pointers stay valid until the next update or free. */
void grist_stats_get_view(const struct grist_stats *st, struct grist_stats_view *out);

/**
 * Standard error of J_a - J_b (a == b: of J_a alone), from the EMA
 * covariance of the per-step alignment samples and the effective sample
 * size (1 + gamma) / (1 - gamma) of the EMA.
 */
double grist_stats_diff_se(const struct grist_stats *st, uint32_t a, uint32_t b);

/**
 * Flush buffered covariance steps and solve the families of MATH.md section 7
 * on Sigma (m_cov x m_cov).
 *
 * @param delta  regularizer of the Lyapunov metric and of whitening.
 * @return 0; GRIST_ENOTREADY when there is no covariance (cov_dim 0 or no
 *         step yet); GRIST_ELAPACK; GRIST_EDEVICE.
 */
int grist_stats_families(struct grist_stats *st, double delta, struct grist_families *out);

/**
 * For family solves away from the thread that updates the statistics: copy
 * the raw second-moment state (m_cov^2 doubles, the layout the backend
 * keeps; c is its bias correction) to host memory. Pass both to
 * grist_families_from_snapshot() on any backend instance, e.g. one owned by
 * a low-priority thread, so that eigendecompositions never delay updates.
 *
 * @return 0; -EINVAL; GRIST_ENOTREADY; GRIST_EDEVICE.
 */
int grist_stats_sigma_snapshot(struct grist_stats *st, double *sigma, double *c);

/**
 * The families of a snapshot (n = m_cov), solved on backend be; the same
 * values grist_stats_families() returns for the state it was taken from.
 *
 * @return 0; -EINVAL; -ENOMEM; GRIST_ELAPACK; GRIST_EDEVICE.
 */
int grist_families_from_snapshot(struct grist_backend *be, uint32_t n, const double *sigma,
                                 double c, double delta, struct grist_families *out);

/**
 * Copy the bias-corrected covariance Sigma (full, column-major, m_cov^2
 * doubles) and mean mu (m_cov doubles; may be NULL) to host memory.
 *
 * @return 0; GRIST_ENOTREADY; GRIST_EDEVICE.
 */
int grist_stats_covariance(struct grist_stats *st, double *sigma, double *mu);

/** m_cov = min(m, cov_dim), 0 without covariance. */
uint32_t grist_stats_cov_dim(const struct grist_stats *st);

/**
 * Serialize the whole state (configuration included) into a flat,
 * versioned, checksummed little-endian buffer.
 *
 * @param buf  receives a malloc'd buffer owned by the caller (free()).
 * @return 0; -ENOMEM; GRIST_EDEVICE.
 */
int grist_stats_serialize(struct grist_stats *st, void **buf, size_t *len);

/**
 * The configuration inside grist_stats_serialize() output, without building
 * anything (to check a buffer against what it must be before allocating).
 *
 * @return 0; GRIST_EBADSTATE for a buffer that is truncated, corrupt or of
 *         another version.
 */
int grist_stats_peek_config(const void *buf, size_t len, struct grist_stats_config *cfg);

/**
 * Rebuild a state from grist_stats_serialize() output, on any backend.
 *
 * @return 0; GRIST_EBADSTATE for a buffer that is truncated, corrupt or of
 *         another version; errors of grist_stats_new().
 */
int grist_stats_deserialize(struct grist_backend *be, const void *buf, size_t len,
                            struct grist_stats **out);

#ifdef __cplusplus
}
#endif

#endif /* GRIST_STATS_H */
