// PostgresTarget against a real, throwaway PostgreSQL cluster started with
// bench/pg-cluster.sh: appends land at dense per-stream versions over
// classic and pipelined connections, a taken version is a conflict, reads
// come newest first, and a lost server is an error rather than a
// completion. Skipped (only) when the PostgreSQL server is not installed.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "pg_cluster.h"
#include "postgres_target.h"

namespace annal::loadgen {
namespace {

using annal::testing::LastLine;
using annal::testing::RunClusterScript;
using annal::testing::ScriptRun;

using Rows = std::vector<std::vector<std::string>>;

constexpr uint32_t kStreams = 50;
// A guard against a hung test, not a timing assumption: every wait below
// ends as soon as the server answers.
constexpr int kNoProgressTimeoutMs = 60'000;
constexpr const char* kNoProgress = "no progress";

Request Append(uint64_t tag, uint32_t stream, uint32_t events = 1) {
  Request r;
  r.tag = tag;
  r.kind = OpKind::kAppend;
  r.stream = stream;
  r.events = events;
  return r;
}

Request Read(uint64_t tag, uint32_t stream, uint32_t read_count) {
  Request r;
  r.tag = tag;
  r.kind = OpKind::kReadStream;
  r.stream = stream;
  r.read_count = read_count;
  return r;
}

struct Driven {
  std::vector<Completion> completions;  // in the order they arrived
  size_t in_flight_max = 0;             // most requests on one connection at once
};

// Sends every request on connection `stream % connections` (the runner's
// rule: one stream, one connection, in order), as many at once as the
// target takes, and polls the sockets until each has its completion.
Result<Driven> Drive(PostgresTarget& t, const std::vector<Request>& requests) {
  const size_t conns = t.connections();
  std::vector<std::deque<Request>> queued(conns);
  for (const Request& r : requests) queued[r.stream % conns].push_back(r);
  Driven out;
  std::vector<size_t> in_flight(conns, 0);
  std::vector<Completion> done;
  while (out.completions.size() < requests.size()) {
    std::vector<pollfd> fds(conns);
    for (size_t c = 0; c < conns; ++c) {
      while (t.FreeSlots(c) > 0 && !queued[c].empty()) {
        ANNAL_RETURN_IF_ERROR(t.Send(c, queued[c].front()));
        queued[c].pop_front();
        out.in_flight_max = std::max(out.in_flight_max, ++in_flight[c]);
      }
      if (t.HasOutput(c)) ANNAL_RETURN_IF_ERROR(t.Flush(c));
      fds[c].fd = t.fd(c);
      fds[c].events = static_cast<short>(POLLIN | (t.HasOutput(c) ? POLLOUT : 0));
    }
    int ready = ::poll(fds.data(), fds.size(), kNoProgressTimeoutMs);
    if (ready < 0) return Status::FromErrno(errno, "poll");
    if (ready == 0) return Status::Unavailable(kNoProgress);
    for (size_t c = 0; c < conns; ++c) {
      if (fds[c].revents & POLLOUT) ANNAL_RETURN_IF_ERROR(t.Flush(c));
      if (fds[c].revents & (POLLIN | POLLERR | POLLHUP)) {
        done.clear();
        ANNAL_RETURN_IF_ERROR(t.Poll(c, &done));
        in_flight[c] -= done.size();
        for (Completion& d : done) out.completions.push_back(std::move(d));
      }
    }
  }
  return out;
}

// Every request completed once, each with `outcome`.
void ExpectAll(const std::vector<Request>& requests, const Driven& driven, Outcome outcome) {
  ASSERT_EQ(driven.completions.size(), requests.size());
  std::set<uint64_t> tags;
  for (const Completion& c : driven.completions) {
    EXPECT_EQ(c.outcome, outcome) << "tag " << c.tag << ": " << c.error;
    EXPECT_TRUE(tags.insert(c.tag).second) << "tag " << c.tag << " completed twice";
  }
  for (const Request& r : requests) EXPECT_EQ(tags.count(r.tag), 1u) << "tag " << r.tag << " never completed";
}

class PostgresTargetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/annal-pg-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    uint16_t port = annal::testing::FreePgPort();
    ASSERT_NE(port, 0);
    ScriptRun run = RunClusterScript("start '" + dir_ + "' " + std::to_string(port));
    if (run.exit_code == annal::testing::kPgNotInstalled) GTEST_SKIP() << run.output;
    ASSERT_EQ(run.exit_code, 0) << run.output;
    conninfo_ = LastLine(run.output);
    ASSERT_EQ(conninfo_.rfind("postgresql://", 0), 0u) << run.output;
  }

