/* The listener probe (probe.c): every interval_s, each listener must answer
 * an HTTP/2 preface; PROBE_FAILS misses in a row call failed (once).
 * Loop thread. */
#ifndef GRIST_DAEMON_PROBE_H
#define GRIST_DAEMON_PROBE_H

#include "daemon.h"

struct grist_probe;
/* @return 0, also when off (interval_s 0); -ENOMEM. */
int grist__probe_start(struct grist_daemon *d, double interval_s,
                       void (*failed)(struct grist_daemon *d), struct grist_probe **out);
void grist__probe_stop(struct grist_probe *p); /* NULL: no-op */

#endif
