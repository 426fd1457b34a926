// annald's state requests over the wire (docs/protocol.md, "State"):
// LOAD_STATE answered with STATE by a reducer configured for the stream's
// category, or with STATE_PLAN (snapshot + events) for the client to fold;
// WRITE_SNAPSHOT and LIST_SNAPSHOTS; the frame limit on what comes back;
// the state settings (flags and TOML), and the state metrics.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "annald_process.h"
#include "protocol.h"
#include "raw_client.h"
#include "test_util.h"

namespace annal::protocol {
namespace {

using nlohmann::json;
using testing::AnnaldProcess;
using testing::HttpGet;
using testing::RawClient;
using testing::TempDir;

// The next frame, decoded as `M`, which must be its opcode `op`.
template <typename M>
::testing::AssertionResult As(const FrameHeader& h, const std::string& body, Op op, M* m) {
  if (h.op != op) {
    Status s = RawClient::AsStatus(h, body, OpName(op));
    return ::testing::AssertionFailure()
           << "expected " << OpName(op) << ", got " << OpName(h.op) << ": " << s.ToString();
  }
  Status s = Decode(body, m);
  if (!s.ok()) return ::testing::AssertionFailure() << s.ToString();
  return ::testing::AssertionSuccess();
}

// The ERROR a request got.
::testing::AssertionResult IsError(const FrameHeader& h, const std::string& body, ErrorCode code,
                                   ErrorResponse* e) {
  if (h.op != Op::kError)
    return ::testing::AssertionFailure() << "got " << OpName(h.op) << ", not ERROR";
  Status s = Decode(body, e);
  if (!s.ok()) return ::testing::AssertionFailure() << s.ToString();
  if (e->code != code)
    return ::testing::AssertionFailure()
           << "error code " << static_cast<int>(e->code) << ": " << e->message;
  return ::testing::AssertionSuccess();
}

class ServerStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::make_unique<TempDir>(std::string("server-state-") +
                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  // annald with json-merge-patch for category "account" and `extra_args`.
  void Start(std::vector<std::string> extra_args = {}) {
    std::vector<std::string> args = {"--reducer", "account=json-merge-patch"};
    for (std::string& a : extra_args) args.push_back(std::move(a));
    std::filesystem::create_directories(dir_->path());
    auto s = AnnaldProcess::Start(dir_->path() + "/data", std::move(args));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s.value());
    auto c = RawClient::Connect(server_->port(), "server_state_test");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(c.value());
  }

