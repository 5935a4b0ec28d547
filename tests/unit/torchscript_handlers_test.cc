// The LibTorch handlers (backend/torchscript_handlers.h) on small committed TorchScript
// fixtures. Expected values come from `/usr/bin/python3 scripts/make_test_fixtures.py
// --print-expected` (PIL + torchvision + torch on the same files):
//   models/linear.pt                nn.Linear(4, 2), weight [[1, 2, 3, 4], [-1, .5, 0, 2]],
//                                   bias [.5, -1]: outputs checkable by hand
//   models/tiny_classifier/         adaptive-avg-pool 4x4 + Linear(48, 10) with seeded
//                                   weights, labels "zero".."nine" in TorchServe's
//                                   {"0": ["n00", "zero"]} format
// The classifier's expected bodies are what TorchServe's image_classifier answers for the
// same model and images (json.dumps(indent=2) of its top-5 dict), byte for byte.

#include "backend/torchscript_handlers.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/torch_extensions.h"

namespace tserve::backend {
namespace {

const std::string kFixtures = TSERVE_FIXTURES_DIR;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

ModelContext Context(const std::string& model_dir, const std::string& serialized_file) {
  ModelContext context;
  context.model_name = "test";
  context.model_version = "1.0";
  context.model_dir = model_dir;
  context.serialized_file = serialized_file;
  return context;
}

// Runs the three phases on bodies held by the caller (requests point into them).
std::vector<InferenceResponse> RunBatch(Handler& handler, const std::vector<std::string>& bodies) {
  Batch batch;
  for (const std::string& body : bodies) {
    batch.requests.push_back(InferenceRequest{"id", "application/octet-stream", body});
  }
  handler.Preprocess(batch);
  handler.Inference(batch);
  handler.Postprocess(batch);
  EXPECT_EQ(batch.responses.size(), bodies.size());
  return batch.responses;
}

std::unique_ptr<Handler> LinearHandler() {
  std::unique_ptr<Handler> handler = MakeTensorHandler();
  handler->Initialize(Context(kFixtures + "/models", kFixtures + "/models/linear.pt"));
  return handler;
}

constexpr const char* kBadRequestPrefix =
    "{\n  \"code\": 400,\n  \"type\": \"BadRequestException\",\n  \"message\": \"";

// ---- registration -----------------------------------------------------------------------

TEST(TorchHandlersTest, MakesEachHandlerTheModuleProvides) {
  for (const char* name : kTorchHandlerNames) EXPECT_NE(MakeTorchHandler(name), nullptr) << name;
  EXPECT_EQ(MakeTorchHandler("noop"), nullptr);
  EXPECT_EQ(MakeTorchHandler(""), nullptr);
  std::unique_ptr<Handler> handler = MakeTorchHandler("tensor");
  ASSERT_NE(handler, nullptr);
  handler->Initialize(Context(kFixtures + "/models", kFixtures + "/models/linear.pt"));
  EXPECT_EQ(RunBatch(*handler, {"[1, 2, 3, 4]"})[0].body, "[30.5,7.0]");
}

// ---- tensor -----------------------------------------------------------------------------

TEST(TensorHandlerTest, OneRequest) {
  auto handler = LinearHandler();
  const auto responses = RunBatch(*handler, {"[1, 2, 3, 4]"});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].content_type, "application/json");
  EXPECT_EQ(responses[0].body, "[30.5,7.0]");
}

TEST(TensorHandlerTest, BatchOfThreeIsStackedAndSplit) {
  auto handler = LinearHandler();
  const auto responses =
      RunBatch(*handler, {"[1, 2, 3, 4]", "{\"data\": [0, 0, 0, 0]}", "[0.5, -1, 2, 0.25]"});
  for (const auto& r : responses) EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(responses[0].body, "[30.5,7.0]");
  EXPECT_EQ(responses[1].body, "[0.5,-1.0]");
  EXPECT_EQ(responses[2].body, "[6.0,-1.5]");
}

