/* libgrist internals shared between its source files. */
#ifndef GRIST_CLIENT_INTERNAL_H
#define GRIST_CLIENT_INTERNAL_H

#include <grpc/grpc.h>

#include "grist/client.h"

/* The client's channel (query.c makes its blocking calls on it). */
grpc_channel *grist__client_channel(struct grist_client *c);
/* The initial metadata every call sends (the bearer token; count 0 without). */
const grpc_metadata *grist__client_metadata(const struct grist_client *c, size_t *count);

#endif
