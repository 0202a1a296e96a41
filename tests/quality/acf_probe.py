"""Diagnostic for docs/QUALITY.md: the lag statistics behind the acf noise
estimate (MATH.md section 4) on a real training stream, against a direct
measurement of the minibatch noise.

Trains the character GRU of momentum.py with SGD at a fixed beta and, every
step, computes the full flat gradient g_t of the minibatch and, for the same
parameters, the gradient of a second, independent minibatch g'_t. Then:
  r_k   = EMA(<g_t, g_{t-k}>)        (gamma 0.95, as gristd; no sketch: exact)
  acf   : r0_sig = min(r0, r1^2/r2) if r1, r2 > 0; sigma2_acf = r0 - r0_sig
  direct: sigma2 = EMA(|g_t - g'_t|^2 / 2)   (two independent minibatches)
Prints a few steps of the run.

    /usr/bin/python3 tests/quality/acf_probe.py [--task char|mlp] [--beta 0.9] [--steps 400]
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import momentum as mq  # noqa: E402


def flat_grad(net):
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()]).double().numpy().copy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--beta", type=float, default=0.9)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, groups = mq.make_model("char", 0)
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.beta)
    train, _, vocab = mq.char_data()
    g = torch.Generator().manual_seed(0)
    g2 = torch.Generator().manual_seed(1)
    gamma, L = 0.95, 3
    r = np.zeros(L)
    noise = 0.0
    ring = []
    print("| step | r0 | r1 | r2 | r1^2/r2 | sigma2 acf | sigma2 direct | direct / r0 |")
    print("|---|---|---|---|---|---|---|---|")
    for t in range(1, args.steps + 1):
        def grad(gen):
            x, y = mq.char_batch(train, gen, 32)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x).reshape(-1, vocab), y.reshape(-1))
            loss.backward()
            return flat_grad(net)
        other = grad(g2)     # an independent minibatch at the same parameters
        cur = grad(g)        # the step's own minibatch (left in .grad for the step)
        opt.step()
        ring.insert(0, cur)
        ring = ring[:L]
        for k in range(min(L, len(ring))):
            r[k] = gamma * r[k] + (1 - gamma) * float(cur @ ring[k])
        noise = gamma * noise + (1 - gamma) * float(np.sum((cur - other) ** 2) / 2)
        c = 1 - gamma ** t
        rr, nn = r / c, noise / c
        if rr[1] > 0 and rr[2] > 0:
            sig = min(rr[0], rr[1] ** 2 / rr[2])
            acf = rr[0] - sig
            ratio = rr[1] ** 2 / rr[2]
        else:
            acf, ratio = 0.0, float("nan")
        if t in (10, 25, 50, 100, 150, 200, 300, 400) or t == args.steps:
            print(f"| {t} | {rr[0]:.4g} | {rr[1]:.4g} | {rr[2]:.4g} | {ratio:.4g} | {acf:.4g} | "
                  f"{nn:.4g} | {nn / rr[0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
