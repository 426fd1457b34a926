// The consumer checkpoint store (annal/consumers.h, engine/src/
// checkpoint_store.cc): set, get, list and delete; the three expectations
// and the stored position a conflict reports; a row damaged behind SQLite's
// back is reported as corruption naming the consumer and the file; values
// survive a reopen; the blob limit; and two writers racing with the same
// expectation, of which exactly one wins.
#include "checkpoint_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "annal/consumers.h"
#include "test_util.h"

namespace annal {
namespace {

using testing::TempDir;

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_.path());
    path_ = dir_.path() + "/consumers.db";
    Reopen();
  }

  void Reopen() {
    store_.reset();
    auto s = CheckpointStore::Open(path_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }

  // Runs `sql` on the file directly, as a damaged disk or a careless
  // operator would.
  void Tamper(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  std::optional<ConsumerCheckpoint> Get(std::string_view name) {
    auto r = store_->Get(name);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::nullopt;
  }

  TempDir dir_{"checkpoint-store"};
  std::string path_;
  std::unique_ptr<CheckpointStore> store_;
};

TEST_F(CheckpointStoreTest, GetOfAnUnknownConsumerIsNone) { EXPECT_FALSE(Get("balances").has_value()); }

TEST_F(CheckpointStoreTest, SetThenGetReturnsWhatWasSet) {
  std::string blob("state\0\xff", 7);
  auto at = store_->Set("balances", GlobalPosition(42), blob, CheckpointExpectation::Any());
  ASSERT_TRUE(at.ok()) << at.status().ToString();
  EXPECT_GT(*at, 0);
  auto c = Get("balances");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->name, "balances");
  EXPECT_EQ(c->position, GlobalPosition(42));
  EXPECT_EQ(c->blob, blob);
  EXPECT_EQ(c->blob_size, blob.size());
  EXPECT_EQ(c->updated_at_ns, *at);
}

TEST_F(CheckpointStoreTest, PositionsMayMoveBackwards) {
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(100), "", CheckpointExpectation::Any()).ok());
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(0), "", CheckpointExpectation::Any()).ok());
  EXPECT_EQ(Get("balances")->position, GlobalPosition(0));
}

TEST_F(CheckpointStoreTest, ExpectNoneHoldsOnlyWhileThereIsNoCheckpoint) {
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(5), "a", CheckpointExpectation::None()).ok());
  auto again = store_->Set("balances", GlobalPosition(6), "b", CheckpointExpectation::None());
  ASSERT_EQ(again.status().code(), StatusCode::kWrongExpectedVersion) << again.status().ToString();
  EXPECT_EQ(again.status().actual_version(), 5);
  EXPECT_NE(again.status().message().find("balances"), std::string::npos) << again.status().message();
  EXPECT_EQ(Get("balances")->blob, "a");  // the losing write left nothing behind
}

TEST_F(CheckpointStoreTest, ExpectAtHoldsOnlyAtTheStoredPosition) {
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(5), "", CheckpointExpectation::Any()).ok());
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(9), "", CheckpointExpectation::At(GlobalPosition(5))).ok());
  auto stale = store_->Set("balances", GlobalPosition(12), "", CheckpointExpectation::At(GlobalPosition(5)));
  ASSERT_EQ(stale.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(stale.status().actual_version(), 9);
  EXPECT_EQ(Get("balances")->position, GlobalPosition(9));
}

TEST_F(CheckpointStoreTest, ExpectAtWithoutACheckpointReportsMinusOne) {
  auto r = store_->Set("fresh", GlobalPosition(3), "", CheckpointExpectation::At(GlobalPosition(0)));
  ASSERT_EQ(r.status().code(), StatusCode::kWrongExpectedVersion);
  EXPECT_EQ(r.status().actual_version(), -1);
  EXPECT_FALSE(Get("fresh").has_value());
}

