// Offline schema validation of tserve's Kubernetes manifests (deploy/kubernetes), run by
// `make monitoring-check`: `node tests/js/validate_kubernetes.mjs` from any directory.
//
// Every YAML document under deploy/kubernetes is mapped by apiVersion/kind to its model class
// from kubernetes-models (v1, apps/v1, autoscaling/v2), @kubernetes-models/prometheus-operator
// (monitoring.coreos.com/v1) or @kubernetes-models/keda (keda.sh/v1alpha1), and its
// .validate() checks it against the Kubernetes / CRD schema. A kind this script does not know
// is an error, never skipped. kustomization.yaml files are not Kubernetes objects: each
// `resources:` / `components:` path they list must exist, and a component must be
// `kind: Component`. A prometheus-adapter config inside a ConfigMap (data["config.yaml"]) must
// parse as YAML with a `rules:` list whose entries have the adapter's fields.
// How the objects fit together (labels, ports, metric names, config.properties) is checked by
// tests/monitoring/check_kubernetes.py.
//
// Self-test (every run): a copy of the Deployment with containerPort as a string, a document of
// an unknown kind, and a kustomization listing a missing file must each be refused.
// Exit status 1 with a FAIL line per problem.
import { readFileSync, readdirSync, statSync, existsSync } from "node:fs";
import { dirname, join, relative, resolve, basename } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, parse } from "yaml";

import * as core from "kubernetes-models/v1";
import * as apps from "kubernetes-models/apps/v1";
import * as autoscaling from "kubernetes-models/autoscaling/v2";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const root = resolve(process.argv[2] ?? join(repo, "deploy", "kubernetes"));

// apiVersion -> the module whose exported classes are that group/version's kinds.
const MODELS = {
  v1: core,
  "apps/v1": apps,
  "autoscaling/v2": autoscaling,
  "monitoring.coreos.com/v1": monitoring,
  "keda.sh/v1alpha1": keda,
};
// Kinds the manifests may use (a class exported for another purpose, e.g. a spec type,
// must not pass for an object kind).
const KINDS = {
  v1: ["Namespace", "ConfigMap", "Secret", "Service", "ServiceAccount", "PersistentVolumeClaim"],
  "apps/v1": ["Deployment"],
  "autoscaling/v2": ["HorizontalPodAutoscaler"],
  "monitoring.coreos.com/v1": ["ServiceMonitor", "PodMonitor", "PrometheusRule"],
  "keda.sh/v1alpha1": ["ScaledObject", "TriggerAuthentication"],
};
const ADAPTER_RULE_FIELDS = ["seriesQuery", "resources", "name", "metricsQuery"];

function yamlFiles(dir) {
  const out = [];
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...yamlFiles(p));
    else if (e.endsWith(".yaml") || e.endsWith(".yml")) out.push(p);
  }
  return out;
}

function errorText(e) {
  const errs = e?.errors ?? e?.details;
  if (Array.isArray(errs) && errs.length) {
    return errs.map((x) => `${x.instancePath || "/"} ${x.message ?? JSON.stringify(x)}`).join("; ");
  }
  return String(e?.message ?? e);
}

// Problems of one Kubernetes object ("" names it in messages).
export function validateObject(obj, where) {
  const problems = [];
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    return [`${where}: not a mapping`];
  }
  const { apiVersion, kind } = obj;
  const mod = MODELS[apiVersion];
  if (!mod || !(KINDS[apiVersion] ?? []).includes(kind) || typeof mod[kind] !== "function") {
    return [`${where}: unknown apiVersion/kind ${apiVersion}/${kind} (no model class; add it to validate_kubernetes.mjs if it is meant)`];
  }
  if (!obj.metadata?.name) problems.push(`${where}: ${kind} without metadata.name`);
  try {
    new mod[kind](obj).validate();
  } catch (e) {
    problems.push(`${where}: ${kind} ${obj.metadata?.name ?? ""}: ${errorText(e)}`);
  }
  if (kind === "ConfigMap" && obj.data?.["config.yaml"] !== undefined) {
    problems.push(...validateAdapterConfig(obj.data["config.yaml"], `${where}: data.config.yaml`));
  }
  return problems;
}

