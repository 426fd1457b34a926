// Segment indexes: where each stream's events lie in one segment, and when
// the segment's batches were committed.
//
// While a segment is written, its index is built in memory
// (SegmentIndexBuilder). Once the segment is full and its last batch is
// durable, the partition's finisher writes the index to
// `segment-NNNNNNNN.idx` beside it (atomically, fsynced) and drops the
// in-memory copy; reads then use SegmentIndex, which reads pages of the
// file through the block cache. Memory therefore grows with the unfinished
// segments only, not with the log. An index file is derived data: one that
// is missing or fails its checksums is rebuilt from its segment.
//
// A run is the events of one stream in one segment: the stream's hash, the
// version of its first event there, the location of the stream's event
// before it (in an earlier segment; kNoLocation for version 0), and the
// offsets of its events, ascending. Reading version v of a stream starts at
// the run holding its head and steps to earlier runs through
// prev_location; each step is one index lookup.
//
//   index file := header samples fences runs offsets
//   header (64 bytes)
//   +-------+---------+-----------+---------+--------------+-----------+
//   | magic | version | partition | segment | sample_count | run_count |
//   | 8     | 4       | 4         | 4       | 4            | 4         |
//   +-------+---------+-----------+---------+--------------+-----------+
//   | offset_count | fence_count | reserved | meta_checksum | reserved | checksum |
//   | 8            | 4           | 4        | 8             | 4        | 8        |
//   +--------------+-------------+----------+---------------+----------+----------+
//   magic "ANNALIDX"; meta_checksum: XXH3-64 of samples and fences;
//   checksum: XXH3-64 of the header's bytes [0, 56).
//   sample (24 bytes): position u64, recorded_at_ns i64, offset u32, zero u32
//     -- the first batch, and then a batch at least every
//        limits::kPositionIndexStrideBytes of log.
//   fence  (16 bytes): first_hash u64, page_checksum u64 -- one per page of
//     kRunsPerPage runs; page_checksum is XXH3-64 of the page's run bytes.
//   run    (40 bytes): hash u64, first_version u64, prev_location u64,
//     count u32, offsets_at u32, offsets_checksum u64 (of its offsets' bytes)
//     -- sorted by (hash, first offset).
//   offset (4 bytes): u32, the event's byte offset in the segment.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "annal/status.h"
#include "block_cache.h"
#include "fs.h"

namespace annal {

namespace format {
inline constexpr char kSegmentIndexMagic[8] = {'A', 'N', 'N', 'A', 'L', 'I', 'D', 'X'};
inline constexpr uint32_t kSegmentIndexVersion = 1;
inline constexpr size_t kSegmentIndexHeaderBytes = 64;
inline constexpr size_t kSampleBytes = 24;
inline constexpr size_t kFenceBytes = 16;
inline constexpr size_t kRunBytes = 40;
inline constexpr size_t kRunsPerPage = 102;  // 4080 bytes
std::string SegmentIndexFileName(uint32_t segment_id);  // "segment-00000012.idx"
bool IsSegmentIndexTempFile(std::string_view name);     // "segment-00000012.idx.tmp"
}  // namespace format

// One batch's commit position, time and offset.
struct TimeSample {
  uint64_t position = 0;
  int64_t recorded_at_ns = 0;
  uint32_t offset = 0;
};

// One stream's events in one segment.
struct Run {
  uint64_t hash = 0;
  uint64_t first_version = 0;
  uint64_t prev_location = 0;
  std::vector<uint32_t> offsets;  // ascending

  uint64_t last_version() const { return first_version + offsets.size() - 1; }
};

// Where, in a run's offsets, the event at `offset` lies, and from where its
// versions reach `min_version`: the run cut to those versions is
// offsets[from, to] with first version first_version + from. Nothing when
// the run does not hold `offset`.
struct RunCut {
  size_t from = 0, to = 0;
};
std::optional<RunCut> CutRunAt(const Run& run, uint32_t offset, uint64_t min_version);

class SegmentIndexBuilder {
 public:
  explicit SegmentIndexBuilder(uint32_t segment_id) : segment_id_(segment_id) {}

