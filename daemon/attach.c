/*
 * DESIGN: the Attach stream, one per worker process. Loop thread.
 *
 * Per call three tags may be outstanding: recv (one RECV_MESSAGE at a time),
 * send (one SEND_MESSAGE or the final status at a time: gRPC allows one send
 * in flight per call) and close (RECV_CLOSE_ON_SERVER, issued at start; it
 * completes when the call is over, which is how a cancelled or vanished
 * client is noticed). The stream is freed when no tag is outstanding.
 *
 * Sending is latest-wins: while a message is in flight the next one waits
 * in one slot, and a newer Hyperparams replaces an older one there. Welcome
 * is the first message (nothing can be in flight before it); the job's
 * current Hyperparams follows right after, so late joiners start current.
 *
 * Errors end the stream with a status naming the field (wire.c); the job
 * and every other stream carry on, and no partial summary is ever filed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/support/alloc.h>

#include "daemon.h"
#include "grist/shard.h"
#include "jobs.h"
#include "log.h"

struct grist_stream {
    struct grist_tag recv_tag, send_tag, close_tag;
    struct grist_daemon *d;
    grpc_call *call;
    struct grist_stream *next, *prev; /* d->streams */
    struct grist_stream *job_next; /* job->streams */
    struct grist_job *job;
    uint32_t rank;
    uint64_t session;
    uint64_t opened_ms; /* when the call arrived: a Hello is due within --hello-timeout */
    struct grist_principal who; /* the call's token, resolved when it arrived */
    char peer[64]; /* the client's address without its port ("unix" for the socket) */
    grpc_byte_buffer *recv_buf;
    grpc_byte_buffer *send_buf;
    int refs;
    int md_sent, closed, cancelled, finishing, status_in_flight, status_sent, detached;
    int send_in_flight;
    uint8_t *queued;
    size_t queued_len;
    grpc_status_code fin_code;
    grpc_slice fin_details;
    int fin_details_set;
    grpc_metadata fin_md[2]; /* trailing metadata of the status (a shard redirect) */
    size_t fin_nmd;
};

struct grist_stream *grist__stream_next_in_job(struct grist_stream *s)
{
    return s->job_next;
}

#define STREAM_OF(tag, member)                                                                     \
    ((struct grist_stream *)((char *)(tag)-offsetof(struct grist_stream, member)))

static void detach(struct grist_stream *s)
{
    if (s->detached)
        return;
    s->detached = 1;
    if (s->job) {
        for (struct grist_stream **p = &s->job->streams; *p; p = &(*p)->job_next)
            if (*p == s) {
                *p = s->job_next;
                break;
            }
        grist__job_detach(s->d, s->job, s);
        s->job = NULL;
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        s->d->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->d->nstreams--;
    s->d->cnt.streams_closed++;
}

static void maybe_free(struct grist_stream *s)
{
    if (s->refs > 0)
        return;
    detach(s);
    if (s->recv_buf)
        grpc_byte_buffer_destroy(s->recv_buf);
    if (s->send_buf)
        grpc_byte_buffer_destroy(s->send_buf);
    if (s->fin_details_set)
        grpc_slice_unref(s->fin_details);
    for (size_t i = 0; i < s->fin_nmd; i++) {
        grpc_slice_unref(s->fin_md[i].key);
        grpc_slice_unref(s->fin_md[i].value);
    }
    free(s->queued);
    grpc_call_unref(s->call);
    s->d->net.live_calls--;
    free(s);
}

static void send_status(struct grist_stream *s)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!s->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        s->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = s->fin_code;
    ops[n].data.send_status_from_server.trailing_metadata_count = s->fin_nmd;
    ops[n].data.send_status_from_server.trailing_metadata = s->fin_nmd ? s->fin_md : NULL;
    ops[n++].data.send_status_from_server.status_details = &s->fin_details;
    s->status_in_flight = 1;
    s->send_in_flight = 1;
    s->refs++;
    if (grpc_call_start_batch(s->call, ops, n, &s->send_tag, NULL) != GRPC_CALL_OK) {
        s->refs--;
        s->send_in_flight = 0;
        grpc_call_cancel(s->call, NULL);
    }
}

