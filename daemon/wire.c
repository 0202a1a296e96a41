/*
 * DESIGN: decoding and validation (see wire.h). Every check names the field
 * it failed on, so a user reading the gRPC status knows what to fix. Nothing
 * here touches daemon state. Any thread.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grist/v1/grist.pb-c.h"
#include "grist/sketch.h"
#include "wire.h"

#define ERR(...) (snprintf(err, errsz, __VA_ARGS__), -EINVAL)

void grist__hello_free(struct grist_hello *h)
{
    free(h->groups);
    h->groups = NULL;
}

void grist__summary_free(struct grist_summary *s)
{
    free(s->sq_norm);
    free(s->batch);
    free(s->lrb);
    free(s->sketch);
    s->sq_norm = NULL;
    s->batch = NULL;
    s->lrb = NULL;
    s->sketch = NULL;
}

static int copy_str(char *dst, size_t cap, const char *src)
{
    if (!src)
        src = "";
    if (strlen(src) >= cap)
        return -EINVAL;
    strcpy(dst, src);
    return 0;
}

const char *grist__name_problem(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp;
        int n;
        if (*p < 0x80) {
            cp = *p, n = 1;
        } else if ((*p & 0xe0) == 0xc0) {
            cp = *p & 0x1f, n = 2;
        } else if ((*p & 0xf0) == 0xe0) {
            cp = *p & 0x0f, n = 3;
        } else if ((*p & 0xf8) == 0xf0) {
            cp = *p & 0x07, n = 4;
        } else {
            return "not valid UTF-8";
        }
        for (int k = 1; k < n; k++) {
            if ((p[k] & 0xc0) != 0x80)
                return "not valid UTF-8";
            cp = (cp << 6) | (p[k] & 0x3f);
        }
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return "not valid UTF-8 (an overlong form, a surrogate or beyond U+10FFFF)";
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029)
            return "control characters are not allowed";
        p += n;
    }
    return NULL;
}

static int decode_hello(const Grist__V1__Hello *in, const struct grist_limits *lim,
                        struct grist_hello *h, char *err, size_t errsz)
{
    memset(h, 0, sizeof(*h));
    if (!in->job_id || !in->job_id[0])
        return ERR("hello.job_id: empty");
    if (copy_str(h->job_id, sizeof(h->job_id), in->job_id) < 0)
        return ERR("hello.job_id: longer than %d bytes", GRIST_JOB_ID_MAX);
    const char *why = grist__name_problem(h->job_id);
    if (why)
        return ERR("hello.job_id: %s", why);
    for (const char *p = h->job_id; *p; p++)
        if (*p == '"' || *p == '\\')
            return ERR("hello.job_id: quotes and backslashes are not allowed");
    if (in->world_size == 0)
        return ERR("hello.world_size: must be at least 1");
    if (in->world_size > lim->max_workers) {
        snprintf(err, errsz, "hello.world_size: %u exceeds the limit of %u workers per job",
                 in->world_size, lim->max_workers);
        return -EMSGSIZE;
    }
    if (in->rank >= in->world_size)
        return ERR("hello.rank: %u is not below world_size %u", in->rank, in->world_size);
    if (grist_sketch_check_dim(in->sketch_dim) < 0)
        return ERR("hello.sketch_dim: %u is not a power of two in [64, 65536]", in->sketch_dim);
    if (in->sketch_dim > lim->max_sketch_dim) {
        snprintf(err, errsz, "hello.sketch_dim: %u exceeds the limit %u", in->sketch_dim,
                 lim->max_sketch_dim);
        return -EMSGSIZE;
    }
    if (in->n_groups == 0)
        return ERR("hello.groups: at least one group is needed");
    if (in->n_groups > lim->max_groups) {
        snprintf(err, errsz, "hello.groups: %zu groups exceed the limit %u", in->n_groups,
                 lim->max_groups);
        return -EMSGSIZE;
    }
    h->rank = in->rank;
    h->world = in->world_size;
    h->m = in->sketch_dim;
    switch (in->sketch_kind) {
    case GRIST__V1__SKETCH_KIND__SKETCH_KIND_HASHED:
        h->sketch_kind = GRIST_SKETCH_HASHED;
        break;
    case GRIST__V1__SKETCH_KIND__SKETCH_KIND_BLOCK:
        h->sketch_kind = GRIST_SKETCH_BLOCK;
        break;
    default:
        return ERR("hello.sketch_kind: %d is not a known sketch kind (hashed 0, block 1)",
                   (int)in->sketch_kind);
    }
    h->ngroups = (uint32_t)in->n_groups;
    h->groups = calloc(in->n_groups, sizeof(*h->groups));
    if (!h->groups)
        return -ENOMEM;
    for (size_t i = 0; i < in->n_groups; i++) {
        const Grist__V1__GroupSpec *g = in->groups[i];
        struct grist_group_spec *o = &h->groups[i];
        if (copy_str(o->name, sizeof(o->name), g->name) < 0)
            goto bad_name;
        why = grist__name_problem(o->name);
        if (why) {
            snprintf(err, errsz, "hello.groups[%zu].name: %s", i, why);
            goto bad;
        }
        if (g->num_elements == 0 || g->num_elements >= ((uint64_t)1 << 32)) {
            snprintf(err, errsz, "hello.groups[%zu].num_elements: %llu is not in [1, 2^32)", i,
                     (unsigned long long)g->num_elements);
            goto bad;
        }
        o->n = g->num_elements;
        if (g->optimizer == GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_ADAM ||
            g->optimizer == GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_RADAM)
            o->form = GRIST_FORM_EMA;
        else if (g->optimizer == GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_NADAM)
            o->form = GRIST_FORM_EMA_NESTEROV;
        else if (g->optimizer == GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_RMSPROP)
            o->form = GRIST_FORM_HEAVY_BALL;
        else if (g->optimizer == GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_SGD_NESTEROV)
            o->form = GRIST_FORM_NESTEROV;
        else if (g->optimizer == GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_SGD ||
                 g->optimizer == GRIST__V1__OPTIMIZER_KIND__OPTIMIZER_KIND_UNSPECIFIED)
            o->form = GRIST_FORM_HEAVY_BALL;
        else {
            snprintf(err, errsz, "hello.groups[%zu].optimizer: unknown kind %d", i,
                     (int)g->optimizer);
            goto bad;
        }
        if (!isfinite(g->lr) || g->lr < 0) {
            snprintf(err, errsz, "hello.groups[%zu].lr: must be finite and >= 0", i);
            goto bad;
        }
        if (!(g->beta >= 0.0 && g->beta < 1.0)) {
            snprintf(err, errsz, "hello.groups[%zu].beta: %g is not in [0, 1)", i, g->beta);
            goto bad;
        }
        o->lr = g->lr;
        o->beta0 = g->beta;
        o->sample = g->sketch_sample ? g->sketch_sample : 1;
        if (grist_sketch_check_sample(o->sample) < 0 ||
            (o->sample > 1 && h->sketch_kind != GRIST_SKETCH_BLOCK)) {
            snprintf(err, errsz,
                     "hello.groups[%zu].sketch_sample: %u is not 1, 4, 16 or 64 (block sketch "
                     "only)",
                     i, g->sketch_sample);
            goto bad;
        }
        continue;
    bad_name:
        snprintf(err, errsz, "hello.groups[%zu].name: longer than %d bytes", i,
                 GRIST_GROUP_NAME_MAX);
    bad:
        grist__hello_free(h);
        return -EINVAL;
    }
    const Grist__V1__Policy *p = in->policy;
    struct grist_policy_req *q = &h->policy;
    if (p) {
        if (copy_str(q->mode, sizeof(q->mode), p->mode) < 0 ||
            copy_str(q->noise, sizeof(q->noise), p->noise_correction) < 0 ||
            copy_str(q->coupling, sizeof(q->coupling), p->lr_coupling) < 0 ||
            copy_str(q->select_on, sizeof(q->select_on), p->select_on) < 0 ||
            copy_str(q->rule, sizeof(q->rule), p->rule) < 0) {
            grist__hello_free(h);
            return ERR("hello.policy: a name is too long");
        }
        if (p->n_candidates > GRIST_MAX_CANDIDATES) {
            grist__hello_free(h);
            return ERR("hello.policy.candidates: more than %u", GRIST_MAX_CANDIDATES);
        }
        q->ncand = (uint32_t)p->n_candidates;
        for (size_t i = 0; i < p->n_candidates; i++)
            q->cand[i] = p->candidates[i];
        q->beta_min = p->beta_min;
        q->beta_max = p->beta_max;
        q->min_steps = p->min_steps;
        q->solve_every = p->solve_every;
        q->z = p->hysteresis_z;
        q->h = p->hysteresis_h;
        q->gamma = p->ema_gamma;
        q->radius = p->radius;
        q->j_ema = p->j_ema;
        q->z_fast = p->hysteresis_z_fast;
    }
    return 0;
}

static int decode_summary(const Grist__V1__Summary *in, uint32_t ngroups, uint32_t m,
                          struct grist_summary *s, char *err, size_t errsz)
{
    memset(s, 0, sizeof(*s));
    if (in->n_groups != ngroups)
        return ERR("summary.groups: %zu groups, the job attached with %u", in->n_groups, ngroups);
    int nval = 0;
    for (size_t i = 0; i < in->n_groups; i++) {
        const Grist__V1__GroupSummary *g = in->groups[i];
        if (g->n_sketch != m)
            return ERR("summary.groups[%zu].sketch: %zu floats, expected sketch_dim %u", i,
                       g->n_sketch, m);
        if (!isfinite(g->sq_norm) || g->sq_norm < 0)
            return ERR("summary.groups[%zu].sq_norm: not a finite value >= 0", i);
        for (size_t k = 0; k < m; k++)
            if (!isfinite(g->sketch[k]))
                return ERR("summary.groups[%zu].sketch[%zu]: not finite", i, k);
        if (!isfinite(g->lr) || g->lr < 0)
            return ERR("summary.groups[%zu].lr: not a finite value >= 0", i);
        if (!(g->beta >= 0.0 && g->beta < 1.0))
            return ERR("summary.groups[%zu].beta: %g is not in [0, 1)", i, g->beta);
        if (!isfinite(g->lr_scale) || g->lr_scale < 0)
            return ERR("summary.groups[%zu].lr_scale: not a finite value >= 0", i);
        if (!isfinite(g->update_scale) || g->update_scale < 0 || g->update_scale > 1e6)
            return ERR("summary.groups[%zu].update_scale: not in [0, 1e6]", i);
        nval += g->validation != 0;
    }
    if (nval != 0 && (size_t)nval != in->n_groups)
        return ERR(
            "summary.groups[].validation: either every group or none is a validation sketch");
    s->step = in->step;
    s->ngroups = ngroups;
    s->m = m;
    s->validation = nval != 0;
    s->sq_norm = malloc(ngroups * sizeof(double));
    s->batch = malloc(ngroups * sizeof(uint32_t));
    s->lrb = malloc(2 * (size_t)ngroups * sizeof(double));
    s->sketch = malloc((size_t)ngroups * m * sizeof(float));
    if (!s->sq_norm || !s->batch || !s->lrb || !s->sketch) {
        grist__summary_free(s);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ngroups; i++) {
        s->sq_norm[i] = in->groups[i]->sq_norm;
        s->batch[i] = in->groups[i]->batch_size;
        const Grist__V1__GroupSummary *g = in->groups[i];
        /* the multiplier of the applied update: lr times Adam's bias correction */
        s->lrb[i] = g->lr * (g->update_scale > 0.0 ? g->update_scale : 1.0);
        s->lrb[ngroups + i] = g->lr > 0.0 ? g->beta : -1.0; /* -1: not reported */
        memcpy(s->sketch + i * m, in->groups[i]->sketch, m * sizeof(float));
    }
    return 0;
}

