#include "config/server_config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <re2/re2.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/json_limits.h"
#include "common/strings.h"
#include "config/properties.h"

namespace tserve {

namespace {

constexpr std::string_view kDefaultConfigName = "config.properties";

// TorchServe 0.12 keys (ConfigManager.java and docs/configuration.md) that tserve accepts
// without a warning and does not use: TLS material, gRPC, CORS, Python-worker and JVM
// tuning, snapshot bookkeeping. A TorchServe config.properties therefore loads as is.
constexpr std::string_view kIgnoredTorchServeKeys[] = {
    "async_logging",
    "blacklist_env_vars",
    "certificate_file",
    "cors_allowed_headers",
    "cors_allowed_methods",
    "cors_allowed_origin",
    "cpp_log_config",
    "cpu_launcher_args",
    "cpu_launcher_enable",
    "debug",
    "decode_input_request",
    "default_service_handler",
    "default_startup_timeout",
    "enable_grpc_ssl",
    "grpc_inference_address",
    "grpc_inference_max_connection_age_grace_ms",
    "grpc_inference_max_connection_age_ms",
    "grpc_inference_port",
    "grpc_management_address",
    "grpc_management_max_connection_age_grace_ms",
    "grpc_management_max_connection_age_ms",
    "grpc_management_port",
    "initial_distribution_port",
    "initial_worker_port",
    "install_py_dep_per_model",
    "io_ratio",
    "ipex_enable",
    "ipex_gpu_enable",
    "keystore",
    "keystore_pass",
    "keystore_type",
    "limit_max_image_pixels",
    "metrics_format",
    "model_metrics_auto_detect",
    "model_server_home",
    "model_snapshot",
    "netty_client_threads",
    "NUM_WORKERS",
    "number_of_gpu",
    "prefer_direct_buffer",
    "private_key_file",
    "python",
    "service_envelope",
    "snapshot_store",
    "system_metrics_cmd",
    "ts_header_key_sequence_end",
    "ts_header_key_sequence_id",
    "ts_header_key_sequence_start",
    "ts_open_inference_protocol",
    "tsConfigFile",
    "unregister_model_timeout",
    "use_native_io",
    "version",
    "vmargs",
    "workflow_store",
};

// Keys that steer loading itself rather than filling a ServerConfig field.
constexpr std::string_view kEnableEnvvarsConfig = "enable_envvars_config";
// TorchServe's guard: TS_ALLOWED_URLS from the environment is honoured only when the file
// or command line sets use_env_allowed_urls=true, so the environment alone cannot widen
// where models are downloaded from.
constexpr std::string_view kUseEnvAllowedUrls = "use_env_allowed_urls";
constexpr std::string_view kAllowedUrls = "allowed_urls";

constexpr int64_t kIntMax = 2147483647;  // Java's Integer.MAX_VALUE, TorchServe's limit

// models=: TorchServe's per-model, per-version JSON (issue 8 #4); parsed on its own, since
// its errors name a model, a version and a field rather than quoting the whole value.
constexpr std::string_view kModels = "models";
// The most workers one models= entry may ask for (max_workers_per_model clamps further).
constexpr int64_t kMaxModelWorkers = 1000000;
// Fields of TorchServe's model state (Model.java, snapshots) that tserve does not use.
constexpr std::string_view kUnusedModelFields[] = {
    "runtimeType",  "parallelLevel", "parallelType",       "deviceType",         "deviceIds",
    "jobQueueSize", "useJobTicket",  "continuousBatching", "asyncCommunication",
};

// Where a value came from, for the " (...)" suffix of messages.
struct Source {
  enum Kind { kFile, kCli, kEnv } kind = kFile;
  std::string file;      // base name, for kFile
  int line = 0;          // for kFile
  std::string env_name;  // for kEnv

