// The only translation unit that includes Boost.Beast/Asio (they are slow to compile).
#include "http/server.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/mutex.h"

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
// Over-cap connections answered the polite way (503 written, then read until the client is
// done, at most kDrainTime) at once per listener; beyond this many, the 503 is sent
// without waiting and the socket closed at once, so refusing costs no descriptors.
constexpr int64_t kMaxRejecting = 16;
// Descriptors the default caps leave to everything else: log and metrics files, model
// files being read or extracted, downloads, /proc reads, the spare descriptor.
constexpr int64_t kFdHeadroom = 64;
// The management and metrics listeners each get this share (1/8) of the budget, within
// [kMinAuxConnections, kMaxAuxConnections]; the inference listener gets the rest.
constexpr int64_t kAuxShareDivisor = 8;
constexpr int64_t kMinAuxConnections = 4;
constexpr int64_t kMaxAuxConnections = 1024;
// RLIMIT_NOFILE = unlimited is read as this many.
constexpr int64_t kUnlimitedFds = int64_t{1} << 20;

using NativeRequest = bhttp::request<bhttp::string_body>;

// Fresh request ids: "<8 hex: this process>-<16 hex: a counter>", unique within a run and
// unlikely to repeat across restarts (the prefix mixes the pid and the start time).
constexpr size_t kFreshIdLength = 8 + 1 + 16;
static_assert(kFreshIdLength <= kMaxRequestIdLength);
std::atomic<uint64_t> g_next_request_id{1};

void PutHex(uint64_t v, int digits, char* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) {
    out[i] = kHex[v & 0xf];
    v >>= 4;
  }
}

uint32_t RequestIdPrefix() {
  static const uint32_t prefix = [] {
    const uint64_t t =
        static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    const uint64_t mixed = (static_cast<uint64_t>(::getpid()) * 0x9E3779B97F4A7C15ull) ^ t;
    return static_cast<uint32_t>(mixed ^ (mixed >> 32));
  }();
  return prefix;
}

// The id of the request being answered on a connection: no allocation.
class RequestId {
 public:
  // The client's id when acceptable (IsAcceptableRequestId), else a fresh one.
  void Assign(std::string_view client) {
    if (IsAcceptableRequestId(client)) {
      std::memcpy(buf_.data(), client.data(), client.size());
      len_ = client.size();
    } else {
      AssignFresh();
    }
  }
  void AssignFresh() {
    PutHex(RequestIdPrefix(), 8, buf_.data());
    buf_[8] = '-';
    PutHex(g_next_request_id.fetch_add(1, std::memory_order_relaxed), 16, buf_.data() + 9);
    len_ = kFreshIdLength;
  }
  void Clear() { len_ = 0; }
  bool empty() const { return len_ == 0; }
  std::string_view view() const { return {buf_.data(), len_}; }

 private:
  std::array<char, kMaxRequestIdLength> buf_;
  size_t len_ = 0;
};

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

// How a response's body is delimited: by Content-Length (a whole response), by chunked
// transfer encoding (a stream to an HTTP/1.1 client), or by closing the connection (a stream
// to an HTTP/1.0 client).
enum class Framing { kLength, kChunked, kUntilClose };

// The request line and header fields of a response, per its status and connection fate.
void AppendHead(const Response& r, bool close, bool http10_keep_alive, std::string_view request_id,
                std::string* out, Framing framing = Framing::kLength) {
  AppendStatusLine(r.status, out);
  if (!request_id.empty()) {
    out->append(kRequestIdHeader);
    out->append(": ");
    out->append(request_id);
    out->append("\r\n");
  }
  if (!r.content_type.empty()) {
    out->append("Content-Type: ");
    out->append(r.content_type);
    out->append("\r\n");
  }
  if (framing == Framing::kLength) {
    out->append("Content-Length: ");
    out->append(std::to_string(r.body.size()));
    out->append("\r\n");
  } else if (framing == Framing::kChunked) {
    out->append("Transfer-Encoding: chunked\r\n");
  }
  for (const auto& [name, value] : r.headers) {
    out->append(name);
    out->append(": ");
    out->append(value);
    out->append("\r\n");
  }
  if (close) {
    out->append("Connection: close\r\n");
  } else if (http10_keep_alive) {
    out->append("Connection: keep-alive\r\n");
  }
  out->append("\r\n");
}

