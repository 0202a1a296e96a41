/* The cluster view of a sharded gristd: ListJobs of every replica (fanout.c). */
#ifndef GRIST_DAEMON_FANOUT_H
#define GRIST_DAEMON_FANOUT_H

#include <stddef.h>
#include <stdint.h>

struct grist_daemon;

/* One replica's answer: status 0 with the encoded ListJobsResponse in body
 * (malloc'd), or the gRPC status the replica answered (made locally by
 * grist__rpc_status when the call failed) and its message. The caller's own shard is
 * left zeroed (status 0, no body): it answers from its registry. */
struct grist_fanout_result {
    int status;
    uint8_t *body;
    size_t len;
    char error[160];
};

/* Called on the loop thread once every replica answered or timed out (2 s);
 * it owns res (n entries, and each body). */
typedef void grist_fanout_done(void *ud, struct grist_fanout_result *res, uint32_t n);

/**
 * Ask every other replica of --shard-peers for its jobs, passing the
 * caller's authorization header value (auth, auth_len; 0: none) on.
 *
 * @return 0 (done will be called); -ENOENT (not sharded, or no
 *         --shard-peers); -ENOMEM.
 */
int grist__fanout_jobs(struct grist_daemon *d, const char *auth, size_t auth_len,
                       grist_fanout_done *done, void *ud);

/* The channels to the peers go (after the loop ends). */
void grist__fanout_free(struct grist_daemon *d);

#endif