  std::string Suffix() const {
    switch (kind) {
      case kFile:
        return " (" + file + " line " + std::to_string(line) + ")";
      case kCli:
        return " (command line)";
      case kEnv:
        return " (environment " + env_name + ")";
    }
    return "";
  }
};

// Values never echoed in messages (they end up in logs).
bool IsSecretKey(std::string_view key) { return key == "metrics_token"; }

std::string InvalidValueMessage(std::string_view key, std::string_view value,
                                std::string_view reason, const Source& source) {
  std::string shown = IsSecretKey(key) ? std::string("(hidden)") : Quoted(value);
  std::string m = "invalid value " + shown + " for " + std::string(key) + ": ";
  m.append(reason);
  m += source.Suffix();
  return m;
}

// Parses one value into the config; returns the reason it is invalid, or nullopt.
using Apply = std::function<std::optional<std::string>(std::string_view, ServerConfig&)>;

struct KeySpec {
  std::string_view name;
  Apply apply;
};

template <typename T>
Apply IntegerKey(T ServerConfig::*field, int64_t min, int64_t max) {
  return [field, min, max](std::string_view v, ServerConfig& c) -> std::optional<std::string> {
    std::optional<int64_t> n = ParseInt64(v);
    if (!n || *n < min || *n > max) {
      return "expected an integer from " + std::to_string(min) + " to " + std::to_string(max);
    }
    c.*field = static_cast<T>(*n);
    return std::nullopt;
  };
}

Apply DoubleKey(double ServerConfig::*field, double min, double max) {
  return [field, min, max](std::string_view v, ServerConfig& c) -> std::optional<std::string> {
    std::optional<double> d = ParseDouble(v);
    if (!d || !(*d >= min && *d <= max)) {
      return "expected a number from " + std::to_string(min) + " to " + std::to_string(max);
    }
    c.*field = *d;
    return std::nullopt;
  };
}

Apply BoolKey(bool ServerConfig::*field) {
  return [field](std::string_view v, ServerConfig& c) -> std::optional<std::string> {
    std::optional<bool> b = ParseBool(v);
    if (!b) return "expected true or false";
    c.*field = *b;
    return std::nullopt;
  };
}

Apply StringKey(std::string ServerConfig::*field) {
  return [field](std::string_view v, ServerConfig& c) -> std::optional<std::string> {
    c.*field = std::string(v);
    return std::nullopt;
  };
}

std::optional<std::string> ListenAddressProblem(std::string_view text, ListenAddress& out);

Apply AddressKey(ListenAddress ServerConfig::*field) {
  return [field](std::string_view v, ServerConfig& c) -> std::optional<std::string> {
    ListenAddress a;
    if (std::optional<std::string> problem = ListenAddressProblem(v, a)) return problem;
    if (a.scheme == "https") return "https is not supported yet";
    c.*field = std::move(a);
    return std::nullopt;
  };
}

std::optional<std::string> ApplyMetricsMode(std::string_view v, ServerConfig& c) {
  if (EqualsIgnoreCase(v, "prometheus")) {
    c.metrics_mode = MetricsMode::kPrometheus;
  } else if (EqualsIgnoreCase(v, "log")) {
    c.metrics_mode = MetricsMode::kLog;
  } else if (EqualsIgnoreCase(v, "legacy")) {
    c.metrics_mode = MetricsMode::kLegacy;
  } else {
    return "expected one of prometheus, log, legacy";
  }
  return std::nullopt;
}

// Comma-separated, each item trimmed, empty items dropped (TorchServe keeps blanks, which
// then never match: trimming is what users mean).
std::vector<std::string> SplitList(std::string_view v) {
  std::vector<std::string> out;
  for (std::string_view item : SplitString(v, ',')) {
    item = TrimWhitespace(item);
    if (!item.empty()) out.emplace_back(item);
  }
  return out;
}

std::optional<std::string> ApplyAllowedUrls(std::string_view v, ServerConfig& c) {
  std::vector<std::string> patterns = SplitList(v);
  if (patterns.empty()) return "expected one or more comma-separated regular expressions";
  // The same engine and options as serving::UrlPolicy, which matches them (RE2: linear
  // time; no look-arounds or back-references).
  RE2::Options options;
  options.set_case_sensitive(false);
  options.set_log_errors(false);
  for (const std::string& p : patterns) {
    RE2 re(p, options);
    if (!re.ok()) return "regular expression " + Quoted(p) + " does not compile: " + re.error();
  }
  c.allowed_urls = std::move(patterns);
  return std::nullopt;
}

std::optional<std::string> ApplyLoadModels(std::string_view v, ServerConfig& c) {
  std::vector<std::string> entries = SplitList(v);
  for (const std::string& e : entries) {
    size_t eq = e.find('=');
    if (eq != std::string::npos && (TrimWhitespace(std::string_view(e).substr(0, eq)).empty() ||
                                    TrimWhitespace(std::string_view(e).substr(eq + 1)).empty())) {
      return "entry " + Quoted(e) + " needs a model name before '=' and a file after it";
    }
  }
  c.load_models = std::move(entries);
  return std::nullopt;
}

std::optional<std::string> ApplyMetricsToken(std::string_view v, ServerConfig& c) {
  for (char ch : v) {
    if (ch < 0x21 || ch > 0x7E) return "expected printable ASCII characters without spaces";
  }
  c.metrics_token = std::string(v);
  return std::nullopt;
}

// Every key that fills a ServerConfig field, with its parser. enable_envvars_config is
// handled before the others (it decides whether TS_* variables are read).
const std::vector<KeySpec>& KnownKeys() {
  using C = ServerConfig;
  static const auto* keys = new std::vector<KeySpec>{
      {"inference_address", AddressKey(&C::inference_address)},
      {"management_address", AddressKey(&C::management_address)},
      {"metrics_address", AddressKey(&C::metrics_address)},
      {"enable_metrics_api", BoolKey(&C::enable_metrics_api)},
      {"metrics_mode", ApplyMetricsMode},
      {"metrics_config", StringKey(&C::metrics_config)},
      {"metric_time_interval", IntegerKey(&C::metric_time_interval, 1, 86400)},
      {"disable_system_metrics", BoolKey(&C::disable_system_metrics)},
      {"model_store", StringKey(&C::model_store)},
      {"load_models", ApplyLoadModels},
      {"default_workers_per_model", IntegerKey(&C::default_workers_per_model, 0, 1024)},
      {"max_workers_per_model", IntegerKey(&C::max_workers_per_model, 0, 1000000)},
      {"max_workers_total", IntegerKey(&C::max_workers_total, 0, 1000000)},
      {"job_queue_size", IntegerKey(&C::job_queue_size, 1, 1000000)},
      {"max_request_size", IntegerKey(&C::max_request_size, 1, kIntMax)},
      {"max_response_size", IntegerKey(&C::max_response_size, 1, kIntMax)},
      {"default_response_timeout", IntegerKey(&C::default_response_timeout, 1, kIntMax)},
      {"enable_model_api", BoolKey(&C::enable_model_api)},
      {kAllowedUrls, ApplyAllowedUrls},
      {"disable_token_authorization", BoolKey(&C::disable_token_authorization)},
      {"enable_token_authorization", BoolKey(&C::enable_token_authorization)},
      {kEnableEnvvarsConfig, BoolKey(&C::enable_envvars_config)},
      {kModels, nullptr},  // LoadServerConfig parses it with ParseModelSettings
      {"number_of_netty_threads", IntegerKey(&C::number_of_netty_threads, 0, 1024)},
      {"http_idle_timeout", IntegerKey(&C::http_idle_timeout, 1, 86400)},
      {"http_read_timeout", IntegerKey(&C::http_read_timeout, 1, 86400)},
      {"max_header_size", IntegerKey(&C::max_header_size, 1, 1048576)},
      {"max_connections", IntegerKey(&C::max_connections, 0, 1048576)},
      {"metrics_token", ApplyMetricsToken},
      {"log_location", StringKey(&C::log_location)},
      {"metrics_location", StringKey(&C::metrics_location)},
      {"token_expiration_min", DoubleKey(&C::token_expiration_min, 1.0 / 60, 5256000)},
      {"key_file", StringKey(&C::key_file)},
      {"reuse_key_file", BoolKey(&C::reuse_key_file)},
      {"max_model_download_size",
       IntegerKey(&C::max_model_download_size, 1, std::numeric_limits<int64_t>::max())},
      {"allow_loopback_model_urls", BoolKey(&C::allow_loopback_model_urls)},
      {"allow_private_model_urls", BoolKey(&C::allow_private_model_urls)},
      {"torch_extension_libraries", StringKey(&C::torch_extension_libraries)},
  };
  return *keys;
}

bool IsKnownKey(std::string_view key) {
  for (const KeySpec& k : KnownKeys()) {
    if (k.name == key) return true;
  }
  return key == kUseEnvAllowedUrls;
}

bool IsIgnoredTorchServeKey(std::string_view key) {
  return std::find(std::begin(kIgnoredTorchServeKeys), std::end(kIgnoredTorchServeKeys), key) !=
         std::end(kIgnoredTorchServeKeys);
}

std::string EnvNameFor(std::string_view key) {
  std::string name = "TS_";
  for (char c : key) name.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  return name;
}

// "Metrics-Mode" -> "metrics_mode": for the did-you-mean hint of unknown keys.
std::string NormalizeKey(std::string_view key) {
  std::string out = ToLower(key);
  std::replace(out.begin(), out.end(), '-', '_');
  std::replace(out.begin(), out.end(), '.', '_');
  return out;
}

std::optional<std::string_view> SimilarKey(std::string_view key) {
  const std::string norm = NormalizeKey(key);
  for (const KeySpec& k : KnownKeys()) {
    if (NormalizeKey(k.name) == norm) return k.name;
  }
  if (NormalizeKey(kUseEnvAllowedUrls) == norm) return kUseEnvAllowedUrls;
  return std::nullopt;
}

bool IsHostNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

std::optional<std::string> ListenAddressProblem(std::string_view text, ListenAddress& out) {
  text = TrimWhitespace(text);
  constexpr std::string_view kExpected = "; expected http://HOST:PORT, e.g. http://127.0.0.1:8080";
  if (text.empty()) return "empty address" + std::string(kExpected);
  out.original = std::string(text);
  std::string_view rest = text;
  size_t scheme_end = text.find("://");
  if (scheme_end != std::string_view::npos) {
    std::string scheme = ToLower(text.substr(0, scheme_end));
    if (scheme != "http" && scheme != "https") {
      return "unsupported scheme " + Quoted(scheme) + " (expected http or https)";
    }
    out.scheme = scheme;
    rest = text.substr(scheme_end + 3);
  } else {
    if (text.size() >= 5 && EqualsIgnoreCase(text.substr(0, 5), "unix:")) {
      return "unix domain sockets are not supported";
    }
    out.scheme = "http";
  }
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    return "unexpected path " + Quoted(rest.substr(slash)) + std::string(kExpected);
  }
  if (rest.empty()) return "missing host" + std::string(kExpected);

