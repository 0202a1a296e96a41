/*
 * Durable job state (--state-dir) end to end with the real daemon: a
 * SIGTERM and a SIGKILL restart keep every job's step, version, values and
 * statistics (the restored job continues exactly like one that never
 * stopped); refused files (corrupt, truncated, other version, junk) are
 * counted and renamed while the good ones are restored; an unwritable
 * directory is counted and survived; an expired job's file goes.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "grist/v1/grist.pb-c.h"
#include "harness.h"
#include "worker.h"
#include "../rng.h"
#include "../check_main.h"

enum { M = 64, STEPS1 = 60, STEPS2 = 40 };

static char g_dir[256];

static void fresh_dir(const char *tag)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/grist-state-%s-%d", tag, (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void rm_dir(void)
{
    char cmd[600];
    if (getenv("GRIST_TEST_KEEP_STATE")) /* tests/fuzz/corpus-state seeds come from these */
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'.*", g_dir, g_dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* gristd on 127.0.0.1:0 with HTTP, a state directory (NULL: none) and a fast interval */
static struct gristd_proc start(const char *dir, const char *extra1, const char *extra2)
{
    const char *args[20] =
        {"--listen", "127.0.0.1:0",         "--http", "127.0.0.1:0", "--log-level",
         "warn",     "--snapshot-interval", "0.1"};
    int n = 8;
    if (dir) {
        args[n++] = "--state-dir";
        args[n++] = dir;
    }
    if (extra1)
        args[n++] = extra1;
    if (extra2)
        args[n++] = extra2;
    args[n] = NULL;
    struct gristd_proc p;
    ck_assert_int_eq(gristd_start(&p, args), 0);
    return p;
}

static Grist__V1__GetJobResponse *get_job(const char *addr, const char *id, grpc_status_code *st)
{
    Grist__V1__GetJobRequest req = GRIST__V1__GET_JOB_REQUEST__INIT;
    req.job_id = (char *)id;
    uint8_t buf[512];
    const size_t len = grist__v1__get_job_request__pack(&req, buf);
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

/* Poll until the job's evaluations reached `steps` aggregated steps. */
static Grist__V1__GetJobResponse *wait_steps(const char *addr, const char *id, uint64_t steps)
{
    for (int i = 0; i < 1000; i++) {
        grpc_status_code st;
        Grist__V1__GetJobResponse *r = get_job(addr, id, &st);
        if (r && r->job->step >= steps && r->n_groups > 0 && r->groups[0]->steps >= steps)
            return r;
        if (r)
            grist__v1__get_job_response__free_unpacked(r, NULL);
        usleep(10000);
    }
    ck_abort_msg("job %s never reached %llu evaluated steps", id, (unsigned long long)steps);
    return NULL;
}

/* A counter from /metrics (HTTP on p's "http HOST:PORT" ready line). */
static double metric(const struct gristd_proc *p, const char *name)
{
    const double v = gristd_metric(p, name);
    ck_assert_msg(!isnan(v), "no %s in gristd's /metrics", name);
    return v;
}

/* Deterministic worker: AR(1) sketches (rho 0.9) from a fixed seed, so two
 * daemons fed the same steps hold the same statistics. */
struct feed {
    struct grist_rng rng;
    double g[M];
};

static void feed_init(struct feed *f)
{
    grist_rng_seed(&f->rng, 77);
    for (int i = 0; i < M; i++)
        f->g[i] = grist_rng_normal(&f->rng);
}

static void feed_steps(struct feed *f, struct tw *w, uint64_t from, uint64_t to)
{
    float sk[M];
    for (uint64_t t = from; t <= to; t++) {
        for (int i = 0; i < M; i++) {
            f->g[i] = 0.9 * f->g[i] + sqrt(1 - 0.81) * grist_rng_normal(&f->rng);
            sk[i] = (float)(f->g[i] + 0.3 * grist_rng_normal(&f->rng));
        }
        uint8_t *buf;
        const size_t len = tw_encode_summary(&buf, t, 1, M, sk, NULL, 16);
        ck_assert_int_eq(tw_send_raw(w, buf, len), 0);
        free(buf);
    }
}

/* Feed in chunks of the evaluation period (5), each waited for, so that the
 * compute thread's batches, and so the evaluations, fall on the same steps
 * in every run. */
static void feed_sync(struct feed *f, struct tw *w, const char *addr, const char *job,
                      uint64_t from, uint64_t to)
{
    for (uint64_t t = from; t <= to; t += 5) {
        const uint64_t end = t + 4 < to ? t + 4 : to;
        feed_steps(f, w, t, end);
        grist__v1__get_job_response__free_unpacked(wait_steps(addr, job, end), NULL);
    }
}

static struct tw *attach(const char *addr, const char *job)
{
    struct tw_opts o = {.job = job,
                        .rank = 0,
                        .world = 1,
                        .ngroups = 1,
                        .m = M,
                        .n = 1000,
                        .beta0 = 0.5,
                        .solve_every = 5,
                        .min_steps = 5,
                        .hysteresis_h = 1,
                        .rule = "alignment",
                        .noise = "acf"};
    struct tw *w = tw_open(addr, &o);
    ck_assert_ptr_nonnull(w);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    return w;
}

static void detach(struct tw *w)
{
    char det[256];
    ck_assert_int_eq(tw_finish(w, det, sizeof(det), 10), GRPC_STATUS_OK);
    tw_free(w);
}

/* The same job state, field by field: the brief, the values, the statistics. */
static void assert_same(const Grist__V1__GetJobResponse *a, const Grist__V1__GetJobResponse *b,
                        double tol)
{
    ck_assert_uint_eq(a->job->step, b->job->step);
    ck_assert_uint_eq(a->job->version, b->job->version);
    ck_assert_uint_eq(a->n_groups, b->n_groups);
    for (size_t g = 0; g < a->n_groups; g++) {
        const Grist__V1__GroupState *x = a->groups[g], *y = b->groups[g];
        ck_assert_uint_eq(x->steps, y->steps);
        ck_assert_double_eq(x->momentum, y->momentum);
        ck_assert_uint_eq(x->n_alignment, y->n_alignment);
        ck_assert_uint_ge(x->n_alignment, 2);
        for (size_t k = 0; k < x->n_alignment; k++)
            ck_assert_msg(fabs(x->alignment[k] - y->alignment[k]) <= tol * fabs(x->alignment[k]),
                          "J[%zu]: %.17g against %.17g", k, x->alignment[k], y->alignment[k]);
    }
}

static int file_count(const char *suffix)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "exit $(ls '%s' 2>/dev/null | grep -c '%s$')", g_dir, suffix);
    const int r = system(cmd);
    return WEXITSTATUS(r);
}

