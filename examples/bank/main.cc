// annal-bank: the bank example (issue #7) against a running annald.
//
//   annal-bank demo    [--host H] [--port P] [--db FILE | --pg CONNINFO] [--accounts N]
//                      [--operations N] [--threads N] [--slices N] [--seed N]
//   annal-bank project [--host H] [--port P] [--db FILE | --pg CONNINFO] [--slices N] [--rebuild]
//   annal-bank check   [--host H] [--port P] [--db FILE | --pg CONNINFO]
//
// demo: opens --accounts accounts and runs --operations random credits and
// debits (some refused as overdrafts) from --threads threads through the
// command side, while the balances projection runs in a child process
// (`annal-bank project`, first with --rebuild so the table starts from the
// whole log). When 40% of the operations are done it kills the projection
// with SIGKILL and starts it again, which resumes from its checkpoint. Once
// the traffic is over and the projection caught up, it compares
// account_balances with a full replay of the log folded in memory and
// exits 1 if they differ.
// project: runs the projection until SIGINT or SIGTERM.
// check: compares account_balances with a full replay, as the demo does.
//
// The projection writes to --db (an SQLite file, default annal-bank.db) or,
// given --pg, to PostgreSQL.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "annal/assert.h"
#include "annal/client.h"
#include "annal/projection.h"
#include "balances.h"
#include "bank.h"

namespace {

using annal::Result;
using annal::Status;
using namespace annal::bank;
using Clock = std::chrono::steady_clock;

constexpr const char* kProjectionName = "account_balances";
constexpr auto kCatchUpTimeout = std::chrono::seconds(120);
constexpr double kKillAtFraction = 0.4;

struct Settings {
  std::string host = "127.0.0.1";
  uint16_t port = 7411;
  std::string db = "annal-bank.db";
  std::string pg;
  uint32_t accounts = 40;
  uint32_t operations = 3000;
  uint32_t threads = 4;
  uint32_t slices = 2;
  uint64_t seed = 0;  // 0: from the clock
  bool rebuild = false;
};

annal::client::ClientOptions ClientOptionsFor(const Settings& s) {
  return {.host = s.host, .port = s.port, .client_name = "annal-bank"};
}

Result<std::unique_ptr<BalanceStore>> OpenStore(const Settings& s) {
  return s.pg.empty() ? BalanceStore::OpenSqlite(s.db, kProjectionName)
                      : BalanceStore::OpenPostgres(s.pg, kProjectionName);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "annal-bank: %s\n", s.ToString().c_str());
  return 1;
}

// --- project -----------------------------------------------------------

int RunProjection(const Settings& s) {
  // Blocked before any thread starts, so that every thread inherits the mask
  // and only sigwait below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto store = OpenStore(s);
  if (!store.ok()) return Fail(store.status());
  BalanceProjection handler(store->get());
  BalanceCheckpoint keeper(store->get());
  auto runner = annal::client::ProjectionRunner::Start(
      ClientOptionsFor(s), ProjectionOptionsFor(kProjectionName, s.slices, s.rebuild), &handler,
      &keeper);
  if (!runner.ok()) return Fail(runner.status());
  int sig = 0;
  sigwait(&stop_signals, &sig);
  Status stopped = (*runner)->Stop();
  annal::client::ProjectionStats st = (*runner)->Stats();
  std::fprintf(stderr,
               "annal-bank project: stopped by signal %d after %" PRIu64
               " events, checkpoint %" PRIu64 "\n",
               sig, st.events_handled, st.checkpoint.get());
  return stopped.ok() ? 0 : Fail(stopped);
}

// --- check -------------------------------------------------------------

// Prints up to 10 differences; returns whether there were none.
bool Compare(const Balances& table, const Balances& replay) {
  int shown = 0;
  auto show = [&](const std::string& account, const char* what) {
    if (shown++ < 10) std::printf("  MISMATCH %s: %s\n", account.c_str(), what);
  };
  for (const auto& [account, expected] : replay) {
    auto it = table.find(account);
    if (it == table.end())
      show(account, "missing from account_balances");
    else if (!(it->second == expected))
      show(account,
           ("table balance " + std::to_string(it->second.balance) + " at position " +
            std::to_string(it->second.last_position) + ", replay " +
            std::to_string(expected.balance) + " at " + std::to_string(expected.last_position))
               .c_str());
  }
  for (const auto& [account, row] : table)
    if (!replay.contains(account)) show(account, "in account_balances but not in the log");
  if (shown > 10) std::printf("  ... %d differences in all\n", shown);
  return shown == 0;
}

int64_t Total(const Balances& b) {
  int64_t total = 0;
  for (const auto& [account, row] : b) total += row.balance;
  return total;
}

Result<bool> CheckAgainstReplay(annal::client::Client& client, BalanceStore& store) {
  ANNAL_ASSIGN_OR_RETURN(Balances replay, ReplayBalances(client));
  ANNAL_ASSIGN_OR_RETURN(Balances table, store.ReadBalances());
  std::printf("  account_balances: %zu accounts, total %" PRId64
              "; full replay: %zu accounts, total %" PRId64 "\n",
              table.size(), Total(table), replay.size(), Total(replay));
  return Compare(table, replay);
}