  std::string_view host;
  std::string_view after;  // ":PORT" or empty
  if (rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return "missing ']' after the IPv6 address";
    host = rest.substr(1, close - 1);
    after = rest.substr(close + 1);
    in6_addr a6;
    if (std::string h(host); inet_pton(AF_INET6, h.c_str(), &a6) != 1) {
      return "invalid IPv6 address " + Quoted(host);
    }
  } else {
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos && rest.find(':', colon + 1) != std::string_view::npos) {
      return "an IPv6 address needs brackets, e.g. http://[::1]:8080";
    }
    host = rest.substr(0, colon);
    after = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
    if (host.empty()) return "missing host" + std::string(kExpected);
    bool dotted_digits = std::all_of(host.begin(), host.end(),
                                     [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
    if (dotted_digits) {
      in_addr a4;
      if (std::string h(host); inet_pton(AF_INET, h.c_str(), &a4) != 1) {
        return "invalid IPv4 address " + Quoted(host);
      }
    } else if (!std::all_of(host.begin(), host.end(), IsHostNameChar)) {
      return "invalid host name " + Quoted(host);
    }
  }
  if (after.empty()) return "missing port" + std::string(kExpected);
  if (after.front() != ':') return "unexpected text " + Quoted(after) + " after the host";
  std::string_view port_text = after.substr(1);
  bool digits =
      !port_text.empty() && port_text.size() <= 5 &&
      std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; });
  std::optional<int64_t> port = digits ? ParseInt64(port_text) : std::nullopt;
  if (!port || *port < 1 || *port > 65535) {
    return "invalid port " + Quoted(port_text) + " (expected 1 to 65535)";
  }
  out.host = std::string(host);
  out.port = static_cast<uint16_t>(*port);
  return std::nullopt;
}

