#!/usr/bin/env node
// Validates every Grafana dashboard in deploy/grafana/dashboards/ against a
// JSON Schema generated from @grafana/grafana-foundation-sdk's TypeScript types
// (tests/js/dashboard_schema.mjs says how, and what the wrapper changes).
// What a schema cannot say (24-column grid, overlaps, unique ids, a query per
// panel, $__rate_interval, PromQL syntax, metric names) is checked by
// tests/monitoring/check_dashboards.py.
//
// Usage: node tests/js/validate_dashboards.mjs [dashboard.json ...]
// (from any directory; without arguments, all of deploy/grafana/dashboards).
// Prints every error as "file: /json/pointer: message"; exits 1 on any error,
// and also when the self-test finds that a deliberately broken dashboard
// passes.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  ROOT_TYPE,
  SDK_VERSION,
  compileDashboardValidator,
  generateDashboardSchema,
} from "./dashboard_schema.mjs";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const dashboardDir = path.join(repoRoot, "deploy", "grafana", "dashboards");

function describeError(error) {
  const p = error.params ?? {};
  let detail = "";
  if (p.additionalProperty !== undefined) detail = ` '${p.additionalProperty}'`;
  else if (p.allowedValues !== undefined) detail = `: ${JSON.stringify(p.allowedValues)}`;
  else if (p.allowedValue !== undefined) detail = `: ${JSON.stringify(p.allowedValue)}`;
  else if (p.tagValue !== undefined) detail = ` (got ${JSON.stringify(p.tagValue)})`;
  return `${error.instancePath || "/"}: ${error.message}${detail}`;
}

// The title of the panel an error points into, for the reader's bearings.
function panelTitle(dashboard, pointer) {
  const m = /^\/panels\/(\d+)(?:\/panels\/(\d+))?/.exec(pointer);
  if (!m) return "";
  let panel = dashboard.panels?.[Number(m[1])];
  if (m[2] !== undefined) panel = panel?.panels?.[Number(m[2])];
  return panel?.title ? ` [panel "${panel.title}"]` : "";
}

// Returns the error lines for one dashboard object (empty when valid).
function validate(validateFn, dashboard) {
  if (validateFn(dashboard)) return [];
  return validateFn.errors.map(
    (e) => describeError(e) + panelTitle(dashboard, e.instancePath),
  );
}

// Index of the first panel of `dashboard` for which `predicate` holds.
function findPanel(dashboard, predicate) {
  const i = (dashboard.panels ?? []).findIndex(predicate);
  if (i < 0) throw new Error("self-test: no suitable panel in the sample dashboard");
  return i;
}

// Each case breaks one field of a copy of a real dashboard; validation must
// refuse it with an error at that field's JSON pointer.
function selfTestCases(sample) {
  const q = findPanel(sample, (p) => p.type !== "row" && (p.targets ?? []).length > 0);
  return [
    {
      name: "panel gridPos.w as a string",
      pointer: `/panels/${q}/gridPos/w`,
      breakIt: (d) => { d.panels[q].gridPos.w = String(d.panels[q].gridPos.w); },
    },
    {
      name: "target expr as a number",
      pointer: `/panels/${q}/targets/0/expr`,
      breakIt: (d) => { d.panels[q].targets[0].expr = 42; },
    },
    {
      name: "target without expr",
      pointer: `/panels/${q}/targets/0`,
      breakIt: (d) => { delete d.panels[q].targets[0].expr; },
    },
    {
      name: "unknown panel-level property",
      pointer: `/panels/${q}`,
      breakIt: (d) => { d.panels[q].quieries = []; },
    },
    {
      name: "unknown panel type (Angular graph)",
      pointer: `/panels/${q}`,
      breakIt: (d) => { d.panels[q].type = "graph"; },
    },
    {
      name: "unknown option key (timeseries legend.show)",
      pointer: `/panels/${q}/options/legend`,
      breakIt: (d) => {
        d.panels[q].type = "timeseries";
        d.panels[q].options = { legend: { displayMode: "list", placement: "bottom", showLegend: true, show: true } };
      },
    },
    {
      name: "dashboard without uid",
      pointer: "/",
      breakIt: (d) => { delete d.uid; },
    },
    {
      name: "__inputs of an external export",
      pointer: "/",
      breakIt: (d) => { d.__inputs = [{ name: "DS_PROMETHEUS", type: "datasource" }]; },
    },
  ];
}

function selfTest(validateFn, sampleFile, sample) {
  const failures = [];
  for (const c of selfTestCases(sample)) {
    const broken = structuredClone(sample);
    c.breakIt(broken);
    const lines = validate(validateFn, broken);
    const hit = lines.some((l) => l.startsWith(`${c.pointer}: `));
    if (!hit) {
      failures.push(
        `self-test: a copy of ${sampleFile} with ${c.name} was not refused at ${c.pointer}` +
          (lines.length ? ` (errors: ${lines.join("; ")})` : " (it validated)"),
      );
    }
  }
  return failures;
}

function main() {
  const args = process.argv.slice(2);
  const files = args.length
    ? args.map((f) => path.resolve(f))
    : fs.readdirSync(dashboardDir)
      .filter((f) => f.endsWith(".json"))
      .sort()
      .map((f) => path.join(dashboardDir, f));
  if (files.length === 0) {
    console.error(`no dashboards found in ${dashboardDir}`);
    return 1;
  }

  const validateFn = compileDashboardValidator(generateDashboardSchema());
  const label = `grafana-foundation-sdk ${SDK_VERSION} ${ROOT_TYPE.replace(/^Tserve/, "")} schema`;

  let errors = 0;
  const dashboards = [];
  for (const file of files) {
    // Shown relative to the repository root whatever the cwd, as in the docs.
    const relative = path.relative(repoRoot, file);
    const shown = relative.startsWith("..") ? file : relative;
    let dashboard;
    try {
      dashboard = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (e) {
      console.error(`${shown}: ${e.message}`);
      errors++;
      continue;
    }
    dashboards.push({ shown, dashboard });
    for (const line of validate(validateFn, dashboard)) {
      console.error(`${shown}: ${line}`);
      errors++;
    }
  }

  // The self-test breaks a copy of the first dashboard that has a panel with
  // a query; it runs even when the files have errors.
  const sample = dashboards.find(({ dashboard }) =>
    (dashboard.panels ?? []).some((p) => p.type !== "row" && (p.targets ?? []).length > 0));
  const failures = sample
    ? selfTest(validateFn, sample.shown, sample.dashboard)
    : ["self-test: no dashboard with a query to break"];
  for (const f of failures) console.error(f);

  if (errors || failures.length) {
    console.error(
      `FAIL: ${errors} schema error(s) in ${files.length} dashboard(s) against ${label}` +
        (failures.length ? `; ${failures.length} self-test failure(s)` : ""),
    );
    return 1;
  }
  const noun = files.length === 1 ? "dashboard" : "dashboards";
  console.log(`${files.length} ${noun} valid against ${label} (self-test: ` +
    `${selfTestCases(sample.dashboard).length} broken copies refused)`);
  return 0;
}

process.exitCode = main();
