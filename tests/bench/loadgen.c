/* DESIGN: see loadgen.h. One thread drives every call through one
 * completion queue; a call's tag is its stream's address with the operation
 * in the low two bits. Each stream has at most one send in flight (gRPC's
 * rule); a step falling due while it is still sending waits for that send
 * and the wait shows in the send lag. A summary is two slices: a few bytes
 * made per send (the WorkerMessage and Summary headers and the step number,
 * which protobuf lets come before the groups) and a body encoded once, before
 * the clock starts, and given to gRPC as a static slice (no copy). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "../rng.h"
#include "grist/v1/grist.pb-c.h"
#include "harness.h"
#include "loadgen.h"
#include "worker.h"

enum { OP_SEND = 0, OP_RECV = 1, OP_STATUS = 2 };
enum { VARIANTS = 8, CYCLE = 80 }; /* distinct rank streams; steps before a body repeats */

struct lg_stream {
    grpc_call *call;
    int job, rank;
    int send_busy, want_send, welcomed, recv_over, status_done, failed, closing;
    uint64_t want_step;
    double want_due;
    grpc_byte_buffer *send_buf, *recv_buf;
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
};

struct lg {
    const struct lg_opts *o;
    grpc_completion_queue *cq;
    struct lg_stream *s;
    int nstreams;
    uint8_t *body[VARIANTS][CYCLE];
    size_t blen[VARIANTS][CYCLE];
    double *last_sent; /* [job][step]: start of the last rank's send */
    int *nsent; /* [job][step]: ranks that have sent */
    double *lat, *lag;
    size_t nlat, caplat, nlag, caplag;
};

static void *tag_of(struct lg_stream *s, int op)
{
    return (void *)((uintptr_t)s | (uintptr_t)op);
}

static gpr_timespec in_s(double s)
{
    if (s < 0)
        s = 0;
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_micros((int64_t)(s * 1e6), GPR_TIMESPAN));
}

static void push(double **a, size_t *n, size_t *cap, double v)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 4096;
        *a = realloc(*a, *cap * sizeof(double));
    }
    (*a)[(*n)++] = v;
}

static int batch(struct lg_stream *s, grpc_op *ops, size_t n, int op)
{
    if (grpc_call_start_batch(s->call, ops, n, tag_of(s, op), NULL) != GRPC_CALL_OK) {
        s->failed = 1;
        return -1;
    }
    return 0;
}

static void post_recv(struct lg_stream *s, int first)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (first) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->md_init;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &s->recv_buf;
    batch(s, ops, n, OP_RECV);
}

static size_t varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* WorkerMessage{summary = Summary{step = t, groups = body}} as two slices. */
static void start_send(struct lg *g, struct lg_stream *s, uint64_t t, double due)
{
    const int v = s->rank % VARIANTS, c = (int)(t % CYCLE);
    uint8_t step[11], hdr[32];
    step[0] = 0x08; /* Summary.step, varint */
    const size_t sl = 1 + varint(step + 1, t);
    size_t h = 0;
    hdr[h++] = 0x12; /* WorkerMessage.summary, length-delimited */
    h += varint(hdr + h, sl + g->blen[v][c]);
    memcpy(hdr + h, step, sl);
    h += sl;
    grpc_slice parts[2] = {grpc_slice_from_copied_buffer((const char *)hdr, h),
                           grpc_slice_from_static_buffer(g->body[v][c], g->blen[v][c])};
    s->send_buf = grpc_raw_byte_buffer_create(parts, 2);
    grpc_slice_unref(parts[0]);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->send_buf;
    const double now = mono_s();
    if (batch(s, &op, 1, OP_SEND) != 0) {
        grpc_byte_buffer_destroy(s->send_buf);
        s->send_buf = NULL;
        return;
    }
    s->send_busy = 1;
    push(&g->lag, &g->nlag, &g->caplag, now - due);
    const size_t k = (size_t)s->job * ((size_t)g->o->steps + 1) + t;
    if (now > g->last_sent[k])
        g->last_sent[k] = now;
    g->nsent[k]++;
}