// A value chosen for a key, before parsing.
struct Candidate {
  std::string value;
  Source source;
};

}  // namespace

bool ListenAddress::IsLoopback() const {
  std::string_view h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (EqualsIgnoreCase(h, "localhost")) return true;
  std::string hs(h);
  in_addr a4;
  if (inet_pton(AF_INET, hs.c_str(), &a4) == 1) {
    return (ntohl(a4.s_addr) >> 24) == 127;
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, hs.c_str(), &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;  // ::ffff:127.x.x.x
  }
  return false;
}

const char* MetricsModeName(MetricsMode mode) {
  switch (mode) {
    case MetricsMode::kPrometheus:
      return "prometheus";
    case MetricsMode::kLog:
      return "log";
    case MetricsMode::kLegacy:
      return "legacy";
  }
  return "prometheus";
}

namespace {

// An integer field of models=: a JSON integer, or a string holding one (Gson's getAsInt
// reads both). nullopt and *problem set when it is neither or out of [min, max].
std::optional<int> ModelInt(const nlohmann::json& v, int64_t min, int64_t max,
                            std::string* problem) {
  std::optional<int64_t> n;
  if (v.is_number_integer()) {
    n = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(kIntMax)
            ? std::optional<int64_t>(kIntMax + 1)
            : std::optional<int64_t>(v.get<int64_t>());
  } else if (v.is_string()) {
    n = ParseInt64(TrimWhitespace(v.get_ref<const std::string&>()));
  }
  if (!n || *n < min || *n > max) {
    *problem = "must be an integer from " + std::to_string(min) + " to " + std::to_string(max) +
               ", not " + (v.is_string() ? Quoted(v.get_ref<const std::string&>()) : v.dump());
    return std::nullopt;
  }
  return static_cast<int>(*n);
}

std::optional<bool> ModelBool(const nlohmann::json& v) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string()) return ParseBool(TrimWhitespace(v.get_ref<const std::string&>()));
  return std::nullopt;
}

}  // namespace

