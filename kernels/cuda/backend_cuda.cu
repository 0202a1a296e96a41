/*
 * DESIGN: the cuda backend (cuBLAS + cuSOLVER). Every array of a statistics
 * state lives in device memory; per step only the m-double sketch goes up
 * and 2K + L doubles come back. One backend object owns one stream, one
 * cuBLAS handle and one cuSOLVER handle and is used by one thread (the
 * daemon's compute thread). Every CUDA, cuBLAS and cuSOLVER status is
 * translated to GRIST_EDEVICE in exactly one place, the CK() macro below.
 * Slots:
 *   momentum       fused kernel, one block per candidate, block reduction
 *   rowdots        cublasDgemv
 *   syrk           cublasDsyrk (lower)
 *   syevd          cusolverDnDsyevd
 *   syevd_batched  cusolverDnDsyevjBatched for n <= 32, else syevd per matrix
 *   families       syevd + column scaling + cublasDsyrk + a reduction kernel
 */
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <cusolverDn.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend_impl.h"
#include "grist/error.h"
}

struct cuda_ctx {
    cudaStream_t stream;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    double *scratch; /* device scratch, grown on demand */
    size_t scratch_bytes;
    int *info; /* device int */
};

static inline bool ok_(cudaError_t e)
{
    return e == cudaSuccess;
}
static inline bool ok_(cublasStatus_t e)
{
    return e == CUBLAS_STATUS_SUCCESS;
}
static inline bool ok_(cusolverStatus_t e)
{
    return e == CUSOLVER_STATUS_SUCCESS;
}

/* The one translation point of device errors. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        if (!ok_(call))                                                                            \
            return GRIST_EDEVICE;                                                                  \
    } while (0)

static struct cuda_ctx *ctx_of(struct grist_backend *be)
{
    return (struct cuda_ctx *)be->priv;
}

static int scratch(struct cuda_ctx *c, size_t bytes, double **out)
{
    if (bytes > c->scratch_bytes) {
        if (c->scratch)
            cudaFree(c->scratch);
        c->scratch = NULL;
        c->scratch_bytes = 0;
        CK(cudaMalloc((void **)&c->scratch, bytes));
        c->scratch_bytes = bytes;
    }
    *out = c->scratch;
    return 0;
}

static void cuda_fini(struct grist_backend *be)
{
    struct cuda_ctx *c = ctx_of(be);
    if (!c)
        return;
    if (c->scratch)
        cudaFree(c->scratch);
    if (c->info)
        cudaFree(c->info);
    if (c->solver)
        cusolverDnDestroy(c->solver);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
    be->priv = NULL;
}

static int cuda_init(struct grist_backend *be)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0)
        return GRIST_ENOBACKEND;
    struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    be->priv = c;
    int r = GRIST_EDEVICE;
    if (cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess)
        goto fail;
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS)
        goto fail;
    if (cusolverDnCreate(&c->solver) != CUSOLVER_STATUS_SUCCESS ||
        cusolverDnSetStream(c->solver, c->stream) != CUSOLVER_STATUS_SUCCESS)
        goto fail;
    if (cudaMalloc((void **)&c->info, 64 * sizeof(int)) != cudaSuccess)
        goto fail;
    return 0;
fail:
    cuda_fini(be);
    return r;
}

static void *cuda_alloc(struct grist_backend *be, size_t bytes)
{
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess)
        return NULL;
    if (cudaMemsetAsync(p, 0, bytes, ctx_of(be)->stream) != cudaSuccess ||
        cudaStreamSynchronize(ctx_of(be)->stream) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_free(struct grist_backend *be, void *p)
{
    (void)be;
    cudaFree(p);
}

static int cuda_upload(struct grist_backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_ctx *c = ctx_of(be);
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    CK(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cuda_download(struct grist_backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_ctx *c = ctx_of(be);
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CK(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cuda_zero(struct grist_backend *be, void *dst, size_t bytes)
{
    struct cuda_ctx *c = ctx_of(be);
    CK(cudaMemsetAsync(dst, 0, bytes, c->stream));
    CK(cudaStreamSynchronize(c->stream));
    return 0;
}

#define THREADS 256

__device__ static double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s)
            sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__global__ static void k_momentum(int m, const double *beta, double *V, const double *s,
                                  double *out /* 2K: dots then energy */, int K)
{
    __shared__ double sh[THREADS];
    const int j = blockIdx.x;
    const double b = beta[j];
    double *v = V + (size_t)j * m;
    double d = 0.0, e = 0.0;
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const double x = b * v[i] + s[i];
        v[i] = x;
        d += s[i] * x;
        e += x * x;
    }
    d = block_sum(d, sh);
    e = block_sum(e, sh);
    if (threadIdx.x == 0) {
        out[j] = d;
        out[K + j] = e;
    }
}

