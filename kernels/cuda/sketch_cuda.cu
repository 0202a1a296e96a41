/*
 * DESIGN: the count sketch of MATH.md section 2 on the GPU, for worker
 * gradients that live in device memory (grist.torch calls it on a tensor's
 * data_ptr on the current stream). Same hash as sketch.c, bit for bit; the
 * accumulation order differs (atomics), so values agree to rounding, not
 * bit-exactly. For m <= 4096 each block accumulates into shared memory and
 * adds its m partial sums to the output once; larger m uses global atomics.
 * Only m doubles (and the squared norm) are written; nothing is copied to
 * the host here.
 */
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "grist/error.h"
#include "grist/sketch.h"
}

#define THREADS 256
#define SHARED_MAX 4096

/* kind: GRIST_SKETCH_HASHED or GRIST_SKETCH_BLOCK (the per-element
 * definitions of sketch.h; on the GPU every element is one thread either way). */
/* v (NULL: plain) makes the value Adam's metric one, x / sqrt(sqrt(v * v_scale) + eps),
 * in double as grist_sketch_*_adam_f32 computes it. */
__global__ static void k_sketch(uint32_t seed_p, const float *__restrict__ x,
                                const float *__restrict__ v, double v_scale, double eps, uint64_t n,
                                uint32_t offset, double *acc, uint32_t m, double *sq, int kind,
                                uint32_t sample)
{
    extern __shared__ double sh[];
    const int use_shared = m <= SHARED_MAX;
    if (use_shared)
        for (uint32_t b = threadIdx.x; b < m; b += blockDim.x)
            sh[b] = 0.0;
    __syncthreads();
    double s2 = 0.0;
    const uint32_t mask = m - 1;
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        const uint32_t gi = (uint32_t)(offset + i);
        uint32_t bucket;
        int neg;
        if (kind == GRIST_SKETCH_BLOCK) {
            if (!grist_sketch_block_keep(gi >> 6, seed_p, sample))
                continue;
            bucket = grist_sketch_block_bucket(gi, seed_p, m);
            neg = grist_sketch_block_negative(gi, seed_p);
        } else {
            const uint32_t key = grist_sketch_key(gi, seed_p);
            bucket = key & mask;
            neg = (int)(key >> 31);
        }
        const double xv =
            v ? (double)x[i] / sqrt(sqrt((double)v[i] * v_scale) + eps) : (double)x[i];
        s2 += xv * xv;
        const double sv = neg ? -xv : xv;
        if (use_shared)
            atomicAdd(&sh[bucket], sv);
        else
            atomicAdd(&acc[bucket], sv);
    }
    /* squared norm: warp shuffle, then one atomic per warp */
    for (int o = 16; o > 0; o >>= 1)
        s2 += __shfl_down_sync(0xffffffffu, s2, o);
    if ((threadIdx.x & 31) == 0)
        atomicAdd(sq, s2);
    __syncthreads();
    if (use_shared)
        for (uint32_t b = threadIdx.x; b < m; b += blockDim.x)
            if (sh[b] != 0.0)
                atomicAdd(&acc[b], sh[b]);
}

static int launch(uint32_t seed_p, const float *x_dev, const float *v_dev, double v_scale,
                  double eps, uint64_t n, uint64_t offset, double *acc_dev, uint32_t m,
                  double *sq_dev, void *stream, int kind, uint32_t sample)
{
    if (v_dev && !(v_scale > 0.0 && eps > 0.0))
        return -22; /* -EINVAL, as the host kernels */
    if (m < 64 || m > 65536 || (m & (m - 1)) != 0)
        return GRIST_EBADDIM;
    if (sample != 1 && sample != 4 && sample != 16 && sample != 64)
        return -22; /* -EINVAL */
    if (offset > 0xFFFFFFFFull || n > 0x100000000ull - offset)
        return GRIST_ETOOBIG;
    if (n == 0)
        return 0;
    int blocks = (int)((n + THREADS - 1) / THREADS);
    if (blocks > 1024)
        blocks = 1024;
    const size_t shmem = m <= SHARED_MAX ? m * sizeof(double) : 0;
    k_sketch<<<blocks, THREADS, shmem, (cudaStream_t)stream>>>(seed_p, x_dev, v_dev, v_scale, eps,
                                                               n, (uint32_t)offset, acc_dev, m,
                                                               sq_dev, kind, sample);
    return cudaGetLastError() == cudaSuccess ? 0 : GRIST_EDEVICE;
}

/*
 * Accumulate the sketch of n float32 at x_dev (device memory; group offset
 * `offset`) into acc_dev (m doubles, device) and *sq_dev (device), on the
 * CUDA stream `stream` (a cudaStream_t; NULL = the default stream).
 * Returns 0, GRIST_EBADDIM, GRIST_ETOOBIG or GRIST_EDEVICE. Asynchronous:
 * the caller synchronizes the stream before reading acc.
 */
extern "C" __attribute__((visibility("default"))) int
grist_sketch_cuda_f32(uint32_t seed_p, const float *x_dev, uint64_t n, uint64_t offset,
                      double *acc_dev, uint32_t m, double *sq_dev, void *stream)
{
    return launch(seed_p, x_dev, NULL, 0.0, 0.0, n, offset, acc_dev, m, sq_dev, stream,
                  GRIST_SKETCH_HASHED, 1);
}

/* The same for the block sketch (GRIST_SKETCH_BLOCK), 1 run in `sample`
 * (1, 4, 16, 64; else -EINVAL) as grist_sketch_block_keep(); the caller
 * unsamples the finished accumulator (grist_sketch_unsample). */
extern "C" __attribute__((visibility("default"))) int
grist_sketch_cuda_block_f32(uint32_t seed_p, uint32_t sample, const float *x_dev, uint64_t n,
                            uint64_t offset, double *acc_dev, uint32_t m, double *sq_dev,
                            void *stream)
{
    return launch(seed_p, x_dev, NULL, 0.0, 0.0, n, offset, acc_dev, m, sq_dev, stream,
                  GRIST_SKETCH_BLOCK, sample);
}

/* Adam's metric on the device (grist_sketch_accum_adam_f32 and
 * grist_sketch_block_accum_adam_f32 of sketch.h): g and v = exp_avg_sq in
 * device memory, only the m doubles and the norm are written; -EINVAL for
 * v_scale <= 0 or eps <= 0. */
extern "C" __attribute__((visibility("default"))) int
grist_sketch_cuda_adam_f32(uint32_t seed_p, const float *g_dev, const float *v_dev, uint64_t n,
                           uint64_t offset, double v_scale, double eps, double *acc_dev, uint32_t m,
                           double *sq_dev, void *stream)
{
    return launch(seed_p, g_dev, v_dev, v_scale, eps, n, offset, acc_dev, m, sq_dev, stream,
                  GRIST_SKETCH_HASHED, 1);
}

extern "C" __attribute__((visibility("default"))) int
grist_sketch_cuda_block_adam_f32(uint32_t seed_p, uint32_t sample, const float *g_dev,
                                 const float *v_dev, uint64_t n, uint64_t offset, double v_scale,
                                 double eps, double *acc_dev, uint32_t m, double *sq_dev,
                                 void *stream)
{
    return launch(seed_p, g_dev, v_dev, v_scale, eps, n, offset, acc_dev, m, sq_dev, stream,
                  GRIST_SKETCH_BLOCK, sample);
}