StatusOr<ModelSettings> ParseModelSettings(std::string_view json,
                                           std::vector<std::string>* warnings) {
  ModelSettings out;
  if (TrimWhitespace(json).empty()) return out;
  StatusOr<nlohmann::json> doc = ParseJsonLimited(json);
  if (!doc.ok()) return doc.status();
  constexpr std::string_view kShape =
      R"(expected a JSON object {"model": {"version": {"minWorkers": 1, ...}}})";
  if (!doc->is_object()) return Status::InvalidArgument(std::string(kShape));
  for (const auto& [name, versions] : doc->items()) {
    const std::string model = "model " + Quoted(name);
    if (name.empty()) return Status::InvalidArgument("a model name is empty");
    if (!versions.is_object()) {
      return Status::InvalidArgument(model + ": expected an object of versions, e.g. " +
                                     R"({"1.0": {"minWorkers": 1}})");
    }
    std::string default_version;
    for (const auto& [version, fields] : versions.items()) {
      const std::string where = model + " version " + Quoted(version);
      if (version.empty()) return Status::InvalidArgument(model + ": a version is empty");
      if (!fields.is_object()) {
        return Status::InvalidArgument(where + ": expected an object of settings, e.g. " +
                                       R"({"minWorkers": 1, "batchSize": 4})");
      }
      ModelVersionSettings s;
      for (const auto& [field, value] : fields.items()) {
        std::string problem;
        // Named copy of the binding: C++20 (and clang 14) cannot capture a structured binding.
        const auto& setting = value;
        auto integer = [&](std::optional<int>* target, int64_t min, int64_t max) {
          *target = ModelInt(setting, min, max, &problem);
        };
        if (field == "minWorkers") {
          integer(&s.min_workers, 0, kMaxModelWorkers);
        } else if (field == "maxWorkers") {
          integer(&s.max_workers, 0, kMaxModelWorkers);
        } else if (field == "batchSize") {
          integer(&s.batch_size, 1, kIntMax);
        } else if (field == "maxBatchDelay") {
          integer(&s.max_batch_delay_ms, 0, kIntMax);
        } else if (field == "responseTimeout") {
          integer(&s.response_timeout_s, 1, kIntMax);
        } else if (field == "startupTimeout") {
          integer(&s.startup_timeout_s, 1, kIntMax);
        } else if (field == "defaultVersion") {
          std::optional<bool> b = ModelBool(value);
          if (!b) problem = "must be true or false, not " + value.dump();
          s.default_version = b.value_or(false);
        } else if (field == "marName") {
          if (!value.is_string()) {
            problem = "must be a file name string, not " + value.dump();
          } else {
            s.mar_name = value.get<std::string>();
          }
        } else if (std::find(std::begin(kUnusedModelFields), std::end(kUnusedModelFields), field) !=
                   std::end(kUnusedModelFields)) {
          warnings->push_back(where + ": " + field + " is not used by tserve; ignored");
        } else {
          warnings->push_back(where + ": unknown field " + Quoted(field) + " ignored");
        }
        if (!problem.empty()) return Status::InvalidArgument(where + ": " + field + " " + problem);
      }
      if (s.min_workers && s.max_workers && *s.max_workers < *s.min_workers) {
        return Status::InvalidArgument(where + ": maxWorkers (" + std::to_string(*s.max_workers) +
                                       ") must be at least minWorkers (" +
                                       std::to_string(*s.min_workers) + ")");
      }
      if (s.default_version) {
        if (!default_version.empty()) {
          return Status::InvalidArgument(model + ": defaultVersion is true for versions " +
                                         Quoted(default_version) + " and " + Quoted(version) +
                                         "; at most one can be the default");
        }
        default_version = version;
      }
      out[name][version] = std::move(s);
    }
  }
  return out;
}