static void on_recv(struct lg *g, struct lg_stream *s)
{
    if (!s->recv_buf) {
        s->recv_over = 1;
        return;
    }
    const double now = mono_s();
    grpc_byte_buffer_reader rd;
    grpc_slice sl = grpc_empty_slice();
    if (grpc_byte_buffer_reader_init(&rd, s->recv_buf)) {
        sl = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
    }
    grpc_byte_buffer_destroy(s->recv_buf);
    s->recv_buf = NULL;
    Grist__V1__ServerMessage *m =
        grist__v1__server_message__unpack(NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    if (m && m->msg_case == GRIST__V1__SERVER_MESSAGE__MSG_WELCOME) {
        s->welcomed = 1;
    } else if (m && m->msg_case == GRIST__V1__SERVER_MESSAGE__MSG_HYPERPARAMS) {
        const uint64_t t = m->hyperparams->step;
        if (t >= 1 && t <= (uint64_t)g->o->steps) {
            const size_t k = (size_t)s->job * ((size_t)g->o->steps + 1) + t;
            if (g->nsent[k] == g->o->world)
                push(&g->lat, &g->nlat, &g->caplat, now - g->last_sent[k]);
        }
    }
    if (m)
        grist__v1__server_message__free_unpacked(m, NULL);
    post_recv(s, 0);
}

/* Wait for one event until the deadline; 0 on timeout. */
static int pump(struct lg *g, double timeout_s)
{
    grpc_event ev = grpc_completion_queue_next(g->cq, in_s(timeout_s), NULL);
    if (ev.type != GRPC_OP_COMPLETE)
        return 0;
    struct lg_stream *s = (struct lg_stream *)((uintptr_t)ev.tag & ~(uintptr_t)3);
    const int op = (int)((uintptr_t)ev.tag & 3);
    if (op == OP_SEND) {
        if (s->send_buf)
            grpc_byte_buffer_destroy(s->send_buf);
        s->send_buf = NULL;
        s->send_busy = 0;
        if (!ev.success)
            s->failed = 1;
        else if (s->want_send) {
            s->want_send = 0;
            start_send(g, s, s->want_step, s->want_due);
        }
    } else if (op == OP_RECV) {
        if (ev.success)
            on_recv(g, s);
        else
            s->recv_over = 1;
    } else {
        s->status_done = 1;
    }
    return 1;
}

static void prepare_bodies(struct lg *g)
{
    const uint32_t G = g->o->ngroups, m = g->o->m, n = G * m;
    float *sk = malloc((size_t)n * sizeof(float));
    double *prev = calloc(n, sizeof(double));
    Grist__V1__GroupSummary *gs = calloc(G, sizeof(*gs));
    Grist__V1__GroupSummary **gp = calloc(G, sizeof(*gp));
    for (int v = 0; v < VARIANTS; v++) {
        /* an AR(1) stream whose coefficient flips every CYCLE/2 steps, so
         * that the selection moves and pushes happen */
        struct grist_rng r;
        grist_rng_seed(&r, 7919u * (uint64_t)v + 1);
        memset(prev, 0, n * sizeof(double));
        for (int c = 0; c < CYCLE; c++) {
            const double rho = c < CYCLE / 2 ? 0.1 : 0.95;
            for (uint32_t i = 0; i < n; i++) {
                prev[i] = rho * prev[i] + sqrt(1 - rho * rho) * grist_rng_normal(&r);
                sk[i] = (float)prev[i];
            }
            for (uint32_t k = 0; k < G; k++) {
                grist__v1__group_summary__init(&gs[k]);
                gs[k].sq_norm = 1.0;
                gs[k].n_sketch = m;
                gs[k].sketch = sk + (size_t)k * m;
                gs[k].batch_size = 32;
                gp[k] = &gs[k];
            }
            Grist__V1__Summary su = GRIST__V1__SUMMARY__INIT; /* step 0: not encoded */
            su.n_groups = G;
            su.groups = gp;
            g->blen[v][c] = grist__v1__summary__get_packed_size(&su);
            g->body[v][c] = malloc(g->blen[v][c]);
            grist__v1__summary__pack(&su, g->body[v][c]);
        }
    }
    free(gs);
    free(gp);
    free(prev);
    free(sk);
}

static grpc_channel *channel(const char *target)
{
    grpc_arg args[3] =
        {{GRPC_ARG_INTEGER, (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = 64 << 20}},
         {GRPC_ARG_INTEGER, (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = 64 << 20}},
         /* a connection of its own, as a separate worker process would have */
         {GRPC_ARG_INTEGER, (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, {.integer = 1}}};
    grpc_channel_args ca = {3, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return ch;
}

static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
        ru.ru_stime.tv_usec * 1e-6;
}

static int cmpd(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double quantile(double *a, size_t n, double q)
{
    return n ? a[(size_t)((double)(n - 1) * q)] : 0;
}

int lg_run(const struct lg_opts *o, struct lg_result *r)
{
    memset(r, 0, sizeof(*r));
    struct lg g = {.o = o};
    g.nstreams = o->jobs * o->world;
    g.cq = grpc_completion_queue_create_for_next(NULL);
    g.s = calloc((size_t)g.nstreams, sizeof(*g.s));
    const size_t cells = (size_t)o->jobs * ((size_t)o->steps + 1);
    g.last_sent = calloc(cells, sizeof(double));
    g.nsent = calloc(cells, sizeof(int));
    prepare_bodies(&g);
    const int nch = o->conn_per_job ? o->jobs : g.nstreams;
    grpc_channel **ch = calloc((size_t)nch, sizeof(*ch));
    for (int c = 0; c < nch; c++)
        ch[c] = channel(o->target);

    /* open every stream: Hello with the initial metadata, a receive, the status */
    grpc_slice method = grpc_slice_from_static_string("/grist.v1.Grist/Attach");
    for (int i = 0; i < g.nstreams; i++) {
        struct lg_stream *s = &g.s[i];
        s->job = i / o->world;
        s->rank = i % o->world;
        s->call = grpc_channel_create_call(ch[o->conn_per_job ? s->job : i], NULL,
                                           GRPC_PROPAGATE_DEFAULTS, g.cq, method, NULL,
                                           gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_metadata_array_init(&s->md_init);
        grpc_metadata_array_init(&s->md_trail);
        s->details = grpc_empty_slice();
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        op.data.recv_status_on_client.trailing_metadata = &s->md_trail;
        op.data.recv_status_on_client.status = &s->status;
        op.data.recv_status_on_client.status_details = &s->details;
        batch(s, &op, 1, OP_STATUS);

        char job[64];
        snprintf(job, sizeof(job), "%s-%d", o->tag, s->job);
        struct tw_opts w = {.job = job,
                            .rank = (uint32_t)s->rank,
                            .world = (uint32_t)o->world,
                            .ngroups = o->ngroups,
                            .m = o->m,
                            .n = 1 << 20,
                            .beta0 = 0.9,
                            .solve_every = 1,
                            .min_steps = 2,
                            .hysteresis_h = 1,
                            .hysteresis_z = 1e-9};
        if (o->default_policy)
            w.solve_every = w.min_steps = w.hysteresis_h = 0, w.hysteresis_z = 0;
        uint8_t *hello;
        const size_t hl = tw_encode_hello(&hello, &w);
        grpc_slice hs = grpc_slice_from_copied_buffer((const char *)hello, hl);
        free(hello);
        s->send_buf = grpc_raw_byte_buffer_create(&hs, 1);
        grpc_slice_unref(hs);
        grpc_op ops[2];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = s->send_buf;
        if (batch(s, ops, 2, OP_SEND) == 0)
            s->send_busy = 1;
        post_recv(s, 1);
    }
    /* every Welcome (or failure) before the clock starts */
    const double wdl = mono_s() + 60;
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < g.nstreams; i++)
            waiting += !g.s[i].welcomed && !g.s[i].failed && !g.s[i].recv_over;
        if (!waiting || mono_s() > wdl)
            break;
        pump(&g, 0.1);
    }
    for (int i = 0; i < g.nstreams; i++)
        if (!g.s[i].welcomed)
            g.s[i].failed = 1;

    /* the schedule: job j sends step t at t0 + phase_j + t / rate, phases
     * spread over the period by the golden ratio; events in time order */
    int *order = malloc((size_t)o->jobs * sizeof(int));
    double *phase = malloc((size_t)o->jobs * sizeof(double));
    for (int j = 0; j < o->jobs; j++) {
        phase[j] = fmod(j * 0.6180339887498949, 1.0) / o->rate;
        order[j] = j;
    }
    for (int a = 1; a < o->jobs; a++) /* insertion sort by phase */
        for (int b = a; b > 0 && phase[order[b]] < phase[order[b - 1]]; b--) {
            const int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    const double cpu0 = cpu_self(), tcpu0 = o->cpu_of ? o->cpu_of() : 0;
    const double t0 = mono_s() + 0.05;
    const size_t nev = (size_t)o->steps * (size_t)o->jobs;
    for (size_t e = 0; e < nev;) {
        const uint64_t t = e / (size_t)o->jobs + 1;
        const int j = order[e % (size_t)o->jobs];
        const double due = t0 + phase[j] + (double)t / o->rate, now = mono_s();
        if (now < due) {
            pump(&g, due - now);
            continue;
        }
        for (int k = 0; k < o->world; k++) {
            struct lg_stream *s = &g.s[j * o->world + k];
            if (s->failed)
                continue;
            if (s->send_busy) { /* the previous send is still in flight */
                s->want_send = 1;
                s->want_step = t;
                s->want_due = due;
            } else {
                start_send(&g, s, t, due);
            }
            r->sends++;
        }
        e++;
    }
    r->wall_s = mono_s() - t0;
    r->target_cpu_s = o->cpu_of ? o->cpu_of() - tcpu0 : 0;
    /* the last pushes, then half-close once each stream's sends are done */
    const double ddl = mono_s() + 0.5;
    while (mono_s() < ddl)
        pump(&g, ddl - mono_s());
    r->cpu_s = cpu_self() - cpu0;
    for (int done = 0, guard = 0; !done && guard < 100000; guard++) {
        done = 1;
        for (int i = 0; i < g.nstreams; i++) {
            struct lg_stream *s = &g.s[i];
            if (s->closing || s->failed)
                continue;
            if (s->send_busy || s->want_send) {
                done = 0;
                continue;
            }
            grpc_op op;
            memset(&op, 0, sizeof(op));
            op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
            if (batch(s, &op, 1, OP_SEND) == 0)
                s->send_busy = 1;
            s->closing = 1;
        }
        if (!done)
            pump(&g, 0.01);
    }
    const double sdl = mono_s() + 10;
    for (;;) {
        int open = 0;
        for (int i = 0; i < g.nstreams; i++)
            open += !g.s[i].status_done;
        if (!open || mono_s() > sdl)
            break;
        pump(&g, 0.1);
    }
    for (int i = 0; i < g.nstreams; i++) {
        struct lg_stream *s = &g.s[i];
        r->failed_streams += s->failed || s->status != GRPC_STATUS_OK;
        grpc_call_cancel(s->call, NULL);
    }
    /* every outstanding operation completes after the cancel */
    grpc_completion_queue_shutdown(g.cq);
    while (grpc_completion_queue_next(g.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    for (int i = 0; i < g.nstreams; i++) {
        struct lg_stream *s = &g.s[i];
        if (s->recv_buf)
            grpc_byte_buffer_destroy(s->recv_buf);
        if (s->send_buf)
            grpc_byte_buffer_destroy(s->send_buf);
        grpc_call_unref(s->call);
        grpc_metadata_array_destroy(&s->md_init);
        grpc_metadata_array_destroy(&s->md_trail);
        grpc_slice_unref(s->details);
    }
    grpc_completion_queue_destroy(g.cq);
    for (int c = 0; c < nch; c++)
        grpc_channel_destroy(ch[c]);
    free(ch);
    grpc_slice_unref(method);

    qsort(g.lat, g.nlat, sizeof(double), cmpd);
    qsort(g.lag, g.nlag, sizeof(double), cmpd);
    r->n = g.nlat;
    r->p50 = quantile(g.lat, g.nlat, 0.5);
    r->p99 = quantile(g.lat, g.nlat, 0.99);
    r->max = g.nlat ? g.lat[g.nlat - 1] : 0;
    r->lag_p99 = quantile(g.lag, g.nlag, 0.99);
    for (int v = 0; v < VARIANTS; v++)
        for (int c = 0; c < CYCLE; c++)
            free(g.body[v][c]);
    free(g.lat);
    free(g.lag);
    free(g.last_sent);
    free(g.nsent);
    free(order);
    free(phase);
    free(g.s);
    return r->failed_streams == (uint64_t)g.nstreams ? -1 : 0;
}
