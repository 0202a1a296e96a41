"""An independent NumPy implementation of the count sketch of MATH.md section 2
(the C kernel is the product's; this one exists to check it and to let Python
tests sketch without libgrist)."""
import numpy as np

M32 = np.uint64(0xFFFFFFFF)


def fmix32(h):
    h = h.astype(np.uint64) & M32
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & M32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & M32
    h ^= h >> np.uint64(16)
    return h


def keys(job_seed, group, n, offset=0):
    """key(i) for the group's elements offset .. offset + n - 1."""
    seed = fmix32(np.array([job_seed ^ int(fmix32(np.array([group + 1]))[0])]))[0]
    i = np.arange(offset, offset + n, dtype=np.uint64)
    return fmix32(((i * np.uint64(0x9E3779B1)) & M32) ^ seed)


def numpy_sketch(x, job_seed, group, m, offset=0):
    """The sketch of x (float64 accumulation) as an m-vector of float64."""
    k = keys(job_seed, group, x.size, offset)
    sign = np.where(k >> np.uint64(31), -1.0, 1.0)
    out = np.zeros(m)
    np.add.at(out, (k & np.uint64(m - 1)).astype(np.int64), sign * x.astype(np.float64))
    return out
