"""Quality experiments 2 and 3 of issue P5: dynamic
momentum (SGD) / beta1 (Adam) chosen by grist against fixed values, with the
whole system in the loop (client -> gristd -> push).

    sh tests/quality/run.sh [--seeds N] [--task T] [--optimizer O] [--start-beta B]
                            [--lr-mult X] [--tuner grist,yellowfin]

Tasks (--task), each with two param groups (grist tunes each):
  mlp   digits (scikit-learn's bundled data), MLP 64-128-10
  cnn   digits as 8x8 images, conv(16)-conv(32)-linear
  char  next-character model (embedding-GRU-linear) on the GPL-3 text that
        Debian's base-files ships (/usr/share/common-licenses/GPL-3);
        metric: held-out cross-entropy (lower is better)
  tfm   next-character transformer on the same text: 2 pre-norm layers,
        d_model 64, 4 heads, causal mask, context 48; groups: embeddings +
        blocks, final norm + output; metric: held-out cross-entropy (lower
        is better; 400 steps see the 32k-character training text ~19 times,
        so the larger effective steps overfit: training loss ~1.6 against
        2.07 held out at Adam's default lr)
  reg   scikit-learn's bundled diabetes data (442 rows, 10 features;
        features and target standardized with the training split's
        statistics), MLP 10-64-1, MSE loss, 40 epochs of 10 batches;
        metric: test MSE (lower is better; it overfits: the test MSE is best
        at small effective steps while the training loss keeps falling)
Optimizers (--optimizer): sgd, nesterov (SGD(nesterov=True)), adam, adamw
(AdamW, weight_decay 0.01).
For each fixed beta and for each tuner (grist started from --start-beta,
default 0.9; with --tuner yellowfin also YellowFin, tests/quality/yellowfin.py,
SGD family only, started from the same lr and momentum), over N seeds: the
final test metric (mean +- std) and the first step at which the
moving-average training loss falls below a target. Prints a markdown table.
Slow: not part of .ci/run. The wide suite over all of these is suite.py.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from defaults import (DEFAULT_LR, FIXED_BETAS, OPTIMIZERS, TARGET_LOSS, TASKS, family,  # noqa: E402
                      scaled_lr)
from yellowfin import YellowFin  # noqa: E402  (this directory)

WHAT = {"mlp": "digits MLP", "cnn": "digits CNN", "char": "GPL-3 char GRU",
        "tfm": "GPL-3 char transformer", "reg": "diabetes MLP regression"}
METRIC = {"mlp": "test accuracy", "cnn": "test accuracy",
          "char": "held-out cross-entropy (lower is better)",
          "tfm": "held-out cross-entropy (lower is better)",
          "reg": "test MSE, standardized target (lower is better)"}


def digits(seed):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    return [torch.from_numpy(a) for a in (Xtr, ytr, Xte, yte)]


def diabetes(seed):
    """The diabetes regression data, split 75/25 by seed; features and target
    standardized with the training split's mean and std."""
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
    mx, sx = Xtr.mean(0), Xtr.std(0)
    my, sy = ytr.mean(), ytr.std()
    out = [(Xtr - mx) / sx, (ytr - my) / sy, (Xte - mx) / sx, (yte - my) / sy]
    return [torch.from_numpy(a.astype(np.float32)) for a in out]


class CharModel(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 32)
        self.rnn = torch.nn.GRU(32, 96, batch_first=True)
        self.out = torch.nn.Linear(96, vocab)

    def forward(self, x):
        h, _ = self.rnn(self.emb(x))
        return self.out(h)


