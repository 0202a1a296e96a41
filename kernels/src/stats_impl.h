/* Internal layout of struct grist_stats (stats.c, stats_io.c). */
#ifndef GRIST_STATS_IMPL_H
#define GRIST_STATS_IMPL_H

#include <stdint.h>

#include "grist/stats.h"

struct grist_stats {
    struct grist_backend *be; /* borrowed */
    struct grist_stats_config cfg;
    uint32_t mcov;

    /* backend memory */
    double *V; /* K x m virtual momentum buffers */
    double *ring; /* L x m last sketches */
    double *s_dev; /* m: the current sketch */
    double *sigma; /* mcov x mcov, lower triangle, raw EMA */
    double *pending; /* mcov x cov_batch pre-scaled columns */

    /* host */
    double *s_host; /* m scratch */
    double *fold; /* mcov scratch */
    double *mu; /* mcov raw EMA of the folded sketch */

    double pend_w, pend_w_step; /* scale of the last staged column; 1/sqrt(g) */
    uint64_t steps, val_steps, worker_steps, cov_steps, sigma_steps;
    uint32_t npending, ring_head;

    double J[GRIST_MAX_CANDIDATES];
    double E[GRIST_MAX_CANDIDATES];
    double Jval[GRIST_MAX_CANDIDATES];
    double XX[GRIST_MAX_CANDIDATES * GRIST_MAX_CANDIDATES];
    double acf[GRIST_MAX_LAGS + 1];
    uint64_t acf_n[GRIST_MAX_LAGS + 1];
    double noise_loc, noise_mean, batch_ema, nworkers_ema;

    /* features for the second-order rule, f = (dots, energies, r0), nf = 2K + 1;
     * their means are J / sqrt(1 - b^2), E and acf[0] */
    double *FF; /* nf x nf: EMA of f_t f_t^T (upper triangle used), host */
    double *FF1; /* nf x nf: EMA of f_t f_{t-1}^T (lag-1, for the autocorrelation) */
    double *fprev; /* nf: f_{t-1} */

    /* curvature along the applied trajectory (docs/MATH.md 5.4), host:
     * U applied buffer, a_prev / a_cur applied updates a_{t-1}, a_t, s_last
     * s_t, R reference average, R_ref / s_ref / Dsp the open k-step block */
    double *traj; /* 8 x m */
    double *U, *a_prev, *a_cur, *s_last, *R, *R_ref, *s_ref, *Dsp;
    uint32_t traj_n; /* steps seen by the trajectory (saturates at 2) */
    uint32_t block_open, block_i; /* a k-step block is open; steps folded into it */
    double traj_lr; /* lr of the step that produced s_last (the newest lr) */
    struct grist__curv {
        double m0, m1, c00, c01, c11;
        uint64_t n;
    } c1, cb;

    /* scratch and view caches (not serialized) */
    double dots[GRIST_MAX_CANDIDATES], energy[GRIST_MAX_CANDIDATES];
    double lagd[GRIST_MAX_LAGS];
    double vJ[GRIST_MAX_CANDIDATES], vE[GRIST_MAX_CANDIDATES], vJval[GRIST_MAX_CANDIDATES];
    double vdots[GRIST_MAX_CANDIDATES];
    double vacf[GRIST_MAX_LAGS + 1];
};

/* The covariance path, exposed for the benchmark (tests/bench). */
int grist__stats_cov_push(struct grist_stats *st, const double *s);
int grist__stats_cov_flush(struct grist_stats *st);

#endif /* GRIST_STATS_IMPL_H */