StatusOr<ListenAddress> ParseListenAddress(const std::string& text) {
  ListenAddress a;
  if (std::optional<std::string> problem = ListenAddressProblem(text, a)) {
    return Status::InvalidArgument("invalid listen address " + Quoted(TrimWhitespace(text)) + ": " +
                                   *problem);
  }
  return a;
}

namespace {

// LoadServerConfig's steps, in order; each reads what the earlier ones decided. One use.
class ConfigLoader {
 public:
  explicit ConfigLoader(const ConfigInputs& inputs)
      : inputs_(inputs),
        file_name_(inputs.properties_path.empty()
                       ? std::string(kDefaultConfigName)
                       : std::filesystem::path(inputs.properties_path).filename().string()) {}

  // 1. The file: the last occurrence of a key wins. Warns of repeated and unknown keys
  // (file and command line).
  Status ParseFile();
  // 2. Whether TS_* variables count (TS_ENABLE_ENVVARS_CONFIG when set, else the CLI/file),
  // and whether TS_ALLOWED_URLS may (use_env_allowed_urls, CLI/file only).
  Status ReadControlKeys();
  // 3. Every other key: env (when enabled) > CLI > file > default.
  Status ApplyKeys();
  // 4. Locations: the key, else TorchServe's environment variables, else "logs".
  void ApplyLocations();

  LoadedConfig Take() && { return std::move(result_); }

 private:
  Source FileSource(int line) const {
    Source s;
    s.kind = Source::kFile;
    s.file = file_name_;
    s.line = line;
    return s;
  }
  // The value from the command line, else from the file ($$VAR$$ expanded), else none.
  StatusOr<std::optional<Candidate>> CliOrFile(std::string_view key) const;
  // TS_<KEY> from the environment (whether or not enabled), else none.
  std::optional<Candidate> EnvCandidate(std::string_view key) const;
  // The value a key gets (see ApplyKeys), with a warning for each TS_* variable ignored.
  StatusOr<std::optional<Candidate>> Choose(const KeySpec& spec);
  // The `models` key: JSON parsed here, with its notes as warnings.
  Status ApplyModels(std::string_view value, const Source& source);

