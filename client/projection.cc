// The projection runner (see projection.h).
//
// Threads. Start runs on the caller's thread: it connects, loads the
// checkpoint, resets a projection that rebuilds, and subscribes one that
// does not. Everything after that runs on the runner's own thread
// (`thread_`), which owns the subscription and is the only one to call
// Handle and Save in live mode. During a rebuild it starts one thread per
// slice, each with its own connection, and prints the progress line while
// they run.
//
// Live delivery. The subscription's callbacks run on the live client's I/O
// thread and must not block, so OnEvent only appends to `queue_`; the
// runner's thread takes batches from it. The queue is bounded
// (max_queued_events): when it is full the callback marks the subscription
// overflowed and drops what follows; the runner's thread stops the
// subscription, handles what was queued, and subscribes again after the
// last queued event. Nothing is lost and nothing handled twice; the price is
// a second read of the dropped stretch by the server.
//
// Guarded by mu_: queue_, the flags set by the callbacks, the progress the
// waiters look at (handled_through_, checkpoint_, live_), error_.
#include "annal/projection.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "annal/assert.h"

namespace annal::client {

// ------------------------------------------------------------ ServerCheckpoint

Result<GlobalPosition> ServerCheckpoint::Load() {
  auto got = client_.GetCheckpoint(name_);
  if (!got.ok()) return got.status().WithContext("loading the checkpoint of " + name_);
  known_.reset();
  if (got->has_value()) known_ = (*got)->position;
  return known_.value_or(GlobalPosition(0));
}

Status ServerCheckpoint::Save(GlobalPosition position) {
  CheckpointExpectation expected = known_ ? CheckpointExpectation::At(*known_) : CheckpointExpectation::None();
  auto set = client_.SetCheckpoint(name_, position, writer_id_, expected);
  bool own_write = false;
  if (!set.ok() && set.status().code() == StatusCode::kWrongExpectedVersion &&
      set.status().actual_version() == static_cast<int64_t>(position.get())) {
    // Perhaps a resend that met its own first write: then the stored blob
    // is this keeper's id.
    auto stored = client_.GetCheckpoint(name_);
    own_write = stored.ok() && stored->has_value() && (*stored)->blob == writer_id_ &&
                (*stored)->position == position;
  }
  if (!set.ok() && !own_write) return set.status().WithContext("saving the checkpoint of " + name_);
  known_ = position;
  return Status::Ok();
}

Status ServerCheckpoint::Reset() {
  auto deleted = client_.DeleteCheckpoint(name_);
  if (!deleted.ok()) return deleted.status().WithContext("deleting the checkpoint of " + name_);
  known_.reset();
  return Status::Ok();
}

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How often the rebuild's progress line is redrawn.
constexpr auto kProgressInterval = 250ms;
// How long the live subscription must have been quiet before the runner
// moves the checkpoint past events its filter skipped.
constexpr auto kIdleCheckpointInterval = 200ms;
// max_queued_events when the options leave it 0, in batches.
constexpr uint32_t kDefaultQueueBatches = 8;

// One slice of a rebuild: positions [first, last], both inclusive.
struct Slice {
  uint32_t index = 0;
  GlobalPosition first;
  GlobalPosition last;
};

// Splits [1, head] into at most `count` contiguous, disjoint, non-empty
// slices whose sizes differ by at most one.
std::vector<Slice> SplitSlices(uint64_t head, uint32_t count) {
  std::vector<Slice> slices;
  if (head == 0) return slices;
  uint64_t k = std::min<uint64_t>(count, head);
  uint64_t base = head / k, extra = head % k;
  uint64_t first = 1;
  for (uint64_t i = 0; i < k; ++i) {
    uint64_t size = base + (i < extra ? 1 : 0);
    slices.push_back({static_cast<uint32_t>(i), GlobalPosition(first), GlobalPosition(first + size - 1)});
    first += size;
  }
  ANNAL_ASSERT(first == head + 1);
  return slices;
}

std::string FormatDuration(double seconds) {
  auto s = static_cast<uint64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%luh%02lum", static_cast<unsigned long>(s / 3600),
                  static_cast<unsigned long>(s % 3600 / 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%lum%02lus", static_cast<unsigned long>(s / 60), static_cast<unsigned long>(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lus", static_cast<unsigned long>(s));
  return buf;
}

// The rebuild's one-line progress report on stderr, redrawn in place.
class ProgressLine {
 public:
  ProgressLine(std::string name, uint64_t total_positions)
      : name_(std::move(name)), total_(total_positions), start_(Clock::now()) {}

