/*
 * gristd's Attach stream and query API end to end, with the real daemon on
 * 127.0.0.1:0 and gRPC core clients: convergence of several jobs at once,
 * late joiners, every bad-input case, clients that vanish, and SIGTERM with
 * live streams.
 */
#include <check.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "grist/sketch.h"
#include "grist/v1/grist.pb-c.h"
#include "harness.h"
#include "worker.h"
#include "../rng.h"
#include "../check_main.h"

static struct gristd_proc start_daemon(const char *const *extra)
{
    const char *args[24] = {"--listen", "127.0.0.1:0", "--log-level", "warn"};
    int n = 4;
    for (int i = 0; extra && extra[i]; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    struct gristd_proc p;
    ck_assert_int_eq(gristd_start(&p, args), 0);
    return p;
}

/* GetJob -> decoded response (NULL + *status on error) */
static Grist__V1__GetJobResponse *get_job(const char *addr, const char *id, grpc_status_code *st)
{
    Grist__V1__GetJobRequest req = GRIST__V1__GET_JOB_REQUEST__INIT;
    req.job_id = (char *)id;
    uint8_t buf[512];
    size_t len = grist__v1__get_job_request__pack(&req, buf);
    void *resp;
    size_t rlen;
    *st = rpc_unary(addr, "/grist.v1.Grist/GetJob", buf, len, &resp, &rlen, NULL, 0, 10.0);
    if (*st != GRPC_STATUS_OK) {
        free(resp);
        return NULL;
    }
    Grist__V1__GetJobResponse *r = grist__v1__get_job_response__unpack(NULL, rlen, resp);
    free(resp);
    return r;
}

/* Wait (bounded, by polling the query API) until the daemon evaluated a job
 * at `steps` steps. Returns the job's version. */
static uint64_t wait_evaluated(const char *addr, const char *id, uint64_t steps)
{
    for (int i = 0; i < 2000; i++) {
        grpc_status_code st;
        Grist__V1__GetJobResponse *r = get_job(addr, id, &st);
        if (r && r->n_groups > 0 && r->groups[0]->steps >= steps) {
            uint64_t v = r->job->version;
            grist__v1__get_job_response__free_unpacked(r, NULL);
            return v;
        }
        if (r)
            grist__v1__get_job_response__free_unpacked(r, NULL);
        usleep(10000);
    }
    ck_abort_msg("job %s never reached %llu evaluated steps", id, (unsigned long long)steps);
    return 0;
}

/* Read a stream until it delivered `version`. */
static void read_until(struct tw *w, uint64_t version, struct tw_hp *hp)
{
    while (hp->version < version) {
        int r = tw_next(w, hp, 10.0);
        ck_assert_msg(r == 1, "stream ended or timed out waiting for version %llu (r=%d)",
                      (unsigned long long)version, r);
    }
}

/* ---- several jobs converge to their own rho ---- */

enum { NJOBS = 3, W = 4, N = 4000, M = 256, STEPS = 600 };

START_TEST(test_jobs_converge)
{
    struct gristd_proc p = start_daemon(NULL);
    grpc_init();
    const double rho[NJOBS] = {0.3, 0.6, 0.9};
    const char *ids[NJOBS] = {"job-a", "job-b", "job-c"};
    struct tw *w[NJOBS][W];
    uint32_t seed[NJOBS];
    for (int j = 0; j < NJOBS; j++)
        for (int r = 0; r < W; r++) {
            struct tw_opts o = {.job = ids[j],
                                .rank = (uint32_t)r,
                                .world = W,
                                .ngroups = 1,
                                .m = M,
                                .n = N,
                                .beta0 = 0.45,
                                .solve_every = 10,
                                .noise = "workers",
                                .rule = "alignment"};
            w[j][r] = tw_open(p.addr[0], &o);
            uint32_t s;
            ck_assert_int_eq(tw_welcome(w[j][r], &s, 10.0), 0);
            if (r == 0)
                seed[j] = s;
            ck_assert_uint_eq(s, seed[j]); /* one seed per job */
        }
    ck_assert(seed[0] != seed[1] && seed[1] != seed[2]);

    /* a dashboard watches job-c from the start */
    struct tw *watch = tw_open_method(p.addr[0], "/grist.v1.Grist/WatchJob");
    {
        Grist__V1__WatchJobRequest wr = GRIST__V1__WATCH_JOB_REQUEST__INIT;
        wr.job_id = (char *)"job-c";
        uint8_t wb[64];
        ck_assert_int_eq(tw_send_raw(watch, wb, grist__v1__watch_job_request__pack(&wr, wb)), 0);
    }

    struct grist_rng rng;
    grist_rng_seed(&rng, 11);
    static double g[NJOBS][N], obs[N], acc[M];
    static float sk[M];
    for (int j = 0; j < NJOBS; j++)
        for (int i = 0; i < N; i++)
            g[j][i] = grist_rng_normal(&rng);
    for (int t = 1; t <= STEPS; t++) {
        for (int j = 0; j < NJOBS; j++) {
            const double a = sqrt(1 - rho[j] * rho[j]);
            for (int i = 0; i < N; i++)
                g[j][i] = rho[j] * g[j][i] + a * grist_rng_normal(&rng);
            const uint32_t sp = grist_sketch_seed(seed[j], 0);
            for (int r = 0; r < W; r++) {
                for (int i = 0; i < N; i++) /* per-worker noise: 4x signal power per worker */
                    obs[i] = g[j][i] + 2.0 * grist_rng_normal(&rng);
                memset(acc, 0, sizeof(acc));
                double sq = 0;
                grist_sketch_accum_f64(sp, obs, N, 0, acc, M, &sq);
                grist_sketch_finish(acc, M, sk);
                uint8_t *buf;
                size_t len = tw_encode_summary(&buf, (uint64_t)t, 1, M, sk, &sq, 32);
                ck_assert_int_eq(tw_send_raw(w[j][r], buf, len), 0);
                free(buf);
            }
        }
    }
    for (int j = 0; j < NJOBS; j++) {
        const uint64_t v = wait_evaluated(p.addr[0], ids[j], STEPS);
        ck_assert_uint_ge(v, 1);
        for (int r = 0; r < W; r++) {
            struct tw_hp hp = {0};
            read_until(w[j][r], v, &hp);
            printf("job %s rho %.1f: rank %d version %llu momentum %.3f (%s)\n", ids[j], rho[j], r,
                   (unsigned long long)hp.version, hp.momentum[0], hp.reason);
            ck_assert_msg(fabs(hp.momentum[0] - rho[j]) <= 0.07, "job %s: momentum %.3f, rho %.2f",
                          ids[j], hp.momentum[0], rho[j]);
        }
        grpc_status_code st;
        Grist__V1__GetJobResponse *r = get_job(p.addr[0], ids[j], &st);
        ck_assert_ptr_nonnull(r);
        ck_assert_uint_eq(r->job->step, STEPS);
        ck_assert_uint_eq(r->job->world_size, W);
        ck_assert_uint_eq(r->job->live_workers, W);
        ck_assert_uint_eq(r->groups[0]->steps, STEPS); /* no step of another job counted */
        ck_assert_uint_eq(r->groups[0]->n_alignment, r->groups[0]->n_candidates);
        ck_assert(r->groups[0]->noise > 0);
        ck_assert_ptr_nonnull(r->groups[0]->families);
        ck_assert(r->groups[0]->families->trace > 0);
        grist__v1__get_job_response__free_unpacked(r, NULL);
    }
    /* the watcher saw job-c's evaluations, ending with the last one */
    int updates = 0;
    for (;;) {
        uint8_t *buf;
        size_t len;
        ck_assert_int_eq(tw_recv_raw(watch, &buf, &len, 10.0), 1);
        Grist__V1__GetJobResponse *r = grist__v1__get_job_response__unpack(NULL, len, buf);
        free(buf);
        ck_assert_ptr_nonnull(r);
        ck_assert_str_eq(r->job->job_id, "job-c");
        updates++;
        const uint64_t steps = r->n_groups ? r->groups[0]->steps : 0;
        grist__v1__get_job_response__free_unpacked(r, NULL);
        if (steps == STEPS)
            break;
    }
    ck_assert_int_ge(updates, 2);
    tw_free(watch);
    /* watching an unknown job: NOT_FOUND */
    watch = tw_open_method(p.addr[0], "/grist.v1.Grist/WatchJob");
    {
        Grist__V1__WatchJobRequest wr = GRIST__V1__WATCH_JOB_REQUEST__INIT;
        wr.job_id = (char *)"nope";
        uint8_t wb[64];
        tw_send_raw(watch, wb, grist__v1__watch_job_request__pack(&wr, wb));
        uint8_t *buf;
        size_t len;
        ck_assert_int_eq(tw_recv_raw(watch, &buf, &len, 10.0), -GRPC_STATUS_NOT_FOUND - 1);
    }
    tw_free(watch);

    /* ListJobs sees the three */
    void *resp;
    size_t rlen;
    ck_assert_int_eq(rpc_unary(p.addr[0], "/grist.v1.Grist/ListJobs", "", 0, &resp, &rlen, NULL, 0,
                               10),
                     GRPC_STATUS_OK);
    Grist__V1__ListJobsResponse *lj = grist__v1__list_jobs_response__unpack(NULL, rlen, resp);
    ck_assert_uint_eq(lj->n_jobs, NJOBS);
    grist__v1__list_jobs_response__free_unpacked(lj, NULL);
    free(resp);
    /* history, downsampled: STEPS / 10 evaluations, ask for 20 points */
    Grist__V1__GetHistoryRequest hr = GRIST__V1__GET_HISTORY_REQUEST__INIT;
    hr.job_id = (char *)"job-c";
    hr.series = (char *)"momentum";
    hr.points = 20;
    uint8_t hb[256];
    size_t hl = grist__v1__get_history_request__pack(&hr, hb);
    ck_assert_int_eq(rpc_unary(p.addr[0], "/grist.v1.Grist/GetHistory", hb, hl, &resp, &rlen, NULL,
                               0, 10),
                     GRPC_STATUS_OK);
    Grist__V1__GetHistoryResponse *h = grist__v1__get_history_response__unpack(NULL, rlen, resp);
    ck_assert_uint_eq(h->n_steps, 20);
    ck_assert_uint_eq(h->n_values, 20);
    ck_assert_uint_le(h->steps[0], 30); /* the first evaluation (batched steps may merge) */
    ck_assert_uint_eq(h->steps[19], STEPS);
    for (size_t i = 1; i < h->n_steps; i++)
        ck_assert_uint_gt(h->steps[i], h->steps[i - 1]);
    grist__v1__get_history_response__free_unpacked(h, NULL);
    free(resp);

    /* a late joiner gets Welcome, then the current version at once */
    struct tw_opts o =
        {.job = "job-c", .rank = 1, .world = W, .ngroups = 1, .m = M, .n = N, .beta0 = 0.9};
    struct tw *late = tw_open(p.addr[0], &o);
    uint32_t s;
    ck_assert_int_eq(tw_welcome(late, &s, 10.0), 0);
    ck_assert_uint_eq(s, seed[2]);
    struct tw_hp hp = {0};
    ck_assert_int_eq(tw_next(late, &hp, 10.0), 1);
    ck_assert_uint_ge(hp.version, 1);
    ck_assert(fabs(hp.momentum[0] - 0.9) <= 0.07);
    tw_free(late);

    for (int j = 0; j < NJOBS; j++)
        for (int r = 0; r < W; r++) {
            char det[128];
            ck_assert_int_eq(tw_finish(w[j][r], det, sizeof(det), 10.0), GRPC_STATUS_OK);
            tw_free(w[j][r]);
        }
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* ---- bad input ---- */

static grpc_status_code expect_end(struct tw *w, char *det, size_t dsz)
{
    struct tw_hp hp;
    int r;
    while ((r = tw_next(w, &hp, 10.0)) == 1)
        ;
    ck_assert_int_lt(r, 0);
    return tw_status(w, det, dsz);
}

START_TEST(test_bad_input)
{
    const char *extra[] =
        {"--max-message-bytes", "65536", "--max-workers", "8", "--max-jobs", "2", NULL};
    struct gristd_proc p = start_daemon(extra);
    grpc_init();
    char det[256];
    static float sk[M];
    for (int i = 0; i < M; i++)
        sk[i] = 0.01f * (float)i;
    uint8_t *buf;
    size_t len;

    /* a healthy worker of job "ok" keeps streaming through all of this */
    struct tw_opts ok = {.job = "ok",
                         .rank = 0,
                         .world = 1,
                         .ngroups = 2,
                         .m = M,
                         .n = 1000,
                         .beta0 = 0.9,
                         .solve_every = 1,
                         .min_steps = 1}; /* every step evaluated */
    struct tw *good = tw_open(p.addr[0], &ok);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(good, &seed, 10), 0);
    static float sk2[2 * M];
    len = tw_encode_summary(&buf, 1, 2, M, sk2, NULL, 8);
    ck_assert_int_eq(tw_send_raw(good, buf, len), 0);
    free(buf);

    /* summary before hello */
    struct tw *w = tw_open(p.addr[0], NULL);
    len = tw_encode_summary(&buf, 1, 1, M, sk, NULL, 8);
    tw_send_raw(w, buf, len);
    free(buf);
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_FAILED_PRECONDITION);
    ck_assert_ptr_nonnull(strstr(det, "hello"));
    tw_free(w);

