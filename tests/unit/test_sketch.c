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
    const struct {
        uint32_t i, key;
    } v[] = {
        {0, 0x0a061ae7u},    {1, 0x154af942u},           {2, 0xa56b7859u},
        {1000, 0xaf56ac42u}, {4294967295u, 0xd717d9f6u},
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

/* ---- the block sketch ---- */

START_TEST(test_block_vector)
{
    /* x_i = sin(i) + 0.5, n = 5000, m = 64, job_seed 7, group 3: values from
     * numpy_block_sketch in tests/sketch_ref.py; first buckets and signs of
     * m = 1024 from its block_buckets_signs */
    enum { N = 5000, M = 64 };
    double *x = malloc(N * sizeof(double));
    for (int i = 0; i < N; i++)
        x[i] = sin((double)i) + 0.5;
    double acc[M] = {0};
    const uint32_t sp = grist_sketch_seed(7, 3);
    ck_assert_int_eq(grist_sketch_block_accum_f64(sp, 1, x, N, 0, acc, M, NULL), 0);
    ck_assert_double_eq_tol(acc[0], -1.0673828836988117, 1e-9);
    ck_assert_double_eq_tol(acc[1], -13.704714679051339, 1e-9);
    ck_assert_double_eq_tol(acc[2], -1.4925510598295504, 1e-9);
    ck_assert_double_eq_tol(acc[3], -1.9323337854082792, 1e-9);
    ck_assert_double_eq_tol(acc[63], -3.1497378946474957, 1e-9);
    ck_assert_uint_eq(grist_sketch_block_bucket(0, sp, 1024), 127);
    ck_assert_uint_eq(grist_sketch_block_bucket(2, sp, 1024), 129);
    ck_assert_uint_eq(grist_sketch_block_bucket(64, sp, 1024), 381);
    const int neg[8] = {0, 0, 1, 0, 0, 1, 1, 1};
    for (uint32_t i = 0; i < 8; i++)
        ck_assert_int_eq(grist_sketch_block_negative(i, sp), neg[i]);
    free(x);
}
END_TEST

/* Every kernel (float, double, Adam; the AVX2 whole-block path and the
 * portable one) equals the per-element definition, for tensors that start
 * and end anywhere inside a 64-element block, and for m = 64 where every
 * block but one wraps around the end of the buckets. */
START_TEST(test_block_chunking_and_offsets)
{
    enum { N = 10007 };
    const uint32_t ms[2] = {64, 1024};
    float *x = malloc(N * sizeof(float)), *v = malloc(N * sizeof(float));
    double *xd = malloc(N * sizeof(double));
    srand(7);
    for (int i = 0; i < N; i++) {
        x[i] = (float)rand() / RAND_MAX - 0.5f;
        xd[i] = x[i];
        v[i] = 0.01f + 0.001f * (float)(i % 13);
    }
    const double vs = 2.0, eps = 1e-8;
    const uint32_t sp = grist_sketch_seed(99, 2);
    for (int k = 0; k < 2; k++) {
        const uint32_t m = ms[k];
        double *naive = calloc(m, sizeof(double)), *nadam = calloc(m, sizeof(double));
        double *a32 = calloc(m, sizeof(double)), *a64 = calloc(m, sizeof(double));
        double *aad = calloc(m, sizeof(double));
        double sq_naive = 0, sq_nadam = 0, sq32 = 0, sq64 = 0, sqad = 0;
        for (uint32_t i = 0; i < N; i++) {
            const uint32_t b = grist_sketch_block_bucket(i, sp, m);
            const double sg = grist_sketch_block_negative(i, sp) ? -1.0 : 1.0;
            naive[b] += sg * x[i];
            sq_naive += (double)x[i] * x[i];
            const double xi = x[i] / sqrt(sqrt(v[i] * vs) + eps);
            nadam[b] += sg * xi;
            sq_nadam += xi * xi;
        }
        /* "tensors" of 1, 63, 64, 1000, 4099 elements and the rest */
        const uint64_t cut[7] = {0, 1, 64, 128, 1128, 5227, N};
        for (int c = 0; c < 6; c++) {
            const uint64_t o = cut[c], n = cut[c + 1] - cut[c];
            ck_assert_int_eq(grist_sketch_block_accum_f32(sp, 1, x + o, n, o, a32, m, &sq32), 0);
            ck_assert_int_eq(grist_sketch_block_accum_f64(sp, 1, xd + o, n, o, a64, m, &sq64), 0);
            ck_assert_int_eq(grist_sketch_block_accum_adam_f32(sp, 1, x + o, v + o, n, o, vs, eps,
                                                               aad, m, &sqad),
                             0);
        }
        for (uint32_t b = 0; b < m; b++) {
            ck_assert_double_eq_tol(a32[b], naive[b], 1e-9);
            ck_assert_double_eq_tol(a64[b], naive[b], 1e-9);
            ck_assert_double_eq_tol(aad[b], nadam[b], 1e-9);
        }
        ck_assert_double_eq_tol(sq32, sq_naive, 1e-9);
        ck_assert_double_eq_tol(sq64, sq_naive, 1e-9);
        ck_assert_double_eq_tol(sqad, sq_nadam, 1e-6 * sq_nadam);
        free(naive), free(nadam), free(a32), free(a64), free(aad);
    }
    double acc[64] = {0};
    ck_assert_int_eq(grist_sketch_block_accum_f32(1, 1, x, 4, 0, acc, 100, NULL), GRIST_EBADDIM);
    ck_assert_int_eq(grist_sketch_block_accum_f32(1, 1, x, 4, UINT32_MAX, acc, 64, NULL),
                     GRIST_ETOOBIG);
    ck_assert_int_eq(grist_sketch_block_accum_adam_f32(1, 1, x, v, 4, 0, vs, 0.0, acc, 64, NULL),
                     -EINVAL);
    for (int b = 0; b < 64; b++)
        ck_assert_double_eq(acc[b], 0.0);
    enum grist_sketch_kind kind;
    ck_assert_int_eq(grist_sketch_kind_parse("block", &kind), 0);
    ck_assert_int_eq(kind, GRIST_SKETCH_BLOCK);
    ck_assert_str_eq(grist_sketch_kind_name(GRIST_SKETCH_HASHED), "hashed");
    ck_assert_int_eq(grist_sketch_kind_parse("Block", &kind), -EINVAL);
    free(x), free(xd), free(v);
}
END_TEST

/* Sampling (docs/MATH.md 2.1): 1 run in N kept, the same runs for every
 * kernel; a sampled sketch is, bit for bit, the full sketch of the input with
 * the left-out runs zeroed; the sampling rate and the auto rule. */
START_TEST(test_block_sampling)
{
    enum { N = 64 * 4000 + 37 };
    const uint32_t m = 1024, sp = grist_sketch_seed(4242, 3);
    float *x = malloc(N * sizeof(float)), *xm = malloc(N * sizeof(float));
    float *v = malloc(N * sizeof(float)), *vm = malloc(N * sizeof(float));
    for (uint32_t i = 0; i < N; i++) {
        x[i] = (float)sin(i * 0.37) * (i % 7 == 0 ? 0.0f : 1.0f); /* some exact zeros */
        v[i] = 0.5f + (float)(i % 11);
    }
    const uint32_t samples[3] = {4, 16, 64};
    for (int k = 0; k < 3; k++) {
        const uint32_t smp = samples[k];
        uint32_t kept = 0;
        for (uint32_t i = 0; i < N; i++) {
            const int keep = grist_sketch_block_keep(i >> 6, sp, smp);
            kept += keep && (i & 63u) == 0;
            xm[i] = keep ? x[i] : 0.0f;
            vm[i] = v[i];
        }
        const double runs = (N + 63) / 64, frac = kept / runs;
        ck_assert_msg(fabs(frac - 1.0 / smp) < 4.0 * sqrt(1.0 / smp / runs), "kept %.4f of 1/%u",
                      frac, smp);
        double *a = calloc(m, sizeof(double)), *b = calloc(m, sizeof(double));
        double *aa = calloc(m, sizeof(double)), *ba = calloc(m, sizeof(double));
        double sqa = 0, sqb = 0, sqaa = 0, sqba = 0;
        const uint64_t cut[4] = {0, 100, 64 * 1000 + 5, N}; /* tensors cut inside runs */
        for (int c = 0; c < 3; c++) {
            const uint64_t o = cut[c], n = cut[c + 1] - cut[c];
            ck_assert_int_eq(grist_sketch_block_accum_f32(sp, smp, x + o, n, o, a, m, &sqa), 0);
            ck_assert_int_eq(grist_sketch_block_accum_adam_f32(sp, smp, x + o, v + o, n, o, 2.0,
                                                               1e-8, aa, m, &sqaa),
                             0);
            /* the same cuts: the norm's partial sums follow the runs */
            ck_assert_int_eq(grist_sketch_block_accum_f32(sp, 1, xm + o, n, o, b, m, &sqb), 0);
            ck_assert_int_eq(grist_sketch_block_accum_adam_f32(sp, 1, xm + o, vm + o, n, o, 2.0,
                                                               1e-8, ba, m, &sqba),
                             0);
        }
        ck_assert_mem_eq(a, b, m * sizeof(double));
        ck_assert_mem_eq(aa, ba, m * sizeof(double));
        ck_assert_double_eq(sqa, sqb);
        ck_assert_double_eq(sqaa, sqba);
        const double before = a[5], sq_before = sqa;
        grist_sketch_unsample(a, m, smp, &sqa);
        ck_assert_double_eq(a[5], before * sqrt((double)smp));
        ck_assert_double_eq(sqa, sq_before * smp);
        free(a), free(b), free(aa), free(ba);
    }
    double acc[64] = {0};
    ck_assert_int_eq(grist_sketch_block_accum_f32(sp, 2, x, 4, 0, acc, 64, NULL), -EINVAL);
    ck_assert_int_eq(grist_sketch_block_accum_f32(sp, 0, x, 4, 0, acc, 64, NULL), -EINVAL);
    for (int b = 0; b < 64; b++)
        ck_assert_double_eq(acc[b], 0.0);
    ck_assert_int_eq(grist_sketch_check_sample(16), 0);
    ck_assert_int_eq(grist_sketch_check_sample(8), -EINVAL);
    /* auto: keep at least m runs (64 m elements), at most 1 run in 16 */
    ck_assert_uint_eq(grist_sketch_sample_auto(262143, 1024), 1);
    ck_assert_uint_eq(grist_sketch_sample_auto(262144, 1024), 4);
    ck_assert_uint_eq(grist_sketch_sample_auto(1048575, 1024), 4);
    ck_assert_uint_eq(grist_sketch_sample_auto(1048576, 1024), 16);
    ck_assert_uint_eq(grist_sketch_sample_auto(1u << 31, 1024), 16);
    ck_assert_uint_eq(grist_sketch_sample_auto(1048576, 4096), 4);
    free(x), free(xm), free(v), free(vm);
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
    tcase_add_test(tc, test_block_vector);
    tcase_add_test(tc, test_block_chunking_and_offsets);
    tcase_add_test(tc, test_block_sampling);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
