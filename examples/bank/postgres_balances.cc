// BalanceStore in PostgreSQL (balances.h), through libpq: one connection
// for live batches and everything else, and one per rebuild slice, each
// under its own mutex.
#include <libpq-fe.h>

#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "annal/assert.h"
#include "balances.h"

namespace annal::bank {
namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS account_balances ("
    " account TEXT PRIMARY KEY, owner TEXT, balance BIGINT NOT NULL, last_position BIGINT NOT "
    "NULL);"
    "CREATE TABLE IF NOT EXISTS projection_checkpoint (name TEXT PRIMARY KEY, position BIGINT NOT "
    "NULL);"
    "CREATE TABLE IF NOT EXISTS balance_ledger ("
    " position BIGINT PRIMARY KEY, account TEXT NOT NULL, owner TEXT, delta BIGINT NOT NULL)";

// The statements of sqlite_balances.cc, in PostgreSQL's spelling.
constexpr const char* kUpsertName = "bank_upsert";
constexpr const char* kUpsertSql =
    "INSERT INTO account_balances (account, owner, balance, last_position)"
    " VALUES ($1::text, $2::text, $3::bigint, $4::bigint)"
    " ON CONFLICT (account) DO UPDATE SET"
    " owner = coalesce(excluded.owner, account_balances.owner),"
    " balance = account_balances.balance + excluded.balance,"
    " last_position = excluded.last_position"
    " WHERE excluded.last_position > account_balances.last_position";
// A whole batch in one statement: four arrays unnested side by side.
constexpr const char* kLedgerName = "bank_ledger";
constexpr const char* kLedgerSql =
    "INSERT INTO balance_ledger (account, owner, delta, position)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
    " ON CONFLICT (position) DO NOTHING";
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
constexpr const char* kSetCheckpointName = "bank_set_checkpoint";
constexpr const char* kSetCheckpointSql =
    "INSERT INTO projection_checkpoint (name, position) VALUES ($1::text, $2::bigint)"
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position";

// libpq's messages end in a newline.
std::string OneLine(const char* message) {
  std::string s = message == nullptr ? "" : message;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// An element of a PostgreSQL array literal: quoted, with " and \ escaped.
void AppendArrayElement(std::string_view value, std::string* out) {
  out->push_back('"');
  for (char ch : value) {
    if (ch == '"' || ch == '\\') out->push_back('\\');
    out->push_back(ch);
  }
  out->push_back('"');
}

// One connection and what it has prepared.
class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { PQfinish(pg_); }

  Status Open(const std::string& conninfo) {
    pg_ = PQconnectdb(conninfo.c_str());
    if (pg_ == nullptr) return Status::Unavailable("postgres: out of memory opening a connection");
    if (PQstatus(pg_) != CONNECTION_OK)
      return Status::Unavailable("postgres: cannot connect: " + OneLine(PQerrorMessage(pg_)));
    return Status::Ok();
  }

  // Prepares the statements; the tables must exist.
  Status Prepare() {
    for (auto [name, sql, params] :
         {std::tuple{kUpsertName, kUpsertSql, 4}, std::tuple{kLedgerName, kLedgerSql, 4},
          std::tuple{kSetCheckpointName, kSetCheckpointSql, 2}}) {
      PGresult* res = PQprepare(pg_, name, sql, params, nullptr);
      Status s = Check(res, PGRES_COMMAND_OK, name);
      PQclear(res);
      ANNAL_RETURN_IF_ERROR(s);
    }
    return Status::Ok();
  }

  Status Exec(const char* sql) {
    PGresult* res = PQexec(pg_, sql);
    Status s = Check(res, PGRES_COMMAND_OK, sql);
    PQclear(res);
    return s;
  }

  // Runs a prepared statement; `values` may hold nullptr for SQL NULL.
  Status Run(const char* name, const std::vector<const char*>& values) {
    PGresult* res = PQexecPrepared(pg_, name, static_cast<int>(values.size()), values.data(),
                                   nullptr, nullptr, 0);
    Status s = Check(res, PGRES_COMMAND_OK, name);
    PQclear(res);
    return s;
  }

  // Rows of a query with text parameters, as text ("" for NULL).
  Result<std::vector<std::vector<std::string>>> Query(const char* sql,
                                                      const std::vector<const char*>& values = {}) {
    PGresult* res = PQexecParams(pg_, sql, static_cast<int>(values.size()), nullptr, values.data(),
                                 nullptr, nullptr, 0);
    Status s = Check(res, PGRES_TUPLES_OK, sql);
    std::vector<std::vector<std::string>> rows;
    if (s.ok()) {
      for (int r = 0; r < PQntuples(res); ++r) {
        rows.emplace_back();
        for (int c = 0; c < PQnfields(res); ++c) rows.back().push_back(PQgetvalue(res, r, c));
      }
    }
    PQclear(res);
    if (!s.ok()) return s;
    return rows;
  }

  template <typename Body>
  Status InTransaction(Body body) {
    ANNAL_RETURN_IF_ERROR(Exec("BEGIN"));
    Status s = body();
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok()) (void)Exec("ROLLBACK");
    return s;
  }

 private:
  Status Check(PGresult* res, ExecStatusType want, const char* what) {
    if (PQresultStatus(res) == want) return Status::Ok();
    return Status::IoError(std::string("postgres: ") + what + ": " +
                           OneLine(res ? PQresultErrorMessage(res) : PQerrorMessage(pg_)));
  }

  PGconn* pg_ = nullptr;
};

class PostgresBalanceStore final : public BalanceStore {
 public:
  PostgresBalanceStore(std::string conninfo, std::string name)
      : conninfo_(std::move(conninfo)), name_(std::move(name)) {}

