/*
 * The latency histogram of /metrics (push latency, solve time): fixed
 * Prometheus-style bounds in seconds; an observation counts in the first
 * bucket whose bound it does not exceed, above the last bound only in the
 * count (the +Inf bucket). Cumulative buckets are made when printed.
 * Not to be confused with a job's history (jobs.h, lttb.h).
 */
#ifndef GRIST_HISTOGRAM_H
#define GRIST_HISTOGRAM_H

#include <stdint.h>

#define GRIST_HISTOGRAM_NB 14
extern const double grist__histogram_bounds[GRIST_HISTOGRAM_NB];

struct grist_histogram {
    uint64_t count;
    double sum;
    uint64_t bucket[GRIST_HISTOGRAM_NB]; /* observations <= bound[i] and > bound[i - 1] */
};

void grist__histogram_observe(struct grist_histogram *h, double v);

#endif
