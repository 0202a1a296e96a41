/*
 * DESIGN: per-(job, group) statistics of MATH.md section 3.
 *
 * The large arrays (momentum buffers V: K x m, lag ring: L x m, covariance
 * Sigma: m_cov^2, pending covariance columns: m_cov x cov_batch) live in the
 * backend's memory; the K- and L-sized EMAs live on the host. Each step:
 *   1. s (m doubles) is uploaded once, the momentum slot updates V and
 *      returns <s, V_j> and |V_j|^2 (K.m work, one pass);
 *   2. the rowdots slot gives <s, s_{t-k}> against the ring (L.m), then s
 *      replaces the oldest ring entry;
 *   3. the sketch folded to m_cov is scaled and parked as a pending column;
 *      when cov_batch columns are parked one SYRK applies them all:
 *        Sigma <- g^b Sigma + sum_i (1-g) g^(b-1-i) s_i s_i^T
 *      which equals b single EMA steps exactly (columns are pre-scaled by
 *      sqrt((1-g) g^-i), SYRK uses alpha = g^(b-1), beta = g^b);
 *   4. worker noise from the per-worker sketches (W.m, host).
 * All EMAs start at 0 and are bias-corrected on read by 1 - g^t with their
 * own count t. Every input is validated before the first write, so a bad
 * step leaves the state exactly as it was.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "grist/error.h"
#include "grist/sketch.h"
#include "grist/stats.h"
#include "stats_impl.h"

uint32_t grist_candidates_default(double beta_min, double beta_max, double *out)
{
    uint32_t k = 0;
    if (0.0 >= beta_min && 0.0 <= beta_max)
        out[k++] = 0.0;
    for (int i = 1; i <= 31; i++) {
        const double b = 1.0 - pow(2.0, -i / 4.0);
        if (b >= beta_min && b <= beta_max)
            out[k++] = b;
    }
    return k;
}

void grist_stats_config_default(struct grist_stats_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->m = 1024;
    cfg->cov_dim = 256;
    cfg->lags = 16;
    cfg->cov_batch = 16;
    cfg->gamma = 0.95;
    cfg->ncand = grist_candidates_default(0.0, 0.995, cfg->cand);
    cfg->form = GRIST_FORM_HEAVY_BALL;
    cfg->curv_block = 8;
}

static int check_config(const struct grist_stats_config *cfg)
{
    int r = grist_sketch_check_dim(cfg->m);
    if (r < 0)
        return r;
    if (cfg->cov_dim != 0 &&
        (cfg->cov_dim < 8 || cfg->cov_dim > GRIST_SKETCH_MAX_DIM ||
         (cfg->cov_dim & (cfg->cov_dim - 1)) != 0))
        return GRIST_EBADCONF;
    if (cfg->lags < 1 || cfg->lags > GRIST_MAX_LAGS)
        return GRIST_EBADCONF;
    if (cfg->cov_batch < 1 || cfg->cov_batch > 256)
        return GRIST_EBADCONF;
    if (!(cfg->gamma > 0.0 && cfg->gamma < 1.0))
        return GRIST_EBADCONF;
    if (cfg->ncand < 1 || cfg->ncand > GRIST_MAX_CANDIDATES)
        return GRIST_EBADCONF;
    for (uint32_t j = 0; j < cfg->ncand; j++)
        if (!(cfg->cand[j] >= 0.0 && cfg->cand[j] < 1.0))
            return GRIST_EBADCONF;
    if (cfg->form > GRIST_FORM_EMA_NESTEROV || cfg->curv_block < 2 || cfg->curv_block > 256)
        return GRIST_EBADCONF;
    return 0;
}

static size_t dev_bytes_V(const struct grist_stats *st)
{
    return (size_t)st->cfg.ncand * st->cfg.m * sizeof(double);
}
static size_t dev_bytes_ring(const struct grist_stats *st)
{
    return (size_t)st->cfg.lags * st->cfg.m * sizeof(double);
}
static size_t dev_bytes_sigma(const struct grist_stats *st)
{
    return (size_t)st->mcov * st->mcov * sizeof(double);
}
static size_t dev_bytes_pending(const struct grist_stats *st)
{
    return (size_t)st->mcov * st->cfg.cov_batch * sizeof(double);
}

static void clear_host(struct grist_stats *st)
{
    st->steps = 0;
    st->val_steps = 0;
    st->worker_steps = 0;
    st->cov_steps = 0;
    st->sigma_steps = 0;
    st->npending = 0;
    st->ring_head = 0;
    memset(st->J, 0, sizeof(st->J));
    memset(st->E, 0, sizeof(st->E));
    memset(st->Jval, 0, sizeof(st->Jval));
    memset(st->XX, 0, sizeof(st->XX));
    const uint32_t nf = 2 * st->cfg.ncand + 1;
    if (st->FF)
        memset(st->FF, 0, (size_t)nf * nf * sizeof(double));
    if (st->FF1)
        memset(st->FF1, 0, (size_t)nf * nf * sizeof(double));
    if (st->fprev)
        memset(st->fprev, 0, nf * sizeof(double));
    if (st->traj)
        memset(st->traj, 0, 8 * (size_t)st->cfg.m * sizeof(double));
    st->traj_n = 0;
    st->block_open = st->block_i = 0;
    st->traj_lr = 0.0;
    memset(&st->c1, 0, sizeof(st->c1));
    memset(&st->cb, 0, sizeof(st->cb));
    memset(st->acf, 0, sizeof(st->acf));
    memset(st->acf_n, 0, sizeof(st->acf_n));
    st->noise_loc = st->noise_mean = 0.0;
    st->batch_ema = st->nworkers_ema = 0.0;
    if (st->mu)
        memset(st->mu, 0, st->mcov * sizeof(double));
}

int grist_stats_reset(struct grist_stats *st)
{
    clear_host(st);
    struct grist_backend *be = st->be;
    int r = be->ops.zero(be, st->V, dev_bytes_V(st));
    if (r == 0)
        r = be->ops.zero(be, st->ring, dev_bytes_ring(st));
    if (r == 0 && st->mcov)
        r = be->ops.zero(be, st->sigma, dev_bytes_sigma(st));
    return r;
}

void grist_stats_free(struct grist_stats *st)
{
    if (!st)
        return;
    struct grist_backend *be = st->be;
    if (st->V)
        be->ops.free(be, st->V);
    if (st->ring)
        be->ops.free(be, st->ring);
    if (st->s_dev)
        be->ops.free(be, st->s_dev);
    if (st->sigma)
        be->ops.free(be, st->sigma);
    if (st->pending)
        be->ops.free(be, st->pending);
    free(st->s_host);
    free(st->FF);
    free(st->FF1);
    free(st->fprev);
    free(st->traj);
    free(st->fold);
    free(st->mu);
    free(st);
}

size_t grist_stats_footprint(const struct grist_stats_config *cfg)
{
    if (!cfg || check_config(cfg) < 0)
        return 0;
    const size_t m = cfg->m, K = cfg->ncand, L = cfg->lags, nf = 2 * K + 1, d = sizeof(double);
    const size_t mc = cfg->cov_dim == 0 ? 0 : (m < cfg->cov_dim ? m : cfg->cov_dim);
    /* as grist_stats_new allocates them, in its order */
    size_t b = sizeof(struct grist_stats);
    b += m * d; /* s_host */
    b += 2 * nf * nf * d + nf * d; /* FF, FF1, fprev */
    b += 8 * m * d; /* traj: U, a_prev, a_cur, s_last, R, R_ref, s_ref, Dsp */
    b += K * m * d + L * m * d + m * d; /* V, ring, s_dev */
    if (mc)
        b += 2 * mc * d + mc * mc * d + mc * cfg->cov_batch * d; /* fold, mu, sigma, pending */
    return b;
}

