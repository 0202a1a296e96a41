/*
 * libgrist's transport policy and step sketcher, without a network:
 * the drop-oldest send queue, the jittered exponential backoff, and the
 * step sketcher (inline and on its thread) against the kernel it wraps.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../check_main.h"
#include "grist/error.h"
#include "grist/sketch.h"
#include "queue.h"
#include "rng.h"
#include "sketcher.h"

static struct grist__msg msg_of(uint8_t tag)
{
    uint8_t *b = malloc(1);
    *b = tag;
    return (struct grist__msg){b, 1};
}

START_TEST(test_ring_fifo_and_drop_oldest)
{
    struct grist__ring r;
    ck_assert_int_eq(grist__ring_init(&r, 3), 0);
    struct grist__msg m;
    ck_assert_int_eq(grist__ring_pop(&r, &m), -1);
    uint32_t dropped = 0;
    for (uint8_t i = 0; i < 10; i++) /* 10 pushes into 3 slots: 7 oldest dropped */
        dropped += grist__ring_push(&r, msg_of(i));
    ck_assert_uint_eq(dropped, 7);
    ck_assert_uint_eq(r.len, 3);
    for (uint8_t want = 7; want < 10; want++) { /* the newest three, oldest first */
        ck_assert_int_eq(grist__ring_pop(&r, &m), 0);
        ck_assert_uint_eq(m.buf[0], want);
        free(m.buf);
    }
    ck_assert_int_eq(grist__ring_pop(&r, &m), -1);
    /* interleaved push/pop across the wrap point keeps FIFO order */
    uint8_t next_in = 0, next_out = 0;
    for (int round = 0; round < 20; round++) {
        ck_assert_uint_eq(grist__ring_push(&r, msg_of(next_in++)), 0);
        ck_assert_uint_eq(grist__ring_push(&r, msg_of(next_in++)), 0);
        ck_assert_int_eq(grist__ring_pop(&r, &m), 0);
        ck_assert_uint_eq(m.buf[0], next_out++);
        free(m.buf);
        ck_assert_int_eq(grist__ring_pop(&r, &m), 0);
        ck_assert_uint_eq(m.buf[0], next_out++);
        free(m.buf);
    }
    grist__ring_push(&r, msg_of(1)); /* freed by ring_free (valgrind setup checks) */
    grist__ring_free(&r);
    ck_assert_ptr_null(r.q);
}
END_TEST

START_TEST(test_backoff_schedule)
{
    struct grist__backoff b;
    grist__backoff_init(&b, 0.1, 5.0, 42);
    double base = 0.1, lo_ratio = 2.0, hi_ratio = 0.0;
    for (int i = 0; i < 12; i++) {
        const double d = grist__backoff_next(&b);
        ck_assert_double_ge(d, 0.8 * base);
        ck_assert_double_le(d, 1.2 * base);
        lo_ratio = d / base < lo_ratio ? d / base : lo_ratio;
        hi_ratio = d / base > hi_ratio ? d / base : hi_ratio;
        base = base * 2.0 > 5.0 ? 5.0 : base * 2.0;
    }
    ck_assert_double_eq_tol(b.cur_s, 5.0, 1e-12); /* capped */
    ck_assert_double_gt(hi_ratio - lo_ratio, 0.05); /* jitter actually varies */
    grist__backoff_reset(&b);
    const double d = grist__backoff_next(&b);
    ck_assert(d >= 0.08 && d <= 0.12);
    /* two sessions with different seeds do not retry in lockstep */
    struct grist__backoff a, c;
    grist__backoff_init(&a, 1.0, 1.0, 1);
    grist__backoff_init(&c, 1.0, 1.0, 2);
    ck_assert_double_ne(grist__backoff_next(&a), grist__backoff_next(&c));
    /* nonsense options are clamped, not trusted */
    grist__backoff_init(&a, 0.0, -1.0, 3);
    ck_assert_double_gt(a.initial_s, 0.0);
    ck_assert_double_ge(a.max_s, a.initial_s);
}
END_TEST

enum { M = 256, NG = 2 };