class Block(torch.nn.Module):
    """A pre-norm transformer block: causal multi-head self-attention, then
    a GELU MLP of width 4 d, each with a residual connection."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.ff = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(),
                                      torch.nn.Linear(4 * d, d))

    def forward(self, x, mask):
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, d))
        return x + self.ff(self.ln2(x))


class TinyTransformer(torch.nn.Module):
    """The tfm task's model: token + learned position embeddings, `layers`
    blocks, a final LayerNorm and a linear read-out."""

    def __init__(self, vocab, d=64, heads=4, layers=2, ctx=48):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Embedding(ctx, d)
        self.blocks = torch.nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.norm = torch.nn.LayerNorm(d)
        self.out = torch.nn.Linear(d, vocab)
        self.register_buffer("mask", torch.triu(torch.ones(ctx, ctx, dtype=torch.bool), 1))

    def forward(self, x):
        h = self.tok(x) + self.pos(torch.arange(x.shape[1]))
        for b in self.blocks:
            h = b(h, self.mask)
        return self.out(self.norm(h))


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
    if task == "reg":
        net = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
        return net, [{"params": net[0].parameters()}, {"params": net[2].parameters()}]
    if task == "cnn":
        net = torch.nn.Sequential(
            torch.nn.Unflatten(1, (1, 8, 8)),
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32 * 16, 10))
        convs = list(net[1].parameters()) + list(net[3].parameters())
        return net, [{"params": convs}, {"params": net[7].parameters()}]
    if task == "tfm":
        net = TinyTransformer(char_data()[2])
        body = list(net.tok.parameters()) + list(net.pos.parameters()) + list(net.blocks.parameters())
        return net, [{"params": body},
                     {"params": list(net.norm.parameters()) + list(net.out.parameters())}]
    net = CharModel(char_data()[2])
    return net, [{"params": list(net.emb.parameters()) + list(net.rnn.parameters())},
                 {"params": net.out.parameters()}]


def make_optimizer(optimizer, groups, lr, beta, tuner=None):
    """The run's optimizer at momentum / beta1 `beta`; tuner 'yellowfin':
    YellowFin (SGD family only) started from lr and beta."""
    if tuner == "yellowfin":
        if family(optimizer) != "sgd":
            raise ValueError("YellowFin tunes momentum SGD only (sgd, nesterov)")
        return YellowFin(groups, lr=lr, momentum=beta, nesterov=optimizer == "nesterov")
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=beta)
    if optimizer == "nesterov":
        # torch refuses nesterov=True at momentum 0 (which is plain SGD: its
        # step skips the buffer at momentum 0): build at 0.5, then set beta
        opt = torch.optim.SGD(groups, lr=lr, momentum=beta if beta > 0 else 0.5, nesterov=True)
        for g in opt.param_groups:
            g["momentum"] = beta
        return opt
    if optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(beta, 0.999))
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(beta, 0.999), weight_decay=0.01)
    raise ValueError(f"unknown optimizer {optimizer!r}")


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
    """The char and tfm tasks: args.char_steps random batches of the text."""
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


def run_epochs(args, seed, net, model, opt, session, ranks, task):
    """The digits tasks (cross-entropy, test accuracy) and reg (MSE, test
    MSE): epochs of shuffled batches of the training split."""
    if task == "reg":
        Xtr, ytr, Xte, yte = diabetes(seed)
        epochs = args.reg_epochs

        def lossf(out, y):
            return torch.nn.functional.mse_loss(out.squeeze(1), y)
    else:
        Xtr, ytr, Xte, yte = digits(seed)
        epochs = args.epochs
        lossf = torch.nn.functional.cross_entropy
    if args.val_split > 0:
        # every run (fixed or tuned) trains on the same reduced split; the
        # held-out part only feeds grist's validation sketches (--validate)
        cut = int(len(Xtr) * (1 - args.val_split))
        pv = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(seed + 7919))
        Xv, yv = Xtr[pv[cut:]], ytr[pv[cut:]]
        Xtr, ytr = Xtr[pv[:cut]], ytr[pv[:cut]]
        if session and args.validate:
            session.validate(lambda: lossf(model(Xv), yv), every=args.validate)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(Xtr), generator=g)
        for i in range(0, len(Xtr) - args.batch + 1, args.batch):
            idx, = ranks.part(perm[i:i + args.batch])
            opt.zero_grad()
            loss = lossf(model(Xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            if session:
                session.step(batch_size=len(idx))
            losses.append(ranks.mean(loss.item()))
    with torch.no_grad():
        if task == "reg":
            metric = lossf(net(Xte), yte).item()
        else:
            metric = (net(Xte).argmax(1) == yte).float().mean().item()
    return metric, losses


def run(args, seed, beta, address=None, job=None, tuner=None):
    """One training run; returns (metric, steps to target). With --ranks R
    > 1, R processes (gloo, DDP) of which rank 0 reports."""
    res = run_full(args, seed, beta, address, job, tuner)
    return res["metric"], res["steps_to_target"]


def run_full(args, seed, beta, address=None, job=None, tuner=None):
    """One training run; returns train_run's dict."""
    if args.ranks == 1:
        return train_run(args, seed, beta, address, job, Ranks(), tuner)
    import socket
    import torch.multiprocessing as mp
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.spawn(ddp_rank, args=(args, seed, beta, address, job, port, out, tuner), nprocs=args.ranks,
             join=True)
    return out.get()


