/*
 * DESIGN: the count sketch of MATH.md section 2.
 *
 * Keys are computed for a chunk of GRIST__CHUNK elements in a loop of pure
 * 32-bit integer arithmetic with no dependence between iterations, which gcc
 * vectorizes (SSE2/AVX2 pmulld); the scatter into the m buckets follows as a
 * second loop over the chunk. This is the split measured in MATH.md (2.8 ms for
 * 5.27M floats on one core); a fused loop does not vectorize the hash.
 * Called from any thread; no state.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "grist/error.h"
#include "grist/sketch.h"

/* Chunk length: keys and values of a chunk (1.5 KiB) stay in L1 next to the
 * accumulator. Measured with tests/bench/client.sh (kernels/README.md): 2048
 * was 1.6x slower, its 8 KiB stack arrays aliasing the accumulator modulo
 * 4 KiB in the store buffer. */
#define GRIST__CHUNK 128u

int grist_sketch_check_dim(uint32_t m)
{
    if (m < GRIST_SKETCH_MIN_DIM || m > GRIST_SKETCH_MAX_DIM || (m & (m - 1)) != 0)
        return GRIST_EBADDIM;
    return 0;
}

static int check_args(const void *x, uint64_t n, uint64_t offset, const double *acc, uint32_t m)
{
    int r = grist_sketch_check_dim(m);
    if (r < 0)
        return r;
    if (n > 0 && (x == NULL || acc == NULL))
        return -EINVAL;
    if (offset > UINT32_MAX || n > (uint64_t)UINT32_MAX + 1 - offset)
        return GRIST_ETOOBIG;
    return 0;
}

/* Keys of elements base .. base + len - 1; vectorizable. The 32-bit
 * multiplies need SSE4.1/AVX2 (pmulld) to vectorize, so an AVX2 clone is
 * built next to the baseline one and picked at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GRIST__CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GRIST__CLONES
#endif
GRIST__CLONES
static void chunk_keys(uint32_t seed_p, uint32_t base, uint32_t len, uint32_t *restrict key)
{
    for (uint32_t k = 0; k < len; k++)
        key[k] = grist_sketch_key(base + k, seed_p);
}

/* The 16 partial sums of squares, reduced in a fixed order. */
static double sum16(const double *v)
{
    double s = 0.0;
    for (uint32_t j = 0; j < 16; j++)
        s += v[j];
    return s;
}

/* Per chunk: keys (vectorized), signed values with the sign applied without a
 * branch (the sign is a random bit: a branch would mispredict half the time),
 * the squared norm in 16 partial sums (vectorized), then the scatter. */
#define GRIST__SKETCH_BODY(VALUE_EXPR)                                              \
    uint32_t key[GRIST__CHUNK];                                                     \
    double val[GRIST__CHUNK];                                                       \
    const uint32_t mask = m - 1;                                                    \
    double sqv[16] = {0};                                                           \
    for (uint64_t c0 = 0; c0 < n; c0 += GRIST__CHUNK) {                             \
        uint32_t len = (uint32_t)(n - c0 < GRIST__CHUNK ? n - c0 : GRIST__CHUNK);   \
        chunk_keys(seed_p, (uint32_t)(offset + c0), len, key);                      \
        for (uint32_t k = 0; k < len; k++) {                                        \
            const uint64_t i = c0 + k;                                              \
            val[k] = (VALUE_EXPR);                                                  \
        }                                                                           \
        uint32_t k = 0;                                                             \
        for (; k + 16 <= len; k += 16)                                              \
            for (uint32_t j = 0; j < 16; j++)                                       \
                sqv[j] += val[k + j] * val[k + j];                                  \
        for (; k < len; k++)                                                        \
            sqv[k & 15] += val[k] * val[k];                                         \
        for (k = 0; k < len; k++) {                                                 \
            /* flip the sign bit of val when the key's top bit is set */            \
            uint64_t bits;                                                          \
            memcpy(&bits, &val[k], 8);                                              \
            bits ^= (uint64_t)(key[k] >> 31) << 63;                                 \
            memcpy(&val[k], &bits, 8);                                              \
        }                                                                           \
        for (k = 0; k < len; k++)                                                   \
            acc[key[k] & mask] += val[k];                                           \
    }                                                                               \
    if (sq_norm)                                                                    \
        *sq_norm += sum16(sqv);

/* float32 input: the sign goes onto the float's sign bit (32-bit lanes, 8 per
 * AVX2 vector) before widening, so no 64-bit sign arithmetic is needed. */
GRIST__CLONES
int grist_sketch_accum_f32(uint32_t seed_p, const float *x, uint64_t n, uint64_t offset,
                           double *acc, uint32_t m, double *sq_norm)
{
    int r = check_args(x, n, offset, acc, m);
    if (r < 0)
        return r;
    uint32_t key[GRIST__CHUNK];
    double val[GRIST__CHUNK];
    const uint32_t mask = m - 1;
    double sqv[16] = {0};
    for (uint64_t c0 = 0; c0 < n; c0 += GRIST__CHUNK) {
        const uint32_t len = (uint32_t)(n - c0 < GRIST__CHUNK ? n - c0 : GRIST__CHUNK);
        const float *restrict xc = x + c0;
        chunk_keys(seed_p, (uint32_t)(offset + c0), len, key);
        /* vectorized: sign onto the float's sign bit, widen, bucket index */
        for (uint32_t k = 0; k < len; k++) {
            uint32_t bits;
            float f;
            memcpy(&bits, &xc[k], 4);
            bits ^= key[k] & 0x80000000u;
            memcpy(&f, &bits, 4);
            val[k] = f;
            key[k] &= mask;
        }
        /* sum of squares in 16 lanes (four AVX2 accumulators: one would be
         * bound by the add latency, a cycle per element) */
        uint32_t k = 0;
        for (; k + 16 <= len; k += 16)
            for (uint32_t j = 0; j < 16; j++)
                sqv[j] += val[k + j] * val[k + j];
        for (; k < len; k++)
            sqv[k & 15] += val[k] * val[k];
        /* the scatter: one load-add-store per element, the floor of this kernel */
        for (k = 0; k < len; k++)
            acc[key[k]] += val[k];
    }
    if (sq_norm)
        *sq_norm += sum16(sqv);
    return 0;
}

GRIST__CLONES
int grist_sketch_accum_f64(uint32_t seed_p, const double *x, uint64_t n, uint64_t offset,
                           double *acc, uint32_t m, double *sq_norm)
{
    int r = check_args(x, n, offset, acc, m);
    if (r < 0)
        return r;
    GRIST__SKETCH_BODY(x[i])
    return 0;
}

GRIST__CLONES
int grist_sketch_accum_adam_f32(uint32_t seed_p, const float *g, const float *v, uint64_t n,
                                uint64_t offset, double v_scale, double eps, double *acc,
                                uint32_t m, double *sq_norm)
{
    int r = check_args(g, n, offset, acc, m);
    if (r < 0)
        return r;
    if ((n > 0 && v == NULL) || !(eps > 0.0) || !(v_scale > 0.0))
        return -EINVAL;
    /* x_i = g_i / sqrt(P_i), P_i = sqrt(v_i * v_scale) + eps; x_i^2 = g_i^2 / P_i. */
    GRIST__SKETCH_BODY((double)g[i] / sqrt(sqrt((double)v[i] * v_scale) + eps))
    return 0;
}

void grist_sketch_finish(const double *acc, uint32_t m, float *out)
{
    for (uint32_t b = 0; b < m; b++)
        out[b] = (float)acc[b];
}
