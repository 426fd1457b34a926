// Writes seed inputs for the fuzz targets: small valid encodings made with
// the engine's own encoders, so the fuzzer starts from real structure.
//
//   make_seeds <corpus-dir>   writes <corpus-dir>/{fuzz_record,fuzz_batch,fuzz_checkpoint}/seed-*
//
// The output is deterministic, so running it again rewrites the same files.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "annal/assert.h"
#include "checkpoint.h"
#include "format.h"
#include "stream_index.h"

namespace {

namespace format = annal::format;
using Bytes = std::vector<uint8_t>;

constexpr int64_t kSomeTimeNs = 1'700'000'000'000'000'000;

void WriteSeed(const std::filesystem::path& dir, const std::string& name, const void* data,
               size_t size) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  ANNAL_ASSERT_MSG(!ec, ec.message().c_str());
  std::string path = (dir / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ANNAL_ASSERT_MSG(f != nullptr, path.c_str());
  ANNAL_ASSERT(size == 0 || std::fwrite(data, 1, size, f) == size);
  ANNAL_ASSERT(std::fclose(f) == 0);
}

void WriteSeed(const std::filesystem::path& dir, const std::string& name, const Bytes& b) {
  WriteSeed(dir, name, b.data(), b.size());
}

annal::EventId SomeId(uint8_t first) {
  annal::EventId id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(first + i);
  return id;
}

format::RecordView Record(std::string_view stream, std::string_view type, std::string_view metadata,
                          std::string_view payload, uint64_t version, uint64_t position) {
  format::RecordView r;
  r.stream = stream;
  r.type = type;
  r.metadata = metadata;
  r.payload = payload;
  r.version = version;
  r.position = position;
  r.recorded_at_ns = kSomeTimeNs;
  r.prev_location = version == 0 ? format::kNoLocation : format::MakeLocation(3, 4096);
  r.id = SomeId(static_cast<uint8_t>(position));
  return r;
}

void Append(const format::RecordView& r, Bytes* out) {
  size_t at = out->size();
  out->resize(
      at + format::RecordSize(r.stream.size(), r.type.size(), r.metadata.size(), r.payload.size()));
  format::EncodeRecord(r, out->data() + at);
}

// A batch of `records`, which must carry positions first_position + i.
Bytes Batch(const std::vector<format::RecordView>& records, uint16_t flags) {
  Bytes b(format::kBatchHeaderBytes);
  for (const format::RecordView& r : records) Append(r, &b);
  b.resize(b.size() + format::kBatchTrailerBytes);
  format::BatchHeader h;
  h.length = static_cast<uint32_t>(b.size());
  h.first_position = records.front().position;
  h.recorded_at_ns = kSomeTimeNs;
  h.count = static_cast<uint32_t>(records.size());
  h.flags = flags;
  format::EncodeBatchHeader(h, b.data());
  format::Put64(b.data() + b.size() - format::kBatchTrailerBytes,
                format::BatchChecksum(b.data(), b.size()));
  return b;
}

void RecordSeeds(const std::filesystem::path& dir) {
  Bytes minimal;
  Append(Record("s", "t", "", "", 0, 1), &minimal);
  WriteSeed(dir, "seed-minimal", minimal);

  Bytes typical;
  Append(Record("account-42", "Deposited", R"({"correlation":"c-1"})", R"({"amount":100})", 3, 17),
         &typical);
  WriteSeed(dir, "seed-typical", typical);

  // A hint flag (high byte) that readers may ignore, and a binary payload.
  const char binary[] = {'\0', '\x01', '\xff', '\x7f', '\x80'};
  format::RecordView hinted = Record("orders", "Placed", "", std::string_view(binary, 5), 0, 9);
  hinted.flags = 0x0100;
  Bytes flagged;
  Append(hinted, &flagged);
  WriteSeed(dir, "seed-hint-flag", flagged);

  // Two records back to back: the parser must stop at the first's length.
  Bytes two = typical;
  Append(Record("account-42", "Withdrawn", "", R"({"amount":5})", 4, 18), &two);
  WriteSeed(dir, "seed-followed-by-another", two);

  // Only the header and stream name: what DecodeRecordHeader follows chains with.
  Bytes cut(typical.begin(), typical.begin() + format::kRecordHeaderBytes + 10);
  WriteSeed(dir, "seed-header-and-stream-only", cut);
}

void BatchSeeds(const std::filesystem::path& dir) {
  WriteSeed(dir, "seed-one-record", Batch({Record("s", "t", "", "", 0, 1)}, 0));

  Bytes three = Batch({Record("account-1", "Opened", "", "{}", 0, 40),
                       Record("account-2", "Opened", R"({"by":"ops"})", "{}", 0, 41),
                       Record("account-1", "Deposited", "", R"({"amount":7})", 1, 42)},
                      0);
  WriteSeed(dir, "seed-three-records", three);

  // A hint flag, then zero-fill as in a preallocated segment.
  Bytes hinted = Batch({Record("orders", "Placed", "", "x", 5, 1000)}, 0x0100);
  hinted.resize(hinted.size() + 128, 0);
  WriteSeed(dir, "seed-hint-flag-then-zeros", hinted);

  // A batch whose trailer was never written: recovery calls it torn.
  Bytes torn = three;
  format::Put64(torn.data() + torn.size() - format::kBatchTrailerBytes, 0);
  WriteSeed(dir, "seed-torn-trailer", torn);
}

void WriteCheckpoint(const std::filesystem::path& dir, const std::string& name,
                     const annal::CheckpointHeader& h,
                     const std::vector<annal::SegmentSummary>& segments,
                     const annal::StreamMap& streams) {
  std::vector<const annal::SegmentSummary*> pointers;
  for (const annal::SegmentSummary& s : segments) pointers.push_back(&s);
  std::string data = annal::EncodeCheckpoint(h, pointers, streams);
  WriteSeed(dir, name, data.data(), data.size());
}

annal::StreamEntry Stream(uint64_t events, uint32_t segment) {
  annal::StreamEntry e;
  for (uint64_t v = 0; v < events; ++v)
    e.Add(v, format::MakeLocation(segment, static_cast<uint32_t>(64 + v * 256)),
          SomeId(static_cast<uint8_t>(v)), kSomeTimeNs + static_cast<int64_t>(v));
  return e;
}

void CheckpointSeeds(const std::filesystem::path& dir) {
  annal::CheckpointHeader h;
  h.partition = 2;
  h.tail_segment = 0;
  h.tail_offset = format::kSegmentHeaderBytes;
  WriteCheckpoint(dir, "seed-empty", h, {}, {});

  annal::SegmentSummary seg0;
  seg0.id = 0;
  seg0.end_offset = static_cast<uint32_t>(format::kSegmentHeaderBytes);
  seg0.NoteBatch(64, 4096, 1, 10);
  seg0.NoteBatch(64 + 300 * 1024, 2048, 11, 5);
  h.tail_offset = seg0.end_offset;
  h.last_position = 15;
  h.last_recorded_at_ns = kSomeTimeNs;
  annal::StreamMap one;
  one.emplace("account-42", Stream(40, 0));
  WriteCheckpoint(dir, "seed-one-segment-one-stream", h, {seg0}, one);

  annal::SegmentSummary seg1;
  seg1.id = 1;
  seg1.end_offset = static_cast<uint32_t>(format::kSegmentHeaderBytes);
  seg1.NoteBatch(64, 1024, 16, 3);
  h.tail_segment = 1;
  h.tail_offset = seg1.end_offset;
  h.last_position = 18;
  annal::StreamMap three = one;
  three.emplace("orders-7", Stream(1, 1));
  // Enough events that the anchors fill and the stride doubles.
  three.emplace("busy", Stream(300, 1));
  WriteCheckpoint(dir, "seed-two-segments-three-streams", h, {seg0, seg1}, three);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path corpus = argv[1];
  RecordSeeds(corpus / "fuzz_record");
  BatchSeeds(corpus / "fuzz_batch");
  CheckpointSeeds(corpus / "fuzz_checkpoint");
  return 0;
}
