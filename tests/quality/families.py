"""Quality experiment 1 (issue P5): the stateless optimizer families of
MATH.md section 7 (the paper's Fig. 2 idea), run as optimizers.

A stateless optimizer steps theta <- theta - Q g with a fixed-shape
preconditioner Q. Each family maximizes the one-step alignment <Q, Sigma>
(Sigma the gradient second moment) under its own trust region of radius B;
the closed forms are grist's (grist_family_solve, called through libgrist).
Sigma is estimated online as an EMA of g g^T (gamma 0.95, bias-corrected),
and Q is re-solved every 10 steps, as gristd does on the sketch.

Two problems: an ill-conditioned quadratic (n = 48, Hessian eigenvalues
log-spaced over 1e-3..1, random rotation, gradient noise) and a non-convex
extended Rosenbrock (n = 16, gradient noise). For each:
  (a) the optimal Frobenius shape Q* = B Sigma / |Sigma|_F against 20 random
      PSD shapes of the same Frobenius power B (at the best B of Q*);
  (b) the six families, each at its best radius B of a dense search
      (33 radii over 8 decades, 3 seeds, the median final loss).
Writes docs/quality/families_<problem>.png and prints markdown tables.

    sh tests/quality/run_families.sh        (~2 min on 2 cores)
"""
import ctypes
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
from grist import _native  # noqa: E402

FAMILIES = ["frobenius", "spectral", "isotropic", "lyapunov", "whitened", "diagonal"]
_solve = _native._lib.grist_family_solve
_solve.restype = ctypes.c_int
_solve.argtypes = [ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_double,
                   ctypes.c_double, ctypes.c_void_p, ctypes.POINTER(ctypes.c_double)]


def family_q(fam, sigma, radius, delta=None):
    """Q* of a family on Sigma at radius B, and <Q*, Sigma>, from grist's C code.
    delta (whitening and the Lyapunov metric) defaults to 1e-4 of the mean
    eigenvalue, so that whitening does not blow up the noise directions."""
    n = sigma.shape[0]
    if delta is None:
        delta = 1e-4 * max(np.trace(sigma) / n, 1e-300)
    s = np.ascontiguousarray((sigma + sigma.T) / 2, dtype=np.float64)  # column-major = row-major here
    q = np.empty((n, n))
    v = ctypes.c_double()
    r = _solve(FAMILIES.index(fam), n, s.ctypes.data, None, radius, delta, q.ctypes.data,
               ctypes.byref(v))
    if r < 0:
        raise RuntimeError(f"grist_family_solve({fam}): {r}")
    return q, v.value


class Quadratic:
    name = "quadratic"
    n = 48
    steps = 400
    noise = 0.02

    def __init__(self):
        rng = np.random.default_rng(100)
        u, _ = np.linalg.qr(rng.standard_normal((self.n, self.n)))
        self.H = u @ np.diag(np.logspace(-3, 0, self.n)) @ u.T
        self.x0 = rng.standard_normal(self.n)

    def loss(self, x):
        return 0.5 * x @ self.H @ x

    def grad(self, x, rng):
        return self.H @ x + self.noise * rng.standard_normal(self.n)


class Rosenbrock:
    name = "rosenbrock"
    n = 16
    steps = 1500
    noise = 0.5

    def __init__(self):
        self.x0 = np.tile([-1.2, 1.0], self.n // 2)

    def loss(self, x):
        a, b = x[0::2], x[1::2]
        return float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))

    def grad(self, x, rng):
        a, b = x[0::2], x[1::2]
        g = np.empty_like(x)
        g[0::2] = -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
        g[1::2] = 200.0 * (b - a * a)
        return g + self.noise * rng.standard_normal(self.n)


def run(prob, make_q, seed, refresh=10, gamma=0.95):
    """Loss curve of theta <- theta - Q g, Q = make_q(Sigma-hat) every refresh steps."""
    rng = np.random.default_rng(seed)
    x = prob.x0.copy()
    sig = np.zeros((prob.n, prob.n))
    losses = np.empty(prob.steps + 1)
    losses[0] = prob.loss(x)
    q = None
    for t in range(1, prob.steps + 1):
        g = prob.grad(x, rng)
        sig = gamma * sig + (1 - gamma) * np.outer(g, g)
        if q is None or t % refresh == 1:
            q = make_q(sig / (1 - gamma ** t))
        x = x - q @ g
        ls = prob.loss(x)
        if not np.isfinite(ls) or ls > 1e12:  # diverged: the rest of the curve is lost
            losses[t:] = np.inf
            break
        losses[t] = ls
    return losses


