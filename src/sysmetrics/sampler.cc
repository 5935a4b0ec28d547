#include "sysmetrics/sampler.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/file.h"

namespace tserve::sysmetrics {
namespace {

// The first CPU window the sampler thread measures (after Start's since-boot figure): long
// enough to mean something, short enough that a real figure replaces the since-boot one soon.
constexpr std::chrono::milliseconds kFirstCpuWindow{100};
// A floor on the period so that a zero interval cannot spin the thread.
constexpr std::chrono::milliseconds kMinInterval{10};

}  // namespace

SystemSampler::SystemSampler(Options options, PublishFn publish)
    : options_(std::move(options)), publish_(std::move(publish)) {}

SystemSampler::~SystemSampler() { Stop(); }

void SystemSampler::Start() {
  assert(!thread_.joinable() && "SystemSampler::Start called twice");
  {
    MutexLock lock(&sample_mu_);
    if (options_.enable_gpu) {
      nvml_ = Nvml::Load(&gpu_unavailable_reason_);
    } else {
      gpu_unavailable_reason_ = "GPU sampling disabled";
    }
  }
  // Published at once, never waited for (ready ≤ 100 ms, issue 9 §3): the CPU figure of this
  // first sample is the average since boot (there is no earlier reading to take a window
  // from); the sampler thread publishes the first real window kFirstCpuWindow later.
  publish_(SampleOnce());
  thread_ = std::thread(&SystemSampler::Run, this);
}

void SystemSampler::Stop() {
  {
    MutexLock lock(&stop_mu_);
    stop_ = true;
  }
  stop_cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void SystemSampler::Run() {
  const auto interval = std::max(options_.interval, kMinInterval);
  // Deadlines, not sleeps, so the period does not drift by the time a sample takes.
  auto next = std::chrono::steady_clock::now() +
              std::min<std::chrono::steady_clock::duration>(interval, kFirstCpuWindow);
  MutexLock lock(&stop_mu_);
  while (!stop_cv_.WaitUntil(&stop_mu_, next, [this]() REQUIRES(stop_mu_) { return stop_; })) {
    lock.Unlock();
    publish_(SampleOnce());
    auto now = std::chrono::steady_clock::now();
    next += interval;
    if (next <= now) next = now + interval;  // fell behind: skip, don't burst
    lock.Lock();
  }
}

SystemSample SystemSampler::SampleOnce() {
  MutexLock lock(&sample_mu_);
  SystemSample sample;

  StatusOr<std::string> stat = ReadFile(options_.proc_root + "/stat");
  StatusOr<CpuTimes> cpu = stat.ok() ? ParseProcStat(*stat) : StatusOr<CpuTimes>(stat.status());
  if (cpu.ok()) {
    // The first sample's baseline is all zeros: the average since boot.
    sample.cpu_percent = CpuUtilizationPercent(last_cpu_.value_or(CpuTimes{}), *cpu);
    last_cpu_ = *cpu;
  } else {
    sample.errors.push_back(cpu.status().message());
  }

  StatusOr<std::string> meminfo = ReadFile(options_.proc_root + "/meminfo");
  StatusOr<MemInfo> mem =
      meminfo.ok() ? ParseMeminfo(*meminfo) : StatusOr<MemInfo>(meminfo.status());
  if (mem.ok()) {
    sample.memory = ComputeMemory(*mem);
  } else {
    sample.errors.push_back(mem.status().message());
  }

  const std::string disk_path = options_.disk_path.empty() ? "." : options_.disk_path;
  struct statvfs vfs {};
  if (statvfs(disk_path.c_str(), &vfs) == 0) {
    sample.disk = ComputeDisk(vfs.f_frsize, vfs.f_blocks, vfs.f_bfree, vfs.f_bavail);
  } else {
    sample.errors.push_back("statvfs " + disk_path + ": " + std::strerror(errno));
  }

  if (nvml_) {
    StatusOr<std::vector<GpuSample>> gpus = nvml_->Sample();
    if (gpus.ok()) {
      sample.gpus = std::move(gpus).value();
    } else {
      sample.errors.push_back(gpus.status().message());
    }
  }
  return sample;
}

}  // namespace tserve::sysmetrics
