#pragma once

#include <atomic>
#include <string>
#include <string_view>

#include "http/router.h"
#include "serving/model_manager.h"

namespace tserve::api {

// The id a prediction's job carries: the server's request id (the response's x-request-id),
// so the handler's logs, the access log and the client all name the request alike; for a
// Request made without a server (tests), the next value of `counter`, in hex.
std::string PayloadRequestId(const http::Request& request, std::atomic<uint64_t>* counter);

// The inference listener (port 8080), TorchServe's inference API:
//   GET /ping
//   GET|POST|PUT /predictions/{model}[/{version}]     predict (TorchServe takes any method)
//   GET|POST|PUT /models/{model}/invoke                predict, SageMaker-style
//   GET|POST|PUT /invocations                          predict with the model named by the
//       `model_name` query parameter, else the one model loaded at startup when there is
//       exactly one, else a `model_name` header, form field or multipart field; none: 400
//   OPTIONS on each of those                           the model's OpenAPI (404 unknown)
// Every request's id (http::Request::request_id) is its job's id. This class only
// translates: HTTP to a Payload for ModelVersion::Submit (the multipart field choice), and
// results (JobResult, Status) to HTTP; counting, deadlines and queueing are the version's.
// Thread safety: handlers run on many I/O threads; state is the manager's.
class InferenceApi {
 public:
  explicit InferenceApi(serving::ModelManager* models) : models_(models) {}
  void RegisterRoutes(http::Router* router);

 private:
  void Ping(http::Responder responder) const;
  void Predict(http::Request& request, http::Responder responder, std::string_view name,
               std::string_view version);
  void Invocations(http::Request& request, http::Responder responder);
  // OPTIONS: the model's OpenAPI description.
  void DescribeApi(std::string_view name, std::string_view version,
                   http::Responder responder) const;
  // The model_name of an /invocations request; "" when none.
  std::string InvocationModel(const http::Request& request) const;
  // The model version, or the 404 TorchServe answers (sent, via ErrorFromStatus) and null.
  std::shared_ptr<serving::ModelVersion> FindOr404(std::string_view name, std::string_view version,
                                                   http::Responder* responder) const;

  serving::ModelManager* models_;
  std::atomic<uint64_t> next_request_id_{1};  // ids of requests made without a server (tests)
};

}  // namespace tserve::api