static void finish(struct grist_stream *s, grpc_status_code code, const char *msg)
{
    if (s->finishing)
        return;
    s->finishing = 1;
    s->fin_code = code;
    s->fin_details = grpc_slice_from_copied_string(msg ? msg : "");
    s->fin_details_set = 1;
    free(s->queued);
    s->queued = NULL;
    if (code != GRPC_STATUS_OK)
        GRIST_DEBUG("stream %llu: finishing with status %d: %s", (unsigned long long)s->session,
                    (int)code, msg);
    if (!s->send_in_flight && !s->closed)
        send_status(s);
}

static void start_send(struct grist_stream *s, const uint8_t *msg, size_t len)
{
    s->send_buf = grist__bb_from(msg, len);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!s->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        s->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = s->send_buf;
    s->send_in_flight = 1;
    s->refs++;
    s->d->cnt.push_messages++;
    s->d->cnt.bytes_out += len;
    if (grpc_call_start_batch(s->call, ops, n, &s->send_tag, NULL) != GRPC_CALL_OK) {
        s->refs--;
        s->send_in_flight = 0;
        grpc_byte_buffer_destroy(s->send_buf);
        s->send_buf = NULL;
        finish(s, GRPC_STATUS_INTERNAL, "cannot send");
    }
}

void grist__stream_send(struct grist_stream *s, const uint8_t *msg, size_t len)
{
    if (s->finishing || s->closed)
        return;
    if (!s->send_in_flight) {
        start_send(s, msg, len);
        return;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return; /* the next version will come */
    memcpy(copy, msg, len);
    free(s->queued); /* latest wins */
    s->queued = copy;
    s->queued_len = len;
}

static void on_send(struct grist_tag *tag, int ok)
{
    struct grist_stream *s = STREAM_OF(tag, send_tag);
    s->refs--;
    s->send_in_flight = 0;
    if (s->send_buf) {
        grpc_byte_buffer_destroy(s->send_buf);
        s->send_buf = NULL;
    }
    if (s->status_in_flight) {
        s->status_in_flight = 0;
        s->status_sent = 1;
    } else if (!ok) {
        finish(s, GRPC_STATUS_UNAVAILABLE, "send failed");
    } else if (s->finishing) {
        if (!s->closed)
            send_status(s);
    } else if (s->queued) {
        uint8_t *m = s->queued;
        size_t len = s->queued_len;
        s->queued = NULL;
        start_send(s, m, len);
        free(m);
    }
    maybe_free(s);
}

static void on_close(struct grist_tag *tag, int ok)
{
    (void)ok;
    struct grist_stream *s = STREAM_OF(tag, close_tag);
    s->refs--;
    s->closed = 1;
    if (s->cancelled && !s->finishing) {
        GRIST_DEBUG("stream %llu: cancelled by the client", (unsigned long long)s->session);
        s->finishing = 1;
    }
    detach(s);
    maybe_free(s);
}

static void start_recv(struct grist_stream *s);

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

/* The address of the call's client, without its port: "ipv4:10.0.0.7",
 * "ipv6:[fe80::1]", "unix". */
static void peer_of(grpc_call *call, char *out, size_t size)
{
    char *p = grpc_call_get_peer(call);
    if (!p || strncmp(p, "unix", 4) == 0) {
        snprintf(out, size, "unix");
    } else {
        char *colon = strrchr(p, ':');
        if (colon && colon > strchr(p, ':'))
            *colon = '\0';
        snprintf(out, size, "%s", p);
    }
    gpr_free(p);
}

/* Streams open at once per address and per token. NULL, or why not. */
static const char *over_stream_limits(struct grist_daemon *d, const struct grist_stream *s)
{
    int64_t by_peer = 0, by_token = 0;
    for (const struct grist_stream *o = d->streams; o; o = o->next) {
        if (o == s || o->finishing)
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
    s->fin_md[0].key = grpc_slice_from_static_string("grist-shard");
    s->fin_md[0].value = grpc_slice_from_copied_string(num);
    s->fin_nmd = 1;
    if (peer) {
        s->fin_md[1].key = grpc_slice_from_static_string("grist-shard-address");
        s->fin_md[1].value = grpc_slice_from_copied_string(peer);
        s->fin_nmd = 2;
    }
    s->d->cnt.shard_redirects++;
    finish(s, GRPC_STATUS_FAILED_PRECONDITION, err);
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
        finish(s, GRPC_STATUS_RESOURCE_EXHAUSTED, err);
        return;
    }
    grpc_status_code code = grist__job_attach(d, h, &s->who, &j, err, sizeof(err));
    if (code != GRPC_STATUS_OK) {
        finish(s, code, err);
        return;
    }
    s->job = j;
    s->rank = h->rank;
    s->session = ++d->next_session;
    s->job_next = j->streams;
    j->streams = s;
    j->nstreams++;
    size_t len;
    uint8_t *w = grist__encode_welcome(s->session, j->seed, &j->policy, &len);
    if (!w) {
        finish(s, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    grist__stream_send(s, w, len);
    free(w);
    const uint8_t *cur = grist__job_current_push(j, &len);
    if (cur)
        grist__stream_send(s, cur, len);
    GRIST_DEBUG("stream %llu: job '%s' rank %u/%u", (unsigned long long)s->session, j->id, h->rank,
                h->world);
}

static void on_recv(struct grist_tag *tag, int ok)
{
    struct grist_stream *s = STREAM_OF(tag, recv_tag);
    struct grist_daemon *d = s->d;
    s->refs--;
    grpc_byte_buffer *bb = s->recv_buf;
    s->recv_buf = NULL;
    if (!ok || !bb || s->finishing) {
        /* the client half-closed (or the call is over): end with OK */
        if (bb)
            grpc_byte_buffer_destroy(bb);
        finish(s, GRPC_STATUS_OK, "");
        maybe_free(s);
        return;
    }
    size_t len = 0;
    uint8_t *buf = grist__bb_read(bb, &len);
    grpc_byte_buffer_destroy(bb);
    if (!buf) {
        finish(s, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        maybe_free(s);
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
    enum grist_wire_status st = grist__decode_worker(buf, len, &d->limits, ng, m, &kind, &hello,
                                                     &sum, &batch, &nbatch, err, sizeof(err));
    free(buf);
    const int summaries = kind == GRIST_WMSG_SUMMARY || kind == GRIST_WMSG_BATCH;
    if (summaries && !s->job) {
        if (st == GRIST_WIRE_OK && kind == GRIST_WMSG_SUMMARY)
            grist__summary_free(&sum);
        if (st == GRIST_WIRE_OK && kind == GRIST_WMSG_BATCH)
            grist__batch_free(batch, nbatch);
        finish(s, GRPC_STATUS_FAILED_PRECONDITION, "summary before hello: send Hello first");
    } else if (kind == GRIST_WMSG_HELLO && s->job) {
        if (st == GRIST_WIRE_OK)
            grist__hello_free(&hello);
        finish(s, GRPC_STATUS_FAILED_PRECONDITION, "hello sent twice on one stream");
    } else if (st != GRIST_WIRE_OK) {
        if (summaries) {
            d->cnt.summaries_rejected++;
            if (s->job)
                s->job->rejected++;
        }
        finish(s,
               st == GRIST_WIRE_INVALID ? GRPC_STATUS_INVALID_ARGUMENT
                                        : GRPC_STATUS_RESOURCE_EXHAUSTED,
               err[0] ? err : "out of memory");
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
        finish(s, GRPC_STATUS_RESOURCE_EXHAUSTED, err);
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
                finish(s, GRPC_STATUS_INVALID_ARGUMENT, e2);
                k++;
                break;
            }
        for (; k < nbatch; k++) /* not applied: submit takes ownership of the ones it saw */
            grist__summary_free(&batch[k]);
        free(batch);
    } else if (grist__job_submit(d, s->job, s->rank, &sum, err, sizeof(err)) < 0) {
        d->cnt.summaries_rejected++;
        s->job->rejected++;
        finish(s, GRPC_STATUS_INVALID_ARGUMENT, err);
    }
    if (!s->finishing)
        start_recv(s);
    maybe_free(s);
}

static void start_recv(struct grist_stream *s)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv_buf;
    s->refs++;
    if (grpc_call_start_batch(s->call, &op, 1, &s->recv_tag, NULL) != GRPC_CALL_OK) {
        s->refs--;
        finish(s, GRPC_STATUS_INTERNAL, "cannot receive");
    }
}

void grist__attach_call(struct grist_net *net, grpc_call *call, const struct grist_principal *who)
{
    struct grist_daemon *d = grist__daemon_of(net);
    struct grist_stream *s = calloc(1, sizeof(*s));
    if (!s) {
        grpc_call_cancel(call, NULL);
        grpc_call_unref(call);
        net->live_calls--;
        return;
    }
    s->d = d;
    s->call = call;
    s->who = *who;
    peer_of(call, s->peer, sizeof(s->peer));
    s->opened_ms = grist__now_ms(d);
    s->recv_tag.cb = on_recv;
    s->send_tag.cb = on_send;
    s->close_tag.cb = on_close;
    s->next = d->streams;
    if (d->streams)
        d->streams->prev = s;
    d->streams = s;
    d->nstreams++;
    d->cnt.streams_opened++;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &s->cancelled;
    s->refs++;
    if (grpc_call_start_batch(call, &op, 1, &s->close_tag, NULL) != GRPC_CALL_OK) {
        s->refs--;
        grpc_call_cancel(call, NULL);
        maybe_free(s);
        return;
    }
    if (d->stopping) {
        finish(s, GRPC_STATUS_UNAVAILABLE, "gristd is shutting down");
        return;
    }
    const char *over = over_stream_limits(d, s);
    if (over) {
        d->cnt.streams_limited++;
        finish(s, GRPC_STATUS_RESOURCE_EXHAUSTED, over);
        return;
    }
    start_recv(s);
}

/* After a tokens reload: a stream keeps running only while its token is
 * still in the file and still covers its job. */
int grist__still_allowed(struct grist_daemon *d, struct grist_principal *who, const char *job,
                         enum grist_need need)
{
    if (who->role == GRIST_ROLE_OPEN)
        return d->auth == NULL;
    struct grist_principal now;
    if (grist__auth_lookup(d->auth, who->digest, &now) < 0)
        return 0;
    *who = now; /* a changed role or glob applies from here on */
    return !job || grist__auth_allows(who, need, job);
}

void grist__streams_recheck(struct grist_daemon *d)
{
    for (struct grist_stream *s = d->streams; s; s = s->next)
        if (!s->finishing &&
            !grist__still_allowed(d, &s->who, s->job ? s->job->id : NULL, GRIST_NEED_ATTACH))
            finish(s, GRPC_STATUS_UNAUTHENTICATED,
                   "the token of this stream was revoked or no longer covers its job");
}

void grist__streams_finish_all(struct grist_daemon *d)
{
    for (struct grist_stream *s = d->streams; s; s = s->next)
        finish(s, GRPC_STATUS_UNAVAILABLE, "gristd is shutting down");
}

void grist__attach_tick(struct grist_daemon *d)
{
    const uint64_t now = grist__now_ms(d);
    const uint64_t limit = (uint64_t)(d->cfg->hello_timeout * 1000.0);
    for (struct grist_stream *s = d->streams, *next; s; s = next) {
        next = s->next;
        if (!s->job && !s->finishing && now - s->opened_ms >= limit) {
            char msg[96];
            snprintf(msg, sizeof(msg), "no Hello within --hello-timeout %.3g s",
                     d->cfg->hello_timeout);
            finish(s, GRPC_STATUS_DEADLINE_EXCEEDED, msg);
        }
    }
}
