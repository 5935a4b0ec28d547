#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tserve::serving {

// A model's model-config.yaml (TorchServe's keys). Unset optionals mean "use the server's
// default": batchSize 1, maxBatchDelay 100 ms, responseTimeout default_response_timeout,
// min/maxWorkers default_workers_per_model. The defaults are applied by the model manager,
// not here. Every top-level scalar (known keys included) is also kept, as text, in
// `scalars`, so handlers can read keys of their own. A plain value type.
struct ModelConfig {
  std::optional<int> min_workers;         // minWorkers, ≥ 0
  std::optional<int> max_workers;         // maxWorkers, ≥ 0 and ≥ minWorkers
  std::optional<int> batch_size;          // batchSize, ≥ 1
  std::optional<int> max_batch_delay_ms;  // maxBatchDelay (milliseconds), ≥ 0
  std::optional<int> response_timeout_s;  // responseTimeout (seconds), ≥ 1
  std::optional<int> startup_timeout_s;   // startupTimeout (seconds), ≥ 1; default 120
  std::string device_type;                // deviceType: "", "cpu" or "gpu"
  std::map<std::string, std::string> scalars;

  bool operator==(const ModelConfig&) const = default;
};

// Parses model-config.yaml text; an empty document is an empty config. `source` names the
// file in errors, which read "<source>:<line>: <key> <problem>", e.g.
// `model-config.yaml:3: batchSize must be an integer ≥ 1, got "x"`. Errors: invalid YAML,
// a document that is not a map, a duplicate key, a known key with a bad value,
// maxWorkers < minWorkers, a deviceType other than cpu or gpu (TorchServe's neuron is
// named as unsupported). Unknown keys and nested sections (TorchServe's `handler:`,
// `pt2:`, ...) are accepted; nested sections are not copied into `scalars`.
StatusOr<ModelConfig> ParseModelConfig(std::string_view yaml, std::string_view source);

}  // namespace tserve::serving