  // `done`: positions replayed so far (matching or not: the total is only
  // known in positions). `final` ends the line.
  void Print(uint64_t done, bool final) {
    double elapsed_s = std::chrono::duration<double>(Clock::now() - start_).count();
    double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0;
    unsigned percent = total_ == 0 ? 100 : static_cast<unsigned>(done * 100 / total_);
    std::string left = final          ? "done"
                       : rate > 0     ? FormatDuration(static_cast<double>(total_ - std::min(done, total_)) / rate) + " left"
                                      : "? left";
    std::fprintf(stderr, "\rrebuilding %s: %lu / %lu events (%u%%), %.0f events/s, %s   ", name_.c_str(),
                 static_cast<unsigned long>(done), static_cast<unsigned long>(total_), percent, rate, left.c_str());
    if (final) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  const std::string name_;
  const uint64_t total_;
  const Clock::time_point start_;
};

class Runner final : public ProjectionRunner {
 public:
  Runner(const ClientOptions& client_options, ProjectionOptions options, ProjectionHandler* handler,
         CheckpointKeeper* keeper, std::unique_ptr<Client> live_client, GlobalPosition checkpoint,
         uint32_t slices, std::optional<GlobalPosition> rebuild_head)
      : client_options_(client_options),
        options_(std::move(options)),
        handler_(handler),
        keeper_(keeper),
        live_client_(std::move(live_client)),
        slices_(slices),
        rebuild_head_(rebuild_head),
        max_queued_events_(options_.max_queued_events != 0 ? options_.max_queued_events
                                                           : kDefaultQueueBatches * options_.batch_events),
        handled_through_(rebuild_head ? GlobalPosition(0) : checkpoint),
        checkpoint_(handled_through_) {}

  ~Runner() override { (void)Stop(); }

  // Subscribes (unless rebuilding first) and starts the runner's thread.
  Status Begin() {
    if (!rebuild_head_) ANNAL_RETURN_IF_ERROR(Subscribe(handled_through_ + 1));
    thread_ = std::thread([this] { Run(); });
    ::pthread_setname_np(thread_.native_handle(), "projection");
    return Status::Ok();
  }

  bool WaitFor(GlobalPosition position, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return finished_ || (live_ && handled_through_ >= position); });
    return live_ && handled_through_ >= position;
  }

  Status Stop() override {
    std::lock_guard stop_lock(stop_mu_);
    {
      std::lock_guard lock(mu_);
      stop_requested_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mu_);
    return error_;
  }

  ProjectionStats Stats() const override {
    std::lock_guard lock(mu_);
    ProjectionStats s;
    s.events_handled = events_handled_;
    s.batches = batches_;
    s.checkpoint = checkpoint_;
    s.rebuild_head = rebuild_head_.value_or(GlobalPosition(0));
    s.live = live_ && !finished_;
    s.stopped = finished_;
    s.resubscribes = resubscribes_;
    return s;
  }

 private:
  // --- the runner's thread

  void Run() {
    Status s = rebuild_head_ ? Rebuild() : Status::Ok();
    if (s.ok() && !StopRequested()) s = Follow();
    subscription_.reset();  // no callback runs after this
    std::lock_guard lock(mu_);
    error_ = s;
    finished_ = true;
    live_ = false;
    cv_.notify_all();
  }

  bool StopRequested() {
    std::lock_guard lock(mu_);
    return stop_requested_;
  }

