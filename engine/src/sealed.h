// Sealed segments: a full segment recompressed with zstd.
//
// A partition's segment is written uncompressed (segment.h). Once it is
// full and a later segment has taken over, a background thread seals it:
// its log is cut into blocks of SealOptions::block_bytes (the last may be
// shorter; blocks cut through batches and records, so that a read
// decompresses at most about a block around what it needs however large
// group commit made the batches), each compressed as one independent zstd
// frame, and written with a block map and a footer to `segment-NNNNNNNN.log.tmp`, which is fsynced,
// renamed over the segment file and the directory fsynced. A crash before
// the rename leaves the old file and a temporary one that recovery removes;
// after it, the sealed file. Every batch is verified before it is copied.
//
// The log reads the same sealed or not: offsets (and so locations and
// back-pointers) are those of the segment as written. Read() finds the
// block holding an offset in the block map, verifies the block's checksum,
// decompresses it (through the shared BlockCache) and copies.
//
//   sealed file := sealed_header block* block_map footer
//   sealed_header (64 bytes): the segment header's layout (format.h) with
//     magic "ANNALSLD"
//   block        := one zstd frame of the log bytes
//                   [logical_offset, logical_offset + raw_length)
//   block_map    := block_entry{block_count} page_row{ceil(block_count / 64)}
//   block_entry (48 bytes)
//   +----------------+------------+-------------+---------------+--------------+
//   | logical_offset | raw_length | file_offset | stored_length | batch_offset |
//   | 4              | 4          | 8           | 4             | 4            |
//   +----------------+------------+-------------+---------------+--------------+
//   | first_position | first_recorded_at_ns | checksum (XXH3-64 of the stored frame) |
//   | 8              | 8                    | 8                                      |
//   +----------------+----------------------+----------------------------------------+
//   batch_offset: the log offset of the first batch that starts in the
//   block, first_position and first_recorded_at_ns that batch's; all three
//   are 0 when no batch starts in the block (a batch larger than a block).
//   The map's entries are read in pages of 64 (kMapPageEntries), each
//   checked on its own, so a read loads 3 KiB of map, not the whole map.
//   page_row (16 bytes), one per page, the table after the last entry
//   +-----------+------------+------------------------------------------+
//   | first     | file_first | checksum (XXH3-64 of the page's entries)  |
//   | 4         | 4          | 8                                        |
//   +-----------+------------+------------------------------------------+
//   first, file_first: where the page's first block starts in the log and
//   in the file. Its blocks end where the next page's start (the last
//   page's at data_end and map_offset).
//   footer (64 bytes, the file's last)
//   +--------+---------+-------------+------------+----------+----------------+
//   | magic  | version | block_count | map_offset | data_end | first_position |
//   | 8      | 4       | 4           | 8          | 8        | 8              |
//   +--------+---------+-------------+------------+----------+----------------+
//   | last_position | map_checksum (XXH3-64 of the rows)  | footer_checksum (of [0, 56)) |
//   | 8             | 8                                   | 8                            |
//   +---------------+-------------------------------------+------------------------------+
//   Version 1 files (still read) have no page rows: map_checksum covers
//   the entries, which are read as one page.
//   footer magic "ANNALFTR". data_end: the end of the log's data (the first
//   logical offset after the last batch); blocks cover [64, data_end)
//   contiguously.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "annal/status.h"
#include "block_cache.h"
#include "format.h"
#include "fs.h"

namespace annal {

struct SegmentFile;

namespace format {
inline constexpr char kSealedMagic[8] = {'A', 'N', 'N', 'A', 'L', 'S', 'L', 'D'};
inline constexpr char kSealedFooterMagic[8] = {'A', 'N', 'N', 'A', 'L', 'F', 'T', 'R'};
inline constexpr uint32_t kSealedVersion = 2;
inline constexpr size_t kSealedFooterBytes = 64;
inline constexpr size_t kBlockEntryBytes = 48;
inline constexpr uint32_t kMapPageEntries = 64;
inline constexpr size_t kMapPageRowBytes = 16;
}  // namespace format

struct SealOptions {
  size_t block_bytes = 4 * 1024;
  int zstd_level = 3;
  // Off: literals are stored raw (zstd's literal compression mode
  // "disable"). Frames stay standard zstd either way.
  bool compress_literals = false;
  // Checked between blocks; sealing gives up (kUnavailable) when it returns
  // true, leaving the segment as it was.
  std::function<bool()> cancelled;
};

struct SealResult {
  uint64_t raw_bytes = 0;     // log bytes sealed: data_end - 64
  uint64_t stored_bytes = 0;  // size of the sealed file
  uint32_t blocks = 0;
};

struct BlockEntry {
  uint32_t logical_offset = 0;
  uint32_t raw_length = 0;
  uint64_t file_offset = 0;
  uint32_t stored_length = 0;
  uint32_t batch_offset = 0;  // the first batch starting in the block; 0: none does
  uint64_t first_position = 0;  // that batch's first position and commit time
  int64_t first_recorded_at_ns = 0;
  uint64_t checksum = 0;
};

// A sealed segment file, open for reading.
class SealedSegment {
 public:
  // Opens and verifies header and footer of the sealed file at `path`
  // (header fields must match `expected`, as for an unsealed segment). The
  // block map is read lazily, through `cache`. `cache` must outlive this.
  static Result<std::shared_ptr<SealedSegment>> Open(const std::string& path,
                                                     const format::SegmentHeader& expected,
                                                     BlockCache* cache);

