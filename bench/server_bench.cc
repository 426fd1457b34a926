// Benchmarks of annald over loopback: the server as a client sees it.
//
//   BM_LoopbackAppendClosedLoop  64 appends in flight over 4 connections;
//                                each APPEND_OK sends the next append.
//   BM_LoopbackAppendOpenLoop    appends offered at a fixed rate (the
//                                argument), latency from the scheduled time.
//   BM_SubscriptionDelivery      8 subscribers to the whole store while
//                                appends are offered at 100,000/s; checks
//                                that each gets every event once, in order.
//
// Every benchmark starts its own annald (the binary CMake built, passed in
// as ANNAL_ANNALD_PATH) on a fresh data directory below ANNAL_BENCH_DIR, on
// free ports, and stops it with SIGTERM afterwards. The client is one thread
// driving every connection through epoll (wire_connection.h), using the
// protocol codec directly: no client library is involved.
//
// The open loops send what is due once per pacing tick (100 us), all of a
// tick's appends on one connection, the connections taking turns: one
// send() per tick keeps the load generator near a quarter of a core at
// 100,000/s on this two-core machine. An append is still charged from its
// own scheduled time, so the tick adds 50 us to latencies on average.
//
// Settings (environment): ANNAL_BENCH_DIR, ANNAL_BENCH_SECONDS (default 3),
// ANNAL_BENCH_SETTLE_MS (1500), ANNAL_BENCH_TICK_US (100),
// ANNAL_BENCH_VERBOSE (annald's log on stderr), ANNAL_BENCH_ANNALD_ARGS
// (more flags for annald), ANNAL_BENCH_SUBSCRIBERS (8).
//
// Latency counters are in microseconds:
//   p50_us ...         append: from the send (closed loop) or the scheduled
//                      send time (open loop) to the APPEND_OK, which annald
//                      sends only once the append is durable.
//   deliver_*_us       wall clock when a subscriber received the event minus
//                      the event's recorded_at_ns. The engine stamps
//                      recorded_at just before the write that makes it
//                      durable is submitted, so this includes the sync.
//   after_ack_*_us     wall clock when a subscriber received the event minus
//                      the wall clock when its appender received the
//                      APPEND_OK: what delivery adds after an appender learns
//                      its event is durable. Negative when the subscriber
//                      was first.
//   server_cpu, client_cpu   CPU cores used on average during the run.

#include <benchmark/benchmark.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "annal/assert.h"
#include "annal/status.h"
#include "annal/types.h"
#include "annald_process.h"
#include "bench_util.h"
#include "protocol.h"
#include "runner.h"
#include "wire_connection.h"

namespace annal::bench {
namespace {

using protocol::Op;

constexpr size_t kStreams = 10'000;
constexpr size_t kPayloadBytes = 500;
constexpr size_t kPayloadVariants = 16;
constexpr int kAppendConnections = 4;
constexpr int kClosedLoopInFlight = 64;
// annald answers at most max_in_flight (default 1024) requests per
// connection at once; the open loop stays within that on every connection.
constexpr uint64_t kOpenLoopMaxInFlight = kAppendConnections * 1024;
// The open loop sends what is due once per tick (see IssueDue).
constexpr double kDefaultPacingTickUs = 100;
constexpr unsigned long kTimerSlackNs = 1000;
constexpr int kSubscribers = 8;
constexpr int64_t kSubscriptionRatePerS = 100'000;
// Bounds the samples the closed loop keeps (8 bytes each per array).
constexpr uint64_t kMaxClosedLoopAppends = 20'000'000;
// After the appends end, how long subscribers get to receive the last ones,
// and how long a run may overrun its own budget before it is called hung.
constexpr std::chrono::seconds kDrainTimeout{30};
// The request id of set-up requests; appends use their sequence number.
constexpr uint32_t kSetupRequestId = 0xFFFF'FFF0;

// Opening a store prepares each partition's next segment in the
// background; measuring starts once that settled (as in engine_bench.cc).
void Settle() {
  double ms = EnvPositive("ANNAL_BENCH_SETTLE_MS", 1500);
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(ms)));
}

