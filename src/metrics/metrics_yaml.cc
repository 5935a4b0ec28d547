#include "metrics/metrics_yaml.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <set>

#include "common/file.h"

namespace tserve::metrics {

namespace {

bool ValidMetricName(const std::string& s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool ValidLabelName(const std::string& s) {
  if (s.empty() || s.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

class Parser {
 public:
  explicit Parser(std::string_view file) : file_(file) {}

  Status Error(const YAML::Node& node, const std::string& what) const {
    // Built by appends: GCC 12 gives a false -Wrestrict on `a + ":" + b` here.
    std::string where(file_);
    if (node.IsDefined() && node.Mark().line >= 0) {
      where.append(":").append(std::to_string(node.Mark().line + 1));
    }
    where.append(": ").append(what);
    return Status::InvalidArgument(std::move(where));
  }

  Status ParseSection(const YAML::Node& section, MetricSection kind, const std::string& label) {
    if (section.IsNull()) return Status::Ok();
    if (!section.IsMap()) {
      return Error(section, label + " must be a map of counter/gauge/histogram lists");
    }
    for (const auto& kv : section) {
      std::string type_name = kv.first.as<std::string>();
      MetricType type;
      if (type_name == "counter") {
        type = MetricType::kCounter;
      } else if (type_name == "gauge") {
        type = MetricType::kGauge;
      } else if (type_name == "histogram") {
        type = MetricType::kHistogram;
      } else {
        return Error(kv.first, "unknown metric type \"" + type_name + "\" in " + label +
                                   " (expected counter, gauge or histogram)");
      }
      if (kv.second.IsNull()) continue;
      if (!kv.second.IsSequence()) {
        return Error(kv.second, label + "." + type_name + " must be a list of metrics");
      }
      for (const auto& entry : kv.second) {
        Status s = ParseEntry(entry, type, kind);
        if (!s.ok()) return s;
      }
    }
    return Status::Ok();
  }

  Status ParseEntry(const YAML::Node& entry, MetricType type, MetricSection kind) {
    if (!entry.IsMap()) return Error(entry, "a metric must be a map with name, unit, dimensions");
    FamilyDesc d;
    d.type = type;
    d.section = kind;
    const YAML::Node name = entry["name"];
    if (!name || !name.IsScalar()) return Error(entry, "metric entry needs a \"name\"");
    d.name = name.as<std::string>();
    if (!ValidMetricName(d.name)) {
      return Error(name,
                   "invalid metric name \"" + d.name + "\" (allowed: [a-zA-Z_:][a-zA-Z0-9_:]*)");
    }
    if (!seen_.insert(d.name).second) {
      return Error(name, "metric \"" + d.name + "\" is defined twice");
    }
    for (const auto& kv : entry) {
      std::string key = kv.first.as<std::string>();
      if (key != "name" && key != "unit" && key != "dimensions" && key != "buckets" &&
          key != "help") {
        return Error(kv.first, "metric \"" + d.name + "\": unknown key \"" + key +
                                   "\" (allowed: name, unit, dimensions, buckets, help)");
      }
    }
    if (const YAML::Node unit = entry["unit"]) {
      if (!unit.IsScalar()) return Error(unit, "metric \"" + d.name + "\": unit must be a string");
      d.unit = unit.as<std::string>();
    }
    if (const YAML::Node dims = entry["dimensions"]) {
      if (!dims.IsSequence() && !dims.IsNull()) {
        return Error(dims, "metric \"" + d.name + "\": dimensions must be a list");
      }
      for (const auto& dim : dims) {
        if (!dim.IsScalar()) {
          return Error(dim, "metric \"" + d.name + "\": a dimension must be a string");
        }
        std::string label = dim.as<std::string>();
        if (!ValidLabelName(label)) {
          return Error(dim, "metric \"" + d.name + "\": invalid dimension name \"" + label + "\"");
        }
        for (const auto& existing : d.label_names) {
          if (existing == label) {
            return Error(dim, "metric \"" + d.name + "\": dimension \"" + label + "\" repeated");
          }
        }
        d.label_names.push_back(std::move(label));
      }
    }
    if (kind == MetricSection::kModel) {
      bool has_host = false;
      for (const auto& l : d.label_names) has_host = has_host || l == "Hostname";
      if (!has_host) d.label_names.emplace_back("Hostname");
    }
    if (const YAML::Node buckets = entry["buckets"]) {
      if (type != MetricType::kHistogram) {
        return Error(buckets, "metric \"" + d.name + "\": buckets are only for histograms");
      }
      if (!buckets.IsSequence() || buckets.size() == 0) {
        return Error(buckets, "histogram \"" + d.name + "\": buckets must be a non-empty list");
      }
      for (const auto& b : buckets) {
        double v = 0;
        try {
          v = b.as<double>();
        } catch (const YAML::Exception&) {
          return Error(
              b, "histogram \"" + d.name + "\": bucket \"" + b.Scalar() + "\" is not a number");
        }
        if (!d.buckets.empty() && !(v > d.buckets.back())) {
          return Error(b, "histogram \"" + d.name + "\": buckets must be strictly ascending");
        }
        d.buckets.push_back(v);
      }
      if (std::isinf(d.buckets.back())) d.buckets.pop_back();  // +Inf is implicit
    }
    if (const YAML::Node help = entry["help"]) {
      d.help = help.as<std::string>();
    } else {
      d.help = TorchServeHelp(type, d.unit);
    }
    if (type == MetricType::kHistogram && d.buckets.empty()) d.buckets = DefaultBuckets();
    out_.push_back(std::move(d));
    return Status::Ok();
  }

  std::vector<FamilyDesc> Take() { return std::move(out_); }

 private:
  std::string_view file_;
  std::set<std::string> seen_;
  std::vector<FamilyDesc> out_;
};

}  // namespace

StatusOr<std::vector<FamilyDesc>> ParseMetricsYaml(std::string_view text,
                                                   std::string_view file_name) {
  Parser parser(file_name);
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (root.IsNull()) {
      return Status::InvalidArgument(std::string(file_name) + ": the file defines no metrics");
    }
    if (!root.IsMap()) {
      return parser.Error(root, "expected a map with dimensions, ts_metrics, model_metrics");
    }
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      if (key == "dimensions") {
        if (!kv.second.IsSequence() && !kv.second.IsNull()) {
          return parser.Error(kv.second, "dimensions must be a list");
        }
      } else if (key == "ts_metrics") {
        Status s = parser.ParseSection(kv.second, MetricSection::kFrontend, key);
        if (!s.ok()) return s;
      } else if (key == "model_metrics") {
        Status s = parser.ParseSection(kv.second, MetricSection::kModel, key);
        if (!s.ok()) return s;
      } else {
        return parser.Error(kv.first, "unknown top-level key \"" + key +
                                          "\" (allowed: dimensions, ts_metrics, model_metrics)");
      }
    }
  } catch (const YAML::Exception& e) {
    std::string where(file_name);
    if (e.mark.line >= 0) where.append(":").append(std::to_string(e.mark.line + 1));
    where.append(": ").append(e.msg);
    return Status::InvalidArgument(std::move(where));
  }
  return parser.Take();
}

StatusOr<std::vector<FamilyDesc>> LoadMetricsYamlFile(const std::string& path) {
  StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return Status(text.status().code(), "metrics config: " + text.status().message());
  return ParseMetricsYaml(*text, path);
}

Status AddFamilies(std::vector<FamilyDesc> families, Registry* registry) {
  for (FamilyDesc& d : families) {
    auto f = registry->Add(std::move(d));
    if (!f.ok()) return f.status();
  }
  return Status::Ok();
}

}  // namespace tserve::metrics
