// The projection runner (annal/projection.h) against a real annald: fresh
// projections with one slice and with several hand every event over exactly
// once and then follow the log live; a stopped runner resumes from its
// checkpoint; a crash between Handle and Save replays the batch (and an
// idempotent read model ends the same); rebuilds, filters, handler errors,
// a full queue, and two runners of one consumer.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "annal/client.h"
#include "annal/projection.h"
#include "annald_process.h"
#include "test_util.h"

namespace annal {
namespace {

using client::CheckpointKeeper;
using client::Client;
using client::ClientOptions;
using client::Filter;
using client::ProjectionBatch;
using client::ProjectionHandler;
using client::ProjectionOptions;
using client::ProjectionRunner;
using client::ServerCheckpoint;
using testing::AnnaldProcess;
using testing::Event;
using testing::TempDir;
using namespace std::chrono_literals;

std::string CurrentTestName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

// A read model that records every event it is handed: how often, by which
// slice, and an idempotent "table" keyed on the position.
class RecordingHandler : public ProjectionHandler {
 public:
  Status Handle(const ProjectionBatch& batch) override {
    std::lock_guard lock(mu_);
    ++batches_;
    for (const RecordedEvent& e : batch.events) {
      uint64_t p = e.position.get();
      if (e.position > batch.through) ++violations_;
      // Ascending within a slice, and within the live phase.
      uint64_t& last = batch.rebuilding ? last_in_slice_[batch.slice] : last_live_;
      if (p <= last) ++violations_;
      last = p;
      if (!batch.rebuilding && rebuild_max_ >= p) ++violations_;
      ++count_[p];
      table_[p] = e.stream + "/" + e.payload;
      if (batch.rebuilding) {
        slice_of_[p] = batch.slice;
        rebuild_max_ = std::max(rebuild_max_, p);
      }
    }
    max_through_ = std::max(max_through_, batch.through.get());
    if (fail_at_ != 0 && !batch.events.empty() && batch.events.front().position.get() <= fail_at_ &&
        batch.events.back().position.get() >= fail_at_)
      return Status::IoError("the read model refused position " + std::to_string(fail_at_));
    if (delay_per_batch_.count() > 0) std::this_thread::sleep_for(delay_per_batch_);
    return Status::Ok();
  }

  Status Reset() override {
    std::lock_guard lock(mu_);
    ++resets_;
    count_.clear();
    table_.clear();
    slice_of_.clear();
    last_in_slice_.clear();
    last_live_ = 0;
    rebuild_max_ = 0;
    return Status::Ok();
  }

  void FailAt(uint64_t position) { fail_at_ = position; }
  void DelayEachBatch(std::chrono::milliseconds d) { delay_per_batch_ = d; }

  std::map<uint64_t, int> counts() {
    std::lock_guard lock(mu_);
    return count_;
  }
  std::map<uint64_t, std::string> table() {
    std::lock_guard lock(mu_);
    return table_;
  }
  std::map<uint64_t, uint32_t> slices() {
    std::lock_guard lock(mu_);
    return slice_of_;
  }
  int violations() {
    std::lock_guard lock(mu_);
    return violations_;
  }
  int resets() {
    std::lock_guard lock(mu_);
    return resets_;
  }
  uint64_t max_through() {
    std::lock_guard lock(mu_);
    return max_through_;
  }

 private:
  std::mutex mu_;
  std::map<uint64_t, int> count_;
  std::map<uint64_t, std::string> table_;
  std::map<uint64_t, uint32_t> slice_of_;
  std::map<uint32_t, uint64_t> last_in_slice_;
  uint64_t last_live_ = 0;
  uint64_t rebuild_max_ = 0;
  uint64_t max_through_ = 0;
  int violations_ = 0;
  int batches_ = 0;
  int resets_ = 0;
  std::atomic<uint64_t> fail_at_{0};
  std::chrono::milliseconds delay_per_batch_{0};
};

// A ServerCheckpoint whose first Save at or past `fail_from` fails: the
// runner stops after handling that batch and before recording it, as a
// crash there would leave things.
class SaveFailsOnce : public CheckpointKeeper {
 public:
  SaveFailsOnce(Client& c, std::string name, uint64_t fail_from) : inner_(c, std::move(name)), fail_from_(fail_from) {}
  Result<GlobalPosition> Load() override { return inner_.Load(); }
  Status Save(GlobalPosition p) override {
    if (!failed_ && p.get() >= fail_from_) {
      failed_ = true;
      failed_through_ = p.get();
      return Status::IoError("simulated crash before saving " + std::to_string(p.get()));
    }
    return inner_.Save(p);
  }
  Status Reset() override { return inner_.Reset(); }
  uint64_t failed_through() const { return failed_through_; }

