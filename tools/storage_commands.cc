// The storage engineer's read-only commands (storage_commands.h): data ls,
// segment dump, segment stats, index dump and checkpoint dump. `verify` and
// `repair` live in storage_verify.cc.
//
// The bytes are read through engine/src/inspect.h and the format headers;
// this file decides what to show and how: aligned tables for people, one
// JSON document for programs. Problems go to stderr as "annal: FILE at
// offset N: why", and the exit status says what kind they were.
#include "storage_commands.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "annal/assert.h"
#include "annal/types.h"
#include "block_cache.h"
#include "checkpoint.h"
#include "format.h"
#include "fs.h"
#include "inspect.h"
#include "sealed.h"
#include "segment.h"
#include "segment_index.h"

namespace annal::cli::storage {
namespace {

using Json = nlohmann::ordered_json;
using format::kSegmentHeaderBytes;

// Decompressed sealed blocks and index pages one command keeps in memory.
constexpr size_t kBlockCacheBytes = 64ull << 20;
// A payload preview in `segment dump` is at most this many characters.
constexpr size_t kPreviewChars = 80;
// `checkpoint dump --json` lists a partition's streams only below this many.
constexpr size_t kMaxJsonStreams = 10'000;
// `index dump --stream` shows this many of a run's first offsets.
constexpr size_t kFirstOffsetsShown = 8;
// Long tables are printed this many rows at a time (columns are aligned
// within each chunk), so that a dump's memory does not grow with the log.
constexpr size_t kTableRowsPerChunk = 1000;

// ---------------------------------------------------------------- output

void Print(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }

void Say(const std::string& line) { std::fprintf(stderr, "annal: %s\n", line.c_str()); }

// Damage found on disk is kProblems; anything else kept a file from being
// read.
int ExitFor(const Status& s) {
  ANNAL_ASSERT(!s.ok());
  return s.code() == StatusCode::kCorruption ? kProblems : kIoError;
}

int Report(const Status& s) {
  Say(s.message());
  return ExitFor(s);
}

// The exit status that tells more: an unreadable file over damage over ok.
int Worse(int a, int b) { return std::max(a, b); }

// stdout may be a closed pipe or a full disk: say so in the exit status.
int Finish(int status) {
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    Say("cannot write the output: " + std::string(std::strerror(errno)));
    return Worse(status, kIoError);
  }
  return status;
}

// A segment and where it lies, for judging what a walk through it found.
struct SegmentPlace {
  const std::string& dir;
  const format::Manifest& m;
  uint32_t partition;
  BlockCache* cache;
};

// True when segment `id` holds no batch yet (made ahead of need, or just
// rolled to): that it has no index file says nothing then.
bool SegmentEmpty(const std::string& dir, const format::Manifest& m, uint32_t p, uint32_t id,
                  BlockCache* cache) {
  auto seg = inspect::OpenSegmentReadOnly(dir, m, p, id, cache);
  if (!seg.ok()) return false;  // reported where the segment itself is read
  return HoldsNoBatch(**seg);
}

// A torn batch at the end of the log is no damage: it was never
// acknowledged, annald may be writing it right now, and otherwise the next
// open drops it. By recovery's rule (and `annal verify`'s) it is the end
// when nothing but zeros follows it in its segment and every later segment
// of the partition is empty. Then this says a warning and returns ok;
// otherwise it returns kCorruption naming file and offset.
Status JudgeTornBatch(const SegmentPlace& at, const SegmentFile& seg, const inspect::TornBatch& t) {
  ANNAL_ASSIGN_OR_RETURN(bool final, ZeroFrom(seg, inspect::TornBatchEnd(t)));
  if (final) {
    ANNAL_ASSIGN_OR_RETURN(std::vector<uint32_t> ids,
                           inspect::ListSegmentIds(inspect::PartitionDir(at.dir, at.partition)));
    for (uint32_t id : ids)
      if (id > seg.id && !SegmentEmpty(at.dir, at.m, at.partition, id, at.cache)) final = false;
  }
  if (!final) return CorruptionAt(seg, t.offset, "torn batch: " + t.check.why + ", and data follows it");
  Say(seg.path + " at offset " + std::to_string(t.offset) + ": warning: torn final batch (" + t.check.why +
      "), never acknowledged: annald may be writing it; if not, annald drops it at open and "
      "`annal repair` removes it");
  return Status::Ok();
}

// The partition's checkpoint; a problem reading it is said and folded into
// `status`, and the commands go on without it.
Result<std::optional<inspect::Checkpoint>> ReadCheckpointReporting(const std::string& pdir, int* status) {
  auto checkpoint = inspect::ReadCheckpoint(pdir);
  if (!checkpoint.ok()) *status = Worse(*status, Report(checkpoint.status()));
  return checkpoint;
}

std::string DumpJson(const Json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

// Runs `one` for each partition, which fills its JSON and its text and
// returns its exit status; prints them (one JSON document with `json`) and
// returns the worst status.
int EachPartition(const format::Manifest& m, bool json,
                  const std::function<int(uint32_t, Json*, std::string*)>& one) {
  int status = kOk;
  Json partitions = Json::array();
  for (uint32_t p = 0; p < m.partitions; ++p) {
    Json j;
    std::string text;
    status = Worse(status, one(p, &j, &text));
    if (json)
      partitions.push_back(std::move(j));
    else
      Print(text);
  }
  if (json) Print(DumpJson(Json{{"partitions", std::move(partitions)}}) + "\n");
  return Finish(status);
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
  return buf;
}

std::string LocationText(uint64_t location) {
  if (location == format::kNoLocation) return "-";
  return std::to_string(format::LocationSegment(location)) + ":" +
         std::to_string(format::LocationOffset(location));
}

Json LocationJson(uint64_t location) {
  if (location == format::kNoLocation) return nullptr;
  return Json{{"segment", format::LocationSegment(location)},
              {"offset", format::LocationOffset(location)}};
}

std::string RatioText(uint64_t stored, uint64_t raw) {
  if (raw == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(stored) / static_cast<double>(raw));
  return buf;
}

Json RatioJson(uint64_t stored, uint64_t raw) {
  if (raw == 0) return nullptr;
  return static_cast<double>(stored) / static_cast<double>(raw);
}

// Sets key_at and key_at_ns (or nulls) for a time that may be unknown.
void PutTime(Json& j, const std::string& key, std::optional<int64_t> ns) {
  j[key] = ns ? Json(FormatTimestamp(*ns)) : Json(nullptr);
  j[key + "_ns"] = ns ? Json(*ns) : Json(nullptr);
}

std::string TimeText(std::optional<int64_t> ns) { return ns ? FormatTimestamp(*ns) : "-"; }

std::string Plural(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

template <typename T>
std::string OrDash(const std::optional<T>& v) {
  return v ? std::to_string(*v) : "-";
}

template <typename T>
Json OrNull(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

// One byte as it shows in a preview: printable ASCII as itself, the rest
// (and the backslash) escaped.
std::string EscapeByte(char c) {
  switch (c) {
    case '\\':
      return "\\\\";
    case '\n':
      return "\\n";
    case '\r':
      return "\\r";
    case '\t':
      return "\\t";
    default:
      break;
  }
  const auto b = static_cast<unsigned char>(c);
  if (b >= 0x20 && b < 0x7f) return std::string(1, c);
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02x", b);
  return buf;
}

// At most kPreviewChars characters of `bytes`, escaped, ending in "..."
// when cut.
std::string Preview(std::string_view bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string piece = EscapeByte(bytes[i]);
    const size_t room = i + 1 == bytes.size() ? kPreviewChars : kPreviewChars - 3;
    if (out.size() + piece.size() > room) return out + "...";
    out += piece;
  }
  return out;
}

// Rows under a header, each column as wide as its widest cell.
class Table {
 public:
  explicit Table(std::vector<std::string> header, std::string indent = "")
      : header_(std::move(header)), indent_(std::move(indent)) {}

  void Add(std::vector<std::string> row) {
    ANNAL_ASSERT(row.size() == header_.size());
    rows_.push_back(std::move(row));
  }
  size_t size() const { return rows_.size(); }

  // The header and the rows added since the last call, which are dropped.
  std::string Take() {
    std::vector<size_t> width(header_.size());
    for (size_t c = 0; c < header_.size(); ++c) width[c] = Chars(header_[c]);
    for (const auto& row : rows_)
      for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], Chars(row[c]));
    std::string out = Line(header_, width);
    for (const auto& row : rows_) out += Line(row, width);
    rows_.clear();
    return out;
  }

 private:
  // Characters, not bytes: UTF-8 continuation bytes do not count.
  static size_t Chars(const std::string& s) {
    return static_cast<size_t>(
        std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  }
  std::string Line(const std::vector<std::string>& row, const std::vector<size_t>& width) const {
    std::string line = indent_;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      // The last column is not padded: no trailing blanks.
      if (c + 1 < row.size()) line.append(width[c] - Chars(row[c]) + 2, ' ');
    }
    // No trailing blanks, also when the last cells are empty.
    line.erase(line.find_last_not_of(' ') + 1);
    return line + "\n";
  }
  std::vector<std::string> header_;
  std::string indent_;
  std::vector<std::vector<std::string>> rows_;
};

// ---------------------------------------------------------------- opening

// Stats `path` into `st`, or says why it cannot (`what`: "directory",
// "file") and returns the exit status.
int StatPath(const std::string& path, const char* what, struct stat* st) {
  if (::stat(path.c_str(), st) == 0) return kOk;
  if (errno == ENOENT || errno == ENOTDIR) {
    Say(path + ": no such " + what);
    return kUsage;
  }
  return Report(Status::FromErrno(errno, "stat " + path));
}

// Reads DIR's manifest into `m`, or says why DIR is not a data directory
// and returns the exit status.
int LoadDataDir(const std::string& dir, format::Manifest* m) {
  struct stat st;
  if (int status = StatPath(dir, "directory", &st); status != kOk) return status;
  if (!S_ISDIR(st.st_mode)) {
    Say(dir + " is not a directory; a data directory was expected");
    return kUsage;
  }
  Result<format::Manifest> manifest = inspect::ReadManifest(dir);
  if (!manifest.ok()) {
    if (manifest.status().code() != StatusCode::kNotFound) return Report(manifest.status());
    Say(dir + " is not an annal data directory: it has no " + format::ManifestName());
    return kUsage;
  }
  *m = *manifest;
  return kOk;
}

// Resolves a segment FILE to where it lies and its store's manifest, or
// says why it cannot and returns the exit status.
int LoadSegmentPath(const std::string& file, inspect::SegmentLocation* loc, format::Manifest* m) {
  struct stat st;
  if (int status = StatPath(file, "file", &st); status != kOk) return status;
  if (!S_ISREG(st.st_mode) || !inspect::ParseSegmentPath(file, loc)) {
    Say(file + " is not a segment file (DIR/partition-NNN/segment-NNNNNNNN.log)");
    return kUsage;
  }
  if (int status = LoadDataDir(loc->data_dir, m); status != kOk) return status;
  if (loc->partition >= m->partitions) {
    Say(file + " lies in partition " + std::to_string(loc->partition) + ", but the store has " +
        std::to_string(m->partitions) + " partitions");
    return kUsage;
  }
  return kOk;
}

std::optional<int64_t> FirstTime(const inspect::SegmentExtent& e) {
  return e.first ? std::optional<int64_t>(e.first->header.recorded_at_ns) : std::nullopt;
}
std::optional<int64_t> LastTime(const inspect::SegmentExtent& e) {
  return e.last ? std::optional<int64_t>(e.last->header.recorded_at_ns) : std::nullopt;
}
std::optional<uint64_t> FirstPosition(const inspect::SegmentExtent& e) {
  return e.first ? std::optional<uint64_t>(e.first->header.first_position) : std::nullopt;
}
std::optional<uint64_t> LastPosition(const inspect::SegmentExtent& e) {
  if (!e.last) return std::nullopt;
  return e.last->header.first_position + e.last->header.count - 1;  // count >= 1 (decoder)
}

// ---------------------------------------------------------------- data ls

struct SegmentRow {
  uint32_t id = 0;
  std::string state;
  bool opened = false, sealed = false, has_index = false;
  uint64_t file_bytes = 0;
  inspect::SegmentExtent extent;
  std::optional<uint64_t> torn_at;  // the log ends at a torn batch here (JudgeTornBatch)
};

// Reads one segment's row; a problem is reported and folded into `status`.
SegmentRow ReadSegmentRow(const std::string& dir, const format::Manifest& m, uint32_t partition,
                          uint32_t id, BlockCache* cache, int* status) {
  SegmentRow row;
  row.id = id;
  const std::string pdir = inspect::PartitionDir(dir, partition);
  row.has_index = fs::Exists(fs::Join(pdir, format::SegmentIndexFileName(id)));
  Result<uint64_t> bytes = inspect::FileBytes(fs::Join(pdir, format::SegmentFileName(id)));
  if (bytes.ok()) row.file_bytes = *bytes;
  Result<std::shared_ptr<SegmentFile>> seg =
      inspect::OpenSegmentReadOnly(dir, m, partition, id, cache);
  if (seg.ok()) {
    row.opened = true;
    row.sealed = (*seg)->sealed != nullptr;
    row.extent = inspect::FindExtent(**seg);
    if (row.extent.torn && !row.sealed) {
      row.extent.problem = JudgeTornBatch(SegmentPlace{dir, m, partition, cache}, **seg, *row.extent.torn);
      if (row.extent.problem.ok()) row.torn_at = row.extent.torn->offset;
    }
  } else {
    row.extent.problem = seg.status();
  }
  if (!row.extent.problem.ok()) *status = Worse(*status, Report(row.extent.problem));
  return row;
}

// What each segment is to its partition's writer. It appends to the last
// segment holding data unless that one was finished (indexed or sealed),
// then to the next; empty segments after that were created ahead of need.
void AssignStates(std::vector<SegmentRow>* rows) {
  size_t active = 0;
  for (size_t i = 0; i < rows->size(); ++i) {
    const SegmentRow& r = (*rows)[i];
    if (r.extent.first) active = r.sealed || r.has_index ? i + 1 : i;
  }
  for (size_t i = 0; i < rows->size(); ++i) {
    SegmentRow& r = (*rows)[i];
    if (!r.opened)
      r.state = "unreadable";
    else if (r.sealed)
      r.state = "sealed";
    else
      r.state = i < active ? "full" : i == active ? "active" : "prepared";
  }
}

Json SegmentRowJson(const SegmentRow& r) {
  Json j;
  j["id"] = r.id;
  j["state"] = r.state;
  j["file_bytes"] = r.file_bytes;
  j["data_end"] = r.extent.data_end;
  j["log_bytes"] = r.extent.data_end - kSegmentHeaderBytes;
  j["first_position"] = OrNull(FirstPosition(r.extent));
  j["last_position"] = OrNull(LastPosition(r.extent));
  PutTime(j, "first_recorded_at", FirstTime(r.extent));
  PutTime(j, "last_recorded_at", LastTime(r.extent));
  j["has_index"] = r.has_index;
  j["torn_final_batch"] = OrNull(r.torn_at);
  j["problem"] = r.extent.problem.ok() ? Json(nullptr) : Json(r.extent.problem.message());
  return j;
}

std::vector<std::string> SegmentRowCells(const SegmentRow& r) {
  return {std::to_string(r.id),
          r.torn_at ? r.state + ", torn tail" : r.state,
          std::to_string(r.file_bytes),
          std::to_string(r.extent.data_end),
          OrDash(FirstPosition(r.extent)),
          OrDash(LastPosition(r.extent)),
          TimeText(FirstTime(r.extent)),
          TimeText(LastTime(r.extent)),
          r.has_index ? "yes" : "no"};
}

Json CheckpointTailJson(const Result<std::optional<inspect::Checkpoint>>& c) {
  if (!c.ok()) return Json{{"problem", c.status().message()}};
  if (!c->has_value()) return nullptr;
  const CheckpointHeader& h = (*c)->header;
  Json j{{"tail_segment", h.tail_segment},
         {"tail_offset", h.tail_offset},
         {"last_position", h.last_position}};
  PutTime(j, "last_recorded_at",
          h.last_position ? std::optional<int64_t>(h.last_recorded_at_ns) : std::nullopt);
  return j;
}

std::string CheckpointTailText(const Result<std::optional<inspect::Checkpoint>>& c) {
  if (!c.ok()) return "checkpoint: unusable (" + c.status().message() + ")\n";
  if (!c->has_value()) return "checkpoint: none\n";
  const CheckpointHeader& h = (*c)->header;
  return "checkpoint: tail at segment " + std::to_string(h.tail_segment) + " offset " +
         std::to_string(h.tail_offset) + ", last position " + std::to_string(h.last_position) +
         ", last recorded at " +
         TimeText(h.last_position ? std::optional<int64_t>(h.last_recorded_at_ns) : std::nullopt) +
         "\n";
}

Json ManifestJson(const std::string& dir, const format::Manifest& m) {
  Json j{{"dir", dir},
         {"format_version", format::kFormatVersion},  // DecodeManifest accepts only this one
         {"partitions", m.partitions},
         {"segment_bytes", m.segment_bytes}};
  PutTime(j, "created_at", m.created_at_ns);
  return j;
}

std::string ManifestText(const std::string& dir, const format::Manifest& m) {
  Table t({"data directory", dir});
  t.Add({"format version", std::to_string(format::kFormatVersion)});
  t.Add({"partitions", std::to_string(m.partitions)});
  t.Add({"segment size", std::to_string(m.segment_bytes) + " bytes"});
  t.Add({"created at", FormatTimestamp(m.created_at_ns)});
  return t.Take();
}

}  // namespace

