#include "sealed.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>
// For ZSTD_c_literalCompressionMode, an experimental parameter of zstd
// 1.5. The frames it makes are standard ones any decoder reads.
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <algorithm>
#include <deque>
#include <cerrno>
#include <cstring>
#include <optional>

#include "annal/assert.h"
#include "segment.h"

namespace annal {

using format::Get32;
using format::Get64;
using format::kBlockEntryBytes;
using format::kSealedFooterBytes;
using format::kSegmentHeaderBytes;
using format::Put32;
using format::Put64;

namespace {

// Cache keys: blocks use their index (< 2^32), map pages 2^32 + their
// index, the page table the largest key.
constexpr uint64_t kPageCacheKey = uint64_t{1} << 32;
constexpr uint64_t kTableCacheKey = ~0ull;

// Byte offsets inside a page table row (sealed.h).
constexpr size_t kRowFirstOffset = 0, kRowFileOffset = 4, kRowChecksum = 8;
static_assert(kRowChecksum + 8 == format::kMapPageRowBytes);

// Byte offsets inside a block entry (sealed.h).
constexpr size_t kEntryLogicalOffset = 0, kEntryRawLength = 4, kEntryFileOffset = 8,
                 kEntryStoredLength = 16, kEntryBatchOffset = 20, kEntryFirstPosition = 24,
                 kEntryFirstRecordedAt = 32, kEntryChecksum = 40;
static_assert(kEntryChecksum + 8 == kBlockEntryBytes);
// Byte offsets inside the footer.
constexpr size_t kFooterVersion = 8, kFooterBlockCount = 12, kFooterMapOffset = 16,
                 kFooterDataEnd = 24, kFooterFirstPosition = 32, kFooterLastPosition = 40,
                 kFooterMapChecksum = 48, kFooterChecksum = 56;
static_assert(kFooterChecksum + 8 == kSealedFooterBytes);
static_assert(sizeof format::kSealedMagic == 8 && sizeof format::kSealedFooterMagic == 8);

struct Footer {
  uint32_t version = 0;
  uint32_t block_count = 0;
  uint64_t map_offset = 0, data_end = 0, first_position = 0, last_position = 0, map_checksum = 0;
};

Status CorruptAt(const std::string& path, uint64_t offset, const std::string& why) {
  return Status::Corruption(path + " at offset " + std::to_string(offset) + ": " + why);
}

std::string BlockName(uint32_t index, uint64_t logical_offset) {
  return "compressed block " + std::to_string(index) + " (log offset " +
         std::to_string(logical_offset) + ")";
}

void EncodeEntry(const BlockEntry& e, uint8_t* out) {
  Put32(out + kEntryLogicalOffset, e.logical_offset);
  Put32(out + kEntryRawLength, e.raw_length);
  Put64(out + kEntryFileOffset, e.file_offset);
  Put32(out + kEntryStoredLength, e.stored_length);
  Put32(out + kEntryBatchOffset, e.batch_offset);
  Put64(out + kEntryFirstPosition, e.first_position);
  Put64(out + kEntryFirstRecordedAt, static_cast<uint64_t>(e.first_recorded_at_ns));
  Put64(out + kEntryChecksum, e.checksum);
}

BlockEntry DecodeEntry(const uint8_t* in) {
  BlockEntry e;
  e.logical_offset = Get32(in + kEntryLogicalOffset);
  e.raw_length = Get32(in + kEntryRawLength);
  e.file_offset = Get64(in + kEntryFileOffset);
  e.stored_length = Get32(in + kEntryStoredLength);
  e.batch_offset = Get32(in + kEntryBatchOffset);
  e.first_position = Get64(in + kEntryFirstPosition);
  e.first_recorded_at_ns = static_cast<int64_t>(Get64(in + kEntryFirstRecordedAt));
  e.checksum = Get64(in + kEntryChecksum);
  return e;
}

void EncodeFooter(const Footer& f, uint8_t out[kSealedFooterBytes]) {
  std::memcpy(out, format::kSealedFooterMagic, 8);
  Put32(out + kFooterVersion, f.version);
  Put32(out + kFooterBlockCount, f.block_count);
  Put64(out + kFooterMapOffset, f.map_offset);
  Put64(out + kFooterDataEnd, f.data_end);
  Put64(out + kFooterFirstPosition, f.first_position);
  Put64(out + kFooterLastPosition, f.last_position);
  Put64(out + kFooterMapChecksum, f.map_checksum);
  Put64(out + kFooterChecksum, format::Checksum(out, kFooterChecksum));
}

// `at`: the footer's file offset, for messages.
Result<Footer> DecodeFooter(const uint8_t in[kSealedFooterBytes], const std::string& path,
                            uint64_t at) {
  if (std::memcmp(in, format::kSealedFooterMagic, 8) != 0)
    return CorruptAt(path, at, "not a sealed segment's footer (bad magic)");
  if (Get64(in + kFooterChecksum) != format::Checksum(in, kFooterChecksum))
    return CorruptAt(path, at, "sealed segment footer checksum mismatch");
  Footer f;
  f.version = Get32(in + kFooterVersion);
  if (f.version != 1 && f.version != format::kSealedVersion)
    return CorruptAt(path, at,
                     "sealed format version " + std::to_string(f.version) +
                         " is not supported (this build reads versions 1 and " +
                         std::to_string(format::kSealedVersion) + ")");
  f.block_count = Get32(in + kFooterBlockCount);
  f.map_offset = Get64(in + kFooterMapOffset);
  f.data_end = Get64(in + kFooterDataEnd);
  f.first_position = Get64(in + kFooterFirstPosition);
  f.last_position = Get64(in + kFooterLastPosition);
  f.map_checksum = Get64(in + kFooterMapChecksum);
  return f;
}

// Why entry `e` cannot follow a map that covers the log up to `next`, or
// "" when it can. Blocks lie in [64, map_offset) of the file.
std::string EntryProblem(const BlockEntry& e, uint64_t next, uint64_t data_end,
                         uint64_t map_offset) {
  if (e.logical_offset != next)
    return "starts at log offset " + std::to_string(e.logical_offset) + ", not at " +
           std::to_string(next);
  if (e.raw_length == 0 || e.raw_length > data_end - next)
    return "runs past the end of the sealed data";
  if (e.stored_length == 0 || e.file_offset < kSegmentHeaderBytes || e.file_offset > map_offset ||
      e.stored_length > map_offset - e.file_offset)
    return "has its stored bytes outside the file's block area";
  return "";
}

// Map pages and the page table. Entry i of the map lies in page
// i / page_entries; the table has one row per page: where the page's first
// block starts, in the log and in the file, and the checksum of its
// entries. The page's blocks end where the next row's start (the last
// page's at data_end and map_offset). A version 1 file has no table: its
// map is one page, the footer's map checksum its checksum, and the reader
// makes up the one row.
struct PageRow {
  uint32_t first = 0;       // logical offset of the page's first block
  uint32_t file_first = 0;  // its file offset (sealed files are < 4 GiB)
  uint64_t checksum = 0;
};

PageRow DecodeRow(const uint8_t* in) {
  return PageRow{Get32(in + kRowFirstOffset), Get32(in + kRowFileOffset), Get64(in + kRowChecksum)};
}

void EncodeRow(const PageRow& r, uint8_t* out) {
  Put32(out + kRowFirstOffset, r.first);
  Put32(out + kRowFileOffset, r.file_first);
  Put64(out + kRowChecksum, r.checksum);
}

// Of `bytes`, records of `stride` bytes whose u32 at `field` is a log
// offset that grows from record to record (page rows, or block entries),
// the last one starting at or before `offset`. The first starts at or before
// every offset asked for (verified when the records were loaded).
uint32_t LastStartingAtOrBefore(const std::vector<uint8_t>& bytes, size_t stride, size_t field,
                                uint64_t offset) {
  uint32_t lo = 0, hi = static_cast<uint32_t>(bytes.size() / stride);
  // The first record starting past `offset` is in [lo, hi].
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (Get32(bytes.data() + size_t{mid} * stride + field) <= offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  ANNAL_ASSERT(lo >= 1);
  return lo - 1;
}

struct ZstdFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// One decompression context per reading thread: creating one allocates
// more than a typical block.
ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, ZstdFree> dctx(ZSTD_createDCtx());
  return dctx.get();
}

// Reads block `index`, described by `e`, verifies and decompresses it.
Result<BlockCache::Bytes> LoadBlock(const std::string& path, int fd, const BlockEntry& e,
                                    uint32_t index) {
  std::vector<uint8_t> stored(e.stored_length);
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(fd, stored.data(), stored.size(), e.file_offset, path));
  if (format::Checksum(stored.data(), stored.size()) != e.checksum)
    return CorruptAt(path, e.file_offset,
                     BlockName(index, e.logical_offset) + " fails its checksum");
  ZSTD_DCtx* dctx = ThreadDCtx();
  if (dctx == nullptr) return Status::IoError("out of memory for a zstd decompression context");
  auto raw = std::make_shared<std::vector<uint8_t>>(e.raw_length);
  size_t n = ZSTD_decompressDCtx(dctx, raw->data(), raw->size(), stored.data(), stored.size());
  if (ZSTD_isError(n))
    return CorruptAt(
        path, e.file_offset,
        BlockName(index, e.logical_offset) + " does not decompress: " + ZSTD_getErrorName(n));
  if (n != e.raw_length)
    return CorruptAt(path, e.file_offset,
                     BlockName(index, e.logical_offset) + " decompresses to " + std::to_string(n) +
                         " bytes, not " + std::to_string(e.raw_length));
  return BlockCache::Bytes(std::move(raw));
}

}  // namespace