 private:
  ServerCheckpoint inner_;
  const uint64_t fail_from_;
  bool failed_ = false;
  uint64_t failed_through_ = 0;
};

class ProjectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("projection-" + CurrentTestName());
    auto p = AnnaldProcess::Start(dir_->path());
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    server_ = std::move(*p);
    auto c = Client::Connect(Options());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(*c);
  }

  void TearDown() override {
    if (!HasFailure() || !server_) return;
    for (const std::string& l : server_->Lines()) std::fprintf(stderr, "server log: %s\n", l.c_str());
  }

  ClientOptions Options() {
    ClientOptions o;
    o.port = server_->port();
    o.client_name = "projection-test";
    o.log = [](const std::string&) {};
    return o;
  }

  static ProjectionOptions Projection(std::string name, uint32_t slices, uint32_t batch_events = 7) {
    ProjectionOptions o;
    o.name = std::move(name);
    o.slices = slices;
    o.batch_events = batch_events;
    o.progress = false;
    return o;
  }

  std::unique_ptr<ProjectionRunner> StartRunner(const ProjectionOptions& o, ProjectionHandler* h,
                                                CheckpointKeeper* k) {
    auto r = ProjectionRunner::Start(Options(), o, h, k);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }

  // Appends `n` events of `category` over `streams` streams, a few per
  // append; returns the position of the last.
  uint64_t Write(const std::string& category, int n, int streams = 5) {
    uint64_t last = 0;
    for (int i = 0; i < n;) {
      std::string stream = category + "-" + std::to_string(i % streams);
      std::vector<EventData> events;
      for (int j = 0; j < 3 && i < n; ++j, ++i) events.push_back(Event("Happened", std::to_string(i)));
      auto r = client_->Append(stream, ExpectedVersion::Any(), std::move(events));
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      if (r.ok()) last = r->last_position.get();
    }
    return last;
  }

  // The positions in the log that match `filter`.
  std::set<uint64_t> LogPositions(const Filter& filter = {}) {
    std::set<uint64_t> positions;
    GlobalPosition from(1);
    for (int pages = 0; pages < 10'000; ++pages) {
      auto r = client_->ReadAll(from, 1000, filter);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      if (!r.ok() || r->next_position == from) break;
      for (const RecordedEvent& e : r->events) positions.insert(e.position.get());
      from = r->next_position;
    }
    return positions;
  }

  uint64_t StoredCheckpoint(const std::string& name) {
    auto cp = client_->GetCheckpoint(name);
    EXPECT_TRUE(cp.ok()) << cp.status().ToString();
    EXPECT_TRUE(cp.ok() && cp->has_value()) << "no checkpoint for " << name;
    return cp.ok() && cp->has_value() ? (*cp)->position.get() : 0;
  }

  static std::set<uint64_t> Keys(const std::map<uint64_t, int>& m) {
    std::set<uint64_t> keys;
    for (const auto& [k, v] : m) keys.insert(k);
    return keys;
  }

  static void ExpectEachOnce(RecordingHandler& h, const std::set<uint64_t>& expected) {
    auto counts = h.counts();
    EXPECT_EQ(Keys(counts), expected);
    for (const auto& [p, n] : counts) EXPECT_EQ(n, 1) << "position " << p << " handled " << n << " times";
    EXPECT_EQ(h.violations(), 0) << "events out of order or past their batch's `through`";
  }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<AnnaldProcess> server_;
  std::unique_ptr<Client> client_;
};

// --- fresh projections

TEST_F(ProjectionTest, FreshProjectionWithOneSliceHandlesEveryEventOnceThenFollowsLive) {
  uint64_t head = Write("acct", 100);
  RecordingHandler h;
  ServerCheckpoint keeper(*client_, "one-slice");
  auto runner = StartRunner(Projection("one-slice", 1), &h, &keeper);
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 30s));
  EXPECT_EQ(runner->Stats().rebuild_head, GlobalPosition(0)) << "one slice and no checkpoint: no rebuild";
  EXPECT_EQ(h.resets(), 0);

  uint64_t last = Write("acct", 40);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(last), 30s));
  ExpectEachOnce(h, LogPositions());
  EXPECT_TRUE(runner->Stats().live);
  EXPECT_EQ(runner->Stats().events_handled, 140u);
  EXPECT_TRUE(runner->Stop().ok());
  EXPECT_EQ(StoredCheckpoint("one-slice"), last);
}