    /* bytes that are not a WorkerMessage */
    w = tw_open(p.addr[0], NULL);
    const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    tw_send_raw(w, junk, sizeof(junk));
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    tw_free(w);

    /* a summary of the job "ok" (rank 1 of a second stream) that is bad in
     * three ways, each on its own stream; the job must not change */
    struct tw_opts o2 = ok;
    for (int kind = 0; kind < 3; kind++) {
        w = tw_open(p.addr[0], &o2);
        ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
        static float bad[2 * M];
        memcpy(bad, sk2, sizeof(bad));
        uint32_t ng = 2, mm = M;
        if (kind == 0)
            bad[M + 7] = NAN;
        else if (kind == 1)
            mm = M / 2;
        else
            ng = 1;
        len = tw_encode_summary(&buf, 2, ng, mm, bad, NULL, 8);
        tw_send_raw(w, buf, len);
        free(buf);
        ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
        const char *field[] = {"summary.groups[1].sketch[7]", "sketch", "summary.groups"};
        ck_assert_msg(strstr(det, field[kind]) != NULL, "kind %d: '%s'", kind, det);
        tw_free(w);
    }
    /* hello over the limits, and a bad hello */
    struct tw_opts big = ok;
    big.job = "big";
    big.world = 9;
    w = tw_open(p.addr[0], &big);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), -GRPC_STATUS_RESOURCE_EXHAUSTED);
    tw_free(w);
    struct tw_opts badm = ok;
    badm.job = "badm";
    badm.m = 1000;
    w = tw_open(p.addr[0], &badm);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), -GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr((tw_status(w, det, sizeof(det)), det), "sketch_dim"));
    tw_free(w);
    /* a job re-attached with another shape */
    struct tw_opts shape = ok;
    shape.n = 999;
    w = tw_open(p.addr[0], &shape);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), -GRPC_STATUS_INVALID_ARGUMENT);
    tw_free(w);
    /* hello twice */
    w = tw_open(p.addr[0], &o2);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    {
        Grist__V1__GroupSpec gs = GRIST__V1__GROUP_SPEC__INIT;
        gs.num_elements = 1000;
        Grist__V1__GroupSpec *gp[2] = {&gs, &gs};
        Grist__V1__Hello h = GRIST__V1__HELLO__INIT;
        h.job_id = (char *)"ok";
        h.world_size = 1;
        h.n_groups = 2;
        h.groups = gp;
        h.sketch_dim = M;
        Grist__V1__WorkerMessage wm = GRIST__V1__WORKER_MESSAGE__INIT;
        wm.msg_case = GRIST__V1__WORKER_MESSAGE__MSG_HELLO;
        wm.hello = &h;
        uint8_t hb[256];
        size_t hl = grist__v1__worker_message__pack(&wm, hb);
        tw_send_raw(w, hb, hl);
    }
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_FAILED_PRECONDITION);
    tw_free(w);
    /* an oversize message: gRPC refuses it before gristd decodes it */
    struct tw_opts huge =
        {.job = "huge", .rank = 0, .world = 1, .ngroups = 1, .m = 32768, .n = 100000, .beta0 = 0.9};
    w = tw_open(p.addr[0], &huge);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    float *hs = calloc(32768, sizeof(float));
    len = tw_encode_summary(&buf, 1, 1, 32768, hs, NULL, 8);
    tw_send_raw(w, buf, len);
    free(buf);
    free(hs);
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_RESOURCE_EXHAUSTED);
    tw_free(w);
    /* a third job is over --max-jobs 2 ("ok" and "huge" exist) */
    struct tw_opts third = ok;
    third.job = "third";
    w = tw_open(p.addr[0], &third);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), -GRPC_STATUS_RESOURCE_EXHAUSTED);
    ck_assert_ptr_nonnull(strstr((tw_status(w, det, sizeof(det)), det), "max-jobs"));
    tw_free(w);
    /* unknown job in the query API */
    grpc_status_code st;
    ck_assert_ptr_null(get_job(p.addr[0], "nope", &st));
    ck_assert_int_eq(st, GRPC_STATUS_NOT_FOUND);

    /* the good stream still works: its step 2 completes the job's second step */
    len = tw_encode_summary(&buf, 2, 2, M, sk2, NULL, 8);
    ck_assert_int_eq(tw_send_raw(good, buf, len), 0);
    free(buf);
    uint64_t step = 0;
    for (int i = 0; i < 500 && step != 2; i++) {
        Grist__V1__GetJobResponse *r = get_job(p.addr[0], "ok", &st);
        ck_assert_ptr_nonnull(r);
        step = r->job->step;
        grist__v1__get_job_response__free_unpacked(r, NULL);
        ck_assert_uint_le(step, 2);
        if (step != 2)
            usleep(10000);
    }
    ck_assert_msg(step == 2, "the good stream's step 2 was never aggregated (step %llu)",
                  (unsigned long long)step);
    /* and the job holds exactly its own two steps: nothing of the bad input */
    wait_evaluated(p.addr[0], "ok", 2);
    Grist__V1__GetJobResponse *okr = get_job(p.addr[0], "ok", &st);
    ck_assert_ptr_nonnull(okr);
    ck_assert_uint_eq(okr->n_groups, 2);
    ck_assert_uint_eq(okr->groups[0]->steps, 2);
    ck_assert_uint_eq(okr->groups[1]->steps, 2);
    ck_assert_uint_eq(okr->job->late_summaries, 0);
    ck_assert_uint_eq(okr->job->dropped_steps, 0);
    grist__v1__get_job_response__free_unpacked(okr, NULL);
    ck_assert_int_eq(tw_finish(good, det, sizeof(det), 10), GRPC_STATUS_OK);
    tw_free(good);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* ---- a client that vanishes, and SIGTERM with live streams ---- */

