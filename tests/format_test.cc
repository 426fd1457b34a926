// The on-disk format's encoders and decoders: round trips, and every check
// a decoder makes refusing damaged bytes.
#include "format.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <tuple>
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
  StreamTable streams;
  for (uint64_t i = 0; i < 1000; ++i)
    streams.Insert(StreamSlot{StreamHash("account-" + std::to_string(i)), i, MakeLocation(0, 64 + 100 * i),
                              MakeLocation(0, 64 + i)});
  SegmentSummary seg{0, 64, 0, 0, 0, 0, {}};
  seg.NoteBatch(64, 30000, 1, 300, 1299);
  CheckpointHeader h{0, 0, 30064, 300, 1299};
  std::string data = EncodeCheckpoint(h, {&seg}, streams);
  CheckpointHeader h2;
  std::vector<SegmentSummary> segs;
  StreamTable streams2;
  ASSERT_TRUE(DecodeCheckpoint(data, "ckpt", &h2, &segs, &streams2).ok());
  EXPECT_EQ(h2.tail_offset, 30064u);
  EXPECT_EQ(h2.last_position, 300u);
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].last_position, 300u);
  EXPECT_EQ(segs[0].first_recorded_at_ns, 1299);
  ASSERT_EQ(segs[0].samples.size(), 1u);
  EXPECT_EQ(segs[0].samples[0].recorded_at_ns, 1299);
  EXPECT_EQ(streams2.size(), 1000u);
  for (uint64_t i = 0; i < 1000; ++i) {
    uint64_t hash = StreamHash("account-" + std::to_string(i));
    const StreamSlot* got = streams2.Find(hash, [](const StreamSlot&) { return true; });
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->head_version, i);
    EXPECT_EQ(got->head_location, MakeLocation(0, 64 + 100 * i));
    EXPECT_EQ(got->first_location, MakeLocation(0, 64 + i));
  }
  data[data.size() / 2] ^= 1;
  EXPECT_EQ(DecodeCheckpoint(data, "ckpt", &h2, &segs, &streams2).code(), StatusCode::kCorruption);
}

TEST(FormatTest, CheckpointWithHugeCountsIsRefusedNotThrown) {
  SegmentSummary seg{0, 64, 0, 0, 0, 0, {}};
  std::string data = EncodeCheckpoint(CheckpointHeader{0, 0, 64, 0, 0}, {&seg}, StreamTable{});
  // stream_count sits after magic(8) version(4) partition(4) tail(8) last(8) time(8) segments(4).
  Put64(reinterpret_cast<uint8_t*>(data.data()) + 44, ~0ull);
  size_t body = data.size() - 8;
  Put64(reinterpret_cast<uint8_t*>(data.data()) + body, Checksum(data.data(), body));
  CheckpointHeader h;
  std::vector<SegmentSummary> segs;
  StreamTable streams;
  EXPECT_EQ(DecodeCheckpoint(data, "ckpt", &h, &segs, &streams).code(), StatusCode::kCorruption);
}

TEST(StreamTableTest, CollidingHashesGetTheirOwnSlots) {
  StreamTable t;
  // 10,000 streams, and 50 pairs sharing a hash as colliding names would.
  for (uint64_t i = 0; i < 10000; ++i) t.Insert(StreamSlot{i * 0x9E3779B97F4A7C15ull, i, 64 + i, 64 + i});
  for (uint64_t i = 0; i < 50; ++i) t.Insert(StreamSlot{i * 0x9E3779B97F4A7C15ull, 7, 1'000'000 + i, 1'000'000 + i});
  EXPECT_EQ(t.size(), 10050u);
  EXPECT_LE(t.size(), static_cast<size_t>(t.memory_bytes() / sizeof(StreamSlot) * StreamTable::kMaxLoad) + 1);
  for (uint64_t i = 0; i < 10000; ++i) {
    uint64_t hash = i * 0x9E3779B97F4A7C15ull;
    std::vector<uint64_t> heads;
    t.Find(hash, [&](const StreamSlot& s) {
      heads.push_back(s.head_location);
      return false;
    });
    std::vector<uint64_t> want{64 + i};
    if (i < 50) want.push_back(1'000'000 + i);
    std::sort(heads.begin(), heads.end());
    ASSERT_EQ(heads, want) << i;
  }
  EXPECT_EQ(t.Find(12345, [](const StreamSlot&) { return true; }), nullptr);
}

using SlotTuple = std::tuple<uint64_t, uint64_t, uint64_t, uint64_t, uint32_t, uint32_t>;

SlotTuple Tuple(const StreamSlot& s) {
  return {s.hash, s.head_version, s.head_location, s.first_location, s.name_check, s.head_id_check};
}

