// The bank example (examples/bank) against a real annald: the command side
// refuses overdrafts and retries conflicts; the account_balances projection
// counts nothing twice when the runner dies between handling a batch and
// moving the checkpoint, resumes from its checkpoint, and gives the same
// tables after a reset and rebuild, sequential or in parallel slices, in
// SQLite and in PostgreSQL; and `annal-bank demo` survives a kill -9 of its
// projection process.
#include "bank.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "annal/client.h"
#include "annal/projection.h"
#include "annald_process.h"
#include "balances.h"
#include "pg_cluster.h"
#include "test_util.h"

#ifndef ANNAL_BANK_PATH
#error "ANNAL_BANK_PATH must name the annal-bank binary (set by tests/CMakeLists.txt)"
#endif

namespace annal::bank {
namespace {

using client::CheckpointKeeper;
using client::Client;
using client::ProjectionBatch;
using client::ProjectionHandler;
using client::ProjectionRunner;
using client::ServerCheckpoint;
using testing::AnnaldProcess;
using testing::TempDir;

constexpr auto kWait = std::chrono::seconds(60);
// Small batches, so that a few hundred events make many of them.
constexpr uint32_t kBatchEvents = 40;

// Rows in the ledger; a failure to read them fails the test.
uint64_t LedgerRows(BalanceStore& store) {
  auto n = store.LedgerRows();
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return n.ok() ? *n : ~uint64_t{0};
}

std::string TestName() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

// Hands batches to `inner`; once `ok_batches` were handled, the next one
// is handled too and then reported as failed: to the runner, a crash right
// after the handler's transaction committed.
class CrashAfterHandler final : public ProjectionHandler {
 public:
  CrashAfterHandler(ProjectionHandler* inner, int ok_batches)
      : inner_(inner), ok_batches_left_(ok_batches) {}
  Status Handle(const ProjectionBatch& batch) override {
    ANNAL_RETURN_IF_ERROR(inner_->Handle(batch));
    std::lock_guard lock(mu_);
    if (ok_batches_left_-- <= 0)
      return Status::IoError("simulated crash after the handler committed");
    return Status::Ok();
  }
  Status Reset() override { return inner_->Reset(); }

 private:
  ProjectionHandler* const inner_;
  std::mutex mu_;
  int ok_batches_left_;  // guarded by mu_
};

// Records the slices of the batches it hands on.
class SliceRecorder final : public ProjectionHandler {
 public:
  explicit SliceRecorder(ProjectionHandler* inner) : inner_(inner) {}
  Status Handle(const ProjectionBatch& batch) override {
    {
      std::lock_guard lock(mu_);
      if (batch.rebuilding) rebuild_slices_.insert(batch.slice);
    }
    return inner_->Handle(batch);
  }
  Status Reset() override { return inner_->Reset(); }
  std::set<uint32_t> rebuild_slices() {
    std::lock_guard lock(mu_);
    return rebuild_slices_;
  }

 private:
  ProjectionHandler* const inner_;
  std::mutex mu_;
  std::set<uint32_t> rebuild_slices_;  // guarded by mu_
};

// A ServerCheckpoint whose Save fails once `ok_saves` succeeded: the runner
// stops after Handle and before the checkpoint moved.
class CrashBeforeSaveKeeper final : public CheckpointKeeper {
 public:
  CrashBeforeSaveKeeper(Client& client, const std::string& name, int ok_saves)
      : inner_(client, name), ok_saves_left_(ok_saves) {}
  Result<GlobalPosition> Load() override { return inner_.Load(); }
  Status Save(GlobalPosition position) override {
    if (ok_saves_left_-- <= 0)
      return Status::IoError("simulated crash before the checkpoint moved");
    return inner_.Save(position);
  }
  Status Reset() override { return inner_.Reset(); }

