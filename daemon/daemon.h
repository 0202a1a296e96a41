/*
 * The daemon's shared state, owned by the loop thread: configuration, the
 * gRPC side (net), the compute threads (engine), the job registry and the
 * live streams. Nothing here is touched by another thread. This header is
 * data only: each module's functions are declared in its own header
 * (jobs.h, attach.h, query.h, publish.h, snapshot.h, probe.h, http.h, ...),
 * and the modules call downwards only (daemon/README.md, "Layers").
 */
#ifndef GRIST_DAEMON_DAEMON_H
#define GRIST_DAEMON_DAEMON_H

#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "engine.h"
#include "wire.h"

#define GRIST_MAX_COMPUTE 16
#define GRIST_MAX_SHARDS 1024

struct grist_job;
struct grist_stream;
struct grist_watch;

struct grist_counters {
    uint64_t streams_opened, streams_closed;
    uint64_t summaries, summaries_rejected, summaries_late, summaries_duplicate;
    uint64_t steps_aggregated, steps_partial, steps_dropped, steps_shed;
    uint64_t pushes, push_messages;
    uint64_t bytes_in, bytes_out;
    uint64_t jobs_created, jobs_expired;
    uint64_t step_segments;
    uint64_t snapshots_written, snapshots_superseded, snapshot_errors, snapshots_refused,
        jobs_restored;
    uint64_t auth_unauthenticated, auth_denied, reloads, reload_errors;
    uint64_t summaries_rate_limited, streams_limited, jobs_create_limited;
    uint64_t shard_redirects;
};

#include "histogram.h"

struct grist_http;
struct grist_net;

/* What the job registry reports upwards (jobs.c calls these; main.c wires
 * them to publish.c and snapshot.c). Each may be NULL. */
struct grist_job_events {
    void (*version)(void *ud, struct grist_job *j); /* j->push_msg is a new version */
    void (*state)(void *ud, struct grist_job *j); /* a new evaluation or family values */
    void (*gone)(void *ud, struct grist_job *j); /* j expires; it is freed after */
    void *ud;
};

struct grist_daemon {
    uv_loop_t *loop;
    const struct grist_config *cfg;
    struct grist_limits limits;
    struct grist_job_policy defaults;
    struct grist_net *net; /* the gRPC server (net.c); NULL in a core without a network */
    struct grist_job_events events;
    struct grist_engine *engines[GRIST_MAX_COMPUTE]; /* jobs are sharded by key */
    uint32_t nengines, engines_running;
    uv_timer_t tick;
    struct grist_job *jobs; /* all jobs, a list */
    uint32_t njobs;
    uint64_t stats_bytes; /* the estimated statistics memory of every job (--memory-budget) */
    uint64_t next_key, next_session;
    struct grist_stream *streams; /* all live Attach streams */
    struct grist_watch *watches; /* all live WatchJob streams */
    uint32_t nstreams;
    struct grist_counters cnt;
    struct grist_histogram solve_seconds; /* selection time per evaluation */
    struct grist_histogram push_latency_seconds; /* step queued -> push handed to its streams */
    struct grist_http *http; /* NULL without --http */
    struct grist_snapshots *snap; /* NULL without --state-dir */
    struct grist_probe *probe; /* NULL with --listener-probe 0 */
    struct grist_auth *auth; /* NULL without --tokens: every call is allowed */
    struct grist_tls *tls; /* NULL without --tls-cert: plaintext */
    uint32_t shard_i, shard_n; /* --shard I/N (n 0 or 1: not sharded) */
    char *shard_peer[GRIST_MAX_SHARDS]; /* --shard-peers, NULL when not given */
    char *shard_peers_buf;
    struct grist_peer_bucket *peers; /* job creation per client address (attach.c) */
    struct grist_fanout *fanout; /* channels to the other shards (fanout.c), made on use */
    uint32_t npeers;
    int exit_code; /* main()'s status once the loop returns */
    int stopping;
};

/* The loop's clock, in ms. */
static inline uint64_t grist__now_ms(const struct grist_daemon *d)
{
    return uv_now(d->loop);
}

/* The compute thread that owns a job's statistics. */
static inline struct grist_engine *grist__engine_of(const struct grist_daemon *d, uint64_t key)
{
    return d->engines[key % d->nengines];
}

#endif