// One connection's place in its listener's count (open, or being refused): taken on the
// acceptor's thread, given back from whichever thread closes the connection. Move-only.
class Slot {
 public:
  Slot() = default;
  explicit Slot(std::atomic<int64_t>* count) : count_(count) {
    count_->fetch_add(1, std::memory_order_relaxed);
  }
  Slot(Slot&& other) noexcept : count_(std::exchange(other.count_, nullptr)) {}
  Slot& operator=(Slot&& other) noexcept {
    if (this != &other) {
      Release();
      count_ = std::exchange(other.count_, nullptr);
    }
    return *this;
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  ~Slot() { Release(); }
  void Release() {
    if (count_ != nullptr) count_->fetch_sub(1, std::memory_order_relaxed);
    count_ = nullptr;
  }

 private:
  std::atomic<int64_t>* count_ = nullptr;
};

}  // namespace

class Worker;

// One TCP connection. Lives on its worker's thread; Deliver may come from any thread and
// is posted there. States: reading a request, dispatched to the handler (no timeout: the
// application's own timeouts apply), writing, draining before close.
// While a request is dispatched or its answer written, one read stays pending: bytes that
// arrive are the next (pipelined) request and wait in buffer_, unparsed, up to the header
// cap; EOF or an error there means the client left (MarkClientGone), and the answer, when
// it comes, is still written (harmless if nobody reads it) before the connection closes.
// Every pending operation holds a shared_ptr to the connection, and so does the Responder.
// Streaming (StartStream, WriteChunk, EndStream: posted to the I/O thread in call order): the
// head goes out at once (counted and logged then), each chunk is framed (chunked encoding,
// or raw bytes to an HTTP/1.0 client, which is closed at the end) and queued; one
// async_write is in flight at a time and takes everything queued when it starts. Bytes
// queued or in flight beyond kMaxStreamBacklog cut the client off (closed, client gone).
// The sweep leaves a stream alone while it waits for its next part; a write in flight
// longer than the write timeout (as for a whole response) closes the connection.
class Connection final : public ResponseTarget, public std::enable_shared_from_this<Connection> {
 public:
  Connection(Worker* worker, tcp::socket socket, RequestHandler* handler, Slot slot,
             const std::string* listener);
  void Start();
  // Answers `refusal` (the listener is full) instead of reading a request, then closes.
  void StartRefused(Response refusal);
  void Deliver(Response response) override;
  void StartStream(Response head) override;
  void WriteChunk(std::string chunk) override;
  void EndStream() override;
  void OnShutdown();
  // Closes the connection when its deadline passed; false once it is closed.
  bool Sweep(Clock::time_point now);

 private:
  enum class State { kReading, kDispatched, kWriting, kStreaming, kDraining, kClosed };

  void ResetParser();
  void ReadMore();
  void OnRead(const beast::error_code& ec, size_t n);
  void OnSideRead(const beast::error_code& ec, size_t n);
  void Parse();
  void Dispatch();
  void Fail(int status, std::string_view message);
  void Write(Response response);
  void OnWritten(const beast::error_code& ec);
  // The stream's steps, on the I/O thread.
  void StartStreamNow(Response head);
  void WriteChunkNow(std::string chunk);
  void EndStreamNow();
  void QueueChunk(std::string data);
  void Queue(std::string bytes);
  void Flush();
  void OnStreamWritten(const beast::error_code& ec);
  void CutOff();
  // When a write begun now must have completed (a client that does not read is let go).
  Clock::time_point WriteDeadline() const;
  void StartDrain();
  void DrainRead();
  void Close();
  void MarkStarted();
  void LogAccess();
  bool InFlight() const {
    return state_ == State::kDispatched || state_ == State::kWriting || state_ == State::kStreaming;
  }

