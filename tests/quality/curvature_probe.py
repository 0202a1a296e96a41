"""How well the curvature along the trajectory can be measured on a real
minibatch stream (docs/MATH.md 5.4), without gristd and without sketches: the
digits MLP of momentum.py trained with SGD at a fixed beta, the output
layer's full gradients kept, and both estimators of the daemon computed on
them exactly (one-step: <a_{t-1}, -(g_{t+1} - g_t)/lr> over <a_{t-1}, a_t>;
k-step: <R_{tau-1}, -(g_{tau+k} - g_tau)> over <R_{tau-1}, sum of lr a> with
R <- 0.9 R + g). Prints, per quarter / half of the run, kappa = mean(num) /
mean(den) with its delta-method standard error, and both means with theirs.

    /usr/bin/python3 tests/quality/curvature_probe.py [SEED] [BETA] [LR] [K]
    (defaults 2 0 0.05 8: the k-step numerator is -0.036 +- 0.044 over the
    first 15 blocks = 120 steps, i.e. the curvature is not identified)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from momentum import digits  # noqa: E402


def estimate(num, den, name):
    num, den = np.array(num), np.array(den)
    n = len(num)
    for a, b in ((0, n // 4), (n // 4, n // 2), (n // 2, n)):
        nn, dd = num[a:b], den[a:b]
        k = nn.mean() / dd.mean()
        se = np.sqrt(np.var(nn - k * dd) / dd.mean() ** 2 / len(nn))
        print(f"{name} samples [{a}:{b}]: kappa {k:.4g} se {se:.3g}; "
              f"num {nn.mean():.3g} +- {nn.std() / np.sqrt(len(nn)):.2g}, "
              f"den {dd.mean():.3g} +- {dd.std() / np.sqrt(len(dd)):.2g}")


def main():
    seed, beta, lr, k = 2, 0.0, 0.05, 8
    args = sys.argv[1:]
    if args:
        seed = int(args[0])
    if len(args) > 1:
        beta = float(args[1])
    if len(args) > 2:
        lr = float(args[2])
    if len(args) > 3:
        k = int(args[3])
    torch.set_num_threads(1)
    Xtr, ytr, _, _ = digits(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=beta)
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(12):
        perm = torch.randperm(len(Xtr), generator=gen)
        for i in range(0, len(Xtr) - 31, 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xtr[idx]), ytr[idx]).backward()
            grads.append(torch.cat([p.grad.flatten() for p in net[2].parameters()]).numpy().copy())
            opt.step()
    G = np.array(grads)
    T = len(G)
    A = np.zeros_like(G)  # the applied heavy-ball buffers a_t
    u = np.zeros(G.shape[1])
    for t in range(T):
        u = beta * u + G[t]
        A[t] = u
    num1 = [A[t - 1] @ (-(G[t + 1] - G[t]) / lr) for t in range(1, T - 1)]
    den1 = [A[t - 1] @ A[t] for t in range(1, T - 1)]
    R = np.zeros(G.shape[1])
    Rs = []
    for t in range(T):
        Rs.append(R.copy())
        R = 0.9 * R + G[t]
    numk, denk = [], []
    for tau in range(1, T - k, k):
        numk.append(-Rs[tau] @ (G[tau + k] - G[tau]))
        denk.append(Rs[tau] @ (lr * A[tau:tau + k].sum(0)))
    print(f"digits MLP, output layer, SGD beta {beta} lr {lr}, seed {seed}, {T} steps")
    estimate(num1, den1, "one-step")
    estimate(numk, denk, f"{k}-step")


if __name__ == "__main__":
    main()