  // Replays [1, rebuild head] in slices, then records the head as the
  // checkpoint and subscribes after it. A stop cuts it short without
  // recording anything.
  Status Rebuild() {
    const uint64_t head = rebuild_head_->get();
    std::vector<Slice> slices = SplitSlices(head, slices_);
    std::vector<Status> results(slices.size());
    std::vector<std::thread> threads;
    size_t running = slices.size();
    for (size_t i = 0; i < slices.size(); ++i) {
      threads.emplace_back([this, &slices, &results, &running, i] {
        results[i] = RunSlice(slices[i]);
        std::lock_guard lock(mu_);
        if (!results[i].ok()) slice_failed_ = true;
        --running;
        cv_.notify_all();
      });
      ::pthread_setname_np(threads.back().native_handle(), ("replay-" + std::to_string(i)).substr(0, 15).c_str());
    }
    const bool show = options_.progress && (options_.force_progress || ::isatty(STDERR_FILENO) == 1);
    ProgressLine progress(options_.name, head);
    uint64_t replayed = 0;
    while (true) {
      bool done;
      {
        std::unique_lock lock(mu_);
        done = cv_.wait_for(lock, kProgressInterval, [&] { return running == 0; });
        replayed = positions_replayed_;
      }
      if (done) break;
      if (show) progress.Print(replayed, false);
    }
    for (std::thread& t : threads) t.join();
    bool complete = !StopRequested() && std::all_of(results.begin(), results.end(), [](const Status& s) { return s.ok(); });
    if (show) {
      if (complete) progress.Print(replayed, true);
      else std::fputc('\n', stderr);
    }
    for (const Status& s : results) ANNAL_RETURN_IF_ERROR(s);
    if (!complete) return Status::Ok();  // stopped
    Status saved = keeper_->Save(*rebuild_head_);
    if (!saved.ok()) return saved.WithContext("projection " + options_.name + ": after the rebuild");
    {
      std::lock_guard lock(mu_);
      handled_through_ = checkpoint_ = *rebuild_head_;
    }
    return Subscribe(*rebuild_head_ + 1);
  }

  // Reads one slice page by page on a connection of its own and hands each
  // page to the handler, reading the next page while the handler works on
  // this one (at most one read ahead). Every page moves `from` on by at
  // least one position, so the loop ends.
  Status RunSlice(const Slice& slice) {
    auto client = Client::Connect(client_options_);
    if (!client.ok()) return client.status().WithContext("projection " + options_.name + ": rebuild slice");
    auto read = [&](GlobalPosition from) {
      return (*client)->ReadAllRange(from, slice.last, options_.batch_events, options_.filter);
    };
    GlobalPosition from = slice.first;
    Result<AllEventsPage> page = read(from);
    while (true) {
      {
        std::lock_guard lock(mu_);
        if (stop_requested_ || slice_failed_) return Status::Ok();
      }
      if (!page.ok()) return page.status().WithContext("projection " + options_.name + ": rebuild slice");
      if (page->next_position <= from)
        return Status::Unavailable("projection " + options_.name + ": READ_ALL_RANGE from " +
                                   std::to_string(from.get()) + " did not move on (next position " +
                                   std::to_string(page->next_position.get()) + ")");
      GlobalPosition through = std::min(GlobalPosition(page->next_position.get() - 1), slice.last);
      ANNAL_RETURN_IF_ERROR(CheckPage(page->events, from, through));
      // Destroyed (waited for) before `client`, on every way out.
      std::future<Result<AllEventsPage>> ahead;
      if (through < slice.last) ahead = std::async(std::launch::async, read, through + 1);
      if (!page->events.empty()) {
        ProjectionBatch batch{page->events, through, true, slice.index};
        Status s = handler_->Handle(batch);
        if (!s.ok())
          return s.WithContext("projection " + options_.name + ": handling rebuild slice " +
                               std::to_string(slice.index) + " up to position " + std::to_string(through.get()));
      }
      {
        std::lock_guard lock(mu_);
        events_handled_ += page->events.size();
        batches_ += page->events.empty() ? 0 : 1;
        positions_replayed_ += through.get() - from.get() + 1;
      }
      if (!ahead.valid()) return Status::Ok();
      page = ahead.get();
      from = through + 1;
    }
  }

  // The server's page must lie in [from, through] in ascending order.
  Status CheckPage(const std::vector<RecordedEvent>& events, GlobalPosition from, GlobalPosition through) {
    GlobalPosition previous(from.get() - 1);
    for (const RecordedEvent& e : events) {
      if (e.position <= previous || e.position > through)
        return Status::Unavailable("projection " + options_.name + ": READ_ALL_RANGE [" +
                                   std::to_string(from.get()) + ", " + std::to_string(through.get()) +
                                   "] returned position " + std::to_string(e.position.get()) + " out of order");
      previous = e.position;
    }
    return Status::Ok();
  }