  Worker* worker_;
  tcp::socket socket_;
  RequestHandler* handler_;
  Slot slot_;                    // given back when the socket closes
  const std::string* listener_;  // its name, for the access log
  std::string remote_;           // "/ip:port", only when there is an access log
  RequestId id_;                 // of the request being answered
  Clock::time_point started_;    // its first byte (or the accept, for a refusal)
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
  bool client_left_ = false;   // EOF or an error read while a request was in flight
  bool read_pending_ = false;  // one async_read_some at a time, into buffer_ or drain_buf_
  Clock::time_point deadline_;
  // Reads that must not touch buffer_ (parsing may consume it meanwhile) land here: those
  // begun while a request is in flight, and the drain before close.
  std::array<char, 1024> drain_buf_;
  // The stream being sent (state kStreaming).
  bool chunked_ = false;              // chunked encoding; else raw bytes until the close (HTTP/1.0)
  bool stream_ended_ = false;         // EndStream seen: nothing more is queued
  bool write_pending_ = false;        // a stream write is in flight (one at a time)
  std::vector<std::string> queued_;   // framed bytes waiting for the next write
  std::vector<std::string> writing_;  // the write in flight (kept alive until it completes)
  std::vector<asio::const_buffer> write_buffers_;
  size_t backlog_ = 0;  // bytes in queued_ and writing_
};

// One I/O thread: its io_context, its connections and the timer that enforces their
// deadlines. Everything here runs on that thread only.
class Worker {
 public:
  Worker(const ServerOptions& options) : options(options), io(1), sweep_timer(io) {}

  // `refusal`: the listener is over its cap; answer that and close.
  void Adopt(tcp::socket socket, RequestHandler* handler, Slot slot,
             std::optional<Response> refusal, const std::string* listener) {
    auto conn =
        std::make_shared<Connection>(this, std::move(socket), handler, std::move(slot), listener);
    connections.push_back(conn);
    if (refusal.has_value()) {
      conn->StartRefused(std::move(*refusal));
    } else {
      conn->Start();
    }
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

Connection::Connection(Worker* worker, tcp::socket socket, RequestHandler* handler, Slot slot,
                       const std::string* listener)
    : ResponseTarget(worker->options.errors),
      worker_(worker),
      socket_(std::move(socket)),
      handler_(handler),
      slot_(std::move(slot)),
      listener_(listener),
      started_(Clock::now()),
      buffer_(static_cast<size_t>(worker->options.max_header_size) + 2 * kReadChunk) {
  if (worker->options.access_log != nullptr) {
    beast::error_code ec;
    tcp::endpoint peer = socket_.remote_endpoint(ec);
    remote_ = ec ? std::string("/0.0.0.0")
                 : "/" + peer.address().to_string() + ":" + std::to_string(peer.port());
  }
}

Clock::time_point Connection::WriteDeadline() const {
  return Clock::now() + std::max(worker_->options.idle_timeout, worker_->options.read_timeout);
}

void Connection::MarkStarted() {
  request_started_ = true;
  started_ = Clock::now();
  deadline_ = started_ + worker_->options.read_timeout;
}

void Connection::Start() {
  beast::error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);
  ResetParser();
  ReadMore();
}

void Connection::StartRefused(Response refusal) {
  head_only_ = false;
  close_after_write_ = true;
  refusal.close = true;
  Write(std::move(refusal));
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
  if (read_pending_) return;  // its completion carries on
  const bool in_flight = InFlight();
  if (in_flight && client_left_) return;  // EOF or an error already: nothing more to read
  if (!in_flight && shutting_down_ && !request_started_ && buffer_.size() == 0) {
    Close();
    return;
  }
  const size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) {
    // In flight: the pipelined bytes wait (and the client is not watched) until the answer
    // is out; then they are parsed, and refused if they really are an oversized head.
    if (!in_flight) Fail(431, "Request header fields are too large");
    return;
  }
  read_pending_ = true;
  if (in_flight) {
    socket_.async_read_some(asio::buffer(drain_buf_.data(), std::min(room, drain_buf_.size())),
                            [self = shared_from_this()](const beast::error_code& ec, size_t n) {
                              self->OnSideRead(ec, n);
                            });
    return;
  }
  socket_.async_read_some(
      buffer_.prepare(std::min(room, kReadChunk)),
      [self = shared_from_this()](const beast::error_code& ec, size_t n) { self->OnRead(ec, n); });
}

