// Index checkpoints: a partition's stream index and segment summaries as of
// a point in its log, so that opening the store replays only the log after
// that point. One file per partition (format::CheckpointFileName()),
// replaced atomically; a checkpoint that fails its checksum is ignored and
// the whole log is replayed instead (checkpoints are an optimisation).
//
//   checkpoint := magic[8] version:u32 (3) partition:u32
//                 tail_segment:u32 tail_offset:u32 last_position:u64
//                 last_recorded_at_ns:i64 segment_count:u32 stream_count:u64
//                 segment{segment_count} stream{stream_count} checksum:u64
//   segment    := id:u32 end_offset:u32 first_position:u64 last_position:u64
//                 first_recorded_at_ns:i64 last_recorded_at_ns:i64
//                 sample_count:u32
//                 (position:u64 recorded_at_ns:i64 offset:u32){sample_count}
//                 index_len:u32 index[index_len]
//   stream     := hash:u64 head_version:u64 head_location:u64 first_location:u64
//                 name_check:u32 head_id_check:u32
//   checksum   := XXH3-64 of every byte before it
//
// Samples, and the segment's stream index (in the index file's encoding,
// segment_index.h), are kept only for segments whose index file is not
// written yet; index_len is 0 for the others.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "annal/status.h"
#include "segment_index.h"
#include "stream_index.h"

namespace annal {

// What the partition keeps in memory about one segment.
struct SegmentSummary {
  uint32_t id = 0;
  uint32_t end_offset = 0;       // end of durable data
  uint64_t first_position = 0;   // 0 while the segment holds no batch
  uint64_t last_position = 0;
  int64_t first_recorded_at_ns = 0;
  int64_t last_recorded_at_ns = 0;
  // Ascending; at most one per limits::kPositionIndexStrideBytes. Moved to
  // the segment's index file when it is written.
  std::vector<TimeSample> samples;
  // In a checkpoint only: the encoded index of a segment without an index
  // file (SegmentIndexBuilder::Encode).
  std::string index;

  // Records a durable batch at `offset` of `length` bytes.
  void NoteBatch(uint32_t offset, uint32_t length, uint64_t first, uint32_t count,
                 int64_t recorded_at_ns);
};

struct CheckpointHeader {
  uint32_t partition = 0;
  uint32_t tail_segment = 0;
  uint32_t tail_offset = 0;
  uint64_t last_position = 0;
  int64_t last_recorded_at_ns = 0;
};

// Writes a checkpoint a piece at a time: the header with its counts, then
// that many segments, then that many streams.
class CheckpointEncoder {
 public:
  CheckpointEncoder(const CheckpointHeader& header, uint32_t segments, uint64_t streams);
  void AddSegment(const SegmentSummary& segment);
  void AddStream(const StreamSlot& stream);
  // REQUIRES: every segment and stream the header counted was added.
  std::string Finish();

 private:
  void ReserveForStreams();  // once every segment is in

  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void Raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }

  std::string out_;
  uint32_t segments_left_;
  uint64_t streams_left_;
};

std::string EncodeCheckpoint(const CheckpointHeader& header,
                             const std::vector<const SegmentSummary*>& segments,
                             const StreamTable& streams);

// Parses and verifies a checkpoint. kCorruption names `file`.
Status DecodeCheckpoint(std::string_view data, const std::string& file, CheckpointHeader* header,
                        std::vector<SegmentSummary>* segments, StreamTable* streams);

}  // namespace annal