  // Copies `len` log bytes at logical `offset` into `out`. kCorruption
  // naming the file and the block's file offset when a block fails its
  // checksum or does not decompress to its length; kCorruption too when
  // [offset, offset + len) is not inside [64, data_end).
  Status Read(uint64_t offset, size_t len, uint8_t* out) const;
  // Copies what the block holding `offset` has of [offset, offset + len):
  // at least one byte when len > 0, at most to the block's end. Returns the
  // bytes copied; the same errors as Read.
  Result<size_t> ReadSome(uint64_t offset, size_t len, uint8_t* out) const;

  // The whole block map (every page verified), from cached pages.
  Result<std::shared_ptr<const std::vector<BlockEntry>>> Blocks() const;
  // Entry `index` of the block map, from its cached page.
  Result<BlockEntry> Entry(uint32_t index) const;
  // The batch_offset of the last entry naming a batch (batch_offset != 0)
  // for which `before` holds, or 0 when none does. `before` must hold for
  // a prefix of the naming entries (it compares their first position or
  // commit time with a target, and both only grow along the map). Binary
  // search over the map's pages: a few page loads, not the whole map.
  Result<uint64_t> LastBatchStartBefore(const std::function<bool(const BlockEntry&)>& before) const;
  // The decompressed bytes of block `index`, cached.
  Result<BlockCache::Bytes> Block(uint32_t index) const;

  const std::string& path() const { return path_; }
  uint64_t data_end() const { return data_end_; }
  uint64_t first_position() const { return first_position_; }
  uint64_t last_position() const { return last_position_; }
  uint32_t block_count() const { return block_count_; }
  uint64_t stored_bytes() const { return stored_bytes_; }

 private:
  SealedSegment() = default;
  struct PageSpan {
    uint64_t first, end;            // log offsets of the page's blocks
    uint64_t file_first, file_end;  // where they lie in the file
    uint64_t checksum;              // of the page's entries
  };
  Result<BlockCache::Bytes> Table() const;
  PageSpan Span(const std::vector<uint8_t>& table, uint32_t page) const;
  Result<BlockCache::Bytes> Page(const std::vector<uint8_t>& table, uint32_t page,
                                 uint64_t wanted = 0) const;
  bool ReadIfCached(uint64_t at, std::vector<uint8_t>* out) const;
  Result<BlockCache::Bytes> CachedBlock(const BlockEntry& e, uint32_t index) const;
  void PrefetchAround(const PageSpan& span, uint32_t count, uint64_t wanted) const;

  std::string path_;
  fs::Fd fd_;
  BlockCache* cache_ = nullptr;
  uint64_t cache_id_ = 0;
  uint64_t data_end_ = 0, first_position_ = 0, last_position_ = 0;
  uint64_t map_offset_ = 0, map_checksum_ = 0, stored_bytes_ = 0;
  uint32_t block_count_ = 0;
  uint32_t version_ = 0;
  uint32_t page_entries_ = 1;  // entries per map page (version 1: all of them)
  uint32_t pages_ = 0;
};

// Seals `segment` (unsealed, holding batches in [64, data_end)) in `dir`:
// verifies and compresses every batch, writes `<segment path>.tmp`, fsyncs
// it, renames it over the segment and fsyncs `dir`. On any failure the
// temporary file is removed and the segment is unchanged.
Result<SealResult> SealSegment(const SegmentFile& segment, uint64_t data_end, const std::string& dir,
                               const SealOptions& options);

}  // namespace annal
