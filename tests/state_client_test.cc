// State through the C++ client against a real annald: LoadState folded by
// the server (at the head, a version, a time), LoadStatePlan for reducers
// that live in the client (after a client-written snapshot, and completed
// with READ_STREAM when the server's reply stops short), Fold, and the
// aggregate Repository (conflicts retried without losing an update,
// snapshots every N events).
#include <gtest/gtest.h>

#include <atomic>
#include <charconv>
#include <set>
#include <thread>

#include "annal/client.h"
#include "annal/repository.h"
#include "annal/state.h"
#include "annald_process.h"
#include "test_util.h"

namespace annal {
namespace {

using client::Aggregate;
using client::Client;
using client::Executed;
using client::Fold;
using client::Repository;
using testing::AnnaldProcess;
using testing::Event;
using testing::TempDir;
using namespace std::chrono_literals;

std::string CurrentTestName() {
  return ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

// A client-side reducer whose state records every event folded, in order,
// so that any difference between two folds shows.
class LogReducer final : public Reducer {
 public:
  explicit LogReducer(uint32_t schema = 1) : schema_(schema) {}
  const std::string& name() const override { return name_; }
  uint32_t schema_version() const override { return schema_; }
  std::string Initial() const override { return "log:"; }
  Status Apply(std::string* state, const RecordedEvent& e) const override {
    *state += std::to_string(e.version.get()) + "=" + e.payload + ";";
    return Status::Ok();
  }

 private:
  std::string name_ = "log";
  uint32_t schema_;
};

// The state is a decimal count; each event's payload is the amount to add.
class CounterReducer final : public Reducer {
 public:
  const std::string& name() const override { return name_; }
  uint32_t schema_version() const override { return 1; }
  std::string Initial() const override { return "0"; }
  Status Apply(std::string* state, const RecordedEvent& e) const override {
    int64_t count = 0, add = 0;
    if (!Parse(*state, &count) || !Parse(e.payload, &add))
      return Status::InvalidArgument("counter: '" + e.payload + "' is not a number");
    *state = std::to_string(count + add);
    return Status::Ok();
  }

 private:
  static bool Parse(const std::string& s, int64_t* v) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
    return ec == std::errc() && end == s.data() + s.size();
  }
  std::string name_ = "tally";
};

Result<std::vector<EventData>> Increment(const std::string&) {
  return std::vector<EventData>{Event("Incremented", "1")};
}

class StateClientTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer({}); }

