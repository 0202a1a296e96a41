/*
 * Kernels benchmark (not a test; figures go to kernels/README.md).
 *   1. machine limits: large dgemm (1 and all threads), STREAM-style triad
 *   2. per-step statistics update per group (K = 32, m = 1024, L = 16), with
 *      and without the folded covariance, for every usable backend
 *   3. covariance path (fold + scale + stage b steps + one SYRK) for
 *      m_cov in {256, 1024, 4096}, b in {1, 16, 64}, against bare OpenBLAS
 *      dsyrk and ssyrk on the same shapes
 *   4. symmetric eigendecomposition for the same sizes
 * Every figure is the median of repeated runs, with min and max.
 * Usage: bench-kernels [--quick] [--full]   (--full adds m = 4096 eigensolves)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grist_config.h"
#if GRIST_HAVE_CPU
#include <cblas.h>
void openblas_set_num_threads(int n);
int openblas_get_num_procs(void);
#else
/* kernels-only build without OpenBLAS (the GPU machine): no bare-BLAS
 * references and no host peak; the device figures are still measured. */
static void openblas_set_num_threads(int n)
{
    (void)n;
}
static int openblas_get_num_procs(void)
{
    return 1;
}
#endif

#include "backend_impl.h"
#include "grist/kernels.h"
#include "stats_impl.h"
#include "../rng.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct stat3 {
    double med, min, max;
};

static struct stat3 summarize(double *t, int n)
{
    qsort(t, (size_t)n, sizeof(double), cmp);
    return (struct stat3){t[n / 2], t[0], t[n - 1]};
}

static int g_reps = 7;

/* ---- 1. machine limits ---- */

/* GFLOP/s of one large OpenBLAS gemm (double, or single when single != 0),
 * median of 5 after a warm-up */
static double gemm_gflops(int n, int threads, int single)
{
#if !GRIST_HAVE_CPU
    (void)n, (void)threads, (void)single;
    return NAN;
#else
    openblas_set_num_threads(threads);
    const size_t nn = (size_t)n * n, es = single ? 4 : 8;
    void *a = malloc(nn * es), *b = malloc(nn * es), *c = calloc(nn, es);
    for (size_t i = 0; i < nn; i++) {
        const double v = 1.0 / (double)(i % 97 + 1);
        if (single)
            ((float *)a)[i] = ((float *)b)[i] = (float)v;
        else
            ((double *)a)[i] = ((double *)b)[i] = v;
    }
    double t[9];
    for (int r = -1; r < 5; r++) {
        double t0 = now();
        if (single)
            cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        else
            cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        if (r >= 0)
            t[r] = now() - t0;
    }
    struct stat3 s = summarize(t, 5);
    free(a), free(b), free(c);
    return 2.0 * n * (double)n * n / s.med * 1e-9;
#endif
}

static double triad_gbs(void)
{
    const size_t n = 1 << 24; /* 3 x 128 MiB */
    double *a = malloc(n * 8), *b = malloc(n * 8), *c = malloc(n * 8);
    for (size_t i = 0; i < n; i++)
        b[i] = 1.0, c[i] = 2.0, a[i] = 0;
    double t[7];
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (size_t i = 0; i < n; i++)
            a[i] = b[i] + 3.0 * c[i];
        t[r] = now() - t0;
    }
    volatile double sink = a[n / 2];
    (void)sink;
    struct stat3 s = summarize(t, 5);
    free(a), free(b), free(c);
    return 3.0 * n * 8 / s.med * 1e-9;
}

/* ---- 2. per-step update ---- */

