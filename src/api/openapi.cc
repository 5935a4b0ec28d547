#include "api/openapi.h"

#include <nlohmann/json.hpp>

namespace tserve::api {

namespace {

using Json = nlohmann::ordered_json;

// TorchServe's error body schema {"code","type","message"}.
Json ErrorContent() {
  Json schema;
  schema["type"] = "object";
  schema["required"] = {"code", "type", "message"};
  schema["properties"] = {{"code", {{"type", "integer"}, {"description", "Error code."}}},
                          {"type", {{"type", "string"}, {"description", "Error type."}}},
                          {"message", {{"type", "string"}, {"description", "Error message."}}}};
  return {{"application/json", {{"schema", schema}}}};
}

Json Operation(const std::string& id, const std::string& description) {
  Json o;
  o["operationId"] = id;
  o["description"] = description;
  o["responses"]["200"] = {{"description", "OK"}};
  o["responses"]["500"] = {{"description", "Internal Server Error"}, {"content", ErrorContent()}};
  return o;
}

Json Document(const std::string& title, const std::string& version) {
  Json j;
  j["openapi"] = "3.0.1";
  j["info"] = {{"title", title}, {"version", version}};
  j["paths"] = Json::object();
  return j;
}

}  // namespace

std::string ModelOpenApi(const std::string& model_name) {
  Json j = Document("RESTful API for: " + model_name, "1.0.0");
  j["paths"]["/predictions/" + model_name]["post"] =
      Operation(model_name, "A predict entry point for model: " + model_name + ".");
  return j.dump(2);
}

std::string ModelManagementOpenApi(const std::string& model_name) {
  Json j = Document("RESTful Management API for: " + model_name, "0.12.0");
  for (const char* path : {"/models/{model_name}", "/models/{model_name}/{model_version}"}) {
    Json& p = j["paths"][path];
    p["get"] = Operation("describeModel", "Describe " + model_name + " (a version of it).");
    p["put"] = Operation("setAutoScale", "Scale the workers of " + model_name + ".");
    p["delete"] = Operation("unregisterModel", "Unregister " + model_name + " (a version of it).");
  }
  j["paths"]["/models/{model_name}/{model_version}/set-default"]["put"] =
      Operation("setDefault", "Make a version the default of " + model_name + ".");
  return j.dump(2);
}

}  // namespace tserve::api