// --- reading
//
// A SealedSegment keeps only its footer's fields. The page table and the
// map pages live in the cache as their raw bytes, each checked once when
// loaded and searched in place, so what sealed segments hold in memory is
// bounded by the cache, and a read loads only the one page it needs.

Result<std::shared_ptr<SealedSegment>> SealedSegment::Open(const std::string& path,
                                                           const format::SegmentHeader& expected,
                                                           BlockCache* cache) {
  ANNAL_ASSERT(cache != nullptr);
  std::shared_ptr<SealedSegment> s(new SealedSegment());
  s->path_ = path;
  ANNAL_ASSIGN_OR_RETURN(s->fd_, fs::Open(path, O_RDONLY));
  ANNAL_ASSIGN_OR_RETURN(uint64_t size, fs::FileSize(s->fd_.get(), path));
  if (size < kSegmentHeaderBytes + kSealedFooterBytes)
    return Status::Corruption(path + ": shorter than a sealed segment's header and footer");
  uint8_t hb[kSegmentHeaderBytes];
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(s->fd_.get(), hb, sizeof hb, 0, path));
  format::SegmentHeader h;
  ANNAL_RETURN_IF_ERROR(format::DecodeSegmentHeader(hb, path, &h, format::kSealedMagic));
  if (h.segment_id != expected.segment_id || h.partition != expected.partition ||
      h.partitions != expected.partitions)
    return Status::Corruption(path + ": header names partition " + std::to_string(h.partition) +
                              " segment " + std::to_string(h.segment_id) +
                              ", not where the file lies");
  if (h.segment_bytes != expected.segment_bytes)
    return Status::Corruption(path + ": segment size differs from the store's manifest");

  const uint64_t footer_at = size - kSealedFooterBytes;
  uint8_t fb[kSealedFooterBytes];
  ANNAL_RETURN_IF_ERROR(fs::PreadExact(s->fd_.get(), fb, sizeof fb, footer_at, path));
  ANNAL_ASSIGN_OR_RETURN(Footer f, DecodeFooter(fb, path, footer_at));
  // Version 1: the map is one page and there is no table.
  const uint32_t page_entries =
      f.version == 1 ? std::max<uint32_t>(f.block_count, 1) : format::kMapPageEntries;
  const uint32_t pages = (f.block_count + page_entries - 1) / page_entries;
  const uint64_t map_bytes = uint64_t{f.block_count} * kBlockEntryBytes;
  const uint64_t table_bytes = f.version == 1 ? 0 : uint64_t{pages} * format::kMapPageRowBytes;
  if (f.map_offset < kSegmentHeaderBytes || f.map_offset > footer_at ||
      footer_at - f.map_offset != map_bytes + table_bytes)
    return CorruptAt(path, footer_at,
                     "the footer's block map (offset " + std::to_string(f.map_offset) + ", " +
                         std::to_string(f.block_count) +
                         " blocks) does not end where the footer starts");
  if (f.data_end < kSegmentHeaderBytes || f.data_end > h.segment_bytes)
    return CorruptAt(
        path, footer_at,
        "the footer's data end " + std::to_string(f.data_end) + " lies outside the segment");
  if (f.block_count > 0 && f.first_position > f.last_position)
    return CorruptAt(path, footer_at, "the footer's first position is past its last");
  if ((f.block_count == 0) != (f.data_end == kSegmentHeaderBytes))
    return CorruptAt(path, footer_at,
                     std::to_string(f.block_count) + " blocks cannot hold the log up to " +
                         std::to_string(f.data_end));
  s->version_ = f.version;
  s->data_end_ = f.data_end;
  s->first_position_ = f.first_position;
  s->last_position_ = f.last_position;
  s->map_offset_ = f.map_offset;
  s->map_checksum_ = f.map_checksum;
  s->block_count_ = f.block_count;
  s->page_entries_ = page_entries;
  s->pages_ = pages;
  s->stored_bytes_ = size;
  s->cache_ = cache;
  s->cache_id_ = BlockCache::NewFileId();
  // The page table lies just before the footer, most likely in the page
  // just read: load it now, rather than with a disk read of its own in the
  // middle of the first read of the segment. A damaged table is reported
  // then, by the reads that need it, not here.
  (void)s->Table();
  return s;
}