TEST_F(ProjectionTest, FreshProjectionWithThreeSlicesCoversTheLogDisjointlyThenFollowsLive) {
  uint64_t head = Write("acct", 200);
  RecordingHandler h;
  ServerCheckpoint keeper(*client_, "three-slices");
  auto runner = StartRunner(Projection("three-slices", 3), &h, &keeper);
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 30s));
  EXPECT_EQ(runner->Stats().rebuild_head, GlobalPosition(head));
  EXPECT_EQ(h.resets(), 1);
  ExpectEachOnce(h, LogPositions());

  // Three contiguous ranges, in slice order, covering [1, head].
  std::map<uint32_t, std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [p, slice] : h.slices()) {
    auto [it, fresh] = ranges.try_emplace(slice, p, p);
    if (!fresh) it->second.second = std::max(it->second.second, p);
  }
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[0].first, 1u);
  EXPECT_LT(ranges[0].second, ranges[1].first);
  EXPECT_LT(ranges[1].second, ranges[2].first);
  EXPECT_EQ(ranges[2].second, head);
  EXPECT_EQ(h.slices().size(), LogPositions().size());
  EXPECT_EQ(StoredCheckpoint("three-slices"), head);

  uint64_t last = Write("acct", 30);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(last), 30s));
  ExpectEachOnce(h, LogPositions());
  EXPECT_EQ(h.slices().size(), 200u) << "live events are not part of the rebuild";
  EXPECT_TRUE(runner->Stop().ok());
  EXPECT_EQ(StoredCheckpoint("three-slices"), last);
}

TEST_F(ProjectionTest, RebuildOfAnEmptyLogSavesCheckpointZeroAndGoesLive) {
  RecordingHandler h;
  ServerCheckpoint keeper(*client_, "empty");
  auto runner = StartRunner(Projection("empty", 4), &h, &keeper);
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(0), 30s));
  uint64_t last = Write("acct", 10);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(last), 30s));
  ExpectEachOnce(h, LogPositions());
  EXPECT_TRUE(runner->Stop().ok());
}

// --- restarts

TEST_F(ProjectionTest, ResumesAfterStopFromTheCheckpointWithoutHandlingAgain) {
  uint64_t first = Write("acct", 50);
  {
    RecordingHandler h;
    ServerCheckpoint keeper(*client_, "resume");
    auto runner = StartRunner(Projection("resume", 1), &h, &keeper);
    ASSERT_NE(runner, nullptr);
    ASSERT_TRUE(runner->WaitFor(GlobalPosition(first), 30s));
    EXPECT_TRUE(runner->Stop().ok());
    EXPECT_TRUE(runner->Stop().ok()) << "Stop is idempotent";
    EXPECT_TRUE(runner->Stats().stopped);
    EXPECT_FALSE(runner->WaitFor(GlobalPosition(first), 10ms)) << "a stopped runner is not live";
  }
  EXPECT_EQ(StoredCheckpoint("resume"), first);
  std::set<uint64_t> before = LogPositions();
  uint64_t last = Write("acct", 20);

  RecordingHandler h;
  ServerCheckpoint keeper(*client_, "resume");
  auto runner = StartRunner(Projection("resume", 3), &h, &keeper);  // a checkpoint: no rebuild
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(last), 30s));
  std::set<uint64_t> expected;
  for (uint64_t p : LogPositions())
    if (!before.contains(p)) expected.insert(p);
  ExpectEachOnce(h, expected);
  EXPECT_EQ(h.resets(), 0);
  EXPECT_TRUE(runner->Stop().ok());
}