void grist__batch_free(struct grist_summary *batch, size_t n)
{
    for (size_t k = 0; batch && k < n; k++)
        grist__summary_free(&batch[k]);
    free(batch);
}

/*
 * Counting before decoding. protobuf-c allocates a struct of some 80 bytes
 * for every embedded message, and an empty GroupSummary is 2 bytes on the
 * wire: a 64 MiB message of empty groups would cost gigabytes (and seconds
 * of the loop) before any check ran. So the element counts are read from
 * the bytes first, by walking the wire format: groups per Summary (must be
 * the job's), summaries per batch (at most GRIST_MAX_BATCH), groups per
 * Hello (at most the limit). Malformed bytes are left to the decoder, which
 * refuses them; only counts are judged here.
 */
static int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        const uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -EINVAL;
}

/* Count the length-delimited fields numbered f in [p, end); on each, call
 * fn(sub, sub_end, ud) unless fn is NULL. -1: malformed (left to the
 * decoder) or fn said stop; else the count. */
static long wire_count(const uint8_t *p, const uint8_t *end, uint32_t f,
                       int (*fn)(const uint8_t *, const uint8_t *, void *), void *ud)
{
    long n = 0;
    while (p < end) {
        uint64_t key, v;
        if (wire_varint(&p, end, &key) < 0)
            return -EINVAL;
        switch (key & 7) {
        case 0:
            if (wire_varint(&p, end, &v) < 0)
                return -EINVAL;
            break;
        case 1:
            if (end - p < 8)
                return -EINVAL;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return -EINVAL;
            p += 4;
            break;
        case 2:
            if (wire_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
                return -EINVAL;
            if ((key >> 3) == f) {
                n++;
                if (fn && fn(p, p + v, ud) < 0)
                    return -EINVAL;
            }
            p += v;
            break;
        default:
            return -EINVAL;
        }
    }
    return n;
}

struct precheck {
    uint32_t ngroups;
    uint32_t field; /* what add_count counts in each occurrence */
    uint64_t total; /* over every occurrence: protobuf merges them */
    long bad; /* a batch element's group count that is wrong, -1 none */
    size_t index; /* that element's index in the batch */
};

/* The fields numbered c->field of one occurrence, added to c->total. */
static int add_count(const uint8_t *p, const uint8_t *end, void *ud)
{
    struct precheck *c = ud;
    const long n = wire_count(p, end, c->field, NULL, NULL);
    if (n > 0)
        c->total += (uint64_t)n;
    return 0;
}

/* One element of SummaryBatch.summaries: exactly the job's groups. */
static int check_element(const uint8_t *p, const uint8_t *end, void *ud)
{
    struct precheck *c = ud;
    const long n = wire_count(p, end, 2, NULL, NULL);
    if (n >= 0 && (uint64_t)n != c->ngroups) {
        c->bad = n;
        return -EINVAL;
    }
    c->index++;
    return 0;
}

/* One SummaryBatch occurrence (c->field = 1, its summaries). */
static int add_batch(const uint8_t *p, const uint8_t *end, void *ud)
{
    struct precheck *c = ud;
    add_count(p, end, c);
    if (c->total > GRIST_MAX_BATCH)
        return -EINVAL;
    return wire_count(p, end, 1, check_element, c) < 0 && c->bad >= 0 ? -1 : 0;
}

static int precheck(const uint8_t *buf, size_t len, const struct grist_limits *lim,
                    uint32_t ngroups, char *err, size_t errsz)
{
    const uint8_t *end = buf + len;
    struct precheck c = {.field = 4, .bad = -1}; /* Hello.groups */
    wire_count(buf, end, 1, add_count, &c);
    if (c.total > lim->max_groups) {
        snprintf(err, errsz, "hello.groups: %llu groups exceed the limit %u",
                 (unsigned long long)c.total, lim->max_groups);
        return -EMSGSIZE;
    }
    if (!ngroups)
        return 0; /* a summary before Hello is refused by the caller */
    c = (struct precheck){.ngroups = ngroups, .field = 2, .bad = -1}; /* Summary.groups */
    if (wire_count(buf, end, 2, add_count, &c) > 0 && c.total != ngroups)
        return ERR("summary.groups: %llu groups, the job attached with %u",
                   (unsigned long long)c.total, ngroups);
    c = (struct precheck){.ngroups = ngroups, .field = 1, .bad = -1}; /* SummaryBatch.summaries */
    wire_count(buf, end, 3, add_batch, &c);
    if (c.total > GRIST_MAX_BATCH)
        return ERR("batch.summaries: %llu summaries, expected 1 to %u", (unsigned long long)c.total,
                   GRIST_MAX_BATCH);
    if (c.bad >= 0)
        return ERR("batch.summaries[%zu]: summary.groups: %ld groups, the job attached with %u",
                   c.index, c.bad, ngroups);
    return 0;
}

int grist__decode_worker(const uint8_t *buf, size_t len, const struct grist_limits *lim,
                         uint32_t ngroups, uint32_t m, enum grist_wmsg_kind *kind,
                         struct grist_hello *hello, struct grist_summary *summary,
                         struct grist_summary **batch, size_t *nbatch, char *err, size_t errsz)
{
    *batch = NULL;
    *nbatch = 0;
    const int pre = precheck(buf, len, lim, ngroups, err, errsz);
    if (pre != 0)
        return pre;
    Grist__V1__WorkerMessage *msg = grist__v1__worker_message__unpack(NULL, len, buf);
    if (!msg)
        return ERR("WorkerMessage: the bytes do not decode as grist.v1.WorkerMessage");
    int st;
    switch (msg->msg_case) {
    case GRIST__V1__WORKER_MESSAGE__MSG_HELLO:
        *kind = GRIST_WMSG_HELLO;
        st = decode_hello(msg->hello, lim, hello, err, errsz);
        break;
    case GRIST__V1__WORKER_MESSAGE__MSG_SUMMARY:
        *kind = GRIST_WMSG_SUMMARY;
        st = decode_summary(msg->summary, ngroups, m, summary, err, errsz);
        break;
    case GRIST__V1__WORKER_MESSAGE__MSG_BATCH: {
        *kind = GRIST_WMSG_BATCH;
        const size_t n = msg->batch->n_summaries;
        *batch = NULL;
        *nbatch = 0;
        if (n == 0 || n > GRIST_MAX_BATCH) {
            st = ERR("batch.summaries: %zu summaries, expected 1 to %u", n, GRIST_MAX_BATCH);
            break;
        }
        struct grist_summary *b = calloc(n, sizeof(*b));
        if (!b) {
            st = -ENOMEM;
            break;
        }
        st = 0;
        size_t k = 0;
        for (; k < n && st == 0; k++) {
            char e2[200] = "";
            st = decode_summary(msg->batch->summaries[k], ngroups, m, &b[k], e2, sizeof(e2));
            if (st != 0)
                snprintf(err, errsz, "batch.summaries[%zu]: %s", k, e2);
        }
        if (st != 0) { /* nothing of a bad batch is kept */
            grist__batch_free(b, k); /* the failed one is zeroed or freed already */
            break;
        }
        *batch = b;
        *nbatch = n;
        break;
    }
    default:
        st = ERR("WorkerMessage: neither hello, summary nor batch is set");
        break;
    }
    grist__v1__worker_message__free_unpacked(msg, NULL);
    return st;
}

int grist__policy_merge(const struct grist_job_policy *d, const struct grist_policy_req *q,
                        struct grist_job_policy *out, char *err, size_t errsz)
{
    *out = *d;
    struct grist_policy *p = &out->sel;
    if (q->mode[0] && grist_mode_parse(q->mode, &p->mode) < 0)
        return snprintf(err, errsz, "hello.policy.mode: '%s' is not per_group or global", q->mode),
               -1;
    if (q->noise[0] && grist_noise_parse(q->noise, &p->noise) < 0)
        return snprintf(
                   err, errsz,
                   "hello.policy.noise_correction: '%s' is not off, workers, acf, auto or lag1",
                   q->noise),
               -1;
    if (q->coupling[0] && grist_coupling_parse(q->coupling, &p->coupling) < 0)
        return snprintf(err, errsz,
                        "hello.policy.lr_coupling: '%s' is not none, dc, energy, radius or greedy",
                        q->coupling),
               -1;
    if (q->rule[0] && grist_rule_parse(q->rule, &p->rule) < 0)
        return snprintf(err, errsz, "hello.policy.rule: '%s' is not curvature or alignment",
                        q->rule),
               -1;
    if (q->z_fast != 0.0) {
        if (!(q->z_fast > 0.0 && q->z_fast <= 100.0))
            return snprintf(err, errsz, "hello.policy.hysteresis_z_fast: not in (0, 100]"), -1;
        p->z_fast = q->z_fast;
    }
    if (q->select_on[0] && grist_select_on_parse(q->select_on, &p->select_on) < 0)
        return snprintf(err, errsz, "hello.policy.select_on: '%s' is not train or validation",
                        q->select_on),
               -1;
    if (q->beta_min != 0.0)
        p->beta_min = q->beta_min;
    if (q->beta_max != 0.0)
        p->beta_max = q->beta_max;
    if (!(p->beta_min >= 0.0 && p->beta_min <= p->beta_max && p->beta_max < 1.0))
        return snprintf(err, errsz,
                        "hello.policy.beta_min/beta_max: need 0 <= beta_min <= beta_max < 1"),
               -1;
    if (q->min_steps)
        p->min_steps = q->min_steps;
    if (q->solve_every)
        out->solve_every = q->solve_every;
    if (q->z != 0.0) {
        if (!(q->z > 0.0 && q->z <= 100.0))
            return snprintf(err, errsz, "hello.policy.hysteresis_z: not in (0, 100]"), -1;
        p->z = q->z;
    }
    if (q->h)
        p->h = q->h > 1000 ? 1000 : q->h;
    if (q->gamma != 0.0) {
        if (!(q->gamma >= 0.5 && q->gamma < 1.0))
            return snprintf(err, errsz, "hello.policy.ema_gamma: not in [0.5, 1)"), -1;
        out->gamma = q->gamma;
    }
    if (q->radius != 0.0) {
        if (!(q->radius > 0.0 && isfinite(q->radius)))
            return snprintf(err, errsz, "hello.policy.radius: must be finite and > 0"), -1;
        p->radius = q->radius;
    }
    if (q->j_ema != 0.0) {
        if (!(q->j_ema > 0.0 && q->j_ema < 1.0))
            return snprintf(err, errsz, "hello.policy.j_ema: not in (0, 1)"), -1;
        p->j_ema = q->j_ema;
    }
    if (q->ncand) {
        out->ncand = 0;
        for (uint32_t i = 0; i < q->ncand; i++) {
            if (!(q->cand[i] >= 0.0 && q->cand[i] < 1.0))
                return snprintf(err, errsz, "hello.policy.candidates[%u]: %g is not in [0, 1)", i,
                                q->cand[i]),
                       -1;
            out->cand[out->ncand++] = q->cand[i];
        }
    }
    /* the grid must keep at least one candidate inside the bounds */
    int inside = 0;
    for (uint32_t i = 0; i < out->ncand; i++)
        inside |= out->cand[i] >= p->beta_min && out->cand[i] <= p->beta_max;
    if (!inside)
        return snprintf(err, errsz, "hello.policy: no candidate lies within [beta_min, beta_max]"),
               -1;
    return 0;
}

uint8_t *grist__encode_welcome(uint64_t session, uint32_t seed, const struct grist_job_policy *jp,
                               size_t *len)
{
    Grist__V1__Policy pol = GRIST__V1__POLICY__INIT;
    pol.mode = (char *)grist_mode_name(jp->sel.mode);
    pol.noise_correction = (char *)grist_noise_name(jp->sel.noise);
    pol.lr_coupling = (char *)grist_coupling_name(jp->sel.coupling);
    pol.select_on = (char *)grist_select_on_name(jp->sel.select_on);
    pol.n_candidates = jp->ncand;
    pol.candidates = (double *)jp->cand;
    pol.beta_min = jp->sel.beta_min;
    pol.beta_max = jp->sel.beta_max;
    pol.min_steps = jp->sel.min_steps;
    pol.solve_every = jp->solve_every;
    pol.hysteresis_z = jp->sel.z;
    pol.hysteresis_h = jp->sel.h;
    pol.ema_gamma = jp->gamma;
    pol.radius = jp->sel.radius;
    pol.j_ema = jp->sel.j_ema;
    pol.rule = (char *)grist_rule_name(jp->sel.rule);
    pol.hysteresis_z_fast = jp->sel.z_fast;
    Grist__V1__Welcome w = GRIST__V1__WELCOME__INIT;
    w.session_id = session;
    w.job_seed = seed;
    w.policy = &pol;
    w.accepts_batches = 1;
    Grist__V1__ServerMessage m = GRIST__V1__SERVER_MESSAGE__INIT;
    m.msg_case = GRIST__V1__SERVER_MESSAGE__MSG_WELCOME;
    m.welcome = &w;
    *len = grist__v1__server_message__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        grist__v1__server_message__pack(&m, buf);
    return buf;
}

uint8_t *grist__encode_hyperparams(uint64_t version, uint64_t step, uint32_t ngroups,
                                   const struct grist_push_group *g, size_t *len)
{
    Grist__V1__GroupHyperparams *gs = calloc(ngroups, sizeof(*gs));
    Grist__V1__GroupHyperparams **gp = calloc(ngroups, sizeof(*gp));
    uint8_t *buf = NULL;
    if (!gs || !gp)
        goto out;
    for (uint32_t i = 0; i < ngroups; i++) {
        grist__v1__group_hyperparams__init(&gs[i]);
        gs[i].momentum = g[i].momentum;
        gs[i].lr_scale = g[i].lr_scale;
        gs[i].lr = g[i].lr;
        gs[i].confidence = isfinite(g[i].confidence) ? g[i].confidence : 1e9;
        gs[i].reason = (char *)(g[i].reason ? g[i].reason : "");
        gp[i] = &gs[i];
    }
    Grist__V1__Hyperparams h = GRIST__V1__HYPERPARAMS__INIT;
    h.version = version;
    h.step = step;
    h.n_groups = ngroups;
    h.groups = gp;
    Grist__V1__ServerMessage m = GRIST__V1__SERVER_MESSAGE__INIT;
    m.msg_case = GRIST__V1__SERVER_MESSAGE__MSG_HYPERPARAMS;
    m.hyperparams = &h;
    *len = grist__v1__server_message__get_packed_size(&m);
    buf = malloc(*len ? *len : 1);
    if (buf)
        grist__v1__server_message__pack(&m, buf);
out:
    free(gs);
    free(gp);
    return buf;
}