// The page table, checked against the footer's checksum: rows that cover
// [64, data_end) one after another.
Result<BlockCache::Bytes> SealedSegment::Table() const {
  return cache_->GetOrLoad(cache_id_, kTableCacheKey, [this]() -> Result<BlockCache::Bytes> {
    auto table = std::make_shared<std::vector<uint8_t>>(size_t{pages_} * format::kMapPageRowBytes);
    const uint64_t table_offset = map_offset_ + uint64_t{block_count_} * kBlockEntryBytes;
    if (version_ == 1) {
      if (pages_ == 1)
        EncodeRow(PageRow{static_cast<uint32_t>(kSegmentHeaderBytes),
                          static_cast<uint32_t>(kSegmentHeaderBytes), map_checksum_},
                  table->data());
      return BlockCache::Bytes(std::move(table));
    }
    ANNAL_RETURN_IF_ERROR(fs::PreadExact(fd_.get(), table->data(), table->size(), table_offset, path_));
    if (format::Checksum(table->data(), table->size()) != map_checksum_)
      return CorruptAt(path_, table_offset, "block map page table fails its checksum");
    // Pages start one after another in the log and in the file: the first
    // at 64, each later one past the one before, all before the ends.
    PageRow prev{0, 0, 0};
    for (uint32_t p = 0; p < pages_; ++p) {
      const PageRow r = DecodeRow(table->data() + size_t{p} * format::kMapPageRowBytes);
      const bool ok = p == 0 ? r.first == kSegmentHeaderBytes && r.file_first == kSegmentHeaderBytes
                             : r.first > prev.first && r.file_first > prev.file_first;
      if (!ok || r.first >= data_end_ || r.file_first >= map_offset_)
        return CorruptAt(path_, table_offset + uint64_t{p} * format::kMapPageRowBytes,
                         "block map page " + std::to_string(p) + " starts at log offset " +
                             std::to_string(r.first) + ", file offset " + std::to_string(r.file_first) +
                             ", which do not follow the page before");
      prev = r;
    }
    return BlockCache::Bytes(std::move(table));
  });
}

