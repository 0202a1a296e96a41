"""Two DDP ranks on CPU (gloo), both attached to one grist job.

Each rank trains the digits MLP on its own batches; grist.torch installs a
DDP communication hook that sketches every rank's local gradient before the
all-reduce, so gristd sees two workers per step and estimates the gradient
noise from them (MATH.md section 4). Ranks are started with
torch.multiprocessing.spawn (Debian's torch.distributed.run launcher
crashes under its Python 3.11, see CONTRIBUTING.md).

    /usr/bin/python3 client/examples/ddp_digits.py --address 127.0.0.1:7788
"""
import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import grist.torch  # noqa: E402


def rank_main(rank, world, port, args):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    Xtr, ytr = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    Xte, yte = torch.from_numpy(Xte), torch.from_numpy(yte)
    torch.manual_seed(0)  # same initial weights on every rank
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    session = grist.torch.attach(opt, job=args.job, address=args.address, ddp_model=model,
                                 policy={"solve_every": 10, "noise_correction": "workers"},
                                 wait_s=5.0)
    g = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard of batches
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(Xtr), (args.batch,), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(Xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        session.step(batch_size=args.batch)
        if rank == 0 and step % 100 == 0:
            print(f"step {step}: loss {loss.item():.4f}, momentum "
                  f"{opt.param_groups[0]['momentum']:.3f}", flush=True)
    with torch.no_grad():
        acc = (model(Xte).argmax(1) == yte).float().mean().item()
    st = session.stats()
    print(f"rank {rank}: test accuracy {acc:.4f}; sent {st['sent']}, pushes {st['received']}, "
          f"momentum history {[round(h[1][0], 3) for h in session.history]}", flush=True)
    dist.barrier()
    session.close()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", default=os.environ.get("GRIST_ADDRESS", "127.0.0.1:7788"))
    ap.add_argument("--job", default="ddp-digits")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    args = ap.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp.spawn(rank_main, args=(2, port, args), nprocs=2, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