  // Appends one event per payload, each in its own append (so each has its
  // own recorded_at, a little later than the one before); returns them.
  std::vector<AppendResult> Append(const std::string& stream,
                                   const std::vector<std::string>& payloads,
                                   const std::string& type = "Changed") {
    std::vector<AppendResult> results;
    for (const std::string& payload : payloads) {
      AppendRequest req;
      req.stream = stream;
      req.events = {testing::Event(type, payload)};
      FrameHeader h;
      std::string body;
      EXPECT_TRUE(client_->Call(Op::kAppend, ++rid_, req, &h, &body).ok());
      AppendResult r;
      EXPECT_TRUE(As(h, body, Op::kAppendOk, &r));
      results.push_back(r);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return results;
  }

  void Load(const LoadStateRequest& req, FrameHeader* h, std::string* body) {
    ASSERT_TRUE(client_->Call(Op::kLoadState, ++rid_, req, h, body).ok());
  }

  // STATE for `req`, which must come back as one.
  State LoadState(LoadStateRequest req) {
    FrameHeader h;
    std::string body;
    Load(req, &h, &body);
    StateResponse r;
    EXPECT_TRUE(As(h, body, Op::kState, &r)) << req.stream << " " << req.target.ToString();
    return r.state;
  }

  StatePlan LoadPlan(LoadStateRequest req) {
    FrameHeader h;
    std::string body;
    Load(req, &h, &body);
    StatePlanResponse r;
    EXPECT_TRUE(As(h, body, Op::kStatePlan, &r)) << req.stream << " " << req.target.ToString();
    EXPECT_LE(h.length, last_max_frame_bytes_);
    return r.plan;
  }

  ErrorResponse LoadError(LoadStateRequest req, ErrorCode code) {
    FrameHeader h;
    std::string body;
    Load(req, &h, &body);
    ErrorResponse e;
    EXPECT_TRUE(IsError(h, body, code, &e)) << req.stream << " " << req.target.ToString();
    return e;
  }

  static LoadStateRequest Request(std::string stream, StateTarget target = StateTarget::Head()) {
    LoadStateRequest req;
    req.stream = std::move(stream);
    req.target = target;
    return req;
  }

  std::vector<Snapshot> List(const std::string& stream) {
    FrameHeader h;
    std::string body;
    EXPECT_TRUE(
        client_->Call(Op::kListSnapshots, ++rid_, ListSnapshotsRequest{stream}, &h, &body).ok());
    SnapshotsResponse r;
    EXPECT_TRUE(As(h, body, Op::kSnapshots, &r));
    return r.snapshots;
  }

  // Waits (bounded) until the background taker has a snapshot of `stream`
  // at `version`.
  bool WaitForSnapshot(const std::string& stream, uint64_t version) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      for (const Snapshot& s : List(stream))
        if (s.version.get() == version) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<AnnaldProcess> server_;
  std::unique_ptr<RawClient> client_;
  uint32_t rid_ = 1;
  uint32_t last_max_frame_bytes_ = kDefaultMaxFrameBytes;
};

// ------------------------------------------------------------ STATE

TEST_F(ServerStateTest, LoadAtTheHeadFoldsWithTheCategorysReducer) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto appended = Append("account-1", {R"({"a":1})", R"({"b":2})", R"({"a":null,"c":3})"});
  State s = LoadState(Request("account-1"));
  EXPECT_EQ(s.stream, "account-1");
  EXPECT_EQ(s.reducer, "json-merge-patch");
  EXPECT_EQ(s.schema_version, 1u);
  EXPECT_EQ(s.version, StreamVersion(2));
  EXPECT_EQ(s.recorded_at_ns, appended[2].recorded_at_ns);
  EXPECT_EQ(json::parse(s.state), json::parse(R"({"b":2,"c":3})"));
  EXPECT_FALSE(s.snapshot_version.has_value()) << "no snapshot every 100 events yet";
  EXPECT_EQ(s.events_folded, 3u);
  // Naming the server's reducer is the same request.
  LoadStateRequest named = Request("account-1");
  named.reducer = "json-merge-patch";
  EXPECT_EQ(json::parse(LoadState(named).state), json::parse(s.state));
}

TEST_F(ServerStateTest, LoadAtAVersionFoldsExactlyUpToIt) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto appended = Append("account-2", {R"({"a":1})", R"({"b":2})", R"({"a":null})"});
  State s = LoadState(Request("account-2", StateTarget::Version(1)));
  EXPECT_EQ(s.version, StreamVersion(1));
  EXPECT_EQ(s.recorded_at_ns, appended[1].recorded_at_ns);
  EXPECT_EQ(json::parse(s.state), json::parse(R"({"a":1,"b":2})"));
  EXPECT_EQ(json::parse(LoadState(Request("account-2", StateTarget::Version(0))).state),
            json::parse(R"({"a":1})"));
}

