// Writes seed inputs for the fuzz targets: small valid encodings made with
// the engine's and the wire codec's own encoders, so the fuzzer starts from
// real structure.
//
//   make_seeds <corpus-dir>   writes <corpus-dir>/<target>/seed-* for fuzz_record,
//                             fuzz_batch, fuzz_checkpoint, fuzz_segment_index,
//                             fuzz_sealed and fuzz_frame
//
// The output is deterministic, so running it again rewrites the same files.
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "annal/assert.h"
#include "fuzz_files.h"
#include "annal/limits.h"
#include "block_cache.h"
#include "checkpoint.h"
#include "format.h"
#include "fs.h"
#include "protocol.h"
#include "sealed.h"
#include "segment.h"
#include "segment_index.h"
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
                     const annal::StreamTable& streams) {
  std::vector<const annal::SegmentSummary*> pointers;
  for (const annal::SegmentSummary& s : segments) pointers.push_back(&s);
  std::string data = annal::EncodeCheckpoint(h, pointers, streams);
  WriteSeed(dir, name, data.data(), data.size());
}

// The stream table's slot for `stream`, whose `events` events (versions
// 0..events-1) lie 256 bytes apart in `segment`.
annal::StreamSlot Slot(std::string_view stream, uint64_t events, uint32_t segment) {
  annal::StreamSlot s;
  s.hash = format::StreamHash(stream);
  s.head_version = events - 1;
  s.head_location = format::MakeLocation(segment, static_cast<uint32_t>(64 + (events - 1) * 256));
  s.first_location = format::MakeLocation(segment, 64);
  s.name_check = format::StreamNameCheck(stream);
  s.head_id_check = format::EventIdCheck(SomeId(static_cast<uint8_t>(events - 1)));
  return s;
}

// A segment index of `segment` holding `streams`, each with `events`
// events chained through prev_location, interleaved 128 bytes apart.
annal::SegmentIndexBuilder Index(uint32_t segment, const std::vector<uint64_t>& hashes,
                                 uint32_t events) {
  annal::SegmentIndexBuilder b(segment);
  std::vector<uint64_t> prev(hashes.size(), format::kNoLocation);
  uint32_t offset = static_cast<uint32_t>(format::kSegmentHeaderBytes);
  for (uint32_t v = 0; v < events; ++v)
    for (size_t i = 0; i < hashes.size(); ++i) {
      b.Add(hashes[i], v, prev[i], offset);
      prev[i] = format::MakeLocation(segment, offset);
      offset += 128;
    }
  return b;
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
  seg0.NoteBatch(64, 4096, 1, 10, kSomeTimeNs);
  seg0.NoteBatch(64 + 300 * 1024, 2048, 11, 5, kSomeTimeNs + 1000);
  h.tail_offset = seg0.end_offset;
  h.last_position = 15;
  h.last_recorded_at_ns = kSomeTimeNs + 1000;
  annal::StreamTable one;
  one.Insert(Slot("account-42", 40, 0));
  WriteCheckpoint(dir, "seed-one-segment-one-stream", h, {seg0}, one);

  // The tail segment has no index file yet: the checkpoint carries its
  // index, as Partition writes it (no samples inside; the summary has them).
  annal::SegmentSummary seg1;
  seg1.id = 1;
  seg1.end_offset = static_cast<uint32_t>(format::kSegmentHeaderBytes);
  seg1.NoteBatch(64, 1024, 16, 3, kSomeTimeNs + 2000);
  seg1.index = Index(1, {format::StreamHash("orders-7"), format::StreamHash("busy")}, 3)
                   .Encode(h.partition, {});
  h.tail_segment = 1;
  h.tail_offset = seg1.end_offset;
  h.last_position = 18;
  h.last_recorded_at_ns = kSomeTimeNs + 2000;
  annal::StreamTable three;
  three.Insert(Slot("account-42", 40, 0));
  three.Insert(Slot("orders-7", 1, 1));
  three.Insert(Slot("busy", 300, 1));
  WriteCheckpoint(dir, "seed-two-segments-three-streams", h, {seg0, seg1}, three);

  // Two streams whose names hash alike: two slots with one hash.
  annal::StreamTable collide = three;
  annal::StreamSlot twin = Slot("account-43", 2, 1);
  twin.hash = format::StreamHash("account-42");
  collide.Insert(twin);
  WriteCheckpoint(dir, "seed-hash-collision", h, {seg0, seg1}, collide);
}

