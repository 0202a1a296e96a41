/* The CUDA sketches, both kinds (kernels/cuda/sketch_cuda.cu), against the C ones on
 * the same values: identical buckets and signs, values within 1e-9 relative
 * (double accumulation in both; only the order differs), plus argument
 * checks. Exits 77 (skip) without a CUDA device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "grist/error.h"
#include "grist/sketch.h"

int grist_sketch_cuda_f32(uint32_t seed_p, const float *x_dev, uint64_t n, uint64_t offset,
                          double *acc_dev, uint32_t m, double *sq_dev, void *stream);
int grist_sketch_cuda_block_f32(uint32_t seed_p, uint32_t sample, const float *x_dev, uint64_t n,
                                uint64_t offset, double *acc_dev, uint32_t m, double *sq_dev,
                                void *stream);
int grist_sketch_cuda_adam_f32(uint32_t seed_p, const float *g_dev, const float *v_dev, uint64_t n,
                               uint64_t offset, double v_scale, double eps, double *acc_dev,
                               uint32_t m, double *sq_dev, void *stream);
int grist_sketch_cuda_block_adam_f32(uint32_t seed_p, uint32_t sample, const float *g_dev,
                                     const float *v_dev, uint64_t n, uint64_t offset,
                                     double v_scale, double eps, double *acc_dev, uint32_t m,
                                     double *sq_dev, void *stream);

/* Adam's metric on the device against the host kernels: hashed, block, block 1 run in 16. */
static int check_adam(const float *x, const float *xd, uint64_t n, uint64_t off)
{
    const uint32_t m = 1024, seed = grist_sketch_seed(91, 1);
    const double vs = 1.0 / (1.0 - pow(0.999, 50)), eps = 1e-8;
    float *v = malloc(n * sizeof(float)), *vd;
    for (uint64_t i = 0; i < n; i++)
        v[i] = 1e-4f * (float)(1 + (i % 97));
    cudaMalloc((void **)&vd, n * sizeof(float));
    cudaMemcpy(vd, v, n * sizeof(float), cudaMemcpyHostToDevice);
    double *accd, *sqd, *ref = malloc(m * sizeof(double)), *got = malloc(m * sizeof(double));
    cudaMalloc((void **)&accd, m * sizeof(double));
    cudaMalloc((void **)&sqd, sizeof(double));
    int fails = 0;
    for (int k = 0; k < 3; k++) {
        const uint32_t sample = k == 2 ? 16u : 1u;
        double sq_ref = 0, sq = 0;
        memset(ref, 0, m * sizeof(double));
        cudaMemset(accd, 0, m * sizeof(double));
        cudaMemset(sqd, 0, sizeof(double));
        int r;
        if (k == 0) {
            grist_sketch_accum_adam_f32(seed, x, v, n, off, vs, eps, ref, m, &sq_ref);
            r = grist_sketch_cuda_adam_f32(seed, xd, vd, n, off, vs, eps, accd, m, sqd, NULL);
        } else {
            grist_sketch_block_accum_adam_f32(seed, sample, x, v, n, off, vs, eps, ref, m, &sq_ref);
            r = grist_sketch_cuda_block_adam_f32(seed, sample, xd, vd, n, off, vs, eps, accd, m,
                                                 sqd, NULL);
        }
        cudaDeviceSynchronize();
        cudaMemcpy(got, accd, m * sizeof(double), cudaMemcpyDeviceToHost);
        cudaMemcpy(&sq, sqd, sizeof(double), cudaMemcpyDeviceToHost);
        double worst = 0, scale = 0;
        for (uint32_t b = 0; b < m; b++) {
            worst = fmax(worst, fabs(got[b] - ref[b]));
            scale = fmax(scale, fabs(ref[b]));
        }
        const int ok = r == 0 && worst <= 1e-9 * scale && fabs(sq - sq_ref) <= 1e-9 * sq_ref;
        printf("adam %s/%-2u m %5u: max |cuda - c| %.3g of %.3g, sq %.12g vs %.12g: %s\n",
               k ? "block " : "hashed", sample, m, worst, scale, sq, sq_ref, ok ? "ok" : "FAIL");
        fails += !ok;
    }
    if (grist_sketch_cuda_adam_f32(seed, xd, vd, n, off, vs, 0.0, accd, m, sqd, NULL) != -22)
        fails++;
    cudaFree(vd);
    cudaFree(accd);
    cudaFree(sqd);
    free(v);
    free(ref);
    free(got);
    return fails;
}

