#include "api/openai_api.h"

#include <chrono>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "api/errors.h"
#include "api/inference_api.h"
#include "common/json_limits.h"

namespace tserve::api {

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

std::string Dump(const OrderedJson& j) {
  return j.dump(-1, ' ', false, OrderedJson::error_handler_t::replace);
}

// A field's value, or null when it is absent or JSON null (OpenAI clients send nulls for
// unset settings).
const Json* Field(const Json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

bool IsInteger(const Json& v) { return v.is_number_integer() || v.is_number_unsigned(); }

// An integer that fits int64 (an unsigned one above INT64_MAX does not).
bool FitsInt64(const Json& v) {
  if (v.is_number_unsigned()) {
    return v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  }
  return v.is_number_integer();
}

// ---- Settings the engine cannot honour: refused unless their value changes nothing ----

bool IsFalse(const Json& v) { return v.is_boolean() && !v.get<bool>(); }
bool IsZero(const Json& v) { return v.is_number() && v.get<double>() == 0.0; }
bool IsOne(const Json& v) { return FitsInt64(v) && v.get<int64_t>() == 1; }
bool IsEmpty(const Json& v) {
  if (v.is_string()) return v.get_ref<const std::string&>().empty();
  return (v.is_array() || v.is_object()) && v.empty();
}
bool IsZeroOrFalse(const Json& v) { return IsFalse(v) || (IsInteger(v) && IsZero(v)); }
bool IsTextFormat(const Json& v) {
  return v.is_object() && v.size() == 1 && v.contains("type") && v["type"] == "text";
}
bool IsTextOnly(const Json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const Json& m : v) {
    if (m != "text") return false;
  }
  return true;
}
bool IsNoTool(const Json& v) { return v == "none" || v == "auto"; }
bool Never(const Json&) { return false; }

struct Unsupported {
  const char* name;
  bool (*harmless)(const Json& v);
  const char* accepted;  // the values accepted, for the message
};

constexpr Unsupported kUnsupportedCommon[] = {
    {"n", IsOne, "only 1 is supported"},
    {"frequency_penalty", IsZero, "only 0 is supported"},
    {"presence_penalty", IsZero, "only 0 is supported"},
    {"logit_bias", IsEmpty, "only an empty object is supported"},
};
constexpr Unsupported kUnsupportedCompletion[] = {
    {"best_of", IsOne, "only 1 is supported"},
    {"echo", IsFalse, "only false is supported"},
    {"logprobs", Never, "log probabilities are not supported"},
    {"suffix", IsEmpty, "only an empty suffix is supported"},
};
constexpr Unsupported kUnsupportedChat[] = {
    {"logprobs", IsFalse, "only false is supported"},
    {"top_logprobs", IsZeroOrFalse, "only 0 is supported"},
    {"tools", IsEmpty, "tools are not supported"},
    {"tool_choice", IsNoTool, "only \"none\" or \"auto\" without tools is supported"},
    {"functions", IsEmpty, "functions are not supported"},
    {"function_call", IsNoTool, "only \"none\" or \"auto\" is supported"},
    {"response_format", IsTextFormat, "only {\"type\": \"text\"} is supported"},
    {"modalities", IsTextOnly, "only [\"text\"] is supported"},
    {"audio", Never, "audio output is not supported"},
    {"prediction", Never, "predicted outputs are not supported"},
    {"web_search_options", Never, "web search is not supported"},
};

template <size_t N>
std::optional<OpenAiError> CheckUnsupported(const Json& request, const Unsupported (&table)[N]) {
  for (const Unsupported& u : table) {
    const Json* v = Field(request, u.name);
    if (v != nullptr && !u.harmless(*v)) {
      return OpenAiError::BadRequest(
          std::string("Unsupported value for '") + u.name + "': " + u.accepted + ".", u.name,
          "unsupported_parameter");
    }
  }
  return std::nullopt;
}

OpenAiError WrongType(const std::string& param, const char* what) {
  return OpenAiError::BadRequest("'" + param + "' must be " + what + ".", param, "invalid_type");
}
OpenAiError BadValue(const std::string& param, const std::string& why) {
  return OpenAiError::BadRequest("'" + param + "' " + why + ".", param, "invalid_value");
}

std::optional<OpenAiError> CheckPromptSize(size_t bytes, const char* param) {
  if (bytes > kMaxPromptBytes) {
    return BadValue(param, "is " + std::to_string(bytes) + " bytes; at most " +
                               std::to_string(kMaxPromptBytes) + " are accepted");
  }
  return std::nullopt;
}

// The completions prompt: a string, or an array of one string.
std::optional<OpenAiError> CompletionPrompt(const Json& request, std::string* prompt) {
  const Json* p = Field(request, "prompt");
  if (p == nullptr) return OpenAiError::BadRequest("'prompt' is required.", "prompt", "missing");
  if (p->is_array()) {
    if (p->empty()) return BadValue("prompt", "must not be an empty array");
    for (const Json& e : *p) {
      if (!e.is_string()) {
        return BadValue("prompt", "must be text: token ids are not supported");
      }
    }
    if (p->size() > 1)
      return BadValue("prompt",
                      "must be one string: batched prompts (n > 1 prompts) are not supported");
    p = &(*p)[0];
  }
  if (!p->is_string()) return WrongType("prompt", "a string");
  *prompt = p->get<std::string>();
  return CheckPromptSize(prompt->size(), "prompt");
}

// The text of a message's content (string, or text parts); `role` assistant may have none.
std::optional<OpenAiError> MessageText(const Json& message, const std::string& where,
                                       bool may_be_empty, std::string* text) {
  const Json* content = Field(message, "content");
  text->clear();
  if (content == nullptr) {
    if (may_be_empty) return std::nullopt;
    return OpenAiError::BadRequest("'" + where + ".content' is required.", where + ".content",
                                   "missing");
  }
  if (content->is_string()) {
    *text = content->get<std::string>();
    return std::nullopt;
  }
  if (!content->is_array())
    return WrongType(where + ".content", "a string or an array of text parts");
  for (size_t i = 0; i < content->size(); ++i) {
    const Json& part = (*content)[i];
    const std::string at = where + ".content[" + std::to_string(i) + "]";
    if (!part.is_object()) return WrongType(at, "an object");
    const Json* type = Field(part, "type");
    if (type == nullptr || !type->is_string()) return WrongType(at + ".type", "a string");
    if (*type != "text") {
      return OpenAiError::BadRequest("Unsupported content part type '" + type->get<std::string>() +
                                         "' in '" + at + ".type': only \"text\" is supported.",
                                     at + ".type", "unsupported_parameter");
    }
    const Json* t = Field(part, "text");
    if (t == nullptr || !t->is_string()) return WrongType(at + ".text", "a string");
    *text += t->get_ref<const std::string&>();
    if (text->size() > kMaxPromptBytes) return CheckPromptSize(text->size(), "messages");
  }
  return std::nullopt;
}

// The role as the template writes it; "" for a role not supported.
const char* TemplateRole(const Json& role) {
  if (role == "system" || role == "developer") return "system";
  if (role == "user") return "user";
  if (role == "assistant") return "assistant";
  return "";
}

// Validates the messages and applies the template.
std::optional<OpenAiError> ChatPrompt(const Json& request, std::string* prompt) {
  const Json* messages = Field(request, "messages");
  if (messages == nullptr) {
    return OpenAiError::BadRequest("'messages' is required.", "messages", "missing");
  }
  if (!messages->is_array()) return WrongType("messages", "an array");
  if (messages->empty()) return BadValue("messages", "must hold at least one message");
  if (messages->size() > kMaxChatMessages) {
    return BadValue("messages", "holds " + std::to_string(messages->size()) +
                                    " messages; at most " + std::to_string(kMaxChatMessages) +
                                    " are accepted");
  }
  prompt->clear();
  std::string text;
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return WrongType(where, "an object");
    const Json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) return WrongType(where + ".role", "a string");
    const std::string role_name = TemplateRole(*role);
    if (role_name.empty()) {
      return OpenAiError::BadRequest(
          "Unsupported role '" + role->get<std::string>() + "' in '" + where +
              ".role': system, developer, user and assistant are supported.",
          where + ".role", "unsupported_parameter");
    }
    if (const Json* calls = Field(m, "tool_calls"); calls != nullptr && !IsEmpty(*calls)) {
      return OpenAiError::BadRequest(
          "Unsupported '" + where + ".tool_calls': tools are not supported.", where + ".tool_calls",
          "unsupported_parameter");
    }
    if (auto e = MessageText(m, where, role_name == "assistant", &text)) return e;
    *prompt += "<|" + role_name + "|>\n";
    *prompt += text;
    *prompt += '\n';
    if (auto e = CheckPromptSize(prompt->size(), "messages")) return e;
  }
  *prompt += "<|assistant|>\n";
  return CheckPromptSize(prompt->size(), "messages");
}