std::vector<SlotTuple> Contents(const StreamTable& t) {
  std::vector<SlotTuple> out;
  t.ForEach([&](const StreamSlot& s) { out.push_back(Tuple(s)); });
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t HashOf(uint64_t i) { return (i + 1) * 0x9E3779B97F4A7C15ull; }

// A capture read a few slots at a time while streams advance and new ones
// arrive is the table as it stood when the capture began.
TEST(StreamTableTest, CaptureIsTheTableAsItWasWhenItBegan) {
  StreamTable t;
  t.Reserve(12000);  // no growth below: growing spoils a capture (next test)
  for (uint64_t i = 0; i < 8000; ++i) t.Insert(StreamSlot{HashOf(i), 0, 64 + i * 8, 64 + i * 8, 1, 1});
  std::vector<SlotTuple> before = Contents(t);
  t.BeginCapture();
  std::vector<SlotTuple> captured;
  std::mt19937_64 rng(7);
  uint64_t next_stream = 8000, next_location = 1'000'000;
  StreamTable::CaptureStep step;
  do {
    // Between steps: advance 50 random streams, some twice, and add 20.
    for (int k = 0; k < 50; ++k) {
      StreamSlot* s = t.Find(HashOf(rng() % 8000), [](StreamSlot&) { return true; });
      ASSERT_NE(s, nullptr);
      t.AdvanceHead(s, s->head_version + 1, next_location++, static_cast<uint32_t>(rng()));
    }
    for (int k = 0; k < 20; ++k, ++next_stream, ++next_location)
      t.Insert(StreamSlot{HashOf(next_stream), 0, next_location, next_location, 2, 2});
    step = t.CaptureSome(300, [&](const StreamSlot& s) { captured.push_back(Tuple(s)); });
  } while (step == StreamTable::CaptureStep::kMore);
  ASSERT_EQ(step, StreamTable::CaptureStep::kDone);
  EXPECT_FALSE(t.capturing());
  std::sort(captured.begin(), captured.end());
  EXPECT_EQ(captured, before);
  // The table itself moved on.
  EXPECT_GT(t.size(), 8000u);
  EXPECT_NE(Contents(t), before);
}

TEST(StreamTableTest, GrowingSpoilsACaptureAndANewOneSucceeds) {
  StreamTable t;
  for (uint64_t i = 0; i < 100; ++i) t.Insert(StreamSlot{HashOf(i), 0, 64 + i, 64 + i, 1, 1});
  t.BeginCapture();
  ASSERT_EQ(t.CaptureSome(10, [](const StreamSlot&) {}), StreamTable::CaptureStep::kMore);
  size_t slots = t.memory_bytes();
  for (uint64_t i = 100; t.memory_bytes() == slots; ++i) t.Insert(StreamSlot{HashOf(i), 0, 64 + i, 64 + i, 1, 1});
  EXPECT_EQ(t.CaptureSome(10, [](const StreamSlot&) {}), StreamTable::CaptureStep::kSpoiled);
  EXPECT_FALSE(t.capturing());
  t.BeginCapture();
  std::vector<SlotTuple> captured;
  EXPECT_EQ(t.CaptureSome(SIZE_MAX, [&](const StreamSlot& s) { captured.push_back(Tuple(s)); }),
            StreamTable::CaptureStep::kDone);
  std::sort(captured.begin(), captured.end());
  EXPECT_EQ(captured, Contents(t));
}

// An index encoded up to a limit, in steps between which its writer adds
// events, is byte for byte the index of the events before the limit.
TEST(SegmentIndexTest, EncodingUpToALimitLeavesOutLaterEvents) {
  constexpr uint32_t kSegment = 5;
  SegmentIndexBuilder growing(kSegment), expected(kSegment);
  std::vector<uint64_t> heads(6000, kNoLocation);  // per stream: location of its last event
  std::vector<uint64_t> versions(6000, 0);
  std::mt19937_64 rng(11);
  uint32_t offset = 64;
  auto add = [&](SegmentIndexBuilder* also) {
    size_t stream = rng() % heads.size();
    uint64_t version = heads[stream] == kNoLocation ? 0 : versions[stream] + 1;
    growing.Add(HashOf(stream), version, heads[stream], offset);
    if (also) also->Add(HashOf(stream), version, heads[stream], offset);
    heads[stream] = MakeLocation(kSegment, offset);
    versions[stream] = version;
    offset += 100;
  };
  for (int i = 0; i < 20000; ++i) add(&expected);
  uint32_t limit = offset;
  std::vector<TimeSample> samples{{1, 100, 64}, {5000, 200, 500'064}};
  int steps = 0;
  std::string encoded = growing.Encode(1, samples, limit, [&](const std::function<void()>& step) {
    step();
    ++steps;
    for (int i = 0; i < 500; ++i) add(nullptr);  // streams old and new, past the limit
  });
  EXPECT_GT(steps, 4) << "the encoding must have been read in several steps";
  EXPECT_EQ(encoded, expected.Encode(1, samples));
  auto decoded = SegmentIndexBuilder::Decode(encoded, "idx");
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ((*decoded)->Encode(1, samples), encoded);
  // A decoded builder (a checkpoint's, at open) keeps its runs in hash
  // order, and recovery adds later events to it: up to the same limit it
  // still encodes what it was decoded from.
  for (int i = 0; i < 3000; ++i) {
    size_t stream = rng() % heads.size();
    uint64_t version = heads[stream] == kNoLocation ? 0 : versions[stream] + 1;
    (*decoded)->Add(HashOf(stream), version, heads[stream], offset);
    heads[stream] = MakeLocation(kSegment, offset);
    versions[stream] = version;
    offset += 100;
  }
  EXPECT_EQ((*decoded)->Encode(1, samples, limit), encoded);
}

TEST(SegmentIndexTest, BuilderRunsFollowBackPointers) {
  SegmentIndexBuilder b(3);
  // Stream A: versions 10..12 continuing from segment 2; stream B new here;
  // stream C shares A's hash.
  b.Add(1, 10, MakeLocation(2, 500), 64);
  b.Add(2, 0, kNoLocation, 200);
  b.Add(1, 11, MakeLocation(3, 64), 300);
  b.Add(1, 0, kNoLocation, 400);  // C
  b.Add(1, 12, MakeLocation(3, 300), 500);
  b.Add(1, 1, MakeLocation(3, 400), 600);  // C
  annal::Run run;
  ASSERT_TRUE(b.FindAt(1, 500, 0, &run));
  EXPECT_EQ(run.first_version, 10u);
  EXPECT_EQ(run.prev_location, MakeLocation(2, 500));
  EXPECT_EQ(run.offsets, (std::vector<uint32_t>{64, 300, 500}));
  ASSERT_TRUE(b.FindAt(1, 300, 11, &run));
  EXPECT_EQ(run.first_version, 11u);
  EXPECT_EQ(run.offsets, (std::vector<uint32_t>{300}));
  ASSERT_TRUE(b.FindAt(1, 600, 0, &run));
  EXPECT_EQ(run.first_version, 0u);
  EXPECT_EQ(run.offsets, (std::vector<uint32_t>{400, 600}));
  EXPECT_FALSE(b.FindAt(2, 300, 0, &run));
}

// The builder's runs by hash, against a plain model: hashes that agree in
// their low bits (so the table's probes run long and it grows many times)
// and hashes shared by several streams, whose runs chain.
TEST(SegmentIndexTest, BuilderFindsEveryRunOfEveryHash) {
  constexpr uint32_t kSegment = 4;
  SegmentIndexBuilder b(kSegment);
  struct Stream {
    uint64_t hash, next_version = 0, head = kNoLocation;
    std::vector<uint32_t> offsets;
  };
  std::vector<Stream> streams;
  for (uint64_t i = 0; i < 3000; ++i) streams.push_back(Stream{(i % 1000) << 32 | 7});  // 3 streams a hash
  std::mt19937_64 rng(5);
  uint32_t offset = 64;
  for (int i = 0; i < 30000; ++i) {
    Stream& s = streams[rng() % streams.size()];
    b.Add(s.hash, s.next_version++, s.head, offset);
    s.head = MakeLocation(kSegment, offset);
    s.offsets.push_back(offset);
    offset += 64;
  }
  for (const Stream& s : streams) {
    if (s.offsets.empty()) continue;
    annal::Run run;
    ASSERT_TRUE(b.FindAt(s.hash, s.offsets.back(), 0, &run)) << s.hash;
    EXPECT_EQ(run.offsets, s.offsets);
    EXPECT_EQ(run.first_version, 0u);
  }
  // Find gives every run of a hash, in the order they were begun.
  for (uint64_t h = 0; h < 1000; ++h) {
    std::vector<annal::Run> runs;
    b.Find(h << 32 | 7, &runs);
    std::vector<uint32_t> firsts, expected;
    for (const annal::Run& r : runs) firsts.push_back(r.offsets.front());
    for (uint64_t i = h; i < streams.size(); i += 1000)
      if (!streams[i].offsets.empty()) expected.push_back(streams[i].offsets.front());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(firsts, expected) << h;
  }
  annal::Run none;
  EXPECT_FALSE(b.FindAt(uint64_t{1000} << 32 | 7, 64, 0, &none));
}

}  // namespace
}  // namespace annal::format
