/*
 * A cheap load generator for gristd (benchmarks only): many worker streams
 * driven by ONE thread on ONE completion queue, with pre-encoded summaries
 * handed to gRPC without a copy. The thread-per-stream generator of
 * bench_daemon.c spends more CPU than the daemon it measures once streams
 * number in the hundreds; this one is meant to sit on its own core while
 * gristd has the other.
 *
 * Contract: lg_run() opens jobs x world Attach streams (one channel, hence
 * one TCP connection, per stream unless conns_per_job), waits for every
 * Welcome, then sends each job's ranks a summary at every step time (the
 * jobs' phases spread over the period), receives every push, half-closes and
 * waits for every status. Latency of a push = its arrival - the start of the
 * last rank's send of the step it was computed from. Nothing is retried: a
 * stream that fails counts in failed_streams.
 */
#ifndef GRIST_BENCH_LOADGEN_H
#define GRIST_BENCH_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

struct lg_opts {
    const char *target;
    const char *tag; /* job ids are "<tag>-<j>" */
    int jobs, world, steps;
    double rate; /* steps/s per stream */
    uint32_t ngroups, m;
    int default_policy; /* 0: a selection every step (pushes to time); 1: gristd's defaults */
    int conn_per_job; /* 1: the ranks of a job share one connection; 0: one per stream */
    double (*cpu_of)(void); /* the daemon's CPU seconds so far (NULL: not measured) */
};

struct lg_result {
    size_t n; /* pushes timed */
    double p50, p99, max; /* s */
    double lag_p99; /* s: a send's start after its due time, 99th percentile */
    uint64_t sends, failed_streams;
    double cpu_s, wall_s; /* this process's CPU (all threads) and wall time while sending */
    double target_cpu_s; /* o->cpu_of() over the same time */
};

/* 0, or -1 when the streams could not be opened (then *r says how many failed). */
int lg_run(const struct lg_opts *o, struct lg_result *r);

#endif