// --- fuzz_segment_index: index files from SegmentIndexBuilder, for
// partition 0's segment 0 (what the target opens).

void SegmentIndexSeeds(const std::filesystem::path& dir) {
  auto write = [&](const std::string& name, const annal::SegmentIndexBuilder& b,
                   const std::vector<annal::TimeSample>& samples) {
    std::string data = b.Encode(0, samples);
    WriteSeed(dir, name, data.data(), data.size());
  };
  write("seed-empty", annal::SegmentIndexBuilder(0), {});

  const std::vector<annal::TimeSample> samples = {{1, kSomeTimeNs, 64},
                                                  {40, kSomeTimeNs + 5000, 64 + 70 * 1024}};
  write("seed-three-streams",
        Index(0,
              {format::StreamHash("account-1"), format::StreamHash("account-2"),
               format::StreamHash("orders")},
              4),
        samples);

  // A stream continuing from an earlier segment, and two streams whose
  // names hash alike: runs with one hash, told apart by their offsets.
  annal::SegmentIndexBuilder collide = Index(0, {7, 7, 9}, 3);
  collide.Add(5, 12, format::MakeLocation(0, 64), 64 * 1024);  // not a run's tail: a new run
  write("seed-hash-collision", collide, samples);

  // More runs than fit one page: two fences.
  std::vector<uint64_t> many;
  for (uint64_t i = 0; i < format::kRunsPerPage + 8; ++i) many.push_back(i * 0x9e3779b97f4a7c15ull);
  write("seed-two-pages", Index(0, many, 1), {samples[0]});
}

// --- fuzz_sealed: sealed files made by SealSegment from a segment of the
// smallest size, partition 0's segment 0 of a one-partition store.


// The bytes of a sealed segment holding `batches`, sealed in blocks of
// about `block_bytes`.
std::string Sealed(const std::vector<Bytes>& batches, size_t block_bytes) {
  annal::fuzz::ScratchDir dir("annal-make-seeds");
  const format::SegmentHeader header{0, 0, annal::limits::kMinSegmentBytes, 1};
  Bytes file(header.segment_bytes, 0);
  format::EncodeSegmentHeader(header, file.data());
  size_t at = format::kSegmentHeaderBytes;
  for (const Bytes& b : batches) {
    ANNAL_ASSERT(at + b.size() <= file.size());
    std::copy(b.begin(), b.end(), file.begin() + static_cast<ptrdiff_t>(at));
    at += b.size();
  }
  WriteSeed(dir.path(), format::SegmentFileName(0), file);

  annal::BlockCache cache(0);
  auto seg = annal::OpenSegment(dir.path(), 0, header, &cache);
  ANNAL_ASSERT_MSG(seg.ok(), seg.status().ToString().c_str());
  annal::SealOptions options;
  options.block_bytes = block_bytes;
  auto sealed = annal::SealSegment(**seg, at, dir.path(), options);
  ANNAL_ASSERT_MSG(sealed.ok(), sealed.status().ToString().c_str());
  auto bytes = annal::fs::ReadWholeFile(annal::fs::Join(dir.path(), format::SegmentFileName(0)));
  ANNAL_ASSERT(bytes.ok() && bytes->size() == sealed->stored_bytes);
  return std::move(*bytes);
}