int DataLs(const std::string& dir, bool json) {
  format::Manifest m;
  if (int status = LoadDataDir(dir, &m); status != kOk) return status;
  BlockCache cache(kBlockCacheBytes);
  int status = kOk;
  Json partitions = Json::array();
  if (!json) Print(ManifestText(dir, m));
  for (uint32_t p = 0; p < m.partitions; ++p) {
    const std::string pdir = inspect::PartitionDir(dir, p);
    Result<std::vector<uint32_t>> ids = inspect::ListSegmentIds(pdir);
    if (!ids.ok()) return Finish(Worse(status, Report(ids.status())));
    std::vector<SegmentRow> rows;
    for (uint32_t id : *ids) rows.push_back(ReadSegmentRow(dir, m, p, id, &cache, &status));
    AssignStates(&rows);
    auto checkpoint = ReadCheckpointReporting(pdir, &status);
    if (json) {
      Json segments = Json::array();
      for (const SegmentRow& r : rows) segments.push_back(SegmentRowJson(r));
      partitions.push_back(Json{{"partition", p},
                                {"segments", std::move(segments)},
                                {"checkpoint", CheckpointTailJson(checkpoint)}});
      continue;
    }
    Table t({"segment", "state", "file bytes", "data end", "first position", "last position",
             "first recorded at", "last recorded at", "index"},
            "  ");
    for (const SegmentRow& r : rows) t.Add(SegmentRowCells(r));
    Print("\npartition " + std::to_string(p) + " (" + format::PartitionDirName(p) + ")\n");
    Print(rows.empty() ? "  (no segments)\n" : t.Take());
    Print("  " + CheckpointTailText(checkpoint));
  }
  if (json)
    Print(
        DumpJson(Json{{"manifest", ManifestJson(dir, m)}, {"partitions", std::move(partitions)}}) +
        "\n");
  return Finish(status);
}

