// The SQL side of the balance store, shared by its SQLite and PostgreSQL
// versions (balances.cc holds the one algorithm; sqlite_balances.cc and
// postgres_balances.cc only connect and say how parameters are written).
// Internal to examples/bank.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "balances.h"

namespace annal::bank {

// For sqlite_balances.cc and postgres_balances.cc: what a database provides
// to the one BalanceStore (balances.cc), which owns the algorithm that
// balances.h describes (transactions, the order of statements, the ledger,
// the checkpoint, locking).
namespace sql {

// A statement parameter: SQL NULL, text, or a 64-bit integer.
using Value = std::variant<std::monostate, std::string_view, int64_t>;
// A result row: each column as text ("" for NULL).
using Row = std::vector<std::string>;

// One database connection. Not thread-safe: the store calls each connection
// under a mutex of its own.
class Connection {
 public:
  virtual ~Connection() = default;
  // Starts a transaction that writes (SQLite: BEGIN IMMEDIATE, which takes
  // the write lock at once).
  virtual Status Begin() = 0;
  // Runs `sql`: one or more statements separated by ';', with no parameters
  // and no rows (COMMIT, ROLLBACK, DDL, DELETE).
  virtual Status Exec(const std::string& sql) = 0;
  // Runs one statement that returns no rows; params[i] is parameter i + 1.
  // Prepared on first use and kept for the connection's life.
  virtual Status Run(const std::string& sql, std::span<const Value> params) = 0;
  // The rows of one query; params[i] is parameter i + 1.
  virtual Result<std::vector<Row>> Query(const std::string& sql,
                                         std::span<const Value> params = {}) = 0;
  // Atomically (one transaction or one statement) inserts one balance_ledger
  // row per change, keeping rows already there (ON CONFLICT DO NOTHING).
  virtual Status InsertLedger(std::span<const Change> changes) = 0;
};

// How a database spells the parameters of the statements the store shares.
struct Dialect {
  const char* change_values;      // account, owner, delta, position: "?1, ?2, ?3, ?4"
  const char* checkpoint_values;  // name, position
  const char* name_param;         // name
};

// Opens one more connection to the same database (a rebuild slice's).
using ConnectionOpener = std::function<Result<std::unique_ptr<Connection>>()>;

// The CREATE TABLE IF NOT EXISTS statements of the tables above, with
// `integer_type` for their integer columns.
std::string Schema(std::string_view integer_type);

// A Change as the parameters of a statement that takes one: account, owner
// (NULL when unset), delta, position.
std::array<Value, 4> ChangeParams(const Change& c);

// Runs `body` (returning Status) on `conn` between Begin and COMMIT; rolls
// back when either fails.
template <typename Body>
Status InTransaction(Connection& conn, Body body) {
  ANNAL_RETURN_IF_ERROR(conn.Begin());
  Status s = body();
  if (s.ok()) s = conn.Exec("COMMIT");
  if (!s.ok()) (void)conn.Exec("ROLLBACK");
  return s;
}

// The BalanceStore over `main`, whose tables exist; `name` keys its
// projection_checkpoint row. With `open_slice` (PostgreSQL), each rebuild
// slice writes its batches through a connection of its own, opened on first
// use, under a mutex of its own; without it (SQLite), every method runs on
// `main` under one mutex.
std::unique_ptr<BalanceStore> NewStore(const Dialect& dialect, std::unique_ptr<Connection> main,
                                       std::string name, ConnectionOpener open_slice = nullptr);

}  // namespace sql
}  // namespace annal::bank
