"""P5's acceptance, computed from the raw quality tables (never by hand).

    /usr/bin/python3 tests/quality/verdict.py [docs/quality/raw]

Reads every table that momentum.py printed into the raw section files (a
title line "TASK, OPT lr LR, ..." then "| fixed B | mean ± std | ..." rows
and a "| grist (from 0.9) | ..." row) and the one-line grist results of the
option sections ("TASK OPT LABEL: | grist (from 0.9) | mean ± std | ...").
For each task x optimizer x lr with a fixed-beta sweep it prints:
  M  grist within one standard deviation of the best fixed beta (or better)
  B  grist better than the median fixed beta
  "grist = fixed 0.9": the same mean and std to four digits as its starting
     value held fixed, i.e. grist (almost certainly) never moved
and, for each option label, the same two marks against the default-lr sweep.
Higher is better for accuracy, lower for cross-entropy (the char task).
Tables whose title says the tuners start from a beta other than 0.9 are
skipped (those studies, and the wide suite, have their own verdict:
suite_verdict.py for the suite).
"""
import os
import re
import statistics
import sys

from defaults import DEFAULT_LR

TASKS = {"digits MLP": "mlp", "digits CNN": "cnn", "GPL-3 char GRU": "char"}
TITLE = re.compile(r"^(digits MLP|digits CNN|GPL-3 char GRU), (sgd|adam) lr ([0-9.e-]+), .*?(\d+) seeds(.*?);")
ROW = re.compile(r"^\| (fixed [0-9.]+|grist \(from 0\.9\)) \| ([0-9.]+) ± ([0-9.]+) \|")
LINE = re.compile(r"^(mlp|cnn|char) (sgd|adam) ([^:]+): \| grist \(from 0\.9\) \| ([0-9.]+) ± ([0-9.]+) \|")
# momentum.py's titles name the start of the tuners ("tuners start from beta B");
# only tables starting from 0.9 (the older ones say nothing: 0.9) are read here
START = re.compile(r"tuners start from beta ([0-9.]+)")
ORDER = [(t, o) for t in ("mlp", "cnn", "char") for o in ("sgd", "adam")]


def parse(raw):
    sweeps = {}   # (task, opt, lr, extra) -> {"fixed": {beta: (m, s)}, "grist": (m, s), "seeds": n}
    options = {}  # label -> {(task, opt): (m, s)}
    for name in sorted(os.listdir(raw)):
        if not name.endswith(".md"):
            continue
        cur = None
        for line in open(os.path.join(raw, name), encoding="utf-8"):
            t = TITLE.match(line)
            if t:
                cur = None
                start = START.search(line)
                if start and float(start.group(1)) != 0.9:
                    continue  # a table whose tuners start elsewhere (suite-style studies)
                key = (TASKS[t.group(1)], t.group(2), float(t.group(3)), t.group(5).strip(", "))
                cur = sweeps[key] = {"fixed": {}, "grist": None, "seeds": int(t.group(4))}
                continue
            r = ROW.match(line)
            if r and cur is not None:
                val = (float(r.group(2)), float(r.group(3)))
                if r.group(1).startswith("fixed"):
                    cur["fixed"][float(r.group(1).split()[1])] = val
                else:
                    cur["grist"] = val
                continue
            o = LINE.match(line)
            if o:
                options.setdefault(o.group(3).strip(), {})[(o.group(1), o.group(2))] = (
                    float(o.group(4)), float(o.group(5)))
    return sweeps, options


def marks(task, fixed, g):
    lower = task == "char"
    sign = -1.0 if lower else 1.0
    best_b = max(fixed, key=lambda b: sign * fixed[b][0])
    bm, bs = fixed[best_b]
    med = statistics.median(v[0] for v in fixed.values())
    match = sign * (g[0] - bm) >= -bs
    beat = sign * (g[0] - med) > 0
    return match, beat, best_b, bm, bs, med


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "quality", "raw")
    sweeps, options = parse(raw)
    print("## Verdict (tests/quality/verdict.py): M = within one std of the best fixed beta or "
          "better, B = better than the median fixed beta\n")
    print("| task | optimizer | lr | seeds | best fixed beta | median fixed | grist | M | B | grist = fixed 0.9 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    default = {}
    for key in sorted(sweeps, key=lambda k: (ORDER.index(k[:2]), k[2], k[3])):
        task, opt, lr, extra = key
        sw = sweeps[key]
        if not sw["fixed"] or sw["grist"] is None:
            continue
        m, b, bb, bm, bs, med = marks(task, sw["fixed"], sw["grist"])
        if lr == DEFAULT_LR[(task, opt)] and not extra:
            default[(task, opt)] = sw["fixed"]
        g = sw["grist"]
        print(f"| {task} | {opt} | {lr:g}{' ' + extra if extra else ''} | {sw['seeds']} | "
              f"{bb:g}: {bm:.4f} ± {bs:.4f} | {med:.4f} | {g[0]:.4f} ± {g[1]:.4f} | "
              f"{'M' if m else '-'} | {'B' if b else '-'} | "
              f"{'yes (no move)' if sw['fixed'].get(0.9) == g else 'no'} |")
    for key in sorted(sweeps, key=lambda k: (ORDER.index(k[:2]), k[2], k[3])):
        task, opt, lr, extra = key
        if lr == DEFAULT_LR[(task, opt)] and not extra and sweeps[key]["grist"] is not None:
            options.setdefault("defaults", {})[(task, opt)] = sweeps[key]["grist"]
    if default.keys() != set(ORDER):
        print(f"\n(default-lr sweeps found for {sorted(default)} only)")
    print("\n### Each grist policy against the fixed sweeps (at the default lr; "
          "a label LABEL@lr=X: at lr X)\n")
    print("| policy | " + " | ".join(f"{t} {o}" for t, o in ORDER) + " | M | B |")
    print("|---" * (len(ORDER) + 3) + "|")
    def natural(label):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]

    for label in ["defaults"] + sorted((k for k in options if k != "defaults"), key=natural):
        cells, nm, nb, n = [], 0, 0, 0
        ref = default
        if "@lr=" in label:  # a run at another lr: against the sweep at that lr
            lr = float(label.split("@lr=")[1])
            ref = {k[:2]: v["fixed"] for k, v in sweeps.items() if k[2] == lr and not k[3]}
        for to in ORDER:
            g = options.get(label, {}).get(to)
            if g is None or to not in ref:
                cells.append("")
                continue
            m, b = marks(to[0], ref[to], g)[:2]
            nm, nb, n = nm + m, nb + b, n + 1
            cells.append(f"{g[0]:.4f} {'M' if m else ''}{'B' if b else ''}".strip())
        print(f"| {label} | " + " | ".join(cells) + f" | {nm}/{n} | {nb}/{n} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
