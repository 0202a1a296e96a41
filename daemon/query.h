/*
 * The query API for dashboards (query.c): ListJobs, GetJob, GetHistory and
 * WatchJob as rpc.h methods, and the job views they and the HTTP API serve.
 * Loop thread.
 */
#ifndef GRIST_DAEMON_QUERY_H
#define GRIST_DAEMON_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "grist/v1/grist.pb-c.h"
#include "jobs.h"
#include "rpc.h"

/* The four methods (ud: the daemon). */
grist_unary_handler grist__query_list_jobs, grist__query_get_job, grist__query_get_history;
grist_stream_handler grist__query_watch_job;

/* After a tokens reload: end the watchers whose token no longer reads their job. */
void grist__watch_recheck(struct grist_daemon *d);
/* Shutdown: end every watcher with UNAVAILABLE. */
void grist__watch_finish_all(struct grist_daemon *d);

/* The JobBrief of j (strings point into j). */
void grist__job_brief(const struct grist_job *j, Grist__V1__JobBrief *b);
/* A job's GetJobResponse (what GetJob, WatchJob and the HTTP job view
 * serve): filled in place (resp points into the job and into the arrays
 * below, valid until the job changes; release frees the arrays), or packed
 * into a malloc'd buffer (NULL on ENOMEM). */
struct grist_job_response {
    Grist__V1__GetJobResponse resp;
    Grist__V1__JobBrief brief;
    Grist__V1__GroupState *gs, **gp;
    Grist__V1__FamilyDiagnostics *fd;
};
int grist__job_response_fill(const struct grist_job *j, struct grist_job_response *jr);
void grist__job_response_release(struct grist_job_response *jr);
uint8_t *grist__job_response_encode(const struct grist_job *j, size_t *out_len);

/* The history of one series of a group, downsampled with LTTB to at most
 * `points` (steps[] and vals[] malloc'ed). 0; -ENOENT (no such group);
 * -EINVAL (unknown series); -ENOMEM. */
int grist__history(const struct grist_job *j, uint32_t group, const char *series, uint64_t from,
                   uint64_t to, size_t points, uint64_t **steps, double **vals, size_t *n);
int grist__series_index(const char *series);

#endif
