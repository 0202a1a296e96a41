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

static int check_adam_args(const float *g, const float *v, uint64_t n, uint64_t offset,
                           double v_scale, double eps, const double *acc, uint32_t m)
{
    int r = check_args(g, n, offset, acc, m);
    if (r < 0)
        return r;
    if ((n > 0 && v == NULL) || !(eps > 0.0) || !(v_scale > 0.0))
        return -EINVAL;
    return 0;
}

/* Adam's metric, both kinds: x_i = g_i / sqrt(P_i), P_i = sqrt(v_i * v_scale)
 * + eps (so x_i^2 = g_i^2 / P_i). */
#define GRIST__ADAM_VALUE ((double)g[i] / sqrt(sqrt((double)v[i] * v_scale) + eps))

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
#define GRIST__SKETCH_BODY(VALUE_EXPR)                                                             \
    uint32_t key[GRIST__CHUNK];                                                                    \
    double val[GRIST__CHUNK];                                                                      \
    const uint32_t mask = m - 1;                                                                   \
    double sqv[16] = {0};                                                                          \
    for (uint64_t c0 = 0; c0 < n; c0 += GRIST__CHUNK) {                                            \
        uint32_t len = (uint32_t)(n - c0 < GRIST__CHUNK ? n - c0 : GRIST__CHUNK);                  \
        chunk_keys(seed_p, (uint32_t)(offset + c0), len, key);                                     \
        for (uint32_t k = 0; k < len; k++) {                                                       \
            const uint64_t i = c0 + k;                                                             \
            val[k] = (VALUE_EXPR);                                                                 \
        }                                                                                          \
        uint32_t k = 0;                                                                            \
        for (; k + 16 <= len; k += 16)                                                             \
            for (uint32_t j = 0; j < 16; j++)                                                      \
                sqv[j] += val[k + j] * val[k + j];                                                 \
        for (; k < len; k++)                                                                       \
            sqv[k & 15] += val[k] * val[k];                                                        \
        for (k = 0; k < len; k++) {                                                                \
            /* flip the sign bit of val when the key's top bit is set */                           \
            uint64_t bits;                                                                         \
            memcpy(&bits, &val[k], 8);                                                             \
            bits ^= (uint64_t)(key[k] >> 31) << 63;                                                \
            memcpy(&val[k], &bits, 8);                                                             \
        }                                                                                          \
        for (k = 0; k < len; k++)                                                                  \
            acc[key[k] & mask] += val[k];                                                          \
    }                                                                                              \
    if (sq_norm)                                                                                   \
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
    int r = check_adam_args(g, v, n, offset, v_scale, eps, acc, m);
    if (r < 0)
        return r;
    GRIST__SKETCH_BODY(GRIST__ADAM_VALUE)
    return 0;
}

void grist_sketch_finish(const double *acc, uint32_t m, float *out)
{
    for (uint32_t b = 0; b < m; b++)
        out[b] = (float)acc[b];
}

/* ---- the block sketch (docs/MATH.md section 2.1, GRIST_SKETCH_BLOCK) ----
 *
 * Per run of <= 64 elements inside one 64-element block: one rotation hash,
 * two sign words (a 64-bit mask, bit j = element j of the block), then the
 * run's values, signed by flipping the double's sign bit, are added to
 * consecutive buckets (one wrap at most, since m >= 64). No scatter: the adds
 * are contiguous loads and stores the compiler vectorizes. */

const char *grist_sketch_kind_name(enum grist_sketch_kind k)
{
    return k == GRIST_SKETCH_BLOCK ? "block" : k == GRIST_SKETCH_HASHED ? "hashed" : "?";
}

int grist_sketch_kind_parse(const char *s, enum grist_sketch_kind *out)
{
    if (s && strcmp(s, "hashed") == 0)
        *out = GRIST_SKETCH_HASHED;
    else if (s && strcmp(s, "block") == 0)
        *out = GRIST_SKETCH_BLOCK;
    else
        return -EINVAL;
    return 0;
}

int grist_sketch_check_sample(uint32_t sample)
{
    return sample == 1u || sample == 4u || sample == 16u || sample == 64u ? 0 : -EINVAL;
}

uint32_t grist_sketch_sample_auto(uint64_t n, uint32_t m)
{
    uint32_t s = 1;
    while (s < 16u && n / (4u * s) >= (uint64_t)GRIST_SKETCH_BLOCK_LEN * m)
        s *= 4u;
    return s;
}

