// Sealed segments (sealed.h) and the block cache (block_cache.h). A real
// segment is written by the store once per suite; each test seals a fresh
// copy of it, reads it back against the original bytes, damages it, or
// reads it through a cache too small for it.
#include "sealed.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "annal/store.h"
#include "block_cache.h"
#include "format.h"
#include "fs.h"
#include "segment.h"
#include "test_util.h"

namespace annal {
namespace {

constexpr uint64_t kSegmentBytes = limits::kMinSegmentBytes;
constexpr size_t kBlockBytes = 4096;
// Blocks small enough for the fixture's map to need several pages.
constexpr size_t kPagedBlockBytes = 512;
constexpr uint32_t kPage = format::kMapPageEntries;
constexpr size_t kBigPayloadBytes = 50 * 1024;

std::string ReadFile(const std::string& path) {
  auto data = fs::ReadWholeFile(path);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  return data.ok() ? *data : std::string();
}

void WriteFile(const std::string& path, const std::string& data) {
  auto fd = fs::Open(path, O_WRONLY | O_CREAT | O_TRUNC);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  ASSERT_TRUE(fs::PwriteAll(fd->get(), data.data(), data.size(), 0, path).ok());
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::string data = ReadFile(path);
  ASSERT_LT(offset, data.size());
  data[offset] = static_cast<char>(data[offset] ^ 0x5a);
  WriteFile(path, data);
}

bool Contains(const Status& s, const std::string& part) {
  return s.message().find(part) != std::string::npos;
}

// An order event's body: JSON, about `bytes` long and as repetitive as
// real event bodies are.
std::string JsonPayload(uint64_t seed, size_t bytes) {
  std::string s = R"({"order":")" + std::to_string(seed) + R"(","lines":[)";
  for (uint64_t i = 0; s.size() < bytes; ++i)
    s += R"({"sku":"SKU-)" + std::to_string((seed + i) % 89) + R"(","qty":)" +
         std::to_string(i % 5 + 1) + R"(,"unit_price_cents":)" +
         std::to_string(100 + (seed * i) % 900) + R"(,"currency":"EUR"},)";
  s.back() = ']';
  return s + "}";
}

// What the suite's store wrote to its first segment.
struct WrittenSegment {
  struct Batch {
    uint64_t offset, first_position;
    uint32_t count;
  };
  std::string bytes;  // the whole file
  std::vector<Batch> batches;
  uint64_t data_end = 0;
};

format::SegmentHeader Expected() {
  format::SegmentHeader h;
  h.partition = 0;
  h.segment_id = 0;
  h.segment_bytes = kSegmentBytes;
  h.partitions = 1;
  return h;
}

// Walks `seg` from offset 64 to its first kEnd, checking every batch.
void WalkBatches(const SegmentFile& seg, WrittenSegment* out) {
  std::vector<uint8_t> buf;
  uint64_t offset = format::kSegmentHeaderBytes;
  for (;;) {
    format::BatchHeader h;
    auto c = CheckBatchAt(seg, offset, &buf, &h);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    if (c->kind == BatchCheck::kEnd) break;
    ASSERT_EQ(c->kind, BatchCheck::kValid) << "offset " << offset << ": " << c->why;
    out->batches.push_back({offset, h.first_position, h.count});
    offset += h.length;
  }
  out->data_end = offset;
}

// Appends events of varied sizes, a few of kBigPayloadBytes, until the
// first segment of the only partition is full, and returns that segment.
void WriteFullSegment(const std::string& store_dir, WrittenSegment* out) {
  Options o = testing::SmallOptions();
  o.partitions = 1;
  o.segment_size_bytes = kSegmentBytes;
  o.seal_segments = false;
  auto store = Store::Open(store_dir, o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::mt19937_64 rng(42);
  uint64_t appended_bytes = 0;
  for (uint64_t i = 0; appended_bytes < kSegmentBytes * 3 / 2;) {
    // A wave of concurrent appends, so batches hold one to several appends.
    const int wave = 1 + static_cast<int>(rng() % 6);
    std::mutex mu;
    std::condition_variable cv;
    int pending = wave;
    bool all_ok = true;
    for (int w = 0; w < wave; ++w, ++i) {
      std::vector<EventData> events;
      for (uint64_t n = 1 + rng() % 3; n > 0; --n) {
        size_t size = rng() % 150 == 0 ? kBigPayloadBytes : 40 + rng() % 700;
        events.push_back(testing::Event("OrderPlaced", JsonPayload(i, size),
                                        R"({"user":"u)" + std::to_string(i % 13) + R"("})"));
        appended_bytes += size;
      }
      (*store)->AppendAsync("order-" + std::to_string(i % 40), ExpectedVersion::Any(),
                            std::move(events), [&](Result<AppendResult> r) {
                              std::lock_guard lock(mu);
                              all_ok = all_ok && r.ok();
                              if (--pending == 0) cv.notify_all();
                            });
    }
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return pending == 0; });
    ASSERT_TRUE(all_ok);
  }
  ASSERT_TRUE((*store)->Close().ok());
  store->reset();

  std::string dir = fs::Join(store_dir, format::PartitionDirName(0));
  BlockCache cache(1 << 20);
  auto seg = OpenSegment(dir, 0, Expected(), &cache);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  ASSERT_EQ((*seg)->sealed, nullptr);
  WalkBatches(**seg, out);
  // Full: the next batch went to the next segment.
  ASSERT_GT(out->data_end, kSegmentBytes - 64 * 1024);
  out->bytes = ReadFile((*seg)->path);
  ASSERT_EQ(out->bytes.size(), kSegmentBytes);
}

class SealedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    written_ = new WrittenSegment;
    testing::TempDir store_dir("sealed-source");
    WriteFullSegment(store_dir.path(), written_);
  }
  static void TearDownTestSuite() {
    delete written_;
    written_ = nullptr;
  }

  // Each test gets its own copy of the written segment.
  void SetUp() override {
    ASSERT_FALSE(written_->bytes.empty()) << "the suite's segment was not written";
    ASSERT_TRUE(fs::CreateDir(dir_.path()).ok());
    ASSERT_TRUE(fs::CreateDir(Dir()).ok());
    WriteFile(Path(), written_->bytes);
  }

  std::string Dir() const { return fs::Join(dir_.path(), format::PartitionDirName(0)); }
  std::string Path() const { return fs::Join(Dir(), format::SegmentFileName(0)); }
  uint64_t DataEnd() const { return written_->data_end; }
  std::string Original(uint64_t offset, size_t len) const {
    return written_->bytes.substr(offset, len);
  }

  Result<std::shared_ptr<SegmentFile>> Open(BlockCache* cache) {
    return OpenSegment(Dir(), 0, Expected(), cache);
  }

  Result<SealResult> Seal(const SealOptions& options) {
    ANNAL_ASSIGN_OR_RETURN(auto seg, Open(&cache_));
    EXPECT_EQ(seg->sealed, nullptr);
    return SealSegment(*seg, DataEnd(), Dir(), options);
  }

  static SealOptions SmallBlocks() {
    SealOptions o;
    o.block_bytes = kBlockBytes;
    return o;
  }

  static SealOptions PagedBlocks() {
    SealOptions o;
    o.block_bytes = kPagedBlockBytes;
    return o;
  }

  // Opens the sealed segment and returns it with its block map.
  std::shared_ptr<SealedSegment> OpenSealed(BlockCache* cache, std::vector<BlockEntry>* blocks) {
    auto seg = Open(cache);
    EXPECT_TRUE(seg.ok()) << seg.status().ToString();
    if (!seg.ok() || !(*seg)->sealed) return nullptr;
    auto map = (*seg)->sealed->Blocks();
    EXPECT_TRUE(map.ok()) << map.status().ToString();
    if (map.ok()) *blocks = **map;
    return (*seg)->sealed;
  }

  // Reads [offset, offset + len) and compares it with the original bytes.
  void ExpectReadMatches(const SealedSegment& sealed, uint64_t offset, size_t len) {
    std::string got(len, '\0');
    Status s = sealed.Read(offset, len, reinterpret_cast<uint8_t*>(got.data()));
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(got == Original(offset, len))
        << "bytes differ in [" << offset << ", " << offset + len << ")";
  }

  static WrittenSegment* written_;
  testing::TempDir dir_{"sealed"};
  BlockCache cache_{64 << 20};
};

