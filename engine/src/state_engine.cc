// StateEngine: loads a stream's state from the newest usable snapshot plus
// the events after it, and takes snapshots in the background.
//
// Finding the events up to a time T without scanning the stream: recorded_at
// never decreases along a stream, so a snapshot recorded at or before T
// bounds the target version from below and any snapshot recorded after T
// bounds it from above. Both come from the snapshot store's (stream,
// recorded_at) index, in logarithmic time; what lies between them (at most
// every * keep_sparse events) is read and cut at the first event after T.
// With no snapshot the events must all be folded anyway, so reading them up
// to the first one after T costs one event more than the fold itself.
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <limits>
#include <mutex>
#include <thread>

#include "annal/state.h"
#include "log_sink.h"
#include "snapshot_store.h"

namespace annal {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Events read from the log at a time while loading.
constexpr size_t kLoadChunk = 1024;

// Called for each event of a load in version order; sets *enough when it
// wants no more events.
using Visit = std::function<Status(RecordedEvent&& event, bool* enough)>;

struct Walked {
  std::optional<Snapshot> snapshot;
  bool any = false;  // a snapshot or at least one event
  uint64_t target_version = 0;
  int64_t target_recorded_at_ns = 0;
};

class StateEngineImpl final : public StateEngine {
 public:
  StateEngineImpl(Store* store, StateOptions options) : store_(store), options_(std::move(options)) {
    // Loads on the callers' threads and the taker log side by side.
    options_.log = OneLineAtATime(std::move(options_.log), "");
  }
  ~StateEngineImpl() override { Close(); }

  Status Start() {
    if (options_.snapshot_path.empty()) return Status::Ok();
    auto opened = SnapshotStore::Open(options_.snapshot_path, [this](const std::string& why) {
      skipped_.fetch_add(1, std::memory_order_relaxed);
      options_.log("state: " + why);
    });
    if (!opened.ok()) {
      options_.log("state: running without snapshots, every load replays: " + opened.status().message());
      return Status::Ok();
    }
    snapshots_ = std::move(*opened);
    auto position = snapshots_->TakerPosition();
    if (!position.ok()) {
      options_.log("state: running without snapshots: " + position.status().message());
      snapshots_.reset();
      return Status::Ok();
    }
    taker_position_ = *position;
    if (options_.background_snapshots && !options_.reducers.empty()) {
      taker_ = std::thread([this] { TakerLoop(); });
      ::pthread_setname_np(taker_.native_handle(), "snapshots");
    }
    return Status::Ok();
  }

  std::shared_ptr<const Reducer> ReducerFor(std::string_view stream) const override {
    auto it = options_.reducers.find(StreamCategory(stream));
    return it == options_.reducers.end() ? nullptr : it->second;
  }

  Result<State> Load(std::string_view stream, StateTarget target, const Reducer* reducer) override {
    loads_.fetch_add(1, std::memory_order_relaxed);
    return Fold(stream, target, reducer);
  }

  Result<StatePlan> Plan(std::string_view stream, StateTarget target, std::string_view reducer,
                         uint32_t schema_version, size_t max_events) override {
    loads_.fetch_add(1, std::memory_order_relaxed);
    StatePlan plan;
    Visit collect = [&](RecordedEvent&& e, bool* enough) -> Status {
      if (plan.events.size() < max_events) {
        plan.events.push_back(std::move(e));
      } else {
        plan.complete = false;
        *enough = true;
      }
      return Status::Ok();
    };
    ANNAL_ASSIGN_OR_RETURN(Walked w, Walk(stream, target, reducer, schema_version, nullptr, collect));
    plan.snapshot = std::move(w.snapshot);
    plan.target_version = StreamVersion(w.target_version);
    plan.target_recorded_at_ns = w.target_recorded_at_ns;
    return plan;
  }

