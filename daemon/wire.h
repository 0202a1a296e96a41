/*
 * Decoding and validation of the wire contract: pure functions over bytes,
 * testable and fuzzable without a socket (tests/fuzz). protobuf-c messages
 * never leave this file: callers get the daemon's own structs.
 */
#ifndef GRIST_DAEMON_WIRE_H
#define GRIST_DAEMON_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "grist/select.h"

struct grist_limits {
    uint32_t max_groups;
    uint32_t max_workers;
    uint32_t max_sketch_dim;
};

#define GRIST_JOB_ID_MAX 128
#define GRIST_GROUP_NAME_MAX 64

struct grist_group_spec {
    char name[GRIST_GROUP_NAME_MAX + 1];
    uint64_t n;
    enum grist_form form;
    double lr;
    double beta0;
    uint32_t sample; /* block sketch: 1 run in sample (docs/MATH.md 2.1) */
};

/* What a worker asked for; zero / empty fields mean "the daemon's default". */
struct grist_policy_req {
    char mode[16], noise[16], coupling[16], select_on[16], rule[16];
    uint32_t ncand;
    double cand[GRIST_MAX_CANDIDATES];
    double beta_min, beta_max, z, gamma, radius, j_ema, z_fast;
    uint32_t min_steps, solve_every, h;
};

struct grist_hello {
    char job_id[GRIST_JOB_ID_MAX + 1];
    uint32_t rank, world;
    uint32_t m;
    uint32_t sketch_kind; /* enum grist_sketch_kind */
    uint32_t ngroups;
    struct grist_group_spec *groups; /* ngroups, malloc'd; grist__hello_free() */
    struct grist_policy_req policy;
};

struct grist_summary {
    uint64_t step;
    uint32_t ngroups, m;
    int validation; /* every group carries a validation sketch */
    double *sq_norm; /* ngroups */
    uint32_t *batch; /* ngroups */
    double *lrb; /* 2 * ngroups: the update multiplier (0: not reported), then beta (-1) */
    float *sketch; /* ngroups * m, group-major */
};

enum grist_wmsg_kind { GRIST_WMSG_HELLO = 1, GRIST_WMSG_SUMMARY = 2, GRIST_WMSG_BATCH = 3 };

/* Largest number of summaries in one SummaryBatch. */
#define GRIST_MAX_BATCH 256u

/**
 * Decode one WorkerMessage. A Hello is checked against lim; a Summary
 * against the job it belongs to (ngroups, m; pass 0, 0 before Hello: the
 * caller refuses the summary with FAILED_PRECONDITION anyway).
 *
 * @param kind  receives the message kind on success.
 * @param err   receives a message naming the offending field.
 * @return 0; -EINVAL (a field is wrong: err names it); -EMSGSIZE (over a
 *         limit of lim); -ENOMEM. On success exactly one of hello, summary or batch
 *         is filled and owns memory (free with grist__hello_free,
 *         grist__summary_free, grist__batch_free). A batch decodes whole or
 *         not at all: one bad summary refuses it, naming its index.
 */
int grist__decode_worker(const uint8_t *buf, size_t len, const struct grist_limits *lim,
                         uint32_t ngroups, uint32_t m, enum grist_wmsg_kind *kind,
                         struct grist_hello *hello, struct grist_summary *summary,
                         struct grist_summary **batch, size_t *nbatch, char *err, size_t errsz);
void grist__batch_free(struct grist_summary *batch, size_t n);

void grist__hello_free(struct grist_hello *h);
void grist__summary_free(struct grist_summary *s);

/** The effective policy of a job: daemon defaults overridden by a request. */
struct grist_job_policy {
    struct grist_policy sel; /* kernels' selection policy */
    uint32_t solve_every;
    uint32_t families_every; /* family solves (eigendecompositions); a multiple of solve_every */
    double gamma;
    uint32_t ncand;
    double cand[GRIST_MAX_CANDIDATES];
};

/** Merge a request into defaults; @return 0 or -EINVAL with err naming the field. */
int grist__policy_merge(const struct grist_job_policy *defaults, const struct grist_policy_req *req,
                        struct grist_job_policy *out, char *err, size_t errsz);

/* Encoders: malloc'd buffers, NULL on ENOMEM. */
struct grist_push_group {
    double momentum, lr_scale, lr, confidence;
    const char *reason;
};
uint8_t *grist__encode_welcome(uint64_t session, uint32_t seed, const struct grist_job_policy *p,
                               size_t *len);
uint8_t *grist__encode_hyperparams(uint64_t version, uint64_t step, uint32_t ngroups,
                                   const struct grist_push_group *g, size_t *len);

/* Why a job or group name is refused (NULL: acceptable): it must be valid
 * UTF-8 (no overlong forms, surrogates or code points past U+10FFFF)
 * without C0/C1 control characters, DEL or the line/paragraph separators. */
const char *grist__name_problem(const char *s);

#endif
