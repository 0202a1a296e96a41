/* Umbrella header of libgrist-kernels. */
#ifndef GRIST_KERNELS_H
#define GRIST_KERNELS_H

#include "grist/backend.h"
#include "grist/error.h"
#include "grist/families.h"
#include "grist/select.h"
#include "grist/sketch.h"
#include "grist/stats.h"

#endif /* GRIST_KERNELS_H */
