#!/usr/bin/python3
"""LLM serving throughput (issue 11): tserve's continuous batching at 16 streams, side by side
with the same model run one request at a time and with a raw LibTorch decode loop.

One run, three phases per repeat (--repeats, the phases in the same order each time so that
background load hits them alike), each bounded by --seconds:
  batched     tserve serves llm.mar (model_store = the demo store, load_models = llm.mar, free
              loopback ports, a temporary folder); --streams closed-loop clients (threads, one
              keep-alive socket each) POST /v1/completions with stream: true,
              stream_options.include_usage, temperature 0, ignore_eos true, max_tokens
              --max-tokens and a prompt of --prompt-bytes bytes (BOS makes it one token more).
              tokens/s = the tokens the clients received inside the measured window / its
              wall time (one per token event; a token with no text, an ignored EOS, has no
              event: usage.completion_tokens minus the events is added at the request's end) (after --warmup seconds of the same load), cross-checked with the
              delta of ts_generation_tokens_total over the same window.
  sequential  the same server and model, one client: each request starts when the previous
              one has ended ("the same model run one request at a time"; a max_num_seqs: 1
              archive with 16 clients would measure the same decode of batch 1 but adds a
              queue, so this is the plainer baseline).
  raw         bench/llm_raw_decode (built with -DTSERVE_BUILD_BENCHMARKS=ON) on the archive's
              model.pt, right after the batched phase: the same batch (--streams prompts of
              the same length), the same max_tokens, the cache sized for --streams *
              max_model_len, 1 intra-op thread as tserve's workers, tserve's malloc settings,
              sampling in C++ as the engine; the median of rounds lasting --seconds / 2 in
              all, twice: "lockstep" (the whole batch prefilled, then decoded together to the
              end: the issue's reference) and "staggered" (the steady state of a loaded
              server: sequences at spread points, one that ends replaced at once, so the
              lengths differ at every step; see bench/llm_raw_decode.cc).
Ratios, each the median over the repeats of that repeat's ratio: batched / sequential (goal
>= 3x at 16 streams) and batched / raw lockstep (goal >= 0.9x); batched / raw staggered too.
Also reported at 16 streams: TTFT and ITL p50/p99 as the clients saw them (a client's ITL is
the gap between two token events it read; events that arrive in one read have a gap of 0) and
from the server's histograms (ts_time_to_first_token_seconds, ts_inter_token_latency_seconds:
bucket deltas over the window, interpolated as Prometheus' histogram_quantile), the server's
and this client's CPU seconds per second (the clients share the machine's cores), and every
request's usage.completion_tokens checked (= max_tokens, and not fewer than its token events).

Usage:
  /usr/bin/python3 bench/llm_bench.py [--binary build/tserve] [--store build/model_store]
      [--raw build-bench/bench/llm_raw_decode] [--seconds 10] [--warmup 2] [--repeats 2]
      [--streams 16] [--max-tokens 128] [--prompt-bytes 23] [--json OUT]
Loopback only; everything it writes is under a temporary folder that it removes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120.0
RAW_ROUND_ESTIMATE_S = 0.2  # one raw round of 16 x 128 tokens on the 2-core dev VM

COMPLETION_TOKENS = re.compile(rb'"completion_tokens":(\d+)')


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def http_get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


class Server:
    """One tserve serving llm.mar under a scratch folder; stop() ends it."""

    def __init__(self, binary: pathlib.Path, store: pathlib.Path, work: pathlib.Path):
        work.mkdir(parents=True, exist_ok=True)
        self.ports = free_ports(3)
        config = {
            "inference_address": f"http://127.0.0.1:{self.ports[0]}",
            "management_address": f"http://127.0.0.1:{self.ports[1]}",
            "metrics_address": f"http://127.0.0.1:{self.ports[2]}",
            "model_store": str(store),
            "load_models": "llm.mar",
        }
        (work / "config.properties").write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        env["TSERVE_PID_FILE"] = str(work / "tserve.pid")
        env["LOG_LOCATION"] = str(work / "logs")
        self.log = open(work / "output.txt", "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--start", "--foreground", "--ts-config", str(work / "config.properties")],
            cwd=work, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # /ping says Healthy once llm's worker is up
            if self.proc.poll() is not None:
                raise RuntimeError(f"tserve exited with {self.proc.returncode} during start-up "
                                   f"(log: {work / 'output.txt'})")
            try:
                if json.loads(http_get(f"http://127.0.0.1:{self.ports[0]}/ping", 1)).get(
                        "status") == "Healthy":
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llm not loaded within %.0f s" % READY_TIMEOUT_S)
            time.sleep(0.05)

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.ports[2]}/metrics").decode()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.log.close()
        if rc != 0:
            raise RuntimeError(f"tserve exited with {rc} after SIGTERM")


# ---- /metrics ------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LE = re.compile(r'le="([^"]+)"')


def scrape(server: Server) -> dict:
    """The llm's series this benchmark reads: counters and histogram buckets."""
    out: dict = {"buckets": {}}
    for line in server.metrics().splitlines():
        m = SAMPLE.match(line)
        if not m or 'model_name="llm"' not in (m.group(2) or ""):
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name.endswith("_bucket"):
            le = LE.search(labels).group(1)
            out["buckets"].setdefault(name[: -len("_bucket")], {})[
                float("inf") if le == "+Inf" else float(le)] = value
        elif name in ("ts_generation_tokens_total", "ts_prompt_tokens_total"):
            out[name] = out.get(name, 0.0) + value
        elif name.endswith("_count"):
            out[name] = value
    return out


