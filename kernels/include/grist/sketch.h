/*
 * The count sketch of MATH.md section 2, bit-exact to the specification.
 *
 * A sketch maps a group's flat gradient x (n elements) to m buckets:
 *   seed_p    = fmix32(job_seed ^ fmix32(group_index + 1))
 *   key(i)    = fmix32((i * 0x9E3779B1) ^ seed_p)
 *   bucket(i) = key(i) & (m - 1), sign(i) = key(i) >> 31 ? -1 : +1
 *   s[bucket(i)] += sign(i) * x_i
 * The functions accumulate into a caller-owned double array of m entries so
 * that a group made of several tensors is sketched tensor by tensor (pass
 * each tensor's element offset within the group). Sums are in double; the
 * caller converts the finished accumulator to float with
 * grist_sketch_finish(). All functions are thread-safe and allocate nothing.
 */
#ifndef GRIST_SKETCH_H
#define GRIST_SKETCH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The hash helpers below are also compiled for the GPU (kernels/cuda/sketch_cuda.cu
 * includes this header), so the C and CUDA sketches share one definition. */
#ifdef __CUDACC__
#define GRIST_HD __host__ __device__
#else
#define GRIST_HD
#endif

/** Smallest and largest sketch dimension m. */
#define GRIST_SKETCH_MIN_DIM 64u
#define GRIST_SKETCH_MAX_DIM 65536u

/** The finalizer of MurmurHash3, as used by the sketch. */
GRIST_HD static inline uint32_t grist_fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/**
 * The job's sketch seed, derived from its id alone (docs/MATH.md section 2):
 * h = FNV-1a-64(job_id), job_seed = fmix32(lo32(h) ^ hi32(h)), 0 mapped to 1.
 * Every rank and every daemon computes the same value without a round trip,
 * so a worker sketches from its first step, before any Welcome.
 */
static inline uint32_t grist_sketch_job_seed(const char *job_id)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *job_id; job_id++) {
        h ^= (unsigned char)*job_id;
        h *= 0x100000001b3ull;
    }
    const uint32_t s = grist_fmix32((uint32_t)h ^ (uint32_t)(h >> 32));
    return s ? s : 1u;
}

/** Per-group seed of the sketch: fmix32(job_seed ^ fmix32(group_index + 1)). */
GRIST_HD static inline uint32_t grist_sketch_seed(uint32_t job_seed, uint32_t group_index)
{
    return grist_fmix32(job_seed ^ grist_fmix32(group_index + 1u));
}

/** Key of element i of a group with seed seed_p. */
GRIST_HD static inline uint32_t grist_sketch_key(uint32_t i, uint32_t seed_p)
{
    return grist_fmix32((i * 0x9E3779B1u) ^ seed_p);
}

/**
 * The two sketch kinds (docs/MATH.md section 2.1). A job uses one; it is
 * named in the worker's Hello (SketchKind in proto/grist/v1/grist.proto).
 *  - GRIST_SKETCH_HASHED: every element hashed to its own bucket (the first
 *    definition; the default of a Hello that names no kind).
 *  - GRIST_SKETCH_BLOCK: the group is cut into runs of GRIST_SKETCH_BLOCK_LEN
 *    consecutive elements; each run lands on consecutive buckets from a
 *    random rotation, each element keeps a random sign. The adds are
 *    contiguous (SIMD), the guarantees of section 2.2 are the same.
 */
enum grist_sketch_kind { GRIST_SKETCH_HASHED = 0, GRIST_SKETCH_BLOCK = 1 };

/** Elements per run of the block sketch; also the smallest covariance fold
 * it allows (a fold below it would make elements of one run collide). */
#define GRIST_SKETCH_BLOCK_LEN 64u

/** Block sketch: rotation key of run b = i / 64 (bucket of its first element,
 * before the mask). */
GRIST_HD static inline uint32_t grist_sketch_block_rot(uint32_t b, uint32_t seed_p)
{
    return grist_fmix32((b * 0xC2B2AE3Du) ^ seed_p ^ 0x27D4EB2Fu);
}

/** Block sketch: sign word of elements 32w .. 32w + 31; bit (i mod 32) set
 * means sign(i) = -1. */
GRIST_HD static inline uint32_t grist_sketch_block_signs(uint32_t w, uint32_t seed_p)
{
    return grist_fmix32((w * 0x9E3779B1u) ^ seed_p ^ 0x165667B1u);
}

/** Block sketch: bucket and sign of element i (the per-element definition;
 * the kernels compute whole runs at once). */
GRIST_HD static inline uint32_t grist_sketch_block_bucket(uint32_t i, uint32_t seed_p, uint32_t m)
{
    return (grist_sketch_block_rot(i >> 6, seed_p) + (i & 63u)) & (m - 1u);
}
GRIST_HD static inline int grist_sketch_block_negative(uint32_t i, uint32_t seed_p)
{
    return (int)((grist_sketch_block_signs(i >> 5, seed_p) >> (i & 31u)) & 1u);
}

