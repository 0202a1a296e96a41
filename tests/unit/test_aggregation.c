/*
 * The per-step aggregation rules of daemon/jobs.c, one test per rule, on a
 * daemon core without a network (tests/core: a real engine on the ref
 * backend behind grist__job_attach() and grist__job_submit()), the job's
 * counters read directly; the registry's refusals as grist error codes; and
 * its events (a new version, a job's expiry) reaching subscribers through
 * publish.c. This executable links no gRPC library (tests/meson.build).
 * The gRPC path is tested by tests/integration/test_attach.c.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <errno.h>

#include "core/core.h"
#include "grist/error.h"
#include "publish.h"
#include "wire.h"
#include "../check_main.h"

enum { G = 2, M = 64 };

static struct test_core core;

static void setup(void)
{
    grist__config_defaults(&core.cfg);
    core.cfg.aggregation_timeout = 0.05;
    ck_assert_int_eq(test_core_start(&core), 0);
}

static void teardown(void)
{
    test_core_stop(&core);
}

static struct grist_job *attach(const char *id, uint32_t world)
{
    char err[256] = "";
    struct grist_job *j = test_core_attach(&core, id, world, G, M, err, sizeof(err));
    ck_assert_msg(j, "%s", err);
    return j;
}

static int submit(struct grist_job *j, uint32_t rank, uint64_t step, float v)
{
    return test_core_submit(&core, j, rank, step, v);
}

static uint32_t open_steps(const struct grist_job *j)
{
    return j->naggs;
}

/* A step completes when every rank of the world has reported it. */
START_TEST(test_complete_when_all_ranks)
{
    struct grist_job *j = attach("all", 3);
    ck_assert_int_eq(submit(j, 0, 1, 1.0f), 0);
    ck_assert_int_eq(submit(j, 2, 1, 1.0f), 0);
    ck_assert_uint_eq(j->steps, 0);
    ck_assert_uint_eq(open_steps(j), 1);
    ck_assert_int_eq(submit(j, 1, 1, 1.0f), 0);
    ck_assert_uint_eq(j->steps, 1);
    ck_assert_uint_eq(j->partial, 0);
    ck_assert_uint_eq(j->high_step, 1);
    ck_assert_uint_eq(open_steps(j), 0);
    ck_assert_uint_eq(core.d.cnt.steps_aggregated, 1);
}
END_TEST

/* A rank reporting a step twice (a restarted rank resending) is counted as
 * a duplicate and does not complete the step; a rank beyond the world too. */
START_TEST(test_duplicate_and_rank_beyond_world)
{
    struct grist_job *j = attach("dup", 2);
    ck_assert_int_eq(submit(j, 0, 7, 1.0f), 0);
    ck_assert_int_eq(submit(j, 0, 7, 5.0f), 0);
    ck_assert_uint_eq(j->duplicate, 1);
    ck_assert_uint_eq(j->steps, 0);
    ck_assert_int_eq(submit(j, 2, 7, 1.0f), 0); /* world is 2 */
    ck_assert_uint_eq(j->duplicate, 2);
    ck_assert_uint_eq(j->steps, 0);
    ck_assert_int_eq(submit(j, 1, 7, 1.0f), 0);
    ck_assert_uint_eq(j->steps, 1);
    ck_assert_uint_eq(core.d.cnt.summaries_duplicate, 2);
}
END_TEST

/* A summary for a step already aggregated (within the segment gap) is late:
 * counted, ignored, no new open step. */
START_TEST(test_late)
{
    struct grist_job *j = attach("late", 1);
    for (uint64_t s = 1; s <= 10; s++)
        ck_assert_int_eq(submit(j, 0, s, 1.0f), 0);
    ck_assert_uint_eq(j->steps, 10);
    ck_assert_int_eq(submit(j, 0, 4, 1.0f), 0);
    ck_assert_int_eq(submit(j, 0, 10, 1.0f), 0);
    ck_assert_uint_eq(j->late, 2);
    ck_assert_uint_eq(j->steps, 10);
    ck_assert_uint_eq(j->high_step, 10);
    ck_assert_uint_eq(open_steps(j), 0);
}
END_TEST

/* A step far behind the newest (more than the gap of 2 x 64 open steps) is
 * a resumed run: a new segment, its steps aggregated again, and a step of
 * the new segment below the old newest one is not late. */
