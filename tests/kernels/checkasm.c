/*
 * checkasm: runs every slot of every available kernels backend against the
 * plain-C reference on seeded inputs (MATH.md T5), in the manner of dav1d's
 * checkasm.
 *   - outputs are compared with stated tolerances (relative to the scale of
 *     the inputs), eigendecompositions by invariants: reconstruction,
 *     orthogonality and eigenvalues;
 *   - every output sits between guard words (host) or in a guarded device
 *     allocation; a slot that writes past its output fails;
 *   - on failure the slot, sizes and seed are printed; rerun with --seed.
 * Usage: checkasm [--backend all|cpu|cuda|ref] [--seed N] [--full]
 * Exit: 0 pass, 1 fail, 77 when the asked-for backend is not usable here.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_impl.h"
#include "grist/kernels.h"
#include "../rng.h"

#define GUARD 16
static const uint64_t CANARY = 0x7ff4dead7ff4beefull; /* a signalling-NaN pattern */

static uint64_t g_seed;
static int g_fail, g_checks;
static const char *g_backend;

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "checkasm: FAIL [%s] ", g_backend);                                        \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, " (seed %" PRIu64 ")\n", g_seed);                                          \
        g_fail++;                                                                                  \
    } while (0)

/* host array with guards on both sides */
static double *hnew(size_t n)
{
    double *p = malloc((n + 2 * GUARD) * sizeof(double));
    for (size_t i = 0; i < n + 2 * GUARD; i++)
        memcpy(&p[i], &CANARY, sizeof(double));
    return p + GUARD;
}
static void hfree(double *p)
{
    free(p - GUARD);
}
static int hguard_ok(const double *p, size_t n)
{
    for (size_t i = 0; i < GUARD; i++)
        if (memcmp(&p[-1 - (long)i], &CANARY, 8) || memcmp(&p[n + i], &CANARY, 8))
            return 0;
    return 1;
}

/* device array of n doubles + GUARD canaries after it */
struct darr {
    double *d;
    size_t n;
};
static struct darr dnew(struct grist_backend *be, const double *init, size_t n)
{
    struct darr a = {be->ops.alloc(be, (n + GUARD) * sizeof(double)), n};
    double *tmp = malloc((n + GUARD) * sizeof(double));
    if (init)
        memcpy(tmp, init, n * sizeof(double));
    else
        memset(tmp, 0, n * sizeof(double));
    for (size_t i = 0; i < GUARD; i++)
        memcpy(&tmp[n + i], &CANARY, 8);
    be->ops.upload(be, a.d, tmp, (n + GUARD) * sizeof(double));
    free(tmp);
    return a;
}
/* download into out (n doubles); returns 0 when a guard was overwritten */
static int dget(struct grist_backend *be, struct darr a, double *out)
{
    double *tmp = malloc((a.n + GUARD) * sizeof(double));
    be->ops.download(be, tmp, a.d, (a.n + GUARD) * sizeof(double));
    memcpy(out, tmp, a.n * sizeof(double));
    int ok = 1;
    for (size_t i = 0; i < GUARD; i++)
        ok &= memcmp(&tmp[a.n + i], &CANARY, 8) == 0;
    free(tmp);
    return ok;
}
static void dfree(struct grist_backend *be, struct darr a)
{
    be->ops.free(be, a.d);
}

static void randn(struct grist_rng *r, double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = grist_rng_normal(r);
}

static double maxabs(const double *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

static int close_arr(const double *a, const double *b, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= tol))
            return 0;
    return 1;
}

