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
 *   3. memory: gristd's RSS as jobs are added (1 to 256), its slope per job
 *      and per group, against what the statistics of a group need;
 *   4. the whole-cluster simulation: N jobs x 8 workers at 10 steps/s from
 *      the one-thread load generator (loadgen.c, pinned to CPU 0, gristd to
 *      CPU 1), the largest N*8 with p99 push latency <= 10 ms and no dropped
 *      steps, then past it.
 * Lines "#result key=value" are for tests/bench/report.py.
 *   5. --scale only: CPU per worker-step and push latency as ranks, jobs,
 *      groups and m grow, one at a time.
 * Usage: bench-daemon [--quick | --memory | --scale | --cluster [per-job] [N] |
 *                      --ingest STEPS [RATE]] [-- GRISTD_OPTIONS]   (needs GRISTD=path/to/gristd)
 */
#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include "grist/stats.h"
#include "grist/v1/grist.pb-c.h"
#include "harness.h"
#include "loadgen.h"
#include "worker.h"
#include "../rng.h"

static const char *g_addr;
static pid_t g_pid;

/* CPU seconds (user + system) and minor page faults of a process so far. */
struct usage {
    double cpu_s, minflt;
};

/* One /proc/.../stat file: the command (field 2, which may hold spaces, so
 * the fields after it are counted from the last ')') and the usage; -1 if
 * unreadable. */
static int read_stat(const char *path, char *comm, size_t commsz, struct usage *u)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[1024];
    const int got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    char *l = got ? strchr(line, '(') : NULL, *r = got ? strrchr(line, ')') : NULL;
    unsigned long flt, ut, st;
    /* after the command: fields 3.. (state), minflt is 10, utime 14, stime 15 */
    if (!l || !r || r < l ||
        sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %lu %*u %*u %*u %lu %lu", &flt, &ut, &st) != 3)
        return -1;
    if (comm)
        snprintf(comm, commsz, "%.*s", (int)(r - l - 1), l + 1);
    *u = (struct usage){(double)(ut + st) / (double)sysconf(_SC_CLK_TCK), (double)flt};
    return 0;
}

static struct usage proc_usage(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    struct usage u = {0};
    if (read_stat(path, NULL, 0, &u) < 0)
        u = (struct usage){0};
    return u;
}

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
    if (rpc_unary(g_addr, "/grist.v1.Grist/GetJob", buf, len, &resp, &rlen, NULL, 0, 10) !=
        GRPC_STATUS_OK)
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

/* ---- 1. ingestion ---- */

enum { G = 8, M = 1024 };

struct ing_arg {
    char job[32];
    uint32_t rank, world;
    int steps;
    double rate; /* steps/s, 0 = as fast as possible */
    /* latency */
    double *sent_at; /* per step, last rank only */
    double *lat; /* arrival times of pushes */
    uint64_t *arr_step; /* the step each push was computed from */
    int nlat;
    int regime_flip;
    pthread_barrier_t *start; /* all streams attached and prepared: the clock starts */
    double phase; /* s: the job's offset within a step period (jobs are not in lockstep) */
    int default_policy; /* leave every Policy field unset: gristd's defaults */
};

/* the shape of every ingestion and latency stream (--scale varies it) */
static uint32_t g_groups = G, g_m = M;