int grist_stats_new(struct grist_backend *be, const struct grist_stats_config *cfg,
                    struct grist_stats **out)
{
    if (!be || !cfg || !out)
        return -EINVAL;
    int r = check_config(cfg);
    if (r < 0)
        return r;
    struct grist_stats *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->be = be;
    st->cfg = *cfg;
    st->mcov = cfg->cov_dim == 0 ? 0 : (cfg->m < cfg->cov_dim ? cfg->m : cfg->cov_dim);
    st->pend_w_step = 1.0 / sqrt(cfg->gamma);
    r = -ENOMEM;
    st->s_host = malloc((size_t)cfg->m * sizeof(double));
    const size_t nf = 2 * (size_t)cfg->ncand + 1;
    st->FF = malloc(nf * nf * sizeof(double));
    st->FF1 = malloc(nf * nf * sizeof(double));
    st->fprev = malloc(nf * sizeof(double));
    st->traj = malloc(8 * (size_t)cfg->m * sizeof(double));
    if (!st->s_host || !st->FF || !st->FF1 || !st->fprev || !st->traj)
        goto fail;
    {
        double **arr[8] = {&st->U, &st->a_prev, &st->a_cur, &st->s_last,
                           &st->R, &st->R_ref,  &st->s_ref, &st->Dsp};
        for (int i = 0; i < 8; i++)
            *arr[i] = st->traj + (size_t)i * cfg->m;
    }
    st->V = be->ops.alloc(be, dev_bytes_V(st));
    st->ring = be->ops.alloc(be, dev_bytes_ring(st));
    st->s_dev = be->ops.alloc(be, (size_t)cfg->m * sizeof(double));
    if (!st->V || !st->ring || !st->s_dev)
        goto fail;
    if (st->mcov) {
        st->fold = malloc(st->mcov * sizeof(double));
        st->mu = calloc(st->mcov, sizeof(double));
        st->sigma = be->ops.alloc(be, dev_bytes_sigma(st));
        st->pending = be->ops.alloc(be, dev_bytes_pending(st));
        if (!st->fold || !st->mu || !st->sigma || !st->pending)
            goto fail;
    }
    clear_host(st);
    *out = st;
    return 0;
fail:
    grist_stats_free(st);
    return r;
}

