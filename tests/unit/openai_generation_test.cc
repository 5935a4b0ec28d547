// The OpenAI-compatible endpoints over the worker's generation loop (WorkerPool::
// RunGeneration) with a fake GenerativeHandler: parts become events or one gathered answer,
// usage is the generation's token counts, and a handler's refusal is an OpenAI error.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/errors.h"
#include "api/openai_api.h"
#include "api_test_support.h"
#include "metrics/metrics_yaml.h"

namespace tserve::api {
namespace {

using Json = nlohmann::json;

// Generates the prompt back, one character (one token) per step, up to max_tokens
// (finish "length") or the prompt's end ("stop"). Prompt "refuse" is a 400 at admission;
// a '|' in the prompt is held back (an Emit of no text) and sent with the next token.
class ParrotHandler final : public Handler, public GenerativeHandler {
 public:
  void Initialize(const ModelContext&) override {}
  void Preprocess(Batch&) override { throw std::runtime_error("not a batch handler"); }
  void Inference(Batch&) override {}
  void Postprocess(Batch&) override {}

  int FreeSlots() const override { return 4 - static_cast<int>(running_.size()); }
  AdmitResult Admit(Sequence* s) override {
    Json p = Json::parse(s->body());
    Running r{s, p.value("prompt", std::string()), p.value("max_tokens", 16), 0, ""};
    if (r.prompt == "refuse") {
      s->Fail(400, "the parrot refuses");
      return AdmitResult::kEnded;
    }
    s->SetPromptTokens(static_cast<int>(r.prompt.size()));
    running_.push_back(r);
    Next(running_.back());
    if (Done(running_.back())) {
      running_.pop_back();
      return AdmitResult::kEnded;
    }
    return AdmitResult::kAdmitted;
  }
  void Step() override {
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->seq->cancelled()) {
        it->seq->Finish(FinishReason::kAbort);
        it = running_.erase(it);
        continue;
      }
      Next(*it);
      it = Done(*it) ? running_.erase(it) : it + 1;
    }
  }
  GenerationStats Stats() const override {
    return {static_cast<int>(running_.size()), static_cast<int>(running_.size()), 4};
  }

 private:
  struct Running {
    Sequence* seq;
    std::string prompt;
    int max_tokens;
    int generated;
    std::string held;
  };
  void Next(Running& r) {
    const char c = r.prompt[r.generated++];
    if (c == '|') {
      r.held += c;
      r.seq->Emit("", 1);
    } else {
      r.seq->Emit(r.held + c, 1);
      r.held.clear();
    }
  }
  // Finishes the sequence when it is done; true then.
  bool Done(Running& r) {
    if (r.generated >= r.max_tokens) {
      r.seq->Finish(FinishReason::kLength);
      return true;
    }
    if (r.generated >= static_cast<int>(r.prompt.size())) {
      r.seq->Finish(FinishReason::kStop);
      return true;
    }
    return false;
  }
  std::vector<Running> running_;
};

class OpenAiGenerationTest : public apitest::ModelHarness {
 protected:
  void SetUp() override {
    ModelHarness::SetUp();
    factory_.RegisterBuiltin("parrot", [] { return std::make_unique<ParrotHandler>(); });
    api_ = std::make_unique<OpenAiApi>(manager_.get());
    api_->RegisterRoutes(&router_);
    AddModel("parrot", 1, "parrot");
  }

  http::Response Post(std::string path, std::string body) {
    return Route(http::Method::kPost, std::move(path), std::move(body), {}, "g1").get();
  }

  static std::vector<Json> Events(const std::string& body) {
    std::vector<Json> out;
    for (size_t pos = 0; pos < body.size();) {
      const size_t end = body.find("\n\n", pos);
      EXPECT_NE(end, std::string::npos) << body;
      if (end == std::string::npos) break;
      const std::string data = body.substr(pos + 6, end - pos - 6);
      out.push_back(data == "[DONE]" ? Json("[DONE]") : Json::parse(data));
      pos = end + 2;
    }
    return out;
  }

  std::unique_ptr<OpenAiApi> api_;
};

TEST_F(OpenAiGenerationTest, ModelsListsAGenerativeModel) {
  http::Response r = Route(http::Method::kGet, "/v1/models", "", {}).get();
  ASSERT_EQ(r.status, 200);
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "parrot");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["owned_by"], "tserve");
  EXPECT_GT(j["data"][0]["created"].get<int64_t>(), 1'600'000'000);  // its load time
}

TEST_F(OpenAiGenerationTest, ANonStreamedCompletionGathersThePartsWithUsage) {
  http::Response r =
      Post("/v1/completions", R"({"model": "parrot", "prompt": "ab|cdef", "max_tokens": 5})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["choices"][0]["text"], "ab|cd");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"],
            Json({{"prompt_tokens", 7}, {"completion_tokens", 5}, {"total_tokens", 12}}));
}

TEST_F(OpenAiGenerationTest, AStreamedChatIsOneEventPerPartThenTheFinishUsageAndDone) {
  http::Response r = Post("/v1/chat/completions", R"({"model": "parrot", "stream": true,
      "stream_options": {"include_usage": true}, "max_tokens": 100,
      "messages": [{"role": "user", "content": "x|y"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "text/event-stream");
  std::vector<Json> events = Events(r.body);
  // The prompt "<|user|>\nx|y\n<|assistant|>\n": its '|'s are held back and go with the
  // next character, so fewer events than tokens.
  const std::string prompt = "<|user|>\nx|y\n<|assistant|>\n";
  std::string text;
  size_t i = 0;
  for (; i < events.size() && events[i]["choices"].size() == 1 &&
         events[i]["choices"][0]["finish_reason"].is_null();
       ++i) {
    if (i == 0) {
      EXPECT_EQ(events[i]["choices"][0]["delta"]["role"], "assistant");
    }
    text += events[i]["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, prompt);
  EXPECT_EQ(i, prompt.size() - 5);  // 5 '|' held back
  ASSERT_EQ(events.size(), i + 3) << r.body;
  EXPECT_EQ(events[i]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[i + 1]["usage"]["completion_tokens"], static_cast<int>(prompt.size()));
  EXPECT_EQ(events[i + 1]["usage"]["prompt_tokens"], static_cast<int>(prompt.size()));
  EXPECT_EQ(events[i + 2], "[DONE]");
}

TEST_F(OpenAiGenerationTest, AHandlersRefusalBeforeAnyPartIsA400InOpenAisShape) {
  for (bool stream : {false, true}) {
    http::Response r =
        Post("/v1/completions",
             Json({{"model", "parrot"}, {"prompt", "refuse"}, {"stream", stream}}).dump());
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.content_type, "application/json");
    Json e = Json::parse(r.body)["error"];
    EXPECT_EQ(e["message"], "the parrot refuses");
    EXPECT_EQ(e["type"], "invalid_request_error");
  }
}

}  // namespace
}  // namespace tserve::api
