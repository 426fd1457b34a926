// StateEngine: snapshots, loads at head / version / time, and the fallbacks
// when snapshots are damaged, outdated or gone.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "annal/state.h"
#include "test_util.h"

namespace annal {
namespace {

using testing::Event;
using testing::SmallOptions;
using testing::TempDir;
using Json = nlohmann::json;
using namespace std::chrono_literals;

// The reference answer: fold the whole stream from version 0 with `r`,
// keeping the events `keep` accepts, with no snapshot involved.
struct Replayed {
  std::string state;
  uint64_t version = 0;
  int64_t recorded_at_ns = 0;
  bool existed = false;
};
Replayed Replay(Store& store, const std::string& stream, const Reducer& r,
                const std::function<bool(const RecordedEvent&)>& keep) {
  auto all = store.ReadStream(stream, StreamVersion(0), ReadDirection::kForward, 1'000'000);
  EXPECT_TRUE(all.ok()) << all.status().ToString();
  Replayed out;
  out.state = r.Initial();
  for (const RecordedEvent& e : *all) {
    if (!keep(e)) break;
    EXPECT_TRUE(r.Apply(&out.state, e).ok());
    out.version = e.version.get();
    out.recorded_at_ns = e.recorded_at_ns;
    out.existed = true;
  }
  return out;
}

// A random RFC 7386 patch over a few keys: sets, nested objects, deletions.
std::string RandomPatch(std::mt19937_64& rng) {
  static const char* kKeys[] = {"owner", "balance", "status", "address", "tags"};
  Json patch = Json::object();
  int n = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < n; ++i) {
    std::string key = kKeys[rng() % 5];
    switch (rng() % 5) {
      case 0: patch[key] = nullptr; break;
      case 1: patch[key] = static_cast<int64_t>(rng() % 1000); break;
      case 2: patch[key] = "v" + std::to_string(rng() % 50); break;
      case 3: patch[key] = Json{{"city", "c" + std::to_string(rng() % 9)}, {"zip", nullptr}}; break;
      default: patch[key] = Json::array({rng() % 3, rng() % 3}); break;
    }
  }
  return patch.dump();
}

// A schema-2 reducer with the same fold: its snapshots and schema-1 ones
// must never be mixed.
class SchemaTwo final : public Reducer {
 public:
  const std::string& name() const override { return JsonMergePatchReducer()->name(); }
  uint32_t schema_version() const override { return 2; }
  std::string Initial() const override { return JsonMergePatchReducer()->Initial(); }
  Status Apply(std::string* s, const RecordedEvent& e) const override {
    return JsonMergePatchReducer()->Apply(s, e);
  }
};

class StateTest : public ::testing::Test {
 protected:
  StateTest() : dir_("state") {}

  void OpenStore() {
    std::filesystem::create_directories(dir_.path());
    auto s = Store::Open(dir_.path() + "/log", SmallOptions());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }

  StateOptions Options(SnapshotPolicy policy = {}) {
    StateOptions o;
    o.snapshot_path = dir_.path() + "/snapshots.db";
    o.reducers["acct"] = JsonMergePatchReducer();
    o.policy = policy;
    o.log = [this](const std::string& line) {
      std::lock_guard lock(log_mu_);
      log_.push_back(line);
    };
    return o;
  }

  void OpenEngine(StateOptions o) {
    auto e = StateEngine::Open(store_.get(), std::move(o));
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(*e);
  }

  // Appends `n` events to `stream` in appends of 1..3 events.
  void AppendPatches(const std::string& stream, int n, std::mt19937_64& rng) {
    for (int done = 0; done < n;) {
      int k = std::min(n - done, 1 + static_cast<int>(rng() % 3));
      std::vector<EventData> events;
      for (int i = 0; i < k; ++i) events.push_back(Event("Changed", RandomPatch(rng)));
      auto r = store_->Append(stream, ExpectedVersion::Any(), std::move(events));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      done += k;
    }
  }

