"""The monitoring kit proven against a live Prometheus scraping a live tserve (issue 10).

Debian's Prometheus (2.42) runs with the SHIPPED deploy/prometheus/prometheus.yml and
rules/*.yml, rewritten only where a test must: 1 s scrape and evaluation intervals, the
targets (this test's tserve metrics port, this Prometheus' own port), absolute rule-file
paths, and every alert's `for:` set to 0s (see _rewrite_rules). tserve serves the demo
models (the demo LLM `llm` among them) plus small noop archives made here, and a bounded
load produces successes, 4XX (unknown model, bad tensor), 5XX (a handler error, 503 queue
full and no worker), 408 timeouts, a model whose workers fail to load, and generations
(streamed and not, through /predictions and the OpenAI routes, ending by length, by a stop
string and by the client leaving: every LLM family, issue 11). Then, through Prometheus'
HTTP API:

  * every expression of every panel of deploy/grafana/dashboards/*.json, with the
    dashboard's own variables resolved the way Grafana does (their label_values() queries
    asked of this Prometheus, "All" selected), returns a sample with a finite value, and
    every series selector inside it selects at least one series (so a renamed metric hidden
    behind `or vector(0)` is caught too);
  * every recording rule of the shipped files returns data;
  * every rule loaded from the files evaluates with health "ok";
  * TserveHigh5xxRatio (and the other alerts whose condition the load creates) fire.

Panels and rules are read from the files, never listed here. A self-test renames, one at a
time, every metric each panel reads and every recording rule, and checks that the same
checker then reports the panel or rule. Whatever fails is reported with its dashboard,
panel title, target and the expression as queried.

A second test runs scripts/monitor.sh (`make monitor`) next to a tserve: it loads the
shipped config and rules, points at the given tserve, and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import glob
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import requests
import yaml

import e2e_util
from e2e_util import (ARCHIVER, REPO_ROOT, free_ports, require_tool, store_with, wait_for,
                      wait_healthy)

sys.path.insert(0, str(REPO_ROOT / "tests" / "monitoring"))
import check_dashboards  # noqa: E402  (panel walking and Grafana's variable syntax)
from check_rules import metric_names  # noqa: E402

PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD_GLOB = str(REPO_ROOT / "deploy" / "grafana" / "dashboards" / "*.json")
MONITOR_SH = REPO_ROOT / "scripts" / "monitor.sh"

INTERVAL = "1s"  # scrape and evaluation interval of the test's Prometheus
# Grafana's time variables for a dashboard looking at the last 5 minutes of 1 s data.
# $__rate_interval is wider than Grafana would pick (4 scrapes) so that every rate()
# still covers the load when the checks run, a few seconds after it.
TIME_VARIABLES = {
    "__rate_interval": "2m", "__interval": "1s", "__interval_ms": "1000",
    "__range": "5m", "__range_s": "300", "__range_ms": "300000",
}
TARGET_TIMEOUT_S = 30  # Prometheus 2.42 scrapes a new target ~6 s after it starts
SETTLE_TIMEOUT_S = 30  # from the end of the load until every check passes

# (dashboard file, panel title) -> why that panel may have no data in this test. Every
# panel must show data in a test that can create its condition, so keep this empty unless
# a series truly cannot exist here; test_allowed_empty_panels_exist keeps it honest.
ALLOWED_EMPTY: dict[tuple[str, str], str] = {}

# Alerts whose condition the load creates, and how. The 5XX ratio alert is the one the
# issue names; the others come for free from the same load.
FORCED_FIRING = {
    "TserveHigh5xxRatio": "handler errors (500) and 503s are far more than 5% of responses",
    "TserveRequestsRejected": "the slow model's queue overflows and `broken` has no worker",
    "TserveModelLoadFailures": "`broken`'s workers fail to load (delay_ms: bad)",
    "TserveReadyWorkersBelowMinimum": "`broken` is scaled to one worker, none is ready",
}

# What the clients must have seen, by kind of request (see _drive_load).
SLOW_DELAY_MS = 1500  # the slow model's inference time, above its responseTimeout of 1 s
JOB_QUEUE_SIZE = 4
# The demo LLM (build/model_store/llm.mar: max_num_seqs 16, max_model_len 256).
# Concurrent streams on /predictions/llm, each LLM_STREAM_TOKENS long: no more than its queue
# holds (job_queue_size applies to the llm as to any model: more arriving within one
# iteration of its scheduler would be refused with 503).
LLM_STREAMS = JOB_QUEUE_SIZE
LLM_STREAM_TOKENS = 16
LLM_ABORT_MAX_TOKENS = 240  # the generation the client leaves after its first token
LLM_TIMEOUT_S = 60


# ---------------------------------------------------------------------------------------
# Prometheus with the shipped configuration


def _rewrite_config(metrics_target: str, prom_address: str, rule_files: list[pathlib.Path]) -> dict:
    """The shipped prometheus.yml with only the intervals, targets and rule paths changed."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"]["scrape_interval"] = INTERVAL
    cfg["global"]["evaluation_interval"] = INTERVAL
    shipped_rules = sorted((PROM_DIR / p).resolve() for p in cfg.get("rule_files") or [])
    on_disk = sorted(pathlib.Path(p).resolve()
                     for p in glob.glob(str(PROM_DIR / "rules" / "*.yml")))
    assert shipped_rules == on_disk, (
        f"prometheus.yml loads {shipped_rules}, deploy/prometheus/rules has {on_disk}: "
        "a rule file the shipped config does not load is never evaluated")
    cfg["rule_files"] = [str(p) for p in rule_files]
    targets = {"torchserve": metrics_target, "prometheus": prom_address}
    jobs = [job["job_name"] for job in cfg["scrape_configs"]]
    assert sorted(jobs) == sorted(targets), (
        f"prometheus.yml has the jobs {jobs}; this test knows where to point {sorted(targets)} "
        "only: teach it the new job")
    for job in cfg["scrape_configs"]:
        statics = job.get("static_configs")
        assert statics and len(statics) == 1, (
            f"job {job['job_name']}: one static_configs entry expected")
        statics[0]["targets"] = [targets[job["job_name"]]]
    return cfg