// ---------------------------------------------------------------- segment dump

namespace {

// Where `segment dump` writes what it finds, as it finds it.
class DumpOutput {
 public:
  virtual ~DumpOutput() = default;
  virtual void Begin(const std::string& file, const inspect::SegmentLocation& loc,
                     const SegmentFile& seg, uint64_t start) = 0;
  virtual void Batch(uint64_t offset, const format::BatchHeader& h, bool checksum_ok) = 0;
  virtual void Event(const format::RecordView& r, uint64_t offset) = 0;
  virtual void End(uint64_t events, const Status& problem) = 0;
};

// A line per batch, then a table of its events.
class TextDump : public DumpOutput {
 public:
  void Begin(const std::string& file, const inspect::SegmentLocation& loc, const SegmentFile& seg,
             uint64_t start) override {
    Print("segment " + file + ": partition " + std::to_string(loc.partition) + ", segment " +
          std::to_string(loc.segment_id) + ", " + (seg.sealed ? "sealed" : "unsealed") +
          "; batches from offset " + std::to_string(start) + "\n");
  }
  void Batch(uint64_t offset, const format::BatchHeader& h, bool checksum_ok) override {
    Flush();
    Print("\nbatch at offset " + std::to_string(offset) + ": length " + std::to_string(h.length) +
          ", first position " + std::to_string(h.first_position) + ", " +
          Plural(h.count, "event", "events") + ", recorded at " +
          FormatTimestamp(h.recorded_at_ns) + ", checksum " + (checksum_ok ? "ok" : "FAILS") +
          "\n");
  }
  void Event(const format::RecordView& r, uint64_t offset) override {
    events_.Add({std::to_string(offset), std::to_string(r.position), std::string(r.stream),
                 std::to_string(r.version), std::string(r.type), EventIdToString(r.id),
                 std::to_string(r.metadata.size()), std::to_string(r.payload.size()),
                 Preview(r.payload)});
    if (events_.size() == kTableRowsPerChunk) Flush();
  }
  void End(uint64_t events, const Status&) override {
    Flush();
    Print("\n" + Plural(events, "event", "events") + " shown\n");
  }

