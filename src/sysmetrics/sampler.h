#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "sysmetrics/nvml.h"
#include "sysmetrics/proc_parsers.h"

namespace tserve::sysmetrics {

// One round of host figures. A figure that could not be read is empty (GPUs: no entries)
// and `errors` says why, one line each, for the caller to log if it wants to.
struct SystemSample {
  std::optional<double> cpu_percent;  // empty on the first reading: it needs two
  std::optional<MemoryFigures> memory;
  std::optional<DiskFigures> disk;
  std::vector<GpuSample> gpus;
  std::vector<std::string> errors;
};

// Samples CPU, memory, disk and (through NVML, when present) GPU figures every interval
// on its own thread and hands each SystemSample to `publish`. It knows nothing of the
// metrics registry: the caller's publish callback sets the gauges.
//
// Lifecycle: construct, Start() once, Stop() (or destroy). Start() samples and publishes
// once on the calling thread before it returns, without waiting (so the gauges have values
// before the first scrape; that first CPU figure is the average since boot), then publishes
// from the sampler thread: once after a 100 ms window (a real CPU figure soon after start),
// then every `interval`.
// Thread safety: Start/Stop/the destructor from one owning thread. `publish` runs on one
// thread at a time (the caller's in Start, then the sampler thread), never concurrently
// with itself. SampleOnce() may be called from any thread; it is serialised with the
// sampler thread but shares its CPU reading, so calling it while started shortens the
// window of the next published CPU figure. gpu_unavailable_reason() is stable once
// Start() has returned.
class SystemSampler {
 public:
  struct Options {
    std::chrono::milliseconds interval{15000};
    std::string disk_path;            // statvfs target: the model store, else the working dir ("")
    std::string proc_root = "/proc";  // tests point it at a fixture folder
    bool enable_gpu = true;
  };
  using PublishFn = std::function<void(const SystemSample&)>;

  SystemSampler(Options options, PublishFn publish);
  ~SystemSampler();
  SystemSampler(const SystemSampler&) = delete;
  SystemSampler& operator=(const SystemSampler&) = delete;

  // Loads NVML (if enabled), publishes a first sample, starts the thread. Call once.
  void Start() EXCLUDES(sample_mu_);
  // Wakes and joins the thread. Idempotent; a no-op before Start().
  void Stop() EXCLUDES(stop_mu_);

  // Reads every source once. cpu_percent compares with the previous reading, if any.
  SystemSample SampleOnce() EXCLUDES(sample_mu_);

  // Why there are no GPU figures: empty when NVML loaded (even with zero devices), else
  // e.g. "cannot load NVML library libnvidia-ml.so.1: ..." or "GPU sampling disabled".
  // Empty before Start().
  const std::string& gpu_unavailable_reason() const { return gpu_unavailable_reason_; }

 private:
  void Run() EXCLUDES(stop_mu_);

  const Options options_;
  const PublishFn publish_;
  // Written by Start() (under sample_mu_) before the sampler thread exists; read-only after.
  std::string gpu_unavailable_reason_;

  Mutex sample_mu_;
  std::unique_ptr<Nvml> nvml_ GUARDED_BY(sample_mu_);
  std::optional<CpuTimes> last_cpu_ GUARDED_BY(sample_mu_);

  Mutex stop_mu_;
  CondVar stop_cv_;  // signalled when stop_ is set
  bool stop_ GUARDED_BY(stop_mu_) = false;
  std::thread thread_;  // the owning thread's (Start/Stop)
};

}  // namespace tserve::sysmetrics
