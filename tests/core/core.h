/* A gristd core without a network, for unit tests and fuzz targets: the
 * daemon's own configuration path (grist__daemon_configure), a libuv loop
 * and one compute thread on the ref backend, jobs made and fed through
 * grist__job_attach() and grist__job_submit() as attach.c does. */
#ifndef GRIST_TEST_CORE_H
#define GRIST_TEST_CORE_H

#include <stdint.h>

#include "config.h"
#include "daemon.h"
#include "jobs.h"

struct test_core {
    struct grist_config cfg; /* set by test_core_start's caller after grist__config_defaults */
    struct grist_daemon d;
    uv_loop_t loop;
};

/* Start with c->cfg as the configuration. @return 0 or -1. */
int test_core_start(struct test_core *c);
/* Free the jobs, stop the compute thread, close the loop. */
void test_core_stop(struct test_core *c);
/* Attach as a Hello with ngroups groups ("g<0>", ... of 1000 elements, lr
 * 0.1, beta0 0.9) and sketch dim m would; NULL with err on a refusal. */
struct grist_job *test_core_attach(struct test_core *c, const char *id, uint32_t world,
                                   uint32_t ngroups, uint32_t m, char *err, size_t errsz);
/* Submit rank's summary of step with every sketch value v, batch 8, lr and
 * beta not reported; the return of grist__job_submit(). */
int test_core_submit(struct test_core *c, struct grist_job *j, uint32_t rank, uint64_t step,
                     float v);

#endif
