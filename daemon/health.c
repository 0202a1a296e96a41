/*
 * DESIGN: grpc.health.v1.Health/Check. The overall service ("") and
 * "grist.v1.Grist" are SERVING while the daemon runs and NOT_SERVING once
 * shutdown has begun or a listener stopped accepting (probe.c); any other service name is NOT_FOUND, as the health
 * protocol specifies. Loop thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "auth.h"
#include "net.h"

static grpc_status_code check(struct grist_net *net, const struct grist_principal *who,
                              const unsigned char *in, size_t in_len, unsigned char **out,
                              size_t *out_len, char *msg, size_t msg_size)
{
    (void)who; /* health is open to every caller (probes carry no token) */
    Grpc__Health__V1__HealthCheckRequest *req =
        grpc__health__v1__health_check_request__unpack(NULL, in_len, in);
    if (!req) {
        snprintf(msg, msg_size, "HealthCheckRequest does not decode");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    const int known = req->service == NULL || req->service[0] == '\0' ||
        strcmp(req->service, "grist.v1.Grist") == 0;
    if (!known) {
        snprintf(msg, msg_size, "unknown service '%.100s'", req->service);
        grpc__health__v1__health_check_request__free_unpacked(req, NULL);
        return GRPC_STATUS_NOT_FOUND;
    }
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = net->shutting_down || net->listener_failed
        ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
        : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    *out_len = grpc__health__v1__health_check_response__get_packed_size(&resp);
    *out = malloc(*out_len ? *out_len : 1);
    if (!*out)
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    grpc__health__v1__health_check_response__pack(&resp, *out);
    return GRPC_STATUS_OK;
}

void grist__health_call(struct grist_net *net, grpc_call *call)
{
    static const struct grist_principal open = {.role = GRIST_ROLE_OPEN};
    grist__unary_start(net, call, check, &open);
}