static void check_momentum(struct grist_backend *be, struct grist_backend *ref, int K, int m)
{
    struct grist_rng r;
    grist_rng_seed(&r, g_seed ^ (uint64_t)(K * 7919 + m));
    double *V = hnew((size_t)K * m), *s = hnew(m), beta[64];
    randn(&r, V, (size_t)K * m);
    randn(&r, s, m);
    for (int j = 0; j < K; j++)
        beta[j] = grist_rng_uniform(&r) * 0.999;
    double *d1 = hnew(K), *e1 = hnew(K), *d2 = hnew(K), *e2 = hnew(K);
    double *V1 = hnew((size_t)K * m), *V2 = hnew((size_t)K * m);
    struct darr Vr = dnew(ref, V, (size_t)K * m), sr = dnew(ref, s, m);
    struct darr Vb = dnew(be, V, (size_t)K * m), sb = dnew(be, s, m);
    ref->ops.momentum(ref, K, m, beta, Vr.d, sr.d, d1, e1);
    int rc = be->ops.momentum(be, K, m, beta, Vb.d, sb.d, d2, e2);
    int gok = dget(ref, Vr, V1) & dget(be, Vb, V2);
    const double scale = (double)m * 10.0;
    g_checks++;
    if (rc != 0)
        FAIL("momentum K=%d m=%d returned %d", K, m, rc);
    else if (!gok || !hguard_ok(d2, K) || !hguard_ok(e2, K))
        FAIL("momentum K=%d m=%d wrote past its output", K, m);
    else if (!close_arr(V1, V2, (size_t)K * m, 1e-13 * maxabs(V1, (size_t)K * m)) ||
             !close_arr(d1, d2, K, 1e-12 * scale) || !close_arr(e1, e2, K, 1e-12 * scale))
        FAIL("momentum K=%d m=%d differs from ref", K, m);
    dfree(ref, Vr), dfree(ref, sr), dfree(be, Vb), dfree(be, sb);
    hfree(V), hfree(s), hfree(d1), hfree(e1), hfree(d2), hfree(e2), hfree(V1), hfree(V2);
}

static void check_rowdots(struct grist_backend *be, struct grist_backend *ref, int L, int m)
{
    struct grist_rng r;
    grist_rng_seed(&r, g_seed ^ (uint64_t)(L * 104729 + m));
    double *R = hnew((size_t)L * m), *s = hnew(m), *o1 = hnew(L), *o2 = hnew(L);
    randn(&r, R, (size_t)L * m);
    randn(&r, s, m);
    struct darr Rr = dnew(ref, R, (size_t)L * m), sr = dnew(ref, s, m);
    struct darr Rb = dnew(be, R, (size_t)L * m), sb = dnew(be, s, m);
    ref->ops.rowdots(ref, L, m, Rr.d, sr.d, o1);
    int rc = be->ops.rowdots(be, L, m, Rb.d, sb.d, o2);
    g_checks++;
    if (rc != 0)
        FAIL("rowdots L=%d m=%d returned %d", L, m, rc);
    else if (!hguard_ok(o2, L))
        FAIL("rowdots L=%d m=%d wrote past its output", L, m);
    else if (!close_arr(o1, o2, L, 1e-12 * sqrt((double)m) * 10))
        FAIL("rowdots L=%d m=%d differs from ref", L, m);
    dfree(ref, Rr), dfree(ref, sr), dfree(be, Rb), dfree(be, sb);
    hfree(R), hfree(s), hfree(o1), hfree(o2);
}

static void check_syrk(struct grist_backend *be, struct grist_backend *ref, int n, int k)
{
    struct grist_rng r;
    grist_rng_seed(&r, g_seed ^ (uint64_t)(n * 31 + k));
    const size_t nn = (size_t)n * n;
    double *A = hnew((size_t)n * k), *C = hnew(nn), *C1 = hnew(nn), *C2 = hnew(nn);
    randn(&r, A, (size_t)n * k);
    randn(&r, C, nn);
    struct darr Ar = dnew(ref, A, (size_t)n * k), Cr = dnew(ref, C, nn);
    struct darr Ab = dnew(be, A, (size_t)n * k), Cb = dnew(be, C, nn);
    const double alpha = 0.7, beta = 0.95;
    ref->ops.syrk(ref, n, k, alpha, Ar.d, beta, Cr.d);
    int rc = be->ops.syrk(be, n, k, alpha, Ab.d, beta, Cb.d);
    int gok = dget(ref, Cr, C1) & dget(be, Cb, C2);
    g_checks++;
    int upper_ok = 1, lower_ok = 1;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) {
            const size_t x = (size_t)i + (size_t)j * n;
            if (i < j)
                upper_ok &= C2[x] == C[x]; /* the strict upper triangle is not output */
            else
                lower_ok &= fabs(C1[x] - C2[x]) <= 1e-12 * (k + 1) * 10;
        }
    if (rc != 0)
        FAIL("syrk n=%d k=%d returned %d", n, k, rc);
    else if (!gok || !upper_ok)
        FAIL("syrk n=%d k=%d wrote outside its lower triangle", n, k);
    else if (!lower_ok)
        FAIL("syrk n=%d k=%d differs from ref", n, k);
    dfree(ref, Ar), dfree(ref, Cr), dfree(be, Ab), dfree(be, Cb);
    hfree(A), hfree(C), hfree(C1), hfree(C2);
}

