#include "api/inference_api.h"

#include <cstdio>

#include "api/errors.h"
#include "api/multipart.h"

namespace tserve::api {

void InferenceApi::RegisterRoutes(http::Router* router) {
  router->Add(http::Method::kGet, "/ping",
              [this](http::Request&, http::Responder r) { Ping(std::move(r)); });
  for (http::Method m : {http::Method::kPost, http::Method::kPut}) {
    router->Add(m, "/predictions/{model}",
                [this](http::Request& req, http::Responder r) { Predict(req, std::move(r)); });
    router->Add(m, "/predictions/{model}/{version}",
                [this](http::Request& req, http::Responder r) { Predict(req, std::move(r)); });
  }
}

void InferenceApi::Ping(http::Responder responder) const {
  if (models_ == nullptr || models_->Healthy()) {
    responder.Send(JsonStatus(200, "Healthy"));
  } else {
    responder.Send(JsonStatus(500, "Unhealthy"));
  }
}

void InferenceApi::Predict(http::Request& request, http::Responder responder) {
  const std::string_view name = request.path_params[0];
  const std::string_view version =
      request.path_params.size() > 1 ? request.path_params[1] : std::string_view();
  serving::ModelManager::FindError why;
  std::shared_ptr<serving::LoadedModel> model = models_->Find(name, version, &why);
  if (model == nullptr) {
    if (why == serving::ModelManager::FindError::kNoVersion) {
      responder.Send(JsonError(404, "ModelVersionNotFoundException",
                               "Model version: " + std::string(version) +
                                   " does not exist for model: " + std::string(name)));
    } else {
      responder.Send(
          JsonError(404, "ModelNotFoundException", "Model not found: " + std::string(name)));
    }
    return;
  }
  const bool explicit_version = !version.empty();
  // TorchServe counts an inference request on arrival, before it is queued.
  (explicit_version ? model->metrics.by_explicit : model->metrics.by_default).requests->Inc();
  const auto arrival = serving::Clock::now();

  // The payload: a multipart form's `data` (else `body`, else first) field, or the body.
  std::string payload;
  std::string content_type;
  const std::string_view request_type = request.Header("Content-Type");
  const std::string_view boundary = MultipartBoundary(request_type);
  if (!boundary.empty()) {
    auto parts = ParseMultipart(request.body, boundary);
    if (!parts.ok() || parts->empty()) {
      model->metrics.fail_bad_input->Inc();
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
    payload.assign(chosen->data);
    content_type.assign(chosen->content_type);
  } else {
    payload = std::move(request.body);
    content_type.assign(request_type);
  }

  char id[32];
  snprintf(id, sizeof(id), "%016llx",
           static_cast<unsigned long long>(next_request_id_.fetch_add(1)));
  // Lets the queue drop the job if the client goes away before a worker takes it.
  serving::Job::GoneProbe gone = responder.GoneProbe();
  auto shared = std::make_shared<http::Responder>(std::move(responder));
  auto job = std::make_shared<serving::Job>(
      id, std::move(payload), std::move(content_type), explicit_version, arrival,
      arrival + std::chrono::seconds(model->response_timeout_s),
      [shared](serving::JobResult result) {
        if (!result.error_type.empty()) {
          shared->Send(JsonError(result.status, result.error_type, result.body));
          return;
        }
        http::Response r;
        r.status = result.status;
        r.content_type = std::move(result.content_type);
        r.body = std::move(result.body);
        shared->Send(std::move(r));
      });
  job->set_gone_probe(std::move(gone));
  if (model->pool->Submit(job) != serving::WorkerPool::SubmitResult::kAccepted) {
    job->Complete({503, "application/json",
                   "Model \"" + model->name +
                       "\" has no worker to serve inference request. Please use scale workers "
                       "API to add workers.",
                   "ServiceUnavailableException"});
  }
}

}  // namespace tserve::api
