/*
 * Statistics state: bad input is refused with a specific code and leaves the
 * state byte-for-byte unchanged; a batched update equals the same steps one
 * by one; snapshots round-trip across backends and refuse corruption; the
 * selection rules (bounds, lr coupling, hysteresis) hold.
 */
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grist/kernels.h"
#include "../rng.h"
#include "../check_main.h"

enum { M = 128, W = 3 };

static struct grist_stats *make(struct grist_backend *be, uint32_t batch)
{
    struct grist_stats_config cfg;
    grist_stats_config_default(&cfg);
    cfg.m = M;
    cfg.cov_dim = 32;
    cfg.lags = 5;
    cfg.cov_batch = batch;
    struct grist_stats *st;
    ck_assert_int_eq(grist_stats_new(be, &cfg, &st), 0);
    return st;
}

static void fill(struct grist_rng *r, float *mean, float *workers)
{
    for (int i = 0; i < M; i++) {
        mean[i] = 0;
        for (int w = 0; w < W; w++) {
            workers[w * M + i] = (float)grist_rng_normal(r);
            mean[i] += workers[w * M + i] / W;
        }
    }
}

static void feed(struct grist_stats *st, struct grist_rng *r, int n)
{
    float mean[M], workers[W * M];
    for (int t = 0; t < n; t++) {
        fill(r, mean, workers);
        struct grist_step s = {mean, M, W, workers, 8, 0, 0, 0.0, 0.0};
        ck_assert_int_eq(grist_stats_update(st, &s, 1), 0);
    }
}

static void snapshot(struct grist_stats *st, void **buf, size_t *len)
{
    ck_assert_int_eq(grist_stats_serialize(st, buf, len), 0);
}

static void assert_same(struct grist_stats *st, const void *buf, size_t len)
{
    void *b2;
    size_t l2;
    snapshot(st, &b2, &l2);
    ck_assert_uint_eq(l2, len);
    ck_assert_int_eq(memcmp(buf, b2, len), 0);
    free(b2);
}

START_TEST(test_bad_input_leaves_state_unchanged)
{
    struct grist_backend *be;
    ck_assert_int_eq(grist_backend_open("cpu", &be), 0);
    struct grist_stats *st = make(be, 4);
    struct grist_rng r;
    grist_rng_seed(&r, 1);
    feed(st, &r, 30);
    void *buf;
    size_t len;
    snapshot(st, &buf, &len);

    float mean[M], workers[W * M];
    fill(&r, mean, workers);
    struct grist_step good = {mean, M, W, workers, 8, 0, 0, 0.0, 0.0};
    struct grist_step s = good;

    mean[17] = NAN;
    ck_assert_int_eq(grist_stats_update(st, &s, 1), GRIST_ENONFINITE);
    assert_same(st, buf, len);
    mean[17] = INFINITY;
    ck_assert_int_eq(grist_stats_update(st, &s, 1), GRIST_ENONFINITE);
    assert_same(st, buf, len);
    mean[17] = 0.5f;
    workers[2 * M + 3] = -INFINITY;
    ck_assert_int_eq(grist_stats_update(st, &s, 1), GRIST_ENONFINITE);
    assert_same(st, buf, len);
    workers[2 * M + 3] = 0.25f;

    s.len = M / 2;
    ck_assert_int_eq(grist_stats_update(st, &s, 1), GRIST_EBADLEN);
    assert_same(st, buf, len);
    s = good;
    s.nworkers = 0;
    ck_assert_int_eq(grist_stats_update(st, &s, 1), GRIST_EBADLEN);
    assert_same(st, buf, len);
    ck_assert_int_eq(grist_stats_update(st, NULL, 1), -EINVAL);
    ck_assert_int_eq(grist_stats_update(st, &good, 0), -EINVAL);

    /* a batch whose last step is bad applies none of its steps */
    float bad[M];
    memcpy(bad, mean, sizeof(bad));
    bad[0] = NAN;
    struct grist_step batch[3] = {good, good, {bad, M, 1, NULL, 8, 0, 0, 0.0, 0.0}};
    ck_assert_int_eq(grist_stats_update(st, batch, 3), GRIST_ENONFINITE);
    assert_same(st, buf, len);

    /* validation sketches too */
    ck_assert_int_eq(grist_stats_validation(st, bad, M), GRIST_ENONFINITE);
    ck_assert_int_eq(grist_stats_validation(st, mean, M + 1), GRIST_EBADLEN);
    assert_same(st, buf, len);

    /* and the good step still applies afterwards */
    ck_assert_int_eq(grist_stats_update(st, &good, 1), 0);
    struct grist_stats_view v;
    grist_stats_get_view(st, &v);
    ck_assert_uint_eq(v.steps, 31);
    free(buf);
    grist_stats_free(st);
    grist_backend_close(be);
}
END_TEST

