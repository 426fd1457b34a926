// The on-disk format: every constant, in one place. docs/format.md is the
// prose companion (byte tables, a worked example); keep the two in step.
//
// All integers are little-endian. Every checksum is XXH3-64 with seed 0.
//
// A partition directory holds segment files:
//
//   segment file := segment_header batch* zero-fill
//
//   segment_header (64 bytes)
//   +--------+---------+-----------+----------+---------------+------------+----------+----------+
//   | magic  | version | partition | segment  | segment_bytes | partitions | reserved | checksum |
//   | 8      | 4       | 4         | 8        | 8             | 4          | 20       | 8        |
//   +--------+---------+-----------+----------+---------------+------------+----------+----------+
//
//   batch := batch_header record{count} trailer
//   batch_header (48 bytes)
//   +-------+--------+----------------+----------------+-------+-------+---------+----------+-----------------+
//   | magic | length | first_position | recorded_at_ns | count | flags | version | reserved | header_checksum |
//   | 4     | 4      | 8              | 8              | 4     | 2     | 2       | 8        | 8               |
//   +-------+--------+----------------+----------------+-------+-------+---------+----------+-----------------+
//   trailer (8 bytes): XXH3-64 of the batch's bytes [0, length - 8).
//
//   record (72-byte header, then the variable parts)
//   +--------+-------+------------+----------+---------+----------+----------------+---------------+
//   | length | flags | stream_len | type_len | version | position | recorded_at_ns | prev_location |
//   | 4      | 2     | 1          | 1        | 8       | 8        | 8              | 8             |
//   +--------+-------+------------+----------+---------+----------+----------------+---------------+
//   | event_id | metadata_len | payload_len | record_checksum | stream | type | metadata | payload |
//   | 16       | 4            | 4           | 8               | ...    | ...  | ...      | ...     |
//   +----------+--------------+-------------+-----------------+--------+------+----------+---------+
//   record_checksum: XXH3-64 of the record's bytes [0, 64) followed by [72, length).
//
// A location names a record: (segment id << 32) | byte offset in the file.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "annal/status.h"
#include "annal/types.h"

