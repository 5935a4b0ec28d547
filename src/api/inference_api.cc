#include "api/inference_api.h"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "api/errors.h"
#include "api/multipart.h"
#include "api/openapi.h"
#include "common/strings.h"

namespace tserve::api {

void InferenceApi::RegisterRoutes(http::Router* router) {
  using M = http::Method;
  router->Add(M::kGet, "/ping", [this](http::Request&, http::Responder r) { Ping(std::move(r)); });
  // TorchServe predicts whatever the method (its inference handler never looks at it):
  // GET, POST and PUT are served here; other methods answer 405.
  for (M m : {M::kGet, M::kPost, M::kPut}) {
    router->Add(m, "/predictions/{model}", [this](http::Request& req, http::Responder r) {
      Predict(req, std::move(r), req.path_params[0], {});
    });
    router->Add(m, "/predictions/{model}/{version}", [this](http::Request& req, http::Responder r) {
      Predict(req, std::move(r), req.path_params[0], req.path_params[1]);
    });
    router->Add(m, "/models/{model}/invoke", [this](http::Request& req, http::Responder r) {
      Predict(req, std::move(r), req.path_params[0], {});
    });
    router->Add(m, "/invocations",
                [this](http::Request& req, http::Responder r) { Invocations(req, std::move(r)); });
  }
  router->Add(M::kOptions, "/predictions/{model}", [this](http::Request& req, http::Responder r) {
    DescribeApi(req.path_params[0], {}, std::move(r));
  });
  router->Add(M::kOptions, "/predictions/{model}/{version}",
              [this](http::Request& req, http::Responder r) {
                DescribeApi(req.path_params[0], req.path_params[1], std::move(r));
              });
  router->Add(M::kOptions, "/models/{model}/invoke", [this](http::Request& req, http::Responder r) {
    DescribeApi(req.path_params[0], {}, std::move(r));
  });
  router->Add(M::kOptions, "/invocations", [this](http::Request& req, http::Responder r) {
    const std::string name = InvocationModel(req);
    if (name.empty()) {
      r.Send(JsonError(400, "BadRequestException", "Parameter model_name is required."));
      return;
    }
    DescribeApi(name, {}, std::move(r));
  });
}

namespace {

// A prediction's answer, over HTTP: TorchServe's error JSON for an error, the handler's
// bytes and content type otherwise. Owns the request's Responder (no make_shared).
// A generation's parts stream as they come, one HTTP chunk each (TorchServe's
// send_intermediate_predict_response; the status line goes with the first part): an error
// after it can only end the answer early.
class HttpSink final : public serving::ResponseSink::Target {
 public:
  explicit HttpSink(http::Responder responder)
      : responder_(std::move(responder)), gone_(responder_.GoneProbe()) {}
  void SendPart(serving::JobPart part) override {
    if (part.text.empty()) return;
    if (!streaming_) {
      http::Response head;
      head.status = 200;
      head.content_type = kStreamType;
      head.body = std::move(part.text);
      stream_ = responder_.Stream(std::move(head));
      streaming_ = true;
      return;
    }
    (void)stream_.Write(std::move(part.text));
  }
  void Finish(serving::JobResult result) override {
    if (streaming_) {
      if (!result.error_type.empty() && !gone_()) {
        spdlog::warn("Prediction stream ended early after its first part: {} {}", result.status,
                     result.body);
      }
      stream_.End();
      return;
    }
    if (!result.finish_reason.empty() && result.error_type.empty()) {
      result.content_type = kStreamType;  // a generation that sent no text
    }
    if (!result.error_type.empty()) {
      responder_.Send(JsonError(result.status, result.error_type, result.body));
      return;
    }
    http::Response r;
    r.status = result.status;
    r.content_type = std::move(result.content_type);
    r.body = std::move(result.body);
    responder_.Send(std::move(r));
  }
  bool client_gone() const override { return gone_(); }

 private:
  static constexpr const char* kStreamType = "text/plain; charset=utf-8";
  http::Responder responder_;
  const std::function<bool()> gone_;  // shares the target: safe while Finish runs
  http::ResponseStream stream_;
  bool streaming_ = false;
};

}  // namespace

std::string PayloadRequestId(const http::Request& request, std::atomic<uint64_t>* counter) {
  if (!request.request_id.empty()) return std::string(request.request_id);
  char buf[32];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(counter->fetch_add(1)));
  return buf;
}