TEST_F(ProjectionTest, CrashBetweenHandleAndSaveReplaysTheBatchAndAnIdempotentModelEndsTheSame) {
  uint64_t head = Write("acct", 60);
  RecordingHandler h;  // survives the "crash": the read model is durable
  uint64_t saved = 0, failed_through = 0;
  {
    SaveFailsOnce keeper(*client_, "crash", 30);
    auto runner = StartRunner(Projection("crash", 1, 5), &h, &keeper);
    ASSERT_NE(runner, nullptr);
    EXPECT_FALSE(runner->WaitFor(GlobalPosition(head), 30s));
    Status s = runner->Stop();
    EXPECT_EQ(s.code(), StatusCode::kIoError) << s.ToString();
    EXPECT_NE(s.message().find("simulated crash"), std::string::npos) << s.ToString();
    failed_through = keeper.failed_through();
    saved = StoredCheckpoint("crash");
  }
  ASSERT_GE(failed_through, 30u);
  ASSERT_LT(saved, failed_through);
  // The batch was handled, the checkpoint is before it.
  for (uint64_t p : LogPositions())
    if (p <= failed_through) {
      EXPECT_EQ(h.counts()[p], 1) << p;
    }

  ServerCheckpoint keeper(*client_, "crash");
  auto runner = StartRunner(Projection("crash", 1, 5), &h, &keeper);
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 30s));
  EXPECT_TRUE(runner->Stop().ok());

  // At least once: exactly the unsaved batch came twice.
  for (const auto& [p, n] : h.counts()) EXPECT_EQ(n, p > saved && p <= failed_through ? 2 : 1) << "position " << p;
  EXPECT_EQ(Keys(h.counts()), LogPositions());
  RecordingHandler fresh;
  ServerCheckpoint fresh_keeper(*client_, "crash-fresh");
  auto replay = StartRunner(Projection("crash-fresh", 1), &fresh, &fresh_keeper);
  ASSERT_NE(replay, nullptr);
  ASSERT_TRUE(replay->WaitFor(GlobalPosition(head), 30s));
  EXPECT_TRUE(replay->Stop().ok());
  EXPECT_EQ(h.table(), fresh.table());
}

// --- rebuilds

TEST_F(ProjectionTest, RebuildResetsAndGivesTheSameResultAsTheFirstRun) {
  uint64_t head = Write("acct", 150);
  RecordingHandler h;
  std::map<uint64_t, std::string> first;
  {
    ServerCheckpoint keeper(*client_, "rebuild");
    auto runner = StartRunner(Projection("rebuild", 3), &h, &keeper);
    ASSERT_NE(runner, nullptr);
    ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 30s));
    EXPECT_TRUE(runner->Stop().ok());
    first = h.table();
  }
  ServerCheckpoint keeper(*client_, "rebuild");
  ProjectionOptions o = Projection("rebuild", 3);
  o.rebuild = true;
  auto runner = StartRunner(o, &h, &keeper);
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 30s));
  EXPECT_TRUE(runner->Stop().ok());
  EXPECT_EQ(h.resets(), 2);
  ExpectEachOnce(h, LogPositions());  // counts start again at the reset
  EXPECT_EQ(h.table(), first);
  EXPECT_EQ(StoredCheckpoint("rebuild"), head);
}

TEST_F(ProjectionTest, ParallelRebuildEqualsSequentialRebuild) {
  Write("acct", 120);
  uint64_t head = Write("shop", 90, 3);
  std::map<uint64_t, std::string> tables[2];
  const uint32_t slices[2] = {1, 4};
  for (int i = 0; i < 2; ++i) {
    RecordingHandler h;
    std::string name = "rebuild-" + std::to_string(slices[i]);
    ServerCheckpoint keeper(*client_, name);
    ProjectionOptions o = Projection(name, slices[i], 16);
    o.rebuild = true;
    auto runner = StartRunner(o, &h, &keeper);
    ASSERT_NE(runner, nullptr);
    ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 30s));
    EXPECT_TRUE(runner->Stop().ok());
    EXPECT_EQ(runner->Stats().rebuild_head, GlobalPosition(head));
    ExpectEachOnce(h, LogPositions());
    tables[i] = h.table();
  }
  EXPECT_EQ(tables[0], tables[1]);
}