  // annald folds "account" with json-merge-patch and snapshots it every 4
  // events; every other category has no reducer on the server.
  void StartServer(std::vector<std::string> extra) {
    std::vector<std::string> args = {"--reducer", "account=json-merge-patch", "--snapshot-every",
                                     "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto s = AnnaldProcess::Start(dir_.path(), args);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
    client_ = Connect();
  }

  std::unique_ptr<Client> Connect() {
    auto c = Client::Connect({.port = server_->port()});
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Appends one event and returns its result; a pause after it keeps the
  // recorded_at of consecutive appends apart.
  AppendResult AppendOne(const std::string& stream, const std::string& payload) {
    auto r = client_->Append(stream, ExpectedVersion::Any(), {Event("Changed", payload)});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    std::this_thread::sleep_for(3ms);
    return r.ok() ? *r : AppendResult{};
  }

  // The fold of every event from version 0, the reference answer.
  State FullReplay(const Reducer& reducer, const std::string& stream, StateTarget target) {
    auto plan = client_->LoadStatePlan(stream, target, "", 0);
    EXPECT_TRUE(plan.ok()) << plan.status().ToString();
    if (!plan.ok()) return {};
    EXPECT_FALSE(plan->snapshot.has_value());
    auto state = Fold(reducer, *plan);
    EXPECT_TRUE(state.ok()) << state.status().ToString();
    return state.ok() ? *state : State{};
  }

  TempDir dir_{"state-client-" + CurrentTestName()};
  std::unique_ptr<AnnaldProcess> server_;
  std::unique_ptr<Client> client_;
};

// ---- LoadState: folded by the server ----

TEST_F(StateClientTest, LoadStateAtHeadVersionAndTime) {
  std::vector<AppendResult> r;
  r.push_back(AppendOne("account-42", R"({"owner":"ada","balance":0})"));
  r.push_back(AppendOne("account-42", R"({"balance":100})"));
  r.push_back(AppendOne("account-42", R"({"balance":70,"frozen":true})"));
  r.push_back(AppendOne("account-42", R"({"frozen":null})"));
  r.push_back(AppendOne("account-42", R"({"balance":75})"));

  auto head = client_->LoadState("account-42", StateTarget::Head());
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->stream, "account-42");
  EXPECT_EQ(head->reducer, "json-merge-patch");
  EXPECT_EQ(head->version, StreamVersion(4));
  EXPECT_EQ(head->recorded_at_ns, r[4].recorded_at_ns);
  EXPECT_EQ(head->state, R"({"balance":75,"owner":"ada"})");
  // Whether or not the background snapshot was there yet, the parts add up.
  uint64_t from = head->snapshot_version ? head->snapshot_version->get() + 1 : 0;
  EXPECT_EQ(from + head->events_folded, 5u);

  auto v2 = client_->LoadState("account-42", StateTarget::Version(2));
  ASSERT_TRUE(v2.ok()) << v2.status().ToString();
  EXPECT_EQ(v2->version, StreamVersion(2));
  EXPECT_EQ(v2->state, R"({"balance":70,"frozen":true,"owner":"ada"})");

  // As of the exact recorded_at of version 1: it is in, version 2 is not.
  auto t1 = client_->LoadState("account-42", StateTarget::AsOf(r[1].recorded_at_ns));
  ASSERT_TRUE(t1.ok()) << t1.status().ToString();
  EXPECT_EQ(t1->version, StreamVersion(1));
  EXPECT_EQ(t1->recorded_at_ns, r[1].recorded_at_ns);
  EXPECT_EQ(t1->state, R"({"balance":100,"owner":"ada"})");
  auto just_before = client_->LoadState("account-42", StateTarget::AsOf(r[1].recorded_at_ns - 1));
  ASSERT_TRUE(just_before.ok()) << just_before.status().ToString();
  EXPECT_EQ(just_before->version, StreamVersion(0));
  auto later = client_->LoadState("account-42", StateTarget::AsOf(r[4].recorded_at_ns + 1'000'000));
  ASSERT_TRUE(later.ok()) << later.status().ToString();
  EXPECT_EQ(later->version, StreamVersion(4));
}

TEST_F(StateClientTest, LoadStateBeforeTheFirstEventSaysDidNotExist) {
  AppendResult first = AppendOne("account-7", R"({"owner":"bob"})");
  auto s = client_->LoadState("account-7", StateTarget::AsOf(first.recorded_at_ns - 1));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_NE(s.status().message().find("did not exist at"), std::string::npos)
      << s.status().ToString();

  auto missing = client_->LoadState("account-404", StateTarget::Head());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
  auto past_head = client_->LoadState("account-7", StateTarget::Version(1));
  EXPECT_EQ(past_head.status().code(), StatusCode::kNotFound) << past_head.status().ToString();
}

TEST_F(StateClientTest, LoadStateWithoutServerReducerSaysSoClearly) {
  AppendOne("order-1", "{}");
  auto s = client_->LoadState("order-1", StateTarget::Head());
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(client::IsNoReducer(s.status())) << s.status().ToString();
  EXPECT_NE(s.status().message().find("category 'order'"), std::string::npos);
  EXPECT_NE(s.status().message().find("--reducer order=json-merge-patch"), std::string::npos);
  EXPECT_FALSE(client::IsNoReducer(Status::Unavailable("timed out")));
}

TEST_F(StateClientTest, ServerStateEqualsClientFoldOfTheFullReplay) {
  std::vector<AppendResult> r;
  for (int i = 0; i < 23; ++i)
    r.push_back(AppendOne("account-9", "{\"n\":" + std::to_string(i) + ",\"k" +
                                           std::to_string(i % 5) + "\":" + std::to_string(i) +
                                           "}"));
  auto reducer = JsonMergePatchReducer();
  std::vector<StateTarget> targets = {StateTarget::Head()};
  for (uint64_t v : {0, 3, 4, 7, 8, 15, 22}) targets.push_back(StateTarget::Version(v));
  for (int i : {0, 5, 11, 22}) {
    targets.push_back(StateTarget::AsOf(r[i].recorded_at_ns));
    targets.push_back(StateTarget::AsOf(r[i].recorded_at_ns + 1));
  }
  for (const StateTarget& t : targets) {
    SCOPED_TRACE(t.ToString());
    auto server = client_->LoadState("account-9", t);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    State replay = FullReplay(*reducer, "account-9", t);
    EXPECT_EQ(server->version, replay.version);
    EXPECT_EQ(server->recorded_at_ns, replay.recorded_at_ns);
    EXPECT_EQ(server->state, replay.state);
  }
}

// ---- LoadStatePlan and Fold: reducers in the client ----

TEST_F(StateClientTest, PlanStartsAfterAClientWrittenSnapshot) {
  LogReducer log;
  std::vector<AppendResult> r;
  for (int i = 0; i < 10; ++i) r.push_back(AppendOne("ledger-1", "e" + std::to_string(i)));

  // The client folds up to version 5 and stores the result.
  State at5 = FullReplay(log, "ledger-1", StateTarget::Version(5));
  Snapshot snap;
  snap.stream = "ledger-1";
  snap.version = StreamVersion(5);
  snap.reducer = log.name();
  snap.schema_version = log.schema_version();
  snap.state = at5.state;
  auto written = client_->WriteSnapshot(snap);
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  EXPECT_EQ(*written, r[5].recorded_at_ns);

  auto plan = client_->LoadStatePlan("ledger-1", StateTarget::Head(), "log", 1);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(plan->snapshot.has_value());
  EXPECT_EQ(plan->snapshot->version, StreamVersion(5));
  EXPECT_EQ(plan->snapshot->state, at5.state);
  EXPECT_EQ(plan->snapshot->stream, "ledger-1");
  ASSERT_EQ(plan->events.size(), 4u);
  EXPECT_EQ(plan->events.front().version, StreamVersion(6));
  EXPECT_EQ(plan->target_version, StreamVersion(9));
  EXPECT_TRUE(plan->complete);

  auto folded = Fold(log, *plan);
  ASSERT_TRUE(folded.ok()) << folded.status().ToString();
  EXPECT_EQ(folded->snapshot_version, StreamVersion(5));
  EXPECT_EQ(folded->events_folded, 4u);
  EXPECT_EQ(folded->state, FullReplay(log, "ledger-1", StateTarget::Head()).state);
  EXPECT_EQ(folded->recorded_at_ns, r[9].recorded_at_ns);

  // Before the snapshot it is of no use: the plan starts at version 0.
  auto early = client_->LoadStatePlan("ledger-1", StateTarget::Version(3), "log", 1);
  ASSERT_TRUE(early.ok()) << early.status().ToString();
  EXPECT_FALSE(early->snapshot.has_value());
  EXPECT_EQ(early->events.size(), 4u);

  auto listed = client_->ListSnapshots("ledger-1");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().stream, "ledger-1");
  EXPECT_EQ(listed->front().version, StreamVersion(5));
  EXPECT_EQ(listed->front().reducer, "log");
  EXPECT_EQ(listed->front().schema_version, 1u);
  EXPECT_EQ(listed->front().recorded_at_ns, r[5].recorded_at_ns);
  EXPECT_EQ(listed->front().state_size, at5.state.size());
  EXPECT_GT(listed->front().taken_at_ns, 0);
}

