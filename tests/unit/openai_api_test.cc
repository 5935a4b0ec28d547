// The OpenAI-compatible endpoints: the translation of a request into the engine's payload
// (and every refusal, in OpenAI's error shape), the answer's JSON and event-stream bytes,
// the sink over a Responder, and the routes end to end against a batch handler that echoes
// its payload (a generative handler needs the worker's generation loop).
#include "api/openai_api.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/errors.h"
#include "api_test_support.h"
#include "common/strings.h"
#include "metrics/metrics_yaml.h"

namespace tserve::api {
namespace {

using Json = nlohmann::json;

// ---- Translation ----

GenerationRequest Translate(OpenAiKind kind, const std::string& body) {
  Json j;
  EXPECT_FALSE(ParseOpenAiBody(body, &j).has_value()) << body;
  GenerationRequest out;
  auto error = TranslateRequest(kind, j, &out);
  EXPECT_FALSE(error.has_value()) << body << ": " << (error ? error->message : "");
  return out;
}

OpenAiError Refusal(OpenAiKind kind, const std::string& body) {
  Json j;
  if (auto e = ParseOpenAiBody(body, &j)) return *e;
  GenerationRequest out;
  auto error = TranslateRequest(kind, j, &out);
  EXPECT_TRUE(error.has_value()) << body << " was accepted: " << out.payload;
  return error.value_or(OpenAiError{});
}

TEST(OpenAiTranslateTest, ACompletionBecomesTheEnginesPayload) {
  GenerationRequest r = Translate(OpenAiKind::kCompletion, R"({
      "model": "m", "prompt": "Hello", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9,
      "seed": 42, "stop": "\n", "stream": true, "stream_options": {"include_usage": true},
      "user": "u", "n": 1, "best_of": 1, "echo": false, "presence_penalty": 0,
      "frequency_penalty": 0.0, "logprobs": null, "logit_bias": {}, "suffix": null,
      "ignore_eos": true, "some_extension": 1})");
  EXPECT_EQ(r.payload,
            R"({"prompt":"Hello","max_tokens":7,"temperature":0.5,"top_p":0.9,"seed":42,)"
            R"("stop":["\n"],"ignore_eos":true})");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiTranslateTest, UnsetSettingsAreLeftToTheModelsDefaults) {
  GenerationRequest r = Translate(OpenAiKind::kCompletion,
                                  R"({"prompt": ["one prompt"], "max_tokens": null,
                                      "temperature": null, "stop": [], "stream": false})");
  EXPECT_EQ(r.payload, R"({"prompt":"one prompt"})");
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
}

TEST(OpenAiTranslateTest, TheChatTemplateWritesEachMessageThenTheAssistantsTurn) {
  const Json messages = Json::parse(R"([
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
      {"role": "assistant", "content": "Hello."},
      {"role": "developer", "content": "Rule."},
      {"role": "user", "content": "Again", "name": "bob"}])");
  const std::string want =
      "<|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\nHello.\n<|system|>\nRule.\n"
      "<|user|>\nAgain\n<|assistant|>\n";
  EXPECT_EQ(ApplyChatTemplate(messages), want);
  GenerationRequest r = Translate(
      OpenAiKind::kChat, R"({"model": "m", "messages": )" + messages.dump() +
                             R"(, "max_tokens": 5, "max_completion_tokens": 9, "logprobs": false,
                               "tools": [], "tool_choice": "none",
                               "response_format": {"type": "text"}})");
  EXPECT_EQ(r.payload, nlohmann::ordered_json({{"prompt", want}, {"max_tokens", 9}}).dump());
}

TEST(OpenAiTranslateTest, AnAssistantMessageMayHaveNoContent) {
  GenerationRequest r = Translate(OpenAiKind::kChat, R"({"messages": [
      {"role": "user", "content": "a"}, {"role": "assistant", "content": null}]})");
  EXPECT_EQ(r.payload, Json({{"prompt", "<|user|>\na\n<|assistant|>\n\n<|assistant|>\n"}}).dump());
}

struct RefusalCase {
  OpenAiKind kind;
  std::string body;
  std::string param;
};

