#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tserve {

// A listener address from config.properties, e.g. "http://127.0.0.1:8080". Plain data.
struct ListenAddress {
  // "http" or "https", lower case (LoadServerConfig rejects https until it is supported).
  std::string scheme = "http";
  // IPv4/IPv6 literal (IPv6 without its brackets) or host name; "0.0.0.0" binds all.
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string original;     // the text as configured, for log lines
  bool IsLoopback() const;  // 127.0.0.0/8, ::1 or "localhost"
};

enum class MetricsMode { kPrometheus, kLog, kLegacy };

// One model version's entry of the models= key (TorchServe's per-model, per-version JSON,
// docs/configuration.md). Unset fields leave the archive's model-config.yaml, then the
// server's defaults, as in TorchServe. Plain data.
struct ModelVersionSettings {
  std::optional<int> min_workers;         // minWorkers, ≥ 0
  std::optional<int> max_workers;         // maxWorkers, ≥ 0 and ≥ minWorkers
  std::optional<int> batch_size;          // batchSize, ≥ 1
  std::optional<int> max_batch_delay_ms;  // maxBatchDelay, ≥ 0
  std::optional<int> response_timeout_s;  // responseTimeout, ≥ 1
  std::optional<int> startup_timeout_s;   // startupTimeout, ≥ 1
  bool default_version = false;           // defaultVersion: this version becomes the default
  std::string mar_name;                   // marName (TorchServe restores snapshots with it)

  bool operator==(const ModelVersionSettings&) const = default;
};
// models[model name][version].
using ModelSettings = std::map<std::string, std::map<std::string, ModelVersionSettings>>;

// Parses the value of models=: a JSON object of model names, each an object of versions,
// each an object of TorchServe's fields (numbers may be JSON integers or strings holding
// one, as TorchServe's Gson reads them). An empty value is no settings. Errors are one
// InvalidArgument line naming the model, version and field, e.g.
//   model "noop" version "1.0": minWorkers must be an integer from 0 to 1000000, not "-1"
// Fields TorchServe knows that tserve does not use, and unknown fields, are `warnings`.
// Pure.
StatusOr<ModelSettings> ParseModelSettings(std::string_view json,
                                           std::vector<std::string>* warnings);

// Every setting of SPEC.md §1 with its default, in one place. Plain data: build it with
// LoadServerConfig; copy freely. Durations are in seconds unless the name says otherwise.
struct ServerConfig {
  ListenAddress inference_address{"http", "127.0.0.1", 8080, "http://127.0.0.1:8080"};
  ListenAddress management_address{"http", "127.0.0.1", 8081, "http://127.0.0.1:8081"};
  ListenAddress metrics_address{"http", "127.0.0.1", 8082, "http://127.0.0.1:8082"};
  bool enable_metrics_api = true;
  MetricsMode metrics_mode = MetricsMode::kPrometheus;
  std::string metrics_config;  // empty: the built-in default metrics.yaml
  int metric_time_interval = 15;
  bool disable_system_metrics = false;
  std::string model_store;               // empty: none
  std::vector<std::string> load_models;  // as given: "all", "a.mar", "name=a.mar"
  int default_workers_per_model = 0;     // 0: number of CPU cores
  // tserve: worker ceilings; 0: max(16, 4 × cores) per model and 4 × that in all.
  int max_workers_per_model = 0;
  int max_workers_total = 0;
  int job_queue_size = 100;
  int64_t max_request_size = 6553500;
  int64_t max_response_size = 6553500;
  int default_response_timeout = 120;
  bool enable_model_api = false;
  std::vector<std::string> allowed_urls{"file://.*|http(s)?://.*"};
  bool disable_token_authorization = false;
  bool enable_token_authorization = false;
  bool enable_envvars_config = false;
  // models=: per model and version, for the models load_models / --models load (it loads
  // nothing by itself, as in TorchServe).
  ModelSettings models;
  // tserve's own keys (documented in docs/configuration.md)
  // HTTP threads; 0: number of CPU cores (the name is TorchServe's).
  int number_of_netty_threads = 0;
  int http_idle_timeout = 60;  // close a keep-alive connection idle this long
  int http_read_timeout = 30;  // a request's head and body must arrive within this
  int max_header_size = 8192;  // bytes of request line + headers; over -> 431
  // Connections the inference listener holds open at once; over it, 503 and close.
  // 0: derived from RLIMIT_NOFILE (http::DefaultConnectionCaps; docs/security.md).
  int64_t max_connections = 0;
  std::string metrics_token;  // non-empty: /metrics needs "Authorization: Bearer <token>"
  // LoadServerConfig resolves both, so they are never empty in a loaded config:
  std::string log_location;                // key, else $LOG_LOCATION, else "logs"
  std::string metrics_location;            // key, else $METRICS_LOCATION, else log_location
  double token_expiration_min = 60;        // inference/management keys expire after this
  std::string key_file = "key_file.json";  // where the token keys are written (mode 0600)
  // (tserve) Start from the keys already in key_file (a regular file owned by this user,
  // mode 0600) instead of new ones, so several replicas can share one set of keys.
  bool reuse_key_file = false;
  // The largest model archive POST /models downloads over http(s), in bytes (4 GiB).
  int64_t max_model_download_size = int64_t{4} << 30;
  // Registration downloads may connect to loopback (127/8, ::1) / private addresses (10/8,
  // 172.16/12, 192.168/16, 100.64/10, fc00::/7); link-local and tserve's own listeners never.
  bool allow_loopback_model_urls = false;
  bool allow_private_model_urls = false;
  // TorchScript operator libraries loaded before any model (backend/torch_extensions.h):
  // "auto" = Debian's torchvision operators when installed, "none", or .so paths.
  std::string torch_extension_libraries = "auto";
};

