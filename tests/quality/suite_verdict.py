"""The wide suite's verdict, computed from its raw JSON lines (never by hand).

    /usr/bin/python3 tests/quality/suite_verdict.py DIR|DIR/results.jsonl [--out FILE]

A cell is (task, optimizer, lr, run length, start beta). For each cell it
prints, over the seeds present:
  best fixed beta  the fixed beta of the sweep at that (task, optimizer, lr)
                   with the best mean metric: beta: mean ± std
  fixed at start   the start beta held fixed
  grist            grist started from the start beta: mean ± std
  M   grist within one standard deviation (of the best fixed beta's runs) of
      the best fixed beta, or better
  W   grist worse than its start held fixed by more than one standard
      deviation (of the start's fixed runs)
  moved            grist runs that pushed a momentum / beta1 other than the
                   start (from the pushed-values trace), of all grist runs
  yellowfin        YellowFin from the cell's lr and start (SGD family), with
                   M when it too is within one std of the best fixed beta
  steps to target  median steps until the moving-average training loss fell
                   below the task's target (runs that reached it / runs), for
                   the best fixed beta, grist and YellowFin
then summary counts (cells with M, cells with W; YellowFin's M) per start
beta, per task x optimizer and overall, and steps to target per start.
"Better" is higher for accuracy (mlp, cnn) and lower for cross-entropy and
MSE (char, tfm, reg). A run that diverged (non-finite metric or loss) counts
as the worst possible result: an entry with one is shown as "diverged k/n"
and can be neither the best fixed beta nor a match. Standard deviations are
population ones (statistics.pstdev), as in momentum.py; with one seed they
are 0, so M then needs grist at least as good as the best fixed beta.
"""
import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from defaults import LOWER_IS_BETTER, OPTIMIZERS, TASKS  # noqa: E402


class Entry:
    """The runs of one configuration (a fixed beta, grist or YellowFin in a cell)."""

    def __init__(self, task, recs):
        self.recs = sorted(recs, key=lambda r: r["seed"])
        self.n = len(self.recs)
        self.sign = -1.0 if task in LOWER_IS_BETTER else 1.0
        vals = [r["metric"] for r in self.recs]
        self.ndiv = sum(1 for v in vals if v is None or not math.isfinite(v))
        if self.ndiv:
            self.mean, self.std = None, None
            self.score = -math.inf
        else:
            self.mean = statistics.mean(vals)
            self.std = statistics.pstdev(vals)
            self.score = self.sign * self.mean
        hits = [r["steps_to_target"] for r in self.recs if r.get("steps_to_target") is not None]
        self.hits = len(hits)
        self.hit_median = statistics.median(hits) if hits else None

    def text(self):
        if self.ndiv:
            return f"diverged {self.ndiv}/{self.n}"
        return f"{self.mean:.4f} ± {self.std:.4f}"

    def steps(self):
        h = "-" if self.hit_median is None else f"{self.hit_median:g}"
        return f"{h} ({self.hits}/{self.n})"


def matches(e, best):
    """e within one std of the best fixed entry, or better (M)."""
    if e is None or e.ndiv:
        return False
    if best is None or best.ndiv:
        return True
    return e.score - best.score >= -best.std


def worse(e, start):
    """e worse than the start held fixed by more than the start's std (W)."""
    if e is None or start is None or start.ndiv:
        return False
    if e.ndiv:
        return True
    return e.score < start.score - start.std


def moved(rec):
    start = rec["beta"]
    return any(abs(m - start) > 1e-9 for _, ms, _ in rec.get("history") or [] for m in ms)


def fmt_lr(lr, mult):
    return f"{lr:g} (x{mult:g})"


def order(task, opt):
    return (TASKS.index(task) if task in TASKS else 99,
            OPTIMIZERS.index(opt) if opt in OPTIMIZERS else 99)


def render(recs):
    out = []
    p = out.append
    fixed, tuned, mults = {}, {}, {}
    for r in recs:
        sweep = (r["task"], r["optimizer"], float(r["lr"]), r["length"])
        mults[sweep] = r.get("lr_mult", 1.0)
        if r["tuner"] == "fixed":
            fixed.setdefault(sweep, {}).setdefault(float(r["beta"]), []).append(r)
        else:
            label = r["tuner"]
            if r["tuner"] == "grist" and r.get("policy"):
                label += " [" + " ".join(r["policy"]) + "]"
            cell = sweep + (float(r["beta"]),)
            tuned.setdefault(cell, {}).setdefault(label, []).append(r)
    labels = sorted({lab for v in tuned.values() for lab in v if lab.startswith("grist")})
    if not labels and tuned:
        labels = ["grist"]  # YellowFin runs only: the same tables, grist's columns empty
    p(f"# Quality suite verdict (tests/quality/suite_verdict.py): {len(recs)} runs\n")
    p("M = grist within one std (of the best fixed beta's runs) of the best fixed beta, or "
      "better; W = grist worse than its start held fixed by more than one std (of the start's "
      "runs); moved = grist runs that pushed another beta than the start; YellowFin's M is "
      "the same test for YellowFin. Lower is better for char, tfm, reg; higher for mlp, cnn.\n")
    if not tuned:
        p("(no grist or YellowFin runs in the results)\n")
    for label in labels:
        table(p, label, tuned, fixed, mults)
    return "\n".join(out) + "\n"


