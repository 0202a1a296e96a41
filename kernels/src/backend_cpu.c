/*
 * DESIGN: the cpu backend. It starts from the ref table and overrides the
 * slots where OpenBLAS and LAPACKE beat a plain loop: rowdots (dgemv), syrk
 * (dsyrk), syevd (dsyevd, divide and conquer) and families (dsyevd + dsyrk).
 * The momentum slot is a fused loop of its own (cpu_momentum): one pass over
 * V per candidate, with eight independent partial sums instead of the ref
 * loop's two serial ones, which bound it by the add latency rather than by
 * memory (a BLAS formulation, daxpby + dgemv + ddot, would make three
 * passes). Debian's OpenBLAS is the pthreads build; the backend starts
 * single-threaded (best for per-step calls on small machines, see
 * kernels/README.md) and grist_backend_set_threads() changes it.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "backend_impl.h"
#include "grist/error.h"

/* OpenBLAS extension, declared by its cblas.h on Debian; repeated here in
 * case another CBLAS header is found first. */
void openblas_set_num_threads(int num_threads);

static int cpu_init(struct grist_backend *be)
{
    (void)be;
    openblas_set_num_threads(1);
    return 0;
}

static void cpu_set_threads(struct grist_backend *be, int n)
{
    (void)be;
    openblas_set_num_threads(n > 0 ? n : 1);
}

/* One candidate: v = b v + s, returns sum s.v and sum v.v in *d, *e. Four
 * lanes of four doubles (GCC vector extension; unaligned loads and stores
 * through memcpy), summed in a fixed order, so the result does not depend
 * on alignment and a run repeats bit for bit. The AVX2 + FMA clone is picked
 * at load time; the baseline clone is the same code in SSE2 pairs. */

GRIST__CLONES_V3
static void momentum_row(int m, double b, double *restrict v, const double *restrict s, double *d,
                         double *e)
{
    grist__v4d dv[4] = {{0}}, ev[4] = {{0}};
    const grist__v4d bv = {b, b, b, b};
    int i = 0;
    for (; i + 16 <= m; i += 16) {
        for (int l = 0; l < 4; l++) {
            grist__v4d x, y;
            memcpy(&x, v + i + 4 * l, sizeof(x));
            memcpy(&y, s + i + 4 * l, sizeof(y));
            x = bv * x + y;
            memcpy(v + i + 4 * l, &x, sizeof(x));
            dv[l] += y * x;
            ev[l] += x * x;
        }
    }
    const grist__v4d dt = (dv[0] + dv[1]) + (dv[2] + dv[3]);
    const grist__v4d et = (ev[0] + ev[1]) + (ev[2] + ev[3]);
    double dd = (dt[0] + dt[1]) + (dt[2] + dt[3]);
    double ee = (et[0] + et[1]) + (et[2] + et[3]);
    for (; i < m; i++) {
        const double x = b * v[i] + s[i];
        v[i] = x;
        dd += s[i] * x;
        ee += x * x;
    }
    *d = dd;
    *e = ee;
}

static int cpu_momentum(struct grist_backend *be, int K, int m, const double *beta, double *V,
                        const double *s, double *dots, double *energy)
{
    (void)be;
    for (int j = 0; j < K; j++)
        momentum_row(m, beta[j], V + (size_t)j * (size_t)m, s, &dots[j], &energy[j]);
    return 0;
}

static int cpu_rowdots(struct grist_backend *be, int L, int m, const double *rows, const double *s,
                       double *out)
{
    (void)be;
    cblas_dgemv(CblasRowMajor, CblasNoTrans, L, m, 1.0, rows, m, s, 1, 0.0, out, 1);
    return 0;
}

static int cpu_syrk(struct grist_backend *be, int n, int k, double alpha, const double *A,
                    double beta, double *C)
{
    (void)be;
    cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, n, k, alpha, A, n, beta, C, n);
    return 0;
}

static int eig(int n, const double *A, double *w, double *U, int vectors)
{
    const size_t nn = (size_t)n * (size_t)n;
    double *a = U;
    if (!a) {
        a = malloc(nn * sizeof(*a));
        if (!a)
            return -ENOMEM;
    }
    memcpy(a, A, nn * sizeof(*a));
    lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, vectors ? 'V' : 'N', 'L', n, a, n, w);
    if (a != U)
        free(a);
    return info == 0 ? 0 : GRIST_ELAPACK;
}

static int cpu_syevd(struct grist_backend *be, int n, const double *A, double *w, double *U)
{
    (void)be;
    return eig(n, A, w, U, U != NULL);
}

/* Sigma here is a sum of outer products with positive weights, so it is PSD
 * up to rounding: the eigenvalues (values only, dsyevd 'N', ~3x cheaper than
 * with vectors) give the spectral quantities after clipping at 0, and the
 * diagonal and Lyapunov sums are taken on Sigma itself. The difference to
 * the ref backend's exact clipping is at rounding level (checkasm holds it
 * to 1e-8 relative). */
static int cpu_families(struct grist_backend *be, int n, const double *C, double delta,
                        struct grist_families *out)
{
    (void)be;
    const size_t nn = (size_t)n * (size_t)n;
    double *w = malloc((size_t)n * sizeof(*w));
    double *sp = malloc(nn * sizeof(*sp));
    int r = -ENOMEM;
    if (!w || !sp)
        goto out;
    r = eig(n, C, w, NULL, 0);
    if (r < 0)
        goto out;
    for (int j = 0; j < n; j++)
        for (int i = j; i < n; i++)
            sp[i + (size_t)j * n] = sp[j + (size_t)i * n] = C[i + (size_t)j * n];
    grist__families_finish(n, w, sp, delta, out);
out:
    free(w);
    free(sp);
    return r;
}

int grist__backend_cpu_fill(struct grist_backend_ops *ops)
{
    grist__backend_ref_fill(ops);
    ops->name = "cpu";
    ops->init = cpu_init;
    ops->set_threads = cpu_set_threads;
    ops->momentum = cpu_momentum;
    ops->rowdots = cpu_rowdots;
    ops->syrk = cpu_syrk;
    ops->syevd = cpu_syevd;
    ops->families = cpu_families;
    return 0;
}