  Result<int64_t> WriteSnapshot(Snapshot snapshot) override {
    if (snapshot.reducer.empty() || snapshot.reducer.size() > 255)
      return Status::InvalidArgument("a snapshot's reducer name must be 1..255 bytes");
    if (!snapshots_) return Status::Unavailable("the snapshot store is not available");
    ANNAL_ASSIGN_OR_RETURN(auto events,
                           store_->ReadStream(snapshot.stream, snapshot.version, ReadDirection::kForward, 1));
    if (events.empty())
      return Status::NotFound("stream '" + snapshot.stream + "' has no version " +
                              std::to_string(snapshot.version.get()));
    const int64_t recorded_at_ns = events.front().recorded_at_ns;
    snapshot.recorded_at_ns = recorded_at_ns;
    snapshot.position = events.front().position;
    snapshot.taken_at_ns = NowNs();
    snapshot.state_size = snapshot.state.size();
    SnapshotPolicy policy = PolicyFor(snapshot.stream);
    ANNAL_RETURN_IF_ERROR(snapshots_->Put({{std::move(snapshot), policy}}, std::nullopt));
    written_.fetch_add(1, std::memory_order_relaxed);
    return recorded_at_ns;
  }

  Result<std::vector<Snapshot>> ListSnapshots(std::string_view stream) override {
    ANNAL_RETURN_IF_ERROR(store_->GetStreamInfo(stream).status());
    if (!snapshots_) return Status::Unavailable("the snapshot store is not available");
    return snapshots_->List(stream);
  }

  bool WaitForTaker(GlobalPosition position, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(taker_mu_);
    return taker_cv_.wait_for(lock, timeout, [&] { return taker_position_ >= position.get() || stop_; }) &&
           taker_position_ >= position.get();
  }

  StateStats GetStats() const override {
    StateStats s;
    s.snapshots_written = written_.load(std::memory_order_relaxed);
    s.snapshots_skipped = skipped_.load(std::memory_order_relaxed);
    s.loads = loads_.load(std::memory_order_relaxed);
    s.taker_errors = taker_errors_.load(std::memory_order_relaxed);
    s.snapshot_store_ok = snapshots_ != nullptr;
    std::lock_guard lock(taker_mu_);
    s.taker_position = taker_position_;
    return s;
  }

  void Close() override {
    {
      std::lock_guard lock(taker_mu_);
      stop_ = true;
    }
    taker_cv_.notify_all();
    if (taker_.joinable()) taker_.join();
  }

 private:
  SnapshotPolicy PolicyFor(std::string_view stream) const {
    auto it = options_.policies.find(StreamCategory(stream));
    return it == options_.policies.end() ? options_.policy : it->second;
  }

  // Load without counting it: the taker's folds are not clients' loads.
  Result<State> Fold(std::string_view stream, StateTarget target, const Reducer* reducer) {
    std::shared_ptr<const Reducer> configured;
    if (reducer == nullptr) {
      configured = ReducerFor(stream);
      if (!configured)
        return Status::Unavailable("no reducer is configured for category '" +
                                   std::string(StreamCategory(stream)) + "'");
      reducer = configured.get();
    }
    State out;
    out.stream = std::string(stream);
    out.reducer = reducer->name();
    out.schema_version = reducer->schema_version();
    // Events are folded a chunk at a time, so a reducer decodes its state
    // once per chunk (Reducer::ApplyAll).
    std::vector<RecordedEvent> pending;
    auto flush = [&]() -> Status {
      if (pending.empty()) return Status::Ok();
      if (!out.snapshot_version && out.events_folded == 0) out.state = reducer->Initial();
      size_t applied = 0;
      Status s = reducer->ApplyAll(&out.state, pending, &applied);
      out.events_folded += applied;
      if (!s.ok())
        return s.WithContext("stream '" + out.stream + "' version " +
                             std::to_string(pending[std::min(applied, pending.size() - 1)].version.get()));
      pending.clear();
      return Status::Ok();
    };
    Visit fold = [&](RecordedEvent&& e, bool*) -> Status {
      pending.push_back(std::move(e));
      return pending.size() >= kLoadChunk ? flush() : Status::Ok();
    };
    ANNAL_ASSIGN_OR_RETURN(Walked w, Walk(stream, target, reducer->name(), reducer->schema_version(),
                                          [&](const Snapshot& snap) {
                                            out.state = snap.state;
                                            out.snapshot_version = snap.version;
                                          },
                                          fold));
    ANNAL_RETURN_IF_ERROR(flush());
    out.version = StreamVersion(w.target_version);
    out.recorded_at_ns = w.target_recorded_at_ns;
    return out;
  }

