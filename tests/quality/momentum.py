"""Quality experiments 2 and 3 of issue P5: dynamic
momentum (SGD) / beta1 (Adam) chosen by grist against fixed values, with the
whole system in the loop (client -> gristd -> push).

    sh tests/quality/run.sh [--seeds N] [--optimizer sgd|adam]

Tasks (--task):
  mlp   digits (scikit-learn's bundled data), MLP 64-128-10, two param groups
  cnn   digits as 8x8 images, conv(16)-conv(32)-linear, two param groups
  char  next-character model (embedding-GRU-linear) on the GPL-3 text that
        Debian's base-files ships (/usr/share/common-licenses/GPL-3);
        metric: held-out cross-entropy (lower is better)
For each fixed beta and for grist (started from 0.9), over N seeds: the final
test metric (mean +- std) and the first step at which the moving-average
training loss falls below a target. Prints a markdown table. Slow: not part
of .ci/run.
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
from defaults import DEFAULT_LR, TARGET_LOSS  # noqa: E402  (this directory)


def digits(seed):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    return [torch.from_numpy(a) for a in (Xtr, ytr, Xte, yte)]


class CharModel(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 32)
        self.rnn = torch.nn.GRU(32, 96, batch_first=True)
        self.out = torch.nn.Linear(96, vocab)

    def forward(self, x):
        h, _ = self.rnn(self.emb(x))
        return self.out(h)


_text = None


def char_data(seq=48):
    global _text
    if _text is None:
        raw = open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()
        chars = sorted(set(raw))
        idx = torch.tensor([chars.index(c) for c in raw])
        cut = int(len(idx) * 0.9)
        _text = (idx[:cut], idx[cut:], len(chars))
    return _text


def char_batch(data, g, batch, seq=48):
    starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=g)
    x = torch.stack([data[s:s + seq] for s in starts])
    y = torch.stack([data[s + 1:s + seq + 1] for s in starts])
    return x, y


def make_model(task, seed):
    torch.manual_seed(seed)
    if task == "mlp":
        net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        return net, [{"params": net[0].parameters()}, {"params": net[2].parameters()}]
    if task == "cnn":
        net = torch.nn.Sequential(
            torch.nn.Unflatten(1, (1, 8, 8)),
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32 * 16, 10))
        convs = list(net[1].parameters()) + list(net[3].parameters())
        return net, [{"params": convs}, {"params": net[7].parameters()}]
    net = CharModel(char_data()[2])
    return net, [{"params": list(net.emb.parameters()) + list(net.rnn.parameters())},
                 {"params": net.out.parameters()}]


class Ranks:
    """The data-parallel context of one run: rank r of R trains on rows r::R
    of every global batch (the same batches as the single-process run, so
    DDP's averaged gradient is the single-process gradient)."""

    def __init__(self, rank=0, world=1):
        self.rank, self.world = rank, world

    def part(self, *tensors):
        return [t[self.rank::self.world] for t in tensors]

    def mean(self, x):
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.item() / self.world


def run_char(args, seed, net, opt, session, ranks):
    train, test, vocab = char_data()
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(args.char_steps):
        x, y = ranks.part(*char_batch(train, g, args.batch))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        opt.step()
        if session:
            session.step(batch_size=len(x))
        losses.append(ranks.mean(loss.item()))
    gt = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        tl = []
        for _ in range(20):
            x, y = char_batch(test, gt, 64)
            tl.append(torch.nn.functional.cross_entropy(net(x).reshape(-1, vocab), y.reshape(-1)).item())
    return float(np.mean(tl)), losses


def run(args, seed, beta, address=None, job=None):
    """One training run; with --ranks R > 1, R processes (gloo, DDP) of which
    rank 0 reports."""
    if args.ranks == 1:
        return train_run(args, seed, beta, address, job, Ranks())
    import socket
    import torch.multiprocessing as mp
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.spawn(ddp_rank, args=(args, seed, beta, address, job, port, out), nprocs=args.ranks,
             join=True)
    return out.get()


def ddp_rank(rank, args, seed, beta, address, job, port, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=args.ranks)
    res = train_run(args, seed, beta, address, job, Ranks(rank, args.ranks))
    if rank == 0:
        out.put(res)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def train_run(args, seed, beta, address, job, ranks):
    net, groups = make_model(args.task, seed)
    model = net
    if ranks.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net)
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=beta)
    else:
        opt = torch.optim.Adam(groups, lr=args.lr, betas=(beta, 0.999))
    session = None
    if address:
        policy = {} if args.solve_every is None else {"solve_every": args.solve_every}
        for kv in args.policy:
            k, v = kv.split("=", 1)
            policy[k] = v
        session = grist.torch.attach(opt, job=job, address=address, policy=policy, wait_s=10,
                                     rank=ranks.rank, world_size=ranks.world,
                                     ddp_model=model if ranks.world > 1 else None)
    if args.task == "char":
        metric, losses = run_char(args, seed, model, opt, session, ranks)
        if session:
            trace(args, seed, session, ranks)
            session.close()
        return metric, first_hit(losses, args.target)
    Xtr, ytr, Xte, yte = digits(seed)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(args.epochs):
        perm = torch.randperm(len(Xtr), generator=g)
        for i in range(0, len(Xtr) - args.batch + 1, args.batch):
            idx, = ranks.part(perm[i:i + args.batch])
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            if session:
                session.step(batch_size=len(idx))
            losses.append(ranks.mean(loss.item()))
    with torch.no_grad():
        acc = (net(Xte).argmax(1) == yte).float().mean().item()
    if session:
        trace(args, seed, session, ranks)
        session.close()
    return acc, first_hit(losses, args.target)


