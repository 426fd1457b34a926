// PostgresTarget: the reference design's event store — one PostgreSQL
// table of events — driven by annal-bench with the same workload as annald,
// so that the two can be compared request for request.
//
// Schema (created if absent; exactly the reference design):
//
//   CREATE TABLE events (
//     id             BIGSERIAL PRIMARY KEY,    -- the global sequence number
//     aggregate_id   UUID      NOT NULL,       -- the stream
//     aggregate_type VARCHAR   NOT NULL,       -- always 'bench' here
//     version        INT       NOT NULL,       -- position in the stream, from 0
//     event_type     VARCHAR   NOT NULL,
//     payload        JSONB     NOT NULL,
//     metadata       JSONB     NOT NULL,
//     occurred_at    TIMESTAMP NOT NULL DEFAULT now(),
//     UNIQUE (aggregate_id, version));
//   CREATE INDEX events_occurred_at_idx ON events (occurred_at);
//
// Stream index i of a run is the aggregate whose id is StreamUuid(run_id, i):
// a hash of both, so that a second target with the same run id (a second
// process, or a restarted run) names the same aggregates.
//
// Concurrency check: the target keeps every stream's next version, starting
// at 0 and advanced when an append is sent (the runner sends one stream's
// requests through one connection in order, so the versions are sent in
// order too). An append inserts its events at exactly those versions; if
// another writer got there first, the UNIQUE (aggregate_id, version) index
// refuses the insert with SQLSTATE 23505, which is Outcome::kConflict. This
// is the reference design's "INSERT at expected_version + 1" check. A
// version is used up even when its append fails: later appends of the
// stream are already on their way with the versions after it.
//
// Durability: every session sets synchronous_commit = on, and Connect
// refuses a server running with fsync = off, so an append is acknowledged
// only after its commit record is flushed to disk — as annal acknowledges
// only fsynced appends.
//
// Pipelining: with depth 1 a connection carries one statement at a time
// (the classic client). With depth > 1 it runs in libpq's pipeline mode:
// every statement is followed by its own Sync, so each append is its own
// implicit transaction and commit, and a failed append does not abort the
// ones behind it. A request completes when its Sync is answered (the
// server answers a Sync after the commit), never at the statement's result,
// which the server sends before committing.
//
// Thread-safety: none, as every Target. StoredBytes opens its own
// short-lived blocking connection, so it may be called between runs but
// blocks; do not call it on the measured path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "annal/status.h"
#include "target.h"
#include "workload.h"

// libpq's PGconn and PGresult, kept out of this header.
struct pg_conn;
struct pg_result;

namespace annal::loadgen {

struct PostgresOptions {
  std::string conninfo;  // libpq connection string or postgresql:// URI
  size_t connections = 16;
  size_t depth = 1;  // statements in flight per connection; > 1 pipelines
  std::string run_id;
  WorkloadOptions workload;
};

class PostgresTarget final : public Target {
 public:
  // Limits on the options, so that a typo cannot open ten thousand sessions.
  static constexpr size_t kMaxConnections = 1024;
  static constexpr size_t kMaxDepth = 1024;

  // Opens the connections (blocking), creates the schema if absent, sets
  // every session up and prepares its statements, then switches the
  // connections to non-blocking (and pipeline mode for depth > 1).
  static Result<std::unique_ptr<PostgresTarget>> Connect(const PostgresOptions& options);
  ~PostgresTarget() override;

  PostgresTarget(const PostgresTarget&) = delete;
  PostgresTarget& operator=(const PostgresTarget&) = delete;

  std::string name() const override { return "postgres"; }
  size_t connections() const override { return conns_.size(); }
  int fd(size_t conn) const override;
  size_t FreeSlots(size_t conn) const override;
  Status Send(size_t conn, const Request& r) override;
  Status Flush(size_t conn) override;
  bool HasOutput(size_t conn) const override;
  Status Poll(size_t conn, std::vector<Completion>* done) override;
  // pg_total_relation_size('events'): the table, its indexes and TOAST, of
  // every run stored in the database (so meaningful on a fresh one).
  int64_t StoredBytes() override;

  // The aggregate id of stream `index` in run `run_id`: 128 bits hashed from
  // both, formatted as a version-4 UUID ("xxxxxxxx-xxxx-4xxx-[89ab]xxx-...").
  static std::string StreamUuid(const std::string& run_id, uint32_t index);

  // For tests: rows received by all reads, and the versions the last
  // completed read returned, in the order the server sent them.
  uint64_t rows_read() const { return rows_read_; }
  const std::vector<int32_t>& last_read_versions() const { return last_read_versions_; }

 private:
  // A request on the wire, waiting for its answer.
  struct Pending {
    uint64_t tag = 0;
    OpKind kind = OpKind::kAppend;  // what kind of result it expects
    Outcome outcome = Outcome::kOk;
    std::string error;
    bool answered = false;  // a result (or error) arrived for it
  };
  struct Connection {
    pg_conn* pg = nullptr;
    int fd = -1;
    std::deque<Pending> in_flight;  // FIFO: the server answers in order
    bool output_queued = false;     // libpq may hold unsent bytes
    // Pipeline mode: a statement's results end with one null result before
    // its Sync's result; this is set while that null is still to come.
    bool expect_null = false;
  };

  explicit PostgresTarget(const PostgresOptions& options);

  // Sets uuid_ to stream `index`'s aggregate id.
  void StreamUuidInto(uint32_t index);
  Status SendAppend(Connection& c, const Request& r);
  Status SendRead(Connection& c, const Request& r);
  // Queues the Sync that ends the statement just sent (pipeline mode).
  Status EndStatement(Connection& c, size_t conn);
  // Takes a result for the oldest request in flight; frees it.
  Status TakeResult(Connection& c, size_t conn, pg_result* res);
  void Complete(Connection& c, std::vector<Completion>* done);
  Status Lost(size_t conn, const char* what) const;
  // Appends event `sequence`'s payload as JSON to `out`.
  void AppendPayload(uint64_t sequence, std::string* out);

  PostgresOptions options_;
  bool pipeline_ = false;
  std::vector<Connection> conns_;
  std::vector<int32_t> next_version_;  // per stream index
  PayloadMaker payloads_;
  uint64_t payload_sequence_ = 0;
  uint64_t rows_read_ = 0;
  std::vector<int32_t> last_read_versions_;
  // Scratch buffers reused by every Send, so the measured path does not
  // allocate once they have grown.
  std::string uuid_, version_, payload_, metadata_, limit_;
};

}  // namespace annal::loadgen
