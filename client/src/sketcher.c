/* DESIGN: see sketcher.h. The thread is created by the first async begin
 * and sleeps on a condition variable between steps. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "grist/error.h"
#include "grist/sketch.h"
#include "sketcher.h"

enum { IDLE, QUEUED, RUNNING, DONE };

/* Below this many elements per step a begun sketch runs inline (see begin). */
#define GRIST__ASYNC_MIN_ELEMENTS (1u << 19)

struct grist__sketcher {
    uint32_t ngroups, m;
    int block; /* GRIST_SKETCH_BLOCK, else hashed */
    uint64_t async_min; /* elements below which an async begin runs inline */
    uint64_t *gsize;
    uint32_t *seeds, *sample;
    double *acc, *sq;
    struct grist_tensor *t;
    uint32_t nt, tcap;
    int state, result, stop, have_thread;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

int grist__sketcher_new(uint32_t ngroups, uint32_t m, int kind, const uint64_t *group_sizes,
                        const uint32_t *samples, struct grist__sketcher **out)
{
    struct grist__sketcher *sk = calloc(1, sizeof(*sk));
    if (!sk)
        return -ENOMEM;
    sk->ngroups = ngroups;
    sk->m = m;
    sk->block = kind == GRIST_SKETCH_BLOCK;
    sk->async_min = GRIST__ASYNC_MIN_ELEMENTS;
    sk->gsize = malloc(ngroups * sizeof(*sk->gsize));
    sk->seeds = malloc(ngroups * sizeof(*sk->seeds));
    sk->sample = malloc(ngroups * sizeof(*sk->sample));
    sk->acc = malloc((size_t)ngroups * m * sizeof(*sk->acc));
    sk->sq = malloc(ngroups * sizeof(*sk->sq));
    pthread_mutex_init(&sk->mu, NULL);
    pthread_cond_init(&sk->cv, NULL);
    if (!sk->gsize || !sk->seeds || !sk->sample || !sk->acc || !sk->sq) {
        grist__sketcher_free(sk);
        return -ENOMEM;
    }
    memcpy(sk->gsize, group_sizes, ngroups * sizeof(*sk->gsize));
    for (uint32_t g = 0; g < ngroups; g++)
        sk->sample[g] = sk->block && samples ? samples[g] : 1;
    *out = sk;
    return 0;
}

/* The sketch of one step; no lock held (the inputs are owned by the run). */
static int run(struct grist__sketcher *sk)
{
    memset(sk->acc, 0, (size_t)sk->ngroups * sk->m * sizeof(*sk->acc));
    memset(sk->sq, 0, sk->ngroups * sizeof(*sk->sq));
    for (uint32_t i = 0; i < sk->nt; i++) {
        const struct grist_tensor *t = &sk->t[i];
        double *acc = sk->acc + (size_t)t->group * sk->m;
        const uint32_t seed = sk->seeds[t->group], smp = sk->sample[t->group];
        double *sq = &sk->sq[t->group];
        int r;
        if (t->exp_avg_sq && sk->block)
            r = grist_sketch_block_accum_adam_f32(seed, smp, t->grad, t->exp_avg_sq, t->n,
                                                  t->offset, t->v_scale, t->eps, acc, sk->m, sq);
        else if (t->exp_avg_sq)
            r = grist_sketch_accum_adam_f32(seed, t->grad, t->exp_avg_sq, t->n, t->offset,
                                            t->v_scale, t->eps, acc, sk->m, sq);
        else if (sk->block)
            r = grist_sketch_block_accum_f32(seed, smp, t->grad, t->n, t->offset, acc, sk->m, sq);
        else
            r = grist_sketch_accum_f32(seed, t->grad, t->n, t->offset, acc, sk->m, sq);
        if (r < 0)
            return r;
    }
    for (uint32_t g = 0; g < sk->ngroups; g++)
        grist_sketch_unsample(sk->acc + (size_t)g * sk->m, sk->m, sk->sample[g], &sk->sq[g]);
    return 0;
}

static void *thread_main(void *arg)
{
    struct grist__sketcher *sk = arg;
    pthread_mutex_lock(&sk->mu);
    for (;;) {
        while (!sk->stop && sk->state != QUEUED)
            pthread_cond_wait(&sk->cv, &sk->mu);
        if (sk->stop)
            break;
        sk->state = RUNNING;
        pthread_mutex_unlock(&sk->mu);
        const int r = run(sk);
        pthread_mutex_lock(&sk->mu);
        sk->result = r;
        sk->state = DONE;
        pthread_cond_broadcast(&sk->cv);
    }
    pthread_mutex_unlock(&sk->mu);
    return NULL;
}

void grist__sketcher_free(struct grist__sketcher *sk)
{
    if (!sk)
        return;
    if (sk->have_thread) {
        pthread_mutex_lock(&sk->mu);
        sk->stop = 1; /* a running sketch finishes first: the thread checks stop after it */
        pthread_cond_broadcast(&sk->cv);
        pthread_mutex_unlock(&sk->mu);
        pthread_join(sk->th, NULL);
    }
    pthread_mutex_destroy(&sk->mu);
    pthread_cond_destroy(&sk->cv);
    free(sk->gsize);
    free(sk->seeds);
    free(sk->sample);
    free(sk->acc);
    free(sk->sq);
    free(sk->t);
    free(sk);
}

int grist__sketcher_begin(struct grist__sketcher *sk, const uint32_t *seeds,
                          const struct grist_tensor *t, uint32_t nt, int async)
{
    if (!seeds || (nt > 0 && !t))
        return -EINVAL;
    for (uint32_t i = 0; i < nt; i++) {
        if (t[i].group >= sk->ngroups || (t[i].n > 0 && !t[i].grad))
            return -EINVAL;
        if (t[i].offset > sk->gsize[t[i].group] || t[i].n > sk->gsize[t[i].group] - t[i].offset)
            return GRIST_EBADLEN;
        if (t[i].exp_avg_sq && !(t[i].eps > 0.0 && t[i].v_scale > 0.0))
            return -EINVAL;
    }
    /* a small step is sketched inline: handing it to the thread (a wake-up,
     * 50-200 us on a loaded 2-core machine, measured in client/README.md)
     * costs more than the sketch itself (0.25 ns per element, block kind);
     * what counts is the work: a group sampled 1 run in N reads n / N */
    uint64_t total = 0;
    for (uint32_t i = 0; i < nt; i++)
        total += t[i].n / sk->sample[t[i].group];
    if (total < sk->async_min)
        async = 0;
    pthread_mutex_lock(&sk->mu);
    int r = 0;
    if (sk->state != IDLE) {
        r = -EBUSY;
        goto out;
    }
    if (nt > sk->tcap) {
        struct grist_tensor *nt_buf = realloc(sk->t, nt * sizeof(*nt_buf));
        if (!nt_buf) {
            r = -ENOMEM;
            goto out;
        }
        sk->t = nt_buf;
        sk->tcap = nt;
    }
    if (nt)
        memcpy(sk->t, t, nt * sizeof(*t));
    sk->nt = nt;
    memcpy(sk->seeds, seeds, sk->ngroups * sizeof(*seeds));
    if (async && !sk->have_thread) {
        if (pthread_create(&sk->th, NULL, thread_main, sk) != 0)
            async = 0; /* no thread: sketch inline rather than fail the step */
        else
            sk->have_thread = 1;
    }
    if (async) {
        sk->state = QUEUED;
        pthread_cond_broadcast(&sk->cv);
    } else {
        sk->state = RUNNING;
        pthread_mutex_unlock(&sk->mu);
        const int rr = run(sk);
        pthread_mutex_lock(&sk->mu);
        sk->result = rr;
        sk->state = DONE;
    }
out:
    pthread_mutex_unlock(&sk->mu);
    return r;
}

void grist__sketcher_set_async_min(struct grist__sketcher *sk, uint64_t elements)
{
    sk->async_min = elements;
}

int grist__sketcher_busy(struct grist__sketcher *sk)
{
    pthread_mutex_lock(&sk->mu);
    const int busy = sk->state == QUEUED || sk->state == RUNNING;
    pthread_mutex_unlock(&sk->mu);
    return busy;
}

int grist__sketcher_wait(struct grist__sketcher *sk, const double **acc, const double **sq)
{
    pthread_mutex_lock(&sk->mu);
    if (sk->state == IDLE) {
        pthread_mutex_unlock(&sk->mu);
        return -ENOENT;
    }
    while (sk->state != DONE)
        pthread_cond_wait(&sk->cv, &sk->mu);
    const int r = sk->result;
    pthread_mutex_unlock(&sk->mu);
    *acc = sk->acc;
    *sq = sk->sq;
    return r;
}

void grist__sketcher_reset(struct grist__sketcher *sk)
{
    pthread_mutex_lock(&sk->mu);
    if (sk->state == DONE)
        sk->state = IDLE;
    pthread_mutex_unlock(&sk->mu);
}
