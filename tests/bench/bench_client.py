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


def timed(fn, warm=20, n=60, reps=5):
    for _ in range(warm):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n)
    return statistics.median(out), min(out), max(out)


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ["GRIST_ADDRESS"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| model | params | step ms (plain) | step ms (grist) | grist overhead | "
          "step ms (K=3 buffers) | buffers overhead | grist memory | K=3 buffers memory |")
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

        plain = timed(train_step)
        session = grist.torch.attach(opt, job=f"bench-{name}", address=address, wait_s=10)
        assert session.session.job_seed != 0, "gristd not reachable"

        def grist_step():
            train_step()
            session.step(batch_size=64)

        with_grist = timed(grist_step)
        st = session.stats()
        # what grist keeps per worker: per group an m-double accumulator, an
        # m-float sketch and its norm, plus libgrist's queue of encoded summaries
        msg = session.ngroups * (session.m * 4 + 16) + 32
        gmem = session._acc.nbytes + session._sk.nbytes + session._sq.nbytes + \
            64 * msg  # queue capacity 64, worst case full
        session.close()
        cb = CandidateBuffers(net.parameters())

        def buffers_step():
            train_step()
            cb.step()

        with_buffers = timed(buffers_step)
        print(f"| {name} | {nparam / 1e6:.2f}M | {plain[0] * 1e3:.2f} | {with_grist[0] * 1e3:.2f} | "
              f"{100 * (with_grist[0] / plain[0] - 1):+.1f}% | {with_buffers[0] * 1e3:.2f} | "
              f"{100 * (with_buffers[0] / plain[0] - 1):+.1f}% | {gmem / 1024:.0f} KiB "
              f"({100 * gmem / pbytes:.2f}% of params) | {cb.nbytes() / 2**20:.1f} MiB "
              f"({100 * cb.nbytes() / pbytes:.0f}%) |", flush=True)
        assert st["sent"] > 0
    # the sketch alone, on the tensor size MATH.md section 2 quotes (5.27M floats)
    import numpy as np
    t = torch.randn(5_270_000)
    acc, sq = np.zeros(1024), np.zeros(1)
    seed_p = grist.group_seed(12345, 0)

    def sk():
        grist.sketch_f32(seed_p, t.data_ptr(), t.numel(), 0, acc, sq)

    med, lo, hi = timed(sk, warm=3, n=10)
    print(f"\nsketch of 5.27M floats (m = 1024, one core): {med * 1e3:.2f} ms median "
          f"({lo * 1e3:.2f}-{hi * 1e3:.2f})")
    print("\nstep times: median of 5 windows of 60 steps (min-max in the raw run); batch 64, SGD, "
          "1 thread; grist sketch_dim 1024, one param group.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