static void *ing_thread(void *p)
{
    struct ing_arg *a = p;
    struct tw_opts o = {.job = a->job,
                        .rank = a->rank,
                        .world = a->world,
                        .ngroups = g_groups,
                        .m = g_m,
                        .n = 1 << 20,
                        .beta0 = 0.9,
                        .solve_every = a->rate > 0 ? 1 : (uint32_t)a->steps,
                        .min_steps = 2,
                        .hysteresis_h = 1,
                        .hysteresis_z = 1e-9};
    if (a->default_policy)
        o.solve_every = o.min_steps = o.hysteresis_h = 0, o.hysteresis_z = 0;
    struct tw *w = tw_open(g_addr, &o);
    uint32_t seed;
    if (tw_welcome(w, &seed, 30) != 0) {
        fprintf(stderr, "bench: no welcome\n");
        if (a->start)
            pthread_barrier_wait(a->start);
        return NULL;
    }
    /* the load generator must not be the bottleneck: sketches of an AR(1)
     * stream whose coefficient flips every 40 steps are made once, before
     * the clock starts, and replayed */
    enum { CYCLE = 80 };
    struct grist_rng r;
    grist_rng_seed(&r, (uint64_t)a->rank * 7 + (uint64_t)a->job[4]);
    float *pre = malloc((size_t)CYCLE * g_groups * g_m * sizeof(float));
    double *prev = calloc((size_t)g_groups * g_m, sizeof(double));
    for (int t = 0; t < CYCLE; t++) {
        const double rho = t < CYCLE / 2 ? 0.1 : 0.95;
        for (int i = 0; i < (int)(g_groups * g_m); i++) {
            prev[i] = rho * prev[i] + sqrt(1 - rho * rho) * grist_rng_normal(&r);
            pre[(size_t)t * g_groups * g_m + i] = (float)prev[i];
        }
    }
    free(prev);
    if (a->start) /* no stream sends while another still prepares (CPU contention) */
        pthread_barrier_wait(a->start);
    const double t0 = mono_s() + a->phase;
    for (int t = 1; t <= a->steps; t++) {
        const float *sk = pre + (size_t)(t % CYCLE) * g_groups * g_m;
        uint8_t *buf;
        size_t len = tw_encode_summary(&buf, (uint64_t)t, g_groups, g_m, sk, NULL, 32);
        if (a->rate > 0) {
            /* wait for the send time while receiving pushes as they come */
            const double due = t0 + t / a->rate;
            for (;;) {
                const double dt = due - mono_s();
                if (dt <= 0)
                    break;
                struct tw_hp hp;
                if (a->lat && tw_next(w, &hp, dt) == 1) {
                    if (hp.step >= 1 && hp.step <= (uint64_t)a->steps) {
                        a->arr_step[a->nlat] = hp.step;
                        a->lat[a->nlat++] = mono_s();
                    }
                } else if (!a->lat) {
                    usleep((useconds_t)(dt * 1e6));
                }
            }
        }
        if (a->sent_at)
            a->sent_at[t] = mono_s();
        tw_send_raw(w, buf, len);
        free(buf);
        if (a->lat) { /* collect pushes that arrived */
            struct tw_hp hp;
            while (tw_next(w, &hp, 0.0001) == 1)
                if (hp.step >= 1 && hp.step <= (uint64_t)a->steps) {
                    a->arr_step[a->nlat] = hp.step;
                    a->lat[a->nlat++] = mono_s();
                }
        }
    }
    if (a->lat) {
        struct tw_hp hp;
        while (tw_next(w, &hp, 0.5) == 1)
            if (hp.step >= 1 && hp.step <= (uint64_t)a->steps) {
                a->arr_step[a->nlat] = hp.step;
                a->lat[a->nlat++] = mono_s();
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

static double g_ingest_rate; /* --ingest STEPS RATE: steps/s per stream (0: flat out) */

/* gristd's CPU by thread name (gristd names its own threads; gRPC names
 * some of its), so a table can say where a worker-step's CPU goes. */
enum { MAX_NAMES = 16 };
struct thread_cpu {
    int n;
    char name[MAX_NAMES][20];
    double cpu_s[MAX_NAMES];
};

static void thread_cpu(pid_t pid, struct thread_cpu *out)
{
    memset(out, 0, sizeof(*out));
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[330], name[20];
        struct usage u;
        snprintf(path, sizeof(path), "%s/%s/stat", dir, de->d_name);
        if (read_stat(path, name, sizeof(name), &u) < 0)
            continue;
        int k = 0;
        while (k < out->n && strcmp(out->name[k], name))
            k++;
        if (k == out->n) {
            if (out->n == MAX_NAMES)
                continue;
            snprintf(out->name[out->n++], sizeof(out->name[0]), "%s", name);
        }
        out->cpu_s[k] += u.cpu_s;
    }
    closedir(d);
}

/* us per worker-step by thread between two readings (threads that ended in
 * between are not in the second reading: they count as 0) */
static void print_thread_cpu(const struct thread_cpu *a, const struct thread_cpu *b, double ws)
{
    printf("#threads");
    for (int k = 0; k < b->n; k++) {
        double before = 0;
        for (int j = 0; j < a->n; j++)
            if (!strcmp(a->name[j], b->name[k]))
                before = a->cpu_s[j];
        const double us = 1e6 * (b->cpu_s[k] - before) / ws;
        if (us >= 0.5)
            printf(" %s=%.0f", b->name[k], us);
    }
    printf(" (us per worker-step)\n");
}

static int g_ingest_default_policy; /* --ingest: the jobs run gristd's default policy */

struct ing_result {
    double ws, cpu_us, minflt; /* worker-steps/s; gristd CPU us and page faults per worker-step */
    uint64_t dropped;
};

/* world 0: jobs of 4 workers from 4 streams up (the report's rows). With
 * out, the figures go there instead of a printed row. */
static void ingestion(int streams, int steps, int round, int world_size, struct ing_result *out)
{
    const int world = world_size > 0 ? world_size : streams >= 4 ? 4 : 1, jobs = streams / world;
    pthread_t th[128];
    struct ing_arg *args = calloc((size_t)streams, sizeof(*args));
    pthread_barrier_t start; /* the streams and this thread: timing starts when all are ready */
    pthread_barrier_init(&start, NULL, (unsigned)streams + 1);
    for (int s = 0; s < streams; s++) {
        args[s].start = &start;
        snprintf(args[s].job, sizeof(args[s].job), "ing%d-%d-%d", round, streams, s / world);
        args[s].rank = (uint32_t)(s % world);
        args[s].world = (uint32_t)world;
        args[s].steps = steps;
        args[s].rate = g_ingest_rate;
        args[s].default_policy = g_ingest_default_policy;
        pthread_create(&th[s], NULL, ing_thread, &args[s]);
    }
    pthread_barrier_wait(&start);
    const double t0 = mono_s();
    const struct usage u0 = proc_usage(g_pid);
    struct thread_cpu tc0, tc1;
    thread_cpu(g_pid, &tc0);
    for (int s = 0; s < streams; s++)
        pthread_join(th[s], NULL);
    pthread_barrier_destroy(&start);
    const double t_sent = mono_s() - t0;
    uint64_t dropped = 0;
    for (int j = 0; j < jobs; j++) {
        char id[32];
        snprintf(id, sizeof(id), "ing%d-%d-%d", round, streams, j);
        uint64_t d = 0;
        while (job_steps(id, &d) + d < (uint64_t)steps)
            usleep(2000);
        dropped += d;
    }
    const struct usage u1 = proc_usage(g_pid);
    thread_cpu(g_pid, &tc1);
    const double dt = mono_s() - t0, cpu = u1.cpu_s - u0.cpu_s;
    const double ws = (double)streams * steps / dt;
    const double bytes = ws * (g_groups * (g_m * 4.0 + 16));
    if (out) {
        *out = (struct ing_result){ws, 1e6 * cpu / ((double)streams * steps),
                                   (u1.minflt - u0.minflt) / ((double)streams * steps), dropped};
        free(args);
        return;
    }
    printf("| %d | %d x %d | %d | %.0f | %.1f | %llu | %.0f%% | %.0f | %.1f |\n", streams, jobs,
           world, steps, ws, bytes / 1e6, (unsigned long long)dropped, 100.0 * t_sent / dt,
           1e6 * cpu / ((double)streams * steps),
           (u1.minflt - u0.minflt) / ((double)streams * steps));
    if (g_ingest_default_policy)
        print_thread_cpu(&tc0, &tc1, (double)streams * steps);
    printf("#result ingest_ws_%d=%.1f\n", streams, ws);
    free(args);
}

struct lat_result {
    size_t n;
    double p50, p99, max;
    uint64_t dropped;
};

/* jobs x world streams at rate steps/s for steps steps; latency = arrival
 * of the Hyperparams computed from a step - the last send of that step
 * among the job's ranks. */
static void latency_run(const char *tag, int jobs, int world, double rate, int steps,
                        struct lat_result *res)
{
    const int streams = jobs * world;
    pthread_t *th = calloc((size_t)streams, sizeof(*th));
    struct ing_arg *a = calloc((size_t)streams, sizeof(*a));
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)streams);
    for (int s = 0; s < streams; s++) {
        a[s].start = &start;
        /* the ranks of a job step together; jobs have independent phases
         * (golden-ratio spread over the step period) */
        a[s].phase = fmod((s / world) * 0.6180339887498949, 1.0) / rate;
        snprintf(a[s].job, sizeof(a[s].job), "%s-%d", tag, s / world);
        a[s].rank = (uint32_t)(s % world);
        a[s].world = (uint32_t)world;
        a[s].steps = steps;
        a[s].rate = rate;
        a[s].sent_at = calloc((size_t)steps + 2, sizeof(double));
        a[s].lat = calloc((size_t)steps * 4 + 16, sizeof(double));
        a[s].arr_step = calloc((size_t)steps * 4 + 16, sizeof(uint64_t));
        pthread_create(&th[s], NULL, ing_thread, &a[s]);
    }
    for (int s = 0; s < streams; s++)
        pthread_join(th[s], NULL);
    pthread_barrier_destroy(&start);
    double *all = malloc(sizeof(double) * streams * ((size_t)steps * 4 + 16));
    size_t n = 0;
    for (int s = 0; s < streams; s++) {
        const int j0 = (s / world) * world;
        for (int k = 0; k < a[s].nlat; k++) {
            const uint64_t st = a[s].arr_step[k];
            double last = 0;
            for (int r = j0; r < j0 + world; r++)
                last = fmax(last, a[r].sent_at[st]);
            if (last > 0)
                all[n++] = a[s].lat[k] - last;
        }
    }
    res->dropped = 0;
    for (int j = 0; j < jobs; j++) { /* let the daemon drain; count drops */
        char id[32];
        snprintf(id, sizeof(id), "%s-%d", tag, j);
        uint64_t d = 0;
        for (int k = 0; k < 5000 && job_steps(id, &d) + d < (uint64_t)steps; k++)
            usleep(2000);
        res->dropped += d;
    }
    for (int s = 0; s < streams; s++) {
        free(a[s].sent_at);
        free(a[s].lat);
        free(a[s].arr_step);
    }
    free(a);
    free(th);
    qsort(all, n, sizeof(double), cmpd);
    res->n = n;
    res->p50 = n ? all[n / 2] : 0;
    res->p99 = n ? all[(size_t)(n * 0.99)] : 0;
    res->max = n ? all[n - 1] : 0;
    free(all);
}

