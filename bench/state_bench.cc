// annal_state_bench: how long loading a stream's state takes (issue #5),
// with the snapshot engine and without it, in-process and over loopback.
//
//   cmake --build build-bench -j2 --target annal_state_bench
//   ./build-bench/bench/annal_state_bench --json state.json
//
// Set-up. A fresh store in a scratch directory (made below --dir and removed
// at the end unless --keep) gets the measured stream "acct-bench" with
// --events events, and --other-events events spread at random over
// --other-streams other streams of the same category. The streams are
// written interleaved, in appends of 1 to 4 events with 32 appends in
// flight, so the measured stream's events lie scattered through the log (one
// in a hundred with the defaults: 1,000,000 events in all, about 590 MB,
// written in about 15 s on the machine of docs/benchmarks.md) as an
// entity's events do in a real store.
// Every payload is a JSON merge patch of an account document of about
// --event-bytes bytes (AccountEvent). The category "acct" folds with the
// built-in json-merge-patch reducer; the state engine snapshots every
// --snapshot-every events in the background, keeping the newest 3 and, of
// older ones, one per --keep-sparse * every versions (SnapshotPolicy; the
// default, the engine's, 1, keeps them all), and the run waits until its
// snapshot taker has seen the whole log.
//
// Cases. Each loads the state of acct-bench one load after another from one
// thread, after a warm-up, at targets drawn from a seeded generator, so that
// every configuration loads the same targets:
//   head        the stream's last version (a snapshot version when --events
//               is a multiple of --snapshot-every, as with the defaults)
//   head-1      the version before it: as costly as a head load on a stream
//               whose head is every - 1 events past its newest snapshot, the
//               worst case of a head load
//   as-of T     T uniform between the stream's first and last recorded_at
//   version V   V uniform in [0, head]
// in-process (StateEngine::Load), with snapshots and through a second state
// engine on the same store without a snapshot store (every load replays
// from version 0); then over loopback (Client::LoadState, one connection,
// one request at a time) against an annal::server::Server started in this
// process on port 0 with the same store, configured as annald is with
// `--reducer acct=json-merge-patch`, once with the snapshot store and once
// without. The server owns its store, so the in-process engines and the
// store are closed before it starts. Loads that replay are slow, so those
// cases run --replay-iterations loads rather than --iterations.
//
// The log was written with O_DIRECT; the first replay (part of the warm-up)
// reads the whole stream once, so every case measures loads from the page
// cache, as for an entity in use.
//
// Every configuration must give the same answer (version, recorded_at and
// state bytes) for the same target as the first one (in-process with
// snapshots); a difference fails the run.
//
// Explanations. For the in-process loads with snapshots, --explain loads of
// each case are taken apart, in three passes so that each part meets caches
// as cold as the load did: the same loads again, then the log reads the
// engine does for them (ReadStream from the snapshot's next version to the
// version before the next snapshot recorded after the target, or to the
// target version) and the fold of those events (one ApplyAll per chunk, as
// the engine folds), timed separately; the rest is the engine's fixed cost
// (stream info, the snapshot store's lookups, checking and copying the
// snapshot). Also: the fold cost per event over the whole stream, and a
// one-event ReadStream at random versions, which walks back-pointers from
// the nearest index anchor at or above it (the hops in the log).
//
// Output: a table (microseconds) and, with --json FILE, the same figures.
#include <signal.h>
#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "annal/assert.h"
#include "annal/client.h"
#include "annal/state.h"
#include "annal/stats.h"
#include "annal/status.h"
#include "annal/store.h"
#include "annal/types.h"
#include "bench_util.h"
#include "config.h"
#include "histogram.h"
#include "server.h"

