// `annal verify` and `annal repair` (storage_commands.h).
//
// Both read a partition's log as recovery does (Partition::Recover,
// ScanFrom and ApplyRecord in engine/src/partition.cc; docs/format.md,
// section 7): every batch is classified by CheckBatchAt and its records
// checked by ForEachRecord, every event must continue its stream, and a torn
// batch ends the log only when nothing follows it. Where recovery stops at
// the first corruption, these go on with the next batch whose start is
// known, so one run reports every problem.
//
// verify only reads and is safe next to a live annald: it never takes LOCK,
// and it opens each file once and reads it through that descriptor, so a
// segment that sealing replaces meanwhile is read as one version. A torn
// final batch is a warning, not a problem: annald may be writing it.
//
// repair takes LOCK for its whole run, so annald cannot start meanwhile, and
// changes only what recovery would change at open, keeping a copy of every
// byte it overwrites: the unacknowledged bytes after the end of a
// partition's log, a cut segment's missing zero-fill, and an index
// checkpoint that fails its checksum or disagrees with the log (derived
// data). A partition whose log has any other damage is left as it is.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "annal/assert.h"
#include "block_cache.h"
#include "checkpoint.h"
#include "cli_output.h"
#include "format.h"
#include "fs.h"
#include "inspect.h"
#include "sealed.h"
#include "segment.h"
#include "segment_index.h"
#include "storage_commands.h"

namespace annal::cli::storage {
namespace {

using format::kNoLocation;
using format::kSegmentHeaderBytes;

// Blocks of sealed segments are read once each; the cache only has to hold
// a block map and the block being read.
constexpr size_t kCacheBytes = 16 * 1024 * 1024;
// Zero-fill is read, copied and compared this much at a time.
constexpr size_t kChunkBytes = 1024 * 1024;
// A batch that looks torn or corrupt in one of a partition's two newest
// segments may be one a live annald is writing: it is read again after a
// pause, this many times per partition at most.
constexpr int kMaxRechecks = 8;
constexpr auto kRecheckPause = std::chrono::milliseconds(50);
// Backups never overwrite an earlier one; a name is tried this many times.
constexpr int kMaxBackupNames = 100;
using format::kCheckpointChecksumBytes;
using format::kCheckpointHeaderBytes;
using format::kCheckpointIndexLengthBytes;
using format::kCheckpointSampleBytes;
using format::kCheckpointSegmentFixedBytes;
using format::kCheckpointStreamBytes;
static_assert(kCheckpointStreamBytes == sizeof(StreamSlot), "a checkpoint stores every field of a stream slot");
constexpr std::string_view kBackupDirName = "repair-backup";

std::string Location(uint64_t location) {
  if (location == kNoLocation) return "none";
  return "segment " + std::to_string(format::LocationSegment(location)) + " offset " +
         std::to_string(format::LocationOffset(location));
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// ------------------------------------------------------------- findings

struct Finding {
  std::string file;
  uint64_t offset = 0;
  std::string what;
};

// Splits an engine message, "FILE at offset N: why" (CorruptionAt) or
// "FILE: why", into a finding; `file` and `offset` stand in for what it
// does not say.
Finding Locate(const std::string& message, const std::string& file, uint64_t offset) {
  constexpr std::string_view kAt = " at offset ";
  size_t at = message.find(kAt);
  if (at != std::string::npos) {
    size_t digits = at + kAt.size(), end = digits;
    while (end < message.size() && end - digits < 19 && message[end] >= '0' && message[end] <= '9')
      ++end;
    if (end > digits && message.compare(end, 2, ": ") == 0)
      return {message.substr(0, at), std::stoull(message.substr(digits, end - digits)),
              message.substr(end + 2)};
  }
  if (message.starts_with(file + ": ")) return {file, offset, message.substr(file.size() + 2)};
  return {file, offset, message};
}

// The same status, its message naming `path` where it named `alias`.
Status Rename(const Status& s, const std::string& alias, const std::string& path) {
  if (s.ok() || alias.empty() || !s.message().starts_with(alias)) return s;
  std::string m = path + s.message().substr(alias.size());
  return s.code() == StatusCode::kCorruption ? Status::Corruption(m) : Status::IoError(m);
}

// Everything one run found. Problems (the store is damaged) and warnings
// (worth knowing, not damage) are printed to stderr as they are found, one
// line each; notes (information) go into the summary.
class Findings {
 public:
  explicit Findings(bool print_warnings) : print_warnings_(print_warnings) {}

  void Problem(const std::string& file, uint64_t offset, const std::string& what) {
    std::fprintf(stderr, "%s at offset %llu: %s\n", file.c_str(),
                 static_cast<unsigned long long>(offset), what.c_str());
    problems_.push_back({file, offset, what});
  }
  void Warning(const std::string& file, uint64_t offset, const std::string& what) {
    if (print_warnings_)
      std::fprintf(stderr, "%s at offset %llu: warning: %s\n", file.c_str(),
                   static_cast<unsigned long long>(offset), what.c_str());
    warnings_.push_back({file, offset, what});
  }
  void Note(const std::string& what) { notes_.push_back(what); }
  // A file that could not be read (not damage it holds).
  void Unreadable(const Status& s, const std::string& file) {
    std::string what =
        s.message().find(file) != std::string::npos ? s.message() : file + ": " + s.message();
    std::fprintf(stderr, "%s\n", what.c_str());
    io_errors_.push_back(what);
  }

  const std::vector<Finding>& problems() const { return problems_; }
  const std::vector<Finding>& warnings() const { return warnings_; }
  const std::vector<std::string>& notes() const { return notes_; }
  const std::vector<std::string>& io_errors() const { return io_errors_; }

 private:
  bool print_warnings_;
  std::vector<Finding> problems_, warnings_;
  std::vector<std::string> notes_, io_errors_;
};

Json FindingsToJson(const std::vector<Finding>& list, const char* key) {
  Json out = Json::array();
  for (const Finding& f : list)
    out.push_back({{"file", f.file}, {"offset", f.offset}, {key, f.what}});
  return out;
}

// ------------------------------------------------------------- the data directory

enum class DirState { kOk, kNotADataDir, kUnreadable, kDamaged };

// Reads and checks DIR/MANIFEST.
DirState ReadManifest(const std::string& dir, Findings* findings, format::Manifest* m) {
  const std::string path = fs::Join(dir, format::ManifestName());
  if (!fs::Exists(path)) return DirState::kNotADataDir;
  auto data = fs::ReadWholeFile(path);
  if (!data.ok()) {
    findings->Unreadable(data.status(), path);
    return DirState::kUnreadable;
  }
  if (data->size() != format::kManifestBytes) {
    findings->Problem(path, 0,
                      "the manifest is " + std::to_string(data->size()) + " bytes, not " +
                          std::to_string(format::kManifestBytes));
    return DirState::kDamaged;
  }
  Status s = format::DecodeManifest(reinterpret_cast<const uint8_t*>(data->data()), path, m);
  if (!s.ok()) {
    Finding f = Locate(s.message(), path, 0);
    findings->Problem(f.file, f.offset, f.what);
    return DirState::kDamaged;
  }
  return DirState::kOk;
}

// Opens a segment for reading only, once. A sealed file is handed to
// SealedSegment as /proc/self/fd/N: that reopens the very file this opened,
// not whatever the name points to by then (`alias` is that name, which its
// messages use). On failure `never_written` says whether the file is a
// segment whose creation was cut short (SegmentNeverWritten's rule).
Result<std::shared_ptr<SegmentFile>> OpenReadOnly(const std::string& path, uint32_t id,
                                                  const format::SegmentHeader& expected,
                                                  BlockCache* cache, std::string* alias,
                                                  bool* never_written) {
  *never_written = false;
  ANNAL_ASSIGN_OR_RETURN(fs::Fd fd, fs::OpenShared(path, O_RDONLY));
  ANNAL_ASSIGN_OR_RETURN(uint64_t size, fs::FileSize(fd.get(), path));
  uint8_t head[kSegmentHeaderBytes + format::kBatchHeaderBytes] = {};
  ANNAL_RETURN_IF_ERROR(
      fs::PreadExact(fd.get(), head, std::min<uint64_t>(size, sizeof head), 0, path));
  *never_written = size < kSegmentHeaderBytes ||
                   (format::Get64(head + format::kSegmentHeaderChecksumOffset) == 0 &&
                    std::all_of(head + kSegmentHeaderBytes, head + sizeof head,
                                [](uint8_t b) { return b == 0; }));
  if (size < kSegmentHeaderBytes)
    return Status::Corruption(path + ": shorter than a segment header");
  format::SegmentHeader want = expected;
  want.segment_id = id;
  if (std::memcmp(head, format::kSealedMagic, sizeof format::kSealedMagic) == 0) {
    *alias = "/proc/self/fd/" + std::to_string(fd.get());
    auto sealed = SealedSegment::Open(*alias, want, cache);
    if (!sealed.ok()) return Rename(sealed.status(), *alias, path);
    auto seg = SealedSegmentFile(id, std::move(*sealed));
    seg->path = path;
    return seg;
  }
  format::SegmentHeader h;
  ANNAL_RETURN_IF_ERROR(format::DecodeSegmentHeader(head, path, &h));
  if (h.segment_id != id || h.partition != want.partition || h.partitions != want.partitions)
    return Status::Corruption(path + ": header names partition " + std::to_string(h.partition) +
                              " segment " + std::to_string(h.segment_id) + " of a store of " +
                              std::to_string(h.partitions) +
                              " partitions, not where the file lies");
  if (h.segment_bytes != want.segment_bytes || size > want.segment_bytes)
    return Status::Corruption(path + ": segment size differs from the store's manifest");
  auto seg = std::make_shared<SegmentFile>();
  seg->id = id;
  seg->path = path;
  seg->fd = std::move(fd);
  seg->size_bytes = size;
  seg->capacity_bytes = want.segment_bytes;
  // One pass from start to end: let the kernel read ahead.
  (void)::posix_fadvise(seg->fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  return seg;
}

// The offset just after the last non-zero byte of `seg` in [from, its
// size), or `from` when they are all zero.
Result<uint64_t> EndOfNonZero(const SegmentFile& seg, uint64_t from) {
  std::vector<uint8_t> buf(kChunkBytes);
  uint64_t end = from;
  for (uint64_t at = from; at < seg.size_bytes;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), seg.size_bytes - at));
    ANNAL_RETURN_IF_ERROR(seg.Read(at, n, buf.data()));
    for (size_t i = n; i > 0; --i)
      if (buf[i - 1] != 0) {
        end = at + i;
        break;
      }
    at += n;
  }
  return end;
}

// An index checkpoint as read from its file, with where its parts lie.
struct Checkpoint {
  std::string path;
  std::string bytes;
  CheckpointHeader header;
  std::vector<SegmentSummary> segments;
  std::vector<uint64_t> segment_at;  // file offset of each segment entry
  uint64_t streams_at = 0;           // file offset of the first stream entry
  uint64_t stream_count = 0;