  Status Open() {
    ANNAL_RETURN_IF_ERROR(main_.Open(conninfo_));
    // CREATE TABLE IF NOT EXISTS reports existing tables as NOTICEs.
    ANNAL_RETURN_IF_ERROR(main_.Exec("SET client_min_messages = warning"));
    ANNAL_RETURN_IF_ERROR(main_.Exec(kSchema));
    return main_.Prepare();
  }

  Status ApplyLive(std::span<const Change> changes, GlobalPosition through) override {
    std::lock_guard lock(main_mu_);
    return main_.InTransaction([&]() -> Status {
      if (ledger_pending_) ANNAL_RETURN_IF_ERROR(FoldLedgerLocked());
      for (const Change& c : changes) {
        std::string delta = std::to_string(c.delta), position = std::to_string(c.position.get());
        ANNAL_RETURN_IF_ERROR(
            main_.Run(kUpsertName, {c.account.c_str(), c.owner ? c.owner->c_str() : nullptr,
                                    delta.c_str(), position.c_str()}));
      }
      return SetCheckpointLocked(through);
    });
  }

  Status ApplyRebuild(std::span<const Change> changes, uint32_t slice) override {
    ANNAL_ASSIGN_OR_RETURN(SliceConnection * sc, ForSlice(slice));
    {
      std::lock_guard lock(main_mu_);
      ledger_pending_ = true;
    }
    std::string accounts = "{", owners = "{", deltas = "{", positions = "{";
    for (const Change& c : changes) {
      if (accounts.size() > 1) {
        accounts += ',', owners += ',', deltas += ',', positions += ',';
      }
      AppendArrayElement(c.account, &accounts);
      if (c.owner)
        AppendArrayElement(*c.owner, &owners);
      else
        owners += "NULL";
      deltas += std::to_string(c.delta);
      positions += std::to_string(c.position.get());
    }
    accounts += '}', owners += '}', deltas += '}', positions += '}';
    std::lock_guard lock(sc->mu);
    return sc->conn.Run(kLedgerName,
                        {accounts.c_str(), owners.c_str(), deltas.c_str(), positions.c_str()});
  }

  Status FinishRebuild(GlobalPosition position) override {
    std::lock_guard lock(main_mu_);
    return main_.InTransaction([&]() -> Status {
      ANNAL_RETURN_IF_ERROR(FoldLedgerLocked());
      return SetCheckpointLocked(position);
    });
  }

  Result<GlobalPosition> LoadCheckpoint() override {
    std::lock_guard lock(main_mu_);
    std::optional<GlobalPosition> checkpoint;
    Status s = main_.InTransaction([&]() -> Status {
      ANNAL_ASSIGN_OR_RETURN(auto rows,
                             main_.Query("SELECT EXISTS (SELECT 1 FROM balance_ledger)"));
      if (rows.at(0).at(0) == "t") ANNAL_RETURN_IF_ERROR(ClearLocked());  // an unfinished rebuild
      ANNAL_ASSIGN_OR_RETURN(checkpoint, CheckpointLocked());
      return Status::Ok();
    });
    if (!s.ok()) return s;
    ledger_pending_ = false;
    return checkpoint.value_or(GlobalPosition(0));
  }

