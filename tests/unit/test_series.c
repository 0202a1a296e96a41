/* Unit tests of the two series modules of gristd, kept apart by name: a
 * job's history downsampled by LTTB (daemon/lttb.c) and the latency
 * histogram of /metrics (daemon/histogram.c). */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "histogram.h"
#include "lttb.h"
#include "../check_main.h"

enum { N = 1000 };

START_TEST(test_lttb_keeps_points_and_ends)
{
    static double x[N], y[N];
    static size_t idx[N];
    for (int i = 0; i < N; i++)
        x[i] = i, y[i] = sin(i * 0.05);
    const size_t k = grist__lttb(x, y, N, 50, idx);
    ck_assert_uint_eq(k, 50);
    ck_assert_uint_eq(idx[0], 0);
    ck_assert_uint_eq(idx[k - 1], N - 1);
    for (size_t i = 1; i < k; i++)
        ck_assert_uint_gt(idx[i], idx[i - 1]); /* increasing, no repeats */
}
END_TEST

START_TEST(test_lttb_keeps_a_spike)
{
    /* a flat series with one outlier: the outlier's bucket must pick it */
    static double x[N], y[N];
    static size_t idx[N];
    for (int i = 0; i < N; i++)
        x[i] = i, y[i] = 0.0;
    y[517] = 10.0;
    const size_t k = grist__lttb(x, y, N, 20, idx);
    int kept = 0;
    for (size_t i = 0; i < k; i++)
        kept |= idx[i] == 517;
    ck_assert_msg(kept, "the spike at 517 was dropped");
}
END_TEST

START_TEST(test_lttb_small_inputs)
{
    double x[5] = {1, 2, 3, 4, 5}, y[5] = {5, 4, 3, 2, 1};
    size_t idx[5];
    ck_assert_uint_eq(grist__lttb(x, y, 5, 500, idx), 5); /* fewer than asked: all */
    for (size_t i = 0; i < 5; i++)
        ck_assert_uint_eq(idx[i], i);
    ck_assert_uint_eq(grist__lttb(x, y, 5, 2, idx), 2); /* first and last */
    ck_assert_uint_eq(idx[0], 0);
    ck_assert_uint_eq(idx[1], 4);
    ck_assert_uint_eq(grist__lttb(x, y, 5, 1, idx), 1);
    ck_assert_uint_eq(idx[0], 0);
    ck_assert_uint_eq(grist__lttb(x, y, 0, 10, idx), 0);
}
END_TEST

START_TEST(test_histogram_buckets)
{
    struct grist_histogram h = {0};
    /* a value on a bound counts in that bound's bucket (le = "less or equal") */
    grist__histogram_observe(&h, grist__histogram_bounds[3]);
    ck_assert_uint_eq(h.bucket[3], 1);
    ck_assert_uint_eq(h.bucket[4], 0);
    /* just above it: the next bucket */
    grist__histogram_observe(&h, nextafter(grist__histogram_bounds[3], 1.0));
    ck_assert_uint_eq(h.bucket[4], 1);
    /* below the first bound (0 included): bucket 0 */
    grist__histogram_observe(&h, 0.0);
    ck_assert_uint_eq(h.bucket[0], 1);
    /* above the last bound: only the count (+Inf) */
    grist__histogram_observe(&h, 1e3);
    uint64_t in = 0;
    for (int i = 0; i < GRIST_HISTOGRAM_NB; i++)
        in += h.bucket[i];
    ck_assert_uint_eq(in, 3);
    ck_assert_uint_eq(h.count, 4);
    ck_assert_double_eq_tol(h.sum, grist__histogram_bounds[3] * 2 + 1e3, 1e-9);
    for (int i = 1; i < GRIST_HISTOGRAM_NB; i++) /* Prometheus wants increasing bounds */
        ck_assert(grist__histogram_bounds[i] > grist__histogram_bounds[i - 1]);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("series");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_lttb_keeps_points_and_ends);
    tcase_add_test(tc, test_lttb_keeps_a_spike);
    tcase_add_test(tc, test_lttb_small_inputs);
    tcase_add_test(tc, test_histogram_buckets);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
