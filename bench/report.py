#!/usr/bin/python3
"""Side-by-side table of the tserve and prometheus-cpp micro benchmarks.

Usage: report.py RESULTS_DIR   (RESULTS_DIR/{tserve,prometheus-cpp}/*.json, written by
bench/run.sh with Google Benchmark's --benchmark_out_format=json and aggregates only).

Prints the table, writes it as Markdown to RESULTS_DIR/table.md, and merges each side's
runs into RESULTS_DIR/metrics_bench.json and RESULTS_DIR/prometheus_cpp_bench.json.
Figures are medians of the repetitions: CPU time per operation (ns) for the recording
benchmarks (per thread for threads:2), ns per series for the scrape benchmarks.
"""

import glob
import json
import os
import sys

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

# Goals from issue 2: (limit, what is compared).
GOALS = {
    "BM_CounterInc/threads:1": 5.0,
    "BM_HistogramObserve/threads:1": 25.0,
    "BM_RenderText/100000": 100.0,
    "BM_Render/100000": 100.0,
}


def load(side_dir):
    """{run_name: median entry}, in file order, plus the merged raw document."""
    rows = {}
    merged = {"context": None, "benchmarks": []}
    for path in sorted(glob.glob(os.path.join(side_dir, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        merged["context"] = merged["context"] or doc.get("context")
        merged["benchmarks"].extend(doc.get("benchmarks", []))
        for b in doc.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median":
                rows[b["run_name"]] = b
            elif b.get("run_type") == "iteration" and b["run_name"] not in rows:
                rows[b["run_name"]] = b  # single repetition: no aggregates
    return rows, merged


def figure(entry):
    """(value in ns, unit label) for one benchmark entry."""
    if entry is None:
        return None, ""
    if "per_series" in entry:
        return entry["per_series"] * 1e9, "ns/series"
    return entry["cpu_time"] * UNIT_NS[entry.get("time_unit", "ns")], "ns/op"


def concurrent(entry):
    """False when a multi-thread run's threads did not overlap (the other core was busy).

    Google Benchmark divides the summed CPU time by the total iterations, and the wall time
    per thread by the same: with N threads really in parallel, cpu_time ~ N x real_time;
    time-sliced on one core, cpu_time ~ real_time. Such a run measures no contention."""
    if entry is None or entry.get("threads", 1) < 2:
        return True
    return entry["cpu_time"] > 1.5 * entry["real_time"]


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS_DIR")
    out_dir = sys.argv[1]
    ts, ts_raw = load(os.path.join(out_dir, "tserve"))
    pc, pc_raw = load(os.path.join(out_dir, "prometheus-cpp"))
    for name, raw in (("metrics_bench.json", ts_raw), ("prometheus_cpp_bench.json", pc_raw)):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(raw, f, indent=1)

    names = list(ts) + [n for n in pc if n not in ts]
    header = ["benchmark", "unit", "tserve", "prometheus-cpp", "prom/tserve", "KiB out",
              "goal / note"]
    rows = []
    for name in names:
        t, unit = figure(ts.get(name))
        p, punit = figure(pc.get(name))
        unit = unit or punit
        ratio = f"{p / t:.1f}x" if t and p else "-"
        entry = ts.get(name) or pc.get(name)
        kib = entry.get("bytes", 0) / 1024 if entry else 0
        goal = ""
        if name in GOALS:
            limit = GOALS[name]
            if t is None:
                goal = f"<= {limit:g}: not run"
            elif t <= limit:
                goal = f"<= {limit:g}: met"
            else:
                goal = f"<= {limit:g}: MISSED by {t / limit:.1f}x"
        serial = [side for side, e in (("tserve", ts.get(name)), ("prom", pc.get(name)))
                  if not concurrent(e)]
        if serial:
            goal = (goal + "; " if goal else "") + "threads not concurrent: " + ",".join(serial)
        rows.append([name, unit, fmt(t), fmt(p), ratio, f"{kib:,.0f}" if kib else "", goal])

    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    right = {2, 3, 4, 5}

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    print(line(header))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    ctx = ts_raw.get("context") or {}
    print(f"\n{ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz; "
          f"load average at the start {ctx.get('load_avg', '?')}; medians of the repetitions.")

    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write("| " + " | ".join(header) + " |\n")
        f.write("|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|\n")
        for r in rows:
            f.write("| " + " | ".join(c if c else " " for c in r) + " |\n")


if __name__ == "__main__":
    main()
