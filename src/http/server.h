#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "http/request.h"

namespace tserve::http {

// Told the status of every response the server sends, on every listener, before the
// bytes go out (so a client that got a response always sees it counted).
class ResponseObserver {
 public:
  virtual ~ResponseObserver() = default;
  virtual void OnResponse(int status) = 0;
};

// One response, as the access log records it. The views are valid during the call only.
struct AccessRecord {
  std::string_view listener;  // AddListener's name
  std::string_view remote;    // "/ip:port", as TorchServe's access log writes it
  std::string_view method;    // "-" when the request could not be parsed
  std::string_view target;    // "-" likewise
  int version = 11;           // 10 or 11
  int status = 0;
  std::chrono::milliseconds duration{0};  // first byte of the request to the response
  std::string_view request_id;            // what the response's x-request-id says
};

// Told every response the server sends, on every listener (refusals and errors of the
// HTTP layer included), before the bytes go out. Called from the I/O threads.
class AccessLogger {
 public:
  virtual ~AccessLogger() = default;
  virtual void Log(const AccessRecord& record) = 0;
};

struct ServerOptions {
  int threads = 1;                                // I/O threads, each with its own io_context
  int64_t max_body_size = 6553500;                // bytes; larger -> 413
  int max_header_size = 8192;                     // request line + header fields; larger -> 431
  std::chrono::milliseconds idle_timeout{60000};  // keep-alive connection with no request
  std::chrono::milliseconds read_timeout{30000};  // first byte to complete request
  ErrorFactory errors = nullptr;                  // bodies of errors the server itself produces
  ResponseObserver* observer = nullptr;
  AccessLogger* access_log = nullptr;  // null: no access log
  // Told of what an operator should see in the log (a streaming client cut off for reading
  // too slowly), from the I/O threads; null: not told.
  void (*warn)(const std::string& message) = nullptr;
};

// How many connections each listener may hold open at once by default (issue 7 #4). Every
// connection costs a file descriptor; when idle sockets used them all, no listener could
// accept. The budget is RLIMIT_NOFILE minus the descriptors already open, minus a reserve
// for the process's own files (model files, logs, downloads, /proc) and for the sockets
// being refused: the management and metrics listeners each get 1/8 of it (at least 4, at
// most 1024), the inference listener the rest (at least 1). So with the inference listener
// full, the other two still accept, and accept itself still has descriptors to work with.
// Plain data.
struct ConnectionCaps {
  int64_t inference = 0;
  int64_t management = 0;
  int64_t metrics = 0;
};
// fd_limit: the soft RLIMIT_NOFILE (<= 0: unlimited); fds_in_use: descriptors open now.
ConnectionCaps ConnectionCapsFor(int64_t fd_limit, int64_t fds_in_use);
// ConnectionCapsFor this process, now (getrlimit, /proc/self/fd); `fd_limit` gets the limit
// it used. Call once the listeners' own sockets and the model files are open.
ConnectionCaps DefaultConnectionCaps(int64_t* fd_limit = nullptr);

// An HTTP/1.1 server (Boost.Beast parsing, Asio I/O): one io_context per thread; one
// acceptor per listener (on the first thread, without SO_REUSEPORT, so a second server
// cannot bind the same port silently) handing accepted connections to the threads in
// turn; keep-alive, pipelining, request size and time limits, graceful shutdown. Beast
// appears only in server.cc.
// Thread safety: configure (AddListener) before Start; Shutdown may be called from any
// thread, once.
class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds now, so a port in use fails at startup. port 0 picks a free port; the bound
  // port is returned. `name` is for log lines ("inference", ...).
  // max_connections: connections this listener holds open at once (0: no cap). Over it, a
  // new connection is answered 503 (body from ServerOptions::errors, told to the observer)
  // and closed; the connections already open are not disturbed.
  StatusOr<uint16_t> AddListener(const std::string& name, const std::string& host, uint16_t port,
                                 RequestHandler* handler, int64_t max_connections = 0);
  void Start();
  // Stops accepting, closes idle connections, lets requests in flight finish (up to
  // `grace`), then stops the threads. Blocks until they have exited.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tserve::http
