/* A synchronous Attach client for integration tests (gRPC core, one
 * completion queue per worker). Not the product client (that is libgrist). */
#ifndef GRIST_TEST_WORKER_H
#define GRIST_TEST_WORKER_H

#include <grpc/grpc.h>
#include <stdint.h>

struct tw;

struct tw_hp {
    uint64_t version, step;
    uint32_t ngroups;
    double momentum[16], lr_scale[16], confidence[16];
    char reason[128];
};

struct tw_opts {
    const char *job;
    uint32_t rank, world, ngroups, m;
    uint64_t n; /* elements per group */
    double beta0;
    int adam;
    uint32_t solve_every, min_steps, hysteresis_h;
    const char *noise; /* NULL = daemon default */
    double hysteresis_z;
    const char *rule; /* NULL = daemon default */
    int sketch_kind; /* SketchKind on the wire (0 hashed, 1 block; others to test refusals) */
    uint32_t sketch_sample; /* GroupSpec.sketch_sample of every group (0 = 1) */
};

/* Open a call of any streaming method (nothing sent yet). */
struct tw *tw_open_method(const char *target, const char *method);
/* Next raw message (malloc'd); 1 got one, 0 timeout, negative: stream over. */
int tw_recv_raw(struct tw *w, uint8_t **buf, size_t *len, double timeout_s);
/* Open the stream and send Hello. Returns NULL on failure to create it. */
struct tw *tw_open(const char *target, const struct tw_opts *o);
/* Wait for Welcome (or the stream's end). 0 and *seed on Welcome; else the
 * final gRPC status as a negative number. */
int tw_welcome(struct tw *w, uint32_t *seed, double timeout_s);
/* Send only the initial metadata: the server sees the call, no message. */
int tw_send_md(struct tw *w);
/* Send raw bytes as one message; 0 or -1 when the send failed. */
int tw_send_raw(struct tw *w, const void *buf, size_t len);
/* Wait up to timeout_s for the next Hyperparams; 1 got one, 0 timeout,
 * negative = stream over with that status. */
int tw_next(struct tw *w, struct tw_hp *hp, double timeout_s);
/* Collect everything already delivered: returns the newest version seen. */
uint64_t tw_drain(struct tw *w, struct tw_hp *latest);
/* Half-close and wait for the status; returns it. */
grpc_status_code tw_finish(struct tw *w, char *details, size_t dsz, double timeout_s);
/* Status when the server ended the stream (after tw_next returned < 0). */
grpc_status_code tw_status(struct tw *w, char *details, size_t dsz);
void tw_cancel(struct tw *w);
void tw_free(struct tw *w);

/* Encoders for raw tests. */
size_t tw_encode_hello(uint8_t **out, const struct tw_opts *o);
size_t tw_encode_summary(uint8_t **out, uint64_t step, uint32_t ngroups, uint32_t m,
                         const float *sketch, const double *sq_norm, uint32_t batch);

#endif
