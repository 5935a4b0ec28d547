#pragma once

#include <map>
#include <string>
#include <string_view>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "metrics/metric.h"
#include "metrics/registry.h"
#include "tserve/handler.h"

namespace tserve::serving {

// The custom metrics API handed to one model's handlers (ModelContext::metrics): each call
// records into the metrics.yaml `model_metrics` family of that name, with the caller's
// dimensions bound to the family's dimensions by name. Defaults for dimensions the caller
// does not give (and the family declares): ModelName=<model>, Level=Model,
// Hostname=<host>; the caller's values win. Counters add, gauges set, histograms observe.
//
// Anything that does not match metrics.yaml throws tserve::MetricError naming the metric
// and what is wrong: a name not defined under model_metrics, a call of the wrong type
// (AddCounter on a gauge; AddTime/AddSize/AddPercent on a counter), AddTime/AddSize's unit
// differing from the yaml unit ("ms" and "Milliseconds", "s" and "Seconds", "us" and
// "Microseconds", "MB" and "Megabytes", "GB" and "Gigabytes", "kB" and "Kilobytes", "B"
// and "Bytes" are the same unit), dimensions missing, undeclared or given twice, and a
// negative or NaN counter increment. AddPercent and AddMetric do not check the unit.
//
// Resolved series are cached per (name, caller's dimensions) so that repeated calls cost a
// lookup in a small map under a mutex, without allocation once warm.
//
// Ownership: borrows the registry, which must outlive it. The cached series pointers must
// stay valid: do not Family::Remove/Clear a model_metrics series while this object lives.
// Thread safety: all methods may be called concurrently (workers share one instance).
class HandlerMetrics final : public tserve::Metrics {
 public:
  HandlerMetrics(metrics::Registry* registry, std::string model_name, std::string hostname);
  HandlerMetrics(const HandlerMetrics&) = delete;
  HandlerMetrics& operator=(const HandlerMetrics&) = delete;

  void AddCounter(std::string_view name, double value = 1.0,
                  const Dimensions& dimensions = {}) override;
  void AddTime(std::string_view name, double value, const Dimensions& dimensions = {},
               std::string_view unit = "ms") override;
  void AddSize(std::string_view name, double value, const Dimensions& dimensions = {},
               std::string_view unit = "MB") override;
  void AddPercent(std::string_view name, double value, const Dimensions& dimensions = {}) override;
  void AddMetric(std::string_view name, double value, std::string_view unit,
                 const Dimensions& dimensions = {}) override;

  const std::string& model_name() const { return model_name_; }
  const std::string& hostname() const { return hostname_; }

 private:
  // Which API call is recording: decides the accepted metric types and the unit check.
  enum class Call { kCounter, kTime, kSize, kPercent, kMetric };

  struct Entry {
    metrics::Series* series = nullptr;
    const metrics::FamilyDesc* desc = nullptr;
  };

  void Record(Call call, std::string_view name, double value, const Dimensions& dimensions,
              std::string_view unit) EXCLUDES(mu_);
  // Finds the family, checks the call and binds the dimensions (the slow path).
  Entry Resolve(Call call, std::string_view name, double value, const Dimensions& dimensions,
                std::string_view unit) const;
  // The checks that depend on the call, not on the dimensions (type, unit, value).
  static void CheckCall(Call call, const metrics::FamilyDesc& desc, double value,
                        std::string_view unit);

  metrics::Registry* const registry_;
  const std::string model_name_;
  const std::string hostname_;

  Mutex mu_;
  // Key: the name and the caller's dimensions, length-prefixed (see the .cc).
  std::map<std::string, Entry, std::less<>> cache_ GUARDED_BY(mu_);
};

}  // namespace tserve::serving
