"""The performance report: runs every benchmark once, in sequence, and
writes docs/PERFORMANCE.md (issue P6). Every figure in the report comes
from this run.

    sh tests/bench/report.sh [--quick]

Benchmarks print markdown; lines "#result key=value" carry the figures the
targets table is judged on and are not copied into the report.
"""
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("GRIST_BUILD", os.path.join(ROOT, "build"))


def run(cmd, env=None):
    t0 = time.monotonic()
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stdout)
        raise SystemExit(f"report: {' '.join(cmd)} failed ({p.returncode})")
    results, lines = {}, []
    for line in p.stdout.splitlines():
        m = re.match(r"#result (\S+)=(\S+)", line)
        if m:
            results[m.group(1)] = float(m.group(2))
        elif not re.match(r"(gristd \(pid|health check:|gristd stopped)", line):
            lines.append(line)
    return "\n".join(lines).strip() + "\n", results, dt


def demote(md):
    """Headings one level down, so that each benchmark sits under its section."""
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", md, flags=re.M)


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) / 2**20
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE).stdout.strip()
    return f"{os.cpu_count()} vCPU {cpu}, {mem:.0f} GiB, Linux {os.uname().release}, commit {commit}"


def profile_daemon(quick):
    """A flat CPU profile of gristd under the daemon benchmark's load, or
    None without perf (or without permission to sample)."""
    perf = shutil.which("perf")
    if not perf:
        return None
    data = os.path.join(tempfile.mkdtemp(), "gristd.perf")
    bench = subprocess.Popen([os.path.join(BUILD, "tests", "bench-daemon"), "--quick"], cwd=ROOT,
                             env=dict(os.environ, GRISTD=os.path.join(BUILD, "daemon", "gristd")),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid = None
    for _ in range(200):  # gristd is the benchmark's child
        try:
            kids = open(f"/proc/{bench.pid}/task/{bench.pid}/children").read().split()
        except OSError:
            kids = []
        for k in kids:
            try:
                if "gristd" in open(f"/proc/{k}/cmdline").read():
                    pid = k
            except OSError:
                pass
        if pid or bench.poll() is not None:
            break
        time.sleep(0.05)
    if not pid:
        bench.wait()
        return None
    rec = subprocess.Popen([perf, "record", "-q", "-e", "cpu-clock", "-F", "499", "-p", pid,
                            "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait()
    rec.send_signal(2)  # SIGINT: perf writes its data and exits
    rec.wait(timeout=60)
    if not os.path.exists(data):
        return None
    rep = subprocess.run([perf, "report", "-i", data, "--no-children", "--sort", "dso,symbol",
                          "--stdio", "-q"], capture_output=True, text=True).stdout
    rows = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3)))
    if not rows:
        return None
    rows.sort(reverse=True)
    out = ["| share | object | symbol |", "|---|---|---|"]
    out += [f"| {pct:.1f}% | {dso} | `{sym.split()[0][:60] if sym.split() else sym}` |" for pct, dso, sym in rows[:15]]
    out.append(f"\n(the top 15 of {len(rows)} symbols; {sum(r[0] for r in rows[:15]):.0f}% of "
               "the samples)")
    return "\n".join(out) + "\n"