// Where page `page`'s blocks start and end, in the log and in the file.
SealedSegment::PageSpan SealedSegment::Span(const std::vector<uint8_t>& table, uint32_t page) const {
  const PageRow row = DecodeRow(table.data() + size_t{page} * format::kMapPageRowBytes);
  PageSpan s{row.first, data_end_, row.file_first, map_offset_, row.checksum};
  if (page + 1 < pages_) {
    const PageRow next = DecodeRow(table.data() + size_t{page + 1} * format::kMapPageRowBytes);
    s.end = next.first;
    s.file_end = next.file_first;
  }
  return s;
}

// Page `page` of the block map, checked against its row: its checksum, and
// blocks that lie one after another over the page's span, in the log and in
// the file. `wanted`, when not 0, is the log offset the caller reads next:
// if the page has to come from the disk, the reader asks the kernel, at the
// same time, for the file bytes around where that block should lie (the
// page's blocks are spread evenly enough over its span for a guess), so a
// cold read waits for one disk round trip rather than two in a row.
Result<BlockCache::Bytes> SealedSegment::Page(const std::vector<uint8_t>& table, uint32_t page,
                                              uint64_t wanted) const {
  ANNAL_ASSERT(page < pages_);
  return cache_->GetOrLoad(cache_id_, kPageCacheKey + page, [&]() -> Result<BlockCache::Bytes> {
    const PageSpan span = Span(table, page);
    const uint32_t first = page * page_entries_;
    const uint32_t count = std::min(page_entries_, block_count_ - first);
    const uint64_t at = map_offset_ + uint64_t{first} * kBlockEntryBytes;
    auto bytes = std::make_shared<std::vector<uint8_t>>(size_t{count} * kBlockEntryBytes);
    if (!ReadIfCached(at, bytes.get())) {
      if (wanted >= span.first && wanted < span.end) PrefetchAround(span, count, wanted);
      ANNAL_RETURN_IF_ERROR(fs::PreadExact(fd_.get(), bytes->data(), bytes->size(), at, path_));
    }
    if (format::Checksum(bytes->data(), bytes->size()) != span.checksum)
      return CorruptAt(path_, at, "block map page " + std::to_string(page) + " fails its checksum");
    uint64_t next = span.first, file_next = span.file_first;
    for (uint32_t i = 0; i < count; ++i) {
      BlockEntry e = DecodeEntry(bytes->data() + size_t{i} * kBlockEntryBytes);
      std::string why = EntryProblem(e, next, span.end, map_offset_);
      if (why.empty() && e.file_offset != file_next)
        why = "starts at file offset " + std::to_string(e.file_offset) + ", not at " + std::to_string(file_next);
      if (!why.empty())
        return CorruptAt(path_, at + uint64_t{i} * kBlockEntryBytes,
                         "block map entry " + std::to_string(first + i) + " " + why);
      next += e.raw_length;
      file_next += e.stored_length;
    }
    if (next != span.end || file_next != span.file_end)
      return CorruptAt(path_, at,
                       "block map page " + std::to_string(page) + " covers log offsets up to " +
                           std::to_string(next) + " and file offsets up to " + std::to_string(file_next) +
                           ", not up to " + std::to_string(span.end) + " and " + std::to_string(span.file_end));
    return BlockCache::Bytes(std::move(bytes));
  });
}

// Fills `out` from file offset `at` if the kernel has those bytes in its
// page cache already; false (and nothing to rely on in `out`) if reading
// them would wait for the disk.
bool SealedSegment::ReadIfCached(uint64_t at, std::vector<uint8_t>* out) const {
  struct iovec v{out->data(), out->size()};
  ssize_t n = ::preadv2(fd_.get(), &v, 1, static_cast<off_t>(at), RWF_NOWAIT);
  return n == static_cast<ssize_t>(out->size());
}

// Starts reading, in the background, the file bytes where the block
// holding log offset `wanted` should lie within `span`: its place in
// proportion to the page's log and file ranges, give or take a block and
// 2 KiB. (Wider windows, two blocks and 4 KiB or four and 8 KiB, read
// more and were no faster: docs/benchmarks.md, "Scale".)
void SealedSegment::PrefetchAround(const PageSpan& span, uint32_t count, uint64_t wanted) const {
  const uint64_t file_bytes = span.file_end - span.file_first;
  const uint64_t guess = span.file_first + file_bytes * (wanted - span.first) / (span.end - span.first);
  const uint64_t margin = file_bytes / count + 2048;
  const uint64_t from = std::max(span.file_first, guess > margin ? guess - margin : 0);
  const uint64_t to = std::min(span.file_end, guess + margin);
  (void)::posix_fadvise(fd_.get(), static_cast<off_t>(from), static_cast<off_t>(to - from), POSIX_FADV_WILLNEED);
}