  // A store and engine with `policy`, and `n` events in `stream` of which
  // the taker has seen all.
  void Fill(const std::string& stream, int n, SnapshotPolicy policy, uint64_t seed) {
    OpenStore();
    OpenEngine(Options(policy));
    std::mt19937_64 rng(seed);
    AppendPatches(stream, n, rng);
    WaitForTaker();
  }

  static SnapshotPolicy Every(uint32_t every, uint32_t keep_latest = 3, uint32_t keep_sparse = 10) {
    SnapshotPolicy p;
    p.every = every;
    p.keep_latest = keep_latest;
    p.keep_sparse = keep_sparse;
    return p;
  }

  void WaitForTaker() {
    ASSERT_TRUE(engine_->WaitForTaker(store_->DurableHead(), 20s)) << "taker stuck at "
                                                                 << engine_->GetStats().taker_position;
  }

  void ExpectSameAsReplay(const std::string& stream, StateTarget target) {
    auto info = store_->GetStreamInfo(stream);
    ASSERT_TRUE(info.ok());
    std::function<bool(const RecordedEvent&)> keep;
    switch (target.kind) {
      case StateTarget::Kind::kHead: keep = [](const RecordedEvent&) { return true; }; break;
      case StateTarget::Kind::kVersion:
        keep = [&](const RecordedEvent& e) { return e.version.get() <= target.version; };
        break;
      case StateTarget::Kind::kTime:
        keep = [&](const RecordedEvent& e) { return e.recorded_at_ns <= target.time_ns; };
        break;
    }
    Replayed want = Replay(*store_, stream, *JsonMergePatchReducer(), keep);
    auto got = engine_->Load(stream, target);
    ASSERT_TRUE(got.ok()) << stream << " at " << target.ToString() << ": " << got.status().ToString();
    EXPECT_EQ(got->state, want.state) << stream << " at " << target.ToString();
    EXPECT_EQ(got->version.get(), want.version) << stream << " at " << target.ToString();
    EXPECT_EQ(got->recorded_at_ns, want.recorded_at_ns);

    // A client folding the plan itself gets the same.
    const Reducer& r = *JsonMergePatchReducer();
    auto plan = engine_->Plan(stream, target, r.name(), r.schema_version(), 1'000'000);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    ASSERT_TRUE(plan->complete);
    std::string folded = plan->snapshot ? plan->snapshot->state : r.Initial();
    uint64_t next = plan->snapshot ? plan->snapshot->version.get() + 1 : 0;
    for (const RecordedEvent& e : plan->events) {
      ASSERT_EQ(e.version.get(), next++) << "plan events are not contiguous after the snapshot";
      ASSERT_TRUE(r.Apply(&folded, e).ok());
    }
    EXPECT_EQ(folded, want.state);
    EXPECT_EQ(plan->target_version.get(), want.version);
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<StateEngine> engine_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

// The property: for random streams, event sequences, snapshot policies,
// versions and times, loading through snapshots equals a full replay.
TEST_F(StateTest, LoadsThroughSnapshotsEqualFullReplay) {
  std::mt19937_64 rng(20261126);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    engine_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_.path());
    OpenStore();
    SnapshotPolicy policy;
    policy.every = std::vector<uint32_t>{1, 3, 7, 25}[round];
    policy.keep_latest = 1 + static_cast<uint32_t>(rng() % 3);
    policy.keep_sparse = static_cast<uint32_t>(rng() % 4);
    OpenEngine(Options(policy));
    std::vector<std::string> streams;
    for (int s = 0; s < 4; ++s) {
      streams.push_back("acct-" + std::to_string(round) + "-" + std::to_string(s));
      AppendPatches(streams.back(), 1 + static_cast<int>(rng() % 120), rng);
    }
    WaitForTaker();
    EXPECT_GT(engine_->GetStats().snapshots_written, 0u);
    for (const std::string& stream : streams) {
      auto info = store_->GetStreamInfo(stream);
      ASSERT_TRUE(info.ok());
      ExpectSameAsReplay(stream, StateTarget::Head());
      for (int i = 0; i < 8; ++i) {
        ExpectSameAsReplay(stream, StateTarget::Version(rng() % (info->head_version.get() + 1)));
        int64_t span = info->last_recorded_at_ns - info->first_recorded_at_ns + 1;
        ExpectSameAsReplay(stream, StateTarget::AsOf(info->first_recorded_at_ns +
                                                     static_cast<int64_t>(rng() % static_cast<uint64_t>(span))));
      }
      // Exactly at an event's recorded_at includes that event.
      auto some = store_->ReadStream(stream, StreamVersion(info->head_version.get() / 2), ReadDirection::kForward, 1);
      ASSERT_TRUE(some.ok());
      ExpectSameAsReplay(stream, StateTarget::AsOf(some->front().recorded_at_ns));
      ExpectSameAsReplay(stream, StateTarget::AsOf(some->front().recorded_at_ns - 1));
      ExpectSameAsReplay(stream, StateTarget::AsOf(info->last_recorded_at_ns + 1'000'000'000));
    }
  }
}

TEST_F(StateTest, LoadStartsFromTheNewestSnapshot) {
  SnapshotPolicy p = Every(10, 10);
  Fill("acct-1", 57, p, 1);
  auto s = engine_->Load("acct-1", StateTarget::Head());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->version.get(), 56u);
  ASSERT_TRUE(s->snapshot_version.has_value());
  EXPECT_EQ(s->snapshot_version->get(), 49u);  // after the 50th event
  EXPECT_EQ(s->events_folded, 7u);
  auto at = engine_->Load("acct-1", StateTarget::Version(25));
  ASSERT_TRUE(at.ok());
  ASSERT_TRUE(at->snapshot_version.has_value());
  EXPECT_EQ(at->snapshot_version->get(), 19u);
  EXPECT_EQ(at->events_folded, 6u);
}

TEST_F(StateTest, NoSuchStreamVersionOrTime) {
  OpenStore();
  OpenEngine(Options());
  auto missing = engine_->Load("acct-none", StateTarget::Head());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  std::mt19937_64 rng(2);
  AppendPatches("acct-2", 5, rng);
  auto info = store_->GetStreamInfo("acct-2");
  ASSERT_TRUE(info.ok());
  auto before = engine_->Load("acct-2", StateTarget::AsOf(info->first_recorded_at_ns - 1));
  EXPECT_EQ(before.status().code(), StatusCode::kNotFound);
  EXPECT_NE(before.status().message().find("did not exist at"), std::string::npos) << before.status().message();
  auto plan = engine_->Plan("acct-2", StateTarget::AsOf(info->first_recorded_at_ns - 1), "", 0, 100);
  EXPECT_EQ(plan.status().code(), StatusCode::kNotFound);

  auto past_head = engine_->Load("acct-2", StateTarget::Version(5));
  EXPECT_EQ(past_head.status().code(), StatusCode::kNotFound);
  EXPECT_NE(past_head.status().message().find("last version is 4"), std::string::npos);

  auto no_reducer = engine_->Load("other-1", StateTarget::Head());
  EXPECT_EQ(no_reducer.status().code(), StatusCode::kUnavailable);
}

// Flips the stored state of every snapshot of `stream` without fixing the
// checksum, as a damaged disk would.
void CorruptSnapshots(const std::string& db_path, const std::string& stream) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  std::string sql = "UPDATE snapshots SET state = CAST('{\"owner\":\"mallory\"}' AS BLOB) WHERE stream = '" +
                    stream + "'";
  char* err = nullptr;
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  EXPECT_GT(sqlite3_changes(db), 0);
  sqlite3_close(db);
}

TEST_F(StateTest, CorruptedSnapshotsArePassedOver) {
  SnapshotPolicy p = Every(5);
  Fill("acct-3", 40, p, 3);
  engine_->Close();
  engine_.reset();
  CorruptSnapshots(dir_.path() + "/snapshots.db", "acct-3");
  OpenEngine(Options(p));
  auto s = engine_->Load("acct-3", StateTarget::Head());
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->snapshot_version.has_value());
  EXPECT_EQ(s->events_folded, 40u);
  EXPECT_GT(engine_->GetStats().snapshots_skipped, 0u);
  ExpectSameAsReplay("acct-3", StateTarget::Head());
  ExpectSameAsReplay("acct-3", StateTarget::Version(17));
  auto info = store_->GetStreamInfo("acct-3");
  ExpectSameAsReplay("acct-3", StateTarget::AsOf((info->first_recorded_at_ns + info->last_recorded_at_ns) / 2));
  std::lock_guard lock(log_mu_);
  bool named = false;
  for (const std::string& line : log_) named |= line.find("fails its checksum") != std::string::npos;
  EXPECT_TRUE(named);
}