/* grist_stats_footprint is what grist_stats_new allocates: on the ref
 * backend (host memory) the heap grows by the footprint plus at most the
 * allocator's own overhead (chunk headers, mmap pages), for the daemon's
 * default shape and a small one. Not under a sanitizer's allocator. */
START_TEST(test_footprint_is_what_new_allocates)
{
    if (getenv("GRIST_SANITIZED"))
        return;
    struct grist_backend *be;
    ck_assert_int_eq(grist_backend_open("ref", &be), 0);
    const uint32_t dims[][3] = {{1024, 256, 16}, {256, 0, 5}};
    for (int c = 0; c < 2; c++) {
        struct grist_stats_config cfg;
        grist_stats_config_default(&cfg);
        cfg.m = dims[c][0];
        cfg.cov_dim = dims[c][1];
        cfg.lags = dims[c][2];
        const size_t want = grist_stats_footprint(&cfg);
        ck_assert_uint_gt(want, (size_t)cfg.ncand * cfg.m * sizeof(double));
        struct mallinfo2 a = mallinfo2();
        struct grist_stats *st;
        ck_assert_int_eq(grist_stats_new(be, &cfg, &st), 0);
        struct mallinfo2 b = mallinfo2();
        const size_t got = (b.uordblks + b.hblkhd) - (a.uordblks + a.hblkhd);
        /* (a small chunk freed earlier may come back from glibc's tcache,
         * which mallinfo counts as in use: hence the slack below want) */
        ck_assert_msg(got + 4096 >= want && got <= want + want / 50 + 16384,
                      "m %u: the heap grew by %zu bytes, the footprint says %zu", cfg.m, got, want);
        grist_stats_free(st);
    }
    struct grist_stats_config bad;
    grist_stats_config_default(&bad);
    bad.m = 1000; /* not a power of two */
    ck_assert_uint_eq(grist_stats_footprint(&bad), 0);
    grist_backend_close(be);
}
END_TEST

START_TEST(test_bad_config)
{
    struct grist_backend *be;
    ck_assert_int_eq(grist_backend_open("ref", &be), 0);
    struct grist_stats_config cfg;
    struct grist_stats *st = NULL;
    grist_stats_config_default(&cfg);
    cfg.m = 1000;
    ck_assert_int_eq(grist_stats_new(be, &cfg, &st), GRIST_EBADDIM);
    grist_stats_config_default(&cfg);
    cfg.m = 32;
    ck_assert_int_eq(grist_stats_new(be, &cfg, &st), GRIST_EBADDIM);
    grist_stats_config_default(&cfg);
    cfg.cov_dim = 100;
    ck_assert_int_eq(grist_stats_new(be, &cfg, &st), GRIST_EBADCONF);
    grist_stats_config_default(&cfg);
    cfg.ncand = 0;
    ck_assert_int_eq(grist_stats_new(be, &cfg, &st), GRIST_EBADCONF);
    grist_stats_config_default(&cfg);
    cfg.cand[3] = 1.0;
    ck_assert_int_eq(grist_stats_new(be, &cfg, &st), GRIST_EBADCONF);
    grist_stats_config_default(&cfg);
    cfg.gamma = 1.0;
    ck_assert_int_eq(grist_stats_new(be, &cfg, &st), GRIST_EBADCONF);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(grist_backend_open("nope", &be), -EINVAL);
    grist_backend_close(be);
}
END_TEST