void Connection::OnRead(const beast::error_code& ec, size_t n) {
  read_pending_ = false;
  if (state_ == State::kClosed) return;
  if (ec) {
    // Between requests, or the client gave up mid-request: nothing to answer.
    Close();
    return;
  }
  buffer_.commit(n);
  if (!request_started_) MarkStarted();
  Parse();
}

// A read begun while a request was in flight; the state may have moved on since (the answer
// written, even the next pipelined request dispatched).
void Connection::OnSideRead(const beast::error_code& ec, size_t n) {
  read_pending_ = false;
  if (state_ == State::kClosed) return;
  if (state_ == State::kDraining) {
    if (ec) {
      Close();
    } else {
      DrainRead();
    }
    return;
  }
  if (ec) {
    if (!InFlight()) {
      Close();
      return;
    }
    // The client closed, reset, or shut down its sending side (Netty, and so TorchServe,
    // counts an input shutdown as the channel closing): its answer would be lost, so a
    // queued job can be dropped. The answer is still written when it comes (a half-closed
    // client can read it); nothing after it is, and then we close.
    MarkClientGone();
    client_left_ = true;
    close_after_write_ = true;
    return;
  }
  auto room = buffer_.prepare(n);
  std::memcpy(room.data(), drain_buf_.data(), n);
  buffer_.commit(n);
  if (InFlight()) {
    ReadMore();  // keep watching; the bytes wait for their turn
    return;
  }
  if (!request_started_) MarkStarted();
  Parse();
}

void Connection::Parse() {
  beast::error_code ec;
  while (buffer_.size() > 0 && !parser_->is_done()) {
    if (!request_started_) MarkStarted();
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
  id_.Assign(request_.Header(kRequestIdHeader));
  request_.request_id = id_.view();
  auto self = shared_from_this();  // the handler may answer (and we close) before it returns
  handler_->Handle(request_, Responder(self));
  if (state_ == State::kDispatched) ReadMore();  // notice the client leaving
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
  // The client's id when its field was read before the error (e.g. a body over the limit:
  // the parser keeps each complete header field).
  std::string_view client_id;
  if (parser_.has_value()) {
    auto it =
        parser_->get().find(beast::string_view(kRequestIdHeader.data(), kRequestIdHeader.size()));
    if (it != parser_->get().end()) client_id = {it->value().data(), it->value().size()};
  }
  id_.Assign(client_id);
  Response r = worker_->options.errors != nullptr
                   ? worker_->options.errors(status, message)
                   : Response{status, "text/plain", std::string(message), {}, true};
  r.close = true;
  Write(std::move(r));
}

void Connection::Write(Response response) {
  if (state_ == State::kClosed) return;
  state_ = State::kWriting;
  deadline_ = WriteDeadline();
  response_ = std::move(response);
  if (response_.close) close_after_write_ = true;
  if (worker_->options.observer != nullptr) worker_->options.observer->OnResponse(response_.status);
  if (id_.empty()) id_.AssignFresh();  // a refusal (no request read)
  if (worker_->options.access_log != nullptr) LogAccess();

  head_.clear();
  AppendHead(response_, close_after_write_, request_.version == 10, id_.view(), &head_);
  std::array<asio::const_buffer, 2> buffers = {
      asio::buffer(head_), head_only_ ? asio::const_buffer() : asio::buffer(response_.body)};
  asio::async_write(
      socket_, buffers,
      [self = shared_from_this()](const beast::error_code& ec, size_t) { self->OnWritten(ec); });
}

void Connection::LogAccess() {
  AccessRecord rec;
  rec.listener = *listener_;
  rec.remote = remote_;
  rec.method = request_.method_text.empty() ? std::string_view("-") : request_.method_text;
  rec.target = request_.target.empty() ? std::string_view("-") : request_.target;
  rec.version = request_.version;
  rec.status = response_.status;
  rec.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_);
  rec.request_id = id_.view();
  worker_->options.access_log->Log(rec);
}