static void print_latency(double rate, int streams, const struct lat_result *r)
{
    if (r->n)
        printf("| %.0f | %.0f | %zu | %.2f | %.2f | %.2f | %llu |\n", rate, rate * streams, r->n,
               r->p50 * 1e3, r->p99 * 1e3, r->max * 1e3, (unsigned long long)r->dropped);
    else
        printf("| %.0f | %.0f | 0 | - | - | - | %llu |\n", rate, rate * streams,
               (unsigned long long)r->dropped);
}

/* ---- 3. memory ---- */

struct mem_fit {
    double slope, r2; /* KiB of RSS per job, least squares over the marks */
    double heap_slope; /* KiB of heap in use per job (gristd_heap_in_use_bytes) */
};

/* least-squares slope of y against x */
static double lsq_slope(const double *x, const double *y, int n, double *r2)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
    for (int k = 0; k < n; k++) {
        sx += x[k];
        sy += y[k];
        sxx += x[k] * x[k];
        sxy += x[k] * y[k];
        syy += y[k] * y[k];
    }
    if (r2)
        *r2 = pow(n * sxy - sx * sy, 2) / ((n * sxx - sx * sx) * (n * syy - sy * sy));
    return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

/* Opens jobs of `groups` groups (one rank each, 20 steps sent and applied)
 * on the gristd `d` until each mark of jobs, printing its RSS; the slope of
 * RSS against jobs into *f. The jobs are finished before it returns. */