 private:
  void Flush() {
    if (events_.size() > 0) Print(events_.Take());
  }
  Table events_{{"offset", "position", "stream", "version", "type", "id", "metadata bytes",
                 "payload bytes", "payload"},
                "  "};
};

// One JSON document, written a batch and an event at a time:
// {"file",...,"batches":[{...,"events":[{...}]}],"events_shown","problem"}.
class JsonDump : public DumpOutput {
 public:
  void Begin(const std::string& file, const inspect::SegmentLocation& loc, const SegmentFile& seg,
             uint64_t start) override {
    Json head{{"file", file},
              {"partition", loc.partition},
              {"segment", loc.segment_id},
              {"sealed", seg.sealed != nullptr},
              {"from_offset", start}};
    Print(Open(head) + ",\"batches\":[");
  }
  void Batch(uint64_t offset, const format::BatchHeader& h, bool checksum_ok) override {
    CloseBatch();
    Json b{{"offset", offset},
           {"length", h.length},
           {"first_position", h.first_position},
           {"count", h.count},
           {"recorded_at", FormatTimestamp(h.recorded_at_ns)},
           {"recorded_at_ns", h.recorded_at_ns},
           {"checksum_ok", checksum_ok}};
    Print(std::string(batches_ > 0 ? "," : "") + Open(b) + ",\"events\":[");
    ++batches_;
    in_batch_ = true;
    events_in_batch_ = 0;
  }
  void Event(const format::RecordView& r, uint64_t offset) override {
    Json e{{"offset", offset},
           {"position", r.position},
           {"stream", std::string(r.stream)},
           {"version", r.version},
           {"type", std::string(r.type)},
           {"id", EventIdToString(r.id)},
           {"recorded_at_ns", r.recorded_at_ns},
           {"prev_location", LocationJson(r.prev_location)},
           {"metadata_bytes", r.metadata.size()},
           {"payload_bytes", r.payload.size()},
           {"payload_preview", Preview(r.payload)}};
    Print((events_in_batch_++ > 0 ? "," : "") + DumpJson(e));
  }
  void End(uint64_t events, const Status& problem) override {
    CloseBatch();
    Json tail{{"events_shown", events},
              {"problem", problem.ok() ? Json(nullptr) : Json(problem.message())}};
    // `tail` dumps as {...}: its members continue the open document.
    Print("]," + DumpJson(tail).substr(1) + "\n");
  }