const struct grist_stats_config *grist_stats_config(const struct grist_stats *st)
{
    return &st->cfg;
}

uint32_t grist_stats_cov_dim(const struct grist_stats *st)
{
    return st->mcov;
}

static int all_finite(const float *x, size_t n)
{
    /* Sum of x*0 is NaN iff some x is NaN or Inf; one pass, vectorizable. */
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++)
        acc += x[i] * 0.0f;
    return acc == 0.0f;
}

static int check_step(const struct grist_stats *st, const struct grist_step *s)
{
    const uint32_t m = st->cfg.m;
    if (!s->sketch)
        return -EINVAL;
    if (s->len != m)
        return GRIST_EBADLEN;
    if (s->nworkers < 1)
        return GRIST_EBADLEN;
    if (!all_finite(s->sketch, m))
        return GRIST_ENONFINITE;
    if (s->nworkers >= 2 && s->worker_sketches &&
        !all_finite(s->worker_sketches, (size_t)s->nworkers * m))
        return GRIST_ENONFINITE;
    if (s->has_worker_sq && !(isfinite(s->worker_sq_sum) && s->worker_sq_sum >= 0.0))
        return GRIST_ENONFINITE;
    if (!isfinite(s->lr) || !isfinite(s->beta))
        return GRIST_ENONFINITE;
    if (s->lr < 0.0 || !(s->beta >= 0.0 && s->beta < 1.0))
        return GRIST_EBADCONF;
    return 0;
}

static inline double ema(double old, double x, double g)
{
    return g * old + (1.0 - g) * x;
}

int grist__stats_cov_flush(struct grist_stats *st)
{
    if (!st->mcov || st->npending == 0)
        return 0;
    const double g = st->cfg.gamma;
    const int b = (int)st->npending;
    int r = st->be->ops.syrk(st->be, (int)st->mcov, b, pow(g, b - 1), st->pending, pow(g, b),
                             st->sigma);
    if (r < 0)
        return r;
    st->sigma_steps += st->npending;
    st->npending = 0;
    return 0;
}

/* Fold s (m doubles) to m_cov, update mu, stage the column pre-scaled by
 * sqrt((1-g) g^-i) and flush with one SYRK when cov_batch columns wait.
 * Folding adds the m/m_cov slices of s, a vectorizable loop. */
int grist__stats_cov_push(struct grist_stats *st, const double *s)
{
    const uint32_t m = st->cfg.m, mc = st->mcov;
    const double g = st->cfg.gamma;
    double *restrict f = st->fold;
    memcpy(f, s, mc * sizeof(double));
    for (uint32_t c = mc; c < m; c += mc) {
        const double *restrict sl = s + c;
        for (uint32_t i = 0; i < mc; i++)
            f[i] += sl[i];
    }
    const double w = st->npending ? st->pend_w * st->pend_w_step : sqrt(1.0 - g);
    /* host backends: write the scaled column straight into its slot */
    const int host = st->be->ops.upload == grist__host_upload;
    double *restrict col = st->pending + (size_t)st->npending * mc;
    double *restrict dst = host ? col : f;
    for (uint32_t i = 0; i < mc; i++) {
        const double x = f[i];
        st->mu[i] = g * st->mu[i] + (1.0 - g) * x;
        dst[i] = x * w;
    }
    if (!host) {
        int r = st->be->ops.upload(st->be, col, f, mc * sizeof(double));
        if (r < 0)
            return r;
    }
    st->pend_w = w;
    st->npending++;
    st->cov_steps++;
    if (st->npending == st->cfg.cov_batch)
        return grist__stats_cov_flush(st);
    return 0;
}

static void noise_update(struct grist_stats *st, double v, uint32_t W)
{
    const double g = st->cfg.gamma;
    st->noise_loc = ema(st->noise_loc, v, g);
    st->noise_mean = ema(st->noise_mean, v / W, g);
    st->worker_steps++;
}