int main(void)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const uint32_t ms[] = {64, 1024, 8192};
    const uint64_t n = 3000017, off = 12345;
    float *x = malloc(n * sizeof(float));
    for (uint64_t i = 0; i < n; i++)
        x[i] = (float)sin((double)i * 0.001) + 0.25f;
    float *xd;
    double *accd, *sqd;
    cudaMalloc((void **)&xd, n * sizeof(float));
    cudaMemcpy(xd, x, n * sizeof(float), cudaMemcpyHostToDevice);
    int fails = 0;
    for (int k = 0; k < 9; k++) {
        const int block = k >= 3; /* hashed, block, block sampled 1 run in 16 */
        const uint32_t sample = k >= 6 ? 16u : 1u;
        const uint32_t m = ms[k % 3], seed = grist_sketch_seed(77, 2);
        double *ref = calloc(m, sizeof(double)), *got = malloc(m * sizeof(double)), sq_ref = 0,
               sq = 0;
        if (block)
            grist_sketch_block_accum_f32(seed, sample, x, n, off, ref, m, &sq_ref);
        else
            grist_sketch_accum_f32(seed, x, n, off, ref, m, &sq_ref);
        cudaMalloc((void **)&accd, m * sizeof(double));
        cudaMalloc((void **)&sqd, sizeof(double));
        cudaMemset(accd, 0, m * sizeof(double));
        cudaMemset(sqd, 0, sizeof(double));
        int r = block ? grist_sketch_cuda_block_f32(seed, sample, xd, n, off, accd, m, sqd, NULL)
                      : grist_sketch_cuda_f32(seed, xd, n, off, accd, m, sqd, NULL);
        cudaDeviceSynchronize();
        cudaMemcpy(got, accd, m * sizeof(double), cudaMemcpyDeviceToHost);
        cudaMemcpy(&sq, sqd, sizeof(double), cudaMemcpyDeviceToHost);
        double worst = 0, scale = 0;
        for (uint32_t b = 0; b < m; b++) {
            worst = fmax(worst, fabs(got[b] - ref[b]));
            scale = fmax(scale, fabs(ref[b]));
        }
        const int ok = r == 0 && worst <= 1e-9 * scale && fabs(sq - sq_ref) <= 1e-9 * sq_ref;
        printf("%s/%-2u m %5u: max |cuda - c| %.3g of %.3g, sq %.12g vs %.12g: %s\n",
               block ? "block " : "hashed", sample, m, worst, scale, sq, sq_ref,
               ok ? "ok" : "FAIL");
        fails += !ok;
        cudaFree(accd);
        cudaFree(sqd);
        free(ref);
        free(got);
    }
    fails += check_adam(x, xd, n, off);
    /* buckets and signs: one element at a time */
    double *accd1;
    cudaMalloc((void **)&accd1, 64 * sizeof(double));
    cudaMalloc((void **)&sqd, sizeof(double));
    for (uint32_t i = 0; i < 50; i++) {
        const float one = 1.0f;
        float *d1;
        cudaMalloc((void **)&d1, sizeof(float));
        cudaMemcpy(d1, &one, sizeof(float), cudaMemcpyHostToDevice);
        cudaMemset(accd1, 0, 64 * sizeof(double));
        const uint32_t seed = grist_sketch_seed(5, 0), gi = i * 7919u;
        grist_sketch_cuda_f32(seed, d1, 1, gi, accd1, 64, sqd, NULL);
        double h[64];
        cudaMemcpy(h, accd1, sizeof(h), cudaMemcpyDeviceToHost);
        const uint32_t key = grist_sketch_key(gi, seed);
        const double want = (key >> 31) ? -1.0 : 1.0;
        if (h[key & 63] != want) {
            printf("element %u: bucket %u sign wrong\n", gi, key & 63);
            fails++;
        }
        cudaMemset(accd1, 0, 64 * sizeof(double));
        grist_sketch_cuda_block_f32(seed, 1, d1, 1, gi, accd1, 64, sqd, NULL);
        cudaMemcpy(h, accd1, sizeof(h), cudaMemcpyDeviceToHost);
        const uint32_t bb = grist_sketch_block_bucket(gi, seed, 64);
        if (h[bb] != (grist_sketch_block_negative(gi, seed) ? -1.0 : 1.0)) {
            printf("block element %u: bucket %u sign wrong\n", gi, bb);
            fails++;
        }
        cudaFree(d1);
    }
    if (grist_sketch_cuda_f32(1, xd, n, 0, accd1, 1000, sqd, NULL) != GRIST_EBADDIM)
        fails++;
    if (grist_sketch_cuda_f32(1, xd, (uint64_t)1 << 32, 1, accd1, 64, sqd, NULL) != GRIST_ETOOBIG)
        fails++;
    cudaFree(xd);
    printf("%s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
