/*
 * DESIGN: gristd's HTTP endpoint (--http HOST:PORT), for Prometheus,
 * dashboards and people: GET /metrics (Prometheus text format 0.0.4),
 * /api/v1/jobs, /api/v1/jobs/{job}, /api/v1/jobs/{job}/history, and / (the
 * page, daemon/www/index.html, compiled in).
 *
 * Threads: everything runs on the libuv loop that owns the jobs, so a
 * response is a consistent snapshot and nothing is locked. Requests are
 * parsed by Node's http-parser (Debian's libhttp-parser, 2.9): maintained,
 * callback-based and allocation-free, it fits a libuv read callback
 * directly; llhttp, its successor, is not packaged in Debian 12. Each
 * connection serves one request at a time (keep-alive honoured), requests
 * are limited to 4 KiB of URL and 8 KiB of headers, and a response is built in
 * memory and written with one uv_write, so the loop never blocks on a slow
 * client: a stalled reader only holds its own buffer. Work per request is
 * bounded: /metrics by --metrics-max-jobs, history by LTTB downsampling.
 */
#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "daemon.h"
#include "fanout.h"
#include "grist/v1/grist.pb-c.h"
#include "jobs.h"
#include "log.h"
#include "pbjson.h"
#include "tls.h"
#include "www_index.h"

