"""What the second-order greedy criterion says with the true curvature, in the
full parameter space (no sketch, no daemon): a diagnostic for docs/MATH.md 5.4.

    /usr/bin/python3 tests/quality/greedy_probe.py --task tfm --optimizer sgd --beta 0

Trains the task with plain heavy-ball SGD at a fixed momentum `--beta` and
keeps, next to the real momentum buffer, the virtual heavy-ball buffer
u_j = sum_k b_j^k g_(t-k) of every candidate b_j. Every `--every` steps, per
param group, on a large batch (`--big` sequences or rows) it measures the
true gradient G and Hessian-vector products, and prints for each candidate

    F_j = <G, u_j>,  E_j = |u_j|^2,  q_j = <u_j, H u_j> / |u_j|^2,
    D_j    = lr F_j - lr^2 q_j E_j / 2       (per-candidate curvature)
    Dbar_j = lr F_j - lr^2 qa E_j / 2        (the curvature qa of the applied
                                              update, the same for every j)

and the argmax of each. It shows whether the greedy choice is limited by the
one-step criterion itself or by the single curvature value the daemon
estimates along the applied trajectory.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import momentum as mo  # noqa: E402
from defaults import DEFAULT_LR  # noqa: E402

CANDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)


def group_vec(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="tfm", choices=("tfm", "char", "mlp", "cnn", "reg"))
    ap.add_argument("--beta", type=float, default=0.0)
    ap.add_argument("--lr-mult", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=40)
    ap.add_argument("--big", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    lr = DEFAULT_LR[(a.task, "sgd")] * a.lr_mult
    net, groups = mo.make_model(a.task, a.seed)
    params = [list(g["params"]) for g in groups]
    opt = torch.optim.SGD([{"params": p} for p in params], lr=lr, momentum=a.beta)
    g = torch.Generator().manual_seed(a.seed)
    if a.task in ("tfm", "char"):
        train, _, vocab = mo.char_data()

        def batch(n):
            return mo.char_batch(train, g, n)

        def lossf(x, y):
            return torch.nn.functional.cross_entropy(net(x).reshape(-1, vocab), y.reshape(-1))
    else:
        Xtr, ytr, _, _ = (mo.diabetes if a.task == "reg" else mo.digits)(a.seed)
        crit = (torch.nn.functional.mse_loss if a.task == "reg"
                else torch.nn.functional.cross_entropy)

        def batch(n):
            i = torch.randint(0, len(Xtr), (n,), generator=g)
            return Xtr[i], ytr[i]

        def lossf(x, y):
            out = net(x)
            return crit(out.squeeze(1) if a.task == "reg" else out, y)
    V = [[torch.zeros(sum(p.numel() for p in ps)) for _ in CANDS] for ps in params]
    # the cross estimator of every candidate's curvature (docs/MATH.md 5.4):
    # EMA of <u_j(t-2), -(g_t - g_(t-1)) / lr> and of <u_j(t-2), a_(t-1)>
    X = [{"num": [0.0] * len(CANDS), "den": [0.0] * len(CANDS), "hist": []} for _ in params]
    print(f"# {a.task} SGD lr {lr:g} momentum {a.beta:g} (applied); candidates {CANDS}")
    for t in range(a.steps):
        x, y = batch(a.batch)
        opt.zero_grad()
        loss = lossf(x, y)
        loss.backward()
        for gi, ps in enumerate(params):
            s = group_vec([p.grad for p in ps])
            bufs = [opt.state[p].get("momentum_buffer") for p in ps]
            a_vec = s if any(b is None for b in bufs) else a.beta * group_vec(bufs) + s
            h = X[gi]["hist"]
            if len(h) == 2:
                (s2, u2, a2), (s1, _, a1) = h  # t-2, t-1
                for j in range(len(CANDS)):
                    X[gi]["num"][j] = 0.95 * X[gi]["num"][j] + 0.05 * float(u2[j] @ (s1 - s)) / lr
                    X[gi]["den"][j] = 0.95 * X[gi]["den"][j] + 0.05 * float(u2[j] @ a1)
            for j, b in enumerate(CANDS):
                V[gi][j].mul_(b).add_(s)
            h.append((s, [v.clone() for v in V[gi]], a_vec))
            del h[:-2]
        if t % a.every == a.every - 1:
            probe(net, params, V, X, lossf, batch(a.big), lr, opt, t, loss.item())
        opt.step()


def probe(net, params, V, X, lossf, big, lr, opt, t, loss):
    x, y = big
    allp = [p for ps in params for p in ps]
    grads = torch.autograd.grad(lossf(x, y), allp, create_graph=True)
    off = 0
    for gi, ps in enumerate(params):
        gs = grads[off:off + len(ps)]
        off += len(ps)
        G = group_vec([q.detach() for q in gs])
        bufs = [opt.state[p].get("momentum_buffer") for p in ps]
        cur = group_vec([p.grad for p in ps])
        # the update applied this step: b = beta b + g (torch SGD), which
        # opt.step() forms next; g alone at momentum 0 or on the first step
        beta = opt.param_groups[gi]["momentum"]
        a_vec = cur if any(b is None for b in bufs) else beta * group_vec(bufs) + cur

        def hq(v):
            parts, i = [], 0
            for p in ps:
                parts.append(v[i:i + p.numel()].view_as(p))
                i += p.numel()
            dot = sum((q * w).sum() for q, w in zip(gs, parts))
            hv = torch.autograd.grad(dot, ps, retain_graph=True)
            return float(group_vec(hv) @ v) / float(v @ v)

        qa = hq(a_vec)
        rows = []
        for j, b in enumerate(CANDS):
            u = V[gi][j]
            F, E, q = float(G @ u), float(u @ u), hq(u)
            den = X[gi]["den"][j]
            kx = X[gi]["num"][j] / den if den > 0 else float("nan")
            rows.append((b, F, E, q, lr * F - lr * lr * q * E / 2, lr * F - lr * lr * qa * E / 2,
                         kx, lr * F - lr * lr * kx * E / 2))
        best = max(rows, key=lambda r: r[4])[0]
        bestbar = max(rows, key=lambda r: r[5])[0]
        bestx = max((r for r in rows if r[6] == r[6]), key=lambda r: r[7], default=(None,))[0]
        print(f"step {t + 1} group {gi} loss {loss:.3f} q_applied {qa:.3g} "
              f"argmax D {best:g}  argmax Dbar {bestbar:g}  argmax Dx {bestx}")
        for b, F, E, q, D, Db, kx, Dx in rows:
            print(f"   b {b:<5g} F {F:10.4g} E {E:10.4g} q {q:9.4g} kx {kx:9.4g} D {D:10.4g} "
                  f"Dbar {Db:10.4g} Dx {Dx:10.4g}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
