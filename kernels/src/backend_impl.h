/*
 * DESIGN: the kernels vtable (internal; tests/kernels includes it).
 *
 * A backend is a table of slots. Array arguments named *_dev live in the
 * backend's memory space (host memory for ref and cpu, device memory for
 * cuda); *_host arguments are always host memory. Matrices are column-major;
 * symmetric matrices keep their lower triangle (i >= j) valid. The ref table
 * fills every slot with plain C (double accumulation); cpu starts from ref
 * and overrides the slots where OpenBLAS/LAPACKE are faster; cuda fills every
 * slot for device memory. A backend object is used by one thread at a time.
 */
#ifndef GRIST_BACKEND_IMPL_H
#define GRIST_BACKEND_IMPL_H

#include <stddef.h>

#include "grist/backend.h"
#include "grist/families.h"

/* An x86-64-v3 (AVX2 + FMA) clone next to the baseline one, picked at load
 * time. FMA contraction makes the clones differ at rounding level, so it
 * suits the statistics (checked against ref with tolerances), not the
 * bit-exact sketch (sketch.c clones for "avx2" only, without FMA). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GRIST__CLONES_V3 __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GRIST__CLONES_V3
#endif

/* Four doubles (GCC vector extension): the host loops' lane type. Loads and
 * stores go through memcpy, so no alignment is assumed. */
typedef double grist__v4d __attribute__((vector_size(32)));

struct grist_backend;

/* V_j <- beta_j V_j + s for j < K; dots_j = <s, V_j> and energy_j = |V_j|^2
 * after the update. V_dev is K x m (candidate j at V + j*m). */
typedef int grist_momentum_fn(struct grist_backend *be, int K, int m, const double *beta_host,
                              double *V_dev, const double *s_dev, double *dots_host,
                              double *energy_host);

/* out_k = <rows_k, s> for k < L; rows_dev is L x m (row k at rows + k*m). */
typedef int grist_rowdots_fn(struct grist_backend *be, int L, int m, const double *rows_dev,
                             const double *s_dev, double *out_host);

/* C <- beta C + alpha A A^T on the lower triangle; A is n x k, C is n x n. */
typedef int grist_syrk_fn(struct grist_backend *be, int n, int k, double alpha, const double *A_dev,
                          double beta, double *C_dev);

/* Eigendecomposition of the symmetric n x n A (lower triangle read); w gets
 * ascending eigenvalues, U (may be NULL) the eigenvectors as columns. A is
 * not modified. */
typedef int grist_syevd_fn(struct grist_backend *be, int n, const double *A_dev, double *w_host,
                           double *U_host);

/* batch independent problems, A_dev holds batch n x n matrices back to back;
 * w_host batch * n; U_host batch * n * n or NULL. */
typedef int grist_syevd_batched_fn(struct grist_backend *be, int n, int batch, const double *A_dev,
                                   double *w_host, double *U_host);

/* Families of MATH.md section 7 on the symmetric n x n C (lower read). */
typedef int grist_families_fn(struct grist_backend *be, int n, const double *C_dev, double delta,
                              struct grist_families *out_host);

struct grist_backend_ops {
    const char *name;
    int (*init)(struct grist_backend *be);
    void (*fini)(struct grist_backend *be);
    void (*set_threads)(struct grist_backend *be, int n);
    void *(*alloc)(struct grist_backend *be, size_t bytes); /* zeroed; NULL on failure */
    void (*free)(struct grist_backend *be, void *p);
    int (*upload)(struct grist_backend *be, void *dst_dev, const void *src_host, size_t bytes);
    int (*download)(struct grist_backend *be, void *dst_host, const void *src_dev, size_t bytes);
    int (*zero)(struct grist_backend *be, void *dst_dev, size_t bytes);

    grist_momentum_fn *momentum;
    grist_rowdots_fn *rowdots;
    grist_syrk_fn *syrk;
    grist_syevd_fn *syevd;
    grist_syevd_batched_fn *syevd_batched;
    grist_families_fn *families;
};

struct grist_backend {
    struct grist_backend_ops ops; /* a copy: cpu starts from ref's table */
    void *priv; /* backend-private context (handles, stream) */
};

/* Table fillers; each returns 0 when the backend is usable here. */
void grist__backend_ref_fill(struct grist_backend_ops *ops);
int grist__backend_cpu_fill(struct grist_backend_ops *ops);
int grist__backend_cuda_fill(struct grist_backend_ops *ops);

/* Shared host helpers. */
int grist__jacobi_eig(int n, const double *a_lower, double *w, double *u);
/* Diagnostics from ascending eigenvalues w (clipped here), the sum of
 * sqrt(s_i) over the diagonal s of the clipped Sigma and the Lyapunov sum
 * sum_ij Sigma_ij^2 / (s_i + s_j + 2 delta). Inline so that the cuda shared
 * library needs no symbol of the C library. */
static inline void grist__families_from_parts(int n, const double *w, double diag_sqrt, double lyap,
                                              struct grist_families *out)
{
    double tr = 0.0, fro2 = 0.0, trs = 0.0, lmax = 0.0;
    for (int i = 0; i < n; i++) {
        const double l = w[i] > 0.0 ? w[i] : 0.0;
        tr += l;
        fro2 += l * l;
        trs += __builtin_sqrt(l);
        if (l > lmax)
            lmax = l;
    }
    out->trace = tr;
    out->frobenius = __builtin_sqrt(fro2);
    out->trace_sqrt = trs;
    out->lambda_max = lmax;
    out->effective_rank = fro2 > GRIST_TINY ? tr * tr / fro2 : 0.0;
    out->value_frobenius = out->frobenius;
    out->value_spectral = tr;
    out->value_isotropic = __builtin_sqrt(tr);
    out->value_lyapunov = __builtin_sqrt(2.0 * lyap);
    out->value_whitened = trs;
    out->value_diagonal = diag_sqrt;
}
/* Diagnostics from ascending eigenvalues w (clipped here) and the full
 * clipped matrix sp = U diag(w+) U^T (n x n, both triangles). */
void grist__families_finish(int n, const double *w, const double *sp, double delta,
                            struct grist_families *out);
/* Host memory ops (ref and cpu). */
void *grist__host_alloc(struct grist_backend *be, size_t bytes);
void grist__host_free(struct grist_backend *be, void *p);
int grist__host_upload(struct grist_backend *be, void *dst, const void *src, size_t bytes);
int grist__host_download(struct grist_backend *be, void *dst, const void *src, size_t bytes);
int grist__host_zero(struct grist_backend *be, void *dst, size_t bytes);

/* Open a backend by exact name into *out (no auto). Used by tests to open
 * every available backend. */
int grist__backend_open_named(const char *name, struct grist_backend **out);

#endif /* GRIST_BACKEND_IMPL_H */