#define URL_MAX 4096
#define HEADER_MAX 8192

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_grow(struct sbuf *b, size_t need)
{
    if (b->oom || b->len + need + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    sb_grow(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    sb_grow(b, (size_t)n);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* a Prometheus label value: backslash, quote and newline escaped */
static void sb_plabel(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            sb_printf(b, "\\%c", *s);
        else if (*s == '\n')
            sb_put(b, "\\n", 2);
        else
            sb_put(b, s, 1);
    }
}

static void sb_pnum(struct sbuf *b, double v)
{
    if (isnan(v))
        sb_put(b, "NaN", 3);
    else if (isinf(v))
        sb_put(b, v > 0 ? "+Inf" : "-Inf", 4);
    else
        sb_printf(b, "%.17g", v);
}

/* ---- connections ---- */

struct conn {
    uv_tcp_t tcp;
    struct grist_http *h;
    struct conn *next;
    http_parser parser;
    char url[URL_MAX + 1];
    size_t url_len, header_bytes;
    int url_too_long, headers_too_long, busy, closing;
    /* the Authorization header, collected across the parser's pieces */
    char field[16];
    size_t field_len;
    int in_value, field_is_auth;
    char auth[512];
    size_t auth_len;
    int auth_too_long;
    char *in; /* bytes read and not parsed yet (pipelined requests) */
    size_t in_len, in_cap;
    uv_timer_t timer; /* idle / slow-request timeout (--http-idle-timeout) */
    int timer_on;
    /* TLS (--tls-cert): the socket carries records; ssl turns them into the
     * plaintext in `in` (SSL_read) and responses into records (SSL_write),
     * through two memory BIOs, so libuv keeps doing all the I/O */
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    struct fan_ticket *ticket; /* a cluster query in flight for this connection */
};

/* A cluster query outlives its connection if the client goes: the answer
 * then finds c NULL and is dropped. */
struct fan_ticket {
    struct conn *c;
    struct grist_principal who;
    int keep;
};

/* Unparsed input a connection may hold (pipelined requests): past it, close. */
#define HTTP_IN_MAX (64u << 10)

struct grist_http {
    uv_tcp_t srv;
    struct grist_daemon *d;
    char bound[80];
    struct conn *conns;
    int stopping;
};

struct wreq {
    uv_write_t w;
    struct conn *c;
    char *buf;
    int close_after;
    int tls_only; /* handshake records or an alert, not a response */
};

static void conn_free(struct conn *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    free(c->in);
    free(c);
}

static void timer_closed(uv_handle_t *hd)
{
    conn_free(hd->data);
}

static void conn_closed(uv_handle_t *hd)
{
    struct conn *c = hd->data;
    if (c->ticket)
        c->ticket->c = NULL;
    for (struct conn **p = c->h ? &c->h->conns : &c->next; c->h && *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    if (c->timer_on)
        uv_close((uv_handle_t *)&c->timer, timer_closed); /* frees c */
    else
        conn_free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void parse_pending(struct conn *c);

static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct conn *c = r->c;
    free(r->buf);
    if (r->tls_only) {
        if (status < 0 || r->close_after)
            conn_close(c);
        free(r);
        return;
    }
    c->busy = 0;
    if (status < 0 || r->close_after)
        conn_close(c);
    else
        parse_pending(c); /* the next pipelined request, if any */
    free(r);
}

static const char *reason_of(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    default:
        return "Error";
    }
}

static void respond(struct conn *c, int code, const char *ctype, struct sbuf *body, int keep)
{
    if (body->oom) {
        free(body->p);
        *body = (struct sbuf){0};
        code = 500;
        ctype = "application/json";
        sb_printf(body, "{\"error\":\"out of memory\"}\n");
    }
    struct sbuf out = {0};
    sb_printf(&out,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s"
              "Connection: %s\r\n\r\n",
              code, reason_of(code), ctype, body->len,
              code == 401 ? "WWW-Authenticate: Bearer realm=\"gristd\"\r\n" : "",
              keep ? "keep-alive" : "close");
    if (body->len && c->parser.method != HTTP_HEAD) /* HEAD: the headers of GET, no body */
        sb_put(&out, body->p, body->len);
    free(body->p);
    if (c->ssl && !out.oom) { /* the response as TLS records */
        struct sbuf rec = {0};
        if (SSL_write(c->ssl, out.p, (int)out.len) != (int)out.len) {
            ERR_clear_error();
            free(out.p);
            conn_close(c);
            return;
        }
        char chunk[16384];
        int n;
        while ((n = BIO_read(c->wbio, chunk, sizeof(chunk))) > 0)
            sb_put(&rec, chunk, (size_t)n);
        free(out.p);
        out = rec;
    }
    struct wreq *r = calloc(1, sizeof(*r));
    if (!r || out.oom) {
        free(r);
        free(out.p);
        conn_close(c);
        return;
    }
    r->c = c;
    r->buf = out.p;
    r->close_after = !keep;
    c->busy = 1;
    uv_buf_t b = uv_buf_init(out.p, (unsigned)out.len);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(r->buf);
        free(r);
        conn_close(c);
    }
}

static void respond_error(struct conn *c, int code, const char *msg, int keep)
{
    /* a message that is not UTF-8 (it may quote the request) is not JSON
     * text: the status alone then */
    json_t *o = json_pack("{s:s,s:i}", "error", msg, "status", code);
    if (!o)
        o = json_pack("{s:s,s:i}", "error", "request refused", "status", code);
    size_t len = 0;
    char *s = grist__json_take_dump(o, &len);
    struct sbuf b = {.p = s, .len = s ? len : 0, .cap = s ? len : 0, .oom = !s};
    respond(c, code, "application/json", &b, keep);
}

/* ---- /metrics ---- */

static void metric_head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Every daemon-wide counter of /metrics: one row each (name, help, field). */
static const struct {
    const char *name, *help;
    size_t off;
} counter_table[] = {
    {"gristd_streams_opened_total", "Attach streams opened.",
     offsetof(struct grist_counters, streams_opened)},
    {"gristd_summaries_total", "Worker summaries received.",
     offsetof(struct grist_counters, summaries)},
    {"gristd_summaries_rejected_total", "Summaries refused (malformed, non-finite, wrong size).",
     offsetof(struct grist_counters, summaries_rejected)},
    {"gristd_summaries_late_total", "Summaries for a step already aggregated.",
     offsetof(struct grist_counters, summaries_late)},
    {"gristd_summaries_duplicate_total",
     "Summaries of a rank for a step it had already sent (ignored).",
     offsetof(struct grist_counters, summaries_duplicate)},
    {"gristd_steps_partial_total",
     "Steps aggregated without every rank, after --aggregation-timeout.",
     offsetof(struct grist_counters, steps_partial)},
    {"gristd_step_segments_total",
     "Runs resumed from an earlier step (a new segment of a job's steps).",
     offsetof(struct grist_counters, step_segments)},
    {"gristd_steps_aggregated_total", "Steps aggregated over ranks.",
     offsetof(struct grist_counters, steps_aggregated)},
    {"gristd_steps_dropped_total",
     "Aggregated steps dropped: the compute queue was full, or the job was over its share of a compute thread that was behind.",
     offsetof(struct grist_counters, steps_dropped)},
    {"gristd_steps_shed_total",
     "Of the dropped steps: refused for being over their job's share of a compute thread that was behind (--compute-lag).",
     offsetof(struct grist_counters, steps_shed)},
    {"gristd_pushes_total", "Hyperparameter versions pushed.",
     offsetof(struct grist_counters, pushes)},
    {"gristd_received_bytes_total", "Bytes of worker messages received.",
     offsetof(struct grist_counters, bytes_in)},
    {"gristd_sent_bytes_total", "Bytes of messages sent to workers.",
     offsetof(struct grist_counters, bytes_out)},
    {"gristd_jobs_created_total", "Jobs created.", offsetof(struct grist_counters, jobs_created)},
    {"gristd_jobs_expired_total", "Jobs dropped after idling.",
     offsetof(struct grist_counters, jobs_expired)},
    {"gristd_auth_unauthenticated_total",
     "Calls and requests refused for a missing or unknown bearer token (--tokens).",
     offsetof(struct grist_counters, auth_unauthenticated)},
    {"gristd_auth_denied_total",
     "Calls and requests refused because their token does not cover the job or the role.",
     offsetof(struct grist_counters, auth_denied)},
    {"gristd_summaries_rate_limited_total",
     "Summary messages refused over their job's --max-summary-rate (the stream ended).",
     offsetof(struct grist_counters, summaries_rate_limited)},
    {"gristd_streams_limited_total",
     "Attach streams refused over --max-streams-per-peer or --max-streams-per-token.",
     offsetof(struct grist_counters, streams_limited)},
    {"gristd_jobs_create_limited_total",
     "Hellos refused because their address created jobs faster than --job-create-rate.",
     offsetof(struct grist_counters, jobs_create_limited)},
    {"gristd_shard_redirects_total",
     "Hellos for a job of another shard, refused with FAILED_PRECONDITION naming it (--shard).",
     offsetof(struct grist_counters, shard_redirects)},
    {"gristd_reloads_total", "Tokens or TLS files reloaded on SIGHUP.",
     offsetof(struct grist_counters, reloads)},
    {"gristd_reload_errors_total", "SIGHUP reloads that failed (the files in force stayed).",
     offsetof(struct grist_counters, reload_errors)},
    {"gristd_snapshots_written_total", "Job snapshots written to --state-dir.",
     offsetof(struct grist_counters, snapshots_written)},
    {"gristd_snapshots_superseded_total",
     "Job snapshots replaced, before their write began, by a newer state of the job (the disk was slower than --snapshot-interval).",
     offsetof(struct grist_counters, snapshots_superseded)},
    {"gristd_snapshot_errors_total",
     "Job snapshots that could not be taken or written (retried every interval).",
     offsetof(struct grist_counters, snapshot_errors)},
    {"gristd_snapshots_refused_total",
     "State files refused at start (corrupt, truncated, other version).",
     offsetof(struct grist_counters, snapshots_refused)},
    {"gristd_jobs_restored_total", "Jobs restored from --state-dir.",
     offsetof(struct grist_counters, jobs_restored)},
};

static void metric_u64(struct sbuf *b, const char *name, const char *type, const char *help,
                       uint64_t v)
{
    metric_head(b, name, type, help);
    sb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void metric_hist(struct sbuf *b, const char *name, const char *help,
                        const struct grist_histogram *h)
{
    metric_head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < GRIST_HISTOGRAM_NB; i++) {
        cum += h->bucket[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, grist__histogram_bounds[i],
                  (unsigned long long)cum);
    }
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    sb_printf(b, "%s_sum ", name);
    sb_pnum(b, h->sum);
    sb_printf(b, "\n%s_count %llu\n", name, (unsigned long long)h->count);
}

/* per-group gauges; the value of group g of job j */
typedef double group_value_fn(const struct grist_job *j, uint32_t g, int *have);

static double gv_momentum(const struct grist_job *j, uint32_t g, int *have)
{
    *have = 1;
    return grist__job_momentum(j, g);
}

static double gv_lr_scale(const struct grist_job *j, uint32_t g, int *have)
{
    *have = 1;
    return grist__job_lr_scale(j, g);
}

static double gv_alignment(const struct grist_job *j, uint32_t g, int *have)
{
    if (!j->last)
        return *have = 0, 0;
    const struct grist_engine_group_result *r = &j->last->groups[g];
    *have = r->choice.index < r->ncand;
    return *have ? r->J[r->choice.index] : 0;
}

static double gv_noise_scale(const struct grist_job *j, uint32_t g, int *have)
{
    *have = j->last != NULL;
    return *have ? j->last->groups[g].choice.noise_scale : 0;
}

static double gv_trace(const struct grist_job *j, uint32_t g, int *have)
{
    *have = j->last && j->last->groups[g].have_families;
    return *have ? j->last->groups[g].fam.trace : 0;
}

static double gv_erank(const struct grist_job *j, uint32_t g, int *have)
{
    *have = j->last && j->last->groups[g].have_families;
    return *have ? j->last->groups[g].fam.effective_rank : 0;
}

static void metrics(struct conn *c, const struct grist_principal *who, int keep)
{
    struct grist_daemon *d = c->h->d;
    struct sbuf b = {0};
    metric_u64(&b, "gristd_streams", "gauge", "Live Attach streams (workers connected).",
               d->nstreams);
    metric_u64(&b, "gristd_jobs", "gauge", "Jobs known to the daemon.", d->njobs);
    metric_head(&b, "gristd_compute_queue_depth", "gauge",
                "Aggregated steps waiting for a compute thread.");
    for (uint32_t i = 0; i < d->nengines; i++)
        sb_printf(&b, "gristd_compute_queue_depth{thread=\"%u\"} %u\n", i,
                  d->engines[i] ? grist__engine_depth(d->engines[i]) : 0);
    for (size_t i = 0; i < sizeof(counter_table) / sizeof(counter_table[0]); i++) {
        uint64_t v;
        memcpy(&v, (const char *)&d->cnt + counter_table[i].off, sizeof(v));
        metric_u64(&b, counter_table[i].name, "counter", counter_table[i].help, v);
    }
    metric_hist(&b, "gristd_solve_duration_seconds",
                "Selection time per evaluation on a compute thread.", &d->solve_seconds);
    metric_hist(&b, "gristd_push_latency_seconds",
                "From a step queued for a compute thread to its push handed to the streams.",
                &d->push_latency_seconds);

    static const struct {
        const char *name, *help;
        group_value_fn *fn;
    } gm[] = {
        {"gristd_group_momentum", "Momentum (SGD) or beta1 (Adam) in force for the group.",
         gv_momentum},
        {"gristd_group_lr_scale", "Factor on the group's learning rate in force.", gv_lr_scale},
        {"gristd_group_alignment", "Alignment J of the chosen candidate (sketch units).",
         gv_alignment},
        {"gristd_group_noise_scale", "Gradient noise scale B_noise (examples).", gv_noise_scale},
        {"gristd_group_sigma_trace", "Trace of the sketch covariance.", gv_trace},
        {"gristd_group_effective_rank", "Effective rank tr(S)^2/|S|_F^2 of the sketch covariance.",
         gv_erank},
    };
    const uint32_t limit = (uint32_t)d->cfg->metrics_max_jobs;
    uint32_t omitted = 0;
    for (size_t m = 0; m < sizeof(gm) / sizeof(gm[0]); m++) {
        metric_head(&b, gm[m].name, "gauge", gm[m].help);
        uint32_t shown = 0;
        for (const struct grist_job *j = d->jobs; j; j = j->next) {
            if (!grist__auth_allows(who, GRIST_NEED_READ, j->id))
                continue; /* per-job series only of the jobs the token covers */
            if (shown++ >= limit) {
                if (m == 0)
                    omitted++;
                continue;
            }
            for (uint32_t g = 0; g < j->ngroups; g++) {
                int have = 0;
                const double v = gm[m].fn(j, g, &have);
                if (!have)
                    continue;
                sb_printf(&b, "%s{job=\"", gm[m].name);
                sb_plabel(&b, j->id);
                sb_put(&b, "\",group=\"", 9);
                sb_plabel(&b, j->groups[g].name);
                sb_put(&b, "\"} ", 3);
                sb_pnum(&b, v);
                sb_put(&b, "\n", 1);
            }
        }
    }
    metric_u64(&b, "gristd_insecure", "gauge",
               "1 when --insecure lets a non-loopback listener serve plaintext.",
               (uint64_t)d->cfg->insecure);
    metric_u64(&b, "gristd_tls", "gauge", "1 when TCP listeners serve TLS (--tls-cert).",
               d->tls != NULL);
    metric_u64(&b, "gristd_tokens", "gauge", "Tokens in force (0: no --tokens, calls are open).",
               grist__auth_count(d->auth));
    metric_u64(&b, "gristd_metrics_jobs_omitted", "gauge",
               "Jobs left out of the per-group series (beyond --metrics-max-jobs).", omitted);
    respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", &b, keep);
}

/* ---- JSON API ---- */

/*
 * The JSON views are the gRPC messages themselves, written by pbjson.c from
 * their descriptors (so both APIs show the same fields), plus one alias kept
 * for dashboards written against earlier versions: a job's "id" (= job_id).
 */
static json_t *brief_json(const Grist__V1__JobBrief *jb)
{
    json_t *o = grist__pb_to_json(&jb->base);
    if (o && json_object_set_new(o, "id", json_string(jb->job_id ? jb->job_id : "")) < 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

static void respond_json(struct conn *c, json_t *v, int keep)
{
    size_t len = 0;
    char *s = grist__json_take_dump(v, &len);
    if (!s) {
        respond_error(c, 500, "out of memory", keep);
        return;
    }
    struct sbuf b = {.p = s, .len = len, .cap = len};
    respond(c, 200, "application/json", &b, keep);
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

static void api_jobs(struct conn *c, const struct grist_principal *who, int keep)
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
    respond_json(c, o, keep);
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

static void on_cluster(void *ud, struct grist_fanout_result *res, uint32_t n)
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
                res[k].status = GRPC_STATUS_INTERNAL,
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
        respond_json(c, o, t->keep);
    }
    for (uint32_t k = 0; k < n; k++)
        free(res[k].body);
    free(res);
    free(t);
}

static void api_job(struct conn *c, const struct grist_job *j, int keep)
{
    size_t len = 0;
    uint8_t *buf = grist__job_response_encode(j, &len);
    Grist__V1__GetJobResponse *m = buf ? grist__v1__get_job_response__unpack(NULL, len, buf) : NULL;
    free(buf);
    json_t *o = m ? grist__pb_to_json(&m->base) : NULL;
    if (o && m->job &&
        json_object_set_new(json_object_get(o, "job"), "id",
                            json_string(m->job->job_id ? m->job->job_id : "")) < 0) {
        json_decref(o);
        o = NULL;
    }
    if (m)
        grist__v1__get_job_response__free_unpacked(m, NULL);
    respond_json(c, o, keep);
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
        return -1;
    *v = x;
    return 1;
}

static void api_history(struct conn *c, const struct grist_job *j, const char *q, int keep)
{
    char series[32] = "momentum", gname[GRIST_GROUP_NAME_MAX + 1] = "";
    uint64_t group = 0, from = 0, to = 0, points = 500;
    if (query_param(q, "series", series, sizeof(series)) && grist__series_index(series) < 0) {
        respond_error(c, 400, "series: not momentum, lr_scale, noise, noise_scale or confidence",
                      keep);
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
            respond_error(c, 404, "group: no such group in this job", keep);
            return;
        }
    }
    if (query_u64(q, "from", &from) < 0 || query_u64(q, "to", &to) < 0 ||
        query_u64(q, "points", &points) < 0) {
        respond_error(c, 400, "from, to and points must be unsigned integers", keep);
        return;
    }
    if (points < 2 || points > 100000) {
        respond_error(c, 400, "points: between 2 and 100000", keep);
        return;
    }
    if (to && from > to) {
        respond_error(c, 400, "from is after to", keep);
        return;
    }
    uint64_t *steps = NULL;
    double *vals = NULL;
    size_t n = 0;
    if (grist__history(j, (uint32_t)group, series, from, to, (size_t)points, &steps, &vals, &n) <
        0) {
        respond_error(c, 500, "history: out of memory", keep);
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
    respond_json(c, o, keep);
}

/* percent-decode a path segment in place; -1 on a bad escape */
static int pct_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '%') {
            unsigned v;
            if (!p[1] || !p[2] || sscanf(p + 1, "%2x", &v) != 1 || v == 0)
                return -1;
            *o++ = (char)v;
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return 0;
}

static void route(struct conn *c)
{
    const int keep = http_should_keep_alive(&c->parser);
    if (c->url_too_long) {
        respond_error(c, 414, "request URL too long", 0);
        return;
    }
    if (c->headers_too_long) {
        respond_error(c, 431, "request headers too large (8 KiB at most)", 0);
        return;
    }
    if (c->parser.method != HTTP_GET && c->parser.method != HTTP_HEAD) {
        respond_error(c, 405, "only GET is served", keep);
        return;
    }
    char path[URL_MAX + 1];
    const char *q = strchr(c->url, '?');
    const size_t plen = q ? (size_t)(q - c->url) : c->url_len;
    memcpy(path, c->url, plen);
    path[plen] = 0;
    q = q ? q + 1 : "";
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        /* the page is code, no data: open; what it fetches needs a token */
        struct sbuf b = {0};
        sb_put(&b, (const char *)grist_www_index, grist_www_index_len);
        respond(c, 200, "text/html; charset=utf-8", &b, keep);
        return;
    }
    struct grist_principal who;
    if (c->auth_too_long ||
        grist__auth_resolve(c->h->d->auth, c->auth_len ? c->auth : NULL, c->auth_len, &who) < 0) {
        c->h->d->cnt.auth_unauthenticated++;
        respond_error(c, 401, "a valid 'Authorization: Bearer TOKEN' header is required", keep);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        metrics(c, &who, keep);
        return;
    }
    if (strcmp(path, "/api/v1/jobs") == 0 || strcmp(path, "/api/v1/jobs/") == 0) {
        api_jobs(c, &who, keep);
        return;
    }
    if (strcmp(path, "/api/v1/cluster/jobs") == 0) {
        struct fan_ticket *t = calloc(1, sizeof(*t));
        if (!t) {
            respond_error(c, 500, "out of memory", 0);
            return;
        }
        t->c = c;
        t->who = who;
        t->keep = keep;
        c->ticket = t;
        c->busy = 1; /* answered when every replica did (at most 2 s) */
        const int r = grist__fanout_jobs(c->h->d, c->auth, c->auth_len, on_cluster, t);
        if (r < 0) {
            c->ticket = NULL;
            c->busy = 0;
            free(t);
            respond_error(c, r == -ENOENT ? 404 : 500,
                          r == -ENOENT ? "not a sharded gristd (--shard I/N --shard-peers)"
                                       : "out of memory",
                          keep);
        }
        return;
    }
    static const char prefix[] = "/api/v1/jobs/";
    if (strncmp(path, prefix, sizeof(prefix) - 1) == 0) {
        char *id = path + sizeof(prefix) - 1;
        char *rest = strchr(id, '/');
        if (rest)
            *rest++ = 0;
        if (pct_decode(id) < 0) {
            respond_error(c, 400, "job id: bad percent-encoding", keep);
            return;
        }
        if (!grist__auth_allows(&who, GRIST_NEED_READ, id)) {
            c->h->d->cnt.auth_denied++;
            respond_error(c, 403, "this token does not cover the job", keep);
            return;
        }
        struct grist_job *j = grist__job_find(c->h->d, id);
        if (!j) {
            respond_error(c, 404, "no such job", keep);
            return;
        }
        if (!rest || !*rest) {
            api_job(c, j, keep);
            return;
        }
        if (strcmp(rest, "history") == 0) {
            api_history(c, j, q, keep);
            return;
        }
    }
    respond_error(c, 404, "no such resource (see /api/v1/jobs, /metrics, /)", keep);
}