void Connection::OnWritten(const beast::error_code& ec) {
  if (ec) {
    Close();
    return;
  }
  id_.Clear();
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
    ReadMore();  // no-op while the read begun in flight is still pending
  }
}

void Connection::StartStream(Response head) {
  // Always posted (never run inline, even on the I/O thread), so that the stream's steps
  // keep their order whichever threads make them.
  asio::post(worker_->io, [self = shared_from_this(), h = std::move(head)]() mutable {
    self->StartStreamNow(std::move(h));
  });
}

void Connection::WriteChunk(std::string chunk) {
  asio::post(worker_->io, [self = shared_from_this(), c = std::move(chunk)]() mutable {
    self->WriteChunkNow(std::move(c));
  });
}

void Connection::EndStream() {
  asio::post(worker_->io, [self = shared_from_this()] { self->EndStreamNow(); });
}

void Connection::StartStreamNow(Response head) {
  if (state_ == State::kClosed) {
    MarkClientGone();  // the connection broke before the answer: stop producing it
    return;
  }
  if (state_ != State::kDispatched) return;  // not this connection's request any more
  state_ = State::kStreaming;
  stream_ended_ = false;
  response_ = std::move(head);
  if (response_.close) close_after_write_ = true;
  // HTTP/1.0 has no chunked encoding: the body ends with the connection.
  chunked_ = request_.version != 10;
  if (!chunked_) close_after_write_ = true;
  if (worker_->options.observer != nullptr) worker_->options.observer->OnResponse(response_.status);
  if (id_.empty()) id_.AssignFresh();
  if (worker_->options.access_log != nullptr) LogAccess();

  std::string head_bytes;
  AppendHead(response_, close_after_write_, false, id_.view(), &head_bytes,
             chunked_ ? Framing::kChunked : Framing::kUntilClose);
  Queue(std::move(head_bytes));
  if (!response_.body.empty()) QueueChunk(std::move(response_.body));
  Flush();
}

void Connection::WriteChunkNow(std::string chunk) {
  if (state_ == State::kClosed) {
    MarkClientGone();
    return;
  }
  if (state_ != State::kStreaming || stream_ended_ || chunk.empty()) return;
  QueueChunk(std::move(chunk));
  if (backlog_ > kMaxStreamBacklog) {
    CutOff();
    return;
  }
  Flush();
}

void Connection::EndStreamNow() {
  if (state_ != State::kStreaming || stream_ended_) return;
  stream_ended_ = true;
  if (chunked_ && !head_only_) Queue("0\r\n\r\n");
  if (write_pending_) return;  // its completion writes the rest, then finishes
  if (!queued_.empty()) {
    Flush();
    return;
  }
  OnWritten(beast::error_code());  // everything is out: as after a whole response
}

void Connection::QueueChunk(std::string data) {
  if (head_only_) return;  // HEAD: the head alone
  if (!chunked_) {
    Queue(std::move(data));
    return;
  }
  char size_line[2 * sizeof(size_t) + 2];
  const auto [end, ec] = std::to_chars(size_line, size_line + sizeof(size_line) - 2,
                                       static_cast<uint64_t>(data.size()), 16);
  (void)ec;
  end[0] = '\r';
  end[1] = '\n';
  Queue(std::string(size_line, end + 2));
  Queue(std::move(data));
  Queue("\r\n");
}

