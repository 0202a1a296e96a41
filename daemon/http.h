/* The HTTP endpoint (http.c, with metrics.c and api.c): /metrics, /api/v1
 * and the page, served on the loop. */
#ifndef GRIST_DAEMON_HTTP_H
#define GRIST_DAEMON_HTTP_H

#include "daemon.h"

struct grist_http;
int grist__http_start(struct grist_daemon *d, const char *address, struct grist_http **out);
const char *grist__http_bound(const struct grist_http *h);
void grist__http_stop(struct grist_http *h); /* closes the listener and every connection */

#endif