  StreamSlot SlotAt(uint64_t i) const {
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data()) + SlotOffset(i);
    return StreamSlot{format::Get64(p),      format::Get64(p + 8),  format::Get64(p + 16),
                      format::Get64(p + 24), format::Get32(p + 32), format::Get32(p + 36)};
  }
  uint64_t SlotOffset(uint64_t i) const { return streams_at + i * kCheckpointStreamBytes; }
  // Offsets of a segment entry's samples and index bytes.
  uint64_t SamplesAt(size_t k) const { return segment_at[k] + kCheckpointSegmentFixedBytes; }
  uint64_t IndexAt(size_t k) const {
    return SamplesAt(k) + segments[k].samples.size() * kCheckpointSampleBytes + kCheckpointIndexLengthBytes;
  }
};

// ------------------------------------------------------------- one partition

// A stream, known by independent hashes of its name rather than the name:
// equal keys for different names are out of reach (2^-160), and the table
// stays small for stores of millions of streams.
struct StreamKey {
  uint64_t hash = 0;        // format::StreamHash, as the stream table keeps it
  uint64_t check = 0;       // format::Checksum of the name
  uint32_t name_check = 0;  // format::StreamNameCheck, as the stream table keeps it
  bool operator==(const StreamKey&) const = default;
};
struct StreamKeyHash {
  size_t operator()(const StreamKey& k) const {
    return static_cast<size_t>(k.hash ^ (k.check * 31));
  }
};
struct StreamState {
  uint64_t version = 0;
  uint64_t location = kNoLocation;
  uint64_t first_location = kNoLocation;
  uint32_t head_id_check = 0;  // format::EventIdCheck of the head event's id
};

// Positions first..last, held by consecutive batches of one partition that
// start at `location`. While partitions interleave, that is about one run
// per batch: the check of positions across partitions costs 32 bytes per
// batch of the store.
struct PositionRun {
  uint64_t first = 0, last = 0;
  uint32_t partition = 0;
  uint64_t location = 0;
};

// One segment file of the partition, and what the scan found in it.
struct Segment {
  uint32_t id = 0;
  std::string path;
  std::string alias;                  // the name a sealed file was opened by
  std::shared_ptr<SegmentFile> file;  // null when it could not be opened
  bool never_written = false;         // the newest, its creation cut short
  bool has_index_file = false;
  SegmentSummary summary;  // of its valid batches
  std::unique_ptr<SegmentIndexBuilder> builder;
  bool complete = true;   // every batch in it was read
  bool indexable = true;  // every event continued its stream, so `builder` holds the index
  bool has_data = false;
  // Sealed: the block map, and the scan's place in it (the block holding
  // the last batch start seen, and whether a batch started in it yet).
  std::shared_ptr<const std::vector<BlockEntry>> blocks;
  size_t block_at = 0;
  bool block_has_batch = false;
};

struct ScanConfig {
  std::string dir;  // the partition's directory
  uint32_t partition = 0;
  uint32_t partitions = 0;
  uint64_t segment_bytes = 0;
  bool check_indexes = true;  // compare segment index files (verify)
  bool report_checkpoint =
      true;                 // checkpoint disagreement is a problem (verify), or only noted (repair)
  bool may_be_live = true;  // annald may be writing (verify); repair holds LOCK
};

// Reads one partition's files and checks them. Log damage and derived-data
// problems are counted apart: repair refuses the first and fixes some of
// the second.
class PartitionScan {
 public:
  PartitionScan(ScanConfig config, BlockCache* cache, Findings* findings)
      : config_(std::move(config)), cache_(cache), findings_(findings) {}

  void Run() {
    ReadCheckpoint();
    if (!OpenSegments()) return;
    CheckCheckpointShape();
    for (size_t i = 0; i < segments_.size(); ++i) {
      Segment& s = segments_[i];
      if (!s.file) continue;
      bool go_on = ScanSegment(i);
      FinishSegment(i);
      if (!go_on) break;
    }
    CheckTail();
    if (ckpt_ && compare_ckpt_ && !tail_seen_) CheckpointTailNotReached();
    // Full segments are indexed in the background once a later one has data.
    for (size_t i = 0; config_.check_indexes && i < end_slot_; ++i)
      if (segments_[i].has_data && !segments_[i].has_index_file)
        findings_->Note(fs::Join(config_.dir, format::SegmentIndexFileName(segments_[i].id)) +
                        ": no index file yet (annald builds it in the background)");
    if (unchecked_ > 0)
      findings_->Note(config_.dir + ": " + std::to_string(unchecked_) +
                      " events after damaged data were not checked against their stream's head");
  }

  // Repair's view of the end of the log.
  struct TailRegion {
    size_t slot;
    uint64_t from, to;  // bytes that are not part of the log and not zero
    bool torn;          // from holds a torn final batch
  };
  const std::vector<TailRegion>& tail_regions() const { return tail_regions_; }
  std::vector<const Segment*> CutSegments() const {
    std::vector<const Segment*> out;
    for (size_t i = end_slot_; i < segments_.size(); ++i)
      if (segments_[i].file && !segments_[i].file->sealed &&
          segments_[i].file->size_bytes < config_.segment_bytes)
        out.push_back(&segments_[i]);
    return out;
  }
  const std::vector<Segment>& segments() const { return segments_; }
  // Why the checkpoint must go (repair), or "" when it may stay.
  const std::string& checkpoint_trouble() const { return checkpoint_trouble_; }
  const std::string& checkpoint_path() const { return checkpoint_path_; }

  uint64_t log_problems() const { return log_problems_; }
  uint64_t io_errors() const { return io_errors_; }
  bool damaged() const { return damaged_; }  // some batch could not be read
  uint64_t events() const { return events_; }
  uint64_t batches() const { return batches_; }
  uint64_t streams() const { return streams_.size(); }
  size_t segment_count() const { return segments_.size(); }
  std::vector<PositionRun> TakeRuns() { return std::move(runs_); }

