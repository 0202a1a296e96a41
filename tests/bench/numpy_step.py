"""The per-step statistics update of MATH.md section 3 written the way a user
would in NumPy (K = 32 candidates, m = 1024, L = 16 lags, covariance on the
sketch folded to 256), timed per step. Compared with bench-kernels by
tests/bench/run.sh. Run with /usr/bin/python3."""
import sys
import time

import numpy as np


def main():
    K, m, L, mc, g = 32, 1024, 16, 256, 0.95
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    betas = np.array([0.0] + [1 - 2 ** (-j / 4) for j in range(1, K)])
    norm = np.sqrt(1 - betas ** 2)
    V = np.zeros((K, m))
    ring = np.zeros((L, m))
    J = np.zeros(K)
    E = np.zeros(K)
    acf = np.zeros(L + 1)
    Sigma = np.zeros((mc, mc))
    mu = np.zeros(mc)
    rng = np.random.default_rng(1)
    s = rng.standard_normal(m).astype(np.float32)
    head = 0

    def step():
        nonlocal V, head, Sigma, mu, J, E
        x = s.astype(np.float64)
        V = betas[:, None] * V + x
        J[:] = g * J + (1 - g) * norm * (V @ x)
        E[:] = g * E + (1 - g) * np.einsum("km,km->k", V, V)
        acf[0] = g * acf[0] + (1 - g) * (x @ x)
        acf[1:] = g * acf[1:] + (1 - g) * (ring @ x)
        ring[head] = x
        head = (head + 1) % L
        f = x.reshape(-1, mc).sum(axis=0)
        mu = g * mu + (1 - g) * f
        Sigma = g * Sigma + (1 - g) * np.outer(f, f)

    for _ in range(32):
        step()
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t0) / steps)
    times.sort()
    print(f"numpy {times[3] * 1e6:.1f} {times[0] * 1e6:.1f} {times[-1] * 1e6:.1f}")


if __name__ == "__main__":
    main()