def ddp_rank(rank, args, seed, beta, address, job, port, out, tuner=None):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=args.ranks)
    res = train_run(args, seed, beta, address, job, Ranks(rank, args.ranks), tuner)
    if rank == 0:
        out.put(res)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def train_run(args, seed, beta, address, job, ranks, tuner=None):
    """One run of args.task with args.optimizer at args.lr, momentum / beta1
    `beta` (a grist run: attached to gristd at `address`, starting from
    beta; tuner 'yellowfin': YellowFin from lr and beta). Returns a dict:
    metric, steps_to_target, losses_tail (the mean training loss of the last
    20 steps), history (grist: session.history, the values pushed, as
    [step, [momentum per group], [lr_scale per group]]; YellowFin: its trace
    [step, [mu], [lr]]), steps."""
    net, groups = make_model(args.task, seed)
    model = net
    if ranks.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net)
    opt = make_optimizer(args.optimizer, groups, args.lr, beta, tuner)
    session = None
    if address:
        import grist.torch  # here: fixed and YellowFin runs work without libgrist
        policy = {} if args.solve_every is None else {"solve_every": args.solve_every}
        for kv in args.policy:
            k, v = kv.split("=", 1)
            policy[k] = v
        # GRIST_SKETCH_SAMPLE=N forces the block sketch's sampling of every
        # group (docs/MATH.md 2.1; unset: grist.torch's default by size)
        sample = int(os.environ.get("GRIST_SKETCH_SAMPLE", "0")) or None
        session = grist.torch.attach(opt, job=job, address=address, policy=policy, wait_s=10,
                                     sketch_sample=sample,
                                     rank=ranks.rank, world_size=ranks.world,
                                     ddp_model=model if ranks.world > 1 else None)
    try:
        if args.task in ("char", "tfm"):
            metric, losses = run_char(args, seed, model, opt, session, ranks)
        else:
            metric, losses = run_epochs(args, seed, net, model, opt, session, ranks, args.task)
        history = []
        if session:
            trace(args, seed, session, ranks)
            history = [[t, list(ms), list(ss)] for t, ms, ss in session.history]
        elif tuner == "yellowfin":
            history = [[t, [mu], [lr]] for t, mu, lr in opt.trace]
    finally:
        if session:
            session.close()
    return {"metric": metric, "steps_to_target": first_hit(losses, args.target),
            "losses_tail": float(np.mean(losses[-20:])), "history": history,
            "steps": len(losses)}


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


