#include "serving/manifest.h"

#include <gtest/gtest.h>

#include <string>

namespace tserve::serving {
namespace {

constexpr char kSource[] = "MAR-INF/MANIFEST.json";

// The manifest torch-model-archiver 0.12 writes (SPEC §5).
constexpr char kTorchServeManifest[] = R"({
  "createdOn": "17/03/2025 11:20:57",
  "runtime": "python",
  "model": {
    "modelName": "resnet18",
    "serializedFile": "model.pt",
    "handler": "image_classifier",
    "modelVersion": "1.0",
    "configFile": "model-config.yaml"
  },
  "archiverVersion": "0.12.0"
})";

std::string ErrorOf(std::string_view json) {
  StatusOr<Manifest> m = ParseManifest(json, kSource);
  EXPECT_FALSE(m.ok()) << json;
  return m.ok() ? std::string() : m.status().message();
}

TEST(ManifestTest, ParsesTorchModelArchiverManifest) {
  StatusOr<Manifest> m = ParseManifest(kTorchServeManifest, kSource);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->created_on, "17/03/2025 11:20:57");
  EXPECT_EQ(m->runtime, "python");
  EXPECT_EQ(m->model_name, "resnet18");
  EXPECT_EQ(m->serialized_file, "model.pt");
  EXPECT_EQ(m->handler, "image_classifier");
  EXPECT_EQ(m->model_version, "1.0");
  EXPECT_EQ(m->config_file, "model-config.yaml");
  EXPECT_EQ(m->requirements_file, "");
  EXPECT_EQ(m->description, "");
  EXPECT_EQ(m->archiver_version, "0.12.0");
}

TEST(ManifestTest, DefaultsVersionAndRuntimeWhenAbsent) {
  StatusOr<Manifest> m =
      ParseManifest(R"({"model": {"modelName": "m", "handler": "noop"}})", kSource);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->model_version, "1.0");
  EXPECT_EQ(m->runtime, "python");
  EXPECT_EQ(m->serialized_file, "");
  EXPECT_EQ(m->created_on, "");
}

TEST(ManifestTest, AcceptsNumericModelVersionAsText) {
  StatusOr<Manifest> m = ParseManifest(
      R"({"model": {"modelName": "m", "handler": "noop", "modelVersion": 2.5}})", kSource);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->model_version, "2.5");
}

TEST(ManifestTest, ReadsDescriptionAtTopLevelOrUnderModel) {
  StatusOr<Manifest> top = ParseManifest(
      R"({"description": "top", "model": {"modelName": "m", "handler": "noop"}})", kSource);
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(top->description, "top");
  StatusOr<Manifest> both = ParseManifest(
      R"({"description": "top",
          "model": {"modelName": "m", "handler": "noop", "description": "inner"}})",
      kSource);
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->description, "inner");
}

TEST(ManifestTest, IgnoresUnknownKeys) {
  StatusOr<Manifest> m = ParseManifest(R"({
    "runtime": "python3", "publisher": {"author": "x"},
    "model": {"modelName": "m", "handler": "h.so", "modelFile": "model.py",
              "extensions": "", "requirementsFile": "requirements.txt"}})",
                                       kSource);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->runtime, "python3");
  EXPECT_EQ(m->handler, "h.so");
  EXPECT_EQ(m->requirements_file, "requirements.txt");
}

TEST(ManifestTest, NullOptionalKeysCountAsAbsent) {
  StatusOr<Manifest> m = ParseManifest(
      R"({"createdOn": null, "model": {"modelName": "m", "handler": "noop",
          "serializedFile": null, "modelVersion": null}})",
      kSource);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->serialized_file, "");
  EXPECT_EQ(m->model_version, "1.0");
}

TEST(ManifestTest, InvalidJsonNamesTheSourceAndThePosition) {
  std::string e = ErrorOf("{\"model\": {\"modelName\": \"m\",\n \"handler\" \"noop\"}}");
  EXPECT_EQ(e.rfind("MAR-INF/MANIFEST.json: invalid JSON: ", 0), 0u) << e;
  EXPECT_NE(e.find("line 2, column"), std::string::npos) << e;
  EXPECT_EQ(e.find("[json.exception"), std::string::npos) << e;
}

TEST(ManifestTest, DeeplyNestedManifestIsAnErrorNotACrash) {
  // An archive from a registration is outside input: 200,000 levels would overflow the
  // stack when the document is walked or freed recursively.
  std::string deep = "{\"model\": " + std::string(200000, '[') + std::string(200000, ']') + "}";
  std::string e = ErrorOf(deep);
  EXPECT_EQ(e.rfind("MAR-INF/MANIFEST.json: invalid JSON: ", 0), 0u) << e;
  EXPECT_NE(e.find("nested deeper than 64"), std::string::npos) << e;
}

TEST(ManifestTest, EmptyTextIsInvalidJson) {
  std::string e = ErrorOf("");
  EXPECT_EQ(e.rfind("MAR-INF/MANIFEST.json: invalid JSON: ", 0), 0u) << e;
}

TEST(ManifestTest, DocumentMustBeAnObject) {
  EXPECT_EQ(ErrorOf("[1, 2]"), "MAR-INF/MANIFEST.json: must be a JSON object, got an array");
}

TEST(ManifestTest, ModelObjectIsRequired) {
  EXPECT_EQ(ErrorOf(R"({"runtime": "python"})"), "MAR-INF/MANIFEST.json: missing \"model\" object");
  EXPECT_EQ(ErrorOf(R"({"model": "resnet18"})"),
            "MAR-INF/MANIFEST.json: model must be an object, got a string");
}