TEST(OpenAiTranslateTest, EveryFieldIsCheckedAndARefusalNamesIt) {
  const OpenAiKind C = OpenAiKind::kCompletion;
  const OpenAiKind H = OpenAiKind::kChat;
  const std::string big(kMaxPromptBytes + 1, 'x');
  const std::vector<RefusalCase> cases = {
      {C, R"({})", "prompt"},
      {C, R"({"prompt": 5})", "prompt"},
      {C, R"({"prompt": [1, 2, 3]})", "prompt"},
      {C, R"({"prompt": [[1, 2]]})", "prompt"},
      {C, R"({"prompt": ["a", "b"]})", "prompt"},
      {C, R"({"prompt": []})", "prompt"},
      {C, R"({"prompt": ")" + big + R"("})", "prompt"},
      {C, R"({"prompt": "a", "max_tokens": 0})", "max_tokens"},
      {C, R"({"prompt": "a", "max_tokens": 131073})", "max_tokens"},
      {C, R"({"prompt": "a", "max_tokens": 2.5})", "max_tokens"},
      {C, R"({"prompt": "a", "max_tokens": "5"})", "max_tokens"},
      {C, R"({"prompt": "a", "max_tokens": -1})", "max_tokens"},
      {C, R"({"prompt": "a", "temperature": -0.1})", "temperature"},
      {C, R"({"prompt": "a", "temperature": 2.01})", "temperature"},
      {C, R"({"prompt": "a", "temperature": "hot"})", "temperature"},
      {C, R"({"prompt": "a", "top_p": 0})", "top_p"},
      {C, R"({"prompt": "a", "top_p": 1.5})", "top_p"},
      {C, R"({"prompt": "a", "seed": 1.5})", "seed"},
      {C, R"({"prompt": "a", "seed": 18446744073709551615})", "seed"},
      {C, R"({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]})", "stop"},
      {C, R"({"prompt": "a", "stop": [""]})", "stop"},
      {C, R"({"prompt": "a", "stop": [1]})", "stop"},
      {C, R"({"prompt": "a", "stop": ")" + std::string(kMaxStopBytes + 1, 's') + R"("})", "stop"},
      {C, R"({"prompt": "a", "stream": "yes"})", "stream"},
      {C, R"({"prompt": "a", "stream_options": true})", "stream_options"},
      {C, R"({"prompt": "a", "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage"},
      {C, R"({"prompt": "a", "ignore_eos": "no"})", "ignore_eos"},
      {C, R"({"prompt": "a", "n": 2})", "n"},
      {C, R"({"prompt": "a", "best_of": 3})", "best_of"},
      {C, R"({"prompt": "a", "echo": true})", "echo"},
      {C, R"({"prompt": "a", "logprobs": 2})", "logprobs"},
      {C, R"({"prompt": "a", "suffix": "end"})", "suffix"},
      {C, R"({"prompt": "a", "presence_penalty": 0.5})", "presence_penalty"},
      {C, R"({"prompt": "a", "frequency_penalty": 1})", "frequency_penalty"},
      {C, R"({"prompt": "a", "logit_bias": {"50256": -100}})", "logit_bias"},
      {H, R"({})", "messages"},
      {H, R"({"messages": []})", "messages"},
      {H, R"({"messages": "hi"})", "messages"},
      {H, R"({"messages": ["hi"]})", "messages[0]"},
      {H, R"({"messages": [{"content": "hi"}]})", "messages[0].role"},
      {H, R"({"messages": [{"role": "tool", "content": "hi"}]})", "messages[0].role"},
      {H, R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {H, R"({"messages": [{"role": "user", "content": 3}]})", "messages[0].content"},
      {H,
       R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
       "messages[0].content[0].type"},
      {H, R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})",
       "messages[0].content[0].text"},
      {H, R"({"messages": [{"role": "assistant", "content": null, "tool_calls": [{}]}]})",
       "messages[0].tool_calls"},
      {H, R"({"messages": [{"role": "user", "content": ")" + big + R"("}]})", "messages"},
      {H, R"({"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 0})",
       "max_completion_tokens"},
      {H, R"({"messages": [{"role": "user", "content": "a"}], "n": 3})", "n"},
      {H, R"({"messages": [{"role": "user", "content": "a"}], "logprobs": true})", "logprobs"},
      {H, R"({"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function"}]})",
       "tools"},
      {H, R"({"messages": [{"role": "user", "content": "a"}], "tool_choice": "required"})",
       "tool_choice"},
      {H,
       R"({"messages": [{"role": "user", "content": "a"}], "response_format": {"type": "json_object"}})",
       "response_format"},
      {H, R"({"messages": [{"role": "user", "content": "a"}], "modalities": ["audio"]})",
       "modalities"},
  };
  for (const RefusalCase& c : cases) {
    OpenAiError e = Refusal(c.kind, c.body);
    EXPECT_EQ(e.status, 400) << c.body.substr(0, 200);
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_EQ(e.param, c.param) << c.body.substr(0, 200) << ": " << e.message;
    EXPECT_NE(e.message.find(c.param), std::string::npos) << e.message;
  }
  // Too many messages.
  Json many = Json::array();
  for (size_t i = 0; i <= kMaxChatMessages; ++i)
    many.push_back({{"role", "user"}, {"content", "x"}});
  EXPECT_EQ(Refusal(H, Json({{"messages", many}}).dump()).param, "messages");
}