int RunCheck(const Settings& s) {
  auto client = annal::client::Client::Connect(ClientOptionsFor(s));
  if (!client.ok()) return Fail(client.status());
  auto store = OpenStore(s);
  if (!store.ok()) return Fail(store.status());
  auto same = CheckAgainstReplay(**client, **store);
  if (!same.ok()) return Fail(same.status());
  std::printf(*same ? "OK: account_balances equals a full replay\n"
                    : "FAILED: account_balances differs\n");
  return *same ? 0 : 1;
}

// --- demo --------------------------------------------------------------

struct TrafficCounts {
  std::atomic<uint64_t> credits{0}, debits{0}, refused{0}, conflicts{0}, done{0};
  std::atomic<uint32_t> threads_finished{0};
};

// One traffic thread: `operations` random credits and debits on `ids`.
Status Traffic(const Settings& s, const std::vector<std::string>& ids, uint32_t operations,
               uint64_t seed, TrafficCounts* counts) {
  ANNAL_ASSIGN_OR_RETURN(auto client, annal::client::Client::Connect(ClientOptionsFor(s)));
  Bank bank(*client, {.max_retries = 32});
  std::mt19937_64 random(seed);
  for (uint32_t i = 0; i < operations; ++i) {
    const std::string& id = ids[random() % ids.size()];
    bool credit = random() % 100 < 55;
    int64_t amount = credit ? 100 + static_cast<int64_t>(random() % 50'000)
                            : 100 + static_cast<int64_t>(random() % 70'000);
    auto r = credit ? bank.Credit(id, amount) : bank.Debit(id, amount);
    if (r.ok()) {
      (credit ? counts->credits : counts->debits)++;
      counts->conflicts += r->conflicts;
    } else if (r.status().code() == annal::StatusCode::kInvalidArgument &&
               r.status().message() == "insufficient funds") {
      counts->refused++;
    } else {
      return r.status().WithContext("account " + id);
    }
    counts->done++;
  }
  return Status::Ok();
}

// Starts `annal-bank project` as a child process; -1 when fork fails.
pid_t SpawnProjection(const Settings& s, bool rebuild) {
  std::vector<std::string> args = {"annal-bank", "project",
                                   "--host",     s.host,
                                   "--port",     std::to_string(s.port),
                                   "--slices",   std::to_string(s.slices)};
  if (s.pg.empty())
    args.insert(args.end(), {"--db", s.db});
  else
    args.insert(args.end(), {"--pg", s.pg});
  if (rebuild) args.push_back("--rebuild");
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv("/proc/self/exe", argv.data());
  std::perror("annal-bank: exec /proc/self/exe");
  ::_exit(127);
}

// SIGTERM: the projection stops after the batch in hand.
void StopProjection(pid_t projection) {
  ANNAL_ASSERT(projection > 0);  // never kill(-1, ...)
  ::kill(projection, SIGTERM);
  ::waitpid(projection, nullptr, 0);
}

std::string CheckpointText(BalanceStore& store) {
  auto c = store.PeekCheckpoint();
  if (!c.ok()) return c.status().ToString();
  return *c ? std::to_string((*c)->get()) : "none (a rebuild was running)";
}

// Waits until the projection's checkpoint reaches `position`.
Status WaitForCheckpoint(BalanceStore& store, annal::GlobalPosition position) {
  auto deadline = Clock::now() + kCatchUpTimeout;
  while (Clock::now() < deadline) {
    ANNAL_ASSIGN_OR_RETURN(auto c, store.PeekCheckpoint());
    if (c && *c >= position) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::Unavailable("the projection did not reach position " +
                             std::to_string(position.get()) + " in time");
}

Status OpenAccounts(annal::client::Client& client, const std::vector<std::string>& ids) {
  static const char* kOwners[] = {"ada",    "grace",   "edsger", "barbara",
                                  "donald", "frances", "ken",    "radia"};
  Bank bank(client);
  for (size_t i = 0; i < ids.size(); ++i)
    ANNAL_RETURN_IF_ERROR(bank.Open(ids[i], kOwners[i % 8]).status());
  return Status::Ok();
}

// When kKillAtFraction of the traffic is done (or it ended), kills the
// projection process with SIGKILL and starts another, which resumes from
// the checkpoint the first one committed. Returns the new one's pid.
pid_t KillAndRestart(const Settings& s, BalanceStore& store, const TrafficCounts& counts,
                     pid_t projection) {
  while (counts.done < s.operations * kKillAtFraction && counts.threads_finished < s.threads) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ANNAL_ASSERT(projection > 0);  // never kill(-1, ...)
  ::kill(projection, SIGKILL);
  ::waitpid(projection, nullptr, 0);
  std::printf("  %" PRIu64 " operations done: kill -9 projection (pid %d); its checkpoint: %s\n",
              counts.done.load(), projection, CheckpointText(store).c_str());
  projection = SpawnProjection(s, /*rebuild=*/false);
  if (projection > 0)
    std::printf("  projection restarted (pid %d): resumes from its checkpoint\n", projection);
  return projection;
}

// Waits until the projection has the log's last bank event, stops it, and
// compares its table with a full replay. Returns the exit status.
int CatchUpAndCompare(annal::client::Client& client, BalanceStore& store, pid_t projection) {
  annal::GlobalPosition last;
  auto replay = ReplayBalances(client, &last);
  if (!replay.ok()) return Fail(replay.status());
  auto start = Clock::now();
  Status caught_up = WaitForCheckpoint(store, last);
  StopProjection(projection);
  if (!caught_up.ok()) return Fail(caught_up);
  std::printf("  projection caught up to position %" PRIu64 " %.1f s after the traffic ended\n",
              last.get(), std::chrono::duration<double>(Clock::now() - start).count());
  auto same = CheckAgainstReplay(client, store);
  if (!same.ok()) return Fail(same.status());
  std::printf(*same ? "OK: account_balances equals a fresh full replay\n"
                    : "FAILED: account_balances differs from a full replay\n");
  return *same ? 0 : 1;
}

int RunDemo(Settings s) {
  if (s.seed == 0) s.seed = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  auto client = annal::client::Client::Connect(ClientOptionsFor(s));
  if (!client.ok()) return Fail(client.status());
  auto store = OpenStore(s);
  if (!store.ok()) return Fail(store.status());

  char run[17];
  std::snprintf(run, sizeof run, "%08" PRIx64, s.seed & 0xffffffff);
  std::vector<std::string> ids;
  for (uint32_t i = 0; i < s.accounts; ++i)
    ids.push_back(std::string(run) + "-" + std::to_string(i));
  std::string where = s.pg.empty() ? "SQLite file " + s.db : "PostgreSQL";
  std::printf(
      "annal-bank demo: run %s, %u accounts, %u operations from %u threads; projection in %s\n",
      run, s.accounts, s.operations, s.threads, where.c_str());
  Status opened = OpenAccounts(**client, ids);
  if (!opened.ok()) return Fail(opened);

  pid_t projection = SpawnProjection(s, /*rebuild=*/true);
  if (projection < 0) return Fail(Status::FromErrno(errno, "fork"));
  std::printf("  projection started (pid %d): rebuild from position 1 in %u slices, then live\n",
              projection, s.slices);

  TrafficCounts counts;
  std::vector<Status> results(s.threads);
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < s.threads; ++t)
    threads.emplace_back([&, t] {
      uint32_t share = s.operations / s.threads + (t < s.operations % s.threads ? 1 : 0);
      results[t] = Traffic(s, ids, share, s.seed * 31 + t, &counts);
      counts.threads_finished++;
    });

  projection = KillAndRestart(s, **store, counts, projection);

  for (auto& t : threads) t.join();
  if (projection < 0) return Fail(Status::FromErrno(errno, "fork"));
  for (const Status& r : results) {
    if (r.ok()) continue;
    StopProjection(projection);
    return Fail(r);
  }
  std::printf("  traffic done: %" PRIu64 " credits, %" PRIu64 " debits, %" PRIu64
              " debits refused (insufficient funds), %" PRIu64 " conflicts retried\n",
              counts.credits.load(), counts.debits.load(), counts.refused.load(),
              counts.conflicts.load());

  return CatchUpAndCompare(**client, **store, projection);
}

void AddConnectionFlags(CLI::App* app, Settings* s) {
  app->add_option("--host", s->host, "annald's address");
  app->add_option("--port", s->port, "annald's port");
  app->add_option("--db", s->db, "the SQLite file of the projection");
  app->add_option("--pg", s->pg,
                  "a PostgreSQL connection string: keep the projection there instead");
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines in order with the child's stderr
  Settings s;
  CLI::App app{"annal-bank: the bank example (account balances projection)"};
  app.require_subcommand(1);
  CLI::App* demo =
      app.add_subcommand("demo", "Traffic, a killed and restarted projection, and a check");
  CLI::App* project =
      app.add_subcommand("project", "Run the balances projection until SIGINT or SIGTERM");
  CLI::App* check =
      app.add_subcommand("check", "Compare account_balances with a full replay of the log");
  for (CLI::App* sub : {demo, project, check}) AddConnectionFlags(sub, &s);
  demo->add_option("--accounts", s.accounts, "accounts to open")->check(CLI::PositiveNumber);
  demo->add_option("--operations", s.operations, "credits and debits to run")
      ->check(CLI::PositiveNumber);
  demo->add_option("--threads", s.threads, "threads running commands")->check(CLI::PositiveNumber);
  demo->add_option("--seed", s.seed, "random seed (0: from the clock)");
  for (CLI::App* sub : {demo, project})
    sub->add_option("--slices", s.slices, "parallel slices of a rebuild");
  project->add_flag("--rebuild", s.rebuild, "replay the whole log into emptied tables first");
  CLI11_PARSE(app, argc, argv);
  if (*project) return RunProjection(s);
  if (*check) return RunCheck(s);
  return RunDemo(s);
}