TEST_F(ProjectionTest, RebuildShowsProgressOnOneLineEndingInANewline) {
  uint64_t head = Write("acct", 60);
  RecordingHandler h;
  ServerCheckpoint keeper(*client_, "progress");
  ProjectionOptions o = Projection("progress", 2);
  o.progress = true;
  o.force_progress = true;
  ::testing::internal::CaptureStderr();
  auto runner = StartRunner(o, &h, &keeper);
  bool caught_up = runner && runner->WaitFor(GlobalPosition(head), 30s);
  if (runner) {
    EXPECT_TRUE(runner->Stop().ok());
  }
  std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(caught_up);
  EXPECT_NE(err.find("\rrebuilding progress: " + std::to_string(head) + " / " + std::to_string(head) + " events (100%)"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("events/s"), std::string::npos) << err;
  ASSERT_FALSE(err.empty());
  EXPECT_EQ(err.back(), '\n');
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

TEST_F(ProjectionTest, StopDuringARebuildLeavesNoCheckpointAndTheNextStartRebuildsAgain) {
  uint64_t head = Write("acct", 200);
  {
    RecordingHandler slow;
    slow.DelayEachBatch(5ms);
    ServerCheckpoint keeper(*client_, "interrupted");
    auto runner = StartRunner(Projection("interrupted", 2, 4), &slow, &keeper);
    ASSERT_NE(runner, nullptr);
    std::this_thread::sleep_for(30ms);
    EXPECT_TRUE(runner->Stop().ok());
    EXPECT_LT(slow.counts().size(), 200u) << "the rebuild was not cut short";
  }
  auto cp = client_->GetCheckpoint("interrupted");
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  EXPECT_FALSE(cp->has_value());

  RecordingHandler h;
  ServerCheckpoint keeper(*client_, "interrupted");
  auto runner = StartRunner(Projection("interrupted", 2), &h, &keeper);
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 30s));
  EXPECT_EQ(runner->Stats().rebuild_head, GlobalPosition(head));
  EXPECT_TRUE(runner->Stop().ok());
  ExpectEachOnce(h, LogPositions());
}

// --- filters

TEST_F(ProjectionTest, CategoryFilterSkipsOtherEventsAndTheCheckpointStillAdvances) {
  Write("acct", 30);
  uint64_t head = Write("other", 40);  // the log ends with events the filter skips
  Filter acct{Filter::Kind::kCategory, "acct", {}};
  for (uint32_t slices : {1u, 3u}) {
    SCOPED_TRACE("slices " + std::to_string(slices));
    std::string name = "filtered-" + std::to_string(slices);
    RecordingHandler h;
    ServerCheckpoint keeper(*client_, name);
    ProjectionOptions o = Projection(name, slices);
    o.filter = acct;
    auto runner = StartRunner(o, &h, &keeper);
    ASSERT_NE(runner, nullptr);
    ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 30s));
    EXPECT_EQ(StoredCheckpoint(name), head);
    uint64_t acct_last = Write("acct", 3);
    uint64_t other_last = Write("other", 10);
    ASSERT_TRUE(runner->WaitFor(GlobalPosition(other_last), 30s));
    EXPECT_GT(other_last, acct_last);
    EXPECT_EQ(StoredCheckpoint(name), other_last) << "moved past the skipped events while idle";
    EXPECT_TRUE(runner->Stop().ok());
    ExpectEachOnce(h, LogPositions(acct));
    for (const auto& [p, row] : h.table()) EXPECT_TRUE(row.starts_with("acct-")) << row;
    head = other_last;
  }
}

// --- errors

TEST_F(ProjectionTest, HandlerErrorStopsTheRunnerAndStopReturnsIt) {
  uint64_t head = Write("acct", 40);
  RecordingHandler h;
  h.FailAt(25);
  ServerCheckpoint keeper(*client_, "failing");
  auto runner = StartRunner(Projection("failing", 1, 5), &h, &keeper);
  ASSERT_NE(runner, nullptr);
  EXPECT_FALSE(runner->WaitFor(GlobalPosition(head), 30s));
  EXPECT_TRUE(runner->Stats().stopped);
  Status s = runner->Stop();
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.ToString();
  EXPECT_NE(s.message().find("refused position 25"), std::string::npos) << s.ToString();
  EXPECT_EQ(runner->Stop().code(), StatusCode::kIoError) << "Stop keeps returning it";
  EXPECT_LT(StoredCheckpoint("failing"), 25u) << "the failed batch is not checkpointed";
  EXPECT_EQ(runner->Stats().checkpoint, GlobalPosition(StoredCheckpoint("failing")));
}

TEST_F(ProjectionTest, HandlerErrorDuringARebuildStopsItWithoutACheckpoint) {
  uint64_t head = Write("acct", 90);
  RecordingHandler h;
  h.FailAt(50);
  ServerCheckpoint keeper(*client_, "failing-rebuild");
  auto runner = StartRunner(Projection("failing-rebuild", 3), &h, &keeper);
  ASSERT_NE(runner, nullptr);
  EXPECT_FALSE(runner->WaitFor(GlobalPosition(head), 30s));
  Status s = runner->Stop();
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.ToString();
  auto cp = client_->GetCheckpoint("failing-rebuild");
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  EXPECT_FALSE(cp->has_value()) << "an unfinished rebuild leaves no checkpoint";
}

