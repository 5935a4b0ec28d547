#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tserve::sysmetrics {

// One GPU's figures, as TorchServe 0.12 reports them (ts/metrics/system_metrics.py,
// collect_gpu_metrics, which reads NVML through torch.cuda).
struct GpuSample {
  int index = 0;  // NVML index: the DeviceId label
  // nvmlDeviceGetUtilizationRates().gpu: % of time a kernel ran. GPUUtilization.
  // Empty where NVML does not support it (MIG-enabled parents, some vGPUs).
  std::optional<double> utilization_percent;
  // nvmlDeviceGetUtilizationRates().memory: % of time device memory was being read or
  // written (torch.cuda.memory_usage()). This is what TorchServe 0.12 exports as
  // GPUMemoryUtilization. Empty where NVML does not support it.
  std::optional<double> memory_utilization_percent;
  // (total - free) in whole MiB, floored as TorchServe's `// 1024**2`. GPUMemoryUsed.
  double memory_used_mb = 0;
  double memory_total_mb = 0;  // total in whole MiB, floored
  // (total - free) / total * 100, unrounded: what TorchServe up to 0.11 (via nvgpu)
  // exported as GPUMemoryUtilization. 0 when total is 0.
  double memory_used_percent = 0;
};

// NVML (libnvidia-ml), loaded at run time with dlopen so the build needs no CUDA and the
// binary runs on hosts without a GPU driver. The library is $TSERVE_NVML_LIBRARY when set,
// else "libnvidia-ml.so.1".
//
// Ownership: a loaded Nvml holds the library open and NVML initialised; the destructor
// calls nvmlShutdown and dlclose.
// Thread safety: Sample() and DeviceCount() may be called from one thread at a time (the
// sampler thread); Load and the destructor must not overlap with them.
class Nvml {
 public:
  // The loaded library, or nullptr with *why_not (if non-null) saying why: the library is
  // missing, lacks a symbol, or nvmlInit_v2 failed. Each reason names the library path.
  static std::unique_ptr<Nvml> Load(std::string* why_not);

  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  // The number of devices NVML sees now; 0 when it cannot say.
  int DeviceCount();

  // Every device's figures, in index order. An error (naming the device and NVML's
  // message) when the device count, a handle or a memory reading cannot be had.
  StatusOr<std::vector<GpuSample>> Sample();

  const std::string& library_path() const { return path_; }

 private:
  struct Api;
  Nvml(std::string path, void* handle, std::unique_ptr<Api> api);

  std::string path_;
  void* handle_;  // from dlopen
  std::unique_ptr<Api> api_;
};

}  // namespace tserve::sysmetrics
