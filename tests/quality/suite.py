"""The wide quality suite: tasks x optimizers x lr multipliers x start betas
x seeds, with the whole system in the loop; raw results as JSON lines.

    sh tests/quality/suite.sh --out DIR [--quick] [--jobs N] [--tasks mlp,reg]
        [--optimizers sgd,adam] [--lr-mults 0.3,1,3] [--seeds 3] ...
    /usr/bin/python3 tests/quality/suite_verdict.py DIR      # the tables again

(suite.sh starts gristd the way run.sh does, through deploy/with-gristd.sh,
and runs this file; GRIST_ADDRESS must name a gristd when grist runs are
asked for.) For every task, optimizer and lr = default lr (defaults.py) x
multiplier, over the seeds:
  fixed      the fixed-beta sweep: SGD family beta in {0, 0.5, 0.8, 0.9,
             0.95, 0.99}, Adam family beta1 in {0.5, 0.8, 0.9, 0.95, 0.99}
  grist      attached to gristd, starting from each start beta (SGD family
             {0, 0.9, 0.99}, Adam family {0.5, 0.9, 0.99})
  yellowfin  tests/quality/yellowfin.py, SGD family only, starting from the
             same lr and each start beta as its momentum; it then sets both
One line per run in DIR/results.jsonl: task, optimizer, lr (and base_lr,
lr_mult), tuner (fixed | grist | yellowfin), beta (the fixed beta, or the
start of a tuner), start (null for fixed runs), seed, metric (null when the
run diverged: non-finite metric or loss), diverged, steps_to_target (null if
never reached), target, steps, length, losses_tail, history (grist: the
values gristd pushed, [step, [momentum per group], [lr_scale per group]],
from session.history; YellowFin: [step, [mu], [lr]] every 25 steps), policy,
wall_s. Resumable: a run whose key (task, optimizer, lr, tuner, beta, seed,
length, policy) is already in the file is skipped, so rerunning the same
command finishes an interrupted suite; a run that fails is not written (the
next invocation retries it). At the end DIR/verdict.md is written
(suite_verdict.py) and printed.

--quick: the smoke configuration: tasks mlp,reg; optimizers sgd,adam; lr
x1; start 0.9; fixed betas {0, 0.9} (SGD) / {0.5, 0.9} (Adam); 1 seed
(14 runs, about 10 s here). Any option given explicitly overrides
its quick value.

Time of one run on the project's 2-core machine (single-threaded torch;
fixed beta / attached to gristd, which adds the sketches and the daemon's
work on the same cores): reg 0.2 / 0.8 s, mlp 0.2 / 1 s, cnn 1.4 / 2.3 s,
char 10 / 19 s, tfm 15 / 20 s (YellowFin about the fixed figure), plus ~3 s
of imports per worker process. The full grid (5 tasks x 4 optimizers x 3 lr
x [sweep + 3 grist starts (+ 3 YellowFin starts for the SGD family)] x 3
seeds) is 1,800 runs, 360 per task; about 3.5 h of run time in all, so
roughly 2 h with --jobs 2, almost all of it char and tfm.

Default lrs of the new tasks (defaults.py), from a sanity check at beta 0.9,
seed 0 (held-out metric / mean training loss of the last 20 steps):
  tfm  sgd 0.3: 2.250 / 1.81 (0.1: 2.667; 0.5: 2.155; 0.7: 2.124; 1.0
       diverges); adam 0.003: 2.068 / 1.57 (0.001: 2.435; 0.01: 2.052)
  reg  sgd 0.01: test MSE 0.644 / 0.30 (0.003: 0.552; 0.03: 0.697); adam
       0.003: 0.593 / 0.30 (0.001: 0.531; 0.01: 0.663)
  nesterov uses sgd's, adamw adam's. reg overfits: its test MSE is best at a
  small effective step (beta 0 at lr 0.003: 0.487) while the training loss
  keeps falling, so on reg the best fixed beta tends to be the smallest.
"""
import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from defaults import (DEFAULT_LR, FIXED_BETAS, LR_MULTS, OPTIMIZERS, START_BETAS,  # noqa: E402
                      TARGET_LOSS, TASKS, family, scaled_lr)

QUICK = {"tasks": "mlp,reg", "optimizers": "sgd,adam", "lr_mults": "1", "seeds": 1,
         "sgd_starts": "0.9", "adam_starts": "0.9", "sgd_betas": "0,0.9", "adam_betas": "0.5,0.9"}
FULL = {"tasks": ",".join(TASKS), "optimizers": ",".join(OPTIMIZERS),
        "lr_mults": ",".join(f"{m:g}" for m in LR_MULTS), "seeds": 3,
        "sgd_starts": ",".join(f"{b:g}" for b in START_BETAS["sgd"]),
        "adam_starts": ",".join(f"{b:g}" for b in START_BETAS["adam"]),
        "sgd_betas": ",".join(f"{b:g}" for b in FIXED_BETAS["sgd"]),
        "adam_betas": ",".join(f"{b:g}" for b in FIXED_BETAS["adam"])}


