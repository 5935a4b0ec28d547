#!/usr/bin/env python3
"""Offline checks that tserve's Kubernetes manifests (deploy/kubernetes) fit together and fit
tserve (docs/monitoring.md, "Kubernetes"). The schema of each object is checked apart, by
tests/js/validate_kubernetes.mjs.

rules      the PrometheusRule carries exactly the groups of deploy/prometheus/rules/*.yml
           (parsed, compared as data); `--write-prometheusrule` regenerates it from them
names      every metric the KEDA query, the prometheus-adapter rule and the PrometheusRule
           read is a family of config/metrics.yaml (histograms as _bucket/_sum/_count), a
           process_* family of docs/metrics.md, `up`, or a recording rule of the rule files;
           the queries pass the real PromQL parser (promtool)
binding    Deployment selector = its pod labels; the Service selects those pods, its
           targetPorts name container ports; the ServiceMonitor selects the Service, scrapes a
           Service port named metrics on /metrics with the Secret's token, and sets the job
           the alerts select; the ScaledObject and HPA target the Deployment; the HPA's metric
           is the one the adapter rule serves; KEDA and HPA thresholds agree; the KEDA query's
           namespace is the kustomization's; probes use /ping on the inference port
config     the ConfigMap's config.properties binds 0.0.0.0 on the ports the container
           declares, turns token authorization on, sets metrics_token (from a variable the
           container's environment sets), keeps key_file, model_store and logs on mounted
           volumes, and is the file --ts-config names
keys       the replicas share keys: config.properties sets reuse_key_file=true; an init
           container runs `install -m 0600 SRC KEY_FILE` as the tserve container's user, SRC
           on a volume of the Secret whose key exists among the manifests, KEY_FILE on the
           volume the tserve container mounts writable at key_file; the example Secret's
           key_file.json parses as tserve reads it (member names taken from
           src/api/auth.cc: management/inference {key, expiration time}, API {key}; key
           characters; ISO-8601 UTC instants, not yet past)
kustomize  every resources:/components: path exists, components are Components, no
           kustomization uses both autoscalers
Self-test (run every time): a renamed metric, a mismatched port name, a drifted rule, a
config port that differs from the container's, token authorization off, reuse_key_file off,
a key_file the init container does not write, a key file installed with mode 0644, an init
container reading a Secret key that does not exist, a misspelt key-file member, and both
autoscalers in one overlay must each be refused.
Needs python3-yaml and promtool (Debian: prometheus). Exit status 1 with a FAIL line per problem.
"""
import argparse
import base64
import copy
import datetime
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_rules import catalogue, load_rules, metric_family, metric_names  # noqa: E402

LISTENERS = {"inference": "inference_address", "management": "management_address",
             "metrics": "metrics_address"}
ADAPTER_TEMPLATE = {"<<.LabelMatchers>>": 'namespace="tserve",pod=~"tserve-.*"',
                    "<<.GroupBy>>": "pod"}
PROMETHEUSRULE = "base/prometheusrule.yaml"
AUTH_CC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "src", "api", "auth.cc")
KEY_FILE_MODE = 0o600  # tserve writes it so; ReadTrustedKeyFile trusts no group/other bits
KEY_CHARS = re.compile(r"[A-Za-z0-9_-]{1,512}")  # IsValidKey: 2 * kMaxKeyBytes characters at most
INSTANT = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?[Zz]")  # ParseInstant


# --- loading ---------------------------------------------------------------------------------

def load_tree(root):
    """{relative path: [documents]} for every YAML file under root."""
    tree = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            tree[os.path.relpath(path, root)] = [d for d in yaml.safe_load_all(f) if d is not None]
    return tree


def rule_groups(paths):
    groups = []
    for path in paths:
        with open(path) as f:
            groups += yaml.safe_load(f)["groups"]
    return groups


def objects(tree):
    """[(path, object)] of the Kubernetes objects (kustomization files excluded)."""
    return [(p, d) for p, docs in tree.items() if os.path.basename(p) != "kustomization.yaml"
            for d in docs]


def one(tree, kind, problems, api=None):
    found = [(p, d) for p, d in objects(tree) if d.get("kind") == kind
             and (api is None or d.get("apiVersion") == api)]
    if len(found) != 1:
        problems.append(f"expected exactly one {kind}, found {len(found)}")
        return None, {}
    return found[0]


def parse_properties(text):
    """The key=value lines of a config.properties (no continuation lines in ours)."""
    props = {}
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in "#!":
            continue
        m = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)", s)
        if m:
            props[m.group(1)] = m.group(2).strip()
    return props


def subset(small, big):
    return all(big.get(k) == v for k, v in (small or {}).items())


