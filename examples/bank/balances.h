// account_balances: the bank's read model, kept up to date by a projection
// (annal/projection.h) in SQLite (a file, the default) or in PostgreSQL.
//
//   auto db = annal::bank::BalanceStore::OpenSqlite("balances.db");
//   annal::bank::BalanceProjection handler(db->get());
//   annal::bank::BalanceCheckpoint keeper(db->get());
//   auto runner = annal::client::ProjectionRunner::Start(
//       client_options, annal::bank::ProjectionOptionsFor("balances"), &handler, &keeper);
//
// Tables (the same in both databases):
//
//   account_balances(account TEXT PRIMARY KEY, owner TEXT, balance INTEGER,
//                    last_position INTEGER)
//   projection_checkpoint(name TEXT PRIMARY KEY, position INTEGER)
//   balance_ledger(position INTEGER PRIMARY KEY, account TEXT, owner TEXT,
//                  delta INTEGER)          -- only while a rebuild runs
//
// Why nothing is counted twice. Live (one batch at a time, in log order),
// a batch is ONE database transaction: each event is an upsert of its
// account's row that applies only when the event's position is above the
// row's last_position, and the checkpoint row moves to the batch's
// `through` in the same transaction. A crash before the commit loses the
// whole batch and its checkpoint (the runner hands it again); a crash after
// it loses nothing. Even a keeper elsewhere whose checkpoint lags the rows
// (a ServerCheckpoint, or a batch handed again for any other reason) only
// replays events at or below last_position, which are skipped.
//
// Rebuilds. During a rebuild several slices run at once, and an account's
// events may arrive from different slices in any order, so "skip at or below
// last_position" would drop events. Rebuild batches therefore only insert
// one ledger row per event, keyed by its position (INSERT ... ON CONFLICT
// DO NOTHING): inserting is commutative and idempotent, so any interleaving
// of slices, and any batch handed twice, leaves the same ledger. When the
// rebuild is done (BalanceCheckpoint::Save at its head, or, with another
// keeper, the first live batch) the ledger is folded into account_balances
// (sum of deltas, the owner, the greatest position per account, counting
// only ledger rows above an existing row's last_position), emptied, and the
// checkpoint written, in one transaction. So a parallel rebuild gives
// exactly the tables a sequential one does. Balances appear at the end of
// a rebuild, not during it. A rebuild interrupted by a crash leaves ledger
// rows and no checkpoint; BalanceCheckpoint::Load discards them (the runner
// starts over, as it does for any interrupted rebuild).
//
// Durability. SQLite runs in WAL mode with synchronous=NORMAL: a killed
// process loses nothing committed; a power loss may roll back the last
// batches, together with their checkpoint, which then replay. PostgreSQL
// commits as the server is configured (synchronous_commit).
//
// Thread-safety: every BalanceStore method may be called from any thread.
// SQLite: one connection, every method under one mutex (SQLite writes one
// transaction at a time anyway). PostgreSQL: one connection per rebuild
// slice for rebuild batches, each under its own mutex, and one more for
// everything else.
//
// Code. The algorithm above is written once, in balances.cc, over the narrow
// interface in namespace sql below; sqlite_balances.cc and
// postgres_balances.cc implement that interface and nothing else.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "annal/projection.h"
#include "annal/status.h"
#include "annal/types.h"
#include "bank.h"

namespace annal::bank {

class BalanceStore {
 public:
  // Opens (creating the tables when missing) the projection `name`'s
  // tables; `name` is the key of its projection_checkpoint row.
  static Result<std::unique_ptr<BalanceStore>> OpenSqlite(
      const std::string& path, const std::string& name = "account_balances");
  // `conninfo`: a libpq connection string or URI.
  static Result<std::unique_ptr<BalanceStore>> OpenPostgres(
      const std::string& conninfo, const std::string& name = "account_balances");
  virtual ~BalanceStore() = default;

  // One transaction: folds a pending ledger (see above), applies `changes`
  // (ascending positions) with the last_position rule, and sets the
  // checkpoint to `through`.
  virtual Status ApplyLive(std::span<const Change> changes, GlobalPosition through) = 0;
  // One transaction: inserts one ledger row per change, keeping rows
  // already there. `slice` picks the connection (PostgreSQL).
  virtual Status ApplyRebuild(std::span<const Change> changes, uint32_t slice) = 0;
  // One transaction: folds the ledger into account_balances, empties it and
  // sets the checkpoint to `position`.
  virtual Status FinishRebuild(GlobalPosition position) = 0;
  // The checkpoint (0: none), after discarding what an unfinished rebuild
  // left behind (ledger rows: every table is emptied).
  virtual Result<GlobalPosition> LoadCheckpoint() = 0;
  // The checkpoint as stored (std::nullopt: none), changing nothing; for
  // observers such as the demo, which read while a projection writes.
  virtual Result<std::optional<GlobalPosition>> PeekCheckpoint() = 0;
  virtual Status DeleteCheckpoint() = 0;
  // Empties every table, the checkpoint included, in one transaction.
  virtual Status Clear() = 0;
  // The rows of account_balances.
  virtual Result<Balances> ReadBalances() = 0;
  // Rows in balance_ledger (non-zero only while a rebuild runs).
  virtual Result<uint64_t> LedgerRows() = 0;
};

// The projection's handler: decodes each batch's bank events (others are
// skipped) and applies them with ApplyRebuild during a rebuild, else with
// ApplyLive. A malformed bank event stops the runner with its error.
class BalanceProjection final : public client::ProjectionHandler {
 public:
  // `store` must outlive the handler.
  explicit BalanceProjection(BalanceStore* store) : store_(store) {}
  Status Handle(const client::ProjectionBatch& batch) override;
  Status Reset() override { return store_->Clear(); }

 private:
  BalanceStore* const store_;
};

// The checkpoint, kept in projection_checkpoint by BalanceProjection itself
// (handler_saves_checkpoint), so it moves in the same transaction as the
// rows it covers. Save (the end of a rebuild) folds the ledger.
class BalanceCheckpoint final : public client::CheckpointKeeper {
 public:
  // `store` must outlive the keeper.
  explicit BalanceCheckpoint(BalanceStore* store) : store_(store) {}
  Result<GlobalPosition> Load() override { return store_->LoadCheckpoint(); }
  Status Save(GlobalPosition position) override { return store_->FinishRebuild(position); }
  Status Reset() override { return store_->DeleteCheckpoint(); }
  bool handler_saves_checkpoint() const override { return true; }

 private:
  BalanceStore* const store_;
};

// Options for a runner of the balances projection: bank events only
// (category "account", filtered by the server).
client::ProjectionOptions ProjectionOptionsFor(std::string name, uint32_t slices = 1,
                                               bool rebuild = false);

}  // namespace annal::bank
