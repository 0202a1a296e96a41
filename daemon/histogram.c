/* DESIGN: see histogram.h. Tested in tests/unit/test_series.c. */
#include "histogram.h"

const double grist__histogram_bounds[GRIST_HISTOGRAM_NB] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                            0.005,  0.01,    0.025,  0.05,  0.1,
                                                            0.25,   0.5,     1.0,    2.5};

void grist__histogram_observe(struct grist_histogram *h, double v)
{
    h->count++;
    h->sum += v;
    for (int i = 0; i < GRIST_HISTOGRAM_NB; i++)
        if (v <= grist__histogram_bounds[i]) {
            h->bucket[i]++;
            break;
        }
}