/* random symmetric matrix with a spread spectrum, lower triangle used */
static void rand_sym(struct grist_rng *r, int n, double *A)
{
    for (int j = 0; j < n; j++)
        for (int i = j; i < n; i++)
            A[i + (size_t)j * n] = A[j + (size_t)i * n] =
                grist_rng_normal(r) + (i == j ? 0.01 * i : 0.0);
}

/* invariants of (w, U) for A: returns a text describing the first failure */
static const char *eig_invariants(int n, const double *A, const double *w, const double *U)
{
    const size_t nn = (size_t)n * n;
    double fro = 0;
    for (size_t i = 0; i < nn; i++)
        fro += A[i] * A[i];
    fro = sqrt(fro) + 1e-300;
    const double tol = 1e-13 * n + 1e-14;
    double rec = 0, orth = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) {
            double a = 0, o = 0;
            for (int k = 0; k < n; k++) {
                a += U[i + (size_t)k * n] * w[k] * U[j + (size_t)k * n];
                o += U[k + (size_t)i * n] * U[k + (size_t)j * n];
            }
            rec = fmax(rec, fabs(a - A[i + (size_t)j * n]));
            orth = fmax(orth, fabs(o - (i == j ? 1.0 : 0.0)));
        }
    for (int i = 1; i < n; i++)
        if (w[i] < w[i - 1])
            return "eigenvalues not ascending";
    if (rec > tol * fro)
        return "reconstruction error";
    if (orth > tol)
        return "eigenvectors not orthonormal";
    return NULL;
}

static void check_syevd(struct grist_backend *be, struct grist_backend *ref, int n, int with_ref)
{
    struct grist_rng r;
    grist_rng_seed(&r, g_seed ^ (uint64_t)(n * 977));
    const size_t nn = (size_t)n * n;
    double *A = hnew(nn), *w1 = hnew(n), *w2 = hnew(n), *U = hnew(nn), *A2 = hnew(nn);
    rand_sym(&r, n, A);
    struct darr Ab = dnew(be, A, nn);
    int rc = be->ops.syevd(be, n, Ab.d, w2, U);
    int gok = dget(be, Ab, A2);
    g_checks++;
    if (rc != 0) {
        FAIL("syevd n=%d returned %d", n, rc);
    } else if (!gok || !hguard_ok(w2, n) || !hguard_ok(U, nn) || memcmp(A, A2, nn * 8)) {
        FAIL("syevd n=%d wrote outside its outputs", n);
    } else {
        const char *why = eig_invariants(n, A, w2, U);
        if (why)
            FAIL("syevd n=%d: %s", n, why);
        if (with_ref) {
            ref->ops.syevd(ref, n, A, w1, NULL);
            if (!close_arr(w1, w2, n, 1e-12 * n * (maxabs(w1, n) + 1)))
                FAIL("syevd n=%d eigenvalues differ from ref", n);
        }
    }
    dfree(be, Ab);
    hfree(A), hfree(w1), hfree(w2), hfree(U), hfree(A2);
}

static void check_syevd_batched(struct grist_backend *be, int n, int batch)
{
    struct grist_rng r;
    grist_rng_seed(&r, g_seed ^ (uint64_t)(n * 131 + batch));
    const size_t nn = (size_t)n * n;
    double *A = hnew(nn * batch), *w = hnew((size_t)n * batch), *U = hnew(nn * batch);
    for (int b = 0; b < batch; b++)
        rand_sym(&r, n, A + b * nn);
    struct darr Ab = dnew(be, A, nn * batch);
    int rc = be->ops.syevd_batched(be, n, batch, Ab.d, w, U);
    g_checks++;
    if (rc != 0) {
        FAIL("syevd_batched n=%d batch=%d returned %d", n, batch, rc);
    } else if (!hguard_ok(w, (size_t)n * batch) || !hguard_ok(U, nn * batch)) {
        FAIL("syevd_batched n=%d batch=%d wrote past its outputs", n, batch);
    } else {
        for (int b = 0; b < batch; b++) {
            const char *why = eig_invariants(n, A + b * nn, w + (size_t)b * n, U + b * nn);
            if (why) {
                FAIL("syevd_batched n=%d batch=%d matrix %d: %s", n, batch, b, why);
                break;
            }
        }
    }
    dfree(be, Ab);
    hfree(A), hfree(w), hfree(U);
}