/* SIGTERM and restart: the job is where it was, re-attaching gets its values
 * at once, and it then continues exactly like a job that never stopped. */
START_TEST(test_restart_continues)
{
    fresh_dir("term");
    grpc_init();
    struct feed f;
    feed_init(&f);
    struct gristd_proc p = start(g_dir, NULL, NULL);
    struct tw *w = attach(p.addr[0], "run");
    feed_sync(&f, w, p.addr[0], "run", 1, STEPS1);
    Grist__V1__GetJobResponse *before = wait_steps(p.addr[0], "run", STEPS1);
    ck_assert_uint_ge(before->job->version, 1);
    tw_cancel(w);
    tw_free(w);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    ck_assert_int_eq(file_count(".state"), 1);

    p = start(g_dir, NULL, NULL);
    ck_assert_double_eq(metric(&p, "gristd_jobs_restored_total"), 1);
    grpc_status_code st;
    Grist__V1__GetJobResponse *after = get_job(p.addr[0], "run", &st);
    ck_assert_msg(after, "the restored job is not served: %d", st);
    assert_same(before, after, 0);
    /* a re-attaching worker gets the values in force at once */
    w = attach(p.addr[0], "run");
    struct tw_hp hp = {0};
    ck_assert_int_eq(tw_next(w, &hp, 10), 1);
    ck_assert_uint_eq(hp.version, before->job->version);
    ck_assert_double_eq(hp.momentum[0], before->groups[0]->momentum);
    feed_sync(&f, w, p.addr[0], "run", STEPS1 + 1, STEPS1 + STEPS2);
    Grist__V1__GetJobResponse *cont = wait_steps(p.addr[0], "run", STEPS1 + STEPS2);
    ck_assert_uint_ge(cont->job->version, before->job->version);
    while (tw_next(w, &hp, 0.2) == 1) /* versions only grow */
        ck_assert_uint_ge(hp.version, before->job->version);
    detach(w);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);

    /* the reference: one daemon, no state, the same steps without a stop */
    feed_init(&f);
    struct gristd_proc q = start(NULL, NULL, NULL);
    w = attach(q.addr[0], "run");
    feed_sync(&f, w, q.addr[0], "run", 1, STEPS1 + STEPS2);
    Grist__V1__GetJobResponse *ref = wait_steps(q.addr[0], "run", STEPS1 + STEPS2);
    assert_same(ref, cont, 1e-9);
    detach(w);
    ck_assert_int_eq(gristd_stop(&q, SIGTERM), 0);
    grist__v1__get_job_response__free_unpacked(before, NULL);
    grist__v1__get_job_response__free_unpacked(after, NULL);
    grist__v1__get_job_response__free_unpacked(cont, NULL);
    grist__v1__get_job_response__free_unpacked(ref, NULL);
    grpc_shutdown();
    rm_dir();
}
END_TEST

