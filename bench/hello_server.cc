// The ceiling for bench/serving_load.sh: the least an HTTP server built on Boost.Beast/Asio
// can do per request, with tserve's threading model (src/http/server.cc): one io_context
// per thread, one acceptor whose accepted sockets are handed to the threads in turn,
// TCP_NODELAY, HTTP/1.1 keep-alive. Every request (any method, any target) is read in full
// and answered 200 with a small text body. A benchmark tool only: no limits, no timeouts.
//
// Usage: hello_server PORT [THREADS]   (THREADS defaults to the number of CPUs, as tserve's
// number_of_netty_threads; PORT 0 picks a free port). Binds 127.0.0.1, prints
// "listening on 127.0.0.1:PORT" once ready, runs until SIGINT or SIGTERM.
// <utility> first: Boost 1.74's asio/awaitable.hpp uses std::exchange without including it.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

constexpr std::string_view kBody = "Hello, world!\n";

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void Start() {
    beast::error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    Read();
  }

 private:
  void Read() {
    request_ = {};
    http::async_read(socket_, buffer_, request_,
                     [self = shared_from_this()](const beast::error_code& ec, size_t) {
                       if (!ec) self->Respond();
                     });
  }

  void Respond() {
    response_ = {};
    response_.result(http::status::ok);
    response_.version(request_.version());
    response_.set(http::field::content_type, "text/plain");
    response_.keep_alive(request_.keep_alive());
    response_.body().assign(kBody);
    response_.prepare_payload();
    http::async_write(socket_, response_,
                      [self = shared_from_this()](const beast::error_code& ec, size_t) {
                        if (ec) return;
                        if (self->response_.keep_alive()) {
                          self->Read();
                        } else {
                          beast::error_code ignored;
                          self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
                        }
                      });
  }

  tcp::socket socket_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

class Server {
 public:
  Server(uint16_t port, int threads) {
    for (int i = 0; i < threads; ++i) {
      contexts_.push_back(std::make_unique<asio::io_context>(1));
      guards_.emplace_back(asio::make_work_guard(*contexts_.back()));
    }
    acceptor_ = std::make_unique<tcp::acceptor>(*contexts_[0]);
    const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
    acceptor_->open(endpoint.protocol());
    acceptor_->set_option(asio::socket_base::reuse_address(true));
    acceptor_->bind(endpoint);
    acceptor_->listen(asio::socket_base::max_listen_connections);
  }

  uint16_t port() const { return acceptor_->local_endpoint().port(); }

  void Run() {
    Accept();
    asio::signal_set signals(*contexts_[0], SIGINT, SIGTERM);
    signals.async_wait([this](const beast::error_code&, int) { Stop(); });
    std::vector<std::thread> threads;
    for (size_t i = 1; i < contexts_.size(); ++i) {
      threads.emplace_back([ctx = contexts_[i].get()] { ctx->run(); });
    }
    contexts_[0]->run();
    for (auto& t : threads) t.join();
  }

 private:
  void Accept() {
    asio::io_context& target = *contexts_[next_++ % contexts_.size()];
    acceptor_->async_accept(target, [this](const beast::error_code& ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        // The socket belongs to its io_context; start it on that thread.
        auto executor = socket.get_executor();
        asio::post(executor, [s = std::move(socket)]() mutable {
          std::make_shared<Session>(std::move(s))->Start();
        });
      }
      Accept();
    });
  }

  void Stop() {
    beast::error_code ignored;
    acceptor_->close(ignored);
    for (auto& g : guards_) g.reset();
    for (auto& c : contexts_) c->stop();
  }

  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::unique_ptr<tcp::acceptor> acceptor_;
  size_t next_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
    return 2;
  }
  const int port = std::atoi(argv[1]);
  const int threads =
      argc > 2 ? std::atoi(argv[2]) : static_cast<int>(std::thread::hardware_concurrency());
  if (port < 0 || port > 65535 || threads < 1) {
    std::fprintf(stderr, "%s: bad PORT or THREADS\n", argv[0]);
    return 2;
  }
  try {
    Server server(static_cast<uint16_t>(port), threads);
    std::printf("listening on 127.0.0.1:%u with %d threads\n", server.port(), threads);
    std::fflush(stdout);
    server.Run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 1;
  }
  return 0;
}