START_TEST(test_vanishing_client_and_sigterm)
{
    /* a write past the bits is silent in a release build: run this daemon
     * under memcheck, which makes it exit 99 at SIGTERM (checked below) */
    char wrap[600];
    const char *supp = getenv("GRIST_VALGRIND_SUPP");
    const int memcheck = !getenv("GRISTD_WRAPPER") && !getenv("GRIST_SANITIZED") && supp &&
        system("valgrind --version >/dev/null 2>&1") == 0;
    if (memcheck) {
        snprintf(wrap, sizeof(wrap), "valgrind --error-exitcode=99 --quiet --suppressions=%s",
                 supp);
        setenv("GRISTD_WRAPPER", wrap, 1);
    }
    const char *extra[] = {"--aggregation-timeout", "3", NULL};
    struct gristd_proc p = start_daemon(extra);
    if (memcheck)
        unsetenv("GRISTD_WRAPPER");
    /* rank 1 of job "v" in a child process that is killed mid-stream */
    struct tw_opts o = {.job = "v",
                        .rank = 0,
                        .world = 2,
                        .ngroups = 1,
                        .m = M,
                        .n = 1000,
                        .beta0 = 0.9,
                        .solve_every = 5,
                        .min_steps = 5};
    pid_t child = fork();
    if (child == 0) {
        grpc_init();
        o.rank = 1;
        struct tw *w = tw_open(p.addr[0], &o);
        uint32_t s;
        tw_welcome(w, &s, 10);
        static float sk[M];
        for (uint64_t t = 1;; t++) {
            uint8_t *buf;
            size_t len = tw_encode_summary(&buf, t, 1, M, sk, NULL, 8);
            tw_send_raw(w, buf, len);
            free(buf);
            usleep(5000);
        }
    }
    grpc_init();
    struct tw *w = tw_open(p.addr[0], &o);
    uint32_t s;
    ck_assert_int_eq(tw_welcome(w, &s, 10), 0);
    static float sk[M];
    struct grist_rng r;
    grist_rng_seed(&r, 5);
    for (uint64_t t = 1; t <= 40; t++) {
        if (t == 10)
            kill(child, SIGKILL), waitpid(child, NULL, 0);
        for (int i = 0; i < M; i++)
            sk[i] = (float)grist_rng_normal(&r);
        uint8_t *buf;
        size_t len = tw_encode_summary(&buf, t, 1, M, sk, NULL, 8);
        ck_assert_int_eq(tw_send_raw(w, buf, len), 0);
        free(buf);
    }
    /* the job goes on with the remaining rank (partial steps after the timeout) */
    wait_evaluated(p.addr[0], "v", 40);
    grpc_status_code st;
    Grist__V1__GetJobResponse *jr = get_job(p.addr[0], "v", &st);
    ck_assert_ptr_nonnull(jr);
    ck_assert_uint_eq(jr->job->live_workers, 1);
    grist__v1__get_job_response__free_unpacked(jr, NULL);
    ck_assert_int_eq(health_check(p.addr[0], ""), 1);

    /* SIGTERM with a live stream: the client gets UNAVAILABLE, gristd exits 0 */
    kill(p.pid, SIGTERM);
    char det[128];
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_UNAVAILABLE);
    ck_assert_ptr_nonnull(strstr(det, "shutting down"));
    tw_free(w);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, 0), 0);
}
END_TEST