// CPU seconds (user + system) of process `pid` so far, from /proc.
double ThreadCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_THREAD, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// The open loop's pacing tick: ANNAL_BENCH_TICK_US, default kDefaultPacingTickUs.
std::chrono::nanoseconds PacingTick() {
  return std::chrono::nanoseconds(
      static_cast<int64_t>(EnvPositive("ANNAL_BENCH_TICK_US", kDefaultPacingTickUs) * 1e3));
}

struct LoadSpec {
  enum class Pacing { kClosed, kOpen };
  Pacing pacing = Pacing::kClosed;
  Clock::duration duration{};
  int closed_in_flight = kClosedLoopInFlight;  // kClosed: appends in flight in all
  int64_t rate_per_s = 0;                      // kOpen: appends offered per second
  int subscribers = 0;
};

struct LoadOutcome {
  std::vector<int64_t> append_latencies_ns;
  uint64_t scheduled = 0;  // kOpen: appends the schedule held
  uint64_t issued = 0;
  uint64_t waited = 0;     // kOpen: issued late because kOpenLoopMaxInFlight were in flight
  int64_t elapsed_ns = 0;  // first send to last APPEND_OK
  std::vector<int64_t> deliver_ns;    // per subscriber and event: received - recorded_at
  std::vector<int64_t> after_ack_ns;  // per subscriber and event: received - APPEND_OK received
  uint64_t delivered = 0;
  double client_cpu_s = 0;
};

// One run of appends (and optionally subscribers) against annald on `port`,
// driven by the calling thread. One event per append, ExpectedVersion Any,
// on stream seq % kStreams; request id = seq.
class LoopbackLoad {
 public:
  LoopbackLoad(uint16_t port, LoadSpec spec) : port_(port), spec_(spec) {
    for (size_t i = 0; i < kStreams; ++i) streams_.push_back("bench-" + std::to_string(i));
    for (size_t v = 0; v < kPayloadVariants; ++v) {
      protocol::AppendRequest r;
      r.expected = ExpectedVersion::Any();
      r.events.push_back(
          EventData{.type = "OrderPlaced", .payload = JsonPayload(kPayloadBytes, v)});
      variants_.push_back(std::move(r));
    }
    if (spec_.pacing == LoadSpec::Pacing::kOpen) {
      ANNAL_ASSERT(spec_.rate_per_s > 0);
      int64_t duration_ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(spec_.duration).count();
      scheduled_ = static_cast<uint64_t>(spec_.rate_per_s * (duration_ns / 1000) / 1'000'000);
      ANNAL_ASSERT(scheduled_ > 0 && scheduled_ < kSetupRequestId);
    } else {
      scheduled_ = kMaxClosedLoopAppends;
    }
  }

  // Connects, subscribes, then runs the load. Fills `out` on success.
  Status Run(LoadOutcome* out) {
    ANNAL_RETURN_IF_ERROR(Connect());
    if (spec_.subscribers > 0) ANNAL_RETURN_IF_ERROR(SubscribeAtHead());
    double cpu_before = ThreadCpuSeconds();
    ANNAL_RETURN_IF_ERROR(Drive());
    out->client_cpu_s = ThreadCpuSeconds() - cpu_before;
    return Collect(out);
  }

 private:
  struct Subscriber {
    std::unique_ptr<WireConnection> conn;
    uint32_t subscription_id = 0;
    uint64_t last_position = 0;       // the last delivered; positions must rise
    std::vector<uint64_t> positions;  // delivered, in order
    std::vector<int64_t> received_wall_ns;
    protocol::EventsResponse scratch;  // reused: decoding allocates only at first
  };