std::optional<OpenAiError> MaxTokens(const Json& v, const char* param, int* out) {
  if (!IsInteger(v)) return WrongType(param, "an integer");
  if (!FitsInt64(v) || v.get<int64_t>() < 1 || v.get<int64_t>() > kMaxCompletionTokens) {
    return BadValue(param, "must be between 1 and " + std::to_string(kMaxCompletionTokens));
  }
  *out = static_cast<int>(v.get<int64_t>());
  return std::nullopt;
}

// The settings shared by both APIs, written into the payload.
std::optional<OpenAiError> Settings(OpenAiKind kind, const Json& request, OrderedJson* payload,
                                    GenerationRequest* out) {
  // max_tokens; chat's max_completion_tokens (its newer name) wins over it.
  int max_tokens = 0;
  const Json* mt = Field(request, "max_tokens");
  const Json* mct = kind == OpenAiKind::kChat ? Field(request, "max_completion_tokens") : nullptr;
  if (mct != nullptr) {
    if (auto e = MaxTokens(*mct, "max_completion_tokens", &max_tokens)) return e;
  } else if (mt != nullptr) {
    if (auto e = MaxTokens(*mt, "max_tokens", &max_tokens)) return e;
  }
  if (max_tokens > 0) (*payload)["max_tokens"] = max_tokens;

  if (const Json* t = Field(request, "temperature")) {
    if (!t->is_number()) return WrongType("temperature", "a number");
    const double v = t->get<double>();
    if (!(v >= 0.0 && v <= kMaxTemperature))
      return BadValue("temperature", "must be between 0 and 2");
    (*payload)["temperature"] = v;
  }
  if (const Json* p = Field(request, "top_p")) {
    if (!p->is_number()) return WrongType("top_p", "a number");
    const double v = p->get<double>();
    if (!(v > 0.0 && v <= 1.0)) return BadValue("top_p", "must be greater than 0 and at most 1");
    (*payload)["top_p"] = v;
  }
  if (const Json* s = Field(request, "seed")) {
    if (!IsInteger(*s)) return WrongType("seed", "an integer");
    if (!FitsInt64(*s)) return BadValue("seed", "must fit in a signed 64-bit integer");
    (*payload)["seed"] = s->get<int64_t>();
  }
  if (const Json* stop = Field(request, "stop")) {
    std::vector<std::string> stops;
    if (stop->is_string()) {
      stops.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > kMaxStopSequences) {
        return BadValue("stop", "holds " + std::to_string(stop->size()) + " sequences; at most " +
                                    std::to_string(kMaxStopSequences) + " are accepted");
      }
      for (const Json& e : *stop) {
        if (!e.is_string()) return WrongType("stop", "a string or an array of strings");
        stops.push_back(e.get<std::string>());
      }
    } else {
      return WrongType("stop", "a string or an array of strings");
    }
    for (const std::string& s : stops) {
      if (s.empty()) return BadValue("stop", "must not hold an empty string");
      if (s.size() > kMaxStopBytes) {
        return BadValue("stop", "holds a sequence of " + std::to_string(s.size()) +
                                    " bytes; at most " + std::to_string(kMaxStopBytes) +
                                    " are accepted");
      }
    }
    if (!stops.empty()) (*payload)["stop"] = stops;
  }
  if (const Json* ie = Field(request, "ignore_eos")) {
    if (!ie->is_boolean()) return WrongType("ignore_eos", "a boolean");
    if (ie->get<bool>()) (*payload)["ignore_eos"] = true;
  }
  if (const Json* s = Field(request, "stream")) {
    if (!s->is_boolean()) return WrongType("stream", "a boolean");
    out->stream = s->get<bool>();
  }
  if (const Json* so = Field(request, "stream_options")) {
    if (!so->is_object()) return WrongType("stream_options", "an object");
    if (const Json* iu = Field(*so, "include_usage")) {
      if (!iu->is_boolean()) return WrongType("stream_options.include_usage", "a boolean");
      out->include_usage = iu->get<bool>();
    }
  }
  return std::nullopt;
}

