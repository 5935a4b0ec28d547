// http::Server over real loopback sockets: a dispatched request notices its client leaving
// (issue 7 #13), pipelining still answers in order, and the per-listener connection cap
// answers 503 and counts it (issue 7 #4).
#include "http/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tserve::http {
namespace {

using namespace std::chrono_literals;

// Generous: only a broken server waits this long (no test asserts a duration).
constexpr auto kPatience = 10s;

// Holds every Responder it is given until the test answers it.
class HoldingHandler final : public RequestHandler {
 public:
  void Handle(Request& request, Responder responder) override {
    std::lock_guard<std::mutex> lock(mu_);
    paths_.emplace_back(request.path);
    held_.push_back(std::move(responder));
    cv_.notify_all();
  }

  // Waits until `n` requests arrived; false when they did not within kPatience.
  bool WaitForRequests(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kPatience, [&] { return paths_.size() >= n; });
  }
  size_t requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return paths_.size();
  }
  std::string path(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return paths_.at(i);
  }
  // The i-th request's probe (valid after the Responder is answered too).
  std::function<bool()> Probe(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.at(i).GoneProbe();
  }
  // Answers the i-th request in parts: sends `head` and returns the stream.
  ResponseStream Stream(size_t i, Response head) {
    Responder r;
    {
      std::lock_guard<std::mutex> lock(mu_);
      r = std::move(held_.at(i));
    }
    return r.Stream(std::move(head));
  }
  void Answer(size_t i, std::string body) {
    Responder r;
    {
      std::lock_guard<std::mutex> lock(mu_);
      r = std::move(held_.at(i));
    }
    Response resp;
    resp.content_type = "text/plain";
    resp.body = std::move(body);
    r.Send(std::move(resp));
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> paths_;
  std::deque<Responder> held_;
};

// Answers every request at once with its path.
class EchoPathHandler final : public RequestHandler {
 public:
  void Handle(Request& request, Responder responder) override {
    Response resp;
    resp.content_type = "text/plain";
    resp.body = std::string(request.path);
    responder.Send(std::move(resp));
  }
};

// Answers every request at once with the id the server gave it.
class EchoIdHandler final : public RequestHandler {
 public:
  void Handle(Request& request, Responder responder) override {
    Response resp;
    resp.content_type = "text/plain";
    resp.body = "id=" + std::string(request.request_id);
    responder.Send(std::move(resp));
  }
};

// Keeps every access record (copied).
class RecordingAccessLog final : public AccessLogger {
 public:
  struct Line {
    std::string method, target, request_id;
    int status;
  };
  void Log(const AccessRecord& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back(
        {std::string(r.method), std::string(r.target), std::string(r.request_id), r.status});
  }
  std::vector<Line> lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }

 private:
  std::mutex mu_;
  std::vector<Line> lines_;
};

// The value of the response's x-request-id field, "" when absent.
std::string RequestIdOf(const std::string& response) {
  size_t at = response.find("\r\nx-request-id: ");
  if (at == std::string::npos) return "";
  at += 16;  // "\r\nx-request-id: "
  return response.substr(at, response.find("\r\n", at) - at);
}

class CountingObserver final : public ResponseObserver {
 public:
  void OnResponse(int status) override {
    if (status >= 500) {
      fivexx.fetch_add(1);
    } else if (status >= 200 && status < 300) {
      twoxx.fetch_add(1);
    }
  }
  std::atomic<int> twoxx{0};
  std::atomic<int> fivexx{0};
};

Response JsonError(int status, std::string_view message) {
  Response r;
  r.status = status;
  r.body =
      "{\"code\": " + std::to_string(status) + ", \"message\": \"" + std::string(message) + "\"}";
  return r;
}

