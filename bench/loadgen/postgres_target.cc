#include "postgres_target.h"

#include <libpq-fe.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>
#include <utility>

#include "annal/assert.h"

namespace annal::loadgen {
namespace {

// SQLSTATE unique_violation: here always UNIQUE (aggregate_id, version),
// since the id comes from the sequence.
constexpr const char* kUniqueViolation = "23505";

constexpr const char* kCreateTable =
    "CREATE TABLE IF NOT EXISTS events ("
    " id BIGSERIAL PRIMARY KEY,"
    " aggregate_id UUID NOT NULL,"
    " aggregate_type VARCHAR NOT NULL,"
    " version INT NOT NULL,"
    " event_type VARCHAR NOT NULL,"
    " payload JSONB NOT NULL,"
    " metadata JSONB NOT NULL,"
    " occurred_at TIMESTAMP NOT NULL DEFAULT now(),"
    " UNIQUE (aggregate_id, version))";
constexpr const char* kCreateIndex =
    "CREATE INDEX IF NOT EXISTS events_occurred_at_idx ON events (occurred_at)";

// One event: the common case, a single-row INSERT.
constexpr const char* kAppendOneName = "annal_append_one";
constexpr const char* kAppendOneSql =
    "INSERT INTO events (aggregate_id, aggregate_type, version, event_type, payload, metadata)"
    " VALUES ($1::uuid, $2::varchar, $3::int, $4::varchar, $5::jsonb, $6::jsonb)";
// Several events in one statement, so in one transaction: $5 and $6 are JSON
// arrays of the payloads and metadata (valid JSON needs no escaping inside
// one, unlike a text[] literal), unnested side by side with their ordinal,
// which gives each event its version. ORDER BY makes the ids follow the
// versions.
constexpr const char* kAppendManyName = "annal_append_many";
constexpr const char* kAppendManySql =
    "INSERT INTO events (aggregate_id, aggregate_type, version, event_type, payload, metadata)"
    " SELECT $1::uuid, $2::varchar, $3::int + t.n::int - 1, $4::varchar, t.payload, t.metadata"
    " FROM ROWS FROM (jsonb_array_elements($5::jsonb), jsonb_array_elements($6::jsonb))"
    " WITH ORDINALITY AS t(payload, metadata, n) ORDER BY t.n";
constexpr const char* kReadName = "annal_read";
constexpr const char* kReadSql =
    "SELECT version, event_type, payload, metadata, occurred_at FROM events"
    " WHERE aggregate_id = $1::uuid ORDER BY version DESC LIMIT $2::int";

constexpr const char* kAggregateType = "bench";

uint64_t Fnv1a64(std::string_view s, uint64_t hash) {
  for (unsigned char ch : s) {
    hash ^= ch;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

// splitmix64's finaliser: a bijection on 64 bits that spreads every input
// bit over the output.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr size_t kUuidChars = 36;

// Writes stream `index`'s aggregate id for `run_id` as 36 characters and a
// NUL. Two 64-bit FNV-1a hashes of the run id (different offset bases), each
// mixed with the index: within one run the high half is a bijection of the
// index, so the streams of a run do not collide.
void FormatStreamUuid(const std::string& run_id, uint32_t index, char* out) {
  uint64_t hi = Mix64(Fnv1a64(run_id, 0xcbf29ce484222325ULL) ^ index);
  uint64_t lo = Mix64(Fnv1a64(run_id, 0x84222325cbf29ce4ULL) + index);
  uint8_t bytes[16];
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    bytes[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  size_t at = 0;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[at++] = '-';
    out[at++] = kHex[bytes[i] >> 4];
    out[at++] = kHex[bytes[i] & 0x0f];
  }
  ANNAL_ASSERT(at == kUuidChars);
  out[at] = '\0';
}

void AppendBase64(std::string_view in, std::string* out) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint32_t{static_cast<uint8_t>(in[i])} << 16) | (uint32_t{static_cast<uint8_t>(in[i + 1])} << 8) |
                 uint32_t{static_cast<uint8_t>(in[i + 2])};
    out->push_back(kAlphabet[(v >> 18) & 63]);
    out->push_back(kAlphabet[(v >> 12) & 63]);
    out->push_back(kAlphabet[(v >> 6) & 63]);
    out->push_back(kAlphabet[v & 63]);
  }
  size_t rest = in.size() - i;
  if (rest == 0) return;
  uint32_t v = uint32_t{static_cast<uint8_t>(in[i])} << 16;
  if (rest == 2) v |= uint32_t{static_cast<uint8_t>(in[i + 1])} << 8;
  out->push_back(kAlphabet[(v >> 18) & 63]);
  out->push_back(kAlphabet[(v >> 12) & 63]);
  out->push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
  out->push_back('=');
}

void AssignInt(int64_t value, std::string* out) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  ANNAL_ASSERT(ec == std::errc());
  out->assign(buf, end);
}

