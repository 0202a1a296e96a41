/*
 * DESIGN: snapshot of a statistics state as a flat buffer:
 *   "GRISTST1" | u32 version | u32 byte-order mark | u64 payload length |
 *   u64 FNV-1a of the payload | payload
 * The payload holds the configuration, counters, host EMAs and the backend
 * arrays downloaded to the host, all in native byte order (the mark refuses
 * a buffer from a machine of the other order). Deserialization checks every
 * length against the configuration before it builds the state.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "grist/error.h"
#include "grist/stats.h"
#include "stats_impl.h"

#define MAGIC "GRISTST1"
#define VERSION 2u
#define BOM 0x01020304u
#define HEADER 32u

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

struct wr {
    unsigned char *p;
    size_t off;
};

static void put(struct wr *w, const void *src, size_t n)
{
    if (w->p)
        memcpy(w->p + w->off, src, n);
    w->off += n;
}

struct rd {
    const unsigned char *p;
    size_t off, len;
    int bad;
};

static void get(struct rd *r, void *dst, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = 1;
        return;
    }
    memcpy(dst, r->p + r->off, n);
    r->off += n;
}

#define PUT(w, v) put((w), &(v), sizeof(v))
#define GET(r, v) get((r), &(v), sizeof(v))

static int dev_put(struct grist_stats *st, struct wr *w, const double *dev, size_t n)
{
    if (!w->p) {
        w->off += n * sizeof(double);
        return 0;
    }
    int r = st->be->ops.download(st->be, w->p + w->off, dev, n * sizeof(double));
    w->off += n * sizeof(double);
    return r;
}

static int payload(struct grist_stats *st, struct wr *w)
{
    const struct grist_stats_config *c = &st->cfg;
    const uint32_t K = c->ncand, L = c->lags, mc = st->mcov;
    PUT(w, c->m);
    PUT(w, c->cov_dim);
    PUT(w, c->lags);
    PUT(w, c->cov_batch);
    PUT(w, c->gamma);
    PUT(w, c->ncand);
    put(w, c->cand, K * sizeof(double));
    PUT(w, c->form);
    PUT(w, c->curv_block);
    PUT(w, st->steps);
    PUT(w, st->val_steps);
    PUT(w, st->worker_steps);
    PUT(w, st->cov_steps);
    PUT(w, st->sigma_steps);
    PUT(w, st->npending);
    PUT(w, st->ring_head);
    put(w, st->J, K * sizeof(double));
    put(w, st->E, K * sizeof(double));
    put(w, st->Jval, K * sizeof(double));
    put(w, st->XX, (size_t)K * K * sizeof(double));
    put(w, st->acf, (L + 1) * sizeof(double));
    put(w, st->acf_n, (L + 1) * sizeof(uint64_t));
    PUT(w, st->noise_loc);
    PUT(w, st->noise_mean);
    PUT(w, st->batch_ema);
    PUT(w, st->nworkers_ema);
    put(w, st->FF, (size_t)(2 * K + 1) * (2 * K + 1) * sizeof(double));
    put(w, st->FF1, (size_t)(2 * K + 1) * (2 * K + 1) * sizeof(double));
    put(w, st->fprev, (size_t)(2 * K + 1) * sizeof(double));
    {
        const double *arr[8] = {st->U, st->a_prev, st->a_cur, st->s_last,
                                st->R, st->R_ref,  st->s_ref, st->Dsp};
        for (int i = 0; i < 8; i++)
            put(w, arr[i], c->m * sizeof(double));
    }
    PUT(w, st->traj_n);
    PUT(w, st->block_open);
    PUT(w, st->block_i);
    PUT(w, st->traj_lr);
    PUT(w, st->c1);
    PUT(w, st->cb);
    if (mc)
        put(w, st->mu, mc * sizeof(double));
    int r = dev_put(st, w, st->V, (size_t)K * c->m);
    if (r == 0)
        r = dev_put(st, w, st->ring, (size_t)L * c->m);
    if (r == 0 && mc)
        r = dev_put(st, w, st->sigma, (size_t)mc * mc);
    if (r == 0 && mc)
        r = dev_put(st, w, st->pending, (size_t)mc * c->cov_batch);
    return r;
}

int grist_stats_serialize(struct grist_stats *st, void **buf, size_t *len)
{
    if (!st || !buf || !len)
        return -EINVAL;
    struct wr w = {NULL, 0};
    payload(st, &w);
    const size_t n = HEADER + w.off;
    unsigned char *p = malloc(n);
    if (!p)
        return -ENOMEM;
    w.p = p + HEADER;
    w.off = 0;
    if (payload(st, &w) < 0) {
        free(p);
        return GRIST_EDEVICE;
    }
    const uint32_t ver = VERSION, bom = BOM;
    const uint64_t plen = w.off, sum = fnv1a(p + HEADER, w.off);
    memcpy(p, MAGIC, 8);
    memcpy(p + 8, &ver, 4);
    memcpy(p + 12, &bom, 4);
    memcpy(p + 16, &plen, 8);
    memcpy(p + 24, &sum, 8);
    *buf = p;
    *len = n;
    return 0;
}

static int dev_get(struct grist_stats *st, struct rd *r, double *dev, size_t n)
{
    const size_t bytes = n * sizeof(double);
    if (r->bad || r->len - r->off < bytes) {
        r->bad = 1;
        return GRIST_EBADSTATE;
    }
    int e = st->be->ops.upload(st->be, dev, r->p + r->off, bytes);
    r->off += bytes;
    return e < 0 ? GRIST_EDEVICE : 0;
}

/* The header's checks and the configuration at the payload's start. */
static int read_config(const void *buf, size_t len, struct rd *r, struct grist_stats_config *c)
{
    const unsigned char *p = buf;
    uint32_t ver, bom;
    uint64_t plen, sum;
    if (len < HEADER || memcmp(p, MAGIC, 8) != 0)
        return GRIST_EBADSTATE;
    memcpy(&ver, p + 8, 4);
    memcpy(&bom, p + 12, 4);
    memcpy(&plen, p + 16, 8);
    memcpy(&sum, p + 24, 8);
    if (ver != VERSION || bom != BOM || plen != len - HEADER || fnv1a(p + HEADER, plen) != sum)
        return GRIST_EBADSTATE;
    *r = (struct rd){p + HEADER, 0, plen, 0};
    memset(c, 0, sizeof(*c));
    GET(r, c->m);
    GET(r, c->cov_dim);
    GET(r, c->lags);
    GET(r, c->cov_batch);
    GET(r, c->gamma);
    GET(r, c->ncand);
    if (r->bad || c->ncand > GRIST_MAX_CANDIDATES || c->lags > GRIST_MAX_LAGS)
        return GRIST_EBADSTATE;
    get(r, c->cand, c->ncand * sizeof(double));
    GET(r, c->form);
    GET(r, c->curv_block);
    return r->bad ? GRIST_EBADSTATE : 0;
}

