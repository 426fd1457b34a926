// Behaviour of the engine through its public API: appends, expected
// versions, idempotent retries, reads, reopen.
#include "annal/store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "test_util.h"

namespace annal {
namespace {

using testing::Event;
using testing::IdFrom;
using testing::SmallOptions;
using testing::TempDir;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    store_.reset();
    auto s = Store::Open(dir_.path(), options_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }
  Result<AppendResult> Append(const std::string& stream, ExpectedVersion ev, int n,
                              const std::string& prefix = "e") {
    std::vector<EventData> events;
    for (int i = 0; i < n; ++i) events.push_back(Event("Type" + std::to_string(i), prefix + std::to_string(i)));
    return store_->Append(stream, ev, std::move(events));
  }
  TempDir dir_{"store"};
  Options options_ = SmallOptions();
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, AppendedEventsReadBackWithVersionsPositionsAndBytes) {
  auto r = store_->Append("account-1", ExpectedVersion::NoStream(),
                          {Event("AccountOpened", R"({"owner":"ada"})", R"({"user":"u1"})"),
                           Event("AccountCredited", R"({"amount":10})")});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_version, StreamVersion(0));
  EXPECT_EQ(r->last_version, StreamVersion(1));
  EXPECT_EQ(r->first_position, GlobalPosition(1));
  EXPECT_EQ(r->last_position, GlobalPosition(2));
  EXPECT_FALSE(r->idempotent_replay);

  auto events = store_->ReadStream("account-1", StreamVersion(0), ReadDirection::kForward, 10);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].type, "AccountOpened");
  EXPECT_EQ((*events)[0].payload, R"({"owner":"ada"})");
  EXPECT_EQ((*events)[0].metadata, R"({"user":"u1"})");
  EXPECT_EQ((*events)[0].stream, "account-1");
  EXPECT_EQ((*events)[1].version, StreamVersion(1));
  EXPECT_EQ((*events)[1].position, GlobalPosition(2));
  EXPECT_EQ((*events)[0].recorded_at_ns, r->recorded_at_ns);
  EXPECT_FALSE(IsNilEventId((*events)[0].id));
  EXPECT_NE((*events)[0].id, (*events)[1].id);
  EXPECT_EQ(store_->DurableHead(), GlobalPosition(2));
}