static struct stat3 step_update(struct grist_backend *be, uint32_t cov_dim, int steps)
{
    struct grist_stats_config cfg;
    grist_stats_config_default(&cfg);
    cfg.m = 1024;
    cfg.lags = 16;
    cfg.cov_dim = cov_dim;
    cfg.ncand = 32;
    for (uint32_t j = 0; j < 32; j++)
        cfg.cand[j] = j == 0 ? 0.0 : 1.0 - pow(2.0, -(double)j / 4.0);
    struct grist_stats *st;
    if (grist_stats_new(be, &cfg, &st) < 0)
        return (struct stat3){NAN, NAN, NAN};
    struct grist_rng r;
    grist_rng_seed(&r, 1);
    float *sk = malloc(1024 * 4);
    for (int i = 0; i < 1024; i++)
        sk[i] = (float)grist_rng_normal(&r);
    struct grist_step s = {sk, 1024, 1, NULL, 32, 0, 0, 0.01, 0.9};
    for (int i = 0; i < 32; i++)
        grist_stats_update(st, &s, 1);
    double t[32];
    for (int rep = 0; rep < g_reps; rep++) {
        double t0 = now();
        for (int i = 0; i < steps; i++)
            grist_stats_update(st, &s, 1);
        t[rep] = (now() - t0) / steps;
    }
    grist_stats_free(st);
    free(sk);
    return summarize(t, g_reps);
}

/* ---- 3. covariance path ---- */

struct covres {
    struct stat3 path, dsyrk, ssyrk;
};

static struct covres cov_bench(struct grist_backend *be, int n, int b)
{
    struct covres res;
    const int m = n < 1024 ? 1024 : n; /* sketch at least as large as the fold */
    struct grist_rng r;
    grist_rng_seed(&r, 2);
    double *sk = malloc((size_t)m * 8);
    double *A = malloc((size_t)n * b * 8), *C = calloc((size_t)n * n, 8);
    float *As = malloc((size_t)n * b * 4), *Cs = calloc((size_t)n * n, 4);
    for (int i = 0; i < m; i++)
        sk[i] = grist_rng_normal(&r);
    for (size_t i = 0; i < (size_t)n * b; i++)
        A[i] = grist_rng_normal(&r), As[i] = (float)A[i];
    /* the real code path of grist_stats_update: per step fold + scale + stage
     * (grist__stats_cov_push), one SYRK per b steps */
    struct grist_stats_config cfg;
    grist_stats_config_default(&cfg);
    cfg.m = (uint32_t)m;
    cfg.cov_dim = (uint32_t)n;
    cfg.cov_batch = (uint32_t)b;
    cfg.ncand = 1;
    cfg.lags = 1;
    struct grist_stats *st;
    grist_stats_new(be, &cfg, &st);
    const int iters = n >= 4096 ? 2 : n >= 1024 ? 5 : 40;
    double t[32];
    for (int rep = 0; rep < g_reps; rep++) {
        double t0 = now();
        for (int it = 0; it < iters; it++)
            for (int s = 0; s < b; s++)
                grist__stats_cov_push(st, sk);
        t[rep] = (now() - t0) / iters;
    }
    res.path = summarize(t, g_reps);
    grist_stats_free(st);
#if !GRIST_HAVE_CPU
    res.dsyrk = res.ssyrk = (struct stat3){NAN, NAN, NAN};
#else
    for (int rep = 0; rep < g_reps; rep++) {
        double t0 = now();
        for (int it = 0; it < iters; it++)
            cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, n, b, 0.5, A, n, 0.95, C, n);
        t[rep] = (now() - t0) / iters;
    }
    res.dsyrk = summarize(t, g_reps);
    for (int rep = 0; rep < g_reps; rep++) {
        double t0 = now();
        for (int it = 0; it < iters; it++)
            cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, n, b, 0.5f, As, n, 0.95f, Cs, n);
        t[rep] = (now() - t0) / iters;
    }
    res.ssyrk = summarize(t, g_reps);
#endif
    free(sk), free(A), free(C), free(As), free(Cs);
    return res;
}

/* The count sketch (MATH.md section 2) of n float32 against its floor: a
 * bare scatter-add of the same values into m doubles at precomputed bucket
 * indices (no hashing, no signs, no norm), interleaved in one run. */
/* The sketch kernels of one float32 tensor, interleaved rep by rep: the
 * hashed sketch, the block sketch, a bare scatter-add at precomputed
 * buckets (the floor of the hashed kind) and a bare contiguous add of every
 * 64-element run onto the same 64 buckets (the floor of the block kind: its
 * loads, widenings and adds without signs, rotations or norm). */