/* SIGKILL after the job went quiet: the interval's snapshot has it all. */
START_TEST(test_sigkill)
{
    fresh_dir("kill");
    grpc_init();
    struct feed f;
    feed_init(&f);
    struct gristd_proc p = start(g_dir, NULL, NULL);
    struct tw *w = attach(p.addr[0], "k");
    feed_steps(&f, w, 1, STEPS1);
    Grist__V1__GetJobResponse *before = wait_steps(p.addr[0], "k", STEPS1);
    /* wait for a snapshot taken after the last step: two written since now */
    const double written = metric(&p, "gristd_snapshots_written_total");
    for (int i = 0; i < 500 && metric(&p, "gristd_snapshots_written_total") < written + 2; i++)
        usleep(10000);
    tw_cancel(w);
    tw_free(w);
    ck_assert_int_eq(gristd_stop(&p, SIGKILL), 128 + SIGKILL);
    p = start(g_dir, NULL, NULL);
    grpc_status_code st;
    Grist__V1__GetJobResponse *after = get_job(p.addr[0], "k", &st);
    ck_assert_msg(after, "the job was lost: %d", st);
    assert_same(before, after, 0);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    grist__v1__get_job_response__free_unpacked(before, NULL);
    grist__v1__get_job_response__free_unpacked(after, NULL);
    grpc_shutdown();
    rm_dir();
}
END_TEST

/* A disk slower than the interval (GRISTD_FAULT=snapshot-slow: 100 ms per
 * write, 4 jobs changing every 0.1 s interval, so 4 writes are asked for in
 * the time of one): a newer state replaces a job's waiting write, so once
 * the load stops the files catch up within a few writes and a SIGKILL then
 * loses nothing. With a queue of every request (the first version) the
 * backlog after 3 s was ~9 s of stale writes and the restored jobs were
 * seconds old. */
START_TEST(test_snapshot_slow_disk)
{
    enum { NJ = 4, STEPS = 100 };
    fresh_dir("slow");
    grpc_init();
    setenv("GRISTD_FAULT", "snapshot-slow", 1);
    struct gristd_proc p = start(g_dir, NULL, NULL);
    unsetenv("GRISTD_FAULT");
    static const char *ids[NJ] = {"s0", "s1", "s2", "s3"};
    struct feed f[NJ];
    struct tw *w[NJ];
    for (int j = 0; j < NJ; j++) {
        feed_init(&f[j]);
        w[j] = attach(p.addr[0], ids[j]);
    }
    for (uint64_t t = 1; t <= STEPS; t++) {
        for (int j = 0; j < NJ; j++)
            feed_steps(&f[j], w[j], t, t);
        usleep(30000);
    }
    Grist__V1__GetJobResponse *before[NJ];
    for (int j = 0; j < NJ; j++)
        before[j] = wait_steps(p.addr[0], ids[j], STEPS);
    /* Until the writer is idle (no write for 5 write times). With one waiting
     * write per job that takes at most the running write, one waiting per job
     * and one more per job whose write began before its last state: 2 NJ + 1.
     * A queue of every request had about 90 stale writes to go here. */
    const double w0 = metric(&p, "gristd_snapshots_written_total");
    double written = w0;
    for (int quiet = 0, i = 0; quiet < 5 && i < 600; i++) {
        usleep(100000);
        const double now = metric(&p, "gristd_snapshots_written_total");
        quiet = now == written ? quiet + 1 : 0;
        written = now;
    }
    ck_assert_msg(written - w0 <= 2 * NJ + 1, "%.0f writes after the last step (at most %d)",
                  written - w0, 2 * NJ + 1);
    const double superseded = metric(&p, "gristd_snapshots_superseded_total");
    for (int j = 0; j < NJ; j++) {
        tw_cancel(w[j]);
        tw_free(w[j]);
    }
    ck_assert_int_eq(gristd_stop(&p, SIGKILL), 128 + SIGKILL);
    p = start(g_dir, NULL, NULL);
    for (int j = 0; j < NJ; j++) {
        grpc_status_code st;
        Grist__V1__GetJobResponse *after = get_job(p.addr[0], ids[j], &st);
        ck_assert_msg(after, "job %s was lost: %d", ids[j], st);
        ck_assert_msg(after->job->step == STEPS, "job %s restored at step %llu of %d", ids[j],
                      (unsigned long long)after->job->step, STEPS);
        assert_same(before[j], after, 0);
        grist__v1__get_job_response__free_unpacked(before[j], NULL);
        grist__v1__get_job_response__free_unpacked(after, NULL);
    }
    ck_assert_msg(superseded > 0, "no write was superseded: the fault did not slow the disk");
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    grpc_shutdown();
    rm_dir();
}
END_TEST