# --- checks -------------------------------------------------------------------------------------

def check_rules_equal(tree, groups, problems):
    rules = [d for p, d in objects(tree) if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        problems.append(f"expected exactly one PrometheusRule, found {len(rules)}")
        return
    got = (rules[0].get("spec") or {}).get("groups")
    if got != groups:
        names = lambda gs: [(g.get("name"), [r.get("record") or r.get("alert") for r in g.get("rules", [])])
                            for g in gs or []]
        detail = "different rule names" if names(got) != names(groups) else "same names, different content"
        problems.append(f"PrometheusRule groups differ from deploy/prometheus/rules ({detail}); "
                        "regenerate: python3 tests/monitoring/check_kubernetes.py --write-prometheusrule")


def adapter_rules(tree, problems):
    out = []
    for p, d in objects(tree):
        if d.get("kind") != "ConfigMap" or "config.yaml" not in (d.get("data") or {}):
            continue
        try:
            cfg = yaml.safe_load(d["data"]["config.yaml"])
        except yaml.YAMLError as e:
            problems.append(f"{p}: prometheus-adapter config.yaml: {e}")
            continue
        for r in (cfg or {}).get("rules") or []:
            out.append((p, r))
    return out


def queries(tree, problems):
    """[(where, PromQL)] of every query the autoscalers and the PrometheusRule read."""
    out = []
    for p, d in objects(tree):
        if d.get("kind") == "ScaledObject":
            for t in d["spec"].get("triggers", []):
                if t.get("type") == "prometheus":
                    out.append((f"{p}: ScaledObject trigger query", t["metadata"].get("query", "")))
        if d.get("kind") == "PrometheusRule":
            for g in d["spec"].get("groups", []):
                for r in g.get("rules", []):
                    out.append((f"{p}: {r.get('record') or r.get('alert')}", str(r.get("expr", ""))))
    for p, r in adapter_rules(tree, problems):
        series = r.get("seriesQuery", "")
        out.append((f"{p}: adapter seriesQuery", series))
        m = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", series)
        q = r.get("metricsQuery", "")
        q = q.replace("<<.Series>>", m.group(1) if m else "")
        for k, v in ADAPTER_TEMPLATE.items():
            q = q.replace(k, v)
        out.append((f"{p}: adapter metricsQuery", q))
        matches = (r.get("name") or {}).get("matches", "")
        if m and not re.search(matches, m.group(1)):
            problems.append(f"{p}: adapter name.matches {matches!r} does not match {m.group(1)}")
    return out


def check_names(qs, args, problems):
    records, _, _ = load_rules(args.rules)
    families, histograms, documented = catalogue(args.metrics_yaml, args.docs)
    for where, q in qs:
        names = metric_names(q)
        if not names:
            problems.append(f"{where}: reads no metric")
        for name in sorted(names):
            family, problem = metric_family(name, records, histograms)
            if problem:
                problems.append(f"{where}: {name}: {problem}")
            elif family is not None and family not in families:
                problems.append(f"{where}: {name}: not a metric of {args.metrics_yaml}")
            elif family is not None and family not in documented:
                problems.append(f"{where}: {name}: not in the catalogue of {args.docs}")


def check_promql(qs, problems, promtool):
    """Every query through promtool's parser (as the expression of a generated rule)."""
    tmp = tempfile.mkdtemp()
    try:
        for i, (where, q) in enumerate(qs):
            if "seriesQuery" in where:
                continue  # a series selector, parsed as part of metricsQuery's check
            path = os.path.join(tmp, f"q{i}.yml")
            with open(path, "w") as f:
                yaml.safe_dump({"groups": [{"name": "k8s", "rules": [{"record": "k8s:q:check", "expr": q}]}]}, f)
            r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"{where}: promtool: {(r.stdout + r.stderr).strip().splitlines()[-1]}")
    finally:
        shutil.rmtree(tmp)