 private:
  // --- findings
  void LogProblem(const std::string& file, uint64_t offset, const std::string& what) {
    ++log_problems_;
    findings_->Problem(file, offset, what);
  }
  // A file or directory that could not be read at all.
  void Unreadable(const Status& s, const std::string& path) {
    ++io_errors_;
    findings_->Unreadable(s, path);
  }
  // A Status from reading a segment: damage in it, or a read that failed.
  void ReadFailed(const Status& s, const Segment& seg, uint64_t offset) {
    Status named = Rename(s, seg.alias, seg.path);
    if (named.code() != StatusCode::kCorruption) {
      Unreadable(named, seg.path);
      return;
    }
    Finding f = Locate(named.message(), seg.path, offset);
    LogProblem(f.file, f.offset, f.what);
  }
  // What annald does with a checkpoint that has a problem.
  enum class Fate { kIgnored, kTrusted };
  void CheckpointProblem(uint64_t offset, const std::string& what, Fate fate) {
    if (checkpoint_trouble_.empty()) checkpoint_trouble_ = what;
    if (config_.report_checkpoint)
      findings_->Problem(
          checkpoint_path_, offset,
          what +
              (fate == Fate::kIgnored ? " (annald ignores this checkpoint and replays the whole log"
                                      : " (annald would load this checkpoint as it is") +
              "; `annal repair` moves it aside)");
  }
  void IndexProblem(const std::string& file, uint64_t offset, const std::string& what) {
    findings_->Problem(file, offset,
                       what +
                           " (segment indexes are derived data: annald rebuilds one that fails its "
                           "checksums; remove it while annald is stopped to have it rebuilt)");
  }

  // --- opening
  void ReadCheckpoint();
  bool OpenSegments();
  void CheckCheckpointShape();

  // --- scanning
  bool ScanSegment(size_t i);
  bool LoadBlockMap(Segment& s);
  std::optional<uint64_t> NextBatchAfterDamage(const Segment& s, uint64_t offset);
  void CheckBlockEntries(Segment& s, uint64_t offset, const format::BatchHeader& h);
  void LeaveBlock(const Segment& s);
  void ReportCorrupt(const Segment& s, uint64_t offset, const BatchCheck& c,
                     const std::vector<uint8_t>& buf, const format::BatchHeader& h);
  bool LaterSegmentsEmpty(size_t i);
  bool TornIsFinal(size_t i, uint64_t offset, const BatchCheck& c, const format::BatchHeader& h,
                   uint64_t* torn_until);
  void ApplyBatch(Segment& s, uint64_t offset, const std::vector<uint8_t>& buf,
                  const format::BatchHeader& h);
  void ApplyRecord(Segment& s, const format::BatchHeader& h, const format::RecordView& r,
                   uint32_t offset);
  void AddPositions(uint64_t first, uint32_t count, uint64_t location);
  void MarkIncomplete(Segment& s) {
    s.complete = false;
    damaged_ = true;
  }

  // --- after a segment, after the partition
  void FinishSegment(size_t i);
  void CompareIndexFile(const Segment& s);
  void CheckTail();

  // --- the checkpoint against the log
  void AtOffset(size_t i, uint64_t offset);
  void CompareSegmentEntry(size_t k, const Segment& s);
  void CompareStreams();
  void CheckpointTailNotReached();

  ScanConfig config_;
  BlockCache* cache_;
  Findings* findings_;
  std::vector<Segment> segments_;
  std::unordered_map<StreamKey, StreamState, StreamKeyHash> streams_;
  std::vector<PositionRun> runs_;
  uint64_t last_position_ = 0;
  int64_t last_recorded_at_ns_ = 0;
  uint64_t events_ = 0, batches_ = 0, unchecked_ = 0;
  uint64_t log_problems_ = 0, io_errors_ = 0;
  // Set once a batch could not be read: streams cannot be followed past it.
  bool damaged_ = false;
  int rechecks_left_ = kMaxRechecks;

  // The end of the log: the slot of its last valid (or torn final) batch.
  size_t end_slot_ = 0;
  std::optional<uint64_t> torn_at_;
  uint64_t torn_until_ = 0;
  std::vector<TailRegion> tail_regions_;

  std::string checkpoint_path_;
  std::optional<Checkpoint> ckpt_;
  bool compare_ckpt_ = false;  // its shape fits the segments on disk
  bool tail_seen_ = false;
  std::string checkpoint_trouble_;
};

void PartitionScan::ReadCheckpoint() {
  checkpoint_path_ = fs::Join(config_.dir, format::CheckpointFileName());
  if (!fs::Exists(checkpoint_path_)) {
    findings_->Note(checkpoint_path_ +
                    ": no index checkpoint (annald replays the whole log at open)");
    return;
  }
  auto data = fs::ReadWholeFile(checkpoint_path_);
  if (!data.ok()) {
    Unreadable(data.status(), checkpoint_path_);
    return;
  }
  Checkpoint c;
  c.path = checkpoint_path_;
  c.bytes = std::move(*data);
  const auto* p = reinterpret_cast<const uint8_t*>(c.bytes.data());
  if (c.bytes.size() >= kCheckpointHeaderBytes + kCheckpointChecksumBytes &&
      std::memcmp(p, format::kCheckpointMagic, 8) == 0 &&
      format::Get64(p + c.bytes.size() - 8) == format::Checksum(p, c.bytes.size() - 8) &&
      format::Get32(p + 8) != format::kCheckpointVersion) {
    findings_->Note(checkpoint_path_ + ": checkpoint of version " +
                    std::to_string(format::Get32(p + 8)) +
                    ", which annald ignores (it replays the whole log, then writes a version " +
                    std::to_string(format::kCheckpointVersion) + " checkpoint)");
    return;
  }
  StreamTable table;
  Status s = DecodeCheckpoint(c.bytes, checkpoint_path_, &c.header, &c.segments, &table);
  if (!s.ok()) {
    CheckpointProblem(0, Locate(s.message(), checkpoint_path_, 0).what, Fate::kIgnored);
    return;
  }
  uint64_t at = kCheckpointHeaderBytes;
  for (const SegmentSummary& seg : c.segments) {
    c.segment_at.push_back(at);
    at += kCheckpointSegmentFixedBytes + seg.samples.size() * kCheckpointSampleBytes +
          kCheckpointIndexLengthBytes + seg.index.size();
  }
  c.stream_count = format::Get64(p + format::kCheckpointStreamCountOffset);
  c.streams_at = at;
  ANNAL_ASSERT(c.streams_at + c.stream_count * kCheckpointStreamBytes + kCheckpointChecksumBytes ==
               c.bytes.size());
  ckpt_ = std::move(c);
}

