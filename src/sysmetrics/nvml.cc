#include "sysmetrics/nvml.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>

namespace tserve::sysmetrics {
namespace {

// The few NVML declarations we need, restated from nvml.h so the build needs no CUDA
// headers. These are the stable, versioned ABI entry points.
using NvmlReturn = int;  // nvmlReturn_t, an enum
constexpr NvmlReturn kNvmlSuccess = 0;
struct NvmlDeviceOpaque;
using NvmlDevice = NvmlDeviceOpaque*;  // nvmlDevice_t
struct NvmlUtilization {               // nvmlUtilization_t
  unsigned int gpu;
  unsigned int memory;
};
struct NvmlMemory {  // nvmlMemory_t (version 1)
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

constexpr const char* kDefaultLibrary = "libnvidia-ml.so.1";
constexpr unsigned long long kMiB = 1024ull * 1024ull;

}  // namespace

struct Nvml::Api {
  NvmlReturn (*init)();
  NvmlReturn (*shutdown)();
  NvmlReturn (*get_count)(unsigned int*);
  NvmlReturn (*get_handle)(unsigned int, NvmlDevice*);
  NvmlReturn (*get_utilization)(NvmlDevice, NvmlUtilization*);
  NvmlReturn (*get_memory)(NvmlDevice, NvmlMemory*);
  const char* (*error_string)(NvmlReturn);

  std::string Error(NvmlReturn rc) const {
    const char* text = error_string(rc);
    return std::string(text ? text : "unknown error") + " (" + std::to_string(rc) + ")";
  }
};

std::unique_ptr<Nvml> Nvml::Load(std::string* why_not) {
  std::string scratch;
  std::string& why = why_not ? *why_not : scratch;
  const char* env = std::getenv("TSERVE_NVML_LIBRARY");
  std::string path = env && *env ? env : kDefaultLibrary;

  dlerror();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    why = "cannot load NVML library " + path + ": " + (err ? err : "dlopen failed");
    return nullptr;
  }

  auto api = std::make_unique<Api>();
  std::string missing;
  auto bind = [&](auto& fn, const char* name) {
    void* sym = dlsym(handle, name);
    if (sym == nullptr && missing.empty()) missing = name;
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(sym);
  };
  bind(api->init, "nvmlInit_v2");
  bind(api->shutdown, "nvmlShutdown");
  bind(api->get_count, "nvmlDeviceGetCount_v2");
  bind(api->get_handle, "nvmlDeviceGetHandleByIndex_v2");
  bind(api->get_utilization, "nvmlDeviceGetUtilizationRates");
  bind(api->get_memory, "nvmlDeviceGetMemoryInfo");
  bind(api->error_string, "nvmlErrorString");
  if (!missing.empty()) {
    why = "NVML library " + path + " has no symbol " + missing;
    dlclose(handle);
    return nullptr;
  }

  NvmlReturn rc = api->init();
  if (rc != kNvmlSuccess) {
    why = "NVML library " + path + ": nvmlInit_v2 failed: " + api->Error(rc);
    dlclose(handle);
    return nullptr;
  }
  why.clear();
  return std::unique_ptr<Nvml>(new Nvml(std::move(path), handle, std::move(api)));
}

Nvml::Nvml(std::string path, void* handle, std::unique_ptr<Api> api)
    : path_(std::move(path)), handle_(handle), api_(std::move(api)) {}

Nvml::~Nvml() {
  api_->shutdown();
  dlclose(handle_);
}

int Nvml::DeviceCount() {
  unsigned int count = 0;
  if (api_->get_count(&count) != kNvmlSuccess) return 0;
  return static_cast<int>(count);
}

StatusOr<std::vector<GpuSample>> Nvml::Sample() {
  unsigned int count = 0;
  NvmlReturn rc = api_->get_count(&count);
  if (rc != kNvmlSuccess) {
    return Status::Unavailable("nvmlDeviceGetCount_v2 failed: " + api_->Error(rc));
  }
  std::vector<GpuSample> out;
  out.reserve(count);
  for (unsigned int i = 0; i < count; ++i) {
    std::string device = "GPU " + std::to_string(i) + ": ";
    NvmlDevice dev = nullptr;
    rc = api_->get_handle(i, &dev);
    if (rc != kNvmlSuccess) {
      return Status::Unavailable(device +
                                 "nvmlDeviceGetHandleByIndex_v2 failed: " + api_->Error(rc));
    }
    NvmlMemory mem{};
    rc = api_->get_memory(dev, &mem);
    if (rc != kNvmlSuccess) {
      return Status::Unavailable(device + "nvmlDeviceGetMemoryInfo failed: " + api_->Error(rc));
    }
    GpuSample s;
    s.index = static_cast<int>(i);
    // Utilization is unsupported on MIG-enabled GPUs; TorchServe's collector dies there
    // (its issue #3090). Keep the memory figures and leave these empty instead.
    NvmlUtilization util{};
    if (api_->get_utilization(dev, &util) == kNvmlSuccess) {
      s.utilization_percent = util.gpu;
      s.memory_utilization_percent = util.memory;
    }
    unsigned long long used = mem.total > mem.free ? mem.total - mem.free : 0;
    // Whole MiB, floored, as TorchServe's `(total - free) // 1024**2`.
    const unsigned long long used_mib = used / kMiB;
    const unsigned long long total_mib = mem.total / kMiB;
    s.memory_used_mb = static_cast<double>(used_mib);
    s.memory_total_mb = static_cast<double>(total_mib);
    if (mem.total > 0) {
      s.memory_used_percent = static_cast<double>(used) / static_cast<double>(mem.total) * 100;
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace tserve::sysmetrics