def floats(s):
    return [float(x) for x in s.split(",") if x.strip()]


def names(s, allowed, what):
    out = [x.strip() for x in s.split(",") if x.strip()]
    bad = [x for x in out if x not in allowed]
    if bad:
        sys.exit(f"suite.py: unknown {what} {', '.join(bad)} (known: {', '.join(allowed)})")
    return out


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="results directory (results.jsonl, verdict.md)")
    ap.add_argument("--quick", action="store_true", help="the tiny smoke configuration")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once, in separate processes")
    ap.add_argument("--tasks", help=f"comma-separated, of {', '.join(TASKS)} (default: all)")
    ap.add_argument("--optimizers", help=f"comma-separated, of {', '.join(OPTIMIZERS)} (default: all)")
    ap.add_argument("--lr-mults", help="multipliers of the default lr (default: 0.3,1,3)")
    ap.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 3)")
    ap.add_argument("--sgd-starts", help="start betas of grist / YellowFin, SGD family (default 0,0.9,0.99)")
    ap.add_argument("--adam-starts", help="start betas of grist, Adam family (default 0.5,0.9,0.99)")
    ap.add_argument("--sgd-betas", help="fixed sweep, SGD family (default 0,0.5,0.8,0.9,0.95,0.99)")
    ap.add_argument("--adam-betas", help="fixed sweep, Adam family (default 0.5,0.8,0.9,0.95,0.99)")
    ap.add_argument("--no-fixed", action="store_true", help="skip the fixed-beta sweep")
    ap.add_argument("--no-grist", action="store_true", help="skip the grist runs")
    ap.add_argument("--no-yellowfin", action="store_true", help="skip the YellowFin runs")
    ap.add_argument("--policy", action="append", default=[],
                    help="grist policy field for the attached runs, e.g. lr_coupling=dc")
    ap.add_argument("--epochs", type=int, help="override: epochs of the digits tasks (12)")
    ap.add_argument("--reg-epochs", type=int, help="override: epochs of reg (40)")
    ap.add_argument("--char-steps", type=int, help="override: steps of char and tfm (400)")
    ap.add_argument("--dry-run", action="store_true", help="list the runs still to do and exit")
    ap.add_argument("--no-verdict", action="store_true", help="do not write DIR/verdict.md at the end")
    args = ap.parse_args(argv)
    base = QUICK if args.quick else FULL
    for k, v in base.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.tasks = names(args.tasks, TASKS, "task")
    args.optimizers = names(args.optimizers, OPTIMIZERS, "optimizer")
    args.lr_mults = floats(args.lr_mults)
    args.starts = {"sgd": floats(args.sgd_starts), "adam": floats(args.adam_starts)}
    args.betas = {"sgd": floats(args.sgd_betas), "adam": floats(args.adam_betas)}
    return args


def momentum_argv(spec):
    """momentum.py's command line for one run (its parser fills the rest)."""
    argv = ["--task", spec["task"], "--optimizer", spec["optimizer"],
            "--lr", repr(spec["base_lr"]), "--lr-mult", repr(spec["lr_mult"])]
    for k in ("epochs", "reg_epochs", "char_steps"):
        if spec["overrides"].get(k) is not None:
            argv += ["--" + k.replace("_", "-"), str(spec["overrides"][k])]
    for kv in spec["policy"]:
        argv += ["--policy", kv]
    return argv


def length_of(task, ov):
    if task in ("char", "tfm"):
        return f"{ov.get('char_steps') or 400} steps"
    if task == "reg":
        return f"{ov.get('reg_epochs') or 40} epochs"
    return f"{ov.get('epochs') or 12} epochs"


def key(rec):
    """What makes two records the same run (for resuming)."""
    return (rec["task"], rec["optimizer"], float(rec["lr"]), rec["tuner"], float(rec["beta"]),
            int(rec["seed"]), rec["length"], " ".join(rec.get("policy") or []))


def plan(args):
    """Every run of the configuration, as specs (dicts), in a cell-by-cell order."""
    ov = {"epochs": args.epochs, "reg_epochs": args.reg_epochs, "char_steps": args.char_steps}
    specs = []
    for task in args.tasks:
        for opt in args.optimizers:
            fam = family(opt)
            base = DEFAULT_LR[(task, opt)]
            for mult in args.lr_mults:
                common = {"task": task, "optimizer": opt, "base_lr": base, "lr_mult": mult,
                          "lr": scaled_lr(base, mult), "length": length_of(task, ov),
                          "overrides": ov, "target": TARGET_LOSS[task]}
                runs = []
                if not args.no_fixed:
                    runs += [("fixed", b) for b in args.betas[fam]]
                if not args.no_grist:
                    runs += [("grist", b) for b in args.starts[fam]]
                if not args.no_yellowfin and fam == "sgd":
                    runs += [("yellowfin", b) for b in args.starts[fam]]
                for seed in range(args.seeds):
                    for tuner, beta in runs:
                        specs.append(dict(common, tuner=tuner, beta=beta, seed=seed,
                                          start=None if tuner == "fixed" else beta,
                                          policy=list(args.policy) if tuner == "grist" else []))
    return specs


