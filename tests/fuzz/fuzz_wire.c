/*
 * libFuzzer target over the daemon's pure decoding and validation
 * (daemon/wire.c): WorkerMessage bytes -> Hello / Summary structs, then the
 * policy merge of a decoded Hello. The first input byte picks the job shape
 * the summary is checked against. Build: meson setup build-fuzz
 * -Dfuzzing_engine=libfuzzer -Dcuda=disabled (CC=clang); run:
 * build-fuzz/tests/fuzz-wire tests/fuzz/corpus. tests/fuzz/replay.c runs the
 * corpus through the same function in every CI run.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct grist_limits lim = {64, 1024, 65536};
    uint32_t ngroups = 1, m = 64;
    if (size > 0) {
        ngroups = 1 + (data[0] & 3);
        m = 64u << ((data[0] >> 2) & 3);
        data++;
        size--;
    }
    enum grist_wmsg_kind kind = 0;
    struct grist_hello h;
    struct grist_summary s;
    struct grist_summary *batch = NULL;
    size_t nbatch = 0;
    char err[256];
    int st = grist__decode_worker(data, size, &lim, ngroups, m, &kind, &h, &s, &batch, &nbatch, err,
                                  sizeof(err));
    if (st == 0 && kind == GRIST_WMSG_HELLO) {
        struct grist_job_policy def, out;
        memset(&def, 0, sizeof(def));
        grist_policy_default(&def.sel);
        def.solve_every = 50;
        def.gamma = 0.95;
        def.ncand = grist_candidates_default(0, 0.9999, def.cand);
        grist__policy_merge(&def, &h.policy, &out, err, sizeof(err));
        grist__hello_free(&h);
    } else if (st == 0 && kind == GRIST_WMSG_SUMMARY) {
        grist__summary_free(&s);
    } else if (st == 0 && kind == GRIST_WMSG_BATCH) {
        grist__batch_free(batch, nbatch);
    }
    return 0;
}
