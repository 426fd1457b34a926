// What projections need from annald, through the C++ client against a real
// server: READ_HEAD on an empty and a written store; READ_ALL_RANGE slices
// that, paged to their end, add up to exactly what READ_ALL returns (with
// and without filters, for several slice counts) and never pass the durable
// head; and the consumer checkpoints: get, set with each expectation (a
// conflict carries the stored position), list, delete, limits, a restart
// that keeps them, --checkpoint-store, and a store that cannot be opened
// failing the start.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "annal/client.h"
#include "annald_process.h"
#include "raw_client.h"
#include "test_util.h"

namespace annal {
namespace {

using client::AllEventsPage;
using client::Client;
using client::Filter;
using testing::AnnaldProcess;
using testing::Event;
using testing::TempDir;

class ServerProjectionTest : public ::testing::Test {
 protected:
  void StartServer(std::vector<std::string> extra = {"--partitions", "3"}) {
    auto s = port_ == 0 ? AnnaldProcess::Start(dir_.path(), extra)
                        : AnnaldProcess::StartOnPort(dir_.path(), port_, extra);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
    port_ = server_->port();
    auto c = Client::Connect({.port = server_->port()});
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(*c);
  }

  void RestartServer() {
    client_.reset();
    ASSERT_TRUE(server_->Stop());
    server_.reset();
    StartServer();
  }

  // `n` events over streams of three categories and two event types,
  // appended a few at a time.
  void AppendMixed(int n) {
    const char* categories[] = {"account", "order", "audit"};
    for (int i = 0, append = 0; i < n; ++append) {
      std::string stream = std::string(categories[append % 3]) + "-" + std::to_string(append % 7);
      std::vector<EventData> events;
      for (int k = 0; k < 3 && i < n; ++k, ++i)
        events.push_back(Event(i % 2 == 0 ? "Opened" : "Changed", "{\"i\":" + std::to_string(i) + "}"));
      auto r = client_->Append(stream, ExpectedVersion::Any(), std::move(events));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
    }
  }

  // Every event READ_ALL returns for `filter`, paged to the head.
  std::vector<RecordedEvent> ReadAllOf(const Filter& filter) {
    std::vector<RecordedEvent> out;
    uint64_t head = client_->ReadHead()->durable_head;
    GlobalPosition from(1);
    while (from.get() <= head) {
      auto page = client_->ReadAll(from, 23, filter);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) break;
      EXPECT_GT(page->next_position, from);
      out.insert(out.end(), page->events.begin(), page->events.end());
      from = page->next_position;
    }
    return out;
  }

  // Every event of the slice from..until, paged with READ_ALL_RANGE until
  // its next position passes `until`.
  std::vector<RecordedEvent> ReadSlice(uint64_t from, uint64_t until, const Filter& filter) {
    std::vector<RecordedEvent> out;
    GlobalPosition next(from);
    for (int pages = 0; next.get() <= until; ++pages) {
      if (pages > 10'000) {
        ADD_FAILURE() << "slice " << from << ".." << until << " never ended";
        break;
      }
      auto page = client_->ReadAllRange(next, GlobalPosition(until), 17, filter);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok()) break;
      EXPECT_GT(page->next_position, next) << "a page must move on";
      for (const RecordedEvent& e : page->events) {
        EXPECT_GE(e.position.get(), from);
        EXPECT_LE(e.position.get(), until);
      }
      out.insert(out.end(), page->events.begin(), page->events.end());
      next = page->next_position;
    }
    return out;
  }

  TempDir dir_{"server-projection-" +
               std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())};
  uint16_t port_ = 0;
  std::unique_ptr<AnnaldProcess> server_;
  std::unique_ptr<Client> client_;
};

void ExpectSamePositionsAndIds(const std::vector<RecordedEvent>& a, const std::vector<RecordedEvent>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].position, b[i].position) << i;
    EXPECT_EQ(a[i].id, b[i].id) << i;
    EXPECT_EQ(a[i].stream, b[i].stream) << i;
    EXPECT_EQ(a[i].payload, b[i].payload) << i;
  }
}

// ------------------------------------------------------------ READ_HEAD

TEST_F(ServerProjectionTest, ReadHeadOfAnEmptyStoreIsZero) {
  StartServer();
  auto head = client_->ReadHead();
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->durable_head, 0u);
  EXPECT_EQ(head->last_recorded_at_ns, 0);
  EXPECT_EQ(head->partitions, 3u);
}