/* ---- parsing ---- */

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->url_len = 0;
    c->url[0] = 0;
    c->header_bytes = 0;
    c->url_too_long = c->headers_too_long = 0;
    c->field_len = 0;
    c->in_value = c->field_is_auth = 0;
    c->auth_len = 0;
    c->auth_too_long = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->url_len + len > URL_MAX) {
        c->url_too_long = 1;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->header_bytes += len;
    if (c->header_bytes > HEADER_MAX)
        c->headers_too_long = 1;
    if (c->in_value) { /* a new field begins */
        c->in_value = 0;
        c->field_len = 0;
    }
    for (size_t i = 0; i < len; i++, c->field_len++)
        if (c->field_len < sizeof(c->field))
            c->field[c->field_len] = at[i];
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->header_bytes += len;
    if (c->header_bytes > HEADER_MAX)
        c->headers_too_long = 1;
    if (!c->in_value) {
        c->in_value = 1;
        c->field_is_auth = c->field_len == 13 && strncasecmp(c->field, "authorization", 13) == 0;
        if (c->field_is_auth) /* a second Authorization header replaces the first */
            c->auth_len = 0, c->auth_too_long = 0;
    }
    if (c->field_is_auth) {
        if (c->auth_len + len >= sizeof(c->auth))
            c->auth_too_long = 1;
        else
            memcpy(c->auth + c->auth_len, at, len), c->auth_len += len;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    route(c);
    /* one request at a time: stop parsing until the response is written */
    http_parser_pause(p, 1);
    return 0;
}

static http_parser_settings g_settings;

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b)
{
    (void)hd;
    b->base = malloc(sz);
    b->len = b->base ? sz : 0;
}