 private:
  // An object's JSON without its closing brace, so members can follow.
  static std::string Open(const Json& object) {
    std::string s = DumpJson(object);
    ANNAL_ASSERT(s.size() >= 2 && s.back() == '}');
    s.pop_back();
    return s;
  }
  void CloseBatch() {
    if (in_batch_) Print("]}");
    in_batch_ = false;
  }
  uint64_t batches_ = 0, events_in_batch_ = 0;
  bool in_batch_ = false;
};

// Shows the records of the batch in `batch` (at `batch_offset`) while
// `*shown` < `limit`. The first record that fails its checks ends the walk:
// kCorruption naming its offset.
Status DumpRecords(const SegmentFile& seg, uint64_t batch_offset, const std::vector<uint8_t>& batch,
                   const format::BatchHeader& h, uint64_t limit, DumpOutput* out, uint64_t* shown) {
  ANNAL_ASSERT(batch.size() == h.length);
  size_t at = format::kBatchHeaderBytes;
  const size_t end = h.length - format::kBatchTrailerBytes;
  for (uint32_t i = 0; i < h.count; ++i) {
    if (*shown >= limit) return Status::Ok();
    format::RecordView r;
    Status s = format::DecodeRecord(batch.data() + at, end - at, &r);
    if (!s.ok()) return CorruptionAt(seg, batch_offset + at, s.message());
    if (r.position != h.first_position + i)
      return CorruptionAt(seg, batch_offset + at, "record position out of sequence");
    out->Event(r, batch_offset + at);
    ++*shown;
    at += r.length;
  }
  if (at != end) return CorruptionAt(seg, batch_offset + at, "batch has bytes after its records");
  return Status::Ok();
}

std::string Why(const BatchCheck& c) {
  return c.kind == BatchCheck::kTorn ? "torn batch: " + c.why : c.why;
}

// Shows batches from `offset` until the end of the data or `limit` events.
// Of a damaged batch it shows what can be read (its header when that holds,
// the records before the damaged one) and returns the damage.
Status DumpBatches(const SegmentPlace& at, const SegmentFile& seg, uint64_t offset, uint64_t limit,
                   DumpOutput* out, uint64_t* shown) {
  std::vector<uint8_t> buf;
  // Each step passes a whole batch (>= 56 bytes), so the walk ends.
  while (*shown < limit) {
    format::BatchHeader h;
    ANNAL_ASSIGN_OR_RETURN(BatchCheck c, CheckBatchAt(seg, offset, &buf, &h));
    if (c.kind == BatchCheck::kEnd) return Status::Ok();
    if (c.kind == BatchCheck::kTorn && !seg.sealed && JudgeTornBatch(at, seg, inspect::TornBatch{offset, c, h}).ok()) {
      // The log's end, never acknowledged: its header when that holds, no events.
      if (c.header_valid) out->Batch(offset, h, false);
      return Status::Ok();
    }
    if (!c.header_valid) return CorruptionAt(seg, offset, Why(c));
    out->Batch(offset, h, c.kind == BatchCheck::kValid);
    // CheckBatchAt reads a batch's bytes when they lie inside the file.
    if (offset + h.length > seg.size_bytes) return CorruptionAt(seg, offset, Why(c));
    Status s = DumpRecords(seg, offset, buf, h, limit, out, shown);
    if (c.kind != BatchCheck::kValid) {
      if (s.ok()) return CorruptionAt(seg, offset, Why(c));
      return Status::Corruption(s.message() + " (in the batch at offset " + std::to_string(offset) +
                                ": " + Why(c) + ")");
    }
    ANNAL_RETURN_IF_ERROR(s);
    offset += h.length;
  }
  return Status::Ok();
}

}  // namespace

int SegmentDump(const std::string& file, uint64_t from_offset, uint64_t limit, bool json) {
  inspect::SegmentLocation loc;
  format::Manifest m;
  if (int status = LoadSegmentPath(file, &loc, &m); status != kOk) return status;
  BlockCache cache(kBlockCacheBytes);
  auto seg = inspect::OpenSegmentReadOnly(loc.data_dir, m, loc.partition, loc.segment_id, &cache);
  if (!seg.ok()) return Report(seg.status());
  Result<uint64_t> start =
      inspect::FirstBatchAtOrAfter(**seg, std::max(from_offset, kSegmentHeaderBytes));
  if (!start.ok()) return Report(start.status());
  TextDump text;
  JsonDump json_out;
  DumpOutput* out = json ? static_cast<DumpOutput*>(&json_out) : &text;
  out->Begin(file, loc, **seg, *start);
  uint64_t shown = 0;
  const SegmentPlace at{loc.data_dir, m, loc.partition, &cache};
  Status s = DumpBatches(at, **seg, *start,
                         limit == 0 ? std::numeric_limits<uint64_t>::max() : limit, out, &shown);
  out->End(shown, s);
  return Finish(s.ok() ? kOk : Report(s));
}

// ---------------------------------------------------------------- segment stats

namespace {

// What `segment stats` counts, for one segment or a sum of them.
struct Counts {
  uint64_t segments = 0, events = 0, batches = 0, payload_bytes = 0;
  uint64_t raw_bytes = 0;     // log bytes: from the header's end to the data's end
  uint64_t stored_bytes = 0;  // sealed: the whole file; unsealed: the log bytes as written
  uint64_t file_bytes = 0;    // the files' sizes (an unsealed file is preallocated)
  std::unordered_set<uint64_t> streams;  // by format::StreamHash
  std::optional<int64_t> first_ns, last_ns;

