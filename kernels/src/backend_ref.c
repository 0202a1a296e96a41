/*
 * DESIGN: the ref backend, plain C with double accumulation. It is the
 * oracle every other backend is checked against (tests/kernels/checkasm.c),
 * so it favours obviously-correct loops over speed. Eigenproblems use cyclic
 * Jacobi rotations, which are slow (O(n^3) per sweep) but accurate to a few
 * ulps of |A|. Host memory only. No state: priv stays NULL.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "grist/error.h"

void *grist__host_alloc(struct grist_backend *be, size_t bytes)
{
    (void)be;
    return calloc(1, bytes ? bytes : 1);
}

void grist__host_free(struct grist_backend *be, void *p)
{
    (void)be;
    free(p);
}

int grist__host_upload(struct grist_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memcpy(dst, src, bytes);
    return 0;
}

int grist__host_download(struct grist_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memcpy(dst, src, bytes);
    return 0;
}

int grist__host_zero(struct grist_backend *be, void *dst, size_t bytes)
{
    (void)be;
    if (bytes)
        memset(dst, 0, bytes);
    return 0;
}

static int ref_momentum(struct grist_backend *be, int K, int m, const double *beta, double *V,
                        const double *s, double *dots, double *energy)
{
    (void)be;
    for (int j = 0; j < K; j++) {
        double *restrict v = V + (size_t)j * (size_t)m;
        const double b = beta[j];
        double d = 0.0, e = 0.0;
        for (int i = 0; i < m; i++) {
            const double x = b * v[i] + s[i];
            v[i] = x;
            d += s[i] * x;
            e += x * x;
        }
        dots[j] = d;
        energy[j] = e;
    }
    return 0;
}

static int ref_rowdots(struct grist_backend *be, int L, int m, const double *rows, const double *s,
                       double *out)
{
    (void)be;
    for (int k = 0; k < L; k++) {
        const double *r = rows + (size_t)k * (size_t)m;
        double d = 0.0;
        for (int i = 0; i < m; i++)
            d += r[i] * s[i];
        out[k] = d;
    }
    return 0;
}

static int ref_syrk(struct grist_backend *be, int n, int k, double alpha, const double *A,
                    double beta, double *C)
{
    (void)be;
    for (int j = 0; j < n; j++) {
        for (int i = j; i < n; i++) {
            double d = 0.0;
            for (int l = 0; l < k; l++)
                d += A[i + (size_t)l * n] * A[j + (size_t)l * n];
            double *c = &C[i + (size_t)j * n];
            *c = (beta == 0.0 ? 0.0 : beta * *c) + alpha * d;
        }
    }
    return 0;
}

/* Cyclic Jacobi on the full symmetric copy of a_lower. */
int grist__jacobi_eig(int n, const double *a_lower, double *w, double *u)
{
    const size_t nn = (size_t)n * (size_t)n;
    double *a = malloc(nn * sizeof(*a));
    double *v = malloc(nn * sizeof(*v));
    int ret = GRIST_ELAPACK;
    if (!a || !v) {
        ret = -ENOMEM;
        goto out;
    }
    for (int j = 0; j < n; j++)
        for (int i = j; i < n; i++)
            a[i + (size_t)j * n] = a[j + (size_t)i * n] = a_lower[i + (size_t)j * n];
    memset(v, 0, nn * sizeof(*v));
    for (int i = 0; i < n; i++)
        v[i + (size_t)i * n] = 1.0;

    double total = 0.0;
    for (size_t i = 0; i < nn; i++)
        total += a[i] * a[i];
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0;
        for (int j = 0; j < n; j++)
            for (int i = j + 1; i < n; i++)
                off += a[i + (size_t)j * n] * a[i + (size_t)j * n];
        if (off <= 1e-32 * total || off == 0.0) {
            ret = 0;
            break;
        }
        for (int p = 0; p < n - 1; p++) {
            for (int q = p + 1; q < n; q++) {
                const double apq = a[p + (size_t)q * n];
                if (apq == 0.0)
                    continue;
                const double app = a[p + (size_t)p * n], aqq = a[q + (size_t)q * n];
                const double theta = (aqq - app) / (2.0 * apq);
                const double t =
                    (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) { /* columns: A <- A J */
                    const double akp = a[k + (size_t)p * n], akq = a[k + (size_t)q * n];
                    a[k + (size_t)p * n] = c * akp - s * akq;
                    a[k + (size_t)q * n] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows: A <- J^T A */
                    const double apk = a[p + (size_t)k * n], aqk = a[q + (size_t)k * n];
                    a[p + (size_t)k * n] = c * apk - s * aqk;
                    a[q + (size_t)k * n] = s * apk + c * aqk;
                }
                a[p + (size_t)q * n] = a[q + (size_t)p * n] = 0.0;
                for (int k = 0; k < n; k++) { /* V <- V J */
                    const double vkp = v[k + (size_t)p * n], vkq = v[k + (size_t)q * n];
                    v[k + (size_t)p * n] = c * vkp - s * vkq;
                    v[k + (size_t)q * n] = s * vkp + c * vkq;
                }
            }
        }
    }
    if (ret != 0)
        goto out;
    /* Sort ascending (selection sort; n is small for the oracle). */
    for (int i = 0; i < n; i++)
        w[i] = a[i + (size_t)i * n];
    for (int i = 0; i < n; i++) {
        int k = i;
        for (int j = i + 1; j < n; j++)
            if (w[j] < w[k])
                k = j;
        if (k != i) {
            double t = w[i];
            w[i] = w[k];
            w[k] = t;
            for (int r = 0; r < n; r++) {
                t = v[r + (size_t)i * n];
                v[r + (size_t)i * n] = v[r + (size_t)k * n];
                v[r + (size_t)k * n] = t;
            }
        }
    }
    if (u)
        memcpy(u, v, nn * sizeof(*u));
