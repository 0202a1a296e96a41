/* Writes the seed corpus of fuzz_wire (run once by hand; the files are
 * committed): valid and broken Hello and Summary messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grist/v1/grist.pb-c.h"

static void put(const char *dir, const char *name, uint8_t shape, const uint8_t *buf, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(&shape, 1, 1, f);
    fwrite(buf, 1, len, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    uint8_t buf[8192];
    Grist__V1__GroupSpec gs = GRIST__V1__GROUP_SPEC__INIT;
    gs.name = "enc";
    gs.num_elements = 1000;
    gs.beta = 0.9;
    Grist__V1__GroupSpec *gp[1] = {&gs};
    double cand[3] = {0.5, 0.9, 0.99};
    Grist__V1__Policy pol = GRIST__V1__POLICY__INIT;
    pol.noise_correction = "acf";
    pol.n_candidates = 3;
    pol.candidates = cand;
    Grist__V1__Hello h = GRIST__V1__HELLO__INIT;
    h.job_id = "job";
    h.world_size = 2;
    h.n_groups = 1;
    h.groups = gp;
    h.sketch_dim = 64;
    h.policy = &pol;
    Grist__V1__WorkerMessage wm = GRIST__V1__WORKER_MESSAGE__INIT;
    wm.msg_case = GRIST__V1__WORKER_MESSAGE__MSG_HELLO;
    wm.hello = &h;
    put(dir, "hello", 0, buf, grist__v1__worker_message__pack(&wm, buf));
    h.rank = 5;
    put(dir, "hello-bad-rank", 0, buf, grist__v1__worker_message__pack(&wm, buf));
    h.rank = 0;
    h.sketch_dim = 1000;
    put(dir, "hello-bad-dim", 0, buf, grist__v1__worker_message__pack(&wm, buf));

    float sk[64];
    for (int i = 0; i < 64; i++)
        sk[i] = (float)i;
    Grist__V1__GroupSummary g = GRIST__V1__GROUP_SUMMARY__INIT;
    g.sq_norm = 3;
    g.n_sketch = 64;
    g.sketch = sk;
    Grist__V1__GroupSummary *gg[1] = {&g};
    Grist__V1__Summary s = GRIST__V1__SUMMARY__INIT;
    s.step = 7;
    s.n_groups = 1;
    s.groups = gg;
    wm.msg_case = GRIST__V1__WORKER_MESSAGE__MSG_SUMMARY;
    wm.summary = &s;
    put(dir, "summary", 0, buf, grist__v1__worker_message__pack(&wm, buf));
    sk[3] = NAN;
    put(dir, "summary-nan", 0, buf, grist__v1__worker_message__pack(&wm, buf));
    sk[3] = 1;
    put(dir, "summary-wrong-shape", 5, buf, grist__v1__worker_message__pack(&wm, buf));
    Grist__V1__Summary s2 = s;
    s2.step = 8;
    Grist__V1__Summary *ss[2] = {&s, &s2};
    Grist__V1__SummaryBatch sb = GRIST__V1__SUMMARY_BATCH__INIT;
    sb.n_summaries = 2;
    sb.summaries = ss;
    wm.msg_case = GRIST__V1__WORKER_MESSAGE__MSG_BATCH;
    wm.batch = &sb;
    put(dir, "batch", 0, buf, grist__v1__worker_message__pack(&wm, buf));
    sk[5] = NAN;
    put(dir, "batch-nan", 0, buf, grist__v1__worker_message__pack(&wm, buf));
    sk[5] = 1;
    const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x00};
    put(dir, "junk", 0, junk, sizeof(junk));
    return 0;
}