/* the sketcher's result equals the kernel called directly, inline and async */
START_TEST(test_sketcher_matches_kernel)
{
    struct grist_rng rng;
    grist_rng_seed(&rng, 7);
    const uint64_t sizes[NG] = {5000, 3001};
    float *g0 = malloc(3000 * sizeof(float)), *g1 = malloc(2000 * sizeof(float));
    float *g2 = malloc(3001 * sizeof(float)), *v2 = malloc(3001 * sizeof(float));
    for (int i = 0; i < 3000; i++)
        g0[i] = (float)grist_rng_normal(&rng);
    for (int i = 0; i < 2000; i++)
        g1[i] = (float)grist_rng_normal(&rng);
    for (int i = 0; i < 3001; i++) {
        g2[i] = (float)grist_rng_normal(&rng);
        v2[i] = (float)(0.01 + grist_rng_uniform(&rng));
    }
    const uint32_t seeds[NG] = {grist_sketch_seed(99, 0), grist_sketch_seed(99, 1)};
    /* group 0 is two tensors (offsets 0 and 3000); group 1 one Adam tensor */
    const struct grist_tensor t[3] = {
        {.grad = g0, .n = 3000, .offset = 0, .group = 0},
        {.grad = g1, .n = 2000, .offset = 3000, .group = 0},
        {.grad = g2,
         .exp_avg_sq = v2,
         .n = 3001,
         .offset = 0,
         .group = 1,
         .v_scale = 2.0,
         .eps = 1e-8},
    };
    /* hashed, block, block sampled 1 run in 4 (unsampled at the end) */
    for (int variant = 0; variant < 3; variant++) {
        const int kind = variant ? GRIST_SKETCH_BLOCK : GRIST_SKETCH_HASHED;
        const int blk = kind == GRIST_SKETCH_BLOCK;
        const uint32_t smp = variant == 2 ? 4u : 1u, samples[NG] = {smp, smp};
        double want[NG][M] = {{0}}, want_sq[NG] = {0};
        if (blk) {
            grist_sketch_block_accum_f32(seeds[0], smp, g0, 3000, 0, want[0], M, &want_sq[0]);
            grist_sketch_block_accum_f32(seeds[0], smp, g1, 2000, 3000, want[0], M, &want_sq[0]);
            grist_sketch_block_accum_adam_f32(seeds[1], smp, g2, v2, 3001, 0, 2.0, 1e-8, want[1], M,
                                              &want_sq[1]);
            for (int g = 0; g < NG; g++)
                grist_sketch_unsample(want[g], M, smp, &want_sq[g]);
        } else {
            grist_sketch_accum_f32(seeds[0], g0, 3000, 0, want[0], M, &want_sq[0]);
            grist_sketch_accum_f32(seeds[0], g1, 2000, 3000, want[0], M, &want_sq[0]);
            grist_sketch_accum_adam_f32(seeds[1], g2, v2, 3001, 0, 2.0, 1e-8, want[1], M,
                                        &want_sq[1]);
        }

        struct grist__sketcher *sk;
        ck_assert_int_eq(grist__sketcher_new(NG, M, kind, sizes, samples, &sk), 0);
        grist__sketcher_set_async_min(sk, 0); /* these small steps go to the thread too */
        const double *acc, *sq;
        ck_assert_int_eq(grist__sketcher_wait(sk, &acc, &sq), -ENOENT);
        for (int async = 0; async <= 1; async++) {
            for (int rep = 0; rep < 3; rep++) { /* the accumulators restart each step */
                ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 3, async), 0);
                ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 3, async), -EBUSY);
                ck_assert_int_eq(grist__sketcher_wait(sk, &acc, &sq), 0);
                ck_assert_int_eq(grist__sketcher_busy(sk), 0);
                ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 3, async),
                                 -EBUSY); /* until reset */
                for (int g = 0; g < NG; g++) {
                    ck_assert_mem_eq(acc + (size_t)g * M, want[g],
                                     sizeof(want[g])); /* same order: bit-equal */
                    ck_assert_double_eq(sq[g], want_sq[g]);
                }
                grist__sketcher_reset(sk);
            }
        }
        /* freeing with a sketch still queued or running waits for it */
        ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 3, 1), 0);
        grist__sketcher_free(sk);
    }
    free(g0);
    free(g1);
    free(g2);
    free(v2);
}
END_TEST

START_TEST(test_sketcher_refuses_bad_tensors)
{
    const uint64_t sizes[NG] = {100, 50};
    float x[100] = {0}, v[100] = {0};
    const uint32_t seeds[NG] = {1, 2};
    struct grist__sketcher *sk;
    ck_assert_int_eq(grist__sketcher_new(NG, M, GRIST_SKETCH_BLOCK, sizes, NULL, &sk), 0);
    struct grist_tensor t[2] = {{.grad = x, .n = 100, .group = 0},
                                {.grad = x, .n = 50, .group = 1}};
    ck_assert_int_eq(grist__sketcher_begin(sk, NULL, t, 2, 0), -EINVAL);
    t[1].group = 2; /* no such group */
    ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 2, 0), -EINVAL);
    t[1].group = 1;
    t[1].offset = 1; /* 1 + 50 > 50 */
    ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 2, 0), GRIST_EBADLEN);
    t[1].offset = 0;
    t[1].grad = NULL;
    ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 2, 0), -EINVAL);
    t[1].grad = x;
    t[1].exp_avg_sq = v; /* Adam without eps */
    ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 2, 0), -EINVAL);
    /* refusals start nothing: a valid step may begin right after */
    const double *acc, *sq;
    ck_assert_int_eq(grist__sketcher_wait(sk, &acc, &sq), -ENOENT);
    t[1].exp_avg_sq = NULL;
    ck_assert_int_eq(grist__sketcher_begin(sk, seeds, t, 2, 1), 0);
    ck_assert_int_eq(grist__sketcher_wait(sk, &acc, &sq), 0);
    grist__sketcher_free(sk);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client-logic");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_ring_fifo_and_drop_oldest);
    tcase_add_test(tc, test_backoff_schedule);
    tcase_add_test(tc, test_sketcher_matches_kernel);
    tcase_add_test(tc, test_sketcher_refuses_bad_tensors);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
