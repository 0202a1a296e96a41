/*
 * A plain C training loop attached through libgrist: logistic regression on
 * a synthetic, ill-conditioned problem, trained by SGD with heavy-ball
 * momentum. Every step it sketches the gradient (grist_sketch_accum_f32),
 * submits it, and applies the newest momentum gristd pushed.
 *
 *   build/client/c_worker ADDRESS [steps]      e.g. 127.0.0.1:7788
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grist/client.h"

enum { D = 400, NS = 2000, M = 256, BATCH = 32 };

static double frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xFFFFFF) / 16777216.0;
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:7788";
    const int steps = argc > 2 ? atoi(argv[2]) : 600;
    static float X[NS][D], w[D], vel[D], grad[D];
    static int y[NS];
    unsigned seed = 7;
    float wtrue[D];
    for (int j = 0; j < D; j++)
        wtrue[j] = (float)(frand(&seed) - 0.5);
    for (int i = 0; i < NS; i++) {
        double z = 0;
        for (int j = 0; j < D; j++) {
            /* feature scales from 1 to 0.05: an ill-conditioned problem */
            X[i][j] = (float)((frand(&seed) - 0.5) * (1.0 - 0.95 * j / D));
            z += X[i][j] * wtrue[j];
        }
        y[i] = z > 0;
    }

    struct grist_client *c;
    struct grist_session *s;
    if (grist_client_open(addr, NULL, &c) < 0)
        return 1;
    const double lr = 0.5, beta0 = 0.0;
    struct grist_group_desc g = {.name = "weights",
                                 .num_elements = D,
                                 .optimizer = GRIST_OPT_SGD,
                                 .lr = lr,
                                 .beta = beta0};
    struct grist_attach_options o = {.job = "c-worker",
                                     .rank = 0,
                                     .world_size = 1,
                                     .ngroups = 1,
                                     .groups = &g,
                                     .sketch_dim = M,
                                     .solve_every = 20};
    if (grist_session_attach(c, &o, &s) < 0)
        return 1;
    if (grist_session_wait_ready(s, 5.0) < 0)
        fprintf(stderr, "c_worker: gristd not reachable yet; training anyway\n");

    double beta = beta0;
    uint64_t seen = 0;
    for (int t = 1; t <= steps; t++) {
        memset(grad, 0, sizeof(grad));
        double loss = 0;
        for (int b = 0; b < BATCH; b++) {
            const int i = (int)(frand(&seed) * NS);
            double z = 0;
            for (int j = 0; j < D; j++)
                z += X[i][j] * w[j];
            const double p = 1.0 / (1.0 + exp(-z));
            loss += -(y[i] ? log(p + 1e-12) : log(1 - p + 1e-12));
            for (int j = 0; j < D; j++)
                grad[j] += (float)((p - y[i]) * X[i][j] / BATCH);
        }
        for (int j = 0; j < D; j++) { /* PyTorch's SGD: v = beta v + g; w -= lr v */
            vel[j] = (float)(beta * vel[j] + grad[j]);
            w[j] -= (float)(lr * vel[j]);
        }
        /* the summary: sketch + squared norm, then submit (never blocks) */
        const uint32_t job_seed = grist_session_job_seed(s);
        if (job_seed) {
            double acc[M] = {0}, sq = 0;
            float sk[M];
            grist_sketch_accum_f32(grist_sketch_group_seed(job_seed, 0), grad, D, 0, acc, M, &sq);
            grist_sketch_finish(acc, M, sk);
            uint32_t bs = BATCH;
            grist_session_submit(s, (uint64_t)t, sk, &sq, &bs, 0);
        }
        struct grist_group_hyperparams hp;
        uint64_t version;
        if (grist_session_latest(s, &hp, 1, &version, NULL) == 0 && version != seen) {
            seen = version;
            printf("step %4d: gristd pushed momentum %.3f (version %llu)\n", t, hp.momentum,
                   (unsigned long long)version);
            beta = hp.momentum;
        }
        if (t % 100 == 0)
            printf("step %4d: loss %.4f, momentum %.3f\n", t, loss / BATCH, beta);
    }
    struct grist_session_stats st;
    grist_session_stats(s, &st);
    printf("c_worker: %llu summaries sent, %llu dropped, %llu pushes received\n",
           (unsigned long long)st.sent, (unsigned long long)st.dropped,
           (unsigned long long)st.received);
    grist_session_close(s);
    grist_client_close(c);
    return 0;
}
