/*
 * The Attach stream, one per worker process (attach.c): Hello, summaries
 * and batches in; Welcome and Hyperparams versions out. Loop thread.
 */
#ifndef GRIST_DAEMON_ATTACH_H
#define GRIST_DAEMON_ATTACH_H

#include "daemon.h"
#include "rpc.h"

/* The Attach method (ud: the daemon). */
grist_stream_handler grist__attach_stream;

/* End the Attach streams that sent no Hello within --hello-timeout. */
void grist__attach_tick(struct grist_daemon *d);
/* After a tokens reload (SIGHUP): end the streams whose token was removed
 * or no longer covers their job (UNAUTHENTICATED). */
void grist__streams_recheck(struct grist_daemon *d);
/* Finish every live stream with UNAVAILABLE (shutdown). */
void grist__streams_finish_all(struct grist_daemon *d);

#endif