TEST_F(ServerStateTest, LoadAsOfATimeFoldsTheEventsRecordedByThen) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto appended = Append("account-3", {R"({"a":1})", R"({"b":2})", R"({"c":3})"});
  ASSERT_LT(appended[1].recorded_at_ns, appended[2].recorded_at_ns);
  // Exactly at event 1's time, and just before event 2's: events 0 and 1.
  for (int64_t t : {appended[1].recorded_at_ns, appended[2].recorded_at_ns - 1}) {
    State s = LoadState(Request("account-3", StateTarget::AsOf(t)));
    EXPECT_EQ(s.version, StreamVersion(1)) << t;
    EXPECT_EQ(s.recorded_at_ns, appended[1].recorded_at_ns);
    EXPECT_EQ(json::parse(s.state), json::parse(R"({"a":1,"b":2})"));
  }
  // Long after the head: all of it.
  EXPECT_EQ(
      LoadState(Request("account-3", StateTarget::AsOf(appended[2].recorded_at_ns + 1'000'000'000)))
          .version,
      StreamVersion(2));
}

TEST_F(ServerStateTest, LoadBeforeTheFirstEventSaysTheStreamDidNotExistThen) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto appended = Append("account-4", {R"({"a":1})"});
  ErrorResponse e =
      LoadError(Request("account-4", StateTarget::AsOf(appended[0].recorded_at_ns - 1)),
                ErrorCode::kStreamNotFound);
  EXPECT_NE(e.message.find("did not exist at"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("account-4"), std::string::npos) << e.message;
  // The same for a client that folds itself.
  LoadStateRequest plan = Request("account-4", StateTarget::AsOf(appended[0].recorded_at_ns - 1));
  plan.plan_only = true;
  EXPECT_NE(LoadError(plan, ErrorCode::kStreamNotFound).message.find("did not exist at"),
            std::string::npos);
}

TEST_F(ServerStateTest, LoadPastTheHeadOrOfAnUnknownStreamIsStreamNotFound) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Append("account-5", {R"({"a":1})", R"({"a":2})"});
  ErrorResponse past =
      LoadError(Request("account-5", StateTarget::Version(2)), ErrorCode::kStreamNotFound);
  EXPECT_NE(past.message.find("no version 2"), std::string::npos) << past.message;
  LoadError(Request("account-404"), ErrorCode::kStreamNotFound);
  LoadError(Request("order-404"), ErrorCode::kStreamNotFound);
  // The connection stays usable after these.
  EXPECT_EQ(LoadState(Request("account-5")).version, StreamVersion(1));
}

TEST_F(ServerStateTest, LoadUsesTheSnapshotsTheServerTakes) {
  ASSERT_NO_FATAL_FAILURE(Start({"--snapshot-every-for", "account=2"}));
  Append("account-6", {R"({"n":0})", R"({"n":1})", R"({"n":2})", R"({"n":3})", R"({"n":4})"});
  ASSERT_TRUE(WaitForSnapshot("account-6", 3)) << "the taker never snapshotted version 3";
  State s = LoadState(Request("account-6"));
  EXPECT_EQ(json::parse(s.state), json::parse(R"({"n":4})"));
  ASSERT_TRUE(s.snapshot_version.has_value());
  EXPECT_EQ(*s.snapshot_version, StreamVersion(3));
  EXPECT_EQ(s.events_folded, 1u);
  std::vector<Snapshot> list = List("account-6");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].version, StreamVersion(1));
  EXPECT_EQ(list[1].version, StreamVersion(3));
  for (const Snapshot& snap : list) {
    EXPECT_EQ(snap.reducer, "json-merge-patch");
    EXPECT_EQ(snap.schema_version, 1u);
    EXPECT_GT(snap.state_size, 0u);
    EXPECT_TRUE(snap.state.empty()) << "a list carries no states";
    EXPECT_GT(snap.taken_at_ns, 0);
  }
}

// ------------------------------------------------------------ STATE_PLAN

TEST_F(ServerStateTest, CategoryWithoutAReducerGetsAPlanOfEveryEvent) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto appended = Append("order-1", {"e0", "e1", "e2"});
  StatePlan p = LoadPlan(Request("order-1"));
  EXPECT_EQ(p.target_version, StreamVersion(2));
  EXPECT_EQ(p.target_recorded_at_ns, appended[2].recorded_at_ns);
  EXPECT_TRUE(p.complete);
  EXPECT_FALSE(p.snapshot.has_value());
  ASSERT_EQ(p.events.size(), 3u);
  for (uint64_t v = 0; v < 3; ++v) {
    EXPECT_EQ(p.events[v].version, StreamVersion(v));
    EXPECT_EQ(p.events[v].payload, "e" + std::to_string(v));
  }
  // As of event 1's time: events 0 and 1 only.
  StatePlan then = LoadPlan(Request("order-1", StateTarget::AsOf(appended[1].recorded_at_ns)));
  EXPECT_EQ(then.target_version, StreamVersion(1));
  EXPECT_EQ(then.events.size(), 2u);
}

