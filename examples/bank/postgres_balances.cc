// BalanceStore in PostgreSQL (balances.h), through libpq: the connections
// under the one store of balances.cc, which uses one for live batches and
// everything else, and one per rebuild slice, each under its own mutex.
#include <libpq-fe.h>

#include <map>
#include <utility>
#include <vector>

#include "annal/assert.h"
#include "sql_balances.h"

namespace annal::bank {
namespace {

constexpr sql::Dialect kDialect = {.change_values = "$1::text, $2::text, $3::bigint, $4::bigint",
                                   .checkpoint_values = "$1::text, $2::bigint",
                                   .name_param = "$1"};

// A whole batch in one statement: four arrays unnested side by side.
const std::string kLedgerSql =
    "INSERT INTO balance_ledger (account, owner, delta, position)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
    " ON CONFLICT (position) DO NOTHING";

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

// Parameters in libpq's text format: nullptr for SQL NULL.
class TextParams {
 public:
  explicit TextParams(std::span<const sql::Value> params) {
    text_.reserve(params.size());  // pointers into it must stay put
    for (const sql::Value& p : params) {
      if (const auto* text = std::get_if<std::string_view>(&p)) {
        pointers_.push_back(text_.emplace_back(*text).c_str());
      } else if (const auto* integer = std::get_if<int64_t>(&p)) {
        pointers_.push_back(text_.emplace_back(std::to_string(*integer)).c_str());
      } else {
        pointers_.push_back(nullptr);
      }
    }
  }
  int size() const { return static_cast<int>(pointers_.size()); }
  const char* const* values() const { return pointers_.data(); }

 private:
  std::vector<std::string> text_;
  std::vector<const char*> pointers_;
};

class PostgresConnection final : public sql::Connection {
 public:
  ~PostgresConnection() override { PQfinish(pg_); }

  static Result<std::unique_ptr<sql::Connection>> Open(const std::string& conninfo) {
    auto conn = std::make_unique<PostgresConnection>();
    conn->pg_ = PQconnectdb(conninfo.c_str());
    if (conn->pg_ == nullptr)
      return Status::Unavailable("postgres: out of memory opening a connection");
    if (PQstatus(conn->pg_) != CONNECTION_OK)
      return Status::Unavailable("postgres: cannot connect: " + OneLine(PQerrorMessage(conn->pg_)));
    return std::unique_ptr<sql::Connection>(std::move(conn));
  }

  Status Begin() override { return Exec("BEGIN"); }

  Status Exec(const std::string& sql) override {
    PGresult* res = PQexec(pg_, sql.c_str());
    Status s = Check(res, PGRES_COMMAND_OK, sql);
    PQclear(res);
    return s;
  }

  Status Run(const std::string& sql, std::span<const sql::Value> params) override {
    // A statement prepared inside a transaction that rolls back stays
    // prepared: PQprepare is not transactional.
    auto it = prepared_.find(sql);
    if (it == prepared_.end()) {
      std::string name = "bank_" + std::to_string(prepared_.size());
      PGresult* res =
          PQprepare(pg_, name.c_str(), sql.c_str(), static_cast<int>(params.size()), nullptr);
      Status s = Check(res, PGRES_COMMAND_OK, "prepare " + sql);
      PQclear(res);
      ANNAL_RETURN_IF_ERROR(s);
      it = prepared_.emplace(sql, std::move(name)).first;
    }
    TextParams values(params);
    PGresult* res = PQexecPrepared(pg_, it->second.c_str(), values.size(), values.values(), nullptr,
                                   nullptr, 0);
    Status s = Check(res, PGRES_COMMAND_OK, sql);
    PQclear(res);
    return s;
  }

  Result<std::vector<sql::Row>> Query(const std::string& sql,
                                      std::span<const sql::Value> params) override {
    TextParams values(params);
    PGresult* res = PQexecParams(pg_, sql.c_str(), values.size(), nullptr, values.values(), nullptr,
                                 nullptr, 0);
    Status s = Check(res, PGRES_TUPLES_OK, sql);
    std::vector<sql::Row> rows;
    if (s.ok()) {
      for (int r = 0; r < PQntuples(res); ++r) {
        sql::Row& row = rows.emplace_back();
        for (int c = 0; c < PQnfields(res); ++c) row.push_back(PQgetvalue(res, r, c));
      }
    }
    PQclear(res);
    if (!s.ok()) return s;
    return rows;
  }

  // One statement (so one transaction) over four array literals.
  Status InsertLedger(std::span<const Change> changes) override {
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
    return Run(kLedgerSql, std::array<sql::Value, 4>{accounts, owners, deltas, positions});
  }

 private:
  Status Check(PGresult* res, ExecStatusType want, const std::string& what) {
    if (PQresultStatus(res) == want) return Status::Ok();
    return Status::IoError("postgres: " + what + ": " +
                           OneLine(res ? PQresultErrorMessage(res) : PQerrorMessage(pg_)));
  }

  PGconn* pg_ = nullptr;
  std::map<std::string, std::string> prepared_;  // statement name by SQL text
};

}  // namespace

Result<std::unique_ptr<BalanceStore>> BalanceStore::OpenPostgres(const std::string& conninfo,
                                                                 const std::string& name) {
  ANNAL_ASSIGN_OR_RETURN(std::unique_ptr<sql::Connection> main, PostgresConnection::Open(conninfo));
  // CREATE TABLE IF NOT EXISTS reports existing tables as NOTICEs.
  ANNAL_RETURN_IF_ERROR(main->Exec("SET client_min_messages = warning"));
  ANNAL_RETURN_IF_ERROR(main->Exec(sql::Schema("BIGINT")));
  return sql::NewStore(kDialect, std::move(main), name,
                       [conninfo] { return PostgresConnection::Open(conninfo); });
}

}  // namespace annal::bank
