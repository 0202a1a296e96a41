/* Seeded random numbers for tests and benchmarks (splitmix64 + Box-Muller).
 * Header-only; every caller owns its own state, so runs are reproducible. */
#ifndef GRIST_TEST_RNG_H
#define GRIST_TEST_RNG_H

#include <math.h>
#include <stdint.h>

struct grist_rng {
    uint64_t s;
    int has_spare;
    double spare;
};

static inline void grist_rng_seed(struct grist_rng *r, uint64_t seed)
{
    r->s = seed * 0x9E3779B97F4A7C15ull + 1;
    r->has_spare = 0;
}

static inline uint64_t grist_rng_u64(struct grist_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in (0, 1) */
static inline double grist_rng_uniform(struct grist_rng *r)
{
    return ((double)(grist_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static inline double grist_rng_normal(struct grist_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    const double u = grist_rng_uniform(r), v = grist_rng_uniform(r);
    const double rad = sqrt(-2.0 * log(u)), th = 6.283185307179586 * v;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

#endif