WrittenSegment* SealedTest::written_ = nullptr;

TEST_F(SealedTest, SealedSegmentReadsAsTheOriginalLog) {
  auto r = Seal(SmallBlocks());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->raw_bytes, DataEnd() - format::kSegmentHeaderBytes);
  EXPECT_EQ(r->stored_bytes, std::filesystem::file_size(Path()));
  EXPECT_FALSE(std::filesystem::exists(Path() + ".tmp"));
  ASSERT_EQ(ReadFile(Path()).substr(0, sizeof format::kSealedMagic),
            std::string(format::kSealedMagic, sizeof format::kSealedMagic));

  auto seg = Open(&cache_);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  ASSERT_NE((*seg)->sealed, nullptr);
  const SealedSegment& sealed = *(*seg)->sealed;
  EXPECT_EQ((*seg)->size_bytes, DataEnd());
  EXPECT_EQ(sealed.data_end(), DataEnd());
  EXPECT_EQ(sealed.block_count(), r->blocks);
  EXPECT_EQ(sealed.first_position(), written_->batches.front().first_position);
  const auto& last = written_->batches.back();
  EXPECT_EQ(sealed.last_position(), last.first_position + last.count - 1);

  auto blocks = sealed.Blocks();
  ASSERT_TRUE(blocks.ok()) << blocks.status().ToString();
  ASSERT_EQ((*blocks)->size(), r->blocks);
  ASSERT_GT(r->blocks, 10u);
  // Blocks are cut every kBlockBytes, through batches: every block but the
  // last has that size, and a batch larger than a block leaves blocks that
  // no batch starts in. A block a batch starts in names the first one.
  for (size_t i = 0; i + 1 < (*blocks)->size(); ++i) EXPECT_EQ((**blocks)[i].raw_length, kBlockBytes) << i;
  EXPECT_TRUE(std::any_of((*blocks)->begin(), (*blocks)->end(),
                          [](const BlockEntry& e) { return e.batch_offset == 0; }));
  for (const BlockEntry& e : **blocks) {
    if (e.batch_offset == 0) continue;
    auto batch = std::find_if(written_->batches.begin(), written_->batches.end(),
                              [&](const auto& b) { return b.offset == e.batch_offset; });
    ASSERT_NE(batch, written_->batches.end()) << "block names no batch start: " << e.batch_offset;
    EXPECT_GE(e.batch_offset, e.logical_offset);
    EXPECT_LT(e.batch_offset, e.logical_offset + e.raw_length);
    EXPECT_EQ(e.first_position, batch->first_position);
    if (batch != written_->batches.begin()) {
      EXPECT_LT(std::prev(batch)->offset, e.logical_offset);
    }
  }

  // Across every block boundary, and at random.
  for (const BlockEntry& e : **blocks) {
    if (e.logical_offset > format::kSegmentHeaderBytes + 7)
      ExpectReadMatches(sealed, e.logical_offset - 7, 19);
    ExpectReadMatches(sealed, e.logical_offset, e.raw_length);
  }
  std::mt19937_64 rng(1);
  for (int i = 0; i < 5000; ++i) {
    uint64_t offset =
        format::kSegmentHeaderBytes + rng() % (DataEnd() - format::kSegmentHeaderBytes);
    size_t len =
        1 + static_cast<size_t>(rng() % std::min<uint64_t>(3 * kBlockBytes, DataEnd() - offset));
    ExpectReadMatches(sealed, offset, len);
    if (HasFatalFailure()) return;
  }
  ExpectReadMatches(sealed, format::kSegmentHeaderBytes, DataEnd() - format::kSegmentHeaderBytes);

  // The log's batches, walked through the sealed file.
  WrittenSegment walked;
  WalkBatches(**seg, &walked);
  EXPECT_EQ(walked.data_end, DataEnd());
  ASSERT_EQ(walked.batches.size(), written_->batches.size());
  for (size_t i = 0; i < walked.batches.size(); ++i) {
    EXPECT_EQ(walked.batches[i].offset, written_->batches[i].offset);
    EXPECT_EQ(walked.batches[i].first_position, written_->batches[i].first_position);
  }
}

TEST_F(SealedTest, ReadOutsideTheSealedDataIsCorruption) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  std::vector<BlockEntry> blocks;
  auto sealed = OpenSealed(&cache_, &blocks);
  ASSERT_NE(sealed, nullptr);
  uint8_t buf[16];
  Status past = sealed->Read(DataEnd() - 4, 8, buf);
  EXPECT_EQ(past.code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(past, Path())) << past.ToString();
  EXPECT_TRUE(Contains(past, "read past the end of the sealed data")) << past.ToString();
  EXPECT_EQ(sealed->Read(0, 8, buf).code(), StatusCode::kCorruption);
  EXPECT_TRUE(sealed->Read(DataEnd() - 8, 8, buf).ok());
  EXPECT_TRUE(sealed->Read(DataEnd(), 0, buf).ok());
}