bool PartitionScan::OpenSegments() {
  auto names = fs::ListDir(config_.dir);
  if (!names.ok()) {
    Unreadable(names.status(), config_.dir);
    return false;
  }
  std::vector<uint32_t> ids;
  const std::unordered_set<std::string> present(names->begin(), names->end());
  for (const std::string& n : *names) {
    uint32_t id;
    if (format::ParseSegmentFileName(n, &id)) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  if (ids.empty()) {
    findings_->Note(config_.dir + ": no segment files (annald creates the first at open)");
    return false;
  }
  for (size_t i = 1; i < ids.size(); ++i)
    if (ids[i] != ids[i - 1] + 1)
      LogProblem(fs::Join(config_.dir, format::SegmentFileName(ids[i - 1] + 1)), 0,
                 ids[i] == ids[i - 1] + 2
                     ? "segment file is missing"
                     : "segment file is missing, and those after it up to segment " +
                           std::to_string(ids[i] - 1));
  format::SegmentHeader expected{config_.partition, 0, config_.segment_bytes, config_.partitions};
  for (size_t i = 0; i < ids.size(); ++i) {
    Segment s;
    s.id = ids[i];
    s.path = fs::Join(config_.dir, format::SegmentFileName(s.id));
    s.summary = SegmentSummary{s.id, kSegmentHeaderBytes, 0, 0, 0, 0, {}, {}};
    s.builder = std::make_unique<SegmentIndexBuilder>(s.id);
    s.has_index_file = present.contains(format::SegmentIndexFileName(s.id));
    auto file = OpenReadOnly(s.path, s.id, expected, cache_, &s.alias, &s.never_written);
    if (file.ok()) {
      s.file = std::move(*file);
    } else if (i + 1 == ids.size() && s.never_written &&
               file.status().code() == StatusCode::kCorruption) {
      findings_->Warning(s.path, 0,
                         "the newest segment's creation was cut short (" + file.status().message() +
                             "); it holds no acknowledged event and annald recreates it at open");
    } else {
      s.never_written = false;
      ReadFailed(file.status(), s, 0);
      damaged_ = true;
    }
    segments_.push_back(std::move(s));
  }
  // Only the newest segment may be cut, or the one before it when the newest
  // is empty (OpenSegments in partition.cc).
  for (size_t i = 0; i + 1 < segments_.size(); ++i) {
    const Segment& s = segments_[i];
    if (!s.file || s.file->sealed || s.file->size_bytes >= config_.segment_bytes) continue;
    bool newest_empty = i + 2 == segments_.size() && LaterSegmentsEmpty(i);
    if (!newest_empty)
      LogProblem(s.path, s.file->size_bytes,
                 "segment is shorter than the segment size (" + std::to_string(s.file->size_bytes) +
                     " bytes) with data after it: it was cut");
  }
  return true;
}

// Recovery's own conditions for using a checkpoint (Partition::LoadCheckpoint).
void PartitionScan::CheckCheckpointShape() {
  if (!ckpt_) return;
  const Checkpoint& c = *ckpt_;
  if (c.header.partition != config_.partition) {
    CheckpointProblem(12, "checkpoint of partition " + std::to_string(c.header.partition),
                      Fate::kIgnored);
    return;
  }
  if (c.segments.empty() || c.segments.size() > segments_.size()) {
    CheckpointProblem(40,
                      "checkpoint names " + std::to_string(c.segments.size()) + " segments; " +
                          std::to_string(segments_.size()) + " are on disk",
                      Fate::kIgnored);
    return;
  }
  if (c.segments.back().id != c.header.tail_segment ||
      c.segments.back().end_offset != c.header.tail_offset) {
    CheckpointProblem(16,
                      "the tail (segment " + std::to_string(c.header.tail_segment) + ", offset " +
                          std::to_string(c.header.tail_offset) +
                          ") is not its last segment entry's end",
                      Fate::kIgnored);
    return;
  }
  for (size_t k = 0; k < c.segments.size(); ++k) {
    const Segment& s = segments_[k];
    if (c.segments[k].id != s.id) {
      CheckpointProblem(c.segment_at[k],
                        "entry " + std::to_string(k) + " names segment " +
                            std::to_string(c.segments[k].id) + ", but segment " +
                            std::to_string(s.id) + " is there on disk",
                        Fate::kIgnored);
      return;
    }
    if (s.file && c.segments[k].end_offset > s.file->size_bytes) {
      CheckpointProblem(c.segment_at[k] + 4,
                        "segment " + std::to_string(s.id) + " ends at offset " +
                            std::to_string(c.segments[k].end_offset) + ", past the end of its file",
                        Fate::kIgnored);
      return;
    }
  }
  compare_ckpt_ = true;
}

// Loads and checks a sealed segment's block map; false when it is damaged.
bool PartitionScan::LoadBlockMap(Segment& s) {
  auto blocks = s.file->sealed->Blocks();
  if (!blocks.ok()) {
    ReadFailed(blocks.status(), s, 0);
    MarkIncomplete(s);
    return false;
  }
  s.blocks = std::move(*blocks);
  return true;
}

// Where the scan of a sealed segment goes on after a read at `offset`
// failed: the first batch that starts after the damaged block (blocks cut
// through batches; each names the first batch starting in it).
std::optional<uint64_t> PartitionScan::NextBatchAfterDamage(const Segment& s, uint64_t offset) {
  if (!s.file->sealed || !s.blocks) return std::nullopt;
  const std::vector<BlockEntry>& blocks = *s.blocks;
  auto holding =
      std::upper_bound(blocks.begin(), blocks.end(), offset,
                       [](uint64_t o, const BlockEntry& e) { return o < e.logical_offset; });
  if (holding == blocks.begin()) return std::nullopt;
  // The read failed in the block holding `offset` or in one its batch
  // runs into; the blocks that load (from the cache, mostly) are whole.
  size_t i = static_cast<size_t>(holding - blocks.begin()) - 1;
  while (i < blocks.size() && s.file->sealed->Block(static_cast<uint32_t>(i)).ok()) ++i;
  for (size_t j = i + 1; j < blocks.size(); ++j)
    if (blocks[j].batch_offset != 0) return blocks[j].batch_offset;
  return std::nullopt;
}

// Each block names the first batch that starts in it, with its first
// position and time (sealed.h); the scan sees batch starts in order.
void PartitionScan::CheckBlockEntries(Segment& s, uint64_t offset, const format::BatchHeader& h) {
  const std::vector<BlockEntry>& blocks = *s.blocks;
  while (s.block_at + 1 < blocks.size() && blocks[s.block_at + 1].logical_offset <= offset) {
    LeaveBlock(s);
    ++s.block_at;
    s.block_has_batch = false;
  }
  if (s.block_has_batch) return;
  s.block_has_batch = true;
  const BlockEntry& e = blocks[s.block_at];
  if (e.batch_offset != offset || e.first_position != h.first_position ||
      e.first_recorded_at_ns != h.recorded_at_ns)
    LogProblem(s.path, e.file_offset,
               "block " + std::to_string(s.block_at) + " (log offset " +
                   std::to_string(e.logical_offset) + ") names its first batch at log offset " +
                   std::to_string(e.batch_offset) + ", position " +
                   std::to_string(e.first_position) + ", but the first batch in it is at " +
                   std::to_string(offset) + ", position " + std::to_string(h.first_position));
}

// Leaves block `s.block_at`: if it names a batch, one must have started in it.
void PartitionScan::LeaveBlock(const Segment& s) {
  const BlockEntry& e = (*s.blocks)[s.block_at];
  // After damage, the batches of skipped blocks were not seen.
  if (!s.complete || s.block_has_batch || e.batch_offset == 0) return;
  LogProblem(s.path, e.file_offset,
             "block " + std::to_string(s.block_at) + " (log offset " +
                 std::to_string(e.logical_offset) + ") names a batch at log offset " +
                 std::to_string(e.batch_offset) + ", but no batch starts in it");
}

// Reads segment `i` batch by batch. Returns false when the partition's log
// ends in it with a torn final batch.
bool PartitionScan::ScanSegment(size_t i) {
  Segment& s = segments_[i];
  const SegmentFile& f = *s.file;
  if (f.sealed && !LoadBlockMap(s)) return true;
  std::vector<uint8_t> buf;
  // Every turn moves `offset` forward by at least a batch header, or leaves.
  for (uint64_t offset = kSegmentHeaderBytes;;) {
    AtOffset(i, offset);
    format::BatchHeader h;
    auto c = CheckBatchAt(f, offset, &buf, &h);
    if (c.ok() && (c->kind == BatchCheck::kTorn || c->kind == BatchCheck::kCorrupt) && !f.sealed &&
        i + 2 >= segments_.size() && config_.may_be_live && rechecks_left_ > 0) {
      // A write in flight, or the page cache catching up with one.
      --rechecks_left_;
      std::this_thread::sleep_for(kRecheckPause);
      c = CheckBatchAt(f, offset, &buf, &h);
    }
    if (!c.ok()) {
      ReadFailed(c.status(), s, offset);
      MarkIncomplete(s);
      std::optional<uint64_t> next = NextBatchAfterDamage(s, offset);
      if (!next || *next <= offset) return true;
      offset = *next;
      continue;
    }
    switch (c->kind) {
      case BatchCheck::kEnd:
        if (f.sealed && offset != f.sealed->data_end())
          LogProblem(s.path, offset,
                     "the sealed log ends here, before its data end " +
                         std::to_string(f.sealed->data_end()));
        return true;
      case BatchCheck::kValid:
        ApplyBatch(s, offset, buf, h);
        offset += h.length;
        continue;
      case BatchCheck::kTorn: {
        uint64_t until = 0;
        if (TornIsFinal(i, offset, *c, h, &until)) {
          findings_->Warning(s.path, offset,
                             "torn final batch (" + c->why +
                                 "), never acknowledged: annald may be writing it; "
                                 "if not, annald drops it at open and `annal repair` removes it");
          torn_at_ = offset;
          torn_until_ = until;
          end_slot_ = i;
          return false;
        }
        LogProblem(s.path, offset, c->why + ", and data follows it");
        break;
      }
      case BatchCheck::kCorrupt:
        ReportCorrupt(s, offset, *c, buf, h);
        break;
    }
    // Damage: go on after the batch when its header says where it ends.
    MarkIncomplete(s);
    if (!c->header_valid || offset + h.length > f.size_bytes) return true;
    offset += h.length;
  }
}

// A corrupt batch, named by its damaged record when the trailer is what fails.
void PartitionScan::ReportCorrupt(const Segment& s, uint64_t offset, const BatchCheck& c,
                                  const std::vector<uint8_t>& buf, const format::BatchHeader& h) {
  // CheckBatchAt read the whole batch into `buf` only when its header holds
  // and it lies inside the file.
  if (c.header_valid && offset + h.length <= s.file->size_bytes && buf.size() == h.length) {
    Status r = ForEachRecord(*s.file, offset, buf.data(), h,
                             [](const format::RecordView&, uint32_t) { return Status::Ok(); });
    if (!r.ok()) {
      Finding f = Locate(r.message(), s.path, offset);
      LogProblem(
          f.file, f.offset,
          f.what + " (in the batch at offset " + std::to_string(offset) + ": " + c.why + ")");
      return;
    }
  }
  LogProblem(s.path, offset, c.why);
}

// True when no segment after slot `i` holds a batch (Partition::LaterSegmentsEmpty).
bool PartitionScan::LaterSegmentsEmpty(size_t i) {
  for (size_t j = i + 1; j < segments_.size(); ++j) {
    if (segments_[j].never_written) continue;
    if (!segments_[j].file || !HoldsNoBatch(*segments_[j].file)) return false;
  }
  return true;
}

// Recovery's rule: a torn batch ends the log when every later segment is
// empty and nothing but zeros follows it in its own.
bool PartitionScan::TornIsFinal(size_t i, uint64_t offset, const BatchCheck& c,
                                const format::BatchHeader& h, uint64_t* torn_until) {
  if (!LaterSegmentsEmpty(i)) return false;
  const SegmentFile& f = *segments_[i].file;
  *torn_until = inspect::TornBatchEnd(inspect::TornBatch{offset, c, h});
  auto rest_zero = ZeroFrom(f, *torn_until);
  if (!rest_zero.ok()) {
    ReadFailed(rest_zero.status(), segments_[i], *torn_until);
    return false;
  }
  return *rest_zero;
}

void PartitionScan::ApplyBatch(Segment& s, uint64_t offset, const std::vector<uint8_t>& buf,
                               const format::BatchHeader& h) {
  ++batches_;
  if (h.first_position <= last_position_)
    LogProblem(s.path, offset,
               "batch positions do not increase: first position " +
                   std::to_string(h.first_position) + " after position " +
                   std::to_string(last_position_));
  if (h.recorded_at_ns < last_recorded_at_ns_)
    LogProblem(s.path, offset,
               "batch recorded_at goes back in time: " + std::to_string(h.recorded_at_ns) +
                   " ns after " + std::to_string(last_recorded_at_ns_) + " ns");
  if (s.blocks) CheckBlockEntries(s, offset, h);
  Status r = ForEachRecord(*s.file, offset, buf.data(), h,
                           [&](const format::RecordView& rec, uint32_t at) {
                             ApplyRecord(s, h, rec, static_cast<uint32_t>(offset + at));
                             return Status::Ok();
                           });
  if (!r.ok()) {
    ReadFailed(r, s, offset);
    MarkIncomplete(s);
  }
  // NoteBatch requires what a valid log gives; a batch that breaks the
  // order was reported above and stays out of the summary.
  if (h.first_position > s.summary.last_position && offset >= s.summary.end_offset) {
    s.summary.NoteBatch(static_cast<uint32_t>(offset), h.length, h.first_position, h.count,
                        h.recorded_at_ns);
    s.has_data = true;
  }
  AddPositions(h.first_position, h.count,
               format::MakeLocation(s.id, static_cast<uint32_t>(offset)));
  last_position_ = std::max(last_position_, h.first_position + h.count - 1);
  last_recorded_at_ns_ = std::max(last_recorded_at_ns_, h.recorded_at_ns);
}

// One event: its partition, its time, and that it continues its stream
// (as Partition::ApplyRecord requires, by name rather than by hash).
void PartitionScan::ApplyRecord(Segment& s, const format::BatchHeader& h,
                                const format::RecordView& r, uint32_t offset) {
  ++events_;
  const uint64_t location = format::MakeLocation(s.id, offset);
  const std::string name(r.stream);
  if (r.recorded_at_ns != h.recorded_at_ns)
    LogProblem(s.path, offset,
               "event's recorded_at " + std::to_string(r.recorded_at_ns) +
                   " ns differs from its batch's " + std::to_string(h.recorded_at_ns) + " ns");
  uint32_t home = format::PartitionForStream(r.stream, config_.partitions);
  if (home != config_.partition)
    LogProblem(s.path, offset,
               "event of stream '" + name + "' lies in partition " +
                   std::to_string(config_.partition) + ", but the stream belongs in partition " +
                   std::to_string(home));
  StreamKey key{format::StreamHash(r.stream), format::Checksum(r.stream.data(), r.stream.size()),
                format::StreamNameCheck(r.stream)};
  auto [it, inserted] = streams_.try_emplace(key);
  StreamState& st = it->second;
  std::string why;
  if (r.version == 0) {
    if (!inserted)
      why = "starts the stream again (it is at version " + std::to_string(st.version) + ")";
    else if (r.prev_location != kNoLocation)
      why = "is the stream's first event but points back to " + Location(r.prev_location);
    st = StreamState{0, location, location, 0};
  } else {
    if (inserted)
      why = "has no earlier event of its stream in this partition";
    else if (r.version != st.version + 1 || r.prev_location != st.location)
      why = "does not follow the stream's head (version " + std::to_string(st.version) + " at " +
            Location(st.location) + "); it points back to " + Location(r.prev_location);
    st.version = r.version;
    st.location = location;
  }
  st.head_id_check = format::EventIdCheck(r.id);
  if (why.empty()) {
    s.builder->Add(key.hash, r.version, r.prev_location, offset);
    return;
  }
  // Recovery refuses such an event, so no index holds it.
  s.indexable = false;
  // Past unreadable data, a stream's earlier events may be in what was lost.
  if (damaged_)
    ++unchecked_;
  else
    LogProblem(
        s.path, offset,
        "event of stream '" + name + "' at version " + std::to_string(r.version) + " " + why);
}

void PartitionScan::AddPositions(uint64_t first, uint32_t count, uint64_t location) {
  uint64_t last = first + count - 1;
  if (!runs_.empty() && runs_.back().last + 1 == first) {
    runs_.back().last = last;
    return;
  }
  runs_.push_back(PositionRun{first, last, config_.partition, location});
}

void PartitionScan::FinishSegment(size_t i) {
  Segment& s = segments_[i];
  if (s.has_data) end_slot_ = i;  // a torn final batch's segment was set by ScanSegment
  if (s.file && s.file->sealed && s.complete && s.has_data &&
      (s.summary.first_position != s.file->sealed->first_position() ||
       s.summary.last_position != s.file->sealed->last_position()))
    LogProblem(s.path, s.file->sealed->stored_bytes() - format::kSealedFooterBytes,
               "the footer names positions " + std::to_string(s.file->sealed->first_position()) +
                   ".." + std::to_string(s.file->sealed->last_position()) + ", its batches hold " +
                   std::to_string(s.summary.first_position) + ".." +
                   std::to_string(s.summary.last_position));
  if (config_.check_indexes) CompareIndexFile(s);
  if (ckpt_ && compare_ckpt_ && i + 1 < ckpt_->segments.size()) {
    if (s.complete && !damaged_) CompareSegmentEntry(i, s);
  }
  if (s.blocks) {
    for (; s.block_at < s.blocks->size(); ++s.block_at, s.block_has_batch = false) LeaveBlock(s);
    s.blocks.reset();
  }
  s.builder.reset();  // compared; the next segments do not need it
}

// Rebuilds the segment's index as the finisher writes it and compares.
void PartitionScan::CompareIndexFile(const Segment& s) {
  const std::string path = fs::Join(config_.dir, format::SegmentIndexFileName(s.id));
  if (!s.has_index_file) return;
  if (!s.file || !s.complete || !s.indexable) {
    findings_->Note(path +
                    ": not compared, its segment could not be read whole or breaks a stream");
    return;
  }
  auto data = fs::ReadWholeFile(path);
  if (!data.ok()) {
    Unreadable(data.status(), path);
    return;
  }
  const std::string want = s.builder->Encode(config_.partition, s.summary.samples);
  if (*data == want) return;
  const auto* p = reinterpret_cast<const uint8_t*>(data->data());
  if (data->size() < format::kSegmentIndexHeaderBytes) {
    IndexProblem(path, 0, "index file is shorter than its header");
  } else if (std::memcmp(p, format::kSegmentIndexMagic, 8) != 0) {
    IndexProblem(path, 0, "not a segment index (bad magic)");
  } else if (format::Get64(p + 56) != format::Checksum(p, 56)) {
    IndexProblem(path, 56, "index header checksum mismatch");
  } else {
    size_t n = std::min(data->size(), want.size());
    size_t at = static_cast<size_t>(
        std::mismatch(data->begin(), data->begin() + static_cast<ptrdiff_t>(n), want.begin())
            .first -
        data->begin());
    IndexProblem(path, at,
                 "index file differs from the index rebuilt from " + s.path + " (" +
                     std::to_string(data->size()) + " bytes, rebuilt " +
                     std::to_string(want.size()) + "; first difference here)");
  }
}

// The end of the log: what follows the last batch must be zeros.
void PartitionScan::CheckTail() {
  for (size_t i = 0; i < segments_.size(); ++i) {
    const Segment& s = segments_[i];
    if (!s.file || s.file->sealed || !s.complete) continue;
    // A torn final batch is followed by zeros only (TornIsFinal).
    const bool torn = torn_at_ && i == end_slot_;
    const uint64_t from = torn ? std::min(torn_until_, s.file->size_bytes) : s.summary.end_offset;
    auto end = EndOfNonZero(*s.file, from);
    if (!end.ok()) {
      ReadFailed(end.status(), s, from);
      continue;
    }
    const bool at_end = i >= end_slot_;
    if (at_end && *end > s.summary.end_offset)
      tail_regions_.push_back({i, s.summary.end_offset, *end, torn});
    if (*end == from) continue;
    if (at_end)
      findings_->Warning(
          s.path, from,
          "bytes up to offset " + std::to_string(*end) +
              " after the end of the log are not zero: "
              "leftovers of a write that never completed (annald zeroes them at open when they lie "
              "within max_batch_bytes; `annal repair` removes them)");
    else
      findings_->Warning(
          s.path, from,
          "bytes up to offset " + std::to_string(*end) +
              " after the segment's last batch are not "
              "zero (nothing reads them: a later segment holds the log's continuation)");
  }
  for (const Segment* s : CutSegments())
    findings_->Warning(s->path, s->file->size_bytes,
                       "the newest segment is cut short at " + std::to_string(s->file->size_bytes) +
                           " of " + std::to_string(config_.segment_bytes) +
                           " bytes: annald extends it at open, `annal repair` too");
}

// --- the checkpoint against the log

// Called at every batch boundary: at the checkpoint's tail, the scan's state
// must be the checkpoint's.
void PartitionScan::AtOffset(size_t i, uint64_t offset) {
  if (!ckpt_ || !compare_ckpt_ || tail_seen_ || i + 1 != ckpt_->segments.size() ||
      offset != ckpt_->header.tail_offset)
    return;
  tail_seen_ = true;
  if (damaged_) {
    findings_->Note(checkpoint_path_ +
                    ": not compared with the log, which is damaged before its tail");
    return;
  }
  const CheckpointHeader& h = ckpt_->header;
  if (h.last_position != last_position_)
    CheckpointProblem(24,
                      "last position " + std::to_string(h.last_position) +
                          ", the log's at the tail is " + std::to_string(last_position_),
                      Fate::kTrusted);
  if (h.last_recorded_at_ns != last_recorded_at_ns_)
    CheckpointProblem(32,
                      "last recorded_at " + std::to_string(h.last_recorded_at_ns) +
                          " ns, the log's at the tail is " + std::to_string(last_recorded_at_ns_) +
                          " ns",
                      Fate::kTrusted);
  CompareSegmentEntry(i, segments_[i]);
  CompareStreams();
}

bool SamplesEqual(const std::vector<TimeSample>& a, const std::vector<TimeSample>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const TimeSample& x, const TimeSample& y) {
                      return x.position == y.position && x.recorded_at_ns == y.recorded_at_ns &&
                             x.offset == y.offset;
                    });
}

