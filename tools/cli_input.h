// What the annal command line accepts from its user, checked before anything
// is sent: expected versions, event ids, JSON documents, names and filters.
// Each parser returns the value or a one-line message saying what is wrong
// and what would be right; none of them touches the network.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "annal/types.h"
#include "protocol.h"

namespace annal::cli {

// The process exit codes of `annal`, one per kind of failure, so scripts can
// tell a typo from a conflict from a server that is down.
enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,          // bad arguments or input, refused before sending
  kExitServerError = 2,    // the server answered with an error
  kExitCannotConnect = 3,  // no server reachable at --host:--port
};

// A value, or the message explaining why the input was refused.
template <typename T>
using Parsed = std::variant<T, std::string>;

template <typename T>
bool IsError(const Parsed<T>& p) {
  return std::holds_alternative<std::string>(p);
}

// "any", "no-stream", "exists" (or "stream-exists"), or a version number.
Parsed<ExpectedVersion> ParseExpectedVersion(std::string_view text);

// A UUID as 8-4-4-4-12 hex digits, or 32 hex digits without dashes. The nil
// UUID is refused: on the wire it means "no id given".
Parsed<EventId> ParseEventId(std::string_view text);

// Empty when `text` is one valid JSON document; otherwise what the JSON
// parser objected to, e.g. "syntax error ... at line 1, column 7".
std::optional<std::string> CheckJson(std::string_view text);

// A point in time for --at: RFC 3339 / ISO 8601, "2026-11-26T10:00:00Z",
// with up to 9 fractional digits and "Z" or a "+HH:MM" / "-HH:MM" offset; or
// an integer, nanoseconds since the Unix epoch (an event's recorded_at_ns).
// Returns nanoseconds since the epoch, UTC.
Parsed<int64_t> ParseTime(std::string_view text);

// Stream names and event types: 1..255 bytes, as the server requires.
std::optional<std::string> CheckStreamName(std::string_view stream);
std::optional<std::string> CheckEventType(std::string_view type);

// The read-all / subscribe-to-all filter from --category and --type.
Parsed<protocol::Filter> MakeFilter(const std::string& category,
                                    const std::vector<std::string>& types);

}  // namespace annal::cli