  const ConfigInputs& inputs_;
  const std::string file_name_;
  std::vector<Property> props_;
  std::map<std::string, const Property*> file_values_;  // into props_: the last of each key
  bool use_env_allowed_urls_ = false;
  LoadedConfig result_;
};

// Parses a boolean control key; false when unset.
StatusOr<bool> ControlBool(std::string_view key, const std::optional<Candidate>& c) {
  if (!c) return false;
  std::optional<bool> b = ParseBool(c->value);
  if (!b) {
    return Status::InvalidArgument(
        InvalidValueMessage(key, TrimWhitespace(c->value), "expected true or false", c->source));
  }
  return *b;
}

Status ConfigLoader::ParseFile() {
  if (!inputs_.properties_text.empty()) {
    StatusOr<std::vector<Property>> parsed = ParseProperties(inputs_.properties_text);
    if (!parsed.ok()) {
      return Status::InvalidArgument("cannot parse " + file_name_ + ": " +
                                     parsed.status().message());
    }
    props_ = std::move(parsed).value();
  }
  for (const Property& p : props_) {
    auto [it, inserted] = file_values_.try_emplace(p.key, &p);
    if (!inserted) {
      result_.warnings.push_back("configuration key " + Quoted(p.key) + " is set more than once (" +
                                 file_name_ + " lines " + std::to_string(it->second->line) +
                                 " and " + std::to_string(p.line) + "); the last value is used");
      it->second = &p;
    }
  }
  for (const Property& p : props_) {
    if (file_values_[p.key] != &p) continue;  // report each key once, at its last line
    if (IsKnownKey(p.key)) continue;
    const std::string where = FileSource(p.line).Suffix();
    if (IsIgnoredTorchServeKey(p.key)) {
      result_.notes.push_back("TorchServe configuration key " + Quoted(p.key) +
                              " is not used by tserve; ignored" + where);
      continue;
    }
    std::string w = "unknown configuration key " + Quoted(p.key) + " ignored" + where;
    if (std::optional<std::string_view> similar = SimilarKey(p.key)) {
      w += "; did you mean " + Quoted(*similar) + "?";
    }
    result_.warnings.push_back(std::move(w));
  }
  for (const auto& [key, value] : inputs_.cli) {
    if (!IsKnownKey(key)) {
      result_.warnings.push_back("unknown configuration key " + Quoted(key) +
                                 " ignored (command line)");
    }
  }
  return Status::Ok();
}

StatusOr<std::optional<Candidate>> ConfigLoader::CliOrFile(std::string_view key) const {
  if (auto it = inputs_.cli.find(std::string(key)); it != inputs_.cli.end()) {
    Source s;
    s.kind = Source::kCli;
    return std::optional<Candidate>(Candidate{it->second, s});
  }
  auto it = file_values_.find(std::string(key));
  if (it == file_values_.end()) return std::optional<Candidate>();
  const Property& p = *it->second;
  StatusOr<std::string> expanded = ExpandEnvReferences(p.value, inputs_.env);
  if (!expanded.ok()) {
    return Status::InvalidArgument(InvalidValueMessage(
        key, TrimWhitespace(p.value), expanded.status().message(), FileSource(p.line)));
  }
  return std::optional<Candidate>(Candidate{std::move(expanded).value(), FileSource(p.line)});
}

std::optional<Candidate> ConfigLoader::EnvCandidate(std::string_view key) const {
  std::string name = EnvNameFor(key);
  auto it = inputs_.env.find(name);
  if (it == inputs_.env.end()) return std::nullopt;
  Source s;
  s.kind = Source::kEnv;
  s.env_name = std::move(name);
  return Candidate{it->second, s};
}

Status ConfigLoader::ReadControlKeys() {
  std::optional<Candidate> enable_candidate = EnvCandidate(kEnableEnvvarsConfig);
  if (!enable_candidate) {
    StatusOr<std::optional<Candidate>> c = CliOrFile(kEnableEnvvarsConfig);
    if (!c.ok()) return c.status();
    enable_candidate = std::move(c).value();
  }
  StatusOr<bool> envvars_enabled = ControlBool(kEnableEnvvarsConfig, enable_candidate);
  if (!envvars_enabled.ok()) return envvars_enabled.status();
  result_.config.enable_envvars_config = *envvars_enabled;

  StatusOr<std::optional<Candidate>> use_env_urls_candidate = CliOrFile(kUseEnvAllowedUrls);
  if (!use_env_urls_candidate.ok()) return use_env_urls_candidate.status();
  StatusOr<bool> use_env_allowed_urls = ControlBool(kUseEnvAllowedUrls, *use_env_urls_candidate);
  if (!use_env_allowed_urls.ok()) return use_env_allowed_urls.status();
  use_env_allowed_urls_ = *use_env_allowed_urls;
  return Status::Ok();
}

StatusOr<std::optional<Candidate>> ConfigLoader::Choose(const KeySpec& spec) {
  std::optional<Candidate> chosen = EnvCandidate(spec.name);
  if (chosen && !result_.config.enable_envvars_config) {
    result_.warnings.push_back("environment " + chosen->source.env_name +
                               " ignored: set enable_envvars_config=true to use TS_* variables");
    chosen.reset();
  } else if (chosen && spec.name == kAllowedUrls && !use_env_allowed_urls_) {
    result_.warnings.push_back("environment " + chosen->source.env_name +
                               " ignored: set use_env_allowed_urls=true in " + file_name_ +
                               " to allow it");
    chosen.reset();
  }
  if (chosen) return chosen;
  return CliOrFile(spec.name);
}

Status ConfigLoader::ApplyModels(std::string_view value, const Source& source) {
  std::vector<std::string> notes;
  StatusOr<ModelSettings> models = ParseModelSettings(value, &notes);
  if (!models.ok()) {
    return Status::InvalidArgument("invalid value for models: " + models.status().message() +
                                   source.Suffix());
  }
  result_.config.models = std::move(models).value();
  for (const std::string& n : notes) {
    result_.warnings.push_back("models: " + n + source.Suffix());
  }
  return Status::Ok();
}

Status ConfigLoader::ApplyKeys() {
  for (const KeySpec& spec : KnownKeys()) {
    if (spec.name == kEnableEnvvarsConfig) continue;
    StatusOr<std::optional<Candidate>> chosen = Choose(spec);
    if (!chosen.ok()) return chosen.status();
    if (!chosen->has_value()) continue;  // the default stays
    const Candidate& c = **chosen;
    // Java keeps a value's trailing blanks; "8080 " failing is never what the user meant.
    std::string_view value = TrimWhitespace(c.value);
    if (spec.name == kModels) {
      if (Status s = ApplyModels(value, c.source); !s.ok()) return s;
      continue;
    }
    if (std::optional<std::string> problem = spec.apply(value, result_.config)) {
      return Status::InvalidArgument(InvalidValueMessage(spec.name, value, *problem, c.source));
    }
  }
  return Status::Ok();
}

void ConfigLoader::ApplyLocations() {
  auto env_value = [&](const char* name) -> std::string {
    auto it = inputs_.env.find(name);
    return it == inputs_.env.end() ? std::string() : it->second;
  };
  ServerConfig& config = result_.config;
  if (config.log_location.empty()) config.log_location = env_value("LOG_LOCATION");
  if (config.log_location.empty()) config.log_location = "logs";
  if (config.metrics_location.empty()) config.metrics_location = env_value("METRICS_LOCATION");
  if (config.metrics_location.empty()) config.metrics_location = config.log_location;
}

}  // namespace

StatusOr<LoadedConfig> LoadServerConfig(const ConfigInputs& inputs) {
  ConfigLoader loader(inputs);
  if (Status s = loader.ParseFile(); !s.ok()) return s;
  if (Status s = loader.ReadControlKeys(); !s.ok()) return s;
  if (Status s = loader.ApplyKeys(); !s.ok()) return s;
  loader.ApplyLocations();
  return std::move(loader).Take();
}

}  // namespace tserve
