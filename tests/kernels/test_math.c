/*
 * MATH.md section 9, tests T1-T4, on the plain-C reference backend (T5, the
 * agreement of the other backends with it, is checkasm.c).
 *   T1 AR(1) stream: the chosen beta is within 0.05 of rho.
 *   T2 the same with 4x white noise and W = 4 workers: uncorrected < rho - 0.3,
 *      workers and acf corrections within 0.07 of rho.
 *   T3 sketch inner products: unbiased, variance within the bound of section 2.
 *   T4 family solutions: on their constraint, better than 10^4 random feasible
 *      Q, Lyapunov reductions, and the backends' reported values agree.
 */
#include <errno.h>
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grist/kernels.h"
#include "../rng.h"
#include "../check_main.h"

/* ---------- T1 / T2: an AR(1) gradient stream through sketch and stats ---------- */

struct stream_result {
    double beta_off, beta_workers, beta_acf;
};

/* Run `steps` steps of g_t = rho g_{t-1} + sqrt(1-rho^2) e_t (n elements),
 * observed by W workers each adding white noise of per-element variance
 * noise_var, and return the beta chosen under three noise modes. */
static void run_stream(double rho, int n, uint32_t m, int W, double noise_var, int steps,
                       uint64_t seed, struct stream_result *res)
{
    struct grist_backend *be;
    ck_assert_int_eq(grist_backend_open("ref", &be), 0);
    struct grist_stats_config cfg;
    grist_stats_config_default(&cfg);
    cfg.m = m;
    cfg.cov_dim = 0;
    struct grist_stats *st;
    ck_assert_int_eq(grist_stats_new(be, &cfg, &st), 0);

    struct grist_rng r;
    grist_rng_seed(&r, seed);
    double *g = calloc((size_t)n, sizeof(double));
    double *obs = malloc((size_t)n * sizeof(double));
    double *acc = malloc(m * sizeof(double));
    float *sk = malloc((size_t)W * m * sizeof(float));
    float *mean = malloc(m * sizeof(float));
    const uint32_t sp = grist_sketch_seed(0xC0FFEE, 0);
    const double a = sqrt(1.0 - rho * rho), sd = sqrt(noise_var);
    for (int i = 0; i < n; i++)
        g[i] = grist_rng_normal(&r);

    struct grist_policy pol[3];
    struct grist_selector sel[3];
    const enum grist_noise modes[3] = {GRIST_NOISE_OFF, GRIST_NOISE_WORKERS, GRIST_NOISE_ACF};
    for (int k = 0; k < 3; k++) {
        grist_policy_default(&pol[k]);
        pol[k].rule = GRIST_RULE_ALIGNMENT; /* T1 and T2 pin the first-order rule */
        pol[k].noise = modes[k];
        grist_selector_init(&sel[k], GRIST_FORM_HEAVY_BALL, 0.9, (uint64_t)n, cfg.cand, cfg.ncand);
    }
    struct grist_choice ch[3];
    for (int t = 0; t < steps; t++) {
        for (int i = 0; i < n; i++)
            g[i] = rho * g[i] + a * grist_rng_normal(&r);
        memset(mean, 0, m * sizeof(float));
        for (int w = 0; w < W; w++) {
            for (int i = 0; i < n; i++)
                obs[i] = g[i] + (sd > 0.0 ? sd * grist_rng_normal(&r) : 0.0);
            memset(acc, 0, m * sizeof(double));
            ck_assert_int_eq(grist_sketch_accum_f64(sp, obs, (uint64_t)n, 0, acc, m, NULL), 0);
            grist_sketch_finish(acc, m, sk + (size_t)w * m);
            for (uint32_t b = 0; b < m; b++)
                mean[b] += sk[(size_t)w * m + b] / (float)W;
        }
        struct grist_step step = {mean, m, (uint32_t)W, W >= 2 ? sk : NULL, 32, 0, 0, 0.0, 0.0};
        ck_assert_int_eq(grist_stats_update(st, &step, 1), 0);
        if ((t + 1) % 10 == 0)
            for (int k = 0; k < 3; k++)
                ck_assert_int_eq(grist_select_group(&pol[k], &sel[k], st, &ch[k]), 0);
    }
    res->beta_off = ch[0].beta;
    res->beta_workers = ch[1].beta;
    res->beta_acf = ch[2].beta;
    free(g);
    free(obs);
    free(acc);
    free(sk);
    free(mean);
    grist_stats_free(st);
    grist_backend_close(be);
}

