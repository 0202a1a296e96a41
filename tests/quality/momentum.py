"""Quality experiment 2/3 of issue P5 (first task only so far): dynamic
momentum (SGD) / beta1 (Adam) chosen by grist against fixed values, with the
whole system in the loop (client -> gristd -> push).

    sh tests/quality/run.sh [--seeds N] [--optimizer sgd|adam]

Task: digits MLP (scikit-learn's bundled digits, 64-128-10, two param groups,
batch 32, 12 epochs). For each fixed beta and for grist (started from 0.9),
over N seeds: final test accuracy (mean +- std) and the first step at which
the moving-average training loss falls below a target. Prints a markdown
table. Slow: not part of .ci/run.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import grist.torch  # noqa: E402


def digits(seed):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    return [torch.from_numpy(a) for a in (Xtr, ytr, Xte, yte)]


def run(args, seed, beta, address=None, job=None):
    Xtr, ytr, Xte, yte = digits(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    groups = [{"params": net[0].parameters()}, {"params": net[2].parameters()}]
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=beta)
    else:
        opt = torch.optim.Adam(groups, lr=args.lr, betas=(beta, 0.999))
    session = None
    if address:
        session = grist.torch.attach(opt, job=job, address=address,
                                     policy={"solve_every": args.solve_every}, wait_s=10)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(args.epochs):
        perm = torch.randperm(len(Xtr), generator=g)
        for i in range(0, len(Xtr) - args.batch + 1, args.batch):
            idx = perm[i:i + args.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            if session:
                session.step(batch_size=args.batch)
            losses.append(loss.item())
    with torch.no_grad():
        acc = (net(Xte).argmax(1) == yte).float().mean().item()
    if session:
        session.close()
    ma = np.convolve(losses, np.ones(20) / 20, mode="valid")
    hit = np.nonzero(ma < args.target)[0]
    return acc, (int(hit[0]) + 20 if hit.size else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("address")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--solve-every", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.15)
    args = ap.parse_args()
    if args.lr is None:
        args.lr = 0.05 if args.optimizer == "sgd" else 0.002
    torch.set_num_threads(1)
    fixed = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99] if args.optimizer == "sgd" else [0.5, 0.8, 0.9, 0.95, 0.99]
    rows = []
    for beta in fixed + ["grist"]:
        accs, hits = [], []
        for seed in range(args.seeds):
            if beta == "grist":
                acc, hit = run(args, seed, 0.9, args.address, f"quality-{args.optimizer}-{seed}")
            else:
                acc, hit = run(args, seed, beta)
            accs.append(acc)
            hits.append(hit)
        ok = [h for h in hits if h is not None]
        rows.append((beta, statistics.mean(accs), statistics.pstdev(accs),
                     statistics.median(ok) if ok else None, len(ok)))
        print(f"  {beta}: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"digits MLP, {args.optimizer} lr {args.lr}, batch {args.batch}, {args.epochs} epochs, "
          f"{args.seeds} seeds; steps to moving-average train loss < {args.target}\n")
    print("| beta | test accuracy (mean ± std) | median steps to target | runs reaching it |")
    print("|---|---|---|---|")
    for beta, m, s, h, n in rows:
        name = "grist (from 0.9)" if beta == "grist" else f"fixed {beta}"
        print(f"| {name} | {m:.4f} ± {s:.4f} | {h if h is not None else '-'} | {n}/{args.seeds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
