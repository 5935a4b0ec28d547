#!/usr/bin/env python3
"""Offline checks of tserve's Grafana dashboards and provisioning (docs/monitoring.md).

For every deploy/grafana/dashboards/*.json:
  layout     uid, title and schemaVersion set; every panel on the 24-column grid
             (0 <= x, x + w <= 24, w, h >= 1); no two panels overlap; panel ids and
             titles unique in the dashboard
  variables  the datasource (type datasource, prometheus), job, instance and model
             variables are defined; every $var / ${var} / [[var]] used by a panel or a
             variable query is defined or one of Grafana's built-ins
  queries    every non-row panel has a target with an expr; every rate(), irate() and
             increase() has the range [$__rate_interval] ($__range for totals over the
             dashboard's time range, in instant queries only)
  promql     with the variables substituted, every expression and every label_values()
             selector passes the real PromQL parser (`promtool check rules` on a generated
             rule file)
  names      every metric an expression reads is a family of config/metrics.yaml
             (histograms as _bucket/_sum/_count), a process_* family of docs/metrics.md,
             `up`, or a recording rule of deploy/prometheus/rules/tserve-recording.yml
Provisioning: the datasource file names a prometheus datasource at http://localhost:9090
and the dashboards file a file provider.
Self-test (run every time): copies with a renamed metric, a fixed rate range, an
overlapping panel and an undefined variable must each be refused.
Needs python3-yaml and promtool (Debian: prometheus). Exit status 1 with a FAIL line per
problem.
"""
import argparse
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_rules import catalogue, load_rules, metric_family, metric_names  # noqa: E402

REQUIRED_VARS = ("datasource", "job", "instance", "model")
BUILTIN_VARS = {
    "__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
    "__from", "__to", "__dashboard", "__user", "__org", "__all", "__name",
}
# Values substituted before parsing: an example model, the shipped job and instance.
SUBSTITUTE = {
    "model": "noop", "job": "torchserve", "instance": "localhost:8082",
    "__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000",
    "__range": "1h", "__range_s": "3600", "__range_ms": "3600000",
}
VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
RATE_RE = re.compile(r"\b(rate|irate|increase)\s*\(")


def used_vars(text):
    return {a or b or c for a, b, c in VAR_RE.findall(text)}


def substitute(text):
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return SUBSTITUTE.get(name, m.group(0))
    return VAR_RE.sub(repl, text)


def call_argument(expr, open_paren):
    """The text between the parenthesis at open_paren and its match."""
    depth = 0
    for i in range(open_paren, len(expr)):
        if expr[i] == "(":
            depth += 1
        elif expr[i] == ")":
            depth -= 1
            if depth == 0:
                return expr[open_paren + 1:i]
    return expr[open_paren + 1:]