static void copy_file(const char *from, const char *to)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    ck_assert_int_eq(system(cmd), 0);
}

/* Broken files are refused one by one, counted and kept aside; the good
 * one is restored and the daemon serves every job. */
START_TEST(test_refused_files)
{
    fresh_dir("bad");
    grpc_init();
    struct feed f;
    feed_init(&f);
    struct gristd_proc p = start(g_dir, NULL, NULL);
    const char *ids[] = {"good", "flip", "cut", "ver"};
    for (int i = 0; i < 4; i++) {
        struct tw *w = attach(p.addr[0], ids[i]);
        feed_steps(&f, w, 1, 20);
        grist__v1__get_job_response__free_unpacked(wait_steps(p.addr[0], ids[i], 20), NULL);
        detach(w);
    }
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    ck_assert_int_eq(file_count(".state"), 4);
    /* a job's file is named by the FNV-1a of its id (daemon/snapshot.c) */
    char path[4][600];
    for (int i = 0; i < 4; i++) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (const char *c = ids[i]; *c; c++)
            h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
        snprintf(path[i], sizeof(path[i]), "%s/job-%016llx.state", g_dir, (unsigned long long)h);
        ck_assert_msg(access(path[i], R_OK) == 0, "no file %s for job %s", path[i], ids[i]);
    }
    FILE *fp = fopen(path[1], "r+b"); /* one flipped byte in the middle */
    fseek(fp, 0, SEEK_END);
    const long size = ftell(fp);
    fseek(fp, size / 2, SEEK_SET);
    const int c = fgetc(fp);
    fseek(fp, size / 2, SEEK_SET);
    fputc(c ^ 0x40, fp);
    fclose(fp);
    ck_assert_int_eq(truncate(path[2], size / 3), 0);
    fp = fopen(path[3], "r+b"); /* format version 99 */
    fseek(fp, 8, SEEK_SET);
    const uint32_t v99 = 99;
    fwrite(&v99, 4, 1, fp);
    fclose(fp);
    char junk[700];
    snprintf(junk, sizeof(junk), "%s/job-00000000deadbeef.state", g_dir);
    fp = fopen(junk, "wb");
    fputs("not a snapshot", fp);
    fclose(fp);
    char dup[700]; /* a good file under another job's name */
    snprintf(dup, sizeof(dup), "%s/job-0000000000000001.state", g_dir);
    copy_file(path[0], dup);

    p = start(g_dir, NULL, NULL);
    ck_assert_double_eq(metric(&p, "gristd_jobs_restored_total"), 1);
    ck_assert_double_eq(metric(&p, "gristd_snapshots_refused_total"), 5);
    ck_assert_int_eq(file_count(".refused"), 5);
    grpc_status_code st;
    Grist__V1__GetJobResponse *r = get_job(p.addr[0], "good", &st);
    ck_assert_msg(r && r->groups[0]->steps == 20, "the good job was not restored");
    grist__v1__get_job_response__free_unpacked(r, NULL);
    for (int i = 1; i < 4; i++) { /* refused: unknown until a worker attaches, then fresh */
        ck_assert_ptr_null(get_job(p.addr[0], ids[i], &st));
        ck_assert_int_eq(st, GRPC_STATUS_NOT_FOUND);
        struct tw *w = attach(p.addr[0], ids[i]);
        feed_steps(&f, w, 1, 5);
        r = wait_steps(p.addr[0], ids[i], 5);
        ck_assert_uint_eq(r->groups[0]->steps, 5);
        grist__v1__get_job_response__free_unpacked(r, NULL);
        detach(w);
    }
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    /* the refused files are not read again */
    p = start(g_dir, NULL, NULL);
    ck_assert_double_eq(metric(&p, "gristd_snapshots_refused_total"), 0);
    ck_assert_double_eq(metric(&p, "gristd_jobs_restored_total"), 4);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    grpc_shutdown();
    rm_dir();
}
END_TEST

