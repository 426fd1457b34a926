// Store: the embeddable annal engine. Open a directory, append events to
// streams, read streams and the global log.
//
//   auto store = annal::Store::Open("/var/lib/annal", annal::Options{});
//   if (!store.ok()) die(store.status());
//   auto r = (*store)->Append("account-42", annal::ExpectedVersion::NoStream(),
//                             {{.type = "AccountOpened", .payload = R"({"owner":"ada"})"}});
//
// Durability: an append's callback (or Append's return) reports success only
// after its batch was written and fdatasync'ed. After a crash, each append
// is either wholly present with the versions and positions it was given, or
// wholly absent if it was never acknowledged.
//
// Thread-safety: every method may be called from any thread concurrently,
// except Close and the destructor, which must not overlap other calls.
// Reads never block writers for longer than a short critical section.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "annal/options.h"
#include "annal/stats.h"
#include "annal/status.h"
#include "annal/types.h"

namespace annal {

enum class ReadDirection : uint8_t { kForward, kBackward };

using AppendCallback = std::function<void(Result<AppendResult>)>;

class Store {
 public:
  // Opens (or creates, per options) the store in `dir`, recovering from any
  // crash: loads each partition's last valid index checkpoint, replays the log
  // after it, drops a torn final batch, and refuses to open a partition whose
  // log is damaged before its tail (the error names file and offset).
  static Result<std::unique_ptr<Store>> Open(const std::string& dir, const Options& options);

  virtual ~Store() = default;

  // Appends `events` (1..limits::kMaxEventsPerAppend) to `stream` atomically,
  // if the stream is at `expected`. `done` runs exactly once, on an engine
  // thread, when the append is durable or has failed; it must not block.
  //
  // Errors: kInvalidArgument / kTooLarge for bad input (reported before
  // queueing), kWrongExpectedVersion (carrying the actual version),
  // kFailStopped once the partition stopped, kUnavailable after Close,
  // kOverloaded when the partition's queue is full.
  //
  // Idempotent retries: when every event carries a client-given id and the
  // stream already holds events with exactly those ids, in that order, at the
  // versions this append would have taken (see docs/architecture.md for the
  // rules per expected-version kind), nothing is written and the original
  // result comes back with idempotent_replay = true.
  virtual void AppendAsync(std::string stream, ExpectedVersion expected,
                           std::vector<EventData> events, AppendCallback done) = 0;

  // Blocking form of AppendAsync.
  virtual Result<AppendResult> Append(std::string stream, ExpectedVersion expected,
                                      std::vector<EventData> events) = 0;

  // Up to `max_count` events of `stream`, starting at version `from` and
  // going forward (ascending) or backward (descending). kNotFound when the
  // stream does not exist; an empty result when `from` is past the head
  // (forward). Only durable events are returned.
  virtual Result<std::vector<RecordedEvent>> ReadStream(std::string_view stream,
                                                        StreamVersion from,
                                                        ReadDirection direction,
                                                        size_t max_count) = 0;

  // Events `from`..`to` of `stream`, ascending (at most
  // limits::kMaxReadCount), for a caller that knows the global position
  // `near` of an event of this stream at a version >= `to`, such as the one
  // a snapshot was taken at. The read then steps back from that event rather
  // than from the stream's head, so it skips the segment index lookups of
  // the segments in between. A `near` that is not such an event is ignored.
  // kNotFound when the stream does not exist.
  virtual Result<std::vector<RecordedEvent>> ReadStreamNear(std::string_view stream, StreamVersion from,
                                                            StreamVersion to, GlobalPosition near) = 0;

  // Up to `max_count` events of the whole store with position >= `from`, in
  // position order, never past DurableHead().
  virtual Result<std::vector<RecordedEvent>> ReadAll(GlobalPosition from, size_t max_count) = 0;

  // The event at `position`; kNotFound when there is none (past the head, or
  // a position that was never made durable).
  virtual Result<RecordedEvent> ReadEvent(GlobalPosition position) = 0;

  // The time index. The position of the first event recorded at or after
  // `time_ns` (nanoseconds since the Unix epoch), or DurableHead() + 1 when
  // every durable event is older. Logarithmic in the number of segments and
  // of blocks; reads at most one batch's headers.
  virtual Result<GlobalPosition> PositionAtTime(int64_t time_ns) = 0;
  // The version of the first event of `stream` recorded at or after
  // `time_ns`, or the stream's head + 1 when every event is older.
  // Logarithmic in the stream's length. kNotFound when the stream does not
  // exist.
  virtual Result<uint64_t> StreamVersionAtTime(std::string_view stream, int64_t time_ns) = 0;

  // kNotFound when the stream does not exist.
  virtual Result<StreamInfo> GetStreamInfo(std::string_view stream) = 0;

  // The highest position P such that every event at or below P that will
  // ever exist is durable and readable. 0 for an empty store.
  virtual GlobalPosition DurableHead() const = 0;

  // Blocks until DurableHead() passes `after`, `timeout` passes or the store
  // closes; returns DurableHead(). For tailing readers.
  virtual GlobalPosition WaitForDurableHead(GlobalPosition after,
                                            std::chrono::milliseconds timeout) = 0;

  // Counters and histograms for monitoring.
  virtual StoreStats GetStats() const = 0;

  // Blocks until every full segment queued so far has its index file
  // written and, when Options::seal_segments is on, is sealed. Appends
  // never wait for this; tests and tools that inspect files do.
  virtual void WaitForBackgroundWork() = 0;

  // Writes an index checkpoint of every partition now.
  virtual Status Checkpoint() = 0;

  // Stops accepting appends, finishes those queued, writes a checkpoint and
  // closes files. Idempotent. The destructor calls it.
  virtual Status Close() = 0;
};

}  // namespace annal
