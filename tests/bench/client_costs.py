"""The client's fixed costs, each on its own (not a test; client/README.md
cites its output):

    GRISTD_CPUS=1 sh deploy/with-gristd.sh taskset -c 0 /usr/bin/python3 tests/bench/client_costs.py

(gristd on core 1, this process on core 0, as client.sh's first run: other
processes' threads then share nothing with it, and item 2 counts only ours.)

1. grist_session_submit as the training loop sees it: median and p90 over
   2,000 submits of one 1024-float summary, 1 ms of busy work between them.
2. CPU per step of the process's threads other than the training loop's
   (/proc/self/task) over 500 steps of a 0.68M-parameter MLP, attached with
   the sketch in session.step() minus plain: libgrist's and gRPC's threads.
3. session.step() and the optimizer wrapper on a 6-tensor model, timeit
   (best of 5 x 2,000 calls; the sketch of its 25K elements included).
"""
import os
import statistics
import sys
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import grist.torch  # noqa: E402
from grist._native import Client, Session  # noqa: E402


def mlp(width, depth):
    layers, d = [], 256
    for _ in range(depth):
        layers += [torch.nn.Linear(d, width), torch.nn.ReLU()]
        d = width
    layers.append(torch.nn.Linear(d, 10))
    return torch.nn.Sequential(*layers)


def submit_latency(addr):
    c = Client(addr, queue_capacity=4096)
    s = Session(c, "costs-submit", [dict(name="g", n=100000, beta=0.9, lr=0.1)], sketch_dim=1024)
    assert s.wait_ready(10)
    sk = np.random.default_rng(0).standard_normal((1, 1024)).astype(np.float32)
    ts = []
    for t in range(2000):
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        t0 = time.perf_counter()
        s.submit(t + 1, sk, [1.0], [8])
        ts.append(time.perf_counter() - t0)
    assert s.flush(10)
    s.close()
    c.close()
    ts.sort()
    print(f"submit: median {statistics.median(ts) * 1e6:.1f} us, p90 {ts[1800] * 1e6:.1f} us")


def thread_cpu(addr, steps=500):
    """CPU per step of the threads other than the training loop's, attached
    minus plain (torch's and the BLAS's own threads are in both)."""
    def others():
        total = 0
        for t in os.listdir("/proc/self/task"):
            if t == str(os.getpid()):
                continue
            try:
                st = open(f"/proc/self/task/{t}/stat").read()
            except OSError:  # the thread ended meanwhile
                continue
            f = st[st.rindex(")") + 2:].split()
            total += int(f[11]) + int(f[12])
        return total

    net = mlp(704, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))

    def run(session):
        a = others()
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            if session:
                session.step(batch_size=64)
        return (others() - a) / os.sysconf("SC_CLK_TCK") * 1e6 / steps

    plain = run(None)
    s = grist.torch.attach(opt, job="costs-threads", address=addr, wait_s=10, async_sketch=False)
    attached = run(s)
    s.close()
    print(f"threads, 0.68M-parameter MLP, sketch in session.step(): the other threads' CPU "
          f"{attached - plain:.0f} us per step more than plain ({attached:.0f} vs {plain:.0f})")


def step_cost(addr):
    net = mlp(64, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    s = grist.torch.attach(opt, job="costs-step", address=addr, wait_s=10, async_sketch=False)
    torch.nn.functional.cross_entropy(net(x), y).backward()

    def t(f, n=2000):
        return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6

    raw, wrapped = t(lambda: s._orig_step()), t(lambda: s._scaled_step())
    print(f"6-tensor model: session.step() {t(lambda: s.step(batch_size=64)):.1f} us, "
          f"optimizer wrapper {wrapped - raw:.1f} us over the optimizer's {raw:.1f} us")
    s.close()


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else os.environ["GRIST_ADDRESS"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    submit_latency(addr)
    thread_cpu(addr)
    step_cost(addr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
