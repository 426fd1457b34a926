// BalanceStore in SQLite (balances.h): one connection, one mutex.
#include <sqlite3.h>

#include <mutex>
#include <utility>

#include "annal/assert.h"
#include "balances.h"

namespace annal::bank {
namespace {

constexpr int kBusyTimeoutMs = 10'000;  // a reader (the demo) may hold the file briefly

constexpr const char* kSchema =
    "PRAGMA journal_mode = WAL;"
    "PRAGMA synchronous = NORMAL;"
    "CREATE TABLE IF NOT EXISTS account_balances ("
    " account TEXT PRIMARY KEY, owner TEXT, balance INTEGER NOT NULL, last_position INTEGER NOT "
    "NULL);"
    "CREATE TABLE IF NOT EXISTS projection_checkpoint (name TEXT PRIMARY KEY, position INTEGER NOT "
    "NULL);"
    "CREATE TABLE IF NOT EXISTS balance_ledger ("
    " position INTEGER PRIMARY KEY, account TEXT NOT NULL, owner TEXT, delta INTEGER NOT NULL);";

// The live rule: apply only events above the row's last_position.
constexpr const char* kUpsertSql =
    "INSERT INTO account_balances (account, owner, balance, last_position) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (account) DO UPDATE SET"
    " owner = coalesce(excluded.owner, account_balances.owner),"
    " balance = account_balances.balance + excluded.balance,"
    " last_position = excluded.last_position"
    " WHERE excluded.last_position > account_balances.last_position";
constexpr const char* kLedgerSql =
    "INSERT INTO balance_ledger (account, owner, delta, position) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (position) DO NOTHING";
// Ledger rows at or below an existing row's last_position are already in it.
constexpr const char* kFoldLedgerSql =
    "INSERT INTO account_balances (account, owner, balance, last_position)"
    " SELECT l.account, max(l.owner), CAST(sum(l.delta) AS BIGINT), max(l.position)"
    " FROM balance_ledger AS l LEFT JOIN account_balances AS b ON b.account = l.account"
    " WHERE l.position > coalesce(b.last_position, 0)"
    " GROUP BY l.account"
    " ON CONFLICT (account) DO UPDATE SET"
    " owner = coalesce(excluded.owner, account_balances.owner),"
    " balance = account_balances.balance + excluded.balance,"
    " last_position = excluded.last_position";
constexpr const char* kSetCheckpointSql =
    "INSERT INTO projection_checkpoint (name, position) VALUES (?1, ?2)"
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position";

Status Error(sqlite3* db, const std::string& what) {
  return Status::IoError("sqlite: " + what + ": " + sqlite3_errmsg(db));
}

// A prepared statement, reset after each use.
class Statement {
 public:
  Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Status Prepare(sqlite3* db, const char* sql) {
    db_ = db;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      return Error(db, std::string("prepare ") + sql);
    return Status::Ok();
  }
  sqlite3_stmt* get() { return stmt_; }
  // Runs a statement that returns no rows.
  Status Run(const char* what) {
    int rc = sqlite3_step(stmt_);
    Status s = rc == SQLITE_DONE ? Status::Ok() : Error(db_, what);
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    return s;
  }

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

class SqliteBalanceStore final : public BalanceStore {
 public:
  explicit SqliteBalanceStore(std::string name) : name_(std::move(name)) {}
  // sqlite3_close_v2 lets the statements be finalized after it.
  ~SqliteBalanceStore() override { sqlite3_close_v2(db_); }

  Status Open(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK)
      return Status::IoError("sqlite: cannot open " + path + ": " +
                             (db_ ? sqlite3_errmsg(db_) : "out of memory"));
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    ANNAL_RETURN_IF_ERROR(Exec(kSchema));
    ANNAL_RETURN_IF_ERROR(upsert_.Prepare(db_, kUpsertSql));
    ANNAL_RETURN_IF_ERROR(ledger_.Prepare(db_, kLedgerSql));
    ANNAL_RETURN_IF_ERROR(fold_.Prepare(db_, kFoldLedgerSql));
    ANNAL_RETURN_IF_ERROR(set_checkpoint_.Prepare(db_, kSetCheckpointSql));
    return Status::Ok();
  }