static void curv_add(struct grist__curv *c, double num, double den, double g)
{
    c->m0 = ema(c->m0, num, g);
    c->m1 = ema(c->m1, den, g);
    c->c00 = ema(c->c00, num * num, g);
    c->c01 = ema(c->c01, num * den, g);
    c->c11 = ema(c->c11, den * den, g);
    c->n++;
}

/* <a, b> and <r, y - x> (without forming the difference), with sixteen
 * partial sums in a fixed order: a serial add chain would be bound by the
 * add latency (m = 1024: about 4 us), this by the loads. Inlined into the
 * AVX2 + FMA clone of their callers. */
static inline __attribute__((always_inline)) double dot(const double *restrict a,
                                                        const double *restrict b, uint32_t m)
{
    grist__v4d q[4] = {{0}};
    uint32_t i = 0;
    for (; i + 16 <= m; i += 16)
        for (int l = 0; l < 4; l++) {
            grist__v4d x, y;
            memcpy(&x, a + i + 4 * l, sizeof(x));
            memcpy(&y, b + i + 4 * l, sizeof(y));
            q[l] += x * y;
        }
    const grist__v4d t = (q[0] + q[1]) + (q[2] + q[3]);
    double s = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < m; i++)
        s += a[i] * b[i];
    return s;
}

static inline __attribute__((always_inline)) double
dot_diff(const double *restrict r, const double *restrict y, const double *restrict x, uint32_t m)
{
    grist__v4d q[4] = {{0}};
    uint32_t i = 0;
    for (; i + 16 <= m; i += 16)
        for (int l = 0; l < 4; l++) {
            grist__v4d rv, yv, xv;
            memcpy(&rv, r + i + 4 * l, sizeof(rv));
            memcpy(&yv, y + i + 4 * l, sizeof(yv));
            memcpy(&xv, x + i + 4 * l, sizeof(xv));
            q[l] += rv * (yv - xv);
        }
    const grist__v4d t = (q[0] + q[1]) + (q[2] + q[3]);
    double s = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < m; i++)
        s += r[i] * (y[i] - x[i]);
    return s;
}

/* Decay of the k-step estimate: its samples come every k steps. */
#define GRIST__CURV_BLOCK_GAMMA 0.9
/* Decay of the reference average R that the k-step estimate pairs with. */
#define GRIST__CURV_REF_BETA 0.9

/* The curvature samples of docs/MATH.md 5.4, then the applied update of this
 * step. s is s_t (m doubles); lr and beta are what the worker used with it. */
GRIST__CLONES_V3
static void trajectory_step(struct grist_stats *st, const double *restrict s, double lr,
                            double beta)
{
    const uint32_t m = st->cfg.m;
    /* one-step: <a_{t-2}, -(s_t - s_{t-1}) / lr_{t-1}> over <a_{t-2}, a_{t-1}> */
    if (st->traj_n >= 2 && st->traj_lr > 0.0)
        curv_add(&st->c1, -dot_diff(st->a_prev, s, st->s_last, m) / st->traj_lr,
                 dot(st->a_prev, st->a_cur, m), st->cfg.gamma);
    /* k-step: <R_ref, -(s_t - s_ref)> over <R_ref, sum of lr a> since s_ref */
    if (st->block_open && st->block_i == st->cfg.curv_block) {
        curv_add(&st->cb, -dot_diff(st->R_ref, s, st->s_ref, m), dot(st->R_ref, st->Dsp, m),
                 GRIST__CURV_BLOCK_GAMMA);
        st->block_open = 0;
    }
    /* a block opens where R holds at least one step (R_ref = R_{t-1} is then
     * independent of the noise of s_t and of every later sketch) */
    if (!st->block_open && st->traj_n >= 1 && lr > 0.0) {
        memcpy(st->R_ref, st->R, m * sizeof(double));
        memcpy(st->s_ref, s, m * sizeof(double));
        memset(st->Dsp, 0, m * sizeof(double));
        st->block_open = 1;
        st->block_i = 0;
    }
    /* the update the worker applied with s_t */
    double *restrict U = st->U, *restrict a = st->a_prev; /* a_{t-2}'s memory becomes a_t */
    const double w = grist_form_is_ema(st->cfg.form) ? 1.0 - beta : 1.0;
    for (uint32_t i = 0; i < m; i++)
        U[i] = beta * U[i] + w * s[i];
    if (st->cfg.form == GRIST_FORM_NESTEROV)
        for (uint32_t i = 0; i < m; i++)
            a[i] = s[i] + beta * U[i];
    else if (st->cfg.form == GRIST_FORM_EMA_NESTEROV)
        for (uint32_t i = 0; i < m; i++)
            a[i] = beta * U[i] + (1.0 - beta) * s[i];
    else
        memcpy(a, U, m * sizeof(double));
    st->a_prev = st->a_cur;
    st->a_cur = a;
    if (st->block_open) {
        if (lr > 0.0) {
            double *restrict D = st->Dsp;
            for (uint32_t i = 0; i < m; i++)
                D[i] += lr * a[i];
            st->block_i++;
        } else {
            st->block_open = 0; /* an unknown lr breaks the open block */
        }
    }
    double *restrict R = st->R;
    for (uint32_t i = 0; i < m; i++)
        R[i] = GRIST__CURV_REF_BETA * R[i] + s[i];
    memcpy(st->s_last, s, m * sizeof(double));
    st->traj_lr = lr;
    if (st->traj_n < 2)
        st->traj_n++;
}

