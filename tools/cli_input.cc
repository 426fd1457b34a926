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

}  // namespace

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
