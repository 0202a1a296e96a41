/*
 * DESIGN: libgrist (see include/grist/client.h).
 *
 * Threads: the caller's threads only take c->mu briefly to queue a summary
 * or to copy the latest hyperparameters; they never start a send (the
 * sender thread batches what is queued and sends it). The background
 * thread owns the completion queue: it starts calls, handles
 * every completion under c->mu, and schedules reconnects.
 *
 * A session's stream: [SEND_INITIAL_METADATA + Hello], RECV_STATUS_ON_CLIENT,
 * then always one RECV_MESSAGE outstanding. Summaries are sent one at a time
 * after Welcome (one send in flight per call). When the stream ends for any
 * reason, the session waits backoff * (0.8 .. 1.2) and attaches again,
 * doubling backoff up to its cap; Welcome resets it. Queued summaries
 * survive reconnects; the oldest are dropped when the queue is full.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "grist/client.h"
#include "grist/shard.h"
#include "grist/stats.h"
#include "grist/v1/grist.pb-c.h"
#include "internal.h"
#include "queue.h"
#include "sketcher.h"

enum { TAG_SEND, TAG_RECV, TAG_STATUS };

struct tag {
    struct grist_session *s;
    int kind;
};

struct grist_session {
    struct grist_client *c;
    uint32_t tgt; /* index of its replica in c->targets: the shard of its job, or a redirect */
    struct grist_session *next;
    uint8_t *hello;
    size_t hello_len;
    uint32_t ngroups, m;
    enum grist_sketch_kind kind;
    uint64_t *gsize; /* elements per group */
    uint32_t *sample; /* block sketch sampling per group, resolved at attach */
    float *finished; /* ngroups * m, the committed step sketch */

    struct grist__ring queue; /* encoded summaries waiting to be sent */
    struct grist__sketcher *sketcher; /* step sketches (lazy) */

    /* stream, under c->mu */
    grpc_call *call;
    struct tag tags[3];
    int ops; /* batches outstanding on the current call */
    int active, connected, send_in_flight, status_done, closing, dead;
    int redirects; /* redirects followed since the last Welcome: only the first is at once */
    int batches; /* the daemon's Welcome said accepts_batches */
    grpc_byte_buffer *send_buf, *recv_buf;
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
    char last_error[256]; /* details of the last stream that ended with an error */
    double next_attempt;
    struct grist__backoff backoff;
    uint32_t seed;

    uint64_t version, step;
    double *applied; /* 4 * ngroups: lr, beta, lr_scale, update_scale of the next summary */
    struct grist_group_hyperparams *hp;
    struct grist_session_stats st;
    pthread_cond_t cv; /* ready / dead */
};

#define GRIST_MAX_TARGETS 64

struct grist_client {
    char *target;
    struct grist_client_options opt; /* its strings are the copies below */
    char *token, *tls_ca, *tls_cert, *tls_key, *tls_name;
    grpc_metadata auth_md; /* authorization: Bearer TOKEN */
    size_t nmd;
    /* replicas: the address list ("a,b,c" = shards 0, 1, 2), then the
     * addresses redirects named; a channel each, made when first used
     * (guarded by mu after open) */
    char *targets[GRIST_MAX_TARGETS];
    grpc_channel *chans[GRIST_MAX_TARGETS];
    uint32_t ntargets, nlisted;
    grpc_channel_credentials *creds;
    grpc_arg chargs[9];
    grpc_channel_args ca;
    grpc_completion_queue *cq;
    pthread_t thread;
    pthread_t sender; /* starts the sends grist_session_submit queued (sender_main) */
    pthread_cond_t send_cv;
    int sender_idle; /* the sender sleeps until signalled (no traffic for a while) */
    pthread_mutex_t mu;
    int stop;
    struct grist_session *sessions;
    uint64_t rng;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

size_t grist_client_options_size(void)
{
    return sizeof(struct grist_client_options);
}

void grist_client_options_default(struct grist_client_options *o)
{
    o->backoff_initial_s = 0.1;
    o->backoff_max_s = 5.0;
    o->queue_capacity = 1024;
    o->max_message_bytes = 64 << 20;
    o->keepalive_s = 15.0;
    o->token = NULL;
    o->tls_ca_file = o->tls_cert_file = o->tls_key_file = o->tls_server_name = NULL;
}

grpc_channel *grist__client_channel(struct grist_client *c)
{
    return c->chans[0]; /* queries go to the first replica */
}

static grpc_channel *channel_locked(struct grist_client *c, uint32_t i)
{
    if (!c->chans[i])
        c->chans[i] = grpc_channel_create(c->targets[i], c->creds, &c->ca);
    return c->chans[i];
}

/* The index of addr in the targets, appended when new; 0 when full. */
static uint32_t target_locked(struct grist_client *c, const char *addr, size_t len)
{
    for (uint32_t i = 0; i < c->ntargets; i++)
        if (strlen(c->targets[i]) == len && memcmp(c->targets[i], addr, len) == 0)
            return i;
    if (c->ntargets == GRIST_MAX_TARGETS)
        return 0;
    char *t = malloc(len + 1);
    if (!t)
        return 0;
    memcpy(t, addr, len);
    t[len] = '\0';
    c->targets[c->ntargets] = t;
    return c->ntargets++;
}

uint32_t grist_shard_pick(const char *job_id, uint32_t n)
{
    return job_id ? grist_shard_of(job_id, n) : 0;
}

const char *grist_session_address(const struct grist_session *s)
{
    pthread_mutex_lock(&s->c->mu);
    const char *a = s->c->targets[s->tgt];
    pthread_mutex_unlock(&s->c->mu);
    return a;
}

const grpc_metadata *grist__client_metadata(const struct grist_client *c, size_t *count)
{
    *count = c->nmd;
    return c->nmd ? &c->auth_md : NULL;
}

static char *dup_or_null(const char *s, int *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

/* A whole PEM file as a string (NULL: errno set). */
static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 16384, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1 || cap > (1u << 22))
            break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    else
        errno = ENOMEM;
    return buf;
}

