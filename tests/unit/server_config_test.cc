#include "config/server_config.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace tserve {
namespace {

using Env = std::map<std::string, std::string>;

ConfigInputs Inputs(std::string text, Env env = {}, Env cli = {}) {
  ConfigInputs in;
  in.properties_text = std::move(text);
  in.properties_path = "/etc/tserve/config.properties";
  in.env = std::move(env);
  in.cli = std::move(cli);
  return in;
}

LoadedConfig MustLoad(const ConfigInputs& in) {
  StatusOr<LoadedConfig> r = LoadServerConfig(in);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : LoadedConfig{};
}

ServerConfig MustLoadText(std::string text) { return MustLoad(Inputs(std::move(text))).config; }

// The error message of a load that must fail with InvalidArgument.
std::string LoadError(const ConfigInputs& in) {
  StatusOr<LoadedConfig> r = LoadServerConfig(in);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "<loaded>";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << "not one line";
  return r.status().message();
}

std::string LoadErrorText(std::string text) { return LoadError(Inputs(std::move(text))); }

// --- defaults ----------------------------------------------------------------------------

TEST(ServerConfigTest, DefaultsWithoutAnyInput) {
  LoadedConfig loaded = MustLoad(ConfigInputs{});
  const ServerConfig& c = loaded.config;
  EXPECT_EQ(c.inference_address.scheme, "http");
  EXPECT_EQ(c.inference_address.host, "127.0.0.1");
  EXPECT_EQ(c.inference_address.port, 8080);
  EXPECT_EQ(c.inference_address.original, "http://127.0.0.1:8080");
  EXPECT_EQ(c.management_address.host, "127.0.0.1");
  EXPECT_EQ(c.management_address.port, 8081);
  EXPECT_EQ(c.management_address.original, "http://127.0.0.1:8081");
  EXPECT_EQ(c.metrics_address.host, "127.0.0.1");
  EXPECT_EQ(c.metrics_address.port, 8082);
  EXPECT_EQ(c.metrics_address.original, "http://127.0.0.1:8082");
  EXPECT_TRUE(c.enable_metrics_api);
  EXPECT_EQ(c.metrics_mode, MetricsMode::kPrometheus);
  EXPECT_EQ(c.metrics_config, "");
  EXPECT_EQ(c.metric_time_interval, 15);
  EXPECT_FALSE(c.disable_system_metrics);
  EXPECT_EQ(c.model_store, "");
  EXPECT_TRUE(c.load_models.empty());
  EXPECT_EQ(c.default_workers_per_model, 0);
  EXPECT_EQ(c.job_queue_size, 100);
  EXPECT_EQ(c.max_request_size, 6553500);
  EXPECT_EQ(c.max_response_size, 6553500);
  EXPECT_EQ(c.default_response_timeout, 120);
  EXPECT_FALSE(c.enable_model_api);
  EXPECT_EQ(c.allowed_urls, std::vector<std::string>{"file://.*|http(s)?://.*"});
  EXPECT_FALSE(c.disable_token_authorization);
  EXPECT_FALSE(c.enable_token_authorization);
  EXPECT_FALSE(c.enable_envvars_config);
  EXPECT_EQ(c.number_of_netty_threads, 0);
  EXPECT_EQ(c.http_idle_timeout, 60);
  EXPECT_EQ(c.http_read_timeout, 30);
  EXPECT_EQ(c.max_header_size, 8192);
  EXPECT_EQ(c.metrics_token, "");
  EXPECT_EQ(c.log_location, "logs");
  EXPECT_EQ(c.metrics_location, "logs");
  EXPECT_TRUE(loaded.warnings.empty());
  EXPECT_TRUE(loaded.notes.empty());
}

TEST(ServerConfigTest, CommentsOnlyFileKeepsDefaults) {
  LoadedConfig loaded = MustLoad(Inputs("# nothing here\n\n! really\n"));
  EXPECT_EQ(loaded.config.inference_address.port, 8080);
  EXPECT_TRUE(loaded.warnings.empty());
}

TEST(ServerConfigTest, LocationsFromTorchServeEnvironmentVariables) {
  ServerConfig c = MustLoad(Inputs("", {{"LOG_LOCATION", "/var/log/ts"}})).config;
  EXPECT_EQ(c.log_location, "/var/log/ts");
  EXPECT_EQ(c.metrics_location, "/var/log/ts");

  c = MustLoad(Inputs("", {{"LOG_LOCATION", "/l"}, {"METRICS_LOCATION", "/m"}})).config;
  EXPECT_EQ(c.log_location, "/l");
  EXPECT_EQ(c.metrics_location, "/m");

  c = MustLoad(Inputs("log_location=/k", {{"LOG_LOCATION", "/l"}})).config;
  EXPECT_EQ(c.log_location, "/k");
  EXPECT_EQ(c.metrics_location, "/k");
}

// --- every key ---------------------------------------------------------------------------

TEST(ServerConfigTest, EveryKeyIsParsed) {
  LoadedConfig loaded =
      MustLoad(Inputs("inference_address=http://0.0.0.0:9080\n"
                      "management_address=http://[::1]:9081\n"
                      "metrics_address=localhost:9082\n"
                      "enable_metrics_api=false\n"
                      "metrics_mode=legacy\n"
                      "metrics_config=/etc/tserve/metrics.yaml\n"
                      "metric_time_interval=5\n"
                      "disable_system_metrics=TRUE\n"
                      "model_store=/models\n"
                      "load_models=a.mar, b=b.mar\n"
                      "default_workers_per_model=3\n"
                      "job_queue_size=7\n"
                      "max_request_size=1000\n"
                      "max_response_size=2000\n"
                      "default_response_timeout=9\n"
                      "enable_model_api=true\n"
                      "allowed_urls=https://s3.amazonaws.com/.*,file://.*\n"
                      "disable_token_authorization=true\n"
                      "enable_token_authorization=True\n"
                      "enable_envvars_config=false\n"
                      "number_of_netty_threads=4\n"
                      "http_idle_timeout=11\n"
                      "http_read_timeout=12\n"
                      "max_header_size=4096\n"
                      "metrics_token=s3cr3t-T0ken\n"
                      "log_location=/var/log/tserve\n"
                      "metrics_location=/var/log/metrics\n"));
  EXPECT_TRUE(loaded.warnings.empty());
  const ServerConfig& c = loaded.config;
  EXPECT_EQ(c.inference_address.host, "0.0.0.0");
  EXPECT_EQ(c.inference_address.port, 9080);
  EXPECT_EQ(c.inference_address.original, "http://0.0.0.0:9080");
  EXPECT_EQ(c.management_address.host, "::1");
  EXPECT_EQ(c.management_address.port, 9081);
  EXPECT_EQ(c.metrics_address.scheme, "http");
  EXPECT_EQ(c.metrics_address.host, "localhost");
  EXPECT_EQ(c.metrics_address.port, 9082);
  EXPECT_FALSE(c.enable_metrics_api);
  EXPECT_EQ(c.metrics_mode, MetricsMode::kLegacy);
  EXPECT_EQ(c.metrics_config, "/etc/tserve/metrics.yaml");
  EXPECT_EQ(c.metric_time_interval, 5);
  EXPECT_TRUE(c.disable_system_metrics);
  EXPECT_EQ(c.model_store, "/models");
  EXPECT_EQ(c.load_models, (std::vector<std::string>{"a.mar", "b=b.mar"}));
  EXPECT_EQ(c.default_workers_per_model, 3);
  EXPECT_EQ(c.job_queue_size, 7);
  EXPECT_EQ(c.max_request_size, 1000);
  EXPECT_EQ(c.max_response_size, 2000);
  EXPECT_EQ(c.default_response_timeout, 9);
  EXPECT_TRUE(c.enable_model_api);
  EXPECT_EQ(c.allowed_urls, (std::vector<std::string>{"https://s3.amazonaws.com/.*", "file://.*"}));
  EXPECT_TRUE(c.disable_token_authorization);
  EXPECT_TRUE(c.enable_token_authorization);
  EXPECT_FALSE(c.enable_envvars_config);
  EXPECT_EQ(c.number_of_netty_threads, 4);
  EXPECT_EQ(c.http_idle_timeout, 11);
  EXPECT_EQ(c.http_read_timeout, 12);
  EXPECT_EQ(c.max_header_size, 4096);
  EXPECT_EQ(c.metrics_token, "s3cr3t-T0ken");
  EXPECT_EQ(c.log_location, "/var/log/tserve");
  EXPECT_EQ(c.metrics_location, "/var/log/metrics");
}

TEST(ServerConfigTest, MetricsModeIsCaseInsensitive) {
  EXPECT_EQ(MustLoadText("metrics_mode=LOG").metrics_mode, MetricsMode::kLog);
  EXPECT_EQ(MustLoadText("metrics_mode=Prometheus").metrics_mode, MetricsMode::kPrometheus);
  EXPECT_EQ(MustLoadText("metrics_mode = legacy  ").metrics_mode, MetricsMode::kLegacy);
}

TEST(ServerConfigTest, ValuesAreTrimmed) {
  ServerConfig c = MustLoadText("job_queue_size=5   \nenable_model_api=true\t\nmodel_store=/m  ");
  EXPECT_EQ(c.job_queue_size, 5);
  EXPECT_TRUE(c.enable_model_api);
  EXPECT_EQ(c.model_store, "/m");
}

TEST(ServerConfigTest, IntegerBoundariesAreAccepted) {
  ServerConfig c = MustLoadText(
      "metric_time_interval=1\ndefault_workers_per_model=0\njob_queue_size=1\n"
      "max_request_size=2147483647\nmax_response_size=1\ndefault_response_timeout=1\n"
      "number_of_netty_threads=0\ninference_address=http://127.0.0.1:1\n"
      "management_address=http://127.0.0.1:65535\nmax_header_size=+1048576\n");
  EXPECT_EQ(c.metric_time_interval, 1);
  EXPECT_EQ(c.default_workers_per_model, 0);
  EXPECT_EQ(c.max_request_size, 2147483647);
  EXPECT_EQ(c.inference_address.port, 1);
  EXPECT_EQ(c.management_address.port, 65535);
  EXPECT_EQ(c.max_header_size, 1048576);
}

TEST(ServerConfigTest, ListsAreSplitOnCommasAndTrimmed) {
  ServerConfig c = MustLoadText("allowed_urls= a.* , b.* ,,\nload_models=all");
  EXPECT_EQ(c.allowed_urls, (std::vector<std::string>{"a.*", "b.*"}));
  EXPECT_EQ(c.load_models, std::vector<std::string>{"all"});
  EXPECT_TRUE(MustLoadText("load_models=").load_models.empty());
}

TEST(ServerConfigTest, TypicalTorchServeConfigLoadsWithoutWarnings) {
  LoadedConfig loaded =
      MustLoad(Inputs("inference_address=http://0.0.0.0:8080\n"
                      "management_address=http://0.0.0.0:8081\n"
                      "metrics_address=http://0.0.0.0:8082\n"
                      "metrics_mode=prometheus\n"
                      "number_of_netty_threads=32\n"
                      "default_workers_per_model=10\n"
                      "job_queue_size=1000\n"
                      "model_store=/home/model-server/model-store\n"
                      "workflow_store=/home/model-server/wf-store\n"
                      "load_models=all\n"
                      "vmargs=-XX:+UseContainerSupport -XX:MaxRAMPercentage=10.0\n"
                      "number_of_gpu=1\n"
                      "install_py_dep_per_model=true\n"
                      "cors_allowed_origin=*\n"));
  EXPECT_TRUE(loaded.warnings.empty()) << loaded.warnings[0];
  EXPECT_EQ(loaded.notes.size(), 5u);
  EXPECT_EQ(loaded.config.job_queue_size, 1000);
  EXPECT_EQ(loaded.config.inference_address.host, "0.0.0.0");
}

// --- unknown and ignored keys ------------------------------------------------------------

TEST(ServerConfigTest, UnknownKeyIsAWarningWithItsLine) {
  LoadedConfig loaded = MustLoad(Inputs("job_queue_size=5\n# c\nfoo=bar\n"));
  ASSERT_EQ(loaded.warnings.size(), 1u);
  EXPECT_EQ(loaded.warnings[0],
            "unknown configuration key \"foo\" ignored (config.properties line 3)");
  EXPECT_EQ(loaded.config.job_queue_size, 5);
}

TEST(ServerConfigTest, UnknownKeyWarningSuggestsTheKnownSpelling) {
  LoadedConfig loaded = MustLoad(Inputs("Metrics-Mode=log\n"));
  ASSERT_EQ(loaded.warnings.size(), 1u);
  EXPECT_EQ(loaded.warnings[0],
            "unknown configuration key \"Metrics-Mode\" ignored (config.properties line 1); "
            "did you mean \"metrics_mode\"?");
  EXPECT_EQ(loaded.config.metrics_mode, MetricsMode::kPrometheus);
}

TEST(ServerConfigTest, IgnoredTorchServeKeysAreNotesNotWarnings) {
  LoadedConfig loaded =
      MustLoad(Inputs("number_of_gpu=2\nkeystore=k.p12\nasync_logging=true\nmodels={}\n"));
  EXPECT_TRUE(loaded.warnings.empty());
  ASSERT_EQ(loaded.notes.size(), 3u);  // models= is read since issue 8 #4
  EXPECT_EQ(loaded.notes[0],
            "TorchServe configuration key \"number_of_gpu\" is not used by tserve; ignored "
            "(config.properties line 1)");
}

TEST(ServerConfigTest, DuplicateKeyWarnsAndTheLastWins) {
  LoadedConfig loaded = MustLoad(Inputs("job_queue_size=5\nfoo=1\njob_queue_size=6\nfoo=2\n"));
  EXPECT_EQ(loaded.config.job_queue_size, 6);
  ASSERT_EQ(loaded.warnings.size(), 3u);
  EXPECT_EQ(loaded.warnings[0],
            "configuration key \"job_queue_size\" is set more than once (config.properties lines "
            "1 and 3); the last value is used");
  EXPECT_EQ(loaded.warnings[2],
            "unknown configuration key \"foo\" ignored (config.properties line 4)");
}

TEST(ServerConfigTest, UnknownCommandLineKeyIsAWarning) {
  LoadedConfig loaded = MustLoad(Inputs("", {}, {{"bogus", "1"}}));
  ASSERT_EQ(loaded.warnings.size(), 1u);
  EXPECT_EQ(loaded.warnings[0], "unknown configuration key \"bogus\" ignored (command line)");
}

// --- precedence --------------------------------------------------------------------------

TEST(ServerConfigTest, CommandLineOverridesFile) {
  ServerConfig c = MustLoad(Inputs("model_store=/file\nload_models=a.mar", {},
                                   {{"model_store", "/cli"}, {"load_models", "b.mar,c.mar"}}))
                       .config;
  EXPECT_EQ(c.model_store, "/cli");
  EXPECT_EQ(c.load_models, (std::vector<std::string>{"b.mar", "c.mar"}));
}

TEST(ServerConfigTest, EnvironmentIsIgnoredUnlessEnabled) {
  LoadedConfig loaded = MustLoad(
      Inputs("model_store=/file", {{"TS_MODEL_STORE", "/env"}, {"TS_METRICS_MODE", "log"}}));
  EXPECT_EQ(loaded.config.model_store, "/file");
  EXPECT_EQ(loaded.config.metrics_mode, MetricsMode::kPrometheus);
  EXPECT_FALSE(loaded.config.enable_envvars_config);
  ASSERT_EQ(loaded.warnings.size(), 2u);
  EXPECT_EQ(loaded.warnings[0],
            "environment TS_METRICS_MODE ignored: set enable_envvars_config=true to use TS_* "
            "variables");
}

TEST(ServerConfigTest, EnvironmentEnabledFromFile) {
  ServerConfig c = MustLoad(Inputs("enable_envvars_config=true\nmetrics_mode=legacy",
                                   {{"TS_METRICS_MODE", "log"}, {"TS_JOB_QUEUE_SIZE", "42"}}))
                       .config;
  EXPECT_TRUE(c.enable_envvars_config);
  EXPECT_EQ(c.metrics_mode, MetricsMode::kLog);
  EXPECT_EQ(c.job_queue_size, 42);
}

TEST(ServerConfigTest, EnvironmentEnabledFromEnvironment) {
  ServerConfig c = MustLoad(Inputs("metrics_mode=legacy", {{"TS_ENABLE_ENVVARS_CONFIG", "TRUE"},
                                                           {"TS_METRICS_MODE", "log"}}))
                       .config;
  EXPECT_TRUE(c.enable_envvars_config);
  EXPECT_EQ(c.metrics_mode, MetricsMode::kLog);
}

TEST(ServerConfigTest, EnvironmentCanDisableWhatTheFileEnables) {
  ServerConfig c =
      MustLoad(Inputs("enable_envvars_config=true",
                      {{"TS_ENABLE_ENVVARS_CONFIG", "false"}, {"TS_METRICS_MODE", "log"}}))
          .config;
  EXPECT_FALSE(c.enable_envvars_config);
  EXPECT_EQ(c.metrics_mode, MetricsMode::kPrometheus);
}

TEST(ServerConfigTest, PrecedenceEnvOverCliOverFileOverDefault) {
  const std::string file = "enable_envvars_config=true\nmodel_store=/file\n";
  Env env = {{"TS_MODEL_STORE", "/env"}};
  Env cli = {{"model_store", "/cli"}};
  EXPECT_EQ(MustLoad(Inputs(file, env, cli)).config.model_store, "/env");
  EXPECT_EQ(MustLoad(Inputs(file, {}, cli)).config.model_store, "/cli");
  EXPECT_EQ(MustLoad(Inputs(file, {}, {})).config.model_store, "/file");
  EXPECT_EQ(MustLoad(Inputs("enable_envvars_config=true", {}, {})).config.model_store, "");
}

TEST(ServerConfigTest, EnvironmentAddressOverride) {
  ServerConfig c = MustLoad(Inputs("enable_envvars_config=true",
                                   {{"TS_INFERENCE_ADDRESS", "http://127.0.0.1:18080"}}))
                       .config;
  EXPECT_EQ(c.inference_address.port, 18080);
}

TEST(ServerConfigTest, EnvironmentAllowedUrlsNeedsUseEnvAllowedUrls) {
  Env env = {{"TS_ALLOWED_URLS", "https://evil/.*"}};
  LoadedConfig loaded = MustLoad(Inputs("enable_envvars_config=true\nallowed_urls=file://.*", env));
  EXPECT_EQ(loaded.config.allowed_urls, std::vector<std::string>{"file://.*"});
  ASSERT_EQ(loaded.warnings.size(), 1u);
  EXPECT_EQ(loaded.warnings[0],
            "environment TS_ALLOWED_URLS ignored: set use_env_allowed_urls=true in "
            "config.properties to allow it");

  loaded = MustLoad(Inputs("enable_envvars_config=true\nuse_env_allowed_urls=true", env));
  EXPECT_EQ(loaded.config.allowed_urls, std::vector<std::string>{"https://evil/.*"});
  EXPECT_TRUE(loaded.warnings.empty());
}

// --- $$VAR$$ -----------------------------------------------------------------------------

TEST(ServerConfigTest, FileValuesExpandEnvironmentReferences) {
  ServerConfig c = MustLoad(Inputs("model_store=$$HOME$$/models\n"
                                   "inference_address=http://127.0.0.1:$$PORT$$\n",
                                   {{"HOME", "/home/me"}, {"PORT", "18080"}}))
                       .config;
  EXPECT_EQ(c.model_store, "/home/me/models");
  EXPECT_EQ(c.inference_address.port, 18080);
}

TEST(ServerConfigTest, EnvironmentAndCliValuesAreNotExpanded) {
  ServerConfig c = MustLoad(Inputs("enable_envvars_config=true",
                                   {{"TS_MODEL_STORE", "$$HOME$$"}, {"HOME", "/h"}},
                                   {{"load_models", "$$HOME$$"}}))
                       .config;
  EXPECT_EQ(c.model_store, "$$HOME$$");
  EXPECT_EQ(c.load_models, std::vector<std::string>{"$$HOME$$"});
}

TEST(ServerConfigTest, UnsetVariableIsAnError) {
  EXPECT_EQ(LoadErrorText("# store\nmodel_store=$$NOPE$$/models\n"),
            "invalid value \"$$NOPE$$/models\" for model_store: environment variable NOPE is not "
            "set (config.properties line 2)");
}

TEST(ServerConfigTest, OverriddenFileValueIsNotExpanded) {
  ServerConfig c = MustLoad(Inputs("model_store=$$NOPE$$", {}, {{"model_store", "/cli"}})).config;
  EXPECT_EQ(c.model_store, "/cli");
}

// --- invalid values ----------------------------------------------------------------------

TEST(ServerConfigTest, InvalidMetricsModeMessage) {
  EXPECT_EQ(LoadErrorText("a=1\nb=2\nc=3\nd=4\ne=5\nf=6\nmetrics_mode=fast\n"),
            "invalid value \"fast\" for metrics_mode: expected one of prometheus, log, legacy "
            "(config.properties line 7)");
}

TEST(ServerConfigTest, InvalidIntegerMessage) {
  EXPECT_EQ(LoadErrorText("job_queue_size=0"),
            "invalid value \"0\" for job_queue_size: expected an integer from 1 to 1000000 "
            "(config.properties line 1)");
  EXPECT_EQ(LoadErrorText("metric_time_interval=ten"),
            "invalid value \"ten\" for metric_time_interval: expected an integer from 1 to 86400 "
            "(config.properties line 1)");
}

TEST(ServerConfigTest, InvalidBoolMessage) {
  EXPECT_EQ(LoadErrorText("enable_metrics_api=yes"),
            "invalid value \"yes\" for enable_metrics_api: expected true or false "
            "(config.properties line 1)");
}

TEST(ServerConfigTest, InvalidAddressMessages) {
  EXPECT_EQ(LoadErrorText("inference_address=http://127.0.0.1"),
            "invalid value \"http://127.0.0.1\" for inference_address: missing port; expected "
            "http://HOST:PORT, e.g. http://127.0.0.1:8080 (config.properties line 1)");
  EXPECT_EQ(LoadErrorText("metrics_address=https://127.0.0.1:8443"),
            "invalid value \"https://127.0.0.1:8443\" for metrics_address: https is not supported "
            "yet (config.properties line 1)");
  EXPECT_EQ(LoadErrorText("management_address=ftp://127.0.0.1:21"),
            "invalid value \"ftp://127.0.0.1:21\" for management_address: unsupported scheme "
            "\"ftp\" (expected http or https) (config.properties line 1)");
}

TEST(ServerConfigTest, InvalidRegexMessage) {
  std::string m = LoadErrorText("allowed_urls=file://.*,(unclosed");
  EXPECT_EQ(m.rfind("invalid value \"file://.*,(unclosed\" for allowed_urls: regular expression "
                    "\"(unclosed\" does not compile: ",
                    0),
            0u)
      << m;
  EXPECT_TRUE(m.ends_with(" (config.properties line 1)")) << m;
}

TEST(ServerConfigTest, MessageNamesTheSourceOfTheValue) {
  EXPECT_EQ(
      LoadError(Inputs("", {{"TS_ENABLE_ENVVARS_CONFIG", "true"}, {"TS_METRICS_MODE", "fast"}})),
      "invalid value \"fast\" for metrics_mode: expected one of prometheus, log, legacy "
      "(environment TS_METRICS_MODE)");
  EXPECT_EQ(LoadError(Inputs("", {{"TS_ENABLE_ENVVARS_CONFIG", "maybe"}})),
            "invalid value \"maybe\" for enable_envvars_config: expected true or false "
            "(environment TS_ENABLE_ENVVARS_CONFIG)");
  EXPECT_EQ(LoadError(Inputs("", {}, {{"load_models", "=a.mar"}})),
            "invalid value \"=a.mar\" for load_models: entry \"=a.mar\" needs a model name before "
            "'=' and a file after it (command line)");
}

TEST(ServerConfigTest, MessageUsesTheBaseNameOfTheConfigPath) {
  ConfigInputs in = Inputs("job_queue_size=x");
  in.properties_path = "/opt/conf/my.properties";
  EXPECT_EQ(LoadError(in),
            "invalid value \"x\" for job_queue_size: expected an integer from 1 to 1000000 "
            "(my.properties line 1)");
  in.properties_path = "";
  EXPECT_TRUE(LoadError(in).ends_with("(config.properties line 1)"));
}

TEST(ServerConfigTest, ControlCharactersInValuesAreEscapedInMessages) {
  EXPECT_EQ(LoadErrorText("metrics_mode=fa\\nst\"x"),
            "invalid value \"fa\\nst\\\"x\" for metrics_mode: expected one of prometheus, log, "
            "legacy (config.properties line 1)");
}

TEST(ServerConfigTest, SecretValuesAreNotEchoed) {
  EXPECT_EQ(LoadErrorText("metrics_token=has space"),
            "invalid value (hidden) for metrics_token: expected printable ASCII characters "
            "without spaces (config.properties line 1)");
}

TEST(ServerConfigTest, PropertiesSyntaxErrorIsReported) {
  EXPECT_EQ(LoadErrorText("a=1\nmodel_store=\\u12g4\n"),
            "cannot parse config.properties: malformed \\uXXXX escape \"\\u12g4\" on line 2");
}

struct BadValue {
  const char* key;
  const char* value;
};

TEST(ServerConfigTest, EveryKindOfInvalidValueIsRejected) {
  const BadValue kBad[] = {
      {"inference_address", ""},
      {"inference_address", "http://127.0.0.1:0"},
      {"inference_address", "http://127.0.0.1:65536"},
      {"inference_address", "http://127.0.0.1:80a"},
      {"inference_address", "http://127.0.0.1:8080/"},
      {"inference_address", "http://::1:8080"},
      {"inference_address", "unix:/tmp/ts.sock"},
      {"management_address", "http://[::1:8081"},
      {"management_address", "http://[zz::1]:8081"},
      {"metrics_address", "http://256.0.0.1:8082"},
      {"metrics_address", "http://bad host:8082"},
      {"metrics_address", "http://:8082"},
      {"enable_metrics_api", "1"},
      {"disable_system_metrics", "on"},
      {"enable_model_api", ""},
      {"disable_token_authorization", "no"},
      {"enable_token_authorization", "yes"},
      {"enable_envvars_config", "enabled"},
      {"metrics_mode", ""},
      {"metrics_mode", "openmetrics"},
      {"metric_time_interval", "0"},
      {"metric_time_interval", "86401"},
      {"metric_time_interval", "1.5"},
      {"default_workers_per_model", "-1"},
      {"job_queue_size", ""},
      {"job_queue_size", "0x10"},
      {"max_request_size", "0"},
      {"max_request_size", "2147483648"},
      {"max_response_size", "1e6"},
      {"default_response_timeout", "0"},
      {"number_of_netty_threads", "-2"},
      {"http_idle_timeout", "0"},
      {"http_read_timeout", "+-5"},
      {"max_header_size", "0"},
      {"max_header_size", "99999999999999999999"},
      {"allowed_urls", ","},
      {"allowed_urls", "[a-"},
      {"load_models", "m="},
      {"use_env_allowed_urls", "perhaps"},
  };
  for (const BadValue& b : kBad) {
    std::string text = std::string(b.key) + "=" + b.value;
    StatusOr<LoadedConfig> r = LoadServerConfig(Inputs(text));
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << text;
    const std::string prefix = std::string("invalid value \"") + b.value + "\" for " + b.key + ": ";
    EXPECT_EQ(r.status().message().rfind(prefix, 0), 0u) << r.status().message();
    EXPECT_TRUE(r.status().message().ends_with("(config.properties line 1)"))
        << r.status().message();
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  }
}

// --- ParseListenAddress ------------------------------------------------------------------

TEST(ListenAddressTest, ParsesSchemeHostAndPort) {
  StatusOr<ListenAddress> a = ParseListenAddress("http://127.0.0.1:8080");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->scheme, "http");
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8080);
  EXPECT_EQ(a->original, "http://127.0.0.1:8080");
}