// `v2` as the version 1 layout, which readers still accept: no page
// table, the footer's map checksum over the whole map.
std::string AsVersion1(const std::string& v2) {
  const auto* p = reinterpret_cast<const uint8_t*>(v2.data());
  const size_t footer_at = v2.size() - format::kSealedFooterBytes;
  const uint32_t blocks = format::Get32(p + footer_at + 12);
  const uint64_t map_offset = format::Get64(p + footer_at + 16);
  const size_t table_at = map_offset + size_t{blocks} * format::kBlockEntryBytes;
  std::string footer = v2.substr(footer_at);
  auto* f = reinterpret_cast<uint8_t*>(footer.data());
  format::Put32(f + 8, 1);
  format::Put64(f + 48, format::Checksum(p + map_offset, size_t{blocks} * format::kBlockEntryBytes));
  format::Put64(f + 56, format::Checksum(f, 56));
  return v2.substr(0, table_at) + footer;
}

void SealedSeeds(const std::filesystem::path& dir) {
  auto write = [&](const std::string& name, const std::string& data) {
    WriteSeed(dir, name, data.data(), data.size());
  };
  write("seed-empty", Sealed({}, 64 * 1024));

  std::vector<Bytes> batches;
  uint64_t position = 1;
  for (int i = 0; i < 5; ++i) {
    std::vector<format::RecordView> records;
    for (int k = 0; k <= i % 3; ++k, ++position)
      records.push_back(Record(i % 2 ? "account-1" : "account-0", "Deposited", "",
                               R"({"amount":100})", position - 1, position));
    batches.push_back(Batch(records, 0));
  }
  write("seed-one-block", Sealed(batches, 64 * 1024));
  // Blocks of about one batch each.
  write("seed-several-blocks", Sealed(batches, 256));
  write("seed-version-1", AsVersion1(Sealed(batches, 256)));
  // More blocks than one map page holds.
  std::vector<Bytes> many = batches;
  for (int i = 0; i < 60; ++i, ++position)
    many.push_back(Batch({Record("account-" + std::to_string(i % 7), "Deposited", "",
                                 R"({"amount":)" + std::to_string(i * 37) + R"(,"note":"a deposit of )" +
                                     std::to_string(i) + R"( with some padding to fill blocks"})",
                                 0, position)},
                         0));
  write("seed-map-pages", Sealed(many, 32));

  // A batch larger than a block is a block alone.
  std::string big(3000, 'x');
  batches.push_back(Batch({Record("blob", "Stored", "", big, 0, position)}, 0));
  write("seed-large-batch-alone", Sealed(batches, 1024));
}

// --- fuzz_frame: frames from the wire codec's own encoders (server/protocol.h).

namespace protocol = annal::protocol;

annal::RecordedEvent SomeEvent(uint64_t version, uint64_t position) {
  annal::RecordedEvent e;
  e.stream = "account-42";
  e.version = annal::StreamVersion(version);
  e.position = annal::GlobalPosition(position);
  e.recorded_at_ns = kSomeTimeNs;
  e.id = SomeId(static_cast<uint8_t>(position));
  e.type = "AccountCredited";
  e.metadata = "{}";
  e.payload = R"({"amount":10})";
  return e;
}

void WriteFrames(const std::filesystem::path& dir, const std::string& name,
                 const std::string& frames) {
  WriteSeed(dir, name, frames.data(), frames.size());
}