static void free_strings(struct grist_client *c)
{
    if (c->token)
        memset(c->token, 0, strlen(c->token));
    free(c->token);
    free(c->tls_ca);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tls_name);
    if (c->nmd) {
        grpc_slice_unref(c->auth_md.key);
        grpc_slice_unref(c->auth_md.value);
    }
}

/* The channel credentials of c's options: TLS when a CA is named. */
static int make_credentials(struct grist_client *c, grpc_channel_credentials **out)
{
    if (!c->tls_ca) {
        if (c->tls_cert || c->tls_key)
            return -EINVAL; /* a client certificate without TLS would go unused */
        *out = grpc_insecure_credentials_create();
        return *out ? 0 : -ENOMEM;
    }
    if (!c->tls_cert != !c->tls_key)
        return -EINVAL;
    int r = 0;
    char *ca = read_pem(c->tls_ca);
    char *cert = c->tls_cert ? read_pem(c->tls_cert) : NULL;
    char *key = c->tls_key ? read_pem(c->tls_key) : NULL;
    if (!ca || (c->tls_cert && (!cert || !key))) {
        r = errno == ENOMEM ? -ENOMEM : -ENOENT;
    } else {
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        *out = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
        if (!*out)
            r = -EINVAL;
    }
    if (key)
        memset(key, 0, strlen(key));
    free(ca);
    free(cert);
    free(key);
    return r;
}

uint32_t grist_sketch_group_seed(uint32_t job_seed, uint32_t group_index)
{
    return grist_sketch_seed(job_seed, group_index);
}

/* ---- stream handling (background thread or caller, under c->mu) ---- */

/* Largest batch: summaries and bytes (a daemon's default limit is 64 MiB). */
#define GRIST__BATCH_MAX 256u
#define GRIST__BATCH_BYTES ((size_t)1 << 20)

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* The next message to send: the oldest queued summary alone, or, when the
 * daemon accepts batches and more are queued, up to GRIST__BATCH_MAX of them
 * as one WorkerMessage.batch. Each queued message is WorkerMessage field 2
 * (tag byte 0x12, length, Summary); as SummaryBatch field 1 the same bytes
 * only take tag 0x0a, so a batch is the queued messages re-tagged, behind
 * WorkerMessage field 3 (0x1a) and the total length. 0, or -1 when nothing
 * is queued (or out of memory: the summaries stay queued). */
static int next_message(struct grist_session *s, struct grist__msg *out, uint32_t *count)
{
    *count = 1;
    if (!s->batches || s->queue.len < 2)
        return grist__ring_pop(&s->queue, out);
    size_t total = 0;
    uint32_t n = 0;
    while (n < s->queue.len && n < GRIST__BATCH_MAX) {
        const struct grist__msg *q = grist__ring_peek(&s->queue, n);
        if (n > 0 && total + q->len > GRIST__BATCH_BYTES)
            break;
        total += q->len;
        n++;
    }
    if (n < 2)
        return grist__ring_pop(&s->queue, out);
    uint8_t *buf = malloc(total + 11);
    if (!buf)
        return grist__ring_pop(&s->queue, out);
    size_t off = 0;
    buf[off++] = 0x1a;
    off += put_varint(buf + off, total);
    for (uint32_t k = 0; k < n; k++) {
        struct grist__msg q;
        grist__ring_pop(&s->queue, &q);
        memcpy(buf + off, q.buf, q.len);
        buf[off] = 0x0a;
        off += q.len;
        free(q.buf);
    }
    out->buf = buf;
    out->len = off;
    *count = n;
    return 0;
}

static void end_call_locked(struct grist_session *s);

/* Start the next send of s (the oldest queued summary, or a batch), called
 * with c->mu held. With mu == NULL the lock stays held throughout (the gRPC
 * thread, inside handle_locked). With mu, it is released around
 * grpc_call_start_batch (which may write the socket: 100-300 us), so that the
 * training loop's submit and latest never wait for it; the call stays alive
 * meanwhile, since the pending op (ops) keeps end_call_locked from running
 * until its completion is handled. Once the batch is started the session may
 * complete, close and be freed before the lock is taken again: with mu, a
 * return of 1 means the lock was released (the caller must not touch s, nor
 * the session list it walked); 0: nothing to send. */
static int start_send(struct grist_session *s, pthread_mutex_t *mu)
{
    struct grist__msg m;
    uint32_t count;
    if (!s->connected || s->send_in_flight || !s->call || next_message(s, &m, &count) < 0)
        return 0;
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)m.buf, m.len);
    free(m.buf);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    s->send_buf = bb;
    s->send_in_flight = 1;
    s->ops++;
    s->st.sent += count;
    grpc_call *call = s->call;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    if (mu)
        pthread_mutex_unlock(mu);
    const grpc_call_error e = grpc_call_start_batch(call, &op, 1, &s->tags[TAG_SEND], NULL);
    if (mu)
        pthread_mutex_lock(mu);
    if (e != GRPC_CALL_OK) { /* no completion will come: our op kept s alive until here */
        s->send_in_flight = 0;
        s->ops--;
        s->st.sent -= count;
        if (s->send_buf == bb)
            s->send_buf = NULL;
        grpc_byte_buffer_destroy(bb);
        pthread_cond_broadcast(&s->cv);
        /* with the lock held throughout, handle_locked ends the call itself */
        if (mu && s->status_done && s->ops == 0)
            end_call_locked(s);
    }
    return 1;
}