TEST_F(CheckpointStoreTest, DeleteSaysWhetherThereWasOne) {
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(5), "", CheckpointExpectation::Any()).ok());
  auto first = store_->Delete("balances");
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(*first);
  auto second = store_->Delete("balances");
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(*second);
  EXPECT_FALSE(Get("balances").has_value());
  // A deleted consumer may start over with None.
  EXPECT_TRUE(store_->Set("balances", GlobalPosition(1), "", CheckpointExpectation::None()).ok());
}

TEST_F(CheckpointStoreTest, ListReturnsThePrefixsConsumersByNameWithoutBlobs) {
  for (const char* name : {"bal", "balances", "balances-eu", "bam", "audit", "bal\xff"})
    ASSERT_TRUE(store_->Set(name, GlobalPosition(7), "blob!", CheckpointExpectation::Any()).ok());
  auto list = store_->List("bal");
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  std::vector<std::string> names;
  for (const ConsumerCheckpoint& c : *list) {
    names.push_back(c.name);
    EXPECT_TRUE(c.blob.empty());
    EXPECT_EQ(c.blob_size, 5u);
    EXPECT_EQ(c.position, GlobalPosition(7));
  }
  EXPECT_EQ(names, (std::vector<std::string>{"bal", "balances", "balances-eu", "bal\xff"}));
  auto all = store_->List("");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 6u);
  EXPECT_EQ(all->front().name, "audit");
  auto none = store_->List("zzz");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(CheckpointStoreTest, ValuesSurviveAReopen) {
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(4711), "blob", CheckpointExpectation::Any()).ok());
  ASSERT_TRUE(store_->Set("audit", GlobalPosition(3), "", CheckpointExpectation::Any()).ok());
  ASSERT_TRUE(store_->Delete("audit").ok());
  Reopen();
  auto c = Get("balances");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->position, GlobalPosition(4711));
  EXPECT_EQ(c->blob, "blob");
  EXPECT_FALSE(Get("audit").has_value());
}

TEST_F(CheckpointStoreTest, NamesMustBe1To255Bytes) {
  std::string longest(255, 'n');
  EXPECT_TRUE(store_->Set(longest, GlobalPosition(1), "", CheckpointExpectation::Any()).ok());
  EXPECT_EQ(Get(longest)->name, longest);
  for (const std::string& bad : {std::string(), std::string(256, 'n')}) {
    EXPECT_EQ(store_->Set(bad, GlobalPosition(1), "", CheckpointExpectation::Any()).status().code(),
              StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Get(bad).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->Delete(bad).status().code(), StatusCode::kInvalidArgument);
  }
}

TEST_F(CheckpointStoreTest, BlobAtTheLimitIsKeptAndOneByteMoreIsTooLarge) {
  std::string largest(kMaxCheckpointBlobBytes, 'b');
  ASSERT_TRUE(store_->Set("big", GlobalPosition(1), largest, CheckpointExpectation::Any()).ok());
  EXPECT_EQ(Get("big")->blob, largest);
  auto r = store_->Set("big", GlobalPosition(2), largest + "b", CheckpointExpectation::Any());
  EXPECT_EQ(r.status().code(), StatusCode::kTooLarge);
  EXPECT_EQ(Get("big")->position, GlobalPosition(1));
}

TEST_F(CheckpointStoreTest, ChecksumMismatchIsCorruptionNamingConsumerAndFile) {
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(42), "blob", CheckpointExpectation::Any()).ok());
  ASSERT_TRUE(store_->Set("other", GlobalPosition(1), "", CheckpointExpectation::Any()).ok());
  Tamper("UPDATE checkpoints SET position = 43 WHERE name = 'balances'");
  auto r = store_->Get("balances");
  ASSERT_EQ(r.status().code(), StatusCode::kCorruption) << r.status().ToString();
  EXPECT_NE(r.status().message().find("balances"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(path_), std::string::npos) << r.status().message();
  // Listing never returns the damaged row either; other consumers are fine.
  EXPECT_EQ(store_->List("").status().code(), StatusCode::kCorruption);
  EXPECT_EQ(Get("other")->position, GlobalPosition(1));
  // A conditional write cannot compare with it; an unconditional one repairs it.
  EXPECT_EQ(store_->Set("balances", GlobalPosition(44), "", CheckpointExpectation::At(GlobalPosition(42)))
                .status()
                .code(),
            StatusCode::kCorruption);
  ASSERT_TRUE(store_->Set("balances", GlobalPosition(44), "", CheckpointExpectation::Any()).ok());
  EXPECT_EQ(Get("balances")->position, GlobalPosition(44));
}