// Entry `k` against segment `s` as scanned (whole, or up to the tail).
void PartitionScan::CompareSegmentEntry(size_t k, const Segment& s) {
  const SegmentSummary& c = ckpt_->segments[k];
  const SegmentSummary& m = s.summary;
  const uint64_t at = ckpt_->segment_at[k];
  const std::string seg = "segment " + std::to_string(s.id) + ": ";
  auto field = [&](uint64_t offset, const char* name, uint64_t ckpt_value, uint64_t log_value) {
    if (ckpt_value != log_value)
      CheckpointProblem(at + offset,
                        seg + name + " " + std::to_string(ckpt_value) + ", the log's is " +
                            std::to_string(log_value),
                        Fate::kTrusted);
  };
  field(4, "end offset", c.end_offset, m.end_offset);
  field(8, "first position", c.first_position, m.first_position);
  field(16, "last position", c.last_position, m.last_position);
  field(24, "first recorded_at", static_cast<uint64_t>(c.first_recorded_at_ns),
        static_cast<uint64_t>(m.first_recorded_at_ns));
  field(32, "last recorded_at", static_cast<uint64_t>(c.last_recorded_at_ns),
        static_cast<uint64_t>(m.last_recorded_at_ns));
  if (!c.samples.empty() && !SamplesEqual(c.samples, m.samples))
    CheckpointProblem(ckpt_->SamplesAt(k),
                      seg + "its " + std::to_string(c.samples.size()) +
                          " time samples differ from the log's " + std::to_string(m.samples.size()),
                      Fate::kTrusted);
  if (!c.index.empty() && s.indexable && c.index != s.builder->Encode(config_.partition, {}))
    CheckpointProblem(ckpt_->IndexAt(k),
                      seg + "its stream index differs from the one rebuilt from the log",
                      Fate::kTrusted);
}