static void start_send_locked(struct grist_session *s)
{
    (void)start_send(s, NULL);
}

static void post_recv_locked(struct grist_session *s)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &s->recv_buf;
    if (grpc_call_start_batch(s->call, ops, n, &s->tags[TAG_RECV], NULL) == GRPC_CALL_OK)
        s->ops++;
}

static void start_call_locked(struct grist_client *c, struct grist_session *s)
{
    grpc_slice method = grpc_slice_from_static_string("/grist.v1.Grist/Attach");
    s->call =
        grpc_channel_create_call(channel_locked(c, s->tgt), NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                 method, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!s->call) {
        s->next_attempt = mono() + grist__backoff_next(&s->backoff);
        return;
    }
    s->active = 1;
    s->status_done = 0;
    s->connected = 0;
    s->ops = 0;
    grpc_metadata_array_init(&s->md_init);
    grpc_metadata_array_init(&s->md_trail);
    s->details = grpc_empty_slice();
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)s->hello, s->hello_len);
    s->send_buf = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->nmd;
    ops[0].data.send_initial_metadata.metadata = c->nmd ? &c->auth_md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send_buf;
    if (grpc_call_start_batch(s->call, ops, 2, &s->tags[TAG_SEND], NULL) == GRPC_CALL_OK) {
        s->send_in_flight = 1;
        s->ops++;
    }
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &s->md_trail;
    ops[0].data.recv_status_on_client.status = &s->status;
    ops[0].data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, ops, 1, &s->tags[TAG_STATUS], NULL) == GRPC_CALL_OK)
        s->ops++;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->md_init;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &s->recv_buf;
    if (grpc_call_start_batch(s->call, ops, 2, &s->tags[TAG_RECV], NULL) == GRPC_CALL_OK)
        s->ops++;
}

/* A replica of a sharded gristd refused the job (FAILED_PRECONDITION) and
 * named the right one: the session goes there at once. @return 1 if so. */
static int follow_redirect_locked(struct grist_session *s)
{
    struct grist_client *c = s->c;
    if (s->status != GRPC_STATUS_FAILED_PRECONDITION)
        return 0;
    int to = -1;
    for (size_t i = 0; i < s->md_trail.count; i++) {
        const grpc_metadata *m = &s->md_trail.metadata[i];
        const size_t kl = GRPC_SLICE_LENGTH(m->key), vl = GRPC_SLICE_LENGTH(m->value);
        const char *k = (const char *)GRPC_SLICE_START_PTR(m->key);
        const char *v = (const char *)GRPC_SLICE_START_PTR(m->value);
        if (kl == 19 && memcmp(k, "grist-shard-address", 19) == 0 && vl > 0 && vl < 256) {
            /* with a replica list, only its members: the token goes along */
            int found = -1;
            for (uint32_t t = 0; t < c->ntargets; t++)
                if (strlen(c->targets[t]) == vl && memcmp(c->targets[t], v, vl) == 0)
                    found = (int)t;
            if (found < 0 && c->nlisted <= 1 && c->ntargets < GRIST_MAX_TARGETS)
                found = (int)target_locked(c, v, vl);
            if (found >= 0) {
                to = found;
                break; /* the address wins over the index */
            }
        }
        if (kl == 11 && memcmp(k, "grist-shard", 11) == 0 && vl > 0 && vl < 8) {
            char num[8];
            memcpy(num, v, vl);
            num[vl] = '\0';
            const long idx = strtol(num, NULL, 10);
            if (idx >= 0 && (uint32_t)idx < c->nlisted)
                to = (int)idx; /* the list given to grist_client_open is in shard order */
        }
    }
    if (to < 0 || (uint32_t)to == s->tgt)
        return 0;
    s->tgt = (uint32_t)to;
    /* replicas that disagree (a change of N under way) would bounce the
     * session between them: the first redirect is followed at once, the
     * next ones after the usual backoff */
    return s->redirects++ == 0;
}

static void end_call_locked(struct grist_session *s)
{
    /* status received and no batch outstanding: read what the call owns
     * (its trailing metadata), then release it */
    const int redirected = follow_redirect_locked(s);
    grpc_call_unref(s->call);
    s->call = NULL;
    grpc_metadata_array_destroy(&s->md_init);
    grpc_metadata_array_destroy(&s->md_trail);
    if (s->status != GRPC_STATUS_OK) {
        size_t n = GRPC_SLICE_LENGTH(s->details);
        if (n >= sizeof(s->last_error))
            n = sizeof(s->last_error) - 1;
        memcpy(s->last_error, GRPC_SLICE_START_PTR(s->details), n);
        s->last_error[n] = '\0';
    }
    grpc_slice_unref(s->details);
    s->active = 0;
    s->connected = 0;
    s->st.connected = 0;
    s->st.failures++;
    s->st.last_status = (int)s->status;
    s->next_attempt = redirected ? mono() : mono() + grist__backoff_next(&s->backoff);
    /* (follow_redirect_locked has already moved the session if it was told to) */
    if (s->closing) {
        s->dead = 1;
        pthread_cond_broadcast(&s->cv);
    }
}