TEST(OpenAiTranslateTest, ABodyThatIsNotAJsonObjectOrTooDeepIsA400) {
  Json j;
  for (const std::string& body : {std::string("{"), std::string("[1]"), std::string(""),
                                  std::string(70, '[') + std::string(70, ']')}) {
    auto e = ParseOpenAiBody(body, &j);
    ASSERT_TRUE(e.has_value()) << body;
    EXPECT_EQ(e->status, 400);
    EXPECT_EQ(e->param, "");
  }
  EXPECT_NE(
      ParseOpenAiBody(std::string(70, '[') + std::string(70, ']'), &j)->message.find("deeper"),
      std::string::npos);
}

// ---- Errors ----

TEST(OpenAiErrorTest, ErrorsHaveOpenAisShape) {
  EXPECT_EQ(OpenAiErrorJson(OpenAiError::BadRequest("bad", "temperature", "invalid_value")),
            R"({"error":{"message":"bad","type":"invalid_request_error","param":"temperature",)"
            R"("code":"invalid_value"}})");
  http::Response r = OpenAiErrorResponse(OpenAiError::ForStatus(503, "busy"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"error":{"message":"busy","type":"server_error","param":null,)"
                    R"("code":"service_unavailable"}})"
                    "\n");
  OpenAiError nf = OpenAiError::FromStatus(Status::ModelNotFound("Model not found: x"));
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(nf.code, "model_not_found");
  EXPECT_EQ(nf.param, "model");
  EXPECT_EQ(OpenAiError::ForStatus(408, "late").code, "timeout");
  EXPECT_EQ(OpenAiError::ForStatus(500, "boom").type, "server_error");
  EXPECT_EQ(OpenAiError::ForStatus(500, "boom").code, "");
}

TEST(OpenAiErrorTest, AFailedJobGivesItsStatusAndMessage) {
  OpenAiError ts = OpenAiError::FromJobResult(
      serving::JobResult::Error(503, "ServiceUnavailableException", "Model \"m\" has no worker"));
  EXPECT_EQ(ts.status, 503);
  EXPECT_EQ(ts.message, "Model \"m\" has no worker");
  // A handler's own 4xx with a JSON body: its message.
  OpenAiError h = OpenAiError::FromJobResult(serving::JobResult::Answer(
      400, "application/json", R"({"code": 400, "message": "prompt too long"})"));
  EXPECT_EQ(h.status, 400);
  EXPECT_EQ(h.message, "prompt too long");
  EXPECT_EQ(OpenAiError::FromJobResult(serving::JobResult::Answer(500, "text/plain", "")).message,
            "The request failed with status 500");
}

// ---- Answers ----

TEST(OpenAiFormatterTest, NonStreamedAnswersCarryTheTextAndUsage) {
  OpenAiFormatter c(OpenAiKind::kCompletion, "r1", 1700000000, "m", false);
  EXPECT_EQ(c.Completion("Hi!", "length", {3, 2}),
            R"({"id":"cmpl-r1","object":"text_completion","created":1700000000,"model":"m",)"
            R"("choices":[{"index":0,"text":"Hi!","logprobs":null,"finish_reason":"length"}],)"
            R"("usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}})"
            "\n");
  OpenAiFormatter h(OpenAiKind::kChat, "r2", 7, "m", false);
  EXPECT_EQ(h.Completion("Yo", "stop", {4, 1}),
            R"({"id":"chatcmpl-r2","object":"chat.completion","created":7,"model":"m",)"
            R"("choices":[{"index":0,"message":{"role":"assistant","content":"Yo"},)"
            R"("logprobs":null,"finish_reason":"stop"}],)"
            R"("usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}})"
            "\n");
}