def parser():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default=os.environ.get("GRIST_ADDRESS", "127.0.0.1:7788"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    ap.add_argument("--lr", type=float, default=None, help="base lr (default: the task's, defaults.py)")
    ap.add_argument("--lr-mult", type=float, default=1.0,
                    help="multiply the base lr by this (recorded in the table header)")
    ap.add_argument("--start-beta", type=float, default=0.9,
                    help="momentum / beta1 the tuners start from (the optimizer's configured "
                         "value before attach)")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of the digits tasks")
    ap.add_argument("--reg-epochs", type=int, default=40, help="epochs of the reg task (10 steps each)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--solve-every", type=int, default=None,
                    help="selection cadence sent in the policy (default: gristd's own, 50)")
    ap.add_argument("--target", type=float, default=None)
    ap.add_argument("--task", choices=TASKS, default="mlp")
    ap.add_argument("--char-steps", type=int, default=400, help="steps of the char and tfm tasks")
    ap.add_argument("--ranks", type=int, default=1,
                    help="data-parallel ranks (DDP over gloo); each takes its share of every "
                         "batch, so the averaged gradient is the single-process one")
    ap.add_argument("--betas", default=None, help="fixed betas to run, e.g. 0.8,0.9 (default: the sweep)")
    ap.add_argument("--grist-only", action="store_true", help="skip the fixed-beta runs")
    ap.add_argument("--tuner", default="grist",
                    help="tuner rows after the fixed betas, comma-separated: grist, yellowfin "
                         "(SGD family only; sets both momentum and lr)")
    ap.add_argument("--trace", action="store_true",
                    help="print the values gristd pushed in each grist run (stderr)")
    ap.add_argument("--val-split", type=float, default=0.0,
                    help="hold this fraction of the training split out of training in every run "
                         "(the digits and reg tasks)")
    ap.add_argument("--validate", type=int, default=0,
                    help="grist runs: session.validate() on the held-out part every N steps "
                         "(with --val-split; add --policy select_on=validation to select on it)")
    ap.add_argument("--policy", action="append", default=[],
                    help="grist policy field for the attached runs, e.g. lr_coupling=dc")
    return ap


def finish_args(args):
    """Fill in the defaults that depend on the task: base lr x lr-mult, target."""
    args.base_lr = args.lr if args.lr is not None else DEFAULT_LR[(args.task, args.optimizer)]
    args.lr = scaled_lr(args.base_lr, args.lr_mult)
    if args.target is None:
        args.target = TARGET_LOSS[args.task]
    return args


def length(args):
    if args.task in ("char", "tfm"):
        return f"{args.char_steps} steps"
    if args.task == "reg":
        return f"{args.reg_epochs} epochs"
    return f"{args.epochs} epochs"


def main():
    args = finish_args(parser().parse_args())
    tuners = [t for t in args.tuner.split(",") if t]
    for t in tuners:
        if t not in ("grist", "yellowfin"):
            sys.exit(f"momentum.py: unknown tuner {t!r} (grist, yellowfin)")
        if t == "yellowfin" and family(args.optimizer) != "sgd":
            sys.exit("momentum.py: --tuner yellowfin needs --optimizer sgd or nesterov")
    torch.set_num_threads(1)
    fixed = list(FIXED_BETAS[family(args.optimizer)])
    if args.betas:
        fixed = [float(b) for b in args.betas.split(",")]
    if args.grist_only:
        fixed = []
    rows = []
    for beta in fixed + tuners:
        accs, hits = [], []
        for seed in range(args.seeds):
            if beta == "grist":
                acc, hit = run(args, seed, args.start_beta, args.address,
                               f"quality-{args.task}-{args.optimizer}-{seed}")
            elif beta == "yellowfin":
                acc, hit = run(args, seed, args.start_beta, tuner="yellowfin")
            else:
                acc, hit = run(args, seed, beta)
            accs.append(acc)
            hits.append(hit)
        ok = [h for h in hits if h is not None]
        rows.append((beta, statistics.mean(accs), statistics.pstdev(accs),
                     statistics.median(ok) if ok else None, len(ok)))
        print(f"  {beta}: {rows[-1]}", file=sys.stderr, flush=True)
    pol = ", grist policy " + " ".join(args.policy) if args.policy else ""
    if args.ranks > 1:
        pol += f", {args.ranks} DDP ranks"
    # the optional fields sit before "N seeds" so that verdict.py's title
    # pattern (and its default-lr detection) reads old and new tables alike
    opts = f", lr x{args.lr_mult:g} of {args.base_lr:g}, tuners start from beta {args.start_beta:g}"
    print(f"{WHAT[args.task]}, {args.optimizer} lr {args.lr}, batch {args.batch}, {length(args)}"
          f"{opts}, {args.seeds} seeds{pol}; steps to moving-average train loss < {args.target}\n")
    print(f"| beta | {METRIC[args.task]} (mean ± std) | median steps to target | runs reaching it |")
    print("|---|---|---|---|")
    for beta, m, s, h, n in rows:
        name = {"grist": f"grist (from {args.start_beta:g})", "yellowfin": "yellowfin"}.get(
            beta, f"fixed {beta}")
        print(f"| {name} | {m:.4f} ± {s:.4f} | {h if h is not None else '-'} | {n}/{args.seeds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