const char* CodeForStatus(int status) {
  switch (status) {
    case 404:
      return "model_not_found";
    case 405:
      return "method_not_allowed";
    case 408:
      return "timeout";
    case 413:
      return "request_too_large";
    case 503:
      return "service_unavailable";
    default:
      return "";
  }
}

OrderedJson UsageJson(const OpenAiFormatter::Usage& usage) {
  OrderedJson u;
  u["prompt_tokens"] = usage.prompt_tokens;
  u["completion_tokens"] = usage.completion_tokens;
  u["total_tokens"] = usage.prompt_tokens + usage.completion_tokens;
  return u;
}

std::string SseEvent(const std::string& data) { return "data: " + data + "\n\n"; }
constexpr std::string_view kSseDone = "data: [DONE]\n\n";

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

OrderedJson ModelJson(const serving::ModelVersion& model) {
  OrderedJson m;
  m["id"] = model.name();
  m["object"] = "model";
  m["created"] = model.created_unix();  // when the version was loaded
  m["owned_by"] = "tserve";
  return m;
}

http::Response JsonAnswer(const OrderedJson& j) {
  http::Response r;
  r.content_type = "application/json";
  r.body = Dump(j);
  r.body.push_back('\n');
  return r;
}

// ---- The sink ----

class OpenAiTarget final : public serving::ResponseSink::Target {
 public:
  OpenAiTarget(http::Responder responder, OpenAiFormatter formatter, bool stream)
      : responder_(std::move(responder)),
        gone_(responder_.GoneProbe()),
        formatter_(std::move(formatter)),
        streamed_(stream) {}