static void on_message_locked(struct grist_session *s, const uint8_t *buf, size_t len)
{
    Grist__V1__ServerMessage *m = grist__v1__server_message__unpack(NULL, len, buf);
    if (!m)
        return;
    if (m->msg_case == GRIST__V1__SERVER_MESSAGE__MSG_WELCOME) {
        if (m->welcome->job_seed != s->seed) /* a daemon of another seed rule: follow it */
            s->seed = m->welcome->job_seed;
        s->connected = 1;
        s->redirects = 0;
        s->batches = m->welcome->accepts_batches;
        s->st.connected = 1;
        s->st.attaches++;
        grist__backoff_reset(&s->backoff);
        pthread_cond_broadcast(&s->cv);
    } else if (m->msg_case == GRIST__V1__SERVER_MESSAGE__MSG_HYPERPARAMS) {
        const Grist__V1__Hyperparams *h = m->hyperparams;
        s->st.received++;
        /* a restarted daemon counts versions from 1 again: take any new message */
        if (h->n_groups == s->ngroups) {
            for (uint32_t g = 0; g < s->ngroups; g++) {
                s->hp[g].momentum = h->groups[g]->momentum;
                s->hp[g].lr_scale = h->groups[g]->lr_scale;
                s->hp[g].lr = h->groups[g]->lr;
                s->hp[g].confidence = h->groups[g]->confidence;
            }
            s->version++; /* local, monotonic across daemon restarts */
            s->step = h->step;
        }
    }
    grist__v1__server_message__free_unpacked(m, NULL);
}

