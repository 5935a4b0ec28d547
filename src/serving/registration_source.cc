#include "serving/registration_source.h"

#include <spdlog/spdlog.h>

#include <utility>

namespace tserve::serving {

StatusOr<RegistrationSource> RegistrationSource::Create(Options options) {
  StatusOr<UrlPolicy> policy = UrlPolicy::Create(options.allowed_urls);
  if (!policy.ok()) return policy.status();
  return RegistrationSource(std::move(options), std::move(policy).value());
}

StatusOr<std::string> RegistrationSource::Fetch(const std::string& url,
                                                const std::atomic<bool>& cancel) const {
  if (options_.model_store.empty()) {
    return Status::InvalidArgument("no model_store is configured to register models into");
  }
  FetchRequest req;
  req.url = url;
  req.model_store = options_.model_store;
  req.policy = &policy_;
  req.max_bytes = options_.max_download_bytes;
  req.allow_loopback = options_.allow_loopback;
  req.allow_private = options_.allow_private;
  req.own_ports = options_.own_ports;
  req.cancel = &cancel;
  StatusOr<std::string> path = FetchModelArchive(req);
  if (path.ok()) return path;
  const Status& s = path.status();
  // TorchServe's 500 for a download whose file is already in the store.
  if (s.IsAlreadyExists()) return Status::Internal(s.message());
  // A URL allowed_urls refused (TorchServe's message, which names only the URL), and a
  // download's other errors (DownloadFailed: TorchServe's DownloadArchiveException) as they
  // are; what is not found is a model not found.
  if (s.IsModelNotFound() || IsDownloadUrl(url)) {
    if (s.code() == StatusCode::kNotFound) return Status::ModelNotFound(s.message());
    return path;
  }
  // Local paths that do not resolve inside the store: TorchServe's 404, without telling
  // the caller where the store or the target lie on this host.
  spdlog::warn("Refused to register {}: {}", url, s.message());
  return Status::ModelNotFound("Model not found in model store: " + url);
}

}  // namespace tserve::serving
