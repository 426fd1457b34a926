// How the annal command line shows events and results: aligned tables and
// short sentences for people, one JSON object per line (JSON Lines) for
// programs. Payloads and metadata that parse as JSON are embedded as JSON;
// anything else becomes a JSON string (invalid UTF-8 replaced by U+FFFD).
//
// Thread-safety: plain functions and values; an EventTable belongs to one
// thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "annal/state.h"
#include "annal/types.h"

namespace annal::cli {

using Json = nlohmann::ordered_json;

// Longest payload a table row shows, in characters; the rest becomes "…".
inline constexpr size_t kTableDataChars = 80;

// `bytes` as a JSON value when it is one JSON document, else as a string.
Json EmbedBytes(std::string_view bytes);

// Compact, single-line JSON; invalid UTF-8 in strings becomes U+FFFD.
std::string DumpJson(const Json& j);

// The payload on one line for a table: compact JSON when it parses, else a
// quoted JSON string; cut to `max_chars` characters with a trailing "…".
std::string OneLineData(std::string_view bytes, size_t max_chars);

// {"stream","version","position","recorded_at","recorded_at_ns","id","type",
//  "data","metadata"}
Json EventToJson(const RecordedEvent& e);
Json AppendResultToJson(const std::string& stream, const AppendResult& r);
Json StreamInfoToJson(const StreamInfo& info);
Json MissingStreamInfoToJson(const std::string& stream);

// {"stream","version","recorded_at","recorded_at_ns"[,"as_of","as_of_ns"],
//  "reducer","schema_version","snapshot_version" (null: a full replay),
//  "events_folded","state"}; as_of only for a target time.
Json StateToJson(const State& s, const StateTarget& target);
// {"stream","version","recorded_at","recorded_at_ns","reducer",
//  "schema_version","size_bytes","taken_at","taken_at_ns"}
Json SnapshotToJson(const Snapshot& s);

// "appended account-42 version 3 at position 17"
std::string DescribeAppend(const std::string& stream, const AppendResult& r);
// Label/value lines: stream, exists, head version, event count, first/last.
std::string DescribeStreamInfo(const StreamInfo& info);
std::string DescribeMissingStream(const std::string& stream);
// Label/value lines (version, times, reducer, how it was computed), then
// the state: indented JSON when it is JSON, else a JSON string.
std::string DescribeState(const State& s, const StateTarget& target);
// A table of snapshots; "(no snapshots)" when there are none.
std::string SnapshotTable(const std::vector<Snapshot>& snapshots);

// An event as one human line (tail), the same columns as a table row,
// separated by two spaces instead of aligned.
std::string EventLine(const RecordedEvent& e, bool with_stream);

// Rows of events for people, columns sized to fit once all rows are in.
// Keeps only the (truncated) cells, not the events, so memory stays small.
class EventTable {
 public:
  explicit EventTable(bool with_stream) : with_stream_(with_stream) {}
  void Add(const RecordedEvent& e);
  size_t size() const { return rows_.size(); }
  // The header and every row; "(no events)" when there are none.
  std::string Render() const;

 private:
  std::vector<std::string> Header() const;
  bool with_stream_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace annal::cli