namespace annal::bench {
namespace {

using loadgen::LatencyHistogram;
using Json = nlohmann::json;

constexpr char kStream[] = "acct-bench";
constexpr char kCategory[] = "acct";
constexpr uint32_t kMaxEventsPerAppend = 4;
constexpr int kAppendsInFlight = 32;
// The engine reads the log in chunks of this many events (kLoadChunk in
// state_engine.cc); the explanation reads the same way.
constexpr uint64_t kReadChunk = 1024;
constexpr std::chrono::minutes kTakerTimeout{5};

struct Settings {
  std::string dir = ".";
  bool keep = false;
  uint64_t events = 10'000;
  uint32_t other_streams = 99;
  uint64_t other_events = 990'000;
  size_t event_bytes = 500;
  uint32_t snapshot_every = 100;
  uint32_t keep_sparse = SnapshotPolicy{}.keep_sparse;
  uint32_t iterations = 2000;
  uint32_t replay_iterations = 100;
  uint32_t warmup = 100;
  uint32_t explain = 200;
  uint64_t seed = 1;
  bool loopback = true;
  bool verbose = false;
  std::string json_path;
};

// ---------------------------------------------------------------------------
// The data: events of bank accounts, each a JSON merge patch.

std::string Letters(std::mt19937_64& rng, size_t n) {
  static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyz     ";
  std::string s(n, ' ');
  for (char& c : s) c = kLetters[rng() % (sizeof(kLetters) - 1)];
  return s;
}

// One event in an account's life, as a merge patch of its document. The
// first sets the owner; every one replaces "balance_cents", "updated_at" and
// "last_txn", whose free-text memo pads the payload to its size (uniform
// within 10 % of `bytes`); about half also set, replace or delete (null)
// one of address, limits, note, flags or tags. The document stays between a
// few hundred bytes and about 1 KB.
EventData AccountEvent(std::mt19937_64& rng, uint64_t version, size_t bytes) {
  Json patch;
  std::string type;
  if (version == 0) {
    type = "AccountOpened";
    patch["owner"] = {{"name", Letters(rng, 16)},
                      {"customer_id", "cust-" + std::to_string(rng() % 1'000'000)}};
    patch["currency"] = "EUR";
  }
  bool deposit = rng() % 2 == 0;
  if (type.empty()) type = deposit ? "Deposited" : "Withdrawn";
  patch["balance_cents"] = static_cast<int64_t>(rng() % 10'000'000);
  patch["updated_at"] =
      FormatTimestamp(static_cast<int64_t>(rng() % 2'000'000'000) * 1'000'000'000);
  patch["last_txn"] = {{"id", "txn-" + std::to_string(rng())},
                       {"kind", deposit ? "deposit" : "withdrawal"},
                       {"amount_cents", static_cast<int64_t>(rng() % 100'000)},
                       {"counterparty", "IBAN DE" + std::to_string(rng() % 1'000'000'000'000)},
                       {"memo", ""}};
  switch (rng() % 10) {
    case 0:
      type = "AddressChanged";
      patch["address"] = {{"street", Letters(rng, 24)},
                          {"city", Letters(rng, 12)},
                          {"postcode", std::to_string(10'000 + rng() % 90'000)},
                          {"country", "DE"}};
      break;
    case 1:
      type = "LimitsChanged";
      patch["limits"] = {{"daily_cents", static_cast<int64_t>(rng() % 1'000'000)},
                         {"monthly_cents", static_cast<int64_t>(rng() % 10'000'000)},
                         {"overdraft_cents", static_cast<int64_t>(rng() % 100'000)}};
      break;
    case 2:
      type = "NoteAdded";
      patch["note"] = Letters(rng, 40 + rng() % 60);
      break;
    case 3:
      type = "NoteRemoved";
      patch["note"] = nullptr;
      break;
    case 4:
      type = rng() % 2 == 0 ? "Frozen" : "Unfrozen";
      patch["flags"] = type == "Frozen" ? Json{{"frozen", true}, {"reason", Letters(rng, 20)}}
                                        : Json{{"frozen", nullptr}, {"reason", nullptr}};
      break;
    case 5:
      type = "Tagged";
      patch["tags"] = {Letters(rng, 8), Letters(rng, 10), Letters(rng, 6)};
      break;
    default:
      break;
  }
  size_t size = bytes - bytes / 10 + rng() % (bytes / 5 + 1);
  size_t without_memo = patch.dump().size();
  if (without_memo < size) patch["last_txn"]["memo"] = Letters(rng, size - without_memo);
  return EventData{.type = type, .payload = patch.dump()};
}

// ---------------------------------------------------------------------------
// Set-up.

struct SetupReport {
  uint64_t appends = 0;
  uint64_t events_written = 0;
  double write_s = 0;
  double taker_wait_s = 0;
  uint64_t log_bytes = 0;  // written to the log (its files are preallocated)
  uint64_t snapshot_db_bytes = 0;
  uint64_t snapshots_kept = 0;  // of the measured stream
  uint64_t snapshots_written = 0;
  double stream_span_s = 0;  // last minus first recorded_at of the measured stream
  size_t head_state_bytes = 0;
  uint64_t median_state_bytes = 0;  // over the kept snapshots of the measured stream
  uint64_t max_state_bytes = 0;
};

// At most kAppendsInFlight appends outstanding; the first error is kept.
// Acquire and Drain run on the writing thread, Release on engine threads.
class AppendWindow {
 public:
  void Acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ < kAppendsInFlight; });
    ++in_flight_;
  }
  // Notifies under the lock: once Drain has returned, the window may be
  // gone, so the last Release must not touch it after unlocking.
  void Release(const Status& s) {
    std::lock_guard lock(mu_);
    --in_flight_;
    if (!s.ok() && error_.ok()) error_ = s;
    cv_.notify_all();
  }
  Status Drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
    return error_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;  // guarded by mu_
  Status error_;       // guarded by mu_
};

std::string OtherStream(uint32_t i) {
  char name[32];
  std::snprintf(name, sizeof name, "%s-%04u", kCategory, i);
  return name;
}

// Writes the measured stream and the others, interleaved at random: each
// append goes to the measured stream with the probability of its share of
// the events still to write.
Status WriteLog(Store& store, const Settings& s, SetupReport* report) {
  std::mt19937_64 rng(s.seed);
  std::map<std::string, uint64_t> next_version;
  uint64_t main_left = s.events, other_left = s.other_streams == 0 ? 0 : s.other_events;
  AppendWindow window;
  Clock::time_point start = Clock::now();
  while (main_left + other_left > 0) {
    bool main = rng() % (main_left + other_left) < main_left;
    uint64_t& left = main ? main_left : other_left;
    uint64_t n = std::min<uint64_t>(left, 1 + rng() % kMaxEventsPerAppend);
    left -= n;
    std::string stream =
        main ? kStream : OtherStream(static_cast<uint32_t>(rng() % s.other_streams));
    std::vector<EventData> events;
    for (uint64_t i = 0; i < n; ++i)
      events.push_back(AccountEvent(rng, next_version[stream]++, s.event_bytes));
    window.Acquire();
    store.AppendAsync(stream, ExpectedVersion::Any(), std::move(events),
                      [&window](Result<AppendResult> r) { window.Release(r.status()); });
    ++report->appends;
    report->events_written += n;
  }
  ANNAL_RETURN_IF_ERROR(window.Drain());
  report->write_s = static_cast<double>(ElapsedNs(start, Clock::now())) / 1e9;
  return Status::Ok();
}

// The snapshot store's size: its database file and write-ahead log.
uint64_t SnapshotStoreBytes(const std::filesystem::path& path) {
  uint64_t total = 0;
  for (const std::string suffix : {"", "-wal"}) {
    std::error_code ec;
    uint64_t size = std::filesystem::file_size(path.string() + suffix, ec);
    if (!ec) total += size;
  }
  return total;
}

// ---------------------------------------------------------------------------
// Targets, answers and measurement.

enum class Kind { kHead, kHeadMinus1, kAsOf, kVersion };
constexpr Kind kKinds[] = {Kind::kHead, Kind::kHeadMinus1, Kind::kAsOf, Kind::kVersion};

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kHead:
      return "head";
    case Kind::kHeadMinus1:
      return "head-1";
    case Kind::kAsOf:
      return "as-of T";
    case Kind::kVersion:
      return "version V";
  }
  return "?";
}

// The targets of one kind: `warmup` first, then the measured ones.
struct TargetList {
  std::vector<StateTarget> warmup;
  std::vector<StateTarget> measured;
};

TargetList MakeTargets(Kind kind, const StreamInfo& info, const Settings& s, std::mt19937_64& rng) {
  uint64_t head = info.head_version.get();
  ANNAL_ASSERT(head >= 1);
  auto one = [&]() -> StateTarget {
    switch (kind) {
      case Kind::kHead:
        return StateTarget::Head();
      case Kind::kHeadMinus1:
        return StateTarget::Version(head - 1);
      case Kind::kAsOf: {
        std::uniform_int_distribution<int64_t> t(info.first_recorded_at_ns,
                                                 info.last_recorded_at_ns);
        return StateTarget::AsOf(t(rng));
      }
      case Kind::kVersion:
        return StateTarget::Version(std::uniform_int_distribution<uint64_t>(0, head)(rng));
    }
    return StateTarget::Head();
  };
  TargetList list;
  for (uint32_t i = 0; i < s.warmup; ++i) list.warmup.push_back(one());
  for (uint32_t i = 0; i < s.iterations; ++i) list.measured.push_back(one());
  return list;
}

// What a load answered, to compare configurations.
struct Answer {
  uint64_t version = 0;
  int64_t recorded_at_ns = 0;
  size_t state_hash = 0;
  bool operator==(const Answer&) const = default;
};

Answer AnswerOf(const State& s) {
  return {s.version.get(), s.recorded_at_ns, std::hash<std::string>{}(s.state)};
}

struct CaseResult {
  std::string where;  // "in-process" or "loopback"
  Kind kind = Kind::kHead;
  bool snapshots = false;
  LatencyHistogram latency;
  std::vector<uint64_t> latency_ns;  // per load, in order
  std::vector<uint64_t> folded;      // events folded per load, in order
  std::vector<Answer> answers;
};

using LoadFn = std::function<Result<State>(const StateTarget&)>;

// Runs `warmup` loads, then `n` measured ones of `targets`. `expected`
// (may be null) holds the first configuration's answers: every answer
// must match it.
Status Measure(const LoadFn& load, const TargetList& targets, uint32_t warmup, uint32_t n,
               const std::vector<Answer>* expected, CaseResult* out) {
  ANNAL_ASSERT(warmup <= targets.warmup.size() && n <= targets.measured.size());
  for (uint32_t i = 0; i < warmup; ++i) ANNAL_RETURN_IF_ERROR(load(targets.warmup[i]).status());
  for (uint32_t i = 0; i < n; ++i) {
    Clock::time_point start = Clock::now();
    Result<State> state = load(targets.measured[i]);
    int64_t ns = ElapsedNs(start, Clock::now());
    if (!state.ok()) return state.status().WithContext("loading " + targets.measured[i].ToString());
    out->latency.Record(static_cast<uint64_t>(ns));
    out->latency_ns.push_back(static_cast<uint64_t>(ns));
    out->folded.push_back(state->events_folded);
    out->answers.push_back(AnswerOf(*state));
    if (expected != nullptr && (*expected)[i] != out->answers.back())
      return Status::Corruption(out->where + (out->snapshots ? " with" : " without") +
                                " snapshots, " + KindName(out->kind) + ", " +
                                targets.measured[i].ToString() + ": the answer (version " +
                                std::to_string(state->version.get()) +
                                ") differs from the in-process answer with snapshots (version " +
                                std::to_string((*expected)[i].version) + ")");
  }
  return Status::Ok();
}

uint64_t Median(std::vector<uint64_t> v) {
  if (v.empty()) return 0;
  auto mid = v.begin() + static_cast<ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

// Least-squares fit latency_us = fixed_us + per_event_us * folded; nullopt
// when every load folded the same number of events.
struct Fit {
  double fixed_us = 0;
  double per_event_us = 0;
};
std::optional<Fit> FitLatency(const CaseResult& r) {
  double n = static_cast<double>(r.folded.size()), sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < r.folded.size(); ++i) {
    double x = static_cast<double>(r.folded[i]), y = static_cast<double>(r.latency_ns[i]) / 1e3;
    sx += x, sy += y, sxx += x * x, sxy += x * y;
  }
  double d = n * sxx - sx * sx;
  if (n < 2 || d <= 0) return std::nullopt;
  double slope = (n * sxy - sx * sy) / d;
  return Fit{(sy - slope * sx) / n, slope};
}

// ---------------------------------------------------------------------------
// Explanations: where the time of an in-process load with snapshots goes.

// Folds `events` into *state as a load does: one ApplyAll call per chunk of
// up to kReadChunk events (state_engine.cc), so the state is decoded and
// encoded once per chunk.
Status FoldLikeALoad(const Reducer& reducer, std::string* state,
                     std::span<const RecordedEvent> events) {
  for (size_t at = 0; at < events.size(); at += kReadChunk) {
    std::span<const RecordedEvent> chunk =
        events.subspan(at, std::min<size_t>(kReadChunk, events.size() - at));
    size_t applied = 0;
    ANNAL_RETURN_IF_ERROR(reducer.ApplyAll(state, chunk, &applied));
    ANNAL_ASSERT(applied == chunk.size());
  }
  return Status::Ok();
}

struct Breakdown {
  Kind kind = Kind::kHead;
  LatencyHistogram total, read, fold, rest;
  std::vector<uint64_t> events_read, events_folded;
};

// The versions of the measured stream's kept snapshots, with their times.
struct Kept {
  uint64_t version;
  int64_t recorded_at_ns;
};

// The last version the engine read for the load of `target` that answered
// `loaded` (see Walk in state_engine.cc): the version answered when the
// target is exact, else the version before the first snapshot recorded
// after T, or the head when there is none.
uint64_t ReadEnd(const StateTarget& target, const State& loaded, uint64_t head,
                 const std::vector<Kept>& kept) {
  if (target.kind != StateTarget::Kind::kTime) return loaded.version.get();
  uint64_t end = head;
  for (const Kept& k : kept)
    if (k.recorded_at_ns > target.time_ns && k.version > 0) end = std::min(end, k.version - 1);
  return end;
}

// One load taken apart in three passes over all of a case's targets (the
// loads, then the reads, then the folds), so that each part finds the CPU
// caches as cold as the load itself did: reading a load's events right
// after the load would find them warm.
struct Parts {
  StateTarget target;
  State loaded;
  std::string base;            // the state the engine started from
  uint64_t from = 0, end = 0;  // the versions the engine reads
  std::vector<RecordedEvent> events;
  int64_t total_ns = 0, read_ns = 0, fold_ns = 0;
};

Status TimeLoad(StateEngine& engine, uint64_t head, const std::vector<Kept>& kept, Parts* p) {
  Clock::time_point t0 = Clock::now();
  ANNAL_ASSIGN_OR_RETURN(p->loaded, engine.Load(kStream, p->target));
  p->total_ns = ElapsedNs(t0, Clock::now());
  // The state the engine started from: the snapshot's (a load at a
  // snapshot version folds nothing), or the reducer's initial state.
  p->base = JsonMergePatchReducer()->Initial();
  if (p->loaded.snapshot_version.has_value()) {
    ANNAL_ASSIGN_OR_RETURN(
        State base, engine.Load(kStream, StateTarget::Version(p->loaded.snapshot_version->get())));
    ANNAL_ASSERT(base.events_folded == 0);
    p->base = std::move(base.state);
    p->from = p->loaded.snapshot_version->get() + 1;
  }
  p->end = ReadEnd(p->target, p->loaded, head, kept);
  return Status::Ok();
}

Status TimeRead(Store& store, Parts* p) {
  Clock::time_point t0 = Clock::now();
  for (uint64_t v = p->from; v <= p->end; v += kReadChunk) {
    ANNAL_ASSIGN_OR_RETURN(auto chunk,
                           store.ReadStream(kStream, StreamVersion(v), ReadDirection::kForward,
                                            std::min(kReadChunk, p->end - v + 1)));
    std::move(chunk.begin(), chunk.end(), std::back_inserter(p->events));
  }
  p->read_ns = ElapsedNs(t0, Clock::now());
  return Status::Ok();
}

// The events past the target (a time target's are read up to the next
// snapshot) are not folded.
Status TimeFold(Parts* p) {
  auto past = std::find_if(p->events.begin(), p->events.end(),
                           [&](const RecordedEvent& e) { return e.version > p->loaded.version; });
  size_t folded = static_cast<size_t>(past - p->events.begin());
  std::string state = std::move(p->base);
  Clock::time_point t0 = Clock::now();
  ANNAL_RETURN_IF_ERROR(
      FoldLikeALoad(*JsonMergePatchReducer(), &state, std::span(p->events.data(), folded)));
  p->fold_ns = ElapsedNs(t0, Clock::now());
  ANNAL_ASSERT(folded == p->loaded.events_folded);
  ANNAL_ASSERT(state == p->loaded.state);
  return Status::Ok();
}

Status ExplainCase(StateEngine& engine, Store& store, const std::vector<StateTarget>& targets,
                   uint64_t head, const std::vector<Kept>& kept, Breakdown* out) {
  std::vector<Parts> parts(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    parts[i].target = targets[i];
    ANNAL_RETURN_IF_ERROR(TimeLoad(engine, head, kept, &parts[i]));
  }
  for (Parts& p : parts) ANNAL_RETURN_IF_ERROR(TimeRead(store, &p));
  for (Parts& p : parts) ANNAL_RETURN_IF_ERROR(TimeFold(&p));
  for (const Parts& p : parts) {
    out->total.Record(static_cast<uint64_t>(p.total_ns));
    out->read.Record(static_cast<uint64_t>(p.read_ns));
    out->fold.Record(static_cast<uint64_t>(p.fold_ns));
    out->rest.Record(
        static_cast<uint64_t>(std::max<int64_t>(0, p.total_ns - p.read_ns - p.fold_ns)));
    out->events_read.push_back(p.events.size());
    out->events_folded.push_back(p.loaded.events_folded);
  }
  return Status::Ok();
}

struct Probes {
  double fold_chunked_ns_per_event = 0;  // ApplyAll over chunks, as a load folds
  double fold_single_ns_per_event = 0;   // Apply per event
  LatencyHistogram read_one_random, read_one_head;
};

// Folds the whole stream in memory twice, as a load does (a chunk per
// ApplyAll call) and one event per call, and times one-event reads at random
// versions and at the head.
Status Probe(Store& store, uint64_t head, const Settings& s, std::mt19937_64& rng, Probes* out) {
  std::vector<RecordedEvent> events;
  for (uint64_t v = 0; v <= head; v += kReadChunk) {
    ANNAL_ASSIGN_OR_RETURN(auto chunk, store.ReadStream(kStream, StreamVersion(v),
                                                        ReadDirection::kForward, kReadChunk));
    std::move(chunk.begin(), chunk.end(), std::back_inserter(events));
  }
  ANNAL_ASSERT(events.size() == head + 1);
  const auto reducer = JsonMergePatchReducer();
  std::string chunked = reducer->Initial(), single = reducer->Initial();
  Clock::time_point t0 = Clock::now();
  ANNAL_RETURN_IF_ERROR(FoldLikeALoad(*reducer, &chunked, events));
  Clock::time_point t1 = Clock::now();
  for (const RecordedEvent& e : events) ANNAL_RETURN_IF_ERROR(reducer->Apply(&single, e));
  Clock::time_point t2 = Clock::now();
  ANNAL_ASSERT(chunked == single);
  double n = static_cast<double>(events.size());
  out->fold_chunked_ns_per_event = static_cast<double>(ElapsedNs(t0, t1)) / n;
  out->fold_single_ns_per_event = static_cast<double>(ElapsedNs(t1, t2)) / n;
  for (uint32_t i = 0; i < s.iterations; ++i) {
    uint64_t v = std::uniform_int_distribution<uint64_t>(0, head)(rng);
    for (auto [version, h] :
         {std::pair{v, &out->read_one_random}, std::pair{head, &out->read_one_head}}) {
      Clock::time_point t = Clock::now();
      ANNAL_ASSIGN_OR_RETURN(
          auto one, store.ReadStream(kStream, StreamVersion(version), ReadDirection::kForward, 1));
      h->Record(static_cast<uint64_t>(ElapsedNs(t, Clock::now())));
      ANNAL_ASSERT(one.size() == 1 && one.front().version.get() == version);
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// The run.

struct Report {
  SetupReport setup;
  std::vector<CaseResult> cases;
  std::vector<Breakdown> breakdowns;
  Probes probes;
};

StateOptions EngineOptions(const Settings& s, const std::filesystem::path& snapshot_path,
                           std::function<void(const std::string&)> log) {
  StateOptions o;
  o.snapshot_path = snapshot_path.string();
  o.reducers[kCategory] = JsonMergePatchReducer();
  o.policy.every = s.snapshot_every;
  o.policy.keep_sparse = s.keep_sparse;
  o.log = std::move(log);
  return o;
}

class Runner {
 public:
  Runner(const Settings& s, std::filesystem::path dir)
      : s_(s), store_dir_(dir / "store"), snapshot_path_(dir / "snapshots.db"), rng_(s.seed + 1) {
    log_ = [verbose = s.verbose](const std::string& line) {
      if (verbose) std::fprintf(stderr, "%s\n", line.c_str());
    };
  }

  Status Run(Report* report) {
    ANNAL_RETURN_IF_ERROR(InProcess(report));
    if (s_.loopback) {
      ANNAL_RETURN_IF_ERROR(Loopback(true, report));
      ANNAL_RETURN_IF_ERROR(Loopback(false, report));
    }
    return Status::Ok();
  }

 private:
  Status InProcess(Report* report) {
    Options options;
    options.log = log_;
    ANNAL_ASSIGN_OR_RETURN(auto store, Store::Open(store_dir_.string(), options));
    ANNAL_ASSIGN_OR_RETURN(auto with,
                           StateEngine::Open(store.get(), EngineOptions(s_, snapshot_path_, log_)));
    ANNAL_RETURN_IF_ERROR(Setup(*store, *with, &report->setup));
    ANNAL_ASSIGN_OR_RETURN(auto without,
                           StateEngine::Open(store.get(), EngineOptions(s_, "", log_)));
    ANNAL_ASSIGN_OR_RETURN(info_, store->GetStreamInfo(kStream));
    for (Kind k : kKinds) targets_[k] = MakeTargets(k, info_, s_, rng_);
    // The warm-up replay reads the whole stream into the page cache.
    ANNAL_ASSIGN_OR_RETURN(State head, without->Load(kStream, StateTarget::Head()));
    report->setup.head_state_bytes = head.state.size();
    for (Kind k : kKinds) {
      ANNAL_RETURN_IF_ERROR(RunCase("in-process", k, true, Loader(*with), report));
      ANNAL_RETURN_IF_ERROR(RunCase("in-process", k, false, Loader(*without), report));
    }
    ANNAL_RETURN_IF_ERROR(Explain(*store, *with, report));
    ANNAL_RETURN_IF_ERROR(Probe(*store, info_.head_version.get(), s_, rng_, &report->probes));
    without->Close();
    with->Close();
    return store->Close();
  }

  Status Setup(Store& store, StateEngine& engine, SetupReport* setup) {
    ANNAL_RETURN_IF_ERROR(WriteLog(store, s_, setup));
    Clock::time_point start = Clock::now();
    if (!engine.WaitForTaker(store.DurableHead(), kTakerTimeout))
      return Status::Unavailable("the snapshot taker did not reach the head in time");
    setup->taker_wait_s = static_cast<double>(ElapsedNs(start, Clock::now())) / 1e9;
    StateStats stats = engine.GetStats();
    if (!stats.snapshot_store_ok || stats.taker_errors > 0)
      return Status::Unavailable(
          "the snapshot store is not usable or the taker failed (run with --verbose)");
    setup->snapshots_written = stats.snapshots_written;
    ANNAL_ASSIGN_OR_RETURN(auto list, engine.ListSnapshots(kStream));
    setup->snapshots_kept = list.size();
    std::vector<uint64_t> sizes;
    for (const Snapshot& k : list) {
      kept_.push_back({k.version.get(), k.recorded_at_ns});
      sizes.push_back(k.state_size);
    }
    if (!sizes.empty()) {
      setup->median_state_bytes = Median(sizes);
      setup->max_state_bytes = *std::max_element(sizes.begin(), sizes.end());
    }
    ANNAL_ASSIGN_OR_RETURN(StreamInfo info, store.GetStreamInfo(kStream));
    setup->stream_span_s =
        static_cast<double>(info.last_recorded_at_ns - info.first_recorded_at_ns) / 1e9;
    for (const PartitionStats& p : store.GetStats().partitions) setup->log_bytes += p.bytes_written;
    setup->snapshot_db_bytes = SnapshotStoreBytes(snapshot_path_);
    return Status::Ok();
  }

  static LoadFn Loader(StateEngine& engine) {
    return [&engine](const StateTarget& t) { return engine.Load(kStream, t); };
  }

  // Measures one case; the first configuration of each kind (in-process
  // with snapshots) sets the answers the others must give.
  Status RunCase(const std::string& where, Kind kind, bool snapshots, const LoadFn& load,
                 Report* report) {
    CaseResult r;
    r.where = where;
    r.kind = kind;
    r.snapshots = snapshots;
    uint32_t n = snapshots ? s_.iterations : std::min(s_.iterations, s_.replay_iterations);
    uint32_t warmup =
        snapshots ? s_.warmup : std::min(s_.warmup, std::max<uint32_t>(1, s_.warmup / 20));
    auto first = answers_.find(kind);
    const std::vector<Answer>* expected = first == answers_.end() ? nullptr : &first->second;
    std::fprintf(stderr, "  %s %s %s snapshots: %u loads\n", where.c_str(), KindName(kind),
                 snapshots ? "with" : "without", n);
    ANNAL_RETURN_IF_ERROR(Measure(load, targets_.at(kind), warmup, n, expected, &r));
    if (expected == nullptr) answers_[kind] = r.answers;
    report->cases.push_back(std::move(r));
    return Status::Ok();
  }

  Status Explain(Store& store, StateEngine& engine, Report* report) {
    for (Kind k : kKinds) {
      Breakdown b;
      b.kind = k;
      const auto& all = targets_.at(k).measured;
      std::vector<StateTarget> targets(all.begin(),
                                       all.begin() + std::min<size_t>(s_.explain, all.size()));
      ANNAL_RETURN_IF_ERROR(
          ExplainCase(engine, store, targets, info_.head_version.get(), kept_, &b));
      report->breakdowns.push_back(std::move(b));
    }
    return Status::Ok();
  }

  // Serves the store as annald would with `--reducer acct=json-merge-patch`
  // (and, without snapshots, with no snapshot store) and loads through the
  // client library.
  Status Loopback(bool snapshots, Report* report) {
    server::ServerConfig config;
    config.data_dir = store_dir_.string();
    config.port = 0;
    config.metrics_port = -1;
    config.snapshot_path = snapshot_path_.string();
    config.snapshot_every = s_.snapshot_every;
    config.snapshot_keep_sparse = s_.keep_sparse;
    config.reducers[kCategory] = server::kJsonMergePatchReducerName;
    ANNAL_ASSIGN_OR_RETURN(StateOptions state, server::MakeStateOptions(config));
    if (!snapshots) state.snapshot_path.clear();
    Options options;
    options.log = log_;
    ANNAL_ASSIGN_OR_RETURN(auto store, Store::Open(store_dir_.string(), options));
    ANNAL_ASSIGN_OR_RETURN(auto srv,
                           server::Server::Start(config, std::move(store), std::move(state), log_));
    client::ClientOptions copts;
    copts.port = srv->port();
    copts.client_name = "annal-state-bench";
    copts.log = log_;
    ANNAL_ASSIGN_OR_RETURN(auto c, client::Client::Connect(copts));
    LoadFn load = [&c](const StateTarget& t) { return c->LoadState(kStream, t); };
    for (Kind k : {Kind::kHead, Kind::kHeadMinus1, Kind::kAsOf})
      ANNAL_RETURN_IF_ERROR(RunCase("loopback", k, snapshots, load, report));
    c.reset();
    return srv->Shutdown();
  }

  const Settings& s_;
  const std::filesystem::path store_dir_;
  const std::filesystem::path snapshot_path_;
  std::mt19937_64 rng_;
  std::function<void(const std::string&)> log_;
  StreamInfo info_;
  std::vector<Kept> kept_;
  std::map<Kind, TargetList> targets_;
  std::map<Kind, std::vector<Answer>> answers_;
};

// ---------------------------------------------------------------------------
// Output.

double Us(uint64_t ns) { return static_cast<double>(ns) / 1e3; }

Json Percentiles(const LatencyHistogram& h) {
  return {{"count", h.count()},
          {"mean_us", h.mean_ns() / 1e3},
          {"p50_us", Us(h.ValueAtPercentile(50))},
          {"p90_us", Us(h.ValueAtPercentile(90))},
          {"p99_us", Us(h.ValueAtPercentile(99))},
          {"p99_9_us", Us(h.ValueAtPercentile(99.9))},
          {"max_us", Us(h.max_ns())}};
}

Json ToJson(const Settings& s, const Report& r) {
  Json j;
  j["settings"] = {{"events", s.events},
                   {"other_streams", s.other_streams},
                   {"other_events", s.other_events},
                   {"event_bytes", s.event_bytes},
                   {"snapshot_every", s.snapshot_every},
                   {"keep_sparse", s.keep_sparse},
                   {"iterations", s.iterations},
                   {"replay_iterations", s.replay_iterations},
                   {"warmup", s.warmup},
                   {"seed", s.seed}};
  const SetupReport& u = r.setup;
  j["setup"] = {{"appends", u.appends},
                {"events_written", u.events_written},
                {"write_s", u.write_s},
                {"taker_wait_s", u.taker_wait_s},
                {"log_bytes", u.log_bytes},
                {"snapshot_db_bytes", u.snapshot_db_bytes},
                {"snapshots_written", u.snapshots_written},
                {"snapshots_kept", u.snapshots_kept},
                {"stream_span_s", u.stream_span_s},
                {"head_state_bytes", u.head_state_bytes},
                {"median_state_bytes", u.median_state_bytes},
                {"max_state_bytes", u.max_state_bytes}};
  for (const CaseResult& c : r.cases) {
    Json k = Percentiles(c.latency);
    k["where"] = c.where;
    k["target"] = KindName(c.kind);
    k["snapshots"] = c.snapshots;
    k["events_folded_median"] = Median(c.folded);
    k["events_folded_max"] =
        c.folded.empty() ? 0 : *std::max_element(c.folded.begin(), c.folded.end());
    if (auto fit = FitLatency(c))
      k["fit"] = {{"fixed_us", fit->fixed_us}, {"per_event_us", fit->per_event_us}};
    j["cases"].push_back(k);
  }
  for (const Breakdown& b : r.breakdowns) {
    j["explain"].push_back({{"target", KindName(b.kind)},
                            {"total", Percentiles(b.total)},
                            {"read", Percentiles(b.read)},
                            {"fold", Percentiles(b.fold)},
                            {"rest", Percentiles(b.rest)},
                            {"events_read_median", Median(b.events_read)},
                            {"events_folded_median", Median(b.events_folded)}});
  }
  j["probes"] = {{"fold_chunked_ns_per_event", r.probes.fold_chunked_ns_per_event},
                 {"fold_single_ns_per_event", r.probes.fold_single_ns_per_event},
                 {"read_one_random_version", Percentiles(r.probes.read_one_random)},
                 {"read_one_head", Percentiles(r.probes.read_one_head)}};
  return j;
}

void PrintRow(const std::string& label, const LatencyHistogram& h, const std::string& extra) {
  std::printf("%-36s %6llu %9.1f %9.1f %9.1f %9.1f %9.1f  %s\n", label.c_str(),
              static_cast<unsigned long long>(h.count()), Us(h.ValueAtPercentile(50)),
              Us(h.ValueAtPercentile(90)), Us(h.ValueAtPercentile(99)),
              Us(h.ValueAtPercentile(99.9)), Us(h.max_ns()), extra.c_str());
}

void PrintHeader(const char* first, const char* last) {
  std::printf("%-36s %6s %9s %9s %9s %9s %9s  %s\n", first, "loads", "p50", "p90", "p99", "p99.9",
              "max", last);
}

void Print(const Settings& s, const Report& r) {
  const SetupReport& u = r.setup;
  std::printf(
      "set-up: %llu events in %llu appends in %.1f s (taker caught up %.1f s later); log %.1f MB, "
      "snapshot store %.1f MB; %llu snapshots taken, %llu of %s kept; %s spans %.2f s; "
      "state at head %zu bytes (over the kept snapshots: median %llu, max %llu)\n",
      static_cast<unsigned long long>(u.events_written), static_cast<unsigned long long>(u.appends),
      u.write_s, u.taker_wait_s, static_cast<double>(u.log_bytes) / 1e6,
      static_cast<double>(u.snapshot_db_bytes) / 1e6,
      static_cast<unsigned long long>(u.snapshots_written),
      static_cast<unsigned long long>(u.snapshots_kept), kStream, kStream, u.stream_span_s,
      u.head_state_bytes, static_cast<unsigned long long>(u.median_state_bytes),
      static_cast<unsigned long long>(u.max_state_bytes));
  std::printf("\nLoads of %s (%llu events, snapshot every %u, keep_sparse %u), microseconds:\n",
              kStream, static_cast<unsigned long long>(s.events), s.snapshot_every, s.keep_sparse);
  PrintHeader("case", "events folded: median / max; fit");
  for (const CaseResult& c : r.cases) {
    std::string label =
        c.where + " " + KindName(c.kind) + (c.snapshots ? ", snapshots" : ", replay");
    uint64_t max_folded =
        c.folded.empty() ? 0 : *std::max_element(c.folded.begin(), c.folded.end());
    char extra[128];
    int at = std::snprintf(extra, sizeof extra, "%llu / %llu",
                           static_cast<unsigned long long>(Median(c.folded)),
                           static_cast<unsigned long long>(max_folded));
    if (auto fit = FitLatency(c))
      std::snprintf(extra + at, sizeof extra - static_cast<size_t>(at), "; %.1f + %.2f/event",
                    fit->fixed_us, fit->per_event_us);
    PrintRow(label, c.latency, extra);
  }
  std::printf("\nWhere an in-process load with snapshots goes (%u loads per case), microseconds:\n",
              s.explain);
  PrintHeader("part", "events: median");
  for (const Breakdown& b : r.breakdowns) {
    std::string k = KindName(b.kind);
    PrintRow(k + ": whole load", b.total, "");
    PrintRow(k + ": log read", b.read, "read " + std::to_string(Median(b.events_read)));
    PrintRow(k + ": fold", b.fold, "folded " + std::to_string(Median(b.events_folded)));
    PrintRow(k + ": rest (lookups, copies)", b.rest, "");
  }
  std::printf(
      "\nProbes: folding the whole stream in memory costs %.2f us per event a chunk at a time (as "
      "loads "
      "do), %.2f us per event one at a time\n",
      r.probes.fold_chunked_ns_per_event / 1e3, r.probes.fold_single_ns_per_event / 1e3);
  PrintHeader("one-event ReadStream", "");
  PrintRow("at a random version", r.probes.read_one_random, "");
  PrintRow("at the head", r.probes.read_one_head, "");
}

// The scratch directory: made below `parent` with a unique name, removed
// (only it) when this goes away unless `keep`.
class ScratchDirectory {
 public:
  static Result<std::unique_ptr<ScratchDirectory>> Make(const std::string& parent, bool keep) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    std::string pattern = (std::filesystem::path(parent) / "annal-state-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) return Status::FromErrno(errno, "mkdtemp " + pattern);
    return std::unique_ptr<ScratchDirectory>(new ScratchDirectory(pattern, keep));
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    if (keep_) {
      std::fprintf(stderr, "kept %s\n", path_.c_str());
    } else {
      std::filesystem::remove_all(path_, ignored);
      SettleFilesystem(path_.parent_path());
    }
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  ScratchDirectory(std::filesystem::path path, bool keep) : path_(std::move(path)), keep_(keep) {}
  std::filesystem::path path_;
  bool keep_;
};

int Main(int argc, char** argv) {
  Settings s;
  CLI::App app{
      "annal_state_bench: state loads with and without snapshots, in-process and over loopback "
      "(issue #5)"};
  app.add_option("--dir", s.dir, "Directory to make the scratch directory in")
      ->capture_default_str();
  app.add_flag("--keep", s.keep, "Keep the scratch directory");
  app.add_option("--events", s.events, "Events of the measured stream")
      ->check(CLI::Range(uint64_t{2}, uint64_t{10'000'000}))
      ->capture_default_str();
  app.add_option("--other-streams", s.other_streams, "Other streams of the category")
      ->check(CLI::Range(0u, 1'000'000u))
      ->capture_default_str();
  app.add_option("--other-events", s.other_events, "Events of the other streams, in all")
      ->check(CLI::Range(uint64_t{0}, uint64_t{100'000'000}))
      ->capture_default_str();
  app.add_option("--event-bytes", s.event_bytes, "Payload bytes per event (within 10 %)")
      ->check(CLI::Range(size_t{400}, size_t{1 << 20}))
      ->capture_default_str();
  app.add_option("--snapshot-every", s.snapshot_every, "Events between snapshots")
      ->check(CLI::Range(1u, 1'000'000u))
      ->capture_default_str();
  app.add_option("--keep-sparse", s.keep_sparse,
                 "Snapshot retention: besides the newest 3, keep one per every * N versions "
                 "(SnapshotPolicy)")
      ->check(CLI::Range(0u, 1'000'000u))
      ->capture_default_str();
  app.add_option("--iterations", s.iterations, "Measured loads per case with snapshots")
      ->check(CLI::Range(1u, 10'000'000u))
      ->capture_default_str();
  app.add_option("--replay-iterations", s.replay_iterations,
                 "Measured loads per case without snapshots")
      ->check(CLI::Range(1u, 10'000'000u))
      ->capture_default_str();
  app.add_option("--warmup", s.warmup,
                 "Warm-up loads per case (a twentieth of it without snapshots)")
      ->check(CLI::Range(1u, 1'000'000u))
      ->capture_default_str();
  app.add_option("--explain", s.explain, "Loads taken apart per case")
      ->check(CLI::Range(0u, 1'000'000u))
      ->capture_default_str();
  app.add_option("--seed", s.seed, "Seed of the data and the targets")->capture_default_str();
  app.add_flag("!--no-loopback", s.loopback, "Skip the loopback cases");
  app.add_flag("--verbose", s.verbose, "Print the engine's and the server's log lines");
  app.add_option("--json", s.json_path, "Write the figures to this file as JSON");
  CLI11_PARSE(app, argc, argv);
  s.explain = std::min(s.explain, s.iterations);

  ::signal(SIGPIPE, SIG_IGN);
  auto dir = ScratchDirectory::Make(s.dir, s.keep);
  if (!dir.ok()) {
    std::fprintf(stderr, "annal_state_bench: %s\n", dir.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "annal_state_bench in %s\n", (*dir)->path().c_str());
  Report report;
  Runner runner(s, (*dir)->path());
  Status st = runner.Run(&report);
  if (!st.ok()) {
    std::fprintf(stderr, "annal_state_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  Print(s, report);
  if (!s.json_path.empty()) {
    std::ofstream out(s.json_path);
    out << ToJson(s, report).dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "annal_state_bench: cannot write %s\n", s.json_path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace annal::bench

int main(int argc, char** argv) { return annal::bench::Main(argc, argv); }