// A Client whose SET_CHECKPOINT is sent twice, as after a connection lost
// before the first answer arrived: the first lands, and the resend meets it
// (WRONG_EXPECTED_VERSION with the stored position). Everything else is
// passed through to `inner`.
class ResendingClient final : public Client {
 public:
  explicit ResendingClient(Client& inner) : inner_(inner) {}
  Result<int64_t> SetCheckpoint(const std::string& name, GlobalPosition position, const std::string& blob,
                                CheckpointExpectation expected) override {
    auto first = inner_.SetCheckpoint(name, position, blob, expected);
    if (!first.ok()) return first;
    return inner_.SetCheckpoint(name, position, blob, expected);
  }
  Result<std::optional<ConsumerCheckpoint>> GetCheckpoint(const std::string& name) override {
    return inner_.GetCheckpoint(name);
  }
  void AppendAsync(std::string stream, ExpectedVersion expected, std::vector<EventData> events,
                   AppendCallback done) override {
    inner_.AppendAsync(std::move(stream), expected, std::move(events), std::move(done));
  }
  Result<AppendResult> Append(std::string stream, ExpectedVersion expected, std::vector<EventData> events) override {
    return inner_.Append(std::move(stream), expected, std::move(events));
  }
  Result<std::vector<RecordedEvent>> ReadStream(const std::string& stream, StreamVersion from,
                                                ReadDirection direction, uint32_t max_count) override {
    return inner_.ReadStream(stream, from, direction, max_count);
  }
  Result<client::AllEventsPage> ReadAll(GlobalPosition from, uint32_t max_count, const Filter& filter) override {
    return inner_.ReadAll(from, max_count, filter);
  }
  Result<StreamInfo> GetStreamInfo(const std::string& stream) override { return inner_.GetStreamInfo(stream); }
  Status Ping() override { return inner_.Ping(); }
  void LoadStateAsync(std::string stream, StateTarget target, StateCallback done) override {
    inner_.LoadStateAsync(std::move(stream), target, std::move(done));
  }
  Result<State> LoadState(const std::string& stream, StateTarget target) override {
    return inner_.LoadState(stream, target);
  }
  Result<StatePlan> LoadStatePlan(const std::string& stream, StateTarget target, const std::string& reducer,
                                  uint32_t schema_version, uint32_t max_events) override {
    return inner_.LoadStatePlan(stream, target, reducer, schema_version, max_events);
  }
  Result<int64_t> WriteSnapshot(const Snapshot& snapshot) override { return inner_.WriteSnapshot(snapshot); }
  Result<std::vector<Snapshot>> ListSnapshots(const std::string& stream) override {
    return inner_.ListSnapshots(stream);
  }
  Result<protocol::HeadInfo> ReadHead() override { return inner_.ReadHead(); }
  Result<client::AllEventsPage> ReadAllRange(GlobalPosition from, GlobalPosition until, uint32_t max_count,
                                             const Filter& filter) override {
    return inner_.ReadAllRange(from, until, max_count, filter);
  }
  Result<bool> DeleteCheckpoint(const std::string& name) override { return inner_.DeleteCheckpoint(name); }
  Result<std::vector<ConsumerCheckpoint>> ListCheckpoints(const std::string& prefix) override {
    return inner_.ListCheckpoints(prefix);
  }
  Result<std::unique_ptr<client::Subscription>> SubscribeToStream(const std::string& stream, StreamVersion from,
                                                                  client::SubscriptionHandler handler) override {
    return inner_.SubscribeToStream(stream, from, std::move(handler));
  }
  Result<std::unique_ptr<client::Subscription>> SubscribeToAll(GlobalPosition from, const Filter& filter,
                                                               client::SubscriptionHandler handler) override {
    return inner_.SubscribeToAll(from, filter, std::move(handler));
  }

 private:
  Client& inner_;
};

