/*
 * DESIGN: the gRPC side of every method (rpc.h). Loop thread.
 *
 * A unary call is one object with two stages: (1) RECV_MESSAGE; (2) the
 * handler ran, and initial metadata, the reply (on success), the status and
 * RECV_CLOSE_ON_SERVER go out in one batch, whose completion frees it. A
 * rejected call (unknown method, no token) is a unary call that starts at (2).
 *
 * A stream call has three tags that may be outstanding: recv (one
 * RECV_MESSAGE at a time), send (one SEND_MESSAGE or the final status at a
 * time: gRPC allows one send in flight per call) and close
 * (RECV_CLOSE_ON_SERVER, issued at start; it completes when the call is
 * over, which is how a cancelled or vanished client is noticed). refs counts
 * the tags in flight; the call is freed when none is. The owner's on_end runs
 * once: when close completes, or when the call could not start at all.
 * Sending is latest-wins: while a message is in flight the next one waits
 * in one slot, and a newer message replaces it there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>

#include "grist/error.h"
#include "log.h"
#include "rpc.h"

/* ---- the one table of error codes to gRPC status codes ---- */

grpc_status_code grist__rpc_status(int err)
{
    switch (err) {
    case 0:
        return GRPC_STATUS_OK;
    case -EINVAL:
    case GRIST_ENONFINITE:
    case GRIST_EBADLEN:
    case GRIST_EBADDIM:
    case GRIST_ETOOBIG:
    case GRIST_EBADCONF:
        return GRPC_STATUS_INVALID_ARGUMENT; /* the request is wrong; err names the field */
    case -ENOMEM: /* out of memory */
    case -ENOSPC: /* a capacity: --max-jobs, the memory budgets */
    case -EMSGSIZE: /* a message over a limit */
    case -EAGAIN: /* a rate or a count per client: try later */
    case -EBUSY:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case -EACCES:
        return GRPC_STATUS_UNAUTHENTICATED; /* no valid token, or it was revoked */
    case -EPERM:
        return GRPC_STATUS_PERMISSION_DENIED; /* a valid token that does not cover this */
    case -ENOENT:
        return GRPC_STATUS_NOT_FOUND;
    case -EEXIST:
        return GRPC_STATUS_ALREADY_EXISTS;
    case GRIST_EORDER: /* a message this stream may not send now */
    case GRIST_ESHARD: /* a job another replica serves */
        return GRPC_STATUS_FAILED_PRECONDITION;
    case -ESHUTDOWN:
    case -ECONNRESET:
        return GRPC_STATUS_UNAVAILABLE; /* gristd is stopping; the call broke */
    case -ETIMEDOUT:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case -ENOSYS:
        return GRPC_STATUS_UNIMPLEMENTED;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

/* ---- byte buffers ---- */

grpc_byte_buffer *grist__bb_from(const void *data, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

unsigned char *grist__bb_read(grpc_byte_buffer *bb, size_t *len)
{
    /* one copy, slice by slice (readall would first merge the slices into a
     * new slice of its own). The buffer starts at the message's length on
     * the wire; a compressed message reads out longer and the buffer grows. */
    size_t cap = grpc_byte_buffer_length(bb), off = 0;
    unsigned char *p = malloc(cap ? cap : 1);
    grpc_byte_buffer_reader r;
    if (!p || !grpc_byte_buffer_reader_init(&r, bb)) {
        free(p);
        return NULL;
    }
    grpc_slice s;
    while (grpc_byte_buffer_reader_next(&r, &s)) {
        const size_t n = GRPC_SLICE_LENGTH(s);
        if (n > cap - off) {
            const size_t want = off + n > 2 * cap ? off + n : 2 * cap;
            unsigned char *q = realloc(p, want);
            if (!q) {
                grpc_slice_unref(s);
                grpc_byte_buffer_reader_destroy(&r);
                free(p);
                return NULL;
            }
            p = q, cap = want;
        }
        memcpy(p + off, GRPC_SLICE_START_PTR(s), n);
        off += n;
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&r);
    *len = off;
    return p;
}

/* A call that cannot be served at all (out of memory): cancelled. */
static void drop_call(struct grist_net *net, grpc_call *call)
{
    grpc_call_cancel(call, NULL);
    grpc_call_unref(call);
    net->live_calls--;
}

/* ---- unary ---- */

struct unary {
    struct grist_tag tag;
    struct grist_net *net;
    grpc_call *call;
    const struct grist_method *m;
    void *ud;
    struct grist_principal who;
    int stage;
    grpc_byte_buffer *recv;
    grpc_byte_buffer *send;
    grpc_slice details;
    int cancelled;
};

static void unary_free(struct unary *u)
{
    if (u->recv)
        grpc_byte_buffer_destroy(u->recv);
    if (u->send)
        grpc_byte_buffer_destroy(u->send);
    if (u->stage == 2)
        grpc_slice_unref(u->details);
    grpc_call_unref(u->call);
    u->net->live_calls--;
    free(u);
}

/* Decode, run, encode: the one place a unary request and reply go through
 * protobuf-c. @return a grist error; *out (malloc'd) on 0. */
static int unary_run(struct unary *u, const uint8_t *in, size_t in_len, uint8_t **out,
                     size_t *out_len, char *msg, size_t msz)
{
    ProtobufCMessage *req = protobuf_c_message_unpack(u->m->request, NULL, in_len, in);
    if (!req) {
        snprintf(msg, msz, "%s does not decode", u->m->request->short_name);
        return -EINVAL;
    }
    struct grist_reply rep = {0};
    int r = u->m->unary(u->ud, &u->who, req, &rep);
    protobuf_c_message_free_unpacked(req, NULL);
    if (r == 0 && rep.msg) {
        *out_len = protobuf_c_message_get_packed_size(rep.msg);
        *out = malloc(*out_len ? *out_len : 1);
        if (*out)
            protobuf_c_message_pack(rep.msg, *out);
        else
            r = -ENOMEM;
    }
    if (rep.release)
        rep.release(&rep);
    if (r < 0)
        snprintf(msg, msz, "%s", rep.err[0] ? rep.err : grist_strerror(r));
    return r;
}

/* The final status of a call with err and its message. */
static void put_status(grpc_op *op, int err, grpc_slice *details)
{
    op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op->data.send_status_from_server.status = grist__rpc_status(err);
    op->data.send_status_from_server.status_details = details;
}

/* Stage 2: initial metadata, the reply (when err is 0), the status and the
 * close, in one batch whose completion frees u. */
static void unary_answer(struct unary *u, int err, const char *msg, const uint8_t *out,
                         size_t out_len)
{
    u->stage = 2;
    u->details = grpc_slice_from_copied_string(msg);
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (err == 0) {
        u->send = grist__bb_from(out ? out : (const uint8_t *)"", out_len);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = u->send;
    }
    put_status(&ops[n++], err, &u->details);
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &u->cancelled;
    if (grpc_call_start_batch(u->call, ops, n, &u->tag, NULL) != GRPC_CALL_OK) {
        GRIST_ERR("cannot answer a call");
        unary_free(u);
    }
}

static void unary_cb(struct grist_tag *tag, int ok)
{
    struct unary *u = (struct unary *)tag;
    if (u->stage == 2 || !ok || !u->recv) {
        if (u->stage == 1 && !u->recv && ok)
            GRIST_DEBUG("unary call closed before its request");
        unary_free(u);
        return;
    }
    size_t in_len = 0, out_len = 0;
    uint8_t *in = grist__bb_read(u->recv, &in_len), *out = NULL;
    char msg[256] = "";
    int r = in ? unary_run(u, in, in_len, &out, &out_len, msg, sizeof(msg)) : -ENOMEM;
    free(in);
    unary_answer(u, r, msg, out, out_len);
    free(out);
}

static struct unary *unary_new(struct grist_net *net, grpc_call *call)
{
    struct unary *u = calloc(1, sizeof(*u));
    if (!u) {
        drop_call(net, call);
        return NULL;
    }
    u->tag.cb = unary_cb;
    u->net = net;
    u->call = call;
    return u;
}

static void unary_start(struct grist_net *net, grpc_call *call, const struct grist_method *m,
                        void *ud, const struct grist_principal *who)
{
    struct unary *u = unary_new(net, call);
    if (!u)
        return;
    u->m = m;
    u->ud = ud;
    u->who = *who;
    u->stage = 1;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &u->recv;
    if (grpc_call_start_batch(call, &op, 1, &u->tag, NULL) != GRPC_CALL_OK)
        unary_free(u);
}

/* A status only (unknown method, no token): a unary call answered at once,
 * its request never read. */
void grist__rpc_reject(struct grist_net *net, grpc_call *call, int err, const char *msg)
{
    struct unary *u = unary_new(net, call);
    if (u)
        unary_answer(u, err, msg, NULL, 0);
}

/* ---- the server stream ---- */

struct grist_call {
    struct grist_tag recv_tag, send_tag, close_tag;
    struct grist_net *net;
    grpc_call *call;
    const struct grist_call_ops *ops;
    void *ud;
    grpc_byte_buffer *recv_buf, *send_buf;
    int refs, md_sent, closed, cancelled, finishing, send_in_flight, status_in_flight, ended;
    uint8_t *queued;
    size_t queued_len;
    int fin_err;
    grpc_slice fin_details;
    int fin_details_set;
    grpc_metadata fin_md[2];
    size_t fin_nmd;
};

#define CALL_OF(tag, member)                                                                       \
    ((struct grist_call *)((char *)(tag)-offsetof(struct grist_call, member)))

static void call_end(struct grist_call *c)
{
    if (c->ended)
        return;
    c->ended = 1;
    if (c->ops && c->ops->on_end)
        c->ops->on_end(c, c->ud);
}

static void call_maybe_free(struct grist_call *c)
{
    if (c->refs > 0)
        return;
    call_end(c);
    if (c->recv_buf)
        grpc_byte_buffer_destroy(c->recv_buf);
    if (c->send_buf)
        grpc_byte_buffer_destroy(c->send_buf);
    if (c->fin_details_set)
        grpc_slice_unref(c->fin_details);
    for (size_t i = 0; i < c->fin_nmd; i++) {
        grpc_slice_unref(c->fin_md[i].key);
        grpc_slice_unref(c->fin_md[i].value);
    }
    free(c->queued);
    grpc_call_unref(c->call);
    c->net->live_calls--;
    free(c);
}

static void call_batch(struct grist_call *c, grpc_op *ops, size_t n)
{
    c->send_in_flight = 1;
    c->refs++;
    if (grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL) != GRPC_CALL_OK) {
        c->refs--;
        c->send_in_flight = 0;
        if (c->send_buf) {
            grpc_byte_buffer_destroy(c->send_buf);
            c->send_buf = NULL;
        }
        grpc_call_cancel(c->call, NULL); /* close completes: the call ends */
    }
}

static void send_status(struct grist_call *c)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    put_status(&ops[n], c->fin_err, &c->fin_details);
    ops[n].data.send_status_from_server.trailing_metadata_count = c->fin_nmd;
    ops[n++].data.send_status_from_server.trailing_metadata = c->fin_nmd ? c->fin_md : NULL;
    c->status_in_flight = 1;
    call_batch(c, ops, n);
}

static void start_send(struct grist_call *c, const uint8_t *msg, size_t len)
{
    c->send_buf = grist__bb_from(msg, len);
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = 1;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_buf;
    if (c->ops->on_send)
        c->ops->on_send(c, c->ud, len);
    call_batch(c, ops, n);
}

void grist__call_finish(struct grist_call *c, int err, const char *msg)
{
    if (c->finishing)
        return;
    c->finishing = 1;
    c->fin_err = err;
    c->fin_details = grpc_slice_from_copied_string(msg ? msg : "");
    c->fin_details_set = 1;
    free(c->queued);
    c->queued = NULL;
    if (err != 0)
        GRIST_DEBUG("call %p: finishing with %s: %s", (void *)c, grist_err_name(err), msg);
    if (!c->send_in_flight && !c->closed)
        send_status(c);
}

int grist__call_finishing(const struct grist_call *c)
{
    return c->finishing; /* also set when the call closed */
}

void grist__call_trailer(struct grist_call *c, const char *key, const char *value)
{
    if (c->finishing || c->fin_nmd == 2)
        return;
    c->fin_md[c->fin_nmd].key = grpc_slice_from_copied_string(key);
    c->fin_md[c->fin_nmd].value = grpc_slice_from_copied_string(value);
    c->fin_nmd++;
}

int grist__call_send(struct grist_call *c, const uint8_t *msg, size_t len)
{
    if (c->finishing)
        return 0;
    if (!c->send_in_flight) {
        start_send(c, msg, len);
        return 1;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return 0;
    memcpy(copy, msg, len);
    free(c->queued); /* latest wins */
    c->queued = copy;
    c->queued_len = len;
    return 1;
}

static void on_send(struct grist_tag *tag, int ok)
{
    struct grist_call *c = CALL_OF(tag, send_tag);
    c->refs--;
    c->send_in_flight = 0;
    if (c->send_buf) {
        grpc_byte_buffer_destroy(c->send_buf);
        c->send_buf = NULL;
    }
    if (c->status_in_flight) {
        c->status_in_flight = 0;
    } else if (!ok) {
        grist__call_finish(c, -ECONNRESET, "send failed");
    } else if (c->finishing) {
        if (!c->closed)
            send_status(c);
    } else if (c->queued) {
        uint8_t *m = c->queued;
        c->queued = NULL;
        start_send(c, m, c->queued_len);
        free(m);
    }
    call_maybe_free(c);
}

static void on_close(struct grist_tag *tag, int ok)
{
    (void)ok;
    struct grist_call *c = CALL_OF(tag, close_tag);
    c->refs--;
    c->closed = 1;
    if (c->cancelled && !c->finishing)
        GRIST_DEBUG("call %p: cancelled by the client", (void *)c);
    c->finishing = 1;
    call_end(c);
    call_maybe_free(c);
}

static void on_recv(struct grist_tag *tag, int ok)
{
    struct grist_call *c = CALL_OF(tag, recv_tag);
    c->refs--;
    grpc_byte_buffer *bb = c->recv_buf;
    c->recv_buf = NULL;
    if (c->ended || c->finishing) {
        if (bb) /* what comes after the end was asked for is not read */
            grpc_byte_buffer_destroy(bb);
    } else if (!ok || !bb) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        c->ops->on_message(c, c->ud, NULL, 0);
    } else {
        size_t len = 0;
        uint8_t *buf = grist__bb_read(bb, &len);
        grpc_byte_buffer_destroy(bb);
        if (!buf)
            grist__call_finish(c, -ENOMEM, "out of memory");
        else
            c->ops->on_message(c, c->ud, buf, len);
        free(buf);
    }
    call_maybe_free(c);
}

void grist__call_recv(struct grist_call *c)
{
    if (c->finishing)
        return;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    c->refs++;
    if (grpc_call_start_batch(c->call, &op, 1, &c->recv_tag, NULL) != GRPC_CALL_OK) {
        c->refs--;
        grist__call_finish(c, -EIO, "cannot receive");
    }
}

void grist__call_bind(struct grist_call *c, const struct grist_call_ops *ops, void *ud)
{
    c->ops = ops;
    c->ud = ud;
}

void grist__call_peer(struct grist_call *c, char *out, size_t size)
{
    char *p = grpc_call_get_peer(c->call);
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

static void stream_start(struct grist_net *net, grpc_call *call, const struct grist_method *m,
                         void *ud, const struct grist_principal *who)
{
    struct grist_call *c = calloc(1, sizeof(*c));
    if (!c) {
        drop_call(net, call);
        return;
    }
    c->net = net;
    c->call = call;
    c->recv_tag.cb = on_recv;
    c->send_tag.cb = on_send;
    c->close_tag.cb = on_close;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    c->refs++;
    if (grpc_call_start_batch(call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
        c->refs--;
        grpc_call_cancel(call, NULL);
        c->closed = c->finishing = 1;
        c->ended = 1; /* the handler never saw it */
        call_maybe_free(c);
        return;
    }
    /* the handler binds its ops and asks for the first message; a call it
     * does not bind is ended with INTERNAL */
    m->stream(ud, c, who);
    if (!c->ops) {
        c->ended = 1;
        grist__call_finish(c, -EIO, "the method did not take the call");
    }
}

void grist__rpc_start(struct grist_net *net, grpc_call *call, const struct grist_method *m,
                      void *ud, const struct grist_principal *who)
{
    if (m->unary)
        unary_start(net, call, m, ud, who);
    else
        stream_start(net, call, m, ud, who);
}