// What a client sends: HELLO, then one of every request, pipelined.
std::string ClientSession() {
  std::string out;
  protocol::AppendFrame(&out, protocol::Op::kHello, 1, protocol::Hello{1, "annal-cli"});
  protocol::AppendFrame(&out, protocol::Op::kPing, 2, protocol::Ping{42});
  protocol::AppendRequest append;
  append.stream = "account-42";
  append.expected = annal::ExpectedVersion::Exact(3);
  annal::EventData a;
  a.id = SomeId(7);
  a.type = "AccountCredited";
  a.metadata = "{}";
  a.payload = R"({"amount":10})";
  annal::EventData b;  // nil id, empty metadata, binary payload
  b.type = "AccountDebited";
  b.payload = std::string("\0\x01\xff", 3);
  append.events = {a, b};
  protocol::AppendFrame(&out, protocol::Op::kAppend, 3, append);
  protocol::AppendFrame(
      &out, protocol::Op::kReadStream, 4,
      protocol::ReadStreamRequest{"account-42", 0, annal::ReadDirection::kBackward, 100});
  protocol::ReadAllRequest read_all;
  read_all.from_position = 1;
  read_all.max_count = 1000;
  read_all.filter = {
      protocol::Filter::Kind::kCategory, "account", {"AccountCredited", "AccountDebited"}};
  protocol::AppendFrame(&out, protocol::Op::kReadAll, 5, read_all);
  protocol::AppendFrame(&out, protocol::Op::kStreamInfo, 6,
                        protocol::StreamInfoRequest{"account-42"});
  protocol::SubscribeRequest all;
  all.from = 1;
  all.filter = {protocol::Filter::Kind::kStreamPrefix, "account-", {}};
  protocol::AppendFrame(&out, protocol::Op::kSubscribe, 7, all);
  protocol::SubscribeRequest one;
  one.scope = protocol::SubscribeRequest::Scope::kStream;
  one.stream = "account-42";
  protocol::AppendFrame(&out, protocol::Op::kSubscribe, 8, one);
  protocol::AppendFrame(&out, protocol::Op::kUnsubscribe, 9, protocol::UnsubscribeRequest{7});
  // The state requests: a load of each target kind, a snapshot a client
  // folded, and the list of a stream's snapshots.
  protocol::LoadStateRequest head;
  head.stream = "account-42";
  protocol::AppendFrame(&out, protocol::Op::kLoadState, 11, head);
  protocol::LoadStateRequest at_version = head;
  at_version.target = annal::StateTarget::Version(3);
  at_version.reducer = "balance";
  at_version.schema_version = 2;
  at_version.max_events = 100;
  protocol::AppendFrame(&out, protocol::Op::kLoadState, 12, at_version);
  protocol::LoadStateRequest as_of = head;
  as_of.target = annal::StateTarget::AsOf(kSomeTimeNs);
  as_of.plan_only = true;
  protocol::AppendFrame(&out, protocol::Op::kLoadState, 13, as_of);
  protocol::WriteSnapshotRequest write;
  write.snapshot.stream = "account-42";
  write.snapshot.version = annal::StreamVersion(3);
  write.snapshot.reducer = "balance";
  write.snapshot.schema_version = 2;
  write.snapshot.state = R"({"balance":40})";
  protocol::AppendFrame(&out, protocol::Op::kWriteSnapshot, 14, write);
  protocol::AppendFrame(&out, protocol::Op::kListSnapshots, 15,
                        protocol::ListSnapshotsRequest{"account-42"});
  protocol::AppendEmptyFrame(&out, protocol::Op::kReadHead, 16);
  protocol::ReadAllRangeRequest range;
  range.from_position = 1;
  range.until_position = 1000;
  range.max_count = 100;
  range.filter.kind = protocol::Filter::Kind::kCategory;
  range.filter.value = "account";
  protocol::AppendFrame(&out, protocol::Op::kReadAllRange, 17, range);
  protocol::AppendFrame(&out, protocol::Op::kGetCheckpoint, 18,
                        protocol::GetCheckpointRequest{"balances"});
  protocol::AppendFrame(
      &out, protocol::Op::kSetCheckpoint, 19,
      protocol::SetCheckpointRequest{
          "balances", 42, annal::CheckpointExpectation::At(annal::GlobalPosition(40)), "rows=3"});
  protocol::AppendFrame(
      &out, protocol::Op::kSetCheckpoint, 20,
      protocol::SetCheckpointRequest{"audit", 1, annal::CheckpointExpectation::None(), ""});
  protocol::AppendFrame(&out, protocol::Op::kDeleteCheckpoint, 21,
                        protocol::DeleteCheckpointRequest{"audit"});
  protocol::AppendFrame(&out, protocol::Op::kListCheckpoints, 22,
                        protocol::ListCheckpointsRequest{"bal"});
  return out;
}