TEST(ListenAddressTest, Ipv6InBrackets) {
  StatusOr<ListenAddress> a = ParseListenAddress("http://[::1]:8080");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 8080);
  EXPECT_TRUE(a->IsLoopback());

  a = ParseListenAddress("https://[::]:8443");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->scheme, "https");
  EXPECT_EQ(a->host, "::");
  EXPECT_FALSE(a->IsLoopback());
}

TEST(ListenAddressTest, SchemeDefaultsToHttpAndIsCaseInsensitive) {
  StatusOr<ListenAddress> a = ParseListenAddress("0.0.0.0:9000");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->scheme, "http");
  EXPECT_EQ(a->host, "0.0.0.0");
  EXPECT_EQ(a->port, 9000);

  a = ParseListenAddress("HTTP://My-Host.example:80");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->scheme, "http");
  EXPECT_EQ(a->host, "My-Host.example");
}

TEST(ListenAddressTest, Errors) {
  auto error = [](const std::string& text) {
    StatusOr<ListenAddress> a = ParseListenAddress(text);
    EXPECT_FALSE(a.ok()) << text;
    return a.ok() ? std::string("<ok>") : a.status().message();
  };
  EXPECT_EQ(error("http://127.0.0.1"),
            "invalid listen address \"http://127.0.0.1\": missing port; expected "
            "http://HOST:PORT, e.g. http://127.0.0.1:8080");
  EXPECT_EQ(error("http://[::1]"),
            "invalid listen address \"http://[::1]\": missing port; expected http://HOST:PORT, "
            "e.g. http://127.0.0.1:8080");
  EXPECT_EQ(error("grpc://127.0.0.1:7070"),
            "invalid listen address \"grpc://127.0.0.1:7070\": unsupported scheme \"grpc\" "
            "(expected http or https)");
  EXPECT_EQ(error("http://::1:8080"),
            "invalid listen address \"http://::1:8080\": an IPv6 address needs brackets, e.g. "
            "http://[::1]:8080");
  EXPECT_EQ(error("http://127.0.0.1:99999"),
            "invalid listen address \"http://127.0.0.1:99999\": invalid port \"99999\" (expected "
            "1 to 65535)");
  EXPECT_EQ(error("http://127.0.0.1:"),
            "invalid listen address \"http://127.0.0.1:\": invalid port \"\" (expected 1 to "
            "65535)");
  EXPECT_EQ(error("http://[::1]x:80"),
            "invalid listen address \"http://[::1]x:80\": unexpected text \"x:80\" after the host");
  EXPECT_EQ(error("http://1.2.3:80"),
            "invalid listen address \"http://1.2.3:80\": invalid IPv4 address \"1.2.3\"");
  EXPECT_EQ(error("unix:/tmp/sock"),
            "invalid listen address \"unix:/tmp/sock\": unix domain sockets are not supported");
  error("");
  error("http://");
  error("http://127.0.0.1:+80");
  error("http://127.0.0.1:-80");
}