// A blocking loopback client socket.
class Client {
 public:
  // receive_buffer > 0: SO_RCVBUF, set before connecting (a client that reads slowly).
  explicit Client(uint16_t port, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (receive_buffer > 0) {
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{static_cast<time_t>(kPatience.count()), 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~Client() { Close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }
  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  void ShutdownWrite() { ::shutdown(fd_, SHUT_WR); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // One response: status line + headers + Content-Length body; "" on EOF/timeout first.
  std::string ReadResponse() {
    while (true) {
      size_t end = buf_.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t len = 0;
        size_t cl = buf_.find("Content-Length: ");
        if (cl != std::string::npos && cl < end) len = std::stoul(buf_.substr(cl + 16));
        if (buf_.size() >= end + 4 + len) {
          std::string out = buf_.substr(0, end + 4 + len);
          buf_.erase(0, end + 4 + len);
          return out;
        }
      }
      if (!Fill()) return "";
    }
  }
  // True when the server closed the connection (EOF) with nothing more to read.
  bool ReadsEof() { return buf_.empty() && !Fill(); }
  // The status line and header fields of a response (through the blank line); "" on EOF.
  std::string ReadHead() {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return "";
    }
    std::string out = buf_.substr(0, end + 4);
    buf_.erase(0, end + 4);
    return out;
  }
  // One chunk of a chunked body: its data ("" for the last chunk, which ends the body);
  // nullopt on EOF or bad framing.
  std::optional<std::string> ReadChunk() {
    size_t eol;
    while ((eol = buf_.find("\r\n")) == std::string::npos) {
      if (!Fill()) return std::nullopt;
    }
    size_t size = 0;
    const auto [ptr, ec] = std::from_chars(buf_.data(), buf_.data() + eol, size, 16);
    if (ec != std::errc() || ptr != buf_.data() + eol || eol == 0) return std::nullopt;
    while (buf_.size() < eol + 2 + size + 2) {
      if (!Fill()) return std::nullopt;
    }
    if (buf_.compare(eol + 2 + size, 2, "\r\n") != 0) return std::nullopt;
    std::string data = buf_.substr(eol + 2, size);
    buf_.erase(0, eol + 2 + size + 2);
    return data;
  }
  // Everything until the server closes.
  std::string ReadToEof() {
    while (Fill()) {
    }
    return std::exchange(buf_, std::string());
  }
  // True when nothing was received beyond what was consumed (no read: only what is here).
  bool NothingPending() const { return buf_.empty(); }

 private:
  bool Fill() {
    char tmp[4096];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

bool Eventually(const std::function<bool()>& condition) {
  const auto until = std::chrono::steady_clock::now() + kPatience;
  while (std::chrono::steady_clock::now() < until) {
    if (condition()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return condition();
}

std::string Get(std::string_view path) {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: t\r\n\r\n";
}

// ServerOptions::warn: counts what the server logged at warn.
std::atomic<int> g_warnings{0};
void CountWarning(const std::string&) { g_warnings.fetch_add(1); }

class ServerTest : public ::testing::Test {
 protected:
  uint16_t StartServer(RequestHandler* handler, int64_t max_connections = 0, int threads = 2,
                       std::chrono::milliseconds timeouts = std::chrono::milliseconds(0)) {
    ServerOptions options;
    options.threads = threads;
    if (timeouts.count() > 0) {
      options.idle_timeout = timeouts;
      options.read_timeout = timeouts;
    }
    options.warn = &CountWarning;
    options.errors = &JsonError;
    options.observer = &observer_;
    options.access_log = &access_log_;
    options.max_body_size = 1024;
    server_ = std::make_unique<Server>(options);
    auto port = server_->AddListener("test", "127.0.0.1", 0, handler, max_connections);
    EXPECT_TRUE(port.ok()) << port.status().message();
    server_->Start();
    return port.ok() ? *port : 0;
  }
  void SetUp() override { g_warnings.store(0); }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::milliseconds(2000));
  }

  CountingObserver observer_;
  RecordingAccessLog access_log_;
  std::unique_ptr<Server> server_;
};

// ---- issue 9: request/response, keep-alive, client close, errors from the factory ----

// Drops every Responder without answering (a handler bug).
class DroppingHandler final : public RequestHandler {
 public:
  void Handle(Request&, Responder) override {}
};

TEST_F(ServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  EchoPathHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  for (const char* path : {"/one", "/two", "/three"}) {
    ASSERT_TRUE(client.Send(Get(path)));
    std::string resp = client.ReadResponse();
    EXPECT_NE(resp.find("HTTP/1.1 200 OK"), std::string::npos) << resp;
    EXPECT_NE(resp.find(std::string("\r\n\r\n") + path), std::string::npos) << resp;
    EXPECT_EQ(resp.find("Connection: close"), std::string::npos) << resp;
  }
}

TEST_F(ServerTest, ConnectionCloseRequestIsAnsweredThenClosed) {
  EchoPathHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send("GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  std::string resp = client.ReadResponse();
  EXPECT_NE(resp.find("/bye"), std::string::npos) << resp;
  EXPECT_TRUE(client.ReadsEof());
}

// Issue 9 §4: the 500 for a request whose handler dropped its Responder is made by the
// server's error factory (options.errors), not a body hard-coded in the HTTP layer.
TEST_F(ServerTest, ADroppedResponderIsAnswered500ByTheErrorFactory) {
  DroppingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/dropped")));
  std::string resp = client.ReadResponse();
  EXPECT_NE(resp.find("HTTP/1.1 500"), std::string::npos) << resp;
  EXPECT_NE(resp.find("{\"code\": 500, \"message\": \"no response\"}"), std::string::npos) << resp;
  // The connection is still usable.
  ASSERT_TRUE(client.Send(Get("/again")));
  EXPECT_NE(client.ReadResponse().find("HTTP/1.1 500"), std::string::npos);
}

TEST_F(ServerTest, ClientClosingAfterItsAnswerLeavesTheServerServing) {
  EchoPathHandler handler;
  uint16_t port = StartServer(&handler);
  for (int i = 0; i < 20; ++i) {
    Client client(port);
    ASSERT_TRUE(client.Send(Get("/short")));
    ASSERT_NE(client.ReadResponse().find("/short"), std::string::npos);
  }  // each closes at once
  Client last(port);
  ASSERT_TRUE(last.Send(Get("/still")));
  EXPECT_NE(last.ReadResponse().find("/still"), std::string::npos);
}

TEST_F(ServerTest, ShutdownWithIdleConnectionsReturnsAndClosesThem) {
  EchoPathHandler handler;
  uint16_t port = StartServer(&handler);
  Client idle(port);
  ASSERT_TRUE(idle.Send(Get("/x")));
  ASSERT_NE(idle.ReadResponse().find("/x"), std::string::npos);
  server_->Shutdown(std::chrono::milliseconds(5000));  // must not wait for the idle one
  server_.reset();
  EXPECT_TRUE(idle.ReadsEof());
}

// ---- issue 7 #13: a dispatched request notices that its client left ----

TEST_F(ServerTest, ClientCloseWhileDispatchedMarksClientGone) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  auto client = std::make_unique<Client>(port);
  ASSERT_TRUE(client->connected());
  ASSERT_TRUE(client->Send(Get("/slow")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  auto probe = handler.Probe(0);
  EXPECT_FALSE(probe());
  client.reset();  // the client gives up and closes
  EXPECT_TRUE(Eventually(probe)) << "the server never noticed the client closing";
  // Answering a gone client is harmless, and the server keeps serving others.
  handler.Answer(0, "late");
  Client other(port);
  ASSERT_TRUE(other.Send(Get("/next")));
  ASSERT_TRUE(handler.WaitForRequests(2));
  EXPECT_FALSE(handler.Probe(1)());
  handler.Answer(1, "fine");
  std::string resp = other.ReadResponse();
  EXPECT_NE(resp.find("HTTP/1.1 200 OK"), std::string::npos) << resp;
  EXPECT_NE(resp.find("fine"), std::string::npos) << resp;
}

TEST_F(ServerTest, ClientCloseIsNoticedForAConnectionCloseRequestToo) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  auto client = std::make_unique<Client>(port);
  ASSERT_TRUE(client->Send("GET /once HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"));
  ASSERT_TRUE(handler.WaitForRequests(1));
  auto probe = handler.Probe(0);
  client.reset();
  EXPECT_TRUE(Eventually(probe));
  handler.Answer(0, "late");
}

TEST_F(ServerTest, HalfCloseWhileDispatchedCountsAsGoneButStillGetsTheAnswer) {
  // Netty (TorchServe) treats an input shutdown as the channel closing: so do we. The
  // answer is still written, and a half-closed client can read it.
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/half")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  client.ShutdownWrite();
  auto probe = handler.Probe(0);
  EXPECT_TRUE(Eventually(probe));
  handler.Answer(0, "still here");
  std::string resp = client.ReadResponse();
  EXPECT_NE(resp.find("HTTP/1.1 200 OK"), std::string::npos) << resp;
  EXPECT_NE(resp.find("Connection: close"), std::string::npos) << resp;
  EXPECT_NE(resp.find("still here"), std::string::npos) << resp;
  EXPECT_TRUE(client.ReadsEof());
  EXPECT_EQ(observer_.twoxx.load(), 1);
}

TEST_F(ServerTest, ClientStillConnectedIsNotGone) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/a")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  auto probe = handler.Probe(0);
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(probe());
  handler.Answer(0, "ok");
  EXPECT_NE(client.ReadResponse().find("200 OK"), std::string::npos);
  EXPECT_FALSE(probe());
}

// ---- pipelining: bytes read while dispatched wait for their turn ----

TEST_F(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/first") + Get("/second")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  // The second request is read but not dispatched until the first is answered.
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(handler.requests(), 1u);
  EXPECT_FALSE(handler.Probe(0)());
  handler.Answer(0, "one");
  ASSERT_TRUE(handler.WaitForRequests(2));
  EXPECT_EQ(handler.path(1), "/second");
  handler.Answer(1, "two");
  std::string r1 = client.ReadResponse();
  std::string r2 = client.ReadResponse();
  EXPECT_NE(r1.find("\r\n\r\none"), std::string::npos) << r1;
  EXPECT_NE(r2.find("\r\n\r\ntwo"), std::string::npos) << r2;
}

TEST_F(ServerTest, PipelinedRequestsAfterDispatchAreAnsweredInOrder) {
  // The second request arrives while the first is dispatched (read by the pending read).
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/first")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ASSERT_TRUE(client.Send(Get("/second") + Get("/third")));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(handler.requests(), 1u);
  EXPECT_FALSE(handler.Probe(0)());
  handler.Answer(0, "one");
  ASSERT_TRUE(handler.WaitForRequests(2));
  handler.Answer(1, "two");
  ASSERT_TRUE(handler.WaitForRequests(3));
  EXPECT_EQ(handler.path(2), "/third");
  handler.Answer(2, "three");
  EXPECT_NE(client.ReadResponse().find("\r\n\r\none"), std::string::npos);
  EXPECT_NE(client.ReadResponse().find("\r\n\r\ntwo"), std::string::npos);
  EXPECT_NE(client.ReadResponse().find("\r\n\r\nthree"), std::string::npos);
}

TEST_F(ServerTest, OversizedPipelinedHeadWhileDispatchedIsRefusedAfterTheAnswer) {
  // What arrives during dispatch is held to the header-size cap: the first request is
  // answered, then the oversized one gets 431.
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/first")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  std::string huge = "GET /x HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n";
  std::thread sender([&] { client.Send(huge); });
  std::this_thread::sleep_for(50ms);
  handler.Answer(0, "one");
  EXPECT_NE(client.ReadResponse().find("\r\n\r\none"), std::string::npos);
  std::string second = client.ReadResponse();
  EXPECT_NE(second.find("HTTP/1.1 431"), std::string::npos) << second;
  client.ShutdownWrite();
  sender.join();
  EXPECT_EQ(handler.requests(), 1u);
}

// ---- issue 7 #4: the per-listener connection cap ----

TEST_F(ServerTest, ConnectionsOverTheCapAreAnswered503AndCounted) {
  EchoPathHandler handler;
  uint16_t port = StartServer(&handler, /*max_connections=*/2);
  Client a(port);
  Client b(port);
  ASSERT_TRUE(a.connected() && b.connected());
  // Both hold their slots: prove they were accepted by serving one request on each.
  ASSERT_TRUE(a.Send(Get("/a")));
  EXPECT_NE(a.ReadResponse().find("200 OK"), std::string::npos);
  ASSERT_TRUE(b.Send(Get("/b")));
  EXPECT_NE(b.ReadResponse().find("200 OK"), std::string::npos);

  Client over(port);
  ASSERT_TRUE(over.connected());
  std::string resp = over.ReadResponse();
  EXPECT_NE(resp.find("HTTP/1.1 503 Service Unavailable"), std::string::npos) << resp;
  EXPECT_NE(resp.find("Connection: close"), std::string::npos) << resp;
  EXPECT_NE(resp.find("{\"code\": 503, \"message\": \"Too many connections to the test API "
                      "(the limit is 2); retry later\"}"),
            std::string::npos)
      << resp;
  EXPECT_TRUE(over.ReadsEof());
  EXPECT_EQ(observer_.fivexx.load(), 1);

  // The open connections are not disturbed.
  ASSERT_TRUE(a.Send(Get("/again")));
  EXPECT_NE(a.ReadResponse().find("/again"), std::string::npos);

  // A closed connection gives its slot back.
  b.Close();
  EXPECT_TRUE(Eventually([&] {
    Client c(port);
    return c.Send(Get("/c")) && c.ReadResponse().find("200 OK") != std::string::npos;
  }));
}

TEST_F(ServerTest, ManyConnectionsOverTheCapAllGet503) {
  // More than the listener answers politely at once: the rest are refused outright, still
  // with the 503, and every refusal is counted.
  EchoPathHandler handler;
  uint16_t port = StartServer(&handler, /*max_connections=*/1);
  Client held(port);
  ASSERT_TRUE(held.Send(Get("/held")));
  EXPECT_NE(held.ReadResponse().find("200 OK"), std::string::npos);
  std::vector<std::unique_ptr<Client>> over;
  for (int i = 0; i < 60; ++i) over.push_back(std::make_unique<Client>(port));
  int refused = 0;
  for (auto& c : over) {
    std::string resp = c->ReadResponse();
    if (resp.find("HTTP/1.1 503 ") != std::string::npos) ++refused;
  }
  EXPECT_EQ(refused, 60);
  EXPECT_EQ(observer_.fivexx.load(), 60);
  ASSERT_TRUE(held.Send(Get("/still")));
  EXPECT_NE(held.ReadResponse().find("/still"), std::string::npos);
}

// ---- issue 8 #8: x-request-id on every response, the same id in the access log ----

TEST_F(ServerTest, EveryResponseCarriesAFreshRequestIdAndTheHandlerSeesIt) {
  EchoIdHandler handler;
  uint16_t port = StartServer(&handler);
  Client c(port);
  ASSERT_TRUE(c.Send(Get("/a") + Get("/b")));
  std::string a = c.ReadResponse();
  std::string b = c.ReadResponse();
  const std::string id_a = RequestIdOf(a);
  const std::string id_b = RequestIdOf(b);
  EXPECT_FALSE(id_a.empty()) << a;
  EXPECT_NE(id_a, id_b);
  EXPECT_NE(a.find("id=" + id_a), std::string::npos) << a;
  EXPECT_TRUE(IsAcceptableRequestId(id_a));
  ASSERT_TRUE(Eventually([&] { return access_log_.lines().size() == 2; }));
  auto lines = access_log_.lines();
  EXPECT_EQ(lines[0].request_id, id_a);
  EXPECT_EQ(lines[0].method, "GET");
  EXPECT_EQ(lines[0].target, "/a");
  EXPECT_EQ(lines[0].status, 200);
  EXPECT_EQ(lines[1].request_id, id_b);
}

TEST_F(ServerTest, ASaneClientRequestIdIsEchoedAHostileOneReplaced) {
  EchoIdHandler handler;
  uint16_t port = StartServer(&handler);
  Client c(port);
  ASSERT_TRUE(c.Send("GET /x HTTP/1.1\r\nHost: t\r\nX-Request-ID: abc-1.2_3\r\n\r\n"));
  std::string r = c.ReadResponse();
  EXPECT_EQ(RequestIdOf(r), "abc-1.2_3") << r;
  EXPECT_NE(r.find("id=abc-1.2_3"), std::string::npos) << r;
  for (const std::string& hostile :
       {std::string(kMaxRequestIdLength + 1, 'a'), std::string("a b"), std::string("<script>")}) {
    ASSERT_TRUE(c.Send("GET /x HTTP/1.1\r\nHost: t\r\nx-request-id: " + hostile + "\r\n\r\n"));
    r = c.ReadResponse();
    EXPECT_NE(RequestIdOf(r), hostile);
    EXPECT_TRUE(IsAcceptableRequestId(RequestIdOf(r))) << r;
    EXPECT_EQ(r.find(hostile), std::string::npos) << r;
  }
  ASSERT_TRUE(c.Send("GET /x HTTP/1.1\r\nHost: t\r\nx-request-id: " +
                     std::string(kMaxRequestIdLength, 'z') + "\r\n\r\n"));
  EXPECT_EQ(RequestIdOf(c.ReadResponse()), std::string(kMaxRequestIdLength, 'z'));
}

TEST_F(ServerTest, ErrorsOfTheHttpLayerCarryRequestIdsAndAreLogged) {
  EchoIdHandler handler;
  uint16_t port = StartServer(&handler);
  {
    Client c(port);
    ASSERT_TRUE(c.Send("NOT HTTP\r\n\r\n"));
    std::string r = c.ReadResponse();
    EXPECT_NE(r.find(" 400 "), std::string::npos) << r;
    EXPECT_TRUE(IsAcceptableRequestId(RequestIdOf(r))) << r;
  }
  {
    Client c(port);  // 413 (max_body_size 1024): the client's id was read, so echoed
    ASSERT_TRUE(
        c.Send("POST /x HTTP/1.1\r\nHost: t\r\nx-request-id: big\r\n"
               "Content-Length: 5000\r\n\r\n"));
    std::string r = c.ReadResponse();
    EXPECT_NE(r.find(" 413 "), std::string::npos) << r;
    EXPECT_EQ(RequestIdOf(r), "big") << r;
  }
  ASSERT_TRUE(Eventually([&] { return access_log_.lines().size() == 2; }));
  auto lines = access_log_.lines();
  EXPECT_EQ(lines[0].status, 400);
  EXPECT_EQ(lines[1].status, 413);
  EXPECT_EQ(lines[1].request_id, "big");
}

TEST_F(ServerTest, RefusalsOverTheCapCarryRequestIdsAndAreLogged) {
  EchoPathHandler handler;
  uint16_t port = StartServer(&handler, /*max_connections=*/1);
  Client held(port);
  ASSERT_TRUE(held.Send(Get("/held")));
  EXPECT_NE(held.ReadResponse().find("200 OK"), std::string::npos);
  std::vector<std::unique_ptr<Client>> over;
  for (int i = 0; i < 40; ++i) over.push_back(std::make_unique<Client>(port));  // both kinds
  for (auto& c : over) {
    std::string r = c->ReadResponse();
    EXPECT_NE(r.find(" 503 "), std::string::npos) << r;
    EXPECT_TRUE(IsAcceptableRequestId(RequestIdOf(r))) << r;
  }
  ASSERT_TRUE(Eventually([&] { return access_log_.lines().size() == 41; }));
}

// ---- issue 11: streamed responses (chunked transfer encoding) ----

Response TextHead(std::string body = "") {
  Response head;
  head.content_type = "text/plain";
  head.body = std::move(body);
  return head;
}

// Streams every request from a thread of its own: started on the I/O thread (in Handle),
// each part written after the test allows it (one permit per part), ended on that thread.
class ThreadStreamingHandler final : public RequestHandler {
 public:
  explicit ThreadStreamingHandler(int parts) : parts_(parts) {}
  ~ThreadStreamingHandler() override {
    for (auto& t : threads_) t.join();
  }
  void Handle(Request&, Responder responder) override {
    ResponseStream stream = responder.Stream(TextHead());
    threads_.emplace_back([this, s = std::move(stream)]() mutable {
      for (int i = 1; i <= parts_; ++i) {
        permits_.acquire();
        std::this_thread::sleep_for(2ms);
        s.Write("part " + std::to_string(i));
      }
      s.End();
    });
  }
  void Allow() { permits_.release(); }

 private:
  const int parts_;
  std::counting_semaphore<> permits_{0};
  std::vector<std::thread> threads_;  // touched by the one I/O thread, then joined
};

TEST_F(ServerTest, AStreamSendsEachPartAsItComesChunkedThenKeepsTheConnection) {
  ThreadStreamingHandler handler(3);
  uint16_t port = StartServer(&handler, 0, /*threads=*/1);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/stream")));
  std::string head = client.ReadHead();
  EXPECT_NE(head.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nTransfer-Encoding: chunked\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Content-Length"), std::string::npos) << head;
  EXPECT_EQ(head.find("Connection: close"), std::string::npos) << head;
  EXPECT_TRUE(IsAcceptableRequestId(RequestIdOf(head))) << head;
  // Counted and logged once, when the head went out (before any part was written).
  EXPECT_EQ(observer_.twoxx.load(), 1);
  ASSERT_TRUE(Eventually([&] { return access_log_.lines().size() == 1; }));
  EXPECT_EQ(access_log_.lines()[0].status, 200);
  EXPECT_EQ(access_log_.lines()[0].request_id, RequestIdOf(head));
  // Each part arrives on its own before the next is even written.
  for (int i = 1; i <= 3; ++i) {
    handler.Allow();
    EXPECT_EQ(client.ReadChunk(), "part " + std::to_string(i));
  }
  EXPECT_EQ(client.ReadChunk(), "");  // the last chunk
  EXPECT_EQ(observer_.twoxx.load(), 1);
  EXPECT_EQ(access_log_.lines().size(), 1u);
  // Keep-alive: the same connection serves the next request, streamed again.
  ASSERT_TRUE(client.Send(Get("/again")));
  EXPECT_NE(client.ReadHead().find("HTTP/1.1 200 OK"), std::string::npos);
  for (int i = 1; i <= 3; ++i) handler.Allow();
  EXPECT_EQ(client.ReadChunk(), "part 1");
  EXPECT_EQ(client.ReadChunk(), "part 2");
  EXPECT_EQ(client.ReadChunk(), "part 3");
  EXPECT_EQ(client.ReadChunk(), "");
  EXPECT_EQ(observer_.twoxx.load(), 2);
}

TEST_F(ServerTest, AStreamsHeadBodyIsItsFirstChunkAndAPipelinedRequestFollows) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/first") + Get("/second")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  Response head = TextHead("hello");
  head.status = 201;
  head.headers.emplace_back("X-Extra", "1");
  ResponseStream stream = handler.Stream(0, std::move(head));
  std::string h = client.ReadHead();
  EXPECT_NE(h.find("HTTP/1.1 201 Created\r\n"), std::string::npos) << h;
  EXPECT_NE(h.find("\r\nX-Extra: 1\r\n"), std::string::npos) << h;
  EXPECT_NE(h.find("\r\nContent-Type: text/plain\r\n"), std::string::npos) << h;
  EXPECT_EQ(client.ReadChunk(), "hello");
  EXPECT_TRUE(stream.Write(std::string(100000, 'x')));  // a large part, one chunk
  EXPECT_EQ(client.ReadChunk(), std::string(100000, 'x'));
  stream.End();
  EXPECT_TRUE(stream.ended());
  EXPECT_EQ(client.ReadChunk(), "");
  ASSERT_TRUE(handler.WaitForRequests(2));
  EXPECT_EQ(handler.path(1), "/second");
  handler.Answer(1, "two");
  std::string r2 = client.ReadResponse();
  EXPECT_NE(r2.find("Content-Length: 3\r\n"), std::string::npos) << r2;
  EXPECT_NE(r2.find("\r\n\r\ntwo"), std::string::npos) << r2;
}

TEST_F(ServerTest, AnEmptyWriteSendsNothingAndDoesNotEndTheStream) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/s")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead());
  EXPECT_TRUE(stream.Write(""));
  EXPECT_TRUE(stream.Write("a"));
  EXPECT_NE(client.ReadHead().find("200 OK"), std::string::npos);
  EXPECT_EQ(client.ReadChunk(), "a");  // not "" (a zero-size chunk would end the body)
  EXPECT_TRUE(stream.Write("b"));
  stream.End();
  EXPECT_EQ(client.ReadChunk(), "b");
  EXPECT_EQ(client.ReadChunk(), "");
}

TEST_F(ServerTest, AStreamDroppedWithoutEndIsEndedAndTheConnectionKept) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/s")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  {
    ResponseStream stream = handler.Stream(0, TextHead());
    stream.Write("only");
  }
  EXPECT_NE(client.ReadHead().find("200 OK"), std::string::npos);
  EXPECT_EQ(client.ReadChunk(), "only");
  EXPECT_EQ(client.ReadChunk(), "");
  ASSERT_TRUE(client.Send(Get("/next")));
  ASSERT_TRUE(handler.WaitForRequests(2));
  handler.Answer(1, "next");
  EXPECT_NE(client.ReadResponse().find("\r\n\r\nnext"), std::string::npos);
}

TEST_F(ServerTest, AStreamEndedOnAnotherThreadThanItStartedOn) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/s")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead());
  std::thread([&] { stream.Write("from a"); }).join();
  std::thread([&] {
    stream.Write("from b");
    stream.End();
  }).join();
  EXPECT_NE(client.ReadHead().find("200 OK"), std::string::npos);
  EXPECT_EQ(client.ReadChunk(), "from a");
  EXPECT_EQ(client.ReadChunk(), "from b");
  EXPECT_EQ(client.ReadChunk(), "");
}