  // Resolves `target`, finds the newest usable snapshot of `reducer` at
  // `schema_version` before it (`on_snapshot` sees it) and visits the events
  // after the snapshot up to the target, in order.
  Result<Walked> Walk(std::string_view stream, StateTarget target, std::string_view reducer,
                      uint32_t schema_version, const std::function<void(const Snapshot&)>& on_snapshot,
                      const Visit& visit) {
    ANNAL_ASSIGN_OR_RETURN(StreamInfo info, store_->GetStreamInfo(stream));
    const uint64_t head = info.head_version.get();
    uint64_t max_version = head;
    int64_t max_time = std::numeric_limits<int64_t>::max();
    bool exact = true;
    switch (target.kind) {
      case StateTarget::Kind::kHead: break;
      case StateTarget::Kind::kVersion:
        if (target.version > head)
          return Status::NotFound("stream '" + std::string(stream) + "' has no version " +
                                  std::to_string(target.version) + ": its last version is " + std::to_string(head));
        max_version = target.version;
        break;
      case StateTarget::Kind::kTime:
        if (target.time_ns < info.first_recorded_at_ns)
          return Status::NotFound("stream '" + std::string(stream) + "' did not exist at " +
                                  FormatTimestamp(target.time_ns) + ": its first event was recorded at " +
                                  FormatTimestamp(info.first_recorded_at_ns));
        if (target.time_ns < info.last_recorded_at_ns) {
          max_time = target.time_ns;
          exact = false;
        }
        break;
    }

    Walked w;
    if (snapshots_ && !reducer.empty()) {
      auto snap = snapshots_->NewestAtOrBefore(stream, reducer, schema_version, max_version, max_time);
      if (snap.ok()) {
        w.snapshot = std::move(*snap);
      } else {
        options_.log("state: snapshot lookup failed, replaying instead: " + snap.status().message());
      }
    }
    // A snapshot past the target bounds a time target from above, and its
    // event is where the walk through the log can start (ReadStreamNear).
    GlobalPosition near;
    bool at_snapshot = exact && w.snapshot && w.snapshot->version.get() == max_version;
    if (snapshots_ && (!exact || max_version < head) && !at_snapshot) {
      auto above = exact ? snapshots_->FirstAtOrAfter(stream, max_version)
                         : snapshots_->FirstRecordedAfter(stream, max_time);
      if (above.ok() && above->has_value()) {
        const Snapshot& s = **above;
        if (!exact && s.version.get() > 0) max_version = std::min(max_version, s.version.get() - 1);
        near = s.position;
      }
    }

    uint64_t from = 0;
    if (w.snapshot) {
      if (on_snapshot) on_snapshot(*w.snapshot);
      w.any = true;
      w.target_version = w.snapshot->version.get();
      w.target_recorded_at_ns = w.snapshot->recorded_at_ns;
      from = w.target_version + 1;
    }
    // Once the visitor has enough, an exact target is known; a time target
    // is still found by reading on to the first event past it.
    bool wanted = true, done = false;
    while (!done && from <= max_version) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kLoadChunk, max_version - from + 1));
      ANNAL_ASSIGN_OR_RETURN(auto events,
                             near.get() != 0
                                 ? store_->ReadStreamNear(stream, StreamVersion(from), StreamVersion(from + want - 1), near)
                                 : store_->ReadStream(stream, StreamVersion(from), ReadDirection::kForward, want));
      if (events.empty()) break;
      for (RecordedEvent& e : events) {
        if (e.recorded_at_ns > max_time) {
          done = true;
          break;
        }
        w.any = true;
        w.target_version = e.version.get();
        w.target_recorded_at_ns = e.recorded_at_ns;
        if (!wanted) continue;
        bool enough = false;
        ANNAL_RETURN_IF_ERROR(visit(std::move(e), &enough));
        wanted = !enough;
        if (!wanted && exact) {
          done = true;
          break;
        }
      }
      from += events.size();
    }
    if (!wanted && exact && w.target_version < max_version) {
      // The visitor stopped early; the target is still the one asked for.
      ANNAL_ASSIGN_OR_RETURN(auto last, store_->ReadStream(stream, StreamVersion(max_version),
                                                           ReadDirection::kForward, 1));
      if (last.empty()) return Status::NotFound("stream '" + std::string(stream) + "' lost its version " +
                                                std::to_string(max_version));
      w.target_version = max_version;
      w.target_recorded_at_ns = last.front().recorded_at_ns;
    }
    if (!w.any)
      return Status::NotFound("stream '" + std::string(stream) + "' did not exist at " + target.ToString());
    return w;
  }

  // The background snapshot taker: follows the global log and stores the
  // state of each reducer-backed stream after every `every`-th event.
  void TakerLoop() {
    uint64_t position;
    {
      std::lock_guard lock(taker_mu_);
      position = taker_position_;
    }
    for (;;) {
      {
        std::lock_guard lock(taker_mu_);
        if (stop_) return;
      }
      uint64_t head = store_->DurableHead().get();
      if (position >= head) {
        store_->WaitForDurableHead(GlobalPosition(position), std::chrono::milliseconds(100));
        continue;
      }
      auto events = store_->ReadAll(GlobalPosition(position + 1), options_.scan_batch);
      if (!events.ok()) {
        Backoff("reading the log after position " + std::to_string(position) + ": " + events.status().message());
        continue;
      }
      uint64_t next = events->empty() ? head : events->back().position.get();
      std::vector<SnapshotStore::Write> writes;
      for (const RecordedEvent& e : *events) {
        auto reducer = ReducerFor(e.stream);
        if (!reducer) continue;
        SnapshotPolicy policy = PolicyFor(e.stream);
        if (policy.every == 0 || (e.version.get() + 1) % policy.every != 0) continue;
        auto state = Fold(e.stream, StateTarget::Version(e.version.get()), reducer.get());
        if (!state.ok()) {
          taker_errors_.fetch_add(1, std::memory_order_relaxed);
          options_.log("state: no snapshot of '" + e.stream + "' at version " + std::to_string(e.version.get()) +
                       ": " + state.status().message());
          continue;
        }
        Snapshot s;
        s.stream = e.stream;
        s.version = e.version;
        s.position = e.position;
        s.recorded_at_ns = e.recorded_at_ns;
        s.reducer = reducer->name();
        s.schema_version = reducer->schema_version();
        s.state = std::move(state->state);
        s.state_size = s.state.size();
        s.taken_at_ns = NowNs();
        writes.push_back({std::move(s), policy});
      }
      Status put = snapshots_->Put(writes, next);
      if (!put.ok()) {
        Backoff("storing snapshots: " + put.message());
        continue;
      }
      written_.fetch_add(writes.size(), std::memory_order_relaxed);
      position = next;
      {
        std::lock_guard lock(taker_mu_);
        taker_position_ = position;
      }
      taker_cv_.notify_all();
    }
  }

  void Backoff(const std::string& why) {
    taker_errors_.fetch_add(1, std::memory_order_relaxed);
    options_.log("state: snapshot taker: " + why + "; retrying in 1 s");
    std::unique_lock lock(taker_mu_);
    taker_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_; });
  }

  Store* const store_;
  StateOptions options_;
  std::unique_ptr<SnapshotStore> snapshots_;  // null: running without snapshots

  std::atomic<uint64_t> written_{0}, skipped_{0}, loads_{0}, taker_errors_{0};

  mutable std::mutex taker_mu_;
  std::condition_variable taker_cv_;
  uint64_t taker_position_ = 0;  // guarded by taker_mu_
  bool stop_ = false;            // guarded by taker_mu_
  std::thread taker_;
};

}  // namespace

Result<std::unique_ptr<StateEngine>> StateEngine::Open(Store* store, StateOptions options) {
  for (const auto& [category, reducer] : options.reducers)
    if (!reducer) return Status::InvalidArgument("reducer for category '" + category + "' is null");
  auto engine = std::make_unique<StateEngineImpl>(store, std::move(options));
  ANNAL_RETURN_IF_ERROR(engine->Start());
  return std::unique_ptr<StateEngine>(std::move(engine));
}

}  // namespace annal