Result<BlockEntry> SealedSegment::Entry(uint32_t index) const {
  ANNAL_ASSERT(index < block_count_);
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes table, Table());
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes page, Page(*table, index / page_entries_));
  return DecodeEntry(page->data() + size_t{index % page_entries_} * kBlockEntryBytes);
}

Result<uint64_t> SealedSegment::LastBatchStartBefore(
    const std::function<bool(const BlockEntry&)>& before) const {
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes table, Table());
  // The first naming entry of page `page`, if any.
  auto first_named = [&](uint32_t page) -> Result<std::optional<BlockEntry>> {
    ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes entries, Page(*table, page));
    for (size_t at = 0; at < entries->size(); at += kBlockEntryBytes) {
      BlockEntry e = DecodeEntry(entries->data() + at);
      if (e.batch_offset != 0) return std::optional<BlockEntry>(e);
    }
    return std::optional<BlockEntry>();
  };
  // The last page whose first naming entry is before the target. Pages
  // that name no batch (inside a batch longer than a page) are passed over
  // forward.
  std::optional<uint32_t> found;
  uint32_t lo = 0, hi = pages_;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    uint32_t page = mid;
    std::optional<BlockEntry> named;
    for (; page < hi && !named; ++page) {
      ANNAL_ASSIGN_OR_RETURN(named, first_named(page));
    }
    if (named && before(*named)) {
      found = page - 1;
      lo = page;
    } else {
      hi = mid;
    }
  }
  if (!found) return uint64_t{0};
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes entries, Page(*table, *found));
  uint64_t last = 0;
  for (size_t at = 0; at < entries->size(); at += kBlockEntryBytes) {
    BlockEntry e = DecodeEntry(entries->data() + at);
    if (e.batch_offset == 0) continue;
    if (!before(e)) break;
    last = e.batch_offset;
  }
  return last;
}

Result<std::shared_ptr<const std::vector<BlockEntry>>> SealedSegment::Blocks() const {
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes table, Table());
  auto blocks = std::make_shared<std::vector<BlockEntry>>();
  blocks->reserve(block_count_);
  for (uint32_t p = 0; p < pages_; ++p) {
    ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes page, Page(*table, p));
    for (size_t at = 0; at < page->size(); at += kBlockEntryBytes)
      blocks->push_back(DecodeEntry(page->data() + at));
  }
  ANNAL_ASSERT(blocks->size() == block_count_);
  return std::shared_ptr<const std::vector<BlockEntry>>(std::move(blocks));
}

Result<BlockCache::Bytes> SealedSegment::Block(uint32_t index) const {
  ANNAL_ASSIGN_OR_RETURN(const BlockEntry e, Entry(index));
  return CachedBlock(e, index);
}

// Block `index`, described by `e`: from the cache, or read, verified and
// decompressed into it.
Result<BlockCache::Bytes> SealedSegment::CachedBlock(const BlockEntry& e, uint32_t index) const {
  return cache_->GetOrLoad(cache_id_, index, [&] { return LoadBlock(path_, fd_.get(), e, index); });
}

Result<size_t> SealedSegment::ReadSome(uint64_t offset, size_t len, uint8_t* out) const {
  if (offset < kSegmentHeaderBytes)
    return CorruptAt(path_, offset, "read before the start of the sealed data");
  if (offset > data_end_ || len > data_end_ - offset)
    return CorruptAt(path_, offset, "read past the end of the sealed data");
  if (len == 0) return size_t{0};
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes table, Table());
  // The table was verified to cover [64, data_end) and each page its row's
  // range, so `offset` lies in the page and block found.
  const uint32_t page = LastStartingAtOrBefore(*table, format::kMapPageRowBytes, kRowFirstOffset, offset);
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes entries, Page(*table, page, offset));
  const uint32_t i = LastStartingAtOrBefore(*entries, kBlockEntryBytes, kEntryLogicalOffset, offset);
  const BlockEntry e = DecodeEntry(entries->data() + size_t{i} * kBlockEntryBytes);
  ANNAL_ASSIGN_OR_RETURN(BlockCache::Bytes raw, CachedBlock(e, page * page_entries_ + i));
  ANNAL_ASSERT(raw->size() == e.raw_length && offset >= e.logical_offset &&
               offset < e.logical_offset + uint64_t{e.raw_length});
  const size_t in_block = static_cast<size_t>(offset - e.logical_offset);
  const size_t n = std::min(len, raw->size() - in_block);
  std::memcpy(out, raw->data() + in_block, n);
  return n;
}

Status SealedSegment::Read(uint64_t offset, size_t len, uint8_t* out) const {
  // The first ReadSome checks the whole range, so a failed Read copies
  // nothing.
  do {
    ANNAL_ASSIGN_OR_RETURN(size_t n, ReadSome(offset, len, out));
    out += n;
    offset += n;
    len -= n;
  } while (len > 0);
  return Status::Ok();
}

