/*
 * libFuzzer target over snapshot loading (daemon/snapshot.c): a job file's
 * frame, its payload and the compute thread's part with every group's
 * statistics built on the ref backend (grist__snapshot_check, the same
 * decoding the loader runs). The checksum would stop almost every mutation
 * at the frame, so the first input byte picks the mode: odd, the rest is a
 * whole file as it is; even, the rest is a payload that gets a valid frame
 * (header and checksum) first, so the payload parser itself is explored.
 * Build: meson setup build-fuzz -Dfuzzing_engine=libfuzzer -Dcuda=disabled
 * (CC=clang); run: build-fuzz/tests/fuzz-state -max_len=400000
 * tests/fuzz/corpus-state. tests/fuzz/replay.c runs the corpus through this
 * function in every CI run.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "grist/kernels.h"
#include "snapio.h"
#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct grist_config cfg;
    static struct grist_daemon d;
    static struct grist_backend *be;
    if (!be) {
        grist__config_defaults(&cfg);
        cfg.history = 64; /* small rings: the allocations stay cheap per input */
        d.cfg = &cfg;
        d.limits.max_groups = 16;
        d.limits.max_workers = 4096;
        d.limits.max_sketch_dim = 4096;
        if (grist_backend_open("ref", &be) < 0)
            abort();
    }
    if (size == 0)
        return 0;
    char why[256];
    if (data[0] & 1) {
        grist__snapshot_check(&d, be, data + 1, size - 1, why, sizeof(why));
        return 0;
    }
    unsigned char *buf = malloc(GRIST_SIO_HEADER + size - 1);
    if (!buf)
        return 0;
    memcpy(buf + GRIST_SIO_HEADER, data + 1, size - 1);
    grist__sio_seal(buf, GRIST_JOB_MAGIC, GRIST_JOB_VERSION, size - 1);
    grist__snapshot_check(&d, be, buf, GRIST_SIO_HEADER + size - 1, why, sizeof(why));
    free(buf);
    return 0;
}
