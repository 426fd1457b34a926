// annal_replay_bench: replaying the global log through the client (issue
// #7): how many events per second a projection rebuild reads, into a no-op
// handler and into the bank example's SQLite projection.
//
//   cmake --build build-bench -j2 --target annal_replay_bench
//   ./build-bench/bench/annal_replay_bench [--events 2000000] [--passes 3]
//
// Set-up. A fresh annald (the binary built here, started as the tests start
// it, on a scratch directory below --dir) gets --events events of about
// --event-bytes bytes of JSON each, appended --per-append at a time to
// streams drawn at random from --streams streams, 64 appends in flight.
//
// First one raw ReadAll (below) of the whole log, reported apart: the log
// was written with O_DIRECT, so it reads from the disk, and every case after
// it from the page cache. Cases, each run --passes times; the figure is the
// median pass:
//   runner, slices K   ProjectionRunner with rebuild = true and K slices
//                      (K in --slices) into a handler that only counts,
//                      --batch events per page, timed from Start until it
//                      is live at the head
//   ReadAll            Client::ReadAll page after page on one connection,
//                      no runner
//   ReadAllRange xK    K threads (1, 2, 4), each with its own connection,
//                      reading one slice each with Client::ReadAllRange,
//                      no runner
// Then the parts of one event's way, to see where the time goes:
//   engine             Store::ReadAll in-process on the same log (annald
//                      stopped first), pages of --batch events
//   encode / decode    protocol::AppendFrame and protocol::Decode of an
//                      ALL_EVENTS frame of --batch events of this log
// The rest of a ReadAll (loopback socket, the client's I/O thread, waking
// the caller, one round trip per page) is what is left of its time.
//
// Bank: a second fresh annald gets --bank-events events of the bank example
// (--bank-accounts accounts opened, then credits and debits, 1 to 4 per
// append, debits only when the balance allows) and the balances projection
// replays them into a fresh SQLite file per pass: rebuilding with 1 and 2
// slices (the ledger, folded at the end), and catching up live from
// position 1 without a rebuild (an upsert per event, the checkpoint in each
// batch's transaction). Each pass checks the table against a replay folded
// in memory.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "annal/client.h"
#include "annal/projection.h"
#include "annal/store.h"
#include "annald_process.h"
#include "balances.h"
#include "bank.h"
#include "protocol.h"

namespace {

using annal::GlobalPosition;
using annal::Result;
using annal::Status;
using annal::client::Client;
using annal::client::ClientOptions;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kAppendsInFlight = 64;
constexpr auto kReplayTimeout = std::chrono::minutes(10);

struct Settings {
  uint64_t events = 2'000'000;
  size_t event_bytes = 200;
  uint32_t streams = 10'000;
  uint32_t per_append = 10;
  uint32_t batch = 10'000;
  std::vector<uint32_t> slices = {1, 2, 4};
  uint32_t passes = 3;
  uint64_t bank_events = 200'000;
  uint32_t bank_accounts = 2'000;
  std::string dir = "./annal-bench-data";
  bool keep = false;
};

[[noreturn]] void Die(const Status& s, const std::string& what) {
  std::fprintf(stderr, "annal_replay_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

double Seconds(Clock::time_point from) {
  return std::chrono::duration<double>(Clock::now() - from).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// ~`bytes` bytes of JSON, like a payment event.
std::string Payload(std::mt19937_64& random, size_t bytes) {
  std::string s = R"({"account":"acct-)" + std::to_string(random() % 100'000) + R"(","amount":)" +
                  std::to_string(random() % 1'000'000) +
                  R"(,"currency":"EUR","channel":"card","note":")";
  static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyz ";
  while (s.size() + 2 < bytes) s.push_back(kLetters[random() % 27]);
  return s + "\"}";
}

// Appends asynchronously with a bounded window; Wait returns the first error.
class Appender {
 public:
  explicit Appender(Client& client) : client_(client) {}
  void Append(std::string stream, std::vector<annal::EventData> events) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return in_flight_ < kAppendsInFlight; });
      ++in_flight_;
    }
    client_.AppendAsync(std::move(stream), annal::ExpectedVersion::Any(), std::move(events),
                        [this](Result<annal::AppendResult> r) {
                          std::lock_guard lock(mu_);
                          --in_flight_;
                          if (!r.ok() && error_.ok()) error_ = r.status();
                          cv_.notify_all();
                        });
  }
  Status Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    return error_;
  }

 private:
  Client& client_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint32_t in_flight_ = 0;  // guarded by mu_
  Status error_;            // guarded by mu_
};

