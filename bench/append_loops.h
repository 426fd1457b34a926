// The two ways the benchmarks drive appends into a store.
//
// ClosedLoop: N logical appenders, each with exactly one append in flight.
// The next append of an appender is submitted from the callback of its
// previous one, so offered load follows the engine's speed. Measures what a
// fixed population of synchronous clients gets.
//
// OpenLoop: one pacing thread issues append i at t0 + i/rate whatever the
// engine's progress, and latency is taken from that scheduled time. A stall
// then shows in the latency of every append scheduled during it, instead of
// being hidden by a sender that politely waited (coordinated omission).
//
// Both take latency per append with steady_clock, up to its callback, which
// the engine runs only once the append is written and fdatasync'ed.
//
// Threading: Run() is called by one thread (the benchmark's) and returns only
// after every callback it caused has finished. Callbacks run on engine writer
// threads; they take a mutex for a few instructions and otherwise only
// enqueue (AppendAsync), so they never block a writer.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "annal/assert.h"
#include "annal/store.h"
#include "bench_util.h"

namespace annal::bench {

// What the appends carry: prepared before timing starts, so that a timed
// append only copies a stream name and its events.
class Workload {
 public:
  Workload(std::vector<std::string> streams, std::vector<std::vector<EventData>> batches)
      : streams_(std::move(streams)), batches_(std::move(batches)) {
    ANNAL_ASSERT(!streams_.empty() && !batches_.empty());
    for (const auto& batch : batches_) ANNAL_ASSERT(batch.size() == batches_[0].size());
  }
  std::string Stream(uint64_t seq) const { return streams_[seq % streams_.size()]; }
  std::vector<EventData> Events(uint64_t seq) const { return batches_[seq % batches_.size()]; }
  size_t events_per_append() const { return batches_[0].size(); }
  const std::vector<std::string>& streams() const { return streams_; }
  const std::vector<std::vector<EventData>>& batches() const { return batches_; }

 private:
  std::vector<std::string> streams_;
  std::vector<std::vector<EventData>> batches_;
};

// Waiting longer than this past a loop's own budget means the engine lost a
// callback, which its contract (exactly once) rules out.
inline constexpr std::chrono::seconds kCallbackGrace{120};

class ClosedLoop {
 public:
  struct Spec {
    int appenders = 64;
    Clock::duration budget{};  // appenders stop submitting once it is spent
    uint64_t max_appends = 0;  // ...or once this many were submitted in all
  };
  struct Outcome {
    std::vector<int64_t> latencies_ns;  // one per acknowledged append
    int64_t elapsed_ns = 0;             // first submission to last callback
    std::string error;                  // the first failed append; empty when none
  };

  ClosedLoop(Store* store, const Workload* workload, Spec spec)
      : store_(store), workload_(workload), spec_(spec), appenders_(spec.appenders) {
    ANNAL_ASSERT(spec.appenders > 0 && spec.max_appends > 0);
  }

  Outcome Run() {
    started_ = Clock::now();
    deadline_ = started_ + spec_.budget;
    {
      std::lock_guard lock(mu_);
      running_ = spec_.appenders;  // before any callback can decrement it
    }
    for (auto& appender : appenders_) SubmitNext(&appender);
    WaitUntilAllStopped();
    return Collect();
  }

 private:
  struct Appender {
    std::vector<int64_t> latencies_ns;  // touched only by this appender's callback chain
  };

  void SubmitNext(Appender* appender) {
    uint64_t seq = next_seq_.fetch_add(1, std::memory_order_relaxed);
    if (seq >= spec_.max_appends || failed_.load(std::memory_order_relaxed)) {
      StopAppender(Status::Ok());
      return;
    }
    Clock::time_point submitted = Clock::now();
    store_->AppendAsync(workload_->Stream(seq), ExpectedVersion::Any(), workload_->Events(seq),
                        [this, appender, submitted](Result<AppendResult> result) {
                          OnAppended(appender, submitted, result);
                        });
  }

  void OnAppended(Appender* appender, Clock::time_point submitted,
                  const Result<AppendResult>& result) {
    Clock::time_point now = Clock::now();
    if (!result.ok()) {
      failed_.store(true, std::memory_order_relaxed);
      StopAppender(result.status());
      return;
    }
    appender->latencies_ns.push_back(ElapsedNs(submitted, now));
    if (now >= deadline_) {
      StopAppender(Status::Ok());
      return;
    }
    SubmitNext(appender);
  }

  void StopAppender(const Status& status) {
    std::lock_guard lock(mu_);
    if (!status.ok() && error_.empty()) error_ = status.ToString();
    ANNAL_ASSERT(running_ > 0);
    if (--running_ == 0) {
      finished_ = Clock::now();
      all_stopped_.notify_one();
    }
  }

  void WaitUntilAllStopped() {
    std::unique_lock lock(mu_);
    bool stopped =
        all_stopped_.wait_for(lock, spec_.budget + kCallbackGrace, [&] { return running_ == 0; });
    ANNAL_ASSERT_MSG(stopped, "an append's callback never ran");
  }

  Outcome Collect() {
    Outcome outcome;
    for (auto& appender : appenders_) {
      outcome.latencies_ns.insert(outcome.latencies_ns.end(), appender.latencies_ns.begin(),
                                  appender.latencies_ns.end());
    }
    std::lock_guard lock(mu_);
    outcome.elapsed_ns = ElapsedNs(started_, finished_);
    outcome.error = error_;
    return outcome;
  }

