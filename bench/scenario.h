#pragma once

// The data both benchmark binaries build: the same family names, label values and sample
// values, so tserve and prometheus-cpp render the same series. Plain C++, no dependency on
// either library.

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

namespace tserve::bench {

enum class Kind { kCounter, kGauge, kHistogram };

// One family to create: `series` label sets (model_name, model_version, hostname).
struct FamilyPlan {
  std::string name;
  Kind kind;
  size_t series;
};

inline constexpr const char* kLabelNames[] = {"model_name", "model_version", "hostname"};

// A typical EC2 internal hostname (41 bytes), the same on every series as in TorchServe.
inline const std::string& Hostname() {
  static const std::string kHostname = "ip-10-0-12-34.eu-west-1.compute.internal";
  return kHostname;
}

// Model names of realistic length (27-29 bytes): "bert-base-uncased-sst2-00042".
inline std::string ModelName(size_t i) {
  static const char* const kStems[] = {"resnet152-imagenet", "bert-base-uncased-sst2",
                                       "yolov8-coco-detector", "whisper-small-en"};
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s-%05zu", kStems[i % 4], i);
  return buf;
}

inline std::string ModelVersion(size_t i) {
  static const char* const kVersions[] = {"1.0", "2.1", "3.0.2"};
  return kVersions[i % 3];
}

// Counter values: integers and quarter fractions, up to 1e6 (Java form "123456.75").
inline double CounterValue(size_t i) {
  size_t k = (i * 7919) % 1000003;
  return static_cast<double>(k) + static_cast<double>(k % 4) * 0.25;
}

// Gauge values: percentages and byte counts with full double precision.
inline double GaugeValue(size_t i) {
  return i % 2 == 0 ? static_cast<double>((i * 7919) % 10000) / 97.0
                    : static_cast<double>(i) * 1048576.0 + 12345.0;
}

// 1024 observations spread log-uniformly over 0.001 .. 20, i.e. over every default bucket
// (0.005 .. 10) and the +Inf overflow; index with `i & 1023`.
inline const std::vector<double>& Observations() {
  static const std::vector<double> kValues = [] {
    std::vector<double> v(1024);
    for (size_t i = 0; i < v.size(); ++i) {
      // A stride coprime with 1024 so neighbouring indices land in different buckets.
      size_t j = (i * 389) % 1024;
      v[i] = 0.001 * std::pow(20000.0, static_cast<double>(j) / 1023.0);
    }
    return v;
  }();
  return kValues;
}

// Observations recorded into each histogram series before a render benchmark.
inline constexpr size_t kObservationsPerHistogram = 32;

inline std::string IndexedName(const char* stem, size_t i) {
  return std::string(stem) + "_" + std::to_string(i);
}

// `total` counter series in 10 families of total/10 series each.
inline std::vector<FamilyPlan> CounterPlan(size_t total) {
  static const char* const kNames[] = {"ts_inference_requests_total",
                                       "ts_inference_latency_microseconds",
                                       "ts_queue_latency_microseconds",
                                       "Requests2XX",
                                       "Requests4XX",
                                       "Requests5XX",
                                       "ts_inference_errors_total",
                                       "ts_handler_time_microseconds",
                                       "ts_preprocess_time_microseconds",
                                       "ts_postprocess_time_microseconds"};
  std::vector<FamilyPlan> plan;
  for (const char* name : kNames) plan.push_back({name, Kind::kCounter, total / 10});
  return plan;
}

// The 9,300-series mix: 30 counter families x 200 series, 15 gauge families x 200,
// 3 histogram families x 100 (default 11 buckets, so 14 samples per histogram series).
inline constexpr size_t kMixedSeries = 9300;
inline std::vector<FamilyPlan> MixedPlan() {
  std::vector<FamilyPlan> plan;
  for (size_t i = 0; i < 30; ++i) {
    plan.push_back({IndexedName("ts_model_requests_total", i), Kind::kCounter, 200});
  }
  for (size_t i = 0; i < 15; ++i) {
    plan.push_back({IndexedName("ts_model_memory_bytes", i), Kind::kGauge, 200});
  }
  for (size_t i = 0; i < 3; ++i) {
    plan.push_back({IndexedName("ts_model_latency_seconds", i), Kind::kHistogram, 100});
  }
  return plan;
}

// The two families BM_RenderFiltered keeps out of the mix (400 of 9,300 series).
inline std::vector<std::string> FilteredNames() {
  return {IndexedName("ts_model_requests_total", 3), IndexedName("ts_model_requests_total", 17)};
}

inline size_t SeriesCount(const std::vector<FamilyPlan>& plan) {
  size_t n = 0;
  for (const FamilyPlan& f : plan) n += f.series;
  return n;
}

// Default Prometheus buckets (the same list tserve and prometheus-cpp users write).
inline const std::vector<double>& DefaultBuckets() {
  static const std::vector<double> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                               0.5,   1.0,  2.5,   5.0,  10.0};
  return kBuckets;
}

}  // namespace tserve::bench