  // Follows the log until stopped or an error.
  Status Follow() {
    std::vector<RecordedEvent> batch;
    while (true) {
      bool resubscribe = false, idle = false;
      Status dropped;
      batch.clear();
      {
        std::unique_lock lock(mu_);
        bool woken = cv_.wait_for(lock, kIdleCheckpointInterval, [&] {
          return stop_requested_ || !queue_.empty() || overflowed_ || !dropped_.ok();
        });
        if (stop_requested_) return Status::Ok();
        if (!queue_.empty()) {
          size_t n = std::min<size_t>(queue_.size(), options_.batch_events);
          for (size_t i = 0; i < n; ++i) {
            batch.push_back(std::move(queue_.front()));
            queue_.pop_front();
          }
        } else if (overflowed_) {
          resubscribe = true;
        } else if (!dropped_.ok()) {
          dropped = dropped_;
        } else {
          idle = !woken && live_;
        }
      }
      if (!dropped.ok()) return dropped.WithContext("projection " + options_.name + ": subscription dropped");
      if (resubscribe) {
        ANNAL_RETURN_IF_ERROR(Resubscribe());
      } else if (!batch.empty()) {
        if (Overflowed() && subscription_) subscription_->Stop();  // it resumes once the queue drained
        ANNAL_RETURN_IF_ERROR(Commit(batch, batch.back().position));
      } else if (idle) {
        ANNAL_RETURN_IF_ERROR(AdvanceIdle());
      }
    }
  }

  bool Overflowed() {
    std::lock_guard lock(mu_);
    return overflowed_;
  }

  // Hands a live batch to the handler, then moves the checkpoint to
  // `through` (unless the handler does that itself).
  Status Commit(std::span<const RecordedEvent> events, GlobalPosition through) {
    ProjectionBatch batch{events, through, false, 0};
    Status s = handler_->Handle(batch);
    if (!s.ok())
      return s.WithContext("projection " + options_.name + ": handling events up to position " +
                           std::to_string(through.get()));
    if (!keeper_->handler_saves_checkpoint()) {
      s = keeper_->Save(through);
      if (!s.ok()) return s.WithContext("projection " + options_.name);
    }
    std::lock_guard lock(mu_);
    handled_through_ = checkpoint_ = through;
    events_handled_ += events.size();
    ++batches_;
    cv_.notify_all();
    return Status::Ok();
  }

  // The subscription is quiet: move the checkpoint past the events the
  // filter skipped. The head alone is not enough, since a matching event
  // below it may still be on its way to the queue; so ask the server for
  // the first matching event after what was handled, and stop just before
  // it. That holds whatever the subscription has delivered so far.
  Status AdvanceIdle() {
    GlobalPosition handled;
    {
      std::lock_guard lock(mu_);
      handled = handled_through_;
    }
    auto head = live_client_->ReadHead();
    if (!head.ok()) return head.status().WithContext("projection " + options_.name + ": reading the head");
    GlobalPosition last(head->durable_head);
    if (last <= handled) return Status::Ok();
    auto page = live_client_->ReadAllRange(handled + 1, last, 1, options_.filter);
    if (!page.ok()) return page.status().WithContext("projection " + options_.name + ": scanning past the filter");
    GlobalPosition through = std::min(GlobalPosition(page->next_position.get() - 1), last);
    if (!page->events.empty()) through = std::min(through, GlobalPosition(page->events.front().position.get() - 1));
    if (through <= handled) return Status::Ok();
    return Commit({}, through);
  }

  // After an overflow: the old subscription is stopped and the queue
  // drained; start again after the last event queued.
  Status Resubscribe() {
    if (subscription_) subscription_->Stop();
    GlobalPosition from;
    {
      std::lock_guard lock(mu_);
      from = last_queued_ + 1;
      overflowed_ = false;
      ++resubscribes_;
      dropped_ = Status::Ok();  // a drop while overflowed is mended by the same resubscribe
    }
    subscription_.reset();
    return Subscribe(from);
  }

  // --- the live client's I/O thread (and Subscribe's caller)

