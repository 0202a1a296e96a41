"""What a perfect tuner could still reach from a bad start: train with
momentum START until step K, then switch to TARGET (the best fixed beta) and
keep it, 5 seeds, for each K. If even an oracle switching at step K misses
the best fixed beta, no online rule deciding at K can match it.

  /usr/bin/python3 tests/quality/oracle_switch.py reg sgd 1 0.99 0 1,10,20,40,80
  (task, optimizer, lr multiplier, start beta, target beta, switch steps)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import momentum as M  # noqa: E402


class Switch:
    """Stands where a grist session would: sets the momentum at step k."""

    def __init__(self, opt, k, beta):
        self.opt, self.k, self.beta, self.t = opt, k, beta, 0

    def step(self, batch_size=0):
        self.t += 1
        if self.t == self.k:
            for g in self.opt.param_groups:
                if "betas" in g:
                    g["betas"] = (self.beta, g["betas"][1])
                else:
                    g["momentum"] = self.beta

    def validate(self, *a, **k):
        pass


def main():
    task, opt_name, mult, start, target = sys.argv[1:6]
    ks = [int(x) for x in sys.argv[6].split(",")]
    args = M.parser().parse_args(["--task", task, "--optimizer", opt_name, "--lr-mult", mult])
    M.finish_args(args)
    for k in ks:
        res = []
        for seed in range(5):
            net, groups = M.make_model(task, seed)
            opt = M.make_optimizer(opt_name, groups, args.lr, float(start))
            metric, _ = M.run_epochs(args, seed, net, net, opt, Switch(opt, k, float(target)),
                                     M.Ranks(), task)
            res.append(metric)
        print(f"{task} {opt_name} x{mult} from {start}, switched to {target} at step {k}: "
              f"{np.mean(res):.4f} ± {np.std(res, ddof=1):.4f}", flush=True)


if __name__ == "__main__":
    main()