// libpq's messages end in a newline; the summary prints them on one line.
std::string OneLine(const char* message) {
  std::string s = message == nullptr ? "" : message;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& ch : s)
    if (ch == '\n' || ch == '\t') ch = ' ';
  return s;
}

// Runs `sql` on a blocking connection during setup.
Status Exec(PGconn* pg, const char* sql) {
  PGresult* res = PQexec(pg, sql);
  ExecStatusType st = PQresultStatus(res);
  Status s = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
                 ? Status::Ok()
                 : Status::Unavailable(std::string("postgres: ") + sql + ": " + OneLine(PQresultErrorMessage(res)));
  PQclear(res);
  return s;
}

Status Prepare(PGconn* pg, const char* name, const char* sql, int params) {
  PGresult* res = PQprepare(pg, name, sql, params, nullptr);
  Status s = PQresultStatus(res) == PGRES_COMMAND_OK
                 ? Status::Ok()
                 : Status::Unavailable(std::string("postgres: prepare ") + name + ": " +
                                       OneLine(PQresultErrorMessage(res)));
  PQclear(res);
  return s;
}

// The value of a one-row, one-column query, for setup checks.
Result<std::string> QueryValue(PGconn* pg, const char* sql) {
  PGresult* res = PQexec(pg, sql);
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 1) {
    Status s = Status::Unavailable(std::string("postgres: ") + sql + ": " + OneLine(PQresultErrorMessage(res)));
    PQclear(res);
    return s;
  }
  std::string value = PQgetvalue(res, 0, 0);
  PQclear(res);
  return value;
}

Result<PGconn*> OpenBlocking(const std::string& conninfo) {
  PGconn* pg = PQconnectdb(conninfo.c_str());
  if (pg == nullptr) return Status::Unavailable("postgres: out of memory opening a connection");
  if (PQstatus(pg) != CONNECTION_OK) {
    Status s = Status::Unavailable("postgres: cannot connect: " + OneLine(PQerrorMessage(pg)));
    PQfinish(pg);
    return s;
  }
  return pg;
}

// Makes a fresh session behave as the benchmark assumes, whatever the
// server's or role's defaults: commits wait for their WAL flush. Then
// prepares the statements the measured path runs.
Status SetUpSession(PGconn* pg) {
  ANNAL_RETURN_IF_ERROR(Exec(pg, "SET synchronous_commit = on"));
  // Compared inside the Result: GCC 12 at -O3 warned that a string moved
  // out of it "may be used uninitialized" (-Wmaybe-uninitialized) and
  // failed the build.
  Result<std::string> sync = QueryValue(pg, "SHOW synchronous_commit");
  if (!sync.ok()) return sync.status();
  if (*sync != "on") return Status::Unavailable("postgres: synchronous_commit is '" + *sync + "' after setting it on");
  ANNAL_RETURN_IF_ERROR(Prepare(pg, kAppendOneName, kAppendOneSql, 6));
  ANNAL_RETURN_IF_ERROR(Prepare(pg, kAppendManyName, kAppendManySql, 6));
  ANNAL_RETURN_IF_ERROR(Prepare(pg, kReadName, kReadSql, 2));
  return Status::Ok();
}

}  // namespace

PostgresTarget::PostgresTarget(const PostgresOptions& options)
    : options_(options),
      pipeline_(options.depth > 1),
      next_version_(options.workload.streams, 0),
      payloads_(options.workload) {}

PostgresTarget::~PostgresTarget() {
  for (Connection& c : conns_)
    if (c.pg != nullptr) PQfinish(c.pg);
}

