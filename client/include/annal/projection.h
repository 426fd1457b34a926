// Projections: consumers that build a read model from the global log, keep
// a checkpoint, resume after a restart, and can be rebuilt from history.
//
//   MyBalances handler(db);                       // a ProjectionHandler
//   annal::client::ServerCheckpoint keeper(*client, "balances");
//   auto runner = annal::client::ProjectionRunner::Start(
//       client_options, {.name = "balances", .filter = {...}}, &handler, &keeper);
//   ...
//   (*runner)->Stop();
//
// Delivery is at least once. The runner hands the handler batches of events
// in global-position order and moves the checkpoint to a batch's `through`
// only after Handle returned ok for it; a crash between the two hands the
// same events again on restart. Handlers are therefore idempotent (an
// upsert keyed on the event's position), or keep the checkpoint in the same
// transaction as the rows it covers (a CheckpointKeeper whose Save is part
// of Handle, see handler_saves_checkpoint below), in which case nothing is
// applied twice.
//
// When the checkpoint moves (keeper->Save, or the handler itself when
// handler_saves_checkpoint()), and to where:
//   - live, after each batch Handle accepted: to the batch's last event;
//   - live, when the subscription has been quiet for 200 ms: past events
//     the filter skipped, through an empty batch (Handle, then Save) whose
//     `through` stops just before the first matching event after the
//     checkpoint that the server has (or at its durable head when there is
//     none), so a restart does not scan them again;
//   - at the end of a rebuild, once: to the head the rebuild replayed to.
// Saves follow their Handle at once, on the same thread, so at most one
// batch is handled and not checkpointed at any time. What a restart
// replays is therefore: after a crash or a failed Save, the batch whose
// Save did not happen (and everything after it); after Stop, nothing; after
// a crash during a rebuild, the whole rebuild (keeper->Reset ran before it,
// so there is no checkpoint: with slices > 1 it rebuilds again; with one
// slice and rebuild=false it replays from position 1 without Reset, onto
// the partial read model, which an idempotent handler tolerates).
// A failed Save stops the runner like a handler error does: two runners of
// one consumer with ServerCheckpoint make the second Save fail with
// kWrongExpectedVersion instead of both moving the checkpoint.
//
// Rebuild: a new or reset projection replays history from position 1 up to
// the durable head as it was at the start, in `slices` disjoint position
// ranges read in parallel (one connection each), then continues live from
// there. Within a slice events arrive in position order; across slices
// they do not, so handlers used with slices > 1 must not depend on the
// order of events of different slices (per-stream order does hold within
// a slice, not across). The checkpoint is set to the head only once every
// slice is done; a rebuild interrupted by a crash, an error or Stop leaves
// no checkpoint (see above for what the next start does).
//
// Live delivery and backpressure: the subscription's events arrive on the
// live client's I/O thread and are queued (at most max_queued_events) for
// the runner's own thread, which calls Handle; the I/O thread never waits
// for a handler. When the queue is full the runner stops the subscription,
// handles what is queued, and subscribes again after the last queued event
// (the server reads that stretch of the log twice; the handler sees each
// event once).
//
// Threads: Start loads the checkpoint and, for a rebuild, calls
// keeper->Reset and handler->Reset on the caller's thread; the rebuild and
// the live phase run on the runner's own thread (Start does not wait for
// the rebuild: WaitFor does). A runner calls Handle and Save from one thread
// at a time in live mode; during a rebuild with slices > 1 it calls Handle
// from several threads at once (one per slice), and Save once after they
// are done. Handle must not call the runner's Stop or WaitFor (they wait
// for the thread that runs Handle). WaitFor, Stop and Stats may be called
// from any other thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "annal/client.h"
#include "annal/consumers.h"
#include "annal/status.h"
#include "annal/types.h"

