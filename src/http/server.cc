// The only translation unit that includes Boost.Beast/Asio (they are slow to compile).
#include "http/server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace tserve::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kReadChunk = 16 * 1024;
constexpr auto kSweepPeriod = std::chrono::milliseconds(250);
constexpr auto kDrainTime = std::chrono::milliseconds(1000);
constexpr auto kShutdownReadGrace = std::chrono::milliseconds(2000);

using NativeRequest = bhttp::request<bhttp::string_body>;

std::string_view LookupHeader(const void* native, std::string_view name) {
  const auto& msg = *static_cast<const NativeRequest*>(native);
  auto it = msg.find(beast::string_view(name.data(), name.size()));
  if (it == msg.end()) return {};
  return {it->value().data(), it->value().size()};
}

void AppendStatusLine(int status, std::string* out) {
  out->append("HTTP/1.1 ");
  out->append(std::to_string(status));
  out->push_back(' ');
  beast::string_view reason = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  if (reason.empty() || reason == "<unknown-status>") reason = "Unknown";
  out->append(reason.data(), reason.size());
  out->append("\r\n");
}

}  // namespace

class Worker;

// One TCP connection. Lives on its worker's thread; Deliver may come from any thread and
// is posted there. States: reading a request, dispatched to the handler (no timeout: the
// application's own timeouts apply), writing, draining before close.
class Connection final : public ResponseTarget, public std::enable_shared_from_this<Connection> {
 public:
  Connection(Worker* worker, tcp::socket socket, RequestHandler* handler);
  void Start();
  void Deliver(Response response) override;
  void OnShutdown();
  // Closes the connection when its deadline passed; false once it is closed.
  bool Sweep(Clock::time_point now);

 private:
  enum class State { kReading, kDispatched, kWriting, kDraining, kClosed };

  void ResetParser();
  void ReadMore();
  void OnRead(const beast::error_code& ec, size_t n);
  void Parse();
  void Dispatch();
  void Fail(int status, std::string_view message);
  void Write(Response response);
  void OnWritten(const beast::error_code& ec);
  void StartDrain();
  void DrainRead();
  void Close();

  Worker* worker_;
  tcp::socket socket_;
  RequestHandler* handler_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  NativeRequest message_;
  Request request_;
  std::string head_;
  Response response_;
  State state_ = State::kReading;
  bool request_started_ = false;
  bool sent_continue_ = false;
  bool close_after_write_ = false;
  bool head_only_ = false;
  bool shutting_down_ = false;
  Clock::time_point deadline_;
  std::array<char, 512> drain_buf_;
};

// One I/O thread: its io_context, its connections and the timer that enforces their
// deadlines. Everything here runs on that thread only.
class Worker {
 public:
  Worker(const ServerOptions& options) : options(options), io(1), sweep_timer(io) {}

  void Adopt(tcp::socket socket, RequestHandler* handler) {
    auto conn = std::make_shared<Connection>(this, std::move(socket), handler);
    connections.push_back(conn);
    conn->Start();
  }

  void ArmSweep() {
    sweep_timer.expires_after(kSweepPeriod);
    sweep_timer.async_wait([this](const beast::error_code& ec) {
      if (ec) return;
      Sweep();
      if (!(stopping && connections.empty())) ArmSweep();
    });
  }

  void Sweep() {
    const auto now = Clock::now();
    size_t keep = 0;
    for (size_t i = 0; i < connections.size(); ++i) {
      auto conn = connections[i].lock();
      if (conn != nullptr && conn->Sweep(now)) connections[keep++] = connections[i];
    }
    connections.resize(keep);
  }

  void BeginShutdown() {
    stopping = true;
    for (auto& weak : connections) {
      if (auto conn = weak.lock()) conn->OnShutdown();
    }
  }

  const ServerOptions& options;
  asio::io_context io;
  asio::steady_timer sweep_timer;
  std::vector<std::weak_ptr<Connection>> connections;
  bool stopping = false;
  std::thread thread;
};