static void on_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (!c->busy) /* nothing being answered: idle, or a request that never completed */
        conn_close(c);
}

/* (Re)arm the idle timer: called when a connection opens and after every
 * complete request. */
static void arm_timer(struct conn *c)
{
    if (c->timer_on)
        uv_timer_start(&c->timer, on_timeout, (uint64_t)(c->h->d->cfg->http_idle_timeout * 1000.0),
                       0);
}

/* Parse buffered input until a request completes (it is answered, and the
 * parser waits for the response to be written) or the input runs out.
 * Pipelined requests are answered in order, one at a time. */
static void parse_pending(struct conn *c)
{
    while (!c->busy && !c->closing && c->in_len > 0) {
        const size_t used = http_parser_execute(&c->parser, &g_settings, c->in, c->in_len);
        const enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
        const size_t consumed = used; /* paused: up to and including the request's last byte */
        if (err == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            arm_timer(c);
        } else if (err != HPE_OK) {
            if (!c->busy)
                respond_error(c, 400, http_errno_description(err), 0);
            else
                conn_close(c);
            c->in_len = 0;
            return;
        }
        memmove(c->in, c->in + consumed, c->in_len - consumed);
        c->in_len -= consumed;
        if (err != HPE_PAUSED)
            break; /* a partial request: wait for more bytes */
    }
}

