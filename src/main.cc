// tserve's entry point: command line, configuration, and the wiring of the modules.
// No logic of its own lives here beyond process management (daemon, pid file, signals).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>

#include <spdlog/spdlog.h>

#include "api/access_log.h"
#include "api/auth.h"
#include "api/errors.h"
#include "api/inference_api.h"
#include "api/management_api.h"
#include "api/metrics_api.h"
#include "api/openai_api.h"
#include "backend/handler_factory.h"
#include "backend/torch_extensions.h"
#include "common/file.h"
#include "common/malloc_tuning.h"
#include "common/private_dir.h"
#include "common/strings.h"
#include "config/server_config.h"
#include "http/router.h"
#include "http/server.h"
#include "metrics/log_sink.h"
#include "metrics/metrics_yaml.h"
#include "metrics/registry.h"
#include "serving/model_manager.h"
#include "serving/model_store.h"
#include "serving/registration_source.h"
#include "sysmetrics/sampler.h"
#include "sysmetrics/system_gauges.h"

extern char** environ;

namespace tserve {
namespace {

constexpr const char* kVersion = "0.1.0";
constexpr int kExitConfig = 2;
// How often the signal thread looks up from a drain to see whether it has finished.
constexpr long kSignalPollNanos = 100L * 1000 * 1000;

// Every flag of TorchServe 0.12's `torchserve --help` (ts/arg_parser.py), so its launch
// scripts run unchanged; docs/operations.md lists what each does in tserve.
struct CliArgs {
  bool start = false;
  bool stop = false;
  bool foreground = false;
  bool version = false;
  bool ncs = false;
  bool disable_token_auth = false;
  bool enable_model_api = false;
  std::string ts_config;
  std::string model_store;
  std::vector<std::string> models;
  // Accepted for TorchServe's scripts; they mean nothing to tserve (one notice each).
  std::string workflow_store;
  std::string log_config;
  std::string cpp_log_config;
  std::string plugins_path;
};

// One line on stderr for each TorchServe flag that has no effect in tserve: it never
// stops the launch, and it tells where the equivalent lives.
void PrintIgnoredFlagNotices(const CliArgs& cli) {
  auto notice = [](const char* flag, const std::string& value, const char* why) {
    fprintf(stderr, "tserve: %s%s%s accepted for TorchServe compatibility and ignored: %s\n", flag,
            value.empty() ? "" : " ", value.c_str(), why);
  };
  if (cli.ncs) notice("--ncs", "", "tserve writes no config snapshots");
  if (!cli.workflow_store.empty()) {
    notice("--workflow-store", cli.workflow_store, "tserve has no workflow API");
  }
  if (!cli.log_config.empty()) {
    notice("--log-config", cli.log_config,
           "tserve logs to stderr, or to $LOG_LOCATION/tserve.log in the background "
           "(docs/operations.md)");
  }
  if (!cli.cpp_log_config.empty()) {
    notice("--cpp-log-config", cli.cpp_log_config, "tserve has no separate C++ backend log");
  }
  if (!cli.plugins_path.empty()) {
    notice("--plugins-path", cli.plugins_path,
           "tserve loads handler plugins from model archives (docs/handlers.md)");
  }
}

// The pid file: $TSERVE_PID_FILE, else tserve.pid in a private runtime directory,
// $XDG_RUNTIME_DIR/tserve or else ${TMPDIR:-/tmp}/tserve-<euid> (issue 7 #12). `private_dir`
// gets that directory ("" when TSERVE_PID_FILE names the file).
std::string PidFilePath(std::string* private_dir = nullptr) {
  if (private_dir != nullptr) private_dir->clear();
  const char* p = getenv("TSERVE_PID_FILE");
  if (p != nullptr && *p != '\0') return p;
  std::string dir;
  const char* xdg = getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && *xdg != '\0') {
    dir = std::string(xdg) + "/tserve";
  } else {
    const char* tmp = getenv("TMPDIR");
    dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tserve-" +
          std::to_string(geteuid());
  }
  if (private_dir != nullptr) *private_dir = dir;
  return dir + "/tserve.pid";
}

// The pid in the pid file when that process is alive and is a tserve, else 0. A symbolic
// link there is not followed.
pid_t RunningPid(const std::string& path) {
  auto text = ReadFileNoFollow(path, 64);
  if (!text.ok()) return 0;
  std::istringstream in(*text);
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return 0;
  if (kill(static_cast<pid_t>(pid), 0) != 0 && errno != EPERM) return 0;
  auto name = ReadFile("/proc/" + std::to_string(pid) + "/comm", 64);
  if (!name.ok() || !name->starts_with("tserve")) return 0;  // a stale file, its pid reused
  return static_cast<pid_t>(pid);
}

int StopServer() {
  std::string dir;
  const std::string path = PidFilePath(&dir);
  if (!dir.empty()) {
    Status s = CheckPrivateDir(dir);
    if (!s.ok() && s.code() != StatusCode::kNotFound) {
      fprintf(stderr, "tserve: not reading the pid file: %s\n", s.message().c_str());
      return 1;
    }
  }
  pid_t pid = RunningPid(path);
  if (pid == 0) {
    fprintf(stderr, "tserve is not running (no live process in %s)\n", path.c_str());
    return 1;
  }
  if (kill(pid, SIGTERM) != 0) {
    fprintf(stderr, "cannot signal tserve (pid %d): %s\n", pid, strerror(errno));
    return 1;
  }
  for (int i = 0; i < 600; ++i) {  // 60 s: in-flight requests get to finish
    if (kill(pid, 0) != 0 && errno == ESRCH) {
      printf("tserve has stopped.\n");
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  fprintf(stderr, "tserve (pid %d) did not stop within 60 s\n", pid);
  return 1;
}

std::map<std::string, std::string> Environment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

// The running server: owns every module, in dependency order.
class App {
 public:
  explicit App(ServerConfig config) : config_(std::move(config)) {}

  // Everything that can fail at startup, before the first request is accepted, step by
  // step in dependency order; the first failure stops the server.
  Status Init() {
    hostname_ = LocalHostname();
    if (Status s = InitMetrics(); !s.ok()) return s;
    if (Status s = InitHttpServer(); !s.ok()) return s;
    if (Status s = InitModels(); !s.ok()) return s;
    if (Status s = InitApis(); !s.ok()) return s;
    if (Status s = InitAuth(); !s.ok()) return s;
    if (Status s = InitListeners(); !s.ok()) return s;
    return InitSystemMetrics();
  }

  void Start() {
    if (sampler_ != nullptr) {
      sampler_->Start();
      if (!sampler_->gpu_unavailable_reason().empty()) {
        spdlog::info("No GPU metrics: {}", sampler_->gpu_unavailable_reason());
      }
    }
    server_->Start();
  }

  ~App() { RemovePrivateFiles(); }

  // Writes out the access log's buffered lines (before a hard exit).
  void FlushAccessLog() {
    if (access_log_ != nullptr) access_log_->Flush();
  }

  // Deletes the private extraction root (remove_all never follows links inside it).
  void RemovePrivateFiles() {
    if (extract_root_.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(extract_root_, ignored);
  }

  void Stop() {
    spdlog::info("Shutting down: no new connections; finishing requests in flight");
    // Downloads abort and registrations answer first: they must not hold up the grace period.
    management_api_->Shutdown();
    server_->Shutdown(std::chrono::seconds(30));
    models_->Shutdown();
    RemovePrivateFiles();
    if (sampler_ != nullptr) sampler_->Stop();
    if (sink_ != nullptr) sink_->Flush();
  }

 private:
  // The metrics registry, its families (metrics.yaml) and, outside Prometheus mode, the
  // log file they are written to; the process metrics and the response counters.
  Status InitMetrics() {
    if (config_.metrics_mode != MetricsMode::kPrometheus) {
      std::set<std::string> skip;
      if (config_.metrics_mode == MetricsMode::kLegacy) {
        for (const auto& name : api::MetricsApi::LegacyFamilies()) skip.insert(name);
      }
      auto sink = metrics::LogFileSink::Open(config_.metrics_location, hostname_, skip);
      if (!sink.ok()) return sink.status();
      sink_ = std::move(*sink);
    }
    registry_ = std::make_unique<metrics::Registry>(sink_.get());

    auto families = config_.metrics_config.empty()
                        ? metrics::ParseMetricsYaml(metrics::DefaultMetricsYaml(), "metrics.yaml")
                        : metrics::LoadMetricsYamlFile(config_.metrics_config);
    if (!families.ok()) return families.status();
    if (Status s = metrics::AddFamilies(std::move(*families), registry_.get()); !s.ok()) return s;
    if (Status s = sysmetrics::RegisterProcessMetrics(registry_.get()); !s.ok()) return s;

    auto counters = api::ResponseCounters::Create(registry_.get(), hostname_);
    if (!counters.ok()) return counters.status();
    counters_ = std::move(*counters);
    return Status::Ok();
  }

  // The HTTP server (no listener yet) and TorchServe's access log.
  Status InitHttpServer() {
    http::ServerOptions options;
    options.threads = config_.number_of_netty_threads > 0
                          ? config_.number_of_netty_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    options.max_body_size = config_.max_request_size;
    options.max_header_size = config_.max_header_size;
    options.idle_timeout = std::chrono::seconds(config_.http_idle_timeout);
    options.read_timeout = std::chrono::seconds(config_.http_read_timeout);
    options.errors = &api::ErrorForStatus;
    options.observer = counters_.get();
    options.warn = [](const std::string& message) { spdlog::warn("{}", message); };
    // TorchServe's access_log.log, each line with the response's x-request-id.
    auto access_log = api::AccessLog::Open(config_.log_location);
    if (!access_log.ok()) return access_log.status();
    access_log_ = std::move(*access_log);
    options.access_log = access_log_.get();
    server_ = std::make_unique<http::Server>(options);
    return Status::Ok();
  }

  // The handlers, the model manager, and the models loaded at startup.
  Status InitModels() {
    backend::RegisterNoopHandler(&handlers_);
    // The TorchScript handlers: declared now, their module (libtserve_torch.so, with LibTorch
    // and the operator libraries of torch_extension_libraries, checked now) loaded by the
    // first model that needs it.
    handlers_.SetLogger([](const std::string& line) { spdlog::info("{}", line); });
    if (Status t = backend::RegisterTorchBackend(&handlers_, config_.torch_extension_libraries);
        !t.ok()) {
      return t;
    }
    serving::ModelManager::Options mo;
    mo.model_store = config_.model_store;
    // A private extraction root (mkdtemp, 0700): a predictable name in a shared /tmp could
    // be created first by another user, who could then swap the models (issue 7 #11).
    std::error_code tmp_error;
    auto root = MakePrivateTempDir(std::filesystem::temp_directory_path(tmp_error).string(),
                                   "tserve-models-");
    if (!root.ok()) return root.status();
    extract_root_ = *root;
    mo.extract_root = extract_root_;
    mo.hostname = hostname_;
    mo.default_workers = config_.default_workers_per_model > 0
                             ? config_.default_workers_per_model
                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    mo.job_queue_size = static_cast<size_t>(config_.job_queue_size);
    mo.max_workers_per_model = config_.max_workers_per_model;  // 0: derived from the cores
    mo.max_workers_total = config_.max_workers_total;
    mo.default_response_timeout_s = config_.default_response_timeout;
    mo.max_response_size = static_cast<size_t>(config_.max_response_size);
    models_ = std::make_unique<serving::ModelManager>(mo, &handlers_, registry_.get());
    LoadStartupModels();
    return Status::Ok();
  }

  // The inference and management APIs on their routers, with the registration policy
  // (serving::RegistrationSource) behind POST /models.
  Status InitApis() {
    inference_api_ = std::make_unique<api::InferenceApi>(models_.get());
    serving::RegistrationSource::Options ro;
    ro.model_store = config_.model_store;
    ro.allowed_urls = config_.allowed_urls;
    ro.max_download_bytes = config_.max_model_download_size;
    ro.allow_loopback = config_.allow_loopback_model_urls;
    ro.allow_private = config_.allow_private_model_urls;
    ro.own_ports = {config_.inference_address.port, config_.management_address.port,
                    config_.metrics_address.port};
    auto source = serving::RegistrationSource::Create(std::move(ro));
    if (!source.ok()) return source.status();
    registration_source_ = std::make_unique<serving::RegistrationSource>(std::move(*source));
    api::ManagementApi::Options mgmt;
    mgmt.enable_model_api = config_.enable_model_api;
    mgmt.fetch = [source = registration_source_.get()](const std::string& url,
                                                       const std::atomic<bool>& cancel) {
      return source->Fetch(url, cancel);
    };
    management_api_ = std::make_unique<api::ManagementApi>(models_.get(), std::move(mgmt));
    inference_router_ = std::make_unique<http::Router>(&api::ErrorForStatus);
    inference_api_->RegisterRoutes(inference_router_.get());
    // The OpenAI-compatible endpoints (/v1/..., /predictions/{model}[/{version}]/v1/...).
    openai_api_ = std::make_unique<api::OpenAiApi>(models_.get());
    openai_api_->RegisterRoutes(inference_router_.get());
    management_router_ = std::make_unique<http::Router>(&api::ErrorForStatus);
    management_api_->RegisterRoutes(management_router_.get());
    AddOpenApiRoute(inference_router_.get(), "inference");
    AddOpenApiRoute(management_router_.get(), "management");
    inference_handler_ = inference_router_.get();
    management_handler_ = management_router_.get();
    return Status::Ok();
  }

  // Token authorization: when keys are needed, GET /token and a gate in front of each
  // router (inference_handler_, management_handler_).
  Status InitAuth() {
    for (const std::string& w : api::StartupSecurityWarnings(config_)) spdlog::warn("{}", w);
    const api::AuthPolicy auth_policy = api::DecideAuth(config_);
    if (!auth_policy.NeedsKeys()) {
      spdlog::info("Token authorization disabled: no key file, no key checked");
      return Status::Ok();
    }
    api::TokenAuth::Options ao;
    ao.key_file = config_.key_file;
    ao.expiration_minutes = config_.token_expiration_min;
    ao.reuse_key_file = config_.reuse_key_file;
    auto auth = api::TokenAuth::Create(ao);
    if (auth.ok()) {
      token_auth_ = std::move(*auth);
      if (ao.reuse_key_file) {
        // Replicas that must share keys fall out of step silently otherwise.
        if (token_auth_->reused()) {
          spdlog::info("Token authorization: keys reused from {}", ao.key_file);
        } else {
          spdlog::warn(
              "reuse_key_file: {} was missing, unreadable or not trusted (it must be a regular "
              "file owned by this user with mode 0600): new keys were written to it",
              ao.key_file);
        }
      }
      management_router_->Add(http::Method::kGet, "/token",
                              [a = token_auth_.get()](http::Request& req, http::Responder r) {
                                api::HandleTokenRequest(*a, req, std::move(r));
                              });
    } else if (auth_policy.inference || auth_policy.management ||
               auth.status().code() != StatusCode::kInternal) {
      return auth.status();
    } else {
      // No listener requires a key: serve on, but no presented key can be valid.
      spdlog::warn("No key file, so every request that presents a token is refused: {}",
                   auth.status().message());
    }
    // Both listeners check a presented key; a listener that requires none lets requests
    // without one through (issue 8 #9).
    using Presence = api::AuthGate::Presence;
    // The OpenAI routes ignore a presented key where none is required: OpenAI clients always
    // send one (often a placeholder), as vLLM accepts without --api-key.
    inference_gate_ = std::make_unique<api::AuthGate>(
        token_auth_.get(), api::TokenType::kInference, inference_router_.get(),
        api::DefaultExemptPaths(api::TokenType::kInference), &api::AuthClock::now,
        auth_policy.inference ? Presence::kRequired : Presence::kIfPresented, &api::IsOpenAiPath);
    inference_handler_ = inference_gate_.get();
    management_gate_ = std::make_unique<api::AuthGate>(
        token_auth_.get(), api::TokenType::kManagement, management_router_.get(),
        api::DefaultExemptPaths(api::TokenType::kManagement), &api::AuthClock::now,
        auth_policy.management ? Presence::kRequired : Presence::kIfPresented);
    management_handler_ = management_gate_.get();
    if (token_auth_ != nullptr) {
      const bool any = auth_policy.inference || auth_policy.management;
      spdlog::info("Token authorization: keys in {}; required on{}{}{} (docs/security.md)",
                   token_auth_->key_file(), auth_policy.inference ? " inference" : "",
                   auth_policy.management ? " management" : "",
                   any ? "" : " neither listener (loopback), but a key sent must be valid");
    }
    return Status::Ok();
  }

  // The listeners, each with its connection cap, so idle sockets on one listener cannot
  // take every descriptor (issue 7 #4): counted now that the models and log files are open.
  Status InitListeners() {
    int64_t fd_limit = 0;
    const http::ConnectionCaps caps = http::DefaultConnectionCaps(&fd_limit);
    const int64_t inference_cap =
        config_.max_connections > 0 ? config_.max_connections : caps.inference;
    if (inference_cap > caps.inference) {
      spdlog::warn(
          "max_connections={} is more than the file-descriptor limit ({}) leaves for the "
          "inference API ({}): idle connections can use every descriptor (docs/security.md)",
          inference_cap, fd_limit, caps.inference);
    }
    spdlog::info("Connection caps: inference {}, management {}, metrics {} (RLIMIT_NOFILE {})",
                 inference_cap, caps.management, caps.metrics, fd_limit);
    Status s = Listen("Inference", config_.inference_address, inference_handler_, inference_cap);
    if (!s.ok()) return s;
    s = Listen("Management", config_.management_address, management_handler_, caps.management);
    if (!s.ok()) return s;
    if (!config_.enable_metrics_api) {
      spdlog::info("Metrics API disabled (enable_metrics_api=false): no metrics listener");
      return Status::Ok();
    }
    metrics_api_ = std::make_unique<api::MetricsApi>(
        registry_.get(), api::MetricsApi::Options{config_.metrics_mode, config_.metrics_token});
    metrics_router_ = std::make_unique<http::Router>(&api::ErrorForStatus);
    metrics_api_->RegisterRoutes(metrics_router_.get());
    AddOpenApiRoute(metrics_router_.get(), "metrics");
    return Listen("Metrics", config_.metrics_address, metrics_router_.get(), caps.metrics);
  }

  // The system gauges (CPU, memory, disk, GPU) and the sampler that publishes them.
  Status InitSystemMetrics() {
    if (config_.disable_system_metrics) return Status::Ok();
    auto gauges = sysmetrics::SystemGauges::Create(registry_.get(), hostname_);
    if (!gauges.ok()) return gauges.status();
    gauges_ = std::move(*gauges);
    sysmetrics::SystemSampler::Options so;
    so.interval = std::chrono::seconds(config_.metric_time_interval);
    so.disk_path = config_.model_store;
    sampler_ = std::make_unique<sysmetrics::SystemSampler>(
        so, [g = gauges_.get()](const sysmetrics::SystemSample& sample) {
          for (const auto& e : sample.errors) spdlog::warn("system metrics: {}", e);
          g->Publish(sample);
        });
    return Status::Ok();
  }

  static void AddOpenApiRoute(http::Router* router, const std::string& listener) {
    // OPTIONS / and TorchServe's older GET /api-description.
    for (const char* path : {"/", "/api-description"}) {
      const http::Method m =
          std::string_view(path) == "/" ? http::Method::kOptions : http::Method::kGet;
      router->Add(m, path, [listener](http::Request&, http::Responder r) {
        http::Response resp;
        resp.body = api::OpenApiDescription(listener);
        r.Send(std::move(resp));
      });
    }
  }

  // --models / load_models: a model that cannot load is logged with its file and cause;
  // the server goes on with the others. models= (config_.models) configures the versions
  // they load, below their model-config.yaml, as TorchServe does; a defaultVersion there
  // becomes the default once all are loaded.
  void LoadStartupModels() {
    if (config_.load_models.empty()) {
      if (!config_.models.empty()) {
        spdlog::warn(
            "models= configures {} model(s) but load_models / --models loads none: models= "
            "only configures the models those load (as in TorchServe)",
            config_.models.size());
      }
      return;
    }
    if (config_.model_store.empty()) {
      spdlog::error("load_models is set but there is no model_store: no model loaded");
      return;
    }
    auto specs = serving::ResolveLoadModels(config_.load_models, config_.model_store);
    if (!specs.ok()) {
      spdlog::error("load_models: {}", specs.status().message());
      return;
    }
    std::set<std::pair<std::string, std::string>> configured;  // models= entries used
    serving::ModelManager::LoadOverrides overrides;
    overrides.fill_config = [this, &configured](const std::string& name, const std::string& version,
                                                serving::ModelConfig& mc) {
      auto m = config_.models.find(name);
      if (m == config_.models.end()) return;
      auto v = m->second.find(version);
      if (v == m->second.end()) return;
      configured.emplace(name, version);
      const ModelVersionSettings& s = v->second;
      if (!mc.min_workers) mc.min_workers = s.min_workers;
      if (!mc.max_workers) mc.max_workers = s.max_workers;
      if (!mc.batch_size) mc.batch_size = s.batch_size;
      if (!mc.max_batch_delay_ms) mc.max_batch_delay_ms = s.max_batch_delay_ms;
      if (!mc.response_timeout_s) mc.response_timeout_s = s.response_timeout_s;
      if (!mc.startup_timeout_s) mc.startup_timeout_s = s.startup_timeout_s;
    };
    for (const auto& spec : *specs) {
      Status s = models_->Load(spec, /*at_startup=*/true, overrides);
      if (!s.ok()) spdlog::error("Cannot load model {}: {}", spec.path, s.message());
    }
    for (const auto& [name, versions] : config_.models) {
      for (const auto& [version, settings] : versions) {
        if (configured.count({name, version}) == 0) {
          spdlog::warn(
              "models= configures model {} version {}, which load_models / --models did not "
              "load: its settings are unused",
              name, version);
        } else if (settings.default_version) {
          if (Status d = models_->SetDefault(name, version); !d.ok()) {
            spdlog::error("models=: cannot make {} the default version of {}: {}", version, name,
                          d.message());
          }
        }
      }
    }
  }

  Status Listen(const char* name, const ListenAddress& address, http::RequestHandler* handler,
                int64_t max_connections) {
    auto port = server_->AddListener(name, address.host, address.port, handler, max_connections);
    if (!port.ok()) return port.status();
    std::string host =
        address.host.find(':') != std::string::npos ? "[" + address.host + "]" : address.host;
    spdlog::info("{} API bind to: {}://{}:{}", name, address.scheme, host, *port);
    return Status::Ok();
  }

  ServerConfig config_;
  std::string hostname_;
  std::unique_ptr<metrics::LogFileSink> sink_;
  std::unique_ptr<api::AccessLog> access_log_;  // declared before server_: outlives it
  std::unique_ptr<metrics::Registry> registry_;
  std::unique_ptr<api::ResponseCounters> counters_;
  std::unique_ptr<http::Server> server_;
  backend::HandlerFactory handlers_;
  std::string extract_root_;
  std::unique_ptr<serving::RegistrationSource> registration_source_;
  std::unique_ptr<serving::ModelManager> models_;
  std::unique_ptr<api::InferenceApi> inference_api_;
  std::unique_ptr<api::OpenAiApi> openai_api_;
  std::unique_ptr<api::ManagementApi> management_api_;
  std::unique_ptr<api::MetricsApi> metrics_api_;
  std::unique_ptr<http::Router> inference_router_;
  std::unique_ptr<http::Router> management_router_;
  std::unique_ptr<http::Router> metrics_router_;
  std::unique_ptr<api::TokenAuth> token_auth_;
  std::unique_ptr<api::AuthGate> inference_gate_;
  std::unique_ptr<api::AuthGate> management_gate_;
  // What each API listener serves: its router, or the auth gate in front of it.
  http::RequestHandler* inference_handler_ = nullptr;
  http::RequestHandler* management_handler_ = nullptr;
  std::unique_ptr<sysmetrics::SystemGauges> gauges_;
  std::unique_ptr<sysmetrics::SystemSampler> sampler_;
};

// In the background child: tells the waiting parent how startup went (one byte).
int g_ready_fd = -1;

void ReportReady(char code) {
  if (g_ready_fd < 0) return;
  ssize_t ignored = write(g_ready_fd, &code, 1);
  (void)ignored;
  close(g_ready_fd);
  g_ready_fd = -1;
}

int Serve(const CliArgs& cli) {
  // Configuration, in TorchServe's order: $TS_CONFIG_FILE, else --ts-config, else
  // ./config.properties if present.
  ConfigInputs inputs;
  inputs.env = Environment();
  std::string config_path;
  if (auto it = inputs.env.find("TS_CONFIG_FILE"); it != inputs.env.end()) {
    config_path = it->second;
    if (!cli.ts_config.empty() && cli.ts_config != config_path) {
      spdlog::warn("--ts-config {} ignored: TS_CONFIG_FILE={} wins, as in TorchServe",
                   cli.ts_config, config_path);
    }
  }
  if (config_path.empty()) config_path = cli.ts_config;
  if (config_path.empty() && access("config.properties", R_OK) == 0) {
    config_path = "config.properties";
  }
  if (!config_path.empty()) {
    auto text = ReadFile(config_path);
    if (!text.ok()) {
      fprintf(stderr, "tserve: config file: %s\n", text.status().message().c_str());
      return kExitConfig;
    }
    inputs.properties_text = std::move(*text);
    inputs.properties_path = config_path;
  }
  if (!cli.model_store.empty()) inputs.cli["model_store"] = cli.model_store;
  if (cli.disable_token_auth) inputs.cli["disable_token_authorization"] = "true";
  if (cli.enable_model_api) inputs.cli["enable_model_api"] = "true";
  if (!cli.models.empty()) {
    std::string joined;
    for (const auto& m : cli.models) joined += (joined.empty() ? "" : ",") + m;
    inputs.cli["load_models"] = joined;
  }
  auto loaded = LoadServerConfig(inputs);
  if (!loaded.ok()) {
    fprintf(stderr, "tserve: %s\n", loaded.status().message().c_str());
    return kExitConfig;
  }
  for (const auto& w : loaded->warnings) spdlog::warn("{}", w);
  for (const auto& n : loaded->notes) spdlog::debug("{}", n);

  // Termination signals are taken synchronously by this thread; block them before any
  // other thread exists so none of those receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  spdlog::info("tserve {} starting (config: {}, metrics mode: {})", kVersion,
               config_path.empty() ? "defaults" : config_path,
               MetricsModeName(loaded->config.metrics_mode));
  std::string pid_dir;
  const std::string pid_path = PidFilePath(&pid_dir);
  if (!pid_dir.empty()) {
    Status dir_status = EnsurePrivateDir(pid_dir);
    if (!dir_status.ok()) {
      fprintf(stderr, "tserve: pid file directory: %s (set TSERVE_PID_FILE or XDG_RUNTIME_DIR)\n",
              dir_status.message().c_str());
      return 1;
    }
  }
  if (pid_t other = RunningPid(pid_path)) {
    fprintf(stderr, "tserve is already running (pid %d, %s); stop it with tserve --stop\n", other,
            pid_path.c_str());
    return 1;
  }

  App app(std::move(loaded->config));
  Status s = app.Init();
  if (!s.ok()) {
    const bool config_error = s.IsInvalidArgument() || s.IsNotFound();
    fprintf(stderr, "tserve: %s\n", s.message().c_str());
    return config_error ? kExitConfig : 1;
  }
  app.Start();
  // Never through a symbolic link planted at pid_path (issue 7 #12).
  if (Status w = WriteFileAtomically(pid_path, std::to_string(getpid()) + "\n", 0644); !w.ok()) {
    spdlog::error("No pid file, so tserve --stop cannot find this server: {}", w.message());
  }
  spdlog::info("tserve is ready (pid {})", getpid());
  ReportReady(0);

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("Received {}", sig == SIGINT ? "SIGINT" : "SIGTERM");
  // The drain runs beside this thread, which keeps taking signals: a second SIGTERM or
  // SIGINT stops at once, without finishing requests in flight (issue 7 #5).
  std::atomic<bool> stopped{false};
  std::thread stopper;
  try {
    stopper = std::thread([&app, &stopped] {
      app.Stop();
      stopped.store(true);
    });
  } catch (const std::system_error& e) {
    // Out of threads (issue 7 #3): drain here instead, without the second-signal watch.
    spdlog::warn("Cannot start the shutdown thread ({}): stopping on this one", e.what());
    app.Stop();
    stopped.store(true);
  }
  while (!stopped.load()) {
    timespec tick{0, kSignalPollNanos};
    int again = sigtimedwait(&signals, nullptr, &tick);
    if (again == SIGTERM || again == SIGINT) {
      spdlog::warn(
          "Received {} again during shutdown: stopping now, requests in flight are "
          "dropped",
          again == SIGINT ? "SIGINT" : "SIGTERM");
      if (RunningPid(pid_path) == getpid()) unlink(pid_path.c_str());
      app.RemovePrivateFiles();
      app.FlushAccessLog();
      spdlog::default_logger()->flush();
      _exit(128 + again);
    }
  }
  if (stopper.joinable()) stopper.join();
  if (RunningPid(pid_path) == getpid()) unlink(pid_path.c_str());
  spdlog::info("tserve stopped");
  return 0;
}

// --start without --foreground: fork, detach, send output to the log directory, and
// return once the child says it is serving (or why it could not).
int StartInBackground(const CliArgs& cli) {
  const char* env_logs = getenv("LOG_LOCATION");
  std::string log_dir = env_logs != nullptr && *env_logs != '\0' ? env_logs : "logs";
  if (Status made = MakeDirectories(log_dir); !made.ok()) {
    // Not fatal here: the child's output then stays on this terminal.
    fprintf(stderr, "tserve: log directory: %s\n", made.message().c_str());
  }
  std::string log_path = log_dir + "/tserve.log";
  int fds[2];
  if (pipe(fds) != 0) {
    perror("pipe");
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    close(fds[0]);
    setsid();
    int out = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int in = open("/dev/null", O_RDONLY);
    if (out >= 0) {
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
      close(out);
    }
    if (in >= 0) {
      dup2(in, STDIN_FILENO);
      close(in);
    }
    g_ready_fd = fds[1];
    int rc = Serve(cli);
    ReportReady(static_cast<char>(rc == 0 ? 1 : rc));
    _exit(rc);
  }
  close(fds[1]);
  char code = 1;
  ssize_t n = read(fds[0], &code, 1);
  close(fds[0]);
  if (n == 1 && code == 0) {
    printf("tserve started in the background (pid %d). Logs: %s. Stop it with: tserve --stop\n",
           pid, log_path.c_str());
    return 0;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  fprintf(stderr, "tserve failed to start (exit code %d); see %s\n", rc, log_path.c_str());
  // Show the reason here too: the last lines of the log.
  auto log = ReadFile(log_path);
  if (log.ok() && !log->empty()) {
    std::string_view text = *log;
    if (text.ends_with('\n')) text.remove_suffix(1);
    std::vector<std::string_view> lines = SplitString(text, '\n');
    for (size_t i = lines.size() > 3 ? lines.size() - 3 : 0; i < lines.size(); ++i) {
      fprintf(stderr, "%.*s\n", static_cast<int>(lines[i].size()), lines[i].data());
    }
  }
  return rc == 0 ? 1 : rc;
}

}  // namespace
}  // namespace tserve

int main(int argc, char** argv) {
  tserve::TuneMallocForServer();
  tserve::CliArgs cli;
  CLI::App app{"tserve: a TorchServe-compatible model server with Prometheus metrics", "tserve"};
  // TorchServe's flags (ts/arg_parser.py of 0.12), then tserve's own -f.
  app.add_flag("-v,--version", cli.version, "Print the version");
  app.add_flag("--start", cli.start,
               "Start the model server (the default when --stop is not given, as in "
               "TorchServe)");
  app.add_flag("--stop", cli.stop, "Stop the running model server (found through its pid file)");
  app.add_option("--ts-config,-f", cli.ts_config,
                 "Configuration file (config.properties); $TS_CONFIG_FILE wins when set, as "
                 "in TorchServe");
  app.add_option("--model-store", cli.model_store, "Folder of model archives (model_store)");
  app.add_option("--workflow-store", cli.workflow_store,
                 "Accepted for TorchServe compatibility; ignored (no workflow API)");
  app.add_option("--models", cli.models,
                 "Models to load at startup (load_models): NAME=FILE.mar, FILE.mar or all")
      ->expected(1, -1);
  app.add_option("--log-config", cli.log_config,
                 "Accepted for TorchServe compatibility (a log4j file); ignored");
  app.add_option("--cpp-log-config", cli.cpp_log_config,
                 "Accepted for TorchServe compatibility; ignored");
  app.add_flag("--foreground", cli.foreground, "Stay in the foreground");
  app.add_flag("--ncs,--no-config-snapshots", cli.ncs,
               "Accepted for TorchServe compatibility (tserve writes no config snapshots)");
  app.add_option("--plugins-path,--ppath", cli.plugins_path,
                 "Accepted for TorchServe compatibility (plugin jars); ignored");
  app.add_flag("--disable-token-auth,--dt", cli.disable_token_auth,
               "Token authorization off (disable_token_authorization=true): no key file, "
               "no key checked");
  app.add_flag("--enable-model-api", cli.enable_model_api,
               "Allow registering and unregistering models (enable_model_api=true)");
  app.footer(
      "Listeners default to 127.0.0.1: inference :8080, management :8081, metrics :8082.\n"
      "Environment: TSERVE_PID_FILE (default $XDG_RUNTIME_DIR/tserve/tserve.pid, else\n"
      "${TMPDIR:-/tmp}/tserve-<uid>/tserve.pid), LOG_LOCATION (default ./logs),\n"
      "METRICS_LOCATION, TS_CONFIG_FILE, TS_<KEY> with enable_envvars_config=true.\n"
      "Docs: docs/configuration.md, docs/metrics.md, docs/operations.md");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : tserve::kExitConfig;
  }
  if (cli.version) {
    printf("tserve %s\n", tserve::kVersion);
    return 0;
  }
  if (cli.start && cli.stop) {
    fprintf(stderr, "tserve: --start and --stop cannot be given together (see --help)\n");
    return tserve::kExitConfig;
  }
  tserve::PrintIgnoredFlagNotices(cli);
  if (cli.stop) return tserve::StopServer();
  if (cli.foreground) return tserve::Serve(cli);
  return tserve::StartInBackground(cli);
}
