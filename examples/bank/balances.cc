// The balances projection's handler and options, and the one BalanceStore
// (balances.h) over sql::Connection; the two databases' connections are in
// sqlite_balances.cc and postgres_balances.cc.
#include "sql_balances.h"

#include <charconv>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "annal/assert.h"

namespace annal::bank {

Status BalanceProjection::Handle(const client::ProjectionBatch& batch) {
  std::vector<Change> changes;
  changes.reserve(batch.events.size());
  for (const RecordedEvent& e : batch.events) {
    ANNAL_ASSIGN_OR_RETURN(std::optional<Change> c, DecodeChange(e));
    if (c) changes.push_back(std::move(*c));
  }
  if (batch.rebuilding)
    return changes.empty() ? Status::Ok() : store_->ApplyRebuild(changes, batch.slice);
  return store_->ApplyLive(changes, batch.through);
}

client::ProjectionOptions ProjectionOptionsFor(std::string name, uint32_t slices, bool rebuild) {
  client::ProjectionOptions o;
  o.name = std::move(name);
  o.filter.kind = client::Filter::Kind::kCategory;
  o.filter.value = std::string(kCategory);
  o.slices = slices;
  o.rebuild = rebuild;
  return o;
}

namespace sql {
namespace {

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
constexpr const char* kClearSql =
    "DELETE FROM account_balances; DELETE FROM balance_ledger; DELETE FROM projection_checkpoint";
constexpr const char* kReadBalancesSql =
    "SELECT account, coalesce(owner, ''), balance, last_position FROM account_balances";

// The live rule: apply only events above the row's last_position.
std::string UpsertSql(const Dialect& d) {
  return std::string("INSERT INTO account_balances (account, owner, balance, last_position)") +
         " VALUES (" + d.change_values + ")" +
         " ON CONFLICT (account) DO UPDATE SET"
         " owner = coalesce(excluded.owner, account_balances.owner),"
         " balance = account_balances.balance + excluded.balance,"
         " last_position = excluded.last_position"
         " WHERE excluded.last_position > account_balances.last_position";
}

// A column of a result row, as the integer it holds.
template <typename Int>
Result<Int> Parse(const std::string& text) {
  Int value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    return Status::Corruption("balances: not an integer: '" + text + "'");
  return value;
}

// A connection and the mutex that guards it.
struct Slot {
  std::mutex mu;
  std::unique_ptr<Connection> conn;  // guarded by mu
};

class SqlBalanceStore final : public BalanceStore {
 public:
  SqlBalanceStore(const Dialect& dialect, std::unique_ptr<Connection> main, std::string name,
                  ConnectionOpener open_slice)
      : name_(std::move(name)),
        upsert_sql_(UpsertSql(dialect)),
        set_checkpoint_sql_(std::string("INSERT INTO projection_checkpoint (name, position)") +
                            " VALUES (" + dialect.checkpoint_values + ")" +
                            " ON CONFLICT (name) DO UPDATE SET position = excluded.position"),
        checkpoint_sql_(std::string("SELECT position FROM projection_checkpoint WHERE name = ") +
                        dialect.name_param),
        delete_checkpoint_sql_(std::string("DELETE FROM projection_checkpoint WHERE name = ") +
                               dialect.name_param),
        open_slice_(std::move(open_slice)) {
    ANNAL_ASSERT(main != nullptr);
    main_.conn = std::move(main);
  }

  Status ApplyLive(std::span<const Change> changes, GlobalPosition through) override {
    std::lock_guard lock(main_.mu);
    return InTransaction(*main_.conn, [&]() -> Status {
      if (ledger_pending_) ANNAL_RETURN_IF_ERROR(FoldLedgerLocked());
      for (const Change& c : changes)
        ANNAL_RETURN_IF_ERROR(main_.conn->Run(upsert_sql_, ChangeParams(c)));
      return SetCheckpointLocked(through);
    });
  }

  Status ApplyRebuild(std::span<const Change> changes, uint32_t slice) override {
    ANNAL_ASSIGN_OR_RETURN(Slot * slot, ForSlice(slice));
    // The flag is main_'s; the insert holds only the slice's connection, so
    // slices write at once where each has its own.
    std::unique_lock lock(main_.mu);
    ledger_pending_ = true;
    if (slot == &main_) return main_.conn->InsertLedger(changes);  // one connection, one lock
    lock.unlock();
    std::lock_guard slot_lock(slot->mu);
    return slot->conn->InsertLedger(changes);
  }

  Status FinishRebuild(GlobalPosition position) override {
    std::lock_guard lock(main_.mu);
    return InTransaction(*main_.conn, [&]() -> Status {
      ANNAL_RETURN_IF_ERROR(FoldLedgerLocked());
      return SetCheckpointLocked(position);
    });
  }

  Result<GlobalPosition> LoadCheckpoint() override {
    std::lock_guard lock(main_.mu);
    std::optional<GlobalPosition> checkpoint;
    Status s = InTransaction(*main_.conn, [&]() -> Status {
      ANNAL_ASSIGN_OR_RETURN(auto ledger,
                             main_.conn->Query("SELECT 1 FROM balance_ledger LIMIT 1"));
      if (!ledger.empty())
        ANNAL_RETURN_IF_ERROR(main_.conn->Exec(kClearSql));  // an unfinished rebuild
      ANNAL_ASSIGN_OR_RETURN(checkpoint, CheckpointLocked());
      return Status::Ok();
    });
    if (!s.ok()) return s;
    ledger_pending_ = false;
    return checkpoint.value_or(GlobalPosition(0));
  }