def trace(args, seed, session, ranks):
    """--trace: the values gristd pushed during the run (step: momentum x lr_scale per group)."""
    if not args.trace or ranks.rank != 0:
        return
    moves = ", ".join(f"{t}: " + "/".join(f"{m:.2f}x{s:.2f}" for m, s in zip(ms, ss))
                      for t, ms, ss in session.history)
    print(f"  seed {seed} pushes: {moves or 'none'}", file=sys.stderr, flush=True)


def first_hit(losses, target):
    ma = np.convolve(losses, np.ones(20) / 20, mode="valid")
    hit = np.nonzero(ma < target)[0]
    return int(hit[0]) + 20 if hit.size else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default=os.environ.get("GRIST_ADDRESS", "127.0.0.1:7788"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--solve-every", type=int, default=None,
                    help="selection cadence sent in the policy (default: gristd's own, 50)")
    ap.add_argument("--target", type=float, default=None)
    ap.add_argument("--task", choices=["mlp", "cnn", "char"], default="mlp")
    ap.add_argument("--char-steps", type=int, default=400)
    ap.add_argument("--ranks", type=int, default=1,
                    help="data-parallel ranks (DDP over gloo); each takes its share of every "
                         "batch, so the averaged gradient is the single-process one")
    ap.add_argument("--betas", default=None, help="fixed betas to run, e.g. 0.8,0.9 (default: the sweep)")
    ap.add_argument("--grist-only", action="store_true", help="skip the fixed-beta runs")
    ap.add_argument("--trace", action="store_true",
                    help="print the values gristd pushed in each grist run (stderr)")
    ap.add_argument("--policy", action="append", default=[],
                    help="grist policy field for the attached runs, e.g. lr_coupling=dc")
    args = ap.parse_args()
    if args.lr is None:
        args.lr = DEFAULT_LR[(args.task, args.optimizer)]
    if args.target is None:
        args.target = TARGET_LOSS[args.task]
    torch.set_num_threads(1)
    fixed = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99] if args.optimizer == "sgd" else [0.5, 0.8, 0.9, 0.95, 0.99]
    if args.betas:
        fixed = [float(b) for b in args.betas.split(",")]
    if args.grist_only:
        fixed = []
    rows = []
    for beta in fixed + ["grist"]:
        accs, hits = [], []
        for seed in range(args.seeds):
            if beta == "grist":
                acc, hit = run(args, seed, 0.9, args.address,
                               f"quality-{args.task}-{args.optimizer}-{seed}")
            else:
                acc, hit = run(args, seed, beta)
            accs.append(acc)
            hits.append(hit)
        ok = [h for h in hits if h is not None]
        rows.append((beta, statistics.mean(accs), statistics.pstdev(accs),
                     statistics.median(ok) if ok else None, len(ok)))
        print(f"  {beta}: {rows[-1]}", file=sys.stderr, flush=True)
    what = {"mlp": "digits MLP", "cnn": "digits CNN", "char": "GPL-3 char GRU"}[args.task]
    length = f"{args.char_steps} steps" if args.task == "char" else f"{args.epochs} epochs"
    metric = "held-out cross-entropy (lower is better)" if args.task == "char" else "test accuracy"
    pol = ", grist policy " + " ".join(args.policy) if args.policy else ""
    if args.ranks > 1:
        pol += f", {args.ranks} DDP ranks"
    print(f"{what}, {args.optimizer} lr {args.lr}, batch {args.batch}, {length}, "
          f"{args.seeds} seeds{pol}; steps to moving-average train loss < {args.target}\n")
    print(f"| beta | {metric} (mean ± std) | median steps to target | runs reaching it |")
    print("|---|---|---|---|")
    for beta, m, s, h, n in rows:
        name = "grist (from 0.9)" if beta == "grist" else f"fixed {beta}"
        print(f"| {name} | {m:.4f} ± {s:.4f} | {h if h is not None else '-'} | {n}/{args.seeds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