TEST_F(ServerTest, AnHttp10ClientGetsTheRawBytesThenTheClose) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  // Even when it asks to keep the connection: without a length, the close ends the body.
  ASSERT_TRUE(client.Send("GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead("ab"));
  std::string head = client.ReadHead();
  EXPECT_NE(head.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nConnection: close\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Transfer-Encoding"), std::string::npos) << head;
  EXPECT_EQ(head.find("Content-Length"), std::string::npos) << head;
  stream.Write("cd");
  stream.Write("ef");
  stream.End();
  EXPECT_EQ(client.ReadToEof(), "abcdef");
  EXPECT_EQ(observer_.twoxx.load(), 1);
}

TEST_F(ServerTest, AStreamedAnswerToHeadSendsTheHeadAlone) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send("HEAD /s HTTP/1.1\r\nHost: t\r\n\r\n"));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead("body"));
  stream.Write("more");
  stream.End();
  std::string head = client.ReadHead();
  EXPECT_NE(head.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << head;
  EXPECT_EQ(observer_.twoxx.load(), 1);
  // Nothing follows the head: the next bytes are the next response's.
  ASSERT_TRUE(client.Send(Get("/next")));
  ASSERT_TRUE(handler.WaitForRequests(2));
  handler.Answer(1, "next");
  std::string r = client.ReadResponse();
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("\r\n\r\nnext"), std::string::npos) << r;
}

