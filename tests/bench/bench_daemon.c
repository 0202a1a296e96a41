/*
 * Daemon benchmark (not a test): the real gristd on loopback, clients in
 * this process (one thread per stream), both on the same machine.
 *   1. ingestion: worker-steps/s with 8 groups, m = 1024, for 1, 16 and 64
 *      concurrent streams (jobs of 4 workers from 16 streams up), counted
 *      until the compute thread has applied every step;
 *   2. push latency: from the last rank's summary of a step to the
 *      Hyperparams computed from that step (its `step` field), p50/p99, at
 *      100 steps/s for 16 jobs x 4 workers; the streams alternate between
 *      AR(1) regimes so that beta moves and pushes happen;
 *   3. memory: gristd's RSS growth per job and per group, against what the
 *      statistics of a group need.
 * Usage: bench-daemon [--quick] [-- GRISTD_OPTIONS]   (needs GRISTD=path/to/gristd)
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "grist/v1/grist.pb-c.h"
#include "harness.h"
#include "worker.h"
#include "../rng.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static const char *g_addr;

/* GetJob: steps evaluated by the compute thread (returned), dropped steps
 * and the aggregated step (both optional). */
static uint64_t job_query(const char *id, uint64_t *dropped, uint64_t *aggregated)
{
    Grist__V1__GetJobRequest req = GRIST__V1__GET_JOB_REQUEST__INIT;
    req.job_id = (char *)id;
    uint8_t buf[256];
    size_t len = grist__v1__get_job_request__pack(&req, buf);
    void *resp;
    size_t rlen;
    if (rpc_unary(g_addr, "/grist.v1.Grist/GetJob", buf, len, &resp, &rlen, NULL, 0, 10) != GRPC_STATUS_OK)
        return 0;
    Grist__V1__GetJobResponse *r = grist__v1__get_job_response__unpack(NULL, rlen, resp);
    free(resp);
    uint64_t s = r && r->n_groups ? r->groups[0]->steps : 0;
    if (dropped)
        *dropped = r ? r->job->dropped_steps : 0;
    if (aggregated)
        *aggregated = r ? r->job->step : 0;
    if (r)
        grist__v1__get_job_response__free_unpacked(r, NULL);
    return s;
}

/* the job's aggregated step (JobBrief.step) */
static uint64_t job_steps(const char *id, uint64_t *dropped)
{
    return job_query(id, dropped, NULL);
}

static uint64_t job_step(const char *id)
{
    uint64_t aggregated = 0;
    job_query(id, NULL, &aggregated);
    return aggregated;
}

/* ---- 1. ingestion ---- */

enum { G = 8, M = 1024 };

struct ing_arg {
    char job[32];
    uint32_t rank, world;
    int steps;
    double rate; /* steps/s, 0 = as fast as possible */
    /* latency */
    double *sent_at; /* per step, last rank only */
    double *lat;      /* arrival times of pushes */
    uint64_t *arr_step; /* the step each push was computed from */
    int nlat;
    int regime_flip;
};

static void *ing_thread(void *p)
{
    struct ing_arg *a = p;
    struct tw_opts o = {.job = a->job, .rank = a->rank, .world = a->world, .ngroups = G, .m = M,
                        .n = 1 << 20, .beta0 = 0.9, .solve_every = a->rate > 0 ? 1 : (uint32_t)a->steps,
                        .min_steps = 2, .hysteresis_h = 1, .hysteresis_z = 1e-9};
    struct tw *w = tw_open(g_addr, &o);
    uint32_t seed;
    if (tw_welcome(w, &seed, 30) != 0) {
        fprintf(stderr, "bench: no welcome\n");
        return NULL;
    }
    /* the load generator must not be the bottleneck: sketches of an AR(1)
     * stream whose coefficient flips every 40 steps are made once, before
     * the clock starts, and replayed */
    enum { CYCLE = 80 };
    struct grist_rng r;
    grist_rng_seed(&r, (uint64_t)a->rank * 7 + (uint64_t)a->job[4]);
    float *pre = malloc((size_t)CYCLE * G * M * sizeof(float));
    double *prev = calloc((size_t)G * M, sizeof(double));
    for (int t = 0; t < CYCLE; t++) {
        const double rho = t < CYCLE / 2 ? 0.1 : 0.95;
        for (int i = 0; i < G * M; i++) {
            prev[i] = rho * prev[i] + sqrt(1 - rho * rho) * grist_rng_normal(&r);
            pre[(size_t)t * G * M + i] = (float)prev[i];
        }
    }
    free(prev);
    const double t0 = now();
    for (int t = 1; t <= a->steps; t++) {
        const float *sk = pre + (size_t)(t % CYCLE) * G * M;
        uint8_t *buf;
        size_t len = tw_encode_summary(&buf, (uint64_t)t, G, M, sk, NULL, 32);
        if (a->rate > 0) {
            /* wait for the send time while receiving pushes as they come */
            const double due = t0 + t / a->rate;
            for (;;) {
                const double dt = due - now();
                if (dt <= 0)
                    break;
                struct tw_hp hp;
                if (a->lat && tw_next(w, &hp, dt) == 1) {
                    if (hp.step >= 1 && hp.step <= (uint64_t)a->steps) {
                        a->arr_step[a->nlat] = hp.step;
                        a->lat[a->nlat++] = now();
                    }
                } else if (!a->lat) {
                    usleep((useconds_t)(dt * 1e6));
                }
            }
        }
        if (a->sent_at)
            a->sent_at[t] = now();
        tw_send_raw(w, buf, len);
        free(buf);
        if (a->lat) { /* collect pushes that arrived */
            struct tw_hp hp;
            while (tw_next(w, &hp, 0.0001) == 1)
                if (hp.step >= 1 && hp.step <= (uint64_t)a->steps) {
                    a->arr_step[a->nlat] = hp.step;
                    a->lat[a->nlat++] = now();
                }
        }
    }
    if (a->lat) {
        struct tw_hp hp;
        while (tw_next(w, &hp, 0.5) == 1)
            if (hp.step >= 1 && hp.step <= (uint64_t)a->steps) {
                a->arr_step[a->nlat] = hp.step;
                a->lat[a->nlat++] = now();
            }
    }
    tw_finish(w, NULL, 0, 30);
    tw_free(w);
    free(pre);
    return NULL;
}

