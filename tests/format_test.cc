// The on-disk format's encoders and decoders: round trips, and every check
// a decoder makes refusing damaged bytes.
#include "format.h"

#include <gtest/gtest.h>

#include <vector>

#include "checkpoint.h"
#include "test_util.h"

namespace annal::format {
namespace {

std::vector<uint8_t> EncodeSample(RecordView r) {
  std::vector<uint8_t> buf(RecordSize(r.stream.size(), r.type.size(), r.metadata.size(), r.payload.size()));
  EncodeRecord(r, buf.data());
  return buf;
}

RecordView Sample() {
  RecordView r;
  r.version = 41;
  r.position = 1234;
  r.recorded_at_ns = 1764000000000000000;
  r.prev_location = MakeLocation(3, 4096);
  r.id = testing::IdFrom(0x0706050403020100, 0x0f0e0d0c0b0a0908);
  r.stream = "account-42";
  r.type = "AccountCredited";
  r.metadata = R"({"user":"u1"})";
  r.payload = R"({"amount":10})";
  return r;
}

TEST(FormatTest, RecordRoundTrip) {
  auto buf = EncodeSample(Sample());
  RecordView r;
  ASSERT_TRUE(DecodeRecord(buf.data(), buf.size(), &r).ok());
  EXPECT_EQ(r.length, buf.size());
  EXPECT_EQ(r.version, 41u);
  EXPECT_EQ(r.position, 1234u);
  EXPECT_EQ(r.recorded_at_ns, 1764000000000000000);
  EXPECT_EQ(r.prev_location, MakeLocation(3, 4096));
  EXPECT_EQ(r.id, Sample().id);
  EXPECT_EQ(r.stream, "account-42");
  EXPECT_EQ(r.type, "AccountCredited");
  EXPECT_EQ(r.metadata, R"({"user":"u1"})");
  EXPECT_EQ(r.payload, R"({"amount":10})");
}

TEST(FormatTest, EmptyMetadataAndPayloadRoundTrip) {
  RecordView in = Sample();
  in.metadata = in.payload = "";
  auto buf = EncodeSample(in);
  RecordView r;
  ASSERT_TRUE(DecodeRecord(buf.data(), buf.size(), &r).ok());
  EXPECT_TRUE(r.metadata.empty());
  EXPECT_TRUE(r.payload.empty());
}

TEST(FormatTest, PatchedRecordKeepsAValidChecksum) {
  auto buf = EncodeSample(Sample());
  PatchRecord(buf.data(), 99, 7);
  RecordView r;
  ASSERT_TRUE(DecodeRecord(buf.data(), buf.size(), &r).ok());
  EXPECT_EQ(r.position, 99u);
  EXPECT_EQ(r.recorded_at_ns, 7);
}

TEST(FormatTest, RecordChecksumMismatchOnAnyFlippedByte) {
  auto good = EncodeSample(Sample());
  for (size_t i = 0; i < good.size(); ++i) {
    auto bad = good;
    bad[i] ^= 0x01;
    RecordView r;
    EXPECT_FALSE(DecodeRecord(bad.data(), bad.size(), &r).ok()) << "flipped byte " << i;
  }
}

TEST(FormatTest, TruncatedRecordIsRefused) {
  auto buf = EncodeSample(Sample());
  RecordView r;
  EXPECT_FALSE(DecodeRecord(buf.data(), buf.size() - 1, &r).ok());
  EXPECT_FALSE(DecodeRecord(buf.data(), kRecordHeaderBytes - 1, &r).ok());
}

TEST(FormatTest, RecordWithUnknownMustUnderstandFlagIsRefused) {
  RecordView in = Sample();
  in.flags = 0x0001;
  auto buf = EncodeSample(in);
  RecordView r;
  EXPECT_EQ(DecodeRecord(buf.data(), buf.size(), &r).code(), StatusCode::kCorruption);
  in.flags = 0x0100;  // an ignorable hint
  buf = EncodeSample(in);
  EXPECT_TRUE(DecodeRecord(buf.data(), buf.size(), &r).ok());
}

TEST(FormatTest, BatchHeaderRoundTripAndChecks) {
  uint8_t buf[kBatchHeaderBytes];
  EncodeBatchHeader(BatchHeader{4096, 77, 123456789, 5, 0}, buf);
  BatchHeader h;
  ASSERT_TRUE(DecodeBatchHeader(buf, &h).ok());
  EXPECT_EQ(h.length, 4096u);
  EXPECT_EQ(h.first_position, 77u);
  EXPECT_EQ(h.recorded_at_ns, 123456789);
  EXPECT_EQ(h.count, 5u);
  for (size_t i = 0; i < kBatchHeaderBytes; ++i) {
    uint8_t bad[kBatchHeaderBytes];
    std::memcpy(bad, buf, sizeof bad);
    bad[i] ^= 0x80;
    EXPECT_FALSE(DecodeBatchHeader(bad, &h).ok()) << "flipped byte " << i;
  }
}

TEST(FormatTest, BatchHeaderWithImpossibleCountIsRefused) {
  uint8_t buf[kBatchHeaderBytes];
  EncodeBatchHeader(BatchHeader{200, 1, 1, 100, 0}, buf);  // 100 records cannot fit 200 bytes
  BatchHeader h;
  EXPECT_FALSE(DecodeBatchHeader(buf, &h).ok());
  EncodeBatchHeader(BatchHeader{200, 1, 1, 0, 0}, buf);
  EXPECT_FALSE(DecodeBatchHeader(buf, &h).ok());
}

TEST(FormatTest, SegmentHeaderRoundTripAndDamage) {
  uint8_t buf[kSegmentHeaderBytes];
  EncodeSegmentHeader(SegmentHeader{2, 9, 1 << 20, 4}, buf);
  SegmentHeader h;
  ASSERT_TRUE(DecodeSegmentHeader(buf, "f", &h).ok());
  EXPECT_EQ(h.partition, 2u);
  EXPECT_EQ(h.segment_id, 9u);
  EXPECT_EQ(h.segment_bytes, 1u << 20);
  EXPECT_EQ(h.partitions, 4u);
  buf[20] ^= 1;
  Status s = DecodeSegmentHeader(buf, "seg.log", &h);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("seg.log"), std::string::npos);
}

TEST(FormatTest, ManifestRoundTripAndVersionCheck) {
  uint8_t buf[kManifestBytes];
  EncodeManifest(Manifest{8, 64 << 20, 5}, buf);
  Manifest m;
  ASSERT_TRUE(DecodeManifest(buf, "MANIFEST", &m).ok());
  EXPECT_EQ(m.partitions, 8u);
  EXPECT_EQ(m.segment_bytes, 64u << 20);
  Put32(buf + 8, 2);  // a future version, checksum fixed up
  Put64(buf + kManifestBytes - 8, Checksum(buf, kManifestBytes - 8));
  Status s = DecodeManifest(buf, "MANIFEST", &m);
  EXPECT_NE(s.message().find("version 2 is not supported"), std::string::npos) << s.message();
}

TEST(FormatTest, SegmentFileNamesRoundTrip) {
  uint32_t id = 0;
  EXPECT_EQ(SegmentFileName(12), "segment-00000012.log");
  EXPECT_TRUE(ParseSegmentFileName("segment-00000012.log", &id));
  EXPECT_EQ(id, 12u);
  EXPECT_FALSE(ParseSegmentFileName("segment-0000012.log", &id));
  EXPECT_FALSE(ParseSegmentFileName("segment-0000001a.log", &id));
  EXPECT_FALSE(ParseSegmentFileName("segment-00000012.log.tmp", &id));
  EXPECT_FALSE(ParseSegmentFileName("index.ckpt", &id));
}

TEST(FormatTest, CheckpointRoundTripAndDamage) {
  StreamMap streams;
  StreamEntry e;
  for (uint64_t v = 0; v < 300; ++v) e.Add(v, MakeLocation(0, 64 + 100 * v), testing::IdFrom(v), 1000 + v);
  streams.emplace("account-1", e);
  SegmentSummary seg{0, 64, 0, 0, {}};
  seg.NoteBatch(64, 30000, 1, 300);
  CheckpointHeader h{0, 0, 30064, 300, 1299};
  std::string data = EncodeCheckpoint(h, {&seg}, streams);
  CheckpointHeader h2;
  std::vector<SegmentSummary> segs;
  StreamMap streams2;
  ASSERT_TRUE(DecodeCheckpoint(data, "ckpt", &h2, &segs, &streams2).ok());
  EXPECT_EQ(h2.tail_offset, 30064u);
  EXPECT_EQ(h2.last_position, 300u);
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].last_position, 300u);
  const StreamEntry& got = streams2.at("account-1");
  EXPECT_EQ(got.head_version, 299u);
  EXPECT_EQ(got.anchor_count, e.anchor_count);
  EXPECT_EQ(got.anchor_stride, e.anchor_stride);
  EXPECT_EQ(got.StartFor(100).location, e.StartFor(100).location);
  data[data.size() / 2] ^= 1;
  EXPECT_EQ(DecodeCheckpoint(data, "ckpt", &h2, &segs, &streams2).code(), StatusCode::kCorruption);
}