// What a server sends back: one of every response.
std::string ServerSession() {
  std::string out;
  protocol::HelloOk ok;
  ok.max_in_flight = 1024;
  ok.server_name = "annald";
  protocol::AppendFrame(&out, protocol::Op::kHelloOk, 1, ok);
  protocol::AppendFrame(&out, protocol::Op::kPong, 2, protocol::Ping{42});
  annal::AppendResult appended;
  appended.first_version = annal::StreamVersion(4);
  appended.last_version = annal::StreamVersion(5);
  appended.first_position = annal::GlobalPosition(10);
  appended.last_position = annal::GlobalPosition(11);
  appended.recorded_at_ns = kSomeTimeNs;
  protocol::AppendFrame(&out, protocol::Op::kAppendOk, 3, appended);
  protocol::AppendFrame(&out, protocol::Op::kEvents, 4,
                        protocol::EventsResponse{{SomeEvent(5, 11), SomeEvent(4, 10)}});
  protocol::AppendFrame(&out, protocol::Op::kAllEvents, 5,
                        protocol::AllEventsResponse{12, {SomeEvent(4, 10)}});
  annal::StreamInfo info;
  info.stream = "account-42";
  info.head_version = annal::StreamVersion(5);
  info.event_count = 6;
  info.first_recorded_at_ns = info.last_recorded_at_ns = kSomeTimeNs;
  protocol::AppendFrame(&out, protocol::Op::kStreamInfoOk, 6, info);
  protocol::AppendFrame(&out, protocol::Op::kSubscribed, 7, protocol::SubscribedResponse{11});
  protocol::AppendFrame(&out, protocol::Op::kSubEvents, 7,
                        protocol::EventsResponse{{SomeEvent(0, 1)}});
  protocol::AppendFrame(&out, protocol::Op::kCaughtUp, 7, protocol::CaughtUp{11});
  protocol::AppendFrame(
      &out, protocol::Op::kSubDropped, 8,
      protocol::ErrorResponse{protocol::ErrorCode::kSubscriptionDropped, -1, "too slow"});
  protocol::AppendEmptyFrame(&out, protocol::Op::kUnsubscribed, 9);
  protocol::AppendFrame(
      &out, protocol::Op::kError, 10,
      protocol::ErrorResponse{protocol::ErrorCode::kWrongExpectedVersion, 5, "at 5, not 3"});
  annal::State state;
  state.stream = "account-42";
  state.reducer = "json-merge-patch";
  state.schema_version = 1;
  state.version = annal::StreamVersion(5);
  state.recorded_at_ns = kSomeTimeNs;
  state.state = R"({"balance":40})";
  state.snapshot_version = annal::StreamVersion(3);
  state.events_folded = 2;
  protocol::AppendFrame(&out, protocol::Op::kState, 11, protocol::StateResponse{state});
  annal::Snapshot snapshot;
  snapshot.version = annal::StreamVersion(3);
  snapshot.recorded_at_ns = kSomeTimeNs;
  snapshot.reducer = "balance";
  snapshot.schema_version = 2;
  snapshot.state = R"({"balance":40})";
  snapshot.state_size = snapshot.state.size();
  snapshot.taken_at_ns = kSomeTimeNs + 1;
  annal::StatePlan plan;
  plan.target_version = annal::StreamVersion(5);
  plan.target_recorded_at_ns = kSomeTimeNs;
  plan.snapshot = snapshot;
  plan.events = {SomeEvent(4, 10), SomeEvent(5, 11)};
  protocol::AppendFrame(&out, protocol::Op::kStatePlan, 12, protocol::StatePlanResponse{plan});
  annal::StatePlan replay;
  replay.target_version = annal::StreamVersion(0);
  replay.target_recorded_at_ns = kSomeTimeNs;
  replay.complete = false;
  replay.events = {SomeEvent(0, 1)};
  protocol::AppendFrame(&out, protocol::Op::kStatePlan, 13, protocol::StatePlanResponse{replay});
  protocol::AppendFrame(&out, protocol::Op::kSnapshotWritten, 14,
                        protocol::SnapshotWritten{kSomeTimeNs});
  annal::Snapshot listed = snapshot;
  listed.state.clear();
  protocol::AppendFrame(&out, protocol::Op::kSnapshots, 15,
                        protocol::SnapshotsResponse{{listed, listed}});
  protocol::AppendFrame(&out, protocol::Op::kHeadInfo, 16, protocol::HeadInfo{11, kSomeTimeNs, 3});
  protocol::AppendFrame(&out, protocol::Op::kAllEvents, 17,
                        protocol::AllEventsResponse{12, {SomeEvent(0, 11)}});
  annal::ConsumerCheckpoint checkpoint;
  checkpoint.name = "balances";
  checkpoint.position = annal::GlobalPosition(40);
  checkpoint.updated_at_ns = kSomeTimeNs;
  checkpoint.blob = "rows=3";
  checkpoint.blob_size = checkpoint.blob.size();
  protocol::AppendFrame(&out, protocol::Op::kCheckpoint, 18,
                        protocol::CheckpointResponse{checkpoint});
  protocol::AppendFrame(&out, protocol::Op::kCheckpoint, 23, protocol::CheckpointResponse{});
  protocol::AppendFrame(&out, protocol::Op::kCheckpointSet, 19,
                        protocol::CheckpointSet{kSomeTimeNs});
  protocol::ErrorResponse conflict{protocol::ErrorCode::kWrongExpectedVersion, 41,
                                   "consumer 'audit': expected no checkpoint"};
  protocol::AppendFrame(&out, protocol::Op::kError, 20, conflict);
  protocol::AppendFrame(&out, protocol::Op::kCheckpointDeleted, 21,
                        protocol::CheckpointDeleted{true});
  checkpoint.blob.clear();
  protocol::AppendFrame(&out, protocol::Op::kCheckpoints, 22,
                        protocol::CheckpointsResponse{{checkpoint, checkpoint}});
  return out;
}

