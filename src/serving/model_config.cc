#include "serving/model_config.h"

#include <yaml-cpp/yaml.h>

#include <climits>
#include <set>
#include <string>

#include "common/strings.h"

namespace tserve::serving {

namespace {

class Parser {
 public:
  explicit Parser(std::string_view source) : source_(source) {}

  // "<source>:<line>: <what>"; line is 1-based, omitted when unknown.
  Status Error(int line0, const std::string& what) const {
    // Built by appends: GCC 12 gives a false -Wrestrict on `a + ":" + b`.
    std::string m(source_);
    if (line0 >= 0) m.append(":").append(std::to_string(line0 + 1));
    m.append(": ").append(what);
    return Status::InvalidArgument(std::move(m));
  }

  // Reads an integer in [min, INT_MAX]. `rule` is the key's constraint for the message.
  Status Int(const std::string& key, const YAML::Node& value, int line0, int min,
             std::optional<int>* out) const {
    std::string rule = key + " must be an integer ≥ " + std::to_string(min) + ", got ";
    if (!value.IsScalar()) return Error(line0, rule + Describe(value));
    // A quoted "4" is accepted too: the intent is plain, and handlers see the same text.
    std::optional<int64_t> v = ParseInt64(value.Scalar());
    if (!v || *v < min || *v > INT_MAX) return Error(line0, rule + Quoted(value.Scalar()));
    *out = static_cast<int>(*v);
    return Status::Ok();
  }

  Status DeviceType(const YAML::Node& value, int line0, std::string* out) const {
    if (!value.IsScalar())
      return Error(line0, "deviceType must be cpu or gpu, got " + Describe(value));
    std::string v = ToLower(TrimWhitespace(value.Scalar()));
    if (v == "cpu" || v == "gpu") {
      *out = v;
      return Status::Ok();
    }
    if (v == "neuron") {
      return Error(line0, "deviceType neuron is not supported by tserve (use cpu or gpu)");
    }
    return Error(line0, "deviceType must be cpu or gpu, got " + Quoted(value.Scalar()));
  }

 private:
  static std::string Describe(const YAML::Node& n) {
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a map";
    return "nothing";  // null: `batchSize:` with no value
  }

  std::string_view source_;
};

int LineOf(const YAML::Node& node) { return node.Mark().line; }

}  // namespace

StatusOr<ModelConfig> ParseModelConfig(std::string_view yaml, std::string_view source) {
  Parser p(source);
  YAML::Node doc;
  try {
    doc = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return p.Error(e.mark.line, "invalid YAML: " + e.msg);
  }

  ModelConfig config;
  if (doc.IsNull()) return config;
  if (!doc.IsMap()) return p.Error(LineOf(doc), "must be a map of keys (minWorkers: 1, ...)");

  int max_workers_line = -1;
  std::set<std::string> seen;
  try {
    for (const auto& kv : doc) {
      const YAML::Node& key_node = kv.first;
      const YAML::Node& value = kv.second;
      int line = LineOf(key_node);
      if (!key_node.IsScalar()) return p.Error(line, "keys must be plain names");
      const std::string& key = key_node.Scalar();
      if (!seen.insert(key).second) return p.Error(line, "duplicate key " + key);
      if (value.IsScalar()) config.scalars[key] = value.Scalar();

      Status s;
      if (key == "minWorkers") {
        s = p.Int(key, value, line, 0, &config.min_workers);
      } else if (key == "maxWorkers") {
        s = p.Int(key, value, line, 0, &config.max_workers);
        max_workers_line = line;
      } else if (key == "batchSize") {
        s = p.Int(key, value, line, 1, &config.batch_size);
      } else if (key == "maxBatchDelay") {
        s = p.Int(key, value, line, 0, &config.max_batch_delay_ms);
      } else if (key == "responseTimeout") {
        s = p.Int(key, value, line, 1, &config.response_timeout_s);
      } else if (key == "startupTimeout") {
        s = p.Int(key, value, line, 1, &config.startup_timeout_s);
      } else if (key == "deviceType") {
        s = p.DeviceType(value, line, &config.device_type);
      }
      if (!s.ok()) return s;
    }
  } catch (const YAML::Exception& e) {
    return p.Error(e.mark.line, "invalid YAML: " + e.msg);
  }

  if (config.min_workers && config.max_workers && *config.max_workers < *config.min_workers) {
    return p.Error(max_workers_line, "maxWorkers (" + std::to_string(*config.max_workers) +
                                         ") must be ≥ minWorkers (" +
                                         std::to_string(*config.min_workers) + ")");
  }
  return config;
}

}  // namespace tserve::serving