START_TEST(test_resumed_run_is_a_segment)
{
    struct grist_job *j = attach("seg", 1);
    for (uint64_t s = 1000; s < 1010; s++)
        ck_assert_int_eq(submit(j, 0, s, 1.0f), 0);
    ck_assert_int_eq(submit(j, 0, 1, 1.0f), 0);
    ck_assert_uint_eq(j->segments, 1);
    ck_assert_uint_eq(j->late, 0);
    ck_assert_uint_eq(j->steps, 11);
    ck_assert_uint_eq(j->high_step, 1);
    ck_assert_int_eq(submit(j, 0, 2, 1.0f), 0);
    ck_assert_uint_eq(j->steps, 12);
    ck_assert_int_eq(submit(j, 0, 1, 1.0f), 0); /* late within the new segment */
    ck_assert_uint_eq(j->late, 1);
    /* 128 behind is still late, not a segment */
    for (uint64_t s = 3; s <= 200; s++)
        ck_assert_int_eq(submit(j, 0, s, 1.0f), 0);
    ck_assert_int_eq(submit(j, 0, 200 - 128, 1.0f), 0);
    ck_assert_uint_eq(j->late, 2);
    ck_assert_uint_eq(j->segments, 1);
}
END_TEST

/* A step further ahead of the newest than --max-step-jump is refused with
 * an error and leaves nothing behind; the first step of a job may be any. */
START_TEST(test_far_jump_refused)
{
    core.cfg.max_step_jump = 1000; /* read at each summary */
    struct grist_job *j = attach("jump", 2);
    ck_assert_int_eq(submit(j, 0, UINT64_C(1) << 40, 1.0f), 0); /* the first: any step */
    ck_assert_int_eq(submit(j, 1, UINT64_C(1) << 40, 1.0f), 0);
    ck_assert_uint_eq(j->steps, 1);
    ck_assert_int_eq(submit(j, 0, (UINT64_C(1) << 40) + 1001, 1.0f), -EINVAL);
    ck_assert_uint_eq(open_steps(j), 0);
    ck_assert_uint_eq(j->steps, 1);
    ck_assert_int_eq(submit(j, 0, (UINT64_C(1) << 40) + 1000, 1.0f), 0); /* at the bound */
    ck_assert_uint_eq(open_steps(j), 1);
    /* an open step counts as the newest too */
    ck_assert_int_eq(submit(j, 0, (UINT64_C(1) << 40) + 2001, 1.0f), -EINVAL);
    ck_assert_int_eq(submit(j, 0, UINT64_MAX, 1.0f), -EINVAL); /* 2^64 - 1 cannot freeze the job */
    ck_assert_uint_eq(open_steps(j), 1);
}
END_TEST

/* At most 64 steps are open: a rank far ahead closes the oldest one as a
 * partial step. */
START_TEST(test_open_step_eviction)
{
    struct grist_job *j = attach("evict", 2);
    for (uint64_t s = 1; s <= 64; s++)
        ck_assert_int_eq(submit(j, 0, s, 1.0f), 0);
    ck_assert_uint_eq(open_steps(j), 64);
    ck_assert_uint_eq(j->steps, 0);
    ck_assert_int_eq(submit(j, 0, 65, 1.0f), 0);
    ck_assert_uint_eq(open_steps(j), 64);
    ck_assert_uint_eq(j->steps, 1);
    ck_assert_uint_eq(j->partial, 1);
    ck_assert_uint_eq(j->high_step, 1); /* the oldest went */
    /* the partner's summary for the evicted step is now late */
    ck_assert_int_eq(submit(j, 1, 1, 1.0f), 0);
    ck_assert_uint_eq(j->late, 1);
    ck_assert_int_eq(submit(j, 1, 2, 1.0f), 0); /* step 2 completes whole */
    ck_assert_uint_eq(j->steps, 2);
    ck_assert_uint_eq(j->partial, 1);
}
END_TEST

/* An open step older than --aggregation-timeout completes as it is. */
START_TEST(test_timeout_completes_partial)
{
    struct grist_job *j = attach("timeout", 4);
    ck_assert_int_eq(submit(j, 0, 1, 1.0f), 0);
    ck_assert_int_eq(submit(j, 3, 1, 1.0f), 0);
    grist__jobs_tick(&core.d);
    ck_assert_uint_eq(j->steps, 0); /* not yet */
    usleep(80 * 1000);
    uv_update_time(&core.loop);
    grist__jobs_tick(&core.d);
    ck_assert_uint_eq(j->steps, 1);
    ck_assert_uint_eq(j->partial, 1);
    ck_assert_uint_eq(open_steps(j), 0);
}
END_TEST

/* The world grows while a step is open: a rank of the new world reports it
 * (its bit lies past the old world's) and the step completes on the new
 * world's size, without a write past the old step's buffers. */
