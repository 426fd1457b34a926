// State of an entity: reducers, snapshots, and loading a stream's state at
// its head, at a version, or as of a past time.
//
//   annal::StateOptions o;
//   o.reducers["account"] = annal::JsonMergePatchReducer();
//   auto states = annal::StateEngine::Open(store.get(), o);
//   auto s = (*states)->Load("account-42", annal::StateTarget::AsOf(t_ns));
//   // s->state is the fold of exactly the events recorded at or before t_ns
//
// A reducer folds events into state: state' = Apply(state, event). A
// snapshot is the state after one version of a stream under one reducer and
// schema version. Snapshots live in their own store beside the log
// (docs/format.md, "The snapshot store"), each row with a checksum; they are
// an optimisation only. A snapshot that is missing, fails its checksum or was
// written by another schema version is passed over, and the answer comes from
// an older snapshot or from a replay: the same answer, more slowly.
//
// The engine takes snapshots in the background: one thread follows the
// global log and, for each stream whose category has a reducer, stores the
// state after every N-th event (SnapshotPolicy::every). It only reads the
// store, so appends never wait for it, and it resumes where it stopped after
// a restart (its position is kept in the snapshot store).
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "annal/status.h"
#include "annal/store.h"
#include "annal/types.h"

namespace annal {

class Reducer {
 public:
  virtual ~Reducer() = default;
  // Names the reducer in snapshots; 1..255 bytes.
  virtual const std::string& name() const = 0;
  // Bumped whenever the state's encoding changes: snapshots of any other
  // schema version are ignored.
  virtual uint32_t schema_version() const = 0;
  // The state before the stream's first event.
  virtual std::string Initial() const = 0;
  // Folds one event into *state. An error stops the load and is returned
  // with the stream and version added to its message.
  virtual Status Apply(std::string* state, const RecordedEvent& event) const = 0;
  // Folds `events` in order. On an error, *applied is the number folded
  // before the event that failed. The default calls Apply for each; a
  // reducer whose state is costly to decode and encode overrides it to do
  // that once per call (the JSON reducer does).
  virtual Status ApplyAll(std::string* state, std::span<const RecordedEvent> events, size_t* applied) const;
};

// The built-in reducer "json-merge-patch" (schema 1): the state is a JSON
// document, initially {}, and every event's payload is an RFC 7386 merge
// patch applied to it. A payload that is not JSON fails the load.
std::shared_ptr<const Reducer> JsonMergePatchReducer();

// Loads a reducer from a shared library through the C ABI in
// annal/reducer_abi.h. The library stays loaded for the process's life.
Result<std::shared_ptr<const Reducer>> LoadReducerLibrary(const std::string& path);

struct Snapshot {
  std::string stream;
  StreamVersion version;       // the state includes events 0..version
  GlobalPosition position;     // of the event at `version`
  int64_t recorded_at_ns = 0;  // recorded_at of the event at `version`
  std::string reducer;
  uint32_t schema_version = 0;
  std::string state;
  uint64_t state_size = 0;     // state.size(); also set where the state is left out
  int64_t taken_at_ns = 0;     // when it was stored
};

// Which state to load.
struct StateTarget {
  enum class Kind : uint8_t { kHead = 0, kVersion = 1, kTime = 2 };
  Kind kind = Kind::kHead;
  uint64_t version = 0;  // kVersion: the last event to include
  int64_t time_ns = 0;   // kTime: include exactly the events with recorded_at <= time_ns
  static StateTarget Head() { return {}; }
  static StateTarget Version(uint64_t v) { return {Kind::kVersion, v, 0}; }
  static StateTarget AsOf(int64_t t_ns) { return {Kind::kTime, 0, t_ns}; }
  std::string ToString() const;
};

// A folded state.
struct State {
  std::string stream;
  std::string reducer;
  uint32_t schema_version = 0;
  StreamVersion version;       // the last event folded in
  int64_t recorded_at_ns = 0;  // its recorded_at
  std::string state;
  // How it was computed: the snapshot started from (none: a full replay)
  // and the number of events folded on top of it.
  std::optional<StreamVersion> snapshot_version;
  uint64_t events_folded = 0;
};

// What a client that folds with its own reducer needs: the newest usable
// snapshot at or before the target, and the events after it up to the target.
struct StatePlan {
  StreamVersion target_version;
  int64_t target_recorded_at_ns = 0;
  std::optional<Snapshot> snapshot;
  std::vector<RecordedEvent> events;  // ascending, ending at target_version when complete
  // False when `events` stopped at max_events: read the rest with
  // ReadStream forward up to target_version.
  bool complete = true;
};

struct SnapshotPolicy {
  // Snapshot a stream after every `every`-th event, that is at the versions
  // v with (v + 1) % every == 0. 0: never (reads replay from version 0).
  uint32_t every = 100;
  // Retention per stream and reducer: the newest `keep_latest` snapshots,
  // and of older ones the newest in each run of R = every * keep_sparse
  // versions (versions with equal v / R), so a load at any past version or
  // time folds fewer than 2R events. The default 1 keeps every snapshot, so
  // a load at any time folds fewer than `every` events; the cost is one
  // state per `every` events on disk. keep_sparse 0: keep only the newest
  // keep_latest. every 0 counts as 100 here.
  uint32_t keep_latest = 3;
  uint32_t keep_sparse = 1;
};

struct StateOptions {
  // The snapshot store, an SQLite file. Created when missing.
  std::string snapshot_path;
  // Reducer per stream category ("account" for "account-42").
  std::map<std::string, std::shared_ptr<const Reducer>, std::less<>> reducers;
  // Snapshot policy per category; `policy` for the rest.
  std::map<std::string, SnapshotPolicy, std::less<>> policies;
  SnapshotPolicy policy;
  // Run the background snapshot taker.
  bool background_snapshots = true;
  // Events the taker reads from the log at a time.
  uint32_t scan_batch = 1000;
  // One line per notable event (snapshot store unusable, a snapshot that
  // failed its checksum, a reducer error). Defaults to stderr. Called from
  // the taker and from loads, one call at a time across every store and
  // state engine in the process (Options::log).
  std::function<void(const std::string&)> log;
};

struct StateStats {
  uint64_t snapshots_written = 0;   // by the taker and by clients
  uint64_t snapshots_skipped = 0;   // failed checksum or outdated schema
  uint64_t loads = 0;
  uint64_t taker_position = 0;      // the taker has seen the log up to here
  uint64_t taker_errors = 0;
  bool snapshot_store_ok = false;   // false: running without snapshots
};

class StateEngine {
 public:
  // `store` must outlive the engine. A snapshot store that cannot be opened
  // is logged and the engine runs without one (every load replays).
  static Result<std::unique_ptr<StateEngine>> Open(Store* store, StateOptions options);
  virtual ~StateEngine() = default;