 private:
  ServerCheckpoint inner_;
  int ok_saves_left_;
};

class BankTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_.path());
    auto s = AnnaldProcess::Start(dir_.path() + "/annald");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
    options_.port = server_->port();
    options_.client_name = "bank-test";
    options_.log = [](const std::string&) {};
    auto c = Client::Connect(options_);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(*c);
  }

  // `operations` seeded random credits and debits (some refused) on
  // `accounts` accounts, with an event of another category now and then,
  // which the projection's filter skips.
  void MakeTraffic(uint32_t accounts, uint32_t operations, uint64_t seed) {
    Bank bank(*client_);
    std::mt19937_64 random(seed);
    for (uint32_t a = 0; a < accounts; ++a) {
      ASSERT_TRUE(bank.Open(Id(a), "owner-" + std::to_string(a)).ok());
    }
    for (uint32_t i = 0; i < operations; ++i) {
      std::string id = Id(static_cast<uint32_t>(random() % accounts));
      int64_t amount = 1 + static_cast<int64_t>(random() % 1000);
      auto r = random() % 2 == 0 ? bank.Credit(id, amount) : bank.Debit(id, amount);
      ASSERT_TRUE(r.ok() || r.status().message() == "insufficient funds") << r.status().ToString();
      if (i % 25 == 0) {
        ASSERT_TRUE(client_
                        ->Append("audit-" + std::to_string(i), ExpectedVersion::Any(),
                                 {testing::Event("Checked", "{}")})
                        .ok());
      }
    }
  }

  static std::string Id(uint32_t a) { return "a" + std::to_string(a); }

  std::unique_ptr<BalanceStore> OpenSqlite(const std::string& file) {
    auto s = BalanceStore::OpenSqlite(dir_.path() + "/" + file);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }

  GlobalPosition Head() {
    auto h = client_->ReadHead();
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return GlobalPosition(h.ok() ? h->durable_head : 0);
  }

  Balances Replay() {
    auto b = ReplayBalances(*client_);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    return b.ok() ? *b : Balances{};
  }

  uint64_t BankEventsAfter(GlobalPosition p) {
    uint64_t n = 0;
    GlobalPosition from(p.get() + 1);
    while (true) {
      auto page = client_->ReadAll(from, 10'000, ProjectionOptionsFor("count").filter);
      EXPECT_TRUE(page.ok());
      if (!page.ok() || (page->events.empty() && page->next_position <= from)) return n;
      n += page->events.size();
      from = page->next_position;
    }
  }

  client::ProjectionOptions Options(uint32_t slices, bool rebuild = false) {
    client::ProjectionOptions o = ProjectionOptionsFor("balances-" + TestName(), slices, rebuild);
    o.batch_events = kBatchEvents;
    o.progress = false;
    return o;
  }

  // Runs a projection until it is live at the head, then stops it;
  // returns its stats.
  client::ProjectionStats RunToHead(ProjectionHandler* handler, CheckpointKeeper* keeper,
                                    const client::ProjectionOptions& o) {
    auto runner = ProjectionRunner::Start(options_, o, handler, keeper);
    EXPECT_TRUE(runner.ok()) << runner.status().ToString();
    if (!runner.ok()) return {};
    GlobalPosition head = Head();
    EXPECT_TRUE((*runner)->WaitFor(head, kWait)) << "not live at " << head.get();
    client::ProjectionStats stats = (*runner)->Stats();
    Status stopped = (*runner)->Stop();
    EXPECT_TRUE(stopped.ok()) << stopped.ToString();
    return stats;
  }

  // Starts a runner that is expected to stop with an error by itself;
  // returns that error.
  Status RunUntilFailure(ProjectionHandler* handler, CheckpointKeeper* keeper,
                         const client::ProjectionOptions& o) {
    auto runner = ProjectionRunner::Start(options_, o, handler, keeper);
    if (!runner.ok()) return runner.status();
    EXPECT_FALSE((*runner)->WaitFor(GlobalPosition(Head().get() + 1'000'000), kWait));
    return (*runner)->Stop();
  }

  TempDir dir_{"bank-" + TestName()};
  std::unique_ptr<AnnaldProcess> server_;
  client::ClientOptions options_;
  std::unique_ptr<Client> client_;
};

