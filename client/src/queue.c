/* DESIGN: see queue.h. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "queue.h"

int grist__ring_init(struct grist__ring *r, uint32_t cap)
{
    r->q = calloc(cap ? cap : 1, sizeof(*r->q));
    r->cap = cap ? cap : 1;
    r->head = r->len = 0;
    return r->q ? 0 : -ENOMEM;
}

void grist__ring_free(struct grist__ring *r)
{
    struct grist__msg m;
    while (r->q && grist__ring_pop(r, &m) == 0)
        free(m.buf);
    free(r->q);
    r->q = NULL;
}

uint32_t grist__ring_push(struct grist__ring *r, struct grist__msg m)
{
    uint32_t dropped = 0;
    if (r->len == r->cap) {
        free(r->q[r->head].buf);
        r->head = (r->head + 1) % r->cap;
        r->len--;
        dropped = 1;
    }
    r->q[(r->head + r->len) % r->cap] = m;
    r->len++;
    return dropped;
}

int grist__ring_pop(struct grist__ring *r, struct grist__msg *out)
{
    if (r->len == 0)
        return -1;
    *out = r->q[r->head];
    r->head = (r->head + 1) % r->cap;
    r->len--;
    return 0;
}

const struct grist__msg *grist__ring_peek(const struct grist__ring *r, uint32_t k)
{
    return &r->q[(r->head + k) % r->cap];
}

void grist__backoff_init(struct grist__backoff *b, double initial_s, double max_s, uint64_t seed)
{
    b->initial_s = initial_s > 0 ? initial_s : 0.1;
    b->max_s = max_s >= b->initial_s ? max_s : b->initial_s;
    b->cur_s = b->initial_s;
    b->rng = seed;
}

double grist__backoff_next(struct grist__backoff *b)
{
    b->rng = b->rng * 6364136223846793005ull + 1442695040888963407ull;
    const double u = (double)(b->rng >> 11) / 9007199254740992.0; /* [0, 1) */
    const double delay = b->cur_s * (0.8 + 0.4 * u);
    b->cur_s = fmin(b->cur_s * 2.0, b->max_s);
    return delay;
}

void grist__backoff_reset(struct grist__backoff *b)
{
    b->cur_s = b->initial_s;
}