TEST_F(StateClientTest, OutdatedSchemaGetsNoSnapshotAndFoldRefusesAForeignOne) {
  LogReducer v1(1), v2(2);
  for (int i = 0; i < 6; ++i) AppendOne("ledger-2", "e" + std::to_string(i));
  Snapshot snap;
  snap.stream = "ledger-2";
  snap.version = StreamVersion(3);
  snap.reducer = "log";
  snap.schema_version = 1;
  snap.state = FullReplay(v1, "ledger-2", StateTarget::Version(3)).state;
  ASSERT_TRUE(client_->WriteSnapshot(snap).ok());

  // Schema 2 is not served the schema 1 snapshot: it replays from 0.
  auto plan2 = client_->LoadStatePlan("ledger-2", StateTarget::Head(), "log", 2);
  ASSERT_TRUE(plan2.ok()) << plan2.status().ToString();
  EXPECT_FALSE(plan2->snapshot.has_value());
  auto folded2 = Fold(v2, *plan2);
  ASSERT_TRUE(folded2.ok()) << folded2.status().ToString();
  EXPECT_FALSE(folded2->snapshot_version.has_value());
  EXPECT_EQ(folded2->events_folded, 6u);

  // A schema 1 plan folded by schema 2 cannot start from the snapshot, nor
  // from version 0: Fold says so instead of folding a partial stream.
  auto plan1 = client_->LoadStatePlan("ledger-2", StateTarget::Head(), "log", 1);
  ASSERT_TRUE(plan1.ok()) << plan1.status().ToString();
  ASSERT_TRUE(plan1->snapshot.has_value());
  auto wrong = Fold(v2, *plan1);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("load a plan for this reducer"), std::string::npos)
      << wrong.status().ToString();
}