def final(curve):
    tail = curve[-max(1, len(curve) // 10):]
    return float(np.mean(tail)) if np.all(np.isfinite(tail)) else np.inf


def study(prob, seeds=(0, 1, 2)):
    t0 = time.time()
    radii = np.logspace(-7, 1, 33)
    best = {}
    for fam in FAMILIES:
        scores = []
        for b in radii:
            s = np.median([final(run(prob, lambda S, b=b, f=fam: family_q(f, S, b)[0], seed))
                           for seed in seeds])
            scores.append(s)
        k = int(np.argmin(scores))
        curves = [run(prob, lambda S, b=radii[k], f=fam: family_q(f, S, b)[0], seed)
                  for seed in seeds]
        best[fam] = (radii[k], scores[k], curves)
    # (a) the optimal Frobenius shape against random PSD shapes of equal power
    bF = best["frobenius"][0]
    rng = np.random.default_rng(7)
    rand_curves, rand_align, opt_align = [], [], []
    for r in range(20):
        a = rng.standard_normal((prob.n, prob.n))
        shape = a @ a.T
        shape *= bF / np.linalg.norm(shape)

        def fixed_random(S, shape=shape):
            rand_align.append(float(np.sum(shape * S)))
            opt_align.append(family_q("frobenius", S, bF)[1])
            return shape
        rand_curves.append(run(prob, fixed_random, seed=r % len(seeds)))
    return dict(best=best, radii=radii, rand=rand_curves, rand_align=np.array(rand_align),
                opt_align=np.array(opt_align), seconds=time.time() - t0)


def plot(prob, res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    opt = np.median(np.array(res["best"]["frobenius"][2]), axis=0)
    rc = np.array(res["rand"])
    ax[0].semilogy(np.median(rc, axis=0), color="gray", label="random PSD shapes, median")
    ax[0].fill_between(np.arange(rc.shape[1]), np.nanmin(rc, axis=0), np.nanmax(np.where(
        np.isfinite(rc), rc, np.nan), axis=0), color="gray", alpha=0.25, label="random, min-max")
    ax[0].semilogy(opt, color="C0", lw=2, label="optimal Frobenius Q* = B Sigma/|Sigma|_F")
    ax[0].set_title(f"{prob.name}: same Frobenius power B = {res['best']['frobenius'][0]:.3g}")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("loss")
    ax[0].legend()
    for i, fam in enumerate(FAMILIES):
        b, _, curves = res["best"][fam]
        med = np.median(np.array(curves), axis=0)
        ax[1].semilogy(med, color=f"C{i}", label=f"{fam} (B = {b:.3g})")
    ax[1].set_title(f"{prob.name}: each family at its best radius (median of 3 seeds)")
    ax[1].set_xlabel("step")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(prob, res, path):
    print(f"\n### {prob.name} (n = {prob.n}, {prob.steps} steps, gradient noise {prob.noise}); "
          f"{res['seconds']:.0f} s\n")
    print("| family | best radius B | final loss (median of 3 seeds, mean of the last 10 %) |")
    print("|---|---|---|")
    order = sorted(FAMILIES, key=lambda f: res["best"][f][1])
    for f in order:
        b, s, _ = res["best"][f]
        print(f"| {f} | {b:.3g} | {s:.4g} |")
    rf = [final(c) for c in res["rand"]]
    opt = res["best"]["frobenius"][1]
    beaten = sum(1 for r in rf if opt <= r)
    print(f"\nOptimal Frobenius shape against 20 random PSD shapes of the same power: final loss "
          f"{opt:.4g} against random median {np.median(rf):.4g} (best {np.min(rf):.4g}, "
          f"{sum(1 for r in rf if not np.isfinite(r))} diverged); Q* is at least as good as "
          f"{beaten}/20. One-step alignment <Q, Sigma> along the way: the optimal shape's is "
          f"{np.median(res['opt_align'] / np.maximum(res['rand_align'], 1e-300)):.1f}x the random "
          f"shapes' (median ratio; never below 1: "
          f"{bool(np.all(res['opt_align'] >= res['rand_align'] - 1e-9 * np.abs(res['opt_align'])))}).")
    print(f"\n![{prob.name}]({os.path.relpath(path, os.path.join(ROOT, 'docs'))})")


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    out = os.path.join(ROOT, "docs", "quality")
    os.makedirs(out, exist_ok=True)
    print("## Experiment 1: stateless families (MATH.md section 7)")
    for prob in (Quadratic(), Rosenbrock()):
        res = study(prob)
        path = os.path.join(out, f"families_{prob.name}.png")
        plot(prob, res, path)
        report(prob, res, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
