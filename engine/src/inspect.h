// Read-only access to a data directory's files, for tools (`annal data ls`,
// `annal segment dump`, ...; tools/storage_commands.h) rather than for the
// store. Nothing here writes, locks, creates or removes a file, so it may be
// used while annald has the directory open. Each file is opened read-only
// once and read through that descriptor: a segment that sealing replaces
// meanwhile is read as the version that was opened.
//
// Thread-safety: plain functions. A SegmentFile they return belongs to one
// thread, like the BlockCache it may read through (which is itself safe).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "annal/status.h"
#include "block_cache.h"
#include "checkpoint.h"
#include "format.h"
#include "segment.h"
#include "stream_index.h"

namespace annal::inspect {

// dir/MANIFEST, read and checked (format::DecodeManifest). kNotFound when
// there is no MANIFEST: `dir` is not a data directory.
Result<format::Manifest> ReadManifest(const std::string& dir);

// dir/partition-NNN.
std::string PartitionDir(const std::string& data_dir, uint32_t partition);

// The ids of the segment files in `partition_dir`, ascending; none when the
// directory does not exist (a partition that never opened). Other files
// (indexes, checkpoints, temporary files) are not listed; gaps are not
// checked here.
Result<std::vector<uint32_t>> ListSegmentIds(const std::string& partition_dir);

// Where a segment file lies, from a path ".../partition-NNN/segment-NNNNNNNN.log".
struct SegmentLocation {
  std::string data_dir;
  uint32_t partition = 0;
  uint32_t segment_id = 0;
};
// False when `path` does not have that shape.
bool ParseSegmentPath(const std::string& path, SegmentLocation* out);

// Opens segment `segment_id` of `partition` for reading only: a sealed file
// through `cache` (which must outlive the result), else the file as
// written. Its header must name this partition and segment and agree with
// the manifest (kCorruption naming the file otherwise).
Result<std::shared_ptr<SegmentFile>> OpenSegmentReadOnly(const std::string& data_dir,
                                                         const format::Manifest& manifest,
                                                         uint32_t partition, uint32_t segment_id,
                                                         BlockCache* cache);

// Bytes the file at `path` takes, as its size.
Result<uint64_t> FileBytes(const std::string& path);

// A batch found in a segment: where it starts, and its (verified) header.
struct BatchRef {
  uint64_t offset = 0;
  format::BatchHeader header;
};

// A batch that looks torn (CheckBatchAt said kTorn) and its header, which
// holds when check.header_valid.
struct TornBatch {
  uint64_t offset = 0;
  BatchCheck check;
  format::BatchHeader header;
};

// Where a torn batch ends: after its length when its header holds, else
// after the header. Recovery's rule takes it for the log's end (never
// acknowledged, dropped at open) when nothing but zeros follows that in its
// segment and every later segment of the partition is empty.
uint64_t TornBatchEnd(const TornBatch& t);

// Where a segment's data ends and its first and last batches.
struct SegmentExtent {
  // The offset after the last valid batch (for a sealed segment, its
  // footer's data end).
  uint64_t data_end = format::kSegmentHeaderBytes;
  std::optional<BatchRef> first, last;  // none while the segment is empty
  // Not ok when the walk could not reach the end of the data: a torn or
  // corrupt batch ("FILE at offset N: why"), a damaged sealed block, or an
  // I/O error. `data_end`, `first` and `last` then describe what lies
  // before the damage.
  Status problem;
  // Set when that problem is a torn batch at data_end: the log's end when
  // recovery's rule holds (TornBatchEnd), damage otherwise.
  std::optional<TornBatch> torn;
};

// Reads the headers needed for SegmentExtent: for an unsealed segment every
// batch, each verified (CheckBatchAt); for a sealed one the first batch and
// those of its last block. Reads at most the segment's log once.
SegmentExtent FindExtent(const SegmentFile& seg);

// The offset of the first batch at or after `from`, or the end of the data
// when there is none. Walks batch headers only (checking each header's own
// checksum), starting at the sealed block holding `from` when sealed.
// kCorruption naming file and offset when a header before it is damaged.
Result<uint64_t> FirstBatchAtOrAfter(const SegmentFile& seg, uint64_t from);

// The stream name of the record at `offset` of `seg` (its header only; the
// record's checksum is not checked). For telling apart streams whose names
// hash alike (format::StreamHash).
Result<std::string> StreamAt(const SegmentFile& seg, uint64_t offset);

// A partition's index checkpoint (checkpoint.h), as decoded.
struct Checkpoint {
  std::string path;
  uint64_t file_bytes = 0;
  CheckpointHeader header;
  std::vector<SegmentSummary> segments;
  StreamTable streams;
};
// The checkpoint in `partition_dir`; nullopt when there is none.
// kCorruption naming the file when it fails its checks.
Result<std::optional<Checkpoint>> ReadCheckpoint(const std::string& partition_dir);

}  // namespace annal::inspect
