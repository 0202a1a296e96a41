"""SGD+momentum on scikit-learn's bundled digits, attached to gristd.

Trains the same MLP twice from the same initialisation: once with a fixed
momentum, once with grist choosing the momentum of each parameter group
(two groups: the hidden layer and the output layer). Prints the pushed
momentum over time and both final test accuracies, and saves a PNG plot.

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
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--solve-every", type=int, default=0,
                    help="selection cadence asked of gristd (default: gristd's own, 50, "
                         "chosen in docs/QUALITY.md)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default="digits_sgd.png")
    args = ap.parse_args()

    fixed = train(args)
    tuned = train(args, attach_to=args.address)
    print(f"digits, SGD lr {args.lr}, {tuned['steps']} steps, batch {args.batch}")
    print("pushed by gristd (step: momentum x lr_scale for hidden, output):")
    for step, mom, scale in tuned["history"]:
        print(f"  step {step:5d}: " + ", ".join(f"{m:.3f} x {s:.2f}" for m, s in zip(mom, scale)))
    if not tuned["history"]:
        print("  (none received: is gristd running at %s?)" % args.address)
    st = tuned["stats"]
    print(f"summaries sent {st.get('sent', 0)}, dropped {st.get('dropped', 0)}, "
          f"pushes received {st.get('received', 0)}")
    w = 20
    tail = lambda xs: float(np.mean(xs[-w:]))  # noqa: E731
    print(f"fixed momentum {args.momentum}: test accuracy {fixed['acc']:.4f}, "
          f"final train loss {tail(fixed['losses']):.4f}")
    print(f"grist-tuned momentum        : test accuracy {tuned['acc']:.4f}, "
          f"final train loss {tail(tuned['losses']):.4f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        k = 10
        sm = lambda xs: np.convolve(xs, np.ones(k) / k, mode="valid")  # noqa: E731
        ax[0].plot(sm(fixed["losses"]), label=f"fixed momentum {args.momentum}")
        ax[0].plot(sm(tuned["losses"]), label="grist")
        ax[0].set_yscale("log")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("train loss (moving average)")
        ax[0].legend()
        if tuned["history"]:
            steps = [h[0] for h in tuned["history"]]
            for gi, name in enumerate(["hidden", "output"]):
                ax[1].step([0] + steps, [args.momentum] + [h[1][gi] for h in tuned["history"]],
                           where="post", label=name)
        ax[1].set_xlabel("step")
        ax[1].set_ylabel("momentum pushed by gristd")
        ax[1].set_ylim(0, 1)
        ax[1].legend()
        fig.suptitle(f"digits MLP: test acc fixed {fixed['acc']:.3f}, grist {tuned['acc']:.3f}")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