TEST(ListenAddressTest, IsLoopback) {
  auto loopback = [](const char* host) {
    ListenAddress a;
    a.host = host;
    return a.IsLoopback();
  };
  EXPECT_TRUE(loopback("127.0.0.1"));
  EXPECT_TRUE(loopback("127.1.2.3"));
  EXPECT_TRUE(loopback("127.255.255.255"));
  EXPECT_TRUE(loopback("::1"));
  EXPECT_TRUE(loopback("[::1]"));
  EXPECT_TRUE(loopback("0:0:0:0:0:0:0:1"));
  EXPECT_TRUE(loopback("::ffff:127.0.0.1"));
  EXPECT_TRUE(loopback("localhost"));
  EXPECT_TRUE(loopback("LocalHost"));
  EXPECT_FALSE(loopback("0.0.0.0"));
  EXPECT_FALSE(loopback("::"));
  EXPECT_FALSE(loopback("[::]"));
  EXPECT_FALSE(loopback("126.255.255.255"));
  EXPECT_FALSE(loopback("128.0.0.1"));
  EXPECT_FALSE(loopback("10.0.0.1"));
  EXPECT_FALSE(loopback("::ffff:10.0.0.1"));
  EXPECT_FALSE(loopback("example.com"));
  EXPECT_FALSE(loopback("localhost.example.com"));
  EXPECT_FALSE(loopback(""));
}

