/*
 * DESIGN: grpc.health.v1.Health/Check. The overall service ("") and
 * "grist.v1.Grist" are SERVING while the daemon runs and NOT_SERVING once
 * shutdown has begun or a listener stopped accepting (probe.c); any other service name is NOT_FOUND, as the health
 * protocol specifies. Loop thread.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "daemon.h"
#include "health.h"
#include "net.h"

int grist__health_check(void *ud, const struct grist_principal *who, const ProtobufCMessage *req,
                        struct grist_reply *rep)
{
    (void)who; /* health is open to every caller (probes carry no token) */
    const struct grist_daemon *d = ud;
    const Grpc__Health__V1__HealthCheckRequest *q =
        (const Grpc__Health__V1__HealthCheckRequest *)req;
    const int known =
        q->service == NULL || q->service[0] == '\0' || strcmp(q->service, "grist.v1.Grist") == 0;
    if (!known) {
        snprintf(rep->err, sizeof(rep->err), "unknown service '%.100s'", q->service);
        return -ENOENT;
    }
    static Grpc__Health__V1__HealthCheckResponse resp =
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = d->net->shutting_down || d->net->listener_failed
        ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
        : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    rep->msg = &resp.base; /* packed at once, on this thread */
    return 0;
}
