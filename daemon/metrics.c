/*
 * DESIGN: GET /metrics, the Prometheus text format 0.0.4 (passes promtool
 * check metrics): daemon counters and gauges, the latency histograms, and
 * per-job, per-group series bounded by --metrics-max-jobs, filtered to the
 * jobs the caller's token covers. Runs on the loop (http.c serves it).
 */
#include <math.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "http_impl.h"
#include "jobs.h"

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

void grist__http_metrics(struct conn *c, const struct grist_principal *who, int keep)
{
    struct grist_daemon *d = c->h->d;
    struct sbuf b = {0};
    metric_u64(&b, "gristd_streams", "gauge", "Live Attach streams (workers connected).",
               d->nstreams);
    metric_u64(&b, "gristd_jobs", "gauge", "Jobs known to the daemon.", d->njobs);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    /* what the heap holds for the program (every arena's chunks in use plus
     * mmap'd blocks), against the RSS: the gap is the allocator's retention
     * and gRPC's own pools. mallinfo2 walks the arenas under their locks:
     * microseconds, once per scrape */
    const struct mallinfo2 mi = mallinfo2();
    metric_u64(&b, "gristd_heap_in_use_bytes", "gauge",
               "Bytes of the C heap in use (malloc'd chunks and mmap'd blocks; glibc mallinfo2).",
               (uint64_t)(mi.uordblks + mi.hblkhd));
#endif
    metric_head(&b, "gristd_compute_queue_depth", "gauge",
                "Aggregated steps waiting for a compute thread.");
    for (uint32_t i = 0; i < d->nengines; i++)
        sb_printf(&b, "gristd_compute_queue_depth{thread=\"%u\"} %u\n", i,
                  d->engines[i] ? grist__engine_depth(d->engines[i]) : 0);
    uint64_t deferred = 0, requested = 0;
    for (uint32_t i = 0; i < d->nengines; i++) {
        deferred += d->engines[i] ? grist__engine_families_deferred(d->engines[i]) : 0;
        requested += d->engines[i] ? grist__engine_families_requested(d->engines[i]) : 0;
    }
    metric_u64(&b, "gristd_family_solves_total", "counter",
               "Family solves handed to the families thread (one eigendecomposition per group).",
               requested);
    metric_u64(&b, "gristd_family_solves_deferred_total", "counter",
               "Family solves postponed to their job's next evaluation: the families thread "
               "had a request waiting.",
               deferred);
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
    grist__http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", &b, keep);
}