TEST_F(ServerProjectionTest, ReadHeadNamesTheLastDurableEventAndItsTime) {
  StartServer();
  AppendMixed(20);
  auto r = client_->Append("account-x", ExpectedVersion::Any(), {Event("Opened", "{}")});
  ASSERT_TRUE(r.ok());
  auto head = client_->ReadHead();
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->durable_head, r->last_position.get());
  EXPECT_EQ(head->last_recorded_at_ns, r->recorded_at_ns);
  EXPECT_EQ(head->partitions, 3u);
}

// ------------------------------------------------------------ READ_ALL_RANGE

TEST_F(ServerProjectionTest, SlicesTogetherEqualReadAllWithAndWithoutFilters) {
  StartServer();
  AppendMixed(400);
  const uint64_t head = client_->ReadHead()->durable_head;
  ASSERT_EQ(head, 400u);
  std::vector<Filter> filters(4);
  filters[1].kind = Filter::Kind::kCategory;
  filters[1].value = "order";
  filters[2].event_types = {"Changed"};
  filters[3].kind = Filter::Kind::kStreamPrefix;
  filters[3].value = "audit-3";
  filters[3].event_types = {"Opened"};
  for (size_t f = 0; f < filters.size(); ++f) {
    std::vector<RecordedEvent> whole = ReadAllOf(filters[f]);
    ASSERT_FALSE(whole.empty()) << "filter " << f;
    for (uint64_t slices : {1u, 2u, 3u, 7u, 64u}) {
      SCOPED_TRACE("filter " + std::to_string(f) + ", " + std::to_string(slices) + " slices");
      std::vector<RecordedEvent> joined;
      uint64_t width = (head + slices - 1) / slices;
      for (uint64_t from = 1; from <= head; from += width) {
        std::vector<RecordedEvent> part = ReadSlice(from, std::min(head, from + width - 1), filters[f]);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      ExpectSamePositionsAndIds(joined, whole);
    }
  }
}

TEST_F(ServerProjectionTest, RangeNeverPassesTheDurableHead) {
  StartServer();
  AppendMixed(30);
  auto page = client_->ReadAllRange(GlobalPosition(25), GlobalPosition(1000), 1000);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->events.size(), 6u);
  EXPECT_EQ(page->events.back().position, GlobalPosition(30));
  // Not done: the slice goes on past the head, so the reader comes back.
  EXPECT_EQ(page->next_position, GlobalPosition(31));
  AppendMixed(5);
  page = client_->ReadAllRange(GlobalPosition(31), GlobalPosition(1000), 1000);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->events.size(), 5u);
}

TEST_F(ServerProjectionTest, RangeStopsAtItsUpperBoundAndSaysItIsDone) {
  StartServer();
  AppendMixed(30);
  auto page = client_->ReadAllRange(GlobalPosition(0), GlobalPosition(10), 1000);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->events.size(), 10u);
  EXPECT_EQ(page->events.front().position, GlobalPosition(1));
  EXPECT_EQ(page->events.back().position, GlobalPosition(10));
  EXPECT_EQ(page->next_position, GlobalPosition(11));
  // A filter that matches nothing in the slice still finishes it.
  Filter none;
  none.event_types = {"NoSuchType"};
  page = client_->ReadAllRange(GlobalPosition(5), GlobalPosition(12), 1000, none);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->events.empty());
  EXPECT_EQ(page->next_position, GlobalPosition(13));
  // An empty range is done at once.
  page = client_->ReadAllRange(GlobalPosition(20), GlobalPosition(19), 1000);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->events.empty());
  EXPECT_GT(page->next_position, GlobalPosition(19));
  // A page smaller than the slice stops at its count.
  page = client_->ReadAllRange(GlobalPosition(1), GlobalPosition(30), 4);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->events.size(), 4u);
  EXPECT_EQ(page->next_position, GlobalPosition(5));
}

// ------------------------------------------------------------ checkpoints

TEST_F(ServerProjectionTest, CheckpointsSetGetListDeleteThroughTheClient) {
  StartServer();
  auto none = client_->GetCheckpoint("balances");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_value());

  std::string blob("rows=3\0\xff", 8);
  auto set = client_->SetCheckpoint("balances", GlobalPosition(42), blob, CheckpointExpectation::None());
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  auto got = client_->GetCheckpoint("balances");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->position, GlobalPosition(42));
  EXPECT_EQ((*got)->blob, blob);
  EXPECT_EQ((*got)->blob_size, blob.size());
  EXPECT_EQ((*got)->updated_at_ns, *set);

  ASSERT_TRUE(client_->SetCheckpoint("balances", GlobalPosition(50), "", CheckpointExpectation::At(GlobalPosition(42))).ok());
  ASSERT_TRUE(client_->SetCheckpoint("balances-eu", GlobalPosition(7)).ok());
  ASSERT_TRUE(client_->SetCheckpoint("audit", GlobalPosition(1)).ok());

  auto list = client_->ListCheckpoints("balances");
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "balances");
  EXPECT_EQ((*list)[0].position, GlobalPosition(50));
  EXPECT_EQ((*list)[0].blob_size, 0u);
  EXPECT_EQ((*list)[1].name, "balances-eu");
  EXPECT_EQ(client_->ListCheckpoints()->size(), 3u);

  auto deleted = client_->DeleteCheckpoint("audit");
  ASSERT_TRUE(deleted.ok());
  EXPECT_TRUE(*deleted);
  deleted = client_->DeleteCheckpoint("audit");
  ASSERT_TRUE(deleted.ok());
  EXPECT_FALSE(*deleted);
  EXPECT_EQ(client_->ListCheckpoints()->size(), 2u);
}

