/*
 * grist error codes.
 *
 * Every grist function that can fail returns int: 0 on success or a negative
 * number. Negative numbers in the range of the C library's errno values are
 * plain negated errno codes (-ENOMEM, -EINVAL); the project's own codes live
 * in a range of their own, generated from the one X-macro list below, so that
 * the enum, the names and the messages cannot drift apart.
 */
#ifndef GRIST_ERROR_H
#define GRIST_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* XX(NAME, value, message) */
#define GRIST_ERRNO_MAP(XX)                                                                        \
    XX(NONFINITE, -4001, "input holds a non-finite value (NaN or Inf)")                            \
    XX(BADLEN, -4002, "input length disagrees with the state it updates")                          \
    XX(BADDIM, -4003, "sketch dimension must be a power of two in [64, 65536]")                    \
    XX(TOOBIG, -4004, "group has 2^32 elements or more")                                           \
    XX(NOBACKEND, -4005, "requested kernels backend is not available")                             \
    XX(DEVICE, -4006, "GPU device call failed")                                                    \
    XX(LAPACK, -4007, "LAPACK routine failed to converge")                                         \
    XX(BADSTATE, -4008, "serialized statistics state is corrupt or of another version")            \
    XX(BADCONF, -4009, "statistics configuration out of bounds")                                   \
    XX(NOTREADY, -4010, "not enough steps yet for this estimate")                                  \
    XX(ORDER, -4011, "message out of order on this stream")                                        \
    XX(SHARD, -4012, "the job belongs to another shard")

enum grist_errno {
#define GRIST__ERR_ENUM(name, val, msg) GRIST_E##name = (val),
    GRIST_ERRNO_MAP(GRIST__ERR_ENUM)
#undef GRIST__ERR_ENUM
};

/**
 * Human-readable text of an error code.
 *
 * @param err a value returned by a grist function (0, -errno or GRIST_E*).
 * @return a static string; never NULL.
 */
const char *grist_strerror(int err);

/**
 * Symbolic name of an error code ("GRIST_EBADLEN", "ENOMEM", "OK").
 *
 * @param err as for grist_strerror().
 * @return a static string; never NULL.
 */
const char *grist_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif /* GRIST_ERROR_H */