/* Send what OpenSSL wrote into wbio outside a response (handshake
 * records, alerts); close_after once it is out. */
static void tls_flush(struct conn *c, int close_after)
{
    struct sbuf out = {0};
    char chunk[16384];
    int n;
    while ((n = BIO_read(c->wbio, chunk, sizeof(chunk))) > 0)
        sb_put(&out, chunk, (size_t)n);
    if (out.len == 0 && !out.oom) {
        if (close_after)
            conn_close(c);
        return;
    }
    struct wreq *r = out.oom ? NULL : calloc(1, sizeof(*r));
    if (!r) {
        free(out.p);
        conn_close(c);
        return;
    }
    r->c = c;
    r->buf = out.p;
    r->tls_only = 1;
    r->close_after = close_after;
    uv_buf_t ub = uv_buf_init(out.p, (unsigned)out.len);
    if (uv_write(&r->w, (uv_stream_t *)&c->tcp, &ub, 1, on_written) < 0) {
        free(r->buf);
        free(r);
        conn_close(c);
    }
}

/* Records in, plaintext appended to c->in. @return 0; -1 when the
 * connection is done (a failed handshake: no certificate under mTLS, an
 * unknown CA, plaintext sent to a TLS port; it is closed, after the alert
 * if there is one). */
static int tls_input(struct conn *c, const char *data, size_t len)
{
    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        conn_close(c);
        return -1;
    }
    for (;;) {
        if (c->in_len + 4096 > c->in_cap) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 8192;
            char *p = c->in_len + 4096 > HTTP_IN_MAX ? NULL : realloc(c->in, cap);
            if (!p) { /* more than any client needs queued, or no memory */
                conn_close(c);
                return -1;
            }
            c->in = p;
            c->in_cap = cap;
        }
        const int n = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        const int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            tls_flush(c, 0); /* the server's handshake flight, if any */
            return 0;
        }
        if (e != SSL_ERROR_ZERO_RETURN) {
            char why[160];
            ERR_error_string_n(ERR_peek_last_error(), why, sizeof(why));
            GRIST_DEBUG("http: TLS connection refused: %s", why);
        }
        ERR_clear_error();
        tls_flush(c, 1); /* the alert, then close */
        return -1;
    }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (n < 0) {
        free(b->base);
        conn_close(c);
        return;
    }
    if (n == 0 || c->closing) {
        free(b->base);
        return;
    }
    if (c->ssl) {
        const int r = tls_input(c, b->base, (size_t)n);
        free(b->base);
        if (r == 0)
            parse_pending(c);
        return;
    }
    if (c->in_len + (size_t)n > HTTP_IN_MAX) { /* more than any client needs queued */
        free(b->base);
        conn_close(c);
        return;
    }
    if (c->in_len + (size_t)n > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 4096;
        while (cap < c->in_len + (size_t)n)
            cap *= 2;
        char *p = realloc(c->in, cap);
        if (!p) {
            free(b->base);
            conn_close(c);
            return;
        }
        c->in = p;
        c->in_cap = cap;
    }
    memcpy(c->in + c->in_len, b->base, (size_t)n);
    c->in_len += (size_t)n;
    free(b->base);
    parse_pending(c);
}