/* ---- world size changes, idle jobs expire ---- */

START_TEST(test_world_change_and_expiry)
{
    const char *extra[] = {"--idle-expiry", "1", NULL};
    struct gristd_proc p = start_daemon(extra);
    grpc_init();
    struct tw_opts o =
        {.job = "ws", .rank = 0, .world = 2, .ngroups = 1, .m = M, .n = 100, .beta0 = 0.9};
    struct tw *a = tw_open(p.addr[0], &o);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(a, &seed, 10), 0);
    o.world = 1; /* the job shrinks to one rank */
    struct tw *b = tw_open(p.addr[0], &o);
    ck_assert_int_eq(tw_welcome(b, &seed, 10), 0);
    grpc_status_code st;
    Grist__V1__GetJobResponse *r = get_job(p.addr[0], "ws", &st);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->job->world_size, 1);
    ck_assert_uint_eq(r->job->live_workers, 2);
    grist__v1__get_job_response__free_unpacked(r, NULL);
    /* with one rank, a step aggregates at once */
    static float sk[M];
    uint8_t *buf;
    size_t len = tw_encode_summary(&buf, 1, 1, M, sk, NULL, 8);
    tw_send_raw(b, buf, len);
    free(buf);
    uint64_t step = 0;
    for (int i = 0; i < 500 && step != 1; i++) {
        r = get_job(p.addr[0], "ws", &st);
        ck_assert_msg(r, "GetJob failed: %d", st);
        step = r->job->step;
        grist__v1__get_job_response__free_unpacked(r, NULL);
        if (step != 1)
            usleep(10000);
    }
    ck_assert_msg(step == 1, "the one-rank step was never aggregated (step %llu)",
                  (unsigned long long)step);
    /* both leave; one second later the job is gone */
    char det[64];
    ck_assert_int_eq(tw_finish(a, det, sizeof(det), 10), GRPC_STATUS_OK);
    ck_assert_int_eq(tw_finish(b, det, sizeof(det), 10), GRPC_STATUS_OK);
    tw_free(a);
    tw_free(b);
    int gone = 0;
    for (int i = 0; i < 500 && !gone; i++) {
        r = get_job(p.addr[0], "ws", &st);
        if (!r)
            gone = st == GRPC_STATUS_NOT_FOUND;
        else
            grist__v1__get_job_response__free_unpacked(r, NULL);
        if (!gone)
            usleep(10000);
    }
    ck_assert_msg(gone, "idle job did not expire");
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* A job grows while a step is open: the open step's rank bits were sized
 * for the old world, and a rank of the new world reporting that step once
 * wrote past them (a heap overflow any client could trigger). */
START_TEST(test_world_grows_mid_step)
{
    /* a write past the bits is silent in a release build: run this daemon
     * under memcheck, which makes it exit 99 at SIGTERM (checked below) */
    char wrap[600];
    const char *supp = getenv("GRIST_VALGRIND_SUPP");
    const int memcheck = !getenv("GRISTD_WRAPPER") && !getenv("GRIST_SANITIZED") && supp &&
        system("valgrind --version >/dev/null 2>&1") == 0;
    if (memcheck) {
        snprintf(wrap, sizeof(wrap), "valgrind --error-exitcode=99 --quiet --suppressions=%s",
                 supp);
        setenv("GRISTD_WRAPPER", wrap, 1);
    }
    const char *extra[] = {"--aggregation-timeout", "3", NULL};
    struct gristd_proc p = start_daemon(extra);
    if (memcheck)
        unsetenv("GRISTD_WRAPPER");
    grpc_init();
    struct tw_opts o =
        {.job = "grow", .rank = 0, .world = 2, .ngroups = 1, .m = M, .n = 100, .beta0 = 0.9};
    struct tw *a = tw_open(p.addr[0], &o);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(a, &seed, 10), 0);
    static float sk[M];
    for (uint32_t i = 0; i < M; i++)
        sk[i] = 0.01f * (float)(i % 7);
    uint8_t *buf;
    size_t len = tw_encode_summary(&buf, 5, 1, M, sk, NULL, 8);
    ck_assert_int_eq(tw_send_raw(a, buf, len), 0);
    usleep(500000); /* step 5 opens at world 2 before the Hello below arrives */
    /* the job grows to 4096 ranks; rank 17 reports the open step 5 (twice:
     * the second is a duplicate) and step 6 */
    o.world = 4096;
    o.rank = 17; /* its bit lies just past the two bytes of a world-2 step */
    struct tw *b = tw_open(p.addr[0], &o);
    ck_assert_int_eq(tw_welcome(b, &seed, 10), 0);
    ck_assert_int_eq(tw_send_raw(b, buf, len), 0);
    ck_assert_int_eq(tw_send_raw(b, buf, len), 0);
    free(buf);
    len = tw_encode_summary(&buf, 6, 1, M, sk, NULL, 8);
    ck_assert_int_eq(tw_send_raw(a, buf, len), 0);
    ck_assert_int_eq(tw_send_raw(b, buf, len), 0);
    free(buf);
    /* both steps complete on the timeout as partial steps of the big world */
    grpc_status_code st;
    Grist__V1__GetJobResponse *r = NULL;
    uint64_t step = 0;
    for (int i = 0; i < 3000 && step != 6; i++) {
        r = get_job(p.addr[0], "grow", &st);
        ck_assert_msg(r, "GetJob failed: %d (did gristd die?)", st);
        step = r->job->step;
        if (step == 6) {
            ck_assert_uint_eq(r->job->world_size, 4096);
            ck_assert_uint_eq(r->job->dropped_steps, 0);
        }
        grist__v1__get_job_response__free_unpacked(r, NULL);
        if (step != 6)
            usleep(10000);
    }
    ck_assert_msg(step == 6, "steps 5 and 6 were not aggregated (step %llu)",
                  (unsigned long long)step);
    char det[64];
    ck_assert_int_eq(tw_finish(a, det, sizeof(det), 10), GRPC_STATUS_OK);
    ck_assert_int_eq(tw_finish(b, det, sizeof(det), 10), GRPC_STATUS_OK);
    tw_free(a);
    tw_free(b);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* Poll GetJob until the job's newest step is `want`; returns its brief's
 * late-summary count. */
static uint64_t wait_job_step(const char *addr, const char *id, uint64_t want)
{
    uint64_t step = 0, late = 0;
    for (int i = 0; i < 1000 && step != want; i++) {
        grpc_status_code st;
        Grist__V1__GetJobResponse *r = get_job(addr, id, &st);
        ck_assert_msg(r, "GetJob %s failed: %d", id, st);
        step = r->job->step;
        late = r->job->late_summaries;
        grist__v1__get_job_response__free_unpacked(r, NULL);
        if (step != want)
            usleep(10000);
    }
    ck_assert_msg(step == want, "job %s: step %llu, expected %llu", id, (unsigned long long)step,
                  (unsigned long long)want);
    return late;
}