TEST(ManifestTest, ModelNameIsRequired) {
  EXPECT_EQ(ErrorOf(R"({"model": {"handler": "noop"}})"),
            "MAR-INF/MANIFEST.json: missing model.modelName");
  EXPECT_EQ(ErrorOf(R"({"model": {"modelName": "", "handler": "noop"}})"),
            "MAR-INF/MANIFEST.json: model.modelName must not be empty");
}

TEST(ManifestTest, HandlerIsRequired) {
  EXPECT_EQ(ErrorOf(R"({"model": {"modelName": "m"}})"),
            "MAR-INF/MANIFEST.json: missing model.handler");
  EXPECT_EQ(ErrorOf(R"({"model": {"modelName": "m", "handler": ""}})"),
            "MAR-INF/MANIFEST.json: model.handler must not be empty");
}

TEST(ManifestTest, WrongTypesAreNamed) {
  EXPECT_EQ(ErrorOf(R"({"model": {"modelName": 7, "handler": "noop"}})"),
            "MAR-INF/MANIFEST.json: model.modelName must be a string, got a number");
  EXPECT_EQ(ErrorOf(R"({"model": {"modelName": "m", "handler": ["a"]}})"),
            "MAR-INF/MANIFEST.json: model.handler must be a string, got an array");
  EXPECT_EQ(ErrorOf(R"({"model": {"modelName": "m", "handler": "h", "serializedFile": true}})"),
            "MAR-INF/MANIFEST.json: model.serializedFile must be a string, got a boolean");
  EXPECT_EQ(ErrorOf(R"({"model": {"modelName": "m", "handler": "h", "modelVersion": {}}})"),
            "MAR-INF/MANIFEST.json: model.modelVersion must be a string, got an object");
  EXPECT_EQ(ErrorOf(R"({"runtime": 3, "model": {"modelName": "m", "handler": "h"}})"),
            "MAR-INF/MANIFEST.json: runtime must be a string, got a number");
  EXPECT_EQ(ErrorOf(R"({"model": {"modelName": "m", "handler": "h", "configFile": 1}})"),
            "MAR-INF/MANIFEST.json: model.configFile must be a string, got a number");
}

TEST(ManifestTest, ErrorsNameTheGivenSource) {
  StatusOr<Manifest> m = ParseManifest("{}", "resnet18.mar: MAR-INF/MANIFEST.json");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "resnet18.mar: MAR-INF/MANIFEST.json: missing \"model\" object");
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
}

TEST(ManifestTest, ToJsonWritesTorchModelArchiverLayout) {
  Manifest m;
  m.created_on = "17/03/2025 11:20:57";
  m.model_name = "resnet18";
  m.serialized_file = "model.pt";
  m.handler = "image_classifier";
  m.model_version = "1.0";
  m.config_file = "model-config.yaml";
  m.archiver_version = "0.12.0";
  EXPECT_EQ(ManifestToJson(m), kTorchServeManifest);
}

TEST(ManifestTest, ToJsonKeyOrderWithEveryKey) {
  Manifest m;
  m.created_on = "01/01/2025 00:00:00";
  m.runtime = "python3";
  m.model_name = "m";
  m.serialized_file = "m.pt";
  m.handler = "noop";
  m.model_version = "2.0";
  m.requirements_file = "requirements.txt";
  m.config_file = "model-config.yaml";
  m.description = "d";
  m.archiver_version = "0.12.0";
  EXPECT_EQ(ManifestToJson(m), R"({
  "createdOn": "01/01/2025 00:00:00",
  "runtime": "python3",
  "model": {
    "modelName": "m",
    "serializedFile": "m.pt",
    "handler": "noop",
    "modelVersion": "2.0",
    "requirementsFile": "requirements.txt",
    "configFile": "model-config.yaml",
    "description": "d"
  },
  "archiverVersion": "0.12.0"
})");
}

TEST(ManifestTest, ToJsonOmitsEmptyOptionalKeys) {
  Manifest m;
  m.model_name = "m";
  m.handler = "noop";
  EXPECT_EQ(ManifestToJson(m), R"({
  "runtime": "python",
  "model": {
    "modelName": "m",
    "handler": "noop"
  }
})");
}

TEST(ManifestTest, ToJsonEscapesLikePython) {
  Manifest m;
  m.model_name = "m";
  m.handler = "noop";
  m.description = "caf\xc3\xa9 \"q\"";
  std::string json = ManifestToJson(m);
  EXPECT_NE(json.find(R"("description": "caf\u00e9 \"q\"")"), std::string::npos) << json;
}

TEST(ManifestTest, RoundTrip) {
  Manifest m;
  m.created_on = "17/03/2025 11:20:57";
  m.runtime = "python";
  m.model_name = "resnet-18.v2";
  m.serialized_file = "weights/model.pt";
  m.handler = "libmy_handler.so";
  m.model_version = "3.1";
  m.requirements_file = "requirements.txt";
  m.config_file = "model-config.yaml";
  m.description = "caf\xc3\xa9\nline two";
  m.archiver_version = "0.12.0";
  StatusOr<Manifest> back = ParseManifest(ManifestToJson(m), kSource);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, m);

  StatusOr<Manifest> ts = ParseManifest(kTorchServeManifest, kSource);
  ASSERT_TRUE(ts.ok());
  EXPECT_EQ(ManifestToJson(*ts), kTorchServeManifest);
}

}  // namespace
}  // namespace tserve::serving