TEST_F(StateClientTest, IncompletePlanIsRefusedByFold) {
  for (int i = 0; i < 5; ++i) AppendOne("ledger-3", "e" + std::to_string(i));
  auto plan = client_->LoadStatePlan("ledger-3", StateTarget::Head(), "", 0);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  plan->events.pop_back();
  plan->complete = false;
  auto folded = Fold(LogReducer(), *plan);
  ASSERT_FALSE(folded.ok());
  EXPECT_NE(folded.status().message().find("incomplete"), std::string::npos)
      << folded.status().ToString();
}

TEST_F(StateClientTest, PlanCapturedByMaxEventsIsCompletedWithReads) {
  // 2,500 events, a first reply of 3: the rest comes in 3 READ_STREAM pages.
  std::vector<EventData> batch;
  for (int i = 0; i < 2500; ++i) batch.push_back(Event("Changed", "e" + std::to_string(i)));
  ASSERT_TRUE(client_->Append("ledger-4", ExpectedVersion::NoStream(), batch).ok());
  auto plan = client_->LoadStatePlan("ledger-4", StateTarget::Version(2400), "", 0, 3);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->complete);
  ASSERT_EQ(plan->events.size(), 2401u);
  for (size_t i = 0; i < plan->events.size(); ++i)
    ASSERT_EQ(plan->events[i].version, StreamVersion(i));
}

// A server whose frames hold few events: its STATE_PLAN stops after a few,
// and so does each READ_STREAM that follows.
TEST(StateClientSmallFrameTest, PlanLargerThanAFrameIsCompletedWithManyReads) {
  TempDir dir("state-client-small-frames");
  auto server = AnnaldProcess::Start(dir.path(), {"--max-frame-bytes", "65536"});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto c = Client::Connect({.port = (*server)->port()});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const std::string payload(4000, 'x');
  for (int i = 0; i < 10; ++i) {
    std::vector<EventData> batch;
    for (int j = 0; j < 10; ++j)
      batch.push_back(Event("Big", payload + std::to_string(i * 10 + j)));
    ASSERT_TRUE((*c)->Append("big-1", ExpectedVersion::Any(), batch).ok());
  }
  auto plan = (*c)->LoadStatePlan("big-1", StateTarget::Head(), "log", 1);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->complete);
  ASSERT_EQ(plan->events.size(), 100u);
  LogReducer log;
  auto folded = Fold(log, *plan);
  ASSERT_TRUE(folded.ok()) << folded.status().ToString();
  std::string expected = log.Initial();
  for (const RecordedEvent& e : plan->events) ASSERT_TRUE(log.Apply(&expected, e).ok());
  EXPECT_EQ(folded->state, expected);
  EXPECT_EQ(folded->version, StreamVersion(99));
}