static const double t1_rho[] = {0.3, 0.6, 0.9};

START_TEST(test_T1_ar1)
{
    const double rho = t1_rho[_i];
    struct stream_result res;
    run_stream(rho, 10000, 256, 1, 0.0, 2000, 1000 + (uint64_t)_i, &res);
    printf("T1 rho=%.1f: chosen beta %.3f\n", rho, res.beta_off);
    ck_assert_msg(fabs(res.beta_off - rho) <= 0.05, "rho %.2f: chose %.3f", rho, res.beta_off);
}
END_TEST

START_TEST(test_T2_noise)
{
    const double rho = 0.8;
    struct stream_result res;
    /* per-worker noise 16x the signal power: the mean of 4 carries 4x */
    run_stream(rho, 10000, 256, 4, 16.0, 2000, 77, &res);
    printf("T2 rho=0.8: uncorrected %.3f, workers %.3f, acf %.3f\n", res.beta_off, res.beta_workers,
           res.beta_acf);
    ck_assert_msg(res.beta_off < rho - 0.3, "uncorrected chose %.3f", res.beta_off);
    ck_assert_msg(fabs(res.beta_workers - rho) <= 0.07, "workers chose %.3f", res.beta_workers);
    ck_assert_msg(fabs(res.beta_acf - rho) <= 0.07, "acf chose %.3f", res.beta_acf);
}
END_TEST

/* ---------- T3: sketch inner products ---------- */

/* Cases: the sketch kind, the dimension the sketch is folded to before the
 * inner product (0 = none; the daemon folds to --cov-dim, section 2.2), and
 * the input: Gaussian, or a rank-one "weight gradient" a_r b_c laid out in
 * rows of 64, the structure that would break a block sketch whose rotations
 * or signs were shared between rows. */
static const struct {
    enum grist_sketch_kind kind;
    uint32_t fold;
    int rank_one;
    uint32_t sample; /* block: 1 run in sample (0 = 1) */
} t3_cases[] = {
    {GRIST_SKETCH_HASHED, 0, 0, 0}, {GRIST_SKETCH_HASHED, 64, 0, 0},
    {GRIST_SKETCH_BLOCK, 0, 0, 0},  {GRIST_SKETCH_BLOCK, 64, 0, 0},
    {GRIST_SKETCH_BLOCK, 0, 1, 0},  {GRIST_SKETCH_BLOCK, 256, 1, 0},
    {GRIST_SKETCH_BLOCK, 0, 0, 4},  {GRIST_SKETCH_BLOCK, 0, 0, 16},
    {GRIST_SKETCH_BLOCK, 0, 1, 16},
};