Connection::Connection(Worker* worker, tcp::socket socket, RequestHandler* handler)
    : worker_(worker),
      socket_(std::move(socket)),
      handler_(handler),
      buffer_(static_cast<size_t>(worker->options.max_header_size) + 2 * kReadChunk) {}

void Connection::Start() {
  beast::error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);
  ResetParser();
  ReadMore();
}

void Connection::ResetParser() {
  parser_.emplace();
  parser_->eager(true);
  parser_->header_limit(static_cast<std::uint32_t>(worker_->options.max_header_size));
  parser_->body_limit(static_cast<std::uint64_t>(worker_->options.max_body_size));
  request_started_ = false;
  sent_continue_ = false;
  state_ = State::kReading;
  deadline_ = Clock::now() + worker_->options.idle_timeout;
}

void Connection::ReadMore() {
  if (shutting_down_ && !request_started_ && buffer_.size() == 0) {
    Close();
    return;
  }
  const size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) {
    Fail(431, "Request header fields are too large");
    return;
  }
  socket_.async_read_some(
      buffer_.prepare(std::min(room, kReadChunk)),
      [self = shared_from_this()](const beast::error_code& ec, size_t n) { self->OnRead(ec, n); });
}

void Connection::OnRead(const beast::error_code& ec, size_t n) {
  if (state_ == State::kClosed) return;
  if (ec) {
    if (request_started_ && ec == asio::error::eof) {
      // The client gave up mid-request: nothing to answer.
    }
    Close();
    return;
  }
  buffer_.commit(n);
  if (!request_started_) {
    request_started_ = true;
    deadline_ = Clock::now() + worker_->options.read_timeout;
  }
  Parse();
}

void Connection::Parse() {
  beast::error_code ec;
  while (buffer_.size() > 0 && !parser_->is_done()) {
    if (!request_started_) {
      request_started_ = true;
      deadline_ = Clock::now() + worker_->options.read_timeout;
    }
    size_t used = parser_->put(buffer_.data(), ec);
    buffer_.consume(used);
    if (ec == bhttp::error::need_more) {
      ec = {};
      break;
    }
    if (ec) break;
    if (used == 0) break;
  }
  if (ec) {
    if (ec == bhttp::error::header_limit) {
      Fail(431, "Request header fields are too large");
    } else if (ec == bhttp::error::body_limit) {
      Fail(413, "Request body is larger than max_request_size");
    } else {
      Fail(400, "Malformed HTTP request: " + ec.message());
    }
    return;
  }
  if (parser_->is_done()) {
    Dispatch();
    return;
  }
  if (parser_->is_header_done() && !sent_continue_) {
    sent_continue_ = true;
    auto expect = parser_->get()[bhttp::field::expect];
    if (beast::iequals(expect, "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(socket_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](const beast::error_code& wec, size_t) {
                          if (wec) {
                            self->Close();
                            return;
                          }
                          self->ReadMore();
                        });
      return;
    }
  }
  ReadMore();
}

void Connection::Dispatch() {
  state_ = State::kDispatched;
  deadline_ = Clock::time_point::max();
  message_ = parser_->release();
  head_only_ = message_.method() == bhttp::verb::head;
  close_after_write_ = !message_.keep_alive() || shutting_down_;

  request_ = Request();
  beast::string_view method = message_.method_string();
  request_.method_text = std::string_view(method.data(), method.size());
  request_.method = ParseMethod(request_.method_text);
  beast::string_view target = message_.target();
  std::string_view t(target.data(), target.size());
  // absolute-form ("http://host/path"): keep the path onwards.
  if (t.size() > 7 && (t.substr(0, 7) == "http://" || t.substr(0, 8) == "https://")) {
    size_t slash = t.find('/', t.find("//") + 2);
    t = slash == std::string_view::npos ? std::string_view("/") : t.substr(slash);
  }
  request_.target = t;
  size_t q = t.find('?');
  request_.path = t.substr(0, q);
  request_.query = q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
  request_.version = static_cast<int>(message_.version());
  request_.body = std::move(message_.body());
  request_.BindHeaders(&LookupHeader, &message_);
  handler_->Handle(request_, Responder(shared_from_this()));
}