def main():
    quick = "--quick" in sys.argv
    q = ["--quick"] if quick else []
    t_start = time.monotonic()
    sections, R, times = [], {}, {}

    md, r, dt = run([os.path.join(BUILD, "tests", "bench-kernels")] + q,
                    env={"OPENBLAS_NUM_THREADS": "1"})
    R.update(r)
    times["kernels"] = dt
    sections.append(("Machine limits and kernels",
                     "Command: `build/tests/bench-kernels" + (" --quick" if quick else "") +
                     "` (one thread unless a row says otherwise; medians of repeated runs, "
                     "min-max where shown).", md))

    t0 = time.monotonic()
    np_out = subprocess.run(["/usr/bin/python3", "tests/bench/numpy_step.py",
                             "200" if quick else "1000"], cwd=ROOT, text=True, check=True,
                            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
                            stdout=subprocess.PIPE).stdout.split()
    times["numpy"] = time.monotonic() - t0
    npmed, npmin, npmax = (float(x) for x in np_out[1:4])
    R["numpy_step_us"] = npmed
    numpy = ("| implementation | us/step median | min | max | speed-up over NumPy |\n|---|---|---|---|---|\n"
             f"| NumPy | {npmed:.1f} | {npmin:.1f} | {npmax:.1f} | 1.0x |\n"
             f"| grist cpu backend | {R['step_us_cpu']:.1f} | | | {npmed / R['step_us_cpu']:.1f}x |\n")
    sections.append(("Kernels against NumPy", "Command: `OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "
                     "tests/bench/numpy_step.py 1000`: the same per-step math (K 32, m 1024, L 16, "
                     "m_cov 256) in NumPy on one thread, against the cpu row of the per-step "
                     "table above.", numpy))

    md, r, dt = run([os.path.join(BUILD, "tests", "bench-daemon")] + q,
                    env={"GRISTD": os.path.join(BUILD, "daemon", "gristd")})
    R.update(r)
    times["daemon"] = dt
    sections.append(("Daemon", "Command: `GRISTD=build/daemon/gristd build/tests/bench-daemon"
                     + (" --quick" if quick else "") + "` (gristd with its defaults: 2 compute "
                     "threads; the load generator runs on the same machine, one thread per "
                     "stream).", md))

    if not quick:
        import scale_plot  # next to this file (matplotlib: only the full report plots)
        md, r, dt = run([os.path.join(BUILD, "tests", "bench-daemon"), "--scale"],
                        env={"GRISTD": os.path.join(BUILD, "daemon", "gristd")})
        R.update(r)
        times["daemon"] += dt
        os.makedirs(os.path.join(ROOT, "docs", "perf"), exist_ok=True)
        scale_plot.plot(scale_plot.cells_of(r), os.path.join(ROOT, "docs", "perf", "scale.svg"))
        sections.append(("Daemon cost across scale", "Command: `GRISTD=build/daemon/gristd "
                         "build/tests/bench-daemon --scale` (gristd's defaults; the CPU column "
                         "with gristd's default policy, the latency columns with a selection "
                         "every step, as in the push latency table). Plot: "
                         "[perf/scale.svg](perf/scale.svg) (`tests/bench/scale_plot.py`).", md))

    prof = profile_daemon(quick)
    if prof:
        sections.append(("Where gristd's CPU goes", "Command: `perf record -e cpu-clock -F 499` "
                         "around gristd during `bench-daemon --quick` (its tables discarded), then "
                         "`perf report --no-children --sort dso,symbol`: the share of gristd's "
                         "samples, all its threads together (loop, pump, compute, families, "
                         "gRPC's own).", prof))

    md, r, dt = run(["sh", "tests/bench/client.sh"])
    R.update(r)
    times["client"] = dt
    sections.append(("Client", "Command: `sh tests/bench/client.sh` (MLPs on CPU, batch 64, "
                     "SGD and Adam, one torch thread).", md))

    # targets
    cov = [v for k, v in R.items() if k.startswith("cov_ratio_")]
    rows = []
    if cov:
        rows.append(("kernel covariance path >= 70% of bare dsyrk on the same shapes (cpu, "
                     "batched b >= 16)", f"{min(cov):.2f}-{max(cov):.2f} of dsyrk",
                     "met" if min(cov) >= 0.70 else "not met"))
    if "step_frac_triad" in R:
        rows.append(("kernel per-step update (memory bound: V and ring traffic) against the "
                     "triad bandwidth", f"{100 * R['step_frac_triad']:.0f}% of triad "
                     f"({R['step_us_cpu']:.1f} us/step)",
                     "met" if R["step_frac_triad"] >= 0.70 else "not met"))
    if "cluster_streams_w8" in R:
        n = int(R["cluster_streams_w8"])
        rows.append((">= 500 worker streams at 10 steps/s (8 groups, m 1024), p99 push <= 10 ms, "
                     "no drops", f"{n} streams (W = 8)", "met" if n >= 500 else "not met"))
    if "rss_ratio" in R and "heap_ratio" in R:
        worst = max(R["rss_ratio"], R["rss_ratio_job8"], R["heap_ratio"], R["heap_ratio_job8"])
        rows.append(("memory per group <= 1.1x what its statistics need (grist_stats_footprint)",
                     f"RSS {R['rss_ratio']:.2f} (two job shapes), {R['rss_ratio_job8']:.2f} "
                     f"(jobs of 8 groups); heap in use {R['heap_ratio']:.2f}, "
                     f"{R['heap_ratio_job8']:.2f}", "met" if worst <= 1.1 else "not met"))
    over = [(k, v) for k, v in R.items() if k.startswith("client_overhead_")]
    if over:
        worst = max(v for _, v in over)
        rows.append(("client overhead <= 2% of step time, models >= 1M parameters",
                     ", ".join(f"{k[16:].replace('_', ' ')}: {v:+.1f}%" for k, v in over),
                     "met" if worst <= 2.0 else "not met"))

    total = time.monotonic() - t_start
    out = [f"# Performance\n",
           f"Generated by `sh tests/bench/report.sh{' --quick' if quick else ''}` on "
           f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {machine()}. The whole run took "
           f"{total / 60:.1f} min (kernels {times['kernels']:.0f} s, NumPy {times['numpy']:.0f} s, "
           f"daemon {times['daemon']:.0f} s, client {times['client']:.0f} s). Every figure below "
           f"comes from that run; nothing is edited by hand except the analysis section at the "
           f"end, which `report.py` copies from `docs/PERFORMANCE.analysis.md`.\n",
           "## Targets (issue P6)\n",
           "| target | measured | verdict |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out.append("\nGPU: no NVIDIA device was available to this run; the CUDA backend is built and "
               "its benchmark rows appear above only when a device is present "
               "(`sh tests/gpu/run.sh` is the prepared device script).\n"
               if not os.path.exists("/dev/nvidia0") else
               "\nGPU: the cuda rows above were measured on this machine's device.\n")
    for title, how, md in sections:
        out += [f"## {title}\n", how + "\n", demote(md)]
    analysis = os.path.join(ROOT, "docs", "PERFORMANCE.analysis.md")
    if os.path.exists(analysis):
        out.append(open(analysis).read())
    with open(os.path.join(ROOT, "docs", "PERFORMANCE.md"), "w") as f:
        f.write("\n".join(out))
    print(f"wrote docs/PERFORMANCE.md in {total / 60:.1f} min")


if __name__ == "__main__":
    main()
