#include "serving/manifest.h"

#include <nlohmann/json.hpp>

#include <string>
#include <utility>

#include "common/json_limits.h"

namespace tserve::serving {

namespace {

using Json = nlohmann::json;

std::string TypeName(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::object:
      return "an object";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return "a number";
    default:
      return "an unsupported value";
  }
}

class Reader {
 public:
  explicit Reader(std::string_view source) : source_(source) {}

  Status Error(std::string_view what) const {
    std::string m(source_);
    m.append(": ").append(what);
    return Status::InvalidArgument(std::move(m));
  }

  // Reads obj[key] into *out when present. `label` is the key's dotted path for messages.
  Status OptionalString(const Json& obj, const char* key, std::string_view label,
                        std::string* out) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return Status::Ok();
    if (!it->is_string()) {
      return Error(std::string(label) + " must be a string, got " + TypeName(*it));
    }
    *out = it->get<std::string>();
    return Status::Ok();
  }

  Status RequiredString(const Json& obj, const char* key, std::string_view label,
                        std::string* out) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return Error("missing " + std::string(label));
    if (!it->is_string()) {
      return Error(std::string(label) + " must be a string, got " + TypeName(*it));
    }
    *out = it->get<std::string>();
    if (out->empty()) return Error(std::string(label) + " must not be empty");
    return Status::Ok();
  }

 private:
  std::string_view source_;
};

}  // namespace

StatusOr<Manifest> ParseManifest(std::string_view json, std::string_view source) {
  Reader r(source);
  // An archive comes from outside (registration): its manifest's depth is limited while
  // parsing, as every JSON from outside.
  StatusOr<Json> parsed = ParseJsonLimited(json);
  if (!parsed.ok()) {
    std::string_view why = parsed.status().message();
    constexpr std::string_view kMalformed = "malformed JSON: ";
    if (why.substr(0, kMalformed.size()) == kMalformed) why.remove_prefix(kMalformed.size());
    return r.Error("invalid JSON: " + std::string(why));
  }
  Json doc = std::move(*parsed);
  if (!doc.is_object()) return r.Error("must be a JSON object, got " + TypeName(doc));

  auto model_it = doc.find("model");
  if (model_it == doc.end() || model_it->is_null()) return r.Error("missing \"model\" object");
  if (!model_it->is_object()) {
    return r.Error("model must be an object, got " + TypeName(*model_it));
  }
  const Json& model = *model_it;

  Manifest m;
  std::string runtime;
  std::string model_description;
  struct Field {
    const Json& obj;
    const char* key;
    const char* label;
    std::string* out;
    bool required;
  };
  const Field fields[] = {
      {model, "modelName", "model.modelName", &m.model_name, true},
      {model, "handler", "model.handler", &m.handler, true},
      {model, "serializedFile", "model.serializedFile", &m.serialized_file, false},
      {model, "configFile", "model.configFile", &m.config_file, false},
      {model, "requirementsFile", "model.requirementsFile", &m.requirements_file, false},
      {model, "description", "model.description", &model_description, false},
      {doc, "createdOn", "createdOn", &m.created_on, false},
      {doc, "runtime", "runtime", &runtime, false},
      {doc, "archiverVersion", "archiverVersion", &m.archiver_version, false},
      {doc, "description", "description", &m.description, false},
  };
  for (const Field& f : fields) {
    Status s = f.required ? r.RequiredString(f.obj, f.key, f.label, f.out)
                          : r.OptionalString(f.obj, f.key, f.label, f.out);
    if (!s.ok()) return s;
  }
  if (!runtime.empty()) m.runtime = runtime;
  if (!model_description.empty()) m.description = model_description;

  // Hand-written manifests say "modelVersion": 1.0; Gson reads that as "1.0", so do we.
  auto version_it = model.find("modelVersion");
  if (version_it != model.end() && !version_it->is_null()) {
    if (version_it->is_string()) {
      m.model_version = version_it->get<std::string>();
    } else if (version_it->is_number()) {
      m.model_version = version_it->dump();
    } else {
      return r.Error("model.modelVersion must be a string, got " + TypeName(*version_it));
    }
  }
  if (m.model_version.empty()) m.model_version = std::string(kDefaultModelVersion);
  return m;
}

std::string ManifestToJson(const Manifest& m) {
  nlohmann::ordered_json model;
  model["modelName"] = m.model_name;
  if (!m.serialized_file.empty()) model["serializedFile"] = m.serialized_file;
  model["handler"] = m.handler;
  if (!m.model_version.empty()) model["modelVersion"] = m.model_version;
  if (!m.requirements_file.empty()) model["requirementsFile"] = m.requirements_file;
  if (!m.config_file.empty()) model["configFile"] = m.config_file;
  if (!m.description.empty()) model["description"] = m.description;

  nlohmann::ordered_json doc;
  if (!m.created_on.empty()) doc["createdOn"] = m.created_on;
  doc["runtime"] = m.runtime.empty() ? std::string("python") : m.runtime;
  doc["model"] = std::move(model);
  if (!m.archiver_version.empty()) doc["archiverVersion"] = m.archiver_version;
  // ensure_ascii matches Python's json.dumps default; invalid UTF-8 is replaced, not thrown.
  return doc.dump(2, ' ', true, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace tserve::serving