START_TEST(test_T3_sketch_variance)
{
    enum { N = 100000, SEEDS = 200 };
    const uint32_t m = 1024, mc = t3_cases[_i].fold ? t3_cases[_i].fold : m;
    const enum grist_sketch_kind kind = t3_cases[_i].kind;
    struct grist_rng r;
    grist_rng_seed(&r, 3);
    double *x = malloc(N * sizeof(double)), *y = malloc(N * sizeof(double));
    double a[N / 64 + 1], b2[64];
    for (int i = 0; i < N / 64 + 1; i++)
        a[i] = grist_rng_normal(&r);
    for (int i = 0; i < 64; i++)
        b2[i] = grist_rng_normal(&r);
    double xx = 0, yy = 0, xy = 0;
    for (int i = 0; i < N; i++) {
        x[i] = t3_cases[_i].rank_one ? a[i / 64] * b2[i % 64] : grist_rng_normal(&r);
        y[i] = 0.5 * x[i] + grist_rng_normal(&r);
        xx += x[i] * x[i];
        yy += y[i] * y[i];
        xy += x[i] * y[i];
    }
    /* the sketch's bound, plus for a sampled sketch the sampling's own
     * variance (N - 1) sum_r (x_r . y_r)^2 over the runs r (docs/MATH.md 2.2) */
    const uint32_t smp = t3_cases[_i].sample ? t3_cases[_i].sample : 1;
    double runs2 = 0;
    for (int r0 = 0; r0 < N; r0 += 64) {
        double d = 0;
        for (int i = r0; i < r0 + 64 && i < N; i++)
            d += x[i] * y[i];
        runs2 += d * d;
    }
    const double bound_var = (xx * yy + xy * xy) / mc + (smp - 1.0) * runs2;
    double *sx = malloc(m * sizeof(double)), *sy = malloc(m * sizeof(double));
    double sum = 0, sum2 = 0;
    for (int s = 0; s < SEEDS; s++) {
        memset(sx, 0, m * sizeof(double));
        memset(sy, 0, m * sizeof(double));
        const uint32_t sp = grist_sketch_seed((uint32_t)s * 7919u + 1u, 0);
        if (kind == GRIST_SKETCH_BLOCK) {
            grist_sketch_block_accum_f64(sp, smp, x, N, 0, sx, m, NULL);
            grist_sketch_block_accum_f64(sp, smp, y, N, 0, sy, m, NULL);
            grist_sketch_unsample(sx, m, smp, NULL);
            grist_sketch_unsample(sy, m, smp, NULL);
        } else {
            grist_sketch_accum_f64(sp, x, N, 0, sx, m, NULL);
            grist_sketch_accum_f64(sp, y, N, 0, sy, m, NULL);
        }
        for (uint32_t bk = mc; bk < m; bk++) { /* fold: bucket b' adds into b' mod mc */
            sx[bk & (mc - 1)] += sx[bk];
            sy[bk & (mc - 1)] += sy[bk];
        }
        double d = 0;
        for (uint32_t bk = 0; bk < mc; bk++)
            d += sx[bk] * sy[bk];
        const double z = (d - xy) / sqrt(bound_var); /* error in bound units */
        sum += z;
        sum2 += z * z;
    }
    const double mean = sum / SEEDS, var = sum2 / SEEDS - mean * mean;
    const double se = sqrt(var / SEEDS);
    printf("T3 %s/%u m %u fold %u %s: mean error %.4f (se %.4f) bound units, variance/bound %.3f\n",
           grist_sketch_kind_name(kind), smp, m, mc,
           t3_cases[_i].rank_one ? "rank-one" : "gaussian", mean, se, var);
    ck_assert_msg(fabs(mean) <= 3.0 * se, "biased: mean %.4f, se %.4f", mean, se);
    /* the empirical variance may not exceed the bound (sampling slack at
     * 200 seeds: 3.5 standard deviations of a variance estimate), and a broken sketch (e.g. signs ignored) blows past it */
    ck_assert_msg(var <= 1.35, "variance %.3f of the bound", var);
    ck_assert_msg(var >= 0.2, "variance %.3f of the bound: suspiciously small", var);
    free(x);
    free(y);
    free(sx);
    free(sy);
}
END_TEST

/* ---------- T4: stateless families ---------- */

enum { T4N = 8 };

static void random_spd(struct grist_rng *r, int n, double *s)
{
    double a[T4N * T4N];
    for (int i = 0; i < n * n; i++)
        a[i] = grist_rng_normal(r);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) {
            double d = 0;
            for (int k = 0; k < n; k++)
                d += a[i + k * n] * a[j + k * n] * (k + 1.0) / n; /* uneven spectrum */
            s[i + j * n] = d / n + (i == j ? 0.05 : 0.0);
        }
}

static void matmul(int n, const double *a, const double *b, double *c)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) {
            double d = 0;
            for (int k = 0; k < n; k++)
                d += a[i + k * n] * b[k + j * n];
            c[i + j * n] = d;
        }
}

static double trace_qcq(int n, const double *q, const double *c)
{
    double t1[T4N * T4N], t2[T4N * T4N];
    matmul(n, q, c, t1);
    matmul(n, t1, q, t2);
    double t = 0;
    for (int i = 0; i < n; i++)
        t += t2[i + i * n];
    return t;
}

static double op_norm(int n, const double *a)
{
    /* sqrt(lambda_max(A^T A)) */
    double at[T4N * T4N], ata[T4N * T4N], w[T4N];
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++)
            at[i + j * n] = a[j + i * n];
    matmul(n, at, a, ata);
    ck_assert_int_eq(grist_eig_ref((uint32_t)n, ata, w, NULL), 0);
    return sqrt(w[n - 1] > 0 ? w[n - 1] : 0);
}