  Status ApplyLive(std::span<const Change> changes, GlobalPosition through) override {
    std::lock_guard lock(mu_);
    return InTransaction([&]() -> Status {
      if (ledger_pending_) ANNAL_RETURN_IF_ERROR(FoldLedgerLocked());
      for (const Change& c : changes) {
        BindChange(upsert_.get(), c);
        ANNAL_RETURN_IF_ERROR(upsert_.Run("upsert account_balances"));
      }
      return SetCheckpointLocked(through);
    });
  }

  Status ApplyRebuild(std::span<const Change> changes, uint32_t /*slice*/) override {
    std::lock_guard lock(mu_);
    ledger_pending_ = true;
    return InTransaction([&]() -> Status {
      for (const Change& c : changes) {
        BindChange(ledger_.get(), c);
        ANNAL_RETURN_IF_ERROR(ledger_.Run("insert balance_ledger"));
      }
      return Status::Ok();
    });
  }

  Status FinishRebuild(GlobalPosition position) override {
    std::lock_guard lock(mu_);
    return InTransaction([&]() -> Status {
      ANNAL_RETURN_IF_ERROR(FoldLedgerLocked());
      return SetCheckpointLocked(position);
    });
  }

  Result<GlobalPosition> LoadCheckpoint() override {
    std::lock_guard lock(mu_);
    std::optional<GlobalPosition> checkpoint;
    Status s = InTransaction([&]() -> Status {
      ANNAL_ASSIGN_OR_RETURN(int64_t ledger_rows, QueryInt("SELECT count(*) FROM balance_ledger"));
      if (ledger_rows > 0) ANNAL_RETURN_IF_ERROR(ClearLocked());  // an unfinished rebuild
      ANNAL_ASSIGN_OR_RETURN(checkpoint, CheckpointLocked());
      return Status::Ok();
    });
    if (!s.ok()) return s;
    ledger_pending_ = false;
    return checkpoint.value_or(GlobalPosition(0));
  }

  Result<std::optional<GlobalPosition>> PeekCheckpoint() override {
    std::lock_guard lock(mu_);
    return CheckpointLocked();
  }

  Status DeleteCheckpoint() override {
    std::lock_guard lock(mu_);
    return RunWithName("DELETE FROM projection_checkpoint WHERE name = ?1");
  }

  Status Clear() override {
    std::lock_guard lock(mu_);
    Status s = InTransaction([&] { return ClearLocked(); });
    if (s.ok()) ledger_pending_ = false;
    return s;
  }

  Result<Balances> ReadBalances() override {
    std::lock_guard lock(mu_);
    Statement q;
    ANNAL_RETURN_IF_ERROR(q.Prepare(
        db_, "SELECT account, coalesce(owner, ''), balance, last_position FROM account_balances"));
    Balances out;
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      auto text = [&](int col) {
        return std::string(reinterpret_cast<const char*>(sqlite3_column_text(q.get(), col)));
      };
      out[text(0)] =
          Balance{.owner = text(1),
                  .balance = sqlite3_column_int64(q.get(), 2),
                  .last_position = static_cast<uint64_t>(sqlite3_column_int64(q.get(), 3))};
    }
    if (rc != SQLITE_DONE) return Error(db_, "read account_balances");
    return out;
  }

  Result<uint64_t> LedgerRows() override {
    std::lock_guard lock(mu_);
    ANNAL_ASSIGN_OR_RETURN(int64_t n, QueryInt("SELECT count(*) FROM balance_ledger"));
    return static_cast<uint64_t>(n);
  }

 private:
  Status Exec(const char* sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
      Status s = Status::IoError(std::string("sqlite: ") + sql + ": " + (message ? message : "?"));
      sqlite3_free(message);
      return s;
    }
    return Status::Ok();
  }

