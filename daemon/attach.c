/*
 * DESIGN: the Attach stream, one per worker process. Loop thread.
 *
 * The call itself (tags, latest-wins sending, the final status) is rpc.c's
 * server stream; this file is what Attach means: the Hello that attaches a
 * worker to its job (jobs.c), the summaries it files, the per-client limits,
 * and the job's versions, which reach the stream as a subscriber of the job
 * (publish.c). A newer Hyperparams replaces an older one waiting. Welcome
 * is the first message (nothing can be in flight before it); the job's
 * current Hyperparams follows right after, so late joiners start current.
 *
 * Errors end the stream with a status naming the field (wire.c); the job
 * and every other stream carry on, and no partial summary is ever filed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attach.h"
#include "grist/error.h"
#include "grist/shard.h"
#include "jobs.h"
#include "log.h"
#include "publish.h"

struct grist_stream {
    struct grist_call *call; /* the stream lives exactly as long as its call (on_end frees it) */
    struct grist_daemon *d;
    struct grist_stream *next, *prev; /* d->streams */
    struct grist_sub sub; /* on its job: the versions (publish.c) */
    struct grist_job *job;
    uint32_t rank;
    uint64_t session;
    uint64_t opened_ms; /* when the call arrived: a Hello is due within --hello-timeout */
    struct grist_principal who; /* the call's token, resolved when it arrived */
    char peer[64]; /* the client's address without its port ("unix" for the socket) */
};

#define STREAM_OF_SUB(p) ((struct grist_stream *)((char *)(p)-offsetof(struct grist_stream, sub)))

static void finish(struct grist_stream *s, int err, const char *msg)
{
    grist__call_finish(s->call, err, msg);
}

static int finishing(const struct grist_stream *s)
{
    return grist__call_finishing(s->call);
}

static void stream_send(struct grist_stream *s, const uint8_t *msg, size_t len)
{
    grist__call_send(s->call, msg, len);
}

/* The call is over: the stream leaves its job and the daemon's list. */
static void on_end(struct grist_call *c, void *ud)
{
    (void)c;
    struct grist_stream *s = ud;
    struct grist_daemon *d = s->d;
    grist__publish_leave(&s->sub);
    if (s->job)
        grist__job_detach(d, s->job);
    if (s->prev)
        s->prev->next = s->next;
    else
        d->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    d->nstreams--;
    d->cnt.streams_closed++;
    free(s);
}

static void on_send(struct grist_call *c, void *ud, size_t len)
{
    (void)c;
    struct grist_stream *s = ud;
    s->d->cnt.push_messages++;
    s->d->cnt.bytes_out += len;
}

/* A new version of the job's Hyperparams. */
static void on_version(struct grist_sub *sub, const uint8_t *msg, size_t len)
{
    stream_send(STREAM_OF_SUB(sub), msg, len);
}

/* ---- per-peer limits ---- */

/* Job creation of one client address: a token bucket. The table keeps the
 * PEER_TABLE addresses seen last; the oldest entry gives its slot away. */
#define PEER_TABLE 1024
struct grist_peer_bucket {
    char peer[64];
    double tokens;
    uint64_t ms;
};

static int may_create_job(struct grist_daemon *d, const char *peer)
{
    const uint64_t now = grist__now_ms(d);
    const double burst = (double)d->cfg->job_create_burst;
    struct grist_peer_bucket *b = NULL, *oldest = NULL;
    if (!d->peers) {
        d->peers = calloc(PEER_TABLE, sizeof(*d->peers));
        if (!d->peers)
            return 1;
    }
    for (uint32_t i = 0; i < d->npeers && !b; i++) {
        if (strcmp(d->peers[i].peer, peer) == 0)
            b = &d->peers[i];
        else if (!oldest || d->peers[i].ms < oldest->ms)
            oldest = &d->peers[i];
    }
    if (!b) {
        b = d->npeers < PEER_TABLE ? &d->peers[d->npeers++] : oldest;
        snprintf(b->peer, sizeof(b->peer), "%s", peer);
        b->tokens = burst;
        b->ms = now;
    }
    b->tokens += (double)(now - b->ms) / 1000.0 * d->cfg->job_create_rate;
    if (b->tokens > burst)
        b->tokens = burst;
    b->ms = now;
    if (b->tokens < 1.0)
        return 0;
    b->tokens -= 1.0;
    return 1;
}

/* --max-summary-rate: take n summaries from the job's bucket, all or none. */
static int may_submit(struct grist_daemon *d, struct grist_job *j, size_t n)
{
    const double rate = d->cfg->max_summary_rate;
    if (rate <= 0)
        return 1;
    const uint64_t now = grist__now_ms(d);
    if (j->rate_ms == 0)
        j->rate_tokens = rate;
    else
        j->rate_tokens += (double)(now - j->rate_ms) / 1000.0 * rate;
    if (j->rate_tokens > rate)
        j->rate_tokens = rate;
    j->rate_ms = now;
    /* a batch larger than one second's worth passes when the bucket is full */
    const double need = (double)n < rate ? (double)n : rate;
    if (j->rate_tokens < need)
        return 0;
    j->rate_tokens -= need;
    return 1;
}