TEST(TensorHandlerTest, BadJsonFailsOnlyItsRequest) {
  auto handler = LinearHandler();
  const auto responses = RunBatch(*handler, {"[1, 2, 3, 4]", "[1, 2,", "[0, 0, 0, 0]"});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].body, "[30.5,7.0]");
  EXPECT_EQ(responses[1].status, 400);
  EXPECT_EQ(responses[1].content_type, "application/json");
  EXPECT_EQ(responses[1].body.rfind(std::string(kBadRequestPrefix) + "invalid JSON: ", 0), 0u)
      << responses[1].body;
  EXPECT_EQ(responses[1].body.back(), '\n');
  EXPECT_EQ(responses[2].status, 200);
  EXPECT_EQ(responses[2].body, "[0.5,-1.0]");
}

TEST(TensorHandlerTest, MalformedTensorsAre400) {
  auto handler = LinearHandler();
  const auto responses = RunBatch(*handler, {"[[1, 2], [3]]", "[1, \"a\", 3, 4]", "{\"x\": 1}",
                                             "[true, 1, 2, 3]", "[1, 2, 3, 4]"});
  EXPECT_EQ(responses[0].status, 400);
  EXPECT_NE(responses[0].body.find("ragged lists: expected a list of 2 at depth 1"),
            std::string::npos)
      << responses[0].body;
  EXPECT_EQ(responses[1].status, 400);
  EXPECT_NE(responses[1].body.find("expected a number, got string"), std::string::npos);
  EXPECT_EQ(responses[2].status, 400);
  EXPECT_NE(responses[2].body.find("{\\\"data\\\": \\u003cnested lists\\u003e}"), std::string::npos)
      << responses[2].body;
  EXPECT_EQ(responses[3].status, 400);
  EXPECT_NE(responses[3].body.find("expected a number, got boolean"), std::string::npos);
  EXPECT_EQ(responses[4].status, 200);
  EXPECT_EQ(responses[4].body, "[30.5,7.0]");
}

TEST(TensorHandlerTest, AllRequestsRejectedRunsNoForward) {
  auto handler = LinearHandler();
  const auto responses = RunBatch(*handler, {"nope", ""});
  EXPECT_EQ(responses[0].status, 400);
  EXPECT_EQ(responses[1].status, 400);
}

TEST(TensorHandlerTest, DifferentShapesRunOneByOne) {
  auto handler = LinearHandler();
  // [1, 4] and [4]: each runs alone with its own batch dimension.
  const auto responses = RunBatch(*handler, {"[[1, 2, 3, 4], [0, 0, 0, 0]]", "[1, 2, 3, 4]"});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].body, "[[30.5,7.0],[0.5,-1.0]]");
  EXPECT_EQ(responses[1].status, 200);
  EXPECT_EQ(responses[1].body, "[30.5,7.0]");
}

TEST(TensorHandlerTest, ModelErrorIsTheRequests400WithAClearMessage) {
  auto handler = LinearHandler();
  const auto responses = RunBatch(*handler, {"[1, 2, 3]"});  // Linear(4, 2) needs 4 features
  EXPECT_EQ(responses[0].status, 400);
  // The exception raised in the TorchScript code, without its TorchScript tracebacks.
  EXPECT_EQ(responses[0].body,
            std::string(kBadRequestPrefix) +
                "the model cannot take this tensor (shape [3]): RuntimeError: "
                "mat1 and mat2 shapes cannot be multiplied (1x3 and 4x2)\"\n}\n");
}

// Issue 7 #6: one bad request failed every request of its batch.
TEST(TensorHandlerTest, OneBadShapeFailsOnlyItsRequest) {
  auto handler = LinearHandler();
  const auto responses =
      RunBatch(*handler, {"[1, 2, 3, 4]", "[1, 2, 3]", "[0, 0, 0, 0]", "[1, 2, 3, 4]"});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].body, "[30.5,7.0]");
  EXPECT_EQ(responses[1].status, 400);
  EXPECT_NE(responses[1].body.find("mat1 and mat2 shapes cannot be multiplied (1x3 and 4x2)"),
            std::string::npos)
      << responses[1].body;
  EXPECT_EQ(responses[2].status, 200);
  EXPECT_EQ(responses[2].body, "[0.5,-1.0]");
  EXPECT_EQ(responses[3].status, 200);
  EXPECT_EQ(responses[3].body, "[30.5,7.0]");
}

