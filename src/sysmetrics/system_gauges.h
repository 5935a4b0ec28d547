#pragma once

#include <map>
#include <string>

#include "common/status.h"
#include "metrics/registry.h"
#include "sysmetrics/sampler.h"

namespace tserve::sysmetrics {

// Sets the host gauges of metrics.yaml (CPUUtilization, Memory*, Disk*, GPU*) from a
// SystemSample. Host series are resolved at construction; a GPU's series on the first
// sample that shows it. Thread safety: Publish runs on the sampler's thread only.
class SystemGauges {
 public:
  static StatusOr<std::unique_ptr<SystemGauges>> Create(metrics::Registry* registry,
                                                        std::string hostname);
  void Publish(const SystemSample& sample);

 private:
  struct GpuGauges {
    metrics::Gauge* utilization = nullptr;
    metrics::Gauge* memory_utilization = nullptr;
    metrics::Gauge* memory_used = nullptr;
  };
  SystemGauges(metrics::Registry* registry, std::string hostname)
      : registry_(registry), hostname_(std::move(hostname)) {}
  GpuGauges* GaugesForGpu(int index);

  metrics::Registry* registry_;
  std::string hostname_;
  metrics::Gauge* cpu_ = nullptr;
  metrics::Gauge* mem_used_ = nullptr;
  metrics::Gauge* mem_available_ = nullptr;
  metrics::Gauge* mem_utilization_ = nullptr;
  metrics::Gauge* disk_used_ = nullptr;
  metrics::Gauge* disk_available_ = nullptr;
  metrics::Gauge* disk_utilization_ = nullptr;
  std::map<int, GpuGauges> gpus_;
};

// Registers the standard process_* families (Prometheus client conventions, real HELP
// text) and refreshes them from /proc/self at every scrape.
Status RegisterProcessMetrics(metrics::Registry* registry);

}  // namespace tserve::sysmetrics
