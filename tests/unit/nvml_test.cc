#include "sysmetrics/nvml.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "sysmetrics/sampler.h"

namespace tserve::sysmetrics {
namespace {

// Sets an environment variable for one test and restores the old value afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

void ExpectContains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << text << "' lacks '" << part << "'";
}

TEST(NvmlTest, LoadsTheStandInAndSamplesBothDevices) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", TSERVE_NVML_STANDIN);
  ScopedEnv fail("NVML_STANDIN_FAIL_INIT", nullptr);
  std::string why = "stale";
  std::unique_ptr<Nvml> nvml = Nvml::Load(&why);
  ASSERT_NE(nvml, nullptr) << why;
  EXPECT_EQ(why, "");
  EXPECT_EQ(nvml->library_path(), TSERVE_NVML_STANDIN);
  EXPECT_EQ(nvml->DeviceCount(), 2);

  StatusOr<std::vector<GpuSample>> gpus = nvml->Sample();
  ASSERT_TRUE(gpus.ok()) << gpus.status().message();
  ASSERT_EQ(gpus->size(), 2u);

  const GpuSample& g0 = (*gpus)[0];
  EXPECT_EQ(g0.index, 0);
  EXPECT_EQ(g0.utilization_percent, 42.0);
  EXPECT_EQ(g0.memory_utilization_percent, 13.0);
  EXPECT_EQ(g0.memory_used_mb, 1024.0);
  EXPECT_EQ(g0.memory_total_mb, 4096.0);
  EXPECT_DOUBLE_EQ(g0.memory_used_percent, 25.0);  // 1024 / 4096

  const GpuSample& g1 = (*gpus)[1];
  EXPECT_EQ(g1.index, 1);
  EXPECT_EQ(g1.utilization_percent, 7.0);
  EXPECT_EQ(g1.memory_utilization_percent, 2.0);
  EXPECT_EQ(g1.memory_used_mb, 512.0);
  EXPECT_EQ(g1.memory_total_mb, 16384.0);
  EXPECT_DOUBLE_EQ(g1.memory_used_percent, 3.125);  // 512 / 16384
}

TEST(NvmlTest, LoadsAgainAfterUnload) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", TSERVE_NVML_STANDIN);
  for (int i = 0; i < 2; ++i) {
    std::unique_ptr<Nvml> nvml = Nvml::Load(nullptr);
    ASSERT_NE(nvml, nullptr);
    EXPECT_TRUE(nvml->Sample().ok());
  }
}

TEST(NvmlTest, MissingLibraryGivesAReasonNamingThePath) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1");
  std::string why;
  EXPECT_EQ(Nvml::Load(&why), nullptr);
  ExpectContains(why, "cannot load NVML library /nonexistent/libnvidia-ml.so.1");
  EXPECT_EQ(Nvml::Load(nullptr), nullptr);  // no reason asked for: still fine
}

TEST(NvmlTest, LibraryWithoutNvmlSymbolsGivesAReason) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", "libm.so.6");
  std::string why;
  EXPECT_EQ(Nvml::Load(&why), nullptr);
  EXPECT_EQ(why, "NVML library libm.so.6 has no symbol nvmlInit_v2");
}

TEST(NvmlTest, FailedInitGivesAReason) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", TSERVE_NVML_STANDIN);
  ScopedEnv fail("NVML_STANDIN_FAIL_INIT", "1");
  std::string why;
  EXPECT_EQ(Nvml::Load(&why), nullptr);
  EXPECT_EQ(why, std::string("NVML library ") + TSERVE_NVML_STANDIN +
                     ": nvmlInit_v2 failed: Unknown Error (999)");
}

TEST(NvmlTest, DefaultLibraryName) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", nullptr);
  std::string why;
  std::unique_ptr<Nvml> nvml = Nvml::Load(&why);
  if (nvml) {
    EXPECT_EQ(nvml->library_path(), "libnvidia-ml.so.1");  // a host with a GPU driver
  } else {
    ExpectContains(why, "libnvidia-ml.so.1");
  }
}

// ---- the sampler's thread, with GPU figures from the stand-in ----