TEST_F(ServerTest, AClientLeavingMidStreamIsNoticedAndOthersAreServed) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  auto client = std::make_unique<Client>(port);
  ASSERT_TRUE(client->Send(Get("/s")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead());
  EXPECT_TRUE(stream.Write("a"));
  EXPECT_NE(client->ReadHead().find("200 OK"), std::string::npos);
  EXPECT_EQ(client->ReadChunk(), "a");
  EXPECT_FALSE(stream.client_gone());
  client.reset();  // the client closes mid-stream
  EXPECT_TRUE(Eventually([&] { return stream.client_gone(); }));
  EXPECT_FALSE(stream.Write("lost"));  // a generator sees it and stops
  stream.End();
  Client other(port);
  ASSERT_TRUE(other.Send(Get("/other")));
  ASSERT_TRUE(handler.WaitForRequests(2));
  handler.Answer(1, "fine");
  EXPECT_NE(other.ReadResponse().find("fine"), std::string::npos);
}

TEST_F(ServerTest, AClientThatDoesNotReadIsCutOffBeyondTheBacklogCap) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler, 0, /*threads=*/1);
  Client slow(port, /*receive_buffer=*/4096);
  ASSERT_TRUE(slow.Send(Get("/flood")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead());
  const std::string part(256 * 1024, 'x');
  size_t written = 0;
  // Bounded: far more than the cap plus any socket buffers.
  while (!stream.client_gone() && written < 64 * kMaxStreamBacklog) {
    stream.Write(part);
    written += part.size();
    std::this_thread::sleep_for(1ms);  // let the I/O thread keep up (no timing asserted)
  }
  EXPECT_TRUE(stream.client_gone()) << written << " bytes written without a cut-off";
  EXPECT_GT(written, kMaxStreamBacklog);  // not before the cap
  // Later parts go nowhere and are not logged again.
  EXPECT_FALSE(stream.Write(part));
  stream.End();
  // The server still serves others (one I/O thread: this also runs after those posts).
  Client other(port);
  ASSERT_TRUE(other.Send(Get("/other")));
  ASSERT_TRUE(handler.WaitForRequests(2));
  handler.Answer(1, "fine");
  EXPECT_NE(other.ReadResponse().find("fine"), std::string::npos);
  EXPECT_EQ(g_warnings.load(), 1);
  // The slow client sees the stream cut (no last chunk): EOF or a reset after some bytes.
  std::string got = slow.ReadToEof();
  EXPECT_EQ(got.find("\r\n0\r\n\r\n"), std::string::npos);
}