static int cmpd(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static void ingestion(int streams, int steps, int round)
{
    const int world = streams >= 4 ? 4 : 1, jobs = streams / world;
    pthread_t th[128];
    struct ing_arg *args = calloc((size_t)streams, sizeof(*args));
    const double t0 = now();
    for (int s = 0; s < streams; s++) {
        snprintf(args[s].job, sizeof(args[s].job), "ing%d-%d-%d", round, streams, s / world);
        args[s].rank = (uint32_t)(s % world);
        args[s].world = (uint32_t)world;
        args[s].steps = steps;
        pthread_create(&th[s], NULL, ing_thread, &args[s]);
    }
    for (int s = 0; s < streams; s++)
        pthread_join(th[s], NULL);
    const double t_sent = now() - t0;
    uint64_t dropped = 0;
    for (int j = 0; j < jobs; j++) {
        char id[32];
        snprintf(id, sizeof(id), "ing%d-%d-%d", round, streams, j);
        uint64_t d = 0;
        while (job_steps(id, &d) + d < (uint64_t)steps)
            usleep(2000);
        dropped += d;
    }
    const double dt = now() - t0;
    const double ws = (double)streams * steps / dt;
    const double bytes = ws * (G * (M * 4.0 + 16));
    printf("| %d | %d x %d | %d | %.0f | %.1f | %llu | %.0f%% |\n", streams, jobs, world, steps, ws,
           bytes / 1e6, (unsigned long long)dropped, 100.0 * t_sent / dt);
    free(args);
}

int main(int argc, char **argv)
{
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct gristd_proc p;
    const char *args[24] = {"--listen", "127.0.0.1:0", "--log-level", "warn", "--max-jobs", "4096"};
    int na = 6;
    /* more gristd options: everything after "--" on the command line */
    for (int i = 1; i < argc && na < 22; i++)
        if (!strcmp(argv[i], "--")) {
            for (int k = i + 1; k < argc && na < 22; k++)
                args[na++] = argv[k];
            break;
        }
    args[na] = NULL;
    if (gristd_start(&p, args) != 0) {
        fprintf(stderr, "bench: cannot start gristd (GRISTD=%s)\n", getenv("GRISTD"));
        return 1;
    }
    g_addr = p.addr[0];
    grpc_init();
    printf("## Memory (RSS of gristd, measured first on a fresh daemon)\n\n");
    {
        const long before = rss_kib(p.pid);
        const int jobs = quick ? 16 : 64;
        struct tw *w[64];
        for (int j = 0; j < jobs; j++) {
            char id[32];
            snprintf(id, sizeof(id), "mem-%d", j);
            struct tw_opts o = {.job = id, .rank = 0, .world = 1, .ngroups = G, .m = M, .n = 1 << 20,
                                .beta0 = 0.9, .solve_every = 10};
            w[j] = tw_open(g_addr, &o);
            uint32_t seed;
            tw_welcome(w[j], &seed, 30);
            float *sk = calloc((size_t)G * M, sizeof(float));
            for (int t = 1; t <= 20; t++) { /* touch every buffer */
                for (int i = 0; i < G * M; i++)
                    sk[i] = (float)((i * 31 + t) % 17) - 8.0f;
                uint8_t *buf;
                size_t len = tw_encode_summary(&buf, (uint64_t)t, G, M, sk, NULL, 32);
                tw_send_raw(w[j], buf, len);
                free(buf);
            }
            free(sk);
        }
        for (int j = 0; j < jobs; j++) {
            char id[32];
            snprintf(id, sizeof(id), "mem-%d", j);
            while (job_steps(id, NULL) < 20) /* every step applied and evaluated */
                usleep(2000);
        }
        const long after = rss_kib(p.pid);
        const double per_job = (after - before) * 1024.0 / jobs, per_group = per_job / G;
        /* K = 32 candidates, L = 16, m_cov = 256, cov batch 16, doubles */
        const double need = (32.0 * M + 16.0 * M + M + 256.0 * 256 + 256.0 * 16 + 256) * 8;
        printf("| jobs | groups per job | RSS before MiB | after MiB | per job KiB | per group KiB | statistics need KiB | ratio |\n|---|---|---|---|---|---|---|---|\n");
        printf("| %d | %d | %.1f | %.1f | %.0f | %.0f | %.0f | %.2f |\n", jobs, G, before / 1024.0,
               after / 1024.0, per_job / 1024, per_group / 1024, need / 1024, per_group / need);
        for (int j = 0; j < jobs; j++) {
            tw_finish(w[j], NULL, 0, 10);
            tw_free(w[j]);
        }
    }
    printf("\n");
    printf("## Ingestion (8 groups, m = 1024; client threads and gristd share the machine)\n\n");
    printf("| streams | jobs x workers | steps per stream | worker-steps/s | MB/s in | dropped steps | time spent sending |\n|---|---|---|---|---|---|---|\n");
    const int counts[] = {1, 16, 64};
    for (int i = 0; i < 3; i++)
        ingestion(counts[i], quick ? 100 : (counts[i] == 1 ? 2000 : counts[i] == 16 ? 300 : 100), i);

    printf("\n## Push latency (16 jobs x 4 workers, 8 groups, m = 1024, selection every step)\n\n");
    printf("| steps/s per worker | offered worker-steps/s | pushes observed | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n");
    const double rates[] = {10, 25, 100};
    for (int ri = 0; ri < 3; ri++) {
        const int streams = 64, steps = (int)(rates[ri] * (quick ? 3 : 8));
        pthread_t th[64];
        struct ing_arg *a = calloc(streams, sizeof(*a));
        for (int s = 0; s < streams; s++) {
            snprintf(a[s].job, sizeof(a[s].job), "lat%d-%d", ri, s / 4);
            a[s].rank = (uint32_t)(s % 4);
            a[s].world = 4;
            a[s].steps = steps;
            a[s].rate = rates[ri];
            a[s].sent_at = calloc((size_t)steps + 2, sizeof(double));
            a[s].lat = calloc((size_t)steps * 4 + 16, sizeof(double));
            a[s].arr_step = calloc((size_t)steps * 4 + 16, sizeof(uint64_t));
            pthread_create(&th[s], NULL, ing_thread, &a[s]);
        }
        for (int s = 0; s < streams; s++)
            pthread_join(th[s], NULL);
        double *all = malloc(sizeof(double) * streams * ((size_t)steps * 4 + 16));
        size_t n = 0;
        /* latency = arrival - the last send of that step among the job's 4 ranks */
        for (int s = 0; s < streams; s++) {
            const int j0 = (s / 4) * 4;
            for (int k = 0; k < a[s].nlat; k++) {
                const uint64_t st = a[s].arr_step[k];
                double last = 0;
                for (int r = j0; r < j0 + 4; r++)
                    last = fmax(last, a[r].sent_at[st]);
                if (last > 0)
                    all[n++] = a[s].lat[k] - last;
            }
        }
        for (int s = 0; s < streams; s++) {
            free(a[s].sent_at);
            free(a[s].lat);
            free(a[s].arr_step);
        }
        free(a);
        qsort(all, n, sizeof(double), cmpd);
        if (n)
            printf("| %.0f | %.0f | %zu | %.2f | %.2f | %.2f |\n", rates[ri], rates[ri] * 64, n,
                   all[n / 2] * 1e3, all[(size_t)(n * 0.99)] * 1e3, all[n - 1] * 1e3);
        else
            printf("| %.0f | %.0f | 0 | - | - | - |\n", rates[ri], rates[ri] * 64);
        free(all);
        /* let the daemon drain before the next rate */
        for (int j = 0; j < 16; j++) {
            char id[32];
            snprintf(id, sizeof(id), "lat%d-%d", ri, j);
            for (int k = 0; k < 5000 && job_step(id) < (uint64_t)steps; k++)
                usleep(2000);
        }
    }
    printf("\n(latency: from the last of the job's 4 ranks sending a step's summary to each rank\n"
           "receiving the Hyperparams computed from that step; client clocks are one machine's.)\n");
    grpc_shutdown();
    return gristd_stop(&p, SIGTERM);
}