// --- sealing

namespace {

// Compresses blocks into the temporary file, one after another from offset
// 64, and keeps their map for the end.
class BlockWriter {
 public:
  BlockWriter(const std::string& tmp, int fd, const std::string& segment_path)
      : tmp_(tmp), fd_(fd), segment_path_(segment_path) {}

  Status Init(const SealOptions& options) {
    cctx_.reset(ZSTD_createCCtx());
    dctx_.reset(ZSTD_createDCtx());
    if (!cctx_ || !dctx_)
      return Status::IoError("out of memory for zstd contexts sealing " + segment_path_);
    size_t r = ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_compressionLevel, options.zstd_level);
    if (ZSTD_isError(r))
      return Status::InvalidArgument("zstd level " + std::to_string(options.zstd_level) + ": " +
                                     ZSTD_getErrorName(r));
    // Raw literals: a small block's Huffman table costs more to rebuild at
    // every read than the bytes it saves are worth. A zstd that no longer
    // knows the parameter refuses it; the literals are then coded, which is
    // only slower to read.
    if (!options.compress_literals)
      (void)ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_literalCompressionMode, ZSTD_ps_disable);
    return Status::Ok();
  }

  // Writes one block: the log bytes `raw` from `logical_offset`.
  Status Add(const std::vector<uint8_t>& raw, uint64_t logical_offset, uint64_t batch_offset,
             uint64_t first_position, int64_t first_recorded_at_ns);
  // Writes block map and footer after the blocks and fsyncs the file.
  Result<SealResult> Finish(uint64_t data_end, uint64_t first_position, uint64_t last_position);

 private:
  Status CompressionError(uint64_t logical_offset, const std::string& why) const {
    return Status::IoError("sealing " + segment_path_ + ": the block at log offset " +
                           std::to_string(logical_offset) + " " + why);
  }

  const std::string tmp_;
  const int fd_;
  const std::string segment_path_;
  std::unique_ptr<ZSTD_CCtx, ZstdFree> cctx_;
  std::unique_ptr<ZSTD_DCtx, ZstdFree> dctx_;
  std::vector<uint8_t> compressed_, round_trip_;
  std::vector<BlockEntry> entries_;
  uint64_t next_file_offset_ = kSegmentHeaderBytes;
  uint64_t written_back_ = 0;  // bytes before this are on their way to the device
};

Status BlockWriter::Add(const std::vector<uint8_t>& raw, uint64_t logical_offset, uint64_t batch_offset,
                        uint64_t first_position, int64_t first_recorded_at_ns) {
  ANNAL_ASSERT(!raw.empty() && raw.size() <= UINT32_MAX && logical_offset <= UINT32_MAX);
  compressed_.resize(ZSTD_compressBound(raw.size()));
  size_t n = ZSTD_compress2(cctx_.get(), compressed_.data(), compressed_.size(), raw.data(), raw.size());
  if (ZSTD_isError(n))
    return CompressionError(logical_offset,
                            std::string("does not compress: ") + ZSTD_getErrorName(n));
  if (n > UINT32_MAX) return CompressionError(logical_offset, "compresses to more than 4 GiB");
  // Pair check: the frame must give back exactly the bytes verified before.
  round_trip_.resize(raw.size());
  size_t back = ZSTD_decompressDCtx(dctx_.get(), round_trip_.data(), round_trip_.size(),
                                    compressed_.data(), n);
  if (ZSTD_isError(back) || back != raw.size() ||
      std::memcmp(round_trip_.data(), raw.data(), raw.size()) != 0)
    return CompressionError(logical_offset, "does not decompress to the bytes compressed");
  BlockEntry e;
  e.logical_offset = static_cast<uint32_t>(logical_offset);
  e.raw_length = static_cast<uint32_t>(raw.size());
  e.file_offset = next_file_offset_;
  e.stored_length = static_cast<uint32_t>(n);
  e.batch_offset = static_cast<uint32_t>(batch_offset);
  e.first_position = first_position;
  e.first_recorded_at_ns = first_recorded_at_ns;
  e.checksum = format::Checksum(compressed_.data(), n);
  ANNAL_RETURN_IF_ERROR(fs::PwriteAll(fd_, compressed_.data(), n, next_file_offset_, tmp_));
  next_file_offset_ += n;
  entries_.push_back(e);
  return fs::WriteBackGradually(fd_, tmp_, next_file_offset_, &written_back_);
}