void grist_sketch_unsample(double *acc, uint32_t m, uint32_t sample, double *sq_norm)
{
    if (sample <= 1u)
        return;
    const double r = sample == 4u ? 2.0 : sample == 16u ? 4.0 : 8.0;
    for (uint32_t b = 0; b < m; b++)
        acc[b] *= r;
    if (sq_norm)
        *sq_norm *= (double)sample;
}

/* The kept runs of a sampled block sketch, 64 runs per hash batch (the
 * loop vectorizes: one fmix32 per run would otherwise cost more than the
 * kept runs' adds at N = 16), and a walk to the next kept run. */
GRIST__CLONES
static uint64_t keep_mask64(uint32_t base, uint32_t seed_p, uint32_t sample)
{
    uint32_t h[64];
    const uint32_t shift = 32u - (sample == 4u ? 2u : sample == 16u ? 4u : 6u);
    for (uint32_t j = 0; j < 64; j++)
        h[j] = grist_fmix32(((base + j) * 0x85EBCA77u) ^ seed_p ^ 0x61C88647u) >> shift;
    uint64_t m = 0;
    for (uint32_t j = 0; j < 64; j++)
        m |= (uint64_t)(h[j] == 0u) << j;
    return m;
}

struct keep_walk {
    uint32_t base; /* first run of mask */
    int have;
    uint64_t mask; /* bit j: run base + j is kept */
};

/* The first kept run >= blk, or last + 1 when none up to last. */
static inline uint32_t next_kept(struct keep_walk *w, uint32_t blk, uint32_t last, uint32_t seed_p,
                                 uint32_t sample)
{
    while (blk <= last) {
        if (!w->have || blk < w->base || blk - w->base >= 64u) {
            w->base = blk;
            w->mask = keep_mask64(blk, seed_p, sample);
            w->have = 1;
        }
        const uint64_t bits = w->mask >> (blk - w->base);
        if (bits)
            return blk + (uint32_t)__builtin_ctzll(bits);
        blk = w->base + 64u;
    }
    return last + 1u;
}

/* Skip to the next kept run: c0 moves to its first element (or n). */
#define GRIST__SKIP_UNKEPT()                                                                       \
    if (sample > 1u) {                                                                             \
        const uint32_t kb = next_kept(&kw, blk, last, seed_p, sample);                             \
        if (kb != blk) {                                                                           \
            const uint64_t nx = ((uint64_t)kb << 6) - offset;                                      \
            c0 = nx < n ? nx : n;                                                                  \
            continue;                                                                              \
        }                                                                                          \
    }

/* dst[j] += val[j], j < len (contiguous; vectorized). */
static inline void run_add(double *restrict dst, const double *restrict val, uint32_t len)
{
    for (uint32_t j = 0; j < len; j++)
        dst[j] += val[j];
}

/* 16 partial sums of squares over a run (vectorized; fixed order). */
static inline void run_sq(const double *restrict val, uint32_t len, double *restrict sqv)
{
    uint32_t j = 0;
    for (; j + 16 <= len; j += 16)
        for (uint32_t l = 0; l < 16; l++)
            sqv[l] += val[j + l] * val[j + l];
    for (; j < len; j++)
        sqv[j & 15] += val[j] * val[j];
}

/* The signs of a 64-element block as +-1.0, from its two sign words. */
static inline void block_signs(uint32_t blk, uint32_t seed_p, double *restrict sgn)
{
    const uint32_t lo = grist_sketch_block_signs(2u * blk, seed_p);
    const uint32_t hi = grist_sketch_block_signs(2u * blk + 1u, seed_p);
    for (uint32_t t = 0; t < 32; t++) {
        sgn[t] = 1.0 - 2.0 * (double)((lo >> t) & 1u);
        sgn[t + 32] = 1.0 - 2.0 * (double)((hi >> t) & 1u);
    }
}

/* Per run (the part of one 64-element block inside [offset, offset + n)):
 * signed values, their squares, then one or two contiguous adds. The sign is
 * applied by multiplying with +-1.0, which is exact. (Float input has its
 * own loop with an AVX2 whole-block path: folding it into this macro as a
 * per-run hook measured 15 % slower in build/tests/bench-kernels --quick.) */
