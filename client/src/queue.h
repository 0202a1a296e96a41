/*
 * DESIGN: the pure parts of libgrist's transport policy, kept apart from
 * gRPC so tests/unit/test_client_logic.c can drive them directly:
 * - the send queue, a ring of encoded summaries that drops the OLDEST entry
 *   when full (training's newest gradient is the one worth sending);
 * - the reconnect schedule, exponential backoff with multiplicative jitter
 *   U(0.8, 1.2), doubling up to a cap, reset by a Welcome.
 * Not thread-safe: the caller holds the client's mutex.
 */
#ifndef GRIST_CLIENT_QUEUE_H
#define GRIST_CLIENT_QUEUE_H

#include <stddef.h>
#include <stdint.h>

struct grist__msg {
    uint8_t *buf; /* owned (malloc) */
    size_t len;
};

struct grist__ring {
    struct grist__msg *q;
    uint32_t cap, head, len;
};

/* 0, or -ENOMEM. cap must be >= 1. */
int grist__ring_init(struct grist__ring *r, uint32_t cap);
/* Frees every queued buffer and the ring. */
void grist__ring_free(struct grist__ring *r);
/* Takes ownership of m.buf. Returns the number of entries dropped (0 or 1):
 * when full, the oldest is freed to make room. */
uint32_t grist__ring_push(struct grist__ring *r, struct grist__msg m);
/* Removes the oldest entry into *out (ownership to the caller); 0, or -1 when empty. */
int grist__ring_pop(struct grist__ring *r, struct grist__msg *out);
/* The k-th oldest entry (k < len), still owned by the ring. */
const struct grist__msg *grist__ring_peek(const struct grist__ring *r, uint32_t k);

struct grist__backoff {
    double initial_s, max_s, cur_s;
    uint64_t rng; /* LCG state */
};

void grist__backoff_init(struct grist__backoff *b, double initial_s, double max_s, uint64_t seed);
/* Delay before the next attempt: cur * U(0.8, 1.2); then cur doubles up to max. */
double grist__backoff_next(struct grist__backoff *b);
/* A successful attach: back to the initial delay. */
void grist__backoff_reset(struct grist__backoff *b);

#endif
