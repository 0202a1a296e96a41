/*
 * Largest-triangle-three-buckets (Steinarsson 2013): of n points (x
 * increasing), keep `points` that preserve the shape: the first and the
 * last, and in each of points - 2 equal buckets in between the one forming
 * the largest triangle with the previous kept point and the next bucket's
 * mean. Fewer points than asked: all of them. 1 or 2 asked: the first (and
 * the last).
 */
#ifndef GRIST_LTTB_H
#define GRIST_LTTB_H

#include <stddef.h>

/* Writes the kept indices (increasing) to idx (room for min(n, points))
 * and returns their count. */
size_t grist__lttb(const double *x, const double *y, size_t n, size_t points, size_t *idx);

#endif