static void send_step(struct tw *w, uint64_t step)
{
    static float sk[M];
    uint8_t *buf;
    size_t len = tw_encode_summary(&buf, step, 1, M, sk, NULL, 8);
    ck_assert_int_eq(tw_send_raw(w, buf, len), 0);
    free(buf);
}

/* Fair share of a compute thread (engine.c): a heavy job (64 groups, each
 * step made to cost 3.2 ms by GRISTD_FAULT=compute-slow) sent as fast as
 * possible beside two light ones (1 group, a step every 10 ms) on one
 * compute thread with a 256-step queue. With the share (--compute-lag
 * 0.05) the heavy job sheds its own steps and the light ones lose none;
 * without it (--compute-lag 0) the
 * full queue drops the light jobs' steps too: the test can fail. */
static void run_fair_share(const char *lag, uint64_t *light_dropped, uint64_t *heavy_shed)
{
    enum { HG = 64, HM = 64, LIGHT_STEPS = 250 };
    setenv("GRISTD_FAULT", "compute-slow", 1);
    const char *extra[] = {"--compute-threads",
                           "1",
                           "--compute-queue",
                           "256",
                           "--compute-lag",
                           lag,
                           "--cov-dim",
                           "0",
                           NULL};
    struct gristd_proc p = start_daemon(extra);
    unsetenv("GRISTD_FAULT");
    grpc_init();
    struct tw_opts ho =
        {.job = "fair-heavy", .world = 1, .ngroups = HG, .m = HM, .n = 100, .beta0 = 0.9};
    struct tw_opts lo =
        {.job = "fair-light-a", .world = 1, .ngroups = 1, .m = M, .n = 100, .beta0 = 0.9};
    uint32_t seed;
    struct tw *h = tw_open(p.addr[0], &ho);
    ck_assert_int_eq(tw_welcome(h, &seed, 10), 0);
    struct tw *la = tw_open(p.addr[0], &lo);
    ck_assert_int_eq(tw_welcome(la, &seed, 10), 0);
    lo.job = "fair-light-b";
    struct tw *lb = tw_open(p.addr[0], &lo);
    ck_assert_int_eq(tw_welcome(lb, &seed, 10), 0);
    static float hsk[HG * HM];
    for (int i = 0; i < HG * HM; i++)
        hsk[i] = 0.01f * (float)(i % 5);
    uint64_t hstep = 0;
    double next = mono_s();
    for (uint64_t ls = 1; ls <= LIGHT_STEPS;) {
        if (mono_s() >= next) {
            send_step(la, ls);
            send_step(lb, ls);
            ls++;
            next += 0.010;
        } else {
            uint8_t *buf;
            size_t len = tw_encode_summary(&buf, ++hstep, HG, HM, hsk, NULL, 8);
            ck_assert_int_eq(tw_send_raw(h, buf, len), 0);
            free(buf);
        }
    }
    wait_job_step(p.addr[0], "fair-light-a", LIGHT_STEPS);
    wait_job_step(p.addr[0], "fair-light-b", LIGHT_STEPS);
    *light_dropped = 0;
    const char *ids[] = {"fair-light-a", "fair-light-b", "fair-heavy"};
    for (int k = 0; k < 3; k++) {
        grpc_status_code st;
        Grist__V1__GetJobResponse *r = get_job(p.addr[0], ids[k], &st);
        ck_assert_msg(r, "GetJob %s failed: %d", ids[k], st);
        printf("fair share (--compute-lag %s): %s step %llu, dropped %llu, shed %llu "
               "(heavy sent %llu)\n",
               lag, ids[k], (unsigned long long)r->job->step,
               (unsigned long long)r->job->dropped_steps, (unsigned long long)r->job->shed_steps,
               (unsigned long long)hstep);
        fflush(stdout);
        if (k < 2)
            *light_dropped += r->job->dropped_steps;
        else
            *heavy_shed = r->job->shed_steps;
        grist__v1__get_job_response__free_unpacked(r, NULL);
    }
    tw_cancel(h);
    tw_cancel(la);
    tw_cancel(lb);
    tw_free(h);
    tw_free(la);
    tw_free(lb);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}

START_TEST(test_fair_share)
{
    if (getenv("GRISTD_WRAPPER"))
        return; /* under memcheck the loop, not the compute thread, is the bottleneck */
    uint64_t light, shed;
    run_fair_share("0.05", &light, &shed);
    ck_assert_msg(light == 0, "the light jobs lost %llu steps beside a heavy one",
                  (unsigned long long)light);
    ck_assert_msg(shed > 0, "the heavy job was never over its share (the test sent too little)");
    run_fair_share("0", &light, &shed);
    ck_assert_msg(light > 0,
                  "without the share the light jobs lost nothing: the load is too "
                  "small for this test to fail");
    ck_assert_uint_eq(shed, 0);
}
END_TEST

/* The step-number rules: late, a refused far jump, a resumed run. */
START_TEST(test_step_numbers)
{
    struct gristd_proc p = start_daemon(NULL);
    grpc_init();
    struct tw_opts o =
        {.job = "steps", .rank = 0, .world = 1, .ngroups = 1, .m = M, .n = 100, .beta0 = 0.9};
    struct tw *a = tw_open(p.addr[0], &o);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(a, &seed, 10), 0);
    for (uint64_t t = 1; t <= 3; t++)
        send_step(a, t);
    ck_assert_uint_eq(wait_job_step(p.addr[0], "steps", 3), 0);
    send_step(a, 2); /* late: counted, ignored, the stream stays */
    send_step(a, 4);
    ck_assert_uint_eq(wait_job_step(p.addr[0], "steps", 4), 1);
    /* step 2^64-1 jumps too far: refused, this stream ends, the job is intact */
    send_step(a, UINT64_MAX);
    struct tw_hp hp = {0};
    int r;
    while ((r = tw_next(a, &hp, 10)) == 1)
        ;
    ck_assert_int_lt(r, 0);
    char det[256];
    ck_assert_int_eq(tw_status(a, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "max-step-jump"), "unclear error: %s", det);
    tw_free(a);
    struct tw *b = tw_open(p.addr[0], &o);
    ck_assert_int_eq(tw_welcome(b, &seed, 10), 0);
    send_step(b, 1000); /* a jump within the bound */
    ck_assert_uint_eq(wait_job_step(p.addr[0], "steps", 1000), 1);
    /* the run is resumed from step 1: a new segment, not 2 late summaries */
    send_step(b, 1);
    send_step(b, 2);
    ck_assert_uint_eq(wait_job_step(p.addr[0], "steps", 2), 1);
    send_step(b, 2); /* late within the new segment */
    send_step(b, 3);
    ck_assert_uint_eq(wait_job_step(p.addr[0], "steps", 3), 2);
    ck_assert_int_eq(tw_finish(b, det, sizeof(det), 10), GRPC_STATUS_OK);
    tw_free(b);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* Open steps are bounded: a rank 64 steps ahead of its partner closes the
 * oldest open step as a partial one; the partner's summary for it is then
 * late. A step's second summary from one rank is a duplicate, not a second
 * worker. */
