"""Client overhead benchmark (not a test): the cost of session.step() next
to a training step, for MLPs of about 0.1M, 1M and 10M parameters on CPU,
and the worker memory grist adds; side by side with the paper's reference
approach written in-process: K = 3 full-size candidate momentum buffers
updated and scored every step.

    sh tests/bench/client.sh     (starts gristd, runs this, stops it)

Medians over repeated timed windows, with min and max; one thread
(torch.set_num_threads(1)) so the numbers are per core.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import torch  # noqa: E402

import grist  # noqa: E402
import grist.torch  # noqa: E402


def mlp(width, depth):
    layers, d = [], 256
    for _ in range(depth):
        layers += [torch.nn.Linear(d, width), torch.nn.ReLU()]
        d = width
    layers.append(torch.nn.Linear(d, 10))
    return torch.nn.Sequential(*layers)


SIZES = [("0.1M", 256, 1), ("1M", 704, 2), ("10M", 2220, 2)]


class CandidateBuffers:
    """The paper's reference optimizers keep one momentum buffer per candidate
    beta in the worker and score each with the one-sample alignment."""

    def __init__(self, params, betas=(0.5, 0.9, 0.99)):
        self.params = list(params)
        self.betas = betas
        self.bufs = [[torch.zeros_like(p) for p in self.params] for _ in betas]
        self.J = [0.0] * len(betas)

    def step(self):
        for k, b in enumerate(self.betas):
            dot = 0.0
            for p, buf in zip(self.params, self.bufs[k]):
                buf.mul_(b).add_(p.grad)
                dot += float(torch.dot(p.grad.reshape(-1), buf.reshape(-1)))
            self.J[k] = 0.95 * self.J[k] + 0.05 * (1 - b * b) ** 0.5 * dot
        return max(range(len(self.betas)), key=lambda k: self.J[k])

    def nbytes(self):
        return sum(b.numel() * b.element_size() for bufs in self.bufs for b in bufs)


def interleaved(fns, warm=20, n=60, reps=7):
    """Median seconds per call of each fn, timed in alternating windows of n
    calls (fn 0, fn 1, ..., fn 0, ...) so that a slow phase of a shared
    machine hits all of them alike; also (min, max) over the windows."""
    for f in fns:
        for _ in range(warm):
            f()
    out = [[] for _ in fns]
    for _ in range(reps):
        for k, f in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            out[k].append((time.perf_counter() - t0) / n)
    return [(statistics.median(o), min(o), max(o)) for o in out]


def timed(fn, warm=20, n=60, reps=5):
    return interleaved([fn], warm, n, reps)[0]


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ["GRIST_ADDRESS"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| model | params | step ms (plain) | grist, async_sketch=False (sketch in session.step) | grist, async_sketch "
          "(default: beside the step) | grist default, hashed sketch | K=3 buffers | grist memory | K=3 buffers memory |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, width, depth in SIZES:
        net = mlp(width, depth)
        nparam = sum(p.numel() for p in net.parameters())
        pbytes = nparam * 4
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))

        def train_step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

        session = grist.torch.attach(opt, job=f"bench-{name}", address=address, wait_s=10)
        assert session.session.job_seed != 0, "gristd not reachable"
        # the same model and optimizer once more, attached with the hashed sketch
        net_h = mlp(width, depth)
        net_h.load_state_dict(net.state_dict())
        opt_h = torch.optim.SGD(net_h.parameters(), lr=0.01, momentum=0.9)
        session_h = grist.torch.attach(opt_h, job=f"bench-{name}-hashed", address=address, wait_s=10,
                                       sketch_kind="hashed")

        def hashed_step():
            opt_h.zero_grad()
            torch.nn.functional.cross_entropy(net_h(x), y).backward()
            opt_h.step()
            session_h.step(batch_size=64)
        wrapped, raw = opt.step, session._orig_step
        cb = CandidateBuffers(net.parameters())

        def plain_step():
            opt.step = raw  # the optimizer as the user had it
            train_step()
            opt.step = wrapped

        def sync_step():
            session.async_sketch = False
            train_step()
            session.step(batch_size=64)

        def async_step():
            session.async_sketch = True
            train_step()
            session.step(batch_size=64)

        def buffers_step():
            opt.step = raw
            train_step()
            cb.step()
            opt.step = wrapped

        plain, sync, asy, hsh, buf = interleaved([plain_step, sync_step, async_step, hashed_step,
                                                  buffers_step])
        session_h.close()
        st = session.stats()
        assert session.discarded == 0 and st["submitted"] > 0, (session.discarded, st)
        # what grist keeps per worker: libgrist's step sketcher (an m-double
        # accumulator, an m-float finished sketch and a norm per group), the
        # Python side's arrays for the DDP/GPU path (same sizes), libgrist's
        # queue of encoded summaries when full (capacity 64), and the tensor
        # descriptors (48 bytes per parameter tensor). The sketch thread's
        # stack is virtual memory; it touches about 2 KiB of it.
        G, m = session.ngroups, session.m
        msg = G * (m * 4 + 16) + 32
        gmem = (G * m * 12 + G * 8) + session._acc.nbytes + session._sk.nbytes + \
            session._sq.nbytes + 64 * msg + 48 * len(session._params)
        session.close()

        def pct(a):
            return f"{a[0] * 1e3:.2f} ({100 * (a[0] / plain[0] - 1):+.1f}%)"

        print(f"| {name} | {nparam / 1e6:.2f}M | {plain[0] * 1e3:.2f} | {pct(sync)} | {pct(asy)} | "
              f"{pct(hsh)} | {pct(buf)} | {gmem / 1024:.0f} KiB ({100 * gmem / pbytes:.2f}% of params) | "
              f"{cb.nbytes() / 2**20:.1f} MiB ({100 * cb.nbytes() / pbytes:.0f}%) |", flush=True)
        if nparam >= 500_000:  # the P6 target is for models of about 1M parameters and up
            label = os.environ.get("GRIST_BENCH_LABEL", "run")
            print(f"#result client_overhead_{label}_{name}={100 * (asy[0] / plain[0] - 1):.2f}")
    # the sketch alone, on the tensor size MATH.md section 2 quotes (5.27M floats)
    import numpy as np
    t = torch.randn(5_270_000)
    acc, sq = np.zeros(1024), np.zeros(1)
    seed_p = grist.group_seed(12345, 0)

    def sk():
        grist.sketch_f32(seed_p, t.data_ptr(), t.numel(), 0, acc, sq, kind="block")

    def skh():
        grist.sketch_f32(seed_p, t.data_ptr(), t.numel(), 0, acc, sq, kind="hashed")

    def ref():
        t.sum()  # one pass over the same memory: the floor of any O(n) kernel

    (med, lo, hi), (hmed, _, _), (rmed, _, _) = interleaved([sk, skh, ref], warm=3, n=10)
    print(f"\nsketch of 5.27M floats (m = 1024, one core): block {med * 1e3:.2f} ms median "
          f"({lo * 1e3:.2f}-{hi * 1e3:.2f}), hashed {hmed * 1e3:.2f} ms; torch.sum of the same tensor "
          f"in alternating windows {rmed * 1e3:.2f} ms: block / sum {med / rmed:.1f}")
    print("\nstep ms: median of 7 windows of 60 steps, the five variants in alternating windows; "
          "batch 64, SGD, 1 torch thread; grist sketch_dim 1024, one param group; the default sketch "
          "kind is block (docs/MATH.md 2.1).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
