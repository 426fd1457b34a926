// The in-memory stream index of one partition: per stream, what appends
// need to check expected versions and what reads need to find events.
//
// Per stream it keeps the head (version, location, event id), the first and
// last commit times, and up to limits::kStreamAnchors anchors: locations of
// versions that are multiples of a stride which doubles as the stream grows.
// Every record on disk points back to the previous event of its stream, so a
// read starts at the nearest anchor (or the head) at or above its target and
// follows those back-pointers. Memory is therefore bounded per stream
// (docs/architecture.md states the bytes), whatever the number of events;
// the cost is at most one stride of back-pointer hops per stream read.
//
// Thread-safety: none of its own; the owning Partition guards it.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "annal/limits.h"
#include "annal/types.h"

namespace annal {

struct Anchor {
  uint64_t version = 0;
  uint64_t location = 0;
};

struct StreamEntry {
  static constexpr uint32_t kInitialStride = 16;

  uint64_t head_version = 0;
  uint64_t head_location = 0;
  EventId head_event_id{};
  int64_t first_recorded_at_ns = 0;
  int64_t last_recorded_at_ns = 0;
  uint32_t anchor_stride = kInitialStride;
  uint8_t anchor_count = 0;
  std::array<Anchor, limits::kStreamAnchors> anchors{};

  // Records the stream's next event. REQUIRES: version is head_version + 1,
  // or 0 for a new entry.
  void Add(uint64_t version, uint64_t location, const EventId& id, int64_t recorded_at_ns);
  // The nearest known event at or above `version` (REQUIRES: <= head).
  Anchor StartFor(uint64_t version) const;
};

// Heterogeneous lookup by string_view, so reads need not build a string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

using StreamMap = std::unordered_map<std::string, StreamEntry, StringHash, std::equal_to<>>;

}  // namespace annal