#define GRIST__BLOCK_BODY(VALUE_EXPR)                                                              \
    const uint32_t mask = m - 1;                                                                   \
    double sqv[16] = {0};                                                                          \
    double val[GRIST_SKETCH_BLOCK_LEN], sgn[GRIST_SKETCH_BLOCK_LEN];                               \
    struct keep_walk kw = {0};                                                                     \
    const uint32_t last = n ? (uint32_t)((offset + n - 1) >> 6) : 0;                               \
    for (uint64_t c0 = 0; c0 < n;) {                                                               \
        const uint32_t i0 = (uint32_t)(offset + c0);                                               \
        const uint32_t p = i0 & 63u, blk = i0 >> 6;                                                \
        const uint32_t len = (uint32_t)(n - c0 < 64u - p ? n - c0 : 64u - p);                      \
        GRIST__SKIP_UNKEPT()                                                                       \
        block_signs(blk, seed_p, sgn);                                                             \
        const double *restrict sg = sgn + p;                                                       \
        for (uint32_t j = 0; j < len; j++) {                                                       \
            const uint64_t i = c0 + j;                                                             \
            val[j] = (VALUE_EXPR)*sg[j];                                                           \
        }                                                                                          \
        run_sq(val, len, sqv);                                                                     \
        const uint32_t q = (grist_sketch_block_rot(blk, seed_p) + p) & mask;                       \
        const uint32_t first = len < m - q ? len : m - q;                                          \
        run_add(acc + q, val, first);                                                              \
        if (first < len)                                                                           \
            run_add(acc, val + first, len - first);                                                \
        c0 += len;                                                                                 \
    }                                                                                              \
    if (sq_norm)                                                                                   \
        *sq_norm += sum16(sqv);

/* Float sign masks of the 8 elements of one byte of a sign word: entry b,
 * lane l is bit l of b moved to bit 31. */
#define GRIST__T(b)                                                                                \
    {                                                                                              \
        ((b)&1u) << 31, ((b) >> 1 & 1u) << 31, ((b) >> 2 & 1u) << 31, ((b) >> 3 & 1u) << 31,       \
            ((b) >> 4 & 1u) << 31, ((b) >> 5 & 1u) << 31, ((b) >> 6 & 1u) << 31,                   \
            ((b) >> 7 & 1u) << 31                                                                  \
    }
#define GRIST__T4(b) GRIST__T(b), GRIST__T(b + 1), GRIST__T(b + 2), GRIST__T(b + 3)
#define GRIST__T16(b) GRIST__T4(b), GRIST__T4(b + 4), GRIST__T4(b + 8), GRIST__T4(b + 12)
#define GRIST__T64(b) GRIST__T16(b), GRIST__T16(b + 16), GRIST__T16(b + 32), GRIST__T16(b + 48)
static const uint32_t sign_tab[256][8] = {GRIST__T64(0u), GRIST__T64(64u), GRIST__T64(128u),
                                          GRIST__T64(192u)};

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GRIST__HAVE_AVX2_BLOCK 1
/* One whole block (64 elements, no wrap) with AVX2: per 8 floats, one table
 * row of sign masks, an xor, two widenings, the squares into 4 x 4 lanes
 * (lane j & 15, as the portable path) and two contiguous adds. */
__attribute__((target("avx2"))) static void block64_avx2(const float *x, uint32_t w0, uint32_t w1,
                                                         double *dst, double *sqv)
{
    __m256d sq[4];
    for (int l = 0; l < 4; l++)
        sq[l] = _mm256_loadu_pd(sqv + 4 * l);
    for (int k = 0; k < 8; k++) {
        const uint32_t w = k < 4 ? w0 : w1;
        const __m256i msk =
            _mm256_loadu_si256((const __m256i *)sign_tab[(w >> (8 * (k & 3))) & 255u]);
        const __m256 v = _mm256_xor_ps(_mm256_loadu_ps(x + 8 * k), _mm256_castsi256_ps(msk));
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        sq[(2 * k) & 3] = _mm256_add_pd(sq[(2 * k) & 3], _mm256_mul_pd(lo, lo));
        sq[(2 * k + 1) & 3] = _mm256_add_pd(sq[(2 * k + 1) & 3], _mm256_mul_pd(hi, hi));
        _mm256_storeu_pd(dst + 8 * k, _mm256_add_pd(_mm256_loadu_pd(dst + 8 * k), lo));
        _mm256_storeu_pd(dst + 8 * k + 4, _mm256_add_pd(_mm256_loadu_pd(dst + 8 * k + 4), hi));
    }
    for (int l = 0; l < 4; l++)
        _mm256_storeu_pd(sqv + 4 * l, sq[l]);
}