  Status Connect() {
    for (int i = 0; i < kAppendConnections; ++i) {
      ANNAL_ASSIGN_OR_RETURN(auto c, WireConnection::Connect(port_, "server-bench-appender"));
      poller_.Add(*c, Tag(i, false));
      appenders_.push_back(std::move(c));
    }
    want_write_.assign(kAppendConnections + spec_.subscribers, false);
    return Status::Ok();
  }

  static uint32_t Tag(int index, bool subscriber) {
    return static_cast<uint32_t>(index) + (subscriber ? kAppendConnections : 0);
  }

  // Finds the head with one append of its own (nothing else writes), then
  // subscribes every subscriber to the whole store from head + 1 and waits
  // until each is live (CAUGHT_UP).
  Status SubscribeAtHead() {
    protocol::AppendRequest marker = variants_[0];
    marker.stream = "bench-marker";
    protocol::FrameHeader h;
    std::string body;
    ANNAL_RETURN_IF_ERROR(appenders_[0]->Call(Op::kAppend, kSetupRequestId, marker, &h, &body));
    AppendResult head;
    if (h.op != Op::kAppendOk) return Unexpected("the marker append", h, body);
    ANNAL_RETURN_IF_ERROR(protocol::Decode(body, &head));
    first_position_ = head.last_position.get() + 1;
    for (int i = 0; i < spec_.subscribers; ++i) {
      Subscriber s;
      ANNAL_ASSIGN_OR_RETURN(s.conn, WireConnection::Connect(port_, "server-bench-subscriber"));
      s.subscription_id = static_cast<uint32_t>(i + 1);
      s.last_position = first_position_ - 1;
      protocol::SubscribeRequest req;
      req.scope = protocol::SubscribeRequest::Scope::kAll;
      req.from = first_position_;
      ANNAL_RETURN_IF_ERROR(s.conn->Call(Op::kSubscribe, s.subscription_id, req, &h, &body));
      if (h.op != Op::kSubscribed) return Unexpected("SUBSCRIBE", h, body);
      ANNAL_RETURN_IF_ERROR(s.conn->WaitForFrame(std::chrono::seconds(10), &h, &body));
      if (h.op != Op::kCaughtUp) return Unexpected("a new subscription", h, body);
      poller_.Add(*s.conn, Tag(i, true));
      subscribers_.push_back(std::move(s));
    }
    return Status::Ok();
  }

  static Status Unexpected(const std::string& what, const protocol::FrameHeader& h,
                           std::string_view body) {
    std::string detail;
    protocol::ErrorResponse e;
    if ((h.op == Op::kError || h.op == Op::kSubDropped) && protocol::Decode(body, &e).ok())
      detail = ": " + e.message;
    return Status::InvalidArgument(what + " was answered with " + protocol::OpName(h.op) + detail);
  }