  Result<std::optional<GlobalPosition>> PeekCheckpoint() override {
    std::lock_guard lock(main_.mu);
    return CheckpointLocked();
  }

  Status DeleteCheckpoint() override {
    std::lock_guard lock(main_.mu);
    return main_.conn->Run(delete_checkpoint_sql_, std::array<Value, 1>{name_});
  }

  Status Clear() override {
    std::lock_guard lock(main_.mu);
    Status s = InTransaction(*main_.conn, [&] { return main_.conn->Exec(kClearSql); });
    if (s.ok()) ledger_pending_ = false;
    return s;
  }

  Result<Balances> ReadBalances() override {
    std::lock_guard lock(main_.mu);
    ANNAL_ASSIGN_OR_RETURN(auto rows, main_.conn->Query(kReadBalancesSql));
    Balances out;
    for (const Row& r : rows) {
      ANNAL_ASSERT(r.size() == 4);
      ANNAL_ASSIGN_OR_RETURN(int64_t balance, Parse<int64_t>(r[2]));
      ANNAL_ASSIGN_OR_RETURN(uint64_t last_position, Parse<uint64_t>(r[3]));
      out[r[0]] = Balance{.owner = r[1], .balance = balance, .last_position = last_position};
    }
    return out;
  }

  Result<uint64_t> LedgerRows() override {
    std::lock_guard lock(main_.mu);
    ANNAL_ASSIGN_OR_RETURN(auto rows, main_.conn->Query("SELECT count(*) FROM balance_ledger"));
    ANNAL_ASSERT(rows.size() == 1 && rows[0].size() == 1);
    return Parse<uint64_t>(rows[0][0]);
  }

 private:
  // The connection that writes `slice`'s rebuild batches: main_ without
  // open_slice_, else the slice's own, opened on first use.
  Result<Slot*> ForSlice(uint32_t slice) {
    if (!open_slice_) return &main_;
    std::lock_guard lock(slices_mu_);
    auto it = slices_.find(slice);
    if (it != slices_.end()) return it->second.get();
    auto slot = std::make_unique<Slot>();
    ANNAL_ASSIGN_OR_RETURN(slot->conn, open_slice_());
    Slot* out = slot.get();
    slices_.emplace(slice, std::move(slot));
    return out;
  }

  Status FoldLedgerLocked() {
    ANNAL_RETURN_IF_ERROR(main_.conn->Run(kFoldLedgerSql, {}));
    ANNAL_RETURN_IF_ERROR(main_.conn->Exec("DELETE FROM balance_ledger"));
    ledger_pending_ = false;
    return Status::Ok();
  }

  Status SetCheckpointLocked(GlobalPosition position) {
    return main_.conn->Run(set_checkpoint_sql_,
                           std::array<Value, 2>{name_, static_cast<int64_t>(position.get())});
  }

  Result<std::optional<GlobalPosition>> CheckpointLocked() {
    ANNAL_ASSIGN_OR_RETURN(auto rows,
                           main_.conn->Query(checkpoint_sql_, std::array<Value, 1>{name_}));
    if (rows.empty()) return std::optional<GlobalPosition>();
    ANNAL_ASSERT(rows[0].size() == 1);
    ANNAL_ASSIGN_OR_RETURN(uint64_t position, Parse<uint64_t>(rows[0][0]));
    return std::optional<GlobalPosition>(GlobalPosition(position));
  }

  const std::string name_;
  const std::string upsert_sql_, set_checkpoint_sql_, checkpoint_sql_, delete_checkpoint_sql_;
  const ConnectionOpener open_slice_;  // empty: rebuild batches go through main_
  Slot main_;                          // live batches and everything else
  // Ledger rows may exist: the first live batch folds them. True at open,
  // so that a rebuild that ended without BalanceCheckpoint::Save is folded.
  bool ledger_pending_ = true;  // guarded by main_.mu
  std::mutex slices_mu_;
  std::map<uint32_t, std::unique_ptr<Slot>> slices_;  // guarded by slices_mu_
};

}  // namespace

std::string Schema(std::string_view integer_type) {
  // '@' stands for `integer_type`.
  std::string schema =
      "CREATE TABLE IF NOT EXISTS account_balances ("
      " account TEXT PRIMARY KEY, owner TEXT, balance @ NOT NULL, last_position @ NOT NULL);"
      "CREATE TABLE IF NOT EXISTS projection_checkpoint (name TEXT PRIMARY KEY, position @ NOT "
      "NULL);"
      "CREATE TABLE IF NOT EXISTS balance_ledger ("
      " position @ PRIMARY KEY, account TEXT NOT NULL, owner TEXT, delta @ NOT NULL);";
  for (size_t at = schema.find('@'); at != std::string::npos; at = schema.find('@', at))
    schema.replace(at, 1, integer_type);
  return schema;
}

std::array<Value, 4> ChangeParams(const Change& c) {
  Value owner;  // NULL
  if (c.owner) owner = std::string_view(*c.owner);
  return {std::string_view(c.account), owner, c.delta, static_cast<int64_t>(c.position.get())};
}

std::unique_ptr<BalanceStore> NewStore(const Dialect& dialect, std::unique_ptr<Connection> main,
                                       std::string name, ConnectionOpener open_slice) {
  return std::make_unique<SqlBalanceStore>(dialect, std::move(main), std::move(name),
                                           std::move(open_slice));
}

}  // namespace sql
}  // namespace annal::bank
