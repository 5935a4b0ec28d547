#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "metrics/metric.h"
#include "metrics/registry.h"

namespace tserve::metrics {

// Parses a metrics.yaml in TorchServe's schema:
//   dimensions: [&level Level, ...]            (anchors; optional)
//   ts_metrics:    {counter: [...], gauge: [...], histogram: [...]}
//   model_metrics: {counter: [...], gauge: [...], histogram: [...]}
// Each entry: {name, unit, dimensions: [..]} plus tserve's optional `buckets: [..]`
// (histograms) and `help: "..."`. "Hostname" is appended to every model_metrics entry
// that does not declare it, as TorchServe does. Errors name the file, the line and what
// is wrong, e.g. `metrics.yaml:14: histogram "x": buckets must be strictly ascending`.
StatusOr<std::vector<FamilyDesc>> ParseMetricsYaml(std::string_view text,
                                                   std::string_view file_name);

// Reads and parses a file (errors name it).
StatusOr<std::vector<FamilyDesc>> LoadMetricsYamlFile(const std::string& path);

// Adds every family to the registry (duplicate names are errors).
Status AddFamilies(std::vector<FamilyDesc> families, Registry* registry);

// The default metrics.yaml shipped in config/metrics.yaml and compiled into the binary.
std::string_view DefaultMetricsYaml();

}  // namespace tserve::metrics