void Connection::Queue(std::string bytes) {
  backlog_ += bytes.size();
  queued_.push_back(std::move(bytes));
}

void Connection::Flush() {
  if (write_pending_ || queued_.empty() || state_ == State::kClosed) return;
  writing_.swap(queued_);  // queued_ takes writing_'s emptied storage
  write_buffers_.clear();
  for (const std::string& s : writing_) write_buffers_.push_back(asio::buffer(s));
  write_pending_ = true;
  deadline_ = WriteDeadline();
  asio::async_write(socket_, write_buffers_,
                    [self = shared_from_this()](const beast::error_code& ec, size_t) {
                      self->OnStreamWritten(ec);
                    });
}

void Connection::OnStreamWritten(const beast::error_code& ec) {
  write_pending_ = false;
  if (state_ == State::kClosed) return;
  if (ec) {
    MarkClientGone();
    Close();
    return;
  }
  for (const std::string& s : writing_) backlog_ -= s.size();
  writing_.clear();
  if (!queued_.empty()) {
    Flush();
    return;
  }
  if (stream_ended_) {
    OnWritten(beast::error_code());  // as after a whole response: next request, or close
    return;
  }
  deadline_ = Clock::time_point::max();  // waiting for the next part: the application's timeout
}

void Connection::CutOff() {
  // Logged once: the connection closes, and later chunks find it closed.
  if (worker_->options.warn != nullptr) {
    beast::error_code ec;
    tcp::endpoint peer = socket_.remote_endpoint(ec);
    const std::string who = ec ? std::string("a client")
                               : peer.address().to_string() + ":" + std::to_string(peer.port());
    worker_->options.warn("streaming response " + std::string(id_.view()) + " to " + who +
                          " cut off: the client read too slowly (more than " +
                          std::to_string(kMaxStreamBacklog) + " bytes not yet taken)");
  }
  MarkClientGone();
  Close();
}

void Connection::StartDrain() {
  // Half-close and read what the client still sends, so that our response is not lost
  // to a reset caused by unread data (e.g. a body we refused with 413).
  state_ = State::kDraining;
  deadline_ = Clock::now() + kDrainTime;
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  if (!read_pending_) DrainRead();  // else the pending read's completion drains on
}

void Connection::DrainRead() {
  read_pending_ = true;
  socket_.async_read_some(asio::buffer(drain_buf_),
                          [self = shared_from_this()](const beast::error_code& ec, size_t) {
                            self->read_pending_ = false;
                            if (ec) {
                              self->Close();
                            } else if (self->state_ == State::kDraining) {
                              self->DrainRead();
                            }
                          });
}

