/*
 * DESIGN: the step sketcher of a session. One step's sketch is every tensor
 * of the step sketched into its group's accumulator (MATH.md section 2),
 * run either inline or on the sketcher's own thread, so that a caller can
 * start it when the gradients are final (the start of optimizer.step()) and
 * collect it after the optimizer has run, on another core. One sketch at a
 * time: begin refuses with -EBUSY until the previous one was collected.
 * The tensors' memory must stay valid and unmodified until wait returns;
 * the sketcher never touches it afterwards.
 */
#ifndef GRIST_CLIENT_SKETCHER_H
#define GRIST_CLIENT_SKETCHER_H

#include <stdint.h>

#include "grist/client.h"

struct grist__sketcher;

/* 0 or -ENOMEM. kind: enum grist_sketch_kind; group_sizes: elements per
 * group; samples: the block sketch's sampling N per group (both copied; the
 * finished accumulators are unsampled, docs/MATH.md 2.1). */
int grist__sketcher_new(uint32_t ngroups, uint32_t m, int kind, const uint64_t *group_sizes,
                        const uint32_t *samples, struct grist__sketcher **out);
/* Waits for a running sketch, stops the thread, frees. NULL allowed. */
void grist__sketcher_free(struct grist__sketcher *sk);
/* Validates every tensor (group in range, offset + n within the group,
 * pointers) before anything runs: 0; -EBUSY (a sketch not yet collected);
 * -EINVAL; GRIST_EBADLEN (outside its group); -ENOMEM; -EAGAIN (thread). */
int grist__sketcher_begin(struct grist__sketcher *sk, const uint32_t *seeds,
                          const struct grist_tensor *t, uint32_t nt, int async);
/* Steps that sketch fewer elements than this (n / N per group sampled 1
 * run in N) are sketched inline even when begun
 * async (default 2^19: below it the thread hand-off costs more than the
 * sketch). Tests set 0 to exercise the thread. */
void grist__sketcher_set_async_min(struct grist__sketcher *sk, uint64_t elements);
/* 1 while a begun sketch is still running, else 0. */
int grist__sketcher_busy(struct grist__sketcher *sk);
/* Waits for the begun sketch; *acc (ngroups * m doubles) and *sq (ngroups)
 * stay valid until reset. Returns the sketch's result (0 or a kernel error);
 * -ENOENT when nothing was begun. */
int grist__sketcher_wait(struct grist__sketcher *sk, const double **acc, const double **sq);
/* Forget the collected sketch: begin may run again. */
void grist__sketcher_reset(struct grist__sketcher *sk);

#endif