START_TEST(test_world_grows_mid_step)
{
    struct grist_job *j = attach("grow", 2);
    ck_assert_int_eq(submit(j, 0, 5, 1.0f), 0);
    attach("grow", 20); /* a Hello with the bigger world */
    ck_assert_uint_eq(j->world, 20);
    ck_assert_int_eq(submit(j, 17, 5, 1.0f), 0);
    ck_assert_uint_eq(j->duplicate, 0);
    ck_assert_int_eq(submit(j, 17, 5, 1.0f), 0);
    ck_assert_uint_eq(j->duplicate, 1);
    for (uint32_t r = 1; r < 20; r++)
        if (r != 17)
            ck_assert_int_eq(submit(j, r, 5, 1.0f), 0);
    ck_assert_uint_eq(j->steps, 1);
    ck_assert_uint_eq(j->partial, 0);
}
END_TEST

/* A validation summary is no step: counted apart, nothing opened. */
START_TEST(test_validation_is_no_step)
{
    struct grist_job *j = attach("val", 2);
    struct grist_summary s = {.step = 3, .ngroups = G, .m = M, .validation = 1};
    s.sq_norm = calloc(G, sizeof(double));
    s.batch = calloc(G, sizeof(uint32_t));
    s.lrb = calloc(2 * G, sizeof(double));
    s.sketch = calloc(G * M, sizeof(float));
    char err[64];
    ck_assert_int_eq(grist__job_submit(&core.d, j, 0, &s, err, sizeof(err)), 0);
    ck_assert_uint_eq(j->validation, 1);
    ck_assert_uint_eq(open_steps(j), 0);
    ck_assert_uint_eq(j->steps, 0);
}
END_TEST

/* The registry refuses with grist error codes and says why: another shape
 * of a known job is -EINVAL naming the field, a job past --max-jobs is
 * -ENOSPC; nothing of a refused Hello is kept. */
START_TEST(test_attach_refusals)
{
    struct grist_job *j = attach("shape", 2);
    char err[256] = "";
    ck_assert_ptr_null(test_core_attach(&core, "shape", 2, G + 1, M, err, sizeof(err)));
    ck_assert_msg(strstr(err, "hello.groups") != NULL, "%s", err);
    ck_assert_uint_eq(j->nstreams, 1);
    core.cfg.max_jobs = 1;
    err[0] = '\0';
    ck_assert_ptr_null(test_core_attach(&core, "second", 2, G, M, err, sizeof(err)));
    ck_assert_msg(strstr(err, "--max-jobs") != NULL, "%s", err);
    ck_assert_uint_eq(core.d.njobs, 1);
    ck_assert_ptr_null(grist__job_find(&core.d, "second"));
}
END_TEST

/* The subscriber side of the events: what a test subscriber heard. */
struct heard {
    struct grist_sub sub;
    int versions, states, gone;
    size_t len;
};

static void heard_version(struct grist_sub *s, const uint8_t *msg, size_t len)
{
    struct heard *h = (struct heard *)s;
    ck_assert_ptr_nonnull(msg);
    h->versions++;
    h->len = len;
}

static void heard_state(struct grist_sub *s, const struct grist_job *j)
{
    (void)j;
    ((struct heard *)s)->states++;
}

static void heard_gone(struct grist_sub *s)
{
    ck_assert_ptr_null(s->pprev); /* unsubscribed before it is told */
    ((struct heard *)s)->gone++;
}

static int gone_calls;
static void on_gone(void *ud, struct grist_job *j)
{
    gone_calls++;
    grist__publish_gone(ud, j);
}

static void wire_events(void)
{
    core.d.events =
        (struct grist_job_events){grist__publish_version, grist__publish_state, on_gone, NULL};
}

/* A job's first evaluation after warm-up is a new version: jobs.c reports it
 * through d->events, and publish.c hands the encoded Hyperparams to every
 * subscriber of that job and of no other; one that left hears nothing. */