// The stream table at the tail: the same slots (StreamSlot: hash, head
// version and location, first location, name check, head id check).
void PartitionScan::CompareStreams() {
  struct Mine {
    StreamSlot slot;
    bool matched = false;
  };
  std::unordered_multimap<uint64_t, Mine> mine;
  for (const auto& [key, st] : streams_)
    mine.emplace(key.hash, Mine{StreamSlot{key.hash, st.version, st.location, st.first_location,
                                           key.name_check, st.head_id_check}});
  auto same = [](const StreamSlot& a, const StreamSlot& b) {
    return a.hash == b.hash && a.head_version == b.head_version &&
           a.head_location == b.head_location && a.first_location == b.first_location &&
           a.name_check == b.name_check && a.head_id_check == b.head_id_check;
  };
  auto describe = [](const StreamSlot& s) {
    return "head version " + std::to_string(s.head_version) + " at " + Location(s.head_location) +
           ", first event at " + Location(s.first_location) + ", name check " + Hex(s.name_check) +
           ", head id check " + Hex(s.head_id_check);
  };
  std::vector<uint64_t> unmatched;
  for (uint64_t i = 0; i < ckpt_->stream_count; ++i) {
    StreamSlot slot = ckpt_->SlotAt(i);
    auto [lo, hi] = mine.equal_range(slot.hash);
    auto it = std::find_if(
        lo, hi, [&](const auto& e) { return !e.second.matched && same(e.second.slot, slot); });
    if (it != hi)
      it->second.matched = true;
    else
      unmatched.push_back(i);
  }
  // A slot that differs is paired with the log's stream of the same hash
  // (and name check) when there is one, to say what differs.
  for (uint64_t i : unmatched) {
    StreamSlot slot = ckpt_->SlotAt(i);
    auto [lo, hi] = mine.equal_range(slot.hash);
    auto it = std::find_if(lo, hi, [&](const auto& e) {
      return !e.second.matched && e.second.slot.name_check == slot.name_check;
    });
    std::string what = "stream " + Hex(slot.hash) + ": " + describe(slot);
    if (it == hi) {
      what += "; the log has no such stream at the checkpoint's tail";
    } else {
      what += "; the log has " + describe(it->second.slot);
      it->second.matched = true;
    }
    CheckpointProblem(ckpt_->SlotOffset(i), what, Fate::kTrusted);
  }
  for (const auto& [hash, m] : mine)
    if (!m.matched)
      CheckpointProblem(ckpt_->streams_at,
                        "stream " + Hex(hash) + " (" + describe(m.slot) +
                            ") is missing from the checkpoint's stream table",
                        Fate::kTrusted);
}

void PartitionScan::CheckpointTailNotReached() {
  const CheckpointHeader& h = ckpt_->header;
  const Segment& s = segments_[ckpt_->segments.size() - 1];
  if (!s.file || !s.complete || damaged_) {
    findings_->Note(checkpoint_path_ + ": tail not checked, the log before it could not be read");
    return;
  }
  CheckpointProblem(16,
                    "the tail (segment " + std::to_string(h.tail_segment) + ", offset " +
                        std::to_string(h.tail_offset) +
                        ") is not at a batch boundary of the log, whose data in "
                        "that segment ends at offset " +
                        std::to_string(s.summary.end_offset) +
                        ": annald would resume its scan there",
                    Fate::kTrusted);
}

// ------------------------------------------------------------- the whole store

// Positions that appear in two partitions, and how many below the highest
// were never used (those of batches that failed: legal).
struct PositionCheck {
  uint64_t last_position = 0;
  uint64_t unused = 0;
};