def histogram_quantile(q: float, before: dict, after: dict) -> float | None:
    """Prometheus' histogram_quantile over the bucket deltas (cumulative, le -> count)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / max(
                count - prev_count, 1e-12)
        prev_bound, prev_count = bound, count
    return bounds[-2] if len(bounds) > 1 else None


# ---- clients -------------------------------------------------------------------------------

class Window:
    """The measured window: clients count what they read between start and end."""

    def __init__(self):
        self.start = float("inf")
        self.end = float("inf")
        self.stop = False


class Client(threading.Thread):
    """Closed loop: one streamed /v1/completions after another on one keep-alive socket."""

    def __init__(self, index: int, port: int, args, window: Window):
        super().__init__(daemon=True)
        self.index, self.port, self.args, self.window = index, port, args, window
        self.tokens_in_window = 0
        self.ttft: list[float] = []  # requests sent inside the window
        self.itl: list[float] = []   # gaps that end inside the window
        self.requests = 0
        self.usage_mismatches = 0
        self.error: str | None = None

    def request_bytes(self, n: int) -> bytes:
        prompt = f"bench {self.index:02d} {n:07d} ".ljust(self.args.prompt_bytes, "x")
        body = json.dumps({
            "model": "llm", "prompt": prompt[: self.args.prompt_bytes],
            "max_tokens": self.args.max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}).encode()
        return (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body

    def run(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            n = 0
            while not self.window.stop:
                self.one(sock, self.request_bytes(n))
                n += 1
            sock.close()
        except Exception as e:  # reported by main()
            self.error = f"client {self.index}: {e!r}"

    def one(self, sock: socket.socket, request: bytes) -> None:
        w = self.window
        sent = time.monotonic()
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            now = time.monotonic()
            if not data:
                raise RuntimeError("connection closed in the head")
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200" or b"chunked" not in head.lower():
            raise RuntimeError(f"unexpected answer: {head[:200]!r} {buf[:300]!r}")
        body = b""      # de-chunked SSE text not yet split into events
        raw = buf       # chunked bytes not yet decoded
        last = None     # time of the previous token event
        tokens = 0
        usage = None
        done = False
        while True:
            # De-chunk what is complete.
            while True:
                crlf = raw.find(b"\r\n")
                if crlf < 0:
                    break
                size = int(raw[:crlf].split(b";")[0], 16)
                if size == 0:
                    if raw.find(b"\r\n\r\n", crlf) < 0:
                        break
                    done = True
                    break
                if len(raw) < crlf + 2 + size + 2:
                    break
                body += raw[crlf + 2: crlf + 2 + size]
                raw = raw[crlf + 2 + size + 2:]
            # Events complete so far.
            while True:
                end = body.find(b"\n\n")
                if end < 0:
                    break
                event, body = body[:end], body[end + 2:]
                if b'"finish_reason":null' in event:  # one generated token
                    tokens += 1
                    if w.start <= now < w.end:
                        self.tokens_in_window += 1
                        if last is None:
                            if w.start <= sent:
                                self.ttft.append(now - sent)
                        else:
                            self.itl.append(now - last)
                    last = now
                elif b'"usage":{' in event:
                    usage = int(COMPLETION_TOKENS.search(event).group(1))
                elif event.startswith(b"data: {") and b'"error"' in event:
                    raise RuntimeError(f"error event: {event[:300]!r}")
            if done:
                break
            data = sock.recv(65536)
            now = time.monotonic()
            if not data:
                raise RuntimeError("connection closed mid-stream")
            raw += data
        self.requests += 1
        # A token whose text is empty (an ignored EOS) has no event of its own: usage counts it.
        if usage is None or usage < tokens or usage != self.args.max_tokens:
            self.usage_mismatches += 1
        elif w.start <= now < w.end:
            self.tokens_in_window += usage - tokens


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def serve_phase(server: Server, args, streams: int) -> dict:
    window = Window()
    clients = [Client(i, server.ports[0], args, window) for i in range(streams)]
    for c in clients:
        c.start()
    time.sleep(args.warmup)
    before = scrape(server)
    cpu_server0, cpu_self0 = cpu_seconds(server.proc.pid), time.process_time()
    window.start = time.monotonic()
    time.sleep(args.seconds)
    window.end = time.monotonic()
    cpu_server1, cpu_self1 = cpu_seconds(server.proc.pid), time.process_time()
    after = scrape(server)
    window.stop = True
    for c in clients:
        c.join(timeout=60)
    errors = [c.error for c in clients if c.error]
    if errors:
        raise RuntimeError("; ".join(errors))
    wall = window.end - window.start
    tokens = sum(c.tokens_in_window for c in clients)
    ttft = [x for c in clients for x in c.ttft]
    itl = [x for c in clients for x in c.itl]
    ttft_name, itl_name = "ts_time_to_first_token_seconds", "ts_inter_token_latency_seconds"
    return {
        "streams": streams,
        "seconds": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "server_tokens_per_s": (after.get("ts_generation_tokens_total", 0) -
                                before.get("ts_generation_tokens_total", 0)) / wall,
        "requests": sum(c.requests for c in clients),
        "usage_mismatches": sum(c.usage_mismatches for c in clients),
        "server_cpu_per_s": (cpu_server1 - cpu_server0) / wall,
        "client_cpu_per_s": (cpu_self1 - cpu_self0) / wall,
        "client_ttft_p50": percentile(ttft, 0.5), "client_ttft_p99": percentile(ttft, 0.99),
        "client_itl_p50": percentile(itl, 0.5), "client_itl_p99": percentile(itl, 0.99),
        "client_itl_mean": statistics.fmean(itl) if itl else None,
        "server_ttft_p50": histogram_quantile(0.5, before["buckets"].get(ttft_name, {}),
                                              after["buckets"].get(ttft_name, {})),
        "server_ttft_p99": histogram_quantile(0.99, before["buckets"].get(ttft_name, {}),
                                              after["buckets"].get(ttft_name, {})),
        "server_itl_p50": histogram_quantile(0.5, before["buckets"].get(itl_name, {}),
                                             after["buckets"].get(itl_name, {})),
        "server_itl_p99": histogram_quantile(0.99, before["buckets"].get(itl_name, {}),
                                             after["buckets"].get(itl_name, {})),
    }


# ---- the raw loop --------------------------------------------------------------------------

def archive_settings(mar: pathlib.Path, scratch: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """Extracts model.pt; returns it with the llm: section of model-config.yaml (ints)."""
    with zipfile.ZipFile(mar) as z:
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        serialized = manifest["model"]["serializedFile"]
        z.extract(serialized, scratch)
        settings: dict = {}
        config = manifest["model"].get("configFile")
        if config:
            section = False
            for line in z.read(config).decode().splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if not line.startswith((" ", "\t")):
                    section = line.strip() == "llm:"
                    continue
                if section:
                    key, _, value = line.strip().partition(":")
                    settings[key.strip()] = int(value.strip())
    return scratch / serialized, settings


def raw_phase(raw: pathlib.Path, model: pathlib.Path, settings: dict, args,
              staggered: bool) -> dict:
    rounds = max(3, int(args.seconds / 2 / RAW_ROUND_ESTIMATE_S))
    cmd = [str(raw), str(model), "--batch", str(args.streams), "--max-tokens",
           str(args.max_tokens), "--prompt-bytes", str(args.prompt_bytes), "--rounds", str(rounds),
           "--warmup-rounds", "1", "--threads", "1", "--max-model-len",
           str(settings.get("max_model_len", 256)), "--json"]
    if staggered:
        cmd.append("--staggered")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    r = json.loads(out.stdout)
    r["tokens_per_s"] = r["tokens_per_s_median"]
    return r


# ---- report --------------------------------------------------------------------------------

def ms(x: float | None) -> str:
    return "-" if x is None else f"{1e3 * x:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "build" / "tserve"))
    ap.add_argument("--store", default=str(ROOT / "build" / "model_store"),
                    help="a model store holding llm.mar")
    ap.add_argument("--raw", default=str(ROOT / "build-bench" / "bench" / "llm_raw_decode"),
                    help="llm_raw_decode (empty: skip the raw loop)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-bytes", type=int, default=23)
    ap.add_argument("--json", help="write the results there too")
    args = ap.parse_args()

    binary = pathlib.Path(args.binary).resolve()
    store = pathlib.Path(args.store).resolve()
    raw = pathlib.Path(args.raw).resolve() if args.raw else None
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"not an executable: {binary}")
    if not (store / "llm.mar").exists():
        raise SystemExit(f"no llm.mar in {store}: scripts/make_demo_models.py makes it")
    if raw and not os.access(raw, os.X_OK):
        raise SystemExit(f"not an executable: {raw} (cmake -DTSERVE_BUILD_BENCHMARKS=ON, "
                         "target llm_raw_decode; or --raw '' to skip the raw loop)")

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tserve-llm-bench-") as tmp:
        scratch = pathlib.Path(tmp)
        model, settings = archive_settings(store / "llm.mar", scratch)
        server = Server(binary, store, scratch / "server")
        try:
            for i in range(args.repeats):
                run = {"batched": serve_phase(server, args, args.streams)}
                if raw:  # right after the batched phase: the ratio's two sides see alike load
                    run["raw"] = raw_phase(raw, model, settings, args, staggered=False)
                    run["raw_staggered"] = raw_phase(raw, model, settings, args, staggered=True)
                run["sequential"] = serve_phase(server, args, 1)
                runs.append(run)
                print(f"repeat {i + 1}: batched {run['batched']['tokens_per_s']:.0f} tokens/s, "
                      f"sequential {run['sequential']['tokens_per_s']:.0f}"
                      + (f", raw {run['raw']['tokens_per_s']:.0f}, raw staggered "
                         f"{run['raw_staggered']['tokens_per_s']:.0f}" if raw else ""),
                      flush=True)
        finally:
            server.stop()

    print(f"\nllm.mar ({settings}), {args.streams} streams, max_tokens {args.max_tokens}, "
          f"prompt {args.prompt_bytes + 1} tokens, temperature 0, ignore_eos; "
          f"{args.seconds:.0f} s per phase, {args.repeats} repeats")
    print(f"{'':44}" + "".join(f"{'#' + str(i + 1):>11}" for i in range(len(runs))))
    rows = [
        ("batched tokens/s (clients)", lambda r: f"{r['batched']['tokens_per_s']:.0f}"),
        ("batched tokens/s (ts_generation_tokens)",
         lambda r: f"{r['batched']['server_tokens_per_s']:.0f}"),
        ("sequential tokens/s (clients)", lambda r: f"{r['sequential']['tokens_per_s']:.0f}"),
        ("sequential tokens/s (ts_generation_tokens)",
         lambda r: f"{r['sequential']['server_tokens_per_s']:.0f}"),
    ]
    if raw:
        rows += [("raw lockstep tokens/s (median round)",
                  lambda r: f"{r['raw']['tokens_per_s']:.0f}"),
                 ("raw lockstep ms per decode step",
                  lambda r: f"{r['raw']['ms_per_step_median']:.2f}"),
                 ("raw staggered tokens/s (median round)",
                  lambda r: f"{r['raw_staggered']['tokens_per_s']:.0f}"),
                 ("raw staggered ms per decode step",
                  lambda r: f"{r['raw_staggered']['ms_per_step_median']:.2f}")]
    rows += [
        ("batched / sequential (goal >= 3)",
         lambda r: f"{r['batched']['tokens_per_s'] / r['sequential']['tokens_per_s']:.2f}")]
    if raw:
        rows += [("batched / raw lockstep (goal >= 0.9)",
                  lambda r: f"{r['batched']['tokens_per_s'] / r['raw']['tokens_per_s']:.3f}"),
                 ("batched / raw staggered",
                  lambda r: f"{r['batched']['tokens_per_s'] / r['raw_staggered']['tokens_per_s']:.3f}")]
    for phase in ("batched", "sequential"):
        rows += [
            (f"{phase}: TTFT p50 / p99 ms (clients)",
             lambda r, p=phase: f"{ms(r[p]['client_ttft_p50'])}/{ms(r[p]['client_ttft_p99'])}"),
            (f"{phase}: TTFT p50 / p99 ms (server)",
             lambda r, p=phase: f"{ms(r[p]['server_ttft_p50'])}/{ms(r[p]['server_ttft_p99'])}"),
            (f"{phase}: ITL p50 / p99 ms (clients)",
             lambda r, p=phase: f"{ms(r[p]['client_itl_p50'])}/{ms(r[p]['client_itl_p99'])}"),
            (f"{phase}: ITL p50 / p99 ms (server)",
             lambda r, p=phase: f"{ms(r[p]['server_itl_p50'])}/{ms(r[p]['server_itl_p99'])}"),
            (f"{phase}: server / client CPU s per s",
             lambda r, p=phase: f"{r[p]['server_cpu_per_s']:.2f}/{r[p]['client_cpu_per_s']:.2f}"),
            (f"{phase}: requests (bad usage)",
             lambda r, p=phase: f"{r[p]['requests']}({r[p]['usage_mismatches']})"),
        ]
    for label, f in rows:
        print(f"{label:44}" + "".join(f"{f(r):>11}" for r in runs))
    def ratio(a: str, b: str) -> float:  # the median of the repeats' ratios
        return statistics.median(r[a]["tokens_per_s"] / r[b]["tokens_per_s"] for r in runs)
    summary = {"batched_over_sequential": ratio("batched", "sequential")}
    print(f"\nmedian ratios: batched / sequential {summary['batched_over_sequential']:.2f} "
          "(goal >= 3)", end="")
    if raw:
        summary["batched_over_raw"] = ratio("batched", "raw")
        summary["batched_over_raw_staggered"] = ratio("batched", "raw_staggered")
        print(f"; batched / raw lockstep {summary['batched_over_raw']:.3f} (goal >= 0.9); "
              f"batched / raw staggered {summary['batched_over_raw_staggered']:.3f}")
    else:
        print()
    mismatches = sum(r[p]["usage_mismatches"] for r in runs for p in ("batched", "sequential"))
    if mismatches:
        print(f"WARNING: {mismatches} requests' usage.completion_tokens differ from max_tokens "
              "or from the token events their client read")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"args": vars(args), "settings": settings, "summary": summary, "runs": runs},
            indent=2))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