TEST(OpenAiFormatterTest, ACompletionStreamIsTextChunksThenTheFinishThenUsageThenDone) {
  OpenAiFormatter f(OpenAiKind::kCompletion, "r", 9, "m", true);
  const std::string head =
      R"(data: {"id":"cmpl-r","object":"text_completion","created":9,"model":"m",)";
  EXPECT_EQ(f.Delta("He"),
            head + R"("choices":[{"index":0,"text":"He","logprobs":null,"finish_reason":null}],)"
                   R"("usage":null})"
                   "\n\n");
  EXPECT_EQ(f.Delta(""), "");
  EXPECT_EQ(
      f.End("stop", {2, 3}),
      head +
          R"("choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"stop"}],)"
          R"("usage":null})"
          "\n\n" +
          head +
          R"("choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}})"
          "\n\ndata: [DONE]\n\n");
}

TEST(OpenAiFormatterTest, AChatStreamStartsWithTheRoleAndEndsWithAnEmptyDelta) {
  OpenAiFormatter f(OpenAiKind::kChat, "r", 9, "m", false);
  const std::string head =
      R"(data: {"id":"chatcmpl-r","object":"chat.completion.chunk","created":9,"model":"m",)";
  EXPECT_EQ(f.Delta("A"), head +
                              R"("choices":[{"index":0,"delta":{"role":"assistant","content":"A"},)"
                              R"("logprobs":null,"finish_reason":null}]})"
                              "\n\n");
  EXPECT_EQ(f.Delta("B"), head + R"("choices":[{"index":0,"delta":{"content":"B"},)"
                                 R"("logprobs":null,"finish_reason":null}]})"
                                 "\n\n");
  EXPECT_EQ(f.End("length", {1, 2}), head + R"("choices":[{"index":0,"delta":{},)"
                                            R"("logprobs":null,"finish_reason":"length"}]})"
                                            "\n\ndata: [DONE]\n\n");
  // Nothing generated: the role still comes first.
  OpenAiFormatter empty(OpenAiKind::kChat, "r", 9, "m", false);
  const std::string end = empty.End("stop", {1, 0});
  EXPECT_EQ(
      end.rfind(head + R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)", 0),
      0u)
      << end;
  EXPECT_NE(end.find(R"("delta":{},"logprobs":null,"finish_reason":"stop")"), std::string::npos);
}

TEST(OpenAiFormatterTest, AnErrorAfterTheStreamBeganIsAnErrorEventThenDone) {
  EXPECT_EQ(OpenAiFormatter::ErrorEnd(OpenAiError::ForStatus(500, "boom")),
            R"(data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}})"
            "\n\ndata: [DONE]\n\n");
}

// ---- The sink over a Responder ----

// apitest::FutureTarget: a stream is gathered into one delivery (ResponseTarget's default
// StartStream/WriteChunk/EndStream).
using apitest::FutureTarget;

std::string HeaderOf(const http::Response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (EqualsIgnoreCase(k, name)) return v;
  }
  return {};
}

struct SinkUnderTest {
  std::future<http::Response> answer;
  serving::ResponseSink sink;
  std::shared_ptr<FutureTarget> target;
};
SinkUnderTest MakeSink(OpenAiKind kind, bool stream, bool include_usage = false) {
  auto target = std::make_shared<FutureTarget>();
  SinkUnderTest s{target->future(), {}, target};
  s.sink = serving::ResponseSink(MakeOpenAiTarget(
      http::Responder(target), OpenAiFormatter(kind, "id", 1, "m", include_usage), stream));
  return s;
}

serving::JobResult Generated(std::string reason, int prompt, int completion) {
  serving::JobResult r = serving::JobResult::Answer(200, "text/plain", "");
  r.finish_reason = std::move(reason);
  r.prompt_tokens = prompt;
  r.completion_tokens = completion;
  return r;
}

