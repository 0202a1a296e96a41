"""SGD+momentum on scikit-learn's bundled digits, attached to gristd.

For each of several seeds, trains the same MLP twice from the same
initialisation: once with the momentum the user left in place (by default a
poorly chosen 0.99), once attached to gristd, which starts from that value
and chooses the momentum of each parameter group (two groups: the hidden
layer and the output layer). Prints the pushed momentum over time, the test
accuracies as mean +- std over the seeds, and saves a PNG plot of the pushed
values of every seed over the whole run.

    /usr/bin/python3 client/examples/digits_sgd.py --address 127.0.0.1:7788
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import grist.torch  # noqa: E402


def data(seed):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    return (torch.from_numpy(Xtr), torch.from_numpy(ytr), torch.from_numpy(Xte),
            torch.from_numpy(yte))


def model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def train(args, attach_to=None, job="digits-sgd"):
    Xtr, ytr, Xte, yte = data(args.seed)
    net = model(args.seed)
    opt = torch.optim.SGD([
        {"params": net[0].parameters(), "name": "hidden"},
        {"params": net[2].parameters(), "name": "output"},
    ], lr=args.lr, momentum=args.momentum)
    session = None
    if attach_to:
        session = grist.torch.attach(opt, job=job, address=attach_to, sketch_dim=1024,
                                     policy={"solve_every": args.solve_every} if args.solve_every
                                     else {}, wait_s=5.0)
    g = torch.Generator().manual_seed(args.seed)
    losses = []
    step = 0
    for epoch in range(args.epochs):
        perm = torch.randperm(len(Xtr), generator=g)
        for i in range(0, len(Xtr) - args.batch + 1, args.batch):
            idx = perm[i:i + args.batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            step += 1
            if session:
                session.step(batch_size=args.batch)
            losses.append(loss.item())
    with torch.no_grad():
        acc = (net(Xte).argmax(1) == yte).float().mean().item()
    hist, stats = [], {}
    if session:
        session.flush(5)  # summaries leave in batches: count them once all are out
        hist, stats = session.history, session.stats()
        session.close()
    return dict(acc=acc, losses=losses, steps=step, history=hist, stats=stats,
                final_momentum=[g["momentum"] for g in opt.param_groups])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default=os.environ.get("GRIST_ADDRESS", "127.0.0.1:7788"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.99,
                    help="the momentum the user left in place (grist starts from it)")
    ap.add_argument("--solve-every", type=int, default=0,
                    help="selection cadence asked of gristd (default: gristd's own)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--plot", default="digits_sgd.png")
    args = ap.parse_args()

    runs = []
    for seed in range(args.seeds):
        args.seed = seed
        fixed = train(args)
        tuned = train(args, attach_to=args.address, job=f"digits-sgd-{seed}")
        runs.append((fixed, tuned))
        print(f"seed {seed}: fixed momentum {args.momentum}: test accuracy {fixed['acc']:.4f}; "
              f"grist: {tuned['acc']:.4f}")
        print("  pushed by gristd (step: momentum x lr_scale for hidden, output):")
        for step, mom, scale in tuned["history"]:
            print(f"    step {step:5d}: " + ", ".join(f"{m:.3f} x {s:.2f}" for m, s in zip(mom, scale)))
        if not tuned["history"]:
            print("    (none received: is gristd running at %s?)" % args.address)
        st = tuned["stats"]
        print(f"  summaries sent {st.get('sent', 0)}, dropped {st.get('dropped', 0)}, "
              f"pushes received {st.get('received', 0)}")
    fa = np.array([f["acc"] for f, _ in runs])
    ta = np.array([t["acc"] for _, t in runs])
    print(f"digits, SGD lr {args.lr}, {runs[0][1]['steps']} steps, batch {args.batch}, "
          f"{args.seeds} seeds")
    print(f"fixed momentum {args.momentum}: test accuracy {fa.mean():.4f} +- {fa.std(ddof=1) if len(fa) > 1 else 0:.4f}")
    print(f"grist from {args.momentum}      : test accuracy {ta.mean():.4f} +- {ta.std(ddof=1) if len(ta) > 1 else 0:.4f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        k = 10
        sm = lambda xs: np.convolve(xs, np.ones(k) / k, mode="valid")  # noqa: E731
        for i, (fixed, tuned) in enumerate(runs):
            ax[0].plot(sm(fixed["losses"]), color="C0", alpha=0.6,
                       label=f"fixed momentum {args.momentum}" if i == 0 else None)
            ax[0].plot(sm(tuned["losses"]), color="C1", alpha=0.6, label="grist" if i == 0 else None)
            if tuned["history"]:
                steps = [h[0] for h in tuned["history"]] + [tuned["steps"]]
                for gi, name in enumerate(["hidden", "output"]):
                    vals = [args.momentum] + [h[1][gi] for h in tuned["history"]]
                    ax[1].step([0] + steps, vals + [vals[-1]], where="post", color=f"C{2 + gi}",
                               alpha=0.7, label=name if i == 0 else None)
        ax[0].set_yscale("log")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("train loss (moving average)")
        ax[0].legend()
        ax[1].set_xlabel("step")
        ax[1].set_ylabel("momentum pushed by gristd (every seed)")
        ax[1].set_ylim(0, 1)
        ax[1].legend()
        fig.suptitle(f"digits MLP, {args.seeds} seeds: test acc fixed {args.momentum} "
                     f"{fa.mean():.3f}, grist {ta.mean():.3f}")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