out:
    free(a);
    free(v);
    return ret;
}

static int ref_syevd(struct grist_backend *be, int n, const double *A, double *w, double *U)
{
    (void)be;
    return grist__jacobi_eig(n, A, w, U);
}

static int ref_syevd_batched(struct grist_backend *be, int n, int batch, const double *A, double *w,
                             double *U)
{
    const size_t nn = (size_t)n * (size_t)n;
    for (int b = 0; b < batch; b++) {
        int r = be->ops.syevd(be, n, A + b * nn, w + (size_t)b * n, U ? U + b * nn : NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

void grist__families_finish(int n, const double *w, const double *sp, double delta,
                            struct grist_families *out)
{
    double diag = 0.0, lyap = 0.0;
    for (int i = 0; i < n; i++) {
        const double si = sp[i + (size_t)i * n];
        diag += sqrt(si > 0.0 ? si : 0.0);
    }
    for (int j = 0; j < n; j++) {
        const double sj = sp[j + (size_t)j * n];
        for (int i = 0; i < n; i++) {
            const double si = sp[i + (size_t)i * n], x = sp[i + (size_t)j * n];
            const double den = si + sj + 2.0 * delta;
            if (den > GRIST_TINY)
                lyap += x * x / den;
        }
    }
    grist__families_from_parts(n, w, diag, lyap, out);
}

static int ref_families(struct grist_backend *be, int n, const double *C, double delta,
                        struct grist_families *out)
{
    const size_t nn = (size_t)n * (size_t)n;
    double *w = malloc((size_t)n * sizeof(*w));
    double *u = malloc(nn * sizeof(*u));
    double *sp = malloc(nn * sizeof(*sp));
    int r = -ENOMEM;
    if (!w || !u || !sp)
        goto out;
    r = be->ops.syevd(be, n, C, w, u);
    if (r < 0)
        goto out;
    /* sp = U diag(w+) U^T */
    for (int j = 0; j < n; j++) {
        for (int i = j; i < n; i++) {
            double d = 0.0;
            for (int k = 0; k < n; k++) {
                const double l = w[k] > 0.0 ? w[k] : 0.0;
                d += u[i + (size_t)k * n] * l * u[j + (size_t)k * n];
            }
            sp[i + (size_t)j * n] = sp[j + (size_t)i * n] = d;
        }
    }
    grist__families_finish(n, w, sp, delta, out);
out:
    free(w);
    free(u);
    free(sp);
    return r;
}

void grist__backend_ref_fill(struct grist_backend_ops *ops)
{
    memset(ops, 0, sizeof(*ops));
    ops->name = "ref";
    ops->alloc = grist__host_alloc;
    ops->free = grist__host_free;
    ops->upload = grist__host_upload;
    ops->download = grist__host_download;
    ops->zero = grist__host_zero;
    ops->momentum = ref_momentum;
    ops->rowdots = ref_rowdots;
    ops->syrk = ref_syrk;
    ops->syevd = ref_syevd;
    ops->syevd_batched = ref_syevd_batched;
    ops->families = ref_families;
}
