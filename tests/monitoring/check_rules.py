#!/usr/bin/env python3
"""Offline checks of tserve's Prometheus rules (run by tests/monitoring/run_promtool.sh).

names     every metric a rule expression reads exists in tserve's catalogue: a family of
          config/metrics.yaml (histograms also as _bucket/_sum/_count) or a process_*
          family, and is documented in docs/metrics.md; a name with ':' is a recording
          rule defined in the rule files. With --live URL, each must also be a family the
          running server's /metrics lists (# TYPE line).
coverage  every recording rule has a promtool expression test with expected samples, and
          every alert has a test where it fires and one where it does not.
Exit status 1 with one line per problem.
"""
import argparse
import re
import sys
import urllib.request

import yaml

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
}
# Series Prometheus itself makes for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr):
    """Names of the series an expression selects (not functions, labels or keywords)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def load_rules(paths):
    records, alerts, exprs = set(), set(), []
    for path in paths:
        with open(path) as f:
            doc = yaml.safe_load(f)
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    records.add(rule["record"])
                else:
                    alerts.add(rule["alert"])
                exprs.append((path, rule.get("record") or rule.get("alert"), str(rule["expr"])))
    return records, alerts, exprs


def catalogue(yaml_path, docs_path):
    with open(yaml_path) as f:
        doc = yaml.safe_load(f)
    families, histograms = set(), set()
    for section in ("ts_metrics", "model_metrics"):
        for kind, entries in (doc.get(section) or {}).items():
            for entry in entries or []:
                families.add(entry["name"])
                if kind == "histogram":
                    histograms.add(entry["name"])
    documented = set()
    with open(docs_path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cells) >= 2:
                for name in cells[0].split("/"):
                    documented.add(name.strip().strip("`"))
    # The process families are built into the server, not metrics.yaml.
    families |= {n for n in documented if n.startswith("process_")}
    return families, histograms, documented


def metric_family(name, records, histograms):
    """(family, problem) for a name an expression reads: the metrics.yaml family it belongs to
    (a histogram's _bucket/_sum/_count name its histogram), or None for a recording rule or a
    series Prometheus makes itself; problem names a recording rule that does not exist."""
    if ":" in name:
        return None, None if name in records else "no recording rule of this name"
    if name in PROMETHEUS_SERIES:
        return None, None
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return name[: -len(suffix)], None
    return name, None


def live_families(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def check_names(args, problems):
    records, _, exprs = load_rules(args.rules)
    families, histograms, documented = catalogue(args.metrics_yaml, args.docs)
    live = live_families(args.live) if args.live else None
    for path, rule, expr in exprs:
        for name in sorted(metric_names(expr)):
            where = f"{path}: {rule}: {name}"
            family, problem = metric_family(name, records, histograms)
            if problem:
                problems.append(f"{where}: {problem}")
            if family is None:
                continue
            if family not in families:
                problems.append(f"{where}: not a metric of {args.metrics_yaml}")
            elif family not in documented:
                problems.append(f"{where}: not in the catalogue of {args.docs}")
            elif live is not None and family not in live:
                problems.append(f"{where}: the live server's /metrics has no family {family}")


def check_coverage(args, problems):
    records, alerts, _ = load_rules(args.rules)
    tested_records, firing, silent = set(), set(), set()
    for path in args.tests:
        with open(path) as f:
            doc = yaml.safe_load(f)
        for test in doc.get("tests", []):
            for t in test.get("promql_expr_test") or []:
                m = re.fullmatch(r"\s*(?:round\(\s*)?([\w:]+)(?:\s*,[^)]*\))?\s*", t["expr"])
                if m and t.get("exp_samples"):
                    tested_records.add(m.group(1))
            for t in test.get("alert_rule_test") or []:
                (firing if t.get("exp_alerts") else silent).add(t["alertname"])
    for r in sorted(records - tested_records):
        problems.append(f"recording rule {r}: no promql_expr_test with exp_samples")
    for a in sorted(alerts - firing):
        problems.append(f"alert {a}: no test where it fires")
    for a in sorted(alerts - silent):
        problems.append(f"alert {a}: no test where it does not fire")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("check", choices=["names", "coverage"])
    p.add_argument("--rules", nargs="+", required=True)
    p.add_argument("--tests", nargs="*", default=[])
    p.add_argument("--metrics-yaml", default="config/metrics.yaml")
    p.add_argument("--docs", default="docs/metrics.md")
    p.add_argument("--live", help="a running tserve's /metrics URL")
    args = p.parse_args()
    problems = []
    (check_names if args.check == "names" else check_coverage)(args, problems)
    for line in problems:
        print(f"FAIL {line}")
    if problems:
        return 1
    print(f"ok: {args.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