/* Streams open at once per address and per token. NULL, or why not. */
static const char *over_stream_limits(struct grist_daemon *d, const struct grist_stream *s)
{
    int64_t by_peer = 0, by_token = 0;
    for (const struct grist_stream *o = d->streams; o; o = o->next) {
        if (o == s || finishing(o))
            continue;
        by_peer += strcmp(o->peer, s->peer) == 0;
        by_token += s->who.role != GRIST_ROLE_OPEN && memcmp(o->who.digest, s->who.digest, 32) == 0;
    }
    if (by_peer >= d->cfg->max_streams_per_peer)
        return "too many streams from this address (--max-streams-per-peer)";
    if (by_token >= d->cfg->max_streams_per_token)
        return "too many streams with this token (--max-streams-per-token)";
    return NULL;
}

/* --shard I/N: a job of another shard is refused with FAILED_PRECONDITION;
 * the trailing metadata names the right shard ("grist-shard") and, with
 * --shard-peers, its address ("grist-shard-address"), which libgrist
 * follows. @return 1 when s was finished. */
static int wrong_shard(struct grist_stream *s, const char *job)
{
    const struct grist_daemon *d = s->d;
    if (d->shard_n <= 1)
        return 0;
    const uint32_t k = grist_shard_of(job, d->shard_n);
    if (k == d->shard_i)
        return 0;
    char err[600], num[16];
    const char *peer = d->shard_peer[k];
    snprintf(err, sizeof(err),
             "hello.job_id: job '%.128s' belongs to shard %u of %u%s%.256s%s; "
             "this is shard %u",
             job, k, d->shard_n, peer ? " (" : "", peer ? peer : "", peer ? ")" : "", d->shard_i);
    snprintf(num, sizeof(num), "%u", k);
    grist__call_trailer(s->call, "grist-shard", num);
    if (peer)
        grist__call_trailer(s->call, "grist-shard-address", peer);
    s->d->cnt.shard_redirects++;
    finish(s, GRIST_ESHARD, err);
    return 1;
}

static void on_hello(struct grist_stream *s, struct grist_hello *h)
{
    struct grist_daemon *d = s->d;
    char err[256] = "";
    struct grist_job *j;
    if (wrong_shard(s, h->job_id))
        return;
    if (!grist__job_find(d, h->job_id) && !may_create_job(d, s->peer)) {
        d->cnt.jobs_create_limited++;
        snprintf(err, sizeof(err),
                 "hello.job_id: %s creates jobs faster than --job-create-rate %g/s; try later",
                 s->peer, d->cfg->job_create_rate);
        finish(s, -EAGAIN, err);
        return;
    }
    const int r = grist__job_attach(d, h, &s->who, &j, err, sizeof(err));
    if (r < 0) {
        finish(s, r, err);
        return;
    }
    s->job = j; /* counted in the job until on_end */
    s->rank = h->rank;
    s->session = ++d->next_session;
    s->sub.on_version = on_version;
    grist__publish_join(j, &s->sub);
    size_t len;
    uint8_t *w = grist__encode_welcome(s->session, j->seed, &j->policy, &len);
    if (!w) {
        finish(s, -ENOMEM, "out of memory");
        return;
    }
    stream_send(s, w, len);
    free(w);
    const uint8_t *cur = grist__job_current_push(j, &len);
    if (cur)
        stream_send(s, cur, len);
    GRIST_DEBUG("stream %llu: job '%s' rank %u/%u", (unsigned long long)s->session, j->id, h->rank,
                h->world);
}