TEST_F(ServerProjectionTest, ConflictingSetIsWrongExpectedVersionWithTheStoredPosition) {
  StartServer();
  ASSERT_TRUE(client_->SetCheckpoint("balances", GlobalPosition(42)).ok());
  auto stale = client_->SetCheckpoint("balances", GlobalPosition(60), "", CheckpointExpectation::At(GlobalPosition(40)));
  ASSERT_EQ(stale.status().code(), StatusCode::kWrongExpectedVersion) << stale.status().ToString();
  EXPECT_EQ(stale.status().actual_version(), 42);
  auto taken = client_->SetCheckpoint("balances", GlobalPosition(60), "", CheckpointExpectation::None());
  ASSERT_EQ(taken.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(taken.status().actual_version(), 42);
  auto absent = client_->SetCheckpoint("nobody", GlobalPosition(1), "", CheckpointExpectation::At(GlobalPosition(0)));
  ASSERT_EQ(absent.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(absent.status().actual_version(), -1);
  EXPECT_EQ((*client_->GetCheckpoint("balances"))->position, GlobalPosition(42));
  // The connection is still good after the refusals.
  EXPECT_TRUE(client_->Ping().ok());
}

TEST_F(ServerProjectionTest, CheckpointLimitsAreCheckedByClientAndServer) {
  StartServer();
  EXPECT_EQ(client_->SetCheckpoint("", GlobalPosition(1)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->GetCheckpoint(std::string(256, 'n')).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->SetCheckpoint("big", GlobalPosition(1), std::string(kMaxCheckpointBlobBytes + 1, 'b'))
                .status()
                .code(),
            StatusCode::kTooLarge);
  std::string largest(kMaxCheckpointBlobBytes, 'b');
  ASSERT_TRUE(client_->SetCheckpoint("big", GlobalPosition(1), largest).ok());
  EXPECT_EQ((*client_->GetCheckpoint("big"))->blob, largest);
}

TEST_F(ServerProjectionTest, CheckpointsSurviveARestartOfAnnald) {
  StartServer();
  AppendMixed(10);
  ASSERT_TRUE(client_->SetCheckpoint("balances", GlobalPosition(10), "blob").ok());
  ASSERT_NO_FATAL_FAILURE(RestartServer());
  auto got = client_->GetCheckpoint("balances");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ((*got)->position, GlobalPosition(10));
  EXPECT_EQ((*got)->blob, "blob");
  EXPECT_TRUE(std::filesystem::exists(dir_.path() + "/consumers.db"));
}

TEST_F(ServerProjectionTest, CheckpointStoreFlagPutsTheFileElsewhere) {
  TempDir other("server-projection-elsewhere");
  std::filesystem::create_directories(other.path());
  std::string path = other.path() + "/mine.db";
  StartServer({"--checkpoint-store", path});
  ASSERT_TRUE(client_->SetCheckpoint("balances", GlobalPosition(3)).ok());
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/consumers.db"));
}

TEST_F(ServerProjectionTest, CheckpointStoreThatCannotBeOpenedFailsTheStartNamingTheFile) {
  std::string path = dir_.path() + "-missing/sub/consumers.db";
  auto s = AnnaldProcess::Start(dir_.path(), {"--checkpoint-store", path});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(path), std::string::npos) << s.status().message();
}

TEST_F(ServerProjectionTest, CheckpointRequestsAreCounted) {
  StartServer();
  ASSERT_TRUE(client_->SetCheckpoint("balances", GlobalPosition(3)).ok());
  ASSERT_TRUE(client_->GetCheckpoint("balances").ok());
  ASSERT_TRUE(client_->ListCheckpoints().ok());
  std::string page = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(page.find("annal_checkpoint_reads_total 2"), std::string::npos) << page;
  EXPECT_NE(page.find("annal_checkpoint_writes_total 1"), std::string::npos) << page;
}

}  // namespace
}  // namespace annal