TEST(MetricsModeTest, Names) {
  EXPECT_STREQ(MetricsModeName(MetricsMode::kPrometheus), "prometheus");
  EXPECT_STREQ(MetricsModeName(MetricsMode::kLog), "log");
  EXPECT_STREQ(MetricsModeName(MetricsMode::kLegacy), "legacy");
}

// ---- models= (issue 8 #4) -------------------------------------------------------------

TEST(ServerConfigTest, ModelsKeyTorchServesDocumentedExample) {
  // docs/configuration.md of TorchServe, with a backslash continuation on every line.
  ServerConfig c = MustLoadText(
      "models={\\\n"
      "  \"noop\": {\\\n"
      "    \"1.0\": {\\\n"
      "        \"defaultVersion\": true,\\\n"
      "        \"marName\": \"noop.mar\",\\\n"
      "        \"minWorkers\": 1,\\\n"
      "        \"maxWorkers\": 1,\\\n"
      "        \"batchSize\": 4,\\\n"
      "        \"maxBatchDelay\": 100,\\\n"
      "        \"responseTimeout\": 120\\\n"
      "    }\\\n"
      "  },\\\n"
      "  \"vgg16\": {\"1.0\": {\"maxWorkers\": \"4\", \"startupTimeout\": 300}}\\\n"
      "}\n");
  ASSERT_EQ(c.models.size(), 2u);
  const ModelVersionSettings& noop = c.models.at("noop").at("1.0");
  EXPECT_TRUE(noop.default_version);
  EXPECT_EQ(noop.mar_name, "noop.mar");
  EXPECT_EQ(noop.min_workers, 1);
  EXPECT_EQ(noop.max_workers, 1);
  EXPECT_EQ(noop.batch_size, 4);
  EXPECT_EQ(noop.max_batch_delay_ms, 100);
  EXPECT_EQ(noop.response_timeout_s, 120);
  EXPECT_FALSE(noop.startup_timeout_s.has_value());
  const ModelVersionSettings& vgg = c.models.at("vgg16").at("1.0");
  EXPECT_EQ(vgg.max_workers, 4);  // a string holding an integer, as Gson reads it
  EXPECT_EQ(vgg.startup_timeout_s, 300);
  EXPECT_FALSE(vgg.min_workers.has_value());
  EXPECT_FALSE(vgg.default_version);
}