START_TEST(test_open_step_eviction)
{
    const char *extra[] = {"--aggregation-timeout", "600", NULL};
    struct gristd_proc p = start_daemon(extra);
    grpc_init();
    struct tw_opts o =
        {.job = "evict", .rank = 0, .world = 2, .ngroups = 1, .m = M, .n = 100, .beta0 = 0.9};
    struct tw *a = tw_open(p.addr[0], &o);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(a, &seed, 10), 0);
    o.rank = 1;
    struct tw *b = tw_open(p.addr[0], &o);
    ck_assert_int_eq(tw_welcome(b, &seed, 10), 0);
    for (uint64_t t = 1; t <= 66; t++) /* 66 open steps: the two oldest are closed */
        send_step(a, t);
    ck_assert_uint_eq(wait_job_step(p.addr[0], "evict", 2), 0);
    send_step(b, 1); /* already aggregated (partial): late */
    send_step(b, 3); /* the second worker: step 3 completes */
    ck_assert_uint_eq(wait_job_step(p.addr[0], "evict", 3), 1);
    /* rank 0 sends step 67 twice, then a late step 2 on the same (ordered)
     * stream: once that is counted, both 67s were filed, and the second
     * must not have completed the step as a second worker */
    send_step(a, 67);
    send_step(a, 67);
    send_step(a, 2);
    uint64_t late = 1, step = 0;
    for (int i = 0; i < 1000 && late < 2; i++) {
        grpc_status_code st;
        Grist__V1__GetJobResponse *r = get_job(p.addr[0], "evict", &st);
        ck_assert_ptr_nonnull(r);
        late = r->job->late_summaries;
        step = r->job->step;
        grist__v1__get_job_response__free_unpacked(r, NULL);
        if (late < 2)
            usleep(10000);
    }
    ck_assert_uint_eq(late, 2);
    ck_assert_msg(step == 3, "a duplicate summary completed step 67 (job step %llu)",
                  (unsigned long long)step);
    send_step(b, 67);
    ck_assert_uint_eq(wait_job_step(p.addr[0], "evict", 67), 2);
    char det[64];
    ck_assert_int_eq(tw_finish(a, det, sizeof(det), 10), GRPC_STATUS_OK);
    ck_assert_int_eq(tw_finish(b, det, sizeof(det), 10), GRPC_STATUS_OK);
    tw_free(a);
    tw_free(b);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* A job has one sketch kind and one sampling per group: a rank naming
 * another, or an unknown kind or sampling, is refused with the field named,
 * and the job keeps serving its own ranks. */