Result<std::unique_ptr<PostgresTarget>> PostgresTarget::Connect(const PostgresOptions& options) {
  if (options.connections == 0 || options.connections > kMaxConnections)
    return Status::InvalidArgument("postgres: connections must be in [1, " + std::to_string(kMaxConnections) + "]");
  if (options.depth == 0 || options.depth > kMaxDepth)
    return Status::InvalidArgument("postgres: depth must be in [1, " + std::to_string(kMaxDepth) + "]");
  if (options.workload.streams == 0) return Status::InvalidArgument("postgres: the workload has no streams");

  std::unique_ptr<PostgresTarget> t(new PostgresTarget(options));
  t->conns_.resize(options.connections);
  for (size_t i = 0; i < options.connections; ++i) {
    Connection& c = t->conns_[i];
    ANNAL_ASSIGN_OR_RETURN(c.pg, OpenBlocking(options.conninfo));
    if (i == 0) {
      // A server that does not fsync acknowledges commits it may lose; the
      // comparison with annal, which acknowledges only fsynced appends,
      // would be meaningless.
      ANNAL_ASSIGN_OR_RETURN(std::string fsync, QueryValue(c.pg, "SHOW fsync"));
      if (fsync != "on")
        return Status::Unavailable("postgres: the server runs with fsync = " + fsync +
                                   "; set fsync = on in postgresql.conf for a durable comparison");
      // Quietly: "already exists, skipping" is the common case.
      ANNAL_RETURN_IF_ERROR(Exec(c.pg, "SET client_min_messages = warning"));
      ANNAL_RETURN_IF_ERROR(Exec(c.pg, kCreateTable));
      ANNAL_RETURN_IF_ERROR(Exec(c.pg, kCreateIndex));
    }
    // After the schema exists: the statements name the table.
    ANNAL_RETURN_IF_ERROR(SetUpSession(c.pg));
    if (PQsetnonblocking(c.pg, 1) != 0)
      return Status::Unavailable("postgres: cannot make a connection non-blocking: " + OneLine(PQerrorMessage(c.pg)));
    if (t->pipeline_ && PQenterPipelineMode(c.pg) != 1)
      return Status::Unavailable("postgres: cannot enter pipeline mode: " + OneLine(PQerrorMessage(c.pg)));
    c.fd = PQsocket(c.pg);
    ANNAL_ASSERT(c.fd >= 0);
  }
  return t;
}

int PostgresTarget::fd(size_t conn) const {
  ANNAL_ASSERT(conn < conns_.size());
  return conns_[conn].fd;
}

size_t PostgresTarget::FreeSlots(size_t conn) const {
  ANNAL_ASSERT(conn < conns_.size());
  size_t in_flight = conns_[conn].in_flight.size();
  ANNAL_ASSERT(in_flight <= options_.depth);
  return options_.depth - in_flight;
}

bool PostgresTarget::HasOutput(size_t conn) const {
  ANNAL_ASSERT(conn < conns_.size());
  return conns_[conn].output_queued;
}

Status PostgresTarget::Send(size_t conn, const Request& r) {
  ANNAL_ASSERT(conn < conns_.size());
  ANNAL_ASSERT(FreeSlots(conn) > 0);
  ANNAL_ASSERT(r.stream < next_version_.size());
  Connection& c = conns_[conn];
  switch (r.kind) {
    case OpKind::kAppend:
      ANNAL_RETURN_IF_ERROR(SendAppend(c, r));
      break;
    case OpKind::kReadStream:
      ANNAL_RETURN_IF_ERROR(SendRead(c, r));
      break;
  }
  if (pipeline_) ANNAL_RETURN_IF_ERROR(EndStatement(c, conn));
  // libpq may have written some or all of it already; Flush finds out.
  c.output_queued = true;
  Pending p;
  p.tag = r.tag;
  p.kind = r.kind;
  c.in_flight.push_back(std::move(p));
  return Status::Ok();
}

