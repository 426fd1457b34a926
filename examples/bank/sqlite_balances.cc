// BalanceStore in SQLite (balances.h): the connection under the one store
// of balances.cc, which runs every method on it under one mutex.
#include <sqlite3.h>

#include <map>
#include <utility>

#include "annal/assert.h"
#include "sql_balances.h"

namespace annal::bank {
namespace {

constexpr int kBusyTimeoutMs = 10'000;  // a reader (the demo) may hold the file briefly

constexpr const char* kPragmas =
    "PRAGMA journal_mode = WAL;"
    "PRAGMA synchronous = NORMAL;";

constexpr sql::Dialect kDialect = {
    .change_values = "?1, ?2, ?3, ?4", .checkpoint_values = "?1, ?2", .name_param = "?1"};

const std::string kLedgerSql =
    "INSERT INTO balance_ledger (account, owner, delta, position) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (position) DO NOTHING";

Status Error(sqlite3* db, const std::string& what) {
  return Status::IoError("sqlite: " + what + ": " + sqlite3_errmsg(db));
}

// A prepared statement.
class Statement {
 public:
  Statement() = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Status Prepare(sqlite3* db, const std::string& sql) {
    db_ = db;
    sql_ = sql;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK)
      return Error(db, "prepare " + sql);
    return Status::Ok();
  }

  void Bind(std::span<const sql::Value> params) {
    for (size_t i = 0; i < params.size(); ++i) {
      const int n = static_cast<int>(i) + 1;
      if (const auto* text = std::get_if<std::string_view>(&params[i]))
        sqlite3_bind_text(stmt_, n, text->data(), static_cast<int>(text->size()), SQLITE_TRANSIENT);
      else if (const auto* integer = std::get_if<int64_t>(&params[i]))
        sqlite3_bind_int64(stmt_, n, *integer);
      else
        sqlite3_bind_null(stmt_, n);
    }
  }

  // Runs a statement that returns no rows, and resets it for the next use.
  Status Run() {
    int rc = sqlite3_step(stmt_);
    Status s = rc == SQLITE_DONE ? Status::Ok() : Error(db_, sql_);
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    return s;
  }

  // Steps through every row, as text.
  Result<std::vector<sql::Row>> Rows() {
    std::vector<sql::Row> rows;
    int rc;
    while ((rc = sqlite3_step(stmt_)) == SQLITE_ROW) {
      sql::Row& row = rows.emplace_back();
      for (int c = 0; c < sqlite3_column_count(stmt_); ++c) {
        const unsigned char* text = sqlite3_column_text(stmt_, c);
        row.emplace_back(text == nullptr ? "" : reinterpret_cast<const char*>(text));
      }
    }
    if (rc != SQLITE_DONE) return Error(db_, sql_);
    return rows;
  }

 private:
  sqlite3* db_ = nullptr;
  std::string sql_;
  sqlite3_stmt* stmt_ = nullptr;
};

class SqliteConnection final : public sql::Connection {
 public:
  // sqlite3_close_v2 lets the statements be finalized after it.
  ~SqliteConnection() override { sqlite3_close_v2(db_); }

  Status Open(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK)
      return Status::IoError("sqlite: cannot open " + path + ": " +
                             (db_ ? sqlite3_errmsg(db_) : "out of memory"));
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    return Exec(kPragmas + sql::Schema("INTEGER"));
  }

  Status Begin() override { return Exec("BEGIN IMMEDIATE"); }

  Status Exec(const std::string& sql) override {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
      Status s = Status::IoError("sqlite: " + sql + ": " + (message ? message : "?"));
      sqlite3_free(message);
      return s;
    }
    return Status::Ok();
  }

  Status Run(const std::string& sql, std::span<const sql::Value> params) override {
    auto it = prepared_.find(sql);
    if (it == prepared_.end()) {
      auto stmt = std::make_unique<Statement>();
      ANNAL_RETURN_IF_ERROR(stmt->Prepare(db_, sql));
      it = prepared_.emplace(sql, std::move(stmt)).first;
    }
    it->second->Bind(params);
    return it->second->Run();
  }

  Result<std::vector<sql::Row>> Query(const std::string& sql,
                                      std::span<const sql::Value> params) override {
    Statement q;
    ANNAL_RETURN_IF_ERROR(q.Prepare(db_, sql));
    q.Bind(params);
    return q.Rows();
  }

  // A row at a time: SQLite runs statements in-process, so that is as fast.
  Status InsertLedger(std::span<const Change> changes) override {
    return sql::InTransaction(*this, [&]() -> Status {
      for (const Change& c : changes) ANNAL_RETURN_IF_ERROR(Run(kLedgerSql, sql::ChangeParams(c)));
      return Status::Ok();
    });
  }

 private:
  sqlite3* db_ = nullptr;
  std::map<std::string, std::unique_ptr<Statement>> prepared_;  // by SQL text
};

}  // namespace

Result<std::unique_ptr<BalanceStore>> BalanceStore::OpenSqlite(const std::string& path,
                                                               const std::string& name) {
  auto conn = std::make_unique<SqliteConnection>();
  ANNAL_RETURN_IF_ERROR(conn->Open(path));
  return sql::NewStore(kDialect, std::move(conn), name);
}

}  // namespace annal::bank
