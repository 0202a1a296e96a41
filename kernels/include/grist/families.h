/*
 * The stateless optimal optimizers of MATH.md section 7, solved in closed
 * form on a symmetric positive semi-definite matrix Sigma (the sketch second
 * moment). Values are reported at radius B = 1; they scale linearly with B.
 */
#ifndef GRIST_FAMILIES_H
#define GRIST_FAMILIES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct grist_backend;

/** Diagnostics of one Sigma (all computed after clipping eigenvalues at 0). */
struct grist_families {
    double trace; /**< tr Sigma */
    double frobenius; /**< |Sigma|_F */
    double trace_sqrt; /**< tr Sigma^1/2 */
    double lambda_max; /**< largest eigenvalue */
    double effective_rank; /**< (tr Sigma)^2 / |Sigma|_F^2, 0 for Sigma = 0 */
    double value_frobenius; /**< max <Q,Sigma> over |Q|_F <= 1 */
    double value_spectral; /**< over |Q|_op <= 1 */
    double value_isotropic; /**< over tr(Q Sigma Q) <= 1 */
    double value_lyapunov; /**< over tr(Q C Q) <= 1, C = diag(Sigma) + delta I */
    double value_whitened; /**< over |Sigma^1/2 Q|_op <= 1 */
    double value_diagonal; /**< over diagonal Q with q_i sqrt(s_i) <= 1 */
};

/** The families, in the order of MATH.md's table. */
enum grist_family {
    GRIST_FAMILY_FROBENIUS,
    GRIST_FAMILY_SPECTRAL,
    GRIST_FAMILY_ISOTROPIC,
    GRIST_FAMILY_LYAPUNOV,
    GRIST_FAMILY_WHITENED,
    GRIST_FAMILY_DIAGONAL,
};

/** Guard of MATH.md section 8 before dividing. */
#define GRIST_TINY 1e-30

/**
 * Optimal Q* of a family at radius B, as a dense n x n column-major matrix
 * (host memory, plain C; for tests and small n). Sigma is full (both
 * triangles). For LYAPUNOV, metric is the n x n metric C (symmetric positive
 * definite), or NULL for C = diag(Sigma) + delta I.
 *
 * @param q   n*n doubles, written.
 * @param value if not NULL, receives <Q*, Sigma>.
 * @return 0; -EINVAL for bad arguments; -ENOMEM; GRIST_ELAPACK if an
 *         eigendecomposition fails.
 */
int grist_family_solve(enum grist_family fam, uint32_t n, const double *sigma, const double *metric,
                       double radius, double delta, double *q, double *value);

/**
 * Symmetric eigendecomposition with the plain-C reference (cyclic Jacobi).
 * a is n x n column-major and full; w receives ascending eigenvalues, u
 * (optional) the eigenvectors as columns.
 *
 * @return 0; -ENOMEM; GRIST_ELAPACK when it does not converge.
 */
int grist_eig_ref(uint32_t n, const double *a, double *w, double *u);

#ifdef __cplusplus
}
#endif

#endif /* GRIST_FAMILIES_H */