static void on_connection(uv_stream_t *srv, int status)
{
    struct grist_http *h = srv->data;
    if (status < 0 || h->stopping)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->h = h;
    uv_tcp_init(h->d->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    if (h->d->tls) {
        SSL_CTX *ctx = grist__tls_http_ctx(h->d->tls); /* the set in force now */
        c->ssl = ctx ? SSL_new(ctx) : NULL;
        if (ctx)
            SSL_CTX_free(ctx); /* the SSL holds its own reference */
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (!c->ssl || !c->rbio || !c->wbio) {
            BIO_free(c->rbio);
            BIO_free(c->wbio);
            if (c->ssl)
                SSL_free(c->ssl);
            c->ssl = NULL;
            uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
            return;
        }
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
    }
    c->next = h->conns;
    h->conns = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_timer_init(h->d->loop, &c->timer) == 0) {
        c->timer.data = c;
        c->timer_on = 1;
        arm_timer(c);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int grist__http_start(struct grist_daemon *d, const char *address, struct grist_http **out)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address || (size_t)(colon - address) >= sizeof(host))
        return -EINVAL;
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = 0;
    char *end;
    const long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -EINVAL;
    struct sockaddr_storage ss;
    if (host[0] == '[') { /* [v6]:port */
        size_t hl = strlen(host);
        if (hl < 2 || host[hl - 1] != ']')
            return -EINVAL;
        host[hl - 1] = 0;
        if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)&ss) < 0)
            return -EINVAL;
    } else if (uv_ip4_addr(strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, (int)port,
                           (struct sockaddr_in *)&ss) < 0) {
        return -EINVAL;
    }
    http_parser_settings_init(&g_settings);
    g_settings.on_message_begin = on_message_begin;
    g_settings.on_url = on_url;
    g_settings.on_header_field = on_header_field;
    g_settings.on_header_value = on_header_value;
    g_settings.on_message_complete = on_message_complete;
    struct grist_http *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->d = d;
    uv_tcp_init(d->loop, &h->srv);
    h->srv.data = h;
    int r = uv_tcp_bind(&h->srv, (const struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&h->srv, 128, on_connection);
    if (r < 0) {
        GRIST_ERR("--http %s: %s", address, uv_strerror(r));
        uv_close((uv_handle_t *)&h->srv, (uv_close_cb)free);
        return r;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&h->srv, (struct sockaddr *)&bound, &blen);
    char ip[64] = "?";
    if (bound.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof(ip));
        snprintf(h->bound, sizeof(h->bound), "[%s]:%d", ip,
                 ntohs(((struct sockaddr_in6 *)&bound)->sin6_port));
    } else {
        uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof(ip));
        snprintf(h->bound, sizeof(h->bound), "%s:%d", ip,
                 ntohs(((struct sockaddr_in *)&bound)->sin_port));
    }
    GRIST_INFO("http: serving /metrics, /api/v1 and / on %s (%s)", h->bound,
               d->tls ? (d->cfg->tls_client_ca[0] ? "TLS, client certificates" : "TLS")
                      : "plaintext");
    *out = h;
    return 0;
}

const char *grist__http_bound(const struct grist_http *h)
{
    return h->bound;
}

void grist__http_stop(struct grist_http *h)
{
    if (!h)
        return;
    h->stopping = 1;
    /* libuv runs close callbacks in its own order: detach the connections
     * from h before h goes with its listener */
    for (struct conn *c = h->conns, *n; c; c = n) {
        n = c->next;
        if (c->ticket) { /* a cluster query in flight answers nobody now */
            c->ticket->c = NULL;
            c->ticket = NULL;
        }
        c->h = NULL;
        conn_close(c);
    }
    h->conns = NULL;
    uv_close((uv_handle_t *)&h->srv, (uv_close_cb)free);
}
