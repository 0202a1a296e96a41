/*
 * docs/MATH.md section 9, tests T7 and T8: the second-order greedy rule
 * (section 5.4) on quadratics whose answer is known, with the whole kernel
 * path in the loop (sketch, statistics, curvature estimates, selection,
 * hysteresis) choosing the momentum of a real heavy-ball run.
 *
 *   L(x) = 1/2 sum_i h_i x_i^2, h log-spaced in [0.01, 1], n = 64,
 *   g = H x + xi, xi ~ N(0, c h) per coordinate, x_0 ~ N(0, 1).
 *
 * The exact expected loss after N steps of heavy ball at a fixed beta
 * follows from the second moments of (x_i, b_i), which evolve linearly;
 * that gives the best fixed beta of the default grid.
 *   T7 (noise c = 0.01, lr 0.02 and 0.1, starts beta 0 and 0.99, 3 seeds):
 *      the mean final loss of the rule's run is within 1.5x of the best
 *      fixed beta's expected loss, and its final beta within 0.35 of it (the
 *      rule lowers beta as the run reaches its noise floor).
 *   T8 (no noise, lr 0.02): the rule's beta ends within 0.03 of the
 *      classical heavy-ball optimum for that lr, (1 - sqrt(lr mu))^2.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grist/kernels.h"
#include "../rng.h"
#include "../check_main.h"

#define N 64
#define M 1024

static double hdiag[N];

static void setup_h(void)
{
    for (int i = 0; i < N; i++)
        hdiag[i] = 0.01 * pow(100.0, (double)i / (N - 1));
}

/* Statistics of one group (m = M, no covariance) on the reference backend. */
static struct grist_stats *new_stats(struct grist_backend **be)
{
    ck_assert_int_eq(grist_backend_open("ref", be), 0);
    struct grist_stats_config cfg;
    grist_stats_config_default(&cfg);
    cfg.m = M;
    cfg.cov_dim = 0;
    struct grist_stats *st;
    ck_assert_int_eq(grist_stats_new(*be, &cfg, &st), 0);
    return st;
}

/* One heavy-ball step x -= lr b, b = beta b + g, with g's sketch (seed sp,
 * left in sk) fed to the statistics together with the lr and beta applied. */
static void hb_step(struct grist_stats *st, uint32_t sp, const double *g, double *x, double *b,
                    double lr, double beta, float *sk)
{
    double acc[M] = {0};
    ck_assert_int_eq(grist_sketch_accum_f64(sp, g, N, 0, acc, M, NULL), 0);
    grist_sketch_finish(acc, M, sk);
    for (int i = 0; i < N; i++) {
        b[i] = beta * b[i] + g[i];
        x[i] -= lr * b[i];
    }
    struct grist_step s = {sk, M, 1, NULL, 1, 0, 0, lr, beta};
    ck_assert_int_eq(grist_stats_update(st, &s, 1), 0);
}

/* Exact E[L] after `steps` of heavy ball at a fixed beta. */
static double fixed_loss(double c, double lr, double beta, int steps)
{
    double total = 0.0;
    for (int i = 0; i < N; i++) {
        const double h = hdiag[i], q = c * h;
        double sxx = 1.0, sxb = 0.0, sbb = 0.0;
        for (int t = 0; t < steps; t++) {
            const double bbb = beta * beta * sbb + 2.0 * beta * h * sxb + h * h * sxx + q;
            const double bxb = beta * sxb + h * sxx;
            const double txx = sxx - 2.0 * lr * bxb + lr * lr * bbb;
            const double txb = bxb - lr * bbb;
            sxx = txx;
            sxb = txb;
            sbb = bbb;
        }
        total += 0.5 * h * sxx;
    }
    return total;
}

/* One run of heavy ball whose beta the rule sets every 5 steps; returns the
 * final loss and the final beta, and in *ratio (if not NULL) the largest
 * change of the horizon 1/(1-beta) made by one move. hstep 0: the default. */
static void rule_run_h(double c, double lr, double beta0, int steps, uint64_t seed, double hstep,
                       double *loss, double *beta_out, double *ratio)
{
    struct grist_backend *be;
    struct grist_stats *st = new_stats(&be);
    const struct grist_stats_config cfg = *grist_stats_config(st);
    struct grist_policy pol;
    grist_policy_default(&pol);
    ck_assert_int_eq(pol.rule, GRIST_RULE_CURVATURE);
    pol.noise = GRIST_NOISE_OFF; /* heavy ball: sigma^2 shifts every D_j alike */
    pol.min_steps = 10;
    if (hstep > 0.0)
        pol.horizon_step = hstep;
    double worst = 1.0;
    struct grist_selector sel;
    grist_selector_init(&sel, GRIST_FORM_HEAVY_BALL, beta0, N, cfg.cand, cfg.ncand);

    struct grist_rng r;
    grist_rng_seed(&r, seed);
    double x[N], b[N] = {0}, g[N];
    float sk[M];
    for (int i = 0; i < N; i++)
        x[i] = grist_rng_normal(&r);
    const uint32_t sp = grist_sketch_seed(grist_sketch_job_seed("t7"), 0);
    double beta = beta0;
    for (int t = 0; t < steps; t++) {
        for (int i = 0; i < N; i++)
            g[i] = hdiag[i] * x[i] + sqrt(c * hdiag[i]) * grist_rng_normal(&r);
        hb_step(st, sp, g, x, b, lr, beta, sk);
        if ((t + 1) % 5 == 0) {
            struct grist_choice ch;
            ck_assert_int_eq(grist_select_group(&pol, &sel, st, &ch), 0);
            if (ch.changed && beta < 1.0) {
                const double rr = (1.0 - fmin(beta, ch.beta)) / (1.0 - fmax(beta, ch.beta));
                worst = fmax(worst, rr);
            }
            beta = ch.beta;
        }
    }
    double l = 0.0;
    for (int i = 0; i < N; i++)
        l += 0.5 * hdiag[i] * x[i] * x[i];
    *loss = l;
    *beta_out = beta;
    if (ratio)
        *ratio = worst;
    grist_stats_free(st);
    grist_backend_close(be);
}