PositionCheck CheckPositions(std::vector<PositionRun> runs, const std::string& dir,
                             Findings* findings) {
  std::sort(runs.begin(), runs.end(), [](const PositionRun& a, const PositionRun& b) {
    return a.first != b.first ? a.first < b.first : a.partition < b.partition;
  });
  auto file_of = [&](const PositionRun& r) {
    return fs::Join(fs::Join(dir, format::PartitionDirName(r.partition)),
                    format::SegmentFileName(format::LocationSegment(r.location)));
  };
  PositionCheck out;
  uint64_t covered = 0;
  const PositionRun* highest = nullptr;  // the run reaching furthest so far
  for (const PositionRun& r : runs) {
    if (highest && r.first <= highest->last && r.partition != highest->partition)
      findings->Problem(file_of(r), format::LocationOffset(r.location),
                        "positions " + std::to_string(r.first) + ".." +
                            std::to_string(std::min(r.last, highest->last)) +
                            " are also used in partition " + std::to_string(highest->partition) +
                            " (" + file_of(*highest) + " from offset " +
                            std::to_string(format::LocationOffset(highest->location)) + ")");
    uint64_t from = highest ? std::max(r.first, highest->last + 1) : r.first;
    if (r.last >= from) covered += r.last - from + 1;
    if (!highest || r.last > highest->last) highest = &r;
  }
  out.last_position = highest ? highest->last : 0;
  out.unused = out.last_position - covered;
  return out;
}

Json NotesToJson(const std::vector<std::string>& notes) {
  Json out = Json::array();
  for (const std::string& n : notes) out.push_back(n);
  return out;
}

std::string NotADataDir(const std::string& command, const std::string& dir) {
  return "annal " + command + ": " + dir + " is not an annal data directory (it has no " +
         format::ManifestName() + ")\n";
}

}  // namespace

// Exit status: kProblems when anything is damaged (even if some file could
// also not be read: the damage is certain), else kIoError when a file could
// not be read (the check is incomplete), else kOk.
int Verify(const std::string& dir, bool json) {
  Findings findings(/*print_warnings=*/true);
  format::Manifest m;
  switch (ReadManifest(dir, &findings, &m)) {
    case DirState::kNotADataDir:
      std::fputs(NotADataDir("verify", dir).c_str(), stderr);
      return kUsage;
    case DirState::kUnreadable:
      return kIoError;
    case DirState::kDamaged:
      return kProblems;
    case DirState::kOk:
      break;
  }
  BlockCache cache(kCacheBytes);
  uint64_t segments = 0, events = 0, batches = 0, streams = 0;
  bool damaged = false;
  std::vector<PositionRun> runs;
  for (uint32_t p = 0; p < m.partitions; ++p) {
    ScanConfig config{.dir = fs::Join(dir, format::PartitionDirName(p)),
                      .partition = p,
                      .partitions = m.partitions,
                      .segment_bytes = m.segment_bytes};
    if (!fs::Exists(config.dir)) {
      findings.Note(config.dir + ": no partition directory (annald creates it at open)");
      continue;
    }
    PartitionScan scan(config, &cache, &findings);
    scan.Run();
    damaged = damaged || scan.damaged();
    segments += scan.segment_count();
    events += scan.events();
    batches += scan.batches();
    streams += scan.streams();
    std::vector<PositionRun> r = scan.TakeRuns();
    runs.insert(runs.end(), r.begin(), r.end());
  }
  PositionCheck positions = CheckPositions(std::move(runs), dir, &findings);
  if (positions.unused > 0)
    findings.Note(std::to_string(positions.unused) + " positions below " +
                  std::to_string(positions.last_position) + " are in no batch read" +
                  (damaged
                       ? " (those of appends that failed, which is legal, and of damaged batches)"
                       : " (those of appends that failed, which is legal)"));

  const auto& problems = findings.problems();
  const auto& warnings = findings.warnings();
  if (json) {
    Json j;
    j["dir"] = dir;
    j["ok"] = problems.empty() && findings.io_errors().empty();
    j["partitions"] = m.partitions;
    j["segments"] = segments;
    j["batches"] = batches;
    j["events"] = events;
    j["streams"] = streams;
    j["last_position"] = positions.last_position;
    j["unused_positions"] = positions.unused;
    j["problems"] = FindingsToJson(problems, "problem");
    j["warnings"] = FindingsToJson(warnings, "warning");
    j["unreadable"] = NotesToJson(findings.io_errors());
    j["notes"] = NotesToJson(findings.notes());
    std::printf("%s\n", DumpJson(j).c_str());
  } else {
    std::printf("partitions:        %u\n", m.partitions);
    std::printf("segments:          %llu\n", static_cast<unsigned long long>(segments));
    std::printf("batches:           %llu\n", static_cast<unsigned long long>(batches));
    std::printf("events:            %llu\n", static_cast<unsigned long long>(events));
    std::printf("streams:           %llu\n", static_cast<unsigned long long>(streams));
    std::printf("last position:     %llu (%llu unused)\n",
                static_cast<unsigned long long>(positions.last_position),
                static_cast<unsigned long long>(positions.unused));
    std::printf("warnings:          %zu\n", warnings.size());
    std::printf("unreadable files:  %zu\n", findings.io_errors().size());
    std::printf("problems:          %zu\n", problems.size());
    for (const std::string& n : findings.notes()) std::printf("note: %s\n", n.c_str());
  }
  if (!problems.empty()) return kProblems;
  if (!findings.io_errors().empty()) return kIoError;
  return kOk;
}

// ------------------------------------------------------------- repair

namespace {

// One change repair makes.
struct Action {
  enum Kind { kZero, kExtend, kMoveCheckpoint } kind = kZero;
  std::string file;
  uint64_t from = 0, to = 0;  // kZero: the bytes; kExtend: old and new size
  std::string backup;         // kZero, kMoveCheckpoint: where the old bytes go
  std::string why;

  std::string Describe(bool dry_run) const {
    const std::string n = std::to_string(to - from);
    switch (kind) {
      case kZero:
        return std::string(dry_run ? "would zero " : "zeroed ") + file + " bytes [" +
               std::to_string(from) + ", " + std::to_string(to) + ") (" + n + " bytes: " + why +
               ")" + (dry_run ? ", copying them to " : ", copied to ") + backup;
      case kExtend:
        return std::string(dry_run ? "would extend " : "extended ") + file + " with zeros from " +
               std::to_string(from) + " to " + std::to_string(to) + " bytes (" + why + ")";
      case kMoveCheckpoint:
        return std::string(dry_run ? "would move " : "moved ") + file + " to " + backup + " (" +
               why + "; annald replays the log at open and writes a new one)";
    }
    return "";
  }
  Json ToJson() const {
    static constexpr const char* kNames[] = {"zero", "extend", "move_checkpoint"};
    Json j;
    j["action"] = kNames[kind];
    j["file"] = file;
    if (kind != kMoveCheckpoint) {
      j["from"] = from;
      j["to"] = to;
    }
    if (kind == kZero) j["bytes"] = to - from;
    if (!backup.empty()) j["backup"] = backup;
    j["reason"] = why;
    return j;
  }
};

std::string SegmentStem(uint32_t segment_id) {
  std::string name = format::SegmentFileName(segment_id);
  return name.substr(0, name.rfind('.'));
}

// What repair would do to one partition whose log holds no damage.
std::vector<Action> Plan(const PartitionScan& scan, const std::string& dir, uint32_t partition) {
  const std::string backup_dir = fs::Join(dir, std::string(kBackupDirName));
  std::vector<Action> plan;
  for (const PartitionScan::TailRegion& r : scan.tail_regions()) {
    const Segment& s = scan.segments()[r.slot];
    Action a;
    a.kind = Action::kZero;
    a.file = s.path;
    a.from = r.from;
    a.to = r.to;
    a.why = r.torn ? "a torn final batch, never acknowledged"
                   : "leftovers of a write that never completed";
    a.backup = fs::Join(backup_dir, format::PartitionDirName(partition) + "-" + SegmentStem(s.id) +
                                        "-offset-" + std::to_string(r.from) + ".bin");
    plan.push_back(a);
  }
  for (const Segment* s : scan.CutSegments())
    plan.push_back(Action{Action::kExtend, s->path, s->file->size_bytes, s->file->capacity_bytes,
                          "", "it was cut short; recovery extends it the same way"});
  if (!scan.checkpoint_trouble().empty())
    plan.push_back(Action{Action::kMoveCheckpoint, scan.checkpoint_path(), 0, 0,
                          fs::Join(backup_dir, format::PartitionDirName(partition) + "-" +
                                                   format::CheckpointFileName()),
                          scan.checkpoint_trouble()});
  return plan;
}

// Creates a new file for a backup at `path`, or at `path` with "-2", "-3"...
// before its extension when an earlier repair left one there.
Result<fs::Fd> CreateBackupFile(std::string* path) {
  const std::string base = *path;
  const size_t dot = base.rfind('.');
  for (int n = 1; n <= kMaxBackupNames; ++n) {
    std::string candidate =
        n == 1 ? base : base.substr(0, dot) + "-" + std::to_string(n) + base.substr(dot);
    int fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      *path = candidate;
      return fs::Fd(fd);
    }
    if (errno != EEXIST) return Status::FromErrno(errno, "create " + candidate);
  }
  return Status::IoError(base + ": " + std::to_string(kMaxBackupNames) +
                         " backups of this name exist already");
}