TEST_F(ServerStateTest, PlanOnlyOrAnotherReducerGetsAPlanEvenWithAServerReducer) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Append("account-7", {R"({"a":1})", R"({"b":2})"});
  LoadStateRequest plan_only = Request("account-7");
  plan_only.plan_only = true;
  StatePlan p = LoadPlan(plan_only);
  EXPECT_EQ(p.events.size(), 2u);
  EXPECT_TRUE(p.complete);
  LoadStateRequest other = Request("account-7", StateTarget::Version(0));
  other.reducer = "client-side";
  other.schema_version = 2;
  p = LoadPlan(other);
  EXPECT_EQ(p.target_version, StreamVersion(0));
  EXPECT_EQ(p.events.size(), 1u);
}

TEST_F(ServerStateTest, PlanAfterWriteSnapshotStartsFromTheSnapshot) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto appended = Append("order-2", {"e0", "e1", "e2", "e3", "e4"});
  WriteSnapshotRequest write;
  write.snapshot.stream = "order-2";
  write.snapshot.version = StreamVersion(2);
  write.snapshot.reducer = "client-fold";
  write.snapshot.schema_version = 3;
  write.snapshot.state = "folded:e0e1e2";
  FrameHeader h;
  std::string body;
  ASSERT_TRUE(client_->Call(Op::kWriteSnapshot, ++rid_, write, &h, &body).ok());
  SnapshotWritten written;
  ASSERT_TRUE(As(h, body, Op::kSnapshotWritten, &written));
  EXPECT_EQ(written.recorded_at_ns, appended[2].recorded_at_ns);

  LoadStateRequest req = Request("order-2");
  req.reducer = "client-fold";
  req.schema_version = 3;
  StatePlan p = LoadPlan(req);
  ASSERT_TRUE(p.snapshot.has_value());
  EXPECT_EQ(p.snapshot->version, StreamVersion(2));
  EXPECT_EQ(p.snapshot->recorded_at_ns, appended[2].recorded_at_ns);
  EXPECT_EQ(p.snapshot->reducer, "client-fold");
  EXPECT_EQ(p.snapshot->schema_version, 3u);
  EXPECT_EQ(p.snapshot->state, "folded:e0e1e2");
  ASSERT_EQ(p.events.size(), 2u);
  EXPECT_EQ(p.events[0].version, StreamVersion(3));
  EXPECT_EQ(p.events[1].version, StreamVersion(4));
  EXPECT_EQ(p.target_version, StreamVersion(4));

  // Another schema version: no snapshot, every event.
  req.schema_version = 4;
  p = LoadPlan(req);
  EXPECT_FALSE(p.snapshot.has_value());
  EXPECT_EQ(p.events.size(), 5u);
  // A time before the snapshot's: no snapshot either.
  req.schema_version = 3;
  req.target = StateTarget::AsOf(appended[1].recorded_at_ns);
  p = LoadPlan(req);
  EXPECT_FALSE(p.snapshot.has_value());
  EXPECT_EQ(p.events.size(), 2u);

  std::vector<Snapshot> list = List("order-2");
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].version, StreamVersion(2));
  EXPECT_EQ(list[0].reducer, "client-fold");
  EXPECT_EQ(list[0].schema_version, 3u);
  EXPECT_EQ(list[0].state_size, write.snapshot.state.size());
  EXPECT_EQ(list[0].recorded_at_ns, appended[2].recorded_at_ns);
}

