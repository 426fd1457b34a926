// Fuzzes the sealed segment reader (sealed.h) with arbitrary bytes standing
// for a sealed segment file.
//
// Each input is written to segment-00000000.log in a scratch directory of
// this process and opened as partition 0's segment 0 of a one-partition
// store with the smallest segment size (limits::kMinSegmentBytes; the seeds
// are made with it). When it opens, its block map, its first blocks and a
// few ranges of the log are read. Errors are fine; a crash, a hang or an
// allocation that neither the file's size nor the segment size bounds is
// not.
//
// Each input is tried twice: as given, and with every checksum it carries
// (header, each block's, each map page's and the page table's, footer)
// recomputed where the footer
// places it inside the input, so the fuzzer gets past checksums it cannot
// forge.
//
// Reads are checked against the blocks they come from (a pair assertion),
// and reads outside [64, data_end) must fail.
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "annal/assert.h"
#include "fuzz_files.h"
#include "annal/limits.h"
#include "block_cache.h"
#include "format.h"
#include "sealed.h"

namespace {

namespace format = annal::format;
using annal::BlockEntry;
using annal::SealedSegment;
using format::Get32;
using format::Get64;
using format::kBlockEntryBytes;
using format::kSealedFooterBytes;
using format::kSegmentHeaderBytes;
using format::Put64;

constexpr size_t kCacheBytes = 1024 * 1024;
constexpr uint32_t kMaxBlocks = 64;     // blocks read per input
constexpr size_t kMaxReadBytes = 4096;  // bytes per Read

// A directory of this process's own, made once and removed at exit.
const std::string& Dir() {
  static annal::fuzz::ScratchDir dir("annal-fuzz-sealed");
  return dir.path();
}

using annal::fuzz::WriteFile;

// Reads [offset, offset + len) and, when it succeeds and the blocks are at
// hand, compares it with the blocks' bytes.
void CheckRead(const SealedSegment& s, const std::vector<BlockEntry>* blocks, uint64_t offset,
               size_t len) {
  ANNAL_ASSERT(offset >= kSegmentHeaderBytes && offset + len <= s.data_end());
  std::vector<uint8_t> out(len);
  if (!s.Read(offset, len, out.data()).ok() || blocks == nullptr) return;
  // The map covers [64, data_end) contiguously (Blocks() verified it).
  size_t done = 0;
  for (uint32_t i = 0; i < blocks->size() && done < len; ++i) {
    const BlockEntry& e = (*blocks)[i];
    const uint64_t at = offset + done;
    if (at >= uint64_t{e.logical_offset} + e.raw_length) continue;
    ANNAL_ASSERT(at >= e.logical_offset);
    auto raw = s.Block(i);
    ANNAL_ASSERT(raw.ok());  // Read just decompressed it
    ANNAL_ASSERT((*raw)->size() == e.raw_length);
    const size_t in_block = static_cast<size_t>(at - e.logical_offset);
    const size_t n = std::min(len - done, (*raw)->size() - in_block);
    ANNAL_ASSERT(std::memcmp(out.data() + done, (*raw)->data() + in_block, n) == 0);
    done += n;
  }
  ANNAL_ASSERT(done == len);
}

void CheckBlocks(const SealedSegment& s, const std::vector<BlockEntry>& blocks) {
  ANNAL_ASSERT(blocks.size() == s.block_count());
  uint64_t next = kSegmentHeaderBytes;
  for (const BlockEntry& e : blocks) {
    ANNAL_ASSERT(e.logical_offset == next && e.raw_length > 0);
    ANNAL_ASSERT(e.file_offset >= kSegmentHeaderBytes &&
                 e.file_offset + e.stored_length <= s.stored_bytes());
    next += e.raw_length;
  }
  ANNAL_ASSERT(next == s.data_end());
  for (uint32_t i = 0; i < blocks.size() && i < kMaxBlocks; ++i) {
    // One entry, from its page, is the map's entry.
    auto entry = s.Entry(i);
    ANNAL_ASSERT(entry.ok() && entry->logical_offset == blocks[i].logical_offset &&
                 entry->checksum == blocks[i].checksum);
    auto raw = s.Block(i);
    if (raw.ok()) ANNAL_ASSERT((*raw)->size() == blocks[i].raw_length);
  }
}

// The binary search over map pages agrees with a walk over the map, for a
// few targets. Only when the positions named never decrease along the map,
// as the search requires (a crafted map need not keep to that; the search
// must still not crash or read outside the map).
void CheckLastBatchStart(const SealedSegment& s, const std::vector<BlockEntry>& blocks) {
  std::vector<uint64_t> targets = {0, UINT64_MAX};
  bool ordered = true;
  uint64_t prev = 0;
  for (const BlockEntry& b : blocks) {
    if (b.batch_offset == 0) continue;
    ordered = ordered && b.first_position >= prev;
    prev = b.first_position;
    if (targets.size() < 6) targets.push_back(b.first_position);
  }
  for (uint64_t target : targets) {
    auto got = s.LastBatchStartBefore([&](const BlockEntry& b) { return b.first_position <= target; });
    if (!ordered || !got.ok()) continue;
    uint64_t walk = 0;
    for (const BlockEntry& b : blocks) {
      if (b.batch_offset == 0) continue;
      if (b.first_position > target) break;
      walk = b.batch_offset;
    }
    ANNAL_ASSERT(*got == walk);
  }
}

void Check(std::string_view bytes) {
  const std::string path = Dir() + "/" + format::SegmentFileName(0);
  WriteFile(path, bytes);
  annal::BlockCache cache(kCacheBytes);
  const format::SegmentHeader expected{0, 0, annal::limits::kMinSegmentBytes, 1};
  auto opened = SealedSegment::Open(path, expected, &cache);
  if (!opened.ok()) return;
  const SealedSegment& s = **opened;
  ANNAL_ASSERT(s.data_end() >= kSegmentHeaderBytes && s.data_end() <= expected.segment_bytes);
  ANNAL_ASSERT(s.stored_bytes() == bytes.size());

  auto blocks = s.Blocks();
  if (blocks.ok()) {
    CheckBlocks(s, **blocks);
    CheckLastBatchStart(s, **blocks);
  }
  const std::vector<BlockEntry>* map = blocks.ok() ? blocks->get() : nullptr;

  // Reads outside the data fail whatever the blocks hold.
  uint8_t byte;
  ANNAL_ASSERT(!s.Read(kSegmentHeaderBytes - 1, 1, &byte).ok());
  ANNAL_ASSERT(!s.Read(s.data_end(), 1, &byte).ok());
  ANNAL_ASSERT(s.Read(s.data_end(), 0, &byte).ok());

  const uint64_t data = s.data_end() - kSegmentHeaderBytes;
  if (data == 0) return;
  const size_t len = static_cast<size_t>(std::min<uint64_t>(data, kMaxReadBytes));
  CheckRead(s, map, kSegmentHeaderBytes, len);  // the start
  CheckRead(s, map, s.data_end() - len, len);   // the end
  CheckRead(s, map, kSegmentHeaderBytes + data / 2, 1);
  // Across the first block boundary.
  if (map != nullptr && map->size() >= 2) {
    const uint64_t boundary = (*map)[1].logical_offset;
    const uint64_t from = std::max<uint64_t>(kSegmentHeaderBytes, boundary - 8);
    CheckRead(s, map, from, static_cast<size_t>(std::min<uint64_t>(16, s.data_end() - from)));
  }
}

// Recomputes, innermost first, the checksums of `s` that its footer places
// inside it: each block's stored bytes (in its map entry), each map page's
// (in its row of the page table; version 2) and the table's (in the
// footer), or the whole map's (in the footer; version 1), the footer's own,
// and the header's.
void FixChecksums(std::string* s) {
  auto* p = reinterpret_cast<uint8_t*>(s->data());
  const uint64_t size = s->size();
  Put64(p + format::kSegmentHeaderChecksumOffset,
        format::Checksum(p, format::kSegmentHeaderChecksumOffset));
  uint8_t* footer = p + size - kSealedFooterBytes;
  const uint64_t block_count = Get32(footer + 12), map_offset = Get64(footer + 16);
  const uint64_t footer_at = size - kSealedFooterBytes;
  if (map_offset <= footer_at && block_count <= (footer_at - map_offset) / kBlockEntryBytes) {
    for (uint64_t i = 0; i < block_count; ++i) {
      uint8_t* e = p + map_offset + i * kBlockEntryBytes;
      const uint64_t file_offset = Get64(e + 8), stored = Get32(e + 16);
      if (file_offset <= size && stored <= size - file_offset)
        Put64(e + 40, format::Checksum(p + file_offset, stored));
    }
    const uint64_t map_bytes = block_count * kBlockEntryBytes;
    const uint64_t pages = (block_count + format::kMapPageEntries - 1) / format::kMapPageEntries;
    const uint64_t table_at = map_offset + map_bytes;
    if (Get32(footer + 8) == 1) {
      Put64(footer + 48, format::Checksum(p + map_offset, map_bytes));
    } else if (pages <= (footer_at - table_at) / format::kMapPageRowBytes) {
      for (uint64_t page = 0; page < pages; ++page) {
        const uint64_t first = page * format::kMapPageEntries;
        const uint64_t count = std::min<uint64_t>(format::kMapPageEntries, block_count - first);
        Put64(p + table_at + page * format::kMapPageRowBytes + 8,
              format::Checksum(p + map_offset + first * kBlockEntryBytes, count * kBlockEntryBytes));
      }
      Put64(footer + 48, format::Checksum(p + table_at, pages * format::kMapPageRowBytes));
    }
  }
  Put64(footer + 56, format::Checksum(footer, 56));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  Check(input);

  if (size < kSegmentHeaderBytes + kSealedFooterBytes) return 0;
  std::string fixed(input);
  FixChecksums(&fixed);
  if (fixed != input) Check(fixed);
  return 0;
}