// Sealing reads the log through SequentialSegmentReader (direct I/O in
// chunks): what it hands out must be the file's bytes, whatever the spans
// and however they meet its chunks.
TEST_F(SealedTest, SequentialReaderReadsTheFileAsItIs) {
  auto seg = Open(&cache_);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  auto reader = SequentialSegmentReader::Open(**seg);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::mt19937_64 rng(7);
  const uint64_t chunk = SequentialSegmentReader::kChunkBytes;
  size_t spans = 0;
  for (uint64_t at = format::kSegmentHeaderBytes; at < kSegmentBytes; ++spans) {
    // Mostly short spans, within the window or crossing its end; every
    // fourth up to one and a half chunks.
    uint64_t most = rng() % 4 == 0 ? chunk * 3 / 2 : chunk / 8;
    size_t len = static_cast<size_t>(std::min<uint64_t>(kSegmentBytes - at, 1 + rng() % most));
    std::string got(len, '\0');
    Status s = (*reader)->Read(at, len, reinterpret_cast<uint8_t*>(got.data()));
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(got == Original(at, len)) << "bytes differ in [" << at << ", " << at + len << ")";
    at += len;
  }
  EXPECT_GT(spans, 20u);
  // Going back reads again.
  std::string back(5000, '\0');
  ASSERT_TRUE((*reader)->Read(100, back.size(), reinterpret_cast<uint8_t*>(back.data())).ok());
  EXPECT_TRUE(back == Original(100, back.size()));
  // Past the end of the file: an error that names it, never a short copy.
  uint8_t buf[32];
  Status past = (*reader)->Read(kSegmentBytes - 10, sizeof buf, buf);
  EXPECT_EQ(past.code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(past, Path())) << past.ToString();
}

TEST_F(SealedTest, JsonEventsSealToLessThanHalfTheirSize) {
  auto r = Seal(SmallBlocks());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LT(static_cast<double>(r->stored_bytes), 0.5 * static_cast<double>(r->raw_bytes))
      << r->stored_bytes << " stored for " << r->raw_bytes << " raw";
}

TEST_F(SealedTest, DamagedBlockFailsItsReadsOnly) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  std::vector<BlockEntry> blocks;
  ASSERT_NE(OpenSealed(&cache_, &blocks), nullptr);
  ASSERT_GE(blocks.size(), 3u);
  const size_t k = blocks.size() / 2;
  const BlockEntry damaged = blocks[k];
  FlipByte(Path(), damaged.file_offset + damaged.stored_length / 2);

  BlockCache fresh(64 << 20);
  auto seg = Open(&fresh);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  const SealedSegment& sealed = *(*seg)->sealed;
  std::string buf(damaged.raw_length, '\0');
  Status s = sealed.Read(damaged.logical_offset + 1, damaged.raw_length - 1,
                         reinterpret_cast<uint8_t*>(buf.data()));
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(s, Path())) << s.ToString();
  EXPECT_TRUE(Contains(s, "offset " + std::to_string(damaged.file_offset) + ":")) << s.ToString();
  EXPECT_TRUE(Contains(s, "block " + std::to_string(k))) << s.ToString();
  // A read spanning into it fails too; its neighbours read as written.
  EXPECT_EQ(
      sealed.Read(damaged.logical_offset - 1, 2, reinterpret_cast<uint8_t*>(buf.data())).code(),
      StatusCode::kCorruption);
  ExpectReadMatches(sealed, blocks[k - 1].logical_offset, blocks[k - 1].raw_length);
  ExpectReadMatches(sealed, blocks[k + 1].logical_offset, blocks[k + 1].raw_length);
  auto direct = sealed.Block(static_cast<uint32_t>(k));
  EXPECT_EQ(direct.status().code(), StatusCode::kCorruption);
}

TEST_F(SealedTest, DamagedFooterFailsOpen) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  const std::string sealed_bytes = ReadFile(Path());
  const uint64_t footer_at = sealed_bytes.size() - format::kSealedFooterBytes;
  // Magic, block count, map offset, data end, last position, checksum.
  for (uint64_t field : {0, 12, 16, 24, 40, 56}) {
    WriteFile(Path(), sealed_bytes);
    FlipByte(Path(), footer_at + field);
    auto seg = Open(&cache_);
    ASSERT_FALSE(seg.ok()) << "footer byte " << field;
    EXPECT_EQ(seg.status().code(), StatusCode::kCorruption);
    EXPECT_TRUE(Contains(seg.status(), Path())) << seg.status().ToString();
  }
  // A file cut short loses its footer.
  WriteFile(Path(), sealed_bytes.substr(0, sealed_bytes.size() - 10));
  auto cut = Open(&cache_);
  EXPECT_EQ(cut.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(cut.status(), Path())) << cut.status().ToString();
}

// A whole, valid sealed file in the wrong place, or from a store with
// another segment size, is refused at open, naming the file.
TEST_F(SealedTest, SealedFileIsCheckedAgainstWhereItLiesAndTheManifest) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  const std::string other = fs::Join(Dir(), format::SegmentFileName(1));
  WriteFile(other, ReadFile(Path()));
  auto moved = OpenSegment(Dir(), 1, Expected(), &cache_);
  ASSERT_FALSE(moved.ok());
  EXPECT_EQ(moved.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(moved.status(), other + ": header names partition 0 segment 0, not where the file lies"))
      << moved.status().ToString();

  format::SegmentHeader bigger = Expected();
  bigger.segment_bytes *= 2;
  auto resized = OpenSegment(Dir(), 0, bigger, &cache_);
  ASSERT_FALSE(resized.ok());
  EXPECT_TRUE(Contains(resized.status(), Path() + ": segment size differs from the store's manifest"))
      << resized.status().ToString();
}

// Footers whose checksum holds but whose fields cannot describe the file
// (a sealing with a bug, or a crafted file) fail the open, naming the file.
TEST_F(SealedTest, FooterWhoseFieldsDisagreeFailsOpen) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  const std::string sealed_bytes = ReadFile(Path());
  const uint64_t footer_at = sealed_bytes.size() - format::kSealedFooterBytes;
  constexpr size_t kBlockCount = 12, kMapOffset = 16, kDataEnd = 24, kChecksum = 56;
  auto open_with = [&](const std::function<void(uint8_t*)>& patch) {
    std::string bytes = sealed_bytes;
    uint8_t* footer = reinterpret_cast<uint8_t*>(bytes.data()) + footer_at;
    patch(footer);
    format::Put64(footer + kChecksum, format::Checksum(footer, kChecksum));
    WriteFile(Path(), bytes);
    return Open(&cache_);
  };
  auto past = open_with([](uint8_t* f) { format::Put64(f + kDataEnd, Expected().segment_bytes + 1); });
  ASSERT_FALSE(past.ok());
  EXPECT_TRUE(Contains(past.status(), Path())) << past.status().ToString();
  EXPECT_TRUE(Contains(past.status(), "lies outside the segment")) << past.status().ToString();

  // No blocks, and no map: the file is consistent except that the log it
  // claims to hold has nowhere to be.
  auto empty = open_with([&](uint8_t* f) {
    format::Put32(f + kBlockCount, 0);
    format::Put64(f + kMapOffset, footer_at);
  });
  ASSERT_FALSE(empty.ok());
  EXPECT_TRUE(Contains(empty.status(), "0 blocks cannot hold the log up to " + std::to_string(DataEnd())))
      << empty.status().ToString();
}