TEST_F(ServerStateTest, PlanIsCutAtMaxEvents) {
  ASSERT_NO_FATAL_FAILURE(Start({"--max-read-count", "6"}));
  Append("order-3", std::vector<std::string>(10, "e"));
  LoadStateRequest req = Request("order-3");
  req.max_events = 4;
  StatePlan p = LoadPlan(req);
  EXPECT_EQ(p.events.size(), 4u);
  EXPECT_FALSE(p.complete);
  EXPECT_EQ(p.target_version, StreamVersion(9)) << "the target is still the head";
  // 0 and anything above it mean the server's limit.
  for (uint32_t max : {0u, 100u}) {
    req.max_events = max;
    p = LoadPlan(req);
    EXPECT_EQ(p.events.size(), 6u) << max;
    EXPECT_FALSE(p.complete);
  }
  req.target = StateTarget::Version(5);
  p = LoadPlan(req);
  EXPECT_EQ(p.events.size(), 6u);
  EXPECT_TRUE(p.complete);
}

TEST_F(ServerStateTest, AnswersFitTheFrameLimit) {
  last_max_frame_bytes_ = 65536;
  ASSERT_NO_FATAL_FAILURE(Start({"--max-frame-bytes", "65536"}));
  const std::string big(20'000, 'x');
  std::vector<std::string> patches;
  for (int i = 0; i < 5; ++i) patches.push_back("{\"k" + std::to_string(i) + "\":\"" + big + "\"}");
  Append("order-4", patches);
  StatePlan p = LoadPlan(Request("order-4"));
  EXPECT_GE(p.events.size(), 1u);
  EXPECT_LT(p.events.size(), 5u);
  EXPECT_FALSE(p.complete);
  EXPECT_EQ(p.target_version, StreamVersion(4));

  // A state larger than a frame cannot be sent: kTooLarge, and the way out.
  Append("account-8", patches);
  ErrorResponse e = LoadError(Request("account-8"), ErrorCode::kTooLarge);
  EXPECT_NE(e.message.find("plan_only"), std::string::npos) << e.message;
  EXPECT_EQ(json::parse(LoadState(Request("account-8", StateTarget::Version(1))).state).size(), 2u);
}

// ------------------------------------------------------------ WRITE_SNAPSHOT

TEST_F(ServerStateTest, WriteSnapshotOfAMissingVersionIsStreamNotFound) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Append("order-5", {"e0"});
  WriteSnapshotRequest write;
  write.snapshot.stream = "order-5";
  write.snapshot.version = StreamVersion(1);
  write.snapshot.reducer = "client-fold";
  FrameHeader h;
  std::string body;
  ErrorResponse e;
  ASSERT_TRUE(client_->Call(Op::kWriteSnapshot, ++rid_, write, &h, &body).ok());
  EXPECT_TRUE(IsError(h, body, ErrorCode::kStreamNotFound, &e));
  write.snapshot.stream = "order-404";
  write.snapshot.version = StreamVersion(0);
  ASSERT_TRUE(client_->Call(Op::kWriteSnapshot, ++rid_, write, &h, &body).ok());
  EXPECT_TRUE(IsError(h, body, ErrorCode::kStreamNotFound, &e));
  EXPECT_TRUE(List("order-5").empty());
}

// A client may not write snapshots under the reducer the server folds the
// category with: the server would serve them as its own states.
TEST_F(ServerStateTest, WriteSnapshotOfTheServersOwnReducerIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Append("account-9", {R"({"a":1})"});
  WriteSnapshotRequest write;
  write.snapshot.stream = "account-9";
  write.snapshot.version = StreamVersion(0);
  write.snapshot.reducer = "json-merge-patch";
  write.snapshot.schema_version = 1;
  write.snapshot.state = R"({"forged":true})";
  FrameHeader h;
  std::string body;
  ErrorResponse e;
  ASSERT_TRUE(client_->Call(Op::kWriteSnapshot, ++rid_, write, &h, &body).ok());
  EXPECT_TRUE(IsError(h, body, ErrorCode::kInvalidRequest, &e));
  EXPECT_NE(e.message.find("json-merge-patch"), std::string::npos) << e.message;
  // The connection stays, and the state is the real one.
  EXPECT_EQ(json::parse(LoadState(Request("account-9")).state), json::parse(R"({"a":1})"));
}