/* EMA of the features f = (dots, energies, r0) and of f f^T (upper triangle). */
GRIST__CLONES_V3
static void features_step(struct grist_stats *st, double r0)
{
    const uint32_t K = st->cfg.ncand, nf = 2 * K + 1;
    const double g = st->cfg.gamma;
    double f[GRIST_MAX_FEATURES];
    for (uint32_t j = 0; j < K; j++) {
        f[GRIST_FEAT_DOT(K, j)] = st->dots[j];
        f[GRIST_FEAT_ENERGY(K, j)] = st->energy[j];
    }
    f[GRIST_FEAT_R0(K)] = r0;
    const int lag = st->steps > 0;
    for (uint32_t a = 0; a < nf; a++) {
        double *restrict row = st->FF + (size_t)a * nf;
        double *restrict row1 = st->FF1 + (size_t)a * nf;
        const double fa = (1.0 - g) * f[a];
        for (uint32_t b = a; b < nf; b++)
            row[b] = g * row[b] + fa * f[b];
        if (lag)
            for (uint32_t b = 0; b < nf; b++)
                row1[b] = g * row1[b] + fa * st->fprev[b];
    }
    memcpy(st->fprev, f, nf * sizeof(double));
}

GRIST__CLONES_V3
double grist_sumsq(const float *x, uint32_t n)
{
    typedef float v4f __attribute__((vector_size(16)));
    grist__v4d q0 = {0}, q1 = {0};
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f f0, f1;
        memcpy(&f0, x + i, sizeof(f0));
        memcpy(&f1, x + i + 4, sizeof(f1));
        const grist__v4d x0 = __builtin_convertvector(f0, grist__v4d),
                         x1 = __builtin_convertvector(f1, grist__v4d);
        q0 += x0 * x0;
        q1 += x1 * x1;
    }
    const grist__v4d q = q0 + q1;
    double sq = (q[0] + q[1]) + (q[2] + q[3]);
    for (; i < n; i++)
        sq += (double)x[i] * x[i];
    return sq;
}

/* The per-step loops (conversion, trajectory, features) are many short
 * passes over m or over the feature matrix; an AVX2 + FMA clone of the step
 * runs them four wide where the machine has it (picked at load time). */
