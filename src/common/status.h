#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace tserve {

// The kinds of error the APIs tell apart. A kind says what went wrong, not how it is
// shown: the one mapping to TorchServe's HTTP code, exception type and message is
// api::ErrorFromStatus (api/errors.cc). Add a kind only when some caller must act on it
// differently; otherwise pick the nearest one and say the rest in the message.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the request or input is malformed or refused by a rule
  kNotFound,            // a thing that is not a model (a file, a path, a key) does not exist
  kModelNotFound,       // no model by that name (or a URL no policy lets one load from)
  kVersionNotFound,     // the model exists, that version of it does not
  kAlreadyExists,       // conflict: it exists already, or its state forbids the change
  kPermissionDenied,    // refused by a rule about who/what may do it
  kFailedPrecondition,  // the system is not in a state in which this can work
  kResourceExhausted,   // a queue or limit is full; retrying later may work
  kUnavailable,         // no one can serve it now (no worker, shutting down, network)
  kDeadlineExceeded,    // a timeout passed
  kDownloadFailed,      // fetching a model archive from a URL failed
  kUnimplemented,
  kInternal,  // a bug or an unexpected local failure (I/O)
};

// "InvalidArgument", "ModelNotFound", ...: the enumerator's name without the k.
constexpr std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case StatusCode::kNotFound:
      return "NotFound";
    case StatusCode::kModelNotFound:
      return "ModelNotFound";
    case StatusCode::kVersionNotFound:
      return "VersionNotFound";
    case StatusCode::kAlreadyExists:
      return "AlreadyExists";
    case StatusCode::kPermissionDenied:
      return "PermissionDenied";
    case StatusCode::kFailedPrecondition:
      return "FailedPrecondition";
    case StatusCode::kResourceExhausted:
      return "ResourceExhausted";
    case StatusCode::kUnavailable:
      return "Unavailable";
    case StatusCode::kDeadlineExceeded:
      return "DeadlineExceeded";
    case StatusCode::kDownloadFailed:
      return "DownloadFailed";
    case StatusCode::kUnimplemented:
      return "Unimplemented";
    case StatusCode::kInternal:
      return "Internal";
  }
  return "Unknown";
}

// Status: a cheap success-or-error value (leveldb style). OK carries no allocation.
// [[nodiscard]]: a Status returned and dropped is a compile error under -Werror; where
// dropping it is intended, write (void) and say why in a comment.
// Thread safety: a value type; distinct objects may be used from distinct threads.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status ModelNotFound(std::string m) { return {StatusCode::kModelNotFound, std::move(m)}; }
  static Status VersionNotFound(std::string m) {
    return {StatusCode::kVersionNotFound, std::move(m)};
  }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  // The same kind as AlreadyExists, for a change the current state forbids (HTTP 409).
  static Status Conflict(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status PermissionDenied(std::string m) {
    return {StatusCode::kPermissionDenied, std::move(m)};
  }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status DeadlineExceeded(std::string m) {
    return {StatusCode::kDeadlineExceeded, std::move(m)};
  }
  static Status DownloadFailed(std::string m) {
    return {StatusCode::kDownloadFailed, std::move(m)};
  }
  static Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "OK", or "<kind>: <message>" (for logs and for the aborts below, not for users).
  std::string ToString() const {
    if (ok()) return "OK";
    return std::string(StatusCodeName(code_)) + ": " + message_;
  }

  bool IsInvalidArgument() const { return code_ == StatusCode::kInvalidArgument; }
  // Any of the three not-found kinds: a thing, a model, or a version of a model.
  bool IsNotFound() const {
    return code_ == StatusCode::kNotFound || code_ == StatusCode::kModelNotFound ||
           code_ == StatusCode::kVersionNotFound;
  }
  bool IsModelNotFound() const { return code_ == StatusCode::kModelNotFound; }
  bool IsVersionNotFound() const { return code_ == StatusCode::kVersionNotFound; }
  bool IsAlreadyExists() const { return code_ == StatusCode::kAlreadyExists; }
  bool IsConflict() const { return code_ == StatusCode::kAlreadyExists; }
  bool IsPermissionDenied() const { return code_ == StatusCode::kPermissionDenied; }
  bool IsFailedPrecondition() const { return code_ == StatusCode::kFailedPrecondition; }
  bool IsResourceExhausted() const { return code_ == StatusCode::kResourceExhausted; }
  bool IsUnavailable() const { return code_ == StatusCode::kUnavailable; }
  bool IsTimeout() const { return code_ == StatusCode::kDeadlineExceeded; }
  bool IsDownloadFailed() const { return code_ == StatusCode::kDownloadFailed; }
  bool IsUnimplemented() const { return code_ == StatusCode::kUnimplemented; }
  bool IsInternal() const { return code_ == StatusCode::kInternal; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

namespace status_internal {
// Prints "<what>: <status>" to stderr and aborts: a programming error, never UB.
[[noreturn]] inline void Die(const char* what, const Status& status) {
  std::fprintf(stderr, "tserve: fatal: %s: %s\n", what, status.ToString().c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace status_internal

// StatusOr<T>: a T or the (non-OK) Status explaining why there is none.
// Contract, checked in every build (not only debug):
//  - built from a Status, that Status must not be OK: there would be neither a value nor an
//    error. Doing so prints "StatusOr built from an OK status" to stderr and aborts.
//  - value(), operator* and operator-> on a StatusOr holding an error print
//    "StatusOr accessed without a value: <kind>: <message>" to stderr and abort.
// Check ok() (or status()) first.
// Thread safety: as T.
template <typename T>
class [[nodiscard]] StatusOr {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, Status>, "StatusOr<Status> makes no sense");

 public:
  StatusOr(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.ok()) status_internal::Die("StatusOr built from an OK status", status_);
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const& { return status_; }
  Status status() && { return std::move(status_); }
  T& value() & {
    Check();
    return *value_;
  }
  const T& value() const& {
    Check();
    return *value_;
  }
  T&& value() && {
    Check();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  void Check() const {
    if (!value_.has_value()) status_internal::Die("StatusOr accessed without a value", status_);
  }

  Status status_;
  std::optional<T> value_;
};

}  // namespace tserve