  Store* const store_;
  const Workload* const workload_;
  const Spec spec_;
  Clock::time_point started_, deadline_;  // written before the first submission
  std::vector<Appender> appenders_;       // sized once; elements never move
  std::atomic<uint64_t> next_seq_{0};
  std::atomic<bool> failed_{false};

  std::mutex mu_;
  std::condition_variable all_stopped_;
  int running_ = 0;             // guarded by mu_
  Clock::time_point finished_;  // guarded by mu_
  std::string error_;           // guarded by mu_
};

class OpenLoop {
 public:
  struct Spec {
    int64_t rate_per_s = 100'000;
    Clock::duration duration{};      // appends scheduled: rate * duration
    size_t max_in_flight = 64 * 16;  // an append that finds this many waits
    // Past this the pacing thread stops issuing: the engine is far behind
    // the offered rate and the rest of the schedule would only add run time.
    Clock::duration issue_budget{};
  };
  struct Outcome {
    std::vector<int64_t> latencies_ns;  // scheduled time to callback, per issued append
    uint64_t scheduled = 0;             // appends the schedule held
    uint64_t issued = 0;                // appends actually submitted
    uint64_t waited = 0;                // issued appends that waited for an in-flight slot
    int64_t elapsed_ns = 0;             // t0 to the last callback
    std::string error;
  };

  OpenLoop(Store* store, const Workload* workload, Spec spec)
      : store_(store), workload_(workload), spec_(spec) {
    ANNAL_ASSERT(spec.rate_per_s > 0 && spec.max_in_flight > 0);
    int64_t duration_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(spec.duration).count();
    scheduled_ = static_cast<uint64_t>(spec.rate_per_s * duration_ns / 1'000'000'000);
    ANNAL_ASSERT(scheduled_ > 0);
    latencies_ns_.resize(scheduled_);
  }

  Outcome Run() {
    t0_ = Clock::now();
    Clock::time_point issue_deadline = t0_ + spec_.issue_budget;
    uint64_t issued = 0, waited = 0;
    for (; issued < scheduled_; ++issued) {
      // sleep_until returns at once when the pacer is behind, so a late
      // pacer catches up in a burst rather than shifting the schedule.
      std::this_thread::sleep_until(ScheduledTime(issued));
      if (Clock::now() > issue_deadline) break;
      bool had_to_wait = false;
      if (!AcquireSlot(&had_to_wait)) break;
      waited += had_to_wait;
      Submit(issued);
    }
    WaitForCompletions(issued);
    return Collect(issued, waited);
  }

 private:
  Clock::time_point ScheduledTime(uint64_t i) const {
    int64_t offset_ns = static_cast<int64_t>(i) * 1'000'000'000 / spec_.rate_per_s;
    return t0_ + std::chrono::nanoseconds(offset_ns);
  }

  // Takes an in-flight slot, waiting for one when the cap is reached.
  // Returns false once an append failed: the run is over.
  bool AcquireSlot(bool* had_to_wait) {
    std::unique_lock lock(mu_);
    *had_to_wait = in_flight_ >= spec_.max_in_flight;
    changed_.wait(lock, [&] { return in_flight_ < spec_.max_in_flight || !error_.empty(); });
    if (!error_.empty()) return false;
    ++in_flight_;
    return true;
  }

  void Submit(uint64_t i) {
    store_->AppendAsync(workload_->Stream(i), ExpectedVersion::Any(), workload_->Events(i),
                        [this, i](Result<AppendResult> result) { OnAppended(i, result); });
  }

  void OnAppended(uint64_t i, const Result<AppendResult>& result) {
    // Slot i is written by this callback only and read after the last one.
    latencies_ns_[i] = ElapsedNs(ScheduledTime(i), Clock::now());
    {
      std::lock_guard lock(mu_);
      if (!result.ok() && error_.empty()) error_ = result.status().ToString();
      --in_flight_;
      ++completed_;
      last_completion_ = Clock::now();
    }
    changed_.notify_one();  // the pacing thread is the only waiter
  }

  void WaitForCompletions(uint64_t issued) {
    std::unique_lock lock(mu_);
    bool done = changed_.wait_for(lock, spec_.issue_budget + kCallbackGrace,
                                  [&] { return completed_ == issued; });
    ANNAL_ASSERT_MSG(done, "an append's callback never ran");
  }

  Outcome Collect(uint64_t issued, uint64_t waited) {
    std::lock_guard lock(mu_);
    Outcome outcome;
    outcome.latencies_ns.assign(latencies_ns_.begin(), latencies_ns_.begin() + issued);
    outcome.scheduled = scheduled_;
    outcome.issued = issued;
    outcome.waited = waited;
    outcome.elapsed_ns = ElapsedNs(t0_, last_completion_);
    outcome.error = error_;
    return outcome;
  }

  Store* const store_;
  const Workload* const workload_;
  const Spec spec_;
  uint64_t scheduled_ = 0;
  Clock::time_point t0_;               // written before the first submission
  std::vector<int64_t> latencies_ns_;  // slot i: see OnAppended

  std::mutex mu_;
  std::condition_variable changed_;    // a slot freed, or an append completed
  size_t in_flight_ = 0;               // guarded by mu_
  uint64_t completed_ = 0;             // guarded by mu_
  Clock::time_point last_completion_;  // guarded by mu_
  std::string error_;                  // guarded by mu_
};

}  // namespace annal::bench