void Connection::Deliver(Response response) {
  if (worker_->io.get_executor().running_in_this_thread()) {
    Write(std::move(response));
    return;
  }
  asio::post(worker_->io, [self = shared_from_this(), r = std::move(response)]() mutable {
    self->Write(std::move(r));
  });
}

void Connection::Fail(int status, std::string_view message) {
  // Framing is lost: answer, then close without reading further requests.
  head_only_ = false;
  close_after_write_ = true;
  Response r = worker_->options.errors != nullptr
                   ? worker_->options.errors(status, message)
                   : Response{status, "text/plain", std::string(message), {}, true};
  r.close = true;
  Write(std::move(r));
}

void Connection::Write(Response response) {
  if (state_ == State::kClosed) return;
  state_ = State::kWriting;
  deadline_ = Clock::now() + std::max(worker_->options.idle_timeout, worker_->options.read_timeout);
  response_ = std::move(response);
  if (response_.close) close_after_write_ = true;
  if (worker_->options.observer != nullptr) worker_->options.observer->OnResponse(response_.status);

  head_.clear();
  AppendStatusLine(response_.status, &head_);
  if (!response_.content_type.empty()) {
    head_.append("Content-Type: ");
    head_.append(response_.content_type);
    head_.append("\r\n");
  }
  head_.append("Content-Length: ");
  head_.append(std::to_string(response_.body.size()));
  head_.append("\r\n");
  for (const auto& [name, value] : response_.headers) {
    head_.append(name);
    head_.append(": ");
    head_.append(value);
    head_.append("\r\n");
  }
  if (close_after_write_) {
    head_.append("Connection: close\r\n");
  } else if (request_.version == 10) {
    head_.append("Connection: keep-alive\r\n");
  }
  head_.append("\r\n");
  std::array<asio::const_buffer, 2> buffers = {
      asio::buffer(head_), head_only_ ? asio::const_buffer() : asio::buffer(response_.body)};
  asio::async_write(
      socket_, buffers,
      [self = shared_from_this()](const beast::error_code& ec, size_t) { self->OnWritten(ec); });
}

void Connection::OnWritten(const beast::error_code& ec) {
  if (ec) {
    Close();
    return;
  }
  response_ = Response();
  request_ = Request();
  message_ = NativeRequest();
  if (close_after_write_ || shutting_down_) {
    StartDrain();
    return;
  }
  ResetParser();
  if (buffer_.size() > 0) {
    Parse();  // a pipelined request is already here
  } else {
    ReadMore();
  }
}

void Connection::StartDrain() {
  // Half-close and read what the client still sends, so that our response is not lost
  // to a reset caused by unread data (e.g. a body we refused with 413).
  state_ = State::kDraining;
  deadline_ = Clock::now() + kDrainTime;
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  DrainRead();
}

void Connection::DrainRead() {
  socket_.async_read_some(asio::buffer(drain_buf_),
                          [self = shared_from_this()](const beast::error_code& ec, size_t) {
                            if (ec) {
                              self->Close();
                            } else if (self->state_ == State::kDraining) {
                              self->DrainRead();
                            }
                          });
}

void Connection::Close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

void Connection::OnShutdown() {
  shutting_down_ = true;
  if (state_ != State::kReading) return;  // dispatched or writing: let it finish
  if (!request_started_ && buffer_.size() == 0) {
    Close();
    return;
  }
  // A request still arriving is not in flight yet: give it a short grace, not the whole
  // read timeout, so one slow client cannot hold up a restart.
  deadline_ = std::min(deadline_, Clock::now() + kShutdownReadGrace);
}

bool Connection::Sweep(Clock::time_point now) {
  if (state_ == State::kClosed) return false;
  if (now >= deadline_) Close();
  return state_ != State::kClosed;
}

class Server::Impl {
 public:
  explicit Impl(ServerOptions options) : options_(std::move(options)) {
    int n = std::max(1, options_.threads);
    for (int i = 0; i < n; ++i) workers_.push_back(std::make_unique<Worker>(options_));
  }

