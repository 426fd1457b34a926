// Small shared pieces: Status names, event ids, assertion failure.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <ctime>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>

#include "annal/assert.h"
#include "annal/status.h"
#include "annal/types.h"
#include "log_sink.h"

namespace annal {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kTooLarge: return "too large";
    case StatusCode::kWrongExpectedVersion: return "wrong expected version";
    case StatusCode::kNotFound: return "not found";
    case StatusCode::kCorruption: return "corruption";
    case StatusCode::kIoError: return "I/O error";
    case StatusCode::kFailStopped: return "fail-stopped";
    case StatusCode::kUnavailable: return "unavailable";
    case StatusCode::kAlreadyExists: return "already exists";
    case StatusCode::kOverloaded: return "overloaded";
  }
  return "unknown";
}

Status Status::FromErrno(int err, const std::string& what) {
  return IoError(what + ": " + std::strerror(err));
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

bool IsNilEventId(const EventId& id) {
  for (uint8_t b : id)
    if (b != 0) return false;
  return true;
}

// A UUIDv7: 48 bits of Unix milliseconds, then random bits, so generated ids
// sort roughly by creation time.
EventId GenerateEventId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  EventId id;
  uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  uint64_t r1 = rng(), r2 = rng();
  for (int i = 0; i < 6; ++i) id[i] = static_cast<uint8_t>(ms >> (40 - 8 * i));
  std::memcpy(&id[6], &r1, 2);
  std::memcpy(&id[8], &r2, 8);
  id[6] = static_cast<uint8_t>((id[6] & 0x0f) | 0x70);  // version 7
  id[8] = static_cast<uint8_t>((id[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return id;
}

std::string EventIdToString(const EventId& id) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    s.push_back(kHex[id[i] >> 4]);
    s.push_back(kHex[id[i] & 15]);
  }
  return s;
}

std::string ExpectedVersion::ToString() const {
  switch (kind_) {
    case Kind::kAny: return "any";
    case Kind::kNoStream: return "no-stream";
    case Kind::kStreamExists: return "stream-exists";
    case Kind::kExact: return std::to_string(version_);
  }
  return "?";
}

std::string_view StreamCategory(std::string_view stream) {
  size_t dash = stream.find('-');
  return dash == std::string_view::npos ? stream : stream.substr(0, dash);
}

namespace detail {
void AssertFailed(const char* file, int line, const char* expr, const char* msg) {
  std::fprintf(stderr, "annal: assertion failed at %s:%d: %s%s%s\n", file, line, expr,
               msg ? " — " : "", msg ? msg : "");
  std::fflush(stderr);
  std::abort();
}
}  // namespace detail

std::string FormatTimestamp(int64_t ns_since_epoch) {
  // Floor division, so times before 1970 still print a correct second.
  int64_t seconds = ns_since_epoch / 1'000'000'000;
  int64_t ns_part = ns_since_epoch % 1'000'000'000;
  if (ns_part < 0) {
    ns_part += 1'000'000'000;
    --seconds;
  }
  time_t t = static_cast<time_t>(seconds);
  struct tm tm {};
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(ns_since_epoch) + "ns";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRId64 "Z", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                ns_part / 1000);
  return buf;
}

LogSink OneLineAtATime(LogSink sink, const char* stderr_prefix) {
  if (!sink) sink = [stderr_prefix](const std::string& line) { std::fprintf(stderr, "%s%s\n", stderr_prefix, line.c_str()); };
  // One lock for the process: a sink may serve several stores and state
  // engines at once (annald hands one to both).
  static std::mutex mu;
  return [sink = std::move(sink)](const std::string& line) {
    std::lock_guard<std::mutex> lock(mu);
    sink(line);
  };
}

}  // namespace annal
