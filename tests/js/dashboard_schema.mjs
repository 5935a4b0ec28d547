// JSON Schema for tserve's Grafana dashboards, generated at test time from the
// TypeScript types of @grafana/grafana-foundation-sdk with
// ts-json-schema-generator, and an ajv 8 validator for it.
//
// Generating takes about 2 s on the 2-core build machine (TypeScript program
// with type checking, then about 1 s for ajv to compile the schema), so there is
// no cache: the schema always matches the installed SDK.
//
// The SDK's dashboard.Dashboard type is used as it is, except where its types
// are deliberately open or say nothing useful for a file that Grafana
// provisions; each change is in the wrapper below, with its reason:
//
// - Panel targets: the SDK types them as cog.Dataquery, a marker interface
//   with one method and no properties, which becomes an empty closed object
//   (every real query refused). Our panels query Prometheus only, so targets
//   are prometheus.Dataquery (expr: string required, refId, legendFormat, ...).
// - Panel options / fieldConfig.defaults.custom: `any` in dashboard.Panel.
//   Each panel type we use gets its plugin's own types (timeseries.Options,
//   stat.Options, ...), selected by the panel's `type` (an OpenAPI-style
//   discriminator). The list of panel types is closed: a panel of any other
//   type (e.g. the removed Angular "graph") is refused; to use a new panel
//   type, add it to TservePanel below.
// - Options are Partial<> at their top level only: Grafana merges a panel's
//   saved options over the plugin's defaults, so an omitted option means the
//   default; the SDK marks them required because its builders always fill
//   them in. Unknown option keys and wrong value types are still refused, and
//   nested option objects keep the SDK's required fields.
// - uid and title are required (optional in the SDK): the dashboards link to
//   each other by uid (/d/tserve-latency) and provisioning needs a stable uid.
// - Everything else, including additionalProperties: false everywhere the SDK
//   types are closed, is the SDK's. Fields the SDK does not know are refused,
//   among them `__inputs` / `__requires` / `__elements` of Grafana's "export
//   for sharing externally": the file provisioner does not resolve
//   ${DS_...} inputs, so such a file would not work here anyway.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import AjvModule from "ajv";
import { createGenerator } from "ts-json-schema-generator";

const Ajv = AjvModule.default ?? AjvModule;

const here = path.dirname(fileURLToPath(import.meta.url));
const sdkRoot = path.join(here, "node_modules", "@grafana", "grafana-foundation-sdk");
const sdkDist = path.join(sdkRoot, "dist");

// The SDK's version as npm reports it, without the leading "v" it carries in
// its package.json ("v0.0.21").
export const SDK_VERSION = JSON.parse(
  fs.readFileSync(path.join(sdkRoot, "package.json"), "utf8"),
).version.replace(/^v/, "");

// The root type the schema is generated for.
export const ROOT_TYPE = "TserveDashboard";

function sdkModule(pkg) {
  return JSON.stringify(path.join(sdkDist, pkg, "types.gen"));
}

// The wrapper around the SDK's types (see the comment at the top). Interfaces
// that extend an SDK type get their own names because ts-json-schema-generator
// names definitions by bare type name and the SDK has several "Options" and
// "Dataquery"; the schema is generated with expose: "none" (everything
// inlined) for the same reason.
function wrapperSource() {
  return `
import type * as dashboard from ${sdkModule("dashboard")};
import type * as prometheus from ${sdkModule("prometheus")};
import type * as timeseries from ${sdkModule("timeseries")};
import type * as stat from ${sdkModule("stat")};
import type * as gauge from ${sdkModule("gauge")};
import type * as bargauge from ${sdkModule("bargauge")};
import type * as heatmap from ${sdkModule("heatmap")};

export interface FieldConfigWith<C> extends Omit<dashboard.FieldConfig, "custom"> {
  custom?: C;
}
export interface FieldConfigSourceWith<C> extends Omit<dashboard.FieldConfigSource, "defaults"> {
  defaults: FieldConfigWith<C>;
}
export interface PanelWith<T extends string, O, C>
  extends Omit<dashboard.Panel, "type" | "targets" | "options" | "fieldConfig"> {
  type: T;
  targets?: prometheus.Dataquery[];
  options?: Partial<O>;
  fieldConfig?: FieldConfigSourceWith<C>;
}
export interface TimeseriesPanel
  extends PanelWith<"timeseries", timeseries.Options, timeseries.FieldConfig> {}
export interface StatPanel extends PanelWith<"stat", stat.Options, unknown> {}
export interface GaugePanel extends PanelWith<"gauge", gauge.Options, unknown> {}
export interface BarGaugePanel extends PanelWith<"bargauge", bargauge.Options, unknown> {}
export interface HeatmapPanel
  extends PanelWith<"heatmap", heatmap.Options, heatmap.FieldConfig> {}

/** @discriminator type */
export type TservePanel = TimeseriesPanel | StatPanel | GaugePanel | BarGaugePanel | HeatmapPanel;

export interface TserveRowPanel extends Omit<dashboard.RowPanel, "panels"> {
  panels: TservePanel[];
}

/** @discriminator type */
export type TservePanelOrRow =
  | TimeseriesPanel | StatPanel | GaugePanel | BarGaugePanel | HeatmapPanel | TserveRowPanel;

export interface ${ROOT_TYPE} extends Omit<dashboard.Dashboard, "uid" | "title" | "panels"> {
  uid: string;
  title: string;
  panels?: TservePanelOrRow[];
}
`;
}

// Returns the JSON Schema (draft-07) of ROOT_TYPE. Throws if the SDK's types
// or the wrapper do not type-check.
export function generateDashboardSchema() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tserve-dashboard-schema-"));
  try {
    const file = path.join(dir, "dashboard.ts");
    fs.writeFileSync(file, wrapperSource());
    const generator = createGenerator({
      path: file,
      type: ROOT_TYPE,
      expose: "none",
      topRef: false,
      jsDoc: "basic",
      discriminatorType: "open-api",
      additionalProperties: false,
      skipTypeCheck: false,
    });
    return generator.createSchema(ROOT_TYPE);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// Returns an ajv validate function for `schema`. allowUnionTypes for the
// generator's {"type": ["number", "null"]}; discriminator for the panel
// dispatch on `type`; strictRequired stays off because the generator repeats
// the discriminator's `required: ["type"]` at the union's level, where the
// property is only defined in the branches.
export function compileDashboardValidator(schema) {
  const ajv = new Ajv({
    allErrors: true,
    allowUnionTypes: true,
    discriminator: true,
    strict: true,
    strictRequired: false,
  });
  return ajv.compile(schema);
}
