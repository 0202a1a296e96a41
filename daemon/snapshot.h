/* Durable job state, --state-dir (snapshot.c); every call is a no-op
 * without it. Loop thread (the files are written by a thread of its own). */
#ifndef GRIST_DAEMON_SNAPSHOT_H
#define GRIST_DAEMON_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "daemon.h"

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
 * fuzz target; needs d's cfg and limits only). @return 0; GRIST_EBADSTATE with why. */
int grist__snapshot_check(const struct grist_daemon *d, struct grist_backend *be,
                          const uint8_t *buf, size_t len, char *why, size_t whysz);
/* Close the timer; free everything (after final). */
void grist__snapshot_stop(struct grist_daemon *d);

#endif
