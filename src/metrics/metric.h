#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tserve::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };
const char* MetricTypeName(MetricType type);  // "counter", "gauge", "histogram"

// Which TorchServe metrics.yaml section a family came from; log mode writes ts_metrics to
// ts_metrics.log and model_metrics to model_metrics.log. kBuiltin: tserve's own families.
enum class MetricSection { kFrontend, kModel, kBuiltin };

// The immutable description of a family. Built once (from metrics.yaml or code) and
// owned by its Family; readable from any thread.
struct FamilyDesc {
  std::string name;
  std::string help;  // the final HELP text, unescaped
  std::string unit;  // metrics.yaml unit, used in log mode ("Count", "ms", ...)
  MetricType type = MetricType::kGauge;
  MetricSection section = MetricSection::kBuiltin;
  std::vector<std::string> label_names;
  std::vector<double> buckets;  // histograms: strictly ascending upper bounds, no +Inf
};

class Series;

// Receives every recorded value in log/legacy mode. Implementations must be thread safe.
// Not used at all (a null pointer) in prometheus mode.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Record(const Series& series, double value) = 0;
};

// A series appears on /metrics only once something was recorded into it (TorchServe: a
// family "defined but never observed prints HELP/TYPE only"). Counters and gauges start at
// -0.0, which no recorded value leaves behind (-0.0 + v == v, Set overwrites), so the
// check costs the record path nothing. Histograms are untouched while their count is 0.
inline constexpr double kUntouched = -0.0;
inline bool IsUntouched(double v) { return v == 0.0 && std::signbit(v); }

// One labelled time series of a family. Created by Family, which keeps it alive; handles
// (raw pointers) stay valid until Family::Remove or the registry's destruction.
// The label block is rendered once, at creation, in TorchServe's format.
class Series {
 public:
  Series(const FamilyDesc* family, std::vector<std::string> label_values, EventSink* sink);
  virtual ~Series() = default;
  Series(const Series&) = delete;
  Series& operator=(const Series&) = delete;

  const FamilyDesc& family() const { return *family_; }
  const std::vector<std::string>& label_values() const { return label_values_; }
  // `{a="x",b="y",}` (the trailing comma is TorchServe's), or "" without labels.
  const std::string& rendered_labels() const { return rendered_labels_; }

 protected:
  const FamilyDesc* family_;
  std::vector<std::string> label_values_;
  std::string rendered_labels_;
  EventSink* sink_;  // null unless metrics go to log files
};

// A monotonically increasing double. Inc is one locked integer add (x86 `lock xadd`); Add
// one relaxed atomic add on a double. No lock, no allocation. Value = count + sum of Adds.
class Counter final : public Series {
 public:
  using Series::Series;
  void Inc() {
    count_.fetch_add(1, std::memory_order_relaxed);
    if (sink_ != nullptr) [[unlikely]]
      sink_->Record(*this, 1.0);
  }
  void Add(double v) {
    value_.fetch_add(v, std::memory_order_relaxed);
    if (sink_ != nullptr) [[unlikely]]
      sink_->Record(*this, v);
  }
  // Makes an untouched counter appear on /metrics at 0 (recording nothing), so that rate()
  // sees the first increase after a scrape of 0 instead of a series born with it.
  void Expose() {
    double untouched = kUntouched;  // compared bitwise: +0.0 or a value stays as it is
    value_.compare_exchange_strong(untouched, 0.0, std::memory_order_relaxed);
  }
  double Value() const {
    const uint64_t n = count_.load(std::memory_order_relaxed);
    const double v = value_.load(std::memory_order_relaxed);
    return n == 0 ? v : static_cast<double>(n) + v;  // -0.0 (untouched) only if both are
  }

 private:
  std::atomic<uint64_t> count_{0};
  std::atomic<double> value_{kUntouched};
};

// A value that goes up and down. Set: one relaxed store.
class Gauge final : public Series {
 public:
  using Series::Series;
  void Set(double v) {
    value_.store(v, std::memory_order_relaxed);
    if (sink_ != nullptr) [[unlikely]]
      sink_->Record(*this, v);
  }
  void Add(double v) {
    double now = value_.fetch_add(v, std::memory_order_relaxed) + v;
    if (sink_ != nullptr) [[unlikely]]
      sink_->Record(*this, now);
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{kUntouched};
};

// Cumulative-bucket histogram: an atomic count per bucket plus an atomic sum. Observe is
// a short search over the bounds and two relaxed atomic adds.
class Histogram final : public Series {
 public:
  Histogram(const FamilyDesc* family, std::vector<std::string> label_values, EventSink* sink);
  void Observe(double v) {
    const std::vector<double>& b = family_->buckets;
    size_t i = 0;
    const size_t n = b.size();
    while (i < n && v > b[i]) ++i;  // bucket lists are short: a scan beats a bisection
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
    if (sink_ != nullptr) [[unlikely]]
      sink_->Record(*this, v);
  }
  // Per-bucket (not cumulative) counts; the last one is the +Inf overflow bucket.
  void ReadCounts(std::vector<uint64_t>* out) const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t Count() const;

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // buckets.size() + 1
  std::atomic<double> sum_{kUntouched};
};

// The HELP text TorchServe writes for a metrics.yaml family.
std::string TorchServeHelp(MetricType type, const std::string& unit);

// Prometheus' default buckets, used when a histogram names none.
const std::vector<double>& DefaultBuckets();

}  // namespace tserve::metrics
