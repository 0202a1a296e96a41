/*
 * DESIGN: closed-form optimal Q* of each family of MATH.md section 7, in
 * plain C on the host, for tests and small n (the daemon only needs the
 * optimal values, which the backends' families slot computes). Sigma is
 * first made PSD by clipping its eigenvalues at 0.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "grist/error.h"
#include "grist/families.h"

int grist_eig_ref(uint32_t n, const double *a, double *w, double *u)
{
    if (!a || !w || n == 0 || n > 65536)
        return -EINVAL;
    return grist__jacobi_eig((int)n, a, w, u);
}

/* out = U diag(f) U^T */
static void recompose(uint32_t n, const double *u, const double *f, double *out)
{
    for (uint32_t j = 0; j < n; j++)
        for (uint32_t i = 0; i < n; i++) {
            double d = 0.0;
            for (uint32_t k = 0; k < n; k++)
                d += u[i + (size_t)k * n] * f[k] * u[j + (size_t)k * n];
            out[i + (size_t)j * n] = d;
        }
}

static double inner(uint32_t n, const double *a, const double *b)
{
    double d = 0.0;
    for (size_t i = 0; i < (size_t)n * n; i++)
        d += a[i] * b[i];
    return d;
}

int grist_family_solve(enum grist_family fam, uint32_t n, const double *sigma, const double *metric,
                       double radius, double delta, double *q, double *value)
{
    if (n == 0 || !sigma || !q || !(radius > 0.0) || delta < 0.0)
        return -EINVAL;
    const size_t nn = (size_t)n * n;
    double *w = malloc(n * sizeof(double)), *u = malloc(nn * sizeof(double));
    double *f = malloc(n * sizeof(double)), *sp = malloc(nn * sizeof(double));
    double *c = malloc(n * sizeof(double)), *v = malloc(nn * sizeof(double));
    double *cm = malloc(nn * sizeof(double)), *t = malloc(nn * sizeof(double));
    int r = -ENOMEM;
    if (!w || !u || !f || !sp || !c || !v || !cm || !t)
        goto out;
    r = grist__jacobi_eig((int)n, sigma, w, u);
    if (r < 0)
        goto out;
    for (uint32_t k = 0; k < n; k++)
        f[k] = w[k] > 0.0 ? w[k] : 0.0;
    recompose(n, u, f, sp);
    double tr = 0.0;
    for (uint32_t k = 0; k < n; k++)
        tr += f[k];

    memset(q, 0, nn * sizeof(double));
    switch (fam) {
    case GRIST_FAMILY_FROBENIUS: {
        const double fro = sqrt(inner(n, sp, sp));
        for (size_t i = 0; i < nn; i++)
            q[i] = fro > GRIST_TINY ? radius * sp[i] / fro : 0.0;
        break;
    }
    case GRIST_FAMILY_SPECTRAL:
        for (uint32_t i = 0; i < n; i++)
            q[i + (size_t)i * n] = radius;
        break;
    case GRIST_FAMILY_ISOTROPIC:
        for (uint32_t i = 0; i < n; i++)
            q[i + (size_t)i * n] = tr > GRIST_TINY ? radius / sqrt(tr) : 0.0;
        break;
    case GRIST_FAMILY_LYAPUNOV: {
        if (metric) {
            memcpy(cm, metric, nn * sizeof(double));
        } else {
            memset(cm, 0, nn * sizeof(double));
            for (uint32_t i = 0; i < n; i++)
                cm[i + (size_t)i * n] = sp[i + (size_t)i * n] + delta;
        }
        r = grist__jacobi_eig((int)n, cm, c, v);
        if (r < 0)
            goto out;
        /* t = V^T Sigma V, then divide by c_i + c_j, then X = V t V^T */
        for (uint32_t j = 0; j < n; j++)
            for (uint32_t i = 0; i < n; i++) {
                double d = 0.0;
                for (uint32_t k = 0; k < n; k++)
                    for (uint32_t l = 0; l < n; l++)
                        d += v[k + (size_t)i * n] * sp[k + (size_t)l * n] * v[l + (size_t)j * n];
                const double den = c[i] + c[j];
                t[i + (size_t)j * n] = den > GRIST_TINY ? d / den : 0.0;
            }
        for (uint32_t j = 0; j < n; j++)
            for (uint32_t i = 0; i < n; i++) {
                double d = 0.0;
                for (uint32_t k = 0; k < n; k++)
                    for (uint32_t l = 0; l < n; l++)
                        d += v[i + (size_t)k * n] * t[k + (size_t)l * n] * v[j + (size_t)l * n];
                cm[i + (size_t)j * n] = d; /* X */
            }
        const double xs = inner(n, cm, sp);
        const double lambda = sqrt(xs > 0.0 ? xs / 2.0 : 0.0) / radius;
        for (size_t i = 0; i < nn; i++)
            q[i] = lambda > GRIST_TINY ? cm[i] / lambda : 0.0;
        break;
    }
    case GRIST_FAMILY_WHITENED:
        for (uint32_t k = 0; k < n; k++)
            f[k] = (f[k] + delta) > GRIST_TINY ? radius / sqrt(f[k] + delta) : 0.0;
        recompose(n, u, f, q);
        break;
    case GRIST_FAMILY_DIAGONAL:
        for (uint32_t i = 0; i < n; i++) {
            const double s = sp[i + (size_t)i * n];
            const double den = sqrt(s > 0.0 ? s : 0.0) + delta;
            q[i + (size_t)i * n] = den > GRIST_TINY ? radius / den : 0.0;
        }
        break;
    default:
        r = -EINVAL;
        goto out;
    }
    if (value)
        *value = inner(n, q, sigma);
    r = 0;
out:
    free(w);
    free(u);
    free(f);
    free(sp);
    free(c);
    free(v);
    free(cm);
    free(t);
    return r;
}