TEST_F(StateTest, OutdatedSchemaIsIgnored) {
  SnapshotPolicy p = Every(4);
  Fill("acct-4", 30, p, 4);
  SchemaTwo two;
  auto s = engine_->Load("acct-4", StateTarget::Head(), &two);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->snapshot_version.has_value());
  EXPECT_EQ(s->events_folded, 30u);
  auto one = engine_->Load("acct-4", StateTarget::Head());
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(one->snapshot_version.has_value());
  EXPECT_EQ(s->state, one->state);
}

TEST_F(StateTest, MissingOrUnusableSnapshotStoreFallsBackToReplay) {
  SnapshotPolicy p = Every(3);
  Fill("acct-5", 20, p, 5);
  auto with = engine_->Load("acct-5", StateTarget::Head());
  ASSERT_TRUE(with.ok());
  engine_.reset();

  // Gone: a new, empty store is made and the taker starts over.
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(dir_.path() + "/snapshots.db" + suffix);
  OpenEngine(Options(p));
  auto again = engine_->Load("acct-5", StateTarget::Head());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->state, with->state);
  WaitForTaker();
  EXPECT_GT(engine_->GetStats().snapshots_written, 0u);
  engine_.reset();

  // Unusable: the path is a directory. Loads still answer, by replay.
  StateOptions o = Options(p);
  o.snapshot_path = dir_.path();
  OpenEngine(o);
  EXPECT_FALSE(engine_->GetStats().snapshot_store_ok);
  auto replayed = engine_->Load("acct-5", StateTarget::Head());
  ASSERT_TRUE(replayed.ok());
  EXPECT_EQ(replayed->state, with->state);
  EXPECT_FALSE(replayed->snapshot_version.has_value());
  EXPECT_EQ(engine_->ListSnapshots("acct-5").status().code(), StatusCode::kUnavailable);
}

