"""grist with its learning-rate factor on, against the best cell of the
(lr x beta) grid, from the wide suite's raw JSON lines (never by hand).

    /usr/bin/python3 tests/quality/lr_grid_verdict.py DIR [--policy lr_coupling=greedy]

For each (task, optimizer, start beta) the grid is every fixed-beta run of
the suite at every lr multiplier (0.3, 1, 3 of the default lr): its best
cell is the (lr, beta) with the best mean metric. For each lr multiplier the
table shows grist at that lr with the given policy (the lr factor on), and
grist at that lr at gristd's defaults (factor off), each with "G" when it is
within one standard deviation (of the best cell's runs) of the best cell or
better. A tuner that moves the lr should reach the best cell from a poor lr.
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from defaults import LOWER_IS_BETTER  # noqa: E402


def load(d):
    path = d if d.endswith(".jsonl") else os.path.join(d, "results.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def stat(task, vals):
    if not vals or any(v is None for v in vals):
        return None
    sign = -1.0 if task in LOWER_IS_BETTER else 1.0
    m = statistics.mean(vals)
    return sign * m, m, statistics.pstdev(vals)


def policy_key(p):
    return json.dumps(p or {}, sort_keys=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--policy", default="lr_coupling=greedy")
    a = ap.parse_args()
    k, v = a.policy.split("=", 1)
    want = {k: v}
    recs = load(a.dir)
    fixed, grist = {}, {}
    for r in recs:
        if r["tuner"] == "fixed":
            fixed.setdefault((r["task"], r["optimizer"], r["lr_mult"], r["beta"]), []).append(r["metric"])
        elif r["tuner"] == "grist":
            raw = r.get("policy") or {}
            if isinstance(raw, list):  # suite.py stores the --policy strings, KEY=VALUE
                raw = dict(x.split("=", 1) for x in raw)
            pol = {kk: str(vv) for kk, vv in raw.items()}
            tag = "on" if pol == want else ("off" if not pol else None)
            if tag:
                grist.setdefault((r["task"], r["optimizer"], r["start"], r["lr_mult"], tag), []).append(r["metric"])
    cells = sorted({(t, o, s) for (t, o, s, _, tag) in grist if tag == "on"})
    print(f"| task | optimizer | start | best (lr x beta) cell | lr | grist {a.policy} | G | grist defaults | G |")
    print("|---|---|---|---|---|---|---|---|---|")
    n = g_on = g_off = 0
    for t, o, s in cells:
        best = None
        for (ft, fo, fm, fb), vals in fixed.items():
            if (ft, fo) != (t, o):
                continue
            st = stat(t, vals)
            if st and (best is None or st[0] > best[0][0]):
                best = (st, fm, fb)
        if best is None:
            continue
        (bscore, bmean, bstd), bm, bb = best
        for m in sorted({mm for (tt, oo, ss, mm, tag) in grist if (tt, oo, ss) == (t, o, s)}):
            row = []
            for tag in ("on", "off"):
                st = stat(t, grist.get((t, o, s, m, tag), []))
                if st is None:
                    row += ["-", ""]
                    continue
                ok = st[0] >= bscore - bstd
                row += [f"{st[1]:.4f} ± {st[2]:.4f}", "G" if ok else ""]
                if tag == "on":
                    g_on += ok
                else:
                    g_off += ok
            n += 1
            print(f"| {t} | {o} | {s} | lr x{bm} beta {bb}: {bmean:.4f} ± {bstd:.4f} | x{m} | "
                  + " | ".join(row) + " |")
    print(f"\nG (within one std of the best lr x beta cell): {a.policy}: {g_on}/{n}; defaults: {g_off}/{n}")


if __name__ == "__main__":
    main()
