/*
 * gRPC calls on the loop thread, written once for every method:
 *
 *  - the method table net.c dispatches from (a path, its request's
 *    protobuf-c descriptor and a handler);
 *  - the unary call: receive, decode with the descriptor, run the handler,
 *    encode its reply, send it with the status, free everything;
 *  - the server stream that Attach and WatchJob both are: one receive and
 *    one send in flight at a time, latest-wins sending, a final status with
 *    optional trailing metadata, and one end callback when the call is over;
 *  - the one translation of grist error codes (0, -errno, GRIST_E*) into
 *    gRPC status codes (grist__rpc_status). No other file produces one.
 *
 * Handlers never see a grpc_call: a unary handler gets the decoded request
 * and fills a reply, a stream handler gets a struct grist_call it drives
 * through the functions below.
 */
#ifndef GRIST_DAEMON_RPC_H
#define GRIST_DAEMON_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "auth.h"
#include "net.h"

/** The gRPC status of a grist error code: the project's one table
 *  (docs/ARCHITECTURE.md, "Errors"). Unknown codes are INTERNAL. */
grpc_status_code grist__rpc_status(int err);

/** A unary handler's answer. On 0 the handler sets msg (it stays valid
 *  until release runs, right after it was packed); on an error err says
 *  why, and it is the status message. */
struct grist_reply {
    const ProtobufCMessage *msg;
    void (*release)(struct grist_reply *rep); /* NULL: nothing to free */
    void *data; /* the handler's, for release */
    char err[256];
};

typedef int grist_unary_handler(void *ud, const struct grist_principal *who,
                                const ProtobufCMessage *req, struct grist_reply *rep);

struct grist_call;
/** A stream handler: the call is new; drive it with grist__call_*. */
typedef void grist_stream_handler(void *ud, struct grist_call *c,
                                  const struct grist_principal *who);

struct grist_method {
    const char *path; /* "/grist.v1.Grist/GetJob" */
    const ProtobufCMessageDescriptor *request; /* unary: how its request decodes */
    grist_unary_handler *unary; /* exactly one of unary and stream */
    grist_stream_handler *stream;
    int open; /* served without a token (the health check) */
};

/* ---- the server stream ---- */

struct grist_call_ops {
    /** A message arrived (buf, len: valid during the call), or, with buf
     *  NULL, the client half-closed or the call failed. */
    void (*on_message)(struct grist_call *c, void *ud, const uint8_t *buf, size_t len);
    /** The call is over (the status went out, or the client vanished): the
     *  owner lets go of it; c is freed by the rpc layer once nothing of it is
     *  in flight, and no callback follows. Called exactly once. */
    void (*on_end)(struct grist_call *c, void *ud);
    /** A message of len bytes starts going out (may be NULL: for counters). */
    void (*on_send)(struct grist_call *c, void *ud, size_t len);
};

/** Take over a new stream call (in a grist_stream_handler). */
void grist__call_bind(struct grist_call *c, const struct grist_call_ops *ops, void *ud);
/** Ask for the next message (one receive at a time). */
void grist__call_recv(struct grist_call *c);
/** Queue msg (copied) after the one in flight; a newer one replaces a
 *  waiting one (latest wins). @return 1 sent or queued; 0 dropped (the
 *  call is finishing, or out of memory: the next one will come). */
int grist__call_send(struct grist_call *c, const uint8_t *msg, size_t len);
/** End the call with the status of err (0: OK) and msg, after the message
 *  in flight; anything queued is dropped. Idempotent (the first wins). */
void grist__call_finish(struct grist_call *c, int err, const char *msg);
/** A trailing metadata pair for the final status (at most 2; before
 *  grist__call_finish). */
void grist__call_trailer(struct grist_call *c, const char *key, const char *value);
int grist__call_finishing(const struct grist_call *c);
/** The client's address without its port: "ipv4:10.0.0.7", "ipv6:[::1]", "unix". */
void grist__call_peer(struct grist_call *c, char *out, size_t size);

/** A byte buffer holding a copy of data. */
grpc_byte_buffer *grist__bb_from(const void *data, size_t len);
/** Copy a byte buffer into a malloc'd block (*len set). NULL on ENOMEM. */
unsigned char *grist__bb_read(grpc_byte_buffer *bb, size_t *len);

/** net.c's dispatch: start serving call as method m (its principal who). */
void grist__rpc_start(struct grist_net *net, grpc_call *call, const struct grist_method *m,
                      void *ud, const struct grist_principal *who);
/** Answer a call with a status only (unknown method, no token). */
void grist__rpc_reject(struct grist_net *net, grpc_call *call, int err, const char *msg);

#endif