TEST(TensorHandlerTest, BadRequestsOfOneShapeFailAlone) {
  auto handler = LinearHandler();
  // Two [3]s stacked fail together; each is retried alone and fails alone.
  const auto responses = RunBatch(*handler, {"[1, 2, 3]", "[1, 2, 3, 4]", "[3, 2, 1]"});
  EXPECT_EQ(responses[0].status, 400);
  EXPECT_EQ(responses[1].status, 200);
  EXPECT_EQ(responses[1].body, "[30.5,7.0]");
  EXPECT_EQ(responses[2].status, 400);
}

// Issue 7 #6: a ragged body whose first elements claim 1.6e12 numbers made Preprocess
// reserve them (std::bad_alloc for the whole batch).
TEST(TensorHandlerTest, RaggedBodyClaimingAHugeShapeIsItsOwn400) {
  std::string ragged = "[[0";
  for (int i = 1; i < 1'000'000; ++i) ragged += ",0";
  ragged += "]";
  for (int i = 1; i < 1'600'000; ++i) ragged += ",0";
  ragged += "]";  // claims [1600000, 1000000]
  auto handler = LinearHandler();
  const auto responses = RunBatch(*handler, {"[1, 2, 3, 4]", ragged, "[0, 0, 0, 0]"});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].body, "[30.5,7.0]");
  EXPECT_EQ(responses[1].status, 400);
  EXPECT_EQ(responses[1].body,
            std::string(kBadRequestPrefix) +
                "invalid tensor: ragged lists: expected a list of 1000000 at depth 1, got "
                "number\"\n}\n");
  EXPECT_EQ(responses[2].status, 200);
}

TEST(TensorHandlerTest, ElementCountAndNestingAreLimited) {
  std::string many = "[0";
  for (int i = 0; i < (1 << 22); ++i) many += ",0";  // one more than the limit
  many += "]";
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  const std::string deep_aside =
      "{\"x\": " + std::string(100'000, '[') + std::string(100'000, ']') + ", \"data\": [1]}";
  auto handler = LinearHandler();
  const auto responses = RunBatch(*handler, {many, deep, deep_aside, "[1, 2, 3, 4]"});
  EXPECT_EQ(responses[0].status, 400);
  EXPECT_NE(responses[0].body.find("invalid tensor: more than 4194304 numbers"), std::string::npos)
      << responses[0].body.substr(0, 200);
  EXPECT_EQ(responses[1].status, 400);
  EXPECT_NE(responses[1].body.find("invalid tensor: lists nested deeper than 32"),
            std::string::npos)
      << responses[1].body;
  EXPECT_EQ(responses[2].status, 400);
  EXPECT_NE(responses[2].body.find("JSON nested deeper than 32"), std::string::npos)
      << responses[2].body;
  EXPECT_EQ(responses[3].status, 200);
}

TEST(TensorHandlerTest, DataMemberAmongOthers) {
  auto handler = LinearHandler();
  const auto responses = RunBatch(
      *handler, {R"({"id": [{"a": [1, "x"]}, null], "data": [1, 2, 3, 4], "t": true})",
                 R"({"data": [1, 2, 3, 4], "data": [1, 2, 3, 4]})", R"({"data": {"a": 1}})",
                 R"({"data": [[1, 2], [3]]})", "[[], [1]]", "[[1, 2], 3]", "[1, [2]]"});
  EXPECT_EQ(responses[0].status, 200) << responses[0].body;
  EXPECT_EQ(responses[0].body, "[30.5,7.0]");
  const char* expected[] = {
      "\\\"data\\\" given twice",
      "expected a number, got object at depth 0",
      "ragged lists: expected a list of 2 at depth 1, got a list of 1",
      "ragged lists: expected a list of 0 at depth 1, got a list of 1",
      "ragged lists: expected a list of 2 at depth 1, got number",
      "expected a number, got array at depth 1",
  };
  for (size_t i = 0; i < std::size(expected); ++i) {
    EXPECT_EQ(responses[i + 1].status, 400);
    EXPECT_NE(responses[i + 1].body.find(expected[i]), std::string::npos)
        << i << ": " << responses[i + 1].body;
  }
}

TEST(TensorHandlerTest, ScalarsAndEmptyListsKeepTheirShapes) {
  auto handler = MakeTensorHandler();
  // linear.pt cannot take these; what matters is that they reach the model as such.
  handler->Initialize(Context(kFixtures + "/models", kFixtures + "/models/linear.pt"));
  const auto responses = RunBatch(*handler, {"5", "[]", "[[]]"});
  EXPECT_NE(responses[0].body.find("(shape [])"), std::string::npos) << responses[0].body;
  EXPECT_NE(responses[1].body.find("(shape [0])"), std::string::npos) << responses[1].body;
  EXPECT_NE(responses[2].body.find("(shape [1, 0])"), std::string::npos) << responses[2].body;
}

TEST(TensorHandlerTest, InitializeErrors) {
  auto handler = MakeTensorHandler();
  try {
    handler->Initialize(Context(kFixtures, kFixtures + "/models/missing.pt"));
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot load TorchScript model " + kFixtures +
                                         "/models/missing.pt"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(handler->Initialize(Context(kFixtures, "")), std::runtime_error);
  // Not a TorchScript file.
  EXPECT_THROW(handler->Initialize(Context(kFixtures, kFixtures + "/images/kitten_small.png")),
               std::runtime_error);
}

TEST(TensorHandlerTest, SetsIntraOpThreadsOnTheCallingThread) {
  auto handler = MakeTensorHandler();
  ModelContext context = Context(kFixtures + "/models", kFixtures + "/models/linear.pt");
  context.intra_op_threads = 2;
  handler->Initialize(context);
  EXPECT_EQ(at::get_num_threads(), 2);
  at::set_num_threads(1);
  RunBatch(*handler, {"[1, 2, 3, 4]"});  // Inference re-applies the model's setting
  EXPECT_EQ(at::get_num_threads(), 2);
  at::set_num_threads(1);
}

// ---- image_classifier -------------------------------------------------------------------

constexpr const char* kTinyJpgBody = R"({
  "seven": 0.6905785202980042,
  "six": 0.06427084654569626,
  "five": 0.0461917445063591,
  "four": 0.04126840829849243,
  "eight": 0.04030407592654228
})";