static void on_message(struct grist_call *c, void *ud, const uint8_t *buf, size_t len)
{
    struct grist_stream *s = ud;
    struct grist_daemon *d = s->d;
    if (!buf) { /* the client half-closed (or the call is over): end with OK */
        grist__call_finish(c, 0, "");
        return;
    }
    d->cnt.bytes_in += len;
    enum grist_wmsg_kind kind = 0;
    struct grist_hello hello;
    struct grist_summary sum;
    struct grist_summary *batch = NULL;
    size_t nbatch = 0;
    char err[256] = "";
    const uint32_t ng = s->job ? s->job->ngroups : 0, m = s->job ? s->job->m : 0;
    const int st = grist__decode_worker(buf, len, &d->limits, ng, m, &kind, &hello, &sum, &batch,
                                        &nbatch, err, sizeof(err));
    const int summaries = kind == GRIST_WMSG_SUMMARY || kind == GRIST_WMSG_BATCH;
    if (summaries && !s->job) {
        if (st == 0 && kind == GRIST_WMSG_SUMMARY)
            grist__summary_free(&sum);
        if (st == 0 && kind == GRIST_WMSG_BATCH)
            grist__batch_free(batch, nbatch);
        finish(s, GRIST_EORDER, "summary before hello: send Hello first");
    } else if (kind == GRIST_WMSG_HELLO && s->job) {
        if (st == 0)
            grist__hello_free(&hello);
        finish(s, GRIST_EORDER, "hello sent twice on one stream");
    } else if (st < 0) {
        if (summaries) {
            d->cnt.summaries_rejected++;
            if (s->job)
                s->job->rejected++;
        }
        finish(s, st, err[0] ? err : "out of memory");
    } else if (kind == GRIST_WMSG_HELLO) {
        on_hello(s, &hello);
        grist__hello_free(&hello);
    } else if (!may_submit(d, s->job, kind == GRIST_WMSG_BATCH ? nbatch : 1)) {
        if (kind == GRIST_WMSG_SUMMARY)
            grist__summary_free(&sum);
        else
            grist__batch_free(batch, nbatch);
        d->cnt.summaries_rate_limited++;
        snprintf(err, sizeof(err),
                 "job '%.128s' sends more than --max-summary-rate %g summaries/s; "
                 "this message was not applied",
                 s->job->id, d->cfg->max_summary_rate);
        finish(s, -EAGAIN, err);
    } else if (kind == GRIST_WMSG_BATCH) {
        /* in order, each as if it came alone: a refused one ends the stream
         * and the rest of the batch is not applied */
        size_t k = 0;
        for (; k < nbatch; k++)
            if (grist__job_submit(d, s->job, s->rank, &batch[k], err, sizeof(err)) < 0) {
                d->cnt.summaries_rejected++;
                s->job->rejected++;
                char e2[300];
                snprintf(e2, sizeof(e2), "batch.summaries[%zu]: %s", k, err);
                finish(s, -EINVAL, e2);
                k++;
                break;
            }
        for (; k < nbatch; k++) /* not applied: submit takes ownership of the ones it saw */
            grist__summary_free(&batch[k]);
        free(batch);
    } else if (grist__job_submit(d, s->job, s->rank, &sum, err, sizeof(err)) < 0) {
        d->cnt.summaries_rejected++;
        s->job->rejected++;
        finish(s, -EINVAL, err);
    }
    if (!finishing(s))
        grist__call_recv(c);
}

static const struct grist_call_ops attach_ops = {on_message, on_end, on_send};

void grist__attach_stream(void *ud, struct grist_call *c, const struct grist_principal *who)
{
    struct grist_daemon *d = ud;
    struct grist_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return; /* unbound: rpc.c ends the call */
    s->d = d;
    s->call = c;
    s->who = *who;
    grist__call_peer(c, s->peer, sizeof(s->peer));
    s->opened_ms = grist__now_ms(d);
    grist__call_bind(c, &attach_ops, s);
    s->next = d->streams;
    if (d->streams)
        d->streams->prev = s;
    d->streams = s;
    d->nstreams++;
    d->cnt.streams_opened++;
    if (d->stopping) {
        finish(s, -ESHUTDOWN, "gristd is shutting down");
        return;
    }
    const char *over = over_stream_limits(d, s);
    if (over) {
        d->cnt.streams_limited++;
        finish(s, -EAGAIN, over);
        return;
    }
    grist__call_recv(c);
}

void grist__streams_recheck(struct grist_daemon *d)
{
    for (struct grist_stream *s = d->streams; s; s = s->next)
        if (!finishing(s) &&
            !grist__auth_still_allowed(d->auth, &s->who, s->job ? s->job->id : NULL,
                                       GRIST_NEED_ATTACH))
            finish(s, -EACCES, "the token of this stream was revoked or no longer covers its job");
}

void grist__streams_finish_all(struct grist_daemon *d)
{
    for (struct grist_stream *s = d->streams; s; s = s->next)
        finish(s, -ESHUTDOWN, "gristd is shutting down");
}

void grist__attach_tick(struct grist_daemon *d)
{
    const uint64_t now = grist__now_ms(d);
    const uint64_t limit = (uint64_t)(d->cfg->hello_timeout * 1000.0);
    for (struct grist_stream *s = d->streams, *next; s; s = next) {
        next = s->next;
        if (!s->job && !finishing(s) && now - s->opened_ms >= limit) {
            char msg[96];
            snprintf(msg, sizeof(msg), "no Hello within --hello-timeout %.3g s",
                     d->cfg->hello_timeout);
            finish(s, -ETIMEDOUT, msg);
        }
    }
}