Status PostgresTarget::SendAppend(Connection& c, const Request& r) {
  ANNAL_ASSERT(r.events >= 1);
  int32_t& next = next_version_[r.stream];
  ANNAL_ASSERT_MSG(int64_t{next} + r.events <= std::numeric_limits<int32_t>::max(), "version overflows INT");
  StreamUuidInto(r.stream);
  AssignInt(next, &version_);
  next += static_cast<int32_t>(r.events);

  payload_.clear();
  metadata_.clear();
  const char* statement = kAppendOneName;
  if (r.events == 1) {
    AppendPayload(payload_sequence_++, &payload_);
    metadata_.assign(kEventMetadata);
  } else {
    statement = kAppendManyName;
    payload_.push_back('[');
    metadata_.push_back('[');
    for (uint32_t i = 0; i < r.events; ++i) {
      if (i > 0) {
        payload_.push_back(',');
        metadata_.push_back(',');
      }
      AppendPayload(payload_sequence_++, &payload_);
      metadata_.append(kEventMetadata);
    }
    payload_.push_back(']');
    metadata_.push_back(']');
  }
  const char* values[6] = {uuid_.c_str(), kAggregateType, version_.c_str(),
                           kEventType,    payload_.c_str(), metadata_.c_str()};
  if (PQsendQueryPrepared(c.pg, statement, 6, values, nullptr, nullptr, 0) != 1)
    return Status::Unavailable("postgres: cannot send an append: " + OneLine(PQerrorMessage(c.pg)));
  return Status::Ok();
}

Status PostgresTarget::SendRead(Connection& c, const Request& r) {
  ANNAL_ASSERT(r.read_count >= 1);
  StreamUuidInto(r.stream);
  AssignInt(r.read_count, &limit_);
  const char* values[2] = {uuid_.c_str(), limit_.c_str()};
  if (PQsendQueryPrepared(c.pg, kReadName, 2, values, nullptr, nullptr, 0) != 1)
    return Status::Unavailable("postgres: cannot send a read: " + OneLine(PQerrorMessage(c.pg)));
  return Status::Ok();
}

Status PostgresTarget::EndStatement(Connection& c, size_t conn) {
  // PQpipelineSync also tries to flush; on a non-blocking connection what
  // the socket does not take stays in libpq's buffer for Flush.
  if (PQpipelineSync(c.pg) != 1) return Lost(conn, "cannot queue a pipeline sync");
  return Status::Ok();
}

void PostgresTarget::AppendPayload(uint64_t sequence, std::string* out) {
  const std::string& payload = payloads_.Make(sequence);
  if (options_.workload.payload == PayloadKind::kJson) {
    out->append(payload);
    return;
  }
  // Random bytes are not JSON, and JSONB takes only JSON: they go in as
  // base64 inside a JSON string, which makes the stored payload about 4/3
  // of event_bytes (annal stores the bytes as they are). Comparisons of
  // the two stores therefore use JSON payloads.
  out->append("{\"bytes\":\"");
  AppendBase64(payload, out);
  out->append("\"}");
}

Status PostgresTarget::Flush(size_t conn) {
  ANNAL_ASSERT(conn < conns_.size());
  Connection& c = conns_[conn];
  int rc = PQflush(c.pg);
  if (rc < 0) return Lost(conn, "cannot send");
  c.output_queued = rc == 1;
  return Status::Ok();
}

Status PostgresTarget::Poll(size_t conn, std::vector<Completion>* done) {
  ANNAL_ASSERT(conn < conns_.size());
  Connection& c = conns_[conn];
  if (PQconsumeInput(c.pg) != 1) return Lost(conn, "cannot read");
  // Every request is answered by a bounded number of results, so this
  // loop ends when libpq has no complete result left.
  while (PQisBusy(c.pg) == 0) {
    PGresult* res = PQgetResult(c.pg);
    if (res == nullptr) {
      if (pipeline_) {
        // The null that ends a statement's results comes before its Sync;
        // any other null means nothing more is complete.
        if (!c.expect_null) break;
        c.expect_null = false;
        continue;
      }
      // Classic mode: the null comes after the server's ReadyForQuery,
      // so after the commit: the request is done.
      if (c.in_flight.empty()) break;
      if (!c.in_flight.front().answered) return Lost(conn, "got no result for a statement");
      Complete(c, done);
      continue;
    }
    if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
      PQclear(res);
      if (c.in_flight.empty()) return Lost(conn, "got a sync for no request");
      if (!c.in_flight.front().answered) return Lost(conn, "got a sync before the statement's result");
      c.expect_null = false;
      Complete(c, done);
      continue;
    }
    ANNAL_RETURN_IF_ERROR(TakeResult(c, conn, res));
  }
  if (PQstatus(c.pg) == CONNECTION_BAD) return Lost(conn, "connection closed");
  return Status::Ok();
}