TEST_F(StateTest, TakerResumesAfterRestart) {
  SnapshotPolicy p = Every(10);
  Fill("acct-6", 35, p, 6);
  EXPECT_EQ(engine_->GetStats().snapshots_written, 3u);
  engine_.reset();
  std::mt19937_64 rng(60);
  AppendPatches("acct-6", 10, rng);  // crosses 40 while no taker runs
  OpenEngine(Options(p));
  WaitForTaker();
  EXPECT_EQ(engine_->GetStats().snapshots_written, 1u);  // only version 39 is new
  auto list = engine_->ListSnapshots("acct-6");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);  // keep_latest 3, keep_sparse over runs of 1000
  EXPECT_EQ(list->back().version.get(), 39u);
}

TEST_F(StateTest, RetentionKeepsLatestAndSparseOlder) {
  SnapshotPolicy p = Every(10, 3, 5);
  Fill("acct-7", 230, p, 7);
  auto list = engine_->ListSnapshots("acct-7");
  ASSERT_TRUE(list.ok());
  std::vector<uint64_t> versions;
  for (const Snapshot& s : *list) versions.push_back(s.version.get());
  // Newest three (229, 219, 209), and of older ones the newest in each run
  // of 50 versions (v / 50): 49, 99, 149, 199.
  EXPECT_EQ(versions, (std::vector<uint64_t>{49, 99, 149, 199, 209, 219, 229}));
  ExpectSameAsReplay("acct-7", StateTarget::Version(120));
}