TEST(OpenAiSinkTest, StreamedPartsAreOneEventEachAsAnEventStream) {
  SinkUnderTest s = MakeSink(OpenAiKind::kCompletion, true, true);
  s.sink.SendPart({"Hel", 1});
  s.sink.SendPart({"", 1});  // held back: no event
  s.sink.SendPart({"lo", 1});
  s.sink.Finish(Generated("length", 2, 3));
  http::Response r = s.answer.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/event-stream");
  EXPECT_EQ(HeaderOf(r, "Cache-Control"), "no-cache");
  OpenAiFormatter f(OpenAiKind::kCompletion, "id", 1, "m", true);
  std::string want = f.Delta("Hel");
  want += f.Delta("lo");
  want += f.End("length", {2, 3});
  EXPECT_EQ(r.body, want);
}

TEST(OpenAiSinkTest, AnErrorAfterTheFirstPartEndsTheStreamWithAnErrorEvent) {
  SinkUnderTest s = MakeSink(OpenAiKind::kChat, true);
  s.sink.SendPart({"x", 1});
  s.sink.Finish(serving::JobResult::Error(500, "InternalServerException", "step failed"));
  http::Response r = s.answer.get();
  EXPECT_EQ(r.status, 200);  // the head went with the first part: never a second status
  OpenAiFormatter f(OpenAiKind::kChat, "id", 1, "m", false);
  EXPECT_EQ(r.body,
            f.Delta("x") + OpenAiFormatter::ErrorEnd(OpenAiError::ForStatus(500, "step failed")));
}

TEST(OpenAiSinkTest, AnAbortedGenerationEndsWithAnErrorEventUnlessTheClientLeft) {
  serving::JobResult timeout =
      serving::JobResult::Error(408, "RequestTimeoutException", "Timed out");
  timeout.finish_reason = "abort";
  SinkUnderTest s = MakeSink(OpenAiKind::kCompletion, true);
  s.sink.SendPart({"a", 1});
  s.sink.Finish(timeout);
  OpenAiFormatter f(OpenAiKind::kCompletion, "id", 1, "m", false);
  EXPECT_EQ(s.answer.get().body,
            f.Delta("a") + OpenAiFormatter::ErrorEnd(OpenAiError::ForStatus(408, "Timed out")));

  SinkUnderTest gone = MakeSink(OpenAiKind::kCompletion, true);
  gone.sink.SendPart({"a", 1});
  gone.target->Leave();
  EXPECT_TRUE(gone.sink.client_gone());
  gone.sink.SendPart({"b", 1});
  serving::JobResult left = serving::JobResult::Error(503, "ServiceUnavailableException", "gone");
  left.finish_reason = "abort";
  gone.sink.Finish(left);
  EXPECT_EQ(gone.answer.get().body, f.Delta("a"));  // nothing after the client left
}

TEST(OpenAiSinkTest, AnErrorBeforeAnyPartIsAnHttpErrorInOpenAisShape) {
  SinkUnderTest s = MakeSink(OpenAiKind::kCompletion, true);
  s.sink.Finish(serving::JobResult::Error(408, "RequestTimeoutException", "Timed out"));
  http::Response r = s.answer.get();
  EXPECT_EQ(r.status, 408);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(Json::parse(r.body)["error"]["code"], "timeout");
  EXPECT_EQ(Json::parse(r.body)["error"]["message"], "Timed out");
}

TEST(OpenAiSinkTest, ANonStreamedAnswerGathersThePartsAndCountsTheirTokens) {
  SinkUnderTest s = MakeSink(OpenAiKind::kChat, false);
  s.sink.SendPart({"Hello", 2});
  s.sink.SendPart({", world", 3});
  serving::JobResult end = Generated("stop", 4, 0);  // no count: the parts' tokens
  s.sink.Finish(std::move(end));
  http::Response r = s.answer.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello, world");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"],
            Json({{"prompt_tokens", 4}, {"completion_tokens", 5}, {"total_tokens", 9}}));
}

// ---- The routes, end to end, over a batch handler ----

// apitest::EchoHandler answers "<content type>|<body>": the payload the engine would get.
using apitest::EchoHandler;

class OpenAiApiTest : public apitest::ModelHarness {
 protected:
  void SetUp() override {
    ModelHarness::SetUp();
    factory_.RegisterBuiltin("echo", [] { return std::make_unique<EchoHandler>(); });
    api_ = std::make_unique<OpenAiApi>(manager_.get());
    api_->RegisterRoutes(&router_);
  }

