#include "snapshot_store.h"

#include <sqlite3.h>

#include <chrono>
#include <limits>
#include <set>

#include "sqlite_util.h"

namespace annal {

namespace {

constexpr int kFormatVersion = 1;

// Tables, indexes and the format version; docs/format.md describes them.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS annal_meta (
  key   TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
  stream         TEXT    NOT NULL,
  reducer        TEXT    NOT NULL,
  schema_version INTEGER NOT NULL,
  version        INTEGER NOT NULL,
  position       INTEGER NOT NULL,
  recorded_at_ns INTEGER NOT NULL,
  taken_at_ns    INTEGER NOT NULL,
  state          BLOB    NOT NULL,
  checksum       INTEGER NOT NULL,
  UNIQUE (stream, reducer, version)
);
CREATE INDEX IF NOT EXISTS snapshots_by_time ON snapshots (stream, recorded_at_ns);
CREATE INDEX IF NOT EXISTS snapshots_by_version ON snapshots (stream, version);
INSERT OR IGNORE INTO annal_meta (key, value) VALUES ('format_version', 1);
INSERT OR IGNORE INTO annal_meta (key, value) VALUES ('taker_position', 0);
)sql";

// Columns every snapshot query selects, in SqlStmt column order.
constexpr const char* kColumns =
    "stream, reducer, schema_version, version, position, recorded_at_ns, taken_at_ns, state, checksum";

// Columns 0..6 of kColumns: every field but the state and the checksum.
Snapshot RowFields(const SqlStmt& q) {
  Snapshot s;
  s.stream = q.ColText(0);
  s.reducer = q.ColText(1);
  s.schema_version = static_cast<uint32_t>(q.ColInt(2));
  s.version = StreamVersion(static_cast<uint64_t>(q.ColInt(3)));
  s.position = GlobalPosition(static_cast<uint64_t>(q.ColInt(4)));
  s.recorded_at_ns = q.ColInt(5);
  s.taken_at_ns = q.ColInt(6);
  return s;
}

Snapshot RowToSnapshot(const SqlStmt& q, uint64_t* checksum) {
  Snapshot s = RowFields(q);
  s.state = q.ColBlob(7);
  s.state_size = s.state.size();
  *checksum = static_cast<uint64_t>(q.ColInt(8));
  return s;
}

std::string Describe(const Snapshot& s) {
  return "snapshot of '" + s.stream + "' at version " + std::to_string(s.version.get()) + " (reducer " +
         s.reducer + " schema " + std::to_string(s.schema_version) + ")";
}

}  // namespace

uint64_t SnapshotChecksum(const Snapshot& s) {
  return RowChecksum()
      .Str(s.stream)
      .Str(s.reducer)
      .U64(s.schema_version)
      .U64(s.version.get())
      .U64(s.position.get())
      .U64(static_cast<uint64_t>(s.recorded_at_ns))
      .U64(static_cast<uint64_t>(s.taken_at_ns))
      .Str(s.state)
      .Digest();
}