START_TEST(test_batched_equals_sequential)
{
    struct grist_backend *be;
    ck_assert_int_eq(grist_backend_open("cpu", &be), 0);
    struct grist_stats *a = make(be, 1), *b = make(be, 16);
    struct grist_rng r;
    grist_rng_seed(&r, 2);
    enum { T = 37 };
    static float means[T][M], workers[T][W * M];
    struct grist_step steps[T];
    for (int t = 0; t < T; t++) {
        fill(&r, means[t], workers[t]);
        steps[t] = (struct grist_step){means[t], M, W, workers[t], 8, 0, 0, 0.0, 0.0};
        ck_assert_int_eq(grist_stats_update(a, &steps[t], 1), 0);
    }
    ck_assert_int_eq(grist_stats_update(b, steps, 20), 0);
    ck_assert_int_eq(grist_stats_update(b, steps + 20, T - 20), 0);
    struct grist_stats_view va, vb;
    grist_stats_get_view(a, &va);
    grist_stats_get_view(b, &vb);
    ck_assert_uint_eq(va.steps, vb.steps);
    for (uint32_t j = 0; j < va.ncand; j++) {
        ck_assert_double_eq_tol(va.J[j], vb.J[j], 1e-9 * fabs(va.J[j]) + 1e-12);
        ck_assert_double_eq_tol(va.E[j], vb.E[j], 1e-9 * fabs(va.E[j]));
    }
    for (uint32_t k = 0; k <= va.lags; k++)
        ck_assert_double_eq_tol(va.acf[k], vb.acf[k], 1e-9 * fabs(va.acf[0]));
    ck_assert_double_eq_tol(va.noise_loc, vb.noise_loc, 1e-9 * va.noise_loc);
    double sa[32 * 32], sb[32 * 32], ma[32], mb[32];
    ck_assert_int_eq(grist_stats_covariance(a, sa, ma), 0);
    ck_assert_int_eq(grist_stats_covariance(b, sb, mb), 0);
    for (int i = 0; i < 32 * 32; i++)
        ck_assert_double_eq_tol(sa[i], sb[i], 1e-9 * fabs(sa[0]));
    for (int i = 0; i < 32; i++)
        ck_assert_double_eq_tol(ma[i], mb[i], 1e-12);
    /* W = 3 unit-variance workers: sigma^2_loc per bucket ~ 1, m buckets, the
     * sketch of a unit vector keeps its norm on average */
    ck_assert_msg(va.noise_loc > 0.5 * M && va.noise_loc < 1.5 * M, "noise %g", va.noise_loc);
    ck_assert_double_eq_tol(va.noise_mean, va.noise_loc / W, 1e-9 * va.noise_loc);
    grist_stats_free(a);
    grist_stats_free(b);
    grist_backend_close(be);
}
END_TEST

START_TEST(test_snapshot_roundtrip)
{
    struct grist_backend *cpu, *ref;
    ck_assert_int_eq(grist_backend_open("cpu", &cpu), 0);
    ck_assert_int_eq(grist_backend_open("ref", &ref), 0);
    struct grist_stats *a = make(cpu, 4);
    struct grist_rng r;
    grist_rng_seed(&r, 3);
    feed(a, &r, 23);
    void *buf;
    size_t len;
    snapshot(a, &buf, &len);
    struct grist_stats *b;
    ck_assert_int_eq(grist_stats_deserialize(ref, buf, len, &b), 0);
    assert_same(b, buf, len);
    /* both continue identically */
    struct grist_rng r1 = r, r2 = r;
    feed(a, &r1, 9);
    feed(b, &r2, 9);
    struct grist_stats_view va, vb;
    grist_stats_get_view(a, &va);
    grist_stats_get_view(b, &vb);
    for (uint32_t j = 0; j < va.ncand; j++)
        ck_assert_double_eq_tol(va.J[j], vb.J[j], 1e-9 * fabs(va.J[j]) + 1e-12);

    /* corruption, truncation, another version: refused */
    struct grist_stats *c = NULL;
    unsigned char *p = buf;
    p[len / 2] ^= 0x40;
    ck_assert_int_eq(grist_stats_deserialize(ref, buf, len, &c), GRIST_EBADSTATE);
    p[len / 2] ^= 0x40;
    ck_assert_int_eq(grist_stats_deserialize(ref, buf, len - 8, &c), GRIST_EBADSTATE);
    ck_assert_int_eq(grist_stats_deserialize(ref, buf, 10, &c), GRIST_EBADSTATE);
    p[8] = 99;
    ck_assert_int_eq(grist_stats_deserialize(ref, buf, len, &c), GRIST_EBADSTATE);
    ck_assert_ptr_null(c);
    free(buf);
    grist_stats_free(a);
    grist_stats_free(b);
    grist_backend_close(cpu);
    grist_backend_close(ref);
}
END_TEST