TEST_F(SealedTest, DamagedBlockMapFailsOnFirstUse) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  const std::string sealed_bytes = ReadFile(Path());
  const uint64_t footer_at = sealed_bytes.size() - format::kSealedFooterBytes;
  const uint64_t map_offset =
      format::Get64(reinterpret_cast<const uint8_t*>(sealed_bytes.data()) + footer_at + 16);
  FlipByte(Path(), map_offset + format::kBlockEntryBytes + 2);

  auto seg = Open(&cache_);  // the map is read lazily
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  auto blocks = (*seg)->sealed->Blocks();
  EXPECT_EQ(blocks.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(blocks.status(), Path() + " at offset " + std::to_string(map_offset)))
      << blocks.status().ToString();
  uint8_t buf[8];
  EXPECT_EQ((*seg)->Read(format::kSegmentHeaderBytes, sizeof buf, buf).code(),
            StatusCode::kCorruption);
}

// Where a sealed file's map, page table and footer lie (sealed.h).
struct MapLayout {
  uint64_t footer_at, map_offset, table_offset;
  uint32_t blocks, pages;
};

MapLayout LayoutOf(const std::string& bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  MapLayout m;
  m.footer_at = bytes.size() - format::kSealedFooterBytes;
  m.map_offset = format::Get64(p + m.footer_at + 16);
  m.blocks = format::Get32(p + m.footer_at + 12);
  m.pages = (m.blocks + format::kMapPageEntries - 1) / format::kMapPageEntries;
  m.table_offset = m.map_offset + uint64_t{m.blocks} * format::kBlockEntryBytes;
  return m;
}

// Makes every checksum over the map agree with its (edited) entries again:
// each page row's, the table's in the footer, and the footer's own.
void RechecksumMap(std::string* bytes) {
  auto* p = reinterpret_cast<uint8_t*>(bytes->data());
  const MapLayout m = LayoutOf(*bytes);
  for (uint32_t page = 0; page < m.pages; ++page) {
    const uint32_t first = page * format::kMapPageEntries;
    const uint32_t count = std::min(format::kMapPageEntries, m.blocks - first);
    format::Put64(p + m.table_offset + page * format::kMapPageRowBytes + 8,
                  format::Checksum(p + m.map_offset + size_t{first} * format::kBlockEntryBytes,
                                   size_t{count} * format::kBlockEntryBytes));
  }
  format::Put64(p + m.footer_at + 48,
                format::Checksum(p + m.table_offset, size_t{m.pages} * format::kMapPageRowBytes));
  format::Put64(p + m.footer_at + 56, format::Checksum(p + m.footer_at, 56));
}

TEST_F(SealedTest, BlockMapWithAGapFailsEvenWithAValidChecksum) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  std::string bytes = ReadFile(Path());
  const MapLayout m = LayoutOf(bytes);
  // Entry 1 starts one byte late; page, table and footer checksums made to
  // match.
  uint8_t* entry = reinterpret_cast<uint8_t*>(bytes.data()) + m.map_offset + format::kBlockEntryBytes;
  format::Put32(entry, format::Get32(entry) + 1);
  RechecksumMap(&bytes);
  WriteFile(Path(), bytes);

  auto seg = Open(&cache_);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  auto blocks = (*seg)->sealed->Blocks();
  EXPECT_EQ(blocks.status().code(), StatusCode::kCorruption);
  const uint64_t entry_at = m.map_offset + format::kBlockEntryBytes;
  EXPECT_TRUE(Contains(blocks.status(), Path() + " at offset " + std::to_string(entry_at)))
      << blocks.status().ToString();
  EXPECT_TRUE(Contains(blocks.status(), "entry 1")) << blocks.status().ToString();
}

// A read loads the one map page it needs, not the whole map: what made
// reads of streams spread over many segments slow while maps were loaded
// whole (about 200 KiB each, evicted by the blocks themselves).
TEST_F(SealedTest, ReadLoadsOneMapPage) {
  ASSERT_TRUE(Seal(PagedBlocks()).ok());
  const MapLayout m = LayoutOf(ReadFile(Path()));
  ASSERT_GE(m.pages, 3u) << "the fixture should need several map pages";
  BlockCache cache(64 << 20);
  auto seg = Open(&cache);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  const SealedSegment& sealed = *(*seg)->sealed;
  // Open loads the page table only: the footer's neighbour.
  EXPECT_EQ(cache.GetStats().entries, 1u);
  EXPECT_EQ(cache.GetStats().bytes, m.pages * format::kMapPageRowBytes + 128);

  // A range inside block 2 * kPage + 5, in page 2.
  const uint64_t offset = format::kSegmentHeaderBytes + (2 * kPage + 5) * kPagedBlockBytes + 100;
  ExpectReadMatches(sealed, offset, 200);
  const BlockCache::Stats st = cache.GetStats();
  EXPECT_EQ(st.entries, 3u);  // table, page, block
  // Each entry is charged 128 bytes on top of its own (block_cache.cc).
  EXPECT_EQ(st.bytes,
            m.pages * format::kMapPageRowBytes + kPage * format::kBlockEntryBytes + kPagedBlockBytes + 3 * 128);
  auto entry = sealed.Entry(2 * kPage + 5);
  ASSERT_TRUE(entry.ok()) << entry.status().ToString();
  EXPECT_EQ(entry->logical_offset, format::kSegmentHeaderBytes + (2 * kPage + 5) * kPagedBlockBytes);
  EXPECT_EQ(cache.GetStats().entries, 3u);
}

// Literals are stored raw unless asked for: Huffman-coding them makes the
// file smaller, and either way it reads back as the original log.
TEST_F(SealedTest, LiteralCompressionIsAChoiceOfSizeOverSpeed) {
  const std::string original = ReadFile(Path());
  SealOptions raw_literals = SmallBlocks();
  ASSERT_FALSE(raw_literals.compress_literals);  // the default
  auto raw = Seal(raw_literals);
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  {
    std::vector<BlockEntry> blocks;
    auto sealed = OpenSealed(&cache_, &blocks);
    ASSERT_NE(sealed, nullptr);
    ExpectReadMatches(*sealed, format::kSegmentHeaderBytes, DataEnd() - format::kSegmentHeaderBytes);
  }
  WriteFile(Path(), original);
  SealOptions coded = SmallBlocks();
  coded.compress_literals = true;
  BlockCache fresh(64 << 20);
  auto seg = Open(&fresh);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  auto smaller = SealSegment(**seg, DataEnd(), Dir(), coded);
  ASSERT_TRUE(smaller.ok()) << smaller.status().ToString();
  EXPECT_LT(smaller->stored_bytes, raw->stored_bytes);
  EXPECT_EQ(smaller->raw_bytes, raw->raw_bytes);
  std::vector<BlockEntry> blocks;
  auto sealed = OpenSealed(&fresh, &blocks);
  ASSERT_NE(sealed, nullptr);
  ExpectReadMatches(*sealed, format::kSegmentHeaderBytes, DataEnd() - format::kSegmentHeaderBytes);
}