  // The reducer configured for the stream's category, or nullptr.
  virtual std::shared_ptr<const Reducer> ReducerFor(std::string_view stream) const = 0;

  // Folds the stream up to `target` with `reducer` (nullptr: the category's;
  // kUnavailable when it has none). kNotFound when the stream does not exist,
  // when it did not exist at the target time ("did not exist at ..."), or when
  // the target version is past its head.
  virtual Result<State> Load(std::string_view stream, StateTarget target,
                             const Reducer* reducer = nullptr) = 0;

  // The snapshot (of `reducer` at `schema_version`; an empty name: no
  // snapshot) and events a client needs to fold up to `target` itself, with
  // at most `max_events` events. Same errors as Load.
  virtual Result<StatePlan> Plan(std::string_view stream, StateTarget target,
                                 std::string_view reducer, uint32_t schema_version,
                                 size_t max_events) = 0;

  // Stores a snapshot a client computed. Its version must exist; its
  // recorded_at is taken from the event at that version and returned.
  virtual Result<int64_t> WriteSnapshot(Snapshot snapshot) = 0;

  // Every kept snapshot of the stream, all reducers, ascending by version;
  // the state bytes are left empty. kNotFound when the stream does not exist.
  virtual Result<std::vector<Snapshot>> ListSnapshots(std::string_view stream) = 0;

  // Blocks until the background taker has seen the log up to `position`,
  // or the timeout passes; returns whether it has.
  virtual bool WaitForTaker(GlobalPosition position, std::chrono::milliseconds timeout) = 0;

  virtual StateStats GetStats() const = 0;

  // Stops the taker. Idempotent; the destructor calls it.
  virtual void Close() = 0;
};

}  // namespace annal
