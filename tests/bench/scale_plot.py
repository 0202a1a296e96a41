#!/usr/bin/python3
"""Plot bench-daemon --scale's "#result scale_{cpu,p50,p99}_JxW_gG_mM=V" lines.

Usage: scale_plot.py BENCH_OUTPUT OUT.svg   (report.py calls plot() itself)

Four panels, one per axis the benchmark moves (ranks per job, jobs, groups,
m), each from the same base cell (1 job x 8 ranks, 8 groups, m 1024): gristd's
CPU per worker-step (left axis) and the p99 push latency (right axis).
"""
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

PAT = re.compile(r"^scale_(cpu|p50|p99)_(\d+)x(\d+)_g(\d+)_m(\d+)$")
KIND = {"cpu": 0, "p50": 1, "p99": 2}


def cells_of(results):
    """{"scale_cpu_1x8_g8_m1024": v, ...} -> {(jobs, ranks, groups, m): [cpu, p50, p99]}"""
    cells = {}
    for k, v in results.items():
        m = PAT.match(k)
        if m:
            key = tuple(int(x) for x in m.groups()[1:])
            cells.setdefault(key, [float("nan")] * 3)[KIND[m.group(1)]] = v
    return cells


def plot(cells, out):
    # each panel moves one coordinate of the cell (jobs, ranks, groups, m);
    # every selector also picks the base cell (1, 8, 8, 1024)
    axes = [("ranks per job (1 job, 8 groups, m 1024)", 1, lambda c: c[0] == 1 and c[2:] == (8, 1024)),
            ("jobs of 8 ranks (8 groups, m 1024)", 0, lambda c: c[1:] == (8, 8, 1024)),
            ("groups (1 job x 8 ranks, m 1024)", 2, lambda c: c[:2] == (1, 8) and c[3] == 1024),
            ("m (1 job x 8 ranks, 8 groups)", 3, lambda c: c[:3] == (1, 8, 8))]
    fig, panels = plt.subplots(1, 4, figsize=(14, 3.4))
    for ax, (title, k, sel) in zip(panels, axes):
        pts = sorted((c[k], v) for c, v in cells.items() if sel(c))
        xs = [x for x, _ in pts]
        ax.plot(xs, [v[0] for _, v in pts], "o-", color="tab:blue")
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.set_xlabel(title, fontsize=8)
        ax.set_ylabel("gristd CPU us / worker-step", color="tab:blue", fontsize=8)
        ax.tick_params(labelsize=7)
        ax2 = ax.twinx()
        ax2.plot(xs, [v[2] for _, v in pts], "s--", color="tab:red")
        ax2.set_ylim(bottom=0)
        ax2.set_ylabel("push p99 ms", color="tab:red", fontsize=8)
        ax2.tick_params(labelsize=7)
    fig.suptitle("gristd cost across scale (bench-daemon --scale, 10 steps/s per stream)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out)


def main():
    results = {}
    with open(sys.argv[1]) as f:
        for line in f:
            m = re.match(r"#result (\S+)=(\S+)", line)
            if m:
                results[m.group(1)] = float(m.group(2))
    cells = cells_of(results)
    if not cells:
        sys.exit("scale_plot: no '#result scale_' lines in " + sys.argv[1])
    plot(cells, sys.argv[2])


if __name__ == "__main__":
    main()