TEST(ServerConfigTest, ModelsKeyErrorsNameModelVersionAndField) {
  EXPECT_EQ(
      LoadError(Inputs("job_queue_size=5\nmodels={\"noop\": {\"1.0\": {\"minWorkers\": -1}}}")),
      "invalid value for models: model \"noop\" version \"1.0\": minWorkers must be an "
      "integer from 0 to 1000000, not -1 (config.properties line 2)");
  EXPECT_EQ(LoadError(Inputs("models={\"m\": {\"2\": {\"batchSize\": \"four\"}}}")),
            "invalid value for models: model \"m\" version \"2\": batchSize must be an integer "
            "from 1 to 2147483647, not \"four\" (config.properties line 1)");
  EXPECT_EQ(LoadError(Inputs("models={\"m\": {\"2\": {\"responseTimeout\": 1.5}}}")),
            "invalid value for models: model \"m\" version \"2\": responseTimeout must be an "
            "integer from 1 to 2147483647, not 1.5 (config.properties line 1)");
  EXPECT_EQ(LoadError(Inputs("models={\"m\": {\"2\": {\"minWorkers\": 3, \"maxWorkers\": 2}}}")),
            "invalid value for models: model \"m\" version \"2\": maxWorkers (2) must be at least "
            "minWorkers (3) (config.properties line 1)");
  EXPECT_EQ(LoadError(Inputs("models={\"m\": {\"1\": {\"defaultVersion\": true}, "
                             "\"2\": {\"defaultVersion\": true}}}")),
            "invalid value for models: model \"m\": defaultVersion is true for versions \"1\" "
            "and \"2\"; at most one can be the default (config.properties line 1)");
  EXPECT_EQ(LoadError(Inputs("models={\"m\": {\"1\": {\"defaultVersion\": 3}}}")),
            "invalid value for models: model \"m\" version \"1\": defaultVersion must be true or "
            "false, not 3 (config.properties line 1)");
  EXPECT_EQ(LoadError(Inputs("models=[1]")),
            "invalid value for models: expected a JSON object {\"model\": {\"version\": "
            "{\"minWorkers\": 1, ...}}} (config.properties line 1)");
  EXPECT_EQ(LoadError(Inputs("models={\"m\": 1}")),
            "invalid value for models: model \"m\": expected an object of versions, e.g. "
            "{\"1.0\": {\"minWorkers\": 1}} (config.properties line 1)");
  EXPECT_NE(LoadError(Inputs("models={\"m\": ")).find("malformed JSON"), std::string::npos);
  // The depth limit of every outside JSON (issue 7 #1): refused, not a crash.
  EXPECT_NE(LoadError(Inputs("models=" + std::string(100000, '[') + std::string(100000, ']')))
                .find("nested deeper"),
            std::string::npos);
}

