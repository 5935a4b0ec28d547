#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "http/request.h"
#include "http/router.h"
#include "serving/model_manager.h"
#include "serving/response_sink.h"

namespace tserve::api {

// OpenAI-compatible endpoints on the inference listener (docs/llm.md "OpenAI-compatible
// endpoints" has the user's view):
//   POST /v1/completions        POST /v1/chat/completions
//   GET  /v1/models             GET  /v1/models/{model}
// at the root, and under TorchServe's paths /predictions/{model}/v1/... and
// /predictions/{model}/{version}/v1/... (there the path names the model: the body's `model`
// may be absent and is ignored; /v1/models lists that one model).
//
// A completions or chat request is validated and translated into the engine's JSON payload
// (include/tserve/handler.h "Generation": prompt, max_tokens, temperature, top_p, seed,
// stop, ignore_eos; content type application/json) and submitted through
// ModelVersion::Submit like a /predictions request (counted alike; a request refused
// before Submit is counted with RecordBadInput). The answer's parts (ResponseSink::SendPart)
// become `text/event-stream` events (`stream: true`) or are gathered into one JSON answer
// with `usage`. Errors on these routes are in OpenAI's shape (OpenAiError).
// Thread safety: handlers run on many I/O threads; state is the manager's.
// Whether `path` (undecoded, without the query) is one of the OpenAI routes: /v1/...,
// /predictions/{model}/v1/... or /predictions/{model}/{version}/v1/...
bool IsOpenAiPath(std::string_view path);

class OpenAiApi {
 public:
  explicit OpenAiApi(serving::ModelManager* models) : models_(models) {}
  void RegisterRoutes(http::Router* router);

 private:
  enum class Route { kCompletions, kChat };
  void Generate(Route route, http::Request& request, http::Responder responder,
                std::string_view path_model, std::string_view path_version);
  void ListModels(http::Responder responder, std::string_view path_model,
                  std::string_view path_version) const;
  void RetrieveModel(http::Responder responder, std::string_view name) const;

  serving::ModelManager* models_;
  std::atomic<uint64_t> next_request_id_{1};  // ids of requests made without a server (tests)
};

// ---------------------------------------------------------------------------------------
// The pure parts, exposed for tests.

// Limits on a request (beyond the server's max_request_size and kMaxJsonDepth).
inline constexpr int kMaxCompletionTokens = 131072;  // max_tokens / max_completion_tokens
inline constexpr size_t kMaxStopSequences = 4;       // OpenAI's limit
inline constexpr size_t kMaxStopBytes = 256;         // one stop string
inline constexpr size_t kMaxChatMessages = 2048;
inline constexpr size_t kMaxPromptBytes = 1u << 20;  // a prompt, or a chat's templated prompt
inline constexpr double kMaxTemperature = 2.0;

// An error in OpenAI's documented shape:
//   {"error": {"message": ..., "type": ..., "param": <field or null>, "code": <string or null>}}
// with `status` as the HTTP status. type: "invalid_request_error" for 4xx, "server_error"
// for 5xx. "" param / code are written as null.
struct OpenAiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;
  std::string code;

  // 400 invalid_request_error about `param`.
  static OpenAiError BadRequest(std::string message, std::string param = {}, std::string code = {});
  // The error for any status: type by class (4xx / 5xx), code by status (404
  // model_not_found, 405 method_not_allowed, 408 timeout, 413 request_too_large,
  // 503 service_unavailable, else null); `param` "model" for a 404.
  static OpenAiError ForStatus(int status, std::string message);
  // A lookup's failure (ModelNotFound / VersionNotFound: 404 model_not_found).
  static OpenAiError FromStatus(const Status& status);
  // A failed job: its status and message (a TorchServe error's message, the `message` of a
  // handler's JSON error body, else the body as text).
  static OpenAiError FromJobResult(const serving::JobResult& result);
};
// {"error": {...}} (one line, no trailing newline).
std::string OpenAiErrorJson(const OpenAiError& error);
// The whole HTTP answer (application/json, body with a trailing newline).
http::Response OpenAiErrorResponse(const OpenAiError& error);

// Which API a request came through.
enum class OpenAiKind { kCompletion, kChat };

// A validated request: what to submit and how to answer.
struct GenerationRequest {
  std::string payload;  // the engine's JSON (compact)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses a body as JSON (kMaxJsonDepth) into `*out`; a malformed body is a 400.
std::optional<OpenAiError> ParseOpenAiBody(std::string_view body, nlohmann::json* out);

// The built-in chat template: each message as "<|role|>\n" + content + "\n", then
// "<|assistant|>\n" (the model writes the assistant's answer next). role: system, user,
// assistant ("developer" is written as system).
std::string ApplyChatTemplate(const nlohmann::json& messages);

// Validates a request of `kind` and translates it (OpenAiKind::kChat applies the chat
// template). Fields the engine cannot honour are refused with a 400 naming them; harmless
// ones are ignored (docs/llm.md lists which). `model` is not checked here (the caller
// resolves it). On success fills `*out` (payload) and returns nullopt.
std::optional<OpenAiError> TranslateRequest(OpenAiKind kind, const nlohmann::json& request,
                                            GenerationRequest* out);

// Turns one request's answer into OpenAI's JSON: the non-streamed body, or the events of a
// stream. Holds the stream's state (whether the chat's first chunk, with the role, went).
// One thread at a time.
class OpenAiFormatter {
 public:
  struct Usage {
    int prompt_tokens = 0;
    int completion_tokens = 0;
  };
  // `id`: the request's id ("cmpl-" / "chatcmpl-" is prefixed); `created`: unix seconds.
  OpenAiFormatter(OpenAiKind kind, std::string_view request_id, int64_t created, std::string model,
                  bool include_usage);

  // The non-streamed answer (one line of JSON and a newline).
  std::string Completion(std::string_view text, std::string_view finish_reason, Usage usage) const;
  // One `data: {chunk}\n\n` event carrying `delta` text (finish_reason null). The chat's
  // first chunk carries the role. Empty `delta` gives "" except for the chat's first.
  std::string Delta(std::string_view delta);
  // The end of a stream: the chunk with finish_reason (the chat's first chunk before it if
  // none went yet), the usage chunk if include_usage ("choices": []), then data: [DONE].
  std::string End(std::string_view finish_reason, Usage usage);
  // An error after the stream began: data: {"error": {...}} then data: [DONE].
  static std::string ErrorEnd(const OpenAiError& error);

 private:
  std::string Event(std::string_view delta, std::string_view finish_reason, bool finished);

  const OpenAiKind kind_;
  const std::string id_;
  const int64_t created_;
  const std::string model_;
  const bool include_usage_;
  bool role_sent_ = false;
};

// The sink target of one OpenAI request: streams the parts as events (`stream`), or gathers
// them into one answer, and writes errors in OpenAI's shape (an error after the stream
// began: OpenAiFormatter::ErrorEnd). Once the client has gone, a begun stream gets nothing
// more (an aborted generation ends as an error: 408 timeout, 503 client gone or unloading).
// Contract as ResponseSink::Target (parts and Finish from one thread).
std::unique_ptr<serving::ResponseSink::Target> MakeOpenAiTarget(http::Responder responder,
                                                                OpenAiFormatter formatter,
                                                                bool stream);

}  // namespace tserve::api