START_TEST(test_sketch_kind)
{
    struct gristd_proc p = start_daemon(NULL);
    grpc_init();
    char det[256];
    uint32_t seed;
    struct tw_opts o = {.job = "kinds",
                        .rank = 0,
                        .world = 2,
                        .ngroups = 1,
                        .m = M,
                        .n = 1000,
                        .beta0 = 0.9,
                        .sketch_kind = 1};
    struct tw *a = tw_open(p.addr[0], &o);
    ck_assert_int_eq(tw_welcome(a, &seed, 10), 0);
    struct tw_opts o2 = o;
    o2.rank = 1;
    o2.sketch_kind = 0;
    struct tw *b = tw_open(p.addr[0], &o2);
    ck_assert_int_eq(expect_end(b, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "sketch_kind") && strstr(det, "block"), "unclear: %s", det);
    tw_free(b);
    o2.sketch_kind = 7;
    b = tw_open(p.addr[0], &o2);
    ck_assert_int_eq(expect_end(b, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "sketch_kind"), "unclear: %s", det);
    tw_free(b);
    o2.sketch_kind = 1; /* the same kind, another sampling: refused */
    o2.sketch_sample = 16;
    b = tw_open(p.addr[0], &o2);
    ck_assert_int_eq(expect_end(b, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "sketch_sample") && strstr(det, "attached with 1"), "unclear: %s",
                  det);
    tw_free(b);
    o2.sketch_sample = 8; /* not a power of 4 */
    b = tw_open(p.addr[0], &o2);
    ck_assert_int_eq(expect_end(b, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "sketch_sample") && strstr(det, "1, 4, 16 or 64"), "unclear: %s",
                  det);
    tw_free(b);
    struct tw_opts o3 = o; /* a hashed job cannot sample */
    o3.job = "kinds-hashed";
    o3.sketch_kind = 0;
    o3.sketch_sample = 4;
    b = tw_open(p.addr[0], &o3);
    ck_assert_int_eq(expect_end(b, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "block sketch only"), "unclear: %s", det);
    tw_free(b);
    o2.sketch_sample = 1; /* the same kind and sampling (1 = 0 on the wire) attaches */
    b = tw_open(p.addr[0], &o2);
    ck_assert_int_eq(tw_welcome(b, &seed, 10), 0);
    tw_free(b);
    tw_free(a);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* A one-group job that evaluates every step (the family tests). */
static struct tw *fam_open(const char *addr, const char *id)
{
    struct tw_opts o = {.job = id,
                        .rank = 0,
                        .world = 1,
                        .ngroups = 1,
                        .m = M,
                        .n = 1000,
                        .beta0 = 0.9,
                        .solve_every = 1,
                        .min_steps = 1};
    struct tw *w = tw_open(addr, &o);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    return w;
}

/* Step t of a fam_open job: a sinusoidal sketch, its frequency shifted by
 * phase so that jobs differ. */
static void fam_step(struct tw *w, uint64_t t, int phase)
{
    static float sk[M];
    for (int i = 0; i < M; i++)
        sk[i] = (float)sin(0.37 * (double)(i + 1 + phase) * (double)t);
    uint8_t *buf;
    size_t len = tw_encode_summary(&buf, t, 1, M, sk, NULL, 8);
    ck_assert_int_eq(tw_send_raw(w, buf, len), 0);
    free(buf);
}

/* The family diagnostics of a run that ended before its family solve did
 * still appear: the families thread posts them itself (with every solve
 * slowed down, GRISTD_FAULT=families-slow, no evaluation comes after). */
START_TEST(test_families_after_last_step)
{
    setenv("GRISTD_FAULT", "families-slow", 1);
    struct gristd_proc p = start_daemon(NULL);
    unsetenv("GRISTD_FAULT");
    grpc_init();
    struct tw *w = fam_open(p.addr[0], "fam");
    for (uint64_t t = 1; t <= 60; t++)
        fam_step(w, t, 0);
    wait_evaluated(p.addr[0], "fam", 60); /* every step in, before the stream ends */
    tw_free(w);
    int have = 0;
    uint64_t steps = 0;
    for (int k = 0; k < 100 && !have; k++) {
        grpc_status_code st;
        Grist__V1__GetJobResponse *r = get_job(p.addr[0], "fam", &st);
        ck_assert_ptr_nonnull(r);
        steps = r->n_groups == 1 ? r->groups[0]->steps : 0;
        have = r->n_groups == 1 && r->groups[0]->families && r->groups[0]->families->trace > 0.0;
        grist__v1__get_job_response__free_unpacked(r, NULL);
        if (!have)
            usleep(100000);
    }
    ck_assert_uint_eq(steps, 60);
    ck_assert_msg(have, "no family diagnostics 10 s after the run ended");
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* Whether job id has family diagnostics yet. */
static int has_families(const char *addr, const char *id)
{
    grpc_status_code st;
    Grist__V1__GetJobResponse *r = get_job(addr, id, &st);
    ck_assert_ptr_nonnull(r);
    const int have =
        r->n_groups == 1 && r->groups[0]->families && r->groups[0]->families->trace > 0.0;
    grist__v1__get_job_response__free_unpacked(r, NULL);
    return have;
}

/* Four jobs fall due for their family solves in the same instant, with
 * every solve slowed down (GRISTD_FAULT=families-slow) and one compute
 * thread: the families thread takes one request, one waits, and the others
 * are postponed (gristd_family_solves_deferred_total counts them) instead
 * of each queueing a copy of its Sigma; kept stepping, every job gets its
 * families in turn. */
START_TEST(test_families_queue_bounded)
{
    setenv("GRISTD_FAULT", "families-slow", 1);
    const char *extra[] = {"--http", "127.0.0.1:0", "--compute-threads", "1", "--families-interval",
                           "0",      NULL};
    struct gristd_proc p = start_daemon(extra);
    unsetenv("GRISTD_FAULT");
    ck_assert_double_eq(gristd_metric(&p, "gristd_family_solves_deferred_total"), 0.0);
    grpc_init();
    enum { J = 4 };
    struct tw *w[J];
    char ids[J][16];
    for (int j = 0; j < J; j++) {
        snprintf(ids[j], sizeof(ids[j]), "famq-%d", j);
        w[j] = fam_open(p.addr[0], ids[j]);
    }
    /* step by step, every job in turn: all reach their first family solve
     * (step 50) within milliseconds of one another, inside one slow solve */
    uint64_t t = 1;
    for (; t <= 60; t++)
        for (int j = 0; j < J; j++)
            fam_step(w[j], t, j);
    for (int j = 0; j < J; j++)
        wait_evaluated(p.addr[0], ids[j], 60);
    const double deferred = gristd_metric(&p, "gristd_family_solves_deferred_total");
    ck_assert_msg(deferred >= 1, "no family solve was postponed (deferred %g)", deferred);
    /* one step per job every 100 ms: a postponed job asks again at each */
    int all = 0;
    for (int round = 0; round < 300 && !all; round++, t++) {
        all = 1;
        for (int j = 0; j < J; j++) {
            all &= has_families(p.addr[0], ids[j]);
            fam_step(w[j], t, j);
        }
        if (!all)
            usleep(100000);
    }
    ck_assert_msg(all, "a postponed job never got its family diagnostics");
    for (int j = 0; j < J; j++)
        tw_free(w[j]);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* Six rounds of 50 steps, 150 ms apart, of a fam_open job (one family
 * point per round); the job is read (GetJob) after each round when read. */
static void fam_rounds(const char *addr, const char *id, int read)
{
    struct tw *w = fam_open(addr, id);
    uint64_t t = 1;
    for (int round = 0; round < 6; round++) {
        for (int k = 0; k < 50; k++, t++)
            fam_step(w, t, 3);
        usleep(150000);
        if (read)
            ck_assert(has_families(addr, id) || round == 0);
    }
    tw_free(w);
}

/* A job nobody reads gets its family values once per
 * --families-idle-interval; one that is read, once per --families-interval
 * (here 50 ms, so once per family point). Without the idle floor the
 * unread job would be solved at each of its six family points. */
START_TEST(test_families_idle_cadence)
{
    const char *extra[] = {"--http",
                           "127.0.0.1:0",
                           "--compute-threads",
                           "1",
                           "--families-interval",
                           "0.05",
                           "--families-idle-interval",
                           "3600",
                           NULL};
    struct gristd_proc p = start_daemon(extra);
    grpc_init();
    fam_rounds(p.addr[0], "fam-unread", 0);
    usleep(300000);
    const double unread = gristd_metric(&p, "gristd_family_solves_total");
    ck_assert_msg(unread == 1.0, "an unread job was solved %g times (expected its first only)",
                  unread);
    fam_rounds(p.addr[0], "fam-read", 1);
    usleep(300000);
    const double read = gristd_metric(&p, "gristd_family_solves_total") - unread;
    ck_assert_msg(read >= 4.0, "a job read after each round was solved only %g times", read);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* WorkerMessage.batch of the given encoded WorkerMessage.summary messages,
 * the way libgrist builds it: each re-tagged as SummaryBatch field 1. */
static size_t encode_batch(uint8_t **out, uint8_t *const *msgs, const size_t *lens, int n)
{
    size_t total = 0;
    for (int k = 0; k < n; k++)
        total += lens[k];
    uint8_t *b = malloc(total + 11);
    size_t off = 0;
    b[off++] = 0x1a;
    for (uint64_t v = total;; v >>= 7) {
        b[off++] = (uint8_t)(v >= 0x80 ? (v & 0x7f) | 0x80 : v);
        if (v < 0x80)
            break;
    }
    for (int k = 0; k < n; k++) {
        memcpy(b + off, msgs[k], lens[k]);
        b[off] = 0x0a;
        off += lens[k];
    }
    *out = b;
    return off;
}

/* The job's newest step and its evaluated steps are both `steps`. */
static void assert_job_steps(const char *addr, const char *id, uint64_t steps)
{
    grpc_status_code st;
    Grist__V1__GetJobResponse *r = get_job(addr, id, &st);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->job->step, steps);
    ck_assert_uint_eq(r->groups[0]->steps, steps);
    grist__v1__get_job_response__free_unpacked(r, NULL);
}

/* Batches: applied in order as if sent one by one; a batch with one bad
 * summary is refused whole, naming its index; an empty one is refused. */
START_TEST(test_batches)
{
    struct gristd_proc p = start_daemon(NULL);
    grpc_init();
    char det[256];
    uint32_t seed;
    static float sk[M];
    struct tw_opts o = {.job = "batch",
                        .rank = 0,
                        .world = 1,
                        .ngroups = 1,
                        .m = M,
                        .n = 1000,
                        .beta0 = 0.9,
                        .solve_every = 1,
                        .min_steps = 1};
    struct tw *w = tw_open(p.addr[0], &o);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    uint8_t *msgs[5], *buf;
    size_t lens[5];
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < M; i++)
            sk[i] = (float)cos(0.1 * (double)(i + 1) * (k + 1));
        lens[k] = tw_encode_summary(&msgs[k], (uint64_t)k + 1, 1, M, sk, NULL, 8);
    }
    size_t len = encode_batch(&buf, msgs, lens, 5);
    ck_assert_int_eq(tw_send_raw(w, buf, len), 0);
    free(buf);
    wait_evaluated(p.addr[0], "batch", 5);
    assert_job_steps(p.addr[0], "batch", 5);
    /* steps 6, 7 good, 8 of the wrong size: nothing of it is applied */
    for (int k = 0; k < 5; k++)
        free(msgs[k]);
    for (int k = 0; k < 3; k++)
        lens[k] = tw_encode_summary(&msgs[k], (uint64_t)k + 6, 1, k == 2 ? M / 2 : M, sk, NULL, 8);
    len = encode_batch(&buf, msgs, lens, 3);
    ck_assert_int_eq(tw_send_raw(w, buf, len), 0);
    free(buf);
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "batch.summaries[2]"), "unclear: %s", det);
    tw_free(w);
    assert_job_steps(p.addr[0], "batch", 5); /* nothing of the bad batch */
    for (int k = 0; k < 3; k++)
        free(msgs[k]);
    /* an empty batch */
    w = tw_open(p.addr[0], &o);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    const uint8_t empty[] = {0x1a, 0x00};
    tw_send_raw(w, empty, sizeof(empty));
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "batch.summaries"), "unclear: %s", det);
    tw_free(w);
    ck_assert_int_eq(health_check(p.addr[0], ""), 1);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* The memory budget, at attach: a job whose statistics would exceed
 * --job-memory-budget, or the daemon's --memory-budget on top of the jobs it
 * holds, is refused with RESOURCE_EXHAUSTED and a clear message; the jobs it
 * holds keep serving, and the room of an expired job comes back. */