TEST_F(StateTest, ClientSnapshotsServePlans) {
  OpenStore();
  StateOptions o = Options();
  o.reducers.clear();
  OpenEngine(o);
  std::mt19937_64 rng(8);
  AppendPatches("cart-1", 12, rng);
  auto full = engine_->Plan("cart-1", StateTarget::Head(), "", 0, 100);
  ASSERT_TRUE(full.ok());
  EXPECT_FALSE(full->snapshot.has_value());
  EXPECT_EQ(full->events.size(), 12u);

  Snapshot s;
  s.stream = "cart-1";
  s.version = StreamVersion(7);
  s.reducer = "cart-reducer";
  s.schema_version = 2;
  s.state = "state-at-7";
  auto written = engine_->WriteSnapshot(s);
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  auto plan = engine_->Plan("cart-1", StateTarget::Head(), "cart-reducer", 2, 100);
  ASSERT_TRUE(plan.ok());
  ASSERT_TRUE(plan->snapshot.has_value());
  EXPECT_EQ(plan->snapshot->state, "state-at-7");
  auto event7 = store_->ReadStream("cart-1", StreamVersion(7), ReadDirection::kForward, 1);
  EXPECT_EQ(plan->snapshot->recorded_at_ns, event7->front().recorded_at_ns);
  EXPECT_EQ(*written, event7->front().recorded_at_ns);
  ASSERT_EQ(plan->events.size(), 4u);
  EXPECT_EQ(plan->events.front().version.get(), 8u);
  EXPECT_EQ(plan->target_version.get(), 11u);
  // Another schema: not used.
  auto other = engine_->Plan("cart-1", StateTarget::Head(), "cart-reducer", 3, 100);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->snapshot.has_value());
  // A cut plan says so and still names the target.
  auto cut = engine_->Plan("cart-1", StateTarget::Version(10), "", 0, 4);
  ASSERT_TRUE(cut.ok());
  EXPECT_FALSE(cut->complete);
  EXPECT_EQ(cut->events.size(), 4u);
  EXPECT_EQ(cut->target_version.get(), 10u);
  auto event10 = store_->ReadStream("cart-1", StreamVersion(10), ReadDirection::kForward, 1);
  EXPECT_EQ(cut->target_recorded_at_ns, event10->front().recorded_at_ns);

  s.version = StreamVersion(12);
  EXPECT_EQ(engine_->WriteSnapshot(s).status().code(), StatusCode::kNotFound);
  s.stream = "cart-404";
  EXPECT_EQ(engine_->WriteSnapshot(s).status().code(), StatusCode::kNotFound);
  s.reducer = "";
  EXPECT_EQ(engine_->WriteSnapshot(s).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(StateTest, ReducerErrorNamesStreamAndVersion) {
  OpenStore();
  SnapshotPolicy p;
  p.every = 2;
  OpenEngine(Options(p));
  ASSERT_TRUE(store_->Append("acct-8", ExpectedVersion::Any(), {Event("A", R"({"a":1})")}).ok());
  ASSERT_TRUE(store_->Append("acct-8", ExpectedVersion::Any(), {Event("B", "not json")}).ok());
  ASSERT_TRUE(store_->Append("acct-9", ExpectedVersion::Any(), {Event("A", R"({"a":1})"), Event("A", "{}")}).ok());
  auto s = engine_->Load("acct-8", StateTarget::Head());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("stream 'acct-8' version 1"), std::string::npos) << s.status().message();
  // The taker logs it and goes on with other streams.
  WaitForTaker();
  EXPECT_GE(engine_->GetStats().taker_errors, 1u);
  auto list = engine_->ListSnapshots("acct-9");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 1u);
}

