// Checkpoints of named consumers (projections, integrations): how far in the
// global log each has processed, plus an optional opaque blob of its own.
//
//   auto store = annal::CheckpointStore::Open("/var/lib/annal/consumers.db");
//   (*store)->Set("balances", annal::GlobalPosition(4711), "", annal::CheckpointExpectation::Any());
//
// Kept in an SQLite file beside the log (docs/format.md, "The consumer
// checkpoint store") with an XXH3-64 checksum per row, verified on every
// read: a row that fails it is reported as kCorruption naming the consumer
// and the file, never returned. Every Set is atomic and durable when it
// returns (write-ahead log, synchronous=FULL).
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "annal/status.h"
#include "annal/types.h"

namespace annal {

struct ConsumerCheckpoint {
  std::string name;            // 1..255 bytes
  GlobalPosition position;     // the consumer has processed every event up to here
  std::string blob;            // opaque to annal; at most kMaxCheckpointBlobBytes
  uint64_t blob_size = 0;      // blob.size(); also set where the blob is left out
  int64_t updated_at_ns = 0;   // when it was last set
};

inline constexpr size_t kMaxCheckpointBlobBytes = 1024 * 1024;

// What a writer believes the stored checkpoint to be, so that two runners
// of one consumer cannot silently overwrite each other.
struct CheckpointExpectation {
  enum class Kind : uint8_t { kAny = 0, kNone = 1, kAt = 2 };
  Kind kind = Kind::kAny;
  GlobalPosition position;  // kAt
  static CheckpointExpectation Any() { return {}; }
  static CheckpointExpectation None() { return {Kind::kNone, GlobalPosition()}; }
  static CheckpointExpectation At(GlobalPosition p) { return {Kind::kAt, p}; }
};

class CheckpointStore {
 public:
  // Opens or creates the file.
  static Result<std::unique_ptr<CheckpointStore>> Open(const std::string& path);
  virtual ~CheckpointStore() = default;

  // std::nullopt when the consumer has no checkpoint.
  virtual Result<std::optional<ConsumerCheckpoint>> Get(std::string_view name) = 0;

  // Stores the checkpoint if `expected` holds, atomically; returns its
  // updated_at. kWrongExpectedVersion otherwise, whose actual_version() is
  // the stored position (-1: none). kInvalidArgument for a bad name,
  // kTooLarge for a blob over the limit. Positions may move backwards (a
  // reset consumer starts again).
  virtual Result<int64_t> Set(std::string_view name, GlobalPosition position, std::string_view blob,
                              CheckpointExpectation expected) = 0;

  // Removes the checkpoint; returns whether there was one.
  virtual Result<bool> Delete(std::string_view name) = 0;

  // Every checkpoint whose name starts with `prefix`, by name; blobs left out.
  virtual Result<std::vector<ConsumerCheckpoint>> List(std::string_view prefix) = 0;
};

}  // namespace annal