TEST(ServerConfigTest, ModelsKeyUnusedFieldsAreWarnings) {
  LoadedConfig loaded = MustLoad(Inputs(
      "models={\"m\": {\"1.0\": {\"minWorkers\": 1, \"runtimeType\": \"python\", \"speed\": 9}}}"));
  ASSERT_EQ(loaded.warnings.size(), 2u);
  EXPECT_EQ(loaded.warnings[0],
            "models: model \"m\" version \"1.0\": runtimeType is not used by tserve; ignored "
            "(config.properties line 1)");
  EXPECT_EQ(loaded.warnings[1],
            "models: model \"m\" version \"1.0\": unknown field \"speed\" ignored "
            "(config.properties line 1)");
  EXPECT_EQ(loaded.config.models.at("m").at("1.0").min_workers, 1);
}

TEST(ServerConfigTest, ModelsKeyFromTheEnvironmentAndEmpty) {
  ServerConfig c = MustLoad(Inputs("enable_envvars_config=true\nmodels={\"a\": {\"1\": {}}}",
                                   {{"TS_MODELS", "{\"b\": {\"2\": {\"batchSize\": 8}}}"}}))
                       .config;
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models.at("b").at("2").batch_size, 8);
  EXPECT_TRUE(MustLoadText("models=").models.empty());
}

}  // namespace
}  // namespace tserve