function validateAdapterConfig(text, where) {
  let cfg;
  try {
    cfg = parse(text);
  } catch (e) {
    return [`${where}: not YAML: ${e.message}`];
  }
  if (!Array.isArray(cfg?.rules) || cfg.rules.length === 0) {
    return [`${where}: prometheus-adapter config without a rules: list`];
  }
  const problems = [];
  cfg.rules.forEach((r, i) => {
    for (const f of ADAPTER_RULE_FIELDS) {
      if (r?.[f] === undefined) problems.push(`${where}: rules[${i}] has no ${f}`);
    }
    const ov = r?.resources?.overrides;
    if (!ov?.namespace?.resource || !ov?.pod?.resource) {
      problems.push(`${where}: rules[${i}].resources.overrides must map namespace and pod`);
    }
    if (r?.name && (typeof r.name.matches !== "string" || typeof r.name.as !== "string")) {
      problems.push(`${where}: rules[${i}].name needs matches and as`);
    }
    if (typeof r?.metricsQuery === "string" && !r.metricsQuery.includes("<<.Series>>")) {
      problems.push(`${where}: rules[${i}].metricsQuery does not use <<.Series>>`);
    }
  });
  return problems;
}

function validateKustomization(doc, path) {
  const problems = [];
  const where = relative(root, path);
  const kinds = { Kustomization: "kustomize.config.k8s.io/v1beta1", Component: "kustomize.config.k8s.io/v1alpha1" };
  if (kinds[doc?.kind] !== doc?.apiVersion) {
    problems.push(`${where}: expected kind Kustomization (${kinds.Kustomization}) or Component (${kinds.Component}), got ${doc?.apiVersion}/${doc?.kind}`);
  }
  for (const field of ["resources", "components"]) {
    for (const entry of doc?.[field] ?? []) {
      const target = resolve(dirname(path), entry);
      if (!existsSync(target)) {
        problems.push(`${where}: ${field} entry ${entry} does not exist`);
        continue;
      }
      if (statSync(target).isDirectory()) {
        const k = join(target, "kustomization.yaml");
        if (!existsSync(k)) {
          problems.push(`${where}: ${field} entry ${entry} is a folder without kustomization.yaml`);
        } else if (field === "components" && parse(readFileSync(k, "utf8"))?.kind !== "Component") {
          problems.push(`${where}: component ${entry} is not kind: Component`);
        } else if (field === "resources" && parse(readFileSync(k, "utf8"))?.kind === "Component") {
          problems.push(`${where}: ${entry} is a Component: list it under components:`);
        }
      }
    }
  }
  return problems;
}

// Validates every file; returns [problems, number of objects].
function validateTree(files) {
  const problems = [];
  let count = 0;
  for (const [path, text] of files) {
    const where = relative(root, path);
    const docs = parseAllDocuments(text);
    for (const d of docs) {
      if (d.errors.length) {
        problems.push(`${where}: YAML: ${d.errors.map((e) => e.message).join("; ")}`);
        continue;
      }
      const obj = d.toJS();
      if (obj === null || obj === undefined) continue;
      if (basename(path) === "kustomization.yaml") {
        problems.push(...validateKustomization(obj, path));
        continue;
      }
      count++;
      problems.push(...validateObject(obj, where));
    }
  }
  return [problems, count];
}

function selfTest(files) {
  const failures = [];
  const expectRefused = (name, mutated) => {
    const [problems] = validateTree(mutated);
    if (problems.length) console.log(`ok: self-test refuses ${name} (${problems[0].slice(0, 110)}...)`);
    else failures.push(`self-test: the validator accepted ${name}`);
  };
  const deployment = files.find(([, t]) => /^kind:\s*Deployment\b/m.test(t));
  if (!deployment) return ["self-test: no Deployment found to break"];
  const [dpath, dtext] = deployment;
  const broken = dtext.replace(/containerPort:\s*8080\b/, 'containerPort: "8080"');
  if (broken === dtext) failures.push("self-test: the Deployment has no containerPort: 8080 to break");
  else expectRefused("a Deployment with containerPort as a string", [[dpath, broken]]);
  expectRefused("a document of an unknown kind", [[join(root, "x.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"]]);
  expectRefused("a misspelt apiVersion", [[dpath, dtext.replace("apiVersion: apps/v1", "apiVersion: app/v1")]]);
  expectRefused("a kustomization listing a missing file",
    [[join(root, "base", "kustomization.yaml"), "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - no-such-file.yaml\n"]]);
  expectRefused("a prometheus-adapter rule without metricsQuery",
    [[join(root, "a.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  config.yaml: |\n    rules:\n      - seriesQuery: 'x{pod!=\"\"}'\n        resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}\n        name: {matches: x, as: y}\n"]]);
  return failures;
}

const files = yamlFiles(root).map((p) => [p, readFileSync(p, "utf8")]);
const [problems, count] = validateTree(files);
if (!files.length) problems.push(`no YAML files under ${root}`);
if (!problems.length) {
  console.log(`ok: ${count} Kubernetes objects in ${files.length} files valid against their schemas (kubernetes-models, prometheus-operator, keda); kustomization paths exist`);
}
problems.push(...selfTest(files));
for (const p of problems) console.log(`FAIL ${p}`);
if (problems.length) process.exit(1);
console.log("validate_kubernetes: all passed");