START_TEST(test_lr_coupling)
{
    ck_assert_double_eq(grist_lr_scale(GRIST_LR_NONE, GRIST_FORM_HEAVY_BALL, 0.5, 0.9), 1.0);
    ck_assert_double_eq_tol(grist_lr_scale(GRIST_LR_DC, GRIST_FORM_HEAVY_BALL, 0.5, 0.9), 5.0,
                            1e-12);
    ck_assert_double_eq(grist_lr_scale(GRIST_LR_DC, GRIST_FORM_EMA, 0.5, 0.9), 1.0);
    ck_assert_double_eq_tol(grist_lr_scale(GRIST_LR_ENERGY, GRIST_FORM_HEAVY_BALL, 0.6, 0.8),
                            0.8 / 0.6, 1e-12);
    ck_assert_double_eq_tol(grist_lr_scale(GRIST_LR_ENERGY, GRIST_FORM_EMA, 0.5, 0.9),
                            sqrt(1.5 * 0.1) / sqrt(0.5 * 1.9), 1e-12);
    enum grist_noise nm;
    ck_assert_int_eq(grist_noise_parse("acf", &nm), 0);
    ck_assert_int_eq(nm, GRIST_NOISE_ACF);
    ck_assert_int_eq(grist_noise_parse("bogus", &nm), -EINVAL);
    ck_assert_str_eq(grist_coupling_name(GRIST_LR_ENERGY), "energy");
}
END_TEST

/* A stream whose best beta is small: the selector needs H evaluations in a
 * row to move, never leaves [beta_min, beta_max], and clamps lr_scale. */
START_TEST(test_selection_rules)
{
    struct grist_backend *be;
    ck_assert_int_eq(grist_backend_open("cpu", &be), 0);
    struct grist_stats *st = make(be, 4);
    struct grist_rng r;
    grist_rng_seed(&r, 4);
    struct grist_policy pol;
    grist_policy_default(&pol);
    pol.rule = GRIST_RULE_ALIGNMENT; /* the first-order rule's hysteresis (T7 covers the other) */
    pol.h = 3;
    pol.noise = GRIST_NOISE_OFF;
    pol.beta_min = 0.3;
    pol.coupling = GRIST_LR_DC;
    pol.lr_scale_max = 3.0;
    const struct grist_stats_config *cfg = grist_stats_config(st);
    struct grist_selector sel;
    grist_selector_init(&sel, GRIST_FORM_HEAVY_BALL, 0.95, 1000, cfg->cand, cfg->ncand);
    struct grist_choice ch;
    /* white noise: the best candidate is beta = 0, which is below beta_min */
    float mean[M], workers[W * M];
    int evals = 0, moved_at = -1;
    for (int t = 0; t < 400; t++) {
        fill(&r, mean, workers);
        struct grist_step s = {mean, M, 1, NULL, 8, 0, 0, 0.0, 0.0};
        ck_assert_int_eq(grist_stats_update(st, &s, 1), 0);
        if (t % 10 == 9) {
            ck_assert_int_eq(grist_select_group(&pol, &sel, st, &ch), 0);
            evals++;
            ck_assert(ch.beta >= pol.beta_min && ch.beta <= pol.beta_max);
            ck_assert(ch.lr_scale <= pol.lr_scale_max + 1e-15);
            if (t < 20)
                ck_assert_double_eq(ch.beta, 0.95); /* warm-up: the user's beta */
            if (ch.changed && moved_at < 0)
                moved_at = evals;
        }
    }
    /* one warm-up evaluation (10 steps < min_steps 20), then H agreeing ones */
    ck_assert_int_eq(moved_at, 1 + (int)pol.h);
    ck_assert_double_eq_tol(ch.beta, 1.0 - pow(2.0, -0.75), 1e-12); /* smallest >= 0.3 */
    ck_assert_double_eq(ch.lr_scale, 3.0); /* dc: (1-0.405)/(1-0.95) = 11.9 clamped */
    ck_assert_ptr_nonnull(ch.reason);
    grist_stats_free(st);
    grist_backend_close(be);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_bad_input_leaves_state_unchanged);
    tcase_add_test(tc, test_bad_config);
    tcase_add_test(tc, test_footprint_is_what_new_allocates);
    tcase_add_test(tc, test_batched_equals_sequential);
    tcase_add_test(tc, test_snapshot_roundtrip);
    tcase_add_test(tc, test_lr_coupling);
    tcase_add_test(tc, test_selection_rules);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