TEST_F(StateClientTest, WriteSnapshotOfMissingVersionIsRefused) {
  AppendOne("ledger-5", "e0");
  Snapshot snap;
  snap.stream = "ledger-5";
  snap.version = StreamVersion(7);
  snap.reducer = "log";
  snap.schema_version = 1;
  snap.state = "log:";
  auto r = client_->WriteSnapshot(snap);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  snap.reducer = "";
  EXPECT_EQ(client_->WriteSnapshot(snap).status().code(), StatusCode::kInvalidArgument);
}

// ---- Repository ----

TEST_F(StateClientTest, RepositoryLoadsAMissingStreamAsInitialWithNoVersion) {
  Repository repo(*client_, std::make_shared<CounterReducer>());
  auto a = repo.Load("tally-none");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->state, "0");
  EXPECT_FALSE(a->version.has_value());
}

TEST_F(StateClientTest, ExecuteAppendsAfterTheLoadedVersion) {
  Repository repo(*client_, std::make_shared<CounterReducer>());
  auto first = repo.Execute("tally-1", Increment);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->after.state, "1");
  EXPECT_EQ(first->after.version, StreamVersion(0));
  ASSERT_TRUE(first->append.has_value());
  EXPECT_EQ(first->conflicts, 0u);
  auto second = repo.Execute("tally-1", [](const std::string& state) {
    EXPECT_EQ(state, "1");
    return Result<std::vector<EventData>>(
        std::vector<EventData>{Event("Incremented", "10"), Event("Incremented", "5")});
  });
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->after.state, "16");
  EXPECT_EQ(second->after.version, StreamVersion(2));
  auto loaded = repo.Load("tally-1");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->state, "16");
  EXPECT_EQ(loaded->version, StreamVersion(2));
}

