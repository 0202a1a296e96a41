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


# (label, width, depth): 0.07M, 1.32M and 5.52M parameters
SIZES = [("0.1M", 256, 1), ("1.3M", 1024, 2), ("5.5M", 2220, 2)]


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


def make_opt(name, params):
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ["GRIST_ADDRESS"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    label = os.environ.get("GRIST_BENCH_LABEL", "run")
    print("| optimizer | model | params | step ms (plain) | grist default (sampled sketch: 1 run in N) "
          "| grist, every run sketched (N = 1) | grist, sketch in session.step() | K=3 buffers "
          "| grist memory | K=3 buffers memory |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for oname in ("sgd", "adam"):
        # (Adam at 5.5M steps at 150-220 ms here: minutes per row, left out)
        for name, width, depth in (SIZES if oname == "sgd" else SIZES[:2]):
            net = mlp(width, depth)
            nets = [net] + [mlp(width, depth) for _ in range(2)]
            for n2 in nets[1:]:
                n2.load_state_dict(net.state_dict())
            opts = [make_opt(oname, n2.parameters()) for n2 in nets]
            nparam = sum(p.numel() for p in net.parameters())
            pbytes = nparam * 4
            x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))

            def train_step(k):
                opts[k].zero_grad()
                torch.nn.functional.cross_entropy(nets[k](x), y).backward()
                opts[k].step()

            job = f"bench-{oname}-{name}"
            sessions = [grist.torch.attach(opts[0], job=job, address=address, wait_s=10),
                        grist.torch.attach(opts[1], job=job + "-full", address=address, wait_s=10,
                                           sketch_sample=1),
                        grist.torch.attach(opts[2], job=job + "-sync", address=address, wait_s=10,
                                           async_sketch=False)]
            for s_ in sessions:
                assert s_.session.job_seed != 0, "gristd not reachable"
            wrapped, raw = opts[0].step, sessions[0]._orig_step
            cb = CandidateBuffers(net.parameters()) if oname == "sgd" else None

            def plain_step():
                opts[0].step = raw  # the optimizer as the user had it
                train_step(0)
                opts[0].step = wrapped

            def grist_step(k):
                def f():
                    train_step(k)
                    sessions[k].step(batch_size=64)
                return f

            def buffers_step():
                opts[0].step = raw
                train_step(0)
                cb.step()
                opts[0].step = wrapped

            fns = [plain_step, grist_step(0), grist_step(1), grist_step(2)]
            if cb is not None:
                fns.append(buffers_step)
            res = interleaved(fns)
            plain, dflt, full, sync = res[:4]
            buf = res[4] if cb is not None else None
            for s_ in sessions:
                st = s_.stats()
                assert s_.discarded == 0 and st["submitted"] > 0, (s_.discarded, st)
            session = sessions[0]
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
            samples = session.samples
            for s_ in sessions:
                s_.close()

            def pct(a):
                return f"{a[0] * 1e3:.2f} ({100 * (a[0] / plain[0] - 1):+.1f}%)"

            bufcol = pct(buf) if buf is not None else "-"
            bufmem = (f"{cb.nbytes() / 2**20:.1f} MiB ({100 * cb.nbytes() / pbytes:.0f}%)"
                      if cb is not None else "-")
            print(f"| {oname} | {name} | {nparam / 1e6:.2f}M | {plain[0] * 1e3:.2f} | {pct(dflt)} "
                  f"N={samples[0]} | {pct(full)} | {pct(sync)} | {bufcol} | "
                  f"{gmem / 1024:.0f} KiB ({100 * gmem / pbytes:.2f}% of params) | {bufmem} |",
                  flush=True)
            if nparam >= 1_000_000:  # the target: <= 2 % of the step at 1M parameters and up
                print(f"#result client_overhead_{label}_{oname}_{name}="
                      f"{100 * (dflt[0] / plain[0] - 1):.2f}")
    # the sketch alone, on the tensor size MATH.md section 2 quotes (5.27M floats)
    import numpy as np
    t = torch.randn(5_270_000)
    acc, sq = np.zeros(1024), np.zeros(1)
    seed_p = grist.group_seed(12345, 0)
    auto = grist.sample_auto(t.numel(), 1024)

    def sk():
        grist.sketch_f32(seed_p, t.data_ptr(), t.numel(), 0, acc, sq, kind="block")

    def sks():
        grist.sketch_f32(seed_p, t.data_ptr(), t.numel(), 0, acc, sq, kind="block", sample=auto)

    def skh():
        grist.sketch_f32(seed_p, t.data_ptr(), t.numel(), 0, acc, sq, kind="hashed")

    def ref():
        t.sum()  # one pass over the same memory: the floor of any O(n) kernel

    (med, lo, hi), (smed, _, _), (hmed, _, _), (rmed, _, _) = interleaved([sk, sks, skh, ref],
                                                                          warm=3, n=10)
    print(f"\nsketch of 5.27M floats (m = 1024, one core): block {med * 1e3:.2f} ms median "
          f"({lo * 1e3:.2f}-{hi * 1e3:.2f}), block sampled 1 run in {auto} {smed * 1e3:.2f} ms, "
          f"hashed {hmed * 1e3:.2f} ms; torch.sum of the same tensor in alternating windows "
          f"{rmed * 1e3:.2f} ms: block / sum {med / rmed:.1f}, sampled / sum {smed / rmed:.2f}")
    print("\nstep ms: median of 7 windows of 60 steps, the variants in alternating windows; "
          "batch 64, 1 torch thread; SGD lr 0.01 momentum 0.9, Adam lr 1e-3; grist sketch_dim "
          "1024, one param group, block sketch; N = the default sampling of the group "
          "(docs/MATH.md 2.1); Adam sketches in the metric P^-1, in session.step().")
    return 0


if __name__ == "__main__":
    sys.exit(main())