START_TEST(test_version_reaches_subscribers)
{
    wire_events();
    struct grist_job *j = attach("pub", 1), *other = attach("quiet", 1);
    struct heard a = {0}, b = {0}, left = {0}, elsewhere = {0};
    struct heard *all[] = {&a, &b, &left};
    for (int i = 0; i < 3; i++) {
        all[i]->sub.on_version = heard_version;
        all[i]->sub.on_state = heard_state;
        grist__publish_join(j, &all[i]->sub);
    }
    elsewhere.sub.on_version = heard_version;
    grist__publish_join(other, &elsewhere.sub);
    grist__publish_leave(&left.sub);
    grist__publish_leave(&left.sub); /* idempotent */
    const uint64_t steps = (uint64_t)(core.cfg.min_steps + 2 * core.cfg.solve_every);
    for (uint64_t t = 1; t <= steps; t++)
        ck_assert_int_eq(submit(j, 0, t, (float)((t * 2654435761u) % 1000) / 500.0f - 1.0f), 0);
    for (int i = 0; i < 500 && a.versions == 0; i++) {
        uv_run(&core.loop, UV_RUN_NOWAIT);
        usleep(10 * 1000);
    }
    ck_assert_int_ge(a.versions, 1);
    ck_assert_int_eq(b.versions, a.versions);
    ck_assert_uint_eq(a.len, j->push_len);
    ck_assert_uint_eq(j->version, (uint64_t)a.versions);
    ck_assert_int_ge(a.states, a.versions);
    ck_assert_int_eq(left.versions + left.states, 0);
    ck_assert_int_eq(elsewhere.versions, 0);
}
END_TEST

/* A job without workers expires after --empty-job-expiry; its subscribers
 * hear it once (unsubscribed first) and the job is gone from the registry. */
START_TEST(test_expiry_is_an_event)
{
    wire_events();
    gone_calls = 0;
    core.cfg.empty_job_expiry = 0.02;
    struct grist_job *j = attach("expire", 1);
    struct heard w = {0};
    w.sub.on_gone = heard_gone;
    grist__publish_join(j, &w.sub);
    grist__jobs_tick(&core.d);
    ck_assert_int_eq(gone_calls, 0); /* a worker is attached */
    grist__job_detach(&core.d, j);
    usleep(40 * 1000);
    uv_update_time(&core.loop);
    grist__jobs_tick(&core.d);
    ck_assert_int_eq(gone_calls, 1);
    ck_assert_int_eq(w.gone, 1);
    ck_assert_ptr_null(grist__job_find(&core.d, "expire"));
    ck_assert_uint_eq(core.d.cnt.jobs_expired, 1);
}
END_TEST

/* A group's history keeps the whole run in at most cap points, evenly
 * spaced: thinned to every other point each time it fills. */
START_TEST(test_history_thinned)
{
    enum { CAP = 16 };
    struct grist_history_point pts[CAP];
    struct grist_history h = {.pts = pts, .cap = CAP};
    for (uint64_t t = 1; t <= 1000; t++) {
        const struct grist_history_point p = {.step = t, .momentum = (float)t * 1e-3f};
        grist__history_add(&h, &p);
        ck_assert_uint_le(h.len, CAP);
        ck_assert_uint_eq(pts[0].step, 1); /* the first evaluation stays */
        for (uint32_t i = 1; i < h.len; i++) /* even spacing: the stride */
            ck_assert_uint_eq(pts[i].step - pts[i - 1].step, h.stride);
        /* the newest kept point is within one stride of the newest evaluation */
        ck_assert_uint_lt(t - pts[h.len - 1].step, h.stride);
    }
    ck_assert_uint_ge(h.len, CAP / 2);
    ck_assert_uint_eq(h.stride, 64); /* 1000 evaluations in 16 points: 1 in 64 */
    ck_assert_float_eq(pts[3].momentum, (float)pts[3].step * 1e-3f);
    /* below its capacity it keeps every evaluation */
    struct grist_history h2 = {.pts = pts, .cap = CAP};
    for (uint64_t t = 1; t <= CAP; t++) {
        const struct grist_history_point p = {.step = 10 * t};
        grist__history_add(&h2, &p);
    }
    ck_assert_uint_eq(h2.len, CAP);
    ck_assert_uint_eq(pts[CAP - 1].step, 10 * CAP);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("aggregation");
    TCase *tc = tcase_create("rules");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_complete_when_all_ranks);
    tcase_add_test(tc, test_duplicate_and_rank_beyond_world);
    tcase_add_test(tc, test_late);
    tcase_add_test(tc, test_resumed_run_is_a_segment);
    tcase_add_test(tc, test_far_jump_refused);
    tcase_add_test(tc, test_open_step_eviction);
    tcase_add_test(tc, test_timeout_completes_partial);
    tcase_add_test(tc, test_world_grows_mid_step);
    tcase_add_test(tc, test_validation_is_no_step);
    suite_add_tcase(s, tc);
    TCase *reg = tcase_create("registry");
    tcase_add_checked_fixture(reg, setup, teardown);
    tcase_set_timeout(reg, 30);
    tcase_add_test(reg, test_attach_refusals);
    tcase_add_test(reg, test_version_reaches_subscribers);
    tcase_add_test(reg, test_expiry_is_an_event);
    tcase_add_test(reg, test_history_thinned);
    suite_add_tcase(s, reg);
    return s;
}

GRIST_CHECK_MAIN(suite)
