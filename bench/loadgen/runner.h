// The open-loop runner: offers requests to a Target at a fixed schedule,
// whatever the target does, and measures every request from the moment it
// was due — not from when it was actually sent. A target that stalls for
// 100 ms at 100,000 requests/s is charged 10,000 late requests, each with
// the time it made its caller wait, so a stall cannot hide in the figures
// (no coordinated omission).
//
//   due times:   |  |  |  |  |  |  |  |  |  |      constant: every 1/rate s
//                                                  poisson: exponential gaps
//   sent:        |  |  |  [ target stalled ]|||||  (late: queued, then sent
//   latency:     done - due, always                 as fast as it takes them)
//
// One thread, one epoll set. The runner wakes at the next due time rounded
// up to a pacing tick (default 50 µs), sends everything that is due, and
// reads whatever has arrived. Requests due before `warmup` are sent but not
// measured; requests due in [warmup, warmup + duration) are measured; after
// that nothing new is offered and the runner drains what is in flight for
// at most `drain_timeout`. A request still unanswered then is recorded with
// the latency it has reached so far and counted as timed out.
//
// Thread-safety: none; Run() uses the calling thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "annal/status.h"
#include "histogram.h"
#include "target.h"
#include "workload.h"

namespace annal::loadgen {

enum class Arrivals : uint8_t { kConstant = 0, kPoisson = 1 };

struct RunOptions {
  double rate_per_s = 10'000;  // requests offered per second, all kinds together
  Arrivals arrivals = Arrivals::kConstant;
  double read_fraction = 0;    // share of requests that are kReadStream
  uint32_t read_count = 100;   // events per kReadStream
  std::chrono::nanoseconds warmup = std::chrono::seconds(2);
  std::chrono::nanoseconds duration = std::chrono::seconds(10);
  std::chrono::nanoseconds tick = std::chrono::microseconds(50);
  std::chrono::nanoseconds drain_timeout = std::chrono::seconds(10);
  // Processes whose CPU time is charged to the target (annald, or the
  // postmaster and, through it, its backends): each pid with all its
  // descendants. Empty: server CPU is not reported.
  std::vector<int> server_pids;
  // Called once per second of the measured window, as it ends.
  std::function<void(const struct SecondReport&)> on_second;
  // Test hook: every measured completion, in steady-clock nanoseconds.
  std::function<void(OpKind kind, int64_t due_ns, int64_t done_ns)> on_complete;
};

struct SecondReport {
  int second = 0;           // 1-based within the measured window
  uint64_t offered = 0;     // requests due in this second
  uint64_t completed = 0;   // requests answered in this second (any outcome)
  uint64_t p50_ns = 0, p99_ns = 0, p999_ns = 0, max_ns = 0;  // of this second's answers
};

struct OpStats {
  LatencyHistogram latency;  // kOk answers only
  uint64_t ok = 0;
  uint64_t conflicts = 0;
  uint64_t errors = 0;
  uint64_t timed_out = 0;    // still unanswered after the drain timeout
  std::string first_error;
  uint64_t failed() const { return conflicts + errors + timed_out; }
  bool empty() const { return ok + failed() == 0; }  // no request of this kind was measured
};

struct RunResult {
  double offered_per_s = 0;   // measured requests / window
  double achieved_per_s = 0;  // measured requests answered kOk / time to answer them
  uint64_t offered = 0;
  std::array<OpStats, kOpKinds> ops;
  LatencyHistogram all;       // every kOk answer, all kinds
  LatencyHistogram delivery;  // subscription: receipt - recorded_at
  uint64_t events_appended = 0;  // in the measured window, kOk only
  double window_s = 0;
  double client_cpu_s = 0;   // this process, during the measured window
  double server_cpu_s = -1;  // server_pids' trees; -1 when not measured
  std::vector<SecondReport> seconds;
};

// Runs one measured load against `target`. An error from the target's
// sockets ends the run with that error.
Result<RunResult> Run(Target& target, const WorkloadOptions& workload, const RunOptions& options);

// CPU seconds (user + system) used so far by `pid` and every live process
// descended from it, read from /proc. -1 when `pid` does not exist.
double ProcessTreeCpuSeconds(int pid);

}  // namespace annal::loadgen
