// Internals of the consumer checkpoint store (annal/consumers.h) that tests
// and docs/format.md ("The consumer checkpoint store") refer to.
#pragma once

#include <cstdint>

#include "annal/consumers.h"

namespace annal {

// The store's format version, kept in annal_meta; a file of another
// version is refused with kCorruption.
inline constexpr int kCheckpointStoreFormatVersion = 1;
inline constexpr size_t kMaxConsumerNameBytes = 255;

// XXH3-64 over a checkpoint's fields (name, position, updated_at, blob), as
// docs/format.md lays them out. blob_size is not covered: it is blob.size().
uint64_t CheckpointChecksum(const ConsumerCheckpoint& c);

}  // namespace annal
