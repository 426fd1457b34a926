// Fuzzes the index checkpoint parser, DecodeCheckpoint, with arbitrary
// bytes standing for a partition's index.ckpt.
//
// Each input is parsed twice: as given, and again with its trailing checksum
// recomputed, so the fuzzer gets past a checksum it cannot forge.
//
// When a parse succeeds, the decoded values are encoded again with
// EncodeCheckpoint and decoded once more; the values must be equal field by
// field (a pair assertion). The encoder writes streams in the stream table's
// slot order, not the file's, so the bytes match the input exactly only when
// there is at most one stream; otherwise the two tables must hold the same
// slots, each found again through StreamTable::Find.
//
// The segment indexes a checkpoint embeds are parsed too, as opening a
// partition does (SegmentIndexBuilder::Decode); fuzz_segment_index covers
// that parser on its own.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "annal/assert.h"
#include "checkpoint.h"
#include "format.h"
#include "segment_index.h"
#include "stream_index.h"

namespace {

using annal::CheckpointHeader;
using annal::SegmentSummary;
using annal::StreamSlot;
using annal::StreamTable;
using annal::TimeSample;

struct Decoded {
  CheckpointHeader header;
  std::vector<SegmentSummary> segments;
  StreamTable streams;
};

bool Decode(std::string_view data, Decoded* d) {
  return annal::DecodeCheckpoint(data, "fuzz.ckpt", &d->header, &d->segments, &d->streams).ok();
}

std::string Encode(const Decoded& d) {
  std::vector<const SegmentSummary*> segments;
  for (const SegmentSummary& s : d.segments) segments.push_back(&s);
  return annal::EncodeCheckpoint(d.header, segments, d.streams);
}

bool SameHeader(const CheckpointHeader& a, const CheckpointHeader& b) {
  return a.partition == b.partition && a.tail_segment == b.tail_segment &&
         a.tail_offset == b.tail_offset && a.last_position == b.last_position &&
         a.last_recorded_at_ns == b.last_recorded_at_ns;
}

bool SameSample(const TimeSample& a, const TimeSample& b) {
  return a.position == b.position && a.recorded_at_ns == b.recorded_at_ns && a.offset == b.offset;
}

bool SameSegment(const SegmentSummary& a, const SegmentSummary& b) {
  return a.id == b.id && a.end_offset == b.end_offset && a.first_position == b.first_position &&
         a.last_position == b.last_position && a.first_recorded_at_ns == b.first_recorded_at_ns &&
         a.last_recorded_at_ns == b.last_recorded_at_ns &&
         std::equal(a.samples.begin(), a.samples.end(), b.samples.begin(), b.samples.end(),
                    SameSample) &&
         a.index == b.index;
}

auto Fields(const StreamSlot& s) {
  return std::make_tuple(s.hash, s.head_version, s.head_location, s.first_location, s.name_check,
                         s.head_id_check);
}

bool SameSlot(const StreamSlot& a, const StreamSlot& b) { return Fields(a) == Fields(b); }

// The table's slots, in a canonical order.
std::vector<StreamSlot> SortedSlots(const StreamTable& t) {
  std::vector<StreamSlot> out;
  t.ForEach([&](const StreamSlot& s) { out.push_back(s); });
  std::sort(out.begin(), out.end(),
            [](const StreamSlot& a, const StreamSlot& b) { return Fields(a) < Fields(b); });
  return out;
}

// Every slot `t` holds can be found again by its hash.
void CheckFindable(const StreamTable& t, const std::vector<StreamSlot>& slots) {
  for (const StreamSlot& s : slots) {
    const StreamSlot* found = t.Find(s.hash, [&](const StreamSlot& c) { return SameSlot(c, s); });
    ANNAL_ASSERT(found != nullptr && SameSlot(*found, s));
  }
}

// What opening a partition does with an embedded index: parse it; errors
// are fine, a crash or an unbounded allocation is not.
void CheckEmbeddedIndexes(const std::vector<SegmentSummary>& segments) {
  for (const SegmentSummary& s : segments) {
    if (s.index.empty()) continue;
    auto b = annal::SegmentIndexBuilder::Decode(s.index, "fuzz.ckpt");
    if (!b.ok()) continue;
    std::vector<annal::Run> runs;
    (*b)->Find(0, &runs);
    (void)(*b)->memory_bytes();
  }
}

// Returns whether DecodeCheckpoint accepted `data`.
bool CheckCheckpoint(std::string_view data) {
  Decoded first;
  if (!Decode(data, &first)) return false;
  const std::vector<StreamSlot> slots = SortedSlots(first.streams);
  ANNAL_ASSERT(slots.size() == first.streams.size());
  for (const StreamSlot& s : slots) ANNAL_ASSERT(!s.empty() && s.first_location != 0);
  CheckFindable(first.streams, slots);
  CheckEmbeddedIndexes(first.segments);

  std::string again = Encode(first);
  ANNAL_ASSERT(again.size() == data.size());
  if (first.streams.size() <= 1) ANNAL_ASSERT(again == data);

  Decoded second;
  ANNAL_ASSERT(Decode(again, &second));
  ANNAL_ASSERT(SameHeader(first.header, second.header));
  ANNAL_ASSERT(first.segments.size() == second.segments.size());
  for (size_t i = 0; i < first.segments.size(); ++i)
    ANNAL_ASSERT(SameSegment(first.segments[i], second.segments[i]));
  ANNAL_ASSERT(first.streams.size() == second.streams.size());
  const std::vector<StreamSlot> slots_again = SortedSlots(second.streams);
  ANNAL_ASSERT(
      std::equal(slots.begin(), slots.end(), slots_again.begin(), slots_again.end(), SameSlot));
  CheckFindable(second.streams, slots);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckCheckpoint(input);

  // Second pass with the checksum (the last 8 bytes) made right.
  if (size < 16) return 0;
  std::string fixed(input);
  const size_t body = size - 8;
  annal::format::Put64(reinterpret_cast<uint8_t*>(fixed.data()) + body,
                       annal::format::Checksum(fixed.data(), body));
  CheckCheckpoint(fixed);
  return 0;
}