GRIST__CLONES_V3
static int apply_step(struct grist_stats *st, const struct grist_step *in)
{
    struct grist_backend *be = st->be;
    const uint32_t m = st->cfg.m, K = st->cfg.ncand, L = st->cfg.lags;
    const double g = st->cfg.gamma;
    int r;

    for (uint32_t i = 0; i < m; i++)
        st->s_host[i] = in->sketch[i];
    const double r0 = grist_sumsq(in->sketch, m);
    r = be->ops.upload(be, st->s_dev, st->s_host, m * sizeof(double));
    if (r < 0)
        return r;

    /* 1. virtual momentum buffers, alignment and energy */
    r = be->ops.momentum(be, (int)K, (int)m, st->cfg.cand, st->V, st->s_dev, st->dots, st->energy);
    if (r < 0)
        return r;
    double x[GRIST_MAX_CANDIDATES];
    for (uint32_t j = 0; j < K; j++) {
        const double b = st->cfg.cand[j];
        x[j] = sqrt(1.0 - b * b) * st->dots[j];
        st->J[j] = ema(st->J[j], x[j], g);
        st->E[j] = ema(st->E[j], st->energy[j], g);
    }
    for (uint32_t a = 0; a < K; a++)
        for (uint32_t b = 0; b < K; b++)
            st->XX[a * K + b] = ema(st->XX[a * K + b], x[a] * x[b], g);
    features_step(st, r0);
    trajectory_step(st, st->s_host, in->lr, in->beta);

    /* 2. autocorrelation against the ring of the last L sketches */
    st->acf[0] = ema(st->acf[0], r0, g);
    st->acf_n[0]++;
    r = be->ops.rowdots(be, (int)L, (int)m, st->ring, st->s_dev, st->lagd);
    if (r < 0)
        return r;
    for (uint32_t k = 0; k < L; k++) {
        /* slot k was written lag steps ago */
        const uint32_t lag = (st->ring_head + L - 1 - k) % L + 1;
        if (lag <= st->steps) {
            st->acf[lag] = ema(st->acf[lag], st->lagd[k], g);
            st->acf_n[lag]++;
        }
    }
    r = be->ops.upload(be, st->ring + (size_t)st->ring_head * m, st->s_host, m * sizeof(double));
    if (r < 0)
        return r;
    st->ring_head = (st->ring_head + 1) % L;

    /* 3. folded second moment and mean */
    if (st->mcov) {
        r = grist__stats_cov_push(st, st->s_host);
        if (r < 0)
            return r;
    }

    /* 4. worker noise */
    if (in->nworkers >= 2 && in->worker_sketches) {
        const uint32_t W = in->nworkers;
        double v = 0.0;
        for (uint32_t w = 0; w < W; w++) {
            const float *sw = in->worker_sketches + (size_t)w * m;
            for (uint32_t i = 0; i < m; i++) {
                const double d = (double)sw[i] - (double)in->sketch[i];
                v += d * d;
            }
        }
        v /= (double)(W - 1);
        noise_update(st, v, W);
    } else if (in->nworkers >= 2 && in->has_worker_sq) {
        const uint32_t W = in->nworkers;
        double v = (in->worker_sq_sum - (double)W * r0) / (double)(W - 1);
        noise_update(st, v > 0.0 ? v : 0.0, W);
    }
    st->batch_ema = ema(st->batch_ema, in->batch_size, g);
    st->nworkers_ema = ema(st->nworkers_ema, in->nworkers, g);
    st->steps++;
    return 0;
}

int grist_stats_update(struct grist_stats *st, const struct grist_step *steps, uint32_t nsteps)
{
    if (!st || !steps || nsteps == 0)
        return -EINVAL;
    for (uint32_t i = 0; i < nsteps; i++) {
        int r = check_step(st, &steps[i]);
        if (r < 0)
            return r;
    }
    for (uint32_t i = 0; i < nsteps; i++) {
        int r = apply_step(st, &steps[i]);
        if (r < 0) {
            /* Only a device failure gets here; the state is then unknown. */
            grist_stats_reset(st);
            return GRIST_EDEVICE;
        }
    }
    return 0;
}

int grist_stats_validation(struct grist_stats *st, const float *sketch, uint32_t len)
{
    if (!st || !sketch)
        return -EINVAL;
    const uint32_t m = st->cfg.m, K = st->cfg.ncand;
    if (len != m)
        return GRIST_EBADLEN;
    if (!all_finite(sketch, m))
        return GRIST_ENONFINITE;
    struct grist_backend *be = st->be;
    for (uint32_t i = 0; i < m; i++)
        st->s_host[i] = sketch[i];
    int r = be->ops.upload(be, st->s_dev, st->s_host, m * sizeof(double));
    if (r == 0)
        r = be->ops.rowdots(be, (int)K, (int)m, st->V, st->s_dev, st->dots);
    if (r < 0)
        return GRIST_EDEVICE;
    for (uint32_t j = 0; j < K; j++) {
        const double b = st->cfg.cand[j];
        st->Jval[j] = ema(st->Jval[j], sqrt(1.0 - b * b) * st->dots[j], st->cfg.gamma);
    }
    st->val_steps++;
    return 0;
}

static double corr(double g, uint64_t n)
{
    return n ? 1.0 / (1.0 - pow(g, (double)n)) : 0.0;
}

/* Effective sample size of an EMA of decay g over n samples: (1 + g) / (1 - g),
 * capped by the samples seen. */
static double ema_neff(double g, uint64_t n)
{
    const double neff = (1.0 + g) / (1.0 - g);
    return (double)n < neff ? (double)n : neff;
}