int grist_stats_peek_config(const void *buf, size_t len, struct grist_stats_config *cfg)
{
    if (!buf || !cfg)
        return -EINVAL;
    struct rd r;
    return read_config(buf, len, &r, cfg);
}

int grist_stats_deserialize(struct grist_backend *be, const void *buf, size_t len,
                            struct grist_stats **out)
{
    if (!be || !buf || !out)
        return -EINVAL;
    struct rd r;
    struct grist_stats_config c;
    if (read_config(buf, len, &r, &c) < 0)
        return GRIST_EBADSTATE;
    struct grist_stats *st;
    int e = grist_stats_new(be, &c, &st);
    if (e < 0)
        return e == -ENOMEM ? e : GRIST_EBADSTATE;
    const uint32_t K = c.ncand, L = c.lags, mc = st->mcov;
    GET(&r, st->steps);
    GET(&r, st->val_steps);
    GET(&r, st->worker_steps);
    GET(&r, st->cov_steps);
    GET(&r, st->sigma_steps);
    GET(&r, st->npending);
    GET(&r, st->ring_head);
    get(&r, st->J, K * sizeof(double));
    get(&r, st->E, K * sizeof(double));
    get(&r, st->Jval, K * sizeof(double));
    get(&r, st->XX, (size_t)K * K * sizeof(double));
    get(&r, st->acf, (L + 1) * sizeof(double));
    get(&r, st->acf_n, (L + 1) * sizeof(uint64_t));
    GET(&r, st->noise_loc);
    GET(&r, st->noise_mean);
    GET(&r, st->batch_ema);
    GET(&r, st->nworkers_ema);
    get(&r, st->FF, (size_t)(2 * K + 1) * (2 * K + 1) * sizeof(double));
    get(&r, st->FF1, (size_t)(2 * K + 1) * (2 * K + 1) * sizeof(double));
    get(&r, st->fprev, (size_t)(2 * K + 1) * sizeof(double));
    {
        double *arr[8] = {st->U, st->a_prev, st->a_cur, st->s_last,
                          st->R, st->R_ref,  st->s_ref, st->Dsp};
        for (int i = 0; i < 8; i++)
            get(&r, arr[i], c.m * sizeof(double));
    }
    GET(&r, st->traj_n);
    GET(&r, st->block_open);
    GET(&r, st->block_i);
    GET(&r, st->traj_lr);
    GET(&r, st->c1);
    GET(&r, st->cb);
    if (mc)
        get(&r, st->mu, mc * sizeof(double));
    if (r.bad || st->npending > c.cov_batch || st->ring_head >= L || st->traj_n > 2 ||
        st->block_open > 1 || st->block_i > c.curv_block || (mc == 0 && st->npending != 0)) {
        e = GRIST_EBADSTATE;
        goto fail;
    }
    if (st->npending)
        st->pend_w = sqrt((1.0 - c.gamma) * pow(c.gamma, -(double)(st->npending - 1)));
    e = dev_get(st, &r, st->V, (size_t)K * c.m);
    if (e == 0)
        e = dev_get(st, &r, st->ring, (size_t)L * c.m);
    if (e == 0 && mc)
        e = dev_get(st, &r, st->sigma, (size_t)mc * mc);
    if (e == 0 && mc)
        e = dev_get(st, &r, st->pending, (size_t)mc * c.cov_batch);
    if (e == 0 && r.off != r.len)
        e = GRIST_EBADSTATE;
    if (e < 0)
        goto fail;
    *out = st;
    return 0;
fail:
    grist_stats_free(st);
    return e;
}