  void SendPart(serving::JobPart part) override {
    completion_tokens_ += part.tokens;
    if (part.text.empty()) return;  // held back by the engine: nothing to show yet
    if (!streamed_) {
      text_ += part.text;
      return;
    }
    if (started_ && gone_()) return;  // nobody reads it; the worker aborts the sequence
    Start();
    stream_.Write(formatter_.Delta(part.text));
  }

  void Finish(serving::JobResult result) override {
    const OpenAiFormatter::Usage usage{result.prompt_tokens, result.completion_tokens != 0
                                                                 ? result.completion_tokens
                                                                 : completion_tokens_};
    if (result.status < 200 || result.status >= 300) {
      const OpenAiError error = OpenAiError::FromJobResult(result);
      if (started_ && gone_()) {
        stream_.End();  // the client left (an abort): nothing more to send
      } else if (started_) {
        stream_.Write(OpenAiFormatter::ErrorEnd(error));
        stream_.End();
      } else {
        responder_.Send(OpenAiErrorResponse(error));
      }
      return;
    }
    const std::string finish_reason = result.finish_reason.empty() ? "stop" : result.finish_reason;
    // A batch handler answers whole: its body is the text.
    if (!streamed_) {
      text_ += result.body;
      http::Response r;
      r.content_type = "application/json";
      r.body = formatter_.Completion(text_, finish_reason, usage);
      responder_.Send(std::move(r));
      return;
    }
    if (started_ && gone_()) {
      stream_.End();  // the client left: nothing more to send
      return;
    }
    Start();
    if (!result.body.empty()) stream_.Write(formatter_.Delta(result.body));
    stream_.Write(formatter_.End(finish_reason, usage));
    stream_.End();
  }

  bool client_gone() const override { return gone_(); }

 private:
  void Start() {
    if (started_) return;
    started_ = true;
    http::Response head;
    head.status = 200;
    head.content_type = "text/event-stream";
    head.headers.emplace_back("Cache-Control", "no-cache");
    stream_ = responder_.Stream(std::move(head));
  }

  http::Responder responder_;
  const std::function<bool()> gone_;  // shares the target: safe while Finish runs
  OpenAiFormatter formatter_;
  const bool streamed_;
  bool started_ = false;
  http::ResponseStream stream_;
  std::string text_;  // a non-streamed answer's parts
  int completion_tokens_ = 0;
};

}  // namespace

// ---- Errors ----

