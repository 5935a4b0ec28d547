"""A bounded mixed load of good and bad clients against one tserve, with model churn and
frequent scrapes, that records what every client saw so that the server's counters can be
reconciled with it afterwards. Used by test_fault_accounting.py (small, in `make test`) and
bench/soak.py (long, with RSS/fd/thread sampling).

Everything talks only to 127.0.0.1. Each kind of request is one small function returning the
status the client saw (None when the client gave up on purpose and saw nothing).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import pathlib
import random
import socket
import threading
import time

import requests

import e2e_util
from e2e_util import parse_exposition, request_counters, status_class

MAIN_MODELS = ("noop", "linear", "example", "slow")


def prepare_store(work) -> "pathlib.Path":
    """A model store with what the load needs: noop (also registered again and again by the
    churn), linear (batch size 4), the example plugin (handler errors) and `slow` (noop
    taking 50 ms a batch, one worker: its queue overflows)."""
    store = e2e_util.store_with(work, "noop.mar", "linear.mar")
    e2e_util.archive_example_plugin(store)
    e2e_util.archive_slow_noop(store, "slow", delay_ms=50)
    return store


def server_config(store, max_request_size: int) -> dict:
    return {
        "model_store": str(store),
        "load_models": "noop.mar,linear.mar,example.mar,slow.mar",
        "default_workers_per_model": "2",
        "job_queue_size": "8",
        "max_request_size": str(max_request_size),
        "enable_model_api": "true",
        # the example plugin records its custom metrics, defined here
        "metrics_config": str(e2e_util.REPO_ROOT / "examples" / "custom_handler" / "metrics.yaml"),
    }


@dataclasses.dataclass
class Outcome:
    kind: str
    model: str | None  # the model whose ts_inference_requests_total counts it, or None
    status: int | None  # what the client saw; None: it left on purpose before the answer
    ambiguous: bool = False  # the server may or may not have answered (client left)


class Recorder:
    """Thread-safe log of outcomes."""

    def __init__(self):
        self._mu = threading.Lock()
        self.outcomes: list[Outcome] = []

    def add(self, o: Outcome) -> None:
        with self._mu:
            self.outcomes.append(o)

    def snapshot(self) -> list[Outcome]:
        with self._mu:
            return list(self.outcomes)


def _raw(port: int, data: bytes, *, read: bool, timeout: float = 30.0) -> int | None:
    """Sends bytes on a fresh connection; returns the response status when `read`, else closes
    at once (the client leaves)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            # An abortive close (RST) as a crashed client would; the server must cope.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return None
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed before a status line")
            buf += chunk
        return int(buf.split(b" ", 2)[1])


