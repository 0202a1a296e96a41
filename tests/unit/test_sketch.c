/* Unit tests of the count sketch (MATH.md section 2): bit-exact keys,
 * buckets and signs against vectors computed by an independent Python
 * implementation, chunking invariance, offsets, and argument checks. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grist/error.h"
#include "grist/sketch.h"
#include "../check_main.h"

START_TEST(test_fmix_vectors)
{
    ck_assert_uint_eq(grist_fmix32(0), 0);
    ck_assert_uint_eq(grist_fmix32(1), 0x514e28b7u);
    ck_assert_uint_eq(grist_fmix32(0xdeadbeefu), 0x0de5c6a9u);
    const uint32_t seed = grist_sketch_seed(12345, 0);
    ck_assert_uint_eq(seed, 0x6a976b2du);
    const struct { uint32_t i, key; } v[] = {
        {0, 0x0a061ae7u}, {1, 0x154af942u}, {2, 0xa56b7859u}, {1000, 0xaf56ac42u},
        {4294967295u, 0xd717d9f6u},
    };
    for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++)
        ck_assert_uint_eq(grist_sketch_key(v[k].i, seed), v[k].key);
}
END_TEST

START_TEST(test_sketch_vector)
{
    /* x_i = sin(i) + 0.5, n = 5000, m = 64, job_seed 7, group 3 (Python) */
    enum { N = 5000, M = 64 };
    double *x = malloc(N * sizeof(double));
    for (int i = 0; i < N; i++)
        x[i] = sin((double)i) + 0.5;
    double acc[M] = {0};
    ck_assert_int_eq(grist_sketch_accum_f64(grist_sketch_seed(7, 3), x, N, 0, acc, M, NULL), 0);
    ck_assert_double_eq_tol(acc[0], -9.316535350152575, 1e-9);
    ck_assert_double_eq_tol(acc[1], 0.18940767856639973, 1e-9);
    ck_assert_double_eq_tol(acc[2], -2.577668464160042, 1e-9);
    ck_assert_double_eq_tol(acc[3], 5.795374996449713, 1e-9);
    ck_assert_double_eq_tol(acc[63], 3.4556050065098134, 1e-9);
    free(x);
}
END_TEST

/* The chunked kernel equals a naive per-element loop, for float input, any
 * split of the group into tensors (offsets), and odd lengths. */
START_TEST(test_chunking_and_offsets)
{
    enum { N = 10007, M = 256 };
    float *x = malloc(N * sizeof(float));
    srand(42);
    for (int i = 0; i < N; i++)
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    const uint32_t seed = grist_sketch_seed(99, 1);
    double naive[M] = {0}, sq_naive = 0.0;
    for (uint32_t i = 0; i < N; i++) {
        uint32_t k = grist_sketch_key(i, seed);
        naive[k & (M - 1)] += ((k >> 31) ? -1.0 : 1.0) * x[i];
        sq_naive += (double)x[i] * x[i];
    }
    double acc[M] = {0}, sq = 0.0;
    /* three "tensors": 1, 4099, rest */
    ck_assert_int_eq(grist_sketch_accum_f32(seed, x, 1, 0, acc, M, &sq), 0);
    ck_assert_int_eq(grist_sketch_accum_f32(seed, x + 1, 4099, 1, acc, M, &sq), 0);
    ck_assert_int_eq(grist_sketch_accum_f32(seed, x + 4100, N - 4100, 4100, acc, M, &sq), 0);
    for (int b = 0; b < M; b++)
        ck_assert_double_eq_tol(acc[b], naive[b], 1e-9);
    ck_assert_double_eq_tol(sq, sq_naive, 1e-9);
    float out[M];
    grist_sketch_finish(acc, M, out);
    for (int b = 0; b < M; b++)
        ck_assert_float_eq(out[b], (float)acc[b]);
    free(x);
}
END_TEST

START_TEST(test_adam_variant)
{
    enum { N = 3000, M = 128 };
    float g[N], v[N];
    for (int i = 0; i < N; i++) {
        g[i] = (float)cos(i * 0.1);
        v[i] = (float)(0.01 + 0.001 * (i % 17));
    }
    const double vs = 1.0 / (1.0 - 0.999), eps = 1e-8;
    const uint32_t seed = grist_sketch_seed(5, 0);
    double acc[M] = {0}, sq = 0.0, ref[M] = {0}, sq_ref = 0.0;
    ck_assert_int_eq(grist_sketch_accum_adam_f32(seed, g, v, N, 0, vs, eps, acc, M, &sq), 0);
    for (uint32_t i = 0; i < N; i++) {
        const double p = sqrt(v[i] * vs) + eps, xi = g[i] / sqrt(p);
        uint32_t k = grist_sketch_key(i, seed);
        ref[k & (M - 1)] += ((k >> 31) ? -1.0 : 1.0) * xi;
        sq_ref += (double)g[i] * g[i] / p;
    }
    for (int b = 0; b < M; b++)
        ck_assert_double_eq_tol(acc[b], ref[b], 1e-9);
    ck_assert_double_eq_tol(sq, sq_ref, 1e-6 * sq_ref);
    ck_assert_int_eq(grist_sketch_accum_adam_f32(seed, g, v, N, 0, vs, 0.0, acc, M, &sq), -EINVAL);
}
END_TEST

START_TEST(test_bad_arguments)
{
    double acc[64] = {0};
    float x[4] = {1, 2, 3, 4};
    ck_assert_int_eq(grist_sketch_check_dim(1024), 0);
    ck_assert_int_eq(grist_sketch_check_dim(32), GRIST_EBADDIM);
    ck_assert_int_eq(grist_sketch_check_dim(1000), GRIST_EBADDIM);
    ck_assert_int_eq(grist_sketch_check_dim(131072), GRIST_EBADDIM);
    ck_assert_int_eq(grist_sketch_accum_f32(1, x, 4, 0, acc, 100, NULL), GRIST_EBADDIM);
    /* n >= 2^32 refused, as is a chunk reaching past 2^32 */
    ck_assert_int_eq(grist_sketch_accum_f32(1, x, (uint64_t)1 << 32, 1, acc, 64, NULL),
                     GRIST_ETOOBIG);
    ck_assert_int_eq(grist_sketch_accum_f32(1, x, 4, UINT32_MAX, acc, 64, NULL), GRIST_ETOOBIG);
    ck_assert_int_eq(grist_sketch_accum_f32(1, NULL, 4, 0, acc, 64, NULL), -EINVAL);
    for (int b = 0; b < 64; b++)
        ck_assert_double_eq(acc[b], 0.0); /* refused calls wrote nothing */
    ck_assert_str_eq(grist_err_name(GRIST_ETOOBIG), "GRIST_ETOOBIG");
    ck_assert_ptr_nonnull(strstr(grist_strerror(GRIST_EBADDIM), "power of two"));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("sketch");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_fmix_vectors);
    tcase_add_test(tc, test_sketch_vector);
    tcase_add_test(tc, test_chunking_and_offsets);
    tcase_add_test(tc, test_adam_variant);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