// Collects what the sampler publishes.
class Collector {
 public:
  SystemSampler::PublishFn Fn() {
    return [this](const SystemSample& s) {
      std::lock_guard<std::mutex> lock(mu_);
      samples_.push_back(s);
      cv_.notify_all();
    };
  }
  // Waits until at least n samples arrived; false after 10 s.
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return samples_.size() >= n; });
  }
  std::vector<SystemSample> samples() {
    std::lock_guard<std::mutex> lock(mu_);
    return samples_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SystemSample> samples_;
};

SystemSampler::Options FixtureOptions(std::chrono::milliseconds interval) {
  SystemSampler::Options options;
  options.interval = interval;
  options.proc_root = std::string(TSERVE_FIXTURES_DIR) + "/proc";
  options.disk_path = TSERVE_FIXTURES_DIR;
  return options;
}

TEST(SystemSamplerTest, StartPublishesAtOnceWithGpuFigures) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", TSERVE_NVML_STANDIN);
  ScopedEnv fail("NVML_STANDIN_FAIL_INIT", nullptr);
  Collector collector;
  SystemSampler sampler(FixtureOptions(std::chrono::hours(1)), collector.Fn());
  sampler.Start();
  std::vector<SystemSample> samples = collector.samples();
  ASSERT_EQ(samples.size(), 1u);  // published before Start returned
  EXPECT_EQ(sampler.gpu_unavailable_reason(), "");
  const SystemSample& s = samples[0];
  // Published without waiting for a CPU window: the first figure is the average since boot.
  ASSERT_TRUE(s.cpu_percent.has_value());
  EXPECT_DOUBLE_EQ(*s.cpu_percent, 22.4);
  ASSERT_TRUE(s.memory.has_value());
  EXPECT_DOUBLE_EQ(s.memory->utilization_percent, 39.4);
  EXPECT_TRUE(s.disk.has_value());
  ASSERT_EQ(s.gpus.size(), 2u);
  EXPECT_EQ(s.gpus[0].utilization_percent, 42.0);
  EXPECT_EQ(s.gpus[1].memory_used_mb, 512.0);
  EXPECT_TRUE(s.errors.empty());

  // Stop wakes the thread at once rather than after the hour.
  auto before = std::chrono::steady_clock::now();
  sampler.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(5));
  sampler.Stop();  // idempotent
  EXPECT_EQ(collector.samples().size(), 1u);
}

TEST(SystemSamplerTest, PublishesEveryInterval) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", TSERVE_NVML_STANDIN);
  Collector collector;
  {
    SystemSampler sampler(FixtureOptions(std::chrono::milliseconds(20)), collector.Fn());
    sampler.Start();
    EXPECT_TRUE(collector.WaitFor(4));
  }  // the destructor stops the thread
  size_t after_stop = collector.samples().size();
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_EQ(collector.samples().size(), after_stop);
  for (const SystemSample& s : collector.samples()) EXPECT_EQ(s.gpus.size(), 2u);
}

TEST(SystemSamplerTest, GpuUnavailableReasonWhenNvmlIsMissing) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1");
  Collector collector;
  SystemSampler sampler(FixtureOptions(std::chrono::hours(1)), collector.Fn());
  EXPECT_EQ(sampler.gpu_unavailable_reason(), "");
  sampler.Start();
  ExpectContains(sampler.gpu_unavailable_reason(), "/nonexistent/libnvidia-ml.so.1");
  ASSERT_EQ(collector.samples().size(), 1u);
  EXPECT_TRUE(collector.samples()[0].gpus.empty());
  EXPECT_TRUE(collector.samples()[0].errors.empty());  // no GPU is not an error
}

TEST(SystemSamplerTest, GpuSamplingCanBeDisabled) {
  ScopedEnv library("TSERVE_NVML_LIBRARY", TSERVE_NVML_STANDIN);
  Collector collector;
  SystemSampler::Options options = FixtureOptions(std::chrono::hours(1));
  options.enable_gpu = false;
  SystemSampler sampler(options, collector.Fn());
  sampler.Start();
  EXPECT_EQ(sampler.gpu_unavailable_reason(), "GPU sampling disabled");
  ASSERT_EQ(collector.samples().size(), 1u);
  EXPECT_TRUE(collector.samples()[0].gpus.empty());
}

TEST(SystemSamplerTest, StopBeforeStartIsHarmless) {
  SystemSampler sampler(FixtureOptions(std::chrono::hours(1)), [](const SystemSample&) {});
  sampler.Stop();
}

}  // namespace
}  // namespace tserve::sysmetrics