TEST_F(BankTest, DebitThatWouldOverdrawIsRefusedAndWritesNothing) {
  Bank bank(*client_);
  ASSERT_TRUE(bank.Open("ada", "Ada").ok());
  ASSERT_TRUE(bank.Credit("ada", 100).ok());
  auto refused = bank.Debit("ada", 150);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(), "insufficient funds");
  auto info = client_->GetStreamInfo(AccountStream("ada"));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->event_count, 2u);
  auto spent = bank.Debit("ada", 100);
  ASSERT_TRUE(spent.ok()) << spent.status().ToString();
  ASSERT_TRUE(DecodeState(spent->after.state).ok());
  EXPECT_EQ(DecodeState(spent->after.state)->balance, 0);
  EXPECT_EQ(bank.Credit("nobody", 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(bank.Open("ada", "Ada").status().code(), StatusCode::kAlreadyExists);
}

TEST_F(BankTest, ConcurrentCommandsOnOneAccountRetryAndLoseNoUpdate) {
  Bank setup(*client_);
  ASSERT_TRUE(setup.Open("shared", "Grace").ok());
  constexpr int kThreads = 4, kCredits = 25;
  std::atomic<uint32_t> conflicts{0};
  std::vector<std::thread> threads;
  std::vector<Status> results(kThreads);
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      auto c = Client::Connect(options_);
      if (!c.ok()) return void(results[t] = c.status());
      Bank bank(**c, {.max_retries = 1000});
      for (int i = 0; i < kCredits; ++i) {
        auto r = bank.Credit("shared", 1);
        if (!r.ok()) return void(results[t] = r.status());
        conflicts += r->conflicts;
      }
    });
  for (auto& t : threads) t.join();
  for (const Status& s : results) ASSERT_TRUE(s.ok()) << s.ToString();
  Balances replay = Replay();
  EXPECT_EQ(replay["shared"].balance, kThreads * kCredits);
  auto info = client_->GetStreamInfo(AccountStream("shared"));
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->event_count, 1u + kThreads * kCredits);
  std::printf("  %u conflicts retried\n", conflicts.load());
}

TEST_F(BankTest, RunnerCrashBetweenHandleAndCheckpointDoesNotDoubleCount) {
  MakeTraffic(12, 400, 1);
  auto store = OpenSqlite("balances.db");
  ASSERT_NE(store, nullptr);
  BalanceProjection handler(store.get());
  const std::string name = "balances-" + TestName();
  {
    // The checkpoint lives in annald; the third Save "crashes".
    CrashBeforeSaveKeeper keeper(*client_, name, 2);
    Status s = RunUntilFailure(&handler, &keeper, Options(1));
    EXPECT_NE(s.message().find("simulated crash before the checkpoint"), std::string::npos)
        << s.ToString();
  }
  auto server_checkpoint = client_->GetCheckpoint(name);
  ASSERT_TRUE(server_checkpoint.ok() && server_checkpoint->has_value());
  auto handled = store->PeekCheckpoint();
  ASSERT_TRUE(handled.ok() && handled->has_value());
  // The rows went further than the checkpoint the runner resumes from.
  ASSERT_GT(**handled, (*server_checkpoint)->position);

  ServerCheckpoint keeper(*client_, name);
  client::ProjectionStats stats = RunToHead(&handler, &keeper, Options(1));
  // The batch handled before the crash was handed again ...
  EXPECT_EQ(stats.events_handled, BankEventsAfter((*server_checkpoint)->position));
  // ... and counted once.
  auto table = store->ReadBalances();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(*table, Replay());
}