void grist_stats_get_view(const struct grist_stats *cst, struct grist_stats_view *out)
{
    struct grist_stats *st = (struct grist_stats *)cst; /* view buffers are caches */
    const double g = st->cfg.gamma;
    const double c = corr(g, st->steps), cv = corr(g, st->val_steps);
    for (uint32_t j = 0; j < st->cfg.ncand; j++) {
        st->vJ[j] = st->J[j] * c;
        st->vE[j] = st->E[j] * c;
        st->vJval[j] = st->Jval[j] * cv;
    }
    for (uint32_t k = 0; k <= st->cfg.lags; k++)
        st->vacf[k] = st->acf[k] * corr(g, st->acf_n[k]);
    memset(out, 0, sizeof(*out));
    out->steps = st->steps;
    out->val_steps = st->val_steps;
    out->ncand = st->cfg.ncand;
    out->cand = st->cfg.cand;
    out->J = st->vJ;
    out->J_val = st->vJval;
    out->E = st->vE;
    out->acf = st->vacf;
    out->lags = st->cfg.lags;
    const double cw = corr(g, st->worker_steps);
    out->noise_loc = st->noise_loc * cw;
    out->noise_mean = st->noise_mean * cw;
    out->worker_steps = st->worker_steps;
    out->batch_size = st->batch_ema * c;
    out->nworkers = st->nworkers_ema * c;
    for (uint32_t j = 0; j < st->cfg.ncand; j++) /* J_j = EMA(sqrt(1-b^2) <s,V_j>) */
        st->vdots[j] = st->vJ[j] / sqrt(1.0 - st->cfg.cand[j] * st->cfg.cand[j]);
    out->dots = st->vdots;
    out->lr = st->traj_lr;
}

static void curv_est(const struct grist__curv *cv, double g, struct grist_curv_est *o)
{
    memset(o, 0, sizeof(*o));
    o->samples = cv->n;
    o->se = INFINITY;
    if (cv->n < 2)
        return;
    const double c = corr(g, cv->n);
    const double m0 = cv->m0 * c, m1 = cv->m1 * c;
    if (!(m1 > GRIST_TINY))
        return;
    o->kappa = m0 / m1;
    const double v00 = cv->c00 * c - m0 * m0, v01 = cv->c01 * c - m0 * m1,
                 v11 = cv->c11 * c - m1 * m1;
    const double neff = ema_neff(g, cv->n);
    double var = (v00 - 2.0 * o->kappa * v01 + o->kappa * o->kappa * v11) / (m1 * m1) / neff;
    o->se = sqrt(var > 0.0 ? var : 0.0);
    o->identified = o->kappa > 0.0 && o->kappa > 2.0 * o->se;
}

void grist_stats_curvature(const struct grist_stats *st, struct grist_curvature *out)
{
    memset(out, 0, sizeof(*out));
    curv_est(&st->c1, st->cfg.gamma, &out->one_step);
    curv_est(&st->cb, GRIST__CURV_BLOCK_GAMMA, &out->block);
    if (out->one_step.identified) {
        out->kappa = out->one_step.kappa;
        out->source = 1;
    }
    if (out->block.identified && out->block.kappa > out->kappa) {
        out->kappa = out->block.kappa;
        out->source = 2;
    }
    const struct grist_curv_est *e = out->source == 1 ? &out->one_step
        : out->source == 2                            ? &out->block
        : out->one_step.se <= out->block.se           ? &out->one_step
                                                      : &out->block;
    if (isfinite(e->se)) {
        const double k = e->kappa > 0.0 ? e->kappa : 0.0;
        out->lo = fmax(0.0, e->kappa - 2.0 * e->se);
        out->hi = k + 2.0 * e->se;
    }
}

double grist_stats_linear_se(const struct grist_stats *st, const double *w)
{
    const uint32_t K = st->cfg.ncand, nf = 2 * K + 1;
    if (st->steps < 2)
        return INFINITY;
    const double g = st->cfg.gamma, c = corr(g, st->steps);
    double mean[GRIST_MAX_FEATURES];
    for (uint32_t j = 0; j < K; j++) {
        mean[GRIST_FEAT_DOT(K, j)] = st->J[j] * c / sqrt(1.0 - st->cfg.cand[j] * st->cfg.cand[j]);
        mean[GRIST_FEAT_ENERGY(K, j)] = st->E[j] * c;
    }
    mean[GRIST_FEAT_R0(K)] = st->acf[0] * c;
    /* lag-1 products have one sample fewer; their bias correction too */
    const double c1 = st->steps > 1 ? corr(g, st->steps - 1) : 0.0;
    double var = 0.0, cov1 = 0.0;
    for (uint32_t a = 0; a < nf; a++) {
        if (w[a] == 0.0)
            continue;
        for (uint32_t b = 0; b < nf; b++) {
            if (w[b] == 0.0)
                continue;
            const double ff = a <= b ? st->FF[(size_t)a * nf + b] : st->FF[(size_t)b * nf + a];
            var += w[a] * w[b] * (ff * c - mean[a] * mean[b]);
            cov1 += w[a] * w[b] * (st->FF1[(size_t)a * nf + b] * c1 - mean[a] * mean[b]);
        }
    }
    if (!(var > 0.0))
        return 0.0;
    /* the samples of w.f are autocorrelated (V_j is a smoothed sum): with
     * their lag-1 correlation rho, an AR(1) model gives the variance of a
     * mean (1 + rho) / (1 - rho) times the independent one */
    double rho = cov1 / var;
    rho = rho < 0.0 ? 0.0 : (rho > 0.995 ? 0.995 : rho);
    double neff = ema_neff(g, st->steps) * (1.0 - rho) / (1.0 + rho);
    if (neff < 1.0)
        neff = 1.0;
    return sqrt(var / neff);
}