// ------------------------------------------------------------ concurrency

// Many state requests at once: each is answered exactly once, with its
// answer or OVERLOADED, and the connection goes on working.
TEST_F(ServerStateTest, ABurstOfLoadsIsAnsweredOnceEachOrRefusedAsOverloaded) {
  ASSERT_NO_FATAL_FAILURE(Start({"--max-in-flight", "4000"}));
  Append("account-10", {R"({"a":1})", R"({"b":2})"});
  constexpr uint32_t kBurst = 3000;
  for (uint32_t i = 0; i < kBurst; ++i)
    client_->Queue(Op::kLoadState, 1000 + i, Request("account-10"));
  ASSERT_TRUE(client_->Flush().ok());
  std::vector<int> answers(kBurst, 0);
  uint32_t overloaded = 0;
  for (uint32_t i = 0; i < kBurst; ++i) {
    FrameHeader h;
    std::string body;
    ASSERT_TRUE(client_->Next(&h, &body).ok()) << "after " << i << " answers";
    ASSERT_GE(h.request_id, 1000u);
    ASSERT_LT(h.request_id, 1000u + kBurst);
    answers[h.request_id - 1000]++;
    if (h.op == Op::kError) {
      ErrorResponse e;
      ASSERT_TRUE(IsError(h, body, ErrorCode::kOverloaded, &e));
      ++overloaded;
    } else {
      ASSERT_EQ(h.op, Op::kState);
    }
  }
  for (uint32_t i = 0; i < kBurst; ++i) EXPECT_EQ(answers[i], 1) << "request " << 1000 + i;
  std::printf("%u of %u loads refused as overloaded\n", overloaded, kBurst);
  EXPECT_EQ(LoadState(Request("account-10")).version, StreamVersion(1));
}

// A load pipelined ahead of a malformed frame is still answered, and the
// connection then closes (it does not wait for the idle timeout).
TEST_F(ServerStateTest, LoadPipelinedBeforeAMalformedFrameIsAnsweredThenClosed) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Append("account-14", std::vector<std::string>(200, R"({"n":1})"));
  client_->Queue(Op::kLoadState, 70, Request("account-14"));
  client_->Queue(Op::kPong, 71, Ping{1});  // only a server may send PONG
  ASSERT_TRUE(client_->Flush().ok());
  bool loaded = false, refused = false;
  while (true) {
    FrameHeader h;
    std::string body;
    bool timed_out = false;
    Status s = client_->Next(&h, &body, std::chrono::seconds(10), &timed_out);
    if (!s.ok()) {
      EXPECT_FALSE(timed_out) << "the connection was not closed";
      break;
    }
    if (h.op == Op::kState && h.request_id == 70) loaded = true;
    if (h.op == Op::kError && h.request_id == 71) refused = true;
  }
  EXPECT_TRUE(loaded) << "the LOAD_STATE's answer was dropped at the close";
  EXPECT_TRUE(refused);
}

TEST_F(ServerStateTest, SigtermWithLoadsInFlightExitsZero) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Append("account-11", std::vector<std::string>(50, R"({"n":1})"));
  for (uint32_t i = 0; i < 200; ++i)
    client_->Queue(Op::kLoadState, 5000 + i, Request("account-11"));
  ASSERT_TRUE(client_->Flush().ok());
  EXPECT_TRUE(server_->Stop()) << "annald must exit 0 on SIGTERM";
}

// ------------------------------------------------------------ configuration