TEST_F(BankTest, RunnerCrashAfterCommitResumesFromTheCheckpointInTheSameTransaction) {
  MakeTraffic(12, 400, 2);
  auto store = OpenSqlite("balances.db");
  ASSERT_NE(store, nullptr);
  BalanceProjection handler(store.get());
  BalanceCheckpoint keeper(store.get());
  {
    CrashAfterHandler crashing(&handler, 3);
    Status s = RunUntilFailure(&crashing, &keeper, Options(1));
    EXPECT_NE(s.message().find("simulated crash after the handler committed"), std::string::npos)
        << s.ToString();
  }
  auto checkpoint = store->PeekCheckpoint();
  ASSERT_TRUE(checkpoint.ok() && checkpoint->has_value());
  ASSERT_GT((*checkpoint)->get(), 0u);
  client::ProjectionStats stats = RunToHead(&handler, &keeper, Options(1));
  // Resumed after the last committed batch: nothing handled twice.
  EXPECT_EQ(stats.events_handled, BankEventsAfter(**checkpoint));
  auto table = store->ReadBalances();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(*table, Replay());
}

TEST_F(BankTest, ResetAndRebuildGivesIdenticalTables) {
  MakeTraffic(15, 400, 3);
  auto store = OpenSqlite("balances.db");
  ASSERT_NE(store, nullptr);
  BalanceProjection handler(store.get());
  BalanceCheckpoint keeper(store.get());
  RunToHead(&handler, &keeper, Options(1));
  auto live = store->ReadBalances();
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(*live, Replay());

  client::ProjectionStats rebuilt = RunToHead(&handler, &keeper, Options(2, /*rebuild=*/true));
  EXPECT_GT(rebuilt.rebuild_head.get(), 0u);
  auto again = store->ReadBalances();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *live);
  EXPECT_EQ(LedgerRows(*store), 0u);
}

TEST_F(BankTest, ParallelRebuildEqualsSequentialRebuild) {
  MakeTraffic(20, 500, 4);
  auto sequential = OpenSqlite("sequential.db");
  auto parallel = OpenSqlite("parallel.db");
  ASSERT_NE(sequential, nullptr);
  ASSERT_NE(parallel, nullptr);
  BalanceProjection seq_handler(sequential.get()), par_handler(parallel.get());
  BalanceCheckpoint seq_keeper(sequential.get()), par_keeper(parallel.get());
  SliceRecorder recorder(&par_handler);
  RunToHead(&seq_handler, &seq_keeper, Options(1, /*rebuild=*/true));
  RunToHead(&recorder, &par_keeper, Options(3, /*rebuild=*/true));
  EXPECT_EQ(recorder.rebuild_slices(), (std::set<uint32_t>{0, 1, 2}));
  auto a = sequential->ReadBalances();
  auto b = parallel->ReadBalances();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(*a, Replay());
  EXPECT_EQ(sequential->PeekCheckpoint().value(), parallel->PeekCheckpoint().value());
}

TEST_F(BankTest, InterruptedParallelRebuildIsDiscardedAndStartsOver) {
  MakeTraffic(10, 400, 5);
  auto store = OpenSqlite("balances.db");
  ASSERT_NE(store, nullptr);
  BalanceProjection handler(store.get());
  BalanceCheckpoint keeper(store.get());
  {
    CrashAfterHandler crashing(&handler, 2);
    Status s = RunUntilFailure(&crashing, &keeper, Options(3, /*rebuild=*/true));
    EXPECT_NE(s.message().find("simulated crash"), std::string::npos) << s.ToString();
  }
  EXPECT_GT(LedgerRows(*store), 0u);
  EXPECT_FALSE(store->PeekCheckpoint().value().has_value());
  // No checkpoint and 3 slices: the runner rebuilds after Load discarded
  // the ledger of the interrupted one.
  RunToHead(&handler, &keeper, Options(3));
  auto table = store->ReadBalances();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(*table, Replay());
  EXPECT_EQ(LedgerRows(*store), 0u);
}