// ReadSome copies from the one block holding the offset: to the block's
// end, or fewer when fewer are asked for.
TEST_F(SealedTest, ReadSomeStopsAtTheBlockEnd) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  std::vector<BlockEntry> blocks;
  auto sealed = OpenSealed(&cache_, &blocks);
  ASSERT_NE(sealed, nullptr);
  const BlockEntry& b = blocks[70];
  std::string got(kBlockBytes * 2, '\0');
  auto* out = reinterpret_cast<uint8_t*>(got.data());
  auto n = sealed->ReadSome(b.logical_offset + 1000, got.size(), out);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, b.raw_length - 1000);
  EXPECT_TRUE(got.substr(0, *n) == Original(b.logical_offset + 1000, *n));
  n = sealed->ReadSome(b.logical_offset + 1000, 10, out);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 10u);
  EXPECT_TRUE(got.substr(0, 10) == Original(b.logical_offset + 1000, 10));
  EXPECT_EQ(sealed->ReadSome(DataEnd() - 5, 6, out).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(sealed->ReadSome(format::kSegmentHeaderBytes - 1, 1, out).status().code(),
            StatusCode::kCorruption);
}

// Damage in one map page fails the reads that need that page, naming the
// file and the page's offset; the other pages' blocks stay readable.
TEST_F(SealedTest, DamagedMapPageLeavesOtherPagesReadable) {
  ASSERT_TRUE(Seal(PagedBlocks()).ok());
  const MapLayout m = LayoutOf(ReadFile(Path()));
  ASSERT_GE(m.pages, 3u);
  const uint64_t page1_at = m.map_offset + kPage * format::kBlockEntryBytes;
  FlipByte(Path(), page1_at + 5 * format::kBlockEntryBytes + 9);

  auto seg = Open(&cache_);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  const SealedSegment& sealed = *(*seg)->sealed;
  const uint64_t page0 = format::kSegmentHeaderBytes + 10 * kPagedBlockBytes;
  const uint64_t page1 = format::kSegmentHeaderBytes + (kPage + 6) * kPagedBlockBytes;
  const uint64_t page2 = format::kSegmentHeaderBytes + (2 * kPage + 2) * kPagedBlockBytes;
  ExpectReadMatches(sealed, page0, 500);
  ExpectReadMatches(sealed, page2, 500);
  std::string buf(500, '\0');
  Status s = sealed.Read(page1, buf.size(), reinterpret_cast<uint8_t*>(buf.data()));
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(s, Path() + " at offset " + std::to_string(page1_at))) << s.ToString();
  EXPECT_TRUE(Contains(s, "block map page 1")) << s.ToString();
  // A read from page 0 running into page 1 fails too.
  const uint64_t across = format::kSegmentHeaderBytes + kPage * kPagedBlockBytes - 10;
  EXPECT_EQ(sealed.Read(across, 20, reinterpret_cast<uint8_t*>(buf.data())).code(),
            StatusCode::kCorruption);
  EXPECT_EQ(sealed.Blocks().status().code(), StatusCode::kCorruption);
  EXPECT_EQ(sealed.Entry(kPage).status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(sealed.Entry(kPage - 1).ok());
}

TEST_F(SealedTest, DamagedPageTableFailsOnFirstUse) {
  ASSERT_TRUE(Seal(PagedBlocks()).ok());
  const MapLayout m = LayoutOf(ReadFile(Path()));
  FlipByte(Path(), m.table_offset + format::kMapPageRowBytes + 1);
  auto seg = Open(&cache_);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  uint8_t buf[8];
  Status s = (*seg)->sealed->Read(format::kSegmentHeaderBytes, sizeof buf, buf);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(s, Path() + " at offset " + std::to_string(m.table_offset))) << s.ToString();
  EXPECT_TRUE(Contains(s, "page table")) << s.ToString();
}

// Rows whose checksum matches but that put a page's blocks elsewhere than
// its entries say: a page one byte later in the log, or one byte later in
// the file. Either is caught when the pages are loaded.
TEST_F(SealedTest, PageTableThatDisagreesWithThePagesFails) {
  ASSERT_TRUE(Seal(PagedBlocks()).ok());
  const std::string sealed_bytes = ReadFile(Path());
  for (size_t field : {0, 4}) {  // first, file_first
    std::string bytes = sealed_bytes;
    const MapLayout m = LayoutOf(bytes);
    ASSERT_GE(m.pages, 2u);
    auto* p = reinterpret_cast<uint8_t*>(bytes.data());
    uint8_t* row1 = p + m.table_offset + format::kMapPageRowBytes + field;
    format::Put32(row1, format::Get32(row1) + 1);
    format::Put64(p + m.footer_at + 48,
                  format::Checksum(p + m.table_offset, size_t{m.pages} * format::kMapPageRowBytes));
    format::Put64(p + m.footer_at + 56, format::Checksum(p + m.footer_at, 56));
    WriteFile(Path(), bytes);
    BlockCache cache(64 << 20);
    auto seg = Open(&cache);
    ASSERT_TRUE(seg.ok()) << seg.status().ToString();
    auto blocks = (*seg)->sealed->Blocks();
    EXPECT_EQ(blocks.status().code(), StatusCode::kCorruption) << "row field " << field;
    EXPECT_TRUE(Contains(blocks.status(), "block map page 0 covers")) << blocks.status().ToString();
    // Page 1 itself does not start where its row says either.
    const uint64_t in_page1 = format::kSegmentHeaderBytes + (kPage + 3) * kPagedBlockBytes;
    uint8_t buf[8];
    Status s = (*seg)->sealed->Read(in_page1, sizeof buf, buf);
    EXPECT_EQ(s.code(), StatusCode::kCorruption) << "row field " << field;
    EXPECT_TRUE(Contains(s, "block map entry " + std::to_string(kPage))) << s.ToString();
  }
}