void Connection::Close() {
  if (state_ == State::kClosed) return;
  if (state_ == State::kStreaming) MarkClientGone();  // the rest of the stream would be lost
  state_ = State::kClosed;
  queued_.clear();  // writing_ stays until its write completes (aborted)
  backlog_ = 0;
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  slot_.Release();
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
                                 RequestHandler* handler, int64_t max_connections) {
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
    // Non-blocking, so that ShedOne's raw accept never waits.
    if (!ec) acceptor->non_blocking(true, ec);
    if (ec) {
      return Status::Unavailable("cannot listen on " + host + ":" + std::to_string(port) +
                                 " for the " + name + " API: " + ec.message());
    }
    uint16_t bound = acceptor->local_endpoint().port();
    auto l = std::make_unique<Listener>();
    l->acceptor = std::move(acceptor);
    l->handler = handler;
    l->retry = std::make_unique<asio::steady_timer>(workers_[0]->io);
    l->cap = std::max<int64_t>(0, max_connections);
    l->name = name;
    l->refusal = Refusal(name, l->cap);
    listeners_.push_back(std::move(l));
    return bound;
  }

  void Start() {
    // The spare descriptor of ShedOne: held so that one is free when accept hits the limit.
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (auto& l : listeners_) Accept(l.get());
    {
      MutexLock lock(&exit_mu_);
      running_ = static_cast<int>(workers_.size());
    }
    for (auto& w : workers_) {
      w->ArmSweep();
      Worker* raw = w.get();
      w->thread = std::thread([this, raw] {
        raw->io.run();
        {
          MutexLock lock(&exit_mu_);
          --running_;
        }
        exit_cv_.SignalAll();
      });
    }
  }

  void Shutdown(std::chrono::milliseconds grace) {
    if (shut_down_.exchange(true)) return;
    asio::post(workers_[0]->io, [this] {
      for (auto& l : listeners_) {
        beast::error_code ignored;
        l->acceptor->close(ignored);
        l->retry->cancel();
      }
    });
    for (auto& w : workers_) {
      Worker* raw = w.get();
      asio::post(w->io, [raw] { raw->BeginShutdown(); });
    }
    // Wait for the workers to run out of work, then force the stragglers.
    {
      MutexLock lock(&exit_mu_);
      (void)exit_cv_.WaitUntil(&exit_mu_, Clock::now() + grace,
                               [this]() REQUIRES(exit_mu_) { return running_ == 0; });
    }
    for (auto& w : workers_) w->io.stop();
    for (auto& w : workers_) {
      if (w->thread.joinable()) w->thread.join();
    }
  }

  ~Impl() {
    if (!shut_down_) Shutdown(std::chrono::milliseconds(0));
    if (spare_fd_ >= 0) ::close(spare_fd_);
  }

 private:
  // One listening socket. Its accept handlers all run on workers_[0]'s thread (the
  // acceptor's executor); the counts are given back from the workers' threads.
  struct Listener {
    std::unique_ptr<tcp::acceptor> acceptor;
    RequestHandler* handler = nullptr;
    std::unique_ptr<asio::steady_timer> retry;
    int64_t cap = 0;                   // 0: no cap
    std::atomic<int64_t> open{0};      // connections holding a slot
    std::atomic<int64_t> refusing{0};  // over-cap connections being answered 503
    Response refusal;                  // that 503
    std::string name;                  // for the access log
  };

  Response Refusal(const std::string& name, int64_t cap) const {
    std::string message = "Too many connections to the " + name + " API (the limit is " +
                          std::to_string(cap) + "); retry later";
    Response r = options_.errors != nullptr ? options_.errors(503, message)
                                            : Response{503, "text/plain", message, {}, true};
    r.close = true;
    return r;
  }

  // Answers the listener's 503 on a just-accepted socket without keeping it: what the
  // client already sent is read first (no reset that could destroy the answer), as much of
  // the answer as fits in the send buffer goes out, then the socket is closed.
  void RefuseNow(int fd, Listener* l) {
    if (options_.observer != nullptr) options_.observer->OnResponse(503);
    RequestId id;
    id.AssignFresh();
    if (options_.access_log != nullptr) {
      AccessRecord rec;
      rec.listener = l->name;
      rec.remote = "-";
      rec.method = "-";
      rec.target = "-";
      rec.status = 503;
      rec.request_id = id.view();
      options_.access_log->Log(rec);
    }
    std::array<char, 4096> sink;
    while (::recv(fd, sink.data(), sink.size(), MSG_DONTWAIT) > 0) {
    }
    std::string wire;
    AppendHead(l->refusal, /*close=*/true, false, id.view(), &wire);
    wire.append(l->refusal.body);
    ssize_t ignored = ::send(fd, wire.data(), wire.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)ignored;
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
  }

  // accept failed for lack of descriptors (EMFILE/ENFILE). The connection stays in the
  // backlog and would fail every retry; so give up the spare descriptor, take the pending
  // connection with it, refuse it, and take the spare back. False when nothing was taken
  // (no spare, or none pending): the caller backs off rather than spin.
  bool ShedOne(Listener* l) {
    if (spare_fd_ >= 0) {
      ::close(spare_fd_);
      spare_fd_ = -1;
    }
    int fd =
        ::accept4(l->acceptor->native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) RefuseNow(fd, l);
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0 && spare_fd_ >= 0;
  }

  void Accept(Listener* l) {
    Worker* target = workers_[next_worker_++ % workers_.size()].get();
    l->acceptor->async_accept(
        target->io, [this, l, target](const beast::error_code& ec, tcp::socket socket) {
          if (ec == asio::error::operation_aborted || !l->acceptor->is_open()) return;
          if (ec) {
            const bool out_of_fds =
                ec == asio::error::no_descriptors ||
                (ec.category() == boost::system::system_category() && ec.value() == ENFILE);
            if (out_of_fds && ShedOne(l)) {
              Accept(l);  // progress: one pending connection refused
              return;
            }
            // Back off instead of spinning; other listeners carry on meanwhile.
            l->retry->expires_after(std::chrono::milliseconds(50));
            l->retry->async_wait([this, l](const beast::error_code& tec) {
              if (!tec) Accept(l);
            });
            return;
          }
          std::optional<Response> refusal;
          Slot slot;
          if (l->cap == 0 || l->open.load(std::memory_order_relaxed) < l->cap) {
            slot = Slot(&l->open);
          } else if (l->refusing.load(std::memory_order_relaxed) < kMaxRejecting) {
            slot = Slot(&l->refusing);
            refusal = l->refusal;
          } else {
            beast::error_code ignored;
            RefuseNow(socket.release(ignored), l);
            Accept(l);
            return;
          }
          asio::post(target->io, [target, l, s = std::move(socket), slot = std::move(slot),
                                  refusal = std::move(refusal)]() mutable {
            if (target->stopping) return;
            target->Adopt(std::move(s), l->handler, std::move(slot), std::move(refusal), &l->name);
          });
          Accept(l);
        });
  }

  ServerOptions options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  size_t next_worker_ = 0;
  int spare_fd_ = -1;  // touched only by workers_[0]'s thread once started
  std::atomic<bool> shut_down_{false};
  // I/O threads still running (their io_context not out of work): Shutdown waits for 0.
  Mutex exit_mu_;
  CondVar exit_cv_;
  int running_ GUARDED_BY(exit_mu_) = 0;
};