  void TearDown() override {
    if (dir_.empty()) return;
    ScriptRun run = RunClusterScript("stop '" + dir_ + "'");
    EXPECT_EQ(run.exit_code, 0) << run.output;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  PostgresOptions Options(const std::string& run_id, size_t connections, size_t depth) const {
    PostgresOptions o;
    o.conninfo = conninfo_;
    o.connections = connections;
    o.depth = depth;
    o.run_id = run_id;
    o.workload.streams = kStreams;
    o.workload.event_bytes = 200;
    return o;
  }

  std::unique_ptr<PostgresTarget> ConnectOrDie(const PostgresOptions& o) {
    auto t = PostgresTarget::Connect(o);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(t).value() : nullptr;
  }

  // Runs `sql` on a connection of its own and returns its rows as text.
  Rows Query(const std::string& sql) const {
    Rows rows;
    PGconn* pg = PQconnectdb(conninfo_.c_str());
    EXPECT_EQ(PQstatus(pg), CONNECTION_OK) << PQerrorMessage(pg);
    PGresult* res = PQexec(pg, sql.c_str());
    EXPECT_EQ(PQresultStatus(res), PGRES_TUPLES_OK) << sql << ": " << PQresultErrorMessage(res);
    for (int r = 0; r < PQntuples(res); ++r) {
      rows.emplace_back();
      for (int c = 0; c < PQnfields(res); ++c) rows.back().push_back(PQgetvalue(res, r, c));
    }
    PQclear(res);
    PQfinish(pg);
    return rows;
  }

  // Versions of `stream` in the order of the global sequence (id).
  std::vector<std::string> VersionsById(const std::string& run_id, uint32_t stream) const {
    std::vector<std::string> versions;
    for (const auto& row : Query("SELECT version FROM events WHERE aggregate_id = '" +
                                 PostgresTarget::StreamUuid(run_id, stream) + "' ORDER BY id"))
      versions.push_back(row[0]);
    return versions;
  }

  // The table holds exactly `appends_per_stream[s]` events of every stream
  // s of the run, at versions 0..k-1, and nothing else.
  void ExpectDenseVersions(const std::string& run_id, const std::vector<uint32_t>& appends_per_stream) const {
    uint64_t total = 0;
    std::map<std::string, uint32_t> expected;  // aggregate id -> events
    for (uint32_t s = 0; s < appends_per_stream.size(); ++s) {
      total += appends_per_stream[s];
      if (appends_per_stream[s] > 0) expected[PostgresTarget::StreamUuid(run_id, s)] = appends_per_stream[s];
    }
    EXPECT_EQ(Query("SELECT count(*) FROM events")[0][0], std::to_string(total));
    // UNIQUE (aggregate_id, version) makes the versions distinct, so count,
    // min and max pin them to exactly 0..k-1.
    Rows rows = Query(
        "SELECT aggregate_id, count(*), min(version), max(version), bool_and(aggregate_type = 'bench')"
        " FROM events GROUP BY aggregate_id");
    ASSERT_EQ(rows.size(), expected.size());
    for (const auto& row : rows) {
      auto it = expected.find(row[0]);
      ASSERT_NE(it, expected.end()) << "unexpected aggregate " << row[0];
      EXPECT_EQ(row[1], std::to_string(it->second)) << row[0];
      EXPECT_EQ(row[2], "0") << row[0];
      EXPECT_EQ(row[3], std::to_string(it->second - 1)) << row[0];
      EXPECT_EQ(row[4], "t") << row[0];
    }
  }

  void AppendsLandAtDenseVersions(size_t depth) {
    const std::string run_id = "dense-" + std::to_string(depth);
    auto t = ConnectOrDie(Options(run_id, 4, depth));
    ASSERT_NE(t, nullptr);
    // Uneven on purpose: the first 25 streams get one append more.
    constexpr uint32_t kAppends = 275;
    std::vector<Request> requests;
    std::vector<uint32_t> per_stream(kStreams, 0);
    for (uint32_t i = 0; i < kAppends; ++i) {
      requests.push_back(Append(1000 + i, i % kStreams));
      ++per_stream[i % kStreams];
    }
    auto driven = Drive(*t, requests);
    ASSERT_TRUE(driven.ok()) << driven.status().ToString();
    ExpectAll(requests, *driven, Outcome::kOk);
    EXPECT_EQ(driven->in_flight_max, depth);
    ExpectDenseVersions(run_id, per_stream);
  }

  std::string dir_;
  std::string conninfo_;
};

TEST_F(PostgresTargetTest, AppendsOverFourClassicConnectionsLandAtDenseVersions) {
  AppendsLandAtDenseVersions(1);
}

TEST_F(PostgresTargetTest, PipelinedAppendsAtDepthEightLandAtDenseVersions) {
  AppendsLandAtDenseVersions(8);
}

TEST_F(PostgresTargetTest, MultiEventAppendInsertsConsecutiveVersionsInOneStatement) {
  for (size_t depth : {size_t{1}, size_t{4}}) {
    SCOPED_TRACE("depth " + std::to_string(depth));
    const std::string run_id = "multi-" + std::to_string(depth);
    auto t = ConnectOrDie(Options(run_id, 1, depth));
    ASSERT_NE(t, nullptr);
    std::vector<Request> requests = {Append(1, 0, 3), Append(2, 1, 1), Append(3, 0, 3), Append(4, 1, 3)};
    auto driven = Drive(*t, requests);
    ASSERT_TRUE(driven.ok()) << driven.status().ToString();
    ExpectAll(requests, *driven, Outcome::kOk);
    // Ids follow versions: each statement inserted its rows in order.
    EXPECT_EQ(VersionsById(run_id, 0), (std::vector<std::string>{"0", "1", "2", "3", "4", "5"}));
    EXPECT_EQ(VersionsById(run_id, 1), (std::vector<std::string>{"0", "1", "2", "3"}));
    Rows rows = Query("SELECT count(DISTINCT metadata), bool_and(payload ? 'account'), bool_and(event_type = "
                      "'Deposited') FROM events WHERE aggregate_id = '" +
                      PostgresTarget::StreamUuid(run_id, 0) + "'");
    EXPECT_EQ(rows[0], (std::vector<std::string>{"1", "t", "t"}));
  }
}

TEST_F(PostgresTargetTest, AppendAtATakenVersionIsAConflictAndDoesNotStopTheNextOnes) {
  for (size_t depth : {size_t{1}, size_t{8}}) {
    SCOPED_TRACE("depth " + std::to_string(depth));
    const std::string run_id = "conflict-" + std::to_string(depth);
    auto first = ConnectOrDie(Options(run_id, 1, depth));
    ASSERT_NE(first, nullptr);
    std::vector<Request> setup = {Append(1, 0)};
    auto driven = Drive(*first, setup);
    ASSERT_TRUE(driven.ok()) << driven.status().ToString();
    ExpectAll(setup, *driven, Outcome::kOk);

    // A second writer of the same run starts its streams at version 0 too:
    // stream 0's version 0 is taken; its version 1 and stream 2 are free.
    auto second = ConnectOrDie(Options(run_id, 1, depth));
    ASSERT_NE(second, nullptr);
    std::vector<Request> requests = {Append(10, 0), Append(11, 2), Append(12, 0)};
    driven = Drive(*second, requests);
    ASSERT_TRUE(driven.ok()) << driven.status().ToString();
    ASSERT_EQ(driven->completions.size(), 3u);
    // One connection answers in order.
    EXPECT_EQ(driven->completions[0].tag, 10u);
    EXPECT_EQ(driven->completions[0].outcome, Outcome::kConflict) << driven->completions[0].error;
    EXPECT_EQ(driven->completions[1].tag, 11u);
    EXPECT_EQ(driven->completions[1].outcome, Outcome::kOk) << driven->completions[1].error;
    EXPECT_EQ(driven->completions[2].tag, 12u);
    EXPECT_EQ(driven->completions[2].outcome, Outcome::kOk) << driven->completions[2].error;
    EXPECT_EQ(VersionsById(run_id, 0), (std::vector<std::string>{"0", "1"}));
    EXPECT_EQ(VersionsById(run_id, 2), (std::vector<std::string>{"0"}));
  }
}

TEST_F(PostgresTargetTest, ReadStreamReturnsNewestFirstUpToReadCount) {
  for (size_t depth : {size_t{1}, size_t{8}}) {
    SCOPED_TRACE("depth " + std::to_string(depth));
    const std::string run_id = "read-" + std::to_string(depth);
    auto t = ConnectOrDie(Options(run_id, 2, depth));
    ASSERT_NE(t, nullptr);
    std::vector<Request> appends;
    for (uint64_t i = 0; i < 5; ++i) appends.push_back(Append(i, 3));
    auto driven = Drive(*t, appends);
    ASSERT_TRUE(driven.ok()) << driven.status().ToString();
    ExpectAll(appends, *driven, Outcome::kOk);

    std::vector<Request> read = {Read(100, 3, 3)};
    driven = Drive(*t, read);
    ASSERT_TRUE(driven.ok()) << driven.status().ToString();
    ExpectAll(read, *driven, Outcome::kOk);
    EXPECT_EQ(t->last_read_versions(), (std::vector<int32_t>{4, 3, 2}));
    EXPECT_EQ(t->rows_read(), 3u);
    // The target's statement, run directly, agrees.
    Rows rows = Query("SELECT version FROM events WHERE aggregate_id = '" + PostgresTarget::StreamUuid(run_id, 3) +
                      "' ORDER BY version DESC LIMIT 3");
    EXPECT_EQ(rows, (Rows{{"4"}, {"3"}, {"2"}}));

    // A stream without events reads as empty, not as an error.
    read = {Read(101, 7, 100)};
    driven = Drive(*t, read);
    ASSERT_TRUE(driven.ok()) << driven.status().ToString();
    ExpectAll(read, *driven, Outcome::kOk);
    EXPECT_TRUE(t->last_read_versions().empty());
    EXPECT_EQ(t->rows_read(), 3u);

    read = {Read(102, 3, 100)};
    driven = Drive(*t, read);
    ASSERT_TRUE(driven.ok()) << driven.status().ToString();
    ExpectAll(read, *driven, Outcome::kOk);
    EXPECT_EQ(t->last_read_versions(), (std::vector<int32_t>{4, 3, 2, 1, 0}));
    EXPECT_EQ(t->rows_read(), 8u);
  }
}

TEST_F(PostgresTargetTest, StoredBytesCountsTheTableAndItsIndexes) {
  auto t = ConnectOrDie(Options("stored", 2, 4));
  ASSERT_NE(t, nullptr);
  int64_t empty_bytes = t->StoredBytes();
  // The empty table already has its three indexes' metapages.
  EXPECT_GT(empty_bytes, 0);
  std::vector<Request> requests;
  for (uint32_t i = 0; i < 200; ++i) requests.push_back(Append(i, i % kStreams));
  auto driven = Drive(*t, requests);
  ASSERT_TRUE(driven.ok()) << driven.status().ToString();
  ExpectAll(requests, *driven, Outcome::kOk);
  int64_t full_bytes = t->StoredBytes();
  // 200 payloads of 200 bytes cannot fit in less.
  EXPECT_GE(full_bytes, empty_bytes + 200 * 200);
}

TEST_F(PostgresTargetTest, RandomPayloadsAreStoredAsBase64InAJsonObject) {
  PostgresOptions o = Options("random", 1, 1);
  o.workload.payload = PayloadKind::kRandom;
  o.workload.event_bytes = 300;
  auto t = ConnectOrDie(o);
  ASSERT_NE(t, nullptr);
  std::vector<Request> requests = {Append(1, 0), Append(2, 0, 2)};
  auto driven = Drive(*t, requests);
  ASSERT_TRUE(driven.ok()) << driven.status().ToString();
  ExpectAll(requests, *driven, Outcome::kOk);
  Rows rows = Query("SELECT length(payload->>'bytes'), length(decode(payload->>'bytes', 'base64')) FROM events");
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& row : rows) EXPECT_EQ(row, (std::vector<std::string>{"400", "300"}));
}