namespace annal::client {

// One batch handed to a handler.
struct ProjectionBatch {
  // Ascending positions; may be empty (live: the runner moves the
  // checkpoint past events the filter skipped, see above).
  std::span<const RecordedEvent> events;
  // The position the checkpoint moves to once this batch is handled: the
  // last event's position, or further when the filter skipped events.
  // During a rebuild it is only the slice's progress, not a checkpoint.
  GlobalPosition through;
  bool rebuilding = false;  // part of a rebuild's replay (slices may run at once)
  uint32_t slice = 0;       // which slice, during a rebuild
};

class ProjectionHandler {
 public:
  virtual ~ProjectionHandler() = default;
  // Applies the batch to the read model. An error stops the runner (Stop
  // returns it) without moving the checkpoint past the batch. `events` is
  // valid only during the call.
  virtual Status Handle(const ProjectionBatch& batch) = 0;
  // Empties the read model: called once before a rebuild replays history.
  virtual Status Reset() = 0;
};

// Where the checkpoint lives. Called from one thread at a time (see
// ProjectionRunner's threads).
class CheckpointKeeper {
 public:
  virtual ~CheckpointKeeper() = default;
  // The last position handled; 0 when nothing was (start at the beginning).
  virtual Result<GlobalPosition> Load() = 0;
  // Records that everything up to `position` is handled.
  virtual Status Save(GlobalPosition position) = 0;
  // Forgets the checkpoint (before a rebuild).
  virtual Status Reset() = 0;
  // True when the handler writes the checkpoint itself, in the same
  // transaction as the batch (ProjectionBatch::through, outside rebuilds);
  // the runner then calls Save only at the end of a rebuild.
  virtual bool handler_saves_checkpoint() const { return false; }
};

// A checkpoint kept by annald under the consumer's name (SET_CHECKPOINT
// with the expected position, so two runners of one consumer conflict
// instead of overwriting each other). Save expects what this keeper last
// loaded or saved (none before the first Load, or after Reset); a Save
// that finds anything else fails with kWrongExpectedVersion, whose
// actual_version() is the stored position (-1: none). `client` must outlive
// the keeper; not thread-safe (one runner uses it from one thread at a time).
class ServerCheckpoint final : public CheckpointKeeper {
 public:
  // Each keeper writes a random id of its own as the checkpoint's blob, so
  // that a SET resent after a lost connection, which meets its own first
  // write, is told apart from another runner's write.
  ServerCheckpoint(Client& client, std::string name)
      : client_(client), name_(std::move(name)), writer_id_(EventIdToString(GenerateEventId())) {}
  Result<GlobalPosition> Load() override;
  Status Save(GlobalPosition position) override;
  Status Reset() override;

 private:
  Client& client_;
  const std::string name_;
  const std::string writer_id_;
  std::optional<GlobalPosition> known_;  // what this keeper last read or wrote
};

struct ProjectionOptions {
  std::string name;  // for logs and the progress line
  Filter filter;     // server-side: category / prefix and event types
  // Events per Handle call at most (fewer when the log has fewer).
  uint32_t batch_events = 1000;
  // Replay history first (Reset, then the slices), even with a checkpoint.
  // A projection with no checkpoint rebuilds whenever slices > 1.
  bool rebuild = false;
  // Parallel slices for a rebuild; 0: one per core.
  uint32_t slices = 0;
  // Print a progress line (events done, events/s, time left) to stderr
  // while rebuilding; only when stderr is a terminal unless forced. The
  // counts are in positions replayed, matching the filter or not: the
  // total (the rebuild head) is only known in positions.
  bool progress = true;
  bool force_progress = false;
  // Live events queued for the handler at most; 0: 8 × batch_events. A
  // fuller queue stops the subscription until it drained (see above).
  uint32_t max_queued_events = 0;
};

// Limits on the options (Start fails with kInvalidArgument past them).
inline constexpr uint32_t kMaxProjectionBatchEvents = 100'000;
inline constexpr uint32_t kMaxProjectionSlices = 256;  // a thread and a connection each

struct ProjectionStats {
  uint64_t events_handled = 0;
  uint64_t batches = 0;
  GlobalPosition checkpoint;       // last saved
  GlobalPosition rebuild_head;     // the head a rebuild replays to (0: no rebuild)
  bool live = false;               // caught up and following the log
  bool stopped = false;            // Stop ran, or an error stopped it (Stop returns it)
  uint64_t resubscribes = 0;       // live subscriptions stopped for a full queue and started again
};

class ProjectionRunner {
 public:
  // Loads the checkpoint, rebuilds if asked (or if there is none and
  // slices > 1), then follows the log live from after the checkpoint.
  // Connections are made with `client` (one per slice during a rebuild,
  // one for live). `handler` and `keeper` must outlive the runner. Fails
  // with what Connect, Load, the Resets, READ_HEAD or the first SUBSCRIBE
  // returned; later errors stop the runner and are returned by Stop.
  static Result<std::unique_ptr<ProjectionRunner>> Start(const ClientOptions& client,
                                                         ProjectionOptions options,
                                                         ProjectionHandler* handler,
                                                         CheckpointKeeper* keeper);
  virtual ~ProjectionRunner() = default;

  // Blocks until the runner is live and has handled and checkpointed
  // everything up to `position` (or the timeout passes, or it stopped);
  // returns whether it has. Positions the filter skips count as handled
  // once the quiet-subscription step above moved past them.
  virtual bool WaitFor(GlobalPosition position, std::chrono::milliseconds timeout) = 0;
  // Stops after the batch in hand (and its Save); the checkpoint covers
  // what was handled; queued events not yet handled are read again by the
  // next runner. A rebuild in progress stops between pages without saving a
  // checkpoint. Returns the error that stopped the runner, if one did.
  // Idempotent; the destructor calls it.
  virtual Status Stop() = 0;
  virtual ProjectionStats Stats() const = 0;
};

}  // namespace annal::client
