#include "cli_output.h"

#include <algorithm>

namespace annal::cli {
namespace {

// Characters, not bytes: UTF-8 continuation bytes do not count.
size_t CharCount(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

// The first `max_chars` characters of `s`, plus "…" when something was cut.
std::string TruncateChars(std::string_view s, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) == 0x80) continue;
    if (chars == max_chars) return std::string(s.substr(0, i)) + "…";
    ++chars;
  }
  return std::string(s);
}

std::vector<std::string> Cells(const RecordedEvent& e, bool with_stream) {
  std::vector<std::string> cells;
  if (with_stream) cells.push_back(e.stream);
  cells.push_back(std::to_string(e.version.get()));
  cells.push_back(std::to_string(e.position.get()));
  cells.push_back(FormatTimestamp(e.recorded_at_ns));
  cells.push_back(e.type);
  cells.push_back(OneLineData(e.payload, kTableDataChars));
  return cells;
}

// Rows under a header, columns as wide as their widest cell.
std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = CharCount(header[c]);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], CharCount(row[c]));
  auto render_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      // The last column is not padded: no trailing blanks.
      if (c + 1 < row.size()) line.append(width[c] - CharCount(row[c]) + 2, ' ');
    }
    return line + "\n";
  };
  std::string out = render_row(header);
  for (const auto& row : rows) out += render_row(row);
  return out;
}