  Status Subscribe(GlobalPosition from) {
    {
      std::lock_guard lock(mu_);
      last_queued_ = GlobalPosition(from.get() - 1);
    }
    SubscriptionHandler h;
    h.on_event = [this](const RecordedEvent& e) { OnEvent(e); };
    h.on_caught_up = [this] {
      std::lock_guard lock(mu_);
      live_ = true;
      cv_.notify_all();
    };
    h.on_dropped = [this](const Status& s) {
      std::lock_guard lock(mu_);
      dropped_ = s.ok() ? Status::Unavailable("dropped") : s;
      cv_.notify_all();
    };
    auto sub = live_client_->SubscribeToAll(from, options_.filter, std::move(h));
    if (!sub.ok())
      return sub.status().WithContext("projection " + options_.name + ": subscribing from position " +
                                      std::to_string(from.get()));
    subscription_ = std::move(*sub);
    return Status::Ok();
  }

  void OnEvent(const RecordedEvent& e) {
    std::lock_guard lock(mu_);
    if (overflowed_) return;  // read again after the resubscribe
    if (queue_.size() >= max_queued_events_) {
      overflowed_ = true;
    } else {
      ANNAL_ASSERT(e.position > last_queued_);
      queue_.push_back(e);
      last_queued_ = e.position;
    }
    cv_.notify_all();
  }

  const ClientOptions client_options_;
  const ProjectionOptions options_;
  ProjectionHandler* const handler_;
  CheckpointKeeper* const keeper_;
  const std::unique_ptr<Client> live_client_;
  const uint32_t slices_;
  const std::optional<GlobalPosition> rebuild_head_;  // set: rebuild up to here first
  const size_t max_queued_events_;

  std::thread thread_;
  std::unique_ptr<Subscription> subscription_;  // the runner's thread's (Start's before it runs)
  std::mutex stop_mu_;                          // one Stop at a time

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RecordedEvent> queue_;
  GlobalPosition last_queued_;  // the subscription resumes after it
  bool overflowed_ = false;     // the queue was full; events after last_queued_ were dropped
  Status dropped_;              // the subscription ended (on_dropped)
  bool stop_requested_ = false;
  bool slice_failed_ = false;
  bool live_ = false;           // the subscription caught up
  bool finished_ = false;       // the runner's thread ended
  Status error_;
  GlobalPosition handled_through_;  // handled and checkpointed up to here
  GlobalPosition checkpoint_;       // last saved
  uint64_t events_handled_ = 0;
  uint64_t batches_ = 0;
  uint64_t positions_replayed_ = 0;  // during a rebuild, for the progress line
  uint64_t resubscribes_ = 0;
};

}  // namespace

Result<std::unique_ptr<ProjectionRunner>> ProjectionRunner::Start(const ClientOptions& client,
                                                                  ProjectionOptions options,
                                                                  ProjectionHandler* handler,
                                                                  CheckpointKeeper* keeper) {
  ANNAL_ASSERT(handler != nullptr && keeper != nullptr);
  if (options.batch_events == 0 || options.batch_events > kMaxProjectionBatchEvents)
    return Status::InvalidArgument("projection " + options.name + ": batch_events must be 1.." +
                                   std::to_string(kMaxProjectionBatchEvents));
  if (options.slices > kMaxProjectionSlices)
    return Status::InvalidArgument("projection " + options.name + ": at most " +
                                   std::to_string(kMaxProjectionSlices) + " slices");
  uint32_t slices = options.slices != 0 ? options.slices
                                        : std::clamp(std::thread::hardware_concurrency(), 1u, kMaxProjectionSlices);
  ANNAL_ASSIGN_OR_RETURN(std::unique_ptr<Client> live, Client::Connect(client));
  ANNAL_ASSIGN_OR_RETURN(GlobalPosition checkpoint, keeper->Load());
  std::optional<GlobalPosition> rebuild_head;
  if (options.rebuild || (checkpoint.get() == 0 && slices > 1)) {
    ANNAL_RETURN_IF_ERROR(keeper->Reset());
    Status s = handler->Reset();
    if (!s.ok()) return s.WithContext("projection " + options.name + ": resetting the read model");
    auto head = live->ReadHead();
    if (!head.ok()) return head.status().WithContext("projection " + options.name + ": reading the head");
    rebuild_head = GlobalPosition(head->durable_head);
  }
  auto runner = std::make_unique<Runner>(client, std::move(options), handler, keeper, std::move(live), checkpoint,
                                         slices, rebuild_head);
  ANNAL_RETURN_IF_ERROR(runner->Begin());
  return std::unique_ptr<ProjectionRunner>(std::move(runner));
}

}  // namespace annal::client