TEST_F(BankTest, BatchHandedTwiceChangesNothing) {
  MakeTraffic(5, 100, 6);
  auto store = OpenSqlite("balances.db");
  ASSERT_NE(store, nullptr);
  BalanceProjection handler(store.get());
  auto page = client_->ReadAll(GlobalPosition(1), 10'000, ProjectionOptionsFor("x").filter);
  ASSERT_TRUE(page.ok());
  ProjectionBatch batch{page->events, page->events.back().position, false, 0};
  ASSERT_TRUE(handler.Handle(batch).ok());
  ASSERT_TRUE(handler.Handle(batch).ok());
  auto table = store->ReadBalances();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(*table, Replay());
  // The same during a rebuild (the ledger), folded at the end.
  ASSERT_TRUE(handler.Reset().ok());
  batch.rebuilding = true;
  ASSERT_TRUE(handler.Handle(batch).ok());
  ASSERT_TRUE(handler.Handle(batch).ok());
  ASSERT_TRUE(store->FinishRebuild(batch.through).ok());
  table = store->ReadBalances();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(*table, Replay());
}

TEST_F(BankTest, PostgresProjectionRebuildsInParallelAndSurvivesACrash) {
  testing::PgCluster pg;
  switch (pg.Start()) {
    case testing::PgCluster::Outcome::kNotInstalled:
      GTEST_SKIP()
          << "PostgreSQL cannot be started here (bench/pg-cluster.sh: server binaries not found): "
          << pg.output();
    case testing::PgCluster::Outcome::kFailed:
      FAIL() << "bench/pg-cluster.sh start failed: " << pg.output();
    case testing::PgCluster::Outcome::kStarted:
      break;
  }
  MakeTraffic(15, 400, 7);
  auto opened = BalanceStore::OpenPostgres(pg.conninfo());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<BalanceStore> store = std::move(*opened);
  BalanceProjection handler(store.get());
  BalanceCheckpoint keeper(store.get());
  const Balances replay = Replay();

  // Live, with a crash after a committed batch: resumes, counts once.
  {
    CrashAfterHandler crashing(&handler, 3);
    Status s = RunUntilFailure(&crashing, &keeper, Options(1));
    EXPECT_NE(s.message().find("simulated crash"), std::string::npos) << s.ToString();
  }
  auto checkpoint = store->PeekCheckpoint();
  ASSERT_TRUE(checkpoint.ok() && checkpoint->has_value());
  client::ProjectionStats resumed = RunToHead(&handler, &keeper, Options(1));
  EXPECT_EQ(resumed.events_handled, BankEventsAfter(**checkpoint));
  auto live = store->ReadBalances();
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(*live, replay);

  // Sequential and parallel rebuilds give the same table.
  RunToHead(&handler, &keeper, Options(1, /*rebuild=*/true));
  auto sequential = store->ReadBalances();
  SliceRecorder recorder(&handler);
  RunToHead(&recorder, &keeper, Options(3, /*rebuild=*/true));
  EXPECT_EQ(recorder.rebuild_slices(), (std::set<uint32_t>{0, 1, 2}));
  auto parallel = store->ReadBalances();
  ASSERT_TRUE(sequential.ok() && parallel.ok());
  EXPECT_EQ(*sequential, replay);
  EXPECT_EQ(*parallel, replay);
  EXPECT_EQ(LedgerRows(*store), 0u);
}

TEST_F(BankTest, DemoSurvivesKillDashNineOfItsProjection) {
  std::string command = std::string(ANNAL_BANK_PATH) + " demo --port " +
                        std::to_string(server_->port()) + " --db '" + dir_.path() +
                        "/demo.db' --accounts 8 --operations 600 --threads 3" +
                        " --slices 2 --seed 42 2>&1";
  FILE* f = ::popen(command.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) output.append(buf, n);
  int status = ::pclose(f);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_NE(output.find("kill -9 projection"), std::string::npos) << output;
  EXPECT_NE(output.find("OK: account_balances equals a fresh full replay"), std::string::npos)
      << output;
}

}  // namespace
}  // namespace annal::bank