std::shared_ptr<serving::ModelVersion> InferenceApi::FindOr404(std::string_view name,
                                                               std::string_view version,
                                                               http::Responder* responder) const {
  auto model = models_->Find(name, version);
  if (model.ok()) return std::move(*model);
  responder->Send(ErrorFromStatus(model.status()));
  return nullptr;
}

void InferenceApi::DescribeApi(std::string_view name, std::string_view version,
                               http::Responder responder) const {
  std::shared_ptr<serving::ModelVersion> model = FindOr404(name, version, &responder);
  if (model == nullptr) return;
  http::Response r;
  r.body = ModelOpenApi(model->name());
  r.body.push_back('\n');
  responder.Send(std::move(r));
}

std::string InferenceApi::InvocationModel(const http::Request& request) const {
  // As TorchServe: the query parameter, else the one model loaded at startup, else the
  // request's parameters (tserve also reads a `model_name` header).
  for (const auto& [key, value] : http::ParseQuery(request.query)) {
    if (key == "model_name" && !value.empty()) return value;
  }
  std::string only;
  int startup = 0;
  for (const auto& m : models_->List()) {
    if (m->loaded_at_startup()) {
      ++startup;
      only = m->name();
    }
  }
  if (startup == 1) return only;
  const std::string_view header = request.Header("model_name");
  if (!header.empty()) return std::string(header);
  const std::string_view type = request.Header("Content-Type");
  const std::string_view boundary = MultipartBoundary(type);
  if (!boundary.empty()) {
    auto parts = ParseMultipart(request.body, boundary);
    if (parts.ok()) {
      for (const FormPart& p : *parts) {
        if (p.name == "model_name" && !p.data.empty()) return std::string(p.data);
      }
    }
  } else if (EqualsIgnoreCase(TrimWhitespace(type.substr(0, type.find(';'))),
                              "application/x-www-form-urlencoded")) {
    for (const auto& [key, value] : http::ParseQuery(request.body)) {
      if (key == "model_name" && !value.empty()) return value;
    }
  }
  return {};
}

void InferenceApi::Invocations(http::Request& request, http::Responder responder) {
  const std::string name = InvocationModel(request);
  if (name.empty()) {
    responder.Send(JsonError(400, "BadRequestException", "Parameter model_name is required."));
    return;
  }
  Predict(request, std::move(responder), name, {});
}

void InferenceApi::Ping(http::Responder responder) const {
  if (models_ == nullptr || models_->Healthy()) {
    responder.Send(JsonStatus(200, "Healthy"));
  } else {
    responder.Send(JsonStatus(500, "Unhealthy"));
  }
}

void InferenceApi::Predict(http::Request& request, http::Responder responder, std::string_view name,
                           std::string_view version) {
  std::shared_ptr<serving::ModelVersion> model = FindOr404(name, version, &responder);
  if (model == nullptr) return;
  serving::Payload payload;
  payload.explicit_version = !version.empty();

  // The payload: a multipart form's `data` (else `body`, else first) field, or the body.
  const std::string_view request_type = request.Header("Content-Type");
  const std::string_view boundary = MultipartBoundary(request_type);
  if (!boundary.empty()) {
    auto parts = ParseMultipart(request.body, boundary);
    if (!parts.ok() || parts->empty()) {
      model->RecordBadInput(payload.explicit_version);
      responder.Send(
          JsonError(400, "BadRequestException",
                    parts.ok() ? "multipart request without any part" : parts.status().message()));
      return;
    }
    const FormPart* chosen = &(*parts)[0];
    for (const char* field : {"body", "data"}) {
      for (const FormPart& p : *parts) {
        if (p.name == field) chosen = &p;
      }
    }
    payload.body.assign(chosen->data);
    payload.content_type.assign(chosen->content_type);
  } else {
    payload.body = std::move(request.body);
    payload.content_type.assign(request_type);
  }

  payload.request_id = PayloadRequestId(request, &next_request_id_);
  // Every outcome, a refusal included, is answered through the sink.
  (void)model->Submit(std::move(payload),
                      serving::ResponseSink(std::make_unique<HttpSink>(std::move(responder))));
}

}  // namespace tserve::api