static void memory_series(const struct gristd_proc *d, int groups, const int *marks, int nmarks,
                          struct mem_fit *f)
{
    const char *addr = g_addr;
    g_addr = d->addr[0]; /* job_steps queries this daemon */
    const long base = proc_status_kb(d->pid, "VmRSS");
    const int maxj = marks[nmarks - 1];
    struct tw **w = calloc((size_t)maxj, sizeof(*w));
    double xs[8], ys[8], hs[8];
    const double heap0 = gristd_metric(d, "gristd_heap_in_use_bytes") / 1024;
    printf(
        "| jobs | groups | RSS MiB | RSS growth KiB per job since the fresh daemon | heap in use "
        "MiB | steps dropped (shed) |\n|---|---|---|---|---|---|\n");
    printf("| 0 | 0 | %.1f | - | %.1f | - |\n", base / 1024.0, heap0 / 1024);
    float *sk = calloc((size_t)groups * M, sizeof(float));
    int opened = 0;
    for (int k = 0; k < nmarks; k++) {
        for (; opened < marks[k]; opened++) {
            char id[32];
            snprintf(id, sizeof(id), "mem%d-%d", groups, opened);
            struct tw_opts o = {.job = id,
                                .rank = 0,
                                .world = 1,
                                .ngroups = (uint32_t)groups,
                                .m = M,
                                .n = 1 << 20,
                                .beta0 = 0.9,
                                .solve_every = 10};
            w[opened] = tw_open(g_addr, &o);
            uint32_t seed;
            tw_welcome(w[opened], &seed, 30);
            for (int t = 1; t <= 20; t++) { /* touch every buffer */
                for (int i = 0; i < groups * M; i++)
                    sk[i] = (float)((i * 31 + t) % 17) - 8.0f;
                uint8_t *buf;
                size_t len =
                    tw_encode_summary(&buf, (uint64_t)t, (uint32_t)groups, M, sk, NULL, 32);
                tw_send_raw(w[opened], buf, len);
                free(buf);
            }
        }
        uint64_t dropped_all = 0;
        for (int j = 0; j < opened; j++) {
            char id[32];
            snprintf(id, sizeof(id), "mem%d-%d", groups, j);
            /* every step applied and evaluated, or dropped (shed); a job
             * that shed a step before its last evaluation (step 20) stays
             * evaluated at 10, so with drops the wait ends at the deadline */
            uint64_t dr = 0;
            const double deadline = mono_s() + 30;
            while (job_steps(id, &dr) + dr < 20 && (dr == 0 || mono_s() < deadline))
                usleep(2000);
            dropped_all += dr;
        }
        const long rss = proc_status_kb(d->pid, "VmRSS");
        xs[k] = marks[k];
        ys[k] = (double)rss;
        hs[k] = gristd_metric(d, "gristd_heap_in_use_bytes") / 1024;
        printf("| %d | %d | %.1f | %.0f | %.1f | %llu |\n", marks[k], marks[k] * groups,
               rss / 1024.0, (double)(rss - base) / marks[k], hs[k] / 1024,
               (unsigned long long)dropped_all);
    }
    free(sk);
    f->slope = lsq_slope(xs, ys, nmarks, &f->r2);
    f->heap_slope = lsq_slope(xs, hs, nmarks, NULL);
    for (int j = 0; j < opened; j++) {
        tw_finish(w[j], NULL, 0, 10);
        tw_free(w[j]);
    }
    free(w);
    g_addr = addr;
}