Result<SealResult> BlockWriter::Finish(uint64_t data_end, uint64_t first_position,
                                       uint64_t last_position) {
  // The map, then its page table: one row per kMapPageEntries entries.
  const size_t pages = (entries_.size() + format::kMapPageEntries - 1) / format::kMapPageEntries;
  const size_t map_bytes = entries_.size() * kBlockEntryBytes;
  std::vector<uint8_t> map(map_bytes + pages * format::kMapPageRowBytes);
  for (size_t i = 0; i < entries_.size(); ++i)
    EncodeEntry(entries_[i], map.data() + i * kBlockEntryBytes);
  for (size_t p = 0; p < pages; ++p) {
    const size_t first = p * format::kMapPageEntries;
    const size_t count = std::min<size_t>(format::kMapPageEntries, entries_.size() - first);
    ANNAL_ASSERT(entries_[first].file_offset <= UINT32_MAX);
    PageRow row{entries_[first].logical_offset, static_cast<uint32_t>(entries_[first].file_offset),
                format::Checksum(map.data() + first * kBlockEntryBytes, count * kBlockEntryBytes)};
    EncodeRow(row, map.data() + map_bytes + p * format::kMapPageRowBytes);
  }
  Footer f;
  f.version = format::kSealedVersion;
  f.block_count = static_cast<uint32_t>(entries_.size());
  f.map_offset = next_file_offset_;
  f.data_end = data_end;
  f.first_position = first_position;
  f.last_position = last_position;
  f.map_checksum = format::Checksum(map.data() + map_bytes, map.size() - map_bytes);
  uint8_t footer[kSealedFooterBytes];
  EncodeFooter(f, footer);
  ANNAL_RETURN_IF_ERROR(fs::PwriteAll(fd_, map.data(), map.size(), f.map_offset, tmp_));
  ANNAL_RETURN_IF_ERROR(fs::PwriteAll(fd_, footer, sizeof footer, f.map_offset + map.size(), tmp_));
  ANNAL_RETURN_IF_ERROR(fs::Fdatasync(fd_, tmp_));
  SealResult r;
  r.raw_bytes = data_end - kSegmentHeaderBytes;
  r.stored_bytes = f.map_offset + map.size() + sizeof footer;
  r.blocks = f.block_count;
  return r;
}

Status CheckCancelled(const SealOptions& options, const std::string& path) {
  if (options.cancelled && options.cancelled())
    return Status::Unavailable("sealing " + path + " was cancelled");
  return Status::Ok();
}

// The batch at `offset` may be sealed: whole, verified, inside the data and
// after the batch before it (whose last position is `prev_last`).
Status VerifyBatch(const SegmentFile& seg, uint64_t offset, uint64_t data_end, const BatchCheck& c,
                   const format::BatchHeader& h, const std::vector<uint8_t>& batch,
                   std::optional<uint64_t> prev_last) {
  if (c.kind == BatchCheck::kEnd)
    return CorruptionAt(seg, offset,
                        "the segment's data ends here, before " + std::to_string(data_end));
  if (c.kind != BatchCheck::kValid) return CorruptionAt(seg, offset, "refusing to seal: " + c.why);
  if (offset + h.length > data_end)
    return CorruptionAt(seg, offset, "batch runs past the data end " + std::to_string(data_end));
  if (prev_last && h.first_position <= *prev_last)
    return CorruptionAt(seg, offset, "batch positions do not follow the previous batch's");
  return ForEachRecord(seg, offset, batch.data(), h,
                       [](const format::RecordView&, uint32_t) { return Status::Ok(); });
}

// What the segment holds, for the sealed header: its own header, checked.
// Also checks that nothing follows `data_end`, so no batch is left out.
Result<format::SegmentHeader> ReadSegmentHeader(const SegmentFile& seg, uint64_t data_end) {
  uint8_t buf[kSegmentHeaderBytes];
  ANNAL_RETURN_IF_ERROR(seg.Read(0, sizeof buf, buf));
  format::SegmentHeader h;
  ANNAL_RETURN_IF_ERROR(format::DecodeSegmentHeader(buf, seg.path, &h));
  if (h.segment_id != seg.id)
    return CorruptionAt(seg, 0, "header names segment " + std::to_string(h.segment_id));
  std::vector<uint8_t> batch;
  format::BatchHeader bh;
  ANNAL_ASSIGN_OR_RETURN(BatchCheck end, CheckBatchAt(seg, data_end, &batch, &bh));
  if (end.kind != BatchCheck::kEnd)
    return CorruptionAt(seg, data_end, "the segment's data goes on past the end given for sealing");
  return h;
}

