#include "metrics/metric.h"

#include "metrics/text_format.h"

namespace tserve::metrics {

const char* MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

Series::Series(const FamilyDesc* family, std::vector<std::string> label_values, EventSink* sink)
    : family_(family), label_values_(std::move(label_values)), sink_(sink) {
  rendered_labels_ = RenderLabels(family_->label_names, label_values_);
}

Histogram::Histogram(const FamilyDesc* family, std::vector<std::string> label_values,
                     EventSink* sink)
    : Series(family, std::move(label_values), sink),
      counts_(new std::atomic<uint64_t>[family->buckets.size() + 1]) {
  for (size_t i = 0; i <= family_->buckets.size(); ++i) counts_[i].store(0);
}

void Histogram::ReadCounts(std::vector<uint64_t>* out) const {
  const size_t n = family_->buckets.size() + 1;
  out->resize(n);
  for (size_t i = 0; i < n; ++i) (*out)[i] = counts_[i].load(std::memory_order_relaxed);
}

uint64_t Histogram::Count() const {
  uint64_t total = 0;
  for (size_t i = 0; i <= family_->buckets.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
  }
  return total;
}

std::string TorchServeHelp(MetricType type, const std::string& unit) {
  std::string help = "Torchserve prometheus ";
  help += MetricTypeName(type);
  help += " metric with unit: ";
  help += unit;
  return help;
}

const std::vector<double>& DefaultBuckets() {
  static const std::vector<double> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                               0.5,   1.0,  2.5,   5.0,  10.0};
  return kBuckets;
}

}  // namespace tserve::metrics