// Walks `frames` by their length fields and writes each frame on its own.
void WriteEachFrame(const std::filesystem::path& dir, const std::string& prefix,
                    const std::string& frames) {
  size_t at = 0;
  while (at < frames.size()) {
    protocol::FrameHeader h;
    ANNAL_ASSERT(protocol::DecodeFrameHeader(reinterpret_cast<const uint8_t*>(frames.data() + at),
                                             protocol::kDefaultMaxFrameBytes, &h)
                     .ok());
    WriteFrames(dir, prefix + protocol::OpName(h.op) + "-" + std::to_string(h.request_id),
                frames.substr(at, h.length));
    at += h.length;
  }
}

void FrameSeeds(const std::filesystem::path& dir) {
  const std::string client = ClientSession();
  const std::string server = ServerSession();
  WriteFrames(dir, "seed-client-session", client);
  WriteFrames(dir, "seed-server-session", server);
  WriteEachFrame(dir, "seed-frame-", client);
  WriteEachFrame(dir, "seed-frame-", server);
  // A frame cut short, as a server sees it while the rest is in flight.
  WriteFrames(dir, "seed-truncated-append", client.substr(0, 60));
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
  SegmentIndexSeeds(corpus / "fuzz_segment_index");
  SealedSeeds(corpus / "fuzz_sealed");
  FrameSeeds(corpus / "fuzz_frame");
  return 0;
}