  http::Response Call(http::Method method, std::string path, std::string body = "") {
    return Route(method, std::move(path), std::move(body), {}, "req-1").get();
  }
  http::Response Post(std::string path, std::string body) {
    return Call(http::Method::kPost, std::move(path), std::move(body));
  }

  double Counter(const std::string& name, const metrics::Labels& labels) {
    auto c = registry_.CounterFor(name, labels);
    EXPECT_TRUE(c.ok());
    const double v = c.ok() ? (*c)->Value() : -1;
    return v < 0 ? 0 : v;  // untouched: -0.0
  }
  double Requests(const std::string& version) {
    return Counter("ts_inference_requests_total",
                   {{"model_name", "m"}, {"model_version", version}, {"hostname", "h"}});
  }
  double BadInput() {
    return Counter("ts_inference_failures_total",
                   {{"model_name", "m"}, {"model_version", "1.0"}, {"reason", "bad_input"}});
  }

  std::unique_ptr<OpenAiApi> api_;
};

TEST_F(OpenAiApiTest, ACompletionSubmitsTheEnginesJsonPayloadAndAnswersACompletion) {
  AddModel("m", 1);
  http::Response r =
      Post("/v1/completions", R"({"model": "m", "prompt": "Hi", "max_tokens": 3, "seed": 1})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["id"], "cmpl-req-1");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "m");
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["choices"][0]["text"], R"(application/json|{"prompt":"Hi","max_tokens":3,"seed":1})");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["total_tokens"], 0);
  EXPECT_EQ(Requests("default"), 1);
}

TEST_F(OpenAiApiTest, UnderPredictionsThePathNamesTheModelAndVersion) {
  AddModel("m", 1);
  const std::string chat = R"({"messages": [{"role": "user", "content": "Q"}]})";
  http::Response r = Post("/predictions/m/v1/chat/completions", chat);
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["id"], "chatcmpl-req-1");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"],
            R"(application/json|{"prompt":"<|user|>\nQ\n<|assistant|>\n"})");
  // The path's model wins over the body's.
  r = Post("/predictions/m/1.0/v1/completions", R"({"model": "other", "prompt": "P"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["model"], "m");
  EXPECT_EQ(Requests("default"), 1);
  EXPECT_EQ(Requests("1.0"), 1);  // an explicit version is labelled so
}

TEST_F(OpenAiApiTest, AStreamedAnswerOfABatchHandlerIsOneChunkThenTheEnd) {
  AddModel("m", 1);
  http::Response r =
      Post("/v1/chat/completions",
           R"({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                              "messages": [{"role": "user", "content": "Q"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "text/event-stream");
  EXPECT_EQ(HeaderOf(r, "Cache-Control"), "no-cache");
  // Events: the text (with the role), the finish, the usage, [DONE].
  std::vector<std::string> events;
  for (size_t pos = 0; pos < r.body.size();) {
    const size_t end = r.body.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos) << r.body;
    const std::string event = r.body.substr(pos, end - pos);
    ASSERT_EQ(event.rfind("data: ", 0), 0u) << event;
    events.push_back(event.substr(6));
    pos = end + 2;
  }
  ASSERT_EQ(events.size(), 4u) << r.body;
  Json first = Json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"],
            R"(application/json|{"prompt":"<|user|>\nQ\n<|assistant|>\n"})");
  EXPECT_EQ(Json::parse(events[1])["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(Json::parse(events[2])["choices"], Json::array());
  EXPECT_EQ(Json::parse(events[2])["usage"]["total_tokens"], 0);
  EXPECT_EQ(events[3], "[DONE]");
}

TEST_F(OpenAiApiTest, UnknownModelsAndVersionsAre404sInOpenAisShape) {
  AddModel("m", 1);
  http::Response r = Post("/v1/completions", R"({"model": "nope", "prompt": "x"})");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, R"({"error":{"message":"Model not found: nope","type":"invalid_request_error",)"
                    R"("param":"model","code":"model_not_found"}})"
                    "\n");
  r = Post("/predictions/m/2.0/v1/completions", R"({"prompt": "x"})");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(Json::parse(r.body)["error"]["code"], "model_not_found");
  EXPECT_EQ(Call(http::Method::kGet, "/v1/models/nope").status, 404);
  EXPECT_EQ(Call(http::Method::kGet, "/predictions/nope/v1/models").status, 404);
}

