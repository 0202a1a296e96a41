/*
 * DESIGN: backend selection. "auto" takes the first usable of cuda, cpu,
 * ref; a named backend that is not usable is an error (GRIST_ENOBACKEND),
 * never a silent fallback.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "grist/error.h"
#include "grist_config.h"

static int fill(const char *name, struct grist_backend_ops *ops)
{
    if (strcmp(name, "ref") == 0) {
        grist__backend_ref_fill(ops);
        return 0;
    }
    if (strcmp(name, "cpu") == 0) {
#if GRIST_HAVE_CPU
        return grist__backend_cpu_fill(ops);
#else
        return GRIST_ENOBACKEND;
#endif
    }
    if (strcmp(name, "cuda") == 0) {
#if GRIST_HAVE_CUDA
        return grist__backend_cuda_fill(ops);
#else
        return GRIST_ENOBACKEND;
#endif
    }
    return -EINVAL;
}

int grist__backend_open_named(const char *name, struct grist_backend **out)
{
    struct grist_backend *be = calloc(1, sizeof(*be));
    if (!be)
        return -ENOMEM;
    int r = fill(name, &be->ops);
    if (r == 0 && be->ops.init)
        r = be->ops.init(be);
    if (r < 0) {
        free(be);
        return r;
    }
    *out = be;
    return 0;
}

int grist_backend_open(const char *name, struct grist_backend **out)
{
    if (!name || !out)
        return -EINVAL;
    if (strcmp(name, "auto") != 0)
        return grist__backend_open_named(name, out);
    static const char *const order[] = {"cuda", "cpu", "ref"};
    int r = GRIST_ENOBACKEND;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        r = grist__backend_open_named(order[i], out);
        if (r == 0)
            return 0;
    }
    return r;
}

void grist_backend_close(struct grist_backend *be)
{
    if (!be)
        return;
    if (be->ops.fini)
        be->ops.fini(be);
    free(be);
}

const char *grist_backend_name(const struct grist_backend *be)
{
    return be->ops.name;
}

int grist_backend_usable(const char *name)
{
    struct grist_backend *be;
    if (grist__backend_open_named(name, &be) < 0)
        return 0;
    grist_backend_close(be);
    return 1;
}

void grist_backend_set_threads(struct grist_backend *be, int nthreads)
{
    if (be->ops.set_threads)
        be->ops.set_threads(be, nthreads);
}