TEST_F(StateClientTest, ExecuteRetriesAfterAConflictWithTheNewerState) {
  Repository repo(*client_, std::make_shared<CounterReducer>());
  ASSERT_TRUE(repo.Execute("tally-2", Increment).ok());
  std::vector<std::string> seen;
  auto r = repo.Execute("tally-2", [&](const std::string& state) -> Result<std::vector<EventData>> {
    seen.push_back(state);
    // A competing writer gets in between the first load and its append.
    if (seen.size() == 1) {
      EXPECT_TRUE(
          client_->Append("tally-2", ExpectedVersion::Any(), {Event("Incremented", "100")}).ok());
    }
    return std::vector<EventData>{Event("Incremented", "1")};
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(seen, (std::vector<std::string>{"1", "101"}));
  EXPECT_EQ(r->conflicts, 1u);
  EXPECT_EQ(r->after.state, "102");
  EXPECT_EQ(r->after.version, StreamVersion(2));
}

TEST_F(StateClientTest, ExecuteGivesUpAfterMaxRetries) {
  Repository repo(*client_, std::make_shared<CounterReducer>(), {.max_retries = 2});
  int calls = 0;
  auto r = repo.Execute("tally-3", [&](const std::string&) -> Result<std::vector<EventData>> {
    ++calls;
    EXPECT_TRUE(
        client_->Append("tally-3", ExpectedVersion::Any(), {Event("Incremented", "1")}).ok());
    return std::vector<EventData>{Event("Incremented", "1")};
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_NE(r.status().message().find("gave up after 3 conflicts"), std::string::npos)
      << r.status().ToString();
  EXPECT_EQ(calls, 3);
}

TEST_F(StateClientTest, DecideErrorIsReturnedAndNothingIsAppended) {
  Repository repo(*client_, std::make_shared<CounterReducer>());
  auto r = repo.Execute("tally-4", [](const std::string&) -> Result<std::vector<EventData>> {
    return Status::InvalidArgument("insufficient funds");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "insufficient funds");
  EXPECT_EQ(client_->GetStreamInfo("tally-4").status().code(), StatusCode::kNotFound);
  auto none = repo.Execute("tally-4", [](const std::string&) {
    return Result<std::vector<EventData>>(std::vector<EventData>{});
  });
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->append.has_value());
  EXPECT_FALSE(none->after.version.has_value());
}

TEST_F(StateClientTest, ConcurrentConflictingWritersLoseNoUpdate) {
  constexpr int kWriters = 2;
  constexpr int kIncrementsEach = 40;
  auto reducer = std::make_shared<CounterReducer>();
  std::atomic<uint32_t> conflicts{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&] {
      auto c = Connect();
      ASSERT_NE(c, nullptr);
      Repository repo(*c, reducer, {.snapshot_every = 7, .max_retries = 1000});
      for (int i = 0; i < kIncrementsEach; ++i) {
        auto r = repo.Execute("tally-race", Increment);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        conflicts += r->conflicts;
      }
    });
  }
  for (std::thread& t : writers) t.join();
  Repository repo(*client_, reducer);
  auto final_state = repo.Load("tally-race");
  ASSERT_TRUE(final_state.ok()) << final_state.status().ToString();
  EXPECT_EQ(final_state->state, std::to_string(kWriters * kIncrementsEach));
  EXPECT_EQ(final_state->version, StreamVersion(kWriters * kIncrementsEach - 1));
  std::printf("concurrent writers: %u conflicts retried\n", conflicts.load());
}

TEST_F(StateClientTest, RepositoryWritesASnapshotEveryNEvents) {
  auto reducer = std::make_shared<CounterReducer>();
  Repository repo(*client_, reducer, {.snapshot_every = 5});
  std::vector<uint64_t> snapshotted_at;
  for (int i = 0; i < 12; ++i) {
    auto r = repo.Execute("tally-snap", Increment);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->snapshot_error.ok()) << r->snapshot_error.ToString();
    if (r->snapshot_written) snapshotted_at.push_back(r->after.version->get());
  }
  // A command of 3 events that crosses 15 snapshots its last version.
  auto batch = repo.Execute("tally-snap", [](const std::string&) {
    return Result<std::vector<EventData>>(std::vector<EventData>(3, Event("Incremented", "1")));
  });
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  EXPECT_TRUE(batch->snapshot_written);
  if (batch->snapshot_written) snapshotted_at.push_back(batch->after.version->get());
  EXPECT_EQ(snapshotted_at, (std::vector<uint64_t>{4, 9, 14}));

  auto listed = client_->ListSnapshots("tally-snap");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  std::set<uint64_t> versions;
  for (const Snapshot& s : *listed) {
    EXPECT_EQ(s.reducer, "tally");
    versions.insert(s.version.get());
  }
  EXPECT_TRUE(versions.contains(14)) << ::testing::PrintToString(versions);

  // The next load starts from the newest snapshot.
  auto plan = client_->LoadStatePlan("tally-snap", StateTarget::Head(), "tally", 1);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(plan->snapshot.has_value());
  EXPECT_EQ(plan->snapshot->version, StreamVersion(14));
  EXPECT_EQ(plan->snapshot->state, "15");
  EXPECT_TRUE(plan->events.empty());
  auto loaded = repo.Load("tally-snap");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->state, "15");
}

TEST_F(StateClientTest, FailedSnapshotWriteDoesNotFailTheCommand) {
  // The server folds "account" with json-merge-patch and takes its
  // snapshots itself: it refuses a client's under that name.
  Repository repo(*client_, JsonMergePatchReducer(), {.snapshot_every = 1});
  auto r = repo.Execute("account-77", [](const std::string& state) {
    EXPECT_EQ(state, "{}");
    return Result<std::vector<EventData>>(
        std::vector<EventData>{Event("Opened", R"({"owner":"eve"})")});
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->snapshot_written);
  EXPECT_FALSE(r->snapshot_error.ok());
  EXPECT_EQ(r->after.state, R"({"owner":"eve"})");
  auto server = client_->LoadState("account-77", StateTarget::Head());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ(server->state, r->after.state);
}

}  // namespace
}  // namespace annal