  // Records an event at `offset` of this segment: it extends the run whose
  // last event is at `prev_location`, or starts a new run.
  void Add(uint64_t hash, uint64_t version, uint64_t prev_location, uint32_t offset);
  // Appends copies of the runs with `hash` to `out`.
  void Find(uint64_t hash, std::vector<Run>* out) const;
  // The run with `hash` holding the event at `offset`, cut to the versions
  // from `min_version` up to that event. False when there is none.
  bool FindAt(uint64_t hash, uint32_t offset, uint64_t min_version, Run* out) const;
  size_t memory_bytes() const;
  // Runs `step` under the lock that guards this builder against its writer.
  using LockedStep = std::function<void(const std::function<void()>& step)>;
  // The index file's bytes, with the segment's time samples, as they stood
  // when the segment's data ended at `limit`: later events are left out.
  // While a writer may still add to the builder, pass `locked`: the
  // builder is then read in bounded steps, each run through `locked`, and
  // the writer may go on between them.
  std::string Encode(uint32_t partition, const std::vector<TimeSample>& samples,
                     uint64_t limit = UINT64_MAX, const LockedStep& locked = nullptr) const;
  // A builder holding what `Encode` wrote (index checkpoints keep the
  // indexes of unfinished segments this way). kCorruption naming `file`.
  static Result<std::unique_ptr<SegmentIndexBuilder>> Decode(std::string_view bytes, const std::string& file);

 private:
  // How many runs one step of a locked Encode reads.
  static constexpr size_t kEncodeStepRuns = 2048;

  static constexpr uint32_t kNoRun = UINT32_MAX;
  // The slot holding `hash`, or the empty one where it would go. REQUIRES:
  // slots_ not empty.
  size_t SlotFor(uint64_t hash) const;
  // The newest run of `hash`, or kNoRun; older ones follow through older_.
  uint32_t Newest(uint64_t hash) const;
  // Makes run `run` (the last one added) the newest of its hash.
  void Link(uint32_t run);

  uint32_t segment_id_;
  std::vector<Run> runs_;
  // Runs by hash: open addressing with linear probing over a power-of-two
  // table, at most half full, a slot per hash naming its newest run; runs
  // of one hash are chained newest to oldest by older_ (one entry per run).
  // The lookup that every appended event makes touches one or two slots,
  // where an unordered_multimap chased a node per run and was the writer's
  // largest cost of its own (docs/benchmarks.md).
  struct Slot {
    uint64_t hash = 0;
    uint32_t run = kNoRun;
  };
  std::vector<Slot> slots_;
  std::vector<uint32_t> older_;
  size_t hashes_ = 0;  // slots in use
  size_t events_ = 0;
};

// A segment's index file, open for reading. Immutable; any thread.
class SegmentIndex {
 public:
  // Opens `dir/segment-NNNNNNNN.idx` and verifies its header and that its
  // sections add up to its size (kCorruption naming the file when they do
  // not; kNotFound when there is no file). Samples and fences are verified
  // when first read, pages of runs and offsets on every read.
  static Result<std::shared_ptr<SegmentIndex>> Open(const std::string& dir, uint32_t partition,
                                                    uint32_t segment_id, BlockCache* cache);

  // Appends the runs with `hash` to `out`, each verified.
  Status Find(uint64_t hash, std::vector<Run>* out) const;
  // Every run, in file order (for tools).
  Status ForEachRun(const std::function<Status(const Run&)>& fn) const;
  // The time samples, read through the cache.
  Result<std::vector<TimeSample>> Samples() const;
  uint64_t run_count() const { return run_count_; }
  uint64_t offset_count() const { return offset_count_; }
  const std::string& path() const { return path_; }

 private:
  SegmentIndex() = default;
  // Samples and fences, verified, through the cache.
  Result<BlockCache::Bytes> Meta() const;
  Result<BlockCache::Bytes> Page(uint64_t page) const;
  Status ReadOffsets(const uint8_t* run_bytes, uint64_t run_file_offset, Run* run) const;
  std::string path_;
  fs::Fd fd_;
  BlockCache* cache_ = nullptr;
  uint64_t cache_id_ = 0;
  uint32_t segment_id_ = 0;
  uint64_t run_count_ = 0, offset_count_ = 0, sample_count_ = 0, fence_count_ = 0;
  uint64_t meta_checksum_ = 0;
  uint64_t runs_at_ = 0, offsets_at_ = 0;
};

}  // namespace annal