/* The constraint's "norm" of Q for a family: homogeneous of degree 1. */
static double constraint(enum grist_family f, int n, const double *q, const double *s,
                         const double *shalf, const double *metric)
{
    double t[T4N * T4N];
    switch (f) {
    case GRIST_FAMILY_FROBENIUS: {
        double d = 0;
        for (int i = 0; i < n * n; i++)
            d += q[i] * q[i];
        return sqrt(d);
    }
    case GRIST_FAMILY_SPECTRAL:
        return op_norm(n, q);
    case GRIST_FAMILY_ISOTROPIC:
        return sqrt(trace_qcq(n, q, s));
    case GRIST_FAMILY_LYAPUNOV:
        return sqrt(trace_qcq(n, q, metric));
    case GRIST_FAMILY_WHITENED:
        matmul(n, shalf, q, t);
        return op_norm(n, t);
    case GRIST_FAMILY_DIAGONAL: {
        double mx = 0;
        for (int i = 0; i < n; i++)
            mx = fmax(mx, fabs(q[i + i * n]) * sqrt(s[i + i * n]));
        return mx;
    }
    }
    return NAN;
}

static double inner(int n, const double *a, const double *b)
{
    double d = 0;
    for (int i = 0; i < n * n; i++)
        d += a[i] * b[i];
    return d;
}

START_TEST(test_T4_families)
{
    const int n = T4N;
    const double B = 1.7, delta = 1e-13;
    struct grist_rng r;
    grist_rng_seed(&r, 44);
    double s[T4N * T4N], w[T4N], u[T4N * T4N], shalf[T4N * T4N], metric[T4N * T4N];
    random_spd(&r, n, s);
    ck_assert_int_eq(grist_eig_ref(n, s, w, u), 0);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) {
            double d = 0;
            for (int k = 0; k < n; k++)
                d += u[i + k * n] * sqrt(w[k]) * u[j + k * n];
            shalf[i + j * n] = d;
        }
    memset(metric, 0, sizeof(metric));
    for (int i = 0; i < n; i++)
        metric[i + i * n] = s[i + i * n] + delta;

    for (int f = GRIST_FAMILY_FROBENIUS; f <= GRIST_FAMILY_DIAGONAL; f++) {
        double q[T4N * T4N], value;
        ck_assert_int_eq(grist_family_solve((enum grist_family)f, n, s, NULL, B, delta, q, &value),
                         0);
        const double c = constraint((enum grist_family)f, n, q, s, shalf, metric);
        ck_assert_msg(fabs(c - B) <= 1e-10 * B, "family %d: constraint %.15g != B", f, c);
        double best_random = 0;
        for (int trial = 0; trial < 10000; trial++) {
            double rq[T4N * T4N];
            memset(rq, 0, sizeof(rq));
            for (int j = 0; j < n; j++)
                for (int i = j; i < n; i++) {
                    if (f == GRIST_FAMILY_DIAGONAL && i != j)
                        continue;
                    rq[i + j * n] = rq[j + i * n] = grist_rng_normal(&r);
                }
            const double k = B / constraint((enum grist_family)f, n, rq, s, shalf, metric);
            const double v = fabs(inner(n, rq, s)) * k;
            best_random = fmax(best_random, v);
        }
        ck_assert_msg(value >= best_random, "family %d: Q* %.6g below a random Q %.6g", f, value,
                      best_random);
    }

    /* Lyapunov reductions: C = I gives Frobenius, C = Sigma gives isotropic power */
    double eye[T4N * T4N] = {0}, qa[T4N * T4N], qb[T4N * T4N];
    for (int i = 0; i < n; i++)
        eye[i + i * n] = 1.0;
    ck_assert_int_eq(grist_family_solve(GRIST_FAMILY_LYAPUNOV, n, s, eye, B, 0, qa, NULL), 0);
    ck_assert_int_eq(grist_family_solve(GRIST_FAMILY_FROBENIUS, n, s, NULL, B, 0, qb, NULL), 0);
    for (int i = 0; i < n * n; i++)
        ck_assert_double_eq_tol(qa[i], qb[i], 1e-10);
    ck_assert_int_eq(grist_family_solve(GRIST_FAMILY_LYAPUNOV, n, s, s, B, 0, qa, NULL), 0);
    ck_assert_int_eq(grist_family_solve(GRIST_FAMILY_ISOTROPIC, n, s, NULL, B, 0, qb, NULL), 0);
    for (int i = 0; i < n * n; i++)
        ck_assert_double_eq_tol(qa[i], qb[i], 1e-10);
}
END_TEST