constexpr const char* kTinyPngBody = R"({
  "seven": 0.7016118168830872,
  "six": 0.062135860323905945,
  "five": 0.044182103127241135,
  "four": 0.04043198749423027,
  "eight": 0.03822169452905655
})";

std::unique_ptr<Handler> TinyClassifier(const std::string& model_dir) {
  std::unique_ptr<Handler> handler = MakeImageClassifierHandler();
  handler->Initialize(Context(model_dir, kFixtures + "/models/tiny_classifier/model.pt"));
  return handler;
}

TEST(ImageClassifierTest, AnswersAsTorchServeWithLabels) {
  auto handler = TinyClassifier(kFixtures + "/models/tiny_classifier");
  const std::string jpg = ReadFile(kFixtures + "/images/kitten_small.jpg");
  const std::string png = ReadFile(kFixtures + "/images/kitten_small.png");
  const auto responses = RunBatch(*handler, {jpg, png});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].content_type, "application/json");
  EXPECT_EQ(responses[0].body, kTinyJpgBody);
  EXPECT_EQ(responses[1].status, 200);
  EXPECT_EQ(responses[1].body, kTinyPngBody);
}

TEST(ImageClassifierTest, UndecodableImageFailsOnlyItsRequest) {
  auto handler = TinyClassifier(kFixtures + "/models/tiny_classifier");
  const std::string jpg = ReadFile(kFixtures + "/images/kitten_small.jpg");
  const std::string truncated = jpg.substr(0, jpg.size() / 2);
  const auto responses = RunBatch(*handler, {"{\"not\": \"an image\"}", jpg, truncated, jpg});
  EXPECT_EQ(responses[0].status, 400);
  EXPECT_EQ(responses[0].body,
            std::string(kBadRequestPrefix) +
                "not a JPEG or PNG image (19 bytes, first bytes 7b 22 6e 6f 74 22 3a 20 "
                "...)\"\n}\n");
  EXPECT_EQ(responses[1].status, 200);
  EXPECT_EQ(responses[1].body, kTinyJpgBody);
  EXPECT_EQ(responses[2].status, 400);
  EXPECT_NE(responses[2].body.find("invalid JPEG image"), std::string::npos);
  EXPECT_EQ(responses[3].status, 200);
  EXPECT_EQ(responses[3].body, kTinyJpgBody);
}