TEST_F(ServerStateTest, ConfigFileGivesReducersAndIntervalsPerCategory) {
  std::filesystem::create_directories(dir_->path());
  std::string config = dir_->path() + "/annald.toml";
  std::ofstream(config) << "snapshot_every = 1000\n"
                           "[reducers]\n"
                           "invoice = \"json-merge-patch\"\n"
                           "[snapshot_every_for]\n"
                           "invoice = 2\n";
  ASSERT_NO_FATAL_FAILURE(Start({"--config", config}));
  Append("invoice-1", {R"({"a":1})", R"({"b":2})", R"({"c":3})"});
  ASSERT_TRUE(WaitForSnapshot("invoice-1", 1));
  EXPECT_EQ(json::parse(LoadState(Request("invoice-1")).state),
            json::parse(R"({"a":1,"b":2,"c":3})"));
  // The flag's reducer for "account" still holds beside the file's.
  Append("account-12", {R"({"a":1})"});
  EXPECT_EQ(LoadState(Request("account-12")).reducer, "json-merge-patch");
  EXPECT_TRUE(std::filesystem::exists(dir_->path() + "/data/snapshots.db"));
}

TEST_F(ServerStateTest, ReducerFromASharedLibrary) {
  ASSERT_NO_FATAL_FAILURE(Start({"--reducer", std::string("counter=") + ANNAL_TEST_REDUCER_PATH}));
  Append("counter-1", {"abc", "de"});
  State s = LoadState(Request("counter-1"));
  EXPECT_EQ(s.reducer, "test-counter");
  EXPECT_EQ(s.schema_version, 3u);
  EXPECT_EQ(s.state, "2:5");
  // The reducer's own error comes back with the engine's words.
  Append("counter-1", {"x"}, "Poison");
  FrameHeader h;
  std::string body;
  Load(Request("counter-1"), &h, &body);
  ASSERT_EQ(h.op, Op::kError);
  ErrorResponse e;
  ASSERT_TRUE(Decode(body, &e).ok());
  EXPECT_NE(e.message.find("poisoned at version 2"), std::string::npos) << e.message;
}

TEST(ServerStateConfigTest, BadReducerIsAStartupErrorNamingIt) {
  TempDir dir("server-state-badreducer");
  auto missing = AnnaldProcess::Start(dir.path(), {"--reducer", "account=/no/such/libreducer.so"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/no/such/libreducer.so"), std::string::npos)
      << missing.status().message();
  auto unknown = AnnaldProcess::Start(dir.path(), {"--reducer", "account=json-merge"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("'json-merge'"), std::string::npos)
      << unknown.status().message();
  for (std::vector<std::string> bad : std::vector<std::vector<std::string>>{
           {"--reducer", "account"},
           {"--reducer", "acc-ount=json-merge-patch"},
           {"--reducer", "account=json-merge-patch", "--reducer", "account=json-merge-patch"},
           {"--snapshot-every-for", "account=x"},
           {"--snapshot-every-for", "account=-1"}}) {
    auto s = AnnaldProcess::Start(dir.path(), bad);
    EXPECT_FALSE(s.ok()) << bad[1];
  }
}

// ------------------------------------------------------------ metrics

TEST_F(ServerStateTest, MetricsCountLoadsAndSnapshots) {
  ASSERT_NO_FATAL_FAILURE(Start({"--snapshot-every-for", "account=1"}));
  Append("account-13", {R"({"a":1})", R"({"a":2})"});
  ASSERT_TRUE(WaitForSnapshot("account-13", 1));
  LoadState(Request("account-13"));
  LoadState(Request("account-13", StateTarget::Version(0)));
  // The taker records its position just after storing its snapshots.
  std::string page;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    page = HttpGet(server_->metrics_port(), "/metrics");
  } while (page.find("\nannal_snapshot_taker_position 2\n") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_NE(page.find("\nannal_state_loads_total 2\n"), std::string::npos) << page;
  EXPECT_NE(page.find("\nannal_snapshots_written_total 2\n"), std::string::npos);
  EXPECT_NE(page.find("\nannal_snapshots_skipped_total 0\n"), std::string::npos);
  EXPECT_NE(page.find("\nannal_snapshot_taker_position 2\n"), std::string::npos);
  EXPECT_NE(page.find("\nannal_snapshot_store_ok 1\n"), std::string::npos);
  EXPECT_NE(page.find("annal_state_latency_seconds_count"), std::string::npos);
  EXPECT_NE(page.find("\nannal_state_requests_overloaded_total 0\n"), std::string::npos);
}

}  // namespace
}  // namespace annal::protocol