Status PostgresTarget::TakeResult(Connection& c, size_t conn, PGresult* res) {
  if (c.in_flight.empty()) {
    PQclear(res);
    return Lost(conn, "got a result for no request");
  }
  Pending& p = c.in_flight.front();
  p.answered = true;
  c.expect_null = pipeline_;
  // Only the first problem of a request is reported.
  bool first_problem = p.outcome == Outcome::kOk;
  ExecStatusType status = PQresultStatus(res);
  bool expected = (status == PGRES_COMMAND_OK && p.kind == OpKind::kAppend) ||
                  (status == PGRES_TUPLES_OK && p.kind == OpKind::kReadStream);
  if ((status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) && !expected) {
    if (first_problem) {
      p.outcome = Outcome::kError;
      p.error = std::string("postgres: ") + PQresStatus(status) + " does not answer a " + OpKindName(p.kind);
    }
    PQclear(res);
    return Status::Ok();
  }
  switch (status) {
    case PGRES_COMMAND_OK:
      break;
    case PGRES_TUPLES_OK: {
      int rows = PQntuples(res);
      rows_read_ += static_cast<uint64_t>(rows);
      last_read_versions_.clear();
      for (int row = 0; row < rows; ++row) last_read_versions_.push_back(std::atoi(PQgetvalue(res, row, 0)));
      break;
    }
    case PGRES_FATAL_ERROR: {
      if (PQstatus(c.pg) == CONNECTION_BAD) {
        std::string message = OneLine(PQresultErrorMessage(res));
        PQclear(res);
        return Status::Unavailable("postgres connection " + std::to_string(conn) + " lost: " + message);
      }
      if (!first_problem) break;
      const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
      if (state != nullptr && std::strcmp(state, kUniqueViolation) == 0) {
        p.outcome = Outcome::kConflict;
      } else {
        p.outcome = Outcome::kError;
        p.error = OneLine(PQresultErrorMessage(res));
      }
      break;
    }
    case PGRES_PIPELINE_ABORTED:
      // Cannot happen while every statement has its own Sync; reported
      // rather than asserted, since it is the server's answer.
      if (first_problem) {
        p.outcome = Outcome::kError;
        p.error = "postgres: statement skipped after an earlier error in its pipeline segment";
      }
      break;
    default:
      if (first_problem) {
        p.outcome = Outcome::kError;
        p.error = std::string("postgres: unexpected result ") + PQresStatus(status) + ": " +
                  OneLine(PQresultErrorMessage(res));
      }
      break;
  }
  PQclear(res);
  return Status::Ok();
}

void PostgresTarget::Complete(Connection& c, std::vector<Completion>* done) {
  ANNAL_ASSERT(!c.in_flight.empty());
  Pending& p = c.in_flight.front();
  Completion completion;
  completion.tag = p.tag;
  completion.outcome = p.outcome;
  completion.error = std::move(p.error);
  done->push_back(std::move(completion));
  c.in_flight.pop_front();
}

Status PostgresTarget::Lost(size_t conn, const char* what) const {
  const Connection& c = conns_[conn];
  return Status::Unavailable("postgres connection " + std::to_string(conn) + ": " + what + ": " +
                             OneLine(PQerrorMessage(c.pg)));
}

int64_t PostgresTarget::StoredBytes() {
  Result<PGconn*> pg = OpenBlocking(options_.conninfo);
  if (!pg.ok()) return -1;
  Result<std::string> size = QueryValue(*pg, "SELECT pg_total_relation_size('events')");
  PQfinish(*pg);
  if (!size.ok()) return -1;
  int64_t bytes = -1;
  auto [end, ec] = std::from_chars(size->data(), size->data() + size->size(), bytes);
  if (ec != std::errc() || end != size->data() + size->size()) return -1;
  return bytes;
}

std::string PostgresTarget::StreamUuid(const std::string& run_id, uint32_t index) {
  char text[kUuidChars + 1];
  FormatStreamUuid(run_id, index, text);
  return std::string(text, kUuidChars);
}

void PostgresTarget::StreamUuidInto(uint32_t index) {
  char text[kUuidChars + 1];
  FormatStreamUuid(options_.run_id, index, text);
  uuid_.assign(text, kUuidChars);
}

}  // namespace annal::loadgen