TEST(ImageClassifierTest, WithoutIndexToNameLabelsAreClassIndices) {
  // A model folder without index_to_name.json.
  auto handler = TinyClassifier(kFixtures + "/models");
  const auto responses = RunBatch(*handler, {ReadFile(kFixtures + "/images/kitten_small.jpg")});
  EXPECT_EQ(responses[0].body, R"({
  "7": 0.6905785202980042,
  "6": 0.06427084654569626,
  "5": 0.0461917445063591,
  "4": 0.04126840829849243,
  "8": 0.04030407592654228
})");
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("tserve_torch_test_" + std::to_string(::getpid()) + "_" + std::to_string(count_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string path() const { return path_.string(); }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
  }

 private:
  static inline int count_ = 0;
  std::filesystem::path path_;
};

TEST(ImageClassifierTest, PlainIndexToNameAndMissingClasses) {
  TempDir dir;
  // {"index": "label"}; class 6 unmapped -> its index; non-ASCII escaped as json.dumps does.
  dir.Write("index_to_name.json", R"({"4": "four", "5": "f\u00fcnf", "7": "seven", "8": "eight"})");
  auto handler = TinyClassifier(dir.path());
  const auto responses = RunBatch(*handler, {ReadFile(kFixtures + "/images/kitten_small.jpg")});
  EXPECT_EQ(responses[0].body, R"({
  "seven": 0.6905785202980042,
  "6": 0.06427084654569626,
  "f\u00fcnf": 0.0461917445063591,
  "four": 0.04126840829849243,
  "eight": 0.04030407592654228
})");
}

TEST(ImageClassifierTest, DuplicateLabelsKeepFirstPlaceAndLastValue) {
  TempDir dir;
  // As a Python dict comprehension over the top 5: "x" stays first, with six's probability.
  dir.Write("index_to_name.json", R"({"object_type_names": ["a", "b", "c", "d", "e", "f",
      "x", "x", "i", "j"]})");
  auto handler = TinyClassifier(dir.path());
  const auto responses = RunBatch(*handler, {ReadFile(kFixtures + "/images/kitten_small.jpg")});
  EXPECT_EQ(responses[0].body, R"({
  "x": 0.06427084654569626,
  "f": 0.0461917445063591,
  "e": 0.04126840829849243,
  "i": 0.04030407592654228
})");
}

TEST(ImageClassifierTest, BadIndexToNameFailsInitialize) {
  TempDir dir;
  dir.Write("index_to_name.json", R"({"0": 5})");
  auto handler = MakeImageClassifierHandler();
  try {
    handler->Initialize(Context(dir.path(), kFixtures + "/models/tiny_classifier/model.pt"));
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("labels in index->name mapping must be"),
              std::string::npos)
        << e.what();
  }
  dir.Write("index_to_name.json", "[1, 2");
  EXPECT_THROW(
      handler->Initialize(Context(dir.path(), kFixtures + "/models/tiny_classifier/model.pt")),
      std::runtime_error);
}

TEST(ImageClassifierTest, WarmupIterationsFromModelConfig) {
  auto handler = MakeImageClassifierHandler();
  ModelContext context =
      Context(kFixtures + "/models", kFixtures + "/models/tiny_classifier/model.pt");
  context.config["warmupIterations"] = "0";
  handler->Initialize(context);
  context.config["warmupIterations"] = "lots";
  try {
    handler->Initialize(context);
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "image_classifier: warmupIterations must be 0..100, got \"lots\"");
  }
  // The warm-up runs the model: one that cannot take an image batch fails to load.
  context.config.clear();
  context.serialized_file = kFixtures + "/models/linear.pt";
  EXPECT_THROW(handler->Initialize(context), std::runtime_error);
}

TEST(ImageClassifierTest, ModelOfTheWrongShapeFailsTheBatch) {
  auto handler = MakeImageClassifierHandler();
  ModelContext context = Context(kFixtures + "/models", kFixtures + "/models/linear.pt");
  context.config["warmupIterations"] = "0";  // else Initialize would already fail
  handler->Initialize(context);
  Batch batch;
  const std::string jpg = ReadFile(kFixtures + "/images/kitten_small.jpg");
  batch.requests.push_back(InferenceRequest{"id", "image/jpeg", jpg});
  handler->Preprocess(batch);
  EXPECT_THROW(handler->Inference(batch), std::runtime_error);
}