// The binary search over map pages finds what a walk over the whole map
// finds, for every target position, with batches longer than a page (so
// pages naming no batch) among them.
TEST_F(SealedTest, LastBatchStartBeforeMatchesAWalkOfTheMap) {
  ASSERT_TRUE(Seal(PagedBlocks()).ok());
  std::vector<BlockEntry> blocks;
  auto sealed = OpenSealed(&cache_, &blocks);
  ASSERT_NE(sealed, nullptr);
  ASSERT_GT(blocks.size(), 4u * kPage);
  // Some page names no batch: the fixture has 50 KiB events.
  bool empty_page = false;
  for (size_t p = 0; p * kPage < blocks.size(); ++p) {
    bool named = false;
    for (size_t i = p * kPage; i < std::min(blocks.size(), (p + 1) * kPage); ++i)
      named = named || blocks[i].batch_offset != 0;
    empty_page = empty_page || !named;
  }
  EXPECT_TRUE(empty_page);
  const uint64_t last_position = sealed->last_position();
  for (uint64_t target = 0; target <= last_position + 2; ++target) {
    uint64_t walk = 0;
    for (const BlockEntry& b : blocks) {
      if (b.batch_offset == 0) continue;
      if (b.first_position > target) break;
      walk = b.batch_offset;
    }
    auto got = sealed->LastBatchStartBefore([&](const BlockEntry& b) { return b.first_position <= target; });
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(*got, walk) << "target position " << target;
  }
}

// Reads whose map pages are not in the kernel's page cache take the cold
// path (the page read while the bytes around the wanted block are
// prefetched) and return the same bytes.
TEST_F(SealedTest, ReadsFromAColdPageCacheMatch) {
  ASSERT_TRUE(Seal(PagedBlocks()).ok());
  {
    auto fd = fs::Open(Path(), O_RDONLY);
    ASSERT_TRUE(fd.ok()) << fd.status().ToString();
    ASSERT_EQ(::posix_fadvise(fd->get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  }
  BlockCache cache(64 << 20);
  auto seg = Open(&cache);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  const SealedSegment& sealed = *(*seg)->sealed;
  {
    auto fd = fs::Open(Path(), O_RDONLY);
    ASSERT_TRUE(fd.ok());
    ASSERT_EQ(::posix_fadvise(fd->get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 40; ++i) {
    const uint64_t at = format::kSegmentHeaderBytes + rng() % (DataEnd() - format::kSegmentHeaderBytes - 600);
    ExpectReadMatches(sealed, at, 600);
  }
}

// Files sealed before the map had pages (version 1: no page table, the
// footer's checksum over the whole map) still open and read.
TEST_F(SealedTest, Version1FilesStillRead) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  std::vector<BlockEntry> v2_blocks;
  ASSERT_NE(OpenSealed(&cache_, &v2_blocks), nullptr);
  std::string bytes = ReadFile(Path());
  const MapLayout m = LayoutOf(bytes);
  std::string footer = bytes.substr(m.footer_at);
  auto* f = reinterpret_cast<uint8_t*>(footer.data());
  format::Put32(f + 8, 1);
  format::Put64(f + 48, format::Checksum(reinterpret_cast<const uint8_t*>(bytes.data()) + m.map_offset,
                                         size_t{m.blocks} * format::kBlockEntryBytes));
  format::Put64(f + 56, format::Checksum(f, 56));
  WriteFile(Path(), bytes.substr(0, m.table_offset) + footer);

  BlockCache cache(64 << 20);
  std::vector<BlockEntry> v1_blocks;
  auto sealed = OpenSealed(&cache, &v1_blocks);
  ASSERT_NE(sealed, nullptr);
  ASSERT_EQ(v1_blocks.size(), v2_blocks.size());
  for (size_t i = 0; i < v1_blocks.size(); ++i) {
    EXPECT_EQ(v1_blocks[i].logical_offset, v2_blocks[i].logical_offset) << i;
    EXPECT_EQ(v1_blocks[i].checksum, v2_blocks[i].checksum) << i;
  }
  for (uint64_t at = format::kSegmentHeaderBytes; at < DataEnd(); at += 7777)
    ExpectReadMatches(*sealed, at, static_cast<size_t>(std::min<uint64_t>(3000, DataEnd() - at)));
  // A damaged version 1 map is still caught.
  FlipByte(Path(), m.map_offset + 3);
  BlockCache fresh(64 << 20);
  auto damaged = Open(&fresh);
  ASSERT_TRUE(damaged.ok()) << damaged.status().ToString();
  uint8_t buf[8];
  Status s = (*damaged)->sealed->Read(format::kSegmentHeaderBytes, sizeof buf, buf);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(s, Path() + " at offset " + std::to_string(m.map_offset))) << s.ToString();
}

TEST_F(SealedTest, SmallCacheEvictsAndReadsStayCorrect) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  // Room for the block map (48 bytes a block) and four blocks.
  BlockCache small(4 * kBlockBytes + 48 * (1 << 20) / kBlockBytes + 1024);
  std::vector<BlockEntry> blocks;
  auto sealed = OpenSealed(&small, &blocks);
  ASSERT_NE(sealed, nullptr);
  for (uint64_t at = format::kSegmentHeaderBytes; at < DataEnd(); at += 1000)
    ExpectReadMatches(*sealed, at, static_cast<size_t>(std::min<uint64_t>(1000, DataEnd() - at)));
  std::mt19937_64 rng(2);
  for (int i = 0; i < 2000 && !HasFatalFailure(); ++i) {
    uint64_t offset =
        format::kSegmentHeaderBytes + rng() % (DataEnd() - format::kSegmentHeaderBytes);
    ExpectReadMatches(
        *sealed, offset,
        static_cast<size_t>(std::min<uint64_t>(1 + rng() % 6000, DataEnd() - offset)));
  }
  BlockCache::Stats st = small.GetStats();
  EXPECT_GT(st.evictions, 0u);
  // Slack: one cached block's bytes and bookkeeping.
  uint64_t largest_cached = 0;
  for (const BlockEntry& e : blocks)
    if (e.raw_length <= small.capacity())
      largest_cached = std::max<uint64_t>(largest_cached, e.raw_length);
  EXPECT_LE(st.bytes, small.capacity() + largest_cached + 1024);

  // The same range again is a hit, with nothing loaded.
  const BlockEntry& b = blocks[blocks.size() / 2];
  ExpectReadMatches(*sealed, b.logical_offset, 100);
  BlockCache::Stats before = small.GetStats();
  ExpectReadMatches(*sealed, b.logical_offset, 100);
  BlockCache::Stats after = small.GetStats();
  EXPECT_GT(after.hits, before.hits);
  EXPECT_EQ(after.misses, before.misses);
}

// A closed file's entries stay in the cache until they age out, but a file
// opened again is a new file to the cache: it never gets what was read
// through the old one, here a block since damaged on disk.
TEST_F(SealedTest, ReopenedSegmentNeverSeesTheOldCachedBlocks) {
  ASSERT_TRUE(Seal(SmallBlocks()).ok());
  std::vector<BlockEntry> blocks;
  auto sealed = OpenSealed(&cache_, &blocks);
  ASSERT_NE(sealed, nullptr);
  ExpectReadMatches(*sealed, format::kSegmentHeaderBytes, 3 * kBlockBytes);
  const uint64_t entries = cache_.GetStats().entries;
  EXPECT_GT(entries, 1u);
  sealed.reset();
  EXPECT_EQ(cache_.GetStats().entries, entries);  // nothing walks the cache at close

  FlipByte(Path(), blocks[1].file_offset + 3);
  auto again = Open(&cache_);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  uint8_t buf[16];
  Status s = (*again)->sealed->Read(blocks[1].logical_offset, sizeof buf, buf);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(s, Path() + " at offset " + std::to_string(blocks[1].file_offset)))
      << s.ToString();
}