static void rule_run(double c, double lr, double beta0, int steps, uint64_t seed, double *loss,
                     double *beta_out)
{
    rule_run_h(c, lr, beta0, steps, seed, 0.0, loss, beta_out, NULL);
}

static const double t7_lr[] = {0.02, 0.1};

START_TEST(test_T7_noisy_quadratic)
{
    setup_h();
    const double c = 0.01, lr = t7_lr[_i];
    const int steps = 500;
    struct grist_stats_config cfg;
    grist_stats_config_default(&cfg);
    double best = INFINITY, best_beta = 0.0;
    for (uint32_t k = 0; k < cfg.ncand; k++) {
        const double l = fixed_loss(c, lr, cfg.cand[k], steps);
        if (l < best) {
            best = l;
            best_beta = cfg.cand[k];
        }
    }
    const double starts[2] = {0.0, 0.99};
    for (int s = 0; s < 2; s++) {
        double mean_loss = 0.0, mean_beta = 0.0;
        for (uint64_t seed = 1; seed <= 3; seed++) {
            double l, bt;
            rule_run(c, lr, starts[s], steps, seed, &l, &bt);
            mean_loss += l / 3.0;
            mean_beta += bt / 3.0;
        }
        printf("T7 lr %.2f start %.2f: loss %.5f (best fixed %.5f at beta %.3f; start fixed %.5f),"
               " final beta %.3f\n",
               lr, starts[s], mean_loss, best, best_beta, fixed_loss(c, lr, starts[s], steps),
               mean_beta);
        ck_assert_msg(mean_loss <= 1.5 * best, "lr %.2f start %.2f: loss %g vs best fixed %g", lr,
                      starts[s], mean_loss, best);
        ck_assert_msg(fabs(mean_beta - best_beta) <= 0.35, "final beta %.3f, best fixed %.3f",
                      mean_beta, best_beta);
    }
}
END_TEST

START_TEST(test_T8_heavy_ball_optimum)
{
    setup_h();
    const double lr = 0.02, mu = hdiag[0];
    const double classical = pow(1.0 - sqrt(lr * mu), 2.0);
    for (uint64_t seed = 1; seed <= 2; seed++) {
        double l, bt;
        rule_run(0.0, lr, 0.9, 500, seed, &l, &bt);
        printf("T8 seed %llu: final beta %.4f, classical optimum %.4f, loss %.3g\n",
               (unsigned long long)seed, bt, classical, l);
        ck_assert_msg(fabs(bt - classical) <= 0.03, "beta %.4f vs %.4f", bt, classical);
    }
}
END_TEST

/* One move changes the horizon 1/(1-beta) by at most --horizon-step: from
 * 0.99 at lr 0.1 the rule comes down in moves of exactly the step allowed. */
START_TEST(test_horizon_step)
{
    setup_h();
    const double steps_allowed[2] = {2.0, 4.0};
    for (int k = 0; k < 2; k++) {
        double l, bt, ratio;
        rule_run_h(0.01, 0.1, 0.99, 200, 1, steps_allowed[k], &l, &bt, &ratio);
        printf("horizon step %.0f: largest move %.3fx, final beta %.3f\n", steps_allowed[k], ratio,
               bt);
        ck_assert_msg(ratio <= steps_allowed[k] * (1 + 1e-6), "a move of %gx", ratio);
        ck_assert_msg(ratio > steps_allowed[k] * 0.7, "largest move %gx: the step never bound",
                      ratio);
    }
}
END_TEST

/* The curvature estimates themselves: along a pure quadratic with one
 * curvature h everywhere, both estimates converge to h. */