TEST_F(StateTest, ReducerFromSharedLibrary) {
  auto r = LoadReducerLibrary(ANNAL_TEST_REDUCER_PATH);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->name(), "test-counter");
  EXPECT_EQ((*r)->schema_version(), 3u);
  OpenStore();
  StateOptions o = Options();
  o.reducers["count"] = *r;
  SnapshotPolicy p;
  p.every = 4;
  o.policies["count"] = p;
  OpenEngine(o);
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(store_->Append("count-1", ExpectedVersion::Any(), {Event("E", std::string(i, 'x'))}).ok());
  WaitForTaker();
  auto s = engine_->Load("count-1", StateTarget::Head());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->state, "10:45");
  EXPECT_EQ(s->reducer, "test-counter");
  EXPECT_EQ(s->snapshot_version->get(), 7u);
  auto v5 = engine_->Load("count-1", StateTarget::Version(5));
  EXPECT_EQ(v5->state, "6:15");

  ASSERT_TRUE(store_->Append("count-1", ExpectedVersion::Any(), {Event("Poison", "")}).ok());
  auto poisoned = engine_->Load("count-1", StateTarget::Head());
  EXPECT_EQ(poisoned.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(poisoned.status().message().find("poisoned at version 10"), std::string::npos);

  auto missing = LoadReducerLibrary("/nonexistent/libreducer.so");
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("/nonexistent/libreducer.so"), std::string::npos);
}

TEST(JsonMergePatch, FollowsRfc7386) {
  auto r = JsonMergePatchReducer();
  std::string state = r->Initial();
  EXPECT_EQ(state, "{}");
  RecordedEvent e;
  e.payload = R"({"a":"b","c":{"d":"e","f":"g"}})";
  ASSERT_TRUE(r->Apply(&state, e).ok());
  e.payload = R"({"a":"z","c":{"f":null}})";
  ASSERT_TRUE(r->Apply(&state, e).ok());
  EXPECT_EQ(Json::parse(state), Json::parse(R"({"a":"z","c":{"d":"e"}})"));
  e.payload = R"(["x"])";  // a non-object patch replaces the document
  ASSERT_TRUE(r->Apply(&state, e).ok());
  EXPECT_EQ(Json::parse(state), Json::parse(R"(["x"])"));
  e.payload = "{";
  EXPECT_EQ(r->Apply(&state, e).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace annal

namespace annal {
namespace {

// ReadStreamNear returns what ReadStream returns, whether `near` is a good
// starting point (an event of the stream at or above `to`) or not.
TEST_F(StateTest, ReadStreamNearAgreesWithReadStream) {
  OpenStore();
  std::vector<GlobalPosition> positions;  // of "near-1"'s events, by version
  std::vector<GlobalPosition> others;
  for (int i = 0; i < 600; ++i) {
    auto mine = store_->Append("near-1", ExpectedVersion::Any(), {Event("E", std::to_string(i))});
    ASSERT_TRUE(mine.ok());
    positions.push_back(mine->first_position);
    auto other = store_->Append("near-2", ExpectedVersion::Any(), {Event("E", "x")});
    ASSERT_TRUE(other.ok());
    others.push_back(other->first_position);
  }
  std::mt19937_64 rng(9);
  for (int i = 0; i < 200; ++i) {
    uint64_t from = rng() % 600, to = from + rng() % (600 - from);
    auto want = store_->ReadStream("near-1", StreamVersion(from), ReadDirection::kForward, to - from + 1);
    ASSERT_TRUE(want.ok());
    std::vector<GlobalPosition> nears = {positions[to + rng() % (600 - to)],  // good
                                         positions[rng() % (to + 1)],         // below `to` when < to
                                         others[rng() % 600],                 // another stream's
                                         GlobalPosition(0), GlobalPosition(1'000'000)};
    for (GlobalPosition near : nears) {
      auto got = store_->ReadStreamNear("near-1", StreamVersion(from), StreamVersion(to), near);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_EQ(got->size(), want->size()) << "near " << near.get();
      for (size_t k = 0; k < got->size(); ++k) {
        EXPECT_EQ((*got)[k].version, (*want)[k].version);
        EXPECT_EQ((*got)[k].payload, (*want)[k].payload);
      }
    }
  }
  EXPECT_EQ(store_->ReadStreamNear("near-404", StreamVersion(0), StreamVersion(1), positions[0]).status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace annal
