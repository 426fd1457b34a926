// Status and Result<T>: the one error type of the engine.
//
// Every fallible call returns a Status or a Result<T>; no exception crosses
// the engine's API. Operating errors (bad input, I/O failure, a corrupted
// file, a wrong expected version) are returned. Broken invariants are
// programmer errors and abort through ANNAL_ASSERT (see assert.h).
//
// Thread-safety: values, freely copied between threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace annal {

enum class StatusCode : uint8_t {
  kOk = 0,
  kInvalidArgument,      // malformed request: bad stream name, empty batch, ...
  kTooLarge,             // an event, metadata or batch over its limit
  kWrongExpectedVersion, // optimistic concurrency check failed
  kNotFound,             // unknown stream, position past the head
  kCorruption,           // a checksum or structure check failed on disk
  kIoError,              // the operating system refused a read or write
  kFailStopped,          // the partition stopped after a failed write/fsync
  kUnavailable,          // the store is closing or the feature is missing
  kAlreadyExists,        // create over an existing store, and similar
  kOverloaded,           // too much queued; try again later
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status TooLarge(std::string m) { return {StatusCode::kTooLarge, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status FailStopped(std::string m) { return {StatusCode::kFailStopped, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status Overloaded(std::string m) { return {StatusCode::kOverloaded, std::move(m)}; }
  // A failed expected-version check carries the stream's actual version:
  // -1 when the stream does not exist.
  static Status WrongExpectedVersion(std::string m, int64_t actual_version) {
    Status s(StatusCode::kWrongExpectedVersion, std::move(m));
    s.actual_version_ = actual_version;
    return s;
  }
  // Builds a Status from an errno value, naming what was being done.
  static Status FromErrno(int err, const std::string& what);

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // Only meaningful for kWrongExpectedVersion.
  int64_t actual_version() const { return actual_version_; }
  std::string ToString() const;
  // The same status with "context: " before its message.
  Status WithContext(const std::string& context) const {
    Status s = *this;
    s.message_ = context + ": " + message_;
    return s;
  }

 private:
  Status(StatusCode c, std::string m) : code_(c), message_(std::move(m)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  int64_t actual_version_ = -1;
};

// Either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status::Unavailable("Result built from an ok Status without value");
  }
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace annal

// Returns early from the enclosing function when `expr` (a Status) is not ok.
#define ANNAL_RETURN_IF_ERROR(expr)          \
  do {                                       \
    ::annal::Status annal_status_ = (expr);  \
    if (!annal_status_.ok()) return annal_status_; \
  } while (0)

#define ANNAL_CONCAT_INNER(a, b) a##b
#define ANNAL_CONCAT(a, b) ANNAL_CONCAT_INNER(a, b)
// Declares `lhs` from a Result, returning its Status early on error.
#define ANNAL_ASSIGN_OR_RETURN(lhs, expr)                                   \
  auto ANNAL_CONCAT(annal_result_, __LINE__) = (expr);                      \
  if (!ANNAL_CONCAT(annal_result_, __LINE__).ok())                          \
    return ANNAL_CONCAT(annal_result_, __LINE__).status();                  \
  lhs = std::move(ANNAL_CONCAT(annal_result_, __LINE__)).value()