def label_values_selector(query):
    """The series selector of a label_values(selector, label) query, or None."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.S)
    return m.group(1) if m else None


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:  # panels inside a collapsed row
            yield q


def variable_query(v):
    q = v.get("query", "")
    return q.get("query", "") if isinstance(q, dict) else str(q)


def check_dashboard(path, dash, records, families, histograms, problems, exprs):
    where = os.path.basename(path)
    for key in ("uid", "title", "schemaVersion"):
        if not dash.get(key):
            problems.append(f"{where}: no {key}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    for name in REQUIRED_VARS:
        if name not in variables:
            problems.append(f"{where}: template variable ${name} is not defined")
    ds = variables.get("datasource")
    if ds and (ds.get("type") != "datasource" or ds.get("query") != "prometheus"):
        problems.append(f"{where}: $datasource is not a prometheus datasource variable")
    defined = set(variables) | BUILTIN_VARS

    def uses(text, what):
        for name in sorted(used_vars(text) - defined):
            problems.append(f"{what}: variable ${name} is not defined")

    for name, v in variables.items():
        if v.get("type") == "query":
            q = variable_query(v)
            uses(q, f"{where}: variable {name}")
            sel = label_values_selector(q)
            if sel is None:
                problems.append(f"{where}: variable {name}: query is not label_values(selector, label): {q}")
            else:
                exprs.append((f"{where}: variable {name}", sel))

    ids, titles, boxes = {}, {}, []
    for p in panels_of(dash):
        title = p.get("title", "")
        pw = f"{where}: panel {p.get('id')} '{title}'"
        if p.get("id") in ids:
            problems.append(f"{pw}: id also used by '{ids[p.get('id')]}'")
        ids[p.get("id")] = title
        if not title:
            problems.append(f"{pw}: no title")
        elif title in titles:
            problems.append(f"{pw}: title used twice")
        titles[title] = p.get("id")
        g = p.get("gridPos") or {}
        try:
            x, y, w, h = (int(g[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            problems.append(f"{pw}: gridPos needs integer x, y, w, h")
            continue
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > 24:
            problems.append(f"{pw}: gridPos {g} is off the 24-column grid")
        for other, (ox, oy, ow, oh) in boxes:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                problems.append(f"{pw}: overlaps panel '{other}'")
        boxes.append((title, (x, y, w, h)))
        if p.get("type") == "row":
            continue
        targets = [t for t in p.get("targets") or [] if str(t.get("expr", "")).strip()]
        if not targets:
            problems.append(f"{pw}: no target with an expr")
        for t in targets:
            expr = t["expr"]
            tw = f"{pw} target {t.get('refId')}"
            uses(expr + " " + str(t.get("legendFormat", "")), tw)
            uses(json.dumps(p.get("datasource", "")), tw)
            instant = t.get("instant") and not t.get("range")
            for m in RATE_RE.finditer(expr):
                arg = call_argument(expr, m.end() - 1)
                ranges = re.findall(r"\[([^\]]*)\]", arg)
                ok = ranges and all(r == "$__rate_interval" or (instant and r == "$__range") for r in ranges)
                if not ok:
                    problems.append(f"{tw}: {m.group(1)}() without [$__rate_interval]: {arg}")
            exprs.append((tw, expr))


def check_names(exprs, records, families, histograms, problems):
    for where, expr in exprs:
        for name in sorted(metric_names(substitute(expr))):
            family, problem = metric_family(name, records, histograms)
            if problem:
                problems.append(f"{where}: {name}: {problem}")
            if family is None:
                continue
            if family not in families:
                problems.append(f"{where}: {name}: not a metric of config/metrics.yaml (nor process_*, up, a recording rule)")


def check_promql(exprs, problems, promtool):
    """Parses every expression with promtool; one rule per expression."""
    rules = [{"record": f"dashboard_check:expr_{i}", "expr": substitute(e)} for i, (_, e) in enumerate(exprs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-exprs.yml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f, width=1000)
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            out = r.stdout + r.stderr
            # Map "group ..., rule N" back to the panel when promtool names it.
            for line in out.splitlines():
                m = re.search(r"rule (\d+)", line)
                if m and int(m.group(1)) - 1 < len(exprs):
                    w, e = exprs[int(m.group(1)) - 1]
                    problems.append(f"{w}: promtool: {line.strip()} (expr: {substitute(e)})")
            problems.append(f"promtool check rules refused the dashboard expressions:\n{out.strip()}")


def check_provisioning(root, problems):
    ds_path = os.path.join(root, "provisioning/datasources/prometheus.yml")
    db_path = os.path.join(root, "provisioning/dashboards/tserve.yml")
    try:
        ds = yaml.safe_load(open(ds_path))
        if not any(d.get("type") == "prometheus" and d.get("url") == "http://localhost:9090"
                   for d in ds.get("datasources", [])):
            problems.append(f"{ds_path}: no prometheus datasource at http://localhost:9090")
        db = yaml.safe_load(open(db_path))
        if not any(p.get("type") == "file" and (p.get("options") or {}).get("path")
                   for p in db.get("providers", [])):
            problems.append(f"{db_path}: no file provider with options.path")
    except (OSError, yaml.YAMLError, AttributeError) as e:
        problems.append(f"provisioning: {e}")


def run(paths, args, promtool, with_promql=True):
    problems, exprs = [], []
    records, _, _ = load_rules([args.recording_rules])
    families, histograms, _ = catalogue(args.metrics_yaml, args.docs)
    if not paths:
        problems.append("no dashboards found")
    uids = {}
    for path in paths:
        try:
            with open(path) as f:
                dash = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {e}")
            continue
        if dash.get("uid") in uids:
            problems.append(f"{path}: uid {dash.get('uid')} also used by {uids[dash.get('uid')]}")
        uids[dash.get("uid")] = path
        check_dashboard(path, dash, records, families, histograms, problems, exprs)
    check_names(exprs, records, families, histograms, problems)
    if with_promql and exprs:
        check_promql(exprs, problems, promtool)
    return problems, exprs


def self_test(paths, args, promtool):
    """Each broken copy must be refused; returns a list of failures of the checker."""
    failures = []
    dashes = {p: json.load(open(p)) for p in paths}
    def mutated(name, mutate, with_promql=False):
        tmp = tempfile.mkdtemp()
        try:
            out = []
            for p, d in dashes.items():
                d = copy.deepcopy(d)
                d = mutate(d)  # every dashboard: a mutation one lacks changes nothing there
                q = os.path.join(tmp, os.path.basename(p))
                with open(q, "w") as f:
                    json.dump(d, f)
                out.append(q)
            problems, _ = run(out, args, promtool, with_promql)
            if not problems:
                failures.append(f"self-test: the check accepted {name}")
            else:
                print(f"ok: self-test refuses {name} ({problems[0][:110]}...)")
        finally:
            shutil.rmtree(tmp)

    def text_sub(old, new):
        return lambda d: json.loads(json.dumps(d).replace(old, new))

    mutated("a renamed metric (ts_queue_depth -> ts_queue_length)", text_sub("ts_queue_depth{", "ts_queue_length{"))
    mutated("a histogram renamed in metrics.yaml terms (ts_batch_size -> ts_batch_sizes)", text_sub("ts_batch_size_", "ts_batch_sizes_"))
    mutated("a fixed rate range ([5m])", text_sub("[$__rate_interval]", "[5m]"))
    mutated("an undefined variable ($modle)", text_sub('=~\\"$model\\"', '=~\\"$modle\\"'))

    def overlap(d):
        ps = [p for p in d["panels"] if p["type"] != "row"]
        ps[1]["gridPos"] = dict(ps[0]["gridPos"])
        return d
    mutated("overlapping panels", overlap)

    def no_expr(d):
        next(p for p in d["panels"] if p["type"] != "row")["targets"] = []
        return d
    mutated("a panel without a query", no_expr)
    mutated("an expression PromQL cannot parse", text_sub("sum by (model_name, model_version) (ts_queue_depth",
                                                           "sum by (model_name, model_version) ((ts_queue_depth"), with_promql=True)
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grafana", default="deploy/grafana")
    ap.add_argument("--metrics-yaml", default="config/metrics.yaml")
    ap.add_argument("--docs", default="docs/metrics.md")
    ap.add_argument("--recording-rules", default="deploy/prometheus/rules/tserve-recording.yml")
    ap.add_argument("--no-self-test", action="store_true")
    args = ap.parse_args()
    promtool = shutil.which("promtool")
    if not promtool:
        print("FAIL promtool not found (apt-get install prometheus)")
        return 1
    paths = sorted(glob.glob(os.path.join(args.grafana, "dashboards", "*.json")))
    problems, exprs = run(paths, args, promtool)
    check_provisioning(args.grafana, problems)
    if not problems:
        print(f"ok: {len(paths)} dashboards, {len(exprs)} expressions (layout, variables, "
              "$__rate_interval, promtool parse, metric names), provisioning")
    if not args.no_self_test:
        problems += self_test(paths, args, promtool)
    for line in problems:
        print(f"FAIL {line}")
    if problems:
        return 1
    print("check_dashboards: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
