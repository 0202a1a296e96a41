#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "wire.h"
#include "grist/backend.h"

int test_core_start(struct test_core *c)
{
    memset(&c->d, 0, sizeof(c->d));
    if (grist__daemon_configure(&c->d, &c->cfg) < 0 || uv_loop_init(&c->loop) != 0)
        return -1;
    c->d.loop = &c->loop;
    struct grist_backend *be;
    if (grist_backend_open("ref", &be) < 0)
        return -1;
    c->d.nengines = 1;
    if (grist__engine_start(&c->d.engines[0], &c->loop, be, (uint32_t)c->cfg.compute_queue,
                            c->cfg.compute_lag, grist__job_on_result, &c->d) < 0)
        return -1;
    grist__engine_set_families_interval(c->d.engines[0], c->cfg.families_interval,
                                        c->cfg.families_idle_interval);
    return 0;
}

static void stopped(void *ud)
{
    (void)ud;
}

void test_core_stop(struct test_core *c)
{
    grist__jobs_free_all(&c->d);
    grist__engine_stop(c->d.engines[0], stopped);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
}

struct grist_job *test_core_attach(struct test_core *c, const char *id, uint32_t world,
                                   uint32_t ngroups, uint32_t m, char *err, size_t errsz)
{
    struct grist_hello h = {.world = world, .m = m, .ngroups = ngroups};
    snprintf(h.job_id, sizeof(h.job_id), "%s", id);
    struct grist_group_spec *gs = calloc(ngroups, sizeof(*gs));
    if (!gs) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    for (uint32_t g = 0; g < ngroups; g++) {
        snprintf(gs[g].name, sizeof(gs[g].name), "g<%u>", g);
        gs[g].n = 1000;
        gs[g].lr = 0.1;
        gs[g].beta0 = 0.9;
    }
    h.groups = gs;
    struct grist_job *j = NULL;
    static const struct grist_principal open = {.role = GRIST_ROLE_OPEN};
    const int st = grist__job_attach(&c->d, &h, &open, &j, err, errsz);
    free(gs);
    return st == 0 ? j : NULL;
}

int test_core_submit(struct test_core *c, struct grist_job *j, uint32_t rank, uint64_t step,
                     float v)
{
    const uint32_t ng = j->ngroups, m = j->m;
    struct grist_summary s = {.step = step, .ngroups = ng, .m = m};
    s.sq_norm = calloc(ng, sizeof(double));
    s.batch = malloc(ng * sizeof(uint32_t));
    s.lrb = malloc(2 * (size_t)ng * sizeof(double));
    s.sketch = malloc((size_t)ng * m * sizeof(float));
    if (!s.sq_norm || !s.batch || !s.lrb || !s.sketch) {
        grist__summary_free(&s);
        return -1;
    }
    for (uint32_t g = 0; g < ng; g++) {
        s.batch[g] = 8;
        s.lrb[g] = 0.0; /* lr not reported */
        s.lrb[ng + g] = -1.0; /* beta not reported */
    }
    for (size_t i = 0; i < (size_t)ng * m; i++)
        s.sketch[i] = v;
    char err[256];
    return grist__job_submit(&c->d, j, rank, &s, err, sizeof(err));
}