TEST_F(PostgresTargetTest, LostServerIsAStatusErrorNotACompletion) {
  for (size_t depth : {size_t{1}, size_t{8}}) {
    SCOPED_TRACE("depth " + std::to_string(depth));
    auto t = ConnectOrDie(Options("lost-" + std::to_string(depth), 1, depth));
    ASSERT_NE(t, nullptr);
    ScriptRun stop = RunClusterScript("stop '" + dir_ + "'");
    ASSERT_EQ(stop.exit_code, 0) << stop.output;
    std::vector<Request> requests = {Append(1, 0)};
    auto driven = Drive(*t, requests);
    ASSERT_FALSE(driven.ok()) << "the append completed on a stopped server";
    EXPECT_NE(driven.status().message(), kNoProgress);
    EXPECT_NE(driven.status().message().find("postgres"), std::string::npos) << driven.status().ToString();
    if (depth == 1) {
      // Restart for the pipelined round, on the same port.
      std::string port = conninfo_.substr(conninfo_.rfind(':') + 1);
      port = port.substr(0, port.find('/'));
      ScriptRun start = RunClusterScript("start '" + dir_ + "' " + port);
      ASSERT_EQ(start.exit_code, 0) << start.output;
    }
  }
}

}  // namespace
}  // namespace annal::loadgen