void WriteLog(Client& client, const Settings& s) {
  std::mt19937_64 random(7);
  Appender appender(client);
  auto start = Clock::now();
  for (uint64_t written = 0; written < s.events;) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(s.per_append, s.events - written));
    std::vector<annal::EventData> events(n);
    for (auto& e : events) {
      e.type = "PaymentRecorded";
      e.metadata = R"({"source":"replay-bench"})";
      e.payload = Payload(random, s.event_bytes);
    }
    appender.Append("payments-" + std::to_string(random() % s.streams), std::move(events));
    written += n;
  }
  Status st = appender.Wait();
  if (!st.ok()) Die(st, "writing the log");
  std::printf("wrote %" PRIu64 " events in %.1f s\n", s.events, Seconds(start));
}

// Bank traffic: opens, then credits and debits that never overdraw.
void WriteBankLog(Client& client, const Settings& s) {
  using namespace annal::bank;
  std::mt19937_64 random(11);
  Appender appender(client);
  std::vector<int64_t> balance(s.bank_accounts, 0);
  for (uint32_t a = 0; a < s.bank_accounts; ++a)
    appender.Append(AccountStream("b" + std::to_string(a)),
                    {{.type = std::string(kAccountOpened),
                      .payload = OpenedPayload("owner-" + std::to_string(a))}});
  if (Status st = appender.Wait(); !st.ok()) Die(st, "opening accounts");
  uint64_t written = s.bank_accounts;
  while (written < s.bank_events) {
    uint32_t a = static_cast<uint32_t>(random() % s.bank_accounts);
    std::vector<annal::EventData> events;
    for (uint32_t k = 1 + random() % 4; k > 0 && written < s.bank_events; --k, ++written) {
      int64_t amount = 1 + static_cast<int64_t>(random() % 10'000);
      bool debit = random() % 2 == 0 && balance[a] >= amount;
      balance[a] += debit ? -amount : amount;
      events.push_back({.type = std::string(debit ? kAccountDebited : kAccountCredited),
                        .payload = AmountPayload(amount)});
    }
    appender.Append(AccountStream("b" + std::to_string(a)), std::move(events));
  }
  if (Status st = appender.Wait(); !st.ok()) Die(st, "writing bank events");
}

class CountingHandler final : public annal::client::ProjectionHandler {
 public:
  Status Handle(const annal::client::ProjectionBatch& batch) override {
    events_ += batch.events.size();
    return Status::Ok();
  }
  Status Reset() override {
    events_ = 0;
    return Status::Ok();
  }
  uint64_t events() const { return events_; }

 private:
  std::atomic<uint64_t> events_{0};
};

class MemoryKeeper final : public annal::client::CheckpointKeeper {
 public:
  Result<GlobalPosition> Load() override { return position_; }
  Status Save(GlobalPosition p) override {
    position_ = p;
    return Status::Ok();
  }
  Status Reset() override {
    position_ = GlobalPosition(0);
    return Status::Ok();
  }

 private:
  GlobalPosition position_;
};

GlobalPosition Head(Client& client) {
  auto h = client.ReadHead();
  if (!h.ok()) Die(h.status(), "READ_HEAD");
  return GlobalPosition(h->durable_head);
}

// Runs a projection from Start until it is live at the head; returns seconds.
double TimeRunner(const ClientOptions& o, annal::client::ProjectionOptions po,
                  annal::client::ProjectionHandler* h, annal::client::CheckpointKeeper* k,
                  GlobalPosition head) {
  po.progress = false;
  auto start = Clock::now();
  auto runner = annal::client::ProjectionRunner::Start(o, po, h, k);
  if (!runner.ok()) Die(runner.status(), "starting the runner");
  if (!(*runner)->WaitFor(head, kReplayTimeout))
    Die((*runner)->Stop(), "the runner did not reach the head");
  double seconds = Seconds(start);
  Status st = (*runner)->Stop();
  if (!st.ok()) Die(st, "the runner");
  return seconds;
}

// Reads [first, last] page by page; returns the events read.
uint64_t ReadRange(Client& c, GlobalPosition first, GlobalPosition last, uint32_t batch,
                   bool range) {
  uint64_t events = 0;
  for (GlobalPosition from = first; from <= last;) {
    auto page = range ? c.ReadAllRange(from, last, batch) : c.ReadAll(from, batch);
    if (!page.ok()) Die(page.status(), "reading the log");
    if (page->next_position <= from) break;
    events += page->events.size();
    from = page->next_position;
  }
  return events;
}

double TimeRawReads(const ClientOptions& o, GlobalPosition head, uint32_t threads, uint32_t batch,
                    bool range) {
  std::vector<std::unique_ptr<Client>> clients;
  for (uint32_t t = 0; t < threads; ++t) {
    auto c = Client::Connect(o);
    if (!c.ok()) Die(c.status(), "connecting");
    clients.push_back(std::move(*c));
  }
  std::atomic<uint64_t> events{0};
  auto start = Clock::now();
  std::vector<std::thread> workers;
  uint64_t per = head.get() / threads;
  for (uint32_t t = 0; t < threads; ++t) {
    GlobalPosition first(1 + t * per), last(t + 1 == threads ? head.get() : (t + 1) * per);
    workers.emplace_back(
        [&, t, first, last] { events += ReadRange(*clients[t], first, last, batch, range); });
  }
  for (auto& w : workers) w.join();
  double seconds = Seconds(start);
  if (events != head.get())
    Die(Status::Unavailable(std::to_string(events.load()) + " events read"), "raw read");
  return seconds;
}

void Report(const char* what, uint64_t events, const std::vector<double>& seconds) {
  double median = Median(seconds);
  std::printf("  %-34s %9.0f events/s  (median %.3f s; passes:", what,
              static_cast<double>(events) / median, median);
  for (double s : seconds) std::printf(" %.3f", s);
  std::printf(")\n");
  std::fflush(stdout);
}

void ReplayNoop(const ClientOptions& o, const Settings& s, GlobalPosition head) {
  std::printf("replay of %" PRIu64 " events, %u per page:\n", head.get(), s.batch);
  for (uint32_t k : s.slices) {
    std::vector<double> seconds;
    for (uint32_t p = 0; p < s.passes; ++p) {
      CountingHandler h;
      MemoryKeeper keeper;
      annal::client::ProjectionOptions po{
          .name = "noop", .batch_events = s.batch, .rebuild = true, .slices = k};
      seconds.push_back(TimeRunner(o, po, &h, &keeper, head));
      if (h.events() != head.get())
        Die(Status::Unavailable(std::to_string(h.events()) + " events"), "runner");
    }
    Report(("runner, slices " + std::to_string(k)).c_str(), head.get(), seconds);
  }
  {
    std::vector<double> seconds;
    for (uint32_t p = 0; p < s.passes; ++p)
      seconds.push_back(TimeRawReads(o, head, 1, s.batch, false));
    Report("raw ReadAll, 1 connection", head.get(), seconds);
  }
  for (uint32_t threads : std::vector<uint32_t>{1, 2, 4}) {
    std::vector<double> seconds;
    for (uint32_t p = 0; p < s.passes; ++p)
      seconds.push_back(TimeRawReads(o, head, threads, s.batch, true));
    Report(("raw ReadAllRange x" + std::to_string(threads)).c_str(), head.get(), seconds);
  }
}

// Engine, encode and decode costs per event, in-process on the stopped log.
void Breakdown(const std::string& data_dir, const Settings& s, double raw_read_s, uint64_t events) {
  annal::Options options;
  options.log = [](const std::string&) {};
  auto store = annal::Store::Open(data_dir, options);
  if (!store.ok()) Die(store.status(), "opening the log in-process");
  std::vector<double> engine_s;
  std::vector<annal::RecordedEvent> sample;
  for (uint32_t p = 0; p < s.passes; ++p) {
    auto start = Clock::now();
    uint64_t n = 0;
    for (GlobalPosition from(1);;) {
      auto page = (*store)->ReadAll(from, s.batch);
      if (!page.ok()) Die(page.status(), "Store::ReadAll");
      if (page->empty()) break;
      n += page->size();
      from = page->back().position + 1;
      if (sample.empty()) sample = *page;
    }
    engine_s.push_back(Seconds(start));
    if (n != events) Die(Status::Unavailable(std::to_string(n) + " events"), "Store::ReadAll");
  }
  annal::protocol::AllEventsResponse resp;
  resp.events = sample;
  resp.next_position = sample.back().position.get() + 1;
  std::string frame;
  std::vector<double> encode_s, decode_s;
  const uint64_t rounds = std::max<uint64_t>(1, events / sample.size());
  for (uint32_t p = 0; p < s.passes; ++p) {
    auto start = Clock::now();
    for (uint64_t r = 0; r < rounds; ++r) {
      frame.clear();
      annal::protocol::AppendFrame(&frame, annal::protocol::Op::kAllEvents, 1, resp);
    }
    encode_s.push_back(Seconds(start) / static_cast<double>(rounds * sample.size()));
    std::string_view body(frame);
    body.remove_prefix(annal::protocol::kFrameHeaderBytes);
    start = Clock::now();
    for (uint64_t r = 0; r < rounds; ++r) {
      annal::protocol::AllEventsResponse decoded;
      Status st = annal::protocol::Decode(body, &decoded);
      if (!st.ok()) Die(st, "decode");
    }
    decode_s.push_back(Seconds(start) / static_cast<double>(rounds * sample.size()));
  }
  double engine_ns = Median(engine_s) / static_cast<double>(events) * 1e9;
  double encode_ns = Median(encode_s) * 1e9, decode_ns = Median(decode_s) * 1e9;
  double raw_ns = raw_read_s / static_cast<double>(events) * 1e9;
  std::printf("where a raw ReadAll's time goes, per event (median of %u):\n", s.passes);
  std::printf("  %-44s %7.0f ns  (%.0f events/s)\n", "engine: Store::ReadAll in-process", engine_ns,
              1e9 / engine_ns);
  std::printf("  %-44s %7.0f ns\n", "server: encode ALL_EVENTS", encode_ns);
  std::printf("  %-44s %7.0f ns\n", "client: decode ALL_EVENTS", decode_ns);
  std::printf("  %-44s %7.0f ns\n", "rest: socket, threads, round trips",
              raw_ns - engine_ns - encode_ns - decode_ns);
  std::printf("  %-44s %7.0f ns  (%.0f events/s)\n", "raw ReadAll over loopback, in all", raw_ns,
              1e9 / raw_ns);
  std::printf("  frame of %zu events: %zu bytes (%.0f per event)\n", sample.size(), frame.size(),
              static_cast<double>(frame.size()) / static_cast<double>(sample.size()));
}

void ReplayBank(const ClientOptions& o, Client& client, const Settings& s,
                const std::filesystem::path& dir) {
  using namespace annal::bank;
  GlobalPosition head = Head(client);
  auto expected = ReplayBalances(client);
  if (!expected.ok()) Die(expected.status(), "replaying the bank log in memory");
  std::printf("bank: %" PRIu64
              " events, %u accounts, into SQLite (WAL, synchronous=NORMAL), %u per batch:\n",
              head.get(), s.bank_accounts, s.batch);
  struct Mode {
    const char* name;
    uint32_t slices;
    bool rebuild;
  };
  for (Mode m :
       {Mode{"SQLite rebuild, slices 1", 1, true}, Mode{"SQLite rebuild, slices 2", 2, true},
        Mode{"SQLite live catch-up (upserts)", 1, false}}) {
    std::vector<double> seconds;
    for (uint32_t p = 0; p < s.passes; ++p) {
      std::filesystem::path file = dir / "balances.db";
      for (const char* suffix : {"", "-wal", "-shm"})
        std::filesystem::remove(file.string() + suffix);
      auto store = BalanceStore::OpenSqlite(file.string());
      if (!store.ok()) Die(store.status(), "opening SQLite");
      BalanceProjection handler(store->get());
      BalanceCheckpoint keeper(store->get());
      annal::client::ProjectionOptions po = ProjectionOptionsFor("bench", m.slices, m.rebuild);
      po.batch_events = s.batch;
      seconds.push_back(TimeRunner(o, po, &handler, &keeper, head));
      auto table = (*store)->ReadBalances();
      if (!table.ok()) Die(table.status(), "reading account_balances");
      if (*table != *expected)
        Die(Status::Corruption("account_balances differs from the replay"), m.name);
    }
    Report(m.name, head.get(), seconds);
  }
}

std::unique_ptr<annal::testing::AnnaldProcess> StartAnnald(const std::string& dir) {
  auto server = annal::testing::AnnaldProcess::Start(dir);
  if (!server.ok()) Die(server.status(), "starting annald");
  return std::move(*server);
}

std::unique_ptr<Client> Connect(const ClientOptions& o) {
  auto c = Client::Connect(o);
  if (!c.ok()) Die(c.status(), "connecting");
  return std::move(*c);
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app{"annal_replay_bench: replay of the global log through the client (issue #7)"};
  app.add_option("--events", s.events, "events in the log")->check(CLI::PositiveNumber);
  app.add_option("--event-bytes", s.event_bytes, "payload bytes per event");
  app.add_option("--streams", s.streams, "streams the events are spread over")
      ->check(CLI::PositiveNumber);
  app.add_option("--per-append", s.per_append, "events per append")->check(CLI::PositiveNumber);
  app.add_option("--batch", s.batch, "events per page / handler batch")
      ->check(CLI::Range(1u, 100'000u));
  app.add_option("--slices", s.slices, "slice counts for the runner");
  app.add_option("--passes", s.passes, "passes per case (the median is reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--bank-events", s.bank_events, "bank events for the SQLite replay (0: skip)");
  app.add_option("--bank-accounts", s.bank_accounts, "bank accounts")->check(CLI::PositiveNumber);
  app.add_option("--dir", s.dir, "scratch directory root");
  app.add_flag("--keep", s.keep, "keep the data afterwards");
  CLI11_PARSE(app, argc, argv);

  std::filesystem::path root = std::filesystem::absolute(s.dir) / "replay";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root);
  {
    auto server = StartAnnald((root / "log").string());
    ClientOptions o{.port = server->port(), .client_name = "replay-bench"};
    auto client = Connect(o);
    WriteLog(*client, s);
    GlobalPosition head = Head(*client);
    // The log was written with O_DIRECT, so the first read goes to the disk;
    // every case after it reads from the page cache.
    Report("first raw ReadAll (cold)", head.get(), {TimeRawReads(o, head, 1, s.batch, false)});
    ReplayNoop(o, s, head);
    std::vector<double> raw;
    for (uint32_t p = 0; p < s.passes; ++p) raw.push_back(TimeRawReads(o, head, 1, s.batch, false));
    client.reset();
    if (!server->Stop()) Die(Status::Unavailable("annald did not stop cleanly"), "stopping annald");
    Breakdown((root / "log").string(), s, Median(raw), head.get());
  }
  if (s.bank_events > 0) {
    auto server = StartAnnald((root / "bank").string());
    ClientOptions o{.port = server->port(), .client_name = "replay-bench"};
    auto client = Connect(o);
    WriteBankLog(*client, s);
    ReplayBank(o, *client, s, root);
  }
  if (!s.keep) std::filesystem::remove_all(root);
  return 0;
}