// Copies [from, to) of `src` to a new backup file, syncs it and its
// directory, and reads it back to compare.
Status Backup(int src, const std::string& src_path, uint64_t from, uint64_t to,
              std::string* backup) {
  const std::string backup_dir = backup->substr(0, backup->rfind('/'));
  ANNAL_RETURN_IF_ERROR(fs::CreateDir(backup_dir));
  ANNAL_ASSIGN_OR_RETURN(fs::Fd out, CreateBackupFile(backup));
  std::vector<uint8_t> buf(kChunkBytes), check(kChunkBytes);
  for (uint64_t at = from; at < to;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), to - at));
    ANNAL_RETURN_IF_ERROR(fs::PreadExact(src, buf.data(), n, at, src_path));
    ANNAL_RETURN_IF_ERROR(fs::PwriteAll(out.get(), buf.data(), n, at - from, *backup));
    at += n;
  }
  if (::fsync(out.get()) != 0) return Status::FromErrno(errno, "fsync " + *backup);
  ANNAL_RETURN_IF_ERROR(fs::SyncDir(backup_dir));
  ANNAL_ASSIGN_OR_RETURN(fs::Fd in, fs::Open(*backup, O_RDONLY));
  for (uint64_t at = from; at < to;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), to - at));
    ANNAL_RETURN_IF_ERROR(fs::PreadExact(src, buf.data(), n, at, src_path));
    ANNAL_RETURN_IF_ERROR(fs::PreadExact(in.get(), check.data(), n, at - from, *backup));
    if (std::memcmp(buf.data(), check.data(), n) != 0)
      return Status::IoError(*backup + ": reads back different from what was written");
    at += n;
  }
  return Status::Ok();
}

Status Apply(Action& a) {
  switch (a.kind) {
    case Action::kZero: {
      ANNAL_ASSIGN_OR_RETURN(fs::Fd fd, fs::Open(a.file, O_RDWR));
      ANNAL_RETURN_IF_ERROR(Backup(fd.get(), a.file, a.from, a.to, &a.backup));
      ANNAL_RETURN_IF_ERROR(fs::WriteZeros(fd.get(), a.from, a.to, a.file));
      SegmentFile check;
      check.path = a.file;
      check.fd = std::move(fd);
      check.size_bytes = a.to;
      ANNAL_ASSIGN_OR_RETURN(bool zero, ZeroFrom(check, a.from));
      if (!zero) return Status::IoError(a.file + ": bytes just zeroed do not read back as zeros");
      return Status::Ok();
    }
    case Action::kExtend: {
      ANNAL_ASSIGN_OR_RETURN(fs::Fd fd, fs::Open(a.file, O_RDWR));
      ANNAL_RETURN_IF_ERROR(fs::WriteZeros(fd.get(), a.from, a.to, a.file));
      ANNAL_ASSIGN_OR_RETURN(uint64_t size, fs::FileSize(fd.get(), a.file));
      if (size != a.to)
        return Status::IoError(a.file + ": is " + std::to_string(size) + " bytes after extending");
      return Status::Ok();
    }
    case Action::kMoveCheckpoint: {
      const std::string backup_dir = a.backup.substr(0, a.backup.rfind('/'));
      ANNAL_RETURN_IF_ERROR(fs::CreateDir(backup_dir));
      {
        // Reserve a name no earlier backup has, then rename over it.
        ANNAL_ASSIGN_OR_RETURN(fs::Fd reserved, CreateBackupFile(&a.backup));
      }
      if (::rename(a.file.c_str(), a.backup.c_str()) != 0)
        return Status::FromErrno(errno, "rename " + a.file + " to " + a.backup);
      ANNAL_RETURN_IF_ERROR(fs::SyncDir(a.file.substr(0, a.file.rfind('/'))));
      return fs::SyncDir(backup_dir);
    }
  }
  return Status::Ok();
}

// Holds DIR/LOCK as annald does. kProblems with a message when another
// process holds it.
Result<fs::Fd> LockDirectory(const std::string& dir, bool dry_run) {
  const std::string path = fs::Join(dir, format::LockName());
  // A dry run creates nothing; without a LOCK file no store is open.
  if (dry_run && !fs::Exists(path)) return fs::Fd();
  ANNAL_ASSIGN_OR_RETURN(fs::Fd fd, fs::Open(path, dry_run ? O_RDONLY : O_RDWR | O_CREAT));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return Status::Unavailable(
          path +
          " is locked by another process (annald, or a program with the store "
          "open): stop it before repairing");
    return Status::FromErrno(errno, "flock " + path);
  }
  return fd;
}

}  // namespace

int Repair(const std::string& dir, bool dry_run, bool json) {
  Findings findings(/*print_warnings=*/false);
  format::Manifest m;
  switch (ReadManifest(dir, &findings, &m)) {
    case DirState::kNotADataDir:
      std::fputs(NotADataDir("repair", dir).c_str(), stderr);
      return kUsage;
    case DirState::kUnreadable:
      return kIoError;
    case DirState::kDamaged:
      std::fprintf(stderr, "annal repair: the manifest is damaged; repair does not rewrite it\n");
      return kProblems;
    case DirState::kOk:
      break;
  }
  auto lock = LockDirectory(dir, dry_run);
  if (!lock.ok()) {
    std::fprintf(stderr, "annal repair: %s\n", lock.status().message().c_str());
    return lock.status().code() == StatusCode::kUnavailable ? kProblems : kIoError;
  }
  BlockCache cache(kCacheBytes);
  std::vector<Action> done;
  std::vector<std::string> refused;
  bool io_error = false;
  for (uint32_t p = 0; p < m.partitions; ++p) {
    // LOCK is held; indexes are not repair's business; a checkpoint that
    // disagrees with the log is moved aside rather than reported.
    ScanConfig config{.dir = fs::Join(dir, format::PartitionDirName(p)),
                      .partition = p,
                      .partitions = m.partitions,
                      .segment_bytes = m.segment_bytes,
                      .check_indexes = false,
                      .report_checkpoint = false,
                      .may_be_live = false};
    if (!fs::Exists(config.dir)) continue;
    PartitionScan scan(config, &cache, &findings);
    scan.Run();
    if (scan.io_errors() > 0) {
      io_error = true;
      refused.push_back(config.dir + ": not repaired: some of its files could not be read");
      continue;
    }
    if (scan.log_problems() > 0) {
      refused.push_back(config.dir +
                        ": not repaired: its log has damage that is not a torn tail (above); "
                        "annald refuses to open it");
      continue;
    }
    for (Action& a : Plan(scan, dir, p)) {
      if (!dry_run) {
        Status s = Apply(a);
        if (!s.ok()) {
          // Fail-stop: nothing after a failed write is attempted.
          std::fprintf(stderr, "annal repair: %s (stopped; nothing after this was changed)\n",
                       s.ToString().c_str());
          return kIoError;
        }
      }
      if (!json) std::printf("%s\n", a.Describe(dry_run).c_str());
      done.push_back(a);
    }
  }
  for (const std::string& r : refused) std::fprintf(stderr, "%s\n", r.c_str());
  if (json) {
    Json j;
    j["dir"] = dir;
    j["dry_run"] = dry_run;
    Json actions = Json::array();
    for (const Action& a : done) actions.push_back(a.ToJson());
    j["actions"] = actions;
    j["problems"] = FindingsToJson(findings.problems(), "problem");
    j["not_repaired"] = NotesToJson(refused);
    std::printf("%s\n", DumpJson(j).c_str());
  } else if (done.empty() && refused.empty()) {
    std::printf("nothing to repair\n");
  }
  if (!refused.empty() && !io_error) return kProblems;
  if (io_error) return findings.problems().empty() ? kIoError : kProblems;
  return kOk;
}

}  // namespace annal::cli::storage