  Result<std::optional<GlobalPosition>> PeekCheckpoint() override {
    std::lock_guard lock(main_mu_);
    return CheckpointLocked();
  }

  Status DeleteCheckpoint() override {
    std::lock_guard lock(main_mu_);
    auto rows = main_.Query("DELETE FROM projection_checkpoint WHERE name = $1 RETURNING name",
                            {name_.c_str()});
    return rows.ok() ? Status::Ok() : rows.status();
  }

  Status Clear() override {
    std::lock_guard lock(main_mu_);
    Status s = main_.InTransaction([&] { return ClearLocked(); });
    if (s.ok()) ledger_pending_ = false;
    return s;
  }

  Result<Balances> ReadBalances() override {
    std::lock_guard lock(main_mu_);
    ANNAL_ASSIGN_OR_RETURN(
        auto rows,
        main_.Query(
            "SELECT account, coalesce(owner, ''), balance, last_position FROM account_balances"));
    Balances out;
    for (const auto& r : rows)
      out[r[0]] =
          Balance{.owner = r[1], .balance = std::stoll(r[2]), .last_position = std::stoull(r[3])};
    return out;
  }

  Result<uint64_t> LedgerRows() override {
    std::lock_guard lock(main_mu_);
    ANNAL_ASSIGN_OR_RETURN(auto rows, main_.Query("SELECT count(*) FROM balance_ledger"));
    return std::stoull(rows.at(0).at(0));
  }

 private:
  struct SliceConnection {
    std::mutex mu;
    Connection conn;  // guarded by mu
  };

  // The connection of `slice`, opened on first use.
  Result<SliceConnection*> ForSlice(uint32_t slice) {
    std::lock_guard lock(slices_mu_);
    auto it = slices_.find(slice);
    if (it != slices_.end()) return it->second.get();
    auto sc = std::make_unique<SliceConnection>();
    ANNAL_RETURN_IF_ERROR(sc->conn.Open(conninfo_));
    ANNAL_RETURN_IF_ERROR(sc->conn.Prepare());
    SliceConnection* out = sc.get();
    slices_.emplace(slice, std::move(sc));
    return out;
  }

  Status FoldLedgerLocked() {
    ANNAL_RETURN_IF_ERROR(main_.Exec(kFoldLedgerSql));
    ANNAL_RETURN_IF_ERROR(main_.Exec("DELETE FROM balance_ledger"));
    ledger_pending_ = false;
    return Status::Ok();
  }

  Status SetCheckpointLocked(GlobalPosition position) {
    std::string p = std::to_string(position.get());
    return main_.Run(kSetCheckpointName, {name_.c_str(), p.c_str()});
  }

  Status ClearLocked() {
    return main_.Exec(
        "DELETE FROM account_balances; DELETE FROM balance_ledger; DELETE FROM "
        "projection_checkpoint");
  }

  Result<std::optional<GlobalPosition>> CheckpointLocked() {
    ANNAL_ASSIGN_OR_RETURN(
        auto rows,
        main_.Query("SELECT position FROM projection_checkpoint WHERE name = $1", {name_.c_str()}));
    if (rows.empty()) return std::optional<GlobalPosition>();
    return std::optional<GlobalPosition>(GlobalPosition(std::stoull(rows[0][0])));
  }

  const std::string conninfo_;
  const std::string name_;
  std::mutex main_mu_;
  Connection main_;             // guarded by main_mu_
  bool ledger_pending_ = true;  // guarded by main_mu_; as in sqlite_balances.cc
  std::mutex slices_mu_;
  std::map<uint32_t, std::unique_ptr<SliceConnection>> slices_;  // guarded by slices_mu_
};

}  // namespace

Result<std::unique_ptr<BalanceStore>> BalanceStore::OpenPostgres(const std::string& conninfo,
                                                                 const std::string& name) {
  auto store = std::make_unique<PostgresBalanceStore>(conninfo, name);
  ANNAL_RETURN_IF_ERROR(store->Open());
  return std::unique_ptr<BalanceStore>(std::move(store));
}

}  // namespace annal::bank