// Everything LoadServerConfig reads; main fills it (this module does no I/O). Plain data.
struct ConfigInputs {
  std::string properties_text;  // contents of --ts-config (empty when none)
  std::string properties_path;  // for error messages
  // Keys set from the command line, e.g. model_store, load_models (comma-joined).
  std::map<std::string, std::string> cli;
  // The whole process environment: TS_* (when enabled), $$VAR$$, LOG_LOCATION, METRICS_LOCATION.
  std::map<std::string, std::string> env;
};

// What LoadServerConfig returns: the config and the lines to log about it. Plain data.
struct LoadedConfig {
  ServerConfig config;
  std::vector<std::string> warnings;  // e.g. unknown keys, one line each: log at warn level
  std::vector<std::string> notes;     // e.g. TorchServe keys tserve ignores: log at debug level
};

// Builds the config. Precedence: TS_<KEY> env (only when enable_envvars_config=true, which
// may itself come from the file or env TS_ENABLE_ENVVARS_CONFIG; the env one wins) > CLI >
// file > defaults. $$VAR$$ is expanded in file values only. Values are trimmed.
// TS_ALLOWED_URLS needs use_env_allowed_urls=true in the file or CLI too (TorchServe's guard).
// Pure: reads only `inputs`.
// An invalid value is an InvalidArgument Status whose message is one line naming the key,
// the value, what is allowed and where the value came from, e.g.
//   invalid value "fast" for metrics_mode: expected one of prometheus, log, legacy
//   (config.properties line 7)
// The suffix is "(<base name of properties_path> line N)", "(environment TS_KEY)" or
// "(command line)". Unknown keys, keys set twice and ignored TS_* variables are warnings;
// TorchServe keys tserve does not use are notes.
StatusOr<LoadedConfig> LoadServerConfig(const ConfigInputs& inputs);

// Parses "http://host:port" / "https://[::1]:8443" / "127.0.0.1:8080" (scheme defaults to
// http and is case-insensitive, port 1..65535 required, no path). Error message:
//   invalid listen address "http://127.0.0.1": missing port; expected http://HOST:PORT, ...
StatusOr<ListenAddress> ParseListenAddress(const std::string& text);

const char* MetricsModeName(MetricsMode mode);

}  // namespace tserve
