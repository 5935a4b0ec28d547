#!/usr/bin/python3
"""Closed-loop load for slow models (bench/resnet_load.sh): CONNECTIONS threads, each on its
own keep-alive connection, POST the same file back to back, for WARMUP + DURATION seconds.

Why not wrk: at a few requests per second a 10 s wrk run counts only the responses that
completed inside its window, and a batch of 8 taking ~1 s is then a large share of the
count (all connections start together, so the first completions come only after one full
latency). Here every thread's throughput is measured over whole requests: the requests it
started after the warm-up, divided by the time from the first one's start to the last
one's end; the threads' rates are summed. Latency percentiles are over the same requests.

    post_client.py URL FILE [--content-type image/jpeg] [--connections 2]
                   [--warmup 2] [--duration 8] [--out result.json]

Prints one summary line; --out writes requests, req_per_s, p50/p90/p99/max/mean in ms,
errors (non-2xx or failed requests), seconds, requests_all (warm-up included).
"""

import argparse
import http.client
import json
import threading
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("file")
    ap.add_argument("--content-type", default="application/octet-stream")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--out")
    args = ap.parse_args()

    url = urllib.parse.urlsplit(args.url)
    body = open(args.file, "rb").read()
    headers = {"Content-Type": args.content_type}
    start = time.monotonic()
    measure_from = start + args.warmup
    stop_at = measure_from + args.duration
    per_thread = [[] for _ in range(args.connections)]  # (start, end) of measured requests
    errors = [0] * args.connections
    sent = [0] * args.connections  # all requests, warm-up included

    def client(i):
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                break
            try:
                conn.request("POST", url.path, body=body, headers=headers)
                r = conn.getresponse()
                r.read()
                ok = 200 <= r.status < 300
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
            t1 = time.monotonic()
            sent[i] += 1
            if t0 >= measure_from:
                if ok:
                    per_thread[i].append((t0, t1))
                else:
                    errors[i] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    rate = 0.0
    latencies = []
    for reqs in per_thread:
        if reqs:
            rate += len(reqs) / (reqs[-1][1] - reqs[0][0])
            latencies += [(t1 - t0) * 1e3 for t0, t1 in reqs]
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else 0

    res = {
        "requests": len(latencies),
        "seconds": args.duration,
        "req_per_s": rate,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": latencies[-1] if latencies else 0,
        "mean_ms": sum(latencies) / len(latencies) if latencies else 0,
        "errors": sum(errors),
        "requests_all": sum(sent),
    }
    print(f"   {rate:.2f} req/s, {res['requests']} requests measured after a {args.warmup:g} s "
          f"warm-up, {res['errors']} errors; latency p50 {res['p50_ms']:.0f} ms, "
          f"p90 {res['p90_ms']:.0f} ms, p99 {res['p99_ms']:.0f} ms, max {res['max_ms']:.0f} ms")
    if args.out:
        json.dump(res, open(args.out, "w"))


if __name__ == "__main__":
    main()
