#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tserve::http {

enum class Method { kGet, kHead, kPost, kPut, kDelete, kOptions, kPatch, kOther };
Method ParseMethod(std::string_view text);
const char* MethodName(Method m);

// One parsed request. Views point into the connection's buffers and stay valid until
// the response is sent. Thread safety: owned by one handler at a time.
class Request {
 public:
  using HeaderLookup = std::string_view (*)(const void* native, std::string_view name);

  Method method = Method::kOther;
  std::string_view method_text;
  std::string_view target;  // as received: path and query, not decoded
  std::string_view path;    // target before '?'
  std::string_view query;   // target after '?', "" when none
  std::string body;
  int version = 11;                           // 10 or 11
  std::vector<std::string_view> path_params;  // filled by the router: the {name} segments
  // The request's id, also sent back as the response's x-request-id and written in its
  // access log line: the client's x-request-id when IsAcceptableRequestId, else a fresh
  // one. Set by the server; "" for a Request made elsewhere (tests).
  std::string_view request_id;

  // First value of a header field (case-insensitive name), "" when absent.
  std::string_view Header(std::string_view name) const {
    return lookup_ != nullptr ? lookup_(native_, name) : std::string_view();
  }
  void BindHeaders(HeaderLookup lookup, const void* native) {
    lookup_ = lookup;
    native_ = native;
  }

 private:
  HeaderLookup lookup_ = nullptr;
  const void* native_ = nullptr;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra header fields
  bool close = false;                                        // close the connection after sending
};

// Builds the body of an error the HTTP layer itself produces (400 malformed, 413, 431,
// 404/405 from the router, the 500 of a Responder dropped unsent); the API layer supplies
// TorchServe's JSON shape (api::ErrorForStatus).
using ErrorFactory = Response (*)(int status, std::string_view message);

// Delivers the one response of a request, from any thread, at most once. If dropped
// without Send, the request is answered 500 (a handler bug must not hang a client), its
// body made by `errors` (text/plain when there is none).
class ResponseTarget {
 public:
  explicit ResponseTarget(ErrorFactory errors = nullptr) : errors_(errors) {}
  virtual ~ResponseTarget() = default;
  virtual void Deliver(Response response) = 0;
  // A response in parts (Responder::Stream): the head once, then chunks, then the end, in
  // that order, from one thread at a time. The defaults (for targets other than the
  // server's connections: tests, in-process callers) gather the chunks into the head's body
  // and Deliver it whole at EndStream. The server's connection sends the head at once
  // (chunked transfer encoding) and each chunk as it comes (docs/design.md "Streaming").
  virtual void StartStream(Response head);
  virtual void WriteChunk(std::string chunk);
  virtual void EndStream();
  // True once the client has closed its connection (or the connection broke) before the
  // answer was sent: the answer would be lost. Any thread; only ever goes false -> true.
  bool client_gone() const { return client_gone_.load(std::memory_order_acquire); }
  // The error body for `status`, as this target's transport writes errors.
  Response Error(int status, std::string_view message) const {
    if (errors_ != nullptr) return errors_(status, message);
    return Response{status, "text/plain", std::string(message), {}, false};
  }

 protected:
  // Called by the transport when it sees the client go away.
  void MarkClientGone() { client_gone_.store(true, std::memory_order_release); }

 private:
  const ErrorFactory errors_;
  std::atomic<bool> client_gone_{false};
  Response gathered_;  // the default StartStream/WriteChunk/EndStream's response
};

class ResponseStream;

class Responder {
 public:
  Responder() = default;
  explicit Responder(std::shared_ptr<ResponseTarget> target) : target_(std::move(target)) {}
  Responder(Responder&&) = default;
  Responder& operator=(Responder&& other) noexcept;  // an unsent old target gets its 500
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;
  ~Responder();

  void Send(Response response);
  // Answers in parts: sends `head` (its status, content type and header fields; its body,
  // if any, is the first chunk) and returns the stream that carries the rest. The Responder
  // is then sent (its 500 guard passes to the stream, which ends itself when dropped).
  ResponseStream Stream(Response head);
  bool sent() const { return target_ == nullptr; }
  // True when the client is known to have gone (see ResponseTarget::client_gone).
  bool client_gone() const { return target_ != nullptr && target_->client_gone(); }
  // A probe that answers client_gone() later, from any thread, even after this Responder
  // was moved into a callback (it shares the target). Empty target: always false.
  std::function<bool()> GoneProbe() const {
    std::shared_ptr<ResponseTarget> t = target_;
    return [t] { return t != nullptr && t->client_gone(); };
  }

 private:
  std::shared_ptr<ResponseTarget> target_;
};

// The rest of a response begun with Responder::Stream. Write sends one chunk (flushed to the
// socket at once: TCP_NODELAY); End sends the terminating chunk. A stream dropped without
// End is ended. Over HTTP/1.1 the body is chunked (Transfer-Encoding: chunked); an HTTP/1.0
// client gets the bytes as they come and the connection closes at the end.
// A client that reads too slowly (more than kMaxStreamBacklog bytes written but not yet
// taken by the socket) is cut off: the connection closes and client_gone() turns true, so
// a generator stops rather than buffering without bound.
// Move-only; one thread at a time (any thread).
inline constexpr size_t kMaxStreamBacklog = 4u << 20;
class ResponseStream {
 public:
  ResponseStream() = default;
  explicit ResponseStream(std::shared_ptr<ResponseTarget> target) : target_(std::move(target)) {}
  ResponseStream(ResponseStream&&) = default;
  ResponseStream& operator=(ResponseStream&& other) noexcept;  // an unended old one is ended
  ResponseStream(const ResponseStream&) = delete;
  ResponseStream& operator=(const ResponseStream&) = delete;
  ~ResponseStream();

  // Sends `chunk` (an empty one sends nothing). Returns !client_gone() afterwards.
  bool Write(std::string chunk);
  // Ends the response; later calls do nothing.
  void End();
  bool ended() const { return target_ == nullptr; }
  bool client_gone() const { return target_ != nullptr && target_->client_gone(); }

 private:
  std::shared_ptr<ResponseTarget> target_;
};

// Application side of a listener.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  virtual void Handle(Request& request, Responder responder) = 0;
};

// The response header field that carries the request id, and the longest client-sent id
// echoed back (longer, or with other characters than [A-Za-z0-9._-], gets a fresh id: a
// hostile value must not reach the response head or the logs).
inline constexpr std::string_view kRequestIdHeader = "x-request-id";
inline constexpr size_t kMaxRequestIdLength = 128;
bool IsAcceptableRequestId(std::string_view id);

// Query string decoding as Netty's QueryStringDecoder (TorchServe): parameters split on
// '&' and ';', names and values percent-decoded with '+' as space, a name without '='
// has an empty value. Order kept, repeats kept.
std::vector<std::pair<std::string, std::string>> ParseQuery(std::string_view query);

// "gzip" is acceptable per an Accept-Encoding value (q=0 refuses it).
bool AcceptsGzip(std::string_view accept_encoding);

}  // namespace tserve::http
