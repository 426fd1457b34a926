// Fuzzes the index checkpoint parser, DecodeCheckpoint, with arbitrary
// bytes standing for a partition's index.ckpt.
//
// Each input is parsed twice: as given, and again with its trailing checksum
// recomputed, so the fuzzer gets past a checksum it cannot forge.
//
// When a parse succeeds, the decoded values are encoded again with
// EncodeCheckpoint and decoded once more; the values must be equal (a pair
// assertion). Streams live in a hash map whose order the encoder follows, so
// the bytes match the input exactly only when there is at most one stream;
// otherwise only their count must match.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "annal/assert.h"
#include "checkpoint.h"
#include "format.h"

namespace {

using annal::CheckpointHeader;
using annal::SegmentSummary;
using annal::StreamEntry;
using annal::StreamMap;

struct Decoded {
  CheckpointHeader header;
  std::vector<SegmentSummary> segments;
  StreamMap streams;
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

bool SameSegment(const SegmentSummary& a, const SegmentSummary& b) {
  if (a.id != b.id || a.end_offset != b.end_offset || a.first_position != b.first_position ||
      a.last_position != b.last_position || a.samples.size() != b.samples.size())
    return false;
  for (size_t i = 0; i < a.samples.size(); ++i)
    if (a.samples[i].position != b.samples[i].position ||
        a.samples[i].offset != b.samples[i].offset)
      return false;
  return true;
}

bool SameStream(const StreamEntry& a, const StreamEntry& b) {
  if (a.head_version != b.head_version || a.head_location != b.head_location ||
      a.head_event_id != b.head_event_id || a.first_recorded_at_ns != b.first_recorded_at_ns ||
      a.last_recorded_at_ns != b.last_recorded_at_ns || a.anchor_stride != b.anchor_stride ||
      a.anchor_count != b.anchor_count)
    return false;
  for (uint8_t i = 0; i < a.anchor_count; ++i)
    if (a.anchors[i].version != b.anchors[i].version ||
        a.anchors[i].location != b.anchors[i].location)
      return false;
  return true;
}

// Returns whether DecodeCheckpoint accepted `data`.
bool CheckCheckpoint(std::string_view data) {
  Decoded first;
  if (!Decode(data, &first)) return false;
  for (const auto& [name, e] : first.streams) {
    ANNAL_ASSERT(!name.empty() && name.size() <= annal::limits::kMaxStreamNameBytes);
    ANNAL_ASSERT(e.anchor_count <= e.anchors.size());
    ANNAL_ASSERT(e.anchor_stride != 0);
  }

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
  for (const auto& [name, e] : first.streams) {
    auto it = second.streams.find(name);
    ANNAL_ASSERT(it != second.streams.end());
    ANNAL_ASSERT(SameStream(e, it->second));
  }
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