static int cuda_momentum(struct grist_backend *be, int K, int m, const double *beta_host, double *V,
                         const double *s, double *dots, double *energy)
{
    struct cuda_ctx *c = ctx_of(be);
    double *buf;
    if (scratch(c, (size_t)3 * K * sizeof(double), &buf) < 0)
        return GRIST_EDEVICE;
    double *beta_d = buf, *out_d = buf + K;
    CK(cudaMemcpyAsync(beta_d, beta_host, K * sizeof(double), cudaMemcpyHostToDevice, c->stream));
    k_momentum<<<K, THREADS, 0, c->stream>>>(m, beta_d, V, s, out_d, K);
    CK(cudaGetLastError());
    double host[2 * 64];
    CK(cudaMemcpyAsync(host, out_d, 2 * K * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CK(cudaStreamSynchronize(c->stream));
    memcpy(dots, host, K * sizeof(double));
    memcpy(energy, host + K, K * sizeof(double));
    return 0;
}

static int cuda_rowdots(struct grist_backend *be, int L, int m, const double *rows, const double *s,
                        double *out)
{
    struct cuda_ctx *c = ctx_of(be);
    double *out_d;
    if (scratch(c, (size_t)L * sizeof(double), &out_d) < 0)
        return GRIST_EDEVICE;
    const double one = 1.0, zero = 0.0;
    /* rows is L x m row-major = m x L column-major; out = rows^T s */
    CK(cublasDgemv(c->blas, CUBLAS_OP_T, m, L, &one, rows, m, s, 1, &zero, out_d, 1));
    CK(cudaMemcpyAsync(out, out_d, L * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CK(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cuda_syrk(struct grist_backend *be, int n, int k, double alpha, const double *A,
                     double beta, double *C)
{
    struct cuda_ctx *c = ctx_of(be);
    CK(cublasDsyrk(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &alpha, A, n, &beta, C, n));
    CK(cudaStreamSynchronize(c->stream));
    return 0;
}

/* Eigendecomposition into device arrays a_d (vectors, n x n) and w_d. */
static int eig_dev(struct cuda_ctx *c, int n, const double *A, double *a_d, double *w_d,
                   int vectors)
{
    const size_t nn = (size_t)n * n;
    CK(cudaMemcpyAsync(a_d, A, nn * sizeof(double), cudaMemcpyDeviceToDevice, c->stream));
    const cusolverEigMode_t jobz = vectors ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
    int lwork = 0;
    CK(cusolverDnDsyevd_bufferSize(c->solver, jobz, CUBLAS_FILL_MODE_LOWER, n, a_d, n, w_d,
                                   &lwork));
    double *work = NULL;
    CK(cudaMallocAsync((void **)&work, (size_t)lwork * sizeof(double), c->stream));
    cusolverStatus_t st = cusolverDnDsyevd(c->solver, jobz, CUBLAS_FILL_MODE_LOWER, n, a_d, n, w_d,
                                           work, lwork, c->info);
    int info = 0;
    cudaMemcpyAsync(&info, c->info, sizeof(int), cudaMemcpyDeviceToHost, c->stream);
    cudaFreeAsync(work, c->stream);
    CK(cudaStreamSynchronize(c->stream));
    CK(st);
    return info == 0 ? 0 : GRIST_ELAPACK;
}

static int cuda_syevd(struct grist_backend *be, int n, const double *A, double *w, double *U)
{
    struct cuda_ctx *c = ctx_of(be);
    const size_t nn = (size_t)n * n;
    double *buf;
    if (scratch(c, (nn + n) * sizeof(double), &buf) < 0)
        return GRIST_EDEVICE;
    int r = eig_dev(c, n, A, buf, buf + nn, U != NULL);
    if (r < 0)
        return r;
    CK(cudaMemcpyAsync(w, buf + nn, n * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    if (U)
        CK(cudaMemcpyAsync(U, buf, nn * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CK(cudaStreamSynchronize(c->stream));
    return 0;
}

static int cuda_syevd_batched(struct grist_backend *be, int n, int batch, const double *A,
                              double *w, double *U)
{
    struct cuda_ctx *c = ctx_of(be);
    const size_t nn = (size_t)n * n;
    if (n > 32) {
        for (int b = 0; b < batch; b++) {
            int r = cuda_syevd(be, n, A + b * nn, w + (size_t)b * n, U ? U + b * nn : NULL);
            if (r < 0)
                return r;
        }
        return 0;
    }
    double *buf;
    if (scratch(c, (batch * nn + (size_t)batch * n) * sizeof(double), &buf) < 0)
        return GRIST_EDEVICE;
    double *a_d = buf, *w_d = buf + batch * nn;
    int *info_d = NULL;
    CK(cudaMallocAsync((void **)&info_d, batch * sizeof(int), c->stream));
    CK(cudaMemcpyAsync(a_d, A, batch * nn * sizeof(double), cudaMemcpyDeviceToDevice, c->stream));
    syevjInfo_t params;
    CK(cusolverDnCreateSyevjInfo(&params));
    cusolverDnXsyevjSetTolerance(params, 1e-14);
    cusolverDnXsyevjSetMaxSweeps(params, 100);
    const cusolverEigMode_t jobz = U ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
    int lwork = 0;
    cusolverStatus_t st =
        cusolverDnDsyevjBatched_bufferSize(c->solver, jobz, CUBLAS_FILL_MODE_LOWER, n, a_d, n, w_d,
                                           &lwork, params, batch);
    double *work = NULL;
    if (st == CUSOLVER_STATUS_SUCCESS &&
        cudaMallocAsync((void **)&work, (size_t)lwork * sizeof(double), c->stream) == cudaSuccess)
        st = cusolverDnDsyevjBatched(c->solver, jobz, CUBLAS_FILL_MODE_LOWER, n, a_d, n, w_d, work,
                                     lwork, info_d, params, batch);
    else if (st == CUSOLVER_STATUS_SUCCESS)
        st = CUSOLVER_STATUS_ALLOC_FAILED;
    int bad = 0;
    if (st == CUSOLVER_STATUS_SUCCESS) {
        int *info = (int *)malloc(batch * sizeof(int));
        if (info &&
            cudaMemcpyAsync(info, info_d, batch * sizeof(int), cudaMemcpyDeviceToHost, c->stream) ==
                cudaSuccess &&
            cudaStreamSynchronize(c->stream) == cudaSuccess) {
            for (int b = 0; b < batch; b++)
                bad |= info[b] != 0;
        } else {
            bad = 1;
        }
        free(info);
    }
    if (work)
        cudaFreeAsync(work, c->stream);
    cudaFreeAsync(info_d, c->stream);
    cusolverDnDestroySyevjInfo(params);
    CK(st);
    if (bad)
        return GRIST_ELAPACK;
    CK(cudaMemcpyAsync(w, w_d, (size_t)batch * n * sizeof(double), cudaMemcpyDeviceToHost,
                       c->stream));
    if (U)
        CK(cudaMemcpyAsync(U, a_d, batch * nn * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CK(cudaStreamSynchronize(c->stream));
    return 0;
}

__global__ static void k_scale_cols(int n, double *U, const double *w)
{
    const int k = blockIdx.y;
    const double f = w[k] > 0.0 ? sqrt(w[k]) : 0.0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        U[i + (size_t)k * n] *= f;
}

/* acc[0] += sum_i sqrt(s_i); acc[1] += sum_{i,j} sp_ij^2 / (s_i + s_j + 2 delta),
 * reading the lower triangle of sp. */
__global__ static void k_lyap(int n, const double *sp, double delta, double *acc)
{
    __shared__ double sh[THREADS];
    const size_t total = (size_t)n * n;
    double ly = 0.0, dg = 0.0;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % n), j = (int)(idx / n);
        if (i < j)
            continue;
        const double si = sp[i + (size_t)i * n], sj = sp[j + (size_t)j * n];
        const double x = sp[idx], den = si + sj + 2.0 * delta;
        if (den > 1e-30)
            ly += (i == j ? 1.0 : 2.0) * x * x / den;
        if (i == j)
            dg += sqrt(si > 0.0 ? si : 0.0);
    }
    ly = block_sum(ly, sh);
    dg = block_sum(dg, sh);
    if (threadIdx.x == 0) {
        atomicAdd(&acc[0], dg);
        atomicAdd(&acc[1], ly);
    }
}

static int cuda_families(struct grist_backend *be, int n, const double *C, double delta,
                         struct grist_families *out)
{
    struct cuda_ctx *c = ctx_of(be);
    const size_t nn = (size_t)n * n;
    double *buf;
    if (scratch(c, (2 * nn + n + 2) * sizeof(double), &buf) < 0)
        return GRIST_EDEVICE;
    double *u_d = buf, *sp_d = buf + nn, *w_d = buf + 2 * nn, *acc_d = w_d + n;
    int r = eig_dev(c, n, C, u_d, w_d, 1);
    if (r < 0)
        return r;
    dim3 grid((n + THREADS - 1) / THREADS, n);
    k_scale_cols<<<grid, THREADS, 0, c->stream>>>(n, u_d, w_d);
    CK(cudaGetLastError());
    const double one = 1.0, zero = 0.0;
    CK(cublasDsyrk(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, n, &one, u_d, n, &zero, sp_d,
                   n));
    CK(cudaMemsetAsync(acc_d, 0, 2 * sizeof(double), c->stream));
    int blocks = (int)((nn + THREADS - 1) / THREADS);
    if (blocks > 1024)
        blocks = 1024;
    k_lyap<<<blocks, THREADS, 0, c->stream>>>(n, sp_d, delta, acc_d);
    CK(cudaGetLastError());
    double acc[2];
    double *w = (double *)malloc(n * sizeof(double));
    if (!w)
        return -ENOMEM;
    cudaError_t e1 =
        cudaMemcpyAsync(acc, acc_d, 2 * sizeof(double), cudaMemcpyDeviceToHost, c->stream);
    cudaError_t e2 = cudaMemcpyAsync(w, w_d, n * sizeof(double), cudaMemcpyDeviceToHost, c->stream);
    cudaError_t e3 = cudaStreamSynchronize(c->stream);
    if (e1 != cudaSuccess || e2 != cudaSuccess || e3 != cudaSuccess) {
        free(w);
        return GRIST_EDEVICE;
    }
    grist__families_from_parts(n, w, acc[0], acc[1], out);
    free(w);
    return 0;
}

extern "C" int grist__backend_cuda_fill(struct grist_backend_ops *ops)
{
    memset(ops, 0, sizeof(*ops));
    ops->name = "cuda";
    ops->init = cuda_init;
    ops->fini = cuda_fini;
    ops->alloc = cuda_alloc;
    ops->free = cuda_free;
    ops->upload = cuda_upload;
    ops->download = cuda_download;
    ops->zero = cuda_zero;
    ops->momentum = cuda_momentum;
    ops->rowdots = cuda_rowdots;
    ops->syrk = cuda_syrk;
    ops->syevd = cuda_syevd;
    ops->syevd_batched = cuda_syevd_batched;
    ops->families = cuda_families;
    return 0;
}
