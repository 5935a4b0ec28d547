#include "sysmetrics/system_gauges.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "common/file.h"

namespace tserve::sysmetrics {

namespace {

metrics::Gauge* HostGauge(metrics::Registry* registry, const char* name,
                          const std::string& hostname, Status* status) {
  auto g = registry->GaugeFor(name, {{"Level", "Host"}, {"Hostname", hostname}});
  if (!g.ok()) {
    *status = g.status();
    return nullptr;
  }
  return *g;
}

// The text of a /proc file, or "" when it cannot be read (the parsers then report it).
std::string ReadProcFile(const char* path) {
  StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? std::move(*text) : std::string();
}

int CountOpenFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (struct dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // not counting the descriptor opendir itself holds
}

}  // namespace

StatusOr<std::unique_ptr<SystemGauges>> SystemGauges::Create(metrics::Registry* registry,
                                                             std::string hostname) {
  std::unique_ptr<SystemGauges> g(new SystemGauges(registry, std::move(hostname)));
  Status s;
  g->cpu_ = HostGauge(registry, "CPUUtilization", g->hostname_, &s);
  g->mem_used_ = HostGauge(registry, "MemoryUsed", g->hostname_, &s);
  g->mem_available_ = HostGauge(registry, "MemoryAvailable", g->hostname_, &s);
  g->mem_utilization_ = HostGauge(registry, "MemoryUtilization", g->hostname_, &s);
  g->disk_used_ = HostGauge(registry, "DiskUsage", g->hostname_, &s);
  g->disk_available_ = HostGauge(registry, "DiskAvailable", g->hostname_, &s);
  g->disk_utilization_ = HostGauge(registry, "DiskUtilization", g->hostname_, &s);
  if (!s.ok()) return s;
  return g;
}

SystemGauges::GpuGauges* SystemGauges::GaugesForGpu(int index) {
  auto it = gpus_.find(index);
  if (it != gpus_.end()) return &it->second;
  const std::string id = std::to_string(index);
  const metrics::Labels labels = {{"Level", "Host"}, {"DeviceId", id}, {"Hostname", hostname_}};
  GpuGauges g;
  auto u = registry_->GaugeFor("GPUUtilization", labels);
  auto mu = registry_->GaugeFor("GPUMemoryUtilization", labels);
  auto mused = registry_->GaugeFor("GPUMemoryUsed", labels);
  if (!u.ok() || !mu.ok() || !mused.ok()) return nullptr;
  g.utilization = *u;
  g.memory_utilization = *mu;
  g.memory_used = *mused;
  return &gpus_.emplace(index, g).first->second;
}

void SystemGauges::Publish(const SystemSample& sample) {
  if (sample.cpu_percent) cpu_->Set(*sample.cpu_percent);
  if (sample.memory) {
    mem_used_->Set(sample.memory->used_mb);
    mem_available_->Set(sample.memory->available_mb);
    mem_utilization_->Set(sample.memory->utilization_percent);
  }
  if (sample.disk) {
    disk_used_->Set(sample.disk->used_gb);
    disk_available_->Set(sample.disk->available_gb);
    disk_utilization_->Set(sample.disk->utilization_percent);
  }
  for (const GpuSample& gpu : sample.gpus) {
    GpuGauges* g = GaugesForGpu(gpu.index);
    if (g == nullptr) continue;
    if (gpu.utilization_percent) g->utilization->Set(*gpu.utilization_percent);
    // Memory in use over total, as TorchServe reported it through nvgpu: the figure an
    // operator means by "GPU memory utilization" (0.12's busy-time percent is not it).
    g->memory_utilization->Set(gpu.memory_used_percent);
    g->memory_used->Set(gpu.memory_used_mb);
  }
}

Status RegisterProcessMetrics(metrics::Registry* registry) {
  auto gauge = [&](const char* name, const char* help,
                   metrics::MetricType type =
                       metrics::MetricType::kGauge) -> StatusOr<metrics::Family*> {
    metrics::FamilyDesc d;
    d.name = name;
    d.help = help;
    d.type = type;
    d.unit = type == metrics::MetricType::kCounter ? "Seconds" : "";
    return registry->GetOrAdd(std::move(d));
  };
  auto cpu = gauge("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                   metrics::MetricType::kCounter);
  auto rss = gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  auto vms = gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.");
  auto fds = gauge("process_open_fds", "Number of open file descriptors.");
  auto max_fds = gauge("process_max_fds", "Maximum number of open file descriptors.");
  auto start =
      gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.");
  for (const auto* f : {&cpu, &rss, &vms, &fds, &max_fds, &start}) {
    if (!f->ok()) return f->status();
  }
  metrics::Counter* cpu_c = *(*cpu)->GetCounter({});
  metrics::Gauge* rss_g = *(*rss)->GetGauge({});
  metrics::Gauge* vms_g = *(*vms)->GetGauge({});
  metrics::Gauge* fds_g = *(*fds)->GetGauge({});
  metrics::Gauge* max_fds_g = *(*max_fds)->GetGauge({});
  metrics::Gauge* start_g = *(*start)->GetGauge({});
  const long ticks = sysconf(_SC_CLK_TCK);
  const long page = sysconf(_SC_PAGESIZE);
  auto boot = ParseBootTime(ReadProcFile("/proc/stat"));
  const double boot_time = boot.ok() ? *boot : 0.0;
  // A counter only goes up: it is advanced by the growth since the last scrape.
  auto last_cpu = std::make_shared<double>(0.0);
  // Reading /proc/self costs more than rendering a small scrape: refresh at most every
  // 500 ms, however often Prometheus (or a load test) scrapes.
  auto last_refresh = std::make_shared<std::chrono::steady_clock::time_point>();
  registry->AddCollectHook([=] {
    const auto now = std::chrono::steady_clock::now();
    if (*last_refresh != std::chrono::steady_clock::time_point() &&
        now - *last_refresh < std::chrono::milliseconds(500)) {
      return;
    }
    *last_refresh = now;
    auto st = ParseProcSelfStat(ReadProcFile("/proc/self/stat"), ticks, page);
    if (st.ok()) {
      // Add(0) is harmless and makes the series visible from the first scrape.
      cpu_c->Add(std::max(0.0, st->cpu_seconds - *last_cpu));
      *last_cpu = std::max(*last_cpu, st->cpu_seconds);
      rss_g->Set(static_cast<double>(st->rss_bytes));
      vms_g->Set(static_cast<double>(st->vsize_bytes));
      start_g->Set(boot_time + st->start_time_after_boot_s);
    }
    int n = CountOpenFds();
    if (n >= 0) fds_g->Set(n);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      max_fds_g->Set(rl.rlim_cur == RLIM_INFINITY ? -1.0 : static_cast<double>(rl.rlim_cur));
    }
  });
  return Status::Ok();
}

}  // namespace tserve::sysmetrics
