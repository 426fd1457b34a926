// The consumer checkpoint store: one SQLite table, one row per consumer.
// See annal/consumers.h for the contract and docs/format.md ("The consumer
// checkpoint store") for the file.
#include "checkpoint_store.h"

#include <sqlite3.h>

#include <chrono>
#include <mutex>

#include "annal/assert.h"
#include "sqlite_util.h"

namespace annal {
namespace {

// Tables and the format version; docs/format.md describes them. Names are
// compared bytewise (SQLite's BINARY collation), which List relies on.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS annal_meta (
  key   TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
  name          TEXT    NOT NULL PRIMARY KEY,
  position      INTEGER NOT NULL,
  updated_at_ns INTEGER NOT NULL,
  blob          BLOB    NOT NULL,
  checksum      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO annal_meta (key, value) VALUES ('format_version', 1);
)sql";

constexpr const char* kWhat = "consumer checkpoint store";

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status CheckName(std::string_view name) {
  if (name.empty() || name.size() > kMaxConsumerNameBytes)
    return Status::InvalidArgument("a consumer name must be 1.." + std::to_string(kMaxConsumerNameBytes) +
                                   " bytes, got " + std::to_string(name.size()));
  return Status::Ok();
}

// Columns every checkpoint query selects, in this order.
constexpr const char* kColumns = "name, position, updated_at_ns, blob, checksum";

// The row `q` stands on, verified against its checksum.
Result<ConsumerCheckpoint> VerifiedRow(const SqlStmt& q, const std::string& path) {
  ConsumerCheckpoint c;
  c.name = q.ColText(0);
  c.position = GlobalPosition(static_cast<uint64_t>(q.ColInt(1)));
  c.updated_at_ns = q.ColInt(2);
  c.blob = q.ColBlob(3);
  c.blob_size = c.blob.size();
  auto stored = static_cast<uint64_t>(q.ColInt(4));
  if (CheckpointChecksum(c) != stored)
    return Status::Corruption("the checkpoint of consumer '" + c.name + "' in " + path +
                              " fails its checksum");
  return c;
}

class SqliteCheckpointStore final : public CheckpointStore {
 public:
  explicit SqliteCheckpointStore(std::string path) : path_(std::move(path)) {}
  ~SqliteCheckpointStore() override {
    sqlite3_close(read_db_);
    sqlite3_close(write_db_);
  }