TEST_F(SealedTest, CancelledSealingLeavesTheSegmentAsItWas) {
  SealOptions o = SmallBlocks();
  int asked = 0;
  o.cancelled = [&] { return ++asked > 3; };
  auto r = Seal(o);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_EQ(asked, 4);
  EXPECT_TRUE(ReadFile(Path()) == written_->bytes);
  EXPECT_FALSE(std::filesystem::exists(Path() + ".tmp"));
  EXPECT_NE(ReadFile(Path()).substr(0, sizeof format::kSealedMagic),
            std::string(format::kSealedMagic, sizeof format::kSealedMagic));
}

TEST_F(SealedTest, RefusesToSealADamagedBatch) {
  const auto& batch = written_->batches[written_->batches.size() / 2];
  // A byte of the first record's stream name.
  FlipByte(Path(), batch.offset + format::kBatchHeaderBytes + format::kRecordHeaderBytes + 2);
  const std::string damaged = ReadFile(Path());
  auto r = Seal(SmallBlocks());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(r.status(), Path() + " at offset " + std::to_string(batch.offset) + ":"))
      << r.status().ToString();
  EXPECT_TRUE(ReadFile(Path()) == damaged);
  EXPECT_FALSE(std::filesystem::exists(Path() + ".tmp"));
}

TEST_F(SealedTest, RefusesARecordThatFailsItsChecksumInsideAValidBatch) {
  const auto& batch = written_->batches[written_->batches.size() / 2];
  const uint64_t record = batch.offset + format::kBatchHeaderBytes;
  std::string bytes = written_->bytes;
  auto* p = reinterpret_cast<uint8_t*>(bytes.data());
  p[record + format::kRecordHeaderBytes + 2] ^= 0x5a;
  // The batch's own checksum made to match, so only the record's catches it.
  const uint32_t length = format::Get32(p + batch.offset + 4);
  format::Put64(p + batch.offset + length - format::kBatchTrailerBytes,
                format::BatchChecksum(p + batch.offset, length));
  WriteFile(Path(), bytes);
  auto r = Seal(SmallBlocks());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(r.status(), Path() + " at offset " + std::to_string(record) + ":"))
      << r.status().ToString();
  EXPECT_TRUE(ReadFile(Path()) == bytes);
  EXPECT_FALSE(std::filesystem::exists(Path() + ".tmp"));
}

TEST_F(SealedTest, RefusesADataEndThatLeavesBatchesOut) {
  ASSERT_GE(written_->batches.size(), 2u);
  auto seg = Open(&cache_);
  ASSERT_TRUE(seg.ok());
  auto r = SealSegment(**seg, written_->batches.back().offset, Dir(), SmallBlocks());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(Contains(r.status(),
                       Path() + " at offset " + std::to_string(written_->batches.back().offset)))
      << r.status().ToString();
  EXPECT_TRUE(ReadFile(Path()) == written_->bytes);
}

// --- the cache on its own

// The tail cache holds the newest `capacity` bytes of a segment, whatever
// the sizes of the additions, and answers only reads it holds whole.
TEST(TailCacheTest, HoldsTheNewestBytesAndOnlyThose) {
  constexpr size_t kCapacity = 1000;
  constexpr uint64_t kStart = 64;
  auto counters = std::make_shared<TailCache::Counters>();
  TailCache cache(kCapacity, kStart, counters);
  std::string log;  // what was added, from kStart
  std::mt19937_64 rng(3);
  uint8_t out[2 * kCapacity];
  for (int i = 0; i < 300; ++i) {
    // Mostly small additions, now and then one larger than the ring.
    size_t n = i % 37 == 0 ? kCapacity + 1 + rng() % 500 : 1 + rng() % 300;
    std::string add(n, '\0');
    for (char& c : add) c = static_cast<char>(rng());
    cache.Add(kStart + log.size(), reinterpret_cast<const uint8_t*>(add.data()), add.size());
    log += add;
    const uint64_t end = kStart + log.size();
    const uint64_t held_from = std::max<uint64_t>(kStart, end - std::min<uint64_t>(end, kCapacity));
    // A read of held bytes, wrapping around the ring's end or not.
    uint64_t from = held_from + rng() % (end - held_from);
    size_t len = static_cast<size_t>(rng() % (end - from + 1));
    ASSERT_TRUE(cache.Read(from, len, out)) << "add " << i;
    ASSERT_EQ(std::string(reinterpret_cast<char*>(out), len), log.substr(from - kStart, len)) << "add " << i;
    // Reads reaching before what is held, or past the end, are refused.
    if (held_from > kStart) {
      EXPECT_FALSE(cache.Read(held_from - 1, 2, out));
    }
    EXPECT_FALSE(cache.Read(end - 1, 2, out));
  }
  EXPECT_TRUE(cache.Read(kStart + log.size() - kCapacity, kCapacity, out));
  EXPECT_FALSE(cache.Read(kStart + log.size() - kCapacity - 1, kCapacity + 1, out));
  // Its ring taken: every read misses, additions are dropped.
  std::unique_ptr<uint8_t[]> ring = cache.TakeRing();
  ASSERT_NE(ring, nullptr);
  EXPECT_FALSE(cache.Read(kStart + log.size() - 1, 1, out));
  cache.Add(kStart + log.size(), out, 10);
  EXPECT_FALSE(cache.Read(kStart + log.size(), 10, out));
  // A cache on the taken ring starts empty, whatever the ring still holds.
  const uint64_t hits = counters->hits.load(), misses = counters->misses.load();
  EXPECT_GT(hits, 300u);
  EXPECT_GT(misses, 300u);
  TailCache next(kCapacity, kStart, counters, std::move(ring));
  EXPECT_FALSE(next.Read(kStart, 1, out));
  const uint8_t fresh[3] = {7, 8, 9};
  next.Add(kStart, fresh, sizeof fresh);
  ASSERT_TRUE(next.Read(kStart, sizeof fresh, out));
  EXPECT_EQ(std::memcmp(out, fresh, sizeof fresh), 0);
  EXPECT_FALSE(next.Read(kStart, sizeof fresh + 1, out));
  // Both caches count into the partition's counters.
  EXPECT_EQ(counters->hits.load(), hits + 1);
  EXPECT_EQ(counters->misses.load(), misses + 2);
}