/* ---- 5. cost across scale ---- */

/* --scale: gristd's CPU per worker-step (its default policy) and push
 * latency (selection every step) at 10 steps/s per stream, one axis moved at
 * a time from 1 job x 8 ranks, 8 groups, m 1024: ranks per job, jobs,
 * groups, m. Each cell runs on the same gristd with its own job names. */
static void scale(void)
{
    static const struct {
        int jobs, world;
        uint32_t groups, m;
    } cells[] = {{1, 1, 8, 1024}, {1, 2, 8, 1024},  {1, 4, 8, 1024}, {1, 8, 8, 1024},
                 {4, 8, 8, 1024}, {16, 8, 8, 1024}, {1, 8, 1, 1024}, {1, 8, 32, 1024},
                 {1, 8, 8, 256},  {1, 8, 8, 4096}};
    const double rate = 10;
    const int steps = 100;
    printf("## Cost across scale (10 steps/s per stream, %d steps; one axis moved at a time from "
           "1 job x 8 ranks, 8 groups, m 1024)\n\n",
           steps);
    printf("| jobs x ranks | groups | m | streams | worker-steps/s | gristd CPU us per worker-step "
           "| page faults per worker-step | push p50 ms | push p99 ms | dropped steps |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    g_ingest_rate = rate;
    for (size_t k = 0; k < sizeof(cells) / sizeof(cells[0]); k++) {
        g_groups = cells[k].groups;
        g_m = cells[k].m;
        const int streams = cells[k].jobs * cells[k].world;
        struct ing_result ir;
        g_ingest_default_policy = 1;
        ingestion(streams, steps, 100 + (int)k, cells[k].world, &ir);
        g_ingest_default_policy = 0;
        struct lat_result lr;
        char tag[16];
        snprintf(tag, sizeof(tag), "sc%zu", k);
        latency_run(tag, cells[k].jobs, cells[k].world, rate, steps, &lr);
        printf("| %d x %d | %u | %u | %d | %.0f | %.0f | %.1f | %.2f | %.2f | %llu |\n",
               cells[k].jobs, cells[k].world, g_groups, g_m, streams, ir.ws, ir.cpu_us, ir.minflt,
               lr.p50 * 1e3, lr.p99 * 1e3, (unsigned long long)(ir.dropped + lr.dropped));
        const char *what[] = {"cpu", "p50", "p99"};
        const double v[] = {ir.cpu_us, lr.p50 * 1e3, lr.p99 * 1e3};
        for (int q = 0; q < 3; q++)
            printf("#result scale_%s_%dx%d_g%u_m%u=%.3f\n", what[q], cells[k].jobs, cells[k].world,
                   g_groups, g_m, v[q]);
    }
    g_groups = G;
    g_m = M;
    g_ingest_rate = 0;
}

/* ---- 4. the whole-cluster simulation ---- */

static double gristd_cpu_s(void)
{
    return proc_usage(g_pid).cpu_s;
}

/* Every thread of process pid on the one CPU cpu; 0 or -1. */
static int pin_process(pid_t pid, int cpu)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int r = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.' && sched_setaffinity(atoi(e->d_name), sizeof(set), &set) != 0)
            r = -1;
    closedir(d);
    return r;
}