Result<std::unique_ptr<SnapshotStore>> SnapshotStore::Open(const std::string& path, SkipFn skipped) {
  std::unique_ptr<SnapshotStore> store(new SnapshotStore(path, std::move(skipped)));
  ANNAL_ASSIGN_OR_RETURN(store->write_db_, OpenConnection(path, /*create=*/true, "snapshot store"));
  ANNAL_RETURN_IF_ERROR(Exec(store->write_db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", path));
  ANNAL_RETURN_IF_ERROR(Exec(store->write_db_, kSchema, path));
  {
    SqlStmt q(store->write_db_, "SELECT value FROM annal_meta WHERE key = 'format_version'");
    ANNAL_RETURN_IF_ERROR(q.Prepared(path));
    if (q.Step() != SQLITE_ROW) return StepError(store->write_db_, path);
    if (q.ColInt(0) != kFormatVersion)
      return Status::Corruption(path + ": snapshot store format " + std::to_string(q.ColInt(0)) +
                                ", this build reads format " + std::to_string(kFormatVersion));
  }
  ANNAL_ASSIGN_OR_RETURN(store->read_db_, OpenConnection(path, /*create=*/false, "snapshot store"));
  return store;
}

SnapshotStore::~SnapshotStore() {
  sqlite3_close(read_db_);
  sqlite3_close(write_db_);
}

Status SnapshotStore::Put(const std::vector<Write>& writes, std::optional<uint64_t> taker_position) {
  std::lock_guard lock(write_mu_);
  ANNAL_RETURN_IF_ERROR(Exec(write_db_, "BEGIN IMMEDIATE", path_));
  auto body = [&]() -> Status {
    SqlStmt insert(write_db_,
                "INSERT OR REPLACE INTO snapshots (stream, reducer, schema_version, version, position, "
                "recorded_at_ns, taken_at_ns, state, checksum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    ANNAL_RETURN_IF_ERROR(insert.Prepared(path_));
    // Retention: below the keep_latest-th newest version, keep only the
    // newest snapshot of each run of ?4 versions (none when ?4 is 0).
    SqlStmt prune(write_db_,
               "DELETE FROM snapshots WHERE stream = ?1 AND reducer = ?2 AND version < "
               "(SELECT version FROM snapshots WHERE stream = ?1 AND reducer = ?2 "
               " ORDER BY version DESC LIMIT 1 OFFSET ?3) "
               "AND (?4 = 0 OR version NOT IN (SELECT MAX(version) FROM snapshots "
               " WHERE stream = ?1 AND reducer = ?2 GROUP BY version / ?4))");
    ANNAL_RETURN_IF_ERROR(prune.Prepared(path_));
    for (const Write& w : writes) {
      const Snapshot& s = w.snapshot;
      insert.Reset();
      insert.Text(1, s.stream);
      insert.Text(2, s.reducer);
      insert.Int(3, s.schema_version);
      insert.Int(4, static_cast<int64_t>(s.version.get()));
      insert.Int(5, static_cast<int64_t>(s.position.get()));
      insert.Int(6, s.recorded_at_ns);
      insert.Int(7, s.taken_at_ns);
      insert.Blob(8, s.state);
      insert.Int(9, static_cast<int64_t>(SnapshotChecksum(s)));
      if (insert.Step() != SQLITE_DONE) return StepError(write_db_, path_);
    }
    std::set<std::pair<std::string_view, std::string_view>> pruned;
    for (const Write& w : writes) {
      if (!pruned.emplace(w.snapshot.stream, w.snapshot.reducer).second) continue;
      uint64_t every = w.policy.every != 0 ? w.policy.every : SnapshotPolicy{}.every;
      prune.Reset();
      prune.Text(1, w.snapshot.stream);
      prune.Text(2, w.snapshot.reducer);
      prune.Int(3, std::max<int64_t>(w.policy.keep_latest, 1) - 1);
      prune.Int(4, static_cast<int64_t>(every * w.policy.keep_sparse));
      if (prune.Step() != SQLITE_DONE) return StepError(write_db_, path_);
    }
    if (taker_position) {
      SqlStmt meta(write_db_, "UPDATE annal_meta SET value = ?1 WHERE key = 'taker_position'");
      meta.Int(1, static_cast<int64_t>(*taker_position));
      if (meta.Step() != SQLITE_DONE) return StepError(write_db_, path_);
    }
    return Status::Ok();
  };
  Status s = body();
  if (!s.ok()) {
    (void)Exec(write_db_, "ROLLBACK", path_);
    return s;
  }
  return Exec(write_db_, "COMMIT", path_);
}

Result<std::optional<Snapshot>> SnapshotStore::NewestAtOrBefore(std::string_view stream,
                                                                std::string_view reducer,
                                                                uint32_t schema_version,
                                                                uint64_t max_version,
                                                                int64_t max_time_ns) {
  std::lock_guard lock(read_mu_);
  std::string sql = std::string("SELECT ") + kColumns +
                    " FROM snapshots WHERE stream = ?1 AND reducer = ?2 AND version <= ?3"
                    " AND recorded_at_ns <= ?4 ORDER BY version DESC";
  SqlStmt q(read_db_, sql.c_str());
  ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
  q.Text(1, stream);
  q.Text(2, reducer);
  q.Int(3, static_cast<int64_t>(std::min<uint64_t>(max_version, std::numeric_limits<int64_t>::max())));
  q.Int(4, max_time_ns);
  return FirstVerified(q, [&](const Snapshot& s) {
    if (s.schema_version == schema_version) return true;
    skipped_(Describe(s) + " is of another schema version than " + std::to_string(schema_version) +
             "; passed over");
    return false;
  });
}

Result<std::optional<Snapshot>> SnapshotStore::FirstRecordedAfter(std::string_view stream, int64_t time_ns) {
  std::lock_guard lock(read_mu_);
  std::string sql = std::string("SELECT ") + kColumns +
                    " FROM snapshots WHERE stream = ?1 AND recorded_at_ns > ?2"
                    " ORDER BY recorded_at_ns, version";
  SqlStmt q(read_db_, sql.c_str());
  ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
  q.Text(1, stream);
  q.Int(2, time_ns);
  return FirstVerified(q, [](const Snapshot&) { return true; });
}

Result<std::optional<Snapshot>> SnapshotStore::FirstAtOrAfter(std::string_view stream, uint64_t version) {
  std::lock_guard lock(read_mu_);
  std::string sql = std::string("SELECT ") + kColumns +
                    " FROM snapshots WHERE stream = ?1 AND version >= ?2 ORDER BY version";
  SqlStmt q(read_db_, sql.c_str());
  ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
  q.Text(1, stream);
  q.Int(2, static_cast<int64_t>(std::min<uint64_t>(version, std::numeric_limits<int64_t>::max())));
  return FirstVerified(q, [](const Snapshot&) { return true; });
}

Result<std::optional<Snapshot>> SnapshotStore::FirstVerified(SqlStmt& q,
                                                             const std::function<bool(const Snapshot&)>& usable) {
  for (;;) {
    int rc = q.Step();
    if (rc == SQLITE_DONE) return std::optional<Snapshot>();
    if (rc != SQLITE_ROW) return StepError(read_db_, path_);
    uint64_t checksum = 0;
    Snapshot s = RowToSnapshot(q, &checksum);
    if (SnapshotChecksum(s) != checksum) {
      skipped_(Describe(s) + " in " + path_ + " fails its checksum; passed over");
      continue;
    }
    if (usable(s)) return std::optional<Snapshot>(std::move(s));
  }
}

Result<std::vector<Snapshot>> SnapshotStore::List(std::string_view stream) {
  std::lock_guard lock(read_mu_);
  SqlStmt q(read_db_,
         "SELECT stream, reducer, schema_version, version, position, recorded_at_ns, taken_at_ns, length(state) "
         "FROM snapshots WHERE stream = ?1 ORDER BY version, reducer");
  ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
  q.Text(1, stream);
  std::vector<Snapshot> out;
  for (;;) {
    int rc = q.Step();
    if (rc == SQLITE_DONE) return out;
    if (rc != SQLITE_ROW) return StepError(read_db_, path_);
    Snapshot s = RowFields(q);
    s.state_size = static_cast<uint64_t>(q.ColInt(7));
    out.push_back(std::move(s));
  }
}

Result<uint64_t> SnapshotStore::TakerPosition() {
  std::lock_guard lock(read_mu_);
  SqlStmt q(read_db_, "SELECT value FROM annal_meta WHERE key = 'taker_position'");
  ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
  if (q.Step() != SQLITE_ROW) return StepError(read_db_, path_);
  return static_cast<uint64_t>(q.ColInt(0));
}

}  // namespace annal