ConnectionCaps ConnectionCapsFor(int64_t fd_limit, int64_t fds_in_use) {
  const int64_t limit = fd_limit <= 0 ? kUnlimitedFds : std::min(fd_limit, kUnlimitedFds);
  // Three listeners may each hold kMaxRejecting sockets while refusing.
  const int64_t budget = std::max<int64_t>(
      0, limit - std::max<int64_t>(0, fds_in_use) - kFdHeadroom - 3 * kMaxRejecting);
  ConnectionCaps caps;
  const int64_t aux = std::clamp(budget / kAuxShareDivisor, kMinAuxConnections, kMaxAuxConnections);
  caps.management = aux;
  caps.metrics = aux;
  caps.inference = std::max<int64_t>(1, budget - 2 * aux);
  return caps;
}

ConnectionCaps DefaultConnectionCaps(int64_t* fd_limit) {
  rlimit rl{};
  int64_t limit = kUnlimitedFds;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    limit = static_cast<int64_t>(std::min<rlim_t>(rl.rlim_cur, kUnlimitedFds));
  }
  if (fd_limit != nullptr) *fd_limit = limit;
  int64_t in_use = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++in_use;
    }
    ::closedir(d);
  }
  return ConnectionCapsFor(limit, in_use);
}

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;

StatusOr<uint16_t> Server::AddListener(const std::string& name, const std::string& host,
                                       uint16_t port, RequestHandler* handler,
                                       int64_t max_connections) {
  return impl_->AddListener(name, host, port, handler, max_connections);
}

void Server::Start() { impl_->Start(); }

void Server::Shutdown(std::chrono::milliseconds grace) { impl_->Shutdown(grace); }

}  // namespace tserve::http
