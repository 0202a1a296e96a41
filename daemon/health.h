/* grpc.health.v1.Health/Check (health.c): an rpc.h unary method, open to
 * every caller; ud is the daemon (its net's state). Loop thread. */
#ifndef GRIST_DAEMON_HEALTH_H
#define GRIST_DAEMON_HEALTH_H

#include "rpc.h"

grist_unary_handler grist__health_check;

#endif
