/*
 * DESIGN: largest-triangle-three-buckets downsampling of a job's history
 * (the series of pushed values over steps) for GetHistory and
 * /api/v1/jobs/{job}/history. Pure: arrays in, indices out. Tested in
 * tests/unit/test_series.c.
 */
#include <math.h>

#include "lttb.h"

size_t grist__lttb(const double *x, const double *y, size_t n, size_t points, size_t *idx)
{
    if (points >= n || points < 3) {
        size_t k = points < 3 && points < n ? points : n;
        if (k == n)
            for (size_t i = 0; i < n; i++)
                idx[i] = i;
        else /* 1 or 2 points: first (and last) */
            for (size_t i = 0; i < k; i++)
                idx[i] = i == 0 ? 0 : n - 1;
        return k;
    }
    const double every = (double)(n - 2) / (double)(points - 2);
    size_t a = 0, out = 0;
    idx[out++] = 0;
    for (size_t i = 0; i < points - 2; i++) {
        size_t s = (size_t)floor((i + 1) * every) + 1, e = (size_t)floor((i + 2) * every) + 1;
        if (e > n)
            e = n;
        double ax = 0, ay = 0;
        for (size_t k = s; k < e; k++)
            ax += x[k], ay += y[k];
        const double cnt = (double)(e - s);
        ax /= cnt > 0 ? cnt : 1;
        ay /= cnt > 0 ? cnt : 1;
        size_t rs = (size_t)floor(i * every) + 1, re = (size_t)floor((i + 1) * every) + 1;
        double best = -1;
        size_t pick = rs;
        for (size_t k = rs; k < re && k < n; k++) {
            const double area = fabs((x[a] - ax) * (y[k] - y[a]) - (x[a] - x[k]) * (ay - y[a]));
            if (area > best) {
                best = area;
                pick = k;
            }
        }
        idx[out++] = pick;
        a = pick;
    }
    idx[out++] = n - 1;
    return out;
}