double grist_stats_diff_se(const struct grist_stats *st, uint32_t a, uint32_t b)
{
    const uint32_t K = st->cfg.ncand;
    if (a >= K || b >= K || st->steps < 2)
        return INFINITY;
    const double g = st->cfg.gamma, c = corr(g, st->steps);
    const double ja = st->J[a] * c, jb = st->J[b] * c;
    const double caa = st->XX[a * K + a] * c - ja * ja;
    const double cbb = st->XX[b * K + b] * c - jb * jb;
    const double cab = st->XX[a * K + b] * c - ja * jb;
    double var = a == b ? caa : caa + cbb - 2.0 * cab;
    if (var < 0.0)
        var = 0.0;
    return sqrt(var / ema_neff(g, st->steps));
}

/* The families of Sigma-hat = c Sigma from a solve on Sigma with delta / c. */
static void families_rescale(double c, struct grist_families *out)
{
    const double sc = sqrt(c);
    out->trace *= c;
    out->frobenius *= c;
    out->lambda_max *= c;
    out->trace_sqrt *= sc;
    out->value_frobenius *= c;
    out->value_spectral *= c;
    out->value_isotropic *= sc;
    out->value_lyapunov *= sc;
    out->value_whitened *= sc;
    out->value_diagonal *= sc;
}

int grist_stats_families(struct grist_stats *st, double delta, struct grist_families *out)
{
    if (!st || !out)
        return -EINVAL;
    if (!st->mcov || st->cov_steps == 0)
        return GRIST_ENOTREADY;
    int r = grist__stats_cov_flush(st);
    if (r < 0)
        return GRIST_EDEVICE;
    const double c = corr(st->cfg.gamma, st->sigma_steps);
    r = st->be->ops.families(st->be, (int)st->mcov, st->sigma, delta / c, out);
    if (r < 0)
        return r;
    families_rescale(c, out);
    return 0;
}

int grist_stats_sigma_snapshot(struct grist_stats *st, double *sigma, double *c)
{
    if (!st || !sigma || !c)
        return -EINVAL;
    if (!st->mcov || st->cov_steps == 0)
        return GRIST_ENOTREADY;
    if (grist__stats_cov_flush(st) < 0 ||
        st->be->ops.download(st->be, sigma, st->sigma, dev_bytes_sigma(st)) < 0)
        return GRIST_EDEVICE;
    *c = corr(st->cfg.gamma, st->sigma_steps);
    return 0;
}

int grist_families_from_snapshot(struct grist_backend *be, uint32_t n, const double *sigma,
                                 double c, double delta, struct grist_families *out)
{
    if (!be || !sigma || !out || n == 0 || !(c > 0.0))
        return -EINVAL;
    const size_t bytes = (size_t)n * n * sizeof(double);
    double *dev = be->ops.alloc(be, bytes);
    if (!dev)
        return -ENOMEM;
    int r = be->ops.upload(be, dev, sigma, bytes);
    if (r == 0)
        r = be->ops.families(be, (int)n, dev, delta / c, out);
    be->ops.free(be, dev);
    if (r < 0)
        return r;
    families_rescale(c, out);
    return 0;
}

int grist_stats_covariance(struct grist_stats *st, double *sigma, double *mu)
{
    if (!st || !sigma)
        return -EINVAL;
    if (!st->mcov || st->cov_steps == 0)
        return GRIST_ENOTREADY;
    if (grist__stats_cov_flush(st) < 0)
        return GRIST_EDEVICE;
    const uint32_t n = st->mcov;
    if (st->be->ops.download(st->be, sigma, st->sigma, dev_bytes_sigma(st)) < 0)
        return GRIST_EDEVICE;
    const double c = corr(st->cfg.gamma, st->sigma_steps);
    for (uint32_t j = 0; j < n; j++)
        for (uint32_t i = j; i < n; i++)
            sigma[j + (size_t)i * n] = sigma[i + (size_t)j * n] = sigma[i + (size_t)j * n] * c;
    if (mu) {
        const double cm = corr(st->cfg.gamma, st->cov_steps);
        for (uint32_t i = 0; i < n; i++)
            mu[i] = st->mu[i] * cm;
    }
    return 0;
}