/* The directory turns into a file under the daemon: every write fails, is
 * counted, and the daemon serves on; once it is a directory again the next
 * interval writes the job. */
START_TEST(test_unwritable_dir)
{
    fresh_dir("ro");
    grpc_init();
    struct feed f;
    feed_init(&f);
    struct gristd_proc p = start(g_dir, NULL, NULL);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && echo x > '%s'", g_dir, g_dir);
    ck_assert_int_eq(system(cmd), 0);
    struct tw *w = attach(p.addr[0], "ro");
    feed_steps(&f, w, 1, 20);
    grist__v1__get_job_response__free_unpacked(wait_steps(p.addr[0], "ro", 20), NULL);
    for (int i = 0; i < 500 && metric(&p, "gristd_snapshot_errors_total") < 1; i++)
        usleep(10000);
    ck_assert_double_ge(metric(&p, "gristd_snapshot_errors_total"), 1);
    ck_assert_double_eq(metric(&p, "gristd_snapshots_written_total"), 0);
    feed_steps(&f, w, 21, 30); /* still serving */
    grist__v1__get_job_response__free_unpacked(wait_steps(p.addr[0], "ro", 30), NULL);
    snprintf(cmd, sizeof(cmd), "rm -f '%s' && mkdir '%s'", g_dir, g_dir);
    ck_assert_int_eq(system(cmd), 0);
    for (int i = 0; i < 500 && metric(&p, "gristd_snapshots_written_total") < 1; i++)
        usleep(10000);
    ck_assert_double_ge(metric(&p, "gristd_snapshots_written_total"), 1);
    ck_assert_int_eq(file_count(".state"), 1);
    detach(w);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    grpc_shutdown();
    rm_dir();
}
END_TEST

/* An expired job leaves the directory. */
START_TEST(test_expiry_removes_file)
{
    fresh_dir("exp");
    grpc_init();
    struct feed f;
    feed_init(&f);
    struct gristd_proc p = start(g_dir, "--idle-expiry", "1");
    struct tw *w = attach(p.addr[0], "gone");
    feed_steps(&f, w, 1, 10);
    grist__v1__get_job_response__free_unpacked(wait_steps(p.addr[0], "gone", 10), NULL);
    for (int i = 0; i < 500 && file_count(".state") == 0; i++)
        usleep(10000);
    ck_assert_int_eq(file_count(".state"), 1);
    detach(w);
    for (int i = 0; i < 1000 && file_count(".state") != 0; i++)
        usleep(10000);
    ck_assert_double_eq(metric(&p, "gristd_jobs_expired_total"), 1);
    ck_assert_int_eq(file_count(".state"), 0);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    grpc_shutdown();
    rm_dir();
}
END_TEST

/* Format 1 (before GroupSpec.sketch_sample) still restores: a file written
 * by this build is turned into the version-1 layout here (each group's u32
 * sampling removed, version, length and FNV-1a 64 rewritten, the frame of
 * docs/PERSISTENCE.md) and the job comes back with every group sketched
 * whole; a version-2 job with 1 run in 4 keeps its sampling across a restart. */
static int read_file(const char *path, unsigned char **buf, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *buf = malloc(*len);
    const size_t got = fread(*buf, 1, *len, fp);
    fclose(fp);
    return got == *len ? 0 : -1;
}

