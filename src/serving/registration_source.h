#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "serving/model_fetcher.h"

namespace tserve::serving {

// Where a registration (POST /models?url=...) may take its model archive from, and what a
// refusal tells the client: TorchServe's registration policy, in one place.
//  - a plain path ("resnet18.mar", "sub/x.mar", an absolute path) is resolved inside the
//    model store; allowed_urls does not apply to it (as in TorchServe);
//  - a URL ("scheme://...") must match allowed_urls; file:// URLs resolve inside the store,
//    http(s):// URLs are downloaded into it (size-capped; loopback and private addresses
//    only where allowed; never tserve's own listeners); other schemes are not spoken.
// The work is FetchModelArchive's (model_fetcher.h); this class chooses its inputs and turns
// its errors into the kinds the management API reports (api::ErrorFromStatus).
// Thread safety: immutable after Create; Fetch may run on many threads at once.
class RegistrationSource {
 public:
  struct Options {
    std::string model_store;                                // empty: nothing can be registered
    std::vector<std::string> allowed_urls;                  // TorchServe's allowed_urls (regexes)
    int64_t max_download_bytes = kDefaultMaxDownloadBytes;  // > 0
    bool allow_loopback = false;                            // allow_loopback_model_urls
    bool allow_private = false;                             // allow_private_model_urls
    std::vector<uint16_t> own_ports;  // tserve's listeners: never downloaded from
  };

  // Compiles allowed_urls: a pattern that does not compile is InvalidArgument naming it.
  static StatusOr<RegistrationSource> Create(Options options);

  // The archive `url` names, as an absolute path inside the model store. A downloaded
  // archive is a new file the caller owns (it may delete it when the registration fails).
  // A download stops soon after `cancel` becomes true. Errors, by kind:
  //  - InvalidArgument: no model store is configured; a download refused by the address
  //    rules ("Download from <url> refused: ...").
  //  - ModelNotFound "Given URL <url> does not match any allowed URL(s)": a URL that
  //    allowed_urls does not let through (a redirect target included).
  //  - ModelNotFound "Model not found in model store: <url>": a path or non-http(s) URL that
  //    does not resolve to an archive inside the store, whatever the cause (missing, "..",
  //    outside the store, unsupported scheme). The cause is logged, never told: the client
  //    must not learn where the store lies on this host.
  //  - DownloadFailed "Failed to download archive from: <url>[: <tserve's limit>]": an
  //    http(s) download that failed (status, size cap, timeout, network).
  //  - Internal "Model file already exists <name>": a download whose file is already in the
  //    store (TorchServe's 500), and local I/O failures.
  //  - Unavailable: the server is shutting down (`cancel`).
  StatusOr<std::string> Fetch(const std::string& url, const std::atomic<bool>& cancel) const;

  const Options& options() const { return options_; }

 private:
  RegistrationSource(Options options, UrlPolicy policy)
      : options_(std::move(options)), policy_(std::move(policy)) {}

  Options options_;
  UrlPolicy policy_;
};

}  // namespace tserve::serving