std::string Plural(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

Json EmbedBytes(std::string_view bytes) {
  Json j = Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Json(std::string(bytes));
  return j;
}

std::string DumpJson(const Json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

std::string OneLineData(std::string_view bytes, size_t max_chars) {
  // Compact JSON has no raw newlines; neither has a JSON string literal.
  return TruncateChars(DumpJson(EmbedBytes(bytes)), max_chars);
}

Json EventToJson(const RecordedEvent& e) {
  Json j;
  j["stream"] = e.stream;
  j["version"] = e.version.get();
  j["position"] = e.position.get();
  j["recorded_at"] = FormatTimestamp(e.recorded_at_ns);
  j["recorded_at_ns"] = e.recorded_at_ns;
  j["id"] = EventIdToString(e.id);
  j["type"] = e.type;
  j["data"] = EmbedBytes(e.payload);
  j["metadata"] = EmbedBytes(e.metadata);
  return j;
}

Json AppendResultToJson(const std::string& stream, const AppendResult& r) {
  Json j;
  j["stream"] = stream;
  j["first_version"] = r.first_version.get();
  j["last_version"] = r.last_version.get();
  j["first_position"] = r.first_position.get();
  j["last_position"] = r.last_position.get();
  j["recorded_at"] = FormatTimestamp(r.recorded_at_ns);
  j["recorded_at_ns"] = r.recorded_at_ns;
  j["idempotent_replay"] = r.idempotent_replay;
  return j;
}

Json StreamInfoToJson(const StreamInfo& info) {
  Json j;
  j["stream"] = info.stream;
  j["exists"] = true;
  j["head_version"] = info.head_version.get();
  j["event_count"] = info.event_count;
  j["first_recorded_at"] = FormatTimestamp(info.first_recorded_at_ns);
  j["first_recorded_at_ns"] = info.first_recorded_at_ns;
  j["last_recorded_at"] = FormatTimestamp(info.last_recorded_at_ns);
  j["last_recorded_at_ns"] = info.last_recorded_at_ns;
  return j;
}

Json MissingStreamInfoToJson(const std::string& stream) {
  Json j;
  j["stream"] = stream;
  j["exists"] = false;
  return j;
}

std::string DescribeAppend(const std::string& stream, const AppendResult& r) {
  std::string s = "appended " + stream + " version " + std::to_string(r.last_version.get()) +
                  " at position " + std::to_string(r.last_position.get());
  if (r.idempotent_replay) s += " (idempotent replay: this event was already recorded)";
  return s;
}

std::string DescribeStreamInfo(const StreamInfo& info) {
  return "stream:        " + info.stream +
         "\nexists:        yes"
         "\nhead version:  " +
         std::to_string(info.head_version.get()) +
         "\nevent count:   " + std::to_string(info.event_count) +
         "\nfirst event:   " + FormatTimestamp(info.first_recorded_at_ns) +
         "\nlast event:    " + FormatTimestamp(info.last_recorded_at_ns) + "\n";
}

std::string DescribeMissingStream(const std::string& stream) {
  return "stream:        " + stream + "\nexists:        no\n";
}

Json StateToJson(const State& s, const StateTarget& target) {
  Json j;
  j["stream"] = s.stream;
  j["version"] = s.version.get();
  j["recorded_at"] = FormatTimestamp(s.recorded_at_ns);
  j["recorded_at_ns"] = s.recorded_at_ns;
  if (target.kind == StateTarget::Kind::kTime) {
    j["as_of"] = FormatTimestamp(target.time_ns);
    j["as_of_ns"] = target.time_ns;
  }
  j["reducer"] = s.reducer;
  j["schema_version"] = s.schema_version;
  j["snapshot_version"] = s.snapshot_version ? Json(s.snapshot_version->get()) : Json(nullptr);
  j["events_folded"] = s.events_folded;
  j["state"] = EmbedBytes(s.state);
  return j;
}

Json SnapshotToJson(const Snapshot& s) {
  Json j;
  j["stream"] = s.stream;
  j["version"] = s.version.get();
  j["recorded_at"] = FormatTimestamp(s.recorded_at_ns);
  j["recorded_at_ns"] = s.recorded_at_ns;
  j["reducer"] = s.reducer;
  j["schema_version"] = s.schema_version;
  j["size_bytes"] = s.state_size;
  j["taken_at"] = FormatTimestamp(s.taken_at_ns);
  j["taken_at_ns"] = s.taken_at_ns;
  return j;
}

std::string DescribeState(const State& s, const StateTarget& target) {
  std::string out = "stream:        " + s.stream +
                    "\nversion:       " + std::to_string(s.version.get()) +
                    "\nrecorded at:   " + FormatTimestamp(s.recorded_at_ns) + "\n";
  if (target.kind == StateTarget::Kind::kTime)
    out += "as of:         " + FormatTimestamp(target.time_ns) + "\n";
  out += "reducer:       " + s.reducer + " (schema " + std::to_string(s.schema_version) +
         ")\ncomputed from: ";
  if (s.snapshot_version)
    out += "the snapshot at version " + std::to_string(s.snapshot_version->get()) + " and " +
           Plural(s.events_folded, "event", "events") + " after it\n";
  else
    out += "a full replay of " + Plural(s.events_folded, "event", "events") + "\n";
  // Indented JSON has no raw control characters: a state that is not JSON
  // is shown as a JSON string, so it cannot upset the terminal.
  return out + "state:\n" +
         EmbedBytes(s.state).dump(2, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace) +
         "\n";
}

std::string SnapshotTable(const std::vector<Snapshot>& snapshots) {
  if (snapshots.empty()) return "(no snapshots)\n";
  std::vector<std::vector<std::string>> rows;
  for (const Snapshot& s : snapshots)
    rows.push_back({std::to_string(s.version.get()), FormatTimestamp(s.recorded_at_ns), s.reducer,
                    std::to_string(s.schema_version), std::to_string(s.state_size),
                    FormatTimestamp(s.taken_at_ns)});
  return RenderTable({"VERSION", "RECORDED_AT", "REDUCER", "SCHEMA", "BYTES", "TAKEN_AT"}, rows);
}

std::string EventLine(const RecordedEvent& e, bool with_stream) {
  std::string line;
  for (const std::string& cell : Cells(e, with_stream)) {
    if (!line.empty()) line += "  ";
    line += cell;
  }
  return line;
}

void EventTable::Add(const RecordedEvent& e) { rows_.push_back(Cells(e, with_stream_)); }

std::vector<std::string> EventTable::Header() const {
  std::vector<std::string> h;
  if (with_stream_) h.push_back("STREAM");
  for (const char* c : {"VERSION", "POSITION", "RECORDED_AT", "TYPE", "DATA"}) h.push_back(c);
  return h;
}

std::string EventTable::Render() const {
  if (rows_.empty()) return "(no events)\n";
  return RenderTable(Header(), rows_);
}

}  // namespace annal::cli
