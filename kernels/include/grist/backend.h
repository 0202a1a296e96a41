/*
 * Kernels backends: ref (plain C, double accumulation, the oracle), cpu
 * (OpenBLAS + LAPACKE), cuda (cuBLAS + cuSOLVER, state resident on the
 * device). One backend object belongs to one thread at a time (the daemon's
 * compute thread); it holds the BLAS/cuBLAS handles and the device stream.
 */
#ifndef GRIST_BACKEND_H
#define GRIST_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

struct grist_backend;

/**
 * Open a backend by name.
 *
 * @param name "auto" (first usable of cuda, cpu, ref), "ref", "cpu" or "cuda".
 * @param out  receives the backend; owned by the caller, free with
 *             grist_backend_close().
 * @return 0; -EINVAL for an unknown name; GRIST_ENOBACKEND when the named
 *         backend is not built in or has no usable device (never a silent
 *         fallback to another backend); -ENOMEM.
 */
int grist_backend_open(const char *name, struct grist_backend **out);

/** Release a backend and its handles. NULL is allowed. */
void grist_backend_close(struct grist_backend *be);

/** Name of an open backend ("ref", "cpu", "cuda"). */
const char *grist_backend_name(const struct grist_backend *be);

/**
 * Whether a backend can be opened here, without keeping it open.
 *
 * @return 1 if usable, 0 if not (not built in, or no device).
 */
int grist_backend_usable(const char *name);

/**
 * Number of threads the host BLAS may use (cpu backend; ignored elsewhere).
 * Small per-step calls run best on one thread; see kernels/README.md.
 */
void grist_backend_set_threads(struct grist_backend *be, int nthreads);

#ifdef __cplusplus
}
#endif

#endif /* GRIST_BACKEND_H */