static int have_avx2(void)
{
    static int v = -1;
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return v;
}
#endif

/* float32 input, the hot path of every worker: the 64 sign masks of a block
 * come from 8 table rows, go onto the floats' sign bits (8 lanes per AVX2
 * vector), then the values are widened, squared and added. */
int grist_sketch_block_accum_f32(uint32_t seed_p, uint32_t sample, const float *x, uint64_t n,
                                 uint64_t offset, double *acc, uint32_t m, double *sq_norm)
{
    int r = check_args(x, n, offset, acc, m);
    if (r == 0)
        r = grist_sketch_check_sample(sample);
    if (r < 0)
        return r;
    const uint32_t mask = m - 1;
    double sqv[16] = {0};
    double val[GRIST_SKETCH_BLOCK_LEN];
    uint32_t sm[GRIST_SKETCH_BLOCK_LEN];
#ifdef GRIST__HAVE_AVX2_BLOCK
    const int avx2 = have_avx2();
#endif
    struct keep_walk kw = {0};
    const uint32_t last = n ? (uint32_t)((offset + n - 1) >> 6) : 0;
    for (uint64_t c0 = 0; c0 < n;) {
        const uint32_t i0 = (uint32_t)(offset + c0);
        const uint32_t p = i0 & 63u, blk = i0 >> 6;
        const uint32_t len = (uint32_t)(n - c0 < 64u - p ? n - c0 : 64u - p);
        GRIST__SKIP_UNKEPT()
        const uint32_t w[2] = {grist_sketch_block_signs(2u * blk, seed_p),
                               grist_sketch_block_signs(2u * blk + 1u, seed_p)};
#ifdef GRIST__HAVE_AVX2_BLOCK
        if (avx2 && len == 64u) {
            const uint32_t q0 = grist_sketch_block_rot(blk, seed_p) & mask;
            if (q0 + 64u <= m) {
                block64_avx2(x + c0, w[0], w[1], acc + q0, sqv);
            } else { /* wraps at m: through a zeroed run (0 + v = v; acc is never -0) */
                double tmp[GRIST_SKETCH_BLOCK_LEN] = {0};
                block64_avx2(x + c0, w[0], w[1], tmp, sqv);
                run_add(acc + q0, tmp, m - q0);
                run_add(acc, tmp + (m - q0), 64u - (m - q0));
            }
            c0 += 64u;
            continue;
        }
#endif
        for (uint32_t b = 0; b < 8; b++)
            memcpy(sm + 8 * b, sign_tab[(w[b >> 2] >> (8 * (b & 3))) & 255u], 32);
        const float *restrict xc = x + c0;
        const uint32_t *restrict sp = sm + p;
        for (uint32_t j = 0; j < len; j++) {
            uint32_t bits;
            float f;
            memcpy(&bits, &xc[j], 4);
            bits ^= sp[j];
            memcpy(&f, &bits, 4);
            val[j] = f;
        }
        run_sq(val, len, sqv);
        const uint32_t q = (grist_sketch_block_rot(blk, seed_p) + p) & mask;
        const uint32_t first = len < m - q ? len : m - q;
        run_add(acc + q, val, first);
        if (first < len)
            run_add(acc, val + first, len - first);
        c0 += len;
    }
    if (sq_norm)
        *sq_norm += sum16(sqv);
    return 0;
}

GRIST__CLONES
int grist_sketch_block_accum_f64(uint32_t seed_p, uint32_t sample, const double *x, uint64_t n,
                                 uint64_t offset, double *acc, uint32_t m, double *sq_norm)
{
    int r = check_args(x, n, offset, acc, m);
    if (r == 0)
        r = grist_sketch_check_sample(sample);
    if (r < 0)
        return r;
    GRIST__BLOCK_BODY(x[i])
    return 0;
}

GRIST__CLONES
int grist_sketch_block_accum_adam_f32(uint32_t seed_p, uint32_t sample, const float *g,
                                      const float *v, uint64_t n, uint64_t offset, double v_scale,
                                      double eps, double *acc, uint32_t m, double *sq_norm)
{
    int r = check_adam_args(g, v, n, offset, v_scale, eps, acc, m);
    if (r == 0)
        r = grist_sketch_check_sample(sample);
    if (r < 0)
        return r;
    GRIST__BLOCK_BODY(GRIST__ADAM_VALUE)
    return 0;
}