static uint32_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void to_format_1(const char *path)
{
    unsigned char *b;
    size_t len;
    ck_assert_int_eq(read_file(path, &b, &len), 0);
    ck_assert_uint_eq(rd32(b + 8), 2); /* this build's version */
    const unsigned char *pl = b + 32;
    const size_t plen = len - 32;
    unsigned char *out = malloc(len);
    size_t i = 0, o = 32;
    const uint32_t idlen = rd32(pl);
    const size_t head = 4 + idlen + 5 * 4; /* id, seed, world, ngroups, m, kind */
    const uint32_t ngroups = rd32(pl + 4 + idlen + 8);
    memcpy(out + o, pl, head);
    i = head;
    o += head;
    for (uint32_t g = 0; g < ngroups; g++) {
        const size_t rec = 4 + rd32(pl + i) + 8 + 4 + 8 + 8; /* name, n, form, lr, beta0 */
        memcpy(out + o, pl + i, rec);
        i += rec;
        o += rec;
        ck_assert_uint_eq(rd32(pl + i), 1); /* the sampling: 1 run in 1 */
        i += 4;
    }
    memcpy(out + o, pl + i, plen - i);
    o += plen - i;
    const uint64_t n = o - 32;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t k = 32; k < o; k++) {
        h ^= out[k];
        h *= 0x100000001b3ull;
    }
    memcpy(out, b, 8);
    const uint32_t v1 = 1;
    memcpy(out + 8, &v1, 4);
    memcpy(out + 12, b + 12, 4);
    memcpy(out + 16, &n, 8);
    memcpy(out + 24, &h, 8);
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(out, 1, o, fp), o);
    fclose(fp);
    free(b);
    free(out);
}

START_TEST(test_reads_format_1)
{
    fresh_dir("v1");
    grpc_init();
    struct feed f;
    feed_init(&f);
    struct gristd_proc p = start(g_dir, NULL, NULL);
    struct tw *w = attach(p.addr[0], "old");
    feed_sync(&f, w, p.addr[0], "old", 1, STEPS1);
    detach(w);
    struct tw_opts o = {.job = "sampled",
                        .world = 1,
                        .ngroups = 1,
                        .m = M,
                        .n = 100000,
                        .beta0 = 0.5,
                        .solve_every = 5,
                        .min_steps = 5,
                        .hysteresis_h = 1,
                        .rule = "alignment",
                        .noise = "acf",
                        .sketch_kind = 1,
                        .sketch_sample = 4};
    w = tw_open(p.addr[0], &o);
    uint32_t seed;
    ck_assert_int_eq(tw_welcome(w, &seed, 10), 0);
    feed_sync(&f, w, p.addr[0], "sampled", 1, 10);
    detach(w);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    ck_assert_int_eq(file_count(".state"), 2);
    char cmd[700], path[1024];
    snprintf(cmd, sizeof(cmd), "grep -l old '%s'/*.state", g_dir);
    FILE *ls = popen(cmd, "r");
    ck_assert_ptr_nonnull(fgets(path, sizeof(path), ls));
    pclose(ls);
    path[strcspn(path, "\n")] = '\0';
    to_format_1(path);

    p = start(g_dir, NULL, NULL);
    ck_assert_double_eq(metric(&p, "gristd_jobs_restored_total"), 2);
    grpc_status_code st;
    Grist__V1__GetJobResponse *r = get_job(p.addr[0], "old", &st);
    ck_assert_msg(r, "the format-1 job is not served: %d", st);
    ck_assert_uint_eq(r->job->step, STEPS1);
    ck_assert_uint_eq(r->groups[0]->sketch_sample, 1);
    ck_assert_uint_eq(r->groups[0]->num_elements, 1000);
    grist__v1__get_job_response__free_unpacked(r, NULL);
    r = get_job(p.addr[0], "sampled", &st);
    ck_assert_msg(r, "the sampled job is not served: %d", st);
    ck_assert_uint_eq(r->groups[0]->sketch_sample, 4);
    grist__v1__get_job_response__free_unpacked(r, NULL);
    ck_assert_int_eq(gristd_stop(&p, SIGTERM), 0);
    grpc_shutdown();
    rm_dir();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("state");
    TCase *tc = tcase_create("restart");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_restart_continues);
    tcase_add_test(tc, test_sigkill);
    tcase_add_test(tc, test_snapshot_slow_disk);
    tcase_add_test(tc, test_refused_files);
    tcase_add_test(tc, test_unwritable_dir);
    tcase_add_test(tc, test_expiry_removes_file);
    tcase_add_test(tc, test_reads_format_1);
    suite_add_tcase(s, tc);
    return s;
}

GRIST_CHECK_MAIN(suite)
