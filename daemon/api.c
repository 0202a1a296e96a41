/*
 * DESIGN: the JSON views of the HTTP endpoint (/api/v1/...). Each document
 * is a gRPC message written by pbjson.c from its descriptor, so the JSON and
 * gRPC APIs carry the same fields (test http, check_json_is_grpc). Runs on
 * the loop (http.c routes to it).
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grist/v1/grist.pb-c.h"
#include "http_impl.h"
#include "jobs.h"
#include "query.h"
#include "rpc.h"
#include "pbjson.h"

/* ---- JSON API ---- */

/*
 * The JSON views are the gRPC messages themselves, written by pbjson.c from
 * their descriptors (so both APIs show the same fields), plus one alias kept
 * for dashboards written against earlier versions: a job's "id" (= job_id).
 */
/* The "id" alias on the JSON object of a JobBrief; -1 on ENOMEM. */
static int add_id(json_t *o, const Grist__V1__JobBrief *jb)
{
    return json_object_set_new(o, "id", json_string(jb->job_id ? jb->job_id : ""));
}

static json_t *brief_json(const Grist__V1__JobBrief *jb)
{
    json_t *o = grist__pb_to_json(&jb->base);
    if (o && add_id(o, jb) < 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* {"jobs": [JobBrief...]} plus, where given, "shards" */
static json_t *jobs_json(void)
{
    json_t *o = json_object(), *a = json_array();
    if (!o || !a || json_object_set_new(o, "jobs", a) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int jobs_add(json_t *o, json_t *brief)
{
    return o && brief ? json_array_append_new(json_object_get(o, "jobs"), brief) : -1;
}

void grist__api_jobs(struct conn *c, const struct grist_principal *who, int keep)
{
    json_t *o = jobs_json();
    for (const struct grist_job *j = c->h->d->jobs; o && j; j = j->next) {
        if (!grist__auth_allows(who, GRIST_NEED_READ, j->id))
            continue;
        Grist__V1__JobBrief jb;
        grist__job_brief(j, &jb);
        if (jobs_add(o, brief_json(&jb)) < 0) {
            json_decref(o);
            o = NULL;
        }
    }
    grist__http_json(c, 200, o, keep);
}

/* GET /api/v1/cluster/jobs: this replica's jobs and every other's (fanout.c),
 * each brief with its "shard" */
static json_t *shard_brief(const Grist__V1__JobBrief *jb, uint32_t shard)
{
    json_t *o = brief_json(jb);
    if (o && json_object_set_new(o, "shard", json_integer(shard)) < 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

void grist__api_on_cluster(void *ud, struct grist_fanout_result *res, uint32_t n)
{
    struct fan_ticket *t = ud;
    struct conn *c = t->c;
    if (c) {
        c->ticket = NULL;
        c->busy = 0;
        struct grist_daemon *d = c->h->d;
        json_t *o = jobs_json(), *shards = json_array();
        int bad = !o || !shards || json_object_set_new(o, "shards", shards) < 0;
        for (const struct grist_job *j = d->jobs; !bad && j; j = j->next) {
            if (!grist__auth_allows(&t->who, GRIST_NEED_READ, j->id))
                continue;
            Grist__V1__JobBrief jb;
            grist__job_brief(j, &jb);
            bad = jobs_add(o, shard_brief(&jb, d->shard_i)) < 0;
        }
        for (uint32_t k = 0; !bad && k < n; k++) {
            if (k == d->shard_i || res[k].status != 0 || !res[k].body)
                continue;
            Grist__V1__ListJobsResponse *m =
                grist__v1__list_jobs_response__unpack(NULL, res[k].len, res[k].body);
            for (size_t i = 0; !bad && m && i < m->n_jobs; i++)
                bad = jobs_add(o, shard_brief(m->jobs[i], k)) < 0;
            if (m)
                grist__v1__list_jobs_response__free_unpacked(m, NULL);
            else
                res[k].status = (int)grist__rpc_status(-EIO),
                snprintf(res[k].error, sizeof(res[k].error), "answer does not decode");
        }
        for (uint32_t k = 0; !bad && k < n; k++) {
            json_t *sh = json_pack("{s:i,s:s,s:i}", "shard", (json_int_t)k, "address",
                                   d->shard_peer[k] ? d->shard_peer[k] : "", "status",
                                   (json_int_t)res[k].status);
            if (sh && res[k].status != 0)
                json_object_set_new(sh, "error", json_string(res[k].error));
            bad = !sh || json_array_append_new(shards, sh) < 0;
        }
        if (bad) {
            json_decref(o);
            o = NULL;
        }
        grist__http_json(c, 200, o, t->keep);
    }
    for (uint32_t k = 0; k < n; k++)
        free(res[k].body);
    free(res);
    free(t);
}

void grist__api_job(struct conn *c, const struct grist_job *j, int keep)
{
    struct grist_job_response jr;
    json_t *o = grist__job_response_fill(j, &jr) == 0 ? grist__pb_to_json(&jr.resp.base) : NULL;
    if (o && add_id(json_object_get(o, "job"), &jr.brief) < 0) {
        json_decref(o);
        o = NULL;
    }
    grist__job_response_release(&jr);
    grist__http_json(c, 200, o, keep);
}

/* value of query parameter `key` (percent-decoded into out); 1 if present */
static int query_param(const char *q, const char *key, char *out, size_t outsz)
{
    const size_t kl = strlen(key);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        const size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > kl && strncmp(q, key, kl) == 0 && q[kl] == '=') {
            size_t o = 0;
            for (size_t i = kl + 1; i < len && o + 1 < outsz; i++) {
                unsigned v;
                if (q[i] == '%' && i + 2 < len && isxdigit((unsigned char)q[i + 1]) &&
                    isxdigit((unsigned char)q[i + 2]) && sscanf(q + i + 1, "%2x", &v) == 1) {
                    out[o++] = (char)v;
                    i += 2;
                    continue;
                }
                out[o++] = q[i] == '+' ? ' ' : q[i];
            }
            out[o] = 0;
            return 1;
        }
        q = amp ? amp + 1 : NULL;
    }
    return 0;
}

/* an unsigned integer parameter; 0 absent, 1 ok, -1 malformed */
static int query_u64(const char *q, const char *key, uint64_t *v)
{
    char s[32];
    if (!query_param(q, key, s, sizeof(s)))
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (!s[0] || *end || errno || s[0] == '-')
        return -EINVAL;
    *v = x;
    return 1;
}

void grist__api_history(struct conn *c, const struct grist_job *j, const char *q, int keep)
{
    char series[32] = "momentum", gname[GRIST_GROUP_NAME_MAX + 1] = "";
    uint64_t group = 0, from = 0, to = 0, points = 500;
    if (query_param(q, "series", series, sizeof(series)) && grist__series_index(series) < 0) {
        grist__http_error(c, 400,
                          "series: not momentum, lr_scale, noise, noise_scale or confidence", keep);
        return;
    }
    if (query_param(q, "group", gname, sizeof(gname))) {
        /* a group index or a group name */
        char *end;
        unsigned long gi = strtoul(gname, &end, 10);
        if (gname[0] && !*end) {
            group = gi;
        } else {
            group = UINT64_MAX;
            for (uint32_t g = 0; g < j->ngroups; g++)
                if (strcmp(j->groups[g].name, gname) == 0)
                    group = g;
        }
        if (group >= j->ngroups) {
            grist__http_error(c, 404, "group: no such group in this job", keep);
            return;
        }
    }
    if (query_u64(q, "from", &from) < 0 || query_u64(q, "to", &to) < 0 ||
        query_u64(q, "points", &points) < 0) {
        grist__http_error(c, 400, "from, to and points must be unsigned integers", keep);
        return;
    }
    if (points < 2 || points > 100000) {
        grist__http_error(c, 400, "points: between 2 and 100000", keep);
        return;
    }
    if (to && from > to) {
        grist__http_error(c, 400, "from is after to", keep);
        return;
    }
    uint64_t *steps = NULL;
    double *vals = NULL;
    size_t n = 0;
    if (grist__history(j, (uint32_t)group, series, from, to, (size_t)points, &steps, &vals, &n) <
        0) {
        grist__http_error(c, 500, "history: out of memory", keep);
        return;
    }
    /* the GetHistoryResponse (steps, values) and what was asked */
    Grist__V1__GetHistoryResponse resp = GRIST__V1__GET_HISTORY_RESPONSE__INIT;
    resp.n_steps = resp.n_values = n;
    resp.steps = steps;
    resp.values = vals;
    json_t *o = grist__pb_to_json(&resp.base);
    if (o &&
        json_object_update_new(o,
                               json_pack("{s:s,s:s,s:s}", "job", j->id, "group",
                                         j->groups[group].name, "series", series)) < 0) {
        json_decref(o);
        o = NULL;
    }
    free(steps);
    free(vals);
    grist__http_json(c, 200, o, keep);
}