  void Add(const Counts& o) {
    segments += o.segments;
    events += o.events;
    batches += o.batches;
    payload_bytes += o.payload_bytes;
    raw_bytes += o.raw_bytes;
    stored_bytes += o.stored_bytes;
    file_bytes += o.file_bytes;
    streams.insert(o.streams.begin(), o.streams.end());
    if (o.first_ns && (!first_ns || *o.first_ns < *first_ns)) first_ns = o.first_ns;
    if (o.last_ns && (!last_ns || *o.last_ns > *last_ns)) last_ns = o.last_ns;
  }
};

struct StatsRow {
  uint32_t partition = 0, segment = 0;
  bool sealed = false;
  Counts counts;
  Status problem;
};

// Counts every batch and event of `seg`, stopping at damage (returned) or
// at a torn batch that ends the log.
Status CountSegment(const SegmentPlace& at, const SegmentFile& seg, Counts* c) {
  std::vector<uint8_t> buf;
  uint64_t offset = kSegmentHeaderBytes;
  c->segments = 1;
  c->stored_bytes = seg.sealed ? seg.sealed->stored_bytes() : 0;
  Status problem;
  // Each step passes a whole batch (>= 56 bytes), so the walk ends.
  while (true) {
    format::BatchHeader h;
    Result<BatchCheck> check = CheckBatchAt(seg, offset, &buf, &h);
    if (!check.ok()) {
      problem = check.status();
      break;
    }
    if (check->kind == BatchCheck::kEnd) break;
    if (check->kind == BatchCheck::kTorn && !seg.sealed) {
      problem = JudgeTornBatch(at, seg, inspect::TornBatch{offset, *check, h});
      break;
    }
    if (check->kind != BatchCheck::kValid) {
      problem = CorruptionAt(seg, offset, Why(*check));
      break;
    }
    problem = ForEachRecord(seg, offset, buf.data(), h, [&](const format::RecordView& r, uint32_t) {
      ++c->events;
      c->payload_bytes += r.payload.size();
      c->streams.insert(format::StreamHash(r.stream));
      return Status::Ok();
    });
    if (!problem.ok()) break;
    ++c->batches;
    if (!c->first_ns) c->first_ns = h.recorded_at_ns;
    c->last_ns = h.recorded_at_ns;
    offset += h.length;
  }
  c->raw_bytes = offset - kSegmentHeaderBytes;
  if (!seg.sealed) c->stored_bytes = c->raw_bytes;
  return problem;
}

StatsRow StatSegment(const std::string& dir, const format::Manifest& m, uint32_t partition,
                     uint32_t id, BlockCache* cache) {
  StatsRow row;
  row.partition = partition;
  row.segment = id;
  const std::string path =
      fs::Join(inspect::PartitionDir(dir, partition), format::SegmentFileName(id));
  auto seg = inspect::OpenSegmentReadOnly(dir, m, partition, id, cache);
  if (!seg.ok()) {
    row.problem = seg.status();
    return row;
  }
  row.sealed = (*seg)->sealed != nullptr;
  row.problem = CountSegment(SegmentPlace{dir, m, partition, cache}, **seg, &row.counts);
  Result<uint64_t> bytes = inspect::FileBytes(path);
  if (bytes.ok()) row.counts.file_bytes = *bytes;
  return row;
}

void PutCounts(Json& j, const Counts& c) {
  j["events"] = c.events;
  j["streams"] = c.streams.size();
  j["batches"] = c.batches;
  j["raw_bytes"] = c.raw_bytes;
  j["stored_bytes"] = c.stored_bytes;
  j["file_bytes"] = c.file_bytes;
  j["ratio"] = RatioJson(c.stored_bytes, c.raw_bytes);
  j["payload_bytes"] = c.payload_bytes;
  PutTime(j, "first_recorded_at", c.first_ns);
  PutTime(j, "last_recorded_at", c.last_ns);
}

std::vector<std::string> CountCells(const Counts& c) {
  return {std::to_string(c.events),
          std::to_string(c.streams.size()),
          std::to_string(c.batches),
          std::to_string(c.raw_bytes),
          std::to_string(c.stored_bytes),
          RatioText(c.stored_bytes, c.raw_bytes),
          std::to_string(c.payload_bytes),
          TimeText(c.first_ns),
          TimeText(c.last_ns)};
}

int PrintStats(const std::vector<StatsRow>& rows, bool json) {
  int status = kOk;
  Counts total;
  for (const StatsRow& r : rows) {
    if (!r.problem.ok()) status = Worse(status, Report(r.problem));
    total.Add(r.counts);
  }
  if (json) {
    Json segments = Json::array();
    for (const StatsRow& r : rows) {
      Json j{{"partition", r.partition}, {"segment", r.segment}, {"sealed", r.sealed}};
      PutCounts(j, r.counts);
      j["problem"] = r.problem.ok() ? Json(nullptr) : Json(r.problem.message());
      segments.push_back(std::move(j));
    }
    Json t{{"segments", total.segments}};
    PutCounts(t, total);
    Print(DumpJson(Json{{"segments", std::move(segments)}, {"total", std::move(t)}}) + "\n");
    return Finish(status);
  }
  Table t({"partition", "segment", "kind", "events", "streams", "batches", "raw bytes",
           "stored bytes", "ratio", "payload bytes", "first recorded at", "last recorded at"});
  for (const StatsRow& r : rows) {
    std::vector<std::string> cells{std::to_string(r.partition), std::to_string(r.segment),
                                   r.sealed ? "sealed" : "unsealed"};
    for (std::string& c : CountCells(r.counts)) cells.push_back(std::move(c));
    t.Add(std::move(cells));
  }
  std::vector<std::string> cells{"total", std::to_string(total.segments), ""};
  for (std::string& c : CountCells(total)) cells.push_back(std::move(c));
  t.Add(std::move(cells));
  Print(t.Take());
  return Finish(status);
}

}  // namespace