  Clock::time_point ScheduledTime(uint64_t seq) const {
    return t0_ +
           std::chrono::nanoseconds(static_cast<int64_t>(seq) * 1'000'000'000 / spec_.rate_per_s);
  }

  // Queues append `seq` on appender connection `conn`; its latency runs from `start`.
  void Issue(int conn, uint64_t seq, Clock::time_point start) {
    ANNAL_ASSERT(seq == start_ns_.size());
    protocol::AppendRequest& r = variants_[seq % kPayloadVariants];
    r.stream = streams_[seq % kStreams];
    appenders_[conn]->Queue(Op::kAppend, static_cast<uint32_t>(seq), r);
    start_ns_.push_back(ElapsedNs(t0_, start));
    ack_position_.push_back(0);
    if (spec_.subscribers > 0) ack_wall_ns_.push_back(0);
    ++in_flight_;
  }

  // How many appends of the schedule are due at `now` (scheduled at or before it).
  uint64_t DueBy(Clock::time_point now) const {
    int64_t ns = ElapsedNs(t0_, now);
    if (ns < 0) return 0;
    uint64_t due =
        static_cast<uint64_t>((static_cast<__int128>(ns) * spec_.rate_per_s) / 1'000'000'000) + 1;
    return std::min(due, scheduled_);
  }

  // Open loop, once per pacing tick: sends every append that is due, all on
  // one connection, the next connection at the next tick; an append waits
  // while kOpenLoopMaxInFlight are in flight. Sending a tick's appends with
  // one send() keeps the client's CPU low (on loopback the sender's send()
  // also runs the receiver's TCP processing); an append sent up to a tick
  // after its scheduled time is charged for the wait.
  void IssueDue(Clock::time_point now) {
    if (now > issue_deadline_) {
      issuing_ = false;
      return;
    }
    if (now < next_tick_) return;
    uint64_t due = DueBy(now);
    int conn = static_cast<int>(ticks_++ % kAppendConnections);
    while (next_seq_ < due) {
      if (in_flight_ >= kOpenLoopMaxInFlight) {
        waited_until_seq_ = due;  // these are late because of the cap
        break;
      }
      if (next_seq_ < waited_until_seq_) ++waited_;
      Issue(conn, next_seq_, ScheduledTime(next_seq_));
      ++next_seq_;
    }
    blocked_ = next_seq_ < due;
    next_tick_ = now + pacing_tick_;
    if (next_seq_ == scheduled_) issuing_ = false;
  }

  Status FlushAll() {
    for (int i = 0; i < kAppendConnections + spec_.subscribers; ++i) {
      WireConnection& c =
          i < kAppendConnections ? *appenders_[i] : *subscribers_[i - kAppendConnections].conn;
      ANNAL_RETURN_IF_ERROR(c.Flush());
      if (c.has_output() != want_write_[i]) {
        want_write_[i] = c.has_output();
        poller_.WantWrite(c, static_cast<uint32_t>(i), want_write_[i]);
      }
    }
    return Status::Ok();
  }

  bool Finished() const {
    if (issuing_ || in_flight_ > 0) return false;
    for (const Subscriber& s : subscribers_)
      if (s.last_position < max_acked_position_) return false;
    return true;
  }

  Status Drive() {
    // Wake-ups as asked, not up to 50 us late (the default slack): the
    // pacing tick and the receive timestamps depend on them.
    ::prctl(PR_SET_TIMERSLACK, kTimerSlackNs);
    t0_ = Clock::now();
    append_deadline_ = t0_ + spec_.duration;
    issue_deadline_ = t0_ + 3 * spec_.duration;
    Clock::time_point hard_deadline = issue_deadline_ + kDrainTimeout;
    issuing_ = true;
    if (spec_.pacing == LoadSpec::Pacing::kClosed) {
      for (int i = 0; i < spec_.closed_in_flight; ++i)
        Issue(i % kAppendConnections, next_seq_++, t0_);
    }
    while (true) {
      Clock::time_point now = Clock::now();
      if (spec_.pacing == LoadSpec::Pacing::kOpen) IssueDue(now);
      ANNAL_RETURN_IF_ERROR(FlushAll());
      if (!error_.ok()) return error_;
      if (Finished()) break;
      if (now > hard_deadline)
        return Status::Unavailable("the run did not finish: " + std::to_string(in_flight_) +
                                   " appends unanswered, or a subscriber missed events");
      std::chrono::nanoseconds wait = std::chrono::milliseconds(50);
      if (spec_.pacing == LoadSpec::Pacing::kOpen && issuing_ && !blocked_)
        wait = std::min<std::chrono::nanoseconds>(
            wait, std::max(next_tick_, ScheduledTime(next_seq_)) - now);
      ANNAL_RETURN_IF_ERROR(
          poller_.Wait(wait, [&](uint32_t tag, uint32_t events) { return OnReady(tag, events); }));
    }
    return Status::Ok();
  }

  Status OnReady(uint32_t tag, uint32_t events) {
    bool subscriber = tag >= static_cast<uint32_t>(kAppendConnections);
    WireConnection& c =
        subscriber ? *subscribers_[tag - kAppendConnections].conn : *appenders_[tag];
    if (events & EPOLLOUT) ANNAL_RETURN_IF_ERROR(c.Flush());
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return Status::Ok();
    if (subscriber) {
      Subscriber& s = subscribers_[tag - kAppendConnections];
      return c.ReadFrames(
          [&](const protocol::FrameHeader& h, std::string_view body,
              const WireConnection::Received& at) { return OnSubscriberFrame(s, h, body, at); });
    }
    return c.ReadFrames([&](const protocol::FrameHeader& h, std::string_view body,
                            const WireConnection::Received& at) {
      return OnAppenderFrame(static_cast<int>(tag), h, body, at);
    });
  }

  // False stops the parsing: the run failed and error_ says why.
  bool OnAppenderFrame(int conn, const protocol::FrameHeader& h, std::string_view body,
                       const WireConnection::Received& at) {
    uint64_t seq = h.request_id;
    if (h.op != Op::kAppendOk || seq >= start_ns_.size())
      return Fail(Unexpected("an append", h, body));
    AppendResult r;
    if (Status s = protocol::Decode(body, &r); !s.ok()) return Fail(s);
    uint64_t position = r.last_position.get();
    if (ack_position_[seq] != 0 || r.first_position != r.last_position ||
        r.first_version != r.last_version)
      return Fail(Status::Corruption("APPEND_OK for request " + std::to_string(seq) +
                                     " is a repeat or spans positions"));
    ack_position_[seq] = position;
    if (spec_.subscribers > 0) ack_wall_ns_[seq] = at.wall_ns;
    max_acked_position_ = std::max(max_acked_position_, position);
    latencies_ns_.push_back(ElapsedNs(t0_, at.steady) - start_ns_[seq]);
    last_ack_ = at.steady;
    --in_flight_;
    if (spec_.pacing == LoadSpec::Pacing::kClosed && issuing_) {
      if (at.steady >= append_deadline_ || next_seq_ >= scheduled_) {
        issuing_ = false;
      } else {
        Issue(conn, next_seq_++, Clock::now());
      }
    }
    return true;
  }

  bool OnSubscriberFrame(Subscriber& s, const protocol::FrameHeader& h, std::string_view body,
                         const WireConnection::Received& at) {
    if (h.op == Op::kCaughtUp) return true;
    if (h.op != Op::kSubEvents || h.request_id != s.subscription_id)
      return Fail(Unexpected("subscription " + std::to_string(s.subscription_id), h, body));
    if (Status st = protocol::Decode(body, &s.scratch); !st.ok()) return Fail(st);
    for (const RecordedEvent& e : s.scratch.events) {
      uint64_t position = e.position.get();
      if (position <= s.last_position)
        return Fail(Status::Corruption("subscriber " + std::to_string(s.subscription_id) +
                                       " got position " + std::to_string(position) + " after " +
                                       std::to_string(s.last_position)));
      s.last_position = position;
      s.positions.push_back(position);
      s.received_wall_ns.push_back(at.wall_ns);
      deliver_ns_.push_back(at.wall_ns - e.recorded_at_ns);
    }
    return true;
  }

  bool Fail(Status s) {
    if (error_.ok()) error_ = std::move(s);
    return false;
  }

  // Checks that every issued append was acknowledged and that every
  // subscriber got exactly the acknowledged positions, then fills `out`.
  Status Collect(LoadOutcome* out) {
    out->issued = start_ns_.size();
    out->scheduled = spec_.pacing == LoadSpec::Pacing::kOpen ? scheduled_ : out->issued;
    out->waited = waited_;
    out->elapsed_ns = ElapsedNs(t0_, last_ack_);
    out->append_latencies_ns = std::move(latencies_ns_);
    if (out->append_latencies_ns.size() != out->issued)
      return Status::Corruption("an append was never answered");
    if (spec_.subscribers == 0) return Status::Ok();

    std::vector<std::pair<uint64_t, int64_t>> acked;  // position, APPEND_OK wall time
    acked.reserve(out->issued);
    for (uint64_t seq = 0; seq < out->issued; ++seq)
      acked.emplace_back(ack_position_[seq], ack_wall_ns_[seq]);
    std::sort(acked.begin(), acked.end());
    for (const Subscriber& s : subscribers_) {
      if (s.positions.size() != acked.size())
        return Status::Corruption("subscriber " + std::to_string(s.subscription_id) + " received " +
                                  std::to_string(s.positions.size()) + " events; " +
                                  std::to_string(acked.size()) + " were appended");
      for (size_t i = 0; i < acked.size(); ++i) {
        if (s.positions[i] != acked[i].first)
          return Status::Corruption("subscriber " + std::to_string(s.subscription_id) +
                                    " received position " + std::to_string(s.positions[i]) +
                                    " where " + std::to_string(acked[i].first) + " was expected");
        out->after_ack_ns.push_back(s.received_wall_ns[i] - acked[i].second);
      }
      out->delivered += s.positions.size();
    }
    out->deliver_ns = std::move(deliver_ns_);
    return Status::Ok();
  }

  const uint16_t port_;
  const LoadSpec spec_;
  std::vector<std::string> streams_;
  std::vector<protocol::AppendRequest> variants_;  // one per payload; the stream is set per append
  Poller poller_;
  std::vector<std::unique_ptr<WireConnection>> appenders_;
  std::vector<Subscriber> subscribers_;
  std::vector<bool> want_write_;  // per connection tag: registered for EPOLLOUT

  uint64_t scheduled_ = 0;
  Clock::time_point t0_, append_deadline_, issue_deadline_, last_ack_;
  bool issuing_ = false;
  bool blocked_ = false;  // kOpen: an append is due but the in-flight cap is reached
  const std::chrono::nanoseconds pacing_tick_ = PacingTick();
  Clock::time_point next_tick_;
  uint64_t ticks_ = 0;
  uint64_t waited_until_seq_ = 0;
  uint64_t next_seq_ = 0;
  uint64_t in_flight_ = 0;
  uint64_t waited_ = 0;
  uint64_t first_position_ = 1;  // the first position the subscribers ask for
  uint64_t max_acked_position_ = 0;
  std::vector<int64_t> start_ns_;       // per seq: latency start, from t0_
  std::vector<uint64_t> ack_position_;  // per seq: 0 until acknowledged
  std::vector<int64_t> ack_wall_ns_;    // per seq, with subscribers
  std::vector<int64_t> latencies_ns_;   // in acknowledgement order
  std::vector<int64_t> deliver_ns_;
  Status error_;
};

// ANNAL_BENCH_ANNALD_ARGS: more flags for annald, separated by spaces
// (for A/B runs of its settings, e.g. "--tail-cache-mb 0").
std::vector<std::string> AnnaldArgs() {
  std::vector<std::string> args;
  const char* text = std::getenv("ANNAL_BENCH_ANNALD_ARGS");
  std::istringstream in(text ? text : "");
  for (std::string arg; in >> arg;) args.push_back(arg);
  return args;
}

// Starts annald on a fresh directory, runs `spec` against it, stops annald
// and reports. Returns false (after SkipWithError) on failure.
bool RunAgainstAnnald(benchmark::State& state, const std::string& name, LoadSpec spec,
                      LoadOutcome* out) {
  ScratchDir dir(name);
  auto annald = testing::AnnaldProcess::Start(dir.path() / "data", AnnaldArgs());
  if (!annald.ok()) {
    state.SkipWithError(annald.status().ToString().c_str());
    return false;
  }
  Settle();
  Status s;
  double server_cpu_s = 0;
  for (auto _ : state) {
    double cpu_before = loadgen::ProcessTreeCpuSeconds((*annald)->pid());
    LoopbackLoad load((*annald)->port(), spec);
    s = load.Run(out);
    server_cpu_s = loadgen::ProcessTreeCpuSeconds((*annald)->pid()) - cpu_before;
  }
  // SIGTERM, and a clean exit (status 0) within 30 s.
  if (s.ok() && !(*annald)->Stop(std::chrono::seconds(30)))
    s = Status::Unavailable("annald did not stop cleanly on SIGTERM");
  if (!s.ok()) {
    std::string log;
    for (const std::string& line : (*annald)->Lines()) log += "\n  " + line;
    state.SkipWithError((s.ToString() + "\nannald's log:" + log).c_str());
    return false;
  }
  double elapsed_s = static_cast<double>(out->elapsed_ns) / 1e9;
  state.counters["events"] = static_cast<double>(out->issued);
  state.counters["events_per_s"] = static_cast<double>(out->issued) / elapsed_s;
  state.counters["server_cpu"] = server_cpu_s / elapsed_s;
  state.counters["client_cpu"] = out->client_cpu_s / elapsed_s;
  return true;
}

void ReportPercentiles(benchmark::State& state, const std::string& prefix,
                       std::vector<int64_t> samples_ns) {
  LatencySummary s = Summarize(std::move(samples_ns));
  state.counters[prefix + "p50_us"] = s.p50_us;
  state.counters[prefix + "p99_us"] = s.p99_us;
  state.counters[prefix + "p999_us"] = s.p999_us;
  state.counters[prefix + "max_us"] = s.max_us;
}

void BM_LoopbackAppendClosedLoop(benchmark::State& state) {
  LoadOutcome out;
  LoadSpec spec{.pacing = LoadSpec::Pacing::kClosed, .duration = AppendPhaseDuration()};
  if (!RunAgainstAnnald(state, "server-closed-loop", spec, &out)) return;
  ReportPercentiles(state, "", std::move(out.append_latencies_ns));
}

void BM_LoopbackAppendOpenLoop(benchmark::State& state) {
  LoadOutcome out;
  LoadSpec spec{.pacing = LoadSpec::Pacing::kOpen,
                .duration = AppendPhaseDuration(),
                .rate_per_s = state.range(0)};
  if (!RunAgainstAnnald(state, "server-open-loop", spec, &out)) return;
  state.counters["waited"] = static_cast<double>(out.waited);
  state.counters["not_issued"] = static_cast<double>(out.scheduled - out.issued);
  ReportPercentiles(state, "", std::move(out.append_latencies_ns));
}

void BM_SubscriptionDelivery(benchmark::State& state) {
  LoadOutcome out;
  LoadSpec spec{.pacing = LoadSpec::Pacing::kOpen,
                .duration = AppendPhaseDuration(),
                .rate_per_s = kSubscriptionRatePerS,
                .subscribers = static_cast<int>(EnvPositive("ANNAL_BENCH_SUBSCRIBERS", kSubscribers))};
  if (!RunAgainstAnnald(state, "server-subscription", spec, &out)) return;
  state.counters["delivered"] = static_cast<double>(out.delivered);
  state.counters["waited"] = static_cast<double>(out.waited);
  state.counters["not_issued"] = static_cast<double>(out.scheduled - out.issued);
  ReportPercentiles(state, "", std::move(out.append_latencies_ns));
  ReportPercentiles(state, "deliver_", std::move(out.deliver_ns));
  ReportPercentiles(state, "after_ack_", std::move(out.after_ack_ns));
}

BENCHMARK(BM_LoopbackAppendClosedLoop)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_LoopbackAppendOpenLoop)
    ->Arg(100'000)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);
BENCHMARK(BM_SubscriptionDelivery)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace
}  // namespace annal::bench

BENCHMARK_MAIN();