OpenAiError OpenAiError::BadRequest(std::string message, std::string param, std::string code) {
  OpenAiError e;
  e.status = 400;
  e.type = "invalid_request_error";
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

OpenAiError OpenAiError::ForStatus(int status, std::string message) {
  OpenAiError e;
  e.status = status;
  e.type = status >= 500 ? "server_error" : "invalid_request_error";
  e.message = std::move(message);
  e.code = CodeForStatus(status);
  if (status == 404) e.param = "model";
  return e;
}

OpenAiError OpenAiError::FromStatus(const Status& status) {
  if (status.ok()) return ForStatus(500, "an OK status was reported as an error");
  return ForStatus(HttpStatusFor(status.code()), status.message());
}

OpenAiError OpenAiError::FromJobResult(const serving::JobResult& result) {
  std::string message = result.body;
  if (result.error_type.empty()) {
    // A handler's own error: its JSON's "message" (or "error") when it has one.
    Json j = Json::parse(result.body, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) {
      for (const char* key : {"message", "error"}) {
        if (auto it = j.find(key); it != j.end() && it->is_string()) {
          message = it->get<std::string>();
          break;
        }
      }
    }
  }
  if (message.empty()) message = "The request failed with status " + std::to_string(result.status);
  OpenAiError e = ForStatus(result.status, std::move(message));
  if (result.status == 404) e.param.clear();  // a handler's 404 is not about the model
  return e;
}

std::string OpenAiErrorJson(const OpenAiError& error) {
  OrderedJson e;
  e["message"] = error.message;
  e["type"] = error.type;
  e["param"] = error.param.empty() ? OrderedJson(nullptr) : OrderedJson(error.param);
  e["code"] = error.code.empty() ? OrderedJson(nullptr) : OrderedJson(error.code);
  OrderedJson j;
  j["error"] = std::move(e);
  return Dump(j);
}

http::Response OpenAiErrorResponse(const OpenAiError& error) {
  http::Response r;
  r.status = error.status;
  r.content_type = "application/json";
  r.body = OpenAiErrorJson(error);
  r.body.push_back('\n');
  return r;
}

// ---- Requests ----

std::optional<OpenAiError> ParseOpenAiBody(std::string_view body, Json* out) {
  StatusOr<Json> j = ParseJsonLimited(body);
  if (!j.ok()) {
    return OpenAiError::BadRequest("The request body is not valid JSON: " + j.status().message());
  }
  if (!j->is_object()) return OpenAiError::BadRequest("The request body must be a JSON object.");
  *out = std::move(*j);
  return std::nullopt;
}

std::string ApplyChatTemplate(const Json& messages) {
  Json request;
  request["messages"] = messages;
  std::string prompt;
  (void)ChatPrompt(request, &prompt);
  return prompt;
}

std::optional<OpenAiError> TranslateRequest(OpenAiKind kind, const Json& request,
                                            GenerationRequest* out) {
  *out = GenerationRequest{};
  if (auto e = CheckUnsupported(request, kUnsupportedCommon)) return e;
  if (kind == OpenAiKind::kCompletion) {
    if (auto e = CheckUnsupported(request, kUnsupportedCompletion)) return e;
  } else {
    if (auto e = CheckUnsupported(request, kUnsupportedChat)) return e;
  }
  std::string prompt;
  if (auto e = kind == OpenAiKind::kCompletion ? CompletionPrompt(request, &prompt)
                                               : ChatPrompt(request, &prompt)) {
    return e;
  }
  OrderedJson payload;
  payload["prompt"] = std::move(prompt);
  if (auto e = Settings(kind, request, &payload, out)) return e;
  out->payload = Dump(payload);
  return std::nullopt;
}

// ---- Answers ----

OpenAiFormatter::OpenAiFormatter(OpenAiKind kind, std::string_view request_id, int64_t created,
                                 std::string model, bool include_usage)
    : kind_(kind),
      id_((kind == OpenAiKind::kChat ? "chatcmpl-" : "cmpl-") + std::string(request_id)),
      created_(created),
      model_(std::move(model)),
      include_usage_(include_usage) {}

std::string OpenAiFormatter::Completion(std::string_view text, std::string_view finish_reason,
                                        Usage usage) const {
  const bool chat = kind_ == OpenAiKind::kChat;
  OrderedJson choice;
  choice["index"] = 0;
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_reason;
  OrderedJson j;
  j["id"] = id_;
  j["object"] = chat ? "chat.completion" : "text_completion";
  j["created"] = created_;
  j["model"] = model_;
  j["choices"] = OrderedJson::array({std::move(choice)});
  j["usage"] = UsageJson(usage);
  return Dump(j) + "\n";
}

std::string OpenAiFormatter::Event(std::string_view delta, std::string_view finish_reason,
                                   bool finished) {
  const bool chat = kind_ == OpenAiKind::kChat;
  OrderedJson choice;
  choice["index"] = 0;
  if (chat) {
    OrderedJson d = OrderedJson::object();
    if (!role_sent_) {
      d["role"] = "assistant";
      role_sent_ = true;
      d["content"] = delta;
    } else if (!finished) {
      d["content"] = delta;
    }
    choice["delta"] = std::move(d);
  } else {
    choice["text"] = delta;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finished ? OrderedJson(finish_reason) : OrderedJson(nullptr);
  OrderedJson j;
  j["id"] = id_;
  j["object"] = chat ? "chat.completion.chunk" : "text_completion";
  j["created"] = created_;
  j["model"] = model_;
  j["choices"] = OrderedJson::array({std::move(choice)});
  if (include_usage_) j["usage"] = nullptr;
  return SseEvent(Dump(j));
}

std::string OpenAiFormatter::Delta(std::string_view delta) {
  if (delta.empty() && (kind_ != OpenAiKind::kChat || role_sent_)) return {};
  return Event(delta, {}, false);
}

std::string OpenAiFormatter::End(std::string_view finish_reason, Usage usage) {
  std::string out;
  if (kind_ == OpenAiKind::kChat && !role_sent_) out += Event("", {}, false);
  out += Event("", finish_reason, true);
  if (include_usage_) {
    OrderedJson j;
    j["id"] = id_;
    j["object"] = kind_ == OpenAiKind::kChat ? "chat.completion.chunk" : "text_completion";
    j["created"] = created_;
    j["model"] = model_;
    j["choices"] = OrderedJson::array();
    j["usage"] = UsageJson(usage);
    out += SseEvent(Dump(j));
  }
  out += kSseDone;
  return out;
}

std::string OpenAiFormatter::ErrorEnd(const OpenAiError& error) {
  return SseEvent(OpenAiErrorJson(error)) + std::string(kSseDone);
}

std::unique_ptr<serving::ResponseSink::Target> MakeOpenAiTarget(http::Responder responder,
                                                                OpenAiFormatter formatter,
                                                                bool stream) {
  return std::make_unique<OpenAiTarget>(std::move(responder), std::move(formatter), stream);
}

// ---- Routes ----

void OpenAiApi::RegisterRoutes(http::Router* router) {
  using M = http::Method;
  // Each route at the root and under /predictions/{model}[/{version}]; the path's model and
  // version are its first parameters.
  struct Prefix {
    const char* path;
    int params;  // 0, 1 (model) or 2 (model, version)
  };
  constexpr Prefix kPrefixes[] = {
      {"", 0}, {"/predictions/{model}", 1}, {"/predictions/{model}/{version}", 2}};
  auto model_of = [](const http::Request& r, int params) {
    return params >= 1 ? r.path_params[0] : std::string_view();
  };
  auto version_of = [](const http::Request& r, int params) {
    return params >= 2 ? r.path_params[1] : std::string_view();
  };
  // Other methods on these paths: 405 in OpenAI's shape (HEAD follows GET).
  auto refuse = [router](const std::string& path, M allowed) {
    for (M m : {M::kGet, M::kPost, M::kPut, M::kDelete, M::kPatch, M::kOptions}) {
      if (m == allowed) continue;
      router->Add(m, path, [allowed](http::Request&, http::Responder r) {
        r.Send(OpenAiErrorResponse(OpenAiError::ForStatus(
            405, std::string("Method not allowed: use ") + http::MethodName(allowed) + ".")));
      });
    }
  };
  for (const Prefix& p : kPrefixes) {
    const std::string base = std::string(p.path) + "/v1";
    const int n = p.params;
    router->Add(M::kPost, base + "/completions",
                [this, n, model_of, version_of](http::Request& req, http::Responder r) {
                  Generate(Route::kCompletions, req, std::move(r), model_of(req, n),
                           version_of(req, n));
                });
    router->Add(M::kPost, base + "/chat/completions",
                [this, n, model_of, version_of](http::Request& req, http::Responder r) {
                  Generate(Route::kChat, req, std::move(r), model_of(req, n), version_of(req, n));
                });
    router->Add(M::kGet, base + "/models",
                [this, n, model_of, version_of](http::Request& req, http::Responder r) {
                  ListModels(std::move(r), model_of(req, n), version_of(req, n));
                });
    refuse(base + "/completions", M::kPost);
    refuse(base + "/chat/completions", M::kPost);
    refuse(base + "/models", M::kGet);
  }
  router->Add(M::kGet, "/v1/models/{model}", [this](http::Request& req, http::Responder r) {
    RetrieveModel(std::move(r), req.path_params[0]);
  });
  refuse("/v1/models/{model}", M::kGet);
}

void OpenAiApi::Generate(Route route, http::Request& request, http::Responder responder,
                         std::string_view path_model, std::string_view path_version) {
  const OpenAiKind kind = route == Route::kChat ? OpenAiKind::kChat : OpenAiKind::kCompletion;
  Json body;
  std::optional<OpenAiError> error = ParseOpenAiBody(request.body, &body);
  // The model: the path's, else the body's `model`.
  std::string name(path_model);
  if (name.empty()) {
    if (error) {  // no model to count the request against
      responder.Send(OpenAiErrorResponse(*error));
      return;
    }
    const Json* m = Field(body, "model");
    if (m == nullptr) {
      responder.Send(OpenAiErrorResponse(
          OpenAiError::BadRequest("You must provide a model parameter.", "model", "missing")));
      return;
    }
    if (!m->is_string() || m->get_ref<const std::string&>().empty()) {
      responder.Send(OpenAiErrorResponse(WrongType("model", "a non-empty string")));
      return;
    }
    name = m->get<std::string>();
  }
  auto model = models_->Find(name, path_version);
  if (!model.ok()) {
    responder.Send(OpenAiErrorResponse(OpenAiError::FromStatus(model.status())));
    return;
  }
  serving::Payload payload;
  payload.explicit_version = !path_version.empty();
  GenerationRequest generation;
  if (!error) error = TranslateRequest(kind, body, &generation);
  if (error) {
    (*model)->RecordBadInput(payload.explicit_version);
    responder.Send(OpenAiErrorResponse(*error));
    return;
  }
  payload.body = std::move(generation.payload);
  payload.content_type = "application/json";
  payload.request_id = PayloadRequestId(request, &next_request_id_);
  OpenAiFormatter formatter(kind, payload.request_id, UnixNow(), (*model)->name(),
                            generation.include_usage);
  // Every outcome, a refusal included, is answered through the sink.
  (void)(*model)->Submit(std::move(payload),
                         serving::ResponseSink(MakeOpenAiTarget(
                             std::move(responder), std::move(formatter), generation.stream)));
}

bool IsOpenAiPath(std::string_view path) {
  if (path.starts_with("/v1/")) return true;
  constexpr std::string_view kPredictions = "/predictions/";
  if (!path.starts_with(kPredictions)) return false;
  path.remove_prefix(kPredictions.size());
  // {model}/v1/... or {model}/{version}/v1/...
  for (int segments = 1; segments <= 2; ++segments) {
    const size_t slash = path.find('/');
    if (slash == std::string_view::npos || slash == 0) return false;
    path.remove_prefix(slash);
    if (path.starts_with("/v1/")) return true;
    path.remove_prefix(1);
  }
  return false;
}

void OpenAiApi::ListModels(http::Responder responder, std::string_view path_model,
                           std::string_view path_version) const {
  OrderedJson data = OrderedJson::array();
  if (path_model.empty()) {
    // Only models that generate (a batch model cannot answer these routes usefully).
    for (const auto& m : models_->List()) {
      if (m->generative()) data.push_back(ModelJson(*m));
    }
  } else {
    auto model = models_->Find(path_model, path_version);
    if (!model.ok()) {
      responder.Send(OpenAiErrorResponse(OpenAiError::FromStatus(model.status())));
      return;
    }
    data.push_back(ModelJson(**model));
  }
  OrderedJson j;
  j["object"] = "list";
  j["data"] = std::move(data);
  responder.Send(JsonAnswer(j));
}

void OpenAiApi::RetrieveModel(http::Responder responder, std::string_view name) const {
  auto model = models_->Find(name, {});
  if (!model.ok()) {
    responder.Send(OpenAiErrorResponse(OpenAiError::FromStatus(model.status())));
    return;
  }
  responder.Send(JsonAnswer(ModelJson(**model)));
}

}  // namespace tserve::api