int SegmentStats(const std::string& file_or_dir, bool json) {
  struct stat st;
  const bool is_dir = ::stat(file_or_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  BlockCache cache(kBlockCacheBytes);
  std::vector<StatsRow> rows;
  format::Manifest m;
  if (!is_dir) {
    inspect::SegmentLocation loc;
    if (int status = LoadSegmentPath(file_or_dir, &loc, &m); status != kOk) return status;
    rows.push_back(StatSegment(loc.data_dir, m, loc.partition, loc.segment_id, &cache));
    return PrintStats(rows, json);
  }
  if (int status = LoadDataDir(file_or_dir, &m); status != kOk) return status;
  for (uint32_t p = 0; p < m.partitions; ++p) {
    Result<std::vector<uint32_t>> ids =
        inspect::ListSegmentIds(inspect::PartitionDir(file_or_dir, p));
    if (!ids.ok()) return Report(ids.status());
    for (uint32_t id : *ids) rows.push_back(StatSegment(file_or_dir, m, p, id, &cache));
  }
  return PrintStats(rows, json);
}

// ---------------------------------------------------------------- index dump

namespace {

constexpr const char* kNoIndexFile = "index in memory/checkpoint only";


// Why segment `id` has no index file, for people.
std::string NoIndexFileNote(const SegmentSummary* summary, bool empty) {
  if (empty) return "empty segment";
  if (summary == nullptr || summary->index.empty())
    return std::string(kNoIndexFile) + " (none in the checkpoint)";
  return std::string(kNoIndexFile) + " (checkpoint holds " + std::to_string(summary->index.size()) +
         " bytes)";
}

// The checkpoint's summary of segment `id`, or nullptr.
const SegmentSummary* SummaryOf(const Result<std::optional<inspect::Checkpoint>>& c, uint32_t id) {
  if (!c.ok() || !c->has_value()) return nullptr;
  for (const SegmentSummary& s : (*c)->segments)
    if (s.id == id) return &s;
  return nullptr;
}

// One partition's index files: counts per segment.
int DumpPartitionIndexes(const std::string& dir, const format::Manifest& m, uint32_t p,
                         BlockCache* cache, Json* out_json, std::string* out_text) {
  const std::string pdir = inspect::PartitionDir(dir, p);
  Result<std::vector<uint32_t>> listed = inspect::ListSegmentIds(pdir);
  if (!listed.ok()) return Report(listed.status());
  const std::vector<uint32_t>& ids = *listed;
  int status = kOk;
  auto checkpoint = ReadCheckpointReporting(pdir, &status);
  Json segments = Json::array();
  Table t({"segment", "index file", "runs", "offsets", "samples", "note"}, "  ");
  for (uint32_t id : ids) {
    Json j{{"segment", id}};
    auto ix = SegmentIndex::Open(pdir, p, id, cache);
    if (!ix.ok() && ix.status().code() == StatusCode::kNotFound) {
      const SegmentSummary* s = SummaryOf(checkpoint, id);
      const bool empty = SegmentEmpty(dir, m, p, id, cache);
      j["index_file"] = false;
      j["empty"] = empty;
      j["note"] = empty ? "empty segment" : kNoIndexFile;
      j["checkpoint_index_bytes"] = s ? s->index.size() : 0;
      t.Add({std::to_string(id), "no", "-", "-", "-", NoIndexFileNote(s, empty)});
      segments.push_back(std::move(j));
      continue;
    }
    Result<std::vector<TimeSample>> samples =
        ix.ok() ? (*ix)->Samples() : Result<std::vector<TimeSample>>(ix.status());
    if (!samples.ok()) {
      status = Worse(status, Report(samples.status()));
      j["index_file"] = true;
      j["problem"] = samples.status().message();
      t.Add({std::to_string(id), "damaged", "-", "-", "-", samples.status().message()});
    } else {
      j["index_file"] = true;
      j["runs"] = (*ix)->run_count();
      j["offsets"] = (*ix)->offset_count();
      j["samples"] = samples->size();
      t.Add({std::to_string(id), "yes", std::to_string((*ix)->run_count()),
             std::to_string((*ix)->offset_count()), std::to_string(samples->size()), ""});
    }
    segments.push_back(std::move(j));
  }
  *out_json = Json{{"partition", p}, {"segments", std::move(segments)}};
  *out_text = "\npartition " + std::to_string(p) + " (" + format::PartitionDirName(p) + ")\n" +
              (ids.empty() ? "  (no segments)\n" : t.Take());
  return status;
}

// A stream's runs in one segment, from its index file or its checkpoint.
struct RunSet {
  uint32_t segment = 0;
  std::string source;  // "index file", "checkpoint"
  std::vector<Run> runs;
};

// The runs with `hash` in segment `id`: from its index file, else from the
// checkpoint's copy of its index. False (and nothing added) when neither
// has it.
Result<bool> FindRuns(const std::string& pdir, uint32_t p, uint32_t id, uint64_t hash,
                      const Result<std::optional<inspect::Checkpoint>>& checkpoint,
                      BlockCache* cache, RunSet* out) {
  out->segment = id;
  auto ix = SegmentIndex::Open(pdir, p, id, cache);
  if (ix.ok()) {
    out->source = "index file";
    ANNAL_RETURN_IF_ERROR((*ix)->Find(hash, &out->runs));
    return true;
  }
  if (ix.status().code() != StatusCode::kNotFound) return ix.status();
  const SegmentSummary* s = SummaryOf(checkpoint, id);
  if (s == nullptr || s->index.empty()) return false;
  ANNAL_ASSIGN_OR_RETURN(auto builder, SegmentIndexBuilder::Decode(s->index, (*checkpoint)->path));
  out->source = "checkpoint";
  builder->Find(hash, &out->runs);
  return true;
}

// Drops the runs of other streams whose names hash like `stream`'s.
Status KeepStream(const SegmentFile& seg, const std::string& stream, std::vector<Run>* runs) {
  std::vector<Run> kept;
  for (Run& r : *runs) {
    ANNAL_ASSERT(!r.offsets.empty());
    ANNAL_ASSIGN_OR_RETURN(std::string name, inspect::StreamAt(seg, r.offsets.front()));
    if (name == stream) kept.push_back(std::move(r));
  }
  *runs = std::move(kept);
  return Status::Ok();
}

// The runs of `stream` in segment `id`, checked to be its own; nullopt
// when the segment's index is not in a file or the checkpoint (only in the
// memory of the process that writes it).
Result<std::optional<RunSet>> StreamRunsIn(
    const std::string& dir, const format::Manifest& m, uint32_t p, uint32_t id,
    const std::string& stream, const Result<std::optional<inspect::Checkpoint>>& checkpoint,
    BlockCache* cache) {
  RunSet set;
  ANNAL_ASSIGN_OR_RETURN(bool found, FindRuns(inspect::PartitionDir(dir, p), p, id,
                                              format::StreamHash(stream), checkpoint, cache, &set));
  if (!found) return std::optional<RunSet>();
  if (!set.runs.empty()) {
    ANNAL_ASSIGN_OR_RETURN(auto seg, inspect::OpenSegmentReadOnly(dir, m, p, id, cache));
    ANNAL_RETURN_IF_ERROR(KeepStream(*seg, stream, &set.runs));
  }
  return std::optional<RunSet>(std::move(set));
}

std::string FirstOffsetsText(const Run& r) {
  std::string out;
  // Appended piece by piece: GCC 12 at -O3 took `(i ? " " : "") + ...`
  // for an overlapping copy (-Wrestrict) and failed the build.
  for (size_t i = 0; i < r.offsets.size() && i < kFirstOffsetsShown; ++i) {
    if (i) out += ' ';
    out += std::to_string(r.offsets[i]);
  }
  if (r.offsets.size() > kFirstOffsetsShown) out += " ...";
  return out;
}

Json FirstOffsetsJson(const Run& r) {
  Json a = Json::array();
  for (size_t i = 0; i < r.offsets.size() && i < kFirstOffsetsShown; ++i) a.push_back(r.offsets[i]);
  return a;
}

int DumpStreamRuns(const std::string& dir, const format::Manifest& m, const std::string& stream,
                   BlockCache* cache, bool json) {
  const uint32_t p = format::PartitionForStream(stream, m.partitions);
  const uint64_t hash = format::StreamHash(stream);
  const std::string pdir = inspect::PartitionDir(dir, p);
  Result<std::vector<uint32_t>> listed = inspect::ListSegmentIds(pdir);
  if (!listed.ok()) return Report(listed.status());
  const std::vector<uint32_t>& ids = *listed;
  int status = kOk;
  auto checkpoint = ReadCheckpointReporting(pdir, &status);
  Json runs = Json::array(), unindexed = Json::array();
  Table t({"segment", "source", "first version", "count", "prev location", "first offsets"});
  uint64_t events = 0, run_count = 0;
  for (uint32_t id : ids) {
    Result<std::optional<RunSet>> found = StreamRunsIn(dir, m, p, id, stream, checkpoint, cache);
    if (!found.ok()) {
      status = Worse(status, Report(found.status()));
      continue;
    }
    if (!found->has_value()) {
      if (!SegmentEmpty(dir, m, p, id, cache)) unindexed.push_back(id);
      continue;
    }
    const RunSet& set = **found;
    for (const Run& r : set.runs) {
      events += r.offsets.size();
      ++run_count;
      runs.push_back(Json{{"segment", id},
                          {"source", set.source},
                          {"first_version", r.first_version},
                          {"count", r.offsets.size()},
                          {"prev_location", LocationJson(r.prev_location)},
                          {"first_offsets", FirstOffsetsJson(r)}});
      t.Add({std::to_string(id), set.source, std::to_string(r.first_version),
             std::to_string(r.offsets.size()), LocationText(r.prev_location), FirstOffsetsText(r)});
    }
  }
  if (json) {
    Print(DumpJson(Json{{"stream", stream},
                        {"partition", p},
                        {"hash", Hex(hash)},
                        {"runs", std::move(runs)},
                        {"events", events},
                        {"unindexed_segments", std::move(unindexed)}}) +
          "\n");
    return Finish(status);
  }
  Print("stream " + stream + ": partition " + std::to_string(p) + ", hash " + Hex(hash) + "\n");
  Print(run_count == 0 ? "(no runs)\n" : t.Take());
  for (const auto& id : unindexed)
    Print("segment " + id.dump() + ": " + kNoIndexFile + "; its events are not listed\n");
  Print(Plural(events, "event", "events") + " in " + Plural(run_count, "run", "runs") + "\n");
  return Finish(status);
}

}  // namespace

int IndexDump(const std::string& dir, const std::string& stream, bool json) {
  format::Manifest m;
  if (int status = LoadDataDir(dir, &m); status != kOk) return status;
  BlockCache cache(kBlockCacheBytes);
  if (!stream.empty()) return DumpStreamRuns(dir, m, stream, &cache, json);
  return EachPartition(m, json, [&](uint32_t p, Json* j, std::string* text) {
    return DumpPartitionIndexes(dir, m, p, &cache, j, text);
  });
}

// ---------------------------------------------------------------- checkpoint dump

namespace {

std::optional<int64_t> TimeIf(bool known, int64_t ns) {
  return known ? std::optional<int64_t>(ns) : std::nullopt;
}
std::optional<uint64_t> PositionIf(uint64_t position) {
  return position ? std::optional<uint64_t>(position) : std::nullopt;  // 0: no batch yet
}

Json SummaryJson(const SegmentSummary& s) {
  Json j{{"id", s.id},
         {"end_offset", s.end_offset},
         {"first_position", OrNull(PositionIf(s.first_position))},
         {"last_position", OrNull(PositionIf(s.last_position))}};
  PutTime(j, "first_recorded_at", TimeIf(s.first_position != 0, s.first_recorded_at_ns));
  PutTime(j, "last_recorded_at", TimeIf(s.first_position != 0, s.last_recorded_at_ns));
  j["samples"] = s.samples.size();
  j["has_index"] = !s.index.empty();
  j["index_bytes"] = s.index.size();
  return j;
}

Json CheckpointJson(const inspect::Checkpoint& c) {
  const CheckpointHeader& h = c.header;
  Json j{{"file", c.path},
         {"file_bytes", c.file_bytes},
         {"tail_segment", h.tail_segment},
         {"tail_offset", h.tail_offset},
         {"last_position", h.last_position}};
  PutTime(j, "last_recorded_at", TimeIf(h.last_position != 0, h.last_recorded_at_ns));
  Json segments = Json::array();
  for (const SegmentSummary& s : c.segments) segments.push_back(SummaryJson(s));
  j["segments"] = std::move(segments);
  j["stream_count"] = c.streams.size();
  if (c.streams.size() >= kMaxJsonStreams) return j;
  Json streams = Json::array();
  c.streams.ForEach([&](const StreamSlot& s) {
    streams.push_back(Json{{"hash", Hex(s.hash)},
                           {"head_version", s.head_version},
                           {"head_location", LocationJson(s.head_location)},
                           {"first_location", LocationJson(s.first_location)}});
  });
  j["streams"] = std::move(streams);
  return j;
}

std::string CheckpointText(const inspect::Checkpoint& c) {
  const CheckpointHeader& h = c.header;
  Table info({"file", c.path + " (" + std::to_string(c.file_bytes) + " bytes)"}, "  ");
  info.Add({"tail", "segment " + std::to_string(h.tail_segment) + ", offset " +
                        std::to_string(h.tail_offset)});
  info.Add({"last position", std::to_string(h.last_position)});
  info.Add({"last recorded at", TimeText(TimeIf(h.last_position != 0, h.last_recorded_at_ns))});
  info.Add({"streams", std::to_string(c.streams.size())});
  Table t({"segment", "end offset", "first position", "last position", "first recorded at",
           "last recorded at", "samples", "checkpoint index"},
          "  ");
  for (const SegmentSummary& s : c.segments) {
    const bool any = s.first_position != 0;
    t.Add({std::to_string(s.id), std::to_string(s.end_offset), OrDash(PositionIf(s.first_position)),
           OrDash(PositionIf(s.last_position)), TimeText(TimeIf(any, s.first_recorded_at_ns)),
           TimeText(TimeIf(any, s.last_recorded_at_ns)), std::to_string(s.samples.size()),
           s.index.empty() ? "-" : std::to_string(s.index.size()) + " bytes"});
  }
  return info.Take() + (c.segments.empty() ? "  (no segments)\n" : t.Take());
}

}  // namespace

int CheckpointDump(const std::string& dir, bool json) {
  format::Manifest m;
  if (int status = LoadDataDir(dir, &m); status != kOk) return status;
  return EachPartition(m, json, [&](uint32_t p, Json* j, std::string* text) {
    int status = kOk;
    auto c = inspect::ReadCheckpoint(inspect::PartitionDir(dir, p));
    *j = Json{{"partition", p}};
    *text = "\npartition " + std::to_string(p) + " (" + format::PartitionDirName(p) + ")\n";
    if (!c.ok()) {
      status = Report(c.status());
      (*j)["checkpoint"] = nullptr;
      (*j)["problem"] = c.status().message();
      *text += "  checkpoint unusable: " + c.status().message() + "\n";
    } else if (!c->has_value()) {
      (*j)["checkpoint"] = nullptr;
      *text += "  no checkpoint\n";
    } else {
      (*j)["checkpoint"] = CheckpointJson(**c);
      *text += CheckpointText(**c);
    }
    return status;
  });
}

}  // namespace annal::cli::storage
