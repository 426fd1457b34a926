// Crash test of annald: an append the server acknowledged (APPEND_OK) must
// survive a SIGKILL of the server, whatever else was in flight.
//
// AcknowledgedAppendsSurviveSigkillUnderLoad runs rounds against one data
// directory. In each round a real annald (AnnaldProcess) is started on it,
// and 4 connections append pipelined through the raw codec (raw_client.h):
// each connection owns 8 streams and keeps one append of 1..4 events in
// flight on each, with the exact expected version, recording every
// APPEND_OK. Once appends are being acknowledged, the server is SIGKILLed
// after a random delay. The next round restarts annald on the same
// directory and, before appending again, checks through READ_STREAM:
//   - every acknowledged append of every round is there, at the versions
//     and positions its APPEND_OK gave, with the ids, types, metadata and
//     payloads that were sent;
//   - every stream's versions are contiguous from 0, and any event past the
//     last acknowledged one (an append that was durable but unanswered) is
//     exactly the event that was sent for that version;
//   - positions are unique over all streams and rise within each stream;
//   - no event that an earlier check saw is gone.
// The writers then continue from the heads the server reports. A final
// restart checks again and stops annald with SIGTERM, which must exit 0.
//
// Environment: ANNAL_SERVER_CRASH_SEED (default random; failure messages
// name the seed in use).

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "annald_process.h"
#include "protocol.h"
#include "raw_client.h"
#include "test_util.h"