TEST_F(StoreTest, ExpectedVersionNoStream) {
  ASSERT_TRUE(Append("s-1", ExpectedVersion::NoStream(), 1).ok());
  auto again = Append("s-1", ExpectedVersion::NoStream(), 1);
  ASSERT_EQ(again.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(again.status().actual_version(), 0);
}

TEST_F(StoreTest, ExpectedVersionExact) {
  ASSERT_TRUE(Append("s-1", ExpectedVersion::NoStream(), 3).ok());
  auto ok = Append("s-1", ExpectedVersion::Exact(2), 1);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->first_version, StreamVersion(3));
  auto stale = Append("s-1", ExpectedVersion::Exact(2), 1);
  ASSERT_EQ(stale.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(stale.status().actual_version(), 3);
  auto ahead = Append("s-1", ExpectedVersion::Exact(7), 1);
  ASSERT_EQ(ahead.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(ahead.status().actual_version(), 3);
  auto missing = Append("s-2", ExpectedVersion::Exact(0), 1);
  ASSERT_EQ(missing.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(missing.status().actual_version(), -1);
}

TEST_F(StoreTest, ExpectedVersionStreamExistsAndAny) {
  auto missing = Append("s-1", ExpectedVersion::StreamExists(), 1);
  ASSERT_EQ(missing.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(missing.status().actual_version(), -1);
  ASSERT_TRUE(Append("s-1", ExpectedVersion::Any(), 2).ok());
  auto exists = Append("s-1", ExpectedVersion::StreamExists(), 1);
  ASSERT_TRUE(exists.ok());
  EXPECT_EQ(exists->first_version, StreamVersion(2));
  auto any = Append("s-1", ExpectedVersion::Any(), 1);
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->first_version, StreamVersion(3));
}

TEST_F(StoreTest, FailedExpectedVersionWritesNothing) {
  ASSERT_TRUE(Append("s-1", ExpectedVersion::NoStream(), 2).ok());
  ASSERT_FALSE(Append("s-1", ExpectedVersion::Exact(0), 5).ok());
  auto info = store_->GetStreamInfo("s-1");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->head_version, StreamVersion(1));
  EXPECT_EQ(store_->DurableHead(), GlobalPosition(2));
}

TEST_F(StoreTest, ConcurrentAppendersRacingOnOneStreamEachVersionWonOnce) {
  constexpr int kThreads = 6, kRounds = 60;
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        auto info = store_->GetStreamInfo("race-1");
        ExpectedVersion ev = info.ok() ? ExpectedVersion::Exact(info->head_version.get())
                                       : ExpectedVersion::NoStream();
        auto r = Append("race-1", ev, 1, "t" + std::to_string(t) + "-");
        if (r.ok()) {
          wins.fetch_add(1);
        } else {
          ASSERT_EQ(r.status().code(), StatusCode::kWrongExpectedVersion) << r.status().ToString();
          // The actual version reported is never behind what was expected.
          if (ev.kind() == ExpectedVersion::Kind::kExact)
            ASSERT_GT(r.status().actual_version(), static_cast<int64_t>(ev.version()));
          else
            ASSERT_GE(r.status().actual_version(), 0);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  auto events = store_->ReadStream("race-1", StreamVersion(0), ReadDirection::kForward, 100000);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(static_cast<int>(events->size()), wins.load());
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].version, StreamVersion(i));
}

TEST_F(StoreTest, IdempotentRetryWithExactVersionReturnsOriginalResult) {
  ASSERT_TRUE(Append("s-1", ExpectedVersion::NoStream(), 1).ok());
  std::vector<EventData> events = {Event("A", "1"), Event("B", "2")};
  events[0].id = IdFrom(1);
  events[1].id = IdFrom(2);
  auto first = store_->Append("s-1", ExpectedVersion::Exact(0), events);
  ASSERT_TRUE(first.ok());
  auto retry = store_->Append("s-1", ExpectedVersion::Exact(0), events);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_TRUE(retry->idempotent_replay);
  EXPECT_EQ(retry->first_version, first->first_version);
  EXPECT_EQ(retry->last_version, first->last_version);
  EXPECT_EQ(retry->first_position, first->first_position);
  EXPECT_EQ(retry->last_position, first->last_position);
  auto info = store_->GetStreamInfo("s-1");
  EXPECT_EQ(info->event_count, 3u);
  // Different ids at those versions: a real conflict.
  events[1].id = IdFrom(99);
  auto conflict = store_->Append("s-1", ExpectedVersion::Exact(0), events);
  EXPECT_EQ(conflict.status().code(), StatusCode::kWrongExpectedVersion);
}

TEST_F(StoreTest, IdempotentRetryWithNoStreamAndAny) {
  std::vector<EventData> events = {Event("A", "1")};
  events[0].id = IdFrom(7);
  auto first = store_->Append("s-1", ExpectedVersion::NoStream(), events);
  ASSERT_TRUE(first.ok());
  auto retry = store_->Append("s-1", ExpectedVersion::NoStream(), events);
  ASSERT_TRUE(retry.ok()) << retry.status().ToString();
  EXPECT_TRUE(retry->idempotent_replay);
  EXPECT_EQ(retry->first_position, first->first_position);

  std::vector<EventData> more = {Event("B", "2"), Event("C", "3")};
  more[0].id = IdFrom(8);
  more[1].id = IdFrom(9);
  auto any = store_->Append("s-1", ExpectedVersion::Any(), more);
  ASSERT_TRUE(any.ok());
  auto any_retry = store_->Append("s-1", ExpectedVersion::Any(), more);
  ASSERT_TRUE(any_retry.ok());
  EXPECT_TRUE(any_retry->idempotent_replay);
  EXPECT_EQ(any_retry->first_version, StreamVersion(1));
  EXPECT_EQ(store_->GetStreamInfo("s-1")->event_count, 3u);
}

TEST_F(StoreTest, AppendsWithoutIdsAreNeverTreatedAsRetries) {
  ASSERT_TRUE(Append("s-1", ExpectedVersion::Any(), 1).ok());
  auto again = Append("s-1", ExpectedVersion::Any(), 1);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->idempotent_replay);
  EXPECT_EQ(store_->GetStreamInfo("s-1")->event_count, 2u);
}

TEST_F(StoreTest, MultiEventAppendIsContiguousInStreamAndGlobalOrder) {
  std::vector<std::thread> noise;
  std::atomic<bool> stop{false};
  for (int t = 0; t < 3; ++t)
    noise.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) (void)Append("noise-" + std::to_string(t), ExpectedVersion::Any(), 1);
    });
  for (int i = 0; i < 50; ++i) {
    auto r = Append("batch-1", ExpectedVersion::Any(), 5);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->last_position.get() - r->first_position.get(), 4u);
    EXPECT_EQ(r->last_version.get() - r->first_version.get(), 4u);
  }
  stop = true;
  for (auto& t : noise) t.join();
}

