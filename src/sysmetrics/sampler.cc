#include "sysmetrics/sampler.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

namespace tserve::sysmetrics {
namespace {

// The first CPU figure's window: long enough to mean something, short enough not to delay
// startup noticeably.
constexpr std::chrono::milliseconds kFirstCpuWindow{100};
// A floor on the period so that a zero interval cannot spin the thread.
constexpr std::chrono::milliseconds kMinInterval{10};

StatusOr<std::string> ReadFile(const std::string& path) {
  // /proc files report size 0, so read to the end rather than by size.
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Unavailable("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::Unavailable("cannot read " + path);
  return text.str();
}

}  // namespace

SystemSampler::SystemSampler(Options options, PublishFn publish)
    : options_(std::move(options)), publish_(std::move(publish)) {}

SystemSampler::~SystemSampler() { Stop(); }

void SystemSampler::Start() {
  assert(!thread_.joinable() && "SystemSampler::Start called twice");
  {
    std::lock_guard<std::mutex> lock(sample_mu_);
    if (options_.enable_gpu) {
      nvml_ = Nvml::Load(&gpu_unavailable_reason_);
    } else {
      gpu_unavailable_reason_ = "GPU sampling disabled";
    }
    if (!last_cpu_) {
      StatusOr<std::string> text = ReadFile(options_.proc_root + "/stat");
      if (text.ok()) {
        StatusOr<CpuTimes> cpu = ParseProcStat(*text);
        if (cpu.ok()) last_cpu_ = *cpu;
      }
    }
  }
  std::this_thread::sleep_for(kFirstCpuWindow);
  publish_(SampleOnce());
  thread_ = std::thread(&SystemSampler::Run, this);
}

void SystemSampler::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SystemSampler::Run() {
  const auto interval = std::max(options_.interval, kMinInterval);
  // Deadlines, not sleeps, so the period does not drift by the time a sample takes.
  auto next = std::chrono::steady_clock::now() + interval;
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stop_cv_.wait_until(lock, next, [this] { return stop_; })) {
    lock.unlock();
    publish_(SampleOnce());
    auto now = std::chrono::steady_clock::now();
    next += interval;
    if (next <= now) next = now + interval;  // fell behind: skip, don't burst
    lock.lock();
  }
}

SystemSample SystemSampler::SampleOnce() {
  std::lock_guard<std::mutex> lock(sample_mu_);
  SystemSample sample;

  StatusOr<std::string> stat = ReadFile(options_.proc_root + "/stat");
  StatusOr<CpuTimes> cpu = stat.ok() ? ParseProcStat(*stat) : StatusOr<CpuTimes>(stat.status());
  if (cpu.ok()) {
    if (last_cpu_) sample.cpu_percent = CpuUtilizationPercent(*last_cpu_, *cpu);
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