START_TEST(test_curvature_isotropic)
{
    struct grist_backend *be;
    struct grist_stats *st = new_stats(&be);
    struct grist_rng r;
    grist_rng_seed(&r, 5);
    const double h = 0.3, lr = 0.1, beta = 0.5;
    double x[N], b[N] = {0}, g[N];
    float sk[M];
    for (int i = 0; i < N; i++)
        x[i] = grist_rng_normal(&r);
    const uint32_t sp = grist_sketch_seed(7, 0);
    for (int t = 0; t < 60; t++) {
        for (int i = 0; i < N; i++)
            g[i] = h * x[i] + 1e-4 * grist_rng_normal(&r);
        hb_step(st, sp, g, x, b, lr, beta, sk);
    }
    struct grist_curvature cv;
    grist_stats_curvature(st, &cv);
    ck_assert_uint_ge(cv.block.samples, 6); /* one per 8-step block */
    printf("curvature: one-step %.4f +- %.4f, k-step %.4f +- %.4f (true %.2f)\n", cv.one_step.kappa,
           cv.one_step.se, cv.block.kappa, cv.block.se, h);
    ck_assert(cv.one_step.identified && cv.block.identified);
    ck_assert_double_eq_tol(cv.one_step.kappa, h, 0.05 * h);
    ck_assert_double_eq_tol(cv.block.kappa, h, 0.05 * h);
    /* bad applied values are refused and leave the state as it was */
    struct grist_step bad = {sk, M, 1, NULL, 1, 0, 0, -1.0, beta};
    ck_assert_int_eq(grist_stats_update(st, &bad, 1), GRIST_EBADCONF);
    bad.lr = NAN;
    ck_assert_int_eq(grist_stats_update(st, &bad, 1), GRIST_ENONFINITE);
    bad.lr = lr;
    bad.beta = 1.0;
    ck_assert_int_eq(grist_stats_update(st, &bad, 1), GRIST_EBADCONF);
    struct grist_curvature cv2;
    grist_stats_curvature(st, &cv2);
    ck_assert_double_eq(cv2.one_step.kappa, cv.one_step.kappa);
    /* the state round-trips through a snapshot with its curvature */
    void *buf;
    size_t len;
    ck_assert_int_eq(grist_stats_serialize(st, &buf, &len), 0);
    struct grist_stats *st2;
    ck_assert_int_eq(grist_stats_deserialize(be, buf, len, &st2), 0);
    grist_stats_curvature(st2, &cv2);
    ck_assert_double_eq(cv2.block.kappa, cv.block.kappa);
    ck_assert_double_eq(cv2.one_step.kappa, cv.one_step.kappa);
    free(buf);
    grist_stats_free(st2);
    grist_stats_free(st);
    grist_backend_close(be);
}
END_TEST

/* NAdam's EMA-Nesterov form: its update (1 - b)(s + b V) is the Nesterov
 * update times 1 - b, so F scales by 1 - b and E by (1 - b)^2 (docs/MATH.md
 * 5.4); the EMA form is the heavy ball's times 1 - b. */
START_TEST(test_forms_scale)
{
    double cand[3] = {0.0, 0.5, 0.9}, dots[3] = {0.7, 1.1, 2.5}, E[3] = {0.8, 1.9, 9.0};
    double acf[2] = {0.8, 0.3};
    struct grist_stats_view v =
        {.ncand = 3, .cand = cand, .dots = dots, .E = E, .acf = acf, .lags = 1};
    double Dn[3], Fn[3], En[3], Dm[3], Fm[3], Em[3], Dh[3], Fh[3], Eh[3], De[3], Fe[3], Ee[3];
    grist_greedy_drop(&v, GRIST_FORM_NESTEROV, 0.1, 2.0, 0.05, Dn, Fn, En);
    grist_greedy_drop(&v, GRIST_FORM_EMA_NESTEROV, 0.1, 2.0, 0.05, Dm, Fm, Em);
    grist_greedy_drop(&v, GRIST_FORM_HEAVY_BALL, 0.1, 2.0, 0.05, Dh, Fh, Eh);
    grist_greedy_drop(&v, GRIST_FORM_EMA, 0.1, 2.0, 0.05, De, Fe, Ee);
    for (int j = 0; j < 3; j++) {
        const double c = 1.0 - cand[j];
        ck_assert_double_eq_tol(Fm[j], c * Fn[j], 1e-12);
        ck_assert_double_eq_tol(Em[j], c * c * En[j], 1e-12);
        ck_assert_double_eq_tol(Dm[j], 0.1 * Fm[j] - 0.5 * 0.01 * 2.0 * Em[j], 1e-12);
        ck_assert_double_eq_tol(Fe[j], c * Fh[j], 1e-12);
        ck_assert_double_eq_tol(Ee[j], c * c * Eh[j], 1e-12);
    }
    ck_assert(grist_form_is_ema(GRIST_FORM_EMA_NESTEROV) &&
              !grist_form_is_ema(GRIST_FORM_NESTEROV));
    /* the DC coupling leaves both EMA forms' lr alone */
    ck_assert_double_eq(grist_lr_scale(GRIST_LR_DC, GRIST_FORM_EMA_NESTEROV, 0.5, 0.9), 1.0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("greedy");
    TCase *tc = tcase_create("T7-T8");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_curvature_isotropic);
    tcase_add_test(tc, test_horizon_step);
    tcase_add_test(tc, test_forms_scale);
    tcase_add_loop_test(tc, test_T7_noisy_quadratic, 0, 2);
    tcase_add_test(tc, test_T8_heavy_ball_optimum);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
