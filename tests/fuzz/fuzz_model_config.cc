// model-config.yaml (TorchServe's keys): parse and check the documented ranges.
#include <string_view>

#include "fuzz_util.h"
#include "serving/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = tserve::serving::ParseModelConfig(text, "model-config.yaml");
  if (!c.ok()) {
    TSERVE_FUZZ_CHECK(!c.status().message().empty());
    return 0;
  }
  const auto& v = c.value();
  if (v.min_workers) TSERVE_FUZZ_CHECK(*v.min_workers >= 0);
  if (v.max_workers) TSERVE_FUZZ_CHECK(*v.max_workers >= 0);
  if (v.min_workers && v.max_workers) TSERVE_FUZZ_CHECK(*v.max_workers >= *v.min_workers);
  if (v.batch_size) TSERVE_FUZZ_CHECK(*v.batch_size >= 1);
  if (v.max_batch_delay_ms) TSERVE_FUZZ_CHECK(*v.max_batch_delay_ms >= 0);
  if (v.response_timeout_s) TSERVE_FUZZ_CHECK(*v.response_timeout_s >= 1);
  return 0;
}