TEST_F(CheckpointStoreTest, EveryFieldIsCoveredByTheChecksum) {
  for (const char* change : {"position = position + 1", "updated_at_ns = updated_at_ns + 1",
                             "blob = X'626c6f62ff'", "name = 'balancez'"}) {
    SCOPED_TRACE(change);
    ASSERT_TRUE(store_->Set("balances", GlobalPosition(42), "blob", CheckpointExpectation::Any()).ok());
    Tamper(std::string("UPDATE checkpoints SET ") + change + " WHERE name = 'balances'");
    auto list = store_->List("");
    EXPECT_EQ(list.status().code(), StatusCode::kCorruption) << change;
    Tamper("DELETE FROM checkpoints");
  }
}

TEST_F(CheckpointStoreTest, AnotherFormatVersionIsRefused) {
  store_.reset();
  Tamper("UPDATE annal_meta SET value = 2 WHERE key = 'format_version'");
  auto s = CheckpointStore::Open(path_);
  ASSERT_EQ(s.status().code(), StatusCode::kCorruption);
  EXPECT_NE(s.status().message().find(path_), std::string::npos);
}

TEST_F(CheckpointStoreTest, OpenOfAnUnwritablePathFailsNamingTheFile) {
  std::string bad = dir_.path() + "/no-such-dir/consumers.db";
  auto s = CheckpointStore::Open(bad);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find(bad), std::string::npos) << s.status().message();
}

// Two runners of one consumer both believe it is at 10: exactly one may
// move it, the other must learn where it went.
TEST_F(CheckpointStoreTest, ConcurrentSetsWithTheSameExpectationHaveExactlyOneWinner) {
  auto second = CheckpointStore::Open(path_);  // a second connection, as another process has
  ASSERT_TRUE(second.ok());
  for (int round = 0; round < 50; ++round) {
    const uint64_t base = 10 + uint64_t(round) * 100;
    ASSERT_TRUE(store_->Set("balances", GlobalPosition(base), "", CheckpointExpectation::Any()).ok());
    std::atomic<int> go{0};
    Result<int64_t> results[4] = {Status::Unavailable("not run"), Status::Unavailable("not run"),
                                  Status::Unavailable("not run"), Status::Unavailable("not run")};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      CheckpointStore* s = t % 2 == 0 ? store_.get() : second->get();
      threads.emplace_back([&, t, s] {
        go.fetch_add(1);
        while (go.load() < 4) {
        }
        results[t] = s->Set("balances", GlobalPosition(base + 1 + t), "", CheckpointExpectation::At(GlobalPosition(base)));
      });
    }
    for (auto& th : threads) th.join();
    int winners = 0, winner = -1;
    for (int t = 0; t < 4; ++t) {
      if (results[t].ok()) {
        ++winners;
        winner = t;
      } else {
        ASSERT_EQ(results[t].status().code(), StatusCode::kWrongExpectedVersion) << results[t].status().ToString();
      }
    }
    ASSERT_EQ(winners, 1) << "round " << round;
    for (int t = 0; t < 4; ++t) {
      if (t == winner) continue;
      EXPECT_EQ(results[t].status().actual_version(), int64_t(base + 1 + winner));
    }
    EXPECT_EQ(Get("balances")->position, GlobalPosition(base + 1 + winner));
  }
}

}  // namespace
}  // namespace annal