// Verifies the batches of [64, data_end) and writes the log as blocks of
// `block_bytes` (the last may be shorter). Blocks cut through batches: a
// read then decompresses at most a block's worth around what it needs,
// however large group commit made the batches. Each block names the first
// batch that starts in it, for scans by position or time. Returns the first
// and last position.
Result<std::pair<uint64_t, uint64_t>> WriteBlocks(const SegmentFile& seg, uint64_t data_end,
                                                  const SealOptions& options, BlockWriter* w) {
  struct BatchStart {
    uint64_t offset, position;
    int64_t recorded_at_ns;
  };
  std::vector<uint8_t> batch, pending, block;
  size_t pending_head = 0;                       // bytes of `pending` already written
  uint64_t pending_offset = kSegmentHeaderBytes;  // log offset of pending[pending_head]
  std::deque<BatchStart> starts;                 // batches starting at or after pending_offset
  std::optional<uint64_t> first, last;
  ANNAL_ASSIGN_OR_RETURN(auto reader, SequentialSegmentReader::Open(seg));
  SegmentReadFn read = [&reader](uint64_t at, size_t len, uint8_t* out) { return reader->Read(at, len, out); };
  auto cut = [&](size_t n) -> Status {
    ANNAL_RETURN_IF_ERROR(CheckCancelled(options, seg.path));
    while (!starts.empty() && starts.front().offset < pending_offset) starts.pop_front();
    BatchStart named{0, 0, 0};
    if (!starts.empty() && starts.front().offset < pending_offset + n) named = starts.front();
    block.assign(pending.begin() + static_cast<ptrdiff_t>(pending_head),
                 pending.begin() + static_cast<ptrdiff_t>(pending_head + n));
    ANNAL_RETURN_IF_ERROR(w->Add(block, pending_offset, named.offset, named.position, named.recorded_at_ns));
    pending_head += n;
    pending_offset += n;
    if (pending_head > pending.size() / 2) {
      pending.erase(pending.begin(), pending.begin() + static_cast<ptrdiff_t>(pending_head));
      pending_head = 0;
    }
    return Status::Ok();
  };
  for (uint64_t offset = kSegmentHeaderBytes; offset < data_end;) {
    format::BatchHeader h;
    ANNAL_ASSIGN_OR_RETURN(BatchCheck c, CheckBatchAt(seg, offset, read, &batch, &h));
    ANNAL_RETURN_IF_ERROR(VerifyBatch(seg, offset, data_end, c, h, batch, last));
    starts.push_back(BatchStart{offset, h.first_position, h.recorded_at_ns});
    pending.insert(pending.end(), batch.begin(), batch.end());
    if (!first) first = h.first_position;
    last = h.first_position + h.count - 1;
    offset += h.length;
    while (pending.size() - pending_head >= options.block_bytes) ANNAL_RETURN_IF_ERROR(cut(options.block_bytes));
  }
  if (pending.size() > pending_head) ANNAL_RETURN_IF_ERROR(cut(pending.size() - pending_head));
  return std::pair<uint64_t, uint64_t>(first.value_or(0), last.value_or(0));
}

// Reads back what was written, through the reader's own checks of header,
// footer and block map, before it may replace the segment.
Status VerifySealedFile(const std::string& tmp, const format::SegmentHeader& h, const SealResult& r,
                        uint64_t data_end) {
  BlockCache no_cache(0);
  ANNAL_ASSIGN_OR_RETURN(auto sealed, SealedSegment::Open(tmp, h, &no_cache));
  ANNAL_ASSIGN_OR_RETURN(auto blocks, sealed->Blocks());
  if (sealed->data_end() != data_end || sealed->stored_bytes() != r.stored_bytes ||
      blocks->size() != r.blocks)
    return Status::IoError(tmp + ": reads back differently from what was written");
  return Status::Ok();
}

Result<SealResult> WriteSealedFile(const SegmentFile& seg, uint64_t data_end,
                                   const std::string& tmp, const SealOptions& options) {
  ANNAL_ASSIGN_OR_RETURN(format::SegmentHeader h, ReadSegmentHeader(seg, data_end));
  ANNAL_ASSIGN_OR_RETURN(fs::Fd fd, fs::Open(tmp, O_RDWR | O_CREAT | O_TRUNC));
  uint8_t header[kSegmentHeaderBytes];
  format::EncodeSegmentHeader(h, header, format::kSealedMagic);
  ANNAL_RETURN_IF_ERROR(fs::PwriteAll(fd.get(), header, sizeof header, 0, tmp));
  BlockWriter w(tmp, fd.get(), seg.path);
  ANNAL_RETURN_IF_ERROR(w.Init(options));
  ANNAL_ASSIGN_OR_RETURN(auto positions, WriteBlocks(seg, data_end, options, &w));
  ANNAL_ASSIGN_OR_RETURN(SealResult r, w.Finish(data_end, positions.first, positions.second));
  ANNAL_RETURN_IF_ERROR(VerifySealedFile(tmp, h, r, data_end));
  ANNAL_RETURN_IF_ERROR(CheckCancelled(options, seg.path));
  return r;
}

}  // namespace

Result<SealResult> SealSegment(const SegmentFile& segment, uint64_t data_end,
                               const std::string& dir, const SealOptions& options) {
  ANNAL_ASSERT(!segment.sealed);
  ANNAL_ASSERT(data_end >= kSegmentHeaderBytes && data_end <= segment.size_bytes &&
               data_end <= UINT32_MAX);
  ANNAL_ASSERT(options.block_bytes > 0);
  const std::string tmp = segment.path + ".tmp";
  Result<SealResult> r = WriteSealedFile(segment, data_end, tmp, options);
  if (r.ok()) {
    if (::rename(tmp.c_str(), segment.path.c_str()) == 0) {
      // The rename is done: the segment is sealed even if this sync fails,
      // and there is no temporary file left to remove.
      ANNAL_RETURN_IF_ERROR(fs::SyncDir(dir));
      return r;
    }
    r = Status::FromErrno(errno, "rename " + tmp + " to " + segment.path);
  }
  (void)::unlink(tmp.c_str());  // best effort; recovery removes it otherwise
  return r;
}

}  // namespace annal