TEST(ImageClassifierTest, AllImagesRejectedRunsNoForward) {
  auto handler = TinyClassifier(kFixtures + "/models/tiny_classifier");
  const auto responses = RunBatch(*handler, {"", "GIF89a"});
  EXPECT_EQ(responses[0].status, 400);
  EXPECT_EQ(responses[1].status, 400);
}

// ---- image_segmenter and object_detector ------------------------------------------------
//
// Their models are tiny TorchScript modules compiled here (torch::jit::Module::define) with
// outputs exact in float, so the expected bodies are exact: TorchServe's json.dumps(indent=2)
// of its handlers' answers for the same outputs (printed by Python).

// A folder of its own under the system temp dir, removed at the end of the test.
class VisionModelDir {
 public:
  explicit VisionModelDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("tserve_vision_" + std::to_string(getpid()) + "_" + name)) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~VisionModelDir() { std::filesystem::remove_all(path_); }
  std::string dir() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Compiles `source` (TorchScript methods) into model.pt and returns its path.
  std::string Save(const std::string& source) const {
    torch::jit::Module module("TinyVision");
    module.define(source);
    module.save(file("model.pt"));
    return file("model.pt");
  }
  void Write(const std::string& name, const std::string& text) const {
    std::ofstream(file(name)) << text;
  }

 private:
  std::filesystem::path path_;
};

// Whatever the image, a 2 x 3 map over 2 classes: row 0 is class 0, row 1 class 1 except its
// last pixel (class 0); every top probability is 1 (the others are -inf).
constexpr const char* kTinySegmenter = R"(
def forward(self, x: Tensor) -> Dict[str, Tensor]:
    out = torch.full([x.size(0), 2, 2, 3], float('-inf'))
    out[:, 0, 0, :] = 0.0
    out[:, 1, 1, :] = 0.0
    out[:, 1, 1, 2] = float('-inf')
    out[:, 0, 1, 2] = 0.0
    return {"out": out, "aux": x}
)";

constexpr const char* kTinySegmenterBody = R"([
  [
    [
      0.0,
      1.0
    ],
    [
      0.0,
      1.0
    ],
    [
      0.0,
      1.0
    ]
  ],
  [
    [
      1.0,
      1.0
    ],
    [
      1.0,
      1.0
    ],
    [
      0.0,
      1.0
    ]
  ]
])";

TEST(ImageSegmenterTest, AnswersTorchServesClassAndProbabilityPerPixel) {
  VisionModelDir dir("segmenter");
  std::unique_ptr<Handler> handler = MakeImageSegmenterHandler();
  handler->Initialize(Context(dir.dir(), dir.Save(kTinySegmenter)));
  const std::string jpg = ReadFile(kFixtures + "/images/kitten_small.jpg");
  const std::string png = ReadFile(kFixtures + "/images/kitten_small.png");
  const auto responses = RunBatch(*handler, {jpg, "GIF89a", png, jpg.substr(0, 100)});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].content_type, "application/json");
  EXPECT_EQ(responses[0].body, kTinySegmenterBody);
  EXPECT_EQ(responses[1].status, 400);
  EXPECT_EQ(responses[1].body.rfind(std::string(kBadRequestPrefix) + "not a JPEG or PNG", 0), 0u)
      << responses[1].body;
  EXPECT_EQ(responses[2].status, 200);
  EXPECT_EQ(responses[2].body, kTinySegmenterBody);
  EXPECT_EQ(responses[3].status, 400);
  EXPECT_NE(responses[3].body.find("invalid JPEG image"), std::string::npos);
}

