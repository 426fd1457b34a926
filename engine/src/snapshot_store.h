// The snapshot store: an SQLite database beside the log that keeps, per
// stream and reducer, the states the snapshot taker and clients computed,
// and the taker's position in the global log.
//
// Every row carries an XXH3-64 checksum over all of its fields
// (docs/format.md, "The snapshot store"); a row that fails it is reported
// through the `skipped` callback and treated as absent. SQLite keeps the
// file consistent across crashes (write-ahead log, synchronous=FULL); the
// checksum catches damage SQLite cannot see, such as a flipped bit in a blob.
//
// Thread-safety: all methods may be called concurrently. Reads use their own
// connection, so they never wait for a write's fsync.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "annal/state.h"
#include "annal/status.h"

struct sqlite3;

namespace annal {

class SnapshotStore {
 public:
  // Called for each row passed over: why, and the row's stream and version.
  using SkipFn = std::function<void(const std::string& why)>;

  static Result<std::unique_ptr<SnapshotStore>> Open(const std::string& path, SkipFn skipped);
  ~SnapshotStore();
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // Stores the snapshots (replacing any of the same stream, reducer and
  // version), applies the retention policy to their streams and, when
  // `taker_position` is set, records it; all in one transaction.
  struct Write {
    Snapshot snapshot;
    SnapshotPolicy policy;
  };
  Status Put(const std::vector<Write>& writes, std::optional<uint64_t> taker_position);

  // The newest verified snapshot of (stream, reducer, schema_version) with
  // version <= max_version and recorded_at <= max_time_ns.
  Result<std::optional<Snapshot>> NewestAtOrBefore(std::string_view stream, std::string_view reducer,
                                                   uint32_t schema_version, uint64_t max_version,
                                                   int64_t max_time_ns);

  // The oldest verified snapshot of the stream (any reducer) recorded after
  // `time_ns`: the stream's events at and past its version were all
  // recorded after time_ns.
  Result<std::optional<Snapshot>> FirstRecordedAfter(std::string_view stream, int64_t time_ns);
  // The oldest verified snapshot of the stream (any reducer) at `version`
  // or later.
  Result<std::optional<Snapshot>> FirstAtOrAfter(std::string_view stream, uint64_t version);

  // Every snapshot of the stream, ascending by version; state left out.
  Result<std::vector<Snapshot>> List(std::string_view stream);

  // 0 when it never ran.
  Result<uint64_t> TakerPosition();

  const std::string& path() const { return path_; }

 private:
  SnapshotStore(std::string path, SkipFn skipped) : path_(std::move(path)), skipped_(std::move(skipped)) {}
  // The first row of `q` (on read_db_) that passes its checksum and `usable`.
  Result<std::optional<Snapshot>> FirstVerified(class SqlStmt& q,
                                                const std::function<bool(const Snapshot&)>& usable);

  const std::string path_;
  const SkipFn skipped_;
  std::mutex read_mu_;
  sqlite3* read_db_ = nullptr;   // guarded by read_mu_
  std::mutex write_mu_;
  sqlite3* write_db_ = nullptr;  // guarded by write_mu_
};

// XXH3-64 over a snapshot's fields, as docs/format.md lays them out.
uint64_t SnapshotChecksum(const Snapshot& s);

}  // namespace annal