TEST_F(OpenAiApiTest, ARequestWithoutAModelIsA400) {
  AddModel("m", 1);
  http::Response r = Post("/v1/completions", R"({"prompt": "x"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json::parse(r.body)["error"]["param"], "model");
  r = Post("/v1/chat/completions", R"({"model": 5, "messages": []})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json::parse(r.body)["error"]["param"], "model");
  r = Post("/v1/completions", "not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json::parse(r.body)["error"]["type"], "invalid_request_error");
  EXPECT_EQ(Requests("default"), 0);  // no model: nothing to count against
}

TEST_F(OpenAiApiTest, ABadRequestForAKnownModelIsCountedAsBadInput) {
  AddModel("m", 1);
  http::Response r = Post("/v1/completions", R"({"model": "m", "prompt": "x", "n": 2})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Json::parse(r.body)["error"]["param"], "n");
  r = Post("/predictions/m/v1/completions", "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Requests("default"), 2);
  EXPECT_EQ(BadInput(), 2);
  EXPECT_EQ(Post("/v1/completions", R"({"model": "m", "prompt": "x"})").status, 200);
  EXPECT_EQ(Requests("default"), 3);
  EXPECT_EQ(BadInput(), 2);
}

TEST_F(OpenAiApiTest, AModelWithoutWorkersIsA503InOpenAisShape) {
  AddModel("m", 0);
  http::Response r = Post("/v1/completions", R"({"model": "m", "prompt": "x", "stream": true})");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.content_type, "application/json");
  Json e = Json::parse(r.body)["error"];
  EXPECT_EQ(e["type"], "server_error");
  EXPECT_EQ(e["code"], "service_unavailable");
  EXPECT_NE(e["message"].get<std::string>().find("has no worker"), std::string::npos);
}

TEST(OpenAiPathTest, TheRoutesAtTheRootAndUnderAModelAreOpenAiPaths) {
  for (const char* p : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/models/m",
                        "/predictions/m/v1/completions", "/predictions/m/1.0/v1/chat/completions",
                        "/predictions/m/1.0/v1/models"}) {
    EXPECT_TRUE(IsOpenAiPath(p)) << p;
  }
  for (const char* p :
       {"/predictions/m", "/predictions/m/1.0", "/predictions/v1", "/predictions//v1/completions",
        "/predictions/m/1.0/x/v1/completions", "/v1", "/models/m", "/ping", ""}) {
    EXPECT_FALSE(IsOpenAiPath(p)) << p;
  }
}

TEST_F(OpenAiApiTest, ModelsAreListedAndRetrieved) {
  AddModel("m", 1);
  AddModel("a", 0);
  // /v1/models lists only generative models (OpenAiGenerationTest lists one): these are not.
  http::Response r = Call(http::Method::kGet, "/v1/models");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"object":"list","data":[]})"
                    "\n");
  r = Call(http::Method::kGet, "/predictions/m/1.0/v1/models");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Json::parse(r.body)["data"].size(), 1u);
  const int64_t before = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  r = Call(http::Method::kGet, "/v1/models/m");
  ASSERT_EQ(r.status, 200);
  Json m = Json::parse(r.body);
  EXPECT_EQ(m["id"], "m");
  EXPECT_EQ(m["object"], "model");
  EXPECT_EQ(m["owned_by"], "tserve");
  // `created` is the version's load time (loaded in SetUp, seconds ago at most).
  EXPECT_LE(m["created"].get<int64_t>(), before);
  EXPECT_GT(m["created"].get<int64_t>(), before - 60);
}

TEST_F(OpenAiApiTest, AnotherMethodIsA405InOpenAisShape) {
  AddModel("m", 1);
  for (const char* path : {"/v1/completions", "/predictions/m/v1/chat/completions"}) {
    http::Response r = Call(http::Method::kGet, path);
    EXPECT_EQ(r.status, 405) << path;
    EXPECT_EQ(Json::parse(r.body)["error"]["code"], "method_not_allowed");
  }
  EXPECT_EQ(Post("/v1/models", "{}").status, 405);
}

}  // namespace
}  // namespace tserve::api