_worker_ready = False


def run_spec(spec):
    """One run (in a worker process); returns its record."""
    global _worker_ready
    import torch
    import momentum as mq
    if not _worker_ready:
        torch.set_num_threads(1)
        _worker_ready = True
    args = mq.finish_args(mq.parser().parse_args(momentum_argv(spec)))
    address = job = None
    if spec["tuner"] == "grist":
        address = os.environ.get("GRIST_ADDRESS")
        if not address:
            raise RuntimeError("GRIST_ADDRESS is not set: run through tests/quality/suite.sh")
        job = (f"suite-{spec['task']}-{spec['optimizer']}-{spec['lr']:g}-{spec['beta']:g}-"
               f"{spec['seed']}-{os.getpid()}-{time.time_ns()}")
    t0 = time.time()
    res = mq.run_full(args, spec["seed"], spec["beta"], address, job,
                      "yellowfin" if spec["tuner"] == "yellowfin" else None)
    metric = res["metric"]
    diverged = not (math.isfinite(metric) and math.isfinite(res["losses_tail"]))
    rec = {k: spec[k] for k in ("task", "optimizer", "lr", "base_lr", "lr_mult", "tuner", "beta",
                                "start", "seed", "length", "target", "policy")}
    rec.update(metric=None if diverged or not math.isfinite(metric) else metric, diverged=diverged,
               steps_to_target=res["steps_to_target"], steps=res["steps"],
               losses_tail=res["losses_tail"] if math.isfinite(res["losses_tail"]) else None,
               history=res["history"], wall_s=round(time.time() - t0, 2), job=job)
    return rec


def load(path):
    """The records of a results file; a torn last line (an interrupted write) is skipped."""
    recs = []
    if not os.path.exists(path):
        return recs
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"suite.py: {path}:{n}: unreadable line skipped", file=sys.stderr)
    return recs


def describe(spec):
    what = "fixed" if spec["tuner"] == "fixed" else f"{spec['tuner']} from"
    return (f"{spec['task']} {spec['optimizer']} lr {spec['lr']:g} {what} {spec['beta']:g} "
            f"seed {spec['seed']}")


def main(argv=None):
    args = parse(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.jsonl")
    done = {key(r) for r in load(path)}
    specs = plan(args)
    todo = [s for s in specs if key(s) not in done]
    print(f"suite: {len(specs)} runs in the configuration, {len(specs) - len(todo)} already in "
          f"{path}, {len(todo)} to run with {args.jobs} job(s)", flush=True)
    if args.dry_run:
        for s in todo:
            print("  " + describe(s))
        return 0
    if any(s["tuner"] == "grist" for s in todo) and not os.environ.get("GRIST_ADDRESS"):
        sys.exit("suite.py: grist runs need a gristd: run through tests/quality/suite.sh "
                 "(or set GRIST_ADDRESS), or pass --no-grist")
    failed = 0
    t0 = time.time()
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:  # an interrupted write: end that line so the next record starts its own
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n")
    with open(path, "a", encoding="utf-8") as out:
        def record(i, spec, rec=None, err=None):
            nonlocal failed
            if err is not None:
                failed += 1
                print(f"  [{i}/{len(todo)}] {describe(spec)}: FAILED: {err}", file=sys.stderr,
                      flush=True)
                return
            out.write(json.dumps(rec, sort_keys=True) + "\n")
            out.flush()
            m = "diverged" if rec["diverged"] else f"{rec['metric']:.4f}"
            print(f"  [{i}/{len(todo)}] {describe(spec)}: {m}, steps to target "
                  f"{rec['steps_to_target']}, {rec['wall_s']:.1f} s", flush=True)

        if args.jobs <= 1:
            for i, s in enumerate(todo, 1):
                try:
                    record(i, s, run_spec(s))
                except Exception as e:  # noqa: BLE001  (one failed run must not stop the suite)
                    record(i, s, err=f"{type(e).__name__}: {e}")
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
                futs = {pool.submit(run_spec, s): s for s in todo}
                for i, f in enumerate(as_completed(futs), 1):
                    try:
                        record(i, futs[f], f.result())
                    except Exception as e:  # noqa: BLE001
                        record(i, futs[f], err=f"{type(e).__name__}: {e}")
    print(f"suite: {len(todo) - failed} runs written to {path}, {failed} failed, "
          f"{time.time() - t0:.0f} s", flush=True)
    if not args.no_verdict:
        import suite_verdict
        text = suite_verdict.render(load(path))
        with open(os.path.join(args.out, "verdict.md"), "w", encoding="utf-8") as f:
            f.write(text)
        print()
        print(text, end="")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
