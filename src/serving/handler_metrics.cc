#include "serving/handler_metrics.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "common/strings.h"

namespace tserve::serving {

namespace {

using metrics::FamilyDesc;
using metrics::MetricType;

// Past this many distinct (name, dimensions) keys, new ones are resolved on every call
// instead of cached: a handler putting request ids in a dimension must not grow memory here
// (the registry's series grow anyway; that is the handler's choice).
constexpr size_t kMaxCached = 1024;

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

// TorchServe spells units both ways ("ms" in model_metrics, "Milliseconds" in ts_metrics).
std::string_view CanonicalUnit(std::string_view unit) {
  static constexpr std::pair<std::string_view, std::string_view> kAliases[] = {
      {"Milliseconds", "ms"}, {"Seconds", "s"},    {"Microseconds", "us"}, {"Megabytes", "MB"},
      {"Gigabytes", "GB"},    {"Kilobytes", "kB"}, {"KB", "kB"},           {"Bytes", "B"},
  };
  for (const auto& [from, to] : kAliases) {
    if (unit == from) return to;
  }
  return unit;
}

[[noreturn]] void Fail(std::string message) { throw MetricError(message); }

void AppendLengthPrefixed(std::string* key, std::string_view s) {
  const auto n = static_cast<uint32_t>(s.size());
  char len[sizeof n];
  std::memcpy(len, &n, sizeof n);
  key->append(len, sizeof n);
  key->append(s);
}

// Length prefixes keep distinct (name, dimensions) lists from colliding whatever bytes the
// values hold.
void BuildKey(std::string* key, std::string_view name, const Dimensions& dimensions) {
  key->clear();
  AppendLengthPrefixed(key, name);
  for (const auto& [k, v] : dimensions) {
    AppendLengthPrefixed(key, k);
    AppendLengthPrefixed(key, v);
  }
}

void RecordInto(metrics::Series* series, MetricType type, double value) {
  switch (type) {
    case MetricType::kCounter:
      static_cast<metrics::Counter*>(series)->Add(value);
      break;
    case MetricType::kGauge:
      static_cast<metrics::Gauge*>(series)->Set(value);
      break;
    case MetricType::kHistogram:
      static_cast<metrics::Histogram*>(series)->Observe(value);
      break;
  }
}

}  // namespace

HandlerMetrics::HandlerMetrics(metrics::Registry* registry, std::string model_name,
                               std::string hostname)
    : registry_(registry), model_name_(std::move(model_name)), hostname_(std::move(hostname)) {}

void HandlerMetrics::AddCounter(std::string_view name, double value, const Dimensions& dimensions) {
  Record(Call::kCounter, name, value, dimensions, {});
}

void HandlerMetrics::AddTime(std::string_view name, double value, const Dimensions& dimensions,
                             std::string_view unit) {
  Record(Call::kTime, name, value, dimensions, unit);
}

void HandlerMetrics::AddSize(std::string_view name, double value, const Dimensions& dimensions,
                             std::string_view unit) {
  Record(Call::kSize, name, value, dimensions, unit);
}

void HandlerMetrics::AddPercent(std::string_view name, double value, const Dimensions& dimensions) {
  Record(Call::kPercent, name, value, dimensions, {});
}

void HandlerMetrics::AddMetric(std::string_view name, double value, std::string_view unit,
                               const Dimensions& dimensions) {
  Record(Call::kMetric, name, value, dimensions, unit);
}

void HandlerMetrics::Record(Call call, std::string_view name, double value,
                            const Dimensions& dimensions, std::string_view unit) {
  // One buffer per thread: the key is built without allocating once it has grown.
  thread_local std::string key;
  BuildKey(&key, name, dimensions);
  Entry entry;
  {
    MutexLock lock(&mu_);
    auto it = cache_.find(std::string_view(key));
    if (it != cache_.end()) entry = it->second;
  }
  if (entry.series != nullptr) {
    CheckCall(call, *entry.desc, value, unit);
  } else {
    entry = Resolve(call, name, value, dimensions, unit);
    MutexLock lock(&mu_);
    if (cache_.size() < kMaxCached) cache_.emplace(key, entry);
  }
  RecordInto(entry.series, entry.desc->type, value);
}

void HandlerMetrics::CheckCall(Call call, const FamilyDesc& desc, double value,
                               std::string_view unit) {
  const char* api = "AddMetric";
  switch (call) {
    case Call::kCounter:
      api = "AddCounter";
      break;
    case Call::kTime:
      api = "AddTime";
      break;
    case Call::kSize:
      api = "AddSize";
      break;
    case Call::kPercent:
      api = "AddPercent";
      break;
    case Call::kMetric:
      break;
  }
  if (call == Call::kCounter && desc.type != MetricType::kCounter) {
    Fail("custom metric " + Quoted(desc.name) + " is a " + metrics::MetricTypeName(desc.type) +
         " in metrics.yaml; " + api + " records a counter");
  }
  if (call != Call::kCounter && call != Call::kMetric && desc.type == MetricType::kCounter) {
    Fail("custom metric " + Quoted(desc.name) + " is a counter in metrics.yaml; " + api +
         " records a gauge (or a histogram): use AddCounter or AddMetric");
  }
  if ((call == Call::kTime || call == Call::kSize) &&
      CanonicalUnit(unit) != CanonicalUnit(desc.unit)) {
    Fail("custom metric " + Quoted(desc.name) + " has unit " + Quoted(desc.unit) +
         " in metrics.yaml, but " + api + " was given unit " + Quoted(unit));
  }
  if (desc.type == MetricType::kCounter && !(value >= 0)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", value);
    Fail("custom metric " + Quoted(desc.name) + " is a counter: " + api +
         " needs a value >= 0, got " + buf);
  }
}

HandlerMetrics::Entry HandlerMetrics::Resolve(Call call, std::string_view name, double value,
                                              const Dimensions& dimensions,
                                              std::string_view unit) const {
  metrics::Family* family = registry_->Find(name);
  if (family == nullptr || family->desc().section != metrics::MetricSection::kModel) {
    std::string message =
        "custom metric " + Quoted(name) + " is not defined in metrics.yaml (model_metrics)";
    if (family != nullptr) {
      message += family->desc().section == metrics::MetricSection::kFrontend
                     ? "; it is a ts_metrics metric, which handlers cannot record"
                     : "; it is one of tserve's own metrics, which handlers cannot record";
    }
    Fail(std::move(message));
  }
  const FamilyDesc& desc = family->desc();
  // Type and unit errors first: they say more than a dimension mismatch would.
  CheckCall(call, desc, value, unit);

  const std::string what = "custom metric " + Quoted(desc.name);
  const auto declared = [&](std::string_view dim) {
    return std::find(desc.label_names.begin(), desc.label_names.end(), dim) !=
           desc.label_names.end();
  };
  std::vector<std::string> extra;
  for (size_t i = 0; i < dimensions.size(); ++i) {
    const std::string& dim = dimensions[i].first;
    for (size_t j = 0; j < i; ++j) {
      if (dimensions[j].first == dim) Fail(what + ": dimension " + Quoted(dim) + " given twice");
    }
    if (!declared(dim)) extra.push_back(Quoted(dim));
  }
  if (!extra.empty()) {
    Fail(what + ": dimension" + (extra.size() > 1 ? "s " : " ") + JoinNames(extra) +
         (extra.size() > 1 ? " are" : " is") +
         " not declared in metrics.yaml (declared: " + JoinNames(desc.label_names) + ")");
  }

  metrics::Labels labels;
  labels.reserve(desc.label_names.size());
  std::vector<std::string> missing;
  for (const std::string& dim : desc.label_names) {
    auto given = std::find_if(dimensions.begin(), dimensions.end(),
                              [&](const auto& kv) { return kv.first == dim; });
    if (given != dimensions.end()) {
      labels.emplace_back(dim, given->second);
    } else if (dim == "ModelName") {
      labels.emplace_back(dim, model_name_);
    } else if (dim == "Level") {
      labels.emplace_back(dim, "Model");
    } else if (dim == "Hostname") {
      labels.emplace_back(dim, hostname_);
    } else {
      missing.push_back(Quoted(dim));
    }
  }
  if (!missing.empty()) {
    Fail(what + ": dimension" + (missing.size() > 1 ? "s " : " ") + JoinNames(missing) +
         (missing.size() > 1 ? " were" : " was") + " not given (metrics.yaml declares " +
         JoinNames(desc.label_names) + ")");
  }

  StatusOr<metrics::Series*> series = Status::Internal("unreachable");
  switch (desc.type) {
    case MetricType::kCounter: {
      auto s = family->GetCounter(labels, /*strict=*/true);
      series = s.ok() ? StatusOr<metrics::Series*>(*s) : s.status();
      break;
    }
    case MetricType::kGauge: {
      auto s = family->GetGauge(labels, /*strict=*/true);
      series = s.ok() ? StatusOr<metrics::Series*>(*s) : s.status();
      break;
    }
    case MetricType::kHistogram: {
      auto s = family->GetHistogram(labels, /*strict=*/true);
      series = s.ok() ? StatusOr<metrics::Series*>(*s) : s.status();
      break;
    }
  }
  if (!series.ok()) Fail(what + ": " + series.status().message());
  return Entry{*series, &desc};
}

}  // namespace tserve::serving
