// The crash test's workload (see crash_test.cc): what its writer processes
// append, and the record they keep of every acknowledged append.
//
// Every byte of an event is derived from (stream, version) alone, so the
// verifier can recompute any event it finds, acknowledged or not. The one
// exception is the metadata, which names the append the event belongs to
// (its first version and event count), so that the verifier can tell whether
// an append is wholly present.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "annal/types.h"

namespace annal::crash {

// Writer threads per process, and the streams each one owns. A stream is
// written by its owner only, so the owner always knows the stream's head.
inline constexpr uint32_t kWriterThreads = 4;
inline constexpr uint32_t kStreamsPerThread = 3;
// Bounds of one append of the workload.
inline constexpr uint32_t kMaxEventsPerWorkloadAppend = 5;
inline constexpr size_t kMaxWorkloadPayloadBytes = 3000;

inline std::string StreamName(uint32_t thread, uint32_t index) {
  return "crash-" + std::to_string(thread) + "-" + std::to_string(index);
}

// splitmix64's output function: a cheap bijective 64-bit mix.
inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The seed every derived byte of the event at (stream, version) comes from.
inline uint64_t EventSeed(std::string_view stream, uint64_t version) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the name
  for (char c : stream) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return Mix64(h ^ Mix64(version));
}

// 0..kMaxWorkloadPayloadBytes bytes; the length, too, depends on the event.
inline std::string PayloadFor(std::string_view stream, uint64_t version) {
  uint64_t state = EventSeed(stream, version);
  std::string payload(state % (kMaxWorkloadPayloadBytes + 1), '\0');
  for (size_t i = 0; i < payload.size(); i += 8) {
    state = Mix64(state);
    std::memcpy(payload.data() + i, &state, std::min<size_t>(8, payload.size() - i));
  }
  return payload;
}

// A version-8 UUID (so never nil) unique to (stream, version).
inline EventId EventIdFor(std::string_view stream, uint64_t version) {
  const uint64_t seed = EventSeed(stream, version);
  const uint64_t halves[2] = {Mix64(seed ^ 0x1d), Mix64(seed ^ 0x2e)};
  EventId id;
  std::memcpy(id.data(), halves, id.size());
  id[6] = static_cast<uint8_t>((id[6] & 0x0f) | 0x80);
  id[8] = static_cast<uint8_t>((id[8] & 0x3f) | 0x80);
  return id;
}

inline std::string TypeFor(uint64_t version) { return "CrashEvent" + std::to_string(version % 4); }

// The metadata of every event of the append that starts at `first_version`.
inline std::string MetadataFor(uint64_t first_version, uint64_t count) {
  return "{\"append_first\":" + std::to_string(first_version) +
         ",\"append_count\":" + std::to_string(count) + "}";
}

// Inverse of MetadataFor; false when `metadata` is not in its form.
inline bool ParseMetadata(std::string_view metadata, uint64_t* first_version, uint64_t* count) {
  constexpr std::string_view kHead = "{\"append_first\":";
  constexpr std::string_view kMiddle = ",\"append_count\":";
  if (!metadata.starts_with(kHead) || !metadata.ends_with("}")) return false;
  const char* p = metadata.data() + kHead.size();
  const char* end = metadata.data() + metadata.size() - 1;
  auto first = std::from_chars(p, end, *first_version);
  if (first.ec != std::errc() || !std::string_view(first.ptr, end).starts_with(kMiddle)) {
    return false;
  }
  auto second = std::from_chars(first.ptr + kMiddle.size(), end, *count);
  return second.ec == std::errc() && second.ptr == end;
}

// The events of the append of `count` events at `first_version` of `stream`.
inline std::vector<EventData> EventsFor(std::string_view stream, uint64_t first_version,
                                        uint32_t count) {
  std::vector<EventData> events;
  events.reserve(count);
  for (uint64_t v = first_version; v < first_version + count; ++v) {
    events.push_back({.id = EventIdFor(stream, v),
                      .type = TypeFor(v),
                      .metadata = MetadataFor(first_version, count),
                      .payload = PayloadFor(stream, v)});
  }
  return events;
}

// One acknowledged append, as a writer logs it after Append returned ok.
//
// Writers append these to the ack log with one write(2) each, O_APPEND, no
// fsync: a write that returned is in the page cache and survives SIGKILL of
// the writer. A write interrupted by SIGKILL may be cut short only at a page
// boundary, and records never straddle one (64 divides the page size), so
// the ack log always holds whole records.
struct AckRecord {
  static constexpr uint32_t kMagic = 0x4b434341;  // "ACCK" read as bytes

  uint32_t magic = kMagic;
  uint32_t round = 0;
  uint16_t thread = 0;
  uint16_t stream_index = 0;
  uint32_t count = 0;
  uint64_t first_version = 0;
  uint64_t first_position = 0;
  uint64_t last_position = 0;
  uint8_t reserved[24] = {};

  std::string stream() const { return StreamName(thread, stream_index); }
};
static_assert(sizeof(AckRecord) == 64, "the ack log's record size is fixed");
static_assert(4096 % sizeof(AckRecord) == 0, "ack records must never straddle a page");

}  // namespace annal::crash
