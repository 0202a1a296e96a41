/*
 * Which replica of a sharded gristd owns a job (docs/ARCHITECTURE.md,
 * "Sharding"): rendezvous (highest-random-weight) hashing of the job id
 * over the shard indexes 0..n-1. The daemon (--shard I/N) and the clients
 * compute the same answer from the id alone, so every rank of a job lands
 * on the same replica without asking anyone.
 *
 * Weight of shard i for a job: splitmix64(FNV-1a-64(job_id) ^ splitmix64(i + 1));
 * the job goes to the shard of the largest weight (ties: the lower index).
 * When n grows to n + 1, a job moves only if the new shard's weight beats
 * all the others: about 1/(n + 1) of the jobs move, all of them to the new
 * shard; when a shard is removed, only its own jobs move.
 */
#ifndef GRIST_SHARD_H
#define GRIST_SHARD_H

#include <stdint.h>

static inline uint64_t grist_splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/** The shard (0..n-1) that owns job_id; 0 when n <= 1. */
static inline uint32_t grist_shard_of(const char *job_id, uint32_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *job_id; job_id++) {
        h ^= (unsigned char)*job_id;
        h *= 0x100000001b3ull;
    }
    uint32_t best = 0;
    uint64_t best_w = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint64_t w = grist_splitmix64(h ^ grist_splitmix64((uint64_t)i + 1));
        if (i == 0 || w > best_w) {
            best = i;
            best_w = w;
        }
    }
    return best;
}

#endif
