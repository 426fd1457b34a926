// Every fixed limit of the engine, in one place. Limits that an operator may
// tune live in Options (options.h) with these as their defaults or bounds.
#pragma once

#include <cstddef>
#include <cstdint>

namespace annal::limits {

// A stream name is 1..255 bytes of UTF-8. One byte holds its length on disk.
inline constexpr size_t kMaxStreamNameBytes = 255;
// An event type is 1..255 bytes.
inline constexpr size_t kMaxEventTypeBytes = 255;
// Metadata (JSON by convention) is at most 64 KiB.
inline constexpr size_t kMaxMetadataBytes = 64 * 1024;
// Default and hard ceiling of one event's payload.
inline constexpr size_t kDefaultMaxPayloadBytes = 1024 * 1024;
inline constexpr size_t kMaxPayloadBytesCeiling = 16 * 1024 * 1024;
// Events in one append call.
inline constexpr size_t kMaxEventsPerAppend = 10'000;
// One batch (the unit written and checksummed) is at most this large, so one
// append (which must fit one batch) is bounded too.
inline constexpr size_t kDefaultMaxBatchBytes = 8 * 1024 * 1024;
inline constexpr size_t kMaxBatchBytesCeiling = 64 * 1024 * 1024;
// Partitions are fixed when the store is created.
inline constexpr uint32_t kMaxPartitions = 256;
// Segment files: size bounds. A location packs the offset in 32 bits.
inline constexpr uint64_t kMinSegmentBytes = 1024 * 1024;
inline constexpr uint64_t kDefaultSegmentBytes = 64 * 1024 * 1024;
inline constexpr uint64_t kMaxSegmentBytes = 1024ull * 1024 * 1024;
// Appends waiting for a partition writer; more are refused as overloaded.
inline constexpr size_t kMaxQueuedAppendsPerPartition = 65'536;
// Events returned by one read call.
inline constexpr size_t kMaxReadCount = 100'000;
// Anchors kept per stream in memory to start stream reads near their target.
inline constexpr size_t kStreamAnchors = 8;
// The in-memory position index of a segment keeps one entry per this many
// bytes (12 bytes of memory each: 12 KiB per 64 MiB segment), so a read of
// the global log from a position skips at most this much on batch headers.
inline constexpr uint64_t kPositionIndexStrideBytes = 64 * 1024;
// The background checkpointer waits for the log to grow by this many times
// the last index checkpoint's size before it writes the next
// (Options::checkpoint_interval_ms).
inline constexpr uint64_t kLogBytesPerCheckpointByte = 4;

}  // namespace annal::limits