TEST(ImageSegmenterTest, TakesTheModelsInputAsTheClassifierDoes) {
  // The model answers its input (the normalised 224 x 224 crop) as the scores: 3 classes.
  VisionModelDir dir("segmenter_input");
  std::unique_ptr<Handler> handler = MakeImageSegmenterHandler();
  handler->Initialize(Context(dir.dir(), dir.Save(R"(
def forward(self, x: Tensor) -> Tensor:
    return x
)")));
  const auto responses = RunBatch(*handler, {ReadFile(kFixtures + "/images/kitten_small.png")});
  ASSERT_EQ(responses[0].status, 200) << responses[0].body;
  const nlohmann::json map = nlohmann::json::parse(responses[0].body);
  ASSERT_EQ(map.size(), 224u);
  ASSERT_EQ(map[0].size(), 224u);
  for (const auto& row : map) {
    for (const auto& pixel : row) {
      ASSERT_EQ(pixel.size(), 2u);
      const double cls = pixel[0].get<double>();
      EXPECT_TRUE(cls == 0.0 || cls == 1.0 || cls == 2.0) << cls;
      EXPECT_GE(pixel[1].get<double>(), 1.0 / 3 - 1e-6);
    }
  }
}

TEST(ImageSegmenterTest, OutputOfTheWrongShapeFailsTheBatch) {
  VisionModelDir dir("segmenter_bad");
  std::unique_ptr<Handler> handler = MakeImageSegmenterHandler();
  ModelContext context = Context(dir.dir(), dir.Save(R"(
def forward(self, x: Tensor) -> Dict[str, Tensor]:
    return {"logits": x.mean([2, 3])}
)"));
  context.config["warmupIterations"] = "0";
  handler->Initialize(context);
  Batch batch;
  const std::string jpg = ReadFile(kFixtures + "/images/kitten_small.jpg");
  batch.requests.push_back(InferenceRequest{"id", "image/jpeg", jpg});
  handler->Preprocess(batch);
  try {
    handler->Inference(batch);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "image_segmenter: the model returned a dict without a tensor \"out\""),
              std::string::npos)
        << e.what();
  }
}

// Per image: a box over the whole image (class 1, score 0.75), a fixed box (class 7, score
// 0.25), and one scoring 0.125 only if the input is ToTensor's (3 channels in [0, 1]).
constexpr const char* kTinyDetector = R"(
def forward(self, images: List[Tensor]) -> Tuple[Dict[str, Tensor], List[Dict[str, Tensor]]]:
    out: List[Dict[str, Tensor]] = []
    for img in images:
        h = float(img.size(1))
        w = float(img.size(2))
        ok = img.size(0) == 3 and bool(img.min() >= 0.0) and bool(img.max() <= 1.0) and bool(img.max() > 0.5)
        third = 0.125 if ok else 0.0
        out.append({"boxes": torch.tensor([[0.0, 0.0, w, h], [1.0, 2.0, 3.0, 4.5], [0.5, 0.5, 1.5, 1.5]]),
                    "labels": torch.tensor([1, 7, 2]),
                    "scores": torch.tensor([0.75, 0.25, third])})
    losses: Dict[str, Tensor] = {}
    return (losses, out)
)";

std::unique_ptr<Handler> TinyDetector(const VisionModelDir& dir, const std::string& threshold) {
  std::unique_ptr<Handler> handler = MakeObjectDetectorHandler();
  ModelContext context = Context(dir.dir(), dir.Save(kTinyDetector));
  if (!threshold.empty()) context.config["detectionThreshold"] = threshold;
  handler->Initialize(context);
  return handler;
}

TEST(ObjectDetectorTest, DefaultThresholdAndLabelsAsTorchServe) {
  VisionModelDir dir("detector");
  dir.Write("index_to_name.json", R"({"0": "__background__", "1": "cat", "2": "dog"})");
  auto handler = TinyDetector(dir, "");
  const std::string jpg = ReadFile(kFixtures + "/images/kitten_small.jpg");  // 64 x 48
  const auto responses = RunBatch(*handler, {jpg, "", jpg});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].content_type, "application/json");
  EXPECT_EQ(responses[0].body, R"([
  {
    "cat": [
      0.0,
      0.0,
      64.0,
      48.0
    ],
    "score": 0.75
  }
])");
  EXPECT_EQ(responses[1].status, 400);
  EXPECT_EQ(responses[1].body,
            std::string(kBadRequestPrefix) + "not a JPEG or PNG image (empty body)\"\n}\n");
  EXPECT_EQ(responses[2].body, responses[0].body);
}