enum { SK_HASHED, SK_BLOCK, SK_SCATTER, SK_STREAM, SK_N };
static void sketch_bench(uint64_t n, uint32_t m, struct stat3 out[SK_N])
{
    float *x = malloc(n * sizeof(float));
    uint32_t *idx = malloc(n * sizeof(uint32_t));
    double *acc = calloc(m, sizeof(double)), t[SK_N][32];
    struct grist_rng r;
    grist_rng_seed(&r, 4);
    const uint32_t seed = grist_sketch_seed(12345, 0);
    for (uint64_t i = 0; i < n; i++) {
        x[i] = (float)grist_rng_normal(&r);
        idx[i] = grist_sketch_key((uint32_t)i, seed) & (m - 1);
    }
    volatile double sink = 0;
    for (int rep = -1; rep < g_reps; rep++) { /* interleaved; one warm-up round */
        double sq = 0, t0 = now(), ts[SK_N];
        grist_sketch_accum_f32(seed, x, n, 0, acc, m, &sq);
        ts[SK_HASHED] = now() - t0;
        t0 = now();
        grist_sketch_block_accum_f32(seed, 1, x, n, 0, acc, m, &sq);
        ts[SK_BLOCK] = now() - t0;
        t0 = now();
        for (uint64_t i = 0; i < n; i++)
            acc[idx[i]] += x[i];
        ts[SK_SCATTER] = now() - t0;
        t0 = now();
        for (uint64_t i = 0; i + 64 <= n; i += 64)
            for (uint32_t l = 0; l < 64; l++)
                acc[l] += x[i + l];
        ts[SK_STREAM] = now() - t0;
        sink += sq + acc[0];
        if (rep >= 0)
            for (int k = 0; k < SK_N; k++)
                t[k][rep] = ts[k];
    }
    (void)sink;
    for (int k = 0; k < SK_N; k++)
        out[k] = summarize(t[k], g_reps);
    free(x), free(idx), free(acc);
}

static struct stat3 eig_bench(struct grist_backend *be, int n)
{
    struct grist_rng r;
    grist_rng_seed(&r, 3);
    const size_t nn = (size_t)n * n;
    double *A = malloc(nn * 8), *w = malloc((size_t)n * 8), *U = malloc(nn * 8);
    for (int j = 0; j < n; j++)
        for (int i = j; i < n; i++)
            A[i + (size_t)j * n] = A[j + (size_t)i * n] = grist_rng_normal(&r);
    double *Ad = be->ops.alloc(be, nn * 8);
    be->ops.upload(be, Ad, A, nn * 8);
    const int reps = n >= 2048 ? 3 : g_reps;
    double t[32];
    for (int rep = 0; rep < reps; rep++) {
        double t0 = now();
        be->ops.syevd(be, n, Ad, w, U);
        t[rep] = now() - t0;
    }
    be->ops.free(be, Ad);
    free(A), free(w), free(U);
    return summarize(t, reps);
}

