"""Where grist's per-step cost goes in one attached training step (not a
test; client/README.md cites its output):

    GRISTD_CPUS=1 sh deploy/with-gristd.sh taskset -c 0 /usr/bin/python3 tests/bench/client_parts.py

A 1.32M-parameter MLP (batch 64, SGD with momentum, one torch thread) steps
in alternating windows of 50 steps, plain and attached (the same model and
optimizer: attached means the grist.torch wrapper of optimizer.step() and
session.step()). Per step, medians: forward + backward, optimizer.step()
(attached: with the sketch begun inside it), session.step(); then, attached
only, the parts of the wrapper timed on their own: the sketch begin (the
sampled sketch, inline below 2^19 sketched elements), the rest of _begin
(the tensor descriptors), and _record_applied.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import grist.torch  # noqa: E402


def mlp(width=1024, depth=2):
    layers, d = [], 256
    for _ in range(depth):
        layers += [torch.nn.Linear(d, width), torch.nn.ReLU()]
        d = width
    layers.append(torch.nn.Linear(d, 10))
    return torch.nn.Sequential(*layers)


def timed(store, key, f):
    def g(*a, **kw):
        t0 = time.perf_counter()
        r = f(*a, **kw)
        store.setdefault(key, []).append(time.perf_counter() - t0)
        return r
    return g


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ["GRIST_ADDRESS"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    s = grist.torch.attach(opt, job="client-parts", address=address, wait_s=10)
    wrapped, raw = opt.step, s._orig_step
    res = {0: [], 1: []}
    for w in range(40):
        att = w % 2
        opt.step = wrapped if att else raw
        for i in range(50):
            t0 = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            if att:
                s.step(batch_size=64)
            t3 = time.perf_counter()
            if i >= 5 and w >= 2:
                res[att].append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
    nparam = sum(p.numel() for p in net.parameters())
    print(f"{nparam / 1e6:.2f}M parameters, sketch sampling N = {s.samples}")
    for a in (0, 1):
        m = np.median(np.array(res[a]), axis=0) * 1e3
        print(("attached" if a else "plain   ") +
              " forward+backward %.3f ms, optimizer.step %.3f ms, session.step %.3f ms, "
              "total %.3f ms" % tuple(m))
    T = {}
    s.session.sketch_begin = timed(T, "sketch begin (libgrist)", s.session.sketch_begin)
    s._begin = timed(T, "_begin (descriptors + sketch begin)", s._begin)
    s._record_applied = timed(T, "_record_applied", s._record_applied)
    opt.step = wrapped
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        s.step(batch_size=64)
    for k, v in T.items():
        print(f"{k}: {np.median(v[50:]) * 1e3:.3f} ms")
    assert s.discarded == 0
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