static void handle_locked(struct tag *t, int ok)
{
    struct grist_session *s = t->s;
    s->ops--;
    switch (t->kind) {
    case TAG_SEND:
        s->send_in_flight = 0;
        pthread_cond_broadcast(&s->cv); /* grist_session_flush() */
        if (s->send_buf) {
            grpc_byte_buffer_destroy(s->send_buf);
            s->send_buf = NULL;
        }
        if (ok && !s->closing)
            start_send_locked(s);
        break;
    case TAG_RECV:
        if (ok && s->recv_buf) {
            grpc_byte_buffer_reader rd;
            grpc_byte_buffer_reader_init(&rd, s->recv_buf);
            grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
            grpc_byte_buffer_destroy(s->recv_buf);
            s->recv_buf = NULL;
            on_message_locked(s, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
            grpc_slice_unref(sl);
            if (!s->closing) {
                post_recv_locked(s);
                start_send_locked(s);
            }
        } else if (s->recv_buf) {
            grpc_byte_buffer_destroy(s->recv_buf);
            s->recv_buf = NULL;
        }
        break;
    case TAG_STATUS:
        s->status_done = 1;
        s->connected = 0;
        s->st.connected = 0;
        break;
    }
    if (s->status_done && s->ops == 0)
        end_call_locked(s);
}

/* How often the sender looks at the queues while summaries flow, and after
 * how long without any it sleeps until the next submit signals it. */
#define GRIST__SEND_POLL_S 0.025
#define GRIST__SEND_IDLE_S 1.0

/* The sender thread: starts the first send of every queue that went idle
 * (a completed send starts the next one itself, on the gRPC thread). */
static void *sender_main(void *arg)
{
    struct grist_client *c = arg;
    pthread_mutex_lock(&c->mu);
    double busy = mono();
    while (!c->stop) {
        const double now = mono();
    rescan:
        for (struct grist_session *s = c->sessions; s; s = s->next) {
            if (s->queue.len > 0 || s->send_in_flight)
                busy = now;
            /* a no-op unless connected, idle and queued; when it released the
             * lock the list may have changed: walk it again from the head */
            if (!s->closing && start_send(s, &c->mu))
                goto rescan;
        }
        if (now - busy > GRIST__SEND_IDLE_S) {
            c->sender_idle = 1;
            while (c->sender_idle && !c->stop)
                pthread_cond_wait(&c->send_cv, &c->mu);
            busy = mono();
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(GRIST__SEND_POLL_S * 1e9);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->send_cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void *thread_main(void *arg)
{
    struct grist_client *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        if (c->stop) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        const double now = mono();
        double wake = now + 0.2;
        for (struct grist_session *s = c->sessions; s; s = s->next) {
            if (s->active || s->closing)
                continue;
            if (now >= s->next_attempt)
                start_call_locked(c, s);
            else if (s->next_attempt < wake)
                wake = s->next_attempt;
        }
        pthread_mutex_unlock(&c->mu);
        gpr_timespec dl =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_micros((int64_t)((wake - now) * 1e6), GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(c->cq, dl, NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            pthread_mutex_lock(&c->mu);
            handle_locked(ev.tag, ev.success);
            pthread_mutex_unlock(&c->mu);
        } else if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
    }
    return NULL;
}

int grist_client_open(const char *address, const struct grist_client_options *opt,
                      struct grist_client **out)
{
    if (!address || !out)
        return -EINVAL;
    struct grist_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    if (opt)
        c->opt = *opt;
    else
        grist_client_options_default(&c->opt);
    if (c->opt.queue_capacity == 0)
        c->opt.queue_capacity = 1024;
    int oom = 0, r = -ENOMEM;
    c->token = dup_or_null(c->opt.token, &oom);
    c->tls_ca = dup_or_null(c->opt.tls_ca_file, &oom);
    c->tls_cert = dup_or_null(c->opt.tls_cert_file, &oom);
    c->tls_key = dup_or_null(c->opt.tls_key_file, &oom);
    c->tls_name = dup_or_null(c->opt.tls_server_name, &oom);
    c->opt.token = c->token;
    c->opt.tls_ca_file = c->tls_ca;
    c->opt.tls_cert_file = c->tls_cert;
    c->opt.tls_key_file = c->tls_key;
    c->opt.tls_server_name = c->tls_name;
    int bad_token = 0;
    for (const char *p = c->token; p && *p; p++)
        bad_token |= (unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f;
    if (oom || bad_token || (c->token && !c->token[0])) {
        r = oom ? -ENOMEM : -EINVAL;
        goto free_strings;
    }
    if (c->token) {
        char *v = malloc(strlen(c->token) + 8);
        if (!v)
            goto free_strings;
        strcpy(v, "Bearer ");
        strcat(v, c->token);
        c->auth_md.key = grpc_slice_from_static_string("authorization");
        c->auth_md.value = grpc_slice_from_copied_string(v);
        memset(v, 0, strlen(v));
        free(v);
        c->nmd = 1;
    }
    if (!(c->target = strdup(address)))
        goto free_md;
    c->rng = (uint64_t)(mono() * 1e9) ^ (uint64_t)(uintptr_t)c;
    grpc_init();
    grpc_arg args[8] = {
        {GRPC_ARG_INTEGER,
         (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         {.integer = c->opt.max_message_bytes}},
        {GRPC_ARG_INTEGER,
         (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         {.integer = c->opt.max_message_bytes}},
        {GRPC_ARG_INTEGER, (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, {.integer = 100}},
        {GRPC_ARG_INTEGER,
         (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
         {.integer = (int)(c->opt.backoff_max_s * 1000)}},
        /* pings on the connection: a peer that stops answering fails the
         * stream (UNAVAILABLE) and the session reconnects with backoff */
        {GRPC_ARG_INTEGER,
         (char *)GRPC_ARG_KEEPALIVE_TIME_MS,
         {.integer = (int)(c->opt.keepalive_s * 1000)}},
        {GRPC_ARG_INTEGER, (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = 5000}},
        {GRPC_ARG_INTEGER, (char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, {.integer = 1}},
        {GRPC_ARG_INTEGER, (char *)GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}},
    };
    grpc_channel_args ca = {c->opt.keepalive_s > 0 ? 8u : 4u, args};
    grpc_arg all[9];
    memcpy(all, args, ca.num_args * sizeof(args[0]));
    if (c->tls_name) { /* the name to check in the server's certificate */
        all[ca.num_args].type = GRPC_ARG_STRING;
        all[ca.num_args].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        all[ca.num_args++].value.string = c->tls_name;
    }
    memcpy(c->chargs, all, sizeof(all));
    c->ca.num_args = ca.num_args;
    c->ca.args = c->chargs;
    if ((r = make_credentials(c, &c->creds)) < 0)
        goto free_targets;
    /* "a,b,c": the replicas of a sharded gristd, in shard order */
    for (const char *p = address; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len && c->ntargets < GRIST_MAX_TARGETS)
            target_locked(c, p, len);
        p += len + (e != NULL);
    }
    c->nlisted = c->ntargets;
    r = -EINVAL;
    if (c->ntargets == 0)
        goto free_targets;
    r = -ENOMEM;
    channel_locked(c, 0); /* queries go to the first */
    c->cq = grpc_completion_queue_create_for_next(NULL);
    if (!c->chans[0] || !c->cq)
        goto free_channels;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->send_cv, NULL);
    /* GRIST_CLIENT_FAULT=sender|thread: that thread "fails" to start, so the
     * unwinding below is tested (tests/unit/test_client_open.c), not only written */
    const char *fault = getenv("GRIST_CLIENT_FAULT");
    r = -EAGAIN;
    if ((fault && strcmp(fault, "sender") == 0) ||
        pthread_create(&c->sender, NULL, sender_main, c) != 0)
        goto destroy_sync;
    if ((fault && strcmp(fault, "thread") == 0) ||
        pthread_create(&c->thread, NULL, thread_main, c) != 0)
        goto stop_sender;
    *out = c;
    return 0;

    /* Unwinding, in the reverse order of the above. */
stop_sender:
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->send_cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->sender, NULL);
destroy_sync:
    pthread_cond_destroy(&c->send_cv);
    pthread_mutex_destroy(&c->mu);
free_channels:
    if (c->cq)
        grpc_completion_queue_destroy(c->cq);
    for (uint32_t i = 0; i < c->ntargets; i++)
        if (c->chans[i])
            grpc_channel_destroy(c->chans[i]);
free_targets:
    for (uint32_t i = 0; i < c->ntargets; i++)
        free(c->targets[i]);
    if (c->creds)
        grpc_channel_credentials_release(c->creds);
    grpc_shutdown();
    free(c->target);
free_md:
    if (c->nmd)
        grpc_slice_unref(c->auth_md.value);
free_strings:
    free_strings(c);
    free(c);
    return r;
}

static void session_free(struct grist_session *s)
{
    grist__sketcher_free(s->sketcher);
    free(s->gsize);
    free(s->sample);
    free(s->finished);
    grist__ring_free(&s->queue);
    free(s->hello);
    free(s->hp);
    free(s->applied);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static uint8_t *encode_hello(const struct grist_attach_options *o, uint32_t m,
                             enum grist_sketch_kind kind, const uint32_t *sample, size_t *len)
{
    Grist__V1__GroupSpec *gs = calloc(o->ngroups, sizeof(*gs));
    Grist__V1__GroupSpec **gp = calloc(o->ngroups, sizeof(*gp));
    uint8_t *buf = NULL;
    if (!gs || !gp)
        goto out;
    for (uint32_t g = 0; g < o->ngroups; g++) {
        grist__v1__group_spec__init(&gs[g]);
        gs[g].name = (char *)(o->groups[g].name ? o->groups[g].name : "");
        gs[g].num_elements = o->groups[g].num_elements;
        /* the enum's values are the wire's (checked at attach) */
        gs[g].optimizer = (Grist__V1__OptimizerKind)o->groups[g].optimizer;
        gs[g].lr = o->groups[g].lr;
        gs[g].beta = o->groups[g].beta;
        gs[g].sketch_sample = sample[g];
        gp[g] = &gs[g];
    }
    Grist__V1__Policy pol = GRIST__V1__POLICY__INIT;
    pol.mode = (char *)(o->mode ? o->mode : "");
    pol.noise_correction = (char *)(o->noise_correction ? o->noise_correction : "");
    pol.lr_coupling = (char *)(o->lr_coupling ? o->lr_coupling : "");
    pol.solve_every = o->solve_every;
    pol.min_steps = o->min_steps;
    pol.beta_min = o->beta_min;
    pol.beta_max = o->beta_max;
    pol.n_candidates = o->ncandidates;
    pol.candidates = (double *)o->candidates;
    pol.select_on = (char *)(o->select_on ? o->select_on : "");
    pol.hysteresis_z = o->hysteresis_z;
    pol.hysteresis_h = o->hysteresis_h;
    pol.ema_gamma = o->ema_gamma;
    pol.j_ema = o->j_ema;
    pol.radius = o->radius;
    pol.rule = (char *)(o->rule ? o->rule : "");
    pol.hysteresis_z_fast = o->hysteresis_z_fast;
    Grist__V1__Hello h = GRIST__V1__HELLO__INIT;
    h.job_id = (char *)o->job;
    h.rank = o->rank;
    h.world_size = o->world_size;
    h.n_groups = o->ngroups;
    h.groups = gp;
    h.sketch_dim = m;
    h.sketch_kind = kind == GRIST_SKETCH_BLOCK ? GRIST__V1__SKETCH_KIND__SKETCH_KIND_BLOCK
                                               : GRIST__V1__SKETCH_KIND__SKETCH_KIND_HASHED;
    h.policy = &pol;
    Grist__V1__WorkerMessage wm = GRIST__V1__WORKER_MESSAGE__INIT;
    wm.msg_case = GRIST__V1__WORKER_MESSAGE__MSG_HELLO;
    wm.hello = &h;
    *len = grist__v1__worker_message__get_packed_size(&wm);
    buf = malloc(*len);
    if (buf)
        grist__v1__worker_message__pack(&wm, buf);
out:
    free(gs);
    free(gp);
    return buf;
}

int grist_session_attach(struct grist_client *c, const struct grist_attach_options *o,
                         struct grist_session **out)
{
    if (!c || !o || !out || !o->job || !o->job[0] || strlen(o->job) > 128 || !o->groups ||
        o->ngroups == 0 || o->world_size == 0 || o->rank >= o->world_size)
        return -EINVAL;
    const uint32_t m = o->sketch_dim ? o->sketch_dim : 1024;
    int r = grist_sketch_check_dim(m);
    if (r < 0)
        return r;
    enum grist_sketch_kind kind = GRIST_SKETCH_BLOCK;
    if (o->sketch_kind && grist_sketch_kind_parse(o->sketch_kind, &kind) < 0)
        return -EINVAL;
    for (uint32_t g = 0; g < o->ngroups; g++) {
        if (o->groups[g].num_elements >= ((uint64_t)1 << 32))
            return GRIST_ETOOBIG;
        if (o->groups[g].optimizer < GRIST_OPT_SGD || o->groups[g].optimizer > GRIST_OPT_RADAM)
            return -EINVAL;
        const uint32_t n = o->groups[g].sketch_sample;
        if (n > 1 && (kind != GRIST_SKETCH_BLOCK || grist_sketch_check_sample(n) < 0))
            return -EINVAL;
    }
    if (o->ncandidates > GRIST_MAX_CANDIDATES || (o->ncandidates && !o->candidates))
        return -EINVAL;
    for (uint32_t k = 0; k < o->ncandidates; k++)
        if (!(o->candidates[k] >= 0.0 && o->candidates[k] < 1.0))
            return -EINVAL;
    struct grist_session *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->c = c;
    s->ngroups = o->ngroups;
    s->m = m;
    s->kind = kind;
    const int qr = grist__ring_init(&s->queue, c->opt.queue_capacity);
    s->gsize = malloc(o->ngroups * sizeof(*s->gsize));
    if (s->gsize)
        for (uint32_t g = 0; g < o->ngroups; g++)
            s->gsize[g] = o->groups[g].num_elements;
    s->sample = malloc(o->ngroups * sizeof(*s->sample));
    if (s->sample)
        for (uint32_t g = 0; g < o->ngroups; g++) {
            const uint32_t n = o->groups[g].sketch_sample;
            s->sample[g] = n ? n
                : kind == GRIST_SKETCH_BLOCK
                ? grist_sketch_sample_auto(o->groups[g].num_elements, m)
                : 1;
        }
    s->hp = calloc(o->ngroups, sizeof(*s->hp));
    s->applied = calloc(4 * (size_t)o->ngroups, sizeof(double));
    s->hello = s->sample ? encode_hello(o, m, kind, s->sample, &s->hello_len) : NULL;
    s->seed = grist_sketch_job_seed(o->job);
    s->tgt = c->nlisted > 1 ? grist_shard_of(o->job, c->nlisted) : 0; /* its job's replica */
    pthread_cond_init(&s->cv, NULL);
    if (qr < 0 || !s->hp || !s->hello || !s->gsize || !s->sample || !s->applied) {
        session_free(s);
        return -ENOMEM;
    }
    for (int k = 0; k < 3; k++)
        s->tags[k] = (struct tag){s, k};
    pthread_mutex_lock(&c->mu);
    c->rng = c->rng * 6364136223846793005ull + 1442695040888963407ull;
    grist__backoff_init(&s->backoff, c->opt.backoff_initial_s, c->opt.backoff_max_s, c->rng);
    pthread_mutex_unlock(&c->mu);
    s->next_attempt = 0;
    pthread_mutex_lock(&c->mu);
    s->next = c->sessions;
    c->sessions = s;
    pthread_mutex_unlock(&c->mu);
    *out = s;
    return 0;
}

/* The CLOCK_REALTIME instant timeout_s from now (pthread_cond_timedwait). */
static struct timespec deadline(double timeout_s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const double end = ts.tv_sec + ts.tv_nsec * 1e-9 + timeout_s;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    return ts;
}

int grist_session_wait_ready(struct grist_session *s, double timeout_s)
{
    struct grist_client *c = s->c;
    struct timespec ts = deadline(timeout_s);
    pthread_mutex_lock(&c->mu);
    int r = 0;
    while (!s->connected && r == 0)
        r = pthread_cond_timedwait(&s->cv, &c->mu, &ts);
    const int ok = s->connected;
    pthread_mutex_unlock(&c->mu);
    return ok ? 0 : -ETIMEDOUT;
}

uint32_t grist_session_job_seed(struct grist_session *s)
{
    pthread_mutex_lock(&s->c->mu);
    uint32_t seed = s->seed;
    pthread_mutex_unlock(&s->c->mu);
    return seed;
}

int grist_session_set_applied(struct grist_session *s, const double *applied)
{
    if (!s || !applied)
        return -EINVAL;
    for (uint32_t g = 0; g < s->ngroups; g++) {
        const double *a = applied + 4 * (size_t)g;
        for (int k = 0; k < 4; k++)
            if (!isfinite(a[k]) || a[k] < 0.0)
                return -EINVAL;
        if (a[1] >= 1.0)
            return -EINVAL;
    }
    memcpy(s->applied, applied, 4 * (size_t)s->ngroups * sizeof(double));
    return 0;
}

int grist_session_submit(struct grist_session *s, uint64_t step, const float *sketches,
                         const double *sq_norms, const uint32_t *batch_sizes, int validation)
{
    if (!s || !sketches)
        return -EINVAL;
    const size_t gm = (size_t)s->ngroups * s->m;
    for (size_t i = 0; i < gm; i++)
        if (!isfinite(sketches[i]))
            return GRIST_ENONFINITE;
    for (uint32_t g = 0; sq_norms && g < s->ngroups; g++)
        if (!isfinite(sq_norms[g]))
            return GRIST_ENONFINITE;
    Grist__V1__GroupSummary *gs = calloc(s->ngroups, sizeof(*gs));
    Grist__V1__GroupSummary **gp = calloc(s->ngroups, sizeof(*gp));
    uint8_t *buf = NULL;
    size_t len = 0;
    if (gs && gp) {
        for (uint32_t g = 0; g < s->ngroups; g++) {
            grist__v1__group_summary__init(&gs[g]);
            gs[g].sq_norm = sq_norms ? sq_norms[g] : 0.0;
            gs[g].n_sketch = s->m;
            gs[g].sketch = (float *)sketches + (size_t)g * s->m;
            gs[g].batch_size = batch_sizes ? batch_sizes[g] : 0;
            gs[g].validation = validation != 0;
            if (!validation) {
                gs[g].lr = s->applied[4 * g];
                gs[g].beta = s->applied[4 * g + 1];
                gs[g].lr_scale = s->applied[4 * g + 2];
                gs[g].update_scale = s->applied[4 * g + 3];
            }
            gp[g] = &gs[g];
        }
        Grist__V1__Summary sm = GRIST__V1__SUMMARY__INIT;
        sm.step = step;
        sm.n_groups = s->ngroups;
        sm.groups = gp;
        Grist__V1__WorkerMessage wm = GRIST__V1__WORKER_MESSAGE__INIT;
        wm.msg_case = GRIST__V1__WORKER_MESSAGE__MSG_SUMMARY;
        wm.summary = &sm;
        len = grist__v1__worker_message__get_packed_size(&wm);
        buf = malloc(len);
        if (buf)
            grist__v1__worker_message__pack(&wm, buf);
    }
    free(gs);
    free(gp);
    if (!buf)
        return -ENOMEM;
    struct grist_client *c = s->c;
    pthread_mutex_lock(&c->mu);
    s->st.dropped += grist__ring_push(&s->queue, (struct grist__msg){buf, len});
    s->st.submitted++;
    /* the send itself (grpc_call_start_batch, which may write the socket on
     * the calling thread: about 100 us measured) runs on the sender thread,
     * never on the training loop's, and the loop does not wake it either (a
     * wake-up per step cost another 50 us here, client/README.md): while
     * summaries flow the sender looks every GRIST__SEND_POLL_S; a send in
     * flight picks the queue up itself when it completes */
    if (c->sender_idle) {
        c->sender_idle = 0;
        pthread_cond_signal(&c->send_cv);
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int grist_session_sketch_kind(const struct grist_session *s)
{
    return s ? (int)s->kind : -EINVAL;
}

int grist_session_sketch_sample(const struct grist_session *s, uint32_t g)
{
    return s && g < s->ngroups ? (int)s->sample[g] : -EINVAL;
}

int grist_session_sketch_begin(struct grist_session *s, const struct grist_tensor *t,
                               uint32_t ntensors, int async)
{
    if (!s)
        return -EINVAL;
    const uint32_t job_seed = grist_session_job_seed(s);
    if (job_seed == 0)
        return -EAGAIN;
    /* only the caller's threads touch the sketcher; creating it lazily is
     * serialized by the caller (one training loop per session) */
    if (!s->sketcher) {
        int r = grist__sketcher_new(s->ngroups, s->m, s->kind, s->gsize, s->sample, &s->sketcher);
        if (r < 0)
            return r;
    }
    uint32_t seeds_small[16];
    uint32_t *seeds = s->ngroups <= 16 ? seeds_small : malloc(s->ngroups * sizeof(*seeds));
    if (!seeds)
        return -ENOMEM;
    for (uint32_t g = 0; g < s->ngroups; g++)
        seeds[g] = grist_sketch_seed(job_seed, g);
    const int r = grist__sketcher_begin(s->sketcher, seeds, t, ntensors, async);
    if (seeds != seeds_small)
        free(seeds);
    return r;
}

int grist_session_sketch_end(struct grist_session *s, uint64_t step, const uint32_t *batch_sizes,
                             int validation, int commit)
{
    if (!s)
        return -EINVAL;
    if (!s->sketcher)
        return -ENOENT;
    const double *acc, *sq;
    int r = grist__sketcher_wait(s->sketcher, &acc, &sq);
    if (r == -ENOENT)
        return r;
    if (r == 0 && commit) {
        const size_t gm = (size_t)s->ngroups * s->m;
        if (!s->finished)
            s->finished = malloc(gm * sizeof(*s->finished));
        if (!s->finished) {
            r = -ENOMEM;
        } else {
            for (uint32_t g = 0; g < s->ngroups; g++)
                grist_sketch_finish(acc + (size_t)g * s->m, s->m, s->finished + (size_t)g * s->m);
            r = grist_session_submit(s, step, s->finished, sq, batch_sizes, validation);
        }
    }
    grist__sketcher_reset(s->sketcher);
    return r;
}

int grist_session_latest(struct grist_session *s, struct grist_group_hyperparams *out,
                         uint32_t ngroups, uint64_t *version, uint64_t *step)
{
    if (!s || !out || ngroups != s->ngroups)
        return -EINVAL;
    pthread_mutex_lock(&s->c->mu);
    const uint64_t v = s->version;
    if (v)
        memcpy(out, s->hp, ngroups * sizeof(*out));
    if (version)
        *version = v;
    if (step)
        *step = s->step;
    pthread_mutex_unlock(&s->c->mu);
    return v ? 0 : -EAGAIN;
}

void grist_session_stats(struct grist_session *s, struct grist_session_stats *out)
{
    pthread_mutex_lock(&s->c->mu);
    *out = s->st;
    out->queued = s->queue.len;
    pthread_mutex_unlock(&s->c->mu);
}

int grist_session_last_error(struct grist_session *s, char *buf, size_t len)
{
    if (!s)
        return -EINVAL;
    pthread_mutex_lock(&s->c->mu);
    const int st = s->last_error[0] ? s->st.last_status : 0;
    if (buf && len) {
        strncpy(buf, s->last_error, len - 1);
        buf[len - 1] = '\0';
    }
    pthread_mutex_unlock(&s->c->mu);
    return st;
}

int grist_session_flush(struct grist_session *s, double timeout_s)
{
    if (!s)
        return -EINVAL;
    struct grist_client *c = s->c;
    struct timespec ts = deadline(timeout_s);
    pthread_mutex_lock(&c->mu);
    int r = 0;
    while ((s->queue.len > 0 || s->send_in_flight) && r == 0)
        r = pthread_cond_timedwait(&s->cv, &c->mu, &ts);
    const int done = s->queue.len == 0 && !s->send_in_flight;
    pthread_mutex_unlock(&c->mu);
    return done ? 0 : -ETIMEDOUT;
}

void grist_session_close(struct grist_session *s)
{
    if (!s)
        return;
    struct grist_client *c = s->c;
    pthread_mutex_lock(&c->mu);
    s->closing = 1;
    if (s->active && s->connected && !s->status_done) {
        /* half-close so that the daemon reads every message the transport
         * still holds and ends the stream with OK; cancel only if it does
         * not within a second (a completed send is buffered, not delivered) */
        struct timespec ts = deadline(1.0);
        int r = 0;
        while (s->send_in_flight && r == 0)
            r = pthread_cond_timedwait(&s->cv, &c->mu, &ts);
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        if (r == 0 &&
            grpc_call_start_batch(s->call, &op, 1, &s->tags[TAG_SEND], NULL) == GRPC_CALL_OK) {
            s->ops++;
            while (!s->dead && r == 0)
                r = pthread_cond_timedwait(&s->cv, &c->mu, &ts);
        }
    }
    if (s->active) {
        grpc_call_cancel(s->call, NULL);
        while (!s->dead)
            pthread_cond_wait(&s->cv, &c->mu);
    }
    for (struct grist_session **p = &c->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    pthread_mutex_unlock(&c->mu);
    session_free(s);
}

void grist_client_close(struct grist_client *c)
{
    if (!c)
        return;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        struct grist_session *s = c->sessions;
        pthread_mutex_unlock(&c->mu);
        if (!s)
            break;
        grist_session_close(s);
    }
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->send_cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->sender, NULL);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->send_cv);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(c->cq);
    for (uint32_t i = 0; i < c->ntargets; i++) {
        if (c->chans[i])
            grpc_channel_destroy(c->chans[i]);
        free(c->targets[i]);
    }
    grpc_channel_credentials_release(c->creds);
    free_strings(c);
    free(c->target);
    free(c);
    grpc_shutdown();
}