def family_name(fam):
    return "SGD/Nesterov" if fam == "sgd" else "Adam/AdamW"


def table(p, label, tuned, fixed, mults):
    """The per-cell table of one grist label, then its summaries."""
    summary = {}  # group -> [cells, M, W, YellowFin cells, YellowFin M]
    steps = {}  # (family, start) -> {"grist": [...], "start": [...]}

    def count(group, m, w, has_yf, yfm):
        s = summary.setdefault(group, [0, 0, 0, 0, 0])
        for i, v in enumerate((1, m, w, has_yf, yfm)):
            s[i] += int(bool(v))

    p(f"## {label}\n")
    p("| task | optimizer | lr | length | start | seeds | best fixed beta | fixed at start | "
      f"{label} | M | W | moved | yellowfin | steps to target: best fixed / {label} / yellowfin |")
    p("|---" * 14 + "|")
    for cell in sorted(tuned, key=lambda c: (order(c[0], c[1]), c[2], c[3], c[4])):
        task, opt, lr, length, start = cell
        runs = tuned[cell]
        g = Entry(task, runs[label]) if label in runs else None
        yf = Entry(task, runs["yellowfin"]) if "yellowfin" in runs else None
        if g is None and yf is None:
            continue
        sweep = {b: Entry(task, rs) for b, rs in fixed.get(cell[:4], {}).items()}
        best_b = max(sweep, key=lambda b: (sweep[b].score, -b)) if sweep else None
        best = sweep.get(best_b)
        st = sweep.get(start)
        m = matches(g, best) if best is not None and g is not None else None
        w = worse(g, st) if st is not None and g is not None else None
        yfm = matches(yf, best) if yf is not None and best is not None else False
        fam = "sgd" if opt in ("sgd", "nesterov") else "adam"
        if best is not None and g is not None:  # a cell of this label's runs only
            for grp in (("start", fam, start), ("task", task, opt), ("all",)):
                count(grp, m, w, yf is not None, yfm)
        if g is not None:
            sg = steps.setdefault((fam, start), {"grist": [], "start": []})
            sg["grist"] += [r.get("steps_to_target") for r in g.recs]
            if st is not None:
                sg["start"] += [r.get("steps_to_target") for r in st.recs]
        cols = [task, opt, fmt_lr(lr, mults[cell[:4]]), length, f"{start:g}",
                str(g.n if g is not None else yf.n),
                f"{best_b:g}: {best.text()}" if best is not None else "-",
                st.text() if st is not None else "-",
                g.text() if g is not None else "-",
                "-" if m is None else ("M" if m else ""),
                "-" if w is None else ("W" if w else ""),
                f"{sum(moved(r) for r in g.recs)}/{g.n}" if g is not None else "-",
                (yf.text() + (" M" if yfm else "")) if yf is not None else "",
                " / ".join([best.steps() if best is not None else "-",
                            g.steps() if g is not None else "-"]
                           + ([yf.steps()] if yf is not None else []))]
        p("| " + " | ".join(cols) + " |")
    p("")
    if summary:
        p(f"### Summary ({label})\n")
        p("| group | cells | M | fraction M | W | YellowFin cells | YellowFin M |")
        p("|---|---|---|---|---|---|---|")

        def row(name, s):
            frac = f"{s[1] / s[0]:.2f}" if s[0] else "-"
            yfm = f"{s[4]}/{s[3]}" if s[3] else "-"
            p(f"| {name} | {s[0]} | {s[1]} | {frac} | {s[2]} | {s[3] or '-'} | {yfm} |")

        for grp in sorted((k for k in summary if k[0] == "start"), key=lambda k: (k[1] != "sgd", k[2])):
            row(f"start {grp[2]:g} ({family_name(grp[1])})", summary[grp])
        for grp in sorted((k for k in summary if k[0] == "task"), key=lambda k: order(k[1], k[2])):
            row(f"{grp[1]} {grp[2]}", summary[grp])
        row("**overall**", summary[("all",)])
        p("")
    if steps:
        p(f"### Steps to target per start ({label}; all cells; median over the runs that reached it)\n")
        p("| start | grist: reached | grist: median steps | start fixed: reached | "
          "start fixed: median steps |")
        p("|---|---|---|---|---|")

        def med(xs):
            ok = [x for x in xs if x is not None]
            return f"{len(ok)}/{len(xs)}", f"{statistics.median(ok):g}" if ok else "-"

        for (fam, start), sg in sorted(steps.items(), key=lambda kv: (kv[0][0] != "sgd", kv[0][1])):
            g1, g2 = med(sg["grist"])
            s1, s2 = med(sg["start"]) if sg["start"] else ("-", "-")
            p(f"| {start:g} ({family_name(fam)}) | {g1} | {g2} | {s1} | {s2} |")
        p("")


def main():
    ap = argparse.ArgumentParser(description="markdown verdict tables of the wide quality suite")
    ap.add_argument("results", help="the suite's --out directory, or its results.jsonl")
    ap.add_argument("--out", help="also write the tables to this file")
    a = ap.parse_args()
    path = a.results
    if os.path.isdir(path):
        path = os.path.join(path, "results.jsonl")
    import suite
    text = render(suite.load(path))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