  Status Init() {
    ANNAL_ASSIGN_OR_RETURN(write_db_, OpenConnection(path_, /*create=*/true, kWhat));
    ANNAL_RETURN_IF_ERROR(Exec(write_db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", path_));
    ANNAL_RETURN_IF_ERROR(Exec(write_db_, kSchema, path_));
    SqlStmt q(write_db_, "SELECT value FROM annal_meta WHERE key = 'format_version'");
    ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
    if (q.Step() != SQLITE_ROW) return StepError(write_db_, path_);
    if (q.ColInt(0) != kCheckpointStoreFormatVersion)
      return Status::Corruption(path_ + ": consumer checkpoint store format " + std::to_string(q.ColInt(0)) +
                                ", this build reads format " + std::to_string(kCheckpointStoreFormatVersion));
    ANNAL_ASSIGN_OR_RETURN(read_db_, OpenConnection(path_, /*create=*/false, kWhat));
    return Status::Ok();
  }

  Result<std::optional<ConsumerCheckpoint>> Get(std::string_view name) override {
    ANNAL_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard lock(read_mu_);
    return Find(read_db_, name);
  }

  Result<int64_t> Set(std::string_view name, GlobalPosition position, std::string_view blob,
                      CheckpointExpectation expected) override {
    ANNAL_RETURN_IF_ERROR(CheckName(name));
    if (blob.size() > kMaxCheckpointBlobBytes)
      return Status::TooLarge("the checkpoint blob of consumer '" + std::string(name) + "' is " +
                              std::to_string(blob.size()) + " bytes; the limit is " +
                              std::to_string(kMaxCheckpointBlobBytes));
    std::lock_guard lock(write_mu_);
    // BEGIN IMMEDIATE takes the file's write lock before the compare, so no
    // other connection (or process) can write between compare and write.
    ANNAL_RETURN_IF_ERROR(Exec(write_db_, "BEGIN IMMEDIATE", path_));
    ConsumerCheckpoint c{std::string(name), position, std::string(blob), blob.size(), NowNs()};
    Status s = CompareAndWrite(c, expected);
    if (!s.ok()) {
      (void)Exec(write_db_, "ROLLBACK", path_);
      return s;
    }
    s = Exec(write_db_, "COMMIT", path_);
    if (!s.ok()) {
      // A COMMIT that failed leaves the transaction open; nothing of it stays.
      (void)Exec(write_db_, "ROLLBACK", path_);
      return s;
    }
    return c.updated_at_ns;
  }

  Result<bool> Delete(std::string_view name) override {
    ANNAL_RETURN_IF_ERROR(CheckName(name));
    std::lock_guard lock(write_mu_);
    SqlStmt q(write_db_, "DELETE FROM checkpoints WHERE name = ?1");
    ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
    q.Text(1, name);
    if (q.Step() != SQLITE_DONE) return StepError(write_db_, path_);
    return sqlite3_changes(write_db_) > 0;
  }

  Result<std::vector<ConsumerCheckpoint>> List(std::string_view prefix) override {
    if (prefix.size() > kMaxConsumerNameBytes)
      return Status::InvalidArgument("a consumer name prefix is at most " +
                                     std::to_string(kMaxConsumerNameBytes) + " bytes");
    std::lock_guard lock(read_mu_);
    // Bytewise order puts every name with the prefix in one run from it.
    std::string sql = std::string("SELECT ") + kColumns + " FROM checkpoints WHERE name >= ?1 ORDER BY name";
    SqlStmt q(read_db_, sql.c_str());
    ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
    q.Text(1, prefix);
    std::vector<ConsumerCheckpoint> out;
    for (;;) {
      int rc = q.Step();
      if (rc == SQLITE_DONE) return out;
      if (rc != SQLITE_ROW) return StepError(read_db_, path_);
      ANNAL_ASSIGN_OR_RETURN(ConsumerCheckpoint c, VerifiedRow(q, path_));
      if (!std::string_view(c.name).starts_with(prefix)) return out;
      c.blob.clear();  // blob_size stays
      out.push_back(std::move(c));
    }
  }

 private:
  // The verified checkpoint of `name` on `db`; REQUIRES: db's lock is held.
  Result<std::optional<ConsumerCheckpoint>> Find(sqlite3* db, std::string_view name) {
    std::string sql = std::string("SELECT ") + kColumns + " FROM checkpoints WHERE name = ?1";
    SqlStmt q(db, sql.c_str());
    ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
    q.Text(1, name);
    int rc = q.Step();
    if (rc == SQLITE_DONE) return std::optional<ConsumerCheckpoint>();
    if (rc != SQLITE_ROW) return StepError(db, path_);
    ANNAL_ASSIGN_OR_RETURN(ConsumerCheckpoint c, VerifiedRow(q, path_));
    return std::optional<ConsumerCheckpoint>(std::move(c));
  }

  // Inside Set's transaction: checks `expected` against the stored row and
  // writes `c`. REQUIRES: write_mu_ is held and the transaction is open.
  Status CompareAndWrite(const ConsumerCheckpoint& c, CheckpointExpectation expected) {
    if (expected.kind != CheckpointExpectation::Kind::kAny) {
      // A row that fails its checksum cannot be compared with: reported,
      // not overwritten (an Any write replaces it).
      ANNAL_ASSIGN_OR_RETURN(std::optional<ConsumerCheckpoint> stored, Find(write_db_, c.name));
      bool holds = expected.kind == CheckpointExpectation::Kind::kNone
                       ? !stored.has_value()
                       : stored.has_value() && stored->position == expected.position;
      if (!holds) {
        int64_t actual = stored ? static_cast<int64_t>(stored->position.get()) : -1;
        std::string want = expected.kind == CheckpointExpectation::Kind::kNone
                               ? "no checkpoint"
                               : "position " + std::to_string(expected.position.get());
        std::string have = stored ? "it is at " + std::to_string(stored->position.get()) : "it has none";
        return Status::WrongExpectedVersion(
            "consumer '" + c.name + "': expected " + want + ", but " + have, actual);
      }
    }
    SqlStmt q(write_db_,
              "INSERT OR REPLACE INTO checkpoints (name, position, updated_at_ns, blob, checksum) "
              "VALUES (?1, ?2, ?3, ?4, ?5)");
    ANNAL_RETURN_IF_ERROR(q.Prepared(path_));
    q.Text(1, c.name);
    q.Int(2, static_cast<int64_t>(c.position.get()));
    q.Int(3, c.updated_at_ns);
    q.Blob(4, c.blob);
    q.Int(5, static_cast<int64_t>(CheckpointChecksum(c)));
    if (q.Step() != SQLITE_DONE) return StepError(write_db_, path_);
    return Status::Ok();
  }

  const std::string path_;
  std::mutex read_mu_;
  sqlite3* read_db_ = nullptr;   // guarded by read_mu_
  std::mutex write_mu_;
  sqlite3* write_db_ = nullptr;  // guarded by write_mu_
};

}  // namespace

uint64_t CheckpointChecksum(const ConsumerCheckpoint& c) {
  return RowChecksum()
      .Str(c.name)
      .U64(c.position.get())
      .U64(static_cast<uint64_t>(c.updated_at_ns))
      .Str(c.blob)
      .Digest();
}

Result<std::unique_ptr<CheckpointStore>> CheckpointStore::Open(const std::string& path) {
  auto store = std::make_unique<SqliteCheckpointStore>(path);
  ANNAL_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<CheckpointStore>(std::move(store));
}

}  // namespace annal