/* The family values the statistics report (radius 1, through each host
 * backend's families slot) are <Q*, Sigma> of the closed forms above,
 * evaluated on the same bias-corrected Sigma. */
START_TEST(test_T4_reported_values)
{
    const char *names[] = {"ref", "cpu"};
    for (int b = 0; b < 2; b++) {
        struct grist_backend *be;
        ck_assert_int_eq(grist_backend_open(names[b], &be), 0);
        struct grist_stats_config cfg;
        grist_stats_config_default(&cfg);
        cfg.m = 64;
        cfg.cov_dim = 8;
        cfg.cov_batch = 7;
        struct grist_stats *st;
        ck_assert_int_eq(grist_stats_new(be, &cfg, &st), 0);
        struct grist_rng r;
        grist_rng_seed(&r, 5);
        float sk[64];
        for (int t = 0; t < 50; t++) {
            for (int i = 0; i < 64; i++)
                sk[i] = (float)(grist_rng_normal(&r) * (1.0 + (i % 8)));
            struct grist_step step = {sk, 64, 1, NULL, 1, 0, 0, 0.0, 0.0};
            ck_assert_int_eq(grist_stats_update(st, &step, 1), 0);
        }
        struct grist_families fam;
        const double delta = 1e-9;
        ck_assert_int_eq(grist_stats_families(st, delta, &fam), 0);
        double sigma[64], q[64], v[6];
        ck_assert_int_eq(grist_stats_covariance(st, sigma, NULL), 0);
        for (int f = 0; f < 6; f++)
            ck_assert_int_eq(grist_family_solve((enum grist_family)f, 8, sigma, NULL, 1.0, delta, q,
                                                &v[f]),
                             0);
        const double got[6] = {fam.value_frobenius, fam.value_spectral, fam.value_isotropic,
                               fam.value_lyapunov,  fam.value_whitened, fam.value_diagonal};
        for (int f = 0; f < 6; f++) {
            /* whitened and diagonal closed forms carry delta in a different place */
            const double tol = (f == 4 || f == 5) ? 1e-6 : 1e-9;
            ck_assert_msg(fabs(got[f] - v[f]) <= tol * fabs(v[f]), "%s family %d: %.12g vs %.12g",
                          names[b], f, got[f], v[f]);
        }
        ck_assert_double_eq_tol(fam.effective_rank,
                                fam.trace * fam.trace / (fam.frobenius * fam.frobenius), 1e-12);
        /* a snapshot solved on another backend instance (gristd's families
         * thread) gives the same values, bit for bit on the same backend kind */
        double snap[64], c = 0;
        ck_assert_int_eq(grist_stats_sigma_snapshot(st, snap, &c), 0);
        struct grist_backend *be2;
        ck_assert_int_eq(grist_backend_open(names[b], &be2), 0);
        struct grist_families fam2;
        ck_assert_int_eq(grist_families_from_snapshot(be2, 8, snap, c, delta, &fam2), 0);
        ck_assert_mem_eq(&fam, &fam2, sizeof(fam));
        ck_assert_int_eq(grist_families_from_snapshot(be2, 8, snap, 0.0, delta, &fam2), -EINVAL);
        grist_backend_close(be2);
        grist_stats_free(st);
        grist_backend_close(be);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("math");
    TCase *tc = tcase_create("T1-T4");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_T1_ar1, 0, 3);
    tcase_add_test(tc, test_T2_noise);
    tcase_add_loop_test(tc, test_T3_sketch_variance, 0,
                        (int)(sizeof(t3_cases) / sizeof(t3_cases[0])));
    tcase_add_test(tc, test_T4_families);
    tcase_add_test(tc, test_T4_reported_values);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