TEST_F(StoreTest, GlobalPositionsIncreaseAcrossPartitionsAndMatchStreams) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i)
        ASSERT_TRUE(Append("g" + std::to_string(t) + "-" + std::to_string(i % 7), ExpectedVersion::Any(), 1 + i % 3).ok());
    });
  for (auto& t : threads) t.join();
  auto all = store_->ReadAll(GlobalPosition(1), 100000);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_FALSE(all->empty());
  EXPECT_EQ(all->back().position, store_->DurableHead());
  int64_t last_time = 0;
  for (size_t i = 0; i < all->size(); ++i) {
    const RecordedEvent& e = (*all)[i];
    if (i > 0) {
      ASSERT_GT(e.position, (*all)[i - 1].position);
    }
    ASSERT_GE(e.recorded_at_ns, last_time) << "recorded_at must not decrease in position order";
    last_time = e.recorded_at_ns;
    auto same = store_->ReadStream(e.stream, e.version, ReadDirection::kForward, 1);
    ASSERT_TRUE(same.ok());
    ASSERT_EQ(same->size(), 1u);
    EXPECT_EQ((*same)[0].position, e.position);
    EXPECT_EQ((*same)[0].id, e.id);
  }
  // Reading from the middle starts exactly there.
  GlobalPosition mid = (*all)[all->size() / 2].position;
  auto tail = store_->ReadAll(mid, 5);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 5u);
  EXPECT_EQ((*tail)[0].position, mid);
  auto one = store_->ReadEvent(mid);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->position, mid);
  EXPECT_EQ(store_->ReadEvent(GlobalPosition(store_->DurableHead().get() + 1)).status().code(),
            StatusCode::kNotFound);
}

TEST_F(StoreTest, LongStreamReadsForwardAndBackwardFromAnyVersion) {
  constexpr int kEvents = 3000;
  for (int i = 0; i < kEvents; i += 10) ASSERT_TRUE(Append("long-1", ExpectedVersion::Any(), 10, "v").ok());
  // Another stream interleaved so back-pointers skip over foreign records.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Append("long-2", ExpectedVersion::Any(), 3).ok());
  for (uint64_t from : {0ull, 1ull, 15ull, 16ull, 17ull, 1000ull, 2047ull, 2048ull, 2999ull}) {
    auto fwd = store_->ReadStream("long-1", StreamVersion(from), ReadDirection::kForward, 37);
    ASSERT_TRUE(fwd.ok()) << fwd.status().ToString();
    size_t expect = std::min<uint64_t>(37, kEvents - from);
    ASSERT_EQ(fwd->size(), expect) << "from " << from;
    for (size_t i = 0; i < fwd->size(); ++i) {
      ASSERT_EQ((*fwd)[i].version, StreamVersion(from + i));
      ASSERT_EQ((*fwd)[i].payload, "v" + std::to_string((from + i) % 10));
    }
    auto bwd = store_->ReadStream("long-1", StreamVersion(from), ReadDirection::kBackward, 37);
    ASSERT_TRUE(bwd.ok());
    ASSERT_EQ(bwd->size(), std::min<uint64_t>(37, from + 1));
    for (size_t i = 0; i < bwd->size(); ++i) ASSERT_EQ((*bwd)[i].version, StreamVersion(from - i));
  }
  auto past = store_->ReadStream("long-1", StreamVersion(kEvents), ReadDirection::kForward, 10);
  ASSERT_TRUE(past.ok());
  EXPECT_TRUE(past->empty());
  auto from_end = store_->ReadStream("long-1", StreamVersion(1u << 30), ReadDirection::kBackward, 2);
  ASSERT_TRUE(from_end.ok());
  ASSERT_EQ(from_end->size(), 2u);
  EXPECT_EQ((*from_end)[0].version, StreamVersion(kEvents - 1));
}

TEST_F(StoreTest, ReadsCrossSegmentBoundaries) {
  // 1 MiB segments and ~100 KiB events: a segment holds about nine.
  std::string big(100 * 1024, 'x');
  for (int i = 0; i < 40; ++i) {
    big[0] = static_cast<char>('a' + i % 26);
    ASSERT_TRUE(store_->Append("big-1", ExpectedVersion::Any(), {Event("Big", big)}).ok());
  }
  auto events = store_->ReadStream("big-1", StreamVersion(0), ReadDirection::kForward, 100);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ(events->size(), 40u);
  for (int i = 0; i < 40; ++i) EXPECT_EQ((*events)[i].payload[0], 'a' + i % 26);
  auto all = store_->ReadAll(GlobalPosition(1), 1000);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 40u);
  Reopen();
  events = store_->ReadStream("big-1", StreamVersion(39), ReadDirection::kBackward, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), 40u);
}

