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


def seed_p(job_seed, group):
    return int(fmix32(np.array([job_seed ^ int(fmix32(np.array([group + 1]))[0])]))[0])


def block_buckets_signs(job_seed, group, n, m, offset=0):
    """The block sketch (MATH.md section 2.1): bucket and sign of each of the
    group's elements offset .. offset + n - 1."""
    sp = np.uint64(seed_p(job_seed, group))
    i = np.arange(offset, offset + n, dtype=np.uint64)
    rot = fmix32(((((i >> np.uint64(6)) * np.uint64(0xC2B2AE3D)) & M32) ^ sp) ^ np.uint64(0x27D4EB2F))
    bucket = (rot + (i & np.uint64(63))) & np.uint64(m - 1)
    word = fmix32(((((i >> np.uint64(5)) * np.uint64(0x9E3779B1)) & M32) ^ sp) ^ np.uint64(0x165667B1))
    neg = (word >> (i & np.uint64(31))) & np.uint64(1)
    return bucket.astype(np.int64), np.where(neg == 1, -1.0, 1.0)


def block_keep(job_seed, group, n, sample, offset=0):
    """Sampling (MATH.md section 2.1): whether each of the group's elements
    offset .. offset + n - 1 lies in a kept run (1 run in `sample`)."""
    if sample == 1:
        return np.ones(n, dtype=bool)
    bits = {4: 2, 16: 4, 64: 6}[sample]
    sp = np.uint64(seed_p(job_seed, group))
    r = np.arange(offset, offset + n, dtype=np.uint64) >> np.uint64(6)
    h = fmix32((((r * np.uint64(0x85EBCA77)) & M32) ^ sp) ^ np.uint64(0x61C88647))
    return (h >> np.uint64(32 - bits)) == 0


def numpy_block_sketch(x, job_seed, group, m, offset=0, sample=1):
    """The block sketch of x (float64 accumulation) as an m-vector; sampled:
    the kept runs only, times sqrt(sample)."""
    bucket, sign = block_buckets_signs(job_seed, group, x.size, m, offset)
    keep = block_keep(job_seed, group, x.size, sample, offset)
    out = np.zeros(m)
    np.add.at(out, bucket[keep], (sign * x.astype(np.float64))[keep])
    return out * np.sqrt(sample)