/** Block sketch sampling (docs/MATH.md 2.1): with `sample` = N (1, 4, 16 or
 * 64) a run b is sketched only when the top log2 N bits of its keep hash are
 * 0, i.e. with probability 1/N, the same runs at every step; the finished
 * accumulator is then scaled by sqrt(N) (grist_sketch_unsample), so that
 * E<Sx, Sy> = x.y still holds. N = 1 keeps every run. */
#define GRIST_SKETCH_SAMPLE_MAX 64u
GRIST_HD static inline int grist_sketch_block_keep(uint32_t b, uint32_t seed_p, uint32_t sample)
{
    if (sample <= 1u)
        return 1;
    const uint32_t bits = sample == 4u ? 2u : sample == 16u ? 4u : 6u;
    return (grist_fmix32((b * 0x85EBCA77u) ^ seed_p ^ 0x61C88647u) >> (32u - bits)) == 0u;
}

/** 0 when sample is 1, 4, 16 or 64; -EINVAL otherwise. */
int grist_sketch_check_sample(uint32_t sample);

/** The sampling a group of n elements gets by default with sketch dimension m:
 * the largest N in {1, 4, 16} that still sketches at least m runs (64 m
 * elements), so the sampling adds at most about half the sketch's own
 * variance bound to an inner product whose energy is spread over the group
 * (docs/MATH.md 2.2). */
uint32_t grist_sketch_sample_auto(uint64_t n, uint32_t m);

/** Undo the sampling's 1/N on a finished accumulator: acc *= sqrt(N) and
 * *sq_norm *= N (powers of two: exact). sq_norm may be NULL. */
void grist_sketch_unsample(double *acc, uint32_t m, uint32_t sample, double *sq_norm);

/** "hashed" / "block" and back; parse returns 0 or -EINVAL. */
const char *grist_sketch_kind_name(enum grist_sketch_kind k);
int grist_sketch_kind_parse(const char *s, enum grist_sketch_kind *out);

/**
 * Check a sketch dimension.
 *
 * @return 0 when m is a power of two in [64, 65536], GRIST_EBADDIM otherwise.
 */
int grist_sketch_check_dim(uint32_t m);

/**
 * Accumulate the sketch of float32 elements x[0..n) of a group, which are the
 * group's elements offset .. offset + n - 1.
 *
 * @param seed_p  grist_sketch_seed(job_seed, group_index).
 * @param x       n values, read only; not retained.
 * @param n       element count of this chunk.
 * @param offset  index of x[0] within the group.
 * @param acc     m doubles, added to (caller zeroes it before the first chunk).
 * @param m       sketch dimension.
 * @param sq_norm if not NULL, sum of x_i^2 is added to *sq_norm.
 * @return 0; GRIST_EBADDIM for a bad m; GRIST_ETOOBIG when offset + n > 2^32;
 *         -EINVAL for NULL pointers with n > 0.
 */
int grist_sketch_accum_f32(uint32_t seed_p, const float *x, uint64_t n, uint64_t offset,
                           double *acc, uint32_t m, double *sq_norm);

/** As grist_sketch_accum_f32() for float64 input. */
int grist_sketch_accum_f64(uint32_t seed_p, const double *x, uint64_t n, uint64_t offset,
                           double *acc, uint32_t m, double *sq_norm);

/**
 * Accumulate the preconditioned sketch S (g ⊘ √P) of Adam's metric, with
 * P_i = sqrt(v_i * v_scale) + eps (v = exp_avg_sq, v_scale = 1 / (1 - beta2^t)).
 * *sq_norm receives sum g_i^2 / P_i (the norm in the metric P^-1).
 *
 * @return as grist_sketch_accum_f32(); -EINVAL also for eps <= 0 or v_scale <= 0.
 */
int grist_sketch_accum_adam_f32(uint32_t seed_p, const float *g, const float *v, uint64_t n,
                                uint64_t offset, double v_scale, double eps, double *acc,
                                uint32_t m, double *sq_norm);

/** The block sketch: as grist_sketch_accum_f32/_f64/_adam_f32, same
 * arguments and return values, GRIST_SKETCH_BLOCK's buckets and signs;
 * `sample` (1, 4, 16, 64; else -EINVAL) skips the runs that
 * grist_sketch_block_keep() leaves out (their elements add nothing, also not
 * to *sq_norm). */
int grist_sketch_block_accum_f32(uint32_t seed_p, uint32_t sample, const float *x, uint64_t n,
                                 uint64_t offset, double *acc, uint32_t m, double *sq_norm);
int grist_sketch_block_accum_f64(uint32_t seed_p, uint32_t sample, const double *x, uint64_t n,
                                 uint64_t offset, double *acc, uint32_t m, double *sq_norm);
int grist_sketch_block_accum_adam_f32(uint32_t seed_p, uint32_t sample, const float *g,
                                      const float *v, uint64_t n, uint64_t offset, double v_scale,
                                      double eps, double *acc, uint32_t m, double *sq_norm);

/**
 * Convert a finished accumulator to the float32 sketch sent on the wire.
 *
 * @param acc m doubles; @param out m floats (may not alias acc).
 */
void grist_sketch_finish(const double *acc, uint32_t m, float *out);

#ifdef __cplusplus
}
#endif

#endif /* GRIST_SKETCH_H */
