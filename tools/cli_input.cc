#include "cli_input.h"

#include <charconv>
#include <nlohmann/json.hpp>

#include "annal/limits.h"

namespace annal::cli {
namespace {

// The server refuses a filter with more event types than this (protocol.h).
constexpr size_t kMaxFilterEventTypes = 64;

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// nlohmann prefixes its messages with "[json.exception.parse_error.101] ",
// which tells a person nothing.
std::string WithoutExceptionTag(std::string message) {
  if (!message.empty() && message.front() == '[') {
    size_t close = message.find("] ");
    if (close != std::string::npos) message.erase(0, close + 2);
  }
  return message;
}

// Reads exactly `n` decimal digits at `*at`, advancing it.
bool Digits(std::string_view text, size_t* at, size_t n, int* out) {
  if (*at + n > text.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = text[*at + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *at += n;
  *out = v;
  return true;
}

bool Take(std::string_view text, size_t* at, std::string_view choices) {
  if (*at >= text.size() || choices.find(text[*at]) == std::string_view::npos) return false;
  ++*at;
  return true;
}

bool IsLeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int DaysInMonth(int y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeapYear(y) ? 29 : kDays[m - 1];
}

// Days from 1970-01-01 to the proleptic Gregorian date y-m-d (Howard
// Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// RFC 3339 date-time; empty on success, else what is wrong.
std::string ParseRfc3339(std::string_view text, int64_t* ns_out) {
  size_t at = 0;
  int year, month, day, hour, minute, second;
  if (!Digits(text, &at, 4, &year) || !Take(text, &at, "-") || !Digits(text, &at, 2, &month) ||
      !Take(text, &at, "-") || !Digits(text, &at, 2, &day) || !Take(text, &at, "Tt ") ||
      !Digits(text, &at, 2, &hour) || !Take(text, &at, ":") || !Digits(text, &at, 2, &minute) ||
      !Take(text, &at, ":") || !Digits(text, &at, 2, &second))
    return "expected YYYY-MM-DDTHH:MM:SS";
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month))
    return "there is no day " + std::string(text.substr(0, 10));
  if (hour > 23 || minute > 59 || second > 59) return "the time of day is out of range";
  int64_t fraction_ns = 0;
  if (Take(text, &at, ".")) {
    int digits = 0;
    for (; at < text.size() && text[at] >= '0' && text[at] <= '9'; ++at, ++digits) {
      if (digits == 9) return "at most 9 fractional digits (nanoseconds)";
      fraction_ns = fraction_ns * 10 + (text[at] - '0');
    }
    if (digits == 0) return "expected digits after '.'";
    for (int i = digits; i < 9; ++i) fraction_ns *= 10;
  }
  int64_t offset_s = 0;
  if (at < text.size() && (text[at] == '+' || text[at] == '-')) {
    const int sign = text[at] == '-' ? -1 : 1;
    ++at;
    int oh, om;
    if (!Digits(text, &at, 2, &oh) || !Take(text, &at, ":") || !Digits(text, &at, 2, &om) ||
        oh > 23 || om > 59)
      return "expected a UTC offset such as +02:00";
    offset_s = sign * (oh * 3600 + om * 60);
  } else if (!Take(text, &at, "Zz")) {
    return "expected 'Z' (UTC) or an offset such as +02:00 after the time";
  }
  if (at != text.size()) return "unexpected text after the time";
  const int64_t seconds =
      DaysFromCivil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s;
  int64_t ns;
  if (__builtin_mul_overflow(seconds, int64_t{1'000'000'000}, &ns) ||
      __builtin_add_overflow(ns, fraction_ns, &ns))
    return "out of range (nanoseconds since 1970 must fit 64 bits: years 1678..2261)";
  *ns_out = ns;
  return "";
}

}  // namespace

Parsed<int64_t> ParseTime(std::string_view text) {
  int64_t ns = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ns);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size()) return ns;
  if (ec == std::errc::result_out_of_range)
    return "--at is out of range: nanoseconds since the epoch must fit a signed 64-bit integer; "
           "got '" +
           std::string(text) + "'";
  const std::string why = ParseRfc3339(text, &ns);
  if (why.empty()) return ns;
  return "--at must be a time such as 2026-11-26T10:00:00Z (RFC 3339, optional fraction) or "
         "nanoseconds since the epoch; got '" +
         std::string(text) + "': " + why;
}

Parsed<ExpectedVersion> ParseExpectedVersion(std::string_view text) {
  if (text == "any") return ExpectedVersion::Any();
  if (text == "no-stream") return ExpectedVersion::NoStream();
  if (text == "exists" || text == "stream-exists") return ExpectedVersion::StreamExists();
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size())
    return ExpectedVersion::Exact(v);
  return "--expected must be a version number, any, no-stream or exists; got '" +
         std::string(text) + "'";
}

Parsed<EventId> ParseEventId(std::string_view text) {
  const std::string bad =
      "--id must be a UUID such as 0190a5b2-7c3e-7d4f-8a1b-2c3d4e5f6a7b; got '" +
      std::string(text) + "'";
  const bool dashed = text.size() == 36;
  if (!dashed && text.size() != 32) return bad;
  EventId id{};
  size_t nibble = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (dashed && (i == 8 || i == 13 || i == 18 || i == 23)) {
      if (text[i] != '-') return bad;
      continue;
    }
    int d = HexDigit(text[i]);
    if (d < 0) return bad;
    id[nibble / 2] = static_cast<uint8_t>(id[nibble / 2] | (d << (nibble % 2 == 0 ? 4 : 0)));
    ++nibble;
  }
  if (nibble != 32) return bad;
  if (IsNilEventId(id)) return "--id must not be the nil UUID (it means \"no id\")";
  return id;
}

std::optional<std::string> CheckJson(std::string_view text) {
  if (nlohmann::json::accept(text)) return std::nullopt;
  // Parse again only to learn where and why it fails.
  try {
    nlohmann::json ignored = nlohmann::json::parse(text);
    return "not accepted by the JSON parser";
  } catch (const nlohmann::json::exception& e) {
    return WithoutExceptionTag(e.what());
  }
}

std::optional<std::string> CheckStreamName(std::string_view stream) {
  if (stream.empty()) return "the stream name must not be empty";
  if (stream.size() > limits::kMaxStreamNameBytes)
    return "the stream name is " + std::to_string(stream.size()) + " bytes; at most " +
           std::to_string(limits::kMaxStreamNameBytes) + " are allowed";
  return std::nullopt;
}

std::optional<std::string> CheckEventType(std::string_view type) {
  if (type.empty()) return "--type must not be empty";
  if (type.size() > limits::kMaxEventTypeBytes)
    return "--type is " + std::to_string(type.size()) + " bytes; at most " +
           std::to_string(limits::kMaxEventTypeBytes) + " are allowed";
  return std::nullopt;
}

Parsed<protocol::Filter> MakeFilter(const std::string& category,
                                    const std::vector<std::string>& types) {
  protocol::Filter f;
  if (!category.empty()) {
    if (category.size() > limits::kMaxStreamNameBytes) return "--category is too long";
    f.kind = protocol::Filter::Kind::kCategory;
    f.value = category;
  }
  if (types.size() > kMaxFilterEventTypes)
    return "at most " + std::to_string(kMaxFilterEventTypes) + " --type values are allowed";
  for (const std::string& t : types)
    if (auto err = CheckEventType(t)) return *err;
  f.event_types = types;
  return f;
}

}  // namespace annal::cli