// Regression: a resent SET that meets its own first write is not a
// conflict; one that meets another keeper's write at the same position is.
TEST_F(ProjectionTest, ResentCheckpointMeetingItsOwnWriteIsNotAConflict) {
  ResendingClient resending(*client_);
  ServerCheckpoint mine(resending, "resent");
  ASSERT_EQ(mine.Load()->get(), 0u);
  Status first = mine.Save(GlobalPosition(5));
  EXPECT_TRUE(first.ok()) << first.ToString();
  Status next = mine.Save(GlobalPosition(9));
  EXPECT_TRUE(next.ok()) << next.ToString();
  EXPECT_EQ(StoredCheckpoint("resent"), 9u);

  // Another keeper got to 12 first: the stored position equals ours, but
  // the write was not ours.
  ServerCheckpoint other(*client_, "resent");
  ASSERT_EQ(other.Load()->get(), 9u);
  ASSERT_TRUE(other.Save(GlobalPosition(12)).ok());
  Status taken = mine.Save(GlobalPosition(12));
  EXPECT_EQ(taken.code(), StatusCode::kWrongExpectedVersion) << taken.ToString();
}

TEST_F(ProjectionTest, SecondRunnerOfTheSameConsumerConflictsInsteadOfOverwriting) {
  // The keepers alone: the second Save expected no checkpoint and finds one.
  ServerCheckpoint a(*client_, "shared-keeper"), b(*client_, "shared-keeper");
  ASSERT_EQ(a.Load()->get(), 0u);
  ASSERT_EQ(b.Load()->get(), 0u);
  ASSERT_TRUE(a.Save(GlobalPosition(5)).ok());
  Status conflict = b.Save(GlobalPosition(7));
  EXPECT_EQ(conflict.code(), StatusCode::kWrongExpectedVersion) << conflict.ToString();
  EXPECT_EQ(conflict.actual_version(), 5);
  EXPECT_EQ(StoredCheckpoint("shared-keeper"), 5u);

  // Two runners: both handle the next event; only one may record it.
  uint64_t first = Write("acct", 10);
  RecordingHandler h1, h2;
  ServerCheckpoint k1(*client_, "shared"), k2(*client_, "shared");
  auto r1 = StartRunner(Projection("shared", 1), &h1, &k1);
  ASSERT_NE(r1, nullptr);
  ASSERT_TRUE(r1->WaitFor(GlobalPosition(first), 30s));
  auto r2 = StartRunner(Projection("shared", 1), &h2, &k2);
  ASSERT_NE(r2, nullptr);
  ASSERT_TRUE(r2->WaitFor(GlobalPosition(first), 30s));
  uint64_t next = Write("acct", 1);
  bool live1 = r1->WaitFor(GlobalPosition(next), 30s);
  bool live2 = r2->WaitFor(GlobalPosition(next), 30s);
  EXPECT_NE(live1, live2);
  Status s1 = r1->Stop(), s2 = r2->Stop();
  const Status& lost = live1 ? s2 : s1;
  const Status& won = live1 ? s1 : s2;
  EXPECT_TRUE(won.ok()) << won.ToString();
  EXPECT_EQ(lost.code(), StatusCode::kWrongExpectedVersion) << lost.ToString();
  EXPECT_EQ(StoredCheckpoint("shared"), next);
}

// --- backpressure

TEST_F(ProjectionTest, FullQueueStopsTheSubscriptionAndResumesWithoutGapOrDuplicate) {
  uint64_t head = Write("acct", 300);
  RecordingHandler h;
  h.DelayEachBatch(1ms);
  ServerCheckpoint keeper(*client_, "slow");
  ProjectionOptions o = Projection("slow", 1, 4);
  o.max_queued_events = 6;
  auto runner = StartRunner(o, &h, &keeper);
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(head), 60s));
  uint64_t last = Write("acct", 100);
  ASSERT_TRUE(runner->WaitFor(GlobalPosition(last), 60s));
  EXPECT_GT(runner->Stats().resubscribes, 0u) << "the queue never filled up";
  EXPECT_TRUE(runner->Stop().ok());
  ExpectEachOnce(h, LogPositions());
  EXPECT_EQ(StoredCheckpoint("slow"), last);
}

TEST_F(ProjectionTest, StartRejectsBadOptions) {
  RecordingHandler h;
  ServerCheckpoint keeper(*client_, "bad");
  auto zero = ProjectionRunner::Start(Options(), Projection("bad", 1, 0), &h, &keeper);
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
  auto many = ProjectionRunner::Start(Options(), Projection("bad", client::kMaxProjectionSlices + 1), &h, &keeper);
  EXPECT_EQ(many.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace annal