namespace annal::format {

static_assert(std::endian::native == std::endian::little,
              "annal's formats are little-endian and it runs on little-endian hosts only");

inline constexpr uint32_t kFormatVersion = 1;

// --- segment files
inline constexpr char kSegmentMagic[8] = {'A', 'N', 'N', 'A', 'L', 'S', 'E', 'G'};
inline constexpr size_t kSegmentHeaderBytes = 64;
inline constexpr size_t kSegmentHeaderChecksumOffset = 56;

// --- batches
inline constexpr uint32_t kBatchMagic = 0x54414241;  // "ABAT" read as bytes
inline constexpr size_t kBatchHeaderBytes = 48;
inline constexpr size_t kBatchHeaderChecksumOffset = 40;
inline constexpr size_t kBatchTrailerBytes = 8;
// Flag bits 0..7 change how a batch must be read: a reader that sees one it
// does not know refuses the batch. Bits 8..15 are hints it may ignore.
inline constexpr uint16_t kBatchFlagsMustUnderstand = 0x00ff;

// --- records
inline constexpr size_t kRecordHeaderBytes = 72;
inline constexpr size_t kRecordChecksumOffset = 64;
// Record flags, like batch flags: low byte must be understood.
inline constexpr uint16_t kRecordKindEvent = 0x0000;
inline constexpr uint16_t kRecordFlagsMustUnderstand = 0x00ff;

inline constexpr uint64_t kNoLocation = ~0ull;
// Segment file names carry 8 decimal digits.
inline constexpr uint32_t kMaxSegmentId = 99'999'999;

// --- store manifest and checkpoints
inline constexpr char kManifestMagic[8] = {'A', 'N', 'N', 'A', 'L', 'M', 'A', 'N'};
inline constexpr size_t kManifestBytes = 64;
inline constexpr char kCheckpointMagic[8] = {'A', 'N', 'N', 'A', 'L', 'C', 'K', 'P'};
// Version 3 keeps stream hashes and checks, not names (stream_index.h),
// and the indexes of unfinished segments; a checkpoint of another version
// is ignored and the log replayed.
inline constexpr uint32_t kCheckpointVersion = 3;
// Byte widths of a checkpoint's parts (checkpoint.h): the header (magic
// to stream_count), a segment's fixed fields (id to sample_count), one
// position sample, a segment's index length, one stream, the checksum.
inline constexpr size_t kCheckpointHeaderBytes = 52;
inline constexpr size_t kCheckpointStreamCountOffset = 44;  // the header's last field, u64
inline constexpr size_t kCheckpointSegmentFixedBytes = 44;
inline constexpr size_t kCheckpointSampleBytes = 20;
inline constexpr size_t kCheckpointIndexLengthBytes = 4;
inline constexpr size_t kCheckpointStreamBytes = 40;
inline constexpr size_t kCheckpointChecksumBytes = 8;

// --- names of files, made and parsed here only
std::string ManifestName();                     // "MANIFEST"
std::string LockName();                         // "LOCK"
std::string PartitionDirName(uint32_t partition);  // "partition-003"
std::string SegmentFileName(uint32_t segment_id);  // "segment-00000012.log"
// Returns false when `name` is not a segment file name.
bool ParseSegmentFileName(std::string_view name, uint32_t* segment_id);
std::string CheckpointFileName();               // "index.ckpt"

// --- little-endian helpers
inline void Put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
inline void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void Put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline uint16_t Get16(const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return v; }
inline uint32_t Get32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
inline uint64_t Get64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

uint64_t Checksum(const void* data, size_t len);

inline uint64_t MakeLocation(uint32_t segment_id, uint32_t offset) {
  return (uint64_t{segment_id} << 32) | offset;
}
inline uint32_t LocationSegment(uint64_t location) { return static_cast<uint32_t>(location >> 32); }
inline uint32_t LocationOffset(uint64_t location) { return static_cast<uint32_t>(location); }

// --- segment header
struct SegmentHeader {
  uint32_t partition = 0;
  uint32_t segment_id = 0;
  uint64_t segment_bytes = 0;
  uint32_t partitions = 0;
};
// `magic` is kSegmentMagic for a segment as written; a sealed segment's
// header has the same layout with its own magic (sealed.h).
void EncodeSegmentHeader(const SegmentHeader& h, uint8_t out[kSegmentHeaderBytes],
                         const char (&magic)[8] = kSegmentMagic);
// kCorruption naming `file` when magic, version or checksum is wrong.
Status DecodeSegmentHeader(const uint8_t in[kSegmentHeaderBytes], const std::string& file,
                           SegmentHeader* h, const char (&magic)[8] = kSegmentMagic);

// --- batch header
struct BatchHeader {
  uint32_t length = 0;  // whole batch, header and trailer included
  uint64_t first_position = 0;
  int64_t recorded_at_ns = 0;
  uint32_t count = 0;
  uint16_t flags = 0;
};
void EncodeBatchHeader(const BatchHeader& h, uint8_t out[kBatchHeaderBytes]);
// Checks magic, header checksum, version and flags. On failure returns a
// message-free kCorruption; the caller adds file and offset.
Status DecodeBatchHeader(const uint8_t in[kBatchHeaderBytes], BatchHeader* h);
// Trailer checksum over [0, length - 8). `batch` holds `length` bytes.
uint64_t BatchChecksum(const uint8_t* batch, size_t length);

// --- records
struct RecordView {
  uint32_t length = 0;
  uint16_t flags = 0;
  uint64_t version = 0;
  uint64_t position = 0;
  int64_t recorded_at_ns = 0;
  uint64_t prev_location = kNoLocation;
  EventId id{};
  std::string_view stream, type, metadata, payload;
};
inline size_t RecordSize(size_t stream, size_t type, size_t metadata, size_t payload) {
  return kRecordHeaderBytes + stream + type + metadata + payload;
}
// Writes a record at `out` (RecordSize(...) bytes) with its checksum.
void EncodeRecord(const RecordView& r, uint8_t* out);
// Rewrites position and recorded_at of an encoded record and its checksum.
void PatchRecord(uint8_t* record, uint64_t position, int64_t recorded_at_ns);
// Parses the fixed header only (no checksum check): enough to follow chains.
// `available` bytes are readable at `in`.
Status DecodeRecordHeader(const uint8_t* in, size_t available, RecordView* r);
// Parses and verifies a whole record (`available` >= its length).
Status DecodeRecord(const uint8_t* in, size_t available, RecordView* r);
RecordedEvent ToRecordedEvent(const RecordView& r);

// --- manifest
struct Manifest {
  uint32_t partitions = 0;
  uint64_t segment_bytes = 0;
  int64_t created_at_ns = 0;
};
void EncodeManifest(const Manifest& m, uint8_t out[kManifestBytes]);
Status DecodeManifest(const uint8_t in[kManifestBytes], const std::string& file, Manifest* m);

}  // namespace annal::format

namespace annal::format {
// Which partition holds a stream: XXH3-64 of its name modulo the partition
// count. Part of the on-disk contract: changing it strands existing streams.
uint32_t PartitionForStream(std::string_view stream, uint32_t partitions);
// The hash that identifies a stream in the stream table and segment
// indexes: XXH3-64 of its name with seed 1 (not the partition hash, whose
// low bits are equal for every stream of a partition).
uint64_t StreamHash(std::string_view stream);
// Tests only: keeps just the bits of `mask` of every StreamHash, so that
// streams collide as often as a test needs. Process-wide; set before
// opening a store.
void SetStreamHashMaskForTesting(uint64_t mask);
// 32 bits of a second hash of the name (XXH3-64 with seed 2): with
// StreamHash, 96 bits that tell streams apart without reading their names.
uint32_t StreamNameCheck(std::string_view stream);
// 32 bits of XXH3-64 of an event id: tells an append that cannot be a
// retry of the stream's last append from one that may be, without a read.
uint32_t EventIdCheck(const EventId& id);
}  // namespace annal::format