static void check_families(struct grist_backend *be, struct grist_backend *ref, int n)
{
    struct grist_rng r;
    grist_rng_seed(&r, g_seed ^ (uint64_t)(n * 5));
    const size_t nn = (size_t)n * n;
    /* a PSD matrix with some exactly-zero directions, lower triangle */
    const int k = n / 2 + 1;
    double *G = hnew((size_t)n * k), *C = hnew(nn);
    randn(&r, G, (size_t)n * k);
    memset(C, 0, nn * sizeof(double));
    ref->ops.syrk(ref, n, k, 1.0 / k, G, 0.0, C);
    struct grist_families f1, f2;
    ref->ops.families(ref, n, C, 1e-9, &f1);
    struct darr Cb = dnew(be, C, nn);
    int rc = be->ops.families(be, n, Cb.d, 1e-9, &f2);
    g_checks++;
    const double *a = &f1.trace, *b = &f2.trace;
    if (rc != 0) {
        FAIL("families n=%d returned %d", n, rc);
    } else {
        for (size_t i = 0; i < sizeof(f1) / sizeof(double); i++)
            if (!(fabs(a[i] - b[i]) <= 1e-8 * fabs(a[i]) + 1e-12)) {
                FAIL("families n=%d field %zu: %.12g vs ref %.12g", n, i, b[i], a[i]);
                break;
            }
    }
    dfree(be, Cb);
    hfree(G), hfree(C);
}

static void run_backend(const char *name, int full)
{
    struct grist_backend *be, *ref;
    g_backend = name;
    if (grist__backend_open_named(name, &be) < 0 || grist__backend_open_named("ref", &ref) < 0) {
        FAIL("cannot open");
        return;
    }
    const int before = g_fail;
    const int ms[] = {1, 7, 64, 1000, 1024, 4096};
    const int Ks[] = {1, 5, 32};
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
        for (size_t j = 0; j < sizeof(Ks) / sizeof(Ks[0]); j++) {
            check_momentum(be, ref, Ks[j], ms[i]);
            check_rowdots(be, ref, Ks[j] == 32 ? 16 : Ks[j], ms[i]);
        }
    const int ns[] = {1, 7, 33, 256};
    const int ks[] = {1, 3, 16, 64};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 4; j++)
            check_syrk(be, ref, ns[i], ks[j]);
    if (full)
        check_syrk(be, ref, 1024, 16);
    const int es[] = {1, 2, 7, 33, 100};
    for (size_t i = 0; i < sizeof(es) / sizeof(es[0]); i++)
        check_syevd(be, ref, es[i], 1);
    if (full) {
        check_syevd(be, ref, 256, 1);
        check_syevd(be, ref, 1024, 0);
    }
    check_syevd_batched(be, 8, 5);
    check_syevd_batched(be, 32, 3);
    check_syevd_batched(be, 100, 2);
    check_families(be, ref, 8);
    check_families(be, ref, 64);
    if (full)
        check_families(be, ref, 256);
    printf("checkasm: %-4s %s\n", name, g_fail == before ? "ok" : "FAILED");
    grist_backend_close(be);
    grist_backend_close(ref);
}

int main(int argc, char **argv)
{
    const char *which = "all";
    int full = 0;
    g_seed = (uint64_t)time(NULL);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc)
            which = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            g_seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--full"))
            full = 1;
        else {
            fprintf(stderr, "usage: checkasm [--backend all|ref|cpu|cuda] [--seed N] [--full]\n");
            return 2;
        }
    }
    printf("checkasm: seed %" PRIu64 "\n", g_seed);
    const char *all[] = {"ref", "cpu", "cuda"};
    int ran = 0;
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(which, "all") != 0 && strcmp(which, all[i]) != 0)
            continue;
        if (!grist_backend_usable(all[i])) {
            printf("checkasm: %-4s not usable here (skipped)\n", all[i]);
            continue;
        }
        run_backend(all[i], full);
        ran++;
    }
    if (ran == 0)
        return 77;
    printf("checkasm: %d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