TEST(FormatTest, CheckpointWithHugeCountsIsRefusedNotThrown) {
  SegmentSummary seg{0, 64, 0, 0, {}};
  std::string data = EncodeCheckpoint(CheckpointHeader{0, 0, 64, 0, 0}, {&seg}, StreamMap{});
  // stream_count sits after magic(8) version(4) partition(4) tail(8) last(8) time(8) segments(4).
  Put64(reinterpret_cast<uint8_t*>(data.data()) + 44, ~0ull);
  size_t body = data.size() - 8;
  Put64(reinterpret_cast<uint8_t*>(data.data()) + body, Checksum(data.data(), body));
  CheckpointHeader h;
  std::vector<SegmentSummary> segs;
  StreamMap streams;
  EXPECT_EQ(DecodeCheckpoint(data, "ckpt", &h, &segs, &streams).code(), StatusCode::kCorruption);
}

TEST(StreamEntryTest, AnchorsStayBoundedAndSpread) {
  StreamEntry e;
  for (uint64_t v = 0; v < 100000; ++v) {
    e.Add(v, v * 10, testing::IdFrom(v), static_cast<int64_t>(v));
    ASSERT_LE(e.anchor_count, limits::kStreamAnchors);
  }
  EXPECT_EQ(e.anchors[0].version, 0u);
  // The nearest start for any version is at most one stride above it.
  for (uint64_t v : {0ull, 1ull, 5000ull, 50000ull, 99998ull}) {
    Anchor a = e.StartFor(v);
    EXPECT_GE(a.version, v);
    EXPECT_LE(a.version - v, e.anchor_stride);
    EXPECT_EQ(a.location, a.version * 10);
  }
}

}  // namespace
}  // namespace annal::format