TEST_F(StoreTest, UnknownStreamIsNotFound) {
  EXPECT_EQ(store_->ReadStream("nobody-1", StreamVersion(0), ReadDirection::kForward, 1).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->GetStreamInfo("nobody-1").status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, StreamInfoReportsHeadAndTimes) {
  auto r1 = Append("info-1", ExpectedVersion::Any(), 2);
  auto r2 = Append("info-1", ExpectedVersion::Any(), 1);
  ASSERT_TRUE(r1.ok() && r2.ok());
  auto info = store_->GetStreamInfo("info-1");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->head_version, StreamVersion(2));
  EXPECT_EQ(info->event_count, 3u);
  EXPECT_EQ(info->first_recorded_at_ns, r1->recorded_at_ns);
  EXPECT_EQ(info->last_recorded_at_ns, r2->recorded_at_ns);
}

TEST_F(StoreTest, BadInputIsRefusedWithAClearError) {
  auto code = [&](std::string stream, std::vector<EventData> events) {
    return store_->Append(std::move(stream), ExpectedVersion::Any(), std::move(events)).status().code();
  };
  EXPECT_EQ(code("", {Event("T", "")}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(std::string(256, 's'), {Event("T", "")}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code("bad-\xff\xfe", {Event("T", "")}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code("overlong-\xc0\xaf", {Event("T", "")}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code("s-1", {}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code("s-1", {Event("", "")}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code("s-1", {Event(std::string(256, 't'), "")}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code("s-1", {Event("T", std::string(options_.max_payload_bytes + 1, 'p'))}), StatusCode::kTooLarge);
  EXPECT_EQ(code("s-1", {Event("T", "", std::string(64 * 1024 + 1, 'm'))}), StatusCode::kTooLarge);
  EXPECT_EQ(code("s-1", std::vector<EventData>(10'001, Event("T", ""))), StatusCode::kTooLarge);
  // Valid multi-byte UTF-8 and the longest allowed name are fine.
  EXPECT_EQ(code("konto-ø✓", {Event("T", "")}), StatusCode::kOk);
  EXPECT_EQ(code(std::string(255, 's'), {Event("T", "")}), StatusCode::kOk);
  // Nothing refused reached the log.
  EXPECT_EQ(store_->DurableHead(), GlobalPosition(2));
}

TEST_F(StoreTest, ReopenKeepsEverythingWithAndWithoutCheckpoint) {
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(Append("re-" + std::to_string(i % 4), ExpectedVersion::Any(), 2).ok());
  auto before = store_->ReadAll(GlobalPosition(1), 1000);
  ASSERT_TRUE(before.ok());
  Reopen();  // Close writes a checkpoint.
  auto after = store_->ReadAll(GlobalPosition(1), 1000);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), before->size());
  for (size_t i = 0; i < after->size(); ++i) {
    EXPECT_EQ((*after)[i].position, (*before)[i].position);
    EXPECT_EQ((*after)[i].payload, (*before)[i].payload);
  }
  // Appends after a reopen continue versions and positions.
  auto r = Append("re-0", ExpectedVersion::Exact(15), 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->first_position.get(), before->back().position.get() + 1);
}

// Every partition recovers on a thread of its own and logs when done; a
// sink written without a lock (as a test's vector is), here shared by two
// stores opening at once, must never be entered twice at once. The sink
// lingers so that overlapping calls meet.
TEST(StoreLogTest, SinkIsCalledOneLineAtATime) {
  TempDir dirs[2] = {TempDir("store-log-a"), TempDir("store-log-b")};
  Options o = SmallOptions();
  o.partitions = 8;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::vector<std::string> lines;
  o.log = [&](const std::string& line) {
    if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    lines.push_back(line);
    inside.fetch_sub(1);
  };
  for (int open = 0; open < 2; ++open) {
    Status opened[2];
    std::vector<std::thread> openers;
    for (int d = 0; d < 2; ++d)
      openers.emplace_back([&, d] {
        auto store = Store::Open(dirs[d].path(), o);
        opened[d] = store.ok() ? (*store)->Close() : store.status();
      });
    for (auto& t : openers) t.join();
    for (const Status& s : opened) ASSERT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_EQ(overlaps.load(), 0);
  size_t recovered = 0;
  for (const std::string& line : lines) recovered += line.find("recovered") != std::string::npos;
  EXPECT_EQ(recovered, 32u);
}

TEST_F(StoreTest, SecondOpenOfTheSameDirectoryIsRefused) {
  auto second = Store::Open(dir_.path(), options_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("in use"), std::string::npos);
}

TEST_F(StoreTest, AppendAfterCloseIsUnavailable) {
  ASSERT_TRUE(store_->Close().ok());
  EXPECT_EQ(Append("s-1", ExpectedVersion::Any(), 1).status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace annal
