"""MATH.md T6: the sketch the PyTorch client computes (libgrist's C kernel
called on the tensor's memory through grist.torch) agrees with an
independent NumPy implementation of MATH.md section 2 and with the C
client's sketch of a copy of the same values: identical buckets and signs
(checked one element at a time through unit vectors), values within 1e-6
relative. Also the ctypes binding round trip of the session API without a
daemon (queue, drop-oldest counters, latest before any push).

    GRIST_LIB=build/client/libgrist.so /usr/bin/python3 tests/unit/test_t6_sketch.py
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import grist  # noqa: E402
import grist.torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sketch_ref import (block_buckets_signs, block_keep, keys, numpy_block_sketch,  # noqa: E402
                        numpy_sketch)

REF = {"hashed": numpy_sketch, "block": numpy_block_sketch}


def torch_client_sketch(tensors, job_seed, group, m, kind):
    """What grist.torch does: the C kernel on each tensor's memory."""
    acc, sq = np.zeros(m), np.zeros(1)
    seed_p = grist.group_seed(job_seed, group)
    off = 0
    for t in tensors:
        grist.sketch_f32(seed_p, t.data_ptr(), t.numel(), off, acc, sq, kind=kind)
        off += t.numel()
    return acc, sq[0]


def bucket_sign(kind, job_seed, group, n, m):
    if kind == "block":
        return block_buckets_signs(job_seed, group, n, m)
    k = keys(job_seed, group, n)
    return (k & np.uint64(m - 1)).astype(np.int64), np.where(k >> np.uint64(31), -1.0, 1.0)


def check_kind(kind):
    job_seed, group, m = 0xC0FFEE, 3, 1024
    torch.manual_seed(0)
    # a "param group" of three tensors, 100003 elements in all
    ts = [torch.randn(300, 100), torch.randn(3), torch.randn(70000)]
    flat = torch.cat([t.reshape(-1) for t in ts]).numpy()
    got, sq = torch_client_sketch(ts, job_seed, group, m, kind)
    ref = REF[kind](flat, job_seed, group, m)
    rel = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    print(f"T6 {kind}: max relative difference torch client vs NumPy {rel:.2e}")
    assert rel <= 1e-6, rel
    assert abs(sq - float(flat.astype(np.float64) @ flat.astype(np.float64))) <= 1e-6 * sq
    # the C client's path on a copy (a float32 numpy buffer): bit-identical to the tensor path
    acc, sq2 = np.zeros(m), np.zeros(1)
    buf = np.ascontiguousarray(flat, dtype=np.float32)
    grist.sketch_f32(grist.group_seed(job_seed, group), buf.ctypes.data, buf.size, 0, acc, sq2,
                     kind=kind)
    # (each bucket adds its elements in element order on both paths, tensor
    # boundaries or not)
    assert np.array_equal(acc, got), "C client and torch client sketches differ"
    # identical buckets and signs, element by element (unit vectors), incl. offsets
    bk, sg = bucket_sign(kind, job_seed, group, 100003, m)
    rng = np.random.default_rng(1)
    for i in rng.choice(100003, 200, replace=False):
        e = torch.zeros(100003)
        e[i] = 1.0
        s, _ = torch_client_sketch([e], job_seed, group, m, kind)
        assert s[bk[i]] == sg[i] and np.count_nonzero(s) == 1, (i, bk[i], sg[i])
    # an Adam-preconditioned sketch agrees with NumPy too
    g = torch.randn(5000)
    v = torch.rand(5000) * 0.01 + 1e-4
    acc, sq = np.zeros(m), np.zeros(1)
    vs, eps = 1.0 / (1 - 0.999 ** 10), 1e-8
    grist.sketch_adam_f32(grist.group_seed(job_seed, 0), g.data_ptr(), v.data_ptr(), 5000, 0, vs,
                          eps, acc, sq, kind=kind)
    gn, vn = g.numpy().astype(np.float64), v.numpy().astype(np.float64)
    x = gn / np.sqrt(np.sqrt(vn * vs) + eps)
    ref = REF[kind](x, job_seed, 0, m)
    assert np.max(np.abs(acc - ref)) <= 1e-6 * np.max(np.abs(ref))