  // Runs `body` between BEGIN IMMEDIATE and COMMIT; rolls back on error.
  template <typename Body>
  Status InTransaction(Body body) {
    ANNAL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = body();
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok()) (void)Exec("ROLLBACK");
    return s;
  }

  static void BindChange(sqlite3_stmt* stmt, const Change& c) {
    constexpr int account = 1, owner = 2, delta = 3,
                  position = 4;  // in every statement that takes a Change
    sqlite3_bind_text(stmt, account, c.account.data(), static_cast<int>(c.account.size()),
                      SQLITE_TRANSIENT);
    if (c.owner)
      sqlite3_bind_text(stmt, owner, c.owner->data(), static_cast<int>(c.owner->size()),
                        SQLITE_TRANSIENT);
    else
      sqlite3_bind_null(stmt, owner);
    sqlite3_bind_int64(stmt, delta, c.delta);
    sqlite3_bind_int64(stmt, position, static_cast<int64_t>(c.position.get()));
  }

  Status FoldLedgerLocked() {
    ANNAL_RETURN_IF_ERROR(fold_.Run("fold balance_ledger"));
    ANNAL_RETURN_IF_ERROR(Exec("DELETE FROM balance_ledger"));
    ledger_pending_ = false;
    return Status::Ok();
  }

  Status SetCheckpointLocked(GlobalPosition position) {
    sqlite3_bind_text(set_checkpoint_.get(), 1, name_.data(), static_cast<int>(name_.size()),
                      SQLITE_STATIC);
    sqlite3_bind_int64(set_checkpoint_.get(), 2, static_cast<int64_t>(position.get()));
    return set_checkpoint_.Run("set projection_checkpoint");
  }

  Status ClearLocked() {
    return Exec(
        "DELETE FROM account_balances; DELETE FROM balance_ledger; DELETE FROM "
        "projection_checkpoint");
  }

  Result<std::optional<GlobalPosition>> CheckpointLocked() {
    Statement q;
    ANNAL_RETURN_IF_ERROR(
        q.Prepare(db_, "SELECT position FROM projection_checkpoint WHERE name = ?1"));
    sqlite3_bind_text(q.get(), 1, name_.data(), static_cast<int>(name_.size()), SQLITE_STATIC);
    int rc = sqlite3_step(q.get());
    if (rc == SQLITE_DONE) return std::optional<GlobalPosition>();
    if (rc != SQLITE_ROW) return Error(db_, "read projection_checkpoint");
    return std::optional<GlobalPosition>(
        GlobalPosition(static_cast<uint64_t>(sqlite3_column_int64(q.get(), 0))));
  }

  Result<int64_t> QueryInt(const char* sql) {
    Statement q;
    ANNAL_RETURN_IF_ERROR(q.Prepare(db_, sql));
    if (sqlite3_step(q.get()) != SQLITE_ROW) return Error(db_, sql);
    return sqlite3_column_int64(q.get(), 0);
  }

  Status RunWithName(const char* sql) {
    Statement q;
    ANNAL_RETURN_IF_ERROR(q.Prepare(db_, sql));
    sqlite3_bind_text(q.get(), 1, name_.data(), static_cast<int>(name_.size()), SQLITE_STATIC);
    return q.Run(sql);
  }

  const std::string name_;
  std::mutex mu_;
  sqlite3* db_ = nullptr;  // guarded by mu_, like everything below
  Statement upsert_, ledger_, fold_, set_checkpoint_;
  // Ledger rows may exist: the first live batch folds them. True at open,
  // so that a rebuild that ended without BalanceCheckpoint::Save is folded.
  bool ledger_pending_ = true;
};

}  // namespace

Result<std::unique_ptr<BalanceStore>> BalanceStore::OpenSqlite(const std::string& path,
                                                               const std::string& name) {
  auto store = std::make_unique<SqliteBalanceStore>(name);
  ANNAL_RETURN_IF_ERROR(store->Open(path));
  return std::unique_ptr<BalanceStore>(std::move(store));
}

}  // namespace annal::bank