int main(int argc, char **argv)
{
    int full = 0, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--full"))
            full = 1;
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
    }
    if (quick)
        g_reps = 3;
    const int ncpu = openblas_get_num_procs();
    printf("## Machine limits\n\n");
    const double peak1 = gemm_gflops(1536, 1, 0), peakn = gemm_gflops(1536, ncpu, 0);
    printf("| measure | value |\n|---|---|\n");
    printf("| dgemm 1536^3, 1 thread | %.1f GFLOP/s |\n", peak1);
    printf("| dgemm 1536^3, %d threads | %.1f GFLOP/s |\n", ncpu, peakn);
    const double speak1 = gemm_gflops(1536, 1, 1), speakn = gemm_gflops(1536, ncpu, 1);
    printf("| sgemm 1536^3, 1 thread | %.1f GFLOP/s |\n", speak1);
    printf("| sgemm 1536^3, %d threads | %.1f GFLOP/s |\n", ncpu, speakn);
    const double triad = triad_gbs();
    printf("| triad a = b + 3c, 3 x 128 MiB, 1 thread | %.1f GB/s |\n\n", triad);
    printf(
        "#result dgemm_1t=%.2f\n#result dgemm_nt=%.2f\n#result sgemm_1t=%.2f\n#result triad_1t=%.2f\n",
        peak1, peakn, speak1, triad);

    const char *names[] = {"ref", "cpu", "cuda"};
    printf("## Per-step statistics update (K = 32, m = 1024, L = 16), one group, 1 thread\n\n");
    printf(
        "| backend | covariance | us/step median | min | max | GB/s of V+ring traffic | %% of triad |\n|---|---|---|---|---|---|---|\n");
    for (int b = 0; b < 3; b++) {
        if (!grist_backend_usable(names[b]))
            continue;
        struct grist_backend *be;
        grist__backend_open_named(names[b], &be);
        grist_backend_set_threads(be, 1);
        const uint32_t covs[] = {0, 256};
        for (int c = 0; c < 2; c++) {
            struct stat3 s = step_update(be, covs[c], quick ? 200 : 1000);
            /* V read + written (2 K m), ring read (L m), doubles */
            const double bytes = (2.0 * 32 * 1024 + 16.0 * 1024) * 8;
            printf("| %s | %s | %.1f | %.1f | %.1f | %.1f | %.0f%% |\n", names[b],
                   covs[c] ? "m_cov 256, batch 16" : "none", s.med * 1e6, s.min * 1e6, s.max * 1e6,
                   bytes / s.med * 1e-9, 100.0 * bytes / s.med * 1e-9 / triad);
            if (b == 1 && covs[c])
                printf("#result step_us_cpu=%.2f\n#result step_frac_triad=%.3f\n", s.med * 1e6,
                       bytes / s.med * 1e-9 / triad);
        }
        grist_backend_close(be);
    }

    printf(
        "\n## Covariance update: grist path (fold + scale + stage b steps + SYRK) vs bare OpenBLAS, 1 thread\n\n");
    printf(
        "| backend | m_cov | b | grist ms/update | bare dsyrk ms | grist / dsyrk rate | bare ssyrk ms | grist GFLOP/s | %% of 1-thread dgemm peak |\n|---|---|---|---|---|---|---|---|---|\n");
    openblas_set_num_threads(1);
    for (int bk = 1; bk < 3; bk++) {
        if (!grist_backend_usable(names[bk]))
            continue;
        struct grist_backend *be;
        grist__backend_open_named(names[bk], &be);
        grist_backend_set_threads(be, 1);
        const int ms[] = {256, 1024, 4096}, bs[] = {1, 16, 64};
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                if (quick && ms[i] == 4096)
                    continue;
                struct covres r = cov_bench(be, ms[i], bs[j]);
                const double flops = (double)ms[i] * (ms[i] + 1) * bs[j];
                printf("| %s | %d | %d | %.3f | %.3f | %.2f | %.3f | %.2f | %.0f%% |\n", names[bk],
                       ms[i], bs[j], r.path.med * 1e3, r.dsyrk.med * 1e3, r.dsyrk.med / r.path.med,
                       r.ssyrk.med * 1e3, flops / r.path.med * 1e-9,
                       100.0 * flops / r.path.med * 1e-9 / peak1);
                if (bk == 1 && bs[j] >= 16) /* the batched path the daemon runs */
                    printf("#result cov_ratio_%d_%d=%.3f\n", ms[i], bs[j],
                           r.dsyrk.med / r.path.med);
            }
        grist_backend_close(be);
    }

    static const uint64_t sk_n[2] = {262144, 5270000};
    for (int z = 0; z < 2; z++) {
        const uint64_t n = sk_n[z];
        printf("\n## Sketch of %.2fM float32 (%s; m = 1024), 1 thread\n\n", n / 1e6,
               z == 0 ? "1 MiB, cache-resident" : "21 MiB, from memory");
        struct stat3 sk[SK_N];
        sketch_bench(n, 1024, sk);
        printf("| kernel | ms median | min | max | ns per element |\n|---|---|---|---|---|\n");
        const char *what[SK_N] =
            {"grist_sketch_accum_f32 (hashed: hash, sign, norm, scatter)",
             "grist_sketch_block_accum_f32 (block: signs, norm, contiguous adds)",
             "bare scatter-add at precomputed buckets (the hashed floor)",
             "bare contiguous add of 64-element runs (the block floor)"};
        for (int k = 0; k < SK_N; k++)
            printf("| %s | %.3f | %.3f | %.3f | %.2f |\n", what[k], sk[k].med * 1e3,
                   sk[k].min * 1e3, sk[k].max * 1e3, sk[k].med / (double)n * 1e9);
        printf(
            "\nhashed / block: %.2f; hashed / scatter floor %.2f; block / contiguous floor %.2f\n",
            sk[SK_HASHED].med / sk[SK_BLOCK].med, sk[SK_HASHED].med / sk[SK_SCATTER].med,
            sk[SK_BLOCK].med / sk[SK_STREAM].med);
        if (z == 1)
            printf(
                "#result sketch_ms=%.3f\n#result sketch_block_ms=%.3f\n#result scatter_floor_ms=%.3f\n",
                sk[SK_HASHED].med * 1e3, sk[SK_BLOCK].med * 1e3, sk[SK_SCATTER].med * 1e3);
    }

    printf("\n## Symmetric eigendecomposition (values + vectors)\n\n");
    printf("| backend | n | threads | s median | min | max |\n|---|---|---|---|---|---|\n");
    for (int b = 0; b < 3; b++) {
        if (!grist_backend_usable(names[b]))
            continue;
        struct grist_backend *be;
        grist__backend_open_named(names[b], &be);
        const int ns[] = {256, 1024, 4096};
        for (int i = 0; i < 3; i++) {
            if (ns[i] == 4096 && !full)
                continue;
            if (b == 0 && ns[i] > 256)
                continue; /* Jacobi oracle: O(n^3) per sweep */
            const int th = b == 1 ? ncpu : 1;
            grist_backend_set_threads(be, th);
            struct stat3 s = eig_bench(be, ns[i]);
            printf("| %s | %d | %d | %.4f | %.4f | %.4f |\n", names[b], ns[i], th, s.med, s.min,
                   s.max);
        }
        grist_backend_close(be);
    }
    printf("\n## Batched eigendecompositions (syevd_batched slot; values + vectors)\n\n");
    printf(
        "| backend | n | batch | threads | s per batch median | ms per matrix |\n|---|---|---|---|---|---|\n");
    for (int b = 1; b < 3; b++) {
        if (!grist_backend_usable(names[b]))
            continue;
        struct grist_backend *be;
        grist__backend_open_named(names[b], &be);
        const int ns[] = {32, 100, 256, 1024}, batches[] = {256, 64, 16, 4};
        for (int i = 0; i < 4; i++) {
            const int n = ns[i], nb = quick ? batches[i] / 4 : batches[i];
            const size_t nn = (size_t)n * n;
            struct grist_rng r;
            grist_rng_seed(&r, 9);
            double *A = malloc(nn * nb * 8), *w = malloc((size_t)n * nb * 8),
                   *U = malloc(nn * nb * 8);
            for (int k = 0; k < nb; k++)
                for (int jj = 0; jj < n; jj++)
                    for (int ii = jj; ii < n; ii++)
                        A[k * nn + ii + (size_t)jj * n] = A[k * nn + jj + (size_t)ii * n] =
                            grist_rng_normal(&r);
            double *Ad = be->ops.alloc(be, nn * nb * 8);
            be->ops.upload(be, Ad, A, nn * nb * 8);
            const int th = b == 1 ? ncpu : 1;
            grist_backend_set_threads(be, th);
            double t[8];
            for (int rep = 0; rep < 3; rep++) {
                double t0 = now();
                be->ops.syevd_batched(be, n, nb, Ad, w, U);
                t[rep] = now() - t0;
            }
            struct stat3 s3 = summarize(t, 3);
            printf("| %s | %d | %d | %d | %.4f | %.3f |\n", names[b], n, nb, th, s3.med,
                   s3.med / nb * 1e3);
            be->ops.free(be, Ad);
            free(A), free(w), free(U);
        }
        grist_backend_close(be);
    }
    return 0;
}