def check_sampled():
    """The sampled block sketch (1 run in 4, 16, 64): torch client (C kernel
    on each tensor, then unsample) against NumPy, and bit-identical to the C
    client's path on a copy; the auto rule as the session resolves it."""
    job_seed, group, m = 0xBEEF, 1, 1024
    torch.manual_seed(2)
    ts = [torch.randn(300, 1000), torch.randn(7), torch.randn(90000)]
    flat = torch.cat([t.reshape(-1) for t in ts]).numpy()
    sp = grist.group_seed(job_seed, group)
    for sample in (4, 16, 64):
        acc, sq = np.zeros(m), np.zeros(1)
        off = 0
        for t in ts:
            grist.sketch_f32(sp, t.data_ptr(), t.numel(), off, acc, sq, sample=sample)
            off += t.numel()
        grist.unsample(acc, sq, sample)
        ref = numpy_block_sketch(flat, job_seed, group, m, sample=sample)
        rel = np.max(np.abs(acc - ref)) / np.max(np.abs(ref))
        keep = block_keep(job_seed, group, flat.size, sample)
        f64 = flat.astype(np.float64)
        want_sq = sample * float(f64[keep] @ f64[keep])
        print(f"T6 block/{sample}: kept {keep.mean():.4f} of the elements, max relative "
              f"difference vs NumPy {rel:.2e}")
        assert rel <= 1e-6 and abs(sq[0] - want_sq) <= 1e-9 * want_sq, (rel, sq[0], want_sq)
        assert abs(keep.mean() - 1 / sample) < 4 * np.sqrt(1 / sample / (flat.size / 64))
        buf = np.ascontiguousarray(flat, dtype=np.float32)
        a2, s2 = np.zeros(m), np.zeros(1)
        grist.sketch_f32(sp, buf.ctypes.data, buf.size, 0, a2, s2, sample=sample)
        grist.unsample(a2, s2, sample)
        assert np.array_equal(a2, acc), "C client and torch client sampled sketches differ"
    for bad in (2, 0):
        try:
            grist.sketch_f32(sp, buf.ctypes.data, 64, 0, np.zeros(m), np.zeros(1), sample=bad)
            raise AssertionError(f"sample {bad} accepted")
        except grist.GristError:
            pass
    try:
        grist.sketch_f32(sp, buf.ctypes.data, 64, 0, np.zeros(m), np.zeros(1), kind="hashed",
                         sample=4)
        raise AssertionError("a sampled hashed sketch accepted")
    except ValueError:
        pass
    assert grist.sample_auto(1 << 20, 1024) == 16 and grist.sample_auto((1 << 20) - 1, 1024) == 4
    assert grist.sample_auto((1 << 18) - 1, 1024) == 1


def main():
    for kind in ("hashed", "block"):
        check_kind(kind)
    check_sampled()
    try:
        grist.sketch_f32(1, 0, 0, 0, np.zeros(64), np.zeros(1), kind="dense")
        raise AssertionError("unknown kind accepted")
    except ValueError as e:
        assert "block" in str(e)

    # binding round trip without a daemon: submit never blocks, the queue
    # drops the oldest, latest() has nothing yet
    c = grist.Client("127.0.0.1:1", queue_capacity=4, backoff_initial_s=10)
    s = grist.Session(c, "t6", [dict(n=10, optimizer="sgd", lr=0.1, beta=0.9)], sketch_dim=64)
    # sampling as libgrist resolves it: auto by size, explicit, refused
    s2 = grist.Session(c, "t6b", [dict(n=3 << 20), dict(n=300000), dict(n=10),
                                  dict(n=1 << 20, sketch_sample=1)])
    assert s2.samples == [16, 4, 1, 1], s2.samples
    s2.close()
    for bad in (dict(n=100, sketch_sample=8),):
        try:
            grist.Session(c, "t6c", [bad])
            raise AssertionError("sketch_sample 8 accepted")
        except grist.GristError:
            pass
    try:
        grist.Session(c, "t6d", [dict(n=100, sketch_sample=4)], sketch_kind="hashed")
        raise AssertionError("a sampled hashed session accepted")
    except grist.GristError:
        pass
    for t in range(10):
        s.submit(t + 1, np.ones((1, 64), dtype=np.float32), [1.0], [8])
    st = s.stats()
    assert st["submitted"] == 10 and st["queued"] == 4 and st["dropped"] == 6, st
    assert s.latest() == (0, 0, None)
    try:
        s.submit(11, np.full((1, 64), np.nan, dtype=np.float32))
        raise AssertionError("NaN accepted")
    except grist.GristError as e:
        assert "non-finite" in str(e)
    s.close()
    c.close()
    print("T6 and binding: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
