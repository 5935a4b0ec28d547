#!/usr/bin/env python3
"""Soak: tserve under the e2e suite's mixed fault load (tests/e2e/mixed_load.py) for a
bounded time, with /metrics scraped every second, noop scaled up and down and a model
registered and unregistered over and over, sampling the server's RSS, open fds and threads
every 10 s. Not part of `make test` (it takes 10 minutes).

  python3 bench/soak.py [--seconds 600] [--warmup 120] [--binary build/tserve]

Passes (exit 0) when, after the warm-up, RSS drifts less than 5% (last sample against the
first after warm-up), and fds and threads stay flat (their maximum over the last minute is
no higher than over the first minute after warm-up), every counter check held during the
run and the counters reconcile at the end. Prints the samples and a summary line.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))


def proc_sample(pid: int) -> dict:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"].strip()),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--warmup", type=float, default=120)
    ap.add_argument("--period", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--binary", default=os.environ.get("TSERVE_BINARY", "build/tserve"))
    args = ap.parse_args()
    os.environ["TSERVE_BINARY"] = str(pathlib.Path(args.binary).resolve())

    import e2e_util  # after TSERVE_BINARY is set
    from mixed_load import MAIN_MODELS, MixedLoad, model_accounting, prepare_store, server_config

    max_request = 65536
    with tempfile.TemporaryDirectory(prefix="tserve-soak-") as tmp:
        work = pathlib.Path(tmp)
        store = prepare_store(work)
        server = e2e_util.launch(work / "server", config=server_config(store, max_request))
        try:
            e2e_util.wait_healthy(server)
            samples: list[tuple[float, dict]] = []
            start = time.monotonic()

            def tick():
                s = proc_sample(server.pid)
                t = time.monotonic() - start
                samples.append((t, s))
                print(f"t={t:6.0f}s rss={s['rss_kib'] / 1024:8.1f} MiB fds={s['fds']:4d} "
                      f"threads={s['threads']:3d}", flush=True)

            tick()
            load = MixedLoad(server, connections=args.connections, max_request_size=max_request)
            load.run(seconds=args.seconds, scrape_period=1.0, on_tick=tick, tick=args.period)
            tick()
            server.assert_alive()
            text = server.metrics().text
            problems = list(load.errors[:20])
            for model in MAIN_MODELS:
                acc = model_accounting(text, model)
                if acc["requests"] != acc["successes"] + sum(acc["failures"].values()):
                    problems.append(f"{model}: requests != successes + failures: {acc}")
        finally:
            rc = server.stop()
    after = [(t, s) for t, s in samples if t >= args.warmup]
    if len(after) < 2:
        print("soak: too short for a verdict (run longer than the warm-up)")
        return 2
    first, last = after[0][1], after[-1][1]
    drift = (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"]
    minute = 60.0
    early = [s for t, s in after if t < after[0][0] + minute]
    late = [s for t, s in after if t > after[-1][0] - minute]
    fds_flat = max(s["fds"] for s in late) <= max(s["fds"] for s in early)
    threads_flat = max(s["threads"] for s in late) <= max(s["threads"] for s in early)
    outcomes = load.rec.snapshot()
    print(f"soak: {args.seconds:.0f}s, {len(outcomes)} requests, {load.scrapes} scrapes, "
          f"{load.churn_cycles} register/unregister cycles, {load.scale_changes} scalings; "
          f"RSS {first['rss_kib'] / 1024:.1f} -> {last['rss_kib'] / 1024:.1f} MiB "
          f"({drift * 100:+.2f}%), fds max {max(s['fds'] for s in early)} -> "
          f"{max(s['fds'] for s in late)}, threads max {max(s['threads'] for s in early)} -> "
          f"{max(s['threads'] for s in late)}, exit code {rc}")
    ok = abs(drift) < 0.05 and fds_flat and threads_flat and not problems and rc == 0
    for p in problems:
        print("problem:", p)
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