/* N jobs x 8 workers at 10 steps/s from the one-thread load generator
 * (loadgen.c) on CPU 0, gristd on CPU 1 (when there are two): N doubled,
 * then bisected, until p99 exceeds 10 ms or steps are dropped, and then
 * doubled on past the knee to show what breaks. */
static void cluster(int quick, int conn_per_job, int default_policy, int only)
{
    const int pinned = sysconf(_SC_NPROCESSORS_ONLN) >= 2 && pin_process(getpid(), 0) == 0 &&
        pin_process(g_pid, 1) == 0;
    printf("\n## Cluster simulation (N jobs x 8 workers, 10 steps/s each, 8 groups, m = 1024, "
           "%s)\n\n",
           default_policy ? "gristd's default policy" : "selection every step");
    printf("Load generator: one thread, one completion queue, pre-encoded summaries, %s%s.\n\n",
           conn_per_job ? "one connection per job" : "one connection per worker stream",
           pinned ? "; it runs on CPU 0 and gristd on CPU 1" : " (not pinned)");
    printf("| jobs x workers | streams | offered worker-steps/s | pushes timed | p50 ms | p99 ms | "
           "max ms | send lag p99 ms | dropped steps | gristd CPU us per worker-step | gristd "
           "CPU share | load generator CPU share | within target |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    int best = 0, lo = 0, hi = 0, beyond = 0;
    const int duration_s = quick ? 4 : 8;
    for (int n = only ? only : 2, round = 0; round < 16; round++) {
        struct lg_result r;
        char tag[16];
        snprintf(tag, sizeof(tag), "cl%d", round);
        struct lg_opts o = {.target = g_addr,
                            .tag = tag,
                            .jobs = n,
                            .world = 8,
                            .steps = 10 * duration_s,
                            .rate = 10,
                            .ngroups = G,
                            .m = M,
                            .conn_per_job = conn_per_job,
                            .default_policy = default_policy,
                            .cpu_of = gristd_cpu_s};
        if (lg_run(&o, &r) != 0) {
            printf("| %d x 8 | %d | streams could not be opened (%llu failed) |\n", n, n * 8,
                   (unsigned long long)r.failed_streams);
            break;
        }
        uint64_t dropped = 0;
        for (int j = 0; j < n; j++) { /* let the daemon drain; count drops */
            char id[32];
            snprintf(id, sizeof(id), "%s-%d", tag, j);
            uint64_t d = 0;
            for (int k = 0; k < 5000 && job_steps(id, &d) + d < (uint64_t)o.steps; k++)
                usleep(2000);
            dropped += d;
        }
        const double ws = (double)n * 8 * o.steps;
        const int ok = r.n > 0 && r.p99 <= 0.010 && dropped == 0 && r.failed_streams == 0;
        printf(
            "| %d x 8 | %d | %d | %zu | %.2f | %.2f | %.2f | %.2f | %llu | %.0f | %.0f %% | %.0f "
            "%% | %s |\n",
            n, n * 8, n * 80, r.n, r.p50 * 1e3, r.p99 * 1e3, r.max * 1e3, r.lag_p99 * 1e3,
            (unsigned long long)dropped, r.target_cpu_s / ws * 1e6, 100 * r.target_cpu_s / r.wall_s,
            100 * r.cpu_s / r.wall_s, ok ? "yes" : "no");
        printf("#result cluster_p99_ms_%dx8=%.3f\n", n, r.p99 * 1e3);
        if (ok) {
            best = n > best ? n : best;
            lo = n;
        } else {
            hi = hi && hi < n ? hi : n;
        }
        if (only) {
            break;
        } else if (!hi) {
            n *= 2;
        } else if (hi - lo > (lo / 8 > 1 ? lo / 8 : 1)) {
            n = (lo + hi) / 2;
        } else if (!quick && beyond < 2 && hi * 2 * 8 <= 8192) {
            /* past the knee: two doublings show how it degrades */
            n = (beyond++ ? n : hi) * 2;
        } else {
            break;
        }
    }
    printf("\nLargest sustained: %d jobs x 8 workers = %d streams (p99 push latency <= 10 ms, no "
           "dropped steps).\n",
           best, best * 8);
    printf("#result cluster_streams_w8=%d\n", best * 8);
    printf("\n(latency: from the start of the last of a job's 8 ranks' sends of a step to each "
           "rank receiving the Hyperparams computed from that step; send lag: a send's start after "
           "its due time; CPU shares are of one core over the sending time.)\n");
}

int main(int argc, char **argv)
{
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    /* --scale: only the cost-across-scale table */
    const int scale_only = argc > 1 && !strcmp(argv[1], "--scale");
    /* --memory: only the memory table */
    const int memory_only = argc > 1 && !strcmp(argv[1], "--memory");
    /* --ingest STEPS: only the ingestion table, STEPS per stream (an A/B of
     * two gristd builds: GRISTD=old and GRISTD=new in turn) */
    const int ingest_only = argc > 2 && !strcmp(argv[1], "--ingest") ? atoi(argv[2]) : 0;
    if (ingest_only && argc > 3 && strcmp(argv[3], "--"))
        g_ingest_rate = atof(argv[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct gristd_proc p;
    /* --cluster [per-job]: only the cluster simulation (per-job: the ranks of
     * a job share a connection) */
    const int cluster_only = argc > 1 && !strcmp(argv[1], "--cluster");
    /* --cluster [per-job] [default] [N]: only the cluster simulation;
     * per-job: the ranks of a job share a connection; default: gristd's
     * default policy instead of a selection every step; N: only N jobs x 8 */
    int cluster_per_job = 0, cluster_default = 0, cluster_n = 0;
    for (int i = 2; cluster_only && i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "per-job"))
            cluster_per_job = 1;
        else if (!strcmp(argv[i], "default"))
            cluster_default = 1;
        else
            cluster_n = atoi(argv[i]);
    }
    /* thousands of streams, each on its own connection, on both sides */
    struct rlimit nf;
    if (getrlimit(RLIMIT_NOFILE, &nf) == 0 && nf.rlim_cur < nf.rlim_max) {
        nf.rlim_cur = nf.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nf);
    }
    const char *args[28] = {"--listen", "127.0.0.1:0",       "--log-level",
                            "warn",     "--max-jobs",        "4096",
                            "--http",   "127.0.0.1:0",       "--job-create-burst",
                            "65536",    "--job-create-rate", "100000"};
    int na = 12;
    /* more gristd options: everything after "--" on the command line */
    for (int i = 1; i < argc && na < 26; i++)
        if (!strcmp(argv[i], "--")) {
            for (int k = i + 1; k < argc && na < 26; k++)
                args[na++] = argv[k];
            break;
        }
    args[na] = NULL;
    if (gristd_start(&p, args) != 0) {
        fprintf(stderr, "bench: cannot start gristd (GRISTD=%s)\n", getenv("GRISTD"));
        return 1;
    }
    g_addr = p.addr[0];
    g_pid = p.pid;
    grpc_init();
    if (cluster_only) {
        cluster(1, cluster_per_job, cluster_default, cluster_n);
        grpc_shutdown();
        return gristd_stop(&p, SIGTERM);
    }
    if (scale_only) {
        scale();
        grpc_shutdown();
        return gristd_stop(&p, SIGTERM);
    }
    if (ingest_only > 0) {
        g_ingest_default_policy = 1;
        printf("## Ingestion (8 groups, m = 1024, gristd's default policy), %d steps per stream "
               "at %s\n\n",
               ingest_only, g_ingest_rate > 0 ? "a fixed rate" : "full speed");
        printf(
            "| streams | jobs x workers | steps per stream | worker-steps/s | MB/s in | dropped steps | time spent sending | gristd CPU us per worker-step | gristd page faults per worker-step |\n|---|---|---|---|---|---|---|---|---|\n");
        /* the rows of the CPU targets: one rank per job, eight ranks per job */
        ingestion(1, ingest_only, 0, 1, NULL);
        ingestion(16, ingest_only, 1, 8, NULL);
        gristd_stop(&p, SIGTERM);
        return 0;
    }
    printf("## Memory (RSS of gristd as jobs are added, measured first on a fresh daemon)\n\n");
    {
        /* the exact bytes grist_stats_new allocates for one group at gristd's
         * defaults (its candidates, L 16, m_cov 256, cov batch 16) and m = M */
        struct grist_stats_config scfg;
        grist_stats_config_default(&scfg);
        scfg.m = M;
        const double need = (double)grist_stats_footprint(&scfg);
        const int marks8[] = {1, 4, 16, 64, 256}, marks32[] = {1, 4, 16, 64};
        struct mem_fit f8, f32;
        printf("Jobs of %d groups (one stream each), on this run's gristd:\n\n", G);
        memory_series(&p, G, marks8, quick ? 3 : 5, &f8);
        /* the same with 4x the groups per job, on a fresh gristd of the same
         * options: the two slopes separate what a job costs (its stream, its
         * connection) from what a group costs */
        struct gristd_proc p2;
        if (gristd_start(&p2, args) != 0) {
            fprintf(stderr, "bench: cannot start a second gristd\n");
            return 1;
        }
        printf("\nJobs of %d groups, on a fresh gristd:\n\n", 4 * G);
        memory_series(&p2, 4 * G, marks32, quick ? 3 : 4, &f32);
        gristd_stop(&p2, SIGTERM);
        /* slope per job = a + groups * c for the two shapes, for the RSS
         * and for the heap in use (what the program holds, without the
         * allocator's retention) */
        const double c = (f32.slope - f8.slope) / (3 * G), a = f8.slope - G * c;
        const double hc = (f32.heap_slope - f8.heap_slope) / (3 * G), ha = f8.heap_slope - G * hc;
        printf("\nGrowth, linear in jobs: RSS %.0f KiB per job of %d groups (R^2 = %.4f), %.0f KiB "
               "per job of %d (R^2 = %.4f); heap in use %.0f and %.0f KiB.\n\n",
               f8.slope, G, f8.r2, f32.slope, 4 * G, f32.r2, f8.heap_slope, f32.heap_slope);
        printf("| per | RSS KiB | heap in use KiB |\n|---|---|---|\n");
        printf("| group (the two shapes' difference) | %.0f | %.0f |\n", c, hc);
        printf("| job, besides its groups | %.0f | %.0f |\n", a, ha);
        printf("| group of a job of %d, its share of the job included | %.0f | %.0f |\n", G,
               f8.slope / G, f8.heap_slope / G);
        printf("\nThe statistics of a group need %.0f KiB (grist_stats_footprint: %u candidates, "
               "L %u, m %u, m_cov %u). Ratio to it: RSS per group %.2f, per group of a job of %d "
               "%.2f; heap in use per group %.2f, per group of a job of %d %.2f.\n",
               need / 1024, scfg.ncand, scfg.lags, scfg.m, scfg.cov_dim, c * 1024 / need, G,
               f8.slope * 1024 / G / need, hc * 1024 / need, G, f8.heap_slope * 1024 / G / need);
        printf("#result rss_kib_per_group=%.1f\n#result rss_ratio=%.3f\n"
               "#result rss_kib_per_job=%.1f\n#result rss_ratio_job8=%.3f\n"
               "#result heap_ratio=%.3f\n#result heap_ratio_job8=%.3f\n",
               c, c * 1024 / need, a, f8.slope * 1024 / G / need, hc * 1024 / need,
               f8.heap_slope * 1024 / G / need);
    }
    if (memory_only) {
        gristd_stop(&p, SIGTERM);
        return 0;
    }
    printf("\n");
    printf("## Ingestion (8 groups, m = 1024; client threads and gristd share the machine)\n\n");
    printf(
        "| streams | jobs x workers | steps per stream | worker-steps/s | MB/s in | dropped steps | time spent sending | gristd CPU us per worker-step | gristd page faults per worker-step |\n|---|---|---|---|---|---|---|---|---|\n");
    const int counts[] = {1, 16, 64};
    for (int i = 0; i < 3; i++)
        ingestion(counts[i],
                  quick ? 100
                        : (counts[i] == 1        ? 2000
                               : counts[i] == 16 ? 300
                                                 : 100),
                  i, 0, NULL);

    printf("\n## Push latency (16 jobs x 4 workers, 8 groups, m = 1024, selection every step)\n\n");
    printf(
        "| steps/s per worker | offered worker-steps/s | pushes observed | p50 ms | p99 ms | max ms | dropped steps |\n|---|---|---|---|---|---|---|\n");
    const double rates[] = {10, 25, 100};
    for (int ri = 0; ri < 3; ri++) {
        struct lat_result r;
        char tag[16];
        snprintf(tag, sizeof(tag), "lat%d", ri);
        latency_run(tag, 16, 4, rates[ri], (int)(rates[ri] * (quick ? 3 : 8)), &r);
        print_latency(rates[ri], 64, &r);
        printf("#result p99_ms_64x%.0f=%.3f\n", rates[ri], r.p99 * 1e3);
    }

    cluster(quick, 0, 0, 0);
    grpc_shutdown();
    return gristd_stop(&p, SIGTERM);
}