  StatusOr<uint16_t> AddListener(const std::string& name, const std::string& host, uint16_t port,
                                 RequestHandler* handler) {
    beast::error_code ec;
    asio::ip::address addr;
    if (host == "localhost") {
      addr = asio::ip::make_address("127.0.0.1");
    } else {
      addr = asio::ip::make_address(host, ec);
      if (ec) {
        tcp::resolver resolver(workers_[0]->io);
        auto results = resolver.resolve(host, "", ec);
        if (ec || results.empty()) {
          return Status::InvalidArgument(name + " address: cannot resolve host \"" + host + "\"");
        }
        addr = results.begin()->endpoint().address();
      }
    }
    // One acceptor per listener; accepted sockets are handed to the workers in turn. (Not
    // SO_REUSEPORT per thread: it would let a second tserve bind the same port silently.)
    auto acceptor = std::make_unique<tcp::acceptor>(workers_[0]->io);
    tcp::endpoint endpoint(addr, port);
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Status::Unavailable("cannot listen on " + host + ":" + std::to_string(port) +
                                 " for the " + name + " API: " + ec.message());
    }
    uint16_t bound = acceptor->local_endpoint().port();
    listeners_.push_back(Listener{std::move(acceptor), handler, {}});
    listeners_.back().retry = std::make_unique<asio::steady_timer>(workers_[0]->io);
    return bound;
  }

  void Start() {
    for (auto& l : listeners_) Accept(&l);
    for (auto& w : workers_) {
      w->ArmSweep();
      Worker* raw = w.get();
      w->thread = std::thread([raw] { raw->io.run(); });
    }
  }

  void Shutdown(std::chrono::milliseconds grace) {
    if (shut_down_.exchange(true)) return;
    asio::post(workers_[0]->io, [this] {
      for (auto& l : listeners_) {
        beast::error_code ignored;
        l.acceptor->close(ignored);
        l.retry->cancel();
      }
    });
    for (auto& w : workers_) {
      Worker* raw = w.get();
      asio::post(w->io, [raw] { raw->BeginShutdown(); });
    }
    // Wait for the workers to run out of work, then force the stragglers.
    const auto until = Clock::now() + grace;
    for (auto& w : workers_) {
      while (!w->io.stopped() && Clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    for (auto& w : workers_) w->io.stop();
    for (auto& w : workers_) {
      if (w->thread.joinable()) w->thread.join();
    }
  }

  ~Impl() {
    if (!shut_down_) Shutdown(std::chrono::milliseconds(0));
  }

 private:
  struct Listener {
    std::unique_ptr<tcp::acceptor> acceptor;
    RequestHandler* handler;
    std::unique_ptr<asio::steady_timer> retry;
  };

  void Accept(Listener* l) {
    Worker* target = workers_[next_worker_++ % workers_.size()].get();
    l->acceptor->async_accept(
        target->io, [this, l, target](const beast::error_code& ec, tcp::socket socket) {
          if (ec == asio::error::operation_aborted || !l->acceptor->is_open()) return;
          if (ec) {
            // e.g. out of file descriptors: back off instead of spinning.
            l->retry->expires_after(std::chrono::milliseconds(50));
            l->retry->async_wait([this, l](const beast::error_code& tec) {
              if (!tec) Accept(l);
            });
            return;
          }
          asio::post(target->io, [target, l, s = std::move(socket)]() mutable {
            if (target->stopping) return;
            target->Adopt(std::move(s), l->handler);
          });
          Accept(l);
        });
  }

  ServerOptions options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Listener> listeners_;
  size_t next_worker_ = 0;
  std::atomic<bool> shut_down_{false};
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;

StatusOr<uint16_t> Server::AddListener(const std::string& name, const std::string& host,
                                       uint16_t port, RequestHandler* handler) {
  return impl_->AddListener(name, host, port, handler);
}

void Server::Start() { impl_->Start(); }

void Server::Shutdown(std::chrono::milliseconds grace) { impl_->Shutdown(grace); }

}  // namespace tserve::http
