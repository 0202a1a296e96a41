/*
 * The daemon's shared state, owned by the loop thread: configuration, the
 * gRPC side (net), the compute threads (engine), the job registry and the
 * live streams. Nothing here is touched by another thread.
 */
#ifndef GRIST_DAEMON_DAEMON_H
#define GRIST_DAEMON_DAEMON_H

#include <stdint.h>
#include <uv.h>

#include "auth.h"
#include "config.h"
#include "engine.h"
#include "net.h"
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

struct grist_daemon {
    uv_loop_t *loop;
    const struct grist_config *cfg;
    struct grist_limits limits;
    struct grist_job_policy defaults;
    struct grist_net net;
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

uint64_t grist__now_ms(const struct grist_daemon *d);

/* jobs.c: d->cfg = c, and the daemon-wide policy defaults and limits from
 * it. @return 0, or -1 after a message on stderr naming the bad option. */
int grist__daemon_configure(struct grist_daemon *d, const struct grist_config *c);

/* The compute thread that owns a job's statistics. */
static inline struct grist_engine *grist__engine_of(const struct grist_daemon *d, uint64_t key)
{
    return d->engines[key % d->nengines];
}

/* jobs.c */
struct grist_job *grist__job_find(struct grist_daemon *d, const char *id);
/* Attach a stream to the job named in hello, creating the job on first use.
 * On failure returns a gRPC status with err filled. */
grpc_status_code grist__job_attach(struct grist_daemon *d, const struct grist_hello *h,
                                   const struct grist_principal *who, struct grist_job **out,
                                   char *err, size_t errsz);
void grist__job_detach(struct grist_daemon *d, struct grist_job *j, struct grist_stream *s);
/* File a validated summary of rank into its step (takes ownership of sum).
 * Returns 0, or -1 with err filled for a step number the job refuses (a
 * jump of more than max-step-jump past its newest step). */
int grist__job_submit(struct grist_daemon *d, struct grist_job *j, uint32_t rank,
                      struct grist_summary *sum, char *err, size_t errsz);
void grist__job_on_result(void *ud, struct grist_engine_result *r);
void grist__jobs_tick(struct grist_daemon *d);
/* End the Attach streams that sent no Hello within --hello-timeout. */
void grist__attach_tick(struct grist_daemon *d);
void grist__jobs_free_all(struct grist_daemon *d);
/* The encoded current Hyperparams (NULL before the first push). */
const uint8_t *grist__job_current_push(const struct grist_job *j, size_t *len);

/* snapshot.c: durable job state (--state-dir); every call is a no-op without it */
struct grist_snapshots;
/* Create the directory if needed, restore every job file in it (before the
 * listeners start), start the snapshot timer. Failures are logged, never
 * fatal. @return 0; -ENOMEM. */
int grist__snapshot_start(struct grist_daemon *d);
/* A snapshot answer from a compute thread (takes r). */
void grist__snapshot_result(struct grist_daemon *d, struct grist_engine_result *r);
/* The job expires: its file goes. */
void grist__snapshot_forget(struct grist_daemon *d, const struct grist_job *j);
/* Shutdown: snapshot every job that changed, then call done once every file
 * is written (at once without --state-dir). */
void grist__snapshot_final(struct grist_daemon *d, void (*done)(struct grist_daemon *d));
/* Decode a job file completely, its statistics built on be and freed (the
 * fuzz target; needs d's cfg and limits only). @return 0; -1 with why. */
int grist__snapshot_check(const struct grist_daemon *d, struct grist_backend *be,
                          const uint8_t *buf, size_t len, char *why, size_t whysz);
/* Close the timer; free everything (after final). */
void grist__snapshot_stop(struct grist_daemon *d);

/* probe.c: every interval_s, each listener must answer an HTTP/2 preface;
 * PROBE_FAILS misses in a row call failed (once). 0 also when off. */
struct grist_probe;
int grist__probe_start(struct grist_daemon *d, double interval_s,
                       void (*failed)(struct grist_daemon *d), struct grist_probe **out);
void grist__probe_stop(struct grist_probe *p); /* NULL: no-op */

/* attach.c */
void grist__attach_call(struct grist_net *net, grpc_call *call, const struct grist_principal *who);
/* Queue msg (copied) on s; latest-wins after any message in flight. */
void grist__stream_send(struct grist_stream *s, const uint8_t *msg, size_t len);
/* After a tokens reload (SIGHUP): end the streams whose token was removed
 * or no longer covers their job (UNAUTHENTICATED). */
void grist__streams_recheck(struct grist_daemon *d);
/* Whether who, resolved before the last reload, still may do need on job
 * (NULL: no job yet); who is refreshed from the table in force. */
int grist__still_allowed(struct grist_daemon *d, struct grist_principal *who, const char *job,
                         enum grist_need need);
/* Finish every live stream with UNAVAILABLE (shutdown). */
void grist__streams_finish_all(struct grist_daemon *d);
struct grist_stream *grist__stream_next_in_job(struct grist_stream *s);

/* query.c */
void grist__query_call(struct grist_net *net, grpc_call *call, const char *method,
                       const struct grist_principal *who);
int grist__query_method(const char *method);
/* A job has a new evaluation: every watcher of it gets the new state. */
void grist__watch_notify(struct grist_daemon *d, const struct grist_job *j);
/* After a tokens reload: end the watchers whose token no longer reads their job. */
void grist__watch_recheck(struct grist_daemon *d);
/* End watchers of job (NULL: all, with UNAVAILABLE for shutdown). */
void grist__watch_finish_all(struct grist_daemon *d, const char *job);

/* http.c: the HTTP endpoint (/metrics, /api/v1, the page) on the loop */
int grist__http_start(struct grist_daemon *d, const char *address, struct grist_http **out);
const char *grist__http_bound(const struct grist_http *h);
void grist__http_stop(struct grist_http *h); /* closes the listener and every connection */
/* query.c: the history of one series of a group, downsampled with LTTB to at
 * most `points` (steps[] and vals[] malloc'ed). 0; -ENOENT (no such group);
 * -EINVAL (unknown series); -ENOMEM. */
int grist__history(const struct grist_job *j, uint32_t group, const char *series, uint64_t from,
                   uint64_t to, size_t points, uint64_t **steps, double **vals, size_t *n);
int grist__series_index(const char *series);

/* The daemon that owns a net (net is embedded in struct grist_daemon). */
static inline struct grist_daemon *grist__daemon_of(struct grist_net *net)
{
    return (struct grist_daemon *)((char *)net - offsetof(struct grist_daemon, net));
}

#endif
