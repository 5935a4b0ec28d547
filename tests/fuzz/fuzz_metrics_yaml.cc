// metrics.yaml (TorchServe's schema, tserve's buckets/help): parse, then add the families to
// a registry as the server does at startup.
#include <string_view>

#include "fuzz_util.h"
#include "metrics/metrics_yaml.h"
#include "metrics/registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto families = tserve::metrics::ParseMetricsYaml(text, "metrics.yaml");
  if (!families.ok()) {
    TSERVE_FUZZ_CHECK(!families.status().message().empty());
    return 0;
  }
  for (const auto& f : families.value()) {
    for (size_t i = 1; i < f.buckets.size(); ++i)
      TSERVE_FUZZ_CHECK(f.buckets[i - 1] < f.buckets[i]);
  }
  tserve::metrics::Registry registry;
  (void)tserve::metrics::AddFamilies(std::move(families).value(), &registry);
  (void)registry.Collect();
  return 0;
}