TEST_F(ServerTest, AStreamWaitingForItsNextPartIsNotSweptAsIdle) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler, 0, 2, /*timeouts=*/100ms);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/slow-generation")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead());
  stream.Write("a");
  EXPECT_NE(client.ReadHead().find("200 OK"), std::string::npos);
  EXPECT_EQ(client.ReadChunk(), "a");
  std::this_thread::sleep_for(800ms);  // several sweeps, each past the idle/read timeouts
  EXPECT_FALSE(stream.client_gone());
  stream.Write("b");
  stream.End();
  EXPECT_EQ(client.ReadChunk(), "b");
  EXPECT_EQ(client.ReadChunk(), "");
}

TEST_F(ServerTest, AStreamWriteStuckOnAClientThatNeverReadsEndsAtTheWriteTimeout) {
  // Under the backlog cap, but more than the socket buffers take: the write stays pending
  // until the write timeout (as for a whole response), then the connection is closed.
  HoldingHandler handler;
  uint16_t port = StartServer(&handler, 0, 2, /*timeouts=*/200ms);
  Client stuck(port, /*receive_buffer=*/4096);
  ASSERT_TRUE(stuck.Send(Get("/s")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead());
  stream.Write(std::string(kMaxStreamBacklog - 1024, 'x'));
  EXPECT_TRUE(Eventually([&] { return stream.client_gone(); }));
  stream.End();
}

TEST_F(ServerTest, ShutdownLetsAnActiveStreamFinishThenCloses) {
  HoldingHandler handler;
  uint16_t port = StartServer(&handler);
  Client client(port);
  ASSERT_TRUE(client.Send(Get("/s")));
  ASSERT_TRUE(handler.WaitForRequests(1));
  ResponseStream stream = handler.Stream(0, TextHead());
  stream.Write("before");
  EXPECT_NE(client.ReadHead().find("200 OK"), std::string::npos);
  EXPECT_EQ(client.ReadChunk(), "before");
  std::thread shutdown([&] { server_->Shutdown(std::chrono::milliseconds(10000)); });
  std::this_thread::sleep_for(100ms);  // the shutdown begins (ordering aid, not asserted)
  EXPECT_FALSE(stream.client_gone());
  stream.Write("during");
  stream.End();
  EXPECT_EQ(client.ReadChunk(), "during");
  EXPECT_EQ(client.ReadChunk(), "");
  EXPECT_TRUE(client.ReadsEof());
  shutdown.join();
  server_.reset();
}

TEST(ConnectionCapsTest, InferenceGetsTheRestAndOthersKeepAShare) {
  // 1024 descriptors, 24 in use: 1024 - 24 - 64 (headroom) - 48 (refusing) = 888.
  ConnectionCaps caps = ConnectionCapsFor(1024, 24);
  EXPECT_EQ(caps.management, 111);
  EXPECT_EQ(caps.metrics, 111);
  EXPECT_EQ(caps.inference, 888 - 222);
  // Tiny limits still leave every listener something.
  caps = ConnectionCapsFor(64, 40);
  EXPECT_EQ(caps.management, 4);
  EXPECT_EQ(caps.metrics, 4);
  EXPECT_EQ(caps.inference, 1);
  // Unlimited is read as 2^20; the auxiliary listeners stop at 1024.
  caps = ConnectionCapsFor(0, 10);
  EXPECT_EQ(caps.management, 1024);
  EXPECT_GT(caps.inference, 1000000);
}

}  // namespace
}  // namespace tserve::http