namespace annal::testing {
namespace {

using protocol::Op;
using Clock = std::chrono::steady_clock;

constexpr int kConnections = 4;
constexpr int kStreamsPerConnection = 8;  // one append in flight on each
constexpr int kRounds = 4;                // rounds that end in a SIGKILL
constexpr uint32_t kMaxEventsPerAppend = 4;
constexpr size_t kMaxPadBytes = 1500;
// The kill comes this long after the first APPEND_OK of the round.
constexpr int kKillDelayMinMs = 20;
constexpr int kKillDelayMaxMs = 600;
// Waits that only a broken server would exhaust.
constexpr std::chrono::seconds kFirstAckTimeout{20};
constexpr std::chrono::milliseconds kAnswerTimeout{10'000};
// Bounds a round if the kill comes late, so that checks stay quick.
constexpr uint64_t kMaxAppendsPerConnectionPerRound = 50'000;
// Problems listed one by one before the check stops looking.
constexpr size_t kMaxReportedProblems = 20;

std::string StreamName(int connection, int index) {
  return "crash-" + std::to_string(connection) + "-" + std::to_string(index);
}

// The event written at `version` of `stream`, in whichever round wrote it:
// an append lost in a crash is sent again with the same events.
EventData EventFor(const std::string& stream, uint64_t version) {
  uint64_t h = std::hash<std::string>{}(stream) ^ (version * 0x9e3779b97f4a7c15ull);
  EventData e;
  e.id = IdFrom(h | 1, version + 1);  // never nil, so the server keeps it
  e.type = version % 3 == 0 ? "Deposited" : "Withdrawn";
  e.metadata = R"({"v":)" + std::to_string(version) + "}";
  e.payload = R"({"stream":")" + stream + R"(","version":)" + std::to_string(version) +
              R"(,"pad":")" + std::string(h % kMaxPadBytes, 'x') + R"("})";
  return e;
}

struct Ack {
  int round = 0;
  uint64_t first_version = 0, last_version = 0;
  uint64_t first_position = 0, last_position = 0;
};

struct StreamModel {
  std::string name;
  int64_t head = -1;  // the last version acknowledged or seen on the server; -1: none
  std::vector<Ack> acks;
};

std::string Describe(const Ack& a) {
  return "round " + std::to_string(a.round) + "'s append of versions " +
         std::to_string(a.first_version) + ".." + std::to_string(a.last_version) +
         " at positions " + std::to_string(a.first_position) + ".." +
         std::to_string(a.last_position);
}

// ---------------------------------------------------------------------------
// Appending

struct WriterOutcome {
  std::string error;    // a failure of the server or of the test; empty: none
  bool broken = false;  // the connection ended (the kill)
  Clock::time_point broken_at{};
  uint64_t acks = 0;
};

// One connection's appends for one round: one append in flight on each of
// `streams`, until the connection breaks or the round's bound is reached.
// The streams belong to this writer until it returns.
class Writer {
 public:
  Writer(uint16_t port, int round, std::vector<StreamModel*> streams, uint64_t seed,
         std::atomic<uint64_t>* acked_in_round)
      : port_(port),
        round_(round),
        streams_(std::move(streams)),
        rng_(seed),
        acked_in_round_(acked_in_round),
        in_flight_(streams_.size()) {}

  WriterOutcome Run() {
    auto client = RawClient::Connect(port_, "crash-writer");
    if (!client.ok()) return Failed("connect: " + client.status().ToString());
    client_ = std::move(*client);
    for (size_t i = 0; i < streams_.size(); ++i) Send(i);
    while (true) {
      if (Status s = client_->Flush(); !s.ok()) return Broken();
      if (sent_ == kMaxAppendsPerConnectionPerRound && InFlight() == 0) return outcome_;
      protocol::FrameHeader h;
      std::string body;
      bool timed_out = false;
      if (Status s = client_->Next(&h, &body, kAnswerTimeout, &timed_out); !s.ok()) {
        if (timed_out)
          return Failed("no answer within 10 s with " + std::to_string(InFlight()) +
                        " appends in flight");
        return Broken();
      }
      if (std::string wrong = OnAnswer(h, body); !wrong.empty()) return Failed(wrong);
    }
  }

 private:
  struct InFlightAppend {
    uint32_t request_id = 0;  // 0: none
    uint64_t first_version = 0;
    uint32_t count = 0;
  };

  void Send(size_t slot) {
    if (sent_ == kMaxAppendsPerConnectionPerRound) return;
    StreamModel& m = *streams_[slot];
    InFlightAppend& f = in_flight_[slot];
    f.request_id = ++next_request_id_;
    f.first_version = static_cast<uint64_t>(m.head + 1);
    f.count = 1 + static_cast<uint32_t>(rng_() % kMaxEventsPerAppend);
    protocol::AppendRequest req;
    req.stream = m.name;
    req.expected = m.head < 0 ? ExpectedVersion::NoStream()
                              : ExpectedVersion::Exact(static_cast<uint64_t>(m.head));
    for (uint32_t i = 0; i < f.count; ++i)
      req.events.push_back(EventFor(m.name, f.first_version + i));
    client_->Queue(Op::kAppend, f.request_id, req);
    ++sent_;
  }

  // Records an APPEND_OK and sends that stream's next append. Returns what
  // is wrong with the answer, or "".
  std::string OnAnswer(const protocol::FrameHeader& h, const std::string& body) {
    auto slot_it = std::find_if(in_flight_.begin(), in_flight_.end(), [&](const InFlightAppend& f) {
      return f.request_id == h.request_id;
    });
    if (slot_it == in_flight_.end())
      return "an answer to request " + std::to_string(h.request_id) + ", never sent";
    size_t slot = static_cast<size_t>(slot_it - in_flight_.begin());
    InFlightAppend f = *slot_it;
    slot_it->request_id = 0;
    StreamModel& m = *streams_[slot];
    std::string what =
        "append to " + m.name + " of versions " + std::to_string(f.first_version) + "..";
    if (h.op != Op::kAppendOk)
      return what + ": " + RawClient::AsStatus(h, body, "APPEND").ToString();
    AppendResult r;
    if (Status s = protocol::Decode(body, &r); !s.ok()) return what + ": " + s.ToString();
    uint64_t last_version = f.first_version + f.count - 1;
    if (r.first_version.get() != f.first_version || r.last_version.get() != last_version ||
        r.idempotent_replay || r.first_position.get() < 1 ||
        r.last_position.get() < r.first_position.get() + f.count - 1)
      return what + ": APPEND_OK gave versions " + std::to_string(r.first_version.get()) + ".." +
             std::to_string(r.last_version.get()) + ", positions " +
             std::to_string(r.first_position.get()) + ".." + std::to_string(r.last_position.get()) +
             (r.idempotent_replay ? ", replay" : "");
    m.acks.push_back(Ack{.round = round_,
                         .first_version = f.first_version,
                         .last_version = last_version,
                         .first_position = r.first_position.get(),
                         .last_position = r.last_position.get()});
    m.head = static_cast<int64_t>(last_version);
    ++outcome_.acks;
    acked_in_round_->fetch_add(1);
    Send(slot);
    return "";
  }

  size_t InFlight() const {
    return static_cast<size_t>(
        std::count_if(in_flight_.begin(), in_flight_.end(),
                      [](const InFlightAppend& f) { return f.request_id != 0; }));
  }

  WriterOutcome Failed(std::string error) {
    outcome_.error = std::move(error);
    return outcome_;
  }
  WriterOutcome Broken() {
    outcome_.broken = true;
    outcome_.broken_at = Clock::now();
    return outcome_;
  }

  const uint16_t port_;
  const int round_;
  std::vector<StreamModel*> streams_;
  std::mt19937_64 rng_;
  std::atomic<uint64_t>* const acked_in_round_;
  std::unique_ptr<RawClient> client_;
  std::vector<InFlightAppend> in_flight_;  // per stream slot
  uint32_t next_request_id_ = 0;
  uint64_t sent_ = 0;
  WriterOutcome outcome_;
};

// ---------------------------------------------------------------------------
// Checking

class Checker {
 public:
  // Reads every stream from the server on `port` and checks it against the
  // model (see the file comment); advances each model's head to the
  // server's. Returns the problems found, empty when there are none.
  static std::vector<std::string> Check(uint16_t port, std::vector<StreamModel>* streams,
                                        uint64_t* unacked_events) {
    Checker c;
    auto client = RawClient::Connect(port, "crash-checker");
    if (!client.ok()) return {"connect: " + client.status().ToString()};
    std::vector<uint64_t> positions;
    for (StreamModel& m : *streams) {
      auto events = (*client)->ReadWholeStream(m.name);
      if (!events.ok() && events.status().code() == StatusCode::kNotFound)
        events = std::vector<RecordedEvent>{};
      if (!events.ok()) {
        c.Problem("READ_STREAM " + m.name + ": " + events.status().ToString());
        continue;
      }
      c.CheckStream(m, *events, unacked_events);
      for (const RecordedEvent& e : *events) positions.push_back(e.position.get());
      if (!events->empty())
        m.head = std::max<int64_t>(m.head, static_cast<int64_t>(events->back().version.get()));
    }
    std::sort(positions.begin(), positions.end());
    if (auto dup = std::adjacent_find(positions.begin(), positions.end()); dup != positions.end())
      c.Problem("position " + std::to_string(*dup) + " holds two events");
    return std::move(c.problems_);
  }

 private:
  void CheckStream(const StreamModel& m, const std::vector<RecordedEvent>& events,
                   uint64_t* unacked_events) {
    if (static_cast<int64_t>(events.size()) - 1 < m.head)
      Problem(m.name + " ends at version " +
              std::to_string(static_cast<int64_t>(events.size()) - 1) + "; version " +
              std::to_string(m.head) + " was acknowledged or seen before");
    for (size_t v = 0; v < events.size(); ++v) {
      const RecordedEvent& e = events[v];
      EventData want = EventFor(m.name, v);
      if (e.stream != m.name || e.version.get() != v)
        Problem(m.name + " event " + std::to_string(v) + " is " + e.stream + " version " +
                std::to_string(e.version.get()));
      else if (e.id != want.id || e.type != want.type || e.metadata != want.metadata ||
               e.payload != want.payload)
        Problem(m.name + " version " + std::to_string(v) + " does not hold the event sent for it");
      if (v > 0 && e.position <= events[v - 1].position)
        Problem(m.name + " version " + std::to_string(v) + " is at position " +
                std::to_string(e.position.get()) + ", not above the previous version's");
    }
    uint64_t acked_through = 0;
    for (const Ack& a : m.acks) {
      acked_through = std::max(acked_through, a.last_version + 1);
      if (a.last_version >= events.size()) {
        Problem(m.name + ": " + Describe(a) + " is missing");
      } else if (events[a.first_version].position.get() != a.first_position ||
                 events[a.last_version].position.get() != a.last_position) {
        Problem(m.name + ": " + Describe(a) + " is at positions " +
                std::to_string(events[a.first_version].position.get()) + ".." +
                std::to_string(events[a.last_version].position.get()));
      }
    }
    if (events.size() > acked_through) *unacked_events += events.size() - acked_through;
  }

  void Problem(std::string p) {
    if (problems_.size() < kMaxReportedProblems) problems_.push_back(std::move(p));
  }

  std::vector<std::string> problems_;
};

std::string Join(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& l : lines) out += "\n  " + l;
  return out;
}

uint64_t Seed() {
  const char* text = std::getenv("ANNAL_SERVER_CRASH_SEED");
  if (text != nullptr && *text != '\0') return std::strtoull(text, nullptr, 10);
  return std::random_device{}();
}

// ---------------------------------------------------------------------------

// Runs one round's writers against `server`, kills it with SIGKILL a random
// moment after appends are being acknowledged, and returns what went wrong
// (empty: nothing).
std::vector<std::string> AppendThenKill(AnnaldProcess& server, int round,
                                        std::vector<StreamModel>* streams, std::mt19937_64& rng,
                                        uint64_t* acks) {
  std::atomic<uint64_t> acked_in_round{0};
  std::vector<WriterOutcome> outcomes(kConnections);
  std::vector<std::thread> threads;
  for (int c = 0; c < kConnections; ++c) {
    std::vector<StreamModel*> own;
    for (int i = 0; i < kStreamsPerConnection; ++i)
      own.push_back(&(*streams)[c * kStreamsPerConnection + i]);
    threads.emplace_back([&, c, own, seed = rng()] {
      outcomes[c] = Writer(server.port(), round, own, seed, &acked_in_round).Run();
    });
  }
  std::vector<std::string> problems;
  Clock::time_point first_ack_deadline = Clock::now() + kFirstAckTimeout;
  while (acked_in_round == 0 && Clock::now() < first_ack_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (acked_in_round == 0) problems.push_back("no append was acknowledged within 20 s");
  int delay_ms =
      kKillDelayMinMs + static_cast<int>(rng() % (kKillDelayMaxMs - kKillDelayMinMs + 1));
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  Clock::time_point killed_at = Clock::now();
  server.Kill(SIGKILL);
  for (std::thread& t : threads) t.join();
  for (int c = 0; c < kConnections; ++c) {
    const WriterOutcome& o = outcomes[c];
    *acks += o.acks;
    if (!o.error.empty()) problems.push_back("connection " + std::to_string(c) + ": " + o.error);
    if (o.broken && o.broken_at < killed_at)
      problems.push_back("connection " + std::to_string(c) + " was closed before the kill");
  }
  return problems;
}

TEST(ServerCrashTest, AcknowledgedAppendsSurviveSigkillUnderLoad) {
  const uint64_t seed = Seed();
  SCOPED_TRACE("ANNAL_SERVER_CRASH_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir dir("server-crash");
  std::vector<StreamModel> streams;
  for (int c = 0; c < kConnections; ++c)
    for (int i = 0; i < kStreamsPerConnection; ++i)
      streams.push_back(StreamModel{.name = StreamName(c, i)});

  uint64_t total_acks = 0, total_unacked = 0;
  for (int round = 0; round <= kRounds; ++round) {
    auto server = AnnaldProcess::Start(dir.path());
    ASSERT_TRUE(server.ok()) << "round " << round << ": " << server.status().ToString();
    uint64_t unacked = 0;
    std::vector<std::string> problems = Checker::Check((*server)->port(), &streams, &unacked);
    ASSERT_TRUE(problems.empty()) << "after the kill of round " << round - 1 << ":"
                                  << Join(problems)
                                  << "\nannald's log:" << Join((*server)->Lines());
    total_unacked += unacked;
    if (round == kRounds) {
      EXPECT_TRUE((*server)->Stop())
          << "annald did not stop cleanly on SIGTERM; its log:" << Join((*server)->Lines());
      break;
    }
    uint64_t acks = 0;
    problems = AppendThenKill(**server, round, &streams, rng, &acks);
    ASSERT_TRUE(problems.empty()) << "round " << round << ":" << Join(problems)
                                  << "\nannald's log:" << Join((*server)->Lines());
    total_acks += acks;
  }
  // For the record: how much each run exercised. Events past the last
  // acknowledged one were durable when the server died but never answered.
  RecordProperty("acknowledged_appends", static_cast<int>(total_acks));
  RecordProperty("unanswered_durable_events", static_cast<int>(total_unacked));
}

}  // namespace
}  // namespace annal::testing