/* Counting before decoding (wire.c precheck): a 32 MiB Summary of 16.7M
 * empty groups (2 bytes each on the wire, some 80 bytes each once
 * protobuf-c has unpacked them: 1.3 GB) is refused from its element count
 * before it is unpacked; gristd's peak RSS stays far below what unpacking
 * would take, and the job goes on. */
START_TEST(test_counted_before_decoding)
{
    if (getenv("GRISTD_WRAPPER"))
        return; /* the wrapper's own memory would be measured */
    struct gristd_proc p = start_daemon(NULL);
    grpc_init();
    struct tw_opts o =
        {.job = "precount", .rank = 0, .world = 1, .ngroups = 2, .m = M, .n = 100, .beta0 = 0.9};
    struct tw *w = tw_open(p.addr[0], &o);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    const long before = proc_status_kb(p.pid, "VmHWM");
    /* WorkerMessage{summary(2): Summary{step(1)=1, groups(2) = {} x n}} */
    const size_t n = (size_t)1 << 24, inner = 2 + 2 * n;
    uint8_t *buf = malloc(inner + 16), *q = buf;
    *q++ = 0x12; /* field 2, length-delimited */
    for (uint64_t v = inner;; v >>= 7) {
        *q++ = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80)
            break;
    }
    *q++ = 0x08; /* step = 1 */
    *q++ = 0x01;
    for (size_t i = 0; i < n; i++) {
        *q++ = 0x12; /* an empty GroupSummary */
        *q++ = 0x00;
    }
    ck_assert_int_eq(tw_send_raw(w, buf, (size_t)(q - buf)), 0);
    free(buf);
    char det[256];
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_INVALID_ARGUMENT);
    ck_assert_msg(strstr(det, "summary.groups: 16777216 groups"), "unclear: %s", det);
    tw_free(w);
    const long after = proc_status_kb(p.pid, "VmHWM");
    printf("counted before decoding: peak RSS %ld kB before, %ld kB after a 32 MiB message of "
           "16.7M empty groups\n",
           before, after);
    fflush(stdout);
    ck_assert_msg(after - before < 400 * 1024, "gristd grew by %ld kB", after - before);
    /* the job goes on */
    w = tw_open(p.addr[0], &o);
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    tw_free(w);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

START_TEST(test_memory_budget)
{
    const char *extra[] =
        {"--job-memory-budget", "8", "--memory-budget", "10", "--idle-expiry", "1", NULL};
    struct gristd_proc p = start_daemon(extra);
    grpc_init();
    char det[256];
    uint32_t seed;
    /* 16 groups x m 4096: about 49 MiB */
    struct tw_opts big =
        {.job = "big", .rank = 0, .world = 1, .ngroups = 16, .m = 4096, .n = 10000, .beta0 = 0.9};
    struct tw *w = tw_open(p.addr[0], &big);
    ck_assert_int_eq(tw_welcome(w, &seed, 20), -GRPC_STATUS_RESOURCE_EXHAUSTED);
    tw_status(w, det, sizeof(det));
    ck_assert_msg(strstr(det, "--job-memory-budget"), "unclear: %s", det);
    tw_free(w);
    /* two jobs of 2 groups (about 5.9 MiB each) do not both fit in 10 MiB */
    struct tw_opts a = {.job = "a",
                        .rank = 0,
                        .world = 1,
                        .ngroups = 2,
                        .m = 4096,
                        .n = 10000,
                        .beta0 = 0.9,
                        .solve_every = 1,
                        .min_steps = 1};
    struct tw *wa = tw_open(p.addr[0], &a);
    ck_assert_int_eq(tw_welcome(wa, &seed, 10), 0);
    struct tw_opts b = a;
    b.job = "b";
    struct tw *wb = tw_open(p.addr[0], &b);
    ck_assert_int_eq(tw_welcome(wb, &seed, 20), -GRPC_STATUS_RESOURCE_EXHAUSTED);
    tw_status(wb, det, sizeof(det));
    ck_assert_msg(strstr(det, "--memory-budget"), "unclear: %s", det);
    tw_free(wb);
    /* a small job still fits, and job a goes on */
    struct tw_opts c =
        {.job = "c", .rank = 0, .world = 1, .ngroups = 1, .m = 256, .n = 1000, .beta0 = 0.9};
    struct tw *wc = tw_open(p.addr[0], &c);
    ck_assert_int_eq(tw_welcome(wc, &seed, 10), 0);
    static float sk[2 * 4096];
    uint8_t *buf;
    size_t len = tw_encode_summary(&buf, 1, 2, 4096, sk, NULL, 8);
    ck_assert_int_eq(tw_send_raw(wa, buf, len), 0);
    free(buf);
    wait_evaluated(p.addr[0], "a", 1);
    tw_free(wc);
    tw_free(wa);
    /* once job a expired (1 s without workers) its room is free again */
    int attached = 0;
    for (int k = 0; k < 30 && !attached; k++) {
        usleep(250000);
        wb = tw_open(p.addr[0], &b);
        attached = tw_welcome(wb, &seed, 10) == 0;
        tw_free(wb);
    }
    ck_assert_msg(attached, "job b never fitted after job a expired");
    ck_assert_int_eq(health_check(p.addr[0], ""), 1);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

/* A stream that never sends its Hello is ended, not kept for good. */
START_TEST(test_hello_timeout)
{
    const char *extra[] = {"--hello-timeout", "0.3", NULL};
    struct gristd_proc p = start_daemon(extra);
    grpc_init();
    struct tw *w = tw_open(p.addr[0], NULL);
    ck_assert_int_eq(tw_send_md(w), 0); /* the call is open, no Hello follows */
    char det[256];
    ck_assert_int_eq(expect_end(w, det, sizeof(det)), GRPC_STATUS_DEADLINE_EXCEEDED);
    ck_assert_msg(strstr(det, "Hello"), "unclear error: %s", det);
    tw_free(w);
    ck_assert_int_eq(health_check(p.addr[0], ""), 1);
    grpc_shutdown();
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("attach");
    TCase *tc = tcase_create("attach");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_jobs_converge);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_vanishing_client_and_sigterm);
    tcase_add_test(tc, test_world_change_and_expiry);
    tcase_add_test(tc, test_world_grows_mid_step);
    tcase_add_test(tc, test_step_numbers);
    tcase_add_test(tc, test_fair_share);
    tcase_add_test(tc, test_open_step_eviction);
    tcase_add_test(tc, test_hello_timeout);
    tcase_add_test(tc, test_sketch_kind);
    tcase_add_test(tc, test_families_after_last_step);
    tcase_add_test(tc, test_families_queue_bounded);
    tcase_add_test(tc, test_families_idle_cadence);
    tcase_add_test(tc, test_batches);
    tcase_add_test(tc, test_memory_budget);
    tcase_add_test(tc, test_counted_before_decoding);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
