#include "stream_index.h"

#include "annal/assert.h"

namespace annal {

void StreamEntry::Add(uint64_t version, uint64_t location, const EventId& id,
                      int64_t recorded_at_ns) {
  if (version == 0) {
    ANNAL_ASSERT(anchor_count == 0);
    first_recorded_at_ns = recorded_at_ns;
  } else {
    ANNAL_ASSERT(version == head_version + 1);
  }
  head_version = version;
  head_location = location;
  head_event_id = id;
  last_recorded_at_ns = recorded_at_ns;
  if (version % anchor_stride != 0) return;
  if (anchor_count == anchors.size()) {
    // Full: keep every other anchor and double the stride.
    uint8_t kept = 0;
    for (uint8_t i = 0; i < anchor_count; ++i)
      if (anchors[i].version % (2ull * anchor_stride) == 0) anchors[kept++] = anchors[i];
    anchor_count = kept;
    anchor_stride *= 2;
    if (version % anchor_stride != 0) return;
  }
  anchors[anchor_count++] = Anchor{version, location};
}

Anchor StreamEntry::StartFor(uint64_t version) const {
  ANNAL_ASSERT(version <= head_version);
  for (uint8_t i = 0; i < anchor_count; ++i)
    if (anchors[i].version >= version) return anchors[i];
  return Anchor{head_version, head_location};
}

}  // namespace annal