TEST(ObjectDetectorTest, LowThresholdKeepsScoresAtLeastItInTheModelsOrder) {
  VisionModelDir dir("detector_low");
  dir.Write("index_to_name.json", R"({"object_type_names": ["__background__", "cat", "dog"]})");
  auto handler = TinyDetector(dir, "0.125");  // >=: the 0.125 detection is kept
  const auto responses = RunBatch(*handler, {ReadFile(kFixtures + "/images/kitten_small.png")});
  ASSERT_EQ(responses[0].status, 200) << responses[0].body;
  // Class 7 has no name: its index. Class 2 scores 0.125 only for ToTensor's input.
  EXPECT_EQ(responses[0].body, R"([
  {
    "cat": [
      0.0,
      0.0,
      64.0,
      48.0
    ],
    "score": 0.75
  },
  {
    "7": [
      1.0,
      2.0,
      3.0,
      4.5
    ],
    "score": 0.25
  },
  {
    "dog": [
      0.5,
      0.5,
      1.5,
      1.5
    ],
    "score": 0.125
  }
])");
}

TEST(ObjectDetectorTest, NothingAboveTheThresholdIsAnEmptyList) {
  VisionModelDir dir("detector_none");
  auto handler = TinyDetector(dir, "0.9");
  const auto responses = RunBatch(*handler, {ReadFile(kFixtures + "/images/kitten_small.jpg")});
  EXPECT_EQ(responses[0].status, 200);
  EXPECT_EQ(responses[0].body, "[]");
}

TEST(ObjectDetectorTest, ImagesOfDifferentSizesShareAForward) {
  // Eager-style output (the list alone); the boxes follow each image's own size.
  VisionModelDir dir("detector_sizes");
  std::unique_ptr<Handler> handler = MakeObjectDetectorHandler();
  handler->Initialize(Context(dir.dir(), dir.Save(R"(
def forward(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
    out: List[Dict[str, Tensor]] = []
    for img in images:
        out.append({"boxes": torch.tensor([[0.0, 0.0, float(img.size(2)), float(img.size(1))]]),
                    "labels": torch.tensor([len(images)]),
                    "scores": torch.tensor([0.5])})
    return out
)")));
  const std::string jpg = ReadFile(kFixtures + "/images/kitten_small.jpg");             // 64 x 48
  const std::string small = ReadFile(kFixtures + "/images/kitten_small_resize32.png");  // resized
  const auto responses = RunBatch(*handler, {jpg, small});
  ASSERT_EQ(responses[0].status, 200) << responses[0].body;
  ASSERT_EQ(responses[1].status, 200) << responses[1].body;
  const auto first = nlohmann::json::parse(responses[0].body);
  const auto second = nlohmann::json::parse(responses[1].body);
  EXPECT_EQ(first[0]["2"], nlohmann::json({0.0, 0.0, 64.0, 48.0}));  // 2 images, one forward
  EXPECT_EQ(second[0]["2"][0], 0.0);
  EXPECT_NE(second[0]["2"], first[0]["2"]);
  EXPECT_EQ(second[0]["score"], 0.5);
}

TEST(ObjectDetectorTest, BadThresholdAndBadOutputs) {
  VisionModelDir dir("detector_bad");
  for (const char* bad : {"1.5", "-0.1", "half", "nan"}) {
    try {
      TinyDetector(dir, bad);
      FAIL() << "expected an error for " << bad;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("detectionThreshold must be 0..1"), std::string::npos)
          << e.what();
    }
  }
  std::unique_ptr<Handler> handler = MakeObjectDetectorHandler();
  ModelContext context = Context(dir.dir(), dir.Save(R"(
def forward(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
    out: List[Dict[str, Tensor]] = []
    for img in images:
        out.append({"boxes": torch.zeros([2, 4]), "labels": torch.zeros([1]), "scores": torch.zeros([2])})
    return out
)"));
  context.config["warmupIterations"] = "0";
  handler->Initialize(context);
  Batch batch;
  const std::string jpg = ReadFile(kFixtures + "/images/kitten_small.jpg");
  batch.requests.push_back(InferenceRequest{"id", "image/jpeg", jpg});
  handler->Preprocess(batch);
  handler->Inference(batch);
  try {
    handler->Postprocess(batch);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("expected [K, 4], [K] and [K]"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tserve::backend