def check_binding(tree, groups, problems):
    dp, dep = one(tree, "Deployment", problems)
    sp, svc = one(tree, "Service", problems)
    mp, mon = one(tree, "ServiceMonitor", problems)
    if not dep or not svc:
        return
    spec = dep["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    if not subset(spec["selector"].get("matchLabels"), pod_labels):
        problems.append(f"{dp}: selector.matchLabels do not match the pod template's labels")
    containers = spec["template"]["spec"]["containers"]
    c = next((c for c in containers if c["name"] == "tserve"), containers[0])
    cports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if not svc["spec"].get("selector") or not subset(svc["spec"]["selector"], pod_labels):
        problems.append(f"{sp}: Service selector {svc['spec'].get('selector')} does not select the Deployment's pods {pod_labels}")
    sports = {}
    for p in svc["spec"].get("ports", []):
        sports[p.get("name")] = p
        tp = p.get("targetPort", p.get("port"))
        if isinstance(tp, str) and tp not in cports:
            problems.append(f"{sp}: port {p.get('name')}: targetPort {tp!r} is not a port name of container {c['name']} ({sorted(cports)})")
        if isinstance(tp, int) and tp not in cports.values():
            problems.append(f"{sp}: port {p.get('name')}: targetPort {tp} is not a containerPort")
    for name in LISTENERS:
        if name not in cports:
            problems.append(f"{dp}: container has no port named {name}")
        if name not in sports:
            problems.append(f"{sp}: no port named {name}")
    # Probes: /ping on the inference listener (the only one where /ping needs no key).
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        h = (c.get(probe) or {}).get("httpGet")
        if not h:
            problems.append(f"{dp}: no {probe} with httpGet")
        elif h.get("path") != "/ping" or h.get("port") not in ("inference", cports.get("inference")):
            problems.append(f"{dp}: {probe} must GET /ping on the inference port, not {h.get('path')} on {h.get('port')}")
    # Secret references.
    secrets = {d["metadata"]["name"]: d for _, d in objects(tree) if d.get("kind") == "Secret"}
    def secret_ref(where, name, key):
        s = secrets.get(name)
        if s is None:
            problems.append(f"{where}: Secret {name} is not among the manifests")
        elif key not in (s.get("stringData") or {}) and key not in (s.get("data") or {}):
            problems.append(f"{where}: Secret {name} has no key {key}")
    env = {}
    for e in c.get("env", []):
        env[e["name"]] = e
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret_ref(f"{dp}: env {e['name']}", ref["name"], ref["key"])
    # ServiceMonitor.
    if mon:
        if not subset(mon["spec"]["selector"].get("matchLabels"), svc["metadata"].get("labels", {})) \
                or not mon["spec"]["selector"].get("matchLabels"):
            problems.append(f"{mp}: selector does not match the Service's labels")
        eps = mon["spec"].get("endpoints", [])
        if not eps:
            problems.append(f"{mp}: no endpoints")
        for ep in eps:
            if ep.get("port") not in sports:
                problems.append(f"{mp}: endpoint port {ep.get('port')!r} is not a Service port ({sorted(sports)})")
            elif sports[ep["port"]].get("targetPort") != "metrics":
                problems.append(f"{mp}: endpoint port {ep['port']} does not lead to the metrics listener")
            if ep.get("path", "/metrics") != "/metrics":
                problems.append(f"{mp}: endpoint path {ep.get('path')} is not /metrics")
            cred = (ep.get("authorization") or {}).get("credentials")
            if not cred:
                problems.append(f"{mp}: endpoint sends no bearer token (metrics_token is set)")
            else:
                secret_ref(mp, cred["name"], cred["key"])
                tok = env.get(token_variable(tree) or "", {})
                ref = (tok.get("valueFrom") or {}).get("secretKeyRef") or {}
                if (ref.get("name"), ref.get("key")) != (cred["name"], cred["key"]):
                    problems.append(f"{mp}: sends {cred['name']}/{cred['key']} but tserve's metrics_token comes from {ref.get('name')}/{ref.get('key')}")
            job = None
            for r in ep.get("relabelings", []):
                if r.get("targetLabel") == "job":
                    job = r.get("replacement")
            wanted = alert_jobs(groups)
            if wanted and job not in wanted:
                problems.append(f"{mp}: scraped series get job={job!r} (the Service name if unset) but the alerts select job {sorted(wanted)}")
    # Autoscalers.
    so = [(p, d) for p, d in objects(tree) if d.get("kind") == "ScaledObject"]
    hpa = [(p, d) for p, d in objects(tree) if d.get("kind") == "HorizontalPodAutoscaler"]
    for p, d in so + hpa:
        ref = d["spec"]["scaleTargetRef"]
        if ref.get("kind", "Deployment") != "Deployment" or ref.get("name") != dep["metadata"]["name"]:
            problems.append(f"{p}: scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not the Deployment {dep['metadata']['name']}")
    thresholds = {}
    for p, d in so:
        for t in d["spec"].get("triggers", []):
            thresholds[f"{p} threshold"] = float(t["metadata"].get("threshold", "nan"))
            ns = re.search(r'namespace\s*=\s*"([^"]*)"', t["metadata"].get("query", ""))
            want = base_namespace(tree)
            if ns and want and ns.group(1) != want:
                problems.append(f"{p}: query selects namespace {ns.group(1)!r}, the kustomization deploys to {want!r}")
    served = {(r.get("name") or {}).get("as") for _, r in adapter_rules(tree, [])}
    for p, d in hpa:
        for m in d["spec"].get("metrics", []):
            if m.get("type") != "Pods":
                problems.append(f"{p}: metric of type {m.get('type')}, expected Pods (per-pod queue depth)")
                continue
            name = m["pods"]["metric"]["name"]
            if name not in served:
                problems.append(f"{p}: metric {name} is not served by a prometheus-adapter rule ({sorted(x for x in served if x)})")
            thresholds[f"{p} averageValue"] = float(str(m["pods"]["target"].get("averageValue", "nan")))
    if len(set(thresholds.values())) > 1:
        problems.append(f"KEDA and HPA thresholds differ: {thresholds}")


def alert_jobs(groups):
    jobs = set()
    for g in groups:
        for r in g.get("rules", []):
            if "alert" in r:
                jobs |= set(re.findall(r'\bjob\s*=\s*"([^"]*)"', str(r["expr"])))
    return jobs


def token_variable(tree):
    cm = next((d for _, d in objects(tree) if d.get("kind") == "ConfigMap"
               and "config.properties" in (d.get("data") or {})), None)
    if not cm:
        return None
    m = re.fullmatch(r"\$\$(\w+)\$\$", parse_properties(cm["data"]["config.properties"]).get("metrics_token", ""))
    return m.group(1) if m else None


def base_namespace(tree):
    for p, docs in tree.items():
        if p == os.path.join("base", "kustomization.yaml"):
            return docs[0].get("namespace")
    return None


def check_config(tree, problems):
    dp, dep = one(tree, "Deployment", problems)
    cms = [(p, d) for p, d in objects(tree) if d.get("kind") == "ConfigMap"
           and "config.properties" in (d.get("data") or {})]
    if len(cms) != 1 or not dep:
        problems.append(f"expected one ConfigMap with config.properties, found {len(cms)}")
        return
    cp, cm = cms[0]
    props = parse_properties(cm["data"]["config.properties"])
    pod = dep["spec"]["template"]["spec"]
    c = next((c for c in pod["containers"] if c["name"] == "tserve"), pod["containers"][0])
    cports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    for name, key in LISTENERS.items():
        m = re.fullmatch(r"http://([^:/]+|\[[^\]]+\]):(\d+)", props.get(key, ""))
        if not m:
            problems.append(f"{cp}: {key} is {props.get(key)!r}, expected http://0.0.0.0:PORT")
            continue
        if m.group(1) not in ("0.0.0.0", "[::]"):
            problems.append(f"{cp}: {key} binds {m.group(1)}: the Service and Prometheus cannot reach it")
        if int(m.group(2)) != cports.get(name):
            problems.append(f"{cp}: {key} listens on port {m.group(2)}, container port {name} is {cports.get(name)}")
    if props.get("enable_token_authorization", "").lower() != "true":
        problems.append(f"{cp}: enable_token_authorization is not true")
    if props.get("disable_token_authorization", "false").lower() != "false":
        problems.append(f"{cp}: disable_token_authorization turns token authorization off")
    env = {e["name"] for e in c.get("env", [])}
    token = props.get("metrics_token")
    if not token:
        problems.append(f"{cp}: metrics_token is not set: /metrics would be open beyond loopback")
    for var in re.findall(r"\$\$(\w+)\$\$", cm["data"]["config.properties"]):
        if var not in env:
            problems.append(f"{cp}: $${var}$$ is used but the container does not set {var}")
    # Mounts: the config where --ts-config looks, writable volumes for what tserve writes.
    mounts = {m["mountPath"].rstrip("/"): m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    cmd = (c.get("command") or []) + (c.get("args") or [])
    ts_config = cmd[cmd.index("--ts-config") + 1] if "--ts-config" in cmd[:-1] else None
    if "--foreground" not in cmd:
        problems.append(f"{dp}: tserve must run with --foreground in a container")
    if not ts_config:
        problems.append(f"{dp}: command does not pass --ts-config")
    else:
        m = mounts.get(os.path.dirname(ts_config))
        v = volumes.get(m["name"]) if m else None
        if not v or (v.get("configMap") or {}).get("name") != cm["metadata"]["name"] \
                or os.path.basename(ts_config) != "config.properties":
            problems.append(f"{dp}: --ts-config {ts_config} is not config.properties of ConfigMap {cm['metadata']['name']}")
    def mounted(path, writable):
        for mp, m in mounts.items():
            if path == mp or path.startswith(mp + "/"):
                return not writable or not m.get("readOnly")
        return False
    for key, writable in (("key_file", True), ("log_location", True), ("model_store", False)):
        if key in props and not mounted(props[key], writable):
            problems.append(f"{cp}: {key}={props[key]} is not on a {'writable ' if writable else ''}volume of the container")
    if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") and not mounted("/tmp", True):
        problems.append(f"{dp}: read-only root filesystem but no writable /tmp (archive extraction, pid file)")


def key_file_members(auth_cc=AUTH_CC):
    """The key file's member names, as src/api/auth.cc spells them (kManagement, kInference,
    kApi, kKey, kExpiration)."""
    with open(auth_cc) as f:
        text = f.read()
    found = dict(re.findall(r'constexpr char (k\w+)\[\] = "([^"]*)";', text))
    names = ("kManagement", "kInference", "kApi", "kKey", "kExpiration")
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"FAIL {auth_cc}: constants {missing} not found; update check_kubernetes.py")
    return {n: found[n] for n in names}


def parse_instant(text):
    """ParseInstant of src/api/auth.cc: a datetime (UTC), or None."""
    m = INSTANT.fullmatch(text) if isinstance(text, str) else None
    if not m:
        return None
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    try:
        t = datetime.datetime(y, mo, d, h, mi, sec, tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return t + datetime.timedelta(microseconds=int((m.group(7) or "0").ljust(9, "0")) // 1000)


def key_file_problems(text, members, now):
    """Why tserve (ParseKeyFile) would not read `text` as a key file, or a key of it would
    already be expired: [] when it is a key file tserve takes as it is."""
    try:
        j = json.loads(text)
    except ValueError as e:
        return [f"not JSON: {e}"]
    if not isinstance(j, dict):
        return ["not a JSON object"]
    out = []
    key, exp = members["kKey"], members["kExpiration"]
    for member, expires in ((members["kManagement"], True), (members["kInference"], True),
                            (members["kApi"], False)):
        obj = j.get(member)
        if not isinstance(obj, dict):
            out.append(f'no "{member}" object')
            continue
        if not isinstance(obj.get(key), str) or not KEY_CHARS.fullmatch(obj[key]):
            out.append(f'"{member}" has no valid "{key}" (1-512 characters of A-Z a-z 0-9 - _)')
        if expires:
            t = parse_instant(obj.get(exp))
            if t is None:
                out.append(f'"{member}" has no valid "{exp}" (YYYY-MM-DDTHH:MM:SS[.f]Z): {obj.get(exp)!r}')
            elif t <= now:
                out.append(f'"{member}" key expired at {obj[exp]}')
    return out


def command_words(c):
    """The words a container runs: command + args, or the words of an `sh -c` script."""
    words = [str(w) for w in (c.get("command") or []) + (c.get("args") or [])]
    if len(words) >= 3 and os.path.basename(words[0]) in ("sh", "bash", "dash") and words[1] == "-c":
        try:
            return shlex.split(words[2])
        except ValueError:
            return words
    return words


def install_step(words):
    """(mode, source, destination) of an `install` command among words, or None."""
    if "install" not in [os.path.basename(w) for w in words]:
        return None
    i = [os.path.basename(w) for w in words].index("install")
    mode, paths, rest = None, [], words[i + 1:]
    k = 0
    while k < len(rest):
        w = rest[k]
        if w in ("&&", ";", "||"):
            break
        if w in ("-m", "--mode") and k + 1 < len(rest):
            mode, k = rest[k + 1], k + 2
            continue
        if w.startswith("--mode="):
            mode = w.split("=", 1)[1]
        elif not w.startswith("-"):
            paths.append(w)
        k += 1
    if len(paths) != 2:
        return None
    return mode, paths[0], paths[1]


def on_mount(path, mounts):
    """(volume name, path inside the volume, mount) of the mount holding path, or None."""
    best = None
    for m in mounts:
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[2]["mountPath"].rstrip("/")):
                best = (m["name"], os.path.relpath(path, mp), m)
    return best


def run_as_user(pod, c):
    return (c.get("securityContext") or {}).get("runAsUser",
                                                 (pod.get("securityContext") or {}).get("runAsUser"))


def check_keys(tree, problems, members, now):
    dp, dep = one(tree, "Deployment", problems)
    cms = [(p, d) for p, d in objects(tree) if d.get("kind") == "ConfigMap"
           and "config.properties" in (d.get("data") or {})]
    if len(cms) != 1 or not dep:
        return
    cp, cm = cms[0]
    props = parse_properties(cm["data"]["config.properties"])
    if props.get("reuse_key_file", "false").lower() != "true":
        problems.append(f"{cp}: reuse_key_file is not true: every replica would make keys of its "
                        "own and a client through the Service would hold only one pod's")
    key_file = props.get("key_file")
    if not key_file or not key_file.startswith("/"):
        problems.append(f"{cp}: key_file {key_file!r} is not an absolute path")
        return
    pod = dep["spec"]["template"]["spec"]
    c = next((c for c in pod["containers"] if c["name"] == "tserve"), pod["containers"][0])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    target = on_mount(key_file, c.get("volumeMounts", []))
    if not target:
        problems.append(f"{cp}: key_file={key_file} is on no volume of the tserve container")
        return
    want_volume, want_rel, _ = target
    uid = run_as_user(pod, c)
    installers = []
    for ic in pod.get("initContainers") or []:
        step = install_step(command_words(ic))
        if not step:
            continue
        mode, src, dst = step
        d = on_mount(dst, ic.get("volumeMounts", []))
        if d and (d[0], d[1]) == (want_volume, want_rel):
            installers.append((ic, mode, src))
    if len(installers) != 1:
        problems.append(f"{dp}: expected one init container running `install -m 0600 <secret file> "
                        f"<key_file>` into volume {want_volume} ({key_file}), found {len(installers)}")
        return
    ic, mode, src = installers[0]
    where = f"{dp}: init container {ic['name']}"
    try:
        mode_bits = int(mode, 8) if mode else None
    except ValueError:
        mode_bits = None
    if mode_bits is None or mode_bits & 0o077 or not mode_bits & 0o400:
        problems.append(f"{where}: installs the key file with mode {mode!r}, not {KEY_FILE_MODE:04o}: "
                        "tserve trusts only a file no one else may read, and would make keys of its own")
    if uid is None or run_as_user(pod, ic) != uid:
        problems.append(f"{where}: runs as user {run_as_user(pod, ic)}, the tserve container as "
                        f"{uid}: the key file must be owned by tserve's user")
    s = on_mount(src, ic.get("volumeMounts", []))
    sv = volumes.get(s[0]) if s else None
    secret = (sv or {}).get("secret")
    if not secret:
        problems.append(f"{where}: reads {src}, which is not on a Secret volume")
        return
    items = secret.get("items")
    if items:
        by_path = {i["path"]: i["key"] for i in items}
        secret_key = by_path.get(s[1])
    else:
        secret_key = s[1]
    secrets = {d["metadata"]["name"]: (p, d) for p, d in objects(tree) if d.get("kind") == "Secret"}
    if secret.get("secretName") not in secrets:
        problems.append(f"{where}: reads Secret {secret.get('secretName')}, which is not among the manifests")
        return
    spath, sec = secrets[secret["secretName"]]
    values = dict(sec.get("stringData") or {})
    for k, v in (sec.get("data") or {}).items():
        values.setdefault(k, base64.b64decode(v).decode("utf-8", "replace"))
    if secret_key is None or secret_key not in values:
        problems.append(f"{where}: reads {src}, key {secret_key!r} of Secret {secret['secretName']}, "
                        f"which has only {sorted(values)}")
        return
    for p in key_file_problems(values[secret_key], members, now):
        problems.append(f"{spath}: {secret_key}: {p}")


def check_kustomize(root, tree, problems):
    for p, docs in tree.items():
        if os.path.basename(p) != "kustomization.yaml":
            continue
        k = docs[0]
        here = os.path.dirname(os.path.join(root, p))
        comps = []
        for field in ("resources", "components"):
            for entry in k.get(field) or []:
                target = os.path.normpath(os.path.join(here, entry))
                if not os.path.exists(target):
                    problems.append(f"{p}: {field} entry {entry} does not exist")
                    continue
                if field == "components":
                    comps.append(target)
                    ck = os.path.join(target, "kustomization.yaml")
                    with open(ck) as f:
                        if yaml.safe_load(f).get("kind") != "Component":
                            problems.append(f"{p}: component {entry} is not kind: Component")
        if len([c for c in comps if os.path.basename(c) in ("keda", "hpa")]) > 1:
            problems.append(f"{p}: uses both autoscaling components: KEDA and the HPA would fight over the Deployment")
        if (k.get("resources") or k.get("components")) and k.get("kind") == "Kustomization" \
                and k.get("namespace") != base_namespace(tree):
            problems.append(f"{p}: namespace {k.get('namespace')!r} differs from the base's {base_namespace(tree)!r}")


def run(root, tree, args, promtool, with_promql=True):
    problems = []
    groups = rule_groups(args.rules)
    check_rules_equal(tree, groups, problems)
    qs = queries(tree, problems)
    check_names(qs, args, problems)
    if with_promql:
        check_promql(qs, problems, promtool)
    check_binding(tree, groups, problems)
    check_config(tree, problems)
    check_keys(tree, problems, key_file_members(), datetime.datetime.now(datetime.timezone.utc))
    check_kustomize(root, tree, problems)
    return problems, qs


# --- self-test ----------------------------------------------------------------------------------

def self_test(root, tree, args, promtool):
    failures = []

    def refused(name, mutate, with_promql=False, files=None):
        t = copy.deepcopy(tree)
        mutate(t)
        tmp = None
        r = root
        if files:  # mutations of kustomization paths need a copy on disk
            tmp = tempfile.mkdtemp()
            r = os.path.join(tmp, "k")
            shutil.copytree(root, r)
            files(r)
            t = load_tree(r)
        try:
            problems, _ = run(r, t, args, promtool, with_promql)
        finally:
            if tmp:
                shutil.rmtree(tmp)
        if problems:
            print(f"ok: self-test refuses {name} ({problems[0][:110]}...)")
        else:
            failures.append(f"self-test: the check accepted {name}")

    def find(t, kind):
        return next(d for _, d in objects(t) if d.get("kind") == kind)

    def rename_query(t):
        trig = find(t, "ScaledObject")["spec"]["triggers"][0]["metadata"]
        trig["query"] = trig["query"].replace("ts_queue_depth", "ts_queue_length")
    refused("a renamed metric in the KEDA query (ts_queue_depth -> ts_queue_length)", rename_query)

    def rename_adapter(t):
        cm = next(d for _, d in objects(t) if d.get("kind") == "ConfigMap" and "config.yaml" in d.get("data", {}))
        cm["data"]["config.yaml"] = cm["data"]["config.yaml"].replace("ts_queue_depth{", "ts_queue_size{")
    refused("a renamed metric in the prometheus-adapter rule", rename_adapter)

    def port_name(t):
        svc = find(t, "Service")
        next(p for p in svc["spec"]["ports"] if p["name"] == "metrics")["targetPort"] = "metric"
    refused("a Service targetPort naming no container port (metrics -> metric)", port_name)

    def monitor_port(t):
        find(t, "ServiceMonitor")["spec"]["endpoints"][0]["port"] = "prometheus"
    refused("a ServiceMonitor endpoint naming no Service port", monitor_port)

    def selector(t):
        find(t, "Service")["spec"]["selector"]["app.kubernetes.io/name"] = "torchserve"
    refused("a Service selector that matches no pod", selector)

    def drift(t):
        rule = find(t, "PrometheusRule")["spec"]["groups"][-1]["rules"][0]
        rule["expr"] = str(rule["expr"]).replace("0", "1", 1) if "0" in str(rule["expr"]) else str(rule["expr"]) + " > 1"
    refused("a PrometheusRule that drifted from deploy/prometheus/rules", drift)

    def config_port(t):
        cm = find(t, "ConfigMap")
        cm["data"]["config.properties"] = cm["data"]["config.properties"].replace(":8082", ":9082")
    refused("a metrics_address port that is not the container's metrics port", config_port)

    def token_off(t):
        cm = find(t, "ConfigMap")
        cm["data"]["config.properties"] = cm["data"]["config.properties"].replace(
            "disable_token_authorization=false", "disable_token_authorization=true").replace(
            "enable_token_authorization=true", "enable_token_authorization=false")
    refused("token authorization turned off", token_off)

    def config_edit(old, new):
        def mutate(t):
            cm = next(d for _, d in objects(t) if d.get("kind") == "ConfigMap"
                      and "config.properties" in d.get("data", {}))
            text = cm["data"]["config.properties"]
            if old not in text:
                raise SystemExit(f"FAIL self-test: config.properties has no {old!r} to change")
            cm["data"]["config.properties"] = text.replace(old, new)
        return mutate
    refused("reuse_key_file off", config_edit("reuse_key_file=true", "reuse_key_file=false"))
    refused("reuse_key_file unset", config_edit("reuse_key_file=true", ""))
    refused("a key_file the init container does not write",
            config_edit("key_file=/var/run/tserve/key_file.json", "key_file=/tmp/key_file.json"))

    def installer(t):
        pod = find(t, "Deployment")["spec"]["template"]["spec"]
        return next(c for c in pod["initContainers"] if install_step(command_words(c)))

    def mode_644(t):
        c = installer(t)
        c["command"] = [w.replace("0600", "0644") for w in c["command"]]
    refused("the key file installed with mode 0644", mode_644)

    def as_root(t):
        installer(t)["securityContext"]["runAsUser"] = 0
    refused("the key file installed by another user (root)", as_root)

    def secret_key(t):
        pod = find(t, "Deployment")["spec"]["template"]["spec"]
        for v in pod["volumes"]:
            for i in (v.get("secret") or {}).get("items") or []:
                i["key"] = "key-file.json"
    refused("an init container reading a Secret key that does not exist", secret_key)

    def misspelt(t):
        sec = find(t, "Secret")["stringData"]
        sec["key_file.json"] = sec["key_file.json"].replace('"expiration time"', '"expiration_time"', 1)
    refused("a key_file.json with a misspelt member (expiration_time)", misspelt)

    def bad_key(t):
        sec = find(t, "Secret")["stringData"]
        j = json.loads(sec["key_file.json"])
        j["inference"]["key"] = "abc+/="
        sec["key_file.json"] = json.dumps(j)
    refused("a key_file.json key with characters tserve refuses (+/=)", bad_key)

    def expired(t):
        sec = find(t, "Secret")["stringData"]
        j = json.loads(sec["key_file.json"])
        j["management"]["expiration time"] = "2020-01-01T00:00:00Z"
        sec["key_file.json"] = json.dumps(j)
    refused("a key_file.json whose management key has expired", expired)

    def target(t):
        find(t, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "torchserve"
    refused("an HPA targeting another Deployment", target)

    def unparsable(t):
        trig = find(t, "ScaledObject")["spec"]["triggers"][0]["metadata"]
        trig["query"] = trig["query"].replace("sum(", "sum((", 1)
    refused("a KEDA query PromQL cannot parse", unparsable, with_promql=True)

    def both(r):
        p = os.path.join(r, "overlays", "keda", "kustomization.yaml")
        with open(p) as f:
            k = yaml.safe_load(f)
        k["components"].append("../../components/hpa")
        with open(p, "w") as f:
            yaml.safe_dump(k, f)
    refused("an overlay with both KEDA and the HPA", lambda t: None, files=both)

    def missing(r):
        os.remove(os.path.join(r, "base", "service.yaml"))
    refused("a kustomization listing a file that does not exist", lambda t: None, files=missing)
    return failures


# --- PrometheusRule generation ------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s):
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def write_prometheusrule(root, rules):
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "tserve", "labels": {"app.kubernetes.io/name": "tserve"}},
        "spec": {"groups": rule_groups(rules)},
    }
    header = (
        "# GENERATED from " + " and ".join(os.path.relpath(r, os.path.dirname(os.path.dirname(root)))
                                           for r in rules) + "\n"
        "# by `python3 tests/monitoring/check_kubernetes.py --write-prometheusrule`: edit those files,\n"
        "# then regenerate (make monitoring-check fails while the two differ). The comments and\n"
        "# runbooks are there and in docs/monitoring.md.\n"
        "# Your Prometheus must select this object (kube-prometheus-stack: add the label its\n"
        "# ruleSelector expects, e.g. `release: <helm release>`).\n")
    path = os.path.join(root, PROMETHEUSRULE)
    with open(path, "w") as f:
        f.write(header)
        yaml.dump(doc, f, Dumper=_Dumper, sort_keys=False, width=200, default_flow_style=False)
    print(f"wrote {path}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.join(repo, "deploy", "kubernetes"))
    ap.add_argument("--rules", nargs="+", default=[
        os.path.join(repo, "deploy", "prometheus", "rules", "tserve-recording.yml"),
        os.path.join(repo, "deploy", "prometheus", "rules", "tserve-alerts.yml")])
    ap.add_argument("--metrics-yaml", default=os.path.join(repo, "config", "metrics.yaml"))
    ap.add_argument("--docs", default=os.path.join(repo, "docs", "metrics.md"))
    ap.add_argument("--write-prometheusrule", action="store_true",
                    help="regenerate base/prometheusrule.yaml from the rule files and exit")
    ap.add_argument("--no-self-test", action="store_true")
    args = ap.parse_args()
    if args.write_prometheusrule:
        write_prometheusrule(args.root, args.rules)
        return 0
    promtool = shutil.which("promtool")
    if not promtool:
        print("FAIL promtool not found (apt-get install prometheus)")
        return 1
    tree = load_tree(args.root)
    problems, qs = run(args.root, tree, args, promtool)
    if not problems:
        print(f"ok: {len(objects(tree))} objects in {len(tree)} files; PrometheusRule = rule files; "
              f"{len(qs)} queries (metric names, promtool parse); Service/ServiceMonitor/Deployment "
              "bindings; config.properties; kustomizations")
    if not args.no_self_test:
        problems += self_test(args.root, tree, args, promtool)
    for line in problems:
        print(f"FAIL {line}")
    if problems:
        return 1
    print("check_kubernetes: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