def _rewrite_rules(tmp: pathlib.Path) -> list[pathlib.Path]:
    """Copies of the shipped rule files, every alert's `for:` set to 0s.

    The shipped `for:` durations (2m to 10m) are for production; this test runs for seconds,
    so an alert fires at the first evaluation where its expression holds. Expressions,
    labels and annotations are untouched."""
    out = []
    for path in sorted(glob.glob(str(PROM_DIR / "rules" / "*.yml"))):
        doc = yaml.safe_load(pathlib.Path(path).read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "0s"
        dst = tmp / os.path.basename(path)
        dst.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
        out.append(dst)
    return out


@dataclasses.dataclass(frozen=True)
class Rule:
    file: str
    kind: str  # "recording rule" | "alert"
    name: str
    expr: str

    def where(self) -> str:
        return f"{self.file}: {self.kind} {self.name}"


def shipped_rules() -> list[Rule]:
    """Every rule of the shipped rule files, in file order."""
    rules = []
    for path in sorted(glob.glob(str(PROM_DIR / "rules" / "*.yml"))):
        for group in yaml.safe_load(pathlib.Path(path).read_text())["groups"]:
            for r in group["rules"]:
                kind = "recording rule" if "record" in r else "alert"
                rules.append(Rule(os.path.basename(path), kind, r.get("record") or r["alert"],
                                  " ".join(str(r["expr"]).split())))
    return rules


def names(rules: list[Rule], kind: str) -> list[str]:
    return [r.name for r in rules if r.kind == kind]


@dataclasses.dataclass
class Prometheus:
    proc: subprocess.Popen
    api: str
    log: pathlib.Path

    def alive(self) -> None:
        assert self.proc.poll() is None, "prometheus exited:\n" + self.log.read_text()[-3000:]

    def get(self, path: str, **params) -> dict:
        r = requests.get(f"{self.api}{path}", params=params, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise PromError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list:
        return self.get("/query", query=expr)["result"]


class PromError(Exception):
    """Prometheus refused a query (a PromQL error)."""


@contextlib.contextmanager
def shipped_prometheus(tmp: pathlib.Path, metrics_port: int):
    binary = require_tool("prometheus")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    cfg = _rewrite_config(f"127.0.0.1:{metrics_port}", address, _rewrite_rules(tmp))
    cfg_path = tmp / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = tmp / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={cfg_path}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address={address}", "--log.level=info"],
            cwd=tmp, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield Prometheus(proc, f"http://{address}/api/v1", log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_targets_up(prom: Prometheus, timeout: float = TARGET_TIMEOUT_S) -> None:
    last = {}

    def up():
        prom.alive()
        targets = prom.get("/targets")["activeTargets"]
        last["targets"] = [(t["labels"]["job"], t["health"], t["lastError"]) for t in targets]
        return targets and all(t["health"] == "up" for t in targets)
    try:
        wait_for(up, timeout, "every target of the shipped config to be up", interval=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ntargets: {last}\nprometheus log:\n"
                             f"{prom.log.read_text()[-3000:]}") from None


def wait_ingested(prom: Prometheus, server, timeout: float = TARGET_TIMEOUT_S) -> None:
    """Until Prometheus holds a sample of every series tserve exposes now."""
    exposed = sum(len(f.samples) for f in e2e_util.parse_exposition(server.metrics().text))
    last = {}

    def ingested():
        prom.alive()
        r = prom.query('count({job="torchserve",__name__!~"up|scrape_.*"})')
        last["n"] = int(float(r[0]["value"][1])) if r else 0
        return last["n"] >= exposed
    try:
        wait_for(ingested, timeout, f"Prometheus to hold all {exposed} series of tserve",
                 interval=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: it has {last.get('n')}") from None


# ---------------------------------------------------------------------------------------
# tserve and the load


def _noop_archive(store: pathlib.Path, name: str, model_config: str) -> None:
    staging = store.parent / f"{name}-config"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "model-config.yaml").write_text(model_config)
    subprocess.run([str(ARCHIVER), "--model-name", name, "--version", "1.0", "--handler",
                    "noop", "--config-file", str(staging / "model-config.yaml"),
                    "--export-path", str(store)], check=True, timeout=60, capture_output=True)


def prepare_store(work: pathlib.Path) -> pathlib.Path:
    """noop and linear (demo archives), the example plugin (raises on "raise": 500), `slow`
    (one worker, 1.5 s per request, responseTimeout 1 s: 408s, and 503s when its queue is
    full), `broken` (its workers fail to load: an invalid delay_ms) and the demo LLM."""
    store = store_with(work, "noop.mar", "linear.mar", "llm.mar")
    e2e_util.archive_example_plugin(store)
    _noop_archive(store, "slow", f"minWorkers: 1\nmaxWorkers: 1\nbatchSize: 1\n"
                                 f"delay_ms: {SLOW_DELAY_MS}\nresponseTimeout: 1\n")
    _noop_archive(store, "broken", "minWorkers: 1\nmaxWorkers: 1\ndelay_ms: bad\n")
    return store


def _post(server, path: str, **kwargs) -> int:
    kwargs.setdefault("timeout", 30)
    return requests.post(f"{server.inference_url}{path}", **kwargs).status_code


def _llm_finish(server, path: str, body: dict) -> tuple[int, str | None]:
    """A non-streamed OpenAI request: (status, finish_reason of its choice)."""
    r = requests.post(f"{server.inference_url}{path}", json=body, timeout=LLM_TIMEOUT_S)
    reason = r.json()["choices"][0]["finish_reason"] if r.status_code == 200 else None
    return r.status_code, reason


def _llm_stream(server, path: str, body: dict) -> tuple[int, int]:
    """A streamed request read to its end: (status, chunks received)."""
    with requests.post(f"{server.inference_url}{path}", json=body, stream=True,
                       timeout=LLM_TIMEOUT_S) as r:
        return r.status_code, sum(1 for chunk in r.iter_content(None) if chunk)


def _abort_count(server) -> float:
    return e2e_util.metric_value(server.metrics().text, "ts_request_success_total",
                                 model_name="llm", finished_reason="abort") or 0.0


def _drive_llm(server, seen: dict[str, list[int]]) -> None:
    """Generations that give every LLM family (and so every LLM panel and rule) data: greedy
    streams on /predictions, OpenAI completions ending by length and by a stop string, a
    streamed chat, and a stream whose client leaves after the first token (abort)."""
    stream = {"prompt": "Hello", "max_tokens": LLM_STREAM_TOKENS, "temperature": 0}
    with concurrent.futures.ThreadPoolExecutor(LLM_STREAMS) as pool:
        streams = list(pool.map(lambda _: _llm_stream(server, "/predictions/llm", stream),
                                range(LLM_STREAMS)))
    seen.setdefault("llm_stream", []).extend(status for status, _ in streams)
    # /predictions streams one chunk per token (ts_stream_next); a greedy 16-token answer
    # could be held back only at a multi-byte character, which the demo model's ASCII avoids.
    assert all(n > 1 for _, n in streams), f"streams not streamed (chunks per answer): {streams}"

    completion = {"model": "llm", "prompt": "Once", "max_tokens": 8, "temperature": 0}
    status, reason = _llm_finish(server, "/v1/completions", completion)
    seen.setdefault("llm_length", []).append(status)
    assert reason == "length", f"/v1/completions with max_tokens 8 finished by {reason!r}"
    # The same greedy completion stops at a piece of its own text (finished_reason="stop").
    text = requests.post(f"{server.inference_url}/v1/completions", json=completion,
                         timeout=LLM_TIMEOUT_S).json()["choices"][0]["text"]
    assert len(text) >= 4, f"the greedy completion is too short to pick a stop string: {text!r}"
    status, reason = _llm_finish(server, "/v1/completions", dict(completion, stop=[text[2:4]]))
    seen.setdefault("llm_stop", []).append(status)
    assert reason == "stop", f"/v1/completions with stop {text[2:4]!r} finished by {reason!r}"
    chat = {"model": "llm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "stream": True}
    status, chunks = _llm_stream(server, "/v1/chat/completions", chat)
    seen.setdefault("llm_chat_stream", []).append(status)
    assert chunks >= 1, "the streamed chat sent nothing"

    # A client that leaves after the first token: its sequence is aborted at the next
    # iteration, long before LLM_ABORT_MAX_TOKENS are made, and counted as finished "abort".
    before = _abort_count(server)
    with requests.Session() as session:
        r = session.post(f"{server.inference_url}/predictions/llm", stream=True,
                         timeout=LLM_TIMEOUT_S,
                         json={"prompt": "Hi", "max_tokens": LLM_ABORT_MAX_TOKENS,
                               "temperature": 0, "ignore_eos": True})
        seen.setdefault("llm_abort", []).append(r.status_code)
        assert next(r.iter_content(None)), "no first token"
        r.close()
    wait_for(lambda: _abort_count(server) == before + 1, LLM_TIMEOUT_S,
             "the generation the client left to be counted as finished_reason=\"abort\"")


def _drive_load(server) -> dict[str, list[int]]:
    """A bounded load; returns the statuses the clients saw, by kind."""
    seen: dict[str, list[int]] = {}

    def run(kind, n, fn):
        seen.setdefault(kind, []).extend(fn() for _ in range(n))
    run("noop", 20, lambda: _post(server, "/predictions/noop", data=b"hello"))
    # An explicit version: TorchServe's counters then carry model_version="1.0", not "default".
    run("noop_v1", 10, lambda: _post(server, "/predictions/noop/1.0", data=b"hello"))
    run("linear", 10, lambda: _post(server, "/predictions/linear", json=[1.0, 2.0, 3.0, 4.0]))
    run("bad_tensor", 5, lambda: _post(server, "/predictions/linear", data=b"[1,2,",
                                       headers={"Content-Type": "application/json"}))
    run("unknown_model", 5, lambda: _post(server, "/predictions/nosuch", data=b"x"))
    run("handler_error", 20, lambda: _post(server, "/predictions/example", data=b"raise"))
    run("no_worker", 3, lambda: _post(server, "/predictions/broken", data=b"x"))
    # One request runs, JOB_QUEUE_SIZE wait, the rest are refused; those that got in time
    # out after 1 s (responseTimeout), the running one included.
    n = 2 * JOB_QUEUE_SIZE + 2
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        seen["slow"] = list(pool.map(lambda _: _post(server, "/predictions/slow", data=b"s"),
                                     range(n)))
    _drive_llm(server, seen)
    return seen


def _check_load(seen: dict[str, list[int]]) -> None:
    expect = {"noop": {200}, "noop_v1": {200}, "linear": {200}, "bad_tensor": {400},
              "unknown_model": {404}, "handler_error": {500}, "no_worker": {503},
              "slow": {408, 503}, "llm_stream": {200}, "llm_length": {200}, "llm_stop": {200},
              "llm_chat_stream": {200}, "llm_abort": {200}}
    for kind, statuses in expect.items():
        assert set(seen[kind]) == statuses, (
            f"{kind}: the clients saw {seen[kind]}, expected {statuses}")


# ---------------------------------------------------------------------------------------
# The checker: dashboards, recording rules, rule health, alerts


@dataclasses.dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # file name
    title: str
    ref_id: str
    expr: str  # as in the dashboard, variables unresolved

    def where(self) -> str:
        return f"{self.dashboard}: panel '{self.title}' target {self.ref_id}"


def dashboard_queries() -> tuple[list[PanelQuery], dict[str, list[dict]]]:
    """Every panel target with an expr, and each dashboard's template variables."""
    queries, variables = [], {}
    paths = sorted(glob.glob(DASHBOARD_GLOB))
    assert paths, f"no dashboards match {DASHBOARD_GLOB}"
    for path in paths:
        name = os.path.basename(path)
        dash = json.loads(pathlib.Path(path).read_text())
        variables[name] = dash.get("templating", {}).get("list", [])
        for panel in check_dashboards.panels_of(dash):
            if panel.get("type") == "row":
                continue
            targets = [t for t in panel.get("targets") or [] if str(t.get("expr", "")).strip()]
            assert targets, f"{name}: panel '{panel.get('title')}' has no query"
            for t in targets:
                queries.append(PanelQuery(name, panel.get("title", ""), str(t.get("refId")),
                                          t["expr"]))
    return queries, variables


def grafana_regex_escape(value: str) -> str:
    """Grafana's escaping of a multi-value variable's values for Prometheus (=~)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value)


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's substitution of $var, ${var}, ${var:fmt} and [[var]]; fails on an unknown one."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        assert name in values, f"variable ${name} has no value (used in {text!r})"
        return values[name]
    return check_dashboards.VAR_RE.sub(repl, text)


def selectors(expr: str) -> set[str]:
    """The series selectors (name and label matchers) an expression reads, each queryable
    on its own as an instant vector."""
    out = set()
    for name in metric_names(expr):
        for m in re.finditer(r"(?<![\w:.\"])" + re.escape(name) + r"(?![\w:])\s*(\{[^}]*\})?", expr):
            out.add(name + (m.group(1) or ""))
    return out


def finite(result: list) -> bool:
    for s in result:
        values = [s["value"]] if "value" in s else s.get("values", [])
        if any(math.isfinite(float(v[1])) for v in values):
            return True
    return False


class Checker:
    """Asks Prometheus about every panel, rule and alert; collects one line per problem."""

    def __init__(self, prom: Prometheus):
        self.prom = prom
        self._selector_cache: dict[str, bool] = {}

    def resolve_variables(self, dashboard: str,
                          defs: list[dict]) -> tuple[dict[str, str], list[str]]:
        """Each query variable's values from its own label_values(selector, label), asked of
        Prometheus in dashboard order, with "All" selected (every value, as a regex)."""
        values, problems = dict(TIME_VARIABLES), []
        for v in defs:
            if v.get("type") != "query":
                continue
            q = check_dashboards.variable_query(v)
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
            assert m, f"{dashboard}: variable {v['name']}: not label_values(selector, label): {q}"
            selector = substitute(m.group(1), values)
            try:
                found = sorted(self.prom.get(f"/label/{m.group(2)}/values",
                                             **{"match[]": selector}))
            except PromError as exc:
                found = []
                problems.append(f"{dashboard}: variable {v['name']}: {exc} (query {selector})")
            if not found:
                problems.append(f"{dashboard}: variable {v['name']}: label_values found nothing "
                                f"(selector {selector}, label {m.group(2)})")
            values[v["name"]] = "(" + "|".join(grafana_regex_escape(x) for x in found) + ")"
        return values, problems

    def expr_problems(self, where: str, expr: str) -> list[str]:
        """No data, only NaN, a PromQL error, or a selector inside selecting nothing."""
        try:
            result = self.prom.query(expr)
        except PromError as exc:
            return [f"{where}: Prometheus refused it: {exc}\n    expr: {expr}"]
        problems = []
        if not result:
            problems.append(f"{where}: no data\n    expr: {expr}")
        elif not finite(result):
            problems.append(f"{where}: only NaN/Inf values {result[:3]}\n    expr: {expr}")
        return problems + self.selector_problems(where, expr)

    def panel_problems(self, queries: list[PanelQuery],
                       variables: dict[str, list[dict]]) -> list[str]:
        problems = []
        resolved = {}
        for dashboard, defs in variables.items():
            resolved[dashboard], p = self.resolve_variables(dashboard, defs)
            problems += p
        for q in queries:
            found = self.expr_problems(q.where(), substitute(q.expr, resolved[q.dashboard]))
            if found and (q.dashboard, q.title) in ALLOWED_EMPTY:
                continue
            problems += found
        return problems

    def selector_problems(self, where: str, expr: str) -> list[str]:
        """A selector of the expression that selects no series."""
        problems = []
        for sel in sorted(selectors(expr)):
            if sel not in self._selector_cache:
                try:
                    self._selector_cache[sel] = bool(self.prom.query(sel))
                except PromError as exc:
                    problems.append(f"{where}: selector {sel}: {exc}")
                    continue
            if not self._selector_cache[sel]:
                problems.append(f"{where}: selector {sel} selects no series (a renamed metric "
                                f"or label?)\n    expr: {expr}")
        return problems

    def rule_problems(self, rules: list[Rule]) -> list[str]:
        """Every recording rule returns data; every selector in every rule (alerts too: an
        alert over a metric that does not exist evaluates "ok" and never fires) selects
        series."""
        problems = []
        for r in rules:
            if r.kind == "recording rule":
                problems += self.expr_problems(r.where(), r.name)
            problems += self.selector_problems(r.where(), r.expr)
        return problems

    @staticmethod
    def rule_health_problems(groups: list[dict], rules: list[Rule]) -> list[str]:
        """Every rule of the files is loaded and evaluates without error."""
        problems, loaded = [], {}
        for g in groups:
            for r in g["rules"]:
                loaded[r["name"]] = r
                if r.get("health") != "ok" or r.get("lastError"):
                    problems.append(f"rule {r['name']} ({r.get('type')}): health "
                                    f"{r.get('health')!r} {r.get('lastError', '')}\n"
                                    f"    expr: {r.get('query')}")
        for r in rules:
            if r.name not in loaded:
                problems.append(f"{r.where()} is not loaded by Prometheus")
        return problems

    def alert_problems(self, must_fire: dict[str, str]) -> list[str]:
        firing = {a["labels"]["alertname"] for a in self.prom.get("/alerts")["alerts"]
                  if a["state"] == "firing"}
        return [f"alert {name} is not firing, though {why}" for name, why in must_fire.items()
                if name not in firing]

    def all_problems(self, queries, variables, rules) -> list[str]:
        self._selector_cache.clear()
        self.prom.alive()
        return (self.panel_problems(queries, variables) + self.rule_problems(rules)
                + self.rule_health_problems(self.prom.get("/rules")["groups"], rules)
                + self.alert_problems(FORCED_FIRING))


def wait_all_pass(checker: Checker, queries, variables, rules) -> None:
    """Polls until every check passes; fails with every problem of the last round."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        problems = checker.all_problems(queries, variables, rules)
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(problems)} problems after {SETTLE_TIMEOUT_S}s:\n"
                                 + "\n".join(problems))
        time.sleep(1.0)


def rename(expr: str, name: str) -> str:
    """expr with the series name `name` renamed (not inside longer names or strings)."""
    return re.sub(r"(?<![\w:.\"])" + re.escape(name) + r"(?![\w:])", name + "_renamed", expr)


def self_test(checker: Checker, queries, variables, rules) -> None:
    """The checker must report a panel or rule when any one metric it reads is renamed, a
    recording rule queried under a changed name, a rule Prometheus calls unhealthy and a
    rule of the files it did not load."""
    resolved = {d: checker.resolve_variables(d, defs)[0] for d, defs in variables.items()}
    cases = [(q.where(), substitute(q.expr, resolved[q.dashboard])) for q in queries]
    cases += [(r.where(), r.expr) for r in rules]
    missed, tried = [], 0
    for where, expr in cases:
        for name in sorted(metric_names(expr)):
            renamed = rename(expr, name)
            assert renamed != expr, (where, name)
            tried += 1
            if not checker.expr_problems(where, renamed):
                missed.append(f"{where}: {name} renamed, still passes: {renamed}")
    assert tried >= len(cases)
    for r in rules:
        if r.kind == "recording rule" and not checker.expr_problems(r.where(), r.name + "_renamed"):
            missed.append(f"{r.where()}: renamed, still passes")
    fake = [{"rules": [{"name": "R", "type": "alerting", "health": "err", "lastError": "boom",
                        "query": "x"}]}]
    if not Checker.rule_health_problems(fake, [Rule("f", "alert", "R", "x")]):
        missed.append("a rule with health 'err' passes")
    if not Checker.rule_health_problems([], [Rule("f", "recording rule", "missing:rule", "x")]):
        missed.append("a rule of the files that Prometheus did not load passes")
    assert not missed, "the live checker misses broken queries:\n" + "\n".join(missed)


# ---------------------------------------------------------------------------------------
# Tests


def test_every_panel_rule_and_alert_has_live_data(tserve, tmp_path):
    queries, variables = dashboard_queries()
    rules = shipped_rules()
    for name in FORCED_FIRING:
        assert name in names(rules, "alert"), f"FORCED_FIRING names {name}, which the shipped rules lack"

    store = prepare_store(tmp_path / "w")
    server = tserve(config={
        "model_store": str(store),
        "load_models": "noop.mar,linear.mar,example.mar,slow.mar,llm.mar",
        "default_workers_per_model": 1,
        "job_queue_size": JOB_QUEUE_SIZE,
        "enable_model_api": "true",
    })
    with shipped_prometheus(tmp_path / "prom", server.ports["metrics"]) as prom:
        wait_healthy(server)
        r = requests.post(f"{server.management_url}/models", timeout=30,
                          params={"url": "broken.mar", "initial_workers": 1, "synchronous": "false"})
        assert r.status_code == 202, r.text
        wait_targets_up(prom)
        # tserve exposes a counter from its first increment, so Prometheus' first sample of a
        # series already holds the load that created it, and rate() over it reads 0. As in
        # production, where traffic never stops, the load runs twice: the first creates every
        # series, the second, once Prometheus holds a sample of each, moves them.
        _check_load(_drive_load(server))
        wait_ingested(prom, server)
        _check_load(_drive_load(server))
        # (/ping says Unhealthy while `broken` has no ready worker; the process must live.)
        assert server.alive(), "tserve died:\n" + server.describe()

        checker = Checker(prom)
        wait_all_pass(checker, queries, variables, rules)
        self_test(checker, queries, variables, rules)


def test_allowed_empty_panels_exist():
    """Every allow-list entry names a panel that exists (a removed or renamed panel must
    leave the list too) and says why."""
    queries, _ = dashboard_queries()
    panels = {(q.dashboard, q.title) for q in queries}
    for key, reason in ALLOWED_EMPTY.items():
        assert key in panels, f"ALLOWED_EMPTY names {key}, which no dashboard has"
        assert reason.strip(), f"ALLOWED_EMPTY {key}: no reason given"


def test_selectors_and_escaping():
    """The helpers the live check relies on."""
    assert selectors('sum(rate(a_total{x=~"(1|2)"}[1m])) or vector(0) / b') == {'a_total{x=~"(1|2)"}', "b"}
    assert selectors('histogram_quantile(0.5, sum by (le) (rate(h_bucket[1m])))') == {"h_bucket"}
    assert selectors("job:x:rate5m{job=\"a\"} > 0") == {'job:x:rate5m{job="a"}'}
    assert grafana_regex_escape("127.0.0.1:8082") == "127\\\\.0\\\\.0\\\\.1:8082"
    assert substitute('x{i=~"$instance"}[$__rate_interval]',
                      {"instance": "(a)", "__rate_interval": "1m"}) == 'x{i=~"(a)"}[1m]'


# ---------------------------------------------------------------------------------------
# scripts/monitor.sh (make monitor)


def _monitor(env_extra: dict, tmp: pathlib.Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(env_extra)
    out = open(tmp / "monitor.out", "wb")
    return subprocess.Popen(["bash", str(MONITOR_SH)], cwd=REPO_ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def test_monitor_script_runs_prometheus_next_to_tserve(server, tmp_path):
    require_tool("prometheus")
    port = free_ports(1)[0]
    data = tmp_path / "data"
    proc = _monitor({"TSERVE_METRICS_ADDRESS": f"127.0.0.1:{server.ports['metrics']}",
                     "PROMETHEUS_LISTEN": f"127.0.0.1:{port}", "PROMETHEUS_DATA": str(data)},
                    tmp_path)
    out = tmp_path / "monitor.out"
    prom = Prometheus(proc, f"http://127.0.0.1:{port}/api/v1", out)
    try:
        targets = wait_for(lambda: prom.alive() or prom.get("/targets")["activeTargets"], 20,
                           "monitor.sh's Prometheus to answer", interval=0.2)
        by_job = {t["labels"]["job"]: t["scrapeUrl"] for t in targets}
        assert by_job["torchserve"] == f"http://127.0.0.1:{server.ports['metrics']}/metrics", by_job
        loaded = [r["name"] for g in prom.get("/rules")["groups"] for r in g["rules"]]
        assert sorted(loaded) == sorted(r.name for r in shipped_rules()), loaded
        text = out.read_text()
        for url in (f"http://127.0.0.1:{port}/targets", f"http://127.0.0.1:{port}/alerts",
                    "deploy/grafana/provisioning"):
            assert url in text, f"monitor.sh does not print {url}:\n{text}"
    finally:
        # Ctrl-C: SIGINT to the whole foreground process group.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("monitor.sh did not stop within 20 s of Ctrl-C:\n"
                                 + out.read_text()[-3000:])
    assert rc == 0, f"monitor.sh exited {rc} after Ctrl-C:\n" + out.read_text()[-3000:]
    assert not e2e_util.port_accepts(port), "Prometheus still listens after Ctrl-C"


def test_monitor_script_refuses_a_silent_tserve(tmp_path):
    require_tool("prometheus")
    dead = free_ports(1)[0]
    proc = _monitor({"TSERVE_METRICS_ADDRESS": f"127.0.0.1:{dead}",
                     "PROMETHEUS_LISTEN": f"127.0.0.1:{free_ports(1)[0]}"}, tmp_path)
    rc = proc.wait(timeout=30)
    text = (tmp_path / "monitor.out").read_text()
    assert rc != 0, text
    assert f"127.0.0.1:{dead}" in text and "does not answer" in text, text
