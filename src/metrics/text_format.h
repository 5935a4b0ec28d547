#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "metrics/registry.h"

namespace tserve::metrics {

// The `name[]` filter of TorchServe's /metrics: the set of *sample* names to keep.
// Repeated names count once. A histogram X has samples X_bucket, X_count and X_sum.
class NameFilter {
 public:
  NameFilter() = default;
  explicit NameFilter(const std::vector<std::string>& names) : names_(names.begin(), names.end()) {}
  bool Contains(std::string_view sample_name) const { return names_.count(sample_name) != 0; }
  bool empty() const { return names_.empty(); }
  // Whether any sample of the family could pass (to skip collecting the others).
  bool MayMatch(const FamilyDesc& d) const;

 private:
  std::set<std::string, std::less<>> names_;
};

struct RenderOptions {
  // Keep only samples whose sample name is in the filter; families left with no sample are
  // dropped (TorchServe). Null: keep everything; families without samples print HELP/TYPE.
  const NameFilter* sample_filter = nullptr;
  // Null, or the only families to render at all (legacy mode).
  const std::set<std::string, std::less<>>* families = nullptr;
};

// Whether the options can keep anything of the family: pass it to Registry::Collect so a
// filtered scrape reads only what it renders.
bool WantsFamily(const RenderOptions& options, const FamilyDesc& d);

// Renders a snapshot in the Prometheus text format 0.0.4, byte-compatible with
// TorchServe's Java client: trailing comma after every label, Java numbers, no timestamps.
// Pure function: same snapshot and options, same bytes. Appends to *out.
void RenderText(const Snapshot& snapshot, const RenderOptions& options, std::string* out);

// `{a="x",b="y",}` with label values escaped (\\, \", \n); "" when there are no labels.
std::string RenderLabels(const std::vector<std::string>& names,
                         const std::vector<std::string>& values);

// Escaping rules of the text format.
void AppendEscapedLabelValue(std::string_view v, std::string* out);
void AppendEscapedHelp(std::string_view v, std::string* out);

}  // namespace tserve::metrics