class MixedLoad:
    """Drives the load. `server` is an e2e_util.Server started with server_config() on a
    store from prepare_store()."""

    def __init__(self, server, *, connections: int = 64, max_request_size: int,
                 seed: int = 7, churn: bool = True, scale: bool = True):
        self.server = server
        self.connections = connections
        self.max_request_size = max_request_size
        self.rec = Recorder()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.scrapes = 0
        self.churn_cycles = 0
        self.scale_changes = 0
        self._seed = seed
        self._churn = churn
        self._scale = scale
        self._sent = itertools.count()
        self._budget = None
        self._threads: list[threading.Thread] = []
        self._last_counter: dict[tuple[str, str], float] = {}
        self._scrape_mu = threading.Lock()

    # ---- the request kinds -------------------------------------------------------------

    def _post(self, path: str, **kwargs) -> int:
        kwargs.setdefault("timeout", 60)
        return requests.post(f"{self.server.inference_url}{path}", **kwargs).status_code

    def success(self, rnd):
        return Outcome("noop", "noop", self._post("/predictions/noop", data=b"x" * rnd.randint(1, 64)))

    def linear_ok(self, rnd):
        return Outcome("linear", "linear", self._post("/predictions/linear", json=[1.0, 2.0, 3.0, 4.0]))

    def linear_bad_tensor(self, rnd):
        body = rnd.choice([b"[1,2,", b"{\"a\":", b"[[1,2],[3]]", b"\xff\xfe", b"[1,2,3]"])
        return Outcome("bad_tensor", "linear", self._post(
            "/predictions/linear", data=body, headers={"Content-Type": "application/json"}))

    def handler_error(self, rnd):
        return Outcome("handler_error", "example", self._post("/predictions/example", data=b"raise"))

    def slow(self, rnd):
        return Outcome("slow", "slow", self._post("/predictions/slow", data=b"s"))

    def unknown_model(self, rnd):
        return Outcome("unknown", None, self._post(f"/predictions/nosuch{rnd.randint(0, 9)}", data=b"x"))

    def oversized(self, rnd):
        # Rejected by the HTTP layer from its Content-Length, before any model sees it.
        port = self.server.ports["inference"]
        head = (f"POST /predictions/noop HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {self.max_request_size + 1}\r\nConnection: close\r\n\r\n")
        return Outcome("oversized", None, _raw(port, head.encode(), read=True))

    def disconnect_mid_request(self, rnd):
        # Half a body, then gone: never dispatched, nothing answered, nothing counted.
        port = self.server.ports["inference"]
        head = (b"POST /predictions/noop HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 100\r\n\r\n0123456789")
        return Outcome("disconnect_mid", None, _raw(port, head, read=False))

    def disconnect_queued(self, rnd):
        # A whole request, then gone: counted on arrival; answered or dropped, we cannot see.
        port = self.server.ports["inference"]
        req = (b"POST /predictions/noop HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Length: 3\r\n\r\nabc")
        return Outcome("disconnect_queued", "noop", _raw(port, req, read=False), ambiguous=True)

    KINDS = (
        ("success", 35), ("linear_ok", 12), ("linear_bad_tensor", 8), ("handler_error", 5),
        ("slow", 10), ("unknown_model", 8), ("oversized", 4), ("disconnect_mid_request", 5),
        ("disconnect_queued", 10),
    )

    # ---- threads -----------------------------------------------------------------------

    def _client(self, idx: int) -> None:
        rnd = random.Random(self._seed * 1000 + idx)
        names = [k for k, _ in self.KINDS]
        weights = [w for _, w in self.KINDS]
        while not self.stop.is_set():
            if self._budget is not None and next(self._sent) >= self._budget:
                return
            kind = rnd.choices(names, weights)[0]
            try:
                self.rec.add(getattr(self, kind)(rnd))
            except (requests.RequestException, OSError) as exc:
                # A client that could not even get an answer is a server failure here.
                self.errors.append(f"{kind}: {exc!r}")
                self.rec.add(Outcome(kind, None, None, ambiguous=True))

    def check_scrape(self, text: str) -> None:
        """Counters never go down; every histogram's _count equals its +Inf bucket."""
        families = parse_exposition(text)
        with self._scrape_mu:
            for fam in families:
                if fam.type == "counter":
                    for s in fam.samples:
                        key = (s.name, s.label_text)
                        prev = self._last_counter.get(key)
                        if prev is not None and s.value < prev:
                            self.errors.append(f"counter went down: {s.name}{s.label_text} "
                                               f"{prev} -> {s.value}")
                        self._last_counter[key] = s.value
                elif fam.type == "histogram":
                    inf, count = {}, {}
                    for s in fam.samples:
                        rest = {k: v for k, v in s.labels.items() if k != "le"}
                        key = tuple(sorted(rest.items()))
                        if s.name.endswith("_bucket") and s.labels.get("le") == "+Inf":
                            inf[key] = s.value
                        elif s.name.endswith("_count"):
                            count[key] = s.value
                    for key, c in count.items():
                        if inf.get(key) != c:
                            self.errors.append(f"{fam.name}{dict(key)}: _count {c} != +Inf "
                                               f"bucket {inf.get(key)}")

    def _scraper(self, period: float) -> None:
        while not self.stop.wait(period):
            try:
                r = self.server.metrics()
            except requests.RequestException as exc:
                self.errors.append(f"scrape failed: {exc!r}")
                continue
            self.rec.add(Outcome("scrape", None, r.status_code))
            if r.status_code != 200:
                self.errors.append(f"scrape answered {r.status_code}")
                continue
            self.check_scrape(r.text)
            self.scrapes += 1

    def _mgmt(self, method: str, path: str, **params) -> int | None:
        try:
            r = requests.request(method, f"{self.server.management_url}{path}", params=params,
                                 timeout=60)
        except requests.RequestException as exc:
            self.errors.append(f"{method} {path}: {exc!r}")
            self.rec.add(Outcome("management", None, None, ambiguous=True))
            return None
        self.rec.add(Outcome("management", None, r.status_code))
        return r.status_code

    def _scaler(self) -> None:
        rnd = random.Random(self._seed)
        while not self.stop.wait(0.3):
            n = rnd.randint(1, 3)
            sync = rnd.choice(["true", "false"])
            status = self._mgmt("PUT", "/models/noop", min_worker=n, max_worker=n, synchronous=sync)
            if status not in (200, 202):
                self.errors.append(f"scale noop to {n} answered {status}")
            self.scale_changes += 1

    def _churner(self) -> None:
        for cycle in itertools.count(1):
            if self.stop.is_set():
                return
            name = f"churn{cycle}"
            status = self._mgmt("POST", "/models", url="noop.mar", model_name=name,
                                initial_workers=1, synchronous="true")
            if status != 200:
                self.errors.append(f"register {name} answered {status}")
                continue
            for _ in range(3):
                try:
                    s = self._post(f"/predictions/{name}", data=b"churn")
                except requests.RequestException as exc:
                    self.errors.append(f"churn predict: {exc!r}")
                    self.rec.add(Outcome("churn", name, None, ambiguous=True))
                    continue
                self.rec.add(Outcome("churn", name, s))
            status = self._mgmt("DELETE", f"/models/{name}")
            if status != 200:
                self.errors.append(f"unregister {name} answered {status}")
            self.churn_cycles += 1

    def run(self, *, requests_total: int | None = None, seconds: float | None = None,
            scrape_period: float = 0.1, on_tick=None, tick: float = 10.0) -> None:
        """Runs until `requests_total` client requests were made or `seconds` passed.
        `on_tick()` is called every `tick` seconds from this thread (soak sampling)."""
        self._budget = requests_total
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                         for i in range(self.connections)]
        aux = [threading.Thread(target=self._scraper, args=(scrape_period,), daemon=True)]
        if self._scale:
            aux.append(threading.Thread(target=self._scaler, daemon=True))
        if self._churn:
            aux.append(threading.Thread(target=self._churner, daemon=True))
        for t in self._threads + aux:
            t.start()
        start = time.monotonic()
        next_tick = start + tick
        while any(t.is_alive() for t in self._threads):
            if seconds is not None and time.monotonic() - start >= seconds:
                break
            if on_tick is not None and time.monotonic() >= next_tick:
                on_tick()
                next_tick += tick
            time.sleep(0.05)
        self.stop.set()
        for t in self._threads + aux:
            t.join(timeout=120)
            if t.is_alive():
                self.errors.append(f"{t.name} did not finish")

    # ---- reconciliation ------------------------------------------------------------------

    def client_classes(self) -> tuple[collections.Counter, int]:
        """Responses by class as clients saw them, and how many requests were ambiguous."""
        seen = collections.Counter()
        ambiguous = 0
        for o in self.rec.snapshot():
            if o.ambiguous:
                ambiguous += 1
            elif o.status is not None and status_class(o.status):
                seen[status_class(o.status)] += 1
        return seen, ambiguous


def model_accounting(text: str, model: str) -> dict:
    """requests, successes and failures by reason of one model, summed over versions."""
    requests_total = 0.0
    successes = 0.0
    failures = collections.Counter()
    for fam in parse_exposition(text):
        for s in fam.samples:
            if s.labels.get("model_name") != model:
                continue
            if s.name == "ts_inference_requests_total":
                requests_total += s.value
            elif s.name == "ts_request_duration_seconds_count":
                successes += s.value
            elif s.name == "ts_inference_failures_total":
                failures[s.labels.get("reason", "?")] += s.value
    return {"requests": requests_total, "successes": successes, "failures": dict(failures)}


def server_classes(text: str) -> dict[str, float]:
    return request_counters(text)


__all__ = ["MixedLoad", "Outcome", "model_accounting", "server_classes", "e2e_util"]