// The rings' memory is counted once per ring: a reused ring is not counted
// again, and a ring stops counting when the cache holding it ends.
TEST(TailCacheTest, CountsTheMemoryOfItsRings) {
  auto counters = std::make_shared<TailCache::Counters>();
  {
    auto first = std::make_unique<TailCache>(1000, 64, counters);
    EXPECT_EQ(counters->ring_bytes.load(), 1000u);
    TailCache second(1000, 64, counters);
    EXPECT_EQ(counters->ring_bytes.load(), 2000u);
    TailCache third(1000, 64, counters, first->TakeRing());
    EXPECT_EQ(counters->ring_bytes.load(), 2000u);
    first.reset();  // its ring lives on in `third`
    EXPECT_EQ(counters->ring_bytes.load(), 2000u);
  }
  EXPECT_EQ(counters->ring_bytes.load(), 0u);
}

BlockCache::Bytes MakeBytes(size_t size, uint8_t fill) {
  return std::make_shared<const std::vector<uint8_t>>(size, fill);
}

// Keys are per file: the same key of two files is two entries.
TEST(BlockCacheTest, FilesNeverShareEntries) {
  BlockCache cache(1 << 20);
  const uint64_t f1 = BlockCache::NewFileId(), f2 = BlockCache::NewFileId();
  auto a = cache.GetOrLoad(f1, 5, [] { return Result<BlockCache::Bytes>(MakeBytes(10, 1)); });
  auto b = cache.GetOrLoad(f2, 5, [] { return Result<BlockCache::Bytes>(MakeBytes(10, 2)); });
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((**a)[0], 1);
  EXPECT_EQ((**b)[0], 2);
  EXPECT_EQ(cache.GetStats().entries, 2u);
}

TEST(BlockCacheTest, LoadsOnceThenServesTheCachedValue) {
  BlockCache cache(1 << 20);
  const uint64_t file = BlockCache::NewFileId();
  EXPECT_NE(file, 0u);
  EXPECT_NE(BlockCache::NewFileId(), file);
  int loads = 0;
  auto load = [&]() -> Result<BlockCache::Bytes> {
    ++loads;
    return MakeBytes(100, 7);
  };
  auto a = cache.GetOrLoad(file, 3, load);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(**a, std::vector<uint8_t>(100, 7));
  auto b = cache.GetOrLoad(file, 3, load);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(a->get(), b->get());
  BlockCache::Stats st = cache.GetStats();
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.entries, 1u);
  EXPECT_GE(st.bytes, 100u);
  // Same key, another file: its own entry.
  ASSERT_TRUE(cache.GetOrLoad(file + 1000, 3, load).ok());
  EXPECT_EQ(loads, 2);
}

TEST(BlockCacheTest, FailedLoadIsReturnedAndNotCached) {
  BlockCache cache(1 << 20);
  int loads = 0;
  auto fail = [&]() -> Result<BlockCache::Bytes> {
    ++loads;
    return Status::Corruption("f at offset 9: bad");
  };
  EXPECT_EQ(cache.GetOrLoad(1, 1, fail).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(cache.GetOrLoad(1, 1, fail).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(loads, 2);
  EXPECT_EQ(cache.GetStats().entries, 0u);
}

// A cache this small is a single LRU list (block_cache.cc), so the order
// of eviction is exact.
TEST(BlockCacheTest, LeastRecentlyUsedEntryGoesFirst) {
  BlockCache cache(3 * 1000 + 500);
  int loads = 0;
  auto load = [&]() -> Result<BlockCache::Bytes> {
    ++loads;
    return MakeBytes(1000, 2);
  };
  for (uint64_t k : {1, 2, 3}) ASSERT_TRUE(cache.GetOrLoad(7, k, load).ok());
  ASSERT_TRUE(cache.GetOrLoad(7, 1, load).ok());  // 2 is now the oldest
  ASSERT_TRUE(cache.GetOrLoad(7, 4, load).ok());
  EXPECT_EQ(cache.GetStats().evictions, 1u);
  EXPECT_LE(cache.GetStats().bytes, cache.capacity());
  loads = 0;
  for (uint64_t k : {1, 3, 4}) ASSERT_TRUE(cache.GetOrLoad(7, k, load).ok());
  EXPECT_EQ(loads, 0);
  ASSERT_TRUE(cache.GetOrLoad(7, 2, load).ok());
  EXPECT_EQ(loads, 1);
}

TEST(BlockCacheTest, EntryLargerThanTheCacheIsReturnedButNotKept) {
  BlockCache cache(4096);
  auto big = cache.GetOrLoad(1, 1, [] { return Result<BlockCache::Bytes>(MakeBytes(8192, 3)); });
  ASSERT_TRUE(big.ok());
  EXPECT_EQ((*big)->size(), 8192u);
  EXPECT_EQ(cache.GetStats().entries, 0u);
  EXPECT_EQ(cache.GetStats().bytes, 0u);
}

TEST(BlockCacheTest, ConcurrentGetOrLoadReturnsEachKeysBytes) {
  constexpr size_t kCapacity = 16 << 20;  // several shards
  constexpr size_t kEntryBytes = 16 * 1024;
  constexpr uint64_t kKeys = 2000;  // twice the capacity: evictions too
  constexpr int kThreads = 4, kOpsPerThread = 20000;
  BlockCache cache(kCapacity);
  std::atomic<bool> wrong{false};
  std::atomic<uint64_t> loads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t));
      for (int i = 0; i < kOpsPerThread; ++i) {
        // Skewed towards low keys, so some are hot.
        uint64_t key = rng() % 4 == 0 ? rng() % kKeys : rng() % 64;
        uint64_t file = 1 + key % 3;
        auto r = cache.GetOrLoad(file, key, [&]() -> Result<BlockCache::Bytes> {
          loads.fetch_add(1, std::memory_order_relaxed);
          auto v = std::make_shared<std::vector<uint8_t>>(kEntryBytes, static_cast<uint8_t>(key));
          format::Put64(v->data(), file);
          format::Put64(v->data() + 8, key);
          return BlockCache::Bytes(std::move(v));
        });
        if (!r.ok() || (*r)->size() != kEntryBytes || format::Get64((*r)->data()) != file ||
            format::Get64((*r)->data() + 8) != key || (*r)->back() != static_cast<uint8_t>(key))
          wrong = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(wrong);
  BlockCache::Stats st = cache.GetStats();
  EXPECT_EQ(st.hits + st.misses, uint64_t{kThreads} * kOpsPerThread);
  EXPECT_EQ(st.misses, loads.load());
  EXPECT_GT(st.hits, st.misses);
  EXPECT_GT(st.evictions, 0u);
  EXPECT_LE(st.bytes, kCapacity);
}

}  // namespace
}  // namespace annal
