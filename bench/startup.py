#!/usr/bin/python3
"""Start-up cost of tserve with an empty model store, and resnet18 serving speed, side by side.

Start-up (--runs times per binary, the binaries alternating so that background load hits
both alike): each run starts `BIN --start --foreground` with an empty model store on free
loopback ports and measures
  ready    the time from just before exec to the first `GET /ping` that answers 200
           (polled every millisecond on a fresh connection),
  RSS      VmRSS of /proc/PID/status one second after ready (idle),
  threads  Threads of /proc/PID/status at the same moment,
then stops it with SIGTERM (exit status 0 expected). The medians are reported, with the
range of ready.

resnet18 (--resnet-seconds > 0): each binary serves resnet18.mar (the demo archive: 1 worker,
batch size 1) alone; after a warm-up, `--clients` closed-loop clients POST
examples/images/kitten.jpg for the given seconds over keep-alive connections. Reported:
images per second and images per CPU second of the server (utime + stime from
/proc/PID/stat; the figure background load distorts least), best of --resnet-rounds rounds
(the binaries alternating), and the RSS with the model loaded.

Usage:
  /usr/bin/python3 bench/startup.py --binary build-c/tserve [--baseline build/tserve]
      [--runs 15] [--resnet-seconds 8] [--resnet-rounds 2] [--mar PATH] [--json OUT]
      [--config KEY=VALUE ...]
With --baseline, the ratios binary / baseline are printed too. Loopback only; everything it
writes is under a temporary folder that it removes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
KITTEN = ROOT / "examples" / "images" / "kitten.jpg"
READY_TIMEOUT_S = 30.0
IDLE_SETTLE_S = 1.0
RESNET_WARMUP_S = 2.0


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def ping_ok(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/ping")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


class Server:
    """One tserve under a scratch folder: started, then stopped by stop()."""

    def __init__(self, binary: pathlib.Path, work: pathlib.Path, store: pathlib.Path,
                 extra: dict | None = None):
        work.mkdir(parents=True, exist_ok=True)
        self.ports = free_ports(3)
        config = {
            "inference_address": f"http://127.0.0.1:{self.ports[0]}",
            "management_address": f"http://127.0.0.1:{self.ports[1]}",
            "metrics_address": f"http://127.0.0.1:{self.ports[2]}",
            "model_store": str(store),
        }
        config.update(extra or {})
        (work / "config.properties").write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        env["TSERVE_PID_FILE"] = str(work / "tserve.pid")
        env["LOG_LOCATION"] = str(work / "logs")
        self.log = open(work / "output.txt", "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(binary), "--start", "--foreground", "--ts-config", str(work / "config.properties")],
            cwd=work, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self) -> float:
        """Seconds from just before exec to the first /ping answering 200."""
        deadline = self.started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if ping_ok(self.ports[0]):
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise RuntimeError(f"tserve exited with {self.proc.returncode} during start-up")
            time.sleep(0.001)
        raise RuntimeError("tserve not ready within %.0f s" % READY_TIMEOUT_S)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.log.close()
        if rc != 0:
            raise RuntimeError(f"tserve exited with {rc} after SIGTERM")


def startup_run(binary: pathlib.Path, scratch: pathlib.Path, extra: dict) -> dict:
    store = scratch / "store"
    store.mkdir(parents=True, exist_ok=True)
    server = Server(binary, scratch / "server", store, extra)
    try:
        ready = server.wait_ready()
        time.sleep(IDLE_SETTLE_S)
        status = proc_status(server.proc.pid)
        maps = pathlib.Path(f"/proc/{server.proc.pid}/maps").read_text()
    finally:
        server.stop()
    return {"ready_ms": ready * 1000.0, "rss_mb": int(status["VmRSS"].split()[0]) / 1024.0,
            "threads": int(status["Threads"]), "torch_mapped": "libtorch" in maps}


def resnet_round(binary: pathlib.Path, mar: pathlib.Path, scratch: pathlib.Path,
                 seconds: float, clients: int) -> dict:
    store = scratch / "store"
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy(mar, store / "resnet18.mar")
    server = Server(binary, scratch / "server", store, {"load_models": "resnet18.mar"})
    image = KITTEN.read_bytes()
    try:
        server.wait_ready()
        deadline = time.monotonic() + 120
        while True:  # /ping answers 200 once the model's worker is ready
            conn = http.client.HTTPConnection("127.0.0.1", server.ports[0], timeout=10)
            conn.request("GET", "/ping")
            healthy = json.loads(conn.getresponse().read()).get("status") == "Healthy"
            conn.close()
            if healthy:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("resnet18 not loaded within 120 s")
            time.sleep(0.1)

        counts = [0] * clients
        failures = [0] * clients
        phase = {"counting": False, "stop": False}

        def client(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.ports[0], timeout=60)
            while not phase["stop"]:
                conn.request("POST", "/predictions/resnet18", body=image,
                             headers={"Content-Type": "image/jpeg"})
                r = conn.getresponse()
                r.read()
                if phase["counting"]:
                    if r.status == 200:
                        counts[i] += 1
                    else:
                        failures[i] += 1
            conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        time.sleep(RESNET_WARMUP_S)
        cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
        phase["counting"] = True
        time.sleep(seconds)
        phase["counting"] = False
        cpu1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
        phase["stop"] = True
        for t in threads:
            t.join()
        rss = int(proc_status(server.proc.pid)["VmRSS"].split()[0]) / 1024.0
    finally:
        server.stop()
    if sum(failures):
        raise RuntimeError(f"{sum(failures)} resnet18 requests failed")
    images = sum(counts)
    return {"images": images, "images_per_s": images / (t1 - t0),
            "images_per_cpu_s": images / max(cpu1 - cpu0, 1e-9), "rss_mb": rss}


def default_mar(binary: pathlib.Path) -> pathlib.Path:
    for store in (binary.parent / "model_store", ROOT / "build" / "model_store"):
        if (store / "resnet18.mar").exists():
            return store / "resnet18.mar"
    raise SystemExit("no resnet18.mar next to the binary or in build/model_store: "
                     "scripts/make_demo_models.py makes it (or pass --mar)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "build" / "tserve"))
    ap.add_argument("--baseline", help="a second tserve to measure side by side")
    ap.add_argument("--runs", type=int, default=15, help="start-ups per binary")
    ap.add_argument("--resnet-seconds", type=float, default=8.0,
                    help="measured seconds per resnet18 round (0: skip resnet18)")
    ap.add_argument("--resnet-rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2, help="resnet18 closed-loop clients")
    ap.add_argument("--mar", help="resnet18.mar (default: next to the binary, else build/)")
    ap.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra config.properties entry for the start-up runs (repeatable)")
    ap.add_argument("--json", help="write the results there too")
    args = ap.parse_args()
    extra = dict(item.split("=", 1) for item in args.config)

    binaries = {"tserve": pathlib.Path(args.binary).resolve()}
    if args.baseline:
        binaries["baseline"] = pathlib.Path(args.baseline).resolve()
    for b in binaries.values():
        if not os.access(b, os.X_OK):
            raise SystemExit(f"not an executable: {b}")

    results: dict = {name: {"binary": str(path), "startup": [], "resnet": []}
                     for name, path in binaries.items()}
    with tempfile.TemporaryDirectory(prefix="tserve-startup-") as tmp:
        scratch = pathlib.Path(tmp)
        n = 0
        for _ in range(args.runs):
            for name, path in binaries.items():
                n += 1
                results[name]["startup"].append(startup_run(path, scratch / f"s{n}", extra))
        if args.resnet_seconds > 0:
            for _ in range(args.resnet_rounds):
                for name, path in binaries.items():
                    n += 1
                    mar = pathlib.Path(args.mar) if args.mar else default_mar(path)
                    results[name]["resnet"].append(resnet_round(
                        path, mar, scratch / f"r{n}", args.resnet_seconds, args.clients))

    summary = {}
    for name, r in results.items():
        ready = [s["ready_ms"] for s in r["startup"]]
        s = {"ready_ms_median": statistics.median(ready), "ready_ms_min": min(ready),
             "ready_ms_max": max(ready),
             "idle_rss_mb_median": statistics.median(x["rss_mb"] for x in r["startup"]),
             "threads_median": statistics.median(x["threads"] for x in r["startup"]),
             "torch_mapped_idle": any(x["torch_mapped"] for x in r["startup"])}
        if r["resnet"]:
            s["resnet_images_per_s"] = max(x["images_per_s"] for x in r["resnet"])
            s["resnet_images_per_cpu_s"] = max(x["images_per_cpu_s"] for x in r["resnet"])
            s["resnet_rss_mb"] = statistics.median(x["rss_mb"] for x in r["resnet"])
        summary[name] = s

    print(f"start-up with an empty model store: {args.runs} runs per binary (medians)")
    rows = [("ready (exec -> /ping 200), ms", "ready_ms_median", "%.1f"),
            ("  fastest, ms", "ready_ms_min", "%.1f"), ("  slowest, ms", "ready_ms_max", "%.1f"),
            ("idle RSS (ready + 1 s), MiB", "idle_rss_mb_median", "%.1f"),
            ("threads", "threads_median", "%.0f")]
    if args.resnet_seconds > 0:
        rows += [(f"resnet18 images/s ({args.clients} clients, best of {args.resnet_rounds})",
                  "resnet_images_per_s", "%.2f"),
                 ("resnet18 images per server CPU s", "resnet_images_per_cpu_s", "%.3f"),
                 ("RSS with resnet18 loaded, MiB", "resnet_rss_mb", "%.1f")]
    names = list(binaries)
    header = f"{'':58}" + "".join(f"{n:>12}" for n in names)
    if len(names) == 2:
        header += f"{'ratio':>10}"
    print(header)
    for label, key, fmt in rows:
        line = f"{label:58}" + "".join(f"{fmt % summary[n][key]:>12}" for n in names)
        if len(names) == 2 and summary[names[1]][key]:
            line += f"{summary[names[0]][key] / summary[names[1]][key]:>10.3f}"
        print(line)
    for name in names:
        print(f"{name}: {binaries[name]} (LibTorch mapped while idle: "
              f"{'yes' if summary[name]['torch_mapped_idle'] else 'no'})")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"summary": summary, "runs": results},
                                                      indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
